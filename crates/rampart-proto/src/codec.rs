//! Encoding and decoding of frames. Bytes in, frames out; no IO.
//!
//! Errors come in two kinds. A [`FrameError`] means the byte stream itself
//! cannot be trusted any more (oversized frame, unknown type or flags, wrong
//! version): the peer answers with a NACK and closes. A [`BodyError`] means
//! one well-delimited frame had a bad body (a bad name, a truncated field):
//! the peer answers that frame with NACK 400 and keeps the connection.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::code::ErrorCode;
use crate::event::validate_entries;
use crate::frame::*;
use crate::names::{
    CacheKey, CacheName, ConsumerName, NameError, NamespaceName, StreamName, TenantId,
};

/// The byte stream is broken; reply with [`FrameError::code`] and close.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("protocol version {0} is not supported (this server speaks 1)")]
    UnsupportedVersion(u8),
    #[error("unknown frame type 0x{0:02x}")]
    UnknownType(u8),
    #[error("unknown flag bits 0x{0:04x}")]
    UnknownFlags(u16),
}

impl FrameError {
    pub fn code(&self) -> ErrorCode {
        match self {
            FrameError::TooLarge { .. } => ErrorCode::PAYLOAD_TOO_LARGE,
            FrameError::UnsupportedVersion(_) => ErrorCode::UPGRADE_REQUIRED,
            FrameError::UnknownType(_) | FrameError::UnknownFlags(_) => ErrorCode::BAD_REQUEST,
        }
    }
}

/// One frame's body is malformed; reply NACK 400 to that frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    #[error("{0} is truncated")]
    Truncated(&'static str),
    #[error("{0} is not valid UTF-8")]
    Utf8(&'static str),
    #[error("{0} has an unknown value")]
    BadValue(&'static str),
    #[error("{0} bytes left over after the body")]
    Trailing(usize),
    #[error("batch entries do not match their count")]
    BadEntries,
    #[error(transparent)]
    Name(#[from] NameError),
}

impl BodyError {
    pub fn code(&self) -> ErrorCode {
        ErrorCode::BAD_REQUEST
    }
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub body_len: usize,
    pub frame_type: FrameType,
    pub flags: u16,
    pub id: u64,
}

impl Header {
    /// Parses and checks the first [`HEADER_LEN`] bytes of a frame.
    /// `max_frame` bounds header plus body.
    pub fn parse(b: &[u8; HEADER_LEN], max_frame: usize) -> Result<Self, FrameError> {
        // Version first: a peer from the future learns it needs another
        // version (426) rather than that its frame is too large.
        if b[4] != PROTOCOL_VERSION {
            return Err(FrameError::UnsupportedVersion(b[4]));
        }
        let body_len = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
        let size = HEADER_LEN.saturating_add(body_len);
        if size > max_frame {
            return Err(FrameError::TooLarge {
                size,
                limit: max_frame,
            });
        }
        let frame_type = FrameType::from_u8(b[5]).ok_or(FrameError::UnknownType(b[5]))?;
        let flags = u16::from_be_bytes([b[6], b[7]]);
        if flags & !KNOWN_FLAGS != 0 {
            return Err(FrameError::UnknownFlags(flags));
        }
        let id = u64::from_be_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]);
        Ok(Self {
            body_len,
            frame_type,
            flags,
            id,
        })
    }
}

/// What [`FrameDecoder::decode`] found: a header and its body's parse result.
#[derive(Debug)]
pub struct Decoded {
    pub header: Header,
    pub frame: Result<Frame, BodyError>,
}

/// Incremental decoder over a growing buffer, with a frame size limit that
/// the session raises once AUTH succeeds.
///
/// A decoder keeps the tenant, namespace and stream names it decoded last
/// and hands them out again while frames keep naming them: the frames of a
/// connection mostly name one scope, and a name given again costs a
/// comparison and a reference count instead of a check and an allocation
/// (one PUBLISH frame per message names three).
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max_frame: usize,
    last: LastNames,
}

/// The names a [`FrameDecoder`] decoded last.
#[derive(Debug, Clone, Default)]
struct LastNames {
    tenant: Option<TenantId>,
    namespace: Option<NamespaceName>,
    stream: Option<StreamName>,
}

impl FrameDecoder {
    pub fn new(max_frame: usize) -> Self {
        Self {
            max_frame,
            last: LastNames::default(),
        }
    }

    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    pub fn set_max_frame(&mut self, max_frame: usize) {
        self.max_frame = max_frame;
    }

    /// Takes one frame off the front of `buf` if a whole one is there.
    ///
    /// The header is checked as soon as its 16 bytes arrive, before the body
    /// is waited for, so an oversized or garbage frame is refused without
    /// buffering it.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, FrameError> {
        let Some(head) = buf.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let header = Header::parse(head, self.max_frame)?;
        if buf.len() < HEADER_LEN + header.body_len {
            buf.reserve(HEADER_LEN + header.body_len - buf.len());
            return Ok(None);
        }
        buf.advance(HEADER_LEN);
        let body = buf.split_to(header.body_len).freeze();
        let frame = decode_body(header.frame_type, body, &mut self.last)
            .map(|msg| Frame { id: header.id, msg });
        Ok(Some(Decoded { header, frame }))
    }
}

/// Decodes a whole frame from a slice holding exactly one frame.
pub fn decode_exact(bytes: &[u8], max_frame: usize) -> Result<Frame, DecodeExactError> {
    let mut buf = BytesMut::from(bytes);
    let decoded = FrameDecoder::new(max_frame)
        .decode(&mut buf)?
        .ok_or(DecodeExactError::Incomplete)?;
    if !buf.is_empty() {
        return Err(DecodeExactError::Body(BodyError::Trailing(buf.len())));
    }
    Ok(decoded.frame?)
}

/// Error of [`decode_exact`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeExactError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error("incomplete frame")]
    Incomplete,
}

// === impl Frame: encoding ===

impl Frame {
    /// Appends the encoded frame to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let start = out.len();
        // The length is written once the body is there.
        put_header(out, 0, self.msg.frame_type(), self.id);
        encode_body(&self.msg, out);
        let body_len = (out.len() - start - HEADER_LEN) as u32;
        out[start..start + 4].copy_from_slice(&body_len.to_be_bytes());
    }

    /// The encoded frame as a new buffer, allocated once.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(capacity_hint(&self.msg));
        self.encode(&mut out);
        out.freeze()
    }
}

/// The encoded PUBLISH_BATCH frame `id` of `payloads`, built in one buffer
/// of the exact size: each payload is copied once, straight into the frame.
/// (A [`PublishBatch`] built first and then encoded copies each payload
/// twice, into its entries and then into the frame, and grows the entries
/// on the way.) The bytes are those of `Frame::new(id,
/// Message::PublishBatch(..)).to_bytes()` for the same batch.
///
/// # Panics
/// If a payload is 4 GiB or larger, or there are 4 Gi payloads or more
/// (frames are capped far below either).
pub fn encode_publish_batch<P: AsRef<[u8]>>(
    id: u64,
    ack: AckMode,
    tenant: &TenantId,
    namespace: &NamespaceName,
    stream: &StreamName,
    payloads: &[P],
) -> Bytes {
    let entries: usize = payloads.iter().map(|p| 4 + p.as_ref().len()).sum();
    let body_len = 1 + scope_len(tenant, namespace, stream.as_str()) + 4 + entries;
    let mut out = BytesMut::with_capacity(HEADER_LEN + body_len);
    let len = u32::try_from(body_len).expect("frame under 4 GiB");
    put_header(&mut out, len, FrameType::PublishBatch, id);
    let count = u32::try_from(payloads.len()).expect("under 4 Gi payloads");
    put_batch_head(&mut out, ack, tenant, namespace, stream, count);
    for p in payloads {
        let p = p.as_ref();
        out.put_u32(u32::try_from(p.len()).expect("payload under 4 GiB"));
        out.put_slice(p);
    }
    debug_assert_eq!(out.len(), HEADER_LEN + body_len);
    out.freeze()
}

/// Room for a frame of `msg`: the header and fixed fields, plus the scope
/// and payload of the messages that carry one, so that encoding them does
/// not grow (and copy) the buffer on the way. A hint, not a bound: a
/// message with long strings elsewhere (a NACK's text) may still grow it.
/// Exact for PUBLISH, the one frame clients send per message: a buffer
/// filled to its capacity becomes `Bytes` without a second allocation
/// (the shared header `bytes` adds to a `Vec` with room left).
fn capacity_hint(msg: &Message) -> usize {
    /// The header and the fixed fields of the messages with a payload,
    /// with room to spare; enough for most control frames whole.
    const FIXED: usize = HEADER_LEN + 48;
    if let Message::Publish(p) = msg {
        // The ACK mode, the scope, the payload.
        return HEADER_LEN
            + 1
            + scope_len(&p.tenant, &p.namespace, p.stream.as_str())
            + p.payload.len();
    }
    FIXED
        + match msg {
            Message::PublishBatch(p) => {
                scope_len(&p.tenant, &p.namespace, p.stream.as_str()) + p.entries.len()
            }
            Message::EventBatch(e) => e.entries.len(),
            Message::CachePut(c) => {
                scope_len(&c.tenant, &c.namespace, c.cache.as_str())
                    + c.key.as_str().len()
                    + 2
                    + c.value.len()
            }
            _ => 0,
        }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character
/// boundary, so that cutting an over-long string never yields invalid UTF-8
/// (which the peer would refuse).
fn truncate_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn put_str8(out: &mut BytesMut, s: &str) {
    let b = truncate_str(s, u8::MAX as usize).as_bytes();
    out.put_u8(b.len() as u8);
    out.put_slice(b);
}

fn put_str16(out: &mut BytesMut, s: &str) {
    put_bytes16(out, truncate_str(s, u16::MAX as usize).as_bytes());
}

fn put_bytes16(out: &mut BytesMut, b: &[u8]) {
    let b = &b[..b.len().min(u16::MAX as usize)];
    out.put_u16(b.len() as u16);
    out.put_slice(b);
}

fn put_start(out: &mut BytesMut, s: StartAt) {
    let (kind, arg) = match s {
        StartAt::New => (0u8, 0u64),
        StartAt::Earliest => (1, 0),
        StartAt::Offset(o) => (2, o),
        StartAt::TimestampMs(t) => (3, t),
    };
    out.put_u8(kind);
    out.put_u64(arg);
}

fn put_scope(out: &mut BytesMut, t: &TenantId, n: &NamespaceName, x: &str) {
    put_str8(out, t.as_str());
    put_str8(out, n.as_str());
    put_str8(out, x);
}

/// The bytes [`put_scope`] writes.
fn scope_len(t: &TenantId, n: &NamespaceName, x: &str) -> usize {
    t.as_str().len() + n.as_str().len() + x.len() + 3
}

/// Appends a frame header: the body's length, the version, the type, no
/// flags, the id.
pub(crate) fn put_header(out: &mut BytesMut, body_len: u32, frame_type: FrameType, id: u64) {
    out.put_u32(body_len);
    out.put_u8(PROTOCOL_VERSION);
    out.put_u8(frame_type as u8);
    out.put_u16(0);
    out.put_u64(id);
}

/// The fields of a PUBLISH_BATCH body before its entries.
fn put_batch_head(
    out: &mut BytesMut,
    ack: AckMode,
    t: &TenantId,
    n: &NamespaceName,
    s: &StreamName,
    count: u32,
) {
    out.put_u8(ack as u8);
    put_scope(out, t, n, s.as_str());
    out.put_u32(count);
}

fn encode_body(msg: &Message, out: &mut BytesMut) {
    match msg {
        Message::Hello(h) => {
            out.put_u16(h.version);
            out.put_u32(h.capabilities);
            out.put_u32(h.max_frame);
            put_str8(out, &h.agent);
        }
        Message::Auth(a) => {
            out.put_u8(a.method as u8);
            put_bytes16(out, &a.credential);
        }
        Message::AuthOk(a) => {
            put_str8(out, a.tenant.as_str());
            put_str16(out, &a.principal);
            out.put_u64(a.expires_at_ms);
        }
        Message::Ack(a) => {
            out.put_u32(a.count);
            out.put_u8(a.durability as u8);
        }
        Message::Nack(n) => {
            out.put_u16(n.code.0);
            out.put_u32(n.retry_after_ms);
            put_str16(out, &n.message);
        }
        Message::Ping | Message::Pong => {}
        Message::AuthRequired(a) => {
            out.put_u8(a.reason as u8);
            out.put_u32(a.deadline_ms);
            put_str16(out, &a.message);
        }
        Message::TokenRequest(t) => out.put_u32(t.ttl_ms),
        Message::Token(t) => {
            put_str16(out, &t.token);
            out.put_u64(t.expires_at_ms);
        }
        Message::Publish(p) => {
            out.put_u8(p.ack as u8);
            put_scope(out, &p.tenant, &p.namespace, p.stream.as_str());
            out.put_slice(&p.payload);
        }
        Message::PublishBatch(p) => {
            put_batch_head(out, p.ack, &p.tenant, &p.namespace, &p.stream, p.count);
            out.put_slice(&p.entries);
        }
        Message::Subscribe(s) => {
            put_scope(out, &s.tenant, &s.namespace, s.stream.as_str());
            put_start(out, s.start);
        }
        Message::Subscribed(s) => out.put_u64(s.subscription_id),
        Message::Unsubscribe(s) => out.put_u64(s.subscription_id),
        Message::EventBatch(e) => {
            out.put_u64(e.subscription_id);
            out.put_u64(e.missed);
            out.put_u64(e.first_seq);
            out.put_u32(e.count);
            out.put_slice(&e.entries);
        }
        Message::Consume(c) => {
            put_scope(out, &c.tenant, &c.namespace, c.stream.as_str());
            put_str8(out, c.consumer.as_str());
            put_start(out, c.start);
            out.put_u32(c.max_in_flight);
            out.put_u32(c.ack_wait_ms);
        }
        Message::ConsumerAck(a) => {
            // A frame cannot hold u32::MAX offsets anyway (8 MiB limit);
            // cutting keeps count and body consistent.
            let offsets = &a.offsets[..a.offsets.len().min(u32::MAX as usize)];
            out.put_u64(a.subscription_id);
            out.put_u32(offsets.len() as u32);
            for o in offsets {
                out.put_u64(*o);
            }
        }
        Message::CachePut(c) => {
            put_scope(out, &c.tenant, &c.namespace, c.cache.as_str());
            put_bytes16(out, c.key.as_str().as_bytes());
            out.put_u64(c.ttl_ms);
            out.put_slice(&c.value);
        }
        Message::CacheGet(c) => {
            put_scope(out, &c.tenant, &c.namespace, c.cache.as_str());
            put_bytes16(out, c.key.as_str().as_bytes());
        }
        Message::CacheDelete(c) => {
            put_scope(out, &c.tenant, &c.namespace, c.cache.as_str());
            put_bytes16(out, c.key.as_str().as_bytes());
        }
        Message::CacheValue(v) => {
            out.put_u8(v.value.is_some() as u8);
            out.put_u64(v.ttl_ms);
            if let Some(value) = &v.value {
                out.put_slice(value);
            }
        }
    }
}

// === decoding ===

/// A cursor over one frame body, with the decoder's last names.
struct Body<'n> {
    b: Bytes,
    last: &'n mut LastNames,
}

impl Body<'_> {
    fn u8(&mut self, what: &'static str) -> Result<u8, BodyError> {
        if self.b.remaining() < 1 {
            return Err(BodyError::Truncated(what));
        }
        Ok(self.b.get_u8())
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, BodyError> {
        if self.b.remaining() < 2 {
            return Err(BodyError::Truncated(what));
        }
        Ok(self.b.get_u16())
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, BodyError> {
        if self.b.remaining() < 4 {
            return Err(BodyError::Truncated(what));
        }
        Ok(self.b.get_u32())
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, BodyError> {
        if self.b.remaining() < 8 {
            return Err(BodyError::Truncated(what));
        }
        Ok(self.b.get_u64())
    }
    fn take(&mut self, n: usize, what: &'static str) -> Result<Bytes, BodyError> {
        if self.b.remaining() < n {
            return Err(BodyError::Truncated(what));
        }
        Ok(self.b.split_to(n))
    }
    fn str8(&mut self, what: &'static str) -> Result<String, BodyError> {
        let n = self.u8(what)? as usize;
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| BodyError::Utf8(what))
    }
    /// A name with a one-byte length (see [`name8`]).
    fn name8<T>(
        &mut self,
        what: &'static str,
        parse: impl FnOnce(&str) -> Result<T, NameError>,
    ) -> Result<T, BodyError> {
        name8(&mut self.b, what, parse)
    }
    fn bytes16(&mut self, what: &'static str) -> Result<Bytes, BodyError> {
        let n = self.u16(what)? as usize;
        self.take(n, what)
    }
    fn str16(&mut self, what: &'static str) -> Result<String, BodyError> {
        let b = self.bytes16(what)?;
        String::from_utf8(b.to_vec()).map_err(|_| BodyError::Utf8(what))
    }
    fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.b)
    }
    fn end(self) -> Result<(), BodyError> {
        if self.b.is_empty() {
            Ok(())
        } else {
            Err(BodyError::Trailing(self.b.len()))
        }
    }
    /// A tenant, a namespace and a name in it, which `parse` makes.
    fn scope<X>(
        &mut self,
        parse: impl FnOnce(&str) -> Result<X, NameError>,
    ) -> Result<(TenantId, NamespaceName, X), BodyError> {
        let (t, n) = self.tenant_namespace()?;
        let x = self.name8("name", parse)?;
        Ok((t, n, x))
    }
    /// [`Body::scope`] of a stream.
    fn stream_scope(&mut self) -> Result<(TenantId, NamespaceName, StreamName), BodyError> {
        let (t, n) = self.tenant_namespace()?;
        let x = name8_again(
            &mut self.b,
            "name",
            &mut self.last.stream,
            StreamName::parse,
        )?;
        Ok((t, n, x))
    }
    fn tenant_namespace(&mut self) -> Result<(TenantId, NamespaceName), BodyError> {
        let t = name8_again(
            &mut self.b,
            "tenant",
            &mut self.last.tenant,
            TenantId::parse,
        )?;
        let n = name8_again(
            &mut self.b,
            "namespace",
            &mut self.last.namespace,
            NamespaceName::parse,
        )?;
        Ok((t, n))
    }
    fn key(&mut self) -> Result<CacheKey, BodyError> {
        Ok(CacheKey::parse(&self.str16("key")?)?)
    }
    fn ack(&mut self) -> Result<AckMode, BodyError> {
        AckMode::from_u8(self.u8("ack mode")?).ok_or(BodyError::BadValue("ack mode"))
    }
    /// `start u8 | start_arg u64`, as in SUBSCRIBE and CONSUME.
    fn start(&mut self) -> Result<StartAt, BodyError> {
        let kind = self.u8("start")?;
        let arg = self.u64("start argument")?;
        Ok(match kind {
            // The argument of `new` and `earliest` must be zero, so that
            // every accepted frame has one encoding.
            0 | 1 if arg != 0 => return Err(BodyError::BadValue("start argument")),
            0 => StartAt::New,
            1 => StartAt::Earliest,
            2 => StartAt::Offset(arg),
            3 => StartAt::TimestampMs(arg),
            _ => return Err(BodyError::BadValue("start")),
        })
    }
    /// `count` big-endian u64s filling the rest of the body exactly.
    fn offsets(&mut self, count: u32) -> Result<Vec<u64>, BodyError> {
        let left = self.b.remaining();
        let need = usize::try_from(count)
            .ok()
            .and_then(|n| n.checked_mul(8))
            .unwrap_or(usize::MAX);
        if left < need {
            return Err(BodyError::Truncated("offsets"));
        }
        if left > need {
            return Err(BodyError::Trailing(left - need));
        }
        // Bounded by the body length checked above, not by `count` alone.
        let mut offsets = Vec::with_capacity(need / 8);
        while self.b.has_remaining() {
            offsets.push(self.b.get_u64());
        }
        Ok(offsets)
    }
}

/// A name with a one-byte length off the front of `b`, checked and made by
/// `parse` straight from the body: no copy of it but the one the name
/// keeps.
fn name8<T>(
    b: &mut Bytes,
    what: &'static str,
    parse: impl FnOnce(&str) -> Result<T, NameError>,
) -> Result<T, BodyError> {
    let n = usize::from(*b.first().ok_or(BodyError::Truncated(what))?);
    let raw = b.get(1..1 + n).ok_or(BodyError::Truncated(what))?;
    let name = parse(std::str::from_utf8(raw).map_err(|_| BodyError::Utf8(what))?)?;
    b.advance(1 + n);
    Ok(name)
}

/// [`name8`], but the name in `last` again if the bytes are its own; a name
/// parsed is kept in `last` for the next frame.
fn name8_again<T: Clone + AsRef<str>>(
    b: &mut Bytes,
    what: &'static str,
    last: &mut Option<T>,
    parse: impl FnOnce(&str) -> Result<T, NameError>,
) -> Result<T, BodyError> {
    let n = usize::from(*b.first().ok_or(BodyError::Truncated(what))?);
    let raw = b.get(1..1 + n);
    if let Some(same) = last.as_ref().filter(|l| raw == Some(l.as_ref().as_bytes())) {
        let same = same.clone();
        b.advance(1 + n);
        return Ok(same);
    }
    let name = name8(b, what, parse)?;
    *last = Some(name.clone());
    Ok(name)
}

fn decode_body(t: FrameType, b: Bytes, last: &mut LastNames) -> Result<Message, BodyError> {
    let mut r = Body { b, last };
    let msg = match t {
        FrameType::Hello => Message::Hello(Hello {
            version: r.u16("version")?,
            capabilities: r.u32("capabilities")?,
            max_frame: r.u32("max frame")?,
            agent: r.str8("agent")?,
        }),
        FrameType::Auth => {
            let method =
                AuthMethod::from_u8(r.u8("method")?).ok_or(BodyError::BadValue("auth method"))?;
            Message::Auth(Auth {
                method,
                credential: r.bytes16("credential")?,
            })
        }
        FrameType::AuthOk => Message::AuthOk(AuthOk {
            tenant: r.name8("tenant", TenantId::parse)?,
            principal: r.str16("principal")?,
            expires_at_ms: r.u64("expiry")?,
        }),
        FrameType::Ack => Message::Ack(Ack {
            count: r.u32("count")?,
            durability: Durability::from_u8(r.u8("durability")?)
                .ok_or(BodyError::BadValue("durability"))?,
        }),
        FrameType::Nack => Message::Nack(Nack {
            code: ErrorCode(r.u16("code")?),
            retry_after_ms: r.u32("retry after")?,
            message: r.str16("message")?,
        }),
        FrameType::Ping => Message::Ping,
        FrameType::Pong => Message::Pong,
        FrameType::AuthRequired => Message::AuthRequired(AuthRequired {
            reason: ReauthReason::from_u8(r.u8("reason")?).ok_or(BodyError::BadValue("reason"))?,
            deadline_ms: r.u32("deadline")?,
            message: r.str16("message")?,
        }),
        FrameType::TokenRequest => Message::TokenRequest(TokenRequest {
            ttl_ms: r.u32("ttl")?,
        }),
        FrameType::Token => Message::Token(Token {
            token: r.str16("token")?,
            expires_at_ms: r.u64("expiry")?,
        }),
        FrameType::Publish => {
            let ack = r.ack()?;
            let (tenant, namespace, stream) = r.stream_scope()?;
            Message::Publish(Publish {
                ack,
                tenant,
                namespace,
                stream,
                payload: r.rest(),
            })
        }
        FrameType::PublishBatch => {
            let ack = r.ack()?;
            let (tenant, namespace, stream) = r.stream_scope()?;
            let count = r.u32("count")?;
            let entries = r.rest();
            if !validate_entries(&entries, count) {
                return Err(BodyError::BadEntries);
            }
            Message::PublishBatch(PublishBatch {
                ack,
                tenant,
                namespace,
                stream,
                count,
                entries,
            })
        }
        FrameType::Subscribe => {
            let (tenant, namespace, stream) = r.stream_scope()?;
            let start = r.start()?;
            Message::Subscribe(Subscribe {
                tenant,
                namespace,
                stream,
                start,
            })
        }
        FrameType::Subscribed => Message::Subscribed(Subscribed {
            subscription_id: r.u64("subscription id")?,
        }),
        FrameType::Unsubscribe => Message::Unsubscribe(Unsubscribe {
            subscription_id: r.u64("subscription id")?,
        }),
        FrameType::EventBatch => {
            let subscription_id = r.u64("subscription id")?;
            let missed = r.u64("missed")?;
            let first_seq = r.u64("first seq")?;
            let count = r.u32("count")?;
            let entries = r.rest();
            if !validate_entries(&entries, count) {
                return Err(BodyError::BadEntries);
            }
            Message::EventBatch(EventBatch {
                subscription_id,
                missed,
                first_seq,
                count,
                entries,
            })
        }
        FrameType::Consume => {
            let (tenant, namespace, stream) = r.stream_scope()?;
            let consumer = r.name8("consumer", ConsumerName::parse)?;
            Message::Consume(Consume {
                tenant,
                namespace,
                stream,
                consumer,
                start: r.start()?,
                max_in_flight: r.u32("max in flight")?,
                ack_wait_ms: r.u32("ack wait")?,
            })
        }
        FrameType::ConsumerAck => {
            let subscription_id = r.u64("subscription id")?;
            let count = r.u32("count")?;
            Message::ConsumerAck(ConsumerAck {
                subscription_id,
                offsets: r.offsets(count)?,
            })
        }
        FrameType::CachePut => {
            let (tenant, namespace, cache) = r.scope(CacheName::parse)?;
            let key = r.key()?;
            let ttl_ms = r.u64("ttl")?;
            Message::CachePut(CachePut {
                tenant,
                namespace,
                cache,
                key,
                ttl_ms,
                value: r.rest(),
            })
        }
        FrameType::CacheGet => {
            let (tenant, namespace, cache) = r.scope(CacheName::parse)?;
            Message::CacheGet(CacheGet {
                tenant,
                namespace,
                cache,
                key: r.key()?,
            })
        }
        FrameType::CacheDelete => {
            let (tenant, namespace, cache) = r.scope(CacheName::parse)?;
            Message::CacheDelete(CacheDelete {
                tenant,
                namespace,
                cache,
                key: r.key()?,
            })
        }
        FrameType::CacheValue => {
            let found = match r.u8("found")? {
                0 => false,
                1 => true,
                _ => return Err(BodyError::BadValue("found")),
            };
            let ttl_ms = r.u64("ttl")?;
            let value = r.rest();
            if !found && !value.is_empty() {
                return Err(BodyError::Trailing(value.len()));
            }
            Message::CacheValue(CacheValue {
                value: found.then_some(value),
                ttl_ms,
            })
        }
    };
    r.end()?;
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::SharedEvents;
    use proptest::prelude::*;

    fn names() -> (TenantId, NamespaceName, StreamName) {
        (
            TenantId::parse("acme").unwrap(),
            NamespaceName::parse("production").unwrap(),
            StreamName::parse("orders").unwrap(),
        )
    }

    proptest! {
        #[test]
        fn a_batch_encoded_in_one_go_is_the_frame_of_the_batch(
            id in any::<u64>(),
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..20),
        ) {
            let (t, n, s) = names();
            let direct = encode_publish_batch(id, AckMode::None, &t, &n, &s, &payloads);
            let batch = PublishBatch::from_payloads(
                AckMode::None,
                t,
                n,
                s,
                payloads.iter().map(Vec::as_slice),
            );
            let frame = Frame::new(id, Message::PublishBatch(batch));
            prop_assert_eq!(&direct, &frame.to_bytes());
            prop_assert_eq!(decode_exact(&direct, DEFAULT_MAX_FRAME).unwrap(), frame);
        }
    }

    fn round_trip(f: Frame) {
        let bytes = f.to_bytes();
        let back = decode_exact(&bytes, DEFAULT_MAX_FRAME).expect("decodes");
        assert_eq!(back, f);
    }

    #[test]
    fn every_message_round_trips() {
        let (t, n, s) = names();
        let c = CacheName::parse("sessions").unwrap();
        let k = CacheKey::parse("user:1").unwrap();
        let msgs: Vec<Message> = vec![
            Hello {
                version: 1,
                capabilities: 3,
                max_frame: 1 << 23,
                agent: "x/1".into(),
            }
            .into(),
            Auth {
                method: AuthMethod::ApiKey,
                credential: Bytes::from_static(b"secret"),
            }
            .into(),
            AuthOk {
                tenant: t.clone(),
                principal: "ci".into(),
                expires_at_ms: 9,
            }
            .into(),
            Ack::new(7).into(),
            Ack::published(3, Durability::Memory).into(),
            Ack::published(1, Durability::Written).into(),
            Ack::published(u32::MAX, Durability::Fsynced).into(),
            Nack {
                code: ErrorCode::FORBIDDEN,
                retry_after_ms: 5,
                message: "no".into(),
            }
            .into(),
            Message::Ping,
            Message::Pong,
            AuthRequired {
                reason: ReauthReason::Expiring,
                deadline_ms: 30_000,
                message: "token expires soon".into(),
            }
            .into(),
            TokenRequest { ttl_ms: 600_000 }.into(),
            Token {
                token: "rt1.x.y".into(),
                expires_at_ms: 99,
            }
            .into(),
            Publish {
                ack: AckMode::None,
                tenant: t.clone(),
                namespace: n.clone(),
                stream: s.clone(),
                payload: Bytes::from_static(b"hello"),
            }
            .into(),
            PublishBatch::from_payloads(
                AckMode::Batch,
                t.clone(),
                n.clone(),
                s.clone(),
                [&b"a"[..], &b"bc"[..]],
            )
            .into(),
            Subscribe {
                tenant: t.clone(),
                namespace: n.clone(),
                stream: s.clone(),
                start: StartAt::Offset(12),
            }
            .into(),
            Subscribed { subscription_id: 4 }.into(),
            Unsubscribe { subscription_id: 4 }.into(),
            Consume {
                tenant: t.clone(),
                namespace: n.clone(),
                stream: s.clone(),
                consumer: ConsumerName::parse("billing").unwrap(),
                start: StartAt::Earliest,
                max_in_flight: 0,
                ack_wait_ms: 0,
            }
            .into(),
            Consume {
                tenant: t.clone(),
                namespace: n.clone(),
                stream: s.clone(),
                consumer: ConsumerName::parse("workers.eu-1").unwrap(),
                start: StartAt::TimestampMs(1_700_000_000_000),
                max_in_flight: 500,
                ack_wait_ms: 30_000,
            }
            .into(),
            ConsumerAck {
                subscription_id: 4,
                offsets: vec![100, 101, 7, u64::MAX],
            }
            .into(),
            ConsumerAck {
                subscription_id: 4,
                offsets: vec![],
            }
            .into(),
            CachePut {
                tenant: t.clone(),
                namespace: n.clone(),
                cache: c.clone(),
                key: k.clone(),
                ttl_ms: 1000,
                value: Bytes::from_static(b"v"),
            }
            .into(),
            CacheGet {
                tenant: t.clone(),
                namespace: n.clone(),
                cache: c.clone(),
                key: k.clone(),
            }
            .into(),
            CacheDelete {
                tenant: t,
                namespace: n,
                cache: c,
                key: k,
            }
            .into(),
            CacheValue {
                value: Some(Bytes::from_static(b"v")),
                ttl_ms: 3,
            }
            .into(),
            CacheValue {
                value: None,
                ttl_ms: 0,
            }
            .into(),
        ];
        for (i, m) in msgs.into_iter().enumerate() {
            let f = Frame::new(i as u64, m);
            // No frame with a payload outgrows the room `to_bytes`
            // allocates first.
            let len = f.to_bytes().len();
            if matches!(
                f.msg,
                Message::Publish(_)
                    | Message::PublishBatch(_)
                    | Message::EventBatch(_)
                    | Message::CachePut(_)
            ) {
                assert!(len <= capacity_hint(&f.msg), "{:?}: {len} bytes", f.msg);
            }
            round_trip(f);
        }
    }

    proptest! {
        /// A frame that carries a payload is encoded into one allocation
        /// of the right size, whatever the payload's and the names' sizes.
        #[test]
        fn payload_frames_fit_their_first_allocation(
            len in 0usize..70_000,
            tenant in "[a-z0-9][a-z0-9_.-]{0,62}",
            stream in "[a-z][a-z0-9_.-]{0,62}",
        ) {
            let t = TenantId::parse(&tenant).unwrap();
            let n = NamespaceName::parse("production").unwrap();
            let s = StreamName::parse(&stream).unwrap();
            let payload = Bytes::from(vec![7u8; len]);
            let publish = Message::Publish(Publish {
                ack: AckMode::Message,
                tenant: t.clone(),
                namespace: n.clone(),
                stream: s.clone(),
                payload: payload.clone(),
            });
            let batch = Message::PublishBatch(PublishBatch {
                ack: AckMode::Batch,
                tenant: t,
                namespace: n,
                stream: s,
                count: 1,
                entries: {
                    let mut e = BytesMut::new();
                    e.put_u32(len as u32);
                    e.put_slice(&payload);
                    e.freeze()
                },
            });
            let hint = capacity_hint(&publish);
            let bytes = Frame::new(1, publish).to_bytes();
            prop_assert_eq!(bytes.len(), hint, "a PUBLISH's room is its exact size");
            let hint = capacity_hint(&batch);
            let bytes = Frame::new(1, batch).to_bytes();
            prop_assert!(bytes.len() <= hint, "{} > {hint}", bytes.len());
            prop_assert!(hint - bytes.len() <= 64, "{hint} for {}", bytes.len());
        }
    }

    /// A frame of type `t` with id 9 and exactly `body`, however malformed.
    fn raw(t: FrameType, body: &[u8]) -> BytesMut {
        let mut buf = BytesMut::new();
        buf.put_u32(body.len() as u32);
        buf.put_u8(PROTOCOL_VERSION);
        buf.put_u8(t as u8);
        buf.put_u16(0);
        buf.put_u64(9);
        buf.extend_from_slice(body);
        buf
    }

    fn body_error(t: FrameType, body: &[u8]) -> Option<BodyError> {
        match decode_exact(&raw(t, body), DEFAULT_MAX_FRAME) {
            Ok(_) => None,
            Err(DecodeExactError::Body(e)) => Some(e),
            Err(e) => panic!("not a body error: {e}"),
        }
    }

    #[test]
    fn every_frame_type_is_listed_once() {
        let mut seen = std::collections::BTreeSet::new();
        for t in FrameType::ALL {
            assert!(seen.insert(t as u8), "{t:?} listed twice");
            assert_eq!(FrameType::from_u8(t as u8), Some(t));
        }
        assert_eq!(FrameType::from_u8(0x16), Some(FrameType::Consume));
        assert_eq!(FrameType::from_u8(0x17), Some(FrameType::ConsumerAck));
        assert_eq!(FrameType::from_u8(0x18), None);
    }

    #[test]
    fn ack_body_is_count_and_durability() {
        for (b, d) in [
            (0, Durability::None),
            (1, Durability::Memory),
            (2, Durability::Written),
            (3, Durability::Fsynced),
        ] {
            assert_eq!(Durability::from_u8(b), Some(d));
            let f = decode_exact(&raw(FrameType::Ack, &[0, 0, 0, 2, b]), DEFAULT_MAX_FRAME)
                .expect("valid ack");
            assert_eq!(f.msg, Message::Ack(Ack::published(2, d)));
        }
        assert_eq!(Ack::new(5).durability, Durability::None);
        // A count without durability (the old 4-byte body), no count, extra bytes.
        assert_eq!(
            body_error(FrameType::Ack, &[0, 0, 0, 1]),
            Some(BodyError::Truncated("durability"))
        );
        assert_eq!(
            body_error(FrameType::Ack, &[]),
            Some(BodyError::Truncated("count"))
        );
        assert_eq!(
            body_error(FrameType::Ack, &[0, 0, 0, 1, 3, 0]),
            Some(BodyError::Trailing(1))
        );
        for bad in [4u8, 9, 0xff] {
            assert_eq!(Durability::from_u8(bad), None);
            assert_eq!(
                body_error(FrameType::Ack, &[0, 0, 0, 1, bad]),
                Some(BodyError::BadValue("durability"))
            );
        }
    }

    #[test]
    fn durability_orders_by_guarantee() {
        assert!(Durability::None < Durability::Memory);
        assert!(Durability::Memory < Durability::Written);
        assert!(Durability::Written < Durability::Fsynced);
        assert_eq!(Durability::Fsynced.to_string(), "fsynced");
    }

    fn consumer_ack_body(sid: u64, count: u32, offsets: &[u64]) -> Vec<u8> {
        let mut b = BytesMut::new();
        b.put_u64(sid);
        b.put_u32(count);
        for o in offsets {
            b.put_u64(*o);
        }
        b.to_vec()
    }

    #[test]
    fn consumer_ack_count_must_match_the_body() {
        let ok = |count, offsets: &[u64]| {
            decode_exact(
                &raw(
                    FrameType::ConsumerAck,
                    &consumer_ack_body(4, count, offsets),
                ),
                DEFAULT_MAX_FRAME,
            )
        };
        assert_eq!(
            ok(0, &[]).expect("count 0 is valid").msg,
            Message::ConsumerAck(ConsumerAck {
                subscription_id: 4,
                offsets: vec![]
            })
        );
        assert_eq!(
            ok(2, &[5, 6]).expect("valid").msg,
            Message::ConsumerAck(ConsumerAck {
                subscription_id: 4,
                offsets: vec![5, 6]
            })
        );
        let err = |count, offsets: &[u64]| {
            body_error(
                FrameType::ConsumerAck,
                &consumer_ack_body(4, count, offsets),
            )
        };
        assert_eq!(err(3, &[5, 6]), Some(BodyError::Truncated("offsets")));
        assert_eq!(err(1, &[5, 6]), Some(BodyError::Trailing(8)));
        assert_eq!(err(0, &[5]), Some(BodyError::Trailing(8)));
        // A huge count with a small body is refused without allocating.
        assert_eq!(err(u32::MAX, &[1]), Some(BodyError::Truncated("offsets")));
        // A partial offset.
        let mut body = consumer_ack_body(4, 1, &[]);
        body.extend_from_slice(&[0, 0, 0, 1]);
        assert_eq!(
            body_error(FrameType::ConsumerAck, &body),
            Some(BodyError::Truncated("offsets"))
        );
        assert_eq!(
            body_error(FrameType::ConsumerAck, &[0; 11]),
            Some(BodyError::Truncated("count"))
        );
    }

    fn consume_body(consumer: &str, kind: u8, arg: u64) -> Vec<u8> {
        let mut b = BytesMut::new();
        put_str8(&mut b, "acme");
        put_str8(&mut b, "production");
        put_str8(&mut b, "orders");
        put_str8(&mut b, consumer);
        b.put_u8(kind);
        b.put_u64(arg);
        b.put_u32(10);
        b.put_u32(2000);
        b.to_vec()
    }

    #[test]
    fn consume_checks_the_consumer_name_and_start() {
        let f = decode_exact(
            &raw(FrameType::Consume, &consume_body("billing", 2, 42)),
            DEFAULT_MAX_FRAME,
        )
        .expect("valid consume");
        let Message::Consume(c) = f.msg else {
            panic!("not a consume")
        };
        assert_eq!(c.consumer.as_str(), "billing");
        assert_eq!(c.start, StartAt::Offset(42));
        assert_eq!((c.max_in_flight, c.ack_wait_ms), (10, 2000));

        for bad in ["", "Billing", "a b", "-x"] {
            assert!(
                matches!(
                    body_error(FrameType::Consume, &consume_body(bad, 1, 0)),
                    Some(BodyError::Name(
                        NameError::Empty { kind: "consumer" }
                            | NameError::BadChar {
                                kind: "consumer",
                                ..
                            }
                    ))
                ),
                "{bad:?}"
            );
        }
        assert_eq!(
            body_error(FrameType::Consume, &consume_body("billing", 0, 1)),
            Some(BodyError::BadValue("start argument"))
        );
        assert_eq!(
            body_error(FrameType::Consume, &consume_body("billing", 1, 1)),
            Some(BodyError::BadValue("start argument"))
        );
        assert_eq!(
            body_error(FrameType::Consume, &consume_body("billing", 4, 0)),
            Some(BodyError::BadValue("start"))
        );
        let mut short = consume_body("billing", 1, 0);
        short.pop();
        assert_eq!(
            body_error(FrameType::Consume, &short),
            Some(BodyError::Truncated("ack wait"))
        );
        let mut long = consume_body("billing", 1, 0);
        long.push(0);
        assert_eq!(
            body_error(FrameType::Consume, &long),
            Some(BodyError::Trailing(1))
        );
    }

    #[test]
    fn consumer_ack_debug_does_not_list_offsets() {
        let a = ConsumerAck {
            subscription_id: 4,
            offsets: (0..1000).collect(),
        };
        assert_eq!(
            format!("{a:?}"),
            "ConsumerAck { subscription_id: 4, count: 1000 }"
        );
    }

    #[test]
    fn shared_event_encoding_decodes_as_event_batch() {
        let mut b = crate::event::EntriesBuilder::new();
        b.push(b"x");
        b.push(b"yz");
        let (count, entries) = b.finish();
        let shared = SharedEvents {
            first_seq: 10,
            count,
            entries,
        };
        let mut out = BytesMut::new();
        shared.write_frame(&mut out, 77, 2);
        let f = decode_exact(&out, DEFAULT_MAX_FRAME).unwrap();
        let Message::EventBatch(e) = f.msg else {
            panic!("not an event batch")
        };
        assert_eq!((e.subscription_id, e.missed, e.first_seq), (77, 2, 10));
        assert_eq!(
            e.payloads().collect::<Vec<_>>(),
            vec![&b"x"[..], &b"yz"[..]]
        );
    }

    #[test]
    fn header_checks_come_before_the_body() {
        let mut buf = BytesMut::new();
        // 1 MiB body announced, only the header present.
        buf.put_u32(1 << 20);
        buf.put_u8(1);
        buf.put_u8(FrameType::Publish as u8);
        buf.put_u16(0);
        buf.put_u64(1);
        let err = FrameDecoder::new(PREAUTH_MAX_FRAME)
            .decode(&mut buf)
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::PAYLOAD_TOO_LARGE);

        let mut bad_type = BytesMut::from(&[0, 0, 0, 0, 1, 0x7f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0][..]);
        assert_eq!(
            FrameDecoder::new(4096).decode(&mut bad_type).unwrap_err(),
            FrameError::UnknownType(0x7f)
        );
        let mut bad_flags = BytesMut::from(&[0, 0, 0, 0, 1, 6, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0][..]);
        assert_eq!(
            FrameDecoder::new(4096).decode(&mut bad_flags).unwrap_err(),
            FrameError::UnknownFlags(1)
        );
        let mut bad_version = BytesMut::from(&[0, 0, 0, 0, 2, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0][..]);
        assert_eq!(
            FrameDecoder::new(4096)
                .decode(&mut bad_version)
                .unwrap_err()
                .code(),
            ErrorCode::UPGRADE_REQUIRED
        );
    }

    #[test]
    fn long_strings_are_cut_on_a_char_boundary() {
        // 256 bytes of two-byte characters: cutting at 255 bytes would split
        // the last one and the peer would refuse the frame as invalid UTF-8.
        let hello = Frame::new(
            1,
            Hello {
                version: 1,
                capabilities: 0,
                max_frame: 0,
                agent: "\u{e9}".repeat(128),
            },
        );
        let Message::Hello(h) = decode_exact(&hello.to_bytes(), DEFAULT_MAX_FRAME)
            .expect("decodes")
            .msg
        else {
            panic!("not a hello")
        };
        assert_eq!(h.agent, "\u{e9}".repeat(127));

        let nack = Frame::new(
            1,
            Nack {
                code: ErrorCode::INTERNAL,
                retry_after_ms: 0,
                message: "\u{e9}".repeat(40_000),
            },
        );
        let Message::Nack(n) = decode_exact(&nack.to_bytes(), DEFAULT_MAX_FRAME)
            .expect("decodes")
            .msg
        else {
            panic!("not a nack")
        };
        assert_eq!(n.message.len(), 65_534);
    }

    #[test]
    fn partial_frames_wait_for_more() {
        let f = Frame::new(1, Message::Ping).to_bytes();
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        let mut buf = BytesMut::new();
        for (i, byte) in f.iter().enumerate() {
            buf.put_u8(*byte);
            let got = dec.decode(&mut buf).unwrap();
            assert_eq!(got.is_some(), i + 1 == f.len());
        }
    }

    #[test]
    fn names_are_read_in_place_and_checked() {
        // PUBLISH: ack mode, then tenant, namespace and stream.
        let publish = |names: &[&[u8]]| {
            let mut b = vec![0u8];
            for n in names {
                b.push(n.len() as u8);
                b.extend_from_slice(n);
            }
            b
        };
        let f = decode_exact(
            &raw(FrameType::Publish, &publish(&[b"acme", b"prod", b"orders"])),
            DEFAULT_MAX_FRAME,
        )
        .unwrap();
        let Message::Publish(p) = f.msg else {
            panic!("not a PUBLISH")
        };
        assert_eq!(
            (p.tenant.as_str(), p.namespace.as_str(), p.stream.as_str()),
            ("acme", "prod", "orders")
        );
        assert!(p.payload.is_empty());
        // A length past the end of the body.
        let mut short = publish(&[b"acme"]);
        short.extend_from_slice(&[9, b'p']);
        assert_eq!(
            body_error(FrameType::Publish, &short),
            Some(BodyError::Truncated("namespace"))
        );
        // Bytes that are not UTF-8, and UTF-8 outside the name rules.
        assert_eq!(
            body_error(FrameType::Publish, &publish(&[b"acme", b"pr\xffd", b"x"])),
            Some(BodyError::Utf8("namespace"))
        );
        assert!(matches!(
            body_error(
                FrameType::Publish,
                &publish(&["ac\u{e9}".as_bytes(), b"prod", b"x"])
            ),
            Some(BodyError::Name(_))
        ));
        // The stream name is checked as a stream's, a cache's as a cache's.
        assert!(matches!(
            body_error(FrameType::Publish, &publish(&[b"acme", b"prod", b""])),
            Some(BodyError::Name(NameError::Empty { kind: "stream" }))
        ));
    }

    #[test]
    fn bad_body_is_a_body_error_not_a_frame_error() {
        // PUBLISH with an uppercase stream name.
        let mut body = BytesMut::new();
        body.put_u8(0);
        put_str8(&mut body, "acme");
        put_str8(&mut body, "prod");
        put_str8(&mut body, "Orders");
        let mut buf = BytesMut::new();
        buf.put_u32(body.len() as u32);
        buf.put_u8(1);
        buf.put_u8(FrameType::Publish as u8);
        buf.put_u16(0);
        buf.put_u64(9);
        buf.extend_from_slice(&body);
        let d = FrameDecoder::new(4096).decode(&mut buf).unwrap().unwrap();
        assert_eq!(d.header.id, 9);
        assert!(matches!(d.frame, Err(BodyError::Name(_))));
        assert!(buf.is_empty());
    }

    /// A decoder gives a scope's names again while frames keep naming it
    /// (the same allocation), and the right names when they change, to
    /// another stream, another tenant, or back.
    #[test]
    fn a_decoder_gives_the_last_names_again_and_new_ones_when_they_change() {
        let publish = |t: &str, n: &str, s: &str| {
            Frame::new(
                1,
                Publish {
                    ack: AckMode::Message,
                    tenant: TenantId::parse(t).unwrap(),
                    namespace: NamespaceName::parse(n).unwrap(),
                    stream: StreamName::parse(s).unwrap(),
                    payload: Bytes::from_static(b"x"),
                },
            )
        };
        let sent = [
            publish("acme", "prod", "orders"),
            publish("acme", "prod", "orders"),
            publish("acme", "prod", "orders-eu"),
            publish("acme", "dev", "orders"),
            publish("acme2", "dev", "orders"),
            publish("acme", "prod", "orders"),
        ];
        let mut buf = BytesMut::new();
        for f in &sent {
            f.encode(&mut buf);
        }
        let mut dec = FrameDecoder::new(4096);
        let mut got = Vec::new();
        while let Some(d) = dec.decode(&mut buf).unwrap() {
            got.push(d.frame.unwrap());
        }
        assert_eq!(got, sent);
        let scope = |f: &Frame| match &f.msg {
            Message::Publish(p) => (
                p.tenant.as_str().as_ptr(),
                p.namespace.as_str().as_ptr(),
                p.stream.as_str().as_ptr(),
            ),
            other => panic!("not a publish: {other:?}"),
        };
        let (a, b) = (scope(&got[0]), scope(&got[1]));
        assert_eq!(a, b, "the second frame's names are the first's");
        let c = scope(&got[2]);
        assert_eq!((c.0, c.1), (a.0, a.1), "same tenant and namespace");
        assert_ne!(c.2, a.2, "another stream");

        // A name that fails its check is refused even right after a good
        // one with the same length.
        let mut body = BytesMut::new();
        body.put_u8(AckMode::Message as u8);
        put_str8(&mut body, "acme");
        put_str8(&mut body, "prod");
        put_str8(&mut body, "Orders");
        let mut bad = BytesMut::new();
        put_header(&mut bad, body.len() as u32, FrameType::Publish, 2);
        bad.extend_from_slice(&body);
        let d = dec.decode(&mut bad).unwrap().unwrap();
        assert!(matches!(d.frame, Err(BodyError::Name(_))), "{:?}", d.frame);
    }

    proptest! {
        #[test]
        fn decoder_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut buf = BytesMut::from(&data[..]);
            let mut dec = FrameDecoder::new(1024);
            while let Ok(Some(_)) = dec.decode(&mut buf) {}
        }

        #[test]
        fn publish_round_trips(payload in proptest::collection::vec(any::<u8>(), 0..300), id in any::<u64>()) {
            let (t, n, s) = names();
            round_trip(Frame::new(id, Publish { ack: AckMode::Message, tenant: t, namespace: n, stream: s, payload: payload.into() }));
        }

        #[test]
        fn consumer_ack_round_trips(offsets in proptest::collection::vec(any::<u64>(), 0..200), sid in any::<u64>()) {
            round_trip(Frame::new(1, ConsumerAck { subscription_id: sid, offsets }));
        }
    }
}
