//! Group commit of the vault's writes: concurrent writers share one store
//! commit (one fsync) instead of paying one each, and each is still answered
//! only once the batch holding its change is durable.
//!
//! # How a write goes
//! 1. Under the write lock, a [`Txn`] reads the newest state of the records
//!    it needs: first the *overlay* (changes staged but not yet committed),
//!    then the store. So a second write to a secret sees the first even
//!    while the first is still in flight, and check-and-set, version
//!    numbers and use counts stay exact.
//! 2. Still under the lock, its ops are appended to the *open batch* and
//!    recorded in the overlay; then the lock is released, so the next
//!    writer can prepare its change while this one waits.
//! 3. Without any lock, the writer waits for its batch. The first waiter to
//!    find no commit in progress becomes the *leader*: it takes the whole
//!    open batch (a new, empty one opens), applies it to the store in one
//!    atomic, durable [`KvStore::apply`], records the outcome for every
//!    writer of the batch, drops the batch's overlay entries (unless a later
//!    batch has changed the key again) and wakes everyone. Writers that
//!    staged while it was committing form the next batch, led by one of
//!    them. Batches commit one at a time, in the order they were opened.
//!
//! A transaction that only reads may be tried with
//! [`GroupCommit::run_now`] instead: tries share the write lock with each
//! other (never with a staging transaction), so read-only logins on
//! different threads do not queue behind one another.
//!
//! A lone writer leads its own batch at once: no thread hand-off, no
//! timer, so a write costs no more than before when there is no
//! concurrency. The more writers wait, the larger the next batch.
//!
//! # Failure rule
//! When a batch's commit fails, every writer of that batch gets the error.
//! Changes staged after it may have been computed from its overlay values,
//! which are now known never to reach the store, so:
//! - the batch already open behind it fails too, with every writer in it
//!   (it is the only one: a batch opens only when the previous one is
//!   taken);
//! - the overlay is cleared, so the next writer reads the store again;
//! - the *epoch* is bumped: a writer that read under the old epoch and
//!   stages after the failure is refused, even if it read only committed
//!   records (the simple rule; a storage failure is rare and usually
//!   persists).
//!
//! So no change is ever committed on top of a change that was not, and a
//! write answered `Ok` is in the store. A write answered with an error is
//! not, unless the store reported a failure for a commit that did reach the
//! disk, which it always could.
//!
//! # Reads
//! Only writers (inside a [`Txn`]) see the overlay. Plain reads go to the
//! store and see committed data only: never a change that could still
//! fail. Read-after-acknowledged-write holds, because a write is
//! acknowledged only after its commit. A transaction that makes no change
//! but read a staged value (say, a delete of a version that a staged write
//! already deleted) waits for that value's batch before answering, so no
//! answer rests on a change that is later lost.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Bound;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, RwLock};

use rampart_store::{KvStore, Op, Table};

use crate::error::VaultError;

/// The outcome of one batch, shared by its writers, the overlay entries it
/// made, and its leader. Set once, under the state lock.
#[derive(Debug)]
struct Outcome {
    /// Batches are numbered in the order they open (and commit).
    id: u64,
    result: OnceLock<Result<(), VaultError>>,
}

#[derive(Debug)]
struct Batch {
    ops: Vec<Op>,
    outcome: Arc<Outcome>,
}

impl Batch {
    fn new(id: u64) -> Self {
        Self {
            ops: Vec::new(),
            outcome: Arc::new(Outcome {
                id,
                result: OnceLock::new(),
            }),
        }
    }
}

/// A staged, not yet committed value of a key: `None` is a delete.
struct Pending {
    value: Option<Vec<u8>>,
    outcome: Arc<Outcome>,
}

struct State {
    /// Where writers append. Never being committed.
    open: Batch,
    /// A leader is applying the batch before `open`.
    committing: bool,
    /// The newest staged value of every key with a change in flight.
    overlay: HashMap<Table, BTreeMap<String, Pending>>,
    /// Bumped by every failed commit (see the module docs).
    epoch: u64,
    /// Store commits attempted, for tests and diagnostics.
    commits: u64,
}

impl State {
    fn pending(&self, table: Table, key: &str) -> Option<&Pending> {
        self.overlay.get(&table)?.get(key)
    }

    /// Takes the open batch for a commit, opening the next one.
    fn take_open(&mut self) -> Batch {
        let next = self.open.outcome.id + 1;
        std::mem::replace(&mut self.open, Batch::new(next))
    }
}

/// The write side of the vault: the write lock, the open batch and the
/// overlay over `kv`.
pub(crate) struct GroupCommit {
    kv: Arc<dyn KvStore>,
    /// Serializes transactions that may stage (read, decide, stage): each
    /// holds it alone. Read-only tries ([`run_now`](Self::run_now)) share
    /// it, so they run side by side yet never beside a staging
    /// transaction. Never held while waiting for a commit.
    writes: RwLock<()>,
    state: Mutex<State>,
    /// Signalled whenever a batch gets its outcome.
    done: Condvar,
}

impl fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.lock_state();
        f.debug_struct("GroupCommit")
            .field("open_ops", &st.open.ops.len())
            .field("committing", &st.committing)
            .field("epoch", &st.epoch)
            .field("commits", &st.commits)
            .finish_non_exhaustive()
    }
}

fn key_of(op: &Op) -> (Table, &str) {
    match op {
        Op::Put(t, k, _) | Op::Delete(t, k) => (*t, k),
    }
}

impl GroupCommit {
    pub(crate) fn new(kv: Arc<dyn KvStore>) -> Self {
        Self {
            kv,
            writes: RwLock::new(()),
            state: Mutex::new(State {
                open: Batch::new(1),
                committing: false,
                overlay: HashMap::new(),
                epoch: 0,
                commits: 0,
            }),
            done: Condvar::new(),
        }
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        // Every change to the state is made whole before the lock is
        // released (the store call runs outside it): a poisoned lock is
        // still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs one transaction: `f` reads through the [`Txn`] and pushes its
    /// changes, under the write lock. If `f` returns `Ok` with changes, they
    /// are staged and this returns once they are durable (or with the
    /// commit's error); changes pushed by an `f` that fails are dropped.
    pub(crate) fn run<R>(
        &self,
        f: impl FnOnce(&mut Txn<'_>) -> Result<R, VaultError>,
    ) -> Result<R, VaultError> {
        // The lock guards no data of its own (the state has its lock, the
        // store its transactions): a poisoned one is still good.
        let guard = self.writes.write().unwrap_or_else(|e| e.into_inner());
        let epoch = self.lock_state().epoch;
        let mut txn = Txn {
            gc: self,
            seen: None,
            ops: Vec::new(),
        };
        let out = f(&mut txn);
        let Txn { seen, ops, .. } = txn;
        let wait_for = match &out {
            Ok(_) if !ops.is_empty() => Some(self.stage(epoch, ops)?),
            _ => seen,
        };
        drop(guard);
        if let Some(outcome) = wait_for {
            self.wait(&outcome)?;
        }
        out
    }

    /// Runs `f` as [`run`](Self::run) would, if that would not block: if
    /// `f` pushed changes or read a staged value, nothing is staged or
    /// waited for and this returns `None` (run it again with `run` where
    /// blocking is fine); otherwise `f`'s result.
    ///
    /// Tries share the write lock with each other, not with [`run`]: while
    /// any try runs, nothing is staged, so each sees what it would see
    /// holding the lock alone. Commits go on beside it, as they do beside
    /// `run`: a value leaves the overlay only once it is in the store.
    ///
    /// [`run`]: Self::run
    pub(crate) fn run_now<R>(
        &self,
        f: impl FnOnce(&mut Txn<'_>) -> Result<R, VaultError>,
    ) -> Option<Result<R, VaultError>> {
        let _guard = self.writes.read().unwrap_or_else(|e| e.into_inner());
        let mut txn = Txn {
            gc: self,
            seen: None,
            ops: Vec::new(),
        };
        let out = f(&mut txn);
        (txn.ops.is_empty() && txn.seen.is_none()).then_some(out)
    }

    /// Appends `ops` to the open batch and the overlay. Called under the
    /// write lock.
    fn stage(&self, epoch: u64, ops: Vec<Op>) -> Result<Arc<Outcome>, VaultError> {
        let mut st = self.lock_state();
        if st.epoch != epoch {
            return Err(VaultError::Storage(
                "not stored: an earlier write failed while this one was being prepared".into(),
            ));
        }
        let outcome = Arc::clone(&st.open.outcome);
        for op in &ops {
            let ((table, key), value) = match op {
                Op::Put(t, k, v) => ((*t, k), Some(v.clone())),
                Op::Delete(t, k) => ((*t, k), None),
            };
            st.overlay.entry(table).or_default().insert(
                key.clone(),
                Pending {
                    value,
                    outcome: Arc::clone(&outcome),
                },
            );
        }
        st.open.ops.extend(ops);
        Ok(outcome)
    }

    /// Waits until the batch of `outcome` has one, leading commits while
    /// none is in progress. Called without the write lock.
    fn wait(&self, outcome: &Arc<Outcome>) -> Result<(), VaultError> {
        let mut st = self.lock_state();
        loop {
            if let Some(r) = outcome.result.get() {
                return r.clone();
            }
            if st.committing {
                st = self.done.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            // Nothing is committing and our batch has no outcome: it is
            // the open one (a batch leaves `open` only to be committed, and
            // gets its outcome before `committing` is cleared).
            debug_assert!(Arc::ptr_eq(&st.open.outcome, outcome));
            let batch = st.take_open();
            st.committing = true;
            st.commits += 1;
            drop(st);
            st = self.commit(batch);
        }
    }

    /// Applies `batch` to the store and records the outcome (see the module
    /// docs for the failure rule). A panic in the store fails the batch and
    /// everything staged behind it, then goes on.
    fn commit(&self, batch: Batch) -> MutexGuard<'_, State> {
        let Batch { ops, outcome } = batch;
        let keys: Vec<(Table, String)> = ops
            .iter()
            .map(|op| {
                let (t, k) = key_of(op);
                (t, k.to_string())
            })
            .collect();
        let applied = panic::catch_unwind(AssertUnwindSafe(|| self.kv.apply(ops)));
        let mut st = self.lock_state();
        let (result, panicked) = match applied {
            Ok(Ok(())) => (Ok(()), None),
            Ok(Err(e)) => (Err(VaultError::from(e)), None),
            Err(p) => (
                Err(VaultError::Storage("the store panicked".into())),
                Some(p),
            ),
        };
        match &result {
            Ok(()) => {
                for (table, key) in keys {
                    let Some(m) = st.overlay.get_mut(&table) else {
                        continue;
                    };
                    if m.get(&key)
                        .is_some_and(|p| Arc::ptr_eq(&p.outcome, &outcome))
                    {
                        m.remove(&key);
                    }
                }
                st.overlay.retain(|_, m| !m.is_empty());
            }
            Err(e) => {
                let behind = st.take_open();
                // Nobody holds an empty batch's outcome; setting it is
                // harmless.
                let _ = behind.outcome.result.set(Err(VaultError::Storage(format!(
                    "not stored: an earlier write failed ({e})"
                ))));
                st.overlay.clear();
                st.epoch += 1;
            }
        }
        let _ = outcome.result.set(result);
        st.committing = false;
        self.done.notify_all();
        if let Some(p) = panicked {
            drop(st);
            panic::resume_unwind(p);
        }
        st
    }

    /// Store commits attempted so far.
    #[cfg(test)]
    pub(crate) fn commits(&self) -> u64 {
        self.lock_state().commits
    }

    /// Ops in the open batch (staged, not yet taken by a leader).
    #[cfg(test)]
    pub(crate) fn staged(&self) -> usize {
        self.lock_state().open.ops.len()
    }
}

/// One transaction under the write lock: reads see the newest staged state,
/// changes are pushed and staged together when the transaction succeeds.
/// A transaction does not read its own pushed changes.
pub(crate) struct Txn<'a> {
    gc: &'a GroupCommit,
    /// The newest batch whose staged value was read.
    seen: Option<Arc<Outcome>>,
    ops: Vec<Op>,
}

impl fmt::Debug for Txn<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Txn")
            .field("ops", &self.ops.len())
            .finish_non_exhaustive()
    }
}

impl Txn<'_> {
    fn saw(&mut self, outcome: &Arc<Outcome>) {
        if self.seen.as_ref().is_none_or(|s| s.id < outcome.id) {
            self.seen = Some(Arc::clone(outcome));
        }
    }

    /// The newest value of `key`: staged if a change is in flight, else
    /// committed.
    pub(crate) fn get(&mut self, table: Table, key: &str) -> Result<Option<Vec<u8>>, VaultError> {
        // The overlay first: an entry leaves it only after its value is in
        // the store, so a miss here cannot hide a newer value.
        let st = self.gc.lock_state();
        if let Some(p) = st.pending(table, key) {
            let (value, outcome) = (p.value.clone(), Arc::clone(&p.outcome));
            drop(st);
            self.saw(&outcome);
            return Ok(value);
        }
        drop(st);
        Ok(self.gc.kv.get(table, key)?)
    }

    /// Every entry whose key starts with `prefix`, in key order, with
    /// staged changes applied.
    pub(crate) fn scan(
        &mut self,
        table: Table,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, VaultError> {
        // Snapshot the overlay before scanning the store (as in `get`).
        let staged: Vec<(String, Option<Vec<u8>>, Arc<Outcome>)> = {
            let st = self.gc.lock_state();
            st.overlay
                .get(&table)
                .map(|m| {
                    m.range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
                        .take_while(|(k, _)| k.starts_with(prefix))
                        .map(|(k, p)| (k.clone(), p.value.clone(), Arc::clone(&p.outcome)))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut rows: BTreeMap<String, Vec<u8>> =
            self.gc.kv.scan(table, prefix)?.into_iter().collect();
        for (k, v, outcome) in staged {
            self.saw(&outcome);
            match v {
                Some(v) => rows.insert(k, v),
                None => rows.remove(&k),
            };
        }
        Ok(rows.into_iter().collect())
    }

    /// Adds a change, staged when the transaction succeeds.
    pub(crate) fn push(&mut self, op: Op) {
        self.ops.push(op);
    }
}

#[cfg(test)]
mod tests {
    //! The mechanism over raw keys; the vault-level behaviour is tested in
    //! `crate::tests`.

    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::mpsc;
    use std::thread;
    use std::time::{Duration, Instant};

    use rampart_store::{RedbStore, StoreError};

    use super::*;

    /// A store whose commits can be held at a gate and made to fail.
    #[derive(Debug)]
    struct Gated {
        inner: RedbStore,
        hold: Mutex<bool>,
        released: Condvar,
        entered: AtomicU64,
        fail: AtomicBool,
    }

    impl Gated {
        fn new(dir: &tempfile::TempDir) -> Arc<Self> {
            Arc::new(Self {
                inner: RedbStore::open(&dir.path().join("s.redb")).unwrap(),
                hold: Mutex::new(false),
                released: Condvar::new(),
                entered: AtomicU64::new(0),
                fail: AtomicBool::new(false),
            })
        }
        fn set_hold(&self, on: bool) {
            *self.hold.lock().unwrap() = on;
            self.released.notify_all();
        }
    }

    impl KvStore for Gated {
        fn get(&self, t: Table, k: &str) -> Result<Option<Vec<u8>>, StoreError> {
            self.inner.get(t, k)
        }
        fn scan(&self, t: Table, p: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
            self.inner.scan(t, p)
        }
        fn apply(&self, ops: Vec<Op>) -> Result<(), StoreError> {
            self.entered.fetch_add(1, Ordering::SeqCst);
            let mut held = self.hold.lock().unwrap();
            while *held {
                held = self.released.wait(held).unwrap();
            }
            drop(held);
            if self.fail.load(Ordering::SeqCst) {
                return Err(StoreError("disk on fire".into()));
            }
            self.inner.apply(ops)
        }
    }

    fn until(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            thread::sleep(Duration::from_millis(1));
        }
    }

    fn put(gc: &GroupCommit, key: &str, v: &str) -> Result<(), VaultError> {
        gc.run(|tx| {
            tx.push(Op::Put(Table::Meta, key.into(), v.as_bytes().to_vec()));
            Ok(())
        })
    }

    #[test]
    fn staged_values_are_seen_by_writers_not_by_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Gated::new(&dir);
        let gc = Arc::new(GroupCommit::new(store.clone()));
        put(&gc, "k", "1").unwrap();
        store.set_hold(true);
        let first = thread::spawn({
            let gc = gc.clone();
            move || put(&gc, "k", "2")
        });
        until("the first commit", || {
            store.entered.load(Ordering::SeqCst) == 2
        });
        // Staged behind the held commit: a writer sees it, the store not.
        let (tx, rx) = mpsc::channel();
        let second = thread::spawn({
            let gc = gc.clone();
            move || {
                gc.run(|t| {
                    let v = t.get(Table::Meta, "k")?;
                    let rows = t.scan(Table::Meta, "")?;
                    tx.send((v, rows)).unwrap();
                    t.push(Op::Delete(Table::Meta, "k".into()));
                    Ok(())
                })
            }
        });
        let (v, rows) = rx.recv().unwrap();
        assert_eq!(v, Some(b"2".to_vec()));
        assert_eq!(rows, vec![("k".to_string(), b"2".to_vec())]);
        until("the delete to be staged", || gc.staged() == 1);
        assert_eq!(store.get(Table::Meta, "k").unwrap(), Some(b"1".to_vec()));
        store.set_hold(false);
        first.join().unwrap().unwrap();
        second.join().unwrap().unwrap();
        assert_eq!(store.get(Table::Meta, "k").unwrap(), None);
        let st = gc.lock_state();
        assert!(st.overlay.is_empty(), "committed entries leave the overlay");
    }

    #[test]
    fn a_read_only_transaction_waits_for_the_staged_value_it_saw() {
        let dir = tempfile::tempdir().unwrap();
        let store = Gated::new(&dir);
        let gc = Arc::new(GroupCommit::new(store.clone()));
        store.set_hold(true);
        let writer = thread::spawn({
            let gc = gc.clone();
            move || put(&gc, "k", "1")
        });
        until("the commit", || store.entered.load(Ordering::SeqCst) == 1);
        let (tx, rx) = mpsc::channel();
        let reader = thread::spawn({
            let gc = gc.clone();
            move || {
                let r = gc.run(|t| t.get(Table::Meta, "k"));
                tx.send(()).unwrap();
                r
            }
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(50)).is_err(),
            "answered before the value it read was durable"
        );
        store.fail.store(true, Ordering::SeqCst);
        store.set_hold(false);
        assert!(matches!(
            writer.join().unwrap(),
            Err(VaultError::Storage(_))
        ));
        assert!(matches!(
            reader.join().unwrap(),
            Err(VaultError::Storage(_))
        ));
    }

    #[test]
    fn a_failed_commit_fails_its_batch_and_the_one_behind_then_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Gated::new(&dir);
        let gc = Arc::new(GroupCommit::new(store.clone()));
        put(&gc, "base", "0").unwrap();
        store.set_hold(true);
        let lead = thread::spawn({
            let gc = gc.clone();
            move || put(&gc, "a", "1")
        });
        until("the first commit", || {
            store.entered.load(Ordering::SeqCst) == 2
        });
        let behind: Vec<_> = (0..4)
            .map(|i| {
                let gc = gc.clone();
                thread::spawn(move || put(&gc, &format!("b{i}"), "2"))
            })
            .collect();
        until("the writers behind to stage", || gc.staged() == 4);
        // A transaction that read a staged value before the failure, and
        // stages after it, is refused too (the epoch moved).
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let (read_tx, read_rx) = mpsc::channel();
        let stale = thread::spawn({
            let gc = gc.clone();
            move || {
                gc.run(|t| {
                    let v = t.get(Table::Meta, "a")?;
                    read_tx.send(v).unwrap();
                    go_rx.recv().unwrap();
                    t.push(Op::Put(Table::Meta, "c".into(), b"3".to_vec()));
                    Ok(())
                })
            }
        });
        assert_eq!(read_rx.recv().unwrap(), Some(b"1".to_vec()));
        store.fail.store(true, Ordering::SeqCst);
        store.set_hold(false);
        assert!(matches!(lead.join().unwrap(), Err(VaultError::Storage(_))));
        for h in behind {
            assert!(matches!(h.join().unwrap(), Err(VaultError::Storage(_))));
        }
        go_tx.send(()).unwrap();
        assert!(matches!(stale.join().unwrap(), Err(VaultError::Storage(_))));
        for k in ["a", "b0", "c"] {
            assert_eq!(store.get(Table::Meta, k).unwrap(), None, "{k}");
        }
        assert!(gc.lock_state().overlay.is_empty());
        // The store heals: writes go through again.
        store.fail.store(false, Ordering::SeqCst);
        put(&gc, "d", "4").unwrap();
        assert_eq!(store.get(Table::Meta, "d").unwrap(), Some(b"4".to_vec()));
        assert_eq!(store.get(Table::Meta, "base").unwrap(), Some(b"0".to_vec()));
    }

    #[test]
    fn read_only_tries_run_side_by_side_but_never_beside_a_staging_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Gated::new(&dir);
        let gc = Arc::new(GroupCommit::new(store.clone()));
        put(&gc, "k", "1").unwrap();
        // One try holds the lock until told to go on.
        let (in_tx, in_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let held = thread::spawn({
            let gc = gc.clone();
            move || {
                gc.run_now(|t| {
                    in_tx.send(()).unwrap();
                    go_rx.recv().unwrap();
                    t.get(Table::Meta, "k")
                })
            }
        });
        in_rx.recv().unwrap();
        // A second try runs beside it.
        let (tx, rx) = mpsc::channel();
        thread::spawn({
            let gc = gc.clone();
            move || tx.send(gc.run_now(|t| t.get(Table::Meta, "k"))).unwrap()
        });
        let beside = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("a read-only try waited for another");
        assert_eq!(beside.unwrap().unwrap(), Some(b"1".to_vec()));
        // A staging transaction waits until no try runs.
        let (done_tx, done_rx) = mpsc::channel();
        let writer = thread::spawn({
            let gc = gc.clone();
            move || {
                let r = put(&gc, "k", "2");
                done_tx.send(()).unwrap();
                r
            }
        });
        assert!(
            done_rx.recv_timeout(Duration::from_millis(50)).is_err(),
            "a change was staged beside a read-only try"
        );
        assert_eq!(gc.staged(), 0);
        go_tx.send(()).unwrap();
        assert_eq!(held.join().unwrap().unwrap().unwrap(), Some(b"1".to_vec()));
        writer.join().unwrap().unwrap();
        assert_eq!(store.get(Table::Meta, "k").unwrap(), Some(b"2".to_vec()));
    }

    #[derive(Debug)]
    struct Panicky;

    impl KvStore for Panicky {
        fn get(&self, _: Table, _: &str) -> Result<Option<Vec<u8>>, StoreError> {
            Ok(None)
        }
        fn scan(&self, _: Table, _: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
            Ok(Vec::new())
        }
        fn apply(&self, _: Vec<Op>) -> Result<(), StoreError> {
            panic!("store bug");
        }
    }

    #[test]
    fn a_panicking_store_does_not_wedge_the_writers() {
        let gc = Arc::new(GroupCommit::new(Arc::new(Panicky)));
        let h = thread::spawn({
            let gc = gc.clone();
            move || put(&gc, "k", "1")
        });
        assert!(h.join().is_err(), "the leader's panic goes on");
        // The next writer is not stuck behind a commit that never ends.
        let again = panic::catch_unwind(AssertUnwindSafe(|| put(&gc, "k", "2")));
        assert!(again.is_err());
        let st = gc.lock_state();
        assert!(!st.committing);
        assert_eq!(st.epoch, 2);
    }
}
