//! AppRole: machine credentials made of a public `role_id` and a secret
//! `secret_id`, as in Vault's AppRole auth method.
//!
//! The types and the pure login check live here; [`crate::Vault`] stores
//! them. A secret id is shown once, when generated; only its peppered
//! HMAC-SHA256 is kept, bound to tenant and role.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use rampart_identity::{random_bytes, KeyHash, Pepper, Secret};
use rampart_proto::{NameError, TenantId};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::cidr::Cidr;
use crate::error::VaultError;

/// Longest role name, in bytes.
pub const MAX_ROLE_NAME_LEN: usize = 128;
/// Most Rampart roles one AppRole grants.
const MAX_GRANTED_ROLES: usize = 32;
/// Longest Rampart role name an AppRole may grant, in bytes.
const MAX_GRANTED_ROLE_LEN: usize = 64;
/// Most CIDR blocks one AppRole binds.
const MAX_BOUND_CIDRS: usize = 64;
/// Longer role ids or secret ids are refused before any lookup.
pub(crate) const MAX_CREDENTIAL_LEN: usize = 256;

/// The name of an AppRole inside a tenant:
/// `[A-Za-z0-9][A-Za-z0-9_.-]{0,127}` (Vault allows the same characters,
/// and spaces, which are left out here).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoleName(Box<str>);

impl RoleName {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        const KIND: &str = "role";
        let b = s.as_bytes();
        let Some(first) = b.first() else {
            return Err(NameError::Empty { kind: KIND });
        };
        if b.len() > MAX_ROLE_NAME_LEN {
            return Err(NameError::TooLong {
                kind: KIND,
                max: MAX_ROLE_NAME_LEN,
            });
        }
        let ok = first.is_ascii_alphanumeric()
            && b[1..]
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
        if !ok {
            return Err(NameError::BadChar {
                kind: KIND,
                allowed: "[A-Za-z0-9][A-Za-z0-9_.-]{0,127}",
            });
        }
        Ok(Self(s.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RoleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RoleName({:?})", &*self.0)
    }
}

impl std::str::FromStr for RoleName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        Self::parse(s)
    }
}

impl Serialize for RoleName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RoleName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// What a role is allowed: the settings of Vault's `auth/approle/role/:name`
/// that Rampart uses. Start from [`RoleSpec::new`] and set fields.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RoleSpec {
    pub name: RoleName,
    /// Rampart roles granted to tokens issued at login.
    pub roles: Vec<String>,
    pub token_ttl: Duration,
    /// Zero: no role-specific maximum (the server's applies).
    pub token_max_ttl: Duration,
    /// Lifetime of each secret id; `None` (or zero) never expires.
    pub secret_id_ttl: Option<Duration>,
    /// Logins each secret id allows; 0 is unlimited.
    pub secret_id_num_uses: u32,
    /// Addresses a login may come from; empty allows any.
    pub bound_cidrs: Vec<Cidr>,
}

impl RoleSpec {
    /// A role granting nothing, with 1 h tokens (24 h at most), secret ids
    /// that never expire and allow any number of logins, from anywhere.
    /// The HTTP layer sets every field a request gives.
    pub fn new(name: RoleName) -> Self {
        Self {
            name,
            roles: Vec::new(),
            token_ttl: Duration::from_secs(3600),
            token_max_ttl: Duration::from_secs(24 * 3600),
            secret_id_ttl: None,
            secret_id_num_uses: 0,
            bound_cidrs: Vec::new(),
        }
    }

    pub(crate) fn check(&self) -> Result<(), VaultError> {
        let bad = |m: String| Err(VaultError::InvalidInput(m));
        if self.roles.len() > MAX_GRANTED_ROLES {
            return bad(format!("at most {MAX_GRANTED_ROLES} roles"));
        }
        for r in &self.roles {
            if r.is_empty()
                || r.len() > MAX_GRANTED_ROLE_LEN
                || !r.bytes().all(|c| c.is_ascii_graphic())
            {
                return bad(format!(
                    "role names must be 1 to {MAX_GRANTED_ROLE_LEN} printable ASCII characters without spaces"
                ));
            }
        }
        if !self.token_max_ttl.is_zero() && self.token_ttl > self.token_max_ttl {
            return bad("token_ttl must not be greater than token_max_ttl".into());
        }
        if self.bound_cidrs.len() > MAX_BOUND_CIDRS {
            return bad(format!("at most {MAX_BOUND_CIDRS} bound CIDR blocks"));
        }
        Ok(())
    }
}

/// A stored role: its spec, its `role_id` and when it was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RoleRecord {
    pub name: RoleName,
    /// The public half of the credential (UUID-shaped). Kept across
    /// updates of the role.
    pub role_id: String,
    pub roles: Vec<String>,
    pub token_ttl: Duration,
    pub token_max_ttl: Duration,
    pub secret_id_ttl: Option<Duration>,
    pub secret_id_num_uses: u32,
    pub bound_cidrs: Vec<Cidr>,
    pub created_ms: u64,
    pub updated_ms: u64,
}

impl RoleRecord {
    pub(crate) fn from_spec(spec: RoleSpec, role_id: String, created_ms: u64, now_ms: u64) -> Self {
        Self {
            name: spec.name,
            role_id,
            roles: spec.roles,
            token_ttl: spec.token_ttl,
            token_max_ttl: spec.token_max_ttl,
            secret_id_ttl: spec.secret_id_ttl.filter(|d| !d.is_zero()),
            secret_id_num_uses: spec.secret_id_num_uses,
            bound_cidrs: spec.bound_cidrs,
            created_ms,
            updated_ms: now_ms,
        }
    }

    fn allows_address(&self, ip: Option<IpAddr>) -> bool {
        self.bound_cidrs.is_empty()
            || ip.is_some_and(|ip| self.bound_cidrs.iter().any(|c| c.contains(ip)))
    }
}

/// What may be shown about a secret id: everything but the id itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SecretIdMeta {
    /// A public handle for listing and destroying the secret id.
    pub accessor: String,
    pub created_ms: u64,
    /// `None`: never expires.
    pub expires_ms: Option<u64>,
    /// Logins left; `None`: unlimited.
    pub uses_left: Option<u32>,
}

/// The stored form of a secret id: its hash and its metadata.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SecretIdRecord {
    /// `hmac-sha256:<hex>` of the secret id, bound to tenant and role.
    pub(crate) hash: String,
    #[serde(flatten)]
    pub(crate) meta: SecretIdMeta,
}

/// A successful AppRole login: who logged in and what its token may carry.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RoleLogin {
    pub tenant: TenantId,
    pub role: RoleName,
    pub roles: Vec<String>,
    pub token_ttl: Duration,
    pub token_max_ttl: Duration,
    /// The accessor of the secret id used, for audit records and token
    /// metadata (never the secret id).
    pub secret_id_accessor: String,
}

/// Index entry `_roleid/<hash>`: where a role id belongs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RoleIdIndex {
    pub(crate) tenant: String,
    pub(crate) role: String,
}

/// 16 random bytes as a version-4 UUID.
pub(crate) fn new_uuid() -> Result<String, VaultError> {
    let b = random_bytes::<16>().map_err(|e| VaultError::Storage(e.to_string()))?;
    let text = uuid_v4_text(b);
    // Only ASCII hex digits and dashes.
    Ok(String::from_utf8_lossy(&text).into_owned())
}

/// The text of a version-4 UUID (`xxxxxxxx-xxxx-4xxx-[89ab]xxx-xxxxxxxxxxxx`,
/// lowercase) made of `random`, whose version and variant bits it sets: the
/// form of Vault's ids (role ids, accessors, request ids).
pub fn uuid_v4_text(mut random: [u8; 16]) -> [u8; 36] {
    random[6] = (random[6] & 0x0f) | 0x40;
    random[8] = (random[8] & 0x3f) | 0x80;
    uuid_text(random)
}

/// `bytes` in the text form of a UUID (8-4-4-4-12 lowercase hex digits),
/// as they are.
pub fn uuid_text(bytes: [u8; 16]) -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'-'; 36];
    let mut at = 0;
    for (i, byte) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            at += 1;
        }
        out[at] = HEX[usize::from(byte >> 4)];
        out[at + 1] = HEX[usize::from(byte & 0x0f)];
        at += 2;
    }
    out
}

/// A new secret id: 32 random bytes in lowercase hex.
pub(crate) fn new_secret_id() -> Result<Secret<String>, VaultError> {
    let raw = Secret::new(random_bytes::<32>().map_err(|e| VaultError::Storage(e.to_string()))?);
    Ok(Secret::new(hex::encode(raw.expose())))
}

/// HMAC-SHA256 under the pepper of `context` and length-prefixed `parts`,
/// so that a hash made for one purpose never matches another.
pub(crate) fn mac(pepper: &Pepper, context: &str, parts: &[&[u8]]) -> KeyHash {
    let len = context.len() + 1 + parts.iter().map(|p| p.len() + 4).sum::<usize>();
    let mut buf = Secret::new(Vec::with_capacity(len));
    let b = buf.expose_mut();
    b.extend_from_slice(context.as_bytes());
    b.push(0);
    for p in parts {
        let n = u32::try_from(p.len()).unwrap_or(u32::MAX);
        b.extend_from_slice(&n.to_be_bytes());
        b.extend_from_slice(p);
    }
    pepper.hash(buf.expose())
}

/// The hex digits of a hash, for record keys.
pub(crate) fn hash_hex(h: &KeyHash) -> String {
    let s = h.to_string();
    s.strip_prefix(rampart_identity::HASH_PREFIX)
        .unwrap_or(&s)
        .to_string()
}

/// The login rule, over plain data: the secret id's hash matches (in
/// constant time), it has not expired and has uses left, and the address
/// is inside the role's bound CIDRs. Every failure is the same
/// [`VaultError::LoginDenied`].
pub(crate) fn check_login(
    role: &RoleRecord,
    sid: &SecretIdRecord,
    presented: &KeyHash,
    client_ip: Option<IpAddr>,
    now_ms: u64,
) -> Result<(), VaultError> {
    let stored = KeyHash::parse(&sid.hash).map_err(|_| VaultError::LoginDenied)?;
    let hash_ok = stored.ct_eq(presented);
    let fresh = sid.meta.expires_ms.is_none_or(|e| now_ms < e);
    let uses_ok = sid.meta.uses_left != Some(0);
    let address_ok = role.allows_address(client_ip);
    if hash_ok && fresh && uses_ok && address_ok {
        Ok(())
    } else {
        Err(VaultError::LoginDenied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names() {
        for ok in ["web", "Web_API-2.prod", "0", &"r".repeat(128)] {
            assert!(RoleName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x", ".x", "a b", "a/b", "é", &"r".repeat(129)] {
            assert!(RoleName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn spec_checks() {
        let mut s = RoleSpec::new(RoleName::parse("r").unwrap());
        assert!(s.check().is_ok());
        s.token_ttl = Duration::from_secs(10);
        s.token_max_ttl = Duration::from_secs(5);
        assert!(s.check().is_err());
        s.token_max_ttl = Duration::ZERO;
        assert!(s.check().is_ok());
        s.roles = vec!["has space".into()];
        assert!(s.check().is_err());
    }

    #[test]
    fn uuid_text_is_the_bytes_in_hex_with_dashes() {
        let b: [u8; 16] = std::array::from_fn(|i| (i as u8) * 17);
        assert_eq!(&uuid_text(b), b"00112233-4455-6677-8899-aabbccddeeff");
        // Version 4, variant 10: only those bits change.
        assert_eq!(&uuid_v4_text(b), b"00112233-4455-4677-8899-aabbccddeeff");
        assert_eq!(&uuid_v4_text([0xff; 16])[14..20], b"4fff-b");
    }

    #[test]
    fn uuids_are_v4_shaped() {
        let u = new_uuid().unwrap();
        assert_eq!(u.len(), 36);
        let parts: Vec<&str> = u.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('4'));
        assert_ne!(u, new_uuid().unwrap());
    }

    #[test]
    fn macs_are_bound_to_their_parts() {
        let p = Pepper::from_bytes(&[9u8; 32]);
        let a = mac(&p, "ctx", &[b"ab", b"c"]);
        assert_eq!(a, mac(&p, "ctx", &[b"ab", b"c"]));
        assert_ne!(a, mac(&p, "ctx", &[b"a", b"bc"]));
        assert_ne!(a, mac(&p, "other", &[b"ab", b"c"]));
        assert_eq!(hash_hex(&a).len(), 64);
    }
}
