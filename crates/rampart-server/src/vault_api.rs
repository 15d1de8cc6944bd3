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
    let h = hex::encode(&digest.as_ref()[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
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
