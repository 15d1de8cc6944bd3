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
//!   streams) stored as JSON.

mod catalog;
mod kv;
mod redb_store;

pub use catalog::{
    AclRecord, Catalog, DurableSpec, KeyRecord, LimitRecord, Revocation, Revoked, Sealer,
    StreamRecord, TenantRecord,
};
pub use kv::{KvStore, Op, Snapshot, StoreError, Table};
pub use redb_store::RedbStore;
