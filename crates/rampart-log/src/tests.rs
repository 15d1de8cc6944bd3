//! Behaviour of the whole log against real files in temporary directories.

mod reseal;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use tempfile::TempDir;

use crate::frame::{self, HEADER_LEN};
use crate::{BlockSealer, Level, Log, LogError, LogOptions, ReadFrom, SyncPolicy};

fn opts(segment_bytes: u64) -> LogOptions {
    LogOptions {
        segment_bytes,
        sync: SyncPolicy::None,
        ..LogOptions::default()
    }
}

fn msg(offset: u64) -> Vec<u8> {
    format!("message-{offset:04}").into_bytes()
}

/// Appends `blocks` blocks of `per` messages; block `i` is stamped `i * 100`.
fn fill(log: &Log, blocks: u64, per: u64) {
    for i in 0..blocks {
        let first = log.next_offset();
        let msgs: Vec<Vec<u8>> = (first..first + per).map(msg).collect();
        let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
        let a = log.append(&refs, i * 100).unwrap();
        assert_eq!((a.first_offset, a.count), (first, per as u32));
    }
}

fn check_all(log: &Log, from: u64) {
    let got = log.read(from, usize::MAX).unwrap();
    assert_eq!(got.len() as u64, log.next_offset() - from);
    for (m, off) in got.iter().zip(from..) {
        assert_eq!(m.offset, off);
        assert_eq!(m.payload, msg(off));
    }
}

fn seg_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// (position, header) of every frame in a healthy segment file.
fn frames(bytes: &[u8]) -> Vec<(usize, frame::Header)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let h = frame::decode_header(&bytes[pos..], u32::MAX).unwrap();
        out.push((pos, h));
        pos += h.frame_len() as usize;
    }
    out
}

#[test]
fn log_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Log>();
}

#[test]
fn round_trip_across_segments_and_reopen() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("stream");
    {
        let (log, report) = Log::open(&dir, opts(256)).unwrap();
        assert_eq!((report.segments, report.next_offset), (0, 0));
        fill(&log, 100, 3);
        check_all(&log, 0);
    }
    assert!(seg_files(&dir).len() > 3);
    let (log, report) = Log::open(&dir, opts(256)).unwrap();
    assert_eq!(report.next_offset, 300);
    assert!(report.damaged.is_empty() && report.truncated_bytes == 0);
    check_all(&log, 0);
    let some = log.read(150, 10).unwrap();
    assert_eq!(
        some.iter().map(|m| m.offset).collect::<Vec<_>>(),
        (150..160).collect::<Vec<_>>()
    );
    assert_eq!(some[0].timestamp_ms, 50 * 100);
    assert!(log.read(300, 10).unwrap().is_empty());
    assert!(log.read(0, 0).unwrap().is_empty());
    assert!(matches!(log.read(301, 1), Err(LogError::OutOfRange { .. })));
    assert!(matches!(log.append(&[], 0), Err(LogError::EmptyBatch)));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        for f in seg_files(&dir) {
            assert_eq!(
                fs::metadata(&f).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
    }
}

#[test]
fn a_snapshot_copied_while_appending_reopens_with_every_block_before_it() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("stream");
    let mut o = opts(4096);
    o.preallocate_bytes = 64 << 10;
    let (log, _) = Log::open(&dir, o.clone()).unwrap();
    fill(&log, 50, 3);
    let end = log.next_offset();
    let snap = log.snapshot();
    // Appends after the snapshot are not in it.
    fill(&log, 10, 3);
    let copy = tmp.path().join("copy");
    fs::create_dir_all(&copy).unwrap();
    for seg in &snap {
        let mut f = fs::File::create(copy.join(&seg.name)).unwrap();
        seg.copy_to(&mut f).unwrap();
        assert_eq!(
            f.metadata().unwrap().len(),
            seg.len,
            "no preallocated zeros"
        );
    }
    let (restored, report) = Log::open(&copy, o).unwrap();
    assert_eq!(report.next_offset, end);
    assert_eq!(report.truncated_bytes, 0);
    check_all(&restored, 0);
    fill(&restored, 1, 1);
}

#[test]
fn read_by_timestamp_and_reader() {
    let tmp = TempDir::new().unwrap();
    let (log, _) = Log::open(tmp.path(), opts(300)).unwrap();
    fill(&log, 20, 2); // block i: offsets 2i, 2i+1, stamped i*100
    assert_eq!(log.offset_at_or_after(0), Some(0));
    assert_eq!(log.offset_at_or_after(550), Some(12));
    assert_eq!(log.offset_at_or_after(600), Some(12));
    assert_eq!(log.offset_at_or_after(1901), None);

    let mut r = log.reader(ReadFrom::Timestamp(1750));
    assert_eq!(r.position(), 36);
    let got: Vec<u64> = r.poll(100).unwrap().iter().map(|m| m.offset).collect();
    assert_eq!(got, vec![36, 37, 38, 39]);
    assert!(r.poll(10).unwrap().is_empty());

    let mut r = log.reader(ReadFrom::Earliest);
    let mut seen = 0;
    loop {
        let batch = r.poll(7).unwrap();
        if batch.is_empty() {
            break;
        }
        assert_eq!(batch[0].offset, seen);
        seen += batch.len() as u64;
    }
    assert_eq!(seen, 40);
    let mut latest = log.reader(ReadFrom::Latest);
    fill(&log, 1, 1);
    assert_eq!(latest.poll(10).unwrap()[0].offset, 40);
}

#[test]
fn torn_tail_cut_mid_frame_is_truncated_and_appends_continue() {
    let tmp = TempDir::new().unwrap();
    {
        let (log, _) = Log::open(tmp.path(), opts(1024)).unwrap();
        fill(&log, 30, 2);
    }
    let last = seg_files(tmp.path()).pop().unwrap();
    let len = fs::metadata(&last).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(len - 5)
        .unwrap();

    let (log, report) = Log::open(tmp.path(), opts(1024)).unwrap();
    assert!(report.truncated_bytes > 0);
    assert!(report.damaged.is_empty());
    assert_eq!(log.next_offset(), 58, "the cut block is gone");
    check_all(&log, 0);
    assert_eq!(log.append(&[&msg(58)], 0).unwrap().first_offset, 58);
    drop(log);
    let (log, report) = Log::open(tmp.path(), opts(1024)).unwrap();
    assert_eq!(report.truncated_bytes, 0);
    check_all(&log, 0);
}

#[test]
fn garbage_after_the_tail_is_truncated() {
    let tmp = TempDir::new().unwrap();
    {
        let (log, _) = Log::open(tmp.path(), opts(1024)).unwrap();
        fill(&log, 10, 2);
    }
    let last = seg_files(tmp.path()).pop().unwrap();
    let mut f = OpenOptions::new().append(true).open(&last).unwrap();
    let mut junk = frame::MAGIC.to_le_bytes().to_vec();
    junk.extend_from_slice(&[0xAB; 33]);
    f.write_all(&junk).unwrap();
    drop(f);

    let (log, report) = Log::open(tmp.path(), opts(1024)).unwrap();
    assert_eq!(report.truncated_bytes, junk.len() as u64);
    assert_eq!(log.next_offset(), 20);
    fill(&log, 2, 2);
    check_all(&log, 0);
}

#[test]
fn flipped_byte_in_a_middle_segment_is_refused_and_the_rest_served() {
    let tmp = TempDir::new().unwrap();
    {
        let (log, _) = Log::open(tmp.path(), opts(512)).unwrap();
        fill(&log, 40, 2);
    }
    let files = seg_files(tmp.path());
    assert!(files.len() >= 3);
    let mut bytes = fs::read(&files[1]).unwrap();
    let (pos, h) = frames(&bytes)[1];
    bytes[pos + HEADER_LEN + 3] ^= 0x01;
    fs::write(&files[1], &bytes).unwrap();
    let (from, to) = (h.first_offset, h.end_offset());

    let (log, report) = Log::open(tmp.path(), opts(512)).unwrap();
    assert_eq!(report.damaged, vec![from..to]);
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(report.next_offset, 80);
    match log.read(from, 10) {
        Err(LogError::Damaged { from: f, to: t }) => assert_eq!((f, t), (from, to)),
        other => panic!("expected Damaged, got {other:?}"),
    }
    match log.read(from + 1, 10) {
        Err(LogError::Damaged { .. }) => {}
        other => panic!("expected Damaged, got {other:?}"),
    }
    // A read running into the damage stops before it.
    let before = log.read(0, usize::MAX).unwrap();
    assert_eq!(before.len() as u64, from);
    check_all(&log, to);
    // Appends continue after the end.
    assert_eq!(log.append(&[&msg(80)], 0).unwrap().first_offset, 80);
    check_all(&log, to);
    let mut r = log.reader(ReadFrom::Offset(from));
    assert!(matches!(r.poll(5), Err(LogError::Damaged { .. })));
    r.seek(to);
    assert_eq!(r.poll(1).unwrap()[0].offset, to);
}

#[test]
fn length_cap_rejects_huge_headers_and_oversized_blocks() {
    let tmp = TempDir::new().unwrap();
    {
        let (log, _) = Log::open(tmp.path(), opts(4096)).unwrap();
        fill(&log, 3, 1);
        fill(&log, 1, 10); // a block of ~170 bytes
        fill(&log, 2, 1);
    }
    // A frame announcing a 1 GiB payload at the end of the file.
    let last = seg_files(tmp.path()).pop().unwrap();
    let mut huge = frame::encode(6, 1, 0, b"x");
    huge[28..32].copy_from_slice(&(1u32 << 30).to_le_bytes());
    huge.extend_from_slice(&[0u8; 64]);
    OpenOptions::new()
        .append(true)
        .open(&last)
        .unwrap()
        .write_all(&huge)
        .unwrap();

    let mut small = opts(4096);
    small.max_block_bytes = 100;
    let (log, report) = Log::open(tmp.path(), small.clone()).unwrap();
    assert_eq!(report.truncated_bytes, huge.len() as u64);
    // The 10-message block is over the smaller cap: refused, not served.
    assert_eq!(report.damaged, vec![3..13]);
    assert!(matches!(
        log.read(3, 1),
        Err(LogError::Damaged { from: 3, to: 13 })
    ));
    check_all(&log, 13);
    let big = vec![0u8; 200];
    assert!(matches!(
        log.append(&[&big], 0),
        Err(LogError::BlockTooLarge { .. })
    ));
    assert_eq!(log.next_offset(), 15);
}

#[test]
fn group_commit_shares_fsyncs() {
    let tmp = TempDir::new().unwrap();
    let mut o = opts(64 << 20);
    o.sync = SyncPolicy::OnCommit;
    let (log, _) = Log::open(tmp.path(), o).unwrap();
    let log = Arc::new(log);
    let (threads, per) = (8u64, 25u64);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for i in 0..per {
                    let m = format!("t{t}-{i}");
                    let a = log.append(&[m.as_bytes()], i).unwrap();
                    assert_eq!(a.level, Level::Fsynced);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let stats = log.stats();
    println!(
        "group commit: {} appends, {} fsyncs",
        stats.appends, stats.fsyncs
    );
    assert_eq!(stats.appends, threads * per);
    assert!(stats.fsyncs < stats.appends, "{stats:?}");
    // Every waiter was woken and uncounted (notifies are skipped while
    // the count is 0, so a count left behind would cost every later
    // append a futex call, and one missed would have hung a thread).
    assert_eq!(log.waiting(), [0, 0]);
    let all = log.read(0, usize::MAX).unwrap();
    assert_eq!(all.len() as u64, threads * per);
}

#[test]
fn sync_covers_every_segment_whatever_the_policy() {
    for policy in [SyncPolicy::None, SyncPolicy::IntervalMs(60_000)] {
        let tmp = TempDir::new().unwrap();
        let mut o = opts(1 << 10);
        o.sync = policy;
        let (log, _) = Log::open(tmp.path(), o).unwrap();
        fill(&log, 20, 10);
        assert!(seg_files(tmp.path()).len() > 1);
        let before = log.stats().fsyncs;
        log.sync().unwrap();
        assert!(log.stats().fsyncs > before, "{policy:?}");
        // Nothing new since: the next sync has nothing to do.
        let after = log.stats().fsyncs;
        if policy != SyncPolicy::None {
            log.sync().unwrap();
            assert_eq!(log.stats().fsyncs, after, "{policy:?}");
        }
        check_all(&log, 0);
    }
}

#[test]
fn interval_policy_acknowledges_written_and_syncs_in_background() {
    let tmp = TempDir::new().unwrap();
    let mut o = opts(1 << 20);
    o.sync = SyncPolicy::IntervalMs(5);
    let (log, _) = Log::open(tmp.path(), o).unwrap();
    assert_eq!(log.append(&[b"a"], 0).unwrap().level, Level::Written);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while log.stats().fsyncs == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(log.stats().fsyncs >= 1);
    drop(log); // joins the thread
}

#[test]
fn retention_by_size() {
    let tmp = TempDir::new().unwrap();
    let (log, _) = Log::open(tmp.path(), opts(256)).unwrap();
    fill(&log, 50, 2);
    let before = seg_files(tmp.path()).len();
    let r = log.apply_retention(None, Some(600), 0, None).unwrap();
    assert!(r.segments_deleted > 0 && r.bytes_deleted > 0);
    assert_eq!(r.kept_for_consumer, 0);
    assert_eq!(seg_files(tmp.path()).len(), before - r.segments_deleted);
    let left: u64 = seg_files(tmp.path())
        .iter()
        .map(|f| fs::metadata(f).unwrap().len())
        .sum();
    assert!(left <= 600, "{left}");
    assert_eq!(log.first_offset(), r.first_offset);
    assert!(matches!(log.read(0, 1), Err(LogError::OutOfRange { .. })));
    check_all(&log, r.first_offset);
    // The active segment is never deleted, and appends go on.
    let r = log
        .apply_retention(Some(0), Some(0), u64::MAX, None)
        .unwrap();
    assert!(r.segments_deleted > 0);
    assert_eq!(seg_files(tmp.path()).len(), 1);
    fill(&log, 1, 1);
    check_all(&log, log.first_offset());
    drop(log);
    let (log, report) = Log::open(tmp.path(), opts(256)).unwrap();
    assert!(report.damaged.is_empty());
    check_all(&log, log.first_offset());
}

#[test]
fn retention_by_age() {
    let tmp = TempDir::new().unwrap();
    let (log, _) = Log::open(tmp.path(), opts(256)).unwrap();
    fill(&log, 50, 2); // block i (offsets 2i, 2i+1) stamped i*100
    let r = log.apply_retention(Some(2000), None, 5000, None).unwrap();
    assert!(r.segments_deleted > 0);
    let first = log.first_offset();
    // Everything deleted was older than the 3000 cut-off; what is left
    // starts no later than the first block at or after it.
    assert!((first - 1) / 2 * 100 < 3000);
    assert!(first <= log.offset_at_or_after(3000).unwrap());
    check_all(&log, first);
    let again = log.apply_retention(Some(2000), None, 5000, None).unwrap();
    assert_eq!(again.segments_deleted, 0);
}

#[test]
fn retention_keeps_what_a_consumer_still_needs() {
    let tmp = TempDir::new().unwrap();
    let (log, _) = Log::open(tmp.path(), opts(256)).unwrap();
    fill(&log, 50, 2);
    let files = seg_files(tmp.path()).len();
    let keep_from = 15;
    let r = log
        .apply_retention(None, Some(0), 0, Some(keep_from))
        .unwrap();
    assert!(r.first_offset <= keep_from);
    assert!(r.kept_for_consumer > 0);
    assert_eq!(r.segments_deleted + r.kept_for_consumer, files - 1);
    check_all(&log, keep_from);
}

/// XORs the body and appends a tag bound to the block's first offset.
struct ToySealer;

impl BlockSealer for ToySealer {
    fn seal(&self, first_offset: u64, plaintext: &[u8]) -> Result<Vec<u8>, String> {
        let mut out: Vec<u8> = plaintext.iter().map(|b| b ^ 0x5a).collect();
        out.extend_from_slice(&(first_offset ^ 0xa5a5_a5a5).to_le_bytes());
        Ok(out)
    }

    fn open(&self, first_offset: u64, sealed: &[u8]) -> Result<Vec<u8>, String> {
        let split = sealed.len().checked_sub(8).ok_or("short")?;
        let (body, tag) = sealed.split_at(split);
        if tag != (first_offset ^ 0xa5a5_a5a5).to_le_bytes() {
            return Err("sealed for another offset".into());
        }
        Ok(body.iter().map(|b| b ^ 0x5a).collect())
    }
}

#[test]
fn a_block_copied_to_another_offset_fails_to_open() {
    let tmp = TempDir::new().unwrap();
    let mut o = opts(1 << 20);
    o.sealer = Arc::new(ToySealer);
    {
        let (log, _) = Log::open(tmp.path(), o.clone()).unwrap();
        log.append(&[b"aaaa"], 1).unwrap();
        log.append(&[b"bbbb"], 2).unwrap();
        assert_eq!(log.read(0, 2).unwrap()[1].payload, &b"bbbb"[..]);
    }
    let path = seg_files(tmp.path()).pop().unwrap();
    let mut bytes = fs::read(&path).unwrap();
    assert!(
        !bytes.windows(4).any(|w| w == b"aaaa"),
        "payload is sealed on disk"
    );
    // Someone who can write the file copies block 0 over block 1, fixing
    // up the offset and the CRC (a CRC is not a MAC).
    let f = frames(&bytes);
    let (p0, h0) = f[0];
    let (p1, _) = f[1];
    let payload0 = bytes[p0 + HEADER_LEN..p0 + h0.frame_len() as usize].to_vec();
    let forged = frame::encode(1, 1, 2, &payload0);
    bytes.splice(p1.., forged);
    fs::write(&path, &bytes).unwrap();

    let (log, report) = Log::open(tmp.path(), o).unwrap();
    assert!(report.damaged.is_empty(), "the frame itself is well formed");
    assert_eq!(log.read(0, 1).unwrap()[0].payload, &b"aaaa"[..]);
    assert!(matches!(
        log.read(1, 1),
        Err(LogError::Unsealable { from: 1, to: 2 })
    ));
    // A read from 0 serves block 0 and stops before the forged block.
    assert_eq!(log.read(0, 10).unwrap().len(), 1);
}

#[test]
fn recovery_throughput() {
    let tmp = TempDir::new().unwrap();
    let (blocks, per, size) = (1024u64, 64usize, 1024usize);
    {
        let (log, _) = Log::open(tmp.path(), opts(64 << 20)).unwrap();
        let m = vec![7u8; size];
        let batch: Vec<&[u8]> = vec![m.as_slice(); per];
        for i in 0..blocks {
            log.append(&batch, i).unwrap();
        }
    }
    let (log, report) = Log::open(tmp.path(), opts(64 << 20)).unwrap();
    println!(
        "recovery: {} segments, {} blocks, {} bytes in {:?} = {:.0} MB/s",
        report.segments,
        report.blocks,
        report.bytes_scanned,
        report.elapsed,
        report.mb_per_sec()
    );
    assert_eq!(report.blocks as u64, blocks);
    assert!(report.bytes_scanned >= 64 << 20);
    assert_eq!(log.next_offset(), blocks * per as u64);
}

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<Vec<u8>>),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..5).prop_map(Op::Append),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn appends_and_reopens_read_back_exactly(ops in prop::collection::vec(op(), 1..40)) {
        let tmp = TempDir::new().unwrap();
        let (mut log, _) = Log::open(tmp.path(), opts(200)).unwrap();
        let mut expected: Vec<Vec<u8>> = Vec::new();
        for (t, op) in ops.iter().enumerate() {
            match op {
                Op::Append(msgs) => {
                    let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
                    let a = log.append(&refs, t as u64).unwrap();
                    prop_assert_eq!(a.first_offset, expected.len() as u64);
                    expected.extend(msgs.iter().cloned());
                }
                Op::Reopen => {
                    drop(log);
                    let (l, report) = Log::open(tmp.path(), opts(200)).unwrap();
                    prop_assert!(report.damaged.is_empty());
                    prop_assert_eq!(report.truncated_bytes, 0);
                    log = l;
                }
            }
        }
        prop_assert_eq!(log.next_offset(), expected.len() as u64);
        let got = log.read(0, usize::MAX).unwrap();
        prop_assert_eq!(got.len(), expected.len());
        for (i, (m, e)) in got.iter().zip(&expected).enumerate() {
            prop_assert_eq!(m.offset, i as u64);
            prop_assert_eq!(&m.payload[..], &e[..]);
        }
    }
}

/// Appenders reserve offsets, seal outside the lock and write in order:
/// with many threads and a sealer bound to each block's offset, every block
/// opens where it lies, offsets run without gaps, and each thread's
/// messages keep their order.
#[test]
fn concurrent_sealed_appends_land_in_offset_order() {
    let tmp = TempDir::new().unwrap();
    let mut o = opts(16 << 10);
    o.sealer = Arc::new(ToySealer);
    o.sync = SyncPolicy::None;
    let (log, _) = Log::open(tmp.path(), o.clone()).unwrap();
    let log = Arc::new(log);
    let (threads, per) = (6u64, 200u64);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for i in 0..per {
                    let a = format!("t{t}-{i}-a");
                    let b = format!("t{t}-{i}-b");
                    log.append(&[a.as_bytes(), b.as_bytes()], i).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(log.waiting(), [0, 0]);
    drop(log);
    let (log, report) = Log::open(tmp.path(), o).unwrap();
    assert!(report.damaged.is_empty());
    let all = log.read(0, usize::MAX).unwrap();
    assert_eq!(all.len() as u64, threads * per * 2);
    let mut last = std::collections::HashMap::new();
    for (n, m) in all.iter().enumerate() {
        assert_eq!(m.offset, n as u64, "no gap, no reorder of offsets");
        let text = String::from_utf8(m.payload.to_vec()).unwrap();
        let mut parts = text.split('-');
        let (t, i) = (
            parts.next().unwrap().to_string(),
            parts.next().unwrap().parse::<u64>().unwrap(),
        );
        let prev = last.insert(t.clone(), i);
        assert!(prev.is_none_or(|p| p <= i), "{t}'s messages in order");
    }
}

fn on_commit(segment_bytes: u64) -> LogOptions {
    LogOptions {
        sync: SyncPolicy::OnCommit,
        ..opts(segment_bytes)
    }
}

fn file_len(p: &Path) -> u64 {
    fs::metadata(p).unwrap().len()
}

#[test]
fn on_commit_preallocates_zeros_and_reopens_without_loss() {
    let tmp = TempDir::new().unwrap();
    let logical = {
        let (log, _) = Log::open(tmp.path(), on_commit(1 << 20)).unwrap();
        fill(&log, 5, 2);
        log.disk_bytes()
    };
    let seg = seg_files(tmp.path()).pop().unwrap();
    // The first step is 64 KiB of zeros after the blocks.
    assert_eq!(file_len(&seg), 64 << 10);
    let bytes = fs::read(&seg).unwrap();
    assert!(bytes[logical as usize..].iter().all(|&b| b == 0));

    let (log, report) = Log::open(tmp.path(), on_commit(1 << 20)).unwrap();
    assert_eq!(
        report.truncated_bytes, 0,
        "zeros are free space, not a torn tail"
    );
    assert_eq!(report.corrupt_regions, 0);
    assert!(report.damaged.is_empty());
    assert_eq!((log.next_offset(), log.disk_bytes()), (10, logical));
    // The zeros are kept and written over.
    assert_eq!(file_len(&seg), 64 << 10);
    fill(&log, 2, 2);
    check_all(&log, 0);
    drop(log);
    let (log, report) = Log::open(tmp.path(), opts(1 << 20)).unwrap();
    assert_eq!((report.truncated_bytes, log.next_offset()), (0, 14));
    check_all(&log, 0);
}

#[test]
fn preallocation_doubles_and_rolled_segments_are_trimmed() {
    let tmp = TempDir::new().unwrap();
    let (log, _) = Log::open(tmp.path(), on_commit(300 << 10)).unwrap();
    let big = vec![7u8; 40 << 10];
    let mut sizes = Vec::new();
    for i in 0..12u64 {
        log.append(&[&big], i).unwrap();
        let last = seg_files(tmp.path()).pop().unwrap();
        sizes.push(file_len(&last));
    }
    // 64 KiB, then doubling steps, capped by the segment size.
    assert_eq!(sizes[0], 64 << 10);
    assert_eq!(sizes[1], 128 << 10, "{sizes:?}");
    assert!(sizes.contains(&(256 << 10)), "{sizes:?}");
    assert!(sizes.contains(&(300 << 10)), "{sizes:?}");
    assert!(sizes.iter().all(|&s| s <= 300 << 10), "{sizes:?}");
    let files = seg_files(tmp.path());
    assert!(files.len() >= 2);
    // Every rolled segment holds whole frames and nothing else.
    for f in &files[..files.len() - 1] {
        let bytes = fs::read(f).unwrap();
        let end: u64 = frames(&bytes).iter().map(|(_, h)| h.frame_len()).sum();
        assert_eq!(end, bytes.len() as u64, "{}", f.display());
    }
    assert_eq!(log.read(0, usize::MAX).unwrap().len(), 12);
    drop(log);
    let (log, report) = Log::open(tmp.path(), on_commit(300 << 10)).unwrap();
    assert_eq!((report.truncated_bytes, report.corrupt_regions), (0, 0));
    assert_eq!(log.read(0, usize::MAX).unwrap().len(), 12);
}

#[test]
fn torn_block_over_preallocated_zeros_is_truncated() {
    let tmp = TempDir::new().unwrap();
    let logical = {
        let (log, _) = Log::open(tmp.path(), on_commit(1 << 20)).unwrap();
        fill(&log, 4, 2);
        log.disk_bytes()
    };
    // Half a frame written over the zeros, as a crash mid-write leaves it.
    let seg = seg_files(tmp.path()).pop().unwrap();
    let half = &frame::encode(8, 1, 0, &[0x5A; 64])[..40];
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .write_all_at(half, logical)
        .unwrap();

    let (log, report) = Log::open(tmp.path(), on_commit(1 << 20)).unwrap();
    assert!(report.truncated_bytes > 0);
    assert_eq!(log.next_offset(), 8);
    assert_eq!(file_len(&seg), logical, "cut back to the last whole block");
    fill(&log, 1, 2);
    check_all(&log, 0);
}

#[test]
fn no_preallocation_without_on_commit_or_when_turned_off() {
    for o in [
        opts(1 << 20),
        LogOptions {
            preallocate_bytes: 0,
            ..on_commit(1 << 20)
        },
    ] {
        let tmp = TempDir::new().unwrap();
        let (log, _) = Log::open(tmp.path(), o).unwrap();
        fill(&log, 3, 2);
        let seg = seg_files(tmp.path()).pop().unwrap();
        assert_eq!(file_len(&seg), log.disk_bytes());
    }
}
