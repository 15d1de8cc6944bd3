//! Rate limits and quotas: loading the overrides kept in the store, and the
//! admin API that changes them while the server runs.
//!
//! `GET|PUT|DELETE /v1/tenants/T/limits` and
//! `GET|PUT|DELETE /v1/tenants/T/principals/P/limits` (operator only: a
//! tenant cannot raise its own caps). A PUT replaces the override; fields it
//! leaves out fall back to the configured defaults. Changes apply at once
//! to connections already open, and are kept across restarts.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::Method;
use axum::Json;
use std::net::IpAddr;

use rampart_limits::{Admission, LimitSpec, Limits, Refusal};
use rampart_proto::TenantId;
use serde_json::{json, Value};

use crate::config::Config;
use crate::http::{changed, ApiError, Authed, Body};
use crate::{Shared, StartError};

/// What one authentication attempt counts against for failed-login
/// lockouts: the client's address and, when the credential names one, a
/// managed API key's id or an AppRole role id. The wire protocol and the
/// HTTPS API use it alike.
#[derive(Debug)]
pub(crate) struct Attempt {
    ip: Option<IpAddr>,
    id: Option<String>,
}

impl Attempt {
    /// An attempt from `ip` with no credential id.
    pub(crate) fn from(ip: Option<IpAddr>) -> Self {
        Attempt { ip, id: None }
    }

    /// The id of a managed API key, when `credential` is one.
    pub(crate) fn api_key(mut self, credential: &[u8]) -> Self {
        self.id = rampart_identity::managed_key_id(credential).map(|id| format!("key:{id}"));
        self
    }

    /// An AppRole role id (secret-id guessing).
    pub(crate) fn role(mut self, role_id: &str) -> Self {
        self.id = Some(format!(
            "role:{}",
            role_id.chars().take(64).collect::<String>()
        ));
        self
    }

    fn ip_key(&self) -> Option<String> {
        self.ip.map(|ip| format!("ip:{ip}"))
    }

    /// Refused while the address or the id is locked out.
    pub(crate) fn check(&self, a: &Admission) -> Result<(), Refusal> {
        if !a.has_lockouts() {
            return Ok(());
        }
        for key in self.ip_key().iter().chain(&self.id) {
            a.locked(key)?;
        }
        Ok(())
    }

    pub(crate) fn failed(&self, a: &Admission) {
        let ip = self.ip_key();
        let keys: Vec<&str> = ip.iter().chain(&self.id).map(String::as_str).collect();
        a.failed(&keys);
    }

    pub(crate) fn succeeded(&self, a: &Admission) {
        if !a.has_lockouts() {
            return;
        }
        for key in self.ip_key().iter().chain(&self.id) {
            a.succeeded(key);
        }
    }
}

/// The limits of a server starting: configured defaults, then the
/// overrides kept in the store.
pub(crate) fn load(
    config: &Config,
    catalog: &rampart_store::Catalog,
) -> Result<Arc<Limits>, StartError> {
    let limits = Limits::new(
        config.tenant_limits.clone(),
        config.principal_limits.clone(),
    );
    let records = catalog
        .limits()
        .map_err(|e| StartError::Storage(e.to_string()))?;
    for r in records {
        let spec: LimitSpec = serde_json::from_value(r.limits)
            .map_err(|e| StartError::Storage(format!("limit override for {}: {e}", r.tenant)))?;
        match &r.principal {
            Some(p) => limits.set_principal(&r.tenant, p, Some(spec)),
            None => limits.set_tenant(&r.tenant, Some(spec)),
        }
    }
    Ok(limits)
}

/// A principal name as it appears in a path: what `Principal::name` holds
/// (API key names, `approle:ROLE`, token subjects). Printable, no `/`.
fn principal_param(params: &HashMap<String, String>) -> Result<Option<String>, ApiError> {
    let Some(p) = params.get("principal") else {
        return Ok(None);
    };
    if p.is_empty() || p.len() > 256 || p.chars().any(|c| c.is_control() || c == '/') {
        return Err(ApiError::BadRequest(
            "principal must be 1-256 printable characters without '/'".into(),
        ));
    }
    Ok(Some(p.clone()))
}

fn view(shared: &Shared, tenant: &TenantId, principal: Option<&str>) -> Value {
    let t = tenant.as_str();
    let mut v = json!({
        "tenant": t,
        "override": shared.limits.override_of(t, principal),
        "effective": shared.limits.effective(t, principal),
    });
    match principal {
        Some(p) => v["principal"] = json!(p),
        None => {
            let usage: serde_json::Map<String, Value> = shared
                .limits
                .usage(t)
                .into_iter()
                .map(|(k, n)| (k.to_string(), json!(n)))
                .collect();
            let rejections: Vec<Value> = shared
                .limits
                .rejections()
                .into_iter()
                .filter(|r| r.tenant == t)
                .map(|r| json!({ "level": r.level.as_str(), "limit": r.limit, "count": r.count }))
                .collect();
            v["usage"] = Value::Object(usage);
            v["rejections"] = json!(rejections);
        }
    }
    v
}

/// One handler for the six routes: GET shows, PUT replaces, DELETE removes
/// the override.
pub(crate) async fn limits_api(
    State(shared): State<Arc<Shared>>,
    a: Authed,
    method: Method,
    Path(params): Path<HashMap<String, String>>,
    Body(body): Body<Option<Value>>,
) -> Result<Json<Value>, ApiError> {
    let tenant = a.tenant()?.clone();
    let principal = principal_param(&params)?;
    let p = principal.as_deref();
    let t = tenant.as_str();
    if method == Method::GET {
        return Ok(Json(view(&shared, &tenant, p)));
    }
    if shared
        .identity
        .catalog
        .tenant(t)
        .map_err(|_| ApiError::Internal)?
        .is_none()
    {
        return Err(ApiError::NotFound("tenant"));
    }
    if method == Method::DELETE {
        shared
            .identity
            .catalog
            .delete_limits(t, p)
            .map_err(|_| ApiError::Internal)?;
        match p {
            Some(p) => shared.limits.set_principal(t, p, None),
            None => shared.limits.set_tenant(t, None),
        }
        changed(
            &shared,
            &a,
            "limits.clear",
            "delete",
            json!({ "principal": p }),
        );
        return Ok(Json(view(&shared, &tenant, p)));
    }
    let body =
        body.ok_or_else(|| ApiError::BadRequest("a JSON body of limits is needed".into()))?;
    let spec: LimitSpec =
        serde_json::from_value(body).map_err(|e| ApiError::BadRequest(format!("limits: {e}")))?;
    spec.validate()
        .map_err(|m| ApiError::BadRequest(format!("limits: {m}")))?;
    let record = rampart_store::LimitRecord {
        tenant: t.to_string(),
        principal: principal.clone(),
        limits: serde_json::to_value(&spec).map_err(|_| ApiError::Internal)?,
    };
    shared
        .identity
        .catalog
        .put_limits(&record)
        .map_err(|_| ApiError::Internal)?;
    match p {
        Some(p) => shared.limits.set_principal(t, p, Some(spec.clone())),
        None => shared.limits.set_tenant(t, Some(spec.clone())),
    }
    changed(
        &shared,
        &a,
        "limits.set",
        "put",
        json!({ "principal": p, "limits": spec }),
    );
    Ok(Json(view(&shared, &tenant, p)))
}
