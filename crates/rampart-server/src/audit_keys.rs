//! The audit log's keys on disk, and their rotation while the server runs.
//!
//! `<data_dir>/audit_signing.key` (the Ed25519 key that signs checkpoints)
//! and `<data_dir>/audit_hmac.key` (the key pseudonyms are HMAC'ed under)
//! are wrapped by the master key. A rotation makes both anew:
//!
//! 1. the new keys are written wrapped beside the old, as
//!    `audit_hmac.key.next`, then `audit_signing.key.next`;
//! 2. the audit writer appends and fsyncs the rotation record (a checkpoint
//!    signed with the new key, endorsed by the old one): from here on the
//!    log goes on only with the new key;
//! 3. the old HMAC key is kept as `audit_hmac.<key id>.key` (so pseudonyms
//!    in older records can still be searched), `audit_hmac.key.next`
//!    replaces `audit_hmac.key`, and last `audit_signing.key.next` replaces
//!    `audit_signing.key`.
//!
//! A crash anywhere leaves `.next` files that the next start settles: if
//! the log holds the rotation (its newest checkpoint is signed with the
//! next key) the steps left are finished; if it does not, they are
//! removed and the old keys stay.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rampart_audit::AuditKeys;
use rampart_identity::{fsutil, Secret};
use rampart_keys::MasterKeyProvider;
use serde::Serialize;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::control::ControlError;
use crate::{master, Shared, StartError};

pub(crate) const SIGNING_FILE: &str = "audit_signing.key";
pub(crate) const SIGNING_AAD: &str = "rampart:audit-signing-key";
pub(crate) const HMAC_FILE: &str = "audit_hmac.key";
pub(crate) const HMAC_AAD: &str = "rampart:audit-hmac-key";

fn next(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".next");
    PathBuf::from(name)
}

/// Where a retired HMAC key is kept, by its id.
fn retired_hmac(data_dir: &Path, key_id: &str) -> PathBuf {
    data_dir.join(format!("audit_hmac.{key_id}.key"))
}

/// The retired HMAC key files of `data_dir` (for the master key rotation
/// and for `rampart audit hash`).
pub(crate) fn retired_hmac_files(data_dir: &Path) -> Vec<PathBuf> {
    let Ok(dir) = std::fs::read_dir(data_dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = dir
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("audit_hmac."))
                .and_then(|n| n.strip_suffix(".key"))
                .is_some_and(|id| id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        })
        .collect();
    out.sort();
    out
}

/// A wrapped key file that must exist (it is never created here).
pub(crate) async fn read_wrapped(
    master: &dyn MasterKeyProvider,
    path: &Path,
    aad: &str,
) -> Result<Secret<Vec<u8>>, StartError> {
    master::wrapped_secret(master, path, aad, || {
        Err(format!("{} is missing", path.display()))
    })
    .await
}

/// Steps 3 of a rotation whose record is in the log: keep the old HMAC key
/// under its id, then put the next files in place.
fn finish(data_dir: &Path, old_hmac_id: &str) -> std::io::Result<()> {
    let hmac = data_dir.join(HMAC_FILE);
    let hmac_next = next(&hmac);
    if hmac_next.exists() {
        let retired = retired_hmac(data_dir, old_hmac_id);
        if !retired.exists() {
            fsutil::write_private_file(&retired, &std::fs::read(&hmac)?)?;
        }
        std::fs::rename(&hmac_next, &hmac)?;
    }
    let signing = data_dir.join(SIGNING_FILE);
    let signing_next = next(&signing);
    if signing_next.exists() {
        std::fs::rename(&signing_next, &signing)?;
    }
    fsutil::sync_dir(data_dir)
}

fn discard(data_dir: &Path) -> std::io::Result<()> {
    for f in [SIGNING_FILE, HMAC_FILE] {
        match std::fs::remove_file(next(&data_dir.join(f))) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    fsutil::sync_dir(data_dir)
}

/// At start, with the keys in place (`signing`, `hmac`): settles a rotation
/// a crash interrupted, and returns the keys the audit log goes on with.
pub(crate) async fn settle(
    master: &dyn MasterKeyProvider,
    config: &Config,
    signing: Secret<Vec<u8>>,
    hmac: Secret<Vec<u8>>,
) -> Result<(Secret<Vec<u8>>, Secret<Vec<u8>>), StartError> {
    let d = &config.data_dir;
    let io = |e: std::io::Error| StartError::Audit(format!("settling an audit key rotation: {e}"));
    let signing_next = next(&d.join(SIGNING_FILE));
    if !signing_next.exists() {
        // At most a next HMAC key written before the rotation was asked.
        discard(d).map_err(io)?;
        return Ok((signing, hmac));
    }
    let new_signing = read_wrapped(master, &signing_next, SIGNING_AAD).await?;
    let hmac_next = next(&d.join(HMAC_FILE));
    let new_hmac = if hmac_next.exists() {
        read_wrapped(master, &hmac_next, HMAC_AAD).await?
    } else {
        // Step 3 had begun: the HMAC key in place is already the new one.
        Secret::new(hmac.expose().clone())
    };
    let keys = |s: &Secret<Vec<u8>>, h: &Secret<Vec<u8>>| {
        AuditKeys::from_bytes(s.expose(), h.expose()).map_err(|e| StartError::Audit(e.to_string()))
    };
    let (old, new) = (keys(&signing, &hmac)?, keys(&new_signing, &new_hmac)?);
    let in_force = rampart_audit::key_in_force(&config.audit().dir, &[&old, &new])
        .map_err(|e| StartError::Audit(e.to_string()))?;
    if in_force == Some(1) {
        finish(d, &old.hmac_key_id()).map_err(io)?;
        info!("finished an audit key rotation that a stop interrupted");
        Ok((new_signing, new_hmac))
    } else {
        discard(d).map_err(io)?;
        warn!("discarded an audit key rotation that a stop interrupted before it was logged");
        Ok((signing, hmac))
    }
}

/// What a rotation did, for the API's answer and the audit record.
#[derive(Debug, Serialize)]
pub(crate) struct Rotated {
    pub public_key: String,
    pub previous_public_key: String,
    pub hmac_key_id: String,
    pub previous_hmac_key_id: String,
}

impl Shared {
    /// Replaces the audit signing and HMAC keys while serving (see the
    /// module docs for the steps and what a crash leaves).
    pub(crate) async fn rotate_audit_keys(self: &Arc<Self>) -> Result<Rotated, ControlError> {
        if !self.audit.is_enabled() {
            return Err(ControlError::Invalid("the audit log is disabled".into()));
        }
        let keyring = self.sealer.keyring().clone();
        let _held = keyring.hold_administration().await;
        let d = &self.config.data_dir;
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            error!(error = %e, "audit key rotation: {what}");
            ControlError::Storage
        };
        let signing = crate::ed25519().map_err(|e| failed("new signing key", &e))?;
        let hmac = crate::random32().map_err(|e| failed("new HMAC key", &e))?;
        let keys = AuditKeys::from_bytes(signing.expose(), hmac.expose())
            .map_err(|e| failed("new keys", &e))?;
        let master = keyring.master();
        // The HMAC key first: a next signing key alone means "step 3 began".
        for (file, aad, secret) in [
            (HMAC_FILE, HMAC_AAD, &hmac),
            (SIGNING_FILE, SIGNING_AAD, &signing),
        ] {
            let wrapped = master
                .wrap(secret.expose(), aad.as_bytes())
                .await
                .map_err(|e| failed("wrapping a new key", &e))?;
            fsutil::write_private_file(&next(&d.join(file)), master::encode(&wrapped).as_bytes())
                .map_err(|e| failed("writing a new key", &e))?;
        }
        let rotated = Rotated {
            public_key: B64.encode(keys.public_key()),
            previous_public_key: B64.encode(self.audit.public_key()),
            hmac_key_id: keys.hmac_key_id(),
            previous_hmac_key_id: self.audit.hmac_key_id(),
        };
        if let Err(e) = self.audit.rotate_keys(keys).await {
            // The old keys are still in force; the next files must go.
            if let Err(d_err) = discard(d) {
                error!(error = %d_err, "audit key rotation: removing the unused new keys");
            }
            return Err(failed("the audit log did not take the rotation", &e));
        }
        finish(d, &rotated.previous_hmac_key_id).map_err(|e| {
            failed(
                "putting the new key files in place (the next start finishes it)",
                &e,
            )
        })?;
        info!(
            hmac_key_id = %rotated.hmac_key_id,
            previous_hmac_key_id = %rotated.previous_hmac_key_id,
            "audit keys rotated"
        );
        Ok(rotated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retired_hmac_files_are_found_by_name() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "audit_hmac.key",
            "audit_hmac.key.next",
            "audit_hmac.0123456789abcdef.key",
            "audit_hmac.xyz.key",
            "audit_signing.key",
        ] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let found = retired_hmac_files(dir.path());
        assert_eq!(
            found,
            vec![dir.path().join("audit_hmac.0123456789abcdef.key")]
        );
        assert_eq!(
            next(&dir.path().join(SIGNING_FILE)),
            dir.path().join("audit_signing.key.next")
        );
    }
}
