//! Streams: sequence numbers and live fan-out to subscribers.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use rampart_proto::{SharedEvents, StreamPath};

use crate::queue::{Pushed, QueueLimits, SubQueue};
use crate::BrokerError;

#[derive(Debug, Default)]
struct Inner {
    next_seq: u64,
    subscribers: Vec<Arc<SubQueue>>,
}

/// One stream. Publishing takes the stream's lock for the time it takes to
/// number the batch and queue it for every subscriber, so every subscriber
/// sees the same order.
#[derive(Debug)]
pub struct Stream {
    path: StreamPath,
    inner: tokio::sync::Mutex<Inner>,
    limits: QueueLimits,
}

impl Stream {
    fn new(path: StreamPath, limits: QueueLimits) -> Self {
        Self {
            path,
            inner: tokio::sync::Mutex::new(Inner::default()),
            limits,
        }
    }

    pub fn path(&self) -> &StreamPath {
        &self.path
    }

    /// Publishes `count` messages already encoded as entries. Returns once
    /// every current subscriber has them queued; under the `block` policy
    /// that waits for slow subscribers to make room. Messages published while
    /// nobody subscribes are numbered and dropped (live streams keep no log).
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
        Subscription {
            queue,
            stream: self.clone(),
        }
    }

    /// Ends every subscription (the stream was deleted).
    pub async fn close_all(&self) {
        let mut inner = self.inner.lock().await;
        for s in inner.subscribers.drain(..) {
            s.close();
        }
    }

    /// Number of live subscribers.
    pub async fn subscriber_count(&self) -> usize {
        let inner = self.inner.lock().await;
        inner.subscribers.iter().filter(|s| !s.is_closed()).count()
    }
}

/// The receiving end of a subscription. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    queue: Arc<SubQueue>,
    stream: Arc<Stream>,
}

impl Subscription {
    /// Waits for messages and appends up to `max_bytes` worth of batches to
    /// `out` (always at least one batch). Returns how many messages this
    /// subscriber missed under `drop_oldest` since the previous call, or
    /// `None` when the subscription was closed.
    pub async fn recv(&self, out: &mut Vec<SharedEvents>, max_bytes: usize) -> Option<u64> {
        self.queue.pop(out, max_bytes).await
    }

    pub fn stream(&self) -> &StreamPath {
        self.stream.path()
    }

    /// Ends the subscription; a publisher blocked on it is released.
    pub fn close(&self) {
        self.queue.close();
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.queue.close();
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
            .or_insert_with(|| Arc::new(Stream::new(path, self.limits)))
            .clone()
    }

    pub(crate) fn remove(&self, path: &StreamPath) -> Option<Arc<Stream>> {
        self.map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(path)
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
