//! `/healthz` and `/readyz` over HTTPS: public (no credential needed, a
//! wrong one ignored), GET and HEAD, readiness that follows a failing
//! audit disk and comes back by itself with it, and readiness that fails
//! first when a stop begins, while the server drains
//! (`shutdown_drain_secs`) and still serves.

use std::time::Duration;

use rampart_client::{AdminClient, Client, ClientConfig, Transport};
use serde_json::json;

use crate::common::*;

/// An HTTPS client that trusts the server and sends no credential.
fn anonymous(s: &TestServer) -> AdminClient {
    let url = format!("https://{}", s.server.http_addr().expect("https"));
    AdminClient::new(&url, &ClientConfig::default().with_ca(&s.ca)).expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_answer_over_https_without_a_token() {
    let s = start().await;
    let anon = anonymous(&s);

    let r = anon.call("GET", "/healthz", None).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body, json!({ "status": "ok" }));
    assert_eq!(r.header("content-type"), Some("application/json"));

    let r = anon.call("GET", "/readyz", None).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body, json!({ "status": "ready" }));
    assert_eq!(r.header("content-type"), Some("application/json"));

    for path in ["/healthz", "/readyz"] {
        let r = anon.call("HEAD", path, None).await.unwrap();
        assert_eq!(r.status, 200, "HEAD {path}");
        assert!(r.text.is_empty(), "HEAD {path} has no body: {}", r.text);
        // A credential, even a wrong one, changes nothing: nothing is
        // authenticated, so nothing is refused or counted as a failure.
        let r = s
            .admin("rk_wrong_0123456789abcdefghijklmnop")
            .call("GET", path, None)
            .await
            .unwrap();
        assert_eq!(r.status, 200, "GET {path} with a wrong key: {}", r.text);
    }
    // Other methods are not routes.
    let r = anon.call("POST", "/readyz", None).await.unwrap();
    assert_eq!(r.status, 405, "{}", r.text);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_a_failing_audit_disk() {
    let s = start().await;
    let anon = anonymous(&s);
    let admin = s.admin(KEY_ACME);
    assert_eq!(
        admin
            .call("GET", "/v1/tenants/acme/keys", None)
            .await
            .unwrap()
            .status,
        200
    );
    // A full disk, as in the audit tests: the current file becomes a link
    // to /dev/full. An admin call needs its audit record, so it fails, and
    // the audit writer now knows its sink is failing.
    let (log, aside) = fill_audit_disk(&s.data_dir().join("audit"));
    let r = admin
        .call("GET", "/v1/tenants/acme/keys", None)
        .await
        .unwrap();
    assert_eq!(r.status, 503, "{}", r.text);

    let r = anon.call("GET", "/readyz", None).await.unwrap();
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(r.body["status"], "not ready", "{}", r.text);
    let audit = r.body["checks"]["audit"].as_str().unwrap_or_default();
    assert!(audit.starts_with("failed"), "{}", r.text);
    assert_eq!(
        r.body["checks"].as_object().map(|c| c.len()),
        Some(1),
        "only the audit check fails: {}",
        r.text
    );
    assert!(!r.text.contains("/dev/full") && !r.text.contains(".jsonl"));
    let r = anon.call("HEAD", "/readyz", None).await.unwrap();
    assert_eq!(r.status, 503);
    // Liveness does not follow: restarting would not mend the disk.
    let r = anon.call("GET", "/healthz", None).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text);

    // The disk recovers. Nothing else calls the server, yet readiness
    // comes back: while the audit check fails, probes ask for an audit
    // write of their own (at most every 2 s), and the first that succeeds
    // clears the failure.
    std::fs::remove_file(&log).unwrap();
    std::fs::rename(&aside, &log).unwrap();
    let mut last = String::new();
    let mut ready = false;
    for _ in 0..100 {
        let r = anon.call("GET", "/readyz", None).await.unwrap();
        if r.status == 200 {
            assert_eq!(r.body, json!({ "status": "ready" }));
            ready = true;
            break;
        }
        last = r.text;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "ready again within 10 s; last answer: {last}");
    let r = admin
        .call("GET", "/v1/tenants/acme/keys", None)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    let data = s.stop().await;
    // The chain is intact, with the probe's record in it.
    let dir = data.path().join("audit");
    rampart_audit::verify_dir(&dir, None).expect("the log verifies");
    let text: String = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert!(
        text.contains("\"audit_retry\""),
        "the probe's record is there"
    );
}

/// A stop begins with the drain: `/readyz` answers 503 (`shutdown`),
/// `/healthz` 200, and the wire still serves, on open connections and new
/// ones, so a load balancer moves traffic away before anything is refused.
/// When the drain ends (here: ended early, as a second SIGTERM does, so
/// that no step of the test races a clock), the listeners close and the
/// stop completes cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_first_while_the_server_drains() {
    let s = start_with(|c| c.shutdown_drain_secs = 60).await;
    let anon = anonymous(&s);
    let r = anon.call("GET", "/readyz", None).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    let url = s.url(Transport::Tcp);
    let config = s.config(KEY_ACME);
    let open = s.client(Transport::Tcp, KEY_ACME).await;
    open.publish("acme", "prod", "orders", "before")
        .await
        .unwrap();
    let http = s.server.http_addr().expect("https");
    let admin = s.admin(KEY_ACME);

    let (end_drain, drain_ended) = tokio::sync::oneshot::channel::<()>();
    let stopping = tokio::spawn(s.server.shutdown_with(Duration::from_secs(150), async {
        let _ = drain_ended.await;
    }));

    // Not ready as soon as the stop begins...
    let mut seen = None;
    for _ in 0..300 {
        let r = anon.call("GET", "/readyz", None).await.unwrap();
        if r.status == 503 {
            seen = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = seen.expect("/readyz answers 503 within 30 s of the stop");
    assert_eq!(r.body["status"], "not ready", "{}", r.text);
    assert_eq!(r.body["checks"]["shutdown"], "in progress", "{}", r.text);
    let r = anon.call("HEAD", "/readyz", None).await.unwrap();
    assert_eq!(r.status, 503);
    // ...but alive, and serving: an open connection, a new one, an API call.
    let r = anon.call("GET", "/healthz", None).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    open.publish("acme", "prod", "orders", "while draining")
        .await
        .expect("an open connection is served during the drain");
    let late = Client::connect(&url, config)
        .await
        .expect("a new connection is accepted during the drain");
    late.publish("acme", "prod", "orders", "from a late client")
        .await
        .unwrap();
    let r = admin
        .call("GET", "/v1/tenants/acme/keys", None)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(!stopping.is_finished(), "the drain lasts until it is ended");

    end_drain.send(()).unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(60), stopping)
        .await
        .expect("the stop completes once the drain ends")
        .unwrap();
    assert!(stopped.is_clean(), "{stopped:?}");
    assert!(
        tokio::net::TcpStream::connect(http).await.is_err(),
        "the HTTPS listener is closed after the stop"
    );
}

/// The drain takes half of the stop's timeout at most: a 60 s drain in an
/// 8 s stop still stops (cleanly) rather than waiting out the drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_fits_in_the_shutdown_timeout() {
    let s = start_with(|c| c.shutdown_drain_secs = 60).await;
    let stopped = tokio::time::timeout(
        Duration::from_secs(30),
        s.stop_within(Duration::from_secs(8)),
    )
    .await
    .expect("the stop ends within its timeout, not after the whole drain")
    .0;
    assert!(stopped.is_clean(), "{stopped:?}");
}
