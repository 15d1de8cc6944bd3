//! A master key provider backed by a Vault or OpenBao transit engine: the
//! master key lives in the transit server and never enters Rampart; tenant
//! KEKs are sent to it to be wrapped and unwrapped.
//!
//! The transit key **must be created with `"derived": true`** (type
//! `aes256-gcm96`): only then does the server bind the `context` (our
//! associated data) into the encryption. A key without derivation silently
//! ignores the context, so this provider checks the key before its first
//! use and refuses one that is not derived. It never lets the server create
//! a key implicitly either (transit would, on the first encrypt):
//! [`VaultTransit::ensure_key`] creates it explicitly, for development and
//! tests.
//!
//! Endpoints used (under `/v1/<mount>/`): `encrypt/<key>`,
//! `decrypt/<key>`, `rewrap/<key>`, `keys/<key>` (read and create) and
//! `keys/<key>/rotate`. The token needs `update` on the first three and on
//! `keys/<key>/rotate`, and `read` on `keys/<key>`.
//!
//! A wrapped value is the server's ciphertext text, `vault:v<N>:<base64>`,
//! whose `N` is the master version.

use std::borrow::Cow;
use std::fmt;
use std::path::PathBuf;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::{HeaderName, HeaderValue, Method};
use serde::Deserialize;
use tokio::sync::OnceCell;
use tracing::{info, warn};

use rampart_identity::https::{self, HttpsClient, HttpsError, Response, SecretBody};
use rampart_identity::{Secret, SYSTEM_CA_BUNDLE};

use crate::error::KeyError;
use crate::provider::{BoxFuture, MasterKeyProvider};

/// Where the transit engine is and how to reach it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TransitConfig {
    /// `https://host:port` of the server (no path).
    pub address: String,
    /// A token allowed to use the key (see the module docs for the
    /// policy). Never logged.
    pub token: Secret<String>,
    /// The transit key's name.
    pub key: String,
    /// Where the transit engine is mounted. Default `transit`.
    pub mount: String,
    /// PEM file of the CA certificates to trust. Default: the system bundle.
    pub ca_file: Option<PathBuf>,
    /// Vault Enterprise / OpenBao namespace, sent as `X-Vault-Namespace`.
    pub namespace: Option<String>,
    /// Allows a plain `http://` address, which exposes the token and every
    /// key in transit. For local experiments only.
    pub dangerous_allow_http: bool,
}

impl TransitConfig {
    pub fn new(address: impl Into<String>, token: Secret<String>, key: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            token,
            key: key.into(),
            mount: "transit".into(),
            ca_file: None,
            namespace: None,
            dangerous_allow_http: false,
        }
    }
}

/// The transit-engine master key provider. See the module documentation
/// for how the key must be set up.
pub struct VaultTransit {
    client: HttpsClient,
    address: String,
    mount: String,
    key: String,
    /// `X-Vault-Token`, marked sensitive.
    token: HeaderValue,
    namespace: Option<HeaderValue>,
    /// Set once the key was found fit (exists, derived).
    checked: OnceCell<()>,
}

impl fmt::Debug for VaultTransit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultTransit")
            .field("address", &self.address)
            .field("mount", &self.mount)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

fn config_err(msg: impl Into<String>) -> KeyError {
    KeyError::Config(msg.into())
}

/// The one place client errors become key errors. No message carries a
/// body or the token: the client's errors never do.
fn https_error(e: HttpsError) -> KeyError {
    match e {
        HttpsError::Address(why) => config_err(format!("transit address: {why}")),
        HttpsError::ServerName(reason) => config_err(format!("transit host name: {reason}")),
        HttpsError::Timeout(limit) => KeyError::Timeout(limit),
        other => KeyError::Transit(other.to_string()),
    }
}

/// A path segment: `[A-Za-z0-9_.-]+`, not `.` or `..`.
fn check_segment(what: &str, s: &str) -> Result<(), KeyError> {
    let ok = !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(config_err(format!(
            "{what} must be made of [A-Za-z0-9_.-] segments"
        )))
    }
}

fn check_path(what: &str, s: &str) -> Result<String, KeyError> {
    let trimmed = s.trim_matches('/');
    for seg in trimmed.split('/') {
        check_segment(what, seg)?;
    }
    Ok(trimmed.to_owned())
}

// === request and response bodies ===

/// A JSON value written into a request body.
enum Field<'a> {
    /// Bytes, sent as standard base64.
    Bytes(&'a [u8]),
    /// Text already known to need no escaping.
    Plain(&'a str),
    /// A JSON literal (`true`, a number), written as is.
    Literal(&'a str),
}

/// `{"name": "value", ...}` in an exactly sized, zeroizing buffer.
fn json_body(fields: &[(&str, Field<'_>)]) -> Secret<Vec<u8>> {
    // Braces, less the comma the first field does not have.
    let len = 1 + fields
        .iter()
        .map(|(name, v)| {
            // "name": plus a comma, then the value with its quotes.
            name.len()
                + 4
                + match v {
                    Field::Bytes(b) => base64::encoded_len(b.len(), true).unwrap_or(0) + 2,
                    Field::Plain(s) => s.len() + 2,
                    Field::Literal(s) => s.len(),
                }
        })
        .sum::<usize>();
    let mut out = Secret::new(Vec::with_capacity(len));
    let buf = out.expose_mut();
    buf.push(b'{');
    for (i, (name, value)) in fields.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        buf.push(b'"');
        buf.extend_from_slice(name.as_bytes());
        buf.extend_from_slice(b"\":");
        match value {
            Field::Bytes(b) => {
                buf.push(b'"');
                let start = buf.len();
                buf.resize(start + base64::encoded_len(b.len(), true).unwrap_or(0), 0);
                let n = STANDARD.encode_slice(b, &mut buf[start..]).unwrap_or(0);
                buf.truncate(start + n);
                buf.push(b'"');
            }
            Field::Plain(s) => {
                buf.push(b'"');
                buf.extend_from_slice(s.as_bytes());
                buf.push(b'"');
            }
            Field::Literal(s) => buf.extend_from_slice(s.as_bytes()),
        }
    }
    buf.push(b'}');
    out
}

#[derive(Deserialize)]
struct Envelope<T> {
    data: T,
}

#[derive(Deserialize)]
struct Ciphertext {
    ciphertext: String,
}

#[derive(Deserialize)]
struct Plaintext<'a> {
    #[serde(borrow)]
    plaintext: Cow<'a, str>,
}

#[derive(Debug, Deserialize)]
struct KeyInfo {
    #[serde(default)]
    derived: bool,
    latest_version: u32,
    #[serde(default)]
    supports_encryption: bool,
    #[serde(default)]
    supports_decryption: bool,
}

#[derive(Deserialize)]
struct Errors {
    #[serde(default)]
    errors: Vec<String>,
}

fn parse_json<'a, T: Deserialize<'a>>(op: &'static str, body: &'a [u8]) -> Result<T, KeyError> {
    serde_json::from_slice(body)
        .map_err(|e| KeyError::Transit(format!("{op}: unexpected answer: {e}")))
}

/// The server's error messages, shortened and stripped of control
/// characters (they name the problem, never our data).
fn server_message(body: &[u8]) -> String {
    let text = serde_json::from_slice::<Errors>(body)
        .map(|e| e.errors.join("; "))
        .unwrap_or_default();
    text.chars().filter(|c| !c.is_control()).take(200).collect()
}

fn status_error(op: &'static str, r: &Response) -> KeyError {
    KeyError::TransitStatus {
        op,
        status: r.status,
        message: server_message(r.body.expose()),
    }
}

/// Decodes base64 into a zeroizing buffer sized up front.
fn decode_secret(s: &str) -> Result<Secret<Vec<u8>>, KeyError> {
    let mut out = Secret::new(vec![0u8; base64::decoded_len_estimate(s.len())]);
    let n = STANDARD
        .decode_slice(s.as_bytes(), out.expose_mut())
        .map_err(|_| KeyError::Transit("decrypt: plaintext is not base64".into()))?;
    out.expose_mut().truncate(n);
    Ok(out)
}

/// The version of a `vault:v<N>:<base64>` ciphertext, and its text.
fn parse_ciphertext(wrapped: &[u8]) -> Result<(u32, &str), KeyError> {
    let text = std::str::from_utf8(wrapped).map_err(|_| KeyError::Tampered)?;
    let rest = text.strip_prefix("vault:v").ok_or(KeyError::Tampered)?;
    let (version, body) = rest.split_once(':').ok_or(KeyError::Tampered)?;
    let version = version.parse::<u32>().map_err(|_| KeyError::Tampered)?;
    let clean = !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
    if !clean {
        return Err(KeyError::Tampered);
    }
    Ok((version, text))
}

// === impl VaultTransit ===

impl VaultTransit {
    /// Checks the configuration and reads the CA file; makes no request.
    pub fn new(config: TransitConfig) -> Result<Self, KeyError> {
        let uri: http::Uri = config
            .address
            .parse()
            .map_err(|_| config_err("transit address is not a URL"))?;
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(config_err("transit address must not have a path or query"));
        }
        let tls = match uri.scheme_str() {
            Some("https") => {
                let ca = config
                    .ca_file
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(SYSTEM_CA_BUNDLE));
                Some(
                    https::tls_config(&ca)
                        .map_err(|e| config_err(format!("CA file {}: {e}", ca.display())))?,
                )
            }
            Some("http") if config.dangerous_allow_http => {
                warn!(address = %config.address, "transit over plain HTTP: the token and keys cross the network in clear");
                None
            }
            Some("http") => {
                return Err(config_err(
                    "transit address must be https:// (http needs dangerous_allow_http)",
                ))
            }
            _ => return Err(config_err("transit address must be https://")),
        };
        let client = HttpsClient::new(&uri, tls, "rampart-keys/1").map_err(https_error)?;
        check_segment("transit key name", &config.key)?;
        let mount = check_path("transit mount", &config.mount)?;
        let namespace = match &config.namespace {
            None => None,
            Some(ns) => {
                let ns = check_path("namespace", ns)?;
                Some(HeaderValue::from_str(&ns).map_err(|_| config_err("namespace"))?)
            }
        };
        if config.token.expose().is_empty() {
            return Err(config_err("transit token is empty"));
        }
        let mut token = HeaderValue::from_str(config.token.expose())
            .map_err(|_| config_err("transit token has characters not allowed in a header"))?;
        token.set_sensitive(true);
        Ok(Self {
            client,
            address: format!(
                "{}://{}",
                uri.scheme_str().unwrap_or("https"),
                uri.authority().map_or("", |a| a.as_str())
            ),
            mount,
            key: config.key,
            token,
            namespace,
            checked: OnceCell::new(),
        })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: SecretBody,
    ) -> Result<Response, KeyError> {
        let mut headers = vec![
            (
                http::header::ACCEPT,
                HeaderValue::from_static("application/json"),
            ),
            (HeaderName::from_static("x-vault-token"), self.token.clone()),
            (
                HeaderName::from_static("x-vault-request"),
                HeaderValue::from_static("true"),
            ),
        ];
        if let Some(ns) = &self.namespace {
            headers.push((HeaderName::from_static("x-vault-namespace"), ns.clone()));
        }
        if !body.is_empty() {
            headers.push((
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ));
        }
        let path = format!("/v1/{}/{path}", self.mount);
        self.client
            .send(method, &path, headers, body)
            .await
            .map_err(https_error)
    }

    async fn key_info(&self) -> Result<Option<KeyInfo>, KeyError> {
        let r = self
            .call(
                Method::GET,
                &format!("keys/{}", self.key),
                SecretBody::empty(),
            )
            .await?;
        match r.status {
            200 => Ok(Some(
                parse_json::<Envelope<KeyInfo>>("read key", r.body.expose())?.data,
            )),
            404 => Ok(None),
            _ => Err(status_error("read key", &r)),
        }
    }

    fn fit(&self, info: &KeyInfo) -> Result<(), KeyError> {
        if !info.derived {
            return Err(config_err(format!(
                "transit key {} was created without \"derived\": true, so it would ignore the \
                 bound context; use a derived aes256-gcm96 key",
                self.key
            )));
        }
        if !(info.supports_encryption && info.supports_decryption) {
            return Err(config_err(format!(
                "transit key {} cannot both encrypt and decrypt",
                self.key
            )));
        }
        Ok(())
    }

    /// The key's newest version, after checking it is fit for use.
    async fn checked_info(&self) -> Result<KeyInfo, KeyError> {
        let info = self
            .key_info()
            .await?
            .ok_or_else(|| KeyError::TransitKeyNotFound {
                key: self.key.clone(),
            })?;
        self.fit(&info)?;
        Ok(info)
    }

    /// Checks the key once, before its first use.
    async fn ready(&self) -> Result<(), KeyError> {
        self.checked
            .get_or_try_init(|| async { self.checked_info().await.map(|_| ()) })
            .await
            .map(|_| ())
    }

    /// Creates the transit key (derived, aes256-gcm96) if it does not
    /// exist; checks it if it does. Returns whether it was created. For
    /// development and tests: in production the key is the transit
    /// administrator's to create, with a policy limited to what Rampart
    /// needs.
    pub async fn ensure_key(&self) -> Result<bool, KeyError> {
        if let Some(info) = self.key_info().await? {
            self.fit(&info)?;
            return Ok(false);
        }
        let body = json_body(&[
            ("type", Field::Plain("aes256-gcm96")),
            ("derived", Field::Literal("true")),
        ]);
        let r = self
            .call(
                Method::POST,
                &format!("keys/{}", self.key),
                SecretBody::new(body),
            )
            .await?;
        if !matches!(r.status, 200 | 204) {
            return Err(status_error("create key", &r));
        }
        self.checked_info().await?;
        info!(key = %self.key, "created transit key");
        Ok(true)
    }

    /// Maps a failed decrypt or rewrap: a 400 means the value does not
    /// decrypt under this key and context.
    fn decrypt_error(&self, op: &'static str, r: &Response, version: u32) -> KeyError {
        if r.status != 400 {
            return status_error(op, r);
        }
        let message = server_message(r.body.expose());
        if message.contains("version is too new") {
            KeyError::UnknownMasterVersion(version)
        } else if message.contains("key not found") {
            KeyError::TransitKeyNotFound {
                key: self.key.clone(),
            }
        } else {
            KeyError::Tampered
        }
    }

    async fn wrap_async(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.ready().await?;
        let body = json_body(&[
            ("plaintext", Field::Bytes(plaintext)),
            ("context", Field::Bytes(aad)),
        ]);
        let r = self
            .call(
                Method::POST,
                &format!("encrypt/{}", self.key),
                SecretBody::new(body),
            )
            .await?;
        if r.status != 200 {
            return Err(status_error("encrypt", &r));
        }
        let c = parse_json::<Envelope<Ciphertext>>("encrypt", r.body.expose())?.data;
        parse_ciphertext(c.ciphertext.as_bytes())
            .map_err(|_| KeyError::Transit("encrypt: answer is not a transit ciphertext".into()))?;
        Ok(c.ciphertext.into_bytes())
    }

    async fn unwrap_async(&self, wrapped: &[u8], aad: &[u8]) -> Result<Secret<Vec<u8>>, KeyError> {
        let (version, text) = parse_ciphertext(wrapped)?;
        self.ready().await?;
        let body = json_body(&[
            ("ciphertext", Field::Plain(text)),
            ("context", Field::Bytes(aad)),
        ]);
        let r = self
            .call(
                Method::POST,
                &format!("decrypt/{}", self.key),
                SecretBody::new(body),
            )
            .await?;
        if r.status != 200 {
            return Err(self.decrypt_error("decrypt", &r, version));
        }
        let p = parse_json::<Envelope<Plaintext<'_>>>("decrypt", r.body.expose())?.data;
        let out = decode_secret(&p.plaintext);
        if let Cow::Owned(s) = p.plaintext {
            drop(Secret::new(s));
        }
        out
    }

    async fn rewrap_async(&self, wrapped: &[u8], aad: &[u8]) -> Result<Vec<u8>, KeyError> {
        let (version, text) = parse_ciphertext(wrapped)?;
        self.ready().await?;
        let body = json_body(&[
            ("ciphertext", Field::Plain(text)),
            ("context", Field::Bytes(aad)),
        ]);
        let r = self
            .call(
                Method::POST,
                &format!("rewrap/{}", self.key),
                SecretBody::new(body),
            )
            .await?;
        if r.status != 200 {
            return Err(self.decrypt_error("rewrap", &r, version));
        }
        let c = parse_json::<Envelope<Ciphertext>>("rewrap", r.body.expose())?.data;
        parse_ciphertext(c.ciphertext.as_bytes())
            .map_err(|_| KeyError::Transit("rewrap: answer is not a transit ciphertext".into()))?;
        Ok(c.ciphertext.into_bytes())
    }

    async fn rotate_async(&self) -> Result<(), KeyError> {
        self.ready().await?;
        let r = self
            .call(
                Method::POST,
                &format!("keys/{}/rotate", self.key),
                SecretBody::new(Secret::new(b"{}".to_vec())),
            )
            .await?;
        if !matches!(r.status, 200 | 204) {
            return Err(status_error("rotate", &r));
        }
        info!(key = %self.key, "transit key rotated");
        Ok(())
    }
}

impl MasterKeyProvider for VaultTransit {
    fn describe(&self) -> String {
        format!(
            "vault-transit {} mount={} key={}",
            self.address, self.mount, self.key
        )
    }

    fn wrap<'a>(
        &'a self,
        plaintext: &'a [u8],
        aad: &'a [u8],
    ) -> BoxFuture<'a, Result<Vec<u8>, KeyError>> {
        Box::pin(self.wrap_async(plaintext, aad))
    }

    fn unwrap<'a>(
        &'a self,
        wrapped: &'a [u8],
        aad: &'a [u8],
    ) -> BoxFuture<'a, Result<Secret<Vec<u8>>, KeyError>> {
        Box::pin(self.unwrap_async(wrapped, aad))
    }

    fn rotate(&self) -> BoxFuture<'_, Result<(), KeyError>> {
        Box::pin(self.rotate_async())
    }

    fn rewrap<'a>(
        &'a self,
        wrapped: &'a [u8],
        aad: &'a [u8],
    ) -> BoxFuture<'a, Result<Vec<u8>, KeyError>> {
        Box::pin(self.rewrap_async(wrapped, aad))
    }

    fn current_version(&self) -> BoxFuture<'_, Result<u32, KeyError>> {
        Box::pin(async move { Ok(self.checked_info().await?.latest_version) })
    }

    fn version_of(&self, wrapped: &[u8]) -> Result<u32, KeyError> {
        parse_ciphertext(wrapped).map(|(v, _)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(address: &str) -> TransitConfig {
        TransitConfig::new(address, Secret::new("s.token".into()), "rampart")
    }

    #[test]
    fn bodies_are_exact_json() {
        let body = json_body(&[
            ("plaintext", Field::Bytes(b"hi")),
            ("context", Field::Plain("vault:v1:AA==")),
            ("derived", Field::Literal("true")),
        ]);
        assert_eq!(body.expose().capacity(), body.expose().len());
        let v: serde_json::Value = serde_json::from_slice(body.expose()).unwrap();
        assert_eq!(v["plaintext"], "aGk=");
        assert_eq!(v["context"], "vault:v1:AA==");
        assert_eq!(v["derived"], true);
    }

    #[test]
    fn ciphertexts_are_parsed_strictly() {
        assert_eq!(parse_ciphertext(b"vault:v12:abc+/=").unwrap().0, 12);
        for bad in [
            &b"vault:v1:"[..],
            b"vault:vx:AA",
            b"vault:v1:A\"A",
            b"rmk1....",
            b"\xff",
        ] {
            assert!(
                matches!(parse_ciphertext(bad), Err(KeyError::Tampered)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn configuration_is_checked_and_never_prints_the_token() {
        assert!(VaultTransit::new(config("http://127.0.0.1:8200")).is_err());
        let mut c = config("http://127.0.0.1:8200");
        c.dangerous_allow_http = true;
        let t = VaultTransit::new(c).unwrap();
        assert_eq!(
            t.describe(),
            "vault-transit http://127.0.0.1:8200 mount=transit key=rampart"
        );
        assert!(!format!("{t:?}").contains("s.token"));
        for (field, value) in [("key", "a/b"), ("key", ".."), ("mount", "a/../b")] {
            let mut c = config("http://127.0.0.1:8200");
            c.dangerous_allow_http = true;
            match field {
                "key" => c.key = value.into(),
                _ => c.mount = value.into(),
            }
            assert!(VaultTransit::new(c).is_err(), "{field}={value}");
        }
        assert!(VaultTransit::new(config("https://127.0.0.1:8200/v1/x")).is_err());
        assert!(VaultTransit::new(config("ftp://127.0.0.1")).is_err());
        let mut c = config("http://127.0.0.1:8200");
        c.dangerous_allow_http = true;
        c.token = Secret::new("bad\ntoken".into());
        let err = VaultTransit::new(c).unwrap_err().to_string();
        assert!(!err.contains("bad"), "{err}");
    }

    #[test]
    fn server_messages_are_short_and_clean() {
        let body =
            serde_json::to_vec(&serde_json::json!({"errors": ["a\nb", "x".repeat(500)]})).unwrap();
        let m = server_message(&body);
        assert!(m.starts_with("ab; x") && m.chars().count() == 200);
        assert_eq!(server_message(b"not json"), "");
    }
}
