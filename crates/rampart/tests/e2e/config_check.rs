//! `rampart config check` as a built binary: a valid file prints its
//! configuration with no credential in it and creates nothing; a misspelled
//! key is refused with the nearest valid one, by `rampart server` too; the
//! deployment example passes with warnings for the files this machine
//! lacks.

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_rampart");

/// Runs the binary with only the environment given (none of the caller's
/// `RAMPART_*` variables).
fn rampart(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    out.sort();
    out
}

#[test]
fn config_check_prints_the_configuration_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let hash = "9f2c4be1d07a5e3c8b6f1a0d2e4c6b8a9f2c4be1d07a5e3c8b6f1a0d2e4c6b8a";
    let data = dir.path().join("data");
    let cert = dir.path().join("server.crt");
    std::fs::write(&cert, "not read").unwrap();
    let file = dir.path().join("rampart.toml");
    std::fs::write(
        &file,
        format!(
            "data_dir = {data:?}\n\
             quic_bind = \"127.0.0.1:0\"\n\
             tls_cert_path = {cert:?}\n\
             tls_key_path = {key:?}\n\
             master_key_path = {master:?}\n\
             tenants = [\"acme\"]\n\
             allowed_api_keys = [\"acme:hmac-sha256:{hash}\"]\n\
             vault_transit_address = \"https://ops:hunter2-canary@transit.example:8200\"\n\
             [tenant_limits]\n\
             publish_msgs_per_sec = 5000\n",
            data = data.display().to_string(),
            cert = cert.display().to_string(),
            key = dir.path().join("server.key").display().to_string(),
            master = dir.path().join("master.key").display().to_string(),
        ),
    )
    .unwrap();
    let before = files_under(dir.path());

    let out = rampart(
        &["config", "check", file.to_str().unwrap()],
        &[("RAMPART_TCP_BIND", "127.0.0.1:9401")],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    // No credential, whole or in part.
    assert!(
        !stdout.contains(hash) && !stdout.contains(&hash[..16]),
        "{stdout}"
    );
    assert!(!stderr.contains(hash), "{stderr}");
    assert!(!stdout.contains("hunter2-canary"), "{stdout}");
    assert!(
        stdout.contains("allowed_api_keys = [\"<redacted>\"]"),
        "{stdout}"
    );
    // The values in force: the file, the environment over it, defaults.
    let printed: toml::Table = stdout.parse().expect("the output is TOML");
    assert_eq!(printed["quic_bind"].as_str(), Some("127.0.0.1:0"));
    assert_eq!(printed["tcp_bind"].as_str(), Some("127.0.0.1:9401"));
    assert_eq!(printed["http_bind"].as_str(), Some("127.0.0.1:7402"));
    assert_eq!(
        printed["tenant_limits"]["publish_msgs_per_sec"].as_integer(),
        Some(5000)
    );
    // Missing files are warnings naming their key; the file that is there
    // is not one.
    assert!(stderr.contains("warning: `tls_key_path`: "), "{stderr}");
    assert!(stderr.contains("warning: `master_key_path`: "), "{stderr}");
    assert!(!stderr.contains("`tls_cert_path`"), "{stderr}");
    assert!(stderr.contains("valid"), "{stderr}");
    // Nothing was created: no data directory, no key.
    assert_eq!(files_under(dir.path()), before);
    assert!(!data.exists());

    // The same through --config, and through RAMPART_CONFIG.
    let out = rampart(
        &["config", "check", "--config", file.to_str().unwrap()],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains(hash));
    let out = rampart(
        &["config", "check"],
        &[("RAMPART_CONFIG", file.to_str().unwrap())],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("127.0.0.1:0"));
}

#[test]
fn config_check_refuses_a_misspelled_key_with_a_suggestion() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rampart.toml");
    std::fs::write(&file, "quic_bnd = \"127.0.0.1:7400\"\n").unwrap();
    let path = file.to_str().unwrap();
    let out = rampart(&["config", "check", path], &[]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("unknown key `quic_bnd`; did you mean `quic_bind`?"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));

    // `rampart server` loads the same way, so it says the same, before it
    // binds or creates anything.
    let out = rampart(
        &[
            "server",
            "--config",
            path,
            "--data-dir",
            dir.path().join("data").to_str().unwrap(),
        ],
        &[],
    );
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("unknown key `quic_bnd`; did you mean `quic_bind`?"),
        "{stderr}"
    );
    assert!(!dir.path().join("data").exists());

    // Inside an array of tables, the key is named by its path.
    std::fs::write(
        &file,
        "[[jwt_issuers]]\nissuer = \"https://idp.example\"\naudiencs = [\"rampart\"]\n",
    )
    .unwrap();
    let out = rampart(&["config", "check", path], &[]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("unknown key `jwt_issuers[0].audiencs`; did you mean `audiences`?"),
        "{stderr}"
    );

    // A bad value names its key; so does a bad environment variable.
    std::fs::write(&file, "max_frame_size = 1\n").unwrap();
    let out = rampart(&["config", "check", path], &[]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("`max_frame_size`"),
        "{}",
        text(&out.stderr)
    );
    std::fs::write(&file, "").unwrap();
    let out = rampart(
        &["config", "check", path],
        &[("RAMPART_AUTH_TIMEOUT_MS", "soon")],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("RAMPART_AUTH_TIMEOUT_MS"),
        "{}",
        text(&out.stderr)
    );
}

/// What `scripts/check-deploy.sh` runs with RAMPART_BIN set: the example
/// names /etc/rampart files that are not here, which are warnings.
#[test]
fn config_check_accepts_the_deploy_example_with_warnings() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/systemd/rampart.toml"
    );
    let out = rampart(&["config", "check", example], &[]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for key in ["tls_cert_path", "tls_key_path", "master_key_path"] {
        if !Path::new("/etc/rampart").exists() {
            assert!(stderr.contains(&format!("warning: `{key}`")), "{stderr}");
        }
    }
    let printed: toml::Table = text(&out.stdout).parse().expect("TOML");
    assert_eq!(printed["data_dir"].as_str(), Some("/var/lib/rampart"));
    assert_eq!(printed["operator_tenant"].as_str(), Some("ops"));
}
