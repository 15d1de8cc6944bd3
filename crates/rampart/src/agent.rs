//! `rampart agent`: delivers secrets to files and keeps them current
//! (seed 001).
//!
//! ```text
//! rampart agent --config agent.toml [--once]
//! ```
//!
//! The agent logs in (AppRole or client certificate), renders every
//! configured secret to its file, then follows changes: change notices
//! from the broker (`TENANT/vault/changes`) re-render a secret at once, and
//! a poll every `poll_interval` is the safety net. With `--once` it renders
//! everything once and exits: 0 when every file was written, 1 otherwise.
//! SIGTERM or SIGINT revokes the token and exits 0.
//!
//! ```toml
//! url = "https://127.0.0.1:7402"          # the HTTPS API (required)
//! broker_url = "tls://127.0.0.1:7401"     # optional: change notices (quic:// or tls://)
//! ca_cert = "/etc/rampart/ca.crt"         # CA of the server certificate (required)
//! poll_interval = "30s"                   # default 30s; ms, s, m or h
//!
//! [auth]
//! method = "approle"                      # or "cert"
//! role_id_file = "/etc/rampart/role_id"
//! secret_id_file = "/etc/rampart/secret_id"
//! remove_secret_id_file_after_reading = false
//! # method = "cert": client_cert = "/etc/rampart/agent.crt", client_key = "/etc/rampart/agent.key"
//!
//! [[secret]]
//! path = "billing/prod/db"                # APP/ENV/PATH in the token's tenant
//! destination = "/run/secrets/db.json"    # absolute path
//! format = "json"                         # or "value:FIELD"
//! mode = "0400"                           # default 0400; never any bit for others
//! owner = "app"                           # optional: user name or uid
//! group = "app"                           # optional: group name or gid
//! command = "systemctl restart billing"   # optional: sh -c, after the file changed
//! ```
//!
//! Behaviour, in short:
//! - The token lives in memory only; it is renewed at 2/3 of its lease. When
//!   renewal fails or cannot extend the lease much further (the token nears
//!   its maximum lifetime), the agent logs in again; if the server refuses
//!   the credentials (a single-use secret id already used), the agent exits
//!   non-zero. Unreachable servers are retried with backoff (at most 30 s).
//! - `format = "json"` writes the secret's whole object as compact JSON and a
//!   newline; `value:FIELD` writes that field's string value, byte for byte,
//!   with nothing added.
//! - A secret that is missing (404), forbidden (403) or unrenderable gets no
//!   file at all: never an empty or placeholder one. `--once` then exits 1;
//!   the daemon keeps the previous file, if any, and retries at every poll
//!   (and on every change notice for that path).
//! - Files are replaced atomically: a temporary file in the same directory,
//!   created exclusively with the final mode, written, fsynced, chowned,
//!   renamed over the destination, and the directory fsynced.
//! - A file is rewritten only when its secret's version changed (and its
//!   content, mode or owner differ from what is on disk). After a write,
//!   including the first one, the secret's `command` runs through `sh -c`
//!   with the agent's environment minus any token variable; a command shared
//!   by several files that changed in the same pass runs once. Its exit
//!   status is logged; it is killed after 120 s.
//! - Logs carry paths, versions and destinations: never values or tokens.

use std::fs::{File, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rampart_client::{
    AdminClient, AdminResponse, AuthMethod, Client, ClientConfig, Credential, CredentialFuture,
    CredentialProvider, Provider, Subscription,
};
use rampart_identity::Secret;
use rampart_vault::SecretPath;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use tokio::time::{sleep, sleep_until, Instant};
use tracing::{debug, error, info, warn};

use crate::Failure;

const DEFAULT_POLL: Duration = Duration::from_secs(30);
const DEFAULT_MODE: u32 = 0o400;
/// Bound on retrying an unreachable server (login, notices).
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// A restart command that takes longer is killed.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on revoking the token at shutdown.
const REVOKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Environment variables that may carry a credential: never passed on to
/// commands.
const CREDENTIAL_VARS: [&str; 4] = [
    "RAMPART_TOKEN",
    "RAMPART_API_KEY",
    "VAULT_TOKEN",
    "BAO_TOKEN",
];

#[derive(Debug, clap::Args)]
pub(crate) struct AgentArgs {
    /// The agent's configuration file (TOML).
    #[arg(long)]
    config: PathBuf,
    /// Render every secret once and exit: 0 when all were written, 1
    /// otherwise (for init containers).
    #[arg(long)]
    once: bool,
}

pub(crate) async fn run(a: AgentArgs) -> Result<ExitCode, Failure> {
    let cfg = AgentConfig::load(&a.config)?;
    let creds = Credentials::read(&cfg.auth)?;
    let mut signals = Signals::new()?;
    let base = cfg.client_config();
    // Certificate and key files are checked now, not at the first login.
    AdminClient::new(&cfg.url, &base)
        .map_err(|e| Failure(format!("{}: {e}", a.config.display())))?;
    let first = tokio::select! {
        s = signals.recv() => {
            info!(signal = s, "stopped before logging in");
            return stopped(s, a.once);
        }
        r = first_login(&cfg.url, &base, &creds, a.once) => r?,
    };
    let mut agent = Agent::new(cfg, base, creds, first)?;
    let outcome = tokio::select! {
        s = signals.recv() => Err(s),
        r = agent.work(a.once) => Ok(r),
    };
    agent.shutdown().await;
    match outcome {
        Ok(result) => result,
        Err(s) => {
            info!(signal = s, "stopped");
            stopped(s, a.once)
        }
    }
}

/// A signal ends the daemon normally, and a `--once` run unfinished.
fn stopped(signal: &str, once: bool) -> Result<ExitCode, Failure> {
    if once {
        Err(Failure(format!("interrupted by {signal}")))
    } else {
        Ok(ExitCode::SUCCESS)
    }
}

// === config ===

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    url: String,
    broker_url: Option<String>,
    ca_cert: PathBuf,
    poll_interval: Option<String>,
    auth: RawAuth,
    #[serde(default)]
    secret: Vec<RawSecret>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    method: String,
    role_id_file: Option<PathBuf>,
    secret_id_file: Option<PathBuf>,
    remove_secret_id_file_after_reading: Option<bool>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecret {
    path: String,
    destination: PathBuf,
    format: Option<String>,
    mode: Option<String>,
    owner: Option<String>,
    group: Option<String>,
    command: Option<String>,
}

/// A validated agent configuration.
#[derive(Debug)]
struct AgentConfig {
    url: String,
    broker_url: Option<String>,
    ca_cert: PathBuf,
    poll_interval: Duration,
    auth: AuthConfig,
    secrets: Vec<SecretSpec>,
}

#[derive(Debug, PartialEq, Eq)]
enum AuthConfig {
    AppRole {
        role_id_file: PathBuf,
        secret_id_file: PathBuf,
        remove_secret_id_file: bool,
    },
    Cert {
        client_cert: PathBuf,
        client_key: PathBuf,
    },
}

/// One `[[secret]]`: where a secret goes and how.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SecretSpec {
    path: SecretPath,
    destination: PathBuf,
    format: Format,
    mode: u32,
    owner: Option<u32>,
    group: Option<u32>,
    command: Option<String>,
}

/// What a file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Format {
    /// The secret's whole object, as JSON.
    Json,
    /// One field's string value, raw.
    Field(String),
}

/// The account databases owner and group names are looked up in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Accounts {
    Users,
    Groups,
}

impl AgentConfig {
    fn load(path: &Path) -> Result<Self, Failure> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Failure(format!("cannot read {}: {e}", path.display())))?;
        let accounts = |which: Accounts| {
            let file = match which {
                Accounts::Users => "/etc/passwd",
                Accounts::Groups => "/etc/group",
            };
            std::fs::read_to_string(file).ok()
        };
        let cfg = Self::parse(&text, &accounts)
            .map_err(|e| Failure(format!("{}: {e}", path.display())))?;
        let readable = |key: &str, p: &Path| {
            File::open(p)
                .map(drop)
                .map_err(|e| Failure(format!("{}: {key}: {}: {e}", path.display(), p.display())))
        };
        readable("ca_cert", &cfg.ca_cert)?;
        if let AuthConfig::Cert {
            client_cert,
            client_key,
        } = &cfg.auth
        {
            readable("auth.client_cert", client_cert)?;
            readable("auth.client_key", client_key)?;
        }
        Ok(cfg)
    }

    /// Parses and validates configuration text; every error names its key.
    /// `accounts` gives the text of `/etc/passwd` or `/etc/group`, for
    /// owner and group names.
    fn parse(text: &str, accounts: &dyn Fn(Accounts) -> Option<String>) -> Result<Self, String> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        if !raw.url.starts_with("https://") {
            return Err(format!(
                "url: `{}` must look like https://host:port",
                raw.url
            ));
        }
        if let Some(b) = &raw.broker_url {
            if !(b.starts_with("tls://") || b.starts_with("quic://")) {
                return Err(format!(
                    "broker_url: `{b}` must look like tls://host:port or quic://host:port"
                ));
            }
        }
        let poll_interval = match &raw.poll_interval {
            None => DEFAULT_POLL,
            Some(s) => match parse_duration(s) {
                Some(d) if d >= Duration::from_secs(1) => d,
                Some(_) => return Err("poll_interval: must be at least 1s".into()),
                None => {
                    return Err(format!(
                        "poll_interval: `{s}` is not a duration like 30s, 5m or 1h"
                    ))
                }
            },
        };
        let auth = parse_auth(raw.auth)?;
        if raw.secret.is_empty() {
            return Err("secret: at least one [[secret]] is required".into());
        }
        let mut secrets: Vec<SecretSpec> = Vec::with_capacity(raw.secret.len());
        for (i, s) in raw.secret.into_iter().enumerate() {
            let spec = parse_secret(i + 1, s, accounts)?;
            if let Some(j) = secrets
                .iter()
                .position(|o| o.destination == spec.destination)
            {
                return Err(format!(
                    "secret #{}: destination: {} is also the destination of secret #{}",
                    i + 1,
                    spec.destination.display(),
                    j + 1
                ));
            }
            secrets.push(spec);
        }
        Ok(Self {
            url: raw.url,
            broker_url: raw.broker_url,
            ca_cert: raw.ca_cert,
            poll_interval,
            auth,
            secrets,
        })
    }

    /// TLS settings of every connection, without a credential.
    fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::default().with_ca(&self.ca_cert);
        if let AuthConfig::Cert {
            client_cert,
            client_key,
        } = &self.auth
        {
            c = c.with_client_cert(client_cert, client_key);
        }
        c.request_timeout = Duration::from_secs(15);
        c.agent = concat!("rampart-agent/", env!("CARGO_PKG_VERSION")).into();
        c
    }
}

fn parse_auth(a: RawAuth) -> Result<AuthConfig, String> {
    let approle_keys = [
        ("role_id_file", a.role_id_file.is_some()),
        ("secret_id_file", a.secret_id_file.is_some()),
        (
            "remove_secret_id_file_after_reading",
            a.remove_secret_id_file_after_reading.is_some(),
        ),
    ];
    let cert_keys = [
        ("client_cert", a.client_cert.is_some()),
        ("client_key", a.client_key.is_some()),
    ];
    let refuse = |keys: &[(&str, bool)], method: &str| match keys.iter().find(|(_, set)| *set) {
        Some((k, _)) => Err(format!(
            "auth.{k}: not used with auth.method = \"{method}\""
        )),
        None => Ok(()),
    };
    let need = |key: &str, v: Option<PathBuf>, method: &str| {
        v.ok_or_else(|| format!("auth.{key}: required with auth.method = \"{method}\""))
    };
    match a.method.as_str() {
        "approle" => {
            refuse(&cert_keys, "approle")?;
            Ok(AuthConfig::AppRole {
                role_id_file: need("role_id_file", a.role_id_file, "approle")?,
                secret_id_file: need("secret_id_file", a.secret_id_file, "approle")?,
                remove_secret_id_file: a.remove_secret_id_file_after_reading.unwrap_or(false),
            })
        }
        "cert" => {
            refuse(&approle_keys, "cert")?;
            Ok(AuthConfig::Cert {
                client_cert: need("client_cert", a.client_cert, "cert")?,
                client_key: need("client_key", a.client_key, "cert")?,
            })
        }
        other => Err(format!(
            "auth.method: `{other}` is not a login method (approle or cert)"
        )),
    }
}

/// The `n`th `[[secret]]` (from 1, as errors name it).
fn parse_secret(
    n: usize,
    s: RawSecret,
    accounts: &dyn Fn(Accounts) -> Option<String>,
) -> Result<SecretSpec, String> {
    let path =
        SecretPath::parse(&s.path).map_err(|e| format!("secret #{n}: path: `{}`: {e}", s.path))?;
    let ctx = |key: &str, e: String| format!("secret #{n} ({path}): {key}: {e}");
    let dest = &s.destination;
    if !dest.is_absolute() || dest.file_name().is_none() || dest.ends_with("..") {
        return Err(ctx(
            "destination",
            format!("`{}` must be an absolute file path", dest.display()),
        ));
    }
    let format =
        parse_format(s.format.as_deref().unwrap_or("json")).map_err(|e| ctx("format", e))?;
    let mode = match &s.mode {
        None => DEFAULT_MODE,
        Some(m) => parse_mode(m).map_err(|e| ctx("mode", e))?,
    };
    let owner = s
        .owner
        .as_deref()
        .map(|o| resolve_id(o, || accounts(Accounts::Users), "user"))
        .transpose()
        .map_err(|e| ctx("owner", e))?;
    let group = s
        .group
        .as_deref()
        .map(|g| resolve_id(g, || accounts(Accounts::Groups), "group"))
        .transpose()
        .map_err(|e| ctx("group", e))?;
    let command = match s.command {
        Some(c) if c.trim().is_empty() => {
            return Err(ctx("command", "is empty; leave it out instead".into()))
        }
        c => c,
    };
    Ok(SecretSpec {
        path,
        destination: s.destination,
        format,
        mode,
        owner,
        group,
        command,
    })
}

/// `30s`, `5m`, `1h`, `500ms`, or plain seconds.
fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "" | "s" => Some(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        _ => None,
    }
}

/// An octal file mode such as `0400` or `0640`. Bits for other users,
/// setuid, setgid and sticky are refused: a secret file is for its owner
/// and, at most, its group.
fn parse_mode(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    if !(3..=4).contains(&digits.len()) || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(format!("`{s}` is not an octal mode like 0400"));
    }
    let mode = u32::from_str_radix(digits, 8).map_err(|e| format!("`{s}`: {e}"))?;
    if mode > 0o777 {
        return Err(format!(
            "`{s}` sets setuid, setgid or sticky bits, which a secret file must not have"
        ));
    }
    if mode & 0o007 != 0 {
        return Err(format!(
            "`{s}` gives other users access; a secret file is for its owner and group only"
        ));
    }
    Ok(mode)
}

fn parse_format(s: &str) -> Result<Format, String> {
    match s {
        "json" => Ok(Format::Json),
        _ => match s.strip_prefix("value:") {
            Some(field) if !field.is_empty() => Ok(Format::Field(field.to_string())),
            _ => Err(format!("`{s}` is not json or value:FIELD")),
        },
    }
}

/// A uid or gid: digits, or a name looked up in `db` (`/etc/passwd` or
/// `/etc/group` text). Accounts known only to NSS services (LDAP, sssd)
/// need their numeric id.
fn resolve_id(spec: &str, db: impl FnOnce() -> Option<String>, kind: &str) -> Result<u32, String> {
    if !spec.is_empty() && spec.bytes().all(|b| b.is_ascii_digit()) {
        return spec
            .parse()
            .map_err(|_| format!("`{spec}` is not a valid {kind} id"));
    }
    let db = db().ok_or_else(|| format!("cannot read the {kind} database to look up `{spec}`"))?;
    lookup_id(&db, spec).ok_or_else(|| {
        format!("no {kind} named `{spec}` in the local database (give the numeric id instead)")
    })
}

/// The id (third field) of `name` in `/etc/passwd` or `/etc/group` text.
fn lookup_id(db: &str, name: &str) -> Option<u32> {
    db.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        fields.nth(1)?.trim().parse().ok()
    })
}

// === rendering ===

/// A secret's data as the server sent it: redacted in Debug, its strings
/// zeroized when dropped.
struct SecretMap(Map<String, Value>);

impl std::fmt::Debug for SecretMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretMap([redacted])")
    }
}

impl Drop for SecretMap {
    fn drop(&mut self) {
        for (_, v) in std::mem::take(&mut self.0) {
            scrub(v);
        }
    }
}

/// Drops a JSON value, zeroizing its strings.
fn scrub(v: Value) {
    match v {
        Value::String(s) => drop(Secret::new(s)),
        Value::Array(a) => a.into_iter().for_each(scrub),
        Value::Object(m) => m.into_iter().for_each(|(_, v)| scrub(v)),
        _ => {}
    }
}

/// Drops what a response carried (body and raw text), zeroized.
fn scrub_response(r: &mut AdminResponse) {
    scrub(r.body.take());
    drop(Secret::new(std::mem::take(&mut r.text)));
}

/// Why a secret could not be rendered. Names fields, never values.
#[derive(Debug, PartialEq, Eq)]
enum RenderError {
    MissingField(String),
    NotAString(String),
}

impl std::fmt::Display for RenderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RenderError::MissingField(k) => write!(f, "the secret has no field `{k}`"),
            RenderError::NotAString(k) => write!(f, "field `{k}` is not a string"),
        }
    }
}

/// The bytes of a file: compact JSON and a newline, or a field's value as
/// it is.
fn render(format: &Format, data: &SecretMap) -> Result<Secret<Vec<u8>>, RenderError> {
    match format {
        Format::Json => {
            let mut out = Vec::with_capacity(256);
            // Writing a map of JSON values to a Vec cannot fail.
            let _ = serde_json::to_writer(&mut out, &data.0);
            out.push(b'\n');
            Ok(Secret::new(out))
        }
        Format::Field(k) => match data.0.get(k) {
            Some(Value::String(s)) => Ok(Secret::new(s.as_bytes().to_vec())),
            Some(_) => Err(RenderError::NotAString(k.clone())),
            None => Err(RenderError::MissingField(k.clone())),
        },
    }
}

/// The outcome of reading one secret.
#[derive(Debug)]
enum Read {
    Found { version: u64, data: SecretMap },
    Missing,
    Forbidden,
    Failed(String),
}

impl Read {
    fn reason(&self) -> String {
        match self {
            Read::Found { .. } => "found".into(),
            Read::Missing => "not found (404)".into(),
            Read::Forbidden => "forbidden (403)".into(),
            Read::Failed(why) => why.clone(),
        }
    }
}

/// Reads a `GET /v1/secret/data/PATH` reply, taking the data out of `body`.
fn read_of(status: u16, body: &mut Value) -> Read {
    match status {
        200 => {
            let version = body
                .pointer("/data/metadata/version")
                .and_then(Value::as_u64);
            match (body.pointer_mut("/data/data").map(Value::take), version) {
                (Some(Value::Object(m)), Some(version)) => Read::Found {
                    version,
                    data: SecretMap(m),
                },
                (other, _) => {
                    if let Some(v) = other {
                        scrub(v);
                    }
                    Read::Failed("the reply has no data object or version".into())
                }
            }
        }
        404 => Read::Missing,
        403 => Read::Forbidden,
        s => Read::Failed(format!("HTTP {s}")),
    }
}

/// A message of `TENANT/vault/changes`.
#[derive(Debug, PartialEq, Eq)]
struct Notice {
    path: SecretPath,
    version: u64,
}

fn parse_notice(payload: &[u8]) -> Option<Notice> {
    #[derive(Deserialize)]
    struct Raw {
        path: String,
        version: u64,
    }
    let raw: Raw = serde_json::from_slice(payload).ok()?;
    Some(Notice {
        path: SecretPath::parse(&raw.path).ok()?,
        version: raw.version,
    })
}

// === token lease ===

/// When to renew a token, and whether a renewal is worth keeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lease {
    /// The lease given at login; renewals ask for as much again.
    login_ttl: Duration,
    renew_at: Instant,
}

impl Lease {
    fn new(now: Instant, ttl: Duration) -> Self {
        Self {
            login_ttl: ttl,
            renew_at: now + renew_delay(ttl),
        }
    }

    /// A renewal that gives less than a third of the login lease means the
    /// token nears its maximum lifetime: better log in again.
    fn keeps(&self, renewed: Duration) -> bool {
        !renewed.is_zero() && renewed * 3 >= self.login_ttl
    }

    fn renewed(&mut self, now: Instant, ttl: Duration) {
        self.renew_at = now + renew_delay(ttl);
    }
}

/// 2/3 of the lease, at least a second.
fn renew_delay(ttl: Duration) -> Duration {
    (ttl * 2 / 3).max(Duration::from_secs(1))
}

// === login ===

/// What the agent logs in with, read once at start.
#[derive(Debug)]
enum Credentials {
    AppRole {
        role_id: Secret<String>,
        secret_id: Secret<String>,
    },
    Cert,
}

impl Credentials {
    fn read(auth: &AuthConfig) -> Result<Self, Failure> {
        match auth {
            AuthConfig::Cert { .. } => Ok(Credentials::Cert),
            AuthConfig::AppRole {
                role_id_file,
                secret_id_file,
                remove_secret_id_file,
            } => {
                let role_id = read_first_line("auth.role_id_file", role_id_file)?;
                let secret_id = read_first_line("auth.secret_id_file", secret_id_file)?;
                if *remove_secret_id_file {
                    std::fs::remove_file(secret_id_file).map_err(|e| {
                        Failure(format!(
                            "auth.remove_secret_id_file_after_reading: cannot remove {}: {e}",
                            secret_id_file.display()
                        ))
                    })?;
                    info!(file = %secret_id_file.display(), "secret id file removed after reading");
                }
                Ok(Credentials::AppRole { role_id, secret_id })
            }
        }
    }
}

fn read_first_line(key: &str, path: &Path) -> Result<Secret<String>, Failure> {
    let text = Secret::new(
        std::fs::read_to_string(path)
            .map_err(|e| Failure(format!("{key}: cannot read {}: {e}", path.display())))?,
    );
    let line = text.expose().lines().next().unwrap_or("").trim();
    if line.is_empty() {
        return Err(Failure(format!("{key}: {} is empty", path.display())));
    }
    Ok(Secret::new(line.to_string()))
}

/// Why a login failed.
#[derive(Debug)]
enum LoginError {
    /// The server refused the credentials (or the settings are wrong):
    /// trying again will not help.
    Refused(String),
    /// The server could not be reached or failed: worth retrying.
    Unavailable(String),
}

impl std::fmt::Display for LoginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoginError::Refused(m) | LoginError::Unavailable(m) => f.write_str(m),
        }
    }
}

/// A token and its lease.
type Issued = (Secret<String>, Duration);

async fn login(url: &str, base: &ClientConfig, creds: &Credentials) -> Result<Issued, LoginError> {
    let api = AdminClient::new(url, base).map_err(|e| LoginError::Refused(e.to_string()))?;
    let (path, body) = match creds {
        Credentials::AppRole { role_id, secret_id } => (
            "/v1/auth/approle/login",
            json!({ "role_id": role_id.expose(), "secret_id": secret_id.expose() }),
        ),
        Credentials::Cert => ("/v1/auth", json!({})),
    };
    let result = api.call("POST", path, Some(&body)).await;
    scrub(body);
    let mut resp = result.map_err(|e| LoginError::Unavailable(e.to_string()))?;
    issued_of(&mut resp)
}

/// The token and lease of a login or renewal reply; the reply is scrubbed.
fn issued_of(resp: &mut AdminResponse) -> Result<Issued, LoginError> {
    let status = resp.status;
    let outcome = if status == 200 {
        let ttl = resp
            .body
            .pointer("/auth/lease_duration")
            .and_then(Value::as_u64);
        match (
            resp.body.pointer_mut("/auth/client_token").map(Value::take),
            ttl,
        ) {
            (Some(Value::String(t)), Some(ttl)) => Ok((Secret::new(t), Duration::from_secs(ttl))),
            (other, _) => {
                if let Some(v) = other {
                    scrub(v);
                }
                Err(LoginError::Unavailable(
                    "the reply carries no token and lease".into(),
                ))
            }
        }
    } else if status >= 500 || status == 429 {
        Err(LoginError::Unavailable(format!(
            "HTTP {status}: {}",
            resp.error()
        )))
    } else {
        Err(LoginError::Refused(format!(
            "HTTP {status}: {}",
            resp.error()
        )))
    };
    scrub_response(resp);
    outcome
}

/// The first login: refused credentials end the agent; an unreachable
/// server ends a `--once` run and is retried by the daemon.
async fn first_login(
    url: &str,
    base: &ClientConfig,
    creds: &Credentials,
    once: bool,
) -> Result<Issued, Failure> {
    let mut backoff = FIRST_BACKOFF;
    loop {
        match login(url, base, creds).await {
            Ok(issued) => {
                info!(lease_secs = issued.1.as_secs(), "logged in");
                return Ok(issued);
            }
            Err(LoginError::Refused(m)) => {
                return Err(Failure(format!("login refused: {m}")));
            }
            Err(LoginError::Unavailable(m)) if once => {
                return Err(Failure(format!("login failed: {m}")));
            }
            Err(LoginError::Unavailable(m)) => {
                warn!(error = %m, retry_in_secs = backoff.as_secs(), "login failed; retrying");
                sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

fn with_token(base: &ClientConfig, token: &Secret<String>) -> ClientConfig {
    let mut c = base.clone();
    c.token = Some(token.clone());
    c
}

/// Hands the broker connection the agent's current token whenever it
/// re-authenticates in band.
struct CurrentToken(Arc<Mutex<Secret<String>>>);

impl CredentialProvider for CurrentToken {
    fn credential(&self) -> CredentialFuture<'_> {
        let secret = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Box::pin(async move {
            Ok(Credential {
                method: AuthMethod::Token,
                secret,
            })
        })
    }
}

// === files ===

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Written {
    Replaced,
    Unchanged,
}

/// Puts `content` at the destination of `spec` unless it is there already
/// with the right mode and owner.
fn write_secret(spec: &SecretSpec, content: &[u8]) -> std::io::Result<Written> {
    if up_to_date(spec, content) {
        return Ok(Written::Unchanged);
    }
    write_atomically(
        &spec.destination,
        content,
        spec.mode,
        spec.owner,
        spec.group,
    )?;
    Ok(Written::Replaced)
}

/// Whether the destination already is a regular file with this content,
/// mode and owner.
fn up_to_date(spec: &SecretSpec, content: &[u8]) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(&spec.destination) else {
        return false;
    };
    if !meta.is_file()
        || meta.permissions().mode() & 0o7777 != spec.mode
        || spec.owner.is_some_and(|u| meta.uid() != u)
        || spec.group.is_some_and(|g| meta.gid() != g)
        || meta.len() != content.len() as u64
    {
        return false;
    }
    match std::fs::read(&spec.destination) {
        Ok(old) => Secret::new(old).expose().as_slice() == content,
        Err(_) => false,
    }
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// `.NAME.rampart-` : the prefix of the agent's temporary files for `name`.
fn temp_prefix(name: &std::ffi::OsStr) -> String {
    format!(".{}.rampart-", name.to_string_lossy())
}

/// Replaces `dest` with `content` so that a reader sees the old file or the
/// new one, never a part. The temporary file is created exclusively
/// (`O_EXCL`, so never through a planted symlink) with `mode` from the
/// start, so it is never readable by others, even briefly.
fn write_atomically(
    dest: &Path,
    content: &[u8],
    mode: u32,
    owner: Option<u32>,
    group: Option<u32>,
) -> std::io::Result<()> {
    let invalid = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, m.to_string());
    let name = dest.file_name().ok_or_else(|| invalid("no file name"))?;
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = dir.join(format!(
        "{}{}-{}.tmp",
        temp_prefix(name),
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    let result = (|| {
        // The umask may have cleared bits of `mode`: set exactly `mode`,
        // which never has bits for others.
        file.set_permissions(Permissions::from_mode(mode))?;
        file.write_all(content)?;
        file.sync_all()?;
        if owner.is_some() || group.is_some() {
            std::os::unix::fs::fchown(&file, owner, group)?;
        }
        std::fs::rename(&tmp, dest)?;
        File::open(dir)?.sync_all()
    })();
    drop(file);
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Removes temporary files a killed agent left next to `dest`.
fn remove_stale_temps(dest: &Path) {
    let (Some(dir), Some(name)) = (dest.parent(), dest.file_name()) else {
        return;
    };
    let prefix = temp_prefix(name);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let file_name = e.file_name();
        let n = file_name.to_string_lossy();
        let ours = n.starts_with(&prefix) && n.ends_with(".tmp");
        if ours
            && e.file_type().is_ok_and(|t| t.is_file())
            && std::fs::remove_file(e.path()).is_ok()
        {
            debug!(file = %e.path().display(), "removed a stale temporary file");
        }
    }
}

// === commands ===

/// Runs `command` through `sh -c` with the agent's environment minus any
/// credential, and logs its exit status. A separate thread waits for it,
/// so a shutdown does not wait for a slow command.
async fn run_command(command: &str, trigger: &Path) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let cmd = command.to_string();
    std::thread::spawn(move || {
        let _ = tx.send(run_blocking(&cmd));
    });
    match rx.await {
        Ok(Ok(status)) if status.success() => {
            info!(destination = %trigger.display(), status = %status, "command finished");
        }
        Ok(Ok(status)) => {
            warn!(destination = %trigger.display(), status = %status, "command failed");
        }
        Ok(Err(e)) => {
            warn!(destination = %trigger.display(), error = %e, "command did not run to completion");
        }
        Err(_) => warn!(destination = %trigger.display(), "command runner vanished"),
    }
}

/// `sh -c command`, without stdin or credential variables.
fn shell(command: &str) -> std::process::Command {
    let mut c = std::process::Command::new("/bin/sh");
    c.arg("-c").arg(command).stdin(std::process::Stdio::null());
    for v in CREDENTIAL_VARS {
        c.env_remove(v);
    }
    c
}

fn run_blocking(command: &str) -> Result<std::process::ExitStatus, String> {
    let mut child = shell(command)
        .spawn()
        .map_err(|e| format!("cannot start /bin/sh: {e}"))?;
    let deadline = std::time::Instant::now() + COMMAND_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Ok(status);
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "killed after {} s without finishing",
                COMMAND_TIMEOUT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// === change notices ===

#[derive(Debug)]
enum FeedEvent {
    Notice(Notice),
    /// The server dropped notices for this slow subscriber.
    Missed,
    /// The subscription of this generation ended.
    Lost(u64),
}

/// The subscription to `TENANT/vault/changes`, when there is one.
#[derive(Debug)]
struct Feed {
    url: String,
    config: ClientConfig,
    tx: mpsc::Sender<FeedEvent>,
    poll_interval: Duration,
    live: Option<Live>,
    generation: u64,
    retry_at: Option<Instant>,
    backoff: Duration,
    /// Whether "notices unavailable" was logged since the last success.
    reported: bool,
}

#[derive(Debug)]
struct Live {
    client: Client,
    task: tokio::task::JoinHandle<()>,
}

impl Feed {
    /// Connects and subscribes; on failure, logs once and schedules a retry.
    async fn connect(&mut self) -> bool {
        self.retry_at = None;
        match self.try_connect().await {
            Ok(live) => {
                self.live = Some(live);
                self.backoff = FIRST_BACKOFF;
                self.reported = false;
                true
            }
            Err(why) => {
                self.unavailable(&why);
                false
            }
        }
    }

    async fn try_connect(&mut self) -> Result<Live, String> {
        let client = Client::connect(&self.url, self.config.clone())
            .await
            .map_err(|e| format!("connecting to {}: {e}", self.url))?;
        let tenant = client.tenant().to_string();
        let sub = match client.subscribe(&tenant, "vault", "changes").await {
            Ok(sub) => sub,
            Err(e) => {
                client.close().await;
                return Err(format!("subscribing to {tenant}/vault/changes: {e}"));
            }
        };
        self.generation += 1;
        let task = tokio::spawn(forward(sub, self.tx.clone(), self.generation));
        info!(stream = %format!("{tenant}/vault/changes"), "subscribed to change notices");
        Ok(Live { client, task })
    }

    fn unavailable(&mut self, why: &str) {
        if self.reported {
            debug!(reason = %why, "change notices still unavailable");
        } else {
            warn!(
                reason = %why,
                poll_secs = self.poll_interval.as_secs(),
                "change notices unavailable; polling only until they are back"
            );
            self.reported = true;
        }
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(self.poll_interval.max(FIRST_BACKOFF));
    }

    /// The subscription of `generation` ended.
    async fn lost(&mut self, generation: u64) {
        if generation != self.generation || self.live.is_none() {
            return;
        }
        self.close().await;
        self.unavailable("the subscription ended");
    }

    /// Presents a new token on the open connection; reconnects if refused.
    async fn reauthenticate(&mut self, token: &Secret<String>) {
        let Some(live) = &self.live else { return };
        let c = Credential {
            method: AuthMethod::Token,
            secret: token.clone(),
        };
        if let Err(e) = live.client.reauthenticate(c).await {
            debug!(error = %e, "re-authenticating the notice connection failed; reconnecting");
            self.close().await;
            self.connect().await;
        }
    }

    async fn close(&mut self) {
        if let Some(live) = self.live.take() {
            live.task.abort();
            live.client.close().await;
        }
    }
}

/// Passes the notices of one subscription on, then says it ended.
async fn forward(mut sub: Subscription, tx: mpsc::Sender<FeedEvent>, generation: u64) {
    let mut missed = 0;
    while let Some(ev) = sub.next().await {
        if sub.missed() > missed {
            missed = sub.missed();
            if tx.send(FeedEvent::Missed).await.is_err() {
                return;
            }
        }
        let Some(n) = parse_notice(&ev.payload) else {
            debug!("ignoring a change notice that is not {{path, version}}");
            continue;
        };
        if tx.send(FeedEvent::Notice(n)).await.is_err() {
            return;
        }
    }
    let _ = tx.send(FeedEvent::Lost(generation)).await;
}

// === the agent ===

#[derive(Debug)]
struct Target {
    spec: SecretSpec,
    /// The version last written (or found already on disk).
    written: Option<u64>,
}

#[derive(Debug)]
struct Agent {
    cfg: AgentConfig,
    base: ClientConfig,
    creds: Credentials,
    /// The current token, shared with the notice connection.
    token: Arc<Mutex<Secret<String>>>,
    /// The HTTPS API, carrying the current token.
    api: AdminClient,
    lease: Lease,
    /// When to look after the token next (renewal, or a retried login).
    token_due: Instant,
    login_backoff: Duration,
    targets: Vec<Target>,
    feed: Option<Feed>,
}

impl Agent {
    fn new(
        mut cfg: AgentConfig,
        base: ClientConfig,
        creds: Credentials,
        (token, ttl): Issued,
    ) -> Result<Self, Failure> {
        let api = AdminClient::new(&cfg.url, &with_token(&base, &token))?;
        let lease = Lease::new(Instant::now(), ttl);
        let targets = std::mem::take(&mut cfg.secrets)
            .into_iter()
            .map(|spec| Target {
                spec,
                written: None,
            })
            .collect();
        Ok(Self {
            cfg,
            base,
            creds,
            token: Arc::new(Mutex::new(token)),
            api,
            token_due: lease.renew_at,
            lease,
            login_backoff: FIRST_BACKOFF,
            targets,
            feed: None,
        })
    }

    async fn work(&mut self, once: bool) -> Result<ExitCode, Failure> {
        for t in &self.targets {
            remove_stale_temps(&t.spec.destination);
        }
        if once {
            let failed = self.pass(None).await?;
            if failed > 0 {
                return Err(Failure(format!(
                    "{failed} of {} secret file(s) not written; see the errors above",
                    self.targets.len()
                )));
            }
            info!(files = self.targets.len(), "every secret rendered");
            return Ok(ExitCode::SUCCESS);
        }
        self.daemon().await
    }

    async fn daemon(&mut self) -> Result<ExitCode, Failure> {
        let poll = self.cfg.poll_interval;
        let (tx, mut rx) = mpsc::channel(256);
        match self.cfg.broker_url.clone() {
            Some(url) => {
                let mut config = self.base.clone();
                config.credential_provider =
                    Some(Provider(Arc::new(CurrentToken(self.token.clone()))));
                let mut feed = Feed {
                    url,
                    config,
                    tx,
                    poll_interval: poll,
                    live: None,
                    generation: 0,
                    retry_at: None,
                    backoff: FIRST_BACKOFF,
                    reported: false,
                };
                // Subscribe before the first render, so that no change
                // between the two goes unnoticed.
                feed.connect().await;
                self.feed = Some(feed);
            }
            None => {
                drop(tx);
                info!(poll_secs = poll.as_secs(), "no broker_url: polling only");
            }
        }
        info!(
            files = self.targets.len(),
            poll_secs = poll.as_secs(),
            "agent running"
        );
        self.pass(None).await?;
        let mut next_poll = Instant::now() + poll;
        loop {
            let feed_retry = self.feed.as_ref().and_then(|f| f.retry_at);
            let notices = self.feed.is_some();
            tokio::select! {
                _ = sleep_until(next_poll) => {
                    next_poll = Instant::now() + poll;
                    self.pass(None).await?;
                }
                _ = sleep_until(self.token_due) => self.maintain_token().await?,
                _ = sleep_until(feed_retry.unwrap_or(next_poll)), if feed_retry.is_some() => {
                    let connected = match &mut self.feed {
                        Some(f) => f.connect().await,
                        None => false,
                    };
                    if connected {
                        // Catch up with whatever changed while unsubscribed.
                        self.pass(None).await?;
                    }
                }
                Some(ev) = rx.recv(), if notices => self.on_feed_event(ev).await?,
            }
        }
    }

    async fn on_feed_event(&mut self, ev: FeedEvent) -> Result<(), Failure> {
        match ev {
            FeedEvent::Notice(n) => {
                let newer = self
                    .targets
                    .iter()
                    .any(|t| t.spec.path == n.path && t.written.is_none_or(|w| n.version > w));
                if newer {
                    info!(path = %n.path, version = n.version, "change notice");
                    self.pass(Some(&n.path)).await?;
                }
            }
            FeedEvent::Missed => {
                warn!("change notices were dropped; rendering everything");
                self.pass(None).await?;
            }
            FeedEvent::Lost(generation) => {
                if let Some(f) = &mut self.feed {
                    f.lost(generation).await;
                }
            }
        }
        Ok(())
    }

    /// Fetches and writes every secret (or those at `only`); returns how
    /// many files could not be written. Fails only when the agent cannot
    /// go on (its credentials are refused).
    async fn pass(&mut self, only: Option<&SecretPath>) -> Result<usize, Failure> {
        let mut paths: Vec<SecretPath> = Vec::new();
        for t in &self.targets {
            if only.is_none_or(|p| *p == t.spec.path) && !paths.contains(&t.spec.path) {
                paths.push(t.spec.path.clone());
            }
        }
        let mut failed = 0;
        let mut commands: Vec<(String, PathBuf)> = Vec::new();
        for path in paths {
            let read = self.fetch(&path).await?;
            let targets = self.targets.iter_mut().filter(|t| t.spec.path == path);
            let (version, data) = match read {
                Read::Found { version, data } => (version, data),
                other => {
                    for t in targets {
                        failed += 1;
                        error!(
                            path = %path,
                            destination = %t.spec.destination.display(),
                            reason = %other.reason(),
                            "secret not rendered: nothing written (any previous file is kept)"
                        );
                    }
                    continue;
                }
            };
            for t in targets {
                let dest = t.spec.destination.clone();
                if t.written == Some(version) && std::fs::symlink_metadata(&dest).is_ok() {
                    continue;
                }
                let content = match render(&t.spec.format, &data) {
                    Ok(c) => c,
                    Err(e) => {
                        failed += 1;
                        error!(
                            path = %path,
                            version,
                            destination = %dest.display(),
                            reason = %e,
                            "secret not rendered: nothing written (any previous file is kept)"
                        );
                        continue;
                    }
                };
                let spec = t.spec.clone();
                let written =
                    tokio::task::spawn_blocking(move || write_secret(&spec, content.expose()))
                        .await
                        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
                match written {
                    Ok(Written::Replaced) => {
                        info!(path = %path, version, destination = %dest.display(), "secret written");
                        t.written = Some(version);
                        if let Some(c) = &t.spec.command {
                            if !commands.iter().any(|(x, _)| x == c) {
                                commands.push((c.clone(), dest));
                            }
                        }
                    }
                    Ok(Written::Unchanged) => {
                        debug!(path = %path, version, destination = %dest.display(), "file already up to date");
                        t.written = Some(version);
                    }
                    Err(e) => {
                        failed += 1;
                        error!(
                            path = %path,
                            version,
                            destination = %dest.display(),
                            error = %e,
                            "writing the file failed (any previous file is kept)"
                        );
                    }
                }
            }
        }
        for (command, trigger) in commands {
            run_command(&command, &trigger).await;
        }
        Ok(failed)
    }

    /// Reads one secret. A 403 may mean the token is no longer valid
    /// (revoked, expired): then the agent logs in again and retries once.
    async fn fetch(&mut self, path: &SecretPath) -> Result<Read, Failure> {
        let read = self.get(path).await;
        if matches!(read, Read::Forbidden) && !self.token_valid().await {
            warn!("the token is no longer valid; logging in again");
            if self.relogin().await? {
                return Ok(self.get(path).await);
            }
        }
        Ok(read)
    }

    async fn get(&self, path: &SecretPath) -> Read {
        match self
            .api
            .call("GET", &format!("/v1/secret/data/{path}"), None)
            .await
        {
            Ok(mut r) => {
                let read = read_of(r.status, &mut r.body);
                scrub_response(&mut r);
                read
            }
            Err(e) => Read::Failed(format!("request failed: {e}")),
        }
    }

    /// Whether the server still accepts the token (true when it cannot
    /// tell).
    async fn token_valid(&self) -> bool {
        match self
            .api
            .call("GET", "/v1/auth/token/lookup-self", None)
            .await
        {
            Ok(mut r) => {
                let valid = r.status == 200;
                scrub_response(&mut r);
                valid
            }
            Err(_) => true,
        }
    }

    /// Renews the token, or logs in again when renewal fails or no longer
    /// extends the lease enough.
    async fn maintain_token(&mut self) -> Result<(), Failure> {
        let increment =
            json!({ "increment": format!("{}s", self.lease.login_ttl.as_secs().max(1)) });
        let renewed = match self
            .api
            .call("POST", "/v1/auth/token/renew-self", Some(&increment))
            .await
        {
            Ok(mut r) => issued_of(&mut r).map(|(_same_token, ttl)| ttl),
            Err(e) => Err(LoginError::Unavailable(e.to_string())),
        };
        match renewed {
            Ok(ttl) if self.lease.keeps(ttl) => {
                let now = Instant::now();
                self.lease.renewed(now, ttl);
                self.token_due = self.lease.renew_at;
                info!(lease_secs = ttl.as_secs(), "token renewed");
            }
            Ok(ttl) => {
                info!(
                    lease_secs = ttl.as_secs(),
                    "the token nears its maximum lifetime; logging in again"
                );
                self.relogin().await?;
            }
            Err(e) => {
                warn!(error = %e, "token renewal failed; logging in again");
                self.relogin().await?;
            }
        }
        Ok(())
    }

    /// Logs in again. `Ok(false)`: the server was unreachable, a retry is
    /// scheduled. `Err`: the credentials were refused; the agent stops.
    async fn relogin(&mut self) -> Result<bool, Failure> {
        match login(&self.cfg.url, &self.base, &self.creds).await {
            Ok((token, ttl)) => {
                let old = std::mem::replace(
                    &mut self.api,
                    AdminClient::new(&self.cfg.url, &with_token(&self.base, &token))?,
                );
                *self.token.lock().unwrap_or_else(|e| e.into_inner()) = token.clone();
                self.lease = Lease::new(Instant::now(), ttl);
                self.token_due = self.lease.renew_at;
                self.login_backoff = FIRST_BACKOFF;
                info!(lease_secs = ttl.as_secs(), "logged in again");
                if let Some(f) = &mut self.feed {
                    f.reauthenticate(&token).await;
                }
                // The old token is of no further use; it may have expired.
                revoke(&old).await;
                Ok(true)
            }
            Err(LoginError::Refused(m)) => Err(Failure(format!(
                "logging in again failed, the server refused the credentials ({m}); a \
                 single-use or expired secret id cannot log in twice: give the agent a new \
                 secret id and restart it"
            ))),
            Err(LoginError::Unavailable(m)) => {
                warn!(
                    error = %m,
                    retry_in_secs = self.login_backoff.as_secs(),
                    "logging in again failed; retrying"
                );
                self.token_due = Instant::now() + self.login_backoff;
                self.login_backoff = (self.login_backoff * 2).min(MAX_BACKOFF);
                Ok(false)
            }
        }
    }

    /// Closes the notice connection and revokes the token.
    async fn shutdown(&mut self) {
        if let Some(mut f) = self.feed.take() {
            f.close().await;
        }
        if revoke(&self.api).await {
            info!("token revoked");
        }
    }
}

/// Revokes the token `api` carries; best effort.
async fn revoke(api: &AdminClient) -> bool {
    match tokio::time::timeout(
        REVOKE_TIMEOUT,
        api.call("POST", "/v1/auth/token/revoke-self", None),
    )
    .await
    {
        Ok(Ok(r)) if r.status < 300 => true,
        Ok(Ok(r)) => {
            debug!(status = r.status, "revoking a token failed");
            false
        }
        Ok(Err(e)) => {
            warn!(error = %e, "revoking the token failed");
            false
        }
        Err(_) => {
            warn!("revoking the token timed out");
            false
        }
    }
}

/// SIGTERM and SIGINT.
#[derive(Debug)]
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_accounts(_: Accounts) -> Option<String> {
        None
    }

    fn accounts(which: Accounts) -> Option<String> {
        Some(match which {
            Accounts::Users => {
                "# comment\nroot:x:0:0:root:/root:/bin/sh\napp:x:1001:1001::/home/app:/bin/false\n"
                    .into()
            }
            Accounts::Groups => "root:x:0:\napp:x:2002:alice,bob\n".into(),
        })
    }

    const FULL: &str = r#"
url = "https://127.0.0.1:7402"
broker_url = "tls://127.0.0.1:7401"
ca_cert = "/etc/rampart/ca.crt"
poll_interval = "45s"
[auth]
method = "approle"
role_id_file = "/etc/rampart/role_id"
secret_id_file = "/etc/rampart/secret_id"
remove_secret_id_file_after_reading = true
[[secret]]
path = "billing/prod/db"
destination = "/run/secrets/db.json"
[[secret]]
path = "billing/prod/api"
destination = "/run/secrets/api-key"
format = "value:key"
mode = "0440"
owner = "app"
group = "app"
command = "systemctl restart billing"
"#;

    fn err(text: &str) -> String {
        AgentConfig::parse(text, &accounts).unwrap_err()
    }

    #[test]
    fn parses_a_full_config() {
        let c = AgentConfig::parse(FULL, &accounts).unwrap();
        assert_eq!(c.url, "https://127.0.0.1:7402");
        assert_eq!(c.broker_url.as_deref(), Some("tls://127.0.0.1:7401"));
        assert_eq!(c.poll_interval, Duration::from_secs(45));
        assert_eq!(
            c.auth,
            AuthConfig::AppRole {
                role_id_file: "/etc/rampart/role_id".into(),
                secret_id_file: "/etc/rampart/secret_id".into(),
                remove_secret_id_file: true,
            }
        );
        let [db, api] = &c.secrets[..] else {
            panic!("two secrets")
        };
        assert_eq!(db.path.to_string(), "billing/prod/db");
        assert_eq!(db.format, Format::Json);
        assert_eq!(db.mode, 0o400);
        assert_eq!(
            (db.owner, db.group, db.command.as_deref()),
            (None, None, None)
        );
        assert_eq!(api.format, Format::Field("key".into()));
        assert_eq!(api.mode, 0o440);
        assert_eq!((api.owner, api.group), (Some(1001), Some(2002)));
        assert_eq!(api.command.as_deref(), Some("systemctl restart billing"));
    }

    #[test]
    fn defaults_and_cert_login() {
        let c = AgentConfig::parse(
            r#"
url = "https://h:1"
ca_cert = "/ca"
[auth]
method = "cert"
client_cert = "/c.crt"
client_key = "/c.key"
[[secret]]
path = "a/b/c"
destination = "/x"
owner = "0"
group = "123"
"#,
            &no_accounts,
        )
        .unwrap();
        assert_eq!(c.poll_interval, DEFAULT_POLL);
        assert_eq!(c.broker_url, None);
        assert!(matches!(c.auth, AuthConfig::Cert { .. }));
        assert_eq!(
            (c.secrets[0].owner, c.secrets[0].group),
            (Some(0), Some(123))
        );
    }

    #[test]
    fn every_error_names_its_key() {
        let swap = |from: &str, to: &str| err(&FULL.replacen(from, to, 1));
        let cases = [
            (
                swap("poll_interval = \"45s\"", "poll_interval = \"soon\""),
                "poll_interval",
            ),
            (
                swap("poll_interval = \"45s\"", "poll_interval = \"10ms\""),
                "poll_interval",
            ),
            (swap("url = \"https://", "url = \"http://"), "url"),
            (
                swap("broker_url = \"tls", "broker_url = \"udp"),
                "broker_url",
            ),
            (
                swap("method = \"approle\"", "method = \"ldap\""),
                "auth.method",
            ),
            (
                swap("role_id_file = \"/etc/rampart/role_id\"", ""),
                "auth.role_id_file",
            ),
            (
                swap(
                    "method = \"approle\"",
                    "method = \"approle\"\nclient_cert = \"/c\"",
                ),
                "auth.client_cert",
            ),
            (swap("mode = \"0440\"", "mode = \"0644\""), "mode"),
            (swap("mode = \"0440\"", "mode = \"0999\""), "mode"),
            (
                swap("format = \"value:key\"", "format = \"yaml\""),
                "format",
            ),
            (swap("owner = \"app\"", "owner = \"nobody-here\""), "owner"),
            (swap("group = \"app\"", "group = \"nogroup-here\""), "group"),
            (swap("\"billing/prod/api\"", "\"billing/prod\""), "path"),
            (
                swap("\"/run/secrets/api-key\"", "\"relative/file\""),
                "destination",
            ),
            (
                swap("\"/run/secrets/api-key\"", "\"/run/secrets/db.json\""),
                "destination",
            ),
            (
                swap("command = \"systemctl restart billing\"", "command = \" \""),
                "command",
            ),
            // Unknown and missing keys, from the TOML parser.
            (
                swap("mode = \"0440\"", "mode = \"0440\"\nmdoe = \"0400\""),
                "mdoe",
            ),
            (
                swap("destination = \"/run/secrets/db.json\"", ""),
                "destination",
            ),
            (
                swap("url = \"https://127.0.0.1:7402\"", "uri = \"x\""),
                "uri",
            ),
        ];
        for (e, key) in cases {
            assert!(e.contains(key), "error `{e}` does not name `{key}`");
        }
        // Errors inside a [[secret]] say which one.
        assert!(swap("mode = \"0440\"", "mode = \"0644\"").contains("secret #2 (billing/prod/api)"));
        assert!(err(&FULL[..FULL.find("[[secret]]").unwrap()]).contains("secret"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        for bad in ["", "s", "1d", "-1s", "1.5s", "1 m"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0400"), Ok(0o400));
        assert_eq!(parse_mode("400"), Ok(0o400));
        assert_eq!(parse_mode("0640"), Ok(0o640));
        assert_eq!(parse_mode("0o600"), Ok(0o600));
        assert_eq!(parse_mode("0000"), Ok(0));
        for bad in [
            "0644", "0404", "0402", "0401", "4400", "1600", "0800", "40", "04000", "rw", "",
        ] {
            assert!(parse_mode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_and_rendering() {
        assert_eq!(parse_format("json"), Ok(Format::Json));
        assert_eq!(
            parse_format("value:password"),
            Ok(Format::Field("password".into()))
        );
        assert!(parse_format("value:").is_err());
        assert!(parse_format("env").is_err());
        let Value::Object(m) = json!({"user": "app", "password": "p\nw", "port": 5432}) else {
            panic!()
        };
        let data = SecretMap(m);
        assert_eq!(
            render(&Format::Json, &data).unwrap().expose().as_slice(),
            b"{\"password\":\"p\\nw\",\"port\":5432,\"user\":\"app\"}\n"
        );
        assert_eq!(
            render(&Format::Field("password".into()), &data)
                .unwrap()
                .expose()
                .as_slice(),
            b"p\nw"
        );
        assert_eq!(
            render(&Format::Field("port".into()), &data).unwrap_err(),
            RenderError::NotAString("port".into())
        );
        let e = render(&Format::Field("nope".into()), &data).unwrap_err();
        assert_eq!(e, RenderError::MissingField("nope".into()));
        // Neither errors nor Debug show values.
        assert!(!format!("{e} {data:?}").contains("p\nw"));
    }

    #[test]
    fn reads_of_replies() {
        let mut ok = json!({"data": {"data": {"k": "v"}, "metadata": {"version": 7}}});
        match read_of(200, &mut ok) {
            Read::Found { version, data } => {
                assert_eq!(version, 7);
                assert_eq!(data.0.get("k"), Some(&json!("v")));
            }
            other => panic!("{other:?}"),
        }
        assert!(
            ok.pointer("/data/data").is_some_and(Value::is_null),
            "data taken out"
        );
        assert!(matches!(
            read_of(404, &mut json!({"errors": []})),
            Read::Missing
        ));
        assert!(matches!(read_of(403, &mut json!({})), Read::Forbidden));
        assert!(matches!(read_of(500, &mut json!({})), Read::Failed(_)));
        assert!(matches!(
            read_of(
                200,
                &mut json!({"data": {"data": null, "metadata": {"version": 1}}})
            ),
            Read::Failed(_)
        ));
        assert!(matches!(
            read_of(200, &mut json!({"data": {"data": {}}})),
            Read::Failed(_)
        ));
    }

    #[test]
    fn notices() {
        assert_eq!(
            parse_notice(br#"{"path":"billing/prod/db","version":3}"#),
            Some(Notice {
                path: SecretPath::parse("billing/prod/db").unwrap(),
                version: 3
            })
        );
        assert_eq!(parse_notice(br#"{"path":"billing","version":3}"#), None);
        assert_eq!(parse_notice(br#"{"path":"a/b/c"}"#), None);
        assert_eq!(parse_notice(b"not json"), None);
    }

    #[test]
    fn account_lookup() {
        let db = accounts(Accounts::Users).unwrap();
        assert_eq!(lookup_id(&db, "app"), Some(1001));
        assert_eq!(lookup_id(&db, "root"), Some(0));
        assert_eq!(lookup_id(&db, "ap"), None);
        assert_eq!(lookup_id(&db, "# comment"), None);
        assert_eq!(resolve_id("42", || None, "user"), Ok(42));
        assert!(resolve_id("app", || None, "user").is_err());
        assert!(resolve_id("99999999999", || None, "user").is_err());
    }

    #[test]
    fn lease_schedule() {
        let now = Instant::now();
        let l = Lease::new(now, Duration::from_secs(600));
        assert_eq!(l.renew_at, now + Duration::from_secs(400));
        assert!(l.keeps(Duration::from_secs(600)));
        assert!(l.keeps(Duration::from_secs(200)));
        assert!(!l.keeps(Duration::from_secs(199)));
        assert!(!l.keeps(Duration::ZERO));
        // Very short leases are still renewed no more than once a second.
        assert_eq!(
            Lease::new(now, Duration::ZERO).renew_at,
            now + Duration::from_secs(1)
        );
    }

    #[test]
    fn login_replies() {
        let reply = |status: u16, body: Value| AdminResponse {
            status,
            text: body.to_string(),
            body,
            headers: Vec::new(),
        };
        let mut r = reply(
            200,
            json!({"auth": {"client_token": "rt1.x", "lease_duration": 60}}),
        );
        let (token, ttl) = issued_of(&mut r).unwrap();
        assert_eq!(
            (token.expose().as_str(), ttl),
            ("rt1.x", Duration::from_secs(60))
        );
        assert!(
            r.text.is_empty() && r.body.is_null(),
            "the reply is scrubbed"
        );
        let mut r = reply(400, json!({"errors": ["invalid role or secret id"]}));
        assert!(matches!(issued_of(&mut r), Err(LoginError::Refused(m)) if m.contains("invalid")));
        let mut r = reply(503, json!({"errors": ["busy"]}));
        assert!(matches!(issued_of(&mut r), Err(LoginError::Unavailable(_))));
        let mut r = reply(200, json!({"auth": null}));
        assert!(matches!(issued_of(&mut r), Err(LoginError::Unavailable(_))));
    }

    fn spec(dest: PathBuf, mode: u32) -> SecretSpec {
        SecretSpec {
            path: SecretPath::parse("a/b/c").unwrap(),
            destination: dest,
            format: Format::Json,
            mode,
            owner: None,
            group: None,
            command: None,
        }
    }

    #[test]
    fn atomic_writes() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("db.json");
        let s = spec(dest.clone(), 0o400);
        assert_eq!(write_secret(&s, b"one").unwrap(), Written::Replaced);
        let meta = std::fs::metadata(&dest).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o400);
        assert_eq!(std::fs::read(&dest).unwrap(), b"one");
        assert_eq!(write_secret(&s, b"one").unwrap(), Written::Unchanged);
        assert_eq!(write_secret(&s, b"two").unwrap(), Written::Replaced);
        assert_eq!(std::fs::read(&dest).unwrap(), b"two");
        // A change of mode alone rewrites the file.
        let s640 = spec(dest.clone(), 0o640);
        assert_eq!(write_secret(&s640, b"two").unwrap(), Written::Replaced);
        assert_eq!(
            std::fs::metadata(&dest).unwrap().permissions().mode() & 0o7777,
            0o640
        );
        // A symlink at the destination is replaced, not written through.
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, b"keep").unwrap();
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        write_secret(&spec(link.clone(), 0o400), b"new").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        assert!(std::fs::symlink_metadata(&link).unwrap().is_file());
        // Nothing but the files is left behind; stale temporaries go.
        std::fs::write(dir.path().join(".db.json.rampart-1-1.tmp"), b"x").unwrap();
        remove_stale_temps(&dest);
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["db.json", "elsewhere", "link.json"]);
    }

    #[test]
    fn chown_to_the_configured_ids() {
        let dir = tempfile::tempdir().unwrap();
        let meta = std::fs::metadata(dir.path()).unwrap();
        let dest = dir.path().join("owned");
        let mut s = spec(dest.clone(), 0o440);
        // Our own ids: allowed without privileges.
        s.owner = Some(meta.uid());
        s.group = Some(meta.gid());
        assert_eq!(write_secret(&s, b"x").unwrap(), Written::Replaced);
        let got = std::fs::metadata(&dest).unwrap();
        assert_eq!((got.uid(), got.gid()), (meta.uid(), meta.gid()));
        assert_eq!(write_secret(&s, b"x").unwrap(), Written::Unchanged);
    }

    #[test]
    fn failed_writes_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-dir").join("f");
        assert!(write_secret(&spec(missing.clone(), 0o400), b"x").is_err());
        assert!(!missing.exists());
        // The destination is a directory: the rename fails, the temporary
        // file is removed.
        let d = dir.path().join("d");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("keep"), b"k").unwrap();
        assert!(write_secret(&spec(d.clone(), 0o400), b"x").is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn commands_do_not_see_credentials() {
        let c = shell("true");
        let removed: Vec<_> = c
            .get_envs()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        for v in CREDENTIAL_VARS {
            assert!(removed.iter().any(|r| r == v), "{v} is passed on");
        }
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("ran");
        let status = run_blocking(&format!("echo ran > '{}'; exit 3", out.display())).unwrap();
        assert_eq!(status.code(), Some(3));
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "ran\n");
    }
}
