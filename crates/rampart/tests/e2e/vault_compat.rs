//! The Vault-compatible HTTP API against real Vault clients: the Python
//! `hvac` client and the `bao` CLI, both installed by
//! `scripts/openbao-dev.sh` (which `.ci/run` runs). Skipped, saying so, when
//! they are not there.

use std::process::Command;

use crate::common::*;

struct Peers {
    python: String,
    bao: String,
}

fn peers() -> Option<Peers> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    Some(Peers {
        python: var("RAMPART_TEST_PEER_PYTHON")?,
        bao: var("RAMPART_TEST_BAO_BIN")?,
    })
}

fn https(s: &TestServer) -> String {
    format!("https://{}", s.server.http_addr().expect("https"))
}

/// Runs a Python script with hvac; it must print `ok` last.
async fn hvac(p: &Peers, s: &TestServer, script: &str) {
    let out = {
        let (python, url, ca) = (p.python.clone(), https(s), s.ca.clone());
        let script = format!(
            "import hvac, json, sys\nc = hvac.Client(url={url:?}, verify={ca:?})\n{script}\nprint('ok')\n",
            ca = ca.display().to_string()
        );
        tokio::task::spawn_blocking(move || Command::new(python).arg("-c").arg(script).output())
            .await
            .unwrap()
            .unwrap()
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("ok"),
        "hvac script failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sys_endpoints_answer_hvac_and_bao() {
    let Some(p) = peers() else {
        eprintln!(
            "sys_endpoints_answer_hvac_and_bao skipped: no hvac/bao (run scripts/openbao-dev.sh)"
        );
        return;
    };
    let s = start().await;
    hvac(
        &p,
        &s,
        r#"
assert c.sys.is_initialized() is True
assert c.sys.is_sealed() is False
h = c.sys.read_health_status(method='GET')
assert h['initialized'] is True and h['sealed'] is False and h['standby'] is False, h
r = c.sys.read_health_status(method='HEAD')
assert r.status_code == 200, r.status_code
assert r.headers['Content-Type'] == 'application/json', r.headers
st = c.sys.read_seal_status()
assert st['sealed'] is False and st['initialized'] is True, st
assert c.sys.read_leader_status()['is_self'] is True
"#,
    )
    .await;
    // Vault's status-code parameters.
    let admin = reqwest_like_get(&s, "/v1/sys/health?activecode=299").await;
    assert_eq!(admin, 299);
    let bad = reqwest_like_get(&s, "/v1/sys/health?activecode=9999").await;
    assert_eq!(bad, 400);

    let out = {
        let (bao, url, ca) = (p.bao.clone(), https(&s), s.ca.clone());
        tokio::task::spawn_blocking(move || {
            Command::new(bao)
                .arg("status")
                .env("BAO_ADDR", url)
                .env("BAO_CACERT", ca)
                .env_remove("BAO_TOKEN")
                .output()
        })
        .await
        .unwrap()
        .unwrap()
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bao status: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("Sealed") && text.contains("false"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_self_service_with_hvac() {
    let Some(p) = peers() else {
        eprintln!("token_self_service_with_hvac skipped: no hvac (run scripts/openbao-dev.sh)");
        return;
    };
    let s = start_with(|c| {
        c.token_ttl_secs = 60;
        c.token_max_ttl_secs = 600;
    })
    .await;
    hvac(
        &p,
        &s,
        &format!(
            r#"
# A bad token: is_authenticated answers False (Vault answers 403).
c.token = 'rt1.not-a-token'
assert c.is_authenticated() is False
c.token = None
r = c.adapter.post('/v1/auth', json={{'api_key': {key:?}}})
auth = r['auth']
assert auth['lease_duration'] <= 60 and auth['policies'], auth
c.token = auth['client_token']
assert c.is_authenticated() is True
me = c.auth.token.lookup_self()['data']
assert me['id'] == c.token and me['renewable'] is True and me['ttl'] <= 60, me
assert me['meta']['tenant'] == 'acme', me
ren = c.auth.token.renew_self(increment='5m')['auth']
assert 240 < ren['lease_duration'] <= 300, ren
assert c.auth.token.lookup_self()['data']['ttl'] > 240
# Never past the maximum from issue.
ren = c.auth.token.renew_self(increment='2h')['auth']
assert ren['lease_duration'] <= 600 and ren['renewable'] is False, ren
c.auth.token.revoke_self()
assert c.is_authenticated() is False
# The mount preflight the CLIs make.
c.token = c.adapter.post('/v1/auth', json={{'api_key': {key:?}}})['auth']['client_token']
m = c.adapter.get('/v1/sys/internal/ui/mounts/secret/app/env/db')['data']
assert m['type'] == 'kv' and m['options']['version'] == '2', m
"#,
            key = KEY_ACME
        ),
    )
    .await;
}

/// The status code of an unauthenticated GET over the HTTPS API.
async fn reqwest_like_get(s: &TestServer, path: &str) -> u16 {
    s.admin("unused")
        .call("GET", path, None)
        .await
        .unwrap()
        .status
}
