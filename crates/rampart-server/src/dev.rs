//! `--dev` mode: a local CA, a server certificate for loopback names and a
//! one-time admin key, written under `<data_dir>/dev/` and reused on later
//! starts.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rampart_identity::{fsutil, generate_api_key, Secret};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};

/// Tenant of the dev admin key.
pub const DEV_TENANT: &str = "dev";

/// Files of a dev setup.
#[derive(Debug)]
pub struct DevSetup {
    pub dir: PathBuf,
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub admin_key_path: PathBuf,
    pub admin_key: Secret<String>,
    /// Whether this start created the files.
    pub created: bool,
}

/// A dev setup problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevError {
    #[error("dev files under {dir}: {message}")]
    Io { dir: String, message: String },
    #[error("generating dev certificates: {0}")]
    Cert(String),
}

/// Creates (or reuses) the dev CA, server certificate and admin key.
pub fn prepare(data_dir: &Path) -> Result<DevSetup, DevError> {
    let dir = data_dir.join("dev");
    let io = |e: std::io::Error| DevError::Io {
        dir: dir.display().to_string(),
        message: e.to_string(),
    };
    fsutil::create_private_dir(data_dir).map_err(io)?;
    fsutil::create_private_dir(&dir).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(io)?;
    }
    let ca_cert = dir.join("ca.crt");
    let ca_key = dir.join("ca.key");
    let server_cert = dir.join("server.crt");
    let server_key = dir.join("server.key");
    let admin_key_path = dir.join("admin.key");

    let mut created = false;
    if !(ca_cert.exists() && server_cert.exists() && server_key.exists()) {
        let cert = |e: rcgen::Error| DevError::Cert(e.to_string());
        let ca_kp = KeyPair::generate().map_err(cert)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(cert)?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Rampart dev CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = ca_params.self_signed(&ca_kp).map_err(cert)?;

        let srv_kp = KeyPair::generate().map_err(cert)?;
        let mut srv_params = CertificateParams::new(vec!["localhost".to_string()]).map_err(cert)?;
        srv_params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        for ip in ["127.0.0.1", "::1"] {
            if let Ok(ip) = ip.parse() {
                srv_params.subject_alt_names.push(SanType::IpAddress(ip));
            }
        }
        srv_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let srv = srv_params.signed_by(&srv_kp, &ca, &ca_kp).map_err(cert)?;

        fsutil::write_private_file(&ca_key, ca_kp.serialize_pem().as_bytes()).map_err(io)?;
        fsutil::write_private_file(&server_key, srv_kp.serialize_pem().as_bytes()).map_err(io)?;
        fsutil::write_private_file(&server_cert, srv.pem().as_bytes()).map_err(io)?;
        fsutil::write_private_file(&ca_cert, ca.pem().as_bytes()).map_err(io)?;
        created = true;
    }

    let admin_key = match fs::read_to_string(&admin_key_path) {
        Ok(k) if !k.trim().is_empty() => Secret::new(k.trim().to_string()),
        _ => {
            let key = generate_api_key("rk_dev_").map_err(|e| DevError::Cert(e.to_string()))?;
            let _ = fs::remove_file(&admin_key_path);
            let mut f = fsutil::create_private_file(&admin_key_path).map_err(io)?;
            f.write_all(key.expose().as_bytes())
                .and_then(|_| f.write_all(b"\n"))
                .and_then(|_| f.sync_all())
                .map_err(io)?;
            created = true;
            key
        }
    };
    Ok(DevSetup {
        dir,
        ca_cert,
        server_cert,
        server_key,
        admin_key_path,
        admin_key,
        created,
    })
}
