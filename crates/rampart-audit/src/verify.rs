//! Checking a log folder end to end: every hash, every link, every
//! checkpoint signature, and `HEAD`.

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::files;
use crate::record::{self, Head, GENESIS_HASH};

/// What [`verify_dir`] found in a log that checks out.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Records, checkpoints not counted.
    pub records: u64,
    pub checkpoints: u64,
    pub files: usize,
    /// First and last seq (0 and 0 for an empty log).
    pub first_seq: u64,
    pub last_seq: u64,
    /// Records after the last checkpoint: not yet signed, so they could be
    /// cut off or rewritten without notice. A crash may leave some; the
    /// next checkpoint signs them.
    pub unsigned_tail: u64,
    /// The newest file ends with an incomplete line (a crash during a
    /// write, or a write in progress); it is not counted, and the server
    /// cuts it off at its next start.
    pub torn_tail: bool,
    /// Key rotations followed (each endorsed by the key before it).
    pub key_rotations: u64,
}

/// The first bad record of a log that does not check out. `line` is
/// 1-based (0 when the whole file is at fault); `seq` is the bad record's
/// seq when it could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyError {
    pub file: PathBuf,
    pub line: usize,
    pub seq: Option<u64>,
    pub reason: String,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "audit log {}", self.file.display())?;
        if self.line > 0 {
            write!(f, " line {}", self.line)?;
        }
        if let Some(seq) = self.seq {
            write!(f, " (seq {seq})")?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl std::error::Error for VerifyError {}

fn fail(file: &Path, line: usize, seq: Option<u64>, reason: impl Into<String>) -> VerifyError {
    VerifyError {
        file: file.to_path_buf(),
        line,
        seq,
        reason: reason.into(),
    }
}

/// Verifies the log in `dir`: each line is a well-formed record whose hash
/// recomputes; seqs run from 1 without gap, repeat or reordering; each
/// `prev_hash` is the previous record's hash, across files too; every
/// file but the newest ends with a checkpoint; every checkpoint's signature
/// verifies; and the log reaches the checkpoint named in `HEAD` (a log cut
/// short below it was truncated).
///
/// Signatures are checked with `public_key` if given, else with the key in
/// `<dir>/audit.pub` (the log's first key). A key rotation is a checkpoint
/// of the new key that carries the old key's endorsement of it: the
/// checkpoints after it are checked with the new key. The trusted key may
/// also be a later key of the log (pin the newest after an incident that
/// exposed an older one): each key's own checkpoints cover, through the
/// hash chain, every record before them, so the log must then run,
/// rotation by rotation, to that key.
///
/// Someone who can write the folder can replace `audit.pub` and rewrite
/// the whole log with their own key, so only a key pinned elsewhere (in the
/// config, a ticket, a collector) defends against a full rewrite. Likewise
/// `HEAD` catches a log cut short, not one cut short with `HEAD` rolled
/// back to an earlier checkpoint: ship checkpoints off the host (the stdout
/// sink) for that.
///
/// The log must be complete from seq 1: archive old files along with the
/// folder, never instead of it (a missing oldest file reads as tampering).
/// Safe to run while the server writes: at worst the newest record is
/// reported as a torn tail.
pub fn verify_dir(dir: &Path, public_key: Option<&[u8]>) -> Result<VerifyReport, VerifyError> {
    // HEAD before the files: a running writer only moves it forward.
    let head_path = dir.join(files::HEAD_FILE);
    let head = files::read_head(dir).map_err(|r| fail(&head_path, 0, None, r))?;
    let key = match public_key {
        Some(k) => Some(k.to_vec()),
        None => {
            let pub_path = dir.join(files::PUBLIC_KEY_FILE);
            files::read_public_key(dir).map_err(|r| fail(&pub_path, 0, None, r))?
        }
    };
    let list = files::list_log_files(dir).map_err(|e| fail(dir, 0, None, e.to_string()))?;
    let run = |key: Option<Vec<u8>>, self_declared: bool| {
        let mut v = Verifier {
            eras: key.into_iter().map(|k| (0, k)).collect(),
            self_declared,
            head_seq: head.as_ref().map(|h| h.seq),
            expected: 1,
            prev_hash: GENESIS_HASH.to_string(),
            report: VerifyReport {
                files: list.len(),
                ..VerifyReport::default()
            },
            last_checkpoint: 0,
            at_head: None,
            end: (dir.to_path_buf(), 0),
        };
        for (i, (first_seq, path)) in list.iter().enumerate() {
            v.file(path, *first_seq, i + 1 == list.len())?;
        }
        let keys: Vec<Vec<u8>> = v.eras.iter().map(|(_, k)| k.clone()).collect();
        v.finish(head.as_ref(), dir).map(|r| (r, keys))
    };
    match run(key.clone(), false) {
        Ok((report, _)) => Ok(report),
        Err(first) => {
            // The trusted key may be a later key of a rotated log: check the
            // log against the keys it names, then that the trusted one is
            // among them. Otherwise the error that got further stands.
            let Some(trusted) = key else {
                return Err(first);
            };
            match run(None, true) {
                Ok((report, keys)) if report.key_rotations > 0 && keys.contains(&trusted) => {
                    Ok(report)
                }
                Err(second) if second.seq > first.seq => Err(second),
                _ => Err(first),
            }
        }
    }
}

struct Verifier {
    /// Take the first key from the log itself (the trusted key is checked
    /// to be among the log's keys afterwards).
    self_declared: bool,
    /// Each key in force and the seq from which it signs: the trusted key
    /// (or the log's first, when self-declared), then each key a rotation
    /// brings. The last one is in force now.
    eras: Vec<(u64, Vec<u8>)>,
    head_seq: Option<u64>,
    expected: u64,
    prev_hash: String,
    report: VerifyReport,
    last_checkpoint: u64,
    /// The record at `HEAD`'s seq: where, its hash, whether a checkpoint.
    at_head: Option<(PathBuf, usize, String, bool)>,
    /// The newest file and its number of complete lines.
    end: (PathBuf, usize),
}

impl Verifier {
    fn file(&mut self, path: &Path, name_seq: u64, newest: bool) -> Result<(), VerifyError> {
        let f = File::open(path).map_err(|e| fail(path, 0, None, e.to_string()))?;
        let mut reader = BufReader::new(f);
        let mut buf = Vec::new();
        let mut line_no = 0;
        let mut last_was_checkpoint = false;
        loop {
            buf.clear();
            let n = reader
                .read_until(b'\n', &mut buf)
                .map_err(|e| fail(path, line_no + 1, None, e.to_string()))?;
            if n == 0 {
                break;
            }
            line_no += 1;
            if buf.pop() != Some(b'\n') {
                if newest {
                    self.report.torn_tail = true;
                    line_no -= 1;
                    break;
                }
                return Err(fail(
                    path,
                    line_no,
                    None,
                    "incomplete line in a file that is not the newest",
                ));
            }
            let rec = record::parse_line(&buf).map_err(|e| fail(path, line_no, e.seq, e.reason))?;
            let bad = |reason: String| fail(path, line_no, Some(rec.seq), reason);
            if line_no == 1 && rec.seq != name_seq {
                return Err(bad(format!(
                    "file is named for seq {name_seq} but starts at seq {}",
                    rec.seq
                )));
            }
            if rec.seq != self.expected {
                return Err(bad(if rec.seq < self.expected {
                    format!(
                        "seq {} where {} was expected: a repeated or reordered record",
                        rec.seq, self.expected
                    )
                } else {
                    format!(
                        "seq {} where {} was expected: records are missing, or reordered",
                        rec.seq, self.expected
                    )
                }));
            }
            if rec.prev_hash != self.prev_hash {
                return Err(bad(if rec.seq == 1 {
                    "first record's prev_hash is not all zeros".to_string()
                } else {
                    format!("prev_hash is not the hash of record seq {}", rec.seq - 1)
                }));
            }
            if rec.is_checkpoint() {
                let meta = rec.checkpoint_meta().map_err(&bad)?;
                if self.eras.is_empty() && self.self_declared {
                    let first = match &meta.previous_public_key {
                        Some(p) => crate::record::decode_key(p),
                        None => meta.key(),
                    }
                    .map_err(&bad)?;
                    self.eras.push((0, first));
                }
                let Some((_, key)) = self.eras.last() else {
                    return Err(bad(
                        "no public key to check this checkpoint (audit.pub missing)".into(),
                    ));
                };
                if meta.check_rotation(key).map_err(&bad)? {
                    self.eras.push((rec.seq, meta.key().map_err(&bad)?));
                    self.report.key_rotations += 1;
                }
                if let Some((_, key)) = self.eras.last() {
                    rec.check_checkpoint(key).map_err(bad)?;
                }
                self.report.checkpoints += 1;
                self.last_checkpoint = rec.seq;
            } else {
                self.report.records += 1;
            }
            last_was_checkpoint = rec.is_checkpoint();
            if self.head_seq == Some(rec.seq) {
                self.at_head = Some((
                    path.to_path_buf(),
                    line_no,
                    rec.hash.clone(),
                    rec.is_checkpoint(),
                ));
            }
            if self.report.first_seq == 0 {
                self.report.first_seq = rec.seq;
            }
            self.report.last_seq = rec.seq;
            self.expected = rec.seq + 1;
            self.prev_hash = rec.hash;
        }
        if !newest && !last_was_checkpoint {
            let seq = (line_no > 0).then(|| self.expected - 1);
            return Err(fail(
                path,
                line_no,
                seq,
                "file does not end with a checkpoint (every file but the newest does)",
            ));
        }
        self.end = (path.to_path_buf(), line_no);
        Ok(())
    }

    fn finish(mut self, head: Option<&Head>, dir: &Path) -> Result<VerifyReport, VerifyError> {
        let last = self.report.last_seq;
        if let Some(h) = head {
            let head_path = dir.join(files::HEAD_FILE);
            // The key in force at HEAD's checkpoint.
            let key = self
                .eras
                .iter()
                .rev()
                .find(|(from, _)| *from <= h.seq)
                .map(|(_, k)| k);
            let Some(key) = key else {
                return Err(fail(
                    &head_path,
                    0,
                    None,
                    "no public key to check it (audit.pub missing)",
                ));
            };
            if !h.signature_ok(key) {
                return Err(fail(
                    &head_path,
                    0,
                    Some(h.seq),
                    "signature does not verify with the trusted public key",
                ));
            }
        }
        match head {
            Some(h) if h.seq > last => {
                let (file, lines) = &self.end;
                return Err(fail(
                    file,
                    lines + 1,
                    Some(last + 1),
                    format!(
                        "log ends at seq {last} but HEAD names checkpoint seq {}: records were removed \
                         (truncated)",
                        h.seq
                    ),
                ));
            }
            Some(h) => match self.at_head.take() {
                Some((_, _, hash, true)) if hash == h.hash => {}
                Some((file, line, _, _)) => {
                    return Err(fail(
                        &file,
                        line,
                        Some(h.seq),
                        "record is not the checkpoint HEAD names: the log was rewritten",
                    ))
                }
                // Not reachable: the log runs from seq 1 past HEAD's seq.
                None => {
                    return Err(fail(
                        &dir.join(files::HEAD_FILE),
                        0,
                        Some(h.seq),
                        "checkpoint named by HEAD not found",
                    ))
                }
            },
            None if self.report.checkpoints > 0 => {
                return Err(fail(
                    &dir.join(files::HEAD_FILE),
                    0,
                    None,
                    "HEAD is missing but the log holds checkpoints (HEAD deleted?)",
                ))
            }
            None => {}
        }
        self.report.unsigned_tail = last - self.last_checkpoint;
        Ok(self.report)
    }
}
