//! Opening an existing log at start: repair a torn last line, find the end
//! of the chain, and check it against `HEAD` and `audit.pub`.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use rampart_identity::fsutil;

use crate::error::AuditError;
use crate::files;
use crate::keys::AuditKeys;
use crate::record::{self, Chain, Head, StoredRecord};

/// Where the writer carries on.
#[derive(Debug)]
pub(crate) struct Resume {
    pub chain: Chain,
    /// First seq of the file to append to, its length, and whether it still
    /// has to be created.
    pub file_seq: u64,
    pub file_len: u64,
    pub create: bool,
    /// Records after the last checkpoint (1 stands for "some": the count is
    /// not read back).
    pub since_checkpoint: u64,
}

pub(crate) fn open_log(
    dir: &Path,
    keys: &AuditKeys,
    max_file_bytes: u64,
) -> Result<Resume, AuditError> {
    fsutil::create_private_dir(dir).map_err(|e| AuditError::io(dir, e))?;
    warn_if_shared(dir);
    let head_path = dir.join(files::HEAD_FILE);
    let head = files::read_head(dir).map_err(|r| AuditError::corrupt(&head_path, r))?;
    let list = files::list_log_files(dir).map_err(|e| AuditError::io(dir, e))?;
    let Some((newest_seq, newest)) = list.last() else {
        if let Some(h) = head {
            return Err(AuditError::inconsistent(
                dir,
                format!(
                    "HEAD names checkpoint seq {} but there are no log files (deleted?)",
                    h.seq
                ),
            ));
        }
        check_keys(dir, keys, None, None)?;
        return Ok(Resume {
            chain: Chain::genesis(),
            file_seq: 1,
            file_len: 0,
            create: true,
            since_checkpoint: 0,
        });
    };
    let (file_len, line) = repair_tail(newest)?;
    // An empty newest file (created, then nothing written): the chain ends
    // in the file before it.
    let last = match (line, list.len()) {
        (Some(line), _) => Some((newest.clone(), line)),
        (None, n) if n >= 2 => {
            let prev = &list[n - 2].1;
            let mut f = File::open(prev).map_err(|e| AuditError::io(prev, e))?;
            let len = f.metadata().map_err(|e| AuditError::io(prev, e))?.len();
            let (cut, line) = files::last_line(&mut f, len).map_err(|e| AuditError::io(prev, e))?;
            if cut != len || line.is_none() {
                return Err(AuditError::corrupt(
                    prev,
                    "does not end with a complete record",
                ));
            }
            line.map(|l| (prev.clone(), l))
        }
        (None, _) => None,
    };
    let (chain, last) = match last {
        None => (Chain::genesis(), None),
        Some((path, line)) => {
            let rec = record::parse_line(&line)
                .map_err(|e| AuditError::corrupt(&path, format!("last record: {}", e.reason)))?;
            (Chain::after(rec.seq, rec.hash.clone()), Some(rec))
        }
    };
    if file_len == 0 && *newest_seq != chain.next_seq() {
        return Err(AuditError::corrupt(
            newest,
            format!(
                "empty file, but the log continues at seq {}",
                chain.next_seq()
            ),
        ));
    }
    check_keys(dir, keys, head.as_ref(), last.as_ref())?;
    check_head(dir, keys, head.as_ref(), last.as_ref(), newest)?;
    let since_checkpoint = match &last {
        Some(rec) if !rec.is_checkpoint() => 1,
        _ => 0,
    };
    let mut resume = Resume {
        chain,
        file_seq: *newest_seq,
        file_len,
        create: false,
        since_checkpoint,
    };
    if file_len >= max_file_bytes && since_checkpoint == 0 {
        resume.file_seq = resume.chain.next_seq();
        resume.file_len = 0;
        resume.create = true;
    }
    Ok(resume)
}

/// Cuts off an incomplete last line (a write torn by a crash). Returns the
/// file's length and its last complete line.
fn repair_tail(path: &PathBuf) -> Result<(u64, Option<Vec<u8>>), AuditError> {
    let io = |e| AuditError::io(path, e);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io)?;
    let meta = f.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(AuditError::corrupt(path, "not a regular file"));
    }
    let (cut, line) = files::last_line(&mut f, meta.len()).map_err(io)?;
    if cut < meta.len() {
        tracing::warn!(
            file = %path.display(),
            bytes = meta.len() - cut,
            "audit log ends with an incomplete record (interrupted write); cutting it off"
        );
        f.set_len(cut).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    Ok((cut, line))
}

/// Whether the log goes on with the key `public_key`: the key of its
/// newest checkpoint (the last record when it is one, else the checkpoint
/// `HEAD` names), or with no checkpoint yet, the log's first key in
/// `audit.pub`. A key rotation is a checkpoint of the new key, so after
/// one this is the new key while `audit.pub` keeps the first.
fn continues_with(
    public_key: &[u8],
    head: Option<&Head>,
    last: Option<&StoredRecord>,
    first_key: Option<&[u8]>,
) -> bool {
    match (last.filter(|r| r.is_checkpoint()), head) {
        // A HEAD naming that checkpoint must be signed by the same key; an
        // older one (a crash before it was rewritten) may be of the key
        // before a rotation, and is rewritten at start.
        (Some(rec), h) => {
            rec.check_checkpoint(public_key).is_ok()
                && h.filter(|h| h.seq == rec.seq)
                    .is_none_or(|h| h.signature_ok(public_key))
        }
        (None, Some(h)) => h.signature_ok(public_key),
        (None, None) => first_key.is_none_or(|k| k == public_key),
    }
}

/// This server's key must be the one the log goes on with; `audit.pub`
/// (the log's first key) is written if missing.
fn check_keys(
    dir: &Path,
    keys: &AuditKeys,
    head: Option<&Head>,
    last: Option<&StoredRecord>,
) -> Result<(), AuditError> {
    let path = dir.join(files::PUBLIC_KEY_FILE);
    let first = files::read_public_key(dir).map_err(|r| AuditError::corrupt(&path, r))?;
    if !continues_with(keys.public_key(), head, last, first.as_deref()) {
        return Err(AuditError::inconsistent(
            &path,
            "the log was signed with another key than this server's audit_signing.key; \
             restore that key, or move the audit folder aside to start a new log",
        ));
    }
    if first.is_none() {
        files::write_public_key(dir, keys.public_key()).map_err(|e| AuditError::io(&path, e))?;
    }
    Ok(())
}

/// Which of `candidates` the log in `dir` goes on with (see
/// [`Auditor::start`](crate::Auditor::start)), read without changing
/// anything: for a server that has the keys before and after a rotation
/// that may not have finished, to know which ones to keep. `None` if none
/// of them.
pub fn key_in_force(dir: &Path, candidates: &[&AuditKeys]) -> Result<Option<usize>, AuditError> {
    let head_path = dir.join(files::HEAD_FILE);
    let head = files::read_head(dir).map_err(|r| AuditError::corrupt(&head_path, r))?;
    let first = files::read_public_key(dir)
        .map_err(|r| AuditError::corrupt(&dir.join(files::PUBLIC_KEY_FILE), r))?;
    let list = match files::list_log_files(dir) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(AuditError::io(dir, e)),
    };
    let mut last = None;
    for (_, path) in list.iter().rev() {
        let mut f = File::open(path).map_err(|e| AuditError::io(path, e))?;
        let len = f.metadata().map_err(|e| AuditError::io(path, e))?.len();
        let (_, line) = files::last_line(&mut f, len).map_err(|e| AuditError::io(path, e))?;
        if let Some(line) = line {
            last =
                Some(record::parse_line(&line).map_err(|e| {
                    AuditError::corrupt(path, format!("last record: {}", e.reason))
                })?);
            break;
        }
    }
    Ok(candidates.iter().position(|k| {
        continues_with(
            k.public_key(),
            head.as_ref(),
            last.as_ref(),
            first.as_deref(),
        )
    }))
}

/// The log may not end before `HEAD`'s checkpoint (it was cut short), and
/// a `HEAD` left behind by a crash right after a checkpoint is brought up
/// to date.
fn check_head(
    dir: &Path,
    keys: &AuditKeys,
    head: Option<&Head>,
    last: Option<&StoredRecord>,
    newest: &Path,
) -> Result<(), AuditError> {
    let last_seq = last.map_or(0, |r| r.seq);
    if let Some(h) = head {
        if h.seq > last_seq {
            return Err(AuditError::inconsistent(
                newest,
                format!(
                    "log ends at seq {last_seq} but HEAD names checkpoint seq {}: records were removed",
                    h.seq
                ),
            ));
        }
        if let Some(rec) = last.filter(|r| r.seq == h.seq) {
            if rec.hash != h.hash {
                return Err(AuditError::inconsistent(
                    newest,
                    format!(
                        "record seq {} does not match HEAD: the log was rewritten",
                        h.seq
                    ),
                ));
            }
        }
    }
    let signed =
        last.filter(|r| r.is_checkpoint() && r.check_checkpoint(keys.public_key()).is_ok());
    if let Some(rec) = signed {
        if head.is_none_or(|h| h.seq < rec.seq) {
            if let Some(new_head) = Head::of_checkpoint(rec) {
                files::write_head(dir, &new_head)
                    .map_err(|e| AuditError::io(&dir.join(files::HEAD_FILE), e))?;
            }
        }
    }
    Ok(())
}

fn warn_if_shared(dir: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(dir) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(dir = %dir.display(), "audit folder is open to other users; it should be mode 0700");
            }
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
}
