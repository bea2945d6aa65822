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
