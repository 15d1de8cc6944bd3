//! API keys: generation, peppered hashing, and a constant-time lookup table.
//!
//! Only HMAC-SHA256(pepper, key) is ever stored or configured. Keys carry at
//! least 256 bits of randomness when Rampart makes them, so a slow password
//! hash (argon2) would add nothing against guessing while making every AUTH a
//! CPU cost an attacker could spend for us; the pepper, kept apart from the
//! hashes, means a leaked config or database does not let anyone test
//! candidate keys offline. See `docs/security.md`.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::Write;
use std::path::Path;

use base64::Engine;
use rampart_proto::TenantId;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;

use crate::principal::{Principal, PrincipalKind};
use crate::secret::Secret;

/// Textual prefix of every stored hash.
pub const HASH_PREFIX: &str = "hmac-sha256:";

/// Role of keys from the configuration and the environment: they are the
/// operator's bootstrap credentials for a tenant.
pub const STATIC_KEY_ROLE: &str = "admin";

/// Prefix of managed keys: `rampart_<16 hex id>_<43 base64url secret>`. The
/// fixed prefix lets secret scanners find leaked keys; the id lets the
/// server find the record without trying every hash.
pub const MANAGED_KEY_PREFIX: &str = "rampart_";
const MANAGED_ID_LEN: usize = 16;

/// Makes a new managed key; returns its public id and the whole key.
pub fn generate_managed_key() -> Result<(String, Secret<String>), KeyError> {
    let id = hex::encode(random_bytes::<8>()?);
    let raw = Secret::new(random_bytes::<32>()?);
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw.expose());
    let key = Secret::new(format!("{MANAGED_KEY_PREFIX}{id}_{secret}"));
    Ok((id, key))
}

/// The id of a managed key, if `key` has the managed shape.
pub fn managed_key_id(key: &[u8]) -> Option<&str> {
    let rest = key.strip_prefix(MANAGED_KEY_PREFIX.as_bytes())?;
    let (id, tail) = rest.split_at_checked(MANAGED_ID_LEN)?;
    if tail.first() != Some(&b'_') || tail.len() < 2 {
        return None;
    }
    let id = std::str::from_utf8(id).ok()?;
    id.bytes()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        .then_some(id)
}

/// Errors about keys, peppers and hash strings.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("key hash must look like `hmac-sha256:<64 hex digits>`")]
    BadHash,
    #[error("api key entry must be `tenant:{HASH_PREFIX}<hex>`: {0}")]
    BadEntry(String),
    #[error("api key pair must be `tenant:key`")]
    BadPair,
    #[error("invalid tenant in api key entry: {0}")]
    Tenant(#[from] rampart_proto::NameError),
    #[error("pepper file {path}: {reason}")]
    Pepper { path: String, reason: String },
    #[error("system random generator failed")]
    Random,
}

/// The server-side secret mixed into every key hash.
pub struct Pepper(hmac::Key);

impl fmt::Debug for Pepper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pepper([redacted])")
    }
}

impl Pepper {
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, bytes))
    }

    /// Reads the pepper at `path` (32 bytes, base64), creating it with mode
    /// 0600 when it does not exist yet.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        let err = |reason: String| KeyError::Pepper {
            path: path.display().to_string(),
            reason,
        };
        match fs::read_to_string(path) {
            Ok(text) => {
                let bytes = Secret::new(
                    base64::engine::general_purpose::STANDARD
                        .decode(text.trim())
                        .map_err(|_| err("not base64".into()))?,
                );
                if bytes.expose().len() < 32 {
                    return Err(err("shorter than 32 bytes".into()));
                }
                Ok(Self::from_bytes(bytes.expose()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let bytes = Secret::new(random_bytes::<32>()?);
                let text =
                    Secret::new(base64::engine::general_purpose::STANDARD.encode(bytes.expose()));
                if let Some(dir) = path.parent() {
                    crate::fsutil::create_private_dir(dir).map_err(|e| err(e.to_string()))?;
                }
                let mut f =
                    crate::fsutil::create_private_file(path).map_err(|e| err(e.to_string()))?;
                f.write_all(text.expose().as_bytes())
                    .and_then(|_| f.write_all(b"\n"))
                    .and_then(|_| f.sync_all())
                    .map_err(|e| err(e.to_string()))?;
                Ok(Self::from_bytes(bytes.expose()))
            }
            Err(e) => Err(err(e.to_string())),
        }
    }

    /// HMAC-SHA256 of a presented key.
    pub fn hash(&self, key: &[u8]) -> KeyHash {
        let tag = hmac::sign(&self.0, key);
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        KeyHash(out)
    }
}

/// Fills an array from the system CSPRNG.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut b = [0u8; N];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| KeyError::Random)?;
    Ok(b)
}

/// Makes a new API key: `prefix` followed by 256 random bits in base64url.
/// The prefix lets secret scanners recognise a leaked key.
pub fn generate_api_key(prefix: &str) -> Result<Secret<String>, KeyError> {
    let raw = Secret::new(random_bytes::<32>()?);
    let body = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw.expose());
    Ok(Secret::new(format!("{prefix}{body}")))
}

/// A stored key hash. Its text form is `hmac-sha256:<hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash([u8; 32]);

impl KeyHash {
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let hex_part = s.strip_prefix(HASH_PREFIX).ok_or(KeyError::BadHash)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut out).map_err(|_| KeyError::BadHash)?;
        Ok(Self(out))
    }

    /// Compares two hashes in constant time.
    pub fn ct_eq(&self, other: &KeyHash) -> bool {
        bool::from(self.0.ct_eq(&other.0))
    }

    /// A short, non-secret label for logs and principal names.
    pub fn short_id(&self) -> String {
        hex::encode(&self.0[..6])
    }

    fn bucket(&self) -> u64 {
        u64::from_be_bytes([
            self.0[0], self.0[1], self.0[2], self.0[3], self.0[4], self.0[5], self.0[6], self.0[7],
        ])
    }
}

impl fmt::Display for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{HASH_PREFIX}{}", hex::encode(self.0))
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({}…)", self.short_id())
    }
}

/// One configured key: the tenant it belongs to and its principal name.
#[derive(Debug, Clone)]
struct KeyEntry {
    hash: KeyHash,
    tenant: TenantId,
    name: String,
}

/// The set of API keys a server accepts.
///
/// Lookup hashes the presented key with the pepper, finds candidates by the
/// first 8 bytes of the hash, and compares the whole hash in constant time.
/// Timing can at most reveal bytes of a peppered hash, which an attacker
/// cannot relate to any key without the pepper.
#[derive(Debug)]
pub struct ApiKeyStore {
    pepper: Pepper,
    by_bucket: HashMap<u64, Vec<KeyEntry>>,
    len: usize,
}

impl ApiKeyStore {
    pub fn new(pepper: Pepper) -> Self {
        Self {
            pepper,
            by_bucket: HashMap::new(),
            len: 0,
        }
    }

    pub fn pepper(&self) -> &Pepper {
        &self.pepper
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a key by its stored hash.
    pub fn insert_hash(&mut self, tenant: TenantId, name: impl Into<String>, hash: KeyHash) {
        self.by_bucket
            .entry(hash.bucket())
            .or_default()
            .push(KeyEntry {
                hash,
                tenant,
                name: name.into(),
            });
        self.len += 1;
    }

    /// Adds a plaintext key (from the environment or dev mode); only its hash
    /// is kept.
    pub fn insert_plain(&mut self, tenant: TenantId, name: impl Into<String>, key: &[u8]) {
        let hash = self.pepper.hash(key);
        self.insert_hash(tenant, name, hash);
    }

    /// Adds a config entry `tenant:hmac-sha256:<hex>`. The principal is named
    /// `key-<first 12 hex digits of the hash>`.
    pub fn insert_config_entry(&mut self, entry: &str) -> Result<(), KeyError> {
        let (tenant, hash) = entry
            .split_once(':')
            .ok_or_else(|| KeyError::BadEntry("missing `tenant:`".into()))?;
        let tenant = TenantId::parse(tenant)?;
        let hash = KeyHash::parse(hash)?;
        let name = format!("key-{}", hash.short_id());
        self.insert_hash(tenant, name, hash);
        Ok(())
    }

    /// Adds comma-separated `tenant:key` pairs (the `RAMPART_API_KEYS`
    /// format). The principal is named after the key hash, never the key.
    pub fn insert_plain_pairs(&mut self, pairs: &str) -> Result<(), KeyError> {
        for pair in pairs.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (tenant, key) = pair.split_once(':').ok_or(KeyError::BadPair)?;
            if key.is_empty() {
                return Err(KeyError::BadPair);
            }
            let tenant = TenantId::parse(tenant)?;
            let hash = self.pepper.hash(key.as_bytes());
            let name = format!("key-{}", hash.short_id());
            self.insert_hash(tenant, name, hash);
        }
        Ok(())
    }

    /// Finds the principal for a presented key.
    pub fn authenticate(&self, presented: &[u8]) -> Option<Principal> {
        let hash = self.pepper.hash(presented);
        let candidates = self.by_bucket.get(&hash.bucket())?;
        let mut found: Option<&KeyEntry> = None;
        for e in candidates {
            if bool::from(e.hash.0.ct_eq(&hash.0)) {
                found = Some(e);
            }
        }
        found.map(|e| Principal {
            tenant: e.tenant.clone(),
            name: e.name.clone(),
            kind: PrincipalKind::StaticKey,
            roles: vec![STATIC_KEY_ROLE.to_string()],
            expires_at_ms: None,
            credential_id: None,
            parent_credential_id: None,
        })
    }

    /// Tenants that own at least one key.
    pub fn tenants(&self) -> impl Iterator<Item = &TenantId> {
        self.by_bucket.values().flatten().map(|e| &e.tenant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> ApiKeyStore {
        ApiKeyStore::new(Pepper::from_bytes(&[7u8; 32]))
    }

    #[test]
    fn plain_and_hashed_keys_authenticate_to_their_tenant() {
        let mut s = store();
        s.insert_plain_pairs("acme:key-one, globex:key-two")
            .unwrap();
        let h = s.pepper().hash(b"key-three");
        s.insert_config_entry(&format!("acme:{h}")).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s.authenticate(b"key-one").unwrap().tenant.as_str(), "acme");
        assert_eq!(
            s.authenticate(b"key-two").unwrap().tenant.as_str(),
            "globex"
        );
        assert_eq!(
            s.authenticate(b"key-three").unwrap().tenant.as_str(),
            "acme"
        );
        assert!(s.authenticate(b"key-four").is_none());
        assert!(s.authenticate(b"").is_none());
    }

    #[test]
    fn principal_name_does_not_contain_the_key() {
        let mut s = store();
        s.insert_plain_pairs("acme:supersecretvalue").unwrap();
        let p = s.authenticate(b"supersecretvalue").unwrap();
        assert!(!p.name.contains("supersecret"));
    }

    #[test]
    fn another_pepper_gives_another_hash() {
        let a = Pepper::from_bytes(&[1u8; 32]).hash(b"k");
        let b = Pepper::from_bytes(&[2u8; 32]).hash(b"k");
        assert_ne!(a, b);
        assert_eq!(KeyHash::parse(&a.to_string()).unwrap(), a);
    }

    #[test]
    fn malformed_entries_are_refused() {
        let mut s = store();
        assert!(s.insert_config_entry("acme").is_err());
        assert!(s.insert_config_entry("acme:sha1:abcd").is_err());
        assert!(s.insert_config_entry("Acme:hmac-sha256:00").is_err());
        assert!(s.insert_plain_pairs("acme").is_err());
        assert!(s.insert_plain_pairs("acme:").is_err());
    }

    #[test]
    fn pepper_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/pepper");
        let a = Pepper::load_or_create(&path).unwrap().hash(b"k");
        let b = Pepper::load_or_create(&path).unwrap().hash(b"k");
        assert_eq!(a, b);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn managed_keys_carry_their_id() {
        let (id, key) = generate_managed_key().unwrap();
        assert_eq!(id.len(), 16);
        assert_eq!(managed_key_id(key.expose().as_bytes()), Some(id.as_str()));
        assert!(key.expose().len() >= 8 + 16 + 1 + 43);
        assert_eq!(managed_key_id(b"rampart_0123"), None);
        assert_eq!(managed_key_id(b"rampart_0123456789abcdef"), None);
        assert_eq!(managed_key_id(b"rampart_0123456789ABCDEF_x"), None);
        assert_eq!(managed_key_id(b"rk_dev_whatever"), None);
    }

    #[test]
    fn generated_keys_are_long_and_distinct() {
        let a = generate_api_key("rk_").unwrap();
        let b = generate_api_key("rk_").unwrap();
        assert!(a.expose().starts_with("rk_"));
        assert!(a.expose().len() >= 3 + 43);
        assert_ne!(a.expose(), b.expose());
    }
}
