//! `rampart key hash`: the stored form of an API key, for `allowed_api_keys`.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use rampart_identity::{Pepper, Secret};

use crate::Failure;

#[derive(Debug, clap::Args)]
pub(crate) struct KeyArgs {
    #[command(subcommand)]
    cmd: KeyCmd,
}

#[derive(Debug, clap::Subcommand)]
enum KeyCmd {
    #[command(flatten)]
    Admin(crate::cmd_admin::KeyAdmin),
    /// Read a key from stdin and print its hash (`hmac-sha256:<hex>`).
    ///
    /// The hash is keyed with the server's pepper, kept wrapped by the
    /// server's master key, so run this where the server's data directory
    /// and master key are (the pepper is created if missing).
    Hash {
        /// Data directory holding the pepper.
        #[arg(long, env = "RAMPART_DATA_DIR", default_value = "rampart-data")]
        data_dir: PathBuf,
        /// Use the development master key, `<data_dir>/master.key`.
        #[arg(long)]
        dev: bool,
        /// Print a whole `tenant:hash` entry for `allowed_api_keys`.
        #[arg(long)]
        tenant: Option<String>,
    },
}

pub(crate) async fn run(a: KeyArgs) -> Result<ExitCode, Failure> {
    match a.cmd {
        KeyCmd::Admin(cmd) => crate::cmd_admin::key(cmd).await,
        KeyCmd::Hash {
            data_dir,
            dev,
            tenant,
        } => {
            let config = crate::config_for(data_dir)?;
            let pepper = rampart_server::server_secret(
                &config,
                dev,
                rampart_server::ServerSecret::ApiKeyPepper,
            )
            .await?;
            let pepper = Pepper::from_bytes(pepper.expose());
            let mut line = Secret::new(String::with_capacity(4096));
            std::io::stdin().lock().read_line(line.expose_mut())?;
            let key = line.expose().trim();
            if key.is_empty() {
                return Err(Failure("no key on stdin".into()));
            }
            let hash = pepper.hash(key.as_bytes());
            match tenant {
                Some(t) => {
                    rampart_proto::TenantId::parse(&t)?;
                    println!("{t}:{hash}");
                }
                None => println!("{hash}"),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
