//! Setting and clearing injected faults on index- and model-nodes and on
//! routers' admin listeners (`tandem.v1.FaultInjection`, bearer admin
//! token).

use std::time::Duration;

use anyhow::Context;
use tandem_common::internal::InternalToken;
use tandem_proto::v1::fault_injection_client::FaultInjectionClient;
use tandem_proto::v1::{ClearFaultRequest, Fault, FaultAction};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// What an injected fault applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultScope {
    /// `None`: every call on the node.
    pub tenant: Option<String>,
    /// With a tenant: only this shard.
    pub shard: Option<u32>,
    /// The process's own calls to the other region, not the calls it
    /// serves (a partition).
    pub cross_region: bool,
}

impl FaultScope {
    /// The whole node.
    pub fn node() -> Self {
        FaultScope {
            tenant: None,
            shard: None,
            cross_region: false,
        }
    }

    /// One tenant shard.
    pub fn shard(tenant: &str, shard: u32) -> Self {
        FaultScope {
            tenant: Some(tenant.to_string()),
            shard: Some(shard),
            cross_region: false,
        }
    }

    /// The process's calls to the other region.
    pub fn cross_region() -> Self {
        FaultScope {
            cross_region: true,
            ..Self::node()
        }
    }
}

impl std::fmt::Display for FaultScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.tenant, self.shard) {
            _ if self.cross_region => write!(f, "calls to the other region"),
            (None, _) => write!(f, "every call"),
            (Some(t), None) => write!(f, "tenant {t}"),
            (Some(t), Some(s)) => write!(f, "tenant {t} shard {s}"),
        }
    }
}

/// A fault-injection client of the node at `addr`; its calls carry the
/// internal token (the service is a node API).
async fn client(addr: &str) -> anyhow::Result<FaultClient> {
    let channel = crate::operator::endpoint(addr)?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("cannot reach {addr}"))?;
    Ok(FaultInjectionClient::with_interceptor(
        channel,
        crate::operator::internal_token()?,
    ))
}

type FaultClient = FaultInjectionClient<InterceptedService<Channel, InternalToken>>;

fn bearer<T>(message: T, token: &str) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}")
            .parse()
            .context("the admin token cannot be sent as a header")?,
    );
    Ok(request)
}

/// Injects `action` (with `delay_ms`, for a delay) on calls in `scope` on
/// the process whose fault API is at `addr`.
pub async fn set(
    addr: &str,
    token: &str,
    scope: &FaultScope,
    (action, delay_ms): (FaultAction, u32),
) -> anyhow::Result<()> {
    let fault = Fault {
        tenant: scope.tenant.clone().unwrap_or_default(),
        has_shard: scope.shard.is_some(),
        shard: scope.shard.unwrap_or(0),
        action: action as i32,
        delay_ms,
        cross_region: scope.cross_region,
    };
    client(addr)
        .await?
        .set_fault(bearer(fault, token)?)
        .await
        .map_err(|s| anyhow::anyhow!("SetFault on {addr}: {:?}: {}", s.code(), s.message()))?;
    Ok(())
}

/// Removes the fault of `scope` on the node at `addr`.
pub async fn clear(addr: &str, token: &str, scope: &FaultScope) -> anyhow::Result<()> {
    let request = ClearFaultRequest {
        tenant: scope.tenant.clone().unwrap_or_default(),
        has_shard: scope.shard.is_some(),
        shard: scope.shard.unwrap_or(0),
        all: false,
        cross_region: scope.cross_region,
    };
    client(addr)
        .await?
        .clear_fault(bearer(request, token)?)
        .await
        .map_err(|s| anyhow::anyhow!("ClearFault on {addr}: {:?}: {}", s.code(), s.message()))?;
    Ok(())
}
