//! What open, retention, re-sealing and the counters report.

use std::ops::Range;
use std::time::Duration;

/// What [`crate::Log::open`] found and repaired.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct RecoveryReport {
    pub segments: usize,
    pub blocks: usize,
    /// Bytes read from segment files while checking them.
    pub bytes_scanned: u64,
    /// Wall time of the whole open, scan included.
    pub elapsed: Duration,
    /// Bytes cut from the end of the last segment (a torn tail).
    pub truncated_bytes: u64,
    /// Invalid regions found before the tail (data after them was kept).
    pub corrupt_regions: usize,
    /// Offset ranges that will be refused with [`crate::LogError::Damaged`].
    pub damaged: Vec<Range<u64>>,
    pub first_offset: u64,
    pub next_offset: u64,
}

impl RecoveryReport {
    /// Scan speed in MB/s (10^6 bytes), for start-up logs.
    pub fn mb_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs <= 0.0 {
            return 0.0;
        }
        self.bytes_scanned as f64 / 1e6 / secs
    }
}

/// What [`crate::Log::apply_retention`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetentionReport {
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
    /// Segments over a limit but kept because they hold offsets at or after
    /// `keep_from`.
    pub kept_for_consumer: usize,
    /// The log's first offset afterwards.
    pub first_offset: u64,
}

/// What [`crate::Log::count_stale`] found in the immutable segments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StaleCount {
    /// Blocks of the immutable (non-active) segments.
    pub blocks: u64,
    /// Those of them whose sealed payload the predicate called stale.
    pub stale: u64,
}

/// What [`crate::Log::reseal`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResealReport {
    /// Segments replaced by a re-sealed copy.
    pub segments_rewritten: usize,
    /// Blocks sealed again (every block of a rewritten segment).
    pub blocks_resealed: u64,
    /// Segments holding stale blocks but left unchanged because part of them
    /// cannot be read (a damaged range, a block failing its CRC or its
    /// seal).
    pub segments_skipped_damaged: usize,
    /// Stale blocks left afterwards among the segments looked at: those of
    /// skipped segments, and any the sealer sealed stale again.
    pub stale_left: u64,
}

/// Counters since the log was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogStats {
    pub appends: u64,
    pub fsyncs: u64,
    pub bytes_written: u64,
}
