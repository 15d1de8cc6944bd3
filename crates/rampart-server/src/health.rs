//! Liveness and readiness for load balancers and orchestrators:
//! `GET|HEAD /healthz` and `GET|HEAD /readyz`, public like Vault's
//! `/v1/sys/health` and listed in the same route table (`access.rs`).
//!
//! A probe writes nothing: readiness is read from state the server keeps
//! anyway (whether shutdown began, whether the last store write and the
//! last audit write failed, which tenants have their keys loaded) plus one
//! `stat` of the data directory. The verdict is a pure function of
//! [`Observed`], tested below without a server. Bodies name the failing
//! checks and never carry a path, a tenant name or an error text.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use rampart_store::{KvStore, Op, StoreError, Table};
use serde_json::{json, Value};

use crate::auth::now_ms;
use crate::Shared;

// === impl StoreHealth ===

/// Whether writes to the store succeed, as seen by the writes the server
/// makes anyway.
#[derive(Debug, Default)]
pub(crate) struct StoreHealth {
    /// Unix ms of the first failed write since the last good one; 0 while
    /// writes succeed.
    failing_since_ms: AtomicU64,
}

impl StoreHealth {
    fn wrote(&self, ok: bool) {
        if ok {
            self.failing_since_ms.store(0, Ordering::Relaxed);
        } else {
            let now = now_ms().max(1);
            let _ = self.failing_since_ms.compare_exchange(
                0,
                now,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    fn failing_since_ms(&self) -> Option<u64> {
        match self.failing_since_ms.load(Ordering::Relaxed) {
            0 => None,
            t => Some(t),
        }
    }
}

/// A [`KvStore`] that tells [`StoreHealth`] how its writes went.
#[derive(Debug)]
pub(crate) struct TrackedStore<S> {
    inner: S,
    health: Arc<StoreHealth>,
}

impl<S> TrackedStore<S> {
    pub(crate) fn new(inner: S, health: Arc<StoreHealth>) -> Self {
        Self { inner, health }
    }
}

impl<S: KvStore> KvStore for TrackedStore<S> {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(table, key)
    }

    fn scan(&self, table: Table, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.inner.scan(table, prefix)
    }

    fn apply(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        let r = self.inner.apply(ops);
        self.health.wrote(r.is_ok());
        r
    }
}

// === the verdict ===

/// What readiness looks at, gathered by [`observe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Observed {
    pub(crate) now_ms: u64,
    /// `Server::shutdown` has begun.
    pub(crate) shutting_down: bool,
    /// The data directory is there and is a directory.
    pub(crate) data_dir_ok: bool,
    /// Since when store writes have been failing, if they are.
    pub(crate) store_failing_since_ms: Option<u64>,
    /// Since when audit writes have been failing, if they are.
    pub(crate) audit_failing_since_ms: Option<u64>,
    /// Tenants that are neither erased nor have their keys unwrapped.
    pub(crate) tenants_without_keys: usize,
}

/// The outcome: ready, or the failing checks with a short reason each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub(crate) failing: BTreeMap<&'static str, String>,
}

impl Verdict {
    pub(crate) fn ready(&self) -> bool {
        self.failing.is_empty()
    }

    pub(crate) fn body(&self) -> Value {
        if self.ready() {
            json!({ "status": "ready" })
        } else {
            json!({ "status": "not ready", "checks": self.failing })
        }
    }
}

/// Decides readiness. Pure: the checks are `storage`, `audit`, `keys` and
/// `shutdown`; only failing ones are named.
pub(crate) fn verdict(o: &Observed) -> Verdict {
    let since = |t: u64| {
        let secs = o.now_ms.saturating_sub(t) / 1000;
        format!("failed: writes failing for {secs} s")
    };
    let mut failing = BTreeMap::new();
    if o.shutting_down {
        failing.insert("shutdown", "in progress".to_string());
    }
    if !o.data_dir_ok {
        failing.insert("storage", "failed: data directory unavailable".to_string());
    } else if let Some(t) = o.store_failing_since_ms {
        failing.insert("storage", since(t));
    }
    if let Some(t) = o.audit_failing_since_ms {
        failing.insert("audit", since(t));
    }
    if o.tenants_without_keys > 0 {
        failing.insert(
            "keys",
            format!(
                "failed: keys of {} tenant(s) not loaded",
                o.tenants_without_keys
            ),
        );
    }
    Verdict { failing }
}

/// Reads what [`verdict`] needs from the running server. The only IO is a
/// `stat` of the data directory, on the blocking pool.
async fn observe(shared: &Shared) -> Observed {
    let data_dir_ok = tokio::fs::metadata(&shared.config.data_dir)
        .await
        .is_ok_and(|m| m.is_dir());
    let tenants_without_keys = shared
        .identity
        .tenants()
        .iter()
        .filter(|t| t.erased_ms.is_none() && !shared.sealer.is_loaded(&t.name))
        .count();
    Observed {
        now_ms: now_ms(),
        shutting_down: *shared.shutdown.borrow(),
        data_dir_ok,
        store_failing_since_ms: shared.store_health.failing_since_ms(),
        audit_failing_since_ms: shared.audit.stats().failing_since_ms,
        tenants_without_keys,
    }
}

// === handlers ===

/// `GET|HEAD /healthz`: the process serves HTTP. Nothing else is checked,
/// so an orchestrator restarts the process only when it is stuck.
pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET|HEAD /readyz`: 200 `{"status":"ready"}` when the server can do its
/// job, else 503 naming each failing check.
pub(crate) async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    let v = verdict(&observe(&shared).await);
    let status = if v.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(v.body())).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> Observed {
        Observed {
            now_ms: 100_000,
            shutting_down: false,
            data_dir_ok: true,
            store_failing_since_ms: None,
            audit_failing_since_ms: None,
            tenants_without_keys: 0,
        }
    }

    #[test]
    fn all_good_is_ready() {
        let v = verdict(&healthy());
        assert!(v.ready());
        assert_eq!(v.body(), json!({ "status": "ready" }));
    }

    #[test]
    fn shutdown_makes_it_not_ready() {
        let v = verdict(&Observed {
            shutting_down: true,
            ..healthy()
        });
        assert!(!v.ready());
        assert_eq!(
            v.body(),
            json!({ "status": "not ready", "checks": { "shutdown": "in progress" } })
        );
    }

    #[test]
    fn every_failing_check_is_named() {
        let v = verdict(&Observed {
            shutting_down: true,
            store_failing_since_ms: Some(90_000),
            audit_failing_since_ms: Some(97_500),
            tenants_without_keys: 2,
            ..healthy()
        });
        assert_eq!(
            v.body(),
            json!({
                "status": "not ready",
                "checks": {
                    "audit": "failed: writes failing for 2 s",
                    "keys": "failed: keys of 2 tenant(s) not loaded",
                    "shutdown": "in progress",
                    "storage": "failed: writes failing for 10 s",
                }
            })
        );
        let gone = verdict(&Observed {
            data_dir_ok: false,
            store_failing_since_ms: Some(90_000),
            ..healthy()
        });
        assert_eq!(
            gone.failing.get("storage").map(String::as_str),
            Some("failed: data directory unavailable")
        );
    }

    #[derive(Debug)]
    struct Flaky(std::sync::atomic::AtomicBool);

    impl KvStore for Flaky {
        fn get(&self, _: Table, _: &str) -> Result<Option<Vec<u8>>, StoreError> {
            Ok(None)
        }
        fn scan(&self, _: Table, _: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
            Ok(Vec::new())
        }
        fn apply(&self, _: Vec<Op>) -> Result<(), StoreError> {
            if self.0.load(Ordering::Relaxed) {
                Ok(())
            } else {
                Err(StoreError("disk full".into()))
            }
        }
    }

    #[test]
    fn a_failed_store_write_is_remembered_until_one_succeeds() {
        let health = Arc::new(StoreHealth::default());
        let store = TrackedStore::new(
            Flaky(std::sync::atomic::AtomicBool::new(false)),
            health.clone(),
        );
        assert_eq!(health.failing_since_ms(), None);
        assert!(store.apply(Vec::new()).is_err());
        let first = health.failing_since_ms().expect("failing");
        assert!(store.apply(Vec::new()).is_err());
        assert_eq!(health.failing_since_ms(), Some(first), "the first failure");
        store.inner.0.store(true, Ordering::Relaxed);
        assert!(store.get(Table::Meta, "x").is_ok());
        assert_eq!(
            health.failing_since_ms(),
            Some(first),
            "reads prove nothing"
        );
        store.apply(Vec::new()).unwrap();
        assert_eq!(health.failing_since_ms(), None);
    }
}
