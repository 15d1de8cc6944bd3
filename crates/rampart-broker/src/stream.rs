//! Streams: sequence numbers and live fan-out to subscribers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, Weak};

use bytes::Bytes;
use rampart_log::Level;
use rampart_proto::{SharedEvents, StartAt, StreamPath};

use crate::consumer::ConsumerOptions;
use crate::durable::{Commit, Cursor, DurableStream, Member, Published};
use crate::queue::{Pushed, QueueDepths, QueueLimits, SubQueue};
use crate::BrokerError;

#[derive(Debug, Default)]
struct Inner {
    next_seq: u64,
    subscribers: Vec<Arc<SubQueue>>,
}

/// One stream, live or durable.
///
/// Live: publishing takes the stream's lock for the time it takes to number
/// the batch and queue it for every subscriber, so every subscriber sees the
/// same order. Durable: publishing appends to the stream's log, and every
/// subscriber reads the log (see [`DurableStream`]).
#[derive(Debug)]
pub struct Stream {
    path: StreamPath,
    inner: tokio::sync::Mutex<Inner>,
    limits: QueueLimits,
    durable: Option<Arc<DurableStream>>,
    /// A durable stream that failed to open: every use is refused with
    /// this reason, rather than served as a live stream.
    unavailable: Option<String>,
    /// Set once the stream is deleted or replaced: holders of this handle
    /// (connections cache them) must look the path up again.
    removed: std::sync::atomic::AtomicBool,
    /// The subscriber queues again, for [`Stream::add_depths`]: `inner`'s
    /// lock is held by a publisher waiting for room, exactly when depths
    /// matter, so scrapes read these instead. Touched when subscribing and
    /// scraping only, never when publishing.
    queues: Mutex<Vec<Weak<SubQueue>>>,
}

impl Stream {
    fn new(path: StreamPath, limits: QueueLimits, durable: Option<Arc<DurableStream>>) -> Self {
        Self {
            path,
            inner: tokio::sync::Mutex::new(Inner::default()),
            limits,
            durable,
            unavailable: None,
            removed: std::sync::atomic::AtomicBool::new(false),
            queues: Mutex::new(Vec::new()),
        }
    }

    fn queues(&self) -> std::sync::MutexGuard<'_, Vec<Weak<SubQueue>>> {
        // Only pushes and retains happen under it: never torn.
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check(&self) -> Result<(), BrokerError> {
        match &self.unavailable {
            Some(why) => Err(BrokerError::Unavailable(why.clone())),
            None => Ok(()),
        }
    }

    pub fn path(&self) -> &StreamPath {
        &self.path
    }

    /// False once the stream was deleted or replaced by another of the same
    /// path: a cached handle must then be looked up again.
    pub fn is_current(&self) -> bool {
        !self.removed.load(std::sync::atomic::Ordering::Acquire)
    }

    fn mark_removed(&self) {
        self.removed
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// The log of a durable stream.
    pub fn durable(&self) -> Option<&Arc<DurableStream>> {
        self.durable.as_ref()
    }

    /// Publishes and reports the level reached: [`Level::Memory`] for a live
    /// stream, the sync policy's level for a durable one.
    pub async fn publish_acked(
        &self,
        count: u32,
        entries: Bytes,
    ) -> Result<Published, BrokerError> {
        self.publish_queued(count, entries).await?.await
    }

    /// Publishes without waiting for the level: returns once the messages
    /// have their place in the stream, with a [`Commit`] that resolves to
    /// what [`publish_acked`](Self::publish_acked) returns. A live stream's
    /// publish is complete when this returns; a durable one's commit
    /// resolves once the sync policy's level is reached, and publishes
    /// queued one after another keep their order (see
    /// [`DurableStream::append_queued`]).
    pub async fn publish_queued(&self, count: u32, entries: Bytes) -> Result<Commit, BrokerError> {
        self.check()?;
        match &self.durable {
            Some(d) => d.append_queued(count, entries).await,
            None => Ok(Commit::done(Ok(Published {
                first_seq: self.publish(count, entries).await,
                count,
                level: Level::Memory,
            }))),
        }
    }

    /// Subscribes from `start`. Live streams serve only [`StartAt::New`].
    pub async fn subscribe_at(
        self: &Arc<Self>,
        start: StartAt,
    ) -> Result<Subscription, BrokerError> {
        self.check()?;
        match &self.durable {
            Some(d) => Ok(Subscription {
                source: Source::Log(d.cursor(start)?),
                stream: self.clone(),
            }),
            None if start == StartAt::New => Ok(self.subscribe().await),
            None => Err(BrokerError::NotDurable),
        }
    }

    /// Joins the named consumer of a durable stream (creating it at `start`
    /// with `opts` if new).
    pub fn consume(
        self: &Arc<Self>,
        consumer: &str,
        start: StartAt,
        opts: Option<ConsumerOptions>,
    ) -> Result<Subscription, BrokerError> {
        self.check()?;
        let d = self.durable.as_ref().ok_or(BrokerError::NotDurable)?;
        Ok(Subscription {
            source: Source::Member(d.join(consumer, start, opts)?),
            stream: self.clone(),
        })
    }

    /// Publishes `count` messages already encoded as entries to a live
    /// stream. Returns once every current subscriber has them queued; under
    /// the `block` policy that waits for slow subscribers to make room.
    /// Messages published while nobody subscribes are numbered and dropped
    /// (live streams keep no log). Durable streams: use
    /// [`Stream::publish_acked`].
    pub async fn publish(&self, count: u32, entries: Bytes) -> u64 {
        let mut inner = self.inner.lock().await;
        let first_seq = inner.next_seq;
        inner.next_seq += u64::from(count);
        if inner.subscribers.is_empty() {
            return first_seq;
        }
        let batch = SharedEvents {
            first_seq,
            count,
            entries,
        };
        let mut closed = false;
        for sub in &inner.subscribers {
            closed |= sub.push(&batch).await == Pushed::Closed;
        }
        if closed {
            inner.subscribers.retain(|s| !s.is_closed());
        }
        first_seq
    }

    /// Adds a subscriber that sees every message published from now on.
    pub async fn subscribe(self: &Arc<Self>) -> Subscription {
        let queue = Arc::new(SubQueue::new(self.limits));
        let mut inner = self.inner.lock().await;
        inner.subscribers.retain(|s| !s.is_closed());
        inner.subscribers.push(queue.clone());
        drop(inner);
        {
            let mut queues = self.queues();
            queues.retain(|q| q.upgrade().is_some_and(|q| !q.is_closed()));
            queues.push(Arc::downgrade(&queue));
        }
        Subscription {
            source: Source::Live(queue),
            stream: self.clone(),
        }
    }

    /// Ends every subscription (the stream was deleted, or the server
    /// stops); a durable stream also saves its consumers.
    pub async fn close_all(&self) {
        if let Some(d) = &self.durable {
            d.close();
        }
        let mut inner = self.inner.lock().await;
        for s in inner.subscribers.drain(..) {
            s.close();
        }
    }

    /// Adds the queues of this stream's live subscribers to `d`.
    pub(crate) fn add_depths(&self, d: &mut QueueDepths) {
        let queues: Vec<Arc<SubQueue>> = self.queues().iter().filter_map(Weak::upgrade).collect();
        for q in queues {
            q.add_depth(d);
        }
    }

    /// Number of live subscribers.
    pub async fn subscriber_count(&self) -> usize {
        let inner = self.inner.lock().await;
        inner.subscribers.iter().filter(|s| !s.is_closed()).count()
    }
}

/// The receiving end of a subscription: live, a reader of a durable
/// stream, or a member of a durable consumer. Dropping it unsubscribes (a
/// member's unacknowledged messages go to the other members).
#[derive(Debug)]
pub struct Subscription {
    source: Source,
    stream: Arc<Stream>,
}

#[derive(Debug)]
enum Source {
    Live(Arc<SubQueue>),
    Log(Cursor),
    Member(Member),
}

impl Subscription {
    /// Waits for messages and appends up to `max_bytes` worth of batches to
    /// `out` (always at least one batch). Returns how many messages this
    /// subscriber missed (under `drop_oldest`, or removed by retention
    /// before a durable reader got to them) since the previous call, or
    /// `None` when the subscription ended ([`Subscription::ended`] says
    /// why, if it was an error).
    ///
    /// Cancel safe for live subscriptions; a durable reader or member keeps
    /// its position in the subscription itself.
    pub async fn recv(&self, out: &mut Vec<SharedEvents>, max_bytes: usize) -> Option<u64> {
        match &self.source {
            Source::Live(q) => q.pop(out, max_bytes).await,
            Source::Log(c) => c.recv(out, max_bytes).await,
            Source::Member(m) => m.recv(out, max_bytes).await,
        }
    }

    pub fn stream(&self) -> &StreamPath {
        self.stream.path()
    }

    /// Whether this is a member of a durable consumer (it takes acks).
    pub fn is_consumer(&self) -> bool {
        matches!(self.source, Source::Member(_))
    }

    /// Acknowledges offsets delivered to this consumer; returns how many
    /// were outstanding. [`BrokerError::NotAConsumer`] for other kinds.
    pub fn ack(&self, offsets: &[u64]) -> Result<u32, BrokerError> {
        match &self.source {
            Source::Member(m) => Ok(m.ack(offsets)),
            _ => Err(BrokerError::NotAConsumer),
        }
    }

    /// Why the server ended this subscription, when it was an error (a
    /// damaged range of the log, a storage failure).
    pub fn ended(&self) -> Option<BrokerError> {
        match &self.source {
            Source::Live(_) => None,
            Source::Log(c) => c.ended(),
            Source::Member(m) => m.ended(),
        }
    }

    /// Ends the subscription; a publisher blocked on it is released.
    pub fn close(&self) {
        match &self.source {
            Source::Live(q) => q.close(),
            Source::Log(c) => c.close(),
            Source::Member(m) => m.close(),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.close();
    }
}

/// All streams of a server.
#[derive(Debug)]
pub(crate) struct Streams {
    map: RwLock<HashMap<StreamPath, Arc<Stream>>>,
    limits: QueueLimits,
    auto_create: bool,
}

impl Streams {
    pub(crate) fn new(limits: QueueLimits, auto_create: bool) -> Self {
        Self {
            map: RwLock::new(HashMap::new()),
            limits,
            auto_create,
        }
    }

    pub(crate) fn declare(&self, path: StreamPath) -> Arc<Stream> {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        map.entry(path.clone())
            .or_insert_with(|| Arc::new(Stream::new(path, self.limits, None)))
            .clone()
    }

    /// Adds (or replaces) a durable stream; returns the stream it replaced.
    pub(crate) fn insert_durable(&self, d: Arc<DurableStream>) -> Option<Arc<Stream>> {
        let path = d.path().clone();
        let s = Arc::new(Stream::new(path.clone(), self.limits, Some(d)));
        let old = self
            .map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path, s);
        if let Some(o) = &old {
            o.mark_removed();
        }
        old
    }

    /// Registers a durable stream that could not be opened.
    pub(crate) fn insert_unavailable(&self, path: StreamPath, why: String) {
        let mut s = Stream::new(path.clone(), self.limits, None);
        s.unavailable = Some(why);
        let old = self
            .map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path, Arc::new(s));
        if let Some(o) = old {
            o.mark_removed();
        }
    }

    pub(crate) fn all(&self) -> Vec<Arc<Stream>> {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub(crate) fn remove(&self, path: &StreamPath) -> Option<Arc<Stream>> {
        let old = self
            .map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(path);
        if let Some(o) = &old {
            o.mark_removed();
        }
        old
    }

    pub(crate) fn existing(&self, path: &StreamPath) -> Option<Arc<Stream>> {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
            .cloned()
    }

    pub(crate) fn get(&self, path: &StreamPath) -> Result<Arc<Stream>, BrokerError> {
        if let Some(s) = self.map.read().unwrap_or_else(|e| e.into_inner()).get(path) {
            return Ok(s.clone());
        }
        if self.auto_create {
            Ok(self.declare(path.clone()))
        } else {
            Err(BrokerError::StreamNotFound)
        }
    }
}
