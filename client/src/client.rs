//! The client: one lazy gRPC channel per region's router, calls sent to the
//! router the failover policy chooses, one retry on another router when
//! that router is gone, and the home router probed in the background
//! until it can take calls again.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tandem_proto::v1::events_client::EventsClient;
use tandem_proto::v1::search_client::SearchClient;
use tandem_proto::v1::{
    ClickRequest, ClickResponse, SearchRequest, SearchResponse, SuggestRequest, SuggestResponse,
};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::classify::{is_failover_status, is_local_timeout, is_server_timeout};
use crate::config::{tls_config, uri_of, ClientConfig, ClientError};
use crate::failover::{FailoverPolicy, Lease};
use crate::prober::{self, ProbeTiming};
use crate::switch::{Switch, MAX_ROUTERS};

/// How a successful call went: which region's router answered and whether
/// the client had to leave its home region for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallInfo {
    /// Region whose router answered.
    pub region: Arc<str>,
    /// The answering router is not the home region's: either the client is
    /// failed over or this call was retried away from home.
    pub failed_over: bool,
    /// The first attempt failed (connection error / UNAVAILABLE) and the
    /// call was retried on another router.
    pub retried: bool,
}

/// A tandem client over every region's router (see the crate docs).
/// Cheap to clone; clones share channels and failover state, and any
/// number of tasks may call it at once.
#[derive(Clone)]
pub struct TandemClient {
    inner: Arc<Inner>,
    timeout: Duration,
}

struct Inner {
    channels: Vec<Channel>,
    switch: Arc<Switch>,
    auth: Option<MetadataValue<Ascii>>,
    attempt_timeout: Option<Duration>,
    prober: AbortHandle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The prober holds only the switch, not the client: stop it with
        // the last clone.
        self.prober.abort();
    }
}

/// A failed attempt and whether it should move the call elsewhere.
struct AttemptError {
    status: Status,
    failover: bool,
}

/// The endpoint of one router of `region` at `addr` (TLS for `https://`).
fn endpoint(config: &ClientConfig, region: &str, addr: &str) -> Result<Endpoint, ClientError> {
    let bad = |e: tonic::transport::Error| ClientError::BadAddress {
        region: region.to_string(),
        addr: addr.to_string(),
        reason: e.to_string(),
    };
    let uri = uri_of(addr, false);
    let mut endpoint = Endpoint::from_shared(uri.clone())
        .map_err(bad)?
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true);
    if uri.starts_with("https://") {
        endpoint = endpoint
            .tls_config(tls_config(config.ca_cert.as_deref()))
            .map_err(bad)?;
    }
    Ok(endpoint)
}

impl TandemClient {
    /// Validates `config` and builds the client. Connections are made
    /// lazily by the first call to each router, so an unreachable router
    /// is not an error here. Must run inside a tokio runtime (it starts
    /// the background prober).
    pub async fn connect(config: ClientConfig) -> Result<Self, ClientError> {
        if config.regions.is_empty() {
            return Err(ClientError::NoRegions);
        }
        if config.regions.len() > MAX_ROUTERS {
            return Err(ClientError::TooManyRegions(config.regions.len()));
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ClientError::NoRuntime)?;
        let mut names: Vec<Arc<str>> = Vec::with_capacity(config.regions.len());
        let mut channels = Vec::with_capacity(config.regions.len());
        for region in &config.regions {
            if names.iter().any(|n| **n == *region.name) {
                return Err(ClientError::DuplicateRegion(region.name.clone()));
            }
            let mut endpoints = Vec::with_capacity(1 + region.more.len());
            for addr in std::iter::once(&region.addr).chain(&region.more) {
                endpoints.push(endpoint(&config, &region.name, addr)?);
            }
            names.push(Arc::from(region.name.as_str()));
            channels.push(match endpoints.len() {
                1 => endpoints.remove(0).connect_lazy(),
                _ => Channel::balance_list(endpoints.into_iter()),
            });
        }
        let home = names
            .iter()
            .position(|n| **n == *config.home_region)
            .ok_or_else(|| ClientError::UnknownHomeRegion(config.home_region.clone()))?;
        let auth = match &config.api_key {
            Some(key) => Some(
                MetadataValue::try_from(format!("Bearer {key}"))
                    .map_err(|_| ClientError::BadApiKey)?,
            ),
            None => None,
        };
        let policy = FailoverPolicy::new(channels.len(), home, config.return_after);
        let switch = Arc::new(Switch::new(policy, names));
        let timing = ProbeTiming {
            interval: config.probe_interval,
            timeout: config.probe_timeout,
        };
        let probe_channels = channels.clone();
        let prober = runtime.spawn(prober::run(switch.clone(), timing, move |router| {
            probe_health(probe_channels.get(router).cloned())
        }));
        Ok(TandemClient {
            inner: Arc::new(Inner {
                channels,
                switch,
                auth,
                attempt_timeout: config.attempt_timeout,
                prober: prober.abort_handle(),
            }),
            timeout: config.timeout,
        })
    }

    /// A clone whose calls have deadline `timeout` instead of the
    /// configured one (it shares everything else).
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        TandemClient {
            inner: self.inner.clone(),
            timeout,
        }
    }

    /// `tandem.v1.Search/Search`, with failover (see the crate docs).
    pub async fn search(
        &self,
        request: SearchRequest,
    ) -> Result<(SearchResponse, CallInfo), Status> {
        self.call(request, |channel, request| async move {
            SearchClient::new(channel).search(request).await
        })
        .await
    }

    /// `tandem.v1.Search/Suggest`, with failover (see the crate docs).
    pub async fn suggest(
        &self,
        request: SuggestRequest,
    ) -> Result<(SuggestResponse, CallInfo), Status> {
        self.call(request, |channel, request| async move {
            SearchClient::new(channel).suggest(request).await
        })
        .await
    }

    /// `tandem.v1.Events/Click`, with failover: a click may reach either
    /// region's router, which verifies the search id on its own.
    pub async fn click(&self, request: ClickRequest) -> Result<(ClickResponse, CallInfo), Status> {
        self.call(request, |channel, request| async move {
            EventsClient::new(channel).click(request).await
        })
        .await
    }

    /// Name of the region whose router new calls go to.
    pub fn current_region(&self) -> Arc<str> {
        self.inner.switch.name(self.inner.switch.lease().router)
    }

    /// Name of the client's own region.
    pub fn home_region(&self) -> Arc<str> {
        self.inner.switch.name(self.home())
    }

    /// True while calls go to a router other than the home region's.
    pub fn is_failed_over(&self) -> bool {
        self.inner.switch.lease().router != self.home()
    }

    /// The channel to a region's router, for other services it serves
    /// (e.g. the admin API or health). `None` for an unknown region.
    pub fn channel(&self, region: &str) -> Option<Channel> {
        (0..self.inner.channels.len())
            .find(|&r| &*self.inner.switch.name(r) == region)
            .and_then(|r| self.inner.channels.get(r).cloned())
    }

    fn home(&self) -> usize {
        self.inner.switch.home()
    }

    async fn call<Req, Resp, F, Fut>(
        &self,
        request: Req,
        rpc: F,
    ) -> Result<(Resp, CallInfo), Status>
    where
        Req: Clone,
        F: Fn(Channel, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let deadline = Instant::now() + self.timeout;
        let lease = self.inner.switch.lease();
        let first = match self.attempt(lease, request.clone(), deadline, &rpc).await {
            Ok(response) => return Ok((response, self.info(lease.router, false))),
            Err(e) => e,
        };
        if !first.failover {
            return Err(first.status);
        }
        let Some(retry) = self.inner.switch.report_failure(lease) else {
            return Err(first.status);
        };
        if Instant::now() >= deadline {
            return Err(first.status);
        }
        match self.attempt(retry, request, deadline, &rpc).await {
            Ok(response) => Ok((response, self.info(retry.router, true))),
            Err(second) => {
                if second.failover {
                    self.inner.switch.report_failure(retry);
                }
                Err(second.status)
            }
        }
    }

    async fn attempt<Req, Resp, F, Fut>(
        &self,
        lease: Lease,
        request: Req,
        deadline: Instant,
        rpc: &F,
    ) -> Result<Resp, AttemptError>
    where
        F: Fn(Channel, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let Some(channel) = self.inner.channels.get(lease.router) else {
            return Err(AttemptError {
                status: Status::internal("no such router"),
                failover: false,
            });
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        let per_try = self
            .inner
            .attempt_timeout
            .map_or(remaining, |t| t.min(remaining));
        // Expiry of a per-try cap shorter than the deadline means the
        // router hangs; expiry of the deadline itself is the caller's.
        let timed_out = || AttemptError {
            status: Status::deadline_exceeded(format!(
                "no answer from the {} router within {per_try:?}",
                self.inner.switch.name(lease.router)
            )),
            failover: per_try < remaining,
        };
        if per_try.is_zero() {
            return Err(timed_out());
        }
        let mut request = Request::new(request);
        request.set_timeout(per_try);
        if let Some(auth) = &self.inner.auth {
            request.metadata_mut().insert("authorization", auth.clone());
        }
        match tokio::time::timeout(per_try, rpc(channel.clone(), request)).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) if is_local_timeout(&status) || is_server_timeout(&status) => {
                Err(timed_out())
            }
            Ok(Err(status)) => Err(AttemptError {
                failover: is_failover_status(&status),
                status,
            }),
            Err(_) => Err(timed_out()),
        }
    }

    fn info(&self, router: usize, retried: bool) -> CallInfo {
        CallInfo {
            region: self.inner.switch.name(router),
            failed_over: router != self.home(),
            retried,
        }
    }
}

impl std::fmt::Debug for TandemClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TandemClient")
            .field("home_region", &self.home_region())
            .field("current_region", &self.current_region())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// One `grpc.health.v1` check of the whole process (service name "").
async fn probe_health(channel: Option<Channel>) -> bool {
    let Some(channel) = channel else {
        return false;
    };
    let request = HealthCheckRequest {
        service: String::new(),
    };
    match HealthClient::new(channel).check(request).await {
        Ok(response) => response.into_inner().status == ServingStatus::Serving as i32,
        Err(_) => false,
    }
}
