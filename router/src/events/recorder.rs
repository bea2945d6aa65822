//! Recording usage events without slowing a search.
//!
//! A search or click hands its event to [`Recorder::record`], which only
//! tries to put it in a bounded channel: when the channel is full the
//! event is dropped and counted (`router_events_dropped_total`), never the
//! call. One task drains the channel in batches and appends JSON lines to
//! `<events dir>/open/<router>-<ms>.jsonl`, flushing each batch; every
//! `rotate` the file moves to `<events dir>/ready/`, where
//! [`crate::events::ship`] picks it up. A file left in `open/` by a crash
//! is moved to `ready/` at the next start.
//!
//! A line is an event of the model-node's log format (`type`, `ts`,
//! `session`, `query`, `shown` / `doc`, `rank`) with the tenant, region and
//! offset added; the session is the search id's nonce (16 hex digits).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// One event line.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Record {
    /// A search served by this router.
    Search {
        /// The tenant.
        tenant: Arc<str>,
        /// Unix seconds.
        ts: u64,
        /// The search's session: its search id's nonce.
        session: String,
        /// The query (normalised by the writer, off the search's path).
        query: String,
        /// Ids shown, best first (the signed part of the list).
        shown: Vec<String>,
        /// The list's offset: `shown[i]` was at position `offset + i + 1`.
        offset: u32,
        /// The region that served it.
        region: Arc<str>,
    },
    /// A click accepted by this router.
    Click {
        /// The tenant.
        tenant: Arc<str>,
        /// Unix seconds.
        ts: u64,
        /// The session of the search clicked.
        session: String,
        /// Left empty: training takes the query from the search.
        query: String,
        /// The clicked document.
        doc: String,
        /// Its 1-based rank in the list shown (position minus offset).
        rank: u32,
        /// The region whose router took the click.
        region: Arc<str>,
    },
}

/// How often the writer takes the channel's events to disk: what a
/// crash loses at most, beside the events in the channel.
const WRITE_EVERY: Duration = Duration::from_millis(100);

enum Msg {
    Event(Record),
    /// Close the current file into `ready/` and answer.
    Rotate(oneshot::Sender<()>),
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Msg>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Msg")
    }
}

/// `<dir>/open` and `<dir>/ready`.
pub(crate) fn subdirs(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("open"), dir.join("ready"))
}

/// Unix milliseconds now.
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Recorder {
    /// Starts recording into `dir` (created if missing; leftovers of a
    /// crash are readied for shipping) with room for `capacity` events in
    /// flight, closing a file every `rotate`.
    pub fn start(
        dir: &Path,
        router_id: &str,
        capacity: usize,
        rotate: Duration,
    ) -> anyhow::Result<Recorder> {
        let (open, ready) = subdirs(dir);
        std::fs::create_dir_all(&open)?;
        std::fs::create_dir_all(&ready)?;
        for entry in std::fs::read_dir(&open)? {
            let path = entry?.path();
            if let Some(name) = path.file_name() {
                std::fs::rename(&path, ready.join(name))?;
            }
        }
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let writer = Writer {
            open,
            ready,
            router_id: router_id.to_string(),
            file: None,
        };
        tokio::spawn(writer.run(rx, rotate));
        Ok(Recorder { tx })
    }

    /// Hands an event to the writer, or drops and counts it when the
    /// buffer is full.
    pub fn record(&self, record: Record) {
        let kind = match &record {
            Record::Search { .. } => "search",
            Record::Click { .. } => "click",
        };
        match self.tx.try_send(Msg::Event(record)) {
            Ok(()) => metrics::counter!("router_events_total", "kind" => kind).increment(1),
            Err(_) => metrics::counter!("router_events_dropped_total").increment(1),
        }
    }

    /// Closes the current file into `ready/` (at shutdown, or on demand),
    /// after every event handed over before this call.
    pub async fn rotate(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Rotate(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

struct OpenFile {
    path: PathBuf,
    out: BufWriter<File>,
    opened: Instant,
}

struct Writer {
    open: PathBuf,
    ready: PathBuf,
    router_id: String,
    file: Option<OpenFile>,
}

impl Writer {
    /// Every [`WRITE_EVERY`], takes what the channel holds and writes it
    /// as one batch (so the writer wakes a few times a second, however
    /// many searches there are), and closes the file when it is due.
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>, rotate: Duration) {
        let mut tick = tokio::time::interval(WRITE_EVERY.min(rotate));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let mut batch = Vec::new();
            let closed = loop {
                match rx.try_recv() {
                    Ok(msg) => batch.push(msg),
                    Err(mpsc::error::TryRecvError::Empty) => break false,
                    Err(mpsc::error::TryRecvError::Disconnected) => break true,
                }
            };
            if !batch.is_empty() {
                self = self.write_batch(batch).await;
            }
            let due = self
                .file
                .as_ref()
                .is_some_and(|f| f.opened.elapsed() >= rotate);
            if closed || due {
                self = self.blocking(|w| w.close()).await;
            }
            if closed {
                return;
            }
        }
    }

    async fn write_batch(self, batch: Vec<Msg>) -> Self {
        let mut lines = Vec::with_capacity(batch.len() * 256);
        let mut rotations = Vec::new();
        for msg in batch {
            match msg {
                Msg::Event(mut record) => {
                    if let Record::Search { query, .. } = &mut record {
                        *query = tandem_common::normalize::normalize(query);
                    }
                    if serde_json::to_writer(&mut lines, &record).is_ok() {
                        lines.push(b'\n');
                    }
                }
                Msg::Rotate(done) => rotations.push(done),
            }
        }
        let rotate = !rotations.is_empty();
        let this = self
            .blocking(move |w| {
                if !lines.is_empty() {
                    w.append(&lines);
                }
                if rotate {
                    w.close();
                }
            })
            .await;
        for done in rotations {
            let _ = done.send(());
        }
        this
    }

    /// Runs file work on the blocking pool and gets the writer back.
    async fn blocking(mut self, work: impl FnOnce(&mut Writer) + Send + 'static) -> Self {
        match tokio::task::spawn_blocking(move || {
            work(&mut self);
            self
        })
        .await
        {
            Ok(w) => w,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    fn append(&mut self, lines: &[u8]) {
        if self.file.is_none() {
            let path = self
                .open
                .join(format!("{}-{}.jsonl", self.router_id, unix_ms()));
            match OpenOptions::new().create(true).append(true).open(&path) {
                Ok(f) => {
                    self.file = Some(OpenFile {
                        path,
                        out: BufWriter::new(f),
                        opened: Instant::now(),
                    })
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot open an events file; events dropped");
                    metrics::counter!("router_events_dropped_total").increment(1);
                    return;
                }
            }
        }
        if let Some(f) = self.file.as_mut() {
            if let Err(e) = f.out.write_all(lines).and_then(|()| f.out.flush()) {
                tracing::warn!(error = %e, "cannot write events");
                metrics::counter!("router_events_dropped_total").increment(1);
            }
        }
    }

    /// Flushes the current file and moves it to `ready/`.
    fn close(&mut self) {
        let Some(mut f) = self.file.take() else {
            return;
        };
        let _ = f.out.flush();
        drop(f.out);
        if let Some(name) = f.path.file_name() {
            if let Err(e) = std::fs::rename(&f.path, self.ready.join(name)) {
                tracing::warn!(error = %e, "cannot ready an events file");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search(n: u64) -> Record {
        Record::Search {
            tenant: "t1".into(),
            ts: n,
            session: format!("s{n}"),
            query: "q".into(),
            shown: vec!["a".into()],
            offset: 0,
            region: "r1".into(),
        }
    }

    fn lines_in(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).expect("dir") {
            let text = std::fs::read_to_string(e.expect("entry").path()).expect("read");
            out.extend(text.lines().map(str::to_string));
        }
        out
    }

    #[tokio::test]
    async fn events_reach_a_ready_file_on_rotate_and_crash_leftovers_are_readied() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (open, ready) = subdirs(dir.path());
        std::fs::create_dir_all(&open).expect("mkdir");
        std::fs::write(open.join("old-1.jsonl"), "{\"left\":1}\n").expect("write");
        let rec = Recorder::start(dir.path(), "r-1", 100, Duration::from_secs(3600)).expect("s");
        assert_eq!(
            lines_in(&ready),
            ["{\"left\":1}"],
            "a crash's file is readied"
        );
        for n in 0..3 {
            rec.record(search(n));
        }
        rec.rotate().await;
        let lines = lines_in(&ready);
        assert_eq!(lines.len(), 4);
        let searches = lines
            .iter()
            .filter(|l| l.starts_with("{\"type\":\"search\",\"tenant\":\"t1\""))
            .count();
        assert_eq!(searches, 3);
        assert_eq!(lines_in(&open).len(), 0);
    }

    #[tokio::test]
    async fn a_full_buffer_drops_events_not_calls() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rec = Recorder::start(dir.path(), "r-1", 2, Duration::from_secs(3600)).expect("s");
        // The writer task has not run yet (current-thread runtime): the
        // channel holds two, the rest are dropped at once.
        for n in 0..10 {
            rec.record(search(n));
        }
        rec.rotate().await;
        let (_, ready) = subdirs(dir.path());
        assert_eq!(lines_in(&ready).len(), 2);
    }
}
