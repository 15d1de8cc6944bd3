//! Secrets over HTTPS: Vault's KV version 2 engine at the `secret/` mount
//! and AppRole login (for `hvac`, the `vault` / `bao` CLIs), and the
//! KeyVault form `GET /v1/secret/APP/ENV/PATH` (seed 004). Secrets are
//! read and written through `shared.secrets` (the local store or an
//! external vault, see `secret_backend`); AppRoles through `shared.vault`.
//!
//! Every secret path is `APP/ENV/PATH...` inside the tenant of the caller's
//! credential, and goes through the same authorization engine as
//! everything else: `secret_read` to read or list, `secret_write` to write,
//! delete or destroy, on `secret:APP/ENV/PATH` (ACL rules with `secret:`
//! patterns; no built-in role grants secrets). AppRole management needs
//! `key_admin`. Every access is audited with the path and version, never
//! the value. Errors follow Vault: `{"errors":[...]}`, 404 with an empty
//! list for a missing secret, 204 for deletes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use rampart_audit::Outcome;
use rampart_authz::{AdminArea, Permission, Resource};
use rampart_identity::{Principal, PrincipalKind, Secret};
use rampart_proto::TenantId;
use rampart_vault::{
    CustomMetadataChange, MetadataUpdate, RoleName, RoleSpec, SecretData, SecretMetadata,
    SecretPath, SecretPrefix, VaultError, VersionInfo, VersionOp,
};
use serde_json::{json, Map, Value};
use tracing::warn;

use crate::access::{Route, RouteName};
use crate::audit;
use crate::auth::now_ms;
use crate::http::{ApiError, Authed, Body, PeerInfo};
use crate::secret_backend::blocking;
use crate::vault_api::rfc3339;
use crate::Shared;

/// A Vault-shaped failure.
pub(crate) enum KvError {
    Api(ApiError),
    /// 404 with `{"errors":[]}`, as Vault answers a missing secret.
    Missing,
    /// 404 whose body still carries a deleted version's metadata.
    Gone(Value),
    Bad(String),
}

impl From<ApiError> for KvError {
    fn from(e: ApiError) -> Self {
        KvError::Api(e)
    }
}

impl From<VaultError> for KvError {
    fn from(e: VaultError) -> Self {
        match e {
            VaultError::NotFound | VaultError::VersionNotFound => KvError::Missing,
            VaultError::LoginDenied => KvError::Bad("invalid role or secret ID".into()),
            VaultError::Storage(detail) => {
                tracing::error!(error = %detail, "vault storage failure");
                KvError::Api(ApiError::Internal)
            }
            e => KvError::Bad(e.to_string()),
        }
    }
}

impl IntoResponse for KvError {
    fn into_response(self) -> Response {
        match self {
            KvError::Api(e) => e.into_response(),
            KvError::Missing => {
                (StatusCode::NOT_FOUND, Json(json!({ "errors": [] }))).into_response()
            }
            KvError::Gone(body) => (StatusCode::NOT_FOUND, Json(body)).into_response(),
            KvError::Bad(m) => {
                (StatusCode::BAD_REQUEST, Json(json!({ "errors": [m] }))).into_response()
            }
        }
    }
}

type KvResult = Result<Response, KvError>;

/// Vault's response envelope around `data` (or `auth`), serialized
/// straight from borrowed parts: no `serde_json::Value` tree is built, and a
/// secret's value (or a new token) is copied only into the response body,
/// not into an intermediate map that would be freed without zeroing. The
/// fields are in the order Vault's JSON had them here before (sorted).
#[derive(serde::Serialize)]
struct Envelope<D, A> {
    auth: Option<A>,
    data: Option<D>,
    lease_duration: u64,
    lease_id: &'static str,
    renewable: bool,
    request_id: RequestId,
    warnings: Option<()>,
    wrap_info: Option<()>,
}

impl<D, A> Envelope<D, A> {
    /// A fresh request id and no lease, wrapping or warnings.
    fn new(data: Option<D>, auth: Option<A>) -> Self {
        Envelope {
            auth,
            data,
            lease_duration: 0,
            lease_id: "",
            renewable: false,
            request_id: RequestId::new(),
            warnings: None,
            wrap_info: None,
        }
    }
}

impl<D> Envelope<D, ()> {
    fn data(data: D) -> Self {
        Envelope::new(Some(data), None)
    }
}

fn envelope(data: impl serde::Serialize) -> Value {
    serde_json::to_value(Envelope::data(data)).unwrap_or(Value::Null)
}

/// A response's `request_id`: a random (version 4 form) UUID, as Vault
/// gives. The random bytes come from the operating system's generator
/// through a small per-thread pool, one system call per 256 ids instead of
/// one per response; ids are not secrets, only unique.
struct RequestId([u8; 36]);

impl RequestId {
    fn new() -> RequestId {
        const POOL: usize = 4096;
        thread_local! {
            static RANDOM: std::cell::RefCell<(Box<[u8; POOL]>, usize)> =
                std::cell::RefCell::new((Box::new([0; POOL]), POOL));
        }
        let mut b = [0u8; 16];
        RANDOM.with(|r| {
            let (pool, used) = &mut *r.borrow_mut();
            if *used == POOL {
                let _ =
                    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut pool[..]);
                *used = 0;
            }
            b.copy_from_slice(&pool[*used..*used + 16]);
            *used += 16;
        });
        RequestId(rampart_vault::uuid_v4_text(b))
    }

    fn as_str(&self) -> &str {
        // Only ASCII hex digits and dashes are ever written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl serde::Serialize for RequestId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

fn ok(data: impl serde::Serialize) -> KvResult {
    Ok((StatusCode::OK, Json(Envelope::data(data))).into_response())
}

fn no_content() -> KvResult {
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn time_or_empty(ms: Option<u64>) -> String {
    ms.map(rfc3339).unwrap_or_default()
}

/// The `metadata` of a version, as Vault gives it.
#[derive(serde::Serialize)]
struct VersionJson<'a> {
    created_time: String,
    custom_metadata: Option<&'a BTreeMap<String, String>>,
    deletion_time: String,
    destroyed: bool,
    version: u64,
}

fn version_json(v: &VersionInfo) -> VersionJson<'_> {
    VersionJson {
        created_time: rfc3339(v.meta.created_ms),
        custom_metadata: Some(&v.custom_metadata).filter(|m| !m.is_empty()),
        deletion_time: time_or_empty(v.meta.deletion_ms),
        destroyed: v.meta.destroyed,
        version: v.version,
    }
}

/// A data read's `data`: the secret's keys and values, borrowed, and the
/// version's metadata.
#[derive(serde::Serialize)]
struct DataRead<'a> {
    data: Option<&'a Map<String, Value>>,
    metadata: VersionJson<'a>,
}

fn metadata_json(m: &SecretMetadata) -> Value {
    let versions: Map<String, Value> = m
        .versions
        .iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                json!({
                    "created_time": rfc3339(v.created_ms),
                    "deletion_time": time_or_empty(v.deletion_ms),
                    "destroyed": v.destroyed,
                }),
            )
        })
        .collect();
    json!({
        "cas_required": m.cas_required,
        "created_time": rfc3339(m.created_ms),
        "current_version": m.current_version,
        "custom_metadata": if m.custom_metadata.is_empty() { Value::Null } else { json!(m.custom_metadata) },
        "delete_version_after": format!("{}s", m.delete_version_after.as_secs()),
        "max_versions": m.max_versions,
        "oldest_version": m.oldest_version,
        "updated_time": rfc3339(m.updated_ms),
        "versions": versions,
    })
}

/// `secret:TENANT/PATH` for the caller's tenant.
fn secret_resource(p: &Principal, path: &str) -> Result<Resource, KvError> {
    Resource::parse(&format!("secret:{}/{path}", p.tenant))
        .map_err(|e| KvError::Bad(format!("invalid secret path: {e}")))
}

/// The caller, allowed `perm` on the secret (or prefix) `path`, or 403.
fn allowed(
    shared: &Shared,
    a: &Authed,
    path: &str,
    perm: Permission,
) -> Result<Principal, KvError> {
    let p = a.principal()?.clone();
    let resource = secret_resource(&p, path)?;
    if !shared.permits(&p, &resource, perm) {
        let ev = audit::by(&p, "secret.denied", perm.as_str(), Outcome::Denied)
            .meta("path", path.to_string());
        shared.audit.record(a.origin().apply(ev));
        return Err(KvError::Api(ApiError::Forbidden));
    }
    Ok(p)
}

/// Records a secret access (never its value); without the record the
/// request fails with 503. Writes wait for the record to be fsynced; reads
/// (`read`, `list`) wait for it to be written to the audit file, as Vault's
/// audit devices do: an fsync per read would cost more than a power cut
/// could take (the last reads' records), while a process crash loses
/// nothing.
async fn audited(
    shared: &Shared,
    a: &Authed,
    p: &Principal,
    event: &str,
    action: &str,
    path: &str,
    version: Option<u64>,
) -> Result<(), KvError> {
    let mut ev = audit::by(p, event, action, Outcome::Success).meta("path", path.to_string());
    if let Some(v) = version {
        ev = ev.meta("version", v);
    }
    let ev = a.origin().apply(ev);
    let recorded = if matches!(action, "read" | "list") {
        shared.audit.written(ev).await
    } else {
        shared.audit.mandatory(ev).await
    };
    recorded.map_err(|_| KvError::Api(ApiError::Unavailable))
}

fn secret_path(raw: &str) -> Result<SecretPath, KvError> {
    SecretPath::parse(raw.trim_end_matches('/'))
        .map_err(|e| KvError::Bad(format!("invalid secret path `{raw}`: {e}")))
}

fn data_of(v: Option<&Value>) -> Result<Secret<SecretData>, KvError> {
    match v {
        Some(Value::Object(m)) => Ok(Secret::new(SecretData::new(m.clone()))),
        _ => Err(KvError::Bad("no data provided".into())),
    }
}

fn cas_of(body: &Value) -> Result<Option<u64>, KvError> {
    match body.get("options").and_then(|o| o.get("cas")) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .map(Some)
            .ok_or_else(|| KvError::Bad("options.cas must be a version number".into())),
    }
}

fn versions_of(body: &Option<Value>) -> Result<Vec<u64>, KvError> {
    let list = body
        .as_ref()
        .and_then(|b| b.get("versions"))
        .and_then(Value::as_array)
        .ok_or_else(|| KvError::Bad("no versions provided".into()))?;
    list.iter()
        .map(|v| {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .ok_or_else(|| KvError::Bad("versions must be numbers".into()))
        })
        .collect()
}

// === /v1/secret/data/PATH ===

pub(crate) async fn data(
    State(shared): State<Arc<Shared>>,
    a: Authed,
    method: Method,
    Path(params): Path<HashMap<String, String>>,
    Query(q): Query<HashMap<String, String>>,
    Body(body): Body<Option<Value>>,
) -> KvResult {
    let raw = params.get("path").cloned().unwrap_or_default();
    let path = secret_path(&raw)?;
    let key = path.to_string();
    let secrets = &shared.secrets;
    let now = now_ms();
    match method {
        Method::GET => {
            let p = allowed(&shared, &a, &key, Permission::SecretRead)?;
            let version = match q.get("version") {
                None => None,
                Some(v) => Some(
                    v.parse::<u64>()
                        .map_err(|_| KvError::Bad("version must be a number".into()))?,
                ),
            };
            let tenant = p.tenant.clone();
            let read = secrets.read(&tenant, &path, version, now).await?;
            audited(
                &shared,
                &a,
                &p,
                "secret.read",
                "read",
                &key,
                Some(read.info.version),
            )
            .await?;
            let body = DataRead {
                data: read.data.as_ref().map(|d| d.expose().as_map()),
                metadata: version_json(&read.info),
            };
            if body.data.is_some() {
                ok(body)
            } else {
                Err(KvError::Gone(envelope(body)))
            }
        }
        Method::POST | Method::PUT | Method::PATCH => {
            let p = allowed(&shared, &a, &key, Permission::SecretWrite)?;
            let body = body.unwrap_or(Value::Null);
            let cas = cas_of(&body)?;
            let data = data_of(body.get("data"))?;
            let info = if method == Method::PATCH {
                secrets.patch(&p.tenant, &path, &data, cas, now).await?
            } else {
                secrets.write(&p.tenant, &path, &data, cas, now).await?
            };
            audited(
                &shared,
                &a,
                &p,
                "secret.write",
                "write",
                &key,
                Some(info.version),
            )
            .await?;
            shared.secret_changed(&p.tenant, &path, info.version).await;
            ok(version_json(&info))
        }
        Method::DELETE => {
            let p = allowed(&shared, &a, &key, Permission::SecretWrite)?;
            match secrets.delete_latest(&p.tenant, &path, now).await {
                Ok(()) | Err(VaultError::NotFound) => {}
                Err(e) => return Err(e.into()),
            }
            audited(&shared, &a, &p, "secret.delete", "delete", &key, None).await?;
            no_content()
        }
        _ => Err(KvError::Api(ApiError::NotFound("route"))),
    }
}

// === /v1/secret/{delete,undelete,destroy}/PATH ===

pub(crate) async fn versions(
    State(shared): State<Arc<Shared>>,
    a: Authed,
    Extension(route): Extension<&'static Route>,
    Path(params): Path<HashMap<String, String>>,
    Body(body): Body<Option<Value>>,
) -> KvResult {
    let raw = params.get("path").cloned().unwrap_or_default();
    let path = secret_path(&raw)?;
    let key = path.to_string();
    let p = allowed(&shared, &a, &key, Permission::SecretWrite)?;
    let list = versions_of(&body)?;
    let now = now_ms();
    let (op, event) = match route.name {
        RouteName::KvDelete => (VersionOp::Delete, "secret.delete"),
        RouteName::KvUndelete => (VersionOp::Undelete, "secret.undelete"),
        _ => (VersionOp::Destroy, "secret.destroy"),
    };
    let r = shared
        .secrets
        .change_versions(op, &p.tenant, &path, &list, now)
        .await;
    match r {
        Ok(()) | Err(VaultError::NotFound) => {}
        Err(e) => return Err(e.into()),
    }
    let ev = audit::by(&p, event, "versions", Outcome::Success)
        .meta("path", key.clone())
        .meta("versions", json!(list));
    shared
        .audit
        .mandatory(a.origin().apply(ev))
        .await
        .map_err(|_| KvError::Api(ApiError::Unavailable))?;
    no_content()
}

// === /v1/secret/metadata/PATH ===

fn duration_of(v: &Value) -> Result<Duration, KvError> {
    let bad = || KvError::Bad("durations are seconds or Go durations like 1h30m".into());
    if let Some(n) = v.as_u64() {
        return Ok(Duration::from_secs(n));
    }
    let s = v.as_str().ok_or_else(bad)?;
    let mut total = 0u64;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().map_err(|_| bad())?;
        num.clear();
        total += n * match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return Err(bad()),
        };
    }
    if !num.is_empty() {
        total += num.parse::<u64>().map_err(|_| bad())?;
    }
    Ok(Duration::from_secs(total))
}

fn metadata_update(body: &Value) -> Result<MetadataUpdate, KvError> {
    let mut u = MetadataUpdate::default();
    if let Some(v) = body.get("max_versions") {
        u.max_versions = Some(
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| KvError::Bad("max_versions must be a number".into()))?,
        );
    }
    if let Some(v) = body.get("cas_required") {
        u.cas_required = Some(
            v.as_bool()
                .ok_or_else(|| KvError::Bad("cas_required must be true or false".into()))?,
        );
    }
    if let Some(v) = body.get("delete_version_after") {
        u.delete_version_after = Some(duration_of(v)?);
    }
    if let Some(v) = body.get("custom_metadata") {
        let m = v
            .as_object()
            .ok_or_else(|| KvError::Bad("custom_metadata must be an object".into()))?;
        let mut out = BTreeMap::new();
        for (k, v) in m {
            let v = v
                .as_str()
                .ok_or_else(|| KvError::Bad("custom_metadata values must be strings".into()))?;
            out.insert(k.clone(), v.to_string());
        }
        u.custom_metadata = Some(CustomMetadataChange::Replace(out));
    }
    Ok(u)
}

pub(crate) async fn metadata(
    State(shared): State<Arc<Shared>>,
    a: Authed,
    method: Method,
    params: Option<Path<HashMap<String, String>>>,
    Query(q): Query<HashMap<String, String>>,
    Body(body): Body<Option<Value>>,
) -> KvResult {
    let raw = params
        .and_then(|Path(p)| p.get("path").cloned())
        .unwrap_or_default();
    let list = method.as_str() == "LIST"
        || (method == Method::GET && q.get("list").is_some_and(|v| v == "true"));
    let now = now_ms();
    if list {
        let prefix_text = raw.trim_end_matches('/');
        let prefix = if prefix_text.is_empty() {
            SecretPrefix::root()
        } else {
            SecretPrefix::parse(prefix_text)
                .map_err(|e| KvError::Bad(format!("invalid secret path `{raw}`: {e}")))?
        };
        let p = a.principal()?.clone();
        let entries = shared.secrets.list(&p.tenant, &prefix).await?;
        // Only what the caller may read: a key it may read, a folder under
        // which it may read something of that name.
        let base = if prefix_text.is_empty() {
            String::new()
        } else {
            format!("{prefix_text}/")
        };
        let keys: Vec<String> = entries
            .into_iter()
            .filter(|e| {
                let probe = match e.strip_suffix('/') {
                    Some(folder) => format!("{base}{folder}/_"),
                    None => format!("{base}{e}"),
                };
                allowed_quiet(&shared, &p, &probe)
            })
            .collect();
        if keys.is_empty() {
            return Err(KvError::Missing);
        }
        audited(&shared, &a, &p, "secret.list", "list", prefix_text, None).await?;
        return ok(json!({ "keys": keys }));
    }
    let path = secret_path(&raw)?;
    let key = path.to_string();
    match method {
        Method::GET => {
            let p = allowed(&shared, &a, &key, Permission::SecretRead)?;
            let m = shared.secrets.read_metadata(&p.tenant, &path).await?;
            audited(&shared, &a, &p, "secret.metadata", "read", &key, None).await?;
            ok(metadata_json(&m))
        }
        Method::POST | Method::PUT | Method::PATCH => {
            let p = allowed(&shared, &a, &key, Permission::SecretWrite)?;
            let u = metadata_update(&body.unwrap_or(Value::Null))?;
            if method == Method::PATCH {
                shared
                    .secrets
                    .patch_metadata(&p.tenant, &path, u, now)
                    .await?;
            } else {
                shared
                    .secrets
                    .write_metadata(&p.tenant, &path, u, now)
                    .await?;
            }
            audited(&shared, &a, &p, "secret.metadata", "write", &key, None).await?;
            no_content()
        }
        Method::DELETE => {
            let p = allowed(&shared, &a, &key, Permission::SecretWrite)?;
            match shared.secrets.delete_metadata(&p.tenant, &path).await {
                Ok(()) | Err(VaultError::NotFound) => {}
                Err(e) => return Err(e.into()),
            }
            audited(&shared, &a, &p, "secret.destroy", "delete_all", &key, None).await?;
            no_content()
        }
        _ => Err(KvError::Api(ApiError::NotFound("route"))),
    }
}

fn allowed_quiet(shared: &Shared, p: &Principal, path: &str) -> bool {
    secret_resource(p, path).is_ok_and(|r| shared.permits(p, &r, Permission::SecretRead))
}

// === KeyVault: GET /v1/secret/APP/ENV/PATH ===

/// Seed 004's form: `{"data":{"value":..., "version":N, "metadata":{...}}}`.
/// `value` is the secret's `value` field when it has only that one, else
/// the whole data object.
pub(crate) async fn keyvault_get(
    State(shared): State<Arc<Shared>>,
    a: Authed,
    Path(params): Path<HashMap<String, String>>,
) -> KvResult {
    let raw = format!(
        "{}/{}/{}",
        params.get("app").map_or("", String::as_str),
        params.get("env").map_or("", String::as_str),
        params.get("path").map_or("", String::as_str)
    );
    let path = secret_path(&raw)?;
    let key = path.to_string();
    let p = allowed(&shared, &a, &key, Permission::SecretRead)?;
    let read = shared
        .secrets
        .read(&p.tenant, &path, None, now_ms())
        .await?;
    audited(
        &shared,
        &a,
        &p,
        "secret.read",
        "read",
        &key,
        Some(read.info.version),
    )
    .await?;
    let Some(d) = &read.data else {
        return Err(KvError::Missing);
    };
    let map = d.expose().as_map();
    let value = match (map.len(), map.get("value")) {
        (1, Some(v)) => v.clone(),
        _ => Value::Object(map.clone()),
    };
    Ok(Json(json!({
        "data": {
            "value": value,
            "version": read.info.version,
            "metadata": {
                "created_time": rfc3339(read.info.meta.created_ms),
                "custom_metadata": read.info.custom_metadata,
                "path": &key,
            },
        }
    }))
    .into_response())
}

// === AppRole ===

fn may_manage_roles(shared: &Shared, a: &Authed) -> Result<Principal, KvError> {
    let p = a.principal()?.clone();
    let r = Resource::Admin(p.tenant.clone(), AdminArea::Keys);
    if !shared.permits(&p, &r, Permission::KeyAdmin) {
        return Err(KvError::Api(ApiError::Forbidden));
    }
    Ok(p)
}

fn role_name(params: &HashMap<String, String>) -> Result<RoleName, KvError> {
    RoleName::parse(params.get("role").map_or("", String::as_str))
        .map_err(|e| KvError::Bad(format!("invalid role name: {e}")))
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        Some(Value::String(s)) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

/// `POST|GET|DELETE /v1/auth/approle/role/ROLE`.
pub(crate) async fn role(
    State(shared): State<Arc<Shared>>,
    a: Authed,
    method: Method,
    Path(params): Path<HashMap<String, String>>,
    Body(body): Body<Option<Value>>,
) -> KvResult {
    let p = may_manage_roles(&shared, &a)?;
    let name = role_name(&params)?;
    match method {
        Method::POST | Method::PUT => {
            let body = body.unwrap_or(Value::Null);
            let mut spec = RoleSpec::new(name.clone());
            let mut roles = strings(body.get("token_policies"));
            roles.extend(strings(body.get("policies")));
            spec.roles = roles;
            let ttl = |k: &str, default: Duration| -> Result<Duration, KvError> {
                match body.get(k) {
                    None => Ok(default),
                    Some(v) => duration_of(v),
                }
            };
            let default_ttl = Duration::from_secs(shared.config.token_ttl_secs);
            spec.token_ttl = ttl("token_ttl", default_ttl)?;
            spec.token_max_ttl = ttl(
                "token_max_ttl",
                Duration::from_secs(shared.config.token_max_ttl_secs),
            )?;
            let sid_ttl = ttl("secret_id_ttl", Duration::ZERO)?;
            spec.secret_id_ttl = (!sid_ttl.is_zero()).then_some(sid_ttl);
            spec.secret_id_num_uses = body
                .get("secret_id_num_uses")
                .and_then(Value::as_u64)
                .map_or(0, |n| n.min(u64::from(u32::MAX)) as u32);
            let mut cidrs = Vec::new();
            for c in strings(body.get("secret_id_bound_cidrs"))
                .into_iter()
                .chain(strings(body.get("token_bound_cidrs")))
            {
                cidrs.push(
                    c.parse()
                        .map_err(|_| KvError::Bad(format!("`{c}` is not a CIDR block")))?,
                );
            }
            spec.bound_cidrs = cidrs;
            let tenant = p.tenant.clone();
            let now = now_ms();
            blocking(&shared.vault, move |v| v.create_role(&tenant, spec, now)).await?;
            let ev = audit::by(&p, "approle.write", "write", Outcome::Success)
                .meta("role", name.as_str().to_string());
            shared.audit.record(a.origin().apply(ev));
            no_content()
        }
        Method::GET => {
            let r = shared.vault.read_role(&p.tenant, &name)?;
            ok(json!({
                "token_policies": r.roles,
                "policies": r.roles,
                "token_ttl": r.token_ttl.as_secs(),
                "token_max_ttl": r.token_max_ttl.as_secs(),
                "secret_id_ttl": r.secret_id_ttl.map_or(0, |d| d.as_secs()),
                "secret_id_num_uses": r.secret_id_num_uses,
                "secret_id_bound_cidrs": r.bound_cidrs.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
                "bind_secret_id": true,
            }))
        }
        Method::DELETE => {
            let (tenant, role) = (p.tenant.clone(), name.clone());
            match blocking(&shared.vault, move |v| v.delete_role(&tenant, &role)).await {
                Ok(()) | Err(VaultError::NotFound) => {}
                Err(e) => return Err(e.into()),
            }
            let ev = audit::by(&p, "approle.delete", "delete", Outcome::Success)
                .meta("role", name.as_str().to_string());
            shared.audit.record(a.origin().apply(ev));
            no_content()
        }
        _ => Err(KvError::Api(ApiError::NotFound("route"))),
    }
}

/// `GET /v1/auth/approle/role/ROLE/role-id`.
pub(crate) async fn role_id(
    State(shared): State<Arc<Shared>>,
    a: Authed,
    Path(params): Path<HashMap<String, String>>,
) -> KvResult {
    let p = may_manage_roles(&shared, &a)?;
    let r = shared.vault.read_role(&p.tenant, &role_name(&params)?)?;
    ok(json!({ "role_id": r.role_id }))
}

/// `POST /v1/auth/approle/role/ROLE/secret-id`: a new secret id, shown
/// once.
pub(crate) async fn secret_id(
    State(shared): State<Arc<Shared>>,
    a: Authed,
    Path(params): Path<HashMap<String, String>>,
) -> KvResult {
    let p = may_manage_roles(&shared, &a)?;
    let name = role_name(&params)?;
    let now = now_ms();
    let (tenant, role) = (p.tenant.clone(), name.clone());
    let (sid, meta) = blocking(&shared.vault, move |v| {
        v.generate_secret_id(&tenant, &role, now)
    })
    .await?;
    let ev = audit::by(&p, "approle.secret_id", "create", Outcome::Success)
        .meta("role", name.as_str().to_string())
        .meta("accessor", meta.accessor.clone());
    shared
        .audit
        .mandatory(a.origin().apply(ev))
        .await
        .map_err(|_| KvError::Api(ApiError::Unavailable))?;
    ok(json!({
        "secret_id": sid.expose(),
        "secret_id_accessor": meta.accessor,
        "secret_id_ttl": meta.expires_ms.map_or(0, |e| e.saturating_sub(now) / 1000),
        "secret_id_num_uses": meta.uses_left.unwrap_or(0),
    }))
}

/// `POST /v1/auth/approle/login`: a Rampart token for the role's tenant,
/// with the role's roles, for its token TTL.
/// A token issued for an AppRole login.
pub(crate) struct AppRoleToken {
    pub principal: Principal,
    pub token: Secret<String>,
    pub expires_ms: u64,
    /// The token's audit id: Vault's `accessor`.
    pub token_id: String,
}

/// Checks an AppRole login and issues a Rampart token for the role's
/// tenant, with the role's roles, for its token TTL (or `ttl_ms` when
/// shorter). Both login endpoints (Vault's and KeyVault's `/v1/auth`) use
/// it; a refusal is audited and says nothing of which part was wrong.
pub(crate) async fn approle_token(
    shared: &Shared,
    origin: &crate::audit::Origin,
    peer: std::net::IpAddr,
    role_id: &str,
    secret_id: &Secret<String>,
    ttl_ms: Option<u64>,
) -> Result<AppRoleToken, KvError> {
    // Secret-id guessing locks out the address and the role id.
    let attempt = crate::limits::Attempt::from(Some(peer)).role(role_id);
    attempt
        .check(&shared.admission)
        .map_err(|r| KvError::Api(ApiError::Refused(r)))?;
    // Most logins change nothing and answer on this thread; one that
    // counts a use (or tidies an expired secret id) commits, and waits for
    // that on the blocking pool, not on an async worker.
    let now = now_ms();
    let quick = shared.vault.try_login(role_id, secret_id, Some(peer), now);
    let result = match quick {
        Some(r) => r,
        None => {
            let (role_id, secret_id) = (role_id.to_string(), secret_id.clone());
            blocking(&shared.vault, move |v| {
                v.login(&role_id, &secret_id, Some(peer), now)
            })
            .await
        }
    };
    let login = match result {
        Ok(l) => l,
        Err(e) => {
            attempt.failed(&shared.admission);
            warn!(peer = %peer, "approle login refused");
            shared.metrics.auth("approle", false);
            shared.audit.record(audit::auth_failure(
                "approle",
                "invalid_credentials",
                origin,
            ));
            return Err(e.into());
        }
    };
    let principal = Principal {
        tenant: login.tenant.clone(),
        name: format!("approle:{}", login.role.as_str()),
        kind: PrincipalKind::AppRole,
        roles: login.roles.clone(),
        expires_at_ms: None,
        credential_id: Some(login.secret_id_accessor.clone()),
        parent_credential_id: None,
    };
    let role_ttl = (login.token_ttl.as_millis() as u64).max(1);
    let ttl = ttl_ms
        .filter(|t| *t > 0)
        .map_or(role_ttl, |t| t.min(role_ttl));
    shared.metrics.auth("approle", true);
    let issued = shared
        .issue_audited(&principal, ttl, |token_id, exp| {
            audit::auth_success(&principal, "approle", origin)
                .meta("token_id", token_id.to_string())
                .meta("token_expires_at_ms", exp)
        })
        .await
        .map_err(|e| KvError::Api(e.into()))?;
    Ok(AppRoleToken {
        principal,
        token: issued.token,
        expires_ms: issued.expires_ms,
        token_id: issued.token_id,
    })
}

/// `POST /v1/auth/approle/login`, answered in Vault's shape.
pub(crate) async fn login(
    State(shared): State<Arc<Shared>>,
    a: Authed,
    Extension(peer): Extension<PeerInfo>,
    Body(body): Body<Option<Value>>,
) -> KvResult {
    let body = body.unwrap_or(Value::Null);
    let role_id = body.get("role_id").and_then(Value::as_str).unwrap_or("");
    let secret = Secret::new(
        body.get("secret_id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
    );
    let now = now_ms();
    let AppRoleToken {
        principal,
        token,
        expires_ms: exp,
        token_id: accessor,
        ..
    } = approle_token(&shared, a.origin(), peer.addr.ip(), role_id, &secret, None).await?;
    let role = principal.name.trim_start_matches("approle:");
    let lease = exp.saturating_sub(now) / 1000;
    let auth = LoginAuth {
        accessor: &accessor,
        client_token: token.expose(),
        entity_id: "",
        lease_duration: lease,
        metadata: LoginMetadata {
            role_name: role,
            tenant: principal.tenant.as_str(),
        },
        orphan: true,
        policies: &principal.roles,
        renewable: true,
        token_policies: &principal.roles,
        token_type: "service",
    };
    Ok(Json(Envelope::<(), _>::new(None, Some(auth))).into_response())
}

/// The `auth` of an AppRole login's answer, as Vault gives it; the token
/// is borrowed from its zeroizing wrapper.
#[derive(serde::Serialize)]
struct LoginAuth<'a> {
    accessor: &'a str,
    client_token: &'a str,
    entity_id: &'static str,
    lease_duration: u64,
    metadata: LoginMetadata<'a>,
    orphan: bool,
    policies: &'a [String],
    renewable: bool,
    token_policies: &'a [String],
    token_type: &'static str,
}

#[derive(serde::Serialize)]
struct LoginMetadata<'a> {
    role_name: &'a str,
    tenant: &'a str,
}

impl Shared {
    /// Tells subscribers of `TENANT/vault/changes` that a secret has a new
    /// version: path and version, never the value, so agents re-fetch at
    /// once instead of polling. Best effort: a failure is logged.
    pub(crate) async fn secret_changed(&self, tenant: &TenantId, path: &SecretPath, version: u64) {
        let Ok(stream) = format!("{tenant}/vault/changes").parse::<rampart_proto::StreamPath>()
        else {
            return;
        };
        let s = match self.broker.stream(&stream) {
            Ok(s) => s,
            Err(_) => self.broker.declare_stream(stream),
        };
        let notice = json!({ "path": &path.to_string(), "version": version }).to_string();
        let mut b = rampart_proto::EntriesBuilder::new();
        b.push(notice.as_bytes());
        let (count, entries) = b.finish();
        if let Err(e) = s.publish_acked(count, entries).await {
            warn!(tenant = %tenant, error = %e, "publishing a secret change notice failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids are version-4 UUIDs in their usual text form, and none repeats,
    /// across several refills of the per-thread pool.
    #[test]
    fn request_ids_are_random_uuids() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..2000 {
            let id = RequestId::new();
            let s = id.as_str();
            let groups: Vec<&str> = s.split('-').collect();
            assert_eq!(
                groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
                [8, 4, 4, 4, 12],
                "{s}"
            );
            assert!(s
                .bytes()
                .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            assert!(groups[2].starts_with('4'), "version: {s}");
            assert!(
                matches!(&groups[3][..1], "8" | "9" | "a" | "b"),
                "variant: {s}"
            );
            assert!(seen.insert(s.to_string()), "{s} came twice");
        }
    }

    /// The envelope has Vault's fields, and a read's body the secret's
    /// keys and the version's metadata.
    #[test]
    fn a_read_is_wrapped_as_vault_wraps_it() {
        let data: Map<String, Value> = serde_json::from_str(r#"{"pw":"s3cret"}"#).unwrap();
        let custom = BTreeMap::new();
        let body = DataRead {
            data: Some(&data),
            metadata: VersionJson {
                created_time: rfc3339(1_764_000_000_250),
                custom_metadata: Some(&custom).filter(|m| !m.is_empty()),
                deletion_time: String::new(),
                destroyed: false,
                version: 3,
            },
        };
        let v = envelope(body);
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "auth",
                "data",
                "lease_duration",
                "lease_id",
                "renewable",
                "request_id",
                "warnings",
                "wrap_info"
            ]
        );
        assert_eq!(v["auth"], Value::Null);
        assert_eq!(v["lease_id"], "");
        assert_eq!(v["data"]["data"]["pw"], "s3cret");
        assert_eq!(v["data"]["metadata"]["version"], 3);
        assert_eq!(v["data"]["metadata"]["custom_metadata"], Value::Null);
        assert_eq!(v["request_id"].as_str().unwrap().len(), 36);
    }
}
