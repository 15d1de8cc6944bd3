//! One client connection, whatever the transport: a reader loop that
//! decodes and dispatches frames and writes its replies itself when the
//! way out is free, a writer task (see [`crate::outbound`]) that coalesces
//! whatever is queued into large writes, and one delivery task per
//! subscription.
//!
//! Publishes are pipelined: consecutive PUBLISH frames to one stream are
//! gathered into a batch, and a batch (or a PUBLISH_BATCH frame) is handed
//! to its stream without waiting for its level (a durable stream's
//! fsync); the loop reads on, and the next batches join the stream's next
//! commit. Answers still keep the order of the frames: ACKs go out oldest
//! batch first, and every batch in flight is answered before any later
//! frame that is not a publish, and before a refusal.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rampart_authz::{DecisionCache, Permission, Resource, Subject};
use rampart_broker::{
    BrokerError, Commit, ConsumerOptions, Level, Published, Stream, Subscription,
};
use rampart_identity::Principal;
use rampart_limits::{Handle, QuotaGuard, QuotaKind, RateKind, Rejection};
use rampart_proto::{
    Ack, AckMode, AuthMethod, AuthOk, AuthRequired, CacheValue, Durability, EntriesBuilder,
    ErrorCode, Frame, FrameDecoder, Message, NamespaceName, Publish, ReauthReason, SharedEvents,
    StreamName, StreamPath, Subscribed, TenantId, Token, Unsubscribe, PREAUTH_MAX_FRAME,
};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::access::{frame_access, frame_resource, Access, Denied};
use crate::audit::{self, Origin};
use crate::auth::{now_ms, CertNames};
use crate::config::Config;
use crate::error::{frame_error, OpError};
use crate::limits::Attempt;
use crate::outbound::{outbound, Out, Outbound, WriterGone};
use crate::registry::Ctl;
use crate::session::{nack, nack_after, Handshake, Step};
use crate::Shared;
use rampart_audit::Outcome;

/// Bytes of batches a delivery task hands the writer at a time.
const DELIVERY_CHUNK: usize = 256 * 1024;
/// Bytes of events a connection may have queued for its writer, all
/// subscriptions together. Past it, delivery waits and the subscriber
/// queues (with their slow-consumer policy) take the pressure.
const EVENT_BUDGET: usize = 8 * 1024 * 1024;
/// Subscriptions one connection may hold.
const MAX_SUBSCRIPTIONS: usize = 1024;
/// Stream handles a connection keeps to skip the shared lookup.
const STREAM_CACHE: usize = 256;

/// Where a connection comes from.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    pub addr: SocketAddr,
    pub transport: &'static str,
    /// Names from the verified TLS client certificate, if one was sent.
    pub cert: Option<CertNames>,
}

/// Why a connection ended, for the log line.
#[derive(Debug)]
enum End {
    PeerClosed,
    ReadError,
    #[allow(dead_code)] // read through Debug in the close log line
    Refused(u16),
    AuthTimeout,
    Idle,
    Shutdown,
    WriterGone,
    #[allow(dead_code)] // read through Debug in the close log line
    Credential(ReauthReason),
}

/// Where the connection's credential stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Valid; `AUTH_REQUIRED expiring` not sent yet.
    Valid,
    /// The peer was told the credential expires soon.
    Noticed,
    /// Expired: requests refused, deliveries paused, closing at the grace end.
    Expired,
}

/// One authenticated identity on a connection.
struct Session {
    principal: Principal,
    subject: Subject,
    cache: DecisionCache,
    phase: Phase,
    registry_id: u64,
    /// Where this principal's requests are charged (its limits and its
    /// tenant's).
    limits: Handle,
    /// This connection's place in the tenant's and principal's
    /// `max_connections`.
    _connection: QuotaGuard,
    /// The stream the last single-message PUBLISH was allowed on.
    publish_grant: Option<PublishGrant>,
}

/// A stream a session's last single-message PUBLISH was allowed on, and
/// the policy and tenant records it was checked against. The next PUBLISH
/// to the same stream is allowed from it while neither has changed: the
/// answer is the same, without building the resource (three names
/// copied), the decision cache's hashing and the disabled-namespace
/// lookup, which were most of what a PUBLISH cost to check. A new
/// credential on the connection starts with none.
#[derive(Debug)]
struct PublishGrant {
    tenant: TenantId,
    namespace: NamespaceName,
    stream: StreamName,
    policy_generation: u64,
    tenants_generation: u64,
}

impl PublishGrant {
    fn covers(&self, p: &Publish, policy_generation: u64, tenants_generation: u64) -> bool {
        self.policy_generation == policy_generation
            && self.tenants_generation == tenants_generation
            && self.stream == p.stream
            && self.namespace == p.namespace
            && self.tenant == p.tenant
    }
}

fn subject_of(principal: &Principal) -> Subject {
    Subject::new(
        principal.tenant.clone(),
        principal.name.clone(),
        principal.roles.iter().cloned(),
    )
}

impl Session {
    fn new(principal: Principal, registry_id: u64, limits: Handle, connection: QuotaGuard) -> Self {
        Self {
            subject: subject_of(&principal),
            principal,
            cache: DecisionCache::new(),
            phase: Phase::Valid,
            registry_id,
            limits,
            _connection: connection,
            publish_grant: None,
        }
    }

    /// The same principal with a fresh credential.
    fn renew(&mut self, principal: Principal) {
        self.subject = subject_of(&principal);
        self.principal = principal;
        self.cache = DecisionCache::new();
        self.publish_grant = None;
        self.phase = Phase::Valid;
    }

    /// When the next credential event is due (notice, expiry, close), in
    /// Unix ms: a value that stays the same from one read to the next, so
    /// the connection re-arms its timer only when it moves.
    fn next_event_ms(&self, cfg: &Config) -> Option<u64> {
        let exp = self.principal.expires_at_ms?;
        Some(match self.phase {
            Phase::Valid => {
                let lifetime = exp.saturating_sub(now_ms());
                let notice = cfg.reauth_notice_ms.min(lifetime / 2);
                exp.saturating_sub(notice)
            }
            Phase::Noticed => exp,
            Phase::Expired => exp + cfg.reauth_grace_ms,
        })
    }
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

/// A published batch whose level is not reached yet, and the frames it
/// answers.
struct InFlight {
    commit: Commit,
    answers: Answers,
    /// Its payload bytes.
    bytes: usize,
}

/// The frames a published batch answers.
enum Answers {
    /// Gathered single-message PUBLISH frames: each one's id and ack mode.
    Publishes(Vec<(u64, AckMode)>),
    /// One PUBLISH_BATCH frame of `count` messages.
    Batch { id: u64, mode: AckMode, count: u32 },
}

/// Published batches a connection may have waiting for their level (a
/// durable stream's fsync, say) while it reads on. Beyond it, or beyond
/// [`IN_FLIGHT_BYTES`], the connection waits for the oldest before
/// reading more.
const COMMITS_IN_FLIGHT: usize = 4;

/// Payload bytes a connection may have waiting for their level: 1 MiB,
/// four full gathered batches ([`GATHER_LIMIT`]). Beyond it the
/// connection waits for the oldest, down to the newest batch alone (a
/// PUBLISH_BATCH frame may be larger, up to the frame size).
const IN_FLIGHT_BYTES: usize = 4 * GATHER_LIMIT;

/// What a quiet connection reads into (see [`ReadSize`]).
const READ_MIN: usize = 4 * 1024;
/// What a busy one reads into at most at once (a larger frame still gets
/// the room it needs).
const READ_MAX: usize = 64 * 1024;

/// How much a connection reads at once. Most connections of a broker are
/// quiet most of the time (idle subscribers, clients between requests),
/// and a read buffer kept at its high-water mark would cost each of them
/// that much for good (with mimalloc's huge pages, allocated is
/// resident). So a connection reads into [`READ_MIN`]; each read that
/// fills what it was given doubles the next, up to [`READ_MAX`]; a read
/// that does not (the socket is drained) brings it back down, and a buffer
/// grown past the minimum is let go once every frame in it is served.
#[derive(Debug, Clone, Copy)]
struct ReadSize {
    next: usize,
    /// The buffer's allocation may be larger than [`READ_MIN`].
    grown: bool,
}

impl Default for ReadSize {
    fn default() -> Self {
        ReadSize {
            next: READ_MIN,
            grown: false,
        }
    }
}

impl ReadSize {
    /// Before a read: room in `buf` for the next one.
    fn prepare(&mut self, buf: &mut BytesMut) {
        if buf.is_empty() && self.grown && self.next == READ_MIN {
            *buf = BytesMut::with_capacity(READ_MIN);
            self.grown = false;
        }
        if buf.capacity() - buf.len() < self.next / 2 {
            self.grown |= self.next > READ_MIN || !buf.is_empty();
            buf.reserve(self.next);
        }
    }

    /// After a read of `n` bytes into `spare` bytes of room.
    fn read(&mut self, n: usize, spare: usize) {
        self.next = if n >= spare {
            (self.next * 2).min(READ_MAX)
        } else {
            READ_MIN
        };
    }
}

struct Subscribed_ {
    sub: Arc<Subscription>,
    task: JoinHandle<()>,
    resource: Resource,
    /// Its place in the principal's and tenant's `max_subscriptions`.
    _quota: QuotaGuard,
}

struct Conn {
    shared: Arc<Shared>,
    origin: Origin,
    /// Data-plane counts, audited once as a summary when the connection ends.
    published: u64,
    published_bytes: u64,
    subscribed: u64,
    event_budget: Arc<Semaphore>,
    gathered: Option<Gathered>,
    /// Published batches waiting for their level, oldest first: their
    /// ACKs are sent in this order, and before the answer to any later
    /// frame that is not a PUBLISH.
    commits: VecDeque<InFlight>,
    peer: Peer,
    out: Outbound,
    ctl_tx: mpsc::UnboundedSender<Ctl>,
    session: Option<Session>,
    /// Open for deliveries while the credential is valid.
    gate: watch::Sender<bool>,
    auth_failures: u32,
    subscriptions: HashMap<u64, Subscribed_>,
    next_subscription: u64,
    streams: HashMap<StreamPath, Arc<Stream>>,
    /// This connection's place in the admission counts (per IP,
    /// unauthenticated); `None` for connections admitted elsewhere.
    ticket: Option<rampart_limits::Ticket>,
    /// After a refusal for a rate: the connection is not read again before
    /// this, so a client that ignores `retry_after` is held back by TCP
    /// (or QUIC) flow control instead of costing a NACK per frame.
    throttled_until: Option<Instant>,
}

/// The outcome of the oldest batch in `commits` (cancel-safe: the commit
/// stays in place until [`Conn::answer_oldest`] takes it). Never ready
/// while `commits` is empty.
async fn oldest(commits: &mut VecDeque<InFlight>) -> Result<Published, BrokerError> {
    std::future::poll_fn(|cx| match commits.front_mut() {
        Some(f) => std::future::Future::poll(std::pin::Pin::new(&mut f.commit), cx),
        None => std::task::Poll::Pending,
    })
    .await
}

/// Serves one connection until it ends. `deadline` bounds the whole
/// pre-authentication phase, TLS handshake included.
pub(crate) async fn serve<R, W>(
    shared: Arc<Shared>,
    mut rd: R,
    wr: W,
    peer: Peer,
    deadline: Instant,
    ticket: Option<rampart_limits::Ticket>,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: crate::outbound::ChunkWrite + 'static,
{
    let (out, writer) = outbound(wr);
    let writer = tokio::spawn(writer);
    let (ctl_tx, mut ctl_rx) = mpsc::unbounded_channel();
    let mut shutdown = shared.shutdown.clone();
    let mut conn = Conn {
        shared: shared.clone(),
        origin: Origin {
            addr: Some(peer.addr),
            agent: None,
            transport: peer.transport,
        },
        published: 0,
        published_bytes: 0,
        subscribed: 0,
        event_budget: Arc::new(Semaphore::new(EVENT_BUDGET)),
        gathered: None,
        commits: VecDeque::new(),
        peer: peer.clone(),
        out,
        ctl_tx,
        session: None,
        gate: watch::Sender::new(true),
        auth_failures: 0,
        subscriptions: HashMap::new(),
        next_subscription: 1,
        streams: HashMap::new(),
        ticket,
        throttled_until: None,
    };
    let mut handshake = Handshake::new(
        shared.config.max_auth_failures,
        shared.config.max_frame_size,
    );
    let mut decoder = FrameDecoder::new(PREAUTH_MAX_FRAME);
    let mut buf = BytesMut::with_capacity(READ_MIN);
    let mut reads = ReadSize::default();
    let idle_timeout = Duration::from_millis(shared.config.idle_timeout_ms);
    let mut last_read = Instant::now();
    // Two timers that live as long as the connection and are re-armed only
    // when they fire early or their deadline moves: a timer made afresh for
    // every read cost a timer-wheel insert and removal per message.
    let idle_timer = tokio::time::sleep_until(last_read + idle_timeout);
    tokio::pin!(idle_timer);
    let credential_timer = tokio::time::sleep_until(last_read);
    tokio::pin!(credential_timer);
    let mut credential_at: Option<u64> = None;
    debug!(peer = %peer.addr, transport = peer.transport, "connection open");

    let end = 'conn: loop {
        // Serve every whole frame already buffered.
        loop {
            let decoded = match decoder.decode(&mut buf) {
                Ok(Some(d)) => d,
                Ok(None) => break,
                Err(e) => {
                    debug!(peer = %peer.addr, error = %e, "closing on broken frame");
                    let _ = conn.out.frames([frame_error(&e)]).await;
                    break 'conn End::Refused(e.code().0);
                }
            };
            let frame = match decoded.frame {
                Ok(f) => f,
                Err(e) => {
                    if conn
                        .send(OpError::Body(e).to_frame(decoded.header.id, &conn.shared.metrics))
                        .await
                        .is_err()
                    {
                        break 'conn End::WriterGone;
                    }
                    continue;
                }
            };
            let result = if conn.session.is_some() {
                match frame.msg {
                    Message::Publish(_) => conn.gather(frame).await,
                    Message::PublishBatch(_) => conn.publish_batch(frame).await,
                    _ => match conn.settle().await {
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
        // Stopping: every whole frame read so far is answered (above);
        // nothing more is read.
        if *shutdown.borrow() {
            if let Err(end) = conn.answer_all().await {
                break end;
            }
            if conn.session.is_some() {
                conn.tell_shutdown().await;
            }
            break End::Shutdown;
        }
        if let Some(until) = conn.throttled_until.take() {
            // What is in flight is answered before the pause, not after.
            if let Err(end) = conn.answer_all().await {
                break end;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                _ = shutdown.changed() => break End::Shutdown,
            }
        }
        reads.prepare(&mut buf);
        let spare = buf.capacity() - buf.len();
        let read = match &conn.session {
            None => tokio::select! {
                r = rd.read_buf(&mut buf) => r,
                _ = tokio::time::sleep_until(deadline) => {
                    let _ = conn.send(nack(0, ErrorCode::UNAUTHORIZED, "authentication timed out")).await;
                    break End::AuthTimeout;
                }
                _ = shutdown.changed() => break End::Shutdown,
            },
            Some(session) => {
                let next = session.next_event_ms(&shared.config);
                if next != credential_at {
                    if let Some(ms) = next {
                        let now = now_ms();
                        credential_timer
                            .as_mut()
                            .reset(Instant::now() + Duration::from_millis(ms.saturating_sub(now)));
                    }
                    credential_at = next;
                }
                let idle = conn.subscriptions.is_empty();
                let waiting = !conn.commits.is_empty();
                tokio::select! {
                    r = rd.read_buf(&mut buf) => r,
                    done = oldest(&mut conn.commits), if waiting => {
                        if let Err(end) = conn.answer_oldest(done).await {
                            break end;
                        }
                        continue;
                    }
                    _ = &mut idle_timer, if idle => {
                        // Armed for an earlier read: wait on from the last.
                        let due = last_read + idle_timeout;
                        if Instant::now() < due {
                            idle_timer.as_mut().reset(due);
                            continue;
                        }
                        let _ = conn.send(nack(0, ErrorCode(408), "idle timeout: nothing sent and no subscription")).await;
                        break End::Idle;
                    }
                    ctl = ctl_rx.recv() => {
                        match ctl {
                            Some(Ctl::Close(reason)) => {
                                let _ = conn.answer_all().await;
                                conn.tell(reason, 0).await;
                                if let Some(s) = &conn.session {
                                    shared.audit.record(conn.origin.apply(
                                        audit::by(&s.principal, "connection.revoked", "close", Outcome::Success)
                                            .meta("reason", format!("{reason:?}")),
                                    ));
                                }
                                break End::Credential(reason);
                            }
                            Some(Ctl::PolicyChanged) => conn.recheck_subscriptions().await,
                            None => {}
                        }
                        continue;
                    }
                    _ = &mut credential_timer, if next.is_some() => {
                        if let Err(end) = conn.credential_event().await {
                            break end;
                        }
                        continue;
                    }
                    _ = shutdown.changed() => {
                        let _ = conn.answer_all().await;
                        conn.tell_shutdown().await;
                        break End::Shutdown;
                    }
                }
            }
        };
        match read {
            Ok(0) => break End::PeerClosed,
            Ok(n) => {
                reads.read(n, spare);
                last_read = Instant::now();
            }
            Err(_) => break End::ReadError,
        }
    };

    // Batches published before the end are still answered (the peer may
    // only have closed its sending side), as long as the writer takes them.
    let _ = tokio::time::timeout(CLOSE_WAIT, conn.answer_all()).await;
    for (_, s) in conn.subscriptions.drain() {
        s.sub.close();
        s.task.abort();
    }
    if let Some(s) = &conn.session {
        shared.registry.unregister(s.registry_id);
        if shared.config.audit_data_plane {
            shared.audit.record(
                conn.origin.apply(
                    audit::by(&s.principal, "connection.close", "close", Outcome::Success)
                        .meta("reason", format!("{end:?}"))
                        .meta("published_messages", conn.published)
                        .meta("published_bytes", conn.published_bytes)
                        .meta("subscriptions", conn.subscribed),
                ),
            );
        }
    }
    // A peer that does not read fills the queue and stalls the writer:
    // each wait is bounded, and a writer still stuck is stopped.
    let _ = tokio::time::timeout(CLOSE_WAIT, conn.out.queue(Out::Close)).await;
    drop(conn.out);
    let stop_writer = writer.abort_handle();
    let written = tokio::time::timeout(CLOSE_WAIT, writer).await.is_ok();
    if !written {
        stop_writer.abort();
    }
    if matches!(end, End::Shutdown) && written {
        // Frames the peer sent that were never read would make the close
        // a TCP reset, which can throw away the answers still in the
        // peer's buffers: read and drop what is arriving (briefly: a peer
        // that keeps its connection open sends nothing more).
        let mut sink = [0u8; 4096];
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(100), rd.read(&mut sink)).await
            {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    }
    match &conn.session {
        Some(s) => info!(
            peer = %peer.addr,
            transport = peer.transport,
            tenant = %s.principal.tenant,
            principal = %s.principal.name,
            reason = ?end,
            "connection closed"
        ),
        None => {
            debug!(peer = %peer.addr, transport = peer.transport, reason = ?end, "connection closed before auth")
        }
    }
}

/// How long a closing connection waits for each of its last steps (the
/// shutdown NACK, the writer's last frames, the peer's close).
const CLOSE_WAIT: Duration = Duration::from_secs(5);

impl Conn {
    /// Tells the peer the server is stopping, unless its queue stays full.
    async fn tell_shutdown(&self) {
        let f = nack(0, ErrorCode::UNAVAILABLE, "server shutting down");
        let _ = tokio::time::timeout(CLOSE_WAIT, self.send(f)).await;
    }

    /// Sends `frames` in order, in one write when they can go directly.
    async fn send_all(&self, frames: impl IntoIterator<Item = Frame>) -> Result<(), End> {
        self.out
            .frames(frames)
            .await
            .map_err(|WriterGone| End::WriterGone)
    }

    async fn send(&self, f: Frame) -> Result<(), End> {
        self.send_all([f]).await
    }

    /// Makes a login's audit record durable. When the audit log cannot,
    /// answers request `id` with 503 and returns false: the login does not
    /// happen unaudited.
    async fn audited(&self, id: u64, ev: rampart_audit::Event) -> Result<bool, End> {
        if self.shared.audit.mandatory(ev).await.is_ok() {
            return Ok(true);
        }
        self.send(nack(
            id,
            ErrorCode::UNAVAILABLE,
            "audit log unavailable; try again",
        ))
        .await?;
        Ok(false)
    }

    /// Sends AUTH_REQUIRED.
    async fn tell(&self, reason: ReauthReason, deadline_ms: u64) {
        let message = match reason {
            ReauthReason::Expiring => "credential expires soon; send AUTH",
            ReauthReason::Expired => "credential expired; send AUTH to resume",
            ReauthReason::Revoked => "credential revoked",
            ReauthReason::TenantDisabled => "tenant disabled",
            _ => "re-authenticate",
        };
        let _ = self
            .send(Frame::new(
                0,
                AuthRequired {
                    reason,
                    deadline_ms: deadline_ms.min(u64::from(u32::MAX)) as u32,
                    message: message.into(),
                },
            ))
            .await;
    }

    /// A credential timer fired: notice, expiry or the end of the grace.
    async fn credential_event(&mut self) -> Result<(), End> {
        let grace = self.shared.config.reauth_grace_ms;
        let Some(s) = &mut self.session else {
            return Ok(());
        };
        let exp = s.principal.expires_at_ms.unwrap_or(u64::MAX);
        let now = now_ms();
        match s.phase {
            Phase::Valid if now < exp => {
                s.phase = Phase::Noticed;
                self.tell(ReauthReason::Expiring, exp - now + grace).await;
            }
            Phase::Valid | Phase::Noticed => {
                s.phase = Phase::Expired;
                self.gate.send_replace(false);
                info!(
                    peer = %self.peer.addr,
                    tenant = %s.principal.tenant,
                    principal = %s.principal.name,
                    "credential expired; deliveries paused"
                );
                self.tell(ReauthReason::Expired, (exp + grace).saturating_sub(now))
                    .await;
            }
            Phase::Expired => {
                self.tell(ReauthReason::Expired, 0).await;
                return Err(End::Credential(ReauthReason::Expired));
            }
        }
        Ok(())
    }

    /// After a policy change, ends subscriptions that are no longer allowed.
    async fn recheck_subscriptions(&mut self) {
        let Some(s) = &mut self.session else { return };
        let denied: Vec<(u64, String)> = {
            let policy = self.shared.policy.read().unwrap_or_else(|e| e.into_inner());
            self.subscriptions
                .iter()
                .filter_map(|(id, sub)| {
                    if !s
                        .cache
                        .check(&policy, &s.subject, &sub.resource, Permission::Subscribe)
                    {
                        Some((*id, "permission revoked".to_string()))
                    } else {
                        disabled_namespace(&self.shared, &sub.resource)
                            .map(|ns| (*id, format!("namespace {ns} is disabled")))
                    }
                })
                .collect()
        };
        for (id, why) in denied {
            if let Some(sub) = self.subscriptions.remove(&id) {
                sub.sub.close();
                sub.task.abort();
                let _ = self
                    .send(nack(
                        0,
                        ErrorCode::FORBIDDEN,
                        format!("subscription {id} ended: {why}"),
                    ))
                    .await;
                let _ = self.send(ended(id)).await;
            }
        }
    }

    /// Checks a credential. `Err(Some(_))`: the address or the key id is
    /// locked out after failed attempts; `Err(None)`: refused.
    async fn authenticate(
        &self,
        method: AuthMethod,
        credential: &Bytes,
    ) -> Result<Principal, Option<rampart_limits::Refusal>> {
        let admission = &self.shared.admission;
        let mut attempt = Attempt::from(Some(self.peer.addr.ip()));
        if method == AuthMethod::ApiKey {
            attempt = attempt.api_key(credential);
        }
        attempt.check(admission).map_err(Some)?;
        match self
            .shared
            .identity
            .authenticate(method, credential, self.peer.cert.as_ref())
            .await
        {
            Ok(p) => {
                attempt.succeeded(admission);
                Ok(p)
            }
            Err(reason) => {
                attempt.failed(admission);
                warn!(
                    peer = %self.peer.addr,
                    transport = self.peer.transport,
                    method = method.as_str(),
                    reason = reason.as_str(),
                    "authentication failed"
                );
                self.shared.metrics.auth(method.as_str(), false);
                self.shared.audit.record(audit::auth_failure(
                    method.as_str(),
                    reason.as_str(),
                    &self.origin,
                ));
                Err(None)
            }
        }
    }

    /// Sends a refusal for a locked-out address or key and closes.
    async fn locked_out(&self, id: u64, r: rampart_limits::Refusal) -> Result<(), End> {
        debug!(peer = %self.peer.addr, refusal = %r, "authentication refused: locked out");
        self.send(nack_after(
            id,
            ErrorCode::TOO_MANY_REQUESTS,
            r.to_string(),
            r.retry_after(),
        ))
        .await?;
        Err(End::Refused(429))
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
            } => match self.authenticate(method, &credential).await {
                Ok(p) => {
                    let mut limits = self.shared.limits.handle(p.tenant.as_str(), &p.name);
                    let connection = match limits.acquire(QuotaKind::Connections) {
                        Ok(g) => g,
                        Err(r) => {
                            self.shared.audit.record(
                                self.origin.apply(
                                    audit::by(&p, "limit.reject", "connect", Outcome::Denied)
                                        .meta("limit", r.limit)
                                        .meta("level", r.level.as_str()),
                                ),
                            );
                            self.send(OpError::Limited(r).to_frame(id, &self.shared.metrics))
                                .await?;
                            return Err(End::Refused(429));
                        }
                    };
                    self.origin.agent = hs.agent().map(str::to_string);
                    self.shared.metrics.auth(method.as_str(), true);
                    let ev = audit::auth_success(&p, method.as_str(), &self.origin);
                    if !self.audited(id, ev).await? {
                        return Ok(());
                    }
                    info!(
                        peer = %self.peer.addr,
                        transport = self.peer.transport,
                        tenant = %p.tenant,
                        principal = %p.name,
                        method = method.as_str(),
                        "authenticated"
                    );
                    let ok = auth_ok(&p);
                    let rid = self
                        .shared
                        .registry
                        .register(p.clone(), self.ctl_tx.clone());
                    self.session = Some(Session::new(p, rid, limits, connection));
                    if let Some(t) = &mut self.ticket {
                        t.authenticated();
                    }
                    decoder.set_max_frame(self.shared.config.max_frame_size);
                    return self.send(Frame::new(id, ok)).await;
                }
                Err(Some(refusal)) => return self.locked_out(id, refusal).await,
                Err(None) => hs.auth_failed(id),
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

    /// AUTH on an authenticated connection: replace the credential in band.
    async fn reauthenticate(
        &mut self,
        id: u64,
        method: AuthMethod,
        credential: Bytes,
    ) -> Result<(), End> {
        let p = match self.authenticate(method, &credential).await {
            Ok(p) => p,
            Err(Some(refusal)) => return self.locked_out(id, refusal).await,
            Err(None) => return self.auth_refused(id).await,
        };
        self.renew_session(id, method, p).await
    }

    async fn auth_refused(&mut self, id: u64) -> Result<(), End> {
        {
            self.auth_failures += 1;
            let reply = nack(id, ErrorCode::UNAUTHORIZED, "invalid credentials");
            if self.auth_failures >= self.shared.config.max_auth_failures {
                self.send(reply).await?;
                return Err(End::Refused(401));
            }
            self.send(reply).await
        }
    }

    async fn renew_session(
        &mut self,
        id: u64,
        method: AuthMethod,
        p: Principal,
    ) -> Result<(), End> {
        let same = self
            .session
            .as_ref()
            .is_some_and(|s| p.tenant == s.principal.tenant && p.name == s.principal.name);
        if !same {
            return self
                .send(nack(
                    id,
                    ErrorCode::FORBIDDEN,
                    "re-authentication must keep the same tenant and principal",
                ))
                .await;
        }
        self.shared.metrics.auth(method.as_str(), true);
        let ev = audit::auth_success(&p, method.as_str(), &self.origin).meta("in_band", true);
        if !self.audited(id, ev).await? {
            return Ok(());
        }
        let Some(s) = &mut self.session else {
            return Ok(());
        };
        info!(
            peer = %self.peer.addr,
            tenant = %p.tenant,
            principal = %p.name,
            method = method.as_str(),
            "re-authenticated"
        );
        self.auth_failures = 0;
        let ok = auth_ok(&p);
        self.shared.registry.update(s.registry_id, p.clone());
        // The same credential again (a client with nothing fresher) does not
        // restart the expiry clock.
        let renewed = p.expires_at_ms != s.principal.expires_at_ms;
        let phase = s.phase;
        s.renew(p);
        if renewed {
            self.gate.send_replace(true);
        } else {
            s.phase = phase;
        }
        self.send(Frame::new(id, ok)).await
    }

    /// Checks that the session may do what `frame` asks.
    fn check(&mut self, frame: &Frame) -> Result<(), OpError> {
        let Some(s) = &mut self.session else {
            return Err(OpError::Denied(Denied::NotAClientFrame));
        };
        let access = frame_access(frame.msg.frame_type());
        if s.phase == Phase::Expired && access != Access::Public {
            return Err(OpError::CredentialExpired);
        }
        match access {
            Access::Authenticated => Ok(()),
            Access::Perm(perm) => {
                let policy = self.shared.policy.read().unwrap_or_else(|e| e.into_inner());
                // Read before the lookups below: a change after this read
                // leaves a grant that no longer matches.
                let tenants_generation = self.shared.identity.tenants_generation();
                let publish = match &frame.msg {
                    Message::Publish(p) => Some(p),
                    _ => None,
                };
                if let Some(p) = publish {
                    let granted = s
                        .publish_grant
                        .as_ref()
                        .is_some_and(|g| g.covers(p, policy.generation(), tenants_generation));
                    if granted {
                        return Ok(());
                    }
                }
                let resource =
                    frame_resource(&frame.msg).ok_or(OpError::Denied(Denied::NotAClientFrame))?;
                if s.cache.check(&policy, &s.subject, &resource, perm) {
                    if let Some(ns) = disabled_namespace(&self.shared, &resource) {
                        return Err(OpError::NamespaceDisabled(ns));
                    }
                    if let Some(p) = publish {
                        s.publish_grant = Some(PublishGrant {
                            tenant: p.tenant.clone(),
                            namespace: p.namespace.clone(),
                            stream: p.stream.clone(),
                            policy_generation: policy.generation(),
                            tenants_generation,
                        });
                    }
                    return Ok(());
                }
                let decision = rampart_authz::decide(&policy, &s.subject, &resource, perm);
                self.shared.audit.record(
                    self.origin.apply(
                        audit::by(&s.principal, "authz.deny", perm.as_str(), Outcome::Denied)
                            .resource(resource.to_string())
                            .meta("reason", decision.reason.code()),
                    ),
                );
                debug!(
                    peer = %self.peer.addr,
                    tenant = %s.principal.tenant,
                    principal = %s.principal.name,
                    permission = perm.as_str(),
                    resource = %resource,
                    decision = %decision,
                    "request denied"
                );
                Err(OpError::Denied(Denied::Forbidden))
            }
            _ => Err(OpError::Denied(Denied::NotAClientFrame)),
        }
    }

    /// Adds a single-message PUBLISH to the gathered batch, publishing the
    /// batch first if it is for another stream or already large.
    async fn gather(&mut self, frame: Frame) -> Result<(), End> {
        let id = frame.id;
        if let Err(e) = self.check(&frame) {
            self.settle().await?;
            return self.send(e.to_frame(id, &self.shared.metrics)).await;
        }
        let Message::Publish(p) = &frame.msg else {
            return self.dispatch(frame).await;
        };
        let same = self.gathered.as_ref().is_some_and(|g| {
            g.path.stream == p.stream
                && g.path.namespace == p.namespace
                && g.path.tenant == p.tenant
        });
        let new_batch = if same {
            None
        } else {
            self.flush_gathered().await?;
            let path = StreamPath {
                tenant: p.tenant.clone(),
                namespace: p.namespace.clone(),
                stream: p.stream.clone(),
            };
            match self.stream(path.clone()) {
                Ok(stream) => Some((path, stream)),
                Err(e) => {
                    self.answer_all().await?;
                    return self.send(e.to_frame(id, &self.shared.metrics)).await;
                }
            }
        };
        // Each frame is charged as it comes, as if it were published alone:
        // charged as one cost, a gathered run of frames could pass a rate
        // limit together that its frames one by one would not, and be
        // refused the stored bytes some of its frames would fit in.
        let durable = match (&new_batch, &self.gathered) {
            (Some((_, stream)), _) | (None, Some(Gathered { stream, .. })) => {
                stream.durable().is_some()
            }
            (None, None) => false,
        };
        let charged = self
            .charge_rates(1, p.payload.len())
            .and_then(|()| self.charge_stored(durable, EntriesBuilder::entry_len(p.payload.len())));
        if let Err(r) = charged {
            self.settle().await?;
            return self
                .send(OpError::from(r).to_frame(id, &self.shared.metrics))
                .await;
        }
        if let Some((path, stream)) = new_batch {
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

    /// Publishes the gathered batch without waiting for its level: its
    /// acknowledgements follow once the level is reached (see
    /// [`answer_oldest`](Self::answer_oldest)), so that a connection with
    /// many publishes in flight keeps reading while a durable stream
    /// fsyncs, and its next batches join the next commit. Waits for the
    /// oldest batch only beyond [`COMMITS_IN_FLIGHT`].
    async fn flush_gathered(&mut self) -> Result<(), End> {
        let Some(mut g) = self.gathered.take() else {
            return Ok(());
        };
        let (count, entries) = g.entries.finish();
        let answers = Answers::Publishes(g.acks);
        let bytes = entries.len();
        match self.publish_on(&g.stream, count, entries).await {
            Ok(commit) => self.in_flight(commit, answers, bytes).await,
            Err(e) => {
                self.answer_all().await?;
                self.refuse(answers, e).await
            }
        }
    }

    /// Counts `count` messages, charged already, and queues them on
    /// `stream`: what every publish does before it waits.
    async fn publish_on(
        &mut self,
        stream: &Stream,
        count: u32,
        entries: Bytes,
    ) -> Result<Commit, OpError> {
        self.count_published(count, entries.len());
        Ok(stream.publish_queued(count, entries).await?)
    }

    /// Publishes a PUBLISH_BATCH frame like a gathered batch: after what
    /// is gathered, without waiting for its level, answered in frame
    /// order. A refusal waits for the batches in flight, then is sent.
    async fn publish_batch(&mut self, frame: Frame) -> Result<(), End> {
        self.flush_gathered().await?;
        let id = frame.id;
        let queued = match (self.check(&frame), frame.msg) {
            (Err(e), _) => Err(e),
            (Ok(()), Message::PublishBatch(p)) => {
                let answers = Answers::Batch {
                    id,
                    mode: p.ack,
                    count: p.count,
                };
                let bytes = p.entries.len();
                self.queue_batch(p)
                    .await
                    .map(|commit| (commit, answers, bytes))
            }
            (Ok(()), _) => Err(OpError::Denied(Denied::NotAClientFrame)),
        };
        match queued {
            Ok((commit, answers, bytes)) => self.in_flight(commit, answers, bytes).await,
            Err(e) => {
                self.answer_all().await?;
                self.send(e.to_frame(id, &self.shared.metrics)).await
            }
        }
    }

    /// A PUBLISH_BATCH's messages charged and queued on their stream.
    async fn queue_batch(&mut self, p: rampart_proto::PublishBatch) -> Result<Commit, OpError> {
        let path = StreamPath {
            tenant: p.tenant,
            namespace: p.namespace,
            stream: p.stream,
        };
        let stream = self.stream(path)?;
        self.charge_rates(u64::from(p.count), p.entries.len())?;
        self.charge_stored(stream.durable().is_some(), p.entries.len())?;
        self.publish_on(&stream, p.count, p.entries).await
    }

    /// Keeps a published batch of `bytes` payload bytes until its level
    /// is reached: answered at once if it already is (a live stream's
    /// publish), and the oldest waited for beyond [`COMMITS_IN_FLIGHT`]
    /// or [`IN_FLIGHT_BYTES`].
    async fn in_flight(
        &mut self,
        commit: Commit,
        answers: Answers,
        bytes: usize,
    ) -> Result<(), End> {
        self.commits.push_back(InFlight {
            commit,
            answers,
            bytes,
        });
        while let Some(done) = self.commits.front_mut().and_then(|f| f.commit.try_take()) {
            self.answer_oldest(done).await?;
        }
        while self.commits.len() > COMMITS_IN_FLIGHT
            || (self.commits.len() > 1
                && self.commits.iter().map(|f| f.bytes).sum::<usize>() > IN_FLIGHT_BYTES)
        {
            self.answer_next().await?;
        }
        Ok(())
    }

    /// Publishes what is gathered and answers every batch in flight: what
    /// comes before answering a frame that is not a PUBLISH, so that
    /// answers keep the order of the frames.
    async fn settle(&mut self) -> Result<(), End> {
        self.flush_gathered().await?;
        self.answer_all().await
    }

    /// Waits for every batch in flight, oldest first, and answers each.
    async fn answer_all(&mut self) -> Result<(), End> {
        while !self.commits.is_empty() {
            self.answer_next().await?;
        }
        Ok(())
    }

    /// Waits for the oldest batch in flight and answers it.
    async fn answer_next(&mut self) -> Result<(), End> {
        let done = oldest(&mut self.commits).await;
        self.answer_oldest(done).await
    }

    /// Answers the oldest batch in flight, whose commit came to `done`.
    async fn answer_oldest(&mut self, done: Result<Published, BrokerError>) -> Result<(), End> {
        let Some(f) = self.commits.pop_front() else {
            return Ok(());
        };
        match done {
            Ok(p) => self.acknowledge(f.answers, durability(p.level)).await,
            Err(e) => self.refuse(f.answers, OpError::Broker(e)).await,
        }
    }

    /// Sends a published batch's acknowledgements in order, as each
    /// frame's ack mode asks.
    async fn acknowledge(&self, answers: Answers, durability: Durability) -> Result<(), End> {
        match answers {
            Answers::Publishes(acks) => {
                self.send_all(
                    acks.into_iter()
                        .filter(|(_, mode)| *mode != AckMode::None)
                        .map(|(id, _)| Frame::new(id, Ack::published(1, durability))),
                )
                .await
            }
            Answers::Batch { id, mode, count } => match mode {
                AckMode::None => Ok(()),
                AckMode::Batch => {
                    self.send(Frame::new(id, Ack::published(count, durability)))
                        .await
                }
                AckMode::Message => {
                    self.send_all((0..count).map(|_| Frame::new(id, Ack::published(1, durability))))
                        .await
                }
            },
        }
    }

    /// Sends a refusal to every frame of a batch: failures are never
    /// silent, whatever the ack mode.
    async fn refuse(&self, answers: Answers, e: OpError) -> Result<(), End> {
        let metrics = &self.shared.metrics;
        match answers {
            Answers::Publishes(acks) => {
                self.send_all(acks.into_iter().map(|(id, _)| e.to_frame(id, metrics)))
                    .await
            }
            Answers::Batch { id, .. } => self.send(e.to_frame(id, metrics)).await,
        }
    }

    /// Serves one authenticated frame. Request errors become NACKs here;
    /// only a dead writer ends the connection.
    async fn dispatch(&mut self, frame: Frame) -> Result<(), End> {
        let id = frame.id;
        if let Message::Auth(a) = frame.msg {
            return self.reauthenticate(id, a.method, a.credential).await;
        }
        match self.serve_request(frame).await {
            Ok(()) => Ok(()),
            Err(e) => self.send(e.to_frame(id, &self.shared.metrics)).await,
        }
    }

    /// Charges a publish of `count` messages and `bytes` bytes to the
    /// session's rate limits.
    fn charge_rates(&mut self, count: u64, bytes: usize) -> Result<(), Rejection> {
        let Some(s) = &mut self.session else {
            return Ok(());
        };
        let h = &mut s.limits;
        let rated = h
            .rate(RateKind::PublishMsgs, count)
            .and_then(|()| h.rate(RateKind::PublishBytes, bytes as u64));
        if let Err(r) = rated {
            self.throttle(&r);
            return Err(r);
        }
        Ok(())
    }

    /// Charges `bytes` of log entries to the tenant's stored bytes when
    /// they go to a durable stream.
    fn charge_stored(&mut self, durable: bool, bytes: usize) -> Result<(), Rejection> {
        let Some(s) = &mut self.session else {
            return Ok(());
        };
        if durable {
            let h = &mut s.limits;
            h.fits_usage(QuotaKind::StoredBytes, bytes as u64)?;
            h.add_usage(QuotaKind::StoredBytes, bytes as u64);
        }
        Ok(())
    }

    /// Counts a publish of `count` messages and `bytes` bytes of entries.
    fn count_published(&mut self, count: u32, bytes: usize) {
        self.published += u64::from(count);
        self.published_bytes += bytes as u64;
        if let Some(s) = &self.session {
            self.shared.metrics.published(
                s.principal.tenant.as_str(),
                u64::from(count),
                bytes as u64,
            );
        }
    }

    /// Charges `n` units of a rate to the session.
    fn charge(&mut self, k: RateKind, n: u64) -> Result<(), OpError> {
        let Some(s) = &mut self.session else {
            return Ok(());
        };
        s.limits.rate(k, n).map_err(|r| {
            self.throttle(&r);
            OpError::Limited(r)
        })
    }

    /// Stops reading this connection until a rate refusal's wait is over.
    fn throttle(&mut self, r: &Rejection) {
        if let Some(wait) = r.retry_after {
            let until = Instant::now() + wait.min(Duration::from_secs(1));
            self.throttled_until = Some(self.throttled_until.map_or(until, |t| t.max(until)));
        }
    }

    fn stream(&mut self, path: StreamPath) -> Result<Arc<Stream>, OpError> {
        if let Some(s) = self.streams.get(&path) {
            // A stream deleted (or replaced) since it was cached is looked
            // up afresh, so a recreated stream gets this connection's
            // publishes, not the dead one.
            if s.is_current() {
                return Ok(s.clone());
            }
        }
        let s = match self.shared.broker.existing(&path) {
            Some(s) => s,
            None => {
                // Auto-creation counts against the tenant's max_streams.
                if let Some(session) = &mut self.session {
                    if session.limits.tenant_quota(QuotaKind::Streams).is_some() {
                        let n = self.shared.broker.tenant_streams(&path.tenant);
                        session.limits.fits(QuotaKind::Streams, n, 1)?;
                    }
                }
                self.shared.broker.stream(&path)?
            }
        };
        if self.streams.len() >= STREAM_CACHE {
            self.streams.clear();
        }
        self.streams.insert(path, s.clone());
        Ok(s)
    }

    async fn serve_request(&mut self, frame: Frame) -> Result<(), OpError> {
        let id = frame.id;
        self.check(&frame)?;
        match frame.msg {
            Message::Ping => self.reply(Frame::new(id, Message::Pong)).await,
            Message::TokenRequest(t) => {
                let Some(s) = &self.session else {
                    return Err(OpError::Denied(Denied::NotAClientFrame));
                };
                let origin = &self.origin;
                let issued = self
                    .shared
                    .issue_audited(&s.principal, u64::from(t.ttl_ms), |token_id, exp| {
                        origin.apply(
                            audit::by(&s.principal, "token.issue", "issue", Outcome::Success)
                                .meta("token_id", token_id.to_string())
                                .meta("expires_at_ms", exp),
                        )
                    })
                    .await?;
                self.reply(Frame::new(
                    id,
                    Token {
                        token: issued.token.expose().clone(),
                        expires_at_ms: issued.expires_ms,
                    },
                ))
                .await
            }
            Message::Subscribe(s) => {
                let (stream, resource, quota) =
                    self.subscription_target(s.tenant, s.namespace, s.stream)?;
                let sub = stream.subscribe_at(s.start).await.map_err(|e| match e {
                    BrokerError::NotDurable => OpError::StartUnsupported,
                    e => OpError::Broker(e),
                })?;
                self.start_subscription(id, Arc::new(sub), resource, quota)
                    .await
            }
            Message::Consume(c) => {
                let (stream, resource, quota) =
                    self.subscription_target(c.tenant, c.namespace, c.stream)?;
                let cfg = &self.shared.config;
                let opts = (c.max_in_flight > 0 || c.ack_wait_ms > 0).then(|| ConsumerOptions {
                    max_in_flight: if c.max_in_flight > 0 {
                        c.max_in_flight
                    } else {
                        cfg.consumer_max_in_flight
                    },
                    ack_wait: Duration::from_millis(if c.ack_wait_ms > 0 {
                        u64::from(c.ack_wait_ms)
                    } else {
                        cfg.consumer_ack_wait_ms
                    }),
                });
                let sub = stream.consume(c.consumer.as_str(), c.start, opts)?;
                self.start_subscription(id, Arc::new(sub), resource, quota)
                    .await
            }
            Message::ConsumerAck(a) => {
                let s = self
                    .subscriptions
                    .get(&a.subscription_id)
                    .ok_or(OpError::NoSuchSubscription)?;
                let n = s.sub.ack(&a.offsets)?;
                self.reply(Frame::new(id, Ack::new(n))).await
            }
            Message::Unsubscribe(u) => {
                let s = self
                    .subscriptions
                    .remove(&u.subscription_id)
                    .ok_or(OpError::NoSuchSubscription)?;
                s.sub.close();
                s.task.abort();
                self.reply(Frame::new(id, Ack::new(0))).await
            }
            Message::CachePut(c) => {
                self.charge(RateKind::CacheOps, 1)?;
                let ttl = (c.ttl_ms > 0).then(|| Duration::from_millis(c.ttl_ms));
                let Some(s) = &mut self.session else {
                    return Err(OpError::Denied(Denied::NotAClientFrame));
                };
                let quota = s.limits.tenant_quota(QuotaKind::CacheBytes);
                let quota = quota.map(|q| usize::try_from(q).unwrap_or(usize::MAX));
                match self.shared.broker.cache().put_within(
                    std::time::Instant::now(),
                    &c.tenant,
                    &c.namespace,
                    &c.cache,
                    &c.key,
                    c.value,
                    ttl,
                    quota,
                ) {
                    // Full at the tenant's own quota: say which limit.
                    Err(BrokerError::CacheFull { limit }) if quota == Some(limit) => {
                        return Err(OpError::Limited(s.limits.over(QuotaKind::CacheBytes)));
                    }
                    r => r?,
                }
                self.reply(Frame::new(id, Ack::new(1))).await
            }
            Message::CacheGet(c) => {
                self.charge(RateKind::CacheOps, 1)?;
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
                self.charge(RateKind::CacheOps, 1)?;
                let removed = self.shared.broker.cache().delete(
                    std::time::Instant::now(),
                    &c.tenant,
                    &c.namespace,
                    &c.cache,
                    &c.key,
                );
                self.reply(Frame::new(id, Ack::new(u32::from(removed))))
                    .await
            }
            // HELLO after authentication, and server-only frames.
            _ => Err(OpError::Denied(Denied::NotAClientFrame)),
        }
    }

    async fn reply(&self, f: Frame) -> Result<(), OpError> {
        // A dead writer means the connection is going away; the reader
        // notices on its next read.
        let _ = self.out.frames([f]).await;
        Ok(())
    }

    /// The stream a SUBSCRIBE or CONSUME names, and the resource its
    /// subscription is re-checked against on policy changes; refused when
    /// the connection holds as many subscriptions as it may.
    fn subscription_target(
        &mut self,
        tenant: TenantId,
        namespace: NamespaceName,
        stream: StreamName,
    ) -> Result<(Arc<Stream>, Resource, QuotaGuard), OpError> {
        if self.subscriptions.len() >= MAX_SUBSCRIPTIONS {
            return Err(OpError::TooManySubscriptions(MAX_SUBSCRIPTIONS));
        }
        let quota = match &mut self.session {
            Some(s) => s.limits.acquire(QuotaKind::Subscriptions)?,
            None => return Err(OpError::Denied(Denied::NotAClientFrame)),
        };
        let resource = Resource::Stream(tenant.clone(), namespace.clone(), stream.clone());
        let path = StreamPath {
            tenant,
            namespace,
            stream,
        };
        Ok((self.stream(path)?, resource, quota))
    }

    /// Answers SUBSCRIBE or CONSUME: numbers the subscription, sends
    /// SUBSCRIBED (before any event), and starts its delivery task.
    async fn start_subscription(
        &mut self,
        id: u64,
        sub: Arc<Subscription>,
        resource: Resource,
        quota: QuotaGuard,
    ) -> Result<(), OpError> {
        let sid = self.next_subscription;
        self.next_subscription += 1;
        self.subscribed += 1;
        self.reply(Frame::new(
            id,
            Subscribed {
                subscription_id: sid,
            },
        ))
        .await?;
        let counted = Counted {
            shared: self.shared.clone(),
            tenant: self
                .session
                .as_ref()
                .map(|s| s.principal.tenant.to_string())
                .unwrap_or_default(),
        };
        let task = tokio::spawn(deliver(
            sub.clone(),
            sid,
            self.out.clone(),
            self.event_budget.clone(),
            self.gate.subscribe(),
            self.session.as_ref().map(|s| s.limits.clone()),
            counted,
        ));
        self.subscriptions.insert(
            sid,
            Subscribed_ {
                sub,
                task,
                resource,
                _quota: quota,
            },
        );
        Ok(())
    }
}

/// The wire form of how far a publish got.
fn durability(level: Level) -> Durability {
    match level {
        Level::Memory => Durability::Memory,
        Level::Written => Durability::Written,
        Level::Fsynced => Durability::Fsynced,
        // A level this server does not know of: claim nothing.
        _ => Durability::None,
    }
}

fn auth_ok(p: &Principal) -> AuthOk {
    AuthOk {
        tenant: p.tenant.clone(),
        principal: p.name.clone(),
        expires_at_ms: p.expires_at_ms.unwrap_or(0),
    }
}

/// Moves a subscription's batches to the connection writer until either
/// side goes away.
/// Where a subscription's deliveries are counted for `/metrics`.
struct Counted {
    shared: Arc<Shared>,
    /// The subscriber's tenant.
    tenant: String,
}

async fn deliver(
    sub: Arc<Subscription>,
    id: u64,
    out: Outbound,
    budget: Arc<Semaphore>,
    mut gate: watch::Receiver<bool>,
    mut limits: Option<Handle>,
    counted: Counted,
) {
    let mut batches = Vec::new();
    loop {
        // Paused while the connection's credential has expired; messages
        // wait in the subscriber queue under its policy.
        if gate.wait_for(|open| *open).await.is_err() {
            break;
        }
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
        // The credential may have expired while we waited for messages:
        // hold them until it is renewed (or the connection closes).
        if gate.wait_for(|open| *open).await.is_err() {
            break;
        }
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
        // Over deliver_bytes_per_sec, delivery waits: the messages stay in
        // the subscriber queue, under its slow-consumer policy. Charged in
        // pieces no larger than the bucket, so that batches bigger than
        // the burst still take their time at the rate.
        if let Some(h) = &mut limits {
            let mut left = bytes as u64;
            let mut piece = h.rate_burst(RateKind::DeliverBytes).unwrap_or(left).max(1);
            while left > 0 {
                let n = left.min(piece);
                match h.rate(RateKind::DeliverBytes, n) {
                    Ok(()) => left -= n,
                    // The limit shrank since the piece was sized.
                    Err(Rejection {
                        per_request: Some(most),
                        ..
                    }) => piece = most.max(1),
                    Err(r) => {
                        let wait = r.retry_after.unwrap_or(Duration::from_millis(10));
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        }
        if missed > 0 {
            debug!(subscription = id, missed, "slow consumer dropped messages");
            counted
                .shared
                .metrics
                .slow_consumer_dropped(&counted.tenant, missed);
        }
        let messages: u64 = batches.iter().map(|b| u64::from(b.count)).sum();
        counted
            .shared
            .metrics
            .delivered(&counted.tenant, messages, bytes as u64);
        let events = Out::Events {
            subscription: id,
            missed,
            batches: std::mem::take(&mut batches),
            _budget: permit,
        };
        if out.queue(events).await.is_err() {
            return;
        }
    }
    // The server ended the subscription (its stream was deleted, or its log
    // cannot serve what comes next): tell the client why, then end it, so
    // its end of the subscription finishes too.
    if let Some(e) = sub.ended() {
        let e = OpError::Broker(e);
        let message = format!("subscription {id} ended: {}", e.message());
        let _ = out.queue(Out::Frame(nack(0, e.code(), message))).await;
    }
    let _ = out.queue(Out::Frame(ended(id))).await;
}

/// `tenant/namespace` when the namespace a stream or cache resource lies
/// in is disabled.
fn disabled_namespace(shared: &Shared, resource: &Resource) -> Option<String> {
    let (t, ns) = match resource {
        Resource::Stream(t, ns, _) | Resource::Cache(t, ns, _) | Resource::Namespace(t, ns) => {
            (t, ns)
        }
        _ => return None,
    };
    shared
        .identity
        .namespace_disabled(t, ns)
        .then(|| format!("{t}/{ns}"))
}

/// The frame that tells a client the server ended one of its subscriptions.
fn ended(subscription_id: u64) -> Frame {
    Frame::new(0, Unsubscribe { subscription_id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publish_grant_covers_its_stream_only_while_nothing_changed() {
        let publish = |t: &str, ns: &str, st: &str| Publish {
            ack: AckMode::None,
            tenant: TenantId::parse(t).unwrap(),
            namespace: NamespaceName::parse(ns).unwrap(),
            stream: StreamName::parse(st).unwrap(),
            payload: Bytes::new(),
        };
        let g = PublishGrant {
            tenant: TenantId::parse("acme").unwrap(),
            namespace: NamespaceName::parse("prod").unwrap(),
            stream: StreamName::parse("orders").unwrap(),
            policy_generation: 7,
            tenants_generation: 3,
        };
        assert!(g.covers(&publish("acme", "prod", "orders"), 7, 3));
        // Another stream, namespace or tenant is checked again.
        assert!(!g.covers(&publish("acme", "prod", "other"), 7, 3));
        assert!(!g.covers(&publish("acme", "staging", "orders"), 7, 3));
        assert!(!g.covers(&publish("globex", "prod", "orders"), 7, 3));
        // So is the same stream after a policy or tenant record change.
        assert!(!g.covers(&publish("acme", "prod", "orders"), 8, 3));
        assert!(!g.covers(&publish("acme", "prod", "orders"), 7, 4));
    }

    /// One read of up to `n` bytes into the room `reads` prepared, all of it
    /// served at once; returns the room the read was given.
    fn read(reads: &mut ReadSize, buf: &mut BytesMut, n: usize) -> usize {
        reads.prepare(buf);
        let spare = buf.capacity() - buf.len();
        let got = n.min(spare);
        buf.extend_from_slice(&vec![1u8; got]);
        reads.read(got, spare);
        drop(buf.split());
        spare
    }

    #[test]
    fn a_burst_grows_the_reads_and_a_quiet_connection_lets_the_buffer_go() {
        let mut reads = ReadSize::default();
        let mut buf = BytesMut::with_capacity(READ_MIN);
        // Quiet: small reads keep to the minimum.
        for _ in 0..100 {
            assert!(read(&mut reads, &mut buf, 200) <= READ_MIN);
        }
        // A burst: every read fills its room, so the next one doubles.
        let mut rooms = Vec::new();
        for _ in 0..8 {
            rooms.push(read(&mut reads, &mut buf, usize::MAX));
        }
        assert!(
            rooms.windows(2).take(3).all(|w| w[1] >= 2 * w[0]),
            "{rooms:?}"
        );
        assert!(rooms.iter().all(|&r| r <= 2 * READ_MAX), "{rooms:?}");
        assert!(*rooms.last().unwrap() >= READ_MAX, "{rooms:?}");
        // The socket drained: the next read is back to the minimum, and the
        // burst's buffer is let go before it.
        read(&mut reads, &mut buf, 100);
        reads.prepare(&mut buf);
        assert!(buf.capacity() <= READ_MIN, "{}", buf.capacity());
    }

    #[test]
    fn a_frame_larger_than_the_reads_still_gets_its_room() {
        let mut reads = ReadSize::default();
        let mut buf = BytesMut::with_capacity(READ_MIN);
        let frame = 300 * 1024;
        // The frame stays in the buffer until all of it is read.
        while buf.len() < frame {
            reads.prepare(&mut buf);
            let spare = buf.capacity() - buf.len();
            let got = spare.min(frame - buf.len());
            buf.extend_from_slice(&vec![2u8; got]);
            reads.read(got, spare);
        }
        assert_eq!(buf.len(), frame);
        drop(buf.split());
        reads.read(10, 4096);
        reads.prepare(&mut buf);
        assert!(buf.capacity() <= READ_MIN, "{}", buf.capacity());
    }
}
