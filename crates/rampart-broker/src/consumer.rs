//! The bookkeeping of one durable consumer: which offsets are delivered to
//! which member and until when, which are acknowledged, and where the
//! committed position is. Pure: no IO, no clock of its own (callers pass
//! `now`), so every rule is tested directly.
//!
//! Delivery is at-least-once. An offset is handed to one member at a time;
//! it comes back for redelivery when its ack deadline passes or its member
//! leaves. The committed position is the first offset not yet acknowledged:
//! everything below it is done and survives a restart (it is persisted);
//! acknowledgements above it are kept in memory only, so after a server
//! restart those few may be delivered again.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Settings of one consumer, fixed when it is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerOptions {
    /// Offsets delivered and not yet acknowledged, across all members.
    pub max_in_flight: u32,
    /// How long a member has to acknowledge a delivery before it is given
    /// to another member (or the same one) again.
    pub ack_wait: Duration,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        Self {
            max_in_flight: 1000,
            ack_wait: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InFlight {
    member: u64,
    deadline: Instant,
}

/// What [`ConsumerState::take`] hands one member.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Taken {
    /// Ascending offsets, now in flight to the member.
    pub offsets: Vec<u64>,
}

/// The state of one consumer. See the module docs.
#[derive(Debug)]
pub(crate) struct ConsumerState {
    opts: ConsumerOptions,
    /// Every offset below it is acknowledged.
    committed: u64,
    /// Acknowledged offsets at or above `committed`.
    acked: BTreeSet<u64>,
    /// Next offset never handed out.
    next: u64,
    in_flight: BTreeMap<u64, InFlight>,
    /// Offsets to hand out again before any new one.
    redeliver: BTreeSet<u64>,
    /// Offsets skipped because the log no longer holds them (retention or
    /// damage), since creation.
    lost: u64,
    /// The committed position changed since the last [`Self::mark_saved`].
    dirty: bool,
}

impl ConsumerState {
    /// A consumer whose committed position is `committed`.
    pub(crate) fn new(opts: ConsumerOptions, committed: u64) -> Self {
        Self {
            opts,
            committed,
            acked: BTreeSet::new(),
            next: committed,
            in_flight: BTreeMap::new(),
            redeliver: BTreeSet::new(),
            lost: 0,
            dirty: false,
        }
    }

    pub(crate) fn options(&self) -> ConsumerOptions {
        self.opts
    }

    pub(crate) fn committed(&self) -> u64 {
        self.committed
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    pub(crate) fn lost(&self) -> u64 {
        self.lost
    }

    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty
    }

    pub(crate) fn mark_saved(&mut self) {
        self.dirty = false;
    }

    /// A save failed: try again next time.
    pub(crate) fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// Moves deliveries whose deadline passed back to the redelivery set.
    pub(crate) fn expire(&mut self, now: Instant) {
        let expired: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.deadline <= now)
            .map(|(o, _)| *o)
            .collect();
        for o in expired {
            self.in_flight.remove(&o);
            self.redeliver.insert(o);
        }
    }

    /// The earliest ack deadline, for a timer.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.in_flight.values().map(|f| f.deadline).min()
    }

    /// Hands `member` up to `max` offsets: redeliveries first, then new
    /// offsets below `end` (the log's end), within the in-flight bound.
    pub(crate) fn take(&mut self, member: u64, max: usize, end: u64, now: Instant) -> Taken {
        self.expire(now);
        let room = (self.opts.max_in_flight as usize)
            .saturating_sub(self.in_flight.len())
            .min(max);
        let deadline = now + self.opts.ack_wait;
        let mut offsets = Vec::new();
        while offsets.len() < room {
            let Some(o) = self.redeliver.pop_first() else {
                break;
            };
            if o >= self.committed && !self.acked.contains(&o) {
                offsets.push(o);
            }
        }
        // Redeliveries and new offsets go out in separate batches, so that
        // what one batch holds is always ascending.
        if offsets.is_empty() {
            while offsets.len() < room && self.next < end {
                offsets.push(self.next);
                self.next += 1;
            }
        }
        for &o in &offsets {
            self.in_flight.insert(o, InFlight { member, deadline });
        }
        Taken { offsets }
    }

    /// Gives back offsets taken but not delivered (the batch was cut short),
    /// to be handed out first next time.
    pub(crate) fn untake(&mut self, offsets: &[u64]) {
        for o in offsets {
            if self.in_flight.remove(o).is_some() {
                self.redeliver.insert(*o);
            }
        }
    }

    /// Marks offsets the log can no longer serve as done (and counts them),
    /// so the consumer moves past them.
    pub(crate) fn skip_lost(&mut self, offsets: impl IntoIterator<Item = u64>) {
        for o in offsets {
            self.in_flight.remove(&o);
            self.redeliver.remove(&o);
            if o >= self.committed && self.acked.insert(o) {
                self.lost += 1;
            }
        }
        self.advance();
    }

    /// Moves the consumer to `first` when the log's first offset passed it
    /// (retention removed what it had not consumed); returns how many
    /// offsets were lost that way.
    pub(crate) fn skip_to(&mut self, first: u64) -> u64 {
        if self.committed >= first {
            return 0;
        }
        // Delivered-but-unacknowledged offsets are lost too: they will not
        // come again.
        let lost = (first - self.committed) - self.acked.range(..first).count() as u64;
        self.in_flight = self.in_flight.split_off(&first);
        self.redeliver = self.redeliver.split_off(&first);
        self.acked = self.acked.split_off(&first);
        self.committed = first;
        self.next = self.next.max(first);
        self.lost += lost;
        self.dirty = true;
        lost
    }

    /// Acknowledges offsets; returns how many were delivered and not yet
    /// acknowledged (late acknowledgements of expired deliveries count).
    pub(crate) fn ack(&mut self, offsets: &[u64]) -> u32 {
        let mut n = 0;
        for &o in offsets {
            let delivered = self.in_flight.remove(&o).is_some() || self.redeliver.remove(&o);
            if delivered && o >= self.committed && self.acked.insert(o) {
                n += 1;
            }
        }
        self.advance();
        n
    }

    /// A member left: what it held goes to the others.
    pub(crate) fn member_left(&mut self, member: u64) {
        let held: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.member == member)
            .map(|(o, _)| *o)
            .collect();
        for o in held {
            self.in_flight.remove(&o);
            self.redeliver.insert(o);
        }
    }

    /// Whether [`Self::take`] could hand out something now.
    #[cfg(test)]
    pub(crate) fn has_work(&self, end: u64) -> bool {
        let room = (self.opts.max_in_flight as usize) > self.in_flight.len();
        room && (!self.redeliver.is_empty() || self.next < end)
    }

    fn advance(&mut self) {
        while self.acked.remove(&self.committed) {
            self.committed += 1;
            self.dirty = true;
        }
        self.next = self.next.max(self.committed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(max_in_flight: u32) -> ConsumerState {
        ConsumerState::new(
            ConsumerOptions {
                max_in_flight,
                ack_wait: Duration::from_secs(10),
            },
            0,
        )
    }

    #[test]
    fn hands_out_new_offsets_within_the_in_flight_bound() {
        let mut s = state(3);
        let now = Instant::now();
        assert_eq!(s.take(1, 100, 10, now).offsets, vec![0, 1, 2]);
        assert!(s.take(2, 100, 10, now).offsets.is_empty());
        assert_eq!(s.ack(&[1]), 1);
        assert_eq!(s.committed(), 0, "0 is still out");
        assert_eq!(s.take(2, 100, 10, now).offsets, vec![3]);
        assert_eq!(s.ack(&[0, 2, 3]), 3);
        assert_eq!(s.committed(), 4);
        assert!(s.is_dirty());
    }

    #[test]
    fn acks_count_only_what_was_delivered_and_unacknowledged() {
        let mut s = state(10);
        let now = Instant::now();
        s.take(1, 2, 10, now);
        assert_eq!(s.ack(&[0, 0, 7]), 1, "duplicate and undelivered offsets");
        assert_eq!(s.ack(&[0]), 0, "already acknowledged");
    }

    #[test]
    fn expired_deliveries_come_back_first_and_late_acks_still_count() {
        let mut s = state(10);
        let t0 = Instant::now();
        assert_eq!(s.take(1, 3, 10, t0).offsets, vec![0, 1, 2]);
        assert_eq!(s.ack(&[1]), 1);
        let later = t0 + Duration::from_secs(11);
        assert_eq!(s.next_deadline(), Some(t0 + Duration::from_secs(10)));
        assert_eq!(s.take(2, 10, 10, later).offsets, vec![0, 2]);
        // The first member acknowledges late: accepted once.
        assert_eq!(s.ack(&[0]), 1);
        assert_eq!(s.ack(&[0]), 0);
        s.expire(later + Duration::from_secs(11));
        assert_eq!(
            s.take(2, 10, 10, later + Duration::from_secs(11)).offsets,
            vec![2],
            "0 is done; 2 timed out again"
        );
        // Late ack of an expired delivery that sits in the redelivery set.
        s.expire(later + Duration::from_secs(30));
        assert_eq!(s.ack(&[2]), 1);
        assert_eq!(s.committed(), 3);
    }

    #[test]
    fn a_member_leaving_gives_its_deliveries_to_the_others() {
        let mut s = state(10);
        let now = Instant::now();
        assert_eq!(s.take(1, 2, 10, now).offsets, vec![0, 1]);
        assert_eq!(s.take(2, 2, 10, now).offsets, vec![2, 3]);
        assert_eq!(s.ack(&[0]), 1);
        s.member_left(1);
        assert_eq!(s.take(2, 10, 10, now).offsets, vec![1]);
        assert_eq!(s.take(2, 10, 10, now).offsets, vec![4, 5, 6, 7, 8, 9]);
    }

    #[test]
    fn untaken_offsets_go_out_first_next_time() {
        let mut s = state(10);
        let now = Instant::now();
        let t = s.take(1, 5, 10, now).offsets;
        s.untake(&t[2..]);
        assert_eq!(s.take(1, 10, 10, now).offsets, vec![2, 3, 4]);
    }

    #[test]
    fn retention_past_the_consumer_is_counted() {
        let mut s = state(10);
        let now = Instant::now();
        s.take(1, 4, 10, now);
        s.ack(&[0, 2]);
        assert_eq!(
            s.skip_to(4),
            2,
            "1 was in flight, 3 in flight; 0 and 2 acked"
        );
        assert_eq!(s.committed(), 4);
        assert_eq!(s.take(1, 10, 10, now).offsets, vec![4, 5, 6, 7, 8, 9]);
        s.skip_lost([4, 5]);
        assert_eq!(s.lost(), 2 + 2);
        assert_eq!(s.committed(), 6);
    }

    #[test]
    fn restart_resumes_at_the_committed_position() {
        let mut s = ConsumerState::new(ConsumerOptions::default(), 42);
        assert_eq!(s.take(1, 2, 100, Instant::now()).offsets, vec![42, 43]);
        assert!(!s.has_work(44));
        assert!(s.has_work(45));
        assert_eq!(s.in_flight(), 2);
    }
}
