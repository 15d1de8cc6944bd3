//! Frame types and their bodies.
//!
//! Every frame is a 16-byte header followed by a body:
//!
//! ```text
//! 0      4        5     6       8                16
//! | len  | version| type| flags | correlation id |  body (len bytes) ...
//!   u32    u8       u8    u16     u64               big-endian throughout
//! ```
//!
//! `len` counts the body only. See `docs/protocol.md` for each body layout.

use std::fmt;

use bytes::Bytes;

use crate::code::ErrorCode;
use crate::names::{CacheKey, CacheName, ConsumerName, NamespaceName, StreamName, TenantId};

/// Protocol version carried in every header and in HELLO.
pub const PROTOCOL_VERSION: u8 = 1;
/// Size of the fixed frame header.
pub const HEADER_LEN: usize = 16;
/// Default largest frame (header included) a peer accepts after AUTH.
pub const DEFAULT_MAX_FRAME: usize = 8 * 1024 * 1024;
/// Largest frame (header included) accepted before AUTH succeeds.
pub const PREAUTH_MAX_FRAME: usize = 4 * 1024;
/// Flag bits defined in version 1. Every other bit must be zero.
pub const KNOWN_FLAGS: u16 = 0;

/// The one-byte frame type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum FrameType {
    Hello = 0x01,
    Auth = 0x02,
    AuthOk = 0x03,
    Ack = 0x04,
    Nack = 0x05,
    Ping = 0x06,
    Pong = 0x07,
    AuthRequired = 0x08,
    TokenRequest = 0x09,
    Token = 0x0a,
    Publish = 0x10,
    PublishBatch = 0x11,
    Subscribe = 0x12,
    Subscribed = 0x13,
    Unsubscribe = 0x14,
    EventBatch = 0x15,
    Consume = 0x16,
    ConsumerAck = 0x17,
    CachePut = 0x20,
    CacheGet = 0x21,
    CacheDelete = 0x22,
    CacheValue = 0x23,
}

impl FrameType {
    /// Every frame type of version 1, for tables that must cover them all.
    pub const ALL: [FrameType; 22] = [
        FrameType::Hello,
        FrameType::Auth,
        FrameType::AuthOk,
        FrameType::Ack,
        FrameType::Nack,
        FrameType::Ping,
        FrameType::Pong,
        FrameType::AuthRequired,
        FrameType::TokenRequest,
        FrameType::Token,
        FrameType::Publish,
        FrameType::PublishBatch,
        FrameType::Subscribe,
        FrameType::Subscribed,
        FrameType::Unsubscribe,
        FrameType::EventBatch,
        FrameType::Consume,
        FrameType::ConsumerAck,
        FrameType::CachePut,
        FrameType::CacheGet,
        FrameType::CacheDelete,
        FrameType::CacheValue,
    ];

    pub fn from_u8(b: u8) -> Option<Self> {
        Self::ALL.iter().copied().find(|t| *t as u8 == b)
    }
}

/// When the server acknowledges a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum AckMode {
    /// No ACK; failures still come back as NACK with the frame's id.
    None = 0,
    /// One ACK (count 1) per message, in order.
    #[default]
    Message = 1,
    /// One ACK per PUBLISH / PUBLISH_BATCH frame, with the message count.
    Batch = 2,
}

impl AckMode {
    pub fn from_u8(b: u8) -> Option<Self> {
        match b {
            0 => Some(Self::None),
            1 => Some(Self::Message),
            2 => Some(Self::Batch),
            _ => None,
        }
    }
}

/// How durable a publish is when its ACK arrives, carried in every ACK.
///
/// The variants are ordered by strength of the guarantee, so the weakest of
/// several ACKs is their minimum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(u8)]
#[non_exhaustive]
pub enum Durability {
    /// The request was not a publish; the value means nothing.
    #[default]
    None = 0,
    /// A live stream: queued for the current subscribers, nothing stored.
    Memory = 1,
    /// Appended to the stream's log and handed to the OS with `write()`:
    /// survives a crash of the server process, not of the machine.
    Written = 2,
    /// Appended to the stream's log and covered by an `fsync`.
    Fsynced = 3,
}

impl Durability {
    pub fn from_u8(b: u8) -> Option<Self> {
        match b {
            0 => Some(Self::None),
            1 => Some(Self::Memory),
            2 => Some(Self::Written),
            3 => Some(Self::Fsynced),
            _ => None,
        }
    }

    /// The lowercase name used in docs and logs (`fsynced`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Memory => "memory",
            Self::Written => "written",
            Self::Fsynced => "fsynced",
        }
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How AUTH proves identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum AuthMethod {
    /// A Rampart API key.
    ApiKey = 1,
    /// A short-lived token issued by Rampart.
    Token = 2,
    /// A JWT from a configured OIDC issuer.
    Jwt = 3,
    /// The verified TLS client certificate (credential empty).
    ClientCert = 4,
}

impl AuthMethod {
    pub fn from_u8(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::ApiKey),
            2 => Some(Self::Token),
            3 => Some(Self::Jwt),
            4 => Some(Self::ClientCert),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ApiKey => "api_key",
            Self::Token => "token",
            Self::Jwt => "jwt",
            Self::ClientCert => "client_cert",
        }
    }
}

/// Where a new subscription (or a newly created durable consumer) starts
/// reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum StartAt {
    /// Only messages published after the subscription exists.
    #[default]
    New,
    /// The oldest retained message.
    Earliest,
    /// A given offset.
    Offset(u64),
    /// The first message at or after a Unix time in milliseconds.
    TimestampMs(u64),
}

/// A decoded frame: the correlation id and the typed body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Chosen by the requester; every reply carries the same id.
    pub id: u64,
    pub msg: Message,
}

impl Frame {
    pub fn new(id: u64, msg: impl Into<Message>) -> Self {
        Self {
            id,
            msg: msg.into(),
        }
    }
}

/// The body of a frame, one variant per frame type.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message {
    Hello(Hello),
    Auth(Auth),
    AuthOk(AuthOk),
    Ack(Ack),
    Nack(Nack),
    Ping,
    Pong,
    AuthRequired(AuthRequired),
    TokenRequest(TokenRequest),
    Token(Token),
    Publish(Publish),
    PublishBatch(PublishBatch),
    Subscribe(Subscribe),
    Subscribed(Subscribed),
    Unsubscribe(Unsubscribe),
    EventBatch(EventBatch),
    Consume(Consume),
    ConsumerAck(ConsumerAck),
    CachePut(CachePut),
    CacheGet(CacheGet),
    CacheDelete(CacheDelete),
    CacheValue(CacheValue),
}

impl Message {
    pub fn frame_type(&self) -> FrameType {
        match self {
            Message::Hello(_) => FrameType::Hello,
            Message::Auth(_) => FrameType::Auth,
            Message::AuthOk(_) => FrameType::AuthOk,
            Message::Ack(_) => FrameType::Ack,
            Message::Nack(_) => FrameType::Nack,
            Message::Ping => FrameType::Ping,
            Message::Pong => FrameType::Pong,
            Message::AuthRequired(_) => FrameType::AuthRequired,
            Message::TokenRequest(_) => FrameType::TokenRequest,
            Message::Token(_) => FrameType::Token,
            Message::Publish(_) => FrameType::Publish,
            Message::PublishBatch(_) => FrameType::PublishBatch,
            Message::Subscribe(_) => FrameType::Subscribe,
            Message::Subscribed(_) => FrameType::Subscribed,
            Message::Unsubscribe(_) => FrameType::Unsubscribe,
            Message::EventBatch(_) => FrameType::EventBatch,
            Message::Consume(_) => FrameType::Consume,
            Message::ConsumerAck(_) => FrameType::ConsumerAck,
            Message::CachePut(_) => FrameType::CachePut,
            Message::CacheGet(_) => FrameType::CacheGet,
            Message::CacheDelete(_) => FrameType::CacheDelete,
            Message::CacheValue(_) => FrameType::CacheValue,
        }
    }
}

macro_rules! into_message {
    ($($t:ident),*) => {$(
        impl From<$t> for Message {
            fn from(v: $t) -> Self {
                Message::$t(v)
            }
        }
    )*};
}
into_message!(
    Hello,
    Auth,
    AuthOk,
    Ack,
    Nack,
    AuthRequired,
    TokenRequest,
    Token,
    Publish,
    PublishBatch,
    Subscribe,
    Subscribed,
    Unsubscribe,
    EventBatch,
    Consume,
    ConsumerAck,
    CachePut,
    CacheGet,
    CacheDelete,
    CacheValue
);

/// First frame from either side: protocol version and capabilities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub version: u16,
    pub capabilities: u32,
    /// Largest frame this side accepts after AUTH.
    pub max_frame: u32,
    /// Free text naming the software (`rampart-client/0.1.0`), at most 255 bytes.
    pub agent: String,
}

/// Proof of identity. The credential is never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Auth {
    pub method: AuthMethod,
    pub credential: Bytes,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("method", &self.method)
            .field("credential", &"[redacted]")
            .finish()
    }
}

/// AUTH succeeded: who the connection now is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthOk {
    pub tenant: TenantId,
    pub principal: String,
    /// Unix milliseconds when the credential stops being valid; 0 = no expiry.
    pub expires_at_ms: u64,
}

/// Success. `count` is the number of messages acknowledged (publish), the
/// number of entries removed (cache delete: 0 or 1), 1 for a cache put, the
/// number of offsets newly acknowledged (consumer ack), and 0 otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub count: u32,
    /// For a publish, how durable the acknowledged messages are; otherwise
    /// [`Durability::None`].
    pub durability: Durability,
}

impl Ack {
    /// An ACK of a request that is not a publish ([`Durability::None`]).
    pub fn new(count: u32) -> Ack {
        Ack {
            count,
            durability: Durability::None,
        }
    }

    /// An ACK of `count` published messages, stored as `durability` says.
    pub fn published(count: u32, durability: Durability) -> Ack {
        Ack { count, durability }
    }
}

/// Failure, with a stable code and a message safe to show a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nack {
    pub code: ErrorCode,
    /// Milliseconds to wait before retrying; 0 = no hint.
    pub retry_after_ms: u32,
    pub message: String,
}

/// Why the server asks a connection to authenticate again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum ReauthReason {
    /// The credential expires soon; send AUTH before the deadline.
    Expiring = 1,
    /// The credential has expired; requests are refused and deliveries
    /// paused until AUTH succeeds or the deadline closes the connection.
    Expired = 2,
    /// The credential was revoked; the connection closes at the deadline.
    Revoked = 3,
    /// The tenant was disabled; the connection closes at the deadline.
    TenantDisabled = 4,
}

impl ReauthReason {
    pub fn from_u8(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::Expiring),
            2 => Some(Self::Expired),
            3 => Some(Self::Revoked),
            4 => Some(Self::TenantDisabled),
            _ => None,
        }
    }
}

/// Server to client, unsolicited (id 0): the connection's credential needs
/// replacing. An AUTH frame on the same connection answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRequired {
    pub reason: ReauthReason,
    /// Milliseconds until the server closes the connection if no AUTH
    /// succeeds; 0 = it is closing now.
    pub deadline_ms: u32,
    pub message: String,
}

/// Client asks for a short-lived Rampart token for its current identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenRequest {
    /// Wanted lifetime in milliseconds; 0 = the server's default. The server
    /// may shorten it (its maximum, the source credential's expiry).
    pub ttl_ms: u32,
}

/// A Rampart token. The token is never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    pub token: String,
    pub expires_at_ms: u64,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("token", &"[redacted]")
            .field("expires_at_ms", &self.expires_at_ms)
            .finish()
    }
}

/// One message for one stream. The payload is never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Publish {
    pub ack: AckMode,
    pub tenant: TenantId,
    pub namespace: NamespaceName,
    pub stream: StreamName,
    pub payload: Bytes,
}

impl fmt::Debug for Publish {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publish")
            .field("ack", &self.ack)
            .field("tenant", &self.tenant)
            .field("namespace", &self.namespace)
            .field("stream", &self.stream)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

/// Several messages for one stream, in order.
///
/// `entries` holds `count` records of `len u32 | bytes`, exactly the layout of
/// an EVENT_BATCH's entries, so the server can forward them without copying.
#[derive(Clone, PartialEq, Eq)]
pub struct PublishBatch {
    pub ack: AckMode,
    pub tenant: TenantId,
    pub namespace: NamespaceName,
    pub stream: StreamName,
    pub count: u32,
    pub entries: Bytes,
}

impl PublishBatch {
    /// Builds a batch from payloads.
    pub fn from_payloads<'a>(
        ack: AckMode,
        tenant: TenantId,
        namespace: NamespaceName,
        stream: StreamName,
        payloads: impl IntoIterator<Item = &'a [u8]>,
    ) -> Self {
        let mut b = crate::event::EntriesBuilder::new();
        for p in payloads {
            b.push(p);
        }
        let (count, entries) = b.finish();
        Self {
            ack,
            tenant,
            namespace,
            stream,
            count,
            entries,
        }
    }

    /// The payloads, in order.
    pub fn payloads(&self) -> crate::event::Entries {
        crate::event::Entries::new(self.entries.clone(), self.count)
    }
}

impl fmt::Debug for PublishBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublishBatch")
            .field("ack", &self.ack)
            .field("tenant", &self.tenant)
            .field("namespace", &self.namespace)
            .field("stream", &self.stream)
            .field("count", &self.count)
            .field("bytes", &self.entries.len())
            .finish()
    }
}

/// Start receiving a stream's messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    pub tenant: TenantId,
    pub namespace: NamespaceName,
    pub stream: StreamName,
    pub start: StartAt,
}

/// Reply to SUBSCRIBE: the id that EVENT_BATCH frames will carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscribed {
    pub subscription_id: u64,
}

/// Stop a subscription of this connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsubscribe {
    pub subscription_id: u64,
}

/// Messages delivered to one subscription.
///
/// Layout: `subscription_id u64 | missed u64 | first_seq u64 | count u32 |
/// entries`. Everything from `first_seq` on is the same bytes for every
/// subscriber of the stream, so the server encodes it once.
#[derive(Clone, PartialEq, Eq)]
pub struct EventBatch {
    pub subscription_id: u64,
    /// Messages this subscriber lost to its slow-consumer policy since the
    /// previous batch.
    pub missed: u64,
    /// Stream sequence number of the first entry (on a durable stream, its
    /// offset); the rest follow one by one.
    pub first_seq: u64,
    pub count: u32,
    pub entries: Bytes,
}

impl EventBatch {
    /// The payloads, in order.
    pub fn payloads(&self) -> crate::event::Entries {
        crate::event::Entries::new(self.entries.clone(), self.count)
    }
}

impl fmt::Debug for EventBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventBatch")
            .field("subscription_id", &self.subscription_id)
            .field("missed", &self.missed)
            .field("first_seq", &self.first_seq)
            .field("count", &self.count)
            .field("bytes", &self.entries.len())
            .finish()
    }
}

/// Join (creating it on first use) a named durable consumer of a durable
/// stream. Answered with SUBSCRIBED; messages then arrive as EVENT_BATCH
/// frames with that subscription id, each to one member of the consumer at
/// a time, until acknowledged with [`ConsumerAck`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consume {
    pub tenant: TenantId,
    pub namespace: NamespaceName,
    pub stream: StreamName,
    pub consumer: ConsumerName,
    /// Where the consumer starts. Like the two settings below, it applies
    /// only when this frame creates the consumer; an existing consumer
    /// continues from its committed position with its own settings.
    pub start: StartAt,
    /// Most messages of the consumer delivered and not yet acknowledged;
    /// 0 = the server's default.
    pub max_in_flight: u32,
    /// Milliseconds after delivery before an unacknowledged message is
    /// delivered again; 0 = the server's default.
    pub ack_wait_ms: u32,
}

/// Acknowledge messages (by offset) delivered on a consumer subscription of
/// this connection. Answered with an ACK counting the offsets that this
/// frame newly acknowledged.
#[derive(Clone, PartialEq, Eq)]
pub struct ConsumerAck {
    pub subscription_id: u64,
    pub offsets: Vec<u64>,
}

impl fmt::Debug for ConsumerAck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Offsets can number a million; print how many, not which.
        f.debug_struct("ConsumerAck")
            .field("subscription_id", &self.subscription_id)
            .field("count", &self.offsets.len())
            .finish()
    }
}

/// Store a value under a key, with an optional time to live.
#[derive(Clone, PartialEq, Eq)]
pub struct CachePut {
    pub tenant: TenantId,
    pub namespace: NamespaceName,
    pub cache: CacheName,
    pub key: CacheKey,
    /// Milliseconds until the entry expires; 0 = never.
    pub ttl_ms: u64,
    pub value: Bytes,
}

impl fmt::Debug for CachePut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachePut")
            .field("tenant", &self.tenant)
            .field("namespace", &self.namespace)
            .field("cache", &self.cache)
            .field("key", &self.key)
            .field("ttl_ms", &self.ttl_ms)
            .field("value_len", &self.value.len())
            .finish()
    }
}

/// Read a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheGet {
    pub tenant: TenantId,
    pub namespace: NamespaceName,
    pub cache: CacheName,
    pub key: CacheKey,
}

/// Remove a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheDelete {
    pub tenant: TenantId,
    pub namespace: NamespaceName,
    pub cache: CacheName,
    pub key: CacheKey,
}

/// Reply to CACHE_GET.
#[derive(Clone, PartialEq, Eq)]
pub struct CacheValue {
    /// `None` when the key is absent or expired.
    pub value: Option<Bytes>,
    /// Milliseconds the entry has left; 0 = no expiry (or absent).
    pub ttl_ms: u64,
}

impl fmt::Debug for CacheValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheValue")
            .field("found", &self.value.is_some())
            .field("value_len", &self.value.as_ref().map(|v| v.len()))
            .field("ttl_ms", &self.ttl_ms)
            .finish()
    }
}
