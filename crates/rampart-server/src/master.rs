//! The master key at start: which provider, the check that it is the key
//! the data was written with (made before anything under the data
//! directory is opened, so a wrong key changes nothing), and the server's
//! own secrets (API-key pepper, token and audit signing keys) kept on disk
//! only wrapped by it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use rampart_identity::{fsutil, Secret};
use rampart_keys::{LocalMasterKey, MasterKeyProvider};

use crate::config::Config;
use crate::StartError;

/// File holding a value wrapped at first start; it must unwrap at every
/// later start.
const CHECK_FILE: &str = "master.check";
const CHECK_AAD: &[u8] = b"rampart:master-check:v1";
const CHECK_PLAINTEXT: &[u8] = b"rampart master key check v1";
/// Prefix of a wrapped secret file.
const WRAPPED_PREFIX: &str = "rampart-wrapped:v1:";

fn err(e: impl std::fmt::Display) -> StartError {
    StartError::MasterKey(e.to_string())
}

/// Where the master key of this configuration lives.
pub(crate) fn master_key_path(config: &Config, dev: bool) -> Option<PathBuf> {
    config
        .master_key_path
        .clone()
        .or_else(|| dev.then(|| config.data_dir.join("master.key")))
}

/// Opens the master key provider of `config`. `--dev` creates
/// `<data_dir>/master.key` when it is missing; otherwise a missing key is an
/// error naming where it was looked for.
pub(crate) fn open(config: &Config, dev: bool) -> Result<Arc<dyn MasterKeyProvider>, StartError> {
    if config.master_key_provider == crate::config::MasterKeyKind::VaultTransit {
        return open_transit(config);
    }
    if std::env::var_os(rampart_keys::MASTER_KEY_ENV).is_some() {
        return Ok(Arc::new(LocalMasterKey::from_env().map_err(err)?));
    }
    match master_key_path(config, dev) {
        Some(p) if dev && config.master_key_path.is_none() => {
            fsutil::create_private_dir(&config.data_dir).map_err(err)?;
            Ok(Arc::new(LocalMasterKey::load_or_create(&p).map_err(err)?.0))
        }
        Some(p) => Ok(Arc::new(LocalMasterKey::load(&p).map_err(err)?)),
        None => Err(StartError::MasterKey(format!(
            "no master key: set master_key_path (RAMPART_MASTER_KEY_PATH) or {}, or run with --dev",
            rampart_keys::MASTER_KEY_ENV
        ))),
    }
}

/// The transit provider. Its token comes from the environment or a private
/// file, never from the configuration file.
fn open_transit(config: &Config) -> Result<Arc<dyn MasterKeyProvider>, StartError> {
    let address = config
        .vault_transit_address
        .clone()
        .ok_or_else(|| StartError::MasterKey("vault_transit_address is not set".into()))?;
    let token = match (
        std::env::var("RAMPART_VAULT_TRANSIT_TOKEN")
            .ok()
            .filter(|t| !t.is_empty()),
        &config.vault_transit_token_path,
    ) {
        (Some(t), _) => Secret::new(t),
        (None, Some(p)) => Secret::new(
            std::fs::read_to_string(p)
                .map_err(|e| StartError::MasterKey(format!("{}: {e}", p.display())))?
                .trim()
                .to_string(),
        ),
        (None, None) => {
            return Err(StartError::MasterKey(
                "no transit token: set RAMPART_VAULT_TRANSIT_TOKEN or vault_transit_token_path"
                    .into(),
            ))
        }
    };
    let mut t = rampart_keys::TransitConfig::new(address, token, config.vault_transit_key.clone());
    t.mount = config.vault_transit_mount.clone();
    t.ca_file = config.vault_transit_ca_cert_path.clone();
    Ok(Arc::new(rampart_keys::VaultTransit::new(t).map_err(err)?))
}

/// Checks that `master` is the key this data directory was written with,
/// touching nothing when it is not. A directory without a check file gets
/// one (first start).
pub(crate) async fn verify(
    master: &dyn MasterKeyProvider,
    data_dir: &Path,
) -> Result<(), StartError> {
    let path = data_dir.join(CHECK_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let wrapped = decode(&text).ok_or_else(|| {
                StartError::MasterKey(format!("{} is not a wrapped value", path.display()))
            })?;
            let plain = master
                .unwrap(&wrapped, CHECK_AAD)
                .await
                .map_err(|e| match e {
                    rampart_keys::KeyError::Tampered
                    | rampart_keys::KeyError::UnknownMasterVersion(_) => StartError::MasterKey(format!(
                        "the master key ({}) is not the one the data in {} was written with; nothing was changed",
                        master.describe(),
                        data_dir.display()
                    )),
                    other => err(other),
                })?;
            if plain.expose().as_slice() != CHECK_PLAINTEXT {
                return Err(StartError::MasterKey(format!(
                    "{} does not hold Rampart's check value",
                    path.display()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if data_dir.join("state.redb").exists() {
                return Err(StartError::MasterKey(format!(
                    "{} holds data but no {CHECK_FILE}: cannot tell whether this master key wrote it",
                    data_dir.display()
                )));
            }
            fsutil::create_private_dir(data_dir).map_err(err)?;
            let wrapped = master.wrap(CHECK_PLAINTEXT, CHECK_AAD).await.map_err(err)?;
            fsutil::write_private_file(&path, encode(&wrapped).as_bytes()).map_err(err)?;
            Ok(())
        }
        Err(e) => Err(StartError::MasterKey(format!("{}: {e}", path.display()))),
    }
}

pub(crate) fn encode(wrapped: &[u8]) -> String {
    format!(
        "{WRAPPED_PREFIX}{}\n",
        base64::engine::general_purpose::STANDARD.encode(wrapped)
    )
}

fn decode(text: &str) -> Option<Vec<u8>> {
    let b64 = text.trim().strip_prefix(WRAPPED_PREFIX)?;
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

/// Reads a secret kept wrapped by the master key at `path`, or makes one
/// with `make`, wraps it and writes it (0600). `aad` names the secret, so
/// one secret's file cannot stand in for another's.
pub(crate) async fn wrapped_secret(
    master: &dyn MasterKeyProvider,
    path: &Path,
    aad: &str,
    make: impl FnOnce() -> Result<Secret<Vec<u8>>, String>,
) -> Result<Secret<Vec<u8>>, StartError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let wrapped = decode(&text).ok_or_else(|| {
                StartError::MasterKey(format!(
                    "{} is not wrapped by the master key (plaintext key files are refused)",
                    path.display()
                ))
            })?;
            master
                .unwrap(&wrapped, aad.as_bytes())
                .await
                .map_err(|e| StartError::MasterKey(format!("{}: {e}", path.display())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = make().map_err(StartError::MasterKey)?;
            let wrapped = master
                .wrap(secret.expose(), aad.as_bytes())
                .await
                .map_err(err)?;
            if let Some(dir) = path.parent() {
                fsutil::create_private_dir(dir).map_err(err)?;
            }
            fsutil::write_private_file(path, encode(&wrapped).as_bytes()).map_err(err)?;
            Ok(secret)
        }
        Err(e) => Err(StartError::MasterKey(format!("{}: {e}", path.display()))),
    }
}

/// Files the server keeps wrapped by the master key, with their AAD.
fn wrapped_files(config: &Config) -> Vec<(PathBuf, &'static str)> {
    let d = &config.data_dir;
    vec![
        (d.join(CHECK_FILE), "rampart:master-check:v1"),
        (config.pepper_path(), "rampart:api-key-pepper"),
        (d.join(crate::signing::KEY_FILE), crate::signing::KEY_AAD),
        (
            d.join(crate::audit_keys::SIGNING_FILE),
            crate::audit_keys::SIGNING_AAD,
        ),
        (
            d.join(crate::audit_keys::HMAC_FILE),
            crate::audit_keys::HMAC_AAD,
        ),
    ]
    .into_iter()
    .chain(
        crate::audit_keys::retired_hmac_files(d)
            .into_iter()
            .map(|p| (p, crate::audit_keys::HMAC_AAD)),
    )
    .collect()
}

/// Rotates the master key of a stopped server's data directory: a new
/// master version, then every tenant key and every wrapped server secret
/// re-wrapped under it, each written atomically. Safe to re-run after an
/// interruption (kill -9 included): what is already under the newest
/// version is left alone. Returns a report for the operator.
pub async fn rotate_master(config: &Config, dev: bool) -> Result<String, StartError> {
    let master = open(config, dev)?;
    verify(master.as_ref(), &config.data_dir).await?;
    let kv: Arc<dyn rampart_store::KvStore> = Arc::new(
        rampart_store::RedbStore::open(&config.data_dir.join("state.redb"))
            .map_err(|e| StartError::Storage(format!("{e} (is the server still running?)")))?,
    );
    let keyring = rampart_keys::Keyring::open(kv, master.clone())
        .await
        .map_err(err)?;
    let report = keyring.rotate_master().await.map_err(err)?;
    let current = master.current_version().await.map_err(err)?;
    let mut files = 0;
    for (path, aad) in wrapped_files(config) {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let wrapped = decode(&text)
            .ok_or_else(|| StartError::MasterKey(format!("{} is not wrapped", path.display())))?;
        if master.version_of(&wrapped).map_err(err)? < current {
            let new = master
                .rewrap(&wrapped, aad.as_bytes())
                .await
                .map_err(|e| StartError::MasterKey(format!("{}: {e}", path.display())))?;
            fsutil::write_private_file(&path, encode(&new).as_bytes()).map_err(err)?;
            files += 1;
        }
    }
    Ok(format!(
        "master key v{} -> v{}{}: {} tenant key(s) re-wrapped ({} already current), {} server secret file(s) re-wrapped",
        report.from_version,
        report.to_version,
        if report.resumed { " (finished an interrupted rotation)" } else { "" },
        report.rewrapped,
        report.already_current,
        files
    ))
}
