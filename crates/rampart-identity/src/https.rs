//! A minimal HTTP/1.1 client over tokio-rustls (ring provider), shared by
//! the JWKS fetcher and the transit master key provider: one connection per
//! request, no redirects, no proxies, no connection reuse, timeouts on
//! connect and on the whole exchange, a cap on the response body.
//!
//! Request and response bodies may carry key material, so they are kept in
//! zeroizing buffers on our side ([`SecretBody`], [`Response::body`]). The
//! copies hyper and rustls make in their own buffers cannot be zeroized
//! from here. Error messages never carry a request or response body, nor a
//! header value.

use std::convert::Infallible;
use std::fmt;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Buf;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::{Body, Frame, SizeHint};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::Secret;

/// Default time allowed for TCP connect, and again for the TLS handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time allowed for a whole request, connect included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default largest response body read.
pub const MAX_BODY: usize = 1 << 20;

/// Why a request could not be made or answered. Messages are short and
/// never carry a body or a header value (a token).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpsError {
    /// The CA file could not be read or holds no usable certificate.
    #[error("{0}")]
    Ca(String),
    /// The server address cannot be used.
    #[error("{0}")]
    Address(AddressError),
    /// The host is not a valid TLS server name.
    #[error("host name: {0}")]
    ServerName(String),
    /// TCP connect failed.
    #[error("connecting to {authority}: {reason}")]
    Connect { authority: String, reason: String },
    /// The TLS handshake failed.
    #[error("TLS handshake: {0}")]
    Tls(String),
    /// Building the request or the HTTP exchange failed. `what` is the
    /// stage (`HTTP`, `building the request`, `reading the response`).
    #[error("{what}: {reason}")]
    Http { what: &'static str, reason: String },
    /// Connect, handshake or the whole request ran out of time.
    #[error("request took longer than {0:?}")]
    Timeout(Duration),
    /// The response body is over the limit.
    #[error("response larger than {limit} bytes")]
    TooLarge { limit: usize },
}

/// What is wrong with a server address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddressError {
    NoHost,
    Credentials,
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressError::NoHost => "no host",
            AddressError::Credentials => "must not carry credentials",
        })
    }
}

/// Timeouts and body cap of an [`HttpsClient`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// For TCP connect, and again for the TLS handshake.
    pub connect_timeout: Duration,
    /// For the whole request, connect included.
    pub request_timeout: Duration,
    /// Largest response body read.
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connect_timeout: CONNECT_TIMEOUT,
            request_timeout: REQUEST_TIMEOUT,
            max_body: MAX_BODY,
        }
    }
}

/// Builds the client TLS config: the ring provider, TLS 1.3 and 1.2, and
/// the CA certificates of the PEM file at `ca_path`. Certificates webpki
/// cannot parse (system bundles hold the odd one) are skipped, but at least
/// one must be usable.
pub fn tls_config(ca_path: &Path) -> Result<Arc<rustls::ClientConfig>, HttpsError> {
    let err = HttpsError::Ca;
    let certs = CertificateDer::pem_file_iter(ca_path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(err("no usable CA certificate in the file".into()));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
    .map_err(|e| err(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

// === impl SecretBody ===

/// A request body that zeroizes its bytes when dropped.
pub struct SecretBody(Option<SecretBuf>);

/// The one data frame of a [`SecretBody`].
pub struct SecretBuf {
    data: Secret<Vec<u8>>,
    pos: usize,
}

impl SecretBody {
    pub fn new(data: Secret<Vec<u8>>) -> Self {
        Self(Some(SecretBuf { data, pos: 0 }))
    }

    pub fn empty() -> Self {
        Self(None)
    }

    /// Whether there is no data left to send.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }
}

impl fmt::Debug for SecretBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBody([redacted])")
    }
}

impl fmt::Debug for SecretBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBuf([redacted])")
    }
}

impl Buf for SecretBuf {
    fn remaining(&self) -> usize {
        self.data.expose().len() - self.pos
    }

    fn chunk(&self) -> &[u8] {
        &self.data.expose()[self.pos..]
    }

    fn advance(&mut self, cnt: usize) {
        self.pos = (self.pos + cnt).min(self.data.expose().len());
    }
}

impl Body for SecretBody {
    type Data = SecretBuf;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<SecretBuf>, Infallible>>> {
        Poll::Ready(self.get_mut().0.take().map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.as_ref().map_or(0, |b| b.remaining() as u64))
    }
}

// === impl HttpsClient ===

/// Aborts a spawned task when dropped, so a timed-out request leaves no
/// connection behind.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What came back: the status and the body (zeroized on drop).
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Secret<Vec<u8>>,
}

/// One server (scheme, host and port) to send requests to.
pub struct HttpsClient {
    authority: String,
    pub(crate) host: String,
    pub(crate) port: u16,
    /// `None` only for plain `http://`, which the caller allowed.
    tls: Option<tokio_rustls::TlsConnector>,
    user_agent: http::HeaderValue,
    limits: Limits,
}

impl fmt::Debug for HttpsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpsClient")
            .field("authority", &self.authority)
            .field("tls", &self.tls.is_some())
            .field("limits", &self.limits)
            .finish()
    }
}

impl HttpsClient {
    /// A client for the server of `uri`, which must be absolute and carry
    /// no credentials; its path is ignored. Its scheme must already have
    /// been checked against `tls` by the caller (https with a config, http
    /// without). `user_agent` is sent with every request; the limits are
    /// the defaults until [`HttpsClient::with_limits`].
    pub fn new(
        uri: &http::Uri,
        tls: Option<Arc<rustls::ClientConfig>>,
        user_agent: &'static str,
    ) -> Result<Self, HttpsError> {
        let bad = HttpsError::Address;
        let authority = uri.authority().ok_or(bad(AddressError::NoHost))?;
        if authority.as_str().contains('@') {
            return Err(bad(AddressError::Credentials));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err(bad(AddressError::NoHost));
        }
        let port = authority
            .port_u16()
            .unwrap_or(if tls.is_some() { 443 } else { 80 });
        Ok(Self {
            authority: authority.as_str().to_owned(),
            host,
            port,
            tls: tls.map(tokio_rustls::TlsConnector::from),
            user_agent: http::HeaderValue::from_static(user_agent),
            limits: Limits::default(),
        })
    }

    /// Replaces the default timeouts and body cap.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Sends one request to `path` (with its query, if any) and reads the
    /// whole response, within the request timeout. The client adds `Host`
    /// and `User-Agent`; `headers` carries the rest (`Accept`,
    /// `Content-Type`, credentials marked sensitive).
    pub async fn send(
        &self,
        method: http::Method,
        path: &str,
        headers: Vec<(http::HeaderName, http::HeaderValue)>,
        body: SecretBody,
    ) -> Result<Response, HttpsError> {
        let limit = self.limits.request_timeout;
        match tokio::time::timeout(limit, self.send_inner(method, path, headers, body)).await {
            Ok(result) => result,
            Err(_) => Err(HttpsError::Timeout(limit)),
        }
    }

    async fn send_inner(
        &self,
        method: http::Method,
        path: &str,
        headers: Vec<(http::HeaderName, http::HeaderValue)>,
        body: SecretBody,
    ) -> Result<Response, HttpsError> {
        let connect_timeout = self.limits.connect_timeout;
        let connect = async {
            let tcp = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| HttpsError::Connect {
                    authority: self.authority.clone(),
                    reason: e.to_string(),
                })?;
            let _ = tcp.set_nodelay(true);
            Ok::<_, HttpsError>(tcp)
        };
        let tcp = tokio::time::timeout(connect_timeout, connect)
            .await
            .map_err(|_| HttpsError::Timeout(connect_timeout))??;
        let request = self.request(method, path, headers, body)?;
        let max_body = self.limits.max_body;
        match &self.tls {
            None => exchange(tcp, request, max_body).await,
            Some(connector) => {
                let name = ServerName::try_from(self.host.clone())
                    .map_err(|e| HttpsError::ServerName(e.to_string()))?;
                let tls = tokio::time::timeout(connect_timeout, connector.connect(name, tcp))
                    .await
                    .map_err(|_| HttpsError::Timeout(connect_timeout))?
                    .map_err(|e| HttpsError::Tls(e.to_string()))?;
                exchange(tls, request, max_body).await
            }
        }
    }

    fn request(
        &self,
        method: http::Method,
        path: &str,
        headers: Vec<(http::HeaderName, http::HeaderValue)>,
        body: SecretBody,
    ) -> Result<http::Request<SecretBody>, HttpsError> {
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, self.authority.as_str())
            .header(http::header::USER_AGENT, self.user_agent.clone());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request.body(body).map_err(|e| HttpsError::Http {
            what: "building the request",
            reason: e.to_string(),
        })
    }
}

async fn exchange<IO>(
    io: IO,
    request: http::Request<SecretBody>,
    max_body: usize,
) -> Result<Response, HttpsError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http_err = |e: hyper::Error| HttpsError::Http {
        what: "HTTP",
        reason: e.to_string(),
    };
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, SecretBody>(TokioIo::new(io))
            .await
            .map_err(http_err)?;
    let _conn = AbortOnDrop(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let response = sender.send_request(request).await.map_err(http_err)?;
    let status = response.status().as_u16();
    let too_large = || HttpsError::TooLarge { limit: max_body };
    let declared = response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_body as u64) {
        return Err(too_large());
    }
    let body = Limited::new(response.into_body(), max_body)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<LengthLimitError>() {
                too_large()
            } else {
                HttpsError::Http {
                    what: "reading the response",
                    reason: e.to_string(),
                }
            }
        })?
        .to_bytes();
    Ok(Response {
        status,
        body: Secret::new(body.to_vec()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn secret_body_yields_its_bytes_once() {
        let mut body = SecretBody::new(Secret::new(b"{\"a\":1}".to_vec()));
        assert_eq!(body.size_hint().exact(), Some(7));
        let collected = (&mut body).collect().await.unwrap().to_bytes();
        assert_eq!(&collected[..], b"{\"a\":1}");
        assert!(body.is_end_stream());
        assert!(body.is_empty());
    }

    #[test]
    fn addresses_with_credentials_or_no_host_are_refused() {
        let uri: http::Uri = "http://user:pw@127.0.0.1:8200".parse().unwrap();
        assert!(matches!(
            HttpsClient::new(&uri, None, "test/1"),
            Err(HttpsError::Address(AddressError::Credentials))
        ));
        let uri: http::Uri = "/only/a/path".parse().unwrap();
        assert!(matches!(
            HttpsClient::new(&uri, None, "test/1"),
            Err(HttpsError::Address(AddressError::NoHost))
        ));
        let uri: http::Uri = "http://[::1]:8200".parse().unwrap();
        let c = HttpsClient::new(&uri, None, "test/1").unwrap();
        assert_eq!((c.host.as_str(), c.port), ("::1", 8200));
        assert_eq!(c.limits(), Limits::default());
    }

    #[tokio::test]
    async fn connect_failures_name_the_server_only() {
        // Bind then drop, so the port is (very likely) closed.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let uri: http::Uri = format!("http://127.0.0.1:{port}").parse().unwrap();
        let c = HttpsClient::new(&uri, None, "test/1").unwrap();
        let mut token = http::HeaderValue::from_static("s3cret-token");
        token.set_sensitive(true);
        let err = c
            .send(
                http::Method::POST,
                "/x",
                vec![(http::HeaderName::from_static("x-token"), token)],
                SecretBody::new(Secret::new(b"s3cret-body".to_vec())),
            )
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, HttpsError::Connect { .. }), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
    }
}
