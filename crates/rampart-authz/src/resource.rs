//! Resources: what a permission is asked for. Every resource carries its
//! tenant, so no check can forget which tenant it is about.

use std::fmt;

use rampart_proto::{CacheName, NameError, NamespaceName, StreamName, TenantId};

use crate::permission::{PermSet, Permission};

/// A thing a permission is asked for.
///
/// Which resource and permission to check for each operation:
///
/// | operation                                   | resource              | permission      |
/// |---------------------------------------------|-----------------------|-----------------|
/// | publish / subscribe                         | `Stream`              | `publish` / `subscribe` |
/// | create, delete, configure a stream          | `Stream`              | `stream_admin`  |
/// | cache get / put, delete                     | `Cache`               | `cache_read` / `cache_write` |
/// | create, delete, configure a cache           | `Cache`               | `cache_admin`   |
/// | list a namespace's streams / caches         | `Namespace`           | `stream_admin` / `cache_admin` |
/// | create or delete a namespace                | `Namespace`           | `tenant_admin`  |
/// | disable or enable a namespace               | `Namespace`           | `tenant_admin`  |
/// | read / write a secret                       | `Secret`              | `secret_read` / `secret_write` |
/// | manage API keys and tokens                  | `Admin(_, Keys)`      | `key_admin`     |
/// | apply or remove an ACL document             | `Admin(_, Acl)`       | `acl_admin`     |
/// | read the audit log                          | `Admin(_, Audit)`     | `audit_read`    |
/// | disable or enable the tenant                | `Admin(_, Tenant)`    | `tenant_admin`  |
/// | operations on the tenant as a whole         | `Tenant`              | an admin permission |
///
/// The display form is `kind:tenant/...`, e.g. `stream:acme/production/orders`
/// or `secret:acme/db/password`; [`Resource::parse`] reads it back.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Resource {
    Tenant(TenantId),
    Namespace(TenantId, NamespaceName),
    Stream(TenantId, NamespaceName, StreamName),
    Cache(TenantId, NamespaceName, CacheName),
    Secret(TenantId, SecretPath),
    Admin(TenantId, AdminArea),
}

/// An administrative area of a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum AdminArea {
    /// API keys and tokens.
    Keys,
    /// ACL documents.
    Acl,
    /// The audit log.
    Audit,
    /// The tenant's own settings (disable, enable).
    Tenant,
}

/// The kind of a resource, for checking that a rule's permissions can apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Namespace,
    Stream,
    Cache,
    Secret,
    Admin(AdminArea),
}

impl Kind {
    /// The permissions that mean something on a resource of this kind.
    pub(crate) fn applicable(self) -> PermSet {
        use Permission as P;
        let set = |ps: &[Permission]| ps.iter().copied().collect::<PermSet>();
        match self {
            Kind::Namespace => set(&[P::StreamAdmin, P::CacheAdmin, P::TenantAdmin]),
            Kind::Stream => set(&[P::Publish, P::Subscribe, P::StreamAdmin]),
            Kind::Cache => set(&[P::CacheRead, P::CacheWrite, P::CacheAdmin]),
            Kind::Secret => set(&[P::SecretRead, P::SecretWrite]),
            Kind::Admin(AdminArea::Keys) => set(&[P::KeyAdmin]),
            Kind::Admin(AdminArea::Acl) => set(&[P::AclAdmin]),
            Kind::Admin(AdminArea::Audit) => set(&[P::AuditRead]),
            Kind::Admin(AdminArea::Tenant) => set(&[P::TenantAdmin]),
        }
    }
}

// === impl Resource ===

impl Resource {
    /// The tenant the resource belongs to.
    pub fn tenant(&self) -> &TenantId {
        match self {
            Resource::Tenant(t)
            | Resource::Namespace(t, _)
            | Resource::Stream(t, _, _)
            | Resource::Cache(t, _, _)
            | Resource::Secret(t, _)
            | Resource::Admin(t, _) => t,
        }
    }

    /// The namespace, for the kinds that live in one.
    pub fn namespace(&self) -> Option<&NamespaceName> {
        match self {
            Resource::Namespace(_, n) | Resource::Stream(_, n, _) | Resource::Cache(_, n, _) => {
                Some(n)
            }
            Resource::Tenant(_) | Resource::Secret(..) | Resource::Admin(..) => None,
        }
    }

    /// Reads the display form, e.g. `stream:acme/production/orders`.
    pub fn parse(s: &str) -> Result<Resource, ResourceError> {
        let Some((kind, rest)) = s.split_once(':') else {
            return Err(ResourceError::Shape {
                expected: "KIND:TENANT/...",
            });
        };
        let parts = |n: usize, expected: &'static str| -> Result<Vec<&str>, ResourceError> {
            let v: Vec<&str> = rest.split('/').collect();
            if v.len() == n {
                Ok(v)
            } else {
                Err(ResourceError::Shape { expected })
            }
        };
        Ok(match kind {
            "tenant" => Resource::Tenant(TenantId::parse(rest)?),
            "namespace" => {
                let p = parts(2, "namespace:TENANT/NAMESPACE")?;
                Resource::Namespace(TenantId::parse(p[0])?, NamespaceName::parse(p[1])?)
            }
            "stream" => {
                let p = parts(3, "stream:TENANT/NAMESPACE/STREAM")?;
                Resource::Stream(
                    TenantId::parse(p[0])?,
                    NamespaceName::parse(p[1])?,
                    StreamName::parse(p[2])?,
                )
            }
            "cache" => {
                let p = parts(3, "cache:TENANT/NAMESPACE/CACHE")?;
                Resource::Cache(
                    TenantId::parse(p[0])?,
                    NamespaceName::parse(p[1])?,
                    CacheName::parse(p[2])?,
                )
            }
            "secret" => {
                let Some((t, path)) = rest.split_once('/') else {
                    return Err(ResourceError::Shape {
                        expected: "secret:TENANT/PATH",
                    });
                };
                Resource::Secret(TenantId::parse(t)?, SecretPath::parse(path)?)
            }
            "admin" => {
                let p = parts(2, "admin:TENANT/AREA")?;
                let area = AdminArea::parse(p[1])
                    .ok_or_else(|| ResourceError::UnknownAdminArea(excerpt(p[1])))?;
                Resource::Admin(TenantId::parse(p[0])?, area)
            }
            other => return Err(ResourceError::UnknownKind(excerpt(other))),
        })
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Tenant(t) => write!(f, "tenant:{t}"),
            Resource::Namespace(t, n) => write!(f, "namespace:{t}/{n}"),
            Resource::Stream(t, n, s) => write!(f, "stream:{t}/{n}/{s}"),
            Resource::Cache(t, n, c) => write!(f, "cache:{t}/{n}/{c}"),
            Resource::Secret(t, p) => write!(f, "secret:{t}/{p}"),
            Resource::Admin(t, a) => write!(f, "admin:{t}/{a}"),
        }
    }
}

impl std::str::FromStr for Resource {
    type Err = ResourceError;
    fn from_str(s: &str) -> Result<Self, ResourceError> {
        Resource::parse(s)
    }
}

/// Why the display form of a resource was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResourceError {
    #[error(
        "unknown resource kind {0} (expected tenant, namespace, stream, cache, secret or admin)"
    )]
    UnknownKind(String),
    #[error("malformed resource, expected {expected}")]
    Shape { expected: &'static str },
    #[error("unknown admin area {0} (expected keys, acl, audit or tenant)")]
    UnknownAdminArea(String),
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    SecretPath(#[from] SecretPathError),
}

// === impl AdminArea ===

impl AdminArea {
    pub const ALL: [AdminArea; 4] = [
        AdminArea::Keys,
        AdminArea::Acl,
        AdminArea::Audit,
        AdminArea::Tenant,
    ];

    /// The stable name: `keys`, `acl`, `audit` or `tenant`.
    pub fn as_str(self) -> &'static str {
        match self {
            AdminArea::Keys => "keys",
            AdminArea::Acl => "acl",
            AdminArea::Audit => "audit",
            AdminArea::Tenant => "tenant",
        }
    }

    pub fn parse(s: &str) -> Option<AdminArea> {
        AdminArea::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

impl fmt::Display for AdminArea {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl SecretPath ===

/// Longest secret path, in bytes.
pub const MAX_SECRET_PATH_LEN: usize = 512;
/// Longest segment of a secret path, in bytes.
pub const MAX_SECRET_SEGMENT_LEN: usize = 128;

/// The path of a secret inside its tenant, e.g. `db/primary/password`.
///
/// 1 to 512 bytes of `/`-separated segments, each matching
/// `[A-Za-z0-9_.-]{1,128}`; no empty segment (so no leading, trailing or
/// doubled `/`) and no `.` or `..` segment. Past [`SecretPath::parse`], a
/// path can be used as a storage key and compared by prefix without
/// normalisation.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretPath(Box<str>);

/// Why a secret path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretPathError {
    #[error("secret path is empty")]
    Empty,
    #[error("secret path is longer than {max} bytes")]
    TooLong { max: usize },
    #[error("secret path has an empty segment")]
    EmptySegment,
    #[error("secret path has a segment longer than {max} bytes")]
    SegmentTooLong { max: usize },
    #[error("secret path has a '.' or '..' segment")]
    DotSegment,
    #[error("secret path has a character outside [A-Za-z0-9_.-] and '/'")]
    BadChar,
}

impl SecretPath {
    pub fn parse(s: &str) -> Result<SecretPath, SecretPathError> {
        if s.is_empty() {
            return Err(SecretPathError::Empty);
        }
        if s.len() > MAX_SECRET_PATH_LEN {
            return Err(SecretPathError::TooLong {
                max: MAX_SECRET_PATH_LEN,
            });
        }
        for seg in s.split('/') {
            if seg.is_empty() {
                return Err(SecretPathError::EmptySegment);
            }
            if !seg
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
            {
                return Err(SecretPathError::BadChar);
            }
            if seg.len() > MAX_SECRET_SEGMENT_LEN {
                return Err(SecretPathError::SegmentTooLong {
                    max: MAX_SECRET_SEGMENT_LEN,
                });
            }
            if seg == "." || seg == ".." {
                return Err(SecretPathError::DotSegment);
            }
        }
        Ok(SecretPath(s.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `self` lies strictly below `prefix` (`a/b/c` is below `a/b`
    /// and `a`, but not below `a/b/c` or `a/bc`).
    pub fn is_below(&self, prefix: &SecretPath) -> bool {
        self.0.len() > prefix.0.len()
            && self.0.starts_with(&*prefix.0)
            && self.0.as_bytes()[prefix.0.len()] == b'/'
    }
}

impl fmt::Display for SecretPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SecretPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretPath({:?})", &*self.0)
    }
}

impl std::str::FromStr for SecretPath {
    type Err = SecretPathError;
    fn from_str(s: &str) -> Result<Self, SecretPathError> {
        SecretPath::parse(s)
    }
}

impl AsRef<str> for SecretPath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// At most 64 bytes of untrusted input, quoted, for an error message.
pub(crate) fn excerpt(s: &str) -> String {
    const MAX: usize = 64;
    if s.len() <= MAX {
        return format!("{s:?}");
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(s: &str) -> TenantId {
        TenantId::parse(s).unwrap()
    }

    #[test]
    fn display_forms_round_trip() {
        let ns = NamespaceName::parse("production").unwrap();
        for r in [
            Resource::Tenant(t("acme")),
            Resource::Namespace(t("acme"), ns.clone()),
            Resource::Stream(t("acme"), ns.clone(), StreamName::parse("orders").unwrap()),
            Resource::Cache(t("acme"), ns, CacheName::parse("sessions").unwrap()),
            Resource::Secret(
                t("acme"),
                SecretPath::parse("db/Primary/pass.word").unwrap(),
            ),
            Resource::Admin(t("acme"), AdminArea::Keys),
        ] {
            let s = r.to_string();
            assert_eq!(Resource::parse(&s), Ok(r), "{s}");
        }
        assert_eq!(
            Resource::parse("stream:acme/production/orders")
                .unwrap()
                .to_string(),
            "stream:acme/production/orders"
        );
    }

    #[test]
    fn bad_display_forms_are_refused() {
        for (s, want) in [
            ("acme", "Shape"),
            ("topic:acme/x", "UnknownKind"),
            ("stream:acme/orders", "Shape"),
            ("stream:acme/p/o/x", "Shape"),
            ("stream:Acme/p/o", "Name"),
            ("secret:acme", "Shape"),
            ("secret:acme/../x", "SecretPath"),
            ("admin:acme/root", "UnknownAdminArea"),
        ] {
            let err = Resource::parse(s).unwrap_err();
            assert!(format!("{err:?}").starts_with(want), "{s}: {err:?}");
        }
    }

    #[test]
    fn resource_accessors() {
        let r = Resource::parse("cache:acme/dev/c").unwrap();
        assert_eq!(r.tenant().as_str(), "acme");
        assert_eq!(r.namespace().map(|n| n.as_str()), Some("dev"));
        assert_eq!(Resource::parse("admin:acme/acl").unwrap().namespace(), None);
    }

    #[test]
    fn secret_paths() {
        for ok in ["a", "db/password", "A-b_c.d/e", "..a/b..", &"x".repeat(128)] {
            assert!(SecretPath::parse(ok).is_ok(), "{ok}");
        }
        let cases: [(&str, SecretPathError); 9] = [
            ("", SecretPathError::Empty),
            ("/a", SecretPathError::EmptySegment),
            ("a/", SecretPathError::EmptySegment),
            ("a//b", SecretPathError::EmptySegment),
            ("a/./b", SecretPathError::DotSegment),
            ("..", SecretPathError::DotSegment),
            ("a b", SecretPathError::BadChar),
            ("a/*", SecretPathError::BadChar),
            (
                &"x".repeat(129),
                SecretPathError::SegmentTooLong { max: 128 },
            ),
        ];
        for (bad, want) in cases {
            assert_eq!(SecretPath::parse(bad), Err(want), "{bad:?}");
        }
        let long = vec!["abcdefg"; 70].join("/");
        assert_eq!(
            SecretPath::parse(&long),
            Err(SecretPathError::TooLong { max: 512 })
        );
    }

    #[test]
    fn below_is_by_whole_segments() {
        let p = |s| SecretPath::parse(s).unwrap();
        assert!(p("a/b/c").is_below(&p("a/b")));
        assert!(p("a/b/c").is_below(&p("a")));
        assert!(!p("a/b").is_below(&p("a/b")));
        assert!(!p("a/bc").is_below(&p("a/b")));
        assert!(!p("a").is_below(&p("a/b")));
    }

    #[test]
    fn excerpts_are_bounded() {
        assert_eq!(excerpt("ab"), "\"ab\"");
        let long = "é".repeat(100);
        assert!(excerpt(&long).len() < 80);
    }

    proptest! {
        #[test]
        fn secret_path_parse_agrees_with_the_rule(s in "[a-z./_-]{0,12}") {
            let expected = !s.is_empty()
                && s.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != "..");
            prop_assert_eq!(SecretPath::parse(&s).is_ok(), expected);
        }
    }
}
