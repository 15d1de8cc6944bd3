//! `rampart state rebuild` as a built binary, on the data directory of a
//! real server that did control-plane work of every kind and was stopped:
//! the journal replays to exactly what the store holds; records changed
//! behind the server's back are named (never shown) and `--write` puts
//! them back, after which the restarted server works with them; a broken
//! chain is reported and refuses `--write`.

use std::path::Path;
use std::process::{Command, Output};

use rampart_client::{AdminClient, Client, Transport};
use rampart_store::{KvStore, Op, RedbStore, Table};
use serde_json::{json, Value};

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_rampart");
const ACL_CANARY: &str = "acl-principal-canary-77e1";

fn rebuild(data: &Path, extra: &[&str]) -> (Output, String) {
    let o = Command::new(BIN)
        .args(["state", "rebuild", "--dev", "--data-dir"])
        .arg(data)
        .args(extra)
        .env_clear()
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    (o, text)
}

async fn ok(admin: &AdminClient, method: &str, path: &str, body: Option<Value>) -> Value {
    let r = admin.call(method, path, body.as_ref()).await.unwrap();
    assert!(r.status < 300, "{method} {path}: {} {}", r.status, r.text);
    r.body
}

fn acl(tenant: &str, principal: &str) -> Value {
    json!(format!(
        "apiVersion: rampart.io/v1\nkind: ACL\nmetadata: {{tenant: {tenant}, namespace: prod}}\nspec:\n  rules:\n    - {{principal: {principal}, resource: \"stream:*\", permissions: [publish, subscribe]}}\n"
    ))
}

/// Control-plane work of every kind the admin API offers. Returns the
/// rotated managed key of acme (id, secret).
async fn control_plane_work(s: &TestServer) -> (String, String) {
    let dev_key = std::fs::read_to_string(s.server.dev_setup().unwrap().admin_key_path.clone())
        .unwrap()
        .trim()
        .to_string();
    let operator = s.admin(&dev_key);
    let acme = s.admin(KEY_ACME);
    for t in ["initech", "umbrella"] {
        ok(&operator, "POST", "/v1/tenants", Some(json!({ "name": t }))).await;
    }
    // Managed keys: one rotated, one revoked.
    let k = ok(
        &acme,
        "POST",
        "/v1/tenants/acme/keys",
        Some(json!({ "name": "ci", "roles": ["user"] })),
    )
    .await;
    let old_id = k["id"].as_str().unwrap().to_string();
    let rotated = ok(
        &acme,
        "POST",
        &format!("/v1/tenants/acme/keys/{old_id}/rotate"),
        Some(json!({ "grace_secs": 0 })),
    )
    .await;
    let new_id = rotated["id"].as_str().unwrap().to_string();
    let new_key = rotated["key"].as_str().unwrap().to_string();
    let gone = ok(
        &acme,
        "POST",
        "/v1/tenants/acme/keys",
        Some(json!({ "name": "temp", "roles": ["user"] })),
    )
    .await;
    ok(
        &acme,
        "POST",
        &format!(
            "/v1/tenants/acme/keys/{}/revoke",
            gone["id"].as_str().unwrap()
        ),
        None,
    )
    .await;
    // ACL documents: one applied, then replaced.
    ok(
        &acme,
        "PUT",
        "/v1/tenants/acme/acl",
        Some(acl("acme", "first")),
    )
    .await;
    ok(
        &acme,
        "PUT",
        "/v1/tenants/acme/acl",
        Some(acl("acme", ACL_CANARY)),
    )
    .await;
    // Revocations, containment, limits, streams.
    ok(
        &acme,
        "POST",
        "/v1/tenants/acme/tokens/revoke",
        Some(json!({ "principal": "svc" })),
    )
    .await;
    ok(
        &acme,
        "POST",
        "/v1/tenants/acme/namespaces/staging/disable",
        None,
    )
    .await;
    ok(&operator, "POST", "/v1/tenants/globex/disable", None).await;
    ok(&operator, "POST", "/v1/tenants/globex/enable", None).await;
    ok(&operator, "POST", "/v1/tenants/initech/disable", None).await;
    ok(
        &operator,
        "PUT",
        "/v1/tenants/acme/limits",
        Some(json!({ "publish_msgs_per_sec": 500 })),
    )
    .await;
    ok(
        &operator,
        "PUT",
        "/v1/tenants/acme/principals/ci/limits",
        Some(json!({ "publish_msgs_per_sec": 50 })),
    )
    .await;
    ok(
        &operator,
        "DELETE",
        "/v1/tenants/acme/principals/ci/limits",
        None,
    )
    .await;
    create_ledger(s).await;
    ok(
        &acme,
        "POST",
        "/v1/tenants/acme/namespaces/prod/streams",
        Some(json!({ "name": "scratch" })),
    )
    .await;
    ok(
        &acme,
        "DELETE",
        "/v1/tenants/acme/namespaces/prod/streams/scratch",
        None,
    )
    .await;
    // A tenant with a sealed record of its own, then erased.
    ok(
        &operator,
        "PUT",
        "/v1/tenants/umbrella/limits",
        Some(json!({ "publish_msgs_per_sec": 7 })),
    )
    .await;
    ok(&operator, "POST", "/v1/tenants/umbrella/erase", None).await;
    // New tenant keys, records sealed again under them: earlier events
    // stay under the older key version.
    ok(
        &acme,
        "POST",
        "/v1/tenants/acme/encryption/rotate",
        Some(json!({ "reencrypt": true })),
    )
    .await;
    (new_id, new_key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_rebuilds_the_store_and_repairs_it() {
    let s = start().await;
    let (key_id, key) = control_plane_work(&s).await;
    let data = s.stop().await;

    // The journal says exactly what the store holds.
    let (o, text) = rebuild(data.path(), &[]);
    assert!(o.status.success(), "{text}\n{o:?}");
    assert!(text.contains("chain intact"), "{text}");
    assert!(text.contains("state matches the store"), "{text}");
    assert!(
        text.contains("of erased tenants skipped"),
        "umbrella's events no longer open: {text}"
    );
    assert!(!text.contains(ACL_CANARY) && !text.contains(&key), "{text}");

    // The state as of the first entry: later records are "created since".
    let (o, text) = rebuild(data.path(), &["--until-seq", "1"]);
    assert!(o.status.success(), "{text}\n{o:?}");
    assert!(text.contains("state as of entry 1 "), "{text}");
    assert!(
        text.contains(&format!("keys/{key_id}: created since")),
        "{text}"
    );
    assert!(text.contains("changed since then (not written)"), "{text}");
    // A past state is never written.
    let (o, _) = rebuild(data.path(), &["--until-seq", "1", "--write"]);
    assert!(!o.status.success());

    // Behind the server's back: the managed key's record deleted, a tenant
    // record slipped in, the ACL document replaced by clear text.
    let path = data.path().join("state.redb");
    {
        let kv = RedbStore::open(&path).unwrap();
        let mallory =
            json!({ "name": "mallory", "disabled": false, "created_ms": 1, "changed_ms": 1 });
        kv.apply(vec![
            Op::Delete(Table::Keys, key_id.clone()),
            Op::Put(
                Table::Tenants,
                "mallory".into(),
                serde_json::to_vec(&mallory).unwrap(),
            ),
            Op::Put(Table::Acls, "acme/prod".into(), b"{}".to_vec()),
        ])
        .unwrap();
    }
    let (o, text) = rebuild(data.path(), &[]);
    assert_eq!(o.status.code(), Some(1), "{text}");
    for named in [
        format!("keys/{key_id}: in the journal, missing from the store"),
        "tenants/mallory: in the store, not in the journal".to_string(),
        "acls/acme/prod: unreadable in the store".to_string(),
        "3 record(s) differ from the journal".to_string(),
    ] {
        assert!(text.contains(&named), "{named} not in: {text}");
    }
    assert!(!text.contains(ACL_CANARY), "{text}");

    let (o, text) = rebuild(data.path(), &["--write"]);
    assert!(o.status.success(), "{text}\n{o:?}");
    assert!(
        text.contains(
            "written: 3 record(s) replaced or deleted; the store matches the journal now"
        ),
        "{text}"
    );
    let (o, text) = rebuild(data.path(), &[]);
    assert!(o.status.success(), "{text}");
    assert!(text.contains("state matches the store"), "{text}");

    // The restarted server works from the repaired records.
    let s = start_in(data, |_| {}).await;
    let c = Client::connect(&s.url(Transport::Tcp), s.config(&key))
        .await
        .expect("the repaired key authenticates");
    c.ping().await.unwrap();
    let doc = s
        .admin(KEY_ACME)
        .call("GET", "/v1/tenants/acme/acl", None)
        .await
        .unwrap();
    assert!(doc.text.contains(ACL_CANARY), "{}", doc.text);
    drop(c);
    let data = s.stop().await;

    // A journal entry removed: the chain is broken, and nothing is written.
    {
        let kv = RedbStore::open(&path).unwrap();
        let entries = kv.scan(Table::Events, "").unwrap();
        assert!(entries.len() > 10, "{}", entries.len());
        kv.apply(vec![Op::Delete(Table::Events, entries[4].0.clone())])
            .unwrap();
    }
    let (o, text) = rebuild(data.path(), &["--write"]);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(text.contains("CHAIN BROKEN at entry 5"), "{text}");
    assert!(
        text.contains("not written: the journal's chain is broken"),
        "{text}"
    );
    drop(data);
}
