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
        let table = self.tenant_table(tenant)?;
        let list = table
            .entry(field)
            .or_insert_with(|| value(toml_edit::Array::new()))
            .as_array_mut()
            .with_context(|| format!("`{field}` of tenant {tenant} is not a list"))?;
        if !list.iter().any(|v| v.as_str() == Some(entry)) {
            list.push(entry);
        }
        Ok(())
    }

    /// Removes `entry` from the string list `field` of `tenant`; returns
    /// whether it was there.
    pub fn remove_from_list(
        &mut self,
        tenant: &str,
        field: &str,
        entry: &str,
    ) -> anyhow::Result<bool> {
        let table = self.tenant_table(tenant)?;
        let Some(list) = table.get_mut(field).and_then(Item::as_array_mut) else {
            return Ok(false);
        };
        let before = list.len();
        list.retain(|v| v.as_str() != Some(entry));
        Ok(list.len() < before)
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
        Ok(table
            .get(field)
            .and_then(Item::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default())
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
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, &text).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("cannot replace {}", path.display()))?;
        Ok(catalog)
    }
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
