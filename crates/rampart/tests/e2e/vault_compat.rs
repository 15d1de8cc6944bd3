//! The Vault-compatible HTTP API against real Vault clients: the Python
//! `hvac` client and the `bao` CLI, both installed by
//! `scripts/openbao-dev.sh` (which `.ci/run` runs). Skipped, saying so, when
//! they are not there.

use std::process::Command;

use crate::common::*;

struct Peers {
    python: String,
    bao: String,
}

fn peers() -> Option<Peers> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    Some(Peers {
        python: var("RAMPART_TEST_PEER_PYTHON")?,
        bao: var("RAMPART_TEST_BAO_BIN")?,
    })
}

fn https(s: &TestServer) -> String {
    format!("https://{}", s.server.http_addr().expect("https"))
}

/// Runs a Python script with hvac; it must print `ok` last.
async fn hvac(p: &Peers, s: &TestServer, script: &str) {
    let out = {
        let (python, url, ca) = (p.python.clone(), https(s), s.ca.clone());
        let script = format!(
            "import hvac, json, sys\nc = hvac.Client(url={url:?}, verify={ca:?})\n{script}\nprint('ok')\n",
            ca = ca.display().to_string()
        );
        tokio::task::spawn_blocking(move || Command::new(python).arg("-c").arg(script).output())
            .await
            .unwrap()
            .unwrap()
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("ok"),
        "hvac script failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sys_endpoints_answer_hvac_and_bao() {
    let Some(p) = peers() else {
        eprintln!(
            "sys_endpoints_answer_hvac_and_bao skipped: no hvac/bao (run scripts/openbao-dev.sh)"
        );
        return;
    };
    let s = start().await;
    hvac(
        &p,
        &s,
        r#"
assert c.sys.is_initialized() is True
assert c.sys.is_sealed() is False
h = c.sys.read_health_status(method='GET')
assert h['initialized'] is True and h['sealed'] is False and h['standby'] is False, h
r = c.sys.read_health_status(method='HEAD')
assert r.status_code == 200, r.status_code
assert r.headers['Content-Type'] == 'application/json', r.headers
st = c.sys.read_seal_status()
assert st['sealed'] is False and st['initialized'] is True, st
assert c.sys.read_leader_status()['is_self'] is True
"#,
    )
    .await;
    // Vault's status-code parameters.
    let admin = reqwest_like_get(&s, "/v1/sys/health?activecode=299").await;
    assert_eq!(admin, 299);
    let bad = reqwest_like_get(&s, "/v1/sys/health?activecode=9999").await;
    assert_eq!(bad, 400);

    let out = {
        let (bao, url, ca) = (p.bao.clone(), https(&s), s.ca.clone());
        tokio::task::spawn_blocking(move || {
            Command::new(bao)
                .arg("status")
                .env("BAO_ADDR", url)
                .env("BAO_CACERT", ca)
                .env_remove("BAO_TOKEN")
                .output()
        })
        .await
        .unwrap()
        .unwrap()
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bao status: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("Sealed") && text.contains("false"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_self_service_with_hvac() {
    let Some(p) = peers() else {
        eprintln!("token_self_service_with_hvac skipped: no hvac (run scripts/openbao-dev.sh)");
        return;
    };
    let s = start_with(|c| {
        c.token_ttl_secs = 60;
        c.token_max_ttl_secs = 600;
    })
    .await;
    hvac(
        &p,
        &s,
        &format!(
            r#"
# A bad token: is_authenticated answers False (Vault answers 403).
c.token = 'rt1.not-a-token'
assert c.is_authenticated() is False
c.token = None
r = c.adapter.post('/v1/auth', json={{'api_key': {key:?}}})
auth = r['auth']
assert auth['lease_duration'] <= 60 and auth['policies'], auth
c.token = auth['client_token']
assert c.is_authenticated() is True
me = c.auth.token.lookup_self()['data']
assert me['id'] == c.token and me['renewable'] is True and me['ttl'] <= 60, me
assert me['meta']['tenant'] == 'acme', me
ren = c.auth.token.renew_self(increment='5m')['auth']
assert 240 < ren['lease_duration'] <= 300, ren
assert c.auth.token.lookup_self()['data']['ttl'] > 240
# Never past the maximum from issue.
ren = c.auth.token.renew_self(increment='2h')['auth']
assert ren['lease_duration'] <= 600 and ren['renewable'] is False, ren
c.auth.token.revoke_self()
assert c.is_authenticated() is False
# The mount preflight the CLIs make.
c.token = c.adapter.post('/v1/auth', json={{'api_key': {key:?}}})['auth']['client_token']
m = c.adapter.get('/v1/sys/internal/ui/mounts/secret/app/env/db')['data']
assert m['type'] == 'kv' and m['options']['version'] == '2', m
m = c.adapter.get('/v1/sys/mounts-all/secret/app/env/db')['data']
assert m['options']['version'] == '2', m
"#,
            key = KEY_ACME
        ),
    )
    .await;
}

/// The status code of an unauthenticated GET over the HTTPS API.
async fn reqwest_like_get(s: &TestServer, path: &str) -> u16 {
    s.admin("unused")
        .call("GET", path, None)
        .await
        .unwrap()
        .status
}

/// Secrets are granted by ACL rules only: the admin key's role gets the
/// whole tenant, the AppRole `billing-prod` (principal
/// `approle:billing-prod`) one app and environment.
async fn grant_secrets(s: &TestServer) {
    let acl = r#"
apiVersion: rampart.io/v1
kind: ACL
metadata:
  tenant: acme
spec:
  rules:
    - principal: "role:admin"
      resource: "secret:*"
      permissions: [secret_read, secret_write]
    - principal: "approle:billing-prod"
      resource: "secret:billing/prod/*"
      permissions: [secret_read]
"#;
    let r = s
        .admin(KEY_ACME)
        .call("PUT", "/v1/tenants/acme/acl", Some(&serde_json::json!(acl)))
        .await
        .unwrap();
    assert!(r.status < 300, "{}", r.error());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv2_and_approle_with_hvac() {
    let Some(p) = peers() else {
        eprintln!("kv2_and_approle_with_hvac skipped: no hvac (run scripts/openbao-dev.sh)");
        return;
    };
    let s = start().await;
    grant_secrets(&s).await;
    hvac(
        &p,
        &s,
        &format!(
            r#"
import hvac.exceptions as E
c.token = c.adapter.post('/v1/auth', json={{'api_key': {key:?}}})['auth']['client_token']
kv = c.secrets.kv.v2
P = 'billing/prod/db'
r = kv.create_or_update_secret(path=P, secret={{'password': 'SECRET-CANARY-9d2e'}})
assert r['data']['version'] == 1, r
r = kv.create_or_update_secret(path=P, secret={{'password': 'p2'}}, cas=1)
assert r['data']['version'] == 2, r
try:
    kv.create_or_update_secret(path=P, secret={{'password': 'x'}}, cas=1)
    raise SystemExit('cas mismatch accepted')
except E.InvalidRequest:
    pass
got = kv.read_secret_version(path=P, raise_on_deleted_version=True)['data']
assert got['data'] == {{'password': 'p2'}} and got['metadata']['version'] == 2, got
assert kv.read_secret_version(path=P, version=1, raise_on_deleted_version=True)['data']['data']['password'] == 'SECRET-CANARY-9d2e'
kv.patch(path=P, secret={{'user': 'app'}})
got = kv.read_secret_version(path=P, raise_on_deleted_version=True)['data']
assert got['data'] == {{'password': 'p2', 'user': 'app'}} and got['metadata']['version'] == 3, got
kv.create_or_update_secret(path='billing/staging/db', secret={{'password': 'stage'}})
kv.create_or_update_secret(path='web/prod/db', secret={{'password': 'web'}})
assert kv.list_secrets(path='billing/prod')['data']['keys'] == ['db']
assert kv.list_secrets(path='billing')['data']['keys'] == ['prod/', 'staging/']
assert kv.list_secrets(path='')['data']['keys'] == ['billing/', 'web/']
kv.update_metadata(path=P, max_versions=5, custom_metadata={{'owner': 'billing-team'}})
m = kv.read_secret_metadata(path=P)['data']
assert m['current_version'] == 3 and m['max_versions'] == 5, m
assert m['custom_metadata'] == {{'owner': 'billing-team'}}, m
kv.delete_latest_version_of_secret(path=P)
try:
    kv.read_secret_version(path=P, raise_on_deleted_version=True)
    raise SystemExit('deleted version read')
except E.InvalidPath:
    pass
kv.undelete_secret_versions(path=P, versions=[3])
assert kv.read_secret_version(path=P, raise_on_deleted_version=True)['data']['data']['user'] == 'app'
kv.destroy_secret_versions(path=P, versions=[1])
assert kv.read_secret_metadata(path=P)['data']['versions']['1']['destroyed'] is True
kv.delete_metadata_and_all_versions(path='web/prod/db')
try:
    kv.read_secret_version(path='web/prod/db', raise_on_deleted_version=True)
    raise SystemExit('destroyed secret read')
except E.InvalidPath:
    pass

# AppRole: a role for billing/prod.
c.auth.approle.create_or_update_approle('billing-prod', token_policies=['user'], token_ttl='10m')
role_id = c.auth.approle.read_role_id('billing-prod')['data']['role_id']
sid = c.auth.approle.generate_secret_id('billing-prod')['data']['secret_id']
w = hvac.Client(url=c.url, verify={ca:?})
try:
    w.auth.approle.login(role_id=role_id, secret_id='wrong')
    raise SystemExit('bad secret id accepted')
except E.InvalidRequest:
    pass
w.auth.approle.login(role_id=role_id, secret_id=sid)
assert w.is_authenticated()
me = w.auth.token.lookup_self()['data']
assert me['policies'] == ['user'] and me['meta']['tenant'] == 'acme', me
assert w.secrets.kv.v2.read_secret_version(path=P, raise_on_deleted_version=True)['data']['data']['user'] == 'app'
for other in ['billing/staging/db', 'web/prod/db']:
    try:
        w.secrets.kv.v2.read_secret_version(path=other, raise_on_deleted_version=True)
        raise SystemExit('read across app/env: ' + other)
    except E.Forbidden:
        pass
try:
    w.secrets.kv.v2.create_or_update_secret(path=P, secret={{'x': 'y'}})
    raise SystemExit('read-only role wrote')
except E.Forbidden:
    pass
# The KeyVault form of the same secret.
kvf = w.adapter.get('/v1/secret/' + P)
assert kvf['data']['version'] == 3 and kvf['data']['value'] == {{'password': 'p2', 'user': 'app'}}, kvf
w.auth.token.revoke_self()
assert w.is_authenticated() is False
"#,
            key = KEY_ACME,
            ca = s.ca.display().to_string()
        ),
    )
    .await;
    // The canary never reached a file in clear (the store is sealed, the
    // audit log records paths and versions only).
    let canary = b"SECRET-CANARY-9d2e";
    for (p, bytes) in snapshot(&s.data_dir()) {
        assert!(
            !bytes.windows(canary.len()).any(|w| w == canary),
            "secret in clear in {}",
            p.display()
        );
    }
}

/// Runs `bao ARGS` against the server; returns (success, stdout, stderr).
async fn bao(
    p: &Peers,
    s: &TestServer,
    home: &std::path::Path,
    token: Option<&str>,
    args: &[&str],
) -> (bool, String, String) {
    let mut c = Command::new(&p.bao);
    c.args(args)
        .env("BAO_ADDR", https(s))
        .env("BAO_CACERT", &s.ca)
        .env("HOME", home)
        .env_remove("BAO_TOKEN")
        .env_remove("VAULT_TOKEN");
    if let Some(t) = token {
        c.env("BAO_TOKEN", t);
    }
    let out = tokio::task::spawn_blocking(move || c.output())
        .await
        .unwrap()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_and_login_with_the_bao_cli() {
    let Some(p) = peers() else {
        eprintln!("kv_and_login_with_the_bao_cli skipped: no bao (run scripts/openbao-dev.sh)");
        return;
    };
    let s = start().await;
    grant_secrets(&s).await;
    let home = tempfile::tempdir().unwrap();
    let admin = s.admin(KEY_ACME);
    let r = admin
        .call(
            "POST",
            "/v1/auth",
            Some(&serde_json::json!({ "api_key": KEY_ACME })),
        )
        .await
        .unwrap();
    let token = r.body["auth"]["client_token"].as_str().unwrap().to_string();
    let t = Some(token.as_str());
    let ok = |r: (bool, String, String)| {
        assert!(r.0, "bao failed:\n{}\n{}", r.1, r.2);
        r.1
    };
    ok(bao(
        &p,
        &s,
        home.path(),
        t,
        &["kv", "put", "secret/billing/prod/api", "key=v1"],
    )
    .await);
    ok(bao(
        &p,
        &s,
        home.path(),
        t,
        &["kv", "put", "secret/billing/prod/api", "key=v2"],
    )
    .await);
    let got = ok(bao(
        &p,
        &s,
        home.path(),
        t,
        &["kv", "get", "-field=key", "secret/billing/prod/api"],
    )
    .await);
    assert_eq!(got.trim(), "v2");
    let got = ok(bao(
        &p,
        &s,
        home.path(),
        t,
        &[
            "kv",
            "get",
            "-version=1",
            "-field=key",
            "secret/billing/prod/api",
        ],
    )
    .await);
    assert_eq!(got.trim(), "v1");
    let list = ok(bao(
        &p,
        &s,
        home.path(),
        t,
        &["kv", "list", "secret/billing/prod"],
    )
    .await);
    assert!(list.contains("api"), "{list}");
    let meta = ok(bao(
        &p,
        &s,
        home.path(),
        t,
        &["kv", "metadata", "get", "secret/billing/prod/api"],
    )
    .await);
    assert!(
        meta.contains("current_version") && meta.contains('2'),
        "{meta}"
    );
    let status = ok(bao(&p, &s, home.path(), None, &["status"]).await);
    assert!(status.contains("Sealed"), "{status}");

    // AppRole login from the CLI, then a read with the token it stored.
    let role = admin
        .call(
            "POST",
            "/v1/auth/approle/role/billing-prod",
            Some(&serde_json::json!({ "token_policies": ["user"] })),
        )
        .await
        .unwrap();
    assert_eq!(role.status, 204, "{}", role.error());
    let role_id = reqwest_token_call(
        &s,
        &token,
        "GET",
        "/v1/auth/approle/role/billing-prod/role-id",
    )
    .await["data"]["role_id"]
        .as_str()
        .unwrap()
        .to_string();
    let secret_id = reqwest_token_call(
        &s,
        &token,
        "POST",
        "/v1/auth/approle/role/billing-prod/secret-id",
    )
    .await["data"]["secret_id"]
        .as_str()
        .unwrap()
        .to_string();
    // The bao CLI has no `login -method=approle` handler (nor has Vault's):
    // AppRole logins go through `write auth/approle/login`, then `login`
    // with the token, which the CLI stores in ~/.vault-token.
    let role_arg = format!("role_id={role_id}");
    let secret_arg = format!("secret_id={secret_id}");
    let issued = ok(bao(
        &p,
        &s,
        home.path(),
        None,
        &[
            "write",
            "-field=token",
            "auth/approle/login",
            &role_arg,
            &secret_arg,
        ],
    )
    .await);
    let issued = issued.trim().to_string();
    assert!(issued.starts_with("rt1."), "{issued}");
    ok(bao(&p, &s, home.path(), None, &["login", "-no-print", &issued]).await);
    let got = ok(bao(
        &p,
        &s,
        home.path(),
        None,
        &["kv", "get", "-field=key", "secret/billing/prod/api"],
    )
    .await);
    assert_eq!(got.trim(), "v2");
    let who = ok(bao(&p, &s, home.path(), None, &["token", "lookup"]).await);
    assert!(
        who.contains("approle:billing-prod") || who.contains("user"),
        "{who}"
    );
    let denied = bao(
        &p,
        &s,
        home.path(),
        None,
        &["kv", "put", "secret/billing/prod/api", "key=x"],
    )
    .await;
    assert!(!denied.0, "a read-only role wrote");
}

/// A Vault-style call with a token (the admin client speaks bearer keys).
async fn reqwest_token_call(
    s: &TestServer,
    token: &str,
    method: &str,
    path: &str,
) -> serde_json::Value {
    let url = https(s);
    let cfg = rampart_client::ClientConfig::default()
        .with_ca(&s.ca)
        .with_token(token);
    let admin = rampart_client::AdminClient::new(&url, &cfg).unwrap();
    let r = admin.call(method, path, None).await.unwrap();
    assert!(r.status < 300, "{method} {path}: {}", r.error());
    r.body
}

async fn call_with(
    s: &TestServer,
    cfg: rampart_client::ClientConfig,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> rampart_client::AdminResponse {
    rampart_client::AdminClient::new(&https(s), &cfg)
        .unwrap()
        .call(method, path, body.as_ref())
        .await
        .unwrap()
}

/// Seed 004's KeyVault API with its exact shapes, and what no token may do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyvault_api_round_trip_and_refusals() {
    let s = start().await;
    grant_secrets(&s).await;
    let admin_cfg = s.config(KEY_ACME);
    let admin_token = call_with(
        &s,
        admin_cfg.clone(),
        "POST",
        "/v1/auth",
        Some(serde_json::json!({ "api_key": KEY_ACME })),
    )
    .await
    .body["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_string();
    let admin = || {
        rampart_client::ClientConfig::default()
            .with_ca(&s.ca)
            .with_token(&admin_token)
    };
    for (path, value) in [
        ("billing/prod/db", "prod-pw"),
        ("billing/staging/db", "staging-pw"),
        ("web/prod/db", "web-pw"),
    ] {
        let r = call_with(
            &s,
            admin(),
            "POST",
            &format!("/v1/secret/data/{path}"),
            Some(serde_json::json!({ "data": { "value": value } })),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.error());
    }
    call_with(
        &s,
        admin(),
        "POST",
        "/v1/auth/approle/role/billing-prod",
        Some(serde_json::json!({ "token_policies": ["user"], "token_ttl": "10m" })),
    )
    .await;
    let role_id = call_with(
        &s,
        admin(),
        "GET",
        "/v1/auth/approle/role/billing-prod/role-id",
        None,
    )
    .await
    .body["data"]["role_id"]
        .as_str()
        .unwrap()
        .to_string();
    let secret_id = call_with(
        &s,
        admin(),
        "POST",
        "/v1/auth/approle/role/billing-prod/secret-id",
        None,
    )
    .await
    .body["data"]["secret_id"]
        .as_str()
        .unwrap()
        .to_string();

    // POST /v1/auth with unit credentials.
    let plain = rampart_client::ClientConfig::default().with_ca(&s.ca);
    let r = call_with(
        &s,
        plain.clone(),
        "POST",
        "/v1/auth",
        Some(serde_json::json!({ "role_id": role_id, "secret_id": secret_id })),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.error());
    let auth = &r.body["auth"];
    let token = auth["client_token"].as_str().unwrap().to_string();
    let lease = auth["lease_duration"].as_u64().unwrap();
    assert!((590..=600).contains(&lease), "{auth}");
    assert_eq!(auth["policies"], serde_json::json!(["user"]));
    let unit = || {
        rampart_client::ClientConfig::default()
            .with_ca(&s.ca)
            .with_token(&token)
    };
    // GET /v1/secret/APP/ENV/PATH with Authorization: Bearer.
    let r = call_with(&s, unit(), "GET", "/v1/secret/billing/prod/db", None).await;
    assert_eq!(r.status, 200, "{}", r.error());
    assert_eq!(r.body["data"]["value"], "prod-pw");
    assert_eq!(r.body["data"]["version"], 1);
    assert!(r.body["data"]["metadata"].is_object(), "{}", r.body);
    // Another environment, another app: refused.
    for other in ["billing/staging/db", "web/prod/db"] {
        let r = call_with(&s, unit(), "GET", &format!("/v1/secret/{other}"), None).await;
        assert_eq!(r.status, 403, "{other}");
    }
    // Another tenant: its own namespace of secrets, where acme's are not.
    let globex = call_with(
        &s,
        s.config(KEY_GLOBEX),
        "GET",
        "/v1/secret/billing/prod/db",
        None,
    )
    .await;
    assert!(matches!(globex.status, 403 | 404), "{}", globex.status);
    assert!(!globex.body.to_string().contains("prod-pw"));
    // A wrong secret id, then an expired and a revoked token: refused.
    let r = call_with(
        &s,
        plain.clone(),
        "POST",
        "/v1/auth",
        Some(serde_json::json!({ "role_id": role_id, "secret_id": "nope" })),
    )
    .await;
    assert_eq!(r.status, 401);
    let short = call_with(
        &s,
        admin_cfg.clone(),
        "POST",
        "/v1/auth",
        Some(serde_json::json!({ "api_key": KEY_ACME, "ttl": 1 })),
    )
    .await
    .body["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_string();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let expired = rampart_client::ClientConfig::default()
        .with_ca(&s.ca)
        .with_token(&short);
    let r = call_with(&s, expired, "GET", "/v1/secret/data/billing/prod/db", None).await;
    assert_eq!(r.status, 403, "expired token");
    let r = call_with(&s, unit(), "POST", "/v1/auth/token/revoke-self", None).await;
    assert_eq!(r.status, 204);
    let r = call_with(&s, unit(), "GET", "/v1/secret/billing/prod/db", None).await;
    assert_eq!(r.status, 403, "revoked token");
}
