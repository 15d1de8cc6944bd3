use std::collections::BTreeSet;
use std::time::Duration;

use rampart_log::Plain;

use super::*;
use crate::{Broker, BrokerConfig, Stream, Subscription};

fn path() -> StreamPath {
    "acme/prod/orders".parse().unwrap()
}

fn opts(sync: SyncPolicy) -> DurableOptions {
    DurableOptions::new(sync, Arc::new(Plain))
}

fn open(dir: &Path, o: DurableOptions) -> (Broker, Arc<Stream>) {
    let broker = Broker::new(BrokerConfig::default());
    let d = DurableStream::open(path(), dir, o).unwrap();
    let s = broker.add_durable(Arc::new(d));
    (broker, s)
}

fn entries(msgs: &[String]) -> (u32, Bytes) {
    let mut b = EntriesBuilder::new();
    for m in msgs {
        b.push(m.as_bytes());
    }
    b.finish()
}

async fn publish(s: &Stream, from: usize, n: usize) -> Published {
    let msgs: Vec<String> = (from..from + n).map(|i| format!("m{i}")).collect();
    let (c, e) = entries(&msgs);
    s.publish_acked(c, e).await.unwrap()
}

/// Receives until `n` messages came; returns (offset, payload) pairs.
async fn take(sub: &Subscription, n: usize) -> Vec<(u64, String)> {
    let mut got = Vec::new();
    while got.len() < n {
        let mut out = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(5), sub.recv(&mut out, 4096))
            .await
            .expect("messages in time");
        assert_eq!(r, Some(0), "no loss");
        for b in out {
            let batch = EventBatch {
                subscription_id: 0,
                missed: 0,
                first_seq: b.first_seq,
                count: b.count,
                entries: b.entries,
            };
            for (i, p) in batch.payloads().enumerate() {
                got.push((
                    b.first_seq + i as u64,
                    String::from_utf8(p.to_vec()).unwrap(),
                ));
            }
        }
    }
    got
}

fn expect(range: std::ops::Range<u64>) -> Vec<(u64, String)> {
    range.map(|i| (i, format!("m{i}"))).collect()
}

#[tokio::test]
async fn appends_report_the_sync_level() {
    let dir = tempfile::tempdir().unwrap();
    let (_b, s) = open(dir.path(), opts(SyncPolicy::OnCommit));
    let p = publish(&s, 0, 3).await;
    assert_eq!((p.first_seq, p.count, p.level), (0, 3, Level::Fsynced));
    let dir2 = tempfile::tempdir().unwrap();
    let (_b, s) = open(dir2.path(), opts(SyncPolicy::None));
    assert_eq!(publish(&s, 0, 1).await.level, Level::Written);
    let b = Broker::new(BrokerConfig::default());
    let live = b.stream(&path()).unwrap();
    assert_eq!(publish(&live, 0, 1).await.level, Level::Memory);
    assert_eq!(
        live.subscribe_at(StartAt::Earliest).await.unwrap_err(),
        BrokerError::NotDurable
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_publishes_keep_their_order_and_resolve_at_the_level() {
    let dir = tempfile::tempdir().unwrap();
    let (_b, s) = open(dir.path(), opts(SyncPolicy::OnCommit));
    // Eight blocks queued before any is awaited: the offsets follow the
    // queueing order whatever order the commits are awaited in.
    let mut commits = Vec::new();
    for i in 0..8usize {
        let (c, e) = entries(&[format!("m{}", 2 * i), format!("m{}", 2 * i + 1)]);
        commits.push(s.publish_queued(c, e).await.unwrap());
    }
    let mut results = Vec::new();
    for c in commits.into_iter().rev() {
        results.push(c.await.unwrap());
    }
    results.reverse();
    for (i, p) in results.iter().enumerate() {
        assert_eq!(
            (p.first_seq, p.count, p.level),
            (2 * i as u64, 2, Level::Fsynced)
        );
    }
    let sub = s.subscribe_at(StartAt::Earliest).await.unwrap();
    assert_eq!(take(&sub, 16).await, expect(0..16));

    // try_take: nothing before the commit is known, the outcome once, then
    // nothing more.
    let (c, e) = entries(&["m16".to_string()]);
    let mut commit = s.publish_queued(c, e).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let p = loop {
        if let Some(r) = commit.try_take() {
            break r.unwrap();
        }
        assert!(std::time::Instant::now() < deadline, "commit in time");
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    assert_eq!((p.first_seq, p.level), (16, Level::Fsynced));
    assert!(commit.try_take().is_none());

    // A live stream's publish is complete when it is queued.
    let b = Broker::new(BrokerConfig::default());
    let live = b.stream(&path()).unwrap();
    let (c, e) = entries(&["x".to_string()]);
    let mut commit = live.publish_queued(c, e).await.unwrap();
    assert_eq!(commit.try_take().unwrap().unwrap().level, Level::Memory);
}

#[tokio::test]
async fn replay_from_earliest_offset_and_time_then_follow_live() {
    let dir = tempfile::tempdir().unwrap();
    let (_b, s) = open(dir.path(), opts(SyncPolicy::None));
    publish(&s, 0, 50).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let t = now_ms();
    publish(&s, 50, 50).await;

    let from_start = s.subscribe_at(StartAt::Earliest).await.unwrap();
    let from_offset = s.subscribe_at(StartAt::Offset(70)).await.unwrap();
    let from_time = s.subscribe_at(StartAt::TimestampMs(t)).await.unwrap();
    let from_now = s.subscribe_at(StartAt::New).await.unwrap();
    assert_eq!(take(&from_start, 100).await, expect(0..100));
    assert_eq!(take(&from_offset, 30).await, expect(70..100));
    assert_eq!(take(&from_time, 50).await, expect(50..100));

    // Catch-up while publishing goes on: a slow reader reads the log, a
    // fast one follows the end; neither sees a gap or a duplicate.
    let s2 = s.clone();
    let publisher = tokio::spawn(async move {
        for i in 0..40 {
            publish(&s2, 100 + i * 5, 5).await;
            tokio::task::yield_now().await;
        }
    });
    assert_eq!(take(&from_now, 200).await, expect(100..300));
    assert_eq!(take(&from_start, 200).await, expect(100..300));
    publisher.await.unwrap();
    assert!(matches!(
        s.subscribe_at(StartAt::Offset(301)).await,
        Err(BrokerError::BadStart(_))
    ));
}

#[tokio::test]
async fn a_reader_holds_its_position_across_batch_limits() {
    let dir = tempfile::tempdir().unwrap();
    let (_b, s) = open(dir.path(), opts(SyncPolicy::None));
    // Larger messages than one recv takes: one message per batch at least.
    let big: Vec<String> = (0..20)
        .map(|i| format!("m{i}{}", "x".repeat(3000)))
        .collect();
    let (c, e) = entries(&big);
    s.publish_acked(c, e).await.unwrap();
    let sub = s.subscribe_at(StartAt::Earliest).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 20 {
        let mut out = Vec::new();
        sub.recv(&mut out, 4096).await.unwrap();
        assert!(out.iter().map(|b| b.entries.len()).sum::<usize>() <= 2 * 4096);
        for b in out {
            seen.extend(b.first_seq..b.first_seq + u64::from(b.count));
        }
    }
    assert_eq!(seen, (0..20).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_crashed_member_s_unacknowledged_messages_go_to_another() {
    let dir = tempfile::tempdir().unwrap();
    let (_b, s) = open(dir.path(), opts(SyncPolicy::None));
    publish(&s, 0, 10).await;
    let a = s.consume("workers", StartAt::Earliest, None).unwrap();
    let got = take(&a, 10).await;
    assert_eq!(got, expect(0..10));
    // Acknowledge half of the batch, then crash.
    assert_eq!(a.ack(&[0, 1, 2, 3, 4]).unwrap(), 5);
    drop(a);
    let b = s.consume("workers", StartAt::Earliest, None).unwrap();
    assert_eq!(take(&b, 5).await, expect(5..10));
    assert_eq!(b.ack(&[5, 6, 7, 8, 9]).unwrap(), 5);
    publish(&s, 10, 1).await;
    assert_eq!(
        take(&b, 1).await,
        expect(10..11),
        "nothing acknowledged came again"
    );
}

#[tokio::test]
async fn redelivery_after_the_ack_wait() {
    let dir = tempfile::tempdir().unwrap();
    let (_b, s) = open(dir.path(), opts(SyncPolicy::None));
    publish(&s, 0, 3).await;
    let o = ConsumerOptions {
        max_in_flight: 100,
        ack_wait: Duration::from_millis(100),
    };
    let m = s.consume("c", StartAt::Earliest, Some(o)).unwrap();
    assert_eq!(take(&m, 3).await, expect(0..3));
    m.ack(&[1]).unwrap();
    // 0 and 2 were not acknowledged in time: they come again.
    let again = take(&m, 2).await;
    assert_eq!(again, vec![(0, "m0".into()), (2, "m2".into())]);
    assert_eq!(m.ack(&[0, 2]).unwrap(), 2);
    assert_eq!(s.durable().unwrap().consumers()[0].committed, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn competing_members_share_the_work_with_a_bounded_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let (_b, s) = open(dir.path(), opts(SyncPolicy::None));
    publish(&s, 0, 100).await;
    let o = ConsumerOptions {
        max_in_flight: 8,
        ack_wait: Duration::from_secs(30),
    };
    let mut members = Vec::new();
    for _ in 0..3 {
        members.push(Arc::new(
            s.consume("pool", StartAt::Earliest, Some(o)).unwrap(),
        ));
    }
    let mut tasks = Vec::new();
    for m in &members {
        let m = m.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let mut out = Vec::new();
                match tokio::time::timeout(Duration::from_millis(300), m.recv(&mut out, 1 << 20))
                    .await
                {
                    Ok(Some(_)) => {}
                    _ => break,
                }
                let offsets: Vec<u64> = out
                    .iter()
                    .flat_map(|b| b.first_seq..b.first_seq + u64::from(b.count))
                    .collect();
                assert!(offsets.len() <= 8, "in-flight bound");
                // Work takes time; meanwhile the others take the rest. The
                // pause after the ack gives the members woken by it (they
                // wait in recv) their turn even on a loaded machine.
                tokio::time::sleep(Duration::from_millis(2)).await;
                m.ack(&offsets).unwrap();
                mine.extend(offsets);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            mine
        }));
    }
    let mut all = Vec::new();
    let mut busy = 0;
    for t in tasks {
        let mine = t.await.unwrap();
        busy += usize::from(!mine.is_empty());
        all.extend(mine);
    }
    let unique: BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(all.len(), 100, "each message once (no timeouts)");
    assert_eq!(unique, (0..100).collect());
    assert!(busy >= 2, "work was shared");
}

#[tokio::test]
async fn consumer_positions_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (_b, s) = open(dir.path(), opts(SyncPolicy::OnCommit));
        publish(&s, 0, 10).await;
        let m = s.consume("c", StartAt::Earliest, None).unwrap();
        take(&m, 10).await;
        m.ack(&(0..6).collect::<Vec<_>>()).unwrap();
        let r = s.durable().unwrap().maintain(now_ms()).unwrap();
        assert_eq!(r.consumers_saved, 1);
        s.close_all().await;
    }
    let (_b, s) = open(dir.path(), opts(SyncPolicy::OnCommit));
    assert_eq!(s.durable().unwrap().consumers()[0].committed, 6);
    let m = s.consume("c", StartAt::New, None).unwrap();
    assert_eq!(take(&m, 4).await, expect(6..10));
}

#[tokio::test]
async fn retention_waits_for_consumers_unless_told_otherwise() {
    for overrides in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mut o = opts(SyncPolicy::None);
        o.segment_bytes = 256;
        o.max_bytes = Some(1);
        o.retention_overrides_consumers = overrides;
        let (_b, s) = open(dir.path(), o);
        let m = s.consume("c", StartAt::Earliest, None).unwrap();
        for i in 0..20 {
            publish(&s, i * 10, 10).await;
        }
        let d = s.durable().unwrap();
        let r = d.maintain(now_ms()).unwrap();
        if overrides {
            assert!(r.retention.segments_deleted > 0);
            let first = d.first_offset();
            let got = take(&m, 1).await;
            assert_eq!(got[0].0, first, "the consumer skips what retention removed");
            assert_eq!(d.consumers()[0].lost, first);
        } else {
            assert_eq!(r.retention.segments_deleted, 0);
            assert!(r.retention.kept_for_consumer > 0);
            assert_eq!(take(&m, 200).await, expect(0..200));
            m.ack(&(0..150).collect::<Vec<_>>()).unwrap();
            let r = d.maintain(now_ms()).unwrap();
            assert!(r.retention.segments_deleted > 0);
            assert!(d.first_offset() <= 150);
        }
    }
}

#[tokio::test]
async fn a_reader_behind_retention_is_told_what_it_missed() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(SyncPolicy::None);
    o.segment_bytes = 256;
    o.max_bytes = Some(1);
    let (_b, s) = open(dir.path(), o);
    let sub = s.subscribe_at(StartAt::Earliest).await.unwrap();
    for i in 0..20 {
        publish(&s, i * 10, 10).await;
    }
    let d = s.durable().unwrap();
    d.maintain(now_ms()).unwrap();
    let first = d.first_offset();
    assert!(first > 0);
    let mut out = Vec::new();
    assert_eq!(sub.recv(&mut out, 1 << 20).await, Some(first));
    assert_eq!(out[0].first_seq, first);
}

#[tokio::test]
async fn deleting_the_stream_ends_readers_and_members() {
    let dir = tempfile::tempdir().unwrap();
    let (b, s) = open(dir.path(), opts(SyncPolicy::None));
    let sub = s.subscribe_at(StartAt::New).await.unwrap();
    let m = s.consume("c", StartAt::New, None).unwrap();
    let removed = b.remove_stream(&path()).unwrap();
    removed.close_all().await;
    let mut out = Vec::new();
    assert_eq!(sub.recv(&mut out, 100).await, None);
    assert_eq!(m.recv(&mut out, 100).await, None);
    assert!(sub.ended().is_none());
    assert_eq!(
        s.publish_acked(1, entries(&["x".into()]).1)
            .await
            .unwrap_err(),
        BrokerError::StreamNotFound
    );
}

#[tokio::test]
async fn damaged_ranges_are_refused_to_readers_and_skipped_by_consumers() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(SyncPolicy::OnCommit);
    o.segment_bytes = 256;
    {
        let (_b, s) = open(dir.path(), o.clone());
        for i in 0..10 {
            publish(&s, i * 10, 10).await;
        }
    }
    // Flip one byte inside the first block's payload.
    let mut segs: Vec<_> = fs::read_dir(dir.path().join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segs.sort();
    let mut bytes = fs::read(&segs[0]).unwrap();
    bytes[45] ^= 0x40;
    fs::write(&segs[0], bytes).unwrap();

    let (_b, s) = open(dir.path(), o);
    let d = s.durable().unwrap();
    assert_eq!(d.recovery().damaged, vec![0..10]);
    let sub = s.subscribe_at(StartAt::Earliest).await.unwrap();
    let mut out = Vec::new();
    assert_eq!(sub.recv(&mut out, 1 << 20).await, None);
    assert!(out.is_empty(), "nothing wrong is served");
    assert_eq!(sub.ended(), Some(BrokerError::Damaged { from: 0, to: 10 }));
    // A reader resuming after the range gets the rest.
    let sub = s.subscribe_at(StartAt::Offset(10)).await.unwrap();
    assert_eq!(take(&sub, 90).await, expect(10..100));
    // A consumer cannot be stuck forever: it skips the range and counts it.
    let m = s.consume("c", StartAt::Earliest, None).unwrap();
    assert_eq!(take(&m, 90).await, expect(10..100));
    assert_eq!(d.consumers()[0].lost, 10);
}

#[tokio::test]
async fn an_idle_appender_thread_is_let_go_and_the_next_publish_starts_another() {
    let dir = tempfile::tempdir().unwrap();
    let d = DurableStream::open(path(), dir.path(), opts(SyncPolicy::OnCommit)).unwrap();
    let (c, e) = entries(&["a".to_string()]);
    assert_eq!(d.append(c, e).await.unwrap().first_seq, 0);
    let first = lock(&d.appender).as_ref().unwrap().downgrade();
    let now = now_ms();
    // Not idle yet: kept.
    d.maintain(now).unwrap();
    assert!(first.upgrade().is_some());
    // Idle: the stream lets the thread's queue go, so the thread ends.
    d.maintain(now + APPENDER_IDLE_MS + 1).unwrap();
    assert!(lock(&d.appender).is_none());
    assert!(first.upgrade().is_none(), "no sender keeps the old thread");
    let (c, e) = entries(&["b".to_string(), "c".to_string()]);
    let p = d.append(c, e).await.unwrap();
    assert_eq!((p.first_seq, p.count, p.level), (1, 2, Level::Fsynced));
    assert!(lock(&d.appender).is_some(), "a new appender took over");
    // Closing the stream lets it go too.
    d.close();
    assert!(lock(&d.appender).is_none());
}

/// An `on_commit` stream holding messages 0..10, acknowledged, and 10..15
/// written to its log behind the appender's back: what a block is between
/// its write and its fsync, which no reader may see yet.
async fn ten_acknowledged_and_five_written(dir: &Path) -> (Broker, Arc<Stream>) {
    let (b, s) = open(dir, opts(SyncPolicy::OnCommit));
    publish(&s, 0, 10).await;
    let log = s.durable().unwrap().log().clone();
    let unacked: Vec<String> = (10..15).map(|i| format!("m{i}")).collect();
    let slices: Vec<&[u8]> = unacked.iter().map(String::as_bytes).collect();
    log.append(&slices, now_ms()).unwrap();
    assert_eq!(log.next_offset(), 15);
    (b, s)
}

/// Waits 100 ms for a delivery on `sub` and fails if one comes.
async fn nothing_for_a_while(sub: &Subscription, why: &str) {
    let mut out = Vec::new();
    let early = tokio::time::timeout(Duration::from_millis(100), sub.recv(&mut out, 4096)).await;
    assert!(early.is_err(), "{why}: {out:?}");
}

#[tokio::test]
async fn a_reader_stops_at_the_acknowledged_end_not_at_what_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let (_b, s) = ten_acknowledged_and_five_written(dir.path()).await;
    let sub = s.subscribe_at(StartAt::Earliest).await.unwrap();
    assert_eq!(take(&sub, 10).await, expect(0..10));
    nothing_for_a_while(&sub, "delivered past the acknowledged end").await;

    publish(&s, 15, 5).await;
    assert_eq!(take(&sub, 10).await, expect(10..20));
}

/// "New" starts after everything written, acknowledged or not: a block
/// between its write and its fsync was published before the subscriber
/// came, so only what is published after reaches it, once acknowledged.
#[tokio::test]
async fn a_new_reader_starts_after_what_is_written_and_waits_for_the_acknowledged_end() {
    let dir = tempfile::tempdir().unwrap();
    let (_b, s) = ten_acknowledged_and_five_written(dir.path()).await;
    let sub = s.subscribe_at(StartAt::New).await.unwrap();
    nothing_for_a_while(&sub, "delivered before a publish").await;

    publish(&s, 15, 5).await;
    assert_eq!(take(&sub, 5).await, expect(15..20));
}
