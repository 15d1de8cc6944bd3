//! The running log: restarts, crash repair, failing and stuck disks, a full
//! queue, and reading back.
#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

mod common;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use rampart_audit::{
    read_records, verify_dir, AuditConfig, AuditError, AuditKeys, Auditor, Event, Outcome,
    Unavailable,
};

fn start(data: &Path, cfg: AuditConfig) -> Auditor {
    Auditor::start(cfg, AuditKeys::load_or_create(data).unwrap()).unwrap()
}

fn current_file(dir: &Path) -> std::path::PathBuf {
    log_files(dir).pop().unwrap()
}

#[tokio::test]
async fn restart_continues_the_chain() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("audit");
    for round in 0..3 {
        let a = start(data.path(), config(&dir));
        for i in 0..40 {
            a.mandatory(event(round * 100 + i)).await.unwrap();
        }
        a.shutdown().await;
    }
    let r = verify_dir(&dir, None).unwrap();
    assert_eq!(r.records, 120);
    assert_eq!(r.unsigned_tail, 0);
    // One chain: seqs run on from one run to the next.
    let seqs: Vec<u64> = log_files(&dir)
        .iter()
        .flat_map(|f| read_lines(f))
        .map(|l| seq(&l))
        .collect();
    assert_eq!(seqs, (1..=r.last_seq).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_crash_leaves_an_unsigned_tail_that_the_next_run_signs() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("audit");
    let a = start(data.path(), config(&dir));
    for i in 0..7 {
        a.mandatory(event(i)).await.unwrap();
    }
    // No shutdown: a crash. Dropping the handle would still let the writer
    // finish, so keep it alive.
    let r = verify_dir(&dir, None).unwrap();
    assert_eq!((r.records, r.checkpoints, r.unsigned_tail), (7, 0, 7));
    std::mem::forget(a);
    // A second run on the same folder (the first writer is idle).
    let b = start(data.path(), config(&dir));
    b.mandatory(event(7)).await.unwrap();
    b.shutdown().await;
    let r = verify_dir(&dir, None).unwrap();
    assert_eq!((r.records, r.unsigned_tail), (8, 0));
}

#[tokio::test]
async fn a_torn_last_line_is_cut_off_at_start() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("audit");
    let a = start(data.path(), config(&dir));
    for i in 0..5 {
        a.mandatory(event(i)).await.unwrap();
    }
    a.shutdown().await;
    let file = current_file(&dir);
    let good = fs::read(&file).unwrap();
    let mut torn = good.clone();
    torn.extend_from_slice(b"{\"seq\":7,\"timestamp\":\"2026-01-15T10:3");
    fs::write(&file, &torn).unwrap();
    assert!(verify_dir(&dir, None).unwrap().torn_tail);
    let b = start(data.path(), config(&dir));
    assert_eq!(fs::read(&file).unwrap(), good, "torn bytes cut off");
    b.mandatory(event(5)).await.unwrap();
    b.shutdown().await;
    let r = verify_dir(&dir, None).unwrap();
    assert_eq!(r.records, 6);
    assert!(!r.torn_tail);
}

#[tokio::test]
async fn start_refuses_a_damaged_or_cut_log_naming_the_file() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("audit");
    let a = start(data.path(), config(&dir));
    for i in 0..5 {
        a.mandatory(event(i)).await.unwrap();
    }
    a.shutdown().await;
    let file = current_file(&dir);
    let mut lines = read_lines(&file);
    let keys = || AuditKeys::load_or_create(data.path()).unwrap();

    // A complete but altered last line is not a crash: refuse.
    let original = lines.clone();
    let last = lines.len() - 1;
    lines[last] = lines[last].replacen("checkpoint", "checkpoinT", 1);
    write_lines(&file, &lines);
    let e = Auditor::start(config(&dir), keys()).unwrap_err();
    assert!(matches!(e, AuditError::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains(&file.display().to_string()), "{e}");

    // Cut below the checkpoint HEAD names: refuse, or the next checkpoint
    // would hide the cut.
    lines = original.clone();
    lines.truncate(lines.len() - 2);
    write_lines(&file, &lines);
    let e = Auditor::start(config(&dir), keys()).unwrap_err();
    assert!(matches!(e, AuditError::Inconsistent { .. }), "{e}");
    assert!(e.to_string().contains("removed"), "{e}");

    // Another signing key than the one the log was written with.
    write_lines(&file, &original);
    let other = AuditKeys::ephemeral().unwrap();
    let e = Auditor::start(config(&dir), other).unwrap_err();
    assert!(e.to_string().contains("audit.pub"), "{e}");

    // A HEAD naming the last checkpoint, but not signed by its key.
    let head = fs::read_to_string(dir.join("HEAD")).unwrap();
    let mut forged: serde_json::Value = serde_json::from_str(&head).unwrap();
    forged["signature"] = B64.encode([0u8; 64]).into();
    fs::write(dir.join("HEAD"), forged.to_string()).unwrap();
    let e = Auditor::start(config(&dir), keys()).unwrap_err();
    assert!(matches!(e, AuditError::Inconsistent { .. }), "{e}");
    fs::write(dir.join("HEAD"), head).unwrap();
    Auditor::start(config(&dir), keys())
        .unwrap()
        .shutdown()
        .await;

    // All files deleted, HEAD left.
    fs::remove_file(&file).unwrap();
    let e = Auditor::start(config(&dir), keys()).unwrap_err();
    assert!(e.to_string().contains("no log files"), "{e}");
}

/// Replacing the current file by a symlink to /dev/full (a full disk), or
/// the folder by a file, fails writes fast; the log recovers by itself once
/// the file is back.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_failing_disk_never_hangs_and_service_resumes() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("audit");
    let mut cfg = config(&dir);
    cfg.durable_timeout = Duration::from_millis(200);
    let margin = Duration::from_millis(150);
    let a = start(data.path(), cfg.clone());
    for i in 0..3 {
        a.mandatory(event(i)).await.unwrap();
    }
    let file = current_file(&dir);
    let aside = dir.join("aside");
    fs::rename(&file, &aside).unwrap();
    std::os::unix::fs::symlink("/dev/full", &file).unwrap();

    let t = Instant::now();
    assert_eq!(a.mandatory(event(10)).await, Err(Unavailable));
    assert!(
        t.elapsed() < cfg.durable_timeout + margin,
        "{:?}",
        t.elapsed()
    );
    let t = Instant::now();
    for i in 0..1000 {
        a.record(event(i));
    }
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(a.mandatory(event(11)).await, Err(Unavailable));
    let s = a.stats();
    assert!(
        s.failures >= 2 && s.lost >= 2 && s.unavailable == 2,
        "{s:?}"
    );
    assert!(s.last_error_ms.is_some());
    assert!(s.failing_since_ms.is_some(), "{s:?}");

    // The disk is back.
    fs::remove_file(&file).unwrap();
    fs::rename(&aside, &file).unwrap();
    a.mandatory(event(12)).await.unwrap();
    let s = a.stats();
    assert_eq!(s.failing_since_ms, None, "a good write clears it: {s:?}");
    assert!(s.last_error_ms.is_some(), "the history stays: {s:?}");

    // The folder replaced by a file.
    let moved = data.path().join("audit-moved");
    fs::rename(&dir, &moved).unwrap();
    fs::write(&dir, "not a folder").unwrap();
    let t = Instant::now();
    assert_eq!(a.mandatory(event(13)).await, Err(Unavailable));
    assert!(t.elapsed() < cfg.durable_timeout + margin);
    fs::remove_file(&dir).unwrap();
    fs::rename(&moved, &dir).unwrap();
    a.mandatory(event(14)).await.unwrap();

    a.shutdown().await;
    let r = verify_dir(&dir, None).unwrap();
    // 3 + 12 + 14, and whichever best-effort records made it.
    assert_eq!(r.records, a.stats().written);
    assert!(r.records >= 5);
}

/// The writer keeps the current file open between batches, but only while
/// its path still names that file: a copy put in its place (same bytes,
/// same length, so it passes every check) is what the next record goes
/// to, and the file moved aside gets nothing more.
#[tokio::test]
async fn records_go_to_the_file_the_path_names_now() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("audit");
    let a = start(data.path(), config(&dir));
    for i in 0..3 {
        a.mandatory(event(i)).await.unwrap();
    }
    let file = current_file(&dir);
    let aside = data.path().join("aside");
    fs::rename(&file, &aside).unwrap();
    fs::copy(&aside, &file).unwrap();
    let before = fs::read(&aside).unwrap();

    for i in 3..6 {
        a.mandatory(event(i)).await.unwrap();
    }
    a.written(event(6)).await.unwrap();
    assert_eq!(
        fs::read(&aside).unwrap(),
        before,
        "the old file was written"
    );
    let lines = read_lines(&file);
    assert_eq!(
        lines.len(),
        before.iter().filter(|&&b| b == b'\n').count() + 4
    );
    a.shutdown().await;
    assert!(verify_dir(&dir, None).is_ok());
}

/// Makes a FIFO: opening it for writing blocks until a reader comes, which
/// is what a stuck disk looks like to the writer thread.
#[cfg(target_os = "linux")]
fn mkfifo(path: &Path) -> bool {
    std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// With the writer stuck in IO: `mandatory` gives up at `durable_timeout`,
/// `record` returns at once and drops (and counts) what the full queue
/// cannot take, and everything resumes once the IO returns.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_stuck_disk_never_hangs_callers_and_a_full_queue_drops() {
    use std::os::unix::fs::OpenOptionsExt;

    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("audit");
    let mut cfg = config(&dir);
    cfg.durable_timeout = Duration::from_millis(150);
    cfg.queue = 8;
    let margin = Duration::from_millis(150);
    let a = start(data.path(), cfg.clone());
    a.mandatory(event(0)).await.unwrap();
    let file = current_file(&dir);
    let aside = dir.join("aside");
    fs::rename(&file, &aside).unwrap();
    if !mkfifo(&file) {
        eprintln!("mkfifo unavailable: skipping");
        return;
    }

    // The writer takes this record and blocks opening the FIFO.
    let t = Instant::now();
    assert_eq!(a.mandatory(event(1)).await, Err(Unavailable));
    let waited = t.elapsed();
    assert!(waited >= cfg.durable_timeout, "{waited:?}");
    assert!(waited < cfg.durable_timeout + margin, "{waited:?}");

    // Best effort: never blocks; the queue takes 8, the rest is dropped.
    let t = Instant::now();
    for i in 0..100 {
        a.record(event(100 + i));
    }
    assert!(t.elapsed() < Duration::from_millis(50), "{:?}", t.elapsed());
    assert_eq!(a.stats().dropped, 92);

    // Mandatory with the queue full: still bounded.
    let t = Instant::now();
    assert_eq!(a.mandatory(event(2)).await, Err(Unavailable));
    assert!(t.elapsed() < cfg.durable_timeout + margin);

    // Many callers at once: all bounded.
    let t = Instant::now();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let a = a.clone();
            tokio::spawn(async move { a.mandatory(event(200 + i)).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), Err(Unavailable));
    }
    assert!(t.elapsed() < cfg.durable_timeout + margin);

    // The IO returns (a reader opens the FIFO; non-blocking, so this test
    // cannot hang), the file comes back, service resumes.
    const O_NONBLOCK: i32 = 0o4000;
    let reader = fs::OpenOptions::new()
        .read(true)
        .custom_flags(O_NONBLOCK)
        .open(&file)
        .unwrap();
    fs::rename(&aside, &file).unwrap();
    drop(reader);
    let mut resumed = false;
    for _ in 0..50 {
        if a.mandatory(event(3)).await.is_ok() {
            resumed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(resumed, "{:?}", a.stats());
    a.shutdown().await;
    let r = verify_dir(&dir, None).unwrap();
    assert_eq!(r.records, a.stats().written);
    assert!(a.stats().failures >= 1);
}

#[tokio::test]
async fn shutdown_is_bounded_even_when_the_writer_is_stuck() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("audit");
    let mut cfg = config(&dir);
    cfg.shutdown_timeout = Duration::from_millis(200);
    cfg.durable_timeout = Duration::from_millis(50);
    cfg.queue = 2;
    let a = start(data.path(), cfg);
    a.mandatory(event(0)).await.unwrap();
    #[cfg(target_os = "linux")]
    {
        let file = current_file(&dir);
        fs::rename(&file, dir.join("aside")).unwrap();
        if mkfifo(&file) {
            let _ = a.mandatory(event(1)).await;
            a.record(event(2));
            a.record(event(3));
        }
    }
    let t = Instant::now();
    a.shutdown().await;
    assert!(
        t.elapsed() < Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    // After shutdown: nothing is taken.
    a.record(event(4));
    assert_eq!(a.mandatory(event(5)).await, Err(Unavailable));
}

/// Someone else appending to the current file (a second server on the
/// same folder, a forger) stops the writer rather than being overwritten or
/// interleaved; a restart repairs a torn line, and refuses a forged one.
#[tokio::test]
async fn bytes_appended_behind_the_writers_back_stop_it() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("audit");
    let a = start(data.path(), config(&dir));
    a.mandatory(event(0)).await.unwrap();
    let file = current_file(&dir);
    let mut f = fs::OpenOptions::new().append(true).open(&file).unwrap();
    std::io::Write::write_all(&mut f, b"{\"seq\":2,\"forged\":tr").unwrap();
    assert_eq!(a.mandatory(event(1)).await, Err(Unavailable));
    a.shutdown().await;
    let b = start(data.path(), config(&dir));
    b.mandatory(event(2)).await.unwrap();
    b.shutdown().await;
    assert_eq!(verify_dir(&dir, None).unwrap().records, 2);
    // A complete forged line is not a crash: start refuses.
    std::io::Write::write_all(&mut f, b"{\"seq\":99}\n").unwrap();
    let e = Auditor::start(
        config(&dir),
        AuditKeys::load_or_create(data.path()).unwrap(),
    );
    assert!(matches!(e, Err(AuditError::Corrupt { .. })), "{e:?}");
}

#[tokio::test]
async fn a_file_shrunk_behind_the_writers_back_is_not_appended_to() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("audit");
    let a = start(data.path(), config(&dir));
    a.mandatory(event(0)).await.unwrap();
    a.mandatory(event(1)).await.unwrap();
    let file = current_file(&dir);
    let mut lines = read_lines(&file);
    lines.pop();
    write_lines(&file, &lines);
    assert_eq!(a.mandatory(event(2)).await, Err(Unavailable));
    assert!(a.stats().failures >= 1);
}

#[tokio::test]
async fn timed_checkpoints_sign_an_idle_tail() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("audit");
    let mut cfg = config(&dir);
    cfg.checkpoint_every = 1_000_000;
    cfg.checkpoint_interval = Duration::from_millis(100);
    let a = start(data.path(), cfg);
    a.mandatory(event(0)).await.unwrap();
    assert_eq!(verify_dir(&dir, None).unwrap().unsigned_tail, 1);
    let mut signed = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if a.stats().checkpoints == 1 {
            signed = true;
            break;
        }
    }
    assert!(signed);
    let r = verify_dir(&dir, None).unwrap();
    assert_eq!((r.records, r.checkpoints, r.unsigned_tail), (1, 1, 0));
    // Idle with nothing new: no more checkpoints.
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(a.stats().checkpoints, 1);
    a.shutdown().await;
    assert_eq!(a.stats().checkpoints, 1, "nothing left to sign at shutdown");
}

#[tokio::test]
async fn concurrent_mandatory_records_are_group_committed() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("audit");
    let a = start(data.path(), config(&dir));
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let a = a.clone();
            tokio::spawn(async move { a.mandatory(event(i)).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    a.shutdown().await;
    let r = verify_dir(&dir, None).unwrap();
    assert_eq!(r.records, 200);
}

#[tokio::test]
async fn written_records_are_in_the_file_when_answered_mixed_with_durable_ones() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("audit");
    let a = start(data.path(), config(&dir));
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let a = a.clone();
            tokio::spawn(async move {
                if i % 2 == 0 {
                    a.written(event(i)).await
                } else {
                    a.mandatory(event(i)).await
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    // Answered means written: every record is in the file before shutdown.
    let text = fs::read_to_string(current_file(&dir)).unwrap();
    let lines = text.lines().filter(|l| l.contains("\"seq\"")).count();
    assert!(lines >= 100, "{lines} records written");
    a.shutdown().await;
    let r = verify_dir(&dir, None).unwrap();
    assert_eq!(r.records, 100);
}

#[tokio::test]
async fn written_records_do_not_wait_for_an_fsync_but_get_one_soon() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("audit");
    let a = start(data.path(), config(&dir));
    // One at a time: each is its own batch.
    for i in 0..20 {
        a.written(event(i)).await.unwrap();
    }
    // The counters follow the answers by a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    while a.stats().written < 20 {
        assert!(Instant::now() < deadline, "{:?}", a.stats());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let before = a.stats();
    assert!(
        before.fsyncs < 10,
        "{} fsyncs for 20 written-level records",
        before.fsyncs
    );
    // Within the lag, the tail is fsynced without anyone asking.
    let deadline = Instant::now() + Duration::from_secs(5);
    while a.stats().fsyncs == before.fsyncs {
        assert!(Instant::now() < deadline, "no fsync of the written tail");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A durable record is fsynced before it is answered.
    let fsyncs = a.stats().fsyncs;
    a.mandatory(event(99)).await.unwrap();
    assert_eq!(a.stats().fsyncs, fsyncs + 1);
    a.shutdown().await;
    assert_eq!(verify_dir(&dir, None).unwrap().records, 21);
}

/// The log writes what it is given: a secret put in an event is in the log.
/// Callers must never do that; this pins the behaviour the docs warn about.
#[tokio::test]
async fn metadata_is_written_verbatim_so_callers_must_keep_secrets_out() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("audit");
    let a = start(data.path(), config(&dir));
    let canary = "CANARY-3f9d1c \"quoted\" \n newline";
    let ev = Event::new("admin.key.create", "create", Outcome::Success)
        .principal(a.hmac_id("alice@example.com"), "jwt")
        .meta("note", canary);
    a.mandatory(ev).await.unwrap();
    a.shutdown().await;
    let text = fs::read_to_string(current_file(&dir)).unwrap();
    assert!(text.contains("CANARY-3f9d1c \\\"quoted\\\" \\n newline"));
    assert!(!text.contains("alice"), "only the pseudonym is written");
    let recs = read_records(&dir, None, 0, 10).unwrap();
    assert_eq!(recs[0]["metadata"]["note"], canary);
    let id = a.hmac_id("alice@example.com");
    assert_eq!(recs[0]["principal"], id.as_str());
    // Stable across restarts and for the CLI.
    assert_eq!(
        rampart_audit::hmac_id_with(data.path(), "alice@example.com").unwrap(),
        id
    );
    assert!(!id.contains("alice"));
}

#[tokio::test]
async fn read_records_filters_by_tenant_and_seq() {
    let data = tempfile::tempdir().unwrap();
    let (dir, _) = make_log(data.path(), 600, 64 * 1024).await;
    let all = read_records(&dir, None, 0, usize::MAX).unwrap();
    assert_eq!(all.len(), 600, "checkpoints are left out");
    assert!(all.iter().all(|r| r["event_type"] == "stream.create"));
    let seqs: Vec<u64> = all.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));

    let acme = read_records(&dir, Some("acme"), 0, usize::MAX).unwrap();
    assert_eq!(acme.len(), 300);
    assert!(acme.iter().all(|r| r["tenant_id"] == "acme"));

    let since = seqs[400];
    let page = read_records(&dir, Some("globex"), since, 7).unwrap();
    assert_eq!(page.len(), 7);
    assert!(page.iter().all(|r| r["seq"].as_u64().unwrap() > since));
    assert!(page.iter().all(|r| r["tenant_id"] == "globex"));
    assert_eq!(
        page[0]["seq"].as_u64(),
        seqs[401..].iter().copied().find(|s| {
            all.iter()
                .any(|r| r["seq"].as_u64() == Some(*s) && r["tenant_id"] == "globex")
        })
    );
    assert!(read_records(&dir, None, *seqs.last().unwrap(), 10)
        .unwrap()
        .is_empty());
    assert!(read_records(&dir, Some("initech"), 0, 10)
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn clones_share_one_writer_and_dropping_them_all_finishes_it() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("audit");
    let a = start(data.path(), config(&dir));
    let b = a.clone();
    a.record(event(0));
    b.mandatory(event(1)).await.unwrap();
    assert_eq!(a.stats().written, 2);
    assert_eq!(a.public_key(), b.public_key());
    assert!(format!("{a:?}").contains("Auditor"));
    drop(a);
    drop(b);
    // The writer signs the tail when the last handle goes.
    let mut signed = false;
    for _ in 0..100 {
        if verify_dir(&dir, None)
            .map(|r| r.unsigned_tail == 0 && r.checkpoints == 1)
            .unwrap_or(false)
        {
            signed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(signed);
}
