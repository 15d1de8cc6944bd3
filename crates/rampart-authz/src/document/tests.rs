use super::*;
use crate::pattern::{PrincipalPattern, ResourcePattern};
use crate::role::Role;

const EXAMPLE: &str = r#"
apiVersion: felix.io/v1
kind: ACL
metadata:
  tenant: acme-corp
  namespace: production
spec:
  rules:
    - principal: "service-account-publisher"
      resource: "stream:orders"
      permissions: [publish]
    - principal: "*"
      resource: "stream:*"
      permissions: [subscribe]
    - principal: "role:viewer"
      resource: "cache:sessions"
      permissions: [cache_read, admin]
      effect: deny
"#;

fn one(yaml: &str) -> AclDocument {
    let mut docs = AclDocument::parse_yaml(yaml).unwrap();
    assert_eq!(docs.len(), 1);
    docs.remove(0)
}

/// A tenant-wide document for `acme` with one rule.
fn rule_doc(principal: &str, resource: &str, permissions: &str, extra: &str) -> String {
    format!(
        "apiVersion: rampart.io/v1\nkind: ACL\nmetadata:\n  tenant: acme\nspec:\n  rules:\n    - principal: {principal:?}\n      resource: {resource:?}\n      permissions: {permissions}\n{extra}"
    )
}

fn err(yaml: &str) -> AclError {
    AclDocument::parse_yaml(yaml).unwrap_err()
}

#[test]
fn parses_the_seed_example() {
    let doc = one(EXAMPLE);
    assert_eq!(doc.tenant().as_str(), "acme-corp");
    assert_eq!(doc.namespace().map(|n| n.as_str()), Some("production"));
    assert_eq!(doc.rule_count(), 3);
    let r = &doc.rules()[0];
    assert_eq!(
        r.principal,
        PrincipalPattern::Exact("service-account-publisher".into())
    );
    assert_eq!(
        r.resource,
        ResourcePattern::Stream("orders".parse().unwrap())
    );
    assert_eq!(r.permissions, PermSet::EMPTY.with(Permission::Publish));
    assert_eq!(r.effect, Effect::Allow);
    let r = &doc.rules()[2];
    assert_eq!(r.principal, PrincipalPattern::Role(Role::Viewer));
    assert_eq!(r.effect, Effect::Deny);
    assert_eq!(
        r.permissions,
        PermSet::EMPTY
            .with(Permission::CacheRead)
            .with(Permission::CacheAdmin)
    );
    assert_eq!(
        r.reference.to_string(),
        "rule 2 of acme-corp/production: principal=role:viewer resource=cache:sessions permissions=[cache_read, admin]"
    );
    assert_eq!(doc.to_string(), "ACL acme-corp/production");
}

#[test]
fn admin_expands_to_the_admin_permissions_of_the_resource() {
    use Permission as P;
    let expanded = |resource: &str, ns: Option<&str>| -> Vec<Permission> {
        let ns = ns
            .map(|n| format!("\n  namespace: {n}"))
            .unwrap_or_default();
        let yaml = format!(
            "apiVersion: rampart.io/v1\nkind: ACL\nmetadata:\n  tenant: acme{ns}\nspec:\n  rules:\n    - {{principal: x, resource: {resource:?}, permissions: [admin]}}\n"
        );
        one(&yaml).rules()[0].permissions.iter().collect()
    };
    assert_eq!(expanded("stream:*", None), [P::StreamAdmin]);
    assert_eq!(expanded("stream:orders", Some("prod")), [P::StreamAdmin]);
    assert_eq!(expanded("cache:c", None), [P::CacheAdmin]);
    assert_eq!(
        expanded("namespace", Some("prod")),
        [P::StreamAdmin, P::CacheAdmin, P::TenantAdmin]
    );
    assert_eq!(expanded("admin:keys", None), [P::KeyAdmin]);
    assert_eq!(expanded("admin:audit", None), [P::AuditRead]);
    assert_eq!(
        expanded("admin:*", None),
        [P::KeyAdmin, P::AclAdmin, P::TenantAdmin, P::AuditRead]
    );
    assert_eq!(
        expanded("*", None),
        [
            P::StreamAdmin,
            P::CacheAdmin,
            P::KeyAdmin,
            P::AclAdmin,
            P::TenantAdmin,
            P::AuditRead
        ]
    );
    assert_eq!(
        expanded("*", Some("prod")),
        [P::StreamAdmin, P::CacheAdmin, P::TenantAdmin]
    );
}

#[test]
fn multiple_documents_and_empty_ones() {
    let stream = format!(
        "---\n{}\n---\n---\n{}",
        rule_doc("a", "stream:x", "[publish]", ""),
        EXAMPLE
    );
    let docs = AclDocument::parse_yaml(&stream).unwrap();
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0].namespace(), None);
    assert_eq!(docs[1].tenant().as_str(), "acme-corp");
}

#[test]
fn namespace_star_means_tenant_wide() {
    let yaml = rule_doc("a", "secret:db/*", "[secret_read]", "")
        .replace("tenant: acme", "tenant: acme\n  namespace: \"*\"");
    assert_eq!(one(&yaml).namespace(), None);
}

#[test]
fn renders_and_parses_back() {
    let doc = one(EXAMPLE);
    let yaml = doc.to_yaml();
    assert!(yaml.starts_with("apiVersion: rampart.io/v1\n"), "{yaml}");
    assert!(yaml.contains("effect: deny"), "{yaml}");
    assert_eq!(yaml.matches("effect").count(), 1, "{yaml}");
    assert_eq!(one(&yaml), doc);
    let json = doc.to_json();
    assert_eq!(AclDocument::parse_json(&json).unwrap(), [doc]);
    let tenant_wide = one(&rule_doc("*", "*", "[admin, secret_read]", ""));
    let yaml = tenant_wide.to_yaml();
    assert!(!yaml.contains("namespace"), "{yaml}");
    assert_eq!(one(&yaml), tenant_wide);
}

#[test]
fn json_object_or_array() {
    let json = r#"{"apiVersion":"rampart.io/v1","kind":"ACL",
        "metadata":{"tenant":"acme"},
        "spec":{"rules":[{"principal":"ci","resource":"stream:orders","permissions":["publish"]}]}}"#;
    let docs = AclDocument::parse_json(json).unwrap();
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].rule_count(), 1);
    let two = format!("[{json}, {}]", json.replace("\"acme\"", "\"globex\""));
    assert_eq!(AclDocument::parse_json(&two).unwrap().len(), 2);

    let e = AclDocument::parse_json("[]").unwrap_err();
    assert_eq!(e.kind, AclErrorKind::NoDocument);
    // The second document has an unknown field: its index is reported.
    let bad = format!("[{json}, {}]", json.replace("\"kind\"", "\"kindd\""));
    let e = AclDocument::parse_json(&bad).unwrap_err();
    assert_eq!((e.document, e.field), (1, Field::Document), "{e}");
    assert!(
        matches!(&e.kind, AclErrorKind::Syntax(m) if m.contains("kindd")),
        "{e}"
    );
    // Validation errors too.
    let bad = format!("[{json}, {}]", json.replace("publish\"", "publsh\""));
    let e = AclDocument::parse_json(&bad).unwrap_err();
    assert_eq!(
        (e.document, e.rule, e.field),
        (1, Some(0), Field::Permissions)
    );
    // Trailing garbage, a scalar, duplicate keys.
    assert!(AclDocument::parse_json(&format!("{json} x")).is_err());
    assert!(AclDocument::parse_json("42").is_err());
    let dup = json.replace(r#""kind":"ACL","#, r#""kind":"ACL","kind":"ACL","#);
    assert!(AclDocument::parse_json(&dup).is_err());
}

#[test]
fn syntax_errors_name_the_document() {
    let e = err("a: [");
    assert_eq!((e.document, e.field), (0, Field::Document));
    let stream = format!(
        "{}---\n{}",
        rule_doc("a", "stream:x", "[publish]", ""),
        rule_doc("a", "stream:x", "[publish]", "      color: red\n")
    );
    let e = err(&stream);
    assert_eq!((e.document, e.rule, e.field), (1, None, Field::Document));
    assert!(
        matches!(&e.kind, AclErrorKind::Syntax(m) if m.contains("color")),
        "{e}"
    );
    let e = err("apiVersion: rampart.io/v1\nkind: ACL\nmetadata: {tenant: acme}\n");
    assert!(
        matches!(&e.kind, AclErrorKind::Syntax(m) if m.contains("spec")),
        "{e}"
    );
    let e = err("apiVersion: rampart.io/v1\napiVersion: rampart.io/v1\n");
    assert!(matches!(&e.kind, AclErrorKind::Syntax(_)), "{e}");
    assert_eq!(err("").kind, AclErrorKind::NoDocument);
    assert_eq!(err("---\n---\n").kind, AclErrorKind::NoDocument);
}

#[test]
fn header_errors() {
    let ok = rule_doc("a", "stream:x", "[publish]", "");
    let e = err(&ok.replace("rampart.io/v1", "rampart.io/v2"));
    assert_eq!((e.field, e.rule), (Field::ApiVersion, None));
    assert!(matches!(e.kind, AclErrorKind::UnsupportedApiVersion(_)));
    let e = err(&ok.replace("kind: ACL", "kind: Role"));
    assert_eq!(e.field, Field::Kind);
    assert!(matches!(e.kind, AclErrorKind::WrongKind(_)));
    let e = err(&ok.replace("tenant: acme", "tenant: Acme Corp"));
    assert_eq!(e.field, Field::Tenant);
    assert!(matches!(e.kind, AclErrorKind::InvalidName(_)));
    let e = err(&ok.replace("tenant: acme", "tenant: acme\n  namespace: Prod"));
    assert_eq!(e.field, Field::Namespace);
    assert!(matches!(e.kind, AclErrorKind::InvalidName(_)));
    assert_eq!(
        e.to_string(),
        "document 0, metadata.namespace: namespace name has a character outside [a-z0-9][a-z0-9_.-]{0,62}"
    );
}

#[test]
fn rule_errors_name_rule_and_field() {
    let check = |principal: &str, resource: &str, perms: &str, extra: &str, field: Field| {
        let yaml = rule_doc("ok", "stream:x", "[publish]", "").replace(
            "  rules:\n",
            &format!(
                "  rules:\n    - principal: {principal:?}\n      resource: {resource:?}\n      permissions: {perms}\n{extra}"
            ),
        );
        // The bad rule is rule 0; the good one after it is rule 1.
        let e = err(&yaml);
        assert_eq!((e.document, e.rule, e.field), (0, Some(0), field), "{e}");
        e.kind
    };
    use AclErrorKind as K;
    use Field as F;
    assert!(matches!(
        check("", "*", "[publish]", "", F::Principal),
        K::MalformedPrincipal(_)
    ));
    assert!(matches!(
        check("a b", "*", "[publish]", "", F::Principal),
        K::MalformedPrincipal(_)
    ));
    assert!(matches!(
        check("svc-*", "*", "[publish]", "", F::Principal),
        K::MalformedPrincipal(_)
    ));
    assert!(matches!(
        check("role:root", "*", "[publish]", "", F::Principal),
        K::UnknownRole(_)
    ));
    assert!(matches!(
        check("a", "topic:x", "[publish]", "", F::Resource),
        K::MalformedResource(_)
    ));
    assert!(matches!(
        check("a", "stream:X", "[publish]", "", F::Resource),
        K::InvalidName(_)
    ));
    assert!(matches!(
        check("a", "secret:a//b", "[secret_read]", "", F::Resource),
        K::InvalidSecretPath(_)
    ));
    assert!(matches!(
        check("a", "admin:root", "[key_admin]", "", F::Resource),
        K::MalformedResource(_)
    ));
    assert!(matches!(
        check("a", "*", "[publsh]", "", F::Permissions),
        K::UnknownPermission(_)
    ));
    assert!(matches!(
        check("a", "*", "[\"*\"]", "", F::Permissions),
        K::UnknownPermission(_)
    ));
    assert!(matches!(
        check("a", "*", "[]", "", F::Permissions),
        K::NoPermissions
    ));
    assert!(matches!(
        check("a", "stream:x", "[cache_read]", "", F::Permissions),
        K::NotApplicable {
            permission: Permission::CacheRead,
            ..
        }
    ));
    assert!(matches!(
        check("a", "admin:keys", "[secret_read]", "", F::Permissions),
        K::NotApplicable { .. }
    ));
    assert!(matches!(
        check("a", "secret:db/*", "[admin]", "", F::Permissions),
        K::AdminGrantsNothing { .. }
    ));
    assert!(matches!(
        check("a", "*", "[publish]", "      effect: maybe\n", F::Effect),
        K::UnknownEffect(_)
    ));
}

#[test]
fn the_second_bad_rule_is_reported_by_index() {
    let yaml = rule_doc("a", "stream:x", "[publish]", "")
        + "    - principal: b\n      resource: stream:y\n      permissions: [cache_write]\n";
    let e = err(&yaml);
    assert_eq!((e.rule, e.field), (Some(1), Field::Permissions));
    assert_eq!(
        e.to_string(),
        "document 0, spec.rules[1].permissions: cache_write can never apply to stream:y"
    );
}

#[test]
fn scope_errors() {
    let yaml = rule_doc("a", "secret:db/password", "[secret_read]", "")
        .replace("tenant: acme", "tenant: acme\n  namespace: prod");
    let e = err(&yaml);
    assert_eq!((e.rule, e.field), (Some(0), Field::Resource));
    assert!(matches!(e.kind, AclErrorKind::OutOfScope(_)));
    let yaml = rule_doc("a", "*", "[key_admin]", "")
        .replace("tenant: acme", "tenant: acme\n  namespace: prod");
    let e = err(&yaml);
    assert!(matches!(e.kind, AclErrorKind::NotApplicable { .. }), "{e}");
    assert!(e.to_string().contains("namespace-scoped"), "{e}");
}

#[test]
fn duplicate_scope_in_one_input() {
    let d = rule_doc("a", "stream:x", "[publish]", "");
    let e = err(&format!("{d}---\n{EXAMPLE}---\n{d}"));
    assert_eq!(
        (e.document, e.kind),
        (2, AclErrorKind::DuplicateScope { first: 0 })
    );
}

#[test]
fn too_many_rules() {
    let mut yaml = rule_doc("a", "stream:x", "[publish]", "");
    for _ in 0..MAX_RULES_PER_DOCUMENT {
        yaml.push_str("    - {principal: a, resource: \"stream:x\", permissions: [publish]}\n");
    }
    let e = err(&yaml);
    assert_eq!((e.field, e.rule), (Field::Rules, None));
    assert!(matches!(e.kind, AclErrorKind::TooManyRules { max: 1024 }));
}

#[test]
fn long_input_is_cut_in_messages() {
    let long = "x".repeat(10_000);
    let e =
        err(&rule_doc("a", "stream:x", "[publish]", "")
            .replace("kind: ACL", &format!("kind: {long}")));
    assert!(e.to_string().len() < 200, "{e}");
}
