//! What a limit set says: rates, burst and quotas, as written in the
//! configuration file and in the admin API.

use serde::{Deserialize, Serialize};

/// A rate limited by a token bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateKind {
    /// Messages published per second.
    PublishMsgs,
    /// Payload bytes published per second.
    PublishBytes,
    /// Event bytes delivered to subscribers per second.
    DeliverBytes,
    /// Cache get, put and delete operations per second.
    CacheOps,
    /// HTTPS API requests per second.
    HttpRequests,
}

impl RateKind {
    pub const ALL: [RateKind; 5] = [
        RateKind::PublishMsgs,
        RateKind::PublishBytes,
        RateKind::DeliverBytes,
        RateKind::CacheOps,
        RateKind::HttpRequests,
    ];

    /// The limit's name, as in the configuration and in error messages.
    pub fn name(self) -> &'static str {
        match self {
            RateKind::PublishMsgs => "publish_msgs_per_sec",
            RateKind::PublishBytes => "publish_bytes_per_sec",
            RateKind::DeliverBytes => "deliver_bytes_per_sec",
            RateKind::CacheOps => "cache_ops_per_sec",
            RateKind::HttpRequests => "http_requests_per_sec",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// A quota: a bound on how much of something exists at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaKind {
    /// Open, authenticated connections (wire protocol).
    Connections,
    /// Open subscriptions and consumers.
    Subscriptions,
    /// Streams defined (tenant level).
    Streams,
    /// Bytes kept in durable stream logs (tenant level).
    StoredBytes,
    /// Bytes held in the tenant's caches (tenant level).
    CacheBytes,
}

impl QuotaKind {
    pub const ALL: [QuotaKind; 5] = [
        QuotaKind::Connections,
        QuotaKind::Subscriptions,
        QuotaKind::Streams,
        QuotaKind::StoredBytes,
        QuotaKind::CacheBytes,
    ];

    pub fn name(self) -> &'static str {
        match self {
            QuotaKind::Connections => "max_connections",
            QuotaKind::Subscriptions => "max_subscriptions",
            QuotaKind::Streams => "max_streams",
            QuotaKind::StoredBytes => "max_stored_bytes",
            QuotaKind::CacheBytes => "max_cache_bytes",
        }
    }

    /// The status a request refused by this quota gets: 507 for storage,
    /// 429 for counts of things.
    pub fn status(self) -> u16 {
        match self {
            QuotaKind::StoredBytes | QuotaKind::CacheBytes => 507,
            _ => 429,
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// One set of limits, for a tenant or for a principal. Every field is
/// optional: a missing field falls back to the next level down (override,
/// then the configured default); missing everywhere means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_msgs_per_sec: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_bytes_per_sec: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliver_bytes_per_sec: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_ops_per_sec: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_requests_per_sec: Option<u64>,
    /// Burst tolerance: a bucket holds `rate * burst` tokens, so a client
    /// idle for a while may go this many times over its rate for a second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_subscriptions: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_streams: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_stored_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cache_bytes: Option<u64>,
}

/// Burst when no level sets one: twice the rate.
pub const DEFAULT_BURST: f64 = 2.0;

impl LimitSpec {
    pub fn rate(&self, k: RateKind) -> Option<u64> {
        match k {
            RateKind::PublishMsgs => self.publish_msgs_per_sec,
            RateKind::PublishBytes => self.publish_bytes_per_sec,
            RateKind::DeliverBytes => self.deliver_bytes_per_sec,
            RateKind::CacheOps => self.cache_ops_per_sec,
            RateKind::HttpRequests => self.http_requests_per_sec,
        }
    }

    pub fn quota(&self, k: QuotaKind) -> Option<u64> {
        match k {
            QuotaKind::Connections => self.max_connections,
            QuotaKind::Subscriptions => self.max_subscriptions,
            QuotaKind::Streams => self.max_streams,
            QuotaKind::StoredBytes => self.max_stored_bytes,
            QuotaKind::CacheBytes => self.max_cache_bytes,
        }
    }

    /// This set, with every field it leaves out taken from `fallback`.
    pub fn or(&self, fallback: &LimitSpec) -> LimitSpec {
        LimitSpec {
            publish_msgs_per_sec: self.publish_msgs_per_sec.or(fallback.publish_msgs_per_sec),
            publish_bytes_per_sec: self
                .publish_bytes_per_sec
                .or(fallback.publish_bytes_per_sec),
            deliver_bytes_per_sec: self
                .deliver_bytes_per_sec
                .or(fallback.deliver_bytes_per_sec),
            cache_ops_per_sec: self.cache_ops_per_sec.or(fallback.cache_ops_per_sec),
            http_requests_per_sec: self
                .http_requests_per_sec
                .or(fallback.http_requests_per_sec),
            burst: self.burst.or(fallback.burst),
            max_connections: self.max_connections.or(fallback.max_connections),
            max_subscriptions: self.max_subscriptions.or(fallback.max_subscriptions),
            max_streams: self.max_streams.or(fallback.max_streams),
            max_stored_bytes: self.max_stored_bytes.or(fallback.max_stored_bytes),
            max_cache_bytes: self.max_cache_bytes.or(fallback.max_cache_bytes),
        }
    }

    /// The burst factor in force.
    pub fn burst(&self) -> f64 {
        self.burst.unwrap_or(DEFAULT_BURST)
    }

    /// The most one request may cost against rate `k` at this level: its
    /// whole bucket, `rate × burst` (more is refused with 413); `None`
    /// when the rate is not limited.
    pub fn per_request(&self, k: RateKind) -> Option<u64> {
        crate::bucket::capacity(self.rate(k)?, self.burst()).map(u64::from)
    }

    /// Checks the values: rates at least 1 per second, burst in 1..=60.
    /// (Quotas may be 0: nothing of that kind allowed.)
    pub fn validate(&self) -> Result<(), String> {
        for k in RateKind::ALL {
            if self.rate(k) == Some(0) {
                return Err(format!(
                    "{} must be at least 1 (leave it out for no limit)",
                    k.name()
                ));
            }
        }
        if let Some(b) = self.burst {
            if !(1.0..=60.0).contains(&b) {
                return Err("burst must be between 1 and 60".into());
            }
        }
        Ok(())
    }

    /// True when the set limits nothing.
    pub fn is_empty(&self) -> bool {
        *self == LimitSpec::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_may_cost_at_most_a_whole_bucket() {
        let mut s = LimitSpec {
            publish_msgs_per_sec: Some(20),
            ..LimitSpec::default()
        };
        assert_eq!(s.per_request(RateKind::PublishMsgs), Some(40));
        s.burst = Some(1.5);
        assert_eq!(s.per_request(RateKind::PublishMsgs), Some(30));
        assert_eq!(s.per_request(RateKind::CacheOps), None);
        s.publish_msgs_per_sec = Some(crate::MAX_RATE);
        assert_eq!(s.per_request(RateKind::PublishMsgs), None);
    }

    #[test]
    fn fallback_fills_only_missing_fields() {
        let over = LimitSpec {
            publish_msgs_per_sec: Some(10),
            ..Default::default()
        };
        let def = LimitSpec {
            publish_msgs_per_sec: Some(1000),
            max_streams: Some(5),
            ..Default::default()
        };
        let m = over.or(&def);
        assert_eq!(m.rate(RateKind::PublishMsgs), Some(10));
        assert_eq!(m.quota(QuotaKind::Streams), Some(5));
        assert_eq!(m.rate(RateKind::CacheOps), None);
        assert_eq!(m.burst(), DEFAULT_BURST);
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused() {
        assert!(serde_json::from_str::<LimitSpec>(r#"{"publish_msg_per_sec": 1}"#).is_err());
        let zero: LimitSpec = serde_json::from_str(r#"{"cache_ops_per_sec": 0}"#).unwrap();
        assert!(zero.validate().unwrap_err().contains("cache_ops_per_sec"));
        let burst: LimitSpec = serde_json::from_str(r#"{"burst": 0.5}"#).unwrap();
        assert!(burst.validate().is_err());
        let quota: LimitSpec = serde_json::from_str(r#"{"max_streams": 0}"#).unwrap();
        assert!(quota.validate().is_ok());
    }

    #[test]
    fn names_are_the_serialized_field_names() {
        let s = LimitSpec {
            publish_msgs_per_sec: Some(1),
            publish_bytes_per_sec: Some(1),
            deliver_bytes_per_sec: Some(1),
            cache_ops_per_sec: Some(1),
            http_requests_per_sec: Some(1),
            burst: None,
            max_connections: Some(1),
            max_subscriptions: Some(1),
            max_streams: Some(1),
            max_stored_bytes: Some(1),
            max_cache_bytes: Some(1),
        };
        let v = serde_json::to_value(&s).unwrap();
        for k in RateKind::ALL {
            assert!(v.get(k.name()).is_some(), "{}", k.name());
        }
        for k in QuotaKind::ALL {
            assert!(v.get(k.name()).is_some(), "{}", k.name());
        }
    }
}
