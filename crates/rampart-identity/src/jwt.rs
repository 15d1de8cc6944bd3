//! JWT / OIDC bearer tokens: which issuers are trusted, how a token is
//! checked, and the identity it yields. Kubernetes service-account tokens
//! are one such issuer (see [`JwtIssuerConfig::kubernetes`]).
//!
//! [`JwtVerifier::verify`] checks, in this order, and stops at the first
//! failure:
//!
//! 1. the token is a compact JWS of at most 16 KiB with a JSON header and a
//!    JSON object payload, and no `crit` header;
//! 2. `alg` is not `none` (in any case);
//! 3. the *unverified* `iss` names a configured issuer; it only picks the
//!    issuer config, and is checked again after the signature;
//! 4. `alg` is in that issuer's `algorithms`, before any key is looked up;
//! 5. the key: HMAC algorithms use the issuer's configured secret, every
//!    other algorithm a key from its key set, found by `kid` and of the type
//!    the algorithm needs (an Ed25519 key never verifies an ES256 token);
//!    an unknown `kid` refreshes the key set once (see `jwks`);
//! 6. the signature;
//! 7. `iss`, `aud`, `exp` (required), `nbf` and `iat` (when present), all
//!    with `leeway_secs`, and `exp - iat` against `max_token_lifetime_secs`;
//! 8. the claim mappings: tenant, principal, roles.
//!
//! Steps 7 and 8 are a pure function of the claims and the current time.
//! Errors are a [`JwtError`] with a stable [`JwtError::reason`] for audit
//! records; neither the token nor any value taken from it ever appears in an
//! error message or a log line.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey};
use rampart_proto::TenantId;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::warn;

use crate::jwks::{client_tls_config, HttpsFetcher, Jwks, JwksError};
use crate::secret::Secret;

/// The issuer of Kubernetes service-account tokens in a default cluster
/// (`--service-account-issuer`). Managed clusters (EKS, GKE, AKS) use their
/// own URL: read it from `kubectl get --raw /.well-known/openid-configuration`.
pub const KUBERNETES_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// CA bundle used for `jwks_url` when `jwks_ca_cert_path` is not set.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Longest token accepted, in bytes.
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Largest `leeway_secs` accepted.
pub const MAX_LEEWAY_SECS: u64 = 300;
const MAX_PRINCIPAL_BYTES: usize = 256;
const MAX_ROLES: usize = 64;
const MAX_ROLE_BYTES: usize = 128;

// === impl JwtIssuerConfig ===

/// One trusted token issuer, as written in the server config.
///
/// In TOML (the table name is the server's choice):
///
/// ```toml
/// [[jwt_issuers]]
/// issuer = "https://login.example.com/"          # exact `iss`
/// audiences = ["rampart"]                        # `aud` must contain one
/// jwks_url = "https://login.example.com/.well-known/jwks.json"
/// # jwks_ca_cert_path = "/etc/rampart/idp-ca.pem" # default: system bundle
/// # algorithms = ["RS256", "ES256", "EdDSA"]      # the default
/// # leeway_secs = 30                              # at most 300
/// tenant_claim = "org"                           # or: tenant = "acme"
/// # principal_claim = "sub"
/// roles_claim = "/realm_access/roles"            # JSON Pointer: nested
/// max_token_lifetime_secs = 3600
/// # jwks_min_refresh_secs = 60
/// ```
///
/// Claim mappings (`tenant_claim`, `principal_claim`, `roles_claim`) name a
/// top-level claim, or, when they start with `/`, are a JSON Pointer
/// (RFC 6901) into nested objects: `/kubernetes.io/namespace` is the
/// `namespace` key inside the `kubernetes.io` object (write `~1` for a `/`
/// inside a key and `~0` for `~`).
///
/// The tenant must parse as a [`TenantId`]. The principal must be a
/// non-empty string of at most 256 bytes without control characters. Roles
/// are an array of strings, or one string of space-separated roles (OAuth
/// `scope` style); a missing roles claim means no roles.
///
/// # Kubernetes service accounts
///
/// [`JwtIssuerConfig::kubernetes`] presets issuer [`KUBERNETES_ISSUER`],
/// algorithms RS256 and ES256, the principal from `sub`
/// (`system:serviceaccount:<namespace>:<name>`) and the tenant from the
/// namespace, `/kubernetes.io/namespace`. The equivalent TOML:
///
/// ```toml
/// [[jwt_issuers]]
/// issuer = "https://kubernetes.default.svc.cluster.local"
/// audiences = ["rampart"]      # what pods request in their projected token
/// jwks_path = "/etc/rampart/k8s-jwks.json"
/// algorithms = ["RS256", "ES256"]
/// tenant_claim = "/kubernetes.io/namespace"
/// ```
///
/// Pods get such a token from a projected volume with
/// `serviceAccountToken: {audience: rampart, expirationSeconds: 3600}`.
/// The key set comes from `kubectl get --raw /openid/v1/jwks` (write it to
/// the `jwks_path` file and update it when the cluster rotates keys), or
/// from `jwks_url = "https://kubernetes.default.svc/openid/v1/jwks"` with
/// `jwks_ca_cert_path =
/// "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"` once anonymous
/// discovery is allowed (`kubectl create clusterrolebinding
/// oidc-reviewer --clusterrole=system:service-account-issuer-discovery
/// --group=system:unauthenticated`); the fetch sends no credentials.
///
/// Mapping the namespace to the tenant means whoever may create a namespace
/// named like a tenant may act as that tenant. Where that is not wanted, use
/// one fixed tenant per cluster instead: `tenant = "payments"` and no
/// `tenant_claim`.
///
/// # Dangerous settings
///
/// `dangerous_allow_http_jwks` lets `jwks_url` be plain `http://`: anyone on
/// the network path can then substitute signing keys.
/// `dangerous_allow_hmac_secret_path` is a file holding a shared secret
/// (at least 32, 48 or 64 bytes for HS256, HS384, HS512; one trailing
/// newline is ignored); it is required for, and only used by, HS256/384/512
/// in `algorithms`. Anyone holding that secret can mint tokens for any
/// tenant the mapping allows. HMAC keys are never taken from a key set.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct JwtIssuerConfig {
    /// The exact `iss` value.
    pub issuer: String,
    /// Accepted audiences; the token's `aud` must contain at least one.
    pub audiences: Vec<String>,
    /// Key set file (JWKS JSON). Exactly one of `jwks_path` and `jwks_url`,
    /// unless only HMAC algorithms are allowed.
    pub jwks_path: Option<PathBuf>,
    /// Key set URL; `https://` only.
    pub jwks_url: Option<String>,
    /// PEM CA certificates trusted for `jwks_url`; default
    /// [`SYSTEM_CA_BUNDLE`].
    pub jwks_ca_cert_path: Option<PathBuf>,
    /// Allows an `http://` `jwks_url`. Logged as a warning.
    #[serde(default)]
    pub dangerous_allow_http_jwks: bool,
    /// Accepted `alg` values; default `["RS256", "ES256", "EdDSA"]`. Also
    /// ES384, RS384/512, PS256/384/512; HS256/384/512 only with
    /// `dangerous_allow_hmac_secret_path`; `none` never.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// File with the shared HMAC secret; see "Dangerous settings".
    pub dangerous_allow_hmac_secret_path: Option<PathBuf>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`; default 30, at most 300.
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
    /// Claim holding the tenant; default `tenant`. Not with `tenant`.
    pub tenant_claim: Option<String>,
    /// A fixed tenant for every token of this issuer. Not with
    /// `tenant_claim`.
    pub tenant: Option<String>,
    /// Claim holding the principal name; default `sub`.
    #[serde(default = "default_principal_claim")]
    pub principal_claim: String,
    /// Claim holding the roles; default `roles`. Missing means no roles.
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// When set, tokens whose `exp - iat` is longer are refused, and `iat`
    /// is required.
    pub max_token_lifetime_secs: Option<u64>,
    /// Least time between two key set refreshes caused by unknown key ids;
    /// default 60, at least 1.
    #[serde(default = "default_min_refresh")]
    pub jwks_min_refresh_secs: u64,
}

fn default_algorithms() -> Vec<String> {
    ["RS256", "ES256", "EdDSA"].map(String::from).to_vec()
}
fn default_leeway() -> u64 {
    30
}
fn default_principal_claim() -> String {
    "sub".into()
}
fn default_roles_claim() -> String {
    "roles".into()
}
fn default_min_refresh() -> u64 {
    60
}

/// Where an issuer's key set comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JwksLocation {
    File(PathBuf),
    Url(String),
}

impl JwtIssuerConfig {
    /// An issuer with every other setting at its default. Change the public
    /// fields to adjust it.
    pub fn new(
        issuer: impl Into<String>,
        audiences: impl IntoIterator<Item = impl Into<String>>,
        jwks: JwksLocation,
    ) -> Self {
        let (jwks_path, jwks_url) = match jwks {
            JwksLocation::File(p) => (Some(p), None),
            JwksLocation::Url(u) => (None, Some(u)),
        };
        Self {
            issuer: issuer.into(),
            audiences: audiences.into_iter().map(Into::into).collect(),
            jwks_path,
            jwks_url,
            jwks_ca_cert_path: None,
            dangerous_allow_http_jwks: false,
            algorithms: default_algorithms(),
            dangerous_allow_hmac_secret_path: None,
            leeway_secs: default_leeway(),
            tenant_claim: None,
            tenant: None,
            principal_claim: default_principal_claim(),
            roles_claim: default_roles_claim(),
            max_token_lifetime_secs: None,
            jwks_min_refresh_secs: default_min_refresh(),
        }
    }

    /// Kubernetes service-account tokens: see "Kubernetes service accounts"
    /// above. For a fixed tenant, set `tenant` and clear `tenant_claim`.
    pub fn kubernetes(
        audiences: impl IntoIterator<Item = impl Into<String>>,
        jwks: JwksLocation,
    ) -> Self {
        let mut c = Self::new(KUBERNETES_ISSUER, audiences, jwks);
        c.algorithms = vec!["RS256".into(), "ES256".into()];
        c.tenant_claim = Some("/kubernetes.io/namespace".into());
        c
    }
}

/// A configuration that cannot be used; found when the verifier is built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwtConfigError {
    #[error("no JWT issuer is configured")]
    NoIssuers,
    #[error("JWT issuer {issuer:?} is configured more than once")]
    DuplicateIssuer { issuer: String },
    /// A setting is wrong; `key` is the config key.
    #[error("JWT issuer {issuer:?}: `{key}`: {reason}")]
    Invalid {
        issuer: String,
        key: &'static str,
        reason: String,
    },
    /// The key set file could not be loaded.
    #[error("JWT issuer {issuer:?}: loading the key set: {source}")]
    Jwks {
        issuer: String,
        #[source]
        source: JwksError,
    },
}

// === impl JwtError ===

/// Why a token was refused. [`JwtError::reason`] is a short stable string
/// for audit records and metrics; `Display` is for humans. Neither carries
/// the token or any value from it (`claim` is the configured claim name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    #[error("token is not a well-formed signed JWT")]
    Malformed,
    #[error("unsigned token (alg none) refused")]
    AlgNone,
    #[error("token algorithm is not allowed for its issuer")]
    AlgNotAllowed,
    #[error("signing key type does not fit the token algorithm")]
    KeyMismatch,
    #[error("no key of the issuer matches the token's key id")]
    UnknownKid,
    #[error("the issuer's key set is unavailable")]
    JwksUnavailable,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token issuer is not trusted")]
    WrongIssuer,
    #[error("token audience is not accepted")]
    WrongAudience,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token lifetime exceeds the configured maximum")]
    LifetimeTooLong,
    #[error("token lacks the claim `{claim}`")]
    MissingClaim { claim: String },
    #[error("token claim `{claim}` has the wrong type or an unsafe value")]
    InvalidClaim { claim: String },
    #[error("token tenant is not a valid tenant id")]
    BadTenant,
}

impl JwtError {
    /// A short stable reason: `malformed`, `alg_none`, `alg_not_allowed`,
    /// `key_alg_mismatch`, `unknown_kid`, `jwks_unavailable`,
    /// `bad_signature`, `wrong_issuer`, `wrong_audience`, `expired`,
    /// `not_yet_valid`, `lifetime_too_long`, `missing_claim`,
    /// `invalid_claim`, `bad_tenant`.
    pub fn reason(&self) -> &'static str {
        match self {
            JwtError::Malformed => "malformed",
            JwtError::AlgNone => "alg_none",
            JwtError::AlgNotAllowed => "alg_not_allowed",
            JwtError::KeyMismatch => "key_alg_mismatch",
            JwtError::UnknownKid => "unknown_kid",
            JwtError::JwksUnavailable => "jwks_unavailable",
            JwtError::BadSignature => "bad_signature",
            JwtError::WrongIssuer => "wrong_issuer",
            JwtError::WrongAudience => "wrong_audience",
            JwtError::Expired => "expired",
            JwtError::NotYetValid => "not_yet_valid",
            JwtError::LifetimeTooLong => "lifetime_too_long",
            JwtError::MissingClaim { .. } => "missing_claim",
            JwtError::InvalidClaim { .. } => "invalid_claim",
            JwtError::BadTenant => "bad_tenant",
        }
    }

    fn missing(claim: &str) -> Self {
        JwtError::MissingClaim {
            claim: claim.to_owned(),
        }
    }

    fn invalid(claim: &str) -> Self {
        JwtError::InvalidClaim {
            claim: claim.to_owned(),
        }
    }
}

/// Who a verified token says the caller is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JwtIdentity {
    pub tenant: TenantId,
    pub principal: String,
    pub roles: Vec<String>,
    /// `exp` in Unix milliseconds.
    pub expires_at_ms: u64,
    /// The `iss` of the token; principals are only unique per issuer.
    pub issuer: String,
}

// === impl ClaimPolicy ===

/// A claim mapping: a top-level claim name or a JSON Pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ClaimPath {
    Name(String),
    Pointer(String),
}

impl ClaimPath {
    fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            Err("claim name is empty".into())
        } else if s == "/" {
            Err("JSON pointer `/` names no claim".into())
        } else if s.starts_with('/') {
            Ok(ClaimPath::Pointer(s.to_owned()))
        } else {
            Ok(ClaimPath::Name(s.to_owned()))
        }
    }

    fn as_str(&self) -> &str {
        match self {
            ClaimPath::Name(s) | ClaimPath::Pointer(s) => s,
        }
    }

    fn get<'c>(&self, claims: &'c Value) -> Option<&'c Value> {
        match self {
            ClaimPath::Name(n) => claims.get(n.as_str()),
            ClaimPath::Pointer(p) => claims.pointer(p),
        }
    }
}

#[derive(Debug, Clone)]
enum TenantRule {
    Fixed(TenantId),
    Claim(ClaimPath),
}

/// The claim checks and mappings of one issuer: plain data, no IO.
#[derive(Debug, Clone)]
struct ClaimPolicy {
    issuer: String,
    audiences: Vec<String>,
    leeway_secs: u64,
    max_lifetime_secs: Option<u64>,
    tenant: TenantRule,
    principal: ClaimPath,
    roles: ClaimPath,
}

/// Reads a NumericDate claim (seconds; fractions are dropped).
fn numeric_date(claims: &Value, name: &str) -> Result<Option<u64>, JwtError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(v) = n.as_u64() {
                Ok(Some(v))
            } else {
                match n.as_f64() {
                    // `as` saturates: a date past u64 is simply "far future".
                    Some(f) if f.is_finite() && f >= 0.0 => Ok(Some(f as u64)),
                    _ => Err(JwtError::invalid(name)),
                }
            }
        }
        Some(_) => Err(JwtError::invalid(name)),
    }
}

/// Text that is safe to put in logs and audit records.
fn printable(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && !s.chars().any(char::is_control)
}

/// Checks the verified claims of a token at time `now` (Unix seconds) and
/// maps them to an identity.
fn check_claims(policy: &ClaimPolicy, claims: &Value, now: u64) -> Result<JwtIdentity, JwtError> {
    match claims.get("iss") {
        Some(Value::String(iss)) if *iss == policy.issuer => {}
        Some(_) => return Err(JwtError::WrongIssuer),
        None => return Err(JwtError::missing("iss")),
    }

    let accepted = |a: &str| policy.audiences.iter().any(|x| x == a);
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => accepted(a),
        Some(Value::Array(list)) => list.iter().any(|v| v.as_str().is_some_and(accepted)),
        Some(_) => return Err(JwtError::invalid("aud")),
        None => return Err(JwtError::missing("aud")),
    };
    if !aud_ok {
        return Err(JwtError::WrongAudience);
    }

    let leeway = policy.leeway_secs;
    let exp = numeric_date(claims, "exp")?.ok_or_else(|| JwtError::missing("exp"))?;
    let nbf = numeric_date(claims, "nbf")?;
    let iat = numeric_date(claims, "iat")?;
    // Valid while now < exp (RFC 7519 §4.1.4), give or take the leeway.
    if now >= exp.saturating_add(leeway) {
        return Err(JwtError::Expired);
    }
    if nbf.is_some_and(|nbf| now.saturating_add(leeway) < nbf) {
        return Err(JwtError::NotYetValid);
    }
    // A token issued in the future is not valid yet either.
    if iat.is_some_and(|iat| now.saturating_add(leeway) < iat) {
        return Err(JwtError::NotYetValid);
    }
    if let Some(max) = policy.max_lifetime_secs {
        let iat = iat.ok_or_else(|| JwtError::missing("iat"))?;
        if exp.saturating_sub(iat) > max {
            return Err(JwtError::LifetimeTooLong);
        }
    }

    let principal = match policy.principal.get(claims) {
        None => return Err(JwtError::missing(policy.principal.as_str())),
        Some(Value::String(s)) if printable(s, MAX_PRINCIPAL_BYTES) => s.clone(),
        Some(_) => return Err(JwtError::invalid(policy.principal.as_str())),
    };

    let tenant = match &policy.tenant {
        TenantRule::Fixed(t) => t.clone(),
        TenantRule::Claim(path) => match path.get(claims) {
            None => return Err(JwtError::missing(path.as_str())),
            Some(Value::String(s)) => TenantId::parse(s).map_err(|_| JwtError::BadTenant)?,
            Some(_) => return Err(JwtError::BadTenant),
        },
    };

    let roles = match policy.roles.get(claims) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        Some(Value::Array(list)) => list
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| JwtError::invalid(policy.roles.as_str()))?,
        Some(_) => return Err(JwtError::invalid(policy.roles.as_str())),
    };
    if roles.len() > MAX_ROLES || !roles.iter().all(|r| printable(r, MAX_ROLE_BYTES)) {
        return Err(JwtError::invalid(policy.roles.as_str()));
    }

    Ok(JwtIdentity {
        tenant,
        principal,
        roles,
        expires_at_ms: exp.saturating_mul(1000),
        issuer: policy.issuer.clone(),
    })
}

// === impl Compact ===

/// A compact JWS split into its parts; nothing in it is trusted yet.
struct Compact<'t> {
    alg: Algorithm,
    kid: Option<String>,
    claims: Value,
    /// `header.payload`, the bytes the signature covers.
    signing_input: &'t str,
    signature: &'t str,
}

/// Prints the algorithm only: the rest is the token.
impl fmt::Debug for Compact<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Compact")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<Value>,
}

fn decode_json<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, JwtError> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwtError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed)
}

impl<'t> Compact<'t> {
    fn parse(token: &'t str) -> Result<Self, JwtError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(JwtError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed);
        };
        let head: RawHeader = decode_json(header)?;
        if head.alg.eq_ignore_ascii_case("none") {
            return Err(JwtError::AlgNone);
        }
        // We implement no header extension, so any `crit` is one we do not
        // understand, which RFC 7515 §4.1.11 says to refuse.
        if head.crit.is_some() {
            return Err(JwtError::Malformed);
        }
        let alg = Algorithm::from_str(&head.alg).map_err(|_| JwtError::AlgNotAllowed)?;
        let claims: Value = decode_json(payload)?;
        if !claims.is_object() {
            return Err(JwtError::Malformed);
        }
        Ok(Self {
            alg,
            kid: head.kid,
            claims,
            signing_input: &token[..header.len() + 1 + payload.len()],
            signature,
        })
    }

    fn check_signature(&self, key: &DecodingKey) -> Result<(), JwtError> {
        // `verify` fails only on a signature that is not base64url: a bad
        // signature all the same.
        match jsonwebtoken::crypto::verify(
            self.signature,
            self.signing_input.as_bytes(),
            key,
            self.alg,
        ) {
            Ok(true) => Ok(()),
            Ok(false) | Err(_) => Err(JwtError::BadSignature),
        }
    }
}

fn is_hmac(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

// === impl JwtVerifier ===

/// The shared HMAC secret of an issuer. Never printed.
struct HmacKey(DecodingKey);

impl fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HmacKey([redacted])")
    }
}

#[derive(Debug)]
struct Issuer {
    algorithms: Vec<Algorithm>,
    hmac: Option<HmacKey>,
    jwks: Option<Jwks>,
    policy: ClaimPolicy,
}

/// Verifies bearer JWTs from a set of trusted issuers.
#[derive(Debug)]
pub struct JwtVerifier {
    issuers: HashMap<String, Issuer>,
}

impl JwtVerifier {
    /// Validates every issuer config and loads key set files and HMAC
    /// secrets now, so that mistakes stop the server at start. Key sets
    /// from URLs are fetched on first use, or by [`JwtVerifier::refresh_all`].
    pub fn new(configs: Vec<JwtIssuerConfig>) -> Result<Self, JwtConfigError> {
        if configs.is_empty() {
            return Err(JwtConfigError::NoIssuers);
        }
        let mut issuers = HashMap::with_capacity(configs.len());
        for config in configs {
            let name = config.issuer.clone();
            if issuers.contains_key(&name) {
                return Err(JwtConfigError::DuplicateIssuer { issuer: name });
            }
            let issuer = build_issuer(config)?;
            issuers.insert(name, issuer);
        }
        Ok(Self { issuers })
    }

    /// Verifies `token` (without any `Bearer ` prefix) against the current
    /// time.
    pub async fn verify(&self, token: &str) -> Result<JwtIdentity, JwtError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.verify_at(token, now).await
    }

    async fn verify_at(&self, token: &str, now: u64) -> Result<JwtIdentity, JwtError> {
        let token = Compact::parse(token)?;
        // Unverified: only picks the issuer config; checked again below.
        let issuer = match token.claims.get("iss") {
            Some(Value::String(iss)) => self.issuers.get(iss).ok_or(JwtError::WrongIssuer)?,
            Some(_) => return Err(JwtError::WrongIssuer),
            None => return Err(JwtError::missing("iss")),
        };
        if !issuer.algorithms.contains(&token.alg) {
            return Err(JwtError::AlgNotAllowed);
        }
        if is_hmac(token.alg) {
            let key = issuer.hmac.as_ref().ok_or(JwtError::AlgNotAllowed)?;
            token.check_signature(&key.0)?;
        } else {
            let jwks = issuer.jwks.as_ref().ok_or(JwtError::AlgNotAllowed)?;
            let key = jwks.key_for(token.kid.as_deref(), token.alg).await?;
            token.check_signature(key.decoding_key())?;
        }
        check_claims(&issuer.policy, &token.claims, now)
    }

    /// Reloads every key set now, one issuer after the other, and returns
    /// the issuers whose refresh failed (they keep their previous keys).
    /// Use at start to warm URL key sets, or periodically.
    pub async fn refresh_all(&self) -> Vec<(String, JwksError)> {
        let mut failures = Vec::new();
        for (name, issuer) in &self.issuers {
            if let Some(jwks) = &issuer.jwks {
                if let Err(e) = jwks.refresh().await {
                    failures.push((name.clone(), e));
                }
            }
        }
        failures
    }

    /// Runs [`JwtVerifier::refresh_all`] now and then every `every` (at
    /// least one second) until the verifier is dropped or the task aborted.
    /// Failures are logged by the refresh itself.
    pub fn spawn_refresh_task(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let verifier = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every.max(Duration::from_secs(1)));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(v) = verifier.upgrade() else { break };
                v.refresh_all().await;
            }
        })
    }

    /// The configured issuers.
    pub fn issuers(&self) -> impl Iterator<Item = &str> {
        self.issuers.keys().map(String::as_str)
    }
}

/// Turns one config into a ready issuer, or says which key is wrong.
fn build_issuer(c: JwtIssuerConfig) -> Result<Issuer, JwtConfigError> {
    let name = c.issuer.clone();
    let invalid = |key: &'static str, reason: &str| JwtConfigError::Invalid {
        issuer: name.clone(),
        key,
        reason: reason.to_owned(),
    };

    if c.issuer.trim().is_empty() {
        return Err(invalid("issuer", "must not be empty"));
    }
    if c.audiences.is_empty() || c.audiences.iter().any(|a| a.is_empty()) {
        return Err(invalid(
            "audiences",
            "must list at least one non-empty audience",
        ));
    }

    let mut algorithms = Vec::new();
    for alg in &c.algorithms {
        if alg.eq_ignore_ascii_case("none") {
            return Err(invalid("algorithms", "`none` is never allowed"));
        }
        let parsed = Algorithm::from_str(alg)
            .map_err(|_| invalid("algorithms", &format!("unknown algorithm {alg:?}")))?;
        if !algorithms.contains(&parsed) {
            algorithms.push(parsed);
        }
    }
    if algorithms.is_empty() {
        return Err(invalid("algorithms", "must not be empty"));
    }
    let wants_hmac = algorithms.iter().any(|a| is_hmac(*a));
    let wants_keys = algorithms.iter().any(|a| !is_hmac(*a));

    if c.leeway_secs > MAX_LEEWAY_SECS {
        return Err(invalid(
            "leeway_secs",
            &format!("at most {MAX_LEEWAY_SECS}"),
        ));
    }
    if c.max_token_lifetime_secs == Some(0) {
        return Err(invalid("max_token_lifetime_secs", "must be positive"));
    }
    if c.jwks_min_refresh_secs == 0 {
        return Err(invalid("jwks_min_refresh_secs", "must be at least 1"));
    }

    let tenant = match (&c.tenant, &c.tenant_claim) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "tenant",
                "set `tenant` or `tenant_claim`, not both",
            ))
        }
        (Some(t), None) => {
            TenantRule::Fixed(TenantId::parse(t).map_err(|e| invalid("tenant", &e.to_string()))?)
        }
        (None, Some(claim)) => {
            TenantRule::Claim(ClaimPath::parse(claim).map_err(|e| invalid("tenant_claim", &e))?)
        }
        (None, None) => TenantRule::Claim(ClaimPath::Name("tenant".into())),
    };
    let principal =
        ClaimPath::parse(&c.principal_claim).map_err(|e| invalid("principal_claim", &e))?;
    let roles = ClaimPath::parse(&c.roles_claim).map_err(|e| invalid("roles_claim", &e))?;

    let hmac = match (&c.dangerous_allow_hmac_secret_path, wants_hmac) {
        (None, false) => None,
        (None, true) => {
            return Err(invalid(
                "algorithms",
                "HS256/HS384/HS512 need `dangerous_allow_hmac_secret_path`",
            ))
        }
        (Some(_), false) => {
            return Err(invalid(
                "dangerous_allow_hmac_secret_path",
                "set, but no HS algorithm is allowed",
            ))
        }
        (Some(path), true) => {
            let key = load_hmac_secret(path, &algorithms)
                .map_err(|e| invalid("dangerous_allow_hmac_secret_path", &e))?;
            warn!(
                issuer = %name,
                "accepting HMAC-signed JWTs: anyone with the shared secret can mint tokens"
            );
            Some(HmacKey(key))
        }
    };

    let min_refresh = Duration::from_secs(c.jwks_min_refresh_secs);
    let jwks = match (&c.jwks_path, &c.jwks_url) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "jwks_url",
                "set `jwks_path` or `jwks_url`, not both",
            ))
        }
        (None, None) if wants_keys => {
            return Err(invalid(
                "jwks_path",
                "set `jwks_path` or `jwks_url` for the non-HMAC algorithms",
            ))
        }
        (None, None) => None,
        (Some(_), None) | (None, Some(_)) if !wants_keys => {
            return Err(invalid(
                "algorithms",
                "a key set is configured but only HMAC algorithms are allowed",
            ))
        }
        (Some(path), None) => {
            if c.jwks_ca_cert_path.is_some() || c.dangerous_allow_http_jwks {
                return Err(invalid(
                    "jwks_ca_cert_path",
                    "`jwks_ca_cert_path` and `dangerous_allow_http_jwks` apply to `jwks_url` only",
                ));
            }
            let jwks = Jwks::from_file(&name, path.clone(), min_refresh).map_err(|source| {
                JwtConfigError::Jwks {
                    issuer: name.clone(),
                    source,
                }
            })?;
            Some(jwks)
        }
        (None, Some(url)) => Some(url_jwks(&c, url, min_refresh)?),
    };

    Ok(Issuer {
        algorithms,
        hmac,
        jwks,
        policy: ClaimPolicy {
            issuer: c.issuer,
            audiences: c.audiences,
            leeway_secs: c.leeway_secs,
            max_lifetime_secs: c.max_token_lifetime_secs,
            tenant,
            principal,
            roles,
        },
    })
}

fn url_jwks(c: &JwtIssuerConfig, url: &str, min_refresh: Duration) -> Result<Jwks, JwtConfigError> {
    let invalid = |key: &'static str, reason: String| JwtConfigError::Invalid {
        issuer: c.issuer.clone(),
        key,
        reason,
    };
    let uri: http::Uri = url
        .parse()
        .map_err(|_| invalid("jwks_url", "not a valid URL".into()))?;
    let tls = match uri.scheme_str() {
        Some("https") => {
            let ca = match &c.jwks_ca_cert_path {
                Some(p) => p.clone(),
                None if Path::new(SYSTEM_CA_BUNDLE).exists() => PathBuf::from(SYSTEM_CA_BUNDLE),
                None => {
                    return Err(invalid(
                        "jwks_ca_cert_path",
                        format!("not set, and the system bundle {SYSTEM_CA_BUNDLE} does not exist"),
                    ))
                }
            };
            let config = client_tls_config(&ca)
                .map_err(|e| invalid("jwks_ca_cert_path", format!("{}: {e}", ca.display())))?;
            Some(config)
        }
        Some("http") if c.dangerous_allow_http_jwks => {
            warn!(
                issuer = %c.issuer,
                "fetching the JWKS over plain http: anyone on the path can substitute signing keys"
            );
            None
        }
        Some("http") => {
            return Err(invalid(
                "jwks_url",
                "http is refused; use https (or set `dangerous_allow_http_jwks`)".into(),
            ))
        }
        _ => return Err(invalid("jwks_url", "must be an https:// URL".into())),
    };
    let fetcher = HttpsFetcher::new(uri, tls).map_err(|e| invalid("jwks_url", e.into()))?;
    Ok(Jwks::from_url(&c.issuer, fetcher, min_refresh))
}

/// Reads the shared HMAC secret; it must be long enough for the strongest
/// HS algorithm allowed (RFC 7518 §3.2: at least the hash size).
fn load_hmac_secret(path: &Path, algorithms: &[Algorithm]) -> Result<DecodingKey, String> {
    let mut bytes =
        Secret::new(std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?);
    let buf = bytes.expose_mut();
    if buf.ends_with(b"\r\n") {
        buf.truncate(buf.len() - 2);
    } else if buf.ends_with(b"\n") {
        buf.truncate(buf.len() - 1);
    }
    let needed = algorithms
        .iter()
        .map(|a| match a {
            Algorithm::HS512 => 64,
            Algorithm::HS384 => 48,
            _ => 32,
        })
        .max()
        .unwrap_or(32);
    if bytes.expose().len() < needed {
        return Err(format!(
            "{}: secret is shorter than {needed} bytes",
            path.display()
        ));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                warn!(path = %path.display(), "HMAC secret file is readable by group or others");
            }
        }
    }
    Ok(DecodingKey::from_secret(bytes.expose()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn policy() -> ClaimPolicy {
        ClaimPolicy {
            issuer: "https://idp.example".into(),
            audiences: vec!["rampart".into(), "rampart-alt".into()],
            leeway_secs: 30,
            max_lifetime_secs: None,
            tenant: TenantRule::Claim(ClaimPath::Name("tenant".into())),
            principal: ClaimPath::Name("sub".into()),
            roles: ClaimPath::Name("roles".into()),
        }
    }

    fn claims() -> Value {
        json!({
            "iss": "https://idp.example",
            "aud": "rampart",
            "sub": "alice",
            "tenant": "acme",
            "roles": ["publisher", "reader"],
            "iat": NOW - 10,
            "exp": NOW + 600,
        })
    }

    fn with(mut c: Value, key: &str, v: Value) -> Value {
        c[key] = v;
        c
    }

    fn without(mut c: Value, key: &str) -> Value {
        c.as_object_mut().unwrap().remove(key);
        c
    }

    fn reason(r: Result<JwtIdentity, JwtError>) -> &'static str {
        r.unwrap_err().reason()
    }

    #[test]
    fn good_claims_map_to_an_identity() {
        let id = check_claims(&policy(), &claims(), NOW).unwrap();
        assert_eq!(id.tenant.as_str(), "acme");
        assert_eq!(id.principal, "alice");
        assert_eq!(id.roles, ["publisher", "reader"]);
        assert_eq!(id.expires_at_ms, (NOW + 600) * 1000);
        assert_eq!(id.issuer, "https://idp.example");
    }

    #[test]
    fn issuer_and_audience_must_match() {
        let p = policy();
        let c = with(claims(), "iss", json!("https://evil.example"));
        assert_eq!(reason(check_claims(&p, &c, NOW)), "wrong_issuer");
        let c = with(claims(), "aud", json!("other"));
        assert_eq!(reason(check_claims(&p, &c, NOW)), "wrong_audience");
        let c = with(claims(), "aud", json!(["other", "rampart-alt"]));
        assert!(check_claims(&p, &c, NOW).is_ok());
        let c = with(claims(), "aud", json!(["other", 7]));
        assert_eq!(reason(check_claims(&p, &c, NOW)), "wrong_audience");
        let c = with(claims(), "aud", json!(7));
        assert_eq!(reason(check_claims(&p, &c, NOW)), "invalid_claim");
        let c = without(claims(), "aud");
        assert_eq!(reason(check_claims(&p, &c, NOW)), "missing_claim");
    }

    #[test]
    fn time_claims_apply_the_leeway() {
        let p = policy();
        let exp = NOW + 600;
        assert!(check_claims(&p, &claims(), exp + 29).is_ok());
        assert_eq!(reason(check_claims(&p, &claims(), exp + 30)), "expired");
        let c = without(claims(), "exp");
        assert_eq!(reason(check_claims(&p, &c, NOW)), "missing_claim");
        let c = with(claims(), "exp", json!("tomorrow"));
        assert_eq!(reason(check_claims(&p, &c, NOW)), "invalid_claim");
        let c = with(claims(), "exp", json!((NOW + 600) as f64 + 0.5));
        assert!(check_claims(&p, &c, NOW).is_ok());

        let c = with(claims(), "nbf", json!(NOW + 30));
        assert!(check_claims(&p, &c, NOW).is_ok());
        let c = with(claims(), "nbf", json!(NOW + 31));
        assert_eq!(reason(check_claims(&p, &c, NOW)), "not_yet_valid");
        let c = with(claims(), "iat", json!(NOW + 120));
        assert_eq!(reason(check_claims(&p, &c, NOW)), "not_yet_valid");
    }

    #[test]
    fn lifetime_is_capped_when_configured() {
        let mut p = policy();
        p.max_lifetime_secs = Some(610);
        assert!(check_claims(&p, &claims(), NOW).is_ok());
        p.max_lifetime_secs = Some(609);
        assert_eq!(
            reason(check_claims(&p, &claims(), NOW)),
            "lifetime_too_long"
        );
        let c = without(claims(), "iat");
        assert_eq!(reason(check_claims(&p, &c, NOW)), "missing_claim");
    }

    #[test]
    fn tenant_comes_from_the_mapping() {
        let mut p = policy();
        let c = without(claims(), "tenant");
        assert_eq!(
            check_claims(&p, &c, NOW).unwrap_err(),
            JwtError::MissingClaim {
                claim: "tenant".into()
            }
        );
        let c = with(claims(), "tenant", json!("Not A Tenant"));
        assert_eq!(reason(check_claims(&p, &c, NOW)), "bad_tenant");
        let c = with(claims(), "tenant", json!(42));
        assert_eq!(reason(check_claims(&p, &c, NOW)), "bad_tenant");

        p.tenant = TenantRule::Fixed(TenantId::parse("fixed").unwrap());
        let c = with(claims(), "tenant", json!("ignored"));
        assert_eq!(check_claims(&p, &c, NOW).unwrap().tenant.as_str(), "fixed");

        p.tenant = TenantRule::Claim(ClaimPath::parse("/kubernetes.io/namespace").unwrap());
        let c = with(claims(), "kubernetes.io", json!({"namespace": "payments"}));
        assert_eq!(
            check_claims(&p, &c, NOW).unwrap().tenant.as_str(),
            "payments"
        );
        // The pointer is not a dotted name: a top-level claim called
        // `kubernetes.io/namespace` does not count.
        let c = with(claims(), "kubernetes.io/namespace", json!("payments"));
        assert_eq!(reason(check_claims(&p, &c, NOW)), "missing_claim");
    }

    #[test]
    fn principal_and_roles_must_be_printable_strings() {
        let p = policy();
        for bad in [json!(""), json!(17), json!("a\nb"), json!("x".repeat(257))] {
            let c = with(claims(), "sub", bad);
            assert_eq!(reason(check_claims(&p, &c, NOW)), "invalid_claim");
        }
        let c = without(claims(), "sub");
        assert_eq!(reason(check_claims(&p, &c, NOW)), "missing_claim");

        let c = without(claims(), "roles");
        assert!(check_claims(&p, &c, NOW).unwrap().roles.is_empty());
        let c = with(claims(), "roles", json!("read  write"));
        assert_eq!(check_claims(&p, &c, NOW).unwrap().roles, ["read", "write"]);
        for bad in [json!(["ok", 1]), json!({"a": 1}), json!(["a\u{7}"])] {
            let c = with(claims(), "roles", bad);
            assert_eq!(reason(check_claims(&p, &c, NOW)), "invalid_claim");
        }
        let many: Vec<String> = (0..65).map(|i| format!("r{i}")).collect();
        let c = with(claims(), "roles", json!(many));
        assert_eq!(reason(check_claims(&p, &c, NOW)), "invalid_claim");
    }

    #[test]
    fn compact_parsing_refuses_none_and_junk() {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let payload = b64(r#"{"iss":"x"}"#);
        for alg in ["none", "None", "NONE"] {
            let t = format!("{}.{payload}.", b64(&format!(r#"{{"alg":"{alg}"}}"#)));
            assert_eq!(Compact::parse(&t).unwrap_err(), JwtError::AlgNone);
        }
        let t = format!("{}.{payload}.c2ln", b64(r#"{"alg":"XS999"}"#));
        assert_eq!(Compact::parse(&t).unwrap_err(), JwtError::AlgNotAllowed);
        let t = format!(
            "{}.{payload}.c2ln",
            b64(r#"{"alg":"ES256","crit":["exp"]}"#)
        );
        assert_eq!(Compact::parse(&t).unwrap_err(), JwtError::Malformed);
        let t = format!("{}.{}.c2ln", b64(r#"{"alg":"ES256"}"#), b64("[1]"));
        assert_eq!(Compact::parse(&t).unwrap_err(), JwtError::Malformed);
        let head = b64(r#"{"alg":"ES256"}"#);
        for t in [
            String::new(),
            "a.b".into(),
            format!("{head}.{payload}.s.extra"),
            format!("{head}.!!!.sig"),
            format!("{}.{payload}.sig", b64(r#"{"alg":"ES256","alg":"EdDSA"}"#)),
            format!("{head}.{}.sig", "A".repeat(MAX_TOKEN_BYTES)),
        ] {
            assert_eq!(
                Compact::parse(&t).unwrap_err(),
                JwtError::Malformed,
                "{t:.40}"
            );
        }
        let t = format!("{head}.{payload}.sig");
        let c = Compact::parse(&t).unwrap();
        assert_eq!(c.signing_input, format!("{head}.{payload}"));
        assert_eq!(c.signature, "sig");
    }

    #[test]
    fn errors_never_print_token_content() {
        let marker = "SECRET-MARKER-0123";
        let errors = [
            JwtError::Malformed,
            JwtError::AlgNone,
            JwtError::AlgNotAllowed,
            JwtError::KeyMismatch,
            JwtError::UnknownKid,
            JwtError::JwksUnavailable,
            JwtError::BadSignature,
            JwtError::WrongIssuer,
            JwtError::WrongAudience,
            JwtError::Expired,
            JwtError::NotYetValid,
            JwtError::LifetimeTooLong,
            JwtError::missing("tenant"),
            JwtError::invalid("roles"),
            JwtError::BadTenant,
        ];
        let mut reasons = std::collections::HashSet::new();
        for e in &errors {
            assert!(!format!("{e} {e:?}").contains(marker));
            assert!(
                reasons.insert(e.reason()),
                "duplicate reason {}",
                e.reason()
            );
        }
        // Claim values never reach an error: only configured claim names.
        let c = with(claims(), "tenant", json!(marker));
        let e = check_claims(&policy(), &c, NOW).unwrap_err();
        assert!(!format!("{e} {e:?}").contains(marker));
    }

    fn jwks_file(dir: &Path) -> PathBuf {
        let path = dir.join("jwks.json");
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([1u8; 32]);
        let set = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k", "x": x}]});
        std::fs::write(&path, set.to_string()).unwrap();
        path
    }

    fn invalid_key(c: JwtIssuerConfig) -> &'static str {
        match JwtVerifier::new(vec![c]) {
            Err(JwtConfigError::Invalid { key, .. }) => key,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn config_mistakes_are_start_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = JwksLocation::File(jwks_file(dir.path()));
        let base = || JwtIssuerConfig::new("https://idp.example", ["rampart"], file.clone());
        assert!(JwtVerifier::new(vec![base()]).is_ok());
        assert!(matches!(
            JwtVerifier::new(vec![]),
            Err(JwtConfigError::NoIssuers)
        ));
        assert!(matches!(
            JwtVerifier::new(vec![base(), base()]),
            Err(JwtConfigError::DuplicateIssuer { .. })
        ));

        let mut c = base();
        c.audiences.clear();
        assert_eq!(invalid_key(c), "audiences");
        for algs in [
            vec!["none"],
            vec!["ES256", "NoNe"],
            vec!["XS1"],
            vec![],
            vec!["HS256"],
        ] {
            let mut c = base();
            c.algorithms = algs.into_iter().map(String::from).collect();
            assert_eq!(invalid_key(c), "algorithms");
        }
        let mut c = base();
        c.leeway_secs = 301;
        assert_eq!(invalid_key(c), "leeway_secs");
        let mut c = base();
        c.tenant = Some("acme".into());
        c.tenant_claim = Some("org".into());
        assert_eq!(invalid_key(c), "tenant");
        let mut c = base();
        c.tenant = Some("Bad Tenant".into());
        assert_eq!(invalid_key(c), "tenant");
        let mut c = base();
        c.roles_claim = "/".into();
        assert_eq!(invalid_key(c), "roles_claim");
        let mut c = base();
        c.jwks_min_refresh_secs = 0;
        assert_eq!(invalid_key(c), "jwks_min_refresh_secs");
        let mut c = base();
        c.jwks_url = Some("https://idp.example/jwks".into());
        assert_eq!(invalid_key(c), "jwks_url");
        let mut c = base();
        c.jwks_path = None;
        assert_eq!(invalid_key(c), "jwks_path");

        let url = |u: &str| JwtIssuerConfig::new("i", ["a"], JwksLocation::Url(u.into()));
        assert_eq!(invalid_key(url("http://idp.example/jwks")), "jwks_url");
        assert_eq!(invalid_key(url("ftp://idp.example/jwks")), "jwks_url");
        assert_eq!(invalid_key(url("/jwks")), "jwks_url");
        let mut c = url("http://idp.example/jwks");
        c.dangerous_allow_http_jwks = true;
        assert!(JwtVerifier::new(vec![c]).is_ok());
        let mut c = url("https://idp.example/jwks");
        c.jwks_ca_cert_path = Some(dir.path().join("missing.pem"));
        assert_eq!(invalid_key(c), "jwks_ca_cert_path");

        let missing = JwtIssuerConfig::new(
            "i",
            ["a"],
            JwksLocation::File(dir.path().join("absent.json")),
        );
        assert!(matches!(
            JwtVerifier::new(vec![missing]),
            Err(JwtConfigError::Jwks { .. })
        ));
    }

    #[test]
    fn hmac_needs_a_long_enough_secret_file() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("hmac");
        let hmac_only = |algs: &[&str]| {
            let mut c = JwtIssuerConfig::new("i", ["a"], JwksLocation::File(PathBuf::new()));
            c.jwks_path = None;
            c.algorithms = algs.iter().map(|s| s.to_string()).collect();
            c.dangerous_allow_hmac_secret_path = Some(secret.clone());
            c
        };
        assert_eq!(
            invalid_key(hmac_only(&["HS256"])),
            "dangerous_allow_hmac_secret_path"
        );
        std::fs::write(&secret, [b'k'; 48]).unwrap();
        assert!(JwtVerifier::new(vec![hmac_only(&["HS256", "HS384"])]).is_ok());
        assert_eq!(
            invalid_key(hmac_only(&["HS512"])),
            "dangerous_allow_hmac_secret_path"
        );
        let mut c = hmac_only(&["HS256"]);
        c.algorithms = vec!["ES256".into()];
        c.jwks_path = Some(jwks_file(dir.path()));
        assert_eq!(invalid_key(c), "dangerous_allow_hmac_secret_path");
        // The secret never shows up in Debug output.
        let v = JwtVerifier::new(vec![hmac_only(&["HS256"])]).unwrap();
        assert!(!format!("{v:?}").contains("kkkk"));
    }

    #[test]
    fn config_deserializes_with_defaults_and_refuses_unknown_keys() {
        let c: JwtIssuerConfig = serde_json::from_value(json!({
            "issuer": "https://idp.example",
            "audiences": ["rampart"],
            "jwks_url": "https://idp.example/jwks",
        }))
        .unwrap();
        assert_eq!(c.algorithms, ["RS256", "ES256", "EdDSA"]);
        assert_eq!((c.leeway_secs, c.jwks_min_refresh_secs), (30, 60));
        assert_eq!(
            (c.principal_claim.as_str(), c.roles_claim.as_str()),
            ("sub", "roles")
        );
        assert!(c.tenant_claim.is_none() && c.tenant.is_none());
        let typo = serde_json::from_value::<JwtIssuerConfig>(json!({
            "issuer": "i", "audiences": ["a"], "jwks_url": "https://x/", "audience": "a",
        }));
        assert!(typo.is_err());
    }

    #[test]
    fn kubernetes_preset_reads_the_namespace() {
        let c = JwtIssuerConfig::kubernetes(["rampart"], JwksLocation::Url("https://x/".into()));
        assert_eq!(c.issuer, KUBERNETES_ISSUER);
        assert_eq!(c.tenant_claim.as_deref(), Some("/kubernetes.io/namespace"));
        assert_eq!(c.principal_claim, "sub");
        assert_eq!(c.algorithms, ["RS256", "ES256"]);
    }
}
