//! Prometheus metrics: counters the server bumps as things happen (one
//! registry per server, no process-wide state), values read from the
//! server's own state at scrape time, and the listener that serves them on
//! `metrics_bind` at `/metrics` in the Prometheus text format (0.0.4).
//!
//! The listener speaks HTTPS with the server's certificate, and every scrape
//! must prove itself: with `metrics_token_path` set, by the bearer token in
//! that file; otherwise by a client certificate (`tls_client_auth =
//! "require"`). A `metrics_bind` with neither is refused at start.
//!
//! Labels never carry secrets or payloads: transports, methods, reasons,
//! route patterns, status codes and tenant names.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::{prometheus_text, EncodeLabelSet};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::debug;

use crate::Shared;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandshakeLabels {
    transport: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthLabels {
    method: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectLabels {
    code: u16,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabels {
    tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: &'static str,
    route: &'static str,
    status: u16,
}

/// The event counters of one server.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    handshakes: Family<HandshakeLabels, Counter>,
    auth: Family<AuthLabels, Counter>,
    rejections: Family<RejectLabels, Counter>,
    published_msgs: Family<TenantLabels, Counter>,
    published_bytes: Family<TenantLabels, Counter>,
    delivered_msgs: Family<TenantLabels, Counter>,
    delivered_bytes: Family<TenantLabels, Counter>,
    slow_consumer_dropped: Family<TenantLabels, Counter>,
    http: Family<HttpLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("rampart");
        let m = Metrics {
            handshakes: Family::default(),
            auth: Family::default(),
            rejections: Family::default(),
            published_msgs: Family::default(),
            published_bytes: Family::default(),
            delivered_msgs: Family::default(),
            delivered_bytes: Family::default(),
            slow_consumer_dropped: Family::default(),
            http: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "handshakes",
            "TLS and QUIC handshakes by transport (quic, tcp, https) and result (ok, failed, timeout)",
            m.handshakes.clone(),
        );
        registry.register(
            "auth",
            "Authentications by method and result (success, failure)",
            m.auth.clone(),
        );
        registry.register(
            "rejections",
            "Wire requests refused, by NACK code and reason (forbidden, rate_limited, ...)",
            m.rejections.clone(),
        );
        registry.register(
            "published_messages",
            "Messages admitted for publishing (past the rate limits and quotas), by tenant",
            m.published_msgs.clone(),
        );
        registry.register(
            "published_bytes",
            "Entry bytes admitted for publishing, by tenant",
            m.published_bytes.clone(),
        );
        registry.register(
            "delivered_messages",
            "Messages sent to subscribers, by the subscriber's tenant",
            m.delivered_msgs.clone(),
        );
        registry.register(
            "delivered_bytes",
            "Entry bytes sent to subscribers, by the subscriber's tenant",
            m.delivered_bytes.clone(),
        );
        registry.register(
            "slow_consumer_dropped_messages",
            "Messages a subscriber's queue dropped because the subscriber fell behind (drop_oldest policy), by the subscriber's tenant",
            m.slow_consumer_dropped.clone(),
        );
        registry.register(
            "http_requests",
            "HTTPS API requests by method, route pattern and status (vault, Vault-compatible and admin operations)",
            m.http.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    pub(crate) fn handshake(&self, transport: &'static str, result: &'static str) {
        self.handshakes
            .get_or_create(&HandshakeLabels { transport, result })
            .inc();
    }

    pub(crate) fn auth(&self, method: &str, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.auth
            .get_or_create(&AuthLabels {
                method: method.to_string(),
                result,
            })
            .inc();
    }

    pub(crate) fn rejected(&self, code: u16, reason: &'static str) {
        self.rejections
            .get_or_create(&RejectLabels { code, reason })
            .inc();
    }

    pub(crate) fn published(&self, tenant: &str, messages: u64, bytes: u64) {
        let l = TenantLabels {
            tenant: tenant.to_string(),
        };
        self.published_msgs.get_or_create(&l).inc_by(messages);
        self.published_bytes.get_or_create(&l).inc_by(bytes);
    }

    pub(crate) fn delivered(&self, tenant: &str, messages: u64, bytes: u64) {
        let l = TenantLabels {
            tenant: tenant.to_string(),
        };
        self.delivered_msgs.get_or_create(&l).inc_by(messages);
        self.delivered_bytes.get_or_create(&l).inc_by(bytes);
    }

    pub(crate) fn slow_consumer_dropped(&self, tenant: &str, messages: u64) {
        self.slow_consumer_dropped
            .get_or_create(&TenantLabels {
                tenant: tenant.to_string(),
            })
            .inc_by(messages);
    }

    pub(crate) fn http(&self, method: &'static str, route: &'static str, status: u16) {
        self.http
            .get_or_create(&HttpLabels {
                method,
                route,
                status,
            })
            .inc();
    }
}

/// Everything, as the Prometheus text format: the event counters, then the
/// values read now.
pub(crate) fn render(shared: &Shared) -> String {
    let mut out = String::with_capacity(8 << 10);
    // Writing into a String cannot fail.
    let _ = prometheus_text::encode(&mut out, &shared.metrics.registry);

    let mut now = Registry::with_prefix("rampart");
    now.register(
        "connections_open",
        "Wire connections open now (QUIC and TCP, authenticated or not)",
        ConstGauge::new(i64::try_from(shared.open_connections()).unwrap_or(i64::MAX)),
    );
    now.register(
        "quic_retries",
        "Stateless QUIC retries sent (address validation under load)",
        ConstCounter::new(
            shared
                .quic_retries
                .load(std::sync::atomic::Ordering::Relaxed),
        ),
    );
    now.register(
        "tls_certificate_expiry_seconds",
        "Seconds until the served TLS certificate expires (negative once it has)",
        ConstGauge::new(shared.certs.seconds_to_expiry()),
    );
    let a = shared.audit.stats();
    let audit = [
        ("audit_records_written", "Audit records written", a.written),
        ("audit_fsyncs", "Fsyncs of the audit file", a.fsyncs),
        (
            "audit_records_dropped",
            "Best-effort audit records not queued",
            a.dropped,
        ),
        (
            "audit_write_failures",
            "Failed audit batch writes (write or fsync errors)",
            a.failures,
        ),
        (
            "audit_records_lost",
            "Audit records queued but lost with a failed batch",
            a.lost,
        ),
        (
            "audit_unavailable",
            "Operations refused with 503 because their mandatory audit record was not durable in time",
            a.unavailable,
        ),
    ];
    for (name, help, v) in audit {
        now.register(name, help, ConstCounter::new(v));
    }
    now.register(
        "audit_failing",
        "1 while the audit sink is failing (since its last good write), else 0",
        ConstGauge::new(i64::from(a.failing_since_ms.is_some())),
    );
    register_queues(&mut now, shared);
    let _ = prometheus_text::encode(&mut out, &now);
    let h = rampart_log::fsync_latency();
    histogram(
        &mut out,
        "rampart_log_fsync_seconds",
        "Time one fsync of a durable stream's log took.",
        &[("", &h.buckets, h.count, h.sum_secs)],
    );
    let l = shared.audit.latency();
    histogram(
        &mut out,
        "rampart_audit_batch_write_seconds",
        "Time the audit writer took to write one batch of records (its fsync is the fsync thread's).",
        &[(
            "",
            &l.batch_write.buckets,
            l.batch_write.count,
            l.batch_write.sum_secs,
        )],
    );
    histogram(
        &mut out,
        "rampart_audit_fsync_seconds",
        "Time one fsync of the audit log took, covering every batch written before it.",
        &[("", &l.fsync.buckets, l.fsync.count, l.fsync.sum_secs)],
    );
    histogram(
        &mut out,
        "rampart_audit_wait_seconds",
        "Time an operation waited for its audit record: level durable (fsynced: admin, logins) or written (vault reads); refusals at audit_durable_timeout_ms included.",
        &[
            (
                "level=\"durable\"",
                &l.durable_wait.buckets,
                l.durable_wait.count,
                l.durable_wait.sum_secs,
            ),
            (
                "level=\"written\"",
                &l.written_wait.buckets,
                l.written_wait.count,
                l.written_wait.sum_secs,
            ),
        ],
    );
    out
}

/// Subscriber queue depths and durable consumer lag, gathered now by
/// walking the live subscriptions and the consumers: aggregates only, so
/// the number of series does not grow with subscribers or connections,
/// and nothing is counted on the publish path.
fn register_queues(now: &mut Registry, shared: &Shared) {
    let gauge = |v: u64| ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
    let q = shared.broker.queue_depths();
    let queues = [
        (
            "subscribers",
            "Live subscriptions open (readers and consumers of durable streams not included)",
            q.subscribers,
        ),
        (
            "subscriber_queue_messages",
            "Messages waiting in live subscribers' queues, all together",
            q.messages,
        ),
        (
            "subscriber_queue_bytes",
            "Entry bytes waiting in live subscribers' queues, all together",
            q.bytes,
        ),
        (
            "subscriber_queue_max_messages",
            "Messages waiting in the fullest live subscriber queue",
            q.max_messages,
        ),
        (
            "subscriber_queues_near_full",
            "Live subscriber queues at least 3/4 full (subscriber_queue_messages or subscriber_queue_bytes): slow consumers about to hold up publishers (block) or lose messages (drop_oldest)",
            q.near_full,
        ),
    ];
    for (name, help, v) in queues {
        now.register(name, help, gauge(v));
    }
    let (mut consumers, mut lag, mut max_lag) = (0u64, 0u64, 0u64);
    for d in shared.broker.durable_streams() {
        let end = d.next_offset();
        for c in d.consumers() {
            let behind = end.saturating_sub(c.committed);
            consumers += 1;
            lag += behind;
            max_lag = max_lag.max(behind);
        }
    }
    let lags = [
        (
            "durable_consumers",
            "Named consumers of durable streams",
            consumers,
        ),
        (
            "durable_consumer_lag_messages",
            "Messages of durable streams not yet acknowledged by their consumers (the log's end minus the committed position), all consumers together",
            lag,
        ),
        (
            "durable_consumer_max_lag_messages",
            "The lag of the consumer furthest behind",
            max_lag,
        ),
    ];
    for (name, help, v) in lags {
        now.register(name, help, gauge(v));
    }
}

/// One series of a histogram: its labels (`""` for none, else
/// `name="value"` pairs), cumulative buckets, count and sum.
type Series<'a> = (&'a str, &'a [(f64, u64)], u64, f64);

/// Writes a histogram of the latency recorders in `rampart_log` and
/// `rampart_audit` (counted without a metrics library) in the text format.
fn histogram(out: &mut String, name: &str, help: &str, series: &[Series<'_>]) {
    use std::fmt::Write;
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (labels, buckets, count, sum) in series {
        let sep = if labels.is_empty() { "" } else { "," };
        for (le, n) in buckets.iter() {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {n}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// Who may scrape: the SHA-256 of the token in `metrics_token_path`, or
/// nobody but holders of a client certificate (checked by TLS).
#[derive(Clone)]
pub(crate) enum ScrapeAuth {
    Token([u8; 32]),
    ClientCertificate,
}

impl std::fmt::Debug for ScrapeAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScrapeAuth::Token(_) => f.write_str("Token([redacted])"),
            ScrapeAuth::ClientCertificate => f.write_str("ClientCertificate"),
        }
    }
}

impl ScrapeAuth {
    /// Whether a request with this `Authorization` header may scrape.
    fn allows(&self, authorization: Option<&[u8]>) -> bool {
        match self {
            ScrapeAuth::ClientCertificate => true,
            ScrapeAuth::Token(want) => {
                let Some(token) = authorization.and_then(|h| h.strip_prefix(b"Bearer ")) else {
                    return false;
                };
                // Comparing digests: equal time for every token of any length.
                let got = ring::digest::digest(&ring::digest::SHA256, token);
                got.as_ref()
                    .iter()
                    .zip(want)
                    .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                    == 0
            }
        }
    }

    /// The SHA-256 of the first line of `token`, which must not be empty.
    pub(crate) fn token(token: &[u8]) -> Option<ScrapeAuth> {
        let line = token.split(|&b| b == b'\n').next().unwrap_or_default();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return None;
        }
        let mut d = [0u8; 32];
        d.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, line).as_ref());
        Some(ScrapeAuth::Token(d))
    }
}

/// Serves `/metrics` on `listener` until shutdown.
pub(crate) async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    auth: ScrapeAuth,
    shared: Arc<Shared>,
) {
    let mut shutdown = shared.shutdown.clone();
    loop {
        let (stream, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    debug!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let (acceptor, auth, shared) = (acceptor.clone(), auth.clone(), shared.clone());
        tokio::spawn(async move {
            scrape_conn(stream, addr, acceptor, auth, shared).await;
        });
    }
}

async fn scrape_conn(
    stream: tokio::net::TcpStream,
    addr: SocketAddr,
    acceptor: TlsAcceptor,
    auth: ScrapeAuth,
    shared: Arc<Shared>,
) {
    let timeout = Duration::from_millis(shared.config.http_header_timeout_ms);
    let tls = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(t)) => t,
        _ => {
            debug!(peer = %addr, "metrics tls handshake failed");
            return;
        }
    };
    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let (auth, shared) = (auth.clone(), shared.clone());
        async move { Ok::<_, std::convert::Infallible>(answer(&req, &auth, &shared)) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .serve_connection(TokioIo::new(tls), svc);
    let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
}

fn answer<B>(
    req: &hyper::Request<B>,
    auth: &ScrapeAuth,
    shared: &Shared,
) -> hyper::Response<Full<Bytes>> {
    let reply = |status: u16, ctype: &str, body: String| {
        hyper::Response::builder()
            .status(status)
            .header("content-type", ctype)
            .header("cache-control", "no-store")
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default()
    };
    if req.uri().path() != "/metrics" {
        return reply(404, "text/plain", "not found\n".into());
    }
    if req.method() != hyper::Method::GET && req.method() != hyper::Method::HEAD {
        return reply(405, "text/plain", "method not allowed\n".into());
    }
    let authorization = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    if !auth.allows(authorization) {
        let mut r = reply(401, "text/plain", "a bearer token is required\n".into());
        r.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static("Bearer"),
        );
        return r;
    }
    let body = if req.method() == hyper::Method::HEAD {
        String::new()
    } else {
        render(shared)
    };
    reply(200, prometheus_text::CONTENT_TYPE, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_by_their_first_line() {
        let a = ScrapeAuth::token(b"s3cret-token\n").expect("token");
        assert!(a.allows(Some(b"Bearer s3cret-token")));
        assert!(!a.allows(Some(b"Bearer s3cret-tokeN")));
        assert!(!a.allows(Some(b"Bearer ")));
        assert!(!a.allows(Some(b"s3cret-token")));
        assert!(!a.allows(None));
        assert!(ScrapeAuth::token(b"\nsecond").is_none());
        assert!(!format!("{a:?}").contains("s3cret"));
        assert!(ScrapeAuth::ClientCertificate.allows(None));
    }

    #[test]
    fn histograms_render_with_and_without_labels() {
        let buckets = [(0.001, 1), (0.01, 3)];
        let mut out = String::new();
        histogram(
            &mut out,
            "x_seconds",
            "Help.",
            &[
                ("", &buckets, 4, 0.5),
                ("level=\"a\"", &buckets[..1], 1, 0.25),
            ],
        );
        let want = "# HELP x_seconds Help.\n# TYPE x_seconds histogram\n\
            x_seconds_bucket{le=\"0.001\"} 1\nx_seconds_bucket{le=\"0.01\"} 3\n\
            x_seconds_bucket{le=\"+Inf\"} 4\nx_seconds_sum 0.5\nx_seconds_count 4\n\
            x_seconds_bucket{level=\"a\",le=\"0.001\"} 1\n\
            x_seconds_bucket{level=\"a\",le=\"+Inf\"} 1\n\
            x_seconds_sum{level=\"a\"} 0.25\nx_seconds_count{level=\"a\"} 1\n";
        assert_eq!(out, want);
    }

    #[test]
    fn counters_render_with_labels_in_the_text_format() {
        let m = Metrics::default();
        m.handshake("tcp", "ok");
        m.auth("api_key", true);
        m.published("acme", 3, 30);
        m.rejected(403, "forbidden");
        let mut out = String::new();
        prometheus_text::encode(&mut out, &m.registry).expect("encode");
        assert!(
            out.contains("# TYPE rampart_handshakes_total counter"),
            "{out}"
        );
        assert!(out.contains("rampart_handshakes_total{transport=\"tcp\",result=\"ok\"} 1"));
        assert!(out.contains("rampart_auth_total{method=\"api_key\",result=\"success\"} 1"));
        assert!(out.contains("rampart_published_messages_total{tenant=\"acme\"} 3"));
        assert!(out.contains("rampart_published_bytes_total{tenant=\"acme\"} 30"));
        assert!(out.contains("rampart_rejections_total{code=\"403\",reason=\"forbidden\"} 1"));
    }
}
