//! A small client for Rampart's HTTPS API (`/v1/auth`, the admin routes,
//! the vault), used by the CLI. [`AdminClient::call`] makes one connection
//! per request (admin calls are rare, and the client keeps no pool);
//! [`AdminClient::session`] keeps one connection open for many.
//!
//! A 429 with `Retry-After` is waited out and the request sent again, as
//! [`ClientConfig::rate_limit_max_wait`] allows; past that, the 429
//! response is returned.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rampart_identity::Secret;
use rustls::pki_types::ServerName;
use serde_json::Value;

use crate::backoff::{jitter, retry_after_header, Backoff};
use crate::drive::Driver;
use crate::{ClientConfig, ClientError};

/// Largest response body read.
const MAX_RESPONSE: usize = 8 * 1024 * 1024;

/// A response: status code and body (JSON when the server sent JSON).
#[derive(Debug, Clone)]
pub struct AdminResponse {
    pub status: u16,
    pub body: Value,
    /// The raw body, for non-JSON replies (ACL documents as YAML).
    pub text: String,
    /// Response headers, names in lower case.
    pub headers: Vec<(String, String)>,
}

impl AdminResponse {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The server's error message, if it sent one.
    pub fn error(&self) -> String {
        self.body["errors"]
            .as_array()
            .and_then(|e| e.first())
            .and_then(Value::as_str)
            .unwrap_or(&self.text)
            .to_string()
    }
}

/// Talks to the HTTPS API at `https://host:port`.
#[derive(Clone)]
pub struct AdminClient {
    host: String,
    port: u16,
    tls: Arc<rustls::ClientConfig>,
    credential: Option<Secret<String>>,
    timeout: Duration,
    rate_limit_max_wait: Duration,
    /// Waits for rate limits, shared by clones and sessions.
    backoffs: Arc<AtomicU64>,
}

impl std::fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminClient")
            .field("host", &self.host)
            .field("port", &self.port)
            .finish()
    }
}

impl AdminClient {
    /// `url` is `https://host:port`. The credential (API key or token) of
    /// `config` is sent as a bearer token; its CA verifies the server.
    pub fn new(url: &str, config: &ClientConfig) -> Result<Self, ClientError> {
        let bad = || ClientError::Config(format!("URL `{url}` must look like https://host:port"));
        let rest = url.strip_prefix("https://").ok_or_else(bad)?;
        let rest = rest.trim_end_matches('/');
        let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let mut tls = crate::tls::client_config(config)?;
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            host,
            port,
            tls: Arc::new(tls),
            credential: config.api_key.clone().or_else(|| config.token.clone()),
            timeout: config.request_timeout,
            rate_limit_max_wait: config.rate_limit_max_wait,
            backoffs: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Sends one request; `body` is sent as JSON, or as text when it is a
    /// JSON string (ACL documents). A 429 with `Retry-After` is waited out
    /// and the request sent again on a new connection (see the module
    /// docs); the request timeout applies to each attempt.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<AdminResponse, ClientError> {
        let mut backoff = Backoff::new(self.rate_limit_max_wait);
        loop {
            let r = tokio::time::timeout(self.timeout, self.call_inner(method, path, body))
                .await
                .map_err(|_| ClientError::Timeout("HTTPS request"))??;
            if !self.waited_out(&mut backoff, &r).await {
                return Ok(r);
            }
        }
    }

    /// Sends a bodiless request and streams a successful response's body
    /// into `out` (large downloads: backups), returning the bytes written.
    /// An error status comes back as `Ok(Err(response))` with its body
    /// read. The request timeout bounds the wait for the response headers
    /// and each wait for more of the body, not the whole download; a body
    /// cut short by the server is an error.
    pub async fn download<W: tokio::io::AsyncWrite + Unpin>(
        &self,
        method: &str,
        path: &str,
        out: &mut W,
    ) -> Result<Result<u64, AdminResponse>, ClientError> {
        use tokio::io::AsyncWriteExt;
        let conn_err = |e: &dyn std::fmt::Display| ClientError::Connect(e.to_string());
        let (mut sender, conn) = self.open().await?;
        // The body is read piece by piece by the loop below.
        conn.detach();
        let req = self
            .request(method, path)
            .body(Full::new(Bytes::new()))
            .map_err(|e| ClientError::InvalidArgument(e.to_string()))?;
        let resp = tokio::time::timeout(self.timeout, async {
            sender.ready().await.map_err(|e| conn_err(&e))?;
            sender.send_request(req).await.map_err(|e| conn_err(&e))
        })
        .await
        .map_err(|_| ClientError::Timeout("HTTPS request"))??;
        if resp.status().as_u16() >= 300 {
            return Ok(Err(read_response(resp).await?));
        }
        let mut body = resp.into_body();
        let mut written = 0u64;
        loop {
            let frame = tokio::time::timeout(self.timeout, body.frame())
                .await
                .map_err(|_| ClientError::Timeout("HTTPS response body"))?;
            let Some(frame) = frame else { break };
            let frame = frame.map_err(|e| ClientError::Protocol(e.to_string()))?;
            if let Ok(data) = frame.into_data() {
                out.write_all(&data)
                    .await
                    .map_err(|e| ClientError::Protocol(format!("writing the download: {e}")))?;
                written += data.len() as u64;
            }
        }
        out.flush()
            .await
            .map_err(|e| ClientError::Protocol(format!("writing the download: {e}")))?;
        Ok(Ok(written))
    }

    /// Waits for rate limits taken so far by this client, its clones and
    /// their sessions.
    pub fn rate_limit_backoffs(&self) -> u64 {
        self.backoffs.load(Ordering::Relaxed)
    }

    /// After a response: when it is a 429 with a `Retry-After` that
    /// `backoff` still has room for, waits that long and returns true (send
    /// again).
    async fn waited_out(&self, backoff: &mut Backoff, r: &AdminResponse) -> bool {
        let Some(wait) = wait_for(backoff, r) else {
            return false;
        };
        self.backoffs.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            wait_ms = wait.as_millis() as u64,
            "HTTP 429; sending again after the wait"
        );
        tokio::time::sleep(wait).await;
        true
    }

    async fn call_inner(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<AdminResponse, ClientError> {
        let (mut sender, mut conn) = self.open().await?;
        conn.run(self.send(&mut sender, method, path, body)).await
    }

    /// A connection kept open for several requests, one at a time (HTTP/1.1
    /// keep-alive): for callers that make many, such as benchmarks and
    /// agents.
    pub async fn session(&self) -> Result<AdminSession, ClientError> {
        let (sender, conn) = self.open().await?;
        Ok(AdminSession {
            client: self.clone(),
            sender,
            conn,
        })
    }

    /// A new connection: its request sender, and the connection itself,
    /// which the caller drives.
    async fn open(&self) -> Result<(Sender, Driver), ClientError> {
        let conn_err = |e: &dyn std::fmt::Display| ClientError::Connect(e.to_string());
        let addr = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|e| conn_err(&e))?
            .next()
            .ok_or_else(|| ClientError::Connect(format!("{} has no address", self.host)))?;
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| conn_err(&e))?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(self.host.clone())
            .map_err(|_| ClientError::Config(format!("`{}` is not a server name", self.host)))?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| ClientError::Connect(format!("TLS handshake: {e}")))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| conn_err(&e))?;
        Ok((sender, Driver::new(conn)))
    }

    async fn send(
        &self,
        sender: &mut Sender,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<AdminResponse, ClientError> {
        let conn_err = |e: &dyn std::fmt::Display| ClientError::Connect(e.to_string());
        let (content_type, bytes) = match body {
            None => (None, Bytes::new()),
            Some(Value::String(text)) => (Some("application/yaml"), Bytes::from(text.clone())),
            Some(v) => (Some("application/json"), Bytes::from(v.to_string())),
        };
        let mut req = self.request(method, path);
        if let Some(ct) = content_type {
            req = req.header(http::header::CONTENT_TYPE, ct);
        }
        let req = req
            .body(Full::new(bytes))
            .map_err(|e| ClientError::InvalidArgument(e.to_string()))?;
        sender.ready().await.map_err(|e| conn_err(&e))?;
        let resp = sender.send_request(req).await.map_err(|e| conn_err(&e))?;
        read_response(resp).await
    }

    /// A request to this server with its host and credential headers.
    fn request(&self, method: &str, path: &str) -> http::request::Builder {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, format!("{}:{}", self.host, self.port));
        match &self.credential {
            Some(c) => req.header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", c.expose()),
            ),
            None => req,
        }
    }
}

/// A whole response (body capped at `MAX_RESPONSE`), as JSON and text.
async fn read_response(
    resp: http::Response<hyper::body::Incoming>,
) -> Result<AdminResponse, ClientError> {
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let body = Limited::new(resp.into_body(), MAX_RESPONSE)
        .collect()
        .await
        .map_err(|e| ClientError::Protocol(e.to_string()))?
        .to_bytes();
    Ok(AdminResponse {
        status,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        text: String::from_utf8_lossy(&body).into_owned(),
        headers,
    })
}

/// The wait before sending again a request answered with `r`: for a 429
/// with a `Retry-After` that `backoff` still has room for.
fn wait_for(backoff: &mut Backoff, r: &AdminResponse) -> Option<Duration> {
    if r.status != 429 {
        return None;
    }
    r.header("retry-after")
        .and_then(retry_after_header)
        .and_then(|told| backoff.next(told, jitter()))
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// One kept-open connection to the HTTPS API (see
/// [`AdminClient::session`]).
pub struct AdminSession {
    client: AdminClient,
    sender: Sender,
    conn: Driver,
}

impl std::fmt::Debug for AdminSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSession")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

impl AdminSession {
    /// Sends one request on the session's connection, waiting out 429s as
    /// [`AdminClient::call`] does.
    pub async fn call(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<AdminResponse, ClientError> {
        let timeout = self.client.timeout;
        let mut backoff = Backoff::new(self.client.rate_limit_max_wait);
        loop {
            let r = tokio::time::timeout(
                timeout,
                self.conn
                    .run(self.client.send(&mut self.sender, method, path, body)),
            )
            .await
            .map_err(|_| ClientError::Timeout("HTTPS request"))??;
            if !self.client.waited_out(&mut backoff, &r).await {
                return Ok(r);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, retry_after: Option<&str>) -> AdminResponse {
        AdminResponse {
            status,
            body: Value::Null,
            text: String::new(),
            headers: retry_after
                .map(|v| vec![("retry-after".to_string(), v.to_string())])
                .unwrap_or_default(),
        }
    }

    #[test]
    fn only_429_with_retry_after_waits_within_the_bound() {
        let mut b = Backoff::new(Duration::from_secs(3));
        let w = wait_for(&mut b, &response(429, Some("1"))).expect("waits");
        assert!(w >= Duration::from_secs(1) && w <= Duration::from_millis(1100));
        // 429 without Retry-After (a quota), other statuses: final.
        assert_eq!(wait_for(&mut b, &response(429, None)), None);
        assert_eq!(wait_for(&mut b, &response(503, Some("1"))), None);
        assert_eq!(wait_for(&mut b, &response(200, None)), None);
        // Past the bound: the 429 is the answer.
        assert_eq!(wait_for(&mut b, &response(429, Some("5"))), None);
        // Retrying off.
        let mut off = Backoff::new(Duration::ZERO);
        assert_eq!(wait_for(&mut off, &response(429, Some("1"))), None);
    }

    #[test]
    fn the_bound_comes_from_the_config() {
        let cfg = ClientConfig {
            dangerous_skip_verify: true,
            ..ClientConfig::default()
        };
        let c = AdminClient::new("https://127.0.0.1:1", &cfg).expect("client");
        assert_eq!(c.rate_limit_max_wait, Duration::from_secs(30));
        assert_eq!(c.rate_limit_backoffs(), 0);
        let cfg = cfg.with_rate_limit_max_wait(Duration::ZERO);
        let c = AdminClient::new("https://127.0.0.1:1", &cfg).expect("client");
        assert_eq!(c.rate_limit_max_wait, Duration::ZERO);
    }
}
