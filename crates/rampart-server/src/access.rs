//! The one table of what each frame type needs, and the authorization check
//! as a pure function over plain data. Deny by default.

use rampart_identity::Principal;
use rampart_proto::{FrameType, TenantId};

/// What a frame needs before it is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Part of the handshake (HELLO, AUTH).
    Handshake,
    /// Any authenticated connection (PING, UNSUBSCRIBE of its own ids).
    Authenticated,
    Publish,
    Subscribe,
    CacheRead,
    CacheWrite,
    /// Sent only by servers; a client sending it gets 400.
    ServerOnly,
    /// Not in the table: refused. Only reachable if a frame type is added
    /// to the codec without being added here, which a test forbids.
    Unlisted,
}

/// The permission table.
pub(crate) fn access(t: FrameType) -> Access {
    match t {
        FrameType::Hello | FrameType::Auth => Access::Handshake,
        FrameType::Ping | FrameType::Unsubscribe | FrameType::TokenRequest => {
            Access::Authenticated
        }
        FrameType::Publish | FrameType::PublishBatch => Access::Publish,
        FrameType::Subscribe => Access::Subscribe,
        FrameType::CacheGet => Access::CacheRead,
        FrameType::CachePut | FrameType::CacheDelete => Access::CacheWrite,
        FrameType::AuthOk
        | FrameType::Ack
        | FrameType::Nack
        | FrameType::Pong
        | FrameType::AuthRequired
        | FrameType::Token
        | FrameType::Subscribed
        | FrameType::EventBatch
        | FrameType::CacheValue => Access::ServerOnly,
        _ => Access::Unlisted,
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Denied {
    /// The resource belongs to another tenant (or to none the caller knows).
    OtherTenant,
    /// The frame type is not something a client may send.
    NotAClientFrame,
}

/// Decides whether `principal` may do `access` on a resource of `tenant`.
/// The tenant of the request must be the principal's own: the tenant of a
/// connection comes from its credential, never from the request.
pub(crate) fn authorize(
    principal: &Principal,
    access: Access,
    tenant: Option<&TenantId>,
) -> Result<(), Denied> {
    match access {
        Access::ServerOnly | Access::Unlisted | Access::Handshake => Err(Denied::NotAClientFrame),
        Access::Authenticated => Ok(()),
        Access::Publish | Access::Subscribe | Access::CacheRead | Access::CacheWrite => {
            match tenant {
                Some(t) if *t == principal.tenant => Ok(()),
                _ => Err(Denied::OtherTenant),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_identity::PrincipalKind;

    fn p(t: &str) -> Principal {
        Principal {
            tenant: TenantId::parse(t).unwrap(),
            name: "x".into(),
            kind: PrincipalKind::ApiKey,
            expires_at_ms: None,
        }
    }

    #[test]
    fn every_frame_type_is_in_the_table() {
        for t in FrameType::ALL {
            assert_ne!(access(t), Access::Unlisted, "{t:?} has no entry");
        }
    }

    #[test]
    fn own_tenant_only() {
        let acme = TenantId::parse("acme").unwrap();
        let globex = TenantId::parse("globex").unwrap();
        for a in [
            Access::Publish,
            Access::Subscribe,
            Access::CacheRead,
            Access::CacheWrite,
        ] {
            assert_eq!(authorize(&p("acme"), a, Some(&acme)), Ok(()));
            assert_eq!(
                authorize(&p("acme"), a, Some(&globex)),
                Err(Denied::OtherTenant)
            );
            assert_eq!(authorize(&p("acme"), a, None), Err(Denied::OtherTenant));
        }
        assert_eq!(
            authorize(&p("acme"), Access::ServerOnly, Some(&acme)),
            Err(Denied::NotAClientFrame)
        );
    }
}
