//! Audit events of the server, built in one place so every record has the
//! same shape. Nothing secret goes into an event: credentials, tokens,
//! payloads and values never; key and token ids only as HMACs.

use std::net::SocketAddr;

use rampart_audit::{Event, Outcome};
use rampart_identity::Principal;

/// Where a request came from.
#[derive(Debug, Clone, Default)]
pub(crate) struct Origin {
    pub addr: Option<SocketAddr>,
    pub agent: Option<String>,
    pub transport: &'static str,
}

impl Origin {
    pub(crate) fn apply(&self, ev: Event) -> Event {
        let ev = ev.source(self.addr.map(|a| a.ip()));
        let ev = match &self.agent {
            Some(a) => ev.user_agent(a.clone()),
            None => ev,
        };
        ev.meta("transport", self.transport)
    }
}

/// An event about something a principal did.
pub(crate) fn by(p: &Principal, event_type: &str, action: &str, result: Outcome) -> Event {
    Event::new(event_type, action, result)
        .principal(p.name.clone(), p.kind.as_str())
        .tenant(p.tenant.to_string())
}

/// An authentication that succeeded.
pub(crate) fn auth_success(p: &Principal, method: &str, origin: &Origin) -> Event {
    origin.apply(
        by(p, "auth.success", "authenticate", Outcome::Success)
            .meta("method", method.to_string())
            .meta("expires_at_ms", p.expires_at_ms),
    )
}

/// An authentication that failed, with its stable reason.
pub(crate) fn auth_failure(method: &str, reason: &str, origin: &Origin) -> Event {
    origin.apply(
        Event::new("auth.failure", "authenticate", Outcome::Failure)
            .meta("method", method.to_string())
            .meta("reason", reason.to_string()),
    )
}
