//! The one table of what every wire frame and every HTTPS route needs, and
//! the mapping from a request to the resource it touches. Deny by default:
//! anything not in the table is refused.
//!
//! The decision itself is `rampart_authz::decide`, a pure function over the
//! subject, the resource, the permission and the tenant's ACL documents.

use rampart_authz::{AdminArea, Permission, Resource};
use rampart_proto::{FrameType, Message};

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Denied {
    /// The authorization engine said no (another tenant's resource, no
    /// rule, a deny rule). The client hears only "forbidden".
    Forbidden,
    /// The frame type is not something a client may send now.
    NotAClientFrame,
}

/// What a request needs before it is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Allowed before authentication: HELLO, AUTH, `POST /v1/auth`.
    Public,
    /// Any authenticated principal, on its own things only (PING, its own
    /// subscriptions, a token for itself, `GET /v1/auth/whoami`).
    Authenticated,
    /// A permission on the resource the request names.
    Perm(Permission),
    /// Operators only: principals with the admin role in the operator tenant
    /// (tenant lifecycle spans tenants, so no tenant's ACL can grant it).
    Operator,
    /// Sent only by servers; refused from clients.
    ServerOnly,
    /// Not in the table: refused. A test makes sure nothing lands here.
    Unlisted,
}

/// The permission table for wire frames.
pub(crate) fn frame_access(t: FrameType) -> Access {
    match t {
        FrameType::Hello | FrameType::Auth => Access::Public,
        // A consumer's acknowledgement names a subscription of the
        // connection, authorized when it was made (and re-checked on every
        // policy change).
        FrameType::Ping
        | FrameType::Unsubscribe
        | FrameType::TokenRequest
        | FrameType::ConsumerAck => Access::Authenticated,
        FrameType::Publish | FrameType::PublishBatch => Access::Perm(Permission::Publish),
        FrameType::Subscribe | FrameType::Consume => Access::Perm(Permission::Subscribe),
        FrameType::CacheGet => Access::Perm(Permission::CacheRead),
        FrameType::CachePut | FrameType::CacheDelete => Access::Perm(Permission::CacheWrite),
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

/// The resource a data-plane frame names, as the client named it. The
/// tenant in it is checked against the credential's by `decide`.
pub(crate) fn frame_resource(m: &Message) -> Option<Resource> {
    Some(match m {
        Message::Publish(p) => {
            Resource::Stream(p.tenant.clone(), p.namespace.clone(), p.stream.clone())
        }
        Message::PublishBatch(p) => {
            Resource::Stream(p.tenant.clone(), p.namespace.clone(), p.stream.clone())
        }
        Message::Subscribe(s) => {
            Resource::Stream(s.tenant.clone(), s.namespace.clone(), s.stream.clone())
        }
        Message::Consume(c) => {
            Resource::Stream(c.tenant.clone(), c.namespace.clone(), c.stream.clone())
        }
        Message::CachePut(c) => {
            Resource::Cache(c.tenant.clone(), c.namespace.clone(), c.cache.clone())
        }
        Message::CacheGet(c) => {
            Resource::Cache(c.tenant.clone(), c.namespace.clone(), c.cache.clone())
        }
        Message::CacheDelete(c) => {
            Resource::Cache(c.tenant.clone(), c.namespace.clone(), c.cache.clone())
        }
        _ => return None,
    })
}

/// Routes of the Vault-compatible API answer a missing or bad token with
/// 403, as Vault does (its clients depend on it), not 401.
pub(crate) fn vault_style(path: &str) -> bool {
    path.starts_with("/v1/auth/token/")
        || path.starts_with("/v1/sys/")
        || path.starts_with("/v1/secret/")
        || path.starts_with("/v1/auth/approle/")
}

/// Every HTTPS route: its name, method, path (axum syntax) and what it needs.
/// The router is built from this table, so a route cannot exist without an
/// entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Route {
    pub name: RouteName,
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
    /// For `Perm` routes: which resource of the path's tenant it touches.
    pub scope: Scope,
}

/// The resource an HTTPS route touches, built from its path parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    None,
    Admin(AdminArea),
    Namespace,
    Stream,
    Cache,
    Tenant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum RouteName {
    Auth,
    WhoAmI,
    ListTenants,
    CreateTenant,
    DisableTenant,
    EnableTenant,
    EraseTenant,
    DisableNamespace,
    EnableNamespace,
    RotateEncryption,
    EncryptionStatus,
    GetLimits,
    PutLimits,
    DeleteLimits,
    GetPrincipalLimits,
    PutPrincipalLimits,
    DeletePrincipalLimits,
    ListKeys,
    CreateKey,
    RevokeKey,
    RotateKey,
    RevokeTokens,
    GetAcl,
    PutAcl,
    ExplainAcl,
    ListNamespaces,
    ListStreams,
    CreateStream,
    DeleteStream,
    GetStream,
    EraseStream,
    ListCaches,
    FlushCache,
    ReadAudit,
    SysHealth,
    SysSealStatus,
    TokenLookupSelf,
    TokenRenewSelf,
    TokenRevokeSelf,
    MountsPreflight,
    KvData,
    KvMetadata,
    KvMetadataRoot,
    KvDelete,
    KvUndelete,
    KvDestroy,
    KeyVaultGet,
    ApproleLogin,
    ApproleRole,
    ApproleRoleId,
    ApproleSecretId,
    SysLeader,
    SysInit,
    Healthz,
    Readyz,
    Backup,
    RotateTokenSigning,
    RotateAuditKeys,
}

pub(crate) const ROUTES: &[Route] = &[
    // Liveness and readiness probes: public, as `/v1/sys/health` is; they
    // say whether the server works, never what it holds.
    route(
        RouteName::Healthz,
        "GET",
        "/healthz",
        Access::Public,
        Scope::None,
    ),
    route(
        RouteName::Readyz,
        "GET",
        "/readyz",
        Access::Public,
        Scope::None,
    ),
    // The Vault-compatible `sys` endpoints: public, as in Vault.
    route(
        RouteName::SysHealth,
        "GET",
        "/v1/sys/health",
        Access::Public,
        Scope::None,
    ),
    route(
        RouteName::SysSealStatus,
        "GET",
        "/v1/sys/seal-status",
        Access::Public,
        Scope::None,
    ),
    route(
        RouteName::SysLeader,
        "GET",
        "/v1/sys/leader",
        Access::Public,
        Scope::None,
    ),
    route(
        RouteName::SysInit,
        "GET",
        "/v1/sys/init",
        Access::Public,
        Scope::None,
    ),
    // Vault's token self-service and the mount preflight its CLIs make.
    route(
        RouteName::TokenLookupSelf,
        "GET",
        "/v1/auth/token/lookup-self",
        Access::Authenticated,
        Scope::None,
    ),
    route(
        RouteName::TokenRenewSelf,
        "POST",
        "/v1/auth/token/renew-self",
        Access::Authenticated,
        Scope::None,
    ),
    route(
        RouteName::TokenRevokeSelf,
        "POST",
        "/v1/auth/token/revoke-self",
        Access::Authenticated,
        Scope::None,
    ),
    // KV v2 at `secret/` and the KeyVault form; each handler authorizes
    // the secret path itself (`ANY`: the handler dispatches on the method,
    // Vault's `LIST` included).
    route(
        RouteName::KvData,
        "ANY",
        "/v1/secret/data/{*path}",
        Access::Authenticated,
        Scope::None,
    ),
    route(
        RouteName::KvMetadata,
        "ANY",
        "/v1/secret/metadata/{*path}",
        Access::Authenticated,
        Scope::None,
    ),
    route(
        RouteName::KvMetadataRoot,
        "ANY",
        "/v1/secret/metadata",
        Access::Authenticated,
        Scope::None,
    ),
    route(
        RouteName::KvMetadataRoot,
        "ANY",
        "/v1/secret/metadata/",
        Access::Authenticated,
        Scope::None,
    ),
    route(
        RouteName::KvDelete,
        "POST",
        "/v1/secret/delete/{*path}",
        Access::Authenticated,
        Scope::None,
    ),
    route(
        RouteName::KvUndelete,
        "POST",
        "/v1/secret/undelete/{*path}",
        Access::Authenticated,
        Scope::None,
    ),
    route(
        RouteName::KvDestroy,
        "POST",
        "/v1/secret/destroy/{*path}",
        Access::Authenticated,
        Scope::None,
    ),
    route(
        RouteName::KeyVaultGet,
        "GET",
        "/v1/secret/{app}/{env}/{*path}",
        Access::Authenticated,
        Scope::None,
    ),
    route(
        RouteName::ApproleLogin,
        "POST",
        "/v1/auth/approle/login",
        Access::Public,
        Scope::None,
    ),
    route(
        RouteName::ApproleRole,
        "ANY",
        "/v1/auth/approle/role/{role}",
        Access::Authenticated,
        Scope::None,
    ),
    route(
        RouteName::ApproleRoleId,
        "GET",
        "/v1/auth/approle/role/{role}/role-id",
        Access::Authenticated,
        Scope::None,
    ),
    route(
        RouteName::ApproleSecretId,
        "POST",
        "/v1/auth/approle/role/{role}/secret-id",
        Access::Authenticated,
        Scope::None,
    ),
    route(
        RouteName::MountsPreflight,
        "GET",
        "/v1/sys/internal/ui/mounts/{*path}",
        Access::Authenticated,
        Scope::None,
    ),
    route(
        RouteName::MountsPreflight,
        "GET",
        "/v1/sys/mounts-all/{*path}",
        Access::Authenticated,
        Scope::None,
    ),
    route(
        RouteName::Auth,
        "POST",
        "/v1/auth",
        Access::Public,
        Scope::None,
    ),
    route(
        RouteName::WhoAmI,
        "GET",
        "/v1/auth/whoami",
        Access::Authenticated,
        Scope::None,
    ),
    route(
        RouteName::ListTenants,
        "GET",
        "/v1/tenants",
        Access::Operator,
        Scope::None,
    ),
    route(
        RouteName::CreateTenant,
        "POST",
        "/v1/tenants",
        Access::Operator,
        Scope::None,
    ),
    route(
        RouteName::DisableTenant,
        "POST",
        "/v1/tenants/{tenant}/disable",
        Access::Operator,
        Scope::None,
    ),
    route(
        RouteName::EnableTenant,
        "POST",
        "/v1/tenants/{tenant}/enable",
        Access::Operator,
        Scope::None,
    ),
    route(
        RouteName::EraseTenant,
        "POST",
        "/v1/tenants/{tenant}/erase",
        Access::Operator,
        Scope::None,
    ),
    route(
        RouteName::GetLimits,
        "GET",
        "/v1/tenants/{tenant}/limits",
        Access::Operator,
        Scope::None,
    ),
    route(
        RouteName::PutLimits,
        "PUT",
        "/v1/tenants/{tenant}/limits",
        Access::Operator,
        Scope::None,
    ),
    route(
        RouteName::DeleteLimits,
        "DELETE",
        "/v1/tenants/{tenant}/limits",
        Access::Operator,
        Scope::None,
    ),
    route(
        RouteName::GetPrincipalLimits,
        "GET",
        "/v1/tenants/{tenant}/principals/{principal}/limits",
        Access::Operator,
        Scope::None,
    ),
    route(
        RouteName::PutPrincipalLimits,
        "PUT",
        "/v1/tenants/{tenant}/principals/{principal}/limits",
        Access::Operator,
        Scope::None,
    ),
    route(
        RouteName::DeletePrincipalLimits,
        "DELETE",
        "/v1/tenants/{tenant}/principals/{principal}/limits",
        Access::Operator,
        Scope::None,
    ),
    route(
        RouteName::EncryptionStatus,
        "GET",
        "/v1/tenants/{tenant}/encryption",
        Access::Perm(Permission::KeyAdmin),
        Scope::Admin(AdminArea::Keys),
    ),
    route(
        RouteName::RotateEncryption,
        "POST",
        "/v1/tenants/{tenant}/encryption/rotate",
        Access::Perm(Permission::KeyAdmin),
        Scope::Admin(AdminArea::Keys),
    ),
    route(
        RouteName::ListKeys,
        "GET",
        "/v1/tenants/{tenant}/keys",
        Access::Perm(Permission::KeyAdmin),
        Scope::Admin(AdminArea::Keys),
    ),
    route(
        RouteName::CreateKey,
        "POST",
        "/v1/tenants/{tenant}/keys",
        Access::Perm(Permission::KeyAdmin),
        Scope::Admin(AdminArea::Keys),
    ),
    route(
        RouteName::RevokeKey,
        "POST",
        "/v1/tenants/{tenant}/keys/{id}/revoke",
        Access::Perm(Permission::KeyAdmin),
        Scope::Admin(AdminArea::Keys),
    ),
    route(
        RouteName::RotateKey,
        "POST",
        "/v1/tenants/{tenant}/keys/{id}/rotate",
        Access::Perm(Permission::KeyAdmin),
        Scope::Admin(AdminArea::Keys),
    ),
    route(
        RouteName::RevokeTokens,
        "POST",
        "/v1/tenants/{tenant}/tokens/revoke",
        Access::Perm(Permission::KeyAdmin),
        Scope::Admin(AdminArea::Keys),
    ),
    route(
        RouteName::GetAcl,
        "GET",
        "/v1/tenants/{tenant}/acl",
        Access::Perm(Permission::AclAdmin),
        Scope::Admin(AdminArea::Acl),
    ),
    route(
        RouteName::PutAcl,
        "PUT",
        "/v1/tenants/{tenant}/acl",
        Access::Perm(Permission::AclAdmin),
        Scope::Admin(AdminArea::Acl),
    ),
    route(
        RouteName::ExplainAcl,
        "POST",
        "/v1/tenants/{tenant}/acl/explain",
        Access::Perm(Permission::AclAdmin),
        Scope::Admin(AdminArea::Acl),
    ),
    route(
        RouteName::ListNamespaces,
        "GET",
        "/v1/tenants/{tenant}/namespaces",
        Access::Perm(Permission::TenantAdmin),
        Scope::Tenant,
    ),
    // Incident containment inside a tenant: the tenant's own admins
    // (`tenant_admin` on the namespace) may disable and enable it.
    route(
        RouteName::DisableNamespace,
        "POST",
        "/v1/tenants/{tenant}/namespaces/{namespace}/disable",
        Access::Perm(Permission::TenantAdmin),
        Scope::Namespace,
    ),
    route(
        RouteName::EnableNamespace,
        "POST",
        "/v1/tenants/{tenant}/namespaces/{namespace}/enable",
        Access::Perm(Permission::TenantAdmin),
        Scope::Namespace,
    ),
    route(
        RouteName::ListStreams,
        "GET",
        "/v1/tenants/{tenant}/namespaces/{namespace}/streams",
        Access::Perm(Permission::StreamAdmin),
        Scope::Namespace,
    ),
    route(
        RouteName::CreateStream,
        "POST",
        "/v1/tenants/{tenant}/namespaces/{namespace}/streams",
        Access::Perm(Permission::StreamAdmin),
        Scope::Namespace,
    ),
    route(
        RouteName::GetStream,
        "GET",
        "/v1/tenants/{tenant}/namespaces/{namespace}/streams/{stream}",
        Access::Perm(Permission::StreamAdmin),
        Scope::Stream,
    ),
    route(
        RouteName::EraseStream,
        "POST",
        "/v1/tenants/{tenant}/namespaces/{namespace}/streams/{stream}/erase",
        Access::Perm(Permission::StreamAdmin),
        Scope::Stream,
    ),
    route(
        RouteName::DeleteStream,
        "DELETE",
        "/v1/tenants/{tenant}/namespaces/{namespace}/streams/{stream}",
        Access::Perm(Permission::StreamAdmin),
        Scope::Stream,
    ),
    route(
        RouteName::ListCaches,
        "GET",
        "/v1/tenants/{tenant}/namespaces/{namespace}/caches",
        Access::Perm(Permission::CacheAdmin),
        Scope::Namespace,
    ),
    route(
        RouteName::FlushCache,
        "DELETE",
        "/v1/tenants/{tenant}/namespaces/{namespace}/caches/{cache}",
        Access::Perm(Permission::CacheAdmin),
        Scope::Cache,
    ),
    route(
        RouteName::ReadAudit,
        "GET",
        "/v1/tenants/{tenant}/audit",
        Access::Perm(Permission::AuditRead),
        Scope::Admin(AdminArea::Audit),
    ),
    // A backup holds every tenant's data (sealed): operators only.
    route(
        RouteName::Backup,
        "POST",
        "/v1/sys/backup",
        Access::Operator,
        Scope::None,
    ),
    // The server's own keys: operators only.
    route(
        RouteName::RotateTokenSigning,
        "POST",
        "/v1/sys/rotate/token-signing",
        Access::Operator,
        Scope::None,
    ),
    route(
        RouteName::RotateAuditKeys,
        "POST",
        "/v1/sys/rotate/audit",
        Access::Operator,
        Scope::None,
    ),
];

const fn route(
    name: RouteName,
    method: &'static str,
    path: &'static str,
    access: Access,
    scope: Scope,
) -> Route {
    Route {
        name,
        method,
        path,
        access,
        scope,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_frame_type_is_in_the_table() {
        for t in FrameType::ALL {
            assert_ne!(frame_access(t), Access::Unlisted, "{t:?} has no entry");
        }
    }

    #[test]
    fn data_frames_name_a_resource() {
        for t in FrameType::ALL {
            if let Access::Perm(_) = frame_access(t) {
                // Built from a real frame in the e2e matrix; here we check
                // the table and the resource mapping agree on which frames
                // carry a resource.
                assert!(
                    matches!(
                        t,
                        FrameType::Publish
                            | FrameType::PublishBatch
                            | FrameType::Subscribe
                            | FrameType::Consume
                            | FrameType::CacheGet
                            | FrameType::CachePut
                            | FrameType::CacheDelete
                    ),
                    "{t:?}"
                );
            }
        }
    }

    #[test]
    fn every_route_is_in_the_table_once() {
        let mut seen = std::collections::HashSet::new();
        for r in ROUTES {
            assert_ne!(r.access, Access::Unlisted, "{:?}", r.name);
            assert!(
                seen.insert((r.method, r.path)),
                "duplicate {} {}",
                r.method,
                r.path
            );
            if let Access::Perm(_) = r.access {
                assert_ne!(r.scope, Scope::None, "{:?} needs a resource", r.name);
                assert!(r.path.contains("{tenant}"), "{:?} needs a tenant", r.name);
            }
        }
    }
}
