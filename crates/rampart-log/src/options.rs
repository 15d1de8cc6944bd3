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
    /// With [`SyncPolicy::OnCommit`], the active segment is grown ahead of
    /// the appends by writing zeros, in steps that double from 64 KiB up to
    /// this many bytes (never past `segment_bytes`). An fdatasync of blocks
    /// written over those zeros has no file-size change to journal, which
    /// on ext4 and XFS roughly halves its cost. The zeros past the last
    /// block are trimmed when the segment is rolled and recognised as free
    /// space when the log is opened. `0` turns it off; other policies never
    /// preallocate. Default 4 MiB.
    pub preallocate_bytes: u64,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            segment_bytes: 64 << 20,
            max_block_bytes: 16 << 20,
            sync: SyncPolicy::OnCommit,
            sealer: Arc::new(Plain),
            preallocate_bytes: 4 << 20,
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
            .field("preallocate_bytes", &self.preallocate_bytes)
            .finish_non_exhaustive()
    }
}
