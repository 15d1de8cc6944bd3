//! Message entries (`len u32 | bytes`, repeated) shared by PUBLISH_BATCH and
//! EVENT_BATCH, and the encode-once path for fan-out.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::put_header;
use crate::frame::{FrameType, HEADER_LEN};

/// Builds an entries block.
#[derive(Debug, Default)]
pub struct EntriesBuilder {
    buf: BytesMut,
    count: u32,
}

impl EntriesBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            buf: BytesMut::with_capacity(bytes),
            count: 0,
        }
    }

    /// Bytes one payload of `payload_len` bytes adds to an entries block:
    /// its length prefix and itself.
    pub const fn entry_len(payload_len: usize) -> usize {
        4 + payload_len
    }

    /// Appends one payload.
    ///
    /// # Panics
    /// If the payload is 4 GiB or larger (frames are capped far below that).
    pub fn push(&mut self, payload: &[u8]) {
        let len = u32::try_from(payload.len()).expect("payload under 4 GiB");
        self.buf.reserve(Self::entry_len(payload.len()));
        self.buf.put_u32(len);
        self.buf.put_slice(payload);
        self.count += 1;
    }

    /// Appends an already-encoded entries block of `count` entries.
    pub fn extend_encoded(&mut self, count: u32, entries: &[u8]) {
        self.buf.extend_from_slice(entries);
        self.count += count;
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    /// Bytes encoded so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Returns `(count, entries)` and leaves the builder empty for reuse.
    pub fn finish(&mut self) -> (u32, Bytes) {
        let count = std::mem::take(&mut self.count);
        (count, self.buf.split().freeze())
    }
}

/// Checks that `entries` holds exactly `count` well-formed entries.
pub(crate) fn validate_entries(entries: &[u8], count: u32) -> bool {
    let mut rest = entries;
    for _ in 0..count {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return false;
        };
        let len = u32::from_be_bytes(*len) as usize;
        if tail.len() < len {
            return false;
        }
        rest = &tail[len..];
    }
    rest.is_empty()
}

/// Iterator over the payloads of a validated entries block. Each payload is
/// a zero-copy slice of the frame.
#[derive(Debug, Clone)]
pub struct Entries {
    buf: Bytes,
    left: u32,
}

impl Entries {
    pub(crate) fn new(buf: Bytes, count: u32) -> Self {
        Self { buf, left: count }
    }
}

impl Iterator for Entries {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        if self.left == 0 || self.buf.len() < 4 {
            return None;
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if self.buf.len() < 4 + len {
            return None;
        }
        self.left -= 1;
        let mut item = self.buf.split_to(4 + len);
        Some(item.split_off(4))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left as usize))
    }
}

/// The part of an EVENT_BATCH that is the same for every subscriber of a
/// stream: `first_seq | count | entries`. Built once per published batch and
/// shared by reference between all subscriber queues.
#[derive(Debug, Clone)]
pub struct SharedEvents {
    pub first_seq: u64,
    pub count: u32,
    pub entries: Bytes,
}

impl SharedEvents {
    /// Bytes this batch adds to a frame body.
    pub fn encoded_len(&self) -> usize {
        8 + 4 + self.entries.len()
    }

    /// Writes a whole EVENT_BATCH frame for one subscriber into `out`. The
    /// per-subscriber part is the 32-byte head (header, subscription id,
    /// missed count); the rest is a straight copy of the shared bytes.
    pub fn write_frame(&self, out: &mut BytesMut, subscription_id: u64, missed: u64) {
        out.reserve(HEAD_LEN + self.entries.len());
        self.write_head(out, subscription_id, missed);
        out.put_slice(&self.entries);
    }

    /// Writes everything of the frame [`write_frame`](Self::write_frame)
    /// writes but the shared `entries`, which must follow it on the wire:
    /// a writer that can send several buffers in one call (a vectored
    /// write) then sends the shared bytes as they are, with no copy per
    /// subscriber.
    pub fn write_head(&self, out: &mut BytesMut, subscription_id: u64, missed: u64) {
        let body_len = 8 + 8 + self.encoded_len();
        out.reserve(HEAD_LEN);
        put_header(out, body_len as u32, FrameType::EventBatch, 0);
        out.put_u64(subscription_id);
        out.put_u64(missed);
        out.put_u64(self.first_seq);
        out.put_u32(self.count);
    }
}

/// The bytes [`SharedEvents::write_head`] writes.
const HEAD_LEN: usize = HEADER_LEN + 8 + 8 + 8 + 4;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        let mut b = EntriesBuilder::new();
        b.push(b"one");
        b.push(b"");
        b.push(b"three");
        let (count, bytes) = b.finish();
        assert_eq!(count, 3);
        assert!(validate_entries(&bytes, 3));
        assert!(!validate_entries(&bytes, 2));
        assert!(!validate_entries(&bytes, 4));
        assert!(!validate_entries(&bytes[..bytes.len() - 1], 3));
        let got: Vec<Bytes> = Entries::new(bytes, count).collect();
        assert_eq!(got, vec![&b"one"[..], &b""[..], &b"three"[..]]);
        assert!(b.is_empty());
    }

    #[test]
    fn a_head_and_the_shared_entries_make_the_whole_frame() {
        let mut b = EntriesBuilder::new();
        b.push(b"one");
        b.push(b"two");
        let (count, entries) = b.finish();
        let shared = SharedEvents {
            first_seq: 9,
            count,
            entries,
        };
        let mut whole = BytesMut::new();
        shared.write_frame(&mut whole, 3, 1);
        let mut head = BytesMut::new();
        shared.write_head(&mut head, 3, 1);
        assert_eq!(head.len(), HEAD_LEN);
        head.extend_from_slice(&shared.entries);
        assert_eq!(head, whole);
        assert_eq!(whole.len(), HEADER_LEN + 8 + 8 + shared.encoded_len());
    }
}
