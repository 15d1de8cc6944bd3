//! Certificate rotation by replacing files: new handshakes get the new
//! certificate, connections already open keep working, a pair that does not
//! load changes nothing, and no restart is needed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rampart_client::{Client, ClientConfig, Transport};

use crate::common::*;

/// A CA (written as `<name>-ca.crt`) and a server certificate and key for
/// 127.0.0.1 and localhost that it signed, valid for `days`.
struct Pair {
    ca: PathBuf,
    cert: String,
    key: String,
}

fn pair(dir: &Path, name: &str, days: i64) -> Pair {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} CA"));
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(days);
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let ca_path = dir.join(format!("{name}-ca.crt"));
    std::fs::write(&ca_path, ca.pem()).unwrap();
    Pair {
        ca: ca_path,
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

/// Replaces `path` in one step (write beside it, then rename), as
/// certificate tools do.
fn replace(path: &Path, contents: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn trusting(ca: &Path) -> ClientConfig {
    ClientConfig::default().with_ca(ca).with_api_key(KEY_ACME)
}

async fn certificate_files_replaced_are_served_without_a_restart(t: Transport) {
    let pki = tempfile::tempdir().unwrap();
    let old = pair(pki.path(), "old", 90);
    let new = pair(pki.path(), "new", 20);
    let (cert, key) = (pki.path().join("server.crt"), pki.path().join("server.key"));
    std::fs::write(&cert, &old.cert).unwrap();
    std::fs::write(&key, &old.key).unwrap();
    let s = start_with(|c| {
        c.tls_cert_path = Some(cert.clone());
        c.tls_key_path = Some(key.clone());
        c.tls_reload_interval_secs = 1;
    })
    .await;
    let url = s.url(t);
    let open = Client::connect(&url, trusting(&old.ca)).await.unwrap();
    assert!(Client::connect(&url, trusting(&new.ca)).await.is_err());

    // A key that does not match the certificate: the old pair stays.
    replace(&cert, &new.cert);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    Client::connect(&url, trusting(&old.ca))
        .await
        .expect("a half-replaced pair is not served");

    replace(&key, &new.key);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if Client::connect(&url, trusting(&new.ca)).await.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate was not served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // New handshakes no longer get the old certificate...
    assert!(Client::connect(&url, trusting(&old.ca)).await.is_err());
    // ...and the connection made before the change is still served.
    open.ping().await.expect("the open connection survives");
    // The HTTPS API serves the same certificate.
    let https = format!("https://{}", s.server.http_addr().unwrap());
    let admin = rampart_client::AdminClient::new(&https, &trusting(&new.ca)).unwrap();
    let r = admin.call("GET", "/healthz", None).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
}

both_transports!(certificate_files_replaced_are_served_without_a_restart);
