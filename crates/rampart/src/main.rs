//! `rampart`: one binary for the server, the command-line client and the
//! benchmarks.
//!
//! # Layout
//! - `cmd_server`: `rampart server`.
//! - `cmd_config`: `rampart config check`, the server's configuration
//!   loaded, validated and printed with credentials redacted.
//! - `cmd_client`: `rampart pub`, `sub` and `cache`, and the shared
//!   connection options.
//! - `cmd_key`: `rampart key hash`, and the managed key commands.
//! - `cmd_admin`: admin commands over the HTTPS API (`key`, `tenant`,
//!   `acl`, `token`, `stream`).
//! - `cmd_audit`: `rampart audit verify|hash|read`.
//! - `cmd_backup`: `rampart backup` (HTTPS) and `rampart restore` (offline).
//! - `cmd_incident`: `rampart incident bundle`, a forensic bundle.
//! - `cmd_keys`: `rampart keys rotate-master|generate`.
//! - `cmd_state`: `rampart state rebuild`, the control-plane journal
//!   replayed offline and checked against the store.
//! - `bench`: `rampart bench pubsub`.
//! - `agent`: `rampart agent`, which delivers secrets to files.

mod agent;
mod bench;
mod cmd_admin;
mod cmd_audit;
mod cmd_backup;
mod cmd_client;
mod cmd_config;
mod cmd_incident;
mod cmd_key;
mod cmd_keys;
mod cmd_server;
mod cmd_state;

use std::process::ExitCode;

/// See the note on `mimalloc` in this crate's Cargo.toml.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "rampart",
    version,
    about = "Secure multi-tenant broker, cache and vault"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the server.
    Server(cmd_server::ServerArgs),
    /// Server configuration: check.
    Config(cmd_config::ConfigArgs),
    /// Publish messages to a stream.
    Pub(cmd_client::PubArgs),
    /// Print messages from a stream, one per line.
    Sub(cmd_client::SubArgs),
    /// Read and write cache entries.
    Cache(cmd_client::CacheArgs),
    /// API keys: create, list, revoke, rotate, hash.
    Key(cmd_key::KeyArgs),
    /// Tenants: list, create, disable, enable.
    Tenant(cmd_admin::TenantArgs),
    /// Namespaces of a tenant: disable, enable.
    Namespace(cmd_admin::NamespaceArgs),
    /// Access control documents: apply, get, explain.
    Acl(cmd_admin::AclArgs),
    /// Rampart tokens: create, revoke.
    Token(cmd_admin::TokenArgs),
    /// Declared streams: create, delete, list.
    Stream(cmd_admin::StreamArgs),
    /// The audit log: verify, hash, read.
    Audit(cmd_audit::AuditArgs),
    /// An encrypted backup of a running server's data directory.
    Backup(cmd_backup::BackupArgs),
    /// Restore a backup into a new data directory (server stopped).
    Restore(cmd_backup::RestoreArgs),
    /// Incident response: a forensic bundle of the audit log and the
    /// redacted configuration.
    Incident(cmd_incident::IncidentArgs),
    /// Master key: rotate-master, generate.
    Keys(cmd_keys::KeysArgs),
    /// Control-plane state: rebuild it from the journal and check the
    /// store (server stopped).
    State(cmd_state::StateArgs),
    /// Benchmarks.
    Bench(bench::BenchArgs),
    /// Deliver secrets to files and keep them current.
    Agent(agent::AgentArgs),
}

fn init_logs(default: &str) {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::prelude::*;
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|s| s.parse::<Targets>().ok())
        .unwrap_or_else(|| default.parse().unwrap_or_default());
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false),
        )
        .with(filter)
        .try_init();
}

/// The server configuration from the environment (`RAMPART_*`), for a
/// command that works on the data directory `data_dir`.
pub(crate) fn config_for(data_dir: std::path::PathBuf) -> Result<rampart_server::Config, Failure> {
    let env = |k: &str| std::env::var(k).ok();
    let mut config = rampart_server::Config::load(None, &env)?;
    config.data_dir = data_dir;
    Ok(config)
}

/// A failure to report and exit with.
#[derive(Debug)]
pub(crate) struct Failure(String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(e.to_string())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(match cli.cmd {
        Cmd::Server(_) | Cmd::Agent(_) => "info",
        _ => "warn",
    });
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rampart: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.cmd {
            Cmd::Server(a) => cmd_server::run(a).await,
            Cmd::Config(a) => cmd_config::run(a).await,
            Cmd::Pub(a) => cmd_client::publish(a).await,
            Cmd::Sub(a) => cmd_client::subscribe(a).await,
            Cmd::Cache(a) => cmd_client::cache(a).await,
            Cmd::Key(a) => cmd_key::run(a).await,
            Cmd::Tenant(a) => cmd_admin::tenant(a).await,
            Cmd::Namespace(a) => cmd_admin::namespace(a).await,
            Cmd::Acl(a) => cmd_admin::acl(a).await,
            Cmd::Token(a) => cmd_admin::token(a).await,
            Cmd::Stream(a) => cmd_admin::stream(a).await,
            Cmd::Audit(a) => cmd_audit::run(a).await,
            Cmd::Backup(a) => cmd_backup::backup(a).await,
            Cmd::Restore(a) => cmd_backup::restore(a).await,
            Cmd::Incident(a) => cmd_incident::run(a).await,
            Cmd::Keys(a) => cmd_keys::run(a).await,
            Cmd::State(a) => cmd_state::run(a).await,
            Cmd::Bench(a) => bench::run(a).await,
            Cmd::Agent(a) => agent::run(a).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(Failure(msg)) => {
            eprintln!("rampart: {msg}");
            ExitCode::FAILURE
        }
    }
}
