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
