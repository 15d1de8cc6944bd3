//! `rampart backup` (over the HTTPS API, while the server runs) and
//! `rampart restore` (offline, into a new data directory).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::cmd_admin::HttpArgs;
use crate::Failure;

#[derive(Debug, clap::Args)]
pub(crate) struct BackupArgs {
    /// Where to write the archive. It is written to `<FILE>.partial` and
    /// renamed once the server has sent all of it.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    http: HttpArgs,
}

#[derive(Debug, clap::Args)]
pub(crate) struct RestoreArgs {
    /// The archive `rampart backup` wrote.
    #[arg(long)]
    from: PathBuf,
    /// The data directory to restore into: new, or empty.
    #[arg(long)]
    data_dir: PathBuf,
    /// The server's configuration file (TOML), for its master key settings
    /// (`master_key_path`, the provider); RAMPART_* variables apply too.
    #[arg(long, env = "RAMPART_CONFIG")]
    config: Option<PathBuf>,
    /// Restoring a `server --dev` archive: that server's master key file
    /// (its old `<data_dir>/master.key`, which no archive holds). It opens
    /// the archive and is copied into the restored directory, where
    /// `--dev` looks for it. A production key is never copied beside the
    /// data: for an archive without the dev files it only opens it.
    #[arg(long, value_name = "FILE")]
    dev_master_key: Option<PathBuf>,
}

pub(crate) async fn backup(a: BackupArgs) -> Result<ExitCode, Failure> {
    let client = a.http.client()?;
    let mut partial = a.out.clone().into_os_string();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let mut opts = tokio::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut file = opts
        .open(&partial)
        .await
        .map_err(|e| Failure(format!("{}: {e}", partial.display())))?;
    let r = client.download("POST", "/v1/sys/backup", &mut file).await;
    let result = match r {
        Ok(Ok(bytes)) => file.sync_all().await.map(|()| bytes).map_err(Failure::from),
        Ok(Err(resp)) => Err(Failure(format!("HTTP {}: {}", resp.status, resp.error()))),
        Err(e) => Err(Failure(format!("the backup was cut short: {e}"))),
    };
    drop(file);
    match result {
        Ok(bytes) => {
            tokio::fs::rename(&partial, &a.out)
                .await
                .map_err(|e| Failure(format!("{}: {e}", a.out.display())))?;
            eprintln!("backup written: {} ({bytes} bytes)", a.out.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(f) => {
            let _ = tokio::fs::remove_file(&partial).await;
            Err(f)
        }
    }
}

pub(crate) async fn restore(a: RestoreArgs) -> Result<ExitCode, Failure> {
    let env = |k: &str| std::env::var(k).ok();
    let mut config = rampart_server::Config::load(a.config.as_deref(), &env)?;
    if let Some(key) = &a.dev_master_key {
        if config.master_key_provider != rampart_server::MasterKeyKind::Local
            || env(rampart_keys::MASTER_KEY_ENV).is_some()
        {
            return Err(Failure(format!(
                "--dev-master-key is a dev server's key file; this configuration names another master key ({} or master_key_provider): use one or the other",
                rampart_keys::MASTER_KEY_ENV
            )));
        }
        config.master_key_path = Some(key.clone());
    }
    let report = rampart_server::restore(&config, &a.from, &a.data_dir).await?;
    eprintln!(
        "restored {} file(s), {} byte(s) and {} store entries into {}",
        report.files,
        report.bytes,
        report.store_entries,
        a.data_dir.display()
    );
    if let Some(key) = &a.dev_master_key {
        match place_dev_key(key, &a.data_dir)? {
            Some(to) => eprintln!(
                "dev master key copied to {}; start it with `rampart server --dev` and RAMPART_DATA_DIR={}",
                to.display(),
                a.data_dir.display()
            ),
            None => eprintln!(
                "not a dev server's archive: {} opened it but was not copied beside the data; start the server with master_key_path set to it",
                key.display()
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Copies a dev server's master key file into the restored `data_dir`,
/// where `--dev` looks for it, when the archive held the dev files; a key
/// that opened any other archive is never put beside the data. Returns
/// where it was copied.
fn place_dev_key(
    key: &std::path::Path,
    data_dir: &std::path::Path,
) -> Result<Option<PathBuf>, Failure> {
    if !data_dir.join("dev").is_dir() {
        return Ok(None);
    }
    let to = data_dir.join("master.key");
    let err = |p: &std::path::Path, e: std::io::Error| Failure(format!("{}: {e}", p.display()));
    let bytes = rampart_identity::Secret::new(std::fs::read(key).map_err(|e| err(key, e))?);
    // Private (0600) and durable.
    rampart_identity::fsutil::write_private_file(&to, bytes.expose()).map_err(|e| err(&to, e))?;
    Ok(Some(to))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_goes_beside_a_dev_archive_only() {
        let work = tempfile::tempdir().unwrap();
        let key = work.path().join("old.key");
        std::fs::write(&key, "v1:a-dev-key\n").unwrap();
        let restored = work.path().join("restored");
        std::fs::create_dir(&restored).unwrap();

        // Not a dev server's archive: the key stays where it is.
        assert_eq!(place_dev_key(&key, &restored).unwrap(), None);
        assert!(!restored.join("master.key").exists());

        // A dev archive: copied, private.
        std::fs::create_dir(restored.join("dev")).unwrap();
        let to = place_dev_key(&key, &restored).unwrap().unwrap();
        assert_eq!(to, restored.join("master.key"));
        assert_eq!(std::fs::read(&to).unwrap(), b"v1:a-dev-key\n");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&to).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
