//! `tandem key create|rotate|revoke|list`: a tenant's API keys.
//!
//! The catalog holds only each key's SHA-256 (`api_key_sha256` for the
//! search scope, `write_key_sha256` for the write scope); a new key is
//! printed once and never stored. An edit is validated and written like
//! every catalog edit ([`crate::catalog_edit`]), then every router of the
//! topology is told to reload its catalog at once, so a new key works and a
//! revoked one stops working within a moment in both regions, not at the
//! next poll.

use std::path::{Path, PathBuf};

use anyhow::bail;
use rand::RngExt;
use tandem_catalog::hash_key;

use crate::catalog_edit::{edit, CatalogFile, KeysFile};

/// What a key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scope {
    /// `Search` and `Suggest`.
    Search,
    /// `Documents.Write`.
    Write,
}

impl Scope {
    /// The catalog field listing the hashes of this scope's keys.
    pub fn field(self) -> &'static str {
        match self {
            Scope::Search => "api_key_sha256",
            Scope::Write => "write_key_sha256",
        }
    }
}

/// A fresh key for `tenant`: its id, then 48 random hex digits.
pub fn new_key(tenant: &str, scope: Scope) -> String {
    let bytes: [u8; 24] = rand::rng().random();
    let kind = match scope {
        Scope::Search => "",
        Scope::Write => "write-",
    };
    format!("{tenant}-{kind}{}", hex::encode(bytes))
}

/// `--catalog` and `--keys-file` of the commands that edit keys and
/// tenants.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct CatalogArgs {
    /// Catalog file (default: the topology's).
    #[arg(long)]
    pub catalog: Option<PathBuf>,
    /// Keys file beside the catalog (the routers' `--catalog-keys`, a
    /// Secret in a fleet): new key hashes go there instead of the catalog;
    /// revoked keys and deleted tenants go from there too.
    #[arg(long)]
    pub keys_file: Option<PathBuf>,
}

impl CatalogArgs {
    /// The files to edit: these, the catalog defaulting to the topology's.
    pub fn source(self, target: &crate::commands::Target) -> anyhow::Result<KeySource> {
        Ok(KeySource {
            catalog: target.catalog_path(self.catalog)?,
            keys_file: self.keys_file,
        })
    }
}

/// Where a tenant's key hashes are edited: its entry in the catalog, or,
/// with a keys file (the routers' `--catalog-keys`, a Secret in a fleet),
/// its `[keys.<tenant>]` table there. Listing and revoking look in both.
#[derive(Clone, Debug)]
pub struct KeySource {
    /// The catalog file.
    pub catalog: PathBuf,
    /// The keys file, if the cluster keeps hashes apart from the catalog.
    pub keys_file: Option<PathBuf>,
}

impl KeySource {
    /// Key hashes in the catalog itself.
    pub fn catalog(path: &Path) -> KeySource {
        KeySource {
            catalog: path.to_path_buf(),
            keys_file: None,
        }
    }

    /// Adds `hash` to `tenant`'s keys of `scope` where new keys go.
    pub fn add(&self, tenant: &str, scope: Scope, hash: &str) -> anyhow::Result<()> {
        match &self.keys_file {
            Some(path) => {
                let catalog = tandem_catalog::Catalog::load_file(&self.catalog)?;
                crate::catalog_edit::tenant(&catalog, tenant)?;
                let mut keys = KeysFile::load(path)?;
                keys.add_to_list(tenant, scope.field(), hash)?;
                keys.save(path, &self.catalog)?;
            }
            None => {
                edit(&self.catalog, |file, _| {
                    file.add_to_list(tenant, scope.field(), hash)
                })?;
            }
        }
        Ok(())
    }

    /// Removes `hash` from `tenant`'s keys of `scope` wherever it is;
    /// whether it was found.
    fn remove(&self, tenant: &str, scope: Scope, hash: &str) -> anyhow::Result<bool> {
        if let Some(path) = &self.keys_file {
            let mut keys = KeysFile::load(path)?;
            if keys.remove_from_list(tenant, scope.field(), hash) {
                keys.save(path, &self.catalog)?;
                return Ok(true);
            }
        }
        let mut found = false;
        edit(&self.catalog, |file, _| {
            found = file.remove_from_list(tenant, scope.field(), hash)?;
            Ok(())
        })?;
        Ok(found)
    }

    /// Every hash of `tenant`'s keys of `scope`, from both places.
    fn hashes(&self, tenant: &str, scope: Scope) -> anyhow::Result<Vec<String>> {
        let (file, _) = CatalogFile::load(&self.catalog)?;
        let mut all = file.list(tenant, scope.field())?;
        if let Some(path) = &self.keys_file {
            all.extend(KeysFile::load(path)?.list(tenant, scope.field()));
        }
        Ok(all)
    }
}

/// Adds a new key of `scope` to `tenant`; returns the key (the only time it
/// is seen).
pub fn create(src: &KeySource, tenant: &str, scope: Scope) -> anyhow::Result<String> {
    let key = new_key(tenant, scope);
    src.add(tenant, scope, &hash_key(&key))?;
    Ok(key)
}

/// Removes the key whose SHA-256 is `sha256` from `tenant`'s keys of
/// `scope`, and, when `replace`, adds a new one (a rotation: the new key is
/// added first, so the tenant is never without one); returns the new key,
/// if any.
pub fn revoke(
    src: &KeySource,
    tenant: &str,
    scope: Scope,
    sha256: &str,
    replace: bool,
) -> anyhow::Result<Option<String>> {
    let sha256 = sha256.trim().to_ascii_lowercase();
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("--key-sha256 takes the key's SHA-256 as 64 hex digits (printf %s \"$KEY\" | sha256sum)");
    }
    let hashes = src.hashes(tenant, scope)?;
    if !hashes.contains(&sha256) {
        bail!("tenant {tenant} has no {scope:?} key with that SHA-256");
    }
    if scope == Scope::Search && !replace && hashes.len() == 1 {
        bail!("that is the last search key of {tenant}: create another one first (a tenant without one cannot be searched)");
    }
    let key = replace.then(|| new_key(tenant, scope));
    if let Some(key) = &key {
        src.add(tenant, scope, &hash_key(key))?;
    }
    src.remove(tenant, scope, &sha256)?;
    Ok(key)
}

/// The SHA-256 of every key of `tenant`, by scope.
pub fn list(src: &KeySource, tenant: &str) -> anyhow::Result<Vec<(Scope, String)>> {
    let mut out = Vec::new();
    for scope in [Scope::Search, Scope::Write] {
        for hash in src.hashes(tenant, scope)? {
            out.push((scope, hash));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CATALOG: &str = r#"
[[regions]]
id = "r1"
pair = "r2"

[[regions]]
id = "r2"
pair = "r1"

[[nodes]]
id = "a-idx"
region = "r1"
kind = "index"
addr = "http://127.0.0.1:7101"

[[nodes]]
id = "b-idx"
region = "r2"
kind = "index"
addr = "http://127.0.0.1:7102"

[[tenants]]
id = "t"
home = "r1"
active_active = false
language = "en"
api_key_sha256 = ["0000000000000000000000000000000000000000000000000000000000000000"] # keep me
[tenants.shards]
0 = ["a-idx", "b-idx"]
"#;

    #[test]
    fn create_rotate_revoke_keep_hashes_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.toml");
        std::fs::write(&path, CATALOG).unwrap();

        let src = KeySource::catalog(&path);
        let key = create(&src, "t", Scope::Search).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&key), "only the hash is stored");
        assert!(text.contains(&hash_key(&key)));
        assert!(text.contains("# keep me"), "comments survive");

        let rotated = revoke(&src, "t", Scope::Search, &hash_key(&key), true)
            .unwrap()
            .expect("a new key");
        let hashes = list(&src, "t").unwrap();
        assert!(hashes.contains(&(Scope::Search, hash_key(&rotated))));
        assert!(!hashes.contains(&(Scope::Search, hash_key(&key))));

        let write = create(&src, "t", Scope::Write).unwrap();
        assert!(list(&src, "t")
            .unwrap()
            .contains(&(Scope::Write, hash_key(&write))));
        revoke(&src, "t", Scope::Write, &hash_key(&write), false).unwrap();
        assert!(revoke(&src, "t", Scope::Write, &hash_key(&write), false).is_err());
        assert!(revoke(&src, "t", Scope::Search, "not-hex", false).is_err());
        // The last search key stays until another exists.
        let zeros = "0".repeat(64);
        revoke(&src, "t", Scope::Search, &hash_key(&rotated), false).unwrap();
        let last = revoke(&src, "t", Scope::Search, &zeros, false).unwrap_err();
        assert!(last.to_string().contains("last search key"), "{last}");
        assert!(create(&src, "nobody", Scope::Search).is_err());
    }

    #[test]
    fn a_keys_file_takes_new_keys_and_both_places_are_revocable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.toml");
        std::fs::write(&path, CATALOG).unwrap();
        let keys_path = dir.path().join("keys.toml");
        let src = KeySource {
            catalog: path.clone(),
            keys_file: Some(keys_path.clone()),
        };
        let key = create(&src, "t", Scope::Search).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), CATALOG);
        let keys = std::fs::read_to_string(&keys_path).unwrap();
        assert!(
            keys.contains("[keys.t]") && keys.contains(&hash_key(&key)),
            "{keys}"
        );
        let mode = std::fs::metadata(&keys_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(list(&src, "t").unwrap().len(), 2, "catalog's and file's");
        // The catalog's key goes from the catalog, the new one from the file.
        revoke(&src, "t", Scope::Search, &"0".repeat(64), false).unwrap();
        assert!(!std::fs::read_to_string(&path)
            .unwrap()
            .contains(&"0".repeat(64)));
        let last = revoke(&src, "t", Scope::Search, &hash_key(&key), false).unwrap_err();
        assert!(last.to_string().contains("last search key"), "{last}");
        let rotated = revoke(&src, "t", Scope::Search, &hash_key(&key), true)
            .unwrap()
            .unwrap();
        assert_eq!(
            list(&src, "t").unwrap(),
            [(Scope::Search, hash_key(&rotated))]
        );
        assert!(create(&src, "nobody", Scope::Search).is_err());
    }
}
