//! Typed records of the control plane, stored as JSON in a [`KvStore`].

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::kv::{KvStore, Op, StoreError, Table};

/// A tenant and whether it is allowed in. Kept in the clear: names are
/// routing metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRecord {
    pub name: String,
    pub disabled: bool,
    pub created_ms: u64,
    pub changed_ms: u64,
    /// Set when the tenant was erased: its keys are destroyed and the name
    /// is never reused.
    #[serde(default)]
    pub erased_ms: Option<u64>,
    /// Namespaces of the tenant that are disabled (incident containment):
    /// every request on them is refused until they are enabled again.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub disabled_namespaces: BTreeSet<String>,
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

/// A limit override for a tenant, or for one principal of it. The limits
/// themselves are kept as the admin API wrote them (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LimitRecord {
    pub tenant: String,
    pub principal: Option<String>,
    pub limits: serde_json::Value,
}

impl LimitRecord {
    pub fn key(&self) -> String {
        match &self.principal {
            Some(p) => format!("{}/{p}", self.tenant),
            None => self.tenant.clone(),
        }
    }
}

/// A declared stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamRecord {
    /// `tenant/namespace/stream`
    pub path: String,
    pub created_ms: u64,
    /// Present for a durable stream (stored as a log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub durable: Option<DurableSpec>,
}

/// How a durable stream stores and keeps its messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DurableSpec {
    /// `none`, `interval:MS` or `on_commit`.
    pub sync: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    /// Retention may delete messages consumers have not acknowledged.
    #[serde(default)]
    pub retention_overrides_consumers: bool,
    /// Payloads stored in clear (created under
    /// `dangerous_unsealed_streams`, for benchmarks).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unsealed: bool,
}

/// Encrypts tenant records: each tenant's with its own keys, bound to the
/// table and key it is stored under.
pub trait Sealer: Send + Sync + std::fmt::Debug {
    fn seal(
        &self,
        tenant: &str,
        table: Table,
        key: &str,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, StoreError>;
    fn open(
        &self,
        tenant: &str,
        table: Table,
        key: &str,
        sealed: &[u8],
    ) -> Result<Vec<u8>, StoreError>;
}

/// Envelope of a sealed record: `b"rsv1" | u8 tenant length | tenant |
/// sealed bytes`. The tenant name stays clear (it routes the record to its
/// keys); the sealer binds it, the table and the key, so an envelope moved
/// or relabelled does not open.
const SEALED_MAGIC: &[u8; 4] = b"rsv1";

/// Typed access to the control-plane tables.
#[derive(Debug, Clone)]
pub struct Catalog {
    kv: Arc<dyn KvStore>,
    sealer: Option<Arc<dyn Sealer>>,
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|e| StoreError(e.to_string()))
}

fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(b).map_err(|e| StoreError(format!("corrupt record: {e}")))
}

impl Catalog {
    /// A catalog that stores records in the clear (tests, tools).
    pub fn new(kv: Arc<dyn KvStore>) -> Self {
        Self { kv, sealer: None }
    }

    /// A catalog that seals every tenant record (keys, ACL documents,
    /// revocations, streams) with that tenant's keys.
    pub fn sealed(kv: Arc<dyn KvStore>, sealer: Arc<dyn Sealer>) -> Self {
        Self {
            kv,
            sealer: Some(sealer),
        }
    }

    /// Encodes a tenant record, sealed when this catalog seals.
    fn put_value<T: Serialize>(
        &self,
        tenant: &str,
        t: Table,
        key: &str,
        v: &T,
    ) -> Result<Vec<u8>, StoreError> {
        let plain = encode(v)?;
        let Some(sealer) = &self.sealer else {
            return Ok(plain);
        };
        let tb = tenant.as_bytes();
        let len = u8::try_from(tb.len()).map_err(|_| StoreError("tenant name too long".into()))?;
        let sealed = sealer.seal(tenant, t, key, &plain)?;
        let mut out = Vec::with_capacity(5 + tb.len() + sealed.len());
        out.extend_from_slice(SEALED_MAGIC);
        out.push(len);
        out.extend_from_slice(tb);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Decodes a record, opening it if sealed. A sealing catalog refuses
    /// records in the clear for sealed tables.
    fn get_value<T: DeserializeOwned>(
        &self,
        t: Table,
        key: &str,
        v: &[u8],
    ) -> Result<T, StoreError> {
        match (&self.sealer, v.strip_prefix(SEALED_MAGIC)) {
            (Some(sealer), Some(rest)) => {
                let (&len, rest) = rest
                    .split_first()
                    .ok_or_else(|| StoreError("truncated sealed record".into()))?;
                let len = usize::from(len);
                if rest.len() < len {
                    return Err(StoreError("truncated sealed record".into()));
                }
                let tenant = std::str::from_utf8(&rest[..len])
                    .map_err(|_| StoreError("bad tenant in sealed record".into()))?;
                decode(&sealer.open(tenant, t, key, &rest[len..])?)
            }
            // Tenant records, token revocations and meta values are kept in
            // the clear.
            (Some(_), None) if !matches!(t, Table::Tenants | Table::Revocations | Table::Meta) => {
                Err(StoreError(format!(
                    "record {}/{key} is not sealed",
                    t.name()
                )))
            }
            (None, Some(_)) => Err(StoreError(format!(
                "record {}/{key} is sealed and this catalog has no keys",
                t.name()
            ))),
            _ => decode(v),
        }
    }

    fn all<T: DeserializeOwned>(&self, t: Table, prefix: &str) -> Result<Vec<T>, StoreError> {
        self.kv
            .scan(t, prefix)?
            .iter()
            .map(|(k, v)| self.get_value(t, k, v))
            .collect()
    }

    fn one<T: DeserializeOwned>(&self, t: Table, key: &str) -> Result<Option<T>, StoreError> {
        self.kv
            .get(t, key)?
            .map(|v| self.get_value(t, key, &v))
            .transpose()
    }

    /// Writes every record of a tenant again, so each is sealed with the
    /// tenant's newest keys (after a key rotation). Returns how many.
    pub fn reseal_tenant(&self, tenant: &str) -> Result<usize, StoreError> {
        let keys = self.keys(Some(tenant))?;
        let refs: Vec<&KeyRecord> = keys.iter().collect();
        if !refs.is_empty() {
            self.put_keys(&refs)?;
        }
        let mut n = keys.len();
        for a in self.acls()?.into_iter().filter(|a| a.tenant == tenant) {
            self.put_acl(&a)?;
            n += 1;
        }
        for r in self.revocations()? {
            if matches!(&r.what, Revoked::Principal { tenant: t, .. } if t == tenant) {
                self.put_revocation(&r)?;
                n += 1;
            }
        }
        for st in self.streams(&format!("{tenant}/"))? {
            self.put_stream(&st)?;
            n += 1;
        }
        for l in self.limits()?.into_iter().filter(|l| l.tenant == tenant) {
            self.put_limits(&l)?;
            n += 1;
        }
        Ok(n)
    }

    // === limit overrides ===

    pub fn limits(&self) -> Result<Vec<LimitRecord>, StoreError> {
        self.all(Table::Limits, "")
    }

    pub fn put_limits(&self, r: &LimitRecord) -> Result<(), StoreError> {
        let key = r.key();
        let v = self.put_value(&r.tenant, Table::Limits, &key, r)?;
        self.kv.apply(vec![Op::Put(Table::Limits, key, v)])
    }

    pub fn delete_limits(&self, tenant: &str, principal: Option<&str>) -> Result<(), StoreError> {
        let key = match principal {
            Some(p) => format!("{tenant}/{p}"),
            None => tenant.to_string(),
        };
        self.kv.apply(vec![Op::Delete(Table::Limits, key)])
    }

    /// A small clear value in the meta table (timestamps, markers).
    pub fn meta_u64(&self, key: &str) -> Result<Option<u64>, StoreError> {
        self.one(Table::Meta, key)
    }

    pub fn put_meta_u64(&self, key: &str, v: u64) -> Result<(), StoreError> {
        self.kv
            .apply(vec![Op::Put(Table::Meta, key.to_string(), encode(&v)?)])
    }

    /// Deletes every record of a tenant in the sealed tables (erasure).
    pub fn delete_tenant_records(&self, tenant: &str) -> Result<usize, StoreError> {
        let mut ops = Vec::new();
        for k in self.keys(Some(tenant))? {
            ops.push(Op::Delete(Table::Keys, k.id));
        }
        for a in self.acls()?.into_iter().filter(|a| a.tenant == tenant) {
            ops.push(Op::Delete(
                Table::Acls,
                format!("{}/{}", a.tenant, a.namespace),
            ));
        }
        for r in self.revocations()? {
            let mine = match &r.what {
                Revoked::Token { .. } => false,
                Revoked::Principal { tenant: t, .. } => t == tenant,
            };
            if mine {
                ops.push(Op::Delete(Table::Revocations, r.key()));
            }
        }
        for st in self.streams(&format!("{tenant}/"))? {
            ops.push(Op::Delete(Table::Streams, st.path));
        }
        for l in self.limits()?.into_iter().filter(|l| l.tenant == tenant) {
            ops.push(Op::Delete(Table::Limits, l.key()));
        }
        let n = ops.len();
        if n > 0 {
            self.kv.apply(ops)?;
        }
        Ok(n)
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
            .map(|k| {
                Ok(Op::Put(
                    Table::Keys,
                    k.id.clone(),
                    self.put_value(&k.tenant, Table::Keys, &k.id, k)?,
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.kv.apply(ops)
    }

    // === ACL documents ===

    pub fn acls(&self) -> Result<Vec<AclRecord>, StoreError> {
        self.all(Table::Acls, "")
    }

    pub fn put_acl(&self, r: &AclRecord) -> Result<(), StoreError> {
        let key = format!("{}/{}", r.tenant, r.namespace);
        let v = self.put_value(&r.tenant, Table::Acls, &key, r)?;
        self.kv.apply(vec![Op::Put(Table::Acls, key, v)])
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
        let key = r.key();
        let v = match &r.what {
            Revoked::Principal { tenant, .. } => {
                self.put_value(tenant, Table::Revocations, &key, r)?
            }
            // A token id reveals nothing and must be checkable without
            // knowing its tenant.
            Revoked::Token { .. } => encode(r)?,
        };
        self.kv.apply(vec![Op::Put(Table::Revocations, key, v)])
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
        let tenant = r.path.split('/').next().unwrap_or_default();
        let v = self.put_value(tenant, Table::Streams, &r.path, r)?;
        self.kv
            .apply(vec![Op::Put(Table::Streams, r.path.clone(), v)])
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
            erased_ms: None,
            disabled_namespaces: ["prod".to_string()].into(),
        })
        .unwrap();
        let t = c.tenant("acme").unwrap().unwrap();
        assert!(t.disabled);
        assert!(t.disabled_namespaces.contains("prod"));
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
            durable: None,
        })
        .unwrap();
        let durable = StreamRecord {
            path: "acme/p/log".into(),
            created_ms: 2,
            durable: Some(DurableSpec {
                sync: "interval:50".into(),
                max_age_ms: Some(1000),
                max_bytes: None,
                retention_overrides_consumers: true,
                unsealed: false,
            }),
        };
        c.put_stream(&durable).unwrap();
        assert_eq!(c.streams("acme/p/log").unwrap(), vec![durable]);
        assert_eq!(c.streams("acme/").unwrap().len(), 2);
        assert!(c.streams("globex/").unwrap().is_empty());
    }
}

#[cfg(test)]
mod sealed_tests {
    use super::*;
    use crate::RedbStore;

    /// A toy sealer for the envelope logic only: XOR with a per-tenant byte
    /// and a check byte bound to table and key. The real one is AES-GCM in
    /// rampart-keys; here we test what the catalog does around it.
    #[derive(Debug)]
    struct Toy;

    fn tag(tenant: &str, table: Table, key: &str) -> u8 {
        format!("{tenant}|{}|{key}", table.name())
            .bytes()
            .fold(7u8, |a, b| a.wrapping_mul(31).wrapping_add(b))
    }

    impl Sealer for Toy {
        fn seal(
            &self,
            tenant: &str,
            table: Table,
            key: &str,
            p: &[u8],
        ) -> Result<Vec<u8>, StoreError> {
            let mut v: Vec<u8> = p.iter().map(|b| b ^ 0x5a).collect();
            v.push(tag(tenant, table, key));
            Ok(v)
        }
        fn open(
            &self,
            tenant: &str,
            table: Table,
            key: &str,
            s: &[u8],
        ) -> Result<Vec<u8>, StoreError> {
            let (last, body) = s.split_last().ok_or_else(|| StoreError("empty".into()))?;
            if *last != tag(tenant, table, key) {
                return Err(StoreError("does not open".into()));
            }
            Ok(body.iter().map(|b| b ^ 0x5a).collect())
        }
    }

    #[test]
    fn records_are_sealed_and_bound_to_their_place() {
        let dir = tempfile::tempdir().unwrap();
        let kv: Arc<dyn KvStore> = Arc::new(RedbStore::open(&dir.path().join("s.redb")).unwrap());
        let c = Catalog::sealed(kv.clone(), Arc::new(Toy));
        let acl = AclRecord {
            tenant: "acme".into(),
            namespace: "prod".into(),
            document: "CANARY-DOC".into(),
            updated_ms: 1,
        };
        c.put_acl(&acl).unwrap();
        assert_eq!(c.acls().unwrap(), vec![acl]);
        let raw = kv.get(Table::Acls, "acme/prod").unwrap().unwrap();
        assert!(raw.starts_with(SEALED_MAGIC));
        assert!(!String::from_utf8_lossy(&raw).contains("CANARY-DOC"));
        // Moved under another key: refused.
        kv.apply(vec![Op::Put(
            Table::Acls,
            "acme/staging".into(),
            raw.clone(),
        )])
        .unwrap();
        assert!(c.acls().is_err());
        kv.apply(vec![Op::Delete(Table::Acls, "acme/staging".into())])
            .unwrap();
        // A clear record where a sealed one belongs: refused.
        kv.apply(vec![Op::Put(Table::Acls, "acme/x".into(), b"{}".to_vec())])
            .unwrap();
        assert!(c.acls().is_err());
        // Erasing a tenant's records.
        kv.apply(vec![Op::Delete(Table::Acls, "acme/x".into())])
            .unwrap();
        assert_eq!(c.delete_tenant_records("acme").unwrap(), 1);
        assert!(c.acls().unwrap().is_empty());
    }

    #[test]
    fn meta_values_read_back_through_a_sealing_catalog() {
        let dir = tempfile::tempdir().unwrap();
        let kv: Arc<dyn KvStore> = Arc::new(RedbStore::open(&dir.path().join("s.redb")).unwrap());
        let c = Catalog::sealed(kv, Arc::new(Toy));
        c.put_meta_u64("key_rotation/acme", 42).unwrap();
        assert_eq!(c.meta_u64("key_rotation/acme").unwrap(), Some(42));
        assert_eq!(c.meta_u64("renew/none").unwrap(), None);
    }
}
