//! The keyring over the embedded store with the local master key: sealing,
//! binding, the start-up check, erasure and rotation.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use base64::Engine;
use rampart_keys::{
    sealed_key_version, Aad, KeyError, KeyScope, Keyring, LocalMasterKey, MasterKeyProvider,
};
use rampart_store::{KvStore, Op, RedbStore, StoreError, Table};

struct Fixture {
    _dir: tempfile::TempDir,
    db: PathBuf,
    key: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.redb");
        let key = dir.path().join("master.key");
        LocalMasterKey::create(&key).unwrap();
        Self { _dir: dir, db, key }
    }

    fn store(&self) -> Arc<dyn KvStore> {
        Arc::new(RedbStore::open(&self.db).unwrap())
    }

    fn master(&self) -> Arc<LocalMasterKey> {
        Arc::new(LocalMasterKey::load(&self.key).unwrap())
    }

    async fn keyring(&self, kv: &Arc<dyn KvStore>) -> Keyring {
        Keyring::open(Arc::clone(kv), self.master()).await.unwrap()
    }
}

/// Counts writes, to prove a refused start writes nothing.
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn KvStore>,
    applies: AtomicUsize,
}

impl KvStore for Counting {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(table, key)
    }
    fn scan(&self, table: Table, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.inner.scan(table, prefix)
    }
    fn apply(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        self.applies.fetch_add(1, Ordering::SeqCst);
        self.inner.apply(ops)
    }
}

fn dump(kv: &dyn KvStore) -> Vec<(&'static str, String, Vec<u8>)> {
    Table::ALL
        .iter()
        .flat_map(|t| {
            kv.scan(*t, "")
                .unwrap()
                .into_iter()
                .map(|(k, v)| (t.name(), k, v))
        })
        .collect()
}

fn sha256(path: &Path) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, &std::fs::read(path).unwrap())
        .as_ref()
        .to_vec()
}

fn aad<'a>(tenant: &'a str, name: &'a str, part: u64) -> Aad<'a> {
    Aad::new(tenant, "prod", "stream", name, part)
}

#[tokio::test]
async fn seal_open_and_any_flipped_byte_is_tampered() {
    let f = Fixture::new();
    let kv = f.store();
    let keyring = f.keyring(&kv).await;
    let acme = keyring.tenant("acme").await.unwrap();
    let a = aad("acme", "orders", 7);
    let sealed = acme.seal(&a, b"an order").unwrap();
    assert_eq!(sealed_key_version(&sealed), Some(1));
    assert_eq!(acme.open(&a, &sealed).unwrap().expose(), b"an order");
    assert_eq!(
        acme.open(&a, &acme.seal(&a, b"").unwrap())
            .unwrap()
            .expose(),
        b""
    );
    for i in 0..sealed.len() {
        for bit in [0x01, 0x80] {
            let mut bad = sealed.clone();
            bad[i] ^= bit;
            assert!(
                matches!(acme.open(&a, &bad), Err(KeyError::Tampered)),
                "byte {i} bit {bit:#x}"
            );
        }
    }
    assert!(matches!(
        acme.open(&a, &sealed[..20]),
        Err(KeyError::Tampered)
    ));
    assert!(matches!(acme.open(&a, b""), Err(KeyError::Tampered)));
}

#[tokio::test]
async fn a_ciphertext_opens_nowhere_else() {
    let f = Fixture::new();
    let kv = f.store();
    let keyring = f.keyring(&kv).await;
    let acme = keyring.tenant("acme").await.unwrap();
    let globex = keyring.tenant("globex").await.unwrap();
    let a = aad("acme", "orders", 7);
    let sealed = acme.seal(&a, b"secret").unwrap();
    let elsewhere = [
        Aad::new("acme", "staging", "stream", "orders", 7),
        Aad::new("acme", "prod", "stream", "invoices", 7),
        Aad::new("acme", "prod", "stream", "orders", 8),
        Aad::new("acme", "prod", "cache", "orders", 7),
        a.with_scope(KeyScope::Resource),
        // Field boundaries cannot be shifted.
        Aad::new("acme", "pro", "dstream", "orders", 7),
        // Labelled as another tenant.
        Aad::new("globex", "prod", "stream", "orders", 7),
    ];
    for other in &elsewhere {
        assert!(
            matches!(acme.open(other, &sealed), Err(KeyError::Tampered)),
            "{other:?}"
        );
    }
    // Another tenant's keys, with its own identity or with acme's.
    let g = aad("globex", "orders", 7);
    assert!(matches!(globex.open(&g, &sealed), Err(KeyError::Tampered)));
    assert!(matches!(globex.open(&a, &sealed), Err(KeyError::Tampered)));
    // Sealing with one tenant's keys under another's name is refused.
    assert!(matches!(
        globex.seal(&a, b"x"),
        Err(KeyError::TenantMismatch { .. })
    ));
}

#[tokio::test]
async fn a_wrong_master_key_is_refused_and_nothing_is_written() {
    let f = Fixture::new();
    let sealed = {
        let kv = f.store();
        let keyring = f.keyring(&kv).await;
        let t = keyring.tenant("acme").await.unwrap();
        t.seal(&aad("acme", "orders", 1), b"data").unwrap()
    };

    let other_dir = tempfile::tempdir().unwrap();
    let other_path = other_dir.path().join("other.key");
    let wrong = Arc::new(LocalMasterKey::create(&other_path).unwrap());
    // Same version number as the right key, different bytes; and a key
    // file that only holds a later version.
    let later = other_dir.path().join("later.key");
    std::fs::write(
        &later,
        format!(
            "v2:{}\n",
            base64::engine::general_purpose::STANDARD.encode([9u8; 32])
        ),
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&later, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let later = Arc::new(LocalMasterKey::load(&later).unwrap());

    let inner = f.store();
    let before_rows = dump(inner.as_ref());
    let before_file = sha256(&f.db);
    for master in [
        wrong as Arc<dyn MasterKeyProvider>,
        later as Arc<dyn MasterKeyProvider>,
    ] {
        let counting = Arc::new(Counting {
            inner: Arc::clone(&inner),
            applies: AtomicUsize::new(0),
        });
        let err = Keyring::open(counting.clone(), master).await.unwrap_err();
        assert!(matches!(err, KeyError::WrongMasterKey { .. }), "{err:?}");
        assert!(err.to_string().contains("not the one"));
        assert_eq!(counting.applies.load(Ordering::SeqCst), 0);
    }
    assert_eq!(dump(inner.as_ref()), before_rows);
    assert_eq!(sha256(&f.db), before_file);
    drop(inner);

    // The right key still opens everything.
    let kv = f.store();
    let keyring = f.keyring(&kv).await;
    let t = keyring.tenant("acme").await.unwrap();
    assert_eq!(
        t.open(&aad("acme", "orders", 1), &sealed).unwrap().expose(),
        b"data"
    );
}

#[tokio::test]
async fn erasing_a_tenant_makes_all_its_data_unreadable_for_good() {
    let f = Fixture::new();
    let kv = f.store();
    let keyring = f.keyring(&kv).await;
    let acme = keyring.tenant("acme").await.unwrap();
    let globex = keyring.tenant("globex").await.unwrap();
    let mut acme_data = Vec::new();
    for (i, name) in ["orders", "invoices", "audit"].iter().enumerate() {
        let a = aad("acme", name, i as u64);
        acme_data.push((name.to_string(), i as u64, acme.seal(&a, b"a").unwrap()));
        let r = a.with_scope(KeyScope::Resource);
        acme_data.push((
            name.to_string(),
            100 + i as u64,
            acme.seal(&r, b"r").unwrap(),
        ));
    }
    let g = aad("globex", "orders", 0);
    let g_sealed = globex.seal(&g, b"g").unwrap();

    keyring.erase_tenant("acme").await.unwrap();

    let check_erased = |keys: &rampart_keys::TenantKeys| {
        for (name, part, sealed) in &acme_data {
            let scope = if *part >= 100 {
                KeyScope::Resource
            } else {
                KeyScope::Kind
            };
            let a = aad("acme", name, *part % 100).with_scope(scope);
            assert!(matches!(
                keys.open(&a, sealed),
                Err(KeyError::Erased { .. })
            ));
        }
    };
    // The copy a caller still holds stops working at once.
    check_erased(&acme);
    assert!(matches!(
        acme.seal(&aad("acme", "orders", 9), b"x"),
        Err(KeyError::Erased { .. })
    ));
    assert!(matches!(
        keyring.tenant("acme").await,
        Err(KeyError::Erased { .. })
    ));
    assert_eq!(globex.open(&g, &g_sealed).unwrap().expose(), b"g");
    // Nothing of acme's keys is left in the store.
    assert!(kv.scan(Table::Keyring, "dk/acme/").unwrap().is_empty());
    let record = kv.get(Table::Keyring, "tenant/acme").unwrap().unwrap();
    assert!(String::from_utf8(record).unwrap().contains("erased"));
    drop((keyring, acme, globex));

    // After a restart: still erased, never silently recreated.
    let keyring = f.keyring(&kv).await;
    assert!(matches!(
        keyring.tenant("acme").await,
        Err(KeyError::Erased { .. })
    ));
    let globex = keyring.tenant("globex").await.unwrap();
    assert_eq!(globex.open(&g, &g_sealed).unwrap().expose(), b"g");
}

#[tokio::test]
async fn erasing_one_stream_key_leaves_the_rest() {
    let f = Fixture::new();
    let kv = f.store();
    let keyring = f.keyring(&kv).await;
    let t = keyring.tenant("acme").await.unwrap();
    let s1 = aad("acme", "s1", 0).with_scope(KeyScope::Resource);
    let s2 = aad("acme", "s2", 0).with_scope(KeyScope::Resource);
    let shared = aad("acme", "s3", 0);
    let c1 = t.seal(&s1, b"one").unwrap();
    let c2 = t.seal(&s2, b"two").unwrap();
    let c3 = t.seal(&shared, b"three").unwrap();

    assert_eq!(t.erase_resource("prod", "stream", "s1").unwrap(), 1);
    assert!(matches!(t.open(&s1, &c1), Err(KeyError::Erased { .. })));
    assert_eq!(t.open(&s2, &c2).unwrap().expose(), b"two");
    assert_eq!(t.open(&shared, &c3).unwrap().expose(), b"three");

    // A new stream of the same name gets a new key version.
    let again = t.seal(&s1, b"new").unwrap();
    assert_eq!(sealed_key_version(&again), Some(2));
    assert_eq!(t.open(&s1, &again).unwrap().expose(), b"new");
    drop((keyring, t));

    let keyring = f.keyring(&kv).await;
    let t = keyring.tenant("acme").await.unwrap();
    assert!(matches!(t.open(&s1, &c1), Err(KeyError::Erased { .. })));
    assert_eq!(t.open(&s1, &again).unwrap().expose(), b"new");
    assert_eq!(t.open(&s2, &c2).unwrap().expose(), b"two");
}

#[tokio::test]
async fn rotating_a_tenant_gives_new_writes_a_new_key_version() {
    let f = Fixture::new();
    let kv = f.store();
    let keyring = f.keyring(&kv).await;
    let t = keyring.tenant("acme").await.unwrap();
    let a = aad("acme", "orders", 0);
    let r = aad("acme", "orders", 0).with_scope(KeyScope::Resource);
    let old = t.seal(&a, b"old").unwrap();
    let old_r = t.seal(&r, b"old-r").unwrap();
    assert_eq!(t.kek_version(), 1);

    assert_eq!(keyring.rotate_tenant("acme").await.unwrap(), 2);
    assert_eq!(t.kek_version(), 2);
    let new = t.seal(&a, b"new").unwrap();
    let new_r = t.seal(&r, b"new-r").unwrap();
    assert_eq!(sealed_key_version(&old), Some(1));
    assert_eq!(sealed_key_version(&new), Some(2));
    assert_eq!(sealed_key_version(&new_r), Some(2));
    assert_eq!(t.open(&a, &old).unwrap().expose(), b"old");
    assert_eq!(t.open(&a, &new).unwrap().expose(), b"new");
    drop((keyring, t));

    let keyring = f.keyring(&kv).await;
    let t = keyring.tenant("acme").await.unwrap();
    assert_eq!(t.kek_version(), 2);
    for (aad, sealed, want) in [
        (&a, &old, &b"old"[..]),
        (&a, &new, b"new"),
        (&r, &old_r, b"old-r"),
        (&r, &new_r, b"new-r"),
    ] {
        assert_eq!(t.open(aad, sealed).unwrap().expose(), want);
    }
    assert_eq!(sealed_key_version(&t.seal(&a, b"x").unwrap()), Some(2));
}

/// The master version each stored KEK is wrapped under.
fn kek_versions(kv: &dyn KvStore) -> Vec<u32> {
    kv.scan(Table::Keyring, "tenant/")
        .unwrap()
        .into_iter()
        .flat_map(|(_, v)| {
            let record: serde_json::Value = serde_json::from_slice(&v).unwrap();
            record["keks"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|k| {
                    let w = base64::engine::general_purpose::STANDARD
                        .decode(k["wrapped"].as_str().unwrap())
                        .unwrap();
                    u32::from_be_bytes(w[4..8].try_into().unwrap())
                })
        })
        .collect()
}

#[tokio::test]
async fn rotating_the_master_rewraps_every_kek() {
    let f = Fixture::new();
    let kv = f.store();
    let keyring = f.keyring(&kv).await;
    let mut data = Vec::new();
    for i in 0..5 {
        let tenant = format!("tenant-{i}");
        let t = keyring.tenant(&tenant).await.unwrap();
        let sealed = t.seal(&aad(&tenant, "s", 0), tenant.as_bytes()).unwrap();
        data.push((tenant, sealed));
    }
    keyring.rotate_tenant("tenant-0").await.unwrap();
    keyring.tenant("gone").await.unwrap();
    keyring.erase_tenant("gone").await.unwrap();
    assert_eq!(kek_versions(kv.as_ref()), vec![1; 6]);

    let report = keyring.rotate_master().await.unwrap();
    assert_eq!((report.from_version, report.to_version), (1, 2));
    assert_eq!(
        (report.rewrapped, report.already_current, report.erased),
        (5, 0, 1)
    );
    assert!(!report.resumed);
    assert_eq!(kek_versions(kv.as_ref()), vec![2; 6]);
    assert!(!keyring.rotation_pending().unwrap());
    drop(keyring);

    // A fresh process: the key file holds both versions; all data opens.
    let text = std::fs::read_to_string(&f.key).unwrap();
    assert_eq!(text.lines().count(), 2);
    let keyring = f.keyring(&kv).await;
    for (tenant, sealed) in &data {
        let t = keyring.tenant(tenant).await.unwrap();
        assert_eq!(
            t.open(&aad(tenant, "s", 0), sealed).unwrap().expose(),
            tenant.as_bytes()
        );
    }
    let again = keyring.rotate_master().await.unwrap();
    assert_eq!((again.to_version, again.rewrapped), (3, 5));
}

#[tokio::test]
async fn bad_names_are_refused() {
    let f = Fixture::new();
    let kv = f.store();
    let keyring = f.keyring(&kv).await;
    assert!(matches!(
        keyring.tenant("").await,
        Err(KeyError::InvalidName { .. })
    ));
    let t = keyring.tenant("a/b").await.unwrap();
    assert!(matches!(
        t.seal(&Aad::new("a/b", "ns", "", "n", 0), b"x"),
        Err(KeyError::InvalidName { .. })
    ));
    // A '/' in a tenant name cannot reach another tenant's keys.
    let a = keyring.tenant("a").await.unwrap();
    a.seal(&aad("a", "s", 0), b"x").unwrap();
    keyring.erase_tenant("a/b").await.unwrap();
    assert!(!kv.scan(Table::Keyring, "dk/a/").unwrap().is_empty());
}
