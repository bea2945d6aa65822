//! Fault injection for outage drills and tests.
//!
//! A node started with `--enable-faults` serves the `tandem.v1.FaultInjection`
//! admin API (guarded by the admin token). Faults are scoped to the whole
//! node, to one tenant, or to one tenant shard; every request handler calls
//! [`FaultRegistry::check`] with its tenant (and shard) before doing work, and
//! the most specific matching fault decides what happens:
//!
//! - `UNAVAILABLE` / `INTERNAL`: the call fails with that code;
//! - `DELAY`: the call waits `delay_ms`, then runs normally;
//! - `HANG`: the call never answers while the fault is in place (the caller's
//!   deadline is what ends it), and runs normally once the fault is cleared;
//! - `SHED`: the call is shed as by an overloaded process: RESOURCE_EXHAUSTED
//!   with `tandem-shed: router` on a router, `node` on a node.
//!
//! A **cross-region** fault (`cross_region` set) is the other way round: it
//! applies to the calls this process makes to the other region (see
//! [`crate::latency::Network`]), never to the calls it serves. UNAVAILABLE
//! is a partition whose calls fail at once, HANG one whose calls hang until
//! their caller gives up, DELAY a slow link.
//!
//! With no fault set, `check` is one atomic load, so it is free on the hot path.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tandem_proto::v1::fault_injection_server::FaultInjection;
use tandem_proto::v1::{ClearFaultRequest, Fault, FaultAction, FaultList, ListFaultsRequest};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::admin_guard::AdminGuard;
use tandem_catalog::ids::validate_tenant_id;

/// The longest delay a fault may inject.
pub const MAX_DELAY_MS: u32 = 600_000;

/// What a fault applies to: the node (`tenant: None`), a tenant, or a
/// shard; or, with `cross_region`, the node's own calls to the other region.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FaultScope {
    /// `None`: every call on the node.
    pub tenant: Option<String>,
    /// With a tenant: only calls for this shard.
    pub shard: Option<u32>,
    /// The node's calls to the other region, not the calls it serves.
    pub cross_region: bool,
}

impl FaultScope {
    fn of(tenant: &str, has_shard: bool, shard: u32) -> Self {
        if tenant.is_empty() {
            Self::node()
        } else {
            Self {
                tenant: Some(tenant.to_string()),
                shard: has_shard.then_some(shard),
                cross_region: false,
            }
        }
    }

    /// Every call the node serves.
    pub fn node() -> Self {
        Self {
            tenant: None,
            shard: None,
            cross_region: false,
        }
    }

    /// The node's calls to the other region.
    pub fn cross_region() -> Self {
        Self {
            cross_region: true,
            ..Self::node()
        }
    }

    fn of_fault(fault: &Fault) -> Self {
        if fault.cross_region {
            return Self::cross_region();
        }
        Self::of(&fault.tenant, fault.has_shard, fault.shard)
    }
}

/// The faults currently in force on one node. Cheap to clone (shared state).
#[derive(Clone, Debug)]
pub struct FaultRegistry {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    rules: DashMap<FaultScope, Fault>,
    /// Mirrors `rules.len()` so the no-fault path is a single atomic load.
    count: AtomicUsize,
    /// Bumped on every change; hung calls wait on it to notice a clear.
    generation: watch::Sender<u64>,
    /// What a `SHED` fault says shed the call (`tandem_proto::shed`).
    shed_as: &'static str,
}

impl Default for FaultRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl FaultRegistry {
    /// An empty registry of a node: every call runs normally.
    pub fn new() -> Self {
        Self::shedding_as(tandem_proto::shed::NODE)
    }

    /// An empty registry whose `SHED` faults say `who` shed the call
    /// (a router's: [`tandem_proto::shed::ROUTER`]).
    pub fn shedding_as(who: &'static str) -> Self {
        Self {
            inner: Arc::new(Inner {
                rules: DashMap::new(),
                count: AtomicUsize::new(0),
                generation: watch::Sender::new(0),
                shed_as: who,
            }),
        }
    }

    /// Adds or replaces the fault for its scope after validating it.
    pub fn set(&self, fault: Fault) -> Result<(), String> {
        let action = FaultAction::try_from(fault.action)
            .ok()
            .filter(|a| *a != FaultAction::Unspecified)
            .ok_or_else(|| format!("unknown fault action {}", fault.action))?;
        if fault.cross_region {
            if !fault.tenant.is_empty() || fault.has_shard {
                return Err(
                    "a cross-region fault applies to the whole process: no tenant or shard"
                        .to_string(),
                );
            }
            if !matches!(
                action,
                FaultAction::Unavailable | FaultAction::Hang | FaultAction::Delay
            ) {
                return Err("a cross-region fault is UNAVAILABLE (partition, calls fail), HANG (partition, calls hang) or DELAY (slow link)".to_string());
            }
        } else if !fault.tenant.is_empty() {
            validate_tenant_id(&fault.tenant)?;
        } else if fault.has_shard {
            return Err("a shard fault needs a tenant".to_string());
        }
        if action == FaultAction::Delay && (fault.delay_ms == 0 || fault.delay_ms > MAX_DELAY_MS) {
            return Err(format!(
                "a delay fault needs 1..={MAX_DELAY_MS} delay_ms, got {}",
                fault.delay_ms
            ));
        }
        let scope = FaultScope::of_fault(&fault);
        tracing::warn!(?scope, ?action, delay_ms = fault.delay_ms, "fault injected");
        self.inner.rules.insert(scope, fault);
        self.changed();
        Ok(())
    }

    /// Removes the fault of one scope; returns whether there was one.
    pub fn clear(&self, scope: &FaultScope) -> bool {
        let removed = self.inner.rules.remove(scope).is_some();
        if removed {
            tracing::warn!(?scope, "fault cleared");
        }
        self.changed();
        removed
    }

    /// Removes every fault.
    pub fn clear_all(&self) {
        self.inner.rules.clear();
        tracing::warn!("all faults cleared");
        self.changed();
    }

    /// Every fault in force, node-wide ones first.
    pub fn list(&self) -> Vec<Fault> {
        let mut faults: Vec<Fault> = self.inner.rules.iter().map(|e| e.value().clone()).collect();
        faults.sort_by(|a, b| {
            (&a.tenant, a.has_shard, a.shard).cmp(&(&b.tenant, b.has_shard, b.shard))
        });
        faults
    }

    fn changed(&self) {
        let n = self.inner.rules.len();
        self.inner.count.store(n, Ordering::Release);
        metrics::gauge!("faults_active").set(n as f64);
        self.inner.generation.send_modify(|g| *g += 1);
    }

    /// The most specific fault matching a call, if any.
    fn matching(&self, tenant: &str, shard: Option<u32>) -> Option<Fault> {
        let rules = &self.inner.rules;
        let tenant = Some(tenant.to_string());
        shard
            .and_then(|s| {
                rules.get(&FaultScope {
                    tenant: tenant.clone(),
                    shard: Some(s),
                    cross_region: false,
                })
            })
            .or_else(|| {
                rules.get(&FaultScope {
                    tenant,
                    shard: None,
                    cross_region: false,
                })
            })
            .or_else(|| rules.get(&FaultScope::node()))
            .map(|e| e.value().clone())
    }

    /// Applies the fault (if any) matching a call for `tenant` / `shard`:
    /// returns the injected error, or `Ok` once the call may proceed.
    pub async fn check(&self, tenant: &str, shard: Option<u32>) -> Result<(), Status> {
        if self.inner.count.load(Ordering::Acquire) == 0 {
            return Ok(());
        }
        self.apply(
            || self.matching(tenant, shard),
            "injected fault: node unavailable",
        )
        .await
    }

    /// Applies the cross-region fault (if any) to one of this process's
    /// calls to the other region: the partition's error, or `Ok` once the
    /// call may go (after a slow link's delay, or a hang's clearing).
    pub async fn cross_region(&self) -> Result<(), Status> {
        if self.inner.count.load(Ordering::Acquire) == 0 {
            return Ok(());
        }
        let rule = || {
            let rules = &self.inner.rules;
            rules
                .get(&FaultScope::cross_region())
                .map(|e| e.value().clone())
        };
        self.apply(rule, "the other region is unreachable (injected partition)")
            .await
    }

    /// Applies what `rule` finds, looking again after each change while a
    /// HANG holds the call.
    async fn apply(
        &self,
        rule: impl Fn() -> Option<Fault>,
        unavailable: &'static str,
    ) -> Result<(), Status> {
        let mut generation = self.inner.generation.subscribe();
        loop {
            // Marking the current generation seen before reading the rules
            // means a clear that races with this read still wakes us below.
            generation.borrow_and_update();
            let Some(fault) = rule() else {
                return Ok(());
            };
            match FaultAction::try_from(fault.action) {
                Ok(FaultAction::Unavailable) => return Err(Status::unavailable(unavailable)),
                Ok(FaultAction::Internal) => {
                    return Err(Status::internal("injected fault: internal error"))
                }
                Ok(FaultAction::Shed) => {
                    return Err(tandem_proto::shed::status(
                        self.inner.shed_as,
                        "injected fault: overloaded",
                    ))
                }
                Ok(FaultAction::Delay) => {
                    tokio::time::sleep(Duration::from_millis(u64::from(fault.delay_ms))).await;
                    return Ok(());
                }
                Ok(FaultAction::Hang) => {
                    if generation.changed().await.is_err() {
                        return Err(Status::unavailable("node shutting down"));
                    }
                }
                _ => return Ok(()),
            }
        }
    }
}

/// A node's fault-injection admin token: `None` when fault injection is
/// off; an error when it is on without a token (every node refuses to
/// start so, rather than serve an open fault API).
pub fn admin_token_for_faults(
    enabled: bool,
    token: Option<String>,
) -> anyhow::Result<Option<String>> {
    match (enabled, token) {
        (true, Some(t)) if !t.is_empty() => Ok(Some(t)),
        (true, _) => anyhow::bail!(
            "--enable-faults needs an admin token (--admin-token-file or TANDEM_ADMIN_TOKEN)"
        ),
        (false, _) => Ok(None),
    }
}

/// Adds the fault-injection service over `faults` to `routes` when a
/// `token` is given (see [`admin_token_for_faults`]).
pub fn add_fault_service(
    routes: &mut tonic::service::RoutesBuilder,
    faults: FaultRegistry,
    token: Option<String>,
    internal: &crate::internal::InternalToken,
) {
    if let Some(token) = token {
        tracing::warn!("fault injection is enabled");
        let service = tandem_proto::v1::fault_injection_server::FaultInjectionServer::new(
            FaultService::new(faults, token),
        );
        // Like every node API, only tandem's processes and operators may
        // call it (and then only with the admin token).
        routes.add_service(tonic::service::interceptor::InterceptedService::new(
            service,
            internal.require(),
        ));
    }
}

/// The `tandem.v1.FaultInjection` gRPC service over a [`FaultRegistry`].
#[derive(Clone, Debug)]
pub struct FaultService {
    registry: FaultRegistry,
    guard: std::sync::Arc<AdminGuard>,
}

impl FaultService {
    /// Serves `registry`, accepting calls that carry `admin_token`.
    pub fn new(registry: FaultRegistry, admin_token: String) -> Self {
        Self {
            registry,
            guard: std::sync::Arc::new(AdminGuard::new(admin_token)),
        }
    }

    fn list(&self) -> Response<FaultList> {
        Response::new(FaultList {
            faults: self.registry.list(),
        })
    }
}

#[tonic::async_trait]
impl FaultInjection for FaultService {
    async fn set_fault(&self, request: Request<Fault>) -> Result<Response<FaultList>, Status> {
        self.guard.check(request.metadata())?;
        self.registry
            .set(request.into_inner())
            .map_err(Status::invalid_argument)?;
        Ok(self.list())
    }

    async fn clear_fault(
        &self,
        request: Request<ClearFaultRequest>,
    ) -> Result<Response<FaultList>, Status> {
        self.guard.check(request.metadata())?;
        let req = request.into_inner();
        if req.all {
            self.registry.clear_all();
        } else if req.cross_region {
            self.registry.clear(&FaultScope::cross_region());
        } else {
            self.registry
                .clear(&FaultScope::of(&req.tenant, req.has_shard, req.shard));
        }
        Ok(self.list())
    }

    async fn list_faults(
        &self,
        request: Request<ListFaultsRequest>,
    ) -> Result<Response<FaultList>, Status> {
        self.guard.check(request.metadata())?;
        Ok(self.list())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(tenant: &str, shard: Option<u32>, action: FaultAction, delay_ms: u32) -> Fault {
        Fault {
            tenant: tenant.to_string(),
            has_shard: shard.is_some(),
            shard: shard.unwrap_or(0),
            action: action as i32,
            delay_ms,
            cross_region: false,
        }
    }

    #[tokio::test]
    async fn no_fault_passes() {
        assert!(FaultRegistry::new().check("t", Some(0)).await.is_ok());
    }

    #[tokio::test]
    async fn most_specific_scope_wins() {
        let reg = FaultRegistry::new();
        reg.set(fault("a", Some(1), FaultAction::Internal, 0))
            .unwrap();
        reg.set(fault("a", None, FaultAction::Unavailable, 0))
            .unwrap();
        let code = |r: Result<(), Status>| r.unwrap_err().code();
        assert_eq!(code(reg.check("a", Some(1)).await), tonic::Code::Internal);
        assert_eq!(
            code(reg.check("a", Some(0)).await),
            tonic::Code::Unavailable
        );
        assert!(reg.check("b", Some(1)).await.is_ok());
        reg.set(fault("", None, FaultAction::Unavailable, 0))
            .unwrap();
        assert_eq!(code(reg.check("b", None).await), tonic::Code::Unavailable);
        reg.clear_all();
        assert!(reg.check("a", Some(1)).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn delay_waits_then_serves() {
        let reg = FaultRegistry::new();
        reg.set(fault("", None, FaultAction::Delay, 250)).unwrap();
        let start = tokio::time::Instant::now();
        reg.check("t", None).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(250));
    }

    #[tokio::test(start_paused = true)]
    async fn hang_lasts_until_cleared() {
        let reg = FaultRegistry::new();
        reg.set(fault("t", None, FaultAction::Hang, 0)).unwrap();
        let hung = tokio::spawn({
            let reg = reg.clone();
            async move { reg.check("t", None).await }
        });
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(!hung.is_finished(), "a hung call must not answer");
        reg.clear(&FaultScope::of("t", false, 0));
        assert!(hung.await.unwrap().is_ok());
    }

    #[test]
    fn invalid_faults_are_refused() {
        let reg = FaultRegistry::new();
        assert!(reg.set(fault("../x", None, FaultAction::Hang, 0)).is_err());
        assert!(reg.set(fault("t", None, FaultAction::Delay, 0)).is_err());
        assert!(reg
            .set(fault("t", None, FaultAction::Unspecified, 0))
            .is_err());
        assert!(reg.set(fault("", Some(1), FaultAction::Hang, 0)).is_err());
        let across = |tenant: &str, action| Fault {
            cross_region: true,
            ..fault(tenant, None, action, 0)
        };
        assert!(reg.set(across("t", FaultAction::Hang)).is_err());
        assert!(reg.set(across("", FaultAction::Internal)).is_err());
        assert!(reg.set(across("", FaultAction::Shed)).is_err());
        assert!(reg.list().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_partition_holds_only_calls_to_the_other_region() {
        let reg = FaultRegistry::new();
        let partition = |action| Fault {
            cross_region: true,
            ..fault("", None, action, 0)
        };
        reg.set(partition(FaultAction::Unavailable)).unwrap();
        // The calls the node serves are untouched.
        assert!(reg.check("t", Some(0)).await.is_ok());
        let failed = reg.cross_region().await.unwrap_err();
        assert_eq!(failed.code(), tonic::Code::Unavailable);
        // A hanging partition holds the call until it is cleared.
        reg.set(partition(FaultAction::Hang)).unwrap();
        assert_eq!(reg.list().len(), 1);
        let hung = tokio::spawn({
            let reg = reg.clone();
            async move { reg.cross_region().await }
        });
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert!(!hung.is_finished());
        reg.clear(&FaultScope::node());
        assert!(
            !hung.is_finished(),
            "a node fault's clear is not the partition's"
        );
        reg.clear(&FaultScope::cross_region());
        assert!(hung.await.unwrap().is_ok());
        // A node-wide fault does not cut the way out.
        reg.set(fault("", None, FaultAction::Unavailable, 0))
            .unwrap();
        assert!(reg.cross_region().await.is_ok());
    }
}
