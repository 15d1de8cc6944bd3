//! The binary under SIGKILL: a publisher sends numbered, `on_commit`
//! acknowledged messages while `rampart server --dev` is killed and
//! restarted again and again; afterwards every acknowledged message must
//! be in the stream exactly once and in order. Also the durable-stream CLI:
//! `stream create --durable`, `pub --require`, `sub --from`, `sub --consumer`.

use std::process::Stdio;
use std::time::{Duration, Instant};

use rampart_client::{Client, ClientConfig, Durability};

use crate::cli::DevServer;

const RESTARTS: usize = 20;

fn client_config(s: &DevServer) -> ClientConfig {
    let key = std::fs::read_to_string(s.data().join("dev/admin.key")).unwrap();
    ClientConfig::default()
        .with_ca(s.data().join("dev/ca.crt"))
        .with_api_key(key.trim())
}

/// A small deterministic generator; the seed is printed so a failing run
/// can be repeated.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

/// Publishes numbered messages from `next` until an error (the server was
/// killed); returns the numbers acknowledged and the next unused number.
/// A number is never sent twice, so a duplicate in the stream can only be
/// the server's doing.
async fn publish_until_error(url: String, cfg: ClientConfig, mut next: u64) -> (Vec<u64>, u64) {
    let mut acked = Vec::new();
    let Ok(Ok(c)) = tokio::time::timeout(Duration::from_secs(10), Client::connect(&url, cfg)).await
    else {
        return (acked, next);
    };
    loop {
        // Alternate single messages and small batches.
        let n = if next.is_multiple_of(3) { 5 } else { 1 };
        let payloads: Vec<String> = (next..next + n).map(|i| i.to_string()).collect();
        next += n;
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            c.publish_batch_acked("dev", "crash", "seq", &payloads),
        )
        .await;
        match r {
            Ok(Ok(a)) => {
                assert_eq!(a.durability, Durability::Fsynced);
                assert_eq!(a.count as u64, n);
                acked.extend(next - n..next);
            }
            _ => return (acked, next),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_repeated_sigkill() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("crash test seed {seed}");
    let mut rng = Lcg(seed);
    let mut s = DevServer::start();
    let url = format!("tls://{}", s.tcp);
    let o = s
        .cli(&url)
        .args([
            "stream",
            "create",
            "dev/crash/seq",
            "--durable",
            "--sync",
            "on_commit",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let mut acked: Vec<u64> = Vec::new();
    let mut next = 0u64;
    let started = Instant::now();
    for round in 0..RESTARTS {
        let url = format!("tls://{}", s.tcp);
        let publisher = tokio::spawn(publish_until_error(url, client_config(&s), next));
        // Let it run a while, then kill the server mid-flight.
        let run = 100 + rng.next(300);
        tokio::time::sleep(Duration::from_millis(run)).await;
        let dir = tokio::task::spawn_blocking(move || s.into_dir())
            .await
            .unwrap();
        let (got, n) = tokio::time::timeout(Duration::from_secs(30), publisher)
            .await
            .expect("publisher noticed the kill")
            .unwrap();
        assert!(
            got.first().is_none_or(|f| *f >= next),
            "round {round}: numbers only grow"
        );
        acked.extend(got);
        next = n;
        s = tokio::task::spawn_blocking(move || DevServer::start_in(dir))
            .await
            .unwrap();
    }

    // Read the whole stream back from the restarted server.
    let c = Client::connect(&format!("tls://{}", s.tcp), client_config(&s))
        .await
        .unwrap();
    let mut sub = c
        .subscribe_from("dev", "crash", "seq", rampart_client::StartAt::Earliest)
        .await
        .unwrap();
    // A marker published now is the last message: read until it.
    c.publish("dev", "crash", "seq", "end").await.unwrap();
    let mut stored = Vec::new();
    loop {
        let e = crate::common::next_event(&mut sub, 30).await;
        if &e.payload[..] == b"end" {
            break;
        }
        assert_eq!(e.seq, stored.len() as u64, "offsets have no gap");
        let n: u64 = std::str::from_utf8(&e.payload).unwrap().parse().unwrap();
        stored.push(n);
    }
    assert!(
        stored.windows(2).all(|w| w[0] < w[1]),
        "in order, no duplicate"
    );
    let present: std::collections::HashSet<u64> = stored.iter().copied().collect();
    let lost: Vec<u64> = acked
        .iter()
        .copied()
        .filter(|a| !present.contains(a))
        .collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    println!(
        "crash test: {RESTARTS} SIGKILL restarts in {:.1}s, {} messages acknowledged, {} stored \
         ({} sent without an acknowledgement made it)",
        started.elapsed().as_secs_f64(),
        acked.len(),
        stored.len(),
        stored.len() - acked.len()
    );
    assert!(acked.len() > RESTARTS, "the publisher got work done");
}

#[test]
fn durable_stream_cli() {
    let s = DevServer::start();
    let url = format!("tls://{}", s.tcp);
    let run = |args: &[&str]| {
        let o = s.cli(&url).args(args).output().unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    };
    run(&["stream", "create", "dev/cli/log", "--durable"]);
    for m in ["a", "b", "c", "d"] {
        run(&["pub", "dev/cli/log", m, "--require", "fsynced"]);
    }
    // A live stream cannot promise more than memory.
    let o = s
        .cli(&url)
        .args(["pub", "dev/cli/live", "x", "--require", "written"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("memory"));

    assert_eq!(
        run(&["sub", "dev/cli/log", "--from", "earliest", "--count", "4"]),
        "a\nb\nc\nd\n"
    );
    assert_eq!(
        run(&["sub", "dev/cli/log", "--from", "2", "--count", "2"]),
        "c\nd\n"
    );
    // A consumer remembers what it acknowledged between runs.
    assert_eq!(
        run(&["sub", "dev/cli/log", "--consumer", "audit", "--count", "3"]),
        "a\nb\nc\n"
    );
    // 'd' may have been delivered to the first run and not acknowledged:
    // it comes to the next member.
    assert_eq!(
        run(&["sub", "dev/cli/log", "--consumer", "audit", "--count", "1"]),
        "d\n"
    );
    let info = run(&["stream", "get", "dev/cli/log"]);
    assert!(info.contains("\"committed\": 4"), "{info}");
    // Replay of a live stream is refused with a clear message.
    let o = s
        .cli(&url)
        .args(["sub", "dev/cli/live", "--from", "earliest"])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("durable"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The server's own log, at debug level, never holds a secret's value or a
/// token, whatever goes through the vault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_values_and_tokens_never_reach_the_server_log() {
    let mut s = tokio::task::spawn_blocking(DevServer::start).await.unwrap();
    let url = format!("https://{}", s.https);
    let key = std::fs::read_to_string(s.data().join("dev/admin.key")).unwrap();
    let cfg = ClientConfig::default()
        .with_ca(s.data().join("dev/ca.crt"))
        .with_api_key(key.trim());
    let admin = rampart_client::AdminClient::new(&url, &cfg).unwrap();
    let acl = "apiVersion: rampart.io/v1\nkind: ACL\nmetadata: {tenant: dev}\nspec:\n  rules:\n    - principal: \"role:admin\"\n      resource: \"secret:*\"\n      permissions: [secret_read, secret_write]\n";
    let r = admin
        .call("PUT", "/v1/tenants/dev/acl", Some(&serde_json::json!(acl)))
        .await
        .unwrap();
    assert!(r.status < 300, "{}", r.error());
    let login = admin
        .call(
            "POST",
            "/v1/auth",
            Some(&serde_json::json!({ "api_key": key.trim() })),
        )
        .await
        .unwrap();
    let token = login.body["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_string();
    let t = rampart_client::AdminClient::new(
        &url,
        &ClientConfig::default()
            .with_ca(s.data().join("dev/ca.crt"))
            .with_token(&token),
    )
    .unwrap();
    let canary = "LOG-CANARY-51c0e7";
    for (method, path, body) in [
        (
            "POST",
            "/v1/secret/data/app/prod/db",
            Some(serde_json::json!({ "data": { "password": canary } })),
        ),
        ("GET", "/v1/secret/data/app/prod/db", None),
        ("GET", "/v1/secret/app/prod/db", None),
        (
            "POST",
            "/v1/secret/data/app/prod/db",
            Some(serde_json::json!({ "options": { "cas": 99 }, "data": { "password": canary } })),
        ),
    ] {
        let r = t.call(method, path, body.as_ref()).await.unwrap();
        assert!(r.status < 500, "{method} {path}: {}", r.error());
    }
    let log = s.stop_and_read_log();
    assert!(log.contains("token issued"), "the log was captured: {log}");
    assert!(
        !log.contains(canary),
        "a secret value reached the server log"
    );
    assert!(!log.contains(&token), "a token reached the server log");
    assert!(
        !log.contains(key.trim()),
        "an API key reached the server log"
    );
}
