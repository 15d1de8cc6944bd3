//! `rampart bench pubsub`: delivered messages per second and latency for N
//! publishers x M subscribers, over QUIC and TLS/TCP.
//!
//! Without `--url` it starts a server of its own on 127.0.0.1 (on its own
//! runtime threads, like a separate process) with a throwaway dev setup, and
//! measures both transports. Every run is bounded by `--timeout`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rampart_client::{AckMode, Client, ClientConfig};
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
}

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
    for sealed in [false, true] {
        let mut opts = rampart_log::LogOptions::default();
        opts.sync = sync;
        if sealed {
            opts.sealer = Arc::new(TenantSealer(keys.clone()));
        }
        let dir = base.join(if sealed { "sealed" } else { "plain" });
        let (log, _) = rampart_log::Log::open(&dir, opts)?;
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
    ca: PathBuf,
    key: Secret<String>,
    _dir: tempfile::TempDir,
}

impl LocalServer {
    fn start(audit: bool) -> Result<Self, Failure> {
        let dir = tempfile::tempdir()?;
        let mut config = rampart_server::Config::load(None, &|_| None)?;
        config.data_dir = dir.path().to_path_buf();
        config.quic_bind = "127.0.0.1:0".into();
        config.tcp_bind = "127.0.0.1:0".into();
        config.http_bind = String::new();
        config.dangerous_disable_audit = !audit;
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
                        let _ = ready_tx.send(Ok((server.quic_addr(), server.tcp_addr(), info)));
                        let _ = stop_rx.await;
                        server.shutdown(Duration::from_secs(2)).await;
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                    }
                }
            });
        });
        let (quic, tcp, info) = ready_rx
            .recv()
            .map_err(|_| Failure("bench server thread died".into()))?
            .map_err(Failure)?;
        let (Some(quic), Some(tcp), Some((ca, key))) = (quic, tcp, info) else {
            return Err(Failure("bench server did not report its setup".into()));
        };
        Ok(Self {
            stop: Some(stop_tx),
            thread: Some(thread),
            quic,
            tcp,
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
            let s = LocalServer::start(a.audit == OnOff::On)?;
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
