//! The external vault proxy (`vault_backend = "external"`) against the real
//! OpenBao that `.ci/run` starts (skipped, saying so, when it is not
//! there): Rampart's secrets API in front of a fresh KV v2 mount, each
//! tenant under its own prefix, with Rampart's authorization still deciding
//! who reads and writes.

use std::path::PathBuf;
use std::time::Duration;

use rampart_client::{AdminClient, AdminResponse, ClientConfig};
use serde_json::{json, Value};

use crate::common::*;

struct Bao {
    addr: String,
    token: String,
    ca: PathBuf,
}

fn bao() -> Option<Bao> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    Some(Bao {
        addr: var("RAMPART_TEST_BAO_ADDR")?,
        token: var("RAMPART_TEST_BAO_TOKEN")?,
        ca: var("RAMPART_TEST_BAO_CACERT")?.into(),
    })
}

impl Bao {
    /// A root-token call straight to OpenBao.
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> AdminResponse {
        let cfg = ClientConfig::default()
            .with_ca(&self.ca)
            .with_token(&self.token);
        AdminClient::new(&self.addr, &cfg)
            .unwrap()
            .call(method, path, body.as_ref())
            .await
            .unwrap()
    }

    /// Enables a KV v2 mount and waits until it serves (a new KV v2 mount
    /// upgrades itself for a moment first).
    async fn new_kv_mount(&self, name: &str) {
        let r = self
            .call(
                "POST",
                &format!("/v1/sys/mounts/{name}"),
                Some(json!({"type": "kv", "options": {"version": "2"}})),
            )
            .await;
        assert!(r.status < 300, "enabling {name}: {} {}", r.status, r.text);
        for _ in 0..100 {
            if self
                .call("GET", &format!("/v1/{name}/config"), None)
                .await
                .status
                == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the KV v2 mount {name} did not become ready");
    }
}

/// Admins of both tenants may read and write every secret of their tenant;
/// the AppRole `billing-prod` of acme only reads `billing/prod`.
async fn grant_secrets(s: &TestServer) {
    for (tenant, key) in [("acme", KEY_ACME), ("globex", KEY_GLOBEX)] {
        let mut acl = format!(
            "apiVersion: rampart.io/v1\nkind: ACL\nmetadata:\n  tenant: {tenant}\nspec:\n  rules:\n    - principal: \"role:admin\"\n      resource: \"secret:*\"\n      permissions: [secret_read, secret_write]\n"
        );
        if tenant == "acme" {
            acl.push_str("    - principal: \"approle:billing-prod\"\n      resource: \"secret:billing/prod/*\"\n      permissions: [secret_read]\n");
        }
        let r = s
            .admin(key)
            .call(
                "PUT",
                &format!("/v1/tenants/{tenant}/acl"),
                Some(&json!(acl)),
            )
            .await
            .unwrap();
        assert!(r.status < 300, "{}", r.error());
    }
}

/// A client of Rampart's HTTPS API with a bearer credential.
struct Api<'a> {
    s: &'a TestServer,
    cfg: ClientConfig,
}

impl Api<'_> {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> AdminResponse {
        let url = format!("https://{}", self.s.server.http_addr().expect("https"));
        AdminClient::new(&url, &self.cfg)
            .unwrap()
            .call(method, path, body.as_ref())
            .await
            .unwrap()
    }

    /// Calls and checks the status.
    async fn expect(&self, status: u16, method: &str, path: &str, body: Option<Value>) -> Value {
        let r = self.call(method, path, body).await;
        assert_eq!(r.status, status, "{method} {path}: {}", r.text);
        r.body
    }
}

async fn token_for(s: &TestServer, body: Value) -> String {
    let api = Api {
        s,
        cfg: ClientConfig::default().with_ca(&s.ca),
    };
    api.expect(200, "POST", "/v1/auth", Some(body)).await["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_proxied_to_openbao_under_rampart_authorization() {
    let Some(bao) = bao() else {
        eprintln!(
            "secrets_proxied_to_openbao_under_rampart_authorization skipped: no OpenBao (run scripts/openbao-dev.sh)"
        );
        return;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let mount = format!("rampart-e2e-kv-{}-{nanos}", std::process::id());
    bao.new_kv_mount(&mount).await;

    // The token from a private file in the test's own folder, not the
    // process environment (tests run in parallel).
    let token_dir = tempfile::tempdir().unwrap();
    let token_file = token_dir.path().join("bao.token");
    rampart_identity::fsutil::write_private_file(&token_file, bao.token.as_bytes()).unwrap();
    let s = start_with(|c| {
        c.vault_backend = rampart_server::VaultBackend::External;
        c.vault_external_address = Some(bao.addr.clone());
        c.vault_external_mount = mount.clone();
        c.vault_external_ca_cert_path = Some(bao.ca.clone());
        c.vault_external_token_path = Some(token_file.clone());
    })
    .await;
    grant_secrets(&s).await;
    let admin_token = token_for(&s, json!({ "api_key": KEY_ACME })).await;
    let admin = Api {
        s: &s,
        cfg: ClientConfig::default()
            .with_ca(&s.ca)
            .with_token(&admin_token),
    };
    let db = "/v1/secret/data/billing/prod/db";

    // Two versions with check-and-set; a stale cas is refused as locally.
    let v1 = admin
        .expect(
            200,
            "POST",
            db,
            Some(json!({"data": {"password": "CANARY-ext-v1"}, "options": {"cas": 0}})),
        )
        .await;
    assert_eq!(v1["data"]["version"], 1, "{v1}");
    assert_eq!(v1["data"]["deletion_time"], "", "{v1}");
    let stale = admin
        .call(
            "POST",
            db,
            Some(json!({"data": {"password": "nope"}, "options": {"cas": 0}})),
        )
        .await;
    assert_eq!(stale.status, 400, "{}", stale.text);
    assert!(
        stale.error().contains("cas 0, current 1"),
        "{}",
        stale.error()
    );
    let v2 = admin
        .expect(
            200,
            "POST",
            db,
            Some(json!({"data": {"password": "CANARY-ext-v2"}, "options": {"cas": 1}})),
        )
        .await;
    assert_eq!(v2["data"]["version"], 2, "{v2}");

    // Read by version, and the latest.
    let r = admin
        .expect(200, "GET", &format!("{db}?version=1"), None)
        .await;
    assert_eq!(r["data"]["data"]["password"], "CANARY-ext-v1", "{r}");
    assert_eq!(r["data"]["metadata"]["version"], 1, "{r}");
    let r = admin.expect(200, "GET", db, None).await;
    assert_eq!(r["data"]["data"]["password"], "CANARY-ext-v2", "{r}");
    let r = admin
        .expect(200, "GET", "/v1/secret/billing/prod/db", None)
        .await;
    assert_eq!(
        r["data"]["value"],
        json!({"password": "CANARY-ext-v2"}),
        "{r}"
    );
    assert_eq!(r["data"]["version"], 2, "{r}");

    // The data sits under the tenant's prefix on OpenBao, nowhere else.
    let direct = bao
        .call(
            "GET",
            &format!("/v1/{mount}/data/acme/billing/prod/db"),
            None,
        )
        .await;
    assert_eq!(direct.status, 200, "{}", direct.text);
    assert_eq!(direct.body["data"]["data"]["password"], "CANARY-ext-v2");
    let unprefixed = bao
        .call("GET", &format!("/v1/{mount}/data/billing/prod/db"), None)
        .await;
    assert_eq!(unprefixed.status, 404);

    // Lists and metadata.
    let r = admin
        .expect(
            200,
            "GET",
            "/v1/secret/metadata/billing/prod?list=true",
            None,
        )
        .await;
    assert_eq!(r["data"]["keys"], json!(["db"]), "{r}");
    let r = admin
        .expect(200, "GET", "/v1/secret/metadata/?list=true", None)
        .await;
    assert_eq!(r["data"]["keys"], json!(["billing/"]), "{r}");
    let m = admin
        .expect(200, "GET", "/v1/secret/metadata/billing/prod/db", None)
        .await;
    assert_eq!(m["data"]["current_version"], 2, "{m}");
    assert_eq!(m["data"]["versions"]["1"]["destroyed"], false, "{m}");
    assert!(m["data"]["created_time"].as_str().unwrap().ends_with('Z'));
    admin
        .expect(
            204,
            "POST",
            "/v1/secret/metadata/billing/prod/db",
            Some(json!({"max_versions": 5, "custom_metadata": {"owner": "ops"}})),
        )
        .await;
    // Rampart's PATCH replaces custom_metadata, in front of OpenBao too.
    admin
        .expect(
            204,
            "PATCH",
            "/v1/secret/metadata/billing/prod/db",
            Some(json!({"custom_metadata": {"team": "billing"}})),
        )
        .await;
    let on_bao = bao
        .call(
            "GET",
            &format!("/v1/{mount}/metadata/acme/billing/prod/db"),
            None,
        )
        .await;
    assert_eq!(on_bao.body["data"]["max_versions"], 5, "{}", on_bao.text);
    assert_eq!(
        on_bao.body["data"]["custom_metadata"],
        json!({"team": "billing"}),
        "{}",
        on_bao.text
    );
    // A merge patch of the data makes version 3.
    let v3 = admin
        .expect(
            200,
            "PATCH",
            db,
            Some(json!({"data": {"rotated": "yes"}, "options": {"cas": 2}})),
        )
        .await;
    assert_eq!(v3["data"]["version"], 3, "{v3}");
    assert_eq!(v3["data"]["custom_metadata"], json!({"team": "billing"}));
    let r = admin.expect(200, "GET", db, None).await;
    assert_eq!(
        r["data"]["data"],
        json!({"password": "CANARY-ext-v2", "rotated": "yes"}),
        "{r}"
    );

    // Delete the latest, undelete it; delete and destroy version 1.
    admin.expect(204, "DELETE", db, None).await;
    let gone = admin.call("GET", db, None).await;
    assert_eq!(gone.status, 404, "{}", gone.text);
    assert!(gone.body["data"]["data"].is_null(), "{}", gone.text);
    assert_ne!(gone.body["data"]["metadata"]["deletion_time"], "");
    admin
        .expect(
            204,
            "POST",
            "/v1/secret/undelete/billing/prod/db",
            Some(json!({"versions": [3]})),
        )
        .await;
    admin.expect(200, "GET", db, None).await;
    admin
        .expect(
            204,
            "POST",
            "/v1/secret/delete/billing/prod/db",
            Some(json!({"versions": [1]})),
        )
        .await;
    let r = admin.call("GET", &format!("{db}?version=1"), None).await;
    assert_eq!(r.status, 404, "{}", r.text);
    admin
        .expect(
            204,
            "POST",
            "/v1/secret/destroy/billing/prod/db",
            Some(json!({"versions": [1]})),
        )
        .await;
    let m = admin
        .expect(200, "GET", "/v1/secret/metadata/billing/prod/db", None)
        .await;
    assert_eq!(m["data"]["versions"]["1"]["destroyed"], true, "{m}");
    let on_bao = bao
        .call(
            "GET",
            &format!("/v1/{mount}/data/acme/billing/prod/db?version=1"),
            None,
        )
        .await;
    assert_eq!(on_bao.status, 404);
    assert_eq!(on_bao.body["data"]["metadata"]["destroyed"], true);

    // An AppRole (kept by Rampart) that may only read billing/prod: it
    // reads, cannot write, and cannot read another environment.
    admin
        .expect(
            200,
            "POST",
            "/v1/secret/data/billing/staging/db",
            Some(json!({"data": {"password": "staging-pw"}})),
        )
        .await;
    admin
        .expect(
            204,
            "POST",
            "/v1/auth/approle/role/billing-prod",
            Some(json!({"token_policies": ["user"], "token_ttl": "10m"})),
        )
        .await;
    let role_id = admin
        .expect(
            200,
            "GET",
            "/v1/auth/approle/role/billing-prod/role-id",
            None,
        )
        .await["data"]["role_id"]
        .as_str()
        .unwrap()
        .to_string();
    let secret_id = admin
        .expect(
            200,
            "POST",
            "/v1/auth/approle/role/billing-prod/secret-id",
            None,
        )
        .await["data"]["secret_id"]
        .as_str()
        .unwrap()
        .to_string();
    let unit_token = token_for(&s, json!({"role_id": role_id, "secret_id": secret_id})).await;
    let unit = Api {
        s: &s,
        cfg: ClientConfig::default()
            .with_ca(&s.ca)
            .with_token(&unit_token),
    };
    let r = unit.expect(200, "GET", db, None).await;
    assert_eq!(r["data"]["data"]["rotated"], "yes", "{r}");
    let r = unit
        .expect(200, "GET", "/v1/secret/billing/prod/db", None)
        .await;
    assert_eq!(r["data"]["version"], 3, "{r}");
    unit.expect(
        403,
        "POST",
        db,
        Some(json!({"data": {"password": "from-the-unit"}})),
    )
    .await;
    unit.expect(403, "GET", "/v1/secret/data/billing/staging/db", None)
        .await;
    unit.expect(403, "GET", "/v1/secret/billing/staging/db", None)
        .await;
    let r = unit
        .expect(200, "GET", "/v1/secret/metadata/billing?list=true", None)
        .await;
    assert_eq!(r["data"]["keys"], json!(["prod/"]), "only what it may read");

    // Another tenant on the same mount: its own folder, acme's unseen.
    let globex = Api {
        s: &s,
        cfg: ClientConfig::default()
            .with_ca(&s.ca)
            .with_api_key(KEY_GLOBEX),
    };
    globex.expect(404, "GET", db, None).await;
    globex
        .expect(
            200,
            "POST",
            db,
            Some(json!({"data": {"password": "globex-pw"}})),
        )
        .await;
    let r = admin.expect(200, "GET", db, None).await;
    assert_eq!(r["data"]["data"]["password"], "CANARY-ext-v2", "{r}");
    let root = bao
        .call("GET", &format!("/v1/{mount}/metadata/?list=true"), None)
        .await;
    assert_eq!(
        root.body["data"]["keys"],
        json!(["acme/", "globex/"]),
        "{}",
        root.text
    );

    // Metadata delete removes every version, on OpenBao too.
    admin
        .expect(204, "DELETE", "/v1/secret/metadata/billing/prod/db", None)
        .await;
    admin.expect(404, "GET", db, None).await;
    let on_bao = bao
        .call(
            "GET",
            &format!("/v1/{mount}/metadata/acme/billing/prod/db"),
            None,
        )
        .await;
    assert_eq!(on_bao.status, 404);

    // Nothing of the values reached Rampart's own files (store, audit).
    let dir = s.stop().await;
    for (path, bytes) in snapshot(dir.path()) {
        assert!(
            !bytes.windows(10).any(|w| w == b"CANARY-ext"),
            "{} holds a secret value",
            path.display()
        );
    }
    let r = bao
        .call("DELETE", &format!("/v1/sys/mounts/{mount}"), None)
        .await;
    assert!(r.status < 300, "{}", r.text);
}

/// With `vault_backend = "external"` and no token anywhere, the server does
/// not start, and says which key to set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_vault_without_a_token_does_not_start() {
    if std::env::var_os(rampart_server::VAULT_EXTERNAL_TOKEN_ENV).is_some() {
        eprintln!(
            "external_vault_without_a_token_does_not_start skipped: the token variable is set"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut config = base_config(dir.path());
    config.vault_backend = rampart_server::VaultBackend::External;
    config.vault_external_address = Some("https://127.0.0.1:8200".into());
    let e = rampart_server::Server::start(rampart_server::ServerOptions::new(config).dev(true))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("vault_external_token_path"), "{e}");
    assert!(e.contains(rampart_server::VAULT_EXTERNAL_TOKEN_ENV), "{e}");
}
