//! The default master key provider: versions of a 256-bit key kept in a
//! private file, or given in an environment variable.
//!
//! File format, one version a line, newest last (blank lines and lines
//! starting with `#` are ignored):
//!
//! ```text
//! v1:<base64 of 32 bytes>
//! v2:<base64 of 32 bytes>
//! ```
//!
//! The file must not be readable by group or others (mode 0600 or 0400).
//! [`MASTER_KEY_ENV`] holds either one bare base64 key (version 1) or the
//! same `v<N>:<base64>` entries separated by spaces or commas.
//!
//! Wrapped format: `rmk1 | version (u32, big-endian) | nonce (12) |
//! AES-256-GCM ciphertext | tag (16)`; the header is authenticated.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use tracing::info;

use rampart_identity::fsutil::{create_private_file, write_private_file};
use rampart_identity::Secret;

use crate::aead::{self, KeyBytes, KEY_LEN};
use crate::error::KeyError;
use crate::provider::{BoxFuture, MasterKeyProvider};

/// The environment variable [`LocalMasterKey::from_env`] reads.
pub const MASTER_KEY_ENV: &str = "RAMPART_MASTER_KEY";

const HEADER_MAGIC: &[u8; 4] = b"rmk1";
const HEADER_LEN: usize = 8;
/// Largest key file read; a real one is a few hundred bytes.
const MAX_FILE_BYTES: u64 = 64 * 1024;

#[derive(Debug, Clone)]
enum Origin {
    Env,
    File(PathBuf),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Env => f.write_str(MASTER_KEY_ENV),
            Origin::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Master key versions held in memory (zeroized on drop), from a file or
/// [`MASTER_KEY_ENV`].
pub struct LocalMasterKey {
    origin: Origin,
    versions: RwLock<BTreeMap<u32, KeyBytes>>,
    /// One rotation at a time within the process.
    rotating: Mutex<()>,
}

impl fmt::Debug for LocalMasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalMasterKey")
            .field("origin", &self.origin)
            .field("versions", &self.read().keys().collect::<Vec<_>>())
            .finish()
    }
}

// === parsing ===

fn malformed(origin: &Origin, reason: impl Into<String>) -> KeyError {
    KeyError::MasterKeyMalformed {
        origin: origin.to_string(),
        reason: reason.into(),
    }
}

/// Decodes one base64 key. Errors name the entry, never its text.
fn decode_key(origin: &Origin, entry: &str, b64: &str) -> Result<KeyBytes, KeyError> {
    let mut buf = Secret::new([0u8; 2 * KEY_LEN]);
    let n = STANDARD
        .decode_slice(b64.trim().as_bytes(), buf.expose_mut())
        .map_err(|e| match e {
            base64::DecodeSliceError::OutputSliceTooSmall => {
                malformed(origin, format!("{entry}: longer than {KEY_LEN} bytes"))
            }
            base64::DecodeSliceError::DecodeError(_) => {
                malformed(origin, format!("{entry}: not standard base64"))
            }
        })?;
    if n != KEY_LEN {
        return Err(malformed(
            origin,
            format!("{entry}: decodes to {n} bytes, expected {KEY_LEN}"),
        ));
    }
    let mut key = Secret::new([0u8; KEY_LEN]);
    key.expose_mut().copy_from_slice(&buf.expose()[..KEY_LEN]);
    Ok(key)
}

/// Parses `v<N>:<base64>` entries.
fn parse_entries<'a>(
    origin: &Origin,
    entries: impl Iterator<Item = &'a str>,
) -> Result<BTreeMap<u32, KeyBytes>, KeyError> {
    let mut out = BTreeMap::new();
    for (i, entry) in entries.enumerate() {
        let label = format!("entry {}", i + 1);
        let (version, b64) = entry
            .strip_prefix('v')
            .and_then(|rest| rest.split_once(':'))
            .ok_or_else(|| malformed(origin, format!("{label} is not v<version>:<base64>")))?;
        let version: u32 =
            version.parse().ok().filter(|&v| v > 0).ok_or_else(|| {
                malformed(origin, format!("{label}: version is not a number from 1"))
            })?;
        let key = decode_key(origin, &format!("{label} (v{version})"), b64)?;
        if out.insert(version, key).is_some() {
            return Err(malformed(
                origin,
                format!("version {version} appears twice"),
            ));
        }
    }
    if out.is_empty() {
        return Err(malformed(origin, "holds no key"));
    }
    Ok(out)
}

fn parse_file_text(origin: &Origin, text: &str) -> Result<BTreeMap<u32, KeyBytes>, KeyError> {
    parse_entries(
        origin,
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#')),
    )
}

fn parse_env_text(text: &str) -> Result<BTreeMap<u32, KeyBytes>, KeyError> {
    let origin = Origin::Env;
    let text = text.trim();
    if text.is_empty() {
        return Err(KeyError::MasterKeyMissing {
            origin: format!("{MASTER_KEY_ENV} is empty"),
        });
    }
    if !text.contains(':') {
        let key = decode_key(&origin, "the value", text)?;
        return Ok(BTreeMap::from([(1, key)]));
    }
    parse_entries(
        &origin,
        text.split(|c: char| c.is_ascii_whitespace() || c == ',')
            .filter(|e| !e.is_empty()),
    )
}

/// The file text for `versions`, in an exactly sized buffer.
fn file_text(versions: &BTreeMap<u32, KeyBytes>) -> Secret<Vec<u8>> {
    let b64_len = base64::encoded_len(KEY_LEN, true).unwrap_or(44);
    let mut out = Secret::new(Vec::with_capacity(versions.len() * (b64_len + 16)));
    for (v, key) in versions {
        let buf = out.expose_mut();
        buf.extend_from_slice(format!("v{v}:").as_bytes());
        let start = buf.len();
        buf.resize(start + b64_len, 0);
        // Cannot fail: the slice is exactly the encoded length.
        let n = STANDARD
            .encode_slice(key.expose(), &mut buf[start..])
            .unwrap_or(0);
        buf.truncate(start + n);
        buf.push(b'\n');
    }
    out
}

fn io_err(what: impl fmt::Display, e: std::io::Error) -> KeyError {
    KeyError::Io {
        what: what.to_string(),
        reason: e.to_string(),
    }
}

/// Makes a rename in `path`'s folder durable.
fn sync_parent(path: &Path) -> Result<(), KeyError> {
    #[cfg(unix)]
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err(format!("syncing {}", dir.display()), e))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn read_key_file(path: &Path) -> Result<Secret<Vec<u8>>, KeyError> {
    let origin = Origin::File(path.to_owned());
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(KeyError::MasterKeyMissing {
                origin: format!("{} does not exist", path.display()),
            })
        }
        Err(e) => return Err(io_err(format!("opening {}", path.display()), e)),
    };
    let meta = file
        .metadata()
        .map_err(|e| io_err(format!("reading {}", path.display()), e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(malformed(
                &origin,
                format!("mode {mode:o} lets other users read it; make it 0600"),
            ));
        }
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(malformed(&origin, "larger than 64 KiB"));
    }
    // Sized up front so the buffer is never reallocated (which would leave
    // an unzeroized copy behind).
    let mut buf = Secret::new(Vec::with_capacity(
        usize::try_from(MAX_FILE_BYTES).unwrap_or(65536) + 1,
    ));
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(buf.expose_mut())
        .map_err(|e| io_err(format!("reading {}", path.display()), e))?;
    Ok(buf)
}

fn parse_file(path: &Path) -> Result<BTreeMap<u32, KeyBytes>, KeyError> {
    let origin = Origin::File(path.to_owned());
    let bytes = read_key_file(path)?;
    let text =
        std::str::from_utf8(bytes.expose()).map_err(|_| malformed(&origin, "not UTF-8 text"))?;
    parse_file_text(&origin, text)
}

// === impl LocalMasterKey ===

impl LocalMasterKey {
    /// Reads [`MASTER_KEY_ENV`]. Rotation is refused for a key from the
    /// environment: the new version would be lost at the next start.
    pub fn from_env() -> Result<Self, KeyError> {
        let value = std::env::var_os(MASTER_KEY_ENV).ok_or_else(|| KeyError::MasterKeyMissing {
            origin: format!("{MASTER_KEY_ENV} is not set"),
        })?;
        let value = Secret::new(
            value
                .into_string()
                .map_err(|_| malformed(&Origin::Env, "not UTF-8 text"))?,
        );
        Ok(Self::new(Origin::Env, parse_env_text(value.expose())?))
    }

    /// Reads a key file, which must exist, be private and hold at least one
    /// version.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        Ok(Self::new(Origin::File(path.to_owned()), parse_file(path)?))
    }

    /// Creates a new key file (mode 0600) holding one fresh version; fails
    /// if the file exists.
    pub fn create(path: &Path) -> Result<Self, KeyError> {
        let versions = BTreeMap::from([(1, aead::random_key()?)]);
        let text = file_text(&versions);
        let mut file = create_private_file(path)
            .map_err(|e| io_err(format!("creating {}", path.display()), e))?;
        file.write_all(text.expose())
            .and_then(|()| file.sync_all())
            .map_err(|e| io_err(format!("writing {}", path.display()), e))?;
        sync_parent(path)?;
        info!(path = %path.display(), "created a new master key file");
        Ok(Self::new(Origin::File(path.to_owned()), versions))
    }

    /// For development: [`load`](Self::load)s the file, or
    /// [`create`](Self::create)s it when it does not exist. The flag tells
    /// whether it was created.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), KeyError> {
        match Self::load(path) {
            Ok(key) => Ok((key, false)),
            Err(KeyError::MasterKeyMissing { .. }) => Ok((Self::create(path)?, true)),
            Err(e) => Err(e),
        }
    }

    /// A fresh random key in the form [`MASTER_KEY_ENV`] takes (base64 of 32
    /// bytes), for an operator to store in a secret manager.
    pub fn generate_env_value() -> Result<Secret<String>, KeyError> {
        let key = aead::random_key()?;
        Ok(Secret::new(STANDARD.encode(key.expose())))
    }

    fn new(origin: Origin, versions: BTreeMap<u32, KeyBytes>) -> Self {
        Self {
            origin,
            versions: RwLock::new(versions),
            rotating: Mutex::new(()),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<u32, KeyBytes>> {
        self.versions.read().unwrap_or_else(|p| p.into_inner())
    }

    fn newest(&self) -> u32 {
        self.read().keys().next_back().copied().unwrap_or(0)
    }

    fn wrap_now(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, KeyError> {
        let versions = self.read();
        let (version, key) = versions
            .iter()
            .next_back()
            .ok_or_else(|| malformed(&self.origin, "holds no key"))?;
        let mut header = [0u8; HEADER_LEN];
        header[..4].copy_from_slice(HEADER_MAGIC);
        header[4..].copy_from_slice(&version.to_be_bytes());
        aead::seal(key, &header, aad, plaintext)
    }

    fn unwrap_now(&self, wrapped: &[u8], aad: &[u8]) -> Result<Secret<Vec<u8>>, KeyError> {
        let version = self.version_of(wrapped)?;
        let versions = self.read();
        let key = versions
            .get(&version)
            .ok_or(KeyError::UnknownMasterVersion(version))?;
        aead::open(key, HEADER_LEN, aad, wrapped)
    }

    fn rotate_now(&self) -> Result<(), KeyError> {
        let Origin::File(path) = &self.origin else {
            return Err(KeyError::RotationUnsupported {
                provider: self.describe(),
                reason: format!(
                    "a key from {MASTER_KEY_ENV} cannot gain a version in place; \
                     use a key file, or list every version in the variable"
                ),
            });
        };
        let _one = self.rotating.lock().unwrap_or_else(|p| p.into_inner());
        // Another process may have changed the file since it was loaded;
        // writing our view over it could drop a version that data needs.
        let on_disk = parse_file(path)?;
        let mut versions = self
            .read()
            .iter()
            .map(|(v, k)| (*v, k.clone()))
            .collect::<BTreeMap<_, _>>();
        if on_disk.keys().ne(versions.keys())
            || on_disk.iter().any(|(v, k)| versions.get(v) != Some(k))
        {
            return Err(KeyError::Corrupt {
                key: path.display().to_string(),
                reason: "the key file changed since it was loaded; restart before rotating".into(),
            });
        }
        let next = versions
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0)
            .checked_add(1)
            .ok_or_else(|| malformed(&self.origin, "no version number left"))?;
        versions.insert(next, aead::random_key()?);
        let text = file_text(&versions);
        // Written to a temporary file, synced, renamed over the old one: a
        // crash leaves either the old file or the new, never half of one.
        write_private_file(path, text.expose())
            .map_err(|e| io_err(format!("writing {}", path.display()), e))?;
        sync_parent(path)?;
        *self.versions.write().unwrap_or_else(|p| p.into_inner()) = versions;
        info!(path = %path.display(), version = next, "master key rotated");
        Ok(())
    }
}

impl MasterKeyProvider for LocalMasterKey {
    fn describe(&self) -> String {
        let kind = match self.origin {
            Origin::Env => "local key from",
            Origin::File(_) => "local key file",
        };
        format!("{kind} {} (newest v{})", self.origin, self.newest())
    }

    fn wrap<'a>(
        &'a self,
        plaintext: &'a [u8],
        aad: &'a [u8],
    ) -> BoxFuture<'a, Result<Vec<u8>, KeyError>> {
        Box::pin(std::future::ready(self.wrap_now(plaintext, aad)))
    }

    fn unwrap<'a>(
        &'a self,
        wrapped: &'a [u8],
        aad: &'a [u8],
    ) -> BoxFuture<'a, Result<Secret<Vec<u8>>, KeyError>> {
        Box::pin(std::future::ready(self.unwrap_now(wrapped, aad)))
    }

    /// Appends a version to the key file. The file write is small and
    /// synchronous (a rare administrative step).
    fn rotate(&self) -> BoxFuture<'_, Result<(), KeyError>> {
        Box::pin(std::future::ready(self.rotate_now()))
    }

    fn rewrap<'a>(
        &'a self,
        wrapped: &'a [u8],
        aad: &'a [u8],
    ) -> BoxFuture<'a, Result<Vec<u8>, KeyError>> {
        let result = self
            .unwrap_now(wrapped, aad)
            .and_then(|plain| self.wrap_now(plain.expose(), aad));
        Box::pin(std::future::ready(result))
    }

    fn current_version(&self) -> BoxFuture<'_, Result<u32, KeyError>> {
        Box::pin(std::future::ready(Ok(self.newest())))
    }

    fn version_of(&self, wrapped: &[u8]) -> Result<u32, KeyError> {
        match wrapped.get(..HEADER_LEN) {
            Some(h) if &h[..4] == HEADER_MAGIC => Ok(u32::from_be_bytes([h[4], h[5], h[6], h[7]])),
            _ => Err(KeyError::Tampered),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_line(v: u32, byte: u8) -> String {
        format!("v{v}:{}\n", STANDARD.encode([byte; 32]))
    }

    fn write_mode(path: &Path, text: &str, mode: u32) {
        std::fs::write(path, text).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        #[cfg(not(unix))]
        let _ = mode;
    }

    fn reason(e: KeyError) -> String {
        match e {
            KeyError::MasterKeyMalformed { reason, .. } => reason,
            other => panic!("expected MasterKeyMalformed, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn wrap_unwrap_versions_and_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let k = LocalMasterKey::create(&path).unwrap();
        assert!(LocalMasterKey::create(&path).is_err(), "never overwrites");
        let w1 = k.wrap(b"kek", b"aad").await.unwrap();
        assert_eq!(k.version_of(&w1).unwrap(), 1);
        assert_eq!(k.unwrap(&w1, b"aad").await.unwrap().expose(), b"kek");
        assert!(matches!(
            k.unwrap(&w1, b"other").await,
            Err(KeyError::Tampered)
        ));

        k.rotate().await.unwrap();
        assert_eq!(k.current_version().await.unwrap(), 2);
        let w2 = k.rewrap(&w1, b"aad").await.unwrap();
        assert_eq!(k.version_of(&w2).unwrap(), 2);
        assert_eq!(k.unwrap(&w2, b"aad").await.unwrap().expose(), b"kek");
        assert!(k.describe().contains("newest v2"));

        // The file now holds both versions, newest last, and stays private.
        let reloaded = LocalMasterKey::load(&path).unwrap();
        assert_eq!(reloaded.unwrap(&w1, b"aad").await.unwrap().expose(), b"kek");
        assert_eq!(reloaded.unwrap(&w2, b"aad").await.unwrap().expose(), b"kek");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("v1:") && text.contains("\nv2:"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }

        // Another key of the same version does not open it; a missing
        // version is named.
        write_mode(&path, &key_line(1, 9), 0o600);
        let other = LocalMasterKey::load(&path).unwrap();
        assert!(matches!(
            other.unwrap(&w1, b"aad").await,
            Err(KeyError::Tampered)
        ));
        assert!(matches!(
            other.unwrap(&w2, b"aad").await,
            Err(KeyError::UnknownMasterVersion(2))
        ));
        assert!(matches!(
            other.unwrap(b"junk", b"aad").await,
            Err(KeyError::Tampered)
        ));
    }

    #[test]
    fn malformed_files_are_refused_without_quoting_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let secret = STANDARD.encode([7u8; 31]);
        let cases = [
            (format!("v1:{secret}\n"), "decodes to 31 bytes"),
            ("v1:not base64!\n".to_string(), "not standard base64"),
            (format!("x1:{secret}\n"), "is not v<version>:<base64>"),
            (
                format!("v0:{}", STANDARD.encode([1u8; 32])),
                "version is not",
            ),
            (
                format!("{}{}", key_line(1, 1), key_line(1, 2)),
                "appears twice",
            ),
            (
                format!("v1:{}", STANDARD.encode([1u8; 100])),
                "longer than 32",
            ),
            ("# only a comment\n\n".to_string(), "holds no key"),
        ];
        for (text, want) in cases {
            write_mode(&path, &text, 0o600);
            let why = reason(LocalMasterKey::load(&path).unwrap_err());
            assert!(why.contains(want), "{why:?} should contain {want:?}");
            assert!(!why.contains(&secret));
        }
        write_mode(
            &path,
            &format!("# comment\n{}\n{}", key_line(2, 2), key_line(1, 1)),
            0o600,
        );
        let k = LocalMasterKey::load(&path).unwrap();
        assert_eq!(k.newest(), 2);
        #[cfg(unix)]
        {
            write_mode(&path, &key_line(1, 1), 0o644);
            assert!(reason(LocalMasterKey::load(&path).unwrap_err()).contains("mode 644"));
        }
        assert!(matches!(
            LocalMasterKey::load(&dir.path().join("absent")),
            Err(KeyError::MasterKeyMissing { .. })
        ));
    }

    #[tokio::test]
    async fn environment_values() {
        let bare = STANDARD.encode([3u8; 32]);
        let one = parse_env_text(&format!(" {bare}\n")).unwrap();
        assert_eq!(one.keys().copied().collect::<Vec<_>>(), vec![1]);
        let two = parse_env_text(&format!(
            "{},{}",
            key_line(1, 1).trim(),
            key_line(2, 2).trim()
        ))
        .unwrap();
        assert_eq!(two.keys().copied().collect::<Vec<_>>(), vec![1, 2]);
        assert!(matches!(
            parse_env_text("  "),
            Err(KeyError::MasterKeyMissing { .. })
        ));
        assert!(parse_env_text("dG9vIHNob3J0").is_err());

        let k = LocalMasterKey::new(Origin::Env, one);
        assert!(matches!(
            k.rotate().await,
            Err(KeyError::RotationUnsupported { .. })
        ));
        assert_eq!(
            format!("{k:?}"),
            "LocalMasterKey { origin: Env, versions: [1] }"
        );
        assert_eq!(
            STANDARD
                .decode(LocalMasterKey::generate_env_value().unwrap().expose())
                .unwrap()
                .len(),
            32
        );
    }

    #[tokio::test]
    async fn load_or_create_and_a_changed_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let (k, created) = LocalMasterKey::load_or_create(&path).unwrap();
        assert!(created);
        let (_, created) = LocalMasterKey::load_or_create(&path).unwrap();
        assert!(!created);
        write_mode(&path, &key_line(1, 5), 0o600);
        assert!(matches!(k.rotate().await, Err(KeyError::Corrupt { .. })));
    }
}
