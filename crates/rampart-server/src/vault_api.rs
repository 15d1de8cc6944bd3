//! The Vault-compatible HTTP surface, so that existing Vault and OpenBao
//! clients (`hvac`, the `vault` / `bao` CLIs) talk to Rampart unchanged.
//!
//! So far: the `sys` endpoints those clients call before anything else
//! (health, seal status, leader, init). Rampart has no seal and no
//! standby: it serves once it started (its master key was proven at
//! start), so it always answers as an initialized, unsealed, active node.
//! Bodies are `application/json`, as Vault's are.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::auth::now_ms;
use crate::Shared;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A stable id for this data directory's "cluster", derived from nothing
/// secret.
fn cluster_id(shared: &Shared) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        shared.config.data_dir.to_string_lossy().as_bytes(),
    );
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest.as_ref()[..16]);
    // Only ASCII hex digits and dashes.
    String::from_utf8_lossy(&rampart_vault::uuid_text(first)).into_owned()
}

/// `GET|HEAD /v1/sys/health`. Vault answers with a status code chosen by
/// query parameters (`activecode`, default 200; the others name states
/// Rampart is never in); a code outside 100..=599 is a 400.
pub(crate) async fn health(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let code = match q.get("activecode") {
        None => 200,
        Some(c) => match c.parse::<u16>() {
            Ok(c) if (100..=599).contains(&c) => c,
            _ => {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(json!({ "errors": ["activecode must be an HTTP status code"] })),
                )
                    .into_response()
            }
        },
    };
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    let body = json!({
        "initialized": true,
        "sealed": false,
        "standby": false,
        "performance_standby": false,
        "replication_performance_mode": "disabled",
        "replication_dr_mode": "disabled",
        "server_time_utc": now_ms() / 1000,
        "version": VERSION,
        "cluster_name": "rampart",
        "cluster_id": cluster_id(&shared),
    });
    (status, Json(body)).into_response()
}

/// `GET /v1/sys/seal-status`.
pub(crate) async fn seal_status(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({
        "type": "rampart",
        "initialized": true,
        "sealed": false,
        "t": 1,
        "n": 1,
        "progress": 0,
        "nonce": "",
        "version": VERSION,
        "build_date": "",
        "migration": false,
        "cluster_name": "rampart",
        "cluster_id": cluster_id(&shared),
        "recovery_seal": false,
        "storage_type": "rampart",
    }))
}

/// `GET /v1/sys/leader`: a single active node.
pub(crate) async fn leader() -> Json<Value> {
    Json(json!({
        "ha_enabled": false,
        "is_self": true,
        "active_time": "0001-01-01T00:00:00Z",
        "leader_address": "",
        "leader_cluster_address": "",
        "performance_standby": false,
        "performance_standby_last_remote_wal": 0,
    }))
}

/// `GET /v1/sys/init`.
pub(crate) async fn init() -> Json<Value> {
    Json(json!({ "initialized": true }))
}

// === tokens (Vault's token self-service) ===

/// `2026-11-25T10:50:00Z` from Unix milliseconds.
pub(crate) fn rfc3339(ms: u64) -> String {
    rampart_audit::rfc3339_s(ms)
}

/// The caller as `GET /v1/auth/token/lookup-self` describes it.
pub(crate) fn lookup_self_body(
    shared: &Shared,
    p: &rampart_identity::Principal,
    token: &str,
) -> Value {
    let now = now_ms();
    let exp = p.expires_at_ms;
    let ttl = exp.map_or(0, |e| e.saturating_sub(now) / 1000);
    let renewable = p.kind == rampart_identity::PrincipalKind::Token;
    let accessor = p
        .credential_id
        .as_deref()
        .map(|id| shared.audit.hmac_id(id))
        .unwrap_or_default();
    json!({
        "data": {
            "accessor": accessor,
            "display_name": format!("{}-{}", p.kind.as_str(), p.name),
            "entity_id": "",
            "expire_time": exp.map(rfc3339),
            "explicit_max_ttl": 0,
            "id": token,
            "meta": { "tenant": p.tenant.as_str(), "principal": p.name },
            "num_uses": 0,
            "orphan": true,
            "path": "auth/token/create",
            "policies": p.roles,
            "renewable": renewable,
            "ttl": ttl,
            "type": "service",
        }
    })
}

/// Parses Vault's `increment`: seconds as a number, or `90s`, `15m`, `1h`.
pub(crate) fn parse_increment(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => {
            let s = s.trim();
            let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
            let n: u64 = num.parse().ok()?;
            match unit {
                "" | "s" => Some(n),
                "m" => n.checked_mul(60),
                "h" => n.checked_mul(3600),
                _ => None,
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_604_400_000), "2026-11-25T11:00:00Z");
    }

    #[test]
    fn increments() {
        assert_eq!(parse_increment(&json!(30)), Some(30));
        assert_eq!(parse_increment(&json!("15m")), Some(900));
        assert_eq!(parse_increment(&json!("2h")), Some(7200));
        assert_eq!(parse_increment(&json!("45")), Some(45));
        assert_eq!(parse_increment(&json!("1w")), None);
        assert_eq!(parse_increment(&json!(-1)), None);
    }
}
