//! The cost of sealing data at rest: one AES-256-GCM seal (and open) of a
//! log block with a tenant's data key, through [`TenantKeys`] as the log
//! calls it (data key lookup, usage count, fresh nonce, AAD encoding).
//! Sizes: a 4 KiB block (one large message) and a 64 KiB block (a batch).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rampart_keys::{Aad, Keyring, LocalMasterKey, TenantKeys};

fn tenant_keys(dir: &std::path::Path) -> Arc<TenantKeys> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let master = LocalMasterKey::create(&dir.join("master.key")).expect("master key");
        let kv: Arc<dyn rampart_store::KvStore> =
            Arc::new(rampart_store::RedbStore::open(&dir.join("keys.redb")).expect("store"));
        let keyring = Keyring::open(kv, Arc::new(master)).await.expect("keyring");
        keyring.tenant("acme").await.expect("tenant keys")
    })
}

fn seal(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = tenant_keys(dir.path());
    let mut g = c.benchmark_group("seal");
    for size in [4 * 1024, 64 * 1024] {
        let block = vec![0x5a; size];
        let aad = Aad::new("acme", "orders", "stream", "created", 4096);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(format!("seal {} KiB block", size / 1024), |b| {
            b.iter(|| {
                keys.seal(black_box(&aad), black_box(&block))
                    .expect("seals")
            })
        });
        let sealed = keys.seal(&aad, &block).expect("seals");
        g.bench_function(format!("open {} KiB block", size / 1024), |b| {
            b.iter(|| {
                keys.open(black_box(&aad), black_box(&sealed))
                    .expect("opens")
            })
        });
    }
    g.finish();
}

criterion_group!(benches, seal);
criterion_main!(benches);
