//! Why an ACL document was refused, and where.

use std::fmt;

use rampart_proto::NameError;

use crate::permission::Permission;
use crate::resource::SecretPathError;

/// An ACL document that could not be parsed or validated.
///
/// Names the document (0-based position in the YAML stream or JSON array),
/// the rule (0-based position in `spec.rules`) when the problem is in a rule,
/// and the field. Untrusted input is quoted and cut to 64 bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub struct AclError {
    pub document: usize,
    pub rule: Option<usize>,
    pub field: Field,
    pub kind: AclErrorKind,
}

impl fmt::Display for AclError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "document {}", self.document)?;
        match (self.rule, self.field) {
            (Some(rule), field) => write!(f, ", spec.rules[{rule}].{field}")?,
            (None, Field::Document) => {}
            (None, field) => write!(f, ", {field}")?,
        }
        write!(f, ": {}", self.kind)
    }
}

impl AclError {
    pub(crate) fn new(document: usize, field: Field, kind: AclErrorKind) -> AclError {
        AclError {
            document,
            rule: None,
            field,
            kind,
        }
    }

    pub(crate) fn in_rule(
        document: usize,
        rule: usize,
        field: Field,
        kind: AclErrorKind,
    ) -> AclError {
        AclError {
            document,
            rule: Some(rule),
            field,
            kind,
        }
    }
}

/// The field of an ACL document an [`AclError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Field {
    /// The document as a whole (syntax, shape, unknown fields).
    Document,
    ApiVersion,
    Kind,
    Tenant,
    Namespace,
    Rules,
    Principal,
    Resource,
    Permissions,
    Effect,
}

impl Field {
    /// The field's path in the document, e.g. `metadata.tenant`.
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Document => "document",
            Field::ApiVersion => "apiVersion",
            Field::Kind => "kind",
            Field::Tenant => "metadata.tenant",
            Field::Namespace => "metadata.namespace",
            Field::Rules => "spec.rules",
            Field::Principal => "principal",
            Field::Resource => "resource",
            Field::Permissions => "permissions",
            Field::Effect => "effect",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What is wrong with the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AclErrorKind {
    /// Not YAML / JSON, a missing or unknown field, a wrong type.
    #[error("{0}")]
    Syntax(String),
    #[error("no ACL document in the input")]
    NoDocument,
    #[error("unsupported apiVersion {0} (expected rampart.io/v1 or felix.io/v1)")]
    UnsupportedApiVersion(String),
    #[error("kind is {0}, expected ACL")]
    WrongKind(String),
    #[error(transparent)]
    InvalidName(NameError),
    #[error(transparent)]
    InvalidSecretPath(SecretPathError),
    #[error("malformed principal: {0}")]
    MalformedPrincipal(&'static str),
    #[error("unknown role {0} (built-in roles: viewer, user, admin)")]
    UnknownRole(String),
    #[error("malformed resource pattern {0} (expected stream:NAME, stream:*, cache:NAME, cache:*, secret:PATH, secret:PREFIX/*, secret:*, namespace, admin:keys|acl|audit|tenant, admin:* or *)")]
    MalformedResource(String),
    #[error("{0}")]
    OutOfScope(&'static str),
    #[error("unknown permission {0}")]
    UnknownPermission(String),
    #[error("no permissions listed")]
    NoPermissions,
    #[error("{permission} can never apply to {resource}")]
    NotApplicable {
        permission: Permission,
        resource: String,
    },
    #[error("`admin` grants nothing on {resource}; list secret_read / secret_write explicitly")]
    AdminGrantsNothing { resource: String },
    #[error("unknown effect {0} (expected allow or deny)")]
    UnknownEffect(String),
    #[error("more than {max} rules")]
    TooManyRules { max: usize },
    #[error("same tenant and namespace as document {first}")]
    DuplicateScope { first: usize },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_document_rule_and_field() {
        let e = AclError::in_rule(
            1,
            2,
            Field::Permissions,
            AclErrorKind::UnknownPermission("\"publsh\"".into()),
        );
        assert_eq!(
            e.to_string(),
            "document 1, spec.rules[2].permissions: unknown permission \"publsh\""
        );
        let e = AclError::new(0, Field::Kind, AclErrorKind::WrongKind("\"Role\"".into()));
        assert_eq!(
            e.to_string(),
            "document 0, kind: kind is \"Role\", expected ACL"
        );
        let e = AclError::new(3, Field::Document, AclErrorKind::NoDocument);
        assert_eq!(e.to_string(), "document 3: no ACL document in the input");
    }
}
