//! Cost of an authorization check: a cached hit (the per-frame hot path)
//! and an uncached `decide` against a realistic policy (10 documents,
//! 50 rules).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use rampart_authz::{
    decide, AclDocument, DecisionCache, Permission, Policy, Resource, Subject,
    MAX_RULES_PER_DOCUMENT,
};
use rampart_proto::TenantId;

/// 10 documents of 5 rules each: for tenants acme and globex, a tenant-wide
/// document and four namespace documents.
fn policy() -> Policy {
    let mut yaml = String::new();
    for tenant in ["acme", "globex"] {
        for ns in ["*", "production", "staging", "dev", "analytics"] {
            yaml.push_str(&format!(
                r#"---
apiVersion: rampart.io/v1
kind: ACL
metadata:
  tenant: {tenant}
  namespace: "{ns}"
spec:
  rules:
    - {{principal: "role:viewer", resource: "stream:*", permissions: [subscribe]}}
    - {{principal: "*", resource: "stream:audit-log", permissions: [publish], effect: deny}}
    - {{principal: "svc-billing", resource: "cache:*", permissions: [cache_read, cache_write]}}
    - {{principal: "svc-orders", resource: "stream:orders", permissions: [publish, subscribe]}}
    - {{principal: "role:admin", resource: "*", permissions: [admin]}}
"#
            ));
        }
    }
    let mut p = Policy::new();
    let docs = AclDocument::parse_yaml(&yaml).expect("bench policy parses");
    assert_eq!(docs.len(), 10);
    for d in docs {
        p.apply(d);
    }
    assert_eq!(
        p.documents().map(AclDocument::rule_count).sum::<usize>(),
        50
    );
    p
}

fn bench(c: &mut Criterion) {
    let policy = policy();
    let subject = Subject::new(
        TenantId::parse("acme").expect("valid"),
        "svc-orders",
        ["viewer"],
    );
    let orders = Resource::parse("stream:acme/production/orders").expect("valid");
    assert!(decide(&policy, &subject, &orders, Permission::Publish).allowed);

    let mut cache = DecisionCache::new();
    // Fill the cache with a few other resources too, as a live connection would.
    for s in ["a", "b", "c", "d", "e", "f", "g", "h"] {
        let r = Resource::parse(&format!("stream:acme/production/{s}")).expect("valid");
        cache.check(&policy, &subject, &r, Permission::Subscribe);
    }
    assert!(cache.check(&policy, &subject, &orders, Permission::Publish));

    c.bench_function("cached check (hit)", |b| {
        b.iter(|| {
            cache.check(
                black_box(&policy),
                black_box(&subject),
                black_box(&orders),
                black_box(Permission::Publish),
            )
        })
    });
    c.bench_function("uncached decide (10 docs, 50 rules)", |b| {
        b.iter(|| {
            decide(
                black_box(&policy),
                black_box(&subject),
                black_box(&orders),
                black_box(Permission::Publish),
            )
        })
    });
    let other = Resource::parse("stream:acme/dev/payments").expect("valid");
    c.bench_function("uncached decide, denied (no rule)", |b| {
        b.iter(|| {
            decide(
                black_box(&policy),
                black_box(&subject),
                black_box(&other),
                black_box(Permission::Publish),
            )
        })
    });
}

/// Where the cache pays: one namespace document at the size limit, every
/// rule scanned before the answer (no rule matches).
fn bench_large(c: &mut Criterion) {
    let mut yaml = String::from(
        "apiVersion: rampart.io/v1\nkind: ACL\nmetadata: {tenant: acme, namespace: production}\nspec:\n  rules:\n",
    );
    for i in 0..MAX_RULES_PER_DOCUMENT {
        yaml.push_str(&format!(
            "    - {{principal: \"svc-{i}\", resource: \"stream:s{i}\", permissions: [publish]}}\n"
        ));
    }
    let mut policy = Policy::new();
    for d in AclDocument::parse_yaml(&yaml).expect("bench policy parses") {
        policy.apply(d);
    }
    let subject = Subject::new(TenantId::parse("acme").expect("valid"), "ci", ["user"]);
    let orders = Resource::parse("stream:acme/production/orders").expect("valid");
    let mut cache = DecisionCache::new();
    c.bench_function("uncached decide (1 doc, 1024 rules)", |b| {
        b.iter(|| {
            decide(
                black_box(&policy),
                black_box(&subject),
                black_box(&orders),
                black_box(Permission::Publish),
            )
        })
    });
    c.bench_function("cached check (hit), same policy", |b| {
        b.iter(|| {
            cache.check(
                black_box(&policy),
                black_box(&subject),
                black_box(&orders),
                black_box(Permission::Publish),
            )
        })
    });
}

criterion_group!(benches, bench, bench_large);
criterion_main!(benches);
