//! One client connection, whatever the transport: a reader loop that
//! decodes and dispatches frames, a writer task that coalesces replies and
//! events into large writes, and one delivery task per subscription.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use rampart_broker::{Stream, Subscription};
use rampart_identity::Principal;
use rampart_proto::{
    Ack, AckMode, AuthMethod, AuthOk, CacheValue, EntriesBuilder, ErrorCode, Frame, FrameDecoder,
    Message, SharedEvents, StartAt, StreamPath, Subscribed, TenantId, PREAUTH_MAX_FRAME,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::access::{access, authorize};
use crate::error::{frame_error, OpError};
use crate::session::{nack, Handshake, Step};
use crate::Shared;

/// Bytes the writer gathers before one write call.
const WRITE_COALESCE: usize = 256 * 1024;
/// Bytes of batches a delivery task hands the writer at a time.
const DELIVERY_CHUNK: usize = 256 * 1024;
/// Items queued between the connection's tasks and its writer.
const WRITER_QUEUE: usize = 1024;
/// Bytes of events a connection may have queued for its writer, all
/// subscriptions together. Past it, delivery waits and the subscriber
/// queues (with their slow-consumer policy) take the pressure.
const EVENT_BUDGET: usize = 8 * 1024 * 1024;
/// Subscriptions one connection may hold.
const MAX_SUBSCRIPTIONS: usize = 1024;
/// Stream handles a connection keeps to skip the shared lookup.
const STREAM_CACHE: usize = 256;

/// Where a connection comes from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer {
    pub addr: SocketAddr,
    pub transport: &'static str,
}

enum Out {
    Frame(Frame),
    Events {
        subscription: u64,
        missed: u64,
        batches: Vec<SharedEvents>,
        /// Share of the connection's event budget, returned once encoded.
        _budget: OwnedSemaphorePermit,
    },
    Close,
}

/// Writes everything the connection sends, in order, gathering whatever is
/// queued into one buffer per write so small frames share TLS records.
async fn writer<W: AsyncWrite + Unpin>(mut w: W, mut rx: mpsc::Receiver<Out>) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut closing = false;
    while let Some(item) = rx.recv().await {
        closing |= encode(item, &mut buf);
        while !closing && buf.len() < WRITE_COALESCE {
            match rx.try_recv() {
                Ok(item) => closing |= encode(item, &mut buf),
                Err(_) => break,
            }
        }
        if w.write_all(&buf).await.is_err() || w.flush().await.is_err() {
            break;
        }
        buf.clear();
        if buf.capacity() > 4 * WRITE_COALESCE {
            buf = BytesMut::with_capacity(64 * 1024);
        }
        if closing {
            break;
        }
    }
    let _ = w.shutdown().await;
}

fn encode(item: Out, buf: &mut BytesMut) -> bool {
    match item {
        Out::Frame(f) => f.encode(buf),
        Out::Events {
            subscription,
            mut missed,
            batches,
            ..
        } => {
            for b in &batches {
                b.write_frame(buf, subscription, std::mem::take(&mut missed));
            }
        }
        Out::Close => return true,
    }
    false
}

/// Why a connection ended, for the log line.
#[derive(Debug)]
enum End {
    PeerClosed,
    ReadError,
    #[allow(dead_code)] // read through Debug in the close log line
    Refused(u16),
    AuthTimeout,
    Shutdown,
    WriterGone,
}

/// Consecutive single-message PUBLISH frames to one stream, gathered from
/// one read so they are numbered and fanned out as one batch. Order and
/// per-frame acknowledgements are unchanged.
struct Gathered {
    path: StreamPath,
    stream: Arc<Stream>,
    entries: EntriesBuilder,
    acks: Vec<(u64, AckMode)>,
}

/// Bytes gathered before a batch is published regardless.
const GATHER_LIMIT: usize = 256 * 1024;

struct Conn {
    shared: Arc<Shared>,
    event_budget: Arc<Semaphore>,
    gathered: Option<Gathered>,
    peer: Peer,
    tx: mpsc::Sender<Out>,
    principal: Option<Principal>,
    subscriptions: HashMap<u64, (Arc<Subscription>, JoinHandle<()>)>,
    next_subscription: u64,
    streams: HashMap<StreamPath, Arc<Stream>>,
}

/// Serves one connection until it ends. `deadline` bounds the whole
/// pre-authentication phase, TLS handshake included.
pub(crate) async fn serve<R, W>(
    shared: Arc<Shared>,
    mut rd: R,
    wr: W,
    peer: Peer,
    deadline: Instant,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::channel(WRITER_QUEUE);
    let writer = tokio::spawn(writer(wr, rx));
    let mut shutdown = shared.shutdown.clone();
    let mut conn = Conn {
        shared: shared.clone(),
        event_budget: Arc::new(Semaphore::new(EVENT_BUDGET)),
        gathered: None,
        peer,
        tx,
        principal: None,
        subscriptions: HashMap::new(),
        next_subscription: 1,
        streams: HashMap::new(),
    };
    let mut handshake = Handshake::new(
        shared.config.max_auth_failures,
        shared.config.max_frame_size,
    );
    let mut decoder = FrameDecoder::new(PREAUTH_MAX_FRAME);
    let mut buf = BytesMut::with_capacity(16 * 1024);
    debug!(peer = %peer.addr, transport = peer.transport, "connection open");

    let end = 'conn: loop {
        // Serve every whole frame already buffered.
        loop {
            let decoded = match decoder.decode(&mut buf) {
                Ok(Some(d)) => d,
                Ok(None) => break,
                Err(e) => {
                    debug!(peer = %peer.addr, error = %e, "closing on broken frame");
                    let _ = conn.tx.send(Out::Frame(frame_error(&e))).await;
                    break 'conn End::Refused(e.code().0);
                }
            };
            let frame = match decoded.frame {
                Ok(f) => f,
                Err(e) => {
                    if conn
                        .send(OpError::Body(e).to_frame(decoded.header.id))
                        .await
                        .is_err()
                    {
                        break 'conn End::WriterGone;
                    }
                    continue;
                }
            };
            let result = if conn.principal.is_some() {
                match frame.msg {
                    Message::Publish(_) => conn.gather(frame).await,
                    _ => match conn.flush_gathered().await {
                        Ok(()) => conn.dispatch(frame).await,
                        Err(e) => Err(e),
                    },
                }
            } else {
                conn.handshake(&mut handshake, &mut decoder, frame).await
            };
            if let Err(end) = result {
                break 'conn end;
            }
        }
        if let Err(end) = conn.flush_gathered().await {
            break end;
        }
        if buf.capacity() - buf.len() < 8 * 1024 {
            buf.reserve(64 * 1024);
        }
        let read = if conn.principal.is_none() {
            tokio::select! {
                r = rd.read_buf(&mut buf) => r,
                _ = tokio::time::sleep_until(deadline) => {
                    let _ = conn.send(nack(0, ErrorCode::UNAUTHORIZED, "authentication timed out")).await;
                    break End::AuthTimeout;
                }
                _ = shutdown.changed() => break End::Shutdown,
            }
        } else {
            tokio::select! {
                r = rd.read_buf(&mut buf) => r,
                _ = shutdown.changed() => {
                    let _ = conn.send(nack(0, ErrorCode::UNAVAILABLE, "server shutting down")).await;
                    break End::Shutdown;
                }
            }
        };
        match read {
            Ok(0) => break End::PeerClosed,
            Ok(_) => {}
            Err(_) => break End::ReadError,
        }
    };

    for (_, (sub, task)) in conn.subscriptions.drain() {
        sub.close();
        task.abort();
    }
    let _ = conn.tx.send(Out::Close).await;
    drop(conn.tx);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), writer).await;
    match &conn.principal {
        Some(p) => info!(
            peer = %peer.addr,
            transport = peer.transport,
            tenant = %p.tenant,
            principal = %p.name,
            reason = ?end,
            "connection closed"
        ),
        None => {
            debug!(peer = %peer.addr, transport = peer.transport, reason = ?end, "connection closed before auth")
        }
    }
}

impl Conn {
    async fn send(&self, f: Frame) -> Result<(), End> {
        self.tx
            .send(Out::Frame(f))
            .await
            .map_err(|_| End::WriterGone)
    }

    async fn handshake(
        &mut self,
        hs: &mut Handshake,
        decoder: &mut FrameDecoder,
        frame: Frame,
    ) -> Result<(), End> {
        let step = match hs.on_frame(frame) {
            Step::Authenticate {
                id,
                method,
                credential,
            } => match self.authenticate(method, &credential) {
                Some(p) => {
                    info!(
                        peer = %self.peer.addr,
                        transport = self.peer.transport,
                        tenant = %p.tenant,
                        principal = %p.name,
                        method = method.as_str(),
                        "authenticated"
                    );
                    let ok = AuthOk {
                        tenant: p.tenant.clone(),
                        principal: p.name.clone(),
                        expires_at_ms: p.expires_at_ms.unwrap_or(0),
                    };
                    self.principal = Some(p);
                    decoder.set_max_frame(self.shared.config.max_frame_size);
                    return self.send(Frame::new(id, ok)).await;
                }
                None => {
                    warn!(
                        peer = %self.peer.addr,
                        transport = self.peer.transport,
                        method = method.as_str(),
                        "authentication failed"
                    );
                    hs.auth_failed(id)
                }
            },
            other => other,
        };
        match step {
            Step::Reply(f) => self.send(f).await,
            Step::Close(f) => {
                let code = match &f.msg {
                    Message::Nack(n) => n.code.0,
                    _ => 0,
                };
                self.send(f).await?;
                Err(End::Refused(code))
            }
            Step::Authenticate { .. } => Ok(()),
        }
    }

    fn authenticate(&self, method: AuthMethod, credential: &Bytes) -> Option<Principal> {
        let p = match method {
            AuthMethod::ApiKey => self.shared.keys.authenticate(credential)?,
            _ => return None,
        };
        self.shared.known_tenants.contains(&p.tenant).then_some(p)
    }

    fn check(&self, frame: &Frame, tenant: Option<&TenantId>) -> Result<(), OpError> {
        let principal = self
            .principal
            .as_ref()
            .ok_or(OpError::Denied(crate::access::Denied::NotAClientFrame))?;
        let needed = access(frame.msg.frame_type());
        authorize(principal, needed, tenant).map_err(|d| {
            debug!(
                peer = %self.peer.addr,
                tenant = %principal.tenant,
                principal = %principal.name,
                frame = ?frame.msg.frame_type(),
                denied = ?d,
                "request denied"
            );
            OpError::Denied(d)
        })
    }

    /// Adds a single-message PUBLISH to the gathered batch, publishing the
    /// batch first if it is for another stream or already large.
    async fn gather(&mut self, frame: Frame) -> Result<(), End> {
        let id = frame.id;
        let Message::Publish(p) = &frame.msg else {
            return self.dispatch(frame).await;
        };
        if let Err(e) = self.check(&frame, Some(&p.tenant)) {
            self.flush_gathered().await?;
            return self.send(e.to_frame(id)).await;
        }
        let same = self.gathered.as_ref().is_some_and(|g| {
            g.path.stream == p.stream
                && g.path.namespace == p.namespace
                && g.path.tenant == p.tenant
        });
        if !same {
            self.flush_gathered().await?;
            let path = StreamPath {
                tenant: p.tenant.clone(),
                namespace: p.namespace.clone(),
                stream: p.stream.clone(),
            };
            let stream = match self.stream(path.clone()) {
                Ok(s) => s,
                Err(e) => return self.send(e.to_frame(id)).await,
            };
            self.gathered = Some(Gathered {
                path,
                stream,
                entries: EntriesBuilder::new(),
                acks: Vec::new(),
            });
        }
        let full = match &mut self.gathered {
            Some(g) => {
                g.entries.push(&p.payload);
                g.acks.push((id, p.ack));
                g.entries.len() >= GATHER_LIMIT
            }
            None => false,
        };
        if full {
            self.flush_gathered().await?;
        }
        Ok(())
    }

    /// Publishes the gathered batch and sends its acknowledgements in order.
    async fn flush_gathered(&mut self) -> Result<(), End> {
        let Some(mut g) = self.gathered.take() else {
            return Ok(());
        };
        let (count, entries) = g.entries.finish();
        g.stream.publish(count, entries).await;
        for (id, mode) in g.acks {
            if mode != AckMode::None {
                self.send(Frame::new(id, Ack { count: 1 })).await?;
            }
        }
        Ok(())
    }

    /// Serves one authenticated frame. Request errors become NACKs here;
    /// only a dead writer ends the connection.
    async fn dispatch(&mut self, frame: Frame) -> Result<(), End> {
        let id = frame.id;
        match self.serve_request(frame).await {
            Ok(()) => Ok(()),
            Err(e) => self.send(e.to_frame(id)).await,
        }
    }

    fn stream(&mut self, path: StreamPath) -> Result<Arc<Stream>, OpError> {
        if let Some(s) = self.streams.get(&path) {
            return Ok(s.clone());
        }
        let s = self.shared.broker.stream(&path)?;
        if self.streams.len() >= STREAM_CACHE {
            self.streams.clear();
        }
        self.streams.insert(path, s.clone());
        Ok(s)
    }

    async fn serve_request(&mut self, frame: Frame) -> Result<(), OpError> {
        let id = frame.id;
        let tenant = match &frame.msg {
            Message::Publish(p) => Some(&p.tenant),
            Message::PublishBatch(p) => Some(&p.tenant),
            Message::Subscribe(s) => Some(&s.tenant),
            Message::CachePut(c) => Some(&c.tenant),
            Message::CacheGet(c) => Some(&c.tenant),
            Message::CacheDelete(c) => Some(&c.tenant),
            _ => None,
        };
        self.check(&frame, tenant)?;
        match frame.msg {
            Message::Ping => self.reply(Frame::new(id, Message::Pong)).await,
            Message::PublishBatch(p) => {
                let path = StreamPath {
                    tenant: p.tenant,
                    namespace: p.namespace,
                    stream: p.stream,
                };
                let stream = self.stream(path)?;
                if p.count > 0 {
                    stream.publish(p.count, p.entries).await;
                }
                self.ack(id, p.ack, p.count).await
            }
            Message::Subscribe(s) => {
                if s.start != StartAt::New {
                    return Err(OpError::StartUnsupported);
                }
                if self.subscriptions.len() >= MAX_SUBSCRIPTIONS {
                    return Err(OpError::TooManySubscriptions(MAX_SUBSCRIPTIONS));
                }
                let path = StreamPath {
                    tenant: s.tenant,
                    namespace: s.namespace,
                    stream: s.stream,
                };
                let stream = self.stream(path)?;
                let sub = Arc::new(stream.subscribe().await);
                let sid = self.next_subscription;
                self.next_subscription += 1;
                // SUBSCRIBED goes into the writer queue before any event.
                self.reply(Frame::new(
                    id,
                    Subscribed {
                        subscription_id: sid,
                    },
                ))
                .await?;
                let task = tokio::spawn(deliver(
                    sub.clone(),
                    sid,
                    self.tx.clone(),
                    self.event_budget.clone(),
                ));
                self.subscriptions.insert(sid, (sub, task));
                Ok(())
            }
            Message::Unsubscribe(u) => {
                let (sub, task) = self
                    .subscriptions
                    .remove(&u.subscription_id)
                    .ok_or(OpError::NoSuchSubscription)?;
                sub.close();
                task.abort();
                self.reply(Frame::new(id, Ack { count: 0 })).await
            }
            Message::CachePut(c) => {
                let ttl = (c.ttl_ms > 0).then(|| std::time::Duration::from_millis(c.ttl_ms));
                self.shared.broker.cache().put(
                    std::time::Instant::now(),
                    &c.tenant,
                    &c.namespace,
                    &c.cache,
                    &c.key,
                    c.value,
                    ttl,
                )?;
                self.reply(Frame::new(id, Ack { count: 1 })).await
            }
            Message::CacheGet(c) => {
                let v = self.shared.broker.cache().get(
                    std::time::Instant::now(),
                    &c.tenant,
                    &c.namespace,
                    &c.cache,
                    &c.key,
                );
                let reply = match v {
                    Some(v) => CacheValue {
                        ttl_ms: v.ttl.map_or(0, |d| (d.as_millis() as u64).max(1)),
                        value: Some(v.value),
                    },
                    None => CacheValue {
                        value: None,
                        ttl_ms: 0,
                    },
                };
                self.reply(Frame::new(id, reply)).await
            }
            Message::CacheDelete(c) => {
                let removed = self.shared.broker.cache().delete(
                    std::time::Instant::now(),
                    &c.tenant,
                    &c.namespace,
                    &c.cache,
                    &c.key,
                );
                self.reply(Frame::new(
                    id,
                    Ack {
                        count: u32::from(removed),
                    },
                ))
                .await
            }
            // HELLO/AUTH after authentication, and server-only frames.
            _ => Err(OpError::Denied(crate::access::Denied::NotAClientFrame)),
        }
    }

    async fn reply(&self, f: Frame) -> Result<(), OpError> {
        // A dead writer means the connection is going away; the reader
        // notices on its next read.
        let _ = self.tx.send(Out::Frame(f)).await;
        Ok(())
    }

    async fn ack(&self, id: u64, mode: AckMode, count: u32) -> Result<(), OpError> {
        match mode {
            AckMode::None => Ok(()),
            AckMode::Batch => self.reply(Frame::new(id, Ack { count })).await,
            AckMode::Message => {
                for _ in 0..count {
                    self.reply(Frame::new(id, Ack { count: 1 })).await?;
                }
                Ok(())
            }
        }
    }
}

/// Moves a subscription's batches to the connection writer until either
/// side goes away.
async fn deliver(sub: Arc<Subscription>, id: u64, tx: mpsc::Sender<Out>, budget: Arc<Semaphore>) {
    let mut batches = Vec::new();
    loop {
        // Wait for room in the connection's budget before taking batches
        // off the subscriber queue, so a stalled connection leaves them
        // there, where the slow-consumer policy applies.
        let Ok(mut permit) = budget
            .clone()
            .acquire_many_owned(DELIVERY_CHUNK as u32)
            .await
        else {
            break;
        };
        let Some(missed) = sub.recv(&mut batches, DELIVERY_CHUNK).await else {
            break;
        };
        // One batch can be larger than a chunk (up to a whole frame): charge
        // what it really holds, capped at the whole budget.
        let bytes: usize = batches.iter().map(SharedEvents::encoded_len).sum();
        let extra = bytes.min(EVENT_BUDGET).saturating_sub(DELIVERY_CHUNK);
        if extra > 0 {
            match budget.clone().acquire_many_owned(extra as u32).await {
                Ok(more) => permit.merge(more),
                Err(_) => break,
            }
        }
        if missed > 0 {
            debug!(subscription = id, missed, "slow consumer dropped messages");
        }
        let out = Out::Events {
            subscription: id,
            missed,
            batches: std::mem::take(&mut batches),
            _budget: permit,
        };
        if tx.send(out).await.is_err() {
            break;
        }
    }
}
