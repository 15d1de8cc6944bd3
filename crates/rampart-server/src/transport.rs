//! Listeners: QUIC (one bidirectional stream per connection, ALPN
//! `rampart/1`) and TLS over TCP. Both hand their streams to the same
//! connection driver.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

use crate::auth::CertNames;
use crate::conn::{serve, Peer};
use crate::Shared;

/// Accepts TCP connections until shutdown and hands each to `handle` on a
/// task of its own. A failing accept (out of file descriptors and the like)
/// backs off and keeps serving.
pub(crate) async fn accept_tcp<F, Fut>(
    listener: TcpListener,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    what: &'static str,
    mut handle: F,
) where
    F: FnMut(TcpStream, SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
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
        tokio::spawn(handle(stream, addr));
    }
}

/// Accepts TLS-over-TCP connections until shutdown.
pub(crate) async fn run_tcp(listener: TcpListener, acceptor: TlsAcceptor, shared: Arc<Shared>) {
    let shutdown = shared.shutdown.clone();
    accept_tcp(listener, shutdown, "tcp", |stream, addr| {
        let shared = shared.clone();
        let acceptor = acceptor.clone();
        async move {
            let _guard = shared.track();
            handle_tcp(stream, addr, acceptor, shared.clone()).await;
        }
    })
    .await;
}

async fn handle_tcp(
    stream: TcpStream,
    addr: SocketAddr,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
) {
    let deadline = Instant::now() + shared.config.auth_timeout();
    let _ = stream.set_nodelay(true);
    let tls = match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            debug!(peer = %addr, error = %e, "tls handshake failed");
            return;
        }
        Err(_) => {
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
    let (r, w) = tokio::io::split(tls);
    serve(
        shared,
        r,
        w,
        Peer {
            addr,
            transport: "tcp",
            cert,
        },
        deadline,
    )
    .await;
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
        .send_window(8 * 1024 * 1024);
    cfg.transport_config(Arc::new(transport));
    Ok(cfg)
}

/// Accepts QUIC connections until shutdown.
pub(crate) async fn run_quic(endpoint: quinn::Endpoint, shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.clone();
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => break,
            },
            _ = shutdown.changed() => break,
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _guard = shared.track();
            handle_quic(incoming, shared.clone()).await;
        });
    }
    endpoint.close(0u32.into(), b"server shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
}

async fn handle_quic(incoming: quinn::Incoming, shared: Arc<Shared>) {
    let addr = incoming.remote_address();
    let deadline = Instant::now() + shared.config.auth_timeout();
    let conn = match tokio::time::timeout_at(deadline, async { incoming.accept()?.await }).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            debug!(peer = %addr, error = %e, "quic handshake failed");
            return;
        }
        Err(_) => {
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
    serve(
        shared,
        recv,
        send,
        Peer {
            addr,
            transport: "quic",
            cert,
        },
        deadline,
    )
    .await;
    // The stream is finished; give the peer a moment to read the last
    // frames and close, then close for it.
    let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
    conn.close(0u32.into(), b"bye");
}
