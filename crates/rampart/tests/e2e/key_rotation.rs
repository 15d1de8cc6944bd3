//! Rotating the server's own keys while it serves: the token signing key
//! (`rampart incident rotate-token-key`), at once or with a grace period,
//! over QUIC and TCP; the audit keys (`rampart incident rotate-audit-key`).

use std::process::Command;
use std::time::Duration;

use rampart_client::{AdminClient, Client, ClientConfig, Transport};
use serde_json::json;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_rampart");

/// The operator's key (tenant `dev` in dev mode).
fn op_key(s: &TestServer) -> String {
    s.server.dev_setup().unwrap().admin_key.expose().to_string()
}

/// A token for acme's static admin key, from `POST /v1/auth`.
async fn token(s: &TestServer) -> String {
    let r = s
        .admin(KEY_ACME)
        .call("POST", "/v1/auth", Some(&json!({ "api_key": KEY_ACME })))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["auth"]["client_token"].as_str().unwrap().to_string()
}

fn with_token(s: &TestServer, token: &str) -> ClientConfig {
    ClientConfig::default().with_ca(&s.ca).with_token(token)
}

fn https(s: &TestServer, token: &str) -> AdminClient {
    let url = format!("https://{}", s.server.http_addr().unwrap());
    AdminClient::new(&url, &with_token(s, token)).unwrap()
}

/// `GET /v1/auth/whoami` with a token: its status, and the expiry the
/// server gives the credential.
async fn whoami(s: &TestServer, token: &str) -> (u16, Option<u64>) {
    let r = https(s, token)
        .call("GET", "/v1/auth/whoami", None)
        .await
        .unwrap();
    (r.status, r.body["expires_at_ms"].as_u64())
}

/// Publishes until the connection is refused; fails after 10 s.
async fn until_closed(c: &Client, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while c.publish("acme", "ns", "s", "x").await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "{what} still works");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn rotation_refuses_old_tokens_at_once(t: Transport) {
    let s = start().await;
    let old = token(&s).await;
    let by_old = Client::connect(&s.url(t), with_token(&s, &old))
        .await
        .unwrap();
    by_old.publish("acme", "ns", "s", "before").await.unwrap();
    let by_key = s.client(t, KEY_ACME).await;

    let o = admin_cli(&s, &op_key(&s), &["incident", "rotate-token-key"]);
    assert!(o.status.success(), "{o:?}");
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(said.contains("refused from now on"), "{said}");

    // The old token is dead everywhere, and so is the connection it opened.
    assert_eq!(whoami(&s, &old).await.0, 401);
    until_closed(&by_old, "the connection of the old token").await;
    assert!(Client::connect(&s.url(t), with_token(&s, &old))
        .await
        .is_err());
    // Other credentials are untouched; new tokens work.
    by_key.publish("acme", "ns", "s", "still").await.unwrap();
    let new = token(&s).await;
    assert_ne!(new, old);
    Client::connect(&s.url(t), with_token(&s, &new))
        .await
        .unwrap()
        .publish("acme", "ns", "s", "new")
        .await
        .unwrap();

    // The new key is the one on disk: after a restart the new token works
    // and the old one still does not.
    drop(by_key);
    let dir = s.stop().await;
    let s = start_in(dir, |_| {}).await;
    assert_eq!(whoami(&s, &new).await.0, 200);
    assert_eq!(whoami(&s, &old).await.0, 401);
    // The audit log (flushed by the stop) says who rotated which key.
    let text: String = audit_logs(&s.data_dir().join("audit"))
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert!(
        text.contains("\"event_type\":\"keys.token_signing.rotate\""),
        "no rotation record"
    );
}

async fn rotation_with_grace_keeps_old_tokens_until_it_ends(t: Transport) {
    let s = start().await;
    let old = token(&s).await;
    let (status, old_expiry) = whoami(&s, &old).await;
    assert_eq!(status, 200);
    let by_old = Client::connect(&s.url(t), with_token(&s, &old))
        .await
        .unwrap();
    // A tenant's admin is not an operator.
    let r = s
        .admin(KEY_ACME)
        .call("POST", "/v1/sys/rotate/token-signing", None)
        .await
        .unwrap();
    assert_eq!(r.status, 403, "{}", r.text);
    let admin = s.admin(&op_key(&s));

    // A grace period longer than a token may live is refused.
    let r = admin
        .call(
            "POST",
            "/v1/sys/rotate/token-signing",
            Some(&json!({ "grace_secs": 10 * 24 * 3600 })),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.text);

    let before = now_ms();
    let r = admin
        .call(
            "POST",
            "/v1/sys/rotate/token-signing",
            Some(&json!({ "grace_secs": 3 })),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    let until = r.body["previous_accepted_until_ms"].as_u64().unwrap();
    assert!(
        until >= before + 3_000 && until <= now_ms() + 3_000,
        "{until}"
    );
    assert_eq!(r.body["connections_closed"], 0);
    assert_ne!(r.body["key_id"], r.body["previous_key_id"]);

    // During the period the old token works, but no longer than it.
    let (status, expiry) = whoami(&s, &old).await;
    assert_eq!(status, 200);
    assert_eq!(expiry, Some(until.min(old_expiry.unwrap())));
    by_old.publish("acme", "ns", "s", "in grace").await.unwrap();
    let newer = token(&s).await;

    // After it, the old token and its connection are done; a token of the
    // key in force is not.
    until_closed(&by_old, "the connection of the old token").await;
    assert!(
        now_ms() + 100 >= until,
        "closed before the grace period ended"
    );
    assert_eq!(whoami(&s, &old).await.0, 401);
    assert_eq!(whoami(&s, &newer).await.0, 200);
}

both_transports!(
    rotation_refuses_old_tokens_at_once,
    rotation_with_grace_keeps_old_tokens_until_it_ends
);

/// Copies every file under `from` into `to` (same layout).
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    for (path, bytes) in snapshot(from) {
        let target = to.join(path.strip_prefix(from).unwrap());
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(target, bytes).unwrap();
    }
}

/// Starts a server on `dir`, sees it answer an operator, stops it.
async fn restart_and_serve(dir: tempfile::TempDir) -> tempfile::TempDir {
    let s = start_in(dir, |_| {}).await;
    let r = s
        .admin(&op_key(&s))
        .call("GET", "/v1/tenants", None)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    s.stop().await
}

fn verify(audit: &std::path::Path, pinned: Option<&std::path::Path>) -> (bool, String) {
    let mut c = Command::new(BIN);
    c.args(["audit", "verify"]).arg(audit);
    if let Some(p) = pinned {
        c.arg("--public-key").arg(p);
    }
    let o = c.output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).to_string(),
    )
}

/// `rampart incident rotate-audit-key` while serving: the log records the
/// rotation and verifies with the first key (audit.pub) or the new one
/// pinned; pseudonyms change key and `rampart audit hash` gives both. A
/// stop in the middle of a rotation is settled at the next start, either
/// way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_keys_rotate_while_serving_and_an_interrupted_rotation_settles() {
    let s = start().await;
    let data = s.data_dir();
    let admin = s.admin(&op_key(&s));
    let r = admin.call("GET", "/v1/tenants", None).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    // The state before the rotation, taken while stopped.
    let dir = s.stop().await;
    let before = tempfile::tempdir().unwrap();
    copy_tree(&data, before.path());
    let s = start_in(dir, |_| {}).await;

    let o = admin_cli(&s, &op_key(&s), &["incident", "rotate-audit-key"]);
    assert!(o.status.success(), "{o:?}");
    let new_public = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert_eq!(new_public.len(), 44, "{new_public}");
    // Mandatory audit records go on under the new key.
    let r = s
        .admin(KEY_ACME)
        .call(
            "POST",
            "/v1/tenants/acme/keys",
            Some(&json!({ "name": "after-rotation", "roles": ["user"] })),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.text);
    let key_id = r.body["id"].as_str().unwrap().to_string();
    let dir = s.stop().await;

    let audit = data.join("audit");
    let (ok, said) = verify(&audit, None);
    assert!(ok && said.contains("1 key rotation(s)"), "{said}");
    let pinned = before.path().join("new.pub");
    std::fs::write(&pinned, &new_public).unwrap();
    let (ok, said) = verify(&audit, Some(&pinned));
    assert!(ok, "{said}");
    // The new key's id is recorded under the new HMAC key; `audit hash`
    // gives that first, then the same value under the retired key.
    let text: String = audit_logs(&audit)
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    let o = Command::new(BIN)
        .args(["audit", "hash", &key_id, "--dev", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&o.stdout).to_string();
    let lines: Vec<&str> = said.lines().collect();
    assert_eq!(lines.len(), 2, "{said}");
    assert!(text.contains(lines[0]), "{said}");
    assert!(lines[1].contains("retired key"), "{said}");
    assert!(
        !text.contains(lines[1].split('\t').next().unwrap()),
        "{said}"
    );

    // A stop after the log took the rotation, before the key files moved:
    // the old files in place, the new ones beside them as `.next`.
    let after = tempfile::tempdir().unwrap();
    copy_tree(&data, after.path());
    for f in ["audit_signing.key", "audit_hmac.key"] {
        std::fs::copy(data.join(f), data.join(format!("{f}.next"))).unwrap();
        std::fs::copy(before.path().join(f), data.join(f)).unwrap();
    }
    let dir = restart_and_serve(dir).await;
    assert!(!data.join("audit_signing.key.next").exists());
    assert_eq!(
        std::fs::read(data.join("audit_signing.key")).unwrap(),
        std::fs::read(after.path().join("audit_signing.key")).unwrap(),
        "the rotation was finished"
    );
    assert!(verify(&audit, Some(&pinned)).0);

    // A stop before the log took it: the new keys are dropped, the old go on.
    std::fs::remove_dir_all(&audit).unwrap();
    copy_tree(&before.path().join("audit"), &audit);
    for f in ["audit_signing.key", "audit_hmac.key"] {
        std::fs::copy(after.path().join(f), data.join(format!("{f}.next"))).unwrap();
        std::fs::copy(before.path().join(f), data.join(f)).unwrap();
    }
    let _dir = restart_and_serve(dir).await;
    assert!(!data.join("audit_signing.key.next").exists());
    assert!(!data.join("audit_hmac.key.next").exists());
    assert_eq!(
        std::fs::read(data.join("audit_signing.key")).unwrap(),
        std::fs::read(before.path().join("audit_signing.key")).unwrap(),
        "the old key stayed"
    );
    let (ok, said) = verify(&audit, None);
    assert!(ok && said.contains("0 key rotation(s)"), "{said}");
}
