//! Client settings.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rampart_identity::Secret;
use rampart_proto::AuthMethod;

use crate::ClientError;

/// A credential to present in AUTH.
#[derive(Debug, Clone)]
pub struct Credential {
    pub method: AuthMethod,
    pub secret: Secret<String>,
}

impl Credential {
    pub fn api_key(k: impl Into<String>) -> Self {
        Self {
            method: AuthMethod::ApiKey,
            secret: Secret::new(k.into()),
        }
    }

    pub fn token(t: impl Into<String>) -> Self {
        Self {
            method: AuthMethod::Token,
            secret: Secret::new(t.into()),
        }
    }

    pub fn jwt(t: impl Into<String>) -> Self {
        Self {
            method: AuthMethod::Jwt,
            secret: Secret::new(t.into()),
        }
    }
}

/// The future a [`CredentialProvider`] returns.
pub type CredentialFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Credential, ClientError>> + Send + 'a>>;

/// Supplies fresh credentials: at connect, and whenever the server says the
/// current one expires (the client then re-authenticates in band, without
/// reconnecting or losing subscriptions).
pub trait CredentialProvider: Send + Sync {
    fn credential(&self) -> CredentialFuture<'_>;
}

/// A shared [`CredentialProvider`] (printed as `[provider]`).
#[derive(Clone)]
pub struct Provider(pub Arc<dyn CredentialProvider>);

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[provider]")
    }
}

/// Which transport to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// QUIC with ALPN `rampart/1` (URL scheme `quic://`).
    Quic,
    /// TLS 1.3 over TCP (URL scheme `tls://`).
    Tcp,
}

/// How a client connects and proves its identity.
///
/// Certificate verification is on unless `dangerous_skip_verify` is set,
/// which logs a warning on every connect and should never reach production.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// PEM file with the CA certificates that may sign the server's
    /// certificate.
    pub tls_ca_cert_path: Option<PathBuf>,
    /// PEM client certificate chain, for servers that ask for one
    /// (`tls_client_auth = "request" | "require"`).
    pub tls_client_cert_path: Option<PathBuf>,
    /// PEM private key of the client certificate.
    pub tls_client_key_path: Option<PathBuf>,
    /// API key, held zeroized and never printed.
    pub api_key: Option<Secret<String>>,
    /// A Rampart token (`rt1.`...), used when no API key is set.
    pub token: Option<Secret<String>>,
    /// A JWT from an issuer the server trusts, used when neither is set.
    pub jwt: Option<Secret<String>>,
    /// Where fresh credentials come from; takes precedence over the fields
    /// above. Without one, the client re-sends its fixed credential when
    /// asked to re-authenticate.
    pub credential_provider: Option<Provider>,
    /// Overrides the transport named by the URL scheme.
    pub transport: Option<Transport>,
    /// Name to verify in the server certificate; default: the URL host.
    pub server_name: Option<String>,
    /// Accept any server certificate. Dangerous: anyone on the path can
    /// impersonate the server.
    pub dangerous_skip_verify: bool,
    /// Bound on TCP/QUIC connect, TLS handshake and authentication.
    pub connect_timeout: Duration,
    /// Bound on waiting for a reply to a request (each attempt, when a
    /// rate-limited request is sent again), counted from when the request
    /// is queued for sending. Each connection looks for overdue requests
    /// every eighth of this (at least every 1 ms, at most every 1 s), so a
    /// request fails with [`ClientError::Timeout`](crate::ClientError) up to
    /// that much later than the bound itself.
    pub request_timeout: Duration,
    /// Bound on the total time one request spends waiting out rate limits.
    /// A request refused with NACK 429 and a retry-after (or HTTP 429 with
    /// `Retry-After`) is sent again after that wait plus up to 10% jitter,
    /// as long as its waits add up to no more than this; then the 429 is
    /// returned. [`Duration::ZERO`] turns retrying off.
    pub rate_limit_max_wait: Duration,
    /// How often an open connection sends PING, so the server's idle
    /// timeout (for connections without subscriptions) never closes it.
    /// [`Duration::ZERO`] turns it off.
    pub keepalive: Duration,
    /// Name sent in HELLO.
    pub agent: String,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            tls_ca_cert_path: None,
            tls_client_cert_path: None,
            tls_client_key_path: None,
            api_key: None,
            token: None,
            jwt: None,
            credential_provider: None,
            transport: None,
            server_name: None,
            dangerous_skip_verify: false,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            rate_limit_max_wait: Duration::from_secs(30),
            keepalive: Duration::from_secs(60),
            agent: concat!("rampart-client/", env!("CARGO_PKG_VERSION")).into(),
        }
    }
}

impl ClientConfig {
    /// Reads `RAMPART_CA_CERT`, and `RAMPART_API_KEY` or the file named by
    /// `RAMPART_API_KEY_FILE`, from `env`.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ClientError> {
        let mut c = Self {
            tls_ca_cert_path: env("RAMPART_CA_CERT").map(PathBuf::from),
            ..Self::default()
        };
        if let Some(k) = env("RAMPART_API_KEY") {
            c.api_key = Some(Secret::new(k));
        } else if let Some(path) = env("RAMPART_API_KEY_FILE") {
            c.api_key = Some(read_key_file(&PathBuf::from(path))?);
        } else if let Some(t) = env("RAMPART_TOKEN") {
            c.token = Some(Secret::new(t));
        }
        Ok(c)
    }

    pub fn with_ca(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls_ca_cert_path = Some(path.into());
        self
    }

    /// Presents this certificate and key to servers that ask for one.
    pub fn with_client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls_client_cert_path = Some(cert.into());
        self.tls_client_key_path = Some(key.into());
        self
    }

    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(Secret::new(key.into()));
        self
    }

    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(Secret::new(token.into()));
        self
    }

    pub fn with_provider(mut self, p: Arc<dyn CredentialProvider>) -> Self {
        self.credential_provider = Some(Provider(p));
        self
    }

    /// The fixed credential of this config, if any.
    pub(crate) fn fixed_credential(&self) -> Option<Credential> {
        if let Some(k) = &self.api_key {
            return Some(Credential {
                method: AuthMethod::ApiKey,
                secret: k.clone(),
            });
        }
        if let Some(t) = &self.token {
            return Some(Credential {
                method: AuthMethod::Token,
                secret: t.clone(),
            });
        }
        if let Some(j) = &self.jwt {
            return Some(Credential {
                method: AuthMethod::Jwt,
                secret: j.clone(),
            });
        }
        if self.tls_client_cert_path.is_some() {
            return Some(Credential {
                method: AuthMethod::ClientCert,
                secret: Secret::new(String::new()),
            });
        }
        None
    }

    pub fn with_transport(mut self, t: Transport) -> Self {
        self.transport = Some(t);
        self
    }

    /// Sets [`ClientConfig::keepalive`] (zero: no PINGs).
    pub fn with_keepalive(mut self, every: Duration) -> Self {
        self.keepalive = every;
        self
    }

    /// Sets [`ClientConfig::rate_limit_max_wait`] (zero: never retry).
    pub fn with_rate_limit_max_wait(mut self, max: Duration) -> Self {
        self.rate_limit_max_wait = max;
        self
    }
}

/// Reads an API key from a file (first line, trimmed).
pub fn read_key_file(path: &std::path::Path) -> Result<Secret<String>, ClientError> {
    let text = Secret::new(std::fs::read_to_string(path).map_err(|e| {
        ClientError::Config(format!("cannot read API key file {}: {e}", path.display()))
    })?);
    let key = text
        .expose()
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    if key.is_empty() {
        return Err(ClientError::Config(format!(
            "API key file {} is empty",
            path.display()
        )));
    }
    Ok(Secret::new(key))
}
