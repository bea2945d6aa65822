//! Which shard owns a document: the one rule, used by routers for writes and
//! by any tool that needs to know.
//!
//! `shard = xxh3_64(id bytes, seed 0) mod shard_count`. The hash and its seed
//! never change, and a tenant's shard count is fixed when it is created, so a
//! document stays on its shard for the tenant's life. xxh3 is fast on short
//! keys and spreads them evenly; the id's UTF-8 bytes are hashed as they are
//! (no normalisation), exactly as the id is stored.

use xxhash_rust::xxh3::xxh3_64;

/// The shard (`0..shard_count`) that owns document `id`. A `shard_count` of
/// 0 (no tenant has one; validation refuses it) gives shard 0.
pub fn shard_for(id: &str, shard_count: u32) -> u32 {
    if shard_count == 0 {
        return 0;
    }
    (xxh3_64(id.as_bytes()) % u64::from(shard_count)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pinned values: placement is a public contract, and a change to the
    /// hash would move documents between shards.
    #[test]
    fn placement_never_changes() {
        assert_eq!(xxh3_64(b""), 0x2D06_8005_38D3_94C2);
        assert_eq!(shard_for("tar", 1), 0);
        let spread: Vec<u32> = ["a", "b", "c", "d", "e", "f"]
            .iter()
            .map(|id| shard_for(id, 4))
            .collect();
        assert_eq!(spread, PINNED_SPREAD);
    }

    const PINNED_SPREAD: [u32; 6] = [3, 3, 3, 2, 0, 2];

    #[test]
    fn ids_spread_over_shards() {
        let mut counts = [0u32; 4];
        for i in 0..4000 {
            counts[shard_for(&format!("doc-{i}"), 4) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }
}
