//! Reading the sample corpus (tldr-pages, `data/tldr_pages/docs.jsonl.gz`)
//! for the synthetic event generator.
//!
//! Only what the generator needs is kept: the page id (the document users
//! want), its title and the descriptions of its examples ("Extract a tar
//! archive"), which are real task phrasings and become users' queries.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use serde::Deserialize;

/// A corpus page that users can look for.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// Document id, e.g. `en/common/tar`.
    pub id: String,
    /// The page title (the command name).
    pub title: String,
    /// Descriptions of the page's examples, in page order.
    pub examples: Vec<String>,
}

#[derive(Deserialize)]
struct RawDoc {
    id: String,
    title: String,
    lang: String,
    #[serde(default)]
    examples: Vec<RawExample>,
    #[serde(default)]
    is_alias: bool,
}

#[derive(Deserialize)]
struct RawExample {
    description: String,
}

/// Why the corpus could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    /// The file could not be opened.
    #[error("{path}: {error}")]
    Open {
        /// The corpus file.
        path: PathBuf,
        /// The underlying error.
        error: io::Error,
    },
    /// Reading or decompressing failed at a line.
    #[error("{path} line {line}: {error}")]
    Read {
        /// The corpus file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The underlying error.
        error: io::Error,
    },
    /// A line is not a corpus document.
    #[error("{path} line {line}: not a corpus document: {error}")]
    Parse {
        /// The corpus file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What serde_json objected to.
        error: serde_json::Error,
    },
}

/// Loads the pages of one language from a gzipped JSON-lines corpus.
///
/// Alias pages (redirect stubs whose only example is `tldr <other>`) and
/// examples with an empty description are left out: nobody searches for a
/// redirect. Pages come back in file order, so the result is deterministic.
pub fn load_pages(path: &Path, lang: &str) -> Result<Vec<Page>, CorpusError> {
    let file = File::open(path).map_err(|error| CorpusError::Open {
        path: path.to_path_buf(),
        error,
    })?;
    read_pages(BufReader::new(MultiGzDecoder::new(file)), lang, path)
}

/// Like [`load_pages`], from uncompressed JSON lines (`origin` names the
/// error in errors).
pub fn read_pages<R: BufRead>(
    reader: R,
    lang: &str,
    origin: &Path,
) -> Result<Vec<Page>, CorpusError> {
    let mut pages = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line_no = i + 1;
        let line = line.map_err(|error| CorpusError::Read {
            path: origin.to_path_buf(),
            line: line_no,
            error,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let doc: RawDoc = serde_json::from_str(&line).map_err(|error| CorpusError::Parse {
            path: origin.to_path_buf(),
            line: line_no,
            error,
        })?;
        if doc.lang != lang || doc.is_alias {
            continue;
        }
        let examples: Vec<String> = doc
            .examples
            .into_iter()
            .map(|e| e.description.trim().to_string())
            .filter(|d| !d.is_empty())
            .collect();
        if examples.is_empty() {
            continue;
        }
        pages.push(Page {
            id: doc.id,
            title: doc.title,
            examples,
        });
    }
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_full_pages_of_the_language() {
        let jsonl = r#"{"id":"en/common/tar","title":"tar","lang":"en","examples":[{"description":"Extract a tar archive","command":"tar xf x"},{"description":" ","command":"x"}],"is_alias":false,"body":"..."}
{"id":"en/common/gtar","title":"gtar","lang":"en","examples":[{"description":"View documentation","command":"tldr tar"}],"is_alias":true}
{"id":"es/common/tar","title":"tar","lang":"es","examples":[{"description":"Extrae un archivo","command":"tar xf x"}],"is_alias":false}
"#;
        let pages = read_pages(jsonl.as_bytes(), "en", Path::new("t")).expect("parse");
        assert_eq!(
            pages,
            vec![Page {
                id: "en/common/tar".into(),
                title: "tar".into(),
                examples: vec!["Extract a tar archive".into()],
            }]
        );
    }

    #[test]
    fn bad_line_is_an_error_with_its_number() {
        let jsonl = "{\"id\":\"a\",\"title\":\"a\",\"lang\":\"en\"}\n{oops\n";
        let err = read_pages(jsonl.as_bytes(), "en", Path::new("c.jsonl")).expect_err("bad");
        assert!(err.to_string().contains("c.jsonl line 2"), "{err}");
    }
}
