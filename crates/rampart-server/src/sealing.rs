//! Sealing of tenant records in the store with each tenant's own keys.
//!
//! The store's catalog calls [`KeyringSealer`] synchronously; tenant keys
//! are therefore loaded (unwrapped by the master key) ahead of use: every
//! known tenant at start, and a new tenant before its first record.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rampart_keys::{Aad, KeyError, Keyring, TenantKeys};
use rampart_store::{Sealer, StoreError, Table};

/// Seals store records of a tenant with its `store` data key, binding the
/// table and the record key.
#[derive(Debug)]
pub(crate) struct KeyringSealer {
    keyring: Arc<Keyring>,
    loaded: RwLock<HashMap<String, Arc<TenantKeys>>>,
}

impl KeyringSealer {
    pub(crate) fn new(keyring: Arc<Keyring>) -> Self {
        Self {
            keyring,
            loaded: RwLock::new(HashMap::new()),
        }
    }

    pub(crate) fn keyring(&self) -> &Arc<Keyring> {
        &self.keyring
    }

    /// Loads (or creates) a tenant's keys so its records can be sealed.
    pub(crate) async fn load(&self, tenant: &str) -> Result<(), KeyError> {
        let keys = self.keyring.tenant(tenant).await?;
        self.loaded
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(tenant.to_string(), keys);
        Ok(())
    }

    /// Whether a tenant's keys are loaded (for readiness).
    pub(crate) fn is_loaded(&self, tenant: &str) -> bool {
        self.loaded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(tenant)
    }

    /// Forgets a tenant's keys (after erasure).
    pub(crate) fn forget(&self, tenant: &str) {
        self.loaded
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(tenant);
    }

    fn keys(&self, tenant: &str) -> Result<Arc<TenantKeys>, StoreError> {
        self.loaded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(tenant)
            .cloned()
            .ok_or_else(|| StoreError(format!("keys of tenant {tenant} are not loaded")))
    }
}

impl Sealer for KeyringSealer {
    fn seal(
        &self,
        tenant: &str,
        table: Table,
        key: &str,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        self.keys(tenant)?
            .seal(
                &Aad::new(tenant, "", "store", &format!("{}/{key}", table.name()), 0),
                plaintext,
            )
            .map_err(|e| StoreError(e.to_string()))
    }

    fn open(
        &self,
        tenant: &str,
        table: Table,
        key: &str,
        sealed: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        self.keys(tenant)?
            .open(
                &Aad::new(tenant, "", "store", &format!("{}/{key}", table.name()), 0),
                sealed,
            )
            .map(|p| p.expose().clone())
            .map_err(|e| StoreError(e.to_string()))
    }
}
