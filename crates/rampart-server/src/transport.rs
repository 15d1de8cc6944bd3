//! Listeners: QUIC (one bidirectional stream per connection, ALPN
//! `rampart/1`) and TLS over TCP. Both hand their streams to the same
//! connection driver.
//!
//! Every connection passes admission (`rampart_limits::Admission`: caps
//! per server and per IP, unauthenticated connections per IP, new
//! connections per second per IP) before any TLS work; a refused one costs
//! an accept and a close. Under a burst of QUIC handshakes, clients must
//! first prove their address with a stateless retry.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicServerConfig;
use rampart_limits::Ticket;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, trace, warn};

use crate::auth::CertNames;
use crate::conn::{serve, Peer};
use crate::read_ahead::ReadAhead;
use crate::Shared;

/// Connections the kernel may queue for accept: room for a burst of
/// connects (a flood, or every client reconnecting after a restart)
/// without the kernel dropping SYNs, which clients retry only after 1 s,
/// 3 s, ... The kernel caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

/// When a new connection must have authenticated: `auth_timeout_ms`
/// shortened by up to a quarter, at random per connection. A flood opened
/// in one burst then times out spread over a second or more instead of all
/// in the same millisecond, which would stall every other connection
/// while ten thousand closes run at once.
pub(crate) fn preauth_deadline(shared: &Shared, addr: SocketAddr) -> Instant {
    let full = shared.config.auth_timeout();
    let now = Instant::now();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mix = (u64::from(addr.port()) ^ u64::from(nanos)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let cut = full / 4 * ((mix >> 56) as u32) / 256;
    now + (full - cut)
}

/// Binds a TCP listener with a deep accept queue.
pub(crate) async fn bind_tcp(addr: &str) -> std::io::Result<TcpListener> {
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await? {
        let socket = if a.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(a).and_then(|()| socket.listen(LISTEN_BACKLOG)) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no address to bind")))
}

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// A runtime of one thread, at a lower scheduling priority, where TCP
/// connections are accepted, admitted and wait for their first byte. Only
/// connections that send something move to the main runtime: a flood of
/// idle sockets (accepts, timers, closes) never queues ahead of
/// established connections' work, and under CPU pressure the kernel runs
/// established connections first.
pub(crate) struct Edge(std::sync::Mutex<Option<tokio::runtime::Runtime>>);

impl std::fmt::Debug for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Edge")
    }
}

impl Edge {
    pub(crate) fn start() -> std::io::Result<Edge> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("rampart-edge")
            .on_thread_start(lower_priority)
            .enable_all()
            .build()?;
        Ok(Edge(std::sync::Mutex::new(Some(rt))))
    }

    fn handle(&self) -> Option<tokio::runtime::Handle> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|rt| rt.handle().clone())
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        if let Some(rt) = self.0.get_mut().unwrap_or_else(|e| e.into_inner()).take() {
            rt.shutdown_background();
        }
    }
}

/// Nice 10 for the calling thread (best effort; Linux sets it per thread).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        let tid = rustix::thread::gettid();
        if let Err(e) = rustix::process::setpriority_process(Some(tid), 10) {
            debug!(error = %e, "could not lower the edge thread's priority");
        }
    }
}

/// Accepts TCP connections until shutdown, on the edge runtime. Each is
/// admitted in accept order (a refused one is closed at once, before any
/// TLS byte is read), waits there for its first byte until `deadline_of`
/// its arrival, and only then goes to the main runtime, where `handle`
/// serves it. A failing accept (out of file descriptors and the like)
/// backs off and keeps serving.
pub(crate) async fn accept_tcp<F, Fut>(
    listener: TcpListener,
    shared: Arc<Shared>,
    what: &'static str,
    deadline_of: fn(&Shared, SocketAddr) -> Instant,
    handle: F,
) where
    F: Fn(TcpStream, SocketAddr, Ticket, Instant) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let main = tokio::runtime::Handle::current();
    let Some(edge) = shared.edge.handle() else {
        return;
    };
    let listener = match listener.into_std() {
        Ok(l) => l,
        Err(e) => {
            warn!(error = %e, listener = what, "cannot move the listener to the edge runtime");
            return;
        }
    };
    let task = edge.spawn(async move {
        let listener = match TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %e, listener = what, "cannot listen on the edge runtime");
                return;
            }
        };
        let mut shutdown = shared.shutdown.clone();
        loop {
            let (stream, addr) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        warn!(error = %e, listener = what, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = shutdown.changed() => break,
            };
            let ticket = match shared.admission.admit(addr.ip()) {
                Ok(t) => t,
                Err(refusal) => {
                    debug!(
                        peer = %addr,
                        listener = what,
                        limit = refusal.limit(),
                        "connection refused"
                    );
                    continue;
                }
            };
            let deadline = deadline_of(&shared, addr);
            let (handle, main) = (handle.clone(), main.clone());
            tokio::spawn(async move {
                let _ = stream.set_nodelay(true);
                // Wait for the first byte, within the deadline. Every
                // client starts with a TLS handshake record (type 22);
                // anything else is closed here, costing the main runtime
                // nothing.
                let mut first = [0u8; 1];
                match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
                    Ok(Ok(1)) if first[0] == TLS_HANDSHAKE => {}
                    Ok(_) => {
                        debug!(peer = %addr, listener = what, "not TLS; closed");
                        return;
                    }
                    Err(_) => {
                        debug!(peer = %addr, listener = what, "nothing sent before the deadline");
                        return;
                    }
                }
                let stream = match stream.into_std() {
                    Ok(s) => s,
                    Err(e) => {
                        debug!(peer = %addr, error = %e, "cannot hand the connection over");
                        return;
                    }
                };
                main.spawn(async move {
                    match TcpStream::from_std(stream) {
                        Ok(stream) => handle(stream, addr, ticket, deadline).await,
                        Err(e) => {
                            debug!(peer = %addr, error = %e, "cannot take the connection over")
                        }
                    }
                });
            });
        }
    });
    let _ = task.await;
}

/// Accepts TLS-over-TCP connections until shutdown.
pub(crate) async fn run_tcp(listener: TcpListener, acceptor: TlsAcceptor, shared: Arc<Shared>) {
    let accepting = shared.clone();
    accept_tcp(
        listener,
        accepting,
        "tcp",
        preauth_deadline,
        move |stream, addr, ticket, deadline| {
            let shared = shared.clone();
            let acceptor = acceptor.clone();
            async move {
                let _guard = shared.track();
                handle_tcp(stream, addr, ticket, deadline, acceptor, shared.clone()).await;
            }
        },
    )
    .await;
}

async fn handle_tcp(
    stream: TcpStream,
    addr: SocketAddr,
    ticket: Ticket,
    deadline: Instant,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
) {
    // rustls reads the socket 4 KiB at a time; during a burst of records a
    // read-ahead buffer under it turns them into one recv instead of one
    // per 4 KiB, and a quiet connection holds no such buffer.
    let stream = ReadAhead::new(stream);
    let tls = match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => {
            shared.metrics.handshake("tcp", "ok");
            tls
        }
        Ok(Err(e)) => {
            shared.metrics.handshake("tcp", "failed");
            debug!(peer = %addr, error = %e, "tls handshake failed");
            return;
        }
        Err(_) => {
            shared.metrics.handshake("tcp", "timeout");
            debug!(peer = %addr, "tls handshake timed out");
            return;
        }
    };
    let cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(CertNames::of);
    // Writes reach rustls in pieces it copies at full speed at any
    // alignment (see `rampart_tls`).
    let (r, w) = tokio::io::split(rampart_tls::Pieces::new(tls));
    // Boxed: the served connection's state is large, and a connection
    // still in its handshake should not carry room for it.
    Box::pin(serve(
        shared,
        r,
        w,
        Peer {
            addr,
            transport: "tcp",
            cert,
        },
        deadline,
        Some(ticket),
    ))
    .await;
}

/// Bytes asked for as the QUIC socket's receive buffer. The kernel's
/// default (about 208 KiB) overflows under a burst of datagrams: `bench
/// pubsub --transport quic` lost about 0.7% of them there (`RcvbufErrors`
/// in `/proc/net/snmp`), each loss a retransmission and a smaller
/// congestion window. The kernel caps the request at `net.core.rmem_max`.
/// The send buffer keeps the kernel's default: on loopback it bounds what
/// one socket has queued at its receivers, and a larger one measured
/// slower with 16 subscribers.
const QUIC_SOCKET_BUFFER: usize = 4 << 20;

/// The QUIC endpoint's UDP socket, bound to `addr`, with a receive buffer
/// of [`QUIC_SOCKET_BUFFER`] as far as the kernel allows; a warning says
/// when it allows less.
pub(crate) fn quic_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    let s = socket2::SockRef::from(&socket);
    // Best effort: a refusal leaves the kernel's default, which works.
    let _ = s.set_recv_buffer_size(QUIC_SOCKET_BUFFER);
    // Linux reports twice what it granted (the doubling covers its own
    // bookkeeping).
    let reported = s.recv_buffer_size().unwrap_or(0);
    let granted = if cfg!(target_os = "linux") {
        reported / 2
    } else {
        reported
    };
    if granted < QUIC_SOCKET_BUFFER {
        warn!(
            granted_bytes = granted,
            wanted_bytes = QUIC_SOCKET_BUFFER,
            "the QUIC socket's receive buffer is smaller than wanted; under load datagrams \
             will be dropped and retransmitted: raise net.core.rmem_max (sysctl)"
        );
    }
    Ok(socket)
}

/// The largest UDP payload a QUIC connection sends, where the path carries
/// it: MTU discovery searches up to it, and the endpoint accepts it.
///
/// quinn's default bound, 1452 bytes, fits an Ethernet path, and on
/// loopback (where a co-located client and the benchmarks run) it makes
/// quinn encrypt, frame and acknowledge a packet per 1.4 KB. Up to this
/// bound, a path that carries more (loopback, jumbo frames) gets it; a
/// path that does not loses a few discovery probes and stays where it is.
///
/// Not higher: quinn hands the kernel up to 10 datagrams in one
/// segmentation-offload send, and one send carries at most 64 KiB (an IP
/// packet's length field). Above about 6,550 bytes those sends fail,
/// quinn counts their packets lost, and black-hole detection drops the
/// path to 1,200 bytes for a minute at a time. `bench pubsub --transport
/// quic --ack none`: 1 KiB 396-421k -> 603-721k msgs/s, 4 KiB 113-123k ->
/// 210-236k (docs/performance.md, "Where QUIC stands"). The client
/// library uses the same bound.
pub(crate) const QUIC_MAX_UDP_PAYLOAD: u16 = 6500;

/// The QUIC endpoint's own settings: datagrams up to
/// [`QUIC_MAX_UDP_PAYLOAD`] accepted.
pub(crate) fn quic_endpoint_config() -> Result<quinn::EndpointConfig, String> {
    let mut cfg = quinn::EndpointConfig::default();
    cfg.max_udp_payload_size(QUIC_MAX_UDP_PAYLOAD)
        .map_err(|e| format!("maximum UDP payload: {e}"))?;
    Ok(cfg)
}

/// Makes the QUIC endpoint configuration from the shared TLS config.
pub(crate) fn quic_server_config(tls: rustls::ServerConfig) -> Result<quinn::ServerConfig, String> {
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| e.to_string())?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(1u32.into())
        .max_concurrent_uni_streams(0u32.into())
        .max_idle_timeout(Some(
            Duration::from_secs(60)
                .try_into()
                .map_err(|_| "idle timeout".to_string())?,
        ))
        .stream_receive_window((4u32 * 1024 * 1024).into())
        .receive_window((8u32 * 1024 * 1024).into())
        .send_window(8 * 1024 * 1024)
        .mtu_discovery_config(Some(mtu_discovery()));
    cfg.transport_config(Arc::new(transport));
    Ok(cfg)
}

/// Path MTU discovery up to [`QUIC_MAX_UDP_PAYLOAD`], quinn's defaults
/// otherwise.
fn mtu_discovery() -> quinn::MtuDiscoveryConfig {
    let mut d = quinn::MtuDiscoveryConfig::default();
    d.upper_bound(QUIC_MAX_UDP_PAYLOAD);
    d
}

/// QUIC handshakes arriving in the current one-second window.
#[derive(Debug)]
struct Arrivals {
    window_start: Instant,
    count: u64,
}

impl Arrivals {
    fn new(now: Instant) -> Self {
        Arrivals {
            window_start: now,
            count: 0,
        }
    }

    /// Counts one arrival at `now`; returns the arrivals in the current
    /// window, this one included.
    fn arrive(&mut self, now: Instant) -> u64 {
        if now.saturating_duration_since(self.window_start) >= Duration::from_secs(1) {
            self.window_start = now;
            self.count = 0;
        }
        self.count += 1;
        self.count
    }
}

/// Accepts QUIC connections until shutdown. Then new handshakes are
/// refused, while the connections open carry on: the server closes the
/// endpoint once they are done (see `Server::shutdown`).
pub(crate) async fn run_quic(endpoint: quinn::Endpoint, shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.clone();
    let mut arrivals = Arrivals::new(Instant::now());
    loop {
        let mut incoming = tokio::select! {
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => break,
            },
            _ = shutdown.changed() => break,
        };
        // Above the threshold, an address that has not proved it can
        // receive our packets gets a stateless retry: no state, no crypto
        // beyond a token, and a spoofed source never comes back. This runs
        // before admission, so that under load the per-IP counts are
        // charged to proven addresses only.
        let above = shared.config.quic_retry_above_per_sec;
        if arrivals.arrive(Instant::now()) > above
            && !incoming.remote_address_validated()
            && incoming.may_retry()
        {
            let addr = incoming.remote_address();
            match incoming.retry() {
                Ok(()) => {
                    shared.quic_retries.fetch_add(1, Ordering::Relaxed);
                    trace!(peer = %addr, "quic address validation: retry sent");
                    continue;
                }
                // Only when the packet already carries a retry token,
                // which `may_retry` ruled out.
                Err(e) => incoming = e.into_incoming(),
            }
        }
        let addr = incoming.remote_address();
        let ticket = match shared.admission.admit(addr.ip()) {
            Ok(t) => t,
            Err(refusal) => {
                debug!(
                    peer = %addr,
                    listener = "quic",
                    limit = refusal.limit(),
                    "connection refused"
                );
                incoming.refuse();
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _guard = shared.track();
            handle_quic(incoming, ticket, shared.clone()).await;
        });
    }
    endpoint.set_server_config(None);
}

async fn handle_quic(incoming: quinn::Incoming, ticket: Ticket, shared: Arc<Shared>) {
    let addr = incoming.remote_address();
    let deadline = preauth_deadline(&shared, addr);
    let conn = match tokio::time::timeout_at(deadline, async { incoming.accept()?.await }).await {
        Ok(Ok(c)) => {
            shared.metrics.handshake("quic", "ok");
            c
        }
        Ok(Err(e)) => {
            shared.metrics.handshake("quic", "failed");
            debug!(peer = %addr, error = %e, "quic handshake failed");
            return;
        }
        Err(_) => {
            shared.metrics.handshake("quic", "timeout");
            debug!(peer = %addr, "quic handshake timed out");
            return;
        }
    };
    let (send, recv) = match tokio::time::timeout_at(deadline, conn.accept_bi()).await {
        Ok(Ok(s)) => s,
        _ => {
            conn.close(1u32.into(), b"no stream");
            return;
        }
    };
    let cert = conn
        .peer_identity()
        .and_then(|id| {
            id.downcast::<Vec<rustls_pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .and_then(|certs| certs.first().and_then(CertNames::of));
    // Boxed: the served connection's state is large, and a connection
    // still in its handshake should not carry room for it.
    Box::pin(serve(
        shared,
        recv,
        send,
        Peer {
            addr,
            transport: "quic",
            cert,
        },
        deadline,
        Some(ticket),
    ))
    .await;
    // The stream is finished; give the peer a moment to read the last
    // frames and close, then close for it.
    let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
    conn.close(0u32.into(), b"bye");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrivals_count_per_second() {
        let t0 = Instant::now();
        let mut a = Arrivals::new(t0);
        assert_eq!(a.arrive(t0), 1);
        assert_eq!(a.arrive(t0 + Duration::from_millis(500)), 2);
        assert_eq!(a.arrive(t0 + Duration::from_millis(999)), 3);
        // A new window starts a second after the last one started.
        assert_eq!(a.arrive(t0 + Duration::from_millis(1000)), 1);
        assert_eq!(a.arrive(t0 + Duration::from_millis(1500)), 2);
        assert_eq!(a.arrive(t0 + Duration::from_secs(5)), 1);
        // A clock that seems to go back does not panic or reset.
        assert_eq!(a.arrive(t0), 2);
    }

    /// The QUIC socket gets the receive buffer asked for, or as much as
    /// the kernel's limit allows (Linux reports twice what it grants).
    #[cfg(target_os = "linux")]
    #[test]
    fn the_quic_socket_gets_large_buffers_as_far_as_the_kernel_allows() {
        let limit = |name: &str| -> usize {
            std::fs::read_to_string(format!("/proc/sys/net/core/{name}"))
                .expect("a net.core limit")
                .trim()
                .parse()
                .expect("a number")
        };
        let socket = quic_socket("127.0.0.1:0".parse().expect("address")).expect("bound");
        let s = socket2::SockRef::from(&socket);
        assert_eq!(
            s.recv_buffer_size().expect("SO_RCVBUF"),
            2 * QUIC_SOCKET_BUFFER.min(limit("rmem_max"))
        );
    }

    /// Over loopback, which carries 64 KiB datagrams, the server's QUIC
    /// connections find [`QUIC_MAX_UDP_PAYLOAD`] and keep it under a bulk
    /// send: every segmentation-offload send of full datagrams fits what
    /// the kernel takes in one. A bound above that fails those sends, and
    /// black-hole detection then drops the path to 1,200 bytes.
    #[tokio::test]
    async fn quic_finds_and_keeps_large_datagrams_on_loopback() {
        let key = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
            .expect("self-signed certificate");
        let cert = key.cert.der().clone();
        let tls = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.clone()],
                rustls_pki_types::PrivateKeyDer::Pkcs8(key.key_pair.serialize_der().into()),
            )
            .expect("server certificate");
        let runtime = quinn::default_runtime().expect("tokio");
        let server = quinn::Endpoint::new(
            quic_endpoint_config().expect("endpoint config"),
            Some(quic_server_config(tls).expect("server config")),
            quic_socket("127.0.0.1:0".parse().expect("address")).expect("bound"),
            runtime.clone(),
        )
        .expect("server endpoint");
        let addr = server.local_addr().expect("address");

        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).expect("root");
        let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_root_certificates(roots)
            .with_no_client_auth();
        // The peer: an endpoint like the server's own (a large receive
        // buffer, datagrams up to the bound accepted).
        let mut client = quinn::Endpoint::new(
            quic_endpoint_config().expect("endpoint config"),
            None,
            quic_socket("127.0.0.1:0".parse().expect("address")).expect("bound"),
            runtime,
        )
        .expect("client endpoint");
        client.set_default_client_config(quinn::ClientConfig::new(Arc::new(
            quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("QUIC client"),
        )));

        // The client reads everything the server sends on the stream it
        // opened.
        let reader = tokio::spawn(async move {
            let conn = client
                .connect(addr, "localhost")
                .expect("connect")
                .await
                .expect("handshake");
            let (mut send, mut recv) = conn.open_bi().await.expect("stream");
            send.write_all(b"go").await.expect("go");
            let mut got = 0;
            while let Some(c) = recv.read_chunk(usize::MAX, true).await.expect("read") {
                got += c.bytes.len();
            }
            (got, conn, client)
        });

        let conn = server
            .accept()
            .await
            .expect("incoming")
            .await
            .expect("handshake");
        let (mut send, mut recv) = conn.accept_bi().await.expect("stream");
        let mut go = [0u8; 2];
        recv.read_exact(&mut go).await.expect("go");
        let chunk = bytes::Bytes::from(vec![0x5a; 256 << 10]);
        let mut sent = 0;
        let mtu = || conn.stats().path.current_mtu;
        // Discovery runs alongside the data: send until it ends within
        // quinn's last step (20 bytes) of the bound, or for 5 s at most (a
        // lost probe can end it lower).
        let discovering = Instant::now();
        while mtu() < QUIC_MAX_UDP_PAYLOAD - 20 && discovering.elapsed() < Duration::from_secs(5) {
            send.write_chunk(chunk.clone()).await.expect("write");
            sent += chunk.len();
        }
        let found = mtu();
        assert!(found > 1452, "no larger datagrams: {:?}", conn.stats().path);
        // A bulk send at that size, 16 MiB: with this much queued, quinn
        // hands the kernel its sends in full batches.
        for _ in 0..64 {
            send.write_chunk(chunk.clone()).await.expect("write");
            sent += chunk.len();
        }
        send.finish().expect("finish");
        let (got, client_conn, client) = reader.await.expect("reader");
        assert_eq!(got, sent);
        let path = conn.stats().path;
        assert_eq!(
            (path.current_mtu, path.black_holes_detected),
            (found, 0),
            "{path:?}"
        );
        client_conn.close(0u32.into(), b"done");
        client.wait_idle().await;
    }
}
