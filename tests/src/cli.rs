//! Running the `tandem` command as a process, as its users do, and checks
//! of its behaviour shared by the tests of plaintext and TLS clusters.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `tandem` binary.
pub fn tandem() -> PathBuf {
    crate::bin_path("tandem")
}

/// Runs `tandem args...` in `cwd` and returns what it did.
pub fn run(cwd: &Path, args: &[&str]) -> Output {
    Command::new(tandem())
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run tandem")
}

/// What it printed on stdout.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// What it printed on stderr.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `tandem args...` succeeded; its stdout.
pub fn ok(cwd: &Path, args: &[&str]) -> String {
    let o = run(cwd, args);
    assert!(
        o.status.success(),
        "tandem {args:?} failed: {}\n{}",
        stderr(&o),
        stdout(&o)
    );
    stdout(&o)
}

/// `tandem args...` failed with an error message; its stderr.
pub fn fails(cwd: &Path, args: &[&str]) -> String {
    let o = run(cwd, args);
    assert!(!o.status.success(), "tandem {args:?} should fail");
    stderr(&o)
}

/// `tandem key`: a new search key works through both regions' routers at
/// once; rotated, the new one works and the old one does not, in both;
/// revoked, it stops working in both; a write key does not search.
pub fn assert_key_lifecycle(cwd: &Path, t: &str) {
    let scope = ["--tenant", "tldr-en", "--scope", "search", "--topology", t];
    let key = new_key(
        &ok(cwd, &[&["key", "create"][..], &scope].concat()),
        "Search",
    );
    let listed = ok(
        cwd,
        &["key", "list", "--tenant", "tldr-en", "--topology", t],
    );
    let hash = tandem_catalog::hash_key(&key);
    assert!(listed.contains(&hash) && !listed.contains(&key), "{listed}");
    fn search<'a>(t: &'a str, region: &'a str, key: &'a str) -> Vec<&'a str> {
        let args = ["search", "--topology", t, "--region", region];
        [
            &args[..],
            &["--tenant", "tldr-en", "--key", key, "list files"],
        ]
        .concat()
    }
    for region in ["us-east-1", "us-east-2"] {
        ok(cwd, &search(t, region, &key));
    }
    // Rotated: the new key works in both regions, the old one in neither.
    let rotate = ["key", "rotate", "--key-sha256", hash.as_str()];
    let out = ok(cwd, &[&rotate[..], &scope].concat());
    let rotated = new_key(&out, "Search");
    for region in ["us-east-1", "us-east-2"] {
        ok(cwd, &search(t, region, &rotated));
        refused(&fails(cwd, &search(t, region, &key)));
    }
    let hash = tandem_catalog::hash_key(&rotated);
    ok(
        cwd,
        &[
            &["key", "revoke", "--key-sha256", hash.as_str()][..],
            &scope,
        ]
        .concat(),
    );
    for region in ["us-east-1", "us-east-2"] {
        refused(&fails(cwd, &search(t, region, &rotated)));
    }
    // A write key is no search key.
    let write = ["--tenant", "tldr-en", "--scope", "write", "--topology", t];
    let writer = new_key(
        &ok(cwd, &[&["key", "create"][..], &write].concat()),
        "Write",
    );
    let err = fails(cwd, &search(t, "us-east-1", &writer));
    assert!(err.to_lowercase().contains("permission"), "{err}");
    let hash = tandem_catalog::hash_key(&writer);
    ok(
        cwd,
        &[
            &["key", "revoke", "--key-sha256", hash.as_str()][..],
            &write,
        ]
        .concat(),
    );
}

/// The key `tandem key create|rotate` printed for `scope`.
fn new_key(out: &str, scope: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("new {scope} key of tldr-en: ")))
        .unwrap_or_else(|| panic!("no key in {out}"))
        .trim()
        .to_string()
}

/// A search refused for its key.
fn refused(err: &str) {
    assert!(
        err.to_lowercase().contains("unauthenticated") || err.contains("key"),
        "{err}"
    );
}

/// `tandem usage --json`: known traffic through one router shows up in its
/// region's counters (searches, suggests, cross-region calls for a tenant
/// whose replicas live in the other region), and the tenant's index bytes.
pub async fn assert_usage(cwd: &Path, t: &str, topology: &tandem_client::Topology) {
    use tandem_proto::v1::search_client::SearchClient;
    use tandem_proto::v1::{SearchRequest, SuggestRequest};
    let usage = |region: &str| -> serde_json::Value {
        let out = ok(
            cwd,
            &["usage", "--json", "--tenant", "tldr-es", "--topology", t],
        );
        let all: serde_json::Value = serde_json::from_str(out.trim()).expect("usage --json");
        all.as_array()
            .and_then(|a| a.iter().find(|u| u["region"] == region).cloned())
            .unwrap_or_default()
    };
    let n = |v: &serde_json::Value, f: &str| v[f].as_u64().unwrap_or(0);
    let before = usage("us-east-2");
    let info = topology.tenant("tldr-es").expect("tenant");
    let router = &topology.region("us-east-2").expect("region").router;
    let mut client = SearchClient::connect(format!("http://{router}"))
        .await
        .expect("router");
    for _ in 0..3 {
        let request = SearchRequest {
            tenant: "tldr-es".into(),
            query: info.sample_queries[0].clone(),
            ..Default::default()
        };
        client
            .search(crate::with_bearer(request, &info.api_key))
            .await
            .expect("search");
    }
    for _ in 0..2 {
        let request = SuggestRequest {
            tenant: "tldr-es".into(),
            prefix: "ex".into(),
            k: 3,
        };
        client
            .suggest(crate::with_bearer(request, &info.api_key))
            .await
            .expect("suggest");
    }
    let after = usage("us-east-2");
    assert_eq!(n(&after, "searches") - n(&before, "searches"), 3, "{after}");
    assert_eq!(n(&after, "suggests") - n(&before, "suggests"), 2, "{after}");
    // tldr-es lives in us-east-1: every shard call went there.
    assert!(
        n(&after, "cross_region_calls") - n(&before, "cross_region_calls") >= 3,
        "{after}"
    );
    assert!(n(&after, "cross_region_bytes") > n(&before, "cross_region_bytes"));
    assert!(n(&usage("us-east-1"), "index_bytes") > 0);
    let table = ok(cwd, &["usage", "--topology", t]);
    assert!(
        table.contains("tldr-es") && table.contains("searches"),
        "{table}"
    );
}
