//! Backups while serving (`POST /v1/sys/backup`) and the offline restore
//! (`rampart restore`). The format is in `archive`.
//!
//! What a backup holds, and from which moment (see docs/operations.md,
//! "Backup and restore"): key administration is held for the whole copy;
//! consumer positions are read first, then every durable log's segments
//! are pinned (their ends as of now), then the store is read in one
//! transaction, then the logs are copied up to the pinned ends, then the
//! audit log (`HEAD` before its files, each file up to its last complete
//! line). The master key is never in it.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use rampart_identity::{fsutil, Secret};
use rampart_keys::{KeyError, MasterKeyProvider};
use rampart_store::{KvStore, Op, Table};
use ring::rand::SecureRandom;
use serde_json::json;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::archive::{self, ArchiveError, Entry, EntryReader, Header, Opener, Sealer};
use crate::http::{changed, ApiError, Authed};
use crate::{Config, Shared};

/// Files at the top of the data directory that a backup copies, when
/// present. `master.key` is never one of them.
const TOP_FILES: &[&str] = &[
    "master.check",
    "token_signing.key",
    "token_signing.retired",
    "audit_signing.key",
    "audit_hmac.key",
];
/// Where the pepper goes in the archive (and back, on restore), wherever
/// `api_key_pepper_path` kept it.
const PEPPER: &str = "api_key_pepper";

// === the route ===

/// `POST /v1/sys/backup`: streams an encrypted archive of the data
/// directory. Headers go out at once; a failure later cuts the response
/// short, and a cut-short archive is refused by restore.
pub(crate) async fn backup(
    State(shared): State<Arc<Shared>>,
    a: Authed,
) -> Result<Response, ApiError> {
    let keyring = shared.sealer.keyring().clone();
    let mut key = vec![0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| ApiError::Internal)?;
    let key = Secret::new(key);
    let wrapped = keyring
        .master()
        .wrap(key.expose(), archive::KEY_AAD)
        .await
        .map_err(|e| {
            warn!(error = %e, "backup: the master key did not wrap the archive key");
            ApiError::Unavailable
        })?;
    let header = Header::new(wrapped).map_err(|_| ApiError::Internal)?;
    changed(&shared, &a, "backup.create", "backup", json!({}));
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(8);
    let task_shared = shared.clone();
    tokio::spawn(async move {
        let _held = keyring.hold_administration().await;
        let store = keyring.store().clone();
        let failed = tx.clone();
        let r = tokio::task::spawn_blocking(move || {
            let out = ChannelWriter {
                tx,
                buf: Vec::with_capacity(SEND_AT),
            };
            let mut sealer = Sealer::new(out, &header, key.expose())?;
            let n = write_entries(&task_shared, store.as_ref(), &mut sealer)?;
            let mut out = sealer.finish()?;
            out.send()?;
            Ok::<_, io::Error>(n)
        })
        .await;
        match r {
            Ok(Ok(n)) => info!(files = n.0, bytes = n.1, "backup written"),
            Ok(Err(e)) => {
                warn!(error = %e, "backup failed; the response was cut short");
                let _ = failed.send(Err(e)).await;
            }
            Err(e) => {
                warn!(error = %e, "backup task failed");
                let _ = failed.send(Err(io::Error::other("backup failed"))).await;
            }
        }
    });
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"rampart.backup\"",
            ),
        ],
        axum::body::Body::new(ArchiveBody(rx)),
    )
        .into_response())
}

/// The response body: chunks from the blocking writer.
struct ArchiveBody(mpsc::Receiver<io::Result<Bytes>>);

impl hyper::body::Body for ArchiveBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|o| o.map(|r| r.map(hyper::body::Frame::data)))
    }
}

const SEND_AT: usize = 256 << 10;

/// Hands bytes to the response body in pieces of `SEND_AT`, waiting while
/// the client is slower than the disk.
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(SEND_AT),
        ));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= SEND_AT {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn copy_file_entry(w: &mut dyn Write, name: &str, bytes: &[u8]) -> io::Result<(u64, u64)> {
    archive::write_file(w, name, bytes.len() as u64, &mut |o| o.write_all(bytes))?;
    Ok((1, bytes.len() as u64))
}

fn read_if_present(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    }
}

/// Writes every entry in the order the module docs give; returns files and
/// bytes copied.
fn write_entries(
    shared: &Shared,
    store: &dyn KvStore,
    w: &mut dyn Write,
) -> io::Result<(u64, u64)> {
    let data_dir = &shared.config.data_dir;
    let mut total = (0u64, 0u64);
    let mut add = |t: (u64, u64)| {
        total.0 += t.0;
        total.1 += t.1;
    };

    // Small files first: they change only at first start or rotation,
    // which waits for us.
    for name in TOP_FILES {
        if let Some(b) = read_if_present(&data_dir.join(name))? {
            add(copy_file_entry(w, name, &b)?);
        }
    }
    // HMAC keys retired by audit key rotations, for searching old records.
    for path in crate::audit_keys::retired_hmac_files(data_dir) {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if let Some(b) = read_if_present(&path)? {
            add(copy_file_entry(w, &name, &b)?);
        }
    }
    if let Some(b) = read_if_present(&shared.config.pepper_path())? {
        add(copy_file_entry(w, PEPPER, &b)?);
    }
    let dev = data_dir.join("dev");
    if dev.is_dir() {
        archive::write_dir(w, "dev")?;
        for e in fs::read_dir(&dev)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if e.file_type()?.is_file() {
                if let Some(b) = read_if_present(&e.path())? {
                    add(copy_file_entry(w, &format!("dev/{name}"), &b)?);
                }
            }
        }
    }

    // Streams: consumer positions, then the logs' ends, so no position
    // points past the copied log.
    struct StreamCopy {
        rel: String,
        consumers: Vec<(String, Vec<u8>)>,
        segments: Vec<rampart_log::SegmentCopy>,
    }
    let mut streams = Vec::new();
    for d in shared.broker.durable_streams() {
        let Ok(rel) = d.dir().strip_prefix(data_dir) else {
            continue;
        };
        let rel = rel.to_string_lossy().replace('\\', "/");
        let mut consumers = Vec::new();
        let cdir = d.dir().join("consumers");
        if cdir.is_dir() {
            for e in fs::read_dir(&cdir)? {
                let e = e?;
                let name = e.file_name().to_string_lossy().into_owned();
                if name.ends_with(".tmp") || !e.file_type()?.is_file() {
                    continue;
                }
                if let Some(b) = read_if_present(&e.path())? {
                    consumers.push((name, b));
                }
            }
        }
        streams.push(StreamCopy {
            rel,
            consumers,
            segments: d.log().snapshot(),
        });
    }

    // The store, from one read transaction.
    let snapshot = store
        .snapshot()
        .map_err(|e| io::Error::other(e.to_string()))?;
    for (table, entries) in &snapshot {
        archive::write_table(w, table.name(), entries)?;
        add((
            0,
            entries
                .iter()
                .map(|(k, v)| (k.len() + v.len()) as u64)
                .sum(),
        ));
    }

    for s in &streams {
        archive::write_dir(w, &format!("{}/log", s.rel))?;
        archive::write_dir(w, &format!("{}/consumers", s.rel))?;
        for (name, b) in &s.consumers {
            add(copy_file_entry(
                w,
                &format!("{}/consumers/{name}", s.rel),
                b,
            )?);
        }
        for seg in &s.segments {
            archive::write_file(
                w,
                &format!("{}/log/{}", s.rel, seg.name),
                seg.len,
                &mut |o| seg.copy_to(o),
            )?;
            add((1, seg.len));
        }
    }

    // The audit log, last, so it holds this backup's own request: HEAD
    // before the files (the writer only moves it forward), each file up
    // to its last complete line.
    let audit = data_dir.join("audit");
    if audit.is_dir() {
        archive::write_dir(w, "audit")?;
        for name in ["HEAD", "audit.pub"] {
            if let Some(b) = read_if_present(&audit.join(name))? {
                add(copy_file_entry(w, &format!("audit/{name}"), &b)?);
            }
        }
        let mut logs: Vec<String> = fs::read_dir(&audit)?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("audit-") && n.ends_with(".jsonl"))
            .collect();
        logs.sort();
        for name in logs {
            let Some(mut b) = read_if_present(&audit.join(&name))? else {
                continue;
            };
            let complete = b.iter().rposition(|&c| c == b'\n').map_or(0, |i| i + 1);
            b.truncate(complete);
            add(copy_file_entry(w, &format!("audit/{name}"), &b)?);
        }
    }
    archive::write_end(w)?;
    Ok(total)
}

// === restore ===

/// Why a restore did not happen. A refused restore leaves the target
/// directory empty.
#[derive(Debug)]
#[non_exhaustive]
pub enum RestoreError {
    /// The target exists and is not an empty directory.
    NotEmpty(PathBuf),
    /// No master key, or not the one the archive was made with.
    MasterKey(String),
    /// The archive is not readable: altered, cut short, another key.
    Archive(String),
    Io(String),
}

impl std::fmt::Display for RestoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotEmpty(p) => write!(
                f,
                "{} is not empty: restore only into a new or empty directory",
                p.display()
            ),
            Self::MasterKey(m) => write!(f, "master key: {m}"),
            Self::Archive(m) => write!(f, "{m}"),
            Self::Io(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for RestoreError {}

impl From<ArchiveError> for RestoreError {
    fn from(e: ArchiveError) -> Self {
        match e {
            ArchiveError::Io(e) => Self::Io(e.to_string()),
            e => Self::Archive(e.to_string()),
        }
    }
}

/// What a restore wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RestoreReport {
    pub files: u64,
    pub bytes: u64,
    /// Store entries, every table together.
    pub store_entries: u64,
}

/// Restores the archive at `from` into `data_dir` (new, or an empty
/// directory), with the master key `config` names (`master_key_path` or
/// `RAMPART_MASTER_KEY`; the provider it sets). Offline: run it with no
/// server on `data_dir`.
pub async fn restore(
    config: &Config,
    from: &Path,
    data_dir: &Path,
) -> Result<RestoreReport, RestoreError> {
    if let Ok(mut entries) = fs::read_dir(data_dir) {
        if entries.next().is_some() {
            return Err(RestoreError::NotEmpty(data_dir.to_path_buf()));
        }
    } else if data_dir.exists() {
        return Err(RestoreError::NotEmpty(data_dir.to_path_buf()));
    }
    let master = open_master(config)?;
    let io_err = |e: io::Error| RestoreError::Io(format!("{}: {e}", from.display()));
    let mut input = BufReader::new(File::open(from).map_err(io_err)?);
    let header = Header::read(&mut input)?;
    let key = master
        .unwrap(&header.wrapped_key, archive::KEY_AAD)
        .await
        .map_err(|e| match e {
            KeyError::Tampered | KeyError::UnknownMasterVersion(_) => {
                RestoreError::MasterKey(format!(
                    "the archive was not made with this master key ({})",
                    master.describe()
                ))
            }
            e => RestoreError::MasterKey(e.to_string()),
        })?;
    let target = data_dir.to_path_buf();
    let result = tokio::task::spawn_blocking(move || {
        let r = write_back(input, &header, key.expose(), &target);
        if r.is_err() {
            clear(&target);
        }
        r
    })
    .await
    .map_err(|e| RestoreError::Io(e.to_string()))??;
    if let Err(e) = crate::master::verify(master.as_ref(), data_dir).await {
        clear(data_dir);
        return Err(RestoreError::MasterKey(e.to_string()));
    }
    Ok(result)
}

/// Empties a directory restore filled (it was empty before): a refused
/// restore leaves nothing half-restored behind.
fn clear(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            let _ = if p.is_dir() {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
        }
    }
}

fn open_master(config: &Config) -> Result<Arc<dyn MasterKeyProvider>, RestoreError> {
    let local = config.master_key_provider == crate::config::MasterKeyKind::Local;
    if local
        && config.master_key_path.is_none()
        && std::env::var_os(rampart_keys::MASTER_KEY_ENV).is_none()
    {
        return Err(RestoreError::MasterKey(format!(
            "the archive holds no master key: set master_key_path (RAMPART_MASTER_KEY_PATH) or {}; for a --dev server that is its old <data_dir>/master.key",
            rampart_keys::MASTER_KEY_ENV
        )));
    }
    crate::master::open(config, false).map_err(|e| RestoreError::MasterKey(e.to_string()))
}

fn write_back(
    input: impl Read,
    header: &Header,
    key: &[u8],
    data_dir: &Path,
) -> Result<RestoreReport, RestoreError> {
    let io_err = |what: &Path, e: io::Error| RestoreError::Io(format!("{}: {e}", what.display()));
    fsutil::create_private_dir(data_dir).map_err(|e| io_err(data_dir, e))?;
    let mut r = EntryReader::new(Opener::new(input, header, key).map_err(ArchiveError::Io)?);
    let mut report = RestoreReport::default();
    let mut ops = Vec::new();
    loop {
        match r.next_entry()? {
            Entry::End => break,
            Entry::Dir(p) => {
                let path = data_dir.join(p.as_str());
                fsutil::create_private_dir(&path).map_err(|e| io_err(&path, e))?;
            }
            Entry::File(p, len) => {
                let path = data_dir.join(p.as_str());
                if let Some(parent) = path.parent() {
                    fsutil::create_private_dir(parent).map_err(|e| io_err(parent, e))?;
                }
                // A new file, never one already there (nor a link).
                let f = fsutil::create_private_file(&path).map_err(|e| io_err(&path, e))?;
                let mut out = BufWriter::new(f);
                r.file_bytes(len, &mut out)?;
                let f = out
                    .into_inner()
                    .map_err(|e| io_err(&path, e.into_error()))?;
                f.sync_all().map_err(|e| io_err(&path, e))?;
                report.files += 1;
                report.bytes += len;
            }
            Entry::Table(name, entries) => {
                let table = Table::ALL
                    .into_iter()
                    .find(|t| t.name() == name)
                    .ok_or_else(|| {
                        RestoreError::Archive(format!("unknown store table `{name}`"))
                    })?;
                report.store_entries += entries.len() as u64;
                ops.extend(entries.into_iter().map(|(k, v)| Op::Put(table, k, v)));
            }
        }
    }
    let db = data_dir.join("state.redb");
    let store = rampart_store::RedbStore::open(&db)
        .map_err(|e| RestoreError::Io(format!("{}: {e}", db.display())))?;
    if !ops.is_empty() {
        store
            .apply(ops)
            .map_err(|e| RestoreError::Io(format!("{}: {e}", db.display())))?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config whose master key is a new local key file in `dir`.
    fn config_with_key(dir: &Path, name: &str) -> Config {
        let path = dir.join(name);
        rampart_keys::LocalMasterKey::create(&path).unwrap();
        let mut c = Config::load(None, &|_| None).unwrap();
        c.master_key_path = Some(path);
        c
    }

    /// An archive made as the server makes one: `master.check`, a file
    /// and a store table, plus whatever `extra` writes.
    async fn make_archive(
        config: &Config,
        dir: &Path,
        extra: &dyn Fn(&mut dyn Write) -> io::Result<()>,
    ) -> PathBuf {
        let master = crate::master::open(config, false).unwrap();
        let scratch = dir.join("scratch");
        crate::master::verify(master.as_ref(), &scratch)
            .await
            .unwrap();
        let check = fs::read(scratch.join("master.check")).unwrap();
        let key = [9u8; 32];
        let wrapped = master.wrap(&key, archive::KEY_AAD).await.unwrap();
        let header = Header::new(wrapped).unwrap();
        let path = dir.join("backup");
        let mut s = Sealer::new(File::create(&path).unwrap(), &header, &key).unwrap();
        archive::write_file(&mut s, "master.check", check.len() as u64, &mut |o| {
            o.write_all(&check)
        })
        .unwrap();
        archive::write_table(&mut s, "secrets", &[("acme/a".into(), b"sealed".to_vec())]).unwrap();
        extra(&mut s).unwrap();
        archive::write_end(&mut s).unwrap();
        s.finish().unwrap();
        path
    }

    fn is_empty(dir: &Path) -> bool {
        fs::read_dir(dir).map_or(true, |mut d| d.next().is_none())
    }

    #[tokio::test]
    async fn restores_then_refuses_a_flipped_byte_and_a_wrong_key() {
        let tmp = tempfile::tempdir().unwrap();
        let config = config_with_key(tmp.path(), "master.key");
        let archive = make_archive(&config, tmp.path(), &|_| Ok(())).await;

        let good = tmp.path().join("good");
        let r = restore(&config, &archive, &good).await.unwrap();
        assert_eq!((r.files, r.store_entries), (1, 1));
        let store = rampart_store::RedbStore::open(&good.join("state.redb")).unwrap();
        assert_eq!(
            store.get(Table::Secrets, "acme/a").unwrap(),
            Some(b"sealed".to_vec())
        );
        drop(store);

        let bytes = fs::read(&archive).unwrap();
        for at in [bytes.len() / 2, bytes.len() - 1] {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x40;
            let bad = tmp.path().join(format!("flipped-{at}"));
            fs::write(&bad, &flipped).unwrap();
            let target = tmp.path().join(format!("t-{at}"));
            let e = restore(&config, &bad, &target).await.unwrap_err();
            assert!(matches!(e, RestoreError::Archive(_)), "{e}");
            assert!(is_empty(&target), "a refused restore leaves nothing");
        }

        let cut = tmp.path().join("cut");
        fs::write(&cut, &bytes[..bytes.len() - 20]).unwrap();
        let e = restore(&config, &cut, &tmp.path().join("t-cut"))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("cut short"), "{e}");

        let other = config_with_key(tmp.path(), "other.key");
        let e = restore(&other, &archive, &tmp.path().join("t-other"))
            .await
            .unwrap_err();
        assert!(matches!(e, RestoreError::MasterKey(_)), "{e}");
    }

    #[tokio::test]
    async fn an_entry_outside_the_directory_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let config = config_with_key(tmp.path(), "master.key");
        let archive = make_archive(&config, tmp.path(), &|w| {
            // Written by hand: the writer itself refuses such a path.
            let path = b"../escaped";
            w.write_all(&[2])?;
            w.write_all(&(path.len() as u16).to_be_bytes())?;
            w.write_all(path)?;
            w.write_all(&1u64.to_be_bytes())?;
            w.write_all(b"x")
        })
        .await;
        let target = tmp.path().join("t");
        let e = restore(&config, &archive, &target).await.unwrap_err();
        assert!(e.to_string().contains("../escaped"), "{e}");
        assert!(!tmp.path().join("escaped").exists());
        assert!(is_empty(&target));
    }

    #[tokio::test]
    async fn a_directory_with_files_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let config = config_with_key(tmp.path(), "master.key");
        let archive = make_archive(&config, tmp.path(), &|_| Ok(())).await;
        fs::write(tmp.path().join("keep"), b"x").unwrap();
        let e = restore(&config, &archive, tmp.path()).await.unwrap_err();
        assert!(matches!(e, RestoreError::NotEmpty(_)), "{e}");
    }
}
