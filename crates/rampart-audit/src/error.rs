//! Errors of starting, keying and reading the log.

use std::io;
use std::path::{Path, PathBuf};

/// Why the audit log could not be started, keyed or read. Every variant
/// names the file concerned; none carries key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// A key file is unreadable or malformed.
    #[error("audit key {}: {reason}", path.display())]
    Key { path: PathBuf, reason: String },
    #[error("audit log {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A record that must be intact is not (other than a torn last line,
    /// which start-up repairs).
    #[error("audit log {} is corrupt: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    /// The files disagree with each other: log truncated below `HEAD`,
    /// another signing key, ... Needs an operator: run `verify_dir`.
    #[error("audit log {}: {reason}", path.display())]
    Inconsistent { path: PathBuf, reason: String },
    #[error("invalid audit config: {0}")]
    Config(&'static str),
    #[error("cannot start the audit writer thread: {0}")]
    Spawn(#[source] io::Error),
    /// A key rotation did not happen; the old keys are still in force.
    #[error("audit key rotation failed: {0}")]
    Rotation(String),
}

impl AuditError {
    pub(crate) fn io(path: &Path, source: io::Error) -> AuditError {
        AuditError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn corrupt(path: &Path, reason: impl Into<String>) -> AuditError {
        AuditError::Corrupt {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }

    pub(crate) fn inconsistent(path: &Path, reason: impl Into<String>) -> AuditError {
        AuditError::Inconsistent {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}
