//! The core pub/sub sections of `rampart bench compare`.
//!
//! **Throughput** follows `nats bench`: N publishers publish to one subject
//! (stream) as fast as they can without acknowledgements, M subscribers
//! each receive every message; the delivered messages per second of all
//! subscribers are summed and loss is `published x subscribers -
//! delivered`. Rampart runs over TCP+TLS and over QUIC, NATS over TLS.
//!
//! **Latency** is 1->1 with 128 B messages at fixed offered rates (a share
//! of NATS's best 1->1 rate in the same run). The publisher sends on a
//! schedule, each message stamped with the time the schedule meant it to
//! leave, and the subscriber records arrival minus that time in an
//! HdrHistogram: a publisher held up by a slow server does not hide the
//! wait (coordinated omission). Both clients send one message per PUBLISH
//! frame or PUB, written together once per millisecond tick.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use rampart_client::{AckMode, Client, ClientConfig};
use tokio::sync::watch;

use super::nats::{NatsConn, NatsEvents, NatsServer, NatsSub, NATS_WRITE};
use super::{median_of, rounds_detail, Better, Env, Report, Row, TENANT};
use crate::bench::abuse::ChildServer;
use crate::bench::Net;
use crate::cmd_client::describe;
use crate::Failure;

/// How long subscribers may keep receiving after the publishers stopped.
const DRAIN: Duration = Duration::from_secs(3);
/// Connecting and subscribing, on top of the window and [`DRAIN`].
const SETUP: Duration = Duration::from_secs(30);
/// NATS publishes queued between looks at the clock.
const NATS_CHUNK: u64 = 256;
/// Latency: what is sent before the histogram starts recording.
const WARMUP: Duration = Duration::from_millis(500);
/// The publisher/subscriber shapes of the throughput section.
const SHAPES: [(usize, usize); 3] = [(1, 1), (4, 4), (1, 16)];

/// N publishers to one subject, M subscribers each receiving everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Workload {
    pub(super) publishers: usize,
    pub(super) subscribers: usize,
    pub(super) size: usize,
}

impl Workload {
    pub(super) fn label(&self) -> String {
        format!(
            "{}->{} {}",
            self.publishers,
            self.subscribers,
            size(self.size)
        )
    }

    /// The aim for this workload over TCP+TLS, if it has one.
    fn aim(&self) -> Option<f64> {
        match (self.publishers, self.subscribers, self.size) {
            (1, 1, 128 | 4096) => Some(1.5),
            (4, 4, 128) => Some(2.0),
            _ => None,
        }
    }
}

pub(super) fn size(bytes: usize) -> String {
    if bytes >= 1024 && bytes.is_multiple_of(1024) {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} B")
    }
}

/// What one server did with one workload.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Measured {
    /// Messages the publishers sent, all together.
    pub(super) published: u64,
    /// Messages the subscribers received, all together.
    pub(super) delivered: u64,
    pub(super) subscribers: usize,
    /// From the first publish to the last delivery.
    pub(super) seconds: f64,
}

impl Measured {
    pub(super) fn wanted(&self) -> u64 {
        self.published * self.subscribers as u64
    }
    pub(super) fn lost(&self) -> u64 {
        self.wanted().saturating_sub(self.delivered)
    }
    pub(super) fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.delivered as f64 / self.seconds
        } else {
            0.0
        }
    }
    pub(super) fn delivered_pct(&self) -> f64 {
        match self.wanted() {
            0 => 0.0,
            w => self.delivered as f64 * 100.0 / w as f64,
        }
    }
    fn detail(&self) -> String {
        format!(
            "{:.3}% of {} delivered, lost {}",
            self.delivered_pct(),
            self.wanted(),
            self.lost()
        )
    }
}

// === receiving ===

/// What sees every payload that arrives.
pub(super) type Each<'a> = &'a mut (dyn FnMut(&[u8]) + Send);

/// A subscription that yields how many messages arrived with each item.
pub(super) trait Received {
    /// Waits for the next arrivals and says how many (`None`: the
    /// subscription ended); `each`, when given, sees every payload.
    async fn next_arrivals(&mut self, each: Option<Each<'_>>) -> Option<u64>;
}

impl Received for rampart_client::Subscription {
    async fn next_arrivals(&mut self, each: Option<Each<'_>>) -> Option<u64> {
        let b = self.next_batch().await?;
        if let Some(f) = each {
            for p in b.payloads() {
                f(&p);
            }
        }
        Some(u64::from(b.count))
    }
}

/// Counts deliveries until `published` (set once the publishers stopped)
/// messages arrived, the subscription ends, or [`DRAIN`] after the
/// publishers stopped; `each` sees every payload. Returns the count and
/// the last delivery's time.
async fn count<S: Received, F: FnMut(&[u8]) + Send>(
    mut sub: S,
    mut published: watch::Receiver<Option<u64>>,
    mut each: Option<F>,
) -> (u64, Instant) {
    let mut got = 0u64;
    let mut last = Instant::now();
    let mut until = None;
    loop {
        if let Some(total) = *published.borrow_and_update() {
            if got >= total {
                break;
            }
            until.get_or_insert_with(|| tokio::time::Instant::now() + DRAIN);
        }
        let f = each.as_mut().map(|f| f as &mut (dyn FnMut(&[u8]) + Send));
        let next = match until {
            None => tokio::select! {
                n = sub.next_arrivals(f) => n,
                changed = published.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    continue;
                }
            },
            Some(u) => match tokio::time::timeout_at(u, sub.next_arrivals(f)).await {
                Ok(n) => n,
                Err(_) => break,
            },
        };
        match next {
            Some(n) => {
                got += n;
                last = Instant::now();
            }
            None => break,
        }
    }
    (got, last)
}

/// Waits for publishers and subscribers and adds up what they did.
async fn collect<T>(
    start: Instant,
    pubs: Vec<tokio::task::JoinHandle<Result<u64, Failure>>>,
    subs: Vec<tokio::task::JoinHandle<(u64, Instant, T)>>,
    published_tx: watch::Sender<Option<u64>>,
) -> Result<(Measured, Vec<T>), Failure> {
    let subscribers = subs.len();
    let mut published = 0;
    for p in pubs {
        published += p.await.map_err(|e| Failure(e.to_string()))??;
    }
    let _ = published_tx.send(Some(published));
    let (mut delivered, mut end, mut extra) = (0, start, Vec::new());
    for s in subs {
        let (got, last, x) = s.await.map_err(|e| Failure(e.to_string()))?;
        delivered += got;
        end = end.max(last);
        extra.push(x);
    }
    let m = Measured {
        published,
        delivered,
        subscribers,
        seconds: (end - start).as_secs_f64(),
    };
    Ok((m, extra))
}

// === throughput ===

async fn rampart_throughput(
    url: &str,
    cfg: &ClientConfig,
    w: Workload,
    window: Duration,
    batch: usize,
    run: u32,
) -> Result<Measured, Failure> {
    let stream = format!("compare-{}-{run}", std::process::id());
    let (published_tx, published_rx) = watch::channel(None);
    let mut subs = Vec::new();
    for _ in 0..w.subscribers {
        let c = Client::connect(url, cfg.clone()).await.map_err(describe)?;
        let s = c
            .subscribe(TENANT, "bench", &stream)
            .await
            .map_err(describe)?;
        subs.push((c, s));
    }
    let mut pubs = Vec::new();
    for _ in 0..w.publishers {
        pubs.push(Client::connect(url, cfg.clone()).await.map_err(describe)?);
    }
    let start = Instant::now();
    let deadline = start + window;
    let subs = subs
        .into_iter()
        .map(|(client, sub)| {
            let rx = published_rx.clone();
            tokio::spawn(async move {
                let (n, last) = count(sub, rx, None::<fn(&[u8])>).await;
                drop(client);
                (n, last, ())
            })
        })
        .collect();
    let pubs = pubs
        .into_iter()
        .map(|client| {
            let stream = stream.clone();
            tokio::spawn(async move {
                let payload = Bytes::from(vec![0xabu8; w.size]);
                let mut sent = 0u64;
                while Instant::now() < deadline {
                    // One message: a PUBLISH frame, as a NATS PUB.
                    let r = if batch == 1 {
                        client
                            .publish_with(TENANT, "bench", &stream, payload.clone(), AckMode::None)
                            .await
                            .map(|_| ())
                    } else {
                        client
                            .publish_batch_with(
                                TENANT,
                                "bench",
                                &stream,
                                std::iter::repeat_n(&payload[..], batch),
                                AckMode::None,
                            )
                            .await
                            .map(|_| ())
                    };
                    r.map_err(describe)?;
                    sent += batch as u64;
                }
                finish_publisher(client).await?;
                Ok(sent)
            })
        })
        .collect();
    Ok(collect(start, pubs, subs, published_tx).await?.0)
}

async fn nats_throughput(
    server: &NatsServer,
    events: &Arc<NatsEvents>,
    w: Workload,
    window: Duration,
    run: u32,
) -> Result<Measured, Failure> {
    let subject = format!("compare.{}.{run}", std::process::id());
    let (published_tx, published_rx) = watch::channel(None);
    let mut subs = Vec::new();
    for _ in 0..w.subscribers {
        let c = server.connect().await?;
        subs.push(NatsSub::subscribe(c, &subject, w.size, events.clone()).await?);
    }
    let mut pubs = Vec::new();
    for _ in 0..w.publishers {
        pubs.push(server.connect().await?);
    }
    let start = Instant::now();
    let deadline = start + window;
    let subs = subs
        .into_iter()
        .map(|sub| {
            let rx = published_rx.clone();
            tokio::spawn(async move {
                let (n, last) = count(sub, rx, None::<fn(&[u8])>).await;
                (n, last, ())
            })
        })
        .collect();
    // One PUB with its payload, written over and over.
    let mut frame = format!("PUB {subject} {}\r\n", w.size).into_bytes();
    frame.extend(std::iter::repeat_n(0xabu8, w.size));
    frame.extend_from_slice(b"\r\n");
    let frame = Bytes::from(frame);
    let pubs = pubs
        .into_iter()
        .map(|mut conn| {
            let frame = frame.clone();
            tokio::spawn(async move {
                let mut sent = 0u64;
                while Instant::now() < deadline {
                    for _ in 0..NATS_CHUNK {
                        conn.queue(&frame);
                        if conn.queued() >= NATS_WRITE {
                            conn.flush().await?;
                            conn.poll_control().await?;
                        }
                    }
                    sent += NATS_CHUNK;
                }
                // Everything is written and the server has read it (a
                // PING/PONG after it).
                conn.queue(b"PING\r\n");
                conn.round_trip().await?;
                Ok::<_, Failure>(sent)
            })
        })
        .collect();
    Ok(collect(start, pubs, subs, published_tx).await?.0)
}

/// A bench Rampart server with one API key for [`TENANT`].
async fn start_rampart() -> Result<(ChildServer, ClientConfig), Failure> {
    let (server, key) = super::rampart_child(&[]).await?;
    let cfg = server.config(&key);
    Ok((server, cfg))
}

/// Runs `f` within the window, drain and setup time.
async fn bounded<T>(
    what: String,
    window: Duration,
    f: impl std::future::Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    super::within(&what, window + DRAIN + SETUP, f).await
}

/// After a Rampart publisher's last message: a ping round trip shows that
/// everything sent was read, and any refusal of a message nobody waited
/// for fails the run.
async fn finish_publisher(client: Client) -> Result<(), Failure> {
    client.ping().await.map_err(describe)?;
    if let Some(e) = client.take_async_error() {
        return Err(describe(e));
    }
    client.close().await;
    Ok(())
}

/// Notes what the NATS subscribers saw besides messages, and stops both
/// servers of a section.
async fn finish_section(
    report: &mut Report,
    events: &NatsEvents,
    nats: NatsServer,
    rampart: ChildServer,
) {
    if let Some(n) = events_note(events) {
        report.note(n);
    }
    nats.stop().await;
    rampart.stop().await;
}

/// NATS subscriber events worth a note, if any.
fn events_note(events: &NatsEvents) -> Option<String> {
    use std::sync::atomic::Ordering::Relaxed;
    let (slow, errors, disc, bad) = (
        events.slow.load(Relaxed),
        events.errors.load(Relaxed),
        events.disconnects.load(Relaxed),
        events.bad_size.load(Relaxed),
    );
    (slow + errors + disc + bad > 0).then(|| {
        format!(
            "NATS subscriber events: {slow} slow consumer -ERR, {errors} other errors, \
             {disc} disconnected, {bad} payloads of the wrong size"
        )
    })
}

/// The throughput section: every shape at every size, on Rampart over TCP
/// and QUIC and on NATS.
pub(super) async fn throughput(env: &mut Env, report: &mut Report) -> Result<(), Failure> {
    let nats_bin = env.nats_bin()?;
    let (rampart, cfg) = start_rampart().await?;
    let nats = NatsServer::start(&nats_bin).await?;
    let events = Arc::new(NatsEvents::default());
    // The same offer gets different suites: each server picks its own.
    let offer = rustls::crypto::ring::default_provider()
        .cipher_suites
        .iter()
        .filter(|s| matches!(s, rustls::SupportedCipherSuite::Tls13(_)))
        .map(|s| format!("{:?}", s.suite()))
        .collect::<Vec<_>>()
        .join(", ");
    let ca = super::nats::BenchCerts::get()?.ca_der.clone();
    report.note(format!(
        "TLS over TCP: the clients (the bench's and rampart_client alike) offer TLS 1.3 \
         with {offer}, in that order; Rampart picked {}, NATS {}",
        super::nats::cipher_suite_at(rampart.tcp_addr(), ca).await?,
        nats.connect().await?.cipher_suite(),
    ));
    let mode = match env.batch {
        1 => "single-message PUBLISH frames".to_string(),
        n => format!("PUBLISH_BATCH frames of {n}"),
    } + " with AckMode::None (fire and forget, like a NATS core publish)";
    report.note(format!(
        "pubsub: Rampart (child `rampart server --dev`, API key, TLS 1.3 only; TCP+TLS and QUIC) \
         publishes {mode}; {} ({}, token, TLS min_version 1.3) gets core PUBs from a lean \
         protocol client written for the bench ({} KiB writes). N->M: N publishers on one \
         subject, M subscribers each receiving every message; msg/s = deliveries to all \
         subscribers per second, over {} s of publishing and up to {} s of drain",
        nats.version,
        nats_bin.display(),
        NATS_WRITE / 1024,
        env.window.as_secs(),
        DRAIN.as_secs(),
    ));
    let mut run = 0u32;
    for &(publishers, subscribers) in &SHAPES {
        for &size in &env.sizes {
            let w = Workload {
                publishers,
                subscribers,
                size,
            };
            let mut rampart_m = Vec::new();
            for net in [Net::Tcp, Net::Quic] {
                run += 1;
                let url = rampart.url(net);
                // A failed workload is a row that says so; the run goes on.
                let m = bounded(
                    format!("Rampart {} {net:?}", w.label()),
                    env.window,
                    rampart_throughput(&url, &cfg, w, env.window, env.batch, run),
                )
                .await
                .map_err(|e| e.0);
                match &m {
                    Ok(m) => eprintln!(
                        "bench: Rampart {net:?} {}: {:.0} msg/s, {:.3}% delivered",
                        w.label(),
                        m.rate(),
                        m.delivered_pct()
                    ),
                    Err(e) => eprintln!("bench: Rampart {net:?} {} failed: {e}", w.label()),
                }
                rampart_m.push((net, m));
            }
            run += 1;
            let n = bounded(
                format!("NATS {}", w.label()),
                env.window,
                nats_throughput(&nats, &events, w, env.window, run),
            )
            .await?;
            eprintln!(
                "bench: NATS {}: {:.0} msg/s, {:.3}% delivered",
                w.label(),
                n.rate(),
                n.delivered_pct()
            );
            if (publishers, subscribers, size) == (1, 1, 128) {
                *env.nats_max_1to1.lock().expect("not poisoned") = Some(n.rate());
            }
            for (net, m) in rampart_m {
                let (rate, detail, held) = match &m {
                    Ok(m) => (m.rate(), m.detail(), m.lost() == 0),
                    Err(e) => (f64::NAN, format!("failed: {e}"), false),
                };
                report.rows.push(Row {
                    section: match net {
                        Net::Tcp => "pubsub TCP+TLS".into(),
                        Net::Quic => "pubsub QUIC".into(),
                    },
                    workload: w.label(),
                    unit: "msg/s",
                    better: Better::Higher,
                    rampart: rate,
                    peer: "NATS (TLS)".into(),
                    peer_value: n.rate(),
                    rampart_detail: detail,
                    peer_detail: n.detail(),
                    aim: if net == Net::Tcp { w.aim() } else { None },
                    aim_terms_held: held,
                });
            }
        }
    }
    finish_section(report, &events, nats, rampart).await;
    Ok(())
}

// === latency ===

/// The process-wide clock that latency payloads carry, in nanoseconds.
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn nanos_since_epoch(t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(epoch()).as_nanos()).unwrap_or(u64::MAX)
}

/// A payload of `size` bytes that carries `intended` in its first 8.
fn stamped(size: usize, intended: Instant) -> Vec<u8> {
    let mut p = vec![0xabu8; size.max(8)];
    p[..8].copy_from_slice(&nanos_since_epoch(intended).to_le_bytes());
    p
}

/// The histogram a latency subscriber fills: 1 us to 60 s, 3 significant
/// digits.
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

/// Records one arrival: now minus the intended send time in the payload,
/// in microseconds, unless it was sent during the warm-up.
fn record(h: &mut Histogram<u64>, payload: &[u8], warm_from: u64, bad: &mut u64) {
    let Some(stamp) = payload.get(..8) else {
        *bad += 1;
        return;
    };
    let intended = u64::from_le_bytes(stamp.try_into().expect("8 bytes"));
    if intended < warm_from {
        return;
    }
    let now = nanos_since_epoch(Instant::now());
    let us = now.saturating_sub(intended) / 1000;
    h.saturating_record(us.max(1));
}

/// The schedule of a fixed-rate publisher: a burst every [`TICK`], tick
/// `k` at `start + k x TICK` sending messages `k x per_tick` up to `(k + 1)
/// x per_tick` (`per_tick = rate x TICK`, fractions carried over). Every
/// message of a tick is meant to leave at the tick's time.
struct Schedule {
    start: Instant,
    per_tick: f64,
    ticks: u64,
    /// The next tick not sent yet.
    next_tick: u64,
}

impl Schedule {
    fn new(rate: f64, window: Duration) -> Self {
        Schedule {
            start: Instant::now(),
            per_tick: rate * TICK.as_secs_f64(),
            ticks: (window.as_secs_f64() / TICK.as_secs_f64()).ceil() as u64,
            next_tick: 0,
        }
    }

    /// The messages due by `now` and not sent yet, oldest first, as
    /// (intended time, how many); at most `max` ticks at once, so that a
    /// publisher far behind catches up in bounded steps.
    fn due(&mut self, now: Instant, max: u64) -> Vec<(Instant, u64)> {
        let elapsed = now.saturating_duration_since(self.start).as_nanos();
        let reached = u64::try_from(elapsed / TICK.as_nanos())
            .unwrap_or(u64::MAX)
            .saturating_add(1)
            .min(self.ticks);
        let until = reached.min(self.next_tick.saturating_add(max));
        let out = (self.next_tick..until)
            .map(|k| {
                let n =
                    ((k + 1) as f64 * self.per_tick).floor() - (k as f64 * self.per_tick).floor();
                (self.start + TICK * k as u32, n as u64)
            })
            .filter(|&(_, n)| n > 0)
            .collect();
        self.next_tick = self.next_tick.max(until);
        out
    }

    fn over(&self) -> bool {
        self.next_tick >= self.ticks
    }
}

/// What a latency run saw.
struct Latency {
    measured: Measured,
    hist: Histogram<u64>,
    bad: u64,
}

/// Ticks of the fixed-rate publishers.
const TICK: Duration = Duration::from_millis(1);
/// At most this many ticks' messages leave at once, so that a publisher
/// that fell far behind catches up in bounded steps.
const TICK_MAX: u64 = 8;

async fn rampart_latency(
    url: &str,
    cfg: &ClientConfig,
    rate: f64,
    window: Duration,
    run: u32,
) -> Result<Latency, Failure> {
    let stream = format!("latency-{}-{run}", std::process::id());
    let (published_tx, published_rx) = watch::channel(None);
    let sub_client = Client::connect(url, cfg.clone()).await.map_err(describe)?;
    let sub = sub_client
        .subscribe(TENANT, "bench", &stream)
        .await
        .map_err(describe)?;
    let client = Client::connect(url, cfg.clone()).await.map_err(describe)?;
    let start = Instant::now();
    let warm_from = nanos_since_epoch(start + WARMUP);
    let subs = vec![tokio::spawn(async move {
        let (mut h, mut bad) = (latency_histogram(), 0u64);
        let each = |p: &[u8]| record(&mut h, p, warm_from, &mut bad);
        let (n, last) = count(sub, published_rx, Some(each)).await;
        drop(sub_client);
        (n, last, (h, bad))
    })];
    let pubs = vec![tokio::spawn(async move {
        let mut schedule = Schedule::new(rate, window + WARMUP);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut sent = 0u64;
        loop {
            tick.tick().await;
            for (t, n) in schedule.due(Instant::now(), TICK_MAX) {
                let payload = Bytes::from(stamped(128, t));
                for _ in 0..n {
                    client
                        .publish_with(TENANT, "bench", &stream, payload.clone(), AckMode::None)
                        .await
                        .map_err(describe)?;
                }
                sent += n;
            }
            if schedule.over() {
                break;
            }
        }
        finish_publisher(client).await?;
        Ok(sent)
    })];
    let (measured, mut extra) = collect(start, pubs, subs, published_tx).await?;
    let (hist, bad) = extra.pop().expect("one subscriber");
    Ok(Latency {
        measured,
        hist,
        bad,
    })
}

async fn nats_latency(
    server: &NatsServer,
    events: &Arc<NatsEvents>,
    rate: f64,
    window: Duration,
    run: u32,
) -> Result<Latency, Failure> {
    let subject = format!("latency.{}.{run}", std::process::id());
    let (published_tx, published_rx) = watch::channel(None);
    let sub = NatsSub::subscribe(server.connect().await?, &subject, 128, events.clone()).await?;
    let mut conn: NatsConn = server.connect().await?;
    let start = Instant::now();
    let warm_from = nanos_since_epoch(start + WARMUP);
    let subs = vec![tokio::spawn(async move {
        let (mut h, mut bad) = (latency_histogram(), 0u64);
        let each = |p: &[u8]| record(&mut h, p, warm_from, &mut bad);
        let (n, last) = count(sub, published_rx, Some(each)).await;
        (n, last, (h, bad))
    })];
    let header = format!("PUB {subject} 128\r\n");
    let pubs = vec![tokio::spawn(async move {
        let mut schedule = Schedule::new(rate, window + WARMUP);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut sent = 0u64;
        loop {
            tick.tick().await;
            for (t, n) in schedule.due(Instant::now(), TICK_MAX) {
                let payload = stamped(128, t);
                for _ in 0..n {
                    conn.queue(header.as_bytes());
                    conn.queue(&payload);
                    conn.queue(b"\r\n");
                }
                sent += n;
            }
            conn.flush().await?;
            conn.poll_control().await?;
            if schedule.over() {
                break;
            }
        }
        conn.queue(b"PING\r\n");
        conn.round_trip().await?;
        Ok::<_, Failure>(sent)
    })];
    let (measured, mut extra) = collect(start, pubs, subs, published_tx).await?;
    let (hist, bad) = extra.pop().expect("one subscriber");
    Ok(Latency {
        measured,
        hist,
        bad,
    })
}

/// The latency section: 1->1 128 B at `--shares` of NATS's best 1->1 rate
/// (measured here first if the throughput section did not run), on
/// Rampart over TCP and QUIC and on NATS; p50, p99 and p99.9 rows.
pub(super) async fn latency(env: &mut Env, report: &mut Report) -> Result<(), Failure> {
    let nats_bin = env.nats_bin()?;
    let events = Arc::new(NatsEvents::default());
    let nats = NatsServer::start(&nats_bin).await?;
    let known = *env.nats_max_1to1.lock().expect("not poisoned");
    let max = match known {
        Some(m) => m,
        None => {
            let w = Workload {
                publishers: 1,
                subscribers: 1,
                size: 128,
            };
            let m = bounded(
                "NATS 1->1 128 B".into(),
                env.window,
                nats_throughput(&nats, &events, w, env.window, 1),
            )
            .await?;
            m.rate()
        }
    };
    if max < 1000.0 {
        return Err(Failure(format!(
            "NATS's 1->1 128 B rate was {max:.0} msg/s: too low to set latency rates"
        )));
    }
    let (rampart, cfg) = start_rampart().await?;
    report.note(format!(
        "latency: 1->1 128 B at {:?} of NATS's best 1->1 128 B rate in this run ({max:.0} msg/s); \
         one message per PUBLISH frame or PUB, sent on a 1 ms schedule; latency = arrival minus \
         the scheduled send time (corrected for coordinated omission), after {} ms of warm-up, \
         in an HdrHistogram (3 significant digits)",
        env.shares,
        WARMUP.as_millis()
    ));
    let mut run = 100u32;
    for &share in &env.shares {
        let rate = (max * share).round();
        // Per round: Rampart over TCP, over QUIC, then NATS.
        let (mut tcp, mut quic, mut peer) = (Vec::new(), Vec::new(), Vec::new());
        for round in 1..=env.rounds {
            for (net, into) in [(Net::Tcp, &mut tcp), (Net::Quic, &mut quic)] {
                run += 1;
                let url = rampart.url(net);
                let l = bounded(
                    format!("Rampart latency {net:?} at {rate} msg/s"),
                    env.window,
                    rampart_latency(&url, &cfg, rate, env.window, run),
                )
                .await
                .map_err(|e| e.0);
                if let Err(e) = &l {
                    eprintln!(
                        "bench: Rampart latency {net:?} at {rate} msg/s, round {round}, failed: {e}"
                    );
                }
                into.push(l);
            }
            run += 1;
            peer.push(
                bounded(
                    format!("NATS latency at {rate} msg/s"),
                    env.window,
                    nats_latency(&nats, &events, rate, env.window, run),
                )
                .await?,
            );
        }
        for (net, measured) in [(Net::Tcp, &tcp), (Net::Quic, &quic)] {
            for (q, label) in [(0.5, "p50"), (0.99, "p99"), (0.999, "p99.9")] {
                let (r, detail, held) =
                    latency_rounds(measured.iter().map(|l| l.as_ref().map_err(|e| &e[..])), q);
                let (p, peer_detail, _) = latency_rounds(peer.iter().map(Ok), q);
                eprintln!(
                    "bench: latency {net:?} at {rate:.0} msg/s {label}: Rampart {r} us, NATS {p} us \
                     (medians of {} round(s))",
                    env.rounds
                );
                report.rows.push(Row {
                    section: match net {
                        Net::Tcp => "latency TCP+TLS".into(),
                        Net::Quic => "latency QUIC".into(),
                    },
                    workload: format!("{label} at {rate:.0} msg/s ({share}x NATS max)"),
                    unit: "us",
                    better: Better::Lower,
                    rampart: r,
                    peer: "NATS (TLS)".into(),
                    peer_value: p,
                    rampart_detail: detail,
                    peer_detail,
                    aim: (net == Net::Tcp && share == 0.5 && label == "p99").then_some(1.0),
                    aim_terms_held: held,
                });
            }
        }
    }
    finish_section(report, &events, nats, rampart).await;
    Ok(())
}

/// The quantile `q` of a series of latency rounds: the median round's
/// value (NaN when a round failed: a figure that misses a round is not
/// reported), its detail followed by every round's value, and whether
/// every round delivered everything intact.
fn latency_rounds<'a>(
    rounds: impl Iterator<Item = Result<&'a Latency, &'a str>>,
    q: f64,
) -> (f64, String, bool) {
    let ok = match rounds.collect::<Result<Vec<&Latency>, &str>>() {
        Ok(ok) => ok,
        Err(e) => return (f64::NAN, format!("failed: {e}"), false),
    };
    let values: Vec<f64> = ok
        .iter()
        .map(|l| l.hist.value_at_quantile(q) as f64)
        .collect();
    let Some(m) = median_of(&values) else {
        return (f64::NAN, "no rounds".into(), false);
    };
    let detail = latency_detail(ok[m]) + &rounds_detail(&values, "us");
    let held = ok.iter().all(|l| l.measured.lost() == 0 && l.bad == 0);
    (values[m], detail, held)
}

fn latency_detail(l: &Latency) -> String {
    let mut s = format!(
        "{} samples, max {} us, {}",
        l.hist.len(),
        l.hist.max(),
        l.measured.detail()
    );
    if l.bad > 0 {
        s += &format!(", {} payloads too short", l.bad);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A latency round whose every sample took `us`, `lost` messages short.
    fn round_of(us: u64, lost: u64) -> Latency {
        let mut hist = latency_histogram();
        hist.record_n(us, 1000).expect("in range");
        Latency {
            measured: Measured {
                published: 1000,
                delivered: 1000 - lost,
                subscribers: 1,
                seconds: 1.0,
            },
            hist,
            bad: 0,
        }
    }

    #[test]
    fn latency_figures_are_the_median_round_and_need_every_round() {
        // A stall in one round (the slow one) does not decide the figure.
        let rounds = [round_of(900, 0), round_of(2000, 0), round_of(1000, 0)];
        let (v, detail, held) = latency_rounds(rounds.iter().map(Ok), 0.99);
        assert!((v - 1000.0).abs() <= 1.0, "{v}");
        assert!(held);
        assert!(detail.starts_with("1000 samples"), "{detail}");
        assert!(
            detail.ends_with("; rounds: 900 / 2000 / 1000 us"),
            "{detail}"
        );
        // Loss in any round spoils the row's terms.
        let lossy = [round_of(900, 0), round_of(1000, 3)];
        assert!(!latency_rounds(lossy.iter().map(Ok), 0.99).2);
        // So does a failed round, which leaves no figure.
        let failed = [Ok(&rounds[0]), Err("connect refused")];
        let (v, detail, held) = latency_rounds(failed.into_iter(), 0.99);
        assert!(v.is_nan() && !held);
        assert_eq!(detail, "failed: connect refused");
        // One round: no list.
        let (_, detail, _) = latency_rounds([Ok(&rounds[0])].into_iter(), 0.5);
        assert!(!detail.contains("rounds"), "{detail}");
    }

    #[test]
    fn measured_loss_and_rate() {
        let m = Measured {
            published: 1000,
            delivered: 3000,
            subscribers: 4,
            seconds: 2.0,
        };
        assert_eq!(m.wanted(), 4000);
        assert_eq!(m.lost(), 1000);
        assert!((m.delivered_pct() - 75.0).abs() < 1e-9);
        assert!((m.rate() - 1500.0).abs() < 1e-9);
        assert_eq!(m.detail(), "75.000% of 4000 delivered, lost 1000");
        let w = Workload {
            publishers: 1,
            subscribers: 16,
            size: 65536,
        };
        assert_eq!(w.label(), "1->16 64 KiB");
        assert_eq!(w.aim(), None);
        assert_eq!(
            Workload {
                publishers: 4,
                subscribers: 4,
                size: 128
            }
            .aim(),
            Some(2.0)
        );
    }

    #[test]
    fn schedule_sends_each_tick_once_at_its_time_and_stops_at_the_end() {
        // 2500 msg/s: 2.5 per 1 ms tick, fractions carried over.
        let mut s = Schedule::new(2500.0, Duration::from_millis(10));
        let t0 = s.start;
        assert_eq!(s.due(t0, 8), vec![(t0, 2)], "tick 0 is due at once");
        assert!(s.due(t0, 8).is_empty(), "and only once");
        let d = s.due(t0 + Duration::from_micros(3500), 8);
        assert_eq!(
            d,
            vec![(t0 + TICK, 3), (t0 + TICK * 2, 2), (t0 + TICK * 3, 3)]
        );
        // Far behind: bounded catch-up; the messages keep the times the
        // schedule gave them, not the time they finally leave.
        let d = s.due(t0 + Duration::from_secs(5), 2);
        assert_eq!(d, vec![(t0 + TICK * 4, 2), (t0 + TICK * 5, 3)]);
        assert!(!s.over());
        let rest = s.due(t0 + Duration::from_secs(5), 100);
        assert_eq!(rest.len(), 4, "ticks 6 to 9, nothing beyond the window");
        let total: u64 =
            [2, 3, 2, 3, 2, 3].iter().sum::<u64>() + rest.iter().map(|r| r.1).sum::<u64>();
        assert_eq!(total, 25, "2500 msg/s for 10 ms");
        assert!(s.over());
        assert!(s.due(t0 + Duration::from_secs(6), 100).is_empty());
    }

    #[test]
    fn latency_is_measured_from_the_intended_time() {
        let mut h = latency_histogram();
        let mut bad = 0;
        // Stamps count from the process's epoch, which is set on first use.
        let _ = epoch();
        std::thread::sleep(Duration::from_millis(30));
        let intended = Instant::now() - Duration::from_millis(20);
        record(&mut h, &stamped(128, intended), 0, &mut bad);
        assert_eq!(h.len(), 1);
        assert!(h.max() >= 20_000, "{} us", h.max());
        // Sent during the warm-up: not recorded.
        record(
            &mut h,
            &stamped(128, intended),
            nanos_since_epoch(Instant::now()),
            &mut bad,
        );
        assert_eq!(h.len(), 1);
        record(&mut h, b"short", 0, &mut bad);
        assert_eq!(bad, 1);
    }
}
