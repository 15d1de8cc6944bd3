//! Keys and encryption at rest end to end: tenant records sealed with the
//! tenant's keys (no plaintext on disk), readable after a restart, and
//! unreadable for good after the tenant is erased.

use std::path::Path;
use std::time::Duration;

use rampart_client::{Client, Transport};
use serde_json::json;

use crate::common::*;

/// Every byte of every file under `dir`.
fn all_bytes(dir: &Path) -> Vec<u8> {
    snapshot(dir).into_iter().flat_map(|(_, b)| b).collect()
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

async fn tenant_records_are_sealed_at_rest_and_erasable(t: Transport) {
    const CANARY: &str = "principal-canary-4c1d";
    let s = start().await;
    let admin = s.admin(KEY_ACME);
    let acl = format!(
        "apiVersion: rampart.io/v1\nkind: ACL\nmetadata: {{tenant: acme, namespace: prod}}\nspec:\n  rules:\n    - {{principal: {CANARY}, resource: \"stream:orders\", permissions: [publish]}}\n"
    );
    let r = admin
        .call("PUT", "/v1/tenants/acme/acl", Some(&json!(acl)))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    let c = s.client(t, KEY_ACME).await;
    c.publish("acme", "prod", "orders", "PAYLOAD-CANARY-90ab")
        .await
        .unwrap();
    c.cache_put("acme", "prod", "c", "k", "VALUE-CANARY-12ef", None)
        .await
        .unwrap();
    drop(c);
    let dir = s.stop().await;

    // No plaintext canary anywhere under the data directory (raw bytes).
    let bytes = all_bytes(dir.path());
    for canary in [CANARY, "PAYLOAD-CANARY-90ab", "VALUE-CANARY-12ef"] {
        assert!(!contains(&bytes, canary), "{canary} found on disk");
    }
    // Known secrets stay wrapped too.
    for f in [
        "api_key_pepper",
        "token_signing.key",
        "audit_signing.key",
        "audit_hmac.key",
    ] {
        let text = std::fs::read_to_string(dir.path().join(f)).unwrap();
        assert!(
            text.starts_with("rampart-wrapped:v1:"),
            "{f} is not wrapped"
        );
    }

    // After a restart with the same master key, everything reads back.
    let s = start_in(dir, |_| {}).await;
    let admin = s.admin(KEY_ACME);
    let r = admin
        .call("GET", "/v1/tenants/acme/acl", None)
        .await
        .unwrap();
    assert!(r.text.contains(CANARY), "{}", r.text);

    // Erase acme: connections close, credentials stop working, the name is
    // never reused, and other tenants are unaffected.
    let dev_key = std::fs::read_to_string(s.server.dev_setup().unwrap().admin_key_path.clone())
        .unwrap()
        .trim()
        .to_string();
    let operator = s.admin(&dev_key);
    let acme = s.client(t, KEY_ACME).await;
    let mut sub = acme.subscribe("acme", "prod", "orders").await.unwrap();
    let globex = s.client(t, KEY_GLOBEX).await;
    let r = operator
        .call("POST", "/v1/tenants/acme/erase", None)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    tokio::time::timeout(Duration::from_secs(2), async {
        while sub.next().await.is_some() {}
    })
    .await
    .expect("acme's connection closed");
    assert!(Client::connect(&s.url(t), s.config(KEY_ACME))
        .await
        .is_err());
    let again = operator
        .call("POST", "/v1/tenants", Some(&json!({"name": "acme"})))
        .await
        .unwrap();
    assert_eq!(again.status, 409, "{}", again.text);
    assert_eq!(
        operator
            .call("POST", "/v1/tenants/acme/erase", None)
            .await
            .unwrap()
            .status,
        409
    );
    globex.ping().await.unwrap();
    globex
        .cache_put("globex", "p", "c", "k", "v", None)
        .await
        .unwrap();

    // After another restart acme stays erased and its records are gone.
    let dir = s.stop().await;
    let bytes = all_bytes(dir.path());
    assert!(!contains(&bytes, CANARY));
    let s = start_in(dir, |_| {}).await;
    assert!(Client::connect(&s.url(t), s.config(KEY_ACME))
        .await
        .is_err());
    s.client(t, KEY_GLOBEX).await.ping().await.unwrap();
}

both_transports!(tenant_records_are_sealed_at_rest_and_erasable);

async fn tenant_key_rotation_reseals_records(_t: Transport) {
    let s = start().await;
    let admin = s.admin(KEY_ACME);
    let acl = "apiVersion: rampart.io/v1\nkind: ACL\nmetadata: {tenant: acme}\nspec:\n  rules:\n    - {principal: rotated, resource: \"stream:*\", permissions: [publish]}\n";
    admin
        .call("PUT", "/v1/tenants/acme/acl", Some(&json!(acl)))
        .await
        .unwrap();
    admin
        .call(
            "POST",
            "/v1/tenants/acme/keys",
            Some(&json!({"name": "k1"})),
        )
        .await
        .unwrap();
    // Without re-encryption: new version, nothing rewritten yet.
    let r = admin
        .call("POST", "/v1/tenants/acme/encryption/rotate", None)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["records_resealed"], 0);
    let v1 = r.body["key_version"].as_u64().unwrap();
    // With it: every record sealed again under the newest key.
    let r = admin
        .call(
            "POST",
            "/v1/tenants/acme/encryption/rotate",
            Some(&json!({"reencrypt": true})),
        )
        .await
        .unwrap();
    assert_eq!(r.body["key_version"].as_u64().unwrap(), v1 + 1);
    assert!(
        r.body["records_resealed"].as_u64().unwrap() >= 2,
        "{}",
        r.text
    );
    // Another tenant's admin cannot rotate acme's keys.
    assert_eq!(
        s.admin(KEY_GLOBEX)
            .call("POST", "/v1/tenants/acme/encryption/rotate", None)
            .await
            .unwrap()
            .status,
        403
    );
    // Everything reads back after a restart.
    let dir = s.stop().await;
    let s = start_in(dir, |_| {}).await;
    let admin = s.admin(KEY_ACME);
    let acl_back = admin
        .call("GET", "/v1/tenants/acme/acl", None)
        .await
        .unwrap();
    assert!(acl_back.text.contains("rotated"));
    let keys = admin
        .call("GET", "/v1/tenants/acme/keys", None)
        .await
        .unwrap();
    assert_eq!(keys.body["keys"][0]["name"], "k1");
}

both_transports!(tenant_key_rotation_reseals_records);

/// The vault-transit master key provider against the real OpenBao that
/// `.ci/run` starts (skipped, saying so, when it is not there).
async fn vault_transit_master_key(t: Transport) {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let (Some(addr), Some(token), Some(ca)) = (
        var("RAMPART_TEST_BAO_ADDR"),
        var("RAMPART_TEST_BAO_TOKEN"),
        var("RAMPART_TEST_BAO_CACERT"),
    ) else {
        eprintln!("vault_transit_master_key skipped: no OpenBao (run scripts/openbao-dev.sh)");
        return;
    };
    let name =
        |what: &str| format!("rampart-e2e-{what}-{t:?}-{}", std::process::id()).to_lowercase();
    let ensure = |key: String| {
        let (addr, token, ca) = (addr.clone(), token.clone(), ca.clone());
        async move {
            let mut c =
                rampart_keys::TransitConfig::new(addr, rampart_identity::Secret::new(token), key);
            c.ca_file = Some(ca.into());
            rampart_keys::VaultTransit::new(c)
                .unwrap()
                .ensure_key()
                .await
                .unwrap();
        }
    };
    let key = name("main");
    let other = name("other");
    ensure(key.clone()).await;
    ensure(other.clone()).await;
    let token_dir = tempfile::tempdir().unwrap();
    let token_file = token_dir.path().join("bao.token");
    std::fs::write(&token_file, &token).unwrap();
    let transit = |key: String| {
        let (addr, ca, token_file) = (addr.clone(), ca.clone(), token_file.clone());
        move |c: &mut rampart_server::Config| {
            c.master_key_provider = rampart_server::MasterKeyKind::VaultTransit;
            c.vault_transit_address = Some(addr);
            c.vault_transit_key = key;
            c.vault_transit_ca_cert_path = Some(ca.into());
            c.vault_transit_token_path = Some(token_file);
        }
    };

    let s = start_with(transit(key.clone())).await;
    let admin = s.admin(KEY_ACME);
    let acl = "apiVersion: rampart.io/v1\nkind: ACL\nmetadata: {tenant: acme}\nspec:\n  rules:\n    - {principal: transit-canary, resource: \"stream:*\", permissions: [publish]}\n";
    assert_eq!(
        admin
            .call("PUT", "/v1/tenants/acme/acl", Some(&json!(acl)))
            .await
            .unwrap()
            .status,
        200
    );
    let dir = s.stop().await;
    assert!(!contains(&all_bytes(dir.path()), "transit-canary"));
    assert!(
        !dir.path().join("master.key").exists(),
        "no local master key"
    );

    // Restarted with the same transit key: readable.
    let s = start_in(dir, transit(key.clone())).await;
    let r = s
        .admin(KEY_ACME)
        .call("GET", "/v1/tenants/acme/acl", None)
        .await
        .unwrap();
    assert!(r.text.contains("transit-canary"), "{}", r.text);
    let dir = s.stop().await;

    // Another transit key: refused, nothing changed.
    let mut config = base_config(dir.path());
    transit(other)(&mut config);
    let before = all_bytes(dir.path());
    let e = rampart_server::Server::start(rampart_server::ServerOptions::new(config).dev(true))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not the one"), "{e}");
    assert!(all_bytes(dir.path()) == before, "files changed");
}

both_transports!(vault_transit_master_key);
