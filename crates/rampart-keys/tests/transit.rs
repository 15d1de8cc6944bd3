//! The vault-transit provider against a real OpenBao (or Vault) server.
//!
//! Runs only when RAMPART_TEST_BAO_ADDR, RAMPART_TEST_BAO_TOKEN and
//! RAMPART_TEST_BAO_CACERT are set (`scripts/openbao-dev.sh` starts a server
//! and prints them); otherwise it says why it skipped, and passes.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use rampart_keys::{
    Aad, KeyError, Keyring, MasterKeyProvider, Secret, TransitConfig, VaultTransit,
};
use rampart_store::{KvStore, RedbStore, Table};
use ring::rand::{SecureRandom, SystemRandom};

struct Server {
    addr: String,
    token: String,
    ca: PathBuf,
}

fn server() -> Option<Server> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    match (
        var("RAMPART_TEST_BAO_ADDR"),
        var("RAMPART_TEST_BAO_TOKEN"),
        var("RAMPART_TEST_BAO_CACERT"),
    ) {
        (Some(addr), Some(token), Some(ca)) => Some(Server {
            addr,
            token,
            ca: PathBuf::from(ca),
        }),
        _ => {
            // Straight to stderr, past libtest's capture, so it shows.
            let _ = writeln!(
                std::io::stderr(),
                "skipping the transit test: RAMPART_TEST_BAO_ADDR, RAMPART_TEST_BAO_TOKEN and \
                 RAMPART_TEST_BAO_CACERT are not all set (scripts/openbao-dev.sh prints them)"
            );
            None
        }
    }
}

impl Server {
    fn provider(&self, key: &str) -> VaultTransit {
        self.provider_with_token(key, &self.token)
    }

    fn provider_with_token(&self, key: &str, token: &str) -> VaultTransit {
        let mut config = TransitConfig::new(&self.addr, Secret::new(token.to_owned()), key);
        config.ca_file = Some(self.ca.clone());
        VaultTransit::new(config).unwrap()
    }
}

fn random_name(prefix: &str) -> String {
    let mut b = [0u8; 6];
    SystemRandom::new().fill(&mut b).unwrap();
    format!("{prefix}-{}", hex::encode(b))
}

fn dump(kv: &dyn KvStore) -> Vec<(String, Vec<u8>)> {
    Table::ALL
        .iter()
        .flat_map(|t| kv.scan(*t, "").unwrap())
        .collect()
}

#[tokio::test]
async fn transit_provider_against_a_real_server() {
    let Some(server) = server() else { return };
    let key = random_name("rampart-test");
    let t = server.provider(&key);
    assert!(t.describe().contains(&format!("key={key}")));

    // A missing key is an error, never created implicitly by an encrypt.
    assert!(matches!(
        t.wrap(b"x", b"ctx").await,
        Err(KeyError::TransitKeyNotFound { .. })
    ));
    assert!(t.ensure_key().await.unwrap(), "created");
    assert!(!t.ensure_key().await.unwrap(), "already there");
    assert_eq!(t.current_version().await.unwrap(), 1);

    // Wrap and unwrap, bound to the context.
    let kek = [7u8; 32];
    let wrapped = t.wrap(&kek, b"tenant-kek:acme:1").await.unwrap();
    assert!(wrapped.starts_with(b"vault:v1:"));
    assert!(!wrapped.windows(4).any(|w| w == [7u8; 4]));
    assert_eq!(t.version_of(&wrapped).unwrap(), 1);
    assert_eq!(
        t.unwrap(&wrapped, b"tenant-kek:acme:1")
            .await
            .unwrap()
            .expose(),
        &kek
    );
    assert!(matches!(
        t.unwrap(&wrapped, b"tenant-kek:globex:1").await,
        Err(KeyError::Tampered)
    ));
    let mut flipped = wrapped.clone();
    let last = flipped.len() - 3;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    assert!(matches!(
        t.unwrap(&flipped, b"tenant-kek:acme:1").await,
        Err(KeyError::Tampered)
    ));
    assert!(matches!(
        t.unwrap(b"garbage", b"tenant-kek:acme:1").await,
        Err(KeyError::Tampered)
    ));

    // Rotate, then rewrap under the new version; both still unwrap.
    t.rotate().await.unwrap();
    assert_eq!(t.current_version().await.unwrap(), 2);
    let rewrapped = t.rewrap(&wrapped, b"tenant-kek:acme:1").await.unwrap();
    assert_eq!(t.version_of(&rewrapped).unwrap(), 2);
    assert!(matches!(
        t.rewrap(&wrapped, b"other").await,
        Err(KeyError::Tampered)
    ));
    for w in [&wrapped, &rewrapped] {
        assert_eq!(
            t.unwrap(w, b"tenant-kek:acme:1").await.unwrap().expose(),
            &kek
        );
    }
    let too_new = String::from_utf8(rewrapped.clone())
        .unwrap()
        .replace("vault:v2:", "vault:v9:");
    assert!(matches!(
        t.unwrap(too_new.as_bytes(), b"tenant-kek:acme:1").await,
        Err(KeyError::UnknownMasterVersion(9))
    ));

    // A token without access.
    let denied = server.provider_with_token(&key, "not-a-token");
    assert!(matches!(
        denied.wrap(b"x", b"ctx").await,
        Err(KeyError::TransitStatus { status: 403, .. })
    ));
}

#[tokio::test]
async fn keyring_over_transit() {
    let Some(server) = server() else { return };
    let key = random_name("rampart-keyring");
    server.provider(&key).ensure_key().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kv: Arc<dyn KvStore> = Arc::new(RedbStore::open(&dir.path().join("s.redb")).unwrap());

    let aad = Aad::new("acme", "prod", "stream", "orders", 3);
    let sealed = {
        let keyring = Keyring::open(Arc::clone(&kv), Arc::new(server.provider(&key)))
            .await
            .unwrap();
        let acme = keyring.tenant("acme").await.unwrap();
        let sealed = acme.seal(&aad, b"an order").unwrap();
        assert_eq!(acme.open(&aad, &sealed).unwrap().expose(), b"an order");
        keyring.tenant("globex").await.unwrap();

        let report = keyring.rotate_master().await.unwrap();
        assert_eq!((report.from_version, report.to_version), (1, 2));
        assert_eq!(report.rewrapped, 2);
        assert_eq!(acme.open(&aad, &sealed).unwrap().expose(), b"an order");
        sealed
    };
    // Every stored KEK now names transit version 2.
    for (_, v) in kv.scan(Table::Keyring, "tenant/").unwrap() {
        let text = String::from_utf8(v).unwrap();
        assert!(text.contains("\"wrapped\""), "{text}");
    }

    // A restart with a fresh provider: the data opens.
    {
        let keyring = Keyring::open(Arc::clone(&kv), Arc::new(server.provider(&key)))
            .await
            .unwrap();
        let acme = keyring.tenant("acme").await.unwrap();
        assert_eq!(acme.open(&aad, &sealed).unwrap().expose(), b"an order");
    }

    // Pointed at another transit key: refused, and nothing is written.
    let other = random_name("rampart-other");
    server.provider(&other).ensure_key().await.unwrap();
    let before = dump(kv.as_ref());
    let err = Keyring::open(Arc::clone(&kv), Arc::new(server.provider(&other)))
        .await
        .unwrap_err();
    assert!(matches!(err, KeyError::WrongMasterKey { .. }), "{err:?}");
    assert!(err.to_string().contains(&other));
    // Pointed at a key that does not exist: refused too.
    let err = Keyring::open(
        Arc::clone(&kv),
        Arc::new(server.provider(&random_name("rampart-missing"))),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, KeyError::TransitKeyNotFound { .. }),
        "{err:?}"
    );
    assert_eq!(dump(kv.as_ref()), before);
}
