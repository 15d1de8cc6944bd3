//! Recovery scan of one segment file: check every frame, find where damage
//! ends by searching for the next valid frame, and tell a torn tail from
//! damage in the middle.

use std::fs::File;
use std::io;
use std::ops::Range;

use crate::frame::{self, Header, HEADER_LEN};
use crate::segment;

/// Reads are this large unless a frame is larger.
const CHUNK: usize = 1 << 20;

/// Where one valid block lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BlockMeta {
    pub first_offset: u64,
    pub count: u32,
    /// The running maximum of block timestamps, so that a search by time can
    /// bisect even if producers' clocks went backwards.
    pub ts_index: u64,
    pub pos: u64,
    pub frame_len: u64,
}

impl BlockMeta {
    pub(crate) fn end_offset(&self) -> u64 {
        self.first_offset.saturating_add(u64::from(self.count))
    }
}

#[derive(Debug, Default)]
pub(crate) struct SegmentScan {
    pub blocks: Vec<BlockMeta>,
    /// The offset after the last valid block (or the base if none).
    pub end_offset: u64,
    /// Byte length of the file up to the end of the last valid frame.
    pub valid_len: u64,
    pub damaged: Vec<Range<u64>>,
    /// Invalid bytes after the last valid frame, with no valid frame after
    /// them: a torn tail in the last segment.
    pub tail_junk: u64,
    /// Zero bytes from the end of the last valid frame to the end of the
    /// file: space the log preallocated (see `LogOptions::preallocate`),
    /// not damage.
    pub zero_tail: u64,
    /// Invalid regions followed by a valid frame.
    pub corrupt_regions: usize,
    pub ts_max: u64,
}

/// What the scan is looking for in one segment.
pub(crate) struct ScanParams {
    pub base: u64,
    /// The next segment's first offset: no block here may reach past it.
    pub bound: Option<u64>,
    pub max_payload: u32,
    /// The running timestamp maximum of earlier segments.
    pub ts_floor: u64,
}

pub(crate) fn scan(file: &File, file_len: u64, p: &ScanParams) -> io::Result<SegmentScan> {
    let mut w = Window::new(file, file_len);
    let mut out = SegmentScan {
        end_offset: p.base,
        ts_max: p.ts_floor,
        ..SegmentScan::default()
    };
    let mut pos = 0u64;
    while pos < file_len {
        let found = match frame_at(&mut w, pos, out.end_offset, p)? {
            Some(h) => Some((pos, h)),
            None if w.zeros_to_end(pos)? => {
                out.zero_tail = file_len - pos;
                break;
            }
            None => {
                let next = resync(&mut w, pos + 1, out.end_offset, p)?;
                if next.is_some() {
                    out.corrupt_regions += 1;
                    tracing::warn!(base = p.base, pos, "corrupt region in log segment");
                }
                next
            }
        };
        let Some((at, h)) = found else {
            out.tail_junk = file_len - pos;
            break;
        };
        if h.first_offset > out.end_offset {
            out.damaged.push(out.end_offset..h.first_offset);
        }
        out.ts_max = out.ts_max.max(h.timestamp_ms);
        out.blocks.push(BlockMeta {
            first_offset: h.first_offset,
            count: h.count,
            ts_index: out.ts_max,
            pos: at,
            frame_len: h.frame_len(),
        });
        out.end_offset = h.end_offset();
        pos = at + h.frame_len();
        out.valid_len = pos;
    }
    Ok(out)
}

/// The valid frame starting at `pos`, if any: sane header, length within the
/// cap and the file, offsets in order and within the bound, CRC matching.
fn frame_at(
    w: &mut Window<'_>,
    pos: u64,
    expected: u64,
    p: &ScanParams,
) -> io::Result<Option<Header>> {
    let Some(hb) = w.get(pos, HEADER_LEN)? else {
        return Ok(None);
    };
    let Ok(h) = frame::decode_header(hb, p.max_payload) else {
        return Ok(None);
    };
    let in_order = h.first_offset >= expected && p.bound.is_none_or(|b| h.end_offset() <= b);
    if !in_order || h.end_offset() == u64::MAX {
        return Ok(None);
    }
    // The payload length was capped by decode_header before this read.
    let Ok(len) = usize::try_from(h.frame_len()) else {
        return Ok(None);
    };
    let Some(f) = w.get(pos, len)? else {
        return Ok(None);
    };
    Ok(frame::crc_matches(&h, f, &f[HEADER_LEN..]).then_some(h))
}

/// Searches forward from `from` for the next valid frame.
fn resync(
    w: &mut Window<'_>,
    from: u64,
    expected: u64,
    p: &ScanParams,
) -> io::Result<Option<(u64, Header)>> {
    let magic = frame::MAGIC.to_le_bytes();
    let mut pos = from;
    while pos + HEADER_LEN as u64 <= w.file_len {
        let Some(b) = w.get(pos, 4)? else { break };
        if b == magic {
            if let Some(h) = frame_at(w, pos, expected, p)? {
                return Ok(Some((pos, h)));
            }
        }
        pos += 1;
    }
    Ok(None)
}

/// A read-ahead buffer over a file, so that small frames cost no syscall each.
/// Reads are positioned: the file's cursor is not used.
pub(crate) struct Window<'f> {
    file: &'f File,
    file_len: u64,
    start: u64,
    buf: Vec<u8>,
}

impl<'f> Window<'f> {
    /// A window over the first `file_len` bytes of `file`.
    pub(crate) fn new(file: &'f File, file_len: u64) -> Self {
        Window {
            file,
            file_len,
            start: 0,
            buf: Vec::new(),
        }
    }

    /// `len` bytes at `pos`, or `None` if the file ends before. Callers
    /// bound `len` (header length, or a payload already checked against the
    /// cap).
    pub(crate) fn get(&mut self, pos: u64, len: usize) -> io::Result<Option<&[u8]>> {
        let Some(end) = pos.checked_add(len as u64) else {
            return Ok(None);
        };
        if end > self.file_len {
            return Ok(None);
        }
        let have_end = self.start + self.buf.len() as u64;
        if pos < self.start || end > have_end {
            let remaining = usize::try_from(self.file_len - pos).unwrap_or(usize::MAX);
            let want = len.max(CHUNK).min(remaining);
            self.buf.resize(want, 0);
            segment::read_at(self.file, pos, &mut self.buf)?;
            self.start = pos;
        }
        let off = usize::try_from(pos - self.start).unwrap_or(usize::MAX);
        Ok(self.buf.get(off..off + len))
    }

    /// Whether every byte from `pos` to the end of the file is zero.
    pub(crate) fn zeros_to_end(&mut self, mut pos: u64) -> io::Result<bool> {
        while pos < self.file_len {
            let n = usize::try_from(self.file_len - pos)
                .unwrap_or(usize::MAX)
                .min(CHUNK);
            match self.get(pos, n)? {
                Some(b) if b.iter().all(|&x| x == 0) => pos += n as u64,
                _ => return Ok(false),
            }
        }
        Ok(true)
    }
}
