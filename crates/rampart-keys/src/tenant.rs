//! One tenant's unwrapped keys, and sealing and opening its data.
//!
//! Everything here is synchronous: the tenant's key-encryption keys are
//! unwrapped (by the master key, asynchronously) before a [`TenantKeys`]
//! exists, and data keys are wrapped by those KEKs locally, so a seal or an
//! open never waits on the network. The store is touched only to load a
//! data key the first time, to create one, or every
//! [`Limits::reserve_block`] seals to reserve nonce budget.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tracing::info;

use rampart_identity::Secret;
use rampart_store::{KvStore, Op, Table};

use crate::aad::{resource_scope_id, Aad};
use crate::aead::{self, KeyBytes};
use crate::error::KeyError;
use crate::records::{
    self, b64, data_key_aad, scope_key, unb64, DataKeyRecord, ScopeRecord, DK_WRAP_HEADER,
};

/// Header of a sealed value: magic, then the data key version.
const SEALED_MAGIC: &[u8; 4] = b"rdk1";
const SEALED_HEADER_LEN: usize = 8;

/// The data key version a sealed value names in its header, without
/// opening it (for re-encryption jobs). `None` if it is not a sealed value.
pub fn sealed_key_version(sealed: &[u8]) -> Option<u32> {
    match sealed.get(..SEALED_HEADER_LEN) {
        Some(h) if &h[..4] == SEALED_MAGIC => Some(u32::from_be_bytes([h[4], h[5], h[6], h[7]])),
        _ => None,
    }
}

/// How many values one data key may seal. With random 96-bit nonces the
/// chance of a repeated nonce stays below 2^-32 up to 2^32 seals per key
/// (NIST SP 800-38D); the default stops at half that.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_seals: u64,
    /// Seals reserved in the store at a time.
    pub reserve_block: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_seals: 1 << 31,
            reserve_block: 1 << 20,
        }
    }
}

/// The data key new seals of one scope use, with the nonce budget reserved
/// for it.
struct WriteKey {
    version: u32,
    kek: u32,
    key: Arc<KeyBytes>,
    next: AtomicU64,
    end: u64,
}

struct KekState {
    current: u32,
    keks: BTreeMap<u32, KeyBytes>,
    erased: bool,
}

/// A tenant's keys, as handed out by [`crate::Keyring::tenant`]: seals and
/// opens the tenant's data without blocking on anything but the local
/// store. Cheap to share (`Arc`); erasing the tenant disables every copy.
pub struct TenantKeys {
    tenant: String,
    kv: Arc<dyn KvStore>,
    limits: Limits,
    keks: RwLock<KekState>,
    /// Unwrapped data keys by (scope, version).
    data_keys: RwLock<HashMap<(String, u32), Arc<KeyBytes>>>,
    /// The key new seals use, by scope.
    writers: RwLock<HashMap<String, Arc<WriteKey>>>,
    /// Serializes writes of this tenant's data key records.
    write: Mutex<()>,
}

impl fmt::Debug for TenantKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state();
        f.debug_struct("TenantKeys")
            .field("tenant", &self.tenant)
            .field("kek_versions", &state.keks.keys().collect::<Vec<_>>())
            .field("current_kek", &state.current)
            .field("erased", &state.erased)
            .finish_non_exhaustive()
    }
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl TenantKeys {
    pub(crate) fn new(
        tenant: String,
        kv: Arc<dyn KvStore>,
        limits: Limits,
        current: u32,
        keks: BTreeMap<u32, KeyBytes>,
    ) -> Self {
        Self {
            tenant,
            kv,
            limits,
            keks: RwLock::new(KekState {
                current,
                keks,
                erased: false,
            }),
            data_keys: RwLock::new(HashMap::new()),
            writers: RwLock::new(HashMap::new()),
            write: Mutex::new(()),
        }
    }

    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The KEK version new data keys are wrapped with (1, plus one per
    /// [`crate::Keyring::rotate_tenant`]).
    pub fn kek_version(&self) -> u32 {
        self.state().current
    }

    fn state(&self) -> RwLockReadGuard<'_, KekState> {
        read(&self.keks)
    }

    fn erased(&self) -> KeyError {
        KeyError::Erased {
            what: format!("tenant {}", self.tenant),
        }
    }

    fn current_kek(&self) -> Result<u32, KeyError> {
        let state = self.state();
        if state.erased {
            return Err(self.erased());
        }
        Ok(state.current)
    }

    // === seal and open ===

    /// Encrypts `plaintext` for the resource `aad` names, with the current
    /// data key of its scope (created on first use). Output: `rdk1 | data
    /// key version (u32, big-endian) | nonce (12) | ciphertext | tag (16)`.
    pub fn seal(&self, aad: &Aad<'_>, plaintext: &[u8]) -> Result<Vec<u8>, KeyError> {
        if aad.tenant != self.tenant {
            return Err(KeyError::TenantMismatch {
                keys: self.tenant.clone(),
                labelled: aad.tenant.to_owned(),
            });
        }
        let scope = aad.scope_id()?;
        loop {
            let kek = self.current_kek()?;
            let seen = read(&self.writers).get(&scope).cloned();
            if let Some(w) = &seen {
                if w.kek == kek && w.next.fetch_add(1, Ordering::Relaxed) < w.end {
                    let mut header = [0u8; SEALED_HEADER_LEN];
                    header[..4].copy_from_slice(SEALED_MAGIC);
                    header[4..].copy_from_slice(&w.version.to_be_bytes());
                    return aead::seal(&w.key, &header, &aad.encode(w.version), plaintext);
                }
            }
            self.refresh_writer(&scope, seen.as_ref())?;
        }
    }

    /// Decrypts a value made by [`seal`](Self::seal) for the same `aad`.
    /// [`KeyError::Tampered`] on any mismatch: a changed byte, another
    /// tenant, namespace, kind, name, part or key version;
    /// [`KeyError::Erased`] if its key was destroyed.
    pub fn open(&self, aad: &Aad<'_>, sealed: &[u8]) -> Result<Secret<Vec<u8>>, KeyError> {
        let version = sealed_key_version(sealed).ok_or(KeyError::Tampered)?;
        if aad.tenant != self.tenant {
            return Err(KeyError::Tampered);
        }
        let scope = aad.scope_id()?;
        let key = self.data_key(&scope, version)?;
        aead::open(&key, SEALED_HEADER_LEN, &aad.encode(version), sealed)
    }

    // === data keys ===

    fn wrap_aad(&self, scope: &str, r: &DataKeyRecord) -> Vec<u8> {
        data_key_aad(&self.tenant, scope, r.version, r.kek)
    }

    fn unwrap_record(
        &self,
        key: &str,
        scope: &str,
        r: &DataKeyRecord,
    ) -> Result<KeyBytes, KeyError> {
        let corrupt = |reason: &str| KeyError::Corrupt {
            key: format!("{key} v{}", r.version),
            reason: reason.to_owned(),
        };
        let state = self.state();
        if state.erased {
            return Err(self.erased());
        }
        let kek = state
            .keks
            .get(&r.kek)
            .ok_or_else(|| corrupt("wrapped by a tenant key version that does not exist"))?;
        let wrapped = unb64(key, &r.wrapped)?;
        if wrapped.get(..4) != Some(DK_WRAP_HEADER.as_slice()) {
            return Err(corrupt("not a wrapped data key"));
        }
        let plain = aead::open(
            kek,
            DK_WRAP_HEADER.len(),
            &self.wrap_aad(scope, r),
            &wrapped,
        )
        .map_err(|_| corrupt("does not unwrap under its tenant key"))?;
        aead::key_from(&plain).ok_or_else(|| corrupt("not a 256-bit key"))
    }

    fn load_scope(&self, key: &str) -> Result<ScopeRecord, KeyError> {
        Ok(records::get(self.kv.as_ref(), Table::Keyring, key)?.unwrap_or_default())
    }

    fn data_key(&self, scope: &str, version: u32) -> Result<Arc<KeyBytes>, KeyError> {
        if self.state().erased {
            return Err(self.erased());
        }
        if let Some(k) = read(&self.data_keys).get(&(scope.to_owned(), version)) {
            return Ok(Arc::clone(k));
        }
        let key = scope_key(&self.tenant, scope);
        let record = self.load_scope(&key)?;
        let Some(r) = record.keys.iter().find(|k| k.version == version) else {
            return Err(if version > 0 && version <= record.erased_through {
                KeyError::Erased {
                    what: format!("{key} v{version}"),
                }
            } else {
                KeyError::Tampered
            });
        };
        let unwrapped = Arc::new(self.unwrap_record(&key, scope, r)?);
        write(&self.data_keys).insert((scope.to_owned(), version), Arc::clone(&unwrapped));
        Ok(unwrapped)
    }

    /// Installs a usable write key for `scope`: reserves more seals for the
    /// latest data key, or creates the next version when it is exhausted or
    /// wrapped by an older KEK. `seen` is the write key the caller found
    /// unusable; if another thread has already replaced it, nothing is done.
    fn refresh_writer(&self, scope: &str, seen: Option<&Arc<WriteKey>>) -> Result<(), KeyError> {
        let _w = lock(&self.write);
        let kek = self.current_kek()?;
        let installed = read(&self.writers).get(scope).cloned();
        if let Some(cur) = &installed {
            let replaced = seen.is_none_or(|s| !Arc::ptr_eq(s, cur));
            if replaced && cur.kek == kek && cur.next.load(Ordering::Relaxed) < cur.end {
                return Ok(());
            }
        }
        let key = scope_key(&self.tenant, scope);
        let mut record = self.load_scope(&key)?;
        let block = self.limits.reserve_block.max(1);
        let reusable = record
            .keys
            .iter()
            .enumerate()
            .max_by_key(|(_, k)| k.version)
            .filter(|(_, k)| k.kek == kek && k.reserved < self.limits.max_seals)
            .map(|(i, _)| i);
        let (start, version, data_key) = match reusable {
            Some(i) => {
                let r = &mut record.keys[i];
                let start = r.reserved;
                r.reserved = start.saturating_add(block).min(self.limits.max_seals);
                let r = r.clone();
                let cached = read(&self.data_keys)
                    .get(&(scope.to_owned(), r.version))
                    .cloned();
                let data_key = match cached {
                    Some(k) => k,
                    None => Arc::new(self.unwrap_record(&key, scope, &r)?),
                };
                (start, r.version, data_key)
            }
            None => {
                let version = record.next_version();
                let data_key = Arc::new(aead::random_key()?);
                let state = self.state();
                let kek_bytes = state.keks.get(&kek).ok_or_else(|| KeyError::Corrupt {
                    key: records::tenant_key(&self.tenant),
                    reason: format!("current tenant key version {kek} is not loaded"),
                })?;
                let mut r = DataKeyRecord {
                    version,
                    kek,
                    wrapped: String::new(),
                    reserved: block.min(self.limits.max_seals),
                };
                let wrapped = aead::seal(
                    kek_bytes,
                    DK_WRAP_HEADER,
                    &self.wrap_aad(scope, &r),
                    data_key.expose(),
                )?;
                drop(state);
                r.wrapped = b64(&wrapped);
                record.keys.push(r);
                info!(tenant = %self.tenant, scope, version, kek, "new data key");
                (0, version, data_key)
            }
        };
        let end = record
            .keys
            .iter()
            .find(|k| k.version == version)
            .map_or(start, |k| k.reserved);
        // The reservation is durable before any seal uses it.
        self.kv.apply(vec![Op::Put(
            Table::Keyring,
            key.clone(),
            records::encode(&key, &record)?,
        )])?;
        write(&self.data_keys).insert((scope.to_owned(), version), Arc::clone(&data_key));
        write(&self.writers).insert(
            scope.to_owned(),
            Arc::new(WriteKey {
                version,
                kek,
                key: data_key,
                next: AtomicU64::new(start),
                end,
            }),
        );
        Ok(())
    }

    // === erasure and rotation ===

    /// Destroys every version of the data key of one resource sealed with
    /// [`crate::KeyScope::Resource`]: what it sealed can never be opened
    /// again ([`KeyError::Erased`]), and later seals of a resource of the
    /// same name get a new key. Returns how many key versions were
    /// destroyed.
    pub fn erase_resource(
        &self,
        namespace: &str,
        kind: &str,
        name: &str,
    ) -> Result<usize, KeyError> {
        let scope = resource_scope_id(namespace, kind, name);
        let _w = lock(&self.write);
        self.current_kek()?;
        let key = scope_key(&self.tenant, &scope);
        let mut record = self.load_scope(&key)?;
        let destroyed = record.keys.len();
        record.erased_through = record.next_version().saturating_sub(1);
        record.keys.clear();
        self.kv.apply(vec![Op::Put(
            Table::Keyring,
            key.clone(),
            records::encode(&key, &record)?,
        )])?;
        write(&self.writers).remove(&scope);
        write(&self.data_keys).retain(|(s, _), _| *s != scope);
        info!(tenant = %self.tenant, scope, destroyed, "data key erased");
        Ok(destroyed)
    }

    /// Runs `apply` (the store half of a tenant erasure) with data key
    /// writes held off, then drops every key held in memory.
    pub(crate) fn erase_with(
        &self,
        apply: impl FnOnce() -> Result<(), KeyError>,
    ) -> Result<(), KeyError> {
        let _w = lock(&self.write);
        apply()?;
        let mut state = write(&self.keks);
        state.erased = true;
        state.keks.clear();
        drop(state);
        write(&self.writers).clear();
        write(&self.data_keys).clear();
        Ok(())
    }

    /// Adds a new KEK version and makes it current: each scope's next seal
    /// creates a new data key version wrapped by it.
    pub(crate) fn add_kek(&self, version: u32, kek: KeyBytes) {
        let mut state = write(&self.keks);
        state.keks.insert(version, kek);
        state.current = version;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_store::RedbStore;

    fn keys(limits: Limits) -> (tempfile::TempDir, Arc<dyn KvStore>, TenantKeys) {
        let dir = tempfile::tempdir().unwrap();
        let kv: Arc<dyn KvStore> = Arc::new(RedbStore::open(&dir.path().join("s.redb")).unwrap());
        let keks = BTreeMap::from([(1, aead::random_key().unwrap())]);
        let tk = TenantKeys::new("acme".into(), Arc::clone(&kv), limits, 1, keks);
        (dir, kv, tk)
    }

    fn record(kv: &dyn KvStore, scope: &str) -> ScopeRecord {
        records::get(kv, Table::Keyring, &scope_key("acme", scope))
            .unwrap()
            .unwrap()
    }

    #[test]
    fn nonce_budget_is_reserved_in_blocks_and_rolls_the_key_over() {
        let (_d, kv, tk) = keys(Limits {
            max_seals: 10,
            reserve_block: 4,
        });
        let aad = Aad::new("acme", "ns", "stream", "s", 0);
        let mut sealed = Vec::new();
        for i in 0..10u8 {
            sealed.push(tk.seal(&aad, &[i]).unwrap());
        }
        assert!(sealed.iter().all(|s| sealed_key_version(s) == Some(1)));
        assert_eq!(record(kv.as_ref(), "k/stream").keys[0].reserved, 10);
        // The eleventh seal needs a new key.
        let next = tk.seal(&aad, b"x").unwrap();
        assert_eq!(sealed_key_version(&next), Some(2));
        for (i, s) in sealed.iter().enumerate() {
            assert_eq!(tk.open(&aad, s).unwrap().expose(), &[i as u8]);
        }

        // A fresh instance (a restart) never reuses reserved counts.
        let keks = BTreeMap::from([(1, tk.state().keks[&1].clone())]);
        let again = TenantKeys::new("acme".into(), Arc::clone(&kv), tk.limits, 1, keks);
        let v2_before = record(kv.as_ref(), "k/stream").keys[1].reserved;
        again.seal(&aad, b"y").unwrap();
        let v2_after = record(kv.as_ref(), "k/stream").keys[1].reserved;
        assert_eq!(v2_after, (v2_before + 4).min(10));
        assert_eq!(again.open(&aad, &next).unwrap().expose(), b"x");
    }

    #[test]
    fn concurrent_seals_share_one_data_key() {
        let (_d, kv, tk) = keys(Limits {
            max_seals: 1 << 20,
            reserve_block: 16,
        });
        let tk = Arc::new(tk);
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let tk = Arc::clone(&tk);
                std::thread::spawn(move || {
                    (0..50u32)
                        .map(|i| {
                            let aad = Aad::new("acme", "ns", "stream", "s", u64::from(i));
                            (i, tk.seal(&aad, &[t, i as u8]).unwrap())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for (t, h) in threads.into_iter().enumerate() {
            for (i, s) in h.join().unwrap() {
                let aad = Aad::new("acme", "ns", "stream", "s", u64::from(i));
                assert_eq!(tk.open(&aad, &s).unwrap().expose(), &[t as u8, i as u8]);
            }
        }
        let r = record(kv.as_ref(), "k/stream");
        assert_eq!(r.keys.len(), 1);
        assert!(r.keys[0].reserved >= 200);
    }
}
