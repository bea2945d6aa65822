//! The learning core of tandem's model-node: per-tenant query-suggestion and
//! relevance-tuning models, trained from a tenant's usage events and served
//! from versioned artifact files.
//!
//! - [`normalize`] (from `tandem-common`, where the router records
//!   normalised queries too): query normalisation shared by training and
//!   serving;
//! - [`events`]: the event log format (JSON lines of searches and clicks);
//! - [`observe`]: joining clicks to the searches they belong to;
//! - [`corpus`], [`synth`]: the sample corpus and a deterministic
//!   **synthetic** event-log generator for it;
//! - [`suggest`]: top-k completions of a prefix (fst + precomputed heads);
//! - [`relevance`]: position-bias-aware per-query document boosts (COEC),
//!   with the click-through curve in `position_bias`;
//! - [`model`]: a tenant's models as trained and as served;
//! - [`artifact`]: the versioned, checksummed artifact files;
//! - [`train`]: from events to an artifact;
//! - [`eval`]: offline evaluation on a time split of the log;
//! - [`versions`]: model versions in the shared object store (published by
//!   `tandem train`), and [`sync`]: a node pulling them;
//! - [`store`]: the serving API a gRPC service calls ([`store::ModelStore`]);
//! - [`error`]: serving errors and their gRPC codes;
//! - `convert`: `From` impls into the `tandem_proto::v1` messages.
//!
//! Serving it (`tandem-model-node serve`):
//!
//! - [`config`]: the node's TOML config / flags;
//! - [`health`]: per-tenant `grpc.health.v1` names (`tandem.model/<tenant>`);
//! - [`reload`]: loading at startup, on `LoadModel` and from the
//!   model-directory watcher, with metrics and logs;
//! - [`service`]: the `tandem.v1.ModelNode` gRPC service;
//! - [`node`]: wiring it all into one process.

pub mod artifact;
mod codec;
pub mod config;
mod convert;
pub mod corpus;
pub mod error;
pub mod eval;
pub mod events;
pub mod health;
pub mod model;
pub mod node;
pub use tandem_common::normalize;
pub mod observe;
mod position_bias;
pub mod relevance;
pub mod reload;
pub mod service;
pub mod store;
pub mod suggest;
pub mod sync;
pub mod synth;
pub mod train;
pub mod versions;

#[cfg(test)]
mod test_support;

pub use codec::DecodeError;
pub use error::ModelError;
pub use model::{ModelInfo, ModelMeta, ModelSet, TenantModel};
pub use relevance::{Boost, BoostSource, Boosts};
pub use store::{BoostsAnswer, LoadReport, ModelStore, SuggestAnswer};
pub use suggest::Suggestion;
