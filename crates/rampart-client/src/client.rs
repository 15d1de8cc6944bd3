//! The client: one connection, its write side shared by the callers and a
//! writer task (`outbox`: a lone request is written by its caller), a
//! reader task that routes replies by correlation id and events by
//! subscription id.
//!
//! A request refused for a rate limit (NACK 429 with a retry-after) is sent
//! again by its caller's task after the wait, under a fresh id, until
//! [`ClientConfig::rate_limit_max_wait`] is used up (`request`,
//! `Client::open_subscription`; the arithmetic is in `backoff`).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use quinn::crypto::rustls::QuicClientConfig;
use rampart_proto::{
    Ack, AckMode, Auth, AuthOk, CacheDelete, CacheGet, CacheKey, CacheName, CachePut, Consume,
    ConsumerAck, ConsumerName, Durability, ErrorCode, EventBatch, Frame, FrameDecoder, Hello,
    Message, NamespaceName, Publish, PublishBatch, ReauthReason, StartAt, StreamName, Subscribe,
    TenantId, TokenRequest, Unsubscribe, DEFAULT_MAX_FRAME, HEADER_LEN, PROTOCOL_VERSION,
};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tracing::debug;

use crate::backoff::{jitter, rate_limited, Backoff, Pacer};
use crate::config::{ClientConfig, Credential, CredentialProvider, Transport};
use crate::error::ClientError;
use crate::outbox::{self, Outbox};
use crate::tls::client_config;
use rampart_identity::Secret;

/// Bytes read from a TCP socket at once under TLS.
const TLS_READ_BUFFER: usize = 32 * 1024;
/// Bytes of encoded frames queued for the writer and not written yet, each
/// frame counted with [`QUEUED_OVERHEAD`] more. A publisher faster than its
/// connection waits for room here; this budget is the queue's only bound
/// (the channel itself is unbounded, one synchronisation per frame rather
/// than two): bounded by frame count alone, 4096 PUBLISH_BATCH frames of 64
/// x 64 KiB would be 16 GiB, and a later request would wait behind all of
/// it.
const WRITE_BUDGET: usize = 8 * 1024 * 1024;
/// What a queued frame costs beyond its bytes, so that tiny frames too are
/// bounded in number (at most 128 Ki of them).
const QUEUED_OVERHEAD: usize = 64;

/// What a queued frame takes of [`WRITE_BUDGET`].
fn budget_cost(bytes: &Bytes) -> u32 {
    (bytes.len() + QUEUED_OVERHEAD).min(WRITE_BUDGET) as u32
}

/// Event batches buffered per subscription before the reader waits.
const SUBSCRIPTION_QUEUE: usize = 1024;
/// Bytes of events buffered per subscription before the reader waits (and
/// so, through flow control, the server).
const SUBSCRIPTION_BUDGET: usize = 8 * 1024 * 1024;

/// A batch on its way to a subscription, holding its share of the
/// subscription's byte budget until the application takes it.
type Delivered = (EventBatch, OwnedSemaphorePermit);

/// Where the reader puts a subscription's batches.
#[derive(Clone)]
struct Sink {
    tx: mpsc::Sender<Delivered>,
    budget: Arc<Semaphore>,
}

type Reply = Result<Frame, ClientError>;

enum Pending {
    /// Waits for one reply, or for `acks` ACK frames.
    Reply {
        tx: oneshot::Sender<Reply>,
        acks_left: u32,
        acked: u32,
        /// Weakest durability among the ACKs received so far.
        weakest: Option<Durability>,
    },
    /// SUBSCRIBE: on SUBSCRIBED, the reader registers `events` itself so no
    /// event can arrive before the subscription is known.
    Subscribe {
        tx: oneshot::Sender<Reply>,
        events: Sink,
    },
}

impl Pending {
    /// A request waiting for one reply, or for `acks` ACK frames.
    fn reply(tx: oneshot::Sender<Reply>, acks: u32) -> Self {
        Pending::Reply {
            tx,
            acks_left: acks,
            acked: 0,
            weakest: None,
        }
    }
}

#[derive(Default)]
struct Routes {
    /// Keyed by request id: this connection's own counter, never a key the
    /// server picks (those go to `subscriptions`, which keeps the default
    /// keyed hasher), so a fast unkeyed hash is safe here.
    pending: HashMap<u64, Pending, rustc_hash::FxBuildHasher>,
    /// When each request sent waits no longer for its reply, oldest first
    /// (every request has the same timeout, so sending order is deadline
    /// order). The connection's sweep answers the overdue ones with
    /// [`ClientError::Timeout`]: one timer per connection rather than a
    /// timer-wheel entry made and removed per request. Entries whose
    /// request was answered are dropped as the sweep passes them, or in a
    /// compaction once they outnumber the pending requests.
    deadlines: VecDeque<(tokio::time::Instant, u64)>,
    subscriptions: HashMap<u64, Sink>,
    closed: bool,
    /// First refusal of a request that nobody waits for (ack mode none).
    async_error: Option<ClientError>,
}

struct Inner {
    out: Arc<Outbox>,
    /// [`WRITE_BUDGET`], shared by the frames queued for the writer.
    queued: Arc<Semaphore>,
    routes: Mutex<Routes>,
    next_id: AtomicU64,
    request_timeout: Duration,
    /// Bound on one request's waits for rate limits (zero: no retrying).
    rate_limit_max_wait: Duration,
    /// Waits for rate limits taken so far, all requests together.
    backoffs: AtomicU64,
    /// Spaces this connection's resends (and new requests behind them).
    pacer: Pacer,
    /// Where re-authentication gets its credential.
    creds: Mutex<Option<CredSource>>,
    /// Largest frame the server accepts (from its HELLO); bigger requests
    /// are refused here, since the server would close the connection.
    max_frame: std::sync::atomic::AtomicUsize,
    /// Expiry of the current credential (Unix ms; 0 = none).
    expires_at_ms: AtomicU64,
    reauth_running: std::sync::atomic::AtomicBool,
    /// The scope the last publish named (see [`Inner::stream_scope`]).
    last_scope: Mutex<Option<StreamScope>>,
}

/// A stream's tenant, namespace and name, parsed.
type StreamScope = (TenantId, NamespaceName, StreamName);

impl Drop for Inner {
    /// The last of the client: the writer task writes out what is queued,
    /// then closes the stream.
    fn drop(&mut self) {
        self.out.close();
    }
}

#[derive(Clone)]
enum CredSource {
    Fixed(Credential),
    Provider(Arc<dyn CredentialProvider>),
}

impl CredSource {
    async fn get(&self) -> Result<Credential, ClientError> {
        match self {
            CredSource::Fixed(c) => Ok(c.clone()),
            CredSource::Provider(p) => p.credential().await,
        }
    }
}

impl Inner {
    /// Queues an encoded frame for the writer, first waiting while the
    /// frames queued and not yet written fill [`WRITE_BUDGET`] (a frame
    /// larger than the whole budget waits for all of it).
    async fn enqueue(&self, bytes: Bytes) -> Result<(), ClientError> {
        // Most of the time there is room: taking it without the waiting
        // future (and its place in the semaphore's queue) is cheaper.
        let permit = match self.room_now(&bytes)? {
            Some(permit) => permit,
            None => self.room(&bytes).await?,
        };
        self.out.put(bytes, Some(permit), false)
    }

    /// Waits for [`WRITE_BUDGET`]'s share for `bytes`, in turn with the
    /// other callers waiting for room.
    async fn room(&self, bytes: &Bytes) -> Result<OwnedSemaphorePermit, ClientError> {
        self.queued
            .clone()
            .acquire_many_owned(budget_cost(bytes))
            .await
            .map_err(|_| ClientError::Closed)
    }

    /// [`WRITE_BUDGET`]'s share for `bytes` if there is room for it now;
    /// `Ok(None)` if it would have to wait.
    fn room_now(&self, bytes: &Bytes) -> Result<Option<OwnedSemaphorePermit>, ClientError> {
        match self
            .queued
            .clone()
            .try_acquire_many_owned(budget_cost(bytes))
        {
            Ok(permit) => Ok(Some(permit)),
            Err(TryAcquireError::NoPermits) => Ok(None),
            Err(TryAcquireError::Closed) => Err(ClientError::Closed),
        }
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The parsed names of a stream's scope: those of the last publish
    /// again when they are the same strings (a reference count each), else
    /// parsed and kept for the next. A client mostly publishes to one
    /// stream, and parsing the three names (a check and an allocation each)
    /// was 6% of the CPU of one-message publishes.
    fn stream_scope(
        &self,
        tenant: &str,
        namespace: &str,
        stream: &str,
    ) -> Result<StreamScope, ClientError> {
        let same = |(t, n, s): &StreamScope| {
            t.as_str() == tenant && n.as_str() == namespace && s.as_str() == stream
        };
        let mut last = self.last_scope.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(scope) = last.as_ref().filter(|l| same(l)) {
            return Ok(scope.clone());
        }
        let scope = (
            TenantId::parse(tenant)?,
            NamespaceName::parse(namespace)?,
            StreamName::parse(stream)?,
        );
        *last = Some(scope.clone());
        Ok(scope)
    }

    /// After a refusal: when it is a rate limit that `backoff` still has
    /// room to wait for, waits as told and returns `Ok` (send again);
    /// otherwise hands the error back.
    async fn wait_out(&self, backoff: &mut Backoff, e: ClientError) -> Result<(), ClientError> {
        let Some(wait) = rate_limited(&e).and_then(|told| backoff.next(told, jitter())) else {
            return Err(e);
        };
        self.backoffs.fetch_add(1, Ordering::Relaxed);
        let now = tokio::time::Instant::now();
        let at = self.pacer.refused(now.into_std(), wait);
        debug!(
            wait_ms = at.saturating_duration_since(now.into_std()).as_millis() as u64,
            "rate limited; sending again in the next free slot"
        );
        tokio::time::sleep_until(at.into()).await;
        Ok(())
    }

    /// Before a new request: waits behind resends still queued.
    async fn paced(&self) {
        if let Some(at) = self.pacer.slot(std::time::Instant::now()) {
            tokio::time::sleep_until(at.into()).await;
        }
    }
}

/// A connection to a Rampart server. Cheap to share behind an `Arc`; every
/// method takes `&self` and requests may run concurrently.
pub struct Client {
    inner: Arc<Inner>,
    tenant: TenantId,
    principal: String,
    transport: Transport,
    _endpoint: Option<quinn::Endpoint>,
    quic: Option<quinn::Connection>,
    writer: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("tenant", &self.tenant)
            .field("principal", &self.principal)
            .field("transport", &self.transport)
            .finish()
    }
}

fn parse_url(url: &str) -> Result<(Transport, String, u16), ClientError> {
    let bad = || {
        ClientError::Config(format!(
            "URL `{url}` must look like quic://host:port or tls://host:port"
        ))
    };
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    let transport = match scheme {
        "quic" => Transport::Quic,
        "tls" | "tcp+tls" => Transport::Tcp,
        _ => return Err(bad()),
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad());
    }
    Ok((transport, host.to_string(), port))
}

async fn resolve(host: &str, port: u16) -> Result<SocketAddr, ClientError> {
    tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| ClientError::Connect(format!("resolving {host}: {e}")))?
        .next()
        .ok_or_else(|| ClientError::Connect(format!("{host} has no address")))
}

impl Client {
    /// Connects, completes HELLO and AUTH, and returns a ready client.
    pub async fn connect(url: &str, config: ClientConfig) -> Result<Client, ClientError> {
        let timeout = config.connect_timeout;
        tokio::time::timeout(timeout, Self::connect_inner(url, config))
            .await
            .map_err(|_| ClientError::Timeout("connect"))?
    }

    async fn connect_inner(url: &str, config: ClientConfig) -> Result<Client, ClientError> {
        let (url_transport, host, port) = parse_url(url)?;
        let transport = config.transport.unwrap_or(url_transport);
        let source =
            match (&config.credential_provider, config.fixed_credential()) {
                (Some(p), _) => CredSource::Provider(p.0.clone()),
                (None, Some(c)) => CredSource::Fixed(c),
                (None, None) => return Err(ClientError::Config(
                    "a credential is required (RAMPART_API_KEY, a token or a client certificate)"
                        .into(),
                )),
            };
        let first = source.get().await?;
        if first.secret.expose().len() > 2048 {
            // Pre-AUTH frames are capped at 4 KiB; refuse here with a reason
            // rather than let the server close the connection.
            return Err(ClientError::Config("API key longer than 2048 bytes".into()));
        }
        let tls = client_config(&config)?;
        let name = config.server_name.clone().unwrap_or_else(|| host.clone());
        let server_name = ServerName::try_from(name.clone())
            .map_err(|_| ClientError::Config(format!("`{name}` is not a valid server name")))?;
        let addr = resolve(&host, port).await?;

        let ((inner, writer), endpoint, quic) = match transport {
            Transport::Tcp => {
                let tcp = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(|e| ClientError::Connect(format!("{addr}: {e}")))?;
                let _ = tcp.set_nodelay(true);
                // rustls reads the socket 4 KiB at a time; a read buffer
                // under it turns a burst of records into one recv.
                let tcp = tokio::io::BufReader::with_capacity(TLS_READ_BUFFER, tcp);
                let tls = tokio_rustls::TlsConnector::from(Arc::new(tls))
                    .connect(server_name, tcp)
                    .await
                    .map_err(|e| ClientError::Connect(format!("TLS handshake: {e}")))?;
                // Writes reach rustls in pieces it copies at full speed
                // at any alignment (see `rampart_tls`).
                let (r, w) = tokio::io::split(rampart_tls::Pieces::new(tls));
                (spawn_io(r, w, &config), None, None)
            }
            Transport::Quic => {
                let bind: SocketAddr = if addr.is_ipv6() {
                    "[::]:0".parse().map_err(|_| ClientError::Closed)?
                } else {
                    "0.0.0.0:0".parse().map_err(|_| ClientError::Closed)?
                };
                let mut endpoint = quic_endpoint(bind)
                    .map_err(|e| ClientError::Connect(format!("QUIC endpoint: {e}")))?;
                let crypto = QuicClientConfig::try_from(tls)
                    .map_err(|e| ClientError::Config(e.to_string()))?;
                let mut qc = quinn::ClientConfig::new(Arc::new(crypto));
                qc.transport_config(Arc::new(quic_transport()));
                endpoint.set_default_client_config(qc);
                let conn = endpoint
                    .connect(addr, &name)
                    .map_err(|e| ClientError::Connect(e.to_string()))?
                    .await
                    .map_err(|e| ClientError::Connect(format!("QUIC handshake: {e}")))?;
                let (send, recv) = conn
                    .open_bi()
                    .await
                    .map_err(|e| ClientError::Connect(e.to_string()))?;
                (spawn_io(recv, send, &config), Some(endpoint), Some(conn))
            }
        };

        let hello = request_once(
            &inner,
            Message::Hello(Hello {
                version: u16::from(PROTOCOL_VERSION),
                capabilities: 0,
                max_frame: DEFAULT_MAX_FRAME as u32,
                agent: config.agent.clone(),
            }),
            1,
        )
        .await?;
        let Message::Hello(server_hello) = hello.msg else {
            return Err(ClientError::Protocol("expected HELLO".into()));
        };
        let ok = authenticate(&inner, &first).await?;
        inner.max_frame.store(
            (server_hello.max_frame as usize).max(rampart_proto::PREAUTH_MAX_FRAME),
            Ordering::Release,
        );
        *inner.creds.lock().unwrap_or_else(|e| e.into_inner()) = Some(source);
        debug!(tenant = %ok.tenant, principal = %ok.principal, "authenticated");
        Ok(Client {
            inner,
            tenant: ok.tenant,
            principal: ok.principal,
            transport,
            _endpoint: endpoint,
            quic,
            writer: Some(writer),
        })
    }

    /// The tenant this connection belongs to.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// The authenticated principal's name.
    pub fn principal(&self) -> &str {
        &self.principal
    }

    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// Unix ms when the current credential expires; `None` if it does not.
    pub fn expires_at_ms(&self) -> Option<u64> {
        match self.inner.expires_at_ms.load(Ordering::Acquire) {
            0 => None,
            t => Some(t),
        }
    }

    /// Replaces the connection's credential in band (same tenant and
    /// principal); subscriptions carry on.
    pub async fn reauthenticate(&self, c: Credential) -> Result<(), ClientError> {
        authenticate(&self.inner, &c).await.map(|_| ())
    }

    /// Asks for a short-lived Rampart token for this connection's identity;
    /// `ttl` of `None` takes the server default. Returns the token and its
    /// expiry (Unix ms).
    pub async fn request_token(
        &self,
        ttl: Option<Duration>,
    ) -> Result<(Secret<String>, u64), ClientError> {
        let ttl_ms = ttl.map_or(0, |d| d.as_millis().min(u128::from(u32::MAX)) as u32);
        match request(
            &self.inner,
            Message::TokenRequest(TokenRequest { ttl_ms }),
            1,
        )
        .await?
        .msg
        {
            Message::Token(t) => Ok((Secret::new(t.token), t.expires_at_ms)),
            _ => Err(ClientError::Protocol("expected TOKEN".into())),
        }
    }

    /// Waits for rate limits this client has taken so far (each wait counts
    /// once; see [`ClientConfig::rate_limit_max_wait`]).
    pub fn rate_limit_backoffs(&self) -> u64 {
        self.inner.backoffs.load(Ordering::Relaxed)
    }

    /// Takes the first error the server reported for a request sent with
    /// [`AckMode::None`], if any.
    pub fn take_async_error(&self) -> Option<ClientError> {
        self.inner.routes().async_error.take()
    }

    /// Publishes one message and waits for its acknowledgement, which says
    /// how durable the message now is. Over a rate limit, waits as the
    /// server says and publishes again (see
    /// [`ClientConfig::rate_limit_max_wait`]).
    pub async fn publish(
        &self,
        tenant: &str,
        namespace: &str,
        stream: &str,
        data: impl Into<Bytes>,
    ) -> Result<Acked, ClientError> {
        self.publish_with(tenant, namespace, stream, data, AckMode::Message)
            .await
    }

    /// Publishes one message with the given ack mode. With
    /// [`AckMode::None`] it returns once the frame is queued for sending,
    /// with count 0 and [`Durability::None`]: nothing is known yet.
    ///
    /// Acknowledged publishes refused for a rate limit are sent again after
    /// the server's wait. Fire-and-forget ones ([`AckMode::None`]) are not:
    /// the call has returned before any refusal arrives, which then shows
    /// up in [`Client::take_async_error`]. A message sent again may land
    /// after messages that other tasks published on this client meanwhile.
    pub async fn publish_with(
        &self,
        tenant: &str,
        namespace: &str,
        stream: &str,
        data: impl Into<Bytes>,
        ack: AckMode,
    ) -> Result<Acked, ClientError> {
        let msg = publish_message(&self.inner, tenant, namespace, stream, data.into(), ack)?;
        if ack == AckMode::None {
            send_only(&self.inner, msg).await?;
            return Ok(Acked {
                count: 0,
                durability: Durability::None,
            });
        }
        acked_of(request(&self.inner, msg, 1).await?)
    }

    /// Publishes one message without waiting for its acknowledgement: returns
    /// as soon as the frame is queued for sending (first waiting while the
    /// connection's write budget is full), with a [`PendingAck`] that
    /// resolves to the ACK. One task can keep many publishes in flight on
    /// one connection this way, as NATS clients' async publish does;
    /// messages one task publishes are stored in the order it called this.
    ///
    /// Unlike [`Client::publish`], a publish refused for a rate limit is not
    /// sent again: the refusal (`ClientError::Nack` with its
    /// `retry_after`) is what its [`PendingAck`] resolves to, and the caller
    /// decides, since a message sent again would land after the ones
    /// published behind it. Its reply's deadline
    /// ([`ClientConfig::request_timeout`]) counts from when it is queued.
    pub async fn publish_async(
        &self,
        tenant: &str,
        namespace: &str,
        stream: &str,
        data: impl Into<Bytes>,
    ) -> Result<PendingAck, ClientError> {
        let msg = publish_message(
            &self.inner,
            tenant,
            namespace,
            stream,
            data.into(),
            AckMode::Message,
        )?;
        self.inner.paced().await;
        let rx = send_registered(&self.inner, &mut Frame::new(0, msg), |tx| {
            Pending::reply(tx, 1)
        })
        .await?;
        Ok(PendingAck { rx })
    }

    /// Publishes several messages in one frame, in order, and waits for one
    /// acknowledgement. Returns how many were acknowledged. A batch refused
    /// for a rate limit is sent again whole after the server's wait; one
    /// refused after some of its messages were acknowledged
    /// ([`AckMode::Message`]) is not, since that would repeat them.
    pub async fn publish_batch<I, P>(
        &self,
        tenant: &str,
        namespace: &str,
        stream: &str,
        payloads: I,
    ) -> Result<u32, ClientError>
    where
        I: IntoIterator<Item = P>,
        P: AsRef<[u8]>,
    {
        self.publish_batch_with(tenant, namespace, stream, payloads, AckMode::Batch)
            .await
    }

    /// [`Client::publish_batch`], returning how durable the batch is too.
    pub async fn publish_batch_acked<I, P>(
        &self,
        tenant: &str,
        namespace: &str,
        stream: &str,
        payloads: I,
    ) -> Result<Acked, ClientError>
    where
        I: IntoIterator<Item = P>,
        P: AsRef<[u8]>,
    {
        self.publish_batch_inner(tenant, namespace, stream, payloads, AckMode::Batch)
            .await
    }

    /// [`Client::publish_batch`] with an explicit ack mode. With
    /// [`AckMode::None`] it returns the number of messages queued for
    /// sending; with [`AckMode::Message`], the number sent once every one is
    /// acknowledged.
    pub async fn publish_batch_with<I, P>(
        &self,
        tenant: &str,
        namespace: &str,
        stream: &str,
        payloads: I,
        ack: AckMode,
    ) -> Result<u32, ClientError>
    where
        I: IntoIterator<Item = P>,
        P: AsRef<[u8]>,
    {
        self.publish_batch_inner(tenant, namespace, stream, payloads, ack)
            .await
            .map(|a| a.count)
    }

    async fn publish_batch_inner<I, P>(
        &self,
        tenant: &str,
        namespace: &str,
        stream: &str,
        payloads: I,
        ack: AckMode,
    ) -> Result<Acked, ClientError>
    where
        I: IntoIterator<Item = P>,
        P: AsRef<[u8]>,
    {
        let (tenant, namespace, stream) = self.inner.stream_scope(tenant, namespace, stream)?;
        // Gathered first (the payloads themselves are not copied), so that
        // the frame is sized once and each payload copied into it once.
        let payloads: Vec<P> = payloads.into_iter().collect();
        let count = u32::try_from(payloads.len())
            .map_err(|_| ClientError::InvalidArgument("too many payloads in one batch".into()))?;
        let acks = match ack {
            AckMode::None => {
                // Encoded straight into the frame: nothing waits for a
                // reply, so nothing is ever sent again from a message.
                let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
                let bytes = rampart_proto::encode_publish_batch(
                    id, ack, &tenant, &namespace, &stream, &payloads,
                );
                drop(payloads);
                check_size(&self.inner, bytes.len())?;
                self.inner.enqueue(bytes).await?;
                return Ok(Acked {
                    count,
                    durability: Durability::None,
                });
            }
            AckMode::Batch => 1,
            AckMode::Message => count.max(1),
        };
        let size = payloads.iter().map(|p| 4 + p.as_ref().len()).sum();
        let mut b = rampart_proto::EntriesBuilder::with_capacity(size);
        for p in payloads {
            b.push(p.as_ref());
        }
        let (count, entries) = b.finish();
        let msg = Message::PublishBatch(PublishBatch {
            ack,
            tenant,
            namespace,
            stream,
            count,
            entries,
        });
        let acked = acked_of(request(&self.inner, msg, acks).await?)?;
        Ok(match ack {
            // One ACK per message: the last one's count is 1.
            AckMode::Message => Acked { count, ..acked },
            _ => acked,
        })
    }

    /// Subscribes to a stream; messages published from now on arrive on the
    /// returned [`Subscription`], in order.
    pub async fn subscribe(
        &self,
        tenant: &str,
        namespace: &str,
        stream: &str,
    ) -> Result<Subscription, ClientError> {
        self.subscribe_from(tenant, namespace, stream, StartAt::New)
            .await
    }

    /// Subscribes to a stream from `start`. Replays (every start but
    /// [`StartAt::New`]) need a durable stream; a live stream refuses them
    /// with NACK 400.
    pub async fn subscribe_from(
        &self,
        tenant: &str,
        namespace: &str,
        stream: &str,
        start: StartAt,
    ) -> Result<Subscription, ClientError> {
        let msg = Message::Subscribe(Subscribe {
            tenant: TenantId::parse(tenant)?,
            namespace: NamespaceName::parse(namespace)?,
            stream: StreamName::parse(stream)?,
            start,
        });
        self.open_subscription(msg).await
    }

    /// Joins the durable consumer `consumer` of a durable stream, creating
    /// it on first use with `options`; an existing consumer continues from
    /// its committed position with its own settings.
    ///
    /// Messages arrive on the returned [`Subscription`] with
    /// [`Event::seq`] = their offset. Each must be acknowledged with
    /// [`Subscription::ack`]; one not acknowledged within the ack wait is
    /// delivered again (to this or another member), so delivery is at least
    /// once. Connections that join the same consumer share its messages.
    /// A live stream refuses with NACK 400.
    pub async fn consume(
        &self,
        tenant: &str,
        namespace: &str,
        stream: &str,
        consumer: &str,
        options: ConsumeOptions,
    ) -> Result<Subscription, ClientError> {
        let msg = Message::Consume(consume_message(
            tenant, namespace, stream, consumer, &options,
        )?);
        self.open_subscription(msg).await
    }

    /// Sends SUBSCRIBE or CONSUME and waits for SUBSCRIBED, waiting out
    /// rate limits as told.
    async fn open_subscription(&self, msg: Message) -> Result<Subscription, ClientError> {
        let (events_tx, events_rx) = mpsc::channel(SUBSCRIPTION_QUEUE);
        let events = Sink {
            tx: events_tx,
            budget: Arc::new(Semaphore::new(SUBSCRIPTION_BUDGET)),
        };
        let mut frame = Frame::new(0, msg);
        let mut backoff = Backoff::new(self.inner.rate_limit_max_wait);
        let reply = loop {
            let sent = send_and_wait(&self.inner, &mut frame, |tx| Pending::Subscribe {
                tx,
                events: events.clone(),
            });
            match sent.await {
                Ok(reply) => break reply,
                Err(e) => self.inner.wait_out(&mut backoff, e).await?,
            }
        };
        let Message::Subscribed(s) = reply.msg else {
            return Err(ClientError::Protocol("expected SUBSCRIBED".into()));
        };
        Ok(Subscription {
            id: s.subscription_id,
            rx: events_rx,
            inner: self.inner.clone(),
            current: VecDeque::new(),
            next_seq: 0,
            missed: 0,
        })
    }

    /// Stores `value` under `key`, expiring after `ttl` if given.
    pub async fn cache_put(
        &self,
        tenant: &str,
        namespace: &str,
        cache: &str,
        key: &str,
        value: impl Into<Bytes>,
        ttl: Option<Duration>,
    ) -> Result<(), ClientError> {
        let msg = Message::CachePut(CachePut {
            tenant: TenantId::parse(tenant)?,
            namespace: NamespaceName::parse(namespace)?,
            cache: CacheName::parse(cache)?,
            key: CacheKey::parse(key)?,
            ttl_ms: ttl.map_or(0, |d| (d.as_millis() as u64).max(1)),
            value: value.into(),
        });
        request(&self.inner, msg, 1).await.map(|_| ())
    }

    /// Reads `key`; `None` when absent or expired.
    pub async fn cache_get(
        &self,
        tenant: &str,
        namespace: &str,
        cache: &str,
        key: &str,
    ) -> Result<Option<Bytes>, ClientError> {
        let msg = Message::CacheGet(CacheGet {
            tenant: TenantId::parse(tenant)?,
            namespace: NamespaceName::parse(namespace)?,
            cache: CacheName::parse(cache)?,
            key: CacheKey::parse(key)?,
        });
        match request(&self.inner, msg, 1).await?.msg {
            Message::CacheValue(v) => Ok(v.value),
            _ => Err(ClientError::Protocol("expected CACHE_VALUE".into())),
        }
    }

    /// Removes `key`; returns whether it was there.
    pub async fn cache_delete(
        &self,
        tenant: &str,
        namespace: &str,
        cache: &str,
        key: &str,
    ) -> Result<bool, ClientError> {
        let msg = Message::CacheDelete(CacheDelete {
            tenant: TenantId::parse(tenant)?,
            namespace: NamespaceName::parse(namespace)?,
            cache: CacheName::parse(cache)?,
            key: CacheKey::parse(key)?,
        });
        match request(&self.inner, msg, 1).await?.msg {
            Message::Ack(a) => Ok(a.count > 0),
            _ => Err(ClientError::Protocol("expected ACK".into())),
        }
    }

    /// Round trip to the server.
    pub async fn ping(&self) -> Result<(), ClientError> {
        request(&self.inner, Message::Ping, 1).await.map(|_| ())
    }

    /// Closes the connection after everything queued has been sent (and
    /// once every [`Subscription`] of this client is dropped).
    pub async fn close(mut self) {
        let writer = self.writer.take();
        let quic = self.quic.take();
        drop(self);
        if let Some(w) = writer {
            let _ = tokio::time::timeout(Duration::from_secs(5), w).await;
        }
        if let Some(c) = quic {
            c.close(0u32.into(), b"bye");
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let (Some(c), Some(w)) = (self.quic.take(), self.writer.take()) else {
            return;
        };
        // Let queued frames go out, then close QUIC properly rather than
        // leaving the server to an idle timeout.
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(2), w).await;
                    c.close(0u32.into(), b"bye");
                });
            }
            Err(_) => c.close(0u32.into(), b"bye"),
        }
    }
}

/// The largest UDP payload a QUIC connection sends, where the path carries
/// it: MTU discovery searches up to it, and the endpoint accepts it.
///
/// quinn's default bound, 1452 bytes, fits an Ethernet path; on loopback
/// and jumbo-frame paths it costs a packet's encryption, framing and
/// acknowledgement per 1.4 KB. Not higher: quinn hands the kernel up to 10
/// datagrams in one segmentation-offload send, which carries at most 64
/// KiB; larger datagrams make those sends fail, and black-hole detection
/// then drops the path to 1,200 bytes. The server uses the same bound
/// (`QUIC_MAX_UDP_PAYLOAD` in rampart-server's transport.rs, which has the
/// figures).
const QUIC_MAX_UDP_PAYLOAD: u16 = 6500;

/// A QUIC connection's transport settings: windows for a busy stream, a
/// keep-alive well inside the server's idle timeout, and MTU discovery up
/// to [`QUIC_MAX_UDP_PAYLOAD`].
fn quic_transport() -> quinn::TransportConfig {
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(QUIC_MAX_UDP_PAYLOAD);
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(Duration::from_secs(10)))
        .stream_receive_window((4u32 * 1024 * 1024).into())
        .receive_window((8u32 * 1024 * 1024).into())
        .send_window(8 * 1024 * 1024)
        .mtu_discovery_config(Some(mtu));
    t
}

/// Bytes asked for as a QUIC connection's socket receive buffer: the
/// kernel's default (about 208 KiB) drops datagrams under a burst of
/// deliveries, each one retransmitted and shrinking the congestion window.
/// The kernel caps the request at `net.core.rmem_max`.
const QUIC_SOCKET_BUFFER: usize = 4 << 20;

/// A client QUIC endpoint on a UDP socket bound to `bind`, its receive
/// buffer as large as [`QUIC_SOCKET_BUFFER`] where the kernel allows, that
/// accepts datagrams up to [`QUIC_MAX_UDP_PAYLOAD`].
fn quic_endpoint(bind: SocketAddr) -> std::io::Result<quinn::Endpoint> {
    let socket = std::net::UdpSocket::bind(bind)?;
    let s = socket2::SockRef::from(&socket);
    // Best effort: the kernel's default buffer works, only less well.
    let _ = s.set_recv_buffer_size(QUIC_SOCKET_BUFFER);
    debug!(
        receive_buffer = s.recv_buffer_size().unwrap_or(0),
        "QUIC socket"
    );
    let runtime = quinn::default_runtime()
        .ok_or_else(|| std::io::Error::other("no async runtime for QUIC"))?;
    let mut config = quinn::EndpointConfig::default();
    config
        .max_udp_payload_size(QUIC_MAX_UDP_PAYLOAD)
        .map_err(|e| std::io::Error::other(format!("maximum UDP payload: {e}")))?;
    quinn::Endpoint::new(config, None, socket, runtime)
}

/// Sends AUTH and records the new expiry.
async fn authenticate(inner: &Arc<Inner>, c: &Credential) -> Result<AuthOk, ClientError> {
    // Not sent again on 429: that is an authentication lockout, and one
    // more attempt with the same credential only extends it.
    let reply = request_once(
        inner,
        Message::Auth(Auth {
            method: c.method,
            credential: Bytes::copy_from_slice(c.secret.expose().as_bytes()),
        }),
        1,
    )
    .await?;
    let Message::AuthOk(ok) = reply.msg else {
        return Err(ClientError::Protocol("expected AUTH_OK".into()));
    };
    inner
        .expires_at_ms
        .store(ok.expires_at_ms, Ordering::Release);
    Ok(ok)
}

/// Answers AUTH_REQUIRED: fetch a fresh credential and re-authenticate,
/// once at a time.
fn reauthenticate_in_background(inner: Arc<Inner>) {
    if inner.reauth_running.swap(true, Ordering::AcqRel) {
        return;
    }
    tokio::spawn(async move {
        let source = inner
            .creds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let result = match source {
            Some(s) => match s.get().await {
                Ok(c) => authenticate(&inner, &c).await.map(|_| ()),
                Err(e) => Err(e),
            },
            None => Err(ClientError::Config(
                "no credential to re-authenticate with".into(),
            )),
        };
        if let Err(e) = result {
            debug!(error = %e, "re-authentication failed");
            let mut routes = inner.routes();
            if routes.async_error.is_none() {
                routes.async_error = Some(e);
            }
        }
        inner.reauth_running.store(false, Ordering::Release);
    });
}

/// Encodes a frame, refusing one the server would not accept.
fn encode_checked(inner: &Inner, frame: &Frame) -> Result<Bytes, ClientError> {
    let bytes = frame.to_bytes();
    check_size(inner, bytes.len())?;
    Ok(bytes)
}

/// A PUBLISH of one message, its names checked.
fn publish_message(
    inner: &Inner,
    tenant: &str,
    namespace: &str,
    stream: &str,
    payload: Bytes,
    ack: AckMode,
) -> Result<Message, ClientError> {
    let (tenant, namespace, stream) = inner.stream_scope(tenant, namespace, stream)?;
    Ok(Message::Publish(Publish {
        ack,
        tenant,
        namespace,
        stream,
        payload,
    }))
}

/// Refuses a request of `len` bytes larger than the server's frame limit.
fn check_size(inner: &Inner, len: usize) -> Result<(), ClientError> {
    let max = inner.max_frame.load(Ordering::Acquire);
    if len > max {
        return Err(ClientError::InvalidArgument(format!(
            "request of {len} bytes is larger than the server's frame limit of {max} bytes"
        )));
    }
    Ok(())
}

async fn send_only(inner: &Arc<Inner>, msg: Message) -> Result<(), ClientError> {
    let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
    let bytes = encode_checked(inner, &Frame::new(id, msg))?;
    inner.enqueue(bytes).await
}

/// Sends a request and waits for its reply (or `acks` ACKs), sending it
/// again after the server's wait while it is refused for a rate limit and
/// [`ClientConfig::rate_limit_max_wait`] allows. The frame is kept, not
/// copied, so a request that is not refused costs nothing more.
async fn request(inner: &Arc<Inner>, msg: Message, acks: u32) -> Result<Frame, ClientError> {
    let mut frame = Frame::new(0, msg);
    let mut backoff = Backoff::new(inner.rate_limit_max_wait);
    inner.paced().await;
    loop {
        match attempt(inner, &mut frame, acks).await {
            Ok(reply) => return Ok(reply),
            Err(e) => inner.wait_out(&mut backoff, e).await?,
        }
    }
}

/// [`request`] without retrying.
async fn request_once(inner: &Arc<Inner>, msg: Message, acks: u32) -> Result<Frame, ClientError> {
    attempt(inner, &mut Frame::new(0, msg), acks).await
}

/// Sends `frame` once, under a fresh id, and waits for its reply.
async fn attempt(inner: &Arc<Inner>, frame: &mut Frame, acks: u32) -> Result<Frame, ClientError> {
    send_and_wait(inner, frame, |tx| Pending::reply(tx, acks)).await
}

/// Sends `frame` once, under a fresh id, registered as the pending request
/// `pending` makes of the reply's sender, and waits for the reply. The
/// reply's deadline counts from when the frame is queued for the writer.
///
/// The request is registered before its frame is queued, since the reply
/// may come back as soon as the frame is written. When the write budget
/// has room (the usual case), registering it and starting its deadline
/// take one lock of the routes.
async fn send_and_wait(
    inner: &Arc<Inner>,
    frame: &mut Frame,
    pending: impl FnOnce(oneshot::Sender<Reply>) -> Pending,
) -> Result<Frame, ClientError> {
    let rx = send_registered(inner, frame, pending).await?;
    match rx.await {
        Ok(reply) => reply,
        Err(_) => Err(ClientError::Closed),
    }
}

/// The sending half of [`send_and_wait`]: returns once the frame is
/// queued for the writer, with the receiver its reply will arrive on.
async fn send_registered(
    inner: &Arc<Inner>,
    frame: &mut Frame,
    pending: impl FnOnce(oneshot::Sender<Reply>) -> Pending,
) -> Result<oneshot::Receiver<Reply>, ClientError> {
    frame.id = inner.next_id.fetch_add(1, Ordering::Relaxed);
    let id = frame.id;
    let bytes = encode_checked(inner, frame)?;
    let room = inner.room_now(&bytes)?;
    let (tx, rx) = oneshot::channel();
    let alone = {
        let mut routes = inner.routes();
        if routes.closed {
            return Err(ClientError::Closed);
        }
        routes.pending.insert(id, pending(tx));
        if room.is_some() {
            routes.expect_reply_by(id, inner.request_timeout);
        }
        routes.pending.len() == 1
    };
    let queued = match room {
        // Alone, the caller may write it itself (see `outbox`); with other
        // requests in flight, the writer task gathers them.
        Some(permit) => inner.out.put(bytes, Some(permit), alone),
        // No room a moment ago: wait for it, without trying again first.
        None => inner.room(&bytes).await.and_then(|permit| {
            inner.out.put(bytes, Some(permit), false)?;
            inner.routes().expect_reply_by(id, inner.request_timeout);
            Ok(())
        }),
    };
    if let Err(e) = queued {
        inner.routes().pending.remove(&id);
        return Err(e);
    }
    Ok(rx)
}

impl Routes {
    /// Notes that request `id` (if still pending) waits for its reply for
    /// at most `timeout` from now.
    fn expect_reply_by(&mut self, id: u64, timeout: Duration) {
        if !self.pending.contains_key(&id) {
            return;
        }
        if self.deadlines.len() > 2 * self.pending.len() + 64 {
            let pending = &self.pending;
            self.deadlines.retain(|(_, id)| pending.contains_key(id));
        }
        self.deadlines
            .push_back((tokio::time::Instant::now() + timeout, id));
    }

    /// Answers every request whose reply is overdue at `now` with
    /// [`ClientError::Timeout`].
    fn expire(&mut self, now: tokio::time::Instant) {
        while let Some(&(at, id)) = self.deadlines.front() {
            if at > now {
                break;
            }
            self.deadlines.pop_front();
            let tx = match self.pending.remove(&id) {
                Some(Pending::Reply { tx, .. } | Pending::Subscribe { tx, .. }) => tx,
                None => continue,
            };
            let _ = tx.send(Err(ClientError::Timeout("reply")));
        }
    }
}

/// How often a connection looks for requests past their timeout: an
/// eighth of it, between 1 ms and 1 s, so a request times out at most that
/// much after `request_timeout`.
fn sweep_every(request_timeout: Duration) -> Duration {
    (request_timeout / 8).clamp(Duration::from_millis(1), Duration::from_secs(1))
}

/// Times out the requests of a connection whose replies are overdue, while
/// the client lives and its connection is open.
async fn expire_overdue(inner: std::sync::Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let mut routes = inner.routes();
        if routes.closed {
            return;
        }
        routes.expire(tokio::time::Instant::now());
    }
}

fn spawn_io<R, W>(r: R, w: W, config: &ClientConfig) -> (Arc<Inner>, tokio::task::JoinHandle<()>)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: outbox::FrameWrite + Unpin + 'static,
{
    let out = Arc::new(Outbox::new(w));
    let inner = Arc::new(Inner {
        out: out.clone(),
        queued: Arc::new(Semaphore::new(WRITE_BUDGET)),
        routes: Mutex::new(Routes::default()),
        next_id: AtomicU64::new(1),
        request_timeout: config.request_timeout,
        rate_limit_max_wait: config.rate_limit_max_wait,
        backoffs: AtomicU64::new(0),
        pacer: Pacer::default(),
        creds: Mutex::new(None),
        max_frame: std::sync::atomic::AtomicUsize::new(rampart_proto::PREAUTH_MAX_FRAME),
        expires_at_ms: AtomicU64::new(0),
        reauth_running: std::sync::atomic::AtomicBool::new(false),
        last_scope: Mutex::new(None),
    });
    let writer = tokio::spawn(outbox::writer(out));
    tokio::spawn(reader(r, Arc::downgrade(&inner)));
    tokio::spawn(expire_overdue(
        Arc::downgrade(&inner),
        sweep_every(config.request_timeout),
    ));
    if !config.keepalive.is_zero() {
        tokio::spawn(keepalive(Arc::downgrade(&inner), config.keepalive));
    }
    (inner, writer)
}

/// Sends PING every `every` while the client lives and its connection
/// answers: servers close connections that send nothing and hold no
/// subscription (Rampart's `idle_timeout_ms`, 5 minutes by default).
async fn keepalive(inner: std::sync::Weak<Inner>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(inner) = inner.upgrade() else { return };
        if request_once(&inner, Message::Ping, 1).await.is_err() && inner.routes().closed {
            return;
        }
    }
}

fn nack_error(m: &rampart_proto::Nack) -> ClientError {
    ClientError::Nack {
        code: m.code,
        message: m.message.clone(),
        retry_after: (m.retry_after_ms > 0).then(|| Duration::from_millis(m.retry_after_ms.into())),
    }
}

async fn reader<R: AsyncRead + Unpin>(mut r: R, inner: std::sync::Weak<Inner>) {
    let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let end: ClientError = 'read: loop {
        loop {
            let frame = match decoder.decode(&mut buf) {
                Ok(Some(d)) => match d.frame {
                    Ok(f) => f,
                    Err(e) => break 'read ClientError::Protocol(e.to_string()),
                },
                Ok(None) => break,
                Err(e) => break 'read ClientError::Protocol(e.to_string()),
            };
            let Some(inner) = inner.upgrade() else {
                return;
            };
            if let Message::EventBatch(ev) = frame.msg {
                let sid = ev.subscription_id;
                let sink = inner.routes().subscriptions.get(&sid).cloned();
                if let Some(sink) = sink {
                    let cost = (ev.entries.len() + 32).min(SUBSCRIPTION_BUDGET) as u32;
                    let delivered = match sink.budget.clone().acquire_many_owned(cost).await {
                        Ok(permit) => sink.tx.send((ev, permit)).await.is_ok(),
                        Err(_) => false,
                    };
                    if !delivered {
                        inner.routes().subscriptions.remove(&sid);
                    }
                }
                continue;
            }
            // The server ended a subscription (id 0): finish its stream.
            if let (0, Message::Unsubscribe(u)) = (frame.id, &frame.msg) {
                inner.routes().subscriptions.remove(&u.subscription_id);
                continue;
            }
            if let Message::AuthRequired(a) = &frame.msg {
                match a.reason {
                    ReauthReason::Expiring | ReauthReason::Expired => {
                        reauthenticate_in_background(inner.clone());
                    }
                    _ => {
                        let mut routes = inner.routes();
                        if routes.async_error.is_none() {
                            routes.async_error = Some(ClientError::Nack {
                                code: ErrorCode::UNAUTHORIZED,
                                message: a.message.clone(),
                                retry_after: None,
                            });
                        }
                    }
                }
                continue;
            }
            route(&inner, frame);
        }
        if buf.capacity() - buf.len() < 8 * 1024 {
            buf.reserve(64 * 1024);
        }
        match r.read_buf(&mut buf).await {
            Ok(0) => break ClientError::Closed,
            Ok(_) => {}
            Err(e) => break ClientError::Connect(e.to_string()),
        }
    };
    if let Some(inner) = inner.upgrade() {
        let mut routes = inner.routes();
        routes.closed = true;
        for (_, p) in routes.pending.drain() {
            let tx = match p {
                Pending::Reply { tx, .. } | Pending::Subscribe { tx, .. } => tx,
            };
            let _ = tx.send(Err(match &end {
                ClientError::Protocol(m) => ClientError::Protocol(m.clone()),
                _ => ClientError::Closed,
            }));
        }
        routes.subscriptions.clear();
    }
    debug!(reason = %end, "connection ended");
}

fn route(inner: &Inner, frame: Frame) {
    let mut routes = inner.routes();
    let Some(p) = routes.pending.remove(&frame.id) else {
        if let Message::Nack(n) = &frame.msg {
            debug!(code = n.code.0, "request refused");
            if routes.async_error.is_none() {
                routes.async_error = Some(nack_error(n));
            }
        }
        return;
    };
    match p {
        Pending::Subscribe { tx, events } => {
            if let Message::Subscribed(s) = &frame.msg {
                routes.subscriptions.insert(s.subscription_id, events);
            }
            let _ = tx.send(reply_of(frame));
        }
        Pending::Reply {
            tx,
            acks_left,
            acked,
            weakest,
        } => match &frame.msg {
            Message::Ack(a) if acks_left > 1 => {
                routes.pending.insert(
                    frame.id,
                    Pending::Reply {
                        tx,
                        acks_left: acks_left - 1,
                        acked: acked + a.count,
                        weakest: Some(weaker(weakest, a.durability)),
                    },
                );
            }
            Message::Ack(a) => {
                let total = Ack::published(acked + a.count, weaker(weakest, a.durability));
                let _ = tx.send(Ok(Frame::new(frame.id, total)));
            }
            // Refused after part of it was taken: sending it again would
            // repeat that part, so the refusal is final (no retry-after).
            Message::Nack(n) if acked > 0 => {
                let _ = tx.send(Err(ClientError::Nack {
                    code: n.code,
                    message: format!(
                        "{} (after {acked} message(s) of the request were acknowledged)",
                        n.message
                    ),
                    retry_after: None,
                }));
            }
            _ => {
                let _ = tx.send(reply_of(frame));
            }
        },
    }
}

/// The weaker of the durability so far (if any) and a new ACK's.
fn weaker(so_far: Option<Durability>, next: Durability) -> Durability {
    so_far.map_or(next, |d| d.min(next))
}

/// The [`Acked`] of a reply that must be an ACK.
fn acked_of(frame: Frame) -> Result<Acked, ClientError> {
    match frame.msg {
        Message::Ack(a) => Ok(Acked {
            count: a.count,
            durability: a.durability,
        }),
        _ => Err(ClientError::Protocol("expected ACK".into())),
    }
}

fn reply_of(frame: Frame) -> Reply {
    match &frame.msg {
        Message::Nack(n) => Err(nack_error(n)),
        _ => Ok(frame),
    }
}

/// Builds a CONSUME body from the arguments of [`Client::consume`].
fn consume_message(
    tenant: &str,
    namespace: &str,
    stream: &str,
    consumer: &str,
    options: &ConsumeOptions,
) -> Result<Consume, ClientError> {
    let ack_wait_ms = match options.ack_wait {
        Duration::ZERO => 0,
        // At least 1 ms: a sub-millisecond wait must not turn into 0, which
        // would mean the server's default.
        d => d.as_millis().clamp(1, u128::from(u32::MAX)) as u32,
    };
    Ok(Consume {
        tenant: TenantId::parse(tenant)?,
        namespace: NamespaceName::parse(namespace)?,
        stream: StreamName::parse(stream)?,
        consumer: ConsumerName::parse(consumer)?,
        start: options.start,
        max_in_flight: options.max_in_flight,
        ack_wait_ms,
    })
}

/// The server's acknowledgement of a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Acked {
    /// Messages acknowledged (0 for [`AckMode::None`], which waits for no
    /// ACK).
    pub count: u32,
    /// How durable they are: [`Durability::Memory`] on a live stream,
    /// [`Durability::Written`] or [`Durability::Fsynced`] on a durable one;
    /// [`Durability::None`] for [`AckMode::None`]. When several ACKs answer
    /// one publish ([`AckMode::Message`] on a batch), the weakest.
    pub durability: Durability,
}

/// The acknowledgement of a [`Client::publish_async`] on its way: a future
/// that resolves to the publish's [`Acked`], or to why it failed (its NACK,
/// [`ClientError::Timeout`], or [`ClientError::Closed`] when the connection
/// ends first). Dropping it leaves the publish in flight and forgets its
/// answer.
#[must_use = "a PendingAck does nothing unless awaited; drop it to ignore the answer"]
pub struct PendingAck {
    rx: oneshot::Receiver<Reply>,
}

impl std::fmt::Debug for PendingAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingAck").finish_non_exhaustive()
    }
}

impl std::future::Future for PendingAck {
    type Output = Result<Acked, ClientError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx).poll(cx).map(|r| match r {
            Ok(reply) => reply.and_then(acked_of),
            Err(_) => Err(ClientError::Closed),
        })
    }
}

/// How [`Client::consume`] creates a durable consumer. All three apply
/// only when the call creates the consumer; an existing consumer keeps its
/// position and settings.
///
/// Not `#[non_exhaustive]`, so that callers can write a struct literal
/// (`ConsumeOptions { start, ..Default::default() }`); the `with_*` methods
/// do the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumeOptions {
    /// Where the consumer starts. Default: [`StartAt::Earliest`].
    pub start: StartAt,
    /// Most messages of the consumer delivered and not yet acknowledged;
    /// 0 (the default) = the server's default.
    pub max_in_flight: u32,
    /// How long after delivery an unacknowledged message is delivered
    /// again; [`Duration::ZERO`] (the default) = the server's default.
    /// Sent in whole milliseconds.
    pub ack_wait: Duration,
}

impl Default for ConsumeOptions {
    fn default() -> Self {
        Self {
            start: StartAt::Earliest,
            max_in_flight: 0,
            ack_wait: Duration::ZERO,
        }
    }
}

impl ConsumeOptions {
    pub fn with_start(mut self, start: StartAt) -> Self {
        self.start = start;
        self
    }

    pub fn with_max_in_flight(mut self, max_in_flight: u32) -> Self {
        self.max_in_flight = max_in_flight;
        self
    }

    pub fn with_ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = ack_wait;
        self
    }
}

/// One message received on a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Position of the message in its stream: on a durable stream, its
    /// offset (what [`Subscription::ack`] takes).
    pub seq: u64,
    pub payload: Bytes,
}

/// The receiving end of a subscription. Yields events in stream order;
/// implements [`futures_core::Stream`]. Dropping it unsubscribes.
pub struct Subscription {
    id: u64,
    rx: mpsc::Receiver<Delivered>,
    inner: Arc<Inner>,
    current: VecDeque<Event>,
    next_seq: u64,
    missed: u64,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .field("missed", &self.missed)
            .finish()
    }
}

impl Subscription {
    /// The server-assigned id, meaningful only on this connection.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Messages the server dropped for this subscriber under the
    /// `drop_oldest` policy, so far.
    pub fn missed(&self) -> u64 {
        self.missed
    }

    fn absorb(&mut self, b: EventBatch) {
        self.missed += b.missed;
        for (i, payload) in b.payloads().enumerate() {
            self.current.push_back(Event {
                seq: b.first_seq + i as u64,
                payload,
            });
        }
        self.next_seq = b.first_seq + u64::from(b.count);
    }

    /// The next message, or `None` when the connection closed.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.current.pop_front() {
                return Some(e);
            }
            let (b, _budget) = self.rx.recv().await?;
            self.absorb(b);
        }
    }

    /// The next whole batch as the server sent it (fewer allocations than
    /// [`Subscription::next`] for high-rate consumers).
    pub async fn next_batch(&mut self) -> Option<EventBatch> {
        if !self.current.is_empty() {
            let mut e = rampart_proto::EntriesBuilder::new();
            let first = self.current.front().map_or(0, |x| x.seq);
            for ev in self.current.drain(..) {
                e.push(&ev.payload);
            }
            let (count, entries) = e.finish();
            return Some(EventBatch {
                subscription_id: self.id,
                missed: 0,
                first_seq: first,
                count,
                entries,
            });
        }
        let (b, _budget) = self.rx.recv().await?;
        self.missed += b.missed;
        self.next_seq = b.first_seq + u64::from(b.count);
        Some(b)
    }

    /// Acknowledges messages of a consumer subscription (from
    /// [`Client::consume`]) by offset ([`Event::seq`]), so they are not
    /// delivered again. Returns how many were newly acknowledged: offsets
    /// already acknowledged, never delivered to this consumer, or repeated
    /// are not counted.
    ///
    /// Events keep arriving while the acknowledgement is in flight. Its
    /// reply is read by the same connection reader that fills this
    /// subscription's buffer (1024 batches, 8 MiB), so keep the consumer's
    /// `max_in_flight` messages within it, or the reply waits behind
    /// events nobody reads until the request times out.
    ///
    /// A plain subscription gets NACK 404. A long list goes out in several
    /// frames to stay under the server's frame limit; if one of them fails,
    /// those before it have taken effect.
    pub async fn ack(&self, offsets: &[u64]) -> Result<u32, ClientError> {
        let per_frame = offsets_per_frame(self.inner.max_frame.load(Ordering::Acquire));
        let mut rest = offsets;
        let mut acked = 0u32;
        // At least one frame, even for no offsets, so that the server
        // checks the subscription.
        loop {
            let (chunk, more) = rest.split_at(rest.len().min(per_frame));
            let msg = Message::ConsumerAck(ConsumerAck {
                subscription_id: self.id,
                offsets: chunk.to_vec(),
            });
            let reply = request(&self.inner, msg, 1).await?;
            acked = acked.saturating_add(acked_of(reply)?.count);
            if more.is_empty() {
                return Ok(acked);
            }
            rest = more;
        }
    }

    /// Ends the subscription and waits for the server to confirm. On a
    /// consumer subscription this leaves the consumer: messages delivered
    /// here and not acknowledged go to other members.
    pub async fn unsubscribe(self) -> Result<(), ClientError> {
        let id = self.id;
        self.inner.routes().subscriptions.remove(&id);
        request(
            &self.inner,
            Message::Unsubscribe(Unsubscribe {
                subscription_id: id,
            }),
            1,
        )
        .await
        .map(|_| ())
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let removed = self.inner.routes().subscriptions.remove(&self.id).is_some();
        if removed {
            let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
            let frame = Frame::new(
                id,
                Unsubscribe {
                    subscription_id: self.id,
                },
            );
            let _ = self.inner.out.put(frame.to_bytes(), None, false);
        }
    }
}

impl futures_core::Stream for Subscription {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        loop {
            if let Some(e) = self.current.pop_front() {
                return Poll::Ready(Some(e));
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some((b, _budget))) => self.absorb(b),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Most offsets a CONSUMER_ACK may carry under a frame limit of
/// `max_frame` bytes (header, subscription id and count take 28).
fn offsets_per_frame(max_frame: usize) -> usize {
    (max_frame.saturating_sub(HEADER_LEN + 12) / 8).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("quic://localhost:7400").unwrap(),
            (Transport::Quic, "localhost".into(), 7400)
        );
        assert_eq!(
            parse_url("tls://127.0.0.1:7401/").unwrap(),
            (Transport::Tcp, "127.0.0.1".into(), 7401)
        );
        assert_eq!(
            parse_url("tls://[::1]:7401").unwrap(),
            (Transport::Tcp, "::1".into(), 7401)
        );
        assert!(parse_url("http://x:1").is_err());
        assert!(parse_url("tls://x").is_err());
        assert!(parse_url("tls://:1").is_err());
    }

    /// Over loopback, which carries 64 KiB datagrams, the client's QUIC
    /// connections find [`QUIC_MAX_UDP_PAYLOAD`] and keep it under a bulk
    /// send: every segmentation-offload send of full datagrams fits what
    /// the kernel takes in one (see the constant).
    #[tokio::test]
    async fn quic_finds_and_keeps_large_datagrams_on_loopback() {
        let key = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
            .expect("self-signed certificate");
        let cert = key.cert.der().clone();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.clone()],
                rustls_pki_types::PrivateKeyDer::Pkcs8(key.key_pair.serialize_der().into()),
            )
            .expect("server certificate");
        // The peer: an endpoint like the client's own (a large receive
        // buffer, datagrams up to the bound accepted) that also accepts.
        let server = quic_endpoint("127.0.0.1:0".parse().expect("address")).expect("endpoint");
        server.set_server_config(Some(quinn::ServerConfig::with_crypto(Arc::new(
            quinn::crypto::rustls::QuicServerConfig::try_from(tls).expect("QUIC server"),
        ))));
        let addr = server.local_addr().expect("address");
        // The peer reads everything sent on the stream it accepts.
        let reader = tokio::spawn(async move {
            let conn = server
                .accept()
                .await
                .expect("incoming")
                .await
                .expect("handshake");
            let (_send, mut recv) = conn.accept_bi().await.expect("stream");
            let mut got = 0;
            while let Some(c) = recv.read_chunk(usize::MAX, true).await.expect("read") {
                got += c.bytes.len();
            }
            (got, conn, server)
        });

        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).expect("root");
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut qc = quinn::ClientConfig::new(Arc::new(
            QuicClientConfig::try_from(tls).expect("QUIC client"),
        ));
        qc.transport_config(Arc::new(quic_transport()));
        let client = quic_endpoint("127.0.0.1:0".parse().expect("address")).expect("endpoint");
        let conn = client
            .connect_with(qc, addr, "localhost")
            .expect("connect")
            .await
            .expect("handshake");
        let (mut send, _recv) = conn.open_bi().await.expect("stream");
        let chunk = Bytes::from(vec![0x5a; 256 << 10]);
        let mut sent = 0;
        let mtu = || conn.stats().path.current_mtu;
        // Discovery runs alongside the data: send until it ends within
        // quinn's last step (20 bytes) of the bound, or for 5 s at most (a
        // lost probe can end it lower).
        let discovering = std::time::Instant::now();
        while mtu() < QUIC_MAX_UDP_PAYLOAD - 20 && discovering.elapsed() < Duration::from_secs(5) {
            send.write_chunk(chunk.clone()).await.expect("write");
            sent += chunk.len();
        }
        let found = mtu();
        assert!(found > 1452, "no larger datagrams: {:?}", conn.stats().path);
        // A bulk send at that size, 16 MiB: with this much queued, quinn
        // hands the kernel its sends in full batches.
        for _ in 0..64 {
            send.write_chunk(chunk.clone()).await.expect("write");
            sent += chunk.len();
        }
        send.finish().expect("finish");
        let (got, server_conn, server) = reader.await.expect("reader");
        assert_eq!(got, sent);
        let path = conn.stats().path;
        assert_eq!(
            (path.current_mtu, path.black_holes_detected),
            (found, 0),
            "{path:?}"
        );
        server_conn.close(0u32.into(), b"done");
        server.wait_idle().await;
    }

    fn test_inner() -> Inner {
        Inner {
            out: Arc::new(Outbox::new(tokio::io::sink())),
            queued: Arc::new(Semaphore::new(WRITE_BUDGET)),
            routes: Mutex::new(Routes::default()),
            next_id: AtomicU64::new(1),
            request_timeout: Duration::from_secs(1),
            rate_limit_max_wait: Duration::from_secs(30),
            backoffs: AtomicU64::new(0),
            pacer: Pacer::default(),
            creds: Mutex::new(None),
            max_frame: std::sync::atomic::AtomicUsize::new(DEFAULT_MAX_FRAME),
            expires_at_ms: AtomicU64::new(0),
            reauth_running: std::sync::atomic::AtomicBool::new(false),
            last_scope: Mutex::new(None),
        }
    }

    #[test]
    fn a_publish_to_the_last_stream_reuses_its_names_and_others_are_parsed() {
        let inner = test_inner();
        let ptrs = |(t, n, s): &StreamScope| {
            (
                t.as_str().as_ptr(),
                n.as_str().as_ptr(),
                s.as_str().as_ptr(),
            )
        };
        let a = inner.stream_scope("acme", "prod", "orders").unwrap();
        let b = inner.stream_scope("acme", "prod", "orders").unwrap();
        assert_eq!(ptrs(&a), ptrs(&b), "the same names again");
        let c = inner.stream_scope("acme", "prod", "invoices").unwrap();
        assert_eq!(c.2.as_str(), "invoices");
        assert_ne!(ptrs(&c), ptrs(&a));
        // A bad name is refused and leaves the last scope as it was.
        assert!(matches!(
            inner.stream_scope("acme", "prod", "Orders"),
            Err(ClientError::InvalidArgument(_))
        ));
        let d = inner.stream_scope("acme", "prod", "invoices").unwrap();
        assert_eq!(ptrs(&d), ptrs(&c));
        let e = inner.stream_scope("acme", "prod", "orders").unwrap();
        assert_eq!(e, a);
    }

    #[test]
    fn acks_of_one_publish_report_the_weakest_durability() {
        let inner = test_inner();
        let (tx, mut rx) = oneshot::channel();
        inner.routes().pending.insert(
            7,
            Pending::Reply {
                tx,
                acks_left: 3,
                acked: 0,
                weakest: None,
            },
        );
        for d in [
            Durability::Fsynced,
            Durability::Written,
            Durability::Fsynced,
        ] {
            assert!(rx.try_recv().is_err(), "answered before the last ACK");
            route(&inner, Frame::new(7, Ack::published(1, d)));
        }
        let reply = rx.try_recv().expect("answered").expect("an ACK");
        assert_eq!(
            acked_of(reply).expect("ACK"),
            Acked {
                count: 3,
                durability: Durability::Written
            }
        );
        assert!(inner.routes().pending.is_empty());
    }

    #[test]
    fn overdue_requests_time_out_and_answered_ones_are_forgotten() {
        let inner = test_inner();
        let reply = |tx| Pending::Reply {
            tx,
            acks_left: 1,
            acked: 0,
            weakest: None,
        };
        let (tx1, mut rx1) = oneshot::channel();
        let (tx2, mut rx2) = oneshot::channel();
        let start = tokio::time::Instant::now();
        {
            let mut routes = inner.routes();
            routes.pending.insert(1, reply(tx1));
            routes.pending.insert(2, reply(tx2));
            routes.expect_reply_by(1, Duration::from_secs(1));
            routes.expect_reply_by(2, Duration::from_secs(1));
            // Already answered (or never sent): no deadline.
            routes.expect_reply_by(3, Duration::from_secs(1));
            assert_eq!(routes.deadlines.len(), 2);
        }
        route(&inner, Frame::new(2, Message::Pong));
        assert!(rx2.try_recv().expect("answered").is_ok());
        // Not due yet: nothing happens.
        inner.routes().expire(start);
        assert!(rx1.try_recv().is_err());
        inner.routes().expire(start + Duration::from_secs(2));
        match rx1.try_recv().expect("timed out") {
            Err(ClientError::Timeout("reply")) => {}
            other => panic!("{other:?}"),
        }
        let routes = inner.routes();
        assert!(routes.pending.is_empty() && routes.deadlines.is_empty());
    }

    #[test]
    fn deadlines_of_answered_requests_do_not_pile_up() {
        let inner = test_inner();
        let mut receivers = Vec::new();
        for id in 0..10_000u64 {
            let (tx, rx) = oneshot::channel();
            receivers.push(rx);
            let mut routes = inner.routes();
            routes.pending.insert(
                id,
                Pending::Reply {
                    tx,
                    acks_left: 1,
                    acked: 0,
                    weakest: None,
                },
            );
            routes.expect_reply_by(id, Duration::from_secs(30));
            drop(routes);
            // Every request but the first is answered at once, so the
            // first deadline holds the queue's front for the whole run.
            if id > 0 {
                route(&inner, Frame::new(id, Message::Pong));
            }
        }
        let routes = inner.routes();
        assert_eq!(routes.pending.len(), 1);
        // Compaction keeps at most twice the pending requests plus 64.
        assert!(
            routes.deadlines.len() <= 2 + 64 + 1,
            "{}",
            routes.deadlines.len()
        );
        assert_eq!(routes.deadlines.front().map(|d| d.1), Some(0));
    }

    #[test]
    fn a_single_ack_keeps_its_durability() {
        let inner = test_inner();
        let (tx, mut rx) = oneshot::channel();
        inner.routes().pending.insert(
            2,
            Pending::Reply {
                tx,
                acks_left: 1,
                acked: 0,
                weakest: None,
            },
        );
        route(
            &inner,
            Frame::new(2, Ack::published(4, Durability::Fsynced)),
        );
        let acked = acked_of(rx.try_recv().expect("answered").expect("ACK")).expect("ACK");
        assert_eq!((acked.count, acked.durability), (4, Durability::Fsynced));
        assert!(acked_of(Frame::new(2, Message::Pong)).is_err());
    }

    #[test]
    fn consume_options_become_a_consume_frame() {
        let opts = ConsumeOptions::default();
        assert_eq!(opts.start, StartAt::Earliest);
        assert_eq!((opts.max_in_flight, opts.ack_wait), (0, Duration::ZERO));

        let c = consume_message("acme", "prod", "orders", "billing", &opts).expect("valid");
        assert_eq!(c.consumer.as_str(), "billing");
        assert_eq!(
            (c.start, c.max_in_flight, c.ack_wait_ms),
            (StartAt::Earliest, 0, 0)
        );

        let opts = ConsumeOptions::default()
            .with_start(StartAt::Offset(9))
            .with_max_in_flight(64)
            .with_ack_wait(Duration::from_secs(30));
        let c = consume_message("acme", "prod", "orders", "billing", &opts).expect("valid");
        assert_eq!(
            (c.start, c.max_in_flight, c.ack_wait_ms),
            (StartAt::Offset(9), 64, 30_000)
        );
        // The frame the client sends decodes to the same request.
        let f = Frame::new(3, c);
        let back = rampart_proto::decode_exact(&f.to_bytes(), DEFAULT_MAX_FRAME).expect("decodes");
        assert_eq!(back, f);

        let wait_ms = |d| {
            consume_message(
                "acme",
                "prod",
                "orders",
                "billing",
                &ConsumeOptions::default().with_ack_wait(d),
            )
            .expect("valid")
            .ack_wait_ms
        };
        assert_eq!(wait_ms(Duration::from_micros(10)), 1);
        assert_eq!(wait_ms(Duration::from_millis(1500)), 1500);
        assert_eq!(wait_ms(Duration::from_secs(u64::MAX)), u32::MAX);
    }

    #[test]
    fn consume_refuses_bad_names_before_sending() {
        let opts = ConsumeOptions::default();
        for (t, n, s, c) in [
            ("acme", "prod", "orders", "Billing"),
            ("acme", "prod", "orders", ""),
            ("acme", "prod", "Orders", "billing"),
        ] {
            assert!(matches!(
                consume_message(t, n, s, c, &opts),
                Err(ClientError::InvalidArgument(_))
            ));
        }
    }

    #[test]
    fn consumer_acks_fit_the_frame_limit() {
        for max in [
            rampart_proto::PREAUTH_MAX_FRAME,
            64 * 1024,
            DEFAULT_MAX_FRAME,
        ] {
            let n = offsets_per_frame(max);
            let frame = |n: usize| {
                Frame::new(
                    u64::MAX,
                    ConsumerAck {
                        subscription_id: u64::MAX,
                        offsets: vec![u64::MAX; n],
                    },
                )
                .to_bytes()
                .len()
            };
            assert!(frame(n) <= max, "{n} offsets overflow {max}");
            assert!(frame(n + 1) > max, "{n} offsets waste room under {max}");
        }
        assert_eq!(offsets_per_frame(0), 1);
    }

    /// The server end of a fake connection: reads the client's frames and
    /// answers them as `answer` says.
    struct FakeServer {
        io: tokio::io::DuplexStream,
        buf: BytesMut,
    }

    impl FakeServer {
        async fn next(&mut self) -> Frame {
            let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
            loop {
                if let Some(d) = dec.decode(&mut self.buf).expect("decodes") {
                    return d.frame.expect("a frame");
                }
                let n = self.io.read_buf(&mut self.buf).await.expect("reads");
                assert!(n > 0, "client closed");
            }
        }

        async fn answer(&mut self, f: Frame) {
            self.io.write_all(&f.to_bytes()).await.expect("writes");
        }
    }

    fn fake(max_wait: Duration) -> (Client, FakeServer) {
        fake_with(ClientConfig::default().with_rate_limit_max_wait(max_wait))
    }

    fn fake_with(config: ClientConfig) -> (Client, FakeServer) {
        let (client_io, server_io) = tokio::io::duplex(1 << 20);
        let (r, w) = tokio::io::split(client_io);
        let (inner, writer) = spawn_io(r, w, &config);
        let client = Client {
            inner,
            tenant: TenantId::parse("acme").expect("tenant"),
            principal: "test".into(),
            transport: Transport::Tcp,
            _endpoint: None,
            quic: None,
            writer: Some(writer),
        };
        let server = FakeServer {
            io: server_io,
            buf: BytesMut::new(),
        };
        (client, server)
    }

    #[tokio::test]
    async fn a_publisher_faster_than_its_connection_waits_for_room() {
        let (client, server) = fake(Duration::ZERO);
        client
            .inner
            .max_frame
            .store(DEFAULT_MAX_FRAME, Ordering::Relaxed);
        // The server reads nothing: the pipe fills, then the write budget.
        let payload = Bytes::from(vec![0u8; 256 * 1024]);
        let mut queued = 0usize;
        loop {
            let publish = client.publish_with("acme", "ns", "s", payload.clone(), AckMode::None);
            match tokio::time::timeout(Duration::from_millis(300), publish).await {
                Ok(r) => {
                    r.expect("queued");
                    queued += 1;
                }
                Err(_) => break,
            }
            assert!(
                queued < 200,
                "{queued} frames of 256 KiB queued without a wait"
            );
        }
        // The budget, plus what the pipe (1 MiB) and the writer's hands hold.
        assert!(
            queued * payload.len() <= WRITE_BUDGET + 2 * 1024 * 1024,
            "{queued} frames of 256 KiB queued"
        );
        assert!(
            queued * payload.len() >= WRITE_BUDGET / 2,
            "{queued} frames queued"
        );
        drop(server);
    }

    #[tokio::test]
    async fn unanswered_requests_time_out_whether_queued_at_once_or_after_a_wait() {
        let mut config = ClientConfig::default().with_rate_limit_max_wait(Duration::ZERO);
        config.request_timeout = Duration::from_millis(200);
        let (client, mut server) = fake_with(config);
        client
            .inner
            .max_frame
            .store(DEFAULT_MAX_FRAME, Ordering::Relaxed);
        let bound = Duration::from_secs(20);
        // Room at once: the request is registered and its deadline started
        // under one lock. The server reads it and never answers.
        let ping = tokio::time::timeout(bound, client.ping()).await;
        assert!(
            matches!(ping, Ok(Err(ClientError::Timeout("reply")))),
            "{ping:?}"
        );
        assert!(matches!(server.next().await.msg, Message::Ping));
        // No room: with the whole write budget taken (as frames not yet
        // written would hold it), the next request waits for room before
        // it is registered with a deadline and queued.
        let held = client
            .inner
            .queued
            .clone()
            .try_acquire_many_owned(WRITE_BUDGET as u32)
            .expect("the budget is free");
        let waiting = {
            let c = client.inner.clone();
            tokio::spawn(async move { request_once(&c, Message::Ping, 1).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiting.is_finished(), "the ping waits for room");
        drop(held);
        let sent = tokio::time::timeout(bound, server.next())
            .await
            .expect("the ping is sent once there is room");
        assert!(matches!(sent.msg, Message::Ping));
        let late = tokio::time::timeout(bound, waiting)
            .await
            .expect("the ping ends")
            .expect("joins");
        assert!(
            matches!(late, Err(ClientError::Timeout("reply"))),
            "{late:?}"
        );
        assert!(client.inner.routes().pending.is_empty());
    }

    fn too_many(retry_after_ms: u32) -> rampart_proto::Nack {
        rampart_proto::Nack {
            code: ErrorCode::TOO_MANY_REQUESTS,
            retry_after_ms,
            message: "publish_msgs_per_sec rate limit reached".into(),
        }
    }

    #[tokio::test]
    async fn a_rate_limited_publish_is_sent_again_after_the_wait() {
        let (client, mut server) = fake(Duration::from_secs(30));
        let started = std::time::Instant::now();
        let publish = tokio::spawn(async move {
            let r = client.publish("acme", "prod", "orders", "m1").await;
            (r, client)
        });
        let mut ids = Vec::new();
        for _ in 0..2 {
            let f = server.next().await;
            ids.push(f.id);
            server.answer(Frame::new(f.id, too_many(30))).await;
        }
        let f = server.next().await;
        ids.push(f.id);
        let Message::Publish(p) = &f.msg else {
            panic!("expected PUBLISH, got {:?}", f.msg)
        };
        assert_eq!(&p.payload[..], b"m1");
        server
            .answer(Frame::new(f.id, Ack::published(1, Durability::Memory)))
            .await;
        let (r, client) = publish.await.expect("task");
        assert_eq!(r.expect("published").count, 1);
        assert!(started.elapsed() >= Duration::from_millis(60));
        assert_eq!(client.rate_limit_backoffs(), 2);
        ids.dedup();
        assert_eq!(ids.len(), 3, "every attempt has its own id");
    }

    #[tokio::test]
    async fn with_retrying_off_the_429_comes_back_at_once() {
        let (client, mut server) = fake(Duration::ZERO);
        let get = tokio::spawn(async move {
            let r = client.cache_get("acme", "prod", "sessions", "k").await;
            (r, client)
        });
        let f = server.next().await;
        server.answer(Frame::new(f.id, too_many(250))).await;
        let (r, client) = get.await.expect("task");
        match r {
            Err(ClientError::Nack {
                code, retry_after, ..
            }) => {
                assert_eq!(code, ErrorCode::TOO_MANY_REQUESTS);
                assert_eq!(retry_after, Some(Duration::from_millis(250)));
            }
            other => panic!("expected the 429, got {other:?}"),
        }
        assert_eq!(client.rate_limit_backoffs(), 0);
    }

    #[tokio::test]
    async fn waits_stop_at_the_bound() {
        let (client, mut server) = fake(Duration::from_millis(50));
        let publish = tokio::spawn(async move {
            let r = client
                .publish_batch("acme", "prod", "orders", ["a", "b"])
                .await;
            (r, client)
        });
        // 30 ms fits the 50 ms bound; 30 more would not.
        for _ in 0..2 {
            let f = server.next().await;
            server.answer(Frame::new(f.id, too_many(30))).await;
        }
        let (r, client) = publish.await.expect("task");
        assert_eq!(
            r.expect_err("refused").code(),
            Some(ErrorCode::TOO_MANY_REQUESTS)
        );
        assert_eq!(client.rate_limit_backoffs(), 1);
    }

    #[tokio::test]
    async fn quota_refusals_and_part_taken_batches_are_final() {
        let (client, mut server) = fake(Duration::from_secs(30));
        let client = Arc::new(client);
        // 429 without a wait (a quota): final.
        let c = client.clone();
        let sub = tokio::spawn(async move { c.subscribe("acme", "prod", "orders").await });
        let f = server.next().await;
        server.answer(Frame::new(f.id, too_many(0))).await;
        let e = sub.await.expect("task").expect_err("refused");
        assert_eq!(e.code(), Some(ErrorCode::TOO_MANY_REQUESTS));

        // One message of three acknowledged, then 429: sending the batch
        // again would repeat that one.
        let c = client.clone();
        let batch = tokio::spawn(async move {
            c.publish_batch_with("acme", "prod", "orders", ["a", "b", "c"], AckMode::Message)
                .await
        });
        let f = server.next().await;
        server
            .answer(Frame::new(f.id, Ack::published(1, Durability::Memory)))
            .await;
        server.answer(Frame::new(f.id, too_many(10))).await;
        match batch.await.expect("task") {
            Err(ClientError::Nack {
                code,
                retry_after,
                message,
            }) => {
                assert_eq!(code, ErrorCode::TOO_MANY_REQUESTS);
                assert_eq!(retry_after, None);
                assert!(message.contains("after 1 message"), "{message}");
            }
            other => panic!("expected a final 429, got {other:?}"),
        }
        assert_eq!(client.rate_limit_backoffs(), 0);
    }

    #[tokio::test]
    async fn a_rate_limited_subscribe_is_sent_again() {
        let (client, mut server) = fake(Duration::from_secs(30));
        let sub = tokio::spawn(async move {
            let s = client.subscribe("acme", "prod", "orders").await;
            (s, client)
        });
        let f = server.next().await;
        server.answer(Frame::new(f.id, too_many(5))).await;
        let f = server.next().await;
        assert!(matches!(f.msg, Message::Subscribe(_)));
        server
            .answer(Frame::new(
                f.id,
                rampart_proto::Subscribed { subscription_id: 9 },
            ))
            .await;
        let (s, client) = sub.await.expect("task");
        let mut s = s.expect("subscribed");
        assert_eq!(s.id(), 9);
        assert_eq!(client.rate_limit_backoffs(), 1);
        // Events reach the subscription registered by the second attempt.
        let mut e = rampart_proto::EntriesBuilder::new();
        e.push(b"hello");
        let (count, entries) = e.finish();
        server
            .answer(Frame::new(
                0,
                EventBatch {
                    subscription_id: 9,
                    missed: 0,
                    first_seq: 0,
                    count,
                    entries,
                },
            ))
            .await;
        let ev = tokio::time::timeout(Duration::from_secs(5), s.next())
            .await
            .expect("in time")
            .expect("an event");
        assert_eq!(&ev.payload[..], b"hello");
    }

    #[test]
    fn error_codes_survive() {
        let e = nack_error(&rampart_proto::Nack {
            code: ErrorCode::FORBIDDEN,
            retry_after_ms: 0,
            message: "forbidden".into(),
        });
        assert_eq!(e.code(), Some(ErrorCode::FORBIDDEN));
    }
}
