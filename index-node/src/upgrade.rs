//! Bringing a shard of an older schema version up to
//! [`SCHEMA_VERSION`](crate::schema::SCHEMA_VERSION).
//!
//! A shard's metadata names the schema version its index was built with
//! (absent: 1). When a node opens a shard of an older version, it rebuilds
//! the index from the documents the old one stores (every field a document
//! has is stored), keeping the applied sequence number, so the operation
//! log, the followers and the digests carry on as if nothing happened. The
//! rebuilt index is written beside the old one and swapped in by renames:
//!
//! ```text
//! index/          the old index, until the new one is complete
//! index.upgrade/  the new index being built (deleted if found on open)
//! index.old/      the old index between the two renames
//! ```
//!
//! A crash at any point leaves either the old index (rebuilt again on the
//! next open) or the new one (whose metadata is then rewritten). Snapshots
//! name their schema version too; a replica installed from an old snapshot
//! is rebuilt the same way when it is first opened.

use std::path::Path;

use anyhow::Context;
use tandem_proto::v1::Document;
use tantivy::schema::{TantivyDocument, Value};
use tantivy::{DocAddress, Index, ReloadPolicy};

use crate::schema::{build_schema, register_tokenizers, Fields, SCHEMA_VERSION};
use crate::shard::{read_meta, to_tantivy_doc, write_meta, ShardMeta};

const INDEX: &str = "index";
const BUILDING: &str = "index.upgrade";
const OLD: &str = "index.old";

/// Rebuilds the shard in `dir` if its schema is older than this build's;
/// returns whether it did. Blocking (reads and writes every document).
pub fn upgrade_if_needed(dir: &Path) -> anyhow::Result<bool> {
    if !dir.join(INDEX).exists() && dir.join(OLD).exists() {
        // Crashed between the two renames: the old index is the good one.
        std::fs::rename(dir.join(OLD), dir.join(INDEX))?;
    }
    let mut meta = read_meta(dir)?;
    if meta.schema >= SCHEMA_VERSION {
        return Ok(false);
    }
    let old = Index::open_in_dir(dir.join(INDEX)).context("cannot open the old index")?;
    if Fields::from_schema(&old.schema()).is_ok() {
        // Crashed after the swap, before the metadata: only that is left.
        meta.schema = SCHEMA_VERSION;
        write_meta(dir, &meta)?;
        return Ok(false);
    }
    let started = std::time::Instant::now();
    let docs = rebuild(dir, &old, &meta)?;
    let _ = std::fs::remove_dir_all(dir.join(OLD));
    std::fs::rename(dir.join(INDEX), dir.join(OLD))?;
    std::fs::rename(dir.join(BUILDING), dir.join(INDEX))?;
    meta.schema = SCHEMA_VERSION;
    write_meta(dir, &meta)?;
    std::fs::remove_dir_all(dir.join(OLD))?;
    tracing::info!(dir = %dir.display(), docs, secs = started.elapsed().as_secs_f64(),
        to = SCHEMA_VERSION, "shard rebuilt for the current schema");
    Ok(true)
}

/// Writes every live document of `old` into a new index in `index.upgrade`,
/// committed with `old`'s applied sequence number. Returns the count.
fn rebuild(dir: &Path, old: &Index, meta: &ShardMeta) -> anyhow::Result<u64> {
    register_tokenizers(old, &meta.language);
    let schema = old.schema();
    let field = |name: &str| schema.get_field(name).context("old shard lacks a field");
    let (id, title, body, url, attrs) = (
        field("id")?,
        field("title")?,
        field("body")?,
        field("url")?,
        field("attrs")?,
    );
    let payload = old.load_metas()?.payload;
    let building = dir.join(BUILDING);
    let _ = std::fs::remove_dir_all(&building);
    std::fs::create_dir_all(&building)?;
    let new = Index::create_in_dir(&building, build_schema(&meta.language))?;
    register_tokenizers(&new, &meta.language);
    let fields = Fields::from_schema(&new.schema())?;
    let mut writer = new.writer_with_num_threads::<TantivyDocument>(1, 32 * 1024 * 1024)?;
    let reader = old
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .try_into()?;
    let searcher = reader.searcher();
    let mut count = 0u64;
    for (ord, segment) in searcher.segment_readers().iter().enumerate() {
        for doc_id in segment.doc_ids_alive() {
            let stored: TantivyDocument = searcher.doc(DocAddress::new(ord as u32, doc_id))?;
            let text = |f| {
                stored
                    .get_first(f)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string()
            };
            let attrs_json = match stored.get_first(attrs) {
                Some(v) => {
                    let value: tantivy::schema::document::OwnedValue = v.into();
                    serde_json::to_string(&value)?
                }
                None => String::new(),
            };
            let document = Document {
                id: text(id),
                title: text(title),
                body: text(body),
                url: text(url),
                attrs_json,
            };
            writer.add_document(to_tantivy_doc(&fields, &document)?)?;
            count += 1;
        }
    }
    let mut prepared = writer.prepare_commit()?;
    prepared.set_payload(payload.as_deref().unwrap_or(""));
    prepared.commit()?;
    writer.wait_merging_threads()?;
    Ok(count)
}
