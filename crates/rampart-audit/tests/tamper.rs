//! A clean log verifies; every kind of tampering is caught, at the right
//! record.
#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

mod common;

use std::fs;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use common::*;
use rampart_audit::{verify_dir, VerifyError};

async fn small_log(data: &Path) -> (std::path::PathBuf, Vec<u8>) {
    // About 150 records per 64 KiB file: four files.
    let (dir, key) = make_log(data, 600, 64 * 1024).await;
    assert!(log_files(&dir).len() >= 3);
    verify_dir(&dir, Some(&key)).unwrap();
    (dir, key)
}

fn expect_error(dir: &Path, key: &[u8]) -> VerifyError {
    let e = verify_dir(dir, Some(key)).unwrap_err();
    // The message names the file and the line.
    let text = e.to_string();
    assert!(text.contains(&e.file.display().to_string()), "{text}");
    e
}

/// Picks a plain record (not a checkpoint) in the second file, and returns
/// its file, its 0-based line and the file's lines.
fn plain_record(dir: &Path) -> (std::path::PathBuf, usize, Vec<String>) {
    let path = log_files(dir)[1].clone();
    let lines = read_lines(&path);
    let i = (10..lines.len())
        .find(|&i| !is_checkpoint(&lines[i]) && !is_checkpoint(&lines[i + 1]))
        .unwrap();
    (path, i, lines)
}

#[tokio::test]
async fn a_clean_log_of_thousands_of_records_across_files_verifies() {
    let data = tempfile::tempdir().unwrap();
    let (dir, key) = make_log(data.path(), 3000, 256 * 1024).await;
    let files = log_files(&dir);
    assert!(files.len() >= 3, "{} files", files.len());
    let report = verify_dir(&dir, Some(&key)).unwrap();
    assert_eq!(report.records, 3000);
    assert!(report.checkpoints >= 3000 / 50, "{report:?}");
    assert_eq!(report.files, files.len());
    assert_eq!(report.first_seq, 1);
    assert_eq!(report.last_seq, report.records + report.checkpoints);
    assert_eq!(report.unsigned_tail, 0, "shutdown signs the tail");
    assert!(!report.torn_tail);
    // audit.pub is used when no key is given.
    assert_eq!(verify_dir(&dir, None).unwrap(), report);
    // Every file but the newest ends with a checkpoint; files are named
    // after their first seq.
    for path in &files {
        let lines = read_lines(path);
        assert!(is_checkpoint(lines.last().unwrap()), "{}", path.display());
        let name = path.file_name().unwrap().to_str().unwrap();
        assert_eq!(name, format!("audit-{:012}.jsonl", seq(&lines[0])));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        for f in files
            .iter()
            .chain([&dir.join("HEAD"), &dir.join("audit.pub")])
        {
            assert_eq!(mode(f), 0o600, "{}", f.display());
        }
    }
}

#[tokio::test]
async fn a_changed_byte_is_caught_at_its_record() {
    let data = tempfile::tempdir().unwrap();
    let (dir, key) = small_log(data.path()).await;
    let (path, i, mut lines) = plain_record(&dir);
    let want_seq = seq(&lines[i]);
    lines[i] = lines[i].replacen("\"action\":\"create\"", "\"action\":\"delete\"", 1);
    write_lines(&path, &lines);
    let e = expect_error(&dir, &key);
    assert_eq!((e.file, e.line, e.seq), (path, i + 1, Some(want_seq)));
    assert!(e.reason.contains("hash does not match"), "{}", e.reason);
}

#[tokio::test]
async fn a_changed_byte_with_recomputed_hash_breaks_the_next_link() {
    let data = tempfile::tempdir().unwrap();
    let (dir, key) = small_log(data.path()).await;
    let (path, i, mut lines) = plain_record(&dir);
    lines[i] = lines[i].replacen("\"action\":\"create\"", "\"action\":\"delete\"", 1);
    let prev = field(&lines[i - 1], "hash");
    rehash(&mut lines[i], prev.as_str().unwrap());
    write_lines(&path, &lines);
    let e = expect_error(&dir, &key);
    assert_eq!((e.line, e.seq), (i + 2, Some(seq(&lines[i + 1]))));
    assert!(e.reason.contains("prev_hash"), "{}", e.reason);
}

#[tokio::test]
async fn a_deleted_record_is_caught() {
    let data = tempfile::tempdir().unwrap();
    let (dir, key) = small_log(data.path()).await;
    let (path, i, mut lines) = plain_record(&dir);
    let gone = seq(&lines[i]);
    lines.remove(i);
    write_lines(&path, &lines);
    let e = expect_error(&dir, &key);
    assert_eq!((e.file, e.line, e.seq), (path, i + 1, Some(gone + 1)));
    assert!(
        e.reason.contains(&format!("where {gone} was expected")),
        "{}",
        e.reason
    );
    assert!(e.reason.contains("missing"), "{}", e.reason);
}

#[tokio::test]
async fn an_inserted_record_is_caught() {
    let data = tempfile::tempdir().unwrap();
    let (dir, key) = small_log(data.path()).await;
    let copied = read_lines(&log_files(&dir)[0])[3].clone();
    let (path, i, mut lines) = plain_record(&dir);
    lines.insert(i, copied.clone());
    write_lines(&path, &lines);
    let e = expect_error(&dir, &key);
    assert_eq!((e.file, e.line, e.seq), (path, i + 1, Some(seq(&copied))));
    assert!(e.reason.contains("repeated or reordered"), "{}", e.reason);
}

#[tokio::test]
async fn swapped_records_are_caught() {
    let data = tempfile::tempdir().unwrap();
    let (dir, key) = small_log(data.path()).await;
    let (path, i, mut lines) = plain_record(&dir);
    let second = seq(&lines[i + 1]);
    lines.swap(i, i + 1);
    write_lines(&path, &lines);
    let e = expect_error(&dir, &key);
    assert_eq!((e.file, e.line, e.seq), (path, i + 1, Some(second)));
}

#[tokio::test]
async fn truncation_below_the_last_checkpoint_is_caught() {
    let data = tempfile::tempdir().unwrap();
    let (dir, key) = small_log(data.path()).await;
    let newest = log_files(&dir).pop().unwrap();
    let mut lines = read_lines(&newest);
    assert!(is_checkpoint(lines.last().unwrap()));
    lines.truncate(lines.len() - 5);
    write_lines(&newest, &lines);
    let e = expect_error(&dir, &key);
    let last = seq(lines.last().unwrap());
    assert_eq!(
        (e.file, e.line, e.seq),
        (newest, lines.len() + 1, Some(last + 1))
    );
    assert!(e.reason.contains("truncated"), "{}", e.reason);
}

#[tokio::test]
async fn deleting_the_newest_file_is_caught() {
    let data = tempfile::tempdir().unwrap();
    let (dir, key) = small_log(data.path()).await;
    let mut files = log_files(&dir);
    fs::remove_file(files.pop().unwrap()).unwrap();
    let now_newest = files.pop().unwrap();
    let lines = read_lines(&now_newest);
    let e = expect_error(&dir, &key);
    assert_eq!(e.file, now_newest);
    assert_eq!(e.seq, Some(seq(lines.last().unwrap()) + 1));
    assert!(e.reason.contains("truncated"), "{}", e.reason);
}

#[tokio::test]
async fn deleting_a_middle_file_or_head_is_caught() {
    let data = tempfile::tempdir().unwrap();
    let (dir, key) = small_log(data.path()).await;
    let files = log_files(&dir);
    let head = fs::read(dir.join("HEAD")).unwrap();
    fs::remove_file(dir.join("HEAD")).unwrap();
    let e = expect_error(&dir, &key);
    assert!(e.reason.contains("HEAD is missing"), "{}", e.reason);
    fs::write(dir.join("HEAD"), head).unwrap();
    fs::remove_file(&files[1]).unwrap();
    let e = expect_error(&dir, &key);
    assert_eq!((e.file.clone(), e.line), (files[2].clone(), 1));
    assert!(e.reason.contains("missing"), "{}", e.reason);
}

/// Replaces the signature of a checkpoint by a valid signature of the same
/// message made with another key, and fixes every hash after it: only the
/// signature check can notice.
#[tokio::test]
async fn a_forged_checkpoint_signature_is_caught() {
    let data = tempfile::tempdir().unwrap();
    let (dir, key) = small_log(data.path()).await;
    let path = log_files(&dir)[1].clone();
    let mut lines = read_lines(&path);
    let i = lines.iter().position(|l| is_checkpoint(l)).unwrap();
    let meta = field(&lines[i], "metadata");
    let msg = format!(
        "rampart-audit-checkpoint:v1:{}:{}",
        meta["signed_seq"],
        meta["signed_hash"].as_str().unwrap()
    );
    let forger = ring::signature::Ed25519KeyPair::from_pkcs8(
        ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
            .unwrap()
            .as_ref(),
    )
    .unwrap();
    let forged = B64.encode(forger.sign(msg.as_bytes()).as_ref());
    let old = meta["signature"].as_str().unwrap();
    lines[i] = lines[i].replace(old, &forged);
    write_lines(&path, &lines);
    rechain_from(&dir, 1, i);
    let e = expect_error(&dir, &key);
    assert_eq!((e.file, e.line, e.seq), (path, i + 1, Some(seq(&lines[i]))));
    assert!(e.reason.contains("signature"), "{}", e.reason);
}

/// Someone who can write the folder can re-sign everything with their own
/// key and replace audit.pub and HEAD: only a pinned key catches that.
#[tokio::test]
async fn a_full_rewrite_is_caught_only_with_a_pinned_key() {
    let data = tempfile::tempdir().unwrap();
    let (dir, key) = small_log(data.path()).await;
    // The forger's log: same records, their key.
    let forger_data = tempfile::tempdir().unwrap();
    let (forged_dir, forged_key) = make_log(forger_data.path(), 600, 64 * 1024).await;
    fs::remove_dir_all(&dir).unwrap();
    fs::rename(&forged_dir, &dir).unwrap();
    assert!(verify_dir(&dir, None).is_ok(), "audit.pub was replaced too");
    assert!(verify_dir(&dir, Some(&forged_key)).is_ok());
    let e = expect_error(&dir, &key);
    assert!(e.reason.contains("signature"), "{}", e.reason);
    assert!(e.reason.contains("another key"), "{}", e.reason);
    let first_checkpoint = read_lines(&log_files(&dir)[0])
        .iter()
        .position(|l| is_checkpoint(l))
        .unwrap();
    assert_eq!(e.line, first_checkpoint + 1);
}

#[tokio::test]
async fn a_forged_head_is_caught() {
    let data = tempfile::tempdir().unwrap();
    let (dir, key) = small_log(data.path()).await;
    let text = fs::read_to_string(dir.join("HEAD")).unwrap();
    let mut head: serde_json::Value = serde_json::from_str(&text).unwrap();
    head["signature"] = B64.encode(vec![0u8; 64]).into();
    fs::write(dir.join("HEAD"), head.to_string()).unwrap();
    let e = expect_error(&dir, &key);
    assert!(e.file.ends_with("HEAD"));
    assert!(e.reason.contains("signature"), "{}", e.reason);
    // HEAD naming a checkpoint the log does not hold.
    head["seq"] = (head["seq"].as_u64().unwrap() - 1).into();
    fs::write(dir.join("HEAD"), head.to_string()).unwrap();
    let e = expect_error(&dir, &key);
    assert!(e.file.ends_with("HEAD"), "{e}");
    fs::write(dir.join("HEAD"), text).unwrap();
    verify_dir(&dir, Some(&key)).unwrap();
}

#[tokio::test]
async fn a_torn_tail_and_unsigned_records_are_reported_not_errors() {
    let data = tempfile::tempdir().unwrap();
    let (dir, key) = small_log(data.path()).await;
    let newest = log_files(&dir).pop().unwrap();
    let mut lines = read_lines(&newest);
    // Add two valid records after the last checkpoint, then half a line.
    let mut prev = field(lines.last().unwrap(), "hash")
        .as_str()
        .unwrap()
        .to_string();
    let last_seq = seq(lines.last().unwrap());
    let template = lines.iter().find(|l| !is_checkpoint(l)).unwrap().clone();
    for k in 1..=2 {
        let mut l = template.clone();
        let s = seq(&l);
        l = l.replacen(
            &format!("{{\"seq\":{s},"),
            &format!("{{\"seq\":{},", last_seq + k),
            1,
        );
        prev = rehash(&mut l, &prev);
        lines.push(l);
    }
    write_lines(&newest, &lines);
    let mut f = fs::OpenOptions::new().append(true).open(&newest).unwrap();
    std::io::Write::write_all(&mut f, b"{\"seq\":99999,\"times").unwrap();
    let report = verify_dir(&dir, Some(&key)).unwrap();
    assert_eq!(report.unsigned_tail, 2);
    assert!(report.torn_tail);
    assert_eq!(report.last_seq, last_seq + 2);
}
