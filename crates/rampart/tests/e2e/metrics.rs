//! `/metrics` on `metrics_bind`: refused without the bearer token, and with
//! it the Prometheus text format, whose counters follow what the test did
//! over the wire and the HTTPS API. Checked by `promtool check metrics`
//! too where Debian's `prometheus` package is installed (.ci/run installs
//! it).

use std::collections::HashMap;
use std::time::Duration;

use rampart_client::{AdminClient, Client, ClientConfig, ConsumeOptions, StartAt, Transport};
use rampart_server::{Config, SlowConsumer};

use crate::common::*;

const TOKEN: &str = "scrape-token-0123456789";

fn scraper(s: &TestServer, token: Option<&str>) -> AdminClient {
    let url = format!("https://{}", s.server.metrics_addr().expect("metrics"));
    let mut c = ClientConfig::default().with_ca(&s.ca);
    if let Some(t) = token {
        c = c.with_token(t);
    }
    AdminClient::new(&url, &c).expect("client")
}

/// `name{labels}` -> value, for every sample line; panics on a line that
/// is not a comment or a well-formed sample.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let name = key.split('{').next().unwrap();
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        assert!(
            !key.contains('{') || key.ends_with('}'),
            "bad labels in {line:?}"
        );
        let v: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        out.insert(key.to_string(), v);
    }
    out
}

fn at_least(m: &HashMap<String, f64>, key: &str, min: f64) {
    let v = m.get(key).copied().unwrap_or_else(|| {
        let mut keys: Vec<_> = m.keys().collect();
        keys.sort();
        panic!("{key} missing; have {keys:#?}")
    });
    assert!(v >= min, "{key} = {v}, wanted at least {min}");
}

async fn metrics_follow_the_traffic(t: Transport) {
    let dir = tempfile::tempdir().unwrap();
    let token_path = dir.path().join("metrics-token");
    std::fs::write(&token_path, format!("{TOKEN}\n")).unwrap();
    let s = start_with(|c| {
        c.metrics_bind = "127.0.0.1:0".into();
        c.metrics_token_path = Some(token_path.clone());
    })
    .await;

    // Traffic: a subscriber, three publishes, a refused login, a refused
    // request, an HTTPS call.
    let sub_client = s.client(t, KEY_ACME).await;
    let mut sub = sub_client.subscribe("acme", "ns", "orders").await.unwrap();
    let publisher = s.client(t, KEY_ACME).await;
    for i in 0..3 {
        publisher
            .publish("acme", "ns", "orders", format!("order-{i}"))
            .await
            .unwrap();
    }
    for _ in 0..3 {
        next_event(&mut sub, 10).await;
    }
    let wrong = ClientConfig::default()
        .with_ca(&s.ca)
        .with_api_key("rk_not_a_key_of_this_server");
    assert!(Client::connect(&s.url(t), wrong).await.is_err());
    assert!(publisher
        .publish("globex", "ns", "orders", "not mine")
        .await
        .is_err());
    let r = s
        .admin(KEY_ACME)
        .call("GET", "/healthz", None)
        .await
        .unwrap();
    assert_eq!(r.status, 200);

    // No token, or a wrong one: refused, and nothing is shown.
    for token in [None, Some("scrape-token-0123456788")] {
        let r = scraper(&s, token)
            .call("GET", "/metrics", None)
            .await
            .unwrap();
        assert_eq!(r.status, 401, "{token:?}");
        assert!(!r.text.contains("rampart_"), "{}", r.text);
    }
    let r = scraper(&s, Some(TOKEN))
        .call("GET", "/metrics", None)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let m = parse(&r.text);
    let transport = match t {
        Transport::Quic => "quic",
        _ => "tcp",
    };
    at_least(
        &m,
        &format!("rampart_handshakes_total{{transport=\"{transport}\",result=\"ok\"}}"),
        3.0,
    );
    at_least(
        &m,
        "rampart_auth_total{method=\"api_key\",result=\"success\"}",
        2.0,
    );
    at_least(
        &m,
        "rampart_auth_total{method=\"api_key\",result=\"failure\"}",
        1.0,
    );
    at_least(&m, "rampart_published_messages_total{tenant=\"acme\"}", 3.0);
    at_least(
        &m,
        "rampart_published_bytes_total{tenant=\"acme\"}",
        3.0 * 7.0,
    );
    at_least(&m, "rampart_delivered_messages_total{tenant=\"acme\"}", 3.0);
    at_least(
        &m,
        "rampart_rejections_total{code=\"403\",reason=\"forbidden\"}",
        1.0,
    );
    at_least(
        &m,
        "rampart_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"}",
        1.0,
    );
    at_least(&m, "rampart_connections_open", 2.0);
    at_least(&m, "rampart_audit_records_written_total", 1.0);
    at_least(&m, "rampart_audit_failing", 0.0);
    // The dev certificate is valid for far longer than a day.
    at_least(&m, "rampart_tls_certificate_expiry_seconds", 86_400.0);
    at_least(&m, "rampart_log_fsync_seconds_count", 0.0);
    at_least(&m, "rampart_log_fsync_seconds_bucket{le=\"+Inf\"}", 0.0);
    // The subscriber's queue (the depth itself is in
    // `queue_depths_follow_a_slow_subscriber`), and no consumer yet.
    at_least(&m, "rampart_subscribers", 1.0);
    at_least(&m, "rampart_subscriber_queue_messages", 0.0);
    assert_eq!(m.get("rampart_durable_consumers"), Some(&0.0));
    // Logins waited for their audit records, which were written in batches.
    at_least(&m, "rampart_audit_batch_write_seconds_count", 1.0);
    at_least(&m, "rampart_audit_fsync_seconds_count", 1.0);
    at_least(
        &m,
        "rampart_audit_wait_seconds_count{level=\"durable\"}",
        2.0,
    );
    at_least(
        &m,
        "rampart_audit_wait_seconds_bucket{level=\"durable\",le=\"+Inf\"}",
        2.0,
    );
    // Nothing secret in the output.
    assert!(!r.text.contains(TOKEN) && !r.text.contains(KEY_ACME));

    if let Ok(out) = promtool(&r.text) {
        assert!(out.status.success(), "promtool check metrics: {out:?}");
    }
    drop(sub);
}

/// A server serving `/metrics` with [`TOKEN`], tweaked by `tweak`; the
/// token file lives in `dir`.
async fn start_scraped(dir: &std::path::Path, tweak: impl FnOnce(&mut Config)) -> TestServer {
    let token_path = dir.join("metrics-token");
    std::fs::write(&token_path, format!("{TOKEN}\n")).unwrap();
    start_with(|c| {
        c.metrics_bind = "127.0.0.1:0".into();
        c.metrics_token_path = Some(token_path);
        tweak(c);
    })
    .await
}

async fn scrape(s: &TestServer) -> HashMap<String, f64> {
    let r = scraper(s, Some(TOKEN))
        .call("GET", "/metrics", None)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    parse(&r.text)
}

/// Scrapes until `done` holds for the metrics, for 30 s at most; returns
/// them.
async fn scrape_until(
    s: &TestServer,
    what: &str,
    done: impl Fn(&HashMap<String, f64>) -> bool,
) -> HashMap<String, f64> {
    let mut m = HashMap::new();
    for _ in 0..300 {
        m = scrape(s).await;
        if done(&m) {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not within 30 s; last scrape: {m:#?}");
}

fn get(m: &HashMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(f64::NAN)
}

/// A subscriber whose delivery is paced (one batch a second) falls behind
/// a publisher: its queue, bounded at 4 messages with `drop_oldest`, shows
/// full in the aggregate gauges; once it leaves, they go back to nothing.
/// The queues are the broker's whatever the transport, so TCP only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_depths_follow_a_slow_subscriber() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_scraped(dir.path(), |c| {
        c.subscriber_queue_messages = 4;
        c.slow_consumer_policy = SlowConsumer::DropOldest;
        c.tenant_limits.deliver_bytes_per_sec = Some(1);
        c.tenant_limits.burst = Some(1.0);
    })
    .await;
    let m = scrape(&s).await;
    assert_eq!(get(&m, "rampart_subscribers"), 0.0);
    assert_eq!(get(&m, "rampart_subscriber_queue_messages"), 0.0);

    let sub_client = s.client(Transport::Tcp, KEY_ACME).await;
    let sub = sub_client
        .subscribe("acme", "prod", "firehose")
        .await
        .unwrap();
    let publisher = s.client(Transport::Tcp, KEY_ACME).await;
    // The delivery task takes the whole queue once a second: publish more
    // than it holds, then look, until a look lands before it is taken.
    let mut full = None;
    for round in 0..100 {
        for i in 0..6 {
            publisher
                .publish("acme", "prod", "firehose", format!("m{round}-{i}"))
                .await
                .unwrap();
        }
        let m = scrape(&s).await;
        if get(&m, "rampart_subscriber_queue_messages") == 4.0 {
            full = Some(m);
            break;
        }
    }
    let m = full.expect("the subscriber's queue was seen full (4 messages)");
    assert_eq!(get(&m, "rampart_subscribers"), 1.0);
    assert_eq!(get(&m, "rampart_subscriber_queue_max_messages"), 4.0);
    assert_eq!(get(&m, "rampart_subscriber_queues_near_full"), 1.0);
    let bytes = get(&m, "rampart_subscriber_queue_bytes");
    assert!((4.0 * 5.0..1024.0).contains(&bytes), "{bytes}");

    drop(sub);
    sub_client.close().await;
    scrape_until(&s, "the closed subscription leaves the gauges", |m| {
        get(m, "rampart_subscribers") == 0.0
            && get(m, "rampart_subscriber_queue_messages") == 0.0
            && get(m, "rampart_subscriber_queues_near_full") == 0.0
    })
    .await;
}

/// Consumer lag is the log's end minus the committed position: 10
/// published, 5 acknowledged, 5 behind; all acknowledged, none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_lag_follows_acknowledgements() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_scraped(dir.path(), |_| {}).await;
    create_ledger(&s).await;
    let c = s.client(Transport::Tcp, KEY_ACME).await;
    let jobs: Vec<String> = (0..10).map(|i| format!("job-{i}")).collect();
    c.publish_batch("acme", "prod", "ledger", &jobs)
        .await
        .unwrap();
    let opts = ConsumeOptions {
        start: StartAt::Earliest,
        max_in_flight: 100,
        ack_wait: Duration::from_secs(60),
    };
    let mut sub = c
        .consume("acme", "prod", "ledger", "workers", opts)
        .await
        .unwrap();
    let mut offsets = Vec::new();
    while offsets.len() < 10 {
        let e = next_event(&mut sub, 20).await;
        offsets.push(e.seq);
    }
    sub.ack(&offsets[..5]).await.unwrap();
    let m = scrape_until(&s, "lag 5 after 5 of 10 acknowledged", |m| {
        get(m, "rampart_durable_consumer_lag_messages") == 5.0
    })
    .await;
    assert_eq!(get(&m, "rampart_durable_consumers"), 1.0);
    assert_eq!(get(&m, "rampart_durable_consumer_max_lag_messages"), 5.0);
    sub.ack(&offsets[5..]).await.unwrap();
    scrape_until(&s, "no lag once all are acknowledged", |m| {
        get(m, "rampart_durable_consumer_lag_messages") == 0.0
            && get(m, "rampart_durable_consumer_max_lag_messages") == 0.0
    })
    .await;
}

/// `promtool check metrics` on `text`, if promtool is installed.
fn promtool(text: &str) -> std::io::Result<std::process::Output> {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())?;
    child.wait_with_output()
}

both_transports!(metrics_follow_the_traffic);

/// An admin session keeps one HTTPS connection for all its calls (one
/// handshake in the server's count for 20 calls), driven by the caller's
/// own task. Once the server drops it (its keep-alive bound), the next call
/// fails at once rather than hang, and a new session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_session_keeps_one_connection_until_the_server_drops_it() {
    const IDLE_BOUND_MS: u64 = 1_500;
    let dir = tempfile::tempdir().unwrap();
    let s = start_scraped(dir.path(), |c| c.http_header_timeout_ms = IDLE_BOUND_MS).await;
    let key = "rampart_handshakes_total{transport=\"https\",result=\"ok\"}";
    let handshakes = |m: &HashMap<String, f64>| m.get(key).copied().unwrap_or(0.0);
    let before = handshakes(&scrape(&s).await);
    let admin = s.admin(KEY_ACME);
    let mut session = admin.session().await.unwrap();
    for i in 0..20 {
        let r = session.call("GET", "/v1/auth/whoami", None).await.unwrap();
        assert_eq!(r.status, 200, "call {i}: {}", r.text);
    }
    assert_eq!(handshakes(&scrape(&s).await) - before, 1.0);

    tokio::time::sleep(Duration::from_millis(2 * IDLE_BOUND_MS)).await;
    let next = tokio::time::timeout(
        Duration::from_secs(10),
        session.call("GET", "/v1/auth/whoami", None),
    )
    .await
    .expect("a call on a closed connection ends");
    assert!(next.is_err(), "answered on a connection the server closed");
    let mut again = admin.session().await.unwrap();
    let r = again.call("GET", "/v1/auth/whoami", None).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    s.stop().await;
}
