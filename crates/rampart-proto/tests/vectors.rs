//! Runs the hand-written hex test vectors in `tests/vectors/`.
//!
//! Vector files (`*.hex`) hold hex bytes; `#` starts a comment running to the
//! end of the line, and whole-line comments of the form `# key: value` carry
//! metadata:
//!
//! - `tests/vectors/*.hex` are valid frames, each with `# type: <name>`. Each
//!   must decode with [`decode_exact`] to a frame of that type and re-encode to
//!   exactly the same bytes.
//! - `tests/vectors/invalid/*.hex` carry `# expect: frame <code>`,
//!   `# expect: body <code>` or `# expect: incomplete`, optionally followed by
//!   `max_frame=<bytes>` (default: [`DEFAULT_MAX_FRAME`]).
//!
//! The hex was computed by hand from the layouts in `docs/protocol.md`, not
//! produced by the encoder, so it pins the wire format independently of it.
//! Some vectors are additionally compared field by field with frames built
//! here ([`expected_frames`]), so that decode and encode cannot agree on a
//! wrong layout.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use rampart_proto::{
    decode_exact, Ack, AckMode, Auth, AuthMethod, AuthOk, CacheDelete, CacheGet, CacheKey,
    CacheName, CachePut, CacheValue, Consume, ConsumerAck, ConsumerName, DecodeExactError,
    Durability, ErrorCode, EventBatch, Frame, FrameDecoder, FrameType, Hello, Message, Nack,
    NamespaceName, Publish, PublishBatch, StartAt, StreamName, Subscribe, Subscribed, TenantId,
    Unsubscribe, DEFAULT_MAX_FRAME, HEADER_LEN,
};

/// Fewest vectors of each kind; the test fails if the files went missing.
const MIN_VALID: usize = 20;
const MIN_INVALID: usize = 8;

/// The `# type:` names, one per frame type of version 1.
const TYPE_NAMES: [(&str, FrameType); 22] = [
    ("hello", FrameType::Hello),
    ("auth", FrameType::Auth),
    ("auth_ok", FrameType::AuthOk),
    ("ack", FrameType::Ack),
    ("nack", FrameType::Nack),
    ("ping", FrameType::Ping),
    ("pong", FrameType::Pong),
    ("auth_required", FrameType::AuthRequired),
    ("token_request", FrameType::TokenRequest),
    ("token", FrameType::Token),
    ("publish", FrameType::Publish),
    ("publish_batch", FrameType::PublishBatch),
    ("subscribe", FrameType::Subscribe),
    ("subscribed", FrameType::Subscribed),
    ("unsubscribe", FrameType::Unsubscribe),
    ("event_batch", FrameType::EventBatch),
    ("consume", FrameType::Consume),
    ("consumer_ack", FrameType::ConsumerAck),
    ("cache_put", FrameType::CachePut),
    ("cache_get", FrameType::CacheGet),
    ("cache_delete", FrameType::CacheDelete),
    ("cache_value", FrameType::CacheValue),
];

#[derive(Debug)]
struct Vector {
    /// Path relative to the vectors directory, for messages.
    name: String,
    meta: BTreeMap<String, String>,
    bytes: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Expect {
    Frame(u16),
    Body(u16),
    Incomplete,
}

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

/// Reads every `*.hex` file directly inside `dir`, sorted by name.
fn read_dir(dir: &Path, prefix: &str) -> Vec<Vector> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    for p in &paths {
        assert_eq!(
            p.extension().and_then(|e| e.to_str()),
            Some("hex"),
            "unexpected file {} among the vectors",
            p.display()
        );
    }
    paths
        .iter()
        .map(|p| {
            let file = p.file_name().and_then(|n| n.to_str()).expect("utf-8 name");
            parse_vector(&format!("{prefix}{file}"), p)
        })
        .collect()
}

fn parse_vector(name: &str, path: &Path) -> Vector {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {name}: {e}"));
    let mut meta = BTreeMap::new();
    let mut hex_text = String::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(comment) = line.strip_prefix('#') {
            if let Some((key, value)) = comment.trim().split_once(':') {
                let key = key.trim();
                if key == "type" || key == "expect" {
                    let old = meta.insert(key.to_string(), value.trim().to_string());
                    assert!(old.is_none(), "{name}: `{key}` given twice");
                }
            }
            continue;
        }
        let data = line.split('#').next().unwrap_or_default();
        hex_text.extend(data.chars().filter(|c| !c.is_whitespace()));
    }
    let bytes = hex::decode(&hex_text).unwrap_or_else(|e| panic!("{name}: bad hex: {e}"));
    assert!(!bytes.is_empty(), "{name}: no bytes");
    Vector {
        name: name.to_string(),
        meta,
        bytes,
    }
}

fn valid_vectors() -> Vec<Vector> {
    let v = read_dir(&vectors_dir(), "");
    assert!(
        v.len() >= MIN_VALID,
        "expected at least {MIN_VALID} valid vectors in {}, found {}",
        vectors_dir().display(),
        v.len()
    );
    v
}

fn invalid_vectors() -> Vec<Vector> {
    let dir = vectors_dir().join("invalid");
    let v = read_dir(&dir, "invalid/");
    assert!(
        v.len() >= MIN_INVALID,
        "expected at least {MIN_INVALID} invalid vectors in {}, found {}",
        dir.display(),
        v.len()
    );
    v
}

fn frame_type_named(name: &str) -> Option<FrameType> {
    TYPE_NAMES.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// Parses `frame 413 max_frame=4096` and friends.
fn parse_expect(name: &str, spec: &str) -> (Expect, usize) {
    let mut words = spec.split_whitespace();
    let kind = words.next().unwrap_or_default();
    let expect = match kind {
        "incomplete" => Expect::Incomplete,
        "frame" | "body" => {
            let code: u16 = words
                .next()
                .and_then(|c| c.parse().ok())
                .unwrap_or_else(|| panic!("{name}: `expect: {kind}` needs a numeric code"));
            if kind == "frame" {
                Expect::Frame(code)
            } else {
                Expect::Body(code)
            }
        }
        other => panic!("{name}: unknown expectation `{other}`"),
    };
    let mut max_frame = DEFAULT_MAX_FRAME;
    for w in words {
        match w.split_once('=') {
            Some(("max_frame", n)) => {
                max_frame = n
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}: bad max_frame `{n}`"));
            }
            _ => panic!("{name}: unknown option `{w}`"),
        }
    }
    (expect, max_frame)
}

fn header_id(bytes: &[u8]) -> u64 {
    let id: [u8; 8] = bytes[8..16].try_into().expect("8 bytes");
    u64::from_be_bytes(id)
}

/// Frames some vectors must decode to, field by field.
fn expected_frames() -> Vec<(&'static str, Frame)> {
    let tenant = TenantId::parse("acme").expect("tenant");
    let ns = NamespaceName::parse("production").expect("namespace");
    let stream = StreamName::parse("orders").expect("stream");
    let cache = CacheName::parse("sessions").expect("cache");
    let key = CacheKey::parse("user:42").expect("key");
    let hello = |agent: &str| Hello {
        version: 1,
        capabilities: 0,
        max_frame: 8 * 1024 * 1024,
        agent: agent.to_string(),
    };
    let subscribe = |start| Subscribe {
        tenant: tenant.clone(),
        namespace: ns.clone(),
        stream: stream.clone(),
        start,
    };
    let consume = |start, max_in_flight, ack_wait_ms| Consume {
        tenant: tenant.clone(),
        namespace: ns.clone(),
        stream: stream.clone(),
        consumer: ConsumerName::parse("billing").expect("consumer"),
        start,
        max_in_flight,
        ack_wait_ms,
    };
    vec![
        ("hello.hex", Frame::new(1, hello("rampart-client/0.1.0"))),
        (
            "hello_server.hex",
            Frame::new(1, hello("rampart-server/0.1.0")),
        ),
        (
            "auth_api_key.hex",
            Frame::new(
                2,
                Auth {
                    method: AuthMethod::ApiKey,
                    credential: Bytes::from_static(b"rk_live_abc123"),
                },
            ),
        ),
        (
            "auth_token.hex",
            Frame::new(
                2,
                Auth {
                    method: AuthMethod::Token,
                    credential: Bytes::from_static(b"t0k3n"),
                },
            ),
        ),
        (
            "auth_jwt.hex",
            Frame::new(
                2,
                Auth {
                    method: AuthMethod::Jwt,
                    credential: Bytes::from_static(b"e30.e30.c2ln"),
                },
            ),
        ),
        (
            "auth_client_cert.hex",
            Frame::new(
                2,
                Auth {
                    method: AuthMethod::ClientCert,
                    credential: Bytes::new(),
                },
            ),
        ),
        (
            "auth_ok.hex",
            Frame::new(
                2,
                AuthOk {
                    tenant: tenant.clone(),
                    principal: "ci-bot".to_string(),
                    expires_at_ms: 1_700_000_000_000,
                },
            ),
        ),
        (
            "ack.hex",
            Frame::new(3, Ack::published(1, Durability::Memory)),
        ),
        (
            "ack_fsynced.hex",
            Frame::new(6, Ack::published(2, Durability::Fsynced)),
        ),
        (
            "nack.hex",
            Frame::new(
                3,
                Nack {
                    code: ErrorCode::FORBIDDEN,
                    retry_after_ms: 0,
                    message: "forbidden".to_string(),
                },
            ),
        ),
        (
            "nack_retry_after.hex",
            Frame::new(
                3,
                Nack {
                    code: ErrorCode::TOO_MANY_REQUESTS,
                    retry_after_ms: 1000,
                    message: "rate limited".to_string(),
                },
            ),
        ),
        ("ping.hex", Frame::new(4, Message::Ping)),
        ("pong.hex", Frame::new(4, Message::Pong)),
        (
            "publish.hex",
            Frame::new(
                5,
                Publish {
                    ack: AckMode::Message,
                    tenant: tenant.clone(),
                    namespace: ns.clone(),
                    stream: stream.clone(),
                    payload: Bytes::from_static(b"hello"),
                },
            ),
        ),
        (
            "publish_empty_ack_none.hex",
            Frame::new(
                5,
                Publish {
                    ack: AckMode::None,
                    tenant: tenant.clone(),
                    namespace: ns.clone(),
                    stream: stream.clone(),
                    payload: Bytes::new(),
                },
            ),
        ),
        (
            "publish_batch.hex",
            Frame::new(
                6,
                PublishBatch::from_payloads(
                    AckMode::Batch,
                    tenant.clone(),
                    ns.clone(),
                    stream.clone(),
                    [&b"a"[..], &b"bc"[..]],
                ),
            ),
        ),
        (
            "subscribe.hex",
            Frame::new(7, subscribe(StartAt::Offset(12))),
        ),
        (
            "subscribe_earliest.hex",
            Frame::new(7, subscribe(StartAt::Earliest)),
        ),
        (
            "subscribe_timestamp.hex",
            Frame::new(7, subscribe(StartAt::TimestampMs(1_700_000_000_000))),
        ),
        (
            "subscribed.hex",
            Frame::new(7, Subscribed { subscription_id: 4 }),
        ),
        (
            "unsubscribe.hex",
            Frame::new(8, Unsubscribe { subscription_id: 4 }),
        ),
        (
            "event_batch.hex",
            Frame::new(
                0,
                EventBatch {
                    subscription_id: 4,
                    missed: 3,
                    first_seq: 100,
                    count: 2,
                    entries: Bytes::from_static(b"\0\0\0\x01x\0\0\0\x02yz"),
                },
            ),
        ),
        (
            "consume.hex",
            Frame::new(12, consume(StartAt::Offset(12), 100, 30_000)),
        ),
        (
            "consume_defaults.hex",
            Frame::new(12, consume(StartAt::Earliest, 0, 0)),
        ),
        (
            "consumer_ack.hex",
            Frame::new(
                13,
                ConsumerAck {
                    subscription_id: 4,
                    offsets: vec![100, 101, 103],
                },
            ),
        ),
        (
            "consumer_ack_empty.hex",
            Frame::new(
                13,
                ConsumerAck {
                    subscription_id: 4,
                    offsets: vec![],
                },
            ),
        ),
        (
            "cache_put.hex",
            Frame::new(
                9,
                CachePut {
                    tenant: tenant.clone(),
                    namespace: ns.clone(),
                    cache: cache.clone(),
                    key: key.clone(),
                    ttl_ms: 1000,
                    value: Bytes::from_static(b"v1"),
                },
            ),
        ),
        (
            "cache_get.hex",
            Frame::new(
                10,
                CacheGet {
                    tenant: tenant.clone(),
                    namespace: ns.clone(),
                    cache: cache.clone(),
                    key: key.clone(),
                },
            ),
        ),
        (
            "cache_delete.hex",
            Frame::new(
                11,
                CacheDelete {
                    tenant,
                    namespace: ns,
                    cache,
                    key,
                },
            ),
        ),
        (
            "cache_value.hex",
            Frame::new(
                10,
                CacheValue {
                    value: Some(Bytes::from_static(b"v1")),
                    ttl_ms: 750,
                },
            ),
        ),
        (
            "cache_value_miss.hex",
            Frame::new(
                10,
                CacheValue {
                    value: None,
                    ttl_ms: 0,
                },
            ),
        ),
    ]
}

#[test]
fn type_names_cover_every_frame_type() {
    let named: BTreeSet<u8> = TYPE_NAMES.iter().map(|(_, t)| *t as u8).collect();
    let all: BTreeSet<u8> = FrameType::ALL.iter().map(|t| *t as u8).collect();
    assert_eq!(named, all);
}

#[test]
fn valid_vectors_decode_and_re_encode_identically() {
    let expected: BTreeMap<&str, Frame> = expected_frames().into_iter().collect();
    let mut types_seen = BTreeSet::new();
    let mut checked_fields = BTreeSet::new();
    for v in valid_vectors() {
        let name = v.name.as_str();
        assert!(
            !v.meta.contains_key("expect"),
            "{name}: `expect:` belongs in invalid/"
        );
        let type_name = v
            .meta
            .get("type")
            .unwrap_or_else(|| panic!("{name}: missing `# type:` line"));
        let ty = frame_type_named(type_name)
            .unwrap_or_else(|| panic!("{name}: unknown frame type `{type_name}`"));

        let frame = decode_exact(&v.bytes, DEFAULT_MAX_FRAME)
            .unwrap_or_else(|e| panic!("{name}: does not decode: {e}"));
        assert_eq!(frame.msg.frame_type(), ty, "{name}: frame type");
        assert_eq!(frame.id, header_id(&v.bytes), "{name}: correlation id");

        let again = frame.to_bytes();
        assert_eq!(
            hex::encode(&again),
            hex::encode(&v.bytes),
            "{name}: re-encoding differs"
        );

        if let Some(want) = expected.get(name) {
            assert_eq!(&frame, want, "{name}: decoded fields");
            checked_fields.insert(name.to_string());
        }
        types_seen.insert(ty as u8);
    }
    let all: BTreeSet<u8> = FrameType::ALL.iter().map(|t| *t as u8).collect();
    let missing: Vec<_> = all.difference(&types_seen).collect();
    assert!(missing.is_empty(), "no valid vector for types {missing:x?}");
    let unchecked: Vec<_> = expected
        .keys()
        .filter(|k| !checked_fields.contains(**k))
        .collect();
    assert!(
        unchecked.is_empty(),
        "expected frames without a vector file: {unchecked:?}"
    );
}

#[test]
fn valid_vectors_decode_back_to_back_in_any_chunking() {
    let vectors = valid_vectors();
    let mut stream = Vec::new();
    let mut want = Vec::new();
    for v in &vectors {
        stream.extend_from_slice(&v.bytes);
        want.push(decode_exact(&v.bytes, DEFAULT_MAX_FRAME).expect("valid vector"));
    }
    for chunk in [1, 3, 7, 16, 64, stream.len()] {
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for piece in stream.chunks(chunk) {
            buf.extend_from_slice(piece);
            while let Some(d) = dec.decode(&mut buf).expect("no frame error") {
                got.push(d.frame.expect("valid body"));
            }
        }
        assert!(buf.is_empty(), "chunk {chunk}: bytes left over");
        assert_eq!(got, want, "chunk {chunk}");
    }
}

#[test]
fn invalid_vectors_fail_as_expected() {
    let mut kinds_seen = BTreeSet::new();
    for v in invalid_vectors() {
        let name = v.name.as_str();
        assert!(
            !v.meta.contains_key("type"),
            "{name}: `type:` belongs to valid vectors"
        );
        let spec = v
            .meta
            .get("expect")
            .unwrap_or_else(|| panic!("{name}: missing `# expect:` line"));
        let (expect, max_frame) = parse_expect(name, spec);
        kinds_seen.insert(expect);
        let result = decode_exact(&v.bytes, max_frame);
        let mut dec = FrameDecoder::new(max_frame);
        match expect {
            Expect::Frame(code) => {
                let err = match result {
                    Err(DecodeExactError::Frame(e)) => e,
                    other => panic!("{name}: expected a frame error {code}, got {other:?}"),
                };
                assert_eq!(err.code().as_u16(), code, "{name}: {err}");
                // Header errors must be found from the 16 header bytes alone,
                // before the body is buffered.
                assert!(v.bytes.len() >= HEADER_LEN, "{name}: shorter than a header");
                let mut head = BytesMut::from(&v.bytes[..HEADER_LEN]);
                assert_eq!(
                    dec.decode(&mut head).map(|d| d.is_some()),
                    Err(err.clone()),
                    "{name}: header alone"
                );
            }
            Expect::Body(code) => {
                let err = match result {
                    Err(DecodeExactError::Body(e)) => e,
                    other => panic!("{name}: expected a body error {code}, got {other:?}"),
                };
                assert_eq!(err.code().as_u16(), code, "{name}: {err}");
                // The frame is still delimited: the decoder consumes exactly
                // it and reports its id, so the NACK can carry that id and the
                // connection can continue.
                let mut buf = BytesMut::from(&v.bytes[..]);
                let d = dec
                    .decode(&mut buf)
                    .unwrap_or_else(|e| panic!("{name}: frame error {e}"))
                    .unwrap_or_else(|| panic!("{name}: incomplete"));
                assert_eq!(d.header.id, header_id(&v.bytes), "{name}: id");
                assert_eq!(d.frame.as_ref().err(), Some(&err), "{name}");
                assert!(buf.is_empty(), "{name}: frame not fully consumed");
            }
            Expect::Incomplete => {
                assert!(
                    matches!(result, Err(DecodeExactError::Incomplete)),
                    "{name}: expected incomplete, got {result:?}"
                );
                let mut buf = BytesMut::from(&v.bytes[..]);
                assert!(
                    matches!(dec.decode(&mut buf), Ok(None)),
                    "{name}: decoder should wait"
                );
                assert_eq!(&buf[..], &v.bytes[..], "{name}: buffer changed");
            }
        }
    }
    for must in [
        Expect::Frame(400),
        Expect::Frame(413),
        Expect::Frame(426),
        Expect::Body(400),
    ] {
        assert!(kinds_seen.contains(&must), "no invalid vector for {must:?}");
    }
}
