//! The bounded per-subscriber queue and its slow-consumer policies.

use std::collections::VecDeque;
use std::sync::Mutex;

use rampart_proto::SharedEvents;
use tokio::sync::Notify;

/// What happens when a subscriber's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SlowConsumerPolicy {
    /// The publisher waits until the subscriber has room (no loss).
    #[default]
    Block,
    /// The oldest queued messages are dropped and the subscriber is told how
    /// many it missed.
    DropOldest,
}

/// Bounds of one subscriber queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    pub max_messages: usize,
    pub max_bytes: usize,
    pub policy: SlowConsumerPolicy,
}

impl Default for QueueLimits {
    fn default() -> Self {
        Self {
            max_messages: 16 * 1024,
            max_bytes: 64 * 1024 * 1024,
            policy: SlowConsumerPolicy::Block,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    batches: VecDeque<SharedEvents>,
    messages: usize,
    bytes: usize,
    missed: u64,
    closed: bool,
}

/// Queue between one stream and one subscriber. Holds shared, already
/// encoded batches, so fan-out to N subscribers costs N reference-count
/// increments, not N encodings.
#[derive(Debug)]
pub(crate) struct SubQueue {
    state: Mutex<State>,
    data: Notify,
    space: Notify,
    limits: QueueLimits,
}

/// Outcome of one push.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    Queued,
    /// The subscriber is gone; the stream can forget it.
    Closed,
}

impl SubQueue {
    pub(crate) fn new(limits: QueueLimits) -> Self {
        Self {
            state: Mutex::new(State::default()),
            data: Notify::new(),
            space: Notify::new(),
            limits,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queue torn (every
        // update is a few field writes), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fits(&self, s: &State, batch: &SharedEvents) -> bool {
        s.batches.is_empty()
            || (s.messages + batch.count as usize <= self.limits.max_messages
                && s.bytes + batch.entries.len() <= self.limits.max_bytes)
    }

    /// Adds a batch, applying the slow-consumer policy when full.
    pub(crate) async fn push(&self, batch: &SharedEvents) -> Pushed {
        loop {
            let space = self.space.notified();
            {
                let mut s = self.lock();
                if s.closed {
                    return Pushed::Closed;
                }
                if !self.fits(&s, batch) && self.limits.policy == SlowConsumerPolicy::DropOldest {
                    while !self.fits(&s, batch) {
                        let Some(old) = s.batches.pop_front() else {
                            break;
                        };
                        s.messages -= old.count as usize;
                        s.bytes -= old.entries.len();
                        s.missed += u64::from(old.count);
                    }
                }
                if self.fits(&s, batch) {
                    s.messages += batch.count as usize;
                    s.bytes += batch.entries.len();
                    s.batches.push_back(batch.clone());
                    drop(s);
                    self.data.notify_one();
                    return Pushed::Queued;
                }
            }
            space.await;
        }
    }

    /// Waits for batches and moves up to `max_bytes` of them (at least one)
    /// into `out`. Returns the number of messages missed since the last call,
    /// or `None` once the queue is closed and empty.
    pub(crate) async fn pop(&self, out: &mut Vec<SharedEvents>, max_bytes: usize) -> Option<u64> {
        loop {
            let data = self.data.notified();
            {
                let mut s = self.lock();
                if !s.batches.is_empty() {
                    let mut taken = 0usize;
                    while let Some(len) = s.batches.front().map(|b| b.entries.len()) {
                        if taken > 0 && taken + len > max_bytes {
                            break;
                        }
                        let Some(b) = s.batches.pop_front() else {
                            break;
                        };
                        taken += len;
                        s.messages -= b.count as usize;
                        s.bytes -= len;
                        out.push(b);
                    }
                    let missed = std::mem::take(&mut s.missed);
                    drop(s);
                    self.space.notify_one();
                    return Some(missed);
                }
                if s.closed {
                    return None;
                }
            }
            data.await;
        }
    }

    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.data.notify_one();
        self.space.notify_one();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Adds what this queue holds now to `d`; nothing once it is closed.
    /// Takes the queue's lock once, like a push: for scrapes, not for the
    /// publish path.
    pub(crate) fn add_depth(&self, d: &mut QueueDepths) {
        let (messages, bytes) = {
            let s = self.lock();
            if s.closed {
                return;
            }
            (s.messages, s.bytes)
        };
        d.subscribers += 1;
        d.messages += messages as u64;
        d.bytes += bytes as u64;
        d.max_messages = d.max_messages.max(messages as u64);
        // Full by either bound: `messages / max_messages >= 3/4` or the same
        // for bytes, in integers (the bounds are at least 1).
        let near = |n: usize, max: usize| (n as u128) * 4 >= (max as u128) * 3;
        if near(messages, self.limits.max_messages) || near(bytes, self.limits.max_bytes) {
            d.near_full += 1;
        }
    }
}

/// The queues of live subscribers, summed at one moment: what
/// [`Broker::queue_depths`](crate::Broker::queue_depths) reports. Durable
/// readers and consumers have no queue of their own (they read the log),
/// so they are not in it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueDepths {
    /// Live subscriptions open.
    pub subscribers: u64,
    /// Messages queued for them, all together.
    pub messages: u64,
    /// Entry bytes queued for them, all together.
    pub bytes: u64,
    /// The most messages queued for any one of them.
    pub max_messages: u64,
    /// Queues at least three quarters full, by messages or by bytes: the
    /// subscribers about to slow their publishers down (`block`) or lose
    /// messages (`drop_oldest`).
    pub near_full: u64,
}
