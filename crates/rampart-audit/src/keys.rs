//! The audit keys: Ed25519 for signing checkpoints, HMAC-SHA256 for
//! pseudonymous identifiers. Both live in the data directory, mode 0600.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rampart_identity::{fsutil, random_bytes, Secret};
use ring::hmac;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};

use crate::error::AuditError;

/// File name of the checkpoint signing key (PKCS#8), in the data directory.
pub(crate) const SIGNING_KEY_FILE: &str = "audit_signing.key";
/// File name of the identifier HMAC key (32 bytes, base64), in the data
/// directory.
pub(crate) const HMAC_KEY_FILE: &str = "audit_hmac.key";

/// The audit log's keys: an Ed25519 key that signs checkpoints and an
/// HMAC-SHA256 key for [`AuditKeys::hmac_id`]. `Debug` shows only the public
/// key.
pub struct AuditKeys {
    pair: Ed25519KeyPair,
    hmac: hmac::Key,
}

impl fmt::Debug for AuditKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditKeys")
            .field("public_key", &B64.encode(self.public_key()))
            .field("secret_keys", &"[redacted]")
            .finish()
    }
}

impl AuditKeys {
    /// Reads `<data_dir>/audit_signing.key` and `<data_dir>/audit_hmac.key`,
    /// creating each (mode 0600, never replacing an existing file) if it is
    /// missing.
    pub fn load_or_create(data_dir: &Path) -> Result<AuditKeys, AuditError> {
        fsutil::create_private_dir(data_dir).map_err(|e| AuditError::io(data_dir, e))?;
        let pair = load_or_create_signing(&data_dir.join(SIGNING_KEY_FILE))?;
        let hmac = load_or_create_hmac(&data_dir.join(HMAC_KEY_FILE))?;
        Ok(AuditKeys { pair, hmac })
    }

    /// Keys from their bytes: a PKCS#8 Ed25519 signing key and a 32-byte HMAC
    /// key (for a server that keeps them wrapped by its master key).
    pub fn from_bytes(signing_pkcs8: &[u8], hmac_key: &[u8]) -> Result<AuditKeys, AuditError> {
        let err = |reason: String| AuditError::Key {
            path: PathBuf::from("(wrapped)"),
            reason,
        };
        if hmac_key.len() < 32 {
            return Err(err("HMAC key shorter than 32 bytes".into()));
        }
        let pair = Ed25519KeyPair::from_pkcs8(signing_pkcs8)
            .map_err(|e| err(format!("not an Ed25519 PKCS#8 key: {e}")))?;
        Ok(AuditKeys {
            pair,
            hmac: hmac::Key::new(hmac::HMAC_SHA256, hmac_key),
        })
    }

    /// The HMAC of `value` under a raw key, as [`AuditKeys::hmac_id`] gives.
    pub fn hmac_id_for(hmac_key: &[u8], value: &str) -> String {
        hmac_id(&hmac::Key::new(hmac::HMAC_SHA256, hmac_key), value)
    }

    /// Fresh keys that live only in memory, for tests and for a disabled log.
    pub fn ephemeral() -> Result<AuditKeys, AuditError> {
        let err = |reason: String| AuditError::Key {
            path: PathBuf::from("(memory)"),
            reason,
        };
        let doc =
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|e| err(e.to_string()))?;
        let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref()).map_err(|e| err(e.to_string()))?;
        let raw = Secret::new(random_bytes::<32>().map_err(|e| err(e.to_string()))?);
        Ok(AuditKeys {
            pair,
            hmac: hmac::Key::new(hmac::HMAC_SHA256, raw.expose()),
        })
    }

    /// The raw 32-byte Ed25519 public key that checkpoints verify with.
    pub fn public_key(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// A stable pseudonym for a sensitive identifier (an e-mail address, a
    /// client certificate subject): `hmac:` and the first 16 bytes of
    /// HMAC-SHA256(key, value) in hex. The same value always gives the same
    /// id with the same key, so records can be correlated and searched
    /// (`rampart audit hash VALUE`) without the log holding the value.
    pub fn hmac_id(&self, value: &str) -> String {
        hmac_id(&self.hmac, value)
    }

    /// A public name for the HMAC key, so records can say which key their
    /// pseudonyms are under without revealing anything of it: the first 8
    /// bytes of HMAC-SHA256(key, a fixed label), hex.
    pub fn hmac_key_id(&self) -> String {
        let tag = hmac::sign(&self.hmac, HMAC_KEY_ID_LABEL);
        hex::encode(&tag.as_ref()[..8])
    }

    pub(crate) fn sign(&self, msg: &[u8]) -> Vec<u8> {
        self.pair.sign(msg).as_ref().to_vec()
    }
}

const HMAC_KEY_ID_LABEL: &[u8] = b"rampart-audit-hmac-key-id:v1";

/// [`AuditKeys::hmac_key_id`] of a raw HMAC key.
pub fn hmac_key_id_for(hmac_key: &[u8]) -> String {
    let tag = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, hmac_key),
        HMAC_KEY_ID_LABEL,
    );
    hex::encode(&tag.as_ref()[..8])
}

/// [`AuditKeys::hmac_id`] with the HMAC key of `data_dir`, for the
/// `rampart audit hash VALUE` command. Fails if the key does not exist yet
/// (the server creates it on its first start); it never creates one.
pub fn hmac_id_with(data_dir: &Path, value: &str) -> Result<String, AuditError> {
    let path = data_dir.join(HMAC_KEY_FILE);
    let bytes = fs::read(&path).map_err(|e| AuditError::Key {
        path: path.clone(),
        reason: if e.kind() == io::ErrorKind::NotFound {
            "not found (the server creates it on its first start)".into()
        } else {
            e.to_string()
        },
    })?;
    Ok(hmac_id(&parse_hmac(&path, &Secret::new(bytes))?, value))
}

fn hmac_id(key: &hmac::Key, value: &str) -> String {
    let tag = hmac::sign(key, value.as_bytes());
    format!("hmac:{}", hex::encode(&tag.as_ref()[..16]))
}

fn load_or_create_signing(path: &Path) -> Result<Ed25519KeyPair, AuditError> {
    let err = |reason: String| AuditError::Key {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = match read_key_file(path)? {
        Some(bytes) => bytes,
        None => {
            let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                .map_err(|e| err(e.to_string()))?;
            create_key_file(path, &Secret::new(doc.as_ref().to_vec()))?
        }
    };
    Ed25519KeyPair::from_pkcs8(bytes.expose())
        .map_err(|e| err(format!("not an Ed25519 PKCS#8 key: {e}")))
}

fn load_or_create_hmac(path: &Path) -> Result<hmac::Key, AuditError> {
    let bytes = match read_key_file(path)? {
        Some(bytes) => bytes,
        None => {
            let raw = Secret::new(random_bytes::<32>().map_err(|e| AuditError::Key {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?);
            let mut text = Secret::new(B64.encode(raw.expose()).into_bytes());
            text.expose_mut().push(b'\n');
            create_key_file(path, &text)?
        }
    };
    parse_hmac(path, &bytes)
}

fn parse_hmac(path: &Path, text: &Secret<Vec<u8>>) -> Result<hmac::Key, AuditError> {
    let raw = Secret::new(
        B64.decode(text.expose().trim_ascii())
            .map_err(|_| AuditError::Key {
                path: path.to_path_buf(),
                reason: "not base64".into(),
            })?,
    );
    if raw.expose().len() != 32 {
        return Err(AuditError::Key {
            path: path.to_path_buf(),
            reason: format!("expected 32 bytes, found {}", raw.expose().len()),
        });
    }
    Ok(hmac::Key::new(hmac::HMAC_SHA256, raw.expose()))
}

/// The file's bytes, or `None` if it does not exist.
fn read_key_file(path: &Path) -> Result<Option<Secret<Vec<u8>>>, AuditError> {
    match fs::read(path) {
        Ok(bytes) => {
            warn_if_shared(path);
            Ok(Some(Secret::new(bytes)))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(AuditError::Key {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

/// Writes a new key file without ever replacing one: the bytes go to a
/// private temporary file, which is then hard-linked to `path` (failing if
/// `path` exists). If another process won the race, its key is used.
fn create_key_file(path: &Path, contents: &Secret<Vec<u8>>) -> Result<Secret<Vec<u8>>, AuditError> {
    let err = |e: io::Error| AuditError::Key {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let suffix = random_bytes::<8>().map_err(|e| AuditError::Key {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let tmp = path.with_extension(format!("tmp-{}", hex::encode(suffix)));
    let linked = fsutil::create_private_file(&tmp)
        .and_then(|mut f| {
            f.write_all(contents.expose())?;
            f.sync_all()
        })
        .and_then(|()| fs::hard_link(&tmp, path));
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            if let Some(dir) = path.parent() {
                crate::files::sync_dir(dir).map_err(err)?;
            }
            Ok(Secret::new(contents.expose().clone()))
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            read_key_file(path)?.ok_or_else(|| err(io::ErrorKind::NotFound.into()))
        }
        Err(e) => Err(err(e)),
    }
}

fn warn_if_shared(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    file = %path.display(),
                    "audit key file is readable by other users; it should be mode 0600"
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_persist_and_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let a = AuditKeys::load_or_create(&data).unwrap();
        let b = AuditKeys::load_or_create(&data).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        assert_eq!(a.public_key().len(), 32);
        assert_eq!(a.hmac_id("alice"), b.hmac_id("alice"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for f in [SIGNING_KEY_FILE, HMAC_KEY_FILE] {
                let mode = fs::metadata(data.join(f)).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{f}");
            }
            let mode = fs::metadata(&data).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(&data)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn hmac_id_is_stable_short_and_hides_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let keys = AuditKeys::load_or_create(dir.path()).unwrap();
        let id = keys.hmac_id("alice@example.com");
        assert!(id.starts_with("hmac:"));
        assert_eq!(id.len(), 5 + 32);
        assert!(id[5..].bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(!id.contains("alice"));
        assert_ne!(id, keys.hmac_id("bob@example.com"));
        assert_eq!(id, hmac_id_with(dir.path(), "alice@example.com").unwrap());
        // Another key gives another id.
        let other = AuditKeys::ephemeral().unwrap();
        assert_ne!(id, other.hmac_id("alice@example.com"));
    }

    #[test]
    fn hmac_id_with_never_creates_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let e = hmac_id_with(dir.path(), "x").unwrap_err();
        assert!(e.to_string().contains(HMAC_KEY_FILE), "{e}");
        assert!(!dir.path().join(HMAC_KEY_FILE).exists());
    }

    #[test]
    fn bad_key_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(HMAC_KEY_FILE), "c2hvcnQ=\n").unwrap();
        let e = AuditKeys::load_or_create(dir.path()).unwrap_err();
        assert!(e.to_string().contains("expected 32 bytes"), "{e}");
        fs::write(dir.path().join(SIGNING_KEY_FILE), "garbage").unwrap();
        let e = AuditKeys::load_or_create(dir.path()).unwrap_err();
        assert!(e.to_string().contains(SIGNING_KEY_FILE), "{e}");
    }

    #[test]
    fn debug_shows_no_secret() {
        let dir = tempfile::tempdir().unwrap();
        let keys = AuditKeys::load_or_create(dir.path()).unwrap();
        let hmac_b64 = fs::read_to_string(dir.path().join(HMAC_KEY_FILE)).unwrap();
        let dbg = format!("{keys:?}");
        assert!(dbg.contains("[redacted]"));
        assert!(!dbg.contains(hmac_b64.trim()));
        assert!(dbg.contains(&B64.encode(keys.public_key())));
    }
}
