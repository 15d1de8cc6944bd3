//! JSON Web Key Sets: which keys an issuer signs with, where they come from,
//! and the per-issuer cache that refreshes them.
//!
//! A key set is read from a file (Kubernetes: `kubectl get --raw
//! /openid/v1/jwks`, mounted into the pod) or fetched over HTTPS from the
//! issuer. Every key is checked when it is loaded: only signing keys of a
//! type `ring` verifies (RSA of 2048 bits or more, EC P-256 and P-384,
//! Ed25519) are kept; symmetric (`oct`) keys are never taken from a key set,
//! so a published key can never become an HMAC secret.
//!
//! The cache refreshes when a token names a key id it does not know, at most
//! once per `jwks_min_refresh_secs` (5 s after a failed attempt, if that is
//! sooner), and one fetch at a time: concurrent verifications wait on the
//! fetch in flight instead of starting their own. A failed refresh keeps the
//! previous keys. A key set file is re-read the same way, so a rotated
//! Kubernetes JWKS written over the file is picked up without a restart.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use tracing::{info, warn};

use crate::https::{self, AddressError, HttpsClient, HttpsError, Limits, SecretBody};
use crate::jwt::JwtError;

/// Largest key set accepted, from a file or over HTTP.
pub(crate) const MAX_JWKS_BYTES: usize = 1 << 20;
/// Most keys kept from one key set; real issuers publish a handful.
const MAX_KEYS: usize = 100;
/// Least time between refreshes after a failed one, when the minimum
/// refresh interval is longer.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);
/// Smallest RSA modulus accepted, in bytes (2048 bits).
const MIN_RSA_MODULUS_BYTES: usize = 256;

/// Why a key set could not be read, fetched or parsed. Messages never carry
/// the body that was fetched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwksError {
    #[error("reading {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("connecting to the JWKS server: {0}")]
    Connect(String),
    #[error("TLS handshake with the JWKS server: {0}")]
    Tls(String),
    #[error("HTTP exchange with the JWKS server: {0}")]
    Http(String),
    #[error("JWKS server answered HTTP {0}, expected 200")]
    Status(u16),
    #[error("key set is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("JWKS fetch took longer than {0:?}")]
    Timeout(Duration),
    #[error("key set is not JWKS JSON: {0}")]
    Json(String),
    #[error("key set has no usable signing key")]
    NoUsableKeys,
}

// === impl VerifyKey ===

/// The key families `ring` verifies, with the curve where it matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

impl KeyKind {
    /// Whether a key of this kind may verify `alg`. The curve must match the
    /// algorithm exactly (ES256 is P-256 only).
    pub(crate) fn fits(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            KeyKind::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            KeyKind::EcP256 => alg == ES256,
            KeyKind::EcP384 => alg == ES384,
            KeyKind::Ed25519 => alg == EdDSA,
        }
    }
}

/// One public signing key from a key set.
pub(crate) struct VerifyKey {
    kid: Option<String>,
    kind: KeyKind,
    /// The JWK's own `alg`, when it names one: the key is then used for that
    /// algorithm only.
    alg: Option<Algorithm>,
    key: DecodingKey,
}

impl fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("kind", &self.kind)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl VerifyKey {
    pub(crate) fn decoding_key(&self) -> &DecodingKey {
        &self.key
    }

    fn fits(&self, alg: Algorithm) -> bool {
        self.kind.fits(alg) && self.alg.is_none_or(|a| a == alg)
    }

    /// Takes a JWK if it is a public signing key we can verify with; the
    /// error says why it was skipped.
    fn from_jwk(jwk: &Jwk) -> Result<Self, &'static str> {
        match &jwk.common.public_key_use {
            None | Some(PublicKeyUse::Signature) => {}
            Some(_) => return Err("not a signing key (`use` is not `sig`)"),
        }
        if let Some(ops) = &jwk.common.key_operations {
            if !ops.iter().any(|op| matches!(op, KeyOperations::Verify)) {
                return Err("`key_ops` does not include `verify`");
            }
        }
        let alg = match jwk.common.key_algorithm {
            None => None,
            // KeyAlgorithm prints as its variant name, which is the JOSE name
            // for every signature algorithm; encryption ones fail to parse.
            Some(a) => Some(
                a.to_string()
                    .parse::<Algorithm>()
                    .map_err(|_| "`alg` is not a signature algorithm")?,
            ),
        };
        let b64 = |s: &str| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(s)
                .map_err(|_| "key parameter is not base64url")
        };
        let kind = match &jwk.algorithm {
            AlgorithmParameters::RSA(p) => {
                let n = b64(&p.n)?;
                let significant = n.iter().skip_while(|&&b| b == 0).count();
                if significant < MIN_RSA_MODULUS_BYTES {
                    return Err("RSA key is shorter than 2048 bits");
                }
                KeyKind::Rsa
            }
            AlgorithmParameters::EllipticCurve(p) => {
                let (kind, len) = match p.curve {
                    EllipticCurve::P256 => (KeyKind::EcP256, 32),
                    EllipticCurve::P384 => (KeyKind::EcP384, 48),
                    _ => return Err("EC curve is not P-256 or P-384"),
                };
                if b64(&p.x)?.len() != len || b64(&p.y)?.len() != len {
                    return Err("EC point has the wrong length for its curve");
                }
                kind
            }
            AlgorithmParameters::OctetKeyPair(p) => {
                if p.curve != EllipticCurve::Ed25519 {
                    return Err("OKP curve is not Ed25519");
                }
                if b64(&p.x)?.len() != 32 {
                    return Err("Ed25519 key is not 32 bytes");
                }
                KeyKind::Ed25519
            }
            AlgorithmParameters::OctetKey(_) => {
                return Err("symmetric (oct) keys are never taken from a key set")
            }
        };
        if let Some(a) = alg {
            if !kind.fits(a) {
                return Err("`alg` does not match the key type");
            }
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|_| "key parameters do not decode")?;
        Ok(Self {
            kid: jwk.common.key_id.clone(),
            kind,
            alg,
            key,
        })
    }
}

// === impl KeySet ===

/// The usable keys of one key set.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    keys: Vec<Arc<VerifyKey>>,
}

/// The result of looking a token's key up in a [`KeySet`].
#[derive(Debug)]
pub(crate) enum Lookup {
    Found(Arc<VerifyKey>),
    /// Keys with the token's `kid` exist, but none of a type for its `alg`.
    WrongType,
    Missing,
}

impl KeySet {
    /// Parses JWKS JSON. Keys that are malformed, of an unsupported type or
    /// not for signing are skipped with a warning; a set left with no key at
    /// all is an error.
    pub(crate) fn parse(issuer: &str, json: &[u8]) -> Result<Self, JwksError> {
        // Each key is parsed on its own (as jsonwebtoken's `Jwk`) so that one
        // key of a type we do not know does not make the whole set unusable.
        #[derive(serde::Deserialize)]
        struct RawSet {
            keys: Vec<serde_json::Value>,
        }
        let raw: RawSet =
            serde_json::from_slice(json).map_err(|e| JwksError::Json(e.to_string()))?;
        if raw.keys.len() > MAX_KEYS {
            return Err(JwksError::Json(format!("more than {MAX_KEYS} keys")));
        }
        let mut keys = Vec::with_capacity(raw.keys.len());
        for value in raw.keys {
            let kid = value.get("kid").and_then(|k| k.as_str()).map(str::to_owned);
            let parsed = serde_json::from_value::<Jwk>(value)
                .map_err(|_| "unsupported or malformed JWK")
                .and_then(|jwk| VerifyKey::from_jwk(&jwk));
            match parsed {
                Ok(key) => keys.push(Arc::new(key)),
                Err(why) => warn!(issuer, kid = ?kid, why, "skipping JWKS key"),
            }
        }
        if keys.is_empty() {
            return Err(JwksError::NoUsableKeys);
        }
        Ok(Self { keys })
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// Finds the key for a token. With a `kid`, the key must carry that id
    /// and fit `alg`. Without one, the set must hold exactly one key that
    /// fits `alg`; guessing among several would let any of them sign.
    pub(crate) fn find(&self, kid: Option<&str>, alg: Algorithm) -> Lookup {
        match kid {
            Some(kid) => {
                let mut named = false;
                for key in self.keys.iter().filter(|k| k.kid.as_deref() == Some(kid)) {
                    if key.fits(alg) {
                        return Lookup::Found(Arc::clone(key));
                    }
                    named = true;
                }
                if named {
                    Lookup::WrongType
                } else {
                    Lookup::Missing
                }
            }
            None => {
                let mut fitting = self.keys.iter().filter(|k| k.fits(alg));
                match (fitting.next(), fitting.next()) {
                    (Some(key), None) => Lookup::Found(Arc::clone(key)),
                    _ => Lookup::Missing,
                }
            }
        }
    }
}

// === impl JwksSource ===

/// Where an issuer's key set comes from.
#[derive(Debug)]
pub(crate) enum JwksSource {
    File(PathBuf),
    Url(Box<HttpsFetcher>),
}

impl JwksSource {
    async fn load(&self) -> Result<Vec<u8>, JwksError> {
        match self {
            JwksSource::File(path) => {
                let owned = path.clone();
                tokio::task::spawn_blocking(move || read_capped(&owned))
                    .await
                    .map_err(|e| JwksError::Read {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    })?
            }
            JwksSource::Url(fetcher) => fetcher.fetch().await,
        }
    }

    fn describe(&self) -> String {
        match self {
            JwksSource::File(p) => p.display().to_string(),
            // Scheme, host and path only: a query string could carry a key.
            JwksSource::Url(f) => format!(
                "{}://{}{}",
                f.uri.scheme_str().unwrap_or(""),
                f.uri.authority().map_or("", |a| a.as_str()),
                f.uri.path()
            ),
        }
    }
}

/// Reads a file of at most [`MAX_JWKS_BYTES`].
fn read_capped(path: &Path) -> Result<Vec<u8>, JwksError> {
    let err = |reason: String| JwksError::Read {
        path: path.display().to_string(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let mut out = Vec::new();
    file.take(MAX_JWKS_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| err(e.to_string()))?;
    if out.len() > MAX_JWKS_BYTES {
        return Err(JwksError::TooLarge {
            limit: MAX_JWKS_BYTES,
        });
    }
    Ok(out)
}

// === impl HttpsFetcher ===

/// Builds the client TLS config for fetching key sets: the ring provider,
/// TLS 1.3 and 1.2, and the CA certificates in the PEM file at `ca_path`.
pub(crate) fn client_tls_config(ca_path: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    https::tls_config(ca_path).map_err(|e| e.to_string())
}

/// Fetches one key set URL with the shared [`https`] client: GET only, no
/// redirects, no proxies, no connection reuse: a fetch is rare and must be
/// predictable.
pub(crate) struct HttpsFetcher {
    uri: http::Uri,
    client: HttpsClient,
}

impl fmt::Debug for HttpsFetcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpsFetcher")
            .field("client", &self.client)
            .finish()
    }
}

/// The one place client errors become key set errors. Messages carry the
/// cause only; the fetched body never appears in them.
fn fetch_error(e: HttpsError) -> JwksError {
    match e {
        HttpsError::Connect { reason, .. } => JwksError::Connect(reason),
        HttpsError::ServerName(reason) | HttpsError::Tls(reason) => JwksError::Tls(reason),
        HttpsError::Timeout(limit) => JwksError::Timeout(limit),
        HttpsError::TooLarge { limit } => JwksError::TooLarge { limit },
        HttpsError::Http { reason, .. } => JwksError::Http(reason),
        other => JwksError::Http(other.to_string()),
    }
}

impl HttpsFetcher {
    /// `uri` must be absolute; its scheme must already have been checked
    /// against `tls` by the caller (https with a config, http without).
    pub(crate) fn new(
        uri: http::Uri,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Self, &'static str> {
        let client = HttpsClient::new(&uri, tls, "rampart-jwks/1")
            .map_err(|e| match e {
                HttpsError::Address(AddressError::Credentials) => "URL must not carry credentials",
                _ => "URL has no host",
            })?
            .with_limits(Limits {
                max_body: MAX_JWKS_BYTES,
                ..Limits::default()
            });
        Ok(Self { uri, client })
    }

    async fn fetch(&self) -> Result<Vec<u8>, JwksError> {
        let path = self.uri.path_and_query().map_or("/", |p| p.as_str());
        let accept = (
            http::header::ACCEPT,
            http::HeaderValue::from_static("application/jwk-set+json, application/json"),
        );
        let response = self
            .client
            .send(http::Method::GET, path, vec![accept], SecretBody::empty())
            .await
            .map_err(fetch_error)?;
        if response.status != 200 {
            return Err(JwksError::Status(response.status));
        }
        // A key set is public: no need to keep it in a zeroizing buffer.
        Ok(response.body.expose().clone())
    }
}

// === impl Jwks ===

/// What one refresh attempt came to.
#[derive(Debug)]
enum Refresh {
    /// New keys are in place (fetched here or by the task we waited on).
    Updated,
    /// Too soon after the last attempt; nothing was fetched. `failed` tells
    /// whether that last attempt failed.
    TooSoon {
        failed: bool,
    },
    Failed(JwksError),
}

#[derive(Debug, Default)]
struct RefreshState {
    last_attempt: Option<Instant>,
    last_failed: bool,
}

#[derive(Debug)]
struct Inner {
    issuer: String,
    source: JwksSource,
    keys: RwLock<Arc<KeySet>>,
    /// Bumped on every successful load; 0 means never loaded.
    generation: AtomicU64,
    refresh: Arc<tokio::sync::Mutex<RefreshState>>,
    min_refresh: Duration,
}

impl Inner {
    fn snapshot(&self) -> Arc<KeySet> {
        match self.keys.read() {
            Ok(g) => Arc::clone(&g),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    fn store(&self, set: KeySet) {
        let set = Arc::new(set);
        match self.keys.write() {
            Ok(mut g) => *g = set,
            Err(poisoned) => *poisoned.into_inner() = set,
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    async fn load(&self) -> Result<KeySet, JwksError> {
        let bytes = self.source.load().await?;
        KeySet::parse(&self.issuer, &bytes)
    }
}

/// The cached key set of one issuer.
pub(crate) struct Jwks {
    inner: Arc<Inner>,
}

impl fmt::Debug for Jwks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwks")
            .field("issuer", &self.inner.issuer)
            .field("source", &self.inner.source)
            .field("keys", &self.inner.snapshot().len())
            .finish()
    }
}

impl Jwks {
    /// Reads and parses the key set file now; any problem is an error.
    pub(crate) fn from_file(
        issuer: &str,
        path: PathBuf,
        min_refresh: Duration,
    ) -> Result<Self, JwksError> {
        let set = KeySet::parse(issuer, &read_capped(&path)?)?;
        info!(issuer, path = %path.display(), keys = set.len(), "JWKS loaded");
        let jwks = Self::empty(issuer, JwksSource::File(path), min_refresh);
        jwks.inner.store(set);
        Ok(jwks)
    }

    /// A key set fetched from `fetcher` on first use (or by
    /// [`Jwks::refresh`]).
    pub(crate) fn from_url(issuer: &str, fetcher: HttpsFetcher, min_refresh: Duration) -> Self {
        Self::empty(issuer, JwksSource::Url(Box::new(fetcher)), min_refresh)
    }

    fn empty(issuer: &str, source: JwksSource, min_refresh: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                issuer: issuer.to_owned(),
                source,
                keys: RwLock::new(Arc::new(KeySet::default())),
                generation: AtomicU64::new(0),
                refresh: Arc::new(tokio::sync::Mutex::new(RefreshState::default())),
                min_refresh,
            }),
        }
    }

    /// Finds the key for a token, refreshing the set once when the key is
    /// not there (subject to the minimum refresh interval).
    pub(crate) async fn key_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<VerifyKey>, JwtError> {
        let seen = self.inner.generation.load(Ordering::Acquire);
        match self.inner.snapshot().find(kid, alg) {
            Lookup::Found(key) => return Ok(key),
            Lookup::WrongType => return Err(JwtError::KeyMismatch),
            Lookup::Missing => {}
        }
        let outcome = self.refresh_after(seen, false).await;
        match self.inner.snapshot().find(kid, alg) {
            Lookup::Found(key) => Ok(key),
            Lookup::WrongType => Err(JwtError::KeyMismatch),
            Lookup::Missing => match outcome {
                Refresh::Updated => Err(JwtError::UnknownKid),
                Refresh::TooSoon { failed } => {
                    let never_loaded = self.inner.generation.load(Ordering::Acquire) == 0;
                    if failed || never_loaded {
                        Err(JwtError::JwksUnavailable)
                    } else {
                        Err(JwtError::UnknownKid)
                    }
                }
                Refresh::Failed(_) => Err(JwtError::JwksUnavailable),
            },
        }
    }

    /// Reloads the key set now, whatever the minimum interval says (for
    /// start-up and periodic refresh). Still one fetch at a time.
    pub(crate) async fn refresh(&self) -> Result<(), JwksError> {
        let seen = self.inner.generation.load(Ordering::Acquire);
        match self.refresh_after(seen, true).await {
            Refresh::Updated | Refresh::TooSoon { .. } => Ok(()),
            Refresh::Failed(e) => Err(e),
        }
    }

    /// Single-flight refresh. `seen` is the generation the caller looked
    /// at: if it changed while we waited for the lock, someone else has just
    /// refreshed and we use their result.
    async fn refresh_after(&self, seen: u64, force: bool) -> Refresh {
        let mut state = Arc::clone(&self.inner.refresh).lock_owned().await;
        if self.inner.generation.load(Ordering::Acquire) != seen {
            return Refresh::Updated;
        }
        if !force {
            if let Some(at) = state.last_attempt {
                // After a failure (the issuer was down, not an attacker's
                // doing) retry sooner, so that a blip does not lock every
                // token out for the whole interval.
                let wait = if state.last_failed {
                    self.inner.min_refresh.min(RETRY_AFTER_FAILURE)
                } else {
                    self.inner.min_refresh
                };
                if at.elapsed() < wait {
                    return Refresh::TooSoon {
                        failed: state.last_failed,
                    };
                }
            }
        }
        state.last_attempt = Some(Instant::now());
        // The fetch runs in its own task, holding the lock, so that a
        // verification dropped mid-fetch (a client that went away) neither
        // cancels it nor wastes the attempt.
        let inner = Arc::clone(&self.inner);
        let task = tokio::spawn(async move {
            let result = inner.load().await;
            match result {
                Ok(set) => {
                    info!(
                        issuer = %inner.issuer,
                        source = %inner.source.describe(),
                        keys = set.len(),
                        "JWKS refreshed"
                    );
                    inner.store(set);
                    state.last_failed = false;
                    Ok(())
                }
                Err(e) => {
                    warn!(
                        issuer = %inner.issuer,
                        source = %inner.source.describe(),
                        error = %e,
                        "JWKS refresh failed; keeping the previous keys"
                    );
                    state.last_failed = true;
                    Err(e)
                }
            }
        });
        match task.await {
            Ok(Ok(())) => Refresh::Updated,
            Ok(Err(e)) => Refresh::Failed(e),
            Err(e) => Refresh::Failed(JwksError::Http(format!("refresh task failed: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    fn okp(kid: &str) -> serde_json::Value {
        serde_json::json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(&[1u8; 32])})
    }

    fn ec(kid: &str, crv: &str, len: usize) -> serde_json::Value {
        serde_json::json!({
            "kty": "EC", "crv": crv, "kid": kid,
            "x": b64(&vec![2u8; len]), "y": b64(&vec![3u8; len]),
        })
    }

    fn set(keys: Vec<serde_json::Value>) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "keys": keys })).unwrap()
    }

    #[test]
    fn unusable_keys_are_skipped_not_fatal() {
        let json = set(vec![
            okp("ed"),
            ec("p256", "P-256", 32),
            serde_json::json!({"kty": "oct", "kid": "hmac", "k": b64(b"0123456789abcdef0123456789abcdef")}),
            serde_json::json!({"kty": "RSA", "kid": "short", "n": b64(&[0xff; 128]), "e": "AQAB"}),
            serde_json::json!({"kty": "RSA", "kid": "enc", "use": "enc", "n": b64(&[0xff; 256]), "e": "AQAB"}),
            serde_json::json!({"kty": "EC", "crv": "P-521", "kid": "p521", "x": "AA", "y": "AA"}),
            serde_json::json!({"kty": "EC", "crv": "P-256", "kid": "short-ec", "x": "AA", "y": "AA"}),
            serde_json::json!({"kty": "weird", "kid": "weird"}),
            serde_json::json!({"kty": "OKP", "crv": "Ed25519", "kid": "mislabelled", "alg": "ES256", "x": b64(&[1u8; 32])}),
        ]);
        let keys = KeySet::parse("iss", &json).unwrap();
        assert_eq!(keys.len(), 2);
        assert!(matches!(
            keys.find(Some("hmac"), Algorithm::HS256),
            Lookup::Missing
        ));
        assert!(matches!(
            keys.find(Some("mislabelled"), Algorithm::EdDSA),
            Lookup::Missing
        ));
    }

    #[test]
    fn empty_or_bad_sets_are_errors() {
        assert!(matches!(
            KeySet::parse("iss", &set(vec![])),
            Err(JwksError::NoUsableKeys)
        ));
        assert!(matches!(
            KeySet::parse("iss", b"{\"keys\": 5}"),
            Err(JwksError::Json(_))
        ));
        assert!(matches!(
            KeySet::parse("iss", b"not json"),
            Err(JwksError::Json(_))
        ));
    }

    #[test]
    fn lookup_matches_kid_and_key_type() {
        let keys = KeySet::parse("iss", &set(vec![okp("a"), ec("b", "P-256", 32)])).unwrap();
        assert!(matches!(
            keys.find(Some("a"), Algorithm::EdDSA),
            Lookup::Found(_)
        ));
        assert!(matches!(
            keys.find(Some("a"), Algorithm::ES256),
            Lookup::WrongType
        ));
        assert!(matches!(
            keys.find(Some("b"), Algorithm::ES384),
            Lookup::WrongType
        ));
        assert!(matches!(
            keys.find(Some("b"), Algorithm::RS256),
            Lookup::WrongType
        ));
        assert!(matches!(
            keys.find(Some("c"), Algorithm::EdDSA),
            Lookup::Missing
        ));
        // Without a kid: exactly one key of the right type, or nothing.
        assert!(matches!(
            keys.find(None, Algorithm::ES256),
            Lookup::Found(_)
        ));
        let two = KeySet::parse("iss", &set(vec![okp("a"), okp("b")])).unwrap();
        assert!(matches!(two.find(None, Algorithm::EdDSA), Lookup::Missing));
    }

    #[test]
    fn jwk_alg_pins_the_key_to_one_algorithm() {
        let mut key = ec("p384", "P-384", 48);
        key["alg"] = "ES384".into();
        let keys = KeySet::parse("iss", &set(vec![key])).unwrap();
        assert!(matches!(
            keys.find(Some("p384"), Algorithm::ES384),
            Lookup::Found(_)
        ));
        assert!(matches!(
            keys.find(Some("p384"), Algorithm::ES256),
            Lookup::WrongType
        ));
    }

    #[test]
    fn oversized_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, vec![b' '; MAX_JWKS_BYTES + 1]).unwrap();
        assert!(matches!(
            read_capped(&path),
            Err(JwksError::TooLarge { .. })
        ));
    }

    #[test]
    fn fetcher_refuses_urls_with_credentials() {
        let uri: http::Uri = "http://user:pw@example.com/jwks".parse().unwrap();
        assert!(HttpsFetcher::new(uri, None).is_err());
        let uri: http::Uri = "http://[::1]:8080/jwks".parse().unwrap();
        let f = HttpsFetcher::new(uri, None).unwrap();
        assert_eq!((f.client.host.as_str(), f.client.port), ("::1", 8080));
        assert_eq!(f.client.limits().max_body, MAX_JWKS_BYTES);
    }
}
