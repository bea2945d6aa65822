//! What a document and a batch of writes may be: the one rule, checked by
//! routers on the public `Documents.Write` and by index-nodes on `Ingest`.
//!
//! The limits fit the router's 4 MiB request limit: a public batch is at
//! most 4 MiB in all, and no single field can make a document unreasonable
//! to index or return. Every refusal names the offending document.

use std::collections::HashSet;

use tandem_proto::v1::Document;

/// Longest document id, in bytes.
pub const MAX_ID_BYTES: usize = 512;
/// Longest title, in bytes.
pub const MAX_TITLE_BYTES: usize = 16 * 1024;
/// Longest url, in bytes.
pub const MAX_URL_BYTES: usize = 8 * 1024;
/// Longest attrs JSON, in bytes.
pub const MAX_ATTRS_BYTES: usize = 64 * 1024;
/// Largest document (all fields), in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// Most upserts + deletes in one public write.
pub const MAX_WRITE_OPS: usize = 5_000;
/// Longest `request_id`, in bytes.
pub const MAX_REQUEST_ID_BYTES: usize = 128;

/// Checks a batch: not empty, at most `max_ops` operations, every id valid
/// and used once, every document within the limits with attrs that are a
/// JSON object. The message says what is wrong (INVALID_ARGUMENT).
pub fn check_batch(
    upserts: &[Document],
    deletes: &[String],
    request_id: &str,
    max_ops: usize,
) -> Result<(), String> {
    let ops = upserts.len() + deletes.len();
    if ops == 0 {
        return Err("the batch is empty: give upserts or deletes".to_string());
    }
    if ops > max_ops {
        return Err(format!(
            "the batch has {ops} operations; at most {max_ops} are allowed"
        ));
    }
    if request_id.len() > MAX_REQUEST_ID_BYTES {
        return Err(format!(
            "request_id may be at most {MAX_REQUEST_ID_BYTES} bytes"
        ));
    }
    let mut seen = HashSet::with_capacity(ops);
    for id in upserts.iter().map(|d| &d.id).chain(deletes) {
        check_id(id)?;
        if !seen.insert(id.as_str()) {
            return Err(format!(
                "document id {:?} appears twice in the batch",
                shorten(id)
            ));
        }
    }
    upserts.iter().try_for_each(check_document)
}

fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_ID_BYTES {
        return Err(format!(
            "document ids must be 1..={MAX_ID_BYTES} bytes (got {} bytes: {:?})",
            id.len(),
            shorten(id)
        ));
    }
    Ok(())
}

/// Field sizes and attrs of one document.
pub fn check_document(d: &Document) -> Result<(), String> {
    let id = shorten(&d.id);
    for (field, len, max) in [
        ("title", d.title.len(), MAX_TITLE_BYTES),
        ("url", d.url.len(), MAX_URL_BYTES),
        ("attrs_json", d.attrs_json.len(), MAX_ATTRS_BYTES),
    ] {
        if len > max {
            return Err(format!(
                "document {id:?}: {field} is {len} bytes; at most {max} are allowed"
            ));
        }
    }
    let total = d.id.len() + d.title.len() + d.body.len() + d.url.len() + d.attrs_json.len();
    if total > MAX_DOCUMENT_BYTES {
        return Err(format!(
            "document {id:?} is {total} bytes; at most {MAX_DOCUMENT_BYTES} are allowed"
        ));
    }
    if !d.attrs_json.trim().is_empty() {
        match serde_json::from_str::<serde_json::Value>(&d.attrs_json) {
            Ok(serde_json::Value::Object(_)) => {}
            Ok(_) => return Err(format!("document {id:?}: attrs_json is not a JSON object")),
            Err(e) => {
                return Err(format!(
                    "document {id:?}: attrs_json is not a JSON object: {e}"
                ))
            }
        }
    }
    Ok(())
}

/// At most 40 characters of `s`, for messages.
fn shorten(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(id: &str) -> Document {
        Document {
            id: id.to_string(),
            title: "t".to_string(),
            ..Default::default()
        }
    }

    #[test]
    fn every_bad_batch_is_named() {
        let cases: Vec<(Vec<Document>, Vec<String>, &str)> = vec![
            (vec![], vec![], "empty"),
            (vec![doc("")], vec![], "1..=512"),
            (vec![doc(&"x".repeat(513))], vec![], "1..=512"),
            (vec![doc("a")], vec!["a".into()], "twice"),
            (
                vec![Document {
                    attrs_json: "[1]".into(),
                    ..doc("a")
                }],
                vec![],
                "not a JSON object",
            ),
            (
                vec![Document {
                    attrs_json: "{".into(),
                    ..doc("a")
                }],
                vec![],
                "not a JSON object",
            ),
            (
                vec![Document {
                    body: "b".repeat(MAX_DOCUMENT_BYTES),
                    ..doc("a")
                }],
                vec![],
                "at most 1048576",
            ),
            (
                vec![Document {
                    title: "b".repeat(MAX_TITLE_BYTES + 1),
                    ..doc("a")
                }],
                vec![],
                "title is",
            ),
        ];
        for (upserts, deletes, needle) in cases {
            let err = check_batch(&upserts, &deletes, "", 10).unwrap_err();
            assert!(err.contains(needle), "{err} lacks {needle}");
        }
        let many: Vec<String> = (0..11).map(|i| i.to_string()).collect();
        assert!(check_batch(&[], &many, "", 10)
            .unwrap_err()
            .contains("at most 10"));
        assert!(check_batch(&[doc("a")], &[], &"r".repeat(129), 10).is_err());
        assert!(check_batch(&[doc("a")], &["b".into()], "r", 10).is_ok());
    }
}
