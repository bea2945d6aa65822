//! The usage event log that models are trained from.
//!
//! # Format
//!
//! A log is UTF-8 text with one JSON object per line (JSON lines), optionally
//! gzip-compressed (readers detect gzip by its magic bytes, writers compress
//! when the file name ends in `.gz`). Every object has a `"type"`:
//!
//! **search**: a query was run and a result list shown.
//!
//! ```json
//! {"type":"search","ts":1767225600,"session":"s1","query":"extract tar archive","shown":["en/common/tar","en/linux/atool"]}
//! ```
//!
//! **click**: the user opened one of the shown results.
//!
//! ```json
//! {"type":"click","ts":1767225607,"session":"s1","query":"extract tar archive","doc":"en/common/tar","rank":1}
//! ```
//!
//! Fields:
//! - `ts`: Unix time in seconds (UTC). Logs should be in time order; training
//!   sorts by `ts` (stably) before joining clicks to searches.
//! - `session`: an opaque, non-empty id grouping one user's consecutive
//!   actions. A click belongs to the latest earlier search of the same
//!   session with the same (normalised) query.
//! - `query`: the query as the user typed it (not normalised; may be empty).
//! - `shown`: document ids in the order shown, best first (may be empty).
//! - `doc`, `rank`: the clicked document and its 1-based position in the
//!   `shown` list of its search (`rank` >= 1).
//!
//! Unknown fields are ignored, so producers may add context (device, latency)
//! without breaking training. Blank lines are allowed and carry no event.
//!
//! Reading skips nothing silently: a line that is not valid JSON, lacks a
//! field, has an unknown `type`, an empty `session` or `doc`, or a `rank` of 0
//! fails the whole read with its 1-based line number.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use serde::{Deserialize, Serialize};

/// One line of the event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Event {
    /// A query was run and results were shown.
    Search(SearchEvent),
    /// A shown result was clicked.
    Click(ClickEvent),
}

/// A query and the result list it showed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchEvent {
    /// Unix time in seconds.
    pub ts: u64,
    /// The user session this search belongs to.
    pub session: String,
    /// The query as typed.
    pub query: String,
    /// Document ids in display order, best first.
    pub shown: Vec<String>,
}

/// A click on one of the results of an earlier search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClickEvent {
    /// Unix time in seconds.
    pub ts: u64,
    /// The user session this click belongs to.
    pub session: String,
    /// The query of the search whose results were clicked.
    pub query: String,
    /// The clicked document id.
    pub doc: String,
    /// 1-based position of `doc` in that search's `shown` list.
    pub rank: u32,
}

impl Event {
    /// The event's Unix time in seconds.
    pub fn ts(&self) -> u64 {
        match self {
            Event::Search(s) => s.ts,
            Event::Click(c) => c.ts,
        }
    }

    /// The session the event belongs to.
    pub fn session(&self) -> &str {
        match self {
            Event::Search(s) => &s.session,
            Event::Click(c) => &c.session,
        }
    }

    /// The query as typed.
    pub fn query(&self) -> &str {
        match self {
            Event::Search(s) => &s.query,
            Event::Click(c) => &c.query,
        }
    }

    /// Checks the constraints that JSON typing alone cannot express.
    fn validate(&self) -> Result<(), String> {
        if self.session().is_empty() {
            return Err("\"session\" is empty".to_string());
        }
        if let Event::Click(c) = self {
            if c.doc.is_empty() {
                return Err("click \"doc\" is empty".to_string());
            }
            if c.rank == 0 {
                return Err("click \"rank\" is 0; ranks are 1-based".to_string());
            }
        }
        Ok(())
    }
}

/// Why an event log could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum EventLogError {
    /// The file could not be opened or created.
    #[error("{path}: {error}")]
    File {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        error: io::Error,
    },
    /// Reading failed at a line (I/O error, invalid UTF-8, corrupt gzip).
    #[error("line {line}: cannot read: {error}")]
    Read {
        /// 1-based line number.
        line: usize,
        /// The underlying error.
        error: io::Error,
    },
    /// A line is not a well-formed event.
    #[error("line {line}: not a valid event: {error}")]
    Parse {
        /// 1-based line number.
        line: usize,
        /// What serde_json objected to.
        error: serde_json::Error,
    },
    /// A line parsed but breaks a rule of the format.
    #[error("line {line}: invalid event: {reason}")]
    Invalid {
        /// 1-based line number.
        line: usize,
        /// Which rule.
        reason: String,
    },
    /// Writing failed.
    #[error("cannot write events: {0}")]
    Write(io::Error),
}

/// Reads a whole event log from plain or gzip-compressed JSON lines.
///
/// Fails on the first bad line, naming it (see the module docs).
pub fn read_events<R: Read>(reader: R) -> Result<Vec<Event>, EventLogError> {
    Ok(read_with(reader, false)?.0)
}

/// Like [`read_events`], but a line that is not a valid event is skipped
/// and counted instead of failing the read: for logs a crash may have
/// torn (a router's events file cut mid-line).
pub fn read_events_skipping<R: Read>(reader: R) -> Result<(Vec<Event>, usize), EventLogError> {
    read_with(reader, true)
}

fn read_with<R: Read>(reader: R, skip_bad: bool) -> Result<(Vec<Event>, usize), EventLogError> {
    let mut buffered = BufReader::new(reader);
    let is_gzip = buffered
        .fill_buf()
        .map_err(|error| EventLogError::Read { line: 1, error })?
        .starts_with(&[0x1f, 0x8b]);
    if is_gzip {
        read_lines(BufReader::new(MultiGzDecoder::new(buffered)), skip_bad)
    } else {
        read_lines(buffered, skip_bad)
    }
}

/// Reads an event log file (plain or gzip-compressed).
pub fn read_events_file(path: &Path) -> Result<Vec<Event>, EventLogError> {
    let file = File::open(path).map_err(|error| EventLogError::File {
        path: path.to_path_buf(),
        error,
    })?;
    read_events(file)
}

fn read_lines<R: BufRead>(
    mut reader: R,
    skip_bad: bool,
) -> Result<(Vec<Event>, usize), EventLogError> {
    let (mut events, mut skipped) = (Vec::new(), 0);
    let mut buf = String::new();
    let mut line = 0usize;
    loop {
        line += 1;
        buf.clear();
        let n = reader
            .read_line(&mut buf)
            .map_err(|error| EventLogError::Read { line, error })?;
        if n == 0 {
            return Ok((events, skipped));
        }
        let text = buf.trim();
        if text.is_empty() {
            continue;
        }
        let parsed = serde_json::from_str::<Event>(text)
            .map_err(|error| EventLogError::Parse { line, error })
            .and_then(|event| {
                event
                    .validate()
                    .map(|()| event)
                    .map_err(|reason| EventLogError::Invalid { line, reason })
            });
        match parsed {
            Ok(event) => events.push(event),
            Err(_) if skip_bad => skipped += 1,
            Err(e) => return Err(e),
        }
    }
}

/// Writes events as JSON lines to `writer`.
pub fn write_events<W: Write>(writer: W, events: &[Event]) -> Result<(), EventLogError> {
    let mut out = BufWriter::new(writer);
    for event in events {
        serde_json::to_writer(&mut out, event)
            .map_err(|e| EventLogError::Write(io::Error::other(e)))?;
        out.write_all(b"\n").map_err(EventLogError::Write)?;
    }
    out.flush().map_err(EventLogError::Write)
}

/// Writes an event log file, gzip-compressed when `path` ends in `.gz`.
///
/// The file appears atomically (written to a temporary name, then renamed), so
/// a reader never sees half a log. Gzip output is deterministic (no timestamp
/// in the header), so the same events give the same bytes.
pub fn write_events_file(path: &Path, events: &[Event]) -> Result<(), EventLogError> {
    let file_err = |error| EventLogError::File {
        path: path.to_path_buf(),
        error,
    };
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp_name);
    let file = File::create(&tmp).map_err(file_err)?;
    let gz = path.extension().is_some_and(|e| e == "gz");
    let written = if gz {
        let mut enc = GzEncoder::new(file, Compression::best());
        write_events(&mut enc, events)
            .and_then(|()| enc.finish().map_err(EventLogError::Write))
            .and_then(|f| f.sync_all().map_err(EventLogError::Write))
    } else {
        let mut f = file;
        write_events(&mut f, events).and_then(|()| f.sync_all().map_err(EventLogError::Write))
    };
    let result = written.and_then(|()| std::fs::rename(&tmp, path).map_err(file_err));
    if result.is_err() {
        // Best effort: do not leave a half-written temporary file behind.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Event> {
        vec![
            Event::Search(SearchEvent {
                ts: 10,
                session: "s1".into(),
                query: "extract tar archive".into(),
                shown: vec!["en/common/tar".into(), "en/linux/atool".into()],
            }),
            Event::Click(ClickEvent {
                ts: 12,
                session: "s1".into(),
                query: "extract tar archive".into(),
                doc: "en/common/tar".into(),
                rank: 1,
            }),
        ]
    }

    #[test]
    fn documented_examples_parse() {
        let log = r#"{"type":"search","ts":1767225600,"session":"s1","query":"extract tar archive","shown":["en/common/tar","en/linux/atool"]}

{"type":"click","ts":1767225607,"session":"s1","query":"extract tar archive","doc":"en/common/tar","rank":1,"device":"phone"}
"#;
        let events = read_events(log.as_bytes()).expect("valid log");
        assert_eq!(events.len(), 2);
        assert!(matches!(&events[1], Event::Click(c) if c.rank == 1 && c.doc == "en/common/tar"));
    }

    #[test]
    fn round_trips_plain_and_gzip() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["log.jsonl", "log.jsonl.gz"] {
            let path = dir.path().join(name);
            write_events_file(&path, &sample()).expect("write");
            assert_eq!(read_events_file(&path).expect("read"), sample(), "{name}");
        }
        let gz = std::fs::read(dir.path().join("log.jsonl.gz")).expect("read gz");
        assert_eq!(&gz[..2], &[0x1f, 0x8b]);
        // Nothing temporary is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 2);
    }

    #[test]
    fn bad_lines_fail_with_their_line_number() {
        let good = r#"{"type":"search","ts":1,"session":"s","query":"q","shown":[]}"#;
        let cases = [
            ("not json", "not a valid event"),
            (
                r#"{"type":"search","ts":1,"session":"s","query":"q"}"#,
                "shown",
            ),
            (
                r#"{"type":"view","ts":1,"session":"s","query":"q"}"#,
                "view",
            ),
            (
                r#"{"type":"click","ts":1,"session":"s","query":"q","doc":"d","rank":0}"#,
                "rank",
            ),
            (
                r#"{"type":"click","ts":1,"session":"","query":"q","doc":"d","rank":1}"#,
                "session",
            ),
            (
                r#"{"type":"click","ts":-1,"session":"s","query":"q","doc":"d","rank":1}"#,
                "line 3",
            ),
        ];
        for (bad, expect) in cases {
            let log = format!("{good}\n{good}\n{bad}\n{good}\n");
            let err = read_events(log.as_bytes()).expect_err(bad).to_string();
            assert!(err.starts_with("line 3:"), "{err}");
            assert!(err.contains(expect), "{err} should mention {expect}");
        }
    }

    #[test]
    fn invalid_utf8_and_truncated_gzip_are_errors() {
        let mut bytes =
            br#"{"type":"search","ts":1,"session":"s","query":"q","shown":[]}"#.to_vec();
        bytes.extend_from_slice(b"\n\xff\xfe\n");
        let err = read_events(&bytes[..]).expect_err("invalid utf-8");
        assert!(err.to_string().starts_with("line 2:"), "{err}");

        let mut gz = Vec::new();
        {
            let mut enc = GzEncoder::new(&mut gz, Compression::default());
            write_events(&mut enc, &sample()).expect("write");
            enc.finish().expect("finish");
        }
        let cut = &gz[..gz.len() / 2];
        assert!(read_events(cut).is_err());
    }
}
