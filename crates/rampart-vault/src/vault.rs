//! [`Vault`]: the KV v2 and AppRole operations over a [`KvStore`], with
//! every tenant record sealed by the tenant's keys.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use rampart_identity::{Pepper, Secret};
use rampart_proto::TenantId;
use rampart_store::{KvStore, Op, Sealer, Table};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::approle::{
    check_login, hash_hex, mac, new_secret_id, new_uuid, RoleIdIndex, RoleLogin, RoleName,
    RoleRecord, RoleSpec, SecretIdMeta, SecretIdRecord, MAX_CREDENTIAL_LEN,
};
use crate::commit::{GroupCommit, Txn};
use crate::data::SecretData;
use crate::error::VaultError;
use crate::kv2::{
    MetadataUpdate, SecretMetadata, SecretRecord, SecretVersion, SecretView, VersionInfo,
};
use crate::path::{SecretPath, SecretPrefix};

/// What [`Vault::change_versions`] does to the versions it is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionOp {
    /// Soft-delete: the data stays, reads see the version as deleted.
    Delete,
    /// Clear a soft deletion (destroyed versions stay destroyed).
    Undelete,
    /// Drop the data for good; the metadata stays, with `destroyed` set.
    Destroy,
}

impl VersionOp {
    /// Vault's name for it, as in its endpoints (`/v1/secret/delete/...`).
    pub fn as_str(self) -> &'static str {
        match self {
            VersionOp::Delete => "delete",
            VersionOp::Undelete => "undelete",
            VersionOp::Destroy => "destroy",
        }
    }
}

/// Largest stored record (a secret with all its kept versions), as JSON
/// before sealing, in bytes. A write that would pass it is refused: lower
/// `max_versions` or destroy old versions.
pub const MAX_RECORD_BYTES: usize = 8 * 1024 * 1024;

/// Envelope of a sealed record, the same as the catalog's:
/// `b"rsv1" | u8 tenant length | tenant | sealed bytes`.
const SEALED_MAGIC: &[u8; 4] = b"rsv1";
/// Key prefix of the role-id index in [`Table::Approles`]. `_` cannot start
/// a tenant name, so the index never meets a tenant's keys.
const ROLE_ID_INDEX: &str = "_roleid/";
/// Domain separation of the peppered hashes.
const ROLE_ID_CONTEXT: &str = "rampart-vault/approle/role-id";
const SECRET_ID_CONTEXT: &str = "rampart-vault/approle/secret-id";

fn storage(e: impl std::fmt::Display) -> VaultError {
    VaultError::Storage(e.to_string())
}

fn secret_key(tenant: &TenantId, path: &SecretPath) -> String {
    format!("{tenant}/{path}")
}

/// Whether a role id and secret id are of a length a login looks up at
/// all (neither empty nor over [`MAX_CREDENTIAL_LEN`]).
fn credentials_fit(role_id: &str, secret_id: &str) -> bool {
    let fits = |s: &str| !s.is_empty() && s.len() <= MAX_CREDENTIAL_LEN;
    fits(role_id) && fits(secret_id)
}

fn role_prefix(tenant: &TenantId) -> String {
    format!("{tenant}/role/")
}

fn role_key(tenant: &TenantId, role: &RoleName) -> String {
    format!("{tenant}/role/{role}")
}

fn secret_id_prefix(tenant: &TenantId, role: &RoleName) -> String {
    format!("{tenant}/sid/{role}/")
}

/// The secrets vault of every tenant. Cheap to share behind an `Arc`;
/// reads run in parallel and see committed data only; writes
/// (read-modify-write of records) are prepared one at a time, so that
/// check-and-set and use counts are exact, and committed in groups: a
/// write returns once it is durable, sharing the store commit with the
/// writes prepared while the previous commit ran (see the crate docs).
#[derive(Debug)]
pub struct Vault {
    kv: Arc<dyn KvStore>,
    sealer: Arc<dyn Sealer>,
    pepper: Arc<Pepper>,
    commits: GroupCommit,
}

// === impl Vault: records ===

impl Vault {
    /// A vault over `kv`, sealing tenant records with `sealer` and hashing
    /// AppRole secret ids (and role ids, for the index) with `pepper`.
    pub fn new(
        kv: Arc<dyn KvStore>,
        sealer: Arc<dyn Sealer>,
        pepper: impl Into<Arc<Pepper>>,
    ) -> Self {
        Self {
            commits: GroupCommit::new(Arc::clone(&kv)),
            kv,
            sealer,
            pepper: pepper.into(),
        }
    }

    /// Store commits attempted by writes so far.
    #[cfg(test)]
    pub(crate) fn store_commits(&self) -> u64 {
        self.commits.commits()
    }

    /// Changes waiting for the next store commit.
    #[cfg(test)]
    pub(crate) fn staged_changes(&self) -> usize {
        self.commits.staged()
    }

    fn seal_raw(
        &self,
        tenant: &TenantId,
        table: Table,
        key: &str,
        plain: &[u8],
    ) -> Result<Vec<u8>, VaultError> {
        let tb = tenant.as_str().as_bytes();
        let len = u8::try_from(tb.len()).map_err(|_| storage("tenant name too long"))?;
        let sealed = self.sealer.seal(tenant.as_str(), table, key, plain)?;
        let mut out = Vec::with_capacity(5 + tb.len() + sealed.len());
        out.extend_from_slice(SEALED_MAGIC);
        out.push(len);
        out.extend_from_slice(tb);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn seal<T: Serialize>(
        &self,
        tenant: &TenantId,
        table: Table,
        key: &str,
        value: &T,
    ) -> Result<Vec<u8>, VaultError> {
        let plain = Secret::new(serde_json::to_vec(value).map_err(storage)?);
        if plain.expose().len() > MAX_RECORD_BYTES {
            return Err(VaultError::InvalidInput(format!(
                "record larger than {MAX_RECORD_BYTES} bytes: lower max_versions or destroy old versions"
            )));
        }
        self.seal_raw(tenant, table, key, plain.expose())
    }

    /// Opens a sealed record stored under `key`, which must belong to
    /// `tenant`. Records in the clear, or labelled with another tenant, are
    /// refused.
    fn open_raw(
        &self,
        tenant: &TenantId,
        table: Table,
        key: &str,
        raw: &[u8],
    ) -> Result<Secret<Vec<u8>>, VaultError> {
        let not_sealed = || storage(format!("record {}/{key} is not sealed", table.name()));
        let rest = raw.strip_prefix(SEALED_MAGIC).ok_or_else(not_sealed)?;
        let (&len, rest) = rest.split_first().ok_or_else(not_sealed)?;
        let (label, sealed) = rest
            .split_at_checked(usize::from(len))
            .ok_or_else(not_sealed)?;
        if label != tenant.as_str().as_bytes() {
            return Err(storage(format!(
                "record {}/{key} is labelled with another tenant",
                table.name()
            )));
        }
        Ok(Secret::new(self.sealer.open(
            tenant.as_str(),
            table,
            key,
            sealed,
        )?))
    }

    fn open<T: DeserializeOwned>(
        &self,
        tenant: &TenantId,
        table: Table,
        key: &str,
        raw: &[u8],
    ) -> Result<T, VaultError> {
        self.open_with(tenant, table, key, raw, |plain| {
            serde_json::from_slice(plain)
        })
    }

    /// Opens a sealed record and decodes it with `decode`, which may borrow
    /// from the opened bytes while it runs (they are zeroized after).
    fn open_with<R>(
        &self,
        tenant: &TenantId,
        table: Table,
        key: &str,
        raw: &[u8],
        decode: impl FnOnce(&[u8]) -> serde_json::Result<R>,
    ) -> Result<R, VaultError> {
        let plain = self.open_raw(tenant, table, key, raw)?;
        decode(plain.expose())
            .map_err(|e| storage(format!("corrupt record {}/{key}: {e}", table.name())))
    }

    /// A committed record (plain reads never see changes in flight).
    fn get<T: DeserializeOwned>(
        &self,
        tenant: &TenantId,
        table: Table,
        key: &str,
    ) -> Result<Option<T>, VaultError> {
        self.get_with(tenant, table, key, |plain| serde_json::from_slice(plain))
    }

    /// As [`Vault::get`], decoding the opened record with `decode` (see
    /// [`Vault::open_with`]).
    fn get_with<R>(
        &self,
        tenant: &TenantId,
        table: Table,
        key: &str,
        decode: impl FnOnce(&[u8]) -> serde_json::Result<R>,
    ) -> Result<Option<R>, VaultError> {
        self.kv
            .get(table, key)?
            .map(|raw| self.open_with(tenant, table, key, &raw, decode))
            .transpose()
    }

    /// The newest record, staged or committed, inside a write.
    fn get_latest<T: DeserializeOwned>(
        &self,
        tx: &mut Txn<'_>,
        tenant: &TenantId,
        table: Table,
        key: &str,
    ) -> Result<Option<T>, VaultError> {
        tx.get(table, key)?
            .map(|raw| self.open(tenant, table, key, &raw))
            .transpose()
    }

    /// Runs `f` on the newest state of a secret's record in a write
    /// transaction and stores the record again if `f` says it changed. A
    /// missing secret is created when `create`, else
    /// [`VaultError::NotFound`].
    fn modify<R>(
        &self,
        tenant: &TenantId,
        path: &SecretPath,
        create: bool,
        now_ms: u64,
        f: impl FnOnce(&mut SecretRecord) -> Result<(R, bool), VaultError>,
    ) -> Result<R, VaultError> {
        let key = secret_key(tenant, path);
        self.commits.run(|tx| {
            let mut rec = match self.get_latest::<SecretRecord>(tx, tenant, Table::Secrets, &key)? {
                Some(r) => r,
                None if create => SecretRecord::new(now_ms),
                None => return Err(VaultError::NotFound),
            };
            let (out, changed) = f(&mut rec)?;
            if changed {
                let v = self.seal(tenant, Table::Secrets, &key, &rec)?;
                tx.push(Op::Put(Table::Secrets, key, v));
            }
            Ok(out)
        })
    }

    fn load(&self, tenant: &TenantId, path: &SecretPath) -> Result<SecretRecord, VaultError> {
        self.get(tenant, Table::Secrets, &secret_key(tenant, path))?
            .ok_or(VaultError::NotFound)
    }
}

fn need_versions(versions: &[u64]) -> Result<(), VaultError> {
    if versions.is_empty() {
        return Err(VaultError::InvalidInput(
            "no version number provided".into(),
        ));
    }
    Ok(())
}

// === impl Vault: KV v2 ===

impl Vault {
    /// Reads a version: `None` or `Some(0)` is the current one. A deleted
    /// or destroyed version comes back with `data: None`.
    pub fn read(
        &self,
        tenant: &TenantId,
        path: &SecretPath,
        version: Option<u64>,
        now_ms: u64,
    ) -> Result<SecretVersion, VaultError> {
        // Only the version read is decoded (see `SecretView`).
        self.get_with(tenant, Table::Secrets, &secret_key(tenant, path), |plain| {
            serde_json::from_slice::<SecretView<'_>>(plain).map(|view| view.read(version, now_ms))
        })?
        .ok_or(VaultError::NotFound)?
    }

    /// Writes a new version. `cas`: `Some(0)` only if the secret has no
    /// version yet, `Some(n)` only if the current version is `n`.
    pub fn write(
        &self,
        tenant: &TenantId,
        path: &SecretPath,
        data: &Secret<SecretData>,
        cas: Option<u64>,
        now_ms: u64,
    ) -> Result<VersionInfo, VaultError> {
        self.modify(tenant, path, true, now_ms, |r| {
            Ok((r.write(data, cas, now_ms)?, true))
        })
    }

    /// Merges `patch` (JSON merge patch: `null` removes a key) into the
    /// current version, making a new version. The current version must be
    /// readable; `cas` as for [`Vault::write`].
    pub fn patch(
        &self,
        tenant: &TenantId,
        path: &SecretPath,
        patch: &Secret<SecretData>,
        cas: Option<u64>,
        now_ms: u64,
    ) -> Result<VersionInfo, VaultError> {
        self.modify(tenant, path, false, now_ms, |r| {
            Ok((r.patch(patch, cas, now_ms)?, true))
        })
    }

    /// Soft-deletes the current version (undo with
    /// [`Vault::undelete_versions`]).
    pub fn delete_latest(
        &self,
        tenant: &TenantId,
        path: &SecretPath,
        now_ms: u64,
    ) -> Result<(), VaultError> {
        self.modify(tenant, path, false, now_ms, |r| {
            Ok(((), r.delete_latest(now_ms)))
        })
    }

    /// Soft-deletes, undeletes or destroys versions (see [`VersionOp`]).
    /// Unknown versions are skipped; destroyed ones stay destroyed.
    pub fn change_versions(
        &self,
        op: VersionOp,
        tenant: &TenantId,
        path: &SecretPath,
        versions: &[u64],
        now_ms: u64,
    ) -> Result<(), VaultError> {
        need_versions(versions)?;
        self.modify(tenant, path, false, now_ms, |r| {
            let changed = match op {
                VersionOp::Delete => r.delete_versions(versions, now_ms),
                VersionOp::Undelete => r.undelete_versions(versions, now_ms),
                VersionOp::Destroy => r.destroy_versions(versions),
            };
            Ok(((), changed))
        })
    }

    pub fn read_metadata(
        &self,
        tenant: &TenantId,
        path: &SecretPath,
    ) -> Result<SecretMetadata, VaultError> {
        Ok(self.load(tenant, path)?.metadata())
    }

    /// Vault's metadata POST: sets the given fields, creating the secret
    /// (with no version) when it does not exist.
    pub fn write_metadata(
        &self,
        tenant: &TenantId,
        path: &SecretPath,
        update: MetadataUpdate,
        now_ms: u64,
    ) -> Result<SecretMetadata, VaultError> {
        self.modify(tenant, path, true, now_ms, |r| {
            r.update_metadata(update)?;
            Ok((r.metadata(), true))
        })
    }

    /// Vault's metadata PATCH: like [`Vault::write_metadata`], but the
    /// secret must exist.
    pub fn patch_metadata(
        &self,
        tenant: &TenantId,
        path: &SecretPath,
        update: MetadataUpdate,
        now_ms: u64,
    ) -> Result<SecretMetadata, VaultError> {
        self.modify(tenant, path, false, now_ms, |r| {
            r.update_metadata(update)?;
            Ok((r.metadata(), true))
        })
    }

    /// Removes the secret: its metadata and every version.
    pub fn delete_metadata(&self, tenant: &TenantId, path: &SecretPath) -> Result<(), VaultError> {
        let key = secret_key(tenant, path);
        self.commits.run(|tx| {
            if tx.get(Table::Secrets, &key)?.is_none() {
                return Err(VaultError::NotFound);
            }
            tx.push(Op::Delete(Table::Secrets, key));
            Ok(())
        })
    }

    /// The direct children of a folder, sorted: secrets by name, folders
    /// with a trailing `/`. Empty when the folder holds nothing.
    pub fn list(
        &self,
        tenant: &TenantId,
        prefix: &SecretPrefix,
    ) -> Result<Vec<String>, VaultError> {
        let scan = if prefix.as_str().is_empty() {
            format!("{tenant}/")
        } else {
            format!("{tenant}/{prefix}/")
        };
        let mut out = BTreeSet::new();
        for (key, _) in self.kv.scan(Table::Secrets, &scan)? {
            let Some(rest) = key.strip_prefix(&scan) else {
                continue;
            };
            out.insert(match rest.split_once('/') {
                Some((folder, _)) => format!("{folder}/"),
                None => rest.to_string(),
            });
        }
        Ok(out.into_iter().collect())
    }
}

// === impl Vault: AppRole ===

impl Vault {
    fn role_id_index_key(&self, role_id: &str) -> String {
        let h = mac(&self.pepper, ROLE_ID_CONTEXT, &[role_id.as_bytes()]);
        format!("{ROLE_ID_INDEX}{}", hash_hex(&h))
    }

    fn secret_id_key(&self, tenant: &TenantId, role: &RoleName, secret_id: &str) -> String {
        let h = self.secret_id_hash(tenant, role, secret_id);
        format!("{}{}", secret_id_prefix(tenant, role), hash_hex(&h))
    }

    fn secret_id_hash(
        &self,
        tenant: &TenantId,
        role: &RoleName,
        secret_id: &str,
    ) -> rampart_identity::KeyHash {
        mac(
            &self.pepper,
            SECRET_ID_CONTEXT,
            &[
                tenant.as_str().as_bytes(),
                role.as_str().as_bytes(),
                secret_id.as_bytes(),
            ],
        )
    }

    fn load_role(&self, tenant: &TenantId, role: &RoleName) -> Result<RoleRecord, VaultError> {
        self.get(tenant, Table::Approles, &role_key(tenant, role))?
            .ok_or(VaultError::NotFound)
    }

    fn load_role_latest(
        &self,
        tx: &mut Txn<'_>,
        tenant: &TenantId,
        role: &RoleName,
    ) -> Result<RoleRecord, VaultError> {
        self.get_latest(tx, tenant, Table::Approles, &role_key(tenant, role))?
            .ok_or(VaultError::NotFound)
    }

    /// Creates a role with a new random `role_id`, or updates it (keeping
    /// its `role_id`, as Vault does). Secret ids already issued keep their
    /// expiry and use count.
    pub fn create_role(
        &self,
        tenant: &TenantId,
        spec: RoleSpec,
        now_ms: u64,
    ) -> Result<RoleRecord, VaultError> {
        spec.check()?;
        let key = role_key(tenant, &spec.name);
        self.commits.run(|tx| {
            let existing: Option<RoleRecord> =
                self.get_latest(tx, tenant, Table::Approles, &key)?;
            let rec = match existing {
                Some(old) => RoleRecord::from_spec(spec, old.role_id, old.created_ms, now_ms),
                None => {
                    let rec = RoleRecord::from_spec(spec, new_uuid()?, now_ms, now_ms);
                    let index = RoleIdIndex {
                        tenant: tenant.to_string(),
                        role: rec.name.to_string(),
                    };
                    tx.push(Op::Put(
                        Table::Approles,
                        self.role_id_index_key(&rec.role_id),
                        serde_json::to_vec(&index).map_err(storage)?,
                    ));
                    rec
                }
            };
            // A failure here drops the index op pushed above: pushed
            // changes are staged only when the transaction succeeds.
            tx.push(Op::Put(
                Table::Approles,
                key.clone(),
                self.seal(tenant, Table::Approles, &key, &rec)?,
            ));
            Ok(rec)
        })
    }

    pub fn read_role(&self, tenant: &TenantId, role: &RoleName) -> Result<RoleRecord, VaultError> {
        self.load_role(tenant, role)
    }

    /// The tenant's role names, sorted.
    pub fn list_roles(&self, tenant: &TenantId) -> Result<Vec<RoleName>, VaultError> {
        let prefix = role_prefix(tenant);
        self.kv
            .scan(Table::Approles, &prefix)?
            .into_iter()
            .map(|(k, _)| {
                RoleName::parse(k.strip_prefix(&prefix).unwrap_or_default())
                    .map_err(|e| storage(format!("bad role key {k}: {e}")))
            })
            .collect()
    }

    /// Deletes a role, its role-id index entry and every secret id issued
    /// for it.
    pub fn delete_role(&self, tenant: &TenantId, role: &RoleName) -> Result<(), VaultError> {
        self.commits.run(|tx| {
            let rec = self.load_role_latest(tx, tenant, role)?;
            tx.push(Op::Delete(Table::Approles, role_key(tenant, role)));
            tx.push(Op::Delete(
                Table::Approles,
                self.role_id_index_key(&rec.role_id),
            ));
            for (k, _) in tx.scan(Table::Approles, &secret_id_prefix(tenant, role))? {
                tx.push(Op::Delete(Table::Approles, k));
            }
            Ok(())
        })
    }

    /// Issues a secret id for a role. The id is returned once and never
    /// stored: only its peppered hash, bound to tenant and role, is kept.
    pub fn generate_secret_id(
        &self,
        tenant: &TenantId,
        role: &RoleName,
        now_ms: u64,
    ) -> Result<(Secret<String>, SecretIdMeta), VaultError> {
        self.commits.run(|tx| {
            let rec = self.load_role_latest(tx, tenant, role)?;
            let secret_id = new_secret_id()?;
            let hash = self.secret_id_hash(tenant, role, secret_id.expose());
            let key = format!("{}{}", secret_id_prefix(tenant, role), hash_hex(&hash));
            let meta = SecretIdMeta {
                accessor: new_uuid()?,
                created_ms: now_ms,
                expires_ms: rec.secret_id_ttl.map(|ttl| {
                    now_ms.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
                }),
                uses_left: (rec.secret_id_num_uses > 0).then_some(rec.secret_id_num_uses),
            };
            let stored = SecretIdRecord {
                hash: hash.to_string(),
                meta: meta.clone(),
            };
            let v = self.seal(tenant, Table::Approles, &key, &stored)?;
            tx.push(Op::Put(Table::Approles, key, v));
            Ok((secret_id, meta))
        })
    }

    /// Opens the secret-id records of a role, scanned from `rows`.
    fn secret_ids(
        &self,
        tenant: &TenantId,
        rows: Vec<(String, Vec<u8>)>,
    ) -> Result<Vec<(String, SecretIdRecord)>, VaultError> {
        rows.into_iter()
            .map(|(k, raw)| {
                let r = self.open(tenant, Table::Approles, &k, &raw)?;
                Ok((k, r))
            })
            .collect()
    }

    /// The live secret ids of a role (their metadata), oldest first.
    pub fn list_secret_ids(
        &self,
        tenant: &TenantId,
        role: &RoleName,
    ) -> Result<Vec<SecretIdMeta>, VaultError> {
        self.load_role(tenant, role)?;
        let rows = self
            .kv
            .scan(Table::Approles, &secret_id_prefix(tenant, role))?;
        let mut out: Vec<SecretIdMeta> = self
            .secret_ids(tenant, rows)?
            .into_iter()
            .map(|(_, r)| r.meta)
            .collect();
        out.sort_by(|a, b| (a.created_ms, &a.accessor).cmp(&(b.created_ms, &b.accessor)));
        Ok(out)
    }

    /// Destroys a secret id by its accessor.
    pub fn destroy_secret_id(
        &self,
        tenant: &TenantId,
        role: &RoleName,
        accessor: &str,
    ) -> Result<(), VaultError> {
        self.commits.run(|tx| {
            let rows = tx.scan(Table::Approles, &secret_id_prefix(tenant, role))?;
            let key = self
                .secret_ids(tenant, rows)?
                .into_iter()
                .find(|(_, r)| r.meta.accessor == accessor)
                .map(|(k, _)| k)
                .ok_or(VaultError::NotFound)?;
            tx.push(Op::Delete(Table::Approles, key));
            Ok(())
        })
    }

    /// Destroys a secret id given the id itself (Vault's
    /// `secret-id/destroy`).
    pub fn destroy_secret_id_value(
        &self,
        tenant: &TenantId,
        role: &RoleName,
        secret_id: &Secret<String>,
    ) -> Result<(), VaultError> {
        let key = self.secret_id_key(tenant, role, secret_id.expose());
        self.commits.run(|tx| {
            if tx.get(Table::Approles, &key)?.is_none() {
                return Err(VaultError::NotFound);
            }
            tx.push(Op::Delete(Table::Approles, key));
            Ok(())
        })
    }

    /// Logs in with a role id and secret id, from `client_ip` when known.
    ///
    /// Checks, in this order of lookups: the role id names a role, the
    /// secret id was issued for it (peppered hash, compared in constant
    /// time), has not expired, has uses left, and the address is inside the
    /// role's bound CIDRs. Then uses one use (deleting the secret id at
    /// zero). Any failure is [`VaultError::LoginDenied`]; storage failures
    /// are [`VaultError::Storage`].
    pub fn login(
        &self,
        role_id: &str,
        secret_id: &Secret<String>,
        client_ip: Option<IpAddr>,
        now_ms: u64,
    ) -> Result<RoleLogin, VaultError> {
        let sid = secret_id.expose();
        if !credentials_fit(role_id, sid) {
            return Err(VaultError::LoginDenied);
        }
        // The outer result is the transaction's (its change, if any, is
        // stored only when it is `Ok`); the inner one is the login's, so
        // that a refused login still tidies an expired secret id.
        self.commits
            .run(|tx| self.login_in(tx, role_id, sid, client_ip, now_ms))?
    }

    /// [`login`](Self::login), if it can answer without blocking its
    /// thread: `None` when the login would change the store (a secret id
    /// with limited uses, an expired one to tidy away) or answer from a
    /// change not committed yet. Call `login` then, where blocking is fine
    /// (an async server on its blocking pool). Most logins (a secret id
    /// without a use limit) answer here, without a hand-off.
    pub fn try_login(
        &self,
        role_id: &str,
        secret_id: &Secret<String>,
        client_ip: Option<IpAddr>,
        now_ms: u64,
    ) -> Option<Result<RoleLogin, VaultError>> {
        let sid = secret_id.expose();
        if !credentials_fit(role_id, sid) {
            return Some(Err(VaultError::LoginDenied));
        }
        // The transaction's result, then the login's, as in `login`.
        let ran = self
            .commits
            .run_now(|tx| self.login_in(tx, role_id, sid, client_ip, now_ms))?;
        Some(ran.and_then(|login| login))
    }

    fn login_in(
        &self,
        tx: &mut Txn<'_>,
        role_id: &str,
        sid: &str,
        client_ip: Option<IpAddr>,
        now_ms: u64,
    ) -> Result<Result<RoleLogin, VaultError>, VaultError> {
        let denied = Ok(Err(VaultError::LoginDenied));
        let Some(raw) = tx.get(Table::Approles, &self.role_id_index_key(role_id))? else {
            return denied;
        };
        let index: RoleIdIndex = serde_json::from_slice(&raw).map_err(storage)?;
        let tenant = TenantId::parse(&index.tenant).map_err(storage)?;
        let role_name = RoleName::parse(&index.role).map_err(storage)?;
        let role = match self.load_role_latest(tx, &tenant, &role_name) {
            Ok(r) => r,
            Err(VaultError::NotFound) => return denied,
            Err(e) => return Err(e),
        };
        // The index is in the clear: check it led to the role that really
        // has this role id.
        let presented = mac(&self.pepper, ROLE_ID_CONTEXT, &[role_id.as_bytes()]);
        let actual = mac(&self.pepper, ROLE_ID_CONTEXT, &[role.role_id.as_bytes()]);
        if !presented.ct_eq(&actual) {
            return denied;
        }
        let hash = self.secret_id_hash(&tenant, &role_name, sid);
        let key = format!(
            "{}{}",
            secret_id_prefix(&tenant, &role_name),
            hash_hex(&hash)
        );
        let Some(mut rec) =
            self.get_latest::<SecretIdRecord>(tx, &tenant, Table::Approles, &key)?
        else {
            return denied;
        };
        if let Err(refused) = check_login(&role, &rec, &hash, client_ip, now_ms) {
            if rec.meta.expires_ms.is_some_and(|e| now_ms >= e) {
                // Tidy: an expired secret id can never be used again.
                tx.push(Op::Delete(Table::Approles, key));
            }
            return Ok(Err(refused));
        }
        match rec.meta.uses_left {
            None => {}
            Some(n) if n <= 1 => tx.push(Op::Delete(Table::Approles, key)),
            Some(n) => {
                rec.meta.uses_left = Some(n - 1);
                let v = self.seal(&tenant, Table::Approles, &key, &rec)?;
                tx.push(Op::Put(Table::Approles, key, v));
            }
        }
        Ok(Ok(RoleLogin {
            tenant,
            role: role_name,
            roles: role.roles,
            token_ttl: role.token_ttl,
            token_max_ttl: role.token_max_ttl,
            secret_id_accessor: rec.meta.accessor,
        }))
    }
}

// === impl Vault: tenant lifecycle ===

impl Vault {
    /// Seals every vault record of a tenant again, so each is sealed with
    /// the tenant's newest keys (after a key rotation). Returns how many.
    pub fn reseal_tenant(&self, tenant: &TenantId) -> Result<usize, VaultError> {
        let prefix = format!("{tenant}/");
        self.commits.run(|tx| {
            let mut n = 0;
            for table in [Table::Secrets, Table::Approles] {
                for (k, raw) in tx.scan(table, &prefix)? {
                    let plain = self.open_raw(tenant, table, &k, &raw)?;
                    let v = self.seal_raw(tenant, table, &k, plain.expose())?;
                    tx.push(Op::Put(table, k, v));
                    n += 1;
                }
            }
            Ok(n)
        })
    }

    /// Deletes every vault record of a tenant (erasure): secrets, roles,
    /// secret ids and role-id index entries. Returns how many.
    pub fn erase_tenant(&self, tenant: &TenantId) -> Result<usize, VaultError> {
        let prefix = format!("{tenant}/");
        self.commits.run(|tx| {
            let mut n = 0;
            for table in [Table::Secrets, Table::Approles] {
                for (k, _) in tx.scan(table, &prefix)? {
                    tx.push(Op::Delete(table, k));
                    n += 1;
                }
            }
            for (k, raw) in tx.scan(Table::Approles, ROLE_ID_INDEX)? {
                let index: RoleIdIndex = serde_json::from_slice(&raw).map_err(storage)?;
                if index.tenant == tenant.as_str() {
                    tx.push(Op::Delete(Table::Approles, k));
                    n += 1;
                }
            }
            Ok(n)
        })
    }
}
