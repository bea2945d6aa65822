//! Shipping event files to the object store.
//!
//! Each round ([`crate::events::Events::ship_forever`]), every file in
//! `<events dir>/ready/` is split by tenant,
//! gzipped, and put at `<store>/<tenant>/events/<region>/<file>.gz`
//! (`tandem_common::store`); the local file is deleted once every part is
//! stored. A failed put leaves the file for the next round (a part put
//! twice overwrites itself: the object name is the file's).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use flate2::write::GzEncoder;
use flate2::Compression;
use tandem_common::store::Store;

/// Ships every ready file once; returns how many were shipped. Lines of a
/// tenant that is not `known` are dropped (and counted). A file that
/// cannot be shipped stays for the next round without holding up the
/// others; one already gone (shipped by a concurrent round, at shutdown)
/// is skipped.
pub async fn ship_ready(
    dir: &Path,
    store: &Store,
    region: &str,
    known: &(dyn Fn(&str) -> bool + Sync),
) -> anyhow::Result<usize> {
    let (_, ready) = super::recorder::subdirs(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&ready)
        .with_context(|| format!("cannot list {}", ready.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    let mut shipped = 0;
    let mut failed = None;
    for path in files {
        match ship_file(&path, store, region, known).await {
            Ok(()) => shipped += 1,
            Err(e) => failed = Some(e),
        }
    }
    match failed {
        Some(e) if shipped == 0 => Err(e),
        Some(e) => {
            metrics::counter!("router_events_ship_errors_total").increment(1);
            tracing::warn!(error = %format!("{e:#}"), "an events file was not shipped; retrying");
            Ok(shipped)
        }
        None => Ok(shipped),
    }
}

/// Ships one ready file and deletes it.
async fn ship_file(
    path: &Path,
    store: &Store,
    region: &str,
    known: &(dyn Fn(&str) -> bool + Sync),
) -> anyhow::Result<()> {
    let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Ok(());
    };
    let text = match tokio::fs::read(path).await {
        Ok(text) => text,
        Err(e) if gone(&e) => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {name}")),
    };
    for (tenant, part) in split_by_tenant(&text) {
        if !known(&tenant) {
            let lines = part.iter().filter(|&&b| b == b'\n').count() as u64;
            metrics::counter!("router_events_dropped_total").increment(lines);
            continue;
        }
        let gz = gzip(&part)?;
        let bytes = gz.len() as u64;
        let object = store.event_object(&tenant, region, &format!("{name}.gz"));
        store
            .client
            .put(&object, gz.into())
            .await
            .with_context(|| format!("cannot put events of {tenant}"))?;
        metrics::counter!("router_events_shipped_bytes_total").increment(bytes);
    }
    match tokio::fs::remove_file(path).await {
        Err(e) if !gone(&e) => Err(e).with_context(|| format!("cannot delete {name}")),
        _ => Ok(()),
    }
}

/// The file's lines grouped by their `tenant` field (lines without one,
/// or with an id that is not a tenant id, are dropped). The recorder
/// writes the field second, and tenant ids need no escaping, so the
/// value is found without parsing the line.
fn split_by_tenant(text: &[u8]) -> BTreeMap<String, Vec<u8>> {
    const FIELD: &[u8] = b"\"tenant\":\"";
    let mut out: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let Some(at) = line.windows(FIELD.len()).position(|w| w == FIELD) else {
            continue;
        };
        let value = &line[at + FIELD.len()..];
        let Some(end) = value.iter().position(|&b| b == b'"') else {
            continue;
        };
        let Ok(tenant) = std::str::from_utf8(&value[..end]) else {
            continue;
        };
        if !crate::catalog::is_valid_id(tenant) {
            continue;
        }
        let part = out.entry(tenant.to_string()).or_default();
        part.extend_from_slice(line);
        part.push(b'\n');
    }
    out
}

fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(bytes)?;
    enc.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[tokio::test]
    async fn ready_files_go_to_the_store_split_by_tenant() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_, ready) = super::super::recorder::subdirs(dir.path());
        std::fs::create_dir_all(&ready).expect("mkdir");
        std::fs::write(
            ready.join("r-1-5.jsonl"),
            "{\"type\":\"search\",\"tenant\":\"a\"}\n{\"tenant\":\"b\"}\n{\"tenant\":\"gone\"}\n{\"tenant\":\"a\"}\nnot json\n{\"tenant\":\"../x\"}\n",
        )
        .expect("write");
        let store_dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(
            &format!("file://{}", store_dir.path().display()),
            &Default::default(),
        )
        .expect("store");
        let known = |t: &str| t != "gone";
        assert_eq!(
            ship_ready(dir.path(), &store, "r1", &known)
                .await
                .expect("ship"),
            1
        );
        assert_eq!(std::fs::read_dir(&ready).expect("dir").count(), 0);
        let object = store.event_object("a", "r1", "r-1-5.jsonl.gz");
        let gz = store
            .client
            .get(&object)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("bytes");
        let mut text = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut text)
            .expect("gunzip");
        assert_eq!(text.lines().count(), 2);
        assert_eq!(store.tenants().await.expect("tenants"), ["a", "b"]);
    }
}
