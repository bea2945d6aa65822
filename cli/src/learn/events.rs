//! A tenant's usage events in the object store: read for training (from
//! every region, and the seed), exported and deleted for privacy requests,
//! and aged out after the retention.
//!
//! Objects are `<store>/<tenant>/events/<region>/<name>.jsonl.gz`
//! (`tandem_common::store`), each in the model-node's event log format;
//! routers add fields (tenant, region, offset) that training ignores. A
//! click as a router records it names its search by the session (the
//! search id) and leaves the query empty: [`fill_click_queries`] takes it
//! from the search.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use tandem_common::store::Store;
use tandem_model_node::events::{read_events_skipping, Event};

/// What reading found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EventsRead {
    /// Objects read.
    pub objects: usize,
    /// Objects older than the retention, deleted instead of read.
    pub expired: usize,
    /// Objects that could not be read (named in a warning).
    pub unreadable: Vec<String>,
    /// Lines skipped because they are not events (a line a crash tore).
    pub bad_lines: usize,
    /// Events per region (`seed` for a seed log).
    pub per_region: std::collections::BTreeMap<String, usize>,
}

/// Reads every event of `tenant`; objects older than `retention` are
/// deleted instead (`None`: kept forever).
pub async fn read_all(
    store: &Store,
    tenant: &str,
    retention: Option<Duration>,
) -> anyhow::Result<(Vec<Event>, EventsRead)> {
    let mut events = Vec::new();
    let mut read = EventsRead::default();
    let oldest = retention.and_then(|r| SystemTime::now().checked_sub(r));
    let prefix = store.events(tenant);
    for meta in store.list_meta(&prefix).await? {
        let region = meta
            .location
            .prefix_match(&prefix)
            .and_then(|mut parts| parts.next())
            .map(|p| p.as_ref().to_string())
            .unwrap_or_default();
        if region != tandem_common::store::SEED_REGION
            && oldest.is_some_and(|o| SystemTime::from(meta.last_modified) < o)
        {
            store.client.delete(&meta.location).await?;
            read.expired += 1;
            continue;
        }
        let bytes = store.client.get(&meta.location).await?.bytes().await?;
        match read_events_skipping(&bytes[..]) {
            Ok((mut got, bad)) => {
                *read.per_region.entry(region).or_default() += got.len();
                events.append(&mut got);
                read.objects += 1;
                read.bad_lines += bad;
            }
            Err(e) => read.unreadable.push(format!("{}: {e}", meta.location)),
        }
    }
    fill_click_queries(&mut events);
    Ok((events, read))
}

/// Gives every click with an empty query the query of its session's
/// search (a router's click event refers to its search by search id).
pub fn fill_click_queries(events: &mut [Event]) {
    let queries: HashMap<String, String> = events
        .iter()
        .filter_map(|e| match e {
            Event::Search(s) => Some((s.session.clone(), s.query.clone())),
            Event::Click(_) => None,
        })
        .collect();
    for e in events.iter_mut() {
        if let Event::Click(c) = e {
            if c.query.is_empty() {
                if let Some(q) = queries.get(&c.session) {
                    c.query = q.clone();
                }
            }
        }
    }
}

/// Deletes every event object of `tenant`; returns how many.
pub async fn delete_all(store: &Store, tenant: &str) -> anyhow::Result<usize> {
    let objects = store.list_meta(&store.events(tenant)).await?;
    for meta in &objects {
        store.client.delete(&meta.location).await?;
    }
    Ok(objects.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_model_node::events::{ClickEvent, SearchEvent};

    #[test]
    fn a_routers_click_takes_its_searchs_query() {
        let mut events = vec![
            Event::Search(SearchEvent {
                ts: 1,
                session: "sid".into(),
                query: "tar".into(),
                shown: vec!["a".into()],
            }),
            Event::Click(ClickEvent {
                ts: 2,
                session: "sid".into(),
                query: String::new(),
                doc: "a".into(),
                rank: 1,
            }),
            Event::Click(ClickEvent {
                ts: 2,
                session: "other".into(),
                query: String::new(),
                doc: "a".into(),
                rank: 1,
            }),
        ];
        fill_click_queries(&mut events);
        assert_eq!(events[1].query(), "tar");
        assert_eq!(events[2].query(), "", "an orphan stays an orphan");
    }

    #[tokio::test]
    async fn expired_objects_are_deleted_and_the_seed_is_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(
            &format!("file://{}", dir.path().display()),
            &Default::default(),
        )
        .expect("store");
        let line =
            b"{\"type\":\"search\",\"ts\":1,\"session\":\"s\",\"query\":\"q\",\"shown\":[]}\n{\"type\":\"sea";
        for region in ["us-east-1", "seed"] {
            let at = store.event_object("t1", region, "x.jsonl");
            store
                .client
                .put(&at, line.to_vec().into())
                .await
                .expect("put");
        }
        let (events, read) = read_all(&store, "t1", None).await.expect("read");
        assert_eq!((events.len(), read.objects), (2, 2));
        assert_eq!(read.bad_lines, 2, "a torn line costs itself only");
        let (events, read) = read_all(&store, "t1", Some(Duration::ZERO))
            .await
            .expect("read");
        assert_eq!(
            (events.len(), read.expired),
            (1, 1),
            "only the seed is left"
        );
        assert_eq!(delete_all(&store, "t1").await.expect("delete"), 1);
    }
}
