//! AES-256-GCM with random nonces, as every layer of the hierarchy uses it.
//!
//! A sealed value is `header | nonce (12) | ciphertext | tag (16)`. The
//! header (a magic and a version number) is authenticated along with the
//! caller's associated data, so it cannot be swapped.
//!
//! Keys are kept as raw bytes in [`Secret`] and expanded for each operation:
//! ring's expanded key schedule cannot be zeroized, so it lives only on the
//! stack for the length of one call.

use ring::aead::{self, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::rand::{SecureRandom, SystemRandom};

use rampart_identity::Secret;

use crate::error::KeyError;

pub(crate) const KEY_LEN: usize = 32;
pub(crate) const NONCE_LEN: usize = 12;
pub(crate) const TAG_LEN: usize = 16;

/// A 256-bit key, zeroized on drop.
pub(crate) type KeyBytes = Secret<[u8; KEY_LEN]>;

pub(crate) fn random_key() -> Result<KeyBytes, KeyError> {
    let mut key = Secret::new([0u8; KEY_LEN]);
    SystemRandom::new()
        .fill(key.expose_mut())
        .map_err(|_| KeyError::Random)?;
    Ok(key)
}

/// ring refuses a key only for a wrong length (ruled out by the type) and a
/// seal only for a plaintext over 64 GiB; neither can happen here, but they
/// still get an error rather than a panic.
fn internal() -> KeyError {
    KeyError::Corrupt {
        key: "AES-256-GCM".into(),
        reason: "ring refused the key or input size".into(),
    }
}

fn cipher(key: &KeyBytes) -> Result<LessSafeKey, KeyError> {
    UnboundKey::new(&AES_256_GCM, key.expose())
        .map(LessSafeKey::new)
        .map_err(|_| internal())
}

fn full_aad(header: &[u8], aad: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(header.len() + aad.len());
    out.extend_from_slice(header);
    out.extend_from_slice(aad);
    out
}

/// Encrypts `plaintext` in place in an exactly sized buffer (no copy of it
/// is left behind by a reallocation).
pub(crate) fn seal(
    key: &KeyBytes,
    header: &[u8],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, KeyError> {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| KeyError::Random)?;
    let start = header.len() + NONCE_LEN;
    let mut out = Vec::with_capacity(start + plaintext.len() + TAG_LEN);
    out.extend_from_slice(header);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let tag = cipher(key)?
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            aead::Aad::from(full_aad(header, aad)),
            &mut out[start..],
        )
        .map_err(|_| internal())?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

/// Opens a value made by [`seal`] whose header (already checked by the
/// caller) is `sealed[..header_len]`. Any failure is [`KeyError::Tampered`].
pub(crate) fn open(
    key: &KeyBytes,
    header_len: usize,
    aad: &[u8],
    sealed: &[u8],
) -> Result<Secret<Vec<u8>>, KeyError> {
    if sealed.len() < header_len + NONCE_LEN + TAG_LEN {
        return Err(KeyError::Tampered);
    }
    let (header, rest) = sealed.split_at(header_len);
    let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| KeyError::Tampered)?;
    let mut buf = Secret::new(ciphertext.to_vec());
    let len = cipher(key)?
        .open_in_place(
            nonce,
            aead::Aad::from(full_aad(header, aad)),
            buf.expose_mut(),
        )
        .map_err(|_| KeyError::Tampered)?
        .len();
    // Truncating keeps the allocation, which the Secret zeroizes in full.
    buf.expose_mut().truncate(len);
    Ok(buf)
}

/// Copies a 32-byte plaintext into a key, refusing any other length.
pub(crate) fn key_from(bytes: &Secret<Vec<u8>>) -> Option<KeyBytes> {
    let src: &[u8; KEY_LEN] = bytes.expose().as_slice().try_into().ok()?;
    let mut key = Secret::new([0u8; KEY_LEN]);
    key.expose_mut().copy_from_slice(src);
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_flipped_byte_fails() {
        let key = random_key().unwrap();
        let sealed = seal(&key, b"hdr1", b"aad", b"hello").unwrap();
        assert_eq!(sealed.len(), 4 + NONCE_LEN + 5 + TAG_LEN);
        assert_eq!(open(&key, 4, b"aad", &sealed).unwrap().expose(), b"hello");
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert!(matches!(
                open(&key, 4, b"aad", &bad),
                Err(KeyError::Tampered)
            ));
        }
        assert!(matches!(
            open(&key, 4, b"aaD", &sealed),
            Err(KeyError::Tampered)
        ));
        assert!(matches!(
            open(&key, 4, b"aad", &sealed[..sealed.len() - 1]),
            Err(KeyError::Tampered)
        ));
        let other = random_key().unwrap();
        assert!(matches!(
            open(&other, 4, b"aad", &sealed),
            Err(KeyError::Tampered)
        ));
    }
}
