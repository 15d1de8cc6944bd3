//! Typed records of the control plane, stored as JSON in a [`KvStore`].
//! Every write also appends its [`Event`] to the journal in the same batch
//! (see `journal`), so the journal and the tables cannot disagree after a
//! crash.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::journal::{
    self, Difference, Event, Projection, Replay, SnapshotRecord, Until, PROJECTED_TABLES,
};
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

impl AclRecord {
    /// `tenant/namespace`, its key in the store.
    pub fn key(&self) -> String {
        format!("{}/{}", self.tenant, self.namespace)
    }
}

impl Revocation {
    /// `tok/<id>` or `pri/<tenant>/<principal>`, its key in the store.
    pub fn key(&self) -> String {
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
        Self::key_of(&self.tenant, self.principal.as_deref())
    }

    /// The key of the override of `tenant`, or of one principal of it.
    pub fn key_of(tenant: &str, principal: Option<&str>) -> String {
        match principal {
            Some(p) => format!("{tenant}/{p}"),
            None => tenant.to_string(),
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
        self.commit(
            vec![Op::Put(Table::Limits, key, v)],
            vec![Event::PutLimits { record: r.clone() }],
        )
    }

    pub fn delete_limits(&self, tenant: &str, principal: Option<&str>) -> Result<(), StoreError> {
        self.commit(
            vec![Op::Delete(
                Table::Limits,
                LimitRecord::key_of(tenant, principal),
            )],
            vec![Event::DeleteLimits {
                tenant: tenant.to_string(),
                principal: principal.map(str::to_string),
            }],
        )
    }

    /// A small clear value in the meta table (timestamps, markers).
    pub fn meta_u64(&self, key: &str) -> Result<Option<u64>, StoreError> {
        self.one(Table::Meta, key)
    }

    /// Keys under `keyring/` are the keyring's and refused here.
    pub fn put_meta_u64(&self, key: &str, v: u64) -> Result<(), StoreError> {
        if !journal::projected(Table::Meta, key) {
            return Err(StoreError(format!("meta key {key} is not the catalog's")));
        }
        self.commit(
            vec![Op::Put(Table::Meta, key.to_string(), encode(&v)?)],
            vec![Event::PutMeta {
                key: key.to_string(),
                value: v,
            }],
        )
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
            let deleted = ops
                .iter()
                .filter_map(|op| match op {
                    Op::Delete(t, k) => Some((t.name().to_string(), k.clone())),
                    Op::Put(..) => None,
                })
                .collect();
            self.commit(
                ops,
                vec![Event::DeleteTenantRecords {
                    tenant: tenant.to_string(),
                    deleted,
                }],
            )?;
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
        self.commit(
            vec![Op::Put(Table::Tenants, r.name.clone(), encode(r)?)],
            vec![Event::PutTenant { record: r.clone() }],
        )
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
        if ops.is_empty() {
            return Ok(());
        }
        // One event per tenant, each sealed with that tenant's keys.
        let mut by_tenant: Vec<Event> = Vec::new();
        for k in keys {
            match by_tenant
                .iter_mut()
                .find(|e| e.seal_tenant() == Some(&k.tenant))
            {
                Some(Event::PutKeys { records }) => records.push((*k).clone()),
                _ => by_tenant.push(Event::PutKeys {
                    records: vec![(*k).clone()],
                }),
            }
        }
        self.commit(ops, by_tenant)
    }

    // === ACL documents ===

    pub fn acls(&self) -> Result<Vec<AclRecord>, StoreError> {
        self.all(Table::Acls, "")
    }

    pub fn put_acl(&self, r: &AclRecord) -> Result<(), StoreError> {
        let key = r.key();
        let v = self.put_value(&r.tenant, Table::Acls, &key, r)?;
        self.commit(
            vec![Op::Put(Table::Acls, key, v)],
            vec![Event::PutAcl { record: r.clone() }],
        )
    }

    pub fn delete_acl(&self, tenant: &str, namespace: &str) -> Result<(), StoreError> {
        self.commit(
            vec![Op::Delete(Table::Acls, format!("{tenant}/{namespace}"))],
            vec![Event::DeleteAcl {
                tenant: tenant.to_string(),
                namespace: namespace.to_string(),
            }],
        )
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
        self.commit(
            vec![Op::Put(Table::Revocations, key, v)],
            vec![Event::PutRevocation { record: r.clone() }],
        )
    }

    /// Forgets revocations whose subject has expired anyway.
    pub fn prune_revocations(&self, now_ms: u64) -> Result<usize, StoreError> {
        let old: Vec<Revocation> = self
            .revocations()?
            .into_iter()
            .filter(|r| r.until_ms <= now_ms)
            .collect();
        let n = old.len();
        if n == 0 {
            return Ok(0);
        }
        // Token revocations in the clear, each tenant's sealed with its keys.
        let mut groups: BTreeMap<Option<String>, Vec<String>> = BTreeMap::new();
        for r in &old {
            let tenant = match &r.what {
                Revoked::Token { .. } => None,
                Revoked::Principal { tenant, .. } => Some(tenant.clone()),
            };
            groups.entry(tenant).or_default().push(r.key());
        }
        let ops = old
            .iter()
            .map(|r| Op::Delete(Table::Revocations, r.key()))
            .collect();
        let events = groups
            .into_iter()
            .map(|(tenant, keys)| Event::PruneRevocations {
                tenant,
                now_ms,
                keys,
            })
            .collect();
        self.commit(ops, events)?;
        Ok(n)
    }

    // === streams ===

    pub fn streams(&self, prefix: &str) -> Result<Vec<StreamRecord>, StoreError> {
        self.all(Table::Streams, prefix)
    }

    pub fn put_stream(&self, r: &StreamRecord) -> Result<(), StoreError> {
        let tenant = r.path.split('/').next().unwrap_or_default();
        let v = self.put_value(tenant, Table::Streams, &r.path, r)?;
        self.commit(
            vec![Op::Put(Table::Streams, r.path.clone(), v)],
            vec![Event::PutStream { record: r.clone() }],
        )
    }

    pub fn delete_stream(&self, path: &str) -> Result<(), StoreError> {
        self.commit(
            vec![Op::Delete(Table::Streams, path.to_string())],
            vec![Event::DeleteStream {
                path: path.to_string(),
            }],
        )
    }
}

// === impl Catalog: the journal ===

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What [`Catalog::rebuild_report`] found: the journal replayed and
/// compared with the catalog's tables record by record.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RebuildReport {
    pub replay: Replay,
    /// The bound the journal was replayed to.
    pub until: Until,
    /// Records the store holds now, per projected table.
    pub live_counts: BTreeMap<Table, usize>,
    /// Every record on which the store and the replayed journal disagree.
    pub differences: Vec<Difference>,
}

impl RebuildReport {
    /// Records the replayed journal holds, per projected table.
    pub fn journal_counts(&self) -> BTreeMap<Table, usize> {
        let mut out: BTreeMap<Table, usize> = PROJECTED_TABLES.iter().map(|&t| (t, 0)).collect();
        for (t, _) in self.replay.projection.keys() {
            *out.entry(*t).or_default() += 1;
        }
        out
    }

    /// The whole journal replayed, its chain intact, and the store holding
    /// exactly what it says.
    pub fn matches(&self) -> bool {
        self.replay.broken.is_none() && self.until.is_everything() && self.differences.is_empty()
    }
}

impl Catalog {
    /// Applies `ops` and appends `events` to the journal, in one atomic
    /// batch.
    fn commit(&self, ops: Vec<Op>, events: Vec<Event>) -> Result<(), StoreError> {
        self.commit_if(ops, events, false).map(drop)
    }

    /// [`commit`](Self::commit); with `only_if_empty`, writes nothing
    /// unless the journal is empty. Returns whether it wrote.
    ///
    /// Events are sealed before the write, bound to the sequence numbers
    /// that follow the journal's last entry as read then: sealing may
    /// itself write to the store (a data key's reservation), which cannot
    /// happen inside the write. The write checks that the last entry is
    /// still the one read; if another writer (a clone, or another catalog
    /// over the same store) appended meanwhile, it writes nothing and this
    /// seals again after the new last entry. So entries follow commit order
    /// and no number is used twice.
    fn commit_if(
        &self,
        ops: Vec<Op>,
        events: Vec<Event>,
        only_if_empty: bool,
    ) -> Result<bool, StoreError> {
        const ATTEMPTS: usize = 64;
        let sealer = self.sealer.as_deref();
        for _ in 0..ATTEMPTS {
            let last = self.kv.last(Table::Events)?;
            if only_if_empty && last.is_some() {
                return Ok(false);
            }
            let mut entries = Some(journal::entries_after(
                last.clone(),
                now_ms(),
                &events,
                sealer,
            )?);
            let mut moved = false;
            let r = self
                .kv
                .apply_appending(ops.clone(), Table::Events, &mut |now_last| {
                    if now_last != last {
                        moved = true;
                        return Err(StoreError("the journal moved".into()));
                    }
                    Ok(entries.take().unwrap_or_default())
                });
            match r {
                Ok(()) => return Ok(true),
                Err(_) if moved => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError(format!(
            "the journal moved {ATTEMPTS} times while appending; nothing was written"
        )))
    }

    /// Starts the journal of a store that predates it: when the journal is
    /// empty and the tables are not, one snapshot of every catalog record
    /// is appended (the clear records in one event, each tenant's sealed
    /// records in one event sealed with its keys). Returns how many records
    /// the snapshot holds (0 when there was nothing to do). Call it once
    /// at start, before serving, with every tenant's keys loaded.
    pub fn open_journal(&self) -> Result<usize, StoreError> {
        // Entries are never deleted: a journal that has begun has entry 1.
        // (One that lost it is caught by the check in the write, and by a
        // rebuild.)
        if self
            .kv
            .get(Table::Events, &journal::entry_key(1))?
            .is_some()
        {
            return Ok(0);
        }
        let (live, unreadable) = self.live()?;
        if let Some((t, k, why)) = unreadable.first() {
            return Err(StoreError(format!(
                "cannot start the journal: record {}/{k} does not read: {why}",
                t.name()
            )));
        }
        let n = live.len();
        if n == 0 {
            return Ok(0);
        }
        let mut groups: BTreeMap<Option<String>, Vec<SnapshotRecord>> = BTreeMap::new();
        for ((table, key), value) in live {
            groups
                .entry(journal::record_tenant(table, &value))
                .or_default()
                .push(SnapshotRecord {
                    table: table.name().to_string(),
                    key,
                    value,
                });
        }
        let events = groups
            .into_iter()
            .map(|(tenant, records)| Event::Snapshot { tenant, records })
            .collect();
        Ok(if self.commit_if(Vec::new(), events, true)? {
            n
        } else {
            0
        })
    }

    /// Tenants whose keys seal events of the journal: a tool replaying it
    /// loads their keys first.
    pub fn journal_tenants(&self) -> Result<BTreeSet<String>, StoreError> {
        Ok(journal::sealing_tenants(&self.kv.scan(Table::Events, "")?))
    }

    /// Replays the journal up to `until` (see [`journal::replay`]).
    pub fn replay(&self, until: Until) -> Result<Replay, StoreError> {
        let entries = self.kv.scan(Table::Events, "")?;
        Ok(journal::replay(&entries, self.sealer.as_deref(), until))
    }

    /// Every catalog record in the store, decoded (opened) into its
    /// canonical plaintext; records that do not read are listed apart.
    #[allow(clippy::type_complexity)]
    fn live(&self) -> Result<(Projection, Vec<(Table, String, String)>), StoreError> {
        let mut live = Projection::new();
        let mut unreadable = Vec::new();
        for table in PROJECTED_TABLES {
            for (key, bytes) in self.kv.scan(table, "")? {
                if !journal::projected(table, &key) {
                    continue;
                }
                match self.live_value(table, &key, &bytes) {
                    Ok(v) => {
                        live.insert((table, key), v);
                    }
                    Err(e) => unreadable.push((table, key, e.to_string())),
                }
            }
        }
        Ok((live, unreadable))
    }

    fn live_value(
        &self,
        table: Table,
        key: &str,
        bytes: &[u8],
    ) -> Result<serde_json::Value, StoreError> {
        fn typed<T: Serialize + DeserializeOwned>(
            c: &Catalog,
            table: Table,
            key: &str,
            bytes: &[u8],
        ) -> Result<serde_json::Value, StoreError> {
            let v: T = c.get_value(table, key, bytes)?;
            serde_json::to_value(v).map_err(|e| StoreError(e.to_string()))
        }
        match table {
            Table::Tenants => typed::<TenantRecord>(self, table, key, bytes),
            Table::Keys => typed::<KeyRecord>(self, table, key, bytes),
            Table::Acls => typed::<AclRecord>(self, table, key, bytes),
            Table::Revocations => typed::<Revocation>(self, table, key, bytes),
            Table::Streams => typed::<StreamRecord>(self, table, key, bytes),
            Table::Limits => typed::<LimitRecord>(self, table, key, bytes),
            Table::Meta => typed::<u64>(self, table, key, bytes),
            other => Err(StoreError(format!(
                "{} is not a catalog table",
                other.name()
            ))),
        }
    }

    /// Replays the journal up to `until` and compares the result with the
    /// catalog's tables, record by record, by plaintext (sealing makes the
    /// stored bytes differ every time). With a bound, the differences are
    /// what changed since then.
    pub fn rebuild_report(&self, until: Until) -> Result<RebuildReport, StoreError> {
        let replay = self.replay(until)?;
        let (live, unreadable) = self.live()?;
        let mut live_counts: BTreeMap<Table, usize> =
            PROJECTED_TABLES.iter().map(|&t| (t, 0)).collect();
        for (t, _) in live.keys() {
            *live_counts.entry(*t).or_default() += 1;
        }
        for (t, _, _) in &unreadable {
            *live_counts.entry(*t).or_default() += 1;
        }
        let differences = journal::compare(&replay.projection, &live, unreadable);
        Ok(RebuildReport {
            replay,
            until,
            live_counts,
            differences,
        })
    }

    /// Makes the catalog's tables hold what the replayed journal of
    /// `report` says, in one atomic batch: records missing, different or
    /// unreadable are written (sealed again), records the journal does not
    /// know are deleted. Refused when the chain is broken or the report is
    /// of a bounded replay. Appends nothing to the journal: the journal
    /// already says this state. Returns how many records were changed.
    pub fn repair(&self, report: &RebuildReport) -> Result<usize, StoreError> {
        if let Some(b) = &report.replay.broken {
            return Err(StoreError(format!(
                "the journal's chain is broken at entry {}: {}; nothing was written",
                b.seq, b.reason
            )));
        }
        if !report.until.is_everything() {
            return Err(StoreError(
                "a replay to a past point cannot be written; nothing was written".into(),
            ));
        }
        let mut ops = Vec::with_capacity(report.differences.len());
        for d in &report.differences {
            match report.replay.projection.get(&(d.table, d.key.clone())) {
                Some(value) => {
                    let bytes = self.record_bytes(d.table, &d.key, value)?;
                    ops.push(Op::Put(d.table, d.key.clone(), bytes));
                }
                None => ops.push(Op::Delete(d.table, d.key.clone())),
            }
        }
        let n = ops.len();
        if n > 0 {
            self.kv.apply(ops)?;
        }
        Ok(n)
    }

    /// The stored bytes of a record of `table` with plaintext `value`:
    /// sealed with its tenant's keys where such records are.
    fn record_bytes(
        &self,
        table: Table,
        key: &str,
        value: &serde_json::Value,
    ) -> Result<Vec<u8>, StoreError> {
        let plain = serde_json::to_vec(value).map_err(|e| StoreError(e.to_string()))?;
        match journal::record_tenant(table, value) {
            Some(tenant) => {
                let raw: serde_json::Value = decode(&plain)?;
                self.put_value(&tenant, table, key, &raw)
            }
            None => Ok(plain),
        }
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

    use crate::fixtures::key;

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
mod sealed_tests_support {
    use super::*;

    /// A toy sealer for the envelope logic only: XOR with a per-tenant byte
    /// and a check byte bound to table and key. The real one is AES-GCM in
    /// rampart-keys; here we test what the catalog does around it.
    #[derive(Debug, Default)]
    pub(super) struct Toy {
        /// Tenants whose keys were destroyed: nothing of theirs opens.
        erased: std::sync::Mutex<BTreeSet<String>>,
    }

    impl Toy {
        pub(super) fn erase(&self, tenant: &str) {
            self.erased.lock().unwrap().insert(tenant.into());
        }
    }

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
            if self.erased.lock().unwrap().contains(tenant) {
                return Err(StoreError(format!("tenant {tenant} is erased")));
            }
            let (last, body) = s.split_last().ok_or_else(|| StoreError("empty".into()))?;
            if *last != tag(tenant, table, key) {
                return Err(StoreError("does not open".into()));
            }
            Ok(body.iter().map(|b| b ^ 0x5a).collect())
        }
    }
}

#[cfg(test)]
mod sealed_tests {
    use super::sealed_tests_support::Toy;
    use super::*;
    use crate::RedbStore;

    #[test]
    fn records_are_sealed_and_bound_to_their_place() {
        let dir = tempfile::tempdir().unwrap();
        let kv: Arc<dyn KvStore> = Arc::new(RedbStore::open(&dir.path().join("s.redb")).unwrap());
        let c = Catalog::sealed(kv.clone(), Arc::new(Toy::default()));
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
        let c = Catalog::sealed(kv, Arc::new(Toy::default()));
        c.put_meta_u64("key_rotation/acme", 42).unwrap();
        assert_eq!(c.meta_u64("key_rotation/acme").unwrap(), Some(42));
        assert_eq!(c.meta_u64("renew/none").unwrap(), None);
    }
}

#[cfg(test)]
mod journal_tests {
    use super::sealed_tests_support::Toy;
    use super::*;
    use crate::{DiffKind, RedbStore};

    fn store() -> (tempfile::TempDir, Arc<dyn KvStore>) {
        let dir = tempfile::tempdir().unwrap();
        let kv: Arc<dyn KvStore> = Arc::new(RedbStore::open(&dir.path().join("s.redb")).unwrap());
        (dir, kv)
    }

    use crate::fixtures::{key, tenant};

    fn acl(tenant: &str, ns: &str) -> AclRecord {
        AclRecord {
            tenant: tenant.into(),
            namespace: ns.into(),
            document: "CANARY-DOC".into(),
            updated_ms: 1,
        }
    }

    /// Control-plane work of every kind, on two tenants.
    fn work(c: &Catalog) {
        for t in ["acme", "globex"] {
            c.put_tenant(&tenant(t)).unwrap();
        }
        let mut k1 = key("k1", "acme");
        c.put_keys(&[&k1, &key("k2", "globex")]).unwrap();
        // A rotation: the old key points at its successor.
        k1.rotated_to = Some("k3".into());
        c.put_keys(&[&k1, &key("k3", "acme")]).unwrap();
        c.put_acl(&acl("acme", "prod")).unwrap();
        c.put_acl(&acl("acme", "dev")).unwrap();
        c.put_acl(&acl("globex", "*")).unwrap();
        c.delete_acl("acme", "dev").unwrap();
        for (what, until_ms) in [
            (Revoked::Token { id: "t1".into() }, 10),
            (Revoked::Token { id: "t2".into() }, 1000),
            (
                Revoked::Principal {
                    tenant: "acme".into(),
                    principal: "ci".into(),
                },
                10,
            ),
            (
                Revoked::Principal {
                    tenant: "globex".into(),
                    principal: "ops".into(),
                },
                1000,
            ),
        ] {
            c.put_revocation(&Revocation {
                what,
                at_ms: 1,
                until_ms,
            })
            .unwrap();
        }
        assert_eq!(c.prune_revocations(100).unwrap(), 2);
        c.put_stream(&StreamRecord {
            path: "acme/prod/s".into(),
            created_ms: 1,
            durable: None,
        })
        .unwrap();
        c.put_stream(&StreamRecord {
            path: "globex/x/s".into(),
            created_ms: 1,
            durable: None,
        })
        .unwrap();
        c.delete_stream("globex/x/s").unwrap();
        let lim = LimitRecord {
            tenant: "acme".into(),
            principal: None,
            limits: serde_json::json!({ "publish_per_s": 3 }),
        };
        c.put_limits(&lim).unwrap();
        c.put_limits(&LimitRecord {
            principal: Some("ci".into()),
            ..lim
        })
        .unwrap();
        c.delete_limits("acme", Some("ci")).unwrap();
        c.put_meta_u64("key_rotation/acme", 42).unwrap();
        let mut g = tenant("globex");
        g.disabled_namespaces.insert("x".into());
        c.put_tenant(&g).unwrap();
    }

    #[test]
    fn the_journal_rebuilds_what_the_catalog_wrote() {
        let (_d, kv) = store();
        let c = Catalog::sealed(kv.clone(), Arc::new(Toy::default()));
        work(&c);
        let r = c.rebuild_report(Until::everything()).unwrap();
        assert!(r.matches(), "{:?}", r.differences);
        assert_eq!(r.replay.broken, None);
        assert_eq!(r.replay.applied, r.replay.entries);
        assert_eq!(r.journal_counts(), r.live_counts);
        assert_eq!(r.journal_counts()[&Table::Keys], 3);
        assert_eq!(r.journal_counts()[&Table::Acls], 2);
        assert_eq!(r.journal_counts()[&Table::Revocations], 2);
        // Sealed events keep tenant content out of the clear.
        for (_, bytes) in kv.scan(Table::Events, "").unwrap() {
            let text = String::from_utf8_lossy(&bytes);
            assert!(!text.contains("CANARY"), "{text}");
        }
        // The keyring's meta keys are not the catalog's.
        assert!(c.put_meta_u64("keyring/master_check", 1).is_err());
        kv.apply(vec![Op::Put(
            Table::Meta,
            "keyring/x".into(),
            b"1".to_vec(),
        )])
        .unwrap();
        assert!(c.rebuild_report(Until::everything()).unwrap().matches());
    }

    #[test]
    fn a_record_changed_behind_the_catalog_is_named_and_repaired() {
        let (_d, kv) = store();
        let c = Catalog::sealed(kv.clone(), Arc::new(Toy::default()));
        work(&c);
        let stolen = kv.get(Table::Acls, "acme/prod").unwrap().unwrap();
        kv.apply(vec![
            Op::Delete(Table::Keys, "k2".into()),
            Op::Put(Table::Acls, "acme/prod".into(), b"{}".to_vec()),
            Op::Put(Table::Acls, "acme/stolen".into(), stolen),
            Op::Put(
                Table::Tenants,
                "acme".into(),
                serde_json::to_vec(&TenantRecord {
                    disabled: true,
                    ..tenant("acme")
                })
                .unwrap(),
            ),
            Op::Put(Table::Meta, "renew/x".into(), b"5".to_vec()),
        ])
        .unwrap();
        let r = c.rebuild_report(Until::everything()).unwrap();
        assert!(!r.matches());
        let named: Vec<(Table, &str, bool)> = r
            .differences
            .iter()
            .map(|d| {
                (
                    d.table,
                    d.key.as_str(),
                    matches!(d.kind, DiffKind::Unreadable(_)),
                )
            })
            .collect();
        assert_eq!(
            named,
            vec![
                (Table::Tenants, "acme", false),
                (Table::Keys, "k2", false),
                (Table::Acls, "acme/prod", true),
                (Table::Acls, "acme/stolen", true),
                (Table::Meta, "renew/x", false),
            ]
        );
        assert_eq!(r.differences[0].kind, DiffKind::Differs);
        assert_eq!(r.differences[1].kind, DiffKind::Missing);
        assert_eq!(r.differences[4].kind, DiffKind::Unexpected);
        assert_eq!(c.repair(&r).unwrap(), 5);
        let again = c.rebuild_report(Until::everything()).unwrap();
        assert!(again.matches(), "{:?}", again.differences);
        assert!(!c.tenant("acme").unwrap().unwrap().disabled);
        assert_eq!(c.key("k2").unwrap().unwrap().tenant, "globex");
        assert_eq!(c.acls().unwrap().len(), 2);
        // The repair itself is not an event: the journal already said it.
        assert_eq!(again.replay.entries, r.replay.entries);
    }

    #[test]
    fn a_broken_chain_refuses_the_repair() {
        let (_d, kv) = store();
        let c = Catalog::sealed(kv.clone(), Arc::new(Toy::default()));
        work(&c);
        let entries = kv.scan(Table::Events, "").unwrap();
        let (k, _) = &entries[3];
        kv.apply(vec![Op::Delete(Table::Events, k.clone())])
            .unwrap();
        kv.apply(vec![Op::Delete(Table::Keys, "k1".into())])
            .unwrap();
        let r = c.rebuild_report(Until::everything()).unwrap();
        assert_eq!(r.replay.broken.as_ref().map(|b| b.seq), Some(4));
        assert!(!r.matches());
        assert!(c.repair(&r).is_err());
        assert!(c.key("k1").unwrap().is_none(), "nothing written");
        // A sealed event moved to another place does not open either.
        let (_d2, kv2) = store();
        let c2 = Catalog::sealed(kv2.clone(), Arc::new(Toy::default()));
        c2.put_acl(&acl("acme", "a")).unwrap();
        c2.put_acl(&acl("acme", "b")).unwrap();
        let e = kv2.scan(Table::Events, "").unwrap();
        // Chain intact (entry 2 copied over itself), but entry 1 replaced
        // by entry 2's sealed body re-chained would still not open: check
        // the binding directly through the sealer.
        let body: serde_json::Value = serde_json::from_slice(&e[1].1).unwrap();
        let sealed = hex::decode(body["body"]["sealed"].as_str().unwrap()).unwrap();
        let toy = Toy::default();
        assert!(toy.open("acme", Table::Events, &e[1].0, &sealed).is_ok());
        assert!(toy.open("acme", Table::Events, &e[0].0, &sealed).is_err());
    }

    #[test]
    fn an_erased_tenant_rebuilds_to_its_tombstone_only() {
        let (_d, kv) = store();
        let toy = Arc::new(Toy::default());
        let c = Catalog::sealed(kv.clone(), toy.clone());
        work(&c);
        // Erasure as the server does it: tombstone, records, then keys.
        let mut t = c.tenant("globex").unwrap().unwrap();
        t.disabled = true;
        t.erased_ms = Some(9);
        c.put_tenant(&t).unwrap();
        assert!(c.delete_tenant_records("globex").unwrap() > 0);
        toy.erase("globex");
        let r = c.rebuild_report(Until::everything()).unwrap();
        assert!(r.matches(), "{:?} {:?}", r.replay.broken, r.differences);
        assert!(r.replay.erased > 0, "globex's events no longer open");
        let globex: Vec<&(Table, String)> = r
            .replay
            .projection
            .keys()
            .filter(|(t, k)| k.contains("globex") || (*t == Table::Keys && k == "k2"))
            .collect();
        assert_eq!(globex, vec![&(Table::Tenants, "globex".to_string())]);
        // A tenant not erased whose events do not open is a break.
        toy.erase("acme");
        let r = c.rebuild_report(Until::everything()).unwrap();
        assert!(r.replay.broken.is_some());
    }

    #[test]
    fn a_store_from_before_the_journal_gets_a_snapshot() {
        let (_d, kv) = store();
        let c = Catalog::sealed(kv.clone(), Arc::new(Toy::default()));
        assert_eq!(c.open_journal().unwrap(), 0, "an empty store needs none");
        work(&c);
        // The same tables without a journal: a store written before it.
        let old: Vec<Op> = kv
            .scan(Table::Events, "")
            .unwrap()
            .into_iter()
            .map(|(k, _)| Op::Delete(Table::Events, k))
            .collect();
        kv.apply(old).unwrap();
        let before = c.rebuild_report(Until::everything()).unwrap();
        assert!(!before.matches());
        assert!(before
            .differences
            .iter()
            .all(|d| d.kind == DiffKind::Unexpected));

        let n = c.open_journal().unwrap();
        assert_eq!(n, before.differences.len());
        let events = kv.scan(Table::Events, "").unwrap();
        // The clear records, then one sealed event per tenant.
        assert_eq!(events.len(), 3);
        for (_, bytes) in &events {
            assert!(!String::from_utf8_lossy(bytes).contains("CANARY"));
        }
        let r = c.rebuild_report(Until::everything()).unwrap();
        assert!(r.matches(), "{:?}", r.differences);
        assert_eq!(r.live_counts, before.live_counts);
        // Once only; later writes follow the snapshot.
        assert_eq!(c.open_journal().unwrap(), 0);
        c.delete_acl("acme", "prod").unwrap();
        let r = c.rebuild_report(Until::everything()).unwrap();
        assert!(r.matches(), "{:?}", r.differences);
        assert_eq!(r.replay.entries, 4);
    }

    #[test]
    fn a_past_state_is_what_was_true_then() {
        let (_d, kv) = store();
        let c = Catalog::new(kv);
        c.put_tenant(&tenant("acme")).unwrap();
        c.put_acl(&acl("acme", "prod")).unwrap();
        let seq = c.replay(Until::everything()).unwrap().entries;
        c.delete_acl("acme", "prod").unwrap();
        let then = c.rebuild_report(Until::seq(seq)).unwrap();
        assert!(!then.matches(), "a bounded replay never claims a match");
        assert_eq!(then.differences.len(), 1);
        assert_eq!(then.differences[0].kind, DiffKind::Missing);
        assert!(c.repair(&then).is_err(), "a past state is not written");
    }

    /// Seals like Toy, and writes to the store on every seal, as the real
    /// sealer does when it reserves a data key's next range.
    #[derive(Debug)]
    struct Reserving {
        toy: Toy,
        kv: Arc<dyn KvStore>,
    }

    impl Sealer for Reserving {
        fn seal(&self, tenant: &str, t: Table, key: &str, p: &[u8]) -> Result<Vec<u8>, StoreError> {
            self.kv.apply(vec![Op::Put(
                Table::Keyring,
                format!("reserve/{tenant}"),
                b"1".to_vec(),
            )])?;
            self.toy.seal(tenant, t, key, p)
        }
        fn open(&self, tenant: &str, t: Table, key: &str, s: &[u8]) -> Result<Vec<u8>, StoreError> {
            self.toy.open(tenant, t, key, s)
        }
    }

    #[test]
    fn a_sealer_that_writes_to_the_store_does_not_deadlock_a_write() {
        let (_d, kv) = store();
        let c = Catalog::sealed(
            kv.clone(),
            Arc::new(Reserving {
                toy: Toy::default(),
                kv: kv.clone(),
            }),
        );
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Deletes seal only their event, nothing before the write.
            c.delete_acl("acme", "prod").unwrap();
            c.delete_stream("acme/p/s").unwrap();
            c.put_acl(&acl("acme", "prod")).unwrap();
            let _ = tx.send(c.rebuild_report(Until::everything()).unwrap().matches());
        });
        let matches = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("the writes finish");
        assert!(matches);
    }

    #[test]
    fn concurrent_writers_keep_one_chain() {
        let (_d, kv) = store();
        let a = Catalog::new(kv.clone());
        let b = Catalog::new(kv.clone()); // not a clone: its own handle
        std::thread::scope(|s| {
            for (c, who) in [(&a, "a"), (&b, "b")] {
                s.spawn(move || {
                    for i in 0..50 {
                        c.put_meta_u64(&format!("{who}/{i}"), i).unwrap();
                    }
                });
            }
        });
        let r = a.rebuild_report(Until::everything()).unwrap();
        assert!(r.matches(), "{:?} {:?}", r.replay.broken, r.differences);
        assert_eq!(r.replay.entries, 100);
    }
}
