//! Rampart's durable stream log: one directory per stream holding segmented,
//! append-only files of CRC-checked frames, each frame one sealed block of
//! messages.
//!
//! ```text
//! <dir>/                                   0700
//!   00000000000000000000.seg               0600  frames for offsets 0..
//!   00000000000000001234.seg               0600  frames from offset 1234 (active)
//!   00000000000000000000.seg.tmp           0600  a rewrite in progress (deleted at open)
//! frame = header (36 bytes, CRC32C) | payload = seal(first_offset, messages)
//! ```
//!
//! [`Log::append`] writes one batch as one block and acknowledges it at the
//! [`Level`] its [`SyncPolicy`] asks for; with [`SyncPolicy::OnCommit`],
//! concurrent appenders share fsyncs (group commit). Every message gets a
//! consecutive offset. Reads go by offset or, through
//! [`Log::offset_at_or_after`], by time.
//!
//! [`Log::open`] checks every frame. A torn tail of the last segment (a frame
//! cut short, or invalid bytes with no valid frame after them) is truncated.
//! Damage anywhere else makes the offsets it hides unreadable
//! ([`LogError::Damaged`]) rather than served wrong; valid frames after it
//! are found again and served, and appends continue after the end.
//!
//! Payloads are sealed by a [`BlockSealer`] given in [`LogOptions`]; the block's
//! first offset is bound into the seal, so a block copied elsewhere fails to
//! open ([`LogError::Unsealable`]). This crate does not know about keys.
//!
//! After a key rotation, [`Log::reseal`] rewrites every immutable segment
//! holding a block that a caller-given predicate calls stale (the log does not
//! know what makes a sealed payload stale), sealing each block again with the
//! sealer's current key. A segment is replaced atomically (`<name>.tmp`,
//! fsync, rename, directory fsync) with the same offsets, timestamps and
//! block boundaries; appends and reads go on meanwhile. [`Log::roll`] first
//! closes the active segment so that every block is covered, and
//! [`Log::count_stale`] tells how many stale blocks are left.
//!
//! # Layout
//! - `frame`: the frame and block body encodings and the CRC; pure.
//! - `seal`: the [`BlockSealer`] trait and [`Plain`].
//! - `segment`: segment file names, private creation, the `.tmp` names of
//!   rewrites and their clean-up at open, positioned reads and directory
//!   fsync.
//! - `scan`: the recovery scan of one segment: validation, resynchronising
//!   after damage, torn tails; the read-ahead window re-sealing reads with.
//! - `log`: [`Log`]: appends and group commit, reads, search by time,
//!   retention, the interval sync thread.
//! - `log::reseal`: [`Log::roll`], [`Log::count_stale`] and [`Log::reseal`]:
//!   re-sealing immutable segments after a key rotation, one segment at a
//!   time, serialised with retention.
//! - `retention`: which segments retention deletes; pure.
//! - `options`: [`LogOptions`], [`SyncPolicy`], [`Level`].
//! - `report`: [`RecoveryReport`], [`RetentionReport`], [`StaleCount`],
//!   [`ResealReport`], [`LogStats`].
//! - `error`: [`LogError`].

mod error;
mod frame;
mod latency;
mod log;
mod options;
mod report;
mod retention;
mod scan;
mod seal;
mod segment;

#[cfg(test)]
mod tests;

pub use error::LogError;
pub use latency::{fsync_latency, Histogram, Latency, FSYNC_BUCKETS_SECS};
pub use log::{Appended, Log, LogReader, Message, ReadFrom, SegmentCopy};
pub use options::{Level, LogOptions, SyncPolicy};
pub use report::{LogStats, RecoveryReport, ResealReport, RetentionReport, StaleCount};
pub use seal::{BlockSealer, Plain};
