//! Server configuration: one TOML file, every key overridable from the
//! environment as `RAMPART_<KEY>`, validated at load with errors that name
//! the key.
//!
//! The environment is read through a function passed in, so tests never
//! touch the process environment.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rampart_broker::{BrokerConfig, CacheLimits, QueueLimits, SlowConsumerPolicy};
use rampart_proto::{StreamPath, TenantId, DEFAULT_MAX_FRAME, PREAUTH_MAX_FRAME};
use serde::{Deserialize, Serialize};

/// Whether the TLS layer asks for client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// Client certificates are not requested.
    #[default]
    None,
    /// Requested and verified when sent, but optional.
    Request,
    /// Required: a client without a valid certificate fails the handshake.
    Require,
}

/// Slow-consumer policy as written in config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SlowConsumer {
    #[default]
    Block,
    DropOldest,
}

/// The configuration file, as written. See `docs/configuration.md` in the
/// README for every key.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct Config {
    pub data_dir: PathBuf,
    /// UDP address for QUIC; empty disables QUIC.
    pub quic_bind: String,
    /// TCP address for TLS over TCP; empty disables it.
    pub tcp_bind: String,
    pub tls_cert_path: Option<PathBuf>,
    pub tls_key_path: Option<PathBuf>,
    pub tls_ca_cert_path: Option<PathBuf>,
    pub tls_client_auth: ClientAuth,
    /// TLS 1.3 cipher suites the server accepts, in its order of
    /// preference (IANA names, e.g. `TLS_AES_128_GCM_SHA256`). Empty (the
    /// default): all three of rustls, in the client's order. Set, the
    /// server picks the first of its list that the client offers.
    pub tls_cipher_suites: Vec<String>,
    /// How often the certificate and key files are checked for a change
    /// (size or modification time); a changed pair is loaded for new
    /// handshakes without a restart. 0 turns the check off. Default 10.
    pub tls_reload_interval_secs: u64,
    /// `tenant:hmac-sha256:<hex>` entries; see `rampart key hash`.
    pub allowed_api_keys: Vec<String>,
    /// Secret mixed into key hashes; default `<data_dir>/api_key_pepper`.
    pub api_key_pepper_path: Option<PathBuf>,
    /// Tenants the server knows. When set, keys for other tenants are refused
    /// at start. Tenants that own a key are always known.
    pub tenants: Vec<String>,
    pub max_frame_size: usize,
    pub auth_timeout_ms: u64,
    pub max_auth_failures: u32,
    pub auto_create_streams: bool,
    /// Streams that exist from the start, as `tenant/namespace/stream`.
    pub streams: Vec<String>,
    pub subscriber_queue_messages: usize,
    pub subscriber_queue_bytes: usize,
    pub slow_consumer_policy: SlowConsumer,
    pub cache_max_bytes_per_tenant: usize,
    pub cache_max_value_bytes: usize,
    /// TCP address of the HTTPS API (admin, `/v1/auth`); empty disables it.
    pub http_bind: String,
    /// TCP address of the Prometheus `/metrics` listener (HTTPS, the
    /// server's certificate); empty (the default) disables it. Needs
    /// `metrics_token_path` or `tls_client_auth = "require"`.
    pub metrics_bind: String,
    /// File whose first line is the bearer token scrapers must send to
    /// `/metrics`.
    pub metrics_token_path: Option<PathBuf>,
    /// Origins allowed to call the HTTPS API from a browser (CORS).
    pub cors_allowed_origins: Vec<String>,
    /// Tenant whose admins may manage tenants (create, disable, enable).
    /// `--dev` makes it `dev` unless set.
    pub operator_tenant: String,
    /// Default and maximum lifetime of Rampart tokens.
    pub token_ttl_secs: u64,
    pub token_max_ttl_secs: u64,
    /// How long before expiry a connection is told to re-authenticate, and
    /// how long after expiry it may still do so before it is closed.
    pub reauth_notice_ms: u64,
    pub reauth_grace_ms: u64,
    /// Rules mapping verified client certificates to principals.
    pub mtls_identities: Vec<crate::auth::MtlsIdentity>,
    /// When set, only client certificates with one of these CNs may
    /// authenticate (seed 000).
    pub mtls_allowed_common_names: Vec<String>,
    /// Trusted JWT / OIDC issuers (Kubernetes service accounts included).
    pub jwt_issuers: Vec<rampart_identity::JwtIssuerConfig>,
    /// Where audit records go: `file` (under `<data_dir>/audit/`), `stdout`
    /// or `both`.
    pub audit_sink: AuditSink,
    /// A signed checkpoint every this many records...
    pub audit_checkpoint_every: u64,
    /// ...or this often, whichever comes first.
    pub audit_checkpoint_interval_ms: u64,
    /// Audit files rotate at this size.
    pub audit_max_file_bytes: u64,
    /// Operations whose audit is mandatory (authentication, admin, secrets)
    /// fail with 503 if their record is not durable within this bound.
    pub audit_durable_timeout_ms: u64,
    /// One summary record per connection for data-plane work (publishes,
    /// subscriptions), rather than one per message.
    pub audit_data_plane: bool,
    /// Turns the audit log off. Dangerous: nothing records who did what.
    pub dangerous_disable_audit: bool,
    /// File with the local master key (versions of 32 random bytes, 0600);
    /// `RAMPART_MASTER_KEY` (base64) takes precedence. `--dev` uses
    /// `<data_dir>/master.key`, creating it.
    pub master_key_path: Option<PathBuf>,
    /// `local` (the default: `master_key_path` / `RAMPART_MASTER_KEY`) or
    /// `vault-transit` (a Vault/OpenBao transit key wraps tenant keys; the
    /// token comes from `RAMPART_VAULT_TRANSIT_TOKEN` or
    /// `vault_transit_token_path`, never from this file).
    pub master_key_provider: MasterKeyKind,
    /// `https://host:port` of the transit server.
    pub vault_transit_address: Option<String>,
    /// The transit key (created beforehand with `derived: true`).
    pub vault_transit_key: String,
    pub vault_transit_mount: String,
    /// CA bundle trusted for the transit server; default the system one.
    pub vault_transit_ca_cert_path: Option<PathBuf>,
    /// File holding the transit token (0600).
    pub vault_transit_token_path: Option<PathBuf>,
    /// Where secrets live: `local` (the default: sealed in this server's
    /// store) or `external` (every KV v2 operation forwarded to a KV v2
    /// mount of an external Vault/OpenBao, under `<tenant>/`; its token
    /// comes from `RAMPART_VAULT_EXTERNAL_TOKEN` or
    /// `vault_external_token_path`, never from this file). AppRoles and
    /// tokens are Rampart's own either way.
    pub vault_backend: VaultBackend,
    /// `https://host:port` of the external vault.
    pub vault_external_address: Option<String>,
    /// The KV v2 mount on the external vault.
    pub vault_external_mount: String,
    /// CA bundle trusted for the external vault; default the system one.
    pub vault_external_ca_cert_path: Option<PathBuf>,
    /// File holding the external vault's token (0600).
    pub vault_external_token_path: Option<PathBuf>,
    /// Rotate each tenant's keys (and re-seal its records) when they are
    /// this old; 0 turns scheduled rotation off (seed 000: 90 days).
    pub key_rotation_days: u64,
    /// Sync policy of durable streams created without one: `on_commit`
    /// (fsync before the acknowledgement, shared by concurrent publishers),
    /// `interval:MS` or `none`.
    pub durable_sync: String,
    /// Durable stream logs start a new segment at this size.
    pub stream_segment_bytes: u64,
    /// Defaults of durable consumers created without their own.
    pub consumer_max_in_flight: u32,
    pub consumer_ack_wait_ms: u64,
    /// How often consumer positions are saved and retention is applied.
    pub stream_maintenance_interval_ms: u64,
    /// Durable streams created while this is set store their payloads in
    /// clear (the choice is kept per stream). Dangerous: for measuring what
    /// sealing costs, never for data anyone cares about.
    pub dangerous_unsealed_streams: bool,
    /// Limits every tenant gets unless overridden through the admin API
    /// (`PUT /v1/tenants/T/limits`). Shared by all the tenant's principals.
    pub tenant_limits: rampart_limits::LimitSpec,
    /// Limits every principal gets within its tenant unless overridden
    /// (`PUT /v1/tenants/T/principals/P/limits`).
    pub principal_limits: rampart_limits::LimitSpec,
    /// Connections open at once, all listeners together.
    pub max_connections: u64,
    /// Connections open at once from one IP address.
    pub max_connections_per_ip: u64,
    /// Connections from one IP address not authenticated yet.
    pub max_unauthenticated_per_ip: u64,
    /// New connections per second from one IP address (burst: twice that).
    pub new_connections_per_ip_per_sec: u64,
    /// Failed authentications from one IP, or for one key id, before a
    /// lockout; the lockout starts at `auth_lockout_base_ms` and doubles
    /// each time, up to `auth_lockout_max_ms`.
    pub auth_lockout_threshold: u32,
    pub auth_lockout_base_ms: u64,
    pub auth_lockout_max_ms: u64,
    /// A wire connection that sends nothing for this long and holds no
    /// subscription is closed.
    pub idle_timeout_ms: u64,
    /// An HTTPS request's headers must arrive within this.
    pub http_header_timeout_ms: u64,
    /// `SIGTERM` (or Ctrl-C) stops the server within this: connections
    /// drain, stream logs and the audit log are flushed, then it exits
    /// whatever is left. Default 30.
    pub shutdown_timeout_secs: u64,
    /// The first part of a stop: `/readyz` answers 503 while everything
    /// else goes on serving (new connections included), so that load
    /// balancers and Kubernetes endpoints stop sending traffic before the
    /// listeners close. Taken out of `shutdown_timeout_secs`, of which it
    /// gets half at most; a second `SIGTERM` or `Ctrl-C` ends it early.
    /// 0 stops at once. Default 5.
    pub shutdown_drain_secs: u64,
    /// Above this many QUIC handshakes per second, new QUIC clients must
    /// prove their address first (a stateless retry). 0 (the default) =
    /// always: below the threshold the per-IP limits would count an
    /// unproven (spoofable) source address, so a spoofer could use up a
    /// victim's connection slots on every listener.
    pub quic_retry_above_per_sec: u64,
}

/// Which master key provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MasterKeyKind {
    #[default]
    Local,
    VaultTransit,
}

/// Where secrets are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum VaultBackend {
    /// Sealed with the tenant's keys in this server's store.
    #[default]
    Local,
    /// Forwarded to an external Vault or OpenBao KV v2 mount.
    External,
}

/// The variable holding the external vault's token (the other way is
/// `vault_external_token_path`; never the configuration file).
pub const VAULT_EXTERNAL_TOKEN_ENV: &str = "RAMPART_VAULT_EXTERNAL_TOKEN";

/// Audit sink as written in config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditSink {
    #[default]
    File,
    Stdout,
    Both,
}

impl Default for Config {
    fn default() -> Self {
        let q = QueueLimits::default();
        let c = CacheLimits::default();
        Self {
            data_dir: PathBuf::from("rampart-data"),
            quic_bind: "127.0.0.1:7400".into(),
            tcp_bind: "127.0.0.1:7401".into(),
            tls_cert_path: None,
            tls_key_path: None,
            tls_ca_cert_path: None,
            tls_client_auth: ClientAuth::None,
            tls_cipher_suites: Vec::new(),
            tls_reload_interval_secs: 10,
            allowed_api_keys: Vec::new(),
            api_key_pepper_path: None,
            tenants: Vec::new(),
            max_frame_size: DEFAULT_MAX_FRAME,
            auth_timeout_ms: 5_000,
            max_auth_failures: 3,
            auto_create_streams: true,
            streams: Vec::new(),
            subscriber_queue_messages: q.max_messages,
            subscriber_queue_bytes: q.max_bytes,
            slow_consumer_policy: SlowConsumer::Block,
            cache_max_bytes_per_tenant: c.max_bytes_per_tenant,
            cache_max_value_bytes: c.max_value_bytes,
            http_bind: "127.0.0.1:7402".into(),
            metrics_bind: String::new(),
            metrics_token_path: None,
            cors_allowed_origins: Vec::new(),
            operator_tenant: String::new(),
            token_ttl_secs: 600,
            token_max_ttl_secs: 3600,
            reauth_notice_ms: 60_000,
            reauth_grace_ms: 10_000,
            mtls_identities: Vec::new(),
            mtls_allowed_common_names: Vec::new(),
            jwt_issuers: Vec::new(),
            audit_sink: AuditSink::File,
            audit_checkpoint_every: 1000,
            audit_checkpoint_interval_ms: 5_000,
            audit_max_file_bytes: 64 * 1024 * 1024,
            audit_durable_timeout_ms: 100,
            audit_data_plane: true,
            dangerous_disable_audit: false,
            master_key_path: None,
            master_key_provider: MasterKeyKind::Local,
            vault_transit_address: None,
            vault_transit_key: "rampart".into(),
            vault_transit_mount: "transit".into(),
            vault_transit_ca_cert_path: None,
            vault_transit_token_path: None,
            vault_backend: VaultBackend::Local,
            vault_external_address: None,
            vault_external_mount: "secret".into(),
            vault_external_ca_cert_path: None,
            vault_external_token_path: None,
            key_rotation_days: 90,
            durable_sync: "on_commit".into(),
            stream_segment_bytes: 64 << 20,
            consumer_max_in_flight: 1000,
            consumer_ack_wait_ms: 30_000,
            stream_maintenance_interval_ms: 1000,
            dangerous_unsealed_streams: false,
            tenant_limits: rampart_limits::LimitSpec {
                max_connections: Some(10_000),
                max_subscriptions: Some(100_000),
                max_streams: Some(10_000),
                ..Default::default()
            },
            principal_limits: rampart_limits::LimitSpec {
                max_subscriptions: Some(10_000),
                ..Default::default()
            },
            max_connections: 50_000,
            max_connections_per_ip: 1_000,
            max_unauthenticated_per_ip: 64,
            new_connections_per_ip_per_sec: 200,
            auth_lockout_threshold: 10,
            auth_lockout_base_ms: 1_000,
            auth_lockout_max_ms: 300_000,
            idle_timeout_ms: 300_000,
            http_header_timeout_ms: 10_000,
            shutdown_timeout_secs: 30,
            shutdown_drain_secs: 5,
            quic_retry_above_per_sec: 0,
        }
    }
}

/// A configuration problem, naming the key at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    /// A key that is not in [`KEYS`], with the nearest one that is.
    #[error("config file {path}: unknown key `{key}`{}", did_you_mean(*.suggestion))]
    UnknownKey {
        path: String,
        key: String,
        suggestion: Option<&'static str>,
    },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

#[derive(Clone, Copy)]
enum Kind {
    Str,
    Int,
    Bool,
    List,
    /// Structured values (lists of tables) come from the environment as JSON.
    Json,
}

/// Every key and its type, for environment overrides.
const KEYS: &[(&str, Kind)] = &[
    ("data_dir", Kind::Str),
    ("quic_bind", Kind::Str),
    ("tcp_bind", Kind::Str),
    ("tls_cert_path", Kind::Str),
    ("tls_key_path", Kind::Str),
    ("tls_ca_cert_path", Kind::Str),
    ("tls_client_auth", Kind::Str),
    ("tls_cipher_suites", Kind::List),
    ("tls_reload_interval_secs", Kind::Int),
    ("allowed_api_keys", Kind::List),
    ("api_key_pepper_path", Kind::Str),
    ("tenants", Kind::List),
    ("max_frame_size", Kind::Int),
    ("auth_timeout_ms", Kind::Int),
    ("max_auth_failures", Kind::Int),
    ("auto_create_streams", Kind::Bool),
    ("streams", Kind::List),
    ("subscriber_queue_messages", Kind::Int),
    ("subscriber_queue_bytes", Kind::Int),
    ("slow_consumer_policy", Kind::Str),
    ("cache_max_bytes_per_tenant", Kind::Int),
    ("cache_max_value_bytes", Kind::Int),
    ("http_bind", Kind::Str),
    ("metrics_bind", Kind::Str),
    ("metrics_token_path", Kind::Str),
    ("cors_allowed_origins", Kind::List),
    ("operator_tenant", Kind::Str),
    ("token_ttl_secs", Kind::Int),
    ("token_max_ttl_secs", Kind::Int),
    ("reauth_notice_ms", Kind::Int),
    ("reauth_grace_ms", Kind::Int),
    ("mtls_identities", Kind::Json),
    ("mtls_allowed_common_names", Kind::List),
    ("jwt_issuers", Kind::Json),
    ("audit_sink", Kind::Str),
    ("audit_checkpoint_every", Kind::Int),
    ("audit_checkpoint_interval_ms", Kind::Int),
    ("audit_max_file_bytes", Kind::Int),
    ("audit_durable_timeout_ms", Kind::Int),
    ("audit_data_plane", Kind::Bool),
    ("dangerous_disable_audit", Kind::Bool),
    ("master_key_path", Kind::Str),
    ("master_key_provider", Kind::Str),
    ("vault_transit_address", Kind::Str),
    ("vault_transit_key", Kind::Str),
    ("vault_transit_mount", Kind::Str),
    ("vault_transit_ca_cert_path", Kind::Str),
    ("vault_transit_token_path", Kind::Str),
    ("vault_backend", Kind::Str),
    ("vault_external_address", Kind::Str),
    ("vault_external_mount", Kind::Str),
    ("vault_external_ca_cert_path", Kind::Str),
    ("vault_external_token_path", Kind::Str),
    ("key_rotation_days", Kind::Int),
    ("durable_sync", Kind::Str),
    ("stream_segment_bytes", Kind::Int),
    ("consumer_max_in_flight", Kind::Int),
    ("consumer_ack_wait_ms", Kind::Int),
    ("stream_maintenance_interval_ms", Kind::Int),
    ("dangerous_unsealed_streams", Kind::Bool),
    ("tenant_limits", Kind::Json),
    ("principal_limits", Kind::Json),
    ("max_connections", Kind::Int),
    ("max_connections_per_ip", Kind::Int),
    ("max_unauthenticated_per_ip", Kind::Int),
    ("new_connections_per_ip_per_sec", Kind::Int),
    ("auth_lockout_threshold", Kind::Int),
    ("auth_lockout_base_ms", Kind::Int),
    ("auth_lockout_max_ms", Kind::Int),
    ("idle_timeout_ms", Kind::Int),
    ("http_header_timeout_ms", Kind::Int),
    ("shutdown_timeout_secs", Kind::Int),
    ("shutdown_drain_secs", Kind::Int),
    ("quic_retry_above_per_sec", Kind::Int),
];

fn did_you_mean(suggestion: Option<&str>) -> String {
    suggestion
        .map(|k| format!("; did you mean `{k}`?"))
        .unwrap_or_default()
}

/// The key of `known` that `unknown` most likely meant: the shortest key
/// it begins (when it is at least half of it: `max_frame` for
/// `max_frame_size`), else the nearest by edit distance if at most a third
/// of its length away (two edits for short keys). Ties go to the first.
fn nearest_of(
    unknown: &str,
    known: impl Iterator<Item = &'static str> + Clone,
) -> Option<&'static str> {
    let unknown = unknown.to_ascii_lowercase();
    let cut_short = known
        .clone()
        .filter(|k| k.starts_with(unknown.as_str()) && unknown.len() * 2 >= k.len())
        .min_by_key(|k| k.len());
    if cut_short.is_some() {
        return cut_short;
    }
    let most = (unknown.chars().count() / 3).max(2);
    known
        .map(|k| (levenshtein(&unknown, k), k))
        .filter(|(d, _)| *d <= most)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

// === keys of nested tables ===

/// The keys a table of the configuration may hold, and for those holding a
/// table or an array of tables, the keys of that.
#[derive(Clone, Copy)]
struct Shape {
    keys: fn() -> Vec<&'static str>,
    nested: fn(&str) -> Option<Shape>,
}

/// The top level: [`KEYS`], and the tables under them.
const TOP: Shape = Shape {
    keys: || KEYS.iter().map(|(k, _)| *k).collect(),
    nested: nested_shape,
};

/// The tables under top-level keys. Their keys come from the types' own
/// serde field lists, so they cannot drift from what is accepted; a test
/// checks that every structured ([`Kind::Json`]) key is here.
fn nested_shape(key: &str) -> Option<Shape> {
    fn leaf<T: for<'de> Deserialize<'de>>() -> Shape {
        Shape {
            keys: fields_of::<T>,
            nested: |_| None,
        }
    }
    match key {
        "jwt_issuers" => Some(leaf::<rampart_identity::JwtIssuerConfig>()),
        "mtls_identities" => Some(leaf::<crate::auth::MtlsIdentity>()),
        "tenant_limits" | "principal_limits" => Some(leaf::<rampart_limits::LimitSpec>()),
        _ => None,
    }
}

/// The field names serde's derive gives `T` (a struct), found by asking
/// `T` to deserialize itself from a deserializer that only notes them.
/// Empty for a type that is not a plain struct.
fn fields_of<T: for<'de> Deserialize<'de>>() -> Vec<&'static str> {
    use serde::de::{self, Visitor};

    struct Probe<'a>(&'a mut &'static [&'static str]);

    impl<'de> de::Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("fields noted"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut fields));
    fields.to_vec()
}

/// The first key in `table` (at `path`, `""` for the top) that `shape`
/// does not know, at any depth, as (its path, the nearest known key).
/// Values of the wrong type are left to serde, which names them.
fn unknown_key(
    table: &toml::Table,
    path: &str,
    shape: Shape,
) -> Option<(String, Option<&'static str>)> {
    let keys = (shape.keys)();
    let at = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    for (key, value) in table {
        if !keys.contains(&key.as_str()) {
            return Some((at(key), nearest_of(key, keys.iter().copied())));
        }
        if let Some(found) =
            (shape.nested)(key).and_then(|inner| unknown_in(value, &at(key), inner))
        {
            return Some(found);
        }
    }
    None
}

/// [`unknown_key`] for the value at `path`: a table of `shape`, or an
/// array of them.
fn unknown_in(
    value: &toml::Value,
    path: &str,
    shape: Shape,
) -> Option<(String, Option<&'static str>)> {
    match value {
        toml::Value::Table(t) => unknown_key(t, path, shape),
        toml::Value::Array(items) => items.iter().enumerate().find_map(|(i, v)| match v {
            toml::Value::Table(t) => unknown_key(t, &format!("{path}[{i}]"), shape),
            _ => None,
        }),
        _ => None,
    }
}

/// Edits (insertions, deletions, substitutions of a character) that turn
/// `a` into `b`.
fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    // `row[j]`: distance between the prefix of `a` read so far and `b[..j]`.
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// Reads a YAML configuration into the TOML the rest of loading expects.
fn yaml_to_toml(text: &str) -> Result<String, String> {
    let v: serde_json::Value = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    match json_to_toml(v) {
        Some(toml::Value::Table(t)) => toml::to_string(&t).map_err(|e| e.to_string()),
        None => Ok(String::new()),
        Some(_) => Err("the top level must be a mapping of keys".into()),
    }
}

fn json_to_toml(v: serde_json::Value) -> Option<toml::Value> {
    Some(match v {
        serde_json::Value::Null => return None,
        serde_json::Value::Bool(b) => toml::Value::Boolean(b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            None => toml::Value::Float(n.as_f64()?),
        },
        serde_json::Value::String(s) => toml::Value::String(s),
        serde_json::Value::Array(a) => {
            toml::Value::Array(a.into_iter().filter_map(json_to_toml).collect())
        }
        serde_json::Value::Object(o) => toml::Value::Table(
            o.into_iter()
                .filter_map(|(k, v)| json_to_toml(v).map(|v| (k, v)))
                .collect(),
        ),
    })
}

/// `https://host[:port]`, with no credentials, path or query.
fn check_https_address(address: &str) -> Result<(), String> {
    let uri: http::Uri = address
        .parse()
        .map_err(|_| format!("`{address}` is not a URL"))?;
    if uri.scheme_str() != Some("https") {
        return Err("must be an https:// URL".into());
    }
    match uri.authority() {
        None => return Err("has no host".into()),
        Some(a) if a.as_str().contains('@') => return Err("must not carry credentials".into()),
        Some(_) => {}
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err("must not have a path or query".into());
    }
    Ok(())
}

/// A mount path: `/`-separated segments of `[A-Za-z0-9_.-]`, none `.` or
/// `..`.
fn check_mount(mount: &str) -> Result<(), String> {
    let segment_ok = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    };
    if mount.trim_matches('/').split('/').all(segment_ok) {
        Ok(())
    } else {
        Err(format!("`{mount}` must be made of [A-Za-z0-9_.-] segments"))
    }
}

impl Config {
    /// Reads `path` (if any), applies `RAMPART_<KEY>` overrides from `env`,
    /// and validates the result.
    pub fn load(
        path: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.display().to_string(),
                    source,
                })?;
                let origin = p.display().to_string();
                let yaml = p.extension().is_some_and(|e| {
                    e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml")
                });
                if yaml {
                    let toml_text = yaml_to_toml(&text).map_err(|message| ConfigError::Parse {
                        path: origin.clone(),
                        message,
                    })?;
                    Self::parse(&toml_text, &origin, env)
                } else {
                    Self::parse(&text, &origin, env)
                }
            }
            None => Self::parse("", "(defaults)", env),
        }
    }

    /// Parses configuration text (TOML) named `origin` in errors, then
    /// applies `RAMPART_<KEY>` overrides and validates.
    pub fn parse(
        text: &str,
        origin: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut table = text
            .parse::<toml::Table>()
            .map_err(|e| ConfigError::Parse {
                path: origin.to_string(),
                message: e.message().to_string(),
            })?;
        // Before serde, whose message would list every key (and not say
        // where a nested one is): the path and the nearest key are more use.
        if let Some((key, suggestion)) = unknown_key(&table, "", TOP) {
            return Err(ConfigError::UnknownKey {
                path: origin.to_string(),
                key,
                suggestion,
            });
        }
        for (key, kind) in KEYS {
            let var = format!("RAMPART_{}", key.to_ascii_uppercase());
            let Some(raw) = env(&var) else { continue };
            let bad = |message: String| ConfigError::Env {
                var: var.clone(),
                message,
            };
            let value = match kind {
                Kind::Str => toml::Value::String(raw),
                Kind::Int => toml::Value::Integer(
                    raw.trim()
                        .parse::<i64>()
                        .map_err(|_| bad(format!("`{raw}` is not a whole number")))?,
                ),
                Kind::Bool => toml::Value::Boolean(match raw.trim() {
                    "true" | "1" | "yes" => true,
                    "false" | "0" | "no" => false,
                    _ => return Err(bad(format!("`{raw}` is not true or false"))),
                }),
                Kind::Json => {
                    let v = serde_json::from_str::<serde_json::Value>(&raw)
                        .ok()
                        .and_then(json_to_toml)
                        .ok_or_else(|| bad("not valid JSON".into()))?;
                    // The same check as for the file.
                    let unknown = nested_shape(key).and_then(|shape| unknown_in(&v, key, shape));
                    if let Some((path, suggestion)) = unknown {
                        return Err(bad(format!(
                            "unknown key `{path}`{}",
                            did_you_mean(suggestion)
                        )));
                    }
                    v
                }
                Kind::List => toml::Value::Array(
                    raw.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| toml::Value::String(s.to_string()))
                        .collect(),
                ),
            };
            table.insert((*key).to_string(), value);
        }
        let config: Config =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    path: origin.to_string(),
                    message: e.message().to_string(),
                })?;
        config.validate()?;
        // The token is not part of the configuration, but a server that
        // would fail at start for want of one is refused at load already.
        let has_token = env(VAULT_EXTERNAL_TOKEN_ENV).is_some_and(|t| !t.is_empty());
        if config.vault_backend == VaultBackend::External
            && config.vault_external_token_path.is_none()
            && !has_token
        {
            return Err(ConfigError::Invalid {
                key: "vault_external_token_path",
                message: format!(
                    "vault_backend = \"external\" needs a token: set {VAULT_EXTERNAL_TOKEN_ENV} or vault_external_token_path"
                ),
            });
        }
        Ok(config)
    }

    /// Checks values that the types alone do not.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, message: String| ConfigError::Invalid { key, message };
        for (key, spec) in [
            ("tenant_limits", &self.tenant_limits),
            ("principal_limits", &self.principal_limits),
        ] {
            spec.validate().map_err(|m| invalid(key, m))?;
        }
        for (key, v) in [
            ("max_connections", self.max_connections),
            ("max_connections_per_ip", self.max_connections_per_ip),
            (
                "max_unauthenticated_per_ip",
                self.max_unauthenticated_per_ip,
            ),
            (
                "new_connections_per_ip_per_sec",
                self.new_connections_per_ip_per_sec,
            ),
            (
                "auth_lockout_threshold",
                u64::from(self.auth_lockout_threshold),
            ),
            ("auth_lockout_base_ms", self.auth_lockout_base_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("http_header_timeout_ms", self.http_header_timeout_ms),
            ("shutdown_timeout_secs", self.shutdown_timeout_secs),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1".into()));
            }
        }
        if self.auth_lockout_max_ms < self.auth_lockout_base_ms {
            return Err(invalid(
                "auth_lockout_max_ms",
                "must be at least auth_lockout_base_ms".into(),
            ));
        }
        if self.quic_bind.is_empty() && self.tcp_bind.is_empty() {
            return Err(invalid(
                "quic_bind",
                "quic_bind and tcp_bind are both empty: nothing to listen on".into(),
            ));
        }
        for (key, v) in [("quic_bind", &self.quic_bind), ("tcp_bind", &self.tcp_bind)] {
            if !v.is_empty() && v.parse::<SocketAddr>().is_err() {
                return Err(invalid(
                    key,
                    format!("`{v}` is not an address like 127.0.0.1:7400"),
                ));
            }
        }
        if !(PREAUTH_MAX_FRAME..=64 * 1024 * 1024).contains(&self.max_frame_size) {
            return Err(invalid(
                "max_frame_size",
                format!("must be between {PREAUTH_MAX_FRAME} and 67108864 bytes"),
            ));
        }
        if self.auth_timeout_ms == 0 || self.auth_timeout_ms > 120_000 {
            return Err(invalid("auth_timeout_ms", "must be 1..=120000".into()));
        }
        if self.max_auth_failures == 0 {
            return Err(invalid("max_auth_failures", "must be at least 1".into()));
        }
        crate::streams::parse_sync(&self.durable_sync).map_err(|m| invalid("durable_sync", m))?;
        if self.stream_segment_bytes < 4096 {
            return Err(invalid(
                "stream_segment_bytes",
                "must be at least 4096".into(),
            ));
        }
        if self.consumer_max_in_flight == 0 {
            return Err(invalid(
                "consumer_max_in_flight",
                "must be at least 1".into(),
            ));
        }
        if self.consumer_ack_wait_ms == 0 {
            return Err(invalid("consumer_ack_wait_ms", "must be at least 1".into()));
        }
        if self.stream_maintenance_interval_ms == 0 {
            return Err(invalid(
                "stream_maintenance_interval_ms",
                "must be at least 1".into(),
            ));
        }
        if self.subscriber_queue_messages == 0 || self.subscriber_queue_bytes == 0 {
            return Err(invalid(
                "subscriber_queue_messages",
                "subscriber queue bounds must be positive".into(),
            ));
        }
        let suites = crate::tls::cipher_suites(&self.tls_cipher_suites)
            .map_err(|m| invalid("tls_cipher_suites", m))?;
        if !self.quic_bind.is_empty()
            && !suites.is_empty()
            && !suites.contains(&crate::tls::QUIC_INITIAL_SUITE)
        {
            return Err(invalid(
                "tls_cipher_suites",
                "QUIC (quic_bind) needs TLS_AES_128_GCM_SHA256 in the list: it protects QUIC's first packets whatever suite is agreed (RFC 9001, section 5); list it last to prefer the others, or leave quic_bind empty".into(),
            ));
        }
        if self.tls_client_auth != ClientAuth::None && self.tls_ca_cert_path.is_none() {
            return Err(invalid(
                "tls_client_auth",
                "request/require needs tls_ca_cert_path to verify client certificates".into(),
            ));
        }
        if self.tls_cert_path.is_some() != self.tls_key_path.is_some() {
            return Err(invalid(
                "tls_key_path",
                "tls_cert_path and tls_key_path go together".into(),
            ));
        }
        for t in &self.tenants {
            TenantId::parse(t).map_err(|e| invalid("tenants", format!("`{t}`: {e}")))?;
        }
        if !self.metrics_bind.is_empty() {
            if self.metrics_bind.parse::<SocketAddr>().is_err() {
                return Err(invalid(
                    "metrics_bind",
                    format!(
                        "`{}` is not an address like 127.0.0.1:7403",
                        self.metrics_bind
                    ),
                ));
            }
            if self.metrics_token_path.is_none() && self.tls_client_auth != ClientAuth::Require {
                return Err(invalid(
                    "metrics_bind",
                    "needs `metrics_token_path` (a bearer token) or `tls_client_auth = \"require\"` (client certificates): metrics are never served to anyone who asks".into(),
                ));
            }
        }
        if !self.http_bind.is_empty() && self.http_bind.parse::<SocketAddr>().is_err() {
            return Err(invalid(
                "http_bind",
                format!("`{}` is not an address like 127.0.0.1:7402", self.http_bind),
            ));
        }
        if !self.operator_tenant.is_empty() {
            TenantId::parse(&self.operator_tenant)
                .map_err(|e| invalid("operator_tenant", e.to_string()))?;
        }
        if self.token_ttl_secs == 0 || self.token_ttl_secs > self.token_max_ttl_secs {
            return Err(invalid(
                "token_ttl_secs",
                "must be positive and at most token_max_ttl_secs".into(),
            ));
        }
        if self.token_max_ttl_secs > 30 * 24 * 3600 {
            return Err(invalid("token_max_ttl_secs", "at most 30 days".into()));
        }
        if self.audit_checkpoint_every == 0 || self.audit_checkpoint_interval_ms == 0 {
            return Err(invalid(
                "audit_checkpoint_every",
                "checkpoint count and interval must be positive".into(),
            ));
        }
        if !(1..=60_000).contains(&self.audit_durable_timeout_ms) {
            return Err(invalid(
                "audit_durable_timeout_ms",
                "must be 1..=60000".into(),
            ));
        }
        if self.audit_max_file_bytes < 64 * 1024 {
            return Err(invalid("audit_max_file_bytes", "at least 65536".into()));
        }
        if self.master_key_provider == MasterKeyKind::VaultTransit
            && self.vault_transit_address.is_none()
        {
            return Err(invalid(
                "vault_transit_address",
                "master_key_provider = \"vault-transit\" needs the transit server's address".into(),
            ));
        }
        if self.vault_backend == VaultBackend::External {
            let address = self.vault_external_address.as_deref().ok_or_else(|| {
                invalid(
                    "vault_external_address",
                    "vault_backend = \"external\" needs the external vault's https:// address"
                        .into(),
                )
            })?;
            check_https_address(address).map_err(|m| invalid("vault_external_address", m))?;
            check_mount(&self.vault_external_mount)
                .map_err(|m| invalid("vault_external_mount", m))?;
        }
        for (i, m) in self.mtls_identities.iter().enumerate() {
            TenantId::parse(&m.tenant)
                .map_err(|e| invalid("mtls_identities", format!("rule {i}: {e}")))?;
            if m.san_uri_prefix.is_none() && m.common_names.is_empty() {
                return Err(invalid(
                    "mtls_identities",
                    format!("rule {i} matches nothing: set san_uri_prefix or common_names"),
                ));
            }
        }
        for s in &self.streams {
            s.parse::<StreamPath>()
                .map_err(|e| invalid("streams", format!("`{s}`: {e}")))?;
        }
        Ok(())
    }

    /// The connection admission settings.
    pub fn admission(&self) -> rampart_limits::AdmissionSpec {
        rampart_limits::AdmissionSpec {
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            max_unauthenticated_per_ip: self.max_unauthenticated_per_ip,
            new_connections_per_ip_per_sec: self.new_connections_per_ip_per_sec,
            lockout_threshold: self.auth_lockout_threshold,
            lockout_base: Duration::from_millis(self.auth_lockout_base_ms),
            lockout_max: Duration::from_millis(self.auth_lockout_max_ms),
        }
    }

    /// How long a stop drains (see `shutdown_drain_secs`) when the whole
    /// stop may take `timeout`: half of it at most.
    pub fn shutdown_drain(&self, timeout: Duration) -> Duration {
        Duration::from_secs(self.shutdown_drain_secs).min(timeout / 2)
    }

    pub fn auth_timeout(&self) -> Duration {
        Duration::from_millis(self.auth_timeout_ms)
    }

    pub fn pepper_path(&self) -> PathBuf {
        self.api_key_pepper_path
            .clone()
            .unwrap_or_else(|| self.data_dir.join("api_key_pepper"))
    }

    pub(crate) fn audit(&self) -> rampart_audit::AuditConfig {
        let mut a = rampart_audit::AuditConfig::new(self.data_dir.join("audit"));
        a.sink = match self.audit_sink {
            AuditSink::File => rampart_audit::Sink::File,
            AuditSink::Stdout => rampart_audit::Sink::Stdout,
            AuditSink::Both => rampart_audit::Sink::Both,
        };
        a.checkpoint_every = self.audit_checkpoint_every;
        a.checkpoint_interval = Duration::from_millis(self.audit_checkpoint_interval_ms);
        a.max_file_bytes = self.audit_max_file_bytes;
        a.durable_timeout = Duration::from_millis(self.audit_durable_timeout_ms);
        // 16K queued records (about 4 MiB, allocated up front) absorb bursts;
        // beyond that best-effort records are dropped and counted.
        a.queue = 16 * 1024;
        a
    }

    pub(crate) fn broker(&self) -> BrokerConfig {
        let mut b = BrokerConfig::default();
        b.auto_create_streams = self.auto_create_streams;
        b.queue = QueueLimits {
            max_messages: self.subscriber_queue_messages,
            max_bytes: self.subscriber_queue_bytes,
            policy: match self.slow_consumer_policy {
                SlowConsumer::Block => SlowConsumerPolicy::Block,
                SlowConsumer::DropOldest => SlowConsumerPolicy::DropOldest,
            },
        };
        b.cache = CacheLimits {
            max_bytes_per_tenant: self.cache_max_bytes_per_tenant,
            max_value_bytes: self.cache_max_value_bytes,
        };
        b
    }
}

// === printing and checking a configuration (`rampart config check`) ===

/// What a redacted value is printed as.
pub const REDACTED: &str = "<redacted>";

/// Keys whose values are credentials: [`Config::redacted_toml`] prints each
/// of their values as [`REDACTED`]. The rule, decided key by key over
/// [`KEYS`]:
///
/// - Redacted: a value that is a credential or lets one be confirmed.
///   That is `allowed_api_keys`: HMAC hashes of API keys, which admit a key
///   and, with the pepper, let guesses be tested offline.
/// - Printed: a path to a secret (`master_key_path`, `tls_key_path`,
///   `api_key_pepper_path`, `vault_transit_token_path`,
///   `vault_external_token_path`, a JWT issuer's
///   `dangerous_allow_hmac_secret_path`): it says where the secret is, and
///   the file's permissions guard it. A name (`vault_transit_key` names
///   the key on the transit server, it is no key material), a provider
///   kind and a lifetime are printed too.
/// - Never printed because never configuration: the master key
///   (`RAMPART_MASTER_KEY`), plaintext API keys (`RAMPART_API_KEYS`) and
///   vault tokens (`RAMPART_VAULT_TRANSIT_TOKEN`,
///   [`VAULT_EXTERNAL_TOKEN_ENV`]) are read from the environment by the
///   server only, not by [`Config::load`].
/// - In every other string, nested ones included, the user-info part of a
///   URL (`https://user:password@host`) is redacted.
///
/// A test fails when a key whose name suggests a credential (`key`,
/// `token`, `secret`, `password`, `pepper`, `credential`) is in neither this
/// list nor `NOT_SECRET_KEYS` (beside it), so a new key is decided too.
pub const SECRET_KEYS: &[&str] = &["allowed_api_keys"];

/// Keys whose names suggest a credential but whose values are paths, names
/// or durations; see [`SECRET_KEYS`]. Only a test reads it.
#[cfg(test)]
const NOT_SECRET_KEYS: &[&str] = &[
    "tls_key_path",
    "api_key_pepper_path",
    "token_ttl_secs",
    "token_max_ttl_secs",
    "master_key_path",
    "master_key_provider",
    "vault_transit_key",
    "vault_transit_token_path",
    "vault_external_token_path",
    "key_rotation_days",
    "metrics_token_path",
];

/// Every value of `v` (each element of a list) as [`REDACTED`].
fn redact(v: &mut toml::Value) {
    match v {
        toml::Value::Array(items) => items.iter_mut().for_each(redact),
        other => *other = toml::Value::String(REDACTED.into()),
    }
}

/// The user-info of URLs in every string of `v` as [`REDACTED`].
fn redact_userinfo(v: &mut toml::Value) {
    match v {
        toml::Value::String(s) => {
            if let Some(clean) = without_userinfo(s) {
                *s = clean;
            }
        }
        toml::Value::Array(items) => items.iter_mut().for_each(redact_userinfo),
        toml::Value::Table(t) => t.iter_mut().for_each(|(_, v)| redact_userinfo(v)),
        _ => {}
    }
}

/// `scheme://<redacted>@host...` when `s` is a URL with user-info.
fn without_userinfo(s: &str) -> Option<String> {
    let (scheme, rest) = s.split_once("://")?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let at = rest[..authority_end].rfind('@')?;
    Some(format!("{scheme}://{REDACTED}@{}", &rest[at + 1..]))
}

impl Config {
    /// The configuration as TOML: every key with the value in force
    /// (defaults included; optional keys that are unset left out), and
    /// credentials redacted as [`SECRET_KEYS`] says.
    pub fn redacted_toml(&self) -> Result<String, ConfigError> {
        let internal = |message: String| ConfigError::Parse {
            path: "(effective configuration)".into(),
            message,
        };
        let mut table = toml::Table::try_from(self).map_err(|e| internal(e.to_string()))?;
        for (key, value) in table.iter_mut() {
            if SECRET_KEYS.contains(&key.as_str()) {
                redact(value);
            } else {
                redact_userinfo(value);
            }
        }
        toml::to_string(&table).map_err(|e| internal(e.to_string()))
    }

    /// What would stop [`crate::Server::start`] outside `--dev` because of
    /// a file: a certificate or master key that is not configured, and
    /// every file named by a key that the server reads at start but never
    /// creates, when it cannot be found. Each message names its key. Looks
    /// at file metadata only and never reads a file, so no secret is
    /// loaded; `env` is read as [`Config::load`] reads it.
    pub fn missing_files(&self, env: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
        let set = |var: &str| env(var).is_some_and(|v| !v.is_empty());
        let mut out = Vec::new();
        let mut files: Vec<(String, PathBuf)> = Vec::new();
        let mut named = |key: &str, path: &Option<PathBuf>| {
            if let Some(p) = path {
                files.push((key.to_string(), p.clone()));
            }
        };
        if self.tls_cert_path.is_none() {
            out.push(
                "`tls_cert_path` is not set: the server starts only with --dev, which makes a certificate"
                    .to_string(),
            );
        }
        named("tls_cert_path", &self.tls_cert_path);
        named("tls_key_path", &self.tls_key_path);
        named("tls_ca_cert_path", &self.tls_ca_cert_path);
        match self.master_key_provider {
            MasterKeyKind::Local if set(rampart_keys::MASTER_KEY_ENV) => {}
            MasterKeyKind::Local if self.master_key_path.is_none() => out.push(format!(
                "no master key (`master_key_path` or {}): the server starts only with --dev, which makes one",
                rampart_keys::MASTER_KEY_ENV
            )),
            MasterKeyKind::Local => named("master_key_path", &self.master_key_path),
            MasterKeyKind::VaultTransit => {
                named("vault_transit_ca_cert_path", &self.vault_transit_ca_cert_path);
                if !set("RAMPART_VAULT_TRANSIT_TOKEN") {
                    named("vault_transit_token_path", &self.vault_transit_token_path);
                }
            }
        }
        if self.vault_backend == VaultBackend::External {
            named(
                "vault_external_ca_cert_path",
                &self.vault_external_ca_cert_path,
            );
            if !set(VAULT_EXTERNAL_TOKEN_ENV) {
                named("vault_external_token_path", &self.vault_external_token_path);
            }
        }
        for (i, j) in self.jwt_issuers.iter().enumerate() {
            named(&format!("jwt_issuers[{i}].jwks_path"), &j.jwks_path);
            named(
                &format!("jwt_issuers[{i}].jwks_ca_cert_path"),
                &j.jwks_ca_cert_path,
            );
            named(
                &format!("jwt_issuers[{i}].dangerous_allow_hmac_secret_path"),
                &j.dangerous_allow_hmac_secret_path,
            );
        }
        for (key, path) in files {
            if let Err(e) = std::fs::metadata(&path) {
                out.push(format!(
                    "`{key}`: {}: {e}; the server reads it at start",
                    path.display()
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn defaults_are_valid_and_loopback() {
        let c = Config::load(None, &env(&[])).unwrap();
        assert_eq!(c.quic_bind, "127.0.0.1:7400");
        assert_eq!(c.max_frame_size, 8 * 1024 * 1024);
        assert_eq!(c.auth_timeout_ms, 5000);
    }

    #[test]
    fn shutdown_timeout_defaults_to_30_and_is_never_0() {
        let c = Config::load(None, &env(&[])).unwrap();
        assert_eq!(c.shutdown_timeout_secs, 30);
        let c = Config::load(None, &env(&[("RAMPART_SHUTDOWN_TIMEOUT_SECS", "5")])).unwrap();
        assert_eq!(c.shutdown_timeout_secs, 5);
        let e = Config::load(None, &env(&[("RAMPART_SHUTDOWN_TIMEOUT_SECS", "0")])).unwrap_err();
        assert!(e.to_string().contains("shutdown_timeout_secs"), "{e}");
    }

    #[test]
    fn the_shutdown_drain_defaults_to_5_and_takes_half_of_the_timeout_at_most() {
        let c = Config::load(None, &env(&[])).unwrap();
        assert_eq!(c.shutdown_drain_secs, 5);
        assert_eq!(
            c.shutdown_drain(Duration::from_secs(30)),
            Duration::from_secs(5)
        );
        assert_eq!(
            c.shutdown_drain(Duration::from_secs(4)),
            Duration::from_secs(2)
        );
        let c = Config::load(None, &env(&[("RAMPART_SHUTDOWN_DRAIN_SECS", "0")])).unwrap();
        assert_eq!(c.shutdown_drain(Duration::from_secs(30)), Duration::ZERO);
        let c = Config::parse("shutdown_drain_secs = 12\n", "x.toml", &env(&[])).unwrap();
        assert_eq!(
            c.shutdown_drain(Duration::from_secs(30)),
            Duration::from_secs(12)
        );
    }

    #[test]
    fn environment_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rampart.toml");
        std::fs::write(
            &p,
            "tcp_bind = \"127.0.0.1:9000\"\nauth_timeout_ms = 100\ntenants = [\"a\"]\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&p),
            &env(&[
                ("RAMPART_TCP_BIND", "127.0.0.1:9001"),
                ("RAMPART_TENANTS", "acme, globex"),
                ("RAMPART_AUTO_CREATE_STREAMS", "false"),
            ]),
        )
        .unwrap();
        assert_eq!(c.tcp_bind, "127.0.0.1:9001");
        assert_eq!(c.auth_timeout_ms, 100);
        assert_eq!(c.tenants, vec!["acme", "globex"]);
        assert!(!c.auto_create_streams);
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::load(None, &env(&[("RAMPART_MAX_FRAME_SIZE", "lots")])).unwrap_err();
        assert!(e.to_string().contains("RAMPART_MAX_FRAME_SIZE"), "{e}");
        let e = Config::load(None, &env(&[("RAMPART_TCP_BIND", "nowhere")])).unwrap_err();
        assert!(e.to_string().contains("tcp_bind"), "{e}");
        let e = Config::load(None, &env(&[("RAMPART_TLS_CLIENT_AUTH", "require")])).unwrap_err();
        assert!(e.to_string().contains("tls_client_auth"), "{e}");
        let e = Config::load(None, &env(&[("RAMPART_STREAMS", "acme/Prod/x")])).unwrap_err();
        assert!(e.to_string().contains("streams"), "{e}");
    }

    #[test]
    fn cipher_suites_are_known_names_and_quic_keeps_its_initial_suite() {
        let suites = |v: &str| env(&[("RAMPART_TLS_CIPHER_SUITES", v)]);
        let c = Config::load(
            None,
            &suites("tls13_chacha20_poly1305_sha256, TLS_AES_128_GCM_SHA256"),
        )
        .unwrap();
        let got = crate::tls::cipher_suites(&c.tls_cipher_suites).unwrap();
        assert_eq!(
            got,
            [
                rustls::crypto::ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
                crate::tls::QUIC_INITIAL_SUITE
            ]
        );
        let e = Config::load(None, &suites("TLS_RSA_WITH_RC4_128_SHA")).unwrap_err();
        let e = e.to_string();
        assert!(e.contains("tls_cipher_suites"), "{e}");
        assert!(
            e.contains("TLS_AES_256_GCM_SHA384"),
            "names what is accepted: {e}"
        );
        let twice = "TLS_AES_256_GCM_SHA384,tls13_aes_256_gcm_sha384";
        let e = Config::load(None, &suites(twice)).unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
        // QUIC protects its first packets with AES-128-GCM.
        let e = Config::load(None, &suites("TLS_AES_256_GCM_SHA384")).unwrap_err();
        assert!(e.to_string().contains("QUIC"), "{e}");
        let tcp_only = env(&[
            ("RAMPART_TLS_CIPHER_SUITES", "TLS_AES_256_GCM_SHA384"),
            ("RAMPART_QUIC_BIND", ""),
        ]);
        Config::load(None, &tcp_only).unwrap();
    }

    #[test]
    fn external_vault_needs_address_and_token() {
        let external = [("RAMPART_VAULT_BACKEND", "external")];
        let e = Config::load(None, &env(&external)).unwrap_err();
        assert!(e.to_string().contains("vault_external_address"), "{e}");

        let addr = (
            "RAMPART_VAULT_EXTERNAL_ADDRESS",
            "https://vault.example:8200",
        );
        let e = Config::load(None, &env(&[external[0], addr])).unwrap_err();
        assert!(e.to_string().contains("vault_external_token_path"), "{e}");
        assert!(e.to_string().contains(VAULT_EXTERNAL_TOKEN_ENV), "{e}");

        let c = Config::load(
            None,
            &env(&[external[0], addr, (VAULT_EXTERNAL_TOKEN_ENV, "s.token")]),
        )
        .unwrap();
        assert_eq!(c.vault_backend, VaultBackend::External);
        assert_eq!(c.vault_external_mount, "secret");
        let c = Config::load(
            None,
            &env(&[
                external[0],
                addr,
                ("RAMPART_VAULT_EXTERNAL_TOKEN_PATH", "/run/secrets/vault"),
            ]),
        )
        .unwrap();
        assert!(c.vault_external_token_path.is_some());

        for (bad_addr, key) in [
            ("http://vault.example:8200", "vault_external_address"),
            ("https://vault.example:8200/v1", "vault_external_address"),
            ("https://u:p@vault.example", "vault_external_address"),
        ] {
            let e = Config::load(
                None,
                &env(&[
                    external[0],
                    ("RAMPART_VAULT_EXTERNAL_ADDRESS", bad_addr),
                    (VAULT_EXTERNAL_TOKEN_ENV, "t"),
                ]),
            )
            .unwrap_err();
            assert!(e.to_string().contains(key), "{bad_addr}: {e}");
        }
        let e = Config::load(
            None,
            &env(&[
                external[0],
                addr,
                (VAULT_EXTERNAL_TOKEN_ENV, "t"),
                ("RAMPART_VAULT_EXTERNAL_MOUNT", "kv/../sys"),
            ]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("vault_external_mount"), "{e}");
        // The token is never a key of the file.
        let e = Config::parse(
            "vault_external_token = \"s.token\"\n",
            "rampart.toml",
            &env(&[]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("vault_external_token"), "{e}");
        // Local (the default) needs none of it.
        let c = Config::load(None, &env(&[])).unwrap();
        assert_eq!(c.vault_backend, VaultBackend::Local);
    }

    #[test]
    fn yaml_is_accepted_too() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rampart.yaml");
        std::fs::write(
            &p,
            "tcp_bind: 127.0.0.1:9100\ntenants: [acme]\nauto_create_streams: false\nmtls_identities:\n  - tenant: acme\n    common_names: [w1]\n",
        )
        .unwrap();
        let c = Config::load(Some(&p), &env(&[("RAMPART_TENANTS", "globex")])).unwrap();
        assert_eq!(c.tcp_bind, "127.0.0.1:9100");
        assert_eq!(c.tenants, vec!["globex"]);
        assert!(!c.auto_create_streams);
        assert_eq!(c.mtls_identities[0].common_names, vec!["w1"]);
        std::fs::write(&p, "tcp_bnd: x\n").unwrap();
        assert!(Config::load(Some(&p), &env(&[]))
            .unwrap_err()
            .to_string()
            .contains("tcp_bnd"));
    }

    #[test]
    fn unknown_keys_in_the_file_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rampart.toml");
        std::fs::write(&p, "tcp_bnd = \"127.0.0.1:9000\"\n").unwrap();
        let e = Config::load(Some(&p), &env(&[])).unwrap_err();
        assert!(e.to_string().contains("tcp_bnd"), "{e}");
    }

    #[test]
    fn edit_distance() {
        assert_eq!(levenshtein("", ""), 0);
        assert_eq!(levenshtein("abc", ""), 3);
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(levenshtein("quic_bnd", "quic_bind"), 1);
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("tcp_bind", "tcp_bind"), 0);
        assert_eq!(levenshtein("ab", "ba"), 2);
    }

    #[test]
    fn unknown_keys_get_the_nearest_known_one() {
        for (typo, meant) in [
            ("quic_bnd", Some("quic_bind")),
            ("tcp_bnd", Some("tcp_bind")),
            ("data-dir", Some("data_dir")),
            ("QUIC_BIND", Some("quic_bind")),
            ("http_bin", Some("http_bind")),
            ("max_frame", Some("max_frame_size")),
            ("vault_external_token", Some("vault_external_token_path")),
            ("tls_cert", Some("tls_cert_path")),
            ("audit_sinks", Some("audit_sink")),
            ("tls", None),
            ("completely_unrelated", None),
            ("x", None),
        ] {
            assert_eq!(nearest_of(typo, (TOP.keys)().into_iter()), meant, "{typo}");
        }
    }

    #[test]
    fn the_unknown_key_error_suggests_and_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rampart.toml");
        std::fs::write(&p, "quic_bnd = \"127.0.0.1:9000\"\n").unwrap();
        let e = Config::load(Some(&p), &env(&[])).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "config file {}: unknown key `quic_bnd`; did you mean `quic_bind`?",
                p.display()
            )
        );
        // The same from YAML, and no suggestion when nothing is near.
        let y = dir.path().join("rampart.yaml");
        std::fs::write(&y, "quic_bnd: 127.0.0.1:9000\n").unwrap();
        let e = Config::load(Some(&y), &env(&[])).unwrap_err();
        assert!(e.to_string().ends_with("did you mean `quic_bind`?"), "{e}");
        let e = Config::parse("frobnicate = 1\n", "x.toml", &env(&[])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "config file x.toml: unknown key `frobnicate`"
        );
    }

    #[test]
    fn unknown_keys_in_nested_tables_are_named_by_path_with_a_suggestion() {
        let err = |text: &str| {
            Config::parse(text, "x.toml", &env(&[]))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err("[[jwt_issuers]]\nissuer = \"https://idp\"\naudiencs = [\"rampart\"]\n"),
            "config file x.toml: unknown key `jwt_issuers[0].audiencs`; did you mean `audiences`?"
        );
        // The second rule of an array of tables; the first is fine.
        let rules = "[[mtls_identities]]\ntenant = \"acme\"\ncommon_names = [\"a\"]\n\
                     [[mtls_identities]]\ntenant = \"acme\"\ncomon_names = [\"b\"]\n";
        assert_eq!(
            err(rules),
            "config file x.toml: unknown key `mtls_identities[1].comon_names`; did you mean `common_names`?"
        );
        // A table, and a key cut short.
        assert_eq!(
            err("[tenant_limits]\nmax_conn = 5\n"),
            "config file x.toml: unknown key `tenant_limits.max_conn`; did you mean `max_connections`?"
        );
        // Nothing near: the path alone.
        assert_eq!(
            err("[principal_limits]\nfrobnicate = 1\n"),
            "config file x.toml: unknown key `principal_limits.frobnicate`"
        );
        // Known keys at every depth pass this check (and serde's).
        let good = "[[jwt_issuers]]\nissuer = \"https://idp\"\naudiences = [\"rampart\"]\n\
                    jwks_path = \"/etc/jwks.json\"\n[tenant_limits]\nburst = 3.0\n";
        let c = Config::parse(good, "x.toml", &env(&[])).unwrap();
        assert_eq!(c.jwt_issuers.len(), 1);
        assert_eq!(c.tenant_limits.burst, Some(3.0));
    }

    #[test]
    fn unknown_nested_keys_from_yaml_and_the_environment_too() {
        let dir = tempfile::tempdir().unwrap();
        let y = dir.path().join("rampart.yaml");
        std::fs::write(
            &y,
            "jwt_issuers:\n  - issuer: https://idp\n    audiences: [rampart]\n    leway_secs: 5\n",
        )
        .unwrap();
        let e = Config::load(Some(&y), &env(&[])).unwrap_err().to_string();
        assert!(
            e.ends_with("unknown key `jwt_issuers[0].leway_secs`; did you mean `leeway_secs`?"),
            "{e}"
        );
        let e = Config::parse(
            "",
            "x.toml",
            &env(&[(
                "RAMPART_JWT_ISSUERS",
                r#"[{"issuer":"https://idp","audiencs":["rampart"]}]"#,
            )]),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "environment variable RAMPART_JWT_ISSUERS: unknown key `jwt_issuers[0].audiencs`; did you mean `audiences`?"
        );
    }

    /// Every structured key has the keys of its tables checked, and those
    /// keys are what serde accepts.
    #[test]
    fn every_structured_key_knows_its_nested_keys() {
        for (key, kind) in KEYS {
            if matches!(kind, Kind::Json) {
                let shape = nested_shape(key).unwrap_or_else(|| panic!("{key} has no shape"));
                assert!(!(shape.keys)().is_empty(), "{key}");
            }
        }
        let limits = fields_of::<rampart_limits::LimitSpec>();
        assert!(limits.contains(&"burst") && limits.contains(&"max_streams"));
        assert!(fields_of::<crate::auth::MtlsIdentity>().contains(&"san_uri_prefix"));
        let jwt = fields_of::<rampart_identity::JwtIssuerConfig>();
        assert!(jwt.contains(&"audiences") && jwt.contains(&"jwks_min_refresh_secs"));
        // Not a struct: nothing to list.
        assert!(fields_of::<String>().is_empty());
        // The top-level list is the same as serde's for `Config`.
        let mut top = fields_of::<Config>();
        top.sort_unstable();
        let mut keys = (TOP.keys)();
        keys.sort_unstable();
        assert_eq!(top, keys);
    }

    /// The unknown-key check goes by KEYS, so KEYS must name every field
    /// of `Config`: serde lists them in its own unknown-field message.
    #[test]
    fn keys_is_exactly_the_fields_of_config() {
        let e = toml::from_str::<Config>("not_a_key = 1\n").unwrap_err();
        let message = e.message();
        let listed = message
            .split_once("expected one of ")
            .map(|(_, l)| l)
            .unwrap_or_else(|| panic!("{message}"));
        let mut fields: Vec<&str> = listed
            .split('`')
            .filter(|s| !s.is_empty() && !s.starts_with(','))
            .collect();
        fields.sort_unstable();
        let mut keys: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
        keys.sort_unstable();
        assert_eq!(fields, keys);
    }

    /// A configuration with every optional key set, so that every key
    /// shows when it is serialized.
    fn everything_set() -> Config {
        let mut c = Config::default();
        let p = |s: &str| Some(PathBuf::from(s));
        c.tls_cert_path = p("/etc/rampart/tls/server.crt");
        c.tls_key_path = p("/etc/rampart/tls/server.key");
        c.tls_ca_cert_path = p("/etc/rampart/tls/ca.crt");
        c.api_key_pepper_path = p("/var/lib/rampart/api_key_pepper");
        c.master_key_path = p("/etc/rampart/master.key");
        c.vault_transit_address = Some("https://ops:hunter2@transit.example:8200".into());
        c.vault_transit_ca_cert_path = p("/etc/rampart/transit-ca.crt");
        c.vault_transit_token_path = p("/etc/rampart/transit.token");
        c.vault_external_address = Some("https://vault.example:8200".into());
        c.vault_external_ca_cert_path = p("/etc/rampart/vault-ca.crt");
        c.vault_external_token_path = p("/etc/rampart/vault.token");
        c.allowed_api_keys = vec![format!("acme:hmac-sha256:{}", "6c0b".repeat(16))];
        c.mtls_identities = vec![crate::auth::MtlsIdentity {
            tenant: "acme".into(),
            san_uri_prefix: Some("spiffe://acme.example/".into()),
            common_names: Vec::new(),
            roles: vec!["user".into()],
        }];
        c
    }

    #[test]
    fn every_key_that_sounds_like_a_credential_is_decided() {
        for (key, _) in KEYS {
            let sounds = ["key", "token", "secret", "password", "pepper", "credential"]
                .iter()
                .any(|w| key.contains(w));
            let decided = SECRET_KEYS.contains(key) || NOT_SECRET_KEYS.contains(key);
            assert!(
                !sounds || decided,
                "`{key}`: add it to SECRET_KEYS or NOT_SECRET_KEYS"
            );
            assert!(
                !(SECRET_KEYS.contains(key) && NOT_SECRET_KEYS.contains(key)),
                "{key}"
            );
        }
        for key in SECRET_KEYS.iter().chain(NOT_SECRET_KEYS) {
            assert!(KEYS.iter().any(|(k, _)| k == key), "`{key}` is no key");
        }
    }

    #[test]
    fn the_printed_configuration_hides_credentials_and_reads_back() {
        let c = everything_set();
        let text = c.redacted_toml().unwrap();
        assert!(!text.contains("6c0b6c0b"), "{text}");
        assert!(
            !text.contains("hunter2") && !text.contains("ops:"),
            "{text}"
        );
        assert!(
            text.contains("allowed_api_keys = [\"<redacted>\"]"),
            "{text}"
        );
        assert!(
            text.contains("https://<redacted>@transit.example:8200"),
            "{text}"
        );
        // Paths to secrets and names are printed.
        assert!(text.contains("master_key_path = \"/etc/rampart/master.key\""));
        assert!(text.contains("vault_transit_key = \"rampart\""));
        assert!(text.contains("[tenant_limits]"), "{text}");
        // It is a configuration the server reads, with the same values
        // (the redacted ones aside).
        let back = Config::parse(&text, "printed", &env(&[])).unwrap();
        assert_eq!(back.redacted_toml().unwrap(), text);
        assert_eq!(back.max_frame_size, c.max_frame_size);
        assert_eq!(back.mtls_identities, c.mtls_identities);
        // The defaults print and read back too.
        let d = Config::default().redacted_toml().unwrap();
        let back = Config::parse(&d, "printed", &env(&[])).unwrap();
        assert_eq!(back.redacted_toml().unwrap(), d);
    }

    #[test]
    fn nested_tables_print_and_urls_in_them_lose_their_userinfo() {
        let text = "[[jwt_issuers]]\n\
                    issuer = \"https://issuer.example\"\n\
                    audiences = [\"rampart\"]\n\
                    jwks_url = \"https://svc:jwks-canary@issuer.example/jwks.json\"\n\
                    tenant = \"acme\"\n";
        let c = Config::parse(text, "jwt.toml", &env(&[])).unwrap();
        let printed = c.redacted_toml().unwrap();
        assert!(!printed.contains("jwks-canary"), "{printed}");
        assert!(
            printed.contains("https://<redacted>@issuer.example/jwks.json"),
            "{printed}"
        );
        let back = Config::parse(&printed, "printed", &env(&[])).unwrap();
        assert_eq!(back.jwt_issuers[0].issuer, "https://issuer.example");
        assert_eq!(back.jwt_issuers[0].algorithms, c.jwt_issuers[0].algorithms);
    }

    #[test]
    fn userinfo_is_cut_from_urls_only() {
        assert_eq!(
            without_userinfo("https://u:p@h:1/x@y").as_deref(),
            Some("https://<redacted>@h:1/x@y")
        );
        assert_eq!(without_userinfo("https://h:1/x@y"), None);
        assert_eq!(without_userinfo("acme@example"), None);
    }

    #[test]
    fn missing_files_name_their_key_and_the_environment_counts() {
        let dir = tempfile::tempdir().unwrap();
        let there = dir.path().join("server.crt");
        std::fs::write(&there, "x").unwrap();
        let c = Config {
            tls_cert_path: Some(there),
            tls_key_path: Some(dir.path().join("server.key")),
            master_key_path: Some(dir.path().join("master.key")),
            ..Config::default()
        };
        let w = c.missing_files(&env(&[]));
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].starts_with("`tls_key_path`: "), "{w:?}");
        assert!(w[1].starts_with("`master_key_path`: "), "{w:?}");
        // The master key from the environment: its file is not read.
        let w = c.missing_files(&env(&[(rampart_keys::MASTER_KEY_ENV, "x")]));
        assert_eq!(w.len(), 1, "{w:?}");
        // Neither certificate nor master key configured.
        let w = Config::default().missing_files(&env(&[]));
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("tls_cert_path") && w[1].contains("master_key_path"));
        // Looking creates nothing.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
