//! Snapshots of shards in an object store: how a new or far-behind replica
//! is built while the leader keeps taking writes, and the shards' backups.
//!
//! A snapshot is the tantivy files of one commit at sequence number S, hard
//! linked aside by the shard's writer (so merges and commits that follow
//! cannot change or delete them), then uploaded:
//!
//! ```text
//! <store>/<tenant>/<shard>/<S, 20 digits>/files/<tantivy file>
//! <store>/<tenant>/<shard>/<S, 20 digits>/manifest.json   written last
//! ```
//!
//! A snapshot without its manifest is unfinished and never used. A replica
//! installs a snapshot and then follows the leader from S + 1. The store is
//! any `object_store` URL: `file:///path` (the default: `snapshots/` under
//! the node's data directory; `tandem dev` gives all its nodes one shared
//! directory) or `s3://bucket/prefix` with options such as `aws_endpoint`
//! for an S3-compatible server. Manifests carry a format version; this
//! version reads format 1.

use std::collections::BTreeMap;
use std::path::Path as FsPath;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::oplog::OpLog;
use crate::shard::{Shard, ShardKey};

/// The manifest format this version writes and reads.
pub const MANIFEST_FORMAT: u32 = 1;
/// Bytes read from a file per upload part, and the download buffer.
const CHUNK: usize = 8 * 1024 * 1024;
/// Files downloaded at once.
const PARALLEL_FILES: usize = 4;

/// What a snapshot holds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`] of the writer.
    pub format: u32,
    /// Tenant.
    pub tenant: String,
    /// Shard number.
    pub shard: u32,
    /// Every write up to this sequence number is in it.
    pub seq: u64,
    /// Leader epoch of the snapshot's last write (0 if unknown).
    pub epoch: u64,
    /// The shard's language.
    pub language: String,
    /// [`crate::schema::SCHEMA_VERSION`] of the index (absent: 1).
    #[serde(default = "schema_version_1")]
    pub schema: u32,
    /// The tantivy files, by name, with their sizes.
    pub files: BTreeMap<String, u64>,
    /// When it was taken (ms since the Unix epoch).
    pub created_unix_ms: u64,
}

fn schema_version_1() -> u32 {
    1
}

impl Manifest {
    /// Total bytes of its files.
    pub fn bytes(&self) -> u64 {
        self.files.values().sum()
    }
}

/// Progress of a download, for `ShardInfo` while bootstrapping.
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes written so far.
    pub done: AtomicU64,
    /// Bytes in all.
    pub total: AtomicU64,
}

/// See the module documentation.
#[derive(Clone, Debug)]
pub struct SnapshotStore {
    store: Arc<dyn ObjectStore>,
    root: Path,
    url: String,
}

impl SnapshotStore {
    /// The store at `url` (`file:///abs/dir`, `s3://bucket/prefix`, ...),
    /// with `options` (e.g. `aws_endpoint`, `aws_allow_http`) and, for S3,
    /// the standard `AWS_*` environment variables. A `file://` directory is
    /// created if missing.
    pub fn open(url: &str, options: &BTreeMap<String, String>) -> anyhow::Result<SnapshotStore> {
        let opened = tandem_common::store::Store::open(url, options)?;
        Ok(SnapshotStore {
            store: opened.client,
            root: opened.root,
            url: url.to_string(),
        })
    }

    /// The store's URL (for logs).
    pub fn url(&self) -> &str {
        &self.url
    }

    fn shard_root(&self, key: &ShardKey) -> Path {
        self.root
            .child(key.tenant.as_str())
            .child(key.shard.to_string())
    }

    fn snapshot_root(&self, key: &ShardKey, seq: u64) -> Path {
        self.shard_root(key).child(format!("{seq:020}"))
    }

    /// Uploads the files in `dir` as the snapshot `manifest` describes; the
    /// manifest goes last. Returns its location.
    pub async fn upload(&self, dir: &FsPath, manifest: &Manifest) -> anyhow::Result<String> {
        let key = ShardKey {
            tenant: manifest.tenant.clone(),
            shard: manifest.shard,
        };
        let root = self.snapshot_root(&key, manifest.seq);
        for name in manifest.files.keys() {
            let target = root.child("files").child(name.as_str());
            let mut file = tokio::fs::File::open(dir.join(name))
                .await
                .with_context(|| format!("cannot open staged file {name}"))?;
            let mut upload = object_store::buffered::BufWriter::new(self.store.clone(), target);
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = file.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                upload.write_all(&buf[..n]).await?;
            }
            upload
                .shutdown()
                .await
                .with_context(|| format!("cannot upload {name}"))?;
        }
        let manifest_bytes = serde_json::to_vec_pretty(manifest)?;
        self.store
            .put(
                &root.child("manifest.json"),
                PutPayload::from(manifest_bytes),
            )
            .await
            .context("cannot upload the snapshot manifest")?;
        Ok(root.to_string())
    }

    /// Sequence numbers of the shard's finished snapshots, oldest first.
    pub async fn list(&self, key: &ShardKey) -> anyhow::Result<Vec<u64>> {
        let listing = self
            .store
            .list_with_delimiter(Some(&self.shard_root(key)))
            .await
            .context("cannot list snapshots")?;
        let mut seqs = Vec::new();
        for prefix in listing.common_prefixes {
            let Some(seq) = prefix.filename().and_then(|n| n.parse::<u64>().ok()) else {
                continue;
            };
            if self
                .store
                .head(&prefix.child("manifest.json"))
                .await
                .is_ok()
            {
                seqs.push(seq);
            }
        }
        seqs.sort_unstable();
        Ok(seqs)
    }

    /// The manifest of the shard's newest finished snapshot.
    pub async fn latest(&self, key: &ShardKey) -> anyhow::Result<Option<Manifest>> {
        match self.list(key).await?.last() {
            None => Ok(None),
            Some(seq) => Ok(Some(self.manifest(key, *seq).await?)),
        }
    }

    /// The manifest of the shard's snapshot at `seq`.
    pub async fn manifest(&self, key: &ShardKey, seq: u64) -> anyhow::Result<Manifest> {
        let bytes = self
            .store
            .get(&self.snapshot_root(key, seq).child("manifest.json"))
            .await?
            .bytes()
            .await?;
        let manifest: Manifest =
            serde_json::from_slice(&bytes).context("corrupt snapshot manifest")?;
        anyhow::ensure!(
            manifest.format <= MANIFEST_FORMAT,
            "snapshot format {} is newer than this node reads ({MANIFEST_FORMAT})",
            manifest.format
        );
        Ok(manifest)
    }

    /// Downloads the snapshot's files into `dir` (a few at once), counting
    /// bytes in `progress`; checks every file's size and `fsync`s it.
    pub async fn download(
        &self,
        manifest: &Manifest,
        dir: &FsPath,
        progress: &Progress,
    ) -> anyhow::Result<()> {
        let key = ShardKey {
            tenant: manifest.tenant.clone(),
            shard: manifest.shard,
        };
        let root = self.snapshot_root(&key, manifest.seq).child("files");
        tokio::fs::create_dir_all(dir).await?;
        progress.total.store(manifest.bytes(), Ordering::Relaxed);
        let files: Vec<(String, u64)> = manifest.files.clone().into_iter().collect();
        let downloads = files.into_iter().map(|(name, size)| {
            let (source, target) = (root.child(name.as_str()), dir.join(&name));
            async move {
                let written = self.fetch(&source, &target, progress).await?;
                anyhow::ensure!(
                    written == size,
                    "snapshot file {name}: {written} bytes, expected {size}"
                );
                Ok::<(), anyhow::Error>(())
            }
        });
        let mut running = futures::stream::iter(downloads).buffer_unordered(PARALLEL_FILES);
        while let Some(done) = running.next().await {
            done?;
        }
        Ok(())
    }

    /// One file from the store to `target`: a kernel-side copy when the
    /// store is a local directory, else the stream through a large buffer.
    async fn fetch(
        &self,
        source: &Path,
        target: &FsPath,
        progress: &Progress,
    ) -> anyhow::Result<u64> {
        let got = self.store.get(source).await?;
        let written = match got.payload {
            object_store::GetResultPayload::File(mut file, _) => {
                let target = target.to_path_buf();
                tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
                    let mut out = std::fs::File::create(&target)?;
                    let n = std::io::copy(&mut file, &mut out)?;
                    out.sync_all()?;
                    Ok(n)
                })
                .await??
            }
            object_store::GetResultPayload::Stream(mut stream) => {
                let file = tokio::fs::File::create(target).await?;
                let mut out = tokio::io::BufWriter::with_capacity(CHUNK, file);
                let mut n = 0u64;
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk?;
                    out.write_all(&chunk).await?;
                    n += chunk.len() as u64;
                    progress
                        .done
                        .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
                out.flush().await?;
                out.into_inner().sync_all().await?;
                return Ok(n);
            }
        };
        progress.done.fetch_add(written, Ordering::Relaxed);
        Ok(written)
    }

    /// Deletes every object under `tenant`'s prefix (every snapshot of
    /// every shard: a deleted tenant); returns how many were removed.
    pub async fn delete_tenant(&self, tenant: &str) -> anyhow::Result<u64> {
        let root = self.root.child(tenant);
        let mut removed = 0;
        let mut objects = self.store.list(Some(&root));
        // Nodes sharing the store delete at once: what another removed
        // first is not an error.
        let gone = |e: &object_store::Error| matches!(e, object_store::Error::NotFound { .. });
        while let Some(meta) = objects.next().await {
            let location = match meta {
                Ok(meta) => meta.location,
                Err(e) if gone(&e) => continue,
                Err(e) => return Err(e.into()),
            };
            match self.store.delete(&location).await {
                Ok(()) => removed += 1,
                Err(e) if gone(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(removed)
    }

    /// Deletes all but the newest `keep` snapshots of the shard.
    pub async fn collect_garbage(&self, key: &ShardKey, keep: usize) -> anyhow::Result<usize> {
        let seqs = self.list(key).await?;
        let doomed = seqs.len().saturating_sub(keep.max(1));
        for seq in &seqs[..doomed] {
            let root = self.snapshot_root(key, *seq);
            // The manifest first: a half-deleted snapshot is then unfinished.
            let _ = self.store.delete(&root.child("manifest.json")).await;
            let mut files = self.store.list(Some(&root));
            while let Some(meta) = files.next().await {
                self.store.delete(&meta?.location).await?;
            }
        }
        Ok(doomed)
    }
}

/// The files of one commit, hard-linked aside for a snapshot; the
/// directory is the caller's to delete.
#[derive(Debug)]
pub struct Staged {
    /// Where the links are.
    pub dir: std::path::PathBuf,
    /// The commit's sequence number.
    pub seq: u64,
    /// Leader epoch of that sequence number's record (0 if unknown).
    pub epoch: u64,
    /// File name -> size.
    pub files: std::collections::BTreeMap<String, u64>,
}

/// Links the files of the last commit into a staging directory. A merge
/// that finishes meanwhile changes the commit's segments (and may delete
/// files of the old ones); then the commit is read again.
pub fn stage(shard: &Shard, log: &OpLog) -> anyhow::Result<Staged> {
    let index = shard.index();
    let index_dir = shard.dir().join("index");
    let segment_ids = |m: &tantivy::IndexMeta| -> Vec<String> {
        m.segments.iter().map(|s| s.id().uuid_string()).collect()
    };
    for _attempt in 0..5 {
        let metas = index.load_metas()?;
        let seq = metas
            .payload
            .as_deref()
            .and_then(|p| p.parse::<u64>().ok())
            .unwrap_or(0);
        let dir = shard
            .dir()
            .join("snapshot-staging")
            .join(format!("{seq:020}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let on_disk: Vec<String> = std::fs::read_dir(&index_dir)?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        let mut files = std::collections::BTreeMap::new();
        let mut complete = true;
        for segment in &metas.segments {
            let id = segment.id().uuid_string();
            let deletes = segment
                .has_deletes()
                .then(|| segment.relative_path(tantivy::index::SegmentComponent::Delete));
            let wanted = on_disk.iter().filter(|name| {
                name.starts_with(&id)
                    && !name.ends_with(".temp")
                    && (!name.ends_with(".del")
                        || deletes.as_deref() == Some(std::path::Path::new(name.as_str())))
            });
            for name in wanted {
                match std::fs::hard_link(index_dir.join(name), dir.join(name)) {
                    Ok(()) => {
                        files.insert(name.clone(), std::fs::metadata(dir.join(name))?.len());
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => complete = false,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        // Linked files cannot vanish; if the commit is still the same,
        // nothing of it was deleted before it was linked.
        if !complete || segment_ids(&index.load_metas()?) != segment_ids(&metas) {
            continue;
        }
        let meta_json = serde_json::to_vec_pretty(&metas)?;
        std::fs::write(dir.join("meta.json"), &meta_json)?;
        files.insert("meta.json".to_string(), meta_json.len() as u64);
        let epoch = log.epoch_at(seq).ok().flatten().unwrap_or(0);
        return Ok(Staged {
            dir,
            seq,
            epoch,
            files,
        });
    }
    anyhow::bail!("the index kept changing under the snapshot; try again")
}
