//! The external vault proxy (seed 004: "the same API in front of an
//! external vault"): each KV v2 operation of the secrets API forwarded to a
//! KV v2 mount of an external Vault or OpenBao, and each answer turned back
//! into the `rampart_vault` types and errors the local store returns, so
//! that `kv_api` cannot tell the two apart.
//!
//! A secret `APP/ENV/PATH` of tenant `T` lives at `<mount>/data/T/APP/ENV/PATH`
//! (and `metadata/`, `delete/`, `undelete/`, `destroy/` beside it). Paths
//! are built only from a parsed `TenantId` and `SecretPath` or
//! `SecretPrefix`, whose characters need no escaping and which have no `.`
//! or `..` segment, so no path leaves its tenant's folder. Authorization,
//! audit and change notices stay in `kv_api`, in front of this; AppRoles and
//! tokens stay in the local store. The token needs `create`, `read`,
//! `update`, `patch`, `delete` and `list` on `<mount>/*`.
//!
//! Answers become a `VaultError` in one place ([`status_error`]): 404 is
//! `NotFound`, 400 a check-and-set or input refusal with the server's
//! message, anything else `Storage`, whose detail goes to the log only.
//! Bodies may carry secret data, so ours are built in exactly sized
//! zeroizing buffers and answers are read into zeroizing buffers and then
//! straight into `SecretData`; the token is a `Secret` sent in a header
//! marked sensitive. No message built here carries a body or the token.
//!
//! Layout: the pure part (paths, bodies, answers, times) first, then
//! [`ExternalVault`], which sends.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use rampart_identity::https::{self, HttpsClient, Limits, Response, SecretBody};
use rampart_identity::{Secret, SYSTEM_CA_BUNDLE};
use rampart_proto::TenantId;
use rampart_vault::{
    CustomMetadataChange, MetadataUpdate, SecretData, SecretMetadata, SecretPath, SecretPrefix,
    SecretVersion, VaultError, VersionInfo, VersionMeta, MAX_DATA_BYTES,
};
use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// Largest answer read: a list of many keys, or a secret at the local
/// limit once escaped.
const MAX_ANSWER: usize = 4 << 20;

// === paths ===

/// `/v1/<mount>/<op>/<tenant>/<path>`.
fn secret_url(mount: &str, op: &str, tenant: &TenantId, path: &SecretPath) -> String {
    format!("/v1/{mount}/{op}/{tenant}/{path}")
}

/// The listing of a folder: `/v1/<mount>/metadata/<tenant>/<prefix>/`.
fn list_url(mount: &str, tenant: &TenantId, prefix: &SecretPrefix) -> String {
    if prefix.as_str().is_empty() {
        format!("/v1/{mount}/metadata/{tenant}/?list=true")
    } else {
        format!("/v1/{mount}/metadata/{tenant}/{prefix}/?list=true")
    }
}

// === request bodies ===

#[derive(Serialize)]
struct CasOptions {
    cas: u64,
}

/// A data write or patch.
#[derive(Serialize)]
struct DataBody<'a> {
    data: &'a SecretData,
    #[serde(skip_serializing_if = "Option::is_none")]
    options: Option<CasOptions>,
}

#[derive(Serialize)]
struct VersionsBody<'a> {
    versions: &'a [u64],
}

/// A metadata write; a `None` custom value is a JSON `null`, which a merge
/// patch reads as "remove".
#[derive(Serialize, Default)]
struct MetadataBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_versions: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cas_required: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delete_version_after: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    custom_metadata: Option<BTreeMap<String, Option<String>>>,
}

impl MetadataBody {
    fn new(u: &MetadataUpdate, custom: Option<BTreeMap<String, Option<String>>>) -> Self {
        Self {
            max_versions: u.max_versions,
            cas_required: u.cas_required,
            delete_version_after: u.delete_version_after.map(|d| format!("{}s", d.as_secs())),
            custom_metadata: custom,
        }
    }
}

/// Counts the bytes serde_json writes.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `value` as JSON in a buffer sized up front (so no reallocation leaves a
/// copy behind) and wiped on drop.
fn secret_json<T: Serialize>(value: &T) -> Result<Secret<Vec<u8>>, VaultError> {
    let bad = |e: serde_json::Error| VaultError::InvalidInput(e.to_string());
    let mut n = ByteCount(0);
    serde_json::to_writer(&mut n, value).map_err(bad)?;
    let mut out = Secret::new(Vec::with_capacity(n.0));
    serde_json::to_writer(out.expose_mut(), value).map_err(bad)?;
    Ok(out)
}

/// The custom metadata of a merge patch that replaces `current` with `next`:
/// every key of `next`, and a removal for each other key of `current`.
fn replacement_patch(
    current: &BTreeMap<String, String>,
    next: BTreeMap<String, String>,
) -> BTreeMap<String, Option<String>> {
    let mut patch: BTreeMap<String, Option<String>> =
        current.keys().map(|k| (k.clone(), None)).collect();
    patch.extend(next.into_iter().map(|(k, v)| (k, Some(v))));
    patch
}

/// `current` with a merge applied (set each `Some`, remove each `None`).
fn merged(
    mut current: BTreeMap<String, String>,
    merge: BTreeMap<String, Option<String>>,
) -> BTreeMap<String, String> {
    for (k, v) in merge {
        match v {
            Some(v) => current.insert(k, v),
            None => current.remove(&k),
        };
    }
    current
}

// === answers ===

#[derive(Deserialize)]
struct Envelope<T> {
    data: T,
}

/// A version as Vault prints it (a write's answer, a read's `metadata`).
#[derive(Deserialize)]
struct VersionJson {
    version: u64,
    created_time: String,
    #[serde(default)]
    deletion_time: String,
    #[serde(default)]
    destroyed: bool,
    #[serde(default)]
    custom_metadata: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct ReadJson {
    #[serde(default)]
    data: Option<SecretData>,
    metadata: VersionJson,
}

#[derive(Deserialize)]
struct VersionMetaJson {
    created_time: String,
    #[serde(default)]
    deletion_time: String,
    #[serde(default)]
    destroyed: bool,
}

#[derive(Deserialize)]
struct MetadataJson {
    #[serde(default)]
    cas_required: bool,
    created_time: String,
    #[serde(default)]
    current_version: u64,
    #[serde(default)]
    custom_metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    delete_version_after: String,
    #[serde(default)]
    max_versions: u32,
    #[serde(default)]
    oldest_version: u64,
    updated_time: String,
    #[serde(default)]
    versions: BTreeMap<String, VersionMetaJson>,
}

#[derive(Deserialize)]
struct KeysJson {
    #[serde(default)]
    keys: Vec<String>,
}

#[derive(Deserialize)]
struct ErrorsJson {
    #[serde(default)]
    errors: Vec<String>,
}

fn unexpected(op: &'static str, what: &str) -> VaultError {
    VaultError::Storage(format!("external vault {op}: unexpected answer: {what}"))
}

/// Parses an answer. The error names the place only: serde's messages can
/// quote the value they choked on, which may be secret.
fn parse<'a, T: Deserialize<'a>>(op: &'static str, body: &'a [u8]) -> Result<T, VaultError> {
    serde_json::from_slice(body).map_err(|e| {
        unexpected(
            op,
            &format!(
                "not the expected JSON (line {} column {})",
                e.line(),
                e.column()
            ),
        )
    })
}

/// The server's error messages, shortened and stripped of control
/// characters.
fn server_message(body: &[u8]) -> String {
    let text = serde_json::from_slice::<ErrorsJson>(body)
        .map(|e| e.errors.join("; "))
        .unwrap_or_default();
    text.chars().filter(|c| !c.is_control()).take(300).collect()
}

/// The one place a failed answer becomes a [`VaultError`].
fn status_error(op: &'static str, r: &Response) -> VaultError {
    match r.status {
        404 => VaultError::NotFound,
        400 => {
            let message = server_message(r.body.expose());
            if message.contains("check-and-set parameter required") {
                VaultError::CasRequired
            } else {
                VaultError::InvalidInput(message)
            }
        }
        status => VaultError::Storage(format!(
            "external vault {op}: status {status}: {}",
            server_message(r.body.expose())
        )),
    }
}

/// Whether a refusal is Vault's check-and-set mismatch.
fn is_cas_mismatch(e: &VaultError) -> bool {
    matches!(e, VaultError::InvalidInput(m) if m.contains("did not match the current version"))
}

fn time(op: &'static str, s: &str) -> Result<u64, VaultError> {
    parse_rfc3339_ms(s).ok_or_else(|| unexpected(op, "a time that is not RFC 3339"))
}

/// Vault prints `""` for no deletion time.
fn optional_time(op: &'static str, s: &str) -> Result<Option<u64>, VaultError> {
    if s.is_empty() {
        Ok(None)
    } else {
        time(op, s).map(Some)
    }
}

fn version_info(op: &'static str, v: VersionJson) -> Result<VersionInfo, VaultError> {
    let meta = VersionMeta::new(
        time(op, &v.created_time)?,
        optional_time(op, &v.deletion_time)?,
        v.destroyed,
    );
    Ok(VersionInfo::new(
        v.version,
        meta,
        v.custom_metadata.unwrap_or_default(),
    ))
}

/// A data read's answer: 200 with the data, or 404 carrying only the
/// metadata of a deleted or destroyed version, or plain 404.
fn decode_read(r: &Response) -> Result<SecretVersion, VaultError> {
    const OP: &str = "read";
    match r.status {
        200 => {
            let e: Envelope<ReadJson> = parse(OP, r.body.expose())?;
            let info = version_info(OP, e.data.metadata)?;
            Ok(SecretVersion::new(info, e.data.data.map(Secret::new)))
        }
        404 => match serde_json::from_slice::<Envelope<ReadJson>>(r.body.expose()) {
            Ok(e) => Ok(SecretVersion::new(version_info(OP, e.data.metadata)?, None)),
            Err(_) => Err(VaultError::NotFound),
        },
        _ => Err(status_error(OP, r)),
    }
}

fn decode_metadata(r: &Response) -> Result<SecretMetadata, VaultError> {
    const OP: &str = "metadata read";
    if r.status != 200 {
        return Err(status_error(OP, r));
    }
    let m = parse::<Envelope<MetadataJson>>(OP, r.body.expose())?.data;
    let mut out = SecretMetadata::new(time(OP, &m.created_time)?, time(OP, &m.updated_time)?);
    out.current_version = m.current_version;
    out.oldest_version = m.oldest_version;
    out.max_versions = m.max_versions;
    out.cas_required = m.cas_required;
    out.delete_version_after = parse_go_duration(&m.delete_version_after)
        .ok_or_else(|| unexpected(OP, "delete_version_after is not a duration"))?;
    out.custom_metadata = m.custom_metadata.unwrap_or_default();
    for (n, v) in m.versions {
        let n = n
            .parse::<u64>()
            .map_err(|_| unexpected(OP, "a version that is not a number"))?;
        let meta = VersionMeta::new(
            time(OP, &v.created_time)?,
            optional_time(OP, &v.deletion_time)?,
            v.destroyed,
        );
        out.versions.insert(n, meta);
    }
    Ok(out)
}

/// A listing's answer; a missing folder is an empty one, as locally.
fn decode_list(r: &Response) -> Result<Vec<String>, VaultError> {
    const OP: &str = "list";
    match r.status {
        200 => {
            let mut keys = parse::<Envelope<KeysJson>>(OP, r.body.expose())?.data.keys;
            keys.sort();
            Ok(keys)
        }
        404 => Ok(Vec::new()),
        _ => Err(status_error(OP, r)),
    }
}

// === times ===

fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm, the
/// inverse of the one `rampart_audit::rfc3339_s` prints with).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Unix milliseconds of an RFC 3339 time as Vault prints them
/// (`2026-11-25T10:50:00.123456789Z`, or with an offset like `+02:00`).
/// Digits past milliseconds are dropped; times before 1970 and anything
/// malformed are `None`.
fn parse_rfc3339_ms(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i64> {
        let t = s.get(from..to)?;
        if !t.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    let seps = b[4] == b'-'
        && b[7] == b'-'
        && matches!(b[10], b'T' | b't' | b' ')
        && b[13] == b':'
        && b[16] == b':';
    if !seps {
        return None;
    }
    let (y, mo, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (h, mi, sec) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 {
        return None;
    }
    // 60 is a leap second; it counts as the last second of its minute.
    if sec > 60 {
        return None;
    }
    let sec = sec.min(59);
    let mut i = 19;
    let mut ms = 0i64;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        ms = b[start..i]
            .iter()
            .copied()
            .chain(std::iter::repeat(b'0'))
            .take(3)
            .fold(0, |acc, c| acc * 10 + i64::from(c - b'0'));
    }
    let offset = match s.get(i..)? {
        "Z" | "z" => 0,
        tz if tz.len() == 6 && tz.as_bytes()[3] == b':' => {
            let sign = match tz.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (oh, om) = (num(i + 1, i + 3)?, num(i + 4, i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            sign * (oh * 3600 + om * 60)
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset;
    u64::try_from(secs.checked_mul(1000)?.checked_add(ms)?).ok()
}

/// A Go duration as Vault prints `delete_version_after` (`0s`, `1h30m0s`,
/// `1.5s`, `250ms`).
fn parse_go_duration(s: &str) -> Option<Duration> {
    if s.is_empty() || s == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = s;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let (num, after) = rest.split_at(num_end);
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let scale: u128 = match unit {
            "h" => 3_600_000_000_000,
            "m" => 60_000_000_000,
            "s" => 1_000_000_000,
            "ms" => 1_000_000,
            "us" | "µs" => 1_000,
            "ns" => 1,
            _ => return None,
        };
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        let whole: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
        let mut part = 0u128;
        let mut unit_ns = scale;
        for c in frac.bytes() {
            if !c.is_ascii_digit() {
                return None;
            }
            unit_ns /= 10;
            part += u128::from(c - b'0') * unit_ns;
        }
        total = total.checked_add(whole.checked_mul(scale)?.checked_add(part)?)?;
        rest = next;
    }
    u64::try_from(total).ok().map(Duration::from_nanos)
}

// === impl ExternalVault ===

/// A request body and how it is typed.
enum Payload {
    None,
    Json(Secret<Vec<u8>>),
    /// Vault's PATCH endpoints take only `application/merge-patch+json`.
    MergePatch(Secret<Vec<u8>>),
}

/// One KV v2 mount of an external Vault or OpenBao.
pub(crate) struct ExternalVault {
    client: HttpsClient,
    address: String,
    mount: String,
    token: Secret<String>,
}

impl fmt::Debug for ExternalVault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExternalVault")
            .field("address", &self.address)
            .field("mount", &self.mount)
            .finish_non_exhaustive()
    }
}

impl ExternalVault {
    /// Checks the settings and reads the CA file; makes no request. Errors
    /// name the configuration key at fault.
    pub(crate) fn new(
        address: &str,
        mount: &str,
        ca_file: Option<PathBuf>,
        token: Secret<String>,
    ) -> Result<Self, ConfigError> {
        let invalid = |key: &'static str, message: String| ConfigError::Invalid { key, message };
        let uri: http::Uri = address.parse().map_err(|_| {
            invalid(
                "vault_external_address",
                format!("`{address}` is not a URL"),
            )
        })?;
        if uri.scheme_str() != Some("https") {
            return Err(invalid(
                "vault_external_address",
                "must be an https:// URL".into(),
            ));
        }
        let ca = ca_file.unwrap_or_else(|| PathBuf::from(SYSTEM_CA_BUNDLE));
        let tls = https::tls_config(&ca).map_err(|e| {
            invalid(
                "vault_external_ca_cert_path",
                format!("{}: {e}", ca.display()),
            )
        })?;
        let mut limits = Limits::default();
        limits.max_body = MAX_ANSWER;
        let client = HttpsClient::new(&uri, Some(tls), "rampart-server/1")
            .map_err(|e| invalid("vault_external_address", e.to_string()))?
            .with_limits(limits);
        let token_key = "vault_external_token_path";
        if token.expose().is_empty() {
            return Err(invalid(token_key, "the token is empty".into()));
        }
        if HeaderValue::from_str(token.expose()).is_err() {
            return Err(invalid(
                token_key,
                "the token has characters not allowed in a header".into(),
            ));
        }
        Ok(Self {
            client,
            address: format!("https://{}", uri.authority().map_or("", |a| a.as_str())),
            mount: mount.trim_matches('/').to_string(),
            token,
        })
    }

    /// `https://host:port` and the mount, for logs.
    pub(crate) fn describe(&self) -> String {
        format!("{} mount {}", self.address, self.mount)
    }

    async fn call(
        &self,
        op: &'static str,
        method: Method,
        path: &str,
        payload: Payload,
    ) -> Result<Response, VaultError> {
        let storage = |what: &str| VaultError::Storage(format!("external vault {op}: {what}"));
        let mut token =
            HeaderValue::from_str(self.token.expose()).map_err(|_| storage("unusable token"))?;
        token.set_sensitive(true);
        let mut headers = vec![
            (
                http::header::ACCEPT,
                HeaderValue::from_static("application/json"),
            ),
            (HeaderName::from_static("x-vault-token"), token),
            (
                HeaderName::from_static("x-vault-request"),
                HeaderValue::from_static("true"),
            ),
        ];
        let body = match payload {
            Payload::None => SecretBody::empty(),
            Payload::Json(b) => {
                headers.push((
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ));
                SecretBody::new(b)
            }
            Payload::MergePatch(b) => {
                headers.push((
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/merge-patch+json"),
                ));
                SecretBody::new(b)
            }
        };
        self.client
            .send(method, path, headers, body)
            .await
            .map_err(|e| storage(&e.to_string()))
    }

    /// Sends a request whose success has no body (200 or 204).
    async fn call_no_content(
        &self,
        op: &'static str,
        method: Method,
        path: &str,
        payload: Payload,
    ) -> Result<(), VaultError> {
        let r = self.call(op, method, path, payload).await?;
        match r.status {
            200 | 204 => Ok(()),
            _ => Err(status_error(op, &r)),
        }
    }

    fn url(&self, op: &str, tenant: &TenantId, path: &SecretPath) -> String {
        secret_url(&self.mount, op, tenant, path)
    }

    /// Reads a version: `None` or `Some(0)` is the current one.
    pub(crate) async fn read(
        &self,
        tenant: &TenantId,
        path: &SecretPath,
        version: Option<u64>,
    ) -> Result<SecretVersion, VaultError> {
        let mut url = self.url("data", tenant, path);
        if let Some(v) = version.filter(|v| *v > 0) {
            url.push_str(&format!("?version={v}"));
        }
        let r = self.call("read", Method::GET, &url, Payload::None).await?;
        decode_read(&r)
    }

    /// A data write (`merge = false`) or merge patch.
    pub(crate) async fn write(
        &self,
        tenant: &TenantId,
        path: &SecretPath,
        data: &Secret<SecretData>,
        cas: Option<u64>,
        merge: bool,
    ) -> Result<VersionInfo, VaultError> {
        let op = if merge { "patch" } else { "write" };
        // The local store's limit, so that a backend change changes nothing
        // for clients (a patch is checked for its own size only: the
        // merged version is the external vault's to build).
        let mut n = ByteCount(0);
        serde_json::to_writer(&mut n, data.expose())
            .map_err(|e| VaultError::InvalidInput(e.to_string()))?;
        if n.0 > MAX_DATA_BYTES {
            return Err(VaultError::InvalidInput(format!(
                "secret data is larger than {MAX_DATA_BYTES} bytes"
            )));
        }
        let body = secret_json(&DataBody {
            data: data.expose(),
            options: cas.map(|cas| CasOptions { cas }),
        })?;
        let (method, payload) = if merge {
            (Method::PATCH, Payload::MergePatch(body))
        } else {
            (Method::POST, Payload::Json(body))
        };
        let url = self.url("data", tenant, path);
        let r = self.call(op, method, &url, payload).await?;
        if r.status != 200 {
            let e = status_error(op, &r);
            return Err(match cas {
                Some(expected) if is_cas_mismatch(&e) => {
                    // Vault does not say which version is current; ask, so
                    // the refusal reads as the local one.
                    match self.read_metadata(tenant, path).await {
                        Ok(m) => VaultError::CasMismatch {
                            expected,
                            current: m.current_version,
                        },
                        Err(VaultError::NotFound) => VaultError::CasMismatch {
                            expected,
                            current: 0,
                        },
                        Err(_) => e,
                    }
                }
                _ => e,
            });
        }
        version_info(
            op,
            parse::<Envelope<VersionJson>>(op, r.body.expose())?.data,
        )
    }

    pub(crate) async fn delete_latest(
        &self,
        tenant: &TenantId,
        path: &SecretPath,
    ) -> Result<(), VaultError> {
        let url = self.url("data", tenant, path);
        self.call_no_content("delete", Method::DELETE, &url, Payload::None)
            .await
    }

    /// Soft-deletes, undeletes or destroys versions: `op` is `delete`,
    /// `undelete` or `destroy`, Vault's endpoint names.
    pub(crate) async fn versions(
        &self,
        op: &'static str,
        tenant: &TenantId,
        path: &SecretPath,
        versions: &[u64],
    ) -> Result<(), VaultError> {
        let body = secret_json(&VersionsBody { versions })?;
        let url = self.url(op, tenant, path);
        self.call_no_content(op, Method::POST, &url, Payload::Json(body))
            .await
    }

    pub(crate) async fn read_metadata(
        &self,
        tenant: &TenantId,
        path: &SecretPath,
    ) -> Result<SecretMetadata, VaultError> {
        let url = self.url("metadata", tenant, path);
        let r = self
            .call("metadata read", Method::GET, &url, Payload::None)
            .await?;
        decode_metadata(&r)
    }

    /// Vault's metadata POST (`merge = false`: creates the secret when
    /// missing, replaces `custom_metadata`) or PATCH (the secret must
    /// exist). A change of `custom_metadata` that Vault's method does not
    /// express (a merge in a POST, a replacement in a PATCH) reads the
    /// current metadata first.
    pub(crate) async fn write_metadata(
        &self,
        tenant: &TenantId,
        path: &SecretPath,
        update: MetadataUpdate,
        merge: bool,
    ) -> Result<(), VaultError> {
        let op = if merge {
            "metadata patch"
        } else {
            "metadata write"
        };
        let custom = match (&update.custom_metadata, merge) {
            (None, _) => None,
            (Some(CustomMetadataChange::Merge(m)), true) => Some(m.clone()),
            (Some(CustomMetadataChange::Replace(m)), false) => Some(
                m.iter()
                    .map(|(k, v)| (k.clone(), Some(v.clone())))
                    .collect(),
            ),
            (Some(CustomMetadataChange::Replace(m)), true) => {
                let current = self.read_metadata(tenant, path).await?.custom_metadata;
                Some(replacement_patch(&current, m.clone()))
            }
            (Some(CustomMetadataChange::Merge(m)), false) => {
                let current = match self.read_metadata(tenant, path).await {
                    Ok(meta) => meta.custom_metadata,
                    Err(VaultError::NotFound) => BTreeMap::new(),
                    Err(e) => return Err(e),
                };
                Some(
                    merged(current, m.clone())
                        .into_iter()
                        .map(|(k, v)| (k, Some(v)))
                        .collect(),
                )
            }
            // `CustomMetadataChange` may grow; refuse what we cannot send.
            (Some(_), _) => {
                return Err(VaultError::InvalidInput(
                    "unsupported custom_metadata change".into(),
                ))
            }
        };
        let body = secret_json(&MetadataBody::new(&update, custom))?;
        let url = self.url("metadata", tenant, path);
        if merge {
            self.call_no_content(op, Method::PATCH, &url, Payload::MergePatch(body))
                .await
        } else {
            self.call_no_content(op, Method::POST, &url, Payload::Json(body))
                .await
        }
    }

    pub(crate) async fn delete_metadata(
        &self,
        tenant: &TenantId,
        path: &SecretPath,
    ) -> Result<(), VaultError> {
        let url = self.url("metadata", tenant, path);
        self.call_no_content("metadata delete", Method::DELETE, &url, Payload::None)
            .await
    }

    /// The direct children of a folder, sorted, folders with a trailing
    /// `/`; empty when the folder holds nothing.
    pub(crate) async fn list(
        &self,
        tenant: &TenantId,
        prefix: &SecretPrefix,
    ) -> Result<Vec<String>, VaultError> {
        let url = list_url(&self.mount, tenant, prefix);
        let r = self.call("list", Method::GET, &url, Payload::None).await?;
        decode_list(&r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault_api::rfc3339;

    fn answer(status: u16, body: &str) -> Response {
        Response {
            status,
            body: Secret::new(body.as_bytes().to_vec()),
        }
    }

    #[test]
    fn rfc3339_times_parse_to_milliseconds() {
        for ms in [
            0u64,
            951_782_400_000,
            1_795_604_400_000,
            4_102_444_799_000,
            1_709_164_800_000,
        ] {
            assert_eq!(parse_rfc3339_ms(&rfc3339(ms)), Some(ms), "{}", rfc3339(ms));
        }
        assert_eq!(
            parse_rfc3339_ms("2026-11-25T11:00:00.123456789Z"),
            Some(1_795_604_400_123)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-11-25T11:00:00.5Z"),
            Some(1_795_604_400_500)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-11-25T13:30:00+02:30"),
            Some(1_795_604_400_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-11-25T08:00:00.000-03:00"),
            Some(1_795_604_400_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2000-02-29t00:00:00z"),
            Some(951_782_400_000)
        );
        for bad in [
            "",
            "2026-11-25",
            "2026-11-25T11:00:00",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-11-25T24:00:00Z",
            "2026-11-25T11:00:00.Z",
            "2026-11-25T11:00:00+2:00",
            "2026-11-25T11:00:00 UTC",
            "1969-12-31T23:59:59Z",
            "2026-1a-25T11:00:00Z",
            "+026-11-25T11:00:00Z",
            "2026-11-25T11:00:00Zé",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn go_durations() {
        let d = |s| parse_go_duration(s);
        assert_eq!(d("0s"), Some(Duration::ZERO));
        assert_eq!(d(""), Some(Duration::ZERO));
        assert_eq!(d("1h30m0s"), Some(Duration::from_secs(5400)));
        assert_eq!(d("45s"), Some(Duration::from_secs(45)));
        assert_eq!(d("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(d("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(d("3µs"), Some(Duration::from_micros(3)));
        for bad in ["5", "1x", "s", "1h-2m", ".s"] {
            assert_eq!(d(bad), None, "{bad}");
        }
    }

    #[test]
    fn paths_stay_under_the_tenant() {
        let t = TenantId::parse("acme").unwrap();
        let p = SecretPath::parse("billing/prod/db").unwrap();
        assert_eq!(
            secret_url("kv", "data", &t, &p),
            "/v1/kv/data/acme/billing/prod/db"
        );
        assert_eq!(
            list_url("kv", &t, &SecretPrefix::root()),
            "/v1/kv/metadata/acme/?list=true"
        );
        assert_eq!(
            list_url("kv", &t, &SecretPrefix::parse("billing/").unwrap()),
            "/v1/kv/metadata/acme/billing/?list=true"
        );
    }

    #[test]
    fn bodies_carry_data_and_options() {
        let data = Secret::new(SecretData::new(
            serde_json::json!({"password": "p\"w"})
                .as_object()
                .unwrap()
                .clone(),
        ));
        let body = secret_json(&DataBody {
            data: data.expose(),
            options: Some(CasOptions { cas: 2 }),
        })
        .unwrap();
        assert_eq!(
            body.expose().as_slice(),
            br#"{"data":{"password":"p\"w"},"options":{"cas":2}}"#
        );
        assert_eq!(body.expose().len(), body.expose().capacity());
        let mut u = MetadataUpdate::default();
        u.max_versions = Some(3);
        u.delete_version_after = Some(Duration::from_secs(90));
        let current = BTreeMap::from([("old".to_string(), "x".to_string())]);
        let next = BTreeMap::from([("new".to_string(), "y".to_string())]);
        let body = secret_json(&MetadataBody::new(
            &u,
            Some(replacement_patch(&current, next)),
        ))
        .unwrap();
        assert_eq!(
            std::str::from_utf8(body.expose()).unwrap(),
            r#"{"max_versions":3,"delete_version_after":"90s","custom_metadata":{"new":"y","old":null}}"#
        );
        let m = merged(
            BTreeMap::from([("a".into(), "1".into()), ("b".into(), "2".into())]),
            BTreeMap::from([("a".into(), None), ("c".into(), Some("3".into()))]),
        );
        assert_eq!(
            m,
            BTreeMap::from([("b".into(), "2".into()), ("c".into(), "3".into())])
        );
    }

    #[test]
    fn answers_become_vault_types() {
        let r = answer(
            200,
            r#"{"request_id":"x","data":{"data":{"pw":"s3cret"},"metadata":{"created_time":"2026-11-25T11:00:00.25Z","custom_metadata":{"owner":"ops"},"deletion_time":"","destroyed":false,"version":2}}}"#,
        );
        let v = decode_read(&r).unwrap();
        assert_eq!(v.info.version, 2);
        assert_eq!(v.info.meta.created_ms, 1_795_604_400_250);
        assert_eq!(v.info.meta.deletion_ms, None);
        assert_eq!(v.info.custom_metadata["owner"], "ops");
        assert_eq!(v.data.unwrap().expose().as_map()["pw"], "s3cret");
        // A deleted version: 404 with its metadata, no data.
        let r = answer(
            404,
            r#"{"data":{"data":null,"metadata":{"created_time":"2026-11-25T11:00:00Z","custom_metadata":null,"deletion_time":"2026-11-25T11:00:01Z","destroyed":false,"version":1}}}"#,
        );
        let v = decode_read(&r).unwrap();
        assert!(v.data.is_none());
        assert_eq!(v.info.meta.deletion_ms, Some(1_795_604_401_000));
        assert_eq!(
            decode_read(&answer(404, r#"{"errors":[]}"#)).unwrap_err(),
            VaultError::NotFound
        );
        let r = answer(
            200,
            r#"{"data":{"cas_required":true,"created_time":"2026-11-25T11:00:00Z","current_version":3,"custom_metadata":null,"delete_version_after":"1h0m0s","max_versions":5,"oldest_version":1,"updated_time":"2026-11-25T11:00:02Z","versions":{"1":{"created_time":"2026-11-25T11:00:00Z","deletion_time":"","destroyed":true},"3":{"created_time":"2026-11-25T11:00:02Z","deletion_time":"","destroyed":false}}}}"#,
        );
        let m = decode_metadata(&r).unwrap();
        assert_eq!(
            (m.current_version, m.oldest_version, m.max_versions),
            (3, 1, 5)
        );
        assert!(m.cas_required);
        assert_eq!(m.delete_version_after, Duration::from_secs(3600));
        assert!(m.versions[&1].destroyed);
        assert_eq!(m.versions.keys().copied().collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(
            decode_list(&answer(200, r#"{"data":{"keys":["z","a/"]}}"#)).unwrap(),
            vec!["a/", "z"]
        );
        assert!(decode_list(&answer(404, r#"{"errors":[]}"#))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn refusals_map_like_the_local_store() {
        let e = |status, body| status_error("write", &answer(status, body));
        assert_eq!(e(404, r#"{"errors":[]}"#), VaultError::NotFound);
        assert_eq!(
            e(
                400,
                r#"{"errors":["check-and-set parameter required for this call"]}"#
            ),
            VaultError::CasRequired
        );
        let mismatch = e(
            400,
            r#"{"errors":["check-and-set parameter did not match the current version"]}"#,
        );
        assert!(is_cas_mismatch(&mismatch), "{mismatch:?}");
        assert_eq!(
            e(400, r#"{"errors":["no version number provided"]}"#),
            VaultError::InvalidInput("no version number provided".into())
        );
        assert!(matches!(
            e(403, r#"{"errors":["permission denied"]}"#),
            VaultError::Storage(m) if m.contains("403") && m.contains("permission denied")
        ));
        assert!(matches!(e(502, "<html>"), VaultError::Storage(_)));
    }

    #[test]
    fn malformed_answers_never_quote_the_body() {
        let r = answer(
            200,
            r#"{"data":{"data":{"pw":"CANARY"},"metadata":{"version":"CANARY2"}}}"#,
        );
        let e = decode_read(&r).unwrap_err();
        let text = format!("{e} {e:?}");
        assert!(!text.contains("CANARY"), "{text}");
    }
}
