//! [`ApiError`], a refused request, and the refusals more than one call makes: no or an unknown
//! credential, an unusable store, a registry refusal (and its [`ApiReason`]), and bad request
//! fields (labels, an endpoint's port).

use wgmesh_client::api::ApiReason;
use wgmesh_config::labels::{self, Labels};

use crate::audit::Outcome;
use crate::ipam::IpamError;
use crate::registry::{RegistryError, TokenRefused};

/// A refused request: the reason word, its HTTP status, and a message for humans (never a
/// secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// The machine word.
    pub reason: ApiReason,
    /// The message.
    pub message: String,
}

impl ApiError {
    /// A refusal with this reason and message.
    pub fn new(reason: ApiReason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }

    pub(super) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ApiReason::BadRequest, message)
    }
}

/// The reason word of a join token's refusal.
impl From<&TokenRefused> for ApiReason {
    fn from(e: &TokenRefused) -> Self {
        match e {
            TokenRefused::Unknown => Self::TokenUnknown,
            TokenRefused::Expired { .. } => Self::TokenExpired,
            TokenRefused::Used { .. } => Self::TokenUsed,
            TokenRefused::Revoked { .. } => Self::TokenRevoked,
        }
    }
}

/// The reason word of a registry refusal.
impl From<&RegistryError> for ApiReason {
    fn from(e: &RegistryError) -> Self {
        match e {
            RegistryError::Token(t) => t.into(),
            RegistryError::NameTaken { .. } => Self::NameTaken,
            RegistryError::KeyTaken { .. } => Self::KeyTaken,
            RegistryError::NoSuchHost(_) | RegistryError::NoSuchToken(_) => Self::NotFound,
            RegistryError::CredentialInUse(_) | RegistryError::Workloads { .. } => Self::BadRequest,
            RegistryError::PolicyTest(_) | RegistryError::PolicyTooLarge { .. } => Self::BadPolicy,
            RegistryError::NoPolicy => Self::NotFound,
            RegistryError::RotationOutOfOrder { .. } => Self::RotationOutOfOrder,
            RegistryError::KeyReportRefused { .. } => Self::KeyReportRefused,
            RegistryError::LowOrderKey { .. } => Self::BadRequest,
            RegistryError::Ipam(IpamError::Exhausted { .. }) => Self::SubnetsExhausted,
            RegistryError::Ipam(_)
            | RegistryError::NotInitialized
            | RegistryError::AlreadyInitialized { .. }
            | RegistryError::IdInUse { .. }
            | RegistryError::RotationBusy { .. } => Self::Internal,
        }
    }
}

pub(super) fn store_unusable() -> ApiError {
    ApiError::new(
        ApiReason::Internal,
        "the control plane could not write its store (see its log); the change was not \
         acknowledged and may or may not have been kept: retry",
    )
}

/// The refusal of a request without a credential someone holds (`401 unauthenticated`).
pub fn unauthenticated() -> ApiError {
    ApiError::new(
        ApiReason::Unauthenticated,
        "missing or unknown credential: send `Authorization: Bearer <admin token or host credential>`",
    )
}

pub(super) fn registry_error(e: RegistryError) -> ApiError {
    ApiError::new((&e).into(), e.to_string())
}

/// The audit outcome of a call's result.
pub(super) fn outcome_of<T>(result: &Result<T, ApiError>) -> Outcome {
    match result {
        Ok(_) => Outcome::Ok,
        Err(e) => Outcome::Refused(e.reason),
    }
}

/// A request's `labels`, checked as every label is (`wgmesh_config::labels`).
pub(super) fn check_labels(labels: &Labels) -> Result<(), ApiError> {
    labels::check_labels(labels).map_err(|e| ApiError::bad_request(format!("labels: {e}")))
}
