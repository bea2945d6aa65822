//! Per-tenant `grpc.health.v1` statuses: one service name per tenant model,
//! `tandem.model/<tenant>`, which the router probes to learn whether this
//! node can answer for that tenant.
//!
//! A tenant is SERVING while a model of it is loaded and NOT_SERVING when its
//! directory exists but nothing in it could be loaded; a tenant this node has
//! never seen is unknown to the health service (NOT_FOUND), like any unknown
//! name. On shutdown every tenant is reported NOT_SERVING before the node's
//! own status, and stays so: a reload finishing during the drain cannot flip
//! a tenant back to SERVING.

use std::collections::BTreeSet;

use tokio::sync::Mutex;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

/// The health service name of `tenant`'s model.
pub fn service_name(tenant: &str) -> String {
    format!("tandem.model/{tenant}")
}

/// The per-tenant half of the node's health service (see the module docs).
#[derive(Debug)]
pub struct TenantHealth {
    reporter: HealthReporter,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Every tenant a status was ever reported for.
    known: BTreeSet<String>,
    stopping: bool,
}

impl TenantHealth {
    /// Reports through `reporter` (the one whose service the node serves).
    pub fn new(reporter: HealthReporter) -> Self {
        Self {
            reporter,
            state: Mutex::new(State::default()),
        }
    }

    /// Reports whether `tenant` has a model loaded.
    pub async fn set(&self, tenant: &str, serving: bool) {
        // The lock is held across the update so that a concurrent
        // `report_all_not_serving` cannot be overtaken by a stale SERVING.
        let mut state = self.state.lock().await;
        state.known.insert(tenant.to_string());
        let status = if serving && !state.stopping {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.reporter
            .set_service_status(service_name(tenant), status)
            .await;
    }

    /// Forgets `tenant`: its health name becomes unknown again (NOT_FOUND),
    /// as for a tenant this node never served (a deleted tenant).
    pub async fn forget(&self, tenant: &str) {
        let mut state = self.state.lock().await;
        if state.known.remove(tenant) {
            let mut reporter = self.reporter.clone();
            reporter.clear_service_status(&service_name(tenant)).await;
        }
    }

    /// Reports every tenant NOT_SERVING for good (graceful shutdown).
    pub async fn report_all_not_serving(&self) {
        let mut state = self.state.lock().await;
        state.stopping = true;
        for tenant in &state.known {
            self.reporter
                .set_service_status(service_name(tenant), ServingStatus::NotServing)
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_health::pb::health_check_response::ServingStatus as Wire;
    use tonic_health::pb::health_server::Health;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::server::HealthService;

    async fn status(service: &HealthService, name: &str) -> Result<i32, tonic::Code> {
        service
            .check(tonic::Request::new(HealthCheckRequest {
                service: name.to_string(),
            }))
            .await
            .map(|r| r.into_inner().status)
            .map_err(|s| s.code())
    }

    #[tokio::test]
    async fn per_tenant_statuses_and_shutdown() {
        let reporter = HealthReporter::new();
        let service = HealthService::from_health_reporter(reporter.clone());
        let health = TenantHealth::new(reporter);
        let serving = Wire::Serving as i32;
        let not_serving = Wire::NotServing as i32;
        health.set("en", true).await;
        health.set("es", false).await;
        assert_eq!(status(&service, "tandem.model/en").await, Ok(serving));
        assert_eq!(status(&service, "tandem.model/es").await, Ok(not_serving));
        assert_eq!(
            status(&service, "tandem.model/fr").await,
            Err(tonic::Code::NotFound)
        );
        health.forget("es").await;
        assert_eq!(
            status(&service, "tandem.model/es").await,
            Err(tonic::Code::NotFound)
        );
        health.report_all_not_serving().await;
        assert_eq!(status(&service, "tandem.model/en").await, Ok(not_serving));
        // A reload finishing during the drain does not bring a tenant back.
        health.set("en", true).await;
        assert_eq!(status(&service, "tandem.model/en").await, Ok(not_serving));
    }
}
