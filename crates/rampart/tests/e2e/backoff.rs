//! Client back-off as told (issue 8): a client over a rate limit waits the
//! server's retry-after and sends again, so every request succeeds, only
//! later; with retrying off it gets the 429 and its retry-after.

use std::time::{Duration, Instant};

use rampart_client::{AdminClient, Client, ClientError, ErrorCode, Transport};

use crate::common::*;

/// 20 publishes a second for the tenant, a bucket of 20 (burst 1).
fn twenty_per_sec(c: &mut rampart_server::Config) {
    c.tenant_limits.publish_msgs_per_sec = Some(20);
    c.tenant_limits.cache_ops_per_sec = Some(20);
    c.tenant_limits.burst = Some(1.0);
}

fn assert_rate_limited(e: &ClientError) {
    match e {
        ClientError::Nack {
            code, retry_after, ..
        } => {
            assert_eq!(*code, ErrorCode::TOO_MANY_REQUESTS, "{e}");
            assert!(
                retry_after.is_some_and(|d| d > Duration::ZERO && d <= Duration::from_secs(1)),
                "retry after {retry_after:?}"
            );
        }
        other => panic!("expected NACK 429, got {other}"),
    }
}

/// A client of `s` over `t` that does not wait out rate limits: it gets
/// the 429 and its retry-after.
async fn impatient_client(s: &TestServer, t: Transport) -> Client {
    Client::connect(
        &s.url(t),
        s.config(KEY_ACME).with_rate_limit_max_wait(Duration::ZERO),
    )
    .await
    .unwrap()
}

async fn acked_publishes_wait_as_told(t: Transport) {
    let s = start_with(twenty_per_sec).await;
    let sub_client = s.client(t, KEY_ACME).await;
    let mut sub = sub_client.subscribe("acme", "prod", "paced").await.unwrap();

    // Back-off on (the default): 60 acknowledged publishes all succeed. The
    // first 20 fill the bucket; the other 40 take 2 s at 20/s.
    let c = s.client(t, KEY_ACME).await;
    let started = Instant::now();
    for i in 0..60 {
        let acked = c
            .publish("acme", "prod", "paced", format!("m{i}"))
            .await
            .unwrap_or_else(|e| panic!("publish {i}: {e}"));
        assert_eq!(acked.count, 1);
    }
    let took = started.elapsed();
    assert!(c.rate_limit_backoffs() > 0, "no back-off was needed");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(20),
        "60 publishes at 20/s took {took:?}"
    );
    // Each message arrives once, in order.
    receives_exactly(
        &mut sub,
        (0..60).map(|i| format!("m{i}")),
        "nothing sent twice",
    )
    .await;

    // Back-off off: the bucket is empty now, so the 429 comes back.
    let impatient = impatient_client(&s, t).await;
    let mut refused = None;
    for i in 0..40 {
        if let Err(e) = impatient
            .publish("acme", "prod", "paced", format!("x{i}"))
            .await
        {
            refused = Some(e);
            break;
        }
    }
    assert_rate_limited(&refused.expect("the limit refuses a publish"));
    assert_eq!(impatient.rate_limit_backoffs(), 0);

    // Batches and cache operations back off too.
    let batch: Vec<String> = (0..10).map(|i| format!("b{i}")).collect();
    for _ in 0..3 {
        assert_eq!(
            c.publish_batch("acme", "prod", "paced", &batch)
                .await
                .unwrap(),
            10
        );
    }
    // 40 puts at 20/s with a bucket of 20 take at least a second, whether
    // the client waited on refusals or queued behind its paced resends (a
    // lower bound only: a slow machine cannot fail it).
    let started = Instant::now();
    for i in 0..40 {
        c.cache_put("acme", "prod", "paced", &format!("k{i}"), "v", None)
            .await
            .unwrap_or_else(|e| panic!("cache put {i}: {e}"));
    }
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "cache ops never waited: {:?}",
        started.elapsed()
    );
    s.stop().await;
}

/// Async publishes are not sent again: a refused one's answer is the 429,
/// and what the server took arrives once, in the order published.
async fn async_publishes_hand_back_the_refusal(t: Transport) {
    let s = start_with(twenty_per_sec).await;
    let sub_client = s.client(t, KEY_ACME).await;
    let mut sub = sub_client.subscribe("acme", "prod", "paced").await.unwrap();
    let c = s.client(t, KEY_ACME).await;
    let started = Instant::now();
    let mut answers = Vec::new();
    for i in 0..40 {
        let pending = c
            .publish_async("acme", "prod", "paced", format!("m{i}"))
            .await
            .unwrap_or_else(|e| panic!("queuing publish {i}: {e}"));
        answers.push(pending);
    }
    let mut taken = Vec::new();
    let mut refused = 0;
    for (i, pending) in answers.into_iter().enumerate() {
        match pending.await {
            Ok(acked) => {
                assert_eq!(acked.count, 1);
                taken.push(format!("m{i}"));
            }
            Err(e) => {
                assert_rate_limited(&e);
                refused += 1;
            }
        }
    }
    assert_eq!(c.rate_limit_backoffs(), 0, "nothing was sent again");
    // Charged one by one although the server gathers them: no more than
    // the bucket and what it refilled meanwhile got through.
    let refill = (started.elapsed().as_secs_f64() * 20.0).ceil() as usize;
    assert!(
        taken.len() <= 20 + refill && refused > 0,
        "{} of 40 at once over a bucket of 20 were taken ({refill} refilled)",
        taken.len()
    );
    assert!(!taken.is_empty(), "none of 40 was taken");
    receives_exactly(&mut sub, taken, "a refused publish was delivered").await;
}

/// A batch larger than the bucket could never pass: it is refused whole
/// with 413 and the most one request may cost, and charges nothing, so
/// neither it nor a tenant in debt holds up what comes next.
async fn a_batch_over_the_burst_is_refused_and_costs_nothing(t: Transport) {
    let s = start_with(twenty_per_sec).await;
    let sub_client = s.client(t, KEY_ACME).await;
    let mut sub = sub_client.subscribe("acme", "prod", "paced").await.unwrap();
    let c = impatient_client(&s, t).await;
    let payloads: Vec<String> = (0..100).map(|i| format!("b{i}")).collect();
    match c.publish_batch("acme", "prod", "paced", &payloads).await {
        Err(ClientError::Nack {
            code,
            retry_after,
            message,
        }) => {
            assert_eq!(code, ErrorCode::PAYLOAD_TOO_LARGE, "{message}");
            assert_eq!(retry_after, None);
            assert_eq!(
                message,
                "tenant rate limit publish_msgs_per_sec=20 allows at most 20 in one \
                 request; split it"
            );
        }
        other => panic!("expected NACK 413, got {other:?}"),
    }
    // The bucket is whole: a batch of all of it passes at once.
    let whole: Vec<String> = (0..20).map(|i| format!("w{i}")).collect();
    assert_eq!(
        c.publish_batch("acme", "prod", "paced", &whole)
            .await
            .unwrap(),
        20
    );
    receives_exactly(&mut sub, whole, "a refused batch was delivered").await;
}

both_transports!(
    acked_publishes_wait_as_told,
    async_publishes_hand_back_the_refusal,
    a_batch_over_the_burst_is_refused_and_costs_nothing
);

/// The HTTPS API: 429 with `Retry-After` (whole seconds) is waited out by
/// the admin client, or returned when retrying is off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_calls_wait_for_retry_after() {
    let s = start_with(|c| {
        c.tenant_limits.http_requests_per_sec = Some(2);
        c.tenant_limits.burst = Some(1.0);
    })
    .await;
    let admin = s.admin(KEY_ACME);
    let started = Instant::now();
    for i in 0..5 {
        let r = admin.call("GET", "/v1/auth/whoami", None).await.unwrap();
        assert_eq!(r.status, 200, "call {i}: {}", r.text);
    }
    assert!(admin.rate_limit_backoffs() > 0, "no back-off was needed");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "5 calls at 2/s took {:?}",
        started.elapsed()
    );

    let url = format!("https://{}", s.server.http_addr().unwrap());
    let impatient = AdminClient::new(
        &url,
        &s.config(KEY_ACME).with_rate_limit_max_wait(Duration::ZERO),
    )
    .unwrap();
    let mut limited = None;
    for _ in 0..10 {
        let r = impatient
            .call("GET", "/v1/auth/whoami", None)
            .await
            .unwrap();
        if r.status == 429 {
            limited = Some(r);
            break;
        }
    }
    let r = limited.expect("the limit refuses a call");
    let secs: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!(secs >= 1, "Retry-After {secs}");
    assert_eq!(impatient.rate_limit_backoffs(), 0);
    s.stop().await;
}
