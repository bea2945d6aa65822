//! Hot reload of the catalog file.
//!
//! The file is polled (every `catalog_poll_ms`) rather than watched with
//! inotify: polling works the same on every file system (including editors
//! that replace the file and config maps that swap symlinks) and needs no
//! extra dependency. A poll costs one `stat` while the file's size, mtime
//! and inode stay the same; when they change, the file is read and hashed,
//! and parsed only if its bytes differ from the catalog in force (a
//! 100,000-tenant catalog takes over a second to parse). A change takes effect
//! only if the new file parses, validates and still names this router's
//! region; otherwise the refusal is logged once and reported by the admin
//! status, and the last good catalog keeps serving.

use std::path::Path;
use std::sync::Arc;

use crate::catalog::Reload;
use crate::config::ms;
use crate::state::RouterState;

/// Re-reads the catalog file now (the embedded default never changes).
pub fn reload_now(state: &RouterState) -> Result<Reload, String> {
    let Some(path) = &state.config.catalog else {
        let version = state.catalog.current().version().into();
        return Ok(Reload::Unchanged { version });
    };
    apply(state, path, read_catalog(state, path))
}

/// The catalog's bytes: the file, with the keys file's tables if the
/// router has one.
fn read_catalog(state: &RouterState, path: &Path) -> Result<Vec<u8>, String> {
    crate::catalog::Catalog::read_source(path, state.config.catalog_keys.as_deref())
        .map_err(|e| e.to_string())
}

/// Puts the catalog file's `bytes` in force if they are new and valid, and
/// logs and reports the outcome.
fn apply(
    state: &RouterState,
    path: &Path,
    bytes: Result<Vec<u8>, String>,
) -> Result<Reload, String> {
    let result = bytes.and_then(|bytes| {
        let region = &state.region;
        state
            .catalog
            .reload_checked(&bytes, |candidate| match candidate.region(region) {
                Some(_) => Ok(()),
                None => Err(format!(
                    "it no longer names this router's region {region:?}"
                )),
            })
            .map_err(|e| format!("catalog {}: {e}", path.display()))
    });
    match &result {
        Ok(Reload::Replaced { previous, current }) => {
            tracing::info!(%previous, %current, "catalog reloaded");
            metrics::counter!("router_catalog_reloads_total", "result" => "replaced").increment(1);
            state.catalog_error.store(Arc::new(String::new()));
            state.catalog_changed();
        }
        Ok(Reload::Unchanged { .. }) => {
            state.catalog_error.store(Arc::new(String::new()));
        }
        Err(error) => {
            if **state.catalog_error.load() != *error {
                tracing::error!(%error, "catalog refused; the previous catalog stays in force");
                metrics::counter!("router_catalog_reloads_total", "result" => "refused")
                    .increment(1);
            }
            state.catalog_error.store(Arc::new(error.clone()));
        }
    }
    result
}

/// Polls the catalog file until the process ends.
pub async fn watch_catalog(state: Arc<RouterState>) {
    let Some(path) = state.config.catalog.clone() else {
        return;
    };
    let mut tick = tokio::time::interval(ms(state.config.catalog_poll_ms.max(50)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The file was read at start, but it may have changed since: the first
    // tick always reads it.
    // The catalog's stamp and the keys file's.
    let mut last_seen: Option<(FileStamp, Option<FileStamp>)> = None;
    loop {
        tick.tick().await;
        let stamp = FileStamp::of(&path).map(|catalog| {
            let keys = state.config.catalog_keys.as_deref().and_then(FileStamp::of);
            (catalog, keys)
        });
        if stamp.is_some() && stamp == last_seen {
            continue;
        }
        let state = state.clone();
        let file = path.clone();
        // File I/O and parsing (a large catalog) stay off the reactor.
        let read = tokio::task::spawn_blocking(move || {
            let bytes = read_catalog(&state, &file);
            let was_read = bytes.is_ok();
            let _ = apply(&state, &file, bytes);
            was_read
        })
        .await;
        // The stamp was taken before the read, so a change during it is not
        // missed. A file that was read (even if refused: its error is logged
        // once and stays in the admin status) is looked at again only once
        // it changes; one that could not be read is tried every poll. A
        // stamp too fresh to trust is not kept (see `FileStamp::settled`).
        if matches!(read, Ok(true)) {
            last_seen = stamp.filter(|(catalog, keys)| {
                catalog.settled() && keys.as_ref().is_none_or(FileStamp::settled)
            });
        }
    }
}

/// What `stat` says about a file: when any of it changes, the file may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    #[cfg(unix)]
    inode: u64,
}

impl FileStamp {
    /// How old a modification time must be before a stamp is trusted.
    const SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

    /// Whether the file was last modified long enough ago that a rewrite
    /// in place with the same length could not share this mtime: file
    /// systems keep mtimes in ticks of a few milliseconds (ext4) up to two
    /// seconds (FAT), and two writes within one tick look the same. A
    /// fresh file is read and hashed again at the next poll instead.
    fn settled(&self) -> bool {
        match self.modified.map(|m| m.elapsed()) {
            Some(Ok(age)) => age >= Self::SETTLE,
            // No mtime, or one in the future (clock skew): never trusted.
            _ => false,
        }
    }

    /// `None` when the file cannot be stat'ed (then it is read every poll,
    /// which reports the error).
    fn of(path: &std::path::Path) -> Option<FileStamp> {
        let meta = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            len: meta.len(),
            modified: meta.modified().ok(),
            #[cfg(unix)]
            inode: std::os::unix::fs::MetadataExt::ino(&meta),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_changes_when_the_file_is_rewritten_or_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("catalog.toml");
        assert_eq!(FileStamp::of(&path), None, "no file, no stamp");
        std::fs::write(&path, "a = 1\n").expect("write");
        let first = FileStamp::of(&path).expect("stamp");
        assert_eq!(FileStamp::of(&path), Some(first), "unchanged file");
        std::fs::write(&path, "a = 22\n").expect("rewrite");
        let rewritten = FileStamp::of(&path).expect("stamp");
        assert_ne!(rewritten, first, "new length");
        // Replaced by rename, as editors and config maps do: same length,
        // possibly the same mtime tick, but another inode.
        let other = dir.path().join("next.toml");
        std::fs::write(&other, "a = 33\n").expect("write");
        std::fs::rename(&other, &path).expect("rename");
        assert_ne!(FileStamp::of(&path), Some(rewritten), "replaced file");
    }

    #[test]
    fn only_a_stamp_old_enough_to_rule_out_a_same_tick_rewrite_is_trusted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("catalog.toml");
        std::fs::write(&path, "a = 1\n").expect("write");
        assert!(
            !FileStamp::of(&path).expect("stamp").settled(),
            "just written"
        );
        let file = std::fs::File::options()
            .write(true)
            .open(&path)
            .expect("open");
        let past = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        file.set_modified(past).expect("set mtime");
        assert!(
            FileStamp::of(&path).expect("stamp").settled(),
            "a minute old"
        );
        let future = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
        file.set_modified(future).expect("set mtime");
        assert!(
            !FileStamp::of(&path).expect("stamp").settled(),
            "from the future"
        );
    }
}
