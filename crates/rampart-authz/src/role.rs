//! Built-in roles and the subject a decision is made for.

use std::fmt;

use rampart_proto::TenantId;

use crate::permission::{PermSet, Permission};

/// A built-in role. Roles apply tenant-wide: a role grants its permissions
/// on every resource of the subject's own tenant.
///
/// | role     | permissions |
/// |----------|-------------|
/// | `viewer` | `subscribe`, `cache_read` |
/// | `user`   | `viewer` + `publish`, `cache_write` |
/// | `admin`  | `user` + every admin permission (`stream_admin`, `cache_admin`, `key_admin`, `acl_admin`, `tenant_admin`, `audit_read`) |
///
/// No role grants `secret_read` or `secret_write`: reading or writing a
/// secret always needs an ACL rule that names it (least privilege). An
/// `admin` can apply such a rule, since it holds `acl_admin`, but doing so
/// is an explicit, audited act.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Role {
    Viewer,
    User,
    Admin,
}

impl Role {
    /// Every built-in role, least powerful first.
    pub const ALL: [Role; 3] = [Role::Viewer, Role::User, Role::Admin];

    /// The stable name: `viewer`, `user` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::User => "user",
            Role::Admin => "admin",
        }
    }

    /// The built-in role with this name. Case-sensitive.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether the role grants `p` (on every resource of its tenant).
    pub fn grants(self, p: Permission) -> bool {
        self.permissions().contains(p)
    }

    pub(crate) fn permissions(self) -> PermSet {
        use Permission as P;
        let viewer = PermSet::EMPTY.with(P::Subscribe).with(P::CacheRead);
        let user = viewer.with(P::Publish).with(P::CacheWrite);
        match self {
            Role::Viewer => viewer,
            Role::User => user,
            Role::Admin => user.union(Permission::ADMIN),
        }
    }

    const fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The built-in roles a subject holds, as a bit mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct RoleSet(u8);

impl RoleSet {
    pub(crate) fn contains(self, r: Role) -> bool {
        self.0 & r.bit() != 0
    }

    /// The least powerful held role that grants `p`.
    pub(crate) fn granting(self, p: Permission) -> Option<Role> {
        Role::ALL
            .into_iter()
            .find(|r| self.contains(*r) && r.grants(p))
    }
}

// === impl Subject ===

/// Who asks: an authenticated principal of one tenant, with its roles.
///
/// The tenant must come from the credential (API key, token), never from
/// the request. Role names that are not built-in ([`Role`]) grant nothing;
/// [`Subject::unknown_roles`] lists them so they can be reported.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subject {
    pub tenant: TenantId,
    pub principal: String,
    pub roles: Vec<String>,
}

impl Subject {
    pub fn new<R: Into<String>>(
        tenant: TenantId,
        principal: impl Into<String>,
        roles: impl IntoIterator<Item = R>,
    ) -> Subject {
        Subject {
            tenant,
            principal: principal.into(),
            roles: roles.into_iter().map(Into::into).collect(),
        }
    }

    /// The role names that are not built-in roles and so grant nothing.
    pub fn unknown_roles(&self) -> impl Iterator<Item = &str> {
        self.roles
            .iter()
            .map(String::as_str)
            .filter(|r| Role::parse(r).is_none())
    }

    pub(crate) fn role_set(&self) -> RoleSet {
        RoleSet(
            self.roles
                .iter()
                .filter_map(|r| Role::parse(r))
                .fold(0, |m, r| m | r.bit()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_table() {
        use Permission as P;
        let granted =
            |r: Role| -> Vec<Permission> { P::ALL.into_iter().filter(|p| r.grants(*p)).collect() };
        assert_eq!(granted(Role::Viewer), [P::Subscribe, P::CacheRead]);
        assert_eq!(
            granted(Role::User),
            [P::Publish, P::Subscribe, P::CacheRead, P::CacheWrite]
        );
        for p in P::ALL {
            let want = !matches!(p, P::SecretRead | P::SecretWrite);
            assert_eq!(Role::Admin.grants(p), want, "{p}");
        }
    }

    #[test]
    fn names_round_trip() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("Admin"), None);
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn unknown_roles_are_reported_and_grant_nothing() {
        let s = Subject::new(
            TenantId::parse("acme").unwrap(),
            "ci",
            ["viewer", "superuser", "Admin"],
        );
        assert_eq!(
            s.unknown_roles().collect::<Vec<_>>(),
            ["superuser", "Admin"]
        );
        let set = s.role_set();
        assert!(set.contains(Role::Viewer));
        assert!(!set.contains(Role::Admin));
        assert_eq!(set.granting(Permission::Subscribe), Some(Role::Viewer));
        assert_eq!(set.granting(Permission::Publish), None);
    }

    #[test]
    fn least_powerful_granting_role_is_reported() {
        let s = Subject::new(TenantId::parse("acme").unwrap(), "x", ["admin", "user"]);
        assert_eq!(s.role_set().granting(Permission::Publish), Some(Role::User));
        assert_eq!(
            s.role_set().granting(Permission::KeyAdmin),
            Some(Role::Admin)
        );
    }
}
