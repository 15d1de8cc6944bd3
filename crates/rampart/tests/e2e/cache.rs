use std::time::Duration;

use rampart_client::Transport;

use crate::common::*;

async fn put_get_delete(t: Transport) {
    let s = start().await;
    let c = s.client(t, KEY_ACME).await;
    assert_eq!(
        c.cache_get("acme", "prod", "sessions", "user:1")
            .await
            .unwrap(),
        None
    );
    c.cache_put("acme", "prod", "sessions", "user:1", "alice", None)
        .await
        .unwrap();
    assert_eq!(
        c.cache_get("acme", "prod", "sessions", "user:1")
            .await
            .unwrap()
            .as_deref(),
        Some(&b"alice"[..])
    );
    // Scoped: another namespace or cache does not see it.
    assert_eq!(
        c.cache_get("acme", "staging", "sessions", "user:1")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        c.cache_get("acme", "prod", "carts", "user:1")
            .await
            .unwrap(),
        None
    );
    assert!(c
        .cache_delete("acme", "prod", "sessions", "user:1")
        .await
        .unwrap());
    assert!(!c
        .cache_delete("acme", "prod", "sessions", "user:1")
        .await
        .unwrap());
    assert_eq!(
        c.cache_get("acme", "prod", "sessions", "user:1")
            .await
            .unwrap(),
        None
    );
}

async fn ttl_expiry(t: Transport) {
    let s = start().await;
    let c = s.client(t, KEY_ACME).await;
    c.cache_put(
        "acme",
        "prod",
        "sessions",
        "short",
        "v",
        Some(Duration::from_millis(1500)),
    )
    .await
    .unwrap();
    c.cache_put(
        "acme",
        "prod",
        "sessions",
        "long",
        "v",
        Some(Duration::from_secs(600)),
    )
    .await
    .unwrap();
    assert!(c
        .cache_get("acme", "prod", "sessions", "short")
        .await
        .unwrap()
        .is_some());
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(
        c.cache_get("acme", "prod", "sessions", "short")
            .await
            .unwrap(),
        None
    );
    assert!(c
        .cache_get("acme", "prod", "sessions", "long")
        .await
        .unwrap()
        .is_some());
}

async fn memory_quota_is_a_clear_error(t: Transport) {
    let s = start_with(|c| {
        c.cache_max_bytes_per_tenant = 64 * 1024;
        c.cache_max_value_bytes = 40 * 1024;
    })
    .await;
    let c = s.client(t, KEY_ACME).await;
    let big = vec![7u8; 30 * 1024];
    c.cache_put("acme", "p", "c", "a", big.clone(), None)
        .await
        .unwrap();
    c.cache_put("acme", "p", "c", "b", big.clone(), None)
        .await
        .unwrap();
    let e = c
        .cache_put("acme", "p", "c", "c", big.clone(), None)
        .await
        .unwrap_err();
    assert_eq!(e.code().map(|c| c.0), Some(507), "{e}");
    assert!(e.to_string().contains("quota"), "{e}");
    let e = c
        .cache_put("acme", "p", "c", "d", vec![0u8; 41 * 1024], None)
        .await
        .unwrap_err();
    assert_eq!(e.code().map(|c| c.0), Some(413), "{e}");
    // Another tenant is unaffected.
    let g = s.client(t, KEY_GLOBEX).await;
    g.cache_put("globex", "p", "c", "a", big, None)
        .await
        .unwrap();
    // Freeing space makes room again.
    assert!(c.cache_delete("acme", "p", "c", "a").await.unwrap());
    c.cache_put("acme", "p", "c", "c", vec![1u8; 1024], None)
        .await
        .unwrap();
}

both_transports!(put_get_delete, ttl_expiry, memory_quota_is_a_clear_error);
