//! The on-disk frame: one appended batch (a block) per frame. Pure: bytes in,
//! bytes or a parsed header out.
//!
//! ```text
//! magic u32 | version u8 | flags u8 | reserved u16 | first_offset u64 | count u32
//! | timestamp_ms u64 | payload_len u32 | crc32c u32 | payload (payload_len bytes)
//! ```
//!
//! All integers are little-endian. The CRC32C covers the 32 header bytes before
//! it and the payload. The payload is the sealed block body; the body (before
//! sealing) is `count` messages, each `len u32 | bytes`.

use bytes::Bytes;

pub(crate) const MAGIC: u32 = 0x4750_4c52; // "RLPG" on disk
pub(crate) const VERSION: u8 = 1;
pub(crate) const HEADER_LEN: usize = 36;
const CRC_AT: usize = 32;

/// A header whose fixed fields are valid and whose length is within the cap.
/// The CRC is not checked yet: that needs the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub first_offset: u64,
    pub count: u32,
    pub timestamp_ms: u64,
    pub payload_len: u32,
    pub crc: u32,
}

impl Header {
    pub(crate) fn frame_len(&self) -> u64 {
        HEADER_LEN as u64 + u64::from(self.payload_len)
    }

    pub(crate) fn end_offset(&self) -> u64 {
        self.first_offset.saturating_add(u64::from(self.count))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderError {
    BadMagic,
    BadVersion,
    /// Unknown flags or a non-zero reserved field.
    BadFlags,
    ZeroCount,
    TooLarge,
}

/// Encodes a whole frame (header and payload).
pub(crate) fn encode(first_offset: u64, count: u32, timestamp_ms: u64, payload: &[u8]) -> Vec<u8> {
    // Callers cap payloads at `max_block_bytes`, a u32, so this never clamps;
    // if it did, the CRC and length check on read would reject the frame.
    let payload_len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.push(VERSION);
    out.push(0); // flags
    out.extend_from_slice(&0u16.to_le_bytes()); // reserved
    out.extend_from_slice(&first_offset.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&timestamp_ms.to_le_bytes());
    out.extend_from_slice(&payload_len.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&out[..CRC_AT]), payload);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Parses the fixed header. `max_payload` is checked here, before anyone
/// allocates room for the payload.
pub(crate) fn decode_header(buf: &[u8], max_payload: u32) -> Result<Header, HeaderError> {
    let h: &[u8; HEADER_LEN] = buf
        .get(..HEADER_LEN)
        .and_then(|s| s.try_into().ok())
        .ok_or(HeaderError::BadMagic)?;
    if u32::from_le_bytes([h[0], h[1], h[2], h[3]]) != MAGIC {
        return Err(HeaderError::BadMagic);
    }
    if h[4] != VERSION {
        return Err(HeaderError::BadVersion);
    }
    if h[5] != 0 || h[6] != 0 || h[7] != 0 {
        return Err(HeaderError::BadFlags);
    }
    let header = Header {
        first_offset: u64_at(h, 8),
        count: u32_at(h, 16),
        timestamp_ms: u64_at(h, 20),
        payload_len: u32_at(h, 28),
        crc: u32_at(h, CRC_AT),
    };
    if header.count == 0 {
        return Err(HeaderError::ZeroCount);
    }
    if header.payload_len > max_payload {
        return Err(HeaderError::TooLarge);
    }
    Ok(header)
}

/// Whether the CRC in `header_bytes` matches the header and `payload`.
pub(crate) fn crc_matches(header: &Header, header_bytes: &[u8], payload: &[u8]) -> bool {
    match header_bytes.get(..CRC_AT) {
        Some(h) => crc32c::crc32c_append(crc32c::crc32c(h), payload) == header.crc,
        None => false,
    }
}

/// Encodes the block body: each message as `len u32 | bytes`.
pub(crate) fn encode_body(messages: &[&[u8]]) -> Option<Vec<u8>> {
    let total = messages
        .iter()
        .try_fold(0usize, |acc, m| acc.checked_add(4)?.checked_add(m.len()))?;
    let mut out = Vec::with_capacity(total);
    for m in messages {
        out.extend_from_slice(&u32::try_from(m.len()).ok()?.to_le_bytes());
        out.extend_from_slice(m);
    }
    Some(out)
}

/// Splits a block body into exactly `count` messages, without copying.
pub(crate) fn decode_body(body: Bytes, count: u32) -> Option<Vec<Bytes>> {
    let mut out = Vec::with_capacity(usize::try_from(count).ok()?.min(body.len() / 4));
    let mut at = 0usize;
    for _ in 0..count {
        let len_bytes = body.get(at..at.checked_add(4)?)?;
        let len = usize::try_from(u32::from_le_bytes(len_bytes.try_into().ok()?)).ok()?;
        let start = at + 4;
        let end = start.checked_add(len)?;
        if end > body.len() {
            return None;
        }
        out.push(body.slice(start..end));
        at = end;
    }
    (at == body.len()).then_some(out)
}

fn u32_at(h: &[u8; HEADER_LEN], at: usize) -> u32 {
    u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]])
}

fn u64_at(h: &[u8; HEADER_LEN], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[at..at + 8]);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_crc() {
        let body = encode_body(&[b"a", b"", b"hello"]).unwrap();
        let f = encode(7, 3, 99, &body);
        let h = decode_header(&f, 1024).unwrap();
        assert_eq!((h.first_offset, h.count, h.timestamp_ms), (7, 3, 99));
        assert_eq!(h.frame_len(), f.len() as u64);
        assert!(crc_matches(&h, &f, &f[HEADER_LEN..]));
        let msgs = decode_body(Bytes::copy_from_slice(&f[HEADER_LEN..]), 3).unwrap();
        assert_eq!(msgs, vec![&b"a"[..], b"", b"hello"]);
        let mut bad = f.clone();
        bad[HEADER_LEN] ^= 1;
        assert!(!crc_matches(&h, &bad, &bad[HEADER_LEN..]));
        assert!(decode_body(Bytes::copy_from_slice(&f[HEADER_LEN..]), 2).is_none());
    }

    #[test]
    fn length_cap_is_checked_on_the_header_alone() {
        let mut f = encode(0, 1, 0, b"xxxx");
        f[28..32].copy_from_slice(&(1u32 << 30).to_le_bytes());
        f.truncate(HEADER_LEN);
        assert_eq!(decode_header(&f, 16 << 20), Err(HeaderError::TooLarge));
    }
}
