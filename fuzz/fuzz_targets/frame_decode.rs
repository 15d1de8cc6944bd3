//! Feeds arbitrary bytes through `FrameDecoder`, as a peer's byte stream.
//!
//! Run at the pre-auth limit (4 KiB) and the default limit (8 MiB). Checks:
//! - decoding never panics and always terminates;
//! - every decoded frame consumed exactly `16 + body_len` bytes, within the
//!   limit;
//! - every successfully decoded frame re-encodes to the very same bytes and
//!   decodes again to an equal frame;
//! - feeding the same bytes in small chunks gives the same sequence of
//!   results as feeding them at once.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rampart_proto::{
    decode_exact, BodyError, Frame, FrameDecoder, FrameError, DEFAULT_MAX_FRAME,
    HEADER_LEN, PREAUTH_MAX_FRAME,
};

#[derive(Debug, PartialEq)]
enum Outcome {
    Frame(Frame),
    Body { id: u64, err: BodyError },
    Fatal(FrameError),
}

fuzz_target!(|data: &[u8]| {
    for limit in [PREAUTH_MAX_FRAME, DEFAULT_MAX_FRAME] {
        let whole = decode_all(data, limit);
        let chunk = 1 + data.first().map_or(0, |b| usize::from(*b % 13));
        let chunked = decode_chunked(data, limit, chunk);
        assert_eq!(whole, chunked, "chunking by {chunk} changed the result");
    }
});

/// Decodes frames off the front of `data` until the decoder needs more bytes
/// or reports a connection-level error (after which a peer closes).
fn decode_all(data: &[u8], limit: usize) -> Vec<Outcome> {
    let mut dec = FrameDecoder::new(limit);
    let mut buf = BytesMut::from(data);
    let mut offset = 0;
    let mut out = Vec::new();
    loop {
        let before = buf.len();
        match dec.decode(&mut buf) {
            Ok(None) => {
                assert_eq!(buf.len(), before, "waiting must not consume bytes");
                break;
            }
            Err(e) => {
                assert_eq!(buf.len(), before, "a frame error must not consume bytes");
                out.push(Outcome::Fatal(e));
                break;
            }
            Ok(Some(d)) => {
                let consumed = before - buf.len();
                assert_eq!(consumed, HEADER_LEN + d.header.body_len);
                assert!(consumed <= limit, "{consumed} bytes over the limit {limit}");
                let original = &data[offset..offset + consumed];
                offset += consumed;
                match d.frame {
                    Ok(frame) => {
                        assert_eq!(frame.id, d.header.id);
                        assert_eq!(frame.msg.frame_type(), d.header.frame_type);
                        check_round_trip(&frame, original, limit);
                        out.push(Outcome::Frame(frame));
                    }
                    Err(err) => out.push(Outcome::Body {
                        id: d.header.id,
                        err,
                    }),
                }
            }
        }
    }
    out
}

/// Same as `decode_all`, but the bytes arrive `chunk` at a time.
fn decode_chunked(data: &[u8], limit: usize, chunk: usize) -> Vec<Outcome> {
    let mut dec = FrameDecoder::new(limit);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in data.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match dec.decode(&mut buf) {
                Ok(None) => break,
                Err(e) => {
                    out.push(Outcome::Fatal(e));
                    return out;
                }
                Ok(Some(d)) => out.push(match d.frame {
                    Ok(frame) => Outcome::Frame(frame),
                    Err(err) => Outcome::Body {
                        id: d.header.id,
                        err,
                    },
                }),
            }
        }
    }
    out
}

fn check_round_trip(frame: &Frame, original: &[u8], limit: usize) {
    let bytes = frame.to_bytes();
    assert_eq!(
        bytes.len(),
        original.len(),
        "re-encoding changed the size of {frame:?}"
    );
    let back = decode_exact(&bytes, limit)
        .unwrap_or_else(|e| panic!("re-encoded {frame:?} does not decode: {e}"));
    assert_eq!(&back, frame, "decode(encode(frame)) != frame");

    // Every accepted frame has exactly one encoding.
    assert_eq!(
        &bytes[..],
        original,
        "re-encoding differs from the input for {frame:?}"
    );
}
