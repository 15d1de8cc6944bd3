//! The two halves of a rule's "who" and "what": principal patterns and
//! resource patterns, with their matching and their specificity.

use std::fmt;

use rampart_proto::{CacheName, StreamName};

use crate::error::AclErrorKind;
use crate::permission::{PermSet, Permission};
use crate::resource::{excerpt, AdminArea, Kind, Resource, SecretPath};
use crate::role::{Role, RoleSet};

/// Longest exact principal name in a rule, in bytes.
pub(crate) const MAX_PRINCIPAL_LEN: usize = 256;

// === impl PrincipalPattern ===

/// Who a rule is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PrincipalPattern {
    /// `*`: every principal of the document's tenant.
    Any,
    /// `role:NAME`: every principal holding a built-in role.
    Role(Role),
    /// One principal, by exact name.
    Exact(Box<str>),
}

impl PrincipalPattern {
    pub(crate) fn parse(s: &str) -> Result<PrincipalPattern, AclErrorKind> {
        if s == "*" {
            return Ok(PrincipalPattern::Any);
        }
        if let Some(name) = s.strip_prefix("role:") {
            // Only built-in roles: a misspelt role in a deny rule would
            // otherwise silently deny nothing.
            return Role::parse(name)
                .map(PrincipalPattern::Role)
                .ok_or_else(|| AclErrorKind::UnknownRole(excerpt(name)));
        }
        if s.is_empty() {
            return Err(AclErrorKind::MalformedPrincipal("empty"));
        }
        if s.len() > MAX_PRINCIPAL_LEN {
            return Err(AclErrorKind::MalformedPrincipal("longer than 256 bytes"));
        }
        if !s.bytes().all(|c| c.is_ascii_graphic()) {
            return Err(AclErrorKind::MalformedPrincipal(
                "has whitespace, a control or a non-ASCII character",
            ));
        }
        if s.contains('*') {
            return Err(AclErrorKind::MalformedPrincipal(
                "has '*' (only a lone \"*\" matches everyone; there are no globs)",
            ));
        }
        Ok(PrincipalPattern::Exact(s.into()))
    }

    pub(crate) fn matches(&self, principal: &str, roles: RoleSet) -> bool {
        match self {
            PrincipalPattern::Any => true,
            PrincipalPattern::Role(r) => roles.contains(*r),
            PrincipalPattern::Exact(name) => **name == *principal,
        }
    }

    /// Higher is more specific: exact > role > anyone.
    pub(crate) fn rank(&self) -> u8 {
        match self {
            PrincipalPattern::Any => 0,
            PrincipalPattern::Role(_) => 1,
            PrincipalPattern::Exact(_) => 2,
        }
    }
}

impl fmt::Display for PrincipalPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrincipalPattern::Any => f.write_str("*"),
            PrincipalPattern::Role(r) => write!(f, "role:{r}"),
            PrincipalPattern::Exact(n) => f.write_str(n),
        }
    }
}

// === impl ResourcePattern ===

/// What a rule is about, inside its document's tenant (and namespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ResourcePattern {
    /// `*`: everything the document covers.
    Any,
    /// `namespace`: the namespace objects the document covers.
    Namespace,
    StreamAll,
    Stream(StreamName),
    CacheAll,
    Cache(CacheName),
    SecretAll,
    /// `secret:PREFIX/*`: every secret strictly below the prefix.
    SecretPrefix(SecretPath),
    Secret(SecretPath),
    /// A secret path with `+` segments (each matches exactly one segment),
    /// optionally ending in `/*` (anything strictly below):
    /// `secret:billing/+/db`, `secret:+/prod/*`.
    SecretGlob {
        /// `None` for a `+` segment.
        segments: Box<[Option<Box<str>>]>,
        below: bool,
    },
    AdminAll,
    Admin(AdminArea),
}

const SECRET_AND_ADMIN_SCOPE: &str =
    "secret: and admin: rules belong in a tenant-wide document (namespace absent or \"*\")";

impl ResourcePattern {
    /// Parses a pattern for a document that is namespace-scoped or not.
    pub(crate) fn parse(s: &str, scoped: bool) -> Result<ResourcePattern, AclErrorKind> {
        let pattern = match s {
            "*" => ResourcePattern::Any,
            "namespace" => ResourcePattern::Namespace,
            "stream:*" => ResourcePattern::StreamAll,
            "cache:*" => ResourcePattern::CacheAll,
            "secret:*" => ResourcePattern::SecretAll,
            "admin:*" => ResourcePattern::AdminAll,
            _ => {
                let Some((kind, name)) = s.split_once(':') else {
                    return Err(malformed(s));
                };
                match kind {
                    "stream" => ResourcePattern::Stream(
                        StreamName::parse(name).map_err(AclErrorKind::InvalidName)?,
                    ),
                    "cache" => ResourcePattern::Cache(
                        CacheName::parse(name).map_err(AclErrorKind::InvalidName)?,
                    ),
                    "secret" if name.split('/').any(|seg| seg == "+") => {
                        let (body, below) = match name.strip_suffix("/*") {
                            Some(b) => (b, true),
                            None => (name, false),
                        };
                        let segments = body
                            .split('/')
                            .map(|seg| match seg {
                                "+" => Ok(None),
                                _ => SecretPath::parse(seg)
                                    .map(|_| Some(seg.into()))
                                    .map_err(AclErrorKind::InvalidSecretPath),
                            })
                            .collect::<Result<Box<[_]>, _>>()?;
                        ResourcePattern::SecretGlob { segments, below }
                    }
                    "secret" => match name.strip_suffix("/*") {
                        Some(prefix) => ResourcePattern::SecretPrefix(
                            SecretPath::parse(prefix).map_err(AclErrorKind::InvalidSecretPath)?,
                        ),
                        None => ResourcePattern::Secret(
                            SecretPath::parse(name).map_err(AclErrorKind::InvalidSecretPath)?,
                        ),
                    },
                    "admin" => {
                        ResourcePattern::Admin(AdminArea::parse(name).ok_or_else(|| malformed(s))?)
                    }
                    _ => return Err(malformed(s)),
                }
            }
        };
        if scoped && pattern.tenant_wide_only() {
            return Err(AclErrorKind::OutOfScope(SECRET_AND_ADMIN_SCOPE));
        }
        Ok(pattern)
    }

    fn tenant_wide_only(&self) -> bool {
        matches!(
            self,
            ResourcePattern::SecretAll
                | ResourcePattern::SecretPrefix(_)
                | ResourcePattern::Secret(_)
                | ResourcePattern::SecretGlob { .. }
                | ResourcePattern::AdminAll
                | ResourcePattern::Admin(_)
        )
    }

    /// Whether the pattern covers `r`. The caller has already chosen the
    /// documents by tenant and namespace.
    pub(crate) fn matches(&self, r: &Resource) -> bool {
        match (self, r) {
            (ResourcePattern::Any, _)
            | (ResourcePattern::Namespace, Resource::Namespace(..))
            | (ResourcePattern::StreamAll, Resource::Stream(..))
            | (ResourcePattern::CacheAll, Resource::Cache(..))
            | (ResourcePattern::SecretAll, Resource::Secret(..))
            | (ResourcePattern::AdminAll, Resource::Admin(..)) => true,
            (ResourcePattern::Stream(want), Resource::Stream(_, _, s)) => want == s,
            (ResourcePattern::Cache(want), Resource::Cache(_, _, c)) => want == c,
            (ResourcePattern::Secret(want), Resource::Secret(_, p)) => want == p,
            (ResourcePattern::SecretPrefix(prefix), Resource::Secret(_, p)) => p.is_below(prefix),
            (ResourcePattern::SecretGlob { segments, below }, Resource::Secret(_, p)) => {
                let parts: Vec<&str> = p.as_str().split('/').collect();
                let fits = if *below {
                    parts.len() > segments.len()
                } else {
                    parts.len() == segments.len()
                };
                fits && segments
                    .iter()
                    .zip(&parts)
                    .all(|(want, got)| want.as_deref().is_none_or(|w| w == *got))
            }
            (ResourcePattern::Admin(want), Resource::Admin(_, a)) => want == a,
            _ => false,
        }
    }

    /// Higher is more specific: exact name, then longer prefix, then
    /// shorter prefix, then kind wildcard, then `*`.
    pub(crate) fn rank(&self) -> (u8, usize) {
        match self {
            ResourcePattern::Any => (0, 0),
            ResourcePattern::StreamAll
            | ResourcePattern::CacheAll
            | ResourcePattern::SecretAll
            | ResourcePattern::AdminAll => (1, 0),
            ResourcePattern::SecretPrefix(p) => (2, p.as_str().len()),
            // Between prefixes and exact names: ranked by their fixed text.
            ResourcePattern::SecretGlob { segments, .. } => {
                (2, segments.iter().flatten().map(|s| s.len() + 1).sum())
            }
            ResourcePattern::Namespace
            | ResourcePattern::Stream(_)
            | ResourcePattern::Cache(_)
            | ResourcePattern::Secret(_)
            | ResourcePattern::Admin(_) => (3, 0),
        }
    }

    /// The permissions that can mean something on what the pattern covers.
    pub(crate) fn applicable(&self, scoped: bool) -> PermSet {
        let kinds: &[Kind] = match self {
            ResourcePattern::Any if scoped => &[Kind::Namespace, Kind::Stream, Kind::Cache],
            ResourcePattern::Any => {
                return Permission::ALL.into_iter().collect();
            }
            ResourcePattern::Namespace => &[Kind::Namespace],
            ResourcePattern::StreamAll | ResourcePattern::Stream(_) => &[Kind::Stream],
            ResourcePattern::CacheAll | ResourcePattern::Cache(_) => &[Kind::Cache],
            ResourcePattern::SecretAll
            | ResourcePattern::SecretPrefix(_)
            | ResourcePattern::Secret(_)
            | ResourcePattern::SecretGlob { .. } => &[Kind::Secret],
            ResourcePattern::AdminAll => &[
                Kind::Admin(AdminArea::Keys),
                Kind::Admin(AdminArea::Acl),
                Kind::Admin(AdminArea::Audit),
                Kind::Admin(AdminArea::Tenant),
            ],
            ResourcePattern::Admin(a) => return Kind::Admin(*a).applicable(),
        };
        kinds
            .iter()
            .fold(PermSet::EMPTY, |set, k| set.union(k.applicable()))
    }
}

fn malformed(s: &str) -> AclErrorKind {
    AclErrorKind::MalformedResource(excerpt(s))
}

impl fmt::Display for ResourcePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResourcePattern::Any => f.write_str("*"),
            ResourcePattern::Namespace => f.write_str("namespace"),
            ResourcePattern::StreamAll => f.write_str("stream:*"),
            ResourcePattern::Stream(s) => write!(f, "stream:{s}"),
            ResourcePattern::CacheAll => f.write_str("cache:*"),
            ResourcePattern::Cache(c) => write!(f, "cache:{c}"),
            ResourcePattern::SecretAll => f.write_str("secret:*"),
            ResourcePattern::SecretPrefix(p) => write!(f, "secret:{p}/*"),
            ResourcePattern::Secret(p) => write!(f, "secret:{p}"),
            ResourcePattern::SecretGlob { segments, below } => {
                f.write_str("secret:")?;
                for (i, seg) in segments.iter().enumerate() {
                    if i > 0 {
                        f.write_str("/")?;
                    }
                    f.write_str(seg.as_deref().unwrap_or("+"))?;
                }
                if *below {
                    f.write_str("/*")?;
                }
                Ok(())
            }
            ResourcePattern::AdminAll => f.write_str("admin:*"),
            ResourcePattern::Admin(a) => write!(f, "admin:{a}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(s: &str) -> Resource {
        Resource::parse(s).unwrap()
    }

    #[test]
    fn patterns_print_as_written() {
        for s in [
            "*",
            "namespace",
            "stream:*",
            "stream:orders",
            "cache:*",
            "cache:sessions",
            "secret:*",
            "secret:db/*",
            "secret:db/password",
            "secret:billing/+/db",
            "secret:+/prod/*",
            "admin:*",
            "admin:keys",
        ] {
            assert_eq!(ResourcePattern::parse(s, false).unwrap().to_string(), s);
        }
        for s in [
            "*",
            "role:viewer",
            "service-account-publisher",
            "key-0123abcd",
        ] {
            assert_eq!(PrincipalPattern::parse(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn plus_matches_exactly_one_segment() {
        let p = |s: &str| ResourcePattern::parse(s, false).unwrap();
        let one = p("secret:billing/+/db");
        assert!(one.matches(&res("secret:acme/billing/prod/db")));
        assert!(one.matches(&res("secret:acme/billing/staging/db")));
        assert!(!one.matches(&res("secret:acme/billing/prod/api")));
        assert!(!one.matches(&res("secret:acme/billing/prod/x/db")));
        assert!(!one.matches(&res("secret:acme/web/prod/db")));
        let below = p("secret:+/prod/*");
        assert!(below.matches(&res("secret:acme/billing/prod/db")));
        assert!(below.matches(&res("secret:acme/web/prod/a/b")));
        assert!(
            !below.matches(&res("secret:acme/web/prod")),
            "strictly below"
        );
        assert!(!below.matches(&res("secret:acme/web/staging/db")));
        assert!(!below.matches(&res("stream:acme/prod/db")));
        // Exact names outrank globs, which outrank shorter prefixes.
        assert!(p("secret:billing/prod/db").rank() > one.rank());
        assert!(one.rank() > p("secret:billing/*").rank());
        for bad in [
            "secret:billing/+x/db",
            "secret:billing//+",
            "secret:+/../db",
        ] {
            assert!(ResourcePattern::parse(bad, false).is_err(), "{bad}");
        }
    }

    #[test]
    fn malformed_patterns() {
        for s in [
            "",
            "stream",
            "streams:x",
            "stream:",
            "stream:Orders",
            "stream:orders-*",
            "secret:",
            "secret:/*",
            "secret:a/../b",
            "secret:a/*/b",
            "admin:root",
            "tenant",
            "**",
        ] {
            assert!(ResourcePattern::parse(s, false).is_err(), "{s:?}");
        }
        for s in [
            "",
            "role:root",
            "role:",
            "a b",
            "svc-*",
            "é",
            &"p".repeat(257),
        ] {
            assert!(PrincipalPattern::parse(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn secret_and_admin_patterns_are_tenant_wide_only() {
        for s in ["secret:*", "secret:a", "secret:a/*", "admin:*", "admin:acl"] {
            assert!(matches!(
                ResourcePattern::parse(s, true),
                Err(AclErrorKind::OutOfScope(_))
            ));
        }
        assert!(ResourcePattern::parse("stream:x", true).is_ok());
    }

    #[test]
    fn matching() {
        let p = |s| ResourcePattern::parse(s, false).unwrap();
        let orders = res("stream:acme/prod/orders");
        assert!(p("stream:orders").matches(&orders));
        assert!(p("stream:*").matches(&orders));
        assert!(p("*").matches(&orders));
        assert!(!p("stream:order").matches(&orders));
        assert!(!p("cache:orders").matches(&orders));
        assert!(!p("namespace").matches(&orders));
        assert!(p("namespace").matches(&res("namespace:acme/prod")));
        let s = res("secret:acme/db/primary/password");
        assert!(p("secret:db/*").matches(&s));
        assert!(p("secret:db/primary/*").matches(&s));
        assert!(!p("secret:db/primary/password/*").matches(&s));
        assert!(!p("secret:d/*").matches(&s));
        assert!(p("secret:db/primary/password").matches(&s));
        assert!(p("admin:*").matches(&res("admin:acme/audit")));
        assert!(!p("admin:keys").matches(&res("admin:acme/audit")));
    }

    #[test]
    fn specificity_order() {
        let p = |s| ResourcePattern::parse(s, false).unwrap();
        let order = [
            "*",
            "secret:*",
            "secret:a/*",
            "secret:a/b/*",
            "secret:a/b/c",
        ];
        for w in order.windows(2) {
            assert!(p(w[0]).rank() < p(w[1]).rank(), "{} < {}", w[0], w[1]);
        }
        let pp = |s| PrincipalPattern::parse(s).unwrap().rank();
        assert!(pp("*") < pp("role:user") && pp("role:user") < pp("ci"));
    }

    #[test]
    fn applicability() {
        let ap = |s, scoped| {
            ResourcePattern::parse(s, scoped)
                .unwrap()
                .applicable(scoped)
        };
        assert!(ap("stream:x", false).contains(Permission::Publish));
        assert!(!ap("stream:x", false).contains(Permission::CacheRead));
        assert!(ap("*", false).contains(Permission::SecretRead));
        assert!(!ap("*", true).contains(Permission::SecretRead));
        assert!(!ap("*", true).contains(Permission::KeyAdmin));
        assert!(ap("admin:*", false).contains(Permission::AuditRead));
        assert!(ap("admin:*", false).intersect(Permission::ADMIN) != Permission::ADMIN);
        assert!(ap("secret:x", false)
            .intersect(Permission::ADMIN)
            .is_empty());
    }
}
