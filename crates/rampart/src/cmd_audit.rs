//! `rampart audit`: verify a log, compute the HMAC an identifier appears
//! under, read a tenant's records over the HTTPS API.

use std::path::PathBuf;
use std::process::ExitCode;

use base64::Engine;

use crate::cmd_admin::HttpArgs;
use crate::Failure;

#[derive(Debug, clap::Args)]
pub(crate) struct AuditArgs {
    #[command(subcommand)]
    cmd: AuditCmd,
}

#[derive(Debug, clap::Subcommand)]
enum AuditCmd {
    /// Check the hash chain, the checkpoint signatures and the HEAD of an
    /// audit directory; exits 0 only if the whole log verifies, and names the
    /// first bad record otherwise.
    Verify {
        dir: PathBuf,
        /// The audit public key (base64), kept apart from the log. Without
        /// it, the key in DIR/audit.pub is trusted, which does not defend
        /// against someone able to rewrite the whole directory.
        #[arg(long)]
        public_key: Option<PathBuf>,
    },
    /// Print the HMAC under which an identifier (a key id, a token id)
    /// appears in audit records.
    Hash {
        value: String,
        #[arg(long, env = "RAMPART_DATA_DIR", default_value = "rampart-data")]
        data_dir: PathBuf,
        /// Use the development master key, `<data_dir>/master.key`.
        #[arg(long)]
        dev: bool,
    },
    /// Print a tenant's audit records (JSON lines) over the HTTPS API.
    Read {
        #[arg(long)]
        tenant: String,
        /// Only records after this sequence number.
        #[arg(long, default_value_t = 0)]
        since: u64,
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        #[command(flatten)]
        http: HttpArgs,
    },
}

pub(crate) async fn run(a: AuditArgs) -> Result<ExitCode, Failure> {
    match a.cmd {
        AuditCmd::Verify { dir, public_key } => {
            let key = match public_key {
                Some(p) => {
                    let text = std::fs::read_to_string(&p)
                        .map_err(|e| Failure(format!("{}: {e}", p.display())))?;
                    Some(
                        base64::engine::general_purpose::STANDARD
                            .decode(text.trim())
                            .map_err(|_| Failure(format!("{} is not base64", p.display())))?,
                    )
                }
                None => None,
            };
            match rampart_audit::verify_dir(&dir, key.as_deref()) {
                Ok(r) => {
                    println!(
                        "ok: {} records in {} file(s), seq {}..{}, {} signed checkpoints, {} key rotation(s), {} record(s) after the last checkpoint",
                        r.records, r.files, r.first_seq, r.last_seq, r.checkpoints, r.key_rotations, r.unsigned_tail
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    println!("FAILED: {e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        AuditCmd::Hash {
            value,
            data_dir,
            dev,
        } => {
            let config = crate::config_for(data_dir)?;
            let key = rampart_server::server_secret(
                &config,
                dev,
                rampart_server::ServerSecret::AuditHmac,
            )
            .await?;
            println!(
                "{}",
                rampart_audit::AuditKeys::hmac_id_for(key.expose(), &value)
            );
            // Records from before an audit key rotation use an older key.
            for (id, key) in rampart_server::retired_audit_hmac_keys(&config, dev).await? {
                println!(
                    "{}\tretired key {id}",
                    rampart_audit::AuditKeys::hmac_id_for(key.expose(), &value)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCmd::Read {
            tenant,
            since,
            limit,
            http,
        } => {
            let r = crate::cmd_admin::call(
                &http,
                "GET",
                &format!("/v1/tenants/{tenant}/audit?since={since}&limit={limit}"),
                None,
            )
            .await?;
            for rec in r.body["records"].as_array().into_iter().flatten() {
                println!("{rec}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
