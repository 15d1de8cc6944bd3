//! Rampart tokens: short-lived, Ed25519-signed credentials that Rampart
//! issues in exchange for another credential.
//!
//! Text form: `rt1.<base64url(claims JSON)>.<base64url(signature)>`, the
//! signature covering everything before the last dot. Verifying one needs
//! only the public key and the clock: nothing is read from or written to
//! storage. Revocation is checked by the caller against its in-memory list.

use std::fmt;
use std::path::Path;

use base64::Engine;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::secret::Secret;
use crate::{fsutil, random_bytes};

/// Prefix of every token of format version 1.
pub const TOKEN_PREFIX: &str = "rt1.";
/// Longest token accepted, in bytes.
pub const MAX_TOKEN_LEN: usize = 4096;

/// What a token says. Never secret by itself, but the token that carries it
/// is a bearer credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenClaims {
    /// Token id, for revocation.
    pub jti: String,
    pub tenant: String,
    pub principal: String,
    pub roles: Vec<String>,
    pub iat_ms: u64,
    pub exp_ms: u64,
    /// How the holder authenticated to get it (`api_key`, `jwt`, ...).
    pub src: String,
    /// Id of the credential it was exchanged for (a managed key id), so that
    /// revoking the key revokes its tokens too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid: Option<String>,
}

/// Why a token was refused. Short, stable words for audit records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    #[error("malformed")]
    Malformed,
    #[error("bad_signature")]
    BadSignature,
    #[error("expired")]
    Expired,
    #[error("not_yet_valid")]
    NotYetValid,
}

/// Why a signing key could not be loaded or made.
#[derive(Debug, thiserror::Error)]
#[error("token signing key {path}: {reason}")]
pub struct SigningKeyError {
    path: String,
    reason: String,
}

/// Makes a new random token id (128 bits, hex).
pub fn new_token_id() -> Result<String, crate::KeyError> {
    Ok(hex::encode(random_bytes::<16>()?))
}

/// Issues and verifies tokens with one Ed25519 key (ed25519-dalek, which
/// signed a quarter faster than ring where it was measured;
/// docs/performance.md, vault step 11). The key is zeroized on drop.
pub struct TokenSigner {
    key: SigningKey,
}

impl fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSigner([redacted])")
    }
}

impl TokenSigner {
    /// Reads the PKCS#8 key at `path`, creating it (mode 0600) if missing.
    pub fn load_or_create(path: &Path) -> Result<Self, SigningKeyError> {
        let err = |reason: String| SigningKeyError {
            path: path.display().to_string(),
            reason,
        };
        let bytes = match std::fs::read(path) {
            Ok(bytes) => Secret::new(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let bytes = Self::generate_pkcs8().map_err(|e| err(e.reason))?;
                if let Some(dir) = path.parent() {
                    fsutil::create_private_dir(dir).map_err(|e| err(e.to_string()))?;
                }
                fsutil::write_private_file(path, bytes.expose()).map_err(|e| err(e.to_string()))?;
                bytes
            }
            Err(e) => return Err(err(e.to_string())),
        };
        Self::from_pkcs8(bytes.expose()).map_err(|e| err(e.reason))
    }

    /// A signer from a PKCS#8 Ed25519 key (kept wrapped by the caller):
    /// version 1, or version 2 with the public key, which is then checked
    /// against the private one (the form ring writes, which earlier
    /// releases used).
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, SigningKeyError> {
        SigningKey::from_pkcs8_der(pkcs8)
            .map(|key| Self { key })
            .map_err(|e| SigningKeyError {
                path: "(wrapped)".into(),
                reason: format!("not an Ed25519 PKCS#8 key: {e}"),
            })
    }

    /// A new PKCS#8 Ed25519 key, for [`TokenSigner::from_pkcs8`].
    pub fn generate_pkcs8() -> Result<Secret<Vec<u8>>, SigningKeyError> {
        let err = |reason: String| SigningKeyError {
            path: "(memory)".into(),
            reason,
        };
        let seed = Zeroizing::new(random_bytes::<32>().map_err(|e| err(e.to_string()))?);
        let doc = SigningKey::from_bytes(&seed)
            .to_pkcs8_der()
            .map_err(|e| err(e.to_string()))?;
        Ok(Secret::new(doc.as_bytes().to_vec()))
    }

    /// A throwaway signer, for tests.
    pub fn ephemeral() -> Result<Self, SigningKeyError> {
        Self::from_pkcs8(Self::generate_pkcs8()?.expose())
    }

    /// The public key, for verifiers elsewhere.
    pub fn public_key(&self) -> &[u8] {
        self.key.as_ref().as_bytes()
    }

    /// Signs `claims` into a token.
    pub fn issue(&self, claims: &TokenClaims) -> Secret<String> {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        // Serializing plain strings and numbers cannot fail.
        let json = serde_json::to_vec(claims).unwrap_or_default();
        let mut text = format!("{TOKEN_PREFIX}{}", b64.encode(json));
        let sig = self.key.sign(text.as_bytes());
        text.push('.');
        text.push_str(&b64.encode(sig.to_bytes()));
        Secret::new(text)
    }

    /// Checks the signature and the validity window (with `leeway_ms` for
    /// clock skew on `iat`).
    pub fn verify(&self, token: &[u8], now_ms: u64) -> Result<TokenClaims, TokenError> {
        verify_with(self.public_key(), token, now_ms)
    }

    /// Checks the signature and the form only, not the time: for a server
    /// that keeps renewals of its tokens and checks expiry itself.
    pub fn verify_signature(&self, token: &[u8]) -> Result<TokenClaims, TokenError> {
        decode_verified(self.public_key(), token)
    }
}

/// A short public name for a token signing key, for logs, audit records
/// and the rotation report: the first 8 bytes of the SHA-256 of its public
/// key, in hex.
pub fn signing_key_id(public_key: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, public_key);
    hex::encode(&d.as_ref()[..8])
}

/// The public key a rotation retired, still accepted for tokens it signed
/// until `until_ms` (the rotation's grace period).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetiredSigningKey {
    pub public_key: Vec<u8>,
    pub until_ms: u64,
}

/// Every key tokens are checked with: the current signer, and during a
/// rotation's grace period the public key it replaced.
#[derive(Debug)]
pub struct TokenKeys {
    current: TokenSigner,
    retired: Option<RetiredSigningKey>,
}

impl TokenKeys {
    /// The keys after a start or a rotation.
    pub fn new(current: TokenSigner, retired: Option<RetiredSigningKey>) -> Self {
        Self { current, retired }
    }

    /// The key new tokens are signed with.
    pub fn signer(&self) -> &TokenSigner {
        &self.current
    }

    /// The retired key, while a grace period runs.
    pub fn retired(&self) -> Option<&RetiredSigningKey> {
        self.retired.as_ref()
    }

    /// Checks a token's form and signature, not its times. A token signed
    /// with the current key comes back with `None`; one signed with the
    /// retired key, before its grace period ends, with the end of that
    /// period, past which it must be refused whatever its own expiry says.
    pub fn verify_signature(
        &self,
        token: &[u8],
        now_ms: u64,
    ) -> Result<(TokenClaims, Option<u64>), TokenError> {
        match decode_verified(self.current.public_key(), token) {
            Ok(c) => Ok((c, None)),
            Err(TokenError::BadSignature) => match &self.retired {
                Some(r) if now_ms < r.until_ms => {
                    decode_verified(&r.public_key, token).map(|c| (c, Some(r.until_ms)))
                }
                _ => Err(TokenError::BadSignature),
            },
            Err(e) => Err(e),
        }
    }
}

/// Checks a token's form and signature and returns its claims, whatever
/// their times say.
fn decode_verified(public_key: &[u8], token: &[u8]) -> Result<TokenClaims, TokenError> {
    if token.len() > MAX_TOKEN_LEN || !token.starts_with(TOKEN_PREFIX.as_bytes()) {
        return Err(TokenError::Malformed);
    }
    let dot = token
        .iter()
        .rposition(|b| *b == b'.')
        .ok_or(TokenError::Malformed)?;
    let (signed, sig) = (&token[..dot], &token[dot + 1..]);
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let sig = b64.decode(sig).map_err(|_| TokenError::Malformed)?;
    let key = <[u8; 32]>::try_from(public_key)
        .ok()
        .and_then(|k| VerifyingKey::from_bytes(&k).ok())
        .ok_or(TokenError::BadSignature)?;
    let sig = Signature::from_slice(&sig).map_err(|_| TokenError::BadSignature)?;
    key.verify_strict(signed, &sig)
        .map_err(|_| TokenError::BadSignature)?;
    let body = &signed[TOKEN_PREFIX.len()..];
    let json = b64.decode(body).map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)
}

/// Verifies a token against a public key.
pub fn verify_with(
    public_key: &[u8],
    token: &[u8],
    now_ms: u64,
) -> Result<TokenClaims, TokenError> {
    let claims = decode_verified(public_key, token)?;
    if now_ms >= claims.exp_ms {
        return Err(TokenError::Expired);
    }
    // Issued by this server's clock; a minute of slack for a restarted host.
    if claims.iat_ms > now_ms + 60_000 {
        return Err(TokenError::NotYetValid);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp_ms: u64) -> TokenClaims {
        TokenClaims {
            jti: "t1".into(),
            tenant: "acme".into(),
            principal: "ci".into(),
            roles: vec!["user".into()],
            iat_ms: 1_000,
            exp_ms,
            src: "api_key".into(),
            cid: Some("k1".into()),
        }
    }

    #[test]
    fn issue_and_verify() {
        let s = TokenSigner::ephemeral().unwrap();
        let t = s.issue(&claims(10_000));
        assert!(t.expose().starts_with(TOKEN_PREFIX));
        assert_eq!(
            s.verify(t.expose().as_bytes(), 5_000).unwrap(),
            claims(10_000)
        );
        assert_eq!(
            s.verify(t.expose().as_bytes(), 10_000),
            Err(TokenError::Expired)
        );
        assert_eq!(
            s.verify(t.expose().as_bytes(), 1),
            Ok(claims(10_000)),
            "within the iat slack"
        );
    }

    #[test]
    fn tampering_and_other_keys_are_refused() {
        let s = TokenSigner::ephemeral().unwrap();
        let t = s.issue(&claims(10_000)).expose().clone();
        // Flip one character of the claims.
        let mut bad = t.clone().into_bytes();
        bad[6] = if bad[6] == b'A' { b'B' } else { b'A' };
        assert_eq!(s.verify(&bad, 5_000), Err(TokenError::BadSignature));
        let other = TokenSigner::ephemeral().unwrap();
        assert_eq!(
            other.verify(t.as_bytes(), 5_000),
            Err(TokenError::BadSignature)
        );
        assert_eq!(s.verify(b"rt1.abc", 5_000), Err(TokenError::BadSignature));
        assert_eq!(s.verify(b"garbage", 5_000), Err(TokenError::Malformed));
        assert_eq!(
            s.verify(&vec![b'r'; MAX_TOKEN_LEN + 1], 5_000),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn retired_key_is_accepted_only_during_its_grace() {
        let old = TokenSigner::ephemeral().unwrap();
        let new = TokenSigner::ephemeral().unwrap();
        let by_old = old.issue(&claims(10_000)).expose().clone();
        let by_new = new.issue(&claims(10_000)).expose().clone();
        let retired = RetiredSigningKey {
            public_key: old.public_key().to_vec(),
            until_ms: 3_000,
        };
        let keys = TokenKeys::new(new, Some(retired));
        assert_eq!(
            keys.verify_signature(by_new.as_bytes(), 5_000),
            Ok((claims(10_000), None))
        );
        assert_eq!(
            keys.verify_signature(by_old.as_bytes(), 2_999),
            Ok((claims(10_000), Some(3_000)))
        );
        assert_eq!(
            keys.verify_signature(by_old.as_bytes(), 3_000),
            Err(TokenError::BadSignature),
            "the grace period is over"
        );
        let stranger = TokenSigner::ephemeral().unwrap();
        let by_stranger = stranger.issue(&claims(10_000)).expose().clone();
        assert_eq!(
            keys.verify_signature(by_stranger.as_bytes(), 1_000),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            keys.verify_signature(b"garbage", 1_000),
            Err(TokenError::Malformed)
        );
        let no_grace = TokenKeys::new(TokenSigner::ephemeral().unwrap(), None);
        assert_eq!(
            no_grace.verify_signature(by_old.as_bytes(), 1_000),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn key_ids_are_short_and_differ() {
        let a = TokenSigner::ephemeral().unwrap();
        let b = TokenSigner::ephemeral().unwrap();
        let (ia, ib) = (
            signing_key_id(a.public_key()),
            signing_key_id(b.public_key()),
        );
        assert_eq!(ia.len(), 16);
        assert_ne!(ia, ib);
        assert_eq!(ia, signing_key_id(a.public_key()));
    }

    #[test]
    fn signing_key_persists_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keys/token_signing.key");
        let a = TokenSigner::load_or_create(&p).unwrap();
        let b = TokenSigner::load_or_create(&p).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        let t = a.issue(&claims(10_000));
        assert!(b.verify(t.expose().as_bytes(), 5_000).is_ok());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    /// Keys written by earlier releases (ring's PKCS#8 version 2) still
    /// load, sign exactly as ring does (Ed25519 is deterministic), and
    /// their tokens verify with ring too; a damaged key is refused.
    #[test]
    fn ring_written_keys_load_and_sign_the_same() {
        use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
        let doc = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref()).unwrap();
        let s = TokenSigner::from_pkcs8(doc.as_ref()).unwrap();
        assert_eq!(s.public_key(), pair.public_key().as_ref());
        let t = s.issue(&claims(10_000));
        let text = t.expose().as_bytes();
        let dot = text.iter().rposition(|b| *b == b'.').unwrap();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let sig = b64.decode(&text[dot + 1..]).unwrap();
        assert_eq!(sig, pair.sign(&text[..dot]).as_ref());
        UnparsedPublicKey::new(&ED25519, pair.public_key().as_ref())
            .verify(&text[..dot], &sig)
            .unwrap();
        // Our own new keys load back into ring as well.
        let ours = TokenSigner::generate_pkcs8().unwrap();
        let back = Ed25519KeyPair::from_pkcs8_maybe_unchecked(ours.expose()).unwrap();
        let again = TokenSigner::from_pkcs8(ours.expose()).unwrap();
        assert_eq!(back.public_key().as_ref(), again.public_key());
        let mut bad = doc.as_ref().to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(
            TokenSigner::from_pkcs8(&bad).is_err(),
            "a public key that does not match"
        );
        assert!(TokenSigner::from_pkcs8(b"garbage").is_err());
    }
}
