//! The learning loop against a running `tandem dev` cluster, as its users
//! drive it: searches through both regions' routers, each followed by a
//! click on the result at position 6; forged, replayed and misplaced
//! clicks refused; `tandem train` refusing a model trained on shuffled
//! clicks and publishing the real one, which both regions' model-nodes
//! pull and serve, lifting the clicked document into the top 5 in both
//! regions; `tandem train --rollback` restoring the old ranking.

use std::path::Path;
use std::time::{Duration, Instant};

use tandem_client::{ClientConfig, TandemClient, Topology};
use tandem_proto::v1::{ClickRequest, SearchRequest};
use tonic::Code;

use crate::cli::{ok, run, stderr, stdout};

const TENANT: &str = "tldr-en";
const QUERY: &str = "list files";
const SEARCHES: usize = 40;
const POSITION: u32 = 6;

async fn client(topology: &Topology, region: &str) -> TandemClient {
    let mut config: ClientConfig = topology.client_config(Some(region), None).expect("config");
    config.api_key = topology.tenant(TENANT).map(|t| t.api_key.clone());
    TandemClient::connect(config).await.expect("client")
}

/// The ids a search of [`QUERY`] shows in `region`, and its search id.
async fn search(client: &TandemClient) -> (Vec<String>, String) {
    let (resp, _) = client
        .search(SearchRequest {
            tenant: TENANT.into(),
            query: QUERY.into(),
            ..Default::default()
        })
        .await
        .expect("search");
    let ids = resp.hits.into_iter().map(|h| h.id).collect();
    (ids, resp.search_id)
}

fn click(doc: &str, search_id: &str, position: u32) -> ClickRequest {
    ClickRequest {
        tenant: TENANT.into(),
        search_id: search_id.into(),
        doc_id: doc.into(),
        position,
    }
}

/// Runs the whole loop on the cluster of `topology` (its file `t`).
pub async fn assert_learning_loop(cwd: &Path, t: &str, topology: &Topology) {
    let regions = ["us-east-1", "us-east-2"];
    let clients = [
        client(topology, regions[0]).await,
        client(topology, regions[1]).await,
    ];
    let (first, _) = search(&clients[0]).await;
    assert!(first.len() >= POSITION as usize, "{first:?}");
    let target = first[POSITION as usize - 1].clone();

    let mut search_ids = Vec::new();
    for i in 0..SEARCHES {
        let c = &clients[i % 2];
        let (ids, search_id) = search(c).await;
        assert_eq!(ids[POSITION as usize - 1], target, "a stable ranking");
        assert!(!search_id.is_empty(), "every search carries a search id");
        // The click goes to the other region's router half the time: any
        // router verifies any region's search ids.
        let other = &clients[(i + i / 2) % 2];
        other
            .click(click(&target, &search_id, POSITION))
            .await
            .unwrap_or_else(|s| panic!("click {i}: {s:?}"));
        search_ids.push(search_id);
    }
    // The last click went to us-east-1's router: a replay there is refused.
    assert_refusals(&clients[0], &target, &search_ids[SEARCHES - 1]).await;
    wait_for_clicks(cwd, t, &target, &search_ids).await;

    // The negative control: a model trained on shuffled clicks is judged
    // worse and not published.
    let o = run(
        cwd,
        &[
            "train",
            "--tenant",
            TENANT,
            "--shuffle-clicks",
            "--topology",
            t,
        ],
    );
    assert!(!o.status.success(), "{}", stdout(&o));
    assert!(stdout(&o).contains("not published"), "{}", stdout(&o));

    let out = ok(cwd, &["train", "--tenant", TENANT, "--topology", t]);
    assert!(out.contains("published v"), "{out}");
    assert!(
        out.contains("use1-model-1 (us-east-1) serves tldr-en"),
        "{out}"
    );
    assert!(
        out.contains("use2-model-1 (us-east-2) serves tldr-en"),
        "{out}"
    );
    for c in &clients {
        let (ids, _) = search(c).await;
        let rank = ids.iter().position(|d| *d == target);
        assert!(
            rank.is_some_and(|r| r < 5),
            "{target} in the top 5: {ids:?}"
        );
    }
    let status = ok(cwd, &["status", "--topology", t]);
    let version = out
        .split("published ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .expect("version");
    assert_eq!(
        status.matches(&format!("tldr-en {version}")).count(),
        2,
        "{status}"
    );

    let out = ok(
        cwd,
        &[
            "train",
            "--rollback",
            "--tenant",
            TENANT,
            "--topology",
            t,
            "--json",
        ],
    );
    let rolled: serde_json::Value = serde_json::from_str(out.trim()).expect("train --json");
    assert_eq!(rolled["retired"], version, "{rolled}");
    assert_eq!(rolled["everywhere"], true, "{rolled}");
    for c in &clients {
        let (ids, _) = search(c).await;
        assert_eq!(
            ids[POSITION as usize - 1],
            target,
            "rollback restores the ranking: {ids:?}"
        );
    }
}

/// Forged, replayed and misplaced clicks: refused, with their codes.
async fn assert_refusals(c: &TandemClient, target: &str, search_id: &str) {
    let code = |r: Result<_, tonic::Status>| r.map(|_| ()).map_err(|s| s.code());
    let replay = c.click(click(target, search_id, POSITION)).await;
    assert_eq!(code(replay), Err(Code::AlreadyExists), "a replay");
    let mut forged: Vec<u8> = search_id.bytes().collect();
    let at = forged.len() / 2;
    forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).expect("ascii");
    let r = c.click(click(target, &forged, POSITION)).await;
    assert_eq!(code(r), Err(Code::InvalidArgument), "a forged id");
    let r = c.click(click(target, search_id, POSITION + 1)).await;
    assert_eq!(code(r), Err(Code::InvalidArgument), "another position");
    let r = c.click(click("en/common/not-shown", search_id, 1)).await;
    assert_eq!(code(r), Err(Code::InvalidArgument), "a document not shown");
}

/// The session a search id's events carry: its nonce, as 16 hex digits
/// (`router/src/events/search_id.rs`).
fn session(search_id: &str) -> String {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(search_id)
        .expect("a search id is base64");
    let nonce = u64::from_be_bytes(bytes[10..18].try_into().expect("8 bytes"));
    format!("\"session\":\"{nonce:016x}\"")
}

/// Waits until `tandem events export` shows every click, each with its
/// search's query (routers ship every second in `tandem dev`).
async fn wait_for_clicks(cwd: &Path, t: &str, target: &str, search_ids: &[String]) {
    let sessions: Vec<String> = search_ids.iter().map(|id| session(id)).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let needle = format!("\"query\":\"{QUERY}\",\"doc\":\"{target}\",\"rank\":{POSITION}");
    loop {
        let o = run(
            cwd,
            &["events", "export", "--tenant", TENANT, "--topology", t],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let clicks = stdout(&o)
            .lines()
            .filter(|l| l.contains("\"type\":\"click\"") && l.contains(&needle))
            .filter(|l| sessions.iter().any(|s| l.contains(s.as_str())))
            .count();
        if clicks >= SEARCHES {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{clicks} of {SEARCHES} clicks shipped"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
