//! Typed records of the control plane, stored as JSON in a [`KvStore`].

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::kv::{KvStore, Op, StoreError, Table};

/// A tenant and whether it is allowed in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRecord {
    pub name: String,
    pub disabled: bool,
    pub created_ms: u64,
    pub changed_ms: u64,
}

/// A managed API key. Only the peppered hash of the secret is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Public key id (the part of the key between the prefix and the secret).
    pub id: String,
    pub tenant: String,
    /// Principal name the key authenticates as.
    pub name: String,
    pub roles: Vec<String>,
    /// `hmac-sha256:<hex>` of the whole key.
    pub hash: String,
    pub created_ms: u64,
    pub expires_ms: Option<u64>,
    pub revoked_ms: Option<u64>,
    /// Set when the key was rotated: the id of its successor.
    pub rotated_to: Option<String>,
}

impl KeyRecord {
    /// Whether the key may authenticate at `now_ms`.
    pub fn usable(&self, now_ms: u64) -> bool {
        self.revoked_ms.is_none_or(|r| now_ms < r) && self.expires_ms.is_none_or(|e| now_ms < e)
    }
}

/// An ACL document as applied, for one tenant and namespace (`*` = whole
/// tenant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclRecord {
    pub tenant: String,
    pub namespace: String,
    /// The document text (YAML).
    pub document: String,
    pub updated_ms: u64,
}

/// What a revocation applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Revoked {
    /// One token, by id.
    Token { id: String },
    /// Every token issued to a principal before `at_ms`.
    Principal { tenant: String, principal: String },
}

/// A revocation, kept until the longest-lived thing it revokes has expired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub what: Revoked,
    pub at_ms: u64,
    pub until_ms: u64,
}

impl Revocation {
    fn key(&self) -> String {
        match &self.what {
            Revoked::Token { id } => format!("tok/{id}"),
            Revoked::Principal { tenant, principal } => format!("pri/{tenant}/{principal}"),
        }
    }
}

/// A declared stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamRecord {
    /// `tenant/namespace/stream`
    pub path: String,
    pub created_ms: u64,
}

/// Typed access to the control-plane tables.
#[derive(Debug, Clone)]
pub struct Catalog {
    kv: Arc<dyn KvStore>,
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|e| StoreError(e.to_string()))
}

fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(b).map_err(|e| StoreError(format!("corrupt record: {e}")))
}

impl Catalog {
    pub fn new(kv: Arc<dyn KvStore>) -> Self {
        Self { kv }
    }

    fn all<T: DeserializeOwned>(&self, t: Table, prefix: &str) -> Result<Vec<T>, StoreError> {
        self.kv
            .scan(t, prefix)?
            .iter()
            .map(|(_, v)| decode(v))
            .collect()
    }

    fn one<T: DeserializeOwned>(&self, t: Table, key: &str) -> Result<Option<T>, StoreError> {
        self.kv.get(t, key)?.map(|v| decode(&v)).transpose()
    }

    // === tenants ===

    pub fn tenants(&self) -> Result<Vec<TenantRecord>, StoreError> {
        self.all(Table::Tenants, "")
    }

    pub fn tenant(&self, name: &str) -> Result<Option<TenantRecord>, StoreError> {
        self.one(Table::Tenants, name)
    }

    pub fn put_tenant(&self, r: &TenantRecord) -> Result<(), StoreError> {
        self.kv
            .apply(vec![Op::Put(Table::Tenants, r.name.clone(), encode(r)?)])
    }

    // === keys ===

    pub fn keys(&self, tenant: Option<&str>) -> Result<Vec<KeyRecord>, StoreError> {
        let all: Vec<KeyRecord> = self.all(Table::Keys, "")?;
        Ok(all
            .into_iter()
            .filter(|k| tenant.is_none_or(|t| k.tenant == t))
            .collect())
    }

    pub fn key(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        self.one(Table::Keys, id)
    }

    /// Writes several keys atomically (a rotation writes two).
    pub fn put_keys(&self, keys: &[&KeyRecord]) -> Result<(), StoreError> {
        let ops = keys
            .iter()
            .map(|k| Ok(Op::Put(Table::Keys, k.id.clone(), encode(k)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.kv.apply(ops)
    }

    // === ACL documents ===

    pub fn acls(&self) -> Result<Vec<AclRecord>, StoreError> {
        self.all(Table::Acls, "")
    }

    pub fn put_acl(&self, r: &AclRecord) -> Result<(), StoreError> {
        let key = format!("{}/{}", r.tenant, r.namespace);
        self.kv.apply(vec![Op::Put(Table::Acls, key, encode(r)?)])
    }

    pub fn delete_acl(&self, tenant: &str, namespace: &str) -> Result<(), StoreError> {
        self.kv.apply(vec![Op::Delete(
            Table::Acls,
            format!("{tenant}/{namespace}"),
        )])
    }

    // === revocations ===

    pub fn revocations(&self) -> Result<Vec<Revocation>, StoreError> {
        self.all(Table::Revocations, "")
    }

    pub fn put_revocation(&self, r: &Revocation) -> Result<(), StoreError> {
        self.kv
            .apply(vec![Op::Put(Table::Revocations, r.key(), encode(r)?)])
    }

    /// Forgets revocations whose subject has expired anyway.
    pub fn prune_revocations(&self, now_ms: u64) -> Result<usize, StoreError> {
        let old: Vec<Op> = self
            .revocations()?
            .into_iter()
            .filter(|r| r.until_ms <= now_ms)
            .map(|r| Op::Delete(Table::Revocations, r.key()))
            .collect();
        let n = old.len();
        if n > 0 {
            self.kv.apply(old)?;
        }
        Ok(n)
    }

    // === streams ===

    pub fn streams(&self, prefix: &str) -> Result<Vec<StreamRecord>, StoreError> {
        self.all(Table::Streams, prefix)
    }

    pub fn put_stream(&self, r: &StreamRecord) -> Result<(), StoreError> {
        self.kv
            .apply(vec![Op::Put(Table::Streams, r.path.clone(), encode(r)?)])
    }

    pub fn delete_stream(&self, path: &str) -> Result<(), StoreError> {
        self.kv
            .apply(vec![Op::Delete(Table::Streams, path.to_string())])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RedbStore;

    fn catalog() -> (tempfile::TempDir, Catalog) {
        let dir = tempfile::tempdir().unwrap();
        let kv = RedbStore::open(&dir.path().join("s.redb")).unwrap();
        (dir, Catalog::new(Arc::new(kv)))
    }

    fn key(id: &str, tenant: &str) -> KeyRecord {
        KeyRecord {
            id: id.into(),
            tenant: tenant.into(),
            name: "ci".into(),
            roles: vec!["user".into()],
            hash: "hmac-sha256:00".into(),
            created_ms: 1,
            expires_ms: None,
            revoked_ms: None,
            rotated_to: None,
        }
    }

    #[test]
    fn keys_by_tenant_and_usability() {
        let (_d, c) = catalog();
        let mut a = key("k1", "acme");
        let b = key("k2", "globex");
        c.put_keys(&[&a, &b]).unwrap();
        assert_eq!(c.keys(Some("acme")).unwrap(), vec![a.clone()]);
        assert_eq!(c.keys(None).unwrap().len(), 2);
        assert!(a.usable(5));
        a.revoked_ms = Some(10);
        assert!(a.usable(9) && !a.usable(10));
        a.revoked_ms = None;
        a.expires_ms = Some(3);
        assert!(!a.usable(3));
    }

    #[test]
    fn revocations_are_pruned_after_their_subject_expires() {
        let (_d, c) = catalog();
        c.put_revocation(&Revocation {
            what: Revoked::Token { id: "t1".into() },
            at_ms: 1,
            until_ms: 100,
        })
        .unwrap();
        c.put_revocation(&Revocation {
            what: Revoked::Principal {
                tenant: "acme".into(),
                principal: "ci".into(),
            },
            at_ms: 1,
            until_ms: 500,
        })
        .unwrap();
        assert_eq!(c.prune_revocations(200).unwrap(), 1);
        assert_eq!(c.revocations().unwrap().len(), 1);
    }

    #[test]
    fn tenants_acls_streams() {
        let (_d, c) = catalog();
        c.put_tenant(&TenantRecord {
            name: "acme".into(),
            disabled: true,
            created_ms: 1,
            changed_ms: 2,
        })
        .unwrap();
        assert!(c.tenant("acme").unwrap().unwrap().disabled);
        c.put_acl(&AclRecord {
            tenant: "acme".into(),
            namespace: "*".into(),
            document: "kind: ACL".into(),
            updated_ms: 3,
        })
        .unwrap();
        assert_eq!(c.acls().unwrap().len(), 1);
        c.delete_acl("acme", "*").unwrap();
        assert!(c.acls().unwrap().is_empty());
        c.put_stream(&StreamRecord {
            path: "acme/p/s".into(),
            created_ms: 1,
        })
        .unwrap();
        assert_eq!(c.streams("acme/").unwrap().len(), 1);
        assert!(c.streams("globex/").unwrap().is_empty());
    }
}
