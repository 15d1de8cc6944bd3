//! Permissions: what a subject asks to do, with stable snake_case names.

use std::fmt;

/// One thing a subject may be allowed to do.
///
/// The names returned by [`Permission::as_str`] are stable: they appear in
/// ACL documents, audit records and metrics labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Permission {
    /// Append messages to a stream.
    Publish,
    /// Read messages from a stream.
    Subscribe,
    /// Read entries of a cache.
    CacheRead,
    /// Put or delete entries of a cache.
    CacheWrite,
    /// Read a secret's value.
    SecretRead,
    /// Create, replace or delete a secret.
    SecretWrite,
    /// Create, delete and configure streams.
    StreamAdmin,
    /// Create, delete and configure caches.
    CacheAdmin,
    /// Manage API keys and tokens.
    KeyAdmin,
    /// Apply and remove ACL documents.
    AclAdmin,
    /// Disable and enable the tenant; create and delete namespaces.
    TenantAdmin,
    /// Read the audit log.
    AuditRead,
}

impl Permission {
    /// Every permission, in declaration order.
    pub const ALL: [Permission; 12] = [
        Permission::Publish,
        Permission::Subscribe,
        Permission::CacheRead,
        Permission::CacheWrite,
        Permission::SecretRead,
        Permission::SecretWrite,
        Permission::StreamAdmin,
        Permission::CacheAdmin,
        Permission::KeyAdmin,
        Permission::AclAdmin,
        Permission::TenantAdmin,
        Permission::AuditRead,
    ];

    /// The permissions the word `admin` can stand for in an ACL document.
    /// Never `secret_read` or `secret_write`.
    pub(crate) const ADMIN: PermSet = PermSet::EMPTY
        .with(Permission::StreamAdmin)
        .with(Permission::CacheAdmin)
        .with(Permission::KeyAdmin)
        .with(Permission::AclAdmin)
        .with(Permission::TenantAdmin)
        .with(Permission::AuditRead);

    /// The stable name, e.g. `"cache_read"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Publish => "publish",
            Permission::Subscribe => "subscribe",
            Permission::CacheRead => "cache_read",
            Permission::CacheWrite => "cache_write",
            Permission::SecretRead => "secret_read",
            Permission::SecretWrite => "secret_write",
            Permission::StreamAdmin => "stream_admin",
            Permission::CacheAdmin => "cache_admin",
            Permission::KeyAdmin => "key_admin",
            Permission::AclAdmin => "acl_admin",
            Permission::TenantAdmin => "tenant_admin",
            Permission::AuditRead => "audit_read",
        }
    }

    /// The permission with this stable name. Case-sensitive; the ACL word
    /// `admin` is not a permission and gives `None` here.
    pub fn parse(s: &str) -> Option<Permission> {
        Permission::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// Whether this is one of the administrative permissions the ACL word
    /// `admin` and the `admin` role stand for.
    pub fn is_admin(self) -> bool {
        Permission::ADMIN.contains(self)
    }

    const fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl PermSet ===

/// A set of permissions as a bit mask: membership is one AND.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub(crate) struct PermSet(u16);

impl PermSet {
    pub(crate) const EMPTY: PermSet = PermSet(0);

    pub(crate) const fn with(self, p: Permission) -> PermSet {
        PermSet(self.0 | p.bit())
    }

    pub(crate) const fn union(self, other: PermSet) -> PermSet {
        PermSet(self.0 | other.0)
    }

    pub(crate) const fn intersect(self, other: PermSet) -> PermSet {
        PermSet(self.0 & other.0)
    }

    pub(crate) const fn contains(self, p: Permission) -> bool {
        self.0 & p.bit() != 0
    }

    pub(crate) const fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub(crate) fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL
            .into_iter()
            .filter(move |p| self.contains(*p))
    }
}

impl FromIterator<Permission> for PermSet {
    fn from_iter<I: IntoIterator<Item = Permission>>(iter: I) -> Self {
        iter.into_iter().fold(PermSet::EMPTY, PermSet::with)
    }
}

impl fmt::Debug for PermSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for p in Permission::ALL {
            assert_eq!(Permission::parse(p.as_str()), Some(p));
            assert!(seen.insert(p.as_str()));
            assert_eq!(p.to_string(), p.as_str());
        }
        assert_eq!(Permission::parse("admin"), None);
        assert_eq!(Permission::parse("Publish"), None);
        assert_eq!(Permission::parse(""), None);
    }

    #[test]
    fn admin_never_covers_secrets() {
        assert!(!Permission::SecretRead.is_admin());
        assert!(!Permission::SecretWrite.is_admin());
        let admin: Vec<_> = Permission::ALL
            .into_iter()
            .filter(|p| p.is_admin())
            .collect();
        assert_eq!(
            admin,
            [
                Permission::StreamAdmin,
                Permission::CacheAdmin,
                Permission::KeyAdmin,
                Permission::AclAdmin,
                Permission::TenantAdmin,
                Permission::AuditRead,
            ]
        );
    }

    #[test]
    fn set_operations() {
        let s: PermSet = [Permission::Publish, Permission::AuditRead]
            .into_iter()
            .collect();
        assert!(s.contains(Permission::Publish));
        assert!(!s.contains(Permission::Subscribe));
        assert_eq!(s.intersect(Permission::ADMIN).iter().count(), 1);
        assert!(PermSet::EMPTY.is_empty());
        assert_eq!(s.union(PermSet::EMPTY), s);
    }
}
