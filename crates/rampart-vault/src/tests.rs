//! The vault over a real redb store: KV v2 behaviour end to end, tenant
//! isolation, sealing, and AppRole.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use rampart_identity::{Pepper, Secret};
use rampart_proto::TenantId;
use rampart_store::{KvStore, Op, RedbStore, Sealer, StoreError, Table};
use serde_json::{json, Value};

use crate::*;

/// A toy sealer: XOR with a byte and a check byte bound to tenant, table
/// and key, as in rampart-store's tests. The real one (AES-GCM) lives in
/// rampart-keys; here we test what the vault does around it.
#[derive(Debug)]
struct Toy {
    xor: u8,
}

fn tag(tenant: &str, table: Table, key: &str) -> u8 {
    format!("{tenant}|{}|{key}", table.name())
        .bytes()
        .fold(7u8, |a, b| a.wrapping_mul(31).wrapping_add(b))
}

impl Sealer for Toy {
    fn seal(&self, tenant: &str, table: Table, key: &str, p: &[u8]) -> Result<Vec<u8>, StoreError> {
        let mut v: Vec<u8> = p.iter().map(|b| b ^ self.xor).collect();
        v.push(tag(tenant, table, key));
        Ok(v)
    }
    fn open(&self, tenant: &str, table: Table, key: &str, s: &[u8]) -> Result<Vec<u8>, StoreError> {
        let (last, body) = s.split_last().ok_or_else(|| StoreError("empty".into()))?;
        if *last != tag(tenant, table, key) {
            return Err(StoreError("does not open".into()));
        }
        Ok(body.iter().map(|b| b ^ self.xor).collect())
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    file: PathBuf,
    kv: Arc<dyn KvStore>,
    vault: Vault,
}

/// `xor = 0x5a` seals; `xor = 0` leaves the plaintext visible in the file,
/// for tests that look for what must never be stored at all.
fn fixture_with(xor: u8) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state.redb");
    let kv: Arc<dyn KvStore> = Arc::new(RedbStore::open(&file).unwrap());
    let vault = Vault::new(
        kv.clone(),
        Arc::new(Toy { xor }),
        Pepper::from_bytes(&[42u8; 32]),
    );
    Fixture {
        _dir: dir,
        file,
        kv,
        vault,
    }
}

fn fixture() -> Fixture {
    fixture_with(0x5a)
}

fn t(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

fn p(s: &str) -> SecretPath {
    SecretPath::parse(s).unwrap()
}

fn data(v: Value) -> Secret<SecretData> {
    match v {
        Value::Object(m) => Secret::new(SecretData::new(m)),
        _ => unreachable!("test data must be an object"),
    }
}

fn value(v: &SecretVersion) -> Option<Value> {
    v.data
        .as_ref()
        .map(|d| Value::Object(d.expose().as_map().clone()))
}

fn custom(change: CustomMetadataChange) -> MetadataUpdate {
    MetadataUpdate {
        custom_metadata: Some(change),
        ..Default::default()
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

// === KV v2 ===

#[test]
fn write_read_versions_and_metadata() {
    let f = fixture();
    let (acme, path) = (t("acme"), p("billing/prod/db/password"));
    for i in 1..=3u64 {
        let info = f
            .vault
            .write(&acme, &path, &data(json!({ "v": i })), None, 100 * i)
            .unwrap();
        assert_eq!(info.version, i);
    }
    assert_eq!(
        value(&f.vault.read(&acme, &path, None, 1000).unwrap()),
        Some(json!({"v": 3}))
    );
    assert_eq!(
        value(&f.vault.read(&acme, &path, Some(1), 1000).unwrap()),
        Some(json!({"v": 1}))
    );
    assert_eq!(
        f.vault.read(&acme, &path, Some(9), 1000).unwrap_err(),
        VaultError::VersionNotFound
    );
    assert_eq!(
        f.vault
            .read(&acme, &p("billing/prod/nope"), None, 1000)
            .unwrap_err(),
        VaultError::NotFound
    );
    let m = f.vault.read_metadata(&acme, &path).unwrap();
    assert_eq!(m.current_version, 3);
    assert_eq!(m.oldest_version, 0);
    assert_eq!((m.created_ms, m.updated_ms), (100, 300));
    assert_eq!(m.versions.len(), 3);
    assert_eq!(m.versions[&2].created_ms, 200);
}

#[test]
fn check_and_set_and_cas_required() {
    let f = fixture();
    let (acme, path) = (t("acme"), p("a/e/k"));
    f.vault
        .write(&acme, &path, &data(json!({"a": 1})), Some(0), 1)
        .unwrap();
    assert_eq!(
        f.vault
            .write(&acme, &path, &data(json!({"a": 2})), Some(0), 2)
            .unwrap_err(),
        VaultError::CasMismatch {
            expected: 0,
            current: 1
        }
    );
    assert_eq!(
        f.vault
            .write(&acme, &path, &data(json!({"a": 2})), Some(5), 2)
            .unwrap_err(),
        VaultError::CasMismatch {
            expected: 5,
            current: 1
        }
    );
    let u = MetadataUpdate {
        cas_required: Some(true),
        ..Default::default()
    };
    f.vault.write_metadata(&acme, &path, u, 3).unwrap();
    assert_eq!(
        f.vault
            .write(&acme, &path, &data(json!({"a": 2})), None, 4)
            .unwrap_err(),
        VaultError::CasRequired
    );
    assert_eq!(
        f.vault
            .write(&acme, &path, &data(json!({"a": 2})), Some(1), 5)
            .unwrap()
            .version,
        2
    );
    // A failed cas on a missing secret creates nothing.
    let missing = p("a/e/missing");
    assert!(f
        .vault
        .write(&acme, &missing, &data(json!({})), Some(3), 6)
        .is_err());
    assert_eq!(
        f.vault.read_metadata(&acme, &missing).unwrap_err(),
        VaultError::NotFound
    );
}

#[test]
fn max_versions_trims_the_oldest() {
    let f = fixture();
    let (acme, path) = (t("acme"), p("a/e/k"));
    let u = MetadataUpdate {
        max_versions: Some(2),
        ..Default::default()
    };
    let m = f.vault.write_metadata(&acme, &path, u, 1).unwrap();
    assert_eq!((m.current_version, m.max_versions), (0, 2));
    for i in 1..=4u64 {
        f.vault
            .write(&acme, &path, &data(json!({ "i": i })), None, i)
            .unwrap();
    }
    let m = f.vault.read_metadata(&acme, &path).unwrap();
    assert_eq!(m.oldest_version, 3);
    assert_eq!(m.versions.keys().copied().collect::<Vec<_>>(), vec![3, 4]);
    assert_eq!(
        f.vault.read(&acme, &path, Some(2), 9).unwrap_err(),
        VaultError::VersionNotFound
    );
}

#[test]
fn soft_delete_undelete_and_destroy() {
    let f = fixture_with(0);
    let (acme, path) = (t("acme"), p("a/e/k"));
    for i in 1..=3u64 {
        f.vault
            .write(
                &acme,
                &path,
                &data(json!({ "canary": format!("CANARY-{i}") })),
                None,
                i,
            )
            .unwrap();
    }
    f.vault.delete_latest(&acme, &path, 10).unwrap();
    let v = f.vault.read(&acme, &path, None, 11).unwrap();
    assert!(v.data.is_none());
    assert_eq!((v.info.version, v.info.meta.deletion_ms), (3, Some(10)));
    f.vault
        .change_versions(VersionOp::Delete, &acme, &path, &[1], 12)
        .unwrap();
    assert!(f
        .vault
        .read(&acme, &path, Some(1), 13)
        .unwrap()
        .data
        .is_none());
    assert!(f
        .vault
        .read(&acme, &path, Some(2), 13)
        .unwrap()
        .data
        .is_some());
    f.vault
        .change_versions(VersionOp::Undelete, &acme, &path, &[1, 3], 14)
        .unwrap();
    assert_eq!(
        value(&f.vault.read(&acme, &path, None, 15).unwrap()),
        Some(json!({"canary": "CANARY-3"}))
    );
    assert!(f
        .vault
        .read(&acme, &path, Some(1), 15)
        .unwrap()
        .data
        .is_some());

    f.vault
        .change_versions(VersionOp::Destroy, &acme, &path, &[2], 16)
        .unwrap();
    let v2 = f.vault.read(&acme, &path, Some(2), 17).unwrap();
    assert!(v2.data.is_none() && v2.info.meta.destroyed);
    f.vault
        .change_versions(VersionOp::Undelete, &acme, &path, &[2], 18)
        .unwrap();
    assert!(f
        .vault
        .read(&acme, &path, Some(2), 19)
        .unwrap()
        .data
        .is_none());
    assert!(f.vault.read_metadata(&acme, &path).unwrap().versions[&2].destroyed);
    // Gone from the stored record (this sealer leaves plaintext visible).
    let raw = f.kv.get(Table::Secrets, "acme/a/e/k").unwrap().unwrap();
    assert!(contains(&raw, b"CANARY-1") && !contains(&raw, b"CANARY-2"));

    assert_eq!(
        f.vault
            .change_versions(VersionOp::Delete, &acme, &path, &[], 20)
            .unwrap_err(),
        VaultError::InvalidInput("no version number provided".into())
    );
    assert_eq!(
        f.vault
            .delete_latest(&acme, &p("a/e/none"), 20)
            .unwrap_err(),
        VaultError::NotFound
    );
}

#[test]
fn metadata_write_patch_and_delete() {
    let f = fixture();
    let (acme, path) = (t("acme"), p("a/e/k"));
    assert_eq!(
        f.vault
            .patch_metadata(&acme, &path, MetadataUpdate::default(), 1)
            .unwrap_err(),
        VaultError::NotFound
    );
    let u = MetadataUpdate {
        custom_metadata: Some(CustomMetadataChange::Replace(
            [("owner".to_string(), "team-a".to_string())].into(),
        )),
        delete_version_after: Some(Duration::from_secs(3600)),
        ..Default::default()
    };
    let m = f.vault.write_metadata(&acme, &path, u, 1).unwrap();
    assert_eq!(m.custom_metadata["owner"], "team-a");
    assert_eq!(m.delete_version_after, Duration::from_secs(3600));

    let too_long = custom(CustomMetadataChange::Replace(
        [(
            "k".to_string(),
            "v".repeat(MAX_CUSTOM_METADATA_VALUE_LEN + 1),
        )]
        .into(),
    ));
    assert!(matches!(
        f.vault
            .write_metadata(&acme, &path, too_long, 2)
            .unwrap_err(),
        VaultError::InvalidInput(_)
    ));
    let too_many: std::collections::BTreeMap<String, String> = (0..=MAX_CUSTOM_METADATA_KEYS)
        .map(|i| (format!("k{i}"), "v".to_string()))
        .collect();
    let u = custom(CustomMetadataChange::Replace(too_many));
    assert!(f.vault.write_metadata(&acme, &path, u, 2).is_err());

    let u = custom(CustomMetadataChange::Merge(
        [
            ("owner".to_string(), None),
            ("tier".to_string(), Some("1".to_string())),
        ]
        .into(),
    ));
    let m = f.vault.patch_metadata(&acme, &path, u, 3).unwrap();
    assert_eq!(
        m.custom_metadata.into_iter().collect::<Vec<_>>(),
        vec![("tier".to_string(), "1".to_string())]
    );
    assert_eq!(
        m.delete_version_after,
        Duration::from_secs(3600),
        "untouched"
    );

    let info = f
        .vault
        .write(&acme, &path, &data(json!({"a": 1})), None, 10)
        .unwrap();
    assert_eq!(info.custom_metadata["tier"], "1");
    assert_eq!(info.meta.deletion_ms, Some(10 + 3_600_000));

    f.vault.delete_metadata(&acme, &path).unwrap();
    assert_eq!(
        f.vault.read(&acme, &path, Some(1), 11).unwrap_err(),
        VaultError::NotFound
    );
    assert_eq!(
        f.vault.read_metadata(&acme, &path).unwrap_err(),
        VaultError::NotFound
    );
    assert!(f.kv.scan(Table::Secrets, "").unwrap().is_empty());
    assert_eq!(
        f.vault.delete_metadata(&acme, &path).unwrap_err(),
        VaultError::NotFound
    );
    // A new write starts again at version 1.
    assert_eq!(
        f.vault
            .write(&acme, &path, &data(json!({})), None, 12)
            .unwrap()
            .version,
        1
    );
}

#[test]
fn list_direct_children_with_folders() {
    let f = fixture();
    let acme = t("acme");
    for s in [
        "web/prod/db/password",
        "web/prod/db/user",
        "web/prod/db/replica/password",
        "web/prod/api-key",
        "web/prod/db",
        "web/staging/api-key",
        "worker/prod/token",
    ] {
        f.vault
            .write(&acme, &p(s), &data(json!({})), None, 1)
            .unwrap();
    }
    let ls = |prefix: &str| {
        f.vault
            .list(&acme, &SecretPrefix::parse(prefix).unwrap())
            .unwrap()
    };
    assert_eq!(ls(""), vec!["web/", "worker/"]);
    assert_eq!(ls("web"), vec!["prod/", "staging/"]);
    assert_eq!(ls("web/prod/"), vec!["api-key", "db", "db/"]);
    assert_eq!(ls("web/prod/db"), vec!["password", "replica/", "user"]);
    assert!(ls("web/prod/nothing").is_empty());
    // `web/prod/d` is not a folder of `web/prod/db/...`.
    assert!(ls("web/prod/d").is_empty());
}

#[test]
fn patch_merges_with_cas() {
    let f = fixture();
    let (acme, path) = (t("acme"), p("a/e/k"));
    assert_eq!(
        f.vault
            .patch(&acme, &path, &data(json!({"x": 1})), None, 1)
            .unwrap_err(),
        VaultError::NotFound
    );
    f.vault
        .write(
            &acme,
            &path,
            &data(json!({"user": "u", "pass": "p", "tmp": 1})),
            None,
            1,
        )
        .unwrap();
    let info = f
        .vault
        .patch(
            &acme,
            &path,
            &data(json!({"pass": "q", "tmp": null})),
            Some(1),
            2,
        )
        .unwrap();
    assert_eq!(info.version, 2);
    assert_eq!(
        value(&f.vault.read(&acme, &path, None, 3).unwrap()),
        Some(json!({"user": "u", "pass": "q"}))
    );
    assert_eq!(
        f.vault
            .patch(&acme, &path, &data(json!({"pass": "r"})), Some(1), 4)
            .unwrap_err(),
        VaultError::CasMismatch {
            expected: 1,
            current: 2
        }
    );
}

#[test]
fn tenants_are_isolated() {
    let f = fixture();
    let (acme, globex) = (t("acme"), t("globex"));
    let path = p("app/prod/key");
    f.vault
        .write(&acme, &path, &data(json!({"who": "acme"})), None, 1)
        .unwrap();
    assert_eq!(
        f.vault.read(&globex, &path, None, 2).unwrap_err(),
        VaultError::NotFound
    );
    f.vault
        .write(&globex, &path, &data(json!({"who": "globex"})), None, 2)
        .unwrap();
    f.vault
        .write(&globex, &path, &data(json!({"who": "globex2"})), None, 3)
        .unwrap();
    assert_eq!(
        value(&f.vault.read(&acme, &path, None, 4).unwrap()),
        Some(json!({"who": "acme"}))
    );
    assert_eq!(
        f.vault.read_metadata(&acme, &path).unwrap().current_version,
        1
    );
    // A tenant whose name extends another's: listing never crosses.
    let acme2 = t("acme2");
    f.vault
        .write(&acme2, &p("other/prod/key"), &data(json!({})), None, 5)
        .unwrap();
    assert_eq!(
        f.vault.list(&acme, &SecretPrefix::root()).unwrap(),
        vec!["app/"]
    );
    assert_eq!(
        f.vault.list(&acme2, &SecretPrefix::root()).unwrap(),
        vec!["other/"]
    );
    f.vault.delete_metadata(&globex, &path).unwrap();
    assert!(f.vault.read(&acme, &path, None, 6).is_ok());
}

#[test]
fn records_are_sealed_and_bound_to_their_key() {
    let f = fixture();
    let acme = t("acme");
    f.vault
        .write(
            &acme,
            &p("a/e/k"),
            &data(json!({"pw": "CANARY-SEALED"})),
            None,
            1,
        )
        .unwrap();
    let raw = f.kv.get(Table::Secrets, "acme/a/e/k").unwrap().unwrap();
    assert!(raw.starts_with(b"rsv1"));
    assert!(!contains(&raw, b"CANARY-SEALED"));
    let file = std::fs::read(&f.file).unwrap();
    assert!(!contains(&file, b"CANARY-SEALED"));

    // Copied under another path of the same tenant: does not open.
    f.kv.apply(vec![Op::Put(
        Table::Secrets,
        "acme/a/e/copy".into(),
        raw.clone(),
    )])
    .unwrap();
    assert!(matches!(
        f.vault.read(&acme, &p("a/e/copy"), None, 2).unwrap_err(),
        VaultError::Storage(_)
    ));
    // Copied into another tenant at the same path: refused too.
    f.kv.apply(vec![Op::Put(
        Table::Secrets,
        "globex/a/e/k".into(),
        raw.clone(),
    )])
    .unwrap();
    assert!(matches!(
        f.vault
            .read(&t("globex"), &p("a/e/k"), None, 2)
            .unwrap_err(),
        VaultError::Storage(_)
    ));
    // Relabelled for that tenant too: the sealer's binding refuses it.
    let mut relabelled = b"rsv1".to_vec();
    relabelled.push(6);
    relabelled.extend_from_slice(b"globex");
    relabelled.extend_from_slice(&raw[4 + 1 + 4..]);
    f.kv.apply(vec![Op::Put(
        Table::Secrets,
        "globex/a/e/k".into(),
        relabelled,
    )])
    .unwrap();
    assert!(matches!(
        f.vault
            .read(&t("globex"), &p("a/e/k"), None, 2)
            .unwrap_err(),
        VaultError::Storage(_)
    ));
    // A record in the clear: refused.
    f.kv.apply(vec![Op::Put(
        Table::Secrets,
        "acme/a/e/clear".into(),
        b"{}".to_vec(),
    )])
    .unwrap();
    assert!(f.vault.read(&acme, &p("a/e/clear"), None, 2).is_err());
}

#[test]
fn secret_data_debug_is_redacted() {
    let f = fixture();
    let acme = t("acme");
    let d = data(json!({"password": "CANARY-DEBUG"}));
    assert!(!format!("{d:?}").contains("CANARY"));
    f.vault.write(&acme, &p("a/e/k"), &d, None, 1).unwrap();
    let v = f.vault.read(&acme, &p("a/e/k"), None, 2).unwrap();
    let printed = format!("{v:?}");
    assert!(!printed.contains("CANARY"), "{printed}");
    assert!(printed.contains("[redacted]"));
}

#[test]
fn reseal_and_erase_a_tenant() {
    let f = fixture();
    let (acme, globex) = (t("acme"), t("globex"));
    f.vault
        .write(&acme, &p("a/e/k"), &data(json!({"a": 1})), None, 1)
        .unwrap();
    f.vault
        .write(&globex, &p("a/e/k"), &data(json!({"g": 1})), None, 1)
        .unwrap();
    let role = RoleName::parse("ci").unwrap();
    let rec = f
        .vault
        .create_role(&acme, RoleSpec::new(role.clone()), 1)
        .unwrap();
    let (sid, _) = f.vault.generate_secret_id(&acme, &role, 1).unwrap();
    assert_eq!(f.vault.reseal_tenant(&acme).unwrap(), 3);
    assert!(f
        .vault
        .read(&acme, &p("a/e/k"), None, 2)
        .unwrap()
        .data
        .is_some());
    assert_eq!(
        f.vault.erase_tenant(&acme).unwrap(),
        4,
        "secret, role, secret id, index"
    );
    assert_eq!(
        f.vault.read(&acme, &p("a/e/k"), None, 2).unwrap_err(),
        VaultError::NotFound
    );
    assert_eq!(
        f.vault.login(&rec.role_id, &sid, None, 3).unwrap_err(),
        VaultError::LoginDenied
    );
    assert!(f
        .vault
        .read(&globex, &p("a/e/k"), None, 2)
        .unwrap()
        .data
        .is_some());
}

// === AppRole ===

const HOUR_MS: u64 = 3_600_000;

fn role_fixture(spec: impl FnOnce(&mut RoleSpec)) -> (Fixture, TenantId, RoleName, RoleRecord) {
    let f = fixture();
    let acme = t("acme");
    let name = RoleName::parse("deployer").unwrap();
    let mut s = RoleSpec::new(name.clone());
    s.roles = vec!["user".into()];
    s.token_ttl = Duration::from_secs(600);
    s.token_max_ttl = Duration::from_secs(3600);
    spec(&mut s);
    let rec = f.vault.create_role(&acme, s, 1).unwrap();
    (f, acme, name, rec)
}

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().unwrap())
}

#[test]
fn approle_login_ok_and_wrong_secret_id() {
    let (f, acme, name, rec) = role_fixture(|_| {});
    assert_eq!(rec.role_id.len(), 36);
    let (sid, meta) = f.vault.generate_secret_id(&acme, &name, 10).unwrap();
    assert_eq!(sid.expose().len(), 64);
    assert_eq!((meta.expires_ms, meta.uses_left), (None, None));
    let login = f.vault.login(&rec.role_id, &sid, None, 20).unwrap();
    assert_eq!(login.tenant, acme);
    assert_eq!(login.role, name);
    assert_eq!(login.roles, vec!["user".to_string()]);
    assert_eq!(login.token_ttl, Duration::from_secs(600));
    assert_eq!(login.token_max_ttl, Duration::from_secs(3600));
    assert_eq!(login.secret_id_accessor, meta.accessor);
    // Unlimited uses: again.
    assert!(f.vault.login(&rec.role_id, &sid, None, 21).is_ok());

    let wrong = Secret::new("0".repeat(64));
    assert_eq!(
        f.vault.login(&rec.role_id, &wrong, None, 22).unwrap_err(),
        VaultError::LoginDenied
    );
    assert_eq!(
        f.vault
            .login("00000000-0000-4000-8000-000000000000", &sid, None, 22)
            .unwrap_err(),
        VaultError::LoginDenied
    );
    assert_eq!(
        f.vault.login("", &sid, None, 22).unwrap_err(),
        VaultError::LoginDenied
    );
    // A secret id of another role does not work for this one.
    let mut other = RoleSpec::new(RoleName::parse("other").unwrap());
    other.roles = vec!["admin".into()];
    let other_rec = f.vault.create_role(&acme, other, 30).unwrap();
    assert_ne!(other_rec.role_id, rec.role_id);
    assert_eq!(
        f.vault
            .login(&other_rec.role_id, &sid, None, 31)
            .unwrap_err(),
        VaultError::LoginDenied
    );
    assert_eq!(
        f.vault.list_roles(&acme).unwrap(),
        vec![name.clone(), RoleName::parse("other").unwrap()]
    );
    assert!(f.vault.list_roles(&t("globex")).unwrap().is_empty());
}

#[test]
fn approle_expired_secret_id() {
    let (f, acme, name, rec) = role_fixture(|s| s.secret_id_ttl = Some(Duration::from_secs(3600)));
    let (sid, meta) = f.vault.generate_secret_id(&acme, &name, 1000).unwrap();
    assert_eq!(meta.expires_ms, Some(1000 + HOUR_MS));
    assert!(f
        .vault
        .login(&rec.role_id, &sid, None, 1000 + HOUR_MS - 1)
        .is_ok());
    assert_eq!(
        f.vault
            .login(&rec.role_id, &sid, None, 1000 + HOUR_MS)
            .unwrap_err(),
        VaultError::LoginDenied
    );
    // Tidied away once seen expired.
    assert!(f.vault.list_secret_ids(&acme, &name).unwrap().is_empty());
}

#[test]
fn approle_uses_are_counted_then_the_secret_id_is_gone() {
    let (f, acme, name, rec) = role_fixture(|s| s.secret_id_num_uses = 2);
    let (sid, meta) = f.vault.generate_secret_id(&acme, &name, 1).unwrap();
    assert_eq!(meta.uses_left, Some(2));
    f.vault.login(&rec.role_id, &sid, None, 2).unwrap();
    assert_eq!(
        f.vault.list_secret_ids(&acme, &name).unwrap()[0].uses_left,
        Some(1)
    );
    f.vault.login(&rec.role_id, &sid, None, 3).unwrap();
    assert!(f.vault.list_secret_ids(&acme, &name).unwrap().is_empty());
    assert_eq!(
        f.vault.login(&rec.role_id, &sid, None, 4).unwrap_err(),
        VaultError::LoginDenied
    );
}

#[test]
fn try_login_answers_only_what_needs_no_commit() {
    let (f, acme, name, rec) = role_fixture(|_| {});
    let (unlimited, _) = f.vault.generate_secret_id(&acme, &name, 1).unwrap();
    let login = f
        .vault
        .try_login(&rec.role_id, &unlimited, None, 2)
        .expect("an unlimited secret id needs no commit")
        .unwrap();
    assert_eq!(login.role, name);
    assert_eq!(
        f.vault
            .try_login(&rec.role_id, &Secret::new("wrong".to_string()), None, 2)
            .expect("a wrong secret id changes nothing"),
        Err(VaultError::LoginDenied)
    );
    assert_eq!(
        f.vault
            .try_login("", &unlimited, None, 2)
            .expect("an empty role id is refused at once"),
        Err(VaultError::LoginDenied)
    );

    // A counted use is a change: not answered, and nothing used up.
    let (f, acme, name, rec) = role_fixture(|s| s.secret_id_num_uses = 2);
    let (counted, _) = f.vault.generate_secret_id(&acme, &name, 1).unwrap();
    assert!(f.vault.try_login(&rec.role_id, &counted, None, 2).is_none());
    assert_eq!(
        f.vault.list_secret_ids(&acme, &name).unwrap()[0].uses_left,
        Some(2)
    );
    f.vault.login(&rec.role_id, &counted, None, 3).unwrap();
    assert_eq!(
        f.vault.list_secret_ids(&acme, &name).unwrap()[0].uses_left,
        Some(1)
    );
}

#[test]
fn approle_cidr_binding_v4_and_v6() {
    let (f, acme, name, rec) = role_fixture(|s| {
        s.secret_id_num_uses = 10;
        s.bound_cidrs = vec![
            Cidr::parse("10.0.0.0/8").unwrap(),
            Cidr::parse("2001:db8::/32").unwrap(),
        ];
    });
    let (sid, _) = f.vault.generate_secret_id(&acme, &name, 1).unwrap();
    for ok in ["10.1.2.3", "2001:db8::7", "::ffff:10.0.0.1"] {
        assert!(f.vault.login(&rec.role_id, &sid, ip(ok), 2).is_ok(), "{ok}");
    }
    for denied in [ip("192.168.0.1"), ip("2001:db9::1"), None] {
        assert_eq!(
            f.vault.login(&rec.role_id, &sid, denied, 3).unwrap_err(),
            VaultError::LoginDenied,
            "{denied:?}"
        );
    }
    // Denied attempts use nothing.
    assert_eq!(
        f.vault.list_secret_ids(&acme, &name).unwrap()[0].uses_left,
        Some(7)
    );
}

#[test]
fn approle_deleted_role_and_destroyed_secret_ids() {
    let (f, acme, name, rec) = role_fixture(|_| {});
    let (sid1, meta1) = f.vault.generate_secret_id(&acme, &name, 1).unwrap();
    let (sid2, _) = f.vault.generate_secret_id(&acme, &name, 2).unwrap();
    let (sid3, _) = f.vault.generate_secret_id(&acme, &name, 3).unwrap();
    assert_eq!(f.vault.list_secret_ids(&acme, &name).unwrap().len(), 3);
    f.vault
        .destroy_secret_id(&acme, &name, &meta1.accessor)
        .unwrap();
    assert_eq!(
        f.vault.login(&rec.role_id, &sid1, None, 4).unwrap_err(),
        VaultError::LoginDenied
    );
    assert_eq!(
        f.vault
            .destroy_secret_id(&acme, &name, &meta1.accessor)
            .unwrap_err(),
        VaultError::NotFound
    );
    f.vault
        .destroy_secret_id_value(&acme, &name, &sid2)
        .unwrap();
    assert!(f.vault.login(&rec.role_id, &sid2, None, 4).is_err());
    assert!(f.vault.login(&rec.role_id, &sid3, None, 4).is_ok());

    // Updating a role keeps its role id.
    let mut spec = RoleSpec::new(name.clone());
    spec.roles = vec!["viewer".into()];
    let updated = f.vault.create_role(&acme, spec, 5).unwrap();
    assert_eq!(updated.role_id, rec.role_id);
    assert_eq!(updated.created_ms, rec.created_ms);
    assert_eq!(
        f.vault.login(&rec.role_id, &sid3, None, 6).unwrap().roles,
        vec!["viewer"]
    );

    f.vault.delete_role(&acme, &name).unwrap();
    assert_eq!(
        f.vault.login(&rec.role_id, &sid3, None, 7).unwrap_err(),
        VaultError::LoginDenied
    );
    assert_eq!(
        f.vault.read_role(&acme, &name).unwrap_err(),
        VaultError::NotFound
    );
    assert_eq!(
        f.vault.generate_secret_id(&acme, &name, 8).unwrap_err(),
        VaultError::NotFound
    );
    // Nothing of the role is left.
    assert!(f.kv.scan(Table::Approles, "").unwrap().is_empty());
}

#[test]
fn secret_ids_are_never_stored_in_the_clear() {
    // This sealer leaves plaintext visible, so only hashing can hide the id.
    let (f, acme, name, rec) = {
        let f = fixture_with(0);
        let acme = t("acme");
        let name = RoleName::parse("r").unwrap();
        let rec = f
            .vault
            .create_role(&acme, RoleSpec::new(name.clone()), 1)
            .unwrap();
        (f, acme, name, rec)
    };
    let (sid, meta) = f.vault.generate_secret_id(&acme, &name, 1).unwrap();
    let file = std::fs::read(&f.file).unwrap();
    let id = sid.expose().as_bytes();
    let raw = hex::decode(sid.expose()).unwrap();
    assert!(!contains(&file, id), "secret id in the clear");
    assert!(!contains(&file, id.to_ascii_uppercase().as_slice()));
    assert!(!contains(&file, &raw), "secret id bytes in the clear");
    // Sanity: the scan does see what is meant to be there.
    assert!(contains(&file, meta.accessor.as_bytes()));
    // And the role id is not a key: only its hash is.
    assert!(f
        .kv
        .scan(Table::Approles, "")
        .unwrap()
        .iter()
        .all(|(k, _)| !k.contains(&rec.role_id)));
    assert!(f.vault.login(&rec.role_id, &sid, None, 2).is_ok());
}

#[test]
fn role_spec_is_checked() {
    let f = fixture();
    let mut s = RoleSpec::new(RoleName::parse("r").unwrap());
    s.token_ttl = Duration::from_secs(7200);
    s.token_max_ttl = Duration::from_secs(3600);
    assert!(matches!(
        f.vault.create_role(&t("acme"), s, 1).unwrap_err(),
        VaultError::InvalidInput(_)
    ));
    assert!(f.vault.list_roles(&t("acme")).unwrap().is_empty());
}

// === Group commit ===

/// A redb store that counts its commits, and can hold them at a gate and
/// fail the next ones, to shape the batches of the group commit.
#[derive(Debug)]
struct TestStore {
    inner: RedbStore,
    applies: AtomicU64,
    /// Commits still to fail, decided when a commit starts.
    fail_next: AtomicU64,
    hold: Mutex<bool>,
    released: Condvar,
}

impl TestStore {
    fn set_hold(&self, on: bool) {
        *self.hold.lock().unwrap() = on;
        self.released.notify_all();
    }
}

impl KvStore for TestStore {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(table, key)
    }
    fn scan(&self, table: Table, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.inner.scan(table, prefix)
    }
    fn apply(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        self.applies.fetch_add(1, Ordering::SeqCst);
        let fail = self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let mut held = self.hold.lock().unwrap();
        while *held {
            held = self.released.wait(held).unwrap();
        }
        drop(held);
        if fail {
            return Err(StoreError("injected failure".into()));
        }
        self.inner.apply(ops)
    }
}

struct Gated {
    dir: tempfile::TempDir,
    store: Arc<TestStore>,
    vault: Arc<Vault>,
}

fn gated() -> Gated {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(TestStore {
        inner: RedbStore::open(&dir.path().join("state.redb")).unwrap(),
        applies: AtomicU64::new(0),
        fail_next: AtomicU64::new(0),
        hold: Mutex::new(false),
        released: Condvar::new(),
    });
    let vault = Arc::new(Vault::new(
        store.clone(),
        Arc::new(Toy { xor: 0x5a }),
        Pepper::from_bytes(&[42u8; 32]),
    ));
    Gated { dir, store, vault }
}

impl Gated {
    fn applies(&self) -> u64 {
        self.store.applies.load(Ordering::SeqCst)
    }

    /// Starts a write on another thread.
    fn spawn_write(
        &self,
        path: &str,
        v: u64,
        cas: Option<u64>,
    ) -> thread::JoinHandle<Result<VersionInfo, VaultError>> {
        let (vault, path) = (self.vault.clone(), p(path));
        thread::spawn(move || vault.write(&t("acme"), &path, &data(json!({ "v": v })), cas, v))
    }

    /// Drops the vault and opens a new one on the same file, as after a
    /// restart.
    fn reopen(self) -> (tempfile::TempDir, Vault) {
        let Gated { dir, store, vault } = self;
        drop(vault);
        drop(store);
        let kv = Arc::new(RedbStore::open(&dir.path().join("state.redb")).unwrap());
        let vault = Vault::new(
            kv,
            Arc::new(Toy { xor: 0x5a }),
            Pepper::from_bytes(&[42u8; 32]),
        );
        (dir, vault)
    }
}

fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        thread::sleep(Duration::from_millis(1));
    }
}

fn v_of(vault: &Vault, path: &str, version: u64) -> Option<Value> {
    value(&vault.read(&t("acme"), &p(path), Some(version), 0).unwrap())
}

#[test]
fn concurrent_writes_get_consecutive_versions_and_survive_reopen() {
    const THREADS: u64 = 16;
    const EACH: u64 = 25;
    let g = gated();
    let acme = t("acme");
    // Keep every version of the shared secret, to read each one back.
    let keep = MetadataUpdate {
        max_versions: Some(1000),
        ..Default::default()
    };
    g.vault
        .write_metadata(&acme, &p("a/e/shared"), keep, 0)
        .unwrap();
    let writers: Vec<_> = (0..THREADS)
        .map(|i| {
            let vault = g.vault.clone();
            thread::spawn(move || {
                let (acme, shared, own) = (t("acme"), p("a/e/shared"), p(&format!("a/e/own{i}")));
                let mut got = Vec::new();
                for j in 0..EACH {
                    let payload = i * 1000 + j;
                    let d = data(json!({ "v": payload }));
                    let s = vault.write(&acme, &shared, &d, None, payload).unwrap();
                    let o = vault.write(&acme, &own, &d, None, payload).unwrap();
                    // One writer per own secret: its versions follow its
                    // writes exactly.
                    assert_eq!(o.version, j + 1);
                    got.push((s.version, payload));
                }
                got
            })
        })
        .collect();
    let mut shared: Vec<(u64, u64)> = writers
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    shared.sort_unstable();
    let versions: Vec<u64> = shared.iter().map(|&(v, _)| v).collect();
    assert_eq!(
        versions,
        (1..=THREADS * EACH).collect::<Vec<_>>(),
        "every write got its own version, with no gap"
    );
    let writes = THREADS * EACH * 2 + 1;
    assert!(g.applies() <= writes);
    assert_eq!(g.vault.store_commits(), g.applies());

    // Every acknowledged write is in the file.
    let (_dir, vault) = g.reopen();
    for &(version, payload) in &shared {
        assert_eq!(
            v_of(&vault, "a/e/shared", version),
            Some(json!({ "v": payload }))
        );
    }
    for i in 0..THREADS {
        let m = vault
            .read_metadata(&acme, &p(&format!("a/e/own{i}")))
            .unwrap();
        assert_eq!(m.current_version, EACH);
        assert_eq!(
            v_of(&vault, &format!("a/e/own{i}"), EACH),
            Some(json!({ "v": i * 1000 + EACH - 1 }))
        );
    }
}

#[test]
fn check_and_set_is_exact_under_concurrency() {
    const THREADS: u64 = 8;
    const EACH: u64 = 10;
    let f = fixture();
    let vault = Arc::new(f.vault);
    // Many racing creates with cas = 0: exactly one wins.
    let creates: Vec<_> = (0..THREADS)
        .map(|i| {
            let vault = vault.clone();
            thread::spawn(move || {
                vault.write(
                    &t("acme"),
                    &p("a/e/k"),
                    &data(json!({ "c": i })),
                    Some(0),
                    1,
                )
            })
        })
        .collect();
    let won = creates
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(|r| match r {
            Ok(info) => {
                assert_eq!(info.version, 1);
                true
            }
            Err(e) => {
                assert!(
                    matches!(e, VaultError::CasMismatch { expected: 0, .. }),
                    "{e}"
                );
                false
            }
        })
        .count();
    assert_eq!(won, 1);
    // Then each thread makes EACH check-and-set writes, retrying on a
    // mismatch: every success is exactly one past the version it named.
    let writers: Vec<_> = (0..THREADS)
        .map(|i| {
            let vault = vault.clone();
            thread::spawn(move || {
                let (acme, path) = (t("acme"), p("a/e/k"));
                let (mut done, mut mismatches) = (0, 0u64);
                while done < EACH {
                    let cur = vault.read_metadata(&acme, &path).unwrap().current_version;
                    match vault.write(&acme, &path, &data(json!({ "i": i })), Some(cur), 2) {
                        Ok(info) => {
                            assert_eq!(info.version, cur + 1);
                            done += 1;
                        }
                        Err(VaultError::CasMismatch { expected, current }) => {
                            assert_eq!(expected, cur);
                            assert!(current > cur, "a mismatch names a newer version");
                            mismatches += 1;
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                mismatches
            })
        })
        .collect();
    for h in writers {
        h.join().unwrap();
    }
    let m = vault.read_metadata(&t("acme"), &p("a/e/k")).unwrap();
    assert_eq!(m.current_version, 1 + THREADS * EACH);
}

#[test]
fn a_check_and_set_write_sees_the_write_staged_before_it() {
    let g = gated();
    g.spawn_write("a/e/k", 1, Some(0)).join().unwrap().unwrap();
    g.store.set_hold(true);
    let first = g.spawn_write("a/e/k", 2, Some(1));
    wait_until("the commit of version 2", || g.applies() == 2);
    // Version 2 is in flight: a writer already sees it, a reader not yet.
    let second = g.spawn_write("a/e/k", 3, Some(2));
    wait_until("version 3 to be staged", || g.vault.staged_changes() == 1);
    let m = g.vault.read_metadata(&t("acme"), &p("a/e/k")).unwrap();
    assert_eq!(m.current_version, 1, "readers see committed data only");
    // This one fails on version 3, staged: its answer waits for version 3
    // to be durable, so that it never names a version that could be lost.
    let stale = g.spawn_write("a/e/k", 4, Some(1));
    thread::sleep(Duration::from_millis(20));
    assert!(!stale.is_finished());
    g.store.set_hold(false);
    assert_eq!(first.join().unwrap().unwrap().version, 2);
    assert_eq!(second.join().unwrap().unwrap().version, 3);
    assert_eq!(
        stale.join().unwrap().unwrap_err(),
        VaultError::CasMismatch {
            expected: 1,
            current: 3
        }
    );
    assert_eq!(v_of(&g.vault, "a/e/k", 3), Some(json!({ "v": 3 })));
}

#[test]
fn concurrent_writers_share_store_commits() {
    const WRITERS: u64 = 32;
    let g = gated();
    // Shaped: while one commit is held, 31 writers stage behind it; all 31
    // go in the next commit.
    g.store.set_hold(true);
    let lead = g.spawn_write("a/e/lead", 1, None);
    wait_until("the first commit", || g.applies() == 1);
    let rest: Vec<_> = (1..WRITERS)
        .map(|i| g.spawn_write(&format!("a/e/k{}", i % 4), i, None))
        .collect();
    wait_until("every writer to stage", || {
        g.vault.staged_changes() == usize::try_from(WRITERS - 1).unwrap()
    });
    g.store.set_hold(false);
    lead.join().unwrap().unwrap();
    let mut versions: Vec<u64> = rest
        .into_iter()
        .map(|h| h.join().unwrap().unwrap().version)
        .collect();
    assert_eq!(g.applies(), 2, "{WRITERS} writes, 2 store commits");
    versions.sort_unstable();
    // Four secrets, written 8, 8, 8 and 7 times in one batch.
    assert_eq!(versions.iter().filter(|&&v| v == 1).count(), 4);
    assert_eq!(versions.iter().max(), Some(&8));

    // Unshaped: many writers, many writes; the count of commits (not any
    // timing) shows that they were shared.
    let before = g.applies();
    let writers: Vec<_> = (0..WRITERS)
        .map(|i| {
            let vault = g.vault.clone();
            thread::spawn(move || {
                for j in 0..20 {
                    vault
                        .write(
                            &t("acme"),
                            &p(&format!("a/e/u{}", i % 8)),
                            &data(json!({ "j": j })),
                            None,
                            j,
                        )
                        .unwrap();
                }
            })
        })
        .collect();
    for h in writers {
        h.join().unwrap();
    }
    let commits = g.applies() - before;
    assert!(
        commits < WRITERS * 20,
        "{commits} commits for {} writes",
        WRITERS * 20
    );
}

#[test]
fn a_failed_commit_fails_every_writer_of_its_batch_and_loses_nothing_acknowledged() {
    let g = gated();
    let acme = t("acme");
    g.spawn_write("a/e/k", 1, None).join().unwrap().unwrap();
    // The held commit will succeed; the batch behind it will fail.
    g.store.set_hold(true);
    let ok = g.spawn_write("a/e/k", 2, None);
    wait_until("the commit of version 2", || g.applies() == 2);
    g.store.fail_next.store(1, Ordering::SeqCst);
    let failing: Vec<_> = (0..8)
        .map(|i| g.spawn_write(if i % 2 == 0 { "a/e/k" } else { "a/e/other" }, 10 + i, None))
        .collect();
    wait_until("the batch to stage", || g.vault.staged_changes() == 8);
    g.store.set_hold(false);
    assert_eq!(ok.join().unwrap().unwrap().version, 2);
    for h in failing {
        assert!(matches!(h.join().unwrap(), Err(VaultError::Storage(_))));
    }
    assert_eq!(g.applies(), 3, "the failed batch was one commit");
    assert_eq!(
        g.vault.read_metadata(&acme, &p("a/e/other")).unwrap_err(),
        VaultError::NotFound
    );
    // The next write builds on what was stored, not on the lost versions.
    let next = g.spawn_write("a/e/k", 3, Some(2)).join().unwrap().unwrap();
    assert_eq!(next.version, 3);

    let (_dir, vault) = g.reopen();
    let m = vault.read_metadata(&acme, &p("a/e/k")).unwrap();
    assert_eq!(m.current_version, 3);
    for v in 1..=3 {
        assert_eq!(v_of(&vault, "a/e/k", v), Some(json!({ "v": v })));
    }
    assert_eq!(
        vault.read_metadata(&acme, &p("a/e/other")).unwrap_err(),
        VaultError::NotFound
    );
}

#[test]
fn writes_staged_on_a_failed_write_fail_with_it() {
    let g = gated();
    let acme = t("acme");
    g.spawn_write("a/e/k", 1, None).join().unwrap().unwrap();
    // Version 2's commit is held and will fail; versions 3 and 4 were
    // computed on top of it (the second with check-and-set on 3), and a
    // metadata write too. None of them may be stored.
    g.store.set_hold(true);
    g.store.fail_next.store(1, Ordering::SeqCst);
    let doomed = g.spawn_write("a/e/k", 2, None);
    wait_until("the commit of version 2", || g.applies() == 2);
    let third = g.spawn_write("a/e/k", 3, None);
    wait_until("version 3 to stage", || g.vault.staged_changes() == 1);
    let fourth = g.spawn_write("a/e/k", 4, Some(3));
    wait_until("version 4 to stage", || g.vault.staged_changes() == 2);
    let behind = [third, fourth];
    g.store.set_hold(false);
    assert!(matches!(
        doomed.join().unwrap(),
        Err(VaultError::Storage(_))
    ));
    for h in behind {
        assert!(matches!(h.join().unwrap(), Err(VaultError::Storage(_))));
    }
    assert_eq!(g.applies(), 2, "the batch behind never reached the store");
    let m = g.vault.read_metadata(&acme, &p("a/e/k")).unwrap();
    assert_eq!(m.current_version, 1);
    // A check-and-set on the lost version is a mismatch now.
    assert_eq!(
        g.spawn_write("a/e/k", 5, Some(3))
            .join()
            .unwrap()
            .unwrap_err(),
        VaultError::CasMismatch {
            expected: 3,
            current: 1
        }
    );
    assert_eq!(
        g.spawn_write("a/e/k", 2, Some(1))
            .join()
            .unwrap()
            .unwrap()
            .version,
        2
    );
    let (_dir, vault) = g.reopen();
    assert_eq!(
        vault
            .read_metadata(&acme, &p("a/e/k"))
            .unwrap()
            .current_version,
        2
    );
    assert_eq!(v_of(&vault, "a/e/k", 2), Some(json!({ "v": 2 })));
}

#[test]
fn other_writes_go_through_the_same_batches() {
    // A delete staged behind a write to the same secret sees it; a role
    // and its secret id made back to back are both stored.
    let g = gated();
    let acme = t("acme");
    g.store.set_hold(true);
    let w = g.spawn_write("a/e/k", 1, None);
    wait_until("the write's commit", || g.applies() == 1);
    let del = {
        let vault = g.vault.clone();
        thread::spawn(move || vault.delete_metadata(&t("acme"), &p("a/e/k")))
    };
    let role = RoleName::parse("ci").unwrap();
    let made = {
        let (vault, role) = (g.vault.clone(), role.clone());
        thread::spawn(move || {
            let rec = vault.create_role(&t("acme"), RoleSpec::new(role.clone()), 1)?;
            let sid = vault.generate_secret_id(&t("acme"), &role, 1)?;
            Ok::<_, VaultError>((rec, sid))
        })
    };
    wait_until("the delete and the role to stage", || {
        g.vault.staged_changes() == 3
    });
    g.store.set_hold(false);
    w.join().unwrap().unwrap();
    del.join().unwrap().unwrap();
    let (rec, (sid, _)) = made.join().unwrap().unwrap();
    assert_eq!(
        g.vault.read_metadata(&acme, &p("a/e/k")).unwrap_err(),
        VaultError::NotFound
    );
    let login = g.vault.login(&rec.role_id, &sid, None, 2).unwrap();
    assert_eq!(login.role, role);
}
