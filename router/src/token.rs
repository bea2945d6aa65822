//! Consistency tokens: what a write returns so that a later search, in
//! either region, can be served only by replicas that have applied it.
//!
//! A token is opaque to callers. Inside, it is a versioned protobuf message
//! in lowercase hex: the tenant, and for every shard the write touched, the
//! leader epoch and the sequence number the leader gave the batch. A router
//! turns it into `ShardSearchRequest.min_applied_seq` per shard.
//!
//! Versions: this router writes version 1 and reads versions up to 1; a
//! later version must keep reading 1 (fields are only added), so that a
//! token from an older router still works during an upgrade.
//!
//! A token whose epoch for a shard is not the shard's current leader epoch
//! (a promotion happened since) carries no requirement for that shard: the
//! new leader numbers from its own history, which may lack the write (see
//! the architecture doc on what a promotion can lose).

use prost::Message;
use tandem_catalog::Tenant;
use tonic::Status;

/// The token version this router writes.
pub const VERSION: u32 = 1;

/// Where one shard's write landed.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ShardPosition {
    /// Shard number.
    #[prost(uint32, tag = "1")]
    pub shard: u32,
    /// Leader epoch of the write.
    #[prost(uint64, tag = "2")]
    pub epoch: u64,
    /// Sequence number of the write on that shard.
    #[prost(uint64, tag = "3")]
    pub seq: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Token {
    #[prost(uint32, tag = "1")]
    version: u32,
    #[prost(string, tag = "2")]
    tenant: String,
    #[prost(message, repeated, tag = "3")]
    shards: Vec<ShardPosition>,
}

/// The token for a write of `tenant` that landed at `positions`.
pub fn encode(tenant: &str, positions: Vec<ShardPosition>) -> String {
    hex::encode(
        Token {
            version: VERSION,
            tenant: tenant.to_string(),
            shards: positions,
        }
        .encode_to_vec(),
    )
}

/// The minimum applied sequence number per shard (index = shard number; 0:
/// no requirement) that `token` asks of `tenant`'s replicas.
/// INVALID_ARGUMENT for a token that is malformed, of a newer version, or
/// of another tenant.
pub fn requirements(token: &str, tenant: &Tenant) -> Result<Vec<u64>, Status> {
    let token = decode(token)?;
    if *token.tenant != *tenant.id {
        return Err(Status::invalid_argument(
            "consistency_token was issued for another tenant",
        ));
    }
    let mut min = vec![0u64; tenant.shards.len()];
    for p in token.shards {
        let Some(shard) = tenant.shards.get(p.shard as usize) else {
            return Err(not_ours());
        };
        if shard.leader.epoch == p.epoch {
            min[p.shard as usize] = min[p.shard as usize].max(p.seq);
        }
    }
    Ok(min)
}

/// Where the write of `token` landed, shard by shard (for tools; a search
/// uses [`requirements`]).
pub fn positions(token: &str) -> Result<Vec<ShardPosition>, Status> {
    Ok(decode(token)?.shards)
}

fn not_ours() -> Status {
    Status::invalid_argument("consistency_token is not a token this service issued")
}

/// Decodes a token of a version this router reads.
fn decode(token: &str) -> Result<Token, Status> {
    let bytes = hex::decode(token).map_err(|_| not_ours())?;
    let token = Token::decode(bytes.as_slice()).map_err(|_| not_ours())?;
    if token.version == 0 || token.version > VERSION {
        return Err(Status::invalid_argument(format!(
            "consistency_token version {} is newer than this router reads ({VERSION})",
            token.version
        )));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant() -> std::sync::Arc<Tenant> {
        let c = tandem_catalog::Catalog::embedded_default().unwrap();
        c.tenant("acme").unwrap().clone()
    }

    #[test]
    fn a_token_round_trips_per_shard() {
        let t = tenant();
        let token = encode(
            "acme",
            vec![ShardPosition {
                shard: 1,
                epoch: 1,
                seq: 42,
            }],
        );
        assert_eq!(requirements(&token, &t).unwrap(), vec![0, 42]);
    }

    #[test]
    fn foreign_newer_stale_and_garbled_tokens() {
        let t = tenant();
        let other = encode("globex", vec![]);
        assert!(requirements(&other, &t)
            .unwrap_err()
            .message()
            .contains("another tenant"));
        let newer = hex::encode(
            Token {
                version: VERSION + 1,
                tenant: "acme".into(),
                shards: vec![],
            }
            .encode_to_vec(),
        );
        assert!(requirements(&newer, &t)
            .unwrap_err()
            .message()
            .contains("newer"));
        assert!(requirements("zz", &t).is_err());
        let stale = encode(
            "acme",
            vec![ShardPosition {
                shard: 0,
                epoch: 7,
                seq: 5,
            }],
        );
        assert_eq!(
            requirements(&stale, &t).unwrap(),
            vec![0, 0],
            "another epoch: no requirement"
        );
        let beyond = encode(
            "acme",
            vec![ShardPosition {
                shard: 9,
                epoch: 1,
                seq: 5,
            }],
        );
        assert!(requirements(&beyond, &t).is_err());
    }
}
