//! tandem's index-node: hosts many tenants' tantivy index shards behind the
//! `tandem.v1.IndexNode` gRPC API.
//!
//! Reading order: [`schema`] (what a document is), [`query`] (how a request
//! becomes a tantivy query), [`shard`] (one tenant shard: search, apply,
//! commit, digest), [`oplog`] (the shard's operation log), [`writer`] (group
//! commit: log, acknowledge, index), [`registry`] (thousands of shards with
//! a bounded set open), [`roles`] (leader or follower, from the catalog),
//! [`leader`] (who may write; serving pulls), [`follower`] (pulling),
//! [`snapshot`] and [`bootstrap`] (snapshots in an object store; building a
//! replica from one), [`retire`] (removing a deleted tenant),
//! [`pool`] (bounded CPU pool that sheds load), [`service`] (the gRPC
//! surface), [`node`] (wiring a process together).
//!
//! The index-node knows nothing of regions or routing: a router decides
//! which node to ask.

pub mod adopted;
pub mod bootstrap;
pub mod config;
pub mod follower;
pub mod leader;
pub mod node;
pub mod oplog;
pub mod pool;
pub mod quarantine;
pub mod query;
pub mod ranking;
pub mod registry;
pub mod retire;
pub mod roles;
pub mod schema;
pub mod service;
pub mod shard;
pub mod snapshot;
pub mod snippet;
pub mod upgrade;
pub mod writer;
