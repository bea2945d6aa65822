//! Files that hold secrets (tokens, keys, a topology naming them): written
//! readable by their owner only, atomically.

use std::io::Write;
use std::path::Path;

use anyhow::Context as _;

/// Writes `contents` to `path` with mode 0600 (on Unix), through a
/// temporary file renamed into place, so a reader never sees half a file
/// and the secret is never readable by others, not even for a moment.
pub fn write(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp-secret");
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
