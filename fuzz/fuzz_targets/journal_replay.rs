//! The control-plane journal replay (`rampart state rebuild`) from
//! arbitrary events: each input line is wrapped in a correctly chained
//! journal entry (so the fuzzer gets past the hash chain to the events
//! themselves), and the whole input is also tried as one raw entry.
//! Replaying never panics, never applies more events than it read, and
//! gives the same result twice.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rampart_store::{replay, Until};

fn entry_key(seq: u64) -> String {
    format!("{seq:020}")
}

fuzz_target!(|data: &[u8]| {
    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    let mut prev = [0u8; 32];
    for (i, line) in data.split(|b| *b == b'\n').enumerate() {
        let seq = i as u64 + 1;
        let mut bytes = format!(
            "{{\"seq\":{seq},\"at_ms\":{seq},\"prev\":\"{}\",\"body\":{{\"kind\":\"clear\",\"event\":",
            hex(&prev)
        )
        .into_bytes();
        bytes.extend_from_slice(line);
        bytes.extend_from_slice(b"}}");
        prev.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref());
        entries.push((entry_key(seq), bytes));
    }
    let all = replay(&entries, None, Until::everything());
    assert!(all.applied <= all.entries);
    assert!(all.entries <= entries.len() as u64);
    let again = replay(&entries, None, Until::everything());
    assert_eq!(format!("{:?}", all), format!("{:?}", again));
    let half = replay(&entries, None, Until::seq(entries.len() as u64 / 2));
    assert!(half.applied <= all.applied || all.broken.is_some());

    let raw = replay(&[(entry_key(1), data.to_vec())], None, Until::everything());
    assert!(raw.applied <= 1);
});

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
