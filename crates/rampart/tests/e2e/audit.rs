//! The audit log end to end: what is recorded, that nothing secret is, that
//! a broken audit disk fails admin calls fast without stopping the data
//! plane, that no token is given out before its audit record is durable,
//! and that each tenant sees only its own records.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rampart_client::{AdminClient, Client, ClientConfig, Transport};
use serde_json::{json, Value};

use crate::common::*;

fn audit_dir(s: &TestServer) -> PathBuf {
    s.data_dir().join("audit")
}

/// Every audit file's text, concatenated.
fn all_audit_text(dir: &Path) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            out.push_str(&String::from_utf8_lossy(&std::fs::read(&p).unwrap()));
        }
    }
    out
}

async fn records_everything_and_nothing_secret(t: Transport) {
    let s = start().await;
    let admin = s.admin(KEY_ACME);
    let created = admin
        .call(
            "POST",
            "/v1/tenants/acme/keys",
            Some(&json!({"name": "canary-owner", "roles": ["user"]})),
        )
        .await
        .unwrap();
    let secret_key = created.body["key"].as_str().unwrap().to_string();
    let key_id = created.body["id"].as_str().unwrap().to_string();
    let c = s.client(t, &secret_key).await;
    c.publish("acme", "prod", "s", "PAYLOAD-CANARY-5e1f")
        .await
        .unwrap();
    c.cache_put("acme", "prod", "c", "k", "VALUE-CANARY-77aa", None)
        .await
        .unwrap();
    let (token, _) = c.request_token(None).await.unwrap();
    assert!(c.publish("globex", "prod", "s", "x").await.is_err());
    assert!(Client::connect(
        &s.url(t),
        s.config("rampart_0123456789abcdef_WRONG-CANARY-KEY")
    )
    .await
    .is_err());
    drop(c);
    let dir = audit_dir(&s);
    s.server.shutdown(Duration::from_secs(5)).await;

    let text = all_audit_text(&dir);
    for canary in [
        secret_key.as_str(),
        token.expose().as_str(),
        "PAYLOAD-CANARY-5e1f",
        "VALUE-CANARY-77aa",
        "WRONG-CANARY-KEY",
        KEY_ACME,
        key_id.as_str(),
    ] {
        assert!(!text.contains(canary), "audit log contains {canary}");
    }
    let mut logs = String::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "jsonl") {
            logs.push_str(&std::fs::read_to_string(&p).unwrap());
        }
    }
    let records: Vec<Value> = logs
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let has = |ty: &str| records.iter().any(|r| r["event_type"] == ty);
    for ty in [
        "server.start",
        "auth.success",
        "auth.failure",
        "authz.deny",
        "admin.request",
        "key.create",
        "token.issue",
        "connection.close",
        "audit.checkpoint",
        "server.stop",
    ] {
        assert!(has(ty), "no {ty} record");
    }
    // Ids appear as HMACs: the key id's HMAC is findable.
    let config = base_config(dir.parent().unwrap());
    let hkey =
        rampart_server::server_secret(&config, true, rampart_server::ServerSecret::AuditHmac)
            .await
            .unwrap();
    let hmac = rampart_audit::AuditKeys::hmac_id_for(hkey.expose(), &key_id);
    assert!(text.contains(&hmac), "key id recorded as its HMAC");
    // Seed fields on every record.
    for r in &records {
        for f in [
            "seq",
            "timestamp",
            "event_type",
            "principal",
            "principal_type",
            "tenant_id",
            "namespace",
            "resource",
            "action",
            "result",
            "metadata",
            "source_ip",
            "user_agent",
            "prev_hash",
            "hash",
        ] {
            assert!(r.get(f).is_some(), "{f} missing in {r}");
        }
    }
    let report = rampart_audit::verify_dir(&dir, None).expect("the log verifies");
    assert!(report.records >= records.len() as u64 - report.checkpoints);
}

async fn broken_audit_disk_fails_admin_fast_but_not_the_data_plane(t: Transport) {
    let s = start().await;
    let admin = s.admin(KEY_ACME);
    let publisher = s.client(t, KEY_ACME).await;
    let subscriber = s.client(t, KEY_ACME).await;
    let mut sub = subscriber.subscribe("acme", "prod", "s").await.unwrap();
    assert_eq!(
        admin
            .call("GET", "/v1/tenants/acme/keys", None)
            .await
            .unwrap()
            .status,
        200
    );
    // A full disk: the current file becomes a link to /dev/full.
    let dir = audit_dir(&s);
    let (log, aside) = fill_audit_disk(&dir);

    let started = Instant::now();
    let r = admin
        .call("GET", "/v1/tenants/acme/keys", None)
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(r.status, 503, "{}", r.text);
    assert!(
        took < Duration::from_secs(1),
        "refused within 1 s, took {took:?}"
    );
    // A new login needs its audit record too: refused, quickly.
    let e = Client::connect(&s.url(t), s.config(KEY_ACME))
        .await
        .unwrap_err();
    assert_eq!(e.code().map(|c| c.0), Some(503));
    // The data plane of open connections keeps flowing.
    publisher
        .publish("acme", "prod", "s", "still-flowing")
        .await
        .unwrap();
    let e = next_event(&mut sub, 5).await;
    assert_eq!(&e.payload[..], b"still-flowing");

    // The disk recovers: service resumes without a restart.
    std::fs::remove_file(&log).unwrap();
    std::fs::rename(&aside, &log).unwrap();
    let mut ok = false;
    for _ in 0..50 {
        if admin
            .call("GET", "/v1/tenants/acme/keys", None)
            .await
            .unwrap()
            .status
            == 200
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "admin calls work again");
    s.client(t, KEY_ACME).await.ping().await.unwrap();
    s.server.shutdown(Duration::from_secs(5)).await;
    rampart_audit::verify_dir(&dir, None).expect("the chain is intact after the outage");
}

/// Every way to get a token (`POST /v1/auth`, an AppRole login, a
/// `TokenRequest` frame) signs it while its audit record is on its way to
/// the disk, and gives it out only once the record is durable: with the
/// audit disk full each answers 503 with no token, and once the disk is
/// back each gives a token that works.
async fn no_token_is_given_out_before_its_audit_record(t: Transport) {
    let s = start().await;
    let url = format!("https://{}", s.server.http_addr().expect("https"));
    // A client with the token a login answered with.
    let as_holder = |r: &rampart_client::AdminResponse| {
        assert_eq!(r.status, 200, "{}", r.text);
        let token = r.body["auth"]["client_token"].as_str().unwrap();
        let cfg = ClientConfig::default()
            .with_ca(&s.ca)
            .with_token(token.to_string());
        AdminClient::new(&url, &cfg).unwrap()
    };
    let admin = s.admin(KEY_ACME);
    let by_key = json!({ "api_key": KEY_ACME });
    let vault = as_holder(&admin.call("POST", "/v1/auth", Some(&by_key)).await.unwrap());
    let role = json!({ "token_policies": [] });
    let r = vault
        .call("POST", "/v1/auth/approle/role/ci", Some(&role))
        .await
        .unwrap();
    assert!(r.status < 300, "{}", r.text);
    let r = vault
        .call("GET", "/v1/auth/approle/role/ci/role-id", None)
        .await
        .unwrap();
    let role_id = r.body["data"]["role_id"].as_str().unwrap().to_string();
    let r = vault
        .call("POST", "/v1/auth/approle/role/ci/secret-id", None)
        .await
        .unwrap();
    let secret_id = r.body["data"]["secret_id"].as_str().unwrap().to_string();
    let by_role = json!({ "role_id": role_id, "secret_id": secret_id });
    let client = s.client(t, KEY_ACME).await;

    let dir = audit_dir(&s);
    let (log, aside) = fill_audit_disk(&dir);
    let refused = |what: &str, r: rampart_client::AdminResponse| {
        assert_eq!(r.status, 503, "{what}: {}", r.text);
        assert!(!r.text.contains("client_token"), "{what}: {}", r.text);
        assert!(!r.text.contains("rt1."), "{what}: {}", r.text);
    };
    refused(
        "POST /v1/auth",
        admin.call("POST", "/v1/auth", Some(&by_key)).await.unwrap(),
    );
    let login = "/v1/auth/approle/login";
    refused(
        "AppRole login",
        admin.call("POST", login, Some(&by_role)).await.unwrap(),
    );
    let e = client.request_token(None).await.unwrap_err();
    assert_eq!(e.code().map(|c| c.0), Some(503), "{e}");

    std::fs::remove_file(&log).unwrap();
    std::fs::rename(&aside, &log).unwrap();
    let mut back = None;
    for _ in 0..50 {
        let r = admin.call("POST", login, Some(&by_role)).await.unwrap();
        if r.status == 200 {
            back = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let as_role = as_holder(&back.expect("AppRole logins work again"));
    let r = as_role
        .call("GET", "/v1/auth/token/lookup-self", None)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "the new token works: {}", r.text);
    let r = admin.call("POST", "/v1/auth", Some(&by_key)).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    let (token, _) = client.request_token(None).await.unwrap();
    assert!(token.expose().starts_with("rt1."));
    s.server.shutdown(Duration::from_secs(5)).await;
    rampart_audit::verify_dir(&dir, None).expect("the chain is intact after the outage");
}

async fn each_tenant_reads_only_its_own_records(t: Transport) {
    let s = start().await;
    // Activity in both tenants.
    s.client(t, KEY_ACME).await.ping().await.unwrap();
    s.client(t, KEY_GLOBEX).await.ping().await.unwrap();
    let g = s.admin(KEY_GLOBEX);
    g.call(
        "POST",
        "/v1/tenants/globex/keys",
        Some(&json!({"name": "g1"})),
    )
    .await
    .unwrap();
    let acme = s.admin(KEY_ACME);
    acme.call(
        "POST",
        "/v1/tenants/acme/keys",
        Some(&json!({"name": "a1"})),
    )
    .await
    .unwrap();
    // Records are written asynchronously; the mandatory ones are durable
    // before the call returned, so they are there now.
    let r = acme
        .call("GET", "/v1/tenants/acme/audit", None)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    let recs = r.body["records"].as_array().unwrap();
    assert!(!recs.is_empty());
    assert!(recs.iter().all(|x| x["tenant_id"] == "acme"), "{recs:?}");
    assert!(recs.iter().any(|x| x["event_type"] == "admin.request"));
    assert!(!r.text.contains("globex"), "nothing of globex: {}", r.text);
    // And not the other way round.
    assert_eq!(
        acme.call("GET", "/v1/tenants/globex/audit", None)
            .await
            .unwrap()
            .status,
        403
    );
    // Paging by sequence number.
    let first = recs[0]["seq"].as_u64().unwrap();
    let r = acme
        .call(
            "GET",
            &format!("/v1/tenants/acme/audit?since={first}&limit=1"),
            None,
        )
        .await
        .unwrap();
    let page = r.body["records"].as_array().unwrap();
    assert_eq!(page.len(), 1);
    assert!(page[0]["seq"].as_u64().unwrap() > first);
}

both_transports!(
    records_everything_and_nothing_secret,
    broken_audit_disk_fails_admin_fast_but_not_the_data_plane,
    no_token_is_given_out_before_its_audit_record,
    each_tenant_reads_only_its_own_records,
);
