//! Authentication: every credential kind turned into a [`Principal`], and
//! the live state that decides whether a credential is still good (managed
//! keys, revocations, disabled tenants). Mirrors of the store are kept in
//! memory so that authenticating never reads from disk.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use rampart_identity::{
    managed_key_id, ApiKeyStore, KeyHash, Principal, PrincipalKind, TokenClaims, TokenKeys,
};
use rampart_proto::{AuthMethod, NamespaceName, TenantId};
use rampart_store::{Catalog, KeyRecord, Revocation, Revoked, StoreError, TenantRecord};
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

/// Why a credential was refused. The words are stable, for logs and audit
/// records; the client only ever hears "invalid credentials".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthFailure {
    UnknownKey,
    KeyRevoked,
    KeyExpired,
    Token(rampart_identity::TokenError),
    TokenRevoked,
    Jwt(&'static str),
    NoClientCert,
    CertNotMapped,
    CertNameNotAllowed,
    TenantUnknown,
    TenantDisabled,
    MethodNotEnabled,
}

impl AuthFailure {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            AuthFailure::UnknownKey => "unknown_key",
            AuthFailure::KeyRevoked => "key_revoked",
            AuthFailure::KeyExpired => "key_expired",
            AuthFailure::Token(e) => match e {
                rampart_identity::TokenError::Expired => "token_expired",
                rampart_identity::TokenError::BadSignature => "token_bad_signature",
                rampart_identity::TokenError::NotYetValid => "token_not_yet_valid",
                _ => "token_malformed",
            },
            AuthFailure::TokenRevoked => "token_revoked",
            AuthFailure::Jwt(r) => r,
            AuthFailure::NoClientCert => "no_client_cert",
            AuthFailure::CertNotMapped => "cert_not_mapped",
            AuthFailure::CertNameNotAllowed => "cert_name_not_allowed",
            AuthFailure::TenantUnknown => "tenant_unknown",
            AuthFailure::TenantDisabled => "tenant_disabled",
            AuthFailure::MethodNotEnabled => "method_not_enabled",
        }
    }
}

/// A rule mapping verified client certificates to principals.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MtlsIdentity {
    pub tenant: String,
    /// Matches certificates with a URI SAN starting with this (for example
    /// `spiffe://acme.example/`); the principal is the whole URI.
    #[serde(default)]
    pub san_uri_prefix: Option<String>,
    /// Matches certificates whose subject CN is one of these; the principal
    /// is the CN.
    #[serde(default)]
    pub common_names: Vec<String>,
    #[serde(default = "default_cert_roles")]
    pub roles: Vec<String>,
}

fn default_cert_roles() -> Vec<String> {
    vec!["user".into()]
}

/// What a client certificate says about its holder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CertNames {
    pub cn: Option<String>,
    pub uris: Vec<String>,
}

impl CertNames {
    /// Reads the subject CN and URI SANs of a certificate that TLS already
    /// verified against the configured CA.
    pub(crate) fn of(cert: &CertificateDer<'_>) -> Option<CertNames> {
        use x509_parser::prelude::*;
        let (_, x) = X509Certificate::from_der(cert.as_ref()).ok()?;
        let cn = x
            .subject()
            .iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .map(str::to_string);
        let mut uris = Vec::new();
        if let Ok(Some(san)) = x.subject_alternative_name() {
            for n in &san.value.general_names {
                if let GeneralName::URI(u) = n {
                    uris.push((*u).to_string());
                }
            }
        }
        Some(CertNames { cn, uris })
    }
}

/// Revoked tokens and principals, in memory.
#[derive(Debug, Default)]
struct RevocationSet {
    tokens: HashSet<String>,
    /// (tenant, principal) -> tokens issued before this time are revoked.
    principals: HashMap<(String, String), u64>,
}

impl RevocationSet {
    fn add(&mut self, r: &Revocation) {
        match &r.what {
            Revoked::Token { id } => {
                self.tokens.insert(id.clone());
            }
            Revoked::Principal { tenant, principal } => {
                let e = self
                    .principals
                    .entry((tenant.clone(), principal.clone()))
                    .or_insert(0);
                *e = (*e).max(r.at_ms);
            }
        }
    }

    fn revokes(&self, c: &TokenClaims) -> bool {
        self.tokens.contains(&c.jti)
            || self
                .principals
                .get(&(c.tenant.clone(), c.principal.clone()))
                .is_some_and(|at| c.iat_ms <= *at)
    }
}

/// Everything needed to decide who a credential belongs to.
#[derive(Debug)]
pub(crate) struct Identity {
    pub(crate) catalog: Catalog,
    pub(crate) static_keys: ApiKeyStore,
    managed: RwLock<HashMap<String, KeyRecord>>,
    tenants: RwLock<HashMap<String, TenantRecord>>,
    /// Increases on every change of `tenants` (see
    /// [`Identity::tenants_generation`]).
    tenants_generation: AtomicU64,
    revoked: RwLock<RevocationSet>,
    /// The token signing key, and the one a rotation retired while its
    /// grace period runs. Replaced whole by a rotation.
    token_keys: RwLock<Arc<TokenKeys>>,
    pub(crate) jwt: Option<std::sync::Arc<rampart_identity::JwtVerifier>>,
    mtls: Vec<MtlsIdentity>,
    mtls_allowed_cns: Vec<String>,
    /// Token renewals (Vault's renew-self): token id -> new expiry, kept in
    /// the store as `renew/<id>` and cached here.
    renewed: RwLock<HashMap<String, u64>>,
    /// Tokens whose signature was verified, by SHA-256 of the token, so a
    /// token used for many requests pays for Ed25519 once. Holds claims
    /// and, for a token of a retired key, the end of its grace period;
    /// expiry, renewals and revocations are checked on every use. Emptied
    /// by a key rotation.
    verified: RwLock<HashMap<[u8; 32], Verified>>,
}

/// A token's claims, and the end of the grace period of the retired key
/// that signed it, if one did.
type Verified = (rampart_identity::TokenClaims, Option<u64>);

/// Verified tokens kept at most; the cache starts over when full.
const VERIFIED_TOKENS: usize = 16_384;

fn lock_err<T>(e: std::sync::PoisonError<T>) -> T {
    e.into_inner()
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Identity {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn load(
        catalog: Catalog,
        static_keys: ApiKeyStore,
        static_tenants: &HashSet<TenantId>,
        token_keys: TokenKeys,
        jwt: Option<std::sync::Arc<rampart_identity::JwtVerifier>>,
        mtls: Vec<MtlsIdentity>,
        mtls_allowed_cns: Vec<String>,
    ) -> Result<Self, StoreError> {
        let now = now_ms();
        // Tenants named by the config or by static keys exist from the start.
        for t in static_tenants {
            if catalog.tenant(t.as_str())?.is_none() {
                catalog.put_tenant(&TenantRecord {
                    name: t.to_string(),
                    disabled: false,
                    created_ms: now,
                    changed_ms: now,
                    erased_ms: None,
                    disabled_namespaces: Default::default(),
                })?;
            }
        }
        catalog.prune_revocations(now)?;
        let mut revoked = RevocationSet::default();
        for r in catalog.revocations()? {
            revoked.add(&r);
        }
        let managed = catalog
            .keys(None)?
            .into_iter()
            .map(|k| (k.id.clone(), k))
            .collect();
        let tenants = catalog
            .tenants()?
            .into_iter()
            .map(|t| (t.name.clone(), t))
            .collect();
        Ok(Self {
            catalog,
            static_keys,
            managed: RwLock::new(managed),
            tenants: RwLock::new(tenants),
            tenants_generation: AtomicU64::new(0),
            revoked: RwLock::new(revoked),
            token_keys: RwLock::new(Arc::new(token_keys)),
            jwt,
            mtls,
            mtls_allowed_cns,
            renewed: RwLock::new(HashMap::new()),
            verified: RwLock::new(HashMap::new()),
        })
    }

    /// The token keys in force.
    pub(crate) fn token_keys(&self) -> Arc<TokenKeys> {
        self.token_keys.read().unwrap_or_else(lock_err).clone()
    }

    /// Puts new token keys in force (a rotation) and forgets every
    /// signature checked with the old ones.
    pub(crate) fn set_token_keys(&self, keys: TokenKeys) {
        let mut cache = self.verified.write().unwrap_or_else(lock_err);
        *self.token_keys.write().unwrap_or_else(lock_err) = Arc::new(keys);
        cache.clear();
    }

    /// The claims of a token whose signature checks, from the cache when it
    /// was checked before, and the end of the grace period of the retired
    /// key that signed it, if one did.
    pub(crate) fn verified_claims(&self, token: &[u8]) -> Result<Verified, AuthFailure> {
        let digest = ring::digest::digest(&ring::digest::SHA256, token);
        let mut key = [0u8; 32];
        key.copy_from_slice(digest.as_ref());
        if let Some(c) = self.verified.read().unwrap_or_else(lock_err).get(&key) {
            return Ok(c.clone());
        }
        let keys = self.token_keys();
        let verified = keys
            .verify_signature(token, now_ms())
            .map_err(AuthFailure::Token)?;
        // Cached only if no rotation came in between: a rotation swaps the
        // keys and empties the cache under this same lock.
        let mut cache = self.verified.write().unwrap_or_else(lock_err);
        if Arc::ptr_eq(&keys, &self.token_keys()) {
            if cache.len() >= VERIFIED_TOKENS {
                cache.clear();
            }
            cache.insert(key, verified.clone());
        }
        Ok(verified)
    }

    /// The expiry of a token, renewals included.
    fn token_expiry(&self, claims: &rampart_identity::TokenClaims) -> u64 {
        let cached = self
            .renewed
            .read()
            .unwrap_or_else(lock_err)
            .get(&claims.jti)
            .copied();
        let renewed = cached.or_else(|| {
            // Only a token past its signed expiry needs the store.
            if now_ms() < claims.exp_ms {
                return None;
            }
            self.catalog
                .meta_u64(&format!("renew/{}", claims.jti))
                .ok()
                .flatten()
        });
        claims.exp_ms.max(renewed.unwrap_or(0))
    }

    /// Extends a token's life to `until_ms` (never shortens it). The caller
    /// bounds it by the server's maximum.
    pub(crate) fn renew_token(&self, jti: &str, until_ms: u64) -> Result<(), StoreError> {
        self.catalog
            .put_meta_u64(&format!("renew/{jti}"), until_ms)?;
        self.renewed
            .write()
            .unwrap_or_else(lock_err)
            .insert(jti.to_string(), until_ms);
        Ok(())
    }

    /// Checks a credential. `cert` is the connection's verified client
    /// certificate, if any.
    pub(crate) async fn authenticate(
        &self,
        method: AuthMethod,
        credential: &[u8],
        cert: Option<&CertNames>,
    ) -> Result<Principal, AuthFailure> {
        let p = match method {
            AuthMethod::ApiKey => self.api_key(credential)?,
            AuthMethod::Token => self.token(credential)?,
            AuthMethod::Jwt => self.jwt(credential).await?,
            AuthMethod::ClientCert => self.client_cert(cert)?,
            _ => return Err(AuthFailure::MethodNotEnabled),
        };
        self.check_tenant(&p.tenant)?;
        Ok(p)
    }

    fn api_key(&self, key: &[u8]) -> Result<Principal, AuthFailure> {
        let Some(id) = managed_key_id(key) else {
            return self
                .static_keys
                .authenticate(key)
                .ok_or(AuthFailure::UnknownKey);
        };
        let rec = self
            .managed
            .read()
            .unwrap_or_else(lock_err)
            .get(id)
            .cloned()
            .ok_or(AuthFailure::UnknownKey)?;
        let presented = self.static_keys.pepper().hash(key);
        let stored = KeyHash::parse(&rec.hash).map_err(|_| AuthFailure::UnknownKey)?;
        if !presented.ct_eq(&stored) {
            return Err(AuthFailure::UnknownKey);
        }
        let now = now_ms();
        if rec.revoked_ms.is_some_and(|r| now >= r) {
            return Err(AuthFailure::KeyRevoked);
        }
        if rec.expires_ms.is_some_and(|e| now >= e) {
            return Err(AuthFailure::KeyExpired);
        }
        let tenant = TenantId::parse(&rec.tenant).map_err(|_| AuthFailure::TenantUnknown)?;
        // A rotated key stays valid until its grace ends: expiry of the
        // connection is the earlier of expiry and revocation time.
        let ends = match (rec.expires_ms, rec.revoked_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Ok(Principal {
            tenant,
            name: rec.name,
            kind: PrincipalKind::ManagedKey,
            roles: rec.roles,
            expires_at_ms: ends,
            credential_id: Some(rec.id),
            parent_credential_id: None,
        })
    }

    fn token(&self, token: &[u8]) -> Result<Principal, AuthFailure> {
        let (claims, key_until) = self.verified_claims(token)?;
        let now = now_ms();
        // A token of a retired signing key ends with its grace period.
        let expires = self
            .token_expiry(&claims)
            .min(key_until.unwrap_or(u64::MAX));
        if now >= expires {
            return Err(AuthFailure::Token(rampart_identity::TokenError::Expired));
        }
        // Issued by this server's clock; a minute of slack for a restarted
        // host.
        if claims.iat_ms > now + 60_000 {
            return Err(AuthFailure::Token(
                rampart_identity::TokenError::NotYetValid,
            ));
        }
        if self
            .revoked
            .read()
            .unwrap_or_else(lock_err)
            .revokes(&claims)
        {
            return Err(AuthFailure::TokenRevoked);
        }
        if let Some(cid) = &claims.cid {
            let src = self
                .managed
                .read()
                .unwrap_or_else(lock_err)
                .get(cid)
                .cloned();
            if src.is_some_and(|k| k.revoked_ms.is_some_and(|r| now_ms() >= r)) {
                return Err(AuthFailure::KeyRevoked);
            }
        }
        let tenant = TenantId::parse(&claims.tenant).map_err(|_| AuthFailure::TenantUnknown)?;
        Ok(Principal {
            tenant,
            name: claims.principal,
            kind: PrincipalKind::Token,
            roles: claims.roles,
            expires_at_ms: Some(expires),
            credential_id: Some(claims.jti),
            parent_credential_id: claims.cid,
        })
    }

    async fn jwt(&self, token: &[u8]) -> Result<Principal, AuthFailure> {
        let v = self.jwt.as_ref().ok_or(AuthFailure::MethodNotEnabled)?;
        let text = std::str::from_utf8(token).map_err(|_| AuthFailure::Jwt("malformed"))?;
        let id = v
            .verify(text)
            .await
            .map_err(|e| AuthFailure::Jwt(e.reason()))?;
        Ok(Principal {
            tenant: id.tenant,
            name: id.principal,
            kind: PrincipalKind::Jwt,
            roles: id.roles,
            expires_at_ms: Some(id.expires_at_ms),
            credential_id: None,
            parent_credential_id: None,
        })
    }

    fn client_cert(&self, cert: Option<&CertNames>) -> Result<Principal, AuthFailure> {
        let names = cert.ok_or(AuthFailure::NoClientCert)?;
        if !self.mtls_allowed_cns.is_empty()
            && !names
                .cn
                .as_ref()
                .is_some_and(|cn| self.mtls_allowed_cns.contains(cn))
        {
            return Err(AuthFailure::CertNameNotAllowed);
        }
        for rule in &self.mtls {
            let name = match &rule.san_uri_prefix {
                Some(prefix) => names.uris.iter().find(|u| u.starts_with(prefix)).cloned(),
                None => None,
            }
            .or_else(|| names.cn.clone().filter(|cn| rule.common_names.contains(cn)));
            if let Some(name) = name {
                let tenant =
                    TenantId::parse(&rule.tenant).map_err(|_| AuthFailure::TenantUnknown)?;
                return Ok(Principal {
                    tenant,
                    name,
                    kind: PrincipalKind::ClientCert,
                    roles: rule.roles.clone(),
                    expires_at_ms: None,
                    credential_id: None,
                    parent_credential_id: None,
                });
            }
        }
        Err(AuthFailure::CertNotMapped)
    }

    /// A tenant must exist and be enabled.
    pub(crate) fn check_tenant(&self, t: &TenantId) -> Result<(), AuthFailure> {
        match self.tenants.read().unwrap_or_else(lock_err).get(t.as_str()) {
            None => Err(AuthFailure::TenantUnknown),
            Some(r) if r.disabled => Err(AuthFailure::TenantDisabled),
            Some(_) => Ok(()),
        }
    }

    // === changes, written to the store first, then to the mirrors ===

    pub(crate) fn tenants(&self) -> Vec<TenantRecord> {
        let mut v: Vec<_> = self
            .tenants
            .read()
            .unwrap_or_else(lock_err)
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Whether `namespace` of `tenant` is disabled (see
    /// [`TenantRecord::disabled_namespaces`]).
    pub(crate) fn namespace_disabled(&self, tenant: &TenantId, namespace: &NamespaceName) -> bool {
        self.tenants
            .read()
            .unwrap_or_else(lock_err)
            .get(tenant.as_str())
            .is_some_and(|r| r.disabled_namespaces.contains(namespace.as_str()))
    }

    pub(crate) fn tenant(&self, name: &str) -> Option<TenantRecord> {
        self.tenants
            .read()
            .unwrap_or_else(lock_err)
            .get(name)
            .cloned()
    }

    pub(crate) fn put_tenant(&self, r: TenantRecord) -> Result<(), StoreError> {
        self.catalog.put_tenant(&r)?;
        let mut tenants = self.tenants.write().unwrap_or_else(lock_err);
        tenants.insert(r.name.clone(), r);
        // Bumped before the lock is let go: whoever reads the new records
        // also reads the new generation.
        self.tenants_generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Changes whenever a tenant record does (a tenant or one of its
    /// namespaces disabled or enabled, among others): a connection that
    /// remembers an answer of [`Identity::namespace_disabled`] keeps it
    /// only while this stays the same.
    pub(crate) fn tenants_generation(&self) -> u64 {
        self.tenants_generation.load(Ordering::Acquire)
    }

    /// Drops every managed key of an erased tenant from memory.
    pub(crate) fn forget_tenant(&self, tenant: &str) {
        self.managed
            .write()
            .unwrap_or_else(lock_err)
            .retain(|_, k| k.tenant != tenant);
    }

    pub(crate) fn keys(&self, tenant: &str) -> Vec<KeyRecord> {
        let mut v: Vec<_> = self
            .managed
            .read()
            .unwrap_or_else(lock_err)
            .values()
            .filter(|k| k.tenant == tenant)
            .cloned()
            .collect();
        v.sort_by(|a, b| a.created_ms.cmp(&b.created_ms).then(a.id.cmp(&b.id)));
        v
    }

    pub(crate) fn key(&self, id: &str) -> Option<KeyRecord> {
        self.managed
            .read()
            .unwrap_or_else(lock_err)
            .get(id)
            .cloned()
    }

    pub(crate) fn put_keys(&self, keys: &[&KeyRecord]) -> Result<(), StoreError> {
        self.catalog.put_keys(keys)?;
        let mut m = self.managed.write().unwrap_or_else(lock_err);
        for k in keys {
            m.insert(k.id.clone(), (*k).clone());
        }
        Ok(())
    }

    pub(crate) fn revoke(&self, r: Revocation) -> Result<(), StoreError> {
        self.catalog.put_revocation(&r)?;
        self.revoked.write().unwrap_or_else(lock_err).add(&r);
        Ok(())
    }
}
