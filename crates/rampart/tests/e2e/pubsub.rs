use std::time::Duration;

use rampart_client::{AckMode, Transport};

use crate::common::*;

async fn round_trip(t: Transport) {
    let s = start().await;
    let sub_client = s.client(t, KEY_ACME).await;
    let mut sub = sub_client
        .subscribe("acme", "production", "orders")
        .await
        .unwrap();
    let publisher = s.client(t, KEY_ACME).await;
    assert_eq!(publisher.tenant().as_str(), "acme");
    publisher
        .publish("acme", "production", "orders", "order-123")
        .await
        .unwrap();
    let e = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&e.payload[..], b"order-123");
    assert_eq!(e.seq, 0);
}

async fn fan_out_to_eight(t: Transport) {
    let s = start().await;
    let mut subs = Vec::new();
    for _ in 0..8 {
        let c = s.client(t, KEY_ACME).await;
        let sub = c.subscribe("acme", "production", "fanout").await.unwrap();
        subs.push((c, sub));
    }
    let p = s.client(t, KEY_ACME).await;
    const N: usize = 2000;
    // A mix of single publishes (all three ack modes) and batches.
    let mut i = 0;
    while i < N {
        match i % 4 {
            0 => {
                let end = (i + 50).min(N);
                let batch: Vec<String> = (i..end).map(|n| format!("m{n}")).collect();
                assert_eq!(
                    p.publish_batch("acme", "production", "fanout", &batch)
                        .await
                        .unwrap() as usize,
                    end - i
                );
                i = end;
            }
            1 => {
                p.publish_with(
                    "acme",
                    "production",
                    "fanout",
                    format!("m{i}"),
                    AckMode::None,
                )
                .await
                .unwrap();
                i += 1;
            }
            2 => {
                p.publish_with(
                    "acme",
                    "production",
                    "fanout",
                    format!("m{i}"),
                    AckMode::Batch,
                )
                .await
                .unwrap();
                i += 1;
            }
            _ => {
                let end = (i + 3).min(N);
                let batch: Vec<String> = (i..end).map(|n| format!("m{n}")).collect();
                p.publish_batch_with("acme", "production", "fanout", &batch, AckMode::Message)
                    .await
                    .unwrap();
                i = end;
            }
        }
    }
    assert!(p.take_async_error().is_none());
    for (_c, mut sub) in subs {
        for n in 0..N {
            let e = tokio::time::timeout(Duration::from_secs(20), sub.next())
                .await
                .expect("message arrives")
                .expect("open");
            assert_eq!(e.seq, n as u64, "in order, no gap, no duplicate");
            assert_eq!(e.payload, format!("m{n}").as_bytes());
        }
        assert_eq!(sub.missed(), 0);
        // Exactly once: nothing more arrives.
        assert!(
            tokio::time::timeout(Duration::from_millis(200), sub.next())
                .await
                .is_err(),
            "no extra message"
        );
    }
}

async fn subscription_ids_are_per_connection(t: Transport) {
    let s = start().await;
    let a = s.client(t, KEY_ACME).await;
    let mut sub = a.subscribe("acme", "ns", "s").await.unwrap();
    // Another connection of the same tenant cannot unsubscribe it.
    let mut raw = s.raw(t).await;
    raw.send(&hello()).await;
    raw.recv().await.unwrap();
    raw.send(&auth(KEY_ACME)).await;
    raw.recv().await.unwrap();
    for guess in [sub.id(), 0, 1, 2, u64::MAX] {
        raw.send(&rampart_proto::Frame::new(
            9,
            rampart_proto::Unsubscribe {
                subscription_id: guess,
            },
        ))
        .await;
        assert_eq!(nack_code(&raw.recv().await.unwrap()), Some(404));
    }
    a.publish("acme", "ns", "s", "still here").await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&e.payload[..], b"still here");
    // Its own connection can.
    sub.unsubscribe().await.unwrap();
}

async fn explicit_streams_must_exist(t: Transport) {
    let s = start_with(|c| {
        c.auto_create_streams = false;
        c.streams = vec!["acme/ns/declared".into()];
    })
    .await;
    let c = s.client(t, KEY_ACME).await;
    c.publish("acme", "ns", "declared", "x").await.unwrap();
    let e = c
        .publish("acme", "ns", "undeclared", "x")
        .await
        .unwrap_err();
    assert_eq!(e.code().map(|c| c.0), Some(404));
    let e = c.subscribe("acme", "ns", "undeclared").await.unwrap_err();
    assert_eq!(e.code().map(|c| c.0), Some(404));
}

both_transports!(
    round_trip,
    fan_out_to_eight,
    subscription_ids_are_per_connection,
    explicit_streams_must_exist
);
