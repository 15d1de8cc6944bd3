//! TLS settings shared by every listener: TLS 1.3 only, one crypto provider
//! (ring), certificates from PEM files, optional client certificates.
//!
//! The certificate and key are served through a [`CertStore`], which every
//! listener's config shares: replacing the files and calling
//! [`CertStore::reload_if_changed`] (the server does it on a timer) makes
//! new handshakes use the new pair, while connections already open keep
//! theirs.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::ClientAuth;

/// ALPN protocol id of wire protocol version 1.
pub const ALPN: &[u8] = b"rampart/1";

/// A TLS setup problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("reading {what} from {path}: {message}")]
    Pem {
        what: &'static str,
        path: String,
        message: String,
    },
    #[error("{path} holds no certificate")]
    NoCertificate { path: String },
    #[error("TLS configuration: {0}")]
    Rustls(String),
}

/// The process-wide crypto provider.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The suite QUIC protects its Initial packets with, whatever the
/// handshake agrees on (RFC 9001, section 5.2): a QUIC listener needs it.
pub const QUIC_INITIAL_SUITE: rustls::SupportedCipherSuite =
    rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256;

/// The TLS 1.3 suites `tls_cipher_suites` may name: IANA's name, and
/// rustls's (`TLS13_...`) for the same suite.
const SUITES: [(&str, rustls::SupportedCipherSuite); 3] = [
    (
        "TLS_AES_256_GCM_SHA384",
        rustls::crypto::ring::cipher_suite::TLS13_AES_256_GCM_SHA384,
    ),
    ("TLS_AES_128_GCM_SHA256", QUIC_INITIAL_SUITE),
    (
        "TLS_CHACHA20_POLY1305_SHA256",
        rustls::crypto::ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    ),
];

/// The suites `names` lists, in its order; empty for an empty list (the
/// provider's own). Unknown and repeated names are refused with the names
/// that are accepted.
pub fn cipher_suites(names: &[String]) -> Result<Vec<rustls::SupportedCipherSuite>, String> {
    let mut out: Vec<rustls::SupportedCipherSuite> = Vec::with_capacity(names.len());
    for name in names {
        let upper = name.trim().to_ascii_uppercase();
        let iana = upper.replacen("TLS13_", "TLS_", 1);
        let Some(&(_, suite)) = SUITES.iter().find(|(n, _)| *n == iana) else {
            let known: Vec<&str> = SUITES.iter().map(|(n, _)| *n).collect();
            return Err(format!(
                "`{name}` is not a TLS 1.3 cipher suite this server has; use {}",
                known.join(", ")
            ));
        };
        if out.contains(&suite) {
            return Err(format!("`{name}` is listed twice"));
        }
        out.push(suite);
    }
    Ok(out)
}

pub(crate) fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_err = |message: String| TlsError::Pem {
        what: "certificates",
        path: path.display().to_string(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.display().to_string(),
        });
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Pem {
        what: "private key",
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

pub(crate) fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(path)? {
        roots
            .add(c)
            .map_err(|e| TlsError::Rustls(format!("CA {}: {e}", path.display())))?;
    }
    Ok(roots)
}

/// Paths and modes for a server TLS config.
#[derive(Debug, Clone)]
pub struct ServerTlsPaths<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
    pub client_ca: Option<&'a Path>,
    pub client_auth: ClientAuth,
    /// The suites accepted, in the server's order of preference (see
    /// [`cipher_suites`]); empty: the provider's, in the client's order.
    pub cipher_suites: Vec<rustls::SupportedCipherSuite>,
}

/// A certificate that expires within this many seconds is warned about.
pub const EXPIRY_WARNING_SECS: i64 = 30 * 86_400;

/// The server certificate and key, swappable while serving.
pub struct CertStore {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<rustls::crypto::CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// (size, modification time) of both files when last loaded.
    seen: Mutex<Option<[FileStamp; 2]>>,
    /// `notAfter` of the leaf certificate, in Unix seconds.
    not_after: AtomicI64,
}

type FileStamp = (u64, Option<SystemTime>);

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .field("not_after", &self.not_after.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl CertStore {
    /// Loads the pair at `cert_path` and `key_path`; the key must match the
    /// certificate.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<CertStore>, TlsError> {
        let provider = provider();
        let stamps = stamps(cert_path, key_path);
        let (ck, not_after) = load_pair(cert_path, key_path, &provider)?;
        Ok(Arc::new(CertStore {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            provider,
            current: RwLock::new(Arc::new(ck)),
            seen: Mutex::new(stamps),
            not_after: AtomicI64::new(not_after),
        }))
    }

    /// Loads the files again if either changed (size or modification time)
    /// since the last load. `Ok(true)` when a new pair is now served. A pair
    /// that does not load (unreadable, a half-written file, a key that does
    /// not match) is an error and the pair in use stays; the next call tries
    /// again.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = stamps(&self.cert_path, &self.key_path);
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if now.is_none() || now == *seen {
            return Ok(false);
        }
        let (ck, not_after) = load_pair(&self.cert_path, &self.key_path, &self.provider)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(ck);
        self.not_after.store(not_after, Ordering::Relaxed);
        *seen = now;
        Ok(true)
    }

    /// Seconds until the served certificate expires (negative once it has).
    pub fn seconds_to_expiry(&self) -> i64 {
        self.not_after.load(Ordering::Relaxed) - unix_now()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|p| p.into_inner()),
        ))
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn stamps(cert: &Path, key: &Path) -> Option<[FileStamp; 2]> {
    let one = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.len(), m.modified().ok()))
    };
    Some([one(cert)?, one(key)?])
}

/// The certified key of a pair, and the leaf's `notAfter`.
fn load_pair(
    cert_path: &Path,
    key_path: &Path,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<(CertifiedKey, i64), TlsError> {
    let certs = load_certs(cert_path)?;
    let key = load_key(key_path)?;
    let not_after = not_after(&certs[0]).map_err(|e| TlsError::Pem {
        what: "certificates",
        path: cert_path.display().to_string(),
        message: e,
    })?;
    let ck = CertifiedKey::from_der(certs, key, provider).map_err(|e| {
        TlsError::Rustls(format!(
            "{} and {}: {e}",
            cert_path.display(),
            key_path.display()
        ))
    })?;
    Ok((ck, not_after))
}

fn not_after(der: &CertificateDer<'_>) -> Result<i64, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| format!("leaf certificate: {e}"))?;
    Ok(cert.validity().not_after.timestamp())
}

/// Builds the rustls server config used by both QUIC and TCP, and the
/// store of the certificate it serves.
pub fn server_config(
    p: &ServerTlsPaths<'_>,
) -> Result<(rustls::ServerConfig, Arc<CertStore>), TlsError> {
    let store = CertStore::load(p.cert, p.key)?;
    let mut provider = provider();
    if !p.cipher_suites.is_empty() {
        provider = Arc::new(rustls::crypto::CryptoProvider {
            cipher_suites: p.cipher_suites.clone(),
            ..(*provider).clone()
        });
    }
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = match (p.client_auth, p.client_ca) {
        (ClientAuth::None, _) => builder.with_no_client_auth(),
        (mode, Some(ca)) => {
            let roots = Arc::new(load_roots(ca)?);
            let v = WebPkiClientVerifier::builder_with_provider(roots, provider);
            let v = if mode == ClientAuth::Request {
                v.allow_unauthenticated()
            } else {
                v
            };
            builder
                .with_client_cert_verifier(v.build().map_err(|e| TlsError::Rustls(e.to_string()))?)
        }
        (_, None) => {
            return Err(TlsError::Rustls(
                "client certificate verification needs tls_ca_cert_path".into(),
            ))
        }
    };
    let mut cfg = builder.with_cert_resolver(store.clone());
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    // A configured list is the operator's order of preference.
    cfg.ignore_client_order = !p.cipher_suites.is_empty();
    Ok((cfg, store))
}

/// Keeps `store` up to date until `shutdown`: every `every` it reloads the
/// files if they changed, and it warns once a day while the served
/// certificate expires within [`EXPIRY_WARNING_SECS`] (from the start on).
pub(crate) async fn watch(
    store: Arc<CertStore>,
    every: std::time::Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    const WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(86_400);
    let mut last_warning: Option<tokio::time::Instant> = None;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let s = Arc::clone(&store);
        match tokio::task::spawn_blocking(move || s.reload_if_changed()).await {
            Ok(Ok(true)) => {
                last_warning = None;
                tracing::info!(
                    cert = %store.cert_path.display(),
                    expires_in_days = store.seconds_to_expiry() / 86_400,
                    "TLS certificate reloaded; new handshakes use it"
                );
            }
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "TLS certificate files changed but do not load; still serving the previous pair");
            }
            Err(e) => tracing::warn!(error = %e, "TLS certificate reload task failed"),
        }
        let left = store.seconds_to_expiry();
        if left < EXPIRY_WARNING_SECS && last_warning.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            last_warning = Some(tokio::time::Instant::now());
            tracing::warn!(
                cert = %store.cert_path.display(),
                expires_in_secs = left,
                "TLS certificate expires within 30 days; replace the files (they are reloaded without a restart)"
            );
        }
    }
}
