//! [`Log`]: appends with group commit, reads, search by time, retention.
//! Re-sealing of immutable segments is in [`reseal`].

mod reseal;

use std::fs::{self, File};
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rampart_identity::fsutil;

use crate::error::LogError;
use crate::frame::{self, Header, HEADER_LEN};
use crate::options::{Level, LogOptions, SyncPolicy};
use crate::report::{LogStats, RecoveryReport, RetentionReport};
use crate::retention::{self, Candidate, Limits};
use crate::scan::{self, BlockMeta, ScanParams};
use crate::segment;

/// Where an append landed and how durable it was when acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Appended {
    pub first_offset: u64,
    pub count: u32,
    pub level: Level,
}

/// One stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Message {
    pub offset: u64,
    /// The timestamp given to the append that stored it.
    pub timestamp_ms: u64,
    pub payload: Bytes,
}

/// Where a reader starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadFrom {
    Earliest,
    /// Only what is appended from now on.
    Latest,
    Offset(u64),
    /// The first block stamped at or after this time (or the end).
    Timestamp(u64),
}

/// A durable, segmented, append-only log of one stream. `Send + Sync`: share
/// it behind an `Arc`.
#[derive(Debug)]
pub struct Log {
    shared: Arc<Shared>,
    syncer: Option<Syncer>,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    opts: LogOptions,
    state: Mutex<State>,
    /// Held by retention and by [`Log::reseal`] for their whole run, so that
    /// they never work on the same segment at once. Taken before `state`,
    /// which they hold only briefly.
    maintenance: Mutex<()>,
    /// Signalled when an fsync finishes ([`Cue::Synced`]).
    synced: Condvar,
    /// Signalled when a block is written (or the log fails), so the appender
    /// holding the next reserved offsets can write its block
    /// ([`Cue::Turn`]).
    turn: Condvar,
    appends: AtomicU64,
    fsyncs: AtomicU64,
    bytes_written: AtomicU64,
}

#[derive(Debug)]
struct State {
    /// Never empty; the last one is the active segment.
    segments: Vec<Segment>,
    /// Next offset to be written.
    next_offset: u64,
    /// Next offset to hand out: appenders reserve their range here, seal
    /// outside the lock, then write in reservation order.
    reserved_next: u64,
    /// Sorted, disjoint.
    damaged: Vec<Range<u64>>,
    ts_max: u64,
    /// Every offset below this is covered by an fsync.
    synced_upto: u64,
    /// An fsync is running outside the lock.
    syncing: bool,
    failed: bool,
    /// Threads waiting on each [`Cue`], so that a signal nobody waits for
    /// is not sent (see [`Shared::wait`]).
    waiting: [u32; 2],
}

/// What a thread inside the log waits for: one condition variable each.
#[derive(Debug, Clone, Copy)]
enum Cue {
    /// Its turn to write the block it reserved offsets for.
    Turn = 0,
    /// An fsync to finish.
    Synced = 1,
}

#[derive(Debug)]
struct Segment {
    base: u64,
    path: PathBuf,
    file: Arc<File>,
    /// End of the last block.
    len: u64,
    /// Size of the file: `len` plus any preallocated zeros after it.
    alloc: u64,
    blocks: Vec<BlockMeta>,
}

/// The first preallocation step of a segment; each later one doubles, up to
/// `LogOptions::preallocate_bytes`.
const PREALLOC_MIN: u64 = 64 << 10;

#[derive(Debug)]
struct Syncer {
    /// Dropping it stops the thread.
    stop: mpsc::Sender<()>,
    handle: JoinHandle<()>,
}

/// One segment of a [`Log::snapshot`]: its file name in the log
/// directory and the bytes to copy.
#[derive(Debug)]
pub struct SegmentCopy {
    /// The file name (`<first offset>.seg`).
    pub name: String,
    file: Arc<File>,
    /// Bytes to copy: the end of the segment's last block.
    pub len: u64,
}

impl SegmentCopy {
    /// Writes the segment's first `len` bytes to `out`.
    pub fn copy_to(&self, out: &mut dyn io::Write) -> io::Result<()> {
        let mut buf = vec![0u8; 256 << 10];
        let mut pos = 0u64;
        while pos < self.len {
            let n = usize::try_from((self.len - pos).min(buf.len() as u64)).unwrap_or(buf.len());
            segment::read_at(&self.file, pos, &mut buf[..n])?;
            out.write_all(&buf[..n])?;
            pos += n as u64;
        }
        Ok(())
    }
}

// === impl Log ===

impl Log {
    /// Opens (creating if needed) the log in `dir`, checking every frame.
    pub fn open(dir: &Path, opts: LogOptions) -> Result<(Log, RecoveryReport), LogError> {
        opts.validate().map_err(LogError::InvalidOptions)?;
        let started = Instant::now();
        fsutil::create_private_dir(dir).map_err(LogError::io("create the log directory"))?;
        // A rewrite cut short left its `.tmp` beside the whole old segment.
        segment::remove_leftovers(dir).map_err(LogError::io("delete leftover temporary files"))?;
        let (state, mut report) = recover(dir, &opts)?;
        report.elapsed = started.elapsed();
        tracing::info!(
            dir = %dir.display(),
            segments = report.segments,
            bytes = report.bytes_scanned,
            mb_per_sec = report.mb_per_sec(),
            truncated = report.truncated_bytes,
            damaged_ranges = report.damaged.len(),
            "log recovered"
        );
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            opts,
            state: Mutex::new(state),
            maintenance: Mutex::new(()),
            synced: Condvar::new(),
            turn: Condvar::new(),
            appends: AtomicU64::new(0),
            fsyncs: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
        });
        let syncer = match shared.opts.sync {
            SyncPolicy::IntervalMs(ms) => Some(Syncer::spawn(
                Arc::clone(&shared),
                Duration::from_millis(ms),
            )?),
            _ => None,
        };
        Ok((Log { shared, syncer }, report))
    }

    /// Appends `messages` as one block stamped `timestamp_ms`, returning once
    /// the level of the sync policy is reached.
    pub fn append(&self, messages: &[&[u8]], timestamp_ms: u64) -> Result<Appended, LogError> {
        let sh = &*self.shared;
        let max = u64::from(sh.opts.max_block_bytes);
        let count = u32::try_from(messages.len())
            .map_err(|_| LogError::BlockTooLarge { len: u64::MAX, max })?;
        if count == 0 {
            return Err(LogError::EmptyBatch);
        }
        let body = frame::encode_body(messages)
            .filter(|b| b.len() as u64 <= max)
            .ok_or_else(|| LogError::BlockTooLarge {
                len: messages.iter().map(|m| 4 + m.len() as u64).sum(),
                max,
            })?;

        // Reserve the offsets, then seal outside the lock so that sealing
        // (AES-GCM over the whole block) overlaps other appenders' work;
        // blocks are still written strictly in offset order.
        let first_offset = {
            let mut st = sh.lock();
            if st.failed {
                return Err(LogError::Failed);
            }
            let first = st.reserved_next;
            st.reserved_next += u64::from(count);
            first
        };
        let frame = sh
            .opts
            .sealer
            .seal(first_offset, &body)
            .map_err(|reason| LogError::Seal { reason })
            .and_then(|sealed| {
                if sealed.len() as u64 > max {
                    return Err(LogError::BlockTooLarge {
                        len: sealed.len() as u64,
                        max,
                    });
                }
                Ok(frame::encode(first_offset, count, timestamp_ms, &sealed))
            });
        let mut st = sh.lock();
        while st.next_offset != first_offset && !st.failed {
            st = sh.wait(st, Cue::Turn);
        }
        if st.failed {
            sh.notify(&st, Cue::Turn);
            return Err(LogError::Failed);
        }
        // A reserved range must be written or the log stops: later
        // reservations wait on it, and offsets have no gaps.
        let written = frame
            .and_then(|frame| sh.write_frame(&mut st, &frame, first_offset, count, timestamp_ms));
        if let Err(e) = written {
            st.failed = true;
            sh.notify(&st, Cue::Turn);
            return Err(e);
        }
        sh.notify(&st, Cue::Turn);
        let end = st.next_offset;
        let level = match sh.opts.sync {
            SyncPolicy::OnCommit => {
                sh.wait_durable(st, end)?;
                Level::Fsynced
            }
            _ => Level::Written,
        };
        Ok(Appended {
            first_offset,
            count,
            level,
        })
    }

    /// Up to `max_messages` messages from `from_offset` on. Stops early before
    /// a damaged range; a read that starts in one fails with
    /// [`LogError::Damaged`].
    pub fn read(&self, from_offset: u64, max_messages: usize) -> Result<Vec<Message>, LogError> {
        let plan = self.shared.lock().plan_read(from_offset, max_messages)?;
        let mut out = Vec::new();
        for (file, block) in plan {
            let (ts, payloads) = match self.shared.load_block(&file, &block) {
                Ok(b) => b,
                Err(e) if out.is_empty() => return Err(e),
                Err(_) => break,
            };
            for (offset, payload) in (block.first_offset..).zip(payloads) {
                if offset < from_offset {
                    continue;
                }
                if out.len() == max_messages {
                    break;
                }
                out.push(Message {
                    offset,
                    timestamp_ms: ts,
                    payload,
                });
            }
        }
        Ok(out)
    }

    /// The first offset of the first block stamped at or after
    /// `timestamp_ms`.
    pub fn offset_at_or_after(&self, timestamp_ms: u64) -> Option<u64> {
        let st = self.shared.lock();
        st.segments.iter().find_map(|s| {
            let last = s.blocks.last()?;
            if last.ts_index < timestamp_ms {
                return None;
            }
            let i = s.blocks.partition_point(|b| b.ts_index < timestamp_ms);
            s.blocks.get(i).map(|b| b.first_offset)
        })
    }

    /// The oldest offset still kept (it may lie in a damaged range).
    pub fn first_offset(&self) -> u64 {
        self.shared.lock().first_offset()
    }

    /// The offset the next append will get.
    pub fn next_offset(&self) -> u64 {
        self.shared.lock().next_offset
    }

    /// A cursor that reads forward across segments.
    pub fn reader(&self, from: ReadFrom) -> LogReader<'_> {
        let next = match from {
            ReadFrom::Earliest => self.first_offset(),
            ReadFrom::Latest => self.next_offset(),
            ReadFrom::Offset(o) => o,
            ReadFrom::Timestamp(t) => self
                .offset_at_or_after(t)
                .unwrap_or_else(|| self.next_offset()),
        };
        LogReader { log: self, next }
    }

    /// Deletes whole sealed segments, oldest first, while the log is over
    /// `max_bytes` or a segment's newest block is older than `max_age_ms`.
    /// The active segment is never deleted, nor any segment holding offsets
    /// at or after `keep_from`. Waits for a running [`Log::reseal`].
    pub fn apply_retention(
        &self,
        max_age_ms: Option<u64>,
        max_bytes: Option<u64>,
        now_ms: u64,
        keep_from: Option<u64>,
    ) -> Result<RetentionReport, LogError> {
        let sh = &*self.shared;
        let _maintenance = sh.maintenance();
        let (removed, plan, first_offset) = {
            let mut st = sh.lock();
            let total = st.segments.iter().map(|s| s.len).sum();
            let candidates: Vec<Candidate> = st
                .segments
                .windows(2)
                .map(|w| Candidate {
                    end_offset: w[1].base,
                    bytes: w[0].len,
                    newest_ms: w[0].blocks.last().map(|b| b.ts_index),
                })
                .collect();
            let limits = Limits {
                max_age_ms,
                max_bytes,
                now_ms,
                keep_from,
            };
            let plan = retention::plan(&candidates, total, &limits);
            let removed: Vec<Segment> = st.segments.drain(..plan.delete).collect();
            let first = st.first_offset();
            st.damaged.retain_mut(|r| {
                r.start = r.start.max(first);
                r.start < r.end
            });
            (removed, plan, first)
        };
        // Readers hold their own handles, so files go outside the lock.
        let mut bytes_deleted = 0;
        for seg in &removed {
            match fs::remove_file(&seg.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(LogError::io("delete a segment")(e)),
            }
            bytes_deleted += seg.len;
        }
        if !removed.is_empty() {
            segment::sync_dir(&sh.dir).map_err(LogError::io("sync the log directory"))?;
        }
        Ok(RetentionReport {
            segments_deleted: removed.len(),
            bytes_deleted,
            kept_for_consumer: plan.kept_for_consumer,
            first_offset,
        })
    }

    /// Every segment as it stands now, to copy while appends go on: each
    /// up to the end of its last block, without the preallocated zeros of
    /// the active one. The copies read through handles taken now, so a
    /// segment that retention deletes or a reseal replaces meanwhile is
    /// still read whole, as it was (bytes below a segment's end never
    /// change in place).
    pub fn snapshot(&self) -> Vec<SegmentCopy> {
        self.shared
            .lock()
            .segments
            .iter()
            .map(|s| SegmentCopy {
                name: s
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                file: Arc::clone(&s.file),
                len: s.len,
            })
            .collect()
    }

    /// Bytes the log's segments hold now.
    pub fn disk_bytes(&self) -> u64 {
        self.shared.lock().segments.iter().map(|s| s.len).sum()
    }

    /// Fsyncs everything appended so far, whatever the sync policy (a
    /// clean stop calls it: dropping the log fsyncs only with `interval`).
    /// Blocks; returns at once when every append is already covered.
    pub fn sync(&self) -> Result<(), LogError> {
        let sh = &*self.shared;
        if sh.opts.sync == SyncPolicy::None {
            // Without a policy a full segment is not fsynced when the next
            // one starts: the earlier segments are fsynced here.
            let st = sh.lock();
            let older: Vec<Arc<File>> = st.segments[..st.segments.len() - 1]
                .iter()
                .map(|s| Arc::clone(&s.file))
                .collect();
            drop(st);
            for f in older {
                sh.fsyncs.fetch_add(1, Ordering::Relaxed);
                fsync(&f).map_err(LogError::io("fsync a segment"))?;
            }
        }
        sh.sync_written()
    }

    /// Appends, fsyncs and bytes written since open.
    pub fn stats(&self) -> LogStats {
        let sh = &*self.shared;
        LogStats {
            appends: sh.appends.load(Ordering::Relaxed),
            fsyncs: sh.fsyncs.load(Ordering::Relaxed),
            bytes_written: sh.bytes_written.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        if let Some(syncer) = self.syncer.take() {
            drop(syncer.stop);
            if syncer.handle.join().is_err() {
                tracing::error!("log sync thread panicked");
            }
            if let Err(e) = self.shared.sync_written() {
                tracing::warn!(error = %e, "final log fsync failed");
            }
        }
    }
}

/// Reads forward from a position, across segments.
#[derive(Debug)]
pub struct LogReader<'a> {
    log: &'a Log,
    next: u64,
}

impl LogReader<'_> {
    /// The offset the next [`poll`](Self::poll) starts at.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// Moves the cursor, e.g. past a damaged range.
    pub fn seek(&mut self, offset: u64) {
        self.next = offset;
    }

    /// Up to `max` messages from the cursor; empty at the end of the log.
    pub fn poll(&mut self, max: usize) -> Result<Vec<Message>, LogError> {
        let msgs = self.log.read(self.next, max)?;
        if let Some(m) = msgs.last() {
            self.next = m.offset + 1;
        }
        Ok(msgs)
    }
}

// === impl Shared ===

impl Shared {
    /// Locks the state. A panic while it was held leaves the file and the
    /// index possibly out of step, so the log then refuses appends.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| {
            let mut st = poisoned.into_inner();
            st.failed = true;
            st
        })
    }

    /// Serialises retention and re-sealing. The mutex guards no data (the
    /// files are whole at every step), so a panic while it was held changes
    /// nothing.
    fn maintenance(&self) -> MutexGuard<'_, ()> {
        self.maintenance
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write_frame(
        &self,
        st: &mut State,
        frame: &[u8],
        first_offset: u64,
        count: u32,
        timestamp_ms: u64,
    ) -> Result<(), LogError> {
        let active_len = st.active().len;
        if active_len > 0 && active_len + frame.len() as u64 > self.opts.segment_bytes {
            self.roll(st)?;
        }
        let prealloc = self.prealloc_step_max();
        let segment_bytes = self.opts.segment_bytes;
        let seg = st.active_mut();
        let end = seg.len + frame.len() as u64;
        let written = seg
            .grow(end, prealloc, segment_bytes)
            .and_then(|()| segment::write_at(&seg.file, seg.len, frame));
        if let Err(e) = written {
            // Cut a partial frame (and any zeros) so that no later scan takes
            // what is past the last whole block for anything.
            let cut = seg.file.set_len(seg.len);
            seg.alloc = seg.len;
            if cut.is_err() {
                st.failed = true;
            }
            return Err(LogError::io("write a block")(e));
        }
        let pos = seg.len;
        seg.len = end;
        seg.alloc = seg.alloc.max(end);
        st.ts_max = st.ts_max.max(timestamp_ms);
        let ts_index = st.ts_max;
        st.active_mut().blocks.push(BlockMeta {
            first_offset,
            count,
            ts_index,
            pos,
            frame_len: frame.len() as u64,
        });
        st.next_offset = first_offset + u64::from(count);
        self.appends.fetch_add(1, Ordering::Relaxed);
        self.bytes_written
            .fetch_add(frame.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Starts a new segment at `next_offset`. Unless the policy is `None`,
    /// the old one is fsynced first, so that fsyncing the active segment
    /// covers everything before it.
    fn roll(&self, st: &mut State) -> Result<(), LogError> {
        let seg = st.active_mut();
        if seg.alloc > seg.len {
            // Give back the preallocated zeros; the fsync below makes the
            // new size durable with the data.
            if let Err(e) = seg.file.set_len(seg.len) {
                st.failed = true;
                return Err(LogError::io("trim a full segment")(e));
            }
            seg.alloc = seg.len;
        }
        if self.opts.sync != SyncPolicy::None {
            self.fsyncs.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = fsync(&st.active().file) {
                st.failed = true;
                return Err(LogError::io("fsync a full segment")(e));
            }
            st.synced_upto = st.next_offset;
        }
        let base = st.next_offset;
        let (path, file) = segment::create(&self.dir, base).map_err(|e| {
            // The file may exist without being durable or open; reopening
            // sorts that out, retrying here would not.
            st.failed = true;
            LogError::io("create a segment")(e)
        })?;
        st.segments.push(Segment {
            base,
            path,
            file: Arc::new(file),
            len: 0,
            alloc: 0,
            blocks: Vec::new(),
        });
        Ok(())
    }

    /// The largest preallocation step, or 0 when this log does not
    /// preallocate.
    fn prealloc_step_max(&self) -> u64 {
        match self.opts.sync {
            SyncPolicy::OnCommit => self.opts.preallocate_bytes,
            _ => 0,
        }
    }

    /// Waits until every offset below `target` is fsynced. One waiter at a
    /// time runs the fsync, outside the lock, for everything written so far;
    /// the others wait for it and, if it did not cover them, one of them runs
    /// the next (group commit).
    fn wait_durable<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        target: u64,
    ) -> Result<(), LogError> {
        loop {
            if st.synced_upto >= target {
                return Ok(());
            }
            if st.failed {
                return Err(LogError::Failed);
            }
            if st.syncing {
                st = self.wait(st, Cue::Synced);
                continue;
            }
            st.syncing = true;
            let upto = st.next_offset;
            let file = Arc::clone(&st.active().file);
            drop(st);
            let res = fsync(&file);
            self.fsyncs.fetch_add(1, Ordering::Relaxed);
            st = self.lock();
            st.syncing = false;
            match res {
                Ok(()) => st.synced_upto = st.synced_upto.max(upto),
                Err(e) => {
                    tracing::error!(error = %e, "log fsync failed; refusing further appends");
                    st.failed = true;
                }
            }
            self.notify(&st, Cue::Synced);
        }
    }

    /// Waits for `cue`, counted in `State::waiting` while it waits.
    fn wait<'a>(&'a self, mut st: MutexGuard<'a, State>, cue: Cue) -> MutexGuard<'a, State> {
        st.waiting[cue as usize] += 1;
        let mut st = self.cv(cue).wait(st).unwrap_or_else(|p| p.into_inner());
        st.waiting[cue as usize] -= 1;
        st
    }

    /// Wakes every thread waiting for `cue`, if there is one. `st` is the
    /// held state, so no waiter can be between its check and its wait.
    ///
    /// std's `Condvar` on Linux makes a futex system call on every notify,
    /// waiters or not, and the log signalled both of its cues on every
    /// `on_commit` append: two system calls per block on the appender's
    /// path with one appender, where nobody ever waits.
    fn notify(&self, st: &State, cue: Cue) {
        if st.waiting[cue as usize] > 0 {
            self.cv(cue).notify_all();
        }
    }

    /// The condition variable of `cue`.
    fn cv(&self, cue: Cue) -> &Condvar {
        match cue {
            Cue::Turn => &self.turn,
            Cue::Synced => &self.synced,
        }
    }

    fn sync_written(&self) -> Result<(), LogError> {
        let st = self.lock();
        let target = st.next_offset;
        self.wait_durable(st, target)
    }

    /// Reads one block back, checking it again (the disk may have changed
    /// since the scan) and opening it.
    fn load_block(&self, file: &File, b: &BlockMeta) -> Result<(u64, Vec<Bytes>), LogError> {
        let damaged = LogError::Damaged {
            from: b.first_offset,
            to: b.end_offset(),
        };
        // frame_len comes from a header that passed the length cap.
        let len = usize::try_from(b.frame_len).map_err(|_| LogError::Damaged {
            from: b.first_offset,
            to: b.end_offset(),
        })?;
        let mut buf = vec![0u8; len];
        segment::read_at(file, b.pos, &mut buf).map_err(LogError::io("read a block"))?;
        let Some(h) = checked_frame(&buf, b, self.opts.max_block_bytes) else {
            return Err(damaged);
        };
        let payload = &buf[HEADER_LEN..];
        let plain = self
            .opts
            .sealer
            .open(b.first_offset, payload)
            .map_err(|reason| {
                tracing::warn!(from = b.first_offset, %reason, "log block failed to unseal");
                LogError::Unsealable {
                    from: b.first_offset,
                    to: b.end_offset(),
                }
            })?;
        let msgs = frame::decode_body(Bytes::from(plain), b.count).ok_or(damaged)?;
        Ok((h.timestamp_ms, msgs))
    }
}

/// The header of `buf`, the frame of block `b` read back, if it is still the
/// frame the scan found: a valid header for the same offsets, within the
/// cap, and a matching CRC.
fn checked_frame(buf: &[u8], b: &BlockMeta, max_payload: u32) -> Option<Header> {
    let h = frame::decode_header(buf, max_payload).ok()?;
    let same =
        h.first_offset == b.first_offset && h.count == b.count && h.frame_len() == buf.len() as u64;
    let payload = buf.get(HEADER_LEN..)?;
    (same && frame::crc_matches(&h, buf, payload)).then_some(h)
}

#[cfg(not(test))]
fn fsync(file: &File) -> io::Result<()> {
    let started = Instant::now();
    let r = file.sync_data();
    crate::latency::record(started.elapsed());
    r
}

#[cfg(test)]
impl Log {
    /// Threads counted as waiting on each [`Cue`] (turn, synced).
    pub(crate) fn waiting(&self) -> [u32; 2] {
        self.shared.lock().waiting
    }
}

/// Tests run on fast or caching disks; a slower fsync makes the overlap of
/// concurrent appenders, and so the group-commit test, deterministic.
#[cfg(test)]
fn fsync(file: &File) -> io::Result<()> {
    thread::sleep(Duration::from_millis(2));
    file.sync_data()
}

// === impl Segment ===

impl Segment {
    /// Makes sure the file holds at least `end` bytes, preallocating with
    /// zeros in doubling steps of at most `step_max` (0: none) and never past
    /// `segment_bytes` beyond what `end` needs.
    fn grow(&mut self, end: u64, step_max: u64, segment_bytes: u64) -> io::Result<()> {
        if step_max == 0 || end <= self.alloc {
            return Ok(());
        }
        let step = self.alloc.clamp(PREALLOC_MIN.min(step_max), step_max);
        let target = (self.alloc + step).min(segment_bytes).max(end);
        segment::write_zeros(&self.file, self.alloc, target)?;
        self.alloc = target;
        Ok(())
    }
}

// === impl State ===

impl State {
    fn active(&self) -> &Segment {
        // Invariant: `segments` is never empty (open creates one, retention
        // keeps the active one).
        &self.segments[self.segments.len() - 1]
    }

    fn active_mut(&mut self) -> &mut Segment {
        let last = self.segments.len() - 1;
        &mut self.segments[last]
    }

    fn first_offset(&self) -> u64 {
        self.segments.first().map_or(self.next_offset, |s| s.base)
    }

    fn damaged_at(&self, offset: u64) -> Option<Range<u64>> {
        self.damaged.iter().find(|r| r.contains(&offset)).cloned()
    }

    fn locate(&self, offset: u64) -> Option<(Arc<File>, BlockMeta)> {
        let si = self
            .segments
            .partition_point(|s| s.base <= offset)
            .checked_sub(1)?;
        let seg = &self.segments[si];
        let bi = seg
            .blocks
            .partition_point(|b| b.first_offset <= offset)
            .checked_sub(1)?;
        let b = seg.blocks[bi];
        (offset < b.end_offset()).then(|| (Arc::clone(&seg.file), b))
    }

    /// The blocks to read for `read(from, max)`, chosen under the lock and
    /// read outside it.
    fn plan_read(&self, from: u64, max: usize) -> Result<Vec<(Arc<File>, BlockMeta)>, LogError> {
        let (first, next) = (self.first_offset(), self.next_offset);
        if from < first || from > next {
            return Err(LogError::OutOfRange {
                requested: from,
                first,
                next,
            });
        }
        let mut plan = Vec::new();
        let mut cur = from;
        let mut planned = 0u64;
        while planned < max as u64 && cur < next {
            if let Some(r) = self.damaged_at(cur) {
                if plan.is_empty() {
                    return Err(LogError::Damaged {
                        from: r.start,
                        to: r.end,
                    });
                }
                break;
            }
            let Some((file, b)) = self.locate(cur) else {
                // Unreachable by construction (every gap is a damaged range),
                // but never serve what we cannot account for.
                if plan.is_empty() {
                    return Err(LogError::Damaged {
                        from: cur,
                        to: cur + 1,
                    });
                }
                break;
            };
            planned += b.end_offset() - cur;
            cur = b.end_offset();
            plan.push((file, b));
        }
        Ok(plan)
    }
}

// === recovery ===

fn recover(dir: &Path, opts: &LogOptions) -> Result<(State, RecoveryReport), LogError> {
    let listed = segment::list(dir).map_err(LogError::io("list segments"))?;
    let mut report = RecoveryReport {
        segments: listed.len(),
        ..RecoveryReport::default()
    };
    let mut segments = Vec::with_capacity(listed.len().max(1));
    let mut damaged: Vec<Range<u64>> = Vec::new();
    let mut ts_max = 0;
    let mut next_offset = 0;
    for (i, (base, path)) in listed.iter().enumerate() {
        let bound = listed.get(i + 1).map(|(b, _)| *b);
        let last = bound.is_none();
        let file = if last {
            segment::open_for_write(path)
        } else {
            segment::open_for_read(path)
        }
        .map_err(LogError::io("open a segment"))?;
        let file_len = file
            .metadata()
            .map_err(LogError::io("stat a segment"))?
            .len();
        let params = ScanParams {
            base: *base,
            bound,
            max_payload: opts.max_block_bytes,
            ts_floor: ts_max,
        };
        let s = scan::scan(&file, file_len, &params).map_err(LogError::io("scan a segment"))?;
        report.bytes_scanned += file_len;
        report.blocks += s.blocks.len();
        report.corrupt_regions += s.corrupt_regions;
        damaged.extend(s.damaged.iter().cloned());
        // Preallocated zeros after the last block are free space: kept in
        // the active segment, to be written over.
        let mut len = file_len - s.zero_tail;
        match bound {
            None if s.tail_junk > 0 => {
                tracing::warn!(segment = %path.display(), bytes = s.tail_junk, "truncating torn log tail");
                file.set_len(s.valid_len)
                    .and_then(|()| file.sync_all())
                    .map_err(LogError::io("truncate a torn tail"))?;
                report.truncated_bytes += s.tail_junk;
                len = s.valid_len;
            }
            None => {}
            Some(b) => {
                if s.tail_junk > 0 {
                    report.corrupt_regions += 1;
                }
                if s.end_offset < b {
                    damaged.push(s.end_offset..b);
                }
            }
        }
        if !s.damaged.is_empty() || (bound.is_some_and(|b| s.end_offset < b)) {
            tracing::warn!(segment = %path.display(), "log segment has damaged ranges; they will not be served");
        }
        ts_max = s.ts_max;
        next_offset = s.end_offset;
        segments.push(Segment {
            base: *base,
            path: path.clone(),
            file: Arc::new(file),
            len,
            alloc: file_len.min(len + s.zero_tail),
            blocks: s.blocks,
        });
    }
    if segments.is_empty() {
        let (path, file) = segment::create(dir, 0).map_err(LogError::io("create a segment"))?;
        segments.push(Segment {
            base: 0,
            path,
            file: Arc::new(file),
            len: 0,
            alloc: 0,
            blocks: Vec::new(),
        });
    }
    let damaged = merge(damaged);
    report.damaged = damaged.clone();
    report.first_offset = segments[0].base;
    report.next_offset = next_offset;
    let state = State {
        segments,
        next_offset,
        reserved_next: next_offset,
        damaged,
        ts_max,
        // What was found on disk is taken as the starting point; a crash of
        // the machine before the last run's fsync is what the scan repairs.
        synced_upto: next_offset,
        syncing: false,
        waiting: [0; 2],
        failed: false,
    };
    Ok((state, report))
}

/// Merges sorted ranges that touch or overlap.
fn merge(ranges: Vec<Range<u64>>) -> Vec<Range<u64>> {
    let mut out: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(prev) if r.start <= prev.end => prev.end = prev.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

// === impl Syncer ===

impl Syncer {
    fn spawn(shared: Arc<Shared>, every: Duration) -> Result<Syncer, LogError> {
        let (stop, rx) = mpsc::channel::<()>();
        let handle = thread::Builder::new()
            .name("rampart-log-sync".into())
            .spawn(move || {
                // A message or a dropped sender both mean stop.
                while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(every) {
                    if let Err(e) = shared.sync_written() {
                        tracing::error!(error = %e, "interval log fsync failed; stopping");
                        break;
                    }
                }
            })
            .map_err(LogError::io("start the log sync thread"))?;
        Ok(Syncer { stop, handle })
    }
}
