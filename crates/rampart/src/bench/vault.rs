//! `rampart bench vault`: secret reads, AppRole logins and secret writes
//! per second over the Vault-compatible HTTPS API, against a server started
//! here with its normal secure defaults (TLS, audit on: every read and write
//! is a mandatory, durable audit record).
//!
//! Each of N workers keeps one HTTPS connection open (HTTP/1.1 keep-alive,
//! as Vault clients do) and sends one request at a time for
//! `--duration-secs`; every answer must be a 200.
//!
//! The setup and the workers are shared with the `vault` section of
//! `rampart bench compare`, which runs them against OpenBao too.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rampart_client::{AdminClient, ClientConfig};
use rampart_identity::Secret;
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
    pub(crate) fn as_str(self) -> &'static str {
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
    /// Versions of the secret the reads read: the setup writes it this
    /// many times and reads take the current version (Vault and Rampart
    /// keep 10 by default).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10))]
    versions: u32,
    /// Bytes of the read secret's value in each version (its `password`);
    /// 0 keeps the usual short one.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=65536))]
    value_bytes: u32,
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

/// What the workers need: the server, a token for reads and writes, an
/// AppRole. The same for Rampart and for a Vault-compatible peer
/// (`bench compare`).
pub(crate) struct Setup {
    /// `https://host:port`.
    pub(crate) url: String,
    /// The CA that verifies the server (PEM).
    pub(crate) ca: PathBuf,
    /// Presented by the read and write workers.
    pub(crate) token: Secret<String>,
    pub(crate) role_id: String,
    pub(crate) secret_id: Secret<String>,
}

impl Setup {
    /// A client presenting the setup's (admin) token.
    fn admin(&self) -> Result<AdminClient, Failure> {
        let mut cfg = ClientConfig::default().with_ca(&self.ca);
        cfg.token = Some(self.token.clone());
        AdminClient::new(&self.url, &cfg).map_err(describe)
    }
}

/// The secret every read worker reads, seeded by the setup.
pub(crate) const READ_PATH: &str = "/v1/secret/data/bench/prod/db";

/// The KV v2 metadata path of [`READ_PATH`].
fn read_metadata_path() -> String {
    READ_PATH.replacen("/data/", "/metadata/", 1)
}
/// The seeded secret's data.
pub(crate) fn seed_data() -> Value {
    json!({ "data": { "password": "bench-value", "user": "app" } })
}

/// The body of a 2xx answer, else the status and error as a failure.
pub(crate) async fn must(
    r: Result<rampart_client::AdminResponse, rampart_client::ClientError>,
    what: &str,
) -> Result<Value, Failure> {
    let r = r.map_err(describe)?;
    if r.status >= 300 {
        return Err(Failure(format!("{what}: HTTP {}: {}", r.status, r.error())));
    }
    Ok(r.body)
}

/// A string field of an answer, or a failure naming it.
pub(crate) fn field(v: &Value, pointer: &str, what: &str) -> Result<String, Failure> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| Failure(format!("{what}: no {pointer} in the answer")))
}

/// Sets up a Rampart server at `url` (its CA `ca`) with `key`, an API key
/// of a tenant: logs in, writes the tenant's ACL (the admin role reads and
/// writes every secret, the AppRole `bench` reads `bench/*` and writes
/// `bench/load/*`), seeds [`READ_PATH`] and creates the AppRole. The token
/// of the setup is the admin's.
pub(crate) async fn rampart_setup(
    url: &str,
    ca: &Path,
    key: &Secret<String>,
) -> Result<Setup, Failure> {
    let mut cfg = ClientConfig::default().with_ca(ca);
    cfg.api_key = Some(key.clone());
    let admin = AdminClient::new(url, &cfg).map_err(describe)?;
    let auth = must(
        admin
            .call(
                "POST",
                "/v1/auth",
                Some(&json!({ "api_key": key.expose() })),
            )
            .await,
        "login",
    )
    .await?;
    let token = Secret::new(field(&auth, "/auth/client_token", "login")?);
    let tenant = field(&auth, "/auth/metadata/tenant", "login")?;
    let acl = format!(
        "apiVersion: rampart.io/v1\nkind: ACL\nmetadata: {{tenant: {tenant}}}\nspec:\n  rules:\n    - principal: \"role:admin\"\n      resource: \"secret:*\"\n      permissions: [secret_read, secret_write]\n    - principal: \"approle:bench\"\n      resource: \"secret:bench/*\"\n      permissions: [secret_read]\n    - principal: \"approle:bench\"\n      resource: \"secret:bench/load/*\"\n      permissions: [secret_write]\n"
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
    let mut tcfg = ClientConfig::default().with_ca(ca);
    tcfg.token = Some(token.clone());
    let t = AdminClient::new(url, &tcfg).map_err(describe)?;
    must(
        t.call("POST", READ_PATH, Some(&seed_data())).await,
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
    let (role_id, secret_id) = approle_ids(&t).await?;
    Ok(Setup {
        url: url.to_string(),
        ca: ca.to_path_buf(),
        token,
        role_id,
        secret_id,
    })
}

/// Makes [`READ_PATH`] keep exactly `versions` versions, each with a value
/// of `value_bytes` bytes (the usual short one when 0): sets its
/// `max_versions`, then writes it that many times.
async fn rewrite_read_secret(s: &Setup, versions: u32, value_bytes: u32) -> Result<(), Failure> {
    let t = s.admin()?;
    let metadata = read_metadata_path();
    let max = json!({ "max_versions": versions });
    must(t.call("POST", &metadata, Some(&max)).await, "max_versions").await?;
    for v in 0..versions {
        let mut data = seed_data();
        if value_bytes > 0 {
            // Printable, and different in every version.
            let text: String = (0..value_bytes)
                .map(|i| char::from(b'a' + ((i + v) % 26) as u8))
                .collect();
            data["data"]["password"] = Value::String(text);
        }
        must(t.call("POST", READ_PATH, Some(&data)).await, "version").await?;
    }
    Ok(())
}

/// The role id and a new secret id of the AppRole `bench`, through `t`.
pub(crate) async fn approle_ids(t: &AdminClient) -> Result<(String, Secret<String>), Failure> {
    let role_id = field(
        &must(
            t.call("GET", "/v1/auth/approle/role/bench/role-id", None)
                .await,
            "role id",
        )
        .await?,
        "/data/role_id",
        "role id",
    )?;
    let secret_id = Secret::new(field(
        &must(
            t.call("POST", "/v1/auth/approle/role/bench/secret-id", None)
                .await,
            "secret id",
        )
        .await?,
        "/data/secret_id",
        "secret id",
    )?);
    Ok((role_id, secret_id))
}

/// A token of the AppRole `bench`, from one login.
pub(crate) async fn approle_token(s: &Setup) -> Result<Secret<String>, Failure> {
    let c = AdminClient::new(&s.url, &ClientConfig::default().with_ca(&s.ca)).map_err(describe)?;
    let r = must(
        c.call(
            "POST",
            "/v1/auth/approle/login",
            Some(&json!({ "role_id": s.role_id, "secret_id": s.secret_id.expose() })),
        )
        .await,
        "AppRole login",
    )
    .await?;
    Ok(Secret::new(field(
        &r,
        "/auth/client_token",
        "AppRole login",
    )?))
}

/// What the workers of one cell did, all together.
pub(crate) struct Measured {
    /// Requests answered with a 200.
    pub(crate) ok: u64,
    /// Other answers, and requests that got none.
    pub(crate) errors: u64,
    /// The first error, if any.
    pub(crate) first_error: Option<String>,
    pub(crate) seconds: f64,
    /// Latency of the 200s, in microseconds.
    pub(crate) hist: Histogram<u64>,
}

impl Measured {
    /// 200s per second.
    pub(crate) fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.ok as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// One worker's share of a [`Measured`].
struct Worked {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    hist: Histogram<u64>,
}

impl Worked {
    fn error(&mut self, e: String) {
        self.errors += 1;
        self.first_error.get_or_insert(e);
    }
}

/// Sends `op` requests one at a time on one kept-open connection until
/// `until`. A refused request (not a 200, including a 429: no waiting out
/// rate limits) is counted and the next one sent; a broken connection is
/// counted and opened again.
async fn worker(s: Arc<Setup>, op: Op, id: usize, until: Instant) -> Result<Worked, Failure> {
    let mut cfg = ClientConfig::default()
        .with_ca(&s.ca)
        .with_rate_limit_max_wait(Duration::ZERO);
    if op != Op::Login {
        cfg.token = Some(s.token.clone());
    }
    let client = AdminClient::new(&s.url, &cfg).map_err(describe)?;
    let mut session = client.session().await.map_err(describe)?;
    let mut w = Worked {
        ok: 0,
        errors: 0,
        first_error: None,
        hist: Histogram::<u64>::new(3).map_err(|e| Failure(e.to_string()))?,
    };
    let login = json!({ "role_id": s.role_id, "secret_id": s.secret_id.expose() });
    let path = format!("/v1/secret/data/bench/load/w{id}");
    let mut n = 0u64;
    while Instant::now() < until {
        let started = Instant::now();
        let r = match op {
            Op::Read => session.call("GET", READ_PATH, None).await,
            Op::Login => {
                session
                    .call("POST", "/v1/auth/approle/login", Some(&login))
                    .await
            }
            Op::Write => {
                let body = json!({ "data": { "n": n, "worker": id } });
                session.call("POST", &path, Some(&body)).await
            }
        };
        n += 1;
        match r {
            Ok(r) if r.status == 200 => {
                let _ = w.hist.record(started.elapsed().as_micros() as u64);
                w.ok += 1;
            }
            Ok(r) => w.error(format!(
                "{} answered HTTP {}: {}",
                op.as_str(),
                r.status,
                r.error()
            )),
            Err(e) => {
                w.error(format!("{}: {}", op.as_str(), describe(e).0));
                match client.session().await {
                    Ok(s) => session = s,
                    Err(e) => {
                        w.error(format!("{}: reconnecting: {}", op.as_str(), describe(e).0));
                        break;
                    }
                }
            }
        }
    }
    Ok(w)
}

/// `concurrency` workers sending `op` for `window`, each on its own
/// kept-open connection.
pub(crate) async fn measure(
    s: &Arc<Setup>,
    op: Op,
    concurrency: usize,
    window: Duration,
) -> Result<Measured, Failure> {
    let started = Instant::now();
    let until = started + window;
    let tasks: Vec<_> = (0..concurrency)
        .map(|id| tokio::spawn(worker(s.clone(), op, id, until)))
        .collect();
    let mut results = Vec::with_capacity(concurrency);
    for t in tasks {
        results.push(
            t.await
                .map_err(|e| Failure(format!("worker failed: {e}")))?,
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut m = Measured {
        ok: 0,
        errors: 0,
        first_error: None,
        seconds,
        hist: Histogram::<u64>::new(3).map_err(|e| Failure(e.to_string()))?,
    };
    for r in results {
        let w = r?;
        m.ok += w.ok;
        m.errors += w.errors;
        if m.first_error.is_none() {
            m.first_error = w.first_error;
        }
        m.hist.add(&w.hist).map_err(|e| Failure(e.to_string()))?;
    }
    Ok(m)
}

pub(crate) async fn run(a: VaultArgs) -> Result<ExitCode, Failure> {
    if a.ops.is_empty() || a.concurrency.is_empty() || a.concurrency.contains(&0) {
        return Err(Failure(
            "--ops and --concurrency need positive values".into(),
        ));
    }
    let server = LocalServer::start_with(a.audit == super::OnOff::On, true, false)?;
    let http = server
        .http
        .ok_or_else(|| Failure("bench server has no HTTPS API".into()))?;
    let s = Arc::new(rampart_setup(&format!("https://{http}"), &server.ca, &server.key).await?);
    if a.versions > 1 || a.value_bytes > 0 {
        rewrite_read_secret(&s, a.versions, a.value_bytes).await?;
    }
    let mut rows = Vec::new();
    for &op in &a.ops {
        for &c in &a.concurrency {
            let m = measure(&s, op, c, Duration::from_secs(a.duration_secs.max(1))).await?;
            if m.errors > 0 {
                return Err(Failure(format!(
                    "vault {} x {c}: {} of {} requests failed; the first: {}",
                    op.as_str(),
                    m.errors,
                    m.ok + m.errors,
                    m.first_error.unwrap_or_default()
                )));
            }
            if a.format == Format::Table {
                eprintln!("bench: vault {} x {c}: {:.0} req/s", op.as_str(), m.rate());
            }
            rows.push(Row {
                op,
                concurrency: c,
                requests: m.ok,
                seconds: m.seconds,
                p50_us: m.hist.value_at_quantile(0.5),
                p99_us: m.hist.value_at_quantile(0.99),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `--versions` and `--value-bytes` leave the read secret of a real
    /// server with exactly that many versions, each value that long.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_read_secret_gets_the_versions_and_size_asked_for() {
        let server = LocalServer::start_with(true, true, false).unwrap();
        let http = server.http.expect("https");
        let s = rampart_setup(&format!("https://{http}"), &server.ca, &server.key)
            .await
            .unwrap();
        rewrite_read_secret(&s, 3, 100).await.unwrap();
        let t = s.admin().unwrap();
        let r = must(t.call("GET", READ_PATH, None).await, "read")
            .await
            .unwrap();
        let value = r["data"]["data"]["password"].as_str().unwrap();
        assert_eq!(value.len(), 100);
        assert_eq!(
            r["data"]["metadata"]["version"], 4,
            "the seed and three more"
        );
        let metadata = read_metadata_path();
        let m = must(t.call("GET", &metadata, None).await, "metadata")
            .await
            .unwrap();
        let kept: Vec<&String> = m["data"]["versions"].as_object().unwrap().keys().collect();
        assert_eq!(kept, ["2", "3", "4"]);
        let r = must(
            t.call("GET", &format!("{READ_PATH}?version=2"), None).await,
            "v2",
        )
        .await
        .unwrap();
        let older = r["data"]["data"]["password"].as_str().unwrap();
        assert_eq!(older.len(), 100);
        assert_ne!(older, value, "every version differs");
    }
}
