//! Connection admission before anyone is authenticated: caps on
//! connections (all, per IP, unauthenticated per IP), a new-connection rate
//! per IP, and failed-authentication lockout with growing backoff.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::bucket::Bucket;

/// The connection-level settings.
#[derive(Debug, Clone, PartialEq)]
pub struct AdmissionSpec {
    /// Connections open at once, all listeners and addresses together.
    pub max_connections: u64,
    /// Connections open at once from one IP address.
    pub max_connections_per_ip: u64,
    /// Connections from one IP address that have not authenticated yet.
    pub max_unauthenticated_per_ip: u64,
    /// New connections per second from one IP address (burst: twice that).
    pub new_connections_per_ip_per_sec: u64,
    /// Failed authentications (per IP, per key id) before a lockout.
    pub lockout_threshold: u32,
    /// The first lockout; each further one doubles, up to `lockout_max`.
    pub lockout_base: Duration,
    pub lockout_max: Duration,
}

impl Default for AdmissionSpec {
    fn default() -> Self {
        AdmissionSpec {
            max_connections: 50_000,
            max_connections_per_ip: 1_000,
            max_unauthenticated_per_ip: 64,
            new_connections_per_ip_per_sec: 200,
            lockout_threshold: 10,
            lockout_base: Duration::from_secs(1),
            lockout_max: Duration::from_secs(300),
        }
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Over a cap or rate; `limit` names it.
    Limit {
        limit: &'static str,
        value: u64,
        retry_after: Option<Duration>,
    },
    /// Locked out after failed authentications.
    LockedOut { retry_after: Duration },
}

impl Refusal {
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Refusal::Limit { retry_after, .. } => *retry_after,
            Refusal::LockedOut { retry_after } => Some(*retry_after),
        }
    }

    /// The limit's name, for metrics.
    pub fn limit(&self) -> &'static str {
        match self {
            Refusal::Limit { limit, .. } => limit,
            Refusal::LockedOut { .. } => "auth_lockout",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Limit { limit, value, .. } => {
                write!(f, "connection limit {limit}={value} reached")
            }
            Refusal::LockedOut { retry_after } => write!(
                f,
                "too many failed authentications; locked out for {} ms",
                retry_after.as_millis().max(1)
            ),
        }
    }
}

#[derive(Debug)]
struct PerIp {
    open: u64,
    unauthenticated: u64,
    arrivals: Option<Bucket>,
    last_seen: Instant,
}

#[derive(Debug)]
struct Lock {
    failures: u32,
    level: u32,
    until: Option<Instant>,
    last_failure: Instant,
}

#[derive(Debug, Default)]
struct State {
    ips: HashMap<IpAddr, PerIp>,
    locks: HashMap<String, Lock>,
    last_sweep: Option<Instant>,
}

/// Admission control for every listener of one server.
#[derive(Debug)]
pub struct Admission {
    spec: RwLock<AdmissionSpec>,
    open: AtomicU64,
    /// Entries in the lockout table: while 0, checks skip the lock.
    lock_entries: AtomicU64,
    state: Mutex<State>,
    refused: Mutex<HashMap<&'static str, u64>>,
}

impl Admission {
    pub fn new(spec: AdmissionSpec) -> Arc<Admission> {
        Arc::new(Admission {
            spec: RwLock::new(spec),
            open: AtomicU64::new(0),
            lock_entries: AtomicU64::new(0),
            state: Mutex::new(State::default()),
            refused: Mutex::new(HashMap::new()),
        })
    }

    pub fn spec(&self) -> AdmissionSpec {
        self.spec.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the settings (a configuration reload). Per-IP rates start
    /// afresh.
    pub fn set_spec(&self, spec: AdmissionSpec) {
        *self.spec.write().unwrap_or_else(|e| e.into_inner()) = spec;
        self.lock().ips.values_mut().for_each(|p| p.arrivals = None);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count(&self, r: Refusal) -> Refusal {
        *self
            .refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(r.limit())
            .or_default() += 1;
        r
    }

    /// Connections open now.
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Refusals so far, by limit.
    pub fn refusals(&self) -> Vec<(&'static str, u64)> {
        let mut v: Vec<_> = self
            .refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect();
        v.sort();
        v
    }

    /// Admits a new connection from `ip`, or says which limit refuses it.
    /// The ticket counts it as open and unauthenticated until
    /// `Ticket::authenticated` or drop.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Ticket, Refusal> {
        let spec = self.spec();
        let now = Instant::now();
        let total = self.open.fetch_add(1, Ordering::Relaxed);
        if total >= spec.max_connections {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return Err(self.count(Refusal::Limit {
                limit: "max_connections",
                value: spec.max_connections,
                retry_after: None,
            }));
        }
        let mut st = self.lock();
        self.sweep(&mut st, now, &spec);
        let per = st.ips.entry(ip).or_insert_with(|| PerIp {
            open: 0,
            unauthenticated: 0,
            arrivals: None,
            last_seen: now,
        });
        per.last_seen = now;
        let refusal = if per.open >= spec.max_connections_per_ip {
            Some(Refusal::Limit {
                limit: "max_connections_per_ip",
                value: spec.max_connections_per_ip,
                retry_after: None,
            })
        } else if per.unauthenticated >= spec.max_unauthenticated_per_ip {
            Some(Refusal::Limit {
                limit: "max_unauthenticated_per_ip",
                value: spec.max_unauthenticated_per_ip,
                retry_after: None,
            })
        } else {
            if per.arrivals.is_none() {
                per.arrivals = Bucket::new(spec.new_connections_per_ip_per_sec, 2.0);
            }
            match per.arrivals.as_ref().map(|b| b.take(1)) {
                Some(Err(wait)) => Some(Refusal::Limit {
                    limit: "new_connections_per_ip_per_sec",
                    value: spec.new_connections_per_ip_per_sec,
                    retry_after: Some(wait),
                }),
                _ => None,
            }
        };
        if let Some(r) = refusal {
            drop(st);
            self.open.fetch_sub(1, Ordering::Relaxed);
            return Err(self.count(r));
        }
        per.open += 1;
        per.unauthenticated += 1;
        Ok(Ticket {
            admission: self.clone(),
            ip,
            authenticated: false,
        })
    }

    fn release(&self, ip: IpAddr, authenticated: bool) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        let mut st = self.lock();
        if let Some(p) = st.ips.get_mut(&ip) {
            p.open = p.open.saturating_sub(1);
            if !authenticated {
                p.unauthenticated = p.unauthenticated.saturating_sub(1);
            }
        }
    }

    /// Drops idle per-IP entries and expired lockouts, at most once a second.
    fn sweep(&self, st: &mut State, now: Instant, spec: &AdmissionSpec) {
        if st
            .last_sweep
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        st.last_sweep = Some(now);
        // A per-IP bucket idle for its refill time is full again: dropping
        // it loses nothing.
        st.ips
            .retain(|_, p| p.open > 0 || now.duration_since(p.last_seen) < Duration::from_secs(2));
        let window = spec.lockout_max;
        st.locks.retain(|_, l| {
            l.until.is_some_and(|u| u > now) || now.duration_since(l.last_failure) < window
        });
        self.lock_entries
            .store(st.locks.len() as u64, Ordering::Relaxed);
    }

    /// Whether any key has failures or a lockout on record (one atomic
    /// load; callers skip building keys when there is none).
    pub fn has_lockouts(&self) -> bool {
        self.lock_entries.load(Ordering::Relaxed) > 0
    }

    /// Whether `key` (an IP address or a key id) is locked out now.
    pub fn locked(&self, key: &str) -> Result<(), Refusal> {
        if !self.has_lockouts() {
            return Ok(());
        }
        let now = Instant::now();
        let mut st = self.lock();
        let spec = self.spec();
        self.sweep(&mut st, now, &spec);
        match st.locks.get(key).and_then(|l| l.until) {
            Some(until) if until > now => {
                drop(st);
                Err(self.count(Refusal::LockedOut {
                    retry_after: until - now,
                }))
            }
            _ => Ok(()),
        }
    }

    /// Records a failed authentication for each key; a key reaching the
    /// threshold is locked out, for twice as long each time.
    pub fn failed(&self, keys: &[&str]) {
        let spec = self.spec();
        let now = Instant::now();
        let mut st = self.lock();
        for key in keys {
            let l = st.locks.entry((*key).to_string()).or_insert(Lock {
                failures: 0,
                level: 0,
                until: None,
                last_failure: now,
            });
            // Failures older than the longest lockout are forgotten.
            if now.duration_since(l.last_failure) > spec.lockout_max {
                l.failures = 0;
                l.level = 0;
            }
            l.last_failure = now;
            l.failures += 1;
            if l.failures >= spec.lockout_threshold {
                let d = spec
                    .lockout_base
                    .saturating_mul(1u32 << l.level.min(20))
                    .min(spec.lockout_max);
                l.until = Some(now + d);
                l.level += 1;
                l.failures = 0;
            }
        }
        self.lock_entries
            .store(st.locks.len() as u64, Ordering::Relaxed);
    }

    /// A successful authentication clears the key's failure count (its
    /// lockout level stays until the failures age out).
    pub fn succeeded(&self, key: &str) {
        if !self.has_lockouts() {
            return;
        }
        if let Some(l) = self.lock().locks.get_mut(key) {
            l.failures = 0;
        }
    }
}

/// One admitted connection.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    ip: IpAddr,
    authenticated: bool,
}

impl Ticket {
    /// The connection authenticated: it no longer counts against the
    /// unauthenticated cap.
    pub fn authenticated(&mut self) {
        if !self.authenticated {
            self.authenticated = true;
            let mut st = self.admission.lock();
            if let Some(p) = st.ips.get_mut(&self.ip) {
                p.unauthenticated = p.unauthenticated.saturating_sub(1);
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.admission.release(self.ip, self.authenticated);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, n])
    }

    #[test]
    fn per_ip_caps() {
        let a = Admission::new(AdmissionSpec {
            max_connections_per_ip: 3,
            max_unauthenticated_per_ip: 2,
            ..Default::default()
        });
        let mut t1 = a.admit(ip(1)).unwrap();
        let t2 = a.admit(ip(1)).unwrap();
        let e = a.admit(ip(1)).unwrap_err();
        assert_eq!(e.limit(), "max_unauthenticated_per_ip");
        // Another address is not affected.
        let _other = a.admit(ip(2)).unwrap();
        t1.authenticated();
        let _t3 = a.admit(ip(1)).unwrap();
        let e = a.admit(ip(1)).unwrap_err();
        assert_eq!(e.limit(), "max_connections_per_ip");
        drop(t2);
        let _t4 = a.admit(ip(1)).unwrap();
        assert_eq!(a.open(), 4);
        assert_eq!(
            a.refusals(),
            vec![
                ("max_connections_per_ip", 1),
                ("max_unauthenticated_per_ip", 1)
            ]
        );
    }

    #[test]
    fn total_cap_and_arrival_rate() {
        let a = Admission::new(AdmissionSpec {
            max_connections: 2,
            ..Default::default()
        });
        let _x = a.admit(ip(1)).unwrap();
        let _y = a.admit(ip(2)).unwrap();
        assert_eq!(a.admit(ip(3)).unwrap_err().limit(), "max_connections");

        let a = Admission::new(AdmissionSpec {
            new_connections_per_ip_per_sec: 5,
            ..Default::default()
        });
        let mut ok = 0;
        let mut refusal = None;
        for _ in 0..20 {
            match a.admit(ip(1)) {
                Ok(t) => {
                    ok += 1;
                    drop(t)
                }
                Err(e) => refusal = Some(e),
            }
        }
        assert!((10..=11).contains(&ok), "{ok}");
        let r = refusal.unwrap();
        assert_eq!(r.limit(), "new_connections_per_ip_per_sec");
        assert!(r.retry_after().is_some());
    }

    #[test]
    fn a_new_spec_applies_to_the_next_admission() {
        let a = Admission::new(AdmissionSpec::default());
        let _held: Vec<_> = (0..3).map(|_| a.admit(ip(1)).unwrap()).collect();
        a.set_spec(AdmissionSpec {
            max_unauthenticated_per_ip: 3,
            ..Default::default()
        });
        assert_eq!(
            a.admit(ip(1)).unwrap_err().limit(),
            "max_unauthenticated_per_ip"
        );
        a.set_spec(AdmissionSpec::default());
        a.admit(ip(1)).unwrap();
    }

    #[test]
    fn lockout_grows() {
        let a = Admission::new(AdmissionSpec {
            lockout_threshold: 3,
            lockout_base: Duration::from_millis(40),
            lockout_max: Duration::from_secs(10),
            ..Default::default()
        });
        for _ in 0..2 {
            a.failed(&["ip:127.0.0.1", "key:k1"]);
        }
        a.locked("ip:127.0.0.1").unwrap();
        a.failed(&["ip:127.0.0.1", "key:k1"]);
        let first = a.locked("key:k1").unwrap_err().retry_after().unwrap();
        assert!(first <= Duration::from_millis(40));
        a.locked("key:other").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        a.locked("key:k1").unwrap();
        for _ in 0..3 {
            a.failed(&["key:k1"]);
        }
        let second = a.locked("key:k1").unwrap_err().retry_after().unwrap();
        assert!(second > Duration::from_millis(40), "{second:?}");
        assert!(a
            .locked("key:k1")
            .unwrap_err()
            .to_string()
            .contains("locked out"));
    }
}
