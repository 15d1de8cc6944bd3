//! Rampart wire protocol, version 1.
//!
//! This crate turns bytes into typed frames and back. It does no IO, reads no
//! clock and spawns nothing, so the server, the client and the fuzzer share
//! exactly the same code. The byte layouts are specified in
//! `docs/protocol.md`; `tests/vectors/` holds hex test vectors.
//!
//! # Layout
//! - `names`: validated resource names (`TenantId`, `StreamName`, `ConsumerName`, ...).
//! - `code`: the stable numeric NACK codes.
//! - `frame`: frame types and their typed bodies.
//! - `codec`: header checks, incremental decoding, encoding.
//! - `event`: message entries and the encode-once fan-out path.

mod code;
mod codec;
mod event;
mod frame;
mod names;

pub use code::ErrorCode;
pub use codec::{
    decode_exact, encode_publish_batch, BodyError, DecodeExactError, Decoded, FrameDecoder,
    FrameError, Header,
};
pub use event::{Entries, EntriesBuilder, SharedEvents};
pub use frame::{
    Ack, AckMode, Auth, AuthMethod, AuthOk, AuthRequired, CacheDelete, CacheGet, CachePut,
    CacheValue, Consume, ConsumerAck, Durability, EventBatch, Frame, FrameType, Hello, Message,
    Nack, Publish, PublishBatch, ReauthReason, StartAt, Subscribe, Subscribed, Token, TokenRequest,
    Unsubscribe, DEFAULT_MAX_FRAME, HEADER_LEN, KNOWN_FLAGS, PREAUTH_MAX_FRAME, PROTOCOL_VERSION,
};
pub use names::{
    CacheKey, CacheName, CachePath, ConsumerName, NameError, NamespaceName, PathError, StreamName,
    StreamPath, TenantId, MAX_CACHE_KEY_LEN, MAX_NAME_LEN,
};
