//! Re-encryption of a tenant's durable stream data after its keys were
//! rotated (`rampart keys rotate --tenant T --reencrypt`).
//!
//! Store records are re-sealed at once by the rotation itself; stream
//! blocks can be many, so a background job per tenant rewrites them: for
//! each of the tenant's sealed durable streams it closes the active
//! segment, then rewrites every segment holding a block sealed under a data
//! key version other than the stream's current one (see
//! `rampart_log::Log::reseal`: each segment is replaced atomically, readers
//! and appends go on). The job's intent is kept in the store
//! (`reencrypt/<tenant>`) until it finishes, so a job cut short by a stop or
//! a crash starts again at the next start, and skips what is already done.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use rampart_broker::DurableStream;
use rampart_keys::sealed_key_version;
use rampart_proto::TenantId;
use serde::Serialize;
use tracing::{info, warn};

use crate::auth::now_ms;
use crate::Shared;

/// What `GET /v1/tenants/{t}/encryption` reports of a job.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct JobStatus {
    pub running: bool,
    pub streams_total: usize,
    pub streams_done: usize,
    pub blocks_resealed: u64,
    /// Stale blocks left in the stream being worked on.
    pub stale_left: u64,
    pub started_ms: u64,
    pub finished_ms: Option<u64>,
    pub error: Option<String>,
}

/// The jobs of this server, by tenant.
#[derive(Debug, Default)]
pub(crate) struct Jobs {
    map: Mutex<HashMap<String, JobStatus>>,
}

impl Jobs {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, JobStatus>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn status(&self, tenant: &str) -> Option<JobStatus> {
        self.lock().get(tenant).cloned()
    }

    fn update(&self, tenant: &str, f: impl FnOnce(&mut JobStatus)) {
        f(self.lock().entry(tenant.to_string()).or_default());
    }
}

fn intent_key(tenant: &str) -> String {
    format!("reencrypt/{tenant}")
}

/// The data key version new blocks of `d` get, or `None` for a stream
/// stored unsealed.
fn current_version(d: &DurableStream) -> Result<Option<u32>, String> {
    // A seal of nothing, at an offset no block has, only to learn the
    // version (it costs one nonce of the key's budget).
    let probe = d.options().sealer.seal(u64::MAX, b"")?;
    Ok(sealed_key_version(&probe))
}

/// Re-seals one stream; blocking.
fn reseal_stream(
    d: &DurableStream,
    progress: &mut dyn FnMut(u64),
) -> Result<rampart_broker::ResealReport, String> {
    let Some(current) = current_version(d)? else {
        return Ok(rampart_broker::ResealReport::default());
    };
    d.log().roll().map_err(|e| e.to_string())?;
    let stale = |p: &[u8]| sealed_key_version(p).is_some_and(|v| v != current);
    d.log().reseal(&stale, progress).map_err(|e| e.to_string())
}

impl Shared {
    /// Records the intent and starts the tenant's job (unless one runs).
    pub(crate) fn start_reencryption(self: &Arc<Self>, tenant: &TenantId) {
        if let Err(e) = self
            .identity
            .catalog
            .put_meta_u64(&intent_key(tenant.as_str()), now_ms())
        {
            warn!(tenant = %tenant, error = %e, "recording the re-encryption intent failed");
        }
        {
            let mut jobs = self.reencrypt.lock();
            let st = jobs.entry(tenant.to_string()).or_default();
            if st.running {
                return;
            }
            *st = JobStatus {
                running: true,
                started_ms: now_ms(),
                ..JobStatus::default()
            };
        }
        let shared = self.clone();
        let tenant = tenant.clone();
        tokio::spawn(async move { shared.run_reencryption(tenant).await });
    }

    /// Restarts the jobs a stop or crash cut short.
    pub(crate) fn resume_reencryption(self: &Arc<Self>) {
        for t in self.identity.tenants() {
            let pending = self
                .identity
                .catalog
                .meta_u64(&intent_key(&t.name))
                .ok()
                .flatten()
                .is_some_and(|v| v != 0);
            if pending && t.erased_ms.is_none() {
                if let Ok(tenant) = TenantId::parse(&t.name) {
                    info!(tenant = %tenant, "resuming stream re-encryption");
                    self.start_reencryption(&tenant);
                }
            }
        }
    }

    async fn run_reencryption(self: Arc<Self>, tenant: TenantId) {
        let streams: Vec<Arc<DurableStream>> = self
            .broker
            .durable_streams()
            .into_iter()
            .filter(|d| d.path().tenant == tenant)
            .collect();
        let name = tenant.to_string();
        self.reencrypt
            .update(&name, |s| s.streams_total = streams.len());
        let mut shutdown = self.shutdown.clone();
        for d in streams {
            if *shutdown.borrow_and_update() {
                // The intent stays: the next start finishes the job.
                self.reencrypt.update(&name, |s| s.running = false);
                return;
            }
            let shared = self.clone();
            let n = name.clone();
            let r = tokio::task::spawn_blocking(move || {
                reseal_stream(&d, &mut |left| {
                    shared.reencrypt.update(&n, |s| s.stale_left = left)
                })
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r);
            match r {
                Ok(report) => self.reencrypt.update(&name, |s| {
                    s.streams_done += 1;
                    s.blocks_resealed += report.blocks_resealed;
                    s.stale_left = 0;
                }),
                Err(e) => {
                    warn!(tenant = %tenant, error = %e, "stream re-encryption failed; it resumes at the next start");
                    self.reencrypt.update(&name, |s| {
                        s.running = false;
                        s.error = Some("re-encrypting a stream failed; see the server log".into());
                    });
                    return;
                }
            }
        }
        if let Err(e) = self.identity.catalog.put_meta_u64(&intent_key(&name), 0) {
            warn!(tenant = %tenant, error = %e, "clearing the re-encryption intent failed");
        }
        self.reencrypt.update(&name, |s| {
            s.running = false;
            s.finished_ms = Some(now_ms());
        });
        let done = self.reencrypt.status(&name).unwrap_or_default();
        info!(tenant = %tenant, blocks = done.blocks_resealed, streams = done.streams_done, "stream re-encryption finished");
    }

    /// The job's status and, for every sealed durable stream of the
    /// tenant, how many blocks of its closed segments each data key version
    /// seals.
    pub(crate) async fn encryption_status(&self, tenant: &TenantId) -> serde_json::Value {
        let streams: Vec<Arc<DurableStream>> = self
            .broker
            .durable_streams()
            .into_iter()
            .filter(|d| d.path().tenant == *tenant)
            .collect();
        let counts = tokio::task::spawn_blocking(move || {
            let mut by_version: BTreeMap<u32, u64> = BTreeMap::new();
            let mut stale = 0;
            for d in streams {
                let Ok(Some(current)) = current_version(&d) else {
                    continue;
                };
                let seen = Mutex::new(BTreeMap::<u32, u64>::new());
                let old = |p: &[u8]| match sealed_key_version(p) {
                    Some(v) => {
                        *seen
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .entry(v)
                            .or_default() += 1;
                        v != current
                    }
                    None => false,
                };
                if let Ok(c) = d.log().count_stale(&old) {
                    stale += c.stale;
                }
                for (v, n) in seen.into_inner().unwrap_or_else(|e| e.into_inner()) {
                    *by_version.entry(v).or_default() += n;
                }
            }
            (by_version, stale)
        })
        .await
        .unwrap_or_default();
        let (by_version, stale) = counts;
        serde_json::json!({
            "job": self.reencrypt.status(tenant.as_str()),
            "stream_blocks_by_key_version": by_version,
            "stream_blocks_under_old_keys": stale,
        })
    }
}
