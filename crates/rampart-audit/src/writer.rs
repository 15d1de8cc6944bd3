//! The writer thread: takes events off the queue, chains and hashes them,
//! and writes each batch with one write, answering the callers who asked
//! for the `written` level at once. It never fsyncs: each written batch
//! goes to the fsync thread ([`crate::sync`]), which answers the callers
//! waiting for durability once an fsync covers their batch (group commit)
//! while this thread goes on writing. So callers at the `written` level
//! (vault reads) never queue behind an fsync, not even a slow one. A batch
//! without a durable waiter, checkpoint or rotation is fsynced within
//! [`SYNC_LAG`](crate::sync::SYNC_LAG). If an fsync fails, the file is cut
//! back to the last good one before the next write, and every record after
//! it is counted lost, as a failed batch is.
//!
//! It runs on its own OS thread with blocking IO, so a stuck disk or a
//! blocked stdout stalls only this thread; callers are bounded by the queue
//! and by `durable_timeout`. It never gives up: a failed batch is reported
//! to its waiters and dropped from the chain, and the next batch tries again.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::event::Event;
use crate::files;
use crate::keys::AuditKeys;
use crate::latency::Histogram;
use crate::record::Chain;
use crate::recovery::Resume;
use crate::sync::{Handed, Synced, Syncer};
use crate::time::now_ms;

/// Answer to a mandatory record: `Ok` once durable, `Err` if its batch
/// failed.
pub(crate) type Reply = oneshot::Sender<Result<(), ()>>;

// The event travels inline, not boxed, so that `Auditor::record` allocates
// nothing; the price is a queue of about 300 bytes per slot, allocated up
// front (see `AuditConfig::queue`).
#[allow(clippy::large_enum_variant)]
pub(crate) enum Msg {
    Event {
        ev: Event,
        at_ms: u64,
        reply: Option<Reply>,
        /// Answer once the record is written to the file, before the
        /// fsync (the `written` level); else once it is fsynced.
        early: bool,
    },
    /// Drain what is queued, write a final checkpoint, stop.
    Shutdown(oneshot::Sender<()>),
    /// Write what is queued, then a key rotation, and sign with `keys`
    /// from then on. Answered once the rotation is durable.
    Rotate {
        keys: Arc<AuditKeys>,
        reply: oneshot::Sender<Result<(), String>>,
    },
}

const MAX_BATCH_RECORDS: u64 = 8192;
const MAX_BATCH_BYTES: usize = 4 << 20;
const IDLE_WAIT: Duration = Duration::from_secs(3600);
/// Pause before retrying a failed checkpoint-only write.
const RETRY_AFTER: Duration = Duration::from_secs(1);
const WARN_EVERY: Duration = Duration::from_secs(5);
/// Batches waiting for the stdout copy thread.
const COPY_QUEUE: usize = 1024;

/// Shared between the writer and every `Auditor` clone.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub written: AtomicU64,
    pub checkpoints: AtomicU64,
    pub fsyncs: AtomicU64,
    pub dropped: AtomicU64,
    pub rejected: AtomicU64,
    pub failures: AtomicU64,
    pub lost: AtomicU64,
    pub unavailable: AtomicU64,
    /// Unix ms of the last failure, 0 if none.
    pub last_error_ms: AtomicU64,
    /// Unix ms of the first failure since the last good write, 0 while
    /// writes succeed.
    pub failing_since_ms: AtomicU64,
    pub last_seq: AtomicU64,
    pub stdout_dropped: AtomicU64,
    /// See [`AuditLatency`](crate::AuditLatency).
    pub batch_write: Histogram,
    pub durable_wait: Histogram,
    pub written_wait: Histogram,
    pub fsync: Histogram,
}

/// Where batches go.
pub(crate) enum Output {
    Files(FileSink),
    Stdout(Box<dyn Write + Send>),
}

pub(crate) struct FileSink {
    dir: PathBuf,
    file_seq: u64,
    /// Bytes of the current file that the writer wrote.
    len: u64,
    create: bool,
    /// A failed write could not be cut back: the bytes past `len` are the
    /// writer's own leftovers, to cut off before the next write.
    dirty: bool,
    max_bytes: u64,
    /// The best-effort stdout copy of [`Sink::Both`](crate::Sink::Both).
    copy: Option<SyncSender<Vec<u8>>>,
    /// The current file as last opened, with its sequence number and
    /// identity, kept while its path still names it.
    held: Option<Held>,
}

/// An open log file and what identifies it on its file system.
struct Held {
    file: Arc<std::fs::File>,
    file_seq: u64,
    id: FileId,
}

/// Device and inode. While the writer holds a file open, its inode cannot
/// be freed and reused, so a path whose identity matches names that file.
#[derive(Clone, Copy, PartialEq, Eq)]
struct FileId(u64, u64);

impl FileId {
    #[cfg(unix)]
    fn of(meta: &std::fs::Metadata) -> Option<FileId> {
        use std::os::unix::fs::MetadataExt;
        Some(FileId(meta.dev(), meta.ino()))
    }

    /// Elsewhere the file is opened by path for every batch.
    #[cfg(not(unix))]
    fn of(_meta: &std::fs::Metadata) -> Option<FileId> {
        None
    }
}

impl FileSink {
    pub(crate) fn new(dir: PathBuf, resume: &Resume, max_bytes: u64) -> FileSink {
        FileSink {
            dir,
            file_seq: resume.file_seq,
            len: resume.file_len,
            create: resume.create,
            dirty: false,
            max_bytes,
            copy: None,
            held: None,
        }
    }

    /// Copies every written batch to `out` from a thread of its own.
    pub(crate) fn with_copy(mut self, out: Box<dyn Write + Send>) -> io::Result<FileSink> {
        let (tx, rx) = sync_channel::<Vec<u8>>(COPY_QUEUE);
        thread::Builder::new()
            .name("rampart-audit-stdout".into())
            .spawn(move || {
                let mut out = out;
                for buf in rx {
                    // Nowhere to report a failing stdout but stdout.
                    let _ = out.write_all(&buf).and_then(|()| out.flush());
                }
            })?;
        self.copy = Some(tx);
        Ok(self)
    }

    /// The current file for appending, checked by path for every batch: a
    /// regular file of the length the writer left it at. The path is
    /// looked up every time, so a file or folder replaced underneath (a
    /// full disk, an unmounted volume) fails this batch only, and service
    /// resumes when it is back. A file that is not a regular file (a
    /// symlink to `/dev/null`...), or that is shorter or longer than what
    /// the writer wrote, is not appended to.
    ///
    /// The file stays open between batches: while the path's `stat` names
    /// the file held (same device and inode), that one system call is the
    /// whole check. Anything else (another file at the path, none, a
    /// rotation) drops it and opens the path again.
    fn open(&mut self) -> io::Result<Arc<std::fs::File>> {
        let path = self.dir.join(files::log_file_name(self.file_seq));
        if let Some(held) = self.held.take() {
            if held.file_seq == self.file_seq && !self.create {
                if let Ok(meta) = std::fs::metadata(&path) {
                    if FileId::of(&meta) == Some(held.id) {
                        self.check(&held.file, &meta)?;
                        let file = held.file.clone();
                        self.held = Some(held);
                        return Ok(file);
                    }
                }
            }
        }
        let mut opts = OpenOptions::new();
        opts.append(true);
        if self.create {
            opts.create(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
        }
        let f = opts.open(&path)?;
        let meta = f.metadata()?;
        self.check(&f, &meta)?;
        if self.create {
            f.sync_all()?;
            files::sync_dir(&self.dir)?;
        }
        let file = Arc::new(f);
        if let Some(id) = FileId::of(&meta) {
            self.held = Some(Held {
                file: file.clone(),
                file_seq: self.file_seq,
                id,
            });
        }
        Ok(file)
    }

    /// Whether `f` (with `meta`) may be appended to: a regular file of the
    /// length the writer left it at, or longer by the writer's own
    /// leftovers of a failed write, which are cut off.
    fn check(&self, f: &std::fs::File, meta: &std::fs::Metadata) -> io::Result<()> {
        if !meta.is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        if meta.len() < self.len {
            return Err(io::Error::other(format!(
                "file shrank to {} bytes from the {} written: changed outside the audit writer; \
                 refusing to append",
                meta.len(),
                self.len
            )));
        }
        if meta.len() > self.len {
            if !self.dirty {
                return Err(io::Error::other(format!(
                    "file grew to {} bytes from the {} written: another writer on this folder, or \
                     tampering; refusing to append (a restart checks the file)",
                    meta.len(),
                    self.len
                )));
            }
            // The writer's own leftovers: a failed write, or records cut
            // off after a failed fsync.
            cut(f, self.len)?;
        }
        Ok(())
    }

    /// Appends `buf` to the current file and calls `written`. Returns the
    /// file, for its fsync. A failed write is cut back, so no partial line
    /// stays in the log.
    fn append(&mut self, buf: &[u8], written: &mut dyn FnMut()) -> io::Result<Arc<std::fs::File>> {
        let f = self.open()?;
        if let Err(e) = (&*f).write_all(buf) {
            // If this fails too, the next batch cuts the file back.
            self.dirty = cut(&f, self.len).is_err();
            return Err(e);
        }
        written();
        self.dirty = false;
        self.create = false;
        self.len += buf.len() as u64;
        Ok(f)
    }

    /// After a failed fsync: the file goes back to `len` bytes (of file
    /// `file_seq`; a later file is emptied), at once if the writer holds
    /// it, else (or if that fails) when it is next opened for a write, as
    /// a failed write's leftovers are.
    fn cut_back(&mut self, file_seq: u64, len: u64) {
        let len = if file_seq == self.file_seq { len } else { 0 };
        if self.len <= len {
            return;
        }
        self.len = len;
        self.dirty = true;
        if let Some(held) = self.held.as_ref().filter(|h| h.file_seq == self.file_seq) {
            self.dirty = cut(&held.file, len).is_err();
        }
    }

    /// Starts the next file, after a rotation's checkpoint is durable.
    fn rotate_to(&mut self, file_seq: u64) {
        self.file_seq = file_seq;
        self.len = 0;
        self.create = true;
    }
}

/// Cuts `f` back to `len` bytes, durably: what the writer does with bytes
/// that must not stay in the log.
fn cut(f: &std::fs::File, len: u64) -> io::Result<()> {
    f.set_len(len)?;
    f.sync_data()
}

/// `f.sync_data()`. A test can make the next one in a folder slow, or
/// fail (after it really ran), to check the answers to a stuck and to a
/// failed fsync: no file system here does either on demand.
pub(crate) fn fsync(dir: &Path, f: &std::fs::File) -> io::Result<()> {
    let r = f.sync_data();
    #[cfg(test)]
    if r.is_ok() {
        if let Some((stall, fail)) = tests::failing_fsync::take(dir) {
            thread::sleep(stall);
            if fail {
                return Err(io::Error::other("injected fsync failure"));
            }
        }
    }
    #[cfg(not(test))]
    let _ = dir;
    r
}

/// The file a batch went to, and its length after it.
struct WrittenTo {
    file: Arc<std::fs::File>,
    file_seq: u64,
    end: u64,
}

impl WrittenTo {
    /// The batch, for the fsync thread, with where the log stands after it
    /// (no records, waiters or checkpoint yet).
    fn handed(self, chain: Chain, since_checkpoint: u64) -> Handed {
        Handed {
            file: self.file,
            after: Synced {
                file_seq: self.file_seq,
                len: self.end,
                chain,
                since_checkpoint,
            },
            records: 0,
            replies: Vec::new(),
            head: None,
            urgent: false,
        }
    }
}

impl Output {
    /// Writes `buf` (and calls `written` once it is written): to the
    /// current file, returned for the batch's fsync, or to stdout and
    /// flushed, which is all stdout gets.
    fn write(
        &mut self,
        buf: &[u8],
        counters: &Counters,
        written: &mut dyn FnMut(),
    ) -> io::Result<Option<WrittenTo>> {
        match self {
            Output::Files(sink) => {
                let file = sink.append(buf, written)?;
                if let Some(copy) = &sink.copy {
                    if copy.try_send(buf.to_vec()).is_err() {
                        counters.stdout_dropped.fetch_add(1, Relaxed);
                    }
                }
                Ok(Some(WrittenTo {
                    file,
                    file_seq: sink.file_seq,
                    end: sink.len,
                }))
            }
            Output::Stdout(out) => {
                out.write_all(buf).and_then(|()| out.flush())?;
                written();
                Ok(None)
            }
        }
    }

    /// Whether a batch of `extra` more bytes fills the current file.
    fn rotation_due(&self, extra: usize) -> bool {
        match self {
            Output::Files(sink) => sink.len + extra as u64 >= sink.max_bytes,
            Output::Stdout(_) => false,
        }
    }

    fn describe(&self) -> String {
        match self {
            Output::Files(sink) => sink
                .dir
                .join(files::log_file_name(sink.file_seq))
                .display()
                .to_string(),
            Output::Stdout(_) => "stdout".into(),
        }
    }
}

// === impl Writer ===

pub(crate) struct Writer {
    keys: Arc<AuditKeys>,
    counters: Arc<Counters>,
    chain: Chain,
    out: Output,
    /// The fsync thread, for a file sink.
    syncer: Option<Syncer>,
    checkpoint_every: u64,
    checkpoint_interval: Duration,
    since_checkpoint: u64,
    last_checkpoint: Instant,
    /// No checkpoint-only write before this (after a failed one).
    retry_at: Option<Instant>,
    /// Reused batch buffer.
    spare: Vec<u8>,
    warn: Warn,
}

/// Failures are counted every time and logged at most once every
/// [`WARN_EVERY`], with how many were not.
#[derive(Default)]
pub(crate) struct Warn {
    at: Option<Instant>,
    suppressed: u64,
}

impl Warn {
    pub(crate) fn failed(
        &mut self,
        counters: &Counters,
        what: &str,
        sink: &dyn std::fmt::Display,
        e: &io::Error,
    ) {
        counters.failures.fetch_add(1, Relaxed);
        let now = now_ms().max(1);
        counters.last_error_ms.store(now, Relaxed);
        // Keeps the first failure of a run of them.
        let _ = counters
            .failing_since_ms
            .compare_exchange(0, now, Relaxed, Relaxed);
        if self.at.is_some_and(|at| at.elapsed() < WARN_EVERY) {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(error = %e, sink = %sink, suppressed = self.suppressed, "{what}");
        self.at = Some(Instant::now());
        self.suppressed = 0;
    }
}

struct Batch {
    chain: Chain,
    buf: Vec<u8>,
    records: u64,
    replies: Vec<Reply>,
    /// Answered once the batch is written, before its fsync.
    early: Vec<Reply>,
}

impl Batch {
    /// A placeholder, replaced before anything is added to it.
    fn empty() -> Batch {
        Batch {
            chain: Chain::genesis(),
            buf: Vec::new(),
            records: 0,
            replies: Vec::new(),
            early: Vec::new(),
        }
    }
}

impl Writer {
    /// A writer for `out`, and for a file sink its fsync thread, which
    /// takes the log as recovered at start to be durable.
    pub(crate) fn new(
        keys: Arc<AuditKeys>,
        counters: Arc<Counters>,
        chain: Chain,
        since_checkpoint: u64,
        out: Output,
        checkpoint_every: u64,
        checkpoint_interval: Duration,
    ) -> io::Result<Writer> {
        counters.last_seq.store(chain.next_seq() - 1, Relaxed);
        let syncer = match &out {
            Output::Files(sink) => Some(Syncer::start(
                sink.dir.clone(),
                counters.clone(),
                Synced {
                    file_seq: sink.file_seq,
                    len: sink.len,
                    chain: chain.clone(),
                    since_checkpoint,
                },
            )?),
            Output::Stdout(_) => None,
        };
        Ok(Writer {
            keys,
            counters,
            chain,
            out,
            syncer,
            checkpoint_every,
            checkpoint_interval,
            since_checkpoint,
            last_checkpoint: Instant::now(),
            retry_at: None,
            spare: Vec::new(),
            warn: Warn::default(),
        })
    }

    /// The thread's body. Returns when told to shut down, or when every
    /// sender is gone.
    pub(crate) fn run(mut self, rx: Receiver<Msg>) {
        let mut stopping: Vec<oneshot::Sender<()>> = Vec::new();
        // Whether the last message came within [`SPIN`] of the writer
        // being ready for it: only then is polling for the next worth it.
        let mut quick = false;
        loop {
            let first = if stopping.is_empty() {
                let ready = Instant::now();
                // Without polling, `recv_timeout` takes a queued message
                // at once.
                let spun = if quick { spin_for(&rx) } else { None };
                let got = spun.map_or_else(|| rx.recv_timeout(self.wait()), Ok);
                quick = ready.elapsed() < SPIN;
                match got {
                    Ok(msg) => msg,
                    Err(RecvTimeoutError::Timeout) => {
                        self.tick();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            } else {
                // Shutting down: drain what is queued, then stop.
                match rx.try_recv() {
                    Ok(msg) => msg,
                    Err(_) => break,
                }
            };
            let mut batch = self.batch();
            let mut next = Some(first);
            while let Some(msg) = next {
                match msg {
                    Msg::Event {
                        ev,
                        at_ms,
                        reply,
                        early,
                    } => self.add(&mut batch, &ev, at_ms, reply, early),
                    Msg::Shutdown(done) => stopping.push(done),
                    Msg::Rotate { keys, reply } => {
                        // Everything queued before it is signed by the old
                        // key; the batch after it starts from the rotation.
                        let before = std::mem::replace(&mut batch, Batch::empty());
                        self.commit(before, false);
                        let _ = reply.send(self.rotate(keys));
                        batch = self.batch();
                    }
                }
                next = if self.full(&batch) {
                    None
                } else {
                    rx.try_recv().ok()
                };
            }
            self.commit(batch, false);
        }
        let last = self.batch();
        self.commit(last, true);
        // Fsyncs everything written, the final checkpoint included.
        if let Some(syncer) = self.syncer.take() {
            syncer.stop();
        }
        for done in stopping {
            let _ = done.send(());
        }
    }

    /// How long until a timed checkpoint is due; `None` with nothing to
    /// sign.
    fn checkpoint_in(&self) -> Option<Duration> {
        if self.since_checkpoint == 0 {
            return None;
        }
        let mut at = self.last_checkpoint + self.checkpoint_interval;
        if let Some(retry) = self.retry_at {
            at = at.max(retry);
        }
        Some(at.saturating_duration_since(Instant::now()))
    }

    /// How long to wait for the next event before a timed checkpoint.
    fn wait(&self) -> Duration {
        self.checkpoint_in().unwrap_or(IDLE_WAIT)
    }

    fn tick(&mut self) {
        if self.checkpoint_in() == Some(Duration::ZERO) {
            let batch = self.batch();
            self.commit(batch, true);
        }
    }

    /// After a failed fsync (see [`crate::sync`]): cuts the file and the
    /// chain back to the last good fsync before anything more is written.
    /// Returns whether it did.
    fn recover(&mut self) -> bool {
        let Some(synced) = self.syncer.as_ref().and_then(Syncer::take_poison) else {
            return false;
        };
        if let Output::Files(sink) = &mut self.out {
            sink.cut_back(synced.file_seq, synced.len);
        }
        self.chain = synced.chain;
        self.since_checkpoint = synced.since_checkpoint;
        self.counters
            .last_seq
            .store(self.chain.next_seq() - 1, Relaxed);
        self.retry_at = Some(Instant::now() + RETRY_AFTER);
        true
    }

    fn batch(&mut self) -> Batch {
        self.recover();
        let mut buf = std::mem::take(&mut self.spare);
        buf.clear();
        Batch {
            chain: self.chain.clone(),
            buf,
            records: 0,
            replies: Vec::new(),
            early: Vec::new(),
        }
    }

    fn add(
        &mut self,
        batch: &mut Batch,
        ev: &Event,
        at_ms: u64,
        reply: Option<Reply>,
        early: bool,
    ) {
        match batch.chain.append(&mut batch.buf, ev, at_ms) {
            Ok(_) => {
                batch.records += 1;
                if early {
                    batch.early.extend(reply);
                } else {
                    batch.replies.extend(reply);
                }
            }
            Err(e) => {
                // Not reachable with serde_json's own map and values.
                self.counters.lost.fetch_add(1, Relaxed);
                if let Some(reply) = reply {
                    let _ = reply.send(Err(()));
                }
                tracing::warn!(error = %e, "audit event could not be serialized; dropped");
            }
        }
    }

    fn full(&self, batch: &Batch) -> bool {
        batch.records >= MAX_BATCH_RECORDS
            || batch.buf.len() >= MAX_BATCH_BYTES
            || self.out.rotation_due(batch.buf.len())
    }

    /// Writes a batch, with a checkpoint at its end when one is due (or
    /// `force`d), answers its `written`-level callers and hands it to the
    /// fsync thread, which answers the others.
    fn commit(&mut self, batch: Batch, force: bool) {
        let Batch {
            mut chain,
            mut buf,
            records,
            replies,
            mut early,
        } = batch;
        if self.recover() {
            // An fsync failed while this batch was being put together: its
            // chain grows from records now cut off, so it goes too.
            self.counters.lost.fetch_add(records, Relaxed);
            for reply in replies.into_iter().chain(early) {
                let _ = reply.send(Err(()));
            }
            self.spare = buf;
            return;
        }
        let pending = self.since_checkpoint + records;
        let rotate = records > 0 && self.out.rotation_due(buf.len());
        let due = force
            || rotate
            || pending >= self.checkpoint_every
            || self.last_checkpoint.elapsed() >= self.checkpoint_interval;
        let head = if due && pending > 0 {
            chain.append_checkpoint(&mut buf, &self.keys, now_ms())
        } else {
            None
        };
        if buf.is_empty() {
            if due && pending > 0 {
                // A checkpoint was due but could not be made: not reachable
                // (there is a record to sign), but never spin on it.
                self.retry_at = Some(Instant::now() + RETRY_AFTER);
            }
            self.spare = buf;
            return;
        }
        let mut answer_early = || {
            for reply in early.drain(..) {
                let _ = reply.send(Ok(()));
            }
        };
        let started = Instant::now();
        let result = self.out.write(&buf, &self.counters, &mut answer_early);
        self.counters.batch_write.record(started.elapsed());
        self.spare = buf;
        let to = match result {
            Ok(to) => to,
            Err(e) => {
                self.counters.lost.fetch_add(records, Relaxed);
                self.retry_at = Some(Instant::now() + RETRY_AFTER);
                // Counters first, so a caller told "no" sees them.
                self.warn.failed(
                    &self.counters,
                    "audit write failed; the records of this batch are lost",
                    &self.out.describe(),
                    &e,
                );
                for reply in replies.into_iter().chain(early) {
                    let _ = reply.send(Err(()));
                }
                return;
            }
        };
        self.chain = chain;
        self.counters.written.fetch_add(records, Relaxed);
        self.counters
            .last_seq
            .store(self.chain.next_seq() - 1, Relaxed);
        if head.is_some() {
            self.since_checkpoint = 0;
            self.last_checkpoint = Instant::now();
            self.retry_at = None;
        } else {
            self.since_checkpoint = pending;
        }
        let (Some(to), Some(syncer)) = (to, &self.syncer) else {
            // Stdout: flushed is all it gets. (A file's failure is over
            // once an fsync succeeds: the fsync thread clears it.)
            self.counters.failing_since_ms.store(0, Relaxed);
            for reply in replies {
                let _ = reply.send(Ok(()));
            }
            if head.is_some() {
                self.counters.checkpoints.fetch_add(1, Relaxed);
            }
            return;
        };
        // Durable waiters and a checkpoint (HEAD must only ever name
        // synced records) want the fsync now; anything else may wait for
        // the next one.
        let urgent = !replies.is_empty() || head.is_some() || force;
        let handed = Handed {
            records,
            replies,
            head,
            urgent,
            ..to.handed(self.chain.clone(), self.since_checkpoint)
        };
        if !rotate {
            syncer.hand(handed);
            return;
        }
        // The next file starts only once this one is durable up to its
        // closing checkpoint.
        match syncer.hand_and_wait(handed) {
            Ok(()) => {
                if let Output::Files(sink) = &mut self.out {
                    sink.rotate_to(self.chain.next_seq());
                }
            }
            Err(_) => {
                self.recover();
            }
        }
    }

    /// Writes and fsyncs a key rotation (a checkpoint signed by `keys` and
    /// endorsed by the keys in force), then signs with `keys`. On an empty
    /// log there is nothing to endorse: `keys` simply become the log's
    /// first key. On failure the old keys stay in force.
    fn rotate(&mut self, keys: Arc<AuditKeys>) -> Result<(), String> {
        self.recover();
        let mut buf = Vec::new();
        let mut chain = self.chain.clone();
        let Some(head) = chain.append_rotation(&mut buf, &self.keys, &keys, now_ms()) else {
            if let Output::Files(sink) = &self.out {
                files::write_public_key(&sink.dir, keys.public_key())
                    .map_err(|e| format!("audit.pub: {e}"))?;
            }
            self.keys = keys;
            return Ok(());
        };
        let to = match self.out.write(&buf, &self.counters, &mut || {}) {
            Ok(to) => to,
            Err(e) => {
                let reason = e.to_string();
                self.warn.failed(
                    &self.counters,
                    "audit key rotation could not be written",
                    &self.out.describe(),
                    &e,
                );
                return Err(reason);
            }
        };
        self.chain = chain;
        self.counters
            .last_seq
            .store(self.chain.next_seq() - 1, Relaxed);
        if let (Some(to), Some(syncer)) = (to, &self.syncer) {
            // The rotation is in the log once fsynced, which is what counts:
            // a HEAD that could not be updated is brought up to date at the
            // next start.
            let handed = Handed {
                head: Some(head),
                ..to.handed(self.chain.clone(), 0)
            };
            if let Err(reason) = syncer.hand_and_wait(handed) {
                self.recover();
                return Err(reason);
            }
        } else {
            self.counters.checkpoints.fetch_add(1, Relaxed);
        }
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        self.retry_at = None;
        self.keys = keys;
        Ok(())
    }
}

/// How long the writer polls for the next message before it sleeps, when
/// the last one came that soon too. Under a steady stream of records
/// (vault reads) the next one mostly comes within this, and neither the
/// writer's sleep nor the sender's wake-up of it (both system calls, and a
/// cross-CPU interrupt) happens: `bench vault --ops read` +3% to +16% reads
/// and a lower p50 at the same p99 (see docs/performance.md). Records
/// further apart (logins, which wait for an fsync) do not start it, and an
/// idle server does not poll.
const SPIN: Duration = Duration::from_micros(20);

/// The next message if one comes within [`SPIN`].
fn spin_for<T>(rx: &Receiver<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        match rx.try_recv() {
            Ok(m) => return Some(m),
            Err(TryRecvError::Disconnected) => return None,
            Err(TryRecvError::Empty) => {}
        }
        if start.elapsed() >= SPIN {
            return None;
        }
        std::thread::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{read_records, verify_dir, AuditConfig, AuditKeys, Auditor, Event, Outcome};

    /// Folders whose next fsync stalls, fails or both, once each (see
    /// [`fsync`]).
    pub(super) mod failing_fsync {
        use std::path::{Path, PathBuf};
        use std::sync::Mutex;
        use std::time::Duration;

        static NEXT: Mutex<Vec<(PathBuf, Duration, bool)>> = Mutex::new(Vec::new());

        /// The next fsync in `dir` fails.
        pub(crate) fn arm(dir: &Path) {
            stall(dir, Duration::ZERO, true);
        }

        /// The next fsync in `dir` takes `stall` longer, then fails if
        /// `fail`.
        pub(crate) fn stall(dir: &Path, stall: Duration, fail: bool) {
            NEXT.lock().unwrap().push((dir.to_path_buf(), stall, fail));
        }

        pub(crate) fn take(dir: &Path) -> Option<(Duration, bool)> {
            let mut next = NEXT.lock().unwrap();
            let found = next.iter().position(|(d, ..)| d == dir)?;
            let (_, stall, fail) = next.remove(found);
            Some((stall, fail))
        }
    }

    fn event(i: u64) -> Event {
        Event::new("secret.read", "read", Outcome::Success).meta("i", i)
    }

    /// An auditor on `data/audit` with no checkpoint before the
    /// shutdown's: an armed fsync failure or stall must hit the fsync of
    /// the records the test sends, not a timed checkpoint's.
    fn untimed(data: &Path) -> (Auditor, PathBuf) {
        let dir = data.join("audit");
        let mut cfg = AuditConfig::new(&dir);
        cfg.checkpoint_every = 1_000;
        cfg.checkpoint_interval = Duration::from_secs(3600);
        let a = Auditor::start(cfg, AuditKeys::load_or_create(data).unwrap()).unwrap();
        (a, dir)
    }

    /// The `i` of every record in the log, in order.
    fn kept(dir: &Path) -> Vec<u64> {
        read_records(dir, None, 0, 100)
            .unwrap()
            .iter()
            .filter_map(|r| r["metadata"]["i"].as_u64())
            .collect()
    }

    /// A failed fsync: the waiting caller is told no (the server answers
    /// 503), the records since the last good fsync are cut off the file
    /// and counted lost, and the log goes on from there with a chain that
    /// still verifies, without the refused record.
    #[tokio::test]
    async fn a_failed_fsync_refuses_its_waiter_and_the_log_goes_on_from_the_last_good_one() {
        let data = tempfile::tempdir().unwrap();
        let (a, dir) = untimed(data.path());
        for i in 0..3 {
            a.mandatory(event(i)).await.unwrap();
        }
        let before = a.stats();

        failing_fsync::arm(&dir);
        assert_eq!(a.mandatory(event(10)).await, Err(crate::Unavailable));
        let s = a.stats();
        assert!(s.lost >= 1, "{s:?}");
        assert!(s.failures > before.failures, "{s:?}");
        assert!(s.failing_since_ms.is_some(), "{s:?}");

        for i in 20..23 {
            a.mandatory(event(i)).await.unwrap();
        }
        assert_eq!(a.stats().failing_since_ms, None, "a good fsync clears it");
        a.shutdown().await;

        let report = verify_dir(&dir, Some(&a.public_key())).unwrap();
        assert_eq!(report.records, 6, "{report:?}");
        let kept = kept(&dir);
        assert_eq!(kept, [0, 1, 2, 20, 21, 22]);
    }

    /// The writer never waits for an fsync: while one is stuck (here for
    /// 1.5 s, a stalled disk), callers at the `written` level are answered
    /// as their records are written, and the durable caller behind the
    /// stuck fsync is refused at its timeout rather than holding them up.
    /// Before the fsync thread, every one of them waited for the fsync.
    #[tokio::test]
    async fn written_records_are_answered_while_an_fsync_is_stuck() {
        let data = tempfile::tempdir().unwrap();
        let (a, dir) = untimed(data.path());
        a.mandatory(event(0)).await.unwrap();

        failing_fsync::stall(&dir, Duration::from_millis(1500), false);
        let started = Instant::now();
        assert_eq!(a.mandatory(event(1)).await, Err(crate::Unavailable));
        for i in 2..22 {
            a.written(event(i)).await.unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_millis(1000),
            "the written records waited for the stuck fsync: {:?}",
            started.elapsed()
        );
        // Once the disk is back, a durable record goes through again.
        tokio::time::sleep_until((started + Duration::from_millis(1600)).into()).await;
        a.mandatory(event(22)).await.unwrap();
        a.shutdown().await;
        let kept = kept(&dir);
        // The refused one too: it was written, and its fsync was only slow.
        assert_eq!(kept, (0..23).collect::<Vec<u64>>());
        verify_dir(&dir, Some(&a.public_key())).unwrap();
    }

    /// A failed fsync takes with it what the writer wrote while it ran: the
    /// `written` records answered meanwhile are cut off and counted lost,
    /// and the log goes on from the last good fsync with a chain that
    /// verifies.
    #[tokio::test]
    async fn a_failed_fsync_cuts_off_what_was_written_while_it_ran() {
        let data = tempfile::tempdir().unwrap();
        let (a, dir) = untimed(data.path());
        for i in 0..3 {
            a.mandatory(event(i)).await.unwrap();
        }
        let lost_before = a.stats().lost;

        failing_fsync::stall(&dir, Duration::from_millis(400), true);
        let durable = {
            let a = a.clone();
            tokio::spawn(async move { a.mandatory(event(10)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        for i in 11..16 {
            a.written(event(i)).await.unwrap();
        }
        assert_eq!(durable.await.unwrap(), Err(crate::Unavailable));
        // The failure is known once the stalled fsync returns.
        let deadline = Instant::now() + Duration::from_secs(5);
        while a.stats().lost < lost_before + 6 {
            assert!(Instant::now() < deadline, "{:?}", a.stats());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(a.stats().failing_since_ms.is_some());

        for i in 20..23 {
            a.mandatory(event(i)).await.unwrap();
        }
        let s = a.stats();
        assert_eq!(s.lost, lost_before + 6, "{s:?}");
        assert_eq!(s.failing_since_ms, None, "a good fsync clears it");
        a.shutdown().await;

        let report = verify_dir(&dir, Some(&a.public_key())).unwrap();
        assert_eq!(report.records, 6, "{report:?}");
        let kept = kept(&dir);
        assert_eq!(kept, [0, 1, 2, 20, 21, 22]);
    }

    /// Keeps the memory figure in `AuditConfig::queue`'s docs honest.
    #[test]
    fn a_queue_slot_is_about_300_bytes() {
        let size = std::mem::size_of::<Msg>();
        assert!((200..=320).contains(&size), "{size}");
    }

    #[test]
    fn the_writer_polls_briefly_before_it_sleeps() {
        let (tx, rx) = sync_channel::<u32>(4);
        tx.send(7).expect("send");
        assert_eq!(spin_for(&rx), Some(7), "a queued message was missed");
        let start = Instant::now();
        assert_eq!(spin_for(&rx), None);
        assert!(start.elapsed() >= SPIN, "gave up before the spin was over");
        // The senders gone: no message either.
        drop(tx);
        assert_eq!(spin_for(&rx), None);
    }
}
