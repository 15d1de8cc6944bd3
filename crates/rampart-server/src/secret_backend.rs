//! Where the secrets API keeps secrets: this server's sealed store
//! (`rampart_vault::Vault`) or a KV v2 mount of an external Vault or
//! OpenBao (`vault_external`), chosen by `vault_backend`. `kv_api` calls
//! only [`SecretBackend`] for KV operations, so its authorization, audit
//! and change notices are the same in front of either; AppRoles and tokens
//! always use the local store.
//!
//! The local arm calls the store inline, as the handlers always did: its
//! operations are short redb transactions.

use std::path::Path;
use std::sync::Arc;

use rampart_identity::Secret;
use rampart_proto::TenantId;
use rampart_vault::{
    MetadataUpdate, SecretData, SecretMetadata, SecretPath, SecretPrefix, SecretVersion, Vault,
    VaultError, VersionInfo, VersionOp,
};

use crate::config::{Config, ConfigError, VaultBackend, VAULT_EXTERNAL_TOKEN_ENV};
use crate::vault_external::ExternalVault;

/// The KV v2 operations of the secrets API, on one backend.
#[derive(Debug)]
pub(crate) enum SecretBackend {
    Local(Arc<Vault>),
    /// Boxed: the client is large, and there is one per server.
    External(Box<ExternalVault>),
}

const TOKEN_KEY: &str = "vault_external_token_path";

/// The external vault of `config`, if it names one: its token read from
/// `RAMPART_VAULT_EXTERNAL_TOKEN` or the token file, its CA file read. No
/// request is made. Errors name the configuration key.
pub(crate) fn external(config: &Config) -> Result<Option<ExternalVault>, ConfigError> {
    if config.vault_backend != VaultBackend::External {
        return Ok(None);
    }
    let address = config
        .vault_external_address
        .as_deref()
        .ok_or(ConfigError::Invalid {
            key: "vault_external_address",
            message: "vault_backend = \"external\" needs the external vault's address".into(),
        })?;
    let from_env = std::env::var(VAULT_EXTERNAL_TOKEN_ENV)
        .ok()
        .filter(|t| !t.is_empty())
        .map(Secret::new);
    let token = match (from_env, &config.vault_external_token_path) {
        (Some(t), _) => t,
        (None, Some(p)) => read_token_file(p)?,
        (None, None) => {
            return Err(ConfigError::Invalid {
                key: TOKEN_KEY,
                message: format!(
                    "vault_backend = \"external\" needs a token: set {VAULT_EXTERNAL_TOKEN_ENV} or {TOKEN_KEY}"
                ),
            })
        }
    };
    ExternalVault::new(
        address,
        &config.vault_external_mount,
        config.vault_external_ca_cert_path.clone(),
        token,
    )
    .map(Some)
}

/// The token in a file only its owner may read (on Unix).
fn read_token_file(path: &Path) -> Result<Secret<String>, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        key: TOKEN_KEY,
        message: format!("{}: {message}", path.display()),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| invalid(e.to_string()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(invalid(format!(
                "mode {:o} lets others read the token; make it 0600",
                mode & 0o777
            )));
        }
    }
    let raw = Secret::new(std::fs::read_to_string(path).map_err(|e| invalid(e.to_string()))?);
    Ok(Secret::new(raw.expose().trim().to_string()))
}

/// Runs a local vault call that commits (and so waits for an fsync) on
/// the blocking pool: the async workers keep serving meanwhile, and
/// concurrent writes reach the vault together, so they share one commit
/// (the vault's group commit) instead of taking turns on the two workers.
pub(crate) async fn blocking<T: Send + 'static>(
    vault: &Arc<Vault>,
    f: impl FnOnce(&Vault) -> Result<T, VaultError> + Send + 'static,
) -> Result<T, VaultError> {
    let vault = vault.clone();
    tokio::task::spawn_blocking(move || f(&vault))
        .await
        .map_err(|e| VaultError::Storage(format!("vault task failed: {e}")))?
}

impl SecretBackend {
    /// Reads a version: `None` or `Some(0)` is the current one; a deleted
    /// or destroyed version comes back with `data: None`.
    pub(crate) async fn read(
        &self,
        tenant: &TenantId,
        path: &SecretPath,
        version: Option<u64>,
        now_ms: u64,
    ) -> Result<SecretVersion, VaultError> {
        match self {
            Self::Local(v) => v.read(tenant, path, version, now_ms),
            Self::External(x) => x.read(tenant, path, version).await,
        }
    }

    pub(crate) async fn write(
        &self,
        tenant: &TenantId,
        path: &SecretPath,
        data: &Secret<SecretData>,
        cas: Option<u64>,
        now_ms: u64,
    ) -> Result<VersionInfo, VaultError> {
        match self {
            Self::Local(v) => {
                let (t, p, d) = (tenant.clone(), path.clone(), data.clone());
                blocking(v, move |v| v.write(&t, &p, &d, cas, now_ms)).await
            }
            Self::External(x) => x.write(tenant, path, data, cas, false).await,
        }
    }

    /// A JSON merge patch of the current version into a new one.
    pub(crate) async fn patch(
        &self,
        tenant: &TenantId,
        path: &SecretPath,
        patch: &Secret<SecretData>,
        cas: Option<u64>,
        now_ms: u64,
    ) -> Result<VersionInfo, VaultError> {
        match self {
            Self::Local(v) => {
                let (t, p, d) = (tenant.clone(), path.clone(), patch.clone());
                blocking(v, move |v| v.patch(&t, &p, &d, cas, now_ms)).await
            }
            Self::External(x) => x.write(tenant, path, patch, cas, true).await,
        }
    }

    pub(crate) async fn delete_latest(
        &self,
        tenant: &TenantId,
        path: &SecretPath,
        now_ms: u64,
    ) -> Result<(), VaultError> {
        match self {
            Self::Local(v) => {
                let (t, p) = (tenant.clone(), path.clone());
                blocking(v, move |v| v.delete_latest(&t, &p, now_ms)).await
            }
            Self::External(x) => x.delete_latest(tenant, path).await,
        }
    }

    pub(crate) async fn change_versions(
        &self,
        op: VersionOp,
        tenant: &TenantId,
        path: &SecretPath,
        versions: &[u64],
        now_ms: u64,
    ) -> Result<(), VaultError> {
        match self {
            Self::Local(v) => {
                let (t, p, vs) = (tenant.clone(), path.clone(), versions.to_vec());
                blocking(v, move |v| v.change_versions(op, &t, &p, &vs, now_ms)).await
            }
            Self::External(x) => x.versions(op.as_str(), tenant, path, versions).await,
        }
    }

    pub(crate) async fn read_metadata(
        &self,
        tenant: &TenantId,
        path: &SecretPath,
    ) -> Result<SecretMetadata, VaultError> {
        match self {
            Self::Local(v) => v.read_metadata(tenant, path),
            Self::External(x) => x.read_metadata(tenant, path).await,
        }
    }

    /// Vault's metadata POST: creates the secret (with no version) when
    /// missing.
    pub(crate) async fn write_metadata(
        &self,
        tenant: &TenantId,
        path: &SecretPath,
        update: MetadataUpdate,
        now_ms: u64,
    ) -> Result<(), VaultError> {
        match self {
            Self::Local(v) => {
                let (t, p) = (tenant.clone(), path.clone());
                blocking(v, move |v| {
                    v.write_metadata(&t, &p, update, now_ms).map(drop)
                })
                .await
            }
            Self::External(x) => x.write_metadata(tenant, path, update, false).await,
        }
    }

    /// Vault's metadata PATCH: the secret must exist.
    pub(crate) async fn patch_metadata(
        &self,
        tenant: &TenantId,
        path: &SecretPath,
        update: MetadataUpdate,
        now_ms: u64,
    ) -> Result<(), VaultError> {
        match self {
            Self::Local(v) => {
                let (t, p) = (tenant.clone(), path.clone());
                blocking(v, move |v| {
                    v.patch_metadata(&t, &p, update, now_ms).map(drop)
                })
                .await
            }
            Self::External(x) => x.write_metadata(tenant, path, update, true).await,
        }
    }

    /// Removes the secret: its metadata and every version.
    pub(crate) async fn delete_metadata(
        &self,
        tenant: &TenantId,
        path: &SecretPath,
    ) -> Result<(), VaultError> {
        match self {
            Self::Local(v) => {
                let (t, p) = (tenant.clone(), path.clone());
                blocking(v, move |v| v.delete_metadata(&t, &p)).await
            }
            Self::External(x) => x.delete_metadata(tenant, path).await,
        }
    }

    /// The direct children of a folder, sorted, folders with a trailing
    /// `/`; empty when the folder holds nothing.
    pub(crate) async fn list(
        &self,
        tenant: &TenantId,
        prefix: &SecretPrefix,
    ) -> Result<Vec<String>, VaultError> {
        match self {
            Self::Local(v) => v.list(tenant, prefix),
            Self::External(x) => x.list(tenant, prefix).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn token_files_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        std::fs::write(&p, "s.CANARY-token\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_token_file(&p).unwrap_err().to_string();
        assert!(e.contains(TOKEN_KEY) && e.contains("0600"), "{e}");
        assert!(!e.contains("CANARY"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_token_file(&p).unwrap().expose(), "s.CANARY-token");
        let e = read_token_file(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(TOKEN_KEY), "{e}");
    }
}
