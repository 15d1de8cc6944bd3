//! The decision: a pure, deny-by-default function over a policy, a subject,
//! a resource and a permission.

use std::fmt;
use std::sync::Arc;

use rampart_proto::{NamespaceName, TenantId};

use crate::document::{Effect, Rule};
use crate::permission::Permission;
use crate::policy::Policy;
use crate::resource::Resource;
use crate::role::{Role, Subject};

/// The outcome of [`decide`]: allowed or not, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Decision {
    pub allowed: bool,
    pub reason: Reason,
}

/// Why a decision came out the way it did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// The resource belongs to another tenant than the subject's. Denied
    /// whatever the rules say.
    CrossTenant,
    /// No rule and no role allows it: denied by default.
    NoRule,
    /// This rule decided: the most specific matching deny rule for a
    /// denial, else the most specific matching allow rule.
    Rule(RuleRef),
    /// No rule matched, and this built-in role allows it (the least
    /// powerful of the subject's roles that does).
    Role(Role),
}

impl Reason {
    /// A stable short name for logs and metrics labels: `cross_tenant`,
    /// `no_rule`, `allow_rule`, `deny_rule` or `role`.
    pub fn code(&self) -> &'static str {
        match self {
            Reason::CrossTenant => "cross_tenant",
            Reason::NoRule => "no_rule",
            Reason::Rule(r) if r.effect() == Effect::Deny => "deny_rule",
            Reason::Rule(_) => "allow_rule",
            Reason::Role(_) => "role",
        }
    }
}

impl Decision {
    fn allow(reason: Reason) -> Decision {
        Decision {
            allowed: true,
            reason,
        }
    }

    fn deny(reason: Reason) -> Decision {
        Decision {
            allowed: false,
            reason,
        }
    }
}

/// Reads as one line of `rampart acl explain`, e.g.
/// `allow: rule 2 of acme/production: principal=ci resource=stream:orders permissions=[publish]`.
impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.allowed { "allow: " } else { "deny: " })?;
        match &self.reason {
            Reason::CrossTenant => f.write_str("the resource belongs to another tenant"),
            Reason::NoRule => f.write_str("no rule or role allows it (deny by default)"),
            Reason::Rule(r) => write!(f, "{r}"),
            Reason::Role(r) => write!(f, "role {r} (built-in, tenant-wide)"),
        }
    }
}

// === impl RuleRef ===

/// Which rule of which document decided, with a printable form of it.
///
/// Rule numbers are 0-based positions in the document's `spec.rules`, as in
/// [`AclError`](crate::AclError). Cloning is cheap (reference counted).
#[derive(Clone, PartialEq, Eq)]
pub struct RuleRef(Arc<RuleRefInner>);

#[derive(PartialEq, Eq)]
struct RuleRefInner {
    tenant: TenantId,
    namespace: Option<NamespaceName>,
    index: usize,
    effect: Effect,
    rule: Box<str>,
}

impl RuleRef {
    pub(crate) fn new(
        tenant: TenantId,
        namespace: Option<NamespaceName>,
        index: usize,
        effect: Effect,
        rule: String,
    ) -> RuleRef {
        RuleRef(Arc::new(RuleRefInner {
            tenant,
            namespace,
            index,
            effect,
            rule: rule.into(),
        }))
    }

    /// The tenant of the rule's document.
    pub fn tenant(&self) -> &TenantId {
        &self.0.tenant
    }

    /// The namespace of the rule's document; `None` for a tenant-wide one.
    pub fn namespace(&self) -> Option<&NamespaceName> {
        self.0.namespace.as_ref()
    }

    /// The rule's 0-based position in `spec.rules`.
    pub fn index(&self) -> usize {
        self.0.index
    }

    pub fn effect(&self) -> Effect {
        self.0.effect
    }

    /// The rule as `principal=P resource=R permissions=[A, B]`.
    pub fn rule(&self) -> &str {
        &self.0.rule
    }
}

/// `rule 2 of acme/production: principal=ci resource=stream:orders permissions=[publish]`;
/// a tenant-wide document prints as `acme/*`.
impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rule {} of {}/", self.index(), self.tenant())?;
        match self.namespace() {
            Some(n) => write!(f, "{n}")?,
            None => f.write_str("*")?,
        }
        write!(f, ": {}", self.rule())
    }
}

impl fmt::Debug for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RuleRef({} {self})", self.effect())
    }
}

// === decide ===

/// How specific a matching rule is; larger is more specific. Compared
/// field by field: the resource pattern first, then the document (a
/// namespace document beats the tenant-wide one), then the principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Specificity {
    resource: (u8, usize),
    namespaced_document: bool,
    principal: u8,
}

/// Decides whether `subject` may do `permission` on `resource`.
///
/// 1. A resource of another tenant is denied ([`Reason::CrossTenant`]).
/// 2. The rules considered are those of the tenant-wide document and, for
///    a stream, cache or namespace, of the resource's namespace document.
/// 3. Any matching deny rule denies; the most specific one is reported.
/// 4. Otherwise a matching allow rule (the most specific is reported) or a
///    built-in role of the subject allows.
/// 5. Otherwise denied ([`Reason::NoRule`]).
///
/// Ties in specificity go to the rule that comes first in its document.
pub fn decide(
    policy: &Policy,
    subject: &Subject,
    resource: &Resource,
    permission: Permission,
) -> Decision {
    let tenant = resource.tenant();
    if subject.tenant != *tenant {
        return Decision::deny(Reason::CrossTenant);
    }
    let roles = subject.role_set();
    let mut best_allow: Option<(Specificity, &Rule)> = None;
    let mut best_deny: Option<(Specificity, &Rule)> = None;
    let [whole, namespaced] = policy.documents_for(tenant, resource.namespace());
    let documents = [(false, whole), (true, namespaced)];
    for (namespaced_document, doc) in documents {
        let Some(doc) = doc else { continue };
        for rule in doc.rules() {
            if !rule.permissions.contains(permission)
                || !rule.resource.matches(resource)
                || !rule.principal.matches(&subject.principal, roles)
            {
                continue;
            }
            let spec = Specificity {
                resource: rule.resource.rank(),
                namespaced_document,
                principal: rule.principal.rank(),
            };
            let best = match rule.effect {
                Effect::Allow => &mut best_allow,
                Effect::Deny => &mut best_deny,
            };
            if best.is_none_or(|(s, _)| spec > s) {
                *best = Some((spec, rule));
            }
        }
    }
    if let Some((_, rule)) = best_deny {
        return Decision::deny(Reason::Rule(rule.reference.clone()));
    }
    if let Some((_, rule)) = best_allow {
        return Decision::allow(Reason::Rule(rule.reference.clone()));
    }
    match roles.granting(permission) {
        Some(role) => Decision::allow(Reason::Role(role)),
        None => Decision::deny(Reason::NoRule),
    }
}

#[cfg(test)]
mod tests;
