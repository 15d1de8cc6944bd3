//! Hierarchical limits: every request is charged to its principal and to
//! its tenant. A tenant's buckets are shared by all of its principals,
//! connections and streams, so more keys or more streams never raise what
//! a tenant may do.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::bucket::Bucket;
use crate::spec::{LimitSpec, QuotaKind, RateKind};

/// Which level of the hierarchy refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    Tenant,
    Principal,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Tenant => "tenant",
            Level::Principal => "principal",
        }
    }
}

/// What was refused, by which limit, and when to try again.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub level: Level,
    /// The limit's name (`publish_msgs_per_sec`, `max_streams`, ...).
    pub limit: &'static str,
    /// The limit's value.
    pub value: u64,
    /// For rates: how long until the request would pass.
    pub retry_after: Option<Duration>,
    /// 429 for rates and counts, 507 for storage, 413 for a single request
    /// larger than the whole quota or than a whole bucket.
    pub status: u16,
    /// For a request refused (413) as costing more than a whole bucket:
    /// the most one request may cost at this level (`rate × burst`).
    pub per_request: Option<u64>,
}

impl Rejection {
    /// Whole milliseconds to wait, at least 1 for a rate.
    pub fn retry_after_ms(&self) -> u64 {
        self.retry_after
            .map(|d| (d.as_millis() as u64).max(1))
            .unwrap_or(0)
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(most) = self.per_request {
            return write!(
                f,
                "{} rate limit {}={} allows at most {} in one request; split it",
                self.level.as_str(),
                self.limit,
                self.value,
                most
            );
        }
        match self.retry_after {
            Some(_) => write!(
                f,
                "{} rate limit {}={} reached; retry after {} ms",
                self.level.as_str(),
                self.limit,
                self.value,
                self.retry_after_ms()
            ),
            None => write!(
                f,
                "{} quota {}={} reached",
                self.level.as_str(),
                self.limit,
                self.value
            ),
        }
    }
}

/// The buckets and quotas in force for one scope, rebuilt when its limits
/// change.
#[derive(Debug)]
struct Rules {
    rates: [Option<Bucket>; 5],
    quotas: [Option<u64>; 5],
    spec: LimitSpec,
}

impl Rules {
    fn new(spec: LimitSpec) -> Rules {
        let burst = spec.burst();
        Rules {
            rates: RateKind::ALL.map(|k| spec.rate(k).and_then(|r| Bucket::new(r, burst))),
            quotas: QuotaKind::ALL.map(|k| spec.quota(k)),
            spec,
        }
    }
}

/// One tenant, or one principal within a tenant: its rules, what it holds
/// now, and how often it was refused.
#[derive(Debug)]
struct Scope {
    rules: RwLock<Arc<Rules>>,
    usage: [AtomicU64; 5],
    /// Refusals by limit: rates then quotas (tenant scopes count their
    /// principals' refusals too, under `principal_rejected`).
    rejected: [AtomicU64; 10],
    principal_rejected: [AtomicU64; 10],
    /// When a handle was last taken, in seconds since the registry began.
    last_used: AtomicU64,
}

impl Scope {
    fn new(spec: LimitSpec) -> Scope {
        Scope {
            last_used: AtomicU64::new(0),
            rules: RwLock::new(Arc::new(Rules::new(spec))),
            usage: Default::default(),
            rejected: Default::default(),
            principal_rejected: Default::default(),
        }
    }

    fn rules(&self) -> Arc<Rules> {
        self.rules.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, spec: LimitSpec) {
        let same = self.rules().spec == spec;
        if !same {
            *self.rules.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Rules::new(spec));
        }
    }
}

#[derive(Debug, Default)]
struct Registry {
    tenant_default: LimitSpec,
    principal_default: LimitSpec,
    tenant_overrides: HashMap<String, LimitSpec>,
    principal_overrides: HashMap<(String, String), LimitSpec>,
    tenants: HashMap<String, Arc<Scope>>,
    principals: HashMap<(String, String), Arc<Scope>>,
}

impl Registry {
    fn tenant_spec(&self, t: &str) -> LimitSpec {
        match self.tenant_overrides.get(t) {
            Some(o) => o.or(&self.tenant_default),
            None => self.tenant_default.clone(),
        }
    }

    fn principal_spec(&self, t: &str, p: &str) -> LimitSpec {
        match self
            .principal_overrides
            .get(&(t.to_string(), p.to_string()))
        {
            Some(o) => o.or(&self.principal_default),
            None => self.principal_default.clone(),
        }
    }

    fn tenant(&mut self, t: &str) -> Arc<Scope> {
        if let Some(s) = self.tenants.get(t) {
            return s.clone();
        }
        let s = Arc::new(Scope::new(self.tenant_spec(t)));
        self.tenants.insert(t.to_string(), s.clone());
        s
    }

    fn principal(&mut self, t: &str, p: &str) -> Arc<Scope> {
        let key = (t.to_string(), p.to_string());
        if let Some(s) = self.principals.get(&key) {
            return s.clone();
        }
        let s = Arc::new(Scope::new(self.principal_spec(t, p)));
        self.principals.insert(key, s.clone());
        s
    }

    /// Applies the current specs to every live scope.
    fn apply(&self) {
        for (t, s) in &self.tenants {
            s.set(self.tenant_spec(t));
        }
        for ((t, p), s) in &self.principals {
            s.set(self.principal_spec(t, p));
        }
    }
}

/// Every tenant's and principal's limits. Changes apply at once to
/// connections already open.
#[derive(Debug)]
pub struct Limits {
    generation: AtomicU64,
    registry: RwLock<Registry>,
    started: Instant,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            generation: AtomicU64::new(0),
            registry: RwLock::default(),
            started: Instant::now(),
        }
    }
}

/// A principal scope nothing holds is dropped after this long unused: its
/// buckets (at most 60 s of burst) are full again by then, so nothing is
/// lost by starting afresh.
const IDLE_SCOPE: Duration = Duration::from_secs(120);

/// Refusal counts for one tenant, by level and limit name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectionCount {
    pub tenant: String,
    pub level: Level,
    pub limit: &'static str,
    pub count: u64,
}

fn limit_name(i: usize) -> &'static str {
    if i < 5 {
        RateKind::ALL[i].name()
    } else {
        QuotaKind::ALL[i - 5].name()
    }
}

impl Limits {
    /// Limits with the given defaults for every tenant and every principal.
    pub fn new(tenant_default: LimitSpec, principal_default: LimitSpec) -> Arc<Limits> {
        let l = Limits::default();
        {
            let mut r = l.write();
            r.tenant_default = tenant_default;
            r.principal_default = principal_default;
        }
        Arc::new(l)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Registry> {
        self.registry.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        self.registry.read().unwrap_or_else(|e| e.into_inner())
    }

    fn changed(&self, r: &Registry) {
        r.apply();
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Replaces the defaults (a configuration reload).
    pub fn set_defaults(&self, tenant: LimitSpec, principal: LimitSpec) {
        let mut r = self.write();
        r.tenant_default = tenant;
        r.principal_default = principal;
        self.changed(&r);
    }

    /// Sets (or with `None` removes) a tenant's override.
    pub fn set_tenant(&self, tenant: &str, spec: Option<LimitSpec>) {
        let mut r = self.write();
        match spec {
            Some(s) => r.tenant_overrides.insert(tenant.to_string(), s),
            None => r.tenant_overrides.remove(tenant),
        };
        self.changed(&r);
    }

    /// Sets (or with `None` removes) a principal's override.
    pub fn set_principal(&self, tenant: &str, principal: &str, spec: Option<LimitSpec>) {
        let mut r = self.write();
        let key = (tenant.to_string(), principal.to_string());
        match spec {
            Some(s) => r.principal_overrides.insert(key, s),
            None => r.principal_overrides.remove(&key),
        };
        self.changed(&r);
    }

    /// The override set for a tenant, or for a principal of it.
    pub fn override_of(&self, tenant: &str, principal: Option<&str>) -> Option<LimitSpec> {
        let r = self.read();
        match principal {
            Some(p) => r
                .principal_overrides
                .get(&(tenant.to_string(), p.to_string()))
                .cloned(),
            None => r.tenant_overrides.get(tenant).cloned(),
        }
    }

    /// The limits in force for a tenant, or for a principal of it.
    pub fn effective(&self, tenant: &str, principal: Option<&str>) -> LimitSpec {
        let r = self.read();
        match principal {
            Some(p) => r.principal_spec(tenant, p),
            None => r.tenant_spec(tenant),
        }
    }

    /// Forgets a tenant: its overrides, its principals' and its counters.
    pub fn forget_tenant(&self, tenant: &str) {
        let mut r = self.write();
        r.tenant_overrides.remove(tenant);
        r.principal_overrides.retain(|(t, _), _| t != tenant);
        r.tenants.remove(tenant);
        r.principals.retain(|(t, _), _| t != tenant);
        self.changed(&r);
    }

    /// The handle requests of `principal` in `tenant` are charged through.
    /// Cheap to keep: connections take one at authentication.
    pub fn handle(self: &Arc<Self>, tenant: &str, principal: &str) -> Handle {
        let found = {
            let r = self.read();
            r.tenants.get(tenant).cloned().zip(
                r.principals
                    .get(&(tenant.to_string(), principal.to_string()))
                    .cloned(),
            )
        };
        let (t, p) = match found {
            Some(both) => both,
            None => {
                let mut r = self.write();
                (r.tenant(tenant), r.principal(tenant, principal))
            }
        };
        let now = self.started.elapsed().as_secs();
        t.last_used.store(now, Ordering::Relaxed);
        p.last_used.store(now, Ordering::Relaxed);
        let generation = self.generation.load(Ordering::Acquire);
        Handle {
            trules: t.rules(),
            prules: p.rules(),
            tenant: t,
            principal: p,
            limits: self.clone(),
            generation,
        }
    }

    /// `Handle::fits` for callers with no principal at hand (the admin API
    /// creating a stream).
    pub fn tenant_fits(
        &self,
        tenant: &str,
        k: QuotaKind,
        current: u64,
        adding: u64,
    ) -> Result<(), Rejection> {
        let s = self.write().tenant(tenant);
        let rules = s.rules();
        tenant_fits(&s, &rules, k, current, adding)
    }

    /// Sets what a tenant holds of a quota counted outside this crate
    /// (stored bytes, streams, cache bytes).
    pub fn set_usage(&self, tenant: &str, k: QuotaKind, value: u64) {
        let s = self.write().tenant(tenant);
        s.usage[k.index()].store(value, Ordering::Relaxed);
    }

    /// Sets every tenant's usage of a quota counted elsewhere at once:
    /// tenants missing from `usage` hold none (their last stream went).
    pub fn set_usage_of_all(&self, k: QuotaKind, usage: &HashMap<String, u64>) {
        let mut r = self.write();
        for t in usage.keys() {
            r.tenant(t);
        }
        for (t, s) in &r.tenants {
            let v = usage.get(t).copied().unwrap_or(0);
            s.usage[k.index()].store(v, Ordering::Relaxed);
        }
    }

    /// Drops principal scopes nothing holds and nobody used for two
    /// minutes (their buckets are full again by then). Tenants are kept.
    pub fn sweep(&self) -> usize {
        self.sweep_idle(IDLE_SCOPE)
    }

    fn sweep_idle(&self, idle: Duration) -> usize {
        let now = self.started.elapsed().as_secs();
        let mut r = self.write();
        let before = r.principals.len();
        r.principals.retain(|_, s| {
            Arc::strong_count(s) > 1
                || now.saturating_sub(s.last_used.load(Ordering::Relaxed)) < idle.as_secs()
        });
        before - r.principals.len()
    }

    /// Every non-zero refusal count, for metrics and the admin API.
    pub fn rejections(&self) -> Vec<RejectionCount> {
        let r = self.read();
        let mut out = Vec::new();
        for (t, s) in &r.tenants {
            for (level, counts) in [
                (Level::Tenant, &s.rejected),
                (Level::Principal, &s.principal_rejected),
            ] {
                for (i, c) in counts.iter().enumerate() {
                    let count = c.load(Ordering::Relaxed);
                    if count > 0 {
                        out.push(RejectionCount {
                            tenant: t.clone(),
                            level,
                            limit: limit_name(i),
                            count,
                        });
                    }
                }
            }
        }
        out.sort_by(|a, b| (&a.tenant, a.limit).cmp(&(&b.tenant, b.limit)));
        out
    }

    /// What a tenant holds of each quota now.
    pub fn usage(&self, tenant: &str) -> Vec<(&'static str, u64)> {
        let r = self.read();
        let Some(s) = r.tenants.get(tenant) else {
            return Vec::new();
        };
        QuotaKind::ALL
            .iter()
            .map(|k| (k.name(), s.usage[k.index()].load(Ordering::Relaxed)))
            .collect()
    }
}

/// One principal's way to its limits and its tenant's. Checks are
/// lock-free: one atomic load to see whether limits changed, then one
/// compare-and-swap per bucket that limits anything.
#[derive(Debug, Clone)]
pub struct Handle {
    tenant: Arc<Scope>,
    principal: Arc<Scope>,
    trules: Arc<Rules>,
    prules: Arc<Rules>,
    limits: Arc<Limits>,
    generation: u64,
}

impl Handle {
    #[inline]
    fn refresh(&mut self) {
        let g = self.limits.generation.load(Ordering::Acquire);
        if g != self.generation {
            self.generation = g;
            self.trules = self.tenant.rules();
            self.prules = self.principal.rules();
        }
    }

    fn refused(&self, level: Level, slot: usize, r: Rejection) -> Rejection {
        let counts = match level {
            Level::Tenant => &self.tenant.rejected,
            Level::Principal => &self.tenant.principal_rejected,
        };
        counts[slot].fetch_add(1, Ordering::Relaxed);
        r
    }

    /// Charges `n` units of a rate to the principal, then to the tenant. A
    /// principal over its own limit is refused without using up the
    /// tenant's budget, so it cannot starve the tenant's other principals.
    /// A cost above either level's whole bucket is refused (413) before
    /// anything is charged: it could never pass, and letting it through
    /// into debt would make the tenant's other principals pay for it.
    #[inline]
    pub fn rate(&mut self, k: RateKind, n: u64) -> Result<(), Rejection> {
        self.refresh();
        let i = k.index();
        let levels = [
            (Level::Principal, &self.prules),
            (Level::Tenant, &self.trules),
        ];
        for (level, rules) in levels {
            if let Some(b) = &rules.rates[i] {
                if n > u64::from(b.capacity()) {
                    let r = Rejection {
                        level,
                        limit: k.name(),
                        value: b.per_sec(),
                        retry_after: None,
                        status: 413,
                        per_request: Some(u64::from(b.capacity())),
                    };
                    return Err(self.refused(level, i, r));
                }
            }
        }
        // The clock is read once, and only when something limits the rate.
        let mut now = None;
        for (level, rules) in levels {
            if let Some(b) = &rules.rates[i] {
                let at = *now.get_or_insert_with(crate::bucket::now_ns);
                if let Err(wait) = b.take_at(n, at) {
                    let r = Rejection {
                        level,
                        limit: k.name(),
                        value: b.per_sec(),
                        retry_after: Some(wait),
                        status: 429,
                        per_request: None,
                    };
                    return Err(self.refused(level, i, r));
                }
            }
        }
        Ok(())
    }

    /// True when this rate is limited at either level (callers skip the
    /// work of measuring a cost nothing limits).
    pub fn limits_rate(&mut self, k: RateKind) -> bool {
        self.refresh();
        self.prules.rates[k.index()].is_some() || self.trules.rates[k.index()].is_some()
    }

    /// The most units of rate `k` that one [`rate`](Self::rate) may charge
    /// (the smaller bucket of the two levels); `None` when nothing limits
    /// it. A larger cost is refused with 413, so a caller that must spend
    /// one at the rate (delivery pacing) charges it in pieces of this size.
    pub fn rate_burst(&mut self, k: RateKind) -> Option<u64> {
        self.refresh();
        let i = k.index();
        [&self.prules.rates[i], &self.trules.rates[i]]
            .into_iter()
            .flatten()
            .map(|b| u64::from(b.capacity()))
            .min()
    }

    /// Takes one of a counted quota (connections, subscriptions) at both
    /// levels; given back when the guard drops.
    pub fn acquire(&mut self, k: QuotaKind) -> Result<QuotaGuard, Rejection> {
        self.refresh();
        let i = k.index();
        let p = take_one(&self.principal, self.prules.quotas[i], i);
        if let Err(value) = p {
            let r = quota_rejection(Level::Principal, k, value);
            return Err(self.refused(Level::Principal, 5 + i, r));
        }
        if let Err(value) = take_one(&self.tenant, self.trules.quotas[i], i) {
            self.principal.usage[i].fetch_sub(1, Ordering::Relaxed);
            let r = quota_rejection(Level::Tenant, k, value);
            return Err(self.refused(Level::Tenant, 5 + i, r));
        }
        Ok(QuotaGuard {
            tenant: self.tenant.clone(),
            principal: self.principal.clone(),
            index: i,
        })
    }

    /// Checks that a tenant holding `current` of a quota counted elsewhere
    /// (streams, stored bytes, cache bytes) may add `adding` more. A
    /// single request larger than the whole quota gets 413.
    pub fn fits(&mut self, k: QuotaKind, current: u64, adding: u64) -> Result<(), Rejection> {
        self.refresh();
        tenant_fits(&self.tenant, &self.trules, k, current, adding)
    }

    /// The refusal for a tenant quota found full elsewhere (the cache
    /// enforces its own bytes), counted like any other.
    pub fn over(&mut self, k: QuotaKind) -> Rejection {
        self.refresh();
        let value = self.trules.quotas[k.index()].unwrap_or(0);
        self.tenant.rejected[5 + k.index()].fetch_add(1, Ordering::Relaxed);
        quota_rejection(Level::Tenant, k, value)
    }

    /// `fits` against the usage last given with `Limits::set_usage` or
    /// `add_usage`.
    pub fn fits_usage(&mut self, k: QuotaKind, adding: u64) -> Result<(), Rejection> {
        let current = self.tenant.usage[k.index()].load(Ordering::Relaxed);
        self.fits(k, current, adding)
    }

    /// Adds to the tenant's usage of a quota counted elsewhere.
    pub fn add_usage(&self, k: QuotaKind, n: u64) {
        self.tenant.usage[k.index()].fetch_add(n, Ordering::Relaxed);
    }

    /// The tenant's limit for a quota, if any.
    pub fn tenant_quota(&mut self, k: QuotaKind) -> Option<u64> {
        self.refresh();
        self.trules.quotas[k.index()]
    }
}

fn tenant_fits(
    scope: &Scope,
    rules: &Rules,
    k: QuotaKind,
    current: u64,
    adding: u64,
) -> Result<(), Rejection> {
    let Some(max) = rules.quotas[k.index()] else {
        return Ok(());
    };
    if current.saturating_add(adding) <= max {
        return Ok(());
    }
    let mut r = quota_rejection(Level::Tenant, k, max);
    if adding > max && k.status() == 507 {
        r.status = 413;
    }
    scope.rejected[5 + k.index()].fetch_add(1, Ordering::Relaxed);
    Err(r)
}

fn quota_rejection(level: Level, k: QuotaKind, value: u64) -> Rejection {
    Rejection {
        level,
        limit: k.name(),
        value,
        retry_after: None,
        status: k.status(),
        per_request: None,
    }
}

/// Adds one to a scope's usage unless that would pass `max`; on refusal
/// returns the limit.
fn take_one(s: &Scope, max: Option<u64>, i: usize) -> Result<(), u64> {
    let prev = s.usage[i].fetch_add(1, Ordering::Relaxed);
    match max {
        Some(m) if prev >= m => {
            s.usage[i].fetch_sub(1, Ordering::Relaxed);
            Err(m)
        }
        _ => Ok(()),
    }
}

/// One unit of a counted quota, held at both levels until dropped.
#[derive(Debug)]
pub struct QuotaGuard {
    tenant: Arc<Scope>,
    principal: Arc<Scope>,
    index: usize,
}

impl Drop for QuotaGuard {
    fn drop(&mut self) {
        self.tenant.usage[self.index].fetch_sub(1, Ordering::Relaxed);
        self.principal.usage[self.index].fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(f: impl FnOnce(&mut LimitSpec)) -> LimitSpec {
        let mut s = LimitSpec::default();
        f(&mut s);
        s
    }

    #[test]
    fn principal_limit_does_not_use_the_tenant_budget() {
        let l = Limits::new(
            spec(|s| {
                s.http_requests_per_sec = Some(25);
                s.burst = Some(1.0);
            }),
            spec(|s| {
                s.http_requests_per_sec = Some(10);
                s.burst = Some(1.0);
            }),
        );
        let mut a = l.handle("acme", "alice");
        let mut b = l.handle("acme", "bob");
        let mut a_ok = 0;
        for _ in 0..200 {
            if a.rate(RateKind::HttpRequests, 1).is_ok() {
                a_ok += 1;
            }
        }
        assert!((10..=12).contains(&a_ok), "alice got {a_ok}");
        let e = a.rate(RateKind::HttpRequests, 1).unwrap_err();
        assert_eq!(e.level, Level::Principal);
        assert!(e.retry_after.is_some());
        // Bob is unaffected by alice's 190 refusals...
        for _ in 0..10 {
            b.rate(RateKind::HttpRequests, 1).unwrap();
        }
        // ...until the tenant's cap (25) is reached by a third principal.
        let mut c = l.handle("acme", "carol");
        let mut refused = None;
        for _ in 0..11 {
            if let Err(e) = c.rate(RateKind::HttpRequests, 1) {
                refused = Some(e);
                break;
            }
        }
        let e = refused.expect("tenant cap reached");
        assert_eq!(e.level, Level::Tenant);
        assert!(e
            .to_string()
            .contains("tenant rate limit http_requests_per_sec=25"));
        let counts = l.rejections();
        assert!(counts
            .iter()
            .any(|c| c.level == Level::Principal && c.count >= 190));
        assert!(counts
            .iter()
            .any(|c| c.level == Level::Tenant && c.count == 1));
    }

    #[test]
    fn a_batch_over_the_tenants_bucket_costs_nobody_anything() {
        // The tenant holds 20 messages; alice has no limit of her own, bob
        // a bucket of 50.
        let l = Limits::new(
            spec(|s| {
                s.publish_msgs_per_sec = Some(20);
                s.burst = Some(1.0);
            }),
            LimitSpec::default(),
        );
        l.set_principal(
            "acme",
            "bob",
            Some(spec(|s| {
                s.publish_msgs_per_sec = Some(50);
                s.burst = Some(1.0);
            })),
        );
        let mut alice = l.handle("acme", "alice");
        let mut bob = l.handle("acme", "bob");
        for h in [&mut alice, &mut bob] {
            let e = h.rate(RateKind::PublishMsgs, 21).unwrap_err();
            assert_eq!(
                (e.level, e.status, e.per_request),
                (Level::Tenant, 413, Some(20))
            );
        }
        // Neither refusal took anything from the tenant nor from bob: he
        // may still take the tenant's whole bucket.
        bob.rate(RateKind::PublishMsgs, 20).unwrap();
        let e = alice.rate(RateKind::PublishMsgs, 1).unwrap_err();
        assert_eq!((e.level, e.status), (Level::Tenant, 429));
        let counts = l.rejections();
        assert!(counts
            .iter()
            .any(|c| c.level == Level::Tenant && c.count == 3));
    }

    #[test]
    fn the_burst_is_the_smaller_bucket_and_a_piece_of_it_is_charged_in_full() {
        let l = Limits::new(
            spec(|s| {
                s.deliver_bytes_per_sec = Some(4000);
                s.burst = Some(1.0);
            }),
            spec(|s| {
                s.deliver_bytes_per_sec = Some(1000);
                s.burst = Some(2.0);
            }),
        );
        let mut h = l.handle("acme", "alice");
        assert_eq!(h.rate_burst(RateKind::DeliverBytes), Some(2000));
        assert_eq!(h.rate_burst(RateKind::PublishMsgs), None);
        // A cost above either level's bucket is refused whole, 413 with the
        // most one request may cost, and charges neither level.
        let e = h.rate(RateKind::DeliverBytes, 2001).unwrap_err();
        assert_eq!((e.level, e.status), (Level::Principal, 413));
        assert_eq!((e.per_request, e.retry_after), (Some(2000), None));
        assert_eq!(
            e.to_string(),
            "principal rate limit deliver_bytes_per_sec=1000 allows at most 2000 \
             in one request; split it"
        );
        h.rate(RateKind::DeliverBytes, 2000).unwrap();
        // ...while pieces of the burst are each charged in full.
        let mut other = l.handle("globex", "bob");
        other.rate(RateKind::DeliverBytes, 2000).unwrap();
        assert!(other.rate(RateKind::DeliverBytes, 2000).is_err());
    }

    #[test]
    fn other_tenants_have_their_own_buckets() {
        let l = Limits::new(
            spec(|s| {
                s.publish_msgs_per_sec = Some(5);
                s.burst = Some(1.0);
            }),
            LimitSpec::default(),
        );
        let mut a = l.handle("a", "x");
        let mut b = l.handle("b", "x");
        a.rate(RateKind::PublishMsgs, 5).unwrap();
        assert!(a.rate(RateKind::PublishMsgs, 1).is_err());
        b.rate(RateKind::PublishMsgs, 5).unwrap();
    }

    #[test]
    fn overrides_apply_to_open_handles() {
        let l = Limits::new(LimitSpec::default(), LimitSpec::default());
        let mut h = l.handle("acme", "alice");
        for _ in 0..1000 {
            h.rate(RateKind::CacheOps, 1).unwrap();
        }
        l.set_principal(
            "acme",
            "alice",
            Some(spec(|s| {
                s.cache_ops_per_sec = Some(2);
                s.burst = Some(1.0);
            })),
        );
        h.rate(RateKind::CacheOps, 2).unwrap();
        assert!(h.rate(RateKind::CacheOps, 1).is_err());
        l.set_principal("acme", "alice", None);
        for _ in 0..1000 {
            h.rate(RateKind::CacheOps, 1).unwrap();
        }
        assert_eq!(l.override_of("acme", Some("alice")), None);
    }

    #[test]
    fn counted_quotas_are_given_back() {
        let l = Limits::new(
            spec(|s| s.max_connections = Some(2)),
            spec(|s| s.max_subscriptions = Some(1)),
        );
        let mut a = l.handle("acme", "alice");
        let mut b = l.handle("acme", "bob");
        let g1 = a.acquire(QuotaKind::Connections).unwrap();
        let _g2 = b.acquire(QuotaKind::Connections).unwrap();
        let e = a.acquire(QuotaKind::Connections).unwrap_err();
        assert_eq!(
            (e.level, e.status, e.limit),
            (Level::Tenant, 429, "max_connections")
        );
        drop(g1);
        let _g3 = a.acquire(QuotaKind::Connections).unwrap();
        let _s = a.acquire(QuotaKind::Subscriptions).unwrap();
        let e = a.acquire(QuotaKind::Subscriptions).unwrap_err();
        assert_eq!(e.level, Level::Principal);
        b.acquire(QuotaKind::Subscriptions).unwrap();
    }

    #[test]
    fn storage_quotas() {
        let l = Limits::new(
            spec(|s| {
                s.max_stored_bytes = Some(1000);
                s.max_streams = Some(2);
            }),
            LimitSpec::default(),
        );
        let mut h = l.handle("acme", "alice");
        h.fits(QuotaKind::Streams, 1, 1).unwrap();
        assert_eq!(h.fits(QuotaKind::Streams, 2, 1).unwrap_err().status, 429);
        l.set_usage("acme", QuotaKind::StoredBytes, 900);
        h.fits_usage(QuotaKind::StoredBytes, 100).unwrap();
        // A tenant left out of a full update holds nothing any more.
        l.set_usage_of_all(QuotaKind::StoredBytes, &HashMap::new());
        h.fits_usage(QuotaKind::StoredBytes, 1000).unwrap();
        l.set_usage("acme", QuotaKind::StoredBytes, 900);
        h.add_usage(QuotaKind::StoredBytes, 100);
        let e = h.fits_usage(QuotaKind::StoredBytes, 1).unwrap_err();
        assert_eq!(e.status, 507);
        assert_eq!(e.to_string(), "tenant quota max_stored_bytes=1000 reached");
        assert_eq!(
            h.fits(QuotaKind::StoredBytes, 0, 5000).unwrap_err().status,
            413
        );
    }

    #[test]
    fn sweep_keeps_held_scopes() {
        let l = Limits::new(LimitSpec::default(), LimitSpec::default());
        let h = l.handle("acme", "alice");
        drop(l.handle("acme", "bob"));
        // Recently used: kept, so its buckets are not reset.
        assert_eq!(l.sweep(), 0);
        assert_eq!(l.sweep_idle(Duration::ZERO), 1);
        drop(h);
        assert_eq!(l.sweep_idle(Duration::ZERO), 1);
    }
}
