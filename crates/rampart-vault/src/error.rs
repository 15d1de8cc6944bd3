//! The one error type of the vault, shaped for the HTTP layers to map.

use rampart_proto::NameError;
use rampart_store::StoreError;

use crate::cidr::CidrError;
use crate::path::PathError;

/// Why a vault operation failed.
///
/// The HTTP layers turn each variant into a status code in one place (see
/// the crate docs for the Vault mapping). [`VaultError::Storage`] carries a
/// message for operators only; never send it to a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// No such secret, role or secret id (or a secret with no readable
    /// current version where one is needed, as for a patch).
    #[error("not found")]
    NotFound,
    /// A check-and-set write named another version than the current one.
    /// `current` is 0 when the secret has no version yet.
    #[error("check-and-set parameter did not match the current version (cas {expected}, current {current})")]
    CasMismatch { expected: u64, current: u64 },
    /// The secret has `cas_required` set and the write gave no `cas`.
    #[error("check-and-set parameter required for this call")]
    CasRequired,
    /// A secret path, prefix or role name was refused by its parser.
    #[error("invalid path: {0}")]
    InvalidPath(String),
    /// A request value was refused (limits, empty version lists, bad
    /// CIDRs, TTLs). The message is safe to show to the client.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The secret exists but has no version with that number (never
    /// written, or trimmed by `max_versions`).
    #[error("version not found")]
    VersionNotFound,
    /// An AppRole login failed. One variant for every cause (unknown role
    /// id, wrong or expired or used-up secret id, address outside the bound
    /// CIDRs, deleted role), so that nothing tells a caller which part was
    /// wrong.
    #[error("invalid role id or secret id")]
    LoginDenied,
    /// The store or the sealer failed, or a record did not open. For
    /// operators, never for clients.
    #[error("storage: {0}")]
    Storage(String),
}

impl From<StoreError> for VaultError {
    fn from(e: StoreError) -> Self {
        VaultError::Storage(e.0)
    }
}

impl From<PathError> for VaultError {
    fn from(e: PathError) -> Self {
        VaultError::InvalidPath(e.to_string())
    }
}

/// A refused tenant or role name.
impl From<NameError> for VaultError {
    fn from(e: NameError) -> Self {
        VaultError::InvalidPath(e.to_string())
    }
}

impl From<CidrError> for VaultError {
    fn from(e: CidrError) -> Self {
        VaultError::InvalidInput(e.to_string())
    }
}
