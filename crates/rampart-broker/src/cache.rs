//! The TTL cache: entries scoped per tenant / namespace / cache, with a
//! memory budget per tenant.
//!
//! Time is passed in by the caller, so expiry is tested without sleeping.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rampart_proto::{CacheKey, CacheName, NamespaceName, TenantId};

use crate::BrokerError;

/// Bytes charged for an entry beyond its key and value (map slot, expiry,
/// names); keeps a flood of empty entries from escaping the budget.
const ENTRY_OVERHEAD: usize = 96;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct EntryKey {
    namespace: NamespaceName,
    cache: CacheName,
    key: CacheKey,
}

impl EntryKey {
    fn cost(&self, value: &Bytes) -> usize {
        ENTRY_OVERHEAD
            + self.namespace.as_str().len()
            + self.cache.as_str().len()
            + self.key.as_str().len()
            + value.len()
    }
}

#[derive(Debug)]
struct Entry {
    value: Bytes,
    expires: Option<Instant>,
    cost: usize,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|e| now < e)
    }
}

#[derive(Debug, Default)]
struct TenantCache {
    entries: HashMap<EntryKey, Entry>,
    bytes: usize,
}

impl TenantCache {
    /// Removes the entries `drop` selects, releasing their budget; returns
    /// how many went.
    fn remove_where(&mut self, mut drop: impl FnMut(&EntryKey, &Entry) -> bool) -> usize {
        let (mut freed, mut removed) = (0, 0);
        self.entries.retain(|k, e| {
            let hit = drop(k, e);
            if hit {
                freed += e.cost;
                removed += 1;
            }
            !hit
        });
        self.bytes -= freed;
        removed
    }

    fn sweep(&mut self, now: Instant) {
        self.remove_where(|_, e| !e.live(now));
    }
}

/// Limits of the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    /// Memory budget of one tenant, all its caches together.
    pub max_bytes_per_tenant: usize,
    /// Largest single value.
    pub max_value_bytes: usize,
}

impl Default for CacheLimits {
    fn default() -> Self {
        Self {
            max_bytes_per_tenant: 64 * 1024 * 1024,
            max_value_bytes: 1024 * 1024,
        }
    }
}

/// A value read from the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedValue {
    pub value: Bytes,
    /// Time left before expiry; `None` = never expires.
    pub ttl: Option<Duration>,
}

/// The cache of every tenant. Each tenant has its own lock, so tenants do
/// not contend with each other.
#[derive(Debug, Default)]
pub struct Cache {
    tenants: RwLock<HashMap<TenantId, Arc<Mutex<TenantCache>>>>,
    limits: CacheLimits,
}

impl Cache {
    pub fn new(limits: CacheLimits) -> Self {
        Self {
            tenants: RwLock::default(),
            limits,
        }
    }

    fn tenant(&self, t: &TenantId) -> Arc<Mutex<TenantCache>> {
        if let Some(c) = self
            .tenants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(t)
        {
            return c.clone();
        }
        self.tenants
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(t.clone())
            .or_default()
            .clone()
    }

    fn existing(&self, t: &TenantId) -> Option<Arc<Mutex<TenantCache>>> {
        self.tenants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(t)
            .cloned()
    }

    /// Stores `value`; `ttl` of `None` keeps it until deleted.
    #[allow(clippy::too_many_arguments)]
    pub fn put(
        &self,
        now: Instant,
        tenant: &TenantId,
        namespace: &NamespaceName,
        cache: &CacheName,
        key: &CacheKey,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<(), BrokerError> {
        self.put_within(now, tenant, namespace, cache, key, value, ttl, None)
    }

    /// `put`, with the tenant's bytes also bounded by `tenant_max` (a
    /// per-tenant quota lower than the server-wide one).
    #[allow(clippy::too_many_arguments)]
    pub fn put_within(
        &self,
        now: Instant,
        tenant: &TenantId,
        namespace: &NamespaceName,
        cache: &CacheName,
        key: &CacheKey,
        value: Bytes,
        ttl: Option<Duration>,
        tenant_max: Option<usize>,
    ) -> Result<(), BrokerError> {
        if value.len() > self.limits.max_value_bytes {
            return Err(BrokerError::ValueTooLarge {
                limit: self.limits.max_value_bytes,
            });
        }
        let k = EntryKey {
            namespace: namespace.clone(),
            cache: cache.clone(),
            key: key.clone(),
        };
        let cost = k.cost(&value);
        let tc = self.tenant(tenant);
        let mut tc = tc.lock().unwrap_or_else(|e| e.into_inner());
        let old_cost = tc.entries.get(&k).map_or(0, |e| e.cost);
        let limit = tenant_max.map_or(self.limits.max_bytes_per_tenant, |m| {
            m.min(self.limits.max_bytes_per_tenant)
        });
        if tc.bytes - old_cost + cost > limit {
            tc.sweep(now);
            let old_cost = tc.entries.get(&k).map_or(0, |e| e.cost);
            if tc.bytes - old_cost + cost > limit {
                return Err(BrokerError::CacheFull { limit });
            }
        }
        let expires = ttl.map(|d| now + d);
        if let Some(old) = tc.entries.insert(
            k,
            Entry {
                value,
                expires,
                cost,
            },
        ) {
            tc.bytes -= old.cost;
        }
        tc.bytes += cost;
        Ok(())
    }

    pub fn get(
        &self,
        now: Instant,
        tenant: &TenantId,
        namespace: &NamespaceName,
        cache: &CacheName,
        key: &CacheKey,
    ) -> Option<CachedValue> {
        let tc = self.existing(tenant)?;
        let mut tc = tc.lock().unwrap_or_else(|e| e.into_inner());
        let k = EntryKey {
            namespace: namespace.clone(),
            cache: cache.clone(),
            key: key.clone(),
        };
        let e = tc.entries.get(&k)?;
        if e.live(now) {
            return Some(CachedValue {
                value: e.value.clone(),
                ttl: e.expires.map(|x| x.saturating_duration_since(now)),
            });
        }
        if let Some(old) = tc.entries.remove(&k) {
            tc.bytes -= old.cost;
        }
        None
    }

    /// Removes a key; returns whether a live entry was there.
    pub fn delete(
        &self,
        now: Instant,
        tenant: &TenantId,
        namespace: &NamespaceName,
        cache: &CacheName,
        key: &CacheKey,
    ) -> bool {
        let Some(tc) = self.existing(tenant) else {
            return false;
        };
        let mut tc = tc.lock().unwrap_or_else(|e| e.into_inner());
        let k = EntryKey {
            namespace: namespace.clone(),
            cache: cache.clone(),
            key: key.clone(),
        };
        match tc.entries.remove(&k) {
            Some(old) => {
                tc.bytes -= old.cost;
                old.live(now)
            }
            None => false,
        }
    }

    /// Frees expired entries of every tenant. The server calls this
    /// periodically; reads never return expired entries either way.
    pub fn sweep(&self, now: Instant) {
        let tenants: Vec<_> = self
            .tenants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for tc in tenants {
            tc.lock().unwrap_or_else(|e| e.into_inner()).sweep(now);
        }
    }

    /// The caches of a tenant's namespace with live entries, as
    /// `(name, entries, bytes)`, sorted by name.
    pub fn caches(
        &self,
        now: Instant,
        tenant: &TenantId,
        namespace: &NamespaceName,
    ) -> Vec<(CacheName, usize, usize)> {
        let Some(tc) = self.existing(tenant) else {
            return Vec::new();
        };
        let tc = tc.lock().unwrap_or_else(|e| e.into_inner());
        let mut by: std::collections::BTreeMap<&str, (CacheName, usize, usize)> =
            std::collections::BTreeMap::new();
        for (k, e) in &tc.entries {
            if k.namespace == *namespace && e.live(now) {
                let slot = by
                    .entry(k.cache.as_str())
                    .or_insert_with(|| (k.cache.clone(), 0, 0));
                slot.1 += 1;
                slot.2 += e.cost;
            }
        }
        by.into_values().collect()
    }

    /// Removes every entry of one cache; returns how many were removed.
    pub fn flush(&self, tenant: &TenantId, namespace: &NamespaceName, cache: &CacheName) -> usize {
        let Some(tc) = self.existing(tenant) else {
            return 0;
        };
        let mut tc = tc.lock().unwrap_or_else(|e| e.into_inner());
        tc.remove_where(|k, _| k.namespace == *namespace && k.cache == *cache)
    }

    /// Drops every entry of a tenant (erasure).
    pub fn erase_tenant(&self, tenant: &TenantId) {
        self.tenants
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(tenant);
    }

    /// Bytes charged to a tenant right now.
    pub fn tenant_bytes(&self, tenant: &TenantId) -> usize {
        self.existing(tenant)
            .map_or(0, |tc| tc.lock().unwrap_or_else(|e| e.into_inner()).bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n() -> (TenantId, NamespaceName, CacheName) {
        (
            TenantId::parse("acme").unwrap(),
            NamespaceName::parse("prod").unwrap(),
            CacheName::parse("sessions").unwrap(),
        )
    }

    fn key(s: &str) -> CacheKey {
        CacheKey::parse(s).unwrap()
    }

    #[test]
    fn put_get_delete() {
        let c = Cache::default();
        let (t, ns, ca) = n();
        let now = Instant::now();
        c.put(now, &t, &ns, &ca, &key("a"), Bytes::from_static(b"1"), None)
            .unwrap();
        let v = c.get(now, &t, &ns, &ca, &key("a")).unwrap();
        assert_eq!(v.value, Bytes::from_static(b"1"));
        assert_eq!(v.ttl, None);
        assert!(c.delete(now, &t, &ns, &ca, &key("a")));
        assert!(!c.delete(now, &t, &ns, &ca, &key("a")));
        assert!(c.get(now, &t, &ns, &ca, &key("a")).is_none());
        assert_eq!(c.tenant_bytes(&t), 0);
    }

    #[test]
    fn entries_expire_and_are_swept() {
        let c = Cache::default();
        let (t, ns, ca) = n();
        let now = Instant::now();
        let ttl = Duration::from_secs(10);
        c.put(
            now,
            &t,
            &ns,
            &ca,
            &key("a"),
            Bytes::from_static(b"1"),
            Some(ttl),
        )
        .unwrap();
        let left = c.get(now + Duration::from_secs(4), &t, &ns, &ca, &key("a"));
        assert_eq!(left.unwrap().ttl, Some(Duration::from_secs(6)));
        assert!(c
            .get(now + Duration::from_secs(10), &t, &ns, &ca, &key("a"))
            .is_none());
        c.put(
            now,
            &t,
            &ns,
            &ca,
            &key("b"),
            Bytes::from_static(b"1"),
            Some(ttl),
        )
        .unwrap();
        assert!(c.tenant_bytes(&t) > 0);
        c.sweep(now + Duration::from_secs(11));
        assert_eq!(c.tenant_bytes(&t), 0);
    }

    #[test]
    fn tenants_and_scopes_are_separate() {
        let c = Cache::default();
        let (t, ns, ca) = n();
        let other = TenantId::parse("globex").unwrap();
        let now = Instant::now();
        c.put(now, &t, &ns, &ca, &key("a"), Bytes::from_static(b"1"), None)
            .unwrap();
        assert!(c.get(now, &other, &ns, &ca, &key("a")).is_none());
        let other_ns = NamespaceName::parse("staging").unwrap();
        assert!(c.get(now, &t, &other_ns, &ca, &key("a")).is_none());
    }

    #[test]
    fn tenant_budget_is_enforced_and_freed() {
        let c = Cache::new(CacheLimits {
            max_bytes_per_tenant: 1000,
            max_value_bytes: 600,
        });
        let (t, ns, ca) = n();
        let now = Instant::now();
        let big = Bytes::from(vec![0u8; 500]);
        assert!(matches!(
            c.put(
                now,
                &t,
                &ns,
                &ca,
                &key("x"),
                Bytes::from(vec![0u8; 601]),
                None
            ),
            Err(BrokerError::ValueTooLarge { limit: 600 })
        ));
        c.put(now, &t, &ns, &ca, &key("a"), big.clone(), None)
            .unwrap();
        assert!(matches!(
            c.put(now, &t, &ns, &ca, &key("b"), big.clone(), None),
            Err(BrokerError::CacheFull { limit: 1000 })
        ));
        // Overwriting an entry reuses its budget.
        c.put(now, &t, &ns, &ca, &key("a"), big.clone(), None)
            .unwrap();
        // Another tenant has its own budget.
        let other = TenantId::parse("globex").unwrap();
        c.put(now, &other, &ns, &ca, &key("b"), big.clone(), None)
            .unwrap();
        assert!(c.delete(now, &t, &ns, &ca, &key("a")));
        c.put(now, &t, &ns, &ca, &key("b"), big, None).unwrap();
    }

    #[test]
    fn list_and_flush_caches() {
        let c = Cache::default();
        let (t, ns, ca) = n();
        let other = CacheName::parse("carts").unwrap();
        let now = Instant::now();
        c.put(now, &t, &ns, &ca, &key("a"), Bytes::from_static(b"1"), None)
            .unwrap();
        c.put(now, &t, &ns, &ca, &key("b"), Bytes::from_static(b"2"), None)
            .unwrap();
        c.put(
            now,
            &t,
            &ns,
            &other,
            &key("a"),
            Bytes::from_static(b"3"),
            None,
        )
        .unwrap();
        let listed = c.caches(now, &t, &ns);
        assert_eq!(listed.len(), 2);
        assert_eq!((listed[0].0.as_str(), listed[0].1), ("carts", 1));
        assert_eq!((listed[1].0.as_str(), listed[1].1), ("sessions", 2));
        assert_eq!(c.flush(&t, &ns, &ca), 2);
        assert_eq!(c.caches(now, &t, &ns).len(), 1);
        assert!(c.get(now, &t, &ns, &other, &key("a")).is_some());
    }

    #[test]
    fn expired_entries_make_room() {
        let c = Cache::new(CacheLimits {
            max_bytes_per_tenant: 1000,
            max_value_bytes: 600,
        });
        let (t, ns, ca) = n();
        let now = Instant::now();
        let big = Bytes::from(vec![0u8; 500]);
        c.put(
            now,
            &t,
            &ns,
            &ca,
            &key("a"),
            big.clone(),
            Some(Duration::from_secs(1)),
        )
        .unwrap();
        c.put(
            now + Duration::from_secs(2),
            &t,
            &ns,
            &ca,
            &key("b"),
            big,
            None,
        )
        .unwrap();
    }
}
