//! Rampart identity: who is talking to the server.
//!
//! # Layout
//! - `secret`: [`Secret`], the zeroizing, never-printed wrapper for key
//!   material, used by the server and the client alike.
//! - `apikey`: API key generation, peppered HMAC-SHA256 hashing and the
//!   constant-time [`ApiKeyStore`].
//! - `principal`: [`Principal`], the authenticated identity and its tenant.
//! - `fsutil`: owner-only files and folders for anything secret on disk.

mod apikey;
pub mod fsutil;
mod principal;
mod secret;

pub use apikey::{
    generate_api_key, random_bytes, ApiKeyStore, KeyError, KeyHash, Pepper, HASH_PREFIX,
};
pub use principal::{Principal, PrincipalKind};
pub use secret::Secret;
