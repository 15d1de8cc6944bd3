//! `rampart state rebuild`: the control-plane journal replayed, offline,
//! and compared with the store (see `rampart_store::Catalog::rebuild_report`);
//! on request, the store's catalog tables made to hold what the journal
//! says.

use std::collections::BTreeSet;
use std::sync::Arc;

use rampart_store::{Catalog, KvStore, RebuildReport, Until};

use crate::config::Config;
use crate::sealing::KeyringSealer;
use crate::{master, StartError};

/// What to rebuild.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct RebuildOptions {
    /// Replay only up to this point (forensics: the state as it was then,
    /// compared with the state now). Never written.
    pub until: Until,
    /// After the comparison, make the store hold the rebuilt state (one
    /// atomic batch). Refused for a broken chain or a bounded replay.
    pub write: bool,
}

impl RebuildOptions {
    pub fn new(until: Until, write: bool) -> Self {
        Self { until, write }
    }
}

/// What [`state_rebuild`] did.
#[derive(Debug)]
#[non_exhaustive]
pub struct RebuildOutcome {
    pub report: RebuildReport,
    /// Records the journal began with, when this run started the journal
    /// of a store that predates it (as a server start would have).
    pub snapshotted: usize,
    /// What `write` did; `None` without it.
    pub write: Option<WriteOutcome>,
}

/// What [`RebuildOptions::write`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WriteOutcome {
    /// Nothing was written, for this reason.
    Refused(String),
    /// `records` were written or deleted; `matches_now` is the verdict of
    /// the comparison run again afterwards.
    Repaired { records: usize, matches_now: bool },
}

impl RebuildOutcome {
    /// Whether the store holds what the whole, intact journal says (after
    /// the repair, if one was made).
    pub fn matches(&self) -> bool {
        match &self.write {
            Some(WriteOutcome::Repaired { matches_now, .. }) => *matches_now,
            _ => self.report.matches(),
        }
    }
}

/// Replays the control-plane journal of a stopped server's data directory
/// and compares the result with its store. With `write` (and an intact,
/// unbounded replay), the store is then repaired to match. Tenant keys are
/// loaded, never created: a tenant the keyring does not know stays
/// unloaded and its events show as not opening.
pub async fn state_rebuild(
    config: &Config,
    dev: bool,
    opts: RebuildOptions,
) -> Result<RebuildOutcome, StartError> {
    let store_path = config.data_dir.join("state.redb");
    if !store_path.is_file() {
        return Err(StartError::Storage(format!(
            "no store at {}",
            store_path.display()
        )));
    }
    let master = master::open(config, dev)?;
    master::verify(master.as_ref(), &config.data_dir).await?;
    let storage = |e: rampart_store::StoreError| StartError::Storage(e.to_string());
    let kv: Arc<dyn KvStore> = Arc::new(
        rampart_store::RedbStore::open(&store_path)
            .map_err(|e| StartError::Storage(format!("{e} (is the server still running?)")))?,
    );
    let keyring = Arc::new(
        rampart_keys::Keyring::open(kv.clone(), master)
            .await
            .map_err(|e| StartError::MasterKey(e.to_string()))?,
    );
    let clear = Catalog::new(kv.clone());
    let mut tenants: BTreeSet<String> = clear
        .tenants()
        .map_err(storage)?
        .into_iter()
        .map(|t| t.name)
        .collect();
    tenants.extend(clear.journal_tenants().map_err(storage)?);
    let sealer = Arc::new(KeyringSealer::new(keyring.clone()));
    for t in &tenants {
        if !keyring
            .knows_tenant(t)
            .map_err(|e| StartError::MasterKey(format!("keys of tenant {t}: {e}")))?
        {
            continue;
        }
        match sealer.load(t).await {
            Ok(()) | Err(rampart_keys::KeyError::Erased { .. }) => {}
            Err(e) => {
                return Err(StartError::MasterKey(format!("keys of tenant {t}: {e}")));
            }
        }
    }
    let catalog = Catalog::sealed(kv, sealer);
    let snapshotted = catalog.open_journal().map_err(storage)?;
    let report = catalog.rebuild_report(opts.until).map_err(storage)?;
    let write = if !opts.write {
        None
    } else if let Some(b) = &report.replay.broken {
        Some(WriteOutcome::Refused(format!(
            "the journal's chain is broken at entry {}",
            b.seq
        )))
    } else if !opts.until.is_everything() {
        Some(WriteOutcome::Refused(
            "a state as of a past point is never written".into(),
        ))
    } else {
        let records = catalog.repair(&report).map_err(storage)?;
        let matches_now = catalog
            .rebuild_report(Until::everything())
            .map_err(storage)?
            .matches();
        Some(WriteOutcome::Repaired {
            records,
            matches_now,
        })
    };
    Ok(RebuildOutcome {
        report,
        snapshotted,
        write,
    })
}
