//! Rampart identity: who is talking to the server.
//!
//! # Layout
//! - `secret`: [`Secret`], the zeroizing, never-printed wrapper for key
//!   material, used by the server and the client alike.
//! - `apikey`: API key generation, peppered HMAC-SHA256 hashing and the
//!   constant-time [`ApiKeyStore`].
//! - `principal`: [`Principal`], the authenticated identity and its tenant.
//! - `jwt`: JWT / OIDC bearer tokens (Kubernetes service accounts among
//!   them): [`JwtIssuerConfig`], and [`JwtVerifier`], which checks a token
//!   and maps its claims to a [`JwtIdentity`].
//! - `jwks`: issuers' JSON Web Key Sets, from a file or over HTTPS, cached
//!   and refreshed (single-flight, rate-limited) on unknown key ids.
//! - `https`: the small HTTPS client (hyper over tokio-rustls, ring) that
//!   fetches key sets here and talks to the transit engine in
//!   `rampart-keys`: timeouts, a body cap, zeroized bodies, and
//!   [`https::HttpsError`].
//! - `token`: Rampart's own short-lived Ed25519-signed tokens.
//! - `fsutil`: owner-only files and folders for anything secret on disk.

mod apikey;
pub mod fsutil;
pub mod https;
mod jwks;
mod jwt;
mod principal;
mod secret;
mod token;

pub use apikey::{
    generate_api_key, generate_managed_key, managed_key_id, random_bytes, ApiKeyStore, KeyError,
    KeyHash, Pepper, HASH_PREFIX, MANAGED_KEY_PREFIX, STATIC_KEY_ROLE,
};
pub use jwks::JwksError;
pub use jwt::{
    JwksLocation, JwtConfigError, JwtError, JwtIdentity, JwtIssuerConfig, JwtVerifier,
    KUBERNETES_ISSUER, MAX_LEEWAY_SECS, SYSTEM_CA_BUNDLE,
};
pub use principal::{Principal, PrincipalKind};
pub use secret::Secret;
pub use token::{
    new_token_id, signing_key_id, verify_with, RetiredSigningKey, SigningKeyError, TokenClaims,
    TokenError, TokenKeys, TokenSigner, MAX_TOKEN_LEN, TOKEN_PREFIX,
};
