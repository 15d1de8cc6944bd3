//! A stream log's segment file with arbitrary bytes: opening it (the
//! recovery scan) and reading everything it serves never panics, serves
//! offsets in order, and refuses damaged ranges instead of returning them.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rampart_log::{Log, LogError, LogOptions};

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else { return };
    let logdir = dir.path().join("log");
    if std::fs::create_dir(&logdir).is_err()
        || std::fs::write(logdir.join("00000000000000000000.seg"), data).is_err()
    {
        return;
    }
    let Ok((log, report)) = Log::open(&logdir, LogOptions::default()) else {
        return;
    };
    let mut pos = log.first_offset();
    let end = log.next_offset();
    assert!(pos <= end);
    assert_eq!(report.next_offset, end);
    while pos < end {
        match log.read(pos, 1024) {
            Ok(msgs) => {
                assert!(!msgs.is_empty(), "a read inside the log returns something");
                for (i, m) in msgs.iter().enumerate() {
                    assert_eq!(m.offset, pos + i as u64, "offsets in order, no gap");
                }
                pos += msgs.len() as u64;
            }
            Err(LogError::Damaged { from, to } | LogError::Unsealable { from, to }) => {
                assert!(from <= pos && pos < to, "the refused range covers the read");
                pos = to;
            }
            Err(e) => panic!("unexpected read error at {pos}: {e}"),
        }
    }
    // Appends still work after whatever recovery found.
    let appended = log.append(&[b"after"], 0).expect("append after recovery");
    assert_eq!(appended.first_offset, end);
});
