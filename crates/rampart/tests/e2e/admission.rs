//! Connection admission before TLS: caps per IP, unauthenticated
//! connections per IP, new connections per second per IP, QUIC address
//! validation, and the HTTPS header and handshake bound.
//!
//! Abusive connections come from 127.0.0.2 (sockets bound there before
//! connecting); the well-behaved clients (`rampart_client`, which cannot
//! choose its source address) come from 127.0.0.1 and must be unaffected.
//! Refusals are checked through the server's own count, which admission
//! updates before it drops the socket, so no assertion depends on timing.
//! Every wait is bounded.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rampart_client::Transport;
use rampart_proto::{Frame, FrameDecoder, Message, DEFAULT_MAX_FRAME};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::common::*;

/// The bound on anything the server must do promptly.
const PROMPT: Duration = Duration::from_secs(10);
/// How long a held connection must stay open when looked at. Passing does
/// not depend on it: the server has no reason to close these at all.
const STILL_OPEN: Duration = Duration::from_millis(300);

fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// Keeps the server's own deadlines out of the way of held connections.
fn patient(c: &mut rampart_server::Config) {
    c.auth_timeout_ms = 60_000;
    c.http_header_timeout_ms = 60_000;
}

/// A TCP connection from `src` (port chosen by the system).
async fn connect_from(src: IpAddr, to: SocketAddr) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(src, 0)).unwrap();
    tokio::time::timeout(PROMPT, sock.connect(to))
        .await
        .expect("tcp connect within 10 s")
        .expect("tcp connect")
}

/// Whether the server closed `s` (EOF or reset) within `wait`, having sent
/// nothing; `false` if it is still open then.
async fn closed_within<S: AsyncRead + Unpin>(s: &mut S, wait: Duration) -> bool {
    let mut b = [0u8; 64];
    match tokio::time::timeout(wait, s.read(&mut b)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(n)) => panic!("the server sent {n} bytes to a connection it should ignore"),
        Err(_) => false,
    }
}

async fn assert_closed<S: AsyncRead + Unpin>(s: &mut S) {
    assert!(
        closed_within(s, PROMPT).await,
        "the server closes the connection within 10 s"
    );
}

async fn assert_open<S: AsyncRead + Unpin>(s: &mut S) {
    assert!(
        !closed_within(s, STILL_OPEN).await,
        "the server keeps an admitted connection open"
    );
}

fn refused(s: &TestServer, limit: &str) -> u64 {
    s.server
        .admission_refusals()
        .iter()
        .find(|(l, _)| *l == limit)
        .map_or(0, |(_, n)| *n)
}

async fn tls<S: AsyncRead + AsyncWrite + Unpin>(
    s: &TestServer,
    tcp: S,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<S> {
    let mut cfg = s.rustls_client();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(
        PROMPT,
        tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp),
    )
    .await
    .expect("tls handshake within 10 s")
    .expect("tls handshake")
}

/// One request on the wire protocol and its answer; `None` if the server
/// closed the connection.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    buf: &mut BytesMut,
    f: &Frame,
) -> Option<Frame> {
    s.write_all(&f.to_bytes()).await.ok()?;
    s.flush().await.ok()?;
    tokio::time::timeout(PROMPT, async {
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        loop {
            if let Ok(Some(d)) = dec.decode(buf) {
                return d.frame.ok();
            }
            match s.read_buf(buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the server answered or closed within 10 s")
}

/// A whole wire session from `src` over TLS/TCP: HELLO, AUTH, PING. The
/// stream is returned still open, authenticated; `None` if the server
/// closed it on the way (refused at admission).
async fn session_from(
    s: &TestServer,
    src: IpAddr,
) -> Option<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = connect_from(src, s.server.tcp_addr().unwrap()).await;
    let mut cfg = s.rustls_client();
    cfg.alpn_protocols = vec![b"rampart/1".to_vec()];
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    // A refused connection fails here: it is closed before the handshake.
    let mut t = tokio::time::timeout(
        PROMPT,
        tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp),
    )
    .await
    .expect("tls handshake or close within 10 s")
    .ok()?;
    let mut buf = BytesMut::new();
    let h = exchange(&mut t, &mut buf, &hello()).await?;
    assert!(matches!(h.msg, Message::Hello(_)), "{:?}", h.msg);
    let a = exchange(&mut t, &mut buf, &auth(KEY_ACME)).await?;
    assert!(matches!(a.msg, Message::AuthOk(_)), "{:?}", a.msg);
    let p = exchange(&mut t, &mut buf, &Frame::new(3, Message::Ping)).await?;
    assert!(matches!(p.msg, Message::Pong), "{:?}", p.msg);
    Some(t)
}

/// Retries `session_from` until admitted (a closed connection frees its
/// place only once the server has noticed the close). At most 10 s.
async fn eventually_session_from(
    s: &TestServer,
    src: IpAddr,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    tokio::time::timeout(PROMPT, async {
        loop {
            if let Some(t) = session_from(s, src).await {
                return t;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("admitted again within 10 s")
}

/// A legitimate client from 127.0.0.1 authenticates and publishes over
/// `t`.
async fn legit_client_works(s: &TestServer, t: Transport) {
    let c = s.client(t, KEY_ACME).await;
    c.publish("acme", "prod", "orders", "hello").await.unwrap();
    c.ping().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_ip_cap_refuses_before_tls() {
    let s = start_with(|c| {
        patient(c);
        c.max_connections_per_ip = 3;
    })
    .await;
    let addr = s.server.tcp_addr().unwrap();
    // Three connections that sit where the TLS handshake would start.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from(ip(2), addr).await);
    }
    // The fourth is closed without a byte of TLS from the server.
    let mut fourth = connect_from(ip(2), addr).await;
    assert_closed(&mut fourth).await;
    assert_eq!(refused(&s, "max_connections_per_ip"), 1);
    for h in &mut held {
        assert_open(h).await;
    }

    // Another address is not affected.
    legit_client_works(&s, Transport::Tcp).await;
    legit_client_works(&s, Transport::Quic).await;
    assert!(session_from(&s, ip(3)).await.is_some());

    // Closing one frees its place.
    drop(held.pop());
    let _again = eventually_session_from(&s, ip(2)).await;
    // The cap counts authenticated connections too: 127.0.0.2 is full.
    let mut over = connect_from(ip(2), addr).await;
    assert_closed(&mut over).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_cap_spares_other_addresses() {
    let s = start_with(|c| {
        patient(c);
        c.max_unauthenticated_per_ip = 3;
    })
    .await;
    let addr = s.server.tcp_addr().unwrap();
    // Never authenticated: two stuck before TLS, one past TLS and HELLO.
    let mut raw = vec![
        connect_from(ip(2), addr).await,
        connect_from(ip(2), addr).await,
    ];
    let mut said_hello = tls(&s, connect_from(ip(2), addr).await, b"rampart/1").await;
    let mut buf = BytesMut::new();
    let h = exchange(&mut said_hello, &mut buf, &hello()).await.unwrap();
    assert!(matches!(h.msg, Message::Hello(_)));

    let mut fourth = connect_from(ip(2), addr).await;
    assert_closed(&mut fourth).await;
    assert_eq!(refused(&s, "max_unauthenticated_per_ip"), 1);
    for r in &mut raw {
        assert_open(r).await;
    }
    assert_open(&mut said_hello).await;

    // A legitimate client from another address is unaffected.
    legit_client_works(&s, Transport::Tcp).await;

    // Once the unauthenticated ones are gone, 127.0.0.2 gets in again.
    drop(raw);
    drop(said_hello);
    let _authed = eventually_session_from(&s, ip(2)).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticated_connections_leave_the_unauthenticated_cap() {
    let s = start_with(|c| {
        patient(c);
        c.max_unauthenticated_per_ip = 2;
    })
    .await;
    let addr = s.server.tcp_addr().unwrap();
    // Three authenticated sessions from one address: more than the cap.
    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(
            session_from(&s, ip(2))
                .await
                .expect("an authenticated connection no longer counts as unauthenticated"),
        );
    }
    // The cap still applies to the unauthenticated ones.
    let mut held = vec![
        connect_from(ip(2), addr).await,
        connect_from(ip(2), addr).await,
    ];
    let mut third = connect_from(ip(2), addr).await;
    assert_closed(&mut third).await;
    assert_eq!(refused(&s, "max_unauthenticated_per_ip"), 1);
    for h in &mut held {
        assert_open(h).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_connection_rate_per_ip() {
    // 2 per second, a burst of 4.
    let s = start_with(|c| {
        patient(c);
        c.new_connections_per_ip_per_sec = 2;
    })
    .await;
    let addr = s.server.tcp_addr().unwrap();
    let mut conns = Vec::new();
    // Twelve at once: more than the burst plus anything the bucket could
    // refill while they connect (that would take 4 s).
    for _ in 0..12 {
        conns.push(connect_from(ip(2), addr).await);
    }
    // Wait until the server has taken every one in, admitted or refused.
    const LIMIT: &str = "new_connections_per_ip_per_sec";
    tokio::time::timeout(PROMPT, async {
        while s.server.admitted_connections() + refused(&s, LIMIT) < 12 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("all twelve admitted or refused within 10 s");
    // A connection being refused is counted as open for a moment before it
    // is counted as refused: read the refusals once they stop changing.
    let refusals = tokio::time::timeout(PROMPT, async {
        loop {
            let before = refused(&s, LIMIT);
            tokio::time::sleep(STILL_OPEN).await;
            let after = refused(&s, LIMIT);
            if after == before && s.server.admitted_connections() + after == 12 {
                break after;
            }
        }
    })
    .await
    .expect("the counts settle within 10 s");
    assert!(refusals >= 1, "beyond the burst, some are refused");
    // The burst was admitted, whatever the timing.
    for c in &mut conns[..4] {
        assert_open(c).await;
    }
    // Of the later ones, exactly the refused ones are closed.
    let mut set = tokio::task::JoinSet::new();
    for mut c in conns.drain(4..) {
        set.spawn(async move {
            let mut b = [0u8; 1];
            let _ = c.read(&mut b).await;
        });
    }
    for _ in 0..refusals {
        tokio::time::timeout(PROMPT, set.join_next())
            .await
            .expect("a refused connection is closed within 10 s");
    }
    // Still open (timed out), or none left.
    assert!(
        matches!(
            tokio::time::timeout(STILL_OPEN, set.join_next()).await,
            Err(_) | Ok(None)
        ),
        "only the refused ones are closed"
    );
    drop(set);

    // Other addresses have buckets of their own.
    legit_client_works(&s, Transport::Tcp).await;
    // A rate, not a ban: 127.0.0.2 gets in again once the bucket refills.
    let _later = eventually_session_from(&s, ip(2)).await;
}

/// A QUIC endpoint bound to `src` trusting the dev CA.
fn quic_endpoint(s: &TestServer, src: IpAddr) -> quinn::Endpoint {
    let mut ep = quinn::Endpoint::client(SocketAddr::new(src, 0)).unwrap();
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(s.rustls_client()).unwrap();
    ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    ep
}

async fn quic_connect(
    ep: &quinn::Endpoint,
    s: &TestServer,
) -> Result<quinn::Connection, quinn::ConnectionError> {
    let connecting = ep
        .connect(s.server.quic_addr().unwrap(), "localhost")
        .unwrap();
    tokio::time::timeout(PROMPT, connecting)
        .await
        .expect("quic handshake or refusal within 10 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_retry_validates_addresses() {
    // Always validate.
    let s = start_with(|c| c.quic_retry_above_per_sec = 0).await;
    assert_eq!(s.server.quic_retries(), 0);
    let c = s.client(Transport::Quic, KEY_ACME).await;
    c.publish("acme", "prod", "orders", "after-retry")
        .await
        .unwrap();
    c.ping().await.unwrap();
    assert!(s.server.quic_retries() >= 1);
    // A second client too: every new one proves its address.
    let before = s.server.quic_retries();
    legit_client_works(&s, Transport::Quic).await;
    assert!(s.server.quic_retries() > before);
    drop(c);
    s.stop().await;

    // Far below the threshold: no retry, one round trip fewer.
    let s = start_with(|c| c.quic_retry_above_per_sec = 1_000_000).await;
    legit_client_works(&s, Transport::Quic).await;
    assert_eq!(s.server.quic_retries(), 0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_per_ip_cap() {
    let s = start_with(|c| {
        patient(c);
        c.max_connections_per_ip = 2;
    })
    .await;
    let ep = quic_endpoint(&s, ip(2));
    let first = quic_connect(&ep, &s).await.expect("first admitted");
    let second = quic_connect(&ep, &s).await.expect("second admitted");
    let third = quic_connect(&ep, &s).await;
    assert!(
        matches!(third, Err(quinn::ConnectionError::ConnectionClosed(_))),
        "{third:?}"
    );
    assert_eq!(refused(&s, "max_connections_per_ip"), 1);
    // The admitted ones are still up.
    assert!(first.close_reason().is_none() && second.close_reason().is_none());
    legit_client_works(&s, Transport::Quic).await;
    drop((first, second));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_slow_headers_and_handshakes_are_cut() {
    let s = start_with(|c| {
        c.auth_timeout_ms = 60_000;
        c.http_header_timeout_ms = 300;
    })
    .await;
    let addr = s.server.http_addr().unwrap();
    // A request line that never ends.
    let mut slow = tls(&s, connect_from(ip(2), addr).await, b"http/1.1").await;
    slow.write_all(b"GET /v1/auth/whoami HT").await.unwrap();
    slow.flush().await.unwrap();
    // The server may answer 408 before it closes; it must close.
    let mut seen = Vec::new();
    // Well under the 10 s default, so the configured bound is the one seen.
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut seen)).await;
    assert!(read.is_ok(), "closed within 5 s");
    let seen = String::from_utf8_lossy(&seen);
    assert!(
        seen.is_empty() || seen.starts_with("HTTP/1.1 408"),
        "{seen}"
    );

    // A TLS handshake that never starts is cut by the same bound.
    let mut silent = connect_from(ip(2), addr).await;
    assert!(closed_within(&mut silent, Duration::from_secs(5)).await);

    // A prompt request is served.
    let r = s
        .admin(KEY_ACME)
        .call("GET", "/v1/auth/whoami", None)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_per_ip_cap() {
    let s = start_with(|c| {
        patient(c);
        c.max_connections_per_ip = 2;
    })
    .await;
    let addr = s.server.http_addr().unwrap();
    // One stuck before TLS, one past it (the per-IP cap holds for the whole
    // connection, not just the handshake).
    let mut before_tls = connect_from(ip(2), addr).await;
    let mut after_tls = tls(&s, connect_from(ip(2), addr).await, b"http/1.1").await;
    let mut third = connect_from(ip(2), addr).await;
    assert_closed(&mut third).await;
    assert_eq!(refused(&s, "max_connections_per_ip"), 1);
    assert_open(&mut before_tls).await;
    assert_open(&mut after_tls).await;

    // The count is per server, every listener together: the wire listener
    // refuses 127.0.0.2 as well.
    assert!(session_from(&s, ip(2)).await.is_none());
    assert_eq!(refused(&s, "max_connections_per_ip"), 2);

    // Another address is served.
    let r = s
        .admin(KEY_ACME)
        .call("GET", "/v1/auth/whoami", None)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    s.stop().await;
}

/// A socket that never sends a byte is closed at the AUTH deadline (before
/// any TLS state is made for it), and one that sends something other than
/// a TLS handshake record is closed at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_non_tls_sockets_are_closed() {
    let s = start_with(|c| c.auth_timeout_ms = 400).await;
    let addr = s.server.tcp_addr().unwrap();
    let mut silent = connect_from(ip(2), addr).await;
    assert!(closed_within(&mut silent, Duration::from_secs(5)).await);
    let mut junk = connect_from(ip(3), addr).await;
    junk.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    assert!(closed_within(&mut junk, Duration::from_secs(5)).await);
    // A real client still gets in.
    let c = s.client(rampart_client::Transport::Tcp, KEY_ACME).await;
    c.ping().await.unwrap();
    // The closed ones gave their places back (the count drops just after
    // the socket closes).
    tokio::time::timeout(PROMPT, async {
        while s.server.admitted_connections() != 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("only the real client is left");
}

/// A request body that trickles in is cut by the same bound as headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_slow_bodies_are_cut() {
    let s = start_with(|c| c.http_header_timeout_ms = 300).await;
    let addr = s.server.http_addr().unwrap();
    let mut slow = tls(&s, connect_from(ip(2), addr).await, b"http/1.1").await;
    slow.write_all(
        b"POST /v1/auth HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"api_key\":",
    )
    .await
    .unwrap();
    slow.flush().await.unwrap();
    let mut seen = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut seen)).await;
    let seen = String::from_utf8_lossy(&seen);
    assert!(
        read.is_ok() || seen.starts_with("HTTP/1.1 4"),
        "answered or closed within 5 s: {seen}"
    );
    assert!(
        seen.is_empty() || seen.starts_with("HTTP/1.1 408") || seen.starts_with("HTTP/1.1 400"),
        "{seen}"
    );
}

/// Sends one raw HTTP/1.1 request over HTTPS and reads the whole answer
/// (the request asks the server to close after it).
async fn https_exchange(s: &TestServer, src: IpAddr, request: &str) -> String {
    let addr = s.server.http_addr().unwrap();
    let mut c = tls(s, connect_from(src, addr).await, b"http/1.1").await;
    c.write_all(request.as_bytes()).await.unwrap();
    c.flush().await.unwrap();
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut seen))
        .await
        .expect("answered and closed within 10 s")
        .unwrap();
    String::from_utf8_lossy(&seen).to_ascii_lowercase()
}

/// A browser's CORS preflight for a POST to a secret, from `origin`.
async fn cors_preflight(s: &TestServer, src: IpAddr, origin: &str) -> String {
    https_exchange(
        s,
        src,
        &format!(
            "OPTIONS /v1/secret/data/app HTTP/1.1\r\nhost: localhost\r\norigin: {origin}\r\n\
             access-control-request-method: POST\r\nconnection: close\r\n\r\n"
        ),
    )
    .await
}

/// Answers made before any route (the body limit's 413, a CORS preflight)
/// carry the security headers and, for an allowed origin, CORS too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_early_answers_are_hardened() {
    let origin = "https://console.example";
    let s = start_with(|c| c.cors_allowed_origins = vec![origin.to_string()]).await;
    let too_large = https_exchange(
        &s,
        ip(3),
        &format!(
            "POST /v1/auth HTTP/1.1\r\nhost: localhost\r\norigin: {origin}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            8 << 20
        ),
    )
    .await;
    assert!(too_large.starts_with("http/1.1 413"), "{too_large}");
    let preflight = cors_preflight(&s, ip(4), origin).await;
    assert!(preflight.starts_with("http/1.1 200"), "{preflight}");
    assert!(
        preflight.contains("access-control-allow-methods:"),
        "{preflight}"
    );
    for answer in [&too_large, &preflight] {
        assert!(
            answer.contains(&format!("access-control-allow-origin: {origin}")),
            "{answer}"
        );
        for header in [
            "strict-transport-security: max-age=",
            "x-content-type-options: nosniff",
            "x-frame-options: deny",
            "content-security-policy: default-src 'none'",
            "referrer-policy: no-referrer",
            "cache-control: no-store",
        ] {
            assert!(answer.contains(header), "{header} missing: {answer}");
        }
    }
    // An origin not on the list gets no CORS allowance.
    let other = cors_preflight(&s, ip(5), "https://evil.example").await;
    assert!(!other.contains("access-control-allow-origin"), "{other}");
}

/// With no `cors_allowed_origins` (the default) a browser's preflight is
/// allowed nothing, and answers still carry the security headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_preflight_without_allowed_origins_is_allowed_nothing() {
    let s = start_with(|_| {}).await;
    let preflight = cors_preflight(&s, ip(6), "https://console.example").await;
    assert!(!preflight.starts_with("http/1.1 2"), "{preflight}");
    assert!(!preflight.contains("access-control-allow"), "{preflight}");
    assert!(
        preflight.contains("x-content-type-options: nosniff"),
        "{preflight}"
    );
}
