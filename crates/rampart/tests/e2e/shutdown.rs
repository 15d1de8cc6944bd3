//! A clean stop (SIGTERM): publishes in flight are answered and every one
//! acknowledged is on disk after a restart, the audit log ends with a
//! signed checkpoint, and a client that never reads cannot hold the stop
//! past `shutdown_timeout_secs`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use rampart_client::{StartAt, Transport};
use serde_json::Value;

use crate::common::*;

/// No single publish, nor the stop, may take this long: a hang fails.
const HANG: Duration = Duration::from_secs(30);

async fn in_flight_publishes_are_answered_and_kept(t: Transport) {
    let s = start().await;
    create_ledger(&s).await;
    let c = Arc::new(s.client(t, KEY_ACME).await);
    c.publish("acme", "prod", "ledger", "first").await.unwrap();

    // Publishers that keep several publishes in flight until the server
    // stops answering.
    let (workers, per) = (8usize, 400usize);
    let (first_ack, mut acked_once) = tokio::sync::watch::channel(false);
    let first_ack = Arc::new(first_ack);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (c, first_ack) = (c.clone(), first_ack.clone());
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut refused = 0usize;
            for i in 0..per {
                let payload = format!("w{w}-{i}");
                let answer = tokio::time::timeout(
                    HANG,
                    c.publish("acme", "prod", "ledger", payload.clone()),
                )
                .await
                .expect("every publish is answered (ACK, NACK or closed)");
                match answer {
                    Ok(_) => {
                        acked.push(payload);
                        first_ack.send_replace(true);
                    }
                    Err(_) => {
                        refused += 1;
                        break;
                    }
                }
            }
            (acked, refused)
        }));
    }
    acked_once.wait_for(|a| *a).await.unwrap();
    let (stopped, dir) = tokio::time::timeout(HANG, s.stop_within(Duration::from_secs(20)))
        .await
        .expect("the stop ends");
    assert!(stopped.is_clean(), "{stopped:?}");
    let mut acked = BTreeSet::from(["first".to_string()]);
    let mut refused = 0;
    for task in tasks {
        let (a, r) = task.await.unwrap();
        acked.extend(a);
        refused += r;
    }
    assert!(
        refused > 0,
        "the stop came after every publish: nothing was in flight"
    );

    // The audit log verifies and ends with the final checkpoint, just
    // after `server.stop`.
    let audit = dir.path().join("audit");
    let report = rampart_audit::verify_dir(&audit, None).expect("the audit log verifies");
    assert_eq!(report.unsigned_tail, 0, "{report:?}");
    let newest = audit_logs(&audit).pop().expect("an audit file");
    let text = std::fs::read_to_string(&newest).unwrap();
    let records: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let n = records.len();
    assert!(n >= 2, "{text}");
    assert_eq!(records[n - 1]["event_type"], "audit.checkpoint", "{text}");
    assert_eq!(records[n - 2]["event_type"], "server.stop", "{text}");

    // Every publish acknowledged is in the log after a restart.
    let s = start_in(dir, |_| {}).await;
    let c = s.client(t, KEY_ACME).await;
    let mut sub = c
        .subscribe_from("acme", "prod", "ledger", StartAt::Earliest)
        .await
        .unwrap();
    let mut missing = acked.clone();
    while !missing.is_empty() {
        let Ok(Some(e)) = tokio::time::timeout(Duration::from_secs(15), sub.next()).await else {
            panic!(
                "{} acknowledged publishes not in the log after a restart, e.g. {:?}",
                missing.len(),
                missing.iter().next()
            );
        };
        missing.remove(&String::from_utf8(e.payload.to_vec()).unwrap());
    }
}

async fn a_client_that_never_reads_cannot_hold_the_stop(t: Transport) {
    let s = start().await;
    // A subscriber that never reads what it is sent.
    let mut raw = s.raw(t).await;
    raw.send(&hello()).await;
    raw.recv().await.unwrap();
    raw.send(&auth(KEY_ACME)).await;
    raw.recv().await.unwrap();
    raw.send(&rampart_proto::Frame::new(
        3,
        rampart_proto::Subscribe {
            tenant: "acme".parse().unwrap(),
            namespace: "prod".parse().unwrap(),
            stream: "firehose".parse().unwrap(),
            start: rampart_proto::StartAt::New,
        },
    ))
    .await;
    raw.recv().await.unwrap();
    // A publisher that fills its queue (and, with the default
    // `slow_consumer_policy = block`, ends up waiting on it).
    let c = Arc::new(s.client(t, KEY_ACME).await);
    let publisher = {
        let c = c.clone();
        tokio::spawn(async move {
            let big = vec![b'x'; 60 * 1024];
            for _ in 0..2_000 {
                if c.publish("acme", "prod", "firehose", big.clone())
                    .await
                    .is_err()
                {
                    break;
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopped = tokio::time::timeout(HANG, s.stop_within(Duration::from_secs(1)))
        .await
        .expect("the stop ends despite a client that never reads");
    drop(stopped);
    let _ = tokio::time::timeout(HANG, publisher).await;
    drop(raw);
}

both_transports!(
    in_flight_publishes_are_answered_and_kept,
    a_client_that_never_reads_cannot_hold_the_stop,
);
