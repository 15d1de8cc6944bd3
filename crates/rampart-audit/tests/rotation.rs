//! Key rotation: a log signed by one key, then (endorsed by it) another,
//! verifies with either key pinned; the server goes on only with the key in
//! force; a rotation that the old key did not endorse, or a log rolled
//! back to before the rotation, is caught with the new key pinned.
#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use common::*;
use rampart_audit::{key_in_force, verify_dir, AuditError, AuditKeys, Auditor};

/// Keys that can be made again from their bytes (an `AuditKeys` is not
/// `Clone`).
struct KeyBytes {
    pkcs8: Vec<u8>,
    hmac: Vec<u8>,
}

impl KeyBytes {
    fn new() -> KeyBytes {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
            .unwrap()
            .as_ref()
            .to_vec();
        let mut hmac = vec![0u8; 32];
        ring::rand::SecureRandom::fill(&rng, &mut hmac).unwrap();
        KeyBytes { pkcs8, hmac }
    }

    fn keys(&self) -> AuditKeys {
        AuditKeys::from_bytes(&self.pkcs8, &self.hmac).unwrap()
    }

    fn public(&self) -> Vec<u8> {
        self.keys().public_key().to_vec()
    }
}

/// 300 records under `a`, a rotation to `b`, 300 more; shut down.
async fn rotated_log(data: &Path, a: &KeyBytes, b: &KeyBytes) -> PathBuf {
    let dir = data.join("audit");
    let auditor = Auditor::start(config(&dir), a.keys()).unwrap();
    for i in 0..300 {
        auditor.record(event(i));
    }
    let before = auditor.hmac_id("alice@example.com");
    auditor.rotate_keys(b.keys()).await.unwrap();
    assert_eq!(auditor.public_key(), b.public());
    let after = auditor.hmac_id("alice@example.com");
    assert_ne!(before, after, "pseudonyms use the new HMAC key");
    for i in 300..600 {
        if i % 10 == 9 {
            auditor.mandatory(event(i)).await.unwrap();
        } else {
            auditor.record(event(i));
        }
    }
    auditor.shutdown().await;
    assert_eq!(auditor.stats().failures, 0);
    dir
}

/// The rotation record: its file, 0-based line, and the file's lines.
fn rotation_line(dir: &Path) -> (PathBuf, usize, Vec<String>) {
    for path in log_files(dir) {
        let lines = read_lines(&path);
        if let Some(i) = lines
            .iter()
            .position(|l| !field(l, "metadata")["previous_public_key"].is_null())
        {
            return (path, i, lines);
        }
    }
    panic!("no rotation record");
}

#[tokio::test]
async fn a_rotated_log_verifies_with_the_old_or_the_new_key() {
    let data = tempfile::tempdir().unwrap();
    let (a, b) = (KeyBytes::new(), KeyBytes::new());
    let dir = rotated_log(data.path(), &a, &b).await;

    let report = verify_dir(&dir, None).unwrap();
    assert_eq!(report.key_rotations, 1);
    assert_eq!(report.records, 600);
    // audit.pub keeps the first key; either key may be pinned.
    assert_eq!(
        fs::read_to_string(dir.join("audit.pub")).unwrap().trim(),
        B64.encode(a.public())
    );
    verify_dir(&dir, Some(&a.public())).unwrap();
    verify_dir(&dir, Some(&b.public())).unwrap();
    let stranger = KeyBytes::new();
    let e = verify_dir(&dir, Some(&stranger.public())).unwrap_err();
    assert!(e.reason.contains("another key"), "{e}");

    // The rotation says which HMAC key pseudonyms are under from then on.
    let (_, i, lines) = rotation_line(&dir);
    assert_eq!(
        field(&lines[i], "metadata")["hmac_key_id"],
        b.keys().hmac_key_id()
    );
    assert_eq!(
        b.keys().hmac_key_id(),
        rampart_audit::hmac_key_id_for(&b.hmac)
    );
}

#[tokio::test]
async fn the_log_goes_on_only_with_the_key_in_force() {
    let data = tempfile::tempdir().unwrap();
    let (a, b) = (KeyBytes::new(), KeyBytes::new());
    let dir = rotated_log(data.path(), &a, &b).await;
    assert_eq!(
        key_in_force(&dir, &[&a.keys(), &b.keys()]).unwrap(),
        Some(1)
    );
    assert_eq!(key_in_force(&dir, &[&a.keys()]).unwrap(), None);
    let e = Auditor::start(config(&dir), a.keys()).unwrap_err();
    assert!(matches!(e, AuditError::Inconsistent { .. }), "{e}");
    let again = Auditor::start(config(&dir), b.keys()).unwrap();
    again.mandatory(event(1)).await.unwrap();
    again.shutdown().await;
    let report = verify_dir(&dir, Some(&a.public())).unwrap();
    assert_eq!((report.records, report.key_rotations), (601, 1));

    // A rotation right after another, and on a log with nothing to sign.
    let c = KeyBytes::new();
    let again = Auditor::start(config(&dir), b.keys()).unwrap();
    again.rotate_keys(c.keys()).await.unwrap();
    again.shutdown().await;
    assert_eq!(verify_dir(&dir, None).unwrap().key_rotations, 2);
    verify_dir(&dir, Some(&c.public())).unwrap();

    let empty = tempfile::tempdir().unwrap();
    let fresh = empty.path().join("audit");
    let auditor = Auditor::start(config(&fresh), a.keys()).unwrap();
    auditor.rotate_keys(b.keys()).await.unwrap();
    auditor.record(event(0));
    auditor.shutdown().await;
    assert_eq!(
        key_in_force(&fresh, &[&a.keys(), &b.keys()]).unwrap(),
        Some(1)
    );
    assert_eq!(verify_dir(&fresh, Some(&b.public())).unwrap().records, 1);
}

#[tokio::test]
async fn a_rotation_the_old_key_did_not_endorse_is_caught() {
    let data = tempfile::tempdir().unwrap();
    let (a, b) = (KeyBytes::new(), KeyBytes::new());
    let dir = rotated_log(data.path(), &a, &b).await;
    let (path, i, mut lines) = rotation_line(&dir);
    // An endorsement by someone else (a forger's key rotated in).
    let forger = ring::signature::Ed25519KeyPair::from_pkcs8(&KeyBytes::new().pkcs8).unwrap();
    let meta = field(&lines[i], "metadata");
    let old = meta["endorsement"].as_str().unwrap();
    let forged = B64.encode(forger.sign(b"anything").as_ref());
    lines[i] = lines[i].replace(old, &forged);
    write_lines(&path, &lines);
    let file = log_files(&dir).iter().position(|p| *p == path).unwrap();
    rechain_from(&dir, file, i);
    for pinned in [a.public(), b.public()] {
        let e = verify_dir(&dir, Some(&pinned)).unwrap_err();
        assert_eq!(e.seq, Some(seq(&lines[i])), "{e}");
        assert!(e.reason.contains("not endorsed"), "{e}");
    }
}

/// Whoever holds the old key (the reason to rotate) can cut the log back
/// to before the rotation and go on signing with it; the new key, pinned,
/// catches that.
#[tokio::test]
async fn a_log_rolled_back_past_the_rotation_fails_with_the_new_key_pinned() {
    let data = tempfile::tempdir().unwrap();
    let (a, b) = (KeyBytes::new(), KeyBytes::new());
    let dir = rotated_log(data.path(), &a, &b).await;
    let (path, i, lines) = rotation_line(&dir);
    // Drop the rotation and everything after it.
    let files = log_files(&dir);
    let at = files.iter().position(|p| *p == path).unwrap();
    for later in &files[at + 1..] {
        fs::remove_file(later).unwrap();
    }
    write_lines(&path, &lines[..i]);
    fs::remove_file(dir.join("HEAD")).unwrap();
    // Going on with the old key writes a fresh checkpoint and HEAD.
    let forger = Auditor::start(config(&dir), a.keys()).unwrap();
    forger.mandatory(event(7)).await.unwrap();
    forger.shutdown().await;
    verify_dir(&dir, Some(&a.public())).unwrap();
    let e = verify_dir(&dir, Some(&b.public())).unwrap_err();
    assert!(e.reason.contains("another key"), "{e}");
}
