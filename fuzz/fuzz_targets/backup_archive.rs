//! Backup archives from arbitrary bytes: the header, the chunk framing and
//! the entry stream (paths, files, store tables) never panic and never
//! allocate by a length the input declares; a restore of such bytes only
//! fails.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rampart_server::fuzz_archive(data);
});
