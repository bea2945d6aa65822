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
//! Batches reach the index through the shard's writer ([`crate::writer`]),
//! which logs them first; this module only applies and commits them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tandem_proto::v1::{Document, Hit};
use tantivy::collector::{Count, TopDocs};
use tantivy::schema::{IndexRecordOption, TantivyDocument, Value};
use tantivy::snippet::SnippetGenerator;
use tantivy::{
    DocAddress, DocId, Index, IndexReader, IndexWriter, ReloadPolicy, Score, SegmentReader, Term,
};
use tokio::sync::watch;
use xxhash_rust::xxh3::Xxh3;

use crate::query::{build_query, snippet_query, QueryError, QuerySpec};
use crate::ranking::{Ranking, TITLE_REPEAT};
use crate::schema::{build_schema, register_tokenizers, Fields, SCHEMA_VERSION};
use crate::snippet;

/// Memory budget of a shard's index writer.
const WRITER_MEMORY_BYTES: usize = 32 * 1024 * 1024;
const META_FILE: &str = ShardMeta::FILE;

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

impl ShardMeta {
    /// Its file name in the shard's directory.
    pub const FILE: &'static str = "tandem-shard.json";
}

/// What tandem keeps beside the tantivy files.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShardMeta {
    /// ISO 639-1 language code choosing the stemmer ("" = none).
    pub language: String,
    /// Highest leader epoch this replica has seen (0: none). Kept on disk so
    /// that a restarted deposed leader still refuses the old epoch.
    #[serde(default)]
    pub epoch: u64,
    /// [`SCHEMA_VERSION`] of the index (absent: 1).
    #[serde(default = "schema_version_1")]
    pub schema: u32,
}

fn schema_version_1() -> u32 {
    1
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
    /// The ranking recipe (shards use [`Ranking::DEFAULT`]).
    pub ranking: Ranking,
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

/// A malformed document (INVALID_ARGUMENT); nothing of its batch is applied.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidDocument(pub String);

/// An open shard.
pub struct Shard {
    key: ShardKey,
    shard_dir: PathBuf,
    meta: ShardMeta,
    index: Index,
    reader: IndexReader,
    fields: Fields,
    meta_lock: std::sync::Mutex<()>,
    /// The highest leader epoch seen, as on disk.
    epoch: std::sync::atomic::AtomicU64,
    /// Held (write) while a commit becomes visible, (read) while the digest
    /// takes a searcher and its sequence number, so that the two match.
    visibility: std::sync::RwLock<()>,
    /// Sequence number of the last commit, which searches see.
    visible: watch::Sender<u64>,
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
            epoch: 0,
            schema: SCHEMA_VERSION,
        };
        Index::create_in_dir(&index_dir, build_schema(language))
            .with_context(|| format!("cannot create index in {}", index_dir.display()))?;
        sync_dir(&index_dir)?;
        // Written last, fsynced with every directory up to the data
        // directory: a directory without it is an unfinished create
        // (removed at the next start, see `quarantine`), and a finished
        // one survives a crash whole.
        write_meta(&dir, &meta)
            .with_context(|| format!("cannot write {}", dir.join(META_FILE).display()))?;
        let mut up = Some(dir.as_path());
        while let Some(d) = up.filter(|d| d.starts_with(data_dir)) {
            sync_dir(d)?;
            up = d.parent();
        }
        Self::open(data_dir, key)
    }

    /// Opens an existing shard, rebuilding it first if its schema is older
    /// than this build's ([`crate::upgrade`]).
    pub fn open(data_dir: &Path, key: ShardKey) -> anyhow::Result<Self> {
        let dir = key.dir(data_dir);
        crate::upgrade::upgrade_if_needed(&dir)
            .with_context(|| format!("cannot upgrade shard {key} to the current schema"))?;
        let meta = read_meta(&dir)?;
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
        let epoch = meta.epoch;
        Ok(Self {
            shard_dir: dir.clone(),
            key,
            meta,
            index,
            reader,
            fields,
            meta_lock: std::sync::Mutex::new(()),
            epoch: std::sync::atomic::AtomicU64::new(epoch),
            visibility: std::sync::RwLock::new(()),
            visible: watch::Sender::new(applied_seq),
        })
    }

    /// The highest leader epoch this replica has seen (kept in memory;
    /// [`Shard::raise_epoch`] stores it on disk first).
    pub fn stored_epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Stores `epoch` if it is above the stored one (blocking; fsynced).
    /// Returns the stored epoch afterwards.
    pub fn raise_epoch(&self, epoch: u64) -> anyhow::Result<u64> {
        let _guard = self.meta_lock.lock().expect("meta lock");
        let dir = &self.shard_dir;
        let mut meta = read_meta(dir)?;
        if epoch <= meta.epoch {
            self.epoch
                .fetch_max(meta.epoch, std::sync::atomic::Ordering::AcqRel);
            return Ok(meta.epoch);
        }
        meta.epoch = epoch;
        write_meta(dir, &meta)?;
        self.epoch
            .fetch_max(epoch, std::sync::atomic::Ordering::AcqRel);
        Ok(epoch)
    }

    /// The shard's key.
    pub fn key(&self) -> &ShardKey {
        &self.key
    }

    /// The shard's language code.
    pub fn language(&self) -> &str {
        &self.meta.language
    }

    /// Sequence number of the last batch searches see (0: none).
    pub fn applied_seq(&self) -> u64 {
        *self.visible.borrow()
    }

    /// Follows [`Shard::applied_seq`] (searches that need a sequence wait
    /// on it).
    pub fn watch_applied(&self) -> watch::Receiver<u64> {
        self.visible.subscribe()
    }

    /// The tantivy index.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// The shard's directory.
    pub fn dir(&self) -> &Path {
        &self.shard_dir
    }

    /// A writer for the shard's index (one at a time: tantivy's lock).
    pub fn index_writer(&self) -> tantivy::Result<IndexWriter> {
        self.index
            .writer_with_num_threads::<TantivyDocument>(1, WRITER_MEMORY_BYTES)
    }

    /// Adds one batch to `writer` (uncommitted): deletes, then upserts, each
    /// upsert replacing any document with its id.
    pub fn apply(
        &self,
        writer: &mut IndexWriter,
        upserts: &[Document],
        deletes: &[String],
    ) -> Result<(), ApplyError> {
        let docs = upserts
            .iter()
            .map(|d| self.to_tantivy_doc(d))
            .collect::<Result<Vec<_>, _>>()?;
        for id in deletes {
            writer.delete_term(Term::from_field_text(self.fields.id, id));
        }
        for (doc, source) in docs.into_iter().zip(upserts) {
            writer.delete_term(Term::from_field_text(self.fields.id, &source.id));
            writer.add_document(doc)?;
        }
        Ok(())
    }

    /// Applies one batch and commits it at once, bypassing the operation
    /// log: for building a shard offline (benchmarks, tests), never for a
    /// shard a node serves writes for.
    pub fn load_batch(
        &self,
        seq: u64,
        upserts: &[Document],
        deletes: &[String],
    ) -> Result<(), ApplyError> {
        let mut writer = self.index_writer()?;
        self.apply(&mut writer, upserts, deletes)?;
        self.commit(&mut writer, seq)?;
        writer.wait_merging_threads()?;
        Ok(())
    }

    /// Commits `writer` with `seq` as the applied sequence number and makes
    /// it visible to searches.
    pub fn commit(&self, writer: &mut IndexWriter, seq: u64) -> tantivy::Result<()> {
        let mut prepared = writer.prepare_commit()?;
        prepared.set_payload(&seq.to_string());
        prepared.commit()?;
        let _visible = self.visibility.write().expect("visibility lock");
        self.reader.reload()?;
        self.visible.send_replace(seq);
        Ok(())
    }

    /// Order-independent hash over `(id, content hash)` of every live
    /// document, as 16 hex digits: two replicas at the same applied
    /// sequence have equal digests exactly when they hold the same
    /// documents. Reads every stored document (blocking).
    pub fn digest(&self) -> tantivy::Result<(u64, String)> {
        let (searcher, seq) = {
            let _visible = self.visibility.read().expect("visibility lock");
            (self.reader.searcher(), self.applied_seq())
        };
        let mut sum = 0u64;
        for (ord, segment) in searcher.segment_readers().iter().enumerate() {
            for doc_id in segment.doc_ids_alive() {
                let doc: TantivyDocument = searcher.doc(DocAddress::new(ord as u32, doc_id))?;
                sum = sum.wrapping_add(self.document_hash(&doc));
            }
        }
        Ok((seq, format!("{sum:016x}")))
    }

    fn document_hash(&self, doc: &TantivyDocument) -> u64 {
        let text = |field| {
            doc.get_first(field)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let mut content = Xxh3::new();
        for field in [self.fields.title, self.fields.body, self.fields.url] {
            content.update(text(field).as_bytes());
            content.update(&[0]);
        }
        if let Some(attrs) = doc.get_first(self.fields.attrs) {
            let value: tantivy::schema::document::OwnedValue = attrs.into();
            content.update(serde_json::to_string(&value).unwrap_or_default().as_bytes());
        }
        let mut pair = Xxh3::new();
        pair.update(text(self.fields.id).as_bytes());
        pair.update(&[0]);
        pair.update(&content.digest().to_le_bytes());
        pair.digest()
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
        let spec = QuerySpec {
            text: &params.query,
            filters: &params.filters,
            ids: &params.ids,
            strict: params.strict,
            ranking: &params.ranking,
        };
        let query = build_query(&self.index, &self.fields, &spec)?;
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
            let highlight = snippet_query(&self.index, &self.fields, &params.query);
            Some(snippet::generator(
                &searcher,
                &*highlight,
                self.fields.body,
            )?)
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
            .map(|g| snippet::render(g, &text(self.fields.body)))
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

    /// The tantivy document for `d`; INVALID for malformed attrs JSON.
    pub fn to_tantivy_doc(&self, d: &Document) -> Result<TantivyDocument, InvalidDocument> {
        to_tantivy_doc(&self.fields, d)
    }
}

/// Why a batch could not be added to the index.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A document is malformed.
    #[error(transparent)]
    Invalid(#[from] InvalidDocument),
    /// The index failed.
    #[error("index error: {0}")]
    Index(#[from] tantivy::TantivyError),
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

/// The tantivy document for `d` (stored fields and the derived ones of
/// [`crate::schema`]); INVALID for malformed attrs JSON.
pub fn to_tantivy_doc(fields: &Fields, d: &Document) -> Result<TantivyDocument, InvalidDocument> {
    let mut doc = TantivyDocument::default();
    doc.add_text(fields.id, &d.id);
    doc.add_text(fields.title, &d.title);
    doc.add_text(fields.body, &d.body);
    doc.add_text(fields.url, &d.url);
    for _ in 0..TITLE_REPEAT {
        doc.add_text(fields.text, &d.title);
    }
    doc.add_text(fields.text, &d.body);
    if !d.attrs_json.trim().is_empty() {
        let attrs: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&d.attrs_json)
            .map_err(|e| {
                InvalidDocument(format!(
                    "document {:?}: attrs_json is not a JSON object: {e}",
                    d.id
                ))
            })?;
        let attrs: tantivy::schema::document::OwnedValue = serde_json::Value::Object(attrs).into();
        doc.add_field_value(fields.attrs, &attrs);
    }
    Ok(doc)
}

pub(crate) fn read_meta(dir: &Path) -> anyhow::Result<ShardMeta> {
    let meta_path = dir.join(META_FILE);
    let bytes = std::fs::read(&meta_path)
        .with_context(|| format!("cannot read {}", meta_path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("corrupt {}", meta_path.display()))
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

/// Stores `meta` in `dir` atomically (written aside, fsynced, renamed,
/// and the rename fsynced with the directory).
pub(crate) fn write_meta(dir: &Path, meta: &ShardMeta) -> anyhow::Result<()> {
    let tmp = dir.join(format!("{META_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    std::io::Write::write_all(&mut f, &serde_json::to_vec(meta)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(META_FILE))?;
    sync_dir(dir)?;
    Ok(())
}

/// Makes `dir`'s entries (files created or renamed in it) durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
