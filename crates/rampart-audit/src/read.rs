//! Reading records back, for the admin API and the CLI.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde_json::Value;

use crate::error::AuditError;
use crate::files;
use crate::record::CHECKPOINT_EVENT;

/// Records (not checkpoints) with seq above `since_seq`, of `tenant` only
/// (equal `tenant_id`) if given, in seq order, at most `limit`. Each is the
/// record's JSON object as written, `prev_hash` and `hash` included. This
/// does not verify the chain: use [`verify_dir`](crate::verify_dir) for
/// that. A line still being written is skipped.
pub fn read_records(
    dir: &Path,
    tenant: Option<&str>,
    since_seq: u64,
    limit: usize,
) -> Result<Vec<Value>, AuditError> {
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    let list = files::list_log_files(dir).map_err(|e| AuditError::io(dir, e))?;
    // Skip the files that end before `since_seq + 1`.
    let want = since_seq.saturating_add(1);
    let start = list
        .iter()
        .rposition(|(first, _)| *first <= want)
        .unwrap_or(0);
    for (_, path) in &list[start..] {
        let f = File::open(path).map_err(|e| AuditError::io(path, e))?;
        let mut reader = BufReader::new(f);
        let mut buf = Vec::new();
        let mut line_no = 0usize;
        loop {
            buf.clear();
            if reader
                .read_until(b'\n', &mut buf)
                .map_err(|e| AuditError::io(path, e))?
                == 0
            {
                break;
            }
            line_no += 1;
            if buf.pop() != Some(b'\n') {
                break; // being written, or torn
            }
            let rec: Value = serde_json::from_slice(&buf)
                .map_err(|e| AuditError::corrupt(path, format!("line {line_no}: {e}")))?;
            let seq = rec.get("seq").and_then(Value::as_u64).unwrap_or(0);
            if seq <= since_seq
                || rec.get("event_type").and_then(Value::as_str) == Some(CHECKPOINT_EVENT)
            {
                continue;
            }
            if tenant.is_some_and(|t| rec.get("tenant_id").and_then(Value::as_str) != Some(t)) {
                continue;
            }
            out.push(rec);
            if out.len() == limit {
                return Ok(out);
            }
        }
    }
    Ok(out)
}
