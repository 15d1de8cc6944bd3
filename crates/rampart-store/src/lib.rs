//! Rampart control-plane storage.
//!
//! The rest of Rampart depends on the [`KvStore`] trait and the typed
//! [`Catalog`] on top of it, never on an engine. The embedded default,
//! [`RedbStore`], keeps everything in one file under the data directory and
//! needs no other server.
//!
//! # Layout
//! - `kv`: the engine interface ([`KvStore`], [`Table`], [`Op`]).
//! - `redb_store`: the embedded engine.
//! - `catalog`: typed records (tenants, keys, ACL documents, revocations,
//!   streams, limits, meta values) stored as JSON; every write also appends
//!   its event to the journal in the same batch.
//! - `journal`: the control-plane journal ([`Event`]s, hash-chained, sealed
//!   per tenant) and its pure [`replay`], from which the catalog's tables
//!   can be rebuilt and checked ([`Catalog::rebuild_report`]).

mod catalog;
#[cfg(test)]
mod fixtures;
mod journal;
mod kv;
mod redb_store;

pub use catalog::{
    AclRecord, Catalog, DurableSpec, KeyRecord, LimitRecord, RebuildReport, Revocation, Revoked,
    Sealer, StreamRecord, TenantRecord,
};
pub use journal::{
    replay, ChainBreak, DiffKind, Difference, Event, Projection, Replay, SnapshotRecord, Until,
    PROJECTED_TABLES,
};
pub use kv::{Appender, KvStore, Op, Snapshot, StoreError, Table};
pub use redb_store::RedbStore;
