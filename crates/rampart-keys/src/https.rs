//! A minimal HTTP/1.1 client over tokio-rustls (ring provider) for the
//! transit engine: one connection per request, no redirects, no proxies,
//! timeouts on connect and on the whole exchange, a cap on the body.
//!
//! Request and response bodies, which carry key material in base64, are
//! kept in zeroizing buffers on our side. The copies hyper and rustls make
//! in their own buffers cannot be zeroized from here.

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

use rampart_identity::Secret;

use crate::error::KeyError;

/// Time allowed for TCP connect plus TLS handshake.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for a whole request, connect included.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response body read.
pub(crate) const MAX_BODY: usize = 1 << 20;

/// Builds the client TLS config: the ring provider, TLS 1.3 and 1.2, and
/// the CA certificates of the PEM file at `ca_path`.
pub(crate) fn tls_config(ca_path: &Path) -> Result<Arc<rustls::ClientConfig>, KeyError> {
    let err = |e: String| KeyError::Config(format!("CA file {}: {e}", ca_path.display()));
    let certs = CertificateDer::pem_file_iter(ca_path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(err("no usable CA certificate".into()));
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
pub(crate) struct SecretBody(Option<SecretBuf>);

pub(crate) struct SecretBuf {
    data: Secret<Vec<u8>>,
    pos: usize,
}

impl SecretBody {
    pub(crate) fn new(data: Secret<Vec<u8>>) -> Self {
        Self(Some(SecretBuf { data, pos: 0 }))
    }

    pub(crate) fn empty() -> Self {
        Self(None)
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
pub(crate) struct Response {
    pub status: u16,
    pub body: Secret<Vec<u8>>,
}

/// One server (scheme, host and port) to send requests to.
pub(crate) struct HttpsClient {
    authority: String,
    host: String,
    port: u16,
    /// `None` only for `http://` allowed by `dangerous_allow_http`.
    tls: Option<tokio_rustls::TlsConnector>,
}

impl fmt::Debug for HttpsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpsClient")
            .field("authority", &self.authority)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl HttpsClient {
    /// `uri` must be absolute, without credentials or a path beyond `/`;
    /// its scheme must match `tls` (https with a config, http without).
    pub(crate) fn new(
        uri: &http::Uri,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Self, KeyError> {
        let bad = |why: &str| KeyError::Config(format!("transit address: {why}"));
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("must not carry credentials"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = authority
            .port_u16()
            .unwrap_or(if tls.is_some() { 443 } else { 80 });
        Ok(Self {
            authority: authority.as_str().to_owned(),
            host,
            port,
            tls: tls.map(tokio_rustls::TlsConnector::from),
        })
    }

    /// Sends one request and reads the whole response, within
    /// [`REQUEST_TIMEOUT`].
    pub(crate) async fn send(
        &self,
        method: http::Method,
        path: &str,
        headers: Vec<(http::HeaderName, http::HeaderValue)>,
        body: SecretBody,
    ) -> Result<Response, KeyError> {
        match tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.send_inner(method, path, headers, body),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(KeyError::Timeout(REQUEST_TIMEOUT)),
        }
    }

    async fn send_inner(
        &self,
        method: http::Method,
        path: &str,
        headers: Vec<(http::HeaderName, http::HeaderValue)>,
        body: SecretBody,
    ) -> Result<Response, KeyError> {
        let connect = async {
            let tcp = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| KeyError::Transit(format!("connecting to {}: {e}", self.authority)))?;
            let _ = tcp.set_nodelay(true);
            Ok::<_, KeyError>(tcp)
        };
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| KeyError::Timeout(CONNECT_TIMEOUT))??;
        let request = self.request(method, path, headers, body)?;
        match &self.tls {
            None => exchange(tcp, request).await,
            Some(connector) => {
                let name = ServerName::try_from(self.host.clone())
                    .map_err(|e| KeyError::Config(format!("transit host name: {e}")))?;
                let tls = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
                    .await
                    .map_err(|_| KeyError::Timeout(CONNECT_TIMEOUT))?
                    .map_err(|e| KeyError::Transit(format!("TLS handshake: {e}")))?;
                exchange(tls, request).await
            }
        }
    }

    fn request(
        &self,
        method: http::Method,
        path: &str,
        headers: Vec<(http::HeaderName, http::HeaderValue)>,
        body: SecretBody,
    ) -> Result<http::Request<SecretBody>, KeyError> {
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, self.authority.as_str())
            .header(http::header::USER_AGENT, "rampart-keys/1")
            .header(http::header::ACCEPT, "application/json");
        if body.0.is_some() {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
        }
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request
            .body(body)
            .map_err(|e| KeyError::Transit(format!("building the request: {e}")))
    }
}

async fn exchange<IO>(io: IO, request: http::Request<SecretBody>) -> Result<Response, KeyError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http_err = |e: hyper::Error| KeyError::Transit(format!("HTTP: {e}"));
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, SecretBody>(TokioIo::new(io))
            .await
            .map_err(http_err)?;
    let _conn = AbortOnDrop(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let response = sender.send_request(request).await.map_err(http_err)?;
    let status = response.status().as_u16();
    let too_large = || KeyError::Transit(format!("response larger than {MAX_BODY} bytes"));
    let declared = response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<LengthLimitError>() {
                too_large()
            } else {
                KeyError::Transit(format!("reading the response: {e}"))
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
    }

    #[test]
    fn addresses_with_credentials_or_no_host_are_refused() {
        let uri: http::Uri = "http://user:pw@127.0.0.1:8200".parse().unwrap();
        assert!(HttpsClient::new(&uri, None).is_err());
        let uri: http::Uri = "http://[::1]:8200".parse().unwrap();
        let c = HttpsClient::new(&uri, None).unwrap();
        assert_eq!((c.host.as_str(), c.port), ("::1", 8200));
    }
}
