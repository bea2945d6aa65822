//! Versioned model artifact files.
//!
//! # Layout on disk
//!
//! `<model_dir>/<tenant>/v<number>.tmodel`, one file per version, where the
//! number is the Unix time in milliseconds when it was written (or one more
//! than the previous version, should the clock lag). The version with the
//! largest number (compared as numbers) is the newest and is what a
//! model-node serves. Other names in the directory (temporary files, notes)
//! are ignored. Artifacts are never modified after they appear; a retrain
//! writes a new version, a rollback deletes the newest.
//!
//! # File format (all integers little-endian)
//!
//! | bytes | field |
//! |---|---|
//! | 8 | magic `TNDMMODL` |
//! | 2 | format version (u16, currently 1) |
//! | 2 | flags (u16, must be 0 in format 1) |
//! | 8 | payload length (u64) |
//! | 4 | CRC32 (IEEE, `crc32fast`) of the payload |
//! | n | payload |
//!
//! The file must be exactly `24 + n` bytes. Payload, format 1 (`str` = u64
//! length + UTF-8, `bytes` = u64 length + bytes, `count` = u32):
//!
//! ```text
//! str tenant; u64 trained_through; u64 events
//! bytes suggestion fst (keys = normalised queries, values = index 0..n)
//! count n; f32 score * n
//! f32 backoff_factor; f32 max_weight
//! count d; str doc_id * d
//! count q; (str query; count m; (u32 doc index; f32 weight) * m) * q
//! count t; (str term;  count m; (u32 doc index; f32 weight) * m) * t
//! ```
//!
//! Loading checks magic, format version, length, checksum, then decodes and
//! validates the payload (see [`SuggestModel::from_parts`] and
//! [`RelevanceModel::from_parts`]) and that the tenant inside matches the
//! directory. Any failure is a [`CorruptArtifact`] naming what was wrong.
//! Artifacts are trusted input (our own trainer wrote them): the checks catch
//! corruption and truncation, not a crafted file.
//!
//! Writing is atomic: a temporary file in the same directory is written,
//! synced and renamed into place, then the directory is synced, so a reader
//! sees either no new version or a complete one. One trainer per tenant at a
//! time is assumed.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use tandem_catalog::ids::validate_tenant_id;

use crate::codec::{DecodeError, Decoder, Encoder};
use crate::model::{ModelMeta, ModelSet};
use crate::relevance::RelevanceModel;
use crate::suggest::SuggestModel;

/// The first eight bytes of every artifact.
pub const MAGIC: [u8; 8] = *b"TNDMMODL";

/// The format version this code writes and reads.
pub const FORMAT_VERSION: u16 = 1;

/// Bytes before the payload.
pub const HEADER_LEN: usize = 24;

/// File name extension of artifacts.
pub const EXTENSION: &str = "tmodel";

/// What is wrong with an artifact's bytes.
#[derive(Debug, thiserror::Error)]
pub enum CorruptArtifact {
    /// Shorter than a header.
    #[error("truncated: {0} bytes is shorter than the {HEADER_LEN}-byte header")]
    NoHeader(usize),
    /// Not a model artifact at all.
    #[error("not a model artifact (bad magic bytes)")]
    BadMagic,
    /// Written by a newer (or unknown) format.
    #[error("format version {0} is not supported (this build reads version {FORMAT_VERSION})")]
    UnsupportedFormat(u16),
    /// Flags this build does not understand (format 1 defines none).
    #[error("unsupported flags {0:#06x}")]
    UnsupportedFlags(u16),
    /// Fewer payload bytes than the header promises.
    #[error("truncated: header says {expected} payload bytes, file has {actual}")]
    Truncated {
        /// From the header.
        expected: u64,
        /// Present.
        actual: u64,
    },
    /// More bytes than the header promises.
    #[error("{extra} unexpected bytes after the payload")]
    TrailingBytes {
        /// How many.
        extra: u64,
    },
    /// The payload does not match its checksum.
    #[error("checksum mismatch: header says {expected:#010x}, payload has {actual:#010x}")]
    Checksum {
        /// From the header.
        expected: u32,
        /// Computed.
        actual: u32,
    },
    /// The payload's structure is broken.
    #[error("payload: {0}")]
    Payload(DecodeError),
    /// The payload decoded but the models refused it.
    #[error("payload: {0}")]
    Model(String),
    /// The artifact belongs to another tenant.
    #[error("artifact is for tenant {found:?}, not {expected:?}")]
    WrongTenant {
        /// The directory's tenant.
        expected: String,
        /// The payload's tenant.
        found: String,
    },
}

impl From<DecodeError> for CorruptArtifact {
    fn from(e: DecodeError) -> Self {
        CorruptArtifact::Payload(e)
    }
}

/// Why an artifact could not be listed, read or written.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// The tenant id is not safe to use as a directory name.
    #[error("invalid tenant id: {0}")]
    InvalidTenant(String),
    /// A file-system operation failed.
    #[error("{path}: {error}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        error: io::Error,
    },
    /// The file is not a valid artifact.
    #[error("{path}: corrupt model artifact: {error}")]
    Corrupt {
        /// The artifact.
        path: PathBuf,
        /// What is wrong.
        error: CorruptArtifact,
    },
}

/// One artifact file of a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactFile {
    /// The version, e.g. `v1767225600000`.
    pub version: String,
    /// The number in the version (orders versions).
    pub number: u64,
    /// Full path.
    pub path: PathBuf,
}

/// A freshly written artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The file.
    pub file: ArtifactFile,
    /// Its size in bytes.
    pub size_bytes: u64,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ArtifactError + '_ {
    move |error| ArtifactError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// The directory holding a tenant's artifacts, after checking the tenant id
/// cannot escape `model_dir`.
pub fn tenant_dir(model_dir: &Path, tenant: &str) -> Result<PathBuf, ArtifactError> {
    validate_tenant_id(tenant).map_err(ArtifactError::InvalidTenant)?;
    Ok(model_dir.join(tenant))
}

/// Tenants with a directory under `model_dir` (names that are valid tenant
/// ids), sorted. A missing `model_dir` has no tenants.
pub fn tenants(model_dir: &Path) -> Result<Vec<String>, ArtifactError> {
    let entries = match fs::read_dir(model_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(model_dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err(model_dir))?;
        let is_dir = entry.file_type().map_err(io_err(&entry.path()))?.is_dir();
        if let (true, Some(name)) = (is_dir, entry.file_name().to_str()) {
            if validate_tenant_id(name).is_ok() {
                out.push(name.to_string());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// A tenant's artifact files, oldest first. A missing directory has none.
pub fn list_versions(model_dir: &Path, tenant: &str) -> Result<Vec<ArtifactFile>, ArtifactError> {
    let dir = tenant_dir(model_dir, tenant)?;
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(&dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err(&dir))?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if let Some(number) = parse_version(&name) {
            out.push(ArtifactFile {
                version: format!("v{number}"),
                number,
                path: entry.path(),
            });
        }
    }
    out.sort_by_key(|f| f.number);
    Ok(out)
}

/// The version number in an artifact file name `v<digits>.tmodel`.
pub fn parse_version(file_name: &str) -> Option<u64> {
    let digits = file_name
        .strip_prefix('v')?
        .strip_suffix(EXTENSION)?
        .strip_suffix('.')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The newest artifact of a tenant, if any.
pub fn newest(model_dir: &Path, tenant: &str) -> Result<Option<ArtifactFile>, ArtifactError> {
    Ok(list_versions(model_dir, tenant)?.pop())
}

/// Serialises a model set into artifact file bytes (header + payload).
pub fn encode(set: &ModelSet) -> Vec<u8> {
    let mut e = Encoder::default();
    e.str(&set.meta.tenant);
    e.u64(set.meta.trained_through);
    e.u64(set.meta.events);
    e.bytes(set.suggest.fst_bytes());
    e.count(set.suggest.scores().len());
    for s in set.suggest.scores() {
        e.f32(*s);
    }
    let rel = &set.relevance;
    e.f32(rel.backoff_factor());
    e.f32(rel.max_weight());
    e.count(rel.docs().len());
    for d in rel.docs() {
        e.str(d);
    }
    for rows in [rel.query_rows(), rel.term_rows()] {
        e.count(rows.len());
        for (key, list) in rows {
            e.str(key);
            e.count(list.len());
            for &(doc, w) in list {
                e.u32(doc);
                e.f32(w);
            }
        }
    }
    let payload = e.finish();
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Parses and validates artifact file bytes.
pub fn decode(bytes: &[u8]) -> Result<ModelSet, CorruptArtifact> {
    if bytes.len() < HEADER_LEN {
        return Err(CorruptArtifact::NoHeader(bytes.len()));
    }
    let (header, payload) = bytes.split_at(HEADER_LEN);
    if header[..8] != MAGIC {
        return Err(CorruptArtifact::BadMagic);
    }
    let format = u16::from_le_bytes([header[8], header[9]]);
    if format != FORMAT_VERSION {
        return Err(CorruptArtifact::UnsupportedFormat(format));
    }
    let flags = u16::from_le_bytes([header[10], header[11]]);
    if flags != 0 {
        return Err(CorruptArtifact::UnsupportedFlags(flags));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&header[12..20]);
    let expected = u64::from_le_bytes(len);
    let actual = payload.len() as u64;
    if actual < expected {
        return Err(CorruptArtifact::Truncated { expected, actual });
    }
    if actual > expected {
        return Err(CorruptArtifact::TrailingBytes {
            extra: actual - expected,
        });
    }
    let crc = u32::from_le_bytes([header[20], header[21], header[22], header[23]]);
    let computed = crc32fast::hash(payload);
    if crc != computed {
        return Err(CorruptArtifact::Checksum {
            expected: crc,
            actual: computed,
        });
    }
    decode_payload(payload)
}

fn decode_payload(payload: &[u8]) -> Result<ModelSet, CorruptArtifact> {
    let mut d = Decoder::new(payload);
    let meta = ModelMeta {
        tenant: d.str()?.to_string(),
        trained_through: d.u64()?,
        events: d.u64()?,
    };
    let fst = d.bytes()?.to_vec();
    let n = d.count(4)?;
    let scores = (0..n).map(|_| d.f32()).collect::<Result<Vec<f32>, _>>()?;
    let suggest =
        SuggestModel::from_parts(fst, scores).map_err(|e| CorruptArtifact::Model(e.to_string()))?;
    let backoff = d.f32()?;
    let max_weight = d.f32()?;
    let n_docs = d.count(8)?;
    let docs = (0..n_docs)
        .map(|_| d.str().map(str::to_string))
        .collect::<Result<Vec<String>, _>>()?;
    let mut tables = Vec::with_capacity(2);
    for _ in 0..2 {
        let rows = d.count(12)?;
        let mut table = Vec::with_capacity(rows);
        for _ in 0..rows {
            let key = d.str()?.to_string();
            let m = d.count(8)?;
            let list = (0..m)
                .map(|_| Ok((d.u32()?, d.f32()?)))
                .collect::<Result<Vec<(u32, f32)>, DecodeError>>()?;
            table.push((key, list));
        }
        tables.push(table);
    }
    d.finish()?;
    let terms = tables.pop().unwrap_or_default();
    let queries = tables.pop().unwrap_or_default();
    let relevance = RelevanceModel::from_parts(docs, queries, terms, backoff, max_weight)
        .map_err(|e| CorruptArtifact::Model(e.to_string()))?;
    Ok(ModelSet {
        meta,
        suggest,
        relevance,
    })
}

/// Reads and validates an artifact of `tenant`. Returns the models and the
/// file size.
pub fn read(path: &Path, tenant: &str) -> Result<(ModelSet, u64), ArtifactError> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    let corrupt = |error| ArtifactError::Corrupt {
        path: path.to_path_buf(),
        error,
    };
    let set = decode(&bytes).map_err(corrupt)?;
    if set.meta.tenant != tenant {
        return Err(corrupt(CorruptArtifact::WrongTenant {
            expected: tenant.to_string(),
            found: set.meta.tenant.clone(),
        }));
    }
    Ok((set, bytes.len() as u64))
}

/// Writes `set` as a new version of its tenant, atomically (see the module
/// docs). The version number is `now_millis`, or one more than the newest
/// existing version if that is not older, so versions always increase.
pub fn write_new_version(
    model_dir: &Path,
    set: &ModelSet,
    now_millis: u64,
) -> Result<Written, ArtifactError> {
    let tenant = &set.meta.tenant;
    let dir = tenant_dir(model_dir, tenant)?;
    fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let number = match newest(model_dir, tenant)? {
        Some(f) if f.number >= now_millis => f.number.saturating_add(1),
        _ => now_millis,
    };
    let version = format!("v{number}");
    let path = dir.join(format!("{version}.{EXTENSION}"));
    let tmp = dir.join(format!(".{version}.{EXTENSION}.tmp-{}", std::process::id()));
    let bytes = encode(set);
    let result = write_synced(&tmp, &bytes)
        .and_then(|()| fs::rename(&tmp, &path).map_err(io_err(&path)))
        .and_then(|()| {
            File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err(&dir))
        });
    if result.is_err() {
        // Best effort: a failed write must not leave a temporary file.
        let _ = fs::remove_file(&tmp);
    }
    result?;
    Ok(Written {
        file: ArtifactFile {
            version,
            number,
            path,
        },
        size_bytes: bytes.len() as u64,
    })
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), ArtifactError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io_err(path))?;
    f.write_all(bytes).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::ObservedSearch;
    use crate::relevance::RelevanceConfig;

    pub(crate) fn small_set(tenant: &str) -> ModelSet {
        let searches: Vec<ObservedSearch> = (0..40)
            .map(|i| ObservedSearch {
                ts: 1000 + i,
                session: format!("s{i}"),
                query: if i % 2 == 0 {
                    "extract tar".into()
                } else {
                    "list files".into()
                },
                shown: vec!["a".into(), "b".into(), "c".into()],
                clicked: if i % 4 == 0 {
                    vec![2]
                } else if i % 4 == 1 {
                    vec![0]
                } else {
                    vec![]
                },
            })
            .collect();
        let scores = crate::suggest::score_queries(&searches, &Default::default());
        ModelSet {
            meta: ModelMeta {
                tenant: tenant.to_string(),
                trained_through: 1039,
                events: 40,
            },
            suggest: SuggestModel::build(&scores).expect("suggest"),
            relevance: RelevanceModel::learn(&searches, &RelevanceConfig::default()),
        }
    }

    #[test]
    fn encode_decode_round_trip() {
        let set = small_set("en");
        let bytes = encode(&set);
        assert_eq!(&bytes[..8], b"TNDMMODL");
        let back = decode(&bytes).expect("decode");
        assert_eq!(back.meta, set.meta);
        assert_eq!(
            back.suggest.complete("ex", 5),
            set.suggest.complete("ex", 5)
        );
        assert_eq!(
            back.relevance.boosts("extract tar", 5),
            set.relevance.boosts("extract tar", 5)
        );
        assert!(!back.relevance.boosts("extract tar", 5).boosts.is_empty());
        assert_eq!(encode(&back), bytes, "encoding is deterministic");
    }

    #[test]
    fn every_truncation_and_bit_flip_is_refused() {
        let bytes = encode(&small_set("en"));
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for i in (0..bytes.len()).step_by(7) {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x10;
            assert!(decode(&flipped).is_err(), "flip at {i}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            decode(&longer),
            Err(CorruptArtifact::TrailingBytes { extra: 1 })
        ));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let bytes = encode(&small_set("en"));
        let msg = |b: &[u8]| decode(b).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg(&bytes[..bytes.len() - 5]).contains("truncated"));
        assert!(msg(b"hello").contains("header"));
        assert!(msg(&[0u8; 40]).contains("magic"));
        let mut v2 = bytes.clone();
        v2[8] = 2;
        assert!(msg(&v2).contains("format version 2"));
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(msg(&flipped).contains("checksum"));
    }

    #[test]
    fn versions_increase_and_newest_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let set = small_set("en");
        let a = write_new_version(dir.path(), &set, 5_000).expect("write a");
        let b = write_new_version(dir.path(), &set, 5_000).expect("write b");
        let c = write_new_version(dir.path(), &set, 4_000).expect("write c");
        assert_eq!(
            (a.file.number, b.file.number, c.file.number),
            (5_000, 5_001, 5_002)
        );
        assert_eq!(a.file.version, "v5000");
        fs::write(dir.path().join("en").join("notes.txt"), "x").expect("write note");
        fs::write(dir.path().join("en").join(".v9.tmodel.tmp-1"), "x").expect("write tmp");
        let versions = list_versions(dir.path(), "en").expect("list");
        assert_eq!(versions.len(), 3);
        assert_eq!(
            newest(dir.path(), "en").expect("newest"),
            Some(c.file.clone())
        );
        let (back, size) = read(&c.file.path, "en").expect("read");
        assert_eq!(size, c.size_bytes);
        assert_eq!(back.meta.tenant, "en");
        assert_eq!(
            tenants(dir.path()).expect("tenants"),
            vec!["en".to_string()]
        );
    }

    #[test]
    fn wrong_tenant_and_unsafe_ids_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let w = write_new_version(dir.path(), &small_set("en"), 1).expect("write");
        let err = read(&w.file.path, "es")
            .expect_err("wrong tenant")
            .to_string();
        assert!(err.contains("not \"es\""), "{err}");
        assert!(matches!(
            write_new_version(dir.path(), &small_set("../x"), 1),
            Err(ArtifactError::InvalidTenant(_))
        ));
        assert!(list_versions(dir.path(), "..").is_err());
        assert!(list_versions(dir.path(), "nobody")
            .expect("empty")
            .is_empty());
        assert!(tenants(&dir.path().join("missing"))
            .expect("none")
            .is_empty());
    }

    #[test]
    fn version_names_parse_strictly() {
        assert_eq!(parse_version("v123.tmodel"), Some(123));
        for bad in [
            "v.tmodel",
            "v12a.tmodel",
            "123.tmodel",
            "v12.tmodel.tmp-3",
            "v12tmodel",
            "v-1.tmodel",
        ] {
            assert_eq!(parse_version(bad), None, "{bad}");
        }
    }
}
