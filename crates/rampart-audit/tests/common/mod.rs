//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test file uses some of them
#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rampart_audit::{AuditConfig, AuditKeys, Auditor, Event, Outcome};
use ring::digest::{digest, SHA256};

/// Small files and frequent checkpoints, so that a few hundred records
/// span several files.
pub fn config(dir: &Path) -> AuditConfig {
    let mut cfg = AuditConfig::new(dir);
    cfg.checkpoint_every = 50;
    cfg.max_file_bytes = 64 * 1024;
    cfg.durable_timeout = Duration::from_millis(500);
    cfg.shutdown_timeout = Duration::from_secs(2);
    cfg
}

pub fn event(i: usize) -> Event {
    Event::new("stream.create", "create", Outcome::Success)
        .principal(format!("user{}@acme.com", i % 7), "api_key")
        .tenant(if i.is_multiple_of(2) {
            "acme"
        } else {
            "globex"
        })
        .namespace("production")
        .resource(format!("stream:orders-{i}"))
        .meta("i", i)
        .meta("retention", "7d")
        .source(Some("10.0.1.45"))
        .user_agent("rampart-cli/0.1.0")
}

/// Writes `n` records (every tenth one mandatory) to a log in `<data>/audit`
/// and shuts down. Returns the audit folder and the public key.
pub async fn make_log(data: &Path, n: usize, max_file_bytes: u64) -> (PathBuf, Vec<u8>) {
    let dir = data.join("audit");
    let mut cfg = config(&dir);
    cfg.max_file_bytes = max_file_bytes;
    let keys = AuditKeys::load_or_create(data).unwrap();
    let a = Auditor::start(cfg, keys).unwrap();
    for i in 0..n {
        if i % 10 == 9 {
            a.mandatory(event(i)).await.unwrap();
        } else {
            a.record(event(i));
        }
    }
    a.shutdown().await;
    let s = a.stats();
    assert_eq!(
        (s.written, s.dropped, s.failures),
        (n as u64, 0, 0),
        "{s:?}"
    );
    (dir, a.public_key())
}

/// The log files of `dir`, in order.
pub fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.starts_with("audit-") && name.ends_with(".jsonl")
        })
        .collect();
    files.sort();
    files
}

pub fn read_lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

pub fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    if !lines.is_empty() {
        text.push('\n');
    }
    fs::write(path, text).unwrap();
}

pub fn field(line: &str, name: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    v[name].clone()
}

pub fn seq(line: &str) -> u64 {
    field(line, "seq").as_u64().unwrap()
}

pub fn is_checkpoint(line: &str) -> bool {
    field(line, "event_type") == "audit.checkpoint"
}

/// What a careful forger does after editing a line: set its `prev_hash`
/// and recompute its hash. Returns the new hash.
pub fn rehash(line: &mut String, prev_hash: &str) -> String {
    let mark = line.rfind(",\"hash\":\"").unwrap();
    let mut s = format!("{}}}", &line[..mark]);
    let p = s.rfind("\"prev_hash\":\"").unwrap() + "\"prev_hash\":\"".len();
    s.replace_range(p..p + 64, prev_hash);
    let h = hex::encode(digest(&SHA256, s.as_bytes()));
    s.pop();
    *line = format!("{s},\"hash\":\"{h}\"}}");
    h
}

/// Rewrites every file of the log from `(file, line)` on (0-based) so that
/// all hashes and links are consistent again.
pub fn rechain_from(dir: &Path, file: usize, line: usize) {
    let files = log_files(dir);
    let mut prev: Option<String> = None;
    for (fi, path) in files.iter().enumerate().skip(file) {
        let mut lines = read_lines(path);
        for (li, l) in lines.iter_mut().enumerate() {
            if fi == file && li < line {
                continue;
            }
            let p = match &prev {
                Some(p) => p.clone(),
                None => field_of_previous(&files, file, line),
            };
            prev = Some(rehash(l, &p));
        }
        write_lines(path, &lines);
    }
}

fn field_of_previous(files: &[PathBuf], file: usize, line: usize) -> String {
    if line > 0 {
        let lines = read_lines(&files[file]);
        return field(&lines[line - 1], "hash")
            .as_str()
            .unwrap()
            .to_string();
    }
    if file == 0 {
        return "0".repeat(64);
    }
    let lines = read_lines(&files[file - 1]);
    field(lines.last().unwrap(), "hash")
        .as_str()
        .unwrap()
        .to_string()
}
