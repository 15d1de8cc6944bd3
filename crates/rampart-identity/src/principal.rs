//! Who a connection is, once authenticated.

use rampart_proto::TenantId;

/// How the principal proved its identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PrincipalKind {
    /// A key from the configuration or the environment.
    StaticKey,
    /// A managed key from the store.
    ManagedKey,
    /// A short-lived token issued by Rampart.
    Token,
    /// A JWT from a configured issuer.
    Jwt,
    /// A verified TLS client certificate.
    ClientCert,
    /// An AppRole login (role id and secret id) of the vault.
    AppRole,
}

impl PrincipalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::StaticKey => "static_key",
            PrincipalKind::ManagedKey => "api_key",
            PrincipalKind::Token => "token",
            PrincipalKind::Jwt => "jwt",
            PrincipalKind::ClientCert => "client_cert",
            PrincipalKind::AppRole => "approle",
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
    /// Built-in or ACL role names (`admin`, `user`, `viewer`, ...).
    pub roles: Vec<String>,
    /// Unix milliseconds after which the credential is no longer valid.
    pub expires_at_ms: Option<u64>,
    /// Id of the credential (managed key id, token id), so revoking it can
    /// reach the connections that used it. Never a secret.
    pub credential_id: Option<String>,
    /// For tokens: the id of the credential the token was issued from (a
    /// managed key), so revoking that key reaches the token's connections.
    pub parent_credential_id: Option<String>,
}
