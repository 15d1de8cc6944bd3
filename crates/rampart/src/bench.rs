//! `rampart bench pubsub`: delivered messages per second and latency for N
//! publishers x M subscribers, over QUIC and TLS/TCP.
//!
//! Without `--url` it starts a server of its own on 127.0.0.1 (on its own
//! runtime threads, like a separate process) with a throwaway dev setup, and
//! measures both transports. Every run is bounded by `--timeout`.
//!
//! `rampart bench durable`: acknowledged publishes per second to a durable
//! stream, per sync policy and number of concurrent publishers, against
//! such a local server (TLS, audit on, as by default).
//!
//! `rampart bench log`: the durable log crate on its own, no server.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rampart_client::{AckMode, AdminClient, Client, ClientConfig, Durability};
use rampart_identity::Secret;
use tokio::sync::Semaphore;

use crate::cmd_client::describe;
use crate::Failure;

#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    cmd: BenchCmd,
}

#[derive(Debug, clap::Subcommand)]
enum BenchCmd {
    /// Publish/subscribe throughput and latency.
    Pubsub(PubsubArgs),
    /// Durable log appends, sealed with tenant keys or not, to measure what
    /// encryption at rest costs.
    Log(LogArgs),
    /// Acknowledged publishes per second to a durable stream, per sync
    /// policy and concurrency.
    Durable(DurableArgs),
    /// Secret reads, AppRole logins and secret writes per second over the
    /// Vault-compatible HTTPS API.
    Vault(vault::VaultArgs),
    /// Service to well-behaved clients while others abuse the server: a
    /// noisy tenant (`--scenario noisy`) or a connection flood
    /// (`--scenario flood`).
    Abuse(abuse::AbuseArgs),
    /// The same core pub/sub workloads against Rampart and a local NATS
    /// server, in one run, as one table with ratios.
    Compare(compare::CompareArgs),
}

mod abuse;
mod compare;
mod vault;

#[derive(Debug, clap::Args)]
struct LogArgs {
    /// Message size in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Messages per appender.
    #[arg(long, default_value_t = 100_000)]
    messages: usize,
    /// Messages per block (one seal and one frame per block).
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Concurrent appenders (they share fsyncs by group commit).
    #[arg(long, default_value_t = 1)]
    appenders: usize,
    /// `on-commit` (every append fsynced) or `none`.
    #[arg(long, default_value = "on-commit")]
    sync: String,
    /// Directory for the log (a fresh temporary one by default).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// Seals log blocks with a tenant's data key, as the server will.
struct TenantSealer(Arc<rampart_keys::TenantKeys>);

impl rampart_log::BlockSealer for TenantSealer {
    fn seal(&self, first_offset: u64, plaintext: &[u8]) -> Result<Vec<u8>, String> {
        let aad = rampart_keys::Aad::new("bench", "bench", "stream", "bench", first_offset);
        self.0.seal(&aad, plaintext).map_err(|e| e.to_string())
    }
    fn open(&self, first_offset: u64, sealed: &[u8]) -> Result<Vec<u8>, String> {
        let aad = rampart_keys::Aad::new("bench", "bench", "stream", "bench", first_offset);
        self.0
            .open(&aad, sealed)
            .map(|p| p.expose().clone())
            .map_err(|e| e.to_string())
    }
}

async fn bench_log(a: LogArgs) -> Result<ExitCode, Failure> {
    let tmp = tempfile::tempdir()?;
    let base = a.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let master = rampart_keys::LocalMasterKey::create(&base.join("master.key"))?;
    let kv: Arc<dyn rampart_store::KvStore> =
        Arc::new(rampart_store::RedbStore::open(&base.join("keys.redb"))?);
    let keyring = rampart_keys::Keyring::open(kv, Arc::new(master)).await?;
    let keys = keyring.tenant("bench").await?;
    let sync = match a.sync.as_str() {
        "on-commit" => rampart_log::SyncPolicy::OnCommit,
        "none" => rampart_log::SyncPolicy::None,
        other => return Err(Failure(format!("--sync {other}: use on-commit or none"))),
    };
    println!("sealing,appenders,size,batch,messages,seconds,mb_per_s,msgs_per_s");
    let mut recoveries = Vec::new();
    for sealed in [false, true] {
        let mut opts = rampart_log::LogOptions::default();
        opts.sync = sync;
        if sealed {
            opts.sealer = Arc::new(TenantSealer(keys.clone()));
        }
        let dir = base.join(if sealed { "sealed" } else { "plain" });
        let (log, _) = rampart_log::Log::open(&dir, opts.clone())?;
        let log = Arc::new(log);
        let payload = vec![0x42u8; a.size];
        let started = Instant::now();
        let mut threads = Vec::new();
        for _ in 0..a.appenders.max(1) {
            let (log, payload) = (log.clone(), payload.clone());
            let (messages, batch) = (a.messages, a.batch.max(1));
            threads.push(std::thread::spawn(move || -> Result<(), String> {
                let block: Vec<&[u8]> = std::iter::repeat_n(&payload[..], batch).collect();
                let mut done = 0;
                while done < messages {
                    let n = batch.min(messages - done);
                    log.append(&block[..n], 0).map_err(|e| e.to_string())?;
                    done += n;
                }
                Ok(())
            }));
        }
        for t in threads {
            t.join()
                .map_err(|_| Failure("appender panicked".into()))?
                .map_err(Failure)?;
        }
        let secs = started.elapsed().as_secs_f64();
        let total = (a.messages * a.appenders.max(1)) as f64;
        println!(
            "{},{},{},{},{},{:.3},{:.1},{:.0}",
            if sealed { "aes-256-gcm" } else { "none" },
            a.appenders.max(1),
            a.size,
            a.batch,
            total,
            secs,
            total * a.size as f64 / secs / 1e6,
            total / secs
        );
        // What a restart costs: the recovery scan checks every frame.
        drop(log);
        let (_log, r) = rampart_log::Log::open(&dir, opts)?;
        recoveries.push((sealed, r));
    }
    println!("recovery,segments,blocks,bytes_scanned,seconds,mb_per_s");
    for (sealed, r) in recoveries {
        println!(
            "{},{},{},{},{:.3},{:.0}",
            if sealed { "aes-256-gcm" } else { "none" },
            r.segments,
            r.blocks,
            r.bytes_scanned,
            r.elapsed.as_secs_f64(),
            r.mb_per_sec()
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Table,
    Csv,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum AckArg {
    None,
    Batch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Which {
    Quic,
    Tcp,
    Both,
}

#[derive(Debug, clap::Args)]
struct PubsubArgs {
    /// Server to measure (quic://... or tls://...). Without it, a local
    /// server is started and both transports are measured.
    #[arg(long)]
    url: Option<String>,
    /// CA certificate of the server at --url.
    #[arg(long = "ca-cert", env = "RAMPART_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// API key file for the server at --url (else RAMPART_API_KEY).
    #[arg(long, env = "RAMPART_API_KEY_FILE")]
    api_key_file: Option<PathBuf>,
    /// Transports to measure against the local server.
    #[arg(long, value_enum, default_value = "both")]
    transport: Which,
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    #[arg(long, default_value_t = 1)]
    subscribers: usize,
    /// Payload sizes in bytes, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = vec![128usize, 4096])]
    size: Vec<usize>,
    /// Messages per publisher.
    #[arg(long, default_value_t = 200_000)]
    messages: u64,
    /// Messages per PUBLISH_BATCH frame.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Batches in flight per publisher (with --ack batch).
    #[arg(long, default_value_t = 32)]
    window: usize,
    /// `batch`: every frame acknowledged, --window frames in flight.
    /// `none`: fire and forget, like a NATS publish; loss is still counted
    /// at the subscribers.
    #[arg(long, value_enum, default_value = "batch")]
    ack: AckArg,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Give up on a run after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// The local server's audit log: `on` (the default settings) or `off`
    /// (`dangerous_disable_audit`), to measure what auditing costs.
    #[arg(long, value_enum, default_value = "on")]
    audit: OnOff,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OnOff {
    On,
    Off,
}

struct Row {
    transport: &'static str,
    publishers: usize,
    subscribers: usize,
    size: usize,
    messages: u64,
    delivered: u64,
    wanted: u64,
    seconds: f64,
    p50_us: f64,
    p99_us: f64,
}

impl Row {
    fn rate(&self) -> f64 {
        self.delivered as f64 / self.seconds
    }
}

/// A server started for the benchmark on its own runtime.
struct LocalServer {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    quic: std::net::SocketAddr,
    tcp: std::net::SocketAddr,
    http: Option<std::net::SocketAddr>,
    ca: PathBuf,
    key: Secret<String>,
    _dir: tempfile::TempDir,
}

impl LocalServer {
    /// `https`: also serve the HTTPS API (for admin calls) on an ephemeral
    /// port.
    fn start(audit: bool, https: bool) -> Result<Self, Failure> {
        Self::start_with(audit, https, false)
    }

    /// `unsealed`: durable streams store payloads in clear
    /// (`dangerous_unsealed_streams`), to measure what sealing costs.
    pub(super) fn start_with(audit: bool, https: bool, unsealed: bool) -> Result<Self, Failure> {
        let dir = tempfile::tempdir()?;
        let mut config = rampart_server::Config::load(None, &|_| None)?;
        config.dangerous_unsealed_streams = unsealed;
        config.data_dir = dir.path().to_path_buf();
        config.quic_bind = "127.0.0.1:0".into();
        config.tcp_bind = "127.0.0.1:0".into();
        config.http_bind = if https {
            "127.0.0.1:0".into()
        } else {
            String::new()
        };
        config.dangerous_disable_audit = !audit;
        // Nothing balances load in front of a benchmark's server.
        config.shutdown_drain_secs = 0;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            rt.block_on(async move {
                let opts = rampart_server::ServerOptions::new(config).dev(true);
                match rampart_server::Server::start(opts).await {
                    Ok(server) => {
                        let info = server
                            .dev_setup()
                            .map(|d| (d.ca_cert.clone(), d.admin_key.expose().clone()));
                        let addrs = (server.quic_addr(), server.tcp_addr(), server.http_addr());
                        let _ = ready_tx.send(Ok((addrs, info)));
                        let _ = stop_rx.await;
                        server.shutdown(Duration::from_secs(2)).await;
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                    }
                }
            });
        });
        let ((quic, tcp, http), info) = ready_rx
            .recv()
            .map_err(|_| Failure("bench server thread died".into()))?
            .map_err(Failure)?;
        let (Some(quic), Some(tcp), Some((ca, key))) = (quic, tcp, info) else {
            return Err(Failure("bench server did not report its setup".into()));
        };
        if https && http.is_none() {
            return Err(Failure(
                "bench server did not report its HTTPS address".into(),
            ));
        }
        Ok(Self {
            stop: Some(stop_tx),
            thread: Some(thread),
            quic,
            tcp,
            http,
            ca,
            key: Secret::new(key),
            _dir: dir,
        })
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub(crate) async fn run(a: BenchArgs) -> Result<ExitCode, Failure> {
    let a = match a.cmd {
        BenchCmd::Pubsub(p) => p,
        BenchCmd::Log(l) => return bench_log(l).await,
        BenchCmd::Durable(d) => return bench_durable(d).await,
        BenchCmd::Vault(v) => return vault::run(v).await,
        BenchCmd::Abuse(x) => return abuse::run(x).await,
        BenchCmd::Compare(c) => return compare::run(c).await,
    };
    if a.publishers == 0 || a.subscribers == 0 || a.messages == 0 || a.batch == 0 {
        return Err(Failure(
            "publishers, subscribers, messages and batch must be positive".into(),
        ));
    }
    if a.size.iter().any(|s| *s < 8) {
        return Err(Failure(
            "--size must be at least 8 bytes (timestamp)".into(),
        ));
    }
    let mut rows = Vec::new();
    let _local;
    let targets: Vec<(String, ClientConfig, &'static str)> = match &a.url {
        Some(url) => {
            let mut c = ClientConfig::default();
            c.tls_ca_cert_path = a.ca_cert.clone();
            c.api_key = match (std::env::var("RAMPART_API_KEY").ok(), &a.api_key_file) {
                (Some(k), _) => Some(Secret::new(k)),
                (None, Some(f)) => Some(rampart_client::read_key_file(f)?),
                _ => return Err(Failure("no API key for --url".into())),
            };
            let name = if url.starts_with("quic") {
                "quic"
            } else {
                "tcp"
            };
            vec![(url.clone(), c, name)]
        }
        None => {
            let s = LocalServer::start(a.audit == OnOff::On, false)?;
            let mk = || {
                let mut c = ClientConfig::default();
                c.tls_ca_cert_path = Some(s.ca.clone());
                c.api_key = Some(s.key.clone());
                c
            };
            let mut t = Vec::new();
            if a.transport != Which::Tcp {
                t.push((format!("quic://{}", s.quic), mk(), "quic"));
            }
            if a.transport != Which::Quic {
                t.push((format!("tls://{}", s.tcp), mk(), "tcp"));
            }
            _local = s;
            t
        }
    };
    let mut run_id = 0u32;
    for (url, cfg, name) in &targets {
        for &size in &a.size {
            run_id += 1;
            let row = tokio::time::timeout(
                Duration::from_secs(a.timeout),
                one_run(&a, url, cfg, name, size, run_id),
            )
            .await
            .map_err(|_| Failure(format!("{name} {size} B run exceeded {} s", a.timeout)))??;
            if a.format == Format::Table {
                eprintln!("bench: {name} {size} B done: {:.0} msgs/s", row.rate());
            }
            rows.push(row);
        }
    }
    print_rows(&rows, a.format);
    Ok(ExitCode::SUCCESS)
}

async fn one_run(
    a: &PubsubArgs,
    url: &str,
    cfg: &ClientConfig,
    name: &'static str,
    size: usize,
    run_id: u32,
) -> Result<Row, Failure> {
    let stream = format!("run-{}-{run_id}", std::process::id());
    let mut subs = Vec::new();
    let mut tenant = String::new();
    for _ in 0..a.subscribers {
        let c = Client::connect(url, cfg.clone()).await.map_err(describe)?;
        tenant = c.tenant().to_string();
        let s = c
            .subscribe(&tenant, "bench", &stream)
            .await
            .map_err(describe)?;
        subs.push((c, s));
    }
    let mut pubs = Vec::new();
    for _ in 0..a.publishers {
        pubs.push(Arc::new(
            Client::connect(url, cfg.clone()).await.map_err(describe)?,
        ));
    }
    let wanted_each = a.messages * a.publishers as u64;
    let epoch = Instant::now();

    let mut sub_tasks = Vec::new();
    for (client, mut sub) in subs {
        sub_tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
                .map_err(|e| Failure(e.to_string()))?;
            let mut got = 0u64;
            let mut next_seq: Option<u64> = None;
            let mut gaps = 0u64;
            while got < wanted_each {
                let Some(b) = sub.next_batch().await else {
                    break;
                };
                let now = epoch.elapsed().as_nanos() as u64;
                if let Some(n) = next_seq {
                    if b.first_seq != n {
                        gaps += b.first_seq.saturating_sub(n);
                    }
                }
                next_seq = Some(b.first_seq + u64::from(b.count));
                for p in b.payloads() {
                    if p.len() >= 8 {
                        let mut ts = [0u8; 8];
                        ts.copy_from_slice(&p[..8]);
                        let sent = u64::from_le_bytes(ts);
                        let us = now.saturating_sub(sent) / 1000;
                        let _ = hist.record(us.max(1));
                    }
                    got += 1;
                }
            }
            let done = epoch.elapsed();
            drop(sub);
            drop(client);
            Ok::<_, Failure>((got, gaps, done, hist))
        }));
    }

    let mut pub_tasks = Vec::new();
    for client in pubs {
        let tenant = tenant.clone();
        let stream = stream.clone();
        let (messages, batch, window, ack) = (a.messages, a.batch, a.window, a.ack);
        pub_tasks.push(tokio::spawn(async move {
            let permits = Arc::new(Semaphore::new(window));
            let mut payload = vec![0xabu8; size];
            let mut sent = 0u64;
            while sent < messages {
                let n = (messages - sent).min(batch as u64) as usize;
                let ts = epoch.elapsed().as_nanos() as u64;
                payload[..8].copy_from_slice(&ts.to_le_bytes());
                sent += n as u64;
                if ack == AckArg::None {
                    // Queued for the writer; refusals come back as NACKs.
                    let r = if n == 1 {
                        client
                            .publish_with(&tenant, "bench", &stream, payload.clone(), AckMode::None)
                            .await
                            .map(|_| ())
                    } else {
                        client
                            .publish_batch_with(
                                &tenant,
                                "bench",
                                &stream,
                                std::iter::repeat_n(&payload[..], n),
                                AckMode::None,
                            )
                            .await
                            .map(|_| ())
                    };
                    r.map_err(describe)?;
                    continue;
                }
                let permit = permits
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|e| Failure(e.to_string()))?;
                let c = client.clone();
                let (t, s) = (tenant.clone(), stream.clone());
                let body = payload.clone();
                tokio::spawn(async move {
                    let r = c
                        .publish_batch_with(
                            &t,
                            "bench",
                            &s,
                            std::iter::repeat_n(&body[..], n),
                            AckMode::Batch,
                        )
                        .await;
                    if let Err(e) = r {
                        eprintln!("bench: publish failed: {e}");
                    }
                    drop(permit);
                });
            }
            // Wait for the last acknowledgements; with no acks, a ping
            // round trip shows everything sent was read.
            let _ = permits.acquire_many(window as u32).await;
            client.ping().await.map_err(describe)?;
            if let Some(e) = client.take_async_error() {
                return Err(describe(e));
            }
            Ok::<_, Failure>(())
        }));
    }
    for t in pub_tasks {
        t.await.map_err(|e| Failure(e.to_string()))??;
    }
    let mut delivered = 0;
    let mut lost = 0;
    let mut last = Duration::ZERO;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for t in sub_tasks {
        let (got, gaps, done, h) = t.await.map_err(|e| Failure(e.to_string()))??;
        delivered += got;
        lost += gaps;
        last = last.max(done);
        hist.add(&h)?;
    }
    if lost > 0 {
        eprintln!("bench: {lost} message(s) skipped in sequence");
    }
    Ok(Row {
        transport: name,
        publishers: a.publishers,
        subscribers: a.subscribers,
        size,
        messages: a.messages,
        delivered,
        wanted: wanted_each * a.subscribers as u64,
        seconds: last.as_secs_f64(),
        p50_us: hist.value_at_quantile(0.50) as f64,
        p99_us: hist.value_at_quantile(0.99) as f64,
    })
}

fn print_rows(rows: &[Row], format: Format) {
    match format {
        Format::Csv => {
            println!("transport,publishers,subscribers,size,messages,delivered,wanted,seconds,mb_per_s,p50_us,p99_us,msgs_per_s");
            for r in rows {
                println!(
                    "{},{},{},{},{},{},{},{:.3},{:.1},{:.0},{:.0},{:.0}",
                    r.transport,
                    r.publishers,
                    r.subscribers,
                    r.size,
                    r.messages,
                    r.delivered,
                    r.wanted,
                    r.seconds,
                    r.rate() * r.size as f64 / 1e6,
                    r.p50_us,
                    r.p99_us,
                    r.rate()
                );
            }
        }
        Format::Table => {
            println!(
                "{:<9} {:>4} {:>4} {:>7} {:>10} {:>12} {:>9} {:>12} {:>9} {:>10} {:>10}",
                "transport",
                "pub",
                "sub",
                "size",
                "delivered",
                "wanted",
                "seconds",
                "msgs/s",
                "MB/s",
                "p50 us",
                "p99 us"
            );
            for r in rows {
                println!(
                    "{:<9} {:>4} {:>4} {:>7} {:>10} {:>12} {:>9.3} {:>12.0} {:>9.1} {:>10.0} {:>10.0}",
                    r.transport,
                    r.publishers,
                    r.subscribers,
                    r.size,
                    r.delivered,
                    r.wanted,
                    r.seconds,
                    r.rate(),
                    r.rate() * r.size as f64 / 1e6,
                    r.p50_us,
                    r.p99_us
                );
            }
        }
    }
}

// === durable ===

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Net {
    Tcp,
    Quic,
}

#[derive(Debug, clap::Args)]
struct DurableArgs {
    /// Sync policies to measure, comma-separated: `none`, `interval:MS`,
    /// `on_commit`. Each cell gets a fresh durable stream with that policy.
    #[arg(
        long,
        value_delimiter = ',',
        value_parser = SyncPolicyArg::parse,
        default_values = ["none", "interval:10", "on_commit"]
    )]
    sync: Vec<SyncPolicyArg>,
    /// Concurrent publishers, comma-separated. Each has one publish in
    /// flight: it sends a message, awaits its ACK, and only then sends the
    /// next.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1usize, 64])]
    concurrency: Vec<usize>,
    /// Client connections the publishers share, taken in turn: `1` puts
    /// every publish of a cell on one multiplexed connection (with
    /// `--pipeline`, as a NATS client's async publish does). Default: one
    /// per publisher.
    #[arg(long)]
    connections: Option<usize>,
    /// The publishes of each connection come from one task that keeps them
    /// all in flight with `Client::publish_async` (sending the next as each
    /// ACK arrives, like a NATS client's async publish) instead of one task
    /// per publisher awaiting each ACK. `--concurrency` is then the
    /// publishes in flight, shared out among the connections.
    #[arg(long)]
    pipeline: bool,
    /// Transport of the publishers' connections.
    #[arg(long, value_enum, default_value = "tcp")]
    transport: Net,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 128)]
    size: usize,
    /// How long each cell (sync policy x concurrency) publishes, in seconds;
    /// the acknowledged messages are counted.
    #[arg(long, default_value_t = 3)]
    duration_secs: u64,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Give up on a cell this many seconds after its publishing time.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// `sealed` (the default: payloads encrypted at rest), `unsealed`
    /// (`dangerous_unsealed_streams`) or `both`, to measure what sealing
    /// costs: every cell is run on a sealed server, then on an unsealed
    /// one.
    #[arg(long, value_enum, default_value = "sealed")]
    sealing: Sealing,
    /// Runs of every cell; the median is reported. With `--sealing both`
    /// the sealed and unsealed runs alternate.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Sealing {
    Sealed,
    Unsealed,
    Both,
}

/// One `--sync` entry: the policy as the server reads it, and the
/// durability every ACK on such a stream must report.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SyncPolicyArg {
    spec: String,
    promises: Durability,
}

impl SyncPolicyArg {
    fn parse(s: &str) -> Result<Self, String> {
        let (spec, promises) = match s.trim() {
            "none" => ("none".to_string(), Durability::Written),
            "on_commit" | "on-commit" => ("on_commit".to_string(), Durability::Fsynced),
            other => match other.strip_prefix("interval:").map(str::parse::<u64>) {
                Some(Ok(ms)) if ms > 0 => (format!("interval:{ms}"), Durability::Written),
                _ => {
                    return Err(format!(
                        "`{other}` is not a sync policy: none, interval:MS (MS > 0) or on_commit"
                    ))
                }
            },
        };
        Ok(Self { spec, promises })
    }
}

struct DurableRow {
    sealed: bool,
    sync: String,
    transport: &'static str,
    concurrency: usize,
    connections: usize,
    /// One task per connection with `publish_async` (`--pipeline`).
    pipelined: bool,
    size: usize,
    durability: Durability,
    messages: u64,
    seconds: f64,
    p50_us: u64,
    p99_us: u64,
}

impl DurableRow {
    fn rate(&self) -> f64 {
        self.messages as f64 / self.seconds
    }
}

async fn bench_durable(a: DurableArgs) -> Result<ExitCode, Failure> {
    if a.sync.is_empty() || a.concurrency.is_empty() || a.concurrency.contains(&0) {
        return Err(Failure(
            "--sync and --concurrency need at least one value; concurrency must be positive".into(),
        ));
    }
    if a.duration_secs == 0 {
        return Err(Failure("--duration-secs must be positive".into()));
    }
    if a.connections == Some(0) {
        return Err(Failure("--connections must be positive".into()));
    }
    let modes: &[bool] = match a.sealing {
        Sealing::Sealed => &[true],
        Sealing::Unsealed => &[false],
        Sealing::Both => &[true, false],
    };
    if a.rounds == 0 {
        return Err(Failure("--rounds must be positive".into()));
    }
    // One server per sealing mode, all up at once, so that the cells of
    // both modes can be interleaved: a noisy moment then hits both.
    let mut targets = Vec::new();
    for &sealed in modes {
        targets.push(Target::start(a.transport, sealed)?);
    }
    let mut rows = Vec::new();
    let mut cell = 0u32;
    for sync in &a.sync {
        for &n in &a.concurrency {
            let mut runs: Vec<Vec<DurableRow>> = targets.iter().map(|_| Vec::new()).collect();
            for _ in 0..a.rounds {
                for (t, runs) in targets.iter().zip(runs.iter_mut()) {
                    cell += 1;
                    let limit = Duration::from_secs(a.duration_secs.saturating_add(a.timeout));
                    let row = tokio::time::timeout(
                        limit,
                        durable_cell(&a, &t.admin, &t.url, &t.cfg, t.transport, sync, n, cell),
                    )
                    .await
                    .map_err(|_| {
                        Failure(format!(
                            "sync {} x {n} publishers: no end after {} s",
                            sync.spec,
                            limit.as_secs()
                        ))
                    })??;
                    let row = DurableRow {
                        sealed: t.sealed,
                        ..row
                    };
                    if a.format == Format::Table {
                        eprintln!(
                            "bench: {} sync {} x {n}: {:.0} acked msgs/s",
                            if t.sealed { "sealed" } else { "unsealed" },
                            sync.spec,
                            row.rate()
                        );
                    }
                    runs.push(row);
                }
            }
            // The round with the median rate stands for the cell.
            for mut r in runs {
                let rates: Vec<f64> = r.iter().map(DurableRow::rate).collect();
                if let Some(i) = compare::median_of(&rates) {
                    rows.push(r.swap_remove(i));
                }
            }
        }
    }
    print_durable(&rows, a.format);
    if a.sealing == Sealing::Both && a.format == Format::Table {
        println!();
        for pair in rows.chunks(2) {
            if let [s, u] = pair {
                println!(
                    "sealing costs {:>5.1}% at sync {} x {} ({:.0} vs {:.0} msgs/s)",
                    (1.0 - s.rate() / u.rate()) * 100.0,
                    s.sync,
                    s.concurrency,
                    s.rate(),
                    u.rate()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A local server for the durable bench, sealed or not, and how to reach
/// it.
struct Target {
    sealed: bool,
    url: String,
    transport: &'static str,
    cfg: ClientConfig,
    admin: AdminClient,
    _server: LocalServer,
}

impl Target {
    fn start(net: Net, sealed: bool) -> Result<Target, Failure> {
        // The normal secure defaults: TLS on every listener, audit on.
        let server = LocalServer::start_with(true, true, !sealed)?;
        let mut cfg = ClientConfig::default();
        cfg.tls_ca_cert_path = Some(server.ca.clone());
        cfg.api_key = Some(server.key.clone());
        let (url, transport) = match net {
            Net::Tcp => (format!("tls://{}", server.tcp), "tcp"),
            Net::Quic => (format!("quic://{}", server.quic), "quic"),
        };
        let http = server
            .http
            .ok_or_else(|| Failure("bench server has no HTTPS API".into()))?;
        let admin = AdminClient::new(&format!("https://{http}"), &cfg).map_err(describe)?;
        Ok(Target {
            sealed,
            url,
            transport,
            cfg,
            admin,
            _server: server,
        })
    }
}

/// What one task of a `bench durable` cell publishes, and what it counted.
struct DurablePublisher {
    tenant: String,
    stream: String,
    payload: bytes::Bytes,
    /// The stream's sync policy, and the durability its ACKs must say.
    spec: String,
    promised: Durability,
    /// Microseconds from sending to the ACK.
    hist: Histogram<u64>,
    acked: u64,
    /// When the last ACK arrived.
    last: Instant,
}

impl DurablePublisher {
    /// Counts the ACK of a publish sent at `sent`, which must say one
    /// message as durable as the policy promises.
    fn acked(
        &mut self,
        sent: Instant,
        ack: Result<rampart_client::Acked, rampart_client::ClientError>,
    ) -> Result<(), Failure> {
        let ack = ack.map_err(describe)?;
        self.last = Instant::now();
        if ack.durability != self.promised || ack.count != 1 {
            return Err(Failure(format!(
                "sync {}: an ACK said {} message(s) {}, the policy promises 1 {}",
                self.spec,
                ack.count,
                ack.durability.as_str(),
                self.promised.as_str()
            )));
        }
        self.hist
            .saturating_record(((self.last - sent).as_micros() as u64).max(1));
        self.acked += 1;
        Ok(())
    }
}

/// Keeps `window` publishes of `payload` to `to` (tenant, namespace,
/// stream) in flight on `client` with `publish_async` until `deadline`,
/// sending the next as each ACK arrives (oldest first), then waits for the
/// last ones. `answer` gets each publish's outcome and when it was sent;
/// sending stops at the first outcome it returns false for, and at a
/// publish that could not be queued (whose error it gets too).
async fn pipeline_publishes(
    client: &Client,
    to: [&str; 3],
    payload: &bytes::Bytes,
    window: usize,
    deadline: Instant,
    mut answer: impl FnMut(Instant, Result<rampart_client::Acked, rampart_client::ClientError>) -> bool,
) {
    let [tenant, namespace, stream] = to;
    let mut in_flight = std::collections::VecDeque::with_capacity(window);
    let mut sending = true;
    loop {
        while sending && in_flight.len() < window && Instant::now() < deadline {
            let sent = Instant::now();
            match client
                .publish_async(tenant, namespace, stream, payload.clone())
                .await
            {
                Ok(ack) => in_flight.push_back((sent, ack)),
                Err(e) => {
                    answer(sent, Err(e));
                    sending = false;
                }
            }
        }
        let Some((sent, ack)) = in_flight.pop_front() else {
            return;
        };
        if !answer(sent, ack.await) {
            sending = false;
        }
    }
}

/// One cell: `n` publishers on a fresh durable stream for
/// `--duration-secs`, each with one publish in flight.
#[allow(clippy::too_many_arguments)]
async fn durable_cell(
    a: &DurableArgs,
    admin: &AdminClient,
    url: &str,
    cfg: &ClientConfig,
    transport: &'static str,
    sync: &SyncPolicyArg,
    n: usize,
    cell: u32,
) -> Result<DurableRow, Failure> {
    let conns = a.connections.map_or(n, |c| c.min(n));
    let mut connected = Vec::with_capacity(conns);
    for _ in 0..conns {
        connected.push(Arc::new(
            Client::connect(url, cfg.clone()).await.map_err(describe)?,
        ));
    }
    let clients: Vec<Arc<Client>> = (0..n).map(|i| connected[i % conns].clone()).collect();
    drop(connected);
    let tenant = clients[0].tenant().to_string();
    let stream = format!("durable-{}-{cell}", std::process::id());
    let streams = format!("/v1/tenants/{tenant}/namespaces/bench/streams");
    let body = serde_json::json!({ "name": stream, "durable": true, "sync": sync.spec });
    let r = admin
        .call("POST", &streams, Some(&body))
        .await
        .map_err(describe)?;
    if r.status != 201 {
        return Err(Failure(format!(
            "creating durable stream {stream} (sync {}): HTTP {}: {}",
            sync.spec,
            r.status,
            r.error()
        )));
    }

    let payload = bytes::Bytes::from(vec![0x5au8; a.size]);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(a.duration_secs);
    let mut tasks = Vec::with_capacity(n);
    // Pipelined: one task per connection, with as many publishes in flight
    // as publishers share it.
    let publishers: Vec<(Arc<Client>, usize)> = if a.pipeline {
        let mut per_conn: Vec<(Arc<Client>, usize)> = Vec::with_capacity(conns);
        for (i, client) in clients.into_iter().enumerate() {
            match per_conn.get_mut(i % conns) {
                Some((_, window)) => *window += 1,
                None => per_conn.push((client, 1)),
            }
        }
        per_conn
    } else {
        clients.into_iter().map(|c| (c, 1)).collect()
    };
    for (client, window) in publishers {
        let mut p = DurablePublisher {
            tenant: tenant.clone(),
            stream: stream.clone(),
            payload: payload.clone(),
            spec: sync.spec.clone(),
            promised: sync.promises,
            hist: Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?,
            acked: 0,
            last: start,
        };
        let pipeline = a.pipeline;
        tasks.push(tokio::spawn(async move {
            if pipeline {
                let (tenant, stream, payload) =
                    (p.tenant.clone(), p.stream.clone(), p.payload.clone());
                let mut failed = None;
                pipeline_publishes(
                    &client,
                    [&tenant, "bench", &stream],
                    &payload,
                    window,
                    deadline,
                    |sent, ack| match p.acked(sent, ack) {
                        Ok(()) => true,
                        Err(f) => {
                            failed.get_or_insert(f);
                            false
                        }
                    },
                )
                .await;
                if let Some(f) = failed {
                    return Err(f);
                }
            } else {
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    let ack = client
                        .publish(&p.tenant, "bench", &p.stream, p.payload.clone())
                        .await;
                    p.acked(sent, ack)?;
                }
            }
            // A shared connection is closed by the last of its publishers.
            if let Ok(client) = Arc::try_unwrap(client) {
                client.close().await;
            }
            Ok::<_, Failure>((p.acked, p.last, p.hist))
        }));
    }
    let mut messages = 0u64;
    let mut end = start;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for t in tasks {
        let (acked, last, h) = t.await.map_err(|e| Failure(e.to_string()))??;
        messages += acked;
        end = end.max(last);
        hist.add(&h)?;
    }

    // Every acknowledged message is in the stream's log.
    let one = format!("{streams}/{stream}");
    let r = admin.call("GET", &one, None).await.map_err(describe)?;
    let held = r.body["next_offset"].as_u64();
    if r.status != 200 || held != Some(messages) {
        return Err(Failure(format!(
            "stream {stream}: {messages} publishes acknowledged, the stream reports next_offset {held:?} (HTTP {})",
            r.status
        )));
    }
    let r = admin.call("DELETE", &one, None).await.map_err(describe)?;
    if r.status != 204 {
        eprintln!("bench: deleting {stream}: HTTP {}: {}", r.status, r.error());
    }
    Ok(DurableRow {
        sealed: true,
        sync: sync.spec.clone(),
        transport,
        concurrency: n,
        connections: conns,
        pipelined: a.pipeline,
        size: a.size,
        durability: sync.promises,
        messages,
        seconds: (end - start).as_secs_f64(),
        p50_us: hist.value_at_quantile(0.50),
        p99_us: hist.value_at_quantile(0.99),
    })
}

fn print_durable(rows: &[DurableRow], format: Format) {
    match format {
        Format::Csv => {
            println!("sealed,sync,transport,concurrency,connections,size,durability,messages,seconds,p50_us,p99_us,msgs_per_s,pipelined");
            for r in rows {
                println!(
                    "{},{},{},{},{},{},{},{},{:.3},{},{},{:.0},{}",
                    r.sealed,
                    r.sync,
                    r.transport,
                    r.concurrency,
                    r.connections,
                    r.size,
                    r.durability.as_str(),
                    r.messages,
                    r.seconds,
                    r.p50_us,
                    r.p99_us,
                    r.rate(),
                    r.pipelined
                );
            }
        }
        Format::Table => {
            println!(
                "{:<9} {:<12} {:<9} {:>5} {:>5} {:>6} {:<10} {:>10} {:>8} {:>10} {:>9} {:>9}  publishers",
                "sealing",
                "sync",
                "transport",
                "conc",
                "conns",
                "size",
                "acks said",
                "messages",
                "seconds",
                "msgs/s",
                "p50 us",
                "p99 us"
            );
            for r in rows {
                println!(
                    "{:<9} {:<12} {:<9} {:>5} {:>5} {:>6} {:<10} {:>10} {:>8.3} {:>10.0} {:>9} {:>9}  {}",
                    if r.sealed { "sealed" } else { "unsealed" },
                    r.sync,
                    r.transport,
                    r.concurrency,
                    r.connections,
                    r.size,
                    r.durability.as_str(),
                    r.messages,
                    r.seconds,
                    r.rate(),
                    r.p50_us,
                    r.p99_us,
                    if r.pipelined {
                        "one task per connection"
                    } else {
                        "one task each"
                    }
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: BenchCmd,
    }

    fn durable(args: &[&str]) -> Result<DurableArgs, clap::Error> {
        let argv = ["bench", "durable"].iter().chain(args);
        match Cli::try_parse_from(argv)?.cmd {
            BenchCmd::Durable(d) => Ok(d),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn sync_policies_and_what_they_promise() {
        let p = |s| SyncPolicyArg::parse(s).map(|a| (a.spec, a.promises));
        assert_eq!(p("none"), Ok(("none".into(), Durability::Written)));
        assert_eq!(
            p("interval:10"),
            Ok(("interval:10".into(), Durability::Written))
        );
        assert_eq!(
            p("on_commit"),
            Ok(("on_commit".into(), Durability::Fsynced))
        );
        assert_eq!(
            p("on-commit"),
            Ok(("on_commit".into(), Durability::Fsynced))
        );
        for bad in [
            "",
            "interval:",
            "interval:0",
            "interval:x",
            "always",
            "fsync",
        ] {
            assert!(p(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn durable_defaults_and_lists() {
        let d = durable(&[]).unwrap();
        let specs: Vec<_> = d.sync.iter().map(|s| s.spec.as_str()).collect();
        assert_eq!(specs, ["none", "interval:10", "on_commit"]);
        assert_eq!(d.concurrency, [1, 64]);
        assert_eq!(d.transport, Net::Tcp);
        assert_eq!((d.size, d.duration_secs), (128, 3));
        assert_eq!(d.connections, None);
        assert!(!d.pipeline);
        let d = durable(&["--connections", "1", "--pipeline"]).unwrap();
        assert_eq!((d.connections, d.pipeline), (Some(1), true));

        let d = durable(&["--sync", "on_commit,interval:5", "--concurrency", "8"]).unwrap();
        let specs: Vec<_> = d.sync.iter().map(|s| s.spec.as_str()).collect();
        assert_eq!(specs, ["on_commit", "interval:5"]);
        assert_eq!(d.concurrency, [8]);
        assert!(durable(&["--sync", "none,sometimes"]).is_err());
    }
}
