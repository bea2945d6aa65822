//! The tandem wire contract, generated from `proto/tandem/v1/*.proto`.
//!
//! This crate holds no logic: every process and client depends on it so that
//! they agree on messages and services.

/// Everything in the `tandem.v1` protobuf package.
pub mod v1 {
    tonic::include_proto!("tandem.v1");
}

/// Encoded `FileDescriptorSet` of every tandem proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tandem_descriptor.bin"));

/// Metadata key a router puts on an UNAVAILABLE answer that is about the
/// tenant's data, not about the router: some shard has no live replica in
/// any region this router may read from, and the router has already tried
/// them all (the paired region's included). Another region's router could
/// not do better, so clients return such an answer instead of failing over
/// to another router. Value: `"1"`.
pub const REPLICAS_EXHAUSTED_KEY: &str = "tandem-replicas-exhausted";

/// Metadata key an index-node puts on the FAILED_PRECONDITION of a search
/// whose `min_applied_seq` it has not reached: the replica is merely behind
/// (not failing), so a router tries another replica without counting it as
/// a failure. Value: `"1"`.
pub const REPLICA_BEHIND_KEY: &str = "tandem-replica-behind";

/// Metadata key on every RESOURCE_EXHAUSTED a tandem process sheds a call
/// with, saying who refused it (the values below): the client library
/// moves a call the router shed to the other region's router, and never
/// one refused for the tenant's quota (a tenant must not get its quota
/// twice by asking both regions).
pub const SHED_KEY: &str = "tandem-shed";

/// The values of [`SHED_KEY`].
pub mod shed {
    /// The router is at its admission limit (this router is overloaded;
    /// another region's may not be).
    pub const ROUTER: &str = "router";
    /// The index-nodes holding the tenant's data shed the search (their
    /// queues are full or too slow): the tenant's data is overloaded here.
    pub const NODE: &str = "node";
    /// The tenant's own rate or concurrency quota in this region.
    pub const QUOTA: &str = "quota";

    use tonic::metadata::{MetadataMap, MetadataValue};
    use tonic::{Code, Status};

    /// A RESOURCE_EXHAUSTED carrying `tandem-shed: <who>` (one of the
    /// values above) and `message`.
    pub fn status(who: &'static str, message: impl Into<String>) -> Status {
        let mut metadata = MetadataMap::new();
        metadata.insert(super::SHED_KEY, MetadataValue::from_static(who));
        Status::with_metadata(Code::ResourceExhausted, message, metadata)
    }

    /// Who shed `status`: `Some("router" | "node" | "quota")` for a shed
    /// answer, `None` for anything else (another code, or a
    /// RESOURCE_EXHAUSTED without the trailer, such as an oversized
    /// message).
    pub fn who(status: &Status) -> Option<&str> {
        if status.code() != Code::ResourceExhausted {
            return None;
        }
        status
            .metadata()
            .get(super::SHED_KEY)
            .and_then(|v| v.to_str().ok())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_shed_answer_says_who_shed_it() {
            assert_eq!(who(&status(ROUTER, "busy")), Some(ROUTER));
            assert_eq!(who(&status(QUOTA, "quota")), Some(QUOTA));
            assert_eq!(who(&Status::resource_exhausted("too large")), None);
            let node = status(NODE, "x");
            assert_eq!(who(&node), Some(NODE));
            let other = Status::with_metadata(Code::Unavailable, "x", node.metadata().clone());
            assert_eq!(who(&other), None, "only RESOURCE_EXHAUSTED is a shed");
        }
    }
}

/// Paths of the unary methods the router calls without generated clients
/// (one frame each way; see `tandem_common::unary`). They follow the gRPC
/// rule `/<package>.<Service>/<Method>`.
pub mod paths {
    /// `tandem.v1.Search/Search`.
    pub const SEARCH: &str = "/tandem.v1.Search/Search";
    /// `tandem.v1.Search/Suggest`.
    pub const SUGGEST: &str = "/tandem.v1.Search/Suggest";
    /// `tandem.v1.IndexNode/SearchShard`.
    pub const SEARCH_SHARD: &str = "/tandem.v1.IndexNode/SearchShard";
    /// `tandem.v1.ModelNode/Boosts`.
    pub const BOOSTS: &str = "/tandem.v1.ModelNode/Boosts";
    /// `tandem.v1.ModelNode/Suggest`.
    pub const MODEL_SUGGEST: &str = "/tandem.v1.ModelNode/Suggest";
    /// `grpc.health.v1.Health/Check`.
    pub const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";
}
