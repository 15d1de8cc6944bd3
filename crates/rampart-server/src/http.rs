//! The HTTPS API: `POST /v1/auth` and the admin routes, over the same TLS
//! settings as the broker. Every route comes from the table in `access.rs`
//! and is authenticated and authorized by the [`Authed`] extractor before
//! its handler runs, so a handler cannot forget the check. Errors become
//! JSON responses in one place ([`ApiError`]) and never carry internals.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, on, MethodFilter};
use axum::{Extension, Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use rampart_authz::{Permission, Resource, Subject};
use rampart_identity::{Principal, Secret, TOKEN_PREFIX};
use rampart_proto::{AuthMethod, NamespaceName, StreamPath, TenantId};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tracing::{debug, info, warn};

use crate::access::{Access, Route, RouteName, Scope, ROUTES};
use crate::audit::{self, Origin};
use crate::auth::{AuthFailure, CertNames};
use crate::control::{stream_path, ControlError};
use crate::limits::Attempt;
use crate::Shared;
use rampart_audit::Outcome;
use rampart_limits::RateKind;

/// Largest request body.
const BODY_LIMIT: usize = 1024 * 1024;

/// Where an HTTPS request comes from.
#[derive(Debug, Clone)]
pub(crate) struct PeerInfo {
    pub(crate) addr: SocketAddr,
    cert: Option<CertNames>,
}

// === errors ===

/// Every failure of an HTTPS request, turned into a response here only.
#[derive(Debug)]
pub(crate) enum ApiError {
    Unauthenticated,
    Forbidden,
    /// The namespace (`tenant/namespace`) the route touches is disabled.
    NamespaceDisabled(String),
    NotFound(&'static str),
    BadRequest(String),
    Conflict(String),
    /// The audit log could not record a mandatory event in time.
    Unavailable,
    Internal,
    /// Over a rate limit (429 with `Retry-After`) or a quota (429/413/507).
    Limited(rampart_limits::Rejection),
    /// Refused at admission (locked out after failed authentications).
    Refused(rampart_limits::Refusal),
}

impl From<crate::control::IssueError> for ApiError {
    fn from(e: crate::control::IssueError) -> Self {
        match e {
            crate::control::IssueError::Internal => ApiError::Internal,
            crate::control::IssueError::AuditUnavailable => ApiError::Unavailable,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry_after = match &self {
            ApiError::Limited(r) => r.retry_after,
            ApiError::Refused(r) => r.retry_after(),
            _ => None,
        };
        let (status, msg) = match self {
            ApiError::Limited(r) => (
                StatusCode::from_u16(r.status).unwrap_or(StatusCode::TOO_MANY_REQUESTS),
                r.to_string(),
            ),
            ApiError::Refused(r) => (StatusCode::TOO_MANY_REQUESTS, r.to_string()),
            ApiError::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated".to_string()),
            ApiError::Forbidden => (StatusCode::FORBIDDEN, "forbidden".to_string()),
            ApiError::NamespaceDisabled(ns) => {
                (StatusCode::FORBIDDEN, format!("namespace {ns} is disabled"))
            }
            ApiError::NotFound(what) => (StatusCode::NOT_FOUND, format!("{what} not found")),
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, m),
            ApiError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "audit log unavailable; try again".to_string(),
            ),
            ApiError::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error".to_string(),
            ),
        };
        let mut r = (status, Json(json!({ "errors": [msg] }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(d) = retry_after {
            // Whole seconds, rounded up, as RFC 9110 has it.
            let secs = d.as_millis().div_ceil(1000).max(1);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        r
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::NotFound(w) => ApiError::NotFound(w),
            ControlError::Conflict(m) => ApiError::Conflict(m),
            ControlError::Invalid(m) => ApiError::BadRequest(m),
            ControlError::Storage => ApiError::Internal,
            ControlError::Limited(r) => ApiError::Limited(r),
        }
    }
}

fn bad_name(e: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest(e.to_string())
}

/// A path parameter of the route; empty when absent (its parser refuses it).
fn param<'a>(params: &'a HashMap<String, String>, key: &str) -> &'a str {
    params.get(key).map_or("", String::as_str)
}

/// A path parameter parsed into a validated name.
fn path_name<T, E: std::fmt::Display>(
    params: &HashMap<String, String>,
    key: &str,
    parse: fn(&str) -> Result<T, E>,
) -> Result<T, ApiError> {
    parse(param(params, key)).map_err(bad_name)
}

// === authentication and authorization of every route ===

/// The authenticated, authorized caller of a route.
#[derive(Debug)]
pub(crate) struct Authed {
    principal: Option<Principal>,
    origin: Origin,
    /// The tenant named by the path, when there is one.
    tenant: Option<TenantId>,
}

impl Authed {
    pub(crate) fn principal(&self) -> Result<&Principal, ApiError> {
        self.principal.as_ref().ok_or(ApiError::Unauthenticated)
    }

    pub(crate) fn origin(&self) -> &Origin {
        &self.origin
    }

    pub(crate) fn tenant(&self) -> Result<&TenantId, ApiError> {
        self.tenant.as_ref().ok_or(ApiError::NotFound("tenant"))
    }
}

/// How a bearer credential is presented: the kind follows from its shape.
fn method_of(credential: &str) -> AuthMethod {
    if credential.starts_with(TOKEN_PREFIX) {
        AuthMethod::Token
    } else if credential.starts_with("eyJ") && credential.matches('.').count() == 2 {
        AuthMethod::Jwt
    } else {
        AuthMethod::ApiKey
    }
}

fn bearer(parts: &Parts) -> Option<Secret<String>> {
    if let Some(v) = parts.headers.get(header::AUTHORIZATION) {
        let v = v.to_str().ok()?;
        let (scheme, cred) = v.split_once(' ')?;
        if scheme.eq_ignore_ascii_case("bearer") && !cred.trim().is_empty() {
            return Some(Secret::new(cred.trim().to_string()));
        }
        return None;
    }
    // Vault clients send their token in this header.
    parts
        .headers
        .get("x-vault-token")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(|v| Secret::new(v.to_string()))
}

impl FromRequestParts<Arc<Shared>> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, shared: &Arc<Shared>) -> Result<Self, ApiError> {
        let route = *parts
            .extensions
            .get::<&'static Route>()
            .ok_or(ApiError::Internal)?;
        let r = Self::check(parts, shared, route).await;
        if crate::access::vault_style(route.path) {
            return r.map_err(|e| match e {
                ApiError::Unauthenticated => ApiError::Forbidden,
                e => e,
            });
        }
        r
    }
}

impl Authed {
    async fn check(
        parts: &mut Parts,
        shared: &Arc<Shared>,
        route: &'static Route,
    ) -> Result<Self, ApiError> {
        let params: HashMap<String, String> =
            Path::<HashMap<String, String>>::from_request_parts(parts, shared)
                .await
                .map(|Path(p)| p)
                .unwrap_or_default();
        let tenant = params
            .get("tenant")
            .map(|t| TenantId::parse(t).map_err(bad_name))
            .transpose()?;
        let peer = parts.extensions.get::<PeerInfo>().cloned();
        let origin = Origin {
            addr: peer.as_ref().map(|p| p.addr),
            agent: parts
                .headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.chars().filter(|c| !c.is_control()).take(128).collect()),
            transport: "https",
        };
        // A locked-out address is refused everything until the lockout ends.
        Attempt::from(origin.addr.map(|a| a.ip()))
            .check(&shared.admission)
            .map_err(ApiError::Refused)?;
        if route.access == Access::Public {
            return Ok(Authed {
                principal: None,
                origin,
                tenant,
            });
        }
        let principal = match bearer(parts) {
            Some(cred) => {
                let attempt =
                    Attempt::from(origin.addr.map(|a| a.ip())).api_key(cred.expose().as_bytes());
                attempt
                    .check(&shared.admission)
                    .map_err(ApiError::Refused)?;
                shared
                    .identity
                    .authenticate(method_of(cred.expose()), cred.expose().as_bytes(), None)
                    .await
                    .map_err(|f| refused(shared, f, method_of(cred.expose()), &origin, &attempt))?
            }
            None => match peer.as_ref().and_then(|p| p.cert.as_ref()) {
                Some(cert) => shared
                    .identity
                    .authenticate(AuthMethod::ClientCert, &[], Some(cert))
                    .await
                    .map_err(|f| {
                        let attempt = Attempt::from(origin.addr.map(|a| a.ip()));
                        refused(shared, f, AuthMethod::ClientCert, &origin, &attempt)
                    })?,
                None => return Err(ApiError::Unauthenticated),
            },
        };
        // Every authenticated request counts against the principal's and its
        // tenant's http_requests_per_sec.
        shared
            .limits
            .handle(principal.tenant.as_str(), &principal.name)
            .rate(RateKind::HttpRequests, 1)
            .map_err(ApiError::Limited)?;
        let mut denial: Option<(String, &'static str)> = None;
        let allowed = match route.access {
            Access::Public | Access::Authenticated => true,
            Access::Operator => {
                let op = shared.operator_tenant();
                op.is_some_and(|op| principal.tenant == op)
                    && principal.roles.iter().any(|r| r == "admin")
            }
            Access::Perm(perm) => {
                let t = tenant.clone().ok_or(ApiError::Forbidden)?;
                let resource = route_resource(route.scope, &t, &params)?;
                let subject = Subject::new(
                    principal.tenant.clone(),
                    principal.name.clone(),
                    principal.roles.iter().cloned(),
                );
                let policy = shared.policy.read().unwrap_or_else(|e| e.into_inner());
                let d = rampart_authz::decide(&policy, &subject, &resource, perm);
                if !d.allowed {
                    denial = Some((resource.to_string(), d.reason.code()));
                    debug!(
                        tenant = %principal.tenant,
                        principal = %principal.name,
                        permission = perm.as_str(),
                        resource = %resource,
                        decision = %d,
                        "request denied"
                    );
                }
                d.allowed
            }
            Access::ServerOnly | Access::Unlisted => false,
        };
        let route_name = format!("{:?}", route.name);
        if !allowed {
            let (resource, reason) =
                denial.unwrap_or_else(|| (route.path.to_string(), "operator_only"));
            shared.audit.record(
                origin.apply(
                    audit::by(&principal, "authz.deny", &route_name, Outcome::Denied)
                        .resource(resource)
                        .meta("reason", reason)
                        .meta("route", format!("{} {}", route.method, route.path)),
                ),
            );
            return Err(ApiError::Forbidden);
        }
        // A disabled namespace refuses every route that touches it, except
        // the ones that disable and enable it.
        if let (Access::Perm(_), Some(t)) = (route.access, &tenant) {
            let toggles = matches!(
                route.name,
                RouteName::DisableNamespace | RouteName::EnableNamespace
            );
            if !toggles && matches!(route.scope, Scope::Namespace | Scope::Stream | Scope::Cache) {
                let ns = path_name(&params, "namespace", NamespaceName::parse)?;
                if shared.identity.namespace_disabled(t, &ns) {
                    shared.audit.record(
                        origin.apply(
                            audit::by(&principal, "authz.deny", &route_name, Outcome::Denied)
                                .resource(Resource::Namespace(t.clone(), ns.clone()).to_string())
                                .meta("reason", "namespace_disabled")
                                .meta("route", format!("{} {}", route.method, route.path)),
                        ),
                    );
                    return Err(ApiError::NamespaceDisabled(format!("{t}/{ns}")));
                }
            }
        }
        // Admin requests are audited before they run; if that cannot be made
        // durable in time, the request is refused rather than run unaudited.
        if matches!(route.access, Access::Operator | Access::Perm(_)) {
            let mut ev = audit::by(&principal, "admin.request", &route_name, Outcome::Success)
                .meta("route", format!("{} {}", route.method, route.path));
            if let Some(t) = &tenant {
                ev = ev.meta("target_tenant", t.to_string());
            }
            if shared.audit.mandatory(origin.apply(ev)).await.is_err() {
                return Err(ApiError::Unavailable);
            }
        }
        Ok(Authed {
            principal: Some(principal),
            origin,
            tenant,
        })
    }
}

fn refused(
    shared: &Shared,
    f: AuthFailure,
    method: AuthMethod,
    origin: &Origin,
    attempt: &Attempt,
) -> ApiError {
    attempt.failed(&shared.admission);
    warn!(
        peer = ?origin.addr,
        transport = "https",
        method = method.as_str(),
        reason = f.as_str(),
        "authentication failed"
    );
    shared.metrics.auth(method.as_str(), false);
    shared
        .audit
        .record(audit::auth_failure(method.as_str(), f.as_str(), origin));
    ApiError::Unauthenticated
}

/// SHA-256 of a document, so a change is recorded without its content.
fn digest(text: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()))
}

/// Records what an admin request changed (best effort: the request itself
/// was audited before it ran).
pub(crate) fn changed(shared: &Shared, a: &Authed, event_type: &str, action: &str, meta: Value) {
    let Some(p) = &a.principal else { return };
    let mut ev = audit::by(p, event_type, action, Outcome::Success);
    if let Some(t) = &a.tenant {
        ev = ev.meta("target_tenant", t.to_string());
    }
    if let Value::Object(m) = meta {
        for (k, v) in m {
            ev = ev.meta(k, v);
        }
    }
    shared.audit.record(a.origin.apply(ev));
}

fn route_resource(
    scope: Scope,
    tenant: &TenantId,
    params: &HashMap<String, String>,
) -> Result<Resource, ApiError> {
    let ns = || -> Result<NamespaceName, ApiError> {
        path_name(params, "namespace", NamespaceName::parse)
    };
    Ok(match scope {
        Scope::Admin(area) => Resource::Admin(tenant.clone(), area),
        Scope::Namespace => Resource::Namespace(tenant.clone(), ns()?),
        Scope::Stream => {
            let s = path_name(params, "stream", rampart_proto::StreamName::parse)?;
            Resource::Stream(tenant.clone(), ns()?, s)
        }
        Scope::Cache => {
            let c = path_name(params, "cache", rampart_proto::CacheName::parse)?;
            Resource::Cache(tenant.clone(), ns()?, c)
        }
        Scope::Tenant => Resource::Tenant(tenant.clone()),
        Scope::None => return Err(ApiError::Forbidden),
    })
}

// === request bodies ===

/// A JSON request body. Malformed JSON, a wrong shape or an unknown field is
/// a 400 in the API's own error format; for `Body<Option<T>>` an empty body
/// is `None`.
pub(crate) struct Body<T>(pub(crate) T);

impl<T: serde::de::DeserializeOwned> axum::extract::FromRequest<Arc<Shared>> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(
        req: axum::extract::Request,
        state: &Arc<Shared>,
    ) -> Result<Self, ApiError> {
        let bytes = bytes::Bytes::from_request(req, state)
            .await
            .map_err(|_| ApiError::BadRequest("request body too large or unreadable".into()))?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"null"
        } else {
            &bytes
        };
        serde_json::from_slice(text)
            .map(Body)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
    }
}

// === handlers ===

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthBody {
    api_key: Option<String>,
    jwt: Option<String>,
    token: Option<String>,
    role_id: Option<String>,
    secret_id: Option<String>,
    /// Wanted token lifetime in seconds.
    ttl: Option<u64>,
}

async fn auth(
    State(shared): State<Arc<Shared>>,
    a: Authed,
    Extension(peer): Extension<PeerInfo>,
    Body(body): Body<Option<AuthBody>>,
) -> Result<Json<Value>, ApiError> {
    let body = body.unwrap_or_default();
    let (method, cred) = match (&body.api_key, &body.jwt, &body.token, &body.role_id) {
        (Some(k), None, None, None) => (AuthMethod::ApiKey, Secret::new(k.clone())),
        (None, Some(j), None, None) => (AuthMethod::Jwt, Secret::new(j.clone())),
        (None, None, Some(t), None) => (AuthMethod::Token, Secret::new(t.clone())),
        (None, None, None, Some(role_id)) => {
            return approle_auth(
                &shared,
                &a,
                &peer,
                role_id,
                body.secret_id.as_deref(),
                body.ttl,
            )
            .await;
        }
        (None, None, None, None) => (AuthMethod::ClientCert, Secret::new(String::new())),
        _ => return Err(ApiError::BadRequest("give one credential".into())),
    };
    let p = shared
        .identity
        .authenticate(method, cred.expose().as_bytes(), peer.cert.as_ref())
        .await
        .map_err(|f| {
            let attempt =
                Attempt::from(a.origin.addr.map(|a| a.ip())).api_key(cred.expose().as_bytes());
            refused(&shared, f, method, &a.origin, &attempt)
        })?;
    let ttl_ms = body.ttl.unwrap_or(0).saturating_mul(1000);
    shared.metrics.auth(method.as_str(), true);
    let issued = shared
        .issue_audited(&p, ttl_ms, |token_id, exp| {
            audit::auth_success(&p, method.as_str(), &a.origin)
                .meta("token_id", token_id.to_string())
                .meta("token_expires_at_ms", exp)
        })
        .await?;
    let (token, exp) = (issued.token, issued.expires_ms);
    let lease = exp.saturating_sub(crate::auth::now_ms()) / 1000;
    info!(
        peer = %peer.addr,
        tenant = %p.tenant,
        principal = %p.name,
        method = method.as_str(),
        "token issued"
    );
    Ok(Json(json!({
        "auth": {
            "client_token": token.expose(),
            "lease_duration": lease,
            "renewable": false,
            "policies": p.roles,
            "metadata": { "tenant": p.tenant.as_str(), "principal": p.name },
        }
    })))
}

// === Vault token self-service ===

fn presented_token(headers: &axum::http::HeaderMap) -> String {
    headers
        .get("x-vault-token")
        .or_else(|| headers.get(header::AUTHORIZATION))
        .and_then(|v| v.to_str().ok())
        .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim().to_string())
        .unwrap_or_default()
}

/// The id of the token the caller authenticated with, or 400 with `why`.
fn token_id(p: &Principal, why: &str) -> Result<String, ApiError> {
    match (&p.kind, &p.credential_id) {
        (rampart_identity::PrincipalKind::Token, Some(j)) => Ok(j.clone()),
        _ => Err(ApiError::BadRequest(why.into())),
    }
}

async fn token_lookup_self(
    State(shared): State<Arc<Shared>>,
    a: Authed,
    headers: axum::http::HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let p = a.principal()?;
    Ok(Json(crate::vault_api::lookup_self_body(
        &shared,
        p,
        &presented_token(&headers),
    )))
}

/// Extends the caller's token by `increment` (default: the server's token
/// lifetime), never past `token_max_ttl_secs` from when it was issued.
async fn token_renew_self(
    State(shared): State<Arc<Shared>>,
    a: Authed,
    headers: axum::http::HeaderMap,
    Body(body): Body<Option<Value>>,
) -> Result<Json<Value>, ApiError> {
    let p = a.principal()?;
    let jti = token_id(
        p,
        "only tokens are renewable; this credential is not a token",
    )?;
    let token = presented_token(&headers);
    let (claims, _) = shared
        .identity
        .verified_claims(token.as_bytes())
        .map_err(|_| ApiError::Forbidden)?;
    let increment = match body.as_ref().and_then(|b| b.get("increment")) {
        None => shared.config.token_ttl_secs,
        Some(v) => crate::vault_api::parse_increment(v)
            .ok_or_else(|| ApiError::BadRequest("increment: seconds, or 30s, 15m, 1h".into()))?,
    };
    let now = crate::auth::now_ms();
    let max = claims
        .iat_ms
        .saturating_add(shared.config.token_max_ttl_secs * 1000);
    let until = now.saturating_add(increment * 1000).min(max);
    let current = p.expires_at_ms.unwrap_or(0);
    let until = until.max(current);
    if until > current {
        shared
            .identity
            .renew_token(&jti, until)
            .map_err(|_| ApiError::Internal)?;
    }
    let ev = audit::by(p, "token.renew", "renew", Outcome::Success)
        .meta("token_id", shared.audit.hmac_id(&jti))
        .meta("expires_at_ms", until);
    shared.audit.record(a.origin.apply(ev));
    Ok(Json(json!({
        "auth": {
            "client_token": token,
            "accessor": shared.audit.hmac_id(&jti),
            "policies": p.roles,
            "token_policies": p.roles,
            "metadata": { "tenant": p.tenant.as_str(), "principal": p.name },
            "lease_duration": until.saturating_sub(now) / 1000,
            "renewable": until < max,
            "entity_id": "",
            "token_type": "service",
            "orphan": true,
        }
    })))
}

async fn token_revoke_self(
    State(shared): State<Arc<Shared>>,
    a: Authed,
) -> Result<StatusCode, ApiError> {
    let p = a.principal()?;
    let jti = token_id(
        p,
        "only tokens can revoke themselves; revoke a key with rampart key revoke",
    )?;
    shared.revoke_tokens(&p.tenant, Some(&jti), None)?;
    let ev = audit::by(p, "token.revoke", "revoke", Outcome::Success)
        .meta("token_id", shared.audit.hmac_id(&jti));
    shared.audit.record(a.origin.apply(ev));
    Ok(StatusCode::NO_CONTENT)
}

/// Vault CLIs ask which engine serves a path before using it. Rampart has
/// one mount, `secret/`, a KV version 2 engine.
async fn mounts_preflight(
    _a: Authed,
    Path(p): Path<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let path = param(&p, "path");
    if path != "secret" && !path.starts_with("secret/") {
        return Err(ApiError::Forbidden);
    }
    Ok(Json(json!({
        "data": {
            "type": "kv",
            "path": "secret/",
            "description": "Rampart secrets (KV version 2)",
            "options": { "version": "2" },
            "config": { "default_lease_ttl": 0, "max_lease_ttl": 0, "force_no_cache": false },
            "local": false,
            "seal_wrap": false,
            "external_entropy_access": false,
        }
    })))
}

/// `POST /v1/auth` with `role_id` and `secret_id` (seed 004's unit
/// credentials): the AppRole login, answered in the same shape as every
/// other `/v1/auth` login.
async fn approle_auth(
    shared: &Shared,
    a: &Authed,
    peer: &PeerInfo,
    role_id: &str,
    secret_id: Option<&str>,
    ttl: Option<u64>,
) -> Result<Json<Value>, ApiError> {
    let secret = Secret::new(secret_id.unwrap_or_default().to_string());
    let t = crate::kv_api::approle_token(
        shared,
        &a.origin,
        peer.addr.ip(),
        role_id,
        &secret,
        ttl.map(|s| s.saturating_mul(1000)),
    )
    .await
    .map_err(|e| match e {
        crate::kv_api::KvError::Api(e) => e,
        _ => ApiError::Unauthenticated,
    })?;
    let now = crate::auth::now_ms();
    Ok(Json(json!({
        "auth": {
            "client_token": t.token.expose(),
            "lease_duration": t.expires_ms.saturating_sub(now) / 1000,
            "renewable": true,
            "policies": t.principal.roles,
            "metadata": { "tenant": t.principal.tenant.as_str(), "principal": t.principal.name },
        }
    })))
}

async fn whoami(a: Authed) -> Result<Json<Value>, ApiError> {
    let p = a.principal()?;
    Ok(Json(json!({
        "tenant": p.tenant.as_str(),
        "principal": p.name,
        "kind": p.kind.as_str(),
        "roles": p.roles,
        "expires_at_ms": p.expires_at_ms,
    })))
}

async fn list_tenants(State(shared): State<Arc<Shared>>, _a: Authed) -> Json<Value> {
    Json(
        json!({ "tenants": shared.identity.tenants().iter().map(tenant_json).collect::<Vec<_>>() }),
    )
}

fn tenant_json(t: &rampart_store::TenantRecord) -> Value {
    json!({ "name": t.name, "disabled": t.disabled, "disabled_namespaces": t.disabled_namespaces, "erased_ms": t.erased_ms, "created_ms": t.created_ms, "changed_ms": t.changed_ms })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NameBody {
    name: String,
}

async fn create_tenant(
    State(shared): State<Arc<Shared>>,
    _a: Authed,
    Body(b): Body<NameBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let t = TenantId::parse(&b.name).map_err(bad_name)?;
    if shared.identity.tenant(t.as_str()).is_some() {
        return Err(ApiError::Conflict(format!("tenant {t} exists")));
    }
    shared.sealer.load(t.as_str()).await.map_err(|e| match e {
        rampart_keys::KeyError::Erased { .. } => {
            ApiError::Conflict(format!("tenant name {t} belonged to an erased tenant"))
        }
        _ => ApiError::Internal,
    })?;
    let (r, k) = shared.create_tenant(&t)?;
    changed(
        &shared,
        &_a,
        "tenant.create",
        "create",
        json!({ "tenant": t.as_str(), "admin_key_id": shared.audit.hmac_id(&k.record.id) }),
    );
    let mut v = tenant_json(&r);
    v["admin_key"] = key_json(&k.record);
    v["admin_key"]["key"] = Value::String(k.key.expose().clone());
    Ok((StatusCode::CREATED, Json(v)))
}

async fn disable_tenant(
    State(shared): State<Arc<Shared>>,
    a: Authed,
) -> Result<Json<Value>, ApiError> {
    let (r, closed) = shared.set_tenant_disabled(a.tenant()?, true)?;
    changed(
        &shared,
        &a,
        "tenant.disable",
        "disable",
        json!({ "before": { "disabled": false }, "after": { "disabled": true }, "connections_closed": closed }),
    );
    Ok(Json(
        json!({ "tenant": tenant_json(&r), "connections_closed": closed }),
    ))
}

async fn enable_tenant(
    State(shared): State<Arc<Shared>>,
    a: Authed,
) -> Result<Json<Value>, ApiError> {
    let (r, _) = shared.set_tenant_disabled(a.tenant()?, false)?;
    changed(
        &shared,
        &a,
        "tenant.enable",
        "enable",
        json!({ "before": { "disabled": true }, "after": { "disabled": false } }),
    );
    Ok(Json(json!({ "tenant": tenant_json(&r) })))
}

async fn disable_namespace(
    State(shared): State<Arc<Shared>>,
    a: Authed,
    Path(p): Path<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    set_namespace(&shared, &a, &p, true)
}

async fn enable_namespace(
    State(shared): State<Arc<Shared>>,
    a: Authed,
    Path(p): Path<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    set_namespace(&shared, &a, &p, false)
}

fn set_namespace(
    shared: &Shared,
    a: &Authed,
    params: &HashMap<String, String>,
    disabled: bool,
) -> Result<Json<Value>, ApiError> {
    let t = a.tenant()?;
    let ns = path_name(params, "namespace", NamespaceName::parse)?;
    let (_, changed_now) = shared.set_namespace_disabled(t, &ns, disabled)?;
    let (event, action) = if disabled {
        ("namespace.disable", "disable")
    } else {
        ("namespace.enable", "enable")
    };
    changed(
        shared,
        a,
        event,
        action,
        json!({
            "namespace": ns.as_str(),
            "before": { "disabled": disabled != changed_now },
            "after": { "disabled": disabled },
        }),
    );
    Ok(Json(
        json!({ "tenant": t.as_str(), "namespace": ns.as_str(), "disabled": disabled, "changed": changed_now }),
    ))
}

async fn erase_tenant(
    State(shared): State<Arc<Shared>>,
    a: Authed,
) -> Result<Json<Value>, ApiError> {
    let t = a.tenant()?.clone();
    let closed = shared.erase_tenant(&t).await?;
    changed(
        &shared,
        &a,
        "tenant.erase",
        "erase",
        json!({ "connections_closed": closed }),
    );
    Ok(Json(
        json!({ "erased": t.as_str(), "connections_closed": closed }),
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateSigningBody {
    /// How long tokens of the old key stay accepted; 0 (the default)
    /// refuses them at once.
    #[serde(default)]
    grace_secs: u64,
}

/// `POST /v1/sys/rotate/token-signing`: a new token signing key.
async fn rotate_token_signing(
    State(shared): State<Arc<Shared>>,
    a: Authed,
    Body(body): Body<Option<RotateSigningBody>>,
) -> Result<Json<Value>, ApiError> {
    let grace = Duration::from_secs(body.unwrap_or_default().grace_secs);
    let r = shared.rotate_token_signing(grace).await?;
    let report = serde_json::to_value(&r).map_err(|_| ApiError::Internal)?;
    changed(
        &shared,
        &a,
        "keys.token_signing.rotate",
        "rotate",
        report.clone(),
    );
    Ok(Json(report))
}

/// `POST /v1/sys/rotate/audit`: new audit signing and HMAC keys. The
/// rotation is itself in the log (a checkpoint of the new key endorsed by
/// the old one); this record, after it, names both keys.
async fn rotate_audit_keys(
    State(shared): State<Arc<Shared>>,
    a: Authed,
) -> Result<Json<Value>, ApiError> {
    let r = shared.rotate_audit_keys().await?;
    let report = serde_json::to_value(&r).map_err(|_| ApiError::Internal)?;
    changed(&shared, &a, "keys.audit.rotate", "rotate", report.clone());
    Ok(Json(report))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateEncryptionBody {
    #[serde(default)]
    reencrypt: bool,
}

async fn rotate_encryption(
    State(shared): State<Arc<Shared>>,
    a: Authed,
    Body(body): Body<Option<RotateEncryptionBody>>,
) -> Result<Json<Value>, ApiError> {
    let reencrypt = body.is_some_and(|b| b.reencrypt);
    let tenant = a.tenant()?.clone();
    let (version, resealed) = shared.rotate_tenant_keys(&tenant, reencrypt).await?;
    if reencrypt {
        shared.start_reencryption(&tenant);
    }
    changed(
        &shared,
        &a,
        "encryption.rotate",
        "rotate",
        json!({ "key_version": version, "reencrypt": reencrypt, "records_resealed": resealed }),
    );
    Ok(Json(
        json!({ "key_version": version, "records_resealed": resealed, "records_left": 0, "stream_job_started": reencrypt }),
    ))
}

/// Re-encryption progress: the stream job and blocks by key version.
async fn encryption_status(
    State(shared): State<Arc<Shared>>,
    a: Authed,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(shared.encryption_status(a.tenant()?).await))
}

fn key_json(k: &rampart_store::KeyRecord) -> Value {
    json!({
        "id": k.id, "tenant": k.tenant, "name": k.name, "roles": k.roles,
        "created_ms": k.created_ms, "expires_ms": k.expires_ms,
        "revoked_ms": k.revoked_ms, "rotated_to": k.rotated_to,
    })
}

async fn list_keys(State(shared): State<Arc<Shared>>, a: Authed) -> Result<Json<Value>, ApiError> {
    let keys = shared.identity.keys(a.tenant()?.as_str());
    Ok(Json(
        json!({ "keys": keys.iter().map(key_json).collect::<Vec<_>>() }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKeyBody {
    name: String,
    #[serde(default)]
    roles: Option<Vec<String>>,
    #[serde(default)]
    expires_in_secs: Option<u64>,
}

async fn create_key(
    State(shared): State<Arc<Shared>>,
    a: Authed,
    Body(b): Body<CreateKeyBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let roles = b.roles.unwrap_or_else(|| vec!["user".into()]);
    let k = shared.create_key(
        a.tenant()?,
        &b.name,
        roles,
        b.expires_in_secs.map(|s| s.saturating_mul(1000)),
    )?;
    changed(
        &shared,
        &a,
        "key.create",
        "create",
        json!({ "key_id": shared.audit.hmac_id(&k.record.id), "name": k.record.name, "roles": k.record.roles, "expires_ms": k.record.expires_ms }),
    );
    let mut v = key_json(&k.record);
    v["key"] = Value::String(k.key.expose().clone());
    Ok((StatusCode::CREATED, Json(v)))
}

async fn revoke_key(
    State(shared): State<Arc<Shared>>,
    a: Authed,
    Path(p): Path<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let id = p.get("id").ok_or(ApiError::NotFound("key"))?;
    let closed = shared.revoke_key(a.tenant()?, id)?;
    changed(
        &shared,
        &a,
        "key.revoke",
        "revoke",
        json!({ "key_id": shared.audit.hmac_id(id), "connections_closed": closed }),
    );
    Ok(Json(json!({ "revoked": id, "connections_closed": closed })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    grace_secs: Option<u64>,
}

async fn rotate_key(
    State(shared): State<Arc<Shared>>,
    a: Authed,
    Path(p): Path<HashMap<String, String>>,
    Body(body): Body<Option<RotateBody>>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = p.get("id").ok_or(ApiError::NotFound("key"))?;
    let grace = body.and_then(|b| b.grace_secs).unwrap_or(3600);
    let k = shared.rotate_key(a.tenant()?, id, grace.saturating_mul(1000))?;
    changed(
        &shared,
        &a,
        "key.rotate",
        "rotate",
        json!({ "key_id": shared.audit.hmac_id(id), "new_key_id": shared.audit.hmac_id(&k.record.id), "grace_secs": grace }),
    );
    let mut v = key_json(&k.record);
    v["key"] = Value::String(k.key.expose().clone());
    v["replaces"] = Value::String(id.clone());
    Ok((StatusCode::CREATED, Json(v)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeTokensBody {
    token_id: Option<String>,
    principal: Option<String>,
}

async fn revoke_tokens(
    State(shared): State<Arc<Shared>>,
    a: Authed,
    Body(b): Body<RevokeTokensBody>,
) -> Result<Json<Value>, ApiError> {
    let closed =
        shared.revoke_tokens(a.tenant()?, b.token_id.as_deref(), b.principal.as_deref())?;
    changed(
        &shared,
        &a,
        "token.revoke",
        "revoke",
        json!({ "token_id": b.token_id.as_deref().map(|t| shared.audit.hmac_id(t)), "principal": b.principal, "connections_closed": closed }),
    );
    Ok(Json(json!({ "connections_closed": closed })))
}

async fn get_acl(State(shared): State<Arc<Shared>>, a: Authed) -> Result<Response, ApiError> {
    let text = shared.acl_text(a.tenant()?)?;
    Ok(([(header::CONTENT_TYPE, "application/yaml")], text).into_response())
}

async fn put_acl(
    State(shared): State<Arc<Shared>>,
    a: Authed,
    body: String,
) -> Result<Json<Value>, ApiError> {
    let before = shared.acl_text(a.tenant()?)?;
    let applied = shared.apply_acl(a.tenant()?, &body)?;
    let after = shared.acl_text(a.tenant()?)?;
    changed(
        &shared,
        &a,
        "acl.apply",
        "apply",
        json!({
            "namespaces": applied,
            "before_sha256": digest(&before),
            "after_sha256": digest(&after),
        }),
    );
    Ok(Json(json!({ "applied": applied })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExplainBody {
    principal: String,
    #[serde(default)]
    roles: Option<Vec<String>>,
    /// `stream:NAME`, `cache:NAME` (with `namespace`), `secret:PATH`,
    /// `admin:AREA`, or a full form such as `stream:acme/prod/orders`.
    resource: String,
    #[serde(default)]
    namespace: Option<String>,
    permission: String,
}

async fn explain_acl(
    State(shared): State<Arc<Shared>>,
    a: Authed,
    Body(b): Body<ExplainBody>,
) -> Result<Json<Value>, ApiError> {
    let tenant = a.tenant()?;
    let permission = Permission::parse(&b.permission)
        .ok_or_else(|| ApiError::BadRequest(format!("unknown permission `{}`", b.permission)))?;
    let resource = explain_resource(tenant, b.namespace.as_deref(), &b.resource)?;
    // Without explicit roles, the principal's managed keys say which it has.
    let roles = b.roles.unwrap_or_else(|| {
        let mut r: Vec<String> = shared
            .identity
            .keys(tenant.as_str())
            .into_iter()
            .filter(|k| k.name == b.principal)
            .flat_map(|k| k.roles)
            .collect();
        r.sort();
        r.dedup();
        r
    });
    let d = shared.explain(tenant, &b.principal, roles.clone(), &resource, permission);
    Ok(Json(json!({
        "allowed": d.allowed,
        "decision": d.to_string(),
        "principal": b.principal,
        "roles": roles,
        "resource": resource.to_string(),
        "permission": permission.as_str(),
    })))
}

/// Completes a short resource (`stream:orders`) with the tenant and
/// namespace.
fn explain_resource(tenant: &TenantId, ns: Option<&str>, r: &str) -> Result<Resource, ApiError> {
    let (kind, rest) = r
        .split_once(':')
        .ok_or_else(|| ApiError::BadRequest("resource must look like KIND:NAME".into()))?;
    let full = match kind {
        "stream" | "cache" if !rest.contains('/') => {
            let ns =
                ns.ok_or_else(|| ApiError::BadRequest(format!("{kind}:{rest} needs a namespace")))?;
            format!("{kind}:{tenant}/{ns}/{rest}")
        }
        "namespace" if !rest.contains('/') => format!("namespace:{tenant}/{rest}"),
        "secret" if !rest.starts_with(&format!("{tenant}/")) => format!("secret:{tenant}/{rest}"),
        "admin" if !rest.contains('/') => format!("admin:{tenant}/{rest}"),
        _ => r.to_string(),
    };
    Resource::parse(&full).map_err(bad_name)
}

async fn list_streams(
    State(shared): State<Arc<Shared>>,
    a: Authed,
    Path(p): Path<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let ns = path_name(&p, "namespace", NamespaceName::parse)?;
    Ok(Json(
        json!({ "streams": shared.streams(a.tenant()?, &ns)? }),
    ))
}

/// A stream to create. `durable` makes it a log; the other fields need it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamBody {
    name: String,
    #[serde(default)]
    durable: bool,
    /// `none`, `interval:MS`, `on_commit`; default the server's
    /// `durable_sync`.
    sync: Option<String>,
    max_age_ms: Option<u64>,
    max_bytes: Option<u64>,
    #[serde(default)]
    retention_overrides_consumers: bool,
}

async fn create_stream(
    State(shared): State<Arc<Shared>>,
    a: Authed,
    Path(p): Path<HashMap<String, String>>,
    Body(b): Body<StreamBody>,
) -> Result<StatusCode, ApiError> {
    let path = stream_path(a.tenant()?.as_str(), param(&p, "namespace"), &b.name)?;
    let durable = if b.durable {
        Some(rampart_store::DurableSpec {
            sync: b.sync.clone().unwrap_or_default(),
            max_age_ms: b.max_age_ms,
            max_bytes: b.max_bytes,
            retention_overrides_consumers: b.retention_overrides_consumers,
            unsealed: false,
        })
    } else if b.sync.is_some()
        || b.max_age_ms.is_some()
        || b.max_bytes.is_some()
        || b.retention_overrides_consumers
    {
        return Err(ApiError::BadRequest(
            "sync and retention settings need \"durable\": true".into(),
        ));
    } else {
        None
    };
    shared.create_stream(path.clone(), durable.clone()).await?;
    changed(
        &shared,
        &a,
        "stream.create",
        "create",
        json!({ "stream": path.to_string(), "durable": durable.is_some(), "sync": durable.map(|d| d.sync) }),
    );
    Ok(StatusCode::CREATED)
}

/// The stream a `.../streams/{stream}` route names, in the caller's tenant.
fn route_stream(a: &Authed, p: &HashMap<String, String>) -> Result<StreamPath, ApiError> {
    Ok(stream_path(
        a.tenant()?.as_str(),
        param(p, "namespace"),
        param(p, "stream"),
    )?)
}

/// Erases a durable stream: its subscriptions end, its files go, and its
/// data key is destroyed (recorded in the audit log with how many key
/// versions).
async fn erase_stream(
    State(shared): State<Arc<Shared>>,
    a: Authed,
    Path(p): Path<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let path = route_stream(&a, &p)?;
    let destroyed = shared.erase_stream(&path).await?;
    changed(
        &shared,
        &a,
        "stream.erase",
        "erase",
        json!({ "stream": path.to_string(), "key_versions_destroyed": destroyed }),
    );
    Ok(Json(
        json!({ "erased": path.to_string(), "key_versions_destroyed": destroyed }),
    ))
}

/// One stream: kind, settings and, for a durable one, its offsets,
/// consumers and what its recovery found.
async fn get_stream(
    State(shared): State<Arc<Shared>>,
    a: Authed,
    Path(p): Path<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let path = route_stream(&a, &p)?;
    Ok(Json(shared.stream_info(&path)?))
}

async fn delete_stream(
    State(shared): State<Arc<Shared>>,
    a: Authed,
    Path(p): Path<HashMap<String, String>>,
) -> Result<StatusCode, ApiError> {
    let path = route_stream(&a, &p)?;
    shared.delete_stream(&path).await?;
    changed(
        &shared,
        &a,
        "stream.delete",
        "delete",
        json!({ "stream": path.to_string() }),
    );
    Ok(StatusCode::NO_CONTENT)
}

async fn list_namespaces(
    State(shared): State<Arc<Shared>>,
    a: Authed,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        json!({ "namespaces": shared.namespaces(a.tenant()?)? }),
    ))
}

async fn list_caches(
    State(shared): State<Arc<Shared>>,
    a: Authed,
    Path(p): Path<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let ns = path_name(&p, "namespace", NamespaceName::parse)?;
    let caches: Vec<Value> = shared
        .broker
        .cache()
        .caches(std::time::Instant::now(), a.tenant()?, &ns)
        .into_iter()
        .map(|(name, entries, bytes)| json!({ "name": name.as_str(), "entries": entries, "bytes": bytes }))
        .collect();
    Ok(Json(json!({ "caches": caches })))
}

async fn flush_cache(
    State(shared): State<Arc<Shared>>,
    a: Authed,
    Path(p): Path<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let ns = path_name(&p, "namespace", NamespaceName::parse)?;
    let cache = path_name(&p, "cache", rampart_proto::CacheName::parse)?;
    let removed = shared.broker.cache().flush(a.tenant()?, &ns, &cache);
    changed(
        &shared,
        &a,
        "cache.flush",
        "flush",
        json!({ "namespace": ns.as_str(), "cache": cache.as_str(), "removed": removed }),
    );
    info!(tenant = %a.tenant()?, namespace = %ns, cache = %cache, removed, "cache flushed");
    Ok(Json(json!({ "removed": removed })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    since: Option<u64>,
    limit: Option<usize>,
}

/// A tenant's own audit records, oldest first after `since`.
async fn read_audit(
    State(shared): State<Arc<Shared>>,
    a: Authed,
    axum::extract::Query(q): axum::extract::Query<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    let tenant = a.tenant()?.to_string();
    let dir = shared.config.data_dir.join("audit");
    let since = q.since.unwrap_or(0);
    let limit = q.limit.unwrap_or(1000).min(10_000);
    let records = tokio::task::spawn_blocking(move || {
        rampart_audit::read_records(&dir, Some(&tenant), since, limit)
    })
    .await
    .map_err(|_| ApiError::Internal)?
    .map_err(|e| {
        tracing::error!(error = %e, "reading audit records");
        ApiError::Internal
    })?;
    Ok(Json(json!({ "records": records })))
}

async fn not_found() -> ApiError {
    ApiError::NotFound("route")
}

// === router ===

fn method_filter(m: &str) -> MethodFilter {
    match m {
        "GET" => MethodFilter::GET,
        "PUT" => MethodFilter::PUT,
        "DELETE" => MethodFilter::DELETE,
        _ => MethodFilter::POST,
    }
}

/// Counts every routed request by its route and answer, for `/metrics`,
/// and hands the route to the handler and its extractors (one layer per
/// route for both: each costs a boxed clone and a boxed future per request).
async fn count_request(
    State((shared, route)): State<(Arc<Shared>, &'static crate::access::Route)>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    req.extensions_mut().insert(route);
    let resp = next.run(req).await;
    shared
        .metrics
        .http(route.method, route.path, resp.status().as_u16());
    resp
}

/// The router, built from the route table: one entry, one route.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let mut r: Router<Arc<Shared>> = Router::new();
    for route in ROUTES {
        let mut f = method_filter(route.method);
        // Vault treats PUT as POST everywhere, and its CLIs write with PUT.
        if route.method == "POST" && crate::access::vault_style(route.path) {
            f = f.or(MethodFilter::PUT);
        }
        let mr = match route.name {
            RouteName::Auth => on(f, auth),
            RouteName::SysHealth => on(f, crate::vault_api::health),
            RouteName::SysSealStatus => on(f, crate::vault_api::seal_status),
            RouteName::SysLeader => on(f, crate::vault_api::leader),
            RouteName::SysInit => on(f, crate::vault_api::init),
            RouteName::Healthz => on(f, crate::health::healthz),
            RouteName::Readyz => on(f, crate::health::readyz),
            RouteName::TokenLookupSelf => on(f, token_lookup_self),
            RouteName::TokenRenewSelf => on(f, token_renew_self),
            RouteName::TokenRevokeSelf => on(f, token_revoke_self),
            RouteName::MountsPreflight => on(f, mounts_preflight),
            RouteName::KvData => any(crate::kv_api::data),
            RouteName::KvMetadata | RouteName::KvMetadataRoot => any(crate::kv_api::metadata),
            RouteName::KvDelete | RouteName::KvUndelete | RouteName::KvDestroy => {
                on(f, crate::kv_api::versions)
            }
            RouteName::KeyVaultGet => on(f, crate::kv_api::keyvault_get),
            RouteName::ApproleLogin => on(f, crate::kv_api::login),
            RouteName::ApproleRole => any(crate::kv_api::role),
            RouteName::ApproleRoleId => on(f, crate::kv_api::role_id),
            RouteName::ApproleSecretId => on(f, crate::kv_api::secret_id),
            RouteName::WhoAmI => on(f, whoami),
            RouteName::ListTenants => on(f, list_tenants),
            RouteName::CreateTenant => on(f, create_tenant),
            RouteName::DisableTenant => on(f, disable_tenant),
            RouteName::DisableNamespace => on(f, disable_namespace),
            RouteName::EnableNamespace => on(f, enable_namespace),
            RouteName::EnableTenant => on(f, enable_tenant),
            RouteName::EraseTenant => on(f, erase_tenant),
            RouteName::RotateEncryption => on(f, rotate_encryption),
            RouteName::EncryptionStatus => on(f, encryption_status),
            RouteName::GetLimits
            | RouteName::PutLimits
            | RouteName::DeleteLimits
            | RouteName::GetPrincipalLimits
            | RouteName::PutPrincipalLimits
            | RouteName::DeletePrincipalLimits => on(f, crate::limits::limits_api),
            RouteName::ListKeys => on(f, list_keys),
            RouteName::CreateKey => on(f, create_key),
            RouteName::RevokeKey => on(f, revoke_key),
            RouteName::RotateKey => on(f, rotate_key),
            RouteName::RevokeTokens => on(f, revoke_tokens),
            RouteName::GetAcl => on(f, get_acl),
            RouteName::PutAcl => on(f, put_acl),
            RouteName::ExplainAcl => on(f, explain_acl),
            RouteName::ListNamespaces => on(f, list_namespaces),
            RouteName::ListStreams => on(f, list_streams),
            RouteName::ListCaches => on(f, list_caches),
            RouteName::FlushCache => on(f, flush_cache),
            RouteName::ReadAudit => on(f, read_audit),
            RouteName::CreateStream => on(f, create_stream),
            RouteName::DeleteStream => on(f, delete_stream),
            RouteName::GetStream => on(f, get_stream),
            RouteName::EraseStream => on(f, erase_stream),
            RouteName::Backup => on(f, crate::backup::backup),
            RouteName::RotateTokenSigning => on(f, rotate_token_signing),
            RouteName::RotateAuditKeys => on(f, rotate_audit_keys),
        };
        let counted = axum::middleware::from_fn_with_state((shared.clone(), route), count_request);
        r = r.route(route.path, mr.layer(counted));
    }
    r.fallback(not_found).with_state(shared)
}

/// The headers every answer carries, whatever made it (a handler, the
/// fallback, CORS, the body limit).
const SECURITY_HEADERS: [(header::HeaderName, &str); 6] = [
    (
        header::STRICT_TRANSPORT_SECURITY,
        "max-age=63072000; includeSubDomains",
    ),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::X_FRAME_OPTIONS, "DENY"),
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; frame-ancestors 'none'",
    ),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::CACHE_CONTROL, "no-store"),
];

fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        h.insert(name, HeaderValue::from_static(value));
    }
    resp
}

/// What the body limit answers with: the router's answer, or its own 413.
type Limited = axum::http::Response<tower_http::limit::ResponseBody<axum::body::Body>>;

/// The HTTP service of one listener: see [`app`].
type App = tower::util::MapResponse<
    tower::util::Either<tower_http::cors::Cors<Inner>, Inner>,
    fn(Response) -> Response,
>;

/// The router inside the body limit and timeout, its answers unified.
type Inner = tower::util::MapResponse<
    tower_http::timeout::RequestBodyTimeout<tower_http::limit::RequestBodyLimit<Router>>,
    fn(Limited) -> Response,
>;

/// The body limit's answers as the router's, so that CORS covers its 413.
fn unify(resp: Limited) -> Response {
    resp.map(axum::body::Body::new)
}

/// The router inside the layers that hold for every request: the body
/// limit and body timeout, CORS and the security headers. They wrap the
/// router once, as one tower stack, rather than through `Router::layer`,
/// which wraps every route in each (a boxed clone and a boxed future per
/// layer per request).
///
/// CORS is there only when `cors_allowed_origins` names an origin. With
/// none (the default) a browser is refused either way, and the layer
/// would only cost every answer its `Vary` values (2% of a secret read's
/// server CPU in a profile); a preflight then gets the route's own answer
/// instead of a 200 that allows no origin.
fn app(shared: &Arc<Shared>, router: Router) -> App {
    let origins = &shared.config.cors_allowed_origins;
    tower::ServiceBuilder::new()
        .map_response(security_headers as fn(Response) -> Response)
        .option_layer((!origins.is_empty()).then(|| cors_layer(origins)))
        .map_response(unify as fn(Limited) -> Response)
        // A body must arrive as promptly as the headers (slow-body attacks).
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            Duration::from_millis(shared.config.http_header_timeout_ms),
        ))
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT))
        .service(router)
}

fn cors_layer(origins: &[String]) -> CorsLayer {
    let list: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(list))
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .max_age(Duration::from_secs(600))
}

/// Accepts HTTPS connections until shutdown. Admission (caps and rates per
/// IP) runs in `accept_tcp`, before any TLS work.
pub(crate) async fn run(listener: TcpListener, acceptor: TlsAcceptor, shared: Arc<Shared>) {
    let app = app(&shared, router(shared.clone()));
    let accepting = shared.clone();
    crate::transport::accept_tcp(
        listener,
        accepting,
        "https",
        |shared, _| {
            tokio::time::Instant::now()
                + Duration::from_millis(shared.config.http_header_timeout_ms)
        },
        move |stream, addr, ticket, deadline| {
            serve_conn(
                stream,
                addr,
                ticket,
                deadline,
                acceptor.clone(),
                app.clone(),
                shared.clone(),
            )
        },
    )
    .await;
}

/// Serves one HTTPS connection. `ticket` holds its place in the admission
/// counts until the connection ends.
async fn serve_conn(
    stream: TcpStream,
    addr: SocketAddr,
    mut ticket: rampart_limits::Ticket,
    deadline: tokio::time::Instant,
    acceptor: TlsAcceptor,
    app: App,
    shared: Arc<Shared>,
) {
    // A clean stop waits for the requests in flight.
    let _guard = shared.track_http();
    // One bound for the TLS handshake and for each request's headers (the
    // first request's and every later one's, idle keep-alive included).
    let header_timeout = Duration::from_millis(shared.config.http_header_timeout_ms);
    let tls = match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
        Ok(Ok(t)) => {
            shared.metrics.handshake("https", "ok");
            t
        }
        Ok(Err(e)) => {
            shared.metrics.handshake("https", "failed");
            debug!(peer = %addr, error = %e, "https tls handshake failed");
            return;
        }
        Err(_) => {
            shared.metrics.handshake("https", "timeout");
            debug!(peer = %addr, "https tls handshake timed out");
            return;
        }
    };
    // HTTPS has no AUTH phase (each request carries its credential), so
    // the unauthenticated cap bounds the connections still in the
    // handshake; the per-IP cap holds for the connection's whole life.
    ticket.authenticated();
    let cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(CertNames::of);
    let peer = PeerInfo { addr, cert };
    let app = tower::ServiceBuilder::new()
        .map_request(move |mut req: axum::http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(peer.clone());
            req
        })
        .service(app);
    let svc = hyper_util::service::TowerToHyperService::new(app);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(rampart_tls::Pieces::new(tls)), svc);
    let mut conn = std::pin::pin!(conn);
    let mut shutdown = shared.shutdown.clone();
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = shutdown.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        }
    }
    drop(ticket);
}
