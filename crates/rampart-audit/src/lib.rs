//! Rampart audit log: tamper-evident, and never the reason the server hangs.
//!
//! Records are JSON lines with the fields of the seed's audit format plus
//! `seq`, `prev_hash` and `hash`. Each record's hash covers its own bytes
//! and the previous record's hash, so changing, removing, inserting or
//! reordering a record breaks the chain from that point on. Every
//! `checkpoint_every` records or `checkpoint_interval` the writer appends an
//! `audit.checkpoint` record carrying an Ed25519 signature over the seq and
//! hash of the record before it, and rewrites `HEAD` to name that
//! checkpoint, so a log cut short is noticed too. [`verify_dir`] checks all
//! of it and names the first bad record.
//!
//! Two ways to record, both through [`Auditor`]:
//! - [`Auditor::record`], best effort: queues the event and returns at once.
//!   If the queue is full the event is dropped and counted.
//! - [`Auditor::mandatory`], for acts that must not happen unaudited
//!   (admin operations): resolves once the record is fsynced, or with
//!   [`Unavailable`] after `durable_timeout`, whatever the disk does.
//!
//! Nothing in an [`Event`] may be secret: records are kept for years and
//! copied to stdout when asked. [`Auditor::hmac_id`] gives pseudonyms for
//! sensitive identifiers.
//!
//! # On disk
//!
//! ```text
//! <data_dir>/audit_signing.key        Ed25519 PKCS#8, 0600
//! <data_dir>/audit_hmac.key           32 random bytes, base64, 0600
//! <data_dir>/audit/                   0700
//!     audit-000000000001.jsonl        records from seq 1, 0600
//!     audit-000000051234.jsonl        the next file starts at seq 51234
//!     HEAD                            the latest checkpoint (seq, hash, signature)
//!     audit.pub                       the log's first public key, base64
//! ```
//!
//! [`Auditor::rotate_keys`] puts new keys in force while the log runs: the
//! rotation is a checkpoint signed with the new key that also carries the
//! old key's signature over it (its "endorsement", covering the record it
//! follows, the new public key and the new HMAC key's id). One line, so a
//! crash leaves it whole or absent. Every checkpoint after it is signed
//! with the new key; `audit.pub` keeps the first key, and [`verify_dir`]
//! follows the rotations from it, or accepts the newest key pinned. At
//! start the log goes on only with the key of its newest checkpoint
//! ([`key_in_force`] tells which of several keys that is).
//!
//! A line is `S` (the JSON object of every field up to `prev_hash`) without
//! its closing brace, then `,"hash":"<hex SHA-256(S)>"}`. Files rotate at
//! `max_file_bytes`, right after a checkpoint, so every file but the newest
//! ends with one. One server per audit folder: a writer that finds bytes it
//! did not write stops appending rather than interleave.
//!
//! # Layout
//! - `config`: [`AuditConfig`] and [`Sink`].
//! - `keys`: [`AuditKeys`], loading or creating the signing and HMAC keys;
//!   [`hmac_id_with`] for the CLI.
//! - `event`: [`Event`] and [`Outcome`], what callers hand in.
//! - `time`: RFC 3339 timestamps without a date library.
//! - `record`: the record format and the hash chain, free of IO: building
//!   lines, checkpoints and `HEAD`, and checking a line read back.
//! - `files`: file names, listing, `HEAD` and `audit.pub`, reading a last
//!   line.
//! - `recovery`: opening an existing log at start (torn tail repair, chain
//!   end, `HEAD` and key consistency).
//! - `writer`: the writer thread: batches, checkpoints, rotation,
//!   surviving write failures; it never waits for an fsync.
//! - `sync`: the fsync thread: group commit, answering durable callers,
//!   `HEAD` after a checkpoint, and the cut-back after a failed fsync.
//! - `auditor`: [`Auditor`], the cloneable handle, and its [`AuditStats`].
//! - `latency`: the histograms of [`AuditLatency`]: batch writes, and how
//!   long callers wait.
//! - `verify`: [`verify_dir`], the end-to-end check.
//! - `read`: [`read_records`], records back as JSON for the admin API.

mod auditor;
mod config;
mod error;
mod event;
mod files;
mod keys;
mod latency;
mod read;
mod record;
mod recovery;
mod sync;
mod time;
mod verify;
mod writer;

pub use auditor::{AuditStats, Auditor, Unavailable};
pub use config::{AuditConfig, Sink};
pub use error::AuditError;
pub use event::{Event, Outcome};
pub use keys::{hmac_id_with, hmac_key_id_for, AuditKeys};
pub use latency::{AuditLatency, Latency, LATENCY_BUCKETS_SECS};
pub use read::read_records;
pub use recovery::key_in_force;
pub use time::{parse_rfc3339_ms, rfc3339_ms, rfc3339_s};
pub use verify::{verify_dir, VerifyError, VerifyReport};
