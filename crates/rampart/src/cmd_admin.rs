//! Admin commands over the HTTPS API: tenants, keys, tokens, ACLs, streams.
//!
//! Each prints a human summary on stderr and the useful value on stdout
//! (a new key alone on the last line, JSON for listings), and exits
//! non-zero with the HTTP status and the server's message on failure.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use rampart_client::{read_key_file, AdminClient, AdminResponse, ClientConfig};
use rampart_identity::Secret;
use serde_json::{json, Value};

use crate::Failure;

/// Where the HTTPS API is and how to authenticate to it.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct HttpArgs {
    /// HTTPS API URL.
    #[arg(
        long,
        env = "RAMPART_HTTP_URL",
        default_value = "https://127.0.0.1:7402"
    )]
    http_url: String,
    /// CA certificate (PEM) that signed the server certificate.
    #[arg(long = "ca-cert", env = "RAMPART_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// File holding the API key (RAMPART_API_KEY, then RAMPART_TOKEN, win
    /// over it).
    #[arg(long, env = "RAMPART_API_KEY_FILE")]
    api_key_file: Option<PathBuf>,
}

impl HttpArgs {
    pub(crate) fn client(&self) -> Result<AdminClient, Failure> {
        let mut c = ClientConfig::default();
        c.tls_ca_cert_path = self.ca_cert.clone();
        crate::cmd_client::set_credential(&mut c, self.api_key_file.as_deref())?;
        Ok(AdminClient::new(&self.http_url, &c)?)
    }
}

pub(crate) async fn call(
    http: &HttpArgs,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<AdminResponse, Failure> {
    let r = http.client()?.call(method, path, body.as_ref()).await?;
    if r.status >= 400 {
        return Err(Failure(format!("HTTP {}: {}", r.status, r.error())));
    }
    Ok(r)
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Parses `90d`, `12h`, `30m`, `45s` or plain seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 90d, 12h, 30m"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("unknown unit in `{s}`: use s, m, h or d")),
    };
    Ok(Duration::from_secs(secs))
}

// === key ===

#[derive(Debug, clap::Subcommand)]
pub(crate) enum KeyAdmin {
    /// Create a managed API key; prints it once, alone on the last line.
    Create {
        #[arg(long)]
        tenant: String,
        /// Principal name the key authenticates as.
        #[arg(long)]
        name: String,
        /// Role (admin, user, viewer, or a custom role used by ACL rules).
        #[arg(long = "role", default_value = "user")]
        roles: Vec<String>,
        /// Lifetime, e.g. 90d.
        #[arg(long, value_parser = parse_duration)]
        expires: Option<Duration>,
        #[command(flatten)]
        http: HttpArgs,
    },
    /// List a tenant's keys (never their secrets).
    List {
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        http: HttpArgs,
    },
    /// Revoke a key now; its open connections are closed.
    Revoke {
        #[arg(long)]
        tenant: String,
        key_id: String,
        #[command(flatten)]
        http: HttpArgs,
    },
    /// Replace a key; the old one stays valid for the grace period.
    Rotate {
        #[arg(long)]
        tenant: String,
        key_id: String,
        #[arg(long, value_parser = parse_duration, default_value = "1h")]
        grace: Duration,
        #[command(flatten)]
        http: HttpArgs,
    },
}

pub(crate) async fn key(cmd: KeyAdmin) -> Result<ExitCode, Failure> {
    match cmd {
        KeyAdmin::Create {
            tenant,
            name,
            roles,
            expires,
            http,
        } => {
            let body = json!({
                "name": name,
                "roles": roles,
                "expires_in_secs": expires.map(|d| d.as_secs()),
            });
            let r = call(
                &http,
                "POST",
                &format!("/v1/tenants/{tenant}/keys"),
                Some(body),
            )
            .await?;
            eprintln!(
                "rampart: created key {} for {}/{} (roles: {}); it is shown once:",
                r.body["id"].as_str().unwrap_or("?"),
                tenant,
                r.body["name"].as_str().unwrap_or("?"),
                r.body["roles"]
                    .as_array()
                    .map(|a| a
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(","))
                    .unwrap_or_default()
            );
            println!("{}", r.body["key"].as_str().unwrap_or_default());
        }
        KeyAdmin::List { tenant, http } => {
            let r = call(&http, "GET", &format!("/v1/tenants/{tenant}/keys"), None).await?;
            print_json(&r.body);
        }
        KeyAdmin::Revoke {
            tenant,
            key_id,
            http,
        } => {
            let r = call(
                &http,
                "POST",
                &format!("/v1/tenants/{tenant}/keys/{key_id}/revoke"),
                None,
            )
            .await?;
            eprintln!(
                "rampart: key {key_id} revoked; {} connection(s) closed",
                r.body["connections_closed"]
            );
        }
        KeyAdmin::Rotate {
            tenant,
            key_id,
            grace,
            http,
        } => {
            let r = call(
                &http,
                "POST",
                &format!("/v1/tenants/{tenant}/keys/{key_id}/rotate"),
                Some(json!({ "grace_secs": grace.as_secs() })),
            )
            .await?;
            eprintln!(
                "rampart: key {key_id} replaced by {}; the old key works for {} s more. New key:",
                r.body["id"].as_str().unwrap_or("?"),
                grace.as_secs()
            );
            println!("{}", r.body["key"].as_str().unwrap_or_default());
        }
    }
    Ok(ExitCode::SUCCESS)
}

// === tenant ===

#[derive(Debug, clap::Args)]
pub(crate) struct TenantArgs {
    #[command(subcommand)]
    cmd: TenantCmd,
}

#[derive(Debug, clap::Subcommand)]
enum TenantCmd {
    /// List tenants (operators only).
    List {
        #[command(flatten)]
        http: HttpArgs,
    },
    /// Create a tenant (operators only); prints its first admin key once,
    /// alone on the last line.
    Create {
        name: String,
        #[command(flatten)]
        http: HttpArgs,
    },
    /// Disable a tenant: its connections close and new ones are refused.
    Disable {
        name: String,
        #[command(flatten)]
        http: HttpArgs,
    },
    /// Enable a disabled tenant.
    Enable {
        name: String,
        #[command(flatten)]
        http: HttpArgs,
    },
    /// Erase a tenant: its keys are destroyed, so everything stored for it
    /// is unreadable for good, and its name is never reused.
    Erase {
        name: String,
        #[command(flatten)]
        http: HttpArgs,
    },
    /// Show or change a tenant's (or one principal's) rate limits and
    /// quotas (operators only). With no --set or --clear, prints the
    /// override, the limits in force, usage and refusal counts. Changes
    /// apply at once to open connections and are kept across restarts.
    Limits {
        name: String,
        /// One principal of the tenant instead of the tenant as a whole.
        #[arg(long)]
        principal: Option<String>,
        /// Replace the override: `key=value` pairs such as
        /// `publish_msgs_per_sec=5000 burst=1.5 max_connections=100`.
        #[arg(long, num_args = 1.., value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Remove the override: back to the configured defaults.
        #[arg(long, conflicts_with = "set")]
        clear: bool,
        #[command(flatten)]
        http: HttpArgs,
    },
}

/// `key=value` pairs into a limits object; values are numbers.
fn limit_pairs(pairs: &[String]) -> Result<serde_json::Value, Failure> {
    let mut m = serde_json::Map::new();
    for p in pairs {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| Failure(format!("`{p}`: expected KEY=VALUE")))?;
        let n: serde_json::Number = v
            .parse::<u64>()
            .map(Into::into)
            .ok()
            .or_else(|| v.parse::<f64>().ok().and_then(serde_json::Number::from_f64))
            .ok_or_else(|| Failure(format!("`{p}`: the value must be a number")))?;
        m.insert(k.to_string(), serde_json::Value::Number(n));
    }
    Ok(serde_json::Value::Object(m))
}

pub(crate) async fn tenant(a: TenantArgs) -> Result<ExitCode, Failure> {
    match a.cmd {
        TenantCmd::List { http } => {
            print_json(&call(&http, "GET", "/v1/tenants", None).await?.body)
        }
        TenantCmd::Create { name, http } => {
            let r = call(&http, "POST", "/v1/tenants", Some(json!({ "name": name }))).await?;
            eprintln!(
                "rampart: tenant {name} created with admin key {} (principal `admin`); it is shown once:",
                r.body["admin_key"]["id"].as_str().unwrap_or("?")
            );
            println!(
                "{}",
                r.body["admin_key"]["key"].as_str().unwrap_or_default()
            );
        }
        TenantCmd::Disable { name, http } => {
            let r = call(&http, "POST", &format!("/v1/tenants/{name}/disable"), None).await?;
            eprintln!(
                "rampart: tenant {name} disabled; {} connection(s) closed",
                r.body["connections_closed"]
            );
        }
        TenantCmd::Enable { name, http } => {
            call(&http, "POST", &format!("/v1/tenants/{name}/enable"), None).await?;
            eprintln!("rampart: tenant {name} enabled");
        }
        TenantCmd::Limits {
            name,
            principal,
            set,
            clear,
            http,
        } => {
            let path = match &principal {
                Some(p) => format!("/v1/tenants/{name}/principals/{p}/limits"),
                None => format!("/v1/tenants/{name}/limits"),
            };
            let r = if clear {
                call(&http, "DELETE", &path, None).await?
            } else if !set.is_empty() {
                call(&http, "PUT", &path, Some(limit_pairs(&set)?)).await?
            } else {
                call(&http, "GET", &path, None).await?
            };
            print_json(&r.body)
        }
        TenantCmd::Erase { name, http } => {
            let r = call(&http, "POST", &format!("/v1/tenants/{name}/erase"), None).await?;
            eprintln!(
                "rampart: tenant {name} erased; {} connection(s) closed",
                r.body["connections_closed"]
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

// === acl ===

#[derive(Debug, clap::Args)]
pub(crate) struct AclArgs {
    #[command(subcommand)]
    cmd: AclCmd,
}

#[derive(Debug, clap::Subcommand)]
enum AclCmd {
    /// Apply ACL documents (YAML, `---` between documents).
    Apply {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Tenant; default: the caller's own.
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        http: HttpArgs,
    },
    /// Print the tenant's ACL documents.
    Get {
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        http: HttpArgs,
    },
    /// Print the decision for a principal, a resource and a permission, and
    /// the rule that made it.
    Explain {
        #[arg(long)]
        principal: String,
        /// e.g. stream:orders, cache:sessions, secret:payments/prod/db,
        /// admin:keys
        #[arg(long)]
        resource: String,
        #[arg(long)]
        permission: String,
        /// Namespace of a stream or cache resource.
        #[arg(long, default_value = "default")]
        namespace: String,
        /// Roles to assume; default: those of the principal's keys.
        #[arg(long = "role")]
        roles: Vec<String>,
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        http: HttpArgs,
    },
}

async fn own_tenant(http: &HttpArgs, t: Option<String>) -> Result<String, Failure> {
    match t {
        Some(t) => Ok(t),
        None => {
            let r = call(http, "GET", "/v1/auth/whoami", None).await?;
            r.body["tenant"]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| Failure("cannot tell the caller's tenant".into()))
        }
    }
}

pub(crate) async fn acl(a: AclArgs) -> Result<ExitCode, Failure> {
    match a.cmd {
        AclCmd::Apply { file, tenant, http } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| Failure(format!("{}: {e}", file.display())))?;
            let tenant = own_tenant(&http, tenant).await?;
            let r = call(
                &http,
                "PUT",
                &format!("/v1/tenants/{tenant}/acl"),
                Some(Value::String(text)),
            )
            .await?;
            eprintln!("rampart: applied ACL for {tenant}: {}", r.body["applied"]);
        }
        AclCmd::Get { tenant, http } => {
            let tenant = own_tenant(&http, tenant).await?;
            let r = call(&http, "GET", &format!("/v1/tenants/{tenant}/acl"), None).await?;
            println!("{}", r.text);
        }
        AclCmd::Explain {
            principal,
            resource,
            permission,
            namespace,
            roles,
            tenant,
            http,
        } => {
            let tenant = own_tenant(&http, tenant).await?;
            let mut body = json!({
                "principal": principal,
                "resource": resource,
                "permission": permission,
                "namespace": namespace,
            });
            if !roles.is_empty() {
                body["roles"] = json!(roles);
            }
            let r = call(
                &http,
                "POST",
                &format!("/v1/tenants/{tenant}/acl/explain"),
                Some(body),
            )
            .await?;
            println!("{}", r.body["decision"].as_str().unwrap_or_default());
            return Ok(if r.body["allowed"].as_bool() == Some(true) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

// === token ===

#[derive(Debug, clap::Args)]
pub(crate) struct TokenArgs {
    #[command(subcommand)]
    cmd: TokenCmd,
}

#[derive(Debug, clap::Subcommand)]
enum TokenCmd {
    /// Exchange the configured credential for a short-lived token (printed
    /// alone on stdout).
    Create {
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<Duration>,
        #[command(flatten)]
        http: HttpArgs,
    },
    /// Revoke a token by id, or every token of a principal.
    Revoke {
        #[arg(long)]
        tenant: String,
        #[arg(long, conflicts_with = "principal")]
        id: Option<String>,
        #[arg(long)]
        principal: Option<String>,
        #[command(flatten)]
        http: HttpArgs,
    },
}

pub(crate) async fn token(a: TokenArgs) -> Result<ExitCode, Failure> {
    match a.cmd {
        TokenCmd::Create { ttl, http } => {
            let key = match (std::env::var("RAMPART_API_KEY").ok(), &http.api_key_file) {
                (Some(k), _) if !k.is_empty() => Secret::new(k),
                (_, Some(f)) => read_key_file(f)?,
                _ => return Err(Failure("no API key: set RAMPART_API_KEY(_FILE)".into())),
            };
            let mut body = json!({ "api_key": key.expose() });
            if let Some(t) = ttl {
                body["ttl"] = json!(t.as_secs());
            }
            let r = call(&http, "POST", "/v1/auth", Some(body)).await?;
            eprintln!(
                "rampart: token valid for {} s",
                r.body["auth"]["lease_duration"]
            );
            println!(
                "{}",
                r.body["auth"]["client_token"].as_str().unwrap_or_default()
            );
        }
        TokenCmd::Revoke {
            tenant,
            id,
            principal,
            http,
        } => {
            let r = call(
                &http,
                "POST",
                &format!("/v1/tenants/{tenant}/tokens/revoke"),
                Some(json!({ "token_id": id, "principal": principal })),
            )
            .await?;
            eprintln!(
                "rampart: revoked; {} connection(s) closed",
                r.body["connections_closed"]
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

// === namespace ===

#[derive(Debug, clap::Args)]
pub(crate) struct NamespaceArgs {
    #[command(subcommand)]
    cmd: NamespaceCmd,
}

#[derive(Debug, clap::Subcommand)]
enum NamespaceCmd {
    /// Disable a namespace of a tenant (the tenant's admins or operators):
    /// every request on it is refused and its subscriptions end; the
    /// tenant's other namespaces keep working.
    Disable {
        #[arg(long)]
        tenant: String,
        namespace: String,
        #[command(flatten)]
        http: HttpArgs,
    },
    /// Enable a disabled namespace.
    Enable {
        #[arg(long)]
        tenant: String,
        namespace: String,
        #[command(flatten)]
        http: HttpArgs,
    },
}

pub(crate) async fn namespace(a: NamespaceArgs) -> Result<ExitCode, Failure> {
    let (tenant, namespace, http, action) = match a.cmd {
        NamespaceCmd::Disable {
            tenant,
            namespace,
            http,
        } => (tenant, namespace, http, "disable"),
        NamespaceCmd::Enable {
            tenant,
            namespace,
            http,
        } => (tenant, namespace, http, "enable"),
    };
    let path = format!("/v1/tenants/{tenant}/namespaces/{namespace}/{action}");
    call(&http, "POST", &path, None).await?;
    eprintln!("rampart: namespace {tenant}/{namespace} {action}d");
    Ok(ExitCode::SUCCESS)
}

// === stream ===

#[derive(Debug, clap::Args)]
pub(crate) struct StreamArgs {
    #[command(subcommand)]
    cmd: StreamCmd,
}

#[derive(Debug, clap::Subcommand)]
enum StreamCmd {
    /// Declare a stream: live (delivered to current subscribers only) or,
    /// with --durable, stored as a log with offsets, replay and consumers.
    Create {
        /// TENANT/NAMESPACE/STREAM
        target: rampart_proto::StreamPath,
        /// Store the stream as a log on disk, sealed with the tenant's keys.
        #[arg(long)]
        durable: bool,
        /// When a publish is acknowledged: none (written to the OS),
        /// interval:MS (written; fsynced every MS ms) or on_commit
        /// (fsynced, shared by concurrent publishers). Default: the
        /// server's durable_sync.
        #[arg(long, requires = "durable")]
        sync: Option<String>,
        /// Retention by age: delete segments older than this (e.g. 7d, 12h).
        #[arg(long, requires = "durable", value_parser = parse_duration)]
        max_age: Option<Duration>,
        /// Retention by size: delete the oldest segments above this many
        /// bytes.
        #[arg(long, requires = "durable")]
        max_bytes: Option<u64>,
        /// Let retention delete messages that consumers have not
        /// acknowledged yet (they are counted as lost).
        #[arg(long, requires = "durable")]
        retention_overrides_consumers: bool,
        #[command(flatten)]
        http: HttpArgs,
    },
    /// Erase a durable stream (right to erasure): its subscriptions end, its
    /// files are removed and its data key is destroyed, so copies of its
    /// files (backups) cannot be read either. Recorded in the audit log.
    Erase {
        target: rampart_proto::StreamPath,
        #[command(flatten)]
        http: HttpArgs,
    },
    /// Show a stream: kind, settings; for a durable one its offsets,
    /// consumers and what recovery found.
    Get {
        target: rampart_proto::StreamPath,
        #[command(flatten)]
        http: HttpArgs,
    },
    /// Delete a declared stream; its subscriptions end. A durable stream's
    /// files are removed and its data key destroyed.
    Delete {
        target: rampart_proto::StreamPath,
        #[command(flatten)]
        http: HttpArgs,
    },
    /// List the declared streams of a namespace.
    List {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        namespace: String,
        #[command(flatten)]
        http: HttpArgs,
    },
}

pub(crate) async fn stream(a: StreamArgs) -> Result<ExitCode, Failure> {
    match a.cmd {
        StreamCmd::Create {
            target,
            durable,
            sync,
            max_age,
            max_bytes,
            retention_overrides_consumers,
            http,
        } => {
            let mut body = json!({ "name": target.stream.as_str() });
            if durable {
                body["durable"] = true.into();
                if let Some(s) = &sync {
                    body["sync"] = s.as_str().into();
                }
                if let Some(a) = max_age {
                    body["max_age_ms"] = (a.as_millis() as u64).into();
                }
                if let Some(b) = max_bytes {
                    body["max_bytes"] = b.into();
                }
                if retention_overrides_consumers {
                    body["retention_overrides_consumers"] = true.into();
                }
            }
            call(
                &http,
                "POST",
                &format!(
                    "/v1/tenants/{}/namespaces/{}/streams",
                    target.tenant, target.namespace
                ),
                Some(body),
            )
            .await?;
            let kind = if durable { "durable stream" } else { "stream" };
            eprintln!("rampart: {kind} {target} created");
        }
        StreamCmd::Erase { target, http } => {
            let r = call(
                &http,
                "POST",
                &format!(
                    "/v1/tenants/{}/namespaces/{}/streams/{}/erase",
                    target.tenant, target.namespace, target.stream
                ),
                None,
            )
            .await?;
            eprintln!(
                "rampart: stream {target} erased; {} data key version(s) destroyed",
                r.body["key_versions_destroyed"]
            );
        }
        StreamCmd::Get { target, http } => {
            let r = call(
                &http,
                "GET",
                &format!(
                    "/v1/tenants/{}/namespaces/{}/streams/{}",
                    target.tenant, target.namespace, target.stream
                ),
                None,
            )
            .await?;
            print_json(&r.body);
        }
        StreamCmd::Delete { target, http } => {
            call(
                &http,
                "DELETE",
                &format!(
                    "/v1/tenants/{}/namespaces/{}/streams/{}",
                    target.tenant, target.namespace, target.stream
                ),
                None,
            )
            .await?;
            eprintln!("rampart: stream {target} deleted");
        }
        StreamCmd::List {
            tenant,
            namespace,
            http,
        } => {
            let r = call(
                &http,
                "GET",
                &format!("/v1/tenants/{tenant}/namespaces/{namespace}/streams"),
                None,
            )
            .await?;
            print_json(&r.body);
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("90d").unwrap(),
            Duration::from_secs(90 * 86_400)
        );
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("15").unwrap(), Duration::from_secs(15));
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("h").is_err());
    }
}
