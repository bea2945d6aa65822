//! `tandem key create|rotate|revoke|list`: a tenant's API keys.
//!
//! The catalog holds only each key's SHA-256 (`api_key_sha256` for the
//! search scope, `write_key_sha256` for the write scope); a new key is
//! printed once and never stored. An edit is validated and written like
//! every catalog edit ([`crate::catalog_edit`]), then every router of the
//! topology is told to reload its catalog at once, so a new key works and a
//! revoked one stops working within a moment in both regions, not at the
//! next poll.

use std::path::Path;

use anyhow::bail;
use rand::RngExt;
use tandem_catalog::hash_key;

use crate::catalog_edit::CatalogFile;

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

/// Adds a new key of `scope` to `tenant` in the catalog at `path`; returns
/// the key (the only time it is seen).
pub fn create(path: &Path, tenant: &str, scope: Scope) -> anyhow::Result<String> {
    let (mut file, _) = CatalogFile::load(path)?;
    let key = new_key(tenant, scope);
    file.add_to_list(tenant, scope.field(), &hash_key(&key))?;
    file.save(path)?;
    Ok(key)
}

/// Removes the key whose SHA-256 is `sha256` from `tenant`'s keys of
/// `scope`, and, when `replace`, adds a new one in the same edit (a
/// rotation); returns the new key, if any.
pub fn revoke(
    path: &Path,
    tenant: &str,
    scope: Scope,
    sha256: &str,
    replace: bool,
) -> anyhow::Result<Option<String>> {
    let sha256 = sha256.trim().to_ascii_lowercase();
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("--key-sha256 takes the key's SHA-256 as 64 hex digits (printf %s \"$KEY\" | sha256sum)");
    }
    let (mut file, _) = CatalogFile::load(path)?;
    if scope == Scope::Search && !replace && file.list(tenant, scope.field())?.len() == 1 {
        bail!("that is the last search key of {tenant}: create another one first (a tenant without one cannot be searched)");
    }
    if !file.remove_from_list(tenant, scope.field(), &sha256)? {
        bail!("tenant {tenant} has no {scope:?} key with that SHA-256");
    }
    let key = replace.then(|| new_key(tenant, scope));
    if let Some(key) = &key {
        file.add_to_list(tenant, scope.field(), &hash_key(key))?;
    }
    file.save(path)?;
    Ok(key)
}

/// The SHA-256 of every key of `tenant`, by scope.
pub fn list(path: &Path, tenant: &str) -> anyhow::Result<Vec<(Scope, String)>> {
    let (file, _) = CatalogFile::load(path)?;
    let mut out = Vec::new();
    for scope in [Scope::Search, Scope::Write] {
        for hash in file.list(tenant, scope.field())? {
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

        let key = create(&path, "t", Scope::Search).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&key), "only the hash is stored");
        assert!(text.contains(&hash_key(&key)));
        assert!(text.contains("# keep me"), "comments survive");

        let rotated = revoke(&path, "t", Scope::Search, &hash_key(&key), true)
            .unwrap()
            .expect("a new key");
        let hashes = list(&path, "t").unwrap();
        assert!(hashes.contains(&(Scope::Search, hash_key(&rotated))));
        assert!(!hashes.contains(&(Scope::Search, hash_key(&key))));

        let write = create(&path, "t", Scope::Write).unwrap();
        assert!(list(&path, "t")
            .unwrap()
            .contains(&(Scope::Write, hash_key(&write))));
        revoke(&path, "t", Scope::Write, &hash_key(&write), false).unwrap();
        assert!(revoke(&path, "t", Scope::Write, &hash_key(&write), false).is_err());
        assert!(revoke(&path, "t", Scope::Search, "not-hex", false).is_err());
        // The last search key stays until another exists.
        let zeros = "0".repeat(64);
        revoke(&path, "t", Scope::Search, &hash_key(&rotated), false).unwrap();
        let last = revoke(&path, "t", Scope::Search, &zeros, false).unwrap_err();
        assert!(last.to_string().contains("last search key"), "{last}");
        assert!(create(&path, "nobody", Scope::Search).is_err());
    }
}
