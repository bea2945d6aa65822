//! Query files for the load generator: JSON lines with a `text` or `query`
//! field (like `data/nq_open_queries/queries.jsonl`), or plain lines.

use std::path::Path;

use anyhow::{bail, Context};
use serde::Deserialize;

/// The questions of `data/nq_open_queries` (NQ-Open, CC BY-SA 3.0; see
/// its PROVENANCE.md), built in: the default workload, natural-language
/// questions as people ask them.
pub fn natural_language_queries() -> Vec<String> {
    parse_queries(include_str!("../../data/nq_open_queries/queries.jsonl"))
}

/// Reads the queries in `path` (see [`parse_queries`]); an error if the
/// file cannot be read or holds no query.
pub fn read_queries(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read queries from {}", path.display()))?;
    let queries = parse_queries(&text);
    if queries.is_empty() {
        bail!("{} holds no queries", path.display());
    }
    Ok(queries)
}

/// One query per line: a JSON object's `text` (or else `query`) string, or
/// the line itself when it is not JSON. JSON objects with neither field
/// and blank lines are skipped.
pub fn parse_queries(text: &str) -> Vec<String> {
    #[derive(Deserialize)]
    struct Line {
        text: Option<String>,
        query: Option<String>,
    }
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .filter_map(|line| {
            if line.starts_with('{') {
                if let Ok(parsed) = serde_json::from_str::<Line>(line) {
                    return parsed
                        .text
                        .or(parsed.query)
                        .filter(|q| !q.trim().is_empty());
                }
            }
            Some(line.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_and_plain_lines() {
        let text = "{\"id\":1,\"text\":\"who wrote it\"}\n\n{\"query\":\"tar\"}\n\
                    {\"other\":1}\nplain words\n{not json\n";
        assert_eq!(
            parse_queries(text),
            vec!["who wrote it", "tar", "plain words", "{not json"]
        );
    }

    #[test]
    fn the_built_in_questions_parse() {
        let queries = natural_language_queries();
        assert!(queries.len() > 1000);
        assert!(!queries[0].starts_with('{'));
    }

    #[test]
    fn empty_or_missing_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n\n").unwrap();
        assert!(read_queries(&empty).is_err());
        assert!(read_queries(&dir.path().join("missing")).is_err());
    }
}
