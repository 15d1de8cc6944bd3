//! Durable streams over both transports: acknowledgements that say how
//! durable a publish is, replay from earliest / offset / time, catch-up from
//! the log while publishing goes on, consumers with acks and redelivery,
//! sealing at rest, restarts, and damaged files.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rampart_client::{ConsumeOptions, Durability, StartAt, Subscription, Transport};
use serde_json::json;

use crate::common::*;

const WAIT: Duration = Duration::from_secs(15);

/// Declares acme's durable stream `prod/<name>` with the settings in `body`.
async fn create(s: &TestServer, name: &str, body: serde_json::Value) {
    let mut body = body;
    body["durable"] = true.into();
    create_stream(s, KEY_ACME, "acme", name, body).await;
}

async fn take(sub: &mut Subscription, n: usize) -> Vec<(u64, String)> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let e = next_event(sub, WAIT.as_secs()).await;
        v.push((e.seq, String::from_utf8(e.payload.to_vec()).unwrap()));
    }
    v
}

fn expect(range: std::ops::Range<u64>) -> Vec<(u64, String)> {
    range.map(|i| (i, format!("m{i}"))).collect()
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    snapshot(dir).into_iter().map(|(p, _)| p).collect()
}

async fn acks_levels_replay_and_restart(t: Transport) {
    let s = start().await;
    create(&s, "ledger", json!({ "sync": "on_commit" })).await;
    create(&s, "fast", json!({ "sync": "none" })).await;
    let c = s.client(t, KEY_ACME).await;
    for i in 0..10u64 {
        let a = c
            .publish("acme", "prod", "ledger", format!("m{i}"))
            .await
            .unwrap();
        assert_eq!(a.durability, Durability::Fsynced);
    }
    let a = c.publish("acme", "prod", "fast", "x").await.unwrap();
    assert_eq!(a.durability, Durability::Written);
    let a = c.publish("acme", "prod", "live", "x").await.unwrap();
    assert_eq!(a.durability, Durability::Memory);
    let canary = "DURABLE-CANARY-4b1d";
    c.publish("acme", "prod", "ledger", canary).await.unwrap();

    let mut all = c
        .subscribe_from("acme", "prod", "ledger", StartAt::Earliest)
        .await
        .unwrap();
    assert_eq!(take(&mut all, 10).await, expect(0..10));
    let mut from7 = c
        .subscribe_from("acme", "prod", "ledger", StartAt::Offset(7))
        .await
        .unwrap();
    assert_eq!(take(&mut from7, 3).await, expect(7..10));
    // A live subscriber of a durable stream starts at the end.
    let mut latest = c
        .subscribe_from("acme", "prod", "ledger", StartAt::New)
        .await
        .unwrap();
    c.publish("acme", "prod", "ledger", "m11").await.unwrap();
    assert_eq!(next_event(&mut latest, WAIT.as_secs()).await.seq, 11);

    // Payloads are sealed at rest: the canary is nowhere on disk.
    let dir = s.data_dir();
    let stream_files = files_under(&dir.join("streams/acme/prod/ledger"));
    assert!(stream_files
        .iter()
        .any(|p| p.extension().is_some_and(|e| e == "seg")));
    for f in files_under(&dir) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !bytes.windows(canary.len()).any(|w| w == canary.as_bytes()),
            "plaintext payload in {}",
            f.display()
        );
    }
    #[cfg(unix)]
    for f in &stream_files {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", f.display());
    }

    // Everything is there after a restart, at the same offsets.
    drop((all, from7, latest));
    c.close().await;
    let dir = s.stop().await;
    let s = start_in(dir, |_| {}).await;
    let c = s.client(t, KEY_ACME).await;
    let mut all = c
        .subscribe_from("acme", "prod", "ledger", StartAt::Earliest)
        .await
        .unwrap();
    assert_eq!(take(&mut all, 10).await, expect(0..10));
    assert_eq!(
        &next_event(&mut all, WAIT.as_secs()).await.payload[..],
        canary.as_bytes()
    );
    assert_eq!(take(&mut all, 1).await, expect(11..12));
    let a = c.publish("acme", "prod", "ledger", "after").await.unwrap();
    assert_eq!(a.durability, Durability::Fsynced);
    assert_eq!(next_event(&mut all, WAIT.as_secs()).await.seq, 12);
}

async fn replay_by_time_and_catch_up_while_publishing(t: Transport) {
    let s = start().await;
    create(&s, "events", json!({ "sync": "interval:20" })).await;
    let p = s.client(t, KEY_ACME).await;
    let first: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
    p.publish_batch("acme", "prod", "events", &first)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let second: Vec<String> = (100..200).map(|i| format!("m{i}")).collect();
    p.publish_batch("acme", "prod", "events", &second)
        .await
        .unwrap();

    let c = s.client(t, KEY_ACME).await;
    let mut by_time = c
        .subscribe_from("acme", "prod", "events", StartAt::TimestampMs(since))
        .await
        .unwrap();
    assert_eq!(take(&mut by_time, 100).await, expect(100..200));

    // A reader from the start while a publisher keeps going: it reads the
    // log, reaches the end and follows it with no gap and no duplicate.
    const N: u64 = 3000;
    let publisher = tokio::spawn(async move {
        let mut i = 200;
        while i < N {
            let end = (i + 25).min(N);
            let batch: Vec<String> = (i..end).map(|n| format!("m{n}")).collect();
            p.publish_batch("acme", "prod", "events", &batch)
                .await
                .unwrap();
            i = end;
        }
    });
    let mut reader = c
        .subscribe_from("acme", "prod", "events", StartAt::Earliest)
        .await
        .unwrap();
    assert_eq!(take(&mut reader, N as usize).await, expect(0..N));
    publisher.await.unwrap();
    assert_eq!(reader.missed(), 0);
}

async fn consumers_redeliver_what_a_crashed_member_did_not_ack(t: Transport) {
    let s = start().await;
    create(&s, "jobs", json!({})).await;
    let p = s.client(t, KEY_ACME).await;
    let jobs: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    p.publish_batch("acme", "prod", "jobs", &jobs)
        .await
        .unwrap();

    let opts = ConsumeOptions {
        start: StartAt::Earliest,
        max_in_flight: 100,
        ack_wait: Duration::from_secs(60),
    };
    let a = s.client(t, KEY_ACME).await;
    let mut sub_a = a
        .consume("acme", "prod", "jobs", "workers", opts)
        .await
        .unwrap();
    assert_eq!(take(&mut sub_a, 10).await, expect(0..10));
    assert_eq!(sub_a.ack(&[0, 1, 2, 3, 4]).await.unwrap(), 5);
    assert_eq!(
        sub_a.ack(&[4, 99]).await.unwrap(),
        0,
        "twice, and never sent"
    );
    // The member crashes mid-batch: its connection goes away.
    drop(sub_a);
    a.close().await;

    let b = s.client(t, KEY_ACME).await;
    let mut sub_b = b
        .consume("acme", "prod", "jobs", "workers", opts)
        .await
        .unwrap();
    assert_eq!(take(&mut sub_b, 5).await, expect(5..10));
    assert_eq!(sub_b.ack(&[5, 6, 7, 8, 9]).await.unwrap(), 5);
    p.publish("acme", "prod", "jobs", "m10").await.unwrap();
    assert_eq!(
        take(&mut sub_b, 1).await,
        expect(10..11),
        "acknowledged messages did not come again"
    );
    sub_b.ack(&[10]).await.unwrap();

    // The committed position is server-side and survives a restart.
    drop(sub_b);
    b.close().await;
    p.close().await;
    let dir = s.stop().await;
    let s = start_in(dir, |_| {}).await;
    let info = s
        .admin(KEY_ACME)
        .call("GET", "/v1/tenants/acme/namespaces/prod/streams/jobs", None)
        .await
        .unwrap();
    assert_eq!(info.body["consumers"][0]["name"], "workers");
    assert_eq!(info.body["consumers"][0]["committed"], 11);
    assert_eq!(info.body["next_offset"], 11);
    let c = s.client(t, KEY_ACME).await;
    let mut sub = c
        .consume("acme", "prod", "jobs", "workers", opts)
        .await
        .unwrap();
    c.publish("acme", "prod", "jobs", "m11").await.unwrap();
    assert_eq!(take(&mut sub, 1).await, expect(11..12));
}

async fn redelivery_after_ack_wait(t: Transport) {
    let s = start().await;
    create(&s, "retry", json!({})).await;
    let c = s.client(t, KEY_ACME).await;
    c.publish_batch("acme", "prod", "retry", ["m0", "m1"])
        .await
        .unwrap();
    let mut sub = c
        .consume(
            "acme",
            "prod",
            "retry",
            "slow",
            ConsumeOptions {
                start: StartAt::Earliest,
                max_in_flight: 10,
                ack_wait: Duration::from_millis(200),
            },
        )
        .await
        .unwrap();
    assert_eq!(take(&mut sub, 2).await, expect(0..2));
    sub.ack(&[1]).await.unwrap();
    assert_eq!(take(&mut sub, 1).await, expect(0..1), "0 timed out");
    assert_eq!(sub.ack(&[0]).await.unwrap(), 1);
}

async fn refusals(t: Transport) {
    let s = start().await;
    let c = s.client(t, KEY_ACME).await;
    let code = |e: rampart_client::ClientError| e.code().map(|c| c.as_u16());
    let e = c
        .subscribe_from("acme", "prod", "live", StartAt::Earliest)
        .await
        .unwrap_err();
    assert_eq!(code(e), Some(400), "replay needs a durable stream");
    let e = c
        .consume("acme", "prod", "live", "w", ConsumeOptions::default())
        .await
        .unwrap_err();
    assert_eq!(code(e), Some(400));
    let plain = c.subscribe("acme", "prod", "live").await.unwrap();
    assert_eq!(code(plain.ack(&[0]).await.unwrap_err()), Some(404));
    create(&s, "d", json!({})).await;
    let e = c
        .subscribe_from("acme", "prod", "d", StartAt::Offset(5))
        .await
        .unwrap_err();
    assert_eq!(code(e), Some(400), "past the end");
    // Another tenant's durable stream stays out of reach.
    let g = s.client(t, KEY_GLOBEX).await;
    let e = g
        .consume("acme", "prod", "d", "w", ConsumeOptions::default())
        .await
        .unwrap_err();
    assert_eq!(code(e), Some(403));
    // Bad settings at creation get a clear 400.
    let r = s
        .admin(KEY_ACME)
        .call(
            "POST",
            "/v1/tenants/acme/namespaces/prod/streams",
            Some(&json!({ "name": "x", "durable": true, "sync": "sometimes" })),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    assert!(r.error().contains("sync"), "{}", r.error());
    // The server is still serving.
    c.ping().await.unwrap();
}

async fn torn_tails_are_cut_and_damage_is_refused(t: Transport) {
    let s = start().await;
    create(&s, "good", json!({})).await;
    create(&s, "bad", json!({})).await;
    let c = s.client(t, KEY_ACME).await;
    for i in 0..5u64 {
        let batch: Vec<String> = (i * 10..i * 10 + 10).map(|n| format!("m{n}")).collect();
        c.publish_batch("acme", "prod", "good", &batch)
            .await
            .unwrap();
        c.publish_batch("acme", "prod", "bad", &batch)
            .await
            .unwrap();
    }
    c.close().await;
    let dir = s.stop().await;
    let seg = |name: &str| {
        files_under(&dir.path().join(format!("streams/acme/prod/{name}/log")))
            .into_iter()
            .find(|p| p.extension().is_some_and(|e| e == "seg"))
            .unwrap()
    };
    // good: a crash in the middle of a write left half a frame at the end.
    let good = seg("good");
    let mut bytes = std::fs::read(&good).unwrap();
    let len = bytes.len();
    bytes.extend_from_within(..len / 10);
    std::fs::write(&good, &bytes).unwrap();
    // bad: one flipped byte inside the first block.
    let bad = seg("bad");
    let mut bytes = std::fs::read(&bad).unwrap();
    bytes[60] ^= 0x01;
    std::fs::write(&bad, &bytes).unwrap();

    let s = start_in(dir, |_| {}).await;
    let admin = s.admin(KEY_ACME);
    let info = admin
        .call("GET", "/v1/tenants/acme/namespaces/prod/streams/good", None)
        .await
        .unwrap();
    assert!(info.body["recovery"]["truncated_bytes"].as_u64().unwrap() > 0);
    assert_eq!(info.body["next_offset"], 50);
    let info = admin
        .call("GET", "/v1/tenants/acme/namespaces/prod/streams/bad", None)
        .await
        .unwrap();
    assert_eq!(info.body["recovery"]["damaged"], json!([[0, 10]]));

    let c = s.client(t, KEY_ACME).await;
    let mut good = c
        .subscribe_from("acme", "prod", "good", StartAt::Earliest)
        .await
        .unwrap();
    assert_eq!(take(&mut good, 50).await, expect(0..50));
    let mut bad = c
        .subscribe_from("acme", "prod", "bad", StartAt::Earliest)
        .await
        .unwrap();
    let end = tokio::time::timeout(WAIT, bad.next()).await.unwrap();
    assert!(end.is_none(), "the damaged range is refused, not served");
    let err = c.take_async_error().expect("the reason is reported");
    assert!(err.to_string().contains("damaged"), "{err}");
    let mut rest = c
        .subscribe_from("acme", "prod", "bad", StartAt::Offset(10))
        .await
        .unwrap();
    assert_eq!(take(&mut rest, 40).await, expect(10..50));
    // Appends go on after the damage.
    c.publish("acme", "prod", "bad", "m50").await.unwrap();
    assert_eq!(take(&mut rest, 1).await, expect(50..51));
}

async fn deleting_a_durable_stream_removes_its_files(t: Transport) {
    let s = start().await;
    create(&s, "gone", json!({})).await;
    let c = s.client(t, KEY_ACME).await;
    c.publish("acme", "prod", "gone", "x").await.unwrap();
    let mut sub = c
        .subscribe_from("acme", "prod", "gone", StartAt::Earliest)
        .await
        .unwrap();
    next_event(&mut sub, WAIT.as_secs()).await;
    let dir = s.data_dir().join("streams/acme/prod/gone");
    assert!(dir.exists());
    let r = s
        .admin(KEY_ACME)
        .call(
            "DELETE",
            "/v1/tenants/acme/namespaces/prod/streams/gone",
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 204);
    assert!(tokio::time::timeout(WAIT, sub.next())
        .await
        .unwrap()
        .is_none());
    assert!(!dir.exists());
}

/// What a pipelined frame's answers must be.
enum Answer {
    /// `n` ACKs of `count` messages each.
    Acks {
        n: u32,
        count: u32,
        durability: rampart_proto::Durability,
    },
    Nack(u16),
    Pong,
}

fn acks(durability: rampart_proto::Durability) -> Answer {
    Answer::Acks {
        n: 1,
        count: 1,
        durability,
    }
}

/// Many PUBLISH and PUBLISH_BATCH frames in one write, as a client with
/// many publishes in flight sends them: the server keeps reading while a
/// durable stream fsyncs, yet answers every frame in frame order (a live
/// publish, a refusal and a PING in between), and still answers the
/// publishes in flight when the peer stops sending. The stream holds the
/// messages in the order sent.
async fn pipelined_publishes_are_answered_in_frame_order(t: Transport) {
    use bytes::{Bytes, BytesMut};
    use rampart_proto::{AckMode, Frame, Message, Publish, PublishBatch};
    use tokio::io::AsyncWriteExt;

    let s = start().await;
    create(&s, "ledger", json!({ "sync": "on_commit" })).await;
    let mut raw = s.raw(t).await;
    raw.send(&hello()).await;
    raw.recv().await.unwrap();
    raw.send(&auth(KEY_ACME)).await;
    raw.recv().await.unwrap();

    let mut bytes = BytesMut::new();
    let mut want = Vec::new();
    let mut stored = Vec::new();
    let mut id = 10u64;
    let mut push = |msg: Message, answer: Answer| {
        if let Answer::Acks { .. } = answer {
            match &msg {
                Message::Publish(p) if p.stream.as_str() == "ledger" => {
                    stored.push(String::from_utf8(p.payload.to_vec()).unwrap());
                }
                Message::PublishBatch(b) if b.stream.as_str() == "ledger" => {
                    let batch = rampart_proto::EventBatch {
                        subscription_id: 0,
                        missed: 0,
                        first_seq: 0,
                        count: b.count,
                        entries: b.entries.clone(),
                    };
                    for p in batch.payloads() {
                        stored.push(String::from_utf8(p.to_vec()).unwrap());
                    }
                }
                _ => {}
            }
        }
        Frame::new(id, msg).encode(&mut bytes);
        want.push((id, answer));
        id += 1;
    };
    let publish = |tenant: &str, stream: &str, n: usize| {
        Message::Publish(Publish {
            ack: AckMode::Message,
            tenant: tenant.parse().unwrap(),
            namespace: "prod".parse().unwrap(),
            stream: stream.parse().unwrap(),
            payload: Bytes::from(format!("m{n}")),
        })
    };
    let padded_batch = |mode: AckMode, from: usize, n: usize, pad: usize| {
        let payloads: Vec<String> = (from..from + n)
            .map(|i| format!("m{i}{}", "x".repeat(pad)))
            .collect();
        Message::PublishBatch(PublishBatch::from_payloads(
            mode,
            "acme".parse().unwrap(),
            "prod".parse().unwrap(),
            "ledger".parse().unwrap(),
            payloads.iter().map(String::as_bytes),
        ))
    };
    let batch = |mode: AckMode, from: usize, n: usize| padded_batch(mode, from, n, 0);
    use rampart_proto::Durability as D;
    for n in 0..100 {
        push(publish("acme", "ledger", n), acks(D::Fsynced));
    }
    push(publish("acme", "live", 0), acks(D::Memory));
    push(publish("globex", "ledger", 0), Answer::Nack(403));
    for n in 100..150 {
        push(publish("acme", "ledger", n), acks(D::Fsynced));
    }
    let per_message = Answer::Acks {
        n: 3,
        count: 1,
        durability: D::Fsynced,
    };
    push(batch(AckMode::Message, 150, 3), per_message);
    let whole = Answer::Acks {
        n: 1,
        count: 2,
        durability: D::Fsynced,
    };
    push(batch(AckMode::Batch, 153, 2), whole);
    // Batches of 800 KB: more than a connection keeps waiting (1 MiB), so
    // it waits for the older ones before reading on.
    for from in [2000, 2010, 2020] {
        let big = Answer::Acks {
            n: 1,
            count: 4,
            durability: D::Fsynced,
        };
        push(padded_batch(AckMode::Batch, from, 4, 200_000), big);
    }
    push(Message::Ping, Answer::Pong);
    for n in 155..190 {
        push(publish("acme", "ledger", n), acks(D::Fsynced));
        if n % 10 == 0 {
            push(
                batch(AckMode::Batch, 1000 + n, 4),
                Answer::Acks {
                    n: 1,
                    count: 4,
                    durability: D::Fsynced,
                },
            );
        }
    }
    raw.wr.write_all(&bytes).await.unwrap();
    // Nothing more comes from this side: what is in flight is answered.
    raw.wr.shutdown().await.unwrap();

    for (id, answer) in want {
        let n = match answer {
            Answer::Acks { n, .. } => n,
            _ => 1,
        };
        for _ in 0..n {
            let f = raw.recv().await.expect("every frame answered");
            assert_eq!(f.id, id, "answers in frame order");
            match (&answer, &f.msg) {
                (
                    Answer::Acks {
                        count, durability, ..
                    },
                    Message::Ack(a),
                ) => assert_eq!((a.count, a.durability), (*count, *durability)),
                (Answer::Nack(code), Message::Nack(n)) => assert_eq!(n.code.0, *code),
                (Answer::Pong, Message::Pong) => {}
                (_, other) => panic!("frame {id}: unexpected {other:?}"),
            }
        }
    }
    assert!(raw.recv().await.is_none(), "closed after the answers");

    let c = s.client(t, KEY_ACME).await;
    let mut all = c
        .subscribe_from("acme", "prod", "ledger", StartAt::Earliest)
        .await
        .unwrap();
    let got: Vec<String> = take(&mut all, stored.len())
        .await
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    assert_eq!(got, stored);
}

/// `publish_async` keeps many publishes in flight from one task: each
/// gets its own answer (a refusal among them too), and the stream holds
/// the accepted ones in the order they were published.
async fn async_publishes_in_flight_from_one_task(t: Transport) {
    use std::collections::VecDeque;

    let s = start().await;
    create(&s, "ledger", json!({ "sync": "on_commit" })).await;
    let c = s.client(t, KEY_ACME).await;
    let e = c
        .publish_async("acme", "prod", "no/such", "x")
        .await
        .unwrap_err();
    assert!(
        matches!(e, rampart_client::ClientError::InvalidArgument(_)),
        "{e}"
    );
    let mut in_flight = VecDeque::new();
    let mut stored = Vec::new();
    let mut refused = 0;
    for i in 0..300usize {
        // Every 50th goes to another tenant's stream, which this key may
        // not publish to.
        let tenant = if i % 50 == 7 { "globex" } else { "acme" };
        let pending = c
            .publish_async(tenant, "prod", "ledger", format!("m{i}"))
            .await
            .unwrap();
        in_flight.push_back((i, tenant, pending));
        while in_flight.len() > 64 || (i == 299 && !in_flight.is_empty()) {
            let (n, tenant, pending) = in_flight.pop_front().unwrap();
            match (tenant, pending.await) {
                ("acme", Ok(acked)) => {
                    assert_eq!(acked.count, 1);
                    assert_eq!(acked.durability, Durability::Fsynced);
                    stored.push(format!("m{n}"));
                }
                ("globex", Err(e)) => {
                    assert_eq!(e.code().map(|c| c.as_u16()), Some(403), "{e}");
                    refused += 1;
                }
                (tenant, r) => panic!("publish {n} to {tenant}: {r:?}"),
            }
        }
    }
    assert_eq!(refused, 6);
    assert_eq!(stored.len(), 294);
    let mut sub = c
        .subscribe_from("acme", "prod", "ledger", StartAt::Earliest)
        .await
        .unwrap();
    let got = take(&mut sub, stored.len()).await;
    let want: Vec<(u64, String)> = stored
        .into_iter()
        .zip(0u64..)
        .map(|(p, i)| (i, p))
        .collect();
    assert_eq!(got, want);
}

both_transports!(
    async_publishes_in_flight_from_one_task,
    pipelined_publishes_are_answered_in_frame_order,
    acks_levels_replay_and_restart,
    replay_by_time_and_catch_up_while_publishing,
    consumers_redeliver_what_a_crashed_member_did_not_ack,
    redelivery_after_ack_wait,
    refusals,
    torn_tails_are_cut_and_damage_is_refused,
    deleting_a_durable_stream_removes_its_files,
);

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

async fn erasing_a_stream_makes_its_backups_unreadable(t: Transport) {
    let s = start().await;
    create(&s, "user-42", json!({})).await;
    let c = s.client(t, KEY_ACME).await;
    c.publish_batch("acme", "prod", "user-42", ["personal-1", "personal-2"])
        .await
        .unwrap();
    // Someone keeps a copy of the files (a backup).
    let dir = s.data_dir().join("streams/acme/prod/user-42");
    let backup = tempfile::tempdir().unwrap();
    copy_dir(&dir, backup.path());

    let admin = s.admin(KEY_ACME);
    let r = admin
        .call(
            "POST",
            "/v1/tenants/acme/namespaces/prod/streams/live/erase",
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 404, "undeclared");
    let r = admin
        .call(
            "POST",
            "/v1/tenants/acme/namespaces/prod/streams/user-42/erase",
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.error());
    assert!(r.body["key_versions_destroyed"].as_u64().unwrap() >= 1);
    assert!(!dir.exists());

    // The backup put back under a new stream of the same name: the blocks
    // are intact (their CRCs pass) but their key is gone.
    create(&s, "user-42", json!({})).await;
    c.close().await;
    let data = s.stop().await;
    let dir = data.path().join("streams/acme/prod/user-42");
    std::fs::remove_dir_all(&dir).unwrap();
    copy_dir(backup.path(), &dir);
    let s = start_in(data, |_| {}).await;
    let c = s.client(t, KEY_ACME).await;
    let mut sub = c
        .subscribe_from("acme", "prod", "user-42", StartAt::Earliest)
        .await
        .unwrap();
    assert!(tokio::time::timeout(WAIT, sub.next())
        .await
        .unwrap()
        .is_none());
    let err = c.take_async_error().expect("reported");
    assert!(err.to_string().contains("cannot be decrypted"), "{err}");
}

both_transports!(erasing_a_stream_makes_its_backups_unreadable);

async fn wait_for_job(s: &TestServer) -> serde_json::Value {
    let admin = s.admin(KEY_ACME);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let r = admin
            .call("GET", "/v1/tenants/acme/encryption", None)
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.error());
        if !r.body["job"]["running"].as_bool().unwrap_or(false) {
            return r.body;
        }
        assert!(std::time::Instant::now() < deadline, "job ends");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn rotation_reencrypts_stream_blocks(t: Transport) {
    let s = start_with(|c| c.stream_segment_bytes = 4096).await;
    create(&s, "ledger", json!({})).await;
    let c = s.client(t, KEY_ACME).await;
    for i in 0..30u64 {
        let batch: Vec<String> = (i * 10..i * 10 + 10).map(|n| format!("m{n}")).collect();
        c.publish_batch("acme", "prod", "ledger", &batch)
            .await
            .unwrap();
    }
    let admin = s.admin(KEY_ACME);
    let before = wait_for_job(&s).await;
    let versions = before["stream_blocks_by_key_version"].as_object().unwrap();
    assert_eq!(versions.len(), 1, "{before}");
    assert_eq!(before["stream_blocks_under_old_keys"], 0);

    // A rotation without --reencrypt leaves old blocks under the old key.
    let r = admin
        .call("POST", "/v1/tenants/acme/encryption/rotate", None)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.error());
    let mid = wait_for_job(&s).await;
    let old = mid["stream_blocks_under_old_keys"].as_u64().unwrap();
    assert!(old > 0, "{mid}");

    // With it, a background job rewrites them.
    let r = admin
        .call(
            "POST",
            "/v1/tenants/acme/encryption/rotate",
            Some(&json!({ "reencrypt": true })),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.error());
    // Publishing goes on while it runs.
    c.publish("acme", "prod", "ledger", "m300").await.unwrap();
    let after = wait_for_job(&s).await;
    assert_eq!(after["stream_blocks_under_old_keys"], 0, "{after}");
    assert!(after["job"]["blocks_resealed"].as_u64().unwrap() >= old);
    assert!(after["job"]["error"].is_null());
    let now = after["stream_blocks_by_key_version"].as_object().unwrap();
    assert_eq!(now.len(), 1, "one version left: {after}");
    assert!(!versions.keys().any(|v| now.contains_key(v)), "a new one");

    let mut all = c
        .subscribe_from("acme", "prod", "ledger", StartAt::Earliest)
        .await
        .unwrap();
    assert_eq!(take(&mut all, 301).await, expect(0..301));
    drop(all);
    c.close().await;

    // The intent was cleared: nothing resumes, everything reads back.
    let dir = s.stop().await;
    let s = start_in(dir, |c| c.stream_segment_bytes = 4096).await;
    let st = wait_for_job(&s).await;
    assert!(st["job"].is_null(), "no job after a finished one: {st}");
    assert_eq!(st["stream_blocks_under_old_keys"], 0);
    let c = s.client(t, KEY_ACME).await;
    let mut all = c
        .subscribe_from("acme", "prod", "ledger", StartAt::Earliest)
        .await
        .unwrap();
    assert_eq!(take(&mut all, 301).await, expect(0..301));
}

both_transports!(rotation_reencrypts_stream_blocks);

async fn blocks_moved_to_another_stream_or_tenant_do_not_open(t: Transport) {
    let s = start().await;
    create(&s, "source", json!({})).await;
    create(&s, "other", json!({})).await;
    create_stream(
        &s,
        KEY_GLOBEX,
        "globex",
        "source",
        json!({ "durable": true }),
    )
    .await;
    let c = s.client(t, KEY_ACME).await;
    c.publish_batch("acme", "prod", "source", ["secret-1", "secret-2"])
        .await
        .unwrap();
    c.close().await;
    let data = s.stop().await;
    // The same bytes, at the same offsets, under another stream of the
    // tenant and under another tenant's stream of the same name.
    let from = data.path().join("streams/acme/prod/source/log");
    for to in [
        "streams/acme/prod/other/log",
        "streams/globex/prod/source/log",
    ] {
        let to = data.path().join(to);
        std::fs::remove_dir_all(&to).unwrap();
        copy_dir(&from, &to);
    }
    let s = start_in(data, |_| {}).await;
    for (key, tenant, stream) in [
        (KEY_ACME, "acme", "other"),
        (KEY_GLOBEX, "globex", "source"),
    ] {
        let c = s.client(t, key).await;
        let mut sub = c
            .subscribe_from(tenant, "prod", stream, StartAt::Earliest)
            .await
            .unwrap();
        assert!(
            tokio::time::timeout(WAIT, sub.next())
                .await
                .unwrap()
                .is_none(),
            "{tenant}/{stream} served moved blocks"
        );
        let err = c.take_async_error().expect("reported");
        assert!(err.to_string().contains("cannot be decrypted"), "{err}");
    }
    // The original still reads.
    let c = s.client(t, KEY_ACME).await;
    let mut sub = c
        .subscribe_from("acme", "prod", "source", StartAt::Earliest)
        .await
        .unwrap();
    assert_eq!(
        &next_event(&mut sub, WAIT.as_secs()).await.payload[..],
        b"secret-1"
    );
}

both_transports!(blocks_moved_to_another_stream_or_tenant_do_not_open);
