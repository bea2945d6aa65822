//! `tandem-model-node`: serves per-tenant models over gRPC, trains them from
//! usage events and evaluates them offline; also writes the synthetic sample
//! event logs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use serde::Serialize;
use tandem_common::config::load_with_flags;
use tandem_common::internal::InternalToken;
use tandem_common::tls::TlsArgs;
use tandem_model_node::config::NodeConfig;
use tandem_model_node::eval::evaluate;
use tandem_model_node::events::read_events_file;
use tandem_model_node::synth::{generate_file, SynthConfig};
use tandem_model_node::train::{now_millis, train_to_dir, TrainConfig};

/// tandem's model-node: query suggestions and relevance tuning per tenant.
#[derive(Parser)]
#[command(name = "tandem-model-node", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the models under a model directory over gRPC.
    Serve(Box<ServeArgs>),
    /// Write a deterministic SYNTHETIC event log for the sample corpus.
    Synth {
        /// The corpus (gzipped JSON lines, e.g. data/tldr_pages/docs.jsonl.gz).
        #[arg(long)]
        corpus: PathBuf,
        /// Language of the pages to simulate (e.g. en, es).
        #[arg(long)]
        lang: String,
        /// Number of user sessions.
        #[arg(long, default_value_t = 20_000)]
        sessions: usize,
        /// RNG seed; the same seed gives the same log.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output file (gzipped if it ends in .gz).
        #[arg(long)]
        out: PathBuf,
    },
    /// Train a tenant's models from an event log and write a new artifact
    /// version to <model-dir>/<tenant>/.
    Train {
        /// The tenant id.
        #[arg(long)]
        tenant: String,
        /// The event log (JSON lines, optionally gzipped).
        #[arg(long)]
        events: PathBuf,
        /// The model directory.
        #[arg(long, env = "TANDEM_MODEL_DIR")]
        model_dir: PathBuf,
    },
    /// Split an event log by time, train on the earlier part and report MRR
    /// and suggestion hit rate on the later part.
    Eval {
        /// The event log (JSON lines, optionally gzipped).
        #[arg(long)]
        events: PathBuf,
        /// Share of the log (by time) to train on.
        #[arg(long, default_value_t = 0.8)]
        train_fraction: f64,
    },
}

/// `serve` flags; each overrides the `--config` file's value.
#[derive(Args, Serialize)]
struct ServeArgs {
    /// TOML config file (see `model-node/src/config.rs`); flags override it.
    #[arg(long)]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Id reported in responses, logs and the readiness line.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    node_id: Option<String>,
    /// Region label for logs.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<String>,
    /// gRPC listen address (port 0: any free port, printed on stdout).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<SocketAddr>,
    /// Prometheus /metrics listen address.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics_listen: Option<SocketAddr>,
    /// Serve `grpc.health.v1` alone on this plaintext address too (for
    /// kubelet probes).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    health_listen: Option<SocketAddr>,
    /// Where tenants' artifacts live (<model-dir>/<tenant>/v<n>.tmodel).
    #[arg(long, env = "TANDEM_MODEL_DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    model_dir: Option<PathBuf>,
    /// Poll the model directory this often (ms) and load newer artifacts; 0 = off.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    watch_ms: Option<u64>,
    /// Pull the model versions `tandem train` publishes from this object
    /// store (`file:///dir`, `s3://bucket/prefix`); the model directory
    /// then follows the store.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    model_store: Option<String>,
    /// Poll the model store this often (ms).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    store_poll_ms: Option<u64>,
    /// Serve the fault-injection admin API (needs an admin token).
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    enable_faults: bool,
    /// File holding the fault-injection API's admin token (else the
    /// `TANDEM_ADMIN_TOKEN` environment variable).
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    admin_token_file: Option<PathBuf>,
    /// File holding the cluster's internal token (else the
    /// `TANDEM_INTERNAL_TOKEN` environment variable); required.
    #[arg(long)]
    #[serde(skip)]
    internal_token_file: Option<PathBuf>,
    #[command(flatten)]
    #[serde(skip)]
    tls: TlsArgs,
    /// On shutdown, report NOT_SERVING for this long before closing the listener.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    drain_grace_ms: Option<u64>,
    /// Log JSON lines instead of text.
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    json_logs: bool,
}

/// The config file (or defaults) with the flags applied, and the admin token.
fn serve_config(args: ServeArgs) -> anyhow::Result<(NodeConfig, Option<String>)> {
    let config = load_with_flags(args.config.as_deref(), &args)?;
    let token = tandem_common::secret_file::admin_token(args.admin_token_file.as_deref())?;
    Ok((config, token))
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let internal = InternalToken::resolve(args.internal_token_file.as_deref())?;
    let tls = args.tls.clone();
    let (config, token) = serve_config(args)?;
    tandem_common::telemetry::init_tracing(config.json_logs);
    let runtime = tokio::runtime::Runtime::new().context("cannot start the tokio runtime")?;
    runtime.block_on(async {
        let tls = tls.start()?;
        tandem_model_node::node::run(config, token, internal, tls).await
    })
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line with the whole cause chain, no backtrace: these are
            // operator errors (bad file, bad tenant id), not bugs.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => serve(*args)?,
        Command::Synth {
            corpus,
            lang,
            sessions,
            seed,
            out,
        } => {
            let n = generate_file(&corpus, &lang, &SynthConfig::new(sessions, seed), &out)
                .with_context(|| format!("generating a synthetic log for {lang:?}"))?;
            println!(
                "wrote {n} synthetic events ({sessions} sessions, seed {seed}) to {}",
                out.display()
            );
        }
        Command::Train {
            tenant,
            events,
            model_dir,
        } => {
            let started = Instant::now();
            let log = read_events_file(&events)
                .with_context(|| format!("reading events from {}", events.display()))?;
            let (written, stats) = train_to_dir(
                &log,
                &tenant,
                &TrainConfig::default(),
                &model_dir,
                now_millis(),
            )
            .with_context(|| format!("training tenant {tenant:?}"))?;
            let j = stats.join;
            println!(
                "tenant {tenant}: {} searches, {} clicks -> {} suggestions, {} boosted queries, {} back-off terms",
                j.searches, j.clicks, stats.suggestions, stats.boosted_queries, stats.boosted_terms
            );
            println!(
                "ignored: {} empty queries, {} orphan clicks, {} clicks on unshown docs; {} rank mismatches, {} duplicate clicks",
                j.empty_queries, j.orphan_clicks, j.clicks_not_shown, j.rank_mismatches, j.duplicate_clicks
            );
            println!(
                "wrote {} ({} bytes) in {:.2?}",
                written.file.path.display(),
                written.size_bytes,
                started.elapsed()
            );
        }
        Command::Eval {
            events,
            train_fraction,
        } => {
            let log = read_events_file(&events)
                .with_context(|| format!("reading events from {}", events.display()))?;
            let report =
                evaluate(&log, train_fraction, &TrainConfig::default()).context("evaluating")?;
            println!("{report}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve_args(args: &[&str]) -> ServeArgs {
        let argv = ["tandem-model-node", "serve"].iter().chain(args);
        match Cli::try_parse_from(argv).expect("parse").command {
            Command::Serve(args) => *args,
            _ => panic!("not serve"),
        }
    }

    #[test]
    fn flags_override_the_config_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("model.toml");
        std::fs::write(
            &file,
            "node_id = \"from-file\"\nregion = \"r9\"\nmodel_dir = \"/m\"\nwatch_ms = 0\n",
        )
        .expect("write");
        let path = file.display().to_string();
        let (c, token) = serve_config(serve_args(&["--config", &path])).expect("config");
        assert_eq!((c.node_id.as_str(), c.region.as_str()), ("from-file", "r9"));
        // The environment counts as a flag (and is not ours to change here).
        let dir = std::env::var_os("TANDEM_MODEL_DIR").map_or_else(|| "/m".into(), PathBuf::from);
        let env_token = std::env::var("TANDEM_ADMIN_TOKEN").ok();
        assert_eq!((c.model_dir, c.watch_ms, token), (dir, 0, env_token));

        let token_file = tmp.path().join("admin-token");
        std::fs::write(&token_file, "t\n").expect("write");
        let token_file = token_file.display().to_string();
        let args = serve_args(&[
            "--config",
            &path,
            "--node-id",
            "flag",
            "--watch-ms",
            "250",
            "--listen",
            "127.0.0.1:0",
            "--enable-faults",
            "--admin-token-file",
            &token_file,
        ]);
        let (c, token) = serve_config(args).expect("config");
        assert_eq!((c.node_id.as_str(), c.region.as_str()), ("flag", "r9"));
        assert_eq!(
            (c.watch_ms, c.listen.port(), c.enable_faults),
            (250, 0, true)
        );
        assert_eq!(token.as_deref(), Some("t"));
    }

    #[test]
    fn a_bad_config_file_is_refused_with_its_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("model.toml");
        std::fs::write(&file, "modeldir = \"/typo\"\n").expect("write");
        let path = file.display().to_string();
        let err = serve_config(serve_args(&["--config", &path])).err();
        let message = format!("{:#}", err.expect("refused"));
        assert!(
            message.contains("model.toml") && message.contains("modeldir"),
            "{message}"
        );
    }
}
