//! `rampart agent` end to end: the real binary against a real server on
//! 127.0.0.1, logging in with an AppRole (or a client certificate),
//! rendering secrets to files in a temporary directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rampart_client::{AdminClient, ClientConfig, Transport};
use serde_json::{json, Value};

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_rampart");
/// Planted in secret values: must never reach the agent's output.
const CANARY: &str = "CANARY-agent-7f3e9b";

/// Secrets: the admin role everything, the AppRole `agent` billing/prod.
const SECRETS_ACL: &str = r#"
apiVersion: rampart.io/v1
kind: ACL
metadata:
  tenant: acme
spec:
  rules:
    - principal: "role:admin"
      resource: "secret:*"
      permissions: [secret_read, secret_write]
    - principal: "approle:agent"
      resource: "secret:billing/prod/*"
      permissions: [secret_read]
    - principal: "agent-cert"
      resource: "secret:billing/prod/*"
      permissions: [secret_read]
"#;

/// The change notices, for the AppRole `agent` (which has no role).
const NOTICES_ACL: &str = r#"
apiVersion: rampart.io/v1
kind: ACL
metadata:
  tenant: acme
  namespace: vault
spec:
  rules:
    - principal: "approle:agent"
      resource: "stream:changes"
      permissions: [subscribe]
"#;

fn https(s: &TestServer) -> String {
    format!("https://{}", s.server.http_addr().expect("https"))
}

async fn ok(api: &AdminClient, method: &str, path: &str, body: Option<Value>) -> Value {
    let r = api.call(method, path, body.as_ref()).await.unwrap();
    assert!(
        r.status < 300,
        "{method} {path}: {} {}",
        r.status,
        r.error()
    );
    r.body
}

/// A server with the ACLs applied and the AppRole `agent`, and a directory
/// holding its role id and secret id files.
struct Setup {
    s: TestServer,
    dir: tempfile::TempDir,
    role_id: String,
    secret_id: String,
}

/// The Vault API with a fresh admin token (tokens may be short-lived).
async fn vault_api(s: &TestServer) -> AdminClient {
    let auth = ok(
        &s.admin(KEY_ACME),
        "POST",
        "/v1/auth",
        Some(json!({ "api_key": KEY_ACME })),
    )
    .await;
    let token = auth["auth"]["client_token"].as_str().unwrap().to_string();
    AdminClient::new(
        &https(s),
        &ClientConfig::default().with_ca(&s.ca).with_token(token),
    )
    .unwrap()
}

async fn setup(s: TestServer, notices: bool, role: Value) -> Setup {
    let admin = s.admin(KEY_ACME);
    ok(
        &admin,
        "PUT",
        "/v1/tenants/acme/acl",
        Some(json!(SECRETS_ACL)),
    )
    .await;
    if notices {
        ok(
            &admin,
            "PUT",
            "/v1/tenants/acme/acl",
            Some(json!(NOTICES_ACL)),
        )
        .await;
    }
    let api = vault_api(&s).await;
    ok(&api, "POST", "/v1/auth/approle/role/agent", Some(role)).await;
    let role_id = ok(&api, "GET", "/v1/auth/approle/role/agent/role-id", None).await["data"]
        ["role_id"]
        .as_str()
        .unwrap()
        .to_string();
    let secret_id = ok(&api, "POST", "/v1/auth/approle/role/agent/secret-id", None).await["data"]
        ["secret_id"]
        .as_str()
        .unwrap()
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("role_id"), &role_id).unwrap();
    std::fs::write(dir.path().join("secret_id"), format!("{secret_id}\n")).unwrap();
    Setup {
        s,
        dir,
        role_id,
        secret_id,
    }
}

/// A role without built-in roles: secrets and notices come from the ACLs.
fn plain_role() -> Value {
    json!({ "token_policies": [] })
}

impl Setup {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a secret; returns its new version.
    async fn put(&self, path: &str, data: Value) -> u64 {
        let r = ok(
            &vault_api(&self.s).await,
            "POST",
            &format!("/v1/secret/data/{path}"),
            Some(json!({ "data": data })),
        )
        .await;
        r["data"]["version"].as_u64().unwrap()
    }

    /// Writes `agent.toml`: the server, the AppRole files, then `secrets`.
    /// `broker`: the transport of `broker_url`, if any.
    fn config(&self, broker: Option<Transport>, poll: &str, secrets: &str) -> PathBuf {
        let mut t = format!(
            "url = {:?}\nca_cert = {:?}\npoll_interval = {poll:?}\n",
            https(&self.s),
            self.s.ca.display().to_string(),
        );
        if let Some(transport) = broker {
            t += &format!("broker_url = {:?}\n", self.s.url(transport));
        }
        t += &format!(
            "[auth]\nmethod = \"approle\"\nrole_id_file = {:?}\nsecret_id_file = {:?}\n{secrets}",
            self.path("role_id").display().to_string(),
            self.path("secret_id").display().to_string(),
        );
        let p = self.path("agent.toml");
        std::fs::write(&p, t).unwrap();
        p
    }

    /// Checks that the agent's output holds no secret value, token or
    /// secret id.
    fn assert_clean(&self, output: &str) {
        for (what, needle) in [
            ("a secret value", CANARY),
            ("a token", "rt1."),
            ("the secret id", self.secret_id.as_str()),
            ("the role id", self.role_id.as_str()),
        ] {
            assert!(
                !output.contains(needle),
                "{what} in the agent's output:\n{output}"
            );
        }
    }
}

/// One `[[secret]]` table.
fn secret(path: &str, dest: &Path, extra: &str) -> String {
    format!(
        "[[secret]]\npath = {path:?}\ndestination = {:?}\n{extra}\n",
        dest.display().to_string()
    )
}

fn agent_command(config: &Path, log: &Path, once: bool, rust_log: &str) -> Command {
    let out = std::fs::File::create(log).unwrap();
    let mut c = Command::new(BIN);
    c.args(["agent", "--config"])
        .arg(config)
        .env("RUST_LOG", rust_log)
        .env_remove("RAMPART_TOKEN")
        .env_remove("RAMPART_API_KEY")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    if once {
        c.arg("--once");
    }
    c
}

/// Waits for `child` at most `limit`; kills it and panics past that.
fn wait_bounded(child: &mut Child, limit: Duration, log: &Path) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the agent did not exit within {limit:?}:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `rampart agent --once`: its exit status and output.
async fn run_once(config: &Path, log: &Path, rust_log: &str) -> (ExitStatus, String) {
    let mut c = agent_command(config, log, true, rust_log);
    let log = log.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut child = c.spawn().unwrap();
        let status = wait_bounded(&mut child, Duration::from_secs(30), &log);
        (status, std::fs::read_to_string(&log).unwrap())
    })
    .await
    .unwrap()
}

/// The agent as a daemon; killed when dropped.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(config: &Path, log: &Path) -> Self {
        let child = agent_command(config, log, false, "info").spawn().unwrap();
        Self {
            child,
            log: log.to_path_buf(),
        }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `f` holds, at most `limit`; returns how long it took.
    async fn wait_until(
        &self,
        what: &str,
        limit: Duration,
        mut f: impl FnMut() -> bool,
    ) -> Duration {
        let start = Instant::now();
        while !f() {
            assert!(
                start.elapsed() < limit,
                "timed out after {limit:?} waiting for {what}; agent output:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        start.elapsed()
    }

    /// Sends SIGTERM; returns the exit status.
    async fn terminate(mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        let log = self.log.clone();
        let mut child = std::mem::replace(&mut self.child, Command::new("true").spawn().unwrap());
        tokio::task::spawn_blocking(move || wait_bounded(&mut child, Duration::from_secs(15), &log))
            .await
            .unwrap()
    }

    /// Waits for the agent to exit on its own.
    async fn exit(mut self, limit: Duration) -> ExitStatus {
        let log = self.log.clone();
        let mut child = std::mem::replace(&mut self.child, Command::new("true").spawn().unwrap());
        tokio::task::spawn_blocking(move || wait_bounded(&mut child, limit, &log))
            .await
            .unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read(p: &Path) -> Option<Vec<u8>> {
    std::fs::read(p).ok()
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn lines(p: &Path) -> usize {
    std::fs::read_to_string(p).map_or(0, |s| s.lines().count())
}

/// No temporary file left next to the rendered ones.
fn assert_no_temporaries(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.ends_with(".tmp"), "temporary file left: {name}");
    }
}

fn db_secret(n: u64) -> Value {
    json!({ "user": "app", "password": format!("{CANARY}-{n}") })
}

fn db_json(n: u64) -> Vec<u8> {
    format!("{{\"password\":\"{CANARY}-{n}\",\"user\":\"app\"}}\n").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_renders_json_and_single_values_with_their_modes() {
    let v = setup(start().await, false, plain_role()).await;
    v.put("billing/prod/db", db_secret(1)).await;
    v.put(
        "billing/prod/api",
        json!({ "key": format!("api-{CANARY}") }),
    )
    .await;
    let out = v.path("out");
    std::fs::create_dir(&out).unwrap();
    let (db, pw, api) = (
        out.join("db.json"),
        out.join("db-password"),
        out.join("api-key"),
    );
    let ids = {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(&out).unwrap();
        format!("owner = \"{}\"\ngroup = \"{}\"", m.uid(), m.gid())
    };
    let secrets = [
        // Still in [auth]: the secret id is read once, then removed.
        "remove_secret_id_file_after_reading = true\n",
        &secret("billing/prod/db", &db, &ids),
        &secret("billing/prod/db", &pw, "format = \"value:password\""),
        &secret(
            "billing/prod/api",
            &api,
            "format = \"value:key\"\nmode = \"0440\"",
        ),
    ]
    .concat();
    let config = v.config(None, "30s", &secrets);
    // Debug logs too must not carry secrets.
    let (status, output) = run_once(&config, &v.path("once.log"), "debug").await;
    assert!(status.success(), "{output}");
    assert_eq!(read(&db).unwrap(), db_json(1));
    assert_eq!(read(&pw).unwrap(), format!("{CANARY}-1").into_bytes());
    assert_eq!(read(&api).unwrap(), format!("api-{CANARY}").into_bytes());
    assert_eq!(mode(&db), 0o400);
    assert_eq!(mode(&pw), 0o400);
    assert_eq!(mode(&api), 0o440);
    assert_no_temporaries(&out);
    assert!(
        !v.path("secret_id").exists(),
        "the secret id file was removed"
    );
    assert!(output.contains("secret written"), "{output}");
    assert!(output.contains("token revoked"), "{output}");
    v.assert_clean(&output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_writes_nothing_for_missing_forbidden_or_unrenderable_secrets() {
    let v = setup(start().await, false, plain_role()).await;
    v.put("billing/prod/db", db_secret(1)).await;
    // Readable by the admin, not by the AppRole.
    v.put("web/prod/db", json!({ "password": CANARY })).await;
    let out = v.path("out");
    std::fs::create_dir(&out).unwrap();
    let present = out.join("db.json");
    let absent = out.join("absent.json");
    let forbidden = out.join("web.json");
    let no_field = out.join("no-field");
    let secrets = [
        secret("billing/prod/db", &present, ""),
        secret("billing/prod/absent", &absent, ""),
        secret("web/prod/db", &forbidden, ""),
        secret("billing/prod/db", &no_field, "format = \"value:nope\""),
    ]
    .concat();
    let config = v.config(None, "30s", &secrets);
    let (status, output) = run_once(&config, &v.path("once.log"), "info").await;
    assert!(!status.success(), "{output}");
    for p in [&absent, &forbidden, &no_field] {
        assert!(
            std::fs::symlink_metadata(p).is_err(),
            "{} exists:\n{output}",
            p.display()
        );
    }
    assert_eq!(read(&present).unwrap(), db_json(1));
    assert_no_temporaries(&out);
    for expected in [
        "billing/prod/absent",
        "not found (404)",
        "web/prod/db",
        "forbidden (403)",
        "no field `nope`",
        "3 of 4 secret file(s) not written",
    ] {
        assert!(output.contains(expected), "no `{expected}` in:\n{output}");
    }
    v.assert_clean(&output);
}

async fn daemon_follows_change_notices_and_runs_the_command_once_per_change(t: Transport) {
    let v = setup(start().await, true, plain_role()).await;
    v.put("billing/prod/db", db_secret(1)).await;
    let dest = v.path("db.json");
    let marker = v.path("marker");
    let command = format!(
        "command = {:?}",
        format!("echo restarted >> '{}'", marker.display())
    );
    // A poll a minute apart: only a notice explains a quick update.
    let config = v.config(Some(t), "60s", &secret("billing/prod/db", &dest, &command));
    let agent = Daemon::start(&config, &v.path("agent.log"));
    agent
        .wait_until("the first render", Duration::from_secs(15), || {
            read(&dest) == Some(db_json(1))
        })
        .await;
    agent
        .wait_until("the first command", Duration::from_secs(10), || {
            lines(&marker) == 1
        })
        .await;
    assert!(
        agent.output().contains("subscribed to change notices"),
        "{}",
        agent.output()
    );

    assert_eq!(v.put("billing/prod/db", db_secret(2)).await, 2);
    let took = agent
        .wait_until(
            "the notice to update the file",
            Duration::from_secs(10),
            || read(&dest) == Some(db_json(2)),
        )
        .await;
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_eq!(mode(&dest), 0o400);
    agent
        .wait_until("the second command", Duration::from_secs(10), || {
            lines(&marker) == 2
        })
        .await;
    // A new version with the same content: the file is not replaced and
    // the command does not run.
    assert_eq!(v.put("billing/prod/db", db_secret(2)).await, 3);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(lines(&marker), 2, "{}", agent.output());
    assert_eq!(read(&dest), Some(db_json(2)));

    let output_before = agent.output();
    let status = agent.terminate().await;
    assert!(status.success(), "{status:?}");
    let output = std::fs::read_to_string(v.path("agent.log")).unwrap();
    assert!(output.len() >= output_before.len());
    assert!(output.contains("token revoked"), "{output}");
    assert!(output.contains("change notice"), "{output}");
    v.assert_clean(&output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_replaces_files_atomically() {
    let v = setup(start().await, true, plain_role()).await;
    // Large enough that a torn write would be seen.
    let pad = "x".repeat(64 * 1024);
    let doc = |n: u64| json!({ "n": n, "pad": pad.clone() });
    v.put("billing/prod/db", doc(0)).await;
    let dest = v.path("db.json");
    let config = v.config(
        Some(Transport::Tcp),
        "60s",
        &secret("billing/prod/db", &dest, ""),
    );
    let agent = Daemon::start(&config, &v.path("agent.log"));
    agent
        .wait_until("the first render", Duration::from_secs(15), || {
            dest.exists()
        })
        .await;

    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (stop, dest) = (stop.clone(), dest.clone());
        std::thread::spawn(move || {
            let mut seen = std::collections::BTreeSet::new();
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let bytes = std::fs::read(&dest).expect("the file is always there");
                let v: Value = serde_json::from_slice(&bytes)
                    .unwrap_or_else(|e| panic!("a partial file ({} bytes): {e}", bytes.len()));
                seen.insert(v["n"].as_u64().expect("a whole document"));
                reads += 1;
            }
            (seen, reads)
        })
    };
    let last = 25;
    for n in 1..=last {
        v.put("billing/prod/db", doc(n)).await;
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    agent
        .wait_until("the last version", Duration::from_secs(15), || {
            read(&dest)
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .is_some_and(|v| v["n"] == last)
        })
        .await;
    stop.store(true, Ordering::Relaxed);
    let (seen, reads) = reader.join().expect("every read was a whole document");
    assert!(
        seen.len() >= 3,
        "the reader saw {seen:?} in {reads} reads: too few replacements to prove anything"
    );
    assert_no_temporaries(v.dir.path());
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_polls_when_it_may_not_subscribe() {
    // No ACL for the notices, and no role: subscribing is refused.
    let v = setup(start().await, false, plain_role()).await;
    v.put("billing/prod/db", db_secret(1)).await;
    let dest = v.path("db.json");
    let config = v.config(
        Some(Transport::Tcp),
        "1s",
        &secret("billing/prod/db", &dest, ""),
    );
    let agent = Daemon::start(&config, &v.path("agent.log"));
    agent
        .wait_until("the first render", Duration::from_secs(15), || {
            read(&dest) == Some(db_json(1))
        })
        .await;
    v.put("billing/prod/db", db_secret(2)).await;
    agent
        .wait_until("a poll to update the file", Duration::from_secs(10), || {
            read(&dest) == Some(db_json(2))
        })
        .await;
    // Several retries later, the fallback was still reported once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let output = agent.output();
    assert_eq!(
        output.matches("change notices unavailable").count(),
        1,
        "{output}"
    );
    assert!(output.contains("403"), "{output}");
    let status = agent.terminate().await;
    assert!(status.success(), "{status:?}");
    v.assert_clean(&std::fs::read_to_string(v.path("agent.log")).unwrap());
}

async fn renewal_and_login_again_keep_notices_flowing(t: Transport) {
    // Tokens live 3 s, at most 6 s: within 8 s the agent has renewed its
    // token and logged in again.
    let s = start_with(|c| {
        c.token_ttl_secs = 3;
        c.token_max_ttl_secs = 6;
    })
    .await;
    let v = setup(s, true, plain_role()).await;
    v.put("billing/prod/db", db_secret(1)).await;
    let dest = v.path("db.json");
    let config = v.config(Some(t), "60s", &secret("billing/prod/db", &dest, ""));
    let agent = Daemon::start(&config, &v.path("agent.log"));
    agent
        .wait_until("the first render", Duration::from_secs(15), || {
            read(&dest) == Some(db_json(1))
        })
        .await;
    agent
        .wait_until("a renewal and a new login", Duration::from_secs(15), || {
            let out = agent.output();
            out.contains("token renewed") && out.contains("logged in again")
        })
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    v.put("billing/prod/db", db_secret(2)).await;
    agent
        .wait_until(
            "the notice after the new login",
            Duration::from_secs(8),
            || read(&dest) == Some(db_json(2)),
        )
        .await;
    let status = agent.terminate().await;
    assert!(status.success(), "{status:?}");
    v.assert_clean(&std::fs::read_to_string(v.path("agent.log")).unwrap());
}

both_transports!(
    daemon_follows_change_notices_and_runs_the_command_once_per_change,
    renewal_and_login_again_keep_notices_flowing,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_used_single_use_secret_id_ends_the_agent() {
    let s = start_with(|c| {
        c.token_ttl_secs = 3;
        c.token_max_ttl_secs = 3;
    })
    .await;
    let v = setup(
        s,
        false,
        json!({ "token_policies": [], "secret_id_num_uses": 1 }),
    )
    .await;
    v.put("billing/prod/db", db_secret(1)).await;
    let dest = v.path("db.json");
    let config = v.config(None, "60s", &secret("billing/prod/db", &dest, ""));
    let agent = Daemon::start(&config, &v.path("agent.log"));
    agent
        .wait_until("the first render", Duration::from_secs(15), || {
            read(&dest) == Some(db_json(1))
        })
        .await;
    let log = v.path("agent.log");
    let status = agent.exit(Duration::from_secs(20)).await;
    let output = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "{output}");
    assert!(output.contains("cannot log in twice"), "{output}");
    // One failed attempt, no spinning.
    assert_eq!(
        output.matches("logging in again failed").count(),
        1,
        "{output}"
    );
    // The file stays.
    assert_eq!(read(&dest), Some(db_json(1)));
    v.assert_clean(&output);
}

// === client certificate login ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_with_a_client_certificate() {
    let pki = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "agent client CA");
    let ca_cert = params.self_signed(&ca_key).unwrap();
    let client_ca = pki.path().join("client-ca.crt");
    std::fs::write(&client_ca, ca_cert.pem()).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "agent-cert");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
    let (cert_path, key_path) = (pki.path().join("agent.crt"), pki.path().join("agent.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();

    let s = start_with(move |c| {
        c.tls_ca_cert_path = Some(client_ca);
        c.tls_client_auth = rampart_server::ClientAuth::Request;
        c.mtls_identities = vec![rampart_server::MtlsIdentity {
            tenant: "acme".into(),
            san_uri_prefix: None,
            common_names: vec!["agent-cert".into()],
            roles: vec![],
        }];
    })
    .await;
    let v = setup(s, false, plain_role()).await;
    v.put("billing/prod/db", db_secret(1)).await;
    let dest = v.path("db.json");
    let config = v.path("cert.toml");
    std::fs::write(
        &config,
        format!(
            "url = {:?}\nca_cert = {:?}\n[auth]\nmethod = \"cert\"\nclient_cert = {:?}\n\
             client_key = {:?}\n{}",
            https(&v.s),
            v.s.ca.display().to_string(),
            cert_path.display().to_string(),
            key_path.display().to_string(),
            secret("billing/prod/db", &dest, ""),
        ),
    )
    .unwrap();
    let (status, output) = run_once(&config, &v.path("once.log"), "info").await;
    assert!(status.success(), "{output}");
    assert_eq!(read(&dest).unwrap(), db_json(1));
    v.assert_clean(&output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_names_the_key_and_a_bad_secret_id_fails() {
    let v = setup(start().await, false, plain_role()).await;
    let dest = v.path("db.json");
    let config = v.config(
        None,
        "30s",
        &secret("billing/prod/db", &dest, "mode = \"0644\""),
    );
    let (status, output) = run_once(&config, &v.path("bad.log"), "info").await;
    assert!(!status.success());
    assert!(output.contains("mode"), "{output}");
    // A wrong secret id: refused at once, no file.
    std::fs::write(v.path("secret_id"), "not-the-secret-id").unwrap();
    let config = v.config(None, "30s", &secret("billing/prod/db", &dest, ""));
    let (status, output) = run_once(&config, &v.path("refused.log"), "info").await;
    assert!(!status.success());
    assert!(output.contains("login refused"), "{output}");
    assert!(!output.contains("not-the-secret-id"), "{output}");
    assert!(!dest.exists());
}
