//! Server configuration text: parsing and validation never panic, whatever
//! the file holds.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = rampart_server::Config::parse(text, "fuzz", &|_| None);
    }
});
