//! Re-sealing after a key rotation: [`Log::roll`], [`Log::count_stale`],
//! [`Log::reseal`], and what a crash in the middle leaves.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use super::*;
use crate::{segment, Message, ResealReport, StaleCount};

/// A sealer whose current key version can be bumped, as after a rotation:
/// `version u8 | version bytes of padding | body ^ version | tag`, the tag
/// binding the block's first offset. It opens every version (old keys are
/// kept until re-sealing is done); the padding makes the payload length
/// change with the version, so block positions move when re-sealed.
struct Rotating {
    version: AtomicU8,
    /// Seals blocks that do not open, as a broken key would.
    broken: AtomicBool,
}

impl Rotating {
    fn new(version: u8) -> Arc<Rotating> {
        Arc::new(Rotating {
            version: AtomicU8::new(version),
            broken: AtomicBool::new(false),
        })
    }

    fn rotate_to(&self, version: u8) {
        self.version.store(version, Ordering::SeqCst);
    }
}

fn tag(first_offset: u64) -> [u8; 8] {
    (first_offset ^ 0xa5a5_a5a5).to_le_bytes()
}

impl BlockSealer for Rotating {
    fn seal(&self, first_offset: u64, plaintext: &[u8]) -> Result<Vec<u8>, String> {
        let v = self.version.load(Ordering::SeqCst);
        let mut out = vec![v];
        out.extend(std::iter::repeat_n(0xEE, usize::from(v)));
        out.extend(plaintext.iter().map(|b| b ^ v));
        let bound = if self.broken.load(Ordering::SeqCst) {
            first_offset + 1
        } else {
            first_offset
        };
        out.extend_from_slice(&tag(bound));
        Ok(out)
    }

    fn open(&self, first_offset: u64, sealed: &[u8]) -> Result<Vec<u8>, String> {
        let (&v, rest) = sealed.split_first().ok_or("empty")?;
        let rest = rest.get(usize::from(v)..).ok_or("short")?;
        let split = rest.len().checked_sub(8).ok_or("short")?;
        let (body, t) = rest.split_at(split);
        if t != tag(first_offset) {
            return Err("sealed for another offset".into());
        }
        Ok(body.iter().map(|b| b ^ v).collect())
    }
}

/// Stale: sealed under another version than `current`.
fn stale_unless(current: u8) -> impl Fn(&[u8]) -> bool {
    move |p: &[u8]| p.first() != Some(&current)
}

fn sealed_opts(sealer: &Arc<Rotating>, segment_bytes: u64) -> LogOptions {
    let mut o = opts(segment_bytes);
    o.sealer = sealer.clone();
    o
}

fn count(blocks: u64, stale: u64) -> StaleCount {
    StaleCount { blocks, stale }
}

fn tmp_files(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "tmp"))
        .collect()
}

/// The key version of every frame's payload in `file`.
fn versions(file: &Path) -> Vec<u8> {
    let bytes = fs::read(file).unwrap();
    frames(&bytes)
        .iter()
        .map(|(pos, _)| bytes[pos + HEADER_LEN])
        .collect()
}

fn read_all(log: &Log) -> Vec<Message> {
    log.read(log.first_offset(), usize::MAX).unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn roll_only_starts_a_segment_after_a_block() {
    let tmp = TempDir::new().unwrap();
    let (log, _) = Log::open(tmp.path(), opts(1 << 20)).unwrap();
    log.roll().unwrap();
    assert_eq!(seg_files(tmp.path()).len(), 1, "nothing to close");
    fill(&log, 3, 2);
    log.roll().unwrap();
    log.roll().unwrap();
    let files = seg_files(tmp.path());
    assert_eq!(files.len(), 2);
    assert_eq!(fs::metadata(&files[1]).unwrap().len(), 0);
    assert!(files[1].ends_with("00000000000000000006.seg"));
    fill(&log, 1, 1);
    check_all(&log, 0);
    assert_eq!(
        log.count_stale(&|_: &[u8]| true).unwrap(),
        count(3, 3),
        "the active segment is not counted"
    );
}

#[test]
fn reseal_rewrites_every_stale_block_and_reads_back_identically() {
    let tmp = TempDir::new().unwrap();
    let sealer = Rotating::new(1);
    let o = sealed_opts(&sealer, 512);
    let (log, _) = Log::open(tmp.path(), o.clone()).unwrap();
    fill(&log, 40, 2);
    log.roll().unwrap();
    // One block under v1 in the active segment: reseal leaves it alone.
    log.append(&[&msg(80)], 4000).unwrap();
    let before = read_all(&log);
    let files = seg_files(tmp.path());
    let immutable = &files[..files.len() - 1];
    let sizes: Vec<u64> = immutable
        .iter()
        .map(|f| fs::metadata(f).unwrap().len())
        .collect();
    assert!(immutable.len() >= 4);
    assert_eq!(log.count_stale(&stale_unless(1)).unwrap(), count(40, 0));

    sealer.rotate_to(2);
    assert_eq!(log.count_stale(&stale_unless(2)).unwrap(), count(40, 40));
    let mut seen = Vec::new();
    let r = log
        .reseal(&stale_unless(2), &mut |left| seen.push(left))
        .unwrap();
    assert_eq!(r.segments_rewritten, immutable.len());
    assert_eq!(r.blocks_resealed, 40);
    assert_eq!((r.segments_skipped_damaged, r.stale_left), (0, 0));
    assert_eq!(seen.len(), immutable.len());
    assert!(seen.windows(2).all(|w| w[0] > w[1]), "{seen:?}");
    assert_eq!(seen.last(), Some(&0));
    assert_eq!(log.count_stale(&stale_unless(2)).unwrap(), count(40, 0));

    // Same names, longer payloads (one more padding byte each), same data.
    assert_eq!(seg_files(tmp.path()), files);
    assert!(tmp_files(tmp.path()).is_empty());
    for (f, size) in immutable.iter().zip(&sizes) {
        let v = versions(f);
        assert!(v.iter().all(|&v| v == 2), "{v:?}");
        assert_eq!(fs::metadata(f).unwrap().len(), size + v.len() as u64);
    }
    assert_eq!(versions(&files[files.len() - 1]), vec![1]);
    assert_eq!(read_all(&log), before);
    assert_eq!(log.offset_at_or_after(1750), Some(36));
    assert_eq!(log.read(37, 1).unwrap()[0].timestamp_ms, 1800);

    // Nothing stale is left: a second run does nothing.
    let again = log.reseal(&stale_unless(2), &mut |_| panic!()).unwrap();
    assert_eq!(again, ResealReport::default());

    // Appends go on; a reopen reads everything back.
    fill(&log, 5, 1);
    let before = read_all(&log);
    drop(log);
    let (log, report) = Log::open(tmp.path(), o).unwrap();
    assert!(report.damaged.is_empty() && report.truncated_bytes == 0);
    assert_eq!(read_all(&log), before);
    assert_eq!(log.count_stale(&stale_unless(2)).unwrap(), count(40, 0));
    // The v1 block of the once active segment goes at the next round.
    log.roll().unwrap();
    assert_eq!(log.count_stale(&stale_unless(2)).unwrap(), count(46, 1));
    let r = log.reseal(&stale_unless(2), &mut |_| {}).unwrap();
    assert_eq!((r.segments_rewritten, r.blocks_resealed), (1, 6));
    assert_eq!(read_all(&log), before);
}

#[test]
fn appends_reads_and_retention_go_on_during_reseal() {
    let tmp = TempDir::new().unwrap();
    let sealer = Rotating::new(1);
    let o = sealed_opts(&sealer, 512);
    let (log, _) = Log::open(tmp.path(), o.clone()).unwrap();
    fill(&log, 60, 2);
    log.roll().unwrap();
    let before = read_all(&log);
    let keep_from = 60;
    sealer.rotate_to(2);
    let log = Arc::new(log);
    // A reader part-way through, on the old files.
    let mut cursor = log.reader(ReadFrom::Offset(keep_from));
    assert_eq!(cursor.poll(5).unwrap(), before[60..65]);
    let stop = Arc::new(AtomicBool::new(false));
    let appender = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            for i in 0..200u64 {
                let m = format!("late-{i}");
                log.append(&[m.as_bytes()], 10_000 + i).unwrap();
            }
        })
    };
    let reader = {
        let (log, stop, before) = (Arc::clone(&log), Arc::clone(&stop), before.clone());
        std::thread::spawn(move || {
            let mut rounds = 0;
            while !stop.load(Ordering::SeqCst) || rounds == 0 {
                let got = log.read(keep_from, 60).unwrap();
                assert_eq!(got, before[60..120]);
                rounds += 1;
            }
            rounds
        })
    };
    let retention = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            log.apply_retention(None, Some(0), 0, Some(keep_from))
                .unwrap()
        })
    };
    let mut progress_appends = 0;
    let r = log
        .reseal(&stale_unless(2), &mut |_| {
            // No lock of the log is held while reporting progress.
            log.append(&[b"from-progress"], 0).unwrap();
            progress_appends += 1;
        })
        .unwrap();
    appender.join().unwrap();
    let retained = retention.join().unwrap();
    stop.store(true, Ordering::SeqCst);
    assert!(reader.join().unwrap() > 0);
    assert!(retained.segments_deleted > 0);
    assert_eq!((r.segments_skipped_damaged, r.stale_left), (0, 0));
    assert_eq!(progress_appends, r.segments_rewritten);
    assert_eq!(log.count_stale(&stale_unless(2)).unwrap().stale, 0);

    // The cursor goes on, now on the new files.
    assert_eq!(cursor.poll(55).unwrap(), before[65..120]);
    let check = |log: &Log| {
        let first = log.first_offset();
        assert!(first <= keep_from);
        let all = log.read(first, usize::MAX).unwrap();
        let (old, new) = all.split_at(usize::try_from(120 - first).unwrap());
        assert_eq!(old, &before[usize::try_from(first).unwrap()..]);
        let late: Vec<String> = new
            .iter()
            .map(|m| String::from_utf8(m.payload.to_vec()).unwrap())
            .filter(|m| m != "from-progress")
            .collect();
        let want: Vec<String> = (0..200).map(|i| format!("late-{i}")).collect();
        assert_eq!(late, want);
        all
    };
    let all = check(&log);
    drop(log);
    let (log, report) = Log::open(tmp.path(), o).unwrap();
    assert!(report.damaged.is_empty() && report.truncated_bytes == 0);
    assert_eq!(check(&log), all);
}

#[test]
fn damaged_segments_are_left_unchanged_and_reported() {
    let tmp = TempDir::new().unwrap();
    let sealer = Rotating::new(1);
    let o = sealed_opts(&sealer, 512);
    let before = {
        let (log, _) = Log::open(tmp.path(), o.clone()).unwrap();
        fill(&log, 40, 2);
        log.roll().unwrap();
        read_all(&log)
    };
    let files = seg_files(tmp.path());
    assert!(files.len() >= 5);
    // Damage found at open: a damaged range in segment 1.
    let mut bytes1 = fs::read(&files[1]).unwrap();
    let frames1 = frames(&bytes1);
    let (pos, h1) = frames1[1];
    bytes1[pos + HEADER_LEN + 3] ^= 0x01;
    fs::write(&files[1], &bytes1).unwrap();

    let (log, report) = Log::open(tmp.path(), o).unwrap();
    assert_eq!(report.damaged, vec![h1.first_offset..h1.end_offset()]);
    // Damage after open (the disk changed): segment 2's first block.
    let mut bytes2 = fs::read(&files[2]).unwrap();
    let frames2 = frames(&bytes2);
    let (pos, h2) = frames2[0];
    bytes2[pos + HEADER_LEN + 3] ^= 0x01;
    fs::write(&files[2], &bytes2).unwrap();

    sealer.rotate_to(2);
    let c = log.count_stale(&stale_unless(2)).unwrap();
    assert_eq!(
        c,
        count(39, 38),
        "the damaged block is not a block, the changed one not stale"
    );
    let r = log.reseal(&stale_unless(2), &mut |_| {}).unwrap();
    assert_eq!(r.segments_skipped_damaged, 2);
    assert_eq!(r.segments_rewritten, files.len() - 3);
    let left = (frames1.len() - 1 + frames2.len() - 1) as u64;
    assert_eq!(r.stale_left, left);
    assert_eq!(
        r.blocks_resealed,
        39 - (frames1.len() - 1 + frames2.len()) as u64
    );
    assert_eq!(log.count_stale(&stale_unless(2)).unwrap(), count(39, left));
    assert_eq!(fs::read(&files[1]).unwrap(), bytes1, "never rewritten");
    assert_eq!(fs::read(&files[2]).unwrap(), bytes2, "never rewritten");
    assert!(tmp_files(tmp.path()).is_empty());

    let lost = |o: u64| {
        (h1.first_offset..h1.end_offset()).contains(&o)
            || (h2.first_offset..h2.end_offset()).contains(&o)
    };
    for m in &before {
        match log.read(m.offset, 1) {
            Ok(got) => {
                assert!(!lost(m.offset));
                assert_eq!(&got[0], m);
            }
            Err(LogError::Damaged { .. }) => assert!(lost(m.offset)),
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn leftover_tmp_files_are_removed_at_open() {
    let tmp = TempDir::new().unwrap();
    {
        let (log, _) = Log::open(tmp.path(), opts(256)).unwrap();
        fill(&log, 10, 2);
    }
    let files = seg_files(tmp.path());
    // A whole copy of a segment under a .tmp name must not count either.
    let copy = segment::tmp_path(&files[0]);
    fs::copy(&files[0], &copy).unwrap();
    fs::write(tmp.path().join("00000000000000099999.seg.tmp"), b"junk").unwrap();
    fs::write(tmp.path().join("stray.tmp"), b"junk").unwrap();
    assert_eq!(tmp_files(tmp.path()).len(), 3);

    let (log, report) = Log::open(tmp.path(), opts(256)).unwrap();
    assert!(tmp_files(tmp.path()).is_empty());
    assert_eq!(report.segments, files.len());
    assert!(report.damaged.is_empty());
    assert_eq!(seg_files(tmp.path()), files);
    check_all(&log, 0);
}

#[test]
fn a_crash_during_reseal_leaves_every_block_readable() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("log");
    let sealer = Rotating::new(1);
    let o = sealed_opts(&sealer, 512);
    let before = {
        let (log, _) = Log::open(&dir, o.clone()).unwrap();
        fill(&log, 40, 2);
        log.roll().unwrap();
        read_all(&log)
    };
    let files = seg_files(&dir);
    sealer.rotate_to(2);

    // Killed while writing the new copy of segment 1: a torn `.tmp`
    // beside the whole original.
    let original = fs::read(&files[1]).unwrap();
    let half = segment::tmp_path(&files[1]);
    fs::write(&half, &original[..original.len() / 2]).unwrap();
    {
        let (log, report) = Log::open(&dir, o.clone()).unwrap();
        assert!(!half.exists());
        assert!(report.damaged.is_empty() && report.truncated_bytes == 0);
        assert_eq!(fs::read(&files[1]).unwrap(), original);
        assert_eq!(read_all(&log), before);
        assert_eq!(log.count_stale(&stale_unless(2)).unwrap(), count(40, 40));
    }

    // Killed after segment 1 was renamed into place, before the others: the
    // new copy of segment 1 beside the old copies of the rest.
    let done = tmp.path().join("done");
    copy_dir(&dir, &done);
    {
        let (log, _) = Log::open(&done, o.clone()).unwrap();
        log.reseal(&stale_unless(2), &mut |_| {}).unwrap();
    }
    let name = files[1].file_name().unwrap();
    fs::copy(done.join(name), &files[1]).unwrap();
    let in_1 = versions(&files[1]);
    assert!(in_1.iter().all(|&v| v == 2));
    let (log, report) = Log::open(&dir, o).unwrap();
    assert!(report.damaged.is_empty() && report.truncated_bytes == 0);
    assert_eq!(read_all(&log), before);
    let stale = 40 - in_1.len() as u64;
    assert_eq!(log.count_stale(&stale_unless(2)).unwrap(), count(40, stale));
    let r = log.reseal(&stale_unless(2), &mut |_| {}).unwrap();
    assert_eq!(r.segments_rewritten, files.len() - 2);
    assert_eq!(r.blocks_resealed, stale);
    assert_eq!(read_all(&log), before);
}

#[test]
fn a_reseal_that_cannot_be_written_changes_nothing() {
    let tmp = TempDir::new().unwrap();
    let sealer = Rotating::new(1);
    let mut o = sealed_opts(&sealer, 512);
    o.max_block_bytes = 150;
    let (log, _) = Log::open(tmp.path(), o).unwrap();
    fill(&log, 20, 2);
    log.roll().unwrap();
    let before = read_all(&log);
    let files = seg_files(tmp.path());
    let contents: Vec<Vec<u8>> = files.iter().map(|f| fs::read(f).unwrap()).collect();
    let unchanged = |log: &Log| {
        let now: Vec<Vec<u8>> = files.iter().map(|f| fs::read(f).unwrap()).collect();
        assert!(now == contents, "segment files changed");
        assert!(tmp_files(tmp.path()).is_empty());
        assert_eq!(read_all(log), before);
        assert_eq!(log.count_stale(&stale_unless(1)).unwrap(), count(20, 0));
    };

    // Version 200 pads every payload past the cap.
    sealer.rotate_to(200);
    let err = log.reseal(&stale_unless(200), &mut |_| {}).unwrap_err();
    assert!(
        matches!(err, LogError::BlockTooLarge { max: 150, .. }),
        "{err}"
    );
    unchanged(&log);

    // A sealer whose new seals do not open is caught before any rename.
    sealer.rotate_to(2);
    sealer.broken.store(true, Ordering::SeqCst);
    let err = log.reseal(&stale_unless(2), &mut |_| {}).unwrap_err();
    assert!(matches!(err, LogError::Seal { .. }), "{err}");
    sealer.rotate_to(1);
    unchanged(&log);
}
