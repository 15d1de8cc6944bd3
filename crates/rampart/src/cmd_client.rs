//! `rampart pub`, `rampart sub`, `rampart cache`.
//!
//! The API key comes from `RAMPART_API_KEY` or a file (`--api-key-file` /
//! `RAMPART_API_KEY_FILE`), never from the command line, where other users
//! of the machine could read it.

use std::io::{BufRead, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use rampart_client::{
    read_key_file, Client, ClientConfig, ClientError, ConsumeOptions, Durability, StartAt,
};
use rampart_identity::Secret;
use rampart_proto::{CachePath, ConsumerName, StreamPath};

use crate::Failure;

/// Where and how to connect.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ConnectArgs {
    /// Server URL: quic://host:port or tls://host:port.
    #[arg(long, env = "RAMPART_URL", default_value = "quic://127.0.0.1:7400")]
    pub url: String,
    /// CA certificate (PEM) that signed the server certificate.
    #[arg(long = "ca-cert", env = "RAMPART_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// File holding the API key (RAMPART_API_KEY, then RAMPART_TOKEN, a
    /// Rampart token, win over it).
    #[arg(long, env = "RAMPART_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Do not verify the server certificate. Dangerous: for throwaway test
    /// setups only.
    #[arg(long)]
    pub dangerous_skip_verify: bool,
}

impl ConnectArgs {
    pub(crate) fn config(&self) -> Result<ClientConfig, Failure> {
        let mut c = ClientConfig::default();
        c.tls_ca_cert_path = self.ca_cert.clone();
        set_credential(&mut c, self.api_key_file.as_deref())?;
        if self.dangerous_skip_verify {
            eprintln!("rampart: WARNING: --dangerous-skip-verify: the server is not verified");
            c.dangerous_skip_verify = true;
        }
        Ok(c)
    }

    pub(crate) async fn connect(&self) -> Result<Client, Failure> {
        Client::connect(&self.url, self.config()?)
            .await
            .map_err(describe)
    }
}

/// Puts the caller's credential in `c`: `RAMPART_API_KEY`, else
/// `RAMPART_TOKEN`, else the key file. Credentials given in the environment
/// beat a key file; none ever comes from the command line.
pub(crate) fn set_credential(
    c: &mut ClientConfig,
    key_file: Option<&std::path::Path>,
) -> Result<(), Failure> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match (env("RAMPART_API_KEY"), env("RAMPART_TOKEN"), key_file) {
        (Some(k), _, _) => c.api_key = Some(Secret::new(k)),
        (None, Some(t), _) => c.token = Some(Secret::new(t)),
        (None, None, Some(f)) => c.api_key = Some(read_key_file(f)?),
        _ => {
            return Err(Failure(
                "no credential: set RAMPART_API_KEY, RAMPART_API_KEY_FILE or RAMPART_TOKEN".into(),
            ))
        }
    }
    Ok(())
}

/// Formats an error with its NACK code first, for scripts.
pub(crate) fn describe(e: ClientError) -> Failure {
    match &e {
        ClientError::Nack { code, message, .. } => Failure(format!("NACK {}: {message}", code.0)),
        _ => Failure(e.to_string()),
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct PubArgs {
    /// TENANT/NAMESPACE/STREAM
    target: StreamPath,
    /// The message; when omitted, each line of stdin is one message.
    message: Option<String>,
    /// Fail (exit non-zero) unless the server acknowledges at least this
    /// level: memory, written (in the stream's log) or fsynced.
    #[arg(long, value_parser = parse_durability)]
    require: Option<Durability>,
    #[command(flatten)]
    conn: ConnectArgs,
}

fn parse_durability(s: &str) -> Result<Durability, String> {
    match s {
        "memory" => Ok(Durability::Memory),
        "written" => Ok(Durability::Written),
        "fsynced" => Ok(Durability::Fsynced),
        _ => Err(format!("`{s}`: expected memory, written or fsynced")),
    }
}

/// Checks an acknowledgement against `--require`.
fn check_level(got: Durability, want: Option<Durability>) -> Result<(), Failure> {
    match want {
        Some(w) if got < w => Err(Failure(format!(
            "acknowledged as {got}, below the required {w}"
        ))),
        _ => Ok(()),
    }
}

pub(crate) async fn publish(a: PubArgs) -> Result<ExitCode, Failure> {
    let client = a.conn.connect().await?;
    let t = &a.target;
    let (tenant, ns, stream) = (t.tenant.as_str(), t.namespace.as_str(), t.stream.as_str());
    if let Some(m) = a.message {
        let acked = client
            .publish(tenant, ns, stream, m.into_bytes())
            .await
            .map_err(describe)?;
        check_level(acked.durability, a.require)?;
        client.close().await;
        return Ok(ExitCode::SUCCESS);
    }
    // Lines from stdin, sent in acknowledged batches.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Vec<u8>>>(4);
    let reader = std::thread::spawn(move || -> std::io::Result<()> {
        let stdin = std::io::stdin();
        let mut batch = Vec::new();
        let mut bytes = 0;
        for line in stdin.lock().split(b'\n') {
            let mut line = line?;
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            bytes += line.len();
            batch.push(line);
            if batch.len() >= 1000 || bytes >= 1 << 20 {
                if tx.blocking_send(std::mem::take(&mut batch)).is_err() {
                    return Ok(());
                }
                bytes = 0;
            }
        }
        if !batch.is_empty() {
            let _ = tx.blocking_send(batch);
        }
        Ok(())
    });
    let mut sent = 0u64;
    while let Some(batch) = rx.recv().await {
        let acked = client
            .publish_batch_acked(tenant, ns, stream, &batch)
            .await
            .map_err(describe)?;
        check_level(acked.durability, a.require)?;
        sent += u64::from(acked.count);
    }
    reader
        .join()
        .map_err(|_| Failure("stdin reader failed".into()))??;
    eprintln!("rampart: published {sent} message(s)");
    client.close().await;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub(crate) struct SubArgs {
    /// TENANT/NAMESPACE/STREAM
    target: StreamPath,
    /// Exit after this many messages.
    #[arg(long)]
    count: Option<u64>,
    /// Where to start (durable streams): earliest, latest, an offset, or
    /// time:UNIX_MS for the first message at or after that time. Live
    /// streams serve latest only. Default: latest; for a new consumer,
    /// earliest.
    #[arg(long, value_parser = parse_start)]
    from: Option<StartAt>,
    /// Join this durable consumer instead: the server remembers what was
    /// acknowledged; each message is acknowledged once it is printed.
    /// `--from` applies when the consumer is created.
    #[arg(long)]
    consumer: Option<ConsumerName>,
    #[command(flatten)]
    conn: ConnectArgs,
}

fn parse_start(s: &str) -> Result<StartAt, String> {
    match s {
        "earliest" => Ok(StartAt::Earliest),
        "latest" | "new" => Ok(StartAt::New),
        _ => {
            if let Some(ms) = s.strip_prefix("time:") {
                return ms
                    .parse()
                    .map(StartAt::TimestampMs)
                    .map_err(|_| format!("`{ms}` is not a Unix time in milliseconds"));
            }
            s.parse()
                .map(StartAt::Offset)
                .map_err(|_| format!("`{s}`: expected earliest, latest, an offset or time:UNIX_MS"))
        }
    }
}

pub(crate) async fn subscribe(a: SubArgs) -> Result<ExitCode, Failure> {
    let client = a.conn.connect().await?;
    let t = &a.target;
    let (tenant, ns, stream) = (t.tenant.as_str(), t.namespace.as_str(), t.stream.as_str());
    let mut sub = match &a.consumer {
        Some(name) => {
            let opts = ConsumeOptions {
                start: a.from.unwrap_or(StartAt::Earliest),
                ..ConsumeOptions::default()
            };
            client
                .consume(tenant, ns, stream, name.as_str(), opts)
                .await
        }
        None => {
            let start = a.from.unwrap_or(StartAt::New);
            client.subscribe_from(tenant, ns, stream, start).await
        }
    }
    .map_err(describe)?;
    eprintln!("rampart: subscribed to {t}");
    let mut seen = 0u64;
    let mut missed_reported = 0;
    let stdout = std::io::stdout();
    while a.count.is_none_or(|c| seen < c) {
        let Some(batch) = sub.next_batch().await else {
            return Err(match client.take_async_error() {
                Some(e) => describe(e),
                None => Failure("connection closed".into()),
            });
        };
        if sub.missed() > missed_reported {
            eprintln!(
                "rampart: missed {} message(s) (slow consumer)",
                sub.missed() - missed_reported
            );
            missed_reported = sub.missed();
        }
        let mut printed = Vec::new();
        {
            let mut out = stdout.lock();
            for (i, p) in batch.payloads().enumerate() {
                out.write_all(&p)?;
                out.write_all(b"\n")?;
                printed.push(batch.first_seq + i as u64);
                seen += 1;
                if a.count.is_some_and(|c| seen >= c) {
                    break;
                }
            }
            out.flush()?;
        }
        if a.consumer.is_some() {
            sub.ack(&printed).await.map_err(describe)?;
        }
    }
    drop(sub);
    client.close().await;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_positions() {
        assert_eq!(parse_start("earliest"), Ok(StartAt::Earliest));
        assert_eq!(parse_start("latest"), Ok(StartAt::New));
        assert_eq!(parse_start("42"), Ok(StartAt::Offset(42)));
        assert_eq!(parse_start("time:1700"), Ok(StartAt::TimestampMs(1700)));
        assert!(parse_start("time:x").is_err());
        assert!(parse_start("-1").is_err());
        assert!(parse_start("soon").is_err());
    }

    #[test]
    fn required_levels() {
        assert!(check_level(Durability::Fsynced, Some(Durability::Written)).is_ok());
        assert!(check_level(Durability::Memory, Some(Durability::Written)).is_err());
        assert!(check_level(Durability::Memory, None).is_ok());
        assert_eq!(parse_durability("fsynced"), Ok(Durability::Fsynced));
        assert!(parse_durability("disk").is_err());
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct CacheArgs {
    #[command(subcommand)]
    op: CacheOp,
}

#[derive(Debug, clap::Subcommand)]
enum CacheOp {
    /// Store a value (from the argument, else stdin).
    Put {
        /// TENANT/NAMESPACE/CACHE
        target: CachePath,
        key: String,
        value: Option<String>,
        /// Seconds until the entry expires.
        #[arg(long)]
        ttl: Option<u64>,
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// Print a value; exits 1 when the key is absent.
    Get {
        target: CachePath,
        key: String,
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// Remove a key; prints 1 if it existed, 0 if not.
    Del {
        target: CachePath,
        key: String,
        #[command(flatten)]
        conn: ConnectArgs,
    },
}

/// `tenant, namespace, cache` of a cache path.
fn scope(p: &CachePath) -> (&str, &str, &str) {
    (p.tenant.as_str(), p.namespace.as_str(), p.cache.as_str())
}

pub(crate) async fn cache(a: CacheArgs) -> Result<ExitCode, Failure> {
    match a.op {
        CacheOp::Put {
            target,
            key,
            value,
            ttl,
            conn,
        } => {
            let value = match value {
                Some(v) => v.into_bytes(),
                None => {
                    let mut v = Vec::new();
                    std::io::stdin().read_to_end(&mut v)?;
                    v
                }
            };
            let (t, n, c) = scope(&target);
            let client = conn.connect().await?;
            client
                .cache_put(t, n, c, &key, value, ttl.map(Duration::from_secs))
                .await
                .map_err(describe)?;
            client.close().await;
            Ok(ExitCode::SUCCESS)
        }
        CacheOp::Get { target, key, conn } => {
            let (t, n, c) = scope(&target);
            let client = conn.connect().await?;
            let v = client.cache_get(t, n, c, &key).await.map_err(describe)?;
            client.close().await;
            match v {
                Some(v) => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(&v)?;
                    out.write_all(b"\n")?;
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    eprintln!("rampart: key not found");
                    Ok(ExitCode::from(1))
                }
            }
        }
        CacheOp::Del { target, key, conn } => {
            let (t, n, c) = scope(&target);
            let client = conn.connect().await?;
            let removed = client.cache_delete(t, n, c, &key).await.map_err(describe)?;
            client.close().await;
            println!("{}", u8::from(removed));
            Ok(ExitCode::SUCCESS)
        }
    }
}
