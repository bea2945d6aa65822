//! The `tandem.v1.ModelNode` gRPC service: a thin mapping onto
//! [`ModelStore`] (answers) and [`Reloader`] (loads), behind the node's
//! fault injection.
//!
//! Every handler first applies injected faults for its tenant (`ListModels`
//! only node-wide ones), so drills can fail, delay or hang one tenant's
//! model or the whole node. Suggest and Boosts are a few microseconds of CPU
//! on an immutable snapshot and run inline; LoadModel reads files and runs on
//! the blocking pool. Request limits and clamps are [`ModelStore`]'s (see
//! `store.rs`): empty or over-long text is INVALID_ARGUMENT, `k` / `max` of 0
//! mean the default and larger values are clamped.

use std::sync::Arc;
use std::time::Instant;

use tandem_common::faults::FaultRegistry;
use tandem_proto::v1::model_node_server::ModelNode;
use tandem_proto::v1::{
    BoostsRequest, BoostsResponse, DeleteModelsRequest, DeleteModelsResponse, ListModelsRequest,
    ListModelsResponse, LoadModelRequest, ModelInfo, ModelSuggestRequest, ModelSuggestResponse,
};
use tonic::{Request, Response, Status};

use crate::reload::Reloader;
use crate::store::ModelStore;

/// See the module documentation.
#[derive(Clone, Debug)]
pub struct ModelService {
    node_id: String,
    reloader: Arc<Reloader>,
    faults: FaultRegistry,
}

impl ModelService {
    /// A service answering from `reloader`'s store as node `node_id`.
    pub fn new(node_id: String, reloader: Arc<Reloader>, faults: FaultRegistry) -> Self {
        Self {
            node_id,
            reloader,
            faults,
        }
    }

    fn store(&self) -> &ModelStore {
        self.reloader.store()
    }
}

#[tonic::async_trait]
impl ModelNode for ModelService {
    async fn suggest(
        &self,
        request: Request<ModelSuggestRequest>,
    ) -> Result<Response<ModelSuggestResponse>, Status> {
        let req = request.into_inner();
        self.faults.check(&req.tenant, None).await?;
        let started = Instant::now();
        let answer = self.store().suggest(&req.tenant, &req.prefix, req.k)?;
        metrics::histogram!("model_suggest_seconds").record(started.elapsed().as_secs_f64());
        Ok(Response::new(ModelSuggestResponse {
            suggestions: answer.suggestions.into_iter().map(Into::into).collect(),
            model_version: answer.version.to_string(),
            node: self.node_id.clone(),
        }))
    }

    async fn boosts(
        &self,
        request: Request<BoostsRequest>,
    ) -> Result<Response<BoostsResponse>, Status> {
        let req = request.into_inner();
        self.faults.check(&req.tenant, None).await?;
        let started = Instant::now();
        let answer = self.store().boosts(&req.tenant, &req.query, req.max)?;
        metrics::histogram!("model_boosts_seconds").record(started.elapsed().as_secs_f64());
        Ok(Response::new(BoostsResponse {
            boosts: answer.boosts.into_iter().map(Into::into).collect(),
            model_version: answer.version.to_string(),
            node: self.node_id.clone(),
        }))
    }

    async fn load_model(
        &self,
        request: Request<LoadModelRequest>,
    ) -> Result<Response<ModelInfo>, Status> {
        let req = request.into_inner();
        self.faults.check(&req.tenant, None).await?;
        let info = self.reloader.load(&req.tenant).await?;
        Ok(Response::new(info.into()))
    }

    async fn delete_models(
        &self,
        request: Request<DeleteModelsRequest>,
    ) -> Result<Response<DeleteModelsResponse>, Status> {
        let req = request.into_inner();
        let (served, artifacts) = self.reloader.remove(&req.tenant).await?;
        Ok(Response::new(DeleteModelsResponse {
            served_version: served.map(|v| v.to_string()).unwrap_or_default(),
            artifacts: artifacts as u32,
        }))
    }

    async fn list_models(
        &self,
        _request: Request<ListModelsRequest>,
    ) -> Result<Response<ListModelsResponse>, Status> {
        // No tenant: only a node-wide fault applies.
        self.faults.check("", None).await?;
        Ok(Response::new(ListModelsResponse {
            models: self.store().list().into_iter().map(Into::into).collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::TenantHealth;
    use crate::reload::Trigger;
    use crate::test_support::write_version;
    use tandem_proto::v1::{Fault, FaultAction};
    use tonic_health::server::HealthReporter;

    async fn service(dir: &std::path::Path) -> (ModelService, FaultRegistry) {
        let store = Arc::new(ModelStore::new(dir));
        let reloader = Arc::new(Reloader::new(
            store,
            TenantHealth::new(HealthReporter::new()),
        ));
        reloader.load_all(Trigger::Startup).await.expect("startup");
        let faults = FaultRegistry::new();
        (
            ModelService::new("m1".into(), reloader, faults.clone()),
            faults,
        )
    }

    fn suggest_req(tenant: &str, prefix: &str, k: u32) -> Request<ModelSuggestRequest> {
        Request::new(ModelSuggestRequest {
            tenant: tenant.into(),
            prefix: prefix.into(),
            k,
        })
    }

    #[tokio::test]
    async fn answers_carry_version_and_node() {
        let dir = tempfile::tempdir().expect("tempdir");
        let v1 = write_version(dir.path(), "en", 1, 1_000);
        let (svc, _) = service(dir.path()).await;
        let s = svc
            .suggest(suggest_req("en", "Ext", 3))
            .await
            .expect("suggest")
            .into_inner();
        assert_eq!(
            (s.model_version.as_str(), s.node.as_str()),
            (v1.as_str(), "m1")
        );
        assert!(!s.suggestions.is_empty() && s.suggestions.len() <= 3);
        let b = svc
            .boosts(Request::new(BoostsRequest {
                tenant: "en".into(),
                query: s.suggestions[0].text.clone(),
                max: 0,
            }))
            .await
            .expect("boosts")
            .into_inner();
        assert_eq!(b.model_version, v1);
        let list = svc
            .list_models(Request::new(ListModelsRequest {}))
            .await
            .expect("list")
            .into_inner();
        assert_eq!(list.models.len(), 1);
        let v2 = write_version(dir.path(), "en", 2, 2_000);
        let loaded = svc
            .load_model(Request::new(LoadModelRequest {
                tenant: "en".into(),
            }))
            .await
            .expect("load")
            .into_inner();
        assert_eq!(loaded.version, v2);

        let delete = |tenant: &str| {
            svc.delete_models(Request::new(DeleteModelsRequest {
                tenant: tenant.into(),
            }))
        };
        let deleted = delete("en").await.expect("delete").into_inner();
        assert_eq!((deleted.served_version, deleted.artifacts), (v2, 2));
        assert!(!dir.path().join("en").exists(), "artifacts removed");
        let gone = svc.suggest(suggest_req("en", "Ext", 3)).await.unwrap_err();
        assert_eq!(gone.code(), tonic::Code::NotFound);
        let again = delete("en").await.expect("idempotent").into_inner();
        assert_eq!((again.served_version.as_str(), again.artifacts), ("", 0));
        let bad = delete("../x").await.unwrap_err();
        assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    }

    #[tokio::test]
    async fn bad_input_and_faults_map_to_codes() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_version(dir.path(), "en", 1, 1_000);
        let (svc, faults) = service(dir.path()).await;
        let code = |r: Result<Response<ModelSuggestResponse>, Status>| r.err().map(|s| s.code());
        let kb = "x".repeat(1024);
        assert_eq!(
            code(svc.suggest(suggest_req("zz", "ext", 5)).await),
            Some(tonic::Code::NotFound)
        );
        assert_eq!(
            code(svc.suggest(suggest_req("en", "", 5)).await),
            Some(tonic::Code::InvalidArgument)
        );
        assert_eq!(
            code(svc.suggest(suggest_req("en", &kb, 5)).await),
            Some(tonic::Code::InvalidArgument)
        );
        assert_eq!(
            code(svc.suggest(suggest_req("en", "e", u32::MAX)).await),
            None
        );
        faults
            .set(Fault {
                tenant: "en".into(),
                action: FaultAction::Unavailable as i32,
                ..Default::default()
            })
            .expect("fault");
        assert_eq!(
            code(svc.suggest(suggest_req("en", "ext", 5)).await),
            Some(tonic::Code::Unavailable)
        );
        // A tenant fault leaves ListModels (node-wide) alone.
        assert!(svc
            .list_models(Request::new(ListModelsRequest {}))
            .await
            .is_ok());
        faults.clear_all();
        assert_eq!(code(svc.suggest(suggest_req("en", "ext", 5)).await), None);
    }
}
