//! The audit log's fsync thread. The writer thread writes each batch to
//! the file and hands it here; this thread fsyncs what it was handed,
//! answers the callers waiting for durability and, after a checkpoint's
//! fsync, points `HEAD` at it. So the writer never waits for the disk to
//! flush: a record at the `written` level (vault reads) is answered once it
//! is written, even while an fsync (a login's, a checkpoint's, the lag's)
//! is slow or stuck.
//!
//! Group commit: one fsync covers every batch handed over before it, and
//! the writer goes on writing the next batches while it runs. Batches
//! nobody waits on are fsynced within [`SYNC_LAG`].
//!
//! A failed fsync loses every record written since the last good one:
//! this thread fails the waiters of every batch it holds, counts their
//! records lost and marks the log *poisoned*. Before its next write the
//! writer cuts the file and its chain back to the last good fsync
//! ([`Syncer::take_poison`]), which starts a new *epoch*: batches written
//! before the cut that reach this thread afterwards are failed as well.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::files;
use crate::record::{Chain, Head};
use crate::writer::{fsync, Counters, Reply, Warn};

/// The longest a written record waits for its fsync when no caller asks
/// for durability.
pub(crate) const SYNC_LAG: Duration = Duration::from_millis(100);

/// Where the log stood at the last good fsync: what a failed one goes
/// back to.
#[derive(Debug, Clone)]
pub(crate) struct Synced {
    pub(crate) file_seq: u64,
    /// The file's fsynced length.
    pub(crate) len: u64,
    pub(crate) chain: Chain,
    pub(crate) since_checkpoint: u64,
}

/// One written batch, handed over for its fsync.
pub(crate) struct Handed {
    pub(crate) file: Arc<File>,
    /// Where the log stands after this batch.
    pub(crate) after: Synced,
    /// Its event records (checkpoints not counted), lost if it fails.
    pub(crate) records: u64,
    /// Callers waiting for durability.
    pub(crate) replies: Vec<Reply>,
    /// The batch ends with a checkpoint: `HEAD` names it once fsynced.
    pub(crate) head: Option<Head>,
    /// Fsync at once rather than within [`SYNC_LAG`].
    pub(crate) urgent: bool,
}

struct Queued {
    batch: Handed,
    epoch: u64,
    at: Instant,
    /// The writer waiting for this batch (a rotation).
    done: Option<SyncSender<Result<(), String>>>,
}

struct State {
    queue: VecDeque<Queued>,
    urgent: bool,
    /// The thread waits for work (with the lag's timeout if it holds any).
    waiting: bool,
    epoch: u64,
    poisoned: bool,
    synced: Synced,
    stop: bool,
}

struct Shared {
    state: Mutex<State>,
    work: Condvar,
    /// Mirrors `State::poisoned`, for the writer's check before each batch.
    poisoned: AtomicBool,
    dir: PathBuf,
    counters: Arc<Counters>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change is made whole under the lock: a poisoned one is
        // still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The writer's handle on the fsync thread. Stopping it fsyncs whatever
/// it still holds first.
pub(crate) struct Syncer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Syncer {
    pub(crate) fn start(
        dir: PathBuf,
        counters: Arc<Counters>,
        synced: Synced,
    ) -> io::Result<Syncer> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                urgent: false,
                waiting: false,
                epoch: 0,
                poisoned: false,
                synced,
                stop: false,
            }),
            work: Condvar::new(),
            poisoned: AtomicBool::new(false),
            dir,
            counters,
        });
        let theirs = shared.clone();
        let thread = thread::Builder::new()
            .name("rampart-audit-sync".into())
            .spawn(move || run(&theirs))?;
        Ok(Syncer {
            shared,
            thread: Some(thread),
        })
    }

    /// Hands a written batch over; its waiters are answered once it is
    /// fsynced (or failed).
    pub(crate) fn hand(&self, batch: Handed) {
        self.push(batch, None);
    }

    /// Hands a written batch over and waits until it is fsynced (and
    /// `HEAD` updated if it ends with a checkpoint).
    pub(crate) fn hand_and_wait(&self, mut batch: Handed) -> Result<(), String> {
        let (tx, rx) = sync_channel(1);
        batch.urgent = true;
        self.push(batch, Some(tx));
        rx.recv()
            .unwrap_or_else(|_| Err("the audit fsync thread is gone".into()))
    }

    fn push(&self, batch: Handed, done: Option<SyncSender<Result<(), String>>>) {
        let mut st = self.shared.lock();
        // A wake-up is a system call, and for the thread a context switch:
        // only when it waits and this changes what it waits for (the first
        // batch starts the lag; an urgent one ends it).
        let wake = st.waiting && (st.queue.is_empty() || (batch.urgent && !st.urgent));
        st.urgent |= batch.urgent;
        let epoch = st.epoch;
        st.queue.push_back(Queued {
            batch,
            epoch,
            at: Instant::now(),
            done,
        });
        drop(st);
        if wake {
            self.shared.work.notify_one();
        }
    }

    /// After a failed fsync: where the log stood at the last good one, to
    /// cut back to, once; batches handed over before this call are failed.
    /// `None` when nothing failed.
    pub(crate) fn take_poison(&self) -> Option<Synced> {
        if !self.shared.poisoned.load(Relaxed) {
            return None;
        }
        let mut st = self.shared.lock();
        if !st.poisoned {
            return None;
        }
        st.poisoned = false;
        st.epoch += 1;
        self.shared.poisoned.store(false, Relaxed);
        Some(st.synced.clone())
    }

    /// Fsyncs what it holds, then stops the thread.
    pub(crate) fn stop(mut self) {
        self.signal_stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    fn signal_stop(&self) {
        self.shared.lock().stop = true;
        self.shared.work.notify_one();
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        // Not stopped (the writer panicked): let the thread finish on its
        // own rather than wait for it here.
        if self.thread.is_some() {
            self.signal_stop();
        }
    }
}

/// The thread's body: take what was handed over once a batch is urgent or
/// the oldest has waited [`SYNC_LAG`], fsync it once, answer.
fn run(shared: &Shared) {
    let mut warn = Warn::default();
    loop {
        let (taken, epoch, poisoned) = {
            let mut st = shared.lock();
            loop {
                let wait = match st.queue.front() {
                    None if st.stop => return,
                    None => None,
                    Some(first) => {
                        let due = first.at + SYNC_LAG;
                        let now = Instant::now();
                        if st.stop || st.urgent || now >= due {
                            break;
                        }
                        Some(due - now)
                    }
                };
                st.waiting = true;
                st = match wait {
                    None => shared.work.wait(st).unwrap_or_else(|e| e.into_inner()),
                    Some(d) => {
                        shared
                            .work
                            .wait_timeout(st, d)
                            .unwrap_or_else(|e| e.into_inner())
                            .0
                    }
                };
                st.waiting = false;
            }
            st.urgent = false;
            let taken: Vec<Queued> = st.queue.drain(..).collect();
            (taken, st.epoch, st.poisoned)
        };
        // Written before a cut-back, or after a failed fsync the writer has
        // not cut back yet: gone from the file, or about to be.
        let (live, stale): (Vec<Queued>, Vec<Queued>) = taken
            .into_iter()
            .partition(|q| !poisoned && q.epoch == epoch);
        if !stale.is_empty() {
            fail(
                shared,
                stale,
                "written after an audit fsync that failed; cut off the file",
            );
        }
        if live.is_empty() {
            continue;
        }
        let started = Instant::now();
        let result = sync_files(shared, &live);
        shared.counters.fsync.record(started.elapsed());
        match result {
            Ok(()) => synced(shared, live, &mut warn),
            Err(e) => {
                let reason = e.to_string();
                {
                    let mut st = shared.lock();
                    st.poisoned = true;
                    shared.poisoned.store(true, Relaxed);
                }
                warn.failed(
                    &shared.counters,
                    "audit fsync failed; the records written since the last one are lost",
                    &shared.dir.display(),
                    &e,
                );
                fail(shared, live, &reason);
            }
        }
    }
}

/// One fsync per file the batches went to (two only across a rotation),
/// oldest first.
fn sync_files(shared: &Shared, live: &[Queued]) -> io::Result<()> {
    for (i, q) in live.iter().enumerate() {
        let last_of_file = live
            .get(i + 1)
            .is_none_or(|next| next.batch.after.file_seq != q.batch.after.file_seq);
        if last_of_file {
            fsync(&shared.dir, &q.batch.file)?;
        }
    }
    Ok(())
}

/// After a good fsync: the new synced point, then the answers, then `HEAD`.
fn synced(shared: &Shared, live: Vec<Queued>, warn: &mut Warn) {
    let c = &shared.counters;
    c.fsyncs.fetch_add(1, Relaxed);
    c.failing_since_ms.store(0, Relaxed);
    if let Some(last) = live.last() {
        shared.lock().synced = last.batch.after.clone();
    }
    for q in live {
        for reply in q.batch.replies {
            let _ = reply.send(Ok(()));
        }
        if let Some(head) = &q.batch.head {
            if let Err(e) = files::write_head(&shared.dir, head) {
                warn.failed(c, "HEAD could not be updated", &shared.dir.display(), &e);
            }
            // Counted once HEAD names it, so that whoever sees the count
            // finds a directory that verifies.
            c.checkpoints.fetch_add(1, Relaxed);
        }
        if let Some(done) = q.done {
            let _ = done.send(Ok(()));
        }
    }
}

/// The batches' records are lost: counted first, so that a caller told
/// no sees the count, then every waiter refused.
fn fail(shared: &Shared, batches: Vec<Queued>, reason: &str) {
    let lost: u64 = batches.iter().map(|q| q.batch.records).sum();
    shared.counters.lost.fetch_add(lost, Relaxed);
    for q in batches {
        for reply in q.batch.replies {
            let _ = reply.send(Err(()));
        }
        if let Some(done) = q.done {
            let _ = done.send(Err(reason.to_owned()));
        }
    }
}
