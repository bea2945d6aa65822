//! tandem's load generator: open- or closed-loop load on the public search
//! API through the client library (with its failover), so what it measures
//! is what a client sees. Behind `tandem-loadgen` and `tandem drill`.
//!
//! - [`run`]: the load itself, at a fixed rate (latency counted from each
//!   request's due time, so slow answers are not hidden) or a concurrency;
//! - [`sample`]: one request's outcome; [`summary`]: the JSON summary;
//! - [`timeline`]: the run in buckets; [`plot`]: the timeline as SVG;
//!   [`recovery`]: time until the tail latency is back after a fault;
//! - [`queries`]: query files, and the built-in natural-language questions;
//! - [`progress`]: bars and spinners on long commands (here and in `tandem`).

pub mod plot;
pub mod progress;
pub mod queries;
pub mod recovery;
pub mod run;
pub mod sample;
pub mod summary;
pub mod timeline;

pub use queries::{natural_language_queries, parse_queries, read_queries};
pub use recovery::{time_to_recover, Recovery, RecoveryCriteria};
pub use run::{
    run_load, run_load_with, EventLog, LoadConfig, LoadMode, LoadReport, DEFAULT_MAX_OUTSTANDING,
};
pub use sample::{Answered, Outcome, Sample};
pub use summary::{Percentiles, RegionShare, Summary};
pub use timeline::{Bucket, Timeline, TimelineEvent};
