//! The log folder: file names, listing, `HEAD`, `audit.pub`, and reading a
//! file's last line.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rampart_identity::fsutil;

use crate::record::Head;

pub(crate) const HEAD_FILE: &str = "HEAD";
pub(crate) const PUBLIC_KEY_FILE: &str = "audit.pub";

/// `audit-<first seq, 12 digits>.jsonl`.
pub(crate) fn log_file_name(first_seq: u64) -> String {
    format!("audit-{first_seq:012}.jsonl")
}

fn parse_log_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("audit-")?.strip_suffix(".jsonl")?;
    if digits.len() < 12 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The log files of `dir` with their first seq, in seq order. Other files
/// are ignored.
pub(crate) fn list_log_files(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(seq) = entry.file_name().to_str().and_then(parse_log_file_name) {
            files.push((seq, entry.path()));
        }
    }
    files.sort();
    Ok(files)
}

/// Makes a rename or a new file in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// `HEAD`, if there is one.
pub(crate) fn read_head(dir: &Path) -> Result<Option<Head>, String> {
    match fs::read(dir.join(HEAD_FILE)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("malformed: {e}")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Replaces `HEAD` atomically (temporary file, fsync, rename, fsync of the
/// folder).
pub(crate) fn write_head(dir: &Path, head: &Head) -> io::Result<()> {
    let mut text = serde_json::to_vec(head).map_err(io::Error::other)?;
    text.push(b'\n');
    fsutil::write_private_file(&dir.join(HEAD_FILE), &text)
}

/// The public key in `audit.pub`, if there is one.
pub(crate) fn read_public_key(dir: &Path) -> Result<Option<Vec<u8>>, String> {
    match fs::read(dir.join(PUBLIC_KEY_FILE)) {
        Ok(text) => B64
            .decode(text.trim_ascii())
            .map(Some)
            .map_err(|_| "not base64".to_string()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

pub(crate) fn write_public_key(dir: &Path, public_key: &[u8]) -> io::Result<()> {
    let text = format!("{}\n", B64.encode(public_key));
    fsutil::write_private_file(&dir.join(PUBLIC_KEY_FILE), text.as_bytes())
}

/// Finds the end of the last complete line of a file of `len` bytes, reading
/// backwards. Returns the length up to and including its newline (0 if the
/// file holds no newline), and that line without its newline.
pub(crate) fn last_line(f: &mut File, len: u64) -> io::Result<(u64, Option<Vec<u8>>)> {
    let mut pos = len; // `tail` holds the bytes [pos, len)
    let mut tail: Vec<u8> = Vec::new();
    let mut chunk: u64 = 8192;
    loop {
        if let Some(nl) = tail.iter().rposition(|b| *b == b'\n') {
            if let Some(prev) = tail[..nl].iter().rposition(|b| *b == b'\n') {
                return Ok((pos + nl as u64 + 1, Some(tail[prev + 1..nl].to_vec())));
            }
            if pos == 0 {
                return Ok((nl as u64 + 1, Some(tail[..nl].to_vec())));
            }
        } else if pos == 0 {
            return Ok((0, None));
        }
        let n = chunk.min(pos);
        pos -= n;
        let mut more = vec![0; usize::try_from(n).map_err(io::Error::other)?];
        f.seek(SeekFrom::Start(pos))?;
        f.read_exact(&mut more)?;
        more.extend_from_slice(&tail);
        tail = more;
        chunk = chunk.saturating_mul(2);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn names_round_trip_and_sort() {
        assert_eq!(log_file_name(1), "audit-000000000001.jsonl");
        assert_eq!(parse_log_file_name("audit-000000000001.jsonl"), Some(1));
        assert_eq!(
            parse_log_file_name("audit-1234567890123.jsonl"),
            Some(1_234_567_890_123)
        );
        assert_eq!(parse_log_file_name("audit-1.jsonl"), None);
        assert_eq!(parse_log_file_name("audit-000000000001.jsonl.tmp"), None);
        let dir = tempfile::tempdir().unwrap();
        for seq in [1001, 1, 5000] {
            fs::write(dir.path().join(log_file_name(seq)), "").unwrap();
        }
        fs::write(dir.path().join("HEAD"), "").unwrap();
        let seqs: Vec<u64> = list_log_files(dir.path())
            .unwrap()
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(seqs, [1, 1001, 5000]);
    }

    fn last(contents: &[u8]) -> (u64, Option<Vec<u8>>) {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(contents).unwrap();
        last_line(&mut f, contents.len() as u64).unwrap()
    }

    #[test]
    fn last_line_finds_the_last_complete_line() {
        assert_eq!(last(b""), (0, None));
        assert_eq!(last(b"torn"), (0, None));
        assert_eq!(last(b"one\n"), (4, Some(b"one".to_vec())));
        assert_eq!(last(b"one\ntwo\n"), (8, Some(b"two".to_vec())));
        assert_eq!(last(b"one\ntwo\nthr"), (8, Some(b"two".to_vec())));
        // Lines longer than the first chunk.
        let mut big = vec![b'a'; 20_000];
        big.push(b'\n');
        let mut long = vec![b'b'; 50_000];
        big.append(&mut long.clone());
        big.push(b'\n');
        big.extend_from_slice(&[0; 3]);
        let (cut, line) = last(&big);
        assert_eq!(cut, 20_001 + 50_001);
        assert_eq!(line.unwrap(), std::mem::take(&mut long));
    }
}
