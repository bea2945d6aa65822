//! Taking name resolution away from a running cluster, and giving it back:
//! the cluster's processes resolve their peers' names through a hosts file
//! (`--hosts-file`, read at every lookup; see `tandem_common::resolve`),
//! which the `dns-failure` drill empties and then restores.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// What the emptied file says while the drill holds it.
const EMPTIED: &str =
    "# Emptied by `tandem drill dns-failure`: every lookup fails until it is restored.\n";

/// A hosts file emptied by the drill, with what it said before.
#[derive(Debug)]
pub struct Emptied {
    /// The file.
    pub path: PathBuf,
    saved: Vec<u8>,
}

/// Empties the hosts file at `path`; what it said is kept to restore.
pub fn empty(path: &Path) -> anyhow::Result<Emptied> {
    let saved = std::fs::read(path)
        .with_context(|| format!("cannot read the hosts file {}", path.display()))?;
    replace(path, EMPTIED.as_bytes())?;
    Ok(Emptied {
        path: path.to_path_buf(),
        saved,
    })
}

/// Puts back what the file said.
pub fn restore(emptied: Emptied) -> anyhow::Result<()> {
    replace(&emptied.path, &emptied.saved)
}

/// Replaces the file's content at once (a reader sees the old or the new
/// file, never half of one).
fn replace(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let temporary = path.with_extension("drill-tmp");
    std::fs::write(&temporary, bytes)
        .and_then(|()| std::fs::rename(&temporary, path))
        .with_context(|| format!("cannot rewrite the hosts file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emptied_then_restored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        std::fs::write(&path, "127.0.0.1 localhost\n").unwrap();
        let emptied = empty(&path).unwrap();
        let now = std::fs::read_to_string(&path).unwrap();
        assert!(!now.contains("localhost"), "{now}");
        restore(emptied).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "127.0.0.1 localhost\n"
        );
        assert!(empty(&dir.path().join("none")).is_err());
    }
}
