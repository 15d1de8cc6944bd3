use super::*;
use crate::document::AclDocument;
use crate::pattern::ResourcePattern;
use proptest::prelude::*;

// === helpers ===

fn policy(yaml: &[&str]) -> Policy {
    let mut p = Policy::new();
    for y in yaml {
        for d in AclDocument::parse_yaml(y).unwrap() {
            p.apply(d);
        }
    }
    p
}

/// A document for `tenant` (and `namespace`, unless `"*"`), with rules
/// written one per line as `principal | resource | permissions | effect`.
fn doc(tenant: &str, namespace: &str, rules: &[&str]) -> String {
    let mut y = format!(
        "apiVersion: rampart.io/v1\nkind: ACL\nmetadata:\n  tenant: {tenant}\n  namespace: {namespace:?}\nspec:\n  rules:\n"
    );
    for r in rules {
        let f: Vec<&str> = r.split('|').map(str::trim).collect();
        let effect = f.get(3).copied().unwrap_or("allow");
        y.push_str(&format!(
            "    - principal: {:?}\n      resource: {:?}\n      permissions: [{}]\n      effect: {effect}\n",
            f[0], f[1], f[2]
        ));
    }
    y
}

fn subject(tenant: &str, principal: &str, roles: &[&str]) -> Subject {
    Subject::new(
        TenantId::parse(tenant).unwrap(),
        principal,
        roles.iter().copied(),
    )
}

fn res(s: &str) -> Resource {
    Resource::parse(s).unwrap()
}

fn allowed(p: &Policy, s: &Subject, r: &str, perm: Permission) -> bool {
    decide(p, s, &res(r), perm).allowed
}

/// The printable rule that decided, or the reason's code.
fn why(p: &Policy, s: &Subject, r: &str, perm: Permission) -> String {
    match decide(p, s, &res(r), perm).reason {
        Reason::Rule(r) => format!("{}/{}", r.namespace().map_or("*", |n| n.as_str()), r.rule()),
        other => other.code().to_owned(),
    }
}

/// One resource of each kind in tenant `acme`, for table tests.
const RESOURCES: [&str; 10] = [
    "tenant:acme",
    "namespace:acme/prod",
    "stream:acme/prod/orders",
    "cache:acme/prod/sessions",
    "secret:acme/db/password",
    "secret:acme/api/token",
    "admin:acme/keys",
    "admin:acme/acl",
    "admin:acme/audit",
    "admin:acme/tenant",
];

// === roles ===

#[test]
fn viewer_reads_only() {
    let p = Policy::new();
    let v = subject("acme", "v", &["viewer"]);
    assert!(allowed(
        &p,
        &v,
        "stream:acme/prod/orders",
        Permission::Subscribe
    ));
    assert!(allowed(&p, &v, "cache:acme/dev/c", Permission::CacheRead));
    assert!(!allowed(
        &p,
        &v,
        "stream:acme/prod/orders",
        Permission::Publish
    ));
    assert!(!allowed(&p, &v, "cache:acme/dev/c", Permission::CacheWrite));
    for r in RESOURCES {
        for perm in Permission::ALL.into_iter().filter(|p| p.is_admin()) {
            assert!(!allowed(&p, &v, r, perm), "{r} {perm}");
        }
    }
}

#[test]
fn user_has_no_admin_permission() {
    let p = Policy::new();
    let u = subject("acme", "u", &["user"]);
    assert!(allowed(
        &p,
        &u,
        "stream:acme/prod/orders",
        Permission::Publish
    ));
    assert!(allowed(&p, &u, "cache:acme/prod/c", Permission::CacheWrite));
    for r in RESOURCES {
        for perm in Permission::ALL {
            if perm.is_admin() || matches!(perm, Permission::SecretRead | Permission::SecretWrite) {
                assert!(!allowed(&p, &u, r, perm), "{r} {perm}");
            }
        }
    }
}

#[test]
fn admin_needs_a_rule_for_secrets() {
    let a = subject("acme", "root", &["admin"]);
    let empty = Policy::new();
    for r in RESOURCES {
        for perm in [Permission::SecretRead, Permission::SecretWrite] {
            let d = decide(&empty, &a, &res(r), perm);
            assert_eq!(d.reason, Reason::NoRule, "{r} {perm}");
        }
    }
    for perm in Permission::ALL.into_iter().filter(|p| p.is_admin()) {
        let d = decide(&empty, &a, &res("admin:acme/keys"), perm);
        assert_eq!(d, Decision::allow(Reason::Role(Role::Admin)), "{perm}");
    }
    let p = policy(&[&doc(
        "acme",
        "*",
        &["role:admin | secret:db/* | secret_read"],
    )]);
    assert!(allowed(
        &p,
        &a,
        "secret:acme/db/password",
        Permission::SecretRead
    ));
    assert!(!allowed(
        &p,
        &a,
        "secret:acme/db/password",
        Permission::SecretWrite
    ));
    assert!(!allowed(
        &p,
        &a,
        "secret:acme/api/token",
        Permission::SecretRead
    ));
}

#[test]
fn stream_admin_cannot_read_secrets() {
    let p = policy(&[&doc("acme", "*", &["ops | stream:* | admin"])]);
    let ops = subject("acme", "ops", &[]);
    assert!(allowed(
        &p,
        &ops,
        "stream:acme/prod/orders",
        Permission::StreamAdmin
    ));
    assert!(!allowed(
        &p,
        &ops,
        "stream:acme/prod/orders",
        Permission::Publish
    ));
    assert!(!allowed(
        &p,
        &ops,
        "cache:acme/prod/c",
        Permission::CacheAdmin
    ));
    for r in RESOURCES {
        for perm in [Permission::SecretRead, Permission::SecretWrite] {
            assert!(!allowed(&p, &ops, r, perm), "{r} {perm}");
        }
    }
    // Even `admin` on `*` grants no secret.
    let p = policy(&[&doc("acme", "*", &["ops | * | admin"])]);
    assert!(allowed(&p, &ops, "admin:acme/acl", Permission::AclAdmin));
    assert!(!allowed(
        &p,
        &ops,
        "secret:acme/db/password",
        Permission::SecretRead
    ));
}

#[test]
fn unknown_roles_grant_nothing() {
    let p = Policy::new();
    let s = subject("acme", "x", &["superuser", "Admin", "ADMIN"]);
    for r in RESOURCES {
        for perm in Permission::ALL {
            assert!(!allowed(&p, &s, r, perm));
        }
    }
}

// === deny wins, specificity ===

#[test]
fn deny_wins_over_any_allow_and_roles() {
    let p = policy(&[
        &doc("acme", "*", &["* | stream:* | publish | deny"]),
        &doc("acme", "prod", &["ci | stream:orders | publish"]),
    ]);
    let ci = subject("acme", "ci", &["admin"]);
    let d = decide(
        &p,
        &ci,
        &res("stream:acme/prod/orders"),
        Permission::Publish,
    );
    assert!(!d.allowed);
    assert_eq!(d.reason.code(), "deny_rule");
    assert!(allowed(
        &p,
        &ci,
        "stream:acme/prod/orders",
        Permission::Subscribe
    ));
}

#[test]
fn most_specific_allow_is_reported() {
    let p = policy(&[
        &doc(
            "acme",
            "*",
            &[
                "* | * | publish, subscribe",
                "ci | stream:* | publish",
                "ci | stream:orders | publish",
            ],
        ),
        &doc(
            "acme",
            "prod",
            &[
                "* | stream:* | publish",
                "role:user | stream:orders | publish",
                "* | stream:orders | publish",
            ],
        ),
    ]);
    let ci = subject("acme", "ci", &["user"]);
    // Same resource rank: the namespace document beats the tenant-wide one;
    // within it, role:user beats "*".
    assert_eq!(
        why(&p, &ci, "stream:acme/prod/orders", Permission::Publish),
        "prod/principal=role:user resource=stream:orders permissions=[publish]"
    );
    // Outside prod only the tenant-wide rules apply: exact resource wins.
    assert_eq!(
        why(&p, &ci, "stream:acme/dev/orders", Permission::Publish),
        "*/principal=ci resource=stream:orders permissions=[publish]"
    );
    assert_eq!(
        why(&p, &ci, "stream:acme/dev/other", Permission::Publish),
        "*/principal=ci resource=stream:* permissions=[publish]"
    );
    assert_eq!(
        why(&p, &ci, "stream:acme/dev/other", Permission::Subscribe),
        "*/principal=* resource=* permissions=[publish, subscribe]"
    );
    // A role is reported only when no rule matched.
    assert_eq!(
        why(&p, &ci, "cache:acme/dev/c", Permission::CacheWrite),
        "role"
    );
}

#[test]
fn exact_resource_beats_a_more_specific_principal() {
    let p = policy(&[&doc(
        "acme",
        "*",
        &["ci | stream:* | publish", "* | stream:orders | publish"],
    )]);
    let ci = subject("acme", "ci", &[]);
    assert_eq!(
        why(&p, &ci, "stream:acme/prod/orders", Permission::Publish),
        "*/principal=* resource=stream:orders permissions=[publish]"
    );
}

#[test]
fn most_specific_deny_is_reported() {
    let p = policy(&[&doc(
        "acme",
        "*",
        &[
            "* | secret:* | secret_read | deny",
            "* | secret:db/* | secret_read | deny",
            "* | secret:db/replica/* | secret_read | deny",
            "vault-reader | secret:db/replica/password | secret_read",
        ],
    )]);
    let s = subject("acme", "vault-reader", &[]);
    assert_eq!(
        why(
            &p,
            &s,
            "secret:acme/db/replica/password",
            Permission::SecretRead
        ),
        "*/principal=* resource=secret:db/replica/* permissions=[secret_read]"
    );
    assert_eq!(
        why(&p, &s, "secret:acme/db/password", Permission::SecretRead),
        "*/principal=* resource=secret:db/* permissions=[secret_read]"
    );
    assert_eq!(
        why(&p, &s, "secret:acme/api/token", Permission::SecretRead),
        "*/principal=* resource=secret:* permissions=[secret_read]"
    );
}

#[test]
fn ties_go_to_the_first_rule() {
    let p = policy(&[&doc(
        "acme",
        "*",
        &[
            "ci | stream:* | publish",
            "ci | stream:* | publish, subscribe",
        ],
    )]);
    let d = decide(
        &p,
        &subject("acme", "ci", &[]),
        &res("stream:acme/p/s"),
        Permission::Publish,
    );
    let Reason::Rule(r) = d.reason else {
        panic!("{d}")
    };
    assert_eq!(r.index(), 0);
}

// === tenants and namespaces ===

#[test]
fn cross_tenant_is_denied_whatever_the_rules() {
    let p = policy(&[
        &doc("acme", "*", &["* | * | admin, publish, secret_read"]),
        &doc("globex", "*", &["* | * | admin, publish, secret_read"]),
    ]);
    let intruder = subject("globex", "root", &["admin", "user", "viewer"]);
    for r in RESOURCES {
        for perm in Permission::ALL {
            let d = decide(&p, &intruder, &res(r), perm);
            assert_eq!(d, Decision::deny(Reason::CrossTenant), "{r} {perm}");
        }
    }
    assert!(allowed(
        &p,
        &intruder,
        "stream:globex/x/y",
        Permission::Publish
    ));
}

#[test]
fn namespace_documents_apply_to_their_namespace_only() {
    let p = policy(&[&doc(
        "acme",
        "prod",
        &[
            "ci | * | publish, stream_admin",
            "ci | namespace | tenant_admin",
        ],
    )]);
    let ci = subject("acme", "ci", &[]);
    assert!(allowed(
        &p,
        &ci,
        "stream:acme/prod/orders",
        Permission::Publish
    ));
    assert!(!allowed(
        &p,
        &ci,
        "stream:acme/dev/orders",
        Permission::Publish
    ));
    assert!(allowed(
        &p,
        &ci,
        "namespace:acme/prod",
        Permission::StreamAdmin
    ));
    assert!(allowed(
        &p,
        &ci,
        "namespace:acme/prod",
        Permission::TenantAdmin
    ));
    assert!(!allowed(
        &p,
        &ci,
        "namespace:acme/dev",
        Permission::TenantAdmin
    ));
    // `*` in a namespace document reaches no tenant-level resource.
    for r in ["tenant:acme", "admin:acme/tenant", "admin:acme/keys"] {
        for perm in Permission::ALL {
            assert!(!allowed(&p, &ci, r, perm), "{r} {perm}");
        }
    }
}

#[test]
fn tenant_wide_documents_apply_everywhere_in_the_tenant() {
    let p = policy(&[&doc(
        "acme",
        "*",
        &["ci | stream:orders | publish", "ops | * | tenant_admin"],
    )]);
    let ci = subject("acme", "ci", &[]);
    assert!(allowed(
        &p,
        &ci,
        "stream:acme/prod/orders",
        Permission::Publish
    ));
    assert!(allowed(
        &p,
        &ci,
        "stream:acme/dev/orders",
        Permission::Publish
    ));
    assert!(!allowed(
        &p,
        &ci,
        "stream:acme/dev/other",
        Permission::Publish
    ));
    let ops = subject("acme", "ops", &[]);
    assert!(allowed(&p, &ops, "tenant:acme", Permission::TenantAdmin));
    assert!(allowed(
        &p,
        &ops,
        "admin:acme/tenant",
        Permission::TenantAdmin
    ));
    assert!(!allowed(&p, &ops, "tenant:globex", Permission::TenantAdmin));
}

#[test]
fn secret_prefix_patterns_match_whole_segments() {
    let p = policy(&[&doc("acme", "*", &["app | secret:db/* | secret_read"])]);
    let app = subject("acme", "app", &[]);
    assert!(allowed(
        &p,
        &app,
        "secret:acme/db/password",
        Permission::SecretRead
    ));
    assert!(allowed(
        &p,
        &app,
        "secret:acme/db/a/b/c",
        Permission::SecretRead
    ));
    assert!(!allowed(&p, &app, "secret:acme/db", Permission::SecretRead));
    assert!(!allowed(
        &p,
        &app,
        "secret:acme/dbx/password",
        Permission::SecretRead
    ));
    assert!(!allowed(
        &p,
        &app,
        "secret:acme/db/password",
        Permission::SecretWrite
    ));
}

#[test]
fn principals_match_exactly() {
    let p = policy(&[&doc("acme", "*", &["ci | stream:* | publish"])]);
    for name in ["Ci", "ci ", "c", "ci2", ""] {
        assert!(!allowed(
            &p,
            &subject("acme", name, &[]),
            "stream:acme/a/b",
            Permission::Publish
        ));
    }
}

#[test]
fn removing_a_document_takes_its_rules_away() {
    let mut p = policy(&[&doc("acme", "prod", &["ci | stream:* | publish"])]);
    let ci = subject("acme", "ci", &[]);
    assert!(allowed(&p, &ci, "stream:acme/prod/x", Permission::Publish));
    p.remove(
        &TenantId::parse("acme").unwrap(),
        Some(&NamespaceName::parse("prod").unwrap()),
    );
    assert!(!allowed(&p, &ci, "stream:acme/prod/x", Permission::Publish));
}

// === display ===

#[test]
fn decisions_read_well() {
    let p = policy(&[
        &doc(
            "acme",
            "production",
            &[
                "x | * | publish",
                "y | * | publish",
                "ci | stream:orders | publish",
            ],
        ),
        &doc("acme", "*", &["* | secret:* | secret_read | deny"]),
    ]);
    let ci = subject("acme", "ci", &["viewer"]);
    let show = |r: &str, perm| decide(&p, &ci, &res(r), perm).to_string();
    assert_eq!(
        show("stream:acme/production/orders", Permission::Publish),
        "allow: rule 2 of acme/production: principal=ci resource=stream:orders permissions=[publish]"
    );
    assert_eq!(
        show("secret:acme/x", Permission::SecretRead),
        "deny: rule 0 of acme/*: principal=* resource=secret:* permissions=[secret_read]"
    );
    assert_eq!(
        show("stream:acme/dev/orders", Permission::Subscribe),
        "allow: role viewer (built-in, tenant-wide)"
    );
    assert_eq!(
        show("stream:acme/dev/orders", Permission::Publish),
        "deny: no rule or role allows it (deny by default)"
    );
    assert_eq!(
        show("stream:globex/dev/orders", Permission::Publish),
        "deny: the resource belongs to another tenant"
    );
    let d = decide(&p, &ci, &res("secret:acme/x"), Permission::SecretRead);
    assert_eq!(d.reason.code(), "deny_rule");
    assert!(format!("{d:?}").contains("RuleRef(deny rule 0 of acme/*"));
}

// === properties ===

const PRINCIPALS: [&str; 4] = ["alice", "bob", "ci", "nobody"];
const PRINCIPAL_PATTERNS: [&str; 7] = [
    "*",
    "role:viewer",
    "role:user",
    "role:admin",
    "alice",
    "bob",
    "ci",
];
const ROLE_NAMES: [&str; 5] = ["viewer", "user", "admin", "bogus", "Admin"];
const NAMESPACED_PATTERNS: [&str; 8] = [
    "*",
    "namespace",
    "stream:*",
    "stream:orders",
    "stream:payments",
    "cache:*",
    "cache:sessions",
    "cache:users",
];
const TENANT_WIDE_PATTERNS: [&str; 10] = [
    "secret:*",
    "secret:db/*",
    "secret:db/replica/*",
    "secret:db/password",
    "secret:api/token",
    "admin:*",
    "admin:keys",
    "admin:acl",
    "admin:audit",
    "admin:tenant",
];
const NAMESPACES: [Option<&str>; 3] = [None, Some("prod"), Some("dev")];
const REQUESTS: [&str; 18] = [
    "tenant:acme",
    "namespace:acme/prod",
    "namespace:acme/staging",
    "stream:acme/prod/orders",
    "stream:acme/dev/payments",
    "stream:acme/staging/orders",
    "stream:acme/prod/other",
    "cache:acme/prod/sessions",
    "cache:acme/dev/users",
    "secret:acme/db/password",
    "secret:acme/db/replica/password",
    "secret:acme/api/token",
    "secret:acme/dbx/y",
    "admin:acme/keys",
    "admin:acme/acl",
    "admin:acme/audit",
    "admin:acme/tenant",
    "cache:acme/staging/users",
];

/// A generated rule: indices into the tables above, a permission mask,
/// whether to use the word `admin`, and the effect.
#[derive(Debug, Clone)]
struct GenRule {
    principal: usize,
    resource: usize,
    mask: u16,
    admin_word: bool,
    deny: bool,
}

fn gen_rule(principals: usize) -> impl Strategy<Value = GenRule> {
    (
        0..principals,
        0..18usize,
        any::<u16>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(principal, resource, mask, admin_word, deny)| GenRule {
            principal,
            resource,
            mask,
            admin_word,
            deny,
        })
}

/// Documents keyed by (tenant, namespace); the JSON rules of each.
type GenPolicy =
    std::collections::BTreeMap<(&'static str, Option<&'static str>), Vec<serde_json::Value>>;

fn rule_json(r: &GenRule, namespace: Option<&str>, principals: &[&str]) -> serde_json::Value {
    let scoped = namespace.is_some();
    let resource = if scoped {
        NAMESPACED_PATTERNS[r.resource % NAMESPACED_PATTERNS.len()]
    } else {
        let all: Vec<&str> = NAMESPACED_PATTERNS
            .iter()
            .chain(TENANT_WIDE_PATTERNS.iter())
            .copied()
            .collect();
        all[r.resource % all.len()]
    };
    let applicable = ResourcePattern::parse(resource, scoped)
        .unwrap()
        .applicable(scoped);
    let mut words: Vec<&str> = Permission::ALL
        .into_iter()
        .filter(|p| r.mask & (1 << *p as u16) != 0 && applicable.contains(*p))
        .map(Permission::as_str)
        .collect();
    if r.admin_word && !Permission::ADMIN.intersect(applicable).is_empty() {
        words.push("admin");
    }
    if words.is_empty() {
        words.push(applicable.iter().next().unwrap().as_str());
    }
    serde_json::json!({
        "principal": principals[r.principal % principals.len()],
        "resource": resource,
        "permissions": words,
        "effect": if r.deny { "deny" } else { "allow" },
    })
}

fn gen_policy(principals: &'static [&'static str]) -> impl Strategy<Value = GenPolicy> {
    let document = (
        prop::sample::select(vec!["acme", "globex"]),
        prop::sample::select(NAMESPACES.to_vec()),
        prop::collection::vec(gen_rule(principals.len()), 0..8),
    );
    prop::collection::vec(document, 0..6).prop_map(move |docs| {
        let mut out = GenPolicy::new();
        for (tenant, ns, rules) in docs {
            let rules = rules.iter().map(|r| rule_json(r, ns, principals)).collect();
            out.insert((tenant, ns), rules);
        }
        out
    })
}

fn build(g: &GenPolicy) -> Policy {
    let mut p = Policy::new();
    for ((tenant, ns), rules) in g {
        p.apply(build_doc(tenant, *ns, rules.clone()).unwrap());
    }
    p
}

fn build_doc(
    tenant: &str,
    ns: Option<&str>,
    rules: Vec<serde_json::Value>,
) -> Result<AclDocument, crate::AclError> {
    let mut metadata = serde_json::json!({ "tenant": tenant });
    if let Some(ns) = ns {
        metadata["namespace"] = ns.into();
    }
    let doc = serde_json::json!({
        "apiVersion": "rampart.io/v1",
        "kind": "ACL",
        "metadata": metadata,
        "spec": { "rules": rules },
    });
    AclDocument::parse_json(&doc.to_string()).map(|mut d| d.remove(0))
}

fn gen_subject(tenant: &'static str) -> impl Strategy<Value = Subject> {
    (
        prop::sample::select(PRINCIPALS.to_vec()),
        prop::sample::subsequence(ROLE_NAMES.to_vec(), 0..=ROLE_NAMES.len()),
    )
        .prop_map(move |(p, roles)| subject(tenant, p, &roles))
}

fn gen_request() -> impl Strategy<Value = (Resource, Permission)> {
    (
        prop::sample::select(REQUESTS.to_vec()),
        prop::sample::select(Permission::ALL.to_vec()),
    )
        .prop_map(|(r, p)| (res(r), p))
}

/// The resource patterns that match `r`, and whether each may go in a
/// namespace document.
fn matching_patterns(r: &Resource) -> Vec<(String, bool)> {
    let mut out = vec![("*".to_owned(), true)];
    match r {
        Resource::Tenant(_) => {}
        Resource::Namespace(..) => out.push(("namespace".into(), true)),
        Resource::Stream(_, _, s) => {
            out.push(("stream:*".into(), true));
            out.push((format!("stream:{s}"), true));
        }
        Resource::Cache(_, _, c) => {
            out.push(("cache:*".into(), true));
            out.push((format!("cache:{c}"), true));
        }
        Resource::Secret(_, path) => {
            out.push(("secret:*".into(), false));
            out.push((format!("secret:{path}"), false));
            let segs: Vec<&str> = path.as_str().split('/').collect();
            for n in 1..segs.len() {
                out.push((format!("secret:{}/*", segs[..n].join("/")), false));
            }
        }
        Resource::Admin(_, a) => {
            out.push(("admin:*".into(), false));
            out.push((format!("admin:{a}"), false));
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// (a) Adding a deny rule that matches the request always denies it.
    #[test]
    fn a_matching_deny_rule_always_denies(
        g in gen_policy(&PRINCIPAL_PATTERNS),
        s in gen_subject("acme"),
        (resource, perm) in gen_request(),
        pick in any::<(prop::sample::Index, prop::sample::Index, bool, bool, prop::sample::Index)>(),
    ) {
        let (who, what, in_namespace, admin_word, position) = pick;
        let mut principals = vec![s.principal.clone(), "*".to_owned()];
        principals.extend(
            Role::ALL.into_iter()
                .filter(|r| s.roles.iter().any(|n| n == r.as_str()))
                .map(|r| format!("role:{r}")),
        );
        let principal = who.get(&principals).clone();
        let (pattern, namespaced_ok) = what.get(&matching_patterns(&resource)).clone();
        let ns: Option<&'static str> = match resource.namespace() {
            Some(n) if in_namespace && namespaced_ok => {
                ["prod", "dev", "staging"].into_iter().find(|x| *x == n.as_str())
            }
            _ => None,
        };
        // `admin` only when it expands to the permission asked for there.
        let expands = ResourcePattern::parse(&pattern, ns.is_some())
            .is_ok_and(|p| p.applicable(ns.is_some()).contains(perm));
        let word = if admin_word && perm.is_admin() && expands { "admin" } else { perm.as_str() };
        let deny = serde_json::json!({
            "principal": principal, "resource": pattern,
            "permissions": [word], "effect": "deny",
        });
        let mut g2 = g.clone();
        let rules = g2.entry(("acme", ns)).or_default();
        let at = position.index(rules.len() + 1);
        rules.insert(at, deny);
        if build_doc("acme", ns, rules.clone()).is_err() {
            // The permission cannot apply to that pattern there (e.g.
            // secret_read on stream:*): put `*` in the tenant-wide document
            // instead, which accepts every permission.
            rules.remove(at);
            g2.entry(("acme", None)).or_default().push(serde_json::json!({
                "principal": principal, "resource": "*",
                "permissions": [perm.as_str()], "effect": "deny",
            }));
        }
        let policy = build(&g2);
        let d = decide(&policy, &s, &resource, perm);
        prop_assert!(!d.allowed, "{d}");
        prop_assert_eq!(d.reason.code(), "deny_rule");
        // And the cache agrees.
        let mut cache = crate::DecisionCache::new();
        prop_assert!(!cache.check(&policy, &s, &resource, perm));
    }

    /// (b) A principal that no rule names and that holds no role is denied.
    #[test]
    fn no_rule_and_no_role_is_denied(
        g in gen_policy(&PRINCIPAL_PATTERNS[1..]),
        roles in prop::sample::subsequence(vec!["bogus", "Admin", "root"], 0..=3),
        (resource, perm) in gen_request(),
    ) {
        let policy = build(&g);
        let s = subject("acme", "nobody", &roles);
        let d = decide(&policy, &s, &resource, perm);
        prop_assert_eq!(d, Decision::deny(Reason::NoRule));
    }

    /// (c) A subject of another tenant is denied whatever the rules.
    #[test]
    fn other_tenants_are_always_denied(
        g in gen_policy(&PRINCIPAL_PATTERNS),
        s in gen_subject("globex"),
        (resource, perm) in gen_request(),
    ) {
        let policy = build(&g);
        let d = decide(&policy, &s, &resource, perm);
        prop_assert_eq!(d, Decision::deny(Reason::CrossTenant));
    }

    /// The reason always agrees with the outcome, and the cache with
    /// `decide`, across policy changes.
    #[test]
    fn reasons_and_cache_agree(
        g1 in gen_policy(&PRINCIPAL_PATTERNS),
        g2 in gen_policy(&PRINCIPAL_PATTERNS),
        s in gen_subject("acme"),
        requests in prop::collection::vec(gen_request(), 1..20),
    ) {
        let mut cache = crate::DecisionCache::with_max_entries(8);
        let mut policy = build(&g1);
        for (i, (resource, perm)) in requests.iter().enumerate() {
            if i == requests.len() / 2 {
                for d in build(&g2).documents() {
                    policy.apply(d.clone());
                }
            }
            let d = decide(&policy, &s, resource, *perm);
            match &d.reason {
                Reason::CrossTenant | Reason::NoRule => prop_assert!(!d.allowed),
                Reason::Role(r) => prop_assert!(d.allowed && r.grants(*perm)),
                Reason::Rule(r) => prop_assert_eq!(d.allowed, r.effect() == Effect::Allow),
            }
            prop_assert_eq!(cache.check(&policy, &s, resource, *perm), d.allowed);
            prop_assert_eq!(cache.check(&policy, &s, resource, *perm), d.allowed);
        }
    }
}
