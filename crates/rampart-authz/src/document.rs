//! ACL documents: the YAML / JSON shape, its validation into compiled rules,
//! and rendering back.

use std::cell::Cell;
use std::fmt;
use std::sync::Arc;

use rampart_proto::{NamespaceName, TenantId};
use serde::de::{self, Deserializer as _, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::decide::RuleRef;
use crate::error::{AclError, AclErrorKind, Field};
use crate::pattern::{PrincipalPattern, ResourcePattern};
use crate::permission::{PermSet, Permission};
use crate::resource::excerpt;

/// The `apiVersion` written when rendering.
pub(crate) const API_VERSION: &str = "rampart.io/v1";
/// `apiVersion` values accepted when parsing.
const API_VERSIONS: [&str; 2] = [API_VERSION, "felix.io/v1"];
/// The most rules one document may hold. Decisions scan the rules of at
/// most two documents, so this bounds the cost of an uncached decision.
pub const MAX_RULES_PER_DOCUMENT: usize = 1024;

// === raw shape ===

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawDocument {
    api_version: String,
    kind: String,
    metadata: RawMetadata,
    spec: RawSpec,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetadata {
    tenant: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    rules: Vec<RawRule>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    principal: String,
    resource: String,
    permissions: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    effect: Option<String>,
}

// === impl Effect ===

/// Whether a rule allows or denies. A matching deny always wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Effect {
    Allow,
    Deny,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
        }
    }
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === compiled rules ===

/// A word of a rule's `permissions` list, kept as written for rendering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PermWord {
    Admin,
    One(Permission),
}

impl PermWord {
    fn as_str(self) -> &'static str {
        match self {
            PermWord::Admin => "admin",
            PermWord::One(p) => p.as_str(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    pub(crate) principal: PrincipalPattern,
    pub(crate) resource: ResourcePattern,
    /// The permissions with `admin` expanded.
    pub(crate) permissions: PermSet,
    pub(crate) effect: Effect,
    written: Vec<PermWord>,
    /// Shared with every decision that reports this rule.
    pub(crate) reference: RuleRef,
}

impl Rule {
    fn compile(
        raw: &RawRule,
        scope: &Scope,
        document: usize,
        index: usize,
    ) -> Result<Rule, AclError> {
        let err = |field, kind| AclError::in_rule(document, index, field, kind);
        let scoped = scope.namespace.is_some();
        let principal =
            PrincipalPattern::parse(&raw.principal).map_err(|k| err(Field::Principal, k))?;
        let resource =
            ResourcePattern::parse(&raw.resource, scoped).map_err(|k| err(Field::Resource, k))?;
        let effect = match raw.effect.as_deref() {
            None | Some("allow") => Effect::Allow,
            Some("deny") => Effect::Deny,
            Some(other) => {
                return Err(err(
                    Field::Effect,
                    AclErrorKind::UnknownEffect(excerpt(other)),
                ))
            }
        };
        if raw.permissions.is_empty() {
            return Err(err(Field::Permissions, AclErrorKind::NoPermissions));
        }
        let applicable = resource.applicable(scoped);
        let mut permissions = PermSet::EMPTY;
        let mut written = Vec::with_capacity(raw.permissions.len());
        for word in &raw.permissions {
            if word == "admin" {
                let admin = Permission::ADMIN.intersect(applicable);
                if admin.is_empty() {
                    return Err(err(
                        Field::Permissions,
                        AclErrorKind::AdminGrantsNothing {
                            resource: resource.to_string(),
                        },
                    ));
                }
                permissions = permissions.union(admin);
                written.push(PermWord::Admin);
                continue;
            }
            let Some(p) = Permission::parse(word) else {
                return Err(err(
                    Field::Permissions,
                    AclErrorKind::UnknownPermission(excerpt(word)),
                ));
            };
            if !applicable.contains(p) {
                let resource = if scoped && resource == ResourcePattern::Any {
                    "* in a namespace-scoped document".to_owned()
                } else {
                    resource.to_string()
                };
                return Err(err(
                    Field::Permissions,
                    AclErrorKind::NotApplicable {
                        permission: p,
                        resource,
                    },
                ));
            }
            permissions = permissions.with(p);
            written.push(PermWord::One(p));
        }
        let words: Vec<&str> = written.iter().map(|w| w.as_str()).collect();
        let printable = format!(
            "principal={principal} resource={resource} permissions=[{}]",
            words.join(", ")
        );
        let reference = RuleRef::new(
            scope.tenant.clone(),
            scope.namespace.clone(),
            index,
            effect,
            printable,
        );
        Ok(Rule {
            principal,
            resource,
            permissions,
            effect,
            written,
            reference,
        })
    }

    fn to_raw(&self) -> RawRule {
        RawRule {
            principal: self.principal.to_string(),
            resource: self.resource.to_string(),
            permissions: self.written.iter().map(|w| w.as_str().to_owned()).collect(),
            effect: match self.effect {
                Effect::Allow => None,
                Effect::Deny => Some(Effect::Deny.as_str().to_owned()),
            },
        }
    }
}

/// The key a document is stored under in a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Scope {
    tenant: TenantId,
    /// `None`: the whole tenant (`namespace` absent or `"*"`).
    namespace: Option<NamespaceName>,
}

// === impl AclDocument ===

/// A validated ACL document for one tenant, or one namespace of a tenant.
///
/// Built only by [`AclDocument::parse_yaml`] and
/// [`AclDocument::parse_json`]; past them every name, pattern and permission
/// is known to be valid. Cloning is cheap (the rules are shared).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclDocument(Arc<Compiled>);

#[derive(Debug, PartialEq, Eq)]
struct Compiled {
    scope: Scope,
    rules: Vec<Rule>,
}

impl AclDocument {
    /// Parses one or more documents from a YAML stream (separated by
    /// `---`). Empty documents are skipped; an input with none is refused,
    /// and so is one that names the same tenant and namespace twice.
    pub fn parse_yaml(text: &str) -> Result<Vec<AclDocument>, AclError> {
        let mut raws = Vec::new();
        for (i, de) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
            // Stop at the first error: the iterator repeats a failure forever.
            match Option::<RawDocument>::deserialize(de) {
                Ok(Some(raw)) => raws.push((i, raw)),
                Ok(None) => {}
                Err(e) => {
                    return Err(AclError::new(
                        i,
                        Field::Document,
                        AclErrorKind::Syntax(e.to_string()),
                    ))
                }
            }
        }
        compile_all(raws)
    }

    /// Parses a JSON document, or a JSON array of documents, of the same
    /// shape as the YAML form.
    pub fn parse_json(text: &str) -> Result<Vec<AclDocument>, AclError> {
        let reached = Cell::new(0);
        let mut de = serde_json::Deserializer::from_str(text);
        let raws = de
            .deserialize_any(JsonDocuments { reached: &reached })
            .and_then(|raws| de.end().map(|()| raws))
            .map_err(|e| {
                AclError::new(
                    reached.get(),
                    Field::Document,
                    AclErrorKind::Syntax(e.to_string()),
                )
            })?;
        compile_all(raws.into_iter().enumerate().collect())
    }

    /// The tenant the document is about.
    pub fn tenant(&self) -> &TenantId {
        &self.0.scope.tenant
    }

    /// The namespace the document is about; `None` for the whole tenant.
    pub fn namespace(&self) -> Option<&NamespaceName> {
        self.0.scope.namespace.as_ref()
    }

    pub fn rule_count(&self) -> usize {
        self.0.rules.len()
    }

    pub(crate) fn rules(&self) -> &[Rule] {
        &self.0.rules
    }

    /// The document in canonical YAML: `apiVersion: rampart.io/v1`,
    /// `namespace` omitted for a tenant-wide document, `effect` written only
    /// for deny rules, permissions as written (`admin` is not expanded).
    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(&self.to_raw())
            .expect("a document of strings and lists always serializes to YAML")
    }

    /// The same canonical form as [`AclDocument::to_yaml`], in JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&self.to_raw())
            .expect("a document of strings and lists always serializes to JSON")
    }

    fn to_raw(&self) -> RawDocument {
        RawDocument {
            api_version: API_VERSION.to_owned(),
            kind: "ACL".to_owned(),
            metadata: RawMetadata {
                tenant: self.tenant().to_string(),
                namespace: self.namespace().map(|n| n.to_string()),
            },
            spec: RawSpec {
                rules: self.0.rules.iter().map(Rule::to_raw).collect(),
            },
        }
    }

    fn compile(raw: &RawDocument, document: usize) -> Result<AclDocument, AclError> {
        let err = |field, kind| AclError::new(document, field, kind);
        if !API_VERSIONS.contains(&raw.api_version.as_str()) {
            return Err(err(
                Field::ApiVersion,
                AclErrorKind::UnsupportedApiVersion(excerpt(&raw.api_version)),
            ));
        }
        if raw.kind != "ACL" {
            return Err(err(
                Field::Kind,
                AclErrorKind::WrongKind(excerpt(&raw.kind)),
            ));
        }
        let tenant = TenantId::parse(&raw.metadata.tenant)
            .map_err(|e| err(Field::Tenant, AclErrorKind::InvalidName(e)))?;
        let namespace = match raw.metadata.namespace.as_deref() {
            None | Some("*") => None,
            Some(n) => Some(
                NamespaceName::parse(n)
                    .map_err(|e| err(Field::Namespace, AclErrorKind::InvalidName(e)))?,
            ),
        };
        if raw.spec.rules.len() > MAX_RULES_PER_DOCUMENT {
            return Err(err(
                Field::Rules,
                AclErrorKind::TooManyRules {
                    max: MAX_RULES_PER_DOCUMENT,
                },
            ));
        }
        let scope = Scope { tenant, namespace };
        let rules = raw
            .spec
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| Rule::compile(r, &scope, document, i))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AclDocument(Arc::new(Compiled { scope, rules })))
    }
}

impl fmt::Display for AclDocument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.namespace() {
            Some(n) => write!(f, "ACL {}/{n}", self.tenant()),
            None => write!(f, "ACL {}/*", self.tenant()),
        }
    }
}

fn compile_all(raws: Vec<(usize, RawDocument)>) -> Result<Vec<AclDocument>, AclError> {
    if raws.is_empty() {
        return Err(AclError::new(0, Field::Document, AclErrorKind::NoDocument));
    }
    let mut docs: Vec<(usize, AclDocument)> = Vec::with_capacity(raws.len());
    for (i, raw) in &raws {
        let doc = AclDocument::compile(raw, *i)?;
        if let Some((first, _)) = docs.iter().find(|(_, d)| d.0.scope == doc.0.scope) {
            return Err(AclError::new(
                *i,
                Field::Document,
                AclErrorKind::DuplicateScope { first: *first },
            ));
        }
        docs.push((*i, doc));
    }
    Ok(docs.into_iter().map(|(_, d)| d).collect())
}

// === JSON: one document or an array, counting documents for errors ===

struct JsonDocuments<'a> {
    /// The index of the document being read, for the error message.
    reached: &'a Cell<usize>,
}

impl<'de> Visitor<'de> for JsonDocuments<'_> {
    type Value = Vec<RawDocument>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an ACL document object or an array of them")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let raw = RawDocument::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(vec![raw])
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(raw) = seq.next_element::<RawDocument>()? {
            out.push(raw);
            self.reached.set(out.len());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
