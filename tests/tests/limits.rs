//! End-to-end: no stored document makes a tenant's searches fail for
//! their size. Documents with the longest titles the write path takes,
//! asked for a page of 300: the answer keeps the best hits that fit and
//! says `degraded: ["truncated"]`, from one shard (the node trims) and
//! from two (the router trims the merged page).

use std::time::Duration;

use prost::Message;
use tandem_common::documents::MAX_TITLE_BYTES;
use tandem_common::limits::MAX_ANSWER_BYTES;
use tandem_e2e::cluster::{Cluster, TenantSpec};
use tandem_e2e::with_bearer;
use tandem_proto::v1::documents_client::DocumentsClient;
use tandem_proto::v1::{Document, SearchRequest, WriteRequest};

const PAGE: u32 = 300;

fn tenants() -> Vec<TenantSpec> {
    vec![
        TenantSpec {
            id: "one",
            home: "r1",
            active_active: true,
            shards: vec![vec!["r1-a", "r2-a"]],
            models: vec![],
        },
        TenantSpec {
            id: "two",
            home: "r1",
            active_active: true,
            shards: vec![vec!["r1-a", "r2-a"], vec!["r1-b", "r2-b"]],
            models: vec![],
        },
    ]
}

/// Writes `n` documents whose titles are as long as allowed, through the
/// public write API, in batches under the message limit.
async fn write_long_titles(c: &Cluster, tenant: &str, n: usize) {
    let mut writer = DocumentsClient::new(c.routers[0].channel().await);
    let docs: Vec<Document> = (0..n)
        .map(|i| Document {
            id: format!("long/{i}"),
            title: format!("{i} {}", "w".repeat(MAX_TITLE_BYTES - 8)),
            body: "a page with a very long title".into(),
            ..Default::default()
        })
        .collect();
    for batch in docs.chunks(100) {
        let request = WriteRequest {
            tenant: tenant.into(),
            upserts: batch.to_vec(),
            ..Default::default()
        };
        writer
            .write(with_bearer(request, &c.tenant(tenant).write_key()))
            .await
            .expect("write");
    }
}

#[tokio::test]
async fn a_page_of_huge_hits_is_trimmed_not_failed() {
    let c = Cluster::start(
        &[
            ("r1-a", "r1"),
            ("r1-b", "r1"),
            ("r2-a", "r2"),
            ("r2-b", "r2"),
        ],
        tenants(),
        5,
    )
    .await;
    for tenant in ["one", "two"] {
        write_long_titles(&c, tenant, 400).await;
        let request = SearchRequest {
            tenant: tenant.into(),
            query: "page very long title".into(),
            top_k: PAGE,
            ..Default::default()
        };
        // Writes become searchable within the commit interval.
        let mut answer = None;
        for _ in 0..100 {
            let page = c
                .search_with(0, request.clone(), &c.tenant(tenant).key())
                .await
                .expect("a deep page of huge hits is served");
            if page.total_hits >= 400 {
                answer = Some(page);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let page = answer.expect("the writes became searchable");
        assert!(
            page.degraded.contains(&"truncated".to_string()),
            "{tenant}: {:?}",
            page.degraded
        );
        let bytes: usize = page.hits.iter().map(Message::encoded_len).sum();
        assert!(bytes <= MAX_ANSWER_BYTES, "{tenant}: {bytes} bytes");
        assert!(
            page.hits.len() > 100 && page.hits.len() < PAGE as usize,
            "{tenant}: {} hits",
            page.hits.len()
        );
    }
}
