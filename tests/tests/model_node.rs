//! End-to-end tests of `tandem-model-node`: models trained by the real binary
//! (`synth`, `train`), served by the real binary (`serve`) on ephemeral
//! loopback ports, driven over gRPC.
//!
//! Build the binaries first: `cargo build -p tandem-model-node --bins`.
//! Training data is a slice of the synthetic sample log
//! `data/events/en.jsonl.gz` (or, in one test, a log written by `synth`), so
//! every model trains in well under a second.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem_common::internal::InternalToken;
use tandem_e2e::{bin_path, repo_root, with_bearer, Proc, ADMIN_TOKEN};
use tandem_proto::v1::fault_injection_client::FaultInjectionClient;
use tandem_proto::v1::model_node_client::ModelNodeClient;
use tandem_proto::v1::{
    BoostsRequest, BoostsResponse, ClearFaultRequest, DocBoost, Fault, FaultAction,
    ListModelsRequest, LoadModelRequest, ModelInfo, ModelSuggestRequest, ModelSuggestResponse,
    Suggestion,
};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const BIN: &str = "tandem-model-node";

/// Writes lines `skip..skip + take` of the English sample log to `dir`.
fn events_slice(dir: &Path, name: &str, skip: usize, take: usize) -> PathBuf {
    let file =
        std::fs::File::open(repo_root().join("data/events/en.jsonl.gz")).expect("sample log");
    let lines = BufReader::new(flate2::read::GzDecoder::new(file)).lines();
    let path = dir.join(name);
    let mut out = std::fs::File::create(&path).expect("create slice");
    for line in lines.skip(skip).take(take) {
        writeln!(out, "{}", line.expect("read sample log")).expect("write slice");
    }
    path
}

/// Runs `tandem-model-node <args>`, asserting success; returns stdout.
fn run_bin(args: &[String]) -> String {
    let out = Command::new(bin_path(BIN)).args(args).output();
    let out = out.expect("run model-node");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?}: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Trains `tenant` from `events` into `model_dir`; returns the new version.
fn train(model_dir: &Path, tenant: &str, events: &Path) -> String {
    let (m, e) = (model_dir.display(), events.display());
    run_bin(&words(&format!(
        "train --tenant {tenant} --events {e} --model-dir {m}"
    )));
    newest_version(model_dir, tenant).expect("an artifact was written")
}

/// The newest `v<n>` under `<model_dir>/<tenant>/`.
fn newest_version(model_dir: &Path, tenant: &str) -> Option<String> {
    let number = |name: &str| -> Option<u64> {
        let stem = name.strip_suffix(".tmodel")?;
        stem.strip_prefix('v')?.parse().ok()
    };
    let files = std::fs::read_dir(model_dir.join(tenant)).ok()?;
    let names = files.filter_map(|e| e.ok()?.file_name().into_string().ok());
    names
        .filter_map(|n| number(&n))
        .max()
        .map(|n| format!("v{n}"))
}

/// A model dir with tenant `en` trained on the first 4,000 sample events.
fn trained_dir() -> (tempfile::TempDir, PathBuf, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let models = dir.path().join("models");
    let events = events_slice(dir.path(), "a.jsonl", 0, 4_000);
    let version = train(&models, "en", &events);
    (dir, models, version)
}

type Client = ModelNodeClient<InterceptedService<Channel, InternalToken>>;

/// A running model-node and a client to it (the client's calls through
/// `Deref`).
struct Node {
    proc: Proc,
    api: Api,
}

impl Node {
    /// Starts a model-node over `model_dir` (faults enabled when `faults`).
    async fn start(model_dir: &Path, faults: bool, extra: &[&str]) -> Node {
        let flags = "serve --node-id m1 --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0";
        let mut args = words(flags);
        args.extend(["--model-dir".into(), model_dir.display().to_string()]);
        if faults {
            args.push("--enable-faults".into());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let proc = Proc::spawn(BIN, &args).expect("model-node starts");
        let api = Api(ModelNodeClient::with_interceptor(
            proc.channel().await,
            tandem_e2e::internal(),
        ));
        Node { proc, api }
    }

    async fn health(&self, service: &str) -> Result<i32, Code> {
        let mut h = HealthClient::new(self.proc.channel().await);
        let req = HealthCheckRequest {
            service: service.into(),
        };
        let status = h.check(req).await.map_err(|s| s.code())?;
        Ok(status.into_inner().status)
    }
}

impl std::ops::Deref for Node {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl std::ops::DerefMut for Node {
    fn deref_mut(&mut self) -> &mut Api {
        &mut self.api
    }
}

/// `tandem.v1.ModelNode` calls, shortened.
#[derive(Clone)]
struct Api(Client);

type Answer<T> = Result<T, Status>;

impl Api {
    async fn suggest(
        &mut self,
        tenant: &str,
        prefix: &str,
        k: u32,
    ) -> Answer<ModelSuggestResponse> {
        let (tenant, prefix) = (tenant.into(), prefix.into());
        let req = ModelSuggestRequest { tenant, prefix, k };
        Ok(self.0.suggest(req).await?.into_inner())
    }

    async fn boosts(&mut self, tenant: &str, query: &str, max: u32) -> Answer<BoostsResponse> {
        let (tenant, query) = (tenant.into(), query.into());
        let req = BoostsRequest { tenant, query, max };
        Ok(self.0.boosts(req).await?.into_inner())
    }

    /// Completions for tenant `en`, which must succeed.
    async fn en(&mut self, prefix: &str, k: u32) -> Vec<Suggestion> {
        let answer = self.suggest("en", prefix, k).await;
        answer.expect("suggest").suggestions
    }

    async fn load(&mut self, tenant: &str) -> Answer<ModelInfo> {
        let req = LoadModelRequest {
            tenant: tenant.into(),
        };
        Ok(self.0.load_model(req).await?.into_inner())
    }

    async fn list(&mut self) -> Vec<ModelInfo> {
        let models = self.0.list_models(ListModelsRequest {}).await;
        models.expect("list models").into_inner().models
    }
}

/// Splits a command line on spaces (the paths in these tests have none).
fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

fn code<T>(r: Result<T, Status>) -> Option<Code> {
    r.err().map(|e| e.code())
}

const SERVING: Result<i32, Code> = Ok(ServingStatus::Serving as i32);
const NOT_SERVING: Result<i32, Code> = Ok(ServingStatus::NotServing as i32);

#[tokio::test]
async fn synth_train_serve_suggest_boosts_list_and_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, models) = (dir.path().join("en.jsonl"), dir.path().join("models"));
    let corpus = repo_root().join("data/tldr_pages/docs.jsonl.gz");
    let (corpus, out) = (corpus.display(), log.display());
    let synth = format!("synth --corpus {corpus} --lang en --sessions 1500 --seed 3 --out {out}");
    assert!(run_bin(&words(&synth)).contains("synthetic events"));
    let version = train(&models, "en", &log);
    let mut node = Node::start(&models, false, &[]).await;

    // The model API is internal: no token, no answer.
    let mut anonymous = ModelNodeClient::new(node.proc.channel().await);
    let refused = anonymous
        .boosts(BoostsRequest {
            tenant: "en".into(),
            query: "extract tar".into(),
            max: 10,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");

    let s = node.suggest("en", "Ext", 5).await.expect("suggest");
    let (v, n) = (s.model_version.as_str(), s.node.as_str());
    assert_eq!((v, n), (version.as_str(), "m1"));
    let texts: Vec<&str> = s.suggestions.iter().map(|x| x.text.as_str()).collect();
    assert!((1..=5).contains(&texts.len()), "{s:?}");
    assert!(texts.iter().all(|t| t.starts_with("ext")), "{s:?}");
    let best_first = s.suggestions.windows(2).all(|w| w[0].score >= w[1].score);
    assert!(best_first, "{s:?}");

    // Some of the most popular queries have learned boosts for pages.
    let mut boosted = 0;
    for prefix in ["a", "c", "d", "e", "f", "l", "r", "s"] {
        for q in node.en(prefix, 10).await {
            let b = node.boosts("en", &q.text, 5).await.expect("boosts");
            assert_eq!(b.model_version, version);
            let sane = |d: &DocBoost| d.doc_id.starts_with("en/") && d.weight > 0.0;
            assert!(b.boosts.len() <= 5 && b.boosts.iter().all(sane), "{b:?}");
            let strongest_first = b.boosts.windows(2).all(|w| w[0].weight >= w[1].weight);
            assert!(strongest_first, "{b:?}");
            boosted += usize::from(!b.boosts.is_empty());
        }
    }
    assert!(boosted >= 5, "only {boosted} queries had boosts");
    let none = node.boosts("en", "zzqx qqvv", 5).await.expect("boosts");
    assert!(none.boosts.is_empty(), "{none:?}");

    let listed = node.list().await;
    let artifact = models.join("en").join(format!("{version}.tmodel"));
    let size = std::fs::metadata(artifact).expect("artifact").len();
    assert_eq!(listed.len(), 1);
    let m = &listed[0];
    let (t, v) = (m.tenant.as_str(), m.version.as_str());
    assert_eq!((t, v, m.size_bytes), ("en", version.as_str(), size));
    assert!(m.suggestions > 100 && m.boosted_queries > 10, "{m:?}");
    assert_eq!(node.health("").await, SERVING);
    assert_eq!(node.health("tandem.model/en").await, SERVING);
    assert_eq!(node.health("tandem.model/es").await, Err(Code::NotFound));

    let _ = node.suggest("nobody", "ext", 5).await;
    let text = node.proc.scrape();
    let handled = "grpc_server_handled_total{grpc_service=\"tandem.v1.ModelNode\"";
    for needle in [
        format!("{handled},grpc_method=\"Suggest\",grpc_code=\"OK\"}} 9"),
        format!("{handled},grpc_method=\"Suggest\",grpc_code=\"NotFound\"}} 1"),
        format!("{handled},grpc_method=\"Boosts\",grpc_code=\"OK\"}}"),
        format!("{handled},grpc_method=\"ListModels\",grpc_code=\"OK\"}} 1"),
        "model_suggest_seconds_bucket".to_string(),
        "model_boosts_seconds_bucket".to_string(),
    ] {
        assert!(text.contains(&needle), "missing {needle} in\n{text}");
    }
    assert!(!text.contains("nobody"), "no tenant ids in metrics");
}

/// Calls Suggest and Boosts in turn until `stop`; returns the versions that
/// answered and the number of failed calls. Versions never go backwards.
async fn hammer(
    mut api: Api,
    stop: Arc<AtomicBool>,
    calls: Arc<AtomicU64>,
) -> (BTreeSet<String>, u64) {
    let prefixes = ["ex", "list", "show", "create", "del", "co", "s", "print"];
    let (mut seen, mut last, mut errors) = (BTreeSet::new(), 0u64, 0);
    for i in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let text = prefixes[i % prefixes.len()];
        let version = if i % 2 == 0 {
            api.suggest("en", text, 5).await.map(|r| r.model_version)
        } else {
            api.boosts("en", text, 5).await.map(|r| r.model_version)
        };
        calls.fetch_add(1, Ordering::Relaxed);
        match version {
            Ok(v) => {
                let n: u64 = v.trim_start_matches('v').parse().expect("numeric");
                assert!(n >= last, "version went back from {last} to {n}");
                last = n;
                seen.insert(v);
            }
            Err(e) => {
                errors += 1;
                eprintln!("call failed during reload: {e:?}");
            }
        }
    }
    (seen, errors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_under_load_fails_no_call() {
    let (dir, models, v1) = trained_dir();
    let mut node = Node::start(&models, false, &["--watch-ms", "100"]).await;
    let (stop, calls) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let workers: Vec<_> = (0..8)
        .map(|_| tokio::spawn(hammer(node.api.clone(), stop.clone(), calls.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // v2: trained while serving, swapped in by LoadModel.
    let (b, trainer) = (
        events_slice(dir.path(), "b.jsonl", 0, 8_000),
        models.clone(),
    );
    let v2 = tokio::task::spawn_blocking(move || train(&trainer, "en", &b));
    let v2 = v2.await.expect("train v2");
    assert_eq!(node.load("en").await.expect("load v2").version, v2);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // v3: trained and nothing else; the watcher swaps it in.
    let c = events_slice(dir.path(), "c.jsonl", 4_000, 6_000);
    let trainer = models.clone();
    let v3 = tokio::task::spawn_blocking(move || train(&trainer, "en", &c));
    let v3 = v3.await.expect("train v3");
    let deadline = Instant::now() + Duration::from_secs(15);
    while node.list().await[0].version != v3 {
        assert!(Instant::now() < deadline, "the watcher did not load {v3}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut seen, mut errors) = (BTreeSet::new(), 0);
    for w in workers {
        let (versions, failed) = w.await.expect("worker");
        seen.extend(versions);
        errors += failed;
    }
    let calls = calls.load(Ordering::Relaxed);
    eprintln!("hot reload: {calls} calls, {errors} failed, versions {seen:?}");
    assert_eq!(errors, 0, "{errors} of {calls} calls failed");
    assert!(calls > 100, "only {calls} calls");
    let all_seen = [&v1, &v2, &v3].iter().all(|v| seen.contains(*v));
    assert!(all_seen, "versions seen: {seen:?}");
    // v2 was swapped in by LoadModel or, had it got there first, the watcher.
    let text = node.proc.scrape();
    let needle = "model_reloads_total{result=\"ok\",trigger=\"watch\"}";
    assert!(text.contains(needle), "missing {needle} in\n{text}");
}

#[tokio::test]
async fn corrupt_artifacts_are_refused_and_the_previous_version_keeps_serving() {
    let (_dir, models, v1) = trained_dir();
    let mut node = Node::start(&models, false, &["--watch-ms", "100"]).await;
    let before = node.en("ext", 5).await;
    let good = std::fs::read(models.join("en").join(format!("{v1}.tmodel")));
    let good = good.expect("read v1");
    let next = v1.trim_start_matches('v').parse::<u64>().expect("number") + 1_000;
    let bad = models.join("en").join(format!("v{next}.tmodel"));

    std::fs::write(&bad, &good[..good.len() / 2]).expect("truncated copy");
    let err = node.load("en").await.expect_err("truncated: refused");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let names_file = err.message().contains(&format!("v{next}.tmodel"));
    assert!(names_file && err.message().contains("truncated"), "{err:?}");

    let mut garbled = good.clone();
    let mid = garbled.len() / 2;
    garbled[mid] ^= 0x5a;
    std::fs::write(&bad, &garbled).expect("garbled copy");
    let err = node.load("en").await.expect_err("garbled: refused");
    assert!(err.message().contains("checksum"), "{err:?}");

    // The watcher refuses it too; the previous version keeps serving.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(node.en("ext", 5).await, before);
    assert_eq!(node.list().await[0].version, v1);
    assert_eq!(node.health("tandem.model/en").await, SERVING);
    let text = node.proc.scrape();
    let needle = "model_reloads_total{result=\"refused\",trigger=\"api\"} 2";
    assert!(text.contains(needle), "missing {needle} in\n{text}");
}

#[tokio::test]
async fn a_tenant_with_only_a_corrupt_artifact_is_not_serving_until_retrained() {
    let (dir, models, v1) = trained_dir();
    let artifact = models.join("en").join(format!("{v1}.tmodel"));
    std::fs::write(artifact, b"TNDMMODL but cut short").expect("corrupt");
    let mut node = Node::start(&models, false, &["--watch-ms", "100"]).await;
    assert_eq!(node.health("tandem.model/en").await, NOT_SERVING);
    assert_eq!(node.health("").await, SERVING, "the node itself serves");
    let unknown = node.suggest("en", "ext", 5).await;
    assert_eq!(code(unknown), Some(Code::NotFound));
    let v2 = train(&models, "en", &dir.path().join("a.jsonl"));
    let deadline = Instant::now() + Duration::from_secs(15);
    while node.health("tandem.model/en").await != SERVING {
        assert!(Instant::now() < deadline, "retrained tenant never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let answer = node.suggest("en", "ext", 5).await.expect("serving");
    assert_eq!(answer.model_version, v2);
}

fn fault(tenant: &str, action: FaultAction, delay_ms: u32) -> tonic::Request<Fault> {
    let (tenant, action) = (tenant.into(), action as i32);
    let f = Fault {
        tenant,
        action,
        delay_ms,
        ..Default::default()
    };
    with_bearer(f, ADMIN_TOKEN)
}

#[tokio::test]
async fn fault_injection_fails_delays_hangs_and_clears() {
    let (dir, models, _) = trained_dir();
    train(&models, "es", &dir.path().join("a.jsonl"));
    let mut node = Node::start(&models, true, &[]).await;
    let mut admin =
        FaultInjectionClient::with_interceptor(node.proc.channel().await, tandem_e2e::internal());
    let no_token = fault("en", FaultAction::Unavailable, 0).into_inner();
    let refused = admin.set_fault(no_token).await;
    assert_eq!(code(refused), Some(Code::Unauthenticated));

    let unavailable = fault("en", FaultAction::Unavailable, 0);
    admin.set_fault(unavailable).await.expect("set");
    let failed = Some(Code::Unavailable);
    assert_eq!(code(node.suggest("en", "ext", 5).await), failed);
    assert_eq!(code(node.boosts("en", "ext", 5).await), failed);
    assert_eq!(code(node.load("en").await), failed);
    let other = node.suggest("es", "ext", 5).await;
    assert!(other.is_ok(), "other tenants unaffected");
    assert_eq!(node.list().await.len(), 2, "ListModels: node faults only");

    let delay = fault("en", FaultAction::Delay, 300);
    admin.set_fault(delay).await.expect("set");
    let t = Instant::now();
    node.en("ext", 5).await;
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );

    admin
        .set_fault(fault("", FaultAction::Hang, 0))
        .await
        .expect("set");
    let (tenant, prefix) = ("es".into(), "ext".into());
    let mut req = tonic::Request::new(ModelSuggestRequest {
        tenant,
        prefix,
        k: 5,
    });
    req.set_timeout(Duration::from_millis(300));
    let hung = node.api.0.suggest(req);
    let hung = tokio::time::timeout(Duration::from_secs(5), hung).await;
    let hung = code(hung.expect("the caller's deadline ends a hang"));
    let ended = matches!(hung, Some(Code::DeadlineExceeded | Code::Cancelled));
    assert!(ended, "{hung:?}");

    let all = ClearFaultRequest {
        all: true,
        ..Default::default()
    };
    let clear = with_bearer(all, ADMIN_TOKEN);
    admin.clear_fault(clear).await.expect("clear");
    assert!(node.suggest("en", "ext", 5).await.is_ok());
    assert!(node.suggest("es", "ext", 5).await.is_ok());
}

#[tokio::test]
async fn faults_are_off_unless_enabled_and_need_a_token() {
    let (_dir, models, _) = trained_dir();
    let node = Node::start(&models, false, &[]).await;
    let mut admin =
        FaultInjectionClient::with_interceptor(node.proc.channel().await, tandem_e2e::internal());
    let req = with_bearer(Default::default(), ADMIN_TOKEN);
    assert_eq!(
        code(admin.list_faults(req).await),
        Some(Code::Unimplemented)
    );

    let flags = "serve --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --enable-faults";
    let mut cmd = Command::new(bin_path(BIN));
    cmd.args(words(flags)).arg("--model-dir").arg(&models);
    cmd.env(
        tandem_common::internal::INTERNAL_TOKEN_ENV,
        tandem_e2e::INTERNAL_TOKEN,
    );
    let out = cmd.env_remove("TANDEM_ADMIN_TOKEN").output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("needs an admin token"));
}

#[tokio::test]
async fn bad_input_gets_clear_statuses_and_never_breaks_the_node() {
    let (_dir, models, _) = trained_dir();
    let mut node = Node::start(&models, false, &[]).await;
    let kb = "x".repeat(1024);
    let over_query = "x".repeat(tandem_common::limits::MAX_QUERY_BYTES + 1);
    let invalid = Some(Code::InvalidArgument);
    let cases = [
        ("nobody", "ext", Some(Code::NotFound)),
        ("../etc", "ext", invalid),
        ("", "ext", invalid),
        ("en", "", invalid),
        ("en", " \t ", invalid),
        ("en", &over_query, invalid),
    ];
    for (tenant, text, expected) in cases {
        let s = code(node.suggest(tenant, text, 5).await);
        let b = code(node.boosts(tenant, text, 5).await);
        assert_eq!((s, b), (expected, expected), "{tenant:?} {text:?}");
    }
    // A prefix is limited as the router limits it (256 bytes), a query as
    // the router limits it (4096): a 1 KB query is served.
    let long = node.suggest("en", &kb, 5).await.expect_err("1 KB");
    assert!(long.message().contains("1024 bytes"), "{long:?}");
    assert_eq!(code(node.boosts("en", &kb, 5).await), None);
    // k / max: 0 means the default (10 / 20), huge values are clamped (50 / 100).
    assert_eq!(node.en("s", 0).await.len(), 10);
    assert_eq!(node.en("s", u32::MAX).await.len(), 50);
    let many = node.boosts("en", "list files", u32::MAX).await;
    assert!(many.expect("huge max").boosts.len() <= 100);
    // Odd but valid text: punctuation only, non-Latin, accents.
    assert!(node.en("?!", 5).await.is_empty());
    node.en("日本語", 5).await;
    let folded = node.en("ÉXT", 5).await;
    let all_ext = folded.iter().all(|s| s.text.starts_with("ext"));
    assert!(!folded.is_empty() && all_ext, "{folded:?}");
    assert_eq!(code(node.load("nobody").await), Some(Code::NotFound));
    assert_eq!(code(node.load("../etc").await), invalid);
    let junk = node.health("tandem.model/nobody").await;
    assert_eq!(junk, Err(Code::NotFound), "no health entry for junk");
    assert!(!node.en("ext", 5).await.is_empty(), "still serving");
}

#[tokio::test]
async fn sigterm_reports_not_serving_then_exits_cleanly() {
    let (_dir, models, _) = trained_dir();
    let mut node = Node::start(&models, false, &["--drain-grace-ms", "2000"]).await;
    // A served call first: `serve` installs its SIGTERM handler only once
    // it runs, a moment after the readiness line.
    assert!(!node.en("ext", 5).await.is_empty());
    node.proc.signal("TERM");
    let mut saw = (false, false);
    for _ in 0..100 {
        saw.0 |= node.health("tandem.model/en").await == NOT_SERVING;
        saw.1 |= node.health("").await == NOT_SERVING;
        if saw == (true, true) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(saw, (true, true), "tenant and node say NOT_SERVING");
    let during_grace = node.suggest("en", "ext", 5).await;
    assert!(during_grace.is_ok(), "still served during the grace period");
    let mut proc = node.proc;
    let exit = tokio::task::spawn_blocking(move || proc.wait()).await;
    assert!(exit.expect("wait"), "clean exit");
}
