//! The JetStream sections of `rampart bench compare`.
//!
//! **Durable publish** is `bench durable`'s cells at concurrency 64 beside
//! JetStream: 64 publishers, each with its own connection and one publish
//! in flight, send 128 B messages and wait for each one's acknowledgement
//! before sending the next. Rampart publishes to a durable stream and every
//! ACK must say the durability its sync policy promises; NATS publishes
//! with a reply inbox to a JetStream stream with file storage and one
//! replica and waits for the PubAck (`{"stream":..,"seq":..}`). The figure
//! is acknowledged messages per second; afterwards each side's stream must
//! hold every acknowledged message. Six rows:
//! - Rampart `on_commit` (every ACK [`Durability::Fsynced`]) against
//!   JetStream with its default `sync_interval` (2 min: a PubAck does not
//!   wait for an fsync). This row carries the aim, at least
//!   JetStream's rate, and is not like for like: `on_commit` is bounded by
//!   fsync latency (64 in flight over one fdatasync each round), JetStream
//!   is not;
//! - the same `on_commit` figure against JetStream with `sync_interval:
//!   always` (an fsync on every write before the PubAck), on its own
//!   nats-server and store: both ACKs mean fsynced;
//! - Rampart `interval:`[`INTERVAL_MS`] (every ACK [`Durability::Written`],
//!   fsync in the background) against the default JetStream figure: both
//!   ACKs mean written, not fsynced;
//! - Rampart `on_commit` again, its publishers on bare connections
//!   ([`BareConn`]: the caller's task writes and reads, as the NATS side's
//!   requester does) instead of the client library, against the default
//!   JetStream figure: the same kind of client on both sides;
//! - 64 in flight on **one connection** each side, in runs of their own,
//!   both as their clients' async publish does: one task keeps 64
//!   publishes outstanding and sends the next as each acknowledgement
//!   arrives (Rampart with `Client::publish_async`, NATS with PUBs with
//!   reply subjects, see [`Requester::pipeline`]),
//!   against JetStream with its default `sync_interval`: once with Rampart
//!   `on_commit` (not like for like, as in the first row) and once with
//!   `interval:`[`INTERVAL_MS`] (both ACKs mean written).
//!
//! **Cache** compares Rampart's in-memory cache with a NATS KV bucket (in
//! JetStream memory storage, the closest to an in-memory cache): 16
//! workers, each with its own connection and one request in flight, get
//! and then put 128 B values over 1000 keys written beforehand. A NATS get
//! is a direct get (`$JS.API.DIRECT.GET.KV_<bucket>.$KV.<bucket>.<key>`,
//! answered with `HMSG`), a put a publish to `$KV.<bucket>.<key>` waiting
//! for its PubAck, as the NATS clients' KV API does both.
//!
//! Both sections run one server at a time (Rampart, then NATS), so that
//! neither competes with an idle other for the two cores, and every
//! worker stops at its first error, which the row's details report.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rampart_client::{AdminClient, Client, ClientConfig, Durability};
use rampart_identity::Secret;
use rampart_proto::{AckMode, Message, NamespaceName, Publish, StreamName, TenantId};
use serde::Deserialize;
use tokio::task::JoinHandle;

use super::bare::BareConn;
use super::nats::{tls13_client, BenchCerts, JsSync, NatsServer, Reply, Requester};
use super::{median_run, rounds_detail, Better, Env, Report, Row, TENANT};
use crate::bench::abuse::ChildServer;
use crate::cmd_client::describe;
use crate::Failure;

/// Publishers of the durable section: `bench durable`'s concurrency 64.
const PUBLISHERS: usize = 64;
/// Payload and value size of both sections.
const SIZE: usize = 128;
/// Workers of the cache section.
const WORKERS: usize = 16;
/// Keys of the cache section.
const KEYS: usize = 1000;
/// Starting, connecting, creating streams and pre-filling, on top of the
/// measuring windows.
const SETUP: Duration = Duration::from_secs(30);

/// The Rampart namespace of both sections.
const NAMESPACE: &str = "bench";
/// Rampart's durable stream.
const STREAM: &str = "compare-durable";
/// The background fsync period of Rampart's `interval` stream, in ms, the
/// counterpart of JetStream's default `sync_interval` (whose PubAck does not
/// wait for an fsync either).
const INTERVAL_MS: u64 = 1000;
/// Rampart's cache.
const CACHE: &str = "compare";
/// JetStream's durable stream and its one subject.
const JS_STREAM: &str = "COMPARE_DURABLE";
const JS_SUBJECT: &str = "compare.durable";
/// The NATS KV bucket.
const KV_BUCKET: &str = "compare";

// === measuring ===

/// What closed-loop workers did. A worker stops at its first error.
#[derive(Debug, Default)]
struct Tally {
    /// Operations that completed correctly.
    ops: u64,
    errors: u64,
    first_error: Option<String>,
    /// When the last operation completed.
    end: Option<Instant>,
    /// Rampart's durable section: ACKs that did not say one message with
    /// the durability the stream's sync policy promises (counted in `ops`
    /// too: they were acknowledged).
    weak: u64,
}

impl Tally {
    fn done(&mut self) {
        self.ops += 1;
        self.end = Some(Instant::now());
    }

    fn fail(&mut self, why: String) {
        self.errors += 1;
        self.first_error.get_or_insert(why);
    }

    /// Counts one durable publish's outcome, its ACK's count and
    /// durability or its error; false once it failed (a publisher stops at
    /// its first error).
    fn acked(&mut self, r: Result<(u32, Durability), String>, promised: Durability) -> bool {
        if let Ok((count, durability)) = r {
            if durability != promised || count != 1 {
                self.weak += 1;
            }
        }
        self.record(r.map(|_| ()))
    }

    /// Counts one operation's outcome; false once it failed (a worker stops
    /// at its first error).
    fn record(&mut self, r: Result<(), String>) -> bool {
        match r {
            Ok(()) => {
                self.done();
                true
            }
            Err(why) => {
                self.fail(why);
                false
            }
        }
    }

    fn add(&mut self, o: Tally) {
        self.ops += o.ops;
        self.errors += o.errors;
        self.weak += o.weak;
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
        self.end = self.end.max(o.end);
    }

    /// Operations per second from `start` to the last completion.
    fn rate(&self, start: Instant) -> f64 {
        match self.end {
            Some(end) if end > start && self.ops > 0 => {
                self.ops as f64 / (end - start).as_secs_f64()
            }
            _ => 0.0,
        }
    }

    /// `N errors (first: ...)`, or `0 errors`.
    fn errors_text(&self) -> String {
        match &self.first_error {
            Some(e) => format!("{} errors (first: {e})", self.errors),
            None => format!("{} errors", self.errors),
        }
    }
}

/// Waits for the workers and adds up what they did; each hands back its
/// connection (for the next phase) with its tally.
async fn gather<C>(tasks: Vec<JoinHandle<(C, Tally)>>) -> Result<(Vec<C>, Tally), Failure> {
    let mut conns = Vec::with_capacity(tasks.len());
    let mut all = Tally::default();
    for t in tasks {
        let (c, tally) = t.await.map_err(|e| Failure(e.to_string()))?;
        conns.push(c);
        all.add(tally);
    }
    Ok((conns, all))
}

/// Runs `f` within `busy` (the measuring windows) and [`SETUP`].
async fn bounded<T>(
    what: &str,
    busy: Duration,
    f: impl std::future::Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    super::within(what, busy + SETUP, f).await
}

/// A small xorshift generator: the cache workers' keys, the same sequence
/// on both servers.
struct Keys(u64);

impl Keys {
    fn new(worker: usize) -> Self {
        Keys(0x9e37_79b9_7f4a_7c15 ^ (worker as u64 + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9))
    }

    fn next(&mut self) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % KEYS as u64) as usize
    }
}

// === Rampart ===

/// A bench Rampart server with one API key for [`TENANT`] (its HTTPS API,
/// on a loopback port, creates the durable stream).
struct Rampart {
    server: ChildServer,
    cfg: ClientConfig,
    key: Secret<String>,
}

impl Rampart {
    async fn start() -> Result<Self, Failure> {
        let (server, key) = super::rampart_child(&[]).await?;
        let cfg = server.config(&key);
        Ok(Rampart { server, cfg, key })
    }

    async fn connect(&self, n: usize) -> Result<Vec<Client>, Failure> {
        let url = self.server.url(crate::bench::Net::Tcp);
        let mut clients = Vec::with_capacity(n);
        for _ in 0..n {
            clients.push(
                Client::connect(&url, self.cfg.clone())
                    .await
                    .map_err(describe)?,
            );
        }
        Ok(clients)
    }

    /// `n` bare connections (see [`BareConn`]) over TCP+TLS.
    async fn connect_bare(&self, n: usize) -> Result<Vec<BareConn>, Failure> {
        let addr = self.server.tcp_addr();
        let tls = tls13_client(BenchCerts::get()?.ca_der.clone())?;
        let mut conns = Vec::with_capacity(n);
        for _ in 0..n {
            conns.push(BareConn::connect(addr, tls.clone(), &self.key).await?.0);
        }
        Ok(conns)
    }
}

/// How the durable section's Rampart publishers reach the server.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Publisher {
    /// `rampart_client::Client`, the client library, a connection for
    /// each publisher.
    Library,
    /// One `rampart_client::Client` and one task keeping every publish in
    /// flight on it with `Client::publish_async`, sending the next as each
    /// ACK arrives: a NATS client's async publish.
    OneConnection,
    /// [`BareConn`]: one task per connection writes and reads, like the
    /// NATS side's requester.
    Bare,
}

/// One of the durable section's Rampart publishers: publishes one message
/// and returns its ACK's count and durability, or what went wrong.
trait DurablePublisher: Send + 'static {
    fn publish_one(
        &mut self,
    ) -> impl std::future::Future<Output = Result<(u32, Durability), String>> + Send;
}

/// A publisher on the client library, with a connection of its own.
struct LibraryPublisher {
    client: Client,
    payload: Bytes,
}

impl DurablePublisher for LibraryPublisher {
    async fn publish_one(&mut self) -> Result<(u32, Durability), String> {
        self.client
            .publish(TENANT, NAMESPACE, STREAM, self.payload.clone())
            .await
            .map(|ack| (ack.count, ack.durability))
            .map_err(|e| describe(e).0)
    }
}

/// A publisher on a [`BareConn`].
struct BarePublisher {
    conn: BareConn,
    publish: Publish,
}

impl DurablePublisher for BarePublisher {
    async fn publish_one(&mut self) -> Result<(u32, Durability), String> {
        let f = self
            .conn
            .request(self.publish.clone().into())
            .await
            .map_err(|e| e.0)?;
        match f.msg {
            Message::Ack(a) => Ok((a.count, a.durability)),
            Message::Nack(n) => Err(format!("NACK {}: {}", n.code.as_u16(), n.message)),
            other => Err(format!("not an ACK: {other:?}")),
        }
    }
}

/// Keeps [`PUBLISHERS`] publishes in flight on `client` from this one task
/// for `window` (the next sent as each ACK arrives, oldest first), every
/// ACK checked against `promised`; the tally and the rate of acknowledged
/// messages. Stops sending at the first error.
async fn pipeline_until(
    client: &Client,
    payload: Bytes,
    window: Duration,
    promised: Durability,
) -> (Tally, f64) {
    let start = Instant::now();
    let mut t = Tally::default();
    crate::bench::pipeline_publishes(
        client,
        [TENANT, NAMESPACE, STREAM],
        &payload,
        PUBLISHERS,
        start + window,
        |_, r| {
            let r = r
                .map(|a| (a.count, a.durability))
                .map_err(|e| describe(e).0);
            t.acked(r, promised)
        },
    )
    .await;
    let rate = t.rate(start);
    (t, rate)
}

/// Runs every publisher in its own task for `window`, one publish in
/// flight each, every ACK checked against `promised`; the publishers
/// back, their tally and the rate of acknowledged messages.
async fn publish_until<P: DurablePublisher>(
    pubs: Vec<P>,
    window: Duration,
    promised: Durability,
) -> Result<(Vec<P>, Tally, f64), Failure> {
    let start = Instant::now();
    let deadline = start + window;
    let tasks = pubs
        .into_iter()
        .map(|mut p| {
            tokio::spawn(async move {
                let mut t = Tally::default();
                while Instant::now() < deadline {
                    if !t.acked(p.publish_one().await, promised) {
                        break;
                    }
                }
                (p, t)
            })
        })
        .collect();
    let (pubs, tally) = gather(tasks).await?;
    let rate = tally.rate(start);
    Ok((pubs, tally, rate))
}

/// How the durable section's JetStream publishers send.
#[derive(Clone, Copy, PartialEq, Eq)]
enum JsPublish {
    /// A connection for each publisher, one request in flight on each.
    OneAtATime,
    /// One connection with every publish in flight on it: a NATS client's
    /// async publish (see [`Requester::pipeline`]).
    Async,
}

/// What Rampart's durable run did, and how many messages its stream held
/// afterwards.
struct RampartDurable {
    tally: Tally,
    rate: f64,
    held: Option<u64>,
}

/// Rampart's durable run on a stream with sync policy `sync` (as the
/// server reads it: `on_commit`, `interval:MS`), every ACK of which must say
/// one message with durability `promised`.
async fn rampart_durable(
    r: &Rampart,
    window: Duration,
    sync: &str,
    promised: Durability,
    publisher: Publisher,
) -> Result<RampartDurable, Failure> {
    let https = r
        .server
        .https_url()
        .ok_or_else(|| Failure("the bench server has no HTTPS API".into()))?;
    let admin = AdminClient::new(&https, &r.cfg).map_err(describe)?;
    let streams = format!("/v1/tenants/{TENANT}/namespaces/{NAMESPACE}/streams");
    let body = serde_json::json!({ "name": STREAM, "durable": true, "sync": sync });
    let resp = admin
        .call("POST", &streams, Some(&body))
        .await
        .map_err(describe)?;
    if resp.status != 201 {
        return Err(Failure(format!(
            "creating durable stream {STREAM} (sync {sync}): HTTP {}: {}",
            resp.status,
            resp.error()
        )));
    }
    let payload = Bytes::from(vec![0x5au8; SIZE]);
    let (tally, rate) = match publisher {
        Publisher::Library => {
            let pubs = r
                .connect(PUBLISHERS)
                .await?
                .into_iter()
                .map(|client| LibraryPublisher {
                    client,
                    payload: payload.clone(),
                })
                .collect();
            let (pubs, tally, rate) = publish_until(pubs, window, promised).await?;
            for p in pubs {
                p.client.close().await;
            }
            (tally, rate)
        }
        Publisher::OneConnection => {
            let client = r.connect(1).await?.remove(0);
            let (tally, rate) = pipeline_until(&client, payload, window, promised).await;
            client.close().await;
            (tally, rate)
        }
        Publisher::Bare => {
            let publish = Publish {
                ack: AckMode::Message,
                tenant: TenantId::parse(TENANT).map_err(|e| Failure(e.to_string()))?,
                namespace: NamespaceName::parse(NAMESPACE).map_err(|e| Failure(e.to_string()))?,
                stream: StreamName::parse(STREAM).map_err(|e| Failure(e.to_string()))?,
                payload,
            };
            let pubs = r
                .connect_bare(PUBLISHERS)
                .await?
                .into_iter()
                .map(|conn| BarePublisher {
                    conn,
                    publish: publish.clone(),
                })
                .collect();
            let (_, tally, rate) = publish_until(pubs, window, promised).await?;
            (tally, rate)
        }
    };
    // Every acknowledged message is in the stream's log.
    let resp = admin
        .call("GET", &format!("{streams}/{STREAM}"), None)
        .await
        .map_err(describe)?;
    let held = (resp.status == 200)
        .then(|| resp.body["next_offset"].as_u64())
        .flatten();
    Ok(RampartDurable { tally, rate, held })
}

/// Rampart's cache: the keys written, then a window of gets and a window
/// of puts; the rates of both.
async fn rampart_cache(r: &Rampart, window: Duration) -> Result<[(Tally, f64); 2], Failure> {
    let keys: Arc<Vec<String>> = Arc::new((0..KEYS).map(|i| format!("k{i:04}")).collect());
    let value = Bytes::from(vec![0xabu8; SIZE]);
    let mut clients = r.connect(WORKERS).await?;
    for k in keys.iter() {
        clients[0]
            .cache_put(TENANT, NAMESPACE, CACHE, k, value.clone(), None)
            .await
            .map_err(describe)?;
    }
    let mut out = Vec::new();
    for put in [false, true] {
        let start = Instant::now();
        let deadline = start + window;
        let tasks = clients
            .into_iter()
            .enumerate()
            .map(|(w, client)| {
                let (keys, value) = (keys.clone(), value.clone());
                tokio::spawn(async move {
                    let mut t = Tally::default();
                    let mut pick = Keys::new(w);
                    while Instant::now() < deadline {
                        let key = &keys[pick.next()];
                        let r = if put {
                            client
                                .cache_put(TENANT, NAMESPACE, CACHE, key, value.clone(), None)
                                .await
                                .map(|()| Ok(()))
                        } else {
                            client
                                .cache_get(TENANT, NAMESPACE, CACHE, key)
                                .await
                                .map(|v| match v {
                                    Some(v) if v.len() == SIZE => Ok(()),
                                    Some(v) => Err(format!("{key}: a value of {} B", v.len())),
                                    None => Err(format!("{key}: missing")),
                                })
                        };
                        if !t.record(r.map_err(|e| describe(e).0).and_then(|r| r)) {
                            break;
                        }
                    }
                    (client, t)
                })
            })
            .collect();
        let (back, tally) = gather(tasks).await?;
        clients = back;
        let rate = tally.rate(start);
        out.push((tally, rate));
    }
    for c in clients {
        c.close().await;
    }
    let [get, put]: [(Tally, f64); 2] = out
        .try_into()
        .map_err(|_| Failure("two cache phases".into()))?;
    Ok([get, put])
}

// === NATS ===

/// A JetStream API error, as the server words it.
#[derive(Debug, Deserialize)]
struct ApiError {
    #[serde(default)]
    code: u16,
    #[serde(default)]
    description: String,
}

/// A PubAck; only what is checked.
#[derive(Debug, Deserialize)]
struct PubAck {
    seq: Option<u64>,
    error: Option<ApiError>,
}

/// Checks that `reply` is a PubAck with a sequence number.
fn pub_ack(reply: &Reply) -> Result<(), String> {
    if let Some(status) = reply.status() {
        return Err(format!("a reply with status {status} instead of a PubAck"));
    }
    match serde_json::from_slice::<PubAck>(&reply.payload) {
        Ok(PubAck { error: Some(e), .. }) => {
            Err(format!("PubAck error {}: {}", e.code, e.description))
        }
        Ok(PubAck { seq: Some(_), .. }) => Ok(()),
        Ok(_) => Err("a PubAck without seq".into()),
        Err(e) => Err(format!("not a PubAck ({e})")),
    }
}

/// A JetStream API request (`$JS.API.<what>`) with a JSON body; the
/// response, or its error.
async fn js_api(
    r: &mut Requester,
    what: &str,
    body: &serde_json::Value,
) -> Result<serde_json::Value, Failure> {
    let reply = r
        .request(&format!("$JS.API.{what}"), body.to_string().as_bytes())
        .await?;
    if let Some(status) = reply.status() {
        return Err(Failure(format!(
            "JetStream API {what}: status {status} (503: JetStream not answering)"
        )));
    }
    let v: serde_json::Value = serde_json::from_slice(&reply.payload)
        .map_err(|e| Failure(format!("JetStream API {what}: not JSON ({e})")))?;
    if let Some(e) = v.get("error") {
        return Err(Failure(format!("JetStream API {what}: {e}")));
    }
    Ok(v)
}

/// The JetStream stream of the durable section: file storage, one replica,
/// limits retention, no limits.
fn durable_stream_config() -> serde_json::Value {
    serde_json::json!({
        "name": JS_STREAM,
        "subjects": [JS_SUBJECT],
        "retention": "limits",
        "storage": "file",
        "num_replicas": 1,
        "discard": "old",
        "max_msgs": -1,
        "max_bytes": -1,
        "max_age": 0,
        "max_msg_size": -1,
        "max_consumers": -1,
    })
}

/// The stream of a KV bucket as the NATS clients create one (history 1, no
/// TTL, no size limits), in memory storage.
fn kv_stream_config(bucket: &str) -> serde_json::Value {
    serde_json::json!({
        "name": format!("KV_{bucket}"),
        "subjects": [format!("$KV.{bucket}.>")],
        "retention": "limits",
        "storage": "memory",
        "num_replicas": 1,
        "discard": "new",
        "max_msgs": -1,
        "max_bytes": -1,
        "max_age": 0,
        "max_msg_size": -1,
        "max_consumers": -1,
        "max_msgs_per_subject": 1,
        "duplicate_window": 120_000_000_000u64,
        "allow_rollup_hdrs": true,
        "deny_delete": true,
        "allow_direct": true,
    })
}

/// What JetStream's durable run did, and how many messages its stream held
/// afterwards.
struct NatsDurable {
    tally: Tally,
    rate: f64,
    held: Option<u64>,
}

async fn nats_durable(
    nats: &NatsServer,
    window: Duration,
    how: JsPublish,
) -> Result<NatsDurable, Failure> {
    let mut admin = nats.requester().await?;
    js_api(
        &mut admin,
        &format!("STREAM.CREATE.{JS_STREAM}"),
        &durable_stream_config(),
    )
    .await?;
    let conns = match how {
        JsPublish::OneAtATime => PUBLISHERS,
        JsPublish::Async => 1,
    };
    let mut pubs = Vec::with_capacity(conns);
    for _ in 0..conns {
        pubs.push(nats.requester().await?);
    }
    let payload = Bytes::from(vec![0x5au8; SIZE]);
    let start = Instant::now();
    let deadline = start + window;
    let tasks = pubs
        .into_iter()
        .map(|mut r| {
            let payload = payload.clone();
            tokio::spawn(async move {
                let mut t = Tally::default();
                match how {
                    JsPublish::OneAtATime => {
                        while Instant::now() < deadline {
                            let acked = r.request(JS_SUBJECT, &payload).await;
                            let acked = acked.map_err(|e| e.0);
                            if !t.record(acked.and_then(|reply| pub_ack(&reply))) {
                                break;
                            }
                        }
                    }
                    JsPublish::Async => {
                        let on_reply = |reply: Reply| t.record(pub_ack(&reply));
                        let sent = r
                            .pipeline(JS_SUBJECT, &payload, PUBLISHERS, deadline, on_reply)
                            .await;
                        if let Err(e) = sent {
                            t.fail(e.0);
                        }
                    }
                }
                (r, t)
            })
        })
        .collect();
    let (_, tally) = gather(tasks).await?;
    let rate = tally.rate(start);
    let info = js_api(
        &mut admin,
        &format!("STREAM.INFO.{JS_STREAM}"),
        &serde_json::json!({}),
    )
    .await?;
    let held = info["state"]["messages"].as_u64();
    Ok(NatsDurable { tally, rate, held })
}

/// NATS KV: the bucket created and the keys written, then a window of
/// direct gets and a window of puts; the rates of both.
async fn nats_cache(nats: &NatsServer, window: Duration) -> Result<[(Tally, f64); 2], Failure> {
    let mut admin = nats.requester().await?;
    js_api(
        &mut admin,
        &format!("STREAM.CREATE.KV_{KV_BUCKET}"),
        &kv_stream_config(KV_BUCKET),
    )
    .await?;
    // The subjects, formatted once.
    let puts: Arc<Vec<String>> = Arc::new(
        (0..KEYS)
            .map(|i| format!("$KV.{KV_BUCKET}.k{i:04}"))
            .collect(),
    );
    let gets: Arc<Vec<String>> = Arc::new(
        puts.iter()
            .map(|s| format!("$JS.API.DIRECT.GET.KV_{KV_BUCKET}.{s}"))
            .collect(),
    );
    let value = Bytes::from(vec![0xabu8; SIZE]);
    for s in puts.iter() {
        let reply = admin.request(s, &value).await?;
        pub_ack(&reply).map_err(|e| Failure(format!("NATS KV put {s}: {e}")))?;
    }
    let mut workers = Vec::with_capacity(WORKERS);
    for _ in 0..WORKERS {
        workers.push(nats.requester().await?);
    }
    let mut out = Vec::new();
    for put in [false, true] {
        let start = Instant::now();
        let deadline = start + window;
        let tasks = workers
            .into_iter()
            .enumerate()
            .map(|(w, mut r)| {
                let (puts, gets, value) = (puts.clone(), gets.clone(), value.clone());
                tokio::spawn(async move {
                    let mut t = Tally::default();
                    let mut pick = Keys::new(w);
                    while Instant::now() < deadline {
                        let k = pick.next();
                        let outcome = if put {
                            r.request(&puts[k], &value)
                                .await
                                .map(|reply| pub_ack(&reply))
                        } else {
                            r.request(&gets[k], b"").await.map(|reply| {
                                match (reply.status(), &reply.headers) {
                                    (None, Some(_)) if reply.payload.len() == SIZE => Ok(()),
                                    (None, Some(_)) => Err(format!(
                                        "{}: a value of {} B",
                                        puts[k],
                                        reply.payload.len()
                                    )),
                                    (Some(404), _) => Err(format!("{}: missing (404)", puts[k])),
                                    (Some(s), _) => Err(format!("{}: status {s}", puts[k])),
                                    (None, None) => Err(format!(
                                        "{}: a reply without headers: {}",
                                        puts[k],
                                        String::from_utf8_lossy(&reply.payload)
                                    )),
                                }
                            })
                        };
                        if !t.record(outcome.map_err(|e| e.0).and_then(|r| r)) {
                            break;
                        }
                    }
                    (r, t)
                })
            })
            .collect();
        let (back, tally) = gather(tasks).await?;
        workers = back;
        let rate = tally.rate(start);
        out.push((tally, rate));
    }
    let [get, put]: [(Tally, f64); 2] = out
        .try_into()
        .map_err(|_| Failure("two cache phases".into()))?;
    Ok([get, put])
}

// === the sections ===

/// `N acked, ...`: a durable row's detail.
fn durable_detail(t: &Tally, held: Option<u64>, what: &str) -> String {
    let mut s = format!("{} acked{what}, {}", t.ops, t.errors_text());
    match held {
        Some(h) if h == t.ops => s += &format!(", stream holds all {h}"),
        Some(h) => s += &format!(", stream holds {h} (NOT every acked message)"),
        None => s += ", stream size unknown",
    }
    s
}

/// `, all Fsynced` or `, N NOT Written`: what a Rampart durable row's ACKs
/// said against what its sync policy promises.
fn promised_text(t: &Tally, promised: Durability) -> String {
    // `fsynced` -> `Fsynced`, as the ACK's durability is spelled elsewhere.
    let name = promised.as_str();
    let word = name[..1].to_ascii_uppercase() + &name[1..];
    if t.weak == 0 {
        format!(", all {word}")
    } else {
        format!(", {} NOT {word}", t.weak)
    }
}

/// Whether a durable row's terms held: no errors on either side, every
/// Rampart ACK as promised, and both streams holding every acknowledged
/// message, in every round. Errors on either side make the ratio
/// meaningless.
fn durable_clean(r: &[RampartDurable], n: &[NatsDurable]) -> bool {
    r.iter()
        .all(|r| r.tally.errors == 0 && r.tally.weak == 0 && r.held == Some(r.tally.ops))
        && n.iter()
            .all(|n| n.tally.errors == 0 && n.held == Some(n.tally.ops))
}

/// One Rampart durable run on its own server (and store): a stream with
/// sync policy `sync`, every ACK of which must say `promised`.
async fn rampart_durable_run(
    window: Duration,
    sync: &str,
    promised: Durability,
    publisher: Publisher,
) -> Result<RampartDurable, Failure> {
    let what = match publisher {
        Publisher::Library => format!("Rampart durable publish (sync {sync})"),
        Publisher::Bare => format!("Rampart durable publish (sync {sync}, bare connections)"),
        Publisher::OneConnection => {
            format!("Rampart durable publish (sync {sync}, one connection)")
        }
    };
    let rampart = Rampart::start().await?;
    let r = bounded(
        &what,
        window,
        rampart_durable(&rampart, window, sync, promised, publisher),
    )
    .await;
    rampart.server.stop().await;
    let r = r?;
    eprintln!(
        "bench: {what}: {:.0} msg/s, {}{}",
        r.rate,
        r.tally.errors_text(),
        promised_text(&r.tally, promised)
    );
    Ok(r)
}

/// One JetStream durable run on its own nats-server (and store), with
/// `sync_interval` as `sync` says; what it did, and the server's version.
async fn nats_durable_run(
    bin: &std::path::Path,
    window: Duration,
    sync: JsSync,
    how: JsPublish,
) -> Result<(NatsDurable, String), Failure> {
    let what = match (sync, how) {
        (JsSync::Default, JsPublish::OneAtATime) => "default sync_interval",
        (JsSync::Always, JsPublish::OneAtATime) => "sync_interval always",
        (JsSync::Default, JsPublish::Async) => "default sync_interval, async on one connection",
        (JsSync::Always, JsPublish::Async) => "sync_interval always, async on one connection",
    };
    let nats = NatsServer::start_jetstream_with(bin, sync).await?;
    let version = nats.version.clone();
    let n = bounded(
        &format!("NATS JetStream durable publish ({what})"),
        window,
        nats_durable(&nats, window, how),
    )
    .await;
    nats.stop().await;
    let n = n?;
    eprintln!(
        "bench: NATS JetStream durable publish ({what}): {:.0} msg/s, {}",
        n.rate,
        n.tally.errors_text()
    );
    Ok((n, version))
}

/// The durable section: 64 acknowledged publishers in flight, one server
/// at a time, in six rows:
/// - Rampart `on_commit` against JetStream (file, R1) with its default
///   `sync_interval` (2 min: a PubAck does not mean fsynced): the issue's
///   aim, at least JetStream's rate; not like for like, since `on_commit`
///   is bounded by fsync latency and the default JetStream is not;
/// - the same `on_commit` figure against JetStream with `sync_interval:
///   always`, on its own nats-server and store: both sides fsync before
///   acknowledging;
/// - Rampart `interval:`[`INTERVAL_MS`] (ACKs [`Durability::Written`], fsync
///   in the background) against the default JetStream figure: neither side
///   fsyncs before acknowledging;
/// - `on_commit` again, with [`Publisher::Bare`] connections, against the
///   default JetStream figure: the same kind of client as the NATS side's;
/// - `on_commit` and `interval:`[`INTERVAL_MS`] with
///   [`Publisher::OneConnection`] against JetStream's async publish on one
///   connection ([`JsPublish::Async`]), default `sync_interval`.
pub(super) async fn durable(env: &mut Env, report: &mut Report) -> Result<(), Failure> {
    let nats_bin = env.nats_bin()?;
    let window = env.window;
    let interval = format!("interval:{INTERVAL_MS}");

    let rounds = env.rounds;
    let (mut on_commit, mut js_default, mut bare, mut rampart_interval, mut js_always) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut one_conn, mut one_conn_interval, mut js_async) = (Vec::new(), Vec::new(), Vec::new());
    let mut version = String::new();
    for round in 1..=rounds {
        eprintln!("bench: durable round {round} of {rounds}");
        on_commit.push(
            rampart_durable_run(window, "on_commit", Durability::Fsynced, Publisher::Library)
                .await?,
        );
        let (n, v) =
            nats_durable_run(&nats_bin, window, JsSync::Default, JsPublish::OneAtATime).await?;
        js_default.push(n);
        version = v;
        bare.push(
            rampart_durable_run(window, "on_commit", Durability::Fsynced, Publisher::Bare).await?,
        );
        rampart_interval.push(
            rampart_durable_run(window, &interval, Durability::Written, Publisher::Library).await?,
        );
        js_always.push(
            nats_durable_run(&nats_bin, window, JsSync::Always, JsPublish::OneAtATime)
                .await?
                .0,
        );
        one_conn.push(
            rampart_durable_run(
                window,
                "on_commit",
                Durability::Fsynced,
                Publisher::OneConnection,
            )
            .await?,
        );
        one_conn_interval.push(
            rampart_durable_run(
                window,
                &interval,
                Durability::Written,
                Publisher::OneConnection,
            )
            .await?,
        );
        js_async.push(
            nats_durable_run(&nats_bin, window, JsSync::Default, JsPublish::Async)
                .await?
                .0,
        );
    }

    report.note(format!(
        "durable publish: Rampart (child `rampart server --dev`, API key, TLS 1.3 over TCP; \
         audit on and payloads sealed at rest, the defaults) gets {PUBLISHERS} publishers, each \
         with its own connection and one publish in flight (PUBLISH with AckMode::Message, the \
         next one after its ACK), on a durable stream; {version} ({}, token, TLS 1.3) with \
         JetStream, a stream with file storage and one replica, gets {PUBLISHERS} publishers, \
         each with its own connection, publishing with a reply inbox and waiting for the \
         PubAck before the next (JetStream's acknowledged publish, one at a time per \
         publisher): {PUBLISHERS} in flight on both sides; {SIZE} B payloads; msg/s = \
         acknowledged messages per second over {} s; afterwards each stream must hold every \
         acknowledged message. One server at a time, each with its own store; {rounds} \
         round(s) of the eight runs below, in this order, each figure the median of its \
         rounds (every round's figure in the detail; every round must be clean). Six rows: \
         (1) the issue's aim, at least JetStream's rate: Rampart sync `on_commit` (fsync \
         before the ACK, shared by concurrent publishers; every ACK must say Fsynced) against \
         JetStream with its default sync_interval (2 min: a PubAck does not wait for an \
         fsync); not like for like: on_commit is bounded by fsync latency ({PUBLISHERS} in \
         flight over one fdatasync per commit), the default JetStream is not; (2) the same \
         on_commit figure against JetStream started with `sync_interval: always` (an fsync on \
         every write before the PubAck): both ACKs mean fsynced; (3) Rampart sync \
         `{interval}` (the ACK after the write to the page cache, fsync every {INTERVAL_MS} \
         ms in the background; every ACK must say Written) against the default JetStream \
         figure of (1): both ACKs mean written, not fsynced; (4) as (1), with Rampart's \
         publishers on bare connections (one task per connection writes each PUBLISH and \
         reads its ACK, as the NATS side's publishers do) instead of the client library \
         (whose writer and reader tasks cost each round trip two task hand-offs in the \
         bench's process, which shares the cores with the server): the same kind of client \
         on both sides; (5) {PUBLISHERS} in flight on one connection each side, as both \
         sides' clients publish asynchronously (one task keeps {PUBLISHERS} publishes \
         outstanding and sends the next as each acknowledgement arrives): Rampart on_commit \
         with the client library's `publish_async`, against JetStream's async publish as \
         NATS clients send it (`PublishAsync` with {PUBLISHERS} pending: PUBs with reply \
         subjects), default sync_interval: not like for like, as in (1); (6) as (5), with \
         Rampart sync `{interval}`: both ACKs mean written; (5) and (6) are the last three \
         runs of each round (Rampart on_commit, Rampart {interval}, JetStream)",
        nats_bin.display(),
        window.as_secs()
    ));

    let row = |workload: String,
               r: &[RampartDurable],
               promised: Durability,
               peer: &str,
               n: &[NatsDurable],
               peer_what: &str,
               aim: Option<f64>| {
        let ((rm, r_rates), (nm, n_rates)) = (median_run(r, |x| x.rate), median_run(n, |x| x.rate));
        Row {
            section: "durable publish".into(),
            workload,
            unit: "msg/s",
            better: Better::Higher,
            rampart: rm.rate,
            peer: peer.into(),
            peer_value: nm.rate,
            rampart_detail: format!(
                "{}{}",
                durable_detail(&rm.tally, rm.held, &promised_text(&rm.tally, promised)),
                rounds_detail(&r_rates, "msg/s")
            ),
            peer_detail: format!(
                "{}{}",
                durable_detail(&nm.tally, nm.held, peer_what),
                rounds_detail(&n_rates, "msg/s")
            ),
            aim,
            aim_terms_held: durable_clean(r, n),
        }
    };
    report.rows.push(row(
        format!("{PUBLISHERS} in flight, {SIZE} B"),
        &on_commit,
        Durability::Fsynced,
        "NATS JetStream (file, R1)",
        &js_default,
        " (PubAck)",
        Some(1.0),
    ));
    report.rows.push(row(
        format!("{PUBLISHERS} in flight, {SIZE} B: on_commit"),
        &on_commit,
        Durability::Fsynced,
        "NATS JetStream (file, R1, sync always)",
        &js_always,
        " (PubAck, sync always)",
        None,
    ));
    report.rows.push(row(
        format!("{PUBLISHERS} in flight, {SIZE} B: {interval}"),
        &rampart_interval,
        Durability::Written,
        "NATS JetStream (file, R1)",
        &js_default,
        " (PubAck, default sync_interval)",
        None,
    ));
    report.rows.push(row(
        format!("{PUBLISHERS} in flight, {SIZE} B: on_commit, bare"),
        &bare,
        Durability::Fsynced,
        "NATS JetStream (file, R1)",
        &js_default,
        " (PubAck)",
        None,
    ));
    report.rows.push(row(
        format!("{PUBLISHERS} in flight on one connection, {SIZE} B: on_commit"),
        &one_conn,
        Durability::Fsynced,
        "NATS JetStream (file, R1, async publish)",
        &js_async,
        " (PubAck, async publish)",
        None,
    ));
    report.rows.push(row(
        format!("{PUBLISHERS} in flight on one connection, {SIZE} B: {interval}"),
        &one_conn_interval,
        Durability::Written,
        "NATS JetStream (file, R1, async publish)",
        &js_async,
        " (PubAck, async publish)",
        None,
    ));
    Ok(())
}

/// The cache section: gets and puts on Rampart's cache and on NATS KV.
pub(super) async fn cache(env: &mut Env, report: &mut Report) -> Result<(), Failure> {
    let nats_bin = env.nats_bin()?;
    let window = env.window;
    let busy = window * 2;

    let rampart = Rampart::start().await?;
    let r = bounded("Rampart cache", busy, rampart_cache(&rampart, window)).await;
    rampart.server.stop().await;
    let r = r?;

    let nats = NatsServer::start_jetstream(&nats_bin).await?;
    report.note(format!(
        "cache: Rampart's in-memory cache (child `rampart server --dev`, API key, TLS 1.3 over \
         TCP; cache_get / cache_put, no TTL) against NATS KV on {} ({}, token, TLS 1.3): a \
         bucket made as the NATS clients make one (stream KV_{KV_BUCKET}, subjects \
         $KV.{KV_BUCKET}.>, history 1, allow_direct) in JetStream memory storage, the closest \
         to Rampart's in-memory cache; NATS get = direct get \
         ($JS.API.DIRECT.GET.KV_{KV_BUCKET}.$KV.{KV_BUCKET}.<key>, answered with HMSG), put = \
         publish to $KV.{KV_BUCKET}.<key> with a reply inbox, waiting for the PubAck; \
         {WORKERS} workers, each with its own connection and one request in flight; {SIZE} B \
         values over {KEYS} keys, all written first; {} s of gets, then {} s of puts, keys \
         drawn at random (the same sequence on both sides); ops/s = completed requests per \
         second",
        nats.version,
        nats_bin.display(),
        window.as_secs(),
        window.as_secs()
    ));
    let n = bounded("NATS KV", busy, nats_cache(&nats, window)).await;
    nats.stop().await;
    let n = n?;

    for (i, what) in ["get", "put"].into_iter().enumerate() {
        let ((rt, rr), (nt, nr)) = (&r[i], &n[i]);
        eprintln!(
            "bench: cache {what}: Rampart {rr:.0} ops/s ({}), NATS KV {nr:.0} ops/s ({})",
            rt.errors_text(),
            nt.errors_text()
        );
        report.rows.push(Row {
            section: "cache".into(),
            workload: format!("{what} {SIZE} B, {WORKERS} workers"),
            unit: "ops/s",
            better: Better::Higher,
            rampart: *rr,
            peer: "NATS KV".into(),
            peer_value: *nr,
            rampart_detail: format!("{} {what}s, {}", rt.ops, rt.errors_text()),
            peer_detail: format!("{} {what}s, {}", nt.ops, nt.errors_text()),
            aim: None,
            aim_terms_held: rt.errors == 0 && nt.errors == 0,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_adds_up_and_rates_to_the_last_completion() {
        let start = Instant::now();
        let mut a = Tally {
            ops: 100,
            end: Some(start + Duration::from_secs(2)),
            ..Tally::default()
        };
        let mut b = Tally::default();
        b.fail("first".into());
        b.fail("second".into());
        b.weak = 1;
        b.ops = 50;
        b.end = Some(start + Duration::from_secs(3));
        a.add(b);
        assert_eq!((a.ops, a.errors, a.weak), (150, 2, 1));
        assert!((a.rate(start) - 50.0).abs() < 1e-9);
        assert_eq!(a.errors_text(), "2 errors (first: first)");
        assert_eq!(Tally::default().rate(start), 0.0);
        assert_eq!(Tally::default().errors_text(), "0 errors");
    }

    #[test]
    fn keys_spread_over_the_key_space_the_same_way_every_time() {
        let mut k = Keys::new(3);
        let mut seen = vec![0u32; KEYS];
        for _ in 0..100_000 {
            seen[k.next()] += 1;
        }
        assert!(seen.iter().all(|&n| n > 0), "every key drawn");
        let (a, b): (Vec<usize>, Vec<usize>) = {
            let (mut x, mut y) = (Keys::new(5), Keys::new(5));
            (
                (0..10).map(|_| x.next()).collect(),
                (0..10).map(|_| y.next()).collect(),
            )
        };
        assert_eq!(a, b);
        assert_ne!(Keys::new(0).next(), Keys::new(1).next());
    }

    #[test]
    fn pub_acks_and_errors() {
        let reply = |p: &'static [u8]| Reply {
            headers: None,
            payload: Bytes::from_static(p),
        };
        assert_eq!(pub_ack(&reply(b"{\"stream\":\"S\",\"seq\":7}")), Ok(()));
        assert_eq!(
            pub_ack(&reply(b"{\"stream\":\"S\",\"seq\":8,\"duplicate\":true}")),
            Ok(())
        );
        let e = pub_ack(&reply(
            b"{\"error\":{\"code\":503,\"err_code\":10077,\"description\":\"maximum messages exceeded\"}}",
        ))
        .unwrap_err();
        assert!(e.contains("503") && e.contains("maximum messages"), "{e}");
        assert!(pub_ack(&reply(b"{\"stream\":\"S\"}")).is_err());
        assert!(pub_ack(&reply(b"nope")).is_err());
        let no_responders = Reply {
            headers: Some(Bytes::from_static(b"NATS/1.0 503\r\n\r\n")),
            payload: Bytes::new(),
        };
        assert!(pub_ack(&no_responders).unwrap_err().contains("503"));
    }

    #[test]
    fn stream_configs_are_file_r1_and_a_memory_kv_bucket() {
        let d = durable_stream_config();
        assert_eq!(d["storage"], "file");
        assert_eq!(d["num_replicas"], 1);
        assert_eq!(d["subjects"][0], JS_SUBJECT);
        let kv = kv_stream_config("b");
        assert_eq!(kv["name"], "KV_b");
        assert_eq!(kv["subjects"][0], "$KV.b.>");
        assert_eq!(kv["storage"], "memory");
        assert_eq!(kv["max_msgs_per_subject"], 1);
        assert_eq!(kv["allow_direct"], true);
    }

    #[test]
    fn durable_details_say_what_the_stream_holds() {
        let t = Tally {
            ops: 10,
            ..Tally::default()
        };
        assert_eq!(
            durable_detail(&t, Some(10), ", all Fsynced"),
            "10 acked, all Fsynced, 0 errors, stream holds all 10"
        );
        assert!(durable_detail(&t, Some(9), "").contains("NOT every"));
        assert!(durable_detail(&t, None, "").contains("unknown"));
    }

    #[test]
    fn durable_rows_require_the_promised_durability() {
        let mut t = Tally {
            ops: 10,
            ..Tally::default()
        };
        assert_eq!(promised_text(&t, Durability::Fsynced), ", all Fsynced");
        assert_eq!(promised_text(&t, Durability::Written), ", all Written");
        t.weak = 3;
        assert_eq!(promised_text(&t, Durability::Written), ", 3 NOT Written");
        let r = |weak, held| RampartDurable {
            tally: Tally {
                ops: 10,
                weak,
                ..Tally::default()
            },
            rate: 1.0,
            held,
        };
        let n = |held| NatsDurable {
            tally: Tally {
                ops: 10,
                ..Tally::default()
            },
            rate: 1.0,
            held,
        };
        let clean = || [r(0, Some(10)), r(0, Some(10))];
        assert!(durable_clean(&clean(), &[n(Some(10))]));
        assert!(!durable_clean(&[r(1, Some(10))], &[n(Some(10))]));
        assert!(!durable_clean(&[r(0, Some(9))], &[n(Some(10))]));
        assert!(!durable_clean(&[r(0, Some(10))], &[n(None)]));
        // One bad round of several spoils the row.
        assert!(!durable_clean(
            &[r(0, Some(10)), r(0, Some(9)), r(0, Some(10))],
            &[n(Some(10))]
        ));
        assert!(!durable_clean(&clean(), &[n(Some(10)), n(None)]));
    }

    #[test]
    fn a_durable_row_reports_its_median_round_and_lists_them_all() {
        let run = |rate, ops| NatsDurable {
            tally: Tally {
                ops,
                ..Tally::default()
            },
            rate,
            held: Some(ops),
        };
        let runs = [run(60000.0, 6), run(41000.0, 4), run(52000.0, 5)];
        let (m, rates) = median_run(&runs, |r| r.rate);
        assert_eq!((m.rate, m.tally.ops), (52000.0, 5));
        assert_eq!(
            rounds_detail(&rates, "msg/s"),
            "; rounds: 60000 / 41000 / 52000 msg/s"
        );
    }
}
