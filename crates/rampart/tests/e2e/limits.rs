//! Rate limits and quotas (issue 8): each limit triggers its documented
//! error, overrides made through the admin API apply to open connections
//! without a restart, and a principal over its own limit does not eat its
//! tenant's budget.

use std::time::Duration;

use rampart_client::{AdminClient, Client, ClientError, StartAt, Transport};
use serde_json::{json, Value};

use crate::common::*;

fn operator(s: &TestServer) -> AdminClient {
    let key = std::fs::read_to_string(s.server.dev_setup().unwrap().admin_key_path.clone())
        .unwrap()
        .trim()
        .to_string();
    s.admin(&key)
}

/// A client that reports a 429 instead of waiting it out.
async fn impatient(s: &TestServer, t: Transport, key: &str) -> Client {
    Client::connect(
        &s.url(t),
        s.config(key).with_rate_limit_max_wait(Duration::ZERO),
    )
    .await
    .unwrap()
}

fn impatient_admin(s: &TestServer, key: &str) -> AdminClient {
    let url = format!("https://{}", s.server.http_addr().unwrap());
    AdminClient::new(
        &url,
        &s.config(key).with_rate_limit_max_wait(Duration::ZERO),
    )
    .unwrap()
}

async fn put(admin: &AdminClient, path: &str, body: Value) -> Value {
    let r = admin.call("PUT", path, Some(&body)).await.unwrap();
    assert_eq!(r.status, 200, "PUT {path}: {}", r.text);
    r.body
}

/// The NACK of a refused request: (code, retry-after, message).
fn refusal(e: &ClientError) -> (u16, Option<Duration>, String) {
    match e {
        ClientError::Nack {
            code,
            retry_after,
            message,
        } => (code.0, *retry_after, message.clone()),
        other => panic!("expected a NACK, got {other}"),
    }
}

/// Declares globex's durable stream `prod/d`, where the stored-bytes tests
/// publish.
async fn create_globex_durable(s: &TestServer) {
    create_stream(s, KEY_GLOBEX, "globex", "d", json!({"durable": true})).await;
}

async fn new_key(admin: &AdminClient, name: &str) -> String {
    let r = admin
        .call(
            "POST",
            "/v1/tenants/acme/keys",
            Some(&json!({"name": name, "roles": ["admin"]})),
        )
        .await
        .unwrap();
    assert!(r.status < 300, "{}", r.text);
    r.body["key"].as_str().unwrap().to_string()
}

async fn principal_of(s: &TestServer, key: &str) -> String {
    let r = s
        .admin(key)
        .call("GET", "/v1/auth/whoami", None)
        .await
        .unwrap();
    r.body["principal"].as_str().unwrap().to_string()
}

async fn publish_rate_limit_and_live_override(t: Transport) {
    let s = start().await;
    let c = impatient(&s, t, KEY_ACME).await;
    // No limit yet.
    for i in 0..50 {
        c.publish("acme", "prod", "s", format!("m{i}"))
            .await
            .unwrap();
    }
    // The operator sets a tenant limit while the connection is open.
    let body = put(
        &operator(&s),
        "/v1/tenants/acme/limits",
        json!({"publish_msgs_per_sec": 5, "burst": 2.0}),
    )
    .await;
    assert_eq!(body["effective"]["publish_msgs_per_sec"], 5);
    let mut refused = None;
    for i in 0..40 {
        if let Err(e) = c.publish("acme", "prod", "s", format!("n{i}")).await {
            refused = Some(e);
            break;
        }
    }
    let (code, retry, message) = refusal(&refused.expect("the limit applies"));
    assert_eq!(code, 429);
    assert!(retry.is_some_and(|d| d > Duration::ZERO), "{retry:?}");
    assert!(
        message.contains("tenant rate limit publish_msgs_per_sec=5"),
        "{message}"
    );
    // Another tenant is not limited.
    let g = impatient(&s, t, KEY_GLOBEX).await;
    for i in 0..40 {
        g.publish("globex", "prod", "s", format!("g{i}"))
            .await
            .unwrap();
    }
    // Removing the override lifts it, again without a restart.
    let r = operator(&s)
        .call("DELETE", "/v1/tenants/acme/limits", None)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    for i in 0..40 {
        c.publish("acme", "prod", "s", format!("o{i}"))
            .await
            .unwrap();
    }
    // The refusal was counted, by tenant and limit.
    let r = operator(&s)
        .call("GET", "/v1/tenants/acme/limits", None)
        .await
        .unwrap();
    let rejections = r.body["rejections"].as_array().unwrap();
    assert!(
        rejections
            .iter()
            .any(|x| x["limit"] == "publish_msgs_per_sec" && x["count"].as_u64() >= Some(1)),
        "{}",
        r.text
    );
}

async fn byte_cache_and_subscription_limits(t: Transport) {
    let s = start_with(|c| {
        c.principal_limits.publish_bytes_per_sec = Some(1000);
        c.principal_limits.burst = Some(1.0);
        c.principal_limits.cache_ops_per_sec = Some(3);
        c.principal_limits.max_subscriptions = Some(2);
        c.tenant_limits.max_cache_bytes = Some(2000);
    })
    .await;
    let c = impatient(&s, t, KEY_ACME).await;
    // Bytes: 900 pass, the next 900 do not.
    c.publish("acme", "prod", "b", vec![b'x'; 900])
        .await
        .unwrap();
    let (code, retry, msg) = refusal(
        &c.publish("acme", "prod", "b", vec![b'x'; 900])
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 429);
    assert!(retry.is_some());
    assert!(
        msg.contains("principal rate limit publish_bytes_per_sec=1000"),
        "{msg}"
    );

    // Cache ops: 3 per second with a burst of 6 (the default burst, 2x).
    let mut cache_refusal = None;
    for i in 0..20 {
        if let Err(e) = c.cache_get("acme", "prod", "c", &format!("k{i}")).await {
            cache_refusal = Some(e);
            break;
        }
    }
    let (code, _, msg) = refusal(&cache_refusal.expect("cache ops limited"));
    assert_eq!(code, 429);
    assert!(msg.contains("cache_ops_per_sec=3"), "{msg}");

    // Subscriptions: two per principal.
    let _a = c.subscribe("acme", "prod", "x").await.unwrap();
    let _b = c.subscribe("acme", "prod", "y").await.unwrap();
    let (code, retry, msg) = refusal(&c.subscribe("acme", "prod", "z").await.unwrap_err());
    assert_eq!(code, 429);
    assert!(retry.is_none());
    assert!(msg.contains("principal quota max_subscriptions=2"), "{msg}");
    // Closing one frees its place.
    _a.unsubscribe().await.unwrap();
    let _c = c.subscribe("acme", "prod", "z").await.unwrap();

    // Cache bytes: the tenant's quota (2000) is below the server-wide one.
    let fresh = impatient(&s, t, KEY_GLOBEX).await;
    let g = impatient(&s, t, KEY_GLOBEX).await;
    drop(fresh);
    g.cache_put("globex", "prod", "c", "a", vec![b'v'; 1200], None)
        .await
        .unwrap();
    let (code, _, msg) = refusal(
        &g.cache_put("globex", "prod", "c", "b", vec![b'v'; 1200], None)
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 507);
    assert!(msg.contains("tenant quota max_cache_bytes=2000"), "{msg}");
}

async fn connection_and_stream_quotas(t: Transport) {
    let s = start_with(|c| {
        c.tenant_limits.max_connections = Some(2);
        c.tenant_limits.max_streams = Some(3);
        c.tenant_limits.max_stored_bytes = Some(4000);
    })
    .await;
    let c1 = impatient(&s, t, KEY_ACME).await;
    let _c2 = impatient(&s, t, KEY_ACME).await;
    let e = Client::connect(&s.url(t), s.config(KEY_ACME))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("tenant quota max_connections=2"),
        "{e}"
    );
    // Another tenant's connections are its own.
    let _g = impatient(&s, t, KEY_GLOBEX).await;
    drop(c1);
    // The closed connection's place comes back once the server sees it go.
    let mut back = None;
    for _ in 0..50 {
        match Client::connect(&s.url(t), s.config(KEY_ACME)).await {
            Ok(c) => {
                back = Some(c);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let c = back.expect("a place frees up when a connection closes");

    // Streams: auto-created ones count, and the admin API is held to it.
    for name in ["s1", "s2", "s3"] {
        c.publish("acme", "prod", name, "x").await.unwrap();
    }
    let (code, _, msg) = refusal(&c.publish("acme", "prod", "s4", "x").await.unwrap_err());
    assert_eq!(code, 429);
    assert!(msg.contains("tenant quota max_streams=3"), "{msg}");
    let r = s
        .admin(KEY_ACME)
        .call(
            "POST",
            "/v1/tenants/acme/namespaces/prod/streams",
            Some(&json!({"name": "d1", "durable": true})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 429, "{}", r.text);
    assert!(r.text.contains("max_streams"), "{}", r.text);

    // Stored bytes: durable streams of globex (no stream quota reached).
    create_globex_durable(&s).await;
    let g = impatient(&s, t, KEY_GLOBEX).await;
    g.publish("globex", "prod", "d", vec![b'd'; 3000])
        .await
        .unwrap();
    let (code, _, msg) = refusal(
        &g.publish("globex", "prod", "d", vec![b'd'; 3000])
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 507);
    assert!(msg.contains("tenant quota max_stored_bytes=4000"), "{msg}");
    // One publish larger than the whole quota can never fit: 413.
    let (code, _, _) = refusal(
        &g.publish("globex", "prod", "d", vec![b'd'; 5000])
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 413);
}

/// Pipelined publishes near a full `max_stored_bytes` are charged one by
/// one, though the server gathers them into one append: those that fit are
/// stored and acknowledged, each of the rest gets its own 507.
async fn stored_bytes_are_charged_frame_by_frame(t: Transport) {
    let s = start_with(|c| c.tenant_limits.max_stored_bytes = Some(4000)).await;
    create_globex_durable(&s).await;
    let g = impatient(&s, t, KEY_GLOBEX).await;
    // Each is a 900-byte entry (a 4-byte length and its payload): four fit.
    let payload = |i: u8| vec![i; 896];
    let mut pending = Vec::new();
    for i in 0..10 {
        pending.push(
            g.publish_async("globex", "prod", "d", payload(i))
                .await
                .unwrap(),
        );
    }
    let mut answers = Vec::new();
    for p in pending {
        answers.push(p.await.map(|_| ()).map_err(|e| refusal(&e)));
    }
    for (i, a) in answers.iter().enumerate() {
        match a {
            Ok(()) => assert!(i < 4, "publish {i} was stored"),
            Err((code, _, msg)) => {
                assert!(i >= 4, "publish {i} was refused: {msg}");
                assert_eq!(*code, 507, "{msg}");
                assert!(msg.contains("tenant quota max_stored_bytes=4000"), "{msg}");
            }
        }
    }
    let mut sub = g
        .subscribe_from("globex", "prod", "d", StartAt::Earliest)
        .await
        .unwrap();
    receives_exactly(
        &mut sub,
        (0..4).map(payload),
        "a refused publish was stored",
    )
    .await;
}

async fn failed_auth_locks_out_the_key_and_the_address(t: Transport) {
    let s = start_with(|c| {
        c.auth_lockout_threshold = 3;
        c.auth_lockout_base_ms = 60_000;
    })
    .await;
    let admin = s.admin(KEY_ACME);
    let good = new_key(&admin, "victim").await;
    // Same id, wrong secret.
    let (prefix, _) = good.rsplit_once('_').unwrap();
    let wrong = format!("{prefix}_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    for _ in 0..3 {
        let e = Client::connect(&s.url(t), s.config(&wrong))
            .await
            .unwrap_err();
        assert_eq!(e.code().map(|c| c.0), Some(401), "{e}");
    }
    // Now locked out: even the right secret is refused with a retry-after,
    // and from this address every other key too.
    for key in [good.as_str(), KEY_GLOBEX] {
        let e = Client::connect(&s.url(t), s.config(key)).await.unwrap_err();
        let (code, retry, msg) = refusal(&e);
        assert_eq!(code, 429, "{msg}");
        assert!(
            retry.is_some_and(|d| d > Duration::from_secs(50)),
            "{retry:?}"
        );
        assert!(msg.contains("locked out"), "{msg}");
    }
    // The HTTPS API answers 429 with Retry-After to this address as well.
    let r = impatient_admin(&s, KEY_GLOBEX)
        .call("GET", "/v1/auth/whoami", None)
        .await
        .unwrap();
    assert_eq!(r.status, 429, "{}", r.text);
    let secs: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(secs > 50, "{secs}");
}

async fn idle_connections_are_closed(t: Transport) {
    let s = start_with(|c| c.idle_timeout_ms = 300).await;
    let quiet = s.config(KEY_ACME).with_keepalive(Duration::ZERO);
    let idle = Client::connect(&s.url(t), quiet).await.unwrap();
    // The client's own keep-alive PINGs keep an idle connection open.
    let kept = Client::connect(
        &s.url(t),
        s.config(KEY_ACME)
            .with_keepalive(Duration::from_millis(100)),
    )
    .await
    .unwrap();
    let subscriber = s.client(t, KEY_ACME).await;
    let mut sub = subscriber.subscribe("acme", "prod", "quiet").await.unwrap();
    let busy = s.client(t, KEY_ACME).await;
    for _ in 0..10 {
        busy.ping().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A second of silence: closed. A subscriber and a busy one are kept.
    assert!(idle.ping().await.is_err(), "the idle connection was closed");
    kept.ping().await.unwrap();
    busy.ping().await.unwrap();
    subscriber.ping().await.unwrap();
    busy.publish("acme", "prod", "quiet", "still here")
        .await
        .unwrap();
    let e = next_event(&mut sub, 5).await;
    assert_eq!(&e.payload[..], b"still here");
}

async fn delivery_is_paced_not_dropped(t: Transport) {
    let s = start_with(|c| {
        c.tenant_limits.deliver_bytes_per_sec = Some(4000);
        c.tenant_limits.burst = Some(1.0);
    })
    .await;
    let subscriber = s.client(t, KEY_ACME).await;
    let mut sub = subscriber.subscribe("acme", "prod", "paced").await.unwrap();
    let publisher = s.client(t, KEY_ACME).await;
    let started = std::time::Instant::now();
    // One batch of 8 KB, twice the bucket: delivered as one, and charged
    // in full, not as the one bucket it would empty.
    let batch: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i; 1000]).collect();
    publisher
        .publish_batch("acme", "prod", "paced", batch)
        .await
        .unwrap();
    for i in 0..8u8 {
        let e = next_event(&mut sub, 20).await;
        assert_eq!(e.payload[0], i);
    }
    // 8 KB at 4 KB/s with a 4 KB bucket: at least a second, whatever the
    // machine's speed (a lower bound only).
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(sub.missed(), 0);
    let r = operator(&s)
        .call("GET", "/v1/tenants/acme/limits", None)
        .await
        .unwrap();
    assert!(r.text.contains("deliver_bytes_per_sec"), "{}", r.text);
}

both_transports!(
    delivery_is_paced_not_dropped,
    idle_connections_are_closed,
    publish_rate_limit_and_live_override,
    byte_cache_and_subscription_limits,
    connection_and_stream_quotas,
    stored_bytes_are_charged_frame_by_frame,
    failed_auth_locks_out_the_key_and_the_address,
);

/// 200 rapid HTTPS requests from one principal over its limit get 429 with
/// Retry-After; another principal of the same tenant is not affected until
/// the tenant's cap is reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_principal_limit_then_tenant_cap() {
    let s = start().await;
    let setup = s.admin(KEY_ACME);
    let bob_key = new_key(&setup, "bob").await;
    let carol_key = new_key(&setup, "carol").await;
    let op = operator(&s);
    for key in [KEY_ACME, bob_key.as_str(), carol_key.as_str()] {
        let p = principal_of(&s, key).await;
        put(
            &op,
            &format!("/v1/tenants/acme/principals/{p}/limits"),
            json!({"http_requests_per_sec": 2, "burst": 5.0}),
        )
        .await;
    }
    // The tenant: 25 at once, then 1 a second.
    put(
        &op,
        "/v1/tenants/acme/limits",
        json!({"http_requests_per_sec": 1, "burst": 25.0}),
    )
    .await;

    let alice = impatient_admin(&s, KEY_ACME);
    let mut ok = 0;
    let mut limited = 0;
    for _ in 0..200 {
        let r = alice.call("GET", "/v1/auth/whoami", None).await.unwrap();
        match r.status {
            200 => ok += 1,
            429 => {
                limited += 1;
                let secs: u64 = r.header("retry-after").unwrap().parse().unwrap();
                assert!(secs >= 1);
                assert!(r.text.contains("principal rate limit"), "{}", r.text);
            }
            other => panic!("unexpected {other}: {}", r.text),
        }
    }
    println!("alice: {ok} ok, {limited} limited of 200");
    assert!(limited >= 150, "{limited}");
    assert!(ok >= 10, "{ok}");

    // Alice's refusals did not use the tenant's budget: bob gets through.
    let bob = impatient_admin(&s, &bob_key);
    let carol = impatient_admin(&s, &carol_key);
    for _ in 0..3 {
        let r = bob.call("GET", "/v1/auth/whoami", None).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text);
    }
    // Bob and carol in turn: well before either reaches their own 10, the
    // tenant's 25 run out, and that is what refuses them.
    let mut first = None;
    for i in 0..40 {
        let who = if i % 2 == 0 { &bob } else { &carol };
        let r = who.call("GET", "/v1/auth/whoami", None).await.unwrap();
        if r.status != 200 {
            first = Some(r);
            break;
        }
    }
    let r = first.expect("the tenant cap is reached");
    assert_eq!(r.status, 429);
    assert!(
        r.text.contains("tenant rate limit http_requests_per_sec=1"),
        "{}",
        r.text
    );
    assert!(r.header("retry-after").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overrides_survive_a_restart_and_are_validated() {
    let s = start().await;
    let op = operator(&s);
    let r = op
        .call(
            "PUT",
            "/v1/tenants/acme/limits",
            Some(&json!({"publish_msg_per_sec": 5})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("publish_msg_per_sec"), "{}", r.text);
    let r = op
        .call(
            "PUT",
            "/v1/tenants/acme/limits",
            Some(&json!({"cache_ops_per_sec": 0})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.text);
    // A tenant admin may not raise its own limits.
    let r = s
        .admin(KEY_ACME)
        .call(
            "PUT",
            "/v1/tenants/acme/limits",
            Some(&json!({"cache_ops_per_sec": 1000000})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 403, "{}", r.text);
    put(
        &op,
        "/v1/tenants/acme/limits",
        json!({"cache_ops_per_sec": 1, "burst": 1.0}),
    )
    .await;
    let dir = s.stop().await;
    let s = start_in(dir, |_| {}).await;
    let c = impatient(&s, Transport::Tcp, KEY_ACME).await;
    c.cache_get("acme", "prod", "c", "k").await.unwrap();
    let (code, _, _) = refusal(&c.cache_get("acme", "prod", "c", "k").await.unwrap_err());
    assert_eq!(code, 429);
    let r = operator(&s)
        .call("GET", "/v1/tenants/acme/limits", None)
        .await
        .unwrap();
    assert_eq!(r.body["override"]["cache_ops_per_sec"], 1, "{}", r.text);
}

/// SIGHUP re-reads the configuration file and applies its limits to the
/// running server; a bad file changes nothing and the server keeps serving.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_configured_limits() {
    use crate::cli::DevServer;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("rampart.toml");
    std::fs::write(&cfg, "[tenant_limits]\ncache_ops_per_sec = 100000\n").unwrap();
    let s = DevServer::start_with_args(dir, &["--config", cfg.to_str().unwrap()]);
    let key = std::fs::read_to_string(s.data().join("dev/admin.key")).unwrap();
    let config = rampart_client::ClientConfig::default()
        .with_ca(s.data().join("dev/ca.crt"))
        .with_api_key(key.trim())
        .with_rate_limit_max_wait(Duration::ZERO);
    let c = Client::connect(&format!("tls://{}", s.tcp), config)
        .await
        .unwrap();
    for _ in 0..20 {
        c.cache_get("dev", "ops", "c", "k").await.unwrap();
    }
    let hup = || {
        let st = std::process::Command::new("kill")
            .args(["-HUP", &s.pid().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    };
    // A broken file: reported, nothing changes.
    std::fs::write(&cfg, "[tenant_limits]\ncache_ops_per_sec = 0\n").unwrap();
    hup();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..20 {
        c.cache_get("dev", "ops", "c", "k").await.unwrap();
    }
    // A good one applies to the open connection.
    std::fs::write(
        &cfg,
        "[tenant_limits]\ncache_ops_per_sec = 1\nburst = 1.0\n",
    )
    .unwrap();
    hup();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let refused = loop {
        if let Err(e) = c.cache_get("dev", "ops", "c", "k").await {
            break e;
        }
        assert!(tokio::time::Instant::now() < deadline, "reload not applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (code, _, msg) = refusal(&refused);
    assert_eq!(code, 429);
    assert!(msg.contains("cache_ops_per_sec=1"), "{msg}");
    let log = std::fs::read_to_string(s.dir().join("server.log")).unwrap_or_default();
    drop(s);
    assert!(!log.contains("panicked"), "{log}");
    assert!(log.contains("configuration not reloaded"), "{log}");
    assert!(
        log.contains("cache_ops_per_sec must be at least 1"),
        "{log}"
    );
    assert!(log.contains("SIGHUP: limits reloaded"), "{log}");
}

/// Stored bytes follow the logs: once a tenant's durable stream is
/// deleted, what it held no longer counts against `max_stored_bytes`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_bytes_are_given_back_when_a_stream_goes() {
    let s = start_with(|c| {
        c.tenant_limits.max_stored_bytes = Some(4000);
        c.stream_maintenance_interval_ms = 100;
    })
    .await;
    let admin = s.admin(KEY_GLOBEX);
    create_globex_durable(&s).await;
    let g = impatient(&s, Transport::Tcp, KEY_GLOBEX).await;
    g.publish("globex", "prod", "d", vec![b'd'; 3000])
        .await
        .unwrap();
    let (code, _, _) = refusal(
        &g.publish("globex", "prod", "d", vec![b'd'; 3000])
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 507);
    let r = admin
        .call(
            "DELETE",
            "/v1/tenants/globex/namespaces/prod/streams/d",
            None,
        )
        .await
        .unwrap();
    assert!(r.status < 300, "{}", r.text);
    // With no durable stream left, the tenant holds nothing.
    let op = operator(&s);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = op
            .call("GET", "/v1/tenants/globex/limits", None)
            .await
            .unwrap();
        if r.body["usage"]["max_stored_bytes"] == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{}", r.text);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    create_globex_durable(&s).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match g.publish("globex", "prod", "d", vec![b'd'; 3000]).await {
            Ok(_) => break,
            Err(e) => {
                assert_eq!(refusal(&e).0, 507);
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "usage never went down"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A connection that published to a stream keeps working after the stream
/// is deleted and created again: its publishes reach the new stream's
/// subscribers, not the deleted one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_follow_a_recreated_stream() {
    let s = start().await;
    let admin = s.admin(KEY_ACME);
    let create = || create_stream(&s, KEY_ACME, "acme", "again", json!({}));
    create().await;
    let c = s.client(Transport::Tcp, KEY_ACME).await;
    c.publish("acme", "prod", "again", "first").await.unwrap();
    let r = admin
        .call(
            "DELETE",
            "/v1/tenants/acme/namespaces/prod/streams/again",
            None,
        )
        .await
        .unwrap();
    assert!(r.status < 300, "{}", r.text);
    create().await;
    let reader = s.client(Transport::Tcp, KEY_ACME).await;
    let mut sub = reader.subscribe("acme", "prod", "again").await.unwrap();
    c.publish("acme", "prod", "again", "second").await.unwrap();
    let e = next_event(&mut sub, 5).await;
    assert_eq!(&e.payload[..], b"second");
}
