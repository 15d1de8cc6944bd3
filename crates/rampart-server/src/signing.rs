//! The token signing key on disk, and its rotation while the server runs.
//!
//! `<data_dir>/token_signing.key` holds the Ed25519 key new tokens are
//! signed with, wrapped by the master key. A rotation makes a new one and
//! either refuses every token of the old key at once (the incident case:
//! the default) or keeps accepting them for a grace period, during which
//! `<data_dir>/token_signing.retired` names the old *public* key and the
//! end of the period. Tokens accepted that way expire with the period, so
//! connections they opened are asked to re-authenticate before it ends and
//! are closed at its end, as with any expiring credential.
//!
//! Write order, so a crash at any point leaves a state that starts: the
//! retired file first (naming a key still in force is harmless), then the
//! new wrapped key (one atomic rename). A crash between them leaves the old
//! key in force with a retired file naming itself; the next rotation
//! overwrites it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rampart_identity::{
    fsutil, signing_key_id, PrincipalKind, RetiredSigningKey, TokenKeys, TokenSigner,
};
use rampart_proto::ReauthReason;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::auth::now_ms;
use crate::control::ControlError;
use crate::Shared;

/// The wrapped signing key, in the data directory.
pub(crate) const KEY_FILE: &str = "token_signing.key";
/// Its associated data under the master key.
pub(crate) const KEY_AAD: &str = "rampart:token-signing-key";
/// The retired public key and the end of its grace period.
pub(crate) const RETIRED_FILE: &str = "token_signing.retired";

#[derive(Serialize, Deserialize)]
struct RetiredFile {
    public_key: String,
    until_ms: u64,
}

fn retired_path(data_dir: &Path) -> PathBuf {
    data_dir.join(RETIRED_FILE)
}

/// The retired key of `data_dir` whose grace period still runs, if any. A
/// file that does not parse is reported and ignored: the old key's tokens
/// are then refused, which is the safe side.
pub(crate) fn load_retired(data_dir: &Path, now_ms: u64) -> Option<RetiredSigningKey> {
    let path = retired_path(data_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "retired token key unreadable; its tokens are refused");
            return None;
        }
    };
    let parsed = serde_json::from_str::<RetiredFile>(&text)
        .ok()
        .and_then(|f| Some((B64.decode(f.public_key).ok()?, f.until_ms)))
        .filter(|(k, _)| k.len() == 32);
    match parsed {
        Some((public_key, until_ms)) if now_ms < until_ms => Some(RetiredSigningKey {
            public_key,
            until_ms,
        }),
        Some(_) => None,
        None => {
            warn!(path = %path.display(), "retired token key malformed; its tokens are refused");
            None
        }
    }
}

fn write_retired(data_dir: &Path, r: Option<&RetiredSigningKey>) -> std::io::Result<()> {
    let path = retired_path(data_dir);
    match r {
        Some(r) => {
            let text = serde_json::to_string(&RetiredFile {
                public_key: B64.encode(&r.public_key),
                until_ms: r.until_ms,
            })
            .map_err(std::io::Error::other)?;
            fsutil::write_private_file(&path, text.as_bytes())
        }
        None => match std::fs::remove_file(&path) {
            Ok(()) => fsutil::sync_dir(data_dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        },
    }
}

/// What a rotation did, for the API's answer and the audit record.
#[derive(Debug, Serialize)]
pub(crate) struct Rotated {
    pub key_id: String,
    pub previous_key_id: String,
    /// When tokens of the previous key stop being accepted (now, without a
    /// grace period).
    pub previous_accepted_until_ms: u64,
    pub connections_closed: usize,
}

impl Shared {
    /// Replaces the token signing key. With `grace` zero every token signed
    /// so far is refused from now on and the connections that logged in
    /// with one are closed; otherwise they keep working until the grace
    /// period ends (never beyond `token_max_ttl_secs`), then are closed.
    pub(crate) async fn rotate_token_signing(
        self: &Arc<Self>,
        grace: Duration,
    ) -> Result<Rotated, ControlError> {
        let keyring = self.sealer.keyring().clone();
        // One key change at a time, with every other key administration.
        let _held = keyring.hold_administration().await;
        let max = Duration::from_secs(self.config.token_max_ttl_secs);
        if grace > max {
            return Err(ControlError::Invalid(format!(
                "grace period longer than token_max_ttl_secs ({}s)",
                max.as_secs()
            )));
        }
        let storage = |what: &str, e: &dyn std::fmt::Display| {
            tracing::error!(error = %e, "token key rotation: {what}");
            ControlError::Storage
        };
        let pkcs8 = TokenSigner::generate_pkcs8().map_err(|e| storage("new key", &e))?;
        let signer = TokenSigner::from_pkcs8(pkcs8.expose()).map_err(|e| storage("new key", &e))?;
        let wrapped = keyring
            .master()
            .wrap(pkcs8.expose(), KEY_AAD.as_bytes())
            .await
            .map_err(|e| storage("wrapping the new key", &e))?;
        let old = self.identity.token_keys();
        let old_public = old.signer().public_key().to_vec();
        let now = now_ms();
        let until = now.saturating_add(u64::try_from(grace.as_millis()).unwrap_or(u64::MAX));
        let retired = (!grace.is_zero()).then(|| RetiredSigningKey {
            public_key: old_public.clone(),
            until_ms: until,
        });
        let dir = &self.config.data_dir;
        write_retired(dir, retired.as_ref()).map_err(|e| storage("retired key file", &e))?;
        fsutil::write_private_file(
            &dir.join(KEY_FILE),
            crate::master::encode(&wrapped).as_bytes(),
        )
        .map_err(|e| storage("key file", &e))?;
        let key_id = signing_key_id(signer.public_key());
        self.identity
            .set_token_keys(TokenKeys::new(signer, retired));
        let closed = if grace.is_zero() {
            // Every token connection: they all logged in with a token of
            // the old key (one that logs in with a new token in this
            // instant reconnects, which is the safe side).
            self.registry
                .close_where(ReauthReason::Revoked, |p| p.kind == PrincipalKind::Token)
        } else {
            // The tokens connections use now. At the end of the grace
            // period those still using one are closed; one that
            // re-authenticated with a new token has another id by then.
            // Connections that log in during the period get an expiry no
            // later than its end.
            let live: std::collections::HashSet<String> = self
                .registry
                .principals()
                .into_iter()
                .filter(|p| p.kind == PrincipalKind::Token)
                .filter_map(|p| p.credential_id)
                .collect();
            let shared = Arc::downgrade(self);
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                if let Some(s) = shared.upgrade() {
                    let n = s.registry.close_where(ReauthReason::Revoked, |p| {
                        p.kind == PrincipalKind::Token
                            && p.credential_id.as_ref().is_some_and(|c| live.contains(c))
                    });
                    info!(connections_closed = n, "token key grace period over");
                }
            });
            0
        };
        let previous_key_id = signing_key_id(&old_public);
        info!(
            key_id = %key_id,
            previous_key_id = %previous_key_id,
            grace_secs = grace.as_secs(),
            connections_closed = closed,
            "token signing key rotated"
        );
        Ok(Rotated {
            key_id,
            previous_key_id,
            previous_accepted_until_ms: if grace.is_zero() { now } else { until },
            connections_closed: closed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retired_file_round_trips_and_expires() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_retired(dir.path(), 0), None, "no file");
        let r = RetiredSigningKey {
            public_key: vec![7; 32],
            until_ms: 5_000,
        };
        write_retired(dir.path(), Some(&r)).unwrap();
        assert_eq!(load_retired(dir.path(), 4_999), Some(r));
        assert_eq!(load_retired(dir.path(), 5_000), None, "grace over");
        write_retired(dir.path(), None).unwrap();
        assert!(!dir.path().join(RETIRED_FILE).exists());
        write_retired(dir.path(), None).unwrap();
    }

    #[test]
    fn malformed_retired_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        for bad in [
            "not json",
            r#"{"public_key":"AAAA","until_ms":99999999999999}"#,
            r#"{"public_key":"!!","until_ms":99999999999999}"#,
        ] {
            std::fs::write(dir.path().join(RETIRED_FILE), bad).unwrap();
            assert_eq!(load_retired(dir.path(), 0), None, "{bad}");
        }
    }
}
