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
    /// --reencrypt, everything stored for it is sealed again under them.
    Rotate {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        reencrypt: bool,
        #[command(flatten)]
        http: crate::cmd_admin::HttpArgs,
    },
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
        }
        KeysCmd::Generate => {
            let k = rampart_keys::LocalMasterKey::generate_env_value()?;
            println!("{}", k.expose());
        }
    }
    Ok(ExitCode::SUCCESS)
}
