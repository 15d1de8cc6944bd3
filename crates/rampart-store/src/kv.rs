//! The storage interface the rest of Rampart depends on, apart from any
//! engine: named tables of string keys and byte values, read and written in
//! atomic batches.

use std::fmt;

/// The tables of the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Table {
    Tenants,
    Keys,
    Acls,
    Revocations,
    Streams,
    Meta,
    /// Wrapped key-encryption and data keys.
    Keyring,
    /// Vault secrets (KV v2): one sealed record per secret, keyed
    /// `tenant/app/env/path`.
    Secrets,
    /// Vault AppRole roles, their secret-id hashes, and the role-id index.
    Approles,
    /// Limit overrides, keyed `tenant` or `tenant/principal`.
    Limits,
    /// The control-plane journal: every change the catalog made, in order,
    /// keyed by a zero-padded sequence number (see `journal`).
    Events,
}

impl Table {
    pub const ALL: [Table; 11] = [
        Table::Tenants,
        Table::Keys,
        Table::Acls,
        Table::Revocations,
        Table::Streams,
        Table::Meta,
        Table::Keyring,
        Table::Secrets,
        Table::Approles,
        Table::Limits,
        Table::Events,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Table::Tenants => "tenants",
            Table::Keys => "keys",
            Table::Acls => "acls",
            Table::Revocations => "revocations",
            Table::Streams => "streams",
            Table::Meta => "meta",
            Table::Keyring => "keyring",
            Table::Secrets => "secrets",
            Table::Approles => "approles",
            Table::Limits => "limits",
            Table::Events => "events",
        }
    }

    /// The table called `name` ([`Table::name`]).
    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// Makes the entries to append to a table from its current last entry
/// ([`KvStore::apply_appending`]).
pub type Appender<'a> =
    dyn FnMut(Option<(String, Vec<u8>)>) -> Result<Vec<(String, Vec<u8>)>, StoreError> + 'a;

/// Every table with its entries in key order, as of one moment
/// ([`KvStore::snapshot`]).
pub type Snapshot = Vec<(Table, Vec<(String, Vec<u8>)>)>;

/// One change in an atomic batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put(Table, String, Vec<u8>),
    Delete(Table, String),
}

/// A storage failure. The message is for operators, never for clients.
#[derive(Debug)]
pub struct StoreError(pub String);

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "storage: {}", self.0)
    }
}

impl std::error::Error for StoreError {}

/// A key-value engine. Implementations: [`crate::RedbStore`] (embedded, the
/// default); a shared database for clusters later, behind the same trait.
pub trait KvStore: Send + Sync + fmt::Debug {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Every entry whose key starts with `prefix`, in key order.
    fn scan(&self, table: Table, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// Applies every op or none, durably, before returning.
    fn apply(&self, ops: Vec<Op>) -> Result<(), StoreError>;
    /// The entry with the greatest key of `table`.
    fn last(&self, table: Table) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        Ok(self.scan(table, "")?.pop())
    }
    /// Applies `ops` and appends to `table`, every op and entry or none,
    /// durably. `append` is called inside the write, with the last entry
    /// of `table` as of that write, so concurrent appenders see each
    /// other's entries and never pick the same key; when it fails, nothing
    /// is written. It runs while the engine holds its write lock: it must
    /// not use the store itself. Engines that cannot read and write in one
    /// atomic step refuse.
    fn apply_appending(
        &self,
        ops: Vec<Op>,
        table: Table,
        append: &mut Appender<'_>,
    ) -> Result<(), StoreError> {
        let _ = (ops, table, append);
        Err(StoreError(
            "this store cannot append to a table atomically".into(),
        ))
    }
    /// Every entry of every table as of one moment (one read transaction),
    /// for backups. Engines that cannot read all tables at one moment
    /// refuse rather than return a copy torn between writes.
    fn snapshot(&self) -> Result<Snapshot, StoreError> {
        Err(StoreError(
            "this store cannot read every table at one moment".into(),
        ))
    }
}
