//! The KV v2 model of one secret, free of storage: its metadata and
//! versions, and every state change Vault's KV v2 engine makes to them.
//!
//! [`crate::Vault`] loads a [`SecretRecord`], calls one of these methods and
//! stores the record again; the rules (version numbers, check-and-set,
//! trimming to `max_versions`, soft delete, destroy) all live here. A read
//! takes a [`SecretView`] instead, which decodes only the version read.

use std::collections::BTreeMap;
use std::time::Duration;

use rampart_identity::Secret;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::data::SecretData;
use crate::error::VaultError;

/// Versions kept when a secret's `max_versions` is 0, as Vault's mount
/// default.
pub const DEFAULT_MAX_VERSIONS: u32 = 10;
/// Most entries in `custom_metadata` (Vault's limit).
pub const MAX_CUSTOM_METADATA_KEYS: usize = 64;
/// Longest `custom_metadata` key, in bytes (Vault's limit).
pub const MAX_CUSTOM_METADATA_KEY_LEN: usize = 128;
/// Longest `custom_metadata` value, in bytes (Vault's limit).
pub const MAX_CUSTOM_METADATA_VALUE_LEN: usize = 512;
/// Largest data of one version, as compact JSON, in bytes.
pub const MAX_DATA_BYTES: usize = 512 * 1024;

/// The state of one version, as in the `versions` map of Vault's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct VersionMeta {
    pub created_ms: u64,
    /// When the version was (or, with `delete_version_after`, will be)
    /// soft-deleted. Vault prints `""` for none.
    pub deletion_ms: Option<u64>,
    /// The data is gone for good.
    pub destroyed: bool,
}

impl VersionMeta {
    /// A version's state as another KV v2 store reports it.
    pub fn new(created_ms: u64, deletion_ms: Option<u64>, destroyed: bool) -> Self {
        Self {
            created_ms,
            deletion_ms,
            destroyed,
        }
    }

    /// Whether the version is soft-deleted at `now_ms`.
    pub fn is_deleted(&self, now_ms: u64) -> bool {
        self.deletion_ms.is_some_and(|d| d <= now_ms)
    }
}

/// One version and the secret's custom metadata: what Vault answers to a
/// data write or patch, and the `metadata` part of a data read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VersionInfo {
    pub version: u64,
    pub meta: VersionMeta,
    pub custom_metadata: BTreeMap<String, String>,
}

impl VersionInfo {
    pub fn new(version: u64, meta: VersionMeta, custom_metadata: BTreeMap<String, String>) -> Self {
        Self {
            version,
            meta,
            custom_metadata,
        }
    }
}

/// A version read back. `data` is `None` when the version is soft-deleted
/// or destroyed (Vault answers 404 with the metadata in the body).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SecretVersion {
    pub info: VersionInfo,
    pub data: Option<Secret<SecretData>>,
}

impl SecretVersion {
    /// `data` is `None` for a deleted or destroyed version.
    pub fn new(info: VersionInfo, data: Option<Secret<SecretData>>) -> Self {
        Self { info, data }
    }
}

/// A secret's metadata, field for field as Vault's `metadata/` endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SecretMetadata {
    pub created_ms: u64,
    pub updated_ms: u64,
    /// 0 when only metadata was written.
    pub current_version: u64,
    /// 0 until versions were first trimmed, as in Vault.
    pub oldest_version: u64,
    /// As set; 0 means [`DEFAULT_MAX_VERSIONS`].
    pub max_versions: u32,
    pub cas_required: bool,
    /// Zero when unset.
    pub delete_version_after: Duration,
    pub custom_metadata: BTreeMap<String, String>,
    pub versions: BTreeMap<u64, VersionMeta>,
}

impl SecretMetadata {
    /// A secret with no version and default settings; set the other
    /// (public) fields to describe one another KV v2 store reports.
    pub fn new(created_ms: u64, updated_ms: u64) -> Self {
        Self {
            created_ms,
            updated_ms,
            current_version: 0,
            oldest_version: 0,
            max_versions: 0,
            cas_required: false,
            delete_version_after: Duration::ZERO,
            custom_metadata: BTreeMap::new(),
            versions: BTreeMap::new(),
        }
    }
}

/// How a metadata write changes `custom_metadata`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CustomMetadataChange {
    /// The whole map (Vault's metadata POST).
    Replace(BTreeMap<String, String>),
    /// Set each `Some`, remove each `None` (Vault's metadata PATCH, where a
    /// JSON `null` removes a key).
    Merge(BTreeMap<String, Option<String>>),
}

/// The settable metadata fields; `None` keeps the current value, as Vault
/// does for fields a request leaves out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetadataUpdate {
    pub max_versions: Option<u32>,
    pub cas_required: Option<bool>,
    /// Stored and applied to new versions; zero clears it.
    pub delete_version_after: Option<Duration>,
    pub custom_metadata: Option<CustomMetadataChange>,
}

/// The stored form of one version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct VersionRecord {
    #[serde(flatten)]
    meta: VersionMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data: Option<SecretData>,
}

/// The stored form of one secret: its metadata and every kept version,
/// held as `V`: decoded ([`VersionRecord`], the default, for every change)
/// or left as JSON text ([`SecretView`], for a read).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SecretRecord<V = VersionRecord> {
    created_ms: u64,
    updated_ms: u64,
    current_version: u64,
    oldest_version: u64,
    max_versions: u32,
    cas_required: bool,
    #[serde(default)]
    delete_version_after_ms: u64,
    #[serde(default)]
    custom_metadata: BTreeMap<String, String>,
    versions: BTreeMap<u64, V>,
}

/// A stored secret as a read takes it: the metadata decoded and each
/// version left as its JSON text within the opened record, borrowed, until
/// one is asked for. A read decodes the version it returns and no other,
/// so it costs the same whatever the number of versions kept (up to
/// `max_versions` of up to [`MAX_DATA_BYTES`] each), and the data of the
/// others is never copied out of the opened record, which is zeroized
/// when dropped.
pub(crate) type SecretView<'a> = SecretRecord<&'a RawValue>;

fn check_custom_metadata(m: &BTreeMap<String, String>) -> Result<(), VaultError> {
    let bad = |msg: String| Err(VaultError::InvalidInput(format!("custom_metadata: {msg}")));
    if m.len() > MAX_CUSTOM_METADATA_KEYS {
        return bad(format!(
            "at most {MAX_CUSTOM_METADATA_KEYS} keys, got {}",
            m.len()
        ));
    }
    for (k, v) in m {
        if k.is_empty() || k.len() > MAX_CUSTOM_METADATA_KEY_LEN {
            return bad(format!(
                "key length must be 1 to {MAX_CUSTOM_METADATA_KEY_LEN} bytes"
            ));
        }
        if v.is_empty() || v.len() > MAX_CUSTOM_METADATA_VALUE_LEN {
            return bad(format!(
                "value length must be 1 to {MAX_CUSTOM_METADATA_VALUE_LEN} bytes"
            ));
        }
        if k.chars().any(char::is_control) || v.chars().any(char::is_control) {
            return bad("keys and values must be printable".into());
        }
    }
    Ok(())
}

/// Counts the bytes serde_json would write, without a copy of the data.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn check_data_size(data: &SecretData) -> Result<(), VaultError> {
    let mut n = ByteCount(0);
    serde_json::to_writer(&mut n, data).map_err(|e| VaultError::InvalidInput(e.to_string()))?;
    if n.0 > MAX_DATA_BYTES {
        return Err(VaultError::InvalidInput(format!(
            "secret data is larger than {MAX_DATA_BYTES} bytes"
        )));
    }
    Ok(())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl<V> SecretRecord<V> {
    fn info(&self, version: u64, meta: VersionMeta) -> VersionInfo {
        VersionInfo {
            version,
            meta,
            custom_metadata: self.custom_metadata.clone(),
        }
    }

    /// Reads `version` (`None` or `Some(0)`: the current one), which
    /// `open` turns into its metadata and data. The data comes back
    /// unless the version is deleted or destroyed.
    fn read_with(
        &self,
        version: Option<u64>,
        now_ms: u64,
        open: impl FnOnce(u64, &V) -> Result<(VersionMeta, Option<SecretData>), VaultError>,
    ) -> Result<SecretVersion, VaultError> {
        let n = match version {
            None | Some(0) if self.current_version == 0 => return Err(VaultError::NotFound),
            None | Some(0) => self.current_version,
            Some(n) => n,
        };
        let v = self.versions.get(&n).ok_or(VaultError::VersionNotFound)?;
        let (meta, data) = open(n, v)?;
        let gone = meta.destroyed || meta.is_deleted(now_ms);
        Ok(SecretVersion {
            info: self.info(n, meta),
            data: data.filter(|_| !gone).map(Secret::new),
        })
    }
}

impl SecretView<'_> {
    /// As [`SecretRecord::read`], decoding only the version read.
    pub(crate) fn read(
        &self,
        version: Option<u64>,
        now_ms: u64,
    ) -> Result<SecretVersion, VaultError> {
        self.read_with(version, now_ms, |n, raw| {
            let v: VersionRecord = serde_json::from_str(raw.get())
                .map_err(|e| VaultError::Storage(format!("version {n} does not decode: {e}")))?;
            Ok((v.meta, v.data))
        })
    }
}

impl SecretRecord {
    /// A secret with metadata and no version yet.
    pub(crate) fn new(now_ms: u64) -> Self {
        Self {
            created_ms: now_ms,
            updated_ms: now_ms,
            current_version: 0,
            oldest_version: 0,
            max_versions: 0,
            cas_required: false,
            delete_version_after_ms: 0,
            custom_metadata: BTreeMap::new(),
            versions: BTreeMap::new(),
        }
    }

    /// Vault's check-and-set rule: with `cas`, the current version must be
    /// `cas` (0 = no version yet); without, the secret must not require it.
    fn check_cas(&self, cas: Option<u64>) -> Result<(), VaultError> {
        match cas {
            Some(c) if c != self.current_version => Err(VaultError::CasMismatch {
                expected: c,
                current: self.current_version,
            }),
            Some(_) => Ok(()),
            None if self.cas_required => Err(VaultError::CasRequired),
            None => Ok(()),
        }
    }

    fn scheduled_deletion(&self, from_ms: u64) -> Option<u64> {
        (self.delete_version_after_ms > 0)
            .then(|| from_ms.saturating_add(self.delete_version_after_ms))
    }

    /// Adds a version and trims the oldest beyond `max_versions`, with
    /// Vault's arithmetic (so `oldest_version` moves exactly as Vault's).
    fn add_version(&mut self, data: SecretData, now_ms: u64) -> VersionInfo {
        let meta = VersionMeta {
            created_ms: now_ms,
            deletion_ms: self.scheduled_deletion(now_ms),
            destroyed: false,
        };
        self.current_version += 1;
        self.versions.insert(
            self.current_version,
            VersionRecord {
                meta,
                data: Some(data),
            },
        );
        self.updated_ms = now_ms;
        let max = u64::from(if self.max_versions > 0 {
            self.max_versions
        } else {
            DEFAULT_MAX_VERSIONS
        });
        if self.current_version - self.oldest_version >= max {
            let drop_through = self.current_version - max;
            // Dropped versions' data is wiped by `SecretData`'s Drop.
            self.versions.retain(|&v, _| v > drop_through);
            self.oldest_version = drop_through + 1;
        }
        self.info(self.current_version, meta)
    }

    /// A data write (Vault's `data/` POST).
    pub(crate) fn write(
        &mut self,
        data: &Secret<SecretData>,
        cas: Option<u64>,
        now_ms: u64,
    ) -> Result<VersionInfo, VaultError> {
        check_data_size(data.expose())?;
        self.check_cas(cas)?;
        Ok(self.add_version(data.expose().clone(), now_ms))
    }

    /// A merge patch of the current version into a new one (Vault's
    /// `data/` PATCH). The current version must be readable.
    pub(crate) fn patch(
        &mut self,
        patch: &Secret<SecretData>,
        cas: Option<u64>,
        now_ms: u64,
    ) -> Result<VersionInfo, VaultError> {
        self.check_cas(cas)?;
        let current = self
            .versions
            .get(&self.current_version)
            .filter(|v| !v.meta.destroyed && !v.meta.is_deleted(now_ms))
            .and_then(|v| v.data.as_ref())
            .ok_or(VaultError::NotFound)?;
        // `SecretData` wipes itself on drop, so the working copy needs no
        // wrapper.
        let mut next = current.clone();
        next.merge_patch(patch.expose());
        check_data_size(&next)?;
        Ok(self.add_version(next, now_ms))
    }

    /// Reads `version` (`None` or `Some(0)`: the current one) from the
    /// whole record. The vault reads through a [`SecretView`]; this is the
    /// model the tests hold it to.
    #[cfg(test)]
    pub(crate) fn read(
        &self,
        version: Option<u64>,
        now_ms: u64,
    ) -> Result<SecretVersion, VaultError> {
        self.read_with(version, now_ms, |_, v| Ok((v.meta, v.data.clone())))
    }

    /// Soft-deletes the current version, unless it is already deleted or
    /// destroyed. Returns whether anything changed.
    pub(crate) fn delete_latest(&mut self, now_ms: u64) -> bool {
        let n = self.current_version;
        self.delete_versions(&[n], now_ms)
    }

    /// Soft-deletes versions; unknown, destroyed and already deleted ones
    /// are left alone, as in Vault.
    pub(crate) fn delete_versions(&mut self, versions: &[u64], now_ms: u64) -> bool {
        let mut changed = false;
        for n in versions {
            if let Some(v) = self.versions.get_mut(n) {
                if !v.meta.destroyed && !v.meta.is_deleted(now_ms) {
                    v.meta.deletion_ms = Some(now_ms);
                    changed = true;
                }
            }
        }
        changed
    }

    /// Clears the deletion of versions that are not destroyed (and
    /// schedules a new one when `delete_version_after` is set, as Vault).
    pub(crate) fn undelete_versions(&mut self, versions: &[u64], now_ms: u64) -> bool {
        let scheduled = self.scheduled_deletion(now_ms);
        let mut changed = false;
        for n in versions {
            if let Some(v) = self.versions.get_mut(n) {
                if !v.meta.destroyed {
                    changed |= v.meta.deletion_ms != scheduled;
                    v.meta.deletion_ms = scheduled;
                }
            }
        }
        changed
    }

    /// Destroys versions: their data is dropped (and wiped) for good.
    pub(crate) fn destroy_versions(&mut self, versions: &[u64]) -> bool {
        let mut changed = false;
        for n in versions {
            if let Some(v) = self.versions.get_mut(n) {
                changed |= !v.meta.destroyed || v.data.is_some();
                v.meta.destroyed = true;
                v.data = None;
            }
        }
        changed
    }

    pub(crate) fn metadata(&self) -> SecretMetadata {
        SecretMetadata {
            created_ms: self.created_ms,
            updated_ms: self.updated_ms,
            current_version: self.current_version,
            oldest_version: self.oldest_version,
            max_versions: self.max_versions,
            cas_required: self.cas_required,
            delete_version_after: Duration::from_millis(self.delete_version_after_ms),
            custom_metadata: self.custom_metadata.clone(),
            versions: self.versions.iter().map(|(&n, v)| (n, v.meta)).collect(),
        }
    }

    /// Applies a metadata write. Like Vault, it neither bumps
    /// `updated_ms` nor trims versions; a lower `max_versions` takes effect
    /// at the next data write.
    pub(crate) fn update_metadata(&mut self, u: MetadataUpdate) -> Result<(), VaultError> {
        let custom = match u.custom_metadata {
            None => None,
            Some(CustomMetadataChange::Replace(m)) => Some(m),
            Some(CustomMetadataChange::Merge(patch)) => {
                let mut m = self.custom_metadata.clone();
                for (k, v) in patch {
                    match v {
                        Some(v) => m.insert(k, v),
                        None => m.remove(&k),
                    };
                }
                Some(m)
            }
        };
        if let Some(m) = &custom {
            check_custom_metadata(m)?;
        }
        if let Some(m) = custom {
            self.custom_metadata = m;
        }
        if let Some(n) = u.max_versions {
            self.max_versions = n;
        }
        if let Some(c) = u.cas_required {
            self.cas_required = c;
        }
        if let Some(d) = u.delete_version_after {
            self.delete_version_after_ms = millis(d);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn data(v: Value) -> Secret<SecretData> {
        match v {
            Value::Object(m) => Secret::new(SecretData::new(m)),
            _ => unreachable!("test data must be an object"),
        }
    }

    fn get(r: &SecretRecord, version: Option<u64>, now: u64) -> Option<Value> {
        r.read(version, now)
            .unwrap()
            .data
            .map(|d| Value::Object(d.expose().as_map().clone()))
    }

    #[test]
    fn versions_count_from_one_and_read_by_number() {
        let mut r = SecretRecord::new(1);
        assert_eq!(r.read(None, 1).unwrap_err(), VaultError::NotFound);
        for i in 1..=3u64 {
            let info = r.write(&data(json!({ "i": i })), None, 10 * i).unwrap();
            assert_eq!(info.version, i);
            assert_eq!(info.meta.created_ms, 10 * i);
        }
        assert_eq!(get(&r, None, 99), Some(json!({"i": 3})));
        assert_eq!(get(&r, Some(0), 99), Some(json!({"i": 3})));
        assert_eq!(get(&r, Some(2), 99), Some(json!({"i": 2})));
        assert_eq!(
            r.read(Some(4), 99).unwrap_err(),
            VaultError::VersionNotFound
        );
        let m = r.metadata();
        assert_eq!((m.current_version, m.oldest_version), (3, 0));
        assert_eq!((m.created_ms, m.updated_ms), (1, 30));
    }

    #[test]
    fn check_and_set() {
        let mut r = SecretRecord::new(1);
        assert_eq!(
            r.write(&data(json!({})), Some(1), 1).unwrap_err(),
            VaultError::CasMismatch {
                expected: 1,
                current: 0
            }
        );
        r.write(&data(json!({"a": 1})), Some(0), 2).unwrap();
        assert_eq!(
            r.write(&data(json!({})), Some(0), 3).unwrap_err(),
            VaultError::CasMismatch {
                expected: 0,
                current: 1
            }
        );
        r.write(&data(json!({"a": 2})), Some(1), 4).unwrap();
        r.update_metadata(MetadataUpdate {
            cas_required: Some(true),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            r.write(&data(json!({})), None, 5).unwrap_err(),
            VaultError::CasRequired
        );
        assert_eq!(
            r.patch(&data(json!({})), None, 5).unwrap_err(),
            VaultError::CasRequired
        );
        assert_eq!(r.write(&data(json!({})), Some(2), 6).unwrap().version, 3);
    }

    #[test]
    fn max_versions_trims_like_vault() {
        let mut r = SecretRecord::new(0);
        r.update_metadata(MetadataUpdate {
            max_versions: Some(3),
            ..Default::default()
        })
        .unwrap();
        for i in 1..=2u64 {
            r.write(&data(json!({ "i": i })), None, i).unwrap();
        }
        assert_eq!(r.metadata().oldest_version, 0);
        r.write(&data(json!({"i": 3})), None, 3).unwrap();
        // Vault moves oldest_version to 1 once current - oldest reaches max.
        assert_eq!(r.metadata().oldest_version, 1);
        r.write(&data(json!({"i": 4})), None, 4).unwrap();
        let m = r.metadata();
        assert_eq!(m.oldest_version, 2);
        assert_eq!(
            m.versions.keys().copied().collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
        assert_eq!(r.read(Some(1), 9).unwrap_err(), VaultError::VersionNotFound);
        // Lowering max_versions trims at the next write.
        r.update_metadata(MetadataUpdate {
            max_versions: Some(1),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(r.metadata().versions.len(), 3);
        r.write(&data(json!({"i": 5})), None, 5).unwrap();
        let m = r.metadata();
        assert_eq!(m.versions.keys().copied().collect::<Vec<_>>(), vec![5]);
        assert_eq!(m.oldest_version, 5);
    }

    #[test]
    fn default_max_versions_is_ten() {
        let mut r = SecretRecord::new(0);
        for i in 1..=12u64 {
            r.write(&data(json!({ "i": i })), None, i).unwrap();
        }
        let m = r.metadata();
        assert_eq!(m.max_versions, 0);
        assert_eq!(m.versions.len(), 10);
        assert_eq!(m.oldest_version, 3);
    }

    #[test]
    fn delete_undelete_destroy() {
        let mut r = SecretRecord::new(0);
        for i in 1..=3u64 {
            r.write(&data(json!({ "i": i })), None, i).unwrap();
        }
        assert!(r.delete_latest(10));
        assert!(!r.delete_latest(11), "already deleted");
        let v3 = r.read(None, 12).unwrap();
        assert_eq!(v3.data, None);
        assert_eq!(v3.info.meta.deletion_ms, Some(10));
        assert!(r.delete_versions(&[1, 99], 13));
        assert_eq!(get(&r, Some(1), 14), None);
        assert_eq!(get(&r, Some(2), 14), Some(json!({"i": 2})));
        assert!(r.undelete_versions(&[1, 3], 15));
        assert_eq!(get(&r, Some(1), 16), Some(json!({"i": 1})));
        assert_eq!(get(&r, None, 16), Some(json!({"i": 3})));
        assert!(r.destroy_versions(&[2]));
        let v2 = r.read(Some(2), 17).unwrap();
        assert!(v2.data.is_none() && v2.info.meta.destroyed);
        // Undelete does not bring a destroyed version back.
        r.undelete_versions(&[2], 18);
        assert!(r.read(Some(2), 19).unwrap().data.is_none());
        // Nor is its data anywhere in the stored form.
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains(r#""i":1"#) && !json.contains(r#""i":2"#));
    }

    /// A read through the view, which decodes one version, answers as a
    /// read of the whole record: every version (current, older, deleted,
    /// undeleted, destroyed, trimmed, never written), before and after a
    /// scheduled deletion.
    #[test]
    fn a_view_reads_as_the_whole_record() {
        let mut r = SecretRecord::new(0);
        r.update_metadata(MetadataUpdate {
            max_versions: Some(4),
            delete_version_after: Some(Duration::from_millis(500)),
            custom_metadata: Some(CustomMetadataChange::Replace(
                [("team".to_string(), "db".to_string())].into(),
            )),
            ..Default::default()
        })
        .unwrap();
        let stored = |r: &SecretRecord| serde_json::to_vec(r).unwrap();
        let same = |r: &SecretRecord, bytes: &[u8]| {
            let view: SecretView<'_> = serde_json::from_slice(bytes).unwrap();
            for version in [
                None,
                Some(0),
                Some(1),
                Some(2),
                Some(3),
                Some(5),
                Some(6),
                Some(9),
            ] {
                for now in [7, 99, 104, 599, 2_000] {
                    assert_eq!(
                        view.read(version, now),
                        r.read(version, now),
                        "version {version:?} at {now}"
                    );
                }
            }
        };
        let empty = stored(&r);
        same(&r, &empty);
        for i in 1..=6u64 {
            r.write(
                &data(json!({ "i": i, "s": "x".repeat(i as usize) })),
                None,
                100 + i,
            )
            .unwrap();
        }
        r.delete_versions(&[4], 110);
        r.delete_versions(&[5], 111);
        r.undelete_versions(&[5], 112);
        r.destroy_versions(&[3]);
        same(&r, &stored(&r));
        // A version whose text does not decode is an error, not a panic,
        // and only when it is the one read.
        let mut bytes = String::from_utf8(stored(&r)).unwrap();
        bytes = bytes.replacen(r#"{"created_ms":104"#, r#"{"created_ms":"x""#, 1);
        let view: SecretView<'_> = serde_json::from_str(&bytes).unwrap();
        assert!(matches!(
            view.read(Some(4), 200),
            Err(VaultError::Storage(_))
        ));
        assert_eq!(view.read(Some(6), 200), r.read(Some(6), 200));
    }

    #[test]
    fn delete_version_after_schedules_deletion() {
        let mut r = SecretRecord::new(0);
        r.update_metadata(MetadataUpdate {
            delete_version_after: Some(Duration::from_secs(1)),
            ..Default::default()
        })
        .unwrap();
        let info = r.write(&data(json!({"a": 1})), None, 100).unwrap();
        assert_eq!(info.meta.deletion_ms, Some(1100));
        assert!(get(&r, None, 1099).is_some());
        assert!(get(&r, None, 1100).is_none());
    }

    #[test]
    fn patch_merges_into_a_new_version() {
        let mut r = SecretRecord::new(0);
        assert_eq!(
            r.patch(&data(json!({"a": 1})), None, 1).unwrap_err(),
            VaultError::NotFound
        );
        r.write(
            &data(json!({"user": "u", "pass": "p", "old": true})),
            None,
            1,
        )
        .unwrap();
        let info = r
            .patch(
                &data(json!({"pass": "q", "old": null, "new": 1})),
                Some(1),
                2,
            )
            .unwrap();
        assert_eq!(info.version, 2);
        assert_eq!(
            get(&r, None, 3),
            Some(json!({"user": "u", "pass": "q", "new": 1}))
        );
        assert_eq!(
            get(&r, Some(1), 3),
            Some(json!({"user": "u", "pass": "p", "old": true}))
        );
        assert_eq!(
            r.patch(&data(json!({})), Some(1), 4).unwrap_err(),
            VaultError::CasMismatch {
                expected: 1,
                current: 2
            }
        );
        r.delete_latest(5);
        assert_eq!(
            r.patch(&data(json!({"a": 1})), None, 6).unwrap_err(),
            VaultError::NotFound
        );
    }

    #[test]
    fn custom_metadata_limits() {
        let mut r = SecretRecord::new(0);
        let set = |m: BTreeMap<String, String>| MetadataUpdate {
            custom_metadata: Some(CustomMetadataChange::Replace(m)),
            ..Default::default()
        };
        let ok: BTreeMap<String, String> = (0..64)
            .map(|i| (format!("k{i}"), "v".repeat(512)))
            .collect();
        r.update_metadata(set(ok.clone())).unwrap();
        assert_eq!(r.metadata().custom_metadata, ok);
        let mut too_many = ok.clone();
        too_many.insert("one-more".into(), "v".into());
        for bad in [
            too_many,
            BTreeMap::from([("k".repeat(129), "v".into())]),
            BTreeMap::from([("k".into(), "v".repeat(513))]),
            BTreeMap::from([(String::new(), "v".into())]),
            BTreeMap::from([("k".into(), String::new())]),
            BTreeMap::from([("k".into(), "a\nb".into())]),
        ] {
            assert!(matches!(
                r.update_metadata(set(bad)).unwrap_err(),
                VaultError::InvalidInput(_)
            ));
        }
        assert_eq!(
            r.metadata().custom_metadata,
            ok,
            "refused writes change nothing"
        );
        r.update_metadata(MetadataUpdate {
            custom_metadata: Some(CustomMetadataChange::Merge(BTreeMap::from([
                ("k0".into(), None),
                ("k1".into(), Some("x".into())),
            ]))),
            ..Default::default()
        })
        .unwrap();
        let m = r.metadata().custom_metadata;
        assert_eq!(m.len(), 63);
        assert_eq!(m["k1"], "x");
    }

    #[test]
    fn oversized_data_is_refused() {
        let mut r = SecretRecord::new(0);
        let big = "x".repeat(MAX_DATA_BYTES);
        assert!(matches!(
            r.write(&data(json!({ "b": big })), None, 1).unwrap_err(),
            VaultError::InvalidInput(_)
        ));
        assert_eq!(r.metadata().current_version, 0);
    }
}
