//! Files that hold secrets (tokens, keys, a topology naming them): written
//! readable by their owner only, atomically.

use std::io::Write;
use std::path::Path;

use anyhow::Context as _;

/// The environment variable an admin token may come from.
pub const ADMIN_TOKEN_ENV: &str = "TANDEM_ADMIN_TOKEN";

/// The admin token: the contents of `file` (trimmed; unreadable or empty
/// is an error, not "no token"), else [`ADMIN_TOKEN_ENV`], else none.
/// Never a command-line value: arguments are visible to every user of the
/// machine (`ps`).
pub fn admin_token(file: Option<&Path>) -> anyhow::Result<Option<String>> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the admin token file {}", path.display()))?;
        let token = text.trim();
        anyhow::ensure!(
            !token.is_empty(),
            "the admin token file {} is empty",
            path.display()
        );
        return Ok(Some(token.to_string()));
    }
    Ok(std::env::var(ADMIN_TOKEN_ENV)
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty()))
}

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
