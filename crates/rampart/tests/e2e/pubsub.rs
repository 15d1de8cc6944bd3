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
    let e = next_event(&mut sub, 10).await;
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
                // Fire-and-forget batches are encoded another way (straight
                // into the frame): they keep their place all the same.
                let ack = if i % 8 == 3 {
                    AckMode::Message
                } else {
                    AckMode::None
                };
                let sent = p
                    .publish_batch_with("acme", "production", "fanout", &batch, ack)
                    .await
                    .unwrap();
                assert_eq!(sent as usize, end - i);
                i = end;
            }
        }
    }
    assert!(p.take_async_error().is_none());
    for (_c, mut sub) in subs {
        for n in 0..N {
            let e = next_event(&mut sub, 20).await;
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
    let e = next_event(&mut sub, 10).await;
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

/// Under `drop_oldest`, a subscriber that stops reading loses the oldest
/// messages, never blocks the publisher, and is told how many it missed.
async fn drop_oldest_reports_missed(t: Transport) {
    let s = start_with(|c| {
        c.slow_consumer_policy = rampart_server::SlowConsumer::DropOldest;
        c.subscriber_queue_messages = 16;
    })
    .await;
    let sc = s.client(t, KEY_ACME).await;
    let mut sub = sc.subscribe("acme", "ns", "firehose").await.unwrap();
    let p = s.client(t, KEY_ACME).await;
    // 96 MiB in total: far more than every bounded buffer between the
    // server queue and this (not yet reading) subscriber can hold.
    const TOTAL: u64 = 6000;
    let payload = vec![0x5au8; 16 * 1024];
    for _ in 0..TOTAL / 10 {
        let n = tokio::time::timeout(
            Duration::from_secs(30),
            p.publish_batch(
                "acme",
                "ns",
                "firehose",
                std::iter::repeat_n(&payload[..], 10),
            ),
        )
        .await
        .expect("the publisher is never blocked by a slow subscriber")
        .unwrap();
        assert_eq!(n, 10);
    }
    let mut received = 0u64;
    let mut last_seq = None;
    while received + sub.missed() < TOTAL {
        let e = next_event(&mut sub, 20).await;
        if let Some(prev) = last_seq {
            assert!(e.seq > prev, "order kept");
        }
        last_seq = Some(e.seq);
        received += 1;
    }
    assert!(sub.missed() > 0, "some messages were dropped and reported");
    assert_eq!(received + sub.missed(), TOTAL);
    assert_eq!(last_seq, Some(TOTAL - 1), "the newest message survives");
}

both_transports!(drop_oldest_reports_missed);

/// A request larger than the server's frame limit is refused by the client
/// library before it is sent (the server would close the connection), and
/// the connection carries on.
async fn oversized_publish_is_refused_client_side(t: Transport) {
    let s = start().await;
    let c = s.client(t, KEY_ACME).await;
    let big = vec![0u8; 9 * 1024 * 1024];
    let e = c.publish("acme", "ns", "s", big.clone()).await.unwrap_err();
    assert!(
        matches!(e, rampart_client::ClientError::InvalidArgument(_)),
        "{e}"
    );
    for ack in [AckMode::None, AckMode::Batch] {
        let e = c
            .publish_batch_with("acme", "ns", "s", [&big[..4096], &big[..]], ack)
            .await
            .unwrap_err();
        assert!(
            matches!(e, rampart_client::ClientError::InvalidArgument(_)),
            "{ack:?}: {e}"
        );
    }
    let e = c
        .cache_put("acme", "ns", "c", "k", big, None)
        .await
        .unwrap_err();
    assert!(matches!(e, rampart_client::ClientError::InvalidArgument(_)));
    c.ping().await.unwrap();
    c.publish("acme", "ns", "s", vec![1u8; 1024 * 1024])
        .await
        .unwrap();
}

both_transports!(oversized_publish_is_refused_client_side);
