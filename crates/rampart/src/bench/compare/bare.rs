//! A bare Rampart connection: one request at a time, written and read by
//! its caller's own task, the way the NATS side's
//! [`Requester`](super::nats::Requester) drives nats-server.
//!
//! `rampart_client::Client` multiplexes: a writer task, a reader task that
//! routes replies by id to the waiting callers, timeouts, rate-limit
//! retries. That costs the one-in-flight publisher of the durable section
//! two task hand-offs per message in the bench's own process, which shares
//! the two cores with the server under test, while the NATS requester costs
//! none. The durable section measures Rampart both ways, so that one row
//! compares the servers with the same kind of client on each side.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use rampart_identity::Secret;
use rampart_proto::{
    Auth, AuthMethod, Frame, FrameDecoder, Hello, Message, TenantId, DEFAULT_MAX_FRAME,
    PROTOCOL_VERSION,
};
use rampart_tls::Pieces;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::Failure;

/// A TLS connection to a Rampart server, past HELLO and AUTH.
pub(super) struct BareConn {
    /// In pieces, as `rampart_client` writes (see `rampart_tls`).
    tls: Pieces<TlsStream<TcpStream>>,
    decoder: FrameDecoder,
    /// Bytes from the server, not decoded yet.
    rbuf: BytesMut,
    /// The request being written.
    wbuf: BytesMut,
    /// The id of the last request sent.
    id: u64,
}

impl BareConn {
    /// TCP, the TLS 1.3 handshake (`tls` trusts the run's CA), HELLO and
    /// AUTH with the API key `key`; the connection and the tenant the key
    /// belongs to.
    pub(super) async fn connect(
        addr: SocketAddr,
        tls: Arc<rustls::ClientConfig>,
        key: &Secret<String>,
    ) -> Result<(Self, TenantId), Failure> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
        let tls = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(|e| Failure(format!("TLS handshake with {addr}: {e}")))?;
        let mut conn = BareConn {
            tls: Pieces::new(tls),
            decoder: FrameDecoder::new(DEFAULT_MAX_FRAME),
            rbuf: BytesMut::with_capacity(16 * 1024),
            wbuf: BytesMut::with_capacity(1024),
            id: 0,
        };
        let hello = conn
            .request(Message::Hello(Hello {
                version: u16::from(PROTOCOL_VERSION),
                capabilities: 0,
                max_frame: DEFAULT_MAX_FRAME as u32,
                agent: "rampart-bench-bare".into(),
            }))
            .await?;
        if !matches!(hello.msg, Message::Hello(_)) {
            return Err(Failure(format!("expected HELLO, got {:?}", hello.msg)));
        }
        let ok = conn
            .request(Message::Auth(Auth {
                method: AuthMethod::ApiKey,
                credential: Bytes::copy_from_slice(key.expose().as_bytes()),
            }))
            .await?;
        match ok.msg {
            Message::AuthOk(ok) => Ok((conn, ok.tenant)),
            Message::Nack(n) => Err(Failure(format!(
                "AUTH refused: {} {}",
                n.code.as_u16(),
                n.message
            ))),
            other => Err(Failure(format!("expected AUTH_OK, got {other:?}"))),
        }
    }

    /// Sends `msg` under a fresh id and returns the first frame the server
    /// sends with that id; frames with other ids (notices under id 0) are
    /// skipped.
    pub(super) async fn request(&mut self, msg: Message) -> Result<Frame, Failure> {
        self.id += 1;
        self.wbuf.clear();
        Frame::new(self.id, msg).encode(&mut self.wbuf);
        self.tls.write_all(&self.wbuf).await?;
        self.tls.flush().await?;
        loop {
            while let Some(d) = self
                .decoder
                .decode(&mut self.rbuf)
                .map_err(|e| Failure(format!("from the server: {e}")))?
            {
                let frame = d
                    .frame
                    .map_err(|e| Failure(format!("from the server: {e}")))?;
                if frame.id == self.id {
                    return Ok(frame);
                }
            }
            if self.tls.read_buf(&mut self.rbuf).await? == 0 {
                return Err(Failure("the server closed a bare connection".into()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::compare::nats::tls13_client;
    use crate::bench::LocalServer;
    use rampart_proto::{AckMode, NamespaceName, Publish, StreamName};
    use rustls::pki_types::pem::PemObject as _;

    #[test]
    fn a_bare_connection_publishes_and_a_wrong_key_is_refused() {
        let server = LocalServer::start(false, false).expect("server");
        let ca = rustls::pki_types::CertificateDer::from_pem_file(&server.ca).expect("dev CA");
        let tls = tls13_client(ca).expect("TLS");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (mut c, tenant) = BareConn::connect(server.tcp, tls.clone(), &server.key)
                .await
                .expect("connects");
            let publish = Publish {
                ack: AckMode::Message,
                tenant,
                namespace: NamespaceName::parse("bench").expect("namespace"),
                stream: StreamName::parse("bare").expect("stream"),
                payload: Bytes::from_static(b"hello"),
            };
            // Each request gets its own reply, in turn.
            for _ in 0..3 {
                let f = c.request(publish.clone().into()).await.expect("ACK");
                assert_eq!(f.id, c.id);
                let Message::Ack(a) = f.msg else {
                    panic!("not an ACK: {:?}", f.msg);
                };
                assert_eq!(a.count, 1);
            }
            let wrong = Secret::new("rk_wrong_key_000000000000000000000000".to_string());
            let e = match BareConn::connect(server.tcp, tls, &wrong).await {
                Ok(_) => panic!("a wrong API key was accepted"),
                Err(e) => e.0,
            };
            assert!(e.contains("AUTH refused"), "{e}");
        });
    }
}
