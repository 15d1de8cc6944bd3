//! JWTs from arbitrary bytes, through the same verifier the server uses
//! (one HS256 issuer, so that this target can sign):
//! - the input as a whole token is never accepted (it cannot carry a valid
//!   signature) and never panics the verifier;
//! - the input as the claims of a correctly signed token reaches the claim
//!   checks (JSON parsing, `exp`/`nbf`/`iat`, audience, tenant, principal
//!   and roles mapping), which must not panic, and whatever they accept has
//!   a valid tenant and an expiry in the future.

#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use rampart_identity::{JwksLocation, JwtIssuerConfig, JwtVerifier};
use ring::hmac;

const SECRET: &[u8; 32] = b"fuzz-hs256-secret-of-32-bytes!!!";

struct Fixture {
    verifier: JwtVerifier,
    key: hmac::Key,
    rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let secret = dir.path().join("hmac");
        std::fs::write(&secret, SECRET).expect("secret file");
        let mut c = JwtIssuerConfig::new(
            "fuzz-issuer",
            ["fuzz-aud"],
            JwksLocation::File(std::path::PathBuf::new()),
        );
        c.jwks_path = None;
        c.algorithms = vec!["HS256".into()];
        c.dangerous_allow_hmac_secret_path = Some(secret);
        Fixture {
            verifier: JwtVerifier::new(vec![c]).expect("verifier"),
            key: hmac::Key::new(hmac::HMAC_SHA256, SECRET),
            rt: tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime"),
            _dir: dir,
        }
    })
}

fn signed(f: &Fixture, claims: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims));
    let sig = hmac::sign(&f.key, body.as_bytes());
    format!("{body}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let as_token = String::from_utf8_lossy(data);
    let r = f.rt.block_on(f.verifier.verify(&as_token));
    assert!(r.is_err(), "an unsigned input was accepted: {r:?}");

    let token = signed(f, data);
    if let Ok(id) = f.rt.block_on(f.verifier.verify(&token)) {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        // The leeway is 30 s by default.
        assert!(
            id.expires_at_ms.saturating_add(30_000) >= now_ms,
            "expired token accepted"
        );
        assert_eq!(id.issuer, "fuzz-issuer");
        assert!(!id.principal.is_empty());
    }
});
