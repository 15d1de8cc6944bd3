//! `rampart config check`: loads a server configuration exactly as
//! `rampart server` does (the file, then `RAMPART_<KEY>` overrides, then
//! the same validation, all in `rampart_server::Config::load`), and prints
//! the configuration in force as TOML with every credential redacted (the
//! rule is on `rampart_server::SECRET_KEYS`).
//!
//! It creates nothing: loading only reads the file and the environment,
//! and files the configuration names (certificates, the master key,
//! tokens) are looked at, never read. Missing ones are warnings, not
//! errors, because the server itself only meets them at start, after
//! loading: a configuration can be checked on a machine that does not
//! have them (CI, a workstation). Errors are what `rampart server` would
//! refuse at load, each naming the key at fault.

use std::path::PathBuf;
use std::process::ExitCode;

use rampart_server::Config;

use crate::Failure;

#[derive(Debug, clap::Args)]
pub(crate) struct ConfigArgs {
    #[command(subcommand)]
    cmd: ConfigCmd,
}

#[derive(Debug, clap::Subcommand)]
enum ConfigCmd {
    /// Validate a server configuration as `rampart server` would load it
    /// and print it as TOML, credentials redacted. Exits non-zero naming
    /// the key at fault; files it names that are missing are warnings.
    Check {
        /// The configuration file (TOML, or YAML when it ends in .yaml or
        /// .yml). Takes precedence over --config.
        file: Option<PathBuf>,
        /// The configuration file, as `rampart server --config`. Without a
        /// file, the defaults and RAMPART_<KEY> variables are checked.
        #[arg(long, env = "RAMPART_CONFIG")]
        config: Option<PathBuf>,
        /// Data directory (overrides `data_dir` and RAMPART_DATA_DIR), as
        /// `rampart server --data-dir`. Not created.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

pub(crate) async fn run(a: ConfigArgs) -> Result<ExitCode, Failure> {
    match a.cmd {
        ConfigCmd::Check {
            file,
            config,
            data_dir,
        } => {
            let env = |k: &str| std::env::var(k).ok();
            let path = file.or(config);
            let mut c = Config::load(path.as_deref(), &env)?;
            if let Some(d) = data_dir {
                c.data_dir = d;
            }
            for w in c.missing_files(&env) {
                eprintln!("rampart: warning: {w}");
            }
            print!("{}", c.redacted_toml()?);
            eprintln!(
                "rampart: {}: valid",
                path.as_deref()
                    .map_or("(defaults and environment)".into(), |p| p
                        .display()
                        .to_string())
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
