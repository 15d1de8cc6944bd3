//! Configuration of one stream's log and the durability levels it reports.

use std::fmt;
use std::sync::Arc;

use crate::seal::{BlockSealer, Plain};

/// When appended data is fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyncPolicy {
    /// Never fsynced by the log; the OS writes it back when it likes.
    None,
    /// A background thread fsyncs every this many milliseconds.
    IntervalMs(u64),
    /// `append` returns after an fsync that covers it; concurrent appends
    /// share fsyncs (group commit).
    OnCommit,
}

/// How far an append got before it was acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Level {
    /// Held in memory only. This log never acknowledges at this level; it
    /// exists for streams that are not durable.
    Memory,
    /// Handed to the OS with `write()`: survives a crash of the process but
    /// not of the machine.
    Written,
    /// Covered by an fsync.
    Fsynced,
}

/// Options of one stream's log.
#[derive(Clone)]
#[non_exhaustive]
pub struct LogOptions {
    /// A new segment is started before a block that would take the active
    /// segment past this size. Default 64 MiB.
    pub segment_bytes: u64,
    /// Largest sealed block payload accepted on append and on read-back,
    /// checked before allocating. Default 16 MiB.
    pub max_block_bytes: u32,
    /// Default [`SyncPolicy::OnCommit`].
    pub sync: SyncPolicy,
    /// Default [`Plain`].
    pub sealer: Arc<dyn BlockSealer>,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            segment_bytes: 64 << 20,
            max_block_bytes: 16 << 20,
            sync: SyncPolicy::OnCommit,
            sealer: Arc::new(Plain),
        }
    }
}

impl LogOptions {
    pub(crate) fn validate(&self) -> Result<(), &'static str> {
        if self.segment_bytes == 0 {
            return Err("segment_bytes must be positive");
        }
        if self.max_block_bytes == 0 {
            return Err("max_block_bytes must be positive");
        }
        if self.sync == SyncPolicy::IntervalMs(0) {
            return Err("sync interval must be positive");
        }
        Ok(())
    }
}

impl fmt::Debug for LogOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogOptions")
            .field("segment_bytes", &self.segment_bytes)
            .field("max_block_bytes", &self.max_block_bytes)
            .field("sync", &self.sync)
            .finish_non_exhaustive()
    }
}
