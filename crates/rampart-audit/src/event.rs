//! What callers hand to the auditor: one [`Event`] per audited act.

use std::fmt;

use serde_json::{Map, Value};

/// Longest `user_agent` kept, in bytes; longer ones are clipped (the header
/// is chosen by the client, and records are kept for years).
pub(crate) const MAX_USER_AGENT: usize = 512;

/// Prefix of the event types the audit log writes itself
/// (`audit.checkpoint`); callers may not use it.
pub(crate) const RESERVED_PREFIX: &str = "audit.";

/// How an audited act ended. Written as `success`, `failure`, `denied` or
/// `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// The act was done.
    Success,
    /// The act failed for a reason attributable to the caller (a wrong
    /// credential, a bad request).
    Failure,
    /// Authorization refused it.
    Denied,
    /// The server failed.
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Denied => "denied",
            Outcome::Error => "error",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Outcome> {
        [
            Outcome::Success,
            Outcome::Failure,
            Outcome::Denied,
            Outcome::Error,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One audited act, as the seed's record format describes it.
///
/// # Never put a secret in an event
///
/// Every field, `metadata` included, is written to the log exactly as given,
/// copied to stdout when that sink is on, and kept for years. No field may
/// hold a password, an API key, a token, key material, a secret's value or an
/// unsalted hash of one. Name a credential by its public id (a managed key
/// id, a token `jti`), and a sensitive identifier by
/// [`Auditor::hmac_id`](crate::Auditor::hmac_id).
///
/// Event types starting with `audit.` are reserved for the log itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Dotted kind of act: `auth.success`, `auth.failure`, `authz.deny`,
    /// `admin.key.create`, `tenant.disable`, ...
    pub event_type: String,
    /// Who acted (a principal name, never a credential).
    pub principal: Option<String>,
    /// How `principal` authenticated: `api_key`, `token`, `jwt`, ...
    pub principal_type: Option<String>,
    pub tenant_id: Option<String>,
    pub namespace: Option<String>,
    /// What was acted on: `stream:orders`, `admin:keys`, ...
    pub resource: Option<String>,
    /// The verb: `create`, `delete`, `login`, ...
    pub action: String,
    pub result: Outcome,
    /// Free-form details. Written verbatim: no secrets (see above).
    pub metadata: Map<String, Value>,
    pub source_ip: Option<String>,
    /// Clipped to 512 bytes when written.
    pub user_agent: Option<String>,
}

impl Event {
    pub fn new(event_type: impl Into<String>, action: impl Into<String>, result: Outcome) -> Event {
        Event {
            event_type: event_type.into(),
            principal: None,
            principal_type: None,
            tenant_id: None,
            namespace: None,
            resource: None,
            action: action.into(),
            result,
            metadata: Map::new(),
            source_ip: None,
            user_agent: None,
        }
    }

    /// Sets who acted and how they authenticated (`api_key`, `jwt`, ...).
    pub fn principal(mut self, name: impl Into<String>, kind: impl Into<String>) -> Event {
        self.principal = Some(name.into());
        self.principal_type = Some(kind.into());
        self
    }

    pub fn tenant(mut self, tenant_id: impl Into<String>) -> Event {
        self.tenant_id = Some(tenant_id.into());
        self
    }

    pub fn namespace(mut self, namespace: impl Into<String>) -> Event {
        self.namespace = Some(namespace.into());
        self
    }

    pub fn resource(mut self, resource: impl Into<String>) -> Event {
        self.resource = Some(resource.into());
        self
    }

    /// Adds one `metadata` entry (replacing any with the same key).
    pub fn meta(mut self, key: impl Into<String>, value: impl Into<Value>) -> Event {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Sets the client address (an `IpAddr`, or text); `None` leaves it
    /// unset.
    pub fn source(mut self, ip: Option<impl fmt::Display>) -> Event {
        self.source_ip = ip.map(|ip| ip.to_string());
        self
    }

    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Event {
        self.user_agent = Some(user_agent.into());
        self
    }

    pub(crate) fn is_reserved(&self) -> bool {
        self.event_type.starts_with(RESERVED_PREFIX)
    }
}

/// `s` cut to at most `max` bytes, on a character boundary.
pub(crate) fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;

    #[test]
    fn builder_sets_fields() {
        let ev = Event::new("admin.key.create", "create", Outcome::Success)
            .principal("admin@acme.com", "user")
            .tenant("acme-corp")
            .namespace("production")
            .resource("stream:orders")
            .meta("shards", 4)
            .meta("retention", "7d")
            .source(Some(IpAddr::V4(Ipv4Addr::new(10, 0, 1, 45))))
            .user_agent("felix-cli/0.1.0");
        assert_eq!(ev.principal.as_deref(), Some("admin@acme.com"));
        assert_eq!(ev.principal_type.as_deref(), Some("user"));
        assert_eq!(ev.tenant_id.as_deref(), Some("acme-corp"));
        assert_eq!(ev.metadata["shards"], 4);
        assert_eq!(ev.source_ip.as_deref(), Some("10.0.1.45"));
        let none = Event::new("x", "y", Outcome::Error).source(None::<IpAddr>);
        assert_eq!(none.source_ip, None);
        assert!(!ev.is_reserved());
        assert!(Event::new("audit.checkpoint", "x", Outcome::Success).is_reserved());
    }

    #[test]
    fn outcome_words_round_trip() {
        for o in [
            Outcome::Success,
            Outcome::Failure,
            Outcome::Denied,
            Outcome::Error,
        ] {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
        assert_eq!(Outcome::Denied.to_string(), "denied");
        assert_eq!(Outcome::parse("allow"), None);
    }

    #[test]
    fn clip_respects_char_boundaries() {
        assert_eq!(clip("abc", 5), "abc");
        assert_eq!(clip("abcdef", 3), "abc");
        assert_eq!(clip("aé", 2), "a");
    }
}
