//! `rampart server`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use rampart_identity::Secret;
use rampart_server::{Config, Server, ServerOptions};

use crate::Failure;

#[derive(Debug, clap::Args)]
pub(crate) struct ServerArgs {
    /// Configuration file (TOML). Every key can also be set as RAMPART_<KEY>.
    #[arg(long, env = "RAMPART_CONFIG")]
    config: Option<PathBuf>,
    /// Development mode: generate a local CA, a certificate for localhost
    /// and an admin key for tenant `dev` under <data_dir>/dev/.
    #[arg(long)]
    dev: bool,
    /// Data directory (overrides `data_dir` and RAMPART_DATA_DIR).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

pub(crate) async fn run(a: ServerArgs) -> Result<ExitCode, Failure> {
    let env = |k: &str| std::env::var(k).ok();
    let mut config = Config::load(a.config.as_deref(), &env)?;
    let data_dir = a.data_dir.clone();
    if let Some(d) = &data_dir {
        config.data_dir = d.clone();
    }
    let timeout_secs = config.shutdown_timeout_secs;
    let drain_secs = config
        .shutdown_drain(Duration::from_secs(timeout_secs))
        .as_secs();
    let plain = std::env::var("RAMPART_API_KEYS").ok().map(Secret::new);
    let server = Server::start(ServerOptions::new(config).dev(a.dev).plain_api_keys(plain)).await?;
    if let Some(q) = server.quic_addr() {
        println!("rampart: quic listening on {q}");
    }
    if let Some(t) = server.tcp_addr() {
        println!("rampart: tls listening on {t}");
    }
    if let Some(h) = server.http_addr() {
        println!("rampart: https listening on {h}");
    }
    if let Some(d) = server.dev_setup() {
        let abs =
            |p: &std::path::Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        println!("rampart: dev mode; files in {}", abs(&d.dir).display());
        println!("rampart: CA certificate  {}", abs(&d.ca_cert).display());
        println!(
            "rampart: admin key (tenant `dev`, keep it secret) {}",
            abs(&d.admin_key_path).display()
        );
        println!("rampart: to use the CLI:");
        if let Some(q) = server.quic_addr() {
            println!("  export RAMPART_URL=quic://{q}");
        } else if let Some(t) = server.tcp_addr() {
            println!("  export RAMPART_URL=tls://{t}");
        }
        if let Some(h) = server.http_addr() {
            println!("  export RAMPART_HTTP_URL=https://{h}");
        }
        println!("  export RAMPART_CA_CERT={}", abs(&d.ca_cert).display());
        println!(
            "  export RAMPART_API_KEY_FILE={}",
            abs(&d.admin_key_path).display()
        );
    }
    let reload = || {
        let mut fresh = Config::load(a.config.as_deref(), &env)?;
        if let Some(d) = &data_dir {
            fresh.data_dir = d.clone();
        }
        server.reload_limits(&fresh)
    };
    wait_for_signal(reload).await;
    if drain_secs > 0 {
        eprintln!(
            "rampart: stopping: draining for up to {drain_secs} s (shutdown_drain_secs; signal again to skip)"
        );
    }
    let stopped = server
        .shutdown_with(Duration::from_secs(timeout_secs), stop_signal())
        .await;
    if stopped.is_clean() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "rampart: stopped after shutdown_timeout_secs ({timeout_secs} s) with unfinished steps: {}",
            stopped.cut_short.join(", ")
        );
        Ok(ExitCode::FAILURE)
    }
}

/// Waits for SIGTERM or Ctrl-C. SIGHUP re-reads the configuration file
/// and applies its limits (`reload`); a bad file is reported and the
/// limits in force stay.
async fn wait_for_signal(reload: impl Fn() -> Result<(), rampart_server::ConfigError>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let (Ok(mut term), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) {
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => return,
                    _ = term.recv() => return,
                    _ = hup.recv() => match reload() {
                        Ok(()) => eprintln!("rampart: SIGHUP: limits reloaded"),
                        Err(e) => eprintln!("rampart: SIGHUP: configuration not reloaded: {e}"),
                    },
                }
            }
        }
    }
    let _ = reload;
    let _ = tokio::signal::ctrl_c().await;
}

/// Waits for SIGTERM or Ctrl-C (a second one during a stop ends its
/// drain); never completes where no handler can be installed.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            },
            Err(_) => std::future::pending().await,
        }
    }
    #[cfg(not(unix))]
    {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
