//! `tandem`: run the two-region system locally and talk to it.
//!
//! - `tandem dev`: start both regions (routers, index-nodes, model-nodes)
//!   with the sample data, until Ctrl-C;
//! - `tandem search`, `tandem suggest`: query through the routers;
//! - `tandem status`, `tandem dial`: the routers' admin API;
//! - `tandem drill`: an outage under load, with a report.
//!
//! The work is in the `tandem_cli` library; this is the argument parsing.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tandem_cli::commands::{self, Target, DEFAULT_DATA_DIR, DEFAULT_TOPOLOGY};
use tandem_cli::dev::{self, DevOptions};
use tandem_cli::drill::{self, DrillOptions, Scenario};

#[derive(Parser)]
#[command(
    name = "tandem",
    version = tandem_common::metric_help::VERSION,
    about = "tandem: active-active multi-tenant search across two regions"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    target: Target,
}

#[derive(Subcommand)]
enum Command {
    /// Start two regions on this machine with the sample data, until Ctrl-C.
    Dev {
        /// Data directory (reused by the next run).
        #[arg(long, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// Also write the cluster's topology JSON here (the CLI's other
        /// commands read it with --topology, or the copy in the data dir).
        #[arg(long = "write-topology", value_name = "FILE")]
        write_topology: Option<PathBuf>,
        /// Load at most this many pages per tenant (a small, fast cluster).
        #[arg(long, value_name = "N")]
        docs_limit: Option<usize>,
        /// The sample data directory (the repository's `data/`); default:
        /// `./data`, or `data/` beside or above this binary.
        #[arg(long, value_name = "DIR", env = "TANDEM_SAMPLE_DATA")]
        sample_data: Option<PathBuf>,
        /// Serve TLS everywhere (mutual between the processes), with a
        /// throwaway CA made in the data directory; the topology names it
        /// (`ca_cert`). Default: plaintext.
        #[arg(long)]
        tls: bool,
        /// Routers in each region (the topology lists them all; the CLI and
        /// the client library spread calls over them).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=8))]
        routers_per_region: u16,
        #[command(flatten)]
        network: dev::NetworkArgs,
    },
    /// Search a tenant through the routers.
    Search {
        #[arg(long)]
        tenant: String,
        /// The query text.
        query: String,
        #[arg(long, default_value_t = 10)]
        top_k: u32,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Query suggestions for a prefix.
    Suggest {
        #[arg(long)]
        tenant: String,
        prefix: String,
        #[arg(long, default_value_t = 5)]
        k: u32,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Every router's view: dials, catalog, endpoints, ejections.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Set a region's traffic dial (0-100): recorded in the catalog (it
    /// survives restarts) and pushed to every router at once.
    Dial {
        region: String,
        percent: u32,
        /// Catalog file (default: the topology's).
        #[arg(long)]
        catalog: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Write documents from a JSON-lines file (or `-` for stdin) through a
    /// router's `Documents.Write`, in batches, with a progress bar.
    Ingest {
        #[arg(long)]
        tenant: String,
        /// A key with the write scope (default: the tenant's `write_key` in
        /// the topology file).
        #[arg(long, env = "TANDEM_WRITE_KEY", hide_env_values = true)]
        write_key: Option<String>,
        /// Documents per batch.
        #[arg(long, default_value_t = 500)]
        batch: usize,
        /// Skip the input lines before this one (resume after a failure).
        #[arg(long, default_value_t = 1)]
        start_line: usize,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
        /// JSON lines (`.gz` is decompressed); `-` reads stdin.
        file: PathBuf,
    },
    /// Make a follower the leader of a shard, at a higher epoch (edits the
    /// catalog; routers and nodes pick it up at their next poll).
    Promote {
        /// The shard, and the index-node to lead it (one of its replicas).
        #[command(flatten)]
        at: ShardNode,
        /// Promote even if the node is behind another replica (loses the
        /// writes it lacks).
        #[arg(long)]
        force: bool,
    },
    /// Create, rotate, revoke or list a tenant's API keys (the catalog
    /// keeps their SHA-256 only; every router reloads at once).
    Key {
        #[command(subcommand)]
        action: KeyAction,
    },
    /// Create a tenant (placed, keyed, served) or delete one (from the
    /// catalog, then from every node, its snapshots and models).
    Tenant {
        #[command(subcommand)]
        action: tandem_cli::tenant::TenantAction,
    },
    /// What each tenant used, per region: searches, suggests, errors,
    /// documents, index bytes, cross-region calls and bytes (routers'
    /// counters since they started).
    Usage {
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script (`tandem completions bash >
    /// /etc/bash_completion.d/tandem`).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Make single-region tenants active-active: a live replica of every
    /// shard in the paired region, then a traffic ramp with health gates
    /// that roll back by themselves (resumable; --rollback undoes).
    Migrate(tandem_cli::migrate::MigrateArgs),
    /// Train a tenant's models on both regions' usage events and publish
    /// a new version (if it is not worse than the one served) that every
    /// region's model-nodes pull; --rollback returns to the previous one.
    Train(tandem_cli::learn::TrainArgs),
    /// Count a click on a search's result (as a frontend does).
    Click(tandem_cli::learn::ClickArgs),
    /// A tenant's usage events: export them, delete them (privacy).
    Events {
        #[command(subcommand)]
        action: tandem_cli::learn::EventsAction,
    },
    /// Add or remove a replica of a shard while the tenant is live.
    Replica {
        #[command(subcommand)]
        action: ReplicaAction,
    },
    /// Compare every replica of a tenant (content digest at one sequence
    /// number); exits non-zero on a difference.
    Verify(tandem_cli::verify::VerifyArgs),
    /// Load a JSON-lines corpus into one standalone shard of one index-node
    /// (one its catalog does not assign), through the node's own `Ingest`.
    LoadShard {
        /// The index-node's gRPC address (`HOST:PORT` or `http://HOST:PORT`).
        #[arg(long)]
        node: String,
        #[arg(long)]
        tenant: String,
        #[arg(long, default_value_t = 0)]
        shard: u32,
        /// Create the shard first with this language (idempotent).
        #[arg(long, value_name = "LANG")]
        create: Option<String>,
        /// Only records whose attribute KEY equals VALUE (repeatable).
        #[arg(long = "where", value_name = "KEY=VALUE")]
        filters: Vec<tandem_client::corpus::Where>,
        /// Documents per batch.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// JSON-lines corpus (`.gz` is decompressed).
        file: PathBuf,
    },
    /// Break something under steady load, heal it, and report failed
    /// queries, the serving-region mix over time and the time to recover.
    Drill {
        /// The outage.
        #[arg(value_enum)]
        scenario: Scenario,
        /// Requests per second (per tenant), open loop.
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        /// Seconds of load; the fault comes at a third, the heal at two
        /// thirds.
        #[arg(long, default_value_t = 15.0)]
        duration: f64,
        /// Tenant under load.
        #[arg(long, default_value = "tldr-en")]
        tenant: String,
        /// Another tenant under the same load at once, reported
        /// separately (repeatable), e.g. `--also tldr-es`.
        #[arg(long = "also", value_name = "TENANT")]
        also: Vec<String>,
        /// Query file (JSON lines with `text`/`query`, or plain lines);
        /// default: each tenant's sample queries from the topology.
        #[arg(long)]
        queries: Option<PathBuf>,
        /// Write the timeline (per 100 ms) as CSV here.
        #[arg(long)]
        timeline_csv: Option<PathBuf>,
        /// Write the timeline plot as SVG here.
        #[arg(long)]
        timeline_svg: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// `replica-bootstrap`: single-document writes per second.
        #[arg(long, default_value_t = 125.0)]
        write_rate: f64,
    },
}

/// `tandem key` subcommands.
#[derive(Subcommand)]
enum KeyAction {
    /// Add a new key and print it (the only time it is shown).
    Create {
        #[command(flatten)]
        key: KeyOf,
    },
    /// Replace the key whose SHA-256 is given with a new one, printed.
    Rotate {
        #[command(flatten)]
        key: KeyOf,
        /// SHA-256 of the key to replace (`printf %s "$KEY" | sha256sum`).
        #[arg(long)]
        key_sha256: String,
    },
    /// Remove the key whose SHA-256 is given.
    Revoke {
        #[command(flatten)]
        key: KeyOf,
        /// SHA-256 of the key to remove (`printf %s "$KEY" | sha256sum`).
        #[arg(long)]
        key_sha256: String,
    },
    /// Print the SHA-256 of every key of the tenant.
    List {
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        files: tandem_cli::keys::CatalogArgs,
    },
}

/// Which tenant's keys of which scope, in which catalog.
#[derive(clap::Args)]
struct KeyOf {
    #[arg(long)]
    tenant: String,
    /// `search` (Search, Suggest) or `write` (Documents.Write).
    #[arg(long, value_enum)]
    scope: tandem_cli::keys::Scope,
    #[command(flatten)]
    files: tandem_cli::keys::CatalogArgs,
}

#[derive(Subcommand)]
enum ReplicaAction {
    /// Build a new replica on NODE from a snapshot, let it catch up, check
    /// its digest against the leader's, then add it to the catalog.
    Add {
        #[command(flatten)]
        at: ShardNode,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 3600)]
        wait: u64,
    },
    /// Take a follower out of the catalog (its files stay on its disk).
    Remove {
        #[command(flatten)]
        at: ShardNode,
    },
}

/// A node's part in one shard, and the catalog file that says it.
#[derive(clap::Args)]
struct ShardNode {
    #[arg(long)]
    tenant: String,
    #[arg(long)]
    shard: u32,
    #[arg(long)]
    node: String,
    /// Catalog file (default: the topology's).
    #[arg(long)]
    catalog: Option<PathBuf>,
}

fn main() -> ExitCode {
    quiet_on_closed_stdout();
    let cli = Cli::parse();
    tandem_common::telemetry::init_tracing(false);
    let result = tokio::runtime::Runtime::new()
        .context("cannot start the async runtime")
        .and_then(|runtime| runtime.block_on(run(cli)));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tandem: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Exits quietly (status 141, as a process killed by SIGPIPE) when stdout
/// is closed early (`tandem search | head`), as command-line tools do,
/// instead of a panic message. SIGPIPE itself stays ignored (Rust's
/// default): restoring it would also kill the command, silently, whenever
/// a node closes a connection under a vectored socket write.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if !matches!(
        cli.command,
        Command::Dev { .. } | Command::Completions { .. }
    ) {
        // Operator commands call node APIs with the cluster's internal
        // token (`tandem dev` makes its own).
        if let Some(token) = cli.target.internal_token() {
            tandem_cli::operator::use_internal_token(token);
        }
        tandem_cli::operator::use_ca_cert(cli.target.ca_cert().as_deref())?;
    }
    match cli.command {
        Command::Dev {
            data_dir,
            write_topology,
            docs_limit,
            sample_data,
            tls,
            routers_per_region,
            network,
        } => {
            let repo = dev::sample_data::locate(sample_data.as_deref())?;
            let mut opts = DevOptions::new(data_dir, repo);
            opts.topology = write_topology.or(cli.target.topology);
            opts.docs_limit = docs_limit;
            opts.tls = tls;
            opts.routers_per_region = usize::from(routers_per_region);
            opts.network = network;
            dev::run(opts).await?;
        }
        Command::Search {
            tenant,
            query,
            top_k,
            json,
        } => commands::search(&cli.target, &tenant, &query, top_k, json).await?,
        Command::Suggest {
            tenant,
            prefix,
            k,
            json,
        } => commands::suggest(&cli.target, &tenant, &prefix, k, json).await?,
        Command::Status { json } => commands::status(&cli.target, json).await?,
        Command::Dial {
            region,
            percent,
            catalog,
            json,
        } => commands::dial(&cli.target, (&region, percent), catalog, json).await?,
        Command::Ingest {
            tenant,
            write_key,
            batch,
            start_line,
            quiet,
            file,
        } => {
            let plan = tandem_cli::ingest::IngestPlan {
                tenant,
                write_key: write_key.unwrap_or_default(),
                batch_size: batch,
                progress: !quiet,
                first_line: start_line,
            };
            commands::ingest(&cli.target, plan, &file).await?
        }
        Command::Promote {
            at:
                ShardNode {
                    tenant,
                    shard,
                    node,
                    catalog,
                },
            force,
        } => {
            let path = cli.target.catalog_path(catalog)?;
            let p = tandem_cli::promote::promote(&path, &tenant, shard, &node, force).await?;
            println!(
                "{tenant}/{shard}: {} leads at epoch {} (was {} at epoch {}); its log ends at {}",
                p.to, p.epoch, p.from, p.from_epoch, p.seq
            );
        }
        Command::Key { action } => key(&cli.target, action).await?,
        Command::Tenant { action } => tandem_cli::tenant::run(&cli.target, action).await?,
        Command::Usage { tenant, json } => {
            let usage =
                tandem_cli::usage::collect(&cli.target, tenant.as_deref().unwrap_or("")).await?;
            if json {
                println!("{}", serde_json::to_string(&usage)?);
            } else {
                print!("{}", tandem_cli::usage::to_text(&usage));
            }
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut command = Cli::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, "tandem", &mut script);
            // A closed pipe (`| head`) is the reader's choice, not an error.
            let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
        }
        Command::Train(args) => {
            if !tandem_cli::learn::train(&cli.target, &args).await? {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Click(args) => tandem_cli::learn::click(&cli.target, &args).await?,
        Command::Events { action } => {
            if !tandem_cli::learn::events_command(&cli.target, &action).await? {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Migrate(args) => {
            if !tandem_cli::migrate::run(&cli.target, &args).await? {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Replica { action } => match action {
            ReplicaAction::Add {
                at:
                    ShardNode {
                        tenant,
                        shard,
                        node,
                        catalog,
                    },
                wait,
            } => {
                let path = cli.target.catalog_path(catalog)?;
                let added = tandem_cli::replica::add(
                    &path,
                    &tenant,
                    shard,
                    &node,
                    Duration::from_secs(wait),
                    true,
                )
                .await?;
                println!(
                    "{tenant}/{shard}: {node} added after {:.1?} ({} snapshot bytes; digest equal to the leader's at seq {})",
                    added.elapsed, added.snapshot_bytes, added.seq
                );
            }
            ReplicaAction::Remove {
                at:
                    ShardNode {
                        tenant,
                        shard,
                        node,
                        catalog,
                    },
            } => {
                let path = cli.target.catalog_path(catalog)?;
                tandem_cli::replica::remove(&path, &tenant, shard, &node)?;
                println!("{tenant}/{shard}: {node} removed from the catalog");
            }
        },
        Command::Verify(args) => {
            if !tandem_cli::verify::run(&cli.target, &args).await? {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::LoadShard {
            node,
            tenant,
            shard,
            create,
            filters,
            batch,
            file,
        } => {
            let plan = dev::LoadPlan {
                tenant,
                shard,
                create_language: create,
                batch_size: batch,
            };
            dev::load_file(&node, &plan, &file, &filters).await?
        }
        Command::Drill {
            scenario,
            rate,
            duration,
            tenant,
            also,
            queries,
            timeline_csv,
            timeline_svg,
            json,
            write_rate,
        } => {
            let duration = Duration::try_from_secs_f64(duration)
                .context("--duration must be a number of seconds")?;
            let mut opts = DrillOptions::new(
                scenario,
                cli.target
                    .topology_path()
                    .unwrap_or_else(|| DEFAULT_TOPOLOGY.into()),
            );
            opts.rate = rate;
            opts.duration = duration;
            opts.tenant = tenant;
            opts.extra_tenants = also;
            opts.home_region = cli.target.region.clone();
            opts.stop_on_ctrl_c = true;
            if let Some(path) = &queries {
                opts.queries = Some(tandem_loadgen::read_queries(path)?);
            }
            let out = drill::command::Output {
                json,
                timeline_csv,
                timeline_svg,
            };
            if !drill::command::run(&opts, write_rate, &out).await? {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `tandem key ...`: edits the catalog (or keys file), then has every
/// router reload it.
async fn key(target: &Target, action: KeyAction) -> anyhow::Result<()> {
    use tandem_cli::keys;
    let (of, old) = match action {
        KeyAction::List { tenant, files } => {
            for (scope, hash) in keys::list(&files.source(target)?, &tenant)? {
                println!("{:<6} {hash}", format!("{scope:?}").to_lowercase());
            }
            return Ok(());
        }
        KeyAction::Create { key } => (key, None),
        KeyAction::Rotate { key, key_sha256 } => (key, Some((key_sha256, true))),
        KeyAction::Revoke { key, key_sha256 } => (key, Some((key_sha256, false))),
    };
    let src = of.files.source(target)?;
    let new = match old {
        None => Some(keys::create(&src, &of.tenant, of.scope)?),
        Some((hash, replace)) => keys::revoke(&src, &of.tenant, of.scope, &hash, replace)?,
    };
    match &new {
        Some(k) => println!("new {:?} key of {}: {k}", of.scope, of.tenant),
        None => println!("revoked a {:?} key of {}", of.scope, of.tenant),
    }
    commands::reload_catalogs(target).await
}
