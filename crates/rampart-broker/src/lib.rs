//! Rampart broker core: live and durable streams, durable consumers, and the
//! TTL cache.
//!
//! Nothing here touches the network or checks who is asking: the server
//! authenticates and authorizes first, then calls in with validated names.
//!
//! # Layout
//! - `stream`: [`Stream`] numbering and fan-out, [`Subscription`].
//! - `queue`: the bounded per-subscriber queue and [`SlowConsumerPolicy`].
//! - `durable`: [`DurableStream`]: a stream's log, readers replaying it,
//!   consumers; [`Commit`], a publish queued on its stream whose level
//!   (written, fsynced) is awaited later, so that a connection can keep
//!   publishing while an earlier block is fsynced.
//! - `consumer`: the pure bookkeeping of one durable consumer (in flight,
//!   acknowledged, committed, redelivery).
//! - `cache`: [`Cache`], per-tenant memory budget and TTL expiry.

mod cache;
mod consumer;
mod durable;
mod queue;
mod stream;

use std::sync::Arc;

use rampart_proto::StreamPath;

pub use cache::{Cache, CacheLimits, CachedValue};
pub use consumer::ConsumerOptions;
pub use durable::{Commit, ConsumerInfo, DurableOptions, DurableStream, Maintenance, Published};
pub use queue::{QueueDepths, QueueLimits, SlowConsumerPolicy};
pub use rampart_log::{
    BlockSealer, Level, Plain, RecoveryReport, ResealReport, RetentionReport, SyncPolicy,
};
pub use stream::{Stream, Subscription};

/// Errors of broker operations. The server turns them into NACK codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    #[error("stream not found")]
    StreamNotFound,
    #[error("cache memory quota of {limit} bytes for this tenant is full")]
    CacheFull { limit: usize },
    #[error("value larger than the limit of {limit} bytes")]
    ValueTooLarge { limit: usize },
    #[error("the stream is not durable: it keeps no log to replay or consume from")]
    NotDurable,
    #[error("the subscription is not a consumer")]
    NotAConsumer,
    #[error("{0}")]
    BadStart(String),
    /// Offsets `from..to` are damaged on disk and are not served.
    #[error(
        "offsets {from}..{to} of the stream are damaged and will not be served; resume at {to}"
    )]
    Damaged { from: u64, to: u64 },
    /// A block of `from..to` passed its CRC but does not open: its key was
    /// destroyed (erasure) or it was altered or moved.
    #[error("offsets {from}..{to} of the stream cannot be decrypted (key destroyed, or data altered) and will not be served")]
    Unreadable { from: u64, to: u64 },
    #[error("stream storage failed: {0}")]
    Storage(String),
    /// A durable stream that could not be opened at start.
    #[error("stream unavailable: {0}")]
    Unavailable(String),
}

/// Settings of the broker core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BrokerConfig {
    /// Create a stream the first time it is used.
    pub auto_create_streams: bool,
    pub queue: QueueLimits,
    pub cache: CacheLimits,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            auto_create_streams: true,
            queue: QueueLimits::default(),
            cache: CacheLimits::default(),
        }
    }
}

/// Streams and caches of one server.
#[derive(Debug)]
pub struct Broker {
    streams: stream::Streams,
    cache: Cache,
}

impl Broker {
    pub fn new(config: BrokerConfig) -> Self {
        Self {
            streams: stream::Streams::new(config.queue, config.auto_create_streams),
            cache: Cache::new(config.cache),
        }
    }

    /// Creates a stream if it does not exist.
    pub fn declare_stream(&self, path: StreamPath) -> Arc<Stream> {
        self.streams.declare(path)
    }

    /// Forgets a stream; its subscriptions end. Returns it so the caller can
    /// wait for [`Stream::close_all`].
    pub fn remove_stream(&self, path: &StreamPath) -> Option<Arc<Stream>> {
        self.streams.remove(path)
    }

    /// Adds an opened durable stream (replacing any stream of that path).
    pub fn add_durable(&self, d: Arc<DurableStream>) -> Arc<Stream> {
        let path = d.path().clone();
        self.streams.insert_durable(d);
        self.streams
            .get(&path)
            .unwrap_or_else(|_| unreachable!("just inserted"))
    }

    /// Registers a durable stream that failed to open: it refuses every use
    /// with `why` (it is never served as a live stream instead).
    pub fn add_unavailable(&self, path: StreamPath, why: String) {
        self.streams.insert_unavailable(path, why);
    }

    /// Every durable stream, for maintenance and shutdown.
    pub fn durable_streams(&self) -> Vec<Arc<DurableStream>> {
        self.streams
            .all()
            .into_iter()
            .filter_map(|s| s.durable().cloned())
            .collect()
    }

    /// Finds a stream without creating it.
    pub fn existing(&self, path: &StreamPath) -> Option<Arc<Stream>> {
        self.streams.existing(path)
    }

    /// The live subscribers' queues now, summed over every stream. Costs a
    /// short lock of each queue: for scrapes, not for every message.
    pub fn queue_depths(&self) -> QueueDepths {
        let mut d = QueueDepths::default();
        for s in self.streams.all() {
            s.add_depths(&mut d);
        }
        d
    }

    /// How many streams a tenant has (for its quota).
    pub fn tenant_streams(&self, tenant: &rampart_proto::TenantId) -> u64 {
        self.streams
            .all()
            .iter()
            .filter(|s| &s.path().tenant == tenant)
            .count() as u64
    }

    /// Finds a stream, creating it when auto-creation is on.
    pub fn stream(&self, path: &StreamPath) -> Result<Arc<Stream>, BrokerError> {
        self.streams.get(path)
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rampart_proto::{EntriesBuilder, SharedEvents};
    use std::time::Duration;

    fn path(s: &str) -> StreamPath {
        s.parse().unwrap()
    }

    fn one(msg: &[u8]) -> (u32, Bytes) {
        let mut b = EntriesBuilder::new();
        b.push(msg);
        b.finish()
    }

    fn payloads(batches: &[SharedEvents]) -> Vec<Bytes> {
        batches
            .iter()
            .flat_map(|b| {
                rampart_proto::EventBatch {
                    subscription_id: 0,
                    missed: 0,
                    first_seq: b.first_seq,
                    count: b.count,
                    entries: b.entries.clone(),
                }
                .payloads()
                .collect::<Vec<_>>()
            })
            .collect()
    }

    #[tokio::test]
    async fn fan_out_in_order_to_every_subscriber() {
        let broker = Broker::new(BrokerConfig::default());
        let s = broker.stream(&path("acme/prod/orders")).unwrap();
        let subs: Vec<_> = futures_join(&s, 3).await;
        for i in 0..10u8 {
            let (c, e) = one(&[i]);
            assert_eq!(s.publish(c, e).await, u64::from(i));
        }
        for sub in &subs {
            let mut got = Vec::new();
            while got.len() < 10 {
                let mut out = Vec::new();
                assert_eq!(sub.recv(&mut out, usize::MAX).await, Some(0));
                got.extend(payloads(&out));
            }
            let want: Vec<Bytes> = (0..10u8).map(|i| Bytes::from(vec![i])).collect();
            assert_eq!(got, want);
        }
    }

    async fn futures_join(s: &Arc<Stream>, n: usize) -> Vec<Subscription> {
        let mut v = Vec::new();
        for _ in 0..n {
            v.push(s.subscribe().await);
        }
        v
    }

    #[tokio::test]
    async fn explicit_streams_must_exist() {
        let broker = Broker::new(BrokerConfig {
            auto_create_streams: false,
            ..BrokerConfig::default()
        });
        assert_eq!(
            broker.stream(&path("acme/prod/orders")).unwrap_err(),
            BrokerError::StreamNotFound
        );
        broker.declare_stream(path("acme/prod/orders"));
        assert!(broker.stream(&path("acme/prod/orders")).is_ok());
    }

    #[tokio::test]
    async fn block_policy_waits_for_room() {
        let broker = Broker::new(BrokerConfig {
            queue: QueueLimits {
                max_messages: 2,
                max_bytes: 1 << 20,
                policy: SlowConsumerPolicy::Block,
            },
            ..BrokerConfig::default()
        });
        let s = broker.stream(&path("acme/prod/orders")).unwrap();
        let sub = s.subscribe().await;
        for i in 0..2u8 {
            let (c, e) = one(&[i]);
            s.publish(c, e).await;
        }
        let s2 = s.clone();
        let third = tokio::spawn(async move {
            let (c, e) = one(&[2]);
            s2.publish(c, e).await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!third.is_finished(), "publisher must wait for room");
        let mut out = Vec::new();
        sub.recv(&mut out, usize::MAX).await;
        assert_eq!(third.await.unwrap(), 2);
        let mut out = Vec::new();
        assert_eq!(sub.recv(&mut out, usize::MAX).await, Some(0));
        assert_eq!(payloads(&out), vec![Bytes::from(vec![2u8])]);
    }

    #[tokio::test]
    async fn drop_oldest_counts_what_was_missed() {
        let broker = Broker::new(BrokerConfig {
            queue: QueueLimits {
                max_messages: 3,
                max_bytes: 1 << 20,
                policy: SlowConsumerPolicy::DropOldest,
            },
            ..BrokerConfig::default()
        });
        let s = broker.stream(&path("acme/prod/orders")).unwrap();
        let sub = s.subscribe().await;
        for i in 0..10u8 {
            let (c, e) = one(&[i]);
            s.publish(c, e).await;
        }
        let mut out = Vec::new();
        assert_eq!(sub.recv(&mut out, usize::MAX).await, Some(7));
        assert_eq!(
            payloads(&out),
            vec![
                Bytes::from(vec![7u8]),
                Bytes::from(vec![8u8]),
                Bytes::from(vec![9u8])
            ]
        );
        assert_eq!(out[0].first_seq, 7);
    }

    #[tokio::test]
    async fn queue_depths_sum_the_live_queues_even_with_a_publisher_blocked() {
        let broker = Broker::new(BrokerConfig {
            queue: QueueLimits {
                max_messages: 4,
                max_bytes: 1 << 20,
                policy: SlowConsumerPolicy::Block,
            },
            ..BrokerConfig::default()
        });
        assert_eq!(broker.queue_depths(), QueueDepths::default());
        let orders = broker.stream(&path("acme/prod/orders")).unwrap();
        let audit = broker.stream(&path("globex/prod/audit")).unwrap();
        let slow = orders.subscribe().await;
        let idle = audit.subscribe().await;
        for i in 0..4u8 {
            let (c, e) = one(&[i]);
            orders.publish(c, e).await;
        }
        let (c, e) = one(b"x");
        audit.publish(c, e).await;
        // A fifth message waits for room in `slow`, holding the stream's
        // lock: the depths are still read.
        let o = orders.clone();
        let blocked = tokio::spawn(async move {
            let (c, e) = one(&[4]);
            o.publish(c, e).await
        });
        // The test runtime has one thread: yielding lets the publisher run
        // until it waits for room.
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        assert!(!blocked.is_finished(), "the publisher waits for room");
        let d = broker.queue_depths();
        assert_eq!(d.subscribers, 2);
        assert_eq!(d.messages, 5);
        assert_eq!(d.bytes, 5 * one(b"x").1.len() as u64);
        assert_eq!(d.max_messages, 4);
        assert_eq!(d.near_full, 1, "only the full queue of `slow`");

        let mut out = Vec::new();
        slow.recv(&mut out, usize::MAX).await;
        tokio::time::timeout(Duration::from_secs(10), blocked)
            .await
            .expect("publisher released")
            .unwrap();
        drop(idle);
        let d = broker.queue_depths();
        assert_eq!(d.subscribers, 1, "a closed subscription is not counted");
        assert_eq!(d.messages, 1);
        assert_eq!(d.near_full, 0);
    }

    #[tokio::test]
    async fn closing_a_subscription_releases_a_blocked_publisher() {
        let broker = Broker::new(BrokerConfig {
            queue: QueueLimits {
                max_messages: 1,
                max_bytes: 1 << 20,
                policy: SlowConsumerPolicy::Block,
            },
            ..BrokerConfig::default()
        });
        let s = broker.stream(&path("acme/prod/orders")).unwrap();
        let sub = s.subscribe().await;
        let (c, e) = one(b"a");
        s.publish(c, e).await;
        let s2 = s.clone();
        let blocked = tokio::spawn(async move {
            let (c, e) = one(b"b");
            s2.publish(c, e).await
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(sub);
        tokio::time::timeout(Duration::from_secs(5), blocked)
            .await
            .expect("publisher released")
            .unwrap();
        assert_eq!(s.subscriber_count().await, 0);
    }
}
