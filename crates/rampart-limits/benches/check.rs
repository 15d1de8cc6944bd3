//! The cost of a limit check on the publish path: the principal's and the
//! tenant's bucket, both limiting, both passing.

use criterion::{criterion_group, criterion_main, Criterion};
use rampart_limits::{LimitSpec, Limits, RateKind};
use std::hint::black_box;

fn limits(c: &mut Criterion) {
    let spec = LimitSpec {
        publish_msgs_per_sec: Some(900_000_000),
        ..Default::default()
    };
    let l = Limits::new(spec.clone(), spec);
    let mut h = l.handle("acme", "alice");
    c.bench_function("limit check: publish, tenant + principal", |b| {
        b.iter(|| h.rate(black_box(RateKind::PublishMsgs), black_box(1)))
    });
    let none = Limits::new(LimitSpec::default(), LimitSpec::default());
    let mut h = none.handle("acme", "alice");
    c.bench_function("limit check: publish, unlimited", |b| {
        b.iter(|| h.rate(black_box(RateKind::PublishMsgs), black_box(1)))
    });
}

criterion_group!(benches, limits);
criterion_main!(benches);
