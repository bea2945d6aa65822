//! What a starting node does with a shard directory it cannot use.
//!
//! - **Unfinished**: a directory without `tandem-shard.json` is a creation
//!   that a crash interrupted (the metadata is written last, fsynced with
//!   its directory). It holds nothing acknowledged: it is removed, and the
//!   next create (a write, the catalog, a bootstrap) starts over.
//! - **Corrupt**: a shard whose files do not open for a reason other than
//!   the machine's state (a full file table, a permission) is moved aside
//!   to `<data_dir>/quarantine/<tenant>-<shard>-<unix ms>/`, with an ERROR
//!   line naming where, and marked failed (NOT_SERVING; UNAVAILABLE, so
//!   routers read another replica). A follower of it is bootstrapped again
//!   from a snapshot, a create makes it anew, and an operator keeps the
//!   files to look at.

use std::path::{Path, PathBuf};

use crate::shard::{ShardKey, ShardMeta};

/// Whether `dir` is a shard whose creation never finished.
pub fn is_unfinished(dir: &Path) -> bool {
    !dir.join(ShardMeta::FILE).exists()
}

/// Whether opening failed because of the machine, not the files: out of
/// file handles or memory, or not allowed to read. Such a shard is left in
/// place (failed, tried again later), never quarantined.
pub fn is_transient(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        let io = cause.downcast_ref::<std::io::Error>().or_else(|| {
            cause
                .downcast_ref::<tantivy::TantivyError>()
                .and_then(|t| match t {
                    tantivy::TantivyError::IoError(e) => Some(&**e),
                    _ => None,
                })
        });
        io.is_some_and(|e| {
            e.kind() == std::io::ErrorKind::PermissionDenied
                || e.kind() == std::io::ErrorKind::OutOfMemory
                // EMFILE, ENFILE: no file handle left.
                || matches!(e.raw_os_error(), Some(23 | 24))
        })
    })
}

/// Moves `key`'s directory `dir` under `<data_dir>/quarantine/` and
/// returns where it went.
pub fn quarantine(data_dir: &Path, key: &ShardKey, dir: &Path) -> std::io::Result<PathBuf> {
    let root = data_dir.join("quarantine");
    std::fs::create_dir_all(&root)?;
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let to = root.join(format!("{}-{}-{millis}", key.tenant, key.shard));
    std::fs::rename(dir, &to)?;
    crate::shard::sync_dir(&root)?;
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machines_state_is_transient_the_files_are_not() {
        let emfile = anyhow::Error::from(std::io::Error::from_raw_os_error(24));
        assert!(is_transient(&emfile.context("cannot open index")));
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert!(is_transient(&anyhow::Error::from(denied)));
        let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert!(!is_transient(&anyhow::Error::from(missing)));
        assert!(!is_transient(&anyhow::anyhow!("corrupt sequence number")));
    }

    #[test]
    fn a_quarantined_shard_is_moved_aside_whole() {
        let data = tempfile::tempdir().unwrap();
        let key = ShardKey {
            tenant: "t".into(),
            shard: 3,
        };
        let dir = key.dir(data.path());
        std::fs::create_dir_all(dir.join("index")).unwrap();
        std::fs::write(dir.join("index/meta.json"), "garbage").unwrap();
        assert!(is_unfinished(&dir));
        let to = quarantine(data.path(), &key, &dir).unwrap();
        assert!(!dir.exists());
        assert!(to.starts_with(data.path().join("quarantine")));
        assert_eq!(
            std::fs::read_to_string(to.join("index/meta.json")).unwrap(),
            "garbage"
        );
    }
}
