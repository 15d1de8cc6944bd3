//! [`Auditor`], the handle the server records through.

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, RwLock};
use std::thread;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::config::{AuditConfig, Sink};
use crate::error::AuditError;
use crate::event::Event;
use crate::keys::AuditKeys;
use crate::latency::AuditLatency;
use crate::record::Chain;
use crate::recovery;
use crate::time::now_ms;
use crate::writer::{Counters, FileSink, Msg, Output, Writer};

/// Pause between attempts to queue a mandatory record while the queue is
/// full.
const FULL_QUEUE_PAUSE: Duration = Duration::from_millis(1);

/// A mandatory record was not made durable in time. The record may still be
/// written later, or not at all; the caller should refuse the operation it
/// was about to confirm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("audit log unavailable")]
pub struct Unavailable;

/// Counters for metrics and health checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditStats {
    /// Records written, checkpoints not counted. For files, a record is
    /// fsynced before a durable waiter is answered, and within 100 ms of
    /// being written otherwise.
    pub written: u64,
    /// Signed checkpoints written.
    pub checkpoints: u64,
    /// Fsyncs of the audit file (each covers every record written before
    /// it).
    pub fsyncs: u64,
    /// Best-effort records not queued: queue full, log shut down or writer
    /// gone.
    pub dropped: u64,
    /// Events refused for using the reserved `audit.` event type prefix.
    pub rejected: u64,
    /// Failed batch writes (write or fsync errors, `HEAD` updates).
    pub failures: u64,
    /// Records queued but lost because their batch failed.
    pub lost: u64,
    /// Mandatory records answered with [`Unavailable`].
    pub unavailable: u64,
    /// When the last failure happened, in Unix milliseconds.
    pub last_error_ms: Option<u64>,
    /// Set while the sink is failing: when the first failure since the
    /// last good write happened, in Unix milliseconds. Cleared by the next
    /// write (or fsync) that succeeds, so it answers "is the audit log
    /// working now" for health checks without writing anything.
    pub failing_since_ms: Option<u64>,
    /// Seq of the last record written.
    pub last_seq: u64,
    /// Batches not copied to stdout with [`Sink::Both`] because it was slow.
    pub stdout_dropped: u64,
}

/// The audit log handle. Cheap to clone; every clone feeds the same writer
/// thread, which stops when [`Auditor::shutdown`] is called or the last
/// clone is dropped.
#[derive(Clone)]
pub struct Auditor {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None` when disabled.
    tx: Option<SyncSender<Msg>>,
    /// `None` only if a disabled auditor could not make throwaway keys.
    /// Replaced by a key rotation.
    keys: RwLock<Option<Arc<AuditKeys>>>,
    counters: Arc<Counters>,
    closed: AtomicBool,
    durable_timeout: Duration,
    shutdown_timeout: Duration,
    sink: Option<(Sink, std::path::PathBuf)>,
}

impl fmt::Debug for Auditor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Auditor");
        match &self.inner.sink {
            Some((sink, dir)) => d.field("sink", sink).field("dir", dir),
            None => d.field("sink", &"disabled"),
        };
        d.field("closed", &self.inner.closed.load(Ordering::Relaxed))
            .field("stats", &self.stats())
            .finish()
    }
}

impl Auditor {
    /// Opens the log in `cfg.dir` (continuing its chain: a torn last line
    /// left by a crash is cut off and logged; any other damage is an error
    /// naming the file) and starts the writer thread.
    ///
    /// Fails if `audit.pub` holds another key than `keys`, or if the log
    /// ends before the checkpoint `HEAD` names (records were removed): both
    /// need an operator, see [`verify_dir`](crate::verify_dir).
    pub fn start(cfg: AuditConfig, keys: AuditKeys) -> Result<Auditor, AuditError> {
        Auditor::start_with_stdout(cfg, keys, Box::new(std::io::stdout()))
    }

    /// [`Auditor::start`], with `stdout` standing in for the process's
    /// standard output.
    pub(crate) fn start_with_stdout(
        cfg: AuditConfig,
        keys: AuditKeys,
        stdout: Box<dyn Write + Send>,
    ) -> Result<Auditor, AuditError> {
        cfg.validate()?;
        let keys = Arc::new(keys);
        let (out, chain, since_checkpoint) = match cfg.sink {
            Sink::Stdout => (Output::Stdout(stdout), Chain::genesis(), 0),
            Sink::File | Sink::Both => {
                let resume = recovery::open_log(&cfg.dir, &keys, cfg.max_file_bytes)?;
                let mut sink = FileSink::new(cfg.dir.clone(), &resume, cfg.max_file_bytes);
                if cfg.sink == Sink::Both {
                    sink = sink.with_copy(stdout).map_err(AuditError::Spawn)?;
                }
                (Output::Files(sink), resume.chain, resume.since_checkpoint)
            }
        };
        let counters = Arc::new(Counters::default());
        let writer = Writer::new(
            keys.clone(),
            counters.clone(),
            chain,
            since_checkpoint,
            out,
            cfg.checkpoint_every,
            cfg.checkpoint_interval,
        )
        .map_err(AuditError::Spawn)?;
        let (tx, rx) = sync_channel(cfg.queue);
        thread::Builder::new()
            .name("rampart-audit".into())
            .spawn(move || writer.run(rx))
            .map_err(AuditError::Spawn)?;
        Ok(Auditor {
            inner: Arc::new(Inner {
                tx: Some(tx),
                keys: RwLock::new(Some(keys)),
                counters,
                closed: AtomicBool::new(false),
                durable_timeout: cfg.durable_timeout,
                shutdown_timeout: cfg.shutdown_timeout,
                sink: Some((cfg.sink, cfg.dir)),
            }),
        })
    }

    /// An auditor that records nothing: [`Auditor::record`] does nothing and
    /// [`Auditor::mandatory`] succeeds at once. For `dangerous_disable_audit`
    /// only. [`Auditor::hmac_id`] still works, with a throwaway key.
    pub fn disabled() -> Auditor {
        Auditor {
            inner: Arc::new(Inner {
                tx: None,
                keys: RwLock::new(AuditKeys::ephemeral().ok().map(Arc::new)),
                counters: Arc::new(Counters::default()),
                closed: AtomicBool::new(false),
                durable_timeout: Duration::ZERO,
                shutdown_timeout: Duration::ZERO,
                sink: None,
            }),
        }
    }

    /// Whether this auditor writes anything (it was not made by
    /// [`Auditor::disabled`]).
    pub fn is_enabled(&self) -> bool {
        self.inner.tx.is_some()
    }

    /// Records `ev` on a best-effort basis: never blocks and never fails.
    /// If the queue is full (the disk is slow or stuck) or the log is shut
    /// down, the event is dropped and counted in [`AuditStats::dropped`].
    pub fn record(&self, ev: Event) {
        let Some(tx) = &self.inner.tx else {
            return;
        };
        let c = &self.inner.counters;
        if ev.is_reserved() {
            c.rejected.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.inner.closed.load(Ordering::Relaxed) {
            c.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let msg = Msg::Event {
            ev,
            at_ms: now_ms(),
            reply: None,
            early: false,
        };
        if tx.try_send(msg).is_err() {
            c.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records `ev` and resolves once it is written and fsynced (flushed,
    /// for stdout). Resolves with [`Unavailable`] if that did not happen
    /// within `durable_timeout`, whatever the disk does; callers then refuse
    /// the operation being audited. Needs a Tokio runtime with timers.
    pub async fn mandatory(&self, ev: Event) -> Result<(), Unavailable> {
        self.waited(ev, false).await
    }

    /// Records `ev` and resolves once it is written to the audit file (or
    /// flushed to stdout), without waiting for its fsync: what Vault's
    /// audit devices promise. For frequent reads, where an fsync per
    /// request costs more than it protects; a machine crash may lose the
    /// last records (the writer fsyncs them with the next durable record,
    /// and within 100 ms at most), a process crash does not. Fails like
    /// [`Auditor::mandatory`] when that does not happen in time.
    pub async fn written(&self, ev: Event) -> Result<(), Unavailable> {
        self.waited(ev, true).await
    }

    async fn waited(&self, ev: Event, early: bool) -> Result<(), Unavailable> {
        let Some(tx) = &self.inner.tx else {
            return Ok(());
        };
        let started = Instant::now();
        let result = self.mandatory_inner(tx, ev, early).await;
        let waited = if early {
            &self.inner.counters.written_wait
        } else {
            &self.inner.counters.durable_wait
        };
        waited.record(started.elapsed());
        if result.is_err() {
            self.inner
                .counters
                .unavailable
                .fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn mandatory_inner(
        &self,
        tx: &SyncSender<Msg>,
        ev: Event,
        early: bool,
    ) -> Result<(), Unavailable> {
        if ev.is_reserved() {
            self.inner.counters.rejected.fetch_add(1, Ordering::Relaxed);
            return Err(Unavailable);
        }
        if self.inner.closed.load(Ordering::Relaxed) {
            return Err(Unavailable);
        }
        let deadline = Instant::now() + self.inner.durable_timeout;
        let (reply, answer) = oneshot::channel();
        let mut msg = Msg::Event {
            ev,
            at_ms: now_ms(),
            reply: Some(reply),
            early,
        };
        // A full queue usually drains within milliseconds: wait for room,
        // up to the deadline.
        loop {
            match tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(Unavailable);
                    }
                    msg = back;
                    tokio::time::sleep_until((now + FULL_QUEUE_PAUSE).min(deadline)).await;
                }
                Err(TrySendError::Disconnected(_)) => return Err(Unavailable),
            }
        }
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(Ok(()))) => Ok(()),
            _ => Err(Unavailable),
        }
    }

    pub fn stats(&self) -> AuditStats {
        let c = &self.inner.counters;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let last_error = get(&c.last_error_ms);
        let failing_since = get(&c.failing_since_ms);
        AuditStats {
            written: get(&c.written),
            checkpoints: get(&c.checkpoints),
            fsyncs: get(&c.fsyncs),
            dropped: get(&c.dropped),
            rejected: get(&c.rejected),
            failures: get(&c.failures),
            lost: get(&c.lost),
            unavailable: get(&c.unavailable),
            last_error_ms: (last_error != 0).then_some(last_error),
            failing_since_ms: (failing_since != 0).then_some(failing_since),
            last_seq: get(&c.last_seq),
            stdout_dropped: get(&c.stdout_dropped),
        }
    }

    fn keys(&self) -> Option<Arc<AuditKeys>> {
        self.inner
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How long batch writes take and how long callers wait for them.
    pub fn latency(&self) -> AuditLatency {
        let c = &self.inner.counters;
        AuditLatency {
            batch_write: c.batch_write.snapshot(),
            durable_wait: c.durable_wait.snapshot(),
            written_wait: c.written_wait.snapshot(),
            fsync: c.fsync.snapshot(),
        }
    }

    /// The raw Ed25519 public key checkpoints are signed with now (empty
    /// when disabled).
    pub fn public_key(&self) -> Vec<u8> {
        match (self.keys(), self.inner.tx.is_some()) {
            (Some(keys), true) => keys.public_key().to_vec(),
            _ => Vec::new(),
        }
    }

    /// See [`AuditKeys::hmac_id`]; with the keys in force now.
    pub fn hmac_id(&self, value: &str) -> String {
        match self.keys() {
            Some(keys) => keys.hmac_id(value),
            None => "hmac:unavailable".to_string(),
        }
    }

    /// [`AuditKeys::hmac_key_id`] of the keys in force now.
    pub fn hmac_key_id(&self) -> String {
        self.keys()
            .map_or_else(|| "unavailable".to_string(), |k| k.hmac_key_id())
    }

    /// Puts new keys in force. Everything queued before is written and
    /// signed with the old keys; then a key rotation record, a checkpoint
    /// signed with `keys` that carries the old key's endorsement of them,
    /// is written and fsynced; every checkpoint after it is signed with
    /// `keys`, and pseudonyms ([`Auditor::hmac_id`]) use the new HMAC key.
    /// [`verify_dir`](crate::verify_dir) follows the rotation. Fails, with
    /// the old keys still in force, if the rotation could not be made
    /// durable within the shutdown timeout.
    pub async fn rotate_keys(&self, keys: AuditKeys) -> Result<(), AuditError> {
        let keys = Arc::new(keys);
        if let Some(tx) = &self.inner.tx {
            let failed = |reason: String| AuditError::Rotation(reason);
            if self.inner.closed.load(Ordering::Relaxed) {
                return Err(failed("the audit log is shut down".into()));
            }
            let deadline = Instant::now() + self.inner.shutdown_timeout;
            let (reply, answer) = oneshot::channel();
            let mut msg = Msg::Rotate {
                keys: keys.clone(),
                reply,
            };
            loop {
                match tx.try_send(msg) {
                    Ok(()) => break,
                    Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                        msg = back;
                        tokio::time::sleep(FULL_QUEUE_PAUSE * 5).await;
                    }
                    Err(_) => return Err(failed("the audit queue is full or closed".into())),
                }
            }
            match tokio::time::timeout_at(deadline, answer).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(reason))) => return Err(failed(reason)),
                Ok(Err(_)) => return Err(failed("the audit writer stopped".into())),
                Err(_) => return Err(failed("timed out; it may still complete".into())),
            }
        }
        *self.inner.keys.write().unwrap_or_else(|e| e.into_inner()) = Some(keys);
        Ok(())
    }

    /// Stops taking records, lets the writer drain the queue, write a final
    /// checkpoint and fsync, and waits for that up to `shutdown_timeout`.
    /// Later records are dropped; later mandatory records are
    /// [`Unavailable`].
    pub async fn shutdown(&self) {
        let Some(tx) = &self.inner.tx else {
            return;
        };
        self.inner.closed.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + self.inner.shutdown_timeout;
        let (done, finished) = oneshot::channel();
        let mut msg = Msg::Shutdown(done);
        loop {
            match tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) => {
                    let now = Instant::now();
                    if now >= deadline {
                        tracing::warn!("audit shutdown timed out with the queue full; queued records may be lost");
                        return;
                    }
                    msg = back;
                    tokio::time::sleep_until((now + FULL_QUEUE_PAUSE * 5).min(deadline)).await;
                }
                // The writer already stopped.
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
        if tokio::time::timeout_at(deadline, finished).await.is_err() {
            tracing::warn!("audit shutdown timed out; queued records may be lost");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::event::Outcome;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn stdout_sink_writes_chained_lines() {
        let out = Shared::default();
        let cfg = AuditConfig {
            sink: Sink::Stdout,
            checkpoint_every: 3,
            ..AuditConfig::default()
        };
        let a =
            Auditor::start_with_stdout(cfg, AuditKeys::ephemeral().unwrap(), Box::new(out.clone()))
                .unwrap();
        for i in 0..5 {
            a.mandatory(Event::new("auth.success", "login", Outcome::Success).meta("i", i))
                .await
                .unwrap();
        }
        a.shutdown().await;
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let recs: Vec<_> = text
            .lines()
            .map(|l| crate::record::parse_line(l.as_bytes()).unwrap())
            .collect();
        // 5 records and 2 checkpoints (after the third, and at shutdown).
        assert_eq!(recs.len(), 7, "{text}");
        for (i, r) in recs.iter().enumerate() {
            assert_eq!(r.seq, i as u64 + 1);
            if i > 0 {
                assert_eq!(r.prev_hash, recs[i - 1].hash);
            }
        }
        assert!(recs[3].is_checkpoint() && recs[6].is_checkpoint());
        assert_eq!(a.stats().written, 5);
        assert_eq!(a.stats().checkpoints, 2);
        assert_eq!(
            a.mandatory(Event::new("x", "y", Outcome::Success)).await,
            Err(Unavailable)
        );
    }

    #[tokio::test]
    async fn both_copies_file_records_to_stdout() {
        let dir = tempfile::tempdir().unwrap();
        let out = Shared::default();
        let mut cfg = AuditConfig::new(dir.path().join("audit"));
        cfg.sink = Sink::Both;
        let a =
            Auditor::start_with_stdout(cfg, AuditKeys::ephemeral().unwrap(), Box::new(out.clone()))
                .unwrap();
        a.mandatory(Event::new("auth.success", "login", Outcome::Success))
            .await
            .unwrap();
        a.shutdown().await;
        let file = std::fs::read(
            dir.path()
                .join("audit")
                .join(crate::files::log_file_name(1)),
        )
        .unwrap();
        // The copy thread may lag a little.
        for _ in 0..200 {
            if out.0.lock().unwrap().len() == file.len() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(*out.0.lock().unwrap(), file);
    }

    #[tokio::test]
    async fn latency_counts_every_batch_and_every_wait() {
        let dir = tempfile::tempdir().unwrap();
        let a = Auditor::start(
            AuditConfig::new(dir.path().join("audit")),
            AuditKeys::ephemeral().unwrap(),
        )
        .unwrap();
        assert_eq!(a.latency().batch_write.count, 0);
        for _ in 0..3 {
            a.mandatory(Event::new("auth.success", "login", Outcome::Success))
                .await
                .unwrap();
        }
        // Each caller waited for its own batch, and a durable waiter is
        // answered only after its batch's write and fsync were counted.
        let l = a.latency();
        assert!(l.batch_write.count >= 3, "{l:?}");
        assert_eq!(l.durable_wait.count, 3);
        assert_eq!(l.written_wait.count, 0);
        a.written(Event::new("secret.read", "read", Outcome::Success))
            .await
            .unwrap();
        assert_eq!(a.latency().written_wait.count, 1);
        // Refused calls are waits too.
        a.shutdown().await;
        assert!(a
            .mandatory(Event::new("x", "y", Outcome::Success))
            .await
            .is_err());
        assert_eq!(a.latency().durable_wait.count, 4);
        let none = Auditor::disabled().latency();
        assert_eq!(none.batch_write.count + none.durable_wait.count, 0);
    }

    #[tokio::test]
    async fn disabled_records_nothing_and_never_fails() {
        let a = Auditor::disabled();
        assert!(!a.is_enabled());
        a.record(Event::new("x", "y", Outcome::Success));
        a.mandatory(Event::new("x", "y", Outcome::Success))
            .await
            .unwrap();
        a.shutdown().await;
        assert_eq!(a.stats(), AuditStats::default());
        assert!(a.public_key().is_empty());
        assert!(a.hmac_id("alice").starts_with("hmac:"));
        assert!(format!("{a:?}").contains("disabled"));
    }

    #[tokio::test]
    async fn reserved_event_types_are_refused() {
        let cfg = AuditConfig {
            sink: Sink::Stdout,
            ..AuditConfig::default()
        };
        let a = Auditor::start_with_stdout(
            cfg,
            AuditKeys::ephemeral().unwrap(),
            Box::new(Shared::default()),
        )
        .unwrap();
        a.record(Event::new(
            "audit.checkpoint",
            "checkpoint",
            Outcome::Success,
        ));
        assert_eq!(
            a.mandatory(Event::new(
                "audit.checkpoint",
                "checkpoint",
                Outcome::Success
            ))
            .await,
            Err(Unavailable)
        );
        assert_eq!(a.stats().rejected, 2);
        a.shutdown().await;
        assert_eq!(a.stats().written, 0);
    }
}
