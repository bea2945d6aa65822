//! Finding the sample data (`data/` of the repository: the tldr pages and
//! the synthetic event logs) from wherever `tandem dev` is started.

use std::path::{Path, PathBuf};

/// The file whose presence marks a sample-data directory.
const MARKER: &str = "tldr_pages/docs.jsonl.gz";

/// The directory holding `data/`, looked for in this order: `--sample-data
/// DIR` or `TANDEM_SAMPLE_DATA` (the `data` directory itself), `./data`,
/// and `data/` beside the running binary or up to three levels above it
/// (`target/release/tandem` in a checkout). The error names every place
/// it looked.
pub fn locate(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(dir) = given {
        candidates.push(dir.to_path_buf());
    } else {
        if let Ok(dir) = std::env::current_dir() {
            candidates.push(dir.join("data"));
        }
        if let Some(exe_dir) = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(Path::to_path_buf))
        {
            candidates.extend(exe_dir.ancestors().take(4).map(|d| d.join("data")));
        }
    }
    for data in &candidates {
        if data.join(MARKER).is_file() {
            let root = data.parent().unwrap_or(Path::new(".")).to_path_buf();
            return Ok(if root.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                root
            });
        }
    }
    let looked = candidates
        .iter()
        .map(|c| format!("  {}", c.display()))
        .collect::<Vec<_>>()
        .join("\n");
    anyhow::bail!(
        "sample data not found (a directory holding {MARKER}); looked in:\n{looked}\n\
         pass --sample-data DIR (or set TANDEM_SAMPLE_DATA) to the repository's data/ directory"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_directory_is_used_and_a_wrong_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("tldr_pages")).unwrap();
        let err = locate(Some(&data)).unwrap_err().to_string();
        assert!(err.contains(&data.display().to_string()), "{err}");
        std::fs::write(data.join(MARKER), b"").unwrap();
        assert_eq!(locate(Some(&data)).unwrap(), dir.path());
    }
}
