//! Re-sealing of immutable segments, after the keys behind the sealer were
//! rotated: [`Log::roll`], [`Log::count_stale`], [`Log::reseal`].
//!
//! A segment is rewritten whole into `<name>.tmp`, which is fsynced and
//! renamed over the segment; the directory is fsynced after. A crash at any
//! point leaves either the old or the new file under the segment's name, both
//! complete, and [`Log::open`] deletes a leftover `.tmp`. Readers that
//! planned a read on the old file keep its handle and read the old file;
//! reads planned after the swap use the new one.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use rampart_identity::fsutil;

use super::{checked_frame, Log, Shared, State};
use crate::error::LogError;
use crate::frame::{self, Header, HEADER_LEN};
use crate::report::{ResealReport, StaleCount};
use crate::scan::{BlockMeta, Window};
use crate::segment;

/// An immutable segment as it was when looked at.
struct Snapshot {
    base: u64,
    path: PathBuf,
    file: Arc<File>,
    len: u64,
    blocks: Vec<BlockMeta>,
    /// Holds a damaged range, or bytes that are not one of its blocks.
    damaged: bool,
}

/// What a read of one segment's blocks found.
#[derive(Debug, Default)]
struct Survey {
    stale: u64,
    /// A block no longer passes its checks (the disk changed since open).
    unreadable: bool,
}

/// A segment written again, ready to replace the old one.
struct Rewritten {
    len: u64,
    blocks: Vec<BlockMeta>,
    /// Blocks the predicate still calls stale after sealing.
    still_stale: u64,
}

/// What [`Shared::rewrite`] reports of a replaced segment.
struct Replaced {
    blocks: u64,
    still_stale: u64,
}

impl Log {
    /// Starts a new active segment if the active one holds any block, so
    /// every block written so far lies in an immutable segment.
    pub fn roll(&self) -> Result<(), LogError> {
        let sh = &*self.shared;
        let mut st = sh.lock();
        if st.failed {
            return Err(LogError::Failed);
        }
        if st.active().blocks.is_empty() {
            return Ok(());
        }
        sh.roll(&mut st)
    }

    /// Counts the blocks of immutable (non-active) segments, and among them
    /// those for which `stale(sealed_payload)` is true. `stale` is called
    /// once per block that still passes its CRC; a block that no longer does
    /// is counted in `blocks` only.
    pub fn count_stale(&self, stale: &dyn Fn(&[u8]) -> bool) -> Result<StaleCount, LogError> {
        let sh = &*self.shared;
        let snaps = sh.lock().immutable();
        let mut out = StaleCount::default();
        for s in &snaps {
            out.blocks += s.blocks.len() as u64;
            out.stale += sh.survey(s, stale)?.stale;
        }
        Ok(out)
    }

    /// Rewrites every immutable segment holding at least one stale block:
    /// each block of it is opened with the log's sealer and sealed again
    /// (the sealer seals with its current key), into a new file that
    /// replaces the old one atomically (write `<name>.tmp`, fsync, rename
    /// over, fsync the directory). Offsets, timestamps, block boundaries and
    /// the segment name stay the same; readers keep working throughout (a
    /// reader holding the old file handle reads the old file). One segment
    /// at a time; `progress(stale_blocks_left)` is called after each
    /// rewritten segment. A segment with a damaged range is left unchanged
    /// and counted in the report (never rewrite what cannot be read).
    ///
    /// Appends go on meanwhile; [`Log::apply_retention`] waits for it. Each
    /// re-sealed block is checked to open to the same plaintext before the
    /// segment is replaced. Fails, leaving the segment being worked on
    /// unchanged, if sealing fails ([`LogError::Seal`]), if a re-sealed
    /// payload is over `max_block_bytes` ([`LogError::BlockTooLarge`]) or on
    /// an i/o error; segments already replaced stay replaced.
    pub fn reseal(
        &self,
        stale: &dyn Fn(&[u8]) -> bool,
        progress: &mut dyn FnMut(u64),
    ) -> Result<ResealReport, LogError> {
        let sh = &*self.shared;
        let _maintenance = sh.maintenance();
        let snaps = sh.lock().immutable();
        let mut todo = Vec::new();
        let mut left = 0u64;
        for s in snaps {
            let survey = sh.survey(&s, stale)?;
            if survey.stale > 0 {
                left += survey.stale;
                todo.push((s, survey));
            }
        }
        let mut report = ResealReport::default();
        for (s, survey) in todo {
            let rewritten = if s.damaged || survey.unreadable {
                None
            } else {
                sh.rewrite(&s, stale)?
            };
            let Some(done) = rewritten else {
                tracing::warn!(
                    segment = %s.path.display(),
                    stale = survey.stale,
                    "log segment has unreadable parts; not re-sealing it"
                );
                report.segments_skipped_damaged += 1;
                continue;
            };
            report.segments_rewritten += 1;
            report.blocks_resealed += done.blocks;
            left = left.saturating_sub(survey.stale) + done.still_stale;
            progress(left);
        }
        report.stale_left = left;
        tracing::info!(
            dir = %sh.dir.display(),
            segments = report.segments_rewritten,
            blocks = report.blocks_resealed,
            skipped_damaged = report.segments_skipped_damaged,
            stale_left = report.stale_left,
            "log segments re-sealed"
        );
        Ok(report)
    }
}

impl Shared {
    /// Reads every block of `s`, calling `stale` on the payloads that still
    /// pass their checks.
    fn survey(&self, s: &Snapshot, stale: &dyn Fn(&[u8]) -> bool) -> Result<Survey, LogError> {
        let mut w = Window::new(&s.file, s.len);
        let mut out = Survey::default();
        for b in &s.blocks {
            let frame = frame_of(&mut w, b, self.opts.max_block_bytes)
                .map_err(LogError::io("read a block"))?;
            match frame {
                Some((_, payload)) if stale(payload) => out.stale += 1,
                Some(_) => {}
                None => out.unreadable = true,
            }
        }
        Ok(out)
    }

    /// Replaces segment `s` by a re-sealed copy. `None` (nothing changed) if
    /// one of its blocks cannot be read or opened.
    fn rewrite(
        &self,
        s: &Snapshot,
        stale: &dyn Fn(&[u8]) -> bool,
    ) -> Result<Option<Replaced>, LogError> {
        let tmp = segment::tmp_path(&s.path);
        let new = match self.write_resealed(s, &tmp, stale) {
            Ok(Some(new)) => new,
            other => {
                remove_quietly(&tmp);
                return other.map(|_| None);
            }
        };
        if let Err(e) = fs::rename(&tmp, &s.path) {
            remove_quietly(&tmp);
            return Err(LogError::io("replace a segment")(e));
        }
        // From here the new file is the segment on disk; until the swap
        // below, reads still go to the old one, which is as good.
        let file = segment::open_for_read(&s.path).map_err(LogError::io("open a segment"))?;
        segment::sync_dir(&self.dir).map_err(LogError::io("sync the log directory"))?;
        {
            let mut st = self.lock();
            // The maintenance lock keeps retention away, so the segment is
            // still there.
            match st
                .segments
                .iter_mut()
                .find(|seg| seg.base == s.base && Arc::ptr_eq(&seg.file, &s.file))
            {
                Some(seg) => {
                    seg.file = Arc::new(file);
                    seg.len = new.len;
                    seg.blocks = new.blocks;
                }
                None => tracing::error!(
                    segment = %s.path.display(),
                    "re-sealed log segment vanished from the index"
                ),
            }
        }
        Ok(Some(Replaced {
            blocks: s.blocks.len() as u64,
            still_stale: new.still_stale,
        }))
    }

    /// Writes the re-sealed copy of `s` to `tmp` and fsyncs it. `None` if a
    /// block cannot be read or opened.
    fn write_resealed(
        &self,
        s: &Snapshot,
        tmp: &Path,
        stale: &dyn Fn(&[u8]) -> bool,
    ) -> Result<Option<Rewritten>, LogError> {
        let max = self.opts.max_block_bytes;
        let sealer = &*self.opts.sealer;
        // One left by an earlier attempt that failed in this process.
        remove_quietly(tmp);
        let file =
            fsutil::create_private_file(tmp).map_err(LogError::io("create a temporary segment"))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let mut w = Window::new(&s.file, s.len);
        let mut blocks = Vec::with_capacity(s.blocks.len());
        let mut still_stale = 0;
        let mut pos = 0u64;
        for b in &s.blocks {
            let Some((h, payload)) =
                frame_of(&mut w, b, max).map_err(LogError::io("read a block"))?
            else {
                return Ok(None);
            };
            let body = match sealer.open(b.first_offset, payload) {
                Ok(plain) => Bytes::from(plain),
                Err(reason) => {
                    tracing::warn!(from = b.first_offset, %reason, "log block failed to unseal");
                    return Ok(None);
                }
            };
            if frame::decode_body(body.clone(), b.count).is_none() {
                return Ok(None);
            }
            let sealed = sealer
                .seal(b.first_offset, &body)
                .map_err(|reason| LogError::Seal { reason })?;
            if sealed.len() as u64 > u64::from(max) {
                return Err(LogError::BlockTooLarge {
                    len: sealed.len() as u64,
                    max: u64::from(max),
                });
            }
            // The old copy is about to go: make sure the new one opens.
            if sealer.open(b.first_offset, &sealed).ok().as_deref() != Some(&body[..]) {
                return Err(LogError::Seal {
                    reason: "a re-sealed block does not open to its plaintext".into(),
                });
            }
            if stale(&sealed) {
                still_stale += 1;
            }
            let new = frame::encode(b.first_offset, b.count, h.timestamp_ms, &sealed);
            out.write_all(&new)
                .map_err(LogError::io("write a re-sealed segment"))?;
            blocks.push(BlockMeta {
                pos,
                frame_len: new.len() as u64,
                ..*b
            });
            pos += new.len() as u64;
        }
        let file = out
            .into_inner()
            .map_err(|e| LogError::io("write a re-sealed segment")(e.into_error()))?;
        file.sync_all()
            .map_err(LogError::io("fsync a re-sealed segment"))?;
        Ok(Some(Rewritten {
            len: pos,
            blocks,
            still_stale,
        }))
    }
}

impl State {
    /// The immutable segments as they are now; their files are read outside
    /// the lock.
    fn immutable(&self) -> Vec<Snapshot> {
        let n = self.segments.len() - 1;
        self.segments[..n]
            .iter()
            .zip(&self.segments[1..])
            .map(|(seg, next)| {
                let range = seg.base..next.base;
                let damaged = self
                    .damaged
                    .iter()
                    .any(|r| r.start < range.end && range.start < r.end)
                    || !tiles(&seg.blocks, seg.len);
                Snapshot {
                    base: seg.base,
                    path: seg.path.clone(),
                    file: Arc::clone(&seg.file),
                    len: seg.len,
                    blocks: seg.blocks.clone(),
                    damaged,
                }
            })
            .collect()
    }
}

/// Whether `blocks` follow each other from the start of the file to its end,
/// so that a rewrite drops no bytes it could not read.
fn tiles(blocks: &[BlockMeta], len: u64) -> bool {
    let mut pos = 0;
    for b in blocks {
        if b.pos != pos {
            return false;
        }
        pos += b.frame_len;
    }
    pos == len
}

/// The header and payload of block `b`, if its frame still passes its
/// checks.
fn frame_of<'w>(
    w: &'w mut Window<'_>,
    b: &BlockMeta,
    max: u32,
) -> io::Result<Option<(Header, &'w [u8])>> {
    let Ok(len) = usize::try_from(b.frame_len) else {
        return Ok(None);
    };
    Ok(w.get(b.pos, len)?
        .and_then(|f| Some((checked_frame(f, b, max)?, &f[HEADER_LEN..]))))
}

fn remove_quietly(path: &Path) {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "deleting a temporary file failed")
        }
    }
}
