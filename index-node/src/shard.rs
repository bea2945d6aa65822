//! One tenant shard: a tantivy index in its own directory, its searcher, and
//! the sequence number of the last batch applied to it.
//!
//! Everything here is blocking (disk and CPU); the gRPC layer runs it on the
//! search pool or a blocking thread.
//!
//! Layout of a shard directory:
//! ```text
//! <data_dir>/shards/<tenant>/<shard>/tandem-shard.json   {"language": "en"}
//! <data_dir>/shards/<tenant>/<shard>/index/              tantivy files
//! ```
//! The applied sequence number is stored as the payload of tantivy's commit,
//! so a batch's documents and its sequence number become durable together.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tandem_proto::v1::{Document, Hit};
use tantivy::collector::{Count, TopDocs};
use tantivy::schema::{IndexRecordOption, TantivyDocument, Value};
use tantivy::snippet::SnippetGenerator;
use tantivy::{DocAddress, DocId, Index, IndexReader, ReloadPolicy, Score, SegmentReader, Term};

use crate::query::{build_query, QueryError};
use crate::schema::{build_schema, register_tokenizers, Fields};

/// Memory budget of the short-lived writer that applies one batch.
const WRITER_MEMORY_BYTES: usize = 32 * 1024 * 1024;
/// Characters of body text in a snippet.
const SNIPPET_CHARS: usize = 160;
const META_FILE: &str = "tandem-shard.json";

/// Identifies a shard on a node.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardKey {
    /// Tenant id (validated: safe as a directory name).
    pub tenant: String,
    /// Shard number within the tenant.
    pub shard: u32,
}

impl ShardKey {
    /// The shard's directory under a node's data directory.
    pub fn dir(&self, data_dir: &Path) -> PathBuf {
        data_dir
            .join("shards")
            .join(&self.tenant)
            .join(self.shard.to_string())
    }

    /// Its `grpc.health.v1` service name.
    pub fn health_service(&self) -> String {
        format!("tandem.index/{}/{}", self.tenant, self.shard)
    }
}

impl std::fmt::Display for ShardKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.tenant, self.shard)
    }
}

/// What tandem keeps beside the tantivy files.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShardMeta {
    /// ISO 639-1 language code choosing the stemmer ("" = none).
    pub language: String,
}

/// A search against one shard, already validated.
#[derive(Clone, Debug, Default)]
pub struct SearchParams {
    /// Query text (see [`crate::query`]).
    pub query: String,
    /// Number of hits wanted.
    pub top_k: usize,
    /// Hits to skip.
    pub offset: usize,
    /// `field:value` filters, all required.
    pub filters: Vec<String>,
    /// Strict syntax.
    pub strict: bool,
    /// Doc id -> weight; a matching doc scores `score * (1 + weight)`.
    pub boosts: HashMap<String, f32>,
    /// Generate highlighted snippets.
    pub snippets: bool,
    /// Only these documents (empty: all).
    pub ids: Vec<String>,
}

/// The result of searching one shard.
#[derive(Debug)]
pub struct ShardHits {
    /// Hits, best first (`shard` is filled in).
    pub hits: Vec<Hit>,
    /// Number of matching documents.
    pub total_hits: u64,
    /// Sequence number of the last batch visible to this search.
    pub applied_seq: u64,
}

/// Why an ingest batch was refused (INVALID_ARGUMENT) or failed.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The batch is malformed; nothing was applied.
    #[error("{0}")]
    Invalid(String),
    /// The index failed; nothing was applied.
    #[error("index error: {0}")]
    Index(#[from] tantivy::TantivyError),
}

/// Outcome of an applied (or re-delivered) batch.
#[derive(Debug, PartialEq, Eq)]
pub struct IngestOutcome {
    /// Applied sequence number after the batch.
    pub applied_seq: u64,
    /// The batch had been applied before; nothing changed.
    pub duplicate: bool,
    /// Documents written.
    pub upserted: u32,
    /// Delete operations applied.
    pub deleted: u32,
}

/// An open shard.
pub struct Shard {
    key: ShardKey,
    meta: ShardMeta,
    index: Index,
    reader: IndexReader,
    fields: Fields,
    applied_seq: AtomicU64,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard").field("key", &self.key).finish()
    }
}

impl Shard {
    /// Creates an empty shard on disk (fails if one exists).
    pub fn create(data_dir: &Path, key: ShardKey, language: &str) -> anyhow::Result<Self> {
        let dir = key.dir(data_dir);
        let index_dir = dir.join("index");
        std::fs::create_dir_all(&index_dir)
            .with_context(|| format!("cannot create {}", index_dir.display()))?;
        let meta = ShardMeta {
            language: language.to_string(),
        };
        Index::create_in_dir(&index_dir, build_schema(language))
            .with_context(|| format!("cannot create index in {}", index_dir.display()))?;
        // Written last: a directory without it is an unfinished create.
        std::fs::write(dir.join(META_FILE), serde_json::to_vec(&meta)?)
            .with_context(|| format!("cannot write {}", dir.join(META_FILE).display()))?;
        Self::open(data_dir, key)
    }

    /// Opens an existing shard.
    pub fn open(data_dir: &Path, key: ShardKey) -> anyhow::Result<Self> {
        let dir = key.dir(data_dir);
        let meta_path = dir.join(META_FILE);
        let meta: ShardMeta = serde_json::from_slice(
            &std::fs::read(&meta_path)
                .with_context(|| format!("cannot read {}", meta_path.display()))?,
        )
        .with_context(|| format!("corrupt {}", meta_path.display()))?;
        let index = Index::open_in_dir(dir.join("index"))
            .with_context(|| format!("cannot open index of shard {key}"))?;
        register_tokenizers(&index, &meta.language);
        let fields = Fields::from_schema(&index.schema())
            .with_context(|| format!("shard {key} has a foreign schema"))?;
        let applied_seq = read_applied_seq(&index)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .with_context(|| format!("cannot open a reader on shard {key}"))?;
        Ok(Self {
            key,
            meta,
            index,
            reader,
            fields,
            applied_seq: AtomicU64::new(applied_seq),
        })
    }

    /// The shard's key.
    pub fn key(&self) -> &ShardKey {
        &self.key
    }

    /// The shard's language code.
    pub fn language(&self) -> &str {
        &self.meta.language
    }

    /// Sequence number of the last applied batch (0: none).
    pub fn applied_seq(&self) -> u64 {
        self.applied_seq.load(Ordering::Acquire)
    }

    /// Searchable documents and segments.
    pub fn stats(&self) -> (u64, u32) {
        let searcher = self.reader.searcher();
        (searcher.num_docs(), searcher.segment_readers().len() as u32)
    }

    /// Runs a search.
    pub fn search(&self, params: &SearchParams) -> Result<ShardHits, SearchError> {
        let searcher = self.reader.searcher();
        let applied_seq = self.applied_seq();
        let query = build_query(
            &self.index,
            &self.fields,
            &params.query,
            &params.filters,
            &params.ids,
            params.strict,
        )?;
        let top = TopDocs::with_limit(params.top_k.max(1)).and_offset(params.offset);
        let (scored, total): (Vec<(Score, DocAddress)>, usize) = if params.boosts.is_empty() {
            searcher.search(&query, &(top.order_by_score(), Count))?
        } else {
            let boosts = Arc::new(params.boosts.clone());
            let id_field = self.fields.id;
            let collector = top.tweak_score(move |segment: &SegmentReader| {
                let per_doc = segment_boosts(segment, id_field, &boosts);
                move |doc: DocId, score: Score| match per_doc.get(&doc) {
                    Some(weight) => score * (1.0 + weight),
                    None => score,
                }
            });
            searcher.search(&query, &(collector, Count))?
        };
        let snippets = if params.snippets {
            Some(
                SnippetGenerator::create(&searcher, &*query, self.fields.body).map(|mut g| {
                    g.set_max_num_chars(SNIPPET_CHARS);
                    g
                })?,
            )
        } else {
            None
        };
        let mut hits = Vec::with_capacity(scored.len());
        for (score, address) in scored {
            let doc: TantivyDocument = searcher.doc(address)?;
            hits.push(self.to_hit(&doc, score, snippets.as_ref()));
        }
        // Rank order as `ShardSearchResponse` promises: tantivy breaks ties
        // by where a document sits in the index, which differs between
        // replicas; the id does not (and a router relays a lone shard's
        // hits in this order without reading them).
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
        Ok(ShardHits {
            hits: if params.top_k == 0 { Vec::new() } else { hits },
            total_hits: total as u64,
            applied_seq,
        })
    }

    fn to_hit(
        &self,
        doc: &TantivyDocument,
        score: Score,
        snippets: Option<&SnippetGenerator>,
    ) -> Hit {
        let text = |field| {
            doc.get_first(field)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let snippet = snippets
            .map(|g| {
                let s = g.snippet_from_doc(doc);
                if s.fragment().is_empty() {
                    // No query term in the body: show its beginning instead.
                    text(self.fields.body).chars().take(SNIPPET_CHARS).collect()
                } else {
                    s.to_html()
                }
            })
            .unwrap_or_default();
        Hit {
            id: text(self.fields.id),
            score,
            title: text(self.fields.title),
            url: text(self.fields.url),
            snippet,
            shard: self.key.shard,
        }
    }

    /// Applies one batch atomically and durably: deletes, then upserts, then
    /// a commit carrying `seq`. A batch with `seq <= applied_seq` is a
    /// re-delivery and changes nothing. Callers serialise batches per shard.
    pub fn ingest(
        &self,
        seq: u64,
        upserts: &[Document],
        deletes: &[String],
    ) -> Result<IngestOutcome, IngestError> {
        // Re-read from disk: the committed payload is the truth even if this
        // in-memory shard was evicted and reopened meanwhile.
        let applied =
            read_applied_seq(&self.index).map_err(|e| IngestError::Invalid(e.to_string()))?;
        if seq <= applied {
            return Ok(IngestOutcome {
                applied_seq: applied,
                duplicate: true,
                upserted: 0,
                deleted: 0,
            });
        }
        // Parse everything before touching the index: a bad document must
        // leave the shard exactly as it was.
        let docs = upserts
            .iter()
            .map(|d| self.to_tantivy_doc(d))
            .collect::<Result<Vec<_>, _>>()?;
        let mut writer = self
            .index
            .writer_with_num_threads::<TantivyDocument>(1, WRITER_MEMORY_BYTES)?;
        for id in deletes {
            writer.delete_term(Term::from_field_text(self.fields.id, id));
        }
        for (doc, source) in docs.into_iter().zip(upserts) {
            writer.delete_term(Term::from_field_text(self.fields.id, &source.id));
            writer.add_document(doc)?;
        }
        let mut prepared = writer.prepare_commit()?;
        prepared.set_payload(&seq.to_string());
        prepared.commit()?;
        // Let merges of the small per-batch segments finish before the
        // writer (and its lock) goes away.
        writer.wait_merging_threads()?;
        self.applied_seq.store(seq, Ordering::Release);
        self.reader.reload()?;
        Ok(IngestOutcome {
            applied_seq: seq,
            duplicate: false,
            upserted: upserts.len() as u32,
            deleted: deletes.len() as u32,
        })
    }

    fn to_tantivy_doc(&self, d: &Document) -> Result<TantivyDocument, IngestError> {
        let mut doc = TantivyDocument::default();
        doc.add_text(self.fields.id, &d.id);
        doc.add_text(self.fields.title, &d.title);
        doc.add_text(self.fields.body, &d.body);
        doc.add_text(self.fields.url, &d.url);
        if !d.attrs_json.trim().is_empty() {
            let attrs: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&d.attrs_json).map_err(|e| {
                    IngestError::Invalid(format!(
                        "document {:?}: attrs_json is not a JSON object: {e}",
                        d.id
                    ))
                })?;
            let attrs: tantivy::schema::document::OwnedValue =
                serde_json::Value::Object(attrs).into();
            doc.add_field_value(self.fields.attrs, &attrs);
        }
        Ok(doc)
    }
}

/// Why a search failed.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The request is invalid (INVALID_ARGUMENT).
    #[error(transparent)]
    Query(#[from] QueryError),
    /// The index failed (INTERNAL).
    #[error("index error: {0}")]
    Index(#[from] tantivy::TantivyError),
}

/// The boosted documents of one segment, by DocId: a handful of term
/// lookups in the id field instead of reading every hit's stored id.
fn segment_boosts(
    segment: &SegmentReader,
    id_field: tantivy::schema::Field,
    boosts: &HashMap<String, f32>,
) -> HashMap<DocId, f32> {
    let mut per_doc = HashMap::new();
    let Ok(inverted) = segment.inverted_index(id_field) else {
        return per_doc;
    };
    for (id, weight) in boosts {
        let term = Term::from_field_text(id_field, id);
        if let Ok(Some(mut postings)) = inverted.read_postings(&term, IndexRecordOption::Basic) {
            use tantivy::DocSet;
            let mut doc = postings.doc();
            while doc != tantivy::TERMINATED {
                if !segment.is_deleted(doc) {
                    per_doc.insert(doc, *weight);
                }
                doc = postings.advance();
            }
        }
    }
    per_doc
}

fn read_applied_seq(index: &Index) -> anyhow::Result<u64> {
    let metas = index.load_metas().context("cannot read index metadata")?;
    match metas.payload.as_deref() {
        None | Some("") => Ok(0),
        Some(p) => p
            .parse()
            .with_context(|| format!("corrupt sequence number {p:?} in commit payload")),
    }
}
