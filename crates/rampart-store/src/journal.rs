//! The control-plane journal: every change the [`Catalog`](crate::Catalog)
//! makes to its tables, as a typed [`Event`] appended to [`Table::Events`]
//! in the same atomic batch as the change, and the pure [`replay`] that
//! turns the journal back into the records those tables should hold.
//!
//! Each stored entry carries its sequence number (also its key, zero-padded
//! so that key order is journal order), the time it was written and the
//! SHA-256 of the previous entry's stored bytes, so a missing, reordered or
//! edited entry breaks the chain. The chain is not keyed: it finds gaps and
//! edits, not a forger able to rewrite every later entry too (the signed
//! audit log is the tamper-evident record of who did what).
//!
//! Events about a tenant's sealed records are sealed with that tenant's
//! keys and bound to their sequence number, exactly as the records are:
//! nothing secret is in the clear, and erasing a tenant's keys erases what
//! its events said. A replay skips the unreadable events of an erased
//! tenant (its clear tenant record says it was erased) and refuses any
//! other event that does not open.

use std::collections::{BTreeMap, BTreeSet};

use ring::digest::{digest, SHA256};
use serde::{Deserialize, Serialize};

use crate::catalog::{
    AclRecord, KeyRecord, LimitRecord, Revocation, Revoked, Sealer, StreamRecord, TenantRecord,
};
use crate::kv::{StoreError, Table};

/// The records the journal says the catalog's tables hold: table and key
/// to the record's plaintext (its JSON, canonical for its type).
pub type Projection = BTreeMap<(Table, String), serde_json::Value>;

/// The tables the catalog writes and the journal projects. `meta` is shared
/// with the keyring, whose keys (under `keyring/`) are not the catalog's.
pub const PROJECTED_TABLES: [Table; 7] = [
    Table::Tenants,
    Table::Keys,
    Table::Acls,
    Table::Revocations,
    Table::Streams,
    Table::Limits,
    Table::Meta,
];

/// Meta keys written by the keyring, not through the catalog.
pub(crate) const FOREIGN_META_PREFIX: &str = "keyring/";

/// Whether the record at `table`/`key` is one the journal accounts for.
pub(crate) fn projected(table: Table, key: &str) -> bool {
    PROJECTED_TABLES.contains(&table)
        && !(table == Table::Meta && key.starts_with(FOREIGN_META_PREFIX))
}

/// A change the catalog made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    PutTenant {
        record: TenantRecord,
    },
    /// Keys of one tenant written together (a rotation writes two).
    PutKeys {
        records: Vec<KeyRecord>,
    },
    PutAcl {
        record: AclRecord,
    },
    DeleteAcl {
        tenant: String,
        namespace: String,
    },
    PutRevocation {
        record: Revocation,
    },
    /// Revocations forgotten because their subject expired, by key: token
    /// revocations (`tenant` unset) or one tenant's principal revocations.
    PruneRevocations {
        tenant: Option<String>,
        now_ms: u64,
        keys: Vec<String>,
    },
    PutStream {
        record: StreamRecord,
    },
    DeleteStream {
        path: String,
    },
    PutLimits {
        record: LimitRecord,
    },
    DeleteLimits {
        tenant: String,
        principal: Option<String>,
    },
    PutMeta {
        key: String,
        value: u64,
    },
    /// A tenant's records deleted at its erasure, by table name and key.
    DeleteTenantRecords {
        tenant: String,
        deleted: Vec<(String, String)>,
    },
    /// Records of a store that predates the journal, written once as the
    /// journal's start: the clear ones (`tenant` unset), or one tenant's.
    Snapshot {
        tenant: Option<String>,
        records: Vec<SnapshotRecord>,
    },
}

/// One record of a [`Event::Snapshot`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    pub table: String,
    pub key: String,
    pub value: serde_json::Value,
}

fn stream_tenant(path: &str) -> &str {
    path.split('/').next().unwrap_or_default()
}

impl Event {
    /// The tenant whose keys seal this event, if it is about a tenant's
    /// sealed records; `None` for events kept in the clear (tenant records,
    /// token revocations, meta values), as their records are.
    pub fn seal_tenant(&self) -> Option<&str> {
        match self {
            Event::PutTenant { .. } | Event::PutMeta { .. } => None,
            Event::PutKeys { records } => records.first().map(|k| k.tenant.as_str()),
            Event::PutAcl { record } => Some(&record.tenant),
            Event::DeleteAcl { tenant, .. }
            | Event::DeleteLimits { tenant, .. }
            | Event::DeleteTenantRecords { tenant, .. } => Some(tenant),
            Event::PutRevocation { record } => record_revocation_tenant(record),
            Event::PruneRevocations { tenant, .. } | Event::Snapshot { tenant, .. } => {
                tenant.as_deref()
            }
            Event::PutStream { record } => Some(stream_tenant(&record.path)),
            Event::DeleteStream { path } => Some(stream_tenant(path)),
            Event::PutLimits { record } => Some(&record.tenant),
        }
    }

    /// Whether every record this event touches belongs with its sealing
    /// tenant ([`seal_tenant`](Self::seal_tenant)): a sealed event cannot
    /// speak for another tenant's records.
    fn consistent(&self) -> bool {
        let owner = self.seal_tenant();
        match self {
            Event::PutKeys { records } => records.iter().all(|k| Some(k.tenant.as_str()) == owner),
            Event::Snapshot { records, .. } => records.iter().all(|r| {
                Table::from_name(&r.table)
                    .is_some_and(|t| record_tenant(t, &r.value).as_deref() == owner)
            }),
            Event::PruneRevocations { keys, .. } => {
                keys.iter().all(|k| match (owner, k.strip_prefix("pri/")) {
                    (Some(t), Some(rest)) => {
                        rest.strip_prefix(t).is_some_and(|r| r.starts_with('/'))
                    }
                    (None, None) => k.starts_with("tok/"),
                    _ => false,
                })
            }
            Event::DeleteTenantRecords { deleted, tenant } => deleted.iter().all(|(t, k)| {
                match Table::from_name(t) {
                    Some(Table::Keys) => true, // key ids carry no tenant
                    Some(Table::Acls | Table::Limits | Table::Streams) => {
                        k == tenant || k.starts_with(&format!("{tenant}/"))
                    }
                    Some(Table::Revocations) => k.starts_with(&format!("pri/{tenant}/")),
                    _ => false,
                }
            }),
            _ => true,
        }
    }

    /// Applies this event to `p`.
    fn apply(self, p: &mut Projection) -> Result<(), String> {
        fn put<T: Serialize>(p: &mut Projection, t: Table, k: String, v: &T) -> Result<(), String> {
            let v = serde_json::to_value(v).map_err(|e| e.to_string())?;
            p.insert((t, k), v);
            Ok(())
        }
        match self {
            Event::PutTenant { record } => put(p, Table::Tenants, record.name.clone(), &record),
            Event::PutKeys { records } => records
                .iter()
                .try_for_each(|k| put(p, Table::Keys, k.id.clone(), k)),
            Event::PutAcl { record } => put(p, Table::Acls, record.key(), &record),
            Event::DeleteAcl { tenant, namespace } => {
                p.remove(&(Table::Acls, format!("{tenant}/{namespace}")));
                Ok(())
            }
            Event::PutRevocation { record } => put(p, Table::Revocations, record.key(), &record),
            Event::PruneRevocations { keys, .. } => {
                for k in keys {
                    p.remove(&(Table::Revocations, k));
                }
                Ok(())
            }
            Event::PutStream { record } => put(p, Table::Streams, record.path.clone(), &record),
            Event::DeleteStream { path } => {
                p.remove(&(Table::Streams, path));
                Ok(())
            }
            Event::PutLimits { record } => put(p, Table::Limits, record.key(), &record),
            Event::DeleteLimits { tenant, principal } => {
                p.remove(&(
                    Table::Limits,
                    LimitRecord::key_of(&tenant, principal.as_deref()),
                ));
                Ok(())
            }
            Event::PutMeta { key, value } => {
                if !projected(Table::Meta, &key) {
                    return Err(format!("meta key {key} is not the catalog's"));
                }
                put(p, Table::Meta, key, &value)
            }
            Event::DeleteTenantRecords { deleted, .. } => {
                for (t, k) in deleted {
                    let t = Table::from_name(&t).ok_or_else(|| format!("no table {t}"))?;
                    p.remove(&(t, k));
                }
                Ok(())
            }
            Event::Snapshot { records, .. } => {
                for r in records {
                    let t = Table::from_name(&r.table)
                        .filter(|&t| projected(t, &r.key))
                        .ok_or_else(|| format!("{}/{} is not a catalog record", r.table, r.key))?;
                    p.insert((t, r.key), canonical(t, r.value)?);
                }
                Ok(())
            }
        }
    }
}

fn record_revocation_tenant(r: &Revocation) -> Option<&str> {
    match &r.what {
        Revoked::Token { .. } => None,
        Revoked::Principal { tenant, .. } => Some(tenant),
    }
}

/// The tenant whose keys seal a record of `table` with plaintext `v`, or
/// `None` for records kept in the clear.
pub(crate) fn record_tenant(table: Table, v: &serde_json::Value) -> Option<String> {
    let field = |name: &str| v.get(name).and_then(|t| t.as_str()).map(str::to_owned);
    match table {
        Table::Keys | Table::Acls | Table::Limits => field("tenant"),
        Table::Streams => field("path").map(|p| stream_tenant(&p).to_owned()),
        Table::Revocations => match v.get("what").and_then(|w| w.get("kind"))?.as_str()? {
            "principal" => v["what"]["tenant"].as_str().map(str::to_owned),
            _ => None,
        },
        _ => None,
    }
}

/// The plaintext of a record of `table` decoded as its type and encoded
/// again, so records compare by content whatever way they were written.
pub(crate) fn canonical(table: Table, v: serde_json::Value) -> Result<serde_json::Value, String> {
    fn via<T: Serialize + serde::de::DeserializeOwned>(
        v: serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        let typed: T = serde_json::from_value(v).map_err(|e| e.to_string())?;
        serde_json::to_value(typed).map_err(|e| e.to_string())
    }
    match table {
        Table::Tenants => via::<TenantRecord>(v),
        Table::Keys => via::<KeyRecord>(v),
        Table::Acls => via::<AclRecord>(v),
        Table::Revocations => via::<Revocation>(v),
        Table::Streams => via::<StreamRecord>(v),
        Table::Limits => via::<LimitRecord>(v),
        Table::Meta => via::<u64>(v),
        other => Err(format!("{} is not a catalog table", other.name())),
    }
}

// === stored entries ===

/// An entry of [`Table::Events`] as stored (JSON).
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    seq: u64,
    at_ms: u64,
    /// SHA-256 (hex) of the previous entry's stored bytes; zeros first.
    prev: String,
    body: Body,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Body {
    Clear {
        event: Event,
    },
    /// The event's JSON sealed by the tenant's keys (hex), bound to
    /// `events/<key>`.
    Sealed {
        tenant: String,
        sealed: String,
    },
}

const GENESIS: [u8; 32] = [0; 32];

/// The key of entry `seq`: zero-padded, so key order is journal order.
pub(crate) fn entry_key(seq: u64) -> String {
    format!("{seq:020}")
}

fn hash(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

/// Makes the stored entries for `events`, written at `at_ms`, to follow
/// `last` (the journal's last entry, `None` when it is empty). Events that
/// [`Event::seal_tenant`] names a tenant for are sealed when `sealer` is
/// given.
pub(crate) fn entries_after(
    last: Option<(String, Vec<u8>)>,
    at_ms: u64,
    events: &[Event],
    sealer: Option<&dyn Sealer>,
) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    let (mut seq, mut prev) = match &last {
        None => (0, GENESIS),
        Some((k, v)) => (
            k.parse::<u64>()
                .map_err(|_| StoreError(format!("journal entry {k} has a bad key")))?,
            hash(v),
        ),
    };
    let mut out = Vec::with_capacity(events.len());
    for event in events {
        seq = seq
            .checked_add(1)
            .ok_or_else(|| StoreError("journal sequence exhausted".into()))?;
        let key = entry_key(seq);
        let body = match (event.seal_tenant(), sealer) {
            (Some(tenant), Some(sealer)) => {
                let plain = serde_json::to_vec(event).map_err(|e| StoreError(e.to_string()))?;
                Body::Sealed {
                    tenant: tenant.to_owned(),
                    sealed: hex::encode(sealer.seal(tenant, Table::Events, &key, &plain)?),
                }
            }
            _ => Body::Clear {
                event: event.clone(),
            },
        };
        let bytes = serde_json::to_vec(&Entry {
            seq,
            at_ms,
            prev: hex::encode(prev),
            body,
        })
        .map_err(|e| StoreError(e.to_string()))?;
        prev = hash(&bytes);
        out.push((key, bytes));
    }
    Ok(out)
}

// === replay ===

/// How far to replay: entries up to and including sequence number `seq`,
/// and up to the first entry written after `at_ms`. Unset: everything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Until {
    pub seq: Option<u64>,
    pub at_ms: Option<u64>,
}

impl Until {
    pub fn everything() -> Self {
        Self::default()
    }

    pub fn seq(seq: u64) -> Self {
        Self {
            seq: Some(seq),
            at_ms: None,
        }
    }

    pub fn at_ms(at_ms: u64) -> Self {
        Self {
            seq: None,
            at_ms: Some(at_ms),
        }
    }

    /// Whether this bound replays the whole journal.
    pub fn is_everything(&self) -> bool {
        self.seq.is_none() && self.at_ms.is_none()
    }
}

/// Where the journal stops being trustworthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    /// The sequence number expected at this place.
    pub seq: u64,
    /// The key of the entry found there (or the last key, for a gap at
    /// the end that a bound asked for).
    pub key: String,
    pub reason: String,
}

/// The outcome of [`replay`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Replay {
    /// The records, as of the last event applied.
    pub projection: Projection,
    /// Entries in the journal (as far as the chain holds).
    pub entries: u64,
    /// Events applied to the projection.
    pub applied: u64,
    /// Events of erased tenants, unreadable by design and skipped.
    pub erased: u64,
    /// Sequence number and time of the last event applied.
    pub last_applied: Option<(u64, u64)>,
    /// Entries after the bound, verified but not applied.
    pub after_bound: u64,
    /// The first place the chain does not hold; nothing from there on was
    /// read.
    pub broken: Option<ChainBreak>,
}

/// Tenants whose keys seal entries of the journal (each sealed entry names
/// its tenant in the clear, as sealed records do).
pub(crate) fn sealing_tenants(entries: &[(String, Vec<u8>)]) -> BTreeSet<String> {
    entries
        .iter()
        .filter_map(|(_, bytes)| match serde_json::from_slice::<Entry>(bytes) {
            Ok(Entry {
                body: Body::Sealed { tenant, .. },
                ..
            }) => Some(tenant),
            _ => None,
        })
        .collect()
}

/// Tenants a clear tenant record in the journal says were erased.
fn erased_tenants(entries: &[(String, Vec<u8>)]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (_, bytes) in entries {
        let Ok(Entry {
            body: Body::Clear { event },
            ..
        }) = serde_json::from_slice::<Entry>(bytes)
        else {
            continue;
        };
        match event {
            Event::PutTenant { record } if record.erased_ms.is_some() => {
                out.insert(record.name);
            }
            Event::Snapshot { records, .. } => {
                for r in records.into_iter().filter(|r| r.table == "tenants") {
                    if r.value.get("erased_ms").is_some_and(|e| !e.is_null()) {
                        out.insert(r.key);
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Replays `entries` (the journal, in key order) up to `until`: checks the
/// hash chain, opens sealed events with `sealer`, and applies each event to
/// the projection. Pure: the store is not touched.
pub fn replay(entries: &[(String, Vec<u8>)], sealer: Option<&dyn Sealer>, until: Until) -> Replay {
    let erased = erased_tenants(entries);
    let mut out = Replay::default();
    let mut prev = GENESIS;
    let mut expected: u64 = 1;
    let mut bounded = false;
    for (key, bytes) in entries {
        let here = expected;
        let brk = move |reason: String| ChainBreak {
            seq: here,
            key: key.clone(),
            reason,
        };
        if *key != entry_key(expected) {
            out.broken = Some(brk(format!(
                "expected entry {} here (an entry is missing or out of place)",
                entry_key(expected)
            )));
            break;
        }
        let entry: Entry = match serde_json::from_slice(bytes) {
            Ok(e) => e,
            Err(e) => {
                out.broken = Some(brk(format!("not a journal entry: {e}")));
                break;
            }
        };
        if entry.seq != expected {
            out.broken = Some(brk(format!("the entry says it is number {}", entry.seq)));
            break;
        }
        if entry.prev != hex::encode(prev) {
            out.broken = Some(brk(
                "the previous entry's hash does not match (it was changed or removed)".into(),
            ));
            break;
        }
        prev = hash(bytes);
        expected += 1;
        out.entries += 1;
        bounded = bounded
            || until.seq.is_some_and(|s| entry.seq > s)
            || until.at_ms.is_some_and(|t| entry.at_ms > t);
        if bounded {
            out.after_bound += 1;
            continue;
        }
        let event = match entry.body {
            Body::Clear { event } => {
                if sealer.is_some() {
                    if let Some(t) = event.seal_tenant() {
                        out.broken = Some(brk(format!(
                            "an event about tenant {t}'s records is not sealed"
                        )));
                        break;
                    }
                }
                event
            }
            Body::Sealed { tenant, sealed } => {
                let Some(sealer) = sealer else {
                    out.broken = Some(brk("the event is sealed and there are no keys".into()));
                    break;
                };
                let opened = hex::decode(&sealed)
                    .map_err(|e| StoreError(e.to_string()))
                    .and_then(|s| sealer.open(&tenant, Table::Events, key, &s));
                let plain = match opened {
                    Ok(p) => p,
                    Err(_) if erased.contains(&tenant) => {
                        out.erased += 1;
                        continue;
                    }
                    Err(e) => {
                        out.broken = Some(brk(format!("does not open: {e}")));
                        break;
                    }
                };
                match serde_json::from_slice::<Event>(&plain) {
                    Ok(ev) if ev.seal_tenant() == Some(tenant.as_str()) => ev,
                    Ok(_) => {
                        out.broken = Some(brk(format!(
                            "sealed by tenant {tenant} but about another tenant's records"
                        )));
                        break;
                    }
                    Err(e) => {
                        out.broken = Some(brk(format!("not an event: {e}")));
                        break;
                    }
                }
            }
        };
        if !event.consistent() {
            out.broken = Some(brk(
                "the event names records of a tenant other than its own".into(),
            ));
            break;
        }
        if let Err(e) = event.apply(&mut out.projection) {
            out.broken = Some(brk(e));
            break;
        }
        out.applied += 1;
        out.last_applied = Some((entry.seq, entry.at_ms));
    }
    if out.broken.is_none() {
        if let Some(s) = until.seq.filter(|&s| s >= expected) {
            out.broken = Some(ChainBreak {
                seq: s,
                key: entry_key(s),
                reason: format!("the journal ends at entry {}", expected - 1),
            });
        }
    }
    out
}

/// How a live record differs from the journal's.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DiffKind {
    /// The journal has it; the store does not.
    Missing,
    /// The store has it; the journal does not.
    Unexpected,
    /// Both have it, with different contents.
    Differs,
    /// The store's record does not decode or open.
    Unreadable(String),
}

/// One record that differs between the store and the journal, named by
/// table and key only (never by content).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub table: Table,
    pub key: String,
    pub kind: DiffKind,
}

/// Every record on which `journal` and `live` disagree, in table and key
/// order. `unreadable` are live records that could not be read.
pub(crate) fn compare(
    journal: &Projection,
    live: &Projection,
    unreadable: Vec<(Table, String, String)>,
) -> Vec<Difference> {
    let unreadable: BTreeMap<(Table, String), String> = unreadable
        .into_iter()
        .map(|(t, k, why)| ((t, k), why))
        .collect();
    let keys: BTreeSet<&(Table, String)> = journal
        .keys()
        .chain(live.keys())
        .chain(unreadable.keys())
        .collect();
    keys.into_iter()
        .filter_map(|tk| {
            let kind = match (journal.get(tk), live.get(tk), unreadable.get(tk)) {
                (_, _, Some(why)) => DiffKind::Unreadable(why.clone()),
                (Some(a), Some(b), None) if a == b => return None,
                (Some(_), Some(_), None) => DiffKind::Differs,
                (Some(_), None, None) => DiffKind::Missing,
                (None, _, None) => DiffKind::Unexpected,
            };
            Some(Difference {
                table: tk.0,
                key: tk.1.clone(),
                kind,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::DurableSpec;

    fn entries(events: &[Event]) -> Vec<(String, Vec<u8>)> {
        // One batch per event, as the catalog writes them.
        let mut out: Vec<(String, Vec<u8>)> = Vec::new();
        for (i, e) in events.iter().enumerate() {
            let last = out.last().cloned();
            out.extend(
                entries_after(last, 1000 + i as u64, std::slice::from_ref(e), None).unwrap(),
            );
        }
        out
    }

    fn tenant(name: &str, erased: bool) -> TenantRecord {
        TenantRecord {
            disabled: erased,
            changed_ms: 2,
            erased_ms: erased.then_some(3),
            ..crate::fixtures::tenant(name)
        }
    }

    use crate::fixtures::key;

    fn keys_of(p: &Projection, t: Table) -> Vec<String> {
        p.keys()
            .filter(|(tt, _)| *tt == t)
            .map(|(_, k)| k.clone())
            .collect()
    }

    #[test]
    fn every_event_kind_replays_to_its_records() {
        let acl = AclRecord {
            tenant: "acme".into(),
            namespace: "prod".into(),
            document: "kind: ACL".into(),
            updated_ms: 5,
        };
        let pri = Revocation {
            what: Revoked::Principal {
                tenant: "acme".into(),
                principal: "ci".into(),
            },
            at_ms: 1,
            until_ms: 10,
        };
        let tok = Revocation {
            what: Revoked::Token { id: "t1".into() },
            at_ms: 1,
            until_ms: 10,
        };
        let stream = StreamRecord {
            path: "acme/prod/log".into(),
            created_ms: 1,
            durable: Some(DurableSpec::default()),
        };
        let limits = LimitRecord {
            tenant: "acme".into(),
            principal: Some("ci".into()),
            limits: serde_json::json!({ "publish_per_s": 5 }),
        };
        let events = vec![
            Event::Snapshot {
                tenant: None,
                records: vec![SnapshotRecord {
                    table: "tenants".into(),
                    key: "old".into(),
                    value: serde_json::to_value(tenant("old", false)).unwrap(),
                }],
            },
            Event::PutTenant {
                record: tenant("acme", false),
            },
            Event::PutKeys {
                records: vec![key("k1", "acme"), key("k2", "acme")],
            },
            Event::PutAcl {
                record: acl.clone(),
            },
            Event::PutAcl {
                record: AclRecord {
                    namespace: "dev".into(),
                    ..acl.clone()
                },
            },
            Event::DeleteAcl {
                tenant: "acme".into(),
                namespace: "dev".into(),
            },
            Event::PutRevocation {
                record: pri.clone(),
            },
            Event::PutRevocation {
                record: tok.clone(),
            },
            Event::PruneRevocations {
                tenant: None,
                now_ms: 20,
                keys: vec!["tok/t1".into()],
            },
            Event::PutStream {
                record: stream.clone(),
            },
            Event::PutStream {
                record: StreamRecord {
                    path: "acme/prod/gone".into(),
                    created_ms: 2,
                    durable: None,
                },
            },
            Event::DeleteStream {
                path: "acme/prod/gone".into(),
            },
            Event::PutLimits {
                record: limits.clone(),
            },
            Event::PutLimits {
                record: LimitRecord {
                    principal: None,
                    ..limits.clone()
                },
            },
            Event::DeleteLimits {
                tenant: "acme".into(),
                principal: None,
            },
            Event::PutMeta {
                key: "key_rotation/acme".into(),
                value: 77,
            },
            Event::PutTenant {
                record: tenant("gone", false),
            },
            Event::PutKeys {
                records: vec![key("k9", "gone")],
            },
            Event::DeleteTenantRecords {
                tenant: "gone".into(),
                deleted: vec![("keys".into(), "k9".into())],
            },
        ];
        let n = events.len() as u64;
        let r = replay(&entries(&events), None, Until::everything());
        assert_eq!(r.broken, None);
        assert_eq!((r.entries, r.applied, r.erased), (n, n, 0));
        assert_eq!(r.last_applied, Some((n, 1000 + n - 1)));
        let p = &r.projection;
        assert_eq!(keys_of(p, Table::Tenants), ["acme", "gone", "old"]);
        assert_eq!(keys_of(p, Table::Keys), ["k1", "k2"]);
        assert_eq!(keys_of(p, Table::Acls), ["acme/prod"]);
        assert_eq!(keys_of(p, Table::Revocations), ["pri/acme/ci"]);
        assert_eq!(keys_of(p, Table::Streams), ["acme/prod/log"]);
        assert_eq!(keys_of(p, Table::Limits), ["acme/ci"]);
        assert_eq!(
            p[&(Table::Meta, "key_rotation/acme".to_string())],
            serde_json::json!(77)
        );
        assert_eq!(
            p[&(Table::Acls, "acme/prod".to_string())],
            serde_json::to_value(&acl).unwrap()
        );
        assert_eq!(
            p[&(Table::Limits, "acme/ci".to_string())],
            serde_json::to_value(&limits).unwrap()
        );

        // A bound replays a prefix: before the ACL of `dev` was deleted.
        let r = replay(&entries(&events), None, Until::seq(5));
        assert_eq!((r.applied, r.after_bound), (5, n - 5));
        assert_eq!(
            keys_of(&r.projection, Table::Acls),
            ["acme/dev", "acme/prod"]
        );
        let r = replay(&entries(&events), None, Until::at_ms(1002));
        assert_eq!(r.applied, 3);
        // A bound past the end is reported, not silently taken.
        let r = replay(&entries(&events), None, Until::seq(n + 1));
        assert!(r.broken.is_some());
    }

    #[test]
    fn a_gap_an_edit_or_a_move_breaks_the_chain() {
        let events: Vec<Event> = (0..5)
            .map(|i| Event::PutMeta {
                key: format!("m{i}"),
                value: i,
            })
            .collect();
        let good = entries(&events);
        assert_eq!(replay(&good, None, Until::everything()).broken, None);

        // A missing entry in the middle.
        let mut gap = good.clone();
        gap.remove(2);
        let r = replay(&gap, None, Until::everything());
        assert_eq!(r.broken.as_ref().map(|b| b.seq), Some(3));
        assert_eq!(r.applied, 2, "nothing past the break is applied");

        // An entry edited in place (same length, other value).
        let mut edited = good.clone();
        let text = String::from_utf8(edited[1].1.clone()).unwrap();
        edited[1].1 = text.replace("\"value\":1", "\"value\":9").into_bytes();
        assert_ne!(edited[1].1, good[1].1);
        let r = replay(&edited, None, Until::everything());
        assert_eq!(r.broken.as_ref().map(|b| b.seq), Some(3), "{:?}", r.broken);

        // Two entries swapped.
        let mut swapped = good.clone();
        swapped.swap(1, 2);
        let (k1, k2) = (swapped[1].0.clone(), swapped[2].0.clone());
        swapped[1].0 = k2;
        swapped[2].0 = k1;
        assert_eq!(
            replay(&swapped, None, Until::everything())
                .broken
                .map(|b| b.seq),
            Some(2)
        );

        // Garbage.
        let mut junk = good;
        junk[4].1 = b"not json".to_vec();
        assert_eq!(
            replay(&junk, None, Until::everything())
                .broken
                .map(|b| b.seq),
            Some(5)
        );
    }

    #[test]
    fn an_event_cannot_speak_for_another_tenant() {
        let bad = Event::DeleteTenantRecords {
            tenant: "acme".into(),
            deleted: vec![("acls".into(), "globex/prod".into())],
        };
        let r = replay(&entries(&[bad]), None, Until::everything());
        assert!(r.broken.is_some());
        let bad = Event::PruneRevocations {
            tenant: Some("acme".into()),
            now_ms: 1,
            keys: vec!["pri/acmex/ci".into()],
        };
        assert!(replay(&entries(&[bad]), None, Until::everything())
            .broken
            .is_some());
    }

    #[test]
    fn differences_are_named_by_table_and_key() {
        let mut journal = Projection::new();
        let mut live = Projection::new();
        journal.insert((Table::Keys, "same".into()), serde_json::json!(1));
        live.insert((Table::Keys, "same".into()), serde_json::json!(1));
        journal.insert((Table::Keys, "gone".into()), serde_json::json!(1));
        journal.insert((Table::Acls, "a/b".into()), serde_json::json!(1));
        live.insert((Table::Acls, "a/b".into()), serde_json::json!(2));
        live.insert((Table::Meta, "extra".into()), serde_json::json!(2));
        let d = compare(
            &journal,
            &live,
            vec![(Table::Limits, "x".into(), "bad".into())],
        );
        let got: Vec<(Table, &str, &DiffKind)> = d
            .iter()
            .map(|d| (d.table, d.key.as_str(), &d.kind))
            .collect();
        assert_eq!(
            got,
            vec![
                (Table::Keys, "gone", &DiffKind::Missing),
                (Table::Acls, "a/b", &DiffKind::Differs),
                (Table::Meta, "extra", &DiffKind::Unexpected),
                (Table::Limits, "x", &DiffKind::Unreadable("bad".into())),
            ]
        );
    }
}
