//! The `tandem` command as a library, so tests drive the same code the
//! command runs:
//!
//! - [`dev`]: start and stop the local two-region cluster
//!   ([`dev::start_cluster`], [`dev::Cluster::stop`]);
//! - [`drill`]: outage drills under load against a running cluster
//!   ([`drill::run_drill`]);
//! - [`commands`]: the client subcommands (`search`, `suggest`, `status`,
//!   `dial`); [`render`]: how their answers are shown;
//! - [`ingest`]: writing documents through a router (`tandem ingest`, and
//!   how `tandem dev` loads its sample data);
//! - [`catalog_edit`], [`promote`], [`replica`], [`verify`]: the control
//!   plane (`tandem promote` and `tandem replica add/remove` edit the
//!   catalog; `tandem verify` compares replicas);
//! - [`keys`]: a tenant's API keys (`tandem key create|rotate|revoke|list`);
//! - [`tenant`]: a tenant's life (`tandem tenant create|delete`);
//! - [`usage`]: what each tenant used, per region (`tandem usage`);
//! - [`migrate`]: single-region tenants to active-active, with a ramp and
//!   health gates (`tandem migrate`);
//! - [`learn`]: the learning loop (`tandem train`, `tandem events`);
//! - [`operator`]: the operator's internal token and node clients that
//!   carry it;
//! - [`procfs`]: what the drills and shutdown know about processes;
//! - progress bars and spinners: `tandem_loadgen::progress`, shared with
//!   the load generator.

#![warn(missing_docs)]

pub mod catalog_edit;
pub mod commands;
pub mod dev;
pub mod drill;
pub mod ingest;
pub mod keys;
pub mod learn;
pub mod migrate;
pub mod operator;
pub mod procfs;
pub mod promote;
pub mod render;
pub mod replica;
mod supervise;
pub mod tenant;
pub mod usage;
pub mod verify;

pub use supervise::Process;
