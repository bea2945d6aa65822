//! End-to-end tests of the router with real model-nodes: boosts and
//! suggestions from the tenant's model, fallback to the paired region's
//! model replica, and degrading (not failing) when no model answers.

use tandem_e2e::cluster::{Cluster, TenantSpec};
use tandem_e2e::with_bearer;
use tandem_proto::v1::SuggestRequest;

async fn cluster() -> Cluster {
    let tenants = vec![TenantSpec {
        id: "aa",
        home: "r1",
        active_active: true,
        shards: vec![vec!["r1-a", "r2-a"]],
        models: vec!["r1-m", "r2-m"],
    }];
    Cluster::start_with_models(
        &[("r1-a", "r1"), ("r2-a", "r2")],
        &[("r1-m", "r1"), ("r2-m", "r2")],
        tenants,
        1500,
    )
    .await
}

async fn suggest(c: &Cluster, prefix: &str) -> tandem_proto::v1::SuggestResponse {
    let mut request = with_bearer(
        SuggestRequest {
            tenant: "aa".into(),
            prefix: prefix.into(),
            k: 5,
        },
        &c.tenant("aa").key(),
    );
    request.set_timeout(std::time::Duration::from_secs(2));
    c.search_client(0)
        .await
        .suggest(request)
        .await
        .expect("suggest")
        .into_inner()
}

#[tokio::test]
async fn boosts_and_suggestions_come_from_the_local_model() {
    let c = cluster().await;
    let resp = c.search(0, "aa", "extract archive").await.unwrap();
    assert!(resp.degraded.is_empty(), "{:?}", resp.degraded);
    assert_eq!(resp.route.as_ref().unwrap().model_node, "r1-m");
    let s = suggest(&c, "ext").await;
    assert!(!s.suggestions.is_empty());
    assert!(
        s.suggestions.iter().all(|x| x.text.starts_with("ext")),
        "{:?}",
        s.suggestions
    );
    assert_eq!(s.route.as_ref().unwrap().model_node, "r1-m");
    // An empty prefix is the caller's mistake.
    let mut bad = with_bearer(
        SuggestRequest {
            tenant: "aa".into(),
            prefix: " ".into(),
            k: 5,
        },
        &c.tenant("aa").key(),
    );
    bad.set_timeout(std::time::Duration::from_secs(2));
    let err = c.search_client(0).await.suggest(bad).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn the_model_changes_the_order_of_results() {
    let c = cluster().await;
    // Without boosts (model down everywhere) vs with: the learned boosts
    // move at least one query's ranking. Compare over the sample queries.
    let queries = [
        "extract a tar archive",
        "list files",
        "show disk usage",
        "create a directory",
        "copy a file",
    ];
    let mut with_model = Vec::new();
    for q in queries {
        let r = c.search(0, "aa", q).await.unwrap();
        assert!(r.degraded.is_empty());
        with_model.push(r.hits.iter().map(|h| h.id.clone()).collect::<Vec<_>>());
    }
    for id in ["r1-m", "r2-m"] {
        c.node(id).proc.signal("KILL");
    }
    let mut changed = 0;
    for (q, boosted) in queries.iter().zip(&with_model) {
        let r = c.search(0, "aa", q).await.unwrap();
        assert_eq!(
            r.degraded,
            vec!["model".to_string()],
            "no model left: degraded, not failed"
        );
        let plain: Vec<String> = r.hits.iter().map(|h| h.id.clone()).collect();
        if &plain != boosted {
            changed += 1;
        }
    }
    assert!(changed > 0, "boosts never changed a ranking");
}

#[tokio::test]
async fn a_dead_local_model_falls_back_to_the_paired_region() {
    let c = cluster().await;
    c.node("r1-m").proc.signal("KILL");
    for _ in 0..10 {
        let r = c.search(0, "aa", "extract archive").await.unwrap();
        assert!(
            r.degraded.is_empty(),
            "the paired model answers: {:?}",
            r.degraded
        );
        assert_eq!(r.route.as_ref().unwrap().model_node, "r2-m");
        assert_eq!(
            r.route.as_ref().unwrap().served_region,
            "r1",
            "the index stays local"
        );
    }
    let s = suggest(&c, "list").await;
    assert!(s.degraded.is_empty());
    assert_eq!(s.route.as_ref().unwrap().model_node, "r2-m");
    // Both gone: suggestions degrade to an empty answer, not an error.
    c.node("r2-m").proc.signal("KILL");
    let s = suggest(&c, "list").await;
    assert_eq!(s.degraded, vec!["model".to_string()]);
    assert!(s.suggestions.is_empty());
}
