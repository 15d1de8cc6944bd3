//! The identity a ciphertext is bound to, and its canonical encoding.

use crate::error::KeyError;
use crate::records::esc;

/// Which data key seals a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum KeyScope {
    /// One data key per tenant and kind, shared by every resource of that
    /// kind. Destroyed with the tenant.
    #[default]
    Kind,
    /// A data key of the resource's own (namespace, kind, name), which
    /// [`crate::TenantKeys::erase_resource`] destroys alone (stream-level
    /// erasure).
    Resource,
}

/// Where a sealed value belongs. Every field is bound into the ciphertext:
/// opening it under any other identity fails with [`KeyError::Tampered`].
///
/// `part` tells apart the pieces of one resource (a block number, a record
/// version). The version of the data key is bound as well, by
/// [`crate::TenantKeys::seal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Aad<'a> {
    pub tenant: &'a str,
    pub namespace: &'a str,
    pub kind: &'a str,
    pub name: &'a str,
    pub part: u64,
    pub scope: KeyScope,
}

/// Tags the encoding so that it can never equal another structure's.
const AAD_DOMAIN: &[u8] = b"rampart-aad/1";

impl<'a> Aad<'a> {
    /// An identity sealed with the tenant's data key for `kind`
    /// ([`KeyScope::Kind`]).
    pub fn new(
        tenant: &'a str,
        namespace: &'a str,
        kind: &'a str,
        name: &'a str,
        part: u64,
    ) -> Self {
        Self {
            tenant,
            namespace,
            kind,
            name,
            part,
            scope: KeyScope::Kind,
        }
    }

    /// The same identity, sealed with a data key of the given scope.
    pub fn with_scope(mut self, scope: KeyScope) -> Self {
        self.scope = scope;
        self
    }

    /// The bytes authenticated with the data: a domain tag, the scope, every
    /// text field with a length prefix (so `("ab", "c")` and `("a", "bc")`
    /// differ), the part and the data key version.
    pub(crate) fn encode(&self, key_version: u32) -> Vec<u8> {
        let fields = [self.tenant, self.namespace, self.kind, self.name];
        let len = AAD_DOMAIN.len() + 1 + fields.iter().map(|f| 8 + f.len()).sum::<usize>() + 12;
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(AAD_DOMAIN);
        out.push(match self.scope {
            KeyScope::Kind => 1,
            KeyScope::Resource => 2,
        });
        for f in fields {
            out.extend_from_slice(&(f.len() as u64).to_be_bytes());
            out.extend_from_slice(f.as_bytes());
        }
        out.extend_from_slice(&self.part.to_be_bytes());
        out.extend_from_slice(&key_version.to_be_bytes());
        out
    }

    /// The data key's name within the tenant: `k/<kind>` or
    /// `r/<namespace>/<kind>/<name>`, each part escaped.
    pub(crate) fn scope_id(&self) -> Result<String, KeyError> {
        let nonempty = |what, s: &str| {
            if s.is_empty() {
                Err(KeyError::InvalidName {
                    what,
                    reason: "empty",
                })
            } else {
                Ok(())
            }
        };
        nonempty("kind", self.kind)?;
        match self.scope {
            KeyScope::Kind => Ok(format!("k/{}", esc(self.kind))),
            KeyScope::Resource => {
                nonempty("namespace", self.namespace)?;
                nonempty("name", self.name)?;
                Ok(resource_scope_id(self.namespace, self.kind, self.name))
            }
        }
    }
}

pub(crate) fn resource_scope_id(namespace: &str, kind: &str, name: &str) -> String {
    format!("r/{}/{}/{}", esc(namespace), esc(kind), esc(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_is_unambiguous() {
        let a = Aad::new("t", "ab", "c", "n", 1);
        let b = Aad::new("t", "a", "bc", "n", 1);
        assert_ne!(a.encode(1), b.encode(1));
        assert_ne!(a.encode(1), a.encode(2));
        assert_ne!(a.encode(1), Aad { part: 2, ..a }.encode(1));
        assert_ne!(a.encode(1), a.with_scope(KeyScope::Resource).encode(1));
        assert_eq!(a.encode(7).len(), AAD_DOMAIN.len() + 1 + 4 * 8 + 5 + 12);
    }

    #[test]
    fn scope_ids_are_escaped_and_checked() {
        let a = Aad::new("t", "ns/x", "stream", "a b", 0);
        assert_eq!(a.scope_id().unwrap(), "k/stream");
        assert_eq!(
            a.with_scope(KeyScope::Resource).scope_id().unwrap(),
            "r/ns%2Fx/stream/a%20b"
        );
        assert!(Aad::new("t", "n", "", "x", 0).scope_id().is_err());
        assert!(Aad::new("t", "", "k", "x", 0)
            .with_scope(KeyScope::Resource)
            .scope_id()
            .is_err());
    }
}
