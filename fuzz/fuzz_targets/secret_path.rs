//! Secret paths (`APP/ENV/PATH...`) and folders from arbitrary text: parsing
//! never panics, and a parsed path prints back to text that parses to the
//! same path and never climbs out of its tenant (`.`, `..`, empty segments).

#![no_main]

use libfuzzer_sys::fuzz_target;
use rampart_vault::{SecretPath, SecretPrefix};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = SecretPath::parse(text) {
        let shown = p.to_string();
        assert_eq!(SecretPath::parse(&shown).expect("printed path parses"), p);
        assert!(shown.split('/').all(|s| !s.is_empty() && s != "." && s != ".."));
    }
    if let Ok(f) = SecretPrefix::parse(text) {
        let shown = f.as_str();
        assert!(shown.split('/').all(|s| s != "." && s != ".."));
    }
});
