//! Errors of the serving API ([`crate::store::ModelStore`]) and the gRPC
//! status code each should become.

use std::path::PathBuf;

use crate::artifact::ArtifactError;

/// Why a model call or load failed.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The request itself is unacceptable (bad tenant id, empty or oversized
    /// text). Fails the same on every replica: do not retry.
    #[error("{0}")]
    InvalidArgument(String),
    /// No model is loaded for the tenant on this node.
    #[error("no model is loaded for tenant {0:?}")]
    UnknownTenant(String),
    /// The tenant has no artifact in the model directory.
    #[error("no model artifact for tenant {tenant:?} under {dir}")]
    NoArtifact {
        /// The tenant.
        tenant: String,
        /// Where artifacts were looked for.
        dir: PathBuf,
    },
    /// The newest artifact could not be read or is corrupt; the previous
    /// version (if any) keeps serving.
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    /// Loading failed for a reason that is not the request's or the
    /// artifact's fault (a worker thread died).
    #[error("model loading failed: {0}")]
    Internal(String),
}

impl ModelError {
    /// The gRPC code for this error: INVALID_ARGUMENT for bad requests,
    /// NOT_FOUND for an unknown tenant or a missing artifact,
    /// FAILED_PRECONDITION for a corrupt artifact (the file must be replaced;
    /// retrying will not help), INTERNAL for I/O and other failures.
    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            ModelError::InvalidArgument(_) => tonic::Code::InvalidArgument,
            ModelError::UnknownTenant(_) | ModelError::NoArtifact { .. } => tonic::Code::NotFound,
            ModelError::Artifact(ArtifactError::InvalidTenant(_)) => tonic::Code::InvalidArgument,
            ModelError::Artifact(ArtifactError::Corrupt { .. }) => tonic::Code::FailedPrecondition,
            ModelError::Artifact(ArtifactError::Io { .. }) | ModelError::Internal(_) => {
                tonic::Code::Internal
            }
        }
    }
}

impl From<ModelError> for tonic::Status {
    fn from(e: ModelError) -> Self {
        tonic::Status::new(e.grpc_code(), e.to_string())
    }
}
