//! Editing the catalog file, the one control-plane source: what `tandem
//! promote` (and later `tandem replica add/remove`) change.
//!
//! Edits go through `toml_edit`, so the operator's comments and layout
//! survive; the result is validated with the routers' own rules before it
//! replaces the file (atomically: write beside, then rename), so a command
//! never leaves a catalog that routers and nodes would refuse. Routers and
//! index-nodes pick the new file up at their next poll; in a fleet, apply
//! the file to every region's ConfigMap (see docs/operations.md).

use std::path::Path;

use anyhow::Context;
use std::sync::Arc;

use tandem_catalog::{Catalog, Shard, Tenant};
use toml_edit::{value, DocumentMut, InlineTable, Item, Table};

/// The catalog file, parsed for editing.
pub struct CatalogFile {
    doc: DocumentMut,
}

impl CatalogFile {
    /// Reads `path` (which must hold a valid catalog).
    pub fn load(path: &Path) -> anyhow::Result<(CatalogFile, Catalog)> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read catalog {}", path.display()))?;
        let catalog = Catalog::parse(text.as_bytes())?;
        let doc = text
            .parse::<DocumentMut>()
            .with_context(|| format!("cannot parse catalog {}", path.display()))?;
        Ok((CatalogFile { doc }, catalog))
    }

    /// Sets `tenant`'s shard `shard` leader to `node` at `epoch`.
    pub fn set_leader(
        &mut self,
        tenant: &str,
        shard: u32,
        node: &str,
        epoch: u64,
    ) -> anyhow::Result<()> {
        let table = self.tenant_table(tenant)?;
        let leaders = table
            .entry("leaders")
            .or_insert_with(|| Item::Table(Table::new()))
            .as_table_like_mut()
            .context("`leaders` of the tenant is not a table")?;
        let mut entry = InlineTable::new();
        entry.insert("node", node.into());
        entry.insert("epoch", (epoch as i64).into());
        leaders.insert(&shard.to_string(), value(entry));
        Ok(())
    }

    /// Adds (`add`) or removes `node` from the replicas of `tenant`'s shard.
    pub fn set_replica(
        &mut self,
        tenant: &str,
        shard: u32,
        node: &str,
        add: bool,
    ) -> anyhow::Result<()> {
        let list = self
            .tenant_table(tenant)?
            .get_mut("shards")
            .and_then(Item::as_table_like_mut)
            .context("the tenant has no shards table")?
            .get_mut(&shard.to_string())
            .and_then(Item::as_array_mut)
            .with_context(|| format!("tenant {tenant:?} has no shard {shard}"))?;
        let at = list.iter().position(|v| v.as_str() == Some(node));
        match (add, at) {
            (true, None) => list.push(node),
            (false, Some(i)) => {
                list.remove(i);
            }
            (true, Some(_)) => anyhow::bail!("{node} is already a replica of {tenant}/{shard}"),
            (false, None) => anyhow::bail!("{node} is not a replica of {tenant}/{shard}"),
        }
        Ok(())
    }

    /// Appends `entry` to the string list `field` of `tenant` (made if
    /// missing); a value already there is not added twice.
    pub fn add_to_list(&mut self, tenant: &str, field: &str, entry: &str) -> anyhow::Result<()> {
        push_unique(self.tenant_table(tenant)?, field, entry)
            .with_context(|| format!("tenant {tenant}"))
    }

    /// Removes `entry` from the string list `field` of `tenant`; returns
    /// whether it was there.
    pub fn remove_from_list(
        &mut self,
        tenant: &str,
        field: &str,
        entry: &str,
    ) -> anyhow::Result<bool> {
        Ok(remove_entry(self.tenant_table(tenant)?, field, entry))
    }

    /// The string list `field` of `tenant` (empty if missing).
    pub fn list(&self, tenant: &str, field: &str) -> anyhow::Result<Vec<String>> {
        let tenants = self
            .doc
            .get("tenants")
            .and_then(Item::as_array_of_tables)
            .context("the catalog has no [[tenants]]")?;
        let table = tenants
            .iter()
            .find(|t| t.get("id").and_then(Item::as_str) == Some(tenant))
            .with_context(|| format!("tenant {tenant:?} is not in the catalog"))?;
        Ok(strings(table, field))
    }

    /// Sets `tenant`'s migration ramp (format 3); 0 removes it.
    pub fn set_ramp(&mut self, tenant: &str, percent: u8) -> anyhow::Result<()> {
        let table = self.tenant_table(tenant)?;
        if percent == 0 {
            table.remove("ramp");
        } else {
            table.insert("ramp", value(i64::from(percent)));
        }
        self.raise_format(3);
        Ok(())
    }

    /// Sets whether `tenant` is active-active.
    pub fn set_active_active(&mut self, tenant: &str, on: bool) -> anyhow::Result<()> {
        self.tenant_table(tenant)?
            .insert("active_active", value(on));
        Ok(())
    }

    /// Records `region`'s traffic dial (a format 3 field: the file's
    /// format is raised to 3 if it is older).
    pub fn set_dial(&mut self, region: &str, percent: u32) -> anyhow::Result<()> {
        anyhow::ensure!(percent <= 100, "a dial goes from 0 to 100, not {percent}");
        let table = self
            .doc
            .get_mut("regions")
            .and_then(Item::as_array_of_tables_mut)
            .and_then(|r| {
                r.iter_mut()
                    .find(|t| t.get("id").and_then(Item::as_str) == Some(region))
            })
            .with_context(|| format!("region {region:?} is not in the catalog"))?;
        table.insert("dial", value(i64::from(percent)));
        self.raise_format(3);
        Ok(())
    }

    /// Sets `format` to at least `format`.
    fn raise_format(&mut self, format: i64) {
        let current = self
            .doc
            .get("format")
            .and_then(Item::as_integer)
            .unwrap_or(1);
        if current < format {
            self.doc.insert("format", value(format));
        }
    }

    /// Appends `table` as a new `[[tenants]]` entry (validated by
    /// [`CatalogFile::save`]).
    pub fn add_tenant(&mut self, table: Table) -> anyhow::Result<()> {
        let tenants = self
            .doc
            .entry("tenants")
            .or_insert_with(|| Item::ArrayOfTables(toml_edit::ArrayOfTables::new()))
            .as_array_of_tables_mut()
            .context("`tenants` of the catalog is not a list of tables")?;
        tenants.push(table);
        Ok(())
    }

    /// Removes `tenant`'s `[[tenants]]` entry and its `[keys.<tenant>]`
    /// table, if any; returns whether the tenant was there.
    pub fn remove_tenant(&mut self, tenant: &str) -> bool {
        let Some(tenants) = self
            .doc
            .get_mut("tenants")
            .and_then(Item::as_array_of_tables_mut)
        else {
            return false;
        };
        let before = tenants.len();
        tenants.retain(|t| t.get("id").and_then(Item::as_str) != Some(tenant));
        let removed = tenants.len() < before;
        if let Some(keys) = self.doc.get_mut("keys").and_then(Item::as_table_like_mut) {
            keys.remove(tenant);
        }
        removed
    }

    fn tenant_table(&mut self, tenant: &str) -> anyhow::Result<&mut Table> {
        let tenants = self
            .doc
            .get_mut("tenants")
            .and_then(Item::as_array_of_tables_mut)
            .context("the catalog has no [[tenants]]")?;
        tenants
            .iter_mut()
            .find(|t| t.get("id").and_then(Item::as_str) == Some(tenant))
            .with_context(|| format!("tenant {tenant:?} is not in the catalog"))
    }

    /// Validates the edited catalog and replaces `path` with it.
    pub fn save(&self, path: &Path) -> anyhow::Result<Catalog> {
        let text = self.doc.to_string();
        let catalog = Catalog::parse(text.as_bytes()).context("the edited catalog is invalid")?;
        write_atomically(path, &text, None)?;
        Ok(catalog)
    }
}

/// Loads the catalog at `path`, applies `change` and saves it (validated),
/// holding an exclusive lock on `<path>.lock` meanwhile: edits that run at
/// once (a batch of migrations, another `tandem` command) each apply to
/// the latest file, and none is lost.
pub fn edit(
    path: &Path,
    change: impl FnOnce(&mut CatalogFile, &Catalog) -> anyhow::Result<()>,
) -> anyhow::Result<Catalog> {
    let _lock = FileLock::acquire(&lock_path(path, "lock"), true)?
        .context("the catalog lock was not taken")?;
    let (mut file, catalog) = CatalogFile::load(path)?;
    change(&mut file, &catalog)?;
    file.save(path)
}

/// `<path>.<suffix>`: a lock file beside the catalog.
pub fn lock_path(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    name.into()
}

/// An exclusive `flock(2)` on a file, released when dropped (or when the
/// process dies, so a killed command never leaves a stale lock).
pub struct FileLock {
    _file: std::fs::File,
}

impl FileLock {
    /// Takes the lock on `path` (made if missing): waiting for it when
    /// `wait`, else `None` if another holder has it.
    pub fn acquire(path: &Path, wait: bool) -> anyhow::Result<Option<FileLock>> {
        use std::os::fd::AsRawFd;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("cannot open lock file {}", path.display()))?;
        let mode = if wait {
            libc::LOCK_EX
        } else {
            libc::LOCK_EX | libc::LOCK_NB
        };
        // SAFETY: flock on a file descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), mode) } == 0 {
            return Ok(Some(FileLock { _file: file }));
        }
        let error = std::io::Error::last_os_error();
        if error.kind() == std::io::ErrorKind::WouldBlock {
            return Ok(None);
        }
        Err(error).with_context(|| format!("cannot lock {}", path.display()))
    }
}

/// A keys file (`--catalog-keys` of the routers: `[keys.<tenant>]` tables
/// of key hashes and nothing else, a Secret in a fleet), parsed for
/// editing. A file that does not exist yet is empty.
pub struct KeysFile {
    doc: DocumentMut,
}

impl KeysFile {
    /// Reads `path` (missing: empty).
    pub fn load(path: &Path) -> anyhow::Result<KeysFile> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read keys file {}", path.display()))
            }
        };
        let doc = text
            .parse::<DocumentMut>()
            .with_context(|| format!("cannot parse keys file {}", path.display()))?;
        Ok(KeysFile { doc })
    }

    /// `[keys.<tenant>]`, made if missing.
    fn table(&mut self, tenant: &str) -> anyhow::Result<&mut Table> {
        let keys = self
            .doc
            .entry("keys")
            .or_insert_with(|| {
                let mut t = Table::new();
                t.set_implicit(true);
                Item::Table(t)
            })
            .as_table_mut()
            .context("`keys` of the keys file is not a table")?;
        keys.entry(tenant)
            .or_insert_with(|| Item::Table(Table::new()))
            .as_table_mut()
            .with_context(|| format!("`keys.{tenant}` is not a table"))
    }

    /// Appends `entry` to `field` of `[keys.<tenant>]`.
    pub fn add_to_list(&mut self, tenant: &str, field: &str, entry: &str) -> anyhow::Result<()> {
        push_unique(self.table(tenant)?, field, entry).with_context(|| format!("keys.{tenant}"))
    }

    /// Removes `entry` from `field` of `[keys.<tenant>]`; whether it was
    /// there.
    pub fn remove_from_list(&mut self, tenant: &str, field: &str, entry: &str) -> bool {
        self.tenant_keys_mut(tenant)
            .is_some_and(|t| remove_entry(t, field, entry))
    }

    /// `field` of `[keys.<tenant>]` (empty if missing).
    pub fn list(&self, tenant: &str, field: &str) -> Vec<String> {
        self.doc
            .get("keys")
            .and_then(|k| k.get(tenant))
            .and_then(Item::as_table)
            .map(|t| strings(t, field))
            .unwrap_or_default()
    }

    /// Removes `[keys.<tenant>]`; whether it was there.
    pub fn remove_tenant(&mut self, tenant: &str) -> bool {
        self.doc
            .get_mut("keys")
            .and_then(Item::as_table_like_mut)
            .is_some_and(|k| k.remove(tenant).is_some())
    }

    fn tenant_keys_mut(&mut self, tenant: &str) -> Option<&mut Table> {
        self.doc.get_mut("keys")?.get_mut(tenant)?.as_table_mut()
    }

    /// Validates the file with the catalog at `catalog` (as the routers
    /// merge them) and replaces `path` with it, readable by its owner only.
    pub fn save(&self, path: &Path, catalog: &Path) -> anyhow::Result<Catalog> {
        let text = self.doc.to_string();
        let catalog_bytes = std::fs::read(catalog)
            .with_context(|| format!("cannot read catalog {}", catalog.display()))?;
        let merged = Catalog::with_keys(&catalog_bytes, text.as_bytes())
            .context("the edited keys file is invalid")?;
        let catalog = Catalog::parse(&merged).context("the edited keys file is invalid")?;
        write_atomically(path, &text, Some(0o600))?;
        Ok(catalog)
    }
}

/// Appends `entry` to the string list `field` of `table` (made if missing)
/// unless it is there.
fn push_unique(table: &mut Table, field: &str, entry: &str) -> anyhow::Result<()> {
    let list = table
        .entry(field)
        .or_insert_with(|| value(toml_edit::Array::new()))
        .as_array_mut()
        .with_context(|| format!("`{field}` is not a list"))?;
    if !list.iter().any(|v| v.as_str() == Some(entry)) {
        list.push(entry);
    }
    Ok(())
}

/// Removes `entry` from the string list `field` of `table`; whether it was
/// there.
fn remove_entry(table: &mut Table, field: &str, entry: &str) -> bool {
    let Some(list) = table.get_mut(field).and_then(Item::as_array_mut) else {
        return false;
    };
    let before = list.len();
    list.retain(|v| v.as_str() != Some(entry));
    list.len() < before
}

/// The string list `field` of `table` (empty if missing).
fn strings(table: &Table, field: &str) -> Vec<String> {
    table
        .get(field)
        .and_then(Item::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Writes `text` beside `path` (with `mode`, if given) and renames it over
/// `path`, so a reader never sees half a file.
fn write_atomically(path: &Path, text: &str, mode: Option<u32>) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if let Some(mode) = mode {
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    }
    let mut file = options
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::io::Write::write_all(&mut file, text.as_bytes())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))
}

/// `tenant` of `catalog`, or an error naming it.
pub fn tenant<'a>(catalog: &'a Catalog, tenant: &str) -> anyhow::Result<&'a Arc<Tenant>> {
    catalog
        .tenant(tenant)
        .with_context(|| format!("tenant {tenant:?} is not in the catalog"))
}

/// `tenant`'s shard `shard` in `catalog` (with the tenant), or an error.
pub fn shard<'a>(
    catalog: &'a Catalog,
    tenant_id: &str,
    shard: u32,
) -> anyhow::Result<(&'a Arc<Tenant>, &'a Shard)> {
    let t = tenant(catalog, tenant_id)?;
    let s = t
        .shards
        .get(shard as usize)
        .with_context(|| format!("tenant {tenant_id:?} has no shard {shard}"))?;
    Ok((t, s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_edit_keeps_comments_and_validates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.toml");
        std::fs::write(&path, tandem_catalog::EMBEDDED_DEFAULT).unwrap();
        let (mut file, before) = CatalogFile::load(&path).unwrap();
        assert_eq!(
            &*before.tenant("acme").unwrap().shards[0].leader.node.id,
            "eu-idx-1"
        );
        file.set_leader("acme", 0, "us-idx-1", 2).unwrap();
        let after = file.save(&path).unwrap();
        let leader = &after.tenant("acme").unwrap().shards[0].leader;
        assert_eq!((&*leader.node.id, leader.epoch), ("us-idx-1", 2));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("# Development keys"), "comments survive");
        file.set_leader("acme", 0, "nope", 3).unwrap();
        assert!(file.save(&path).is_err(), "an invalid edit is refused");
        assert!(
            CatalogFile::load(&path).is_ok(),
            "and the file is untouched"
        );
        assert!(file.set_leader("ghost", 0, "x", 1).is_err());
        let (mut file, _) = CatalogFile::load(&path).unwrap();
        file.set_replica("globex", 0, "us-idx-2", false).unwrap();
        let after = file.save(&path).unwrap();
        assert_eq!(after.tenant("globex").unwrap().shards[0].replicas.len(), 2);
        assert!(file.set_replica("globex", 0, "us-idx-2", false).is_err());
        file.set_replica("globex", 0, "us-idx-2", true).unwrap();
        assert_eq!(
            file.save(&path).unwrap().tenant("globex").unwrap().shards[0]
                .replicas
                .len(),
            3
        );
    }
}
