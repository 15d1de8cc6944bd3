//! The policy: every applied ACL document, keyed by tenant and namespace.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use rampart_proto::{NamespaceName, TenantId};

use crate::document::AclDocument;

/// Generations come from one process-wide counter, so two policies never
/// share a generation once either has changed: a [`DecisionCache`] handed a
/// different policy by mistake still sees a change and refills.
///
/// [`DecisionCache`]: crate::DecisionCache
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

/// The set of ACL documents in force.
///
/// At most one document per (tenant, namespace) and one tenant-wide
/// document per tenant. Plain data: the server owns it (typically behind a
/// lock or as a swapped snapshot) and passes it to [`decide`](crate::decide).
#[derive(Debug, Clone, Default)]
pub struct Policy {
    tenants: BTreeMap<TenantId, TenantDocuments>,
    generation: u64,
}

#[derive(Debug, Clone, Default)]
struct TenantDocuments {
    whole: Option<AclDocument>,
    namespaces: BTreeMap<NamespaceName, AclDocument>,
}

impl TenantDocuments {
    fn is_empty(&self) -> bool {
        self.whole.is_none() && self.namespaces.is_empty()
    }
}

impl Policy {
    /// An empty policy: every request is decided by roles alone.
    pub fn new() -> Policy {
        Policy::default()
    }

    /// Increases on every change. Starts at 0; successive values are not
    /// consecutive.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Puts `doc` in force, replacing (and returning) the document with the
    /// same tenant and namespace.
    ///
    /// Authorize the caller first: applying needs `acl_admin` on
    /// `Resource::Admin(doc.tenant(), AdminArea::Acl)`.
    pub fn apply(&mut self, doc: AclDocument) -> Option<AclDocument> {
        let docs = self.tenants.entry(doc.tenant().clone()).or_default();
        let old = match doc.namespace() {
            None => docs.whole.replace(doc),
            Some(n) => docs.namespaces.insert(n.clone(), doc),
        };
        self.bump();
        old
    }

    /// Takes the document for `tenant` and `namespace` (`None`: the
    /// tenant-wide one) out of force. Changes the generation only if there
    /// was one.
    pub fn remove(
        &mut self,
        tenant: &TenantId,
        namespace: Option<&NamespaceName>,
    ) -> Option<AclDocument> {
        let docs = self.tenants.get_mut(tenant)?;
        let old = match namespace {
            None => docs.whole.take(),
            Some(n) => docs.namespaces.remove(n),
        }?;
        if docs.is_empty() {
            self.tenants.remove(tenant);
        }
        self.bump();
        Some(old)
    }

    /// The document for `tenant` and `namespace` (`None`: tenant-wide).
    pub fn document(
        &self,
        tenant: &TenantId,
        namespace: Option<&NamespaceName>,
    ) -> Option<&AclDocument> {
        let docs = self.tenants.get(tenant)?;
        match namespace {
            None => docs.whole.as_ref(),
            Some(n) => docs.namespaces.get(n),
        }
    }

    /// Every document, by tenant, tenant-wide first, then by namespace.
    pub fn documents(&self) -> impl Iterator<Item = &AclDocument> {
        self.tenants
            .values()
            .flat_map(|d| d.whole.iter().chain(d.namespaces.values()))
    }

    /// The tenant-wide document and the namespace document that a resource
    /// of `tenant` in `namespace` is subject to.
    pub(crate) fn documents_for(
        &self,
        tenant: &TenantId,
        namespace: Option<&NamespaceName>,
    ) -> [Option<&AclDocument>; 2] {
        let Some(docs) = self.tenants.get(tenant) else {
            return [None, None];
        };
        [
            docs.whole.as_ref(),
            namespace.and_then(|n| docs.namespaces.get(n)),
        ]
    }

    fn bump(&mut self) {
        self.generation = NEXT_GENERATION.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(tenant: &str, ns: Option<&str>, principal: &str) -> AclDocument {
        let ns = ns
            .map(|n| format!("\n  namespace: {n}"))
            .unwrap_or_default();
        let yaml = format!(
            "apiVersion: rampart.io/v1\nkind: ACL\nmetadata:\n  tenant: {tenant}{ns}\nspec:\n  rules:\n    - principal: {principal}\n      resource: \"stream:*\"\n      permissions: [publish]\n"
        );
        AclDocument::parse_yaml(&yaml).unwrap().remove(0)
    }

    #[test]
    fn apply_replaces_by_tenant_and_namespace() {
        let mut p = Policy::new();
        assert_eq!(p.generation(), 0);
        assert!(p.apply(doc("acme", None, "a")).is_none());
        let g1 = p.generation();
        assert!(g1 > 0);
        assert!(p.apply(doc("acme", Some("prod"), "b")).is_none());
        assert!(p.apply(doc("globex", None, "c")).is_none());
        let old = p.apply(doc("acme", Some("prod"), "d")).unwrap();
        assert_eq!(old, doc("acme", Some("prod"), "b"));
        assert!(p.generation() > g1);
        // "*" is the same key as an absent namespace.
        let old = p.apply(doc("acme", Some("\"*\""), "e")).unwrap();
        assert_eq!(old, doc("acme", None, "a"));
        assert_eq!(p.documents().count(), 3);
        let acme = TenantId::parse("acme").unwrap();
        let prod = NamespaceName::parse("prod").unwrap();
        assert_eq!(
            p.document(&acme, Some(&prod)),
            Some(&doc("acme", Some("prod"), "d"))
        );
    }

    #[test]
    fn remove_changes_generation_only_when_something_goes() {
        let mut p = Policy::new();
        p.apply(doc("acme", Some("prod"), "a"));
        let acme = TenantId::parse("acme").unwrap();
        let prod = NamespaceName::parse("prod").unwrap();
        let g = p.generation();
        assert!(p.remove(&acme, None).is_none());
        assert_eq!(p.generation(), g);
        assert!(p.remove(&acme, Some(&prod)).is_some());
        assert!(p.generation() > g);
        assert_eq!(p.documents().count(), 0);
        assert!(p.tenants.is_empty());
    }

    #[test]
    fn clones_diverge_in_generation() {
        let mut a = Policy::new();
        a.apply(doc("acme", None, "a"));
        let mut b = a.clone();
        assert_eq!(a.generation(), b.generation());
        a.apply(doc("acme", None, "x"));
        b.apply(doc("acme", None, "y"));
        assert_ne!(a.generation(), b.generation());
    }
}
