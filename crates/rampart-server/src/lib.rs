//! Rampart server: configuration, TLS, the QUIC and TCP listeners, and the
//! per-connection session that authenticates, authorizes and dispatches to
//! the broker core.
//!
//! # Layout
//! - `config`: [`Config`], loaded from TOML and `RAMPART_*` variables.
//! - `tls`: TLS 1.3-only rustls configuration, certificates from files.
//! - `dev`: `--dev` mode's local CA, certificate and admin key.
//! - `session`: the pre-AUTH handshake as a pure state machine.
//! - `audit`: the server's audit events, built in one place.
//! - `auth`: every credential kind turned into a principal; live key,
//!   tenant and revocation state.
//! - `access`: the one permission table for wire frames and HTTPS routes.
//! - `registry`: live connections, so revocation reaches them.
//! - `control`: control-plane operations (tenants, keys, tokens, ACLs).
//! - `error`: request errors turned into NACK frames, in one place.
//! - `conn`: the connection driver shared by every transport.
//! - `transport`: QUIC and TCP listeners.
//! - `read_ahead`: the read buffer under TLS, held only during bursts.
//! - `outbound`: a connection's way out, gathered writes.
//! - `http`: the HTTPS API (`/v1/auth`, admin routes).
//! - `health`: `/healthz` and `/readyz`, and the tracking of store writes
//!   readiness reads.
//! - `sealing`: tenant records in the store sealed with tenant keys.
//! - `master`: the master key at start, and the server's own secrets kept
//!   wrapped by it.
//! - `kv_api`: the secrets API (Vault KV v2, KeyVault, AppRole).
//! - `secret_backend`: where `kv_api` keeps secrets, local or external.
//! - `vault_external`: the proxy to an external Vault/OpenBao KV v2 mount.
//! - `archive`: the backup archive format (encrypted chunks, entries).
//! - `backup`: `POST /v1/sys/backup` while serving, and the offline
//!   restore.
//! - `rebuild`: `rampart state rebuild`, the control-plane journal replayed
//!   offline and compared with (or written to) the store.

mod access;
mod archive;
mod audit;
mod audit_keys;
mod auth;
mod backup;
mod config;
mod conn;
mod control;
pub mod dev;
mod error;
mod health;
mod http;
mod kv_api;
mod limits;
mod master;
mod metrics;
mod outbound;
mod read_ahead;
mod rebuild;
mod reencrypt;
mod registry;
mod sealing;
mod secret_backend;
mod session;
mod signing;
mod streams;
mod tls;
mod transport;
mod vault_api;
mod vault_external;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rampart_broker::Broker;
use rampart_identity::{ApiKeyStore, Pepper, Secret};
use rampart_proto::{StreamPath, TenantId};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

#[doc(hidden)]
pub use archive::fuzz_archive;
pub use auth::MtlsIdentity;
pub use backup::{restore, RestoreError, RestoreReport};
pub use config::{
    AuditSink, ClientAuth, Config, ConfigError, MasterKeyKind, SlowConsumer, VaultBackend,
    REDACTED, SECRET_KEYS, VAULT_EXTERNAL_TOKEN_ENV,
};
pub use dev::{DevError, DevSetup, DEV_TENANT};
pub use tls::{TlsError, ALPN};

/// What a connection needs from the server.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) broker: Broker,
    pub(crate) identity: auth::Identity,
    pub(crate) policy: std::sync::RwLock<rampart_authz::Policy>,
    pub(crate) registry: registry::Registry,
    pub(crate) audit: rampart_audit::Auditor,
    pub(crate) sealer: Arc<sealing::KeyringSealer>,
    /// Background re-encryption of stream data, by tenant.
    pub(crate) reencrypt: reencrypt::Jobs,
    /// AppRoles, and the local secrets (for tenant reseal and erase).
    pub(crate) vault: Arc<rampart_vault::Vault>,
    /// Where the secrets API reads and writes secrets (`vault_backend`).
    pub(crate) secrets: secret_backend::SecretBackend,
    /// Rate limits and quotas of every tenant and principal.
    pub(crate) limits: Arc<rampart_limits::Limits>,
    /// Connection admission and failed-authentication lockout.
    pub(crate) admission: Arc<rampart_limits::Admission>,
    /// Where TCP connections wait before they send their first byte.
    pub(crate) edge: transport::Edge,
    /// Stateless QUIC retries sent (address validation under load).
    pub(crate) quic_retries: AtomicU64,
    /// How the store's writes are going, and readiness's own retries.
    pub(crate) health: Arc<health::HealthState>,
    /// The served certificate and key, reloaded when their files change.
    pub(crate) certs: Arc<tls::CertStore>,
    /// Event counters for `/metrics`.
    pub(crate) metrics: metrics::Metrics,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Set when a stop begins, before the drain (`shutdown_drain_secs`):
    /// readiness fails from then on while everything else still serves.
    pub(crate) stopping: AtomicBool,
    active: AtomicUsize,
    /// HTTPS connections open (a clean stop waits for their requests).
    http_active: AtomicUsize,
}

impl Shared {
    /// The tenant whose admins manage tenants, if any.
    pub(crate) fn operator_tenant(&self) -> Option<TenantId> {
        TenantId::parse(&self.config.operator_tenant).ok()
    }
}

/// Counts a live connection until dropped.
pub(crate) struct Tracked<'a>(&'a AtomicUsize);

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Shared {
    /// Wire connections open now.
    pub(crate) fn open_connections(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    pub(crate) fn track(&self) -> Tracked<'_> {
        self.active.fetch_add(1, Ordering::AcqRel);
        Tracked(&self.active)
    }

    pub(crate) fn track_http(&self) -> Tracked<'_> {
        self.http_active.fetch_add(1, Ordering::AcqRel);
        Tracked(&self.http_active)
    }
}

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Dev(#[from] DevError),
    #[error("api keys: {0}")]
    Keys(String),
    #[error("cannot listen on {what} {addr}: {message}")]
    Bind {
        what: &'static str,
        addr: String,
        message: String,
    },
    #[error("cannot start the edge runtime: {0}")]
    Runtime(String),
    #[error("no TLS certificate: set tls_cert_path and tls_key_path, or run with --dev")]
    NoCertificate,
    #[error("{0}")]
    Storage(String),
    #[error("JWT issuers: {0}")]
    Jwt(String),
    #[error("ACL documents in the store: {0}")]
    Acl(String),
    #[error("audit log: {0}")]
    Audit(String),
    #[error("master key: {0}")]
    MasterKey(String),
}

/// The server's own secrets, kept on disk only wrapped by the master key.
struct ServerSecrets {
    pepper: Secret<Vec<u8>>,
    token_signing: Secret<Vec<u8>>,
    audit_signing: Secret<Vec<u8>>,
    audit_hmac: Secret<Vec<u8>>,
}

fn random32() -> Result<Secret<Vec<u8>>, String> {
    rampart_identity::random_bytes::<32>()
        .map(|b| Secret::new(b.to_vec()))
        .map_err(|e| e.to_string())
}

fn ed25519() -> Result<Secret<Vec<u8>>, String> {
    rampart_identity::TokenSigner::generate_pkcs8().map_err(|e| e.to_string())
}

impl ServerSecrets {
    async fn load(
        master: &dyn rampart_keys::MasterKeyProvider,
        config: &Config,
    ) -> Result<Self, StartError> {
        let d = &config.data_dir;
        Ok(Self {
            pepper: master::wrapped_secret(master, &config.pepper_path(), SECRET_PEPPER, random32)
                .await?,
            token_signing: master::wrapped_secret(
                master,
                &d.join(signing::KEY_FILE),
                signing::KEY_AAD,
                ed25519,
            )
            .await?,
            audit_signing: master::wrapped_secret(
                master,
                &d.join(audit_keys::SIGNING_FILE),
                audit_keys::SIGNING_AAD,
                ed25519,
            )
            .await?,
            audit_hmac: master::wrapped_secret(
                master,
                &d.join(audit_keys::HMAC_FILE),
                audit_keys::HMAC_AAD,
                random32,
            )
            .await?,
        })
    }
}

const SECRET_PEPPER: &str = "rampart:api-key-pepper";

pub use master::rotate_master;
pub use rebuild::{state_rebuild, RebuildOptions, RebuildOutcome, WriteOutcome};

/// A server secret the command-line tools need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerSecret {
    /// The pepper API-key hashes are keyed with (`rampart key hash`).
    ApiKeyPepper,
    /// The key identifiers are HMAC'ed under in audit records
    /// (`rampart audit hash`).
    AuditHmac,
}

/// Reads (or, for the pepper, creates) a server secret with the master key
/// of `config`, as the server would. For command-line tools that run
/// beside a server's data directory.
pub async fn server_secret(
    config: &Config,
    dev: bool,
    which: ServerSecret,
) -> Result<Secret<Vec<u8>>, StartError> {
    let master_key = master::open(config, dev)?;
    master::verify(master_key.as_ref(), &config.data_dir).await?;
    match which {
        ServerSecret::ApiKeyPepper => {
            master::wrapped_secret(
                master_key.as_ref(),
                &config.pepper_path(),
                SECRET_PEPPER,
                random32,
            )
            .await
        }
        ServerSecret::AuditHmac => {
            master::wrapped_secret(
                master_key.as_ref(),
                &config.data_dir.join(audit_keys::HMAC_FILE),
                audit_keys::HMAC_AAD,
                || Err("no audit key yet: the server creates it at its first start".into()),
            )
            .await
        }
    }
}

/// The HMAC keys audit pseudonyms were under before key rotations, by key
/// id, read with the master key of `config` (for `rampart audit hash`,
/// which searches older records too).
pub async fn retired_audit_hmac_keys(
    config: &Config,
    dev: bool,
) -> Result<Vec<(String, Secret<Vec<u8>>)>, StartError> {
    let master_key = master::open(config, dev)?;
    master::verify(master_key.as_ref(), &config.data_dir).await?;
    let mut out = Vec::new();
    for path in audit_keys::retired_hmac_files(&config.data_dir) {
        let key =
            audit_keys::read_wrapped(master_key.as_ref(), &path, audit_keys::HMAC_AAD).await?;
        out.push((rampart_audit::hmac_key_id_for(key.expose()), key));
    }
    Ok(out)
}

/// How to start a server.
#[derive(Debug)]
#[non_exhaustive]
pub struct ServerOptions {
    pub config: Config,
    /// Generate and use a local CA, certificate and admin key.
    pub dev: bool,
    /// Plaintext `tenant:key` pairs (the `RAMPART_API_KEYS` variable); only
    /// their hashes are kept.
    pub plain_api_keys: Option<Secret<String>>,
}

impl ServerOptions {
    pub fn new(config: Config) -> Self {
        Self {
            config,
            dev: false,
            plain_api_keys: None,
        }
    }

    pub fn dev(mut self, dev: bool) -> Self {
        self.dev = dev;
        self
    }

    pub fn plain_api_keys(mut self, keys: Option<Secret<String>>) -> Self {
        self.plain_api_keys = keys;
        self
    }
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// Closed by [`Server::shutdown`] once its connections are done.
    quic: Option<quinn::Endpoint>,
    quic_addr: Option<SocketAddr>,
    tcp_addr: Option<SocketAddr>,
    http_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    dev: Option<DevSetup>,
}

impl Server {
    /// Validates everything, binds the listeners and starts serving.
    pub async fn start(opts: ServerOptions) -> Result<Server, StartError> {
        let mut config = opts.config;
        config.validate()?;
        let timeout = Duration::from_secs(config.shutdown_timeout_secs);
        if Duration::from_secs(config.shutdown_drain_secs) > config.shutdown_drain(timeout) {
            warn!(
                shutdown_drain_secs = config.shutdown_drain_secs,
                shutdown_timeout_secs = config.shutdown_timeout_secs,
                "shutdown_drain_secs is more than half of shutdown_timeout_secs: a stop drains for half of it only"
            );
        }
        // The external vault's settings (token, CA) are checked before
        // anything is written.
        let external_vault = secret_backend::external(&config)?;
        let dev = if opts.dev {
            let d = dev::prepare(&config.data_dir)?;
            if config.tls_cert_path.is_none() {
                config.tls_cert_path = Some(d.server_cert.clone());
                config.tls_key_path = Some(d.server_key.clone());
            }
            Some(d)
        } else {
            None
        };

        let (Some(cert), Some(key)) = (&config.tls_cert_path, &config.tls_key_path) else {
            return Err(StartError::NoCertificate);
        };
        let (tls, certs) = tls::server_config(&tls::ServerTlsPaths {
            cert,
            key,
            client_ca: config.tls_ca_cert_path.as_deref(),
            client_auth: config.tls_client_auth,
            cipher_suites: tls::cipher_suites(&config.tls_cipher_suites)
                .map_err(tls::TlsError::Rustls)?,
        })?;

        // The master key comes first, and is checked against the data
        // directory before anything under it is opened or written.
        let master_key = master::open(&config, opts.dev)?;
        master::verify(master_key.as_ref(), &config.data_dir).await?;
        let mut secrets = ServerSecrets::load(master_key.as_ref(), &config).await?;
        (secrets.audit_signing, secrets.audit_hmac) = audit_keys::settle(
            master_key.as_ref(),
            &config,
            secrets.audit_signing,
            secrets.audit_hmac,
        )
        .await?;

        let keys_err = |e: rampart_identity::KeyError| StartError::Keys(e.to_string());
        let pepper = Pepper::from_bytes(secrets.pepper.expose());
        let mut keys = ApiKeyStore::new(pepper);
        for entry in &config.allowed_api_keys {
            keys.insert_config_entry(entry).map_err(keys_err)?;
        }
        if let Some(plain) = &opts.plain_api_keys {
            keys.insert_plain_pairs(plain.expose()).map_err(keys_err)?;
        }
        if let Some(d) = &dev {
            let t = TenantId::parse(DEV_TENANT).map_err(|e| StartError::Keys(e.to_string()))?;
            keys.insert_plain(t, "admin", d.admin_key.expose().as_bytes());
            if config.operator_tenant.is_empty() {
                config.operator_tenant = DEV_TENANT.to_string();
            }
        }
        let mut known_tenants: HashSet<TenantId> = HashSet::new();
        for t in &config.tenants {
            known_tenants.insert(TenantId::parse(t).map_err(|e| StartError::Keys(e.to_string()))?);
        }
        for t in keys.tenants() {
            if !config.tenants.is_empty() && !known_tenants.contains(t) && dev.is_none() {
                return Err(StartError::Keys(format!(
                    "a key belongs to tenant `{t}`, which is not in `tenants`"
                )));
            }
        }
        known_tenants.extend(keys.tenants().cloned());
        if let Ok(op) = TenantId::parse(&config.operator_tenant) {
            known_tenants.insert(op);
        }

        let storage = |e: rampart_store::StoreError| StartError::Storage(e.to_string());
        rampart_identity::fsutil::create_private_dir(&config.data_dir).map_err(|e| {
            StartError::Storage(format!("data dir {}: {e}", config.data_dir.display()))
        })?;
        let health = Arc::new(health::HealthState::default());
        let kv: Arc<dyn rampart_store::KvStore> = Arc::new(health::TrackedStore::new(
            rampart_store::RedbStore::open(&config.data_dir.join("state.redb")).map_err(storage)?,
            health.clone(),
        ));
        let keyring = Arc::new(
            rampart_keys::Keyring::open(kv.clone(), master_key.clone())
                .await
                .map_err(|e| StartError::MasterKey(e.to_string()))?,
        );
        if keyring
            .rotation_pending()
            .map_err(|e| StartError::MasterKey(e.to_string()))?
        {
            warn!("a master key rotation was interrupted: run `rampart keys rotate-master` again to finish it");
        }
        let sealer = Arc::new(sealing::KeyringSealer::new(keyring));
        // Tenant keys are unwrapped before any record of theirs is read.
        let clear = rampart_store::Catalog::new(kv.clone());
        let stored = clear.tenants().map_err(storage)?;
        let erased: HashSet<String> = stored
            .iter()
            .filter(|t| t.erased_ms.is_some())
            .map(|t| t.name.clone())
            .collect();
        let mut to_load: HashSet<String> = stored.into_iter().map(|t| t.name).collect();
        to_load.extend(known_tenants.iter().map(|t| t.to_string()));
        for t in &erased {
            if known_tenants.iter().any(|k| k.as_str() == t) {
                warn!(tenant = %t, "keys are configured for an erased tenant; they will not authenticate");
            }
            to_load.remove(t);
        }
        for t in &to_load {
            sealer
                .load(t)
                .await
                .map_err(|e| StartError::MasterKey(format!("keys of tenant {t}: {e}")))?;
        }
        let catalog = rampart_store::Catalog::sealed(kv.clone(), sealer.clone());
        // A store from before the journal: its state becomes the journal's
        // first events, so `rampart state rebuild` always has all of it.
        let snapshotted = catalog.open_journal().map_err(storage)?;
        if snapshotted > 0 {
            info!(
                records = snapshotted,
                "control-plane journal started from the store's current state"
            );
        }
        let vault = Arc::new(rampart_vault::Vault::new(
            kv.clone(),
            sealer.clone(),
            Pepper::from_bytes(secrets.pepper.expose()),
        ));
        let secret_store = match external_vault {
            Some(x) => {
                info!(vault = %x.describe(), "secrets are kept in an external vault");
                secret_backend::SecretBackend::External(Box::new(x))
            }
            None => secret_backend::SecretBackend::Local(vault.clone()),
        };
        let signer = rampart_identity::TokenSigner::from_pkcs8(secrets.token_signing.expose())
            .map_err(|e| StartError::Keys(e.to_string()))?;
        let token_keys = rampart_identity::TokenKeys::new(
            signer,
            signing::load_retired(&config.data_dir, auth::now_ms()),
        );
        let jwt = if config.jwt_issuers.is_empty() {
            None
        } else {
            let v = Arc::new(
                rampart_identity::JwtVerifier::new(config.jwt_issuers.clone())
                    .map_err(|e| StartError::Jwt(e.to_string()))?,
            );
            // Key sets behind URLs are fetched now and every five minutes;
            // an unknown key id also triggers a (rate-limited) refresh.
            v.spawn_refresh_task(Duration::from_secs(300));
            Some(v)
        };
        let identity = auth::Identity::load(
            catalog.clone(),
            keys,
            &known_tenants,
            token_keys,
            jwt,
            config.mtls_identities.clone(),
            config.mtls_allowed_common_names.clone(),
        )
        .map_err(storage)?;
        if identity.static_keys.is_empty() && identity.tenants().is_empty() {
            warn!("no API keys and no tenants configured: no client can authenticate");
        }
        let mut policy = rampart_authz::Policy::new();
        for a in catalog.acls().map_err(storage)? {
            for d in rampart_authz::AclDocument::parse_yaml(&a.document)
                .map_err(|e| StartError::Acl(format!("{}/{}: {e}", a.tenant, a.namespace)))?
            {
                policy.apply(d);
            }
        }

        let broker = Broker::new(config.broker());
        for s in &config.streams {
            if let Ok(p) = s.parse::<StreamPath>() {
                broker.declare_stream(p);
            }
        }
        for s in catalog.streams("").map_err(storage)? {
            let Ok(p) = s.path.parse::<StreamPath>() else {
                continue;
            };
            match &s.durable {
                None => {
                    broker.declare_stream(p);
                }
                // A stream that fails to open is refused (503) on its own;
                // the others start normally.
                Some(spec) => match streams::open(&config, sealer.keyring(), &p, spec).await {
                    Ok(d) => {
                        broker.add_durable(d);
                    }
                    Err(why) => {
                        tracing::error!(stream = %p, error = %why, "durable stream failed to open");
                        broker.add_unavailable(p, why);
                    }
                },
            }
        }

        if config.dangerous_unsealed_streams {
            warn!(
                "dangerous_unsealed_streams is set: durable streams created now store payloads in clear; for benchmarks only"
            );
        }
        let audit = if config.dangerous_disable_audit {
            warn!(
                "dangerous_disable_audit is set: NOTHING is audited; never do this in production"
            );
            rampart_audit::Auditor::disabled()
        } else {
            let keys = rampart_audit::AuditKeys::from_bytes(
                secrets.audit_signing.expose(),
                secrets.audit_hmac.expose(),
            )
            .map_err(|e| StartError::Audit(e.to_string()))?;
            rampart_audit::Auditor::start(config.audit(), keys)
                .map_err(|e| StartError::Audit(e.to_string()))?
        };
        audit.record(rampart_audit::Event::new(
            "server.start",
            "start",
            rampart_audit::Outcome::Success,
        ));

        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let quic_bind = config.quic_bind.clone();
        let tcp_bind = config.tcp_bind.clone();
        let http_bind = config.http_bind.clone();
        let limits = limits::load(&config, &catalog)?;
        let admission = rampart_limits::Admission::new(config.admission());
        let edge = transport::Edge::start().map_err(|e| StartError::Runtime(e.to_string()))?;
        let shared = Arc::new(Shared {
            config,
            broker,
            identity,
            policy: std::sync::RwLock::new(policy),
            registry: registry::Registry::default(),
            audit,
            sealer,
            reencrypt: reencrypt::Jobs::default(),
            vault,
            secrets: secret_store,
            limits,
            admission,
            edge,
            quic_retries: AtomicU64::new(0),
            health,
            certs,
            metrics: metrics::Metrics::default(),
            shutdown: shutdown_rx,
            stopping: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            http_active: AtomicUsize::new(0),
        });

        let mut tasks = Vec::new();
        // The first tick checks expiry (and warns) at start.
        let every = Duration::from_secs(shared.config.tls_reload_interval_secs);
        if !every.is_zero() {
            tasks.push(tokio::spawn(tls::watch(
                shared.certs.clone(),
                every,
                shared.shutdown.clone(),
            )));
        } else if shared.certs.seconds_to_expiry() < tls::EXPIRY_WARNING_SECS {
            warn!(
                expires_in_secs = shared.certs.seconds_to_expiry(),
                "TLS certificate expires within 30 days"
            );
        }
        let bind_err = |what: &'static str, addr: &str, e: String| StartError::Bind {
            what,
            addr: addr.to_string(),
            message: e,
        };
        let mut tcp_addr = None;
        if !tcp_bind.is_empty() {
            let listener = transport::bind_tcp(&tcp_bind)
                .await
                .map_err(|e| bind_err("tcp", &tcp_bind, e.to_string()))?;
            tcp_addr = listener.local_addr().ok();
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls.clone()));
            tasks.push(tokio::spawn(transport::run_tcp(
                listener,
                acceptor,
                shared.clone(),
            )));
        }
        let mut http_addr = None;
        if !http_bind.is_empty() {
            let listener = transport::bind_tcp(&http_bind)
                .await
                .map_err(|e| bind_err("https", &http_bind, e.to_string()))?;
            http_addr = listener.local_addr().ok();
            let mut https_tls = tls.clone();
            https_tls.alpn_protocols = vec![b"http/1.1".to_vec()];
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(https_tls));
            tasks.push(tokio::spawn(http::run(listener, acceptor, shared.clone())));
        }
        let mut quic_addr = None;
        let mut quic = None;
        if !quic_bind.is_empty() {
            let addr: SocketAddr = quic_bind
                .parse()
                .map_err(|_| bind_err("quic", &quic_bind, "not an address".into()))?;
            let qcfg = transport::quic_server_config(tls.clone())
                .map_err(|e| bind_err("quic", &quic_bind, e))?;
            let ecfg =
                transport::quic_endpoint_config().map_err(|e| bind_err("quic", &quic_bind, e))?;
            let runtime = quinn::default_runtime()
                .ok_or_else(|| bind_err("quic", &quic_bind, "no async runtime".into()))?;
            let endpoint = transport::quic_socket(addr)
                .and_then(|socket| quinn::Endpoint::new(ecfg, Some(qcfg), socket, runtime))
                .map_err(|e| bind_err("quic", &quic_bind, e.to_string()))?;
            quic_addr = endpoint.local_addr().ok();
            quic = Some(endpoint.clone());
            tasks.push(tokio::spawn(transport::run_quic(endpoint, shared.clone())));
        }

        let mut metrics_addr = None;
        if !shared.config.metrics_bind.is_empty() {
            let bind = shared.config.metrics_bind.clone();
            let auth = match &shared.config.metrics_token_path {
                Some(path) => {
                    let invalid = |message: String| {
                        StartError::Config(ConfigError::Invalid {
                            key: "metrics_token_path",
                            message,
                        })
                    };
                    let token = rampart_identity::Secret::new(
                        std::fs::read(path)
                            .map_err(|e| invalid(format!("{}: {e}", path.display())))?,
                    );
                    metrics::ScrapeAuth::token(token.expose()).ok_or_else(|| {
                        invalid(format!("{}: no token on its first line", path.display()))
                    })?
                }
                None => metrics::ScrapeAuth::ClientCertificate,
            };
            let listener = transport::bind_tcp(&bind)
                .await
                .map_err(|e| bind_err("metrics", &bind, e.to_string()))?;
            metrics_addr = listener.local_addr().ok();
            let mut metrics_tls = tls.clone();
            metrics_tls.alpn_protocols = vec![b"http/1.1".to_vec()];
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(metrics_tls));
            tasks.push(tokio::spawn(metrics::serve(
                listener,
                acceptor,
                auth,
                shared.clone(),
            )));
        }

        if shared.config.key_rotation_days > 0 {
            let rotator = shared.clone();
            let max_age = rotator.config.key_rotation_days.saturating_mul(86_400_000);
            tasks.push(tokio::spawn(async move {
                let mut shutdown = rotator.shutdown.clone();
                let mut tick = tokio::time::interval(Duration::from_secs(3600));
                loop {
                    tokio::select! {
                        _ = tick.tick() => {
                            let n = rotator.rotate_due_tenants(max_age).await;
                            if n > 0 {
                                info!(tenants = n, "scheduled key rotation");
                            }
                        }
                        _ = shutdown.changed() => break,
                    }
                }
            }));
        }

        // Re-encryption jobs a stop or crash cut short carry on.
        shared.resume_reencryption();

        let upkeep = shared.clone();
        tasks.push(tokio::spawn(async move {
            let mut shutdown = upkeep.shutdown.clone();
            let mut tick = tokio::time::interval(Duration::from_millis(
                upkeep.config.stream_maintenance_interval_ms,
            ));
            loop {
                tokio::select! {
                    _ = tick.tick() => upkeep.maintain_streams().await,
                    _ = shutdown.changed() => break,
                }
            }
        }));

        let sweeper = shared.clone();
        tasks.push(tokio::spawn(async move {
            let mut shutdown = sweeper.shutdown.clone();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => sweeper.broker.cache().sweep(std::time::Instant::now()),
                    _ = shutdown.changed() => break,
                }
            }
        }));

        info!(
            quic = ?quic_addr,
            tcp = ?tcp_addr,
            https = ?http_addr,
            static_keys = shared.identity.static_keys.len(),
            "rampart listening"
        );
        Ok(Server {
            shared,
            shutdown: shutdown_tx,
            tasks,
            quic,
            quic_addr,
            tcp_addr,
            http_addr,
            metrics_addr,
            dev,
        })
    }

    /// Applies the limit settings of `config` without a restart (SIGHUP):
    /// the default tenant and principal limits and connection admission.
    /// Overrides made through the admin API stay. Other keys take effect
    /// at the next start.
    pub fn reload_limits(&self, config: &Config) -> Result<(), ConfigError> {
        config.validate()?;
        self.shared.limits.set_defaults(
            config.tenant_limits.clone(),
            config.principal_limits.clone(),
        );
        self.shared.admission.set_spec(config.admission());
        tracing::info!("limits reloaded from the configuration");
        Ok(())
    }

    pub fn quic_addr(&self) -> Option<SocketAddr> {
        self.quic_addr
    }

    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// Address of the HTTPS API.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// Where `/metrics` is served, when `metrics_bind` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Authenticated connections right now.
    pub fn authenticated_connections(&self) -> usize {
        self.shared.registry.len()
    }

    /// The dev setup, when started with `dev`.
    pub fn dev_setup(&self) -> Option<&DevSetup> {
        self.dev.as_ref()
    }

    /// Connections admitted and not yet closed, on every listener, those
    /// still waiting for their first byte or their handshake included.
    pub fn admitted_connections(&self) -> u64 {
        self.shared.admission.open()
    }

    /// Live connections.
    pub fn connections(&self) -> usize {
        self.shared.active.load(Ordering::Acquire)
    }

    /// Connections and authentications refused by admission so far, by the
    /// limit that refused them (`max_connections_per_ip`, `auth_lockout`
    /// and the like), sorted by name.
    pub fn admission_refusals(&self) -> Vec<(&'static str, u64)> {
        self.shared.admission.refusals()
    }

    /// Stateless retries sent to QUIC clients to validate their address.
    pub fn quic_retries(&self) -> u64 {
        self.shared.quic_retries.load(Ordering::Relaxed)
    }

    /// Stops the server within `timeout`, in order: drains for
    /// `shutdown_drain_secs` (at most half of `timeout`): `/readyz` answers
    /// 503 while everything else serves as before, so that load balancers
    /// stop sending traffic; stops accepting on every listener; lets every
    /// connection finish the requests it has read (a publish read is
    /// answered, ACK or NACK, before its connection closes) and close;
    /// closes the durable streams (consumer positions saved) and fsyncs
    /// their logs; records `server.stop` and lets the audit writer drain,
    /// write a final signed checkpoint and fsync. Each step is logged with
    /// its duration; a step the deadline cuts short is logged as a warning
    /// and named in the result. The steps after the drain that wait for
    /// others (listeners, connections) end a quarter of what is left (at
    /// most 5 s) early, to leave the flushes that time.
    pub async fn shutdown(self, timeout: Duration) -> Stopped {
        self.shutdown_with(timeout, std::future::pending()).await
    }

    /// [`Server::shutdown`], with the drain ended early when `end_drain`
    /// completes (`rampart server`: a second `SIGTERM` or `Ctrl-C`).
    pub async fn shutdown_with(
        self,
        timeout: Duration,
        end_drain: impl std::future::Future<Output = ()>,
    ) -> Stopped {
        let started = tokio::time::Instant::now();
        let deadline = started + timeout;
        let mut stopped = Stopped::default();
        let mut step = Step::new();

        // 0. Drain: not ready, still serving.
        self.shared.stopping.store(true, Ordering::Release);
        let drain = self.shared.config.shutdown_drain(timeout);
        if !drain.is_zero() {
            info!(
                drain_ms = drain.as_millis() as u64,
                "draining: /readyz answers 503; serving until the drain ends"
            );
            tokio::select! {
                () = tokio::time::sleep(drain) => {}
                () = end_drain => info!("drain ended early"),
            }
            step.done(&mut stopped, "drain", true, String::new);
        }

        // Listeners and connections leave the flushes below a share of the
        // time, so a client that never reads cannot cost the data its fsync.
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let reserve = (left / 4).min(Duration::from_secs(5));
        let wait_deadline = deadline - reserve;

        // 1. Listeners (and the background tasks) stop.
        let _ = self.shutdown.send(true);
        let mut late_tasks = 0;
        for t in self.tasks {
            if tokio::time::timeout_at(wait_deadline, t).await.is_err() {
                late_tasks += 1;
            }
        }
        step.done(&mut stopped, "listeners", late_tasks == 0, || {
            format!("{late_tasks} listener or background tasks still running")
        });

        // 2. Connections answer what they have read, then close.
        let open = || {
            self.shared.active.load(Ordering::Acquire)
                + self.shared.http_active.load(Ordering::Acquire)
        };
        while open() > 0 && tokio::time::Instant::now() < wait_deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = open();
        if let Some(q) = &self.quic {
            q.close(0u32.into(), b"server shutting down");
            let _ = tokio::time::timeout_at(wait_deadline, q.wait_idle()).await;
        }
        step.done(&mut stopped, "connections", left == 0, || {
            format!("{left} connections still open, closed unfinished")
        });

        // 3. Durable streams: consumers saved, logs fsynced.
        let streams = self.shared.broker.durable_streams();
        let mut flushed = 0;
        let mut failed = 0;
        for d in &streams {
            d.close();
        }
        for d in &streams {
            match tokio::time::timeout_at(deadline, d.flush()).await {
                Ok(Ok(())) => flushed += 1,
                Ok(Err(e)) => {
                    failed += 1;
                    tracing::error!(stream = %d.path(), error = %e, "stream log fsync failed");
                }
                Err(_) => break,
            }
        }
        let unflushed = streams.len() - flushed - failed;
        step.done(&mut stopped, "stream logs", unflushed == 0, || {
            format!("{unflushed} of {} stream logs not fsynced", streams.len())
        });

        // 4. Audit: the last record, a final checkpoint, an fsync.
        let audit = &self.shared.audit;
        audit.record(rampart_audit::Event::new(
            "server.stop",
            "stop",
            rampart_audit::Outcome::Success,
        ));
        if audit.is_enabled() {
            let finished = tokio::time::timeout_at(deadline, audit.shutdown())
                .await
                .is_ok();
            step.done(&mut stopped, "audit", finished, || {
                "the final audit checkpoint may be missing".to_string()
            });
        }

        // Tasks just finishing still hold the store, whose file lock a
        // restart on the same data dir needs.
        while Arc::strong_count(&self.shared) > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            clean = stopped.is_clean(),
            "rampart stopped"
        );
        stopped
    }
}

/// How [`Server::shutdown`] went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stopped {
    /// The steps the deadline cut short, in order: `listeners`,
    /// `connections`, `stream logs`, `audit`. Empty on a clean stop.
    pub cut_short: Vec<&'static str>,
}

impl Stopped {
    /// Every step finished within the timeout.
    pub fn is_clean(&self) -> bool {
        self.cut_short.is_empty()
    }
}

/// Times the steps of a shutdown and logs each.
struct Step {
    since: tokio::time::Instant,
}

impl Step {
    fn new() -> Self {
        Step {
            since: tokio::time::Instant::now(),
        }
    }

    /// Logs step `name`: at info when `finished`, else as a warning saying
    /// what was left (`left`) when the deadline passed.
    fn done(
        &mut self,
        stopped: &mut Stopped,
        name: &'static str,
        finished: bool,
        left: impl FnOnce() -> String,
    ) {
        let now = tokio::time::Instant::now();
        let took_ms = now.duration_since(self.since).as_millis() as u64;
        self.since = now;
        if finished {
            info!(step = name, took_ms, "shutdown step done");
        } else {
            stopped.cut_short.push(name);
            warn!(
                step = name,
                took_ms,
                left = %left(),
                "shutdown step cut short by shutdown_timeout_secs"
            );
        }
    }
}
