//! Rampart tokens from arbitrary bytes: verification never panics and never
//! accepts a token the key did not sign.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rampart_identity::{TokenClaims, TokenSigner};

fn signer() -> &'static TokenSigner {
    static S: OnceLock<TokenSigner> = OnceLock::new();
    S.get_or_init(|| TokenSigner::ephemeral().expect("signer"))
}

fuzz_target!(|data: &[u8]| {
    let s = signer();
    // Arbitrary input is never a valid token.
    assert!(s.verify(data, 1).is_err());
    // A real token with the input spliced into it is refused too, unless
    // the splice left it unchanged.
    let claims = TokenClaims {
        jti: "j".into(),
        tenant: "acme".into(),
        principal: "p".into(),
        roles: vec!["user".into()],
        iat_ms: 0,
        exp_ms: u64::MAX,
        src: "api_key".into(),
        cid: None,
    };
    let token = s.issue(&claims).expose().clone().into_bytes();
    let at = data.first().map_or(0, |b| usize::from(*b)) % token.len();
    let mut changed = token.clone();
    changed.splice(at..(at + data.len().min(4)).min(token.len()), data.iter().copied().take(4));
    if changed != token {
        assert!(s.verify(&changed, 1).is_err(), "a modified token verified");
    }
});
