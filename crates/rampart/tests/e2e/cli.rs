//! The binary end to end: `rampart server --dev` on an empty data dir, then
//! the CLI with the files it wrote.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_rampart");

/// `rampart server --dev` as a child process (shared with the crash test).
pub(crate) struct DevServer {
    child: Child,
    pub(crate) quic: String,
    pub(crate) tcp: String,
    pub(crate) https: String,
    dir: tempfile::TempDir,
}

impl DevServer {
    /// Kills the server (SIGKILL) and hands back its directory, for a
    /// restart.
    pub(crate) fn into_dir(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = tempfile::TempDir::new().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl DevServer {
    pub(crate) fn start() -> DevServer {
        Self::start_in(tempfile::tempdir().unwrap())
    }

    /// Starts over an existing directory (its `data` folder), as a restart.
    pub(crate) fn start_in(dir: tempfile::TempDir) -> DevServer {
        Self::start_with_args(dir, &[])
    }

    /// Starts with more arguments for `rampart server --dev`.
    pub(crate) fn start_with_args(dir: tempfile::TempDir, extra: &[&str]) -> DevServer {
        let data = dir.path().join("data");
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let mut child = Command::new(BIN)
            .args(["server", "--dev"])
            .args(extra)
            .env("RAMPART_DATA_DIR", &data)
            .env("RAMPART_QUIC_BIND", "127.0.0.1:0")
            .env("RAMPART_TCP_BIND", "127.0.0.1:0")
            .env("RAMPART_HTTP_BIND", "127.0.0.1:0")
            .env("RAMPART_SHUTDOWN_DRAIN_SECS", "0")
            .env("RUST_LOG", "debug")
            .env_remove("RAMPART_API_KEYS")
            .env_remove("RAMPART_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let (mut quic, mut tcp, mut https) = (None, None, None);
        for line in out.lines() {
            let line = line.unwrap();
            if let Some(a) = line.strip_prefix("rampart: quic listening on ") {
                quic = Some(a.to_string());
            }
            if let Some(a) = line.strip_prefix("rampart: tls listening on ") {
                tcp = Some(a.to_string());
            }
            if let Some(a) = line.strip_prefix("rampart: https listening on ") {
                https = Some(a.to_string());
            }
            if line.contains("RAMPART_API_KEY_FILE") {
                break;
            }
        }
        DevServer {
            child,
            quic: quic.expect("quic address printed"),
            tcp: tcp.expect("tcp address printed"),
            https: https.expect("https address printed"),
            dir,
        }
    }

    /// Stops the server and returns everything it logged.
    pub(crate) fn stop_and_read_log(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap()
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub(crate) fn cli(&self, url: &str) -> Command {
        let mut c = Command::new(BIN);
        c.env("RAMPART_URL", url)
            .env("RAMPART_HTTP_URL", format!("https://{}", self.https))
            .env("RAMPART_CA_CERT", self.data().join("dev/ca.crt"))
            .env("RAMPART_API_KEY_FILE", self.data().join("dev/admin.key"))
            .env_remove("RAMPART_API_KEY");
        c
    }
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn dev_server_then_cli_pub_sub_and_cache() {
    let mut s = DevServer::start();
    let dev = s.data().join("dev");
    for f in ["ca.crt", "admin.key", "server.crt", "server.key"] {
        assert!(dev.join(f).exists(), "{f} written");
    }
    #[cfg(unix)]
    {
        assert_eq!(mode(&dev), 0o700);
        assert_eq!(mode(&dev.join("admin.key")), 0o600);
        assert_eq!(mode(&dev.join("server.key")), 0o600);
    }

    for url in [format!("quic://{}", s.quic), format!("tls://{}", s.tcp)] {
        // Subscriber first; it says on stderr when it is subscribed.
        let mut sub = s
            .cli(&url)
            .args(["sub", "dev/demo/events", "--count", "3"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(sub.stderr.take().unwrap());
        let mut line = String::new();
        err.read_line(&mut line).unwrap();
        assert!(line.contains("subscribed"), "{line}");

        let mut publisher = s
            .cli(&url)
            .args(["pub", "dev/demo/events"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        publisher
            .stdin
            .take()
            .unwrap()
            .write_all(b"one\ntwo\npayload-canary-7f3a\n")
            .unwrap();
        let p = publisher.wait_with_output().unwrap();
        assert!(p.status.success(), "{}", String::from_utf8_lossy(&p.stderr));

        let deadline = Instant::now() + Duration::from_secs(30);
        while sub.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "subscriber finished");
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = sub.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "one\ntwo\npayload-canary-7f3a\n"
        );

        // A single message as an argument.
        let o = s
            .cli(&url)
            .args(["pub", "dev/demo/events", "hello"])
            .output()
            .unwrap();
        assert!(o.status.success());

        // Cache.
        let o = s
            .cli(&url)
            .args([
                "cache",
                "put",
                "dev/demo/kv",
                "greeting",
                "value-canary-91c2",
                "--ttl",
                "60",
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let o = s
            .cli(&url)
            .args(["cache", "get", "dev/demo/kv", "greeting"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&o.stdout), "value-canary-91c2\n");
        let o = s
            .cli(&url)
            .args(["cache", "del", "dev/demo/kv", "greeting"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&o.stdout), "1\n");
        let o = s
            .cli(&url)
            .args(["cache", "get", "dev/demo/kv", "greeting"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1));

        // Another tenant: non-zero exit naming the NACK code.
        let o = s
            .cli(&url)
            .args(["pub", "acme/demo/events", "x"])
            .output()
            .unwrap();
        assert!(!o.status.success());
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("NACK 403"),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    // Nothing secret or private reached the log, even at debug level.
    let admin_key = std::fs::read_to_string(dev.join("admin.key")).unwrap();
    let log = s.stop_and_read_log();
    assert!(log.contains("authenticated"), "the log is real: {log}");
    for canary in [
        admin_key.trim(),
        "payload-canary-7f3a",
        "value-canary-91c2",
        "rk_dev_not_the_key",
    ] {
        assert!(!log.contains(canary), "log leaks {canary}");
    }
}

#[test]
fn cli_refuses_missing_key_and_bad_names() {
    let s = DevServer::start();
    let url = format!("tls://{}", s.tcp);
    let o = s
        .cli(&url)
        .env_remove("RAMPART_API_KEY_FILE")
        .args(["pub", "dev/demo/events", "x"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("RAMPART_API_KEY"));
    let o = s
        .cli(&url)
        .args(["pub", "dev/Demo/events", "x"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    // A wrong key: refused with 401.
    let bad = s.dir.path().join("bad.key");
    std::fs::write(&bad, "rk_dev_not_the_key\n").unwrap();
    let o = s
        .cli(&url)
        .env("RAMPART_API_KEY_FILE", &bad)
        .args(["pub", "dev/demo/events", "x"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("NACK 401"));
}

#[tokio::test]
async fn key_hash_matches_what_the_server_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Command::new(BIN)
        .args(["key", "hash", "--dev", "--tenant", "acme"])
        .env("RAMPART_DATA_DIR", dir.path())
        .env_remove("RAMPART_MASTER_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(b"my-very-secret-key\n")
        .unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let entry = String::from_utf8(o.stdout).unwrap().trim().to_string();
    assert!(entry.starts_with("acme:hmac-sha256:"), "{entry}");
    assert!(!entry.contains("my-very-secret-key"));
    // The pepper on disk is wrapped by the master key, never in the clear.
    let pepper_file = std::fs::read_to_string(dir.path().join("api_key_pepper")).unwrap();
    assert!(
        pepper_file.starts_with("rampart-wrapped:v1:"),
        "{pepper_file}"
    );
    // A server over the same directory accepts the key by that entry.
    let mut config = crate::common::base_config(dir.path());
    config.allowed_api_keys = vec![entry];
    let server =
        rampart_server::Server::start(rampart_server::ServerOptions::new(config).dev(true))
            .await
            .unwrap();
    let ca = server.dev_setup().unwrap().ca_cert.clone();
    let client = rampart_client::Client::connect(
        &format!("tls://{}", server.tcp_addr().unwrap()),
        rampart_client::ClientConfig::default()
            .with_ca(ca)
            .with_api_key("my-very-secret-key"),
    )
    .await
    .unwrap();
    assert_eq!(client.tenant().as_str(), "acme");
}

/// Runs a CLI command, asserting success; returns stdout.
fn run_ok(c: &mut Command) -> String {
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "{:?}: {}",
        c.get_args().collect::<Vec<_>>(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn last_line(s: &str) -> String {
    s.lines().last().unwrap_or_default().trim().to_string()
}

#[test]
fn admin_commands_end_to_end() {
    let s = DevServer::start();
    let url = format!("tls://{}", s.tcp);

    // A managed key, printed alone on the last line, works at once.
    let out = run_ok(s.cli(&url).args([
        "key",
        "create",
        "--tenant",
        "dev",
        "--name",
        "ci",
        "--role",
        "user",
        "--expires",
        "90d",
    ]));
    let key = last_line(&out);
    assert!(key.starts_with("rampart_"), "{out}");
    let as_ci = |c: &mut Command| {
        c.env_remove("RAMPART_API_KEY_FILE")
            .env("RAMPART_API_KEY", &key);
    };
    let mut c = s.cli(&url);
    as_ci(&mut c);
    run_ok(c.args(["pub", "dev/demo/open", "hello"]));
    let listed = run_ok(s.cli(&url).args(["key", "list", "--tenant", "dev"]));
    assert!(
        listed.contains("\"ci\"") && !listed.contains(&key),
        "{listed}"
    );
    let v: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let id = v["keys"][0]["id"].as_str().unwrap().to_string();

    // An ACL denies ci on one stream; explain names the rule.
    let acl = s.dir.path().join("acl.yaml");
    std::fs::write(
        &acl,
        "apiVersion: rampart.io/v1\nkind: ACL\nmetadata:\n  tenant: dev\n  namespace: demo\nspec:\n  rules:\n    - principal: ci\n      resource: \"stream:locked\"\n      permissions: [publish]\n      effect: deny\n",
    )
    .unwrap();
    run_ok(s.cli(&url).args(["acl", "apply", "-f"]).arg(&acl));
    let o = s
        .cli(&url)
        .args([
            "acl",
            "explain",
            "--principal",
            "ci",
            "--resource",
            "stream:locked",
            "--namespace",
            "demo",
            "--permission",
            "publish",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "denied exits 2");
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        said.starts_with("deny") && said.contains("stream:locked"),
        "{said}"
    );
    let o = s
        .cli(&url)
        .args([
            "acl",
            "explain",
            "--principal",
            "ci",
            "--resource",
            "stream:open",
            "--namespace",
            "demo",
            "--permission",
            "publish",
        ])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let mut c = s.cli(&url);
    as_ci(&mut c);
    let o = c.args(["pub", "dev/demo/locked", "x"]).output().unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("NACK 403"));

    // Revoked: refused from now on.
    run_ok(s.cli(&url).args(["key", "revoke", "--tenant", "dev", &id]));
    let mut c = s.cli(&url);
    as_ci(&mut c);
    let o = c.args(["pub", "dev/demo/open", "x"]).output().unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("NACK 401"));

    // Tenants: create one (its admin key comes back once), disable, enable.
    let out = run_ok(s.cli(&url).args(["tenant", "create", "acme"]));
    let acme_key = last_line(&out);
    let as_acme = |c: &mut Command| {
        c.env_remove("RAMPART_API_KEY_FILE")
            .env("RAMPART_API_KEY", &acme_key);
    };
    let mut c = s.cli(&url);
    as_acme(&mut c);
    run_ok(c.args(["cache", "put", "acme/app/kv", "k", "v"]));
    run_ok(s.cli(&url).args(["tenant", "disable", "acme"]));
    let mut c = s.cli(&url);
    as_acme(&mut c);
    let o = c
        .args(["cache", "get", "acme/app/kv", "k"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("NACK 401"));
    run_ok(s.cli(&url).args(["tenant", "enable", "acme"]));
    let mut c = s.cli(&url);
    as_acme(&mut c);
    assert_eq!(run_ok(c.args(["cache", "get", "acme/app/kv", "k"])), "v\n");

    // One namespace of it: disabled by the tenant's own admin, enabled again.
    let mut c = s.cli(&url);
    as_acme(&mut c);
    run_ok(c.args(["namespace", "disable", "--tenant", "acme", "app"]));
    let mut c = s.cli(&url);
    as_acme(&mut c);
    let o = c
        .args(["cache", "get", "acme/app/kv", "k"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("NACK 403") && err.contains("disabled"),
        "{err}"
    );
    let mut c = s.cli(&url);
    as_acme(&mut c);
    run_ok(c.args(["namespace", "enable", "--tenant", "acme", "app"]));
    let mut c = s.cli(&url);
    as_acme(&mut c);
    assert_eq!(run_ok(c.args(["cache", "get", "acme/app/kv", "k"])), "v\n");

    // A token from the key works on the wire.
    let mut c = s.cli(&url);
    as_acme(&mut c);
    let token = last_line(&run_ok(c.args(["token", "create", "--ttl", "5m"])));
    assert!(token.starts_with("rt1."));
    let o = s
        .cli(&url)
        .env_remove("RAMPART_API_KEY_FILE")
        .env("RAMPART_TOKEN", &token)
        .args(["cache", "get", "acme/app/kv", "k"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "v\n",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // Neither the server log nor the audit log holds a key or a token.
    let mut s = s;
    let log = s.stop_and_read_log();
    let audit = std::fs::read_dir(s.data().join("audit"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
        .collect::<String>();
    assert!(log.contains("authenticated"), "the log is real");
    assert!(audit.contains("auth.success"), "the audit log is real");
    for secret in [key.as_str(), acme_key.as_str(), token.as_str()] {
        assert!(!log.contains(secret), "server log leaks a credential");
        assert!(!audit.contains(secret), "audit log leaks a credential");
    }
}

#[test]
fn audit_verify_and_hash_commands() {
    let mut s = DevServer::start();
    let url = format!("tls://{}", s.tcp);
    let out = run_ok(
        s.cli(&url)
            .args(["key", "create", "--tenant", "dev", "--name", "x"]),
    );
    assert!(last_line(&out).starts_with("rampart_"));
    run_ok(s.cli(&url).args(["pub", "dev/demo/a", "hello"]));
    let listed: serde_json::Value = serde_json::from_str(&run_ok(
        s.cli(&url).args(["key", "list", "--tenant", "dev"]),
    ))
    .unwrap();
    let key_id = listed["keys"][0]["id"].as_str().unwrap().to_string();
    // A clean stop writes the final checkpoint.
    let pid = s.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "server stopped on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    let audit = s.data().join("audit");
    let pubkey = s.dir.path().join("audit.pub.pinned");
    std::fs::copy(audit.join("audit.pub"), &pubkey).unwrap();
    let o = Command::new(BIN)
        .args(["audit", "verify"])
        .arg(&audit)
        .arg("--public-key")
        .arg(&pubkey)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{said}");
    assert!(
        said.starts_with("ok:") && said.contains("0 record(s) after the last checkpoint"),
        "{said}"
    );

    // The HMAC of the key id, as recorded.
    let listed: Vec<serde_json::Value> = std::fs::read_dir(&audit)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    let recorded = listed
        .iter()
        .find(|r| r["event_type"] == "key.create")
        .expect("key.create recorded")["metadata"]["key_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(recorded.starts_with("hmac:"));
    let o = Command::new(BIN)
        .args(["audit", "hash", &key_id, "--dev", "--data-dir"])
        .arg(s.data())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), recorded);

    // One changed byte: verification fails and names the record.
    let mut files: Vec<PathBuf> = std::fs::read_dir(&audit)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let tampered = text.replacen("\"action\":\"start\"", "\"action\":\"stort\"", 1);
    assert_ne!(text, tampered);
    std::fs::write(&files[0], tampered).unwrap();
    let o = Command::new(BIN)
        .args(["audit", "verify"])
        .arg(&audit)
        .arg("--public-key")
        .arg(&pubkey)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(!o.status.success(), "{said}");
    assert!(said.contains("FAILED") && said.contains("seq"), "{said}");
}

#[test]
fn wrong_master_key_refuses_to_start_and_touches_nothing() {
    use crate::common::snapshot;
    let mut s = DevServer::start();
    let url = format!("tls://{}", s.tcp);
    run_ok(
        s.cli(&url)
            .args(["key", "create", "--tenant", "dev", "--name", "m"]),
    );
    s.stop_and_read_log();
    let data = s.data();
    assert!(data.join("master.key").exists());
    let before = snapshot(&data);

    // Another master key (32 random bytes, base64) in the environment.
    let other = "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80=";
    let o = Command::new(BIN)
        .args(["server", "--dev"])
        .env("RAMPART_DATA_DIR", &data)
        .env("RAMPART_MASTER_KEY", other)
        .env("RAMPART_QUIC_BIND", "127.0.0.1:0")
        .env("RAMPART_TCP_BIND", "127.0.0.1:0")
        .env("RAMPART_HTTP_BIND", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!o.status.success(), "started with the wrong master key");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("master key") && err.contains("not the one"),
        "{err}"
    );
    assert!(snapshot(&data) == before, "files changed");

    // A malformed key is refused with its own message, also touching nothing.
    let o = Command::new(BIN)
        .args(["server", "--dev"])
        .env("RAMPART_DATA_DIR", &data)
        .env("RAMPART_MASTER_KEY", "not-base64!")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("RAMPART_MASTER_KEY"));
    assert!(snapshot(&data) == before, "files changed");
}

#[test]
fn rotate_master_then_everything_still_reads() {
    let mut s = DevServer::start();
    let url = format!("tls://{}", s.tcp);
    let key = last_line(&run_ok(s.cli(&url).args([
        "key", "create", "--tenant", "dev", "--name", "survivor", "--role", "user",
    ])));
    s.stop_and_read_log();
    let data = s.data();
    let o = Command::new(BIN)
        .args(["keys", "rotate-master", "--dev"])
        .env("RAMPART_DATA_DIR", &data)
        .env_remove("RAMPART_MASTER_KEY")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(said.contains("v1 -> v2"), "{said}");
    let master = std::fs::read_to_string(data.join("master.key")).unwrap();
    assert!(master.contains("v2:"), "a second version was added");
    // Restarted on the rotated key: the managed key (sealed record, peppered
    // hash) still authenticates and publishes.
    let s = DevServer::start_in(s.into_dir());
    let url = format!("tls://{}", s.tcp);
    let mut c = s.cli(&url);
    c.env_remove("RAMPART_API_KEY_FILE")
        .env("RAMPART_API_KEY", &key);
    run_ok(c.args(["pub", "dev/demo/after-rotation", "ok"]));
}

#[test]
fn tenant_limits_from_the_cli() {
    let s = DevServer::start();
    let url = format!("tls://{}", s.tcp);
    run_ok(s.cli(&url).args(["tenant", "create", "acme"]));
    let out = run_ok(s.cli(&url).args([
        "tenant",
        "limits",
        "acme",
        "--set",
        "cache_ops_per_sec=1",
        "burst=1.5",
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["override"]["cache_ops_per_sec"], 1, "{out}");
    assert_eq!(v["effective"]["burst"], 1.5, "{out}");
    // The dev operator's own cache ops are in tenant `dev`: unaffected.
    run_ok(s.cli(&url).args(["cache", "put", "dev/app/kv", "k", "v"]));
    let out = run_ok(s.cli(&url).args([
        "tenant",
        "limits",
        "acme",
        "--principal",
        "admin",
        "--set",
        "http_requests_per_sec=7",
    ]));
    assert!(out.contains("\"http_requests_per_sec\": 7"), "{out}");
    // A typo is refused with the server's message.
    let o = s
        .cli(&url)
        .args(["tenant", "limits", "acme", "--set", "cache_op_per_sec=1"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("cache_op_per_sec"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = run_ok(s.cli(&url).args(["tenant", "limits", "acme", "--clear"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["override"].is_null(), "{out}");
}
