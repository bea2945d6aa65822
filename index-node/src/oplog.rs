//! A shard's operation log: every batch the shard applies, in sequence
//! order, durable before it is acknowledged.
//!
//! The log is what makes writes cheap and replication simple. A leader
//! appends a group of batches and calls `fsync` once for the group, then
//! acknowledges them; tantivy commits catch up later (see [`crate::writer`]).
//! After a crash the records after the last tantivy commit are replayed.
//! Followers pull records from their leader's log and append them to their
//! own, so a follower can become the leader with its history intact.
//!
//! On disk, a directory of segment files named by their first sequence
//! number (`00000000000000000001.tlog`). Each file starts with the 8-byte
//! header `TNDMLOG` + format version (1), then records:
//!
//! ```text
//! seq: u64 LE | len: u32 LE | crc32(seq bytes ++ payload): u32 LE | payload (LogRecord, protobuf)
//! ```
//!
//! A torn record at the end of the newest segment (a crash mid-append) is
//! cut off when the log is opened; it was never acknowledged. An empty
//! newest segment records where the sequence continues (after a bootstrap
//! from a snapshot at S, the log is one empty segment named S + 1).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use prost::Message;
use tandem_proto::v1::LogRecord;
use tokio::sync::watch;

/// File header: magic and format version.
const HEADER: &[u8; 8] = b"TNDMLOG\x01";
const RECORD_HEADER: usize = 16;
/// A segment is closed and a new one started beyond this size.
const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// One entry of a segment's sparse index every this many records.
const INDEX_EVERY: u64 = 64;
/// Largest record accepted when reading (a corrupt length must not make us
/// allocate gigabytes).
const MAX_RECORD_BYTES: u32 = 256 * 1024 * 1024;

/// The last record of the log, as followers and searches see it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tip {
    /// Sequence number of the last record (0: none ever).
    pub seq: u64,
    /// Its leader epoch (0 if the log holds no record).
    pub epoch: u64,
    /// Its wall-clock time, ms since the Unix epoch (0 if unknown).
    pub unix_ms: u64,
}

struct Segment {
    path: PathBuf,
    first_seq: u64,
    /// Last sequence number in it (`first_seq - 1` when empty).
    last_seq: u64,
    /// Bytes written and synced.
    end: u64,
    /// `(seq, offset)` of every [`INDEX_EVERY`]th record.
    index: Vec<(u64, u64)>,
    /// Wall clock of its newest record (0: none).
    last_unix_ms: u64,
    /// Wall clock of its oldest record (0: none).
    first_unix_ms: u64,
}

struct Inner {
    segments: BTreeMap<u64, Segment>,
    /// The newest segment, open for appending.
    active: File,
    tip: Tip,
}

/// See the module documentation.
pub struct OpLog {
    dir: PathBuf,
    /// The newest segment is closed once its oldest record is this old
    /// (ms), so that a slowly written shard's log can age out too.
    roll_after_ms: u64,
    inner: Mutex<Inner>,
    tip: watch::Sender<Tip>,
}

impl std::fmt::Debug for OpLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpLog").field("dir", &self.dir).finish()
    }
}

impl OpLog {
    /// Opens the log in `dir`, creating it (continuing after `base_seq`, the
    /// sequence number the index already holds) if there is none. Blocking.
    pub fn open(dir: &Path, base_seq: u64) -> anyhow::Result<OpLog> {
        Self::open_rolling(dir, base_seq, std::time::Duration::from_secs(1800))
    }

    /// [`OpLog::open`], closing the newest segment once its oldest record
    /// is `roll_after` old (besides at 64 MiB).
    pub fn open_rolling(
        dir: &Path,
        base_seq: u64,
        roll_after: std::time::Duration,
    ) -> anyhow::Result<OpLog> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut segments = BTreeMap::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let Some(first) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".tlog"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            segments.insert(first, scan(&path, first)?);
        }
        if segments.is_empty() {
            let first = base_seq + 1;
            segments.insert(first, create_segment(dir, first)?);
        }
        let newest = segments.values().next_back().expect("one segment at least");
        let active = OpenOptions::new()
            .append(true)
            .open(&newest.path)
            .with_context(|| format!("cannot open {}", newest.path.display()))?;
        let mut tip = Tip {
            seq: newest.last_seq,
            epoch: 0,
            unix_ms: newest.last_unix_ms,
        };
        if newest.last_seq >= newest.first_seq {
            if let Some(last) = read_range(newest, newest.last_seq, 1, u64::MAX)?.pop() {
                tip.epoch = last.epoch;
            }
        }
        Ok(OpLog {
            dir: dir.to_path_buf(),
            roll_after_ms: roll_after.as_millis() as u64,
            inner: Mutex::new(Inner {
                segments,
                active,
                tip,
            }),
            tip: watch::Sender::new(tip),
        })
    }

    /// The last record.
    pub fn tip(&self) -> Tip {
        *self.tip.borrow()
    }

    /// Follows the last record (for long polls).
    pub fn watch(&self) -> watch::Receiver<Tip> {
        self.tip.subscribe()
    }

    /// The oldest sequence number still held (`tip + 1` when none is).
    pub fn first_seq(&self) -> u64 {
        let inner = self.inner.lock().expect("log lock");
        inner
            .segments
            .values()
            .find(|s| s.last_seq >= s.first_seq)
            .map_or(inner.tip.seq + 1, |s| s.first_seq)
    }

    /// Bytes held on disk.
    pub fn bytes(&self) -> u64 {
        let inner = self.inner.lock().expect("log lock");
        inner.segments.values().map(|s| s.end).sum()
    }

    /// Appends `records` (sequence numbers increasing, all above the tip) and
    /// makes them durable with one `fsync`. Blocking.
    pub fn append(&self, records: &[LogRecord]) -> anyhow::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut inner = self.inner.lock().expect("log lock");
        self.roll_if_old(&mut inner, records[0].unix_ms)?;
        let mut buf = Vec::new();
        let mut offsets = Vec::with_capacity(records.len());
        let mut expected_above = inner.tip.seq;
        for r in records {
            anyhow::ensure!(
                r.seq > expected_above,
                "log record {} does not follow {}",
                r.seq,
                expected_above
            );
            expected_above = r.seq;
            offsets.push(buf.len() as u64);
            encode_record(r, &mut buf);
        }
        let base = inner.segments.values().next_back().expect("a segment").end;
        inner.active.write_all(&buf)?;
        inner.active.sync_data()?;
        let Inner {
            segments,
            active: file,
            tip,
        } = &mut *inner;
        let segment = segments.values_mut().next_back().expect("a segment");
        for (r, offset) in records.iter().zip(offsets) {
            if (r.seq - segment.first_seq).is_multiple_of(INDEX_EVERY) || segment.index.is_empty() {
                segment.index.push((r.seq, base + offset));
            }
        }
        let last = records.last().expect("not empty");
        segment.end = base + buf.len() as u64;
        if segment.last_seq < segment.first_seq {
            segment.first_unix_ms = records[0].unix_ms;
        }
        segment.last_seq = last.seq;
        segment.last_unix_ms = last.unix_ms;
        *tip = Tip {
            seq: last.seq,
            epoch: last.epoch,
            unix_ms: last.unix_ms,
        };
        if segment.end >= SEGMENT_BYTES {
            let next = create_segment(&self.dir, last.seq + 1)?;
            *file = OpenOptions::new().append(true).open(&next.path)?;
            segments.insert(next.first_seq, next);
        }
        // Published before the lock is released: whoever reads the new
        // records (under the lock) also sees the tip that includes them.
        self.tip.send_replace(*tip);
        drop(inner);
        Ok(())
    }

    /// Closes the newest segment if its oldest record is older than the
    /// roll age at `now_ms`, and starts the next one.
    fn roll_if_old(&self, inner: &mut Inner, now_ms: u64) -> anyhow::Result<()> {
        let newest = inner.segments.values().next_back().expect("a segment");
        let empty = newest.last_seq < newest.first_seq;
        if empty || newest.first_unix_ms.saturating_add(self.roll_after_ms) > now_ms {
            return Ok(());
        }
        let next = create_segment(&self.dir, newest.last_seq + 1)?;
        inner.active = OpenOptions::new().append(true).open(&next.path)?;
        inner.segments.insert(next.first_seq, next);
        Ok(())
    }

    /// Up to `max_ops` records from `from` on (fewer if `max_bytes` of
    /// payload are reached first; at least one if any). Blocking.
    pub fn read(
        &self,
        from: u64,
        max_ops: usize,
        max_bytes: u64,
    ) -> anyhow::Result<Vec<LogRecord>> {
        let views: Vec<SegmentView> = {
            let inner = self.inner.lock().expect("log lock");
            inner
                .segments
                .values()
                .filter(|s| s.last_seq >= from && s.last_seq >= s.first_seq)
                .map(SegmentView::of)
                .collect()
        };
        let mut out = Vec::new();
        let mut bytes = 0;
        for view in views {
            let want = max_ops.saturating_sub(out.len());
            if want == 0 || bytes >= max_bytes {
                break;
            }
            let records = read_view(&view, from, want, max_bytes - bytes)?;
            bytes += records.iter().map(|r| r.encoded_len() as u64).sum::<u64>();
            out.extend(records);
        }
        Ok(out)
    }

    /// The epoch of record `seq`, if the log holds it. Blocking.
    pub fn epoch_at(&self, seq: u64) -> anyhow::Result<Option<u64>> {
        Ok(self
            .read(seq, 1, u64::MAX)?
            .into_iter()
            .find(|r| r.seq == seq)
            .map(|r| r.epoch))
    }

    /// Deletes closed segments whose records are all at or below
    /// `applied_seq` (in the index) and older than `keep_after_unix_ms`.
    /// Returns the number of segments deleted. Blocking.
    pub fn trim(&self, applied_seq: u64, keep_after_unix_ms: u64) -> anyhow::Result<usize> {
        let mut inner = self.inner.lock().expect("log lock");
        let newest = *inner.segments.keys().next_back().expect("a segment");
        let doomed: Vec<u64> = inner
            .segments
            .values()
            .filter(|s| {
                s.first_seq != newest
                    && s.last_seq <= applied_seq
                    && s.last_unix_ms < keep_after_unix_ms
            })
            .map(|s| s.first_seq)
            .collect();
        for first in &doomed {
            if let Some(s) = inner.segments.remove(first) {
                std::fs::remove_file(&s.path)
                    .with_context(|| format!("cannot delete {}", s.path.display()))?;
            }
        }
        Ok(doomed.len())
    }
}

/// What a reader needs of a segment, copied out of the lock.
struct SegmentView {
    path: PathBuf,
    end: u64,
    /// Offset to start scanning from for the wanted sequence number.
    index: Vec<(u64, u64)>,
}

impl SegmentView {
    fn of(s: &Segment) -> SegmentView {
        SegmentView {
            path: s.path.clone(),
            end: s.end,
            index: s.index.clone(),
        }
    }
}

fn read_range(
    s: &Segment,
    from: u64,
    max_ops: usize,
    max_bytes: u64,
) -> anyhow::Result<Vec<LogRecord>> {
    read_view(&SegmentView::of(s), from, max_ops, max_bytes)
}

fn read_view(
    view: &SegmentView,
    from: u64,
    max_ops: usize,
    max_bytes: u64,
) -> anyhow::Result<Vec<LogRecord>> {
    let start = match view.index.partition_point(|(seq, _)| *seq <= from) {
        0 => HEADER.len() as u64,
        i => view.index[i - 1].1,
    };
    let mut file =
        File::open(&view.path).with_context(|| format!("cannot open {}", view.path.display()))?;
    file.seek(SeekFrom::Start(start))?;
    let mut reader = BufReader::with_capacity(256 * 1024, file.take(view.end - start));
    let mut out = Vec::new();
    let mut bytes = 0u64;
    while out.len() < max_ops && bytes < max_bytes {
        let Some((seq, payload)) = next_record(&mut reader)? else {
            break;
        };
        if seq < from {
            continue;
        }
        bytes += payload.len() as u64;
        let record = LogRecord::decode(payload.as_slice())
            .with_context(|| format!("corrupt record {seq} in {}", view.path.display()))?;
        out.push(record);
    }
    Ok(out)
}

/// Reads one record: `Ok(None)` at a clean end, an error on corruption.
fn next_record(reader: &mut impl Read) -> anyhow::Result<Option<(u64, Vec<u8>)>> {
    let mut header = [0u8; RECORD_HEADER];
    match reader.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let seq = u64::from_le_bytes(header[0..8].try_into().expect("8 bytes"));
    let len = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(header[12..16].try_into().expect("4 bytes"));
    anyhow::ensure!(
        len <= MAX_RECORD_BYTES,
        "record {seq}: length {len} is corrupt"
    );
    let mut payload = vec![0u8; len as usize];
    reader.read_exact(&mut payload)?;
    anyhow::ensure!(
        checksum(seq, &payload) == crc,
        "record {seq}: checksum mismatch"
    );
    Ok(Some((seq, payload)))
}

fn checksum(seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(payload);
    h.finalize()
}

fn encode_record(r: &LogRecord, buf: &mut Vec<u8>) {
    let payload = r.encode_to_vec();
    buf.extend_from_slice(&r.seq.to_le_bytes());
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&checksum(r.seq, &payload).to_le_bytes());
    buf.extend_from_slice(&payload);
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.tlog"))
}

fn create_segment(dir: &Path, first_seq: u64) -> anyhow::Result<Segment> {
    let path = segment_path(dir, first_seq);
    let mut file =
        File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(HEADER)?;
    file.sync_all()?;
    // The new name must survive a crash too.
    File::open(dir)?.sync_all()?;
    Ok(Segment {
        path,
        first_seq,
        last_seq: first_seq - 1,
        end: HEADER.len() as u64,
        index: Vec::new(),
        last_unix_ms: 0,
        first_unix_ms: 0,
    })
}

/// Reads a segment's records to build its index, cutting off a torn or
/// corrupt tail (what follows it was never acknowledged).
fn scan(path: &Path, first_seq: u64) -> anyhow::Result<Segment> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let mut header = [0u8; 8];
    file.read_exact(&mut header)
        .with_context(|| format!("{} has no header", path.display()))?;
    anyhow::ensure!(
        header[..7] == HEADER[..7],
        "{} is not a tandem log segment",
        path.display()
    );
    anyhow::ensure!(
        header[7] <= HEADER[7],
        "{} is log format {}; this version reads up to {}",
        path.display(),
        header[7],
        HEADER[7]
    );
    let mut segment = Segment {
        path: path.to_path_buf(),
        first_seq,
        last_seq: first_seq - 1,
        end: HEADER.len() as u64,
        index: Vec::new(),
        last_unix_ms: 0,
        first_unix_ms: 0,
    };
    let mut reader = BufReader::with_capacity(1024 * 1024, &mut file);
    loop {
        let offset = segment.end;
        match next_record(&mut reader) {
            Ok(Some((seq, payload))) if seq > segment.last_seq => {
                if (seq - first_seq).is_multiple_of(INDEX_EVERY) || segment.index.is_empty() {
                    segment.index.push((seq, offset));
                }
                segment.last_seq = seq;
                segment.end = offset + (RECORD_HEADER + payload.len()) as u64;
                if let Ok(r) = LogRecord::decode(payload.as_slice()) {
                    segment.last_unix_ms = r.unix_ms;
                    if segment.first_unix_ms == 0 {
                        segment.first_unix_ms = r.unix_ms;
                    }
                }
            }
            Ok(None) => break,
            Ok(Some((seq, _))) => {
                tracing::warn!(path = %path.display(), seq, "log record out of order; tail cut off");
                break;
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "torn log tail cut off");
                break;
            }
        }
    }
    drop(reader);
    file.set_len(segment.end)?;
    file.sync_all()?;
    Ok(segment)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64) -> LogRecord {
        LogRecord {
            seq,
            epoch: 1,
            deletes: vec![format!("doc-{seq}")],
            unix_ms: seq * 10,
            ..Default::default()
        }
    }

    #[test]
    fn appends_read_back_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let log = OpLog::open(dir.path(), 0).unwrap();
        assert_eq!(log.tip().seq, 0);
        log.append(&(1..=200).map(record).collect::<Vec<_>>())
            .unwrap();
        let got = log.read(150, 10, u64::MAX).unwrap();
        assert_eq!(
            got.iter().map(|r| r.seq).collect::<Vec<_>>(),
            (150..160).collect::<Vec<_>>()
        );
        drop(log);
        let log = OpLog::open(dir.path(), 0).unwrap();
        assert_eq!(
            log.tip(),
            Tip {
                seq: 200,
                epoch: 1,
                unix_ms: 2000
            }
        );
        assert_eq!(log.first_seq(), 1);
        assert_eq!(log.epoch_at(7).unwrap(), Some(1));
        assert!(
            log.append(&[record(200)]).is_err(),
            "sequence must increase"
        );
    }

    #[test]
    fn a_torn_tail_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let log = OpLog::open(dir.path(), 41).unwrap();
        log.append(&[record(42), record(43)]).unwrap();
        drop(log);
        let path = segment_path(dir.path(), 42);
        let len = std::fs::metadata(&path).unwrap().len();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 3).unwrap();
        let log = OpLog::open(dir.path(), 0).unwrap();
        assert_eq!(log.tip().seq, 42);
        log.append(&[record(43)]).unwrap();
        assert_eq!(log.read(42, 10, u64::MAX).unwrap().len(), 2);
    }

    /// A slowly written log rolls by age, so old records can be trimmed.
    #[test]
    fn an_old_segment_is_rolled_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let log = OpLog::open_rolling(dir.path(), 0, std::time::Duration::ZERO).unwrap();
        log.append(&[record(1)]).unwrap();
        log.append(&[record(2)]).unwrap();
        assert_eq!(
            log.trim(2, 15).unwrap(),
            1,
            "segment of record 1 (10 ms) is closed and old"
        );
        assert_eq!(log.first_seq(), 2);
        assert_eq!(log.read(1, 10, u64::MAX).unwrap().len(), 1);
        drop(log);
        let log = OpLog::open(dir.path(), 0).unwrap();
        assert_eq!((log.first_seq(), log.tip().seq), (2, 2));
    }

    /// A node reads the log format it writes and older ones; a segment of
    /// a newer format is refused with a clear error, never misread.
    #[test]
    fn a_segment_of_a_newer_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(OpLog::open(dir.path(), 0).unwrap());
        let path = segment_path(dir.path(), 1);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[7] = HEADER[7] + 1;
        std::fs::write(&path, bytes).unwrap();
        let err = OpLog::open(dir.path(), 0).unwrap_err().to_string();
        assert!(err.contains("log format 2"), "{err}");
    }

    #[test]
    fn an_empty_log_continues_after_its_base() {
        let dir = tempfile::tempdir().unwrap();
        let log = OpLog::open(dir.path(), 99).unwrap();
        assert_eq!((log.tip().seq, log.first_seq()), (99, 100));
        assert!(log.read(1, 10, u64::MAX).unwrap().is_empty());
    }
}
