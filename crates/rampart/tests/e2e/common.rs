//! Shared test harness: a real server on 127.0.0.1 with ephemeral ports,
//! clients for both transports, and raw connections for protocol abuse.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rampart_client::{Client, ClientConfig, Subscription, Transport};
use rampart_proto::{Frame, FrameDecoder, DEFAULT_MAX_FRAME};
use rampart_server::{Config, Server, ServerOptions};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

pub const KEY_ACME: &str = "rk_test_acme_0123456789abcdefghijklmnopqrstuvwxyz";
pub const KEY_GLOBEX: &str = "rk_test_globex_0123456789abcdefghijklmnopqrstuvwx";

pub struct TestServer {
    pub server: Server,
    _dir: tempfile::TempDir,
    pub ca: PathBuf,
}

pub fn base_config(dir: &std::path::Path) -> Config {
    let mut c = Config::load(None, &|_| None).expect("default config");
    c.data_dir = dir.to_path_buf();
    c.quic_bind = "127.0.0.1:0".into();
    c.tcp_bind = "127.0.0.1:0".into();
    c.http_bind = "127.0.0.1:0".into();
    // The default (100 ms) answers 503 when a login's audit record is not
    // durable in time, which a 2-core machine running the whole suite in
    // parallel can miss; no test here is about that bound.
    c.audit_durable_timeout_ms = 5_000;
    // No load balancer to drain: stops are immediate unless a test drains.
    c.shutdown_drain_secs = 0;
    c
}

pub async fn start() -> TestServer {
    start_with(|_| {}).await
}

pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
    let dir = tempfile::tempdir().expect("tempdir");
    start_in(dir, tweak).await
}

/// Starts a server over an existing data directory (a restart).
pub async fn start_in(dir: tempfile::TempDir, tweak: impl FnOnce(&mut Config)) -> TestServer {
    let mut config = base_config(dir.path());
    tweak(&mut config);
    let keys = format!("acme:{KEY_ACME},globex:{KEY_GLOBEX}");
    let server = Server::start(
        ServerOptions::new(config)
            .dev(true)
            .plain_api_keys(Some(rampart_identity::Secret::new(keys))),
    )
    .await
    .expect("server starts");
    let ca = server.dev_setup().expect("dev setup").ca_cert.clone();
    TestServer {
        server,
        _dir: dir,
        ca,
    }
}

impl TestServer {
    /// Stops the server and hands back its data directory.
    pub async fn stop(self) -> tempfile::TempDir {
        self.server
            .shutdown(std::time::Duration::from_secs(5))
            .await;
        self._dir
    }

    /// Stops the server as `rampart server` does on SIGTERM, within
    /// `timeout`; hands back how it went and the data directory.
    pub async fn stop_within(
        self,
        timeout: Duration,
    ) -> (rampart_server::Stopped, tempfile::TempDir) {
        let stopped = self.server.shutdown(timeout).await;
        (stopped, self._dir)
    }

    pub fn data_dir(&self) -> PathBuf {
        self._dir.path().to_path_buf()
    }

    pub fn url(&self, t: Transport) -> String {
        match t {
            Transport::Quic => format!("quic://{}", self.server.quic_addr().expect("quic")),
            _ => format!("tls://{}", self.server.tcp_addr().expect("tcp")),
        }
    }

    pub fn admin(&self, key: &str) -> rampart_client::AdminClient {
        let url = format!("https://{}", self.server.http_addr().expect("https"));
        rampart_client::AdminClient::new(&url, &self.config(key)).expect("admin client")
    }

    pub fn config(&self, key: &str) -> ClientConfig {
        ClientConfig::default().with_ca(&self.ca).with_api_key(key)
    }

    pub async fn client(&self, t: Transport, key: &str) -> Client {
        Client::connect(&self.url(t), self.config(key))
            .await
            .expect("client connects")
    }

    /// The dev CA, as rustls trusts it.
    pub fn ca_roots(&self) -> rustls::RootCertStore {
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pki_types::CertificateDer::pem_file_iter(&self.ca).expect("ca") {
            roots.add(c.expect("cert")).expect("add");
        }
        roots
    }

    /// A TLS client config trusting the dev CA, for raw connections.
    pub fn rustls_client(&self) -> rustls::ClientConfig {
        let roots = self.ca_roots();
        let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_root_certificates(roots)
        .with_no_client_auth();
        cfg.alpn_protocols = vec![b"rampart/1".to_vec()];
        cfg
    }

    /// A TLS (or QUIC) connection that speaks no protocol of its own.
    pub async fn raw(&self, t: Transport) -> Raw {
        match t {
            Transport::Quic => {
                let addr = self.server.quic_addr().expect("quic");
                let mut ep =
                    quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("ep");
                let crypto =
                    quinn::crypto::rustls::QuicClientConfig::try_from(self.rustls_client())
                        .expect("quic crypto");
                ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
                let conn = ep
                    .connect(addr, "localhost")
                    .expect("connect")
                    .await
                    .expect("quic handshake");
                let (send, recv) = conn.open_bi().await.expect("stream");
                Raw {
                    rd: Box::new(recv),
                    wr: Box::new(send),
                    _keep: Some((ep, conn)),
                    buf: BytesMut::new(),
                }
            }
            _ => {
                let addr = self.server.tcp_addr().expect("tcp");
                let tcp = tokio::net::TcpStream::connect(addr).await.expect("tcp");
                let tls = tokio_rustls::TlsConnector::from(Arc::new(self.rustls_client()))
                    .connect(
                        rustls_pki_types::ServerName::try_from("localhost").expect("name"),
                        tcp,
                    )
                    .await
                    .expect("tls handshake");
                let (r, w) = tokio::io::split(tls);
                Raw {
                    rd: Box::new(r),
                    wr: Box::new(w),
                    _keep: None,
                    buf: BytesMut::new(),
                }
            }
        }
    }
}

pub struct Raw {
    pub rd: Box<dyn AsyncRead + Unpin + Send>,
    pub wr: Box<dyn AsyncWrite + Unpin + Send>,
    _keep: Option<(quinn::Endpoint, quinn::Connection)>,
    buf: BytesMut,
}

impl Raw {
    pub async fn send(&mut self, f: &Frame) {
        use tokio::io::AsyncWriteExt;
        self.wr.write_all(&f.to_bytes()).await.expect("write");
        self.wr.flush().await.expect("flush");
    }

    /// The next frame, or `None` once the server closed the connection.
    /// Panics if nothing happens within 10 s.
    pub async fn recv(&mut self) -> Option<Frame> {
        tokio::time::timeout(Duration::from_secs(10), async {
            let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
            loop {
                if let Ok(Some(d)) = dec.decode(&mut self.buf) {
                    return d.frame.ok();
                }
                match self.rd.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("server answered or closed within 10 s")
    }

    /// Reads until the server closes; returns the NACK codes seen on the way.
    pub async fn codes_until_closed(&mut self) -> Vec<u16> {
        let mut codes = Vec::new();
        while let Some(f) = self.recv().await {
            if let rampart_proto::Message::Nack(n) = f.msg {
                codes.push(n.code.0);
            }
        }
        codes
    }
}

/// Runs a scenario over QUIC and over TLS/TCP as two tests.
#[macro_export]
macro_rules! both_transports {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn quic() {
                super::$name(rampart_client::Transport::Quic).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn tcp() {
                super::$name(rampart_client::Transport::Tcp).await
            }
        }
    )*};
}

pub fn hello() -> Frame {
    Frame::new(
        1,
        rampart_proto::Hello {
            version: 1,
            capabilities: 0,
            max_frame: DEFAULT_MAX_FRAME as u32,
            agent: "test".into(),
        },
    )
}

pub fn auth(key: &str) -> Frame {
    Frame::new(
        2,
        rampart_proto::Auth {
            method: rampart_proto::AuthMethod::ApiKey,
            credential: bytes::Bytes::copy_from_slice(key.as_bytes()),
        },
    )
}

pub fn nack_code(f: &Frame) -> Option<u16> {
    match &f.msg {
        rampart_proto::Message::Nack(n) => Some(n.code.0),
        _ => None,
    }
}

/// Declares the stream `name` in `tenant`'s `prod` namespace with the
/// tenant's admin `key` and the settings in `body` (`{}` for a live
/// stream), and checks that it was created.
pub async fn create_stream(
    s: &TestServer,
    key: &str,
    tenant: &str,
    name: &str,
    body: serde_json::Value,
) {
    let mut body = body;
    body["name"] = name.into();
    let r = s
        .admin(key)
        .call(
            "POST",
            &format!("/v1/tenants/{tenant}/namespaces/prod/streams"),
            Some(&body),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.error());
}

/// Creates the durable `on_commit` stream `acme/prod/ledger`.
pub async fn create_ledger(s: &TestServer) {
    let body = serde_json::json!({ "durable": true, "sync": "on_commit" });
    create_stream(s, KEY_ACME, "acme", "ledger", body).await;
}

/// The audit log files (`audit-*.jsonl`) in `dir`, oldest first.
pub fn audit_logs(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    files
}

/// A full disk under the audit log: the newest file of the audit directory
/// `dir` is moved aside and replaced by a link to `/dev/full` (root ignores
/// permission bits, so chmod would prove nothing). Returns (the file, where
/// it went); renaming it back mends the disk.
#[cfg(unix)]
pub fn fill_audit_disk(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    let log = audit_logs(dir).pop().expect("an audit file");
    let aside = log.with_extension("aside");
    std::fs::rename(&log, &aside).unwrap();
    std::os::unix::fs::symlink("/dev/full", &log).unwrap();
    (log, aside)
}

/// Every file under `dir` with its bytes, sorted by path: for before/after
/// comparisons and raw-byte scans.
pub fn snapshot(dir: &std::path::Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// Runs the built `rampart` binary with `args` as an HTTPS admin client of
/// `s` holding `key` (from a private key file, as operators do), with
/// nothing else from the environment.
pub fn admin_cli(s: &TestServer, key: &str, args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("admin.key");
    std::fs::write(&key_file, key).unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(args)
        .env_clear()
        .env(
            "RAMPART_HTTP_URL",
            format!("https://{}", s.server.http_addr().unwrap()),
        )
        .env("RAMPART_CA_CERT", &s.ca)
        .env("RAMPART_API_KEY_FILE", &key_file)
        .output()
        .unwrap()
}

/// The next event on `sub` within `secs` seconds; panics if none comes in
/// time or the subscription ends instead.
pub async fn next_event(sub: &mut Subscription, secs: u64) -> rampart_client::Event {
    tokio::time::timeout(Duration::from_secs(secs), sub.next())
        .await
        .unwrap_or_else(|_| panic!("no event within {secs} s"))
        .expect("subscription open")
}

/// `sub` gets `payloads`, each once and in order, and then nothing more
/// (`extra` says what one more would mean).
pub async fn receives_exactly<P: AsRef<[u8]>>(
    sub: &mut Subscription,
    payloads: impl IntoIterator<Item = P>,
    extra: &str,
) {
    for want in payloads {
        let e = next_event(sub, 10).await;
        assert_eq!(e.payload, want.as_ref());
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(200), sub.next())
            .await
            .is_err(),
        "{extra}"
    );
}
