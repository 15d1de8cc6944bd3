//! Who a connection is, once authenticated.

use rampart_proto::TenantId;

/// How the principal proved its identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PrincipalKind {
    ApiKey,
}

impl PrincipalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::ApiKey => "api_key",
        }
    }
}

/// An authenticated identity. The tenant comes from the credential, never
/// from anything the client sends with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant: TenantId,
    pub name: String,
    pub kind: PrincipalKind,
    /// Unix milliseconds after which the credential is no longer valid.
    pub expires_at_ms: Option<u64>,
}
