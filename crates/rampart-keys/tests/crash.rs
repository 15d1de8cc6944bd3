//! Master rotation survives `kill -9` at any point between steps.
//!
//! The test re-runs its own binary as a child process (`current_exe()`, the
//! `rotate_child` test, selected by an environment variable), which rotates
//! the master key of a store and reports each step on stdout. In stepwise
//! mode it then waits for a line on stdin before going on, so the parent
//! decides exactly where to SIGKILL it, with no timing involved. After
//! every kill, all data must still open; a final uninterrupted run must
//! finish the rotation without rotating a second time.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use rampart_keys::{Aad, Keyring, LocalMasterKey, RotateStep};
use rampart_store::{KvStore, RedbStore, Table};

const CHILD: &str = "RAMPART_KEYS_CRASH_CHILD";
const DB: &str = "RAMPART_KEYS_CRASH_DB";
const KEY: &str = "RAMPART_KEYS_CRASH_KEY";
const STEPWISE: &str = "RAMPART_KEYS_CRASH_STEPWISE";
const TENANTS: usize = 10;

/// The child: rotates and reports. Passes trivially in a normal test run.
#[tokio::test]
async fn rotate_child() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let db = PathBuf::from(std::env::var_os(DB).unwrap());
    let key = PathBuf::from(std::env::var_os(KEY).unwrap());
    let stepwise = std::env::var_os(STEPWISE).is_some();
    let kv: Arc<dyn KvStore> = Arc::new(RedbStore::open(&db).unwrap());
    let master = Arc::new(LocalMasterKey::load(&key).unwrap());
    let keyring = Keyring::open(kv, master).await.unwrap();
    let mut report = |step: RotateStep<'_>| {
        let line = match step {
            RotateStep::Started { from, to, resumed } => {
                format!("STEP started {from} {to} {resumed}")
            }
            RotateStep::Rewrapped { tenant } => format!("STEP rewrapped {tenant}"),
            _ => "STEP other".into(),
        };
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}").unwrap();
        out.flush().unwrap();
        if stepwise {
            // Blocking on purpose: this is where the parent kills us, or
            // lets us go on.
            let mut go = String::new();
            let _ = std::io::stdin().read_line(&mut go);
        }
    };
    let r = keyring.rotate_master_with(&mut report).await.unwrap();
    println!("STEP done {} {}", r.rewrapped, r.already_current);
}

fn tenant(i: usize) -> String {
    format!("tenant-{i:02}")
}

fn aad(tenant: &str) -> Aad<'_> {
    Aad::new(tenant, "prod", "stream", "events", 0)
}

fn spawn(db: &Path, key: &Path, stepwise: bool) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "rotate_child", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .env(DB, db)
        .env(KEY, key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if stepwise {
        cmd.env(STEPWISE, "1");
    } else {
        cmd.env_remove(STEPWISE);
    }
    cmd.spawn().unwrap()
}

/// Reads the child's `STEP` lines on a thread, so the parent can wait with
/// a timeout.
fn steps(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest may print "test rotate_child ... " before it.
            if let Some(at) = line.find("STEP ") {
                if tx.send(line[at + 5..].to_owned()).is_err() {
                    break;
                }
            }
        }
    });
    rx
}

fn next(rx: &mpsc::Receiver<String>, child: &mut Child) -> String {
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(step) => step,
        Err(e) => {
            let _ = child.kill();
            panic!("child gave no step: {e}");
        }
    }
}

/// Lets a stepwise child take its next step.
fn go_on(child: &mut Child) {
    let stdin = child.stdin.as_mut().unwrap();
    stdin.write_all(b"\n").unwrap();
    stdin.flush().unwrap();
}

/// Opens every tenant's data in a fresh keyring (a restarted server).
async fn all_data_opens(db: &Path, key: &Path, sealed: &[(String, Vec<u8>)]) -> bool {
    let kv: Arc<dyn KvStore> = Arc::new(RedbStore::open(db).unwrap());
    let master = Arc::new(LocalMasterKey::load(key).unwrap());
    let keyring = Keyring::open(kv, master).await.unwrap();
    for (t, s) in sealed {
        let keys = keyring.tenant(t).await.unwrap();
        assert_eq!(keys.open(&aad(t), s).unwrap().expose(), t.as_bytes());
    }
    keyring.rotation_pending().unwrap()
}

fn kek_master_versions(db: &Path) -> Vec<u32> {
    let kv = RedbStore::open(db).unwrap();
    kv.scan(Table::Keyring, "tenant/")
        .unwrap()
        .into_iter()
        .map(|(_, v)| {
            let record: serde_json::Value = serde_json::from_slice(&v).unwrap();
            let w = base64::engine::general_purpose::STANDARD
                .decode(record["keks"][0]["wrapped"].as_str().unwrap())
                .unwrap();
            u32::from_be_bytes(w[4..8].try_into().unwrap())
        })
        .collect()
}

#[tokio::test]
async fn master_rotation_survives_sigkill_and_resumes() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.redb");
    let key = dir.path().join("master.key");
    LocalMasterKey::create(&key).unwrap();
    let mut sealed = Vec::new();
    {
        let kv: Arc<dyn KvStore> = Arc::new(RedbStore::open(&db).unwrap());
        let keyring = Keyring::open(kv, Arc::new(LocalMasterKey::load(&key).unwrap()))
            .await
            .unwrap();
        for i in 0..TENANTS {
            let t = tenant(i);
            let keys = keyring.tenant(&t).await.unwrap();
            sealed.push((t.clone(), keys.seal(&aad(&t), t.as_bytes()).unwrap()));
        }
    }

    // Kill after the new master version exists but before any KEK is
    // re-wrapped, then after 3 more, then after 4 more (7 in all).
    for (run, kill_after) in [0usize, 3, 4].into_iter().enumerate() {
        let mut child = spawn(&db, &key, true);
        let rx = steps(&mut child);
        let started = next(&rx, &mut child);
        assert_eq!(started, format!("started 1 2 {}", run > 0), "run {run}");
        for _ in 0..kill_after {
            go_on(&mut child);
            let step = next(&rx, &mut child);
            assert!(step.starts_with("rewrapped tenant-"), "{step}");
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert!(
            all_data_opens(&db, &key, &sealed).await,
            "intent kept after run {run}"
        );
        let done = kek_master_versions(&db).iter().filter(|&&v| v == 2).count();
        assert_eq!(done, [0, 3, 7][run], "KEKs re-wrapped after run {run}");
    }

    // An uninterrupted run finishes the job, without a second rotation.
    let mut child = spawn(&db, &key, false);
    let rx = steps(&mut child);
    assert_eq!(next(&rx, &mut child), "started 1 2 true");
    for _ in 0..3 {
        assert!(next(&rx, &mut child).starts_with("rewrapped "));
    }
    assert_eq!(next(&rx, &mut child), format!("done 3 {}", TENANTS - 3));
    assert!(child.wait().unwrap().success());

    assert!(
        !all_data_opens(&db, &key, &sealed).await,
        "rotation finished"
    );
    assert_eq!(kek_master_versions(&db), vec![2; TENANTS]);
    let text = std::fs::read_to_string(&key).unwrap();
    assert_eq!(
        text.lines().map(|l| &l[..3]).collect::<Vec<_>>(),
        ["v1:", "v2:"]
    );
}
