//! tandem's router: the region-aware query router.
//!
//! Two layers. The policy core decides and never touches the network; it is
//! synchronous, lock-free or sharded on the hot path, time-driven through
//! `tokio::time::Instant` (so tests run under a paused clock), and knows
//! nothing of tantivy:
//!
//! - [`catalog`]: the catalog (regions, nodes, tenants, key hashes), its
//!   validation, hot-swap handle and authorization: the `tandem-catalog`
//!   crate, which the CLI shares.
//! - [`replicas`]: a tenant's replica map as seen from one region, and the
//!   order in which to try a shard's replicas.
//! - [`endpoint_stats`]: per-node in-flight, latency EWMA and recent p95.
//! - [`outlier`]: ejection / probation / re-admission state machine.
//! - [`hedge`]: adaptive hedging delay.
//! - [`budget`]: the retry + hedge budget.
//! - [`dial`]: the traffic dial (serve here or forward to the paired region);
//!   [`auto_dial`]: the optional health-driven dial of the router's region.
//! - [`ramp`]: a migrating tenant's share read from the new region, and
//!   the counters of its health gates.
//! - [`retry`]: which failures are retried and whom they blame.
//!
//! The serving layer carries a query through them:
//!
//! - [`documents`]: the public `tandem.v1.Documents` API: writes to the
//!   shards' leaders; [`token`]: the consistency token a write returns;
//! - [`events`]: search ids, usage events recorded off the hot path and
//!   shipped to the object store, and the public `tandem.v1.Events` API;
//! - [`service`]: the public `tandem.v1.Search` API: what a call means
//!   (deadline, auth, dial); [`method`]: each method's limits, validation,
//!   and how it is served and forwarded;
//! - [`fanout`]: the model's boosts, then one call per shard, merge, and
//!   snippets for the page only;
//! - [`calls`]: one typed attempt of each downstream call;
//! - [`fallback`]: one shard's call with fallback, hedging and budget;
//! - [`forward`]: handing a call to the paired region's router;
//! - [`cache`], [`channels`], [`probe`], [`watch`], [`deadline`]: the
//!   replica-map cache, connections, health probes, catalog reload, deadlines;
//! - [`admin`]: status, dials, reload, usage ([`usage`]: per-tenant
//!   counters); [`console`]: the operator's web console beside it;
//!   [`state`], [`config`], [`node`]: wiring.

#![warn(missing_docs)]

pub mod admin;
pub mod admission;
pub mod auto_dial;
pub mod budget;
pub mod cache;
pub mod calls;
pub use tandem_catalog as catalog;
pub mod channels;
pub mod config;
pub mod console;
pub mod deadline;
pub mod dial;
pub mod documents;
pub mod endpoint_stats;
pub mod events;
pub mod fallback;
pub mod fanout;
pub mod forward;
pub mod hedge;
pub mod method;
pub mod node;
pub mod outlier;
pub mod probe;
pub mod ramp;
pub mod replicas;
pub mod request_metrics;
pub mod retry;
pub mod service;
pub mod state;
pub mod token;
pub mod usage;
pub mod watch;

/// A concurrent map keyed by catalog ids (node, router, tenant x shard),
/// read several times per call. Hashed with foldhash rather than the
/// default SipHash, a few times cheaper per lookup: these keys come from
/// the operator's catalog, never from callers, so SipHash's resistance to
/// chosen-key flooding buys nothing here. (Maps keyed by what callers
/// send, such as the replica-map cache's tenant names, keep SipHash.)
pub type IdMap<K, V> = dashmap::DashMap<K, V, foldhash::fast::RandomState>;
