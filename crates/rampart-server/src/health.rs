//! Liveness and readiness for load balancers and orchestrators:
//! `GET|HEAD /healthz` and `GET|HEAD /readyz`, public like Vault's
//! `/v1/sys/health` and listed in the same route table (`access.rs`).
//!
//! Readiness is read from state the server keeps anyway (whether shutdown
//! began, whether the last store write and the last audit write failed,
//! which tenants have their keys loaded) plus one `stat` of the data
//! directory: a probe of a healthy server writes nothing. The verdict is a
//! pure function of [`Observed`], tested below without a server. Bodies
//! name the failing checks and never carry a path, a tenant name or an
//! error text.
//!
//! A failed write is only known to be mended by the next write that
//! succeeds, and a server that is not ready gets no traffic to make one.
//! So while the store or the audit check fails, probes ask for one write
//! of their own, in the background and at most every [`RETRY_EVERY_MS`]:
//! readiness comes back by itself once the disk does.

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

/// Least time between two writes asked for by probes, per check.
const RETRY_EVERY_MS: u64 = 2_000;

/// The meta key those writes to the store go to.
const STORE_RETRY_KEY: &str = "health.store_retry_ms";

// === impl HealthState ===

/// What readiness keeps between probes: how the store's writes are going,
/// and when probes last asked for a write.
#[derive(Debug, Default)]
pub(crate) struct HealthState {
    /// Unix ms of the first failed store write since the last good one; 0
    /// while writes succeed.
    store_failing_since_ms: AtomicU64,
    store_retry_ms: AtomicU64,
    audit_retry_ms: AtomicU64,
}

impl HealthState {
    fn wrote(&self, ok: bool) {
        if ok {
            self.store_failing_since_ms.store(0, Ordering::Relaxed);
        } else {
            let now = now_ms().max(1);
            let _ = self.store_failing_since_ms.compare_exchange(
                0,
                now,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    fn store_failing_since_ms(&self) -> Option<u64> {
        match self.store_failing_since_ms.load(Ordering::Relaxed) {
            0 => None,
            t => Some(t),
        }
    }

    /// Whether a retry kept in `slot` is due at `now_ms`; if so, it is
    /// taken (one caller wins).
    fn retry_due(slot: &AtomicU64, now_ms: u64) -> bool {
        let last = slot.load(Ordering::Relaxed);
        now_ms.saturating_sub(last) >= RETRY_EVERY_MS
            && slot
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// A [`KvStore`] that tells [`HealthState`] how its writes went.
#[derive(Debug)]
pub(crate) struct TrackedStore<S> {
    inner: S,
    health: Arc<HealthState>,
}

impl<S> TrackedStore<S> {
    pub(crate) fn new(inner: S, health: Arc<HealthState>) -> Self {
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

    fn last(&self, table: Table) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        self.inner.last(table)
    }

    fn apply_appending(
        &self,
        ops: Vec<Op>,
        table: Table,
        append: &mut rampart_store::Appender<'_>,
    ) -> Result<(), StoreError> {
        let r = self.inner.apply_appending(ops, table, append);
        self.health.wrote(r.is_ok());
        r
    }

    fn snapshot(&self) -> Result<rampart_store::Snapshot, StoreError> {
        self.inner.snapshot()
    }
}

// === the verdict ===

/// What readiness looks at, gathered by [`observe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Observed {
    pub(crate) now_ms: u64,
    /// `Server::shutdown` has begun (its drain included).
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
        shutting_down: shared.stopping.load(Ordering::Acquire) || *shared.shutdown.borrow(),
        data_dir_ok,
        store_failing_since_ms: shared.health.store_failing_since_ms(),
        audit_failing_since_ms: shared.audit.stats().failing_since_ms,
        tenants_without_keys,
    }
}

/// While the store or the audit check fails, asks for one write to each
/// (at most every [`RETRY_EVERY_MS`], in the background, never during
/// shutdown); its outcome shows in the next probe.
fn retry_failed_writes(shared: &Arc<Shared>, o: &Observed) {
    if o.shutting_down {
        return;
    }
    let h = &shared.health;
    if let Some(since) = o.audit_failing_since_ms {
        if HealthState::retry_due(&h.audit_retry_ms, o.now_ms) {
            shared.audit.record(
                rampart_audit::Event::new(
                    "server.health",
                    "audit_retry",
                    rampart_audit::Outcome::Error,
                )
                .meta("failing_since_ms", since),
            );
        }
    }
    if o.store_failing_since_ms.is_some() && HealthState::retry_due(&h.store_retry_ms, o.now_ms) {
        let catalog = shared.identity.catalog.clone();
        let now = o.now_ms;
        tokio::task::spawn_blocking(move || {
            // Its outcome is recorded by `TrackedStore`.
            let _ = catalog.put_meta_u64(STORE_RETRY_KEY, now);
        });
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
    let o = observe(&shared).await;
    retry_failed_writes(&shared, &o);
    let v = verdict(&o);
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
    fn probes_ask_for_a_write_at_most_every_retry_period() {
        let slot = AtomicU64::new(0);
        assert!(HealthState::retry_due(&slot, 10_000));
        assert!(!HealthState::retry_due(&slot, 10_000));
        assert!(!HealthState::retry_due(&slot, 10_000 + RETRY_EVERY_MS - 1));
        assert!(HealthState::retry_due(&slot, 10_000 + RETRY_EVERY_MS));
    }

    #[test]
    fn a_failed_store_write_is_remembered_until_one_succeeds() {
        let health = Arc::new(HealthState::default());
        let store = TrackedStore::new(
            Flaky(std::sync::atomic::AtomicBool::new(false)),
            health.clone(),
        );
        assert_eq!(health.store_failing_since_ms(), None);
        assert!(store.apply(Vec::new()).is_err());
        let first = health.store_failing_since_ms().expect("failing");
        assert!(store.apply(Vec::new()).is_err());
        assert_eq!(
            health.store_failing_since_ms(),
            Some(first),
            "the first failure"
        );
        store.inner.0.store(true, Ordering::Relaxed);
        assert!(store.get(Table::Meta, "x").is_ok());
        assert_eq!(
            health.store_failing_since_ms(),
            Some(first),
            "reads prove nothing"
        );
        store.apply(Vec::new()).unwrap();
        assert_eq!(health.store_failing_since_ms(), None);
    }
}
