//! Rampart's secrets vault: versioned secrets with the semantics of
//! HashiCorp Vault's KV v2 engine, and AppRole machine credentials, stored
//! per tenant in the control-plane [`rampart_store::KvStore`].
//!
//! This crate is logic and storage only: no network, no clock (every
//! operation takes `now_ms`), no async. The Vault-compatible HTTP API (for
//! `hvac` and the `bao` / `vault` CLIs) and the KeyVault API are built on
//! top of [`Vault`] and map [`VaultError`] to their status codes.
//!
//! The result types ([`VersionMeta`], [`VersionInfo`], [`SecretVersion`],
//! [`SecretMetadata`]) have constructors so that another KV v2 store (the
//! server's proxy to an external Vault or OpenBao) can answer in the same
//! types and errors as [`Vault`].
//!
//! # Model
//! - A secret lives at a [`SecretPath`] `APP/ENV/PATH...` inside a tenant.
//!   Its data is a JSON object ([`SecretData`]), handed out in
//!   `Secret<SecretData>` (wiped on drop, `[redacted]` in `Debug`).
//! - Versions count from 1. A write makes a new version, checked against
//!   `cas` when given (`cas = 0`: only if no version exists) or when the
//!   secret has `cas_required`. Beyond `max_versions` (0 means
//!   [`DEFAULT_MAX_VERSIONS`]) the oldest are dropped and `oldest_version`
//!   moves, with Vault's arithmetic. Delete is soft (sets the version's
//!   `deletion_ms`, undone by undelete); destroy drops the data for good.
//!   Reading a deleted or destroyed version gives its metadata and no data.
//! - An AppRole ([`RoleSpec`]) has a public `role_id`; each secret id is
//!   shown once and kept only as a peppered HMAC-SHA256. [`Vault::login`]
//!   needs no tenant: the role id finds it through an index.
//!
//! # Records
//! Every tenant record is sealed with the tenant's keys through the
//! [`rampart_store::Sealer`] given to [`Vault::new`], bound to its table
//! and key, in the catalog's envelope (`b"rsv1" | u8 len | tenant |
//! sealed`); a record moved to another key, table or tenant does not open.
//! Keys are in the clear: names are routing metadata.
//!
//! | Table      | Key                                 | Value                                  |
//! |------------|-------------------------------------|----------------------------------------|
//! | `secrets`  | `TENANT/APP/ENV/PATH`               | sealed JSON: metadata and kept versions (with their data) |
//! | `approles` | `TENANT/role/ROLE`                  | sealed JSON: [`RoleRecord`]            |
//! | `approles` | `TENANT/sid/ROLE/HASH`              | sealed JSON: secret-id hash and [`SecretIdMeta`] |
//! | `approles` | `_roleid/HASH`                      | clear JSON `{tenant, role}`            |
//!
//! `HASH` is the hex HMAC-SHA256, under the pepper, of the secret id (bound
//! to tenant and role) or of the role id; neither id is stored in a key.
//! Listing a folder is a prefix scan of `TENANT/FOLDER/`, so it never
//! crosses tenants. A read opens a secret's record but decodes only the
//! version it returns; a change decodes the whole record.
//!
//! # Writes: group commit
//! Every change (a secret write, a metadata change, a role, a secret id, a
//! login that uses up a secret id, a tenant reseal or erasure) is a
//! read-modify-write *transaction*. Transactions are prepared one at a time
//! under one lock, so check-and-set, version numbers and use counts are
//! exact; but they are not committed under it. Each appends its ops to an
//! open batch, and its new values to an in-memory overlay that the next
//! transactions read before the store, and then waits, without the lock,
//! for its batch. The first waiter to find no commit running leads: it
//! applies the whole batch in one store transaction (one fsync), hands the
//! outcome to every writer of the batch and wakes them. While it commits,
//! the next writers prepare the next batch. A lone writer leads at once, so
//! nothing waits for a timer or another thread.
//!
//! Durability is as before: a change is answered `Ok` only once the store
//! commit holding it is durable. If a commit fails, every writer of the
//! batch gets the error, and so does every writer of the batch staged
//! behind it (whose changes may rest on the failed ones); the overlay is
//! cleared and a transaction prepared across the failure is refused, so
//! nothing is ever committed on top of a change that was lost.
//!
//! Plain reads ([`Vault::read`], metadata, lists, roles) read the store:
//! they see committed changes only, never one that could still fail, and
//! every acknowledged change (read-after-acknowledged-write). Only
//! transactions see the overlay, and one that answers from a staged value
//! without changing anything (a delete of an already-deleted version, a
//! login with an unlimited secret id) waits for that value's commit first.
//! The module `commit` has the details.
//!
//! Writes block their thread until their commit. A batch holds at most as
//! many writes as there are threads waiting, so a caller on an async
//! runtime should run them on blocking threads (`spawn_blocking`), not on
//! its few worker threads, for batches to grow with the load.
//!
//! # Mapping errors to Vault's HTTP API
//! | [`VaultError`]      | Vault status                                     |
//! |---------------------|--------------------------------------------------|
//! | `NotFound`          | 404 with `{"errors":[]}`; but 204 for delete, undelete, destroy and metadata delete (Vault makes those idempotent) |
//! | `VersionNotFound`   | 404 with `{"errors":[]}`                          |
//! | `CasMismatch`, `CasRequired` | 400 with the error text                 |
//! | `InvalidPath`, `InvalidInput` | 400 with the error text                |
//! | `LoginDenied`       | 400 `invalid role or secret ID` (Vault's AppRole answers 400, not 403) |
//! | `Storage`           | 500 with a generic message; log the detail       |
//!
//! A read that returns `data: None` (deleted or destroyed version) is a 404
//! whose body still carries `data: null` and the version metadata, as
//! Vault's. An empty [`Vault::list`] is a 404. Times are milliseconds; Vault
//! prints RFC 3339 and `""` for no `deletion_time`.
//!
//! # Layout
//! - `path`: [`SecretPath`], [`SecretPrefix`], [`AppName`], [`EnvName`].
//! - `data`: [`SecretData`], and the JSON merge patch.
//! - `kv2`: the KV v2 rules over one secret's record, free of storage.
//! - `approle`: roles, secret ids and the pure login check.
//! - `cidr`: [`Cidr`] blocks for address binding.
//! - `vault`: [`Vault`], the operations over the store, and sealing.
//! - `commit`: the write transactions and their group commit.
//! - `error`: [`VaultError`].

mod approle;
mod cidr;
mod commit;
mod data;
mod error;
mod kv2;
mod path;
mod vault;

#[cfg(test)]
mod tests;

pub use approle::{
    uuid_text, uuid_v4_text, RoleLogin, RoleName, RoleRecord, RoleSpec, SecretIdMeta,
    MAX_ROLE_NAME_LEN,
};
pub use cidr::{Cidr, CidrError};
pub use data::SecretData;
pub use error::VaultError;
pub use kv2::{
    CustomMetadataChange, MetadataUpdate, SecretMetadata, SecretVersion, VersionInfo, VersionMeta,
    DEFAULT_MAX_VERSIONS, MAX_CUSTOM_METADATA_KEYS, MAX_CUSTOM_METADATA_KEY_LEN,
    MAX_CUSTOM_METADATA_VALUE_LEN, MAX_DATA_BYTES,
};
pub use path::{AppName, EnvName, PathError, SecretPath, SecretPrefix, MAX_SECRET_PATH_LEN};
pub use vault::{Vault, VersionOp, MAX_RECORD_BYTES};
