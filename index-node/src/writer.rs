//! A shard's write pipeline: one task per shard that takes batches, writes
//! them to the operation log with one `fsync` per group, acknowledges them,
//! and feeds them to a long-lived tantivy writer that commits at most every
//! `commit_interval` (or at once when a search waits for a sequence number).
//!
//! This is group commit: under load, every batch that arrived while the
//! previous group was being written goes into the next group, so the cost of
//! an `fsync` and of a tantivy commit is shared by many batches, and an
//! acknowledged batch is durable (in the log) before it is searchable.
//!
//! Three kinds of job reach the task:
//! - [`Batch`]: a write on a leader (the next sequence number is assigned
//!   here) or on a standalone shard (the caller's number; made searchable
//!   before the answer, as tools expect);
//! - records a follower pulled from its leader, appended as they are;
//! - a flush: commit now (a search is waiting for a sequence number).
//!
//! Request ids: the writer remembers the `request_id` of every batch in the
//! log younger than the request-id window (rebuilt from the log on start),
//! so a retried batch is answered with its first result and applied once.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prost::Message;
use tandem_proto::v1::{Document, LogRecord};
use tantivy::IndexWriter;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use xxhash_rust::xxh3::Xxh3;

use crate::oplog::{OpLog, Tip};
use crate::shard::Shard;

/// Most jobs taken into one group.
const MAX_GROUP: usize = 256;
/// Jobs waiting for the task before senders wait.
const QUEUE: usize = 1024;
/// Records read at once when replaying the log.
const REPLAY_CHUNK: usize = 5120;
/// An idle writer (nothing pending) is closed after this long, so that a
/// node with many tenants holds writers only for the ones being written.
const IDLE_CLOSE: Duration = Duration::from_secs(30);

/// How a shard's writer behaves.
#[derive(Clone, Debug)]
pub struct WriterConfig {
    /// Longest time an acknowledged batch waits to become searchable.
    pub commit_interval: Duration,
    /// How long a `request_id` is remembered.
    pub request_id_window: Duration,
    /// How long log records are kept after they are in the index (followers
    /// further behind than this must bootstrap).
    pub log_retention: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            commit_interval: Duration::from_millis(250),
            request_id_window: Duration::from_secs(3600),
            log_retention: Duration::from_secs(3600),
        }
    }
}

/// A batch to write.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    /// 0: the next sequence number (leaders). > 0: this one (standalone
    /// shards); at or below the log's last, the batch is a re-delivery.
    pub seq: u64,
    /// The leader epoch to record.
    pub epoch: u64,
    /// Idempotency key ("" for none).
    pub request_id: String,
    /// Documents to add or replace.
    pub upserts: Vec<Document>,
    /// Ids to delete.
    pub deletes: Vec<String>,
    /// Answer only once the batch is searchable.
    pub visible: bool,
}

/// What became of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    /// Its sequence number (the first write's, for a duplicate).
    pub seq: u64,
    /// The epoch it was written under.
    pub epoch: u64,
    /// It had been written before; nothing changed now.
    pub duplicate: bool,
    /// Documents in it.
    pub upserted: u32,
    /// Deletes in it.
    pub deleted: u32,
}

/// Why a write failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The request id was used before for a different batch (ALREADY_EXISTS).
    #[error("request_id {0:?} was already used for a different batch")]
    Reused(String),
    /// The log or the index failed (INTERNAL); nothing acknowledged.
    #[error("{0}")]
    Failed(String),
}

/// Where a write's answer goes.
type WriteReply = oneshot::Sender<Result<Written, WriteError>>;

enum Job {
    Write(Batch, WriteReply),
    Replicate(Vec<LogRecord>, oneshot::Sender<Result<Tip, WriteError>>),
    Flush,
    Stage(oneshot::Sender<anyhow::Result<crate::snapshot::Staged>>),
    Close(oneshot::Sender<()>),
    DigestAt(u64, DigestReply),
}

/// Where a digest's answer goes: `(sequence, digest)`.
type DigestReply = oneshot::Sender<anyhow::Result<(u64, String)>>;

/// The handle of a running shard writer; cheap to clone.
#[derive(Clone, Debug)]
pub struct WriterHandle {
    tx: mpsc::Sender<Job>,
    /// The shard's operation log (read by replication).
    pub log: Arc<OpLog>,
    /// The shard.
    pub shard: Arc<Shard>,
}

impl WriterHandle {
    /// Writes a batch; answers once it is durable (and searchable, if asked).
    pub async fn write(&self, batch: Batch) -> Result<Written, WriteError> {
        let (tx, rx) = oneshot::channel();
        self.send(Job::Write(batch, tx)).await?;
        rx.await.map_err(|_| gone())?
    }

    /// Appends records pulled from the leader (those at or below the log's
    /// last are skipped); answers with the log's new last record.
    pub async fn replicate(&self, records: Vec<LogRecord>) -> Result<Tip, WriteError> {
        let (tx, rx) = oneshot::channel();
        self.send(Job::Replicate(records, tx)).await?;
        rx.await.map_err(|_| gone())?
    }

    /// Asks for a commit soon (never waits).
    pub fn flush(&self) {
        let _ = self.tx.try_send(Job::Flush);
    }

    /// Commits what is pending and links that commit's files aside.
    pub async fn stage_snapshot(&self) -> anyhow::Result<crate::snapshot::Staged> {
        let (tx, rx) = oneshot::channel();
        self.send(Job::Stage(tx)).await?;
        rx.await.map_err(|_| gone())?
    }

    /// The shard's content digest exactly at `seq`: the writer commits at
    /// `seq` when its records reach it (waiting for them if needed), and
    /// computes the digest before it applies anything later. An error if the
    /// shard is already past `seq`.
    pub async fn digest_at(&self, seq: u64) -> anyhow::Result<(u64, String)> {
        let (tx, rx) = oneshot::channel();
        self.send(Job::DigestAt(seq, tx)).await?;
        rx.await.map_err(|_| gone())?
    }

    /// Stops the writer (nothing pending is committed: the shard is about
    /// to be replaced); returns once its index writer is gone.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.send(Job::Close(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    async fn send(&self, job: Job) -> Result<(), WriteError> {
        self.tx.send(job).await.map_err(|_| gone())
    }
}

fn gone() -> WriteError {
    WriteError::Failed("the shard's writer stopped".to_string())
}

/// Opens the shard's log, replays what the index lacks, and starts the
/// writer task. Blocking (call from a blocking thread inside the runtime).
pub fn start(
    shard: Arc<Shard>,
    config: WriterConfig,
    runtime: &tokio::runtime::Handle,
) -> anyhow::Result<WriterHandle> {
    let log = Arc::new(OpLog::open_rolling(
        &shard.dir().join("oplog"),
        shard.applied_seq(),
        config.log_retention / 2,
    )?);
    let mut state = State {
        shard: shard.clone(),
        log: log.clone(),
        writer: None,
        pending_seq: 0,
        last_commit: Instant::now(),
        last_activity: Instant::now(),
        seen: HashMap::new(),
        digests: Vec::new(),
        seen_order: VecDeque::new(),
        config,
    };
    state.replay()?;
    let (tx, rx) = mpsc::channel(QUEUE);
    runtime.spawn(run(state, rx));
    Ok(WriterHandle { tx, log, shard })
}

/// The first result of a request id.
#[derive(Clone, Copy)]
struct Seen {
    written: Written,
    hash: u64,
}

struct State {
    shard: Arc<Shard>,
    log: Arc<OpLog>,
    writer: Option<IndexWriter>,
    /// Last sequence number given to the index writer but not committed.
    pending_seq: u64,
    last_commit: Instant,
    last_activity: Instant,
    seen: HashMap<String, Seen>,
    /// Digests asked at a sequence number not reached yet.
    digests: Vec<(u64, DigestReply)>,
    /// `(unix ms, request id)` in log order, to forget old ids.
    seen_order: VecDeque<(u64, String)>,
    config: WriterConfig,
}

async fn run(mut state: State, mut rx: mpsc::Receiver<Job>) {
    loop {
        let timer = state.next_timer();
        let first = tokio::select! {
            job = rx.recv() => match job {
                Some(job) => Some(job),
                None => break,
            },
            _ = tokio::time::sleep_until(timer.unwrap_or_else(Instant::now)), if timer.is_some() => None,
        };
        let mut jobs = Vec::new();
        if let Some(Job::Close(done)) = first {
            drop(state);
            let _ = done.send(());
            return;
        }
        if let Some(job) = first {
            jobs.push(job);
            while jobs.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
        }
        state = match tokio::task::spawn_blocking(move || {
            state.process(jobs);
            state
        })
        .await
        {
            Ok(state) => state,
            Err(e) => {
                tracing::error!(error = %e, "shard writer failed; writes to the shard stop");
                return;
            }
        };
    }
    let _ = tokio::task::spawn_blocking(move || state.commit()).await;
}

impl State {
    /// When the task must wake without a job: to commit pending batches, or
    /// to close an idle writer.
    fn next_timer(&self) -> Option<Instant> {
        if self.pending_seq > self.shard.applied_seq() {
            Some(self.last_commit + self.config.commit_interval)
        } else if self.writer.is_some() {
            Some(self.last_activity + IDLE_CLOSE)
        } else {
            None
        }
    }

    /// One group of jobs (blocking).
    fn process(&mut self, jobs: Vec<Job>) {
        let now_ms = unix_ms();
        let mut next = self.log.tip().seq;
        let mut records = Vec::new();
        let mut acks: Vec<(WriteReply, Written, bool)> = Vec::new();
        let mut tips = Vec::new();
        let mut stages = Vec::new();
        let mut flush = jobs.is_empty();
        for job in jobs {
            match job {
                Job::Write(batch, reply) => {
                    let visible = batch.visible;
                    match self.prepare(batch, &mut next, now_ms) {
                        Ok((written, Some(record))) => {
                            records.push(record);
                            acks.push((reply, written, visible));
                        }
                        Ok((written, None)) => {
                            let _ = reply.send(Ok(written));
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e));
                        }
                    }
                }
                Job::Replicate(pulled, reply) => {
                    for record in pulled {
                        if record.seq > next {
                            next = record.seq;
                            self.remember(&record, &written_of(&record, false));
                            records.push(record);
                        }
                    }
                    tips.push(reply);
                }
                Job::Flush => flush = true,
                Job::Stage(reply) => stages.push(reply),
                Job::DigestAt(seq, reply) => self.digests.push((seq, reply)),
                // Only as a group's first job; later it waits for the next.
                Job::Close(done) => drop(done),
            }
        }
        if !records.is_empty() {
            self.last_activity = Instant::now();
        }
        // Digests due now (or never) before this group's records go in.
        self.answer_digests();
        if let Err(e) = self.log.append(&records) {
            tracing::error!(shard = %self.shard.key(), error = %format!("{e:#}"), "log append failed");
            for r in &records {
                self.seen.remove(&r.request_id);
            }
            let failed = || {
                Err(WriteError::Failed(
                    "the shard's log could not be written".into(),
                ))
            };
            for (reply, _, _) in acks {
                let _ = reply.send(failed());
            }
            for reply in tips {
                let _ = reply.send(Err(WriteError::Failed("log append failed".into())));
            }
            return;
        }
        let tip = self.log.tip();
        for reply in tips {
            let _ = reply.send(Ok(tip));
        }
        let mut wait_visible = Vec::new();
        for (reply, written, visible) in acks {
            if visible {
                wait_visible.push((reply, written));
            } else {
                let _ = reply.send(Ok(written));
            }
        }
        self.apply(&records);
        let due = self.last_commit.elapsed() >= self.config.commit_interval;
        if flush || due || !wait_visible.is_empty() {
            self.commit();
        }
        for (reply, written) in wait_visible {
            let _ = reply.send(Ok(written));
        }
        if !stages.is_empty() {
            self.commit();
            for reply in stages {
                let _ = reply.send(crate::snapshot::stage(&self.shard, &self.log));
            }
        }
        if flush
            && self.pending_seq <= self.shard.applied_seq()
            && self.last_activity.elapsed() >= IDLE_CLOSE
        {
            self.close_writer();
        }
    }

    /// Checks a batch and turns it into a log record (`None`: a duplicate,
    /// answered with its first result).
    fn prepare(
        &mut self,
        batch: Batch,
        next: &mut u64,
        now_ms: u64,
    ) -> Result<(Written, Option<LogRecord>), WriteError> {
        let hash = batch_hash(&batch.upserts, &batch.deletes);
        if !batch.request_id.is_empty() {
            if let Some(seen) = self.seen.get(&batch.request_id) {
                if seen.hash != hash {
                    return Err(WriteError::Reused(batch.request_id));
                }
                return Ok((
                    Written {
                        duplicate: true,
                        ..seen.written
                    },
                    None,
                ));
            }
        }
        let seq = match batch.seq {
            0 => *next + 1,
            s if s <= *next => {
                let written = Written {
                    seq: *next,
                    epoch: batch.epoch,
                    duplicate: true,
                    upserted: 0,
                    deleted: 0,
                };
                return Ok((written, None));
            }
            s => s,
        };
        // The batch was checked before it came here
        // (`tandem_common::documents::check_batch`, attrs included).
        *next = seq;
        let record = LogRecord {
            seq,
            epoch: batch.epoch,
            request_id: batch.request_id,
            upserts: batch.upserts,
            deletes: batch.deletes,
            unix_ms: now_ms,
            batch_hash: hash,
        };
        let written = written_of(&record, false);
        self.remember(&record, &written);
        Ok((written, Some(record)))
    }

    fn remember(&mut self, record: &LogRecord, written: &Written) {
        if record.request_id.is_empty() {
            return;
        }
        self.seen.insert(
            record.request_id.clone(),
            Seen {
                written: *written,
                hash: record.batch_hash,
            },
        );
        self.seen_order
            .push_back((record.unix_ms, record.request_id.clone()));
        let horizon = record
            .unix_ms
            .saturating_sub(self.config.request_id_window.as_millis() as u64);
        while let Some((at, _)) = self.seen_order.front() {
            if *at >= horizon {
                break;
            }
            let (_, id) = self.seen_order.pop_front().expect("front exists");
            self.seen.remove(&id);
        }
    }

    /// Gives records to the index writer (uncommitted).
    fn apply(&mut self, records: &[LogRecord]) {
        if records.is_empty() {
            return;
        }
        let writer = match self.writer.take() {
            Some(w) => w,
            None => match self.shard.index_writer() {
                Ok(w) => w,
                Err(e) => {
                    tracing::error!(shard = %self.shard.key(), error = %e, "cannot open index writer; batches stay in the log");
                    return;
                }
            },
        };
        self.writer = Some(writer);
        for r in records {
            let writer = self.writer.as_mut().expect("just set");
            if let Err(e) = self.shard.apply(writer, &r.upserts, &r.deletes) {
                tracing::error!(shard = %self.shard.key(), seq = r.seq, error = %e, "batch not applied to the index");
            }
            self.pending_seq = r.seq;
            if !self.digests.is_empty() {
                self.answer_digests();
            }
        }
    }

    /// Answers the digests asked at the sequence number the index writer
    /// holds now (committing first), and refuses those already passed.
    fn answer_digests(&mut self) {
        let at = self.pending_seq.max(self.shard.applied_seq());
        if !self.digests.iter().any(|(seq, _)| *seq <= at) {
            return;
        }
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.digests)
            .into_iter()
            .partition(|(seq, _)| *seq <= at);
        self.digests = waiting;
        self.commit();
        let digest = self.shard.digest().map_err(anyhow::Error::from);
        for (seq, reply) in due {
            let answer = match &digest {
                Ok((applied, d)) if *applied == seq => Ok((seq, d.clone())),
                Ok((applied, _)) => Err(anyhow::anyhow!(
                    "the shard is at {applied}, past the asked {seq}"
                )),
                Err(e) => Err(anyhow::anyhow!("digest failed: {e:#}")),
            };
            let _ = reply.send(answer);
        }
    }

    /// Commits what the index writer holds.
    fn commit(&mut self) {
        self.last_commit = Instant::now();
        if self.pending_seq <= self.shard.applied_seq() {
            return;
        }
        let Some(writer) = self.writer.as_mut() else {
            return;
        };
        let started = std::time::Instant::now();
        if let Err(e) = self.shard.commit(writer, self.pending_seq) {
            tracing::error!(shard = %self.shard.key(), error = %e, "index commit failed; retried at the next commit");
            return;
        }
        metrics::histogram!("index_commit_seconds").record(started.elapsed().as_secs_f64());
        let keep_after = unix_ms().saturating_sub(self.config.log_retention.as_millis() as u64);
        if let Err(e) = self.log.trim(self.shard.applied_seq(), keep_after) {
            tracing::warn!(shard = %self.shard.key(), error = %format!("{e:#}"), "log trim failed");
        }
    }

    fn close_writer(&mut self) {
        if let Some(writer) = self.writer.take() {
            if let Err(e) = writer.wait_merging_threads() {
                tracing::warn!(shard = %self.shard.key(), error = %e, "index merge failed");
            }
        }
    }

    /// On start: puts the log's records after the index's last commit into
    /// the index, and relearns the request ids of the window.
    fn replay(&mut self) -> anyhow::Result<()> {
        let applied = self.shard.applied_seq();
        let horizon = unix_ms().saturating_sub(self.config.request_id_window.as_millis() as u64);
        let mut from = self.log.first_seq();
        let mut replayed = 0usize;
        loop {
            let records = self.log.read(from, REPLAY_CHUNK, 64 * 1024 * 1024)?;
            let Some(last) = records.last() else { break };
            from = last.seq + 1;
            for r in records.iter().filter(|r| r.unix_ms >= horizon) {
                self.remember(r, &written_of(r, false));
            }
            let fresh: Vec<LogRecord> = records.into_iter().filter(|r| r.seq > applied).collect();
            replayed += fresh.len();
            self.apply(&fresh);
        }
        if replayed > 0 {
            tracing::info!(shard = %self.shard.key(), replayed, "log records replayed into the index");
            self.commit();
        }
        Ok(())
    }
}

fn written_of(record: &LogRecord, duplicate: bool) -> Written {
    Written {
        seq: record.seq,
        epoch: record.epoch,
        duplicate,
        upserted: record.upserts.len() as u32,
        deleted: record.deletes.len() as u32,
    }
}

/// Hash of a batch's content (to tell a retry from a reuse of its id).
fn batch_hash(upserts: &[Document], deletes: &[String]) -> u64 {
    let mut h = Xxh3::new();
    for d in upserts {
        h.update(&d.encode_to_vec());
    }
    h.update(&[0xff]);
    for id in deletes {
        h.update(id.as_bytes());
        h.update(&[0]);
    }
    h.digest()
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
