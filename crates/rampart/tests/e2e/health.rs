//! `/healthz` and `/readyz` over HTTPS: public (no credential needed, a
//! wrong one ignored), GET and HEAD, and readiness that follows a failing
//! audit disk and comes back by itself with it. Readiness during shutdown is tested
//! on the verdict itself (`rampart-server` `health.rs`): the listener
//! stops accepting as soon as shutdown begins, so no probe gets through
//! over the network to see it.

use std::time::Duration;

use rampart_client::{AdminClient, ClientConfig};
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
