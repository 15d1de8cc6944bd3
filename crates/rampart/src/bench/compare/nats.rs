//! The NATS side of `rampart bench compare`: a `nats-server` child process
//! with TLS 1.3 and a token (and JetStream, for the sections that need it),
//! and a lean NATS core-protocol client written for the bench (over
//! tokio-rustls, parsing in place), with a one-request-at-a-time
//! request/reply helper for the JetStream API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use rampart_identity::Secret;
use rampart_tls::Pieces;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::pubsub::{Each, Received};
use crate::Failure;

/// Plaintext a NATS publisher gathers before one write.
pub(super) const NATS_WRITE: usize = 64 * 1024;
/// Bytes a NATS connection reads at once.
const NATS_READ: usize = 256 * 1024;
/// The longest protocol line accepted from nats-server.
const NATS_MAX_LINE: usize = 64 * 1024;
/// nats-server's `max_payload`: room for the 64 KiB workloads.
const NATS_MAX_PAYLOAD: u64 = 1 << 20;
/// JetStream's memory store limit (the cache section's KV bucket).
const JS_MAX_MEMORY: u64 = 1 << 30;
/// JetStream's file store limit (the durable section's stream).
const JS_MAX_FILE: u64 = 8 << 30;

/// The nats-server configuration file: loopback, an ephemeral port (`-1`,
/// read back from the log), TLS 1.3 at least, token authentication, no
/// JetStream.
pub(super) fn nats_config(cert: &Path, key: &Path, token: &str) -> String {
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

/// When JetStream's file store fsyncs (its `sync_interval` setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum JsSync {
    /// `sync_interval` left at its default, 2 min: a PubAck does not wait
    /// for an fsync.
    Default,
    /// `sync_interval: always` (nats-server 2.10+): an explicit sync on
    /// every write, before the PubAck.
    Always,
}

/// The `jetstream` block appended to [`nats_config`] for the sections that
/// need JetStream: file storage under `store_dir`, bounded memory and file
/// stores, `sync_interval` as `sync` says, everything else at its default
/// (with [`JsSync::Default`] that includes `sync_interval`, 2 min: the file
/// store does not fsync before a PubAck).
pub(super) fn jetstream_config(store_dir: &Path, sync: JsSync) -> String {
    let sync = match sync {
        JsSync::Default => "",
        JsSync::Always => "  sync_interval: always\n",
    };
    format!(
        "jetstream {{\n  store_dir: {}\n  max_memory_store: {JS_MAX_MEMORY}\n  \
         max_file_store: {JS_MAX_FILE}\n{sync}}}\n",
        quoted(&store_dir.display().to_string()),
    )
}

/// A double-quoted string in the NATS configuration format.
pub(super) fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A `nats-server` child process with its own CA, certificate, token and
/// temporary directory (which also holds the JetStream store).
pub(super) struct NatsServer {
    child: std::process::Child,
    addr: SocketAddr,
    pub(super) version: String,
    tls: Arc<rustls::ClientConfig>,
    token: Secret<String>,
    _dir: tempfile::TempDir,
}

impl NatsServer {
    /// Core NATS only, no JetStream.
    pub(super) async fn start(bin: &Path) -> Result<Self, Failure> {
        Self::start_with(bin, None).await
    }

    /// With JetStream ([`jetstream_config`], default `sync_interval`), its
    /// store in the server's temporary directory.
    pub(super) async fn start_jetstream(bin: &Path) -> Result<Self, Failure> {
        Self::start_with(bin, Some(JsSync::Default)).await
    }

    /// As [`NatsServer::start_jetstream`], with `sync_interval` as `sync`
    /// says ([`jetstream_config`]); every server has its own store.
    pub(super) async fn start_jetstream_with(bin: &Path, sync: JsSync) -> Result<Self, Failure> {
        Self::start_with(bin, Some(sync)).await
    }

    async fn start_with(bin: &Path, jetstream: Option<JsSync>) -> Result<Self, Failure> {
        let version = std::process::Command::new(bin)
            .arg("--version")
            .output()
            .map_err(|e| Failure(format!("running {} --version: {e}", bin.display())))?;
        let version = String::from_utf8_lossy(&version.stdout).trim().to_string();

        let dir = tempfile::tempdir()?;
        let certs = BenchCerts::get()?;
        let (ca, cert, key) = (certs.ca_der.clone(), &certs.cert, &certs.key);
        let token =
            rampart_identity::generate_api_key("nats_").map_err(|e| Failure(e.to_string()))?;
        let conf = dir.path().join("nats.conf");
        let mut text = nats_config(cert, key, token.expose());
        if let Some(sync) = jetstream {
            text += &jetstream_config(&dir.path().join("jetstream"), sync);
        }
        // The token is in this file (0600 in a 0700 directory), not in argv.
        rampart_identity::fsutil::write_private_file(&conf, text.as_bytes())?;
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

        let tls = tls13_client(ca)?;
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
    pub(super) async fn connect(&self) -> Result<NatsConn, Failure> {
        self.connect_with(false).await
    }

    /// A connection for requests: it announces headers and no-responders
    /// support (JetStream answers direct gets, and nats-server a request
    /// nobody serves, with `HMSG`), subscribed to its own inbox.
    pub(super) async fn requester(&self) -> Result<Requester, Failure> {
        Requester::new(self.connect_with(true).await?).await
    }

    async fn connect_with(&self, headers: bool) -> Result<NatsConn, Failure> {
        NatsConn::connect(self.addr, self.tls.clone(), self.token.expose(), headers)
            .await
            .map_err(|e| {
                Failure(format!(
                    "connecting to nats-server at {}: {}",
                    self.addr, e.0
                ))
            })
    }

    /// A `/proc/<pid>/status` field of the server in KiB (`VmRSS`).
    pub(super) fn memory_kib(&self, field: &str) -> Option<u64> {
        crate::bench::abuse::proc_status_kib(&format!("/proc/{}/status", self.child.id()), field)
    }

    /// SIGTERM, then SIGKILL (on drop) if it has not stopped within 5 s.
    pub(super) async fn stop(mut self) {
        crate::bench::abuse::stop_child(&mut self.child, "nats-server", Duration::from_secs(5))
            .await;
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        crate::bench::abuse::kill_child(&mut self.child);
    }
}

/// What the NATS subscribers saw besides messages.
#[derive(Default)]
pub(super) struct NatsEvents {
    /// `-ERR 'Slow Consumer...'` from the server.
    pub(super) slow: AtomicU64,
    /// Any other `-ERR` from the server.
    pub(super) errors: AtomicU64,
    /// Connections the server closed while a subscriber was counting.
    pub(super) disconnects: AtomicU64,
    /// Messages whose payload was not the workload's size.
    pub(super) bad_size: AtomicU64,
}

// === a lean NATS core-protocol client, for the bench only ===

/// One operation from a NATS server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ServerOp {
    /// `MSG <subject> <sid> [reply] <len>`: the payload (split off the
    /// read buffer, not copied).
    Msg(Bytes),
    /// A `MSG` as [`next_reply_op`] returns it, with its subject (both
    /// slices of the frame, not copies).
    MsgOn {
        subject: Bytes,
        payload: Bytes,
    },
    /// `HMSG <subject> <sid> [reply] <hdr_len> <total_len>`: the subject, the
    /// header block (`NATS/1.0[ status]` to the blank line, inclusive) and
    /// the payload, all slices of the frame.
    HMsg {
        subject: Bytes,
        headers: Bytes,
        payload: Bytes,
    },
    Ping,
    Pong,
    Ok,
    Info,
    /// `-ERR <text>`: the text without quotes.
    Err(String),
}

/// Takes one complete server operation off the front of `buf`; `None` if
/// `buf` does not hold a whole one yet. Parses in place: nothing is
/// allocated per message. A `MSG` comes as [`ServerOp::Msg`], its payload
/// alone.
pub(super) fn next_op(buf: &mut BytesMut) -> Result<Option<ServerOp>, String> {
    parse_op::<false>(buf)
}

/// As [`next_op`], but a `MSG` comes as [`ServerOp::MsgOn`], with its
/// subject: for matching replies to requests.
pub(super) fn next_reply_op(buf: &mut BytesMut) -> Result<Option<ServerOp>, String> {
    parse_op::<true>(buf)
}

/// [`next_op`] and [`next_reply_op`]; `SUBJECT` is a constant, so the
/// pub/sub path ([`next_op`]) compiles to the same code as before subjects
/// were kept.
fn parse_op<const SUBJECT: bool>(buf: &mut BytesMut) -> Result<Option<ServerOp>, String> {
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
        if SUBJECT {
            let subject = first_field(line, 4);
            let frame = buf.split_to(need - 2).freeze();
            buf.advance(2);
            return Ok(Some(ServerOp::MsgOn {
                subject: frame.slice(subject),
                payload: frame.slice(nl + 1..),
            }));
        }
        let mut payload = buf.split_to(need - 2);
        buf.advance(2);
        payload.advance(nl + 1);
        return Ok(Some(ServerOp::Msg(payload.freeze())));
    } else if let Some(rest) = line.strip_prefix(b"HMSG ") {
        let mut fields = rest.split(|&b| b == b' ').filter(|f| !f.is_empty());
        // subject, sid, an optional reply subject, the header length and the
        // total length last.
        let n = fields.clone().count();
        let (total, hdr) = match (n, fields.next_back(), fields.next_back()) {
            (4 | 5, Some(t), Some(h)) => (parse_len(t), parse_len(h)),
            _ => (None, None),
        };
        let (Some(total), Some(hdr)) = (total, hdr) else {
            return Err(bad("bad HMSG line"));
        };
        if hdr > total {
            return Err(bad("header length above the total length in"));
        }
        let need = nl + 1 + total + 2;
        if buf.len() < need {
            return Ok(None);
        }
        if &buf[need - 2..need] != b"\r\n" {
            return Err(bad("no CRLF after the payload of"));
        }
        let headers = nl + 1..nl + 1 + hdr;
        let block = &buf[headers.clone()];
        if !block.starts_with(b"NATS/") || !block.ends_with(b"\r\n\r\n") {
            return Err(bad(
                "a header block that is not NATS/x.y ... CRLF CRLF after",
            ));
        }
        let subject = first_field(line, 5);
        let frame = buf.split_to(need - 2).freeze();
        buf.advance(2);
        return Ok(Some(ServerOp::HMsg {
            subject: frame.slice(subject),
            headers: frame.slice(headers.clone()),
            payload: frame.slice(headers.end..),
        }));
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

/// Where the first space-separated field of `line` after its first `skip`
/// bytes (the operation and one space) lies, for a line already checked to
/// have it.
fn first_field(line: &[u8], skip: usize) -> std::ops::Range<usize> {
    let start = line[skip..]
        .iter()
        .position(|&b| b != b' ')
        .map_or(line.len(), |i| skip + i);
    let end = line[start..]
        .iter()
        .position(|&b| b == b' ')
        .map_or(line.len(), |i| start + i);
    start..end
}

/// The status code of a header block (`NATS/1.0 404 Message Not Found`);
/// `None` when the first line has none (an ordinary message).
pub(super) fn header_status(headers: &[u8]) -> Option<u16> {
    let first = headers.split(|&b| b == b'\r').next()?;
    let rest = first.strip_prefix(b"NATS/")?;
    let mut words = rest.split(|&b| b == b' ').filter(|w| !w.is_empty());
    let _version = words.next()?;
    let code = words.next()?;
    (code.len() == 3)
        .then(|| parse_len(code))
        .flatten()
        .and_then(|c| u16::try_from(c).ok())
}

/// A decimal length, as NATS writes it.
pub(super) fn parse_len(digits: &[u8]) -> Option<usize> {
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
pub(super) struct NatsConn {
    /// In pieces, as Rampart's own clients write (see `rampart_tls`), so
    /// that both sides' TLS copies cost the same.
    tls: Pieces<TlsStream<TcpStream>>,
    /// Plaintext from the server, not parsed yet.
    rbuf: BytesMut,
    /// Plaintext to send, and how much of it the TLS stream has taken.
    wbuf: Vec<u8>,
    wbuf_at: usize,
}

impl NatsConn {
    /// The TLS cipher suite the server picked for this connection.
    pub(super) fn cipher_suite(&self) -> String {
        suite_name(self.tls.get_ref().get_ref().1)
    }

    /// TCP, the server's INFO (plain text), the TLS 1.3 handshake, CONNECT
    /// with the token (no echo; with `headers`, announcing headers and
    /// no-responders support), and a PING answered by PONG.
    pub(super) async fn connect(
        addr: SocketAddr,
        cfg: Arc<rustls::ClientConfig>,
        token: &str,
        headers: bool,
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
            tls: Pieces::new(tls),
            rbuf: BytesMut::with_capacity(NATS_READ * 2),
            wbuf: Vec::with_capacity(NATS_WRITE + 1024),
            wbuf_at: 0,
        };
        let mut connect = serde_json::json!({
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
        if headers {
            connect["headers"] = true.into();
            connect["no_responders"] = true.into();
        }
        c.queue(format!("CONNECT {connect}\r\nPING\r\n").as_bytes());
        c.round_trip().await?;
        Ok(c)
    }

    /// Adds plaintext to send (nothing is written yet).
    pub(super) fn queue(&mut self, data: &[u8]) {
        self.wbuf.extend_from_slice(data);
    }

    /// Plaintext queued and not written yet.
    pub(super) fn queued(&self) -> usize {
        self.wbuf.len() - self.wbuf_at
    }

    /// Writes everything queued and flushes the TLS stream. Cancel-safe:
    /// `wbuf_at` only moves past what the stream took.
    pub(super) async fn flush(&mut self) -> Result<(), Failure> {
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
    pub(super) async fn fill(&mut self) -> Result<bool, Failure> {
        self.rbuf.reserve(NATS_READ);
        Ok(self.tls.read_buf(&mut self.rbuf).await? > 0)
    }

    /// The next server operation, reading as needed (PINGs are not
    /// answered here).
    pub(super) async fn next(&mut self) -> Result<ServerOp, Failure> {
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
    pub(super) async fn round_trip(&mut self) -> Result<(), Failure> {
        loop {
            self.flush().await?;
            match self.next().await? {
                ServerOp::Pong => return Ok(()),
                ServerOp::Ping => self.queue(b"PONG\r\n"),
                ServerOp::Err(e) => return Err(Failure(format!("nats-server: -ERR {e}"))),
                ServerOp::Ok
                | ServerOp::Info
                | ServerOp::Msg(_)
                | ServerOp::MsgOn { .. }
                | ServerOp::HMsg { .. } => {}
            }
        }
    }

    /// A publisher's look at its connection between writes, without
    /// waiting: reads what has arrived and queues PONG for every PING;
    /// `-ERR` is an error.
    pub(super) async fn poll_control(&mut self) -> Result<(), Failure> {
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

// === request/reply ===

/// A reply to a [`Requester::request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Reply {
    /// The header block, if the reply came as `HMSG`.
    pub(super) headers: Option<Bytes>,
    pub(super) payload: Bytes,
}

impl Reply {
    /// The reply's status code (`404` from a direct get of a missing key,
    /// `503` when nobody serves the subject), if it has one.
    pub(super) fn status(&self) -> Option<u16> {
        self.headers.as_deref().and_then(header_status)
    }
}

/// Requests over one connection, one at a time: the connection subscribes
/// to `_INBOX.<random>.*` once, every request sends `PUB <subject>
/// _INBOX.<random>.<n> <len>` with a fresh `n`, and the reply is the first
/// `MSG` or `HMSG` that arrives on that exact subject (anything else on the
/// inbox is stale and skipped). Parsing stays in place: a reply is slices
/// of the read buffer.
pub(super) struct Requester {
    conn: NatsConn,
    /// `_INBOX.<random>.`: a request's reply subject is this and its number.
    inbox: String,
    /// The number of the last request sent.
    n: u64,
    /// The last request's `PUB` line, reused.
    line: Vec<u8>,
}

impl Requester {
    /// Subscribes `conn` (which announced headers support) to its inbox.
    pub(super) async fn new(mut conn: NatsConn) -> Result<Self, Failure> {
        let inbox = format!("_INBOX.{}.", random_token()?);
        conn.queue(format!("SUB {inbox}* 1\r\nPING\r\n").as_bytes());
        // The PONG shows that the server has registered the SUB.
        conn.round_trip().await?;
        Ok(Requester {
            conn,
            inbox,
            n: 0,
            line: Vec::with_capacity(256),
        })
    }

    /// Publishes `payload` to `subject` with a reply subject and waits for
    /// the reply, answering server PINGs meanwhile; `-ERR` is an error.
    /// Cancelling it leaves the reply to be skipped by the next request.
    pub(super) async fn request(
        &mut self,
        subject: &str,
        payload: &[u8],
    ) -> Result<Reply, Failure> {
        self.queue_request(subject, payload);
        self.conn.flush().await?;
        loop {
            while let Some(op) = next_reply_op(&mut self.conn.rbuf).map_err(Failure)? {
                match as_reply(op) {
                    Ok((subject, reply)) if self.is_reply(&subject) => return Ok(reply),
                    Err(ServerOp::Ping) => {
                        self.conn.queue(b"PONG\r\n");
                        self.conn.flush().await?;
                    }
                    Err(ServerOp::Err(e)) => return Err(Failure(format!("nats-server: -ERR {e}"))),
                    _ => {}
                }
            }
            if !self.conn.fill().await? {
                return Err(Failure(
                    "nats-server closed a requester's connection".into(),
                ));
            }
        }
    }

    /// Queues `PUB <subject> <inbox><n> <len>` and `payload` under the
    /// next request number `n` (nothing is written yet).
    fn queue_request(&mut self, subject: &str, payload: &[u8]) {
        use std::io::Write as _;
        self.n += 1;
        self.line.clear();
        let _ = write!(
            self.line,
            "PUB {subject} {}{} {}\r\n",
            self.inbox,
            self.n,
            payload.len()
        );
        self.conn.queue(&self.line);
        self.conn.queue(payload);
        self.conn.queue(b"\r\n");
    }

    /// Whether `subject` is the reply subject of the last request.
    fn is_reply(&self, subject: &[u8]) -> bool {
        inbox_number(&self.inbox, subject) == Some(self.n)
    }

    /// Pipelined requests, as a NATS client's async publish sends them
    /// (JetStream's `PublishAsync` with a pending limit): keeps `in_flight`
    /// PUBs to `subject` outstanding on this one connection, each with its
    /// own reply subject, and sends another as each reply arrives, until
    /// `deadline`; then waits for the outstanding replies. `on_reply` sees
    /// every reply, and returning false stops the sending (the outstanding
    /// replies are still awaited). Replies to requests sent before this
    /// call are skipped.
    pub(super) async fn pipeline(
        &mut self,
        subject: &str,
        payload: &[u8],
        in_flight: usize,
        deadline: Instant,
        mut on_reply: impl FnMut(Reply) -> bool,
    ) -> Result<(), Failure> {
        let first = self.n + 1;
        let mut outstanding = 0usize;
        let mut sending = true;
        loop {
            if Instant::now() >= deadline {
                sending = false;
            }
            while sending && outstanding < in_flight {
                self.queue_request(subject, payload);
                outstanding += 1;
            }
            self.conn.flush().await?;
            if outstanding == 0 {
                return Ok(());
            }
            if !self.conn.fill().await? {
                return Err(Failure(
                    "nats-server closed a publisher's connection".into(),
                ));
            }
            while let Some(op) = next_reply_op(&mut self.conn.rbuf).map_err(Failure)? {
                let (subject, reply) = match as_reply(op) {
                    Ok(r) => r,
                    Err(ServerOp::Ping) => {
                        self.conn.queue(b"PONG\r\n");
                        continue;
                    }
                    Err(ServerOp::Err(e)) => return Err(Failure(format!("nats-server: -ERR {e}"))),
                    Err(_) => continue,
                };
                if !inbox_number(&self.inbox, &subject)
                    .is_some_and(|n| (first..=self.n).contains(&n))
                {
                    continue;
                }
                outstanding -= 1;
                if !on_reply(reply) {
                    sending = false;
                }
            }
        }
    }
}

/// A `MSG` or `HMSG` (as [`next_reply_op`] parses them) as its subject
/// and a [`Reply`]; any other operation back as it came.
fn as_reply(op: ServerOp) -> Result<(Bytes, Reply), ServerOp> {
    match op {
        ServerOp::MsgOn { subject, payload } => Ok((
            subject,
            Reply {
                headers: None,
                payload,
            },
        )),
        ServerOp::HMsg {
            subject,
            headers,
            payload,
        } => Ok((
            subject,
            Reply {
                headers: Some(headers),
                payload,
            },
        )),
        other => Err(other),
    }
}

/// The request number of reply subject `subject` on inbox `inbox`
/// (`_INBOX.<random>.`), if it is one.
fn inbox_number(inbox: &str, subject: &[u8]) -> Option<u64> {
    subject
        .strip_prefix(inbox.as_bytes())
        .and_then(parse_len)
        .map(|n| n as u64)
}

/// A TLS client configuration that trusts `ca` (the run's CA) and offers
/// TLS 1.3 only, so that a connection proves 1.3.
pub(super) fn tls13_client(
    ca: rustls::pki_types::CertificateDer<'static>,
) -> Result<Arc<rustls::ClientConfig>, Failure> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca)?;
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(tls))
}

/// The cipher suite the TLS server at `addr` (Rampart's TCP listener)
/// picks from what [`tls13_client`] offers, which is what the bench's
/// NATS client and `rampart_client` offer too: rustls's default order.
pub(super) async fn cipher_suite_at(
    addr: SocketAddr,
    ca: rustls::pki_types::CertificateDer<'static>,
) -> Result<String, Failure> {
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let tls = TlsConnector::from(tls13_client(ca)?)
        .connect(name, tcp)
        .await?;
    Ok(suite_name(tls.get_ref().1))
}

fn suite_name(c: &rustls::ClientConnection) -> String {
    c.negotiated_cipher_suite()
        .map_or_else(|| "none".into(), |s| format!("{:?}", s.suite()))
}

/// 16 hex digits from the operating system's random source, for inboxes.
fn random_token() -> Result<String, Failure> {
    let mut b = [0u8; 8];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut b)
        .map_err(|_| Failure("no random bytes for a NATS inbox".into()))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// A NATS subscriber: counts MSGs in place, answers PINGs, reports `-ERR`.
pub(super) struct NatsSub {
    conn: NatsConn,
    size: usize,
    events: Arc<NatsEvents>,
}

impl NatsSub {
    pub(super) async fn subscribe(
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

/// The certificate every server of a run presents, Rampart and the peers
/// alike: a CA and a server certificate for 127.0.0.1, ::1 and localhost,
/// made once per run (rcgen) in a temporary folder that lives as long as
/// the process (removed by [`BenchCerts::remove`] at the end of the run).
pub(super) struct BenchCerts {
    pub(super) ca_der: rustls::pki_types::CertificateDer<'static>,
    /// The CA, PEM.
    pub(super) ca: PathBuf,
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
    dir: PathBuf,
}

impl BenchCerts {
    /// The run's certificates, made on first use.
    pub(super) fn get() -> Result<&'static BenchCerts, Failure> {
        static CERTS: std::sync::OnceLock<BenchCerts> = std::sync::OnceLock::new();
        if let Some(c) = CERTS.get() {
            return Ok(c);
        }
        let made = loopback_certificates()?;
        Ok(CERTS.get_or_init(|| made))
    }

    /// Removes the folder (the servers using it have stopped).
    pub(super) fn remove(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn loopback_certificates() -> Result<BenchCerts, Failure> {
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

    // A folder of its own that outlives this call: kept until remove().
    let dir = tempfile::Builder::new()
        .prefix("rampart-bench-certs")
        .tempdir()?
        .keep();
    let (ca_path, cert_path, key_path) = (
        dir.join("ca.crt"),
        dir.join("server.crt"),
        dir.join("server.key"),
    );
    rampart_identity::fsutil::write_private_file(&ca_path, ca.pem().as_bytes())?;
    rampart_identity::fsutil::write_private_file(&cert_path, cert.pem().as_bytes())?;
    rampart_identity::fsutil::write_private_file(&key_path, kp.serialize_pem().as_bytes())?;
    Ok(BenchCerts {
        ca_der: ca.der().clone(),
        ca: ca_path,
        cert: cert_path,
        key: key_path,
        dir,
    })
}

impl Received for NatsSub {
    async fn next_arrivals(&mut self, mut each: Option<Each<'_>>) -> Option<u64> {
        loop {
            // PONGs queued by an earlier call.
            self.conn.flush().await.ok()?;
            let mut got = 0u64;
            loop {
                match next_op(&mut self.conn.rbuf) {
                    Ok(Some(ServerOp::Msg(payload))) => {
                        got += 1;
                        if let Some(f) = each.as_mut() {
                            f(&payload);
                        }
                        if payload.len() != self.size {
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

#[cfg(test)]
mod tests {
    use super::*;

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
            ServerOp::Msg(Bytes::from_static(b"hello")),
            ServerOp::Msg(Bytes::from_static(b"a\r\n")),
            ServerOp::Ping,
            ServerOp::Msg(Bytes::new()),
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
        assert_eq!(
            ops,
            vec![
                ServerOp::Msg(Bytes::from_static(b"MSG \r\n\r\n")),
                ServerOp::Ping
            ]
        );
        // An incomplete header or payload waits for more.
        let (ops, rest) = parse_all(&[b"MSG s 1 4\r\nab"]);
        assert!(ops.is_empty());
        assert_eq!(&rest[..], b"MSG s 1 4\r\nab");
    }

    #[test]
    fn jetstream_config_has_a_store_and_limits() {
        let c = jetstream_config(Path::new("/tmp/a \"b\"/jetstream"), JsSync::Default);
        assert!(c.starts_with("jetstream {\n"), "{c}");
        assert!(
            c.contains("  store_dir: \"/tmp/a \\\"b\\\"/jetstream\"\n"),
            "{c}"
        );
        assert!(c.contains("  max_memory_store: 1073741824\n"), "{c}");
        assert!(c.contains("  max_file_store: 8589934592\n"), "{c}");
        assert!(c.ends_with("}\n"), "{c}");
        assert!(!c.contains("sync"), "the default sync_interval: {c}");
        let a = jetstream_config(Path::new("/js"), JsSync::Always);
        assert!(a.starts_with("jetstream {\n  store_dir: \"/js\"\n"), "{a}");
        assert!(a.ends_with("  sync_interval: always\n}\n"), "{a}");
        assert_eq!(a.matches("sync").count(), 1, "{a}");
    }

    /// As [`parse_all`], with [`next_reply_op`].
    fn parse_all_replies(chunks: &[&[u8]]) -> (Vec<ServerOp>, BytesMut) {
        let mut buf = BytesMut::new();
        let mut ops = Vec::new();
        for c in chunks {
            buf.extend_from_slice(c);
            while let Some(op) = next_reply_op(&mut buf).unwrap() {
                ops.push(op);
            }
        }
        (ops, buf)
    }

    fn hmsg(subject: &'static [u8], headers: &'static [u8], payload: &'static [u8]) -> ServerOp {
        ServerOp::HMsg {
            subject: Bytes::from_static(subject),
            headers: Bytes::from_static(headers),
            payload: Bytes::from_static(payload),
        }
    }

    #[test]
    fn hmsg_and_subjects_parse_from_split_frames() {
        // A direct get's answer, a 404, a no-responders 503, a PubAck as a
        // MSG, and a HMSG whose payload holds CR LF and "HMSG".
        let stream: &[u8] = b"HMSG _INBOX.ab.1 1 73 76\r\n\
            NATS/1.0\r\nNats-Stream: KV_c\r\nNats-Subject: $KV.c.k1\r\nNats-Sequence: 7\r\n\r\nxyz\r\n\
            PING\r\n\
            HMSG  _INBOX.ab.2  1  34 34\r\nNATS/1.0 404 Message Not Found\r\n\r\n\r\n\
            MSG _INBOX.ab.3 1 23\r\n{\"stream\":\"S\",\"seq\":12}\r\n\
            HMSG _INBOX.ab.4 1 reply.x 16 16\r\nNATS/1.0 503\r\n\r\n\r\n\
            HMSG a 1 12 21\r\nNATS/1.0\r\n\r\nHMSG \r\n\r\n\r\n\
            -ERR 'Authorization Violation'\r\n";
        let want = vec![
            hmsg(
                b"_INBOX.ab.1",
                b"NATS/1.0\r\nNats-Stream: KV_c\r\nNats-Subject: $KV.c.k1\r\nNats-Sequence: 7\r\n\r\n",
                b"xyz",
            ),
            ServerOp::Ping,
            hmsg(b"_INBOX.ab.2", b"NATS/1.0 404 Message Not Found\r\n\r\n", b""),
            ServerOp::MsgOn {
                subject: Bytes::from_static(b"_INBOX.ab.3"),
                payload: Bytes::from_static(b"{\"stream\":\"S\",\"seq\":12}"),
            },
            hmsg(b"_INBOX.ab.4", b"NATS/1.0 503\r\n\r\n", b""),
            hmsg(b"a", b"NATS/1.0\r\n\r\n", b"HMSG \r\n\r\n"),
            ServerOp::Err("Authorization Violation".into()),
        ];
        let (ops, rest) = parse_all_replies(&[stream]);
        assert_eq!(ops, want);
        assert!(rest.is_empty());
        for at in 0..stream.len() {
            let (ops, rest) = parse_all_replies(&[&stream[..at], &stream[at..]]);
            assert_eq!(ops, want, "split at {at}");
            assert!(rest.is_empty());
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(parse_all_replies(&bytes).0, want);

        // next_op gives the same HMSGs, and MSGs as payloads alone.
        let (ops, _) = parse_all(&[stream]);
        let mut plain = want.clone();
        plain[3] = ServerOp::Msg(Bytes::from_static(b"{\"stream\":\"S\",\"seq\":12}"));
        assert_eq!(ops, plain);

        // An incomplete header block or payload waits for more.
        let (ops, rest) = parse_all_replies(&[b"HMSG s 1 12 14\r\nNATS/1.0\r\n\r\na"]);
        assert!(ops.is_empty());
        assert_eq!(&rest[..], b"HMSG s 1 12 14\r\nNATS/1.0\r\n\r\na");
    }

    #[test]
    fn header_status_reads_the_first_line() {
        assert_eq!(
            header_status(b"NATS/1.0\r\nNats-Sequence: 404\r\n\r\n"),
            None
        );
        assert_eq!(
            header_status(b"NATS/1.0 404 Message Not Found\r\n\r\n"),
            Some(404)
        );
        assert_eq!(header_status(b"NATS/1.0 503\r\n\r\n"), Some(503));
        assert_eq!(header_status(b"NATS/1.0 40\r\n\r\n"), None);
        assert_eq!(header_status(b"HTTP/1.1 200 OK\r\n\r\n"), None);
        let r = Reply {
            headers: Some(Bytes::from_static(b"NATS/1.0 408 Bad Request\r\n\r\n")),
            payload: Bytes::new(),
        };
        assert_eq!(r.status(), Some(408));
        let r = Reply {
            headers: None,
            payload: Bytes::from_static(b"{}"),
        };
        assert_eq!(r.status(), None);
    }

    #[test]
    fn msg_parser_rejects_garbage() {
        for bad in [
            &b"MSG s 1 x\r\n"[..],
            b"MSG s\r\n",
            b"MSG s 1 a b 3\r\n",
            b"MSG s 1 3\r\nabcXY",
            b"HELLO\r\n",
            b"HMSG s 1 3\r\n",
            b"HMSG s 1 x 3\r\n",
            b"HMSG s 1 r a 4 8\r\n",
            b"HMSG s 1 9 8\r\n",
            b"HMSG s 1 4 4\r\nabcdXY",
            b"HMSG s 1 4 4\r\nabcd\r\n",
            b"HMSG s 1 12 12\r\nNATS/1.0\r\nX:\r\n",
        ] {
            let mut buf = BytesMut::from(bad);
            assert!(
                next_op(&mut buf).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(parse_len(b"1048576"), Some(1 << 20));
        let msg = ServerOp::MsgOn {
            subject: Bytes::from_static(b"_INBOX.ab.3"),
            payload: Bytes::from_static(b"{}"),
        };
        let (subject, reply) = as_reply(msg).unwrap();
        assert_eq!(
            (&subject[..], reply.headers, &reply.payload[..]),
            (&b"_INBOX.ab.3"[..], None, &b"{}"[..])
        );
        let (_, reply) = as_reply(hmsg(b"s", b"NATS/1.0 503\r\n\r\n", b"")).unwrap();
        assert_eq!(reply.status(), Some(503));
        assert_eq!(as_reply(ServerOp::Ping), Err(ServerOp::Ping));
        assert_eq!(inbox_number("_INBOX.ab.", b"_INBOX.ab.17"), Some(17));
        assert_eq!(inbox_number("_INBOX.ab.", b"_INBOX.abc.17"), None);
        assert_eq!(inbox_number("_INBOX.ab.", b"_INBOX.ab."), None);
        assert_eq!(inbox_number("_INBOX.ab.", b"_INBOX.ab.1x"), None);
        assert_eq!(parse_len(b""), None);
        assert_eq!(parse_len(b"-1"), None);
    }
}
