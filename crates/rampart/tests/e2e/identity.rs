//! Identity and access control end to end: managed keys and roles, tokens,
//! revocation reaching open connections, in-band re-authentication, tenant
//! disable, JWT and client certificates, and the cross-tenant matrix over
//! the wire and the HTTPS API.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rampart_client::{
    AdminClient, Client, ClientConfig, ClientError, Credential, CredentialFuture,
    CredentialProvider, Transport,
};
use serde_json::{json, Value};

use crate::common::*;

async fn ok(admin: &AdminClient, method: &str, path: &str, body: Option<Value>) -> Value {
    let r = admin.call(method, path, body.as_ref()).await.unwrap();
    assert!(r.status < 300, "{method} {path}: {} {}", r.status, r.text);
    r.body
}

async fn status(admin: &AdminClient, method: &str, path: &str, body: Option<Value>) -> u16 {
    admin
        .call(method, path, body.as_ref())
        .await
        .unwrap()
        .status
}

/// Creates a managed key for `tenant` with `roles`; returns (id, key).
async fn new_key(
    admin: &AdminClient,
    tenant: &str,
    name: &str,
    roles: &[&str],
) -> (String, String) {
    let b = ok(
        admin,
        "POST",
        &format!("/v1/tenants/{tenant}/keys"),
        Some(json!({ "name": name, "roles": roles })),
    )
    .await;
    (
        b["id"].as_str().unwrap().to_string(),
        b["key"].as_str().unwrap().to_string(),
    )
}

fn code<T>(r: Result<T, ClientError>) -> Option<u16> {
    r.err().and_then(|e| e.code()).map(|c| c.0)
}

async fn roles_limit_what_a_key_can_do(t: Transport) {
    let s = start().await;
    let admin = s.admin(KEY_ACME);
    let (_, viewer) = new_key(&admin, "acme", "dashboard", &["viewer"]).await;
    let (_, user) = new_key(&admin, "acme", "ci-publisher", &["user"]).await;
    let listed = ok(&admin, "GET", "/v1/tenants/acme/keys", None).await;
    assert_eq!(listed["keys"].as_array().unwrap().len(), 2);
    assert!(
        !listed.to_string().contains(&user),
        "listing never shows a secret"
    );

    let v = s.client(t, &viewer).await;
    assert_eq!(v.principal(), "dashboard");
    let mut sub = v.subscribe("acme", "prod", "orders").await.unwrap();
    assert_eq!(
        code(v.publish("acme", "prod", "orders", "x").await),
        Some(403)
    );
    assert_eq!(
        code(v.cache_put("acme", "prod", "c", "k", "v", None).await),
        Some(403)
    );
    assert!(v
        .cache_get("acme", "prod", "c", "k")
        .await
        .unwrap()
        .is_none());

    let u = s.client(t, &user).await;
    u.publish("acme", "prod", "orders", "from-user")
        .await
        .unwrap();
    u.cache_put("acme", "prod", "c", "k", "v", None)
        .await
        .unwrap();
    let e = next_event(&mut sub, 10).await;
    assert_eq!(&e.payload[..], b"from-user");
    // A user cannot administer.
    let user_admin = s.admin(&user);
    assert_eq!(
        status(&user_admin, "GET", "/v1/tenants/acme/keys", None).await,
        403
    );
    assert_eq!(
        status(
            &user_admin,
            "POST",
            "/v1/tenants/acme/keys",
            Some(json!({"name": "x", "roles": ["admin"]}))
        )
        .await,
        403
    );
    assert_eq!(
        status(
            &user_admin,
            "PUT",
            "/v1/tenants/acme/acl",
            Some(json!("kind: ACL"))
        )
        .await,
        403
    );
}

async fn admin_of_streams_cannot_read_secrets(_t: Transport) {
    let s = start().await;
    let admin = s.admin(KEY_ACME);
    let acl = r#"
apiVersion: rampart.io/v1
kind: ACL
metadata:
  tenant: acme
  namespace: production
spec:
  rules:
    - principal: stream-admin
      resource: "stream:*"
      permissions: [admin, publish]
    - principal: "*"
      resource: "stream:audit"
      permissions: [publish]
      effect: deny
"#;
    ok(&admin, "PUT", "/v1/tenants/acme/acl", Some(json!(acl))).await;
    let explain = |principal: &str, resource: &str, permission: &str| {
        json!({
            "principal": principal, "roles": [], "namespace": "production",
            "resource": resource, "permission": permission,
        })
    };
    let d = ok(
        &admin,
        "POST",
        "/v1/tenants/acme/acl/explain",
        Some(explain("stream-admin", "stream:orders", "stream_admin")),
    )
    .await;
    assert_eq!(d["allowed"], true, "{d}");
    assert!(d["decision"].as_str().unwrap().contains("stream:*"), "{d}");
    let d = ok(
        &admin,
        "POST",
        "/v1/tenants/acme/acl/explain",
        Some(explain("stream-admin", "secret:payments/db", "secret_read")),
    )
    .await;
    assert_eq!(d["allowed"], false, "{d}");
    // Deny wins over the allow, and the deny rule is the one reported.
    let d = ok(
        &admin,
        "POST",
        "/v1/tenants/acme/acl/explain",
        Some(explain("stream-admin", "stream:audit", "publish")),
    )
    .await;
    assert_eq!(d["allowed"], false, "{d}");
    assert!(d["decision"].as_str().unwrap().contains("deny"), "{d}");
    // The document reads back.
    let r = admin
        .call("GET", "/v1/tenants/acme/acl", None)
        .await
        .unwrap();
    assert!(r.text.contains("stream-admin"), "{}", r.text);
}

/// A key with a deny rule on the wire: ACL decisions apply to frames, and a
/// policy change ends a subscription that is no longer allowed.
async fn acl_rules_apply_on_the_wire(t: Transport) {
    let s = start().await;
    let admin = s.admin(KEY_ACME);
    let (_, user) = new_key(&admin, "acme", "reader", &["user"]).await;
    let c = s.client(t, &user).await;
    let mut sub = c.subscribe("acme", "prod", "secret-stream").await.unwrap();
    // Allowed before the change, so the connection has an answer to keep.
    c.publish("acme", "prod", "secret-stream", "before")
        .await
        .unwrap();
    let e = next_event(&mut sub, 5).await;
    assert_eq!(e.payload, &b"before"[..]);
    let acl = r#"
apiVersion: rampart.io/v1
kind: ACL
metadata: {tenant: acme, namespace: prod}
spec:
  rules:
    - {principal: reader, resource: "stream:secret-stream", permissions: [subscribe, publish], effect: deny}
"#;
    ok(&admin, "PUT", "/v1/tenants/acme/acl", Some(json!(acl))).await;
    assert_eq!(
        code(c.publish("acme", "prod", "secret-stream", "x").await),
        Some(403)
    );
    assert_eq!(
        code(
            c.subscribe("acme", "prod", "secret-stream")
                .await
                .map(|_| ())
        ),
        Some(403)
    );
    c.publish("acme", "prod", "other", "fine").await.unwrap();
    // The open subscription was ended by the policy change.
    let p = s.client(t, KEY_ACME).await;
    p.publish("acme", "prod", "secret-stream", "hidden")
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .expect("the server ends the subscription")
            .is_none(),
        "nothing delivered after the deny; the subscription ended"
    );
}

async fn revoked_key_closes_open_subscription(t: Transport) {
    let s = start().await;
    let admin = s.admin(KEY_ACME);
    let (id, key) = new_key(&admin, "acme", "worker", &["user"]).await;
    let c = s.client(t, &key).await;
    let mut sub = c.subscribe("acme", "prod", "jobs").await.unwrap();
    ok(
        &admin,
        "POST",
        &format!("/v1/tenants/acme/keys/{id}/revoke"),
        None,
    )
    .await;
    let revoked_at = Instant::now();
    // The connection ends within the bound: the subscription closes.
    let end = tokio::time::timeout(Duration::from_secs(1), async {
        while sub.next().await.is_some() {}
    })
    .await;
    assert!(end.is_ok(), "connection closed within 1 s of revocation");
    assert!(revoked_at.elapsed() <= Duration::from_secs(1));
    // And the key no longer authenticates.
    let e = Client::connect(&s.url(t), s.config(&key))
        .await
        .unwrap_err();
    assert_eq!(e.code().map(|c| c.0), Some(401));
    // Other keys are untouched.
    s.client(t, KEY_ACME).await.ping().await.unwrap();
}

async fn expired_token_stops_delivery(t: Transport) {
    let s = start_with(|c| {
        c.reauth_grace_ms = 300;
        c.reauth_notice_ms = 100;
    })
    .await;
    let base = s.client(t, KEY_ACME).await;
    let (token, exp) = base
        .request_token(Some(Duration::from_millis(800)))
        .await
        .unwrap();
    let c = Client::connect(
        &s.url(t),
        ClientConfig::default()
            .with_ca(&s.ca)
            .with_token(token.expose()),
    )
    .await
    .unwrap();
    assert_eq!(c.expires_at_ms(), Some(exp));
    let mut sub = c.subscribe("acme", "prod", "ticks").await.unwrap();
    base.publish("acme", "prod", "ticks", "before")
        .await
        .unwrap();
    assert_eq!(&next_event(&mut sub, 5).await.payload[..], b"before");
    // Past expiry (and the grace), nothing more arrives and the connection ends.
    tokio::time::sleep(Duration::from_millis(900)).await;
    base.publish("acme", "prod", "ticks", "after")
        .await
        .unwrap();
    let rest = tokio::time::timeout(Duration::from_secs(5), async {
        let mut got = Vec::new();
        while let Some(e) = sub.next().await {
            got.push(e.payload);
        }
        got
    })
    .await
    .expect("connection closed after expiry and grace");
    assert!(rest.is_empty(), "no delivery after expiry: {rest:?}");
}

/// Hands out fresh short-lived tokens from a long-lived connection.
struct TokenSource {
    base: Arc<Client>,
    issued: AtomicU64,
}

impl CredentialProvider for TokenSource {
    fn credential(&self) -> CredentialFuture<'_> {
        Box::pin(async move {
            self.issued.fetch_add(1, Ordering::Relaxed);
            let (t, _) = self
                .base
                .request_token(Some(Duration::from_millis(1200)))
                .await?;
            Ok(Credential::token(t.expose().clone()))
        })
    }
}

async fn reauth_keeps_subscription_alive(t: Transport) {
    let s = start_with(|c| {
        c.reauth_grace_ms = 2_000;
        c.reauth_notice_ms = 500;
    })
    .await;
    let base = Arc::new(s.client(t, KEY_ACME).await);
    let source = Arc::new(TokenSource {
        base: base.clone(),
        issued: AtomicU64::new(0),
    });
    let c = Client::connect(
        &s.url(t),
        ClientConfig::default()
            .with_ca(&s.ca)
            .with_provider(source.clone()),
    )
    .await
    .unwrap();
    let mut sub = c.subscribe("acme", "prod", "numbers").await.unwrap();
    // Publish for about three token lifetimes.
    let publisher = base.clone();
    let pubs = tokio::spawn(async move {
        let mut n = 0u64;
        let until = Instant::now() + Duration::from_millis(3_600);
        while Instant::now() < until {
            publisher
                .publish("acme", "prod", "numbers", n.to_string())
                .await
                .unwrap();
            n += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        n
    });
    let sent = pubs.await.unwrap();
    for expected in 0..sent {
        let e = next_event(&mut sub, 10).await;
        assert_eq!(
            e.payload,
            expected.to_string().as_bytes(),
            "no loss, in order"
        );
    }
    assert!(
        source.issued.load(Ordering::Relaxed) >= 3,
        "re-authenticated in band at least twice"
    );
    assert!(c.take_async_error().is_none());
    c.ping().await.unwrap();
}

async fn tenant_disable_and_enable(t: Transport) {
    let s = start().await;
    // `dev` is the operator tenant of a --dev server.
    let dev_key = std::fs::read_to_string(s.server.dev_setup().unwrap().admin_key_path.clone())
        .unwrap()
        .trim()
        .to_string();
    let operator = s.admin(&dev_key);
    let acme = s.client(t, KEY_ACME).await;
    let mut sub = acme.subscribe("acme", "prod", "x").await.unwrap();
    let globex = s.client(t, KEY_GLOBEX).await;
    // A tenant admin is not an operator.
    assert_eq!(
        status(
            &s.admin(KEY_ACME),
            "POST",
            "/v1/tenants/globex/disable",
            None
        )
        .await,
        403
    );
    let r = ok(&operator, "POST", "/v1/tenants/acme/disable", None).await;
    assert_eq!(r["connections_closed"], 1);
    tokio::time::timeout(Duration::from_secs(1), async {
        while sub.next().await.is_some() {}
    })
    .await
    .expect("closed within 1 s");
    let e = Client::connect(&s.url(t), s.config(KEY_ACME))
        .await
        .unwrap_err();
    assert_eq!(e.code().map(|c| c.0), Some(401));
    assert_eq!(
        status(&s.admin(KEY_ACME), "GET", "/v1/auth/whoami", None).await,
        401
    );
    // Other tenants carry on.
    globex.ping().await.unwrap();
    ok(&operator, "POST", "/v1/tenants/acme/enable", None).await;
    // The operators' own tenant cannot be locked out.
    assert_eq!(
        status(&operator, "POST", "/v1/tenants/dev/disable", None).await,
        409
    );
    assert_eq!(
        status(&operator, "POST", "/v1/tenants/dev/erase", None).await,
        409
    );
    s.client(t, KEY_ACME).await.ping().await.unwrap();
    assert_eq!(
        status(&s.admin(KEY_ACME), "GET", "/v1/auth/whoami", None).await,
        200
    );
}

/// Disabling one namespace of a tenant (incident containment by the
/// tenant's own admin): its requests are refused on the wire and over
/// HTTPS, its open subscriptions end with the reason, the tenant's other
/// namespaces carry on, it survives a restart, and enabling restores it.
async fn namespace_disable_and_enable(t: Transport) {
    let s = start().await;
    let admin = s.admin(KEY_ACME);
    let c = s.client(t, KEY_ACME).await;
    let mut sub = c.subscribe("acme", "prod", "x").await.unwrap();
    let mut other = c.subscribe("acme", "staging", "x").await.unwrap();
    // Allowed before, so the connection has an answer to keep.
    c.publish("acme", "prod", "x", "before").await.unwrap();
    // Another tenant's admin cannot.
    assert_eq!(
        status(
            &s.admin(KEY_GLOBEX),
            "POST",
            "/v1/tenants/acme/namespaces/prod/disable",
            None
        )
        .await,
        403
    );
    let r = ok(
        &admin,
        "POST",
        "/v1/tenants/acme/namespaces/prod/disable",
        None,
    )
    .await;
    assert_eq!(r["disabled"], true);
    assert_eq!(r["changed"], true);

    // The open subscription ends and the subscriber is told why.
    tokio::time::timeout(Duration::from_secs(2), async {
        while sub.next().await.is_some() {}
    })
    .await
    .expect("ended within 2 s");
    let err = c.take_async_error().expect("the reason is reported");
    assert!(
        err.to_string().contains("namespace acme/prod is disabled"),
        "{err}"
    );
    // Publish, subscribe and the cache are refused with 403.
    let refused = |e: ClientError| {
        assert_eq!(e.code().map(|c| c.0), Some(403), "{e}");
        assert!(e.to_string().contains("acme/prod is disabled"), "{e}");
    };
    refused(c.publish("acme", "prod", "x", "m").await.unwrap_err());
    refused(c.subscribe("acme", "prod", "x").await.unwrap_err());
    refused(
        c.cache_put("acme", "prod", "sessions", "k", "v", None)
            .await
            .unwrap_err(),
    );
    refused(
        c.cache_get("acme", "prod", "sessions", "k")
            .await
            .unwrap_err(),
    );
    // So are the HTTPS routes of the namespace.
    let r = admin
        .call("GET", "/v1/tenants/acme/namespaces/prod/streams", None)
        .await
        .unwrap();
    assert_eq!(r.status, 403);
    assert!(r.text.contains("acme/prod is disabled"), "{}", r.text);
    // The tenant's other namespace carries on.
    c.publish("acme", "staging", "x", "still").await.unwrap();
    let e = next_event(&mut other, 2).await;
    assert_eq!(e.payload, &b"still"[..]);
    c.cache_put("acme", "staging", "sessions", "k", "v", None)
        .await
        .unwrap();
    drop((c, other));

    // Kept across a restart.
    let dir = s.stop().await;
    let s = start_in(dir, |_| {}).await;
    let admin = s.admin(KEY_ACME);
    let c = s.client(t, KEY_ACME).await;
    refused(c.publish("acme", "prod", "x", "m").await.unwrap_err());
    // The change is in the tenant's audit log.
    let audit = ok(&admin, "GET", "/v1/tenants/acme/audit", None).await;
    let records = audit["records"].as_array().unwrap();
    assert!(
        records
            .iter()
            .any(|r| r["event_type"] == "namespace.disable" && r.to_string().contains("\"prod\"")),
        "{audit}"
    );

    // Enabling restores it.
    let r = ok(
        &admin,
        "POST",
        "/v1/tenants/acme/namespaces/prod/enable",
        None,
    )
    .await;
    assert_eq!(r["disabled"], false);
    let mut sub = c.subscribe("acme", "prod", "x").await.unwrap();
    c.publish("acme", "prod", "x", "back").await.unwrap();
    let e = next_event(&mut sub, 2).await;
    assert_eq!(e.payload, &b"back"[..]);
    ok(
        &admin,
        "GET",
        "/v1/tenants/acme/namespaces/prod/streams",
        None,
    )
    .await;
}

async fn tokens_over_https_and_the_wire(t: Transport) {
    let s = start().await;
    let admin = s.admin(KEY_ACME);
    let (_, user) = new_key(&admin, "acme", "svc", &["user"]).await;
    let noauth = s.admin("");
    let r = noauth
        .call("POST", "/v1/auth", Some(&json!({ "api_key": user })))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    let token = r.body["auth"]["client_token"].as_str().unwrap().to_string();
    assert!(r.body["auth"]["lease_duration"].as_u64().unwrap() <= 600);
    assert_eq!(r.body["auth"]["policies"], json!(["user"]));
    let bad = noauth
        .call(
            "POST",
            "/v1/auth",
            Some(&json!({ "api_key": "rampart_0000000000000000_nope" })),
        )
        .await
        .unwrap();
    assert_eq!(bad.status, 401);
    // The wire accepts the token.
    let c = Client::connect(
        &s.url(t),
        ClientConfig::default().with_ca(&s.ca).with_token(&token),
    )
    .await
    .unwrap();
    assert_eq!(c.principal(), "svc");
    c.publish("acme", "prod", "s", "x").await.unwrap();
    let mut sub = c.subscribe("acme", "prod", "s").await.unwrap();
    // Revoking every token of the principal reaches the open connection.
    let r = ok(
        &admin,
        "POST",
        "/v1/tenants/acme/tokens/revoke",
        Some(json!({ "principal": "svc" })),
    )
    .await;
    assert_eq!(r["connections_closed"], 1);
    tokio::time::timeout(Duration::from_secs(1), async {
        while sub.next().await.is_some() {}
    })
    .await
    .expect("closed within 1 s");
    assert!(Client::connect(
        &s.url(t),
        ClientConfig::default().with_ca(&s.ca).with_token(&token)
    )
    .await
    .is_err());
}

/// Every admin route of another tenant: 403, nothing changes.
async fn cross_tenant_admin_matrix(t: Transport) {
    let s = start().await;
    let globex_admin = s.admin(KEY_GLOBEX);
    new_key(&globex_admin, "globex", "keep", &["user"]).await;
    let before = ok(&globex_admin, "GET", "/v1/tenants/globex/keys", None).await;
    let id = before["keys"][0]["id"].as_str().unwrap().to_string();
    let globex_cache = s.client(t, KEY_GLOBEX).await;
    globex_cache
        .cache_put("globex", "prod", "c", "k", "kept", None)
        .await
        .unwrap();
    let acme_admin = s.admin(KEY_ACME);
    let calls: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", "/v1/tenants/globex/keys".into(), None),
        ("POST", "/v1/tenants/globex/keys".into(), Some(json!({"name": "evil"}))),
        ("POST", format!("/v1/tenants/globex/keys/{id}/revoke"), None),
        ("POST", format!("/v1/tenants/globex/keys/{id}/rotate"), None),
        ("POST", "/v1/tenants/globex/tokens/revoke".into(), Some(json!({"principal": "keep"}))),
        ("GET", "/v1/tenants/globex/acl".into(), None),
        ("PUT", "/v1/tenants/globex/acl".into(), Some(json!("apiVersion: rampart.io/v1\nkind: ACL\nmetadata: {tenant: globex}\nspec: {rules: []}\n"))),
        ("POST", "/v1/tenants/globex/acl/explain".into(), Some(json!({"principal": "keep", "resource": "stream:x", "namespace": "n", "permission": "publish"}))),
        ("GET", "/v1/tenants/globex/namespaces/prod/streams".into(), None),
        ("POST", "/v1/tenants/globex/namespaces/prod/streams".into(), Some(json!({"name": "evil"}))),
        ("DELETE", "/v1/tenants/globex/namespaces/prod/streams/x".into(), None),
        ("GET", "/v1/tenants/globex/namespaces".into(), None),
        ("GET", "/v1/tenants/globex/namespaces/prod/caches".into(), None),
        ("DELETE", "/v1/tenants/globex/namespaces/prod/caches/c".into(), None),
        ("GET", "/v1/tenants".into(), None),
        ("POST", "/v1/tenants".into(), Some(json!({"name": "evil"}))),
        ("POST", "/v1/tenants/globex/disable".into(), None),
        ("POST", "/v1/tenants/globex/enable".into(), None),
    ];
    for (m, path, body) in &calls {
        assert_eq!(
            status(&acme_admin, m, path, body.clone()).await,
            403,
            "{m} {path}"
        );
    }
    // Unauthenticated: 401 everywhere but /v1/auth.
    let anon = s.admin("");
    for (m, path, body) in &calls {
        assert_eq!(
            status(&anon, m, path, body.clone()).await,
            401,
            "{m} {path}"
        );
    }
    let after = ok(&globex_admin, "GET", "/v1/tenants/globex/keys", None).await;
    assert_eq!(before, after, "nothing changed");
    assert_eq!(
        globex_cache
            .cache_get("globex", "prod", "c", "k")
            .await
            .unwrap()
            .as_deref(),
        Some(&b"kept"[..]),
        "the other tenant's cache was not flushed"
    );
    assert_eq!(
        ok(
            &globex_admin,
            "GET",
            "/v1/tenants/globex/namespaces/prod/streams",
            None
        )
        .await["streams"],
        json!([])
    );
}

async fn namespaces_and_caches_over_https(t: Transport) {
    let s = start().await;
    let admin = s.admin(KEY_ACME);
    let c = s.client(t, KEY_ACME).await;
    c.cache_put("acme", "prod", "sessions", "a", "1", None)
        .await
        .unwrap();
    c.cache_put("acme", "prod", "sessions", "b", "2", None)
        .await
        .unwrap();
    ok(
        &admin,
        "POST",
        "/v1/tenants/acme/namespaces/prod/streams",
        Some(json!({"name": "orders"})),
    )
    .await;
    assert_eq!(
        status(
            &admin,
            "POST",
            "/v1/tenants/acme/namespaces/prod/streams",
            Some(json!({"name": "orders"}))
        )
        .await,
        409
    );
    assert_eq!(
        ok(&admin, "GET", "/v1/tenants/acme/namespaces", None).await["namespaces"],
        json!(["prod"])
    );
    assert_eq!(
        ok(
            &admin,
            "GET",
            "/v1/tenants/acme/namespaces/prod/streams",
            None
        )
        .await["streams"],
        json!(["orders"])
    );
    let caches = ok(
        &admin,
        "GET",
        "/v1/tenants/acme/namespaces/prod/caches",
        None,
    )
    .await;
    assert_eq!(caches["caches"][0]["name"], "sessions");
    assert_eq!(caches["caches"][0]["entries"], 2);
    let r = ok(
        &admin,
        "DELETE",
        "/v1/tenants/acme/namespaces/prod/caches/sessions",
        None,
    )
    .await;
    assert_eq!(r["removed"], 2);
    assert!(c
        .cache_get("acme", "prod", "sessions", "a")
        .await
        .unwrap()
        .is_none());
    let mut sub = c.subscribe("acme", "prod", "orders").await.unwrap();
    assert_eq!(
        status(
            &admin,
            "DELETE",
            "/v1/tenants/acme/namespaces/prod/streams/orders",
            None
        )
        .await,
        204
    );
    assert!(tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("deleting the stream ends its subscriptions")
        .is_none());
    assert_eq!(
        ok(
            &admin,
            "GET",
            "/v1/tenants/acme/namespaces/prod/streams",
            None
        )
        .await["streams"],
        json!([])
    );
    assert_eq!(
        status(
            &admin,
            "DELETE",
            "/v1/tenants/acme/namespaces/prod/streams/orders",
            None
        )
        .await,
        404
    );
}

async fn https_responses_are_hardened(_t: Transport) {
    let s = start().await;
    let anon = s.admin("");
    let r = anon.call("GET", "/v1/nothing/here", None).await.unwrap();
    assert_eq!(r.status, 404);
    let r = anon
        .call("GET", "/v1/tenants/acme/keys", None)
        .await
        .unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(r.body, json!({"errors": ["unauthenticated"]}));
    // Security headers on every response, errors and successes alike.
    let admin = s.admin(KEY_ACME);
    let good = admin.call("GET", "/v1/auth/whoami", None).await.unwrap();
    assert_eq!(good.status, 200);
    for resp in [&r, &good] {
        assert!(resp
            .header("strict-transport-security")
            .unwrap()
            .contains("max-age="));
        assert_eq!(resp.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(resp.header("x-frame-options"), Some("DENY"));
        assert!(resp
            .header("content-security-policy")
            .unwrap()
            .contains("default-src 'none'"));
        assert_eq!(resp.header("referrer-policy"), Some("no-referrer"));
        assert_eq!(resp.header("cache-control"), Some("no-store"));
        // No CORS allowance unless configured.
        assert_eq!(resp.header("access-control-allow-origin"), None);
    }
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let r = admin
        .call("POST", "/v1/tenants/acme/keys", Some(&json!({"bogus": 1})))
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(
        r.body["errors"][0]
            .as_str()
            .unwrap()
            .contains("unknown field"),
        "{}",
        r.text
    );
    assert!(
        !r.text.contains("/work") && !r.text.contains("src/"),
        "{}",
        r.text
    );
}

both_transports!(
    roles_limit_what_a_key_can_do,
    admin_of_streams_cannot_read_secrets,
    acl_rules_apply_on_the_wire,
    revoked_key_closes_open_subscription,
    expired_token_stops_delivery,
    reauth_keeps_subscription_alive,
    tenant_disable_and_enable,
    namespace_disable_and_enable,
    tokens_over_https_and_the_wire,
    cross_tenant_admin_matrix,
    namespaces_and_caches_over_https,
    https_responses_are_hardened,
);
