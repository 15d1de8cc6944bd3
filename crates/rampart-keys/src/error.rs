//! Why a key operation failed. No message ever carries key material,
//! plaintext or a token.

use std::time::Duration;

use rampart_store::StoreError;

/// A key-management failure. The messages are for operators; map them to a
/// generic client answer at the edge (a client only ever needs to know that
/// something could not be decrypted).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// No master key where one was expected (unset variable, absent file).
    #[error("no master key: {origin}")]
    MasterKeyMissing { origin: String },
    /// The master key source is there but not usable. `reason` never quotes
    /// the key.
    #[error("master key from {origin} is malformed: {reason}")]
    MasterKeyMalformed { origin: String, reason: String },
    /// A value was wrapped under a master key version this provider does not
    /// hold (an older key file, another key).
    #[error("value is wrapped under master key version {0}, which the master key provider does not hold")]
    UnknownMasterVersion(u32),
    /// The master key does not open the keyring's check value: it is not the
    /// key this data was written with. Nothing was read or written.
    #[error("the master key ({provider}) is not the one this data was written with; nothing was changed")]
    WrongMasterKey { provider: String },
    /// Authentication failed: the ciphertext was altered or truncated, or it
    /// is being opened as another resource, tenant or key version.
    #[error("ciphertext failed authentication (altered, or opened as a different resource)")]
    Tampered,
    /// The keys needed were destroyed on purpose (tenant or stream erasure).
    #[error("the keys of {what} were erased")]
    Erased { what: String },
    /// A tenant, kind, namespace or name that cannot be used in a key.
    #[error("invalid {what}: {reason}")]
    InvalidName {
        what: &'static str,
        reason: &'static str,
    },
    /// [`crate::TenantKeys::seal`] was given an identity of another tenant.
    #[error("the keys of tenant {keys} cannot seal data of tenant {labelled}")]
    TenantMismatch { keys: String, labelled: String },
    /// The provider cannot make a new master key version.
    #[error("{provider} cannot rotate: {reason}")]
    RotationUnsupported { provider: String, reason: String },
    /// Reading or writing a key file.
    #[error("{what}: {reason}")]
    Io { what: String, reason: String },
    /// Invalid provider configuration.
    #[error("invalid key provider configuration: {0}")]
    Config(String),
    /// Connecting to, or talking HTTP with, the transit server.
    #[error("transit server: {0}")]
    Transit(String),
    /// The transit server answered with an unexpected status. `message` is
    /// the server's own error text, shortened.
    #[error("transit {op} answered HTTP {status}: {message}")]
    TransitStatus {
        op: &'static str,
        status: u16,
        message: String,
    },
    /// The configured transit key does not exist (it is never created
    /// implicitly: see [`crate::VaultTransit::ensure_key`]).
    #[error("transit key {key} does not exist")]
    TransitKeyNotFound { key: String },
    /// A transit request ran out of time.
    #[error("transit request took longer than {0:?}")]
    Timeout(Duration),
    /// The key store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A keyring record cannot be used as stored.
    #[error("keyring record {key}: {reason}")]
    Corrupt { key: String, reason: String },
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed")]
    Random,
}
