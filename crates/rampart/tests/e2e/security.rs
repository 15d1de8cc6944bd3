use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rampart_client::{Client, ClientConfig, Transport};
use rampart_proto::{Frame, Message, Publish};
use tokio::io::AsyncWriteExt;

use crate::common::*;

fn code<T>(r: Result<T, rampart_client::ClientError>) -> Option<u16> {
    r.err().and_then(|e| e.code()).map(|c| c.0)
}

async fn other_tenant_is_forbidden(t: Transport) {
    let s = start().await;
    let acme = s.client(t, KEY_ACME).await;
    let globex = s.client(t, KEY_GLOBEX).await;
    let mut victim_sub = globex.subscribe("globex", "prod", "orders").await.unwrap();

    assert_eq!(
        code(acme.publish("globex", "prod", "orders", "x").await),
        Some(403)
    );
    assert_eq!(
        code(
            acme.publish_batch("globex", "prod", "orders", ["a", "b"])
                .await
        ),
        Some(403)
    );
    assert_eq!(
        code(acme.subscribe("globex", "prod", "orders").await.map(|_| ())),
        Some(403)
    );
    assert_eq!(
        code(
            acme.cache_put("globex", "prod", "c", "k", "stolen", None)
                .await
        ),
        Some(403)
    );
    assert_eq!(
        code(acme.cache_get("globex", "prod", "c", "k").await),
        Some(403)
    );
    assert_eq!(
        code(acme.cache_delete("globex", "prod", "c", "k").await),
        Some(403)
    );
    // A tenant that exists nowhere gets the same answer: nothing to probe.
    assert_eq!(
        code(acme.publish("nosuch", "prod", "orders", "x").await),
        Some(403)
    );

    // Nothing was delivered or stored.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), victim_sub.next())
            .await
            .is_err(),
        "nothing delivered to the other tenant"
    );
    assert_eq!(
        globex.cache_get("globex", "prod", "c", "k").await.unwrap(),
        None
    );
    // The refused connection still works for its own tenant.
    acme.publish("acme", "prod", "orders", "ok").await.unwrap();
}

async fn frames_before_auth_get_401(t: Transport) {
    let s = start().await;
    let mut raw = s.raw(t).await;
    let publish = Frame::new(
        5,
        Publish {
            ack: Default::default(),
            tenant: "acme".parse().unwrap(),
            namespace: "p".parse().unwrap(),
            stream: "s".parse().unwrap(),
            payload: Bytes::from_static(b"x"),
        },
    );
    raw.send(&publish).await;
    let f = raw.recv().await.unwrap();
    assert_eq!((f.id, nack_code(&f)), (5, Some(401)));
    if let Message::Nack(n) = f.msg {
        assert_eq!(n.message, "unauthenticated");
    }
    raw.send(&hello()).await;
    assert!(matches!(raw.recv().await.unwrap().msg, Message::Hello(_)));
    raw.send(&Frame::new(6, Message::Ping)).await;
    assert_eq!(nack_code(&raw.recv().await.unwrap()), Some(401));
}

async fn bad_key_three_times_closes(t: Transport) {
    let s = start().await;
    let mut raw = s.raw(t).await;
    raw.send(&hello()).await;
    raw.recv().await.unwrap();
    for i in 0..3 {
        raw.send(&auth(&format!("wrong-key-{i}"))).await;
        let f = raw.recv().await.expect("a NACK for every attempt");
        assert_eq!(nack_code(&f), Some(401));
        if let Message::Nack(n) = f.msg {
            assert_eq!(n.message, "invalid credentials");
        }
    }
    assert!(raw.recv().await.is_none(), "closed after the third failure");
}

async fn no_auth_within_deadline_closes(t: Transport) {
    let s = start_with(|c| c.auth_timeout_ms = 300).await;
    let mut raw = s.raw(t).await;
    raw.send(&hello()).await;
    raw.recv().await.unwrap();
    // Say nothing more: the server must close by itself.
    let codes = raw.codes_until_closed().await;
    assert_eq!(codes, vec![401]);
    // Other clients are not affected.
    s.client(t, KEY_ACME).await.ping().await.unwrap();
}

async fn big_frame_before_auth_is_refused(t: Transport) {
    let s = start().await;
    let mut raw = s.raw(t).await;
    let frame = Frame::new(
        7,
        Publish {
            ack: Default::default(),
            tenant: "acme".parse().unwrap(),
            namespace: "p".parse().unwrap(),
            stream: "s".parse().unwrap(),
            payload: Bytes::from(vec![0u8; 64 * 1024]),
        },
    )
    .to_bytes();
    // The server may close while we are still writing; that is the point.
    let _ = raw.wr.write_all(&frame).await;
    let _ = raw.wr.flush().await;
    let codes = raw.codes_until_closed().await;
    assert_eq!(codes, vec![413]);
}

async fn garbage_closes_only_that_connection(t: Transport) {
    let s = start().await;
    let good = s.client(t, KEY_ACME).await;
    let mut sub = good.subscribe("acme", "p", "s").await.unwrap();

    let mut raw = s.raw(t).await;
    // 10 MB of pseudo-random bytes (xorshift; no extra dependency).
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut junk = vec![0u8; 10 * 1024 * 1024];
    for chunk in junk.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
    let writer = tokio::spawn(async move {
        let _ = raw.wr.write_all(&junk).await;
        let _ = raw.wr.flush().await;
        raw
    });
    let mut raw = tokio::time::timeout(Duration::from_secs(30), writer)
        .await
        .expect("write ends (server closed or took it all)")
        .unwrap();
    let codes = raw.codes_until_closed().await;
    assert!(codes.len() <= 1, "at most one NACK, then closed: {codes:?}");

    // Raw garbage on the TCP port without TLS, too.
    if t == Transport::Tcp {
        let mut tcp = tokio::net::TcpStream::connect(s.server.tcp_addr().unwrap())
            .await
            .unwrap();
        let _ = tcp
            .write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3])
            .await;
        let _ = tcp.write_all(&[0xaa; 4096]).await;
        let mut sink = Vec::new();
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut sink),
        )
        .await;
        assert!(r.is_ok(), "server closed the non-TLS connection");
    }

    // The good client keeps working.
    good.publish("acme", "p", "s", "after").await.unwrap();
    let e = next_event(&mut sub, 10).await;
    assert_eq!(&e.payload[..], b"after");
    s.client(t, KEY_ACME).await.ping().await.unwrap();
}

async fn unknown_frame_type_and_version(t: Transport) {
    let s = start().await;
    let mut raw = s.raw(t).await;
    raw.send(&hello()).await;
    raw.recv().await.unwrap();
    raw.send(&auth(KEY_ACME)).await;
    assert!(matches!(raw.recv().await.unwrap().msg, Message::AuthOk(_)));
    // Unknown type 0x7f: NACK 400, then closed.
    raw.wr
        .write_all(&[0, 0, 0, 0, 1, 0x7f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9])
        .await
        .unwrap();
    raw.wr.flush().await.unwrap();
    assert_eq!(raw.codes_until_closed().await, vec![400]);

    // Unknown flag bits: the same.
    let mut raw = s.raw(t).await;
    raw.wr
        .write_all(&[0, 0, 0, 0, 1, 0x06, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 9])
        .await
        .unwrap();
    raw.wr.flush().await.unwrap();
    assert_eq!(raw.codes_until_closed().await, vec![400]);

    // HELLO for protocol version 2: NACK 426, then closed.
    let mut raw = s.raw(t).await;
    let mut h = hello();
    if let Message::Hello(x) = &mut h.msg {
        x.version = 2;
    }
    raw.send(&h).await;
    assert_eq!(raw.codes_until_closed().await, vec![426]);
}

async fn untrusted_server_ca_fails(t: Transport) {
    let s = start().await;
    // A CA the server's certificate does not chain to.
    let dir = tempfile::tempdir().unwrap();
    let kp = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let other_ca = params.self_signed(&kp).unwrap();
    let path = dir.path().join("other-ca.crt");
    std::fs::write(&path, other_ca.pem()).unwrap();
    let cfg = ClientConfig::default()
        .with_ca(&path)
        .with_api_key(KEY_ACME);
    let err = Client::connect(&s.url(t), cfg).await.unwrap_err();
    assert!(
        matches!(err, rampart_client::ClientError::Connect(_)),
        "handshake refused: {err}"
    );
    // And without any CA configured, the client refuses to connect at all.
    let cfg = ClientConfig::default().with_api_key(KEY_ACME);
    assert!(matches!(
        Client::connect(&s.url(t), cfg).await.unwrap_err(),
        rampart_client::ClientError::Config(_)
    ));
}

both_transports!(
    other_tenant_is_forbidden,
    frames_before_auth_get_401,
    bad_key_three_times_closes,
    no_auth_within_deadline_closes,
    big_frame_before_auth_is_refused,
    garbage_closes_only_that_connection,
    unknown_frame_type_and_version,
    untrusted_server_ca_fails,
);

/// QUIC is TLS 1.3 by definition; over TCP a TLS 1.2-only client must be
/// refused.
#[tokio::test]
async fn tls12_only_client_is_refused() {
    let s = start().await;
    let roots = s.ca_roots();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(s.server.tcp_addr().unwrap())
        .await
        .unwrap();
    let r = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await;
    assert!(r.is_err(), "TLS 1.2 handshake must fail");
}

/// With `tls_cipher_suites` set, the server accepts only those suites and
/// picks the first of its list that the client offers; the client library
/// still connects over both transports (QUIC keeps AES-128-GCM for its
/// first packets).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_cipher_suites_are_the_servers_choice() {
    use rustls::crypto::ring::{cipher_suite, default_provider};
    let s = start_with(|c| {
        c.tls_cipher_suites = vec![
            "TLS_CHACHA20_POLY1305_SHA256".into(),
            "TLS_AES_128_GCM_SHA256".into(),
        ]
    })
    .await;
    let addr = s.server.tcp_addr().unwrap();
    let handshake = |cfg: rustls::ClientConfig| async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(
                rustls_pki_types::ServerName::try_from("localhost").unwrap(),
                tcp,
            )
            .await
    };
    // rustls's client offers AES-256-GCM first; the server's order wins.
    let tls = handshake(s.rustls_client()).await.unwrap();
    assert_eq!(
        tls.get_ref().1.negotiated_cipher_suite(),
        Some(cipher_suite::TLS13_CHACHA20_POLY1305_SHA256)
    );
    // A client offering only a suite the server left out is refused.
    let roots = s.ca_roots();
    let only_256 =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::CryptoProvider {
            cipher_suites: vec![cipher_suite::TLS13_AES_256_GCM_SHA384],
            ..default_provider()
        }))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    assert!(
        handshake(only_256).await.is_err(),
        "AES-256-GCM was left out"
    );
    for t in [Transport::Quic, Transport::Tcp] {
        let c = s.client(t, KEY_ACME).await;
        c.publish("acme", "prod", "suites", "x").await.unwrap();
    }
}

/// A test CA with one client certificate, written as PEM files.
struct ClientPki {
    _dir: tempfile::TempDir,
    ca: std::path::PathBuf,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

fn client_pki() -> ClientPki {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "client CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "publisher-1");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let p = |n: &str| dir.path().join(n);
    std::fs::write(p("client-ca.crt"), ca.pem()).unwrap();
    std::fs::write(p("client.crt"), cert.pem()).unwrap();
    std::fs::write(p("client.key"), key.serialize_pem()).unwrap();
    ClientPki {
        ca: p("client-ca.crt"),
        cert: p("client.crt"),
        key: p("client.key"),
        _dir: dir,
    }
}

async fn client_certificate_required(t: Transport) {
    let pki = client_pki();
    let ca = pki.ca.clone();
    let s = start_with(move |c| {
        c.tls_ca_cert_path = Some(ca);
        c.tls_client_auth = rampart_server::ClientAuth::Require;
    })
    .await;
    // Without a certificate the handshake fails (over TCP the refusal may
    // only surface on the first read, so the error may come at HELLO).
    assert!(Client::connect(&s.url(t), s.config(KEY_ACME))
        .await
        .is_err());
    // With one, the connection works; the API key still decides the tenant.
    let c = Client::connect(
        &s.url(t),
        s.config(KEY_ACME).with_client_cert(&pki.cert, &pki.key),
    )
    .await
    .unwrap();
    assert_eq!(c.tenant().as_str(), "acme");
    c.ping().await.unwrap();
}

async fn client_certificate_requested(t: Transport) {
    let pki = client_pki();
    let ca = pki.ca.clone();
    let s = start_with(move |c| {
        c.tls_ca_cert_path = Some(ca);
        c.tls_client_auth = rampart_server::ClientAuth::Request;
    })
    .await;
    // Optional: both work.
    s.client(t, KEY_ACME).await.ping().await.unwrap();
    Client::connect(
        &s.url(t),
        s.config(KEY_ACME).with_client_cert(&pki.cert, &pki.key),
    )
    .await
    .unwrap()
    .ping()
    .await
    .unwrap();
    // A certificate from a CA the server does not trust is refused.
    let other = client_pki();
    assert!(Client::connect(
        &s.url(t),
        s.config(KEY_ACME).with_client_cert(&other.cert, &other.key),
    )
    .await
    .is_err());
}

both_transports!(client_certificate_required, client_certificate_requested);
