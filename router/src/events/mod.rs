//! Usage events: what the models learn from.
//!
//! - [`search_id`]: the signed `SearchResponse.search_id` a click refers
//!   to, which any router of either region verifies;
//! - [`recorder`]: search and click events buffered off the hot path into
//!   `--events-dir` files (dropped and counted when the buffer is full);
//! - [`ship`]: those files shipped to the object store, per tenant;
//! - [`limit`]: the per-tenant click rate;
//! - [`service`]: the public `tandem.v1.Events` API (`Click`).
//!
//! [`Events`] ties them together for the router: the search path calls
//! [`Events::searched`], the `Click` handler [`Events::click`].

pub mod limit;
pub mod recorder;
pub mod search_id;
pub mod service;
pub mod ship;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tandem_proto::v1::{ClickRequest, SearchRequest, SearchResponse};
use tonic::Status;

use crate::config::{ms, RouterConfig};
use limit::ClickLimiter;
use recorder::{Record, Recorder};
use search_id::{SearchIdKeys, MAX_SIGNED_HITS};

/// Longest document id a click may name.
const MAX_DOC_ID_BYTES: usize = 512;

/// See the module documentation.
pub struct Events {
    keys: Option<SearchIdKeys>,
    recorder: Option<Recorder>,
    limiter: ClickLimiter,
    /// Hashes of (search nonce, document) clicked, for the click window.
    counted: moka::sync::Cache<u64, ()>,
    window_secs: u64,
    region: Arc<str>,
    /// Where ready events files go: the events directory and the store,
    /// opened once at start (none: events are not recorded or not shipped).
    shipping: Option<(std::path::PathBuf, tandem_common::store::Store)>,
}

impl Events {
    /// Reads the search-id keys and starts the recorder and shipper that
    /// `config` asks for (call inside the runtime).
    pub fn start(config: &RouterConfig) -> anyhow::Result<Events> {
        let keys = match &config.search_id_key_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                Some(SearchIdKeys::parse(&text).map_err(|e| anyhow::anyhow!("{e}"))?)
            }
            None => None,
        };
        let (recorder, shipping) = match &config.events_dir {
            Some(dir) => {
                anyhow::ensure!(
                    keys.is_some(),
                    "--events-dir needs --search-id-key-file (events are keyed by search id)"
                );
                let rotate = ms(config.events_rotate_ms.max(10));
                let rec = Recorder::start(dir, &config.router_id, config.events_buffer, rotate)
                    .with_context(|| format!("cannot record events in {}", dir.display()))?;
                // Opened now, so that a bad URL stops the start.
                let store = match &config.events_store {
                    Some(url) => Some(tandem_common::store::Store::open(
                        url,
                        &config.events_store_options,
                    )?),
                    None => {
                        tracing::warn!(
                            "no --events-store: event files stay in the events directory"
                        );
                        None
                    }
                };
                (Some(rec), store.map(|s| (dir.clone(), s)))
            }
            None => (None, None),
        };
        Ok(Events {
            keys,
            recorder,
            limiter: ClickLimiter::new(config.click_rate_per_sec),
            counted: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(Duration::from_secs(config.click_window_secs.max(1)))
                .build(),
            window_secs: config.click_window_secs,
            region: Arc::from(config.region.as_str()),
            shipping,
        })
    }

    /// Gives a search answered by this router its search id and records
    /// it. Cheap: a MAC over the hits' hashes and a clone of their ids into
    /// the recorder's channel.
    pub fn searched(
        &self,
        tenant: &Arc<str>,
        request: &SearchRequest,
        answer: &mut SearchResponse,
    ) {
        let Some(keys) = &self.keys else {
            return;
        };
        let (now, nonce) = (unix_secs(), rand::random::<u64>());
        let ids = answer.hits.iter().map(|h| h.id.as_str());
        answer.search_id = keys.sign(tenant, (now, nonce), request.offset, ids);
        if let Some(recorder) = &self.recorder {
            recorder.record(Record::Search {
                tenant: tenant.clone(),
                ts: now,
                session: search_id::session_of(nonce),
                query: request.query.clone(),
                shown: answer
                    .hits
                    .iter()
                    .take(MAX_SIGNED_HITS)
                    .map(|h| h.id.clone())
                    .collect(),
                offset: request.offset,
                region: self.region.clone(),
            });
        }
    }

    /// Checks and counts a click of an authorized `tenant` (see
    /// `tandem.v1.Events.Click` for the answers).
    pub fn click(&self, tenant: &Arc<str>, req: &ClickRequest) -> Result<(), Status> {
        let keys = self.keys.as_ref().ok_or_else(|| {
            Status::failed_precondition("this router takes no clicks (no search-id key is set)")
        })?;
        if req.doc_id.is_empty() || req.doc_id.len() > MAX_DOC_ID_BYTES {
            return Err(Status::invalid_argument(format!(
                "doc_id must be 1-{MAX_DOC_ID_BYTES} bytes"
            )));
        }
        if req.position == 0 {
            return Err(Status::invalid_argument(
                "position is the 1-based rank in the whole result list",
            ));
        }
        let claims = keys
            .verify(&req.search_id, tenant, unix_secs(), self.window_secs)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if !claims.showed(&req.doc_id, req.position) {
            return Err(Status::invalid_argument(
                "that search did not show doc_id at that position",
            ));
        }
        // A replay is refused before it can use the tenant's click rate.
        let key = xxhash_rust::xxh3::xxh3_64_with_seed(req.doc_id.as_bytes(), claims.nonce);
        let replay =
            || Status::already_exists("this search's click on that document was counted already");
        if self.counted.contains_key(&key) {
            return Err(replay());
        }
        if !self.limiter.allow(tenant) {
            return Err(Status::resource_exhausted(
                "too many clicks for this tenant; retry later",
            ));
        }
        if !self.counted.entry(key).or_insert(()).is_fresh() {
            return Err(replay());
        }
        if let Some(recorder) = &self.recorder {
            recorder.record(Record::Click {
                tenant: tenant.clone(),
                ts: unix_secs(),
                session: claims.session(),
                query: String::new(),
                doc: req.doc_id.clone(),
                rank: claims.rank_in_list(req.position),
                region: self.region.clone(),
            });
        }
        Ok(())
    }

    /// Ships what is ready once. Events of a tenant the catalog no longer
    /// lists are dropped: a deleted tenant's last events do not come back
    /// to the store after its deletion.
    async fn ship_once(state: &crate::state::RouterState) -> anyhow::Result<()> {
        let Some((dir, store)) = &state.events.shipping else {
            return Ok(());
        };
        let known = |tenant: &str| state.catalog.current().tenant(tenant).is_some();
        ship::ship_ready(dir, store, &state.config.region, &known).await?;
        Ok(())
    }

    /// Ships ready events files every `events_ship_ms`, forever (when
    /// events are recorded and a store is set).
    pub async fn ship_forever(state: Arc<crate::state::RouterState>) {
        if state.events.shipping.is_none() {
            return;
        }
        let every = ms(state.config.events_ship_ms.max(10));
        loop {
            tokio::time::sleep(every).await;
            if let Err(e) = Self::ship_once(&state).await {
                metrics::counter!("router_events_ship_errors_total").increment(1);
                tracing::warn!(error = %format!("{e:#}"), "cannot ship events; retrying");
            }
        }
    }

    /// At shutdown: closes the current events file and ships what is
    /// ready once (bounded by `within`), so a drained router leaves
    /// nothing behind.
    pub async fn finish(state: &crate::state::RouterState, within: Duration) {
        let Some(recorder) = &state.events.recorder else {
            return;
        };
        let flush = async {
            recorder.rotate().await;
            Self::ship_once(state).await
        };
        match tokio::time::timeout(within, flush).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %format!("{e:#}"), "events not shipped at exit"),
            Err(_) => tracing::warn!("events not shipped at exit: timed out"),
        }
    }
}

fn unix_secs() -> u64 {
    recorder::unix_ms() / 1000
}
