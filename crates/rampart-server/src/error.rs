//! Every request error becomes a NACK here, and only here. Messages are
//! safe to show a client: no paths, no internal state, nothing about other
//! tenants.

use rampart_broker::BrokerError;
use rampart_proto::{BodyError, ErrorCode, Frame, FrameError};

use crate::access::Denied;
use crate::metrics::Metrics;
use crate::session::{nack, nack_after};

/// Why one request failed.
#[derive(Debug)]
pub(crate) enum OpError {
    Denied(Denied),
    CredentialExpired,
    /// The namespace (`tenant/namespace`) is disabled.
    NamespaceDisabled(String),
    AuditUnavailable,
    Internal,
    Broker(BrokerError),
    Body(BodyError),
    StartUnsupported,
    NoSuchSubscription,
    TooManySubscriptions(usize),
    /// Over a rate limit or a quota.
    Limited(rampart_limits::Rejection),
}

impl From<crate::control::IssueError> for OpError {
    fn from(e: crate::control::IssueError) -> Self {
        match e {
            crate::control::IssueError::Internal => OpError::Internal,
            crate::control::IssueError::AuditUnavailable => OpError::AuditUnavailable,
        }
    }
}

impl OpError {
    pub(crate) fn code(&self) -> ErrorCode {
        match self {
            OpError::Denied(Denied::Forbidden) => ErrorCode::FORBIDDEN,
            OpError::Denied(Denied::NotAClientFrame) => ErrorCode::BAD_REQUEST,
            OpError::CredentialExpired => ErrorCode::UNAUTHORIZED,
            OpError::NamespaceDisabled(_) => ErrorCode::FORBIDDEN,
            OpError::AuditUnavailable => ErrorCode::UNAVAILABLE,
            OpError::Internal => ErrorCode::INTERNAL,
            OpError::Broker(BrokerError::StreamNotFound) => ErrorCode::NOT_FOUND,
            OpError::Broker(BrokerError::CacheFull { .. }) => ErrorCode::INSUFFICIENT_STORAGE,
            OpError::Broker(BrokerError::ValueTooLarge { .. }) => ErrorCode::PAYLOAD_TOO_LARGE,
            OpError::Broker(BrokerError::NotDurable | BrokerError::BadStart(_)) => {
                ErrorCode::BAD_REQUEST
            }
            OpError::Broker(BrokerError::NotAConsumer) => ErrorCode::NOT_FOUND,
            OpError::Broker(BrokerError::Storage(_) | BrokerError::Unavailable(_)) => {
                ErrorCode::UNAVAILABLE
            }
            OpError::Broker(_) => ErrorCode::INTERNAL,
            OpError::Body(e) => e.code(),
            OpError::StartUnsupported => ErrorCode::BAD_REQUEST,
            OpError::NoSuchSubscription => ErrorCode::NOT_FOUND,
            OpError::TooManySubscriptions(_) => ErrorCode::TOO_MANY_REQUESTS,
            OpError::Limited(r) => ErrorCode(r.status),
        }
    }

    pub(crate) fn message(&self) -> String {
        match self {
            OpError::Denied(Denied::Forbidden) => "forbidden".into(),
            OpError::Denied(Denied::NotAClientFrame) => {
                "frame type not accepted from clients".into()
            }
            OpError::CredentialExpired => "credential expired; send AUTH to resume".into(),
            OpError::NamespaceDisabled(ns) => format!("namespace {ns} is disabled"),
            OpError::AuditUnavailable => "audit log unavailable; try again".into(),
            OpError::Internal => "internal error".into(),
            OpError::Broker(BrokerError::StreamNotFound) => "stream not found".into(),
            OpError::Broker(e @ BrokerError::CacheFull { .. }) => e.to_string(),
            OpError::Broker(e @ BrokerError::ValueTooLarge { .. }) => e.to_string(),
            OpError::Broker(
                e @ (BrokerError::NotDurable
                | BrokerError::BadStart(_)
                | BrokerError::Damaged { .. }
                | BrokerError::Unreadable { .. }),
            ) => e.to_string(),
            OpError::Broker(BrokerError::NotAConsumer) => {
                "the subscription is not a consumer of this connection".into()
            }
            // Storage errors may name files: the detail goes to the server
            // log, not to clients.
            OpError::Broker(BrokerError::Storage(_) | BrokerError::Unavailable(_)) => {
                "stream storage unavailable; see the server log".into()
            }
            OpError::Broker(_) => "internal error".into(),
            OpError::Body(e) => e.to_string(),
            OpError::StartUnsupported => {
                "live streams deliver new messages only; replay needs a durable stream".into()
            }
            OpError::NoSuchSubscription => "no such subscription on this connection".into(),
            OpError::TooManySubscriptions(n) => {
                format!("limit of {n} subscriptions per connection reached")
            }
            OpError::Limited(r) => r.to_string(),
        }
    }

    /// A short, stable name of the cause, for metrics.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            OpError::Denied(Denied::Forbidden) => "forbidden",
            OpError::Denied(Denied::NotAClientFrame) => "not_a_client_frame",
            OpError::CredentialExpired => "credential_expired",
            OpError::NamespaceDisabled(_) => "namespace_disabled",
            OpError::AuditUnavailable => "audit_unavailable",
            OpError::Internal => "internal",
            OpError::Broker(BrokerError::StreamNotFound) => "stream_not_found",
            OpError::Broker(BrokerError::CacheFull { .. }) => "cache_full",
            OpError::Broker(BrokerError::ValueTooLarge { .. }) => "value_too_large",
            OpError::Broker(BrokerError::Storage(_) | BrokerError::Unavailable(_)) => "storage",
            OpError::Broker(_) => "stream_state",
            OpError::Body(_) => "bad_request",
            OpError::StartUnsupported => "start_unsupported",
            OpError::NoSuchSubscription => "no_such_subscription",
            OpError::TooManySubscriptions(_) => "too_many_subscriptions",
            OpError::Limited(_) => "rate_limited",
        }
    }

    /// The NACK answering request `id`, counted in `metrics`.
    pub(crate) fn to_frame(&self, id: u64, metrics: &Metrics) -> Frame {
        let retry_after = match self {
            OpError::Limited(r) => r.retry_after,
            _ => None,
        };
        let code = self.code();
        metrics.rejected(code.0, self.reason());
        nack_after(id, code, self.message(), retry_after)
    }
}

impl From<BrokerError> for OpError {
    fn from(e: BrokerError) -> Self {
        OpError::Broker(e)
    }
}

impl From<rampart_limits::Rejection> for OpError {
    fn from(r: rampart_limits::Rejection) -> Self {
        OpError::Limited(r)
    }
}

impl From<Denied> for OpError {
    fn from(e: Denied) -> Self {
        OpError::Denied(e)
    }
}

/// The NACK sent before closing a connection whose byte stream broke.
pub(crate) fn frame_error(e: &FrameError) -> Frame {
    nack(0, e.code(), e.to_string())
}
