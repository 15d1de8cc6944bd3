//! `rampart keys`: master key operations on a stopped server's data
//! directory.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::Failure;

#[derive(Debug, clap::Args)]
pub(crate) struct KeysArgs {
    #[command(subcommand)]
    cmd: KeysCmd,
}

#[derive(Debug, clap::Subcommand)]
enum KeysCmd {
    /// Make a new master key version and re-wrap every tenant key and
    /// server secret under it. Run it with the server stopped; if it is
    /// interrupted, run it again to finish.
    RotateMaster {
        #[arg(long, env = "RAMPART_DATA_DIR", default_value = "rampart-data")]
        data_dir: PathBuf,
        /// Use the development master key, `<data_dir>/master.key`.
        #[arg(long)]
        dev: bool,
    },
    /// Print a new random master key in the form RAMPART_MASTER_KEY takes,
    /// for a secret manager.
    Generate,
    /// Give a tenant new encryption keys (over the HTTPS API); with
    /// --reencrypt, everything stored for it is sealed again under them:
    /// its records at once, its durable stream data by a background job
    /// that survives restarts (progress is shown until it ends).
    Rotate {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        reencrypt: bool,
        /// With --reencrypt: return once the job is started.
        #[arg(long, requires = "reencrypt")]
        no_wait: bool,
        #[command(flatten)]
        http: crate::cmd_admin::HttpArgs,
    },
}

/// Shows the stream re-encryption job's progress until it ends.
async fn follow_job(http: &crate::cmd_admin::HttpArgs, tenant: &str) -> Result<(), Failure> {
    let path = format!("/v1/tenants/{tenant}/encryption");
    let mut total = None;
    loop {
        let r = crate::cmd_admin::call(http, "GET", &path, None).await?;
        let job = &r.body["job"];
        let left = r.body["stream_blocks_under_old_keys"].as_u64().unwrap_or(0);
        let versions = r.body["stream_blocks_by_key_version"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(v, n)| format!("{n} under v{v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        let total = *total.get_or_insert(left.max(1));
        let done = total.saturating_sub(left);
        let width = 30;
        let filled = (done * width / total) as usize;
        eprint!(
            "\r[{}{}] {left} stream block(s) left under older keys ({versions})   ",
            "#".repeat(filled),
            " ".repeat(width as usize - filled)
        );
        if let Some(e) = job["error"].as_str() {
            eprintln!();
            return Err(Failure(format!("re-encryption stopped: {e}")));
        }
        if !job["running"].as_bool().unwrap_or(false) {
            eprintln!();
            println!(
                "tenant {tenant}: {} stream block(s) re-sealed in {} stream(s); {left} left under older keys",
                job["blocks_resealed"], job["streams_done"]
            );
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

pub(crate) async fn run(a: KeysArgs) -> Result<ExitCode, Failure> {
    match a.cmd {
        KeysCmd::RotateMaster { data_dir, dev } => {
            let config = crate::config_for(data_dir)?;
            println!("{}", rampart_server::rotate_master(&config, dev).await?);
        }
        KeysCmd::Rotate {
            tenant,
            reencrypt,
            no_wait,
            http,
        } => {
            let r = crate::cmd_admin::call(
                &http,
                "POST",
                &format!("/v1/tenants/{tenant}/encryption/rotate"),
                Some(serde_json::json!({ "reencrypt": reencrypt })),
            )
            .await?;
            println!(
                "tenant {tenant}: key version {}; {} record(s) re-sealed, {} left under older keys",
                r.body["key_version"], r.body["records_resealed"], r.body["records_left"]
            );
            if reencrypt && !no_wait {
                follow_job(&http, &tenant).await?;
            }
        }
        KeysCmd::Generate => {
            let k = rampart_keys::LocalMasterKey::generate_env_value()?;
            println!("{}", k.expose());
        }
    }
    Ok(ExitCode::SUCCESS)
}
