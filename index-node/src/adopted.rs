//! Followers a node was asked to build (`Bootstrap`, from `tandem replica
//! add`) before the catalog lists them, remembered in a marker file in the
//! shard's directory so that a restart in the middle of an add does not
//! forget them. The marker goes once the catalog lists the replica.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The marker's file name in a shard directory.
const FILE: &str = "tandem-follow.json";

/// Whom the shard follows.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Marker {
    /// The leader's node id.
    pub leader: String,
    /// The leader epoch followed.
    pub epoch: u64,
    /// The tenant's language.
    pub language: String,
}

/// Writes the marker into `shard_dir`.
pub fn save(shard_dir: &Path, marker: &Marker) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(marker).map_err(std::io::Error::other)?;
    std::fs::write(shard_dir.join(FILE), bytes)
}

/// The marker in `shard_dir`, if there is a readable one.
pub fn load(shard_dir: &Path) -> Option<Marker> {
    serde_json::from_slice(&std::fs::read(shard_dir.join(FILE)).ok()?).ok()
}

/// Deletes the marker in `shard_dir`, if any.
pub fn remove(shard_dir: &Path) {
    let _ = std::fs::remove_file(shard_dir.join(FILE));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_round_trips_and_goes() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()), None);
        let m = Marker {
            leader: "a1".into(),
            epoch: 2,
            language: "en".into(),
        };
        save(dir.path(), &m).unwrap();
        assert_eq!(load(dir.path()), Some(m));
        remove(dir.path());
        assert_eq!(load(dir.path()), None);
    }
}
