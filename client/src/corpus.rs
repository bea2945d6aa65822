//! Reading a JSON-lines corpus into index documents.
//!
//! Each line is one JSON object. The fields `id`, `title`, `body` and `url`
//! map to the document's fields (`more_info_url` is accepted for `url`, as
//! in the tldr-pages sample); an `attrs` object is taken as is; any other
//! scalar field (string, number, bool) becomes an attribute too, so the
//! sample's `lang` and `platform` are filterable as `attrs.lang:en`. Arrays
//! and nested objects outside `attrs` are skipped. Files ending in `.gz` are
//! decompressed.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use anyhow::Context;
use serde_json::{Map, Value};
use tandem_proto::v1::Document;

/// Keeps only records whose attribute `key` equals `value` (`--where`).
#[derive(Clone, Debug)]
pub struct Where {
    /// Attribute name.
    pub key: String,
    /// Required value, compared as text.
    pub value: String,
}

impl std::str::FromStr for Where {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (key, value) = s
            .split_once('=')
            .ok_or_else(|| format!("expected key=value, got {s:?}"))?;
        Ok(Self {
            key: key.to_string(),
            value: value.to_string(),
        })
    }
}

/// Opens a corpus file, transparently gunzipping `*.gz`.
pub fn open_lines(path: &Path) -> anyhow::Result<Box<dyn BufRead + Send>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let reader: Box<dyn Read + Send> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    Ok(Box::new(BufReader::with_capacity(1 << 16, reader)))
}

/// Reads every document of a corpus that passes all `filters`.
pub fn read_documents(path: &Path, filters: &[Where]) -> anyhow::Result<Vec<Document>> {
    read_documents_up_to(path, filters, None)
}

/// [`read_documents`], stopping after `limit` documents (if set) so that a
/// small cluster does not pay for decompressing the whole corpus.
pub fn read_documents_up_to(
    path: &Path,
    filters: &[Where],
    limit: Option<usize>,
) -> anyhow::Result<Vec<Document>> {
    read_lines(
        open_lines(path)?,
        &path.display().to_string(),
        filters,
        limit,
    )
}

/// [`read_documents`] from any reader of JSON lines (standard input).
pub fn documents_from(reader: impl BufRead, filters: &[Where]) -> anyhow::Result<Vec<Document>> {
    read_lines(reader, "stdin", filters, None)
}

fn read_lines(
    reader: impl BufRead,
    source: &str,
    filters: &[Where],
    limit: Option<usize>,
) -> anyhow::Result<Vec<Document>> {
    let mut docs = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        if limit.is_some_and(|l| docs.len() >= l) {
            break;
        }
        let line = line.with_context(|| format!("{source}: read error"))?;
        if line.trim().is_empty() {
            continue;
        }
        let record: Map<String, Value> = serde_json::from_str(&line)
            .with_context(|| format!("{source}:{}: not a JSON object", n + 1))?;
        if let Some(doc) =
            to_document(record, filters).with_context(|| format!("{source}:{}", n + 1))?
        {
            docs.push(doc);
        }
    }
    Ok(docs)
}

/// Maps one record to a document, or `None` if a filter rejects it.
pub fn to_document(
    mut record: Map<String, Value>,
    filters: &[Where],
) -> anyhow::Result<Option<Document>> {
    let mut take = |key: &str| match record.remove(key) {
        Some(Value::String(s)) => s,
        _ => String::new(),
    };
    let id = take("id");
    anyhow::ensure!(!id.is_empty(), "record has no string \"id\"");
    let title = take("title");
    let body = take("body");
    let mut url = take("url");
    if url.is_empty() {
        url = take("more_info_url");
    }
    let mut attrs = match record.remove("attrs") {
        Some(Value::Object(map)) => map,
        _ => Map::new(),
    };
    for (key, value) in record {
        if matches!(value, Value::String(_) | Value::Number(_) | Value::Bool(_)) {
            attrs.entry(key).or_insert(value);
        }
    }
    let passes = filters.iter().all(|f| {
        attrs.get(&f.key).is_some_and(|v| match v {
            Value::String(s) => *s == f.value,
            // Numbers and booleans compare by their JSON text: `is_alias=false`.
            other => {
                let text = other.to_string();
                text == f.value
            }
        })
    });
    if !passes {
        return Ok(None);
    }
    Ok(Some(Document {
        id,
        title,
        body,
        url,
        attrs_json: Value::Object(attrs).to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_tldr_records() {
        let record: Map<String, Value> = serde_json::from_str(
            r#"{"id":"en/common/tar","title":"tar","body":"Archiving utility.","lang":"en",
                "platform":"common","is_alias":false,"examples":[{"description":"x"}],
                "more_info_url":"https://example.org/tar"}"#,
        )
        .unwrap();
        let filters = vec![
            "lang=en".parse().unwrap(),
            "is_alias=false".parse().unwrap(),
        ];
        let doc = to_document(record.clone(), &filters).unwrap().unwrap();
        assert_eq!(doc.id, "en/common/tar");
        assert_eq!(doc.url, "https://example.org/tar");
        let attrs: Value = serde_json::from_str(&doc.attrs_json).unwrap();
        assert_eq!(attrs["platform"], "common");
        assert!(attrs.get("examples").is_none());
        assert!(to_document(record, &["lang=es".parse().unwrap()])
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_record_without_id_is_an_error() {
        let record: Map<String, Value> = serde_json::from_str(r#"{"title":"x"}"#).unwrap();
        assert!(to_document(record, &[]).is_err());
    }
}
