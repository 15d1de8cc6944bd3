//! A per-connection cache of decisions for one subject.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::decide::decide;
use crate::permission::Permission;
use crate::policy::Policy;
use crate::resource::Resource;
use crate::role::Subject;

/// Remembers recent decisions of one connection.
///
/// Keyed by (resource, permission). Emptied when the policy's
/// [`generation`](Policy::generation) or the subject differs from the one
/// the entries were computed for, and when it is full (then it simply
/// starts over: a connection touching more resources than that is rare and
/// only pays for uncached decisions).
///
/// A hit does not allocate: the key is a 64-bit hash computed from the
/// borrowed resource, and the stored resource is compared to confirm it.
/// Requests for another tenant's resources are denied at once and not
/// stored.
/// Only allow/deny is kept; call [`decide`] again for the reason when
/// logging a denial.
#[derive(Debug)]
pub struct DecisionCache {
    generation: u64,
    subject: Option<Subject>,
    entries: HashMap<u64, Entry, BuildHasherDefault<PreHashed>>,
    max_entries: usize,
}

#[derive(Debug)]
struct Entry {
    resource: Resource,
    permission: Permission,
    allowed: bool,
}

impl Default for DecisionCache {
    fn default() -> Self {
        DecisionCache::new()
    }
}

impl DecisionCache {
    /// Entries kept by [`DecisionCache::new`].
    pub const DEFAULT_MAX_ENTRIES: usize = 1024;

    pub fn new() -> DecisionCache {
        DecisionCache::with_max_entries(Self::DEFAULT_MAX_ENTRIES)
    }

    /// A cache holding at most `max_entries` decisions (at least 1).
    /// Memory is taken as entries arrive, not up front.
    pub fn with_max_entries(max_entries: usize) -> DecisionCache {
        DecisionCache {
            generation: 0,
            subject: None,
            entries: HashMap::default(),
            max_entries: max_entries.max(1),
        }
    }

    /// Whether `subject` may do `permission` on `resource`: the same answer
    /// as [`decide`]`(..).allowed`, from the cache when possible.
    pub fn check(
        &mut self,
        policy: &Policy,
        subject: &Subject,
        resource: &Resource,
        permission: Permission,
    ) -> bool {
        if *resource.tenant() != subject.tenant {
            // Always denied (`Reason::CrossTenant`); not worth an entry.
            return false;
        }
        if self.generation != policy.generation() {
            self.entries.clear();
            self.generation = policy.generation();
        }
        if self.subject.as_ref() != Some(subject) {
            self.entries.clear();
            self.subject = Some(subject.clone());
        }
        let key = key(resource, permission);
        if let Some(e) = self.entries.get(&key) {
            if e.permission == permission && e.resource == *resource {
                return e.allowed;
            }
        }
        let allowed = decide(policy, subject, resource, permission).allowed;
        if self.entries.len() >= self.max_entries && !self.entries.contains_key(&key) {
            self.entries.clear();
        }
        // On a hash collision this replaces the other entry, which is fine.
        self.entries.insert(
            key,
            Entry {
                resource: resource.clone(),
                permission,
                allowed,
            },
        );
        allowed
    }

    /// How many decisions are cached.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Forgets every decision.
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

/// The cache key. Not keyed with a secret: a client that crafts colliding
/// names only evicts its own entries, since each connection has its own
/// cache, and a collision is detected by comparing the stored resource.
fn key(resource: &Resource, permission: Permission) -> u64 {
    let mut h = MixHasher::default();
    // Hash the names that tell resources apart within one connection's
    // tenant; the tenant itself is left out (a request naming another
    // tenant is rare, and the stored resource is compared anyway).
    let kind = match resource {
        Resource::Tenant(_) => 0u64,
        Resource::Namespace(_, n) => {
            h.write(n.as_str().as_bytes());
            1
        }
        Resource::Stream(_, n, s) => {
            h.write(n.as_str().as_bytes());
            h.write(s.as_str().as_bytes());
            2
        }
        Resource::Cache(_, n, c) => {
            h.write(n.as_str().as_bytes());
            h.write(c.as_str().as_bytes());
            3
        }
        Resource::Secret(_, p) => {
            h.write(p.as_str().as_bytes());
            4
        }
        Resource::Admin(_, a) => 5 + *a as u64,
    };
    h.add(kind << 8 | permission as u64);
    h.finish()
}

// === impl MixHasher ===

/// A word-at-a-time multiply-rotate hash (as rustc's FxHasher) with a
/// final avalanche (MurmurHash3's fmix64) so all 64 bits are usable.
#[derive(Default)]
struct MixHasher(u64);

impl MixHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(K);
    }
}

impl Hasher for MixHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        // The length goes into the last word, so "ab" + "c" and "a" + "bc"
        // differ.
        let rest = chunks.remainder();
        let mut word = [0u8; 8];
        word[..rest.len()].copy_from_slice(rest);
        self.add(u64::from_le_bytes(word) ^ ((bytes.len() as u64) << 56));
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        let mut k = self.0;
        k ^= k >> 33;
        k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
        k ^= k >> 33;
        k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        k ^ (k >> 33)
    }
}

/// The map's own hasher: the key is already a good hash.
#[derive(Default)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed; fold anything else in anyway.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::AclDocument;
    use rampart_proto::TenantId;

    fn subject(roles: &[&str]) -> Subject {
        Subject::new(
            TenantId::parse("acme").unwrap(),
            "ci",
            roles.iter().copied(),
        )
    }

    fn res(s: &str) -> Resource {
        Resource::parse(s).unwrap()
    }

    fn doc(effect: &str) -> AclDocument {
        let yaml = format!(
            "apiVersion: rampart.io/v1\nkind: ACL\nmetadata: {{tenant: acme}}\nspec:\n  rules:\n    - {{principal: ci, resource: \"stream:orders\", permissions: [publish], effect: {effect}}}\n"
        );
        AclDocument::parse_yaml(&yaml).unwrap().remove(0)
    }

    #[test]
    fn invalidated_when_the_generation_changes() {
        let mut policy = Policy::new();
        let s = subject(&[]);
        let orders = res("stream:acme/prod/orders");
        let mut cache = DecisionCache::new();
        assert!(!cache.check(&policy, &s, &orders, Permission::Publish));
        assert_eq!(cache.len(), 1);
        policy.apply(doc("allow"));
        assert!(cache.check(&policy, &s, &orders, Permission::Publish));
        assert!(cache.check(&policy, &s, &orders, Permission::Publish));
        assert_eq!(cache.len(), 1);
        policy.apply(doc("deny"));
        assert!(!cache.check(&policy, &s, &orders, Permission::Publish));
        policy.remove(&TenantId::parse("acme").unwrap(), None);
        assert!(!cache.check(&policy, &s, &orders, Permission::Publish));
    }

    #[test]
    fn invalidated_when_the_subject_changes() {
        let policy = Policy::new();
        let orders = res("stream:acme/prod/orders");
        let mut cache = DecisionCache::new();
        assert!(!cache.check(&policy, &subject(&["viewer"]), &orders, Permission::Publish));
        assert!(cache.check(&policy, &subject(&["user"]), &orders, Permission::Publish));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn keys_distinguish_resource_and_permission() {
        let policy = Policy::new();
        let s = subject(&["viewer"]);
        let mut cache = DecisionCache::new();
        let a = res("stream:acme/prod/orders");
        let b = res("cache:acme/prod/orders");
        assert!(cache.check(&policy, &s, &a, Permission::Subscribe));
        assert!(!cache.check(&policy, &s, &a, Permission::Publish));
        assert!(cache.check(&policy, &s, &b, Permission::CacheRead));
        assert!(!cache.check(
            &policy,
            &s,
            &res("stream:globex/prod/orders"),
            Permission::Subscribe
        ));
        // The cross-tenant request was answered without an entry.
        assert_eq!(cache.len(), 3);
        assert_ne!(
            key(&a, Permission::Subscribe),
            key(&b, Permission::Subscribe)
        );
        assert_ne!(key(&a, Permission::Subscribe), key(&a, Permission::Publish));
    }

    #[test]
    fn bounded() {
        let policy = Policy::new();
        let s = subject(&["user"]);
        let mut cache = DecisionCache::with_max_entries(8);
        for i in 0..20 {
            let r = res(&format!("stream:acme/prod/s{i}"));
            assert!(cache.check(&policy, &s, &r, Permission::Publish));
            assert!(cache.len() <= 8);
        }
        assert!(!cache.is_empty());
        cache.clear();
        assert!(cache.is_empty());
    }

    #[test]
    fn agrees_with_decide_after_collision() {
        // Force every key into one slot by using a one-entry cache: each
        // check replaces the previous entry and must still answer right.
        let policy = Policy::new();
        let s = subject(&["viewer"]);
        let mut cache = DecisionCache::with_max_entries(1);
        let a = res("stream:acme/prod/a");
        for _ in 0..3 {
            assert!(cache.check(&policy, &s, &a, Permission::Subscribe));
            assert!(!cache.check(&policy, &s, &a, Permission::Publish));
        }
    }
}
