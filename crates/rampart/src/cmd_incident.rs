//! `rampart incident bundle`: a forensic bundle to hand to whoever
//! investigates an incident, made on the server's host (it reads the data
//! directory; the server may be running).
//!
//! The bundle is a new private directory (0700, files 0600) holding:
//! - `audit/`: a copy of the audit directory, `HEAD` first (a running
//!   writer only moves it forward, so the copy verifies up to it);
//! - `audit-verify.txt`: the result of verifying that copy (hash chain,
//!   checkpoint signatures, HEAD), as `rampart audit verify` prints it;
//! - `config.redacted.toml`: the configuration in force, credentials
//!   redacted as `rampart config check` prints it;
//! - `bundle.txt`: when, from where and by which version it was made, and
//!   what it leaves out;
//! - `MANIFEST.sha256`: the SHA-256 of every other file, in the format
//!   `sha256sum -c` reads.
//!
//! Never in it: the master key, the pepper, the store, stream data, secrets
//! or any key material. Audit records hold no secret or payload by design.
//!
//! `rampart incident revoke-principal`: every credential of one principal
//! of a tenant, at once, over the HTTPS API: its managed API keys (and so
//! every token issued from them) and every Rampart token issued to it by
//! any other login (JWT, AppRole, mTLS). Connections using them close.
//!
//! `rampart incident rotate-token-key [--grace D]`: a new token signing
//! key, over the HTTPS API; tokens of the old one are refused at once
//! (their connections close) or, with `--grace`, until D has passed.
//!
//! `rampart incident rotate-audit-key`: new audit signing and HMAC keys,
//! over the HTTPS API; prints the new public key to pin.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use rampart_identity::fsutil;
use rampart_server::Config;
use serde_json::json;

use crate::cmd_admin::{call, HttpArgs};
use crate::Failure;

#[derive(Debug, clap::Args)]
pub(crate) struct IncidentArgs {
    #[command(subcommand)]
    cmd: IncidentCmd,
}

#[derive(Debug, clap::Subcommand)]
enum IncidentCmd {
    /// Write a forensic bundle (audit files, their verification, the
    /// redacted configuration, a SHA-256 manifest) into a new directory.
    /// Exits 1 if the audit copy does not verify (the bundle is still
    /// written, with the failure in audit-verify.txt).
    Bundle {
        /// The new directory to write; must not exist.
        #[arg(long)]
        out: PathBuf,
        /// The server's configuration file, as `rampart server --config`.
        #[arg(long, env = "RAMPART_CONFIG")]
        config: Option<PathBuf>,
        /// Data directory (overrides `data_dir` and RAMPART_DATA_DIR).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Revoke every credential of a principal: its managed API keys (with
    /// the tokens issued from them) and every token issued to it. Keys
    /// from `allowed_api_keys` in the configuration are not revocable at
    /// run time: remove them from the file and restart.
    RevokePrincipal {
        #[arg(long)]
        tenant: String,
        /// The principal's name (a managed key's name, a JWT subject, an
        /// AppRole role).
        #[arg(long)]
        principal: String,
        #[command(flatten)]
        http: HttpArgs,
    },
    /// Replace the server's token signing key. By default every token
    /// signed so far is refused at once and the connections that logged in
    /// with one are closed (a leaked key); `--grace` keeps them working for
    /// a while instead (a routine rotation).
    RotateTokenKey {
        /// How long tokens of the old key stay accepted (e.g. 10m); at
        /// most `token_max_ttl_secs`.
        #[arg(long, value_parser = crate::cmd_admin::parse_duration, default_value = "0s")]
        grace: std::time::Duration,
        #[command(flatten)]
        http: HttpArgs,
    },
    /// Replace the audit log's signing and HMAC keys. The log records the
    /// rotation, endorsed by the old key, and `rampart audit verify`
    /// follows it; pin the new public key (printed) from now on.
    RotateAuditKey {
        #[command(flatten)]
        http: HttpArgs,
    },
}

pub(crate) async fn run(a: IncidentArgs) -> Result<ExitCode, Failure> {
    match a.cmd {
        IncidentCmd::Bundle {
            out,
            config,
            data_dir,
        } => {
            let env = |k: &str| std::env::var(k).ok();
            let mut c = Config::load(config.as_deref(), &env)?;
            if let Some(d) = data_dir {
                c.data_dir = d;
            }
            bundle(&c, config.as_deref(), &out)
        }
        IncidentCmd::RevokePrincipal {
            tenant,
            principal,
            http,
        } => revoke_principal(&http, &tenant, &principal).await,
        IncidentCmd::RotateTokenKey { grace, http } => {
            let r = call(
                &http,
                "POST",
                "/v1/sys/rotate/token-signing",
                Some(json!({ "grace_secs": grace.as_secs() })),
            )
            .await?;
            let b = &r.body;
            eprintln!(
                "rampart: token signing key {} replaces {}; tokens of the old key {}; {} connection(s) closed",
                b["key_id"].as_str().unwrap_or("?"),
                b["previous_key_id"].as_str().unwrap_or("?"),
                if grace.is_zero() {
                    "are refused from now on".to_string()
                } else {
                    format!("are accepted for {}s more", grace.as_secs())
                },
                b["connections_closed"].as_u64().unwrap_or(0),
            );
            Ok(ExitCode::SUCCESS)
        }
        IncidentCmd::RotateAuditKey { http } => {
            let r = call(&http, "POST", "/v1/sys/rotate/audit", None).await?;
            let b = &r.body;
            eprintln!(
                "rampart: audit keys rotated; HMAC key {} replaces {}; checkpoints are now signed with the public key below (pin it)",
                b["hmac_key_id"].as_str().unwrap_or("?"),
                b["previous_hmac_key_id"].as_str().unwrap_or("?"),
            );
            println!("{}", b["public_key"].as_str().unwrap_or(""));
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn revoke_principal(
    http: &HttpArgs,
    tenant: &str,
    principal: &str,
) -> Result<ExitCode, Failure> {
    let keys = call(http, "GET", &format!("/v1/tenants/{tenant}/keys"), None).await?;
    let ids: Vec<String> = keys.body["keys"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|k| k["name"] == principal && k["revoked_ms"].is_null())
        .filter_map(|k| k["id"].as_str().map(str::to_string))
        .collect();
    let mut closed = 0;
    for id in &ids {
        let r = call(
            http,
            "POST",
            &format!("/v1/tenants/{tenant}/keys/{id}/revoke"),
            None,
        )
        .await?;
        closed += r.body["connections_closed"].as_u64().unwrap_or(0);
        eprintln!("rampart: key {id} revoked");
    }
    let r = call(
        http,
        "POST",
        &format!("/v1/tenants/{tenant}/tokens/revoke"),
        Some(json!({ "principal": principal })),
    )
    .await?;
    closed += r.body["connections_closed"].as_u64().unwrap_or(0);
    eprintln!(
        "rampart: principal {principal} of {tenant}: {} key(s) and every token revoked; {closed} connection(s) closed",
        ids.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn io_err(what: &Path) -> impl Fn(std::io::Error) -> Failure + '_ {
    move |e| Failure(format!("{}: {e}", what.display()))
}

fn bundle(c: &Config, config_path: Option<&Path>, out: &Path) -> Result<ExitCode, Failure> {
    if out.exists() {
        return Err(Failure(format!(
            "{}: already exists; the bundle goes into a new directory",
            out.display()
        )));
    }
    fsutil::create_private_dir(out).map_err(io_err(out))?;

    let audit_src = c.data_dir.join("audit");
    let audit_dst = out.join("audit");
    fsutil::create_private_dir(&audit_dst).map_err(io_err(&audit_dst))?;
    let copied = copy_audit(&audit_src, &audit_dst)?;
    let verdict = match rampart_audit::verify_dir(&audit_dst, None) {
        Ok(r) => Ok(format!(
            "ok: {} records in {} file(s), seq {}..{}, {} signed checkpoints, {} record(s) after the last checkpoint{}\n",
            r.records,
            r.files,
            r.first_seq,
            r.last_seq,
            r.checkpoints,
            r.unsigned_tail,
            if r.torn_tail {
                "; the newest file ends with an incomplete line (a write in progress)"
            } else {
                ""
            }
        )),
        Err(e) => Err(format!("FAILED: {e}\n")),
    };
    let verify_text = match &verdict {
        Ok(t) | Err(t) => t.clone(),
    };
    write(out, "audit-verify.txt", verify_text.as_bytes())?;
    write(out, "config.redacted.toml", c.redacted_toml()?.as_bytes())?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let about = format!(
        "rampart incident bundle\n\
         made_at_unix_ms = {now_ms}\n\
         rampart_version = {}\n\
         data_dir = {}\n\
         config = {}\n\
         audit_files = {copied}\n\
         left out: the master key, the pepper, the store, stream data, secrets and all key material\n",
        env!("CARGO_PKG_VERSION"),
        c.data_dir.display(),
        config_path.map_or("(defaults and environment)".into(), |p| p
            .display()
            .to_string()),
    );
    write(out, "bundle.txt", about.as_bytes())?;
    write_manifest(out)?;

    eprintln!(
        "rampart: bundle written to {} ({copied} audit file(s)); audit copy: {}",
        out.display(),
        verify_text.trim_end()
    );
    Ok(if verdict.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Copies the regular files of the audit directory, `HEAD` first. Returns
/// how many.
fn copy_audit(src: &Path, dst: &Path) -> Result<usize, Failure> {
    let mut names: Vec<String> = match std::fs::read_dir(src) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect(),
        // A server whose audit sink is stdout has no audit files.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io_err(src)(e)),
    };
    names.sort_by_key(|n| (n != "HEAD", n.clone()));
    for name in &names {
        let from = src.join(name);
        let bytes = std::fs::read(&from).map_err(io_err(&from))?;
        write(dst, name, &bytes)?;
    }
    Ok(names.len())
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), Failure> {
    let path = dir.join(name);
    fsutil::write_private_file(&path, bytes).map_err(io_err(&path))
}

/// `MANIFEST.sha256`: every file under `out` but itself, sorted.
fn write_manifest(out: &Path) -> Result<(), Failure> {
    let mut files = Vec::new();
    let mut stack = vec![out.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).map_err(io_err(&dir))? {
            let p = e.map_err(io_err(&dir))?.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    let mut lines = Vec::new();
    for p in files {
        let rel = p
            .strip_prefix(out)
            .map_err(|_| Failure(format!("{} is outside the bundle", p.display())))?
            .to_string_lossy()
            .into_owned();
        let bytes = std::fs::read(&p).map_err(io_err(&p))?;
        let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
        lines.push(format!("{}  {rel}\n", hex_of(digest.as_ref())));
    }
    lines.sort_by(|a, b| a[66..].cmp(&b[66..]));
    write(out, "MANIFEST.sha256", lines.concat().as_bytes())
}

fn hex_of(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
