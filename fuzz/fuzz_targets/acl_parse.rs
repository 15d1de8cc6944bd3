//! ACL documents (YAML and JSON) and resource strings from arbitrary input:
//! parsing never panics, and every document that parses renders back to
//! YAML that parses to the same document.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rampart_authz::{AclDocument, Resource};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Resource::parse(text);
    for docs in [AclDocument::parse_yaml(text), AclDocument::parse_json(text)]
        .into_iter()
        .flatten()
    {
        for d in docs {
            let again = AclDocument::parse_yaml(&d.to_yaml()).expect("rendered YAML parses");
            assert_eq!(again, vec![d], "YAML round trip changed the document");
        }
    }
});
