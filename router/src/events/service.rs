//! The public `tandem.v1.Events` API: clicks, authenticated with the
//! tenant's search key like `Search` (and from browsers, the tenant's
//! allowed origins).

use std::sync::Arc;

use tandem_proto::v1::events_server::Events as EventsApi;
use tandem_proto::v1::{ClickRequest, ClickResponse};
use tonic::{Request, Response, Status};

use crate::service::SearchService;
use crate::state::RouterState;

/// See the module documentation.
#[derive(Clone)]
pub struct EventsService {
    search: SearchService,
    state: Arc<RouterState>,
}

impl EventsService {
    /// The service over the router's shared state.
    pub fn new(state: Arc<RouterState>) -> Self {
        Self {
            search: SearchService::new(state.clone()),
            state,
        }
    }
}

#[tonic::async_trait]
impl EventsApi for EventsService {
    async fn click(
        &self,
        request: Request<ClickRequest>,
    ) -> Result<Response<ClickResponse>, Status> {
        let (metadata, extensions, req) = request.into_parts();
        let result = self
            .search
            .authorize_call(&metadata, &extensions, &req.tenant)
            .and_then(|map| self.state.events.click(&map.tenant.id, &req));
        let code = match &result {
            Ok(()) => tonic::Code::Ok,
            Err(s) => s.code(),
        };
        metrics::counter!("router_clicks_total", "code" => tandem_common::grpc_metrics::code_name(code))
            .increment(1);
        result.map(|()| Response::new(ClickResponse {}))
    }
}
