//! `rampart bench abuse`: how well one tenant's service holds up while
//! someone else misbehaves (issue 8). `--scenario noisy` measures tenant B's
//! publish-to-delivery latency (p50/p99/p999, from a send timestamp in each
//! payload) and delivered throughput at a fixed offered rate, first alone,
//! then while tenant A publishes flat out on several connections and is held
//! to its `publish_msgs_per_sec` by the server (A's client backs off as
//! told; its waits are counted). `--scenario flood` measures legitimate
//! clients' p99 alone and then while thousands of unauthenticated TCP
//! connections from 127.0.0.2-255 sit idle on the wire port and a few
//! hundred more send garbage, and reports what became of those connections
//! and the server's peak memory. The server is a child `rampart server
//! --dev` process on 127.0.0.1 with ephemeral ports (so its file
//! descriptors and memory are its own); everything is bounded in count and
//! time and stops by itself. The aims are printed as met or not; nothing is
//! asserted.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use rampart_client::{Client, ClientConfig, Subscription};
use rampart_identity::Secret;
use rampart_limits::RateKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::Net;
use crate::cmd_client::describe;
use crate::Failure;

const NS: &str = "bench";
/// Publishes of one measured publisher awaiting their ACK at most; past
/// that the offered rate is not kept (the shortfall shows in "got").
const MAX_IN_FLIGHT: usize = 4096;
/// How long after its window a phase waits for the last deliveries.
const DRAIN: Duration = Duration::from_secs(2);
/// How long the flood may take to set up before it is measured anyway.
const RAMP_LIMIT: Duration = Duration::from_secs(15);
/// A flood connection closed within this of connecting counts as refused.
const AT_ONCE: Duration = Duration::from_secs(1);
/// File descriptors kept for everything but the flood.
const FD_RESERVE: u64 = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Scenario {
    /// A noisy tenant next to a quiet one.
    Noisy,
    /// Unauthenticated connections and garbage next to legitimate clients.
    Flood,
}

#[derive(Debug, clap::Args)]
pub(crate) struct AbuseArgs {
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// Seconds each measured phase lasts.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Payload size in bytes (at least 8: the send timestamp).
    #[arg(long, default_value_t = 128)]
    size: usize,
    /// Offered rate of the measured publishers, messages per second in all
    /// (noisy: tenant B's one publisher; flood: split over 2 publishers).
    #[arg(long, default_value_t = 2_000)]
    rate: u64,
    /// Transport of the measured clients and of tenant A.
    #[arg(long, value_enum, default_value = "tcp")]
    transport: Net,
    /// noisy: `publish_msgs_per_sec` of every tenant (config default).
    #[arg(long, default_value_t = 50_000)]
    tenant_rate: u64,
    /// noisy: tenant A's connections publishing as fast as they can.
    #[arg(long, default_value_t = 4)]
    noisy_connections: usize,
    /// noisy: messages per batch of tenant A.
    #[arg(long, default_value_t = 64)]
    noisy_batch: usize,
    /// noisy: batches each of A's connections keeps in flight.
    #[arg(long, default_value_t = 16)]
    noisy_window: usize,
    /// flood: first measure the same flood aimed at a second server
    /// process (a control for what the flood costs the machine).
    #[arg(long)]
    control: bool,
    /// noisy: A ignores the server's retry-after and sends again at once
    /// (a misbehaving client; its refusals count as errors).
    #[arg(long)]
    noisy_ignores_backoff: bool,
    /// flood: idle unauthenticated connections held open at once.
    #[arg(long, default_value_t = 10_000)]
    idle: usize,
    /// flood: connections that send garbage after connecting.
    #[arg(long, default_value_t = 200)]
    garbage: usize,
    /// flood: idle connection attempts in flight at once. The server's
    /// listen queue overflows under a burst and the kernel then retries a
    /// connect only after 1 s, so fewer than ~1000 cannot set up 10,000
    /// connections before its handshake timeout closes the first ones.
    #[arg(long, default_value_t = 1024)]
    flood_concurrency: usize,
}

pub(crate) async fn run(a: AbuseArgs) -> Result<ExitCode, Failure> {
    if a.size < 8 {
        return Err(Failure(
            "--size must be at least 8 bytes (timestamp)".into(),
        ));
    }
    if a.seconds == 0 || a.rate == 0 {
        return Err(Failure("--seconds and --rate must be positive".into()));
    }
    match a.scenario {
        Scenario::Noisy => {
            if a.noisy_connections == 0 || a.noisy_batch == 0 || a.noisy_window == 0 {
                return Err(Failure(
                    "--noisy-connections, --noisy-batch and --noisy-window must be positive".into(),
                ));
            }
            noisy(&a).await?;
        }
        Scenario::Flood => flood(&a).await?,
    }
    Ok(ExitCode::SUCCESS)
}

// === child server ===

/// A `rampart server --dev` child process with a throwaway data directory,
/// listening on 127.0.0.1 ephemeral ports.
pub(crate) struct ChildServer {
    child: std::process::Child,
    tcp: SocketAddr,
    quic: SocketAddr,
    /// The HTTPS API, unless `RAMPART_HTTP_BIND` turned it off.
    https: Option<SocketAddr>,
    ca: PathBuf,
    _dir: tempfile::TempDir,
}

impl ChildServer {
    /// `keys`: `tenant:key` pairs; `env`: extra `RAMPART_*` settings.
    pub(crate) async fn start(keys: &str, env: &[(&str, String)]) -> Result<Self, Failure> {
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        let out_path = dir.path().join("server.out");
        let err_path = dir.path().join("server.err");
        let mut cmd = std::process::Command::new(std::env::current_exe()?);
        cmd.arg("server").arg("--dev").arg("--data-dir").arg(&data);
        // Only the settings given here: none from the caller's environment.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("RAMPART_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("RAMPART_QUIC_BIND", "127.0.0.1:0")
            .env("RAMPART_TCP_BIND", "127.0.0.1:0")
            .env("RAMPART_HTTP_BIND", "127.0.0.1:0")
            .env("RAMPART_SHUTDOWN_DRAIN_SECS", "0")
            .env("RAMPART_API_KEYS", keys)
            .env("RUST_LOG", "warn");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_path)?)
            .stderr(std::fs::File::create(&err_path)?);
        let mut child = cmd.spawn()?;
        let started = Instant::now();
        let (tcp, quic, https) = loop {
            let out = std::fs::read_to_string(&out_path).unwrap_or_default();
            let addr = |prefix: &str| {
                out.lines()
                    .find_map(|l| l.strip_prefix(prefix))
                    .and_then(|a| a.trim().parse::<SocketAddr>().ok())
            };
            // The dev-mode lines come after every "listening on" line.
            if let (Some(t), Some(q), true) = (
                addr("rampart: tls listening on "),
                addr("rampart: quic listening on "),
                out.contains("rampart: dev mode"),
            ) {
                break (t, q, addr("rampart: https listening on "));
            }
            let exited = child.try_wait()?;
            if exited.is_some() || started.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                let _ = child.wait();
                let err = std::fs::read_to_string(&err_path).unwrap_or_default();
                let tail: Vec<&str> = err.lines().rev().take(10).collect();
                return Err(Failure(format!(
                    "the bench server did not start ({}): {}",
                    exited.map_or("no addresses after 30 s".to_string(), |s| s.to_string()),
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Ok(Self {
            child,
            tcp,
            quic,
            https,
            ca: data.join("dev").join("ca.crt"),
            _dir: dir,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// [`ChildServer::start`] presenting `cert` and `key` instead of its
    /// dev certificate, trusted through `ca` (bench compare gives every
    /// server of a run the same certificate).
    pub(crate) async fn start_with_tls(
        keys: &str,
        env: &[(&str, String)],
        cert: &Path,
        key: &Path,
        ca: &Path,
    ) -> Result<Self, Failure> {
        let mut env = env.to_vec();
        env.push(("RAMPART_TLS_CERT_PATH", cert.display().to_string()));
        env.push(("RAMPART_TLS_KEY_PATH", key.display().to_string()));
        let mut server = Self::start(keys, &env).await?;
        server.ca = ca.to_path_buf();
        Ok(server)
    }

    pub(crate) fn url(&self, net: Net) -> String {
        match net {
            Net::Tcp => format!("tls://{}", self.tcp),
            Net::Quic => format!("quic://{}", self.quic),
        }
    }

    /// The TCP+TLS listener's address.
    pub(crate) fn tcp_addr(&self) -> SocketAddr {
        self.tcp
    }

    /// `https://host:port` of the HTTPS API (the Vault-compatible one), if
    /// it listens.
    pub(crate) fn https_url(&self) -> Option<String> {
        self.https.map(|a| format!("https://{a}"))
    }

    /// The dev CA that verifies the server (PEM).
    pub(crate) fn ca(&self) -> &std::path::Path {
        &self.ca
    }

    pub(crate) fn config(&self, key: &Secret<String>) -> ClientConfig {
        let mut c = ClientConfig::default().with_ca(&self.ca);
        c.api_key = Some(key.clone());
        c
    }

    /// A `/proc/<pid>/status` field in KiB (`VmRSS`, `VmHWM`).
    pub(crate) fn memory_kib(&self, field: &str) -> Option<u64> {
        proc_status_kib(&format!("/proc/{}/status", self.pid()), field)
    }

    /// Asks the server to shut down (SIGTERM), then kills it if it has not
    /// within 10 s.
    pub(crate) async fn stop(mut self) {
        stop_child(&mut self.child, "the server", Duration::from_secs(10)).await;
    }
}

/// Sends SIGTERM to a bench child process and waits up to `grace` for it
/// to exit (after that, the caller's Drop kills it).
pub(crate) async fn stop_child(child: &mut std::process::Child, what: &str, grace: Duration) {
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let until = Instant::now() + grace;
    while Instant::now() < until {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "bench: {what} did not stop within {} s; killing it",
        grace.as_secs()
    );
}

/// Kills a bench child process that is still running.
pub(crate) fn kill_child(child: &mut std::process::Child) {
    if matches!(child.try_wait(), Ok(None)) {
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}

pub(crate) fn proc_status_kib(path: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("unknown".into(), |k| {
        format!("{:.1} MiB", k as f64 / 1024.0)
    })
}

// === measured phase ===

/// One measured phase: publish-to-delivery latency and throughput of
/// publishers held to an offered rate.
struct Phase {
    hist: Histogram<u64>,
    asked: f64,
    seconds: f64,
    acked: u64,
    errors: u64,
    first_error: Option<String>,
    delivered: u64,
    /// Delivered by the end of the window.
    in_window: u64,
    missed: u64,
    /// CPU used over the window, in % of one core: the server, this
    /// process (all its clients).
    server_cpu: Option<f64>,
    bench_cpu: Option<f64>,
}

impl Phase {
    fn got(&self) -> f64 {
        self.in_window as f64 / self.seconds
    }

    fn q(&self, q: f64) -> u64 {
        self.hist.value_at_quantile(q)
    }

    fn print(&self, label: &str) {
        let pct = |c: Option<f64>| c.map_or("?".to_string(), |c| format!("{c:.0}%"));
        println!(
            "{:<22} {:>9} {:>9} {:>9} {:>10.0} {:>10.0} {:>8.1}% {:>8} {:>9}",
            label,
            self.q(0.50),
            self.q(0.99),
            self.q(0.999),
            self.asked,
            self.got(),
            self.got() / self.asked * 100.0,
            pct(self.server_cpu),
            pct(self.bench_cpu)
        );
        if self.errors > 0 || self.delivered < self.acked || self.missed > 0 {
            println!(
                "{:<22} {} publish(es) failed{}; {} acked, {} delivered, {} dropped by the server",
                "",
                self.errors,
                self.first_error
                    .as_ref()
                    .map_or(String::new(), |e| format!(" (first: {e})")),
                self.acked,
                self.delivered,
                self.missed
            );
        }
    }
}

fn phase_header() {
    println!(
        "{:<22} {:>9} {:>9} {:>9} {:>10} {:>10} {:>9} {:>8} {:>9}",
        "phase",
        "p50 us",
        "p99 us",
        "p999 us",
        "asked/s",
        "got/s",
        "got/asked",
        "srv cpu",
        "bench cpu"
    );
}

#[derive(Default)]
struct Outcomes {
    acked: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

/// CPU time (user + system) of a process so far, from `/proc/<pid>/stat`.
fn cpu_time(pid: &str) -> Option<Duration> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is
    // field 3, utime 14, stime 15, in clock ticks (USER_HZ, 100 on Linux).
    let rest = &text[text.rfind(')')? + 1..];
    let mut f = rest.split_whitespace().skip(11);
    let ticks = f.next()?.parse::<u64>().ok()? + f.next()?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// CPU used by the server and by this process from `since` on, in % of
/// one core.
struct CpuMeter {
    server: String,
    at: Instant,
    server_start: Option<Duration>,
    self_start: Option<Duration>,
}

impl CpuMeter {
    fn start(server_pid: u32) -> Self {
        let server = server_pid.to_string();
        Self {
            server_start: cpu_time(&server),
            self_start: cpu_time("self"),
            server,
            at: Instant::now(),
        }
    }

    fn read(&self) -> (Option<f64>, Option<f64>) {
        let secs = self.at.elapsed().as_secs_f64();
        let pct = |start: Option<Duration>, now: Option<Duration>| {
            Some((now?.saturating_sub(start?)).as_secs_f64() / secs * 100.0)
        };
        (
            pct(self.server_start, cpu_time(&self.server)),
            pct(self.self_start, cpu_time("self")),
        )
    }
}

/// Publishes on `pubs` at `rate` messages per second in all, for `window`,
/// to a fresh stream that `sub_client` subscribes to, and measures.
#[allow(clippy::too_many_arguments)]
async fn measure(
    server_pid: u32,
    pubs: &[Arc<Client>],
    sub_client: &Client,
    tenant: &str,
    stream: &str,
    rate: u64,
    size: usize,
    window: Duration,
) -> Result<Phase, Failure> {
    let sub = sub_client
        .subscribe(tenant, NS, stream)
        .await
        .map_err(describe)?;
    let outcomes = Arc::new(Outcomes::default());
    let (done_tx, done_rx) = watch::channel(false);
    let epoch = Instant::now();
    let cpu = CpuMeter::start(server_pid);
    let collector = tokio::spawn(collect(sub, epoch, window, outcomes.clone(), done_rx));
    let per_publisher = rate as f64 / pubs.len().max(1) as f64;
    let mut tasks = Vec::new();
    for c in pubs {
        tasks.push(tokio::spawn(pace(
            c.clone(),
            tenant.to_string(),
            stream.to_string(),
            per_publisher,
            size,
            epoch,
            window,
            outcomes.clone(),
        )));
    }
    for t in tasks {
        t.await.map_err(|e| Failure(e.to_string()))?;
    }
    let (server_cpu, bench_cpu) = cpu.read();
    let _ = done_tx.send(true);
    let (hist, delivered, in_window, missed) =
        collector.await.map_err(|e| Failure(e.to_string()))??;
    let first_error = outcomes
        .first_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    Ok(Phase {
        hist,
        asked: rate as f64,
        seconds: window.as_secs_f64(),
        acked: outcomes.acked.load(Ordering::Relaxed),
        errors: outcomes.errors.load(Ordering::Relaxed),
        first_error,
        delivered,
        in_window,
        missed,
        server_cpu,
        bench_cpu,
    })
}

/// One publisher at a fixed offered rate: message `i` goes out at
/// `i / rate` seconds, whether or not earlier ones were acknowledged.
#[allow(clippy::too_many_arguments)]
async fn pace(
    client: Arc<Client>,
    tenant: String,
    stream: String,
    rate: f64,
    size: usize,
    epoch: Instant,
    window: Duration,
    outcomes: Arc<Outcomes>,
) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut i = 0u64;
    loop {
        let due = Duration::from_secs_f64(i as f64 / rate);
        if due >= window {
            break;
        }
        if let Some(wait) = due.checked_sub(epoch.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let mut payload = vec![0x42u8; size];
        let sent = epoch.elapsed().as_nanos() as u64;
        payload[..8].copy_from_slice(&sent.to_le_bytes());
        let (c, t, s, o) = (
            client.clone(),
            tenant.clone(),
            stream.clone(),
            outcomes.clone(),
        );
        tokio::spawn(async move {
            match c.publish(&t, NS, &s, payload).await {
                Ok(_) => {
                    o.acked.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    o.errors.fetch_add(1, Ordering::Relaxed);
                    let mut first = o.first_error.lock().unwrap_or_else(|e| e.into_inner());
                    if first.is_none() {
                        *first = Some(e.to_string());
                    }
                }
            }
            drop(permit);
        });
        i += 1;
    }
    // The last acknowledgements, within bounds.
    let _ = tokio::time::timeout(DRAIN, in_flight.acquire_many(MAX_IN_FLIGHT as u32)).await;
}

/// Receives a phase's messages until the publishers are done and every
/// acknowledged message arrived, or `DRAIN` after that.
async fn collect(
    mut sub: Subscription,
    epoch: Instant,
    window: Duration,
    outcomes: Arc<Outcomes>,
    mut done: watch::Receiver<bool>,
) -> Result<(Histogram<u64>, u64, u64, u64), Failure> {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut got, mut in_window) = (0u64, 0u64);
    let mut drain_until: Option<Instant> = None;
    loop {
        if let Some(d) = drain_until {
            if got >= outcomes.acked.load(Ordering::Relaxed) || Instant::now() >= d {
                break;
            }
        }
        tokio::select! {
            b = sub.next_batch() => {
                let Some(b) = b else { break };
                let now = epoch.elapsed();
                let now_ns = now.as_nanos() as u64;
                for p in b.payloads() {
                    if p.len() >= 8 {
                        let mut ts = [0u8; 8];
                        ts.copy_from_slice(&p[..8]);
                        let us = now_ns.saturating_sub(u64::from_le_bytes(ts)) / 1000;
                        hist.saturating_record(us.max(1));
                    }
                    got += 1;
                    if now <= window {
                        in_window += 1;
                    }
                }
            }
            _ = done.changed(), if drain_until.is_none() => {
                drain_until = Some(Instant::now() + DRAIN);
            }
            _ = tokio::time::sleep(Duration::from_millis(20)), if drain_until.is_some() => {}
        }
    }
    let missed = sub.missed();
    Ok((hist, got, in_window, missed))
}

fn cpu_note() {
    println!(
        "(srv cpu, bench cpu: % of one core used over the window by the server and by this process, all clients included; {} cores here)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "NOT met"
    }
}

pub(crate) fn new_key() -> Result<Secret<String>, Failure> {
    rampart_identity::generate_api_key("rk_bench_").map_err(|e| Failure(e.to_string()))
}

// === noisy ===

/// Tenant A: connections publishing batches flat out, and a subscriber
/// counting what is delivered.
struct Noisy {
    clients: Vec<Arc<Client>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    sub_task: tokio::task::JoinHandle<()>,
    _sub_client: Client,
    delivered: Arc<AtomicU64>,
    outcomes: Arc<Outcomes>,
    published: Arc<AtomicU64>,
    stop: watch::Sender<bool>,
}

impl Noisy {
    async fn start(
        url: &str,
        cfg: ClientConfig,
        a: &AbuseArgs,
        tenant: &str,
    ) -> Result<Noisy, Failure> {
        let stream = "noisy";
        let sub_client = Client::connect(url, cfg.clone()).await.map_err(describe)?;
        let mut sub = sub_client
            .subscribe(tenant, NS, stream)
            .await
            .map_err(describe)?;
        let delivered = Arc::new(AtomicU64::new(0));
        let counted = delivered.clone();
        let sub_task = tokio::spawn(async move {
            while let Some(b) = sub.next_batch().await {
                counted.fetch_add(u64::from(b.count), Ordering::Relaxed);
            }
        });
        let (stop, stop_rx) = watch::channel(false);
        let outcomes = Arc::new(Outcomes::default());
        let published = Arc::new(AtomicU64::new(0));
        let payload = Bytes::from(vec![0x41u8; a.size]);
        let mut clients = Vec::new();
        let mut tasks = Vec::new();
        for _ in 0..a.noisy_connections {
            let c = Arc::new(Client::connect(url, cfg.clone()).await.map_err(describe)?);
            clients.push(c.clone());
            tasks.push(tokio::spawn(flat_out(
                c,
                tenant.to_string(),
                stream.to_string(),
                payload.clone(),
                a.noisy_batch,
                a.noisy_window,
                published.clone(),
                outcomes.clone(),
                stop_rx.clone(),
            )));
        }
        Ok(Noisy {
            clients,
            tasks,
            sub_task,
            _sub_client: sub_client,
            delivered,
            outcomes,
            published,
            stop,
        })
    }

    fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    fn backoffs(&self) -> u64 {
        self.clients.iter().map(|c| c.rate_limit_backoffs()).sum()
    }

    /// Stops publishing at once (publishes waiting out a limit are
    /// dropped).
    async fn stop(self) -> (u64, u64, u64, Option<String>) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            if tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .is_err()
            {
                eprintln!("bench: a noisy publisher did not stop within 5 s");
            }
        }
        self.sub_task.abort();
        let backoffs = self.clients.iter().map(|c| c.rate_limit_backoffs()).sum();
        let first = self
            .outcomes
            .first_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        (
            backoffs,
            self.published.load(Ordering::Relaxed),
            self.outcomes.errors.load(Ordering::Relaxed),
            first,
        )
    }
}

/// One of A's connections: `window` acknowledged batches in flight, always.
#[allow(clippy::too_many_arguments)]
async fn flat_out(
    client: Arc<Client>,
    tenant: String,
    stream: String,
    payload: Bytes,
    batch: usize,
    window: usize,
    published: Arc<AtomicU64>,
    outcomes: Arc<Outcomes>,
    mut stop: watch::Receiver<bool>,
) {
    // Dropping the set (on return) aborts what is in flight.
    let mut in_flight = JoinSet::new();
    loop {
        if *stop.borrow() {
            return;
        }
        while in_flight.len() >= window {
            tokio::select! {
                _ = in_flight.join_next() => {}
                _ = stop.changed() => return,
            }
        }
        let (c, t, s, p) = (
            client.clone(),
            tenant.clone(),
            stream.clone(),
            payload.clone(),
        );
        let (published, outcomes) = (published.clone(), outcomes.clone());
        in_flight.spawn(async move {
            match c
                .publish_batch(&t, NS, &s, std::iter::repeat_n(&p[..], batch))
                .await
            {
                Ok(n) => {
                    published.fetch_add(u64::from(n), Ordering::Relaxed);
                }
                Err(e) => {
                    outcomes.errors.fetch_add(1, Ordering::Relaxed);
                    let mut first = outcomes
                        .first_error
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    if first.is_none() {
                        *first = Some(e.to_string());
                    }
                }
            }
        });
    }
}

async fn noisy(a: &AbuseArgs) -> Result<(), Failure> {
    let (key_a, key_b) = (new_key()?, new_key()?);
    let (tenant_a, tenant_b) = ("tenant-a", "tenant-b");
    // The configured defaults, with the publish rate set: both tenants get
    // it.
    let defaults = rampart_server::Config::load(None, &|_| None)?;
    let mut limits = defaults.tenant_limits.clone();
    limits.publish_msgs_per_sec = Some(a.tenant_rate);
    if let Some(bucket) = limits.per_request(RateKind::PublishMsgs) {
        if a.noisy_batch as u64 > bucket {
            return Err(Failure(format!(
                "--noisy-batch {} is more than a tenant's whole bucket ({bucket}: --tenant-rate {} x burst {}); the server would refuse every batch with 413",
                a.noisy_batch,
                a.tenant_rate,
                limits.burst()
            )));
        }
    }
    let keys = Secret::new(format!(
        "{tenant_a}:{},{tenant_b}:{}",
        key_a.expose(),
        key_b.expose()
    ));
    let server = ChildServer::start(
        keys.expose(),
        &[("RAMPART_TENANT_LIMITS", serde_json::to_string(&limits)?)],
    )
    .await?;
    let url = server.url(a.transport);
    let window = Duration::from_secs(a.seconds);
    let b_pub = Arc::new(
        Client::connect(&url, server.config(&key_b))
            .await
            .map_err(describe)?,
    );
    let b_sub = Client::connect(&url, server.config(&key_b))
        .await
        .map_err(describe)?;

    println!(
        "rampart bench abuse --scenario noisy: {} s per phase, {} B messages, {}",
        a.seconds,
        a.size,
        transport_name(a.transport)
    );
    println!(
        "server: child process `rampart server --dev` (pid {}) on 127.0.0.1; every tenant limited to publish_msgs_per_sec={} (burst {})",
        server.pid(),
        a.tenant_rate,
        defaults.tenant_limits.burst()
    );
    println!(
        "tenant B: 1 publisher at {} msgs/s (acked, open loop) and 1 subscriber; tenant A: {} connections, batches of {}, {} in flight each, and 1 subscriber; A {}",
        a.rate,
        a.noisy_connections,
        a.noisy_batch,
        a.noisy_window,
        if a.noisy_ignores_backoff {
            "ignores retry-after and sends again at once"
        } else {
            "backs off as told"
        }
    );
    eprintln!("bench: phase 1, B alone");
    let alone = measure(
        server.pid(),
        std::slice::from_ref(&b_pub),
        &b_sub,
        tenant_b,
        "quiet-alone",
        a.rate,
        a.size,
        window,
    )
    .await?;

    eprintln!("bench: phase 2, B with A publishing flat out");
    let mut a_config = server.config(&key_a);
    if a.noisy_ignores_backoff {
        a_config = a_config.with_rate_limit_max_wait(Duration::ZERO);
    }
    let noisy = Noisy::start(&url, a_config, a, tenant_a).await?;
    // Let A reach full pressure before B is measured.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (a_before, backoffs_before, a_started) =
        (noisy.delivered(), noisy.backoffs(), Instant::now());
    let with = measure(
        server.pid(),
        std::slice::from_ref(&b_pub),
        &b_sub,
        tenant_b,
        "quiet-with-noisy",
        a.rate,
        a.size,
        window,
    )
    .await?;
    let a_secs = a_started.elapsed().as_secs_f64();
    let a_rate = (noisy.delivered() - a_before) as f64 / a_secs;
    let a_backoffs_during = noisy.backoffs() - backoffs_before;
    let (a_backoffs, a_published, a_errors, a_first_error) = noisy.stop().await;
    let peak = server.memory_kib("VmHWM");
    let pid = server.pid();
    server.stop().await;

    println!();
    phase_header();
    alone.print("B alone");
    with.print("B with A");
    println!(
        "{:<22} {:>9} {:>9} {:>9} {:>10} {:>10.0}",
        "A (noisy)", "-", "-", "-", "flat out", a_rate
    );
    cpu_note();
    println!();
    println!(
        "A: {a_backoffs} back-offs on 429 in all ({a_backoffs_during} while B was measured), {a_published} messages acknowledged, {a_errors} publish errors{}",
        a_first_error.map_or(String::new(), |e| format!(" (first: {e})"))
    );
    let p99_ratio = with.q(0.99) as f64 / alone.q(0.99).max(1) as f64;
    let share = with.got() / with.asked;
    println!(
        "B p99 with A / alone: {:.2}x (aim: within 3x): {}",
        p99_ratio,
        verdict(p99_ratio <= 3.0)
    );
    println!(
        "B throughput with A, got / asked: {:.1}% (aim: at least 80%): {}",
        share * 100.0,
        verdict(share >= 0.8)
    );
    println!(
        "server peak RSS (VmHWM of pid {pid}, the server alone): {}",
        mib(peak)
    );
    Ok(())
}

// === flood ===

/// What became of the flood's connections.
#[derive(Default)]
struct FloodCounts {
    /// Idle holders whose first connection attempt is over.
    first_done: AtomicU64,
    attempts: AtomicU64,
    connected: AtomicU64,
    connect_failed: AtomicU64,
    closed_at_once: AtomicU64,
    closed_later: AtomicU64,
    open: AtomicU64,
    peak_open: AtomicU64,
    garbage_connected: AtomicU64,
    garbage_failed: AtomicU64,
    garbage_closed: AtomicU64,
    garbage_bytes: AtomicU64,
}

impl FloodCounts {
    fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    fn opened(&self) {
        self.connected.fetch_add(1, Ordering::Relaxed);
        let now = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_open.fetch_max(now, Ordering::Relaxed);
    }
}

/// Source address of flood connection `i`: 127.0.0.2 ..= 127.0.0.255.
fn flood_source(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (i % 254) as u8))
}

async fn connect_from(src: IpAddr, to: SocketAddr) -> Option<tokio::net::TcpStream> {
    let sock = tokio::net::TcpSocket::new_v4().ok()?;
    sock.bind(SocketAddr::new(src, 0)).ok()?;
    match tokio::time::timeout(Duration::from_secs(3), sock.connect(to)).await {
        Ok(Ok(s)) => Some(s),
        _ => None,
    }
}

/// Pauses `d`, or less if the flood stops; true when it stopped.
async fn pause(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    // Done waiting (the flood stopped, or the sender is gone) or timed out.
    tokio::time::timeout(d, stop.wait_for(|s| *s)).await.is_ok()
}

/// Holds one unauthenticated connection open, sending nothing; connects
/// again 250 ms after the server closes it, until the flood stops.
async fn hold(
    src: IpAddr,
    to: SocketAddr,
    counts: Arc<FloodCounts>,
    ramp: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
    let mut first = true;
    while !*stop.borrow() {
        let permit = ramp.acquire().await;
        counts.attempts.fetch_add(1, Ordering::Relaxed);
        let conn = connect_from(src, to).await;
        drop(permit);
        if first {
            counts.first_done.fetch_add(1, Ordering::Relaxed);
            first = false;
        }
        let Some(mut conn) = conn else {
            counts.connect_failed.fetch_add(1, Ordering::Relaxed);
            if pause(&mut stop, Duration::from_millis(250)).await {
                return;
            }
            continue;
        };
        counts.opened();
        let since = Instant::now();
        let mut buf = [0u8; 256];
        let stopped = loop {
            tokio::select! {
                r = conn.read(&mut buf) => match r {
                    Ok(0) | Err(_) => break false,
                    Ok(_) => {}
                },
                _ = stop.wait_for(|s| *s) => break true,
            }
        };
        counts.open.fetch_sub(1, Ordering::Relaxed);
        if stopped {
            return;
        }
        if since.elapsed() < AT_ONCE {
            counts.closed_at_once.fetch_add(1, Ordering::Relaxed);
        } else {
            counts.closed_later.fetch_add(1, Ordering::Relaxed);
        }
        if pause(&mut stop, Duration::from_millis(250)).await {
            return;
        }
    }
}

/// Connects and writes 512 bytes of garbage every 10 ms until the server
/// closes the connection, then connects again, until the flood stops.
async fn spew(
    src: IpAddr,
    to: SocketAddr,
    counts: Arc<FloodCounts>,
    mut stop: watch::Receiver<bool>,
) {
    let mut junk = [0u8; 512];
    let mut x = 0x2545_F491_4F6C_DD1Du64
        ^ u64::from(u32::from(match src {
            IpAddr::V4(v) => v,
            IpAddr::V6(_) => Ipv4Addr::LOCALHOST,
        }));
    for b in junk.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    // Not a TLS handshake record, so the server cannot mistake it for one.
    junk[0] = 0xff;
    while !*stop.borrow() {
        let Some(mut conn) = connect_from(src, to).await else {
            counts.garbage_failed.fetch_add(1, Ordering::Relaxed);
            if pause(&mut stop, Duration::from_millis(250)).await {
                return;
            }
            continue;
        };
        counts.garbage_connected.fetch_add(1, Ordering::Relaxed);
        loop {
            let written = tokio::select! {
                r = conn.write_all(&junk) => r.is_ok(),
                _ = stop.wait_for(|s| *s) => return,
            };
            if !written {
                counts.garbage_closed.fetch_add(1, Ordering::Relaxed);
                break;
            }
            counts
                .garbage_bytes
                .fetch_add(junk.len() as u64, Ordering::Relaxed);
            if pause(&mut stop, Duration::from_millis(10)).await {
                return;
            }
        }
        if pause(&mut stop, Duration::from_millis(50)).await {
            return;
        }
    }
}

fn transport_name(t: Net) -> &'static str {
    match t {
        Net::Tcp => "TLS/TCP",
        Net::Quic => "QUIC",
    }
}

/// Lowers the calling thread's scheduling priority (Linux sets the nice
/// value per thread); best effort.
fn renice_this_thread(nice: i32) {
    #[cfg(target_os = "linux")]
    {
        let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), nice);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

/// A running flood: idle holders and garbage senders on a runtime of their
/// own. Its ten thousand tasks do not queue ahead of the legitimate
/// clients' in this process, and its thread runs at nice 19: on a real
/// network the attacker's CPU is not the server's, and on a 2-core machine
/// an attacker thread holding a core for a timeslice would be measured as
/// server latency.
struct Flood {
    tasks: JoinSet<()>,
    rt: tokio::runtime::Runtime,
    stop: watch::Sender<bool>,
    counts: Arc<FloodCounts>,
    ramp_secs: f64,
}

impl Flood {
    async fn start(
        target: SocketAddr,
        idle: usize,
        garbage: usize,
        concurrency: usize,
    ) -> Result<Flood, Failure> {
        let counts = Arc::new(FloodCounts::default());
        let (stop, stop_rx) = watch::channel(false);
        let ramp = Arc::new(Semaphore::new(concurrency.max(1)));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .on_thread_start(|| renice_this_thread(19))
            .enable_all()
            .build()
            .map_err(|e| format!("flood runtime: {e}"))?;
        let mut tasks = JoinSet::new();
        let started = Instant::now();
        for i in 0..idle {
            tasks.spawn_on(
                hold(
                    flood_source(i),
                    target,
                    counts.clone(),
                    ramp.clone(),
                    stop_rx.clone(),
                ),
                rt.handle(),
            );
        }
        for i in 0..garbage {
            tasks.spawn_on(
                spew(flood_source(i), target, counts.clone(), stop_rx.clone()),
                rt.handle(),
            );
        }
        while FloodCounts::get(&counts.first_done) < idle as u64 && started.elapsed() < RAMP_LIMIT {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Flood {
            tasks,
            rt,
            stop,
            counts,
            ramp_secs: started.elapsed().as_secs_f64(),
        })
    }

    async fn stop(mut self) {
        let _ = self.stop.send(true);
        let stopping = Instant::now();
        while !self.tasks.is_empty() && stopping.elapsed() < Duration::from_secs(5) {
            let _ = tokio::time::timeout(Duration::from_millis(100), self.tasks.join_next()).await;
        }
        self.tasks.shutdown().await;
        self.rt.shutdown_background();
    }
}

/// `TcpExt: ListenOverflows` from /proc/net/netstat: connection attempts
/// dropped because a listen queue was full (whole network namespace).
fn listen_overflows() -> Option<u64> {
    netstat_field(
        &std::fs::read_to_string("/proc/net/netstat").ok()?,
        "TcpExt",
        "ListenOverflows",
    )
}

/// A field of /proc/net/netstat: a line of names, then a line of values,
/// both starting with `group:`.
fn netstat_field(text: &str, group: &str, name: &str) -> Option<u64> {
    let prefix = format!("{group}:");
    let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
    let names = lines.next()?;
    let values = lines.next()?;
    let i = names.split_whitespace().position(|n| n == name)?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// Soft and hard limits on open files of this process.
fn nofile() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let mut v = line["Max open files".len()..]
        .split_whitespace()
        .map(|s| s.parse::<u64>().unwrap_or(u64::MAX));
    Some((v.next()?, v.next()?))
}

/// Raises the soft limit on open files to the hard one with `prlimit`
/// (util-linux), which the server child then inherits. Returns the soft
/// limit in force and a note on what happened.
fn raise_nofile() -> (u64, String) {
    let Some((soft, hard)) = nofile() else {
        return (
            1024,
            "could not read /proc/self/limits; assuming 1024 open files".into(),
        );
    };
    if soft >= hard {
        return (soft, format!("open files: soft limit {soft} = hard limit"));
    }
    let target = if hard == u64::MAX {
        "unlimited".to_string()
    } else {
        hard.to_string()
    };
    let ok = std::process::Command::new("prlimit")
        .arg("--pid")
        .arg(std::process::id().to_string())
        .arg(format!("--nofile={target}:{target}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    match nofile() {
        Some((now, _)) if ok && now > soft => (
            now,
            format!("open files: soft limit raised from {soft} to {now} (prlimit)"),
        ),
        _ => (
            soft,
            format!("open files: could not raise the soft limit {soft} to the hard limit {hard} (prlimit failed)"),
        ),
    }
}

async fn flood(a: &AbuseArgs) -> Result<(), Failure> {
    let (soft, note) = raise_nofile();
    // This process holds every flood connection; the server child (same
    // limit) holds the ones it accepted.
    let fits = soft.saturating_sub(FD_RESERVE + a.garbage as u64);
    let idle = if (a.idle as u64) > fits {
        println!(
            "NOTE: {} idle connections do not fit the open-file limit of {soft} (with {} garbage connections and {FD_RESERVE} spare); the flood is capped at {fits} idle connections",
            a.idle, a.garbage
        );
        fits as usize
    } else {
        a.idle
    };
    let key = new_key()?;
    let tenant = "legit";
    let keys = Secret::new(format!("{tenant}:{}", key.expose()));
    let server = ChildServer::start(keys.expose(), &[]).await?;
    let url = server.url(a.transport);
    let defaults = rampart_server::Config::load(None, &|_| None)?;
    let window = Duration::from_secs(a.seconds);

    println!(
        "rampart bench abuse --scenario flood: {} s per phase, {} B messages, {}; {note}",
        a.seconds,
        a.size,
        transport_name(a.transport)
    );
    println!(
        "server: child process `rampart server --dev` (pid {}) on 127.0.0.1, default admission settings: max_connections_per_ip={}, max_unauthenticated_per_ip={}, new_connections_per_ip_per_sec={}, auth_timeout_ms={}",
        server.pid(),
        defaults.max_connections_per_ip,
        defaults.max_unauthenticated_per_ip,
        defaults.new_connections_per_ip_per_sec,
        defaults.auth_timeout_ms
    );
    println!(
        "legitimate clients from 127.0.0.1: 2 publishers at {} msgs/s in all (acked, open loop), 1 subscriber; flood from 127.0.0.2-255 to the wire TCP port {}: {} idle, {} garbage (generated by a thread of this process at nice 19)",
        a.rate, server.tcp, idle, a.garbage
    );

    let mut pubs = Vec::new();
    for _ in 0..2 {
        pubs.push(Arc::new(
            Client::connect(&url, server.config(&key))
                .await
                .map_err(describe)?,
        ));
    }
    let sub = Client::connect(&url, server.config(&key))
        .await
        .map_err(describe)?;

    eprintln!("bench: baseline");
    let baseline = measure(
        server.pid(),
        &pubs,
        &sub,
        tenant,
        "baseline",
        a.rate,
        a.size,
        window,
    )
    .await?;
    let rss_before = server.memory_kib("VmRSS");

    // The control: the same flood aimed at a second server process, while
    // the legitimate clients keep using the first. It shows what the flood
    // costs this machine (2 shared cores) apart from what it costs the
    // server under test.
    let control = if a.control {
        let decoy = ChildServer::start(keys.expose(), &[]).await?;
        eprintln!(
            "bench: control: the flood aimed at a second server (pid {})",
            decoy.pid()
        );
        let f = Flood::start(decoy.tcp, idle, a.garbage, a.flood_concurrency).await?;
        let m = measure(
            server.pid(),
            &pubs,
            &sub,
            tenant,
            "control",
            a.rate,
            a.size,
            window,
        )
        .await?;
        f.stop().await;
        decoy.stop().await;
        Some(m)
    } else {
        None
    };

    eprintln!(
        "bench: flood: opening {idle} idle and {} garbage connections",
        a.garbage
    );
    let overflows_before = listen_overflows();
    let flood = Flood::start(server.tcp, idle, a.garbage, a.flood_concurrency).await?;
    let counts = flood.counts.clone();
    let ramp_secs = flood.ramp_secs;
    let open_at_start = FloodCounts::get(&counts.open);
    eprintln!("bench: flood: {open_at_start} open after {ramp_secs:.1} s; measuring");
    let flooded = measure(
        server.pid(),
        &pubs,
        &sub,
        tenant,
        "flooded",
        a.rate,
        a.size,
        window,
    )
    .await?;
    let open_at_end = FloodCounts::get(&counts.open);
    let overflows = listen_overflows()
        .zip(overflows_before)
        .map(|(after, before)| after.saturating_sub(before));
    let peak = server.memory_kib("VmHWM");
    let rss_during = server.memory_kib("VmRSS");
    flood.stop().await;
    let pid = server.pid();
    drop(pubs);
    drop(sub);
    server.stop().await;

    let c = &counts;
    let g = FloodCounts::get;
    println!();
    phase_header();
    baseline.print("baseline");
    if let Some(c) = &control {
        c.print("flood on another server");
    }
    flooded.print("during the flood");
    cpu_note();
    println!();
    println!(
        "idle flood: {} connection attempts in all ({idle} held, each reconnecting 250 ms after a close); first wave set up in {ramp_secs:.1} s",
        g(&c.attempts)
    );
    println!(
        "  TCP connected {} | failed to connect (refused or no answer in 3 s) {}",
        g(&c.connected),
        g(&c.connect_failed)
    );
    println!(
        "  closed by the server within {} s of connecting (refused at admission) {} | closed later (handshake/auth timeout) {}",
        AT_ONCE.as_secs(),
        g(&c.closed_at_once),
        g(&c.closed_later)
    );
    println!(
        "  open at once: {open_at_start} when measuring began, {open_at_end} when it ended, {} at the peak",
        g(&c.peak_open)
    );
    println!(
        "garbage flood: {} connections made, {} failed to connect, {} closed by the server, {:.1} MiB of garbage sent",
        g(&c.garbage_connected),
        g(&c.garbage_failed),
        g(&c.garbage_closed),
        g(&c.garbage_bytes) as f64 / (1024.0 * 1024.0)
    );
    println!(
        "kernel: {} connection attempts dropped on a full listen queue during the flood (TcpExt ListenOverflows, whole host; the client retries after 1 s, 3 s, ...)",
        overflows.map_or("unknown".into(), |n| n.to_string())
    );
    println!("(connections are counted from the client side: a TCP connect succeeds once the kernel completes the handshake, before the server's admission check)");
    println!();
    if let Some(c) = &control {
        println!(
            "control: the same flood aimed at a second server process moved this server's p99 to {:.2}x of baseline: that much is the machine (2 shared cores), not this server's handling of the flood",
            c.q(0.99) as f64 / baseline.q(0.99).max(1) as f64
        );
    }
    let ratio = flooded.q(0.99) as f64 / baseline.q(0.99).max(1) as f64;
    println!(
        "p99 during the flood / baseline: {:.2}x (aim: within 5x): {}",
        ratio,
        verdict(ratio <= 5.0)
    );
    println!(
        "server RSS (pid {pid}, the server alone): {} before the flood, {} at its end, peak (VmHWM) {}",
        mib(rss_before),
        mib(rss_during),
        mib(peak)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flood_sources_cover_127_0_0_2_to_255() {
        assert_eq!(flood_source(0), IpAddr::from([127, 0, 0, 2]));
        assert_eq!(flood_source(253), IpAddr::from([127, 0, 0, 255]));
        assert_eq!(flood_source(254), IpAddr::from([127, 0, 0, 2]));
    }

    #[test]
    fn proc_status_fields() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("status");
        std::fs::write(
            &p,
            "Name:\trampart\nVmHWM:\t  123456 kB\nVmRSS:\t   2048 kB\n",
        )
        .unwrap();
        let p = p.to_str().unwrap();
        assert_eq!(proc_status_kib(p, "VmHWM"), Some(123_456));
        assert_eq!(proc_status_kib(p, "VmRSS"), Some(2048));
        assert_eq!(proc_status_kib(p, "VmSwap"), None);
        assert_eq!(mib(Some(2048)), "2.0 MiB");
        assert!(nofile().is_some_and(|(soft, hard)| soft <= hard));
        assert!(cpu_time("self").is_some());
    }

    #[test]
    fn netstat_fields() {
        let text = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\nTcpExt: 0 17 17\nIpExt: InNoRoutes\nIpExt: 3\n";
        assert_eq!(netstat_field(text, "TcpExt", "ListenOverflows"), Some(17));
        assert_eq!(netstat_field(text, "IpExt", "InNoRoutes"), Some(3));
        assert_eq!(netstat_field(text, "TcpExt", "Nope"), None);
    }
}
