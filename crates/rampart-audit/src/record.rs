//! The record format and the hash chain, free of IO: events and times go in,
//! lines come out; lines go in, checked records come out.
//!
//! A line is built from the JSON object `S` of every field up to
//! `prev_hash`: `h = SHA-256(S)`, and the line is `S` without its final `}`,
//! then `,"hash":"<hex h>"}` and a newline. A verifier finds the last
//! `,"hash":"`, rebuilds `S` byte for byte and recomputes `h`: nothing is
//! ever re-serialized, so the check does not depend on a JSON library's
//! choices.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ring::digest::{Context, SHA256};
use ring::signature::{UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::event::{clip, Event, Outcome, MAX_USER_AGENT};
use crate::keys::AuditKeys;
use crate::time::{is_rfc3339_ms, rfc3339_ms};

/// Event type of the log's own signed checkpoints.
pub(crate) const CHECKPOINT_EVENT: &str = "audit.checkpoint";
pub(crate) const CHECKPOINT_ACTION: &str = "checkpoint";
/// `prev_hash` of the first record.
pub(crate) const GENESIS_HASH: &str =
    "0000000000000000000000000000000000000000000000000000000000000000";
const HASH_MARK: &[u8] = b",\"hash\":\"";

/// What a checkpoint signature covers.
pub(crate) fn checkpoint_message(signed_seq: u64, signed_hash: &str) -> String {
    format!("rampart-audit-checkpoint:v1:{signed_seq}:{signed_hash}")
}

/// What the key a rotation retires signs, endorsing its successor: the
/// record the rotation follows, the new public key and the new HMAC key's
/// id.
pub(crate) fn rotation_message(
    signed_seq: u64,
    signed_hash: &str,
    new_public_key_b64: &str,
    hmac_key_id: &str,
) -> String {
    format!("rampart-audit-key-rotation:v1:{signed_seq}:{signed_hash}:{new_public_key_b64}:{hmac_key_id}")
}

pub(crate) fn signature_ok(
    public_key: &[u8],
    signed_seq: u64,
    signed_hash: &str,
    sig_b64: &str,
) -> bool {
    let Ok(sig) = B64.decode(sig_b64) else {
        return false;
    };
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(checkpoint_message(signed_seq, signed_hash).as_bytes(), &sig)
        .is_ok()
}

fn is_hash_hex(s: &[u8]) -> bool {
    s.len() == 64 && s.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

// === impl Chain ===

/// The end of the chain: the next sequence number and the last hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chain {
    next_seq: u64,
    last_hash: String,
}

/// Fields up to `prev_hash`, in the order they are written.
#[derive(Serialize)]
struct Body<'a> {
    seq: u64,
    timestamp: &'a str,
    event_type: &'a str,
    principal: Option<&'a str>,
    principal_type: Option<&'a str>,
    tenant_id: Option<&'a str>,
    namespace: Option<&'a str>,
    resource: Option<&'a str>,
    action: &'a str,
    result: &'a str,
    metadata: &'a Map<String, Value>,
    source_ip: Option<&'a str>,
    user_agent: Option<&'a str>,
    prev_hash: &'a str,
}

impl Chain {
    /// An empty log.
    pub(crate) fn genesis() -> Chain {
        Chain {
            next_seq: 1,
            last_hash: GENESIS_HASH.to_string(),
        }
    }

    /// A log whose last record is `seq` with hash `hash`.
    pub(crate) fn after(seq: u64, hash: String) -> Chain {
        Chain {
            next_seq: seq.saturating_add(1),
            last_hash: hash,
        }
    }

    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Appends the line of `ev`, timestamped `at_ms`, to `out`, and moves
    /// the chain past it. On error `out` and the chain are unchanged.
    pub(crate) fn append(
        &mut self,
        out: &mut Vec<u8>,
        ev: &Event,
        at_ms: u64,
    ) -> Result<u64, serde_json::Error> {
        let timestamp = rfc3339_ms(at_ms);
        let body = Body {
            seq: self.next_seq,
            timestamp: &timestamp,
            event_type: &ev.event_type,
            principal: ev.principal.as_deref(),
            principal_type: ev.principal_type.as_deref(),
            tenant_id: ev.tenant_id.as_deref(),
            namespace: ev.namespace.as_deref(),
            resource: ev.resource.as_deref(),
            action: &ev.action,
            result: ev.result.as_str(),
            metadata: &ev.metadata,
            source_ip: ev.source_ip.as_deref(),
            user_agent: ev.user_agent.as_deref().map(|ua| clip(ua, MAX_USER_AGENT)),
            prev_hash: &self.last_hash,
        };
        let start = out.len();
        if let Err(e) = serde_json::to_writer(&mut *out, &body) {
            out.truncate(start);
            return Err(e);
        }
        // Into a buffer: `hex::encode` builds its string a char at a time.
        let mut hash = [0u8; 64];
        hex::encode_to_slice(ring::digest::digest(&SHA256, &out[start..]), &mut hash)
            .expect("a SHA-256 digest is 32 bytes");
        out.pop(); // the closing brace
        out.extend_from_slice(HASH_MARK);
        out.extend_from_slice(&hash);
        out.extend_from_slice(b"\"}\n");
        let seq = self.next_seq;
        self.next_seq += 1;
        self.last_hash.clear();
        self.last_hash.extend(hash.iter().map(|&b| char::from(b)));
        Ok(seq)
    }

    /// Appends a checkpoint signing the last record. Returns what `HEAD`
    /// should say, or `None` if there is no record to sign yet.
    pub(crate) fn append_checkpoint(
        &mut self,
        out: &mut Vec<u8>,
        keys: &AuditKeys,
        at_ms: u64,
    ) -> Option<Head> {
        let signed_seq = self.next_seq.checked_sub(1).filter(|s| *s > 0)?;
        let signed_hash = self.last_hash.clone();
        let signature =
            B64.encode(keys.sign(checkpoint_message(signed_seq, &signed_hash).as_bytes()));
        let ev = Event::new(CHECKPOINT_EVENT, CHECKPOINT_ACTION, Outcome::Success)
            .meta("signed_seq", signed_seq)
            .meta("signed_hash", signed_hash.clone())
            .meta("signature", signature.clone())
            .meta("public_key", B64.encode(keys.public_key()));
        self.append_signed(out, &ev, at_ms, signed_seq, signed_hash, signature)
    }

    /// Appends a checkpoint record `ev` and returns its `HEAD`.
    fn append_signed(
        &mut self,
        out: &mut Vec<u8>,
        ev: &Event,
        at_ms: u64,
        signed_seq: u64,
        signed_hash: String,
        signature: String,
    ) -> Option<Head> {
        let seq = self.append(out, ev, at_ms).ok()?;
        Some(Head {
            seq,
            hash: self.last_hash.clone(),
            signed_seq,
            signed_hash,
            signature,
        })
    }
}

impl Chain {
    /// Appends a key rotation: a checkpoint signed with the `new` keys that
    /// also carries the `old` key's endorsement of them. One line, so a
    /// crash leaves the rotation either whole or absent. `None` if there is
    /// no record to sign yet.
    pub(crate) fn append_rotation(
        &mut self,
        out: &mut Vec<u8>,
        old: &AuditKeys,
        new: &AuditKeys,
        at_ms: u64,
    ) -> Option<Head> {
        let signed_seq = self.next_seq.checked_sub(1).filter(|s| *s > 0)?;
        let signed_hash = self.last_hash.clone();
        let new_public = B64.encode(new.public_key());
        let hmac_key_id = new.hmac_key_id();
        let signature =
            B64.encode(new.sign(checkpoint_message(signed_seq, &signed_hash).as_bytes()));
        let endorsement = B64.encode(old.sign(
            rotation_message(signed_seq, &signed_hash, &new_public, &hmac_key_id).as_bytes(),
        ));
        let ev = Event::new(CHECKPOINT_EVENT, CHECKPOINT_ACTION, Outcome::Success)
            .meta("signed_seq", signed_seq)
            .meta("signed_hash", signed_hash.clone())
            .meta("signature", signature.clone())
            .meta("public_key", new_public)
            .meta("previous_public_key", B64.encode(old.public_key()))
            .meta("endorsement", endorsement)
            .meta("hmac_key_id", hmac_key_id);
        self.append_signed(out, &ev, at_ms, signed_seq, signed_hash, signature)
    }
}

// === impl Head ===

/// Contents of `<dir>/HEAD`: the latest checkpoint, so that a log cut short
/// below it is noticed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Head {
    /// Seq and hash of the checkpoint record.
    pub seq: u64,
    pub hash: String,
    /// What it signs, and the signature (base64).
    pub signed_seq: u64,
    pub signed_hash: String,
    pub signature: String,
}

impl Head {
    pub(crate) fn signature_ok(&self, public_key: &[u8]) -> bool {
        self.signed_seq.checked_add(1) == Some(self.seq)
            && signature_ok(
                public_key,
                self.signed_seq,
                &self.signed_hash,
                &self.signature,
            )
    }

    /// The `HEAD` of a checkpoint record read back from the log.
    pub(crate) fn of_checkpoint(rec: &StoredRecord) -> Option<Head> {
        let meta = rec.checkpoint_meta().ok()?;
        Some(Head {
            seq: rec.seq,
            hash: rec.hash.clone(),
            signed_seq: meta.signed_seq,
            signed_hash: meta.signed_hash,
            signature: meta.signature,
        })
    }
}

// === impl StoredRecord ===

/// One record read back from a line whose hash has been checked. Some
/// fields are only parsed, to check that the record has them.
#[allow(dead_code)]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoredRecord {
    pub seq: u64,
    pub timestamp: String,
    pub event_type: String,
    #[serde(deserialize_with = "Option::deserialize")]
    pub principal: Option<String>,
    #[serde(deserialize_with = "Option::deserialize")]
    pub principal_type: Option<String>,
    #[serde(deserialize_with = "Option::deserialize")]
    pub tenant_id: Option<String>,
    #[serde(deserialize_with = "Option::deserialize")]
    pub namespace: Option<String>,
    #[serde(deserialize_with = "Option::deserialize")]
    pub resource: Option<String>,
    pub action: String,
    pub result: String,
    pub metadata: Map<String, Value>,
    #[serde(deserialize_with = "Option::deserialize")]
    pub source_ip: Option<String>,
    #[serde(deserialize_with = "Option::deserialize")]
    pub user_agent: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CheckpointMeta {
    pub signed_seq: u64,
    pub signed_hash: String,
    pub signature: String,
    pub public_key: String,
    /// A key rotation: the key before `public_key`, its signature over
    /// [`rotation_message`], and the new HMAC key's id.
    #[serde(default)]
    pub previous_public_key: Option<String>,
    #[serde(default)]
    pub endorsement: Option<String>,
    #[serde(default)]
    pub hmac_key_id: Option<String>,
}

/// A base64 Ed25519 public key from a record.
pub(crate) fn decode_key(b64: &str) -> Result<Vec<u8>, String> {
    B64.decode(b64)
        .ok()
        .filter(|k| k.len() == 32)
        .ok_or_else(|| "checkpoint names a malformed public key".to_string())
}

impl CheckpointMeta {
    /// The checkpoint's own public key, decoded.
    pub(crate) fn key(&self) -> Result<Vec<u8>, String> {
        decode_key(&self.public_key)
    }

    /// For a rotation, checks that `previous` (the key in force before it)
    /// is the key it names and endorsed it. `Ok(false)` for a plain
    /// checkpoint.
    pub(crate) fn check_rotation(&self, previous: &[u8]) -> Result<bool, String> {
        let (named, endorsement, hmac_key_id) = match (
            &self.previous_public_key,
            &self.endorsement,
            &self.hmac_key_id,
        ) {
            (None, None, None) => return Ok(false),
            (Some(p), Some(e), Some(h)) => (p, e, h),
            _ => return Err("key rotation is missing a field".into()),
        };
        if *named != B64.encode(previous) {
            return Err("key rotation names another previous key than the one in force".into());
        }
        let msg = rotation_message(
            self.signed_seq,
            &self.signed_hash,
            &self.public_key,
            hmac_key_id,
        );
        let ok = B64.decode(endorsement).is_ok_and(|sig| {
            UnparsedPublicKey::new(&ED25519, previous)
                .verify(msg.as_bytes(), &sig)
                .is_ok()
        });
        if !ok {
            return Err("key rotation is not endorsed by the key in force before it".into());
        }
        Ok(true)
    }
}

/// Why a line is not a valid record, with its seq when that could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LineError {
    pub seq: Option<u64>,
    pub reason: String,
}

impl StoredRecord {
    pub(crate) fn is_checkpoint(&self) -> bool {
        self.event_type == CHECKPOINT_EVENT
    }

    pub(crate) fn checkpoint_meta(&self) -> Result<CheckpointMeta, String> {
        CheckpointMeta::deserialize(Value::Object(self.metadata.clone()))
            .map_err(|e| format!("checkpoint metadata is malformed: {e}"))
    }

    /// Checks a checkpoint: it signs exactly the record before it, with
    /// `public_key`.
    pub(crate) fn check_checkpoint(&self, public_key: &[u8]) -> Result<(), String> {
        if self.action != CHECKPOINT_ACTION || self.result != Outcome::Success.as_str() {
            return Err("checkpoint has a wrong action or result".into());
        }
        let meta = self.checkpoint_meta()?;
        if meta.signed_seq.checked_add(1) != Some(self.seq) || meta.signed_hash != self.prev_hash {
            return Err(format!(
                "checkpoint signs seq {} but follows seq {}",
                meta.signed_seq,
                self.seq - 1
            ));
        }
        if !signature_ok(
            public_key,
            meta.signed_seq,
            &meta.signed_hash,
            &meta.signature,
        ) {
            let why = if meta.public_key == B64.encode(public_key) {
                "checkpoint signature does not verify with the trusted public key"
            } else {
                "checkpoint signature does not verify with the trusted public key \
                 (it names another key)"
            };
            return Err(why.into());
        }
        Ok(())
    }
}

/// Checks one line (without its newline): the hash recomputes, and every
/// field is present with the right type and shape.
pub(crate) fn parse_line(line: &[u8]) -> Result<StoredRecord, LineError> {
    let fail = |reason: String| LineError {
        seq: seq_of(line),
        reason,
    };
    let mark = line
        .windows(HASH_MARK.len())
        .rposition(|w| w == HASH_MARK)
        .ok_or_else(|| fail("no hash field".into()))?;
    let tail = &line[mark + HASH_MARK.len()..];
    if tail.len() != 66 || !is_hash_hex(&tail[..64]) || &tail[64..] != b"\"}" {
        return Err(fail("malformed hash field".into()));
    }
    let mut ctx = Context::new(&SHA256);
    ctx.update(&line[..mark]);
    ctx.update(b"}");
    if hex::encode(ctx.finish()).as_bytes() != &tail[..64] {
        return Err(fail(
            "hash does not match the record's contents (record altered)".into(),
        ));
    }
    let rec: StoredRecord =
        serde_json::from_slice(line).map_err(|e| fail(format!("not a valid record: {e}")))?;
    let bad = |what: &str| {
        Err(LineError {
            seq: Some(rec.seq),
            reason: format!("malformed {what}"),
        })
    };
    if rec.hash.as_bytes() != &tail[..64] {
        return bad("hash field");
    }
    if !is_hash_hex(rec.prev_hash.as_bytes()) {
        return bad("prev_hash");
    }
    if !is_rfc3339_ms(&rec.timestamp) {
        return bad("timestamp");
    }
    if Outcome::parse(&rec.result).is_none() {
        return bad("result");
    }
    if rec.seq == 0 {
        return bad("seq");
    }
    Ok(rec)
}

/// The `seq` of a line, if it is JSON with one.
fn seq_of(line: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    struct Seq {
        seq: u64,
    }
    serde_json::from_slice::<Seq>(line).ok().map(|s| s.seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(out: &[u8], n: usize) -> &[u8] {
        out.split(|b| *b == b'\n').nth(n).unwrap()
    }

    #[test]
    fn lines_have_the_documented_shape() {
        let mut chain = Chain::genesis();
        let mut out = Vec::new();
        let ev = Event::new("stream.create", "create", Outcome::Success)
            .principal("admin@acme.com", "user")
            .tenant("acme-corp")
            .meta("shards", 4);
        assert_eq!(chain.append(&mut out, &ev, 1_768_473_045_123).unwrap(), 1);
        let text = std::str::from_utf8(&out).unwrap();
        assert!(text.ends_with("\"}\n"));
        assert_eq!(text.matches('\n').count(), 1);
        let expected_start = "{\"seq\":1,\"timestamp\":\"2026-01-15T10:30:45.123Z\",\"event_type\":\"stream.create\",\
            \"principal\":\"admin@acme.com\",\"principal_type\":\"user\",\"tenant_id\":\"acme-corp\",\
            \"namespace\":null,\"resource\":null,\"action\":\"create\",\"result\":\"success\",\
            \"metadata\":{\"shards\":4},\"source_ip\":null,\"user_agent\":null,\
            \"prev_hash\":\"0000000000000000000000000000000000000000000000000000000000000000\",\"hash\":\"";
        assert!(text.starts_with(expected_start), "{text}");
        // The hash is SHA-256 of everything before `,"hash"` plus `}`.
        let s = format!("{}}}", &text[..expected_start.len() - ",\"hash\":\"".len()]);
        let want = hex::encode(ring::digest::digest(&SHA256, s.as_bytes()));
        assert_eq!(&text[expected_start.len()..expected_start.len() + 64], want);
        let rec = parse_line(line(&out, 0)).unwrap();
        assert_eq!(rec.hash, want);
        assert_eq!(chain, Chain::after(1, want));
    }

    #[test]
    fn chain_links_and_checkpoints_sign_the_previous_record() {
        let keys = AuditKeys::ephemeral().unwrap();
        let mut chain = Chain::genesis();
        let mut out = Vec::new();
        assert!(
            chain.append_checkpoint(&mut out, &keys, 0).is_none(),
            "nothing to sign yet"
        );
        let ev = Event::new("auth.success", "login", Outcome::Success);
        chain.append(&mut out, &ev, 5).unwrap();
        let head = chain.append_checkpoint(&mut out, &keys, 6).unwrap();
        let a = parse_line(line(&out, 0)).unwrap();
        let b = parse_line(line(&out, 1)).unwrap();
        assert_eq!(b.prev_hash, a.hash);
        assert!(b.is_checkpoint());
        b.check_checkpoint(keys.public_key()).unwrap();
        assert_eq!(head.seq, 2);
        assert_eq!(head.hash, b.hash);
        assert_eq!(Head::of_checkpoint(&b), Some(head.clone()));
        assert!(head.signature_ok(keys.public_key()));
        let other = AuditKeys::ephemeral().unwrap();
        assert!(!head.signature_ok(other.public_key()));
        assert!(b.check_checkpoint(other.public_key()).is_err());
    }

    #[test]
    fn a_changed_byte_is_caught_and_names_the_seq() {
        let mut chain = Chain::genesis();
        let mut out = Vec::new();
        let ev = Event::new("auth.failure", "login", Outcome::Failure).meta("hash", "x");
        chain.append(&mut out, &ev, 5).unwrap();
        let mut l = line(&out, 0).to_vec();
        let pos = l.windows(5).position(|w| w == b"login").unwrap();
        l[pos] = b'L';
        let e = parse_line(&l).unwrap_err();
        assert_eq!(e.seq, Some(1));
        assert!(e.reason.contains("hash does not match"), "{}", e.reason);
        // A metadata key called "hash" does not confuse the parser.
        parse_line(line(&out, 0)).unwrap();
        assert!(parse_line(b"{\"seq\":1}").is_err());
        assert!(parse_line(b"").is_err());
    }

    #[test]
    fn missing_fields_are_refused_even_with_a_valid_hash() {
        // A line with a recomputed hash but no `principal` key.
        let s = b"{\"seq\":1,\"timestamp\":\"2026-01-15T10:30:45.123Z\",\"event_type\":\"x\",\
            \"principal_type\":null,\"tenant_id\":null,\"namespace\":null,\"resource\":null,\
            \"action\":\"a\",\"result\":\"success\",\"metadata\":{},\"source_ip\":null,\
            \"user_agent\":null,\"prev_hash\":\"0000000000000000000000000000000000000000000000000000000000000000\"}";
        let h = hex::encode(ring::digest::digest(&SHA256, s));
        let mut l = s[..s.len() - 1].to_vec();
        l.extend_from_slice(format!(",\"hash\":\"{h}\"}}").as_bytes());
        let e = parse_line(&l).unwrap_err();
        assert!(e.reason.contains("principal"), "{}", e.reason);
    }

    #[test]
    fn long_user_agents_are_clipped() {
        let mut chain = Chain::genesis();
        let mut out = Vec::new();
        let ev = Event::new("x", "y", Outcome::Success).user_agent("a".repeat(10_000));
        chain.append(&mut out, &ev, 0).unwrap();
        let rec = parse_line(line(&out, 0)).unwrap();
        assert_eq!(rec.user_agent.unwrap().len(), MAX_USER_AGENT);
    }
}
