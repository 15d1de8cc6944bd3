//! Control-plane operations: tenants, managed keys, tokens, ACL documents
//! and declared streams. The HTTPS API authorizes a request, then calls one
//! of these; each writes the store first, then the in-memory state, then
//! tells live connections what changed.

use rampart_limits::QuotaKind;
use std::sync::Arc;

use rampart_authz::{AclDocument, Decision, Permission, Resource, Subject};
use rampart_identity::{generate_managed_key, Principal, PrincipalKind, Secret, TokenClaims};
use rampart_proto::{NamespaceName, ReauthReason, StreamName, StreamPath, TenantId};
use rampart_store::{
    AclRecord, DurableSpec, KeyRecord, Revocation, Revoked, StreamRecord, TenantRecord,
};
use tracing::{info, warn};

use crate::auth::now_ms;
use crate::{streams, Shared};

/// Why a control-plane operation failed. Turned into HTTP responses in
/// `http.rs`, in one place.
#[derive(Debug)]
pub(crate) enum ControlError {
    NotFound(&'static str),
    Conflict(String),
    Invalid(String),
    Storage,
    Limited(rampart_limits::Rejection),
}

impl From<rampart_store::StoreError> for ControlError {
    fn from(e: rampart_store::StoreError) -> Self {
        tracing::error!(error = %e, "storage failure");
        ControlError::Storage
    }
}

/// Why [`Shared::issue_audited`] gave no token. Turned into a wire NACK
/// (`From` for `OpError`) and an HTTP answer (`From` for `ApiError`).
#[derive(Debug)]
pub(crate) enum IssueError {
    /// No random token id could be drawn.
    Internal,
    /// The token's audit record was not durable in time.
    AuditUnavailable,
}

/// A token given out, with its expiry and its audit id (the HMAC of its
/// `jti`, as audit records and Vault's `accessor` name it).
pub(crate) struct Issued {
    pub token: Secret<String>,
    pub expires_ms: u64,
    pub token_id: String,
}

/// A new key, shown once.
#[derive(Debug)]
pub(crate) struct NewKey {
    pub record: KeyRecord,
    pub key: Secret<String>,
}

impl Shared {
    // === tokens ===

    /// Issues a token for `p`, valid for `ttl_ms` (0 = default), never past
    /// the server maximum nor the source credential's own expiry, and gives
    /// it out only once the audit record that `audit` builds (from the
    /// token's audit id and its expiry) is durable:
    /// [`IssueError::AuditUnavailable`] otherwise, and the token is dropped
    /// unseen.
    ///
    /// The record goes to the audit log first and the token is signed while
    /// it is written and fsynced: the Ed25519 signature, the largest CPU
    /// cost of a login, overlaps the wait for the disk instead of coming
    /// before it (see vault step 14 in `docs/performance.md`).
    pub(crate) async fn issue_audited(
        &self,
        p: &Principal,
        ttl_ms: u64,
        audit: impl FnOnce(&str, u64) -> rampart_audit::Event,
    ) -> Result<Issued, IssueError> {
        let (claims, expires_ms) = self.token_claims(p, ttl_ms)?;
        let token_id = self.audit.hmac_id(&claims.jti);
        let ev = audit(&token_id, expires_ms);
        let keys = self.identity.token_keys();
        // `biased`: the record is queued before the signing starts.
        let (durable, token) = tokio::join!(biased; self.audit.mandatory(ev), async {
            keys.signer().issue(&claims)
        });
        durable.map_err(|_| IssueError::AuditUnavailable)?;
        Ok(Issued {
            token,
            expires_ms,
            token_id,
        })
    }

    /// The claims of a token for `p` and when it expires (see
    /// [`Shared::issue_audited`]).
    fn token_claims(&self, p: &Principal, ttl_ms: u64) -> Result<(TokenClaims, u64), IssueError> {
        let now = now_ms();
        let default = self.config.token_ttl_secs * 1000;
        let max = self.config.token_max_ttl_secs * 1000;
        let ttl = if ttl_ms == 0 {
            default
        } else {
            ttl_ms.min(max)
        };
        let mut exp = now + ttl;
        if let Some(src) = p.expires_at_ms {
            exp = exp.min(src);
        }
        let jti = rampart_identity::new_token_id().map_err(|_| IssueError::Internal)?;
        let cid = match p.kind {
            PrincipalKind::ManagedKey => p.credential_id.clone(),
            PrincipalKind::Token => p.parent_credential_id.clone(),
            _ => None,
        };
        let claims = TokenClaims {
            jti,
            tenant: p.tenant.to_string(),
            principal: p.name.clone(),
            roles: p.roles.clone(),
            iat_ms: now,
            exp_ms: exp,
            src: p.kind.as_str().to_string(),
            cid,
        };
        Ok((claims, exp))
    }

    /// Revokes one token, or every token of a principal issued until now,
    /// and closes the connections using them.
    pub(crate) fn revoke_tokens(
        &self,
        tenant: &TenantId,
        token_id: Option<&str>,
        principal: Option<&str>,
    ) -> Result<usize, ControlError> {
        let now = now_ms();
        let until = now + self.config.token_max_ttl_secs * 1000;
        let what = match (token_id, principal) {
            (Some(id), None) => Revoked::Token { id: id.to_string() },
            (None, Some(p)) => Revoked::Principal {
                tenant: tenant.to_string(),
                principal: p.to_string(),
            },
            _ => {
                return Err(ControlError::Invalid(
                    "give exactly one of token_id and principal".into(),
                ))
            }
        };
        self.identity.revoke(Revocation {
            what: what.clone(),
            at_ms: now,
            until_ms: until,
        })?;
        let closed = self.registry.close_where(ReauthReason::Revoked, |p| {
            p.tenant == *tenant
                && p.kind == PrincipalKind::Token
                && match &what {
                    Revoked::Token { id } => p.credential_id.as_deref() == Some(id.as_str()),
                    Revoked::Principal { principal, .. } => p.name == *principal,
                }
        });
        info!(tenant = %tenant, closed, "tokens revoked");
        Ok(closed)
    }

    // === tenants ===

    /// Creates a tenant and its first key (principal `admin`, role
    /// `admin`), shown once: the tenant's own admins take it from there.
    pub(crate) fn create_tenant(
        &self,
        name: &TenantId,
    ) -> Result<(TenantRecord, NewKey), ControlError> {
        if self.identity.tenant(name.as_str()).is_some() {
            return Err(ControlError::Conflict(format!("tenant {name} exists")));
        }
        let now = now_ms();
        let r = TenantRecord {
            name: name.to_string(),
            disabled: false,
            created_ms: now,
            changed_ms: now,
            erased_ms: None,
            disabled_namespaces: Default::default(),
        };
        self.identity.put_tenant(r.clone())?;
        let key = self.create_key(name, "admin", vec!["admin".into()], None)?;
        info!(tenant = %name, "tenant created");
        Ok((r, key))
    }

    /// Disables or enables a tenant. Disabling closes its connections at
    /// once; requests over HTTPS are refused from the next one on.
    pub(crate) fn set_tenant_disabled(
        &self,
        name: &TenantId,
        disabled: bool,
    ) -> Result<(TenantRecord, usize), ControlError> {
        if disabled && self.operator_tenant().is_some_and(|op| op == *name) {
            return Err(ControlError::Conflict(
                "the operator tenant cannot be disabled: no one could enable it again".into(),
            ));
        }
        let mut r = self
            .identity
            .tenant(name.as_str())
            .ok_or(ControlError::NotFound("tenant"))?;
        r.disabled = disabled;
        r.changed_ms = now_ms();
        self.identity.put_tenant(r.clone())?;
        let closed = if disabled {
            self.registry
                .close_where(ReauthReason::TenantDisabled, |p| p.tenant == *name)
        } else {
            0
        };
        info!(tenant = %name, disabled, closed, "tenant state changed");
        Ok((r, closed))
    }

    /// Disables or enables one namespace of a tenant. Requests on a
    /// disabled namespace are refused on every transport and over HTTPS;
    /// its open subscriptions end (the tenant's connections re-check them
    /// at once). Returns the tenant record and whether anything changed.
    pub(crate) fn set_namespace_disabled(
        &self,
        tenant: &TenantId,
        namespace: &NamespaceName,
        disabled: bool,
    ) -> Result<(TenantRecord, bool), ControlError> {
        let mut r = self
            .identity
            .tenant(tenant.as_str())
            .ok_or(ControlError::NotFound("tenant"))?;
        let changed = if disabled {
            r.disabled_namespaces.insert(namespace.to_string())
        } else {
            r.disabled_namespaces.remove(namespace.as_str())
        };
        if changed {
            r.changed_ms = now_ms();
            self.identity.put_tenant(r.clone())?;
            if disabled {
                self.registry.policy_changed(tenant.as_str());
            }
        }
        info!(tenant = %tenant, namespace = %namespace, disabled, changed, "namespace state changed");
        Ok((r, changed))
    }

    /// Erases a tenant: closes its connections, deletes its records,
    /// destroys its keys (so anything sealed with them is unreadable for
    /// good) and keeps its name as a tombstone that is never reused.
    pub(crate) async fn erase_tenant(&self, name: &TenantId) -> Result<usize, ControlError> {
        let mut r = self
            .identity
            .tenant(name.as_str())
            .ok_or(ControlError::NotFound("tenant"))?;
        if r.erased_ms.is_some() {
            return Err(ControlError::Conflict(format!(
                "tenant {name} is already erased"
            )));
        }
        if self.operator_tenant().is_some_and(|op| op == *name) {
            return Err(ControlError::Conflict(
                "the operator tenant cannot be erased".into(),
            ));
        }
        let now = now_ms();
        r.disabled = true;
        r.erased_ms = Some(now);
        r.changed_ms = now;
        self.identity.put_tenant(r)?;
        let closed = self
            .registry
            .close_where(ReauthReason::TenantDisabled, |p| p.tenant == *name);
        self.identity.catalog.delete_tenant_records(name.as_str())?;
        self.vault.erase_tenant(name).map_err(|e| {
            tracing::error!(tenant = %name, error = %e, "deleting the tenant's secrets");
            ControlError::Storage
        })?;
        self.identity.forget_tenant(name.as_str());
        {
            let mut policy = self.policy.write().unwrap_or_else(|e| e.into_inner());
            let scopes: Vec<Option<NamespaceName>> = policy
                .documents()
                .filter(|d| d.tenant() == name)
                .map(|d| d.namespace().cloned())
                .collect();
            for ns in scopes {
                policy.remove(name, ns.as_ref());
            }
        }
        self.broker.cache().erase_tenant(name);
        for d in self.broker.durable_streams() {
            if d.path().tenant == *name {
                if let Some(s) = self.broker.remove_stream(d.path()) {
                    s.close_all().await;
                }
            }
        }
        self.sealer
            .keyring()
            .erase_tenant(name.as_str())
            .await
            .map_err(|e| {
                tracing::error!(tenant = %name, error = %e, "destroying tenant keys");
                ControlError::Storage
            })?;
        self.sealer.forget(name.as_str());
        // Unreadable already (the keys are gone); the files go too.
        let dir = self.config.data_dir.join("streams").join(name.as_str());
        if let Err(e) = tokio::fs::remove_dir_all(&dir).await {
            if e.kind() != std::io::ErrorKind::NotFound {
                warn!(tenant = %name, error = %e, "removing the tenant's stream files failed");
            }
        }
        info!(tenant = %name, closed, "tenant erased");
        Ok(closed)
    }

    /// Gives a tenant new encryption keys: new writes use them at once;
    /// with `reencrypt`, every stored record of the tenant is sealed again
    /// under them now. Returns the new key version and how many records
    /// were re-sealed.
    pub(crate) async fn rotate_tenant_keys(
        &self,
        tenant: &TenantId,
        reencrypt: bool,
    ) -> Result<(u32, usize), ControlError> {
        let keyring = self.sealer.keyring();
        let version = keyring.rotate_tenant(tenant.as_str()).await.map_err(|e| {
            tracing::error!(tenant = %tenant, error = %e, "rotating tenant keys");
            ControlError::Storage
        })?;
        self.sealer.load(tenant.as_str()).await.map_err(|e| {
            tracing::error!(tenant = %tenant, error = %e, "reloading tenant keys");
            ControlError::Storage
        })?;
        let resealed = if reencrypt {
            let secrets = self.vault.reseal_tenant(tenant).map_err(|e| {
                tracing::error!(tenant = %tenant, error = %e, "re-sealing secrets");
                ControlError::Storage
            })?;
            self.identity.catalog.reseal_tenant(tenant.as_str())? + secrets
        } else {
            0
        };
        self.identity
            .catalog
            .put_meta_u64(&format!("key_rotation/{tenant}"), now_ms())?;
        info!(tenant = %tenant, version, resealed, "tenant keys rotated");
        Ok((version, resealed))
    }

    /// Rotates the keys of every tenant whose last rotation (or creation)
    /// is older than `max_age_ms`, re-sealing its records. Returns how many
    /// tenants were rotated.
    pub(crate) async fn rotate_due_tenants(self: &Arc<Self>, max_age_ms: u64) -> usize {
        let now = now_ms();
        let mut n = 0;
        for t in self.identity.tenants() {
            if t.erased_ms.is_some() {
                continue;
            }
            let last = self
                .identity
                .catalog
                .meta_u64(&format!("key_rotation/{}", t.name))
                .ok()
                .flatten()
                .unwrap_or(t.created_ms);
            if now.saturating_sub(last) < max_age_ms {
                continue;
            }
            let Ok(tenant) = TenantId::parse(&t.name) else {
                continue;
            };
            match self.rotate_tenant_keys(&tenant, true).await {
                Ok(_) => {
                    self.start_reencryption(&tenant);
                    n += 1
                }
                Err(e) => {
                    tracing::warn!(tenant = %t.name, error = ?e, "scheduled key rotation failed")
                }
            }
        }
        n
    }

    // === keys ===

    pub(crate) fn create_key(
        &self,
        tenant: &TenantId,
        name: &str,
        roles: Vec<String>,
        expires_in_ms: Option<u64>,
    ) -> Result<NewKey, ControlError> {
        if name.is_empty() || name.len() > 128 || name.chars().any(|c| c.is_control()) {
            return Err(ControlError::Invalid(
                "key name must be 1 to 128 printable characters".into(),
            ));
        }
        for r in &roles {
            if rampart_authz::Role::parse(r).is_none() && !is_custom_role(r) {
                return Err(ControlError::Invalid(format!("unknown role `{r}`")));
            }
        }
        let (id, key) = generate_managed_key().map_err(|_| ControlError::Storage)?;
        let hash = self
            .identity
            .static_keys
            .pepper()
            .hash(key.expose().as_bytes());
        let now = now_ms();
        let record = KeyRecord {
            id,
            tenant: tenant.to_string(),
            name: name.to_string(),
            roles,
            hash: hash.to_string(),
            created_ms: now,
            expires_ms: expires_in_ms.map(|d| now + d),
            revoked_ms: None,
            rotated_to: None,
        };
        self.identity.put_keys(&[&record])?;
        info!(tenant = %tenant, key_id = %record.id, name = %record.name, "key created");
        Ok(NewKey { record, key })
    }

    fn tenant_key(&self, tenant: &TenantId, id: &str) -> Result<KeyRecord, ControlError> {
        self.identity
            .key(id)
            .filter(|k| k.tenant == tenant.as_str())
            .ok_or(ControlError::NotFound("key"))
    }

    /// Revokes a key now and closes every connection that used it (or a
    /// token issued from it).
    pub(crate) fn revoke_key(&self, tenant: &TenantId, id: &str) -> Result<usize, ControlError> {
        let mut k = self.tenant_key(tenant, id)?;
        let now = now_ms();
        k.revoked_ms = Some(k.revoked_ms.map_or(now, |r| r.min(now)));
        self.identity.put_keys(&[&k])?;
        let closed = self.registry.close_where(ReauthReason::Revoked, |p| {
            p.credential_id.as_deref() == Some(id) || p.parent_credential_id.as_deref() == Some(id)
        });
        info!(tenant = %tenant, key_id = %id, closed, "key revoked");
        Ok(closed)
    }

    /// Replaces a key: the new one is valid now, the old one until the
    /// grace period ends (connections using it are asked to re-authenticate
    /// before then).
    pub(crate) fn rotate_key(
        &self,
        tenant: &TenantId,
        id: &str,
        grace_ms: u64,
    ) -> Result<NewKey, ControlError> {
        let mut old = self.tenant_key(tenant, id)?;
        if old.revoked_ms.is_some() {
            return Err(ControlError::Conflict(
                "key is revoked or already rotated".into(),
            ));
        }
        let (new_id, key) = generate_managed_key().map_err(|_| ControlError::Storage)?;
        let now = now_ms();
        let record = KeyRecord {
            id: new_id,
            hash: self
                .identity
                .static_keys
                .pepper()
                .hash(key.expose().as_bytes())
                .to_string(),
            created_ms: now,
            expires_ms: old
                .expires_ms
                .map(|e| now + e.saturating_sub(old.created_ms)),
            revoked_ms: None,
            rotated_to: None,
            ..old.clone()
        };
        old.revoked_ms = Some(now + grace_ms);
        old.rotated_to = Some(record.id.clone());
        self.identity.put_keys(&[&old, &record])?;
        info!(tenant = %tenant, key_id = %id, new_key_id = %record.id, "key rotated");
        Ok(NewKey { record, key })
    }

    // === ACL documents ===

    /// Applies one or more ACL documents (YAML or JSON) for `tenant`.
    pub(crate) fn apply_acl(
        &self,
        tenant: &TenantId,
        text: &str,
    ) -> Result<Vec<String>, ControlError> {
        let trimmed = text.trim_start();
        let docs = if trimmed.starts_with('{') || trimmed.starts_with('[') {
            AclDocument::parse_json(text)
        } else {
            AclDocument::parse_yaml(text)
        }
        .map_err(|e| ControlError::Invalid(e.to_string()))?;
        if docs.is_empty() {
            return Err(ControlError::Invalid("no ACL document".into()));
        }
        let now = now_ms();
        let mut applied = Vec::new();
        for d in &docs {
            if d.tenant() != tenant {
                return Err(ControlError::Invalid(format!(
                    "document for tenant {} sent to tenant {tenant}",
                    d.tenant()
                )));
            }
        }
        let mut policy = self.policy.write().unwrap_or_else(|e| e.into_inner());
        for d in docs {
            let ns = d
                .namespace()
                .map_or_else(|| "*".to_string(), |n| n.to_string());
            self.identity.catalog.put_acl(&AclRecord {
                tenant: tenant.to_string(),
                namespace: ns.clone(),
                document: d.to_yaml(),
                updated_ms: now,
            })?;
            policy.apply(d);
            applied.push(ns);
        }
        drop(policy);
        self.registry.policy_changed(tenant.as_str());
        info!(tenant = %tenant, documents = applied.len(), "ACL applied");
        Ok(applied)
    }

    /// The tenant's ACL documents, as YAML.
    pub(crate) fn acl_text(&self, tenant: &TenantId) -> Result<String, ControlError> {
        let mut docs: Vec<AclRecord> = self
            .identity
            .catalog
            .acls()?
            .into_iter()
            .filter(|a| a.tenant == tenant.as_str())
            .collect();
        docs.sort_by(|a, b| a.namespace.cmp(&b.namespace));
        Ok(docs
            .iter()
            .map(|d| d.document.trim_end().to_string())
            .collect::<Vec<_>>()
            .join("\n---\n"))
    }

    /// What the engine decides for a principal of `tenant`.
    pub(crate) fn explain(
        &self,
        tenant: &TenantId,
        principal: &str,
        roles: Vec<String>,
        resource: &Resource,
        permission: Permission,
    ) -> Decision {
        let subject = Subject::new(tenant.clone(), principal, roles);
        let policy = self.policy.read().unwrap_or_else(|e| e.into_inner());
        rampart_authz::decide(&policy, &subject, resource, permission)
    }

    /// Whether the engine allows `p` `permission` on `resource`.
    pub(crate) fn permits(
        &self,
        p: &Principal,
        resource: &Resource,
        permission: Permission,
    ) -> bool {
        self.explain(&p.tenant, &p.name, p.roles.clone(), resource, permission)
            .allowed
    }

    // === streams ===

    pub(crate) fn streams(
        &self,
        tenant: &TenantId,
        ns: &NamespaceName,
    ) -> Result<Vec<String>, ControlError> {
        let prefix = format!("{tenant}/{ns}/");
        Ok(self
            .identity
            .catalog
            .streams(&prefix)?
            .into_iter()
            .map(|s| s.path[prefix.len()..].to_string())
            .collect())
    }

    /// Namespaces a tenant uses: those of its declared streams and of its
    /// ACL documents.
    pub(crate) fn namespaces(&self, tenant: &TenantId) -> Result<Vec<String>, ControlError> {
        let mut out = std::collections::BTreeSet::new();
        for s in self.identity.catalog.streams(&format!("{tenant}/"))? {
            if let Some(ns) = s.path.split('/').nth(1) {
                out.insert(ns.to_string());
            }
        }
        for a in self.identity.catalog.acls()? {
            if a.tenant == tenant.as_str() && a.namespace != "*" {
                out.insert(a.namespace);
            }
        }
        Ok(out.into_iter().collect())
    }

    fn stream_record(&self, path: &StreamPath) -> Result<Option<StreamRecord>, ControlError> {
        let key = path.to_string();
        Ok(self
            .identity
            .catalog
            .streams(&key)?
            .into_iter()
            .find(|s| s.path == key))
    }

    /// Declares a stream; with `durable`, opens its log first (a stream
    /// whose log cannot be created is not declared).
    pub(crate) async fn create_stream(
        &self,
        path: StreamPath,
        durable: Option<DurableSpec>,
    ) -> Result<(), ControlError> {
        if self.stream_record(&path)?.is_some() {
            return Err(ControlError::Conflict(format!("stream {path} exists")));
        }
        let have = self.broker.tenant_streams(&path.tenant);
        self.limits
            .tenant_fits(path.tenant.as_str(), QuotaKind::Streams, have, 1)
            .map_err(ControlError::Limited)?;
        let durable = match durable {
            Some(mut spec) => {
                if spec.sync.is_empty() {
                    spec.sync = self.config.durable_sync.clone();
                }
                if self.config.dangerous_unsealed_streams {
                    warn!(stream = %path, "dangerous_unsealed_streams: this stream's payloads will be stored in clear");
                    spec.unsealed = true;
                }
                streams::parse_sync(&spec.sync).map_err(ControlError::Invalid)?;
                if spec.max_bytes == Some(0) || spec.max_age_ms == Some(0) {
                    return Err(ControlError::Invalid(
                        "retention limits must be positive".into(),
                    ));
                }
                // Leftovers of an earlier stream of this name (deleted while
                // the server was down) must not come back.
                let dir = streams::stream_dir(&self.config.data_dir, &path);
                let _ = tokio::fs::remove_dir_all(&dir).await;
                let d = streams::open(&self.config, self.sealer.keyring(), &path, &spec)
                    .await
                    .map_err(|e| {
                        tracing::error!(stream = %path, error = %e, "durable stream creation failed");
                        ControlError::Storage
                    })?;
                Some((spec, d))
            }
            None => None,
        };
        self.identity.catalog.put_stream(&StreamRecord {
            path: path.to_string(),
            created_ms: now_ms(),
            durable: durable.as_ref().map(|(spec, _)| spec.clone()),
        })?;
        match durable {
            Some((_, d)) => {
                self.broker.add_durable(d);
            }
            None => {
                self.broker.declare_stream(path);
            }
        }
        Ok(())
    }

    /// Deletes a stream. A durable stream's subscriptions end, its files
    /// are removed and its data key is destroyed, so copies of its files
    /// (backups) can no longer be read either.
    pub(crate) async fn delete_stream(&self, path: &StreamPath) -> Result<(), ControlError> {
        let Some(record) = self.stream_record(path)? else {
            return Err(ControlError::NotFound("stream"));
        };
        self.remove_stream(path, record).await.map(|_| ())
    }

    /// Erases a durable stream (right to erasure): like deleting it, and
    /// refused for a live stream, which has nothing stored to erase.
    /// Returns how many data key versions were destroyed.
    pub(crate) async fn erase_stream(&self, path: &StreamPath) -> Result<usize, ControlError> {
        let Some(record) = self.stream_record(path)? else {
            return Err(ControlError::NotFound("stream"));
        };
        if record.durable.is_none() {
            return Err(ControlError::Conflict(format!(
                "stream {path} is live: it stores nothing to erase; delete it instead"
            )));
        }
        self.remove_stream(path, record).await
    }

    async fn remove_stream(
        &self,
        path: &StreamPath,
        record: StreamRecord,
    ) -> Result<usize, ControlError> {
        self.identity.catalog.delete_stream(&record.path)?;
        if let Some(stream) = self.broker.remove_stream(path) {
            stream.close_all().await;
        }
        if record.durable.is_some() {
            let failed = |e: String| {
                tracing::error!(stream = %path, error = %e, "destroying the stream's key");
                ControlError::Storage
            };
            let keys = self
                .sealer
                .keyring()
                .tenant(path.tenant.as_str())
                .await
                .map_err(|e| failed(e.to_string()))?;
            let (ns, name) = (path.namespace.to_string(), path.stream.to_string());
            let destroyed = tokio::task::spawn_blocking(move || {
                keys.erase_resource(&ns, streams::BLOCK_KIND, &name)
            })
            .await
            .map_err(|e| failed(e.to_string()))?
            .map_err(|e| failed(e.to_string()))?;
            let dir = streams::stream_dir(&self.config.data_dir, path);
            if let Err(e) = tokio::fs::remove_dir_all(&dir).await {
                warn!(stream = %path, error = %e, "removing the stream's files failed");
            }
            info!(stream = %path, key_versions = destroyed, "durable stream deleted and its key destroyed");
            return Ok(destroyed);
        }
        Ok(0)
    }

    /// What `GET .../streams/{stream}` shows.
    pub(crate) fn stream_info(&self, path: &StreamPath) -> Result<serde_json::Value, ControlError> {
        let Some(record) = self.stream_record(path)? else {
            return Err(ControlError::NotFound("stream"));
        };
        let mut v = serde_json::json!({
            "name": path.stream.as_str(),
            "created_ms": record.created_ms,
            "durable": record.durable.is_some(),
        });
        let Some(spec) = record.durable else {
            return Ok(v);
        };
        v["sync"] = spec.sync.into();
        v["max_age_ms"] = spec.max_age_ms.into();
        v["max_bytes"] = spec.max_bytes.into();
        v["retention_overrides_consumers"] = spec.retention_overrides_consumers.into();
        v["sealed"] = (!spec.unsealed).into();
        let stream = self.broker.stream(path).ok();
        match stream.as_ref().and_then(|s| s.durable()) {
            Some(d) => {
                let r = d.recovery();
                v["first_offset"] = d.first_offset().into();
                v["next_offset"] = d.next_offset().into();
                v["consumers"] = d
                    .consumers()
                    .into_iter()
                    .map(|c| {
                        serde_json::json!({
                            "name": c.name,
                            "committed": c.committed,
                            "in_flight": c.in_flight,
                            "lost": c.lost,
                        })
                    })
                    .collect();
                v["recovery"] = serde_json::json!({
                    "segments": r.segments,
                    "bytes_scanned": r.bytes_scanned,
                    "mb_per_sec": r.mb_per_sec(),
                    "truncated_bytes": r.truncated_bytes,
                    "damaged": r.damaged.iter().map(|d| [d.start, d.end]).collect::<Vec<_>>(),
                });
            }
            None => v["available"] = false.into(),
        }
        Ok(v)
    }

    /// Saves consumer positions and applies retention on every durable
    /// stream.
    pub(crate) async fn maintain_streams(&self) {
        let now = now_ms();
        let mut stored: std::collections::HashMap<String, u64> = Default::default();
        for d in self.broker.durable_streams() {
            let path = d.path().clone();
            let log = d.log().clone();
            match tokio::task::spawn_blocking(move || d.maintain(now)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => warn!(stream = %path, error = %e, "stream upkeep failed"),
                Err(e) => warn!(stream = %path, error = %e, "stream upkeep panicked"),
            }
            *stored.entry(path.tenant.as_str().to_string()).or_default() += log.disk_bytes();
        }
        // What each tenant's logs hold once retention has run, for
        // max_stored_bytes (publishes add to it until the next tick); a
        // tenant whose last durable stream went holds nothing.
        self.limits
            .set_usage_of_all(QuotaKind::StoredBytes, &stored);
        self.limits.sweep();
    }
}

/// Custom roles (used by ACL rules as `role:NAME`) follow the name rule.
fn is_custom_role(r: &str) -> bool {
    rampart_proto::NamespaceName::parse(r).is_ok()
}

/// Parses `tenant/namespace/stream` parts from a route.
pub(crate) fn stream_path(t: &str, n: &str, s: &str) -> Result<StreamPath, ControlError> {
    let bad = |e: rampart_proto::NameError| ControlError::Invalid(e.to_string());
    Ok(StreamPath {
        tenant: TenantId::parse(t).map_err(bad)?,
        namespace: NamespaceName::parse(n).map_err(bad)?,
        stream: StreamName::parse(s).map_err(bad)?,
    })
}
