//! The memory section of `rampart bench compare`: what a quiet connection
//! costs the server.
//!
//! A broker's connections are mostly quiet: subscribers waiting for
//! events, clients between requests. Each side gets one warm-up
//! connection, then [`CONNECTIONS`] more over TLS 1.3, each authenticated
//! and holding one subscription to a live subject (Rampart: SUBSCRIBE to
//! a stream over a bare connection, see [`BareConn`]; NATS: `SUB` and a
//! `PING`, whose `PONG` shows the server took it). The figure is the
//! growth of the server's resident memory (`VmRSS`) over those
//! connections, per connection, read a second after the last one is
//! made; every connection must then still answer a `PING`.
//!
//! The Rampart server gets per-IP admission limits above the count (every
//! connection comes from 127.0.0.1); nothing else differs from its
//! defaults.

use std::time::Duration;

use rampart_proto::{Message, NamespaceName, StartAt, StreamName, Subscribe, TenantId};

use super::bare::BareConn;
use super::nats::{tls13_client, BenchCerts, NatsConn, NatsServer};
use super::{within, Better, Env, Report, Row};
use crate::Failure;

/// Quiet connections measured on each side.
const CONNECTIONS: usize = 2000;
/// How long the connections settle before the memory is read.
const SETTLE: Duration = Duration::from_secs(1);
/// Bound on one side's whole measurement.
const BOUND: Duration = Duration::from_secs(120);

/// The server's resident memory before and after the connections, in
/// KiB, and how many connections answered a `PING` afterwards.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Grown {
    before: u64,
    after: u64,
    alive: usize,
}

impl Grown {
    /// KiB per connection.
    fn per_connection(&self) -> f64 {
        self.after.saturating_sub(self.before) as f64 / CONNECTIONS as f64
    }

    fn detail(&self) -> String {
        format!(
            "{CONNECTIONS} connections: VmRSS {:.1} -> {:.1} MiB; {} answered a PING after",
            self.before as f64 / 1024.0,
            self.after as f64 / 1024.0,
            self.alive
        )
    }
}

pub(super) async fn idle(env: &mut Env, report: &mut Report) -> Result<(), Failure> {
    let nats_bin = env.nats_bin()?;
    let r = within("memory: Rampart", BOUND, rampart()).await?;
    let nats = NatsServer::start(&nats_bin).await?;
    report.note(format!(
        "memory: one warm-up connection, then {CONNECTIONS} more, each authenticated over TLS \
         1.3 and holding one subscription to a live subject, and quiet: Rampart (child \
         `rampart server --dev`, API key; SUBSCRIBE to a live stream over a bare connection; \
         `max_connections_per_ip` and `new_connections_per_ip_per_sec` raised above the count, \
         since every connection comes from 127.0.0.1) against nats-server {} ({}, token; SUB \
         and PING); KiB = growth of the server's VmRSS over those connections, read {} s after \
         the last, per connection; every connection must answer a PING afterwards",
        nats.version,
        nats_bin.display(),
        SETTLE.as_secs()
    ));
    let n = within("memory: NATS", BOUND, nats_side(&nats)).await;
    nats.stop().await;
    let n = n?;
    eprintln!(
        "bench: memory per quiet connection: Rampart {:.1} KiB ({}), NATS {:.1} KiB ({})",
        r.per_connection(),
        r.detail(),
        n.per_connection(),
        n.detail()
    );
    report.rows.push(Row {
        section: "memory".into(),
        workload: "per quiet TLS connection with a subscription".into(),
        unit: "KiB",
        better: Better::Lower,
        rampart: r.per_connection(),
        peer: "NATS".into(),
        peer_value: n.per_connection(),
        rampart_detail: r.detail(),
        peer_detail: n.detail(),
        aim: None,
        aim_terms_held: r.alive == CONNECTIONS && n.alive == CONNECTIONS,
    });
    Ok(())
}

fn rss(kib: Option<u64>) -> Result<u64, Failure> {
    kib.ok_or_else(|| Failure("memory: cannot read the server's VmRSS".into()))
}

async fn rampart() -> Result<Grown, Failure> {
    let above = (CONNECTIONS + 64).to_string();
    let (server, key) = super::rampart_child(&[
        ("RAMPART_MAX_CONNECTIONS_PER_IP", above.clone()),
        ("RAMPART_NEW_CONNECTIONS_PER_IP_PER_SEC", above),
    ])
    .await?;
    let addr = server.tcp_addr();
    let tls = tls13_client(BenchCerts::get()?.ca_der.clone())?;
    let grown = measure(
        async || {
            let (mut c, tenant) = BareConn::connect(addr, tls.clone(), &key).await?;
            subscribe(&mut c, tenant).await?;
            Ok(c)
        },
        || server.memory_kib("VmRSS"),
    )
    .await;
    server.stop().await;
    grown
}
/// SUBSCRIBE to the live stream `idle/quiet` of `tenant`.
async fn subscribe(c: &mut BareConn, tenant: TenantId) -> Result<(), Failure> {
    let name = |e: rampart_proto::NameError| Failure(e.to_string());
    let reply = c
        .request(Message::Subscribe(Subscribe {
            tenant,
            namespace: NamespaceName::parse("idle").map_err(name)?,
            stream: StreamName::parse("quiet").map_err(name)?,
            start: StartAt::New,
        }))
        .await?;
    match reply.msg {
        Message::Subscribed(_) => Ok(()),
        other => Err(Failure(format!("memory: SUBSCRIBE answered {other:?}"))),
    }
}

async fn nats_side(nats: &NatsServer) -> Result<Grown, Failure> {
    let mut sid = 0u32;
    measure(
        async || {
            let mut c = nats.connect().await?;
            sid += 1;
            c.queue(format!("SUB idle.quiet {sid}\r\nPING\r\n").as_bytes());
            c.round_trip().await?;
            Ok(c)
        },
        || nats.memory_kib("VmRSS"),
    )
    .await
}

/// A connection that can show it is still open.
trait Quiet {
    /// `true` if it answered a PING.
    async fn ping(&mut self) -> bool;
}

impl Quiet for BareConn {
    async fn ping(&mut self) -> bool {
        matches!(self.request(Message::Ping).await, Ok(f) if matches!(f.msg, Message::Pong))
    }
}

impl Quiet for NatsConn {
    async fn ping(&mut self) -> bool {
        self.queue(b"PING\r\n");
        self.round_trip().await.is_ok()
    }
}

/// Opens a warm-up connection and then [`CONNECTIONS`] more with `open`,
/// reads the server's memory a [`SETTLE`] after the first and after the
/// last, then counts the measured connections that still answer a PING.
async fn measure<C: Quiet>(
    mut open: impl AsyncFnMut() -> Result<C, Failure>,
    memory: impl Fn() -> Option<u64>,
) -> Result<Grown, Failure> {
    let mut conns = Vec::with_capacity(CONNECTIONS + 1);
    let mut before = 0;
    for i in 0..=CONNECTIONS {
        conns.push(open().await?);
        if i == 0 {
            tokio::time::sleep(SETTLE).await;
            before = rss(memory())?;
        }
    }
    tokio::time::sleep(SETTLE).await;
    let after = rss(memory())?;
    let mut alive = 0;
    for c in conns.iter_mut().skip(1) {
        if c.ping().await {
            alive += 1;
        }
    }
    Ok(Grown {
        before,
        after,
        alive,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_is_per_connection_and_never_negative() {
        let g = Grown {
            before: 10 * 1024,
            after: 10 * 1024 + 2 * CONNECTIONS as u64,
            alive: CONNECTIONS,
        };
        assert!((g.per_connection() - 2.0).abs() < 1e-9);
        assert!(g.detail().contains("VmRSS 10.0 -> "), "{}", g.detail());
        let shrank = Grown {
            before: 20,
            after: 10,
            alive: 0,
        };
        assert_eq!(shrank.per_connection(), 0.0);
    }
}
