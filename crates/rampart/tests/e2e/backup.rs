//! `POST /v1/sys/backup` while a publisher keeps publishing, then
//! `rampart_server::restore` into a fresh directory, and a server there
//! that serves everything back: secrets, every message acknowledged before
//! the backup began, an API key made through the admin API, and an audit
//! log that verifies.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rampart_client::{StartAt, Transport};
use serde_json::json;

use crate::common::*;

const ACL: &str = "apiVersion: rampart.io/v1\nkind: ACL\nmetadata: {tenant: acme}\nspec:\n  rules:\n    - principal: \"role:admin\"\n      resource: \"secret:*\"\n      permissions: [secret_read, secret_write]\n";

async fn vault_token(s: &TestServer, key: &str) -> rampart_client::AdminClient {
    let r = s
        .admin(key)
        .call("POST", "/v1/auth", Some(&json!({ "api_key": key })))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.error());
    let token = r.body["auth"]["client_token"].as_str().unwrap().to_string();
    let url = format!("https://{}", s.server.http_addr().unwrap());
    rampart_client::AdminClient::new(
        &url,
        &rampart_client::ClientConfig::default()
            .with_ca(&s.ca)
            .with_token(&token),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_taken_while_publishing_restores_into_a_fresh_directory() {
    // Checkpoints often, so the backup holds signed ones and HEAD.
    let s = start_with(|c| c.audit_checkpoint_every = 5).await;
    let admin = s.admin(KEY_ACME);
    let r = admin
        .call("PUT", "/v1/tenants/acme/acl", Some(&json!(ACL)))
        .await
        .unwrap();
    assert!(r.status < 300, "{}", r.error());
    let vault = vault_token(&s, KEY_ACME).await;
    for (path, value) in [("billing/prod/db", "pw-1"), ("web/prod/api", "pw-2")] {
        let r = vault
            .call(
                "POST",
                &format!("/v1/secret/data/{path}"),
                Some(&json!({ "data": { "value": value } })),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.error());
    }
    let created = admin
        .call(
            "POST",
            "/v1/tenants/acme/keys",
            Some(&json!({"name": "kept"})),
        )
        .await
        .unwrap();
    assert_eq!(created.status, 201, "{}", created.error());
    let made_key = created.body["key"].as_str().unwrap().to_string();
    create_ledger(&s).await;

    // A publisher that goes on through the backup; `acked` counts the
    // messages acknowledged so far (m0, m1, ... in order).
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let c = s.client(Transport::Tcp, KEY_ACME).await;
        let (acked, stop) = (acked.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Acquire) {
                c.publish("acme", "prod", "ledger", format!("m{i}"))
                    .await
                    .unwrap();
                i += 1;
                acked.store(i, Ordering::Release);
            }
        })
    };
    while acked.load(Ordering::Acquire) < 200 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The backup, by the operator (tenant `dev` in dev mode).
    let op_key = s.server.dev_setup().unwrap().admin_key.expose().to_string();
    let before = acked.load(Ordering::Acquire);
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("rampart.backup");
    let mut file = tokio::fs::File::create(&archive).await.unwrap();
    let n = s
        .admin(&op_key)
        .download("POST", "/v1/sys/backup", &mut file)
        .await
        .unwrap()
        .unwrap_or_else(|r| panic!("HTTP {}: {}", r.status, r.error()));
    drop(file);
    assert!(n > 0);
    let during = acked.load(Ordering::Acquire);
    stop.store(true, Ordering::Release);
    publisher.await.unwrap();
    assert!(during > before, "the publisher went on during the backup");

    // A tenant's admin is not an operator.
    let mut sink = Vec::new();
    let refused = admin
        .download("POST", "/v1/sys/backup", &mut sink)
        .await
        .unwrap();
    assert_eq!(refused.unwrap_err().status, 403);

    // Nothing in the archive is readable without the master key.
    let bytes = std::fs::read(&archive).unwrap();
    for canary in ["pw-1", "m100", made_key.as_str(), "audit.checkpoint"] {
        assert!(
            !bytes.windows(canary.len()).any(|w| w == canary.as_bytes()),
            "{canary} is in the archive in clear"
        );
    }

    // The same through the CLI: `rampart backup` with the operator's key,
    // `rampart restore --dev-master-key` with the dev server's key file,
    // which it copies beside the restored data.
    let cli_out = work.path().join("cli.backup");
    let cli_dir = work.path().join("cli-restored");
    let (url, ca, master) = (
        format!("https://{}", s.server.http_addr().unwrap()),
        s.ca.clone(),
        s.data_dir().join("master.key"),
    );
    let (out, dir, key) = (cli_out.clone(), cli_dir.clone(), op_key.clone());
    tokio::task::spawn_blocking(move || {
        let bin = env!("CARGO_BIN_EXE_rampart");
        let o = std::process::Command::new(bin)
            .args(["backup", "--out"])
            .arg(&out)
            .env("RAMPART_HTTP_URL", &url)
            .env("RAMPART_CA_CERT", &ca)
            .env("RAMPART_API_KEY", &key)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let restore = |inline_key: Option<&str>| {
            let mut c = std::process::Command::new(bin);
            c.args(["restore", "--from"])
                .arg(&out)
                .arg("--data-dir")
                .arg(&dir)
                .arg("--dev-master-key")
                .arg(&master)
                .env_remove("RAMPART_MASTER_KEY_PATH")
                .env_remove("RAMPART_MASTER_KEY");
            if let Some(k) = inline_key {
                c.env("RAMPART_MASTER_KEY", k);
            }
            c.output().unwrap()
        };
        // Two master keys named at once are refused before anything is
        // written.
        let o = restore(Some("another"));
        assert!(!o.status.success());
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("RAMPART_MASTER_KEY"),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(!dir.exists());
        let o = restore(None);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    })
    .await
    .unwrap();
    assert!(cli_dir.join("state.redb").exists() && cli_dir.join("master.check").exists());
    assert_eq!(
        std::fs::read(cli_dir.join("master.key")).unwrap(),
        std::fs::read(s.data_dir().join("master.key")).unwrap(),
        "the dev master key is beside the restored data"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(cli_dir.join("master.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(!std::path::Path::new(&format!("{}.partial", cli_out.display())).exists());

    // Restore with the dev server's master key (it stays out of the
    // archive), into a fresh directory, and start a server there.
    let old_dir = s.data_dir();
    // The checkpoint key, pinned from the original server.
    let pinned_pub = {
        use base64::Engine;
        let text = std::fs::read_to_string(old_dir.join("audit/audit.pub")).unwrap();
        base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .unwrap()
    };
    let fresh = tempfile::tempdir().unwrap();
    let target = fresh.path().to_path_buf();
    let mut cfg = base_config(&target);
    cfg.master_key_path = Some(old_dir.join("master.key"));
    let report = rampart_server::restore(&cfg, &archive, &target)
        .await
        .expect("restore");
    assert!(report.files > 0 && report.store_entries > 0);
    assert!(!target.join("master.key").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for (p, _) in snapshot(&target) {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", p.display());
        }
        let mode = std::fs::metadata(target.join("audit"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }
    let audit = rampart_audit::verify_dir(&target.join("audit"), Some(&pinned_pub))
        .expect("the restored audit log verifies");
    assert!(audit.records > 0 && audit.checkpoints > 0, "{audit:?}");
    assert!(target.join("audit/HEAD").exists());
    // A second restore into the same, now full, directory is refused.
    let again = rampart_server::restore(&cfg, &archive, &target).await;
    assert!(matches!(
        again,
        Err(rampart_server::RestoreError::NotEmpty(_))
    ));
    let old = s.stop().await;

    // The operator of a dev server puts its master key back beside the data.
    std::fs::copy(old.path().join("master.key"), target.join("master.key")).unwrap();
    let s2 = start_in(fresh, |_| {}).await;

    let vault = vault_token(&s2, KEY_ACME).await;
    for (path, value) in [("billing/prod/db", "pw-1"), ("web/prod/api", "pw-2")] {
        let r = vault
            .call("GET", &format!("/v1/secret/data/{path}"), None)
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.error());
        assert_eq!(r.body["data"]["data"]["value"], value);
    }
    let r = s2
        .admin(&made_key)
        .call("GET", "/v1/auth/whoami", None)
        .await
        .unwrap();
    assert_eq!(
        r.status,
        200,
        "the key made through the API works: {}",
        r.error()
    );

    // Every message acknowledged before the backup began, in order, once.
    let c = s2.client(Transport::Tcp, KEY_ACME).await;
    let mut sub = c
        .subscribe_from("acme", "prod", "ledger", StartAt::Earliest)
        .await
        .unwrap();
    for i in 0..before {
        let e = next_event(&mut sub, 15).await;
        assert_eq!(e.seq, i);
        assert_eq!(&e.payload[..], format!("m{i}").as_bytes());
    }
    // The restored stream takes new messages after what it holds.
    c.publish("acme", "prod", "ledger", "after").await.unwrap();

    let dir = s2.stop().await;
    rampart_audit::verify_dir(&dir.path().join("audit"), Some(&pinned_pub))
        .expect("the audit log still verifies after the restored server wrote to it");
}
