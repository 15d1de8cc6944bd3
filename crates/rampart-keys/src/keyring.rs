//! The keyring: the master key check at start-up, tenant key-encryption
//! keys, tenant erasure and rotation.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, RwLock};

use tracing::{info, warn};

use rampart_store::{KvStore, Op, Table};

use crate::aead::{self, KeyBytes};
use crate::error::KeyError;
use crate::provider::MasterKeyProvider;
use crate::records::{
    self, b64, check_tenant, kek_aad, now_ms, scope_prefix, tenant_key, tenant_of_key, unb64,
    KekRecord, MasterCheck, RotationIntent, TenantRecord, CHECK_AAD, MASTER_CHECK, MASTER_ROTATION,
    TENANT_PREFIX,
};
use crate::tenant::{Limits, TenantKeys};

/// What [`Keyring::rotate_master`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RotateReport {
    /// Newest master version before the rotation began.
    pub from_version: u32,
    /// Newest master version now; every KEK is wrapped under it.
    pub to_version: u32,
    /// Whether this run finished a rotation an earlier run left unfinished.
    pub resumed: bool,
    /// Tenants whose KEKs were re-wrapped by this run.
    pub rewrapped: usize,
    /// Tenants already wrapped under the newest version (by an earlier,
    /// interrupted run).
    pub already_current: usize,
    /// Erased tenants, which hold no key.
    pub erased: usize,
}

/// Steps of a master rotation, reported as they complete (for progress
/// logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RotateStep<'a> {
    /// The new master version exists (made now or by an interrupted run).
    Started { from: u32, to: u32, resumed: bool },
    /// One tenant's KEKs are re-wrapped and stored.
    Rewrapped { tenant: &'a str },
}

/// The key hierarchy over a [`KvStore`]: master key → per-tenant
/// key-encryption keys (random, stored wrapped by the master key) → data
/// keys (stored wrapped by a KEK).
///
/// Open one per process with [`Keyring::open`] before serving anything;
/// tenant keys are unwrapped once and cached.
pub struct Keyring {
    kv: Arc<dyn KvStore>,
    master: Arc<dyn MasterKeyProvider>,
    tenants: RwLock<HashMap<String, Arc<TenantKeys>>>,
    /// Serializes every change of tenant records and master state.
    admin: tokio::sync::Mutex<()>,
    limits: Limits,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("master", &self.master.describe())
            .field("cached_tenants", &self.cached().len())
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// Opens the keyring and proves the master key is the one the data was
    /// written with, by unwrapping the check value kept in `Table::Meta`.
    /// If it does not unwrap: [`KeyError::WrongMasterKey`], and nothing was
    /// written. At first use (an empty keyring) the check value is created.
    pub async fn open(
        kv: Arc<dyn KvStore>,
        master: Arc<dyn MasterKeyProvider>,
    ) -> Result<Self, KeyError> {
        match records::get::<MasterCheck>(kv.as_ref(), Table::Meta, MASTER_CHECK)? {
            Some(check) => {
                let wrapped = unb64(MASTER_CHECK, &check.wrapped)?;
                match master.unwrap(&wrapped, CHECK_AAD).await {
                    Ok(_) => {}
                    Err(KeyError::Tampered | KeyError::UnknownMasterVersion(_)) => {
                        return Err(KeyError::WrongMasterKey {
                            provider: master.describe(),
                        })
                    }
                    Err(e) => return Err(e),
                }
            }
            None => {
                // A keyring with keys but no check value has lost its
                // proof; guessing would let a wrong key write beside data
                // it cannot read.
                if !kv.scan(Table::Keyring, "")?.is_empty() {
                    return Err(KeyError::Corrupt {
                        key: MASTER_CHECK.into(),
                        reason: "missing while the keyring holds keys".into(),
                    });
                }
                let value = aead::random_key()?;
                let wrapped = master.wrap(value.expose(), CHECK_AAD).await?;
                let check = MasterCheck {
                    wrapped: b64(&wrapped),
                    provider: master.describe(),
                    created_ms: now_ms(),
                };
                kv.apply(vec![Op::Put(
                    Table::Meta,
                    MASTER_CHECK.into(),
                    records::encode(MASTER_CHECK, &check)?,
                )])?;
                info!(master = %master.describe(), "keyring initialised");
            }
        }
        let keyring = Self {
            kv,
            master,
            tenants: RwLock::new(HashMap::new()),
            admin: tokio::sync::Mutex::new(()),
            limits: Limits::default(),
        };
        if keyring.rotation_pending()? {
            warn!("a master key rotation is unfinished; run it again to finish it");
        }
        Ok(keyring)
    }

    /// The master key provider, described (for logs).
    pub fn master_description(&self) -> String {
        self.master.describe()
    }

    /// The master key provider, to wrap what must be readable only with
    /// the master key (a backup's archive key).
    pub fn master(&self) -> &Arc<dyn MasterKeyProvider> {
        &self.master
    }

    /// The store the keyring keeps its records in.
    pub fn store(&self) -> &Arc<dyn KvStore> {
        &self.kv
    }

    /// Holds key administration (new tenants, erasure, tenant and master
    /// rotation) until the guard is dropped: a backup takes it so that no
    /// key it copies from the store is retired, and none it needs is made,
    /// while it copies the data sealed with them.
    pub async fn hold_administration(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.admin.lock().await
    }

    /// Whether a master rotation was interrupted and should be run again.
    pub fn rotation_pending(&self) -> Result<bool, KeyError> {
        Ok(self.kv.get(Table::Meta, MASTER_ROTATION)?.is_some())
    }

    /// Whether the keyring holds keys (or the tombstone) of `tenant`, so
    /// that [`tenant`](Self::tenant) would load rather than create them.
    /// For offline tools that must not write.
    pub fn knows_tenant(&self, tenant: &str) -> Result<bool, KeyError> {
        check_tenant(tenant)?;
        Ok(self.kv.get(Table::Keyring, &tenant_key(tenant))?.is_some())
    }

    fn cached(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<TenantKeys>>> {
        self.tenants.read().unwrap_or_else(|p| p.into_inner())
    }

    fn cache(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<TenantKeys>>> {
        self.tenants.write().unwrap_or_else(|p| p.into_inner())
    }

    // === tenants ===

    /// A tenant's keys: loaded and unwrapped on first use, created (a random
    /// KEK, wrapped by the master key) if the tenant has none, then cached.
    /// [`KeyError::Erased`] for an erased tenant.
    pub async fn tenant(&self, tenant: &str) -> Result<Arc<TenantKeys>, KeyError> {
        check_tenant(tenant)?;
        if let Some(t) = self.cached().get(tenant) {
            return Ok(Arc::clone(t));
        }
        let _admin = self.admin.lock().await;
        if let Some(t) = self.cached().get(tenant) {
            return Ok(Arc::clone(t));
        }
        let key = tenant_key(tenant);
        let keys = match records::get::<TenantRecord>(self.kv.as_ref(), Table::Keyring, &key)? {
            Some(TenantRecord::Erased { .. }) => {
                return Err(KeyError::Erased {
                    what: format!("tenant {tenant}"),
                })
            }
            Some(TenantRecord::Active { current, keks }) => {
                let mut plain = BTreeMap::new();
                for k in &keks {
                    plain.insert(
                        k.version,
                        self.unwrap_kek(tenant, k.version, &k.wrapped).await?,
                    );
                }
                if !plain.contains_key(&current) {
                    return Err(KeyError::Corrupt {
                        key,
                        reason: format!("current version {current} is missing"),
                    });
                }
                TenantKeys::new(
                    tenant.to_owned(),
                    Arc::clone(&self.kv),
                    self.limits,
                    current,
                    plain,
                )
            }
            None => {
                let kek = aead::random_key()?;
                let wrapped = self.master.wrap(kek.expose(), &kek_aad(tenant, 1)).await?;
                let record = TenantRecord::Active {
                    current: 1,
                    keks: vec![KekRecord {
                        version: 1,
                        wrapped: b64(&wrapped),
                    }],
                };
                self.put_tenant(&key, &record)?;
                info!(tenant, "created tenant key");
                TenantKeys::new(
                    tenant.to_owned(),
                    Arc::clone(&self.kv),
                    self.limits,
                    1,
                    BTreeMap::from([(1, kek)]),
                )
            }
        };
        let keys = Arc::new(keys);
        self.cache().insert(tenant.to_owned(), Arc::clone(&keys));
        Ok(keys)
    }

    async fn unwrap_kek(
        &self,
        tenant: &str,
        version: u32,
        wrapped: &str,
    ) -> Result<KeyBytes, KeyError> {
        let key = tenant_key(tenant);
        let plain = self
            .master
            .unwrap(&unb64(&key, wrapped)?, &kek_aad(tenant, version))
            .await
            .map_err(|e| match e {
                KeyError::Tampered => KeyError::Corrupt {
                    key: format!("{key} v{version}"),
                    reason: "does not unwrap under the master key".into(),
                },
                other => other,
            })?;
        aead::key_from(&plain).ok_or_else(|| KeyError::Corrupt {
            key,
            reason: "tenant key is not 256 bits".into(),
        })
    }

    fn put_tenant(&self, key: &str, record: &TenantRecord) -> Result<(), KeyError> {
        self.kv.apply(vec![Op::Put(
            Table::Keyring,
            key.to_owned(),
            records::encode(key, record)?,
        )])?;
        Ok(())
    }

    /// Destroys a tenant's keys: its KEKs and data keys are deleted and a
    /// tombstone written, in one atomic batch. Everything the tenant ever
    /// sealed is unreadable from then on, and [`tenant`](Self::tenant)
    /// answers [`KeyError::Erased`] instead of making new keys under the
    /// old name. Copies of the tenant's keys held in memory stop working.
    pub async fn erase_tenant(&self, tenant: &str) -> Result<(), KeyError> {
        check_tenant(tenant)?;
        let _admin = self.admin.lock().await;
        let key = tenant_key(tenant);
        let apply = || {
            let mut ops: Vec<Op> = self
                .kv
                .scan(Table::Keyring, &scope_prefix(tenant))?
                .into_iter()
                .map(|(k, _)| Op::Delete(Table::Keyring, k))
                .collect();
            let tombstone = TenantRecord::Erased {
                erased_ms: now_ms(),
            };
            ops.push(Op::Put(
                Table::Keyring,
                key.clone(),
                records::encode(&key, &tombstone)?,
            ));
            self.kv.apply(ops)?;
            Ok(())
        };
        let cached = self.cache().remove(tenant);
        match cached {
            Some(keys) => keys.erase_with(apply)?,
            None => apply()?,
        }
        info!(tenant, "tenant keys erased");
        Ok(())
    }

    /// Gives the tenant a new KEK version: each scope's next seal creates a
    /// new data key version wrapped by it; older versions stay, to open
    /// older data. Returns the new KEK version.
    pub async fn rotate_tenant(&self, tenant: &str) -> Result<u32, KeyError> {
        let keys = self.tenant(tenant).await?;
        let _admin = self.admin.lock().await;
        let key = tenant_key(tenant);
        let Some(TenantRecord::Active { keks, .. }) =
            records::get::<TenantRecord>(self.kv.as_ref(), Table::Keyring, &key)?
        else {
            return Err(KeyError::Erased {
                what: format!("tenant {tenant}"),
            });
        };
        let version = keks
            .iter()
            .map(|k| k.version)
            .max()
            .unwrap_or(0)
            .checked_add(1)
            .ok_or_else(|| KeyError::Corrupt {
                key: key.clone(),
                reason: "no version number left".into(),
            })?;
        let kek = aead::random_key()?;
        let wrapped = self
            .master
            .wrap(kek.expose(), &kek_aad(tenant, version))
            .await?;
        let mut keks = keks;
        keks.push(KekRecord {
            version,
            wrapped: b64(&wrapped),
        });
        self.put_tenant(
            &key,
            &TenantRecord::Active {
                current: version,
                keks,
            },
        )?;
        keys.add_kek(version, kek);
        info!(tenant, version, "tenant key rotated");
        Ok(version)
    }

    // === master rotation ===

    /// [`rotate_master_with`](Self::rotate_master_with) without progress
    /// reports.
    pub async fn rotate_master(&self) -> Result<RotateReport, KeyError> {
        self.rotate_master_with(&mut |_| {}).await
    }

    /// Makes a new master key version and re-wraps every tenant KEK (and the
    /// check value) under it, each tenant in its own atomic write.
    ///
    /// Crash-safe: the intent is recorded in `Table::Meta` before the
    /// provider rotates, so a run killed at any point leaves every key
    /// readable (old master versions stay until all is re-wrapped), and
    /// running it again finishes the job without rotating a second time.
    /// `progress` hears of each step as it completes.
    ///
    /// Key administration (new tenants, erasure, tenant rotation) waits
    /// while it runs; sealing and opening with loaded tenant keys do not.
    pub async fn rotate_master_with(
        &self,
        progress: &mut (dyn FnMut(RotateStep<'_>) + Send),
    ) -> Result<RotateReport, KeyError> {
        let _admin = self.admin.lock().await;
        let intent =
            records::get::<RotationIntent>(self.kv.as_ref(), Table::Meta, MASTER_ROTATION)?;
        let newest = self.master.current_version().await?;
        let (from, resumed) = match intent {
            Some(i) => (i.from, true),
            None => {
                let intent = RotationIntent {
                    from: newest,
                    started_ms: now_ms(),
                };
                self.kv.apply(vec![Op::Put(
                    Table::Meta,
                    MASTER_ROTATION.into(),
                    records::encode(MASTER_ROTATION, &intent)?,
                )])?;
                (newest, false)
            }
        };
        if newest < from {
            return Err(KeyError::Corrupt {
                key: MASTER_ROTATION.into(),
                reason: format!(
                    "rotation began at master version {from}, but the provider's newest is {newest}"
                ),
            });
        }
        if newest == from {
            self.master.rotate().await?;
        }
        let to = self.master.current_version().await?;
        info!(from, to, resumed, master = %self.master.describe(), "master key rotation");
        progress(RotateStep::Started { from, to, resumed });

        let mut report = RotateReport {
            from_version: from,
            to_version: to,
            resumed,
            rewrapped: 0,
            already_current: 0,
            erased: 0,
        };
        for (key, bytes) in self.kv.scan(Table::Keyring, TENANT_PREFIX)? {
            let tenant = tenant_of_key(&key).ok_or_else(|| KeyError::Corrupt {
                key: key.clone(),
                reason: "not a tenant key name".into(),
            })?;
            let (current, mut keks) = match records::parse::<TenantRecord>(&key, &bytes)? {
                TenantRecord::Erased { .. } => {
                    report.erased += 1;
                    continue;
                }
                TenantRecord::Active { current, keks } => (current, keks),
            };
            let mut changed = false;
            for k in keks.iter_mut() {
                let bytes = unb64(&key, &k.wrapped)?;
                if self.master.version_of(&bytes)? < to {
                    let new = self
                        .master
                        .rewrap(&bytes, &kek_aad(&tenant, k.version))
                        .await?;
                    k.wrapped = b64(&new);
                    changed = true;
                }
            }
            if changed {
                self.put_tenant(&key, &TenantRecord::Active { current, keks })?;
                report.rewrapped += 1;
                progress(RotateStep::Rewrapped { tenant: &tenant });
            } else {
                report.already_current += 1;
            }
        }

        // Last: the check value under the new version and the intent gone,
        // together.
        let mut ops = vec![Op::Delete(Table::Meta, MASTER_ROTATION.into())];
        if let Some(mut check) =
            records::get::<MasterCheck>(self.kv.as_ref(), Table::Meta, MASTER_CHECK)?
        {
            let wrapped = unb64(MASTER_CHECK, &check.wrapped)?;
            if self.master.version_of(&wrapped)? < to {
                check.wrapped = b64(&self.master.rewrap(&wrapped, CHECK_AAD).await?);
                ops.push(Op::Put(
                    Table::Meta,
                    MASTER_CHECK.into(),
                    records::encode(MASTER_CHECK, &check)?,
                ));
            }
        }
        self.kv.apply(ops)?;
        info!(
            to,
            rewrapped = report.rewrapped,
            already_current = report.already_current,
            "master key rotation finished"
        );
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Aad, LocalMasterKey};
    use rampart_store::RedbStore;

    async fn setup() -> (
        tempfile::TempDir,
        Arc<dyn KvStore>,
        Arc<LocalMasterKey>,
        Keyring,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let kv: Arc<dyn KvStore> = Arc::new(RedbStore::open(&dir.path().join("s.redb")).unwrap());
        let master = Arc::new(LocalMasterKey::create(&dir.path().join("master.key")).unwrap());
        let keyring = Keyring::open(Arc::clone(&kv), master.clone())
            .await
            .unwrap();
        (dir, kv, master, keyring)
    }

    #[tokio::test]
    async fn an_intent_left_before_the_provider_rotated_rotates_once() {
        let (_d, kv, master, keyring) = setup().await;
        let t = keyring.tenant("acme").await.unwrap();
        let aad = Aad::new("acme", "ns", "stream", "s", 0);
        let sealed = t.seal(&aad, b"data").unwrap();
        // A crash right after the intent was written.
        kv.apply(vec![Op::Put(
            Table::Meta,
            MASTER_ROTATION.into(),
            records::encode(
                MASTER_ROTATION,
                &RotationIntent {
                    from: 1,
                    started_ms: 0,
                },
            )
            .unwrap(),
        )])
        .unwrap();
        let report = keyring.rotate_master().await.unwrap();
        assert_eq!(
            (report.from_version, report.to_version, report.resumed),
            (1, 2, true)
        );
        assert_eq!(report.rewrapped, 1);
        assert!(!keyring.rotation_pending().unwrap());
        // Running again starts a new rotation (v3) and the data still opens.
        let report = keyring.rotate_master().await.unwrap();
        assert_eq!((report.from_version, report.to_version), (2, 3));
        assert_eq!(master.current_version().await.unwrap(), 3);
        drop(keyring);
        let keyring = Keyring::open(kv, master).await.unwrap();
        let t = keyring.tenant("acme").await.unwrap();
        assert_eq!(t.open(&aad, &sealed).unwrap().expose(), b"data");
    }

    fn assert_send<T: Send>(t: T) -> T {
        t
    }

    #[tokio::test]
    async fn futures_are_send_and_debug_shows_no_keys() {
        let (_d, kv, master, keyring) = setup().await;
        let keyring = Arc::new(keyring);
        let k = Arc::clone(&keyring);
        // Spawnable: every future is Send.
        tokio::spawn(async move {
            assert_send(k.tenant("acme")).await.unwrap();
            assert_send(k.rotate_tenant("acme")).await.unwrap();
            assert_send(k.rotate_master()).await.unwrap();
            assert_send(k.erase_tenant("acme")).await.unwrap();
        })
        .await
        .unwrap();
        assert_send(Keyring::open(kv, master)).await.unwrap();
        let t = keyring.tenant("globex").await.unwrap();
        let shown = format!("{keyring:?} {t:?}");
        assert!(
            shown.contains("globex") && shown.contains("kek_versions: [1]"),
            "{shown}"
        );
    }

    #[tokio::test]
    async fn a_keyring_without_its_check_value_is_refused() {
        let (_d, kv, master, keyring) = setup().await;
        keyring.tenant("acme").await.unwrap();
        kv.apply(vec![Op::Delete(Table::Meta, MASTER_CHECK.into())])
            .unwrap();
        assert!(matches!(
            Keyring::open(kv, master).await,
            Err(KeyError::Corrupt { .. })
        ));
    }
}
