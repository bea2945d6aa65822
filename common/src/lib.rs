//! Plumbing shared by tandem's processes (index-node, model-node, router).
//!
//! Everything here is policy-free infrastructure that more than one binary
//! needs, kept in one place so that the processes behave alike:
//!
//! - [`config`]: loading a TOML config file with clear errors;
//! - [`trace`]: spans over OTLP and `traceparent` propagation (off unless
//!   an OTLP endpoint is configured);
//! - [`telemetry`]: `tracing` logs and the Prometheus `/metrics` endpoint;
//!   [`metric_help`]: every metric's type and HELP text, and the build info;
//! - [`grpc_metrics`]: a tower layer counting gRPC calls by method and code;
//! - [`grpc_deadline`]: a tower layer ending a call when its caller's
//!   `grpc-timeout` has run out;
//! - [`server`]: serving a set of gRPC services with health, reflection,
//!   a readiness line for supervisors, and graceful shutdown;
//! - [`channel`]: tonic channels to other tandem processes (shared connect
//!   failures, keepalive, a call refused by a GOAWAY sent again);
//! - [`auth`]: bearer-token checks for admin APIs;
//! - [`admin_guard`]: the admin token check with a brake on guessing;
//! - [`internal`]: the internal token that node APIs require;
//! - [`secret_file`]: writing files that hold secrets (mode 0600);
//! - [`normalize`]: query normalisation (the router records normalised
//!   queries, the model-node trains and serves on them);
//! - [`limits`]: public API limits shared by the router and the nodes;
//! - [`faults`]: fault injection for outage drills;
//! - [`latency`]: the network between the regions, emulated (distance, and
//!   a drill's partition);
//! - [`resolve`]: peers' names resolved by the system or a hosts file;
//! - [`tls`]: TLS on listeners and channels, certificates reloaded from files;
//! - [`web`]: gRPC-Web and CORS for browsers;
//! - [`store`]: the shared object store and its one layout (snapshots,
//!   usage events, model versions).

pub mod admin_guard;
pub mod auth;
pub mod channel;
pub mod config;
pub mod documents;
pub mod faults;
pub mod grpc_deadline;
pub mod grpc_metrics;
pub mod internal;
pub mod latency;
pub mod limits;
pub mod metric_help;
pub mod normalize;
pub mod resolve;
pub mod secret_file;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod trace;
pub mod web;
