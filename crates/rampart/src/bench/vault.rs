//! `rampart bench vault`: secret reads, AppRole logins and secret writes
//! per second over the Vault-compatible HTTPS API, against a server started
//! here with its normal secure defaults (TLS, audit on: every read and write
//! is a mandatory, durable audit record).
//!
//! Each of N workers keeps one HTTPS connection open (HTTP/1.1 keep-alive,
//! as Vault clients do) and sends one request at a time for
//! `--duration-secs`; every answer must be a 200.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rampart_client::{AdminClient, ClientConfig};
use serde_json::{json, Value};

use super::{Format, LocalServer};
use crate::cmd_client::describe;
use crate::Failure;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Op {
    Read,
    Login,
    Write,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Login => "login",
            Op::Write => "write",
        }
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct VaultArgs {
    /// Operations to measure, comma-separated.
    #[arg(long, value_delimiter = ',', value_enum, default_values = ["read", "login", "write"])]
    ops: Vec<Op>,
    /// Concurrent workers, each with its own kept-open connection.
    #[arg(long, value_delimiter = ',', default_values_t = vec![32usize])]
    concurrency: Vec<usize>,
    /// Seconds per cell.
    #[arg(long, default_value_t = 3)]
    duration_secs: u64,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// The server's audit log: on (the default settings) or off
    /// (`dangerous_disable_audit`), to measure what auditing costs.
    #[arg(long, value_enum, default_value = "on")]
    audit: super::OnOff,
}

struct Row {
    op: Op,
    concurrency: usize,
    requests: u64,
    seconds: f64,
    p50_us: u64,
    p99_us: u64,
}

/// What the workers need: the server, an admin token, an AppRole.
struct Setup {
    url: String,
    ca: std::path::PathBuf,
    token: String,
    role_id: String,
    secret_id: String,
}

async fn must(
    r: Result<rampart_client::AdminResponse, rampart_client::ClientError>,
    what: &str,
) -> Result<Value, Failure> {
    let r = r.map_err(describe)?;
    if r.status >= 300 {
        return Err(Failure(format!("{what}: HTTP {}: {}", r.status, r.error())));
    }
    Ok(r.body)
}

async fn setup(server: &LocalServer) -> Result<Setup, Failure> {
    let http = server
        .http
        .ok_or_else(|| Failure("bench server has no HTTPS API".into()))?;
    let url = format!("https://{http}");
    let mut cfg = ClientConfig::default();
    cfg.tls_ca_cert_path = Some(server.ca.clone());
    cfg.api_key = Some(server.key.clone());
    let admin = AdminClient::new(&url, &cfg).map_err(describe)?;
    let auth = must(
        admin
            .call(
                "POST",
                "/v1/auth",
                Some(&json!({ "api_key": server.key.expose() })),
            )
            .await,
        "login",
    )
    .await?;
    let token = auth["auth"]["client_token"]
        .as_str()
        .ok_or_else(|| Failure("no token".into()))?
        .to_string();
    let tenant = auth["auth"]["metadata"]["tenant"]
        .as_str()
        .ok_or_else(|| Failure("no tenant".into()))?
        .to_string();
    let acl = format!(
        "apiVersion: rampart.io/v1\nkind: ACL\nmetadata: {{tenant: {tenant}}}\nspec:\n  rules:\n    - principal: \"role:admin\"\n      resource: \"secret:*\"\n      permissions: [secret_read, secret_write]\n    - principal: \"approle:bench\"\n      resource: \"secret:bench/*\"\n      permissions: [secret_read]\n"
    );
    must(
        admin
            .call(
                "PUT",
                &format!("/v1/tenants/{tenant}/acl"),
                Some(&Value::String(acl)),
            )
            .await,
        "ACL",
    )
    .await?;
    let tcfg = ClientConfig::default()
        .with_ca(&server.ca)
        .with_token(&token);
    let t = AdminClient::new(&url, &tcfg).map_err(describe)?;
    must(
        t.call(
            "POST",
            "/v1/secret/data/bench/prod/db",
            Some(&json!({ "data": { "password": "bench-value", "user": "app" } })),
        )
        .await,
        "seed secret",
    )
    .await?;
    must(
        t.call(
            "POST",
            "/v1/auth/approle/role/bench",
            Some(&json!({ "token_policies": ["user"] })),
        )
        .await,
        "AppRole",
    )
    .await?;
    let role_id = must(
        t.call("GET", "/v1/auth/approle/role/bench/role-id", None)
            .await,
        "role id",
    )
    .await?["data"]["role_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let secret_id = must(
        t.call("POST", "/v1/auth/approle/role/bench/secret-id", None)
            .await,
        "secret id",
    )
    .await?["data"]["secret_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    Ok(Setup {
        url,
        ca: server.ca.clone(),
        token,
        role_id,
        secret_id,
    })
}

async fn worker(
    s: std::sync::Arc<Setup>,
    op: Op,
    id: usize,
    until: Instant,
) -> Result<(u64, Histogram<u64>), Failure> {
    let mut cfg = ClientConfig::default().with_ca(&s.ca);
    if op != Op::Login {
        cfg = cfg.with_token(&s.token);
    }
    let client = AdminClient::new(&s.url, &cfg).map_err(describe)?;
    let mut session = client.session().await.map_err(describe)?;
    let mut hist = Histogram::<u64>::new(3).map_err(|e| Failure(e.to_string()))?;
    let mut n = 0u64;
    let login = json!({ "role_id": s.role_id, "secret_id": s.secret_id });
    let path = format!("/v1/secret/data/bench/load/w{id}");
    while Instant::now() < until {
        let started = Instant::now();
        let r = match op {
            Op::Read => {
                session
                    .call("GET", "/v1/secret/data/bench/prod/db", None)
                    .await
            }
            Op::Login => {
                session
                    .call("POST", "/v1/auth/approle/login", Some(&login))
                    .await
            }
            Op::Write => {
                let body = json!({ "data": { "n": n, "worker": id } });
                session.call("POST", &path, Some(&body)).await
            }
        }
        .map_err(describe)?;
        if r.status != 200 {
            return Err(Failure(format!(
                "{} answered HTTP {}: {}",
                op.as_str(),
                r.status,
                r.error()
            )));
        }
        let _ = hist.record(started.elapsed().as_micros() as u64);
        n += 1;
    }
    Ok((n, hist))
}

pub(crate) async fn run(a: VaultArgs) -> Result<ExitCode, Failure> {
    if a.ops.is_empty() || a.concurrency.is_empty() || a.concurrency.contains(&0) {
        return Err(Failure(
            "--ops and --concurrency need positive values".into(),
        ));
    }
    let server = LocalServer::start_with(a.audit == super::OnOff::On, true, false)?;
    let s = std::sync::Arc::new(setup(&server).await?);
    let mut rows = Vec::new();
    for &op in &a.ops {
        for &c in &a.concurrency {
            let started = Instant::now();
            let until = started + Duration::from_secs(a.duration_secs.max(1));
            let tasks: Vec<_> = (0..c)
                .map(|id| tokio::spawn(worker(s.clone(), op, id, until)))
                .collect();
            let mut results = Vec::with_capacity(c);
            for t in tasks {
                results.push(
                    t.await
                        .map_err(|e| Failure(format!("worker failed: {e}")))?,
                );
            }
            let seconds = started.elapsed().as_secs_f64();
            let mut hist = Histogram::<u64>::new(3).map_err(|e| Failure(e.to_string()))?;
            let mut requests = 0;
            for r in results {
                let (n, h) = r?;
                requests += n;
                hist.add(&h).map_err(|e| Failure(e.to_string()))?;
            }
            if a.format == Format::Table {
                eprintln!(
                    "bench: vault {} x {c}: {:.0} req/s",
                    op.as_str(),
                    requests as f64 / seconds
                );
            }
            rows.push(Row {
                op,
                concurrency: c,
                requests,
                seconds,
                p50_us: hist.value_at_quantile(0.5),
                p99_us: hist.value_at_quantile(0.99),
            });
        }
    }
    match a.format {
        Format::Csv => {
            println!("op,concurrency,requests,seconds,req_per_s,p50_us,p99_us");
            for r in &rows {
                println!(
                    "{},{},{},{:.3},{:.0},{},{}",
                    r.op.as_str(),
                    r.concurrency,
                    r.requests,
                    r.seconds,
                    r.requests as f64 / r.seconds,
                    r.p50_us,
                    r.p99_us
                );
            }
        }
        Format::Table => {
            println!(
                "{:<6} {:>5} {:>10} {:>8} {:>10} {:>9} {:>9}",
                "op", "conc", "requests", "seconds", "req/s", "p50 us", "p99 us"
            );
            for r in &rows {
                println!(
                    "{:<6} {:>5} {:>10} {:>8.3} {:>10.0} {:>9} {:>9}",
                    r.op.as_str(),
                    r.concurrency,
                    r.requests,
                    r.seconds,
                    r.requests as f64 / r.seconds,
                    r.p50_us,
                    r.p99_us
                );
            }
        }
    }
    drop(server);
    Ok(ExitCode::SUCCESS)
}
