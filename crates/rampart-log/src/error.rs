//! [`LogError`].

use std::io;

/// Why a log operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    #[error("log i/o failed while trying to {op}: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// Offsets `from..to` were lost or corrupted on disk; they are never
    /// served, so a reader can skip to `to` if it accepts the loss.
    #[error("offsets {from}..{to} are damaged and will not be served")]
    Damaged { from: u64, to: u64 },
    /// The block holding `from..to` passed its CRC but failed to unseal: it
    /// was altered or moved from another place.
    #[error("block at offsets {from}..{to} failed to unseal")]
    Unsealable { from: u64, to: u64 },
    #[error("offset {requested} is outside the log ({first}..{next})")]
    OutOfRange {
        requested: u64,
        first: u64,
        next: u64,
    },
    #[error("an append needs at least one message")]
    EmptyBatch,
    #[error("block of {len} bytes is over the {max}-byte cap")]
    BlockTooLarge { len: u64, max: u64 },
    #[error("sealing the block failed: {reason}")]
    Seal { reason: String },
    /// An earlier write or fsync failed; what reached the disk is unknown, so
    /// the log takes no more appends until it is reopened (and recovered).
    #[error("the log refuses appends after an earlier write or fsync failure")]
    Failed,
    #[error("invalid log options: {0}")]
    InvalidOptions(&'static str),
}

impl LogError {
    pub(crate) fn io(op: &'static str) -> impl FnOnce(io::Error) -> LogError {
        move |source| LogError::Io { op, source }
    }
}
