//! `rampart incident bundle` as a built binary, on the data directory of a
//! real server that was used and stopped: the bundle holds the audit log
//! (which verifies), the redacted configuration and a manifest that
//! `sha256sum -c` accepts, and nothing secret; a tampered audit log is
//! bundled all the same, with the failure said and exit code 1.

use std::path::Path;
use std::process::{Command, Output};

use rampart_client::Transport;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_rampart");

fn bundle(data: &Path, out: &Path) -> Output {
    Command::new(BIN)
        .args(["incident", "bundle", "--data-dir"])
        .arg(data)
        .arg("--out")
        .arg(out)
        .env_clear()
        .output()
        .unwrap()
}

/// Every file under `root`, as paths relative to it.
fn names_under(root: &Path) -> Vec<String> {
    snapshot(root)
        .into_iter()
        .map(|(p, _)| p.strip_prefix(root).unwrap().display().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_holds_the_verified_audit_log_and_nothing_secret() {
    let s = start().await;
    let c = s.client(Transport::Tcp, KEY_ACME).await;
    c.publish("acme", "ns", "s", "payload-canary")
        .await
        .unwrap();
    c.close().await;
    let data = s.stop().await;
    let out_root = tempfile::tempdir().unwrap();
    let out = out_root.path().join("bundle");

    let o = bundle(data.path(), &out);
    assert!(o.status.success(), "{o:?}");
    for f in [
        "audit-verify.txt",
        "config.redacted.toml",
        "bundle.txt",
        "MANIFEST.sha256",
        "audit/HEAD",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let verify = std::fs::read_to_string(out.join("audit-verify.txt")).unwrap();
    assert!(verify.starts_with("ok: "), "{verify}");
    // The same verification the audit command does, on the copy.
    rampart_audit::verify_dir(&out.join("audit"), None).unwrap();
    let config = std::fs::read_to_string(out.join("config.redacted.toml")).unwrap();
    assert!(config.contains("data_dir"), "{config}");

    // Every file but the manifest is in it, and sha256sum agrees.
    let manifest = std::fs::read_to_string(out.join("MANIFEST.sha256")).unwrap();
    let mut names = names_under(&out);
    names.retain(|n| n != "MANIFEST.sha256");
    assert_eq!(manifest.lines().count(), names.len(), "{manifest}");
    for n in &names {
        assert!(manifest.contains(&format!("  {n}\n")), "{n}: {manifest}");
    }
    if let Ok(o) = Command::new("sha256sum")
        .args(["-c", "--quiet", "MANIFEST.sha256"])
        .current_dir(&out)
        .output()
    {
        assert!(o.status.success(), "{o:?}");
    }

    // Nothing secret: no key material, no payload, no API key.
    for n in &names {
        assert!(
            !["master", "pepper", "store", "streams", ".key"]
                .iter()
                .any(|w| n.contains(w)),
            "{n} should not be in a bundle"
        );
        let bytes = std::fs::read(out.join(n)).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains("payload-canary") && !text.contains(KEY_ACME),
            "{n}"
        );
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&out).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the bundle is private: {mode:o}");
    }

    // An existing directory is never written into.
    let again = bundle(data.path(), &out);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    // A record changed after the fact: bundled, said, exit 1.
    let audit = data.path().join("audit");
    let logs = audit_logs(&audit);
    let first = &logs[0];
    let text = std::fs::read_to_string(first).unwrap();
    std::fs::write(first, text.replacen("\"acme\"", "\"acmf\"", 1)).unwrap();
    let tampered = out_root.path().join("tampered");
    let o = bundle(data.path(), &tampered);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let verify = std::fs::read_to_string(tampered.join("audit-verify.txt")).unwrap();
    assert!(verify.starts_with("FAILED: "), "{verify}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_principal_ends_every_credential_of_one_principal_only() {
    let s = start().await;
    let admin = s.admin(KEY_ACME);
    let key = |name: &'static str| {
        let admin = &admin;
        async move {
            let r = admin
                .call(
                    "POST",
                    "/v1/tenants/acme/keys",
                    Some(&serde_json::json!({ "name": name, "roles": ["user"] })),
                )
                .await
                .unwrap();
            assert_eq!(r.status, 201, "{}", r.text);
            r.body["key"].as_str().unwrap().to_string()
        }
    };
    let (first, second, bystander) = (
        key("intruder").await,
        key("intruder").await,
        key("ops").await,
    );
    // A token from the first key, a live connection on the second.
    let login = admin
        .call(
            "POST",
            "/v1/auth",
            Some(&serde_json::json!({ "api_key": first })),
        )
        .await
        .unwrap();
    assert_eq!(login.status, 200, "{}", login.text);
    let token = login.body["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_string();
    let live = s.client(Transport::Tcp, &second).await;
    live.publish("acme", "ns", "s", "before").await.unwrap();
    let other = s.client(Transport::Tcp, &bystander).await;

    let o = admin_cli(
        &s,
        KEY_ACME,
        &[
            "incident",
            "revoke-principal",
            "--tenant",
            "acme",
            "--principal",
            "intruder",
        ],
    );
    assert!(o.status.success(), "{o:?}");
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(said.contains("2 key(s)"), "{said}");

    // Every credential of the principal is dead, the open connection too.
    for k in [&first, &second] {
        let c = rampart_client::ClientConfig::default()
            .with_ca(&s.ca)
            .with_api_key(k.as_str());
        assert!(rampart_client::Client::connect(&s.url(Transport::Tcp), c)
            .await
            .is_err());
    }
    let by_token = rampart_client::AdminClient::new(
        &format!("https://{}", s.server.http_addr().unwrap()),
        &rampart_client::ClientConfig::default()
            .with_ca(&s.ca)
            .with_token(token),
    )
    .unwrap();
    let r = by_token
        .call("GET", "/v1/auth/token/lookup-self", None)
        .await
        .unwrap();
    assert!(
        r.status == 401 || r.status == 403,
        "{}: {}",
        r.status,
        r.text
    );
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while live.publish("acme", "ns", "s", "after").await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the live connection still publishes"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Another principal of the tenant is untouched.
    other
        .publish("acme", "ns", "s", "still fine")
        .await
        .unwrap();
}
