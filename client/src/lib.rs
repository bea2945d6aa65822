//! The tandem client library, used by the CLI, the load generator and the
//! tests.
//!
//! It does on the client side what a global accelerator in front of a
//! two-region fleet does: it knows every region's router, sends calls to
//! its own (home) region's router, and when that router is gone
//! (connection refused or reset, UNAVAILABLE) it
//!
//! 1. retries the failed call once on another region's router within the
//!    call's deadline, so the caller sees no error, and
//! 2. sends the following calls there too, while probing the home router
//!    with `grpc.health.v1` in the background (every `probe_interval`);
//!    after `return_after` consecutive SERVING answers calls go home again.
//!
//! Other errors (INVALID_ARGUMENT, UNAUTHENTICATED, NOT_FOUND, the caller's
//! own deadline, ...) are returned as they came: another router would say
//! the same. The tenant's API key is sent as `authorization: Bearer <key>`
//! on every call.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use tandem_client::{ClientConfig, RegionEndpoint, TandemClient};
//! use tandem_proto::v1::SearchRequest;
//!
//! let config = ClientConfig::new(vec![
//!     RegionEndpoint::new("us-east-1", "127.0.0.1:50051"),
//!     RegionEndpoint::new("us-east-2", "127.0.0.1:50052"),
//! ])
//! .with_api_key("key");
//! let client = TandemClient::connect(config).await?;
//! let request = SearchRequest { tenant: "en".into(), query: "tar".into(), ..Default::default() };
//! let (response, info) = client.search(request).await?;
//! println!("{} hits via {}", response.hits.len(), info.region);
//! # Ok(()) }
//! ```
//!
//! Layout: [`failover`] is the pure state machine; `switch` shares it
//! between calls (an atomic read per call, a lock only on events);
//! `prober` is the background health checker; `client` does the calls;
//! [`topology`] is the cluster file shared with the CLI and tests;
//! [`corpus`] reads a JSON-lines file of documents (the sample data's
//! format) into the API's `Document`s.

#![warn(missing_docs)]

mod classify;
mod client;
mod config;
pub mod corpus;
pub mod failover;
mod prober;
mod switch;
pub mod topology;

pub use classify::is_failover_status;
pub use client::{CallInfo, TandemClient};
pub use config::{tls_config, uri_of, ClientConfig, ClientError, RegionEndpoint};
pub use topology::{NodeInfo, RegionInfo, TenantInfo, Topology, TopologyError};
