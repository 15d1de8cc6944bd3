//! What the keyring keeps in the store, and the associated data that binds
//! each wrapped key to its place.
//!
//! `Table::Keyring`:
//! - `tenant/<tenant>`: [`TenantRecord`], the tenant's key-encryption keys
//!   (every version, each wrapped by the master key) or its erasure
//!   tombstone.
//! - `dk/<tenant>/<scope>`: [`ScopeRecord`], the versions of one data key,
//!   each wrapped by a tenant KEK.
//!
//! `Table::Meta`:
//! - `keyring/master_check`: [`MasterCheck`], a random value wrapped by the
//!   master key at first use, proving at start-up that the key is right.
//! - `keyring/master_rotation`: [`RotationIntent`], present while a master
//!   rotation is unfinished.
//!
//! Names are escaped (bytes outside `[A-Za-z0-9_.-]` become `%XX`), so a
//! `/` in a name can never shift a key into another tenant's prefix.

use std::fmt::Write as _;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use rampart_store::{KvStore, Table};

use crate::error::KeyError;

pub(crate) const MASTER_CHECK: &str = "keyring/master_check";
pub(crate) const MASTER_ROTATION: &str = "keyring/master_rotation";
pub(crate) const TENANT_PREFIX: &str = "tenant/";
/// Associated data of the master check value.
pub(crate) const CHECK_AAD: &[u8] = b"rampart-keys:master-check";
/// Header of a data key wrapped by a KEK.
pub(crate) const DK_WRAP_HEADER: &[u8; 4] = b"rkw1";

/// Longest tenant name accepted, in bytes.
const MAX_TENANT_LEN: usize = 255;

/// Percent-escapes every byte outside `[A-Za-z0-9_.-]`; injective.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn unesc(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

pub(crate) fn check_tenant(tenant: &str) -> Result<(), KeyError> {
    let reason = if tenant.is_empty() {
        "empty"
    } else if tenant.len() > MAX_TENANT_LEN {
        "longer than 255 bytes"
    } else if tenant.chars().any(char::is_control) {
        "has a control character"
    } else {
        return Ok(());
    };
    Err(KeyError::InvalidName {
        what: "tenant",
        reason,
    })
}

pub(crate) fn tenant_key(tenant: &str) -> String {
    format!("{TENANT_PREFIX}{}", esc(tenant))
}

/// The tenant named by a `tenant/<escaped>` store key.
pub(crate) fn tenant_of_key(key: &str) -> Option<String> {
    unesc(key.strip_prefix(TENANT_PREFIX)?)
}

pub(crate) fn scope_prefix(tenant: &str) -> String {
    format!("dk/{}/", esc(tenant))
}

pub(crate) fn scope_key(tenant: &str, scope_id: &str) -> String {
    format!("dk/{}/{scope_id}", esc(tenant))
}

/// Associated data of a tenant KEK wrapped by the master key.
pub(crate) fn kek_aad(tenant: &str, version: u32) -> Vec<u8> {
    format!("tenant-kek:{}:{version}", esc(tenant)).into_bytes()
}

/// Associated data of a data key wrapped by a tenant KEK.
pub(crate) fn data_key_aad(tenant: &str, scope_id: &str, version: u32, kek: u32) -> Vec<u8> {
    format!("data-key:{}:{scope_id}:{version}:{kek}", esc(tenant)).into_bytes()
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

pub(crate) fn unb64(key: &str, s: &str) -> Result<Vec<u8>, KeyError> {
    STANDARD.decode(s).map_err(|_| KeyError::Corrupt {
        key: key.to_owned(),
        reason: "wrapped key is not base64".into(),
    })
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A tenant's key-encryption keys, or the tombstone an erasure leaves.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub(crate) enum TenantRecord {
    Active {
        /// The KEK version new data keys are wrapped with.
        current: u32,
        /// Every KEK version, wrapped by the master key.
        keks: Vec<KekRecord>,
    },
    /// Kept for ever, so that an erased tenant is never silently given new
    /// keys under its old name.
    Erased { erased_ms: u64 },
}

/// One version of a tenant's KEK.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct KekRecord {
    pub version: u32,
    /// base64 of what the master key provider returned.
    pub wrapped: String,
}

/// The versions of one data key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ScopeRecord {
    /// Versions up to this one were destroyed; new ones count on from here.
    #[serde(default)]
    pub erased_through: u32,
    #[serde(default)]
    pub keys: Vec<DataKeyRecord>,
}

impl ScopeRecord {
    pub(crate) fn latest(&self) -> Option<&DataKeyRecord> {
        self.keys.iter().max_by_key(|k| k.version)
    }

    pub(crate) fn next_version(&self) -> u32 {
        self.latest()
            .map_or(0, |k| k.version)
            .max(self.erased_through)
            .saturating_add(1)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DataKeyRecord {
    pub version: u32,
    /// The KEK version it is wrapped with.
    pub kek: u32,
    /// base64 of `rkw1 | nonce | ciphertext | tag`.
    pub wrapped: String,
    /// Seals reserved so far: with random 96-bit nonces, one key may seal at
    /// most [`crate::tenant::Limits::max_seals`] values; a reservation is
    /// written before the seals it covers, so a restart never reuses counts.
    pub reserved: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct MasterCheck {
    /// base64 of a random value wrapped by the master key.
    pub wrapped: String,
    /// The provider that wrote it, for operators (no secret).
    pub provider: String,
    pub created_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RotationIntent {
    /// The newest master version when the rotation began: the provider has
    /// rotated once its newest version is past this one.
    pub from: u32,
    pub started_ms: u64,
}

pub(crate) fn get<T: DeserializeOwned>(
    kv: &dyn KvStore,
    table: Table,
    key: &str,
) -> Result<Option<T>, KeyError> {
    kv.get(table, key)?.map(|b| parse(key, &b)).transpose()
}

pub(crate) fn parse<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, KeyError> {
    serde_json::from_slice(bytes).map_err(|e| KeyError::Corrupt {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

pub(crate) fn encode<T: Serialize>(key: &str, value: &T) -> Result<Vec<u8>, KeyError> {
    serde_json::to_vec(value).map_err(|e| KeyError::Corrupt {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_is_reversible_and_keeps_prefixes_apart() {
        for s in ["acme", "a/b", "a%2Fb", "ü:x", ""] {
            assert_eq!(unesc(&esc(s)).as_deref(), Some(s));
        }
        assert_eq!(esc("a/b"), "a%2Fb");
        assert_ne!(esc("a/b"), esc("a%2Fb"));
        assert!(!scope_prefix("a/b").starts_with(&scope_prefix("a")));
        assert_eq!(tenant_of_key(&tenant_key("x y")).as_deref(), Some("x y"));
        assert!(check_tenant("").is_err());
        assert!(check_tenant("a\nb").is_err());
        assert!(check_tenant(&"x".repeat(256)).is_err());
        assert!(check_tenant("acme").is_ok());
    }
}
