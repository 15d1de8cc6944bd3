//! The writer thread: takes events off the queue, chains and hashes them,
//! and writes each batch with one write, answering the callers who asked
//! for the `written` level at once. A batch with a caller waiting for
//! durability (or a checkpoint, or a rotation) is fsynced before they are
//! answered, covering every batch written before it (group commit). A
//! batch without one is not fsynced on its own: the fsync waits for the
//! next batch that needs one, or [`SYNC_LAG`] at most, so that callers at
//! the `written` level (vault reads) never queue behind an fsync they did
//! not ask for. If that fsync fails, the file is cut back to the last good
//! fsync and every record after it is counted lost, as a failed batch is.
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
use crate::record::{Chain, Head};
use crate::recovery::Resume;
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
/// The longest a written record waits for its fsync when no caller asks
/// for durability.
const SYNC_LAG: Duration = Duration::from_millis(100);

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
    /// Of those, the bytes fsynced.
    synced_len: u64,
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
            synced_len: resume.file_len,
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
            f.set_len(self.len)?;
        }
        Ok(())
    }

    /// Appends `buf` to the current file, calls `written`, and fsyncs the
    /// file if `sync` (covering every earlier unsynced append too). A
    /// failed write is cut back, so no partial line stays in the log; a
    /// failed fsync cuts the file back to the last good fsync.
    fn append(&mut self, buf: &[u8], written: &mut dyn FnMut(), sync: bool) -> Result<(), Failed> {
        let f = self.open().map_err(Failed::Write)?;
        if let Err(e) = (&*f).write_all(buf) {
            // If this fails too, the next batch cuts the file back.
            self.dirty = f.set_len(self.len).and_then(|()| f.sync_data()).is_err();
            return Err(Failed::Write(e));
        }
        written();
        self.dirty = false;
        self.create = false;
        self.len += buf.len() as u64;
        if sync {
            self.sync(&f)?;
        }
        Ok(())
    }

    /// Fsyncs what was appended since the last fsync.
    fn sync_pending(&mut self) -> Result<(), Failed> {
        if self.synced_len == self.len {
            return Ok(());
        }
        let f = self.open().map_err(Failed::Write)?;
        self.sync(&f)
    }

    fn sync(&mut self, f: &std::fs::File) -> Result<(), Failed> {
        if let Err(e) = fsync(&self.dir, f) {
            self.len = self.synced_len;
            self.dirty = f.set_len(self.len).and_then(|()| f.sync_data()).is_err();
            return Err(Failed::Sync(e));
        }
        self.synced_len = self.len;
        Ok(())
    }
}

/// `f.sync_data()`. A test can make the next one in a folder fail (after
/// it really ran), to check the writer's answer to a failed fsync: no
/// file system here fails one on demand.
fn fsync(dir: &Path, f: &std::fs::File) -> io::Result<()> {
    let r = f.sync_data();
    #[cfg(test)]
    if r.is_ok() && tests::failing_fsync::take(dir) {
        return Err(io::Error::other("injected fsync failure"));
    }
    #[cfg(not(test))]
    let _ = dir;
    r
}

/// Why a batch did not make it.
#[derive(Debug)]
enum Failed {
    /// It was not written (nothing else changed).
    Write(io::Error),
    /// It was written but the fsync failed: the file is cut back to the
    /// last good fsync, so every record written since is gone.
    Sync(io::Error),
}

impl Failed {
    fn error(&self) -> &io::Error {
        match self {
            Failed::Write(e) | Failed::Sync(e) => e,
        }
    }
}

impl Output {
    fn write(
        &mut self,
        buf: &[u8],
        counters: &Counters,
        written: &mut dyn FnMut(),
        sync: bool,
    ) -> Result<(), Failed> {
        match self {
            Output::Files(sink) => {
                sink.append(buf, written, sync)?;
                if let Some(copy) = &sink.copy {
                    if copy.try_send(buf.to_vec()).is_err() {
                        counters.stdout_dropped.fetch_add(1, Relaxed);
                    }
                }
                Ok(())
            }
            Output::Stdout(out) => {
                out.write_all(buf)
                    .and_then(|()| out.flush())
                    .map_err(Failed::Write)?;
                written();
                Ok(())
            }
        }
    }

    /// Fsyncs what was written without one.
    fn sync_pending(&mut self) -> Result<(), Failed> {
        match self {
            Output::Files(sink) => sink.sync_pending(),
            Output::Stdout(_) => Ok(()),
        }
    }

    /// Whether a batch of `extra` more bytes fills the current file.
    fn rotation_due(&self, extra: usize) -> bool {
        match self {
            Output::Files(sink) => sink.len + extra as u64 >= sink.max_bytes,
            Output::Stdout(_) => false,
        }
    }

    /// After a checkpoint was written: update `HEAD`, and start a new file
    /// at `next_seq` if `rotate`.
    fn checkpointed(&mut self, head: &Head, next_seq: u64, rotate: bool) -> io::Result<()> {
        match self {
            Output::Files(sink) => {
                if rotate {
                    sink.file_seq = next_seq;
                    sink.len = 0;
                    sink.create = true;
                }
                files::write_head(&sink.dir, head)
            }
            Output::Stdout(_) => Ok(()),
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
    checkpoint_every: u64,
    checkpoint_interval: Duration,
    since_checkpoint: u64,
    last_checkpoint: Instant,
    /// No checkpoint-only write before this (after a failed one).
    retry_at: Option<Instant>,
    /// Reused batch buffer.
    spare: Vec<u8>,
    /// The chain as of the last fsync, and the records written since then
    /// and when the first of them was: what a failed fsync takes back.
    synced_chain: Chain,
    unsynced_records: u64,
    unsynced_since: Option<Instant>,
    warned_at: Option<Instant>,
    suppressed: u64,
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
    pub(crate) fn new(
        keys: Arc<AuditKeys>,
        counters: Arc<Counters>,
        chain: Chain,
        since_checkpoint: u64,
        out: Output,
        checkpoint_every: u64,
        checkpoint_interval: Duration,
    ) -> Writer {
        counters.last_seq.store(chain.next_seq() - 1, Relaxed);
        Writer {
            keys,
            counters,
            synced_chain: chain.clone(),
            unsynced_records: 0,
            unsynced_since: None,
            chain,
            out,
            checkpoint_every,
            checkpoint_interval,
            since_checkpoint,
            last_checkpoint: Instant::now(),
            retry_at: None,
            spare: Vec::new(),
            warned_at: None,
            suppressed: 0,
        }
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
        if self.unsynced_records > 0 {
            self.sync_tail();
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

    /// How long until the records written without an fsync must have one;
    /// `None` when there are none.
    fn sync_in(&self) -> Option<Duration> {
        self.unsynced_since
            .map(|t| (t + SYNC_LAG).saturating_duration_since(Instant::now()))
    }

    /// How long to wait for the next event before a timed checkpoint or
    /// a lagging fsync.
    fn wait(&self) -> Duration {
        [self.checkpoint_in(), self.sync_in()]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(IDLE_WAIT)
    }

    fn tick(&mut self) {
        if self.checkpoint_in() == Some(Duration::ZERO) {
            let batch = self.batch();
            self.commit(batch, true);
        }
        if self.sync_in() == Some(Duration::ZERO) {
            self.sync_tail();
        }
    }

    /// Fsyncs the records written without one. If the file cannot even be
    /// opened, nothing was cut back: the records stay written and the fsync
    /// is tried again after another [`SYNC_LAG`].
    fn sync_tail(&mut self) {
        match self.out.sync_pending() {
            Ok(()) => self.synced(),
            Err(Failed::Write(e)) => {
                self.unsynced_since = Some(Instant::now());
                self.failed("audit fsync could not open the file; trying again", &e);
            }
            Err(e) => self.sync_failed(&e),
        }
    }

    /// After a good fsync.
    fn synced(&mut self) {
        self.counters.failing_since_ms.store(0, Relaxed);
        if matches!(self.out, Output::Files(_)) {
            self.counters.fsyncs.fetch_add(1, Relaxed);
        }
        self.synced_chain = self.chain.clone();
        self.unsynced_records = 0;
        self.unsynced_since = None;
    }

    /// After a failed fsync cut the file back to the one before: the
    /// records written since are lost and the chain goes back with them.
    fn sync_failed(&mut self, e: &Failed) {
        let lost = std::mem::take(&mut self.unsynced_records);
        self.counters.lost.fetch_add(lost, Relaxed);
        self.since_checkpoint = self.since_checkpoint.saturating_sub(lost);
        self.chain = self.synced_chain.clone();
        self.counters
            .last_seq
            .store(self.chain.next_seq() - 1, Relaxed);
        self.unsynced_since = None;
        self.retry_at = Some(Instant::now() + RETRY_AFTER);
        self.failed(
            "audit fsync failed; the records written since the last one are lost",
            e.error(),
        );
    }

    fn batch(&mut self) -> Batch {
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
    /// `force`d), and answers its waiters.
    fn commit(&mut self, batch: Batch, force: bool) {
        let Batch {
            mut chain,
            mut buf,
            records,
            replies,
            mut early,
        } = batch;
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
        // Durable waiters, a checkpoint (HEAD must only ever name synced
        // records) and a rotation need the fsync now; anything else may
        // wait for the next one.
        let sync = !replies.is_empty()
            || head.is_some()
            || force
            || self.sync_in() == Some(Duration::ZERO);
        let started = Instant::now();
        let result = self
            .out
            .write(&buf, &self.counters, &mut answer_early, sync);
        self.counters.batch_write.record(started.elapsed());
        match result {
            Ok(()) => {
                self.counters.failing_since_ms.store(0, Relaxed);
                self.chain = chain;
                self.counters.written.fetch_add(records, Relaxed);
                self.counters
                    .last_seq
                    .store(self.chain.next_seq() - 1, Relaxed);
                if sync {
                    self.synced();
                } else {
                    self.unsynced_records += records;
                    self.unsynced_since.get_or_insert_with(Instant::now);
                }
                for reply in replies {
                    let _ = reply.send(Ok(()));
                }
                match head {
                    Some(head) => {
                        self.since_checkpoint = 0;
                        self.last_checkpoint = Instant::now();
                        self.retry_at = None;
                        if let Err(e) = self.out.checkpointed(&head, self.chain.next_seq(), rotate)
                        {
                            self.failed("HEAD could not be updated", &e);
                        }
                        // Counted once HEAD names it, so that whoever sees
                        // the count finds a directory that verifies.
                        self.counters.checkpoints.fetch_add(1, Relaxed);
                    }
                    None => self.since_checkpoint = pending,
                }
            }
            Err(e) => {
                self.counters.lost.fetch_add(records, Relaxed);
                // Counters first, so a caller told "no" sees them.
                match &e {
                    Failed::Write(io) => {
                        self.retry_at = Some(Instant::now() + RETRY_AFTER);
                        self.failed("audit write failed; the records of this batch are lost", io);
                    }
                    // The batch was written, then cut back with everything
                    // since the last fsync.
                    Failed::Sync(_) => self.sync_failed(&e),
                }
                for reply in replies.into_iter().chain(early) {
                    let _ = reply.send(Err(()));
                }
            }
        }
        self.spare = buf;
    }

    /// Writes and fsyncs a key rotation (a checkpoint signed by `keys` and
    /// endorsed by the keys in force), then signs with `keys`. On an empty
    /// log there is nothing to endorse: `keys` simply become the log's
    /// first key. On failure the old keys stay in force.
    fn rotate(&mut self, keys: Arc<AuditKeys>) -> Result<(), String> {
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
        match self.out.write(&buf, &self.counters, &mut || {}, true) {
            Ok(()) => {
                self.chain = chain;
                self.counters
                    .last_seq
                    .store(self.chain.next_seq() - 1, Relaxed);
                self.synced();
                self.since_checkpoint = 0;
                self.last_checkpoint = Instant::now();
                self.retry_at = None;
                self.keys = keys;
                // The rotation is in the log, which is what counts: a stale
                // HEAD is brought up to date at the next start.
                if let Err(e) = self.out.checkpointed(&head, self.chain.next_seq(), false) {
                    self.failed("HEAD could not be updated", &e);
                }
                self.counters.checkpoints.fetch_add(1, Relaxed);
                Ok(())
            }
            Err(e) => {
                let reason = e.error().to_string();
                match &e {
                    Failed::Write(io) => self.failed("audit key rotation could not be written", io),
                    Failed::Sync(_) => self.sync_failed(&e),
                }
                Err(reason)
            }
        }
    }

    /// Counts a failure and logs it, at most once every few seconds.
    fn failed(&mut self, what: &str, e: &io::Error) {
        self.counters.failures.fetch_add(1, Relaxed);
        let now = now_ms().max(1);
        self.counters.last_error_ms.store(now, Relaxed);
        // Keeps the first failure of a run of them.
        let _ = self
            .counters
            .failing_since_ms
            .compare_exchange(0, now, Relaxed, Relaxed);
        if self.warned_at.is_some_and(|at| at.elapsed() < WARN_EVERY) {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(
            error = %e,
            sink = %self.out.describe(),
            suppressed = self.suppressed,
            "{what}"
        );
        self.warned_at = Some(Instant::now());
        self.suppressed = 0;
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

    /// Folders whose next fsync fails, once each (see [`fsync`]).
    pub(super) mod failing_fsync {
        use std::path::{Path, PathBuf};
        use std::sync::Mutex;

        static NEXT: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

        pub(crate) fn arm(dir: &Path) {
            NEXT.lock().unwrap().push(dir.to_path_buf());
        }

        pub(crate) fn take(dir: &Path) -> bool {
            let mut next = NEXT.lock().unwrap();
            let found = next.iter().position(|d| d == dir);
            found.map(|i| next.remove(i)).is_some()
        }
    }

    fn event(i: u64) -> Event {
        Event::new("secret.read", "read", Outcome::Success).meta("i", i)
    }

    /// A failed fsync: the waiting caller is told no (the server answers
    /// 503), the records since the last good fsync are cut off the file
    /// and counted lost, and the log goes on from there with a chain that
    /// still verifies, without the refused record.
    #[tokio::test]
    async fn a_failed_fsync_refuses_its_waiter_and_the_log_goes_on_from_the_last_good_one() {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("audit");
        // No checkpoint before the shutdown's: the armed failure must hit
        // the refused record's fsync, not a timed checkpoint's.
        let mut cfg = AuditConfig::new(&dir);
        cfg.checkpoint_every = 1_000;
        cfg.checkpoint_interval = Duration::from_secs(3600);
        let a = Auditor::start(cfg, AuditKeys::load_or_create(data.path()).unwrap()).unwrap();
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
        let kept: Vec<u64> = read_records(&dir, None, 0, 100)
            .unwrap()
            .iter()
            .filter_map(|r| r["metadata"]["i"].as_u64())
            .collect();
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
