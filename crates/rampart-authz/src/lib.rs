//! Rampart authorization: a pure, deny-by-default engine over plain data.
//!
//! Nothing here does IO, reads a clock or spawns anything. The server
//! builds a [`Subject`] from an authenticated credential, names the
//! [`Resource`] and [`Permission`] a request needs, and asks
//! [`decide`] (or a per-connection [`DecisionCache`]) against the
//! [`Policy`] in force. Anything not allowed by a rule or a built-in
//! [`Role`] is denied, and nothing ever reaches across tenants.
//!
//! ```
//! use rampart_authz::{decide, AclDocument, Permission, Policy, Resource, Subject};
//! use rampart_proto::TenantId;
//!
//! let docs = AclDocument::parse_yaml(r#"
//! apiVersion: rampart.io/v1
//! kind: ACL
//! metadata:
//!   tenant: acme
//!   namespace: production
//! spec:
//!   rules:
//!     - principal: ci
//!       resource: "stream:orders"
//!       permissions: [publish]
//! "#)?;
//! let mut policy = Policy::new();
//! for doc in docs {
//!     policy.apply(doc);
//! }
//! let ci = Subject::new(TenantId::parse("acme")?, "ci", Vec::<String>::new());
//! let orders = Resource::parse("stream:acme/production/orders")?;
//! let d = decide(&policy, &ci, &orders, Permission::Publish);
//! assert!(d.allowed);
//! assert_eq!(
//!     d.to_string(),
//!     "allow: rule 0 of acme/production: principal=ci resource=stream:orders permissions=[publish]"
//! );
//! assert!(!decide(&policy, &ci, &orders, Permission::Subscribe).allowed);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # ACL documents
//!
//! ```yaml
//! apiVersion: rampart.io/v1        # or felix.io/v1
//! kind: ACL
//! metadata:
//!   tenant: acme
//!   namespace: production          # optional; absent or "*": the whole tenant
//! spec:
//!   rules:
//!     - principal: ci              # exact name, "*" (anyone in the tenant) or role:viewer|user|admin
//!       resource: "stream:orders"  # see below
//!       permissions: [publish]     # permission names, or the word admin
//!       effect: deny               # optional, default allow
//! ```
//!
//! Resource patterns: `stream:NAME`, `stream:*`, `cache:NAME`, `cache:*`,
//! `namespace` (the namespace object itself), and in tenant-wide documents
//! only `secret:PATH`, `secret:PREFIX/*` (strictly below the prefix),
//! `secret:*`, paths with `+` segments that each match exactly one segment
//! (`secret:billing/+/db`, `secret:+/prod/*`), `admin:keys|acl|audit|tenant`, `admin:*`; `*` is everything
//! the document covers. A permission that can never apply to the pattern
//! (`cache_read` on `stream:x`) is refused when the document is parsed, as
//! are unknown roles in `role:` principals, so a misspelt deny rule cannot
//! silently deny nothing.
//!
//! The word `admin` in `permissions` expands to the admin permissions that
//! apply to the rule's resource: `stream_admin` on streams, `cache_admin`
//! on caches, `stream_admin`, `cache_admin` and `tenant_admin` on
//! `namespace`, the one matching permission on `admin:AREA`, and so on. It
//! never includes `secret_read` or `secret_write`, and on a secret pattern
//! it is refused.
//!
//! # Layout
//! - `permission`: [`Permission`], its stable names and a bit-set.
//! - `resource`: [`Resource`], [`AdminArea`], [`SecretPath`]; which
//!   permissions apply to which kind of resource.
//! - `role`: the built-in [`Role`]s and the [`Subject`].
//! - `pattern`: principal and resource patterns of rules: matching and
//!   specificity.
//! - `document`: the YAML / JSON shape of [`AclDocument`], validation into
//!   compiled rules, rendering back.
//! - `error`: [`AclError`], naming document, rule and field.
//! - `policy`: [`Policy`], the documents in force and their generation.
//! - `decide`: [`decide`], [`Decision`], [`Reason`], [`RuleRef`].
//! - `cache`: [`DecisionCache`], per-connection memo of decisions.

mod cache;
mod decide;
mod document;
mod error;
mod pattern;
mod permission;
mod policy;
mod resource;
mod role;

pub use cache::DecisionCache;
pub use decide::{decide, Decision, Reason, RuleRef};
pub use document::{AclDocument, Effect, MAX_RULES_PER_DOCUMENT};
pub use error::{AclError, AclErrorKind, Field};
pub use permission::Permission;
pub use policy::Policy;
pub use resource::{
    AdminArea, Resource, ResourceError, SecretPath, SecretPathError, MAX_SECRET_PATH_LEN,
    MAX_SECRET_SEGMENT_LEN,
};
pub use role::{Role, Subject};
