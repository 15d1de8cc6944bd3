//! A connection's way out. Everything it sends goes through one writer
//! half, in order, gathered into large writes so that small frames share
//! TLS records. Where the writer half takes several buffers per call
//! ([`ChunkWrite`]: TLS over TCP through a vectored write, a QUIC stream
//! by keeping the [`Bytes`] themselves), a large event batch shared by
//! every subscriber of a stream goes into that write as it is, next to the
//! subscriber's own frame head, instead of being copied into the buffer
//! once per subscriber. A QUIC stream also takes the gathered buffer
//! itself, where it would otherwise copy it into its own.
//!
//! Two paths lead there:
//! - the **queue** to the connection's writer task, for subscription
//!   deliveries (written by their own tasks) and for anything sent while
//!   something else is queued or being written;
//! - the **direct** path: when nothing is queued and no write is under way,
//!   the task that has frames to send (the connection's reader answering a
//!   request) writes them itself. A request-reply exchange then costs no
//!   hand-off to another task: one wake-up and one queue operation fewer
//!   per reply, which `rampart bench durable --sync on_commit --concurrency
//!   64` measured (see `docs/performance.md`).
//!
//! Order: items are counted in `queued` before they enter the queue and
//! uncounted by the writer once written, under the write lock. The direct
//! path writes only while holding that lock and seeing the count at zero,
//! so it never overtakes anything queued before it; frames that other tasks
//! queue while it writes follow it, as they would in the queue.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use rampart_proto::{Frame, SharedEvents};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Mutex, OwnedSemaphorePermit};

/// Bytes the writer gathers before one write call.
const WRITE_COALESCE: usize = 256 * 1024;
/// Items queued between the connection's tasks and its writer.
const WRITER_QUEUE: usize = 1024;
/// The most write buffer a connection keeps once nothing more is waiting
/// to be written. One grown past it for a burst (or a large frame) is let
/// go after its write unless more is queued: most connections of a broker
/// are quiet most of the time, and a buffer kept at its high-water mark
/// would cost each of them that much for good (with mimalloc's huge pages,
/// allocated is resident). The writer task sizes the next burst's buffer
/// from the last one, so a busy connection pays one allocation per write,
/// not a doubling series.
const WRITE_KEEP: usize = 16 * 1024;
/// Shared event bytes at least this long go out by reference, next to the
/// subscriber's own frame head, through a vectored write: the TLS layer
/// copies them once, into its records, instead of twice. Shorter ones are
/// copied into the buffer, where a slice of their own would cost more than
/// the copy.
const BY_REFERENCE: usize = 1024;
/// Buffers handed to one vectored write at most.
const SLICES: usize = 64;

/// What goes out through the queue.
pub(crate) enum Out {
    Frame(Frame),
    Events {
        subscription: u64,
        missed: u64,
        batches: Vec<SharedEvents>,
        /// Share of the connection's event budget, returned once encoded.
        _budget: OwnedSemaphorePermit,
    },
    /// Write what came before, then shut the writer half down.
    Close,
}

/// The connection's writer half has failed or is shut: the connection is
/// going away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WriterGone;

/// A handle on a connection's way out; cheap to clone (one per delivery
/// task).
#[derive(Clone)]
pub(crate) struct Outbound {
    tx: mpsc::Sender<Out>,
    shared: Arc<Shared>,
}

struct Shared {
    side: Mutex<WriteSide>,
    /// Items in the queue, or taken from it and not yet written.
    queued: AtomicUsize,
}

struct WriteSide {
    w: Box<dyn ChunkWrite>,
    /// `w` takes several buffers in one call, so shared event bytes go to
    /// it by reference.
    vectored: bool,
    /// `w` keeps the `Bytes` it is given (a QUIC stream), so the buffer
    /// goes to it as it is too, instead of being copied.
    owns: bool,
    /// What goes out before `buf`, in order: frame heads split off `buf`
    /// and the shared event bytes that follow them. Empty unless `w` is
    /// vectored.
    chunks: Vec<Bytes>,
    buf: BytesMut,
    /// Bytes of the last write, what the writer task reserves for the
    /// next one.
    last: usize,
    /// A write failed or the half is shut: nothing more is written.
    done: bool,
}

impl WriteSide {
    /// Writes and flushes the buffer. `false` once the writer half has
    /// failed or was shut.
    async fn write_buffered(&mut self) -> bool {
        if self.done {
            self.chunks.clear();
            self.buf.clear();
            return false;
        }
        self.last = self.buf.len();
        let written = if self.chunks.is_empty() && !self.owns {
            self.w.write_all(&self.buf).await
        } else {
            // Taken whole, spare room and all: the heads split off it share
            // its allocation, which is let go with them once written
            // (`settle` would see only the room left after the splits).
            let rest = std::mem::take(&mut self.buf);
            if !rest.is_empty() {
                self.chunks.push(rest.freeze());
            }
            write_chunks(&mut self.w, &mut self.chunks).await
        };
        let ok = written.is_ok() && self.w.flush().await.is_ok();
        self.chunks.clear();
        self.buf.clear();
        self.done = !ok;
        ok
    }

    /// Adds one subscriber's frames of `batches`: the shared bytes of a
    /// large batch by reference when `w` is vectored, copied otherwise.
    fn events(&mut self, subscription: u64, mut missed: u64, batches: &[SharedEvents]) {
        for b in batches {
            let missed = std::mem::take(&mut missed);
            if self.vectored && b.entries.len() >= BY_REFERENCE {
                b.write_head(&mut self.buf, subscription, missed);
                self.chunks.push(self.buf.split().freeze());
                self.chunks.push(b.entries.clone());
            } else {
                b.write_frame(&mut self.buf, subscription, missed);
            }
        }
    }

    /// Bytes waiting to be written.
    fn pending(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum::<usize>() + self.buf.len()
    }

    /// After a write: lets a buffer grown past [`WRITE_KEEP`] go unless
    /// `more` is waiting to be written (and one grown for a frame larger
    /// than a whole gathered write in any case).
    fn settle(&mut self, more: bool) {
        let cap = self.buf.capacity();
        if cap > 4 * WRITE_COALESCE || (!more && cap > WRITE_KEEP) {
            self.buf = BytesMut::new();
        }
    }
}

/// The way out of a connection whose writer half is `w`, and the writer
/// task to spawn for its queue.
pub(crate) fn outbound<W>(w: W) -> (Outbound, impl std::future::Future<Output = ()>)
where
    W: ChunkWrite + 'static,
{
    let (tx, rx) = mpsc::channel(WRITER_QUEUE);
    let owns = w.owns_chunks();
    let vectored = owns || w.is_write_vectored();
    let shared = Arc::new(Shared {
        side: Mutex::new(WriteSide {
            w: Box::new(w),
            vectored,
            owns,
            chunks: Vec::new(),
            buf: BytesMut::new(),
            last: 0,
            done: false,
        }),
        queued: AtomicUsize::new(0),
    });
    let task = writer(shared.clone(), rx);
    (Outbound { tx, shared }, task)
}

impl Outbound {
    /// Sends `frames` in order, after everything queued before: written at
    /// once when nothing is queued or being written, else queued.
    pub(crate) async fn frames<I>(&self, frames: I) -> Result<(), WriterGone>
    where
        I: IntoIterator<Item = Frame>,
    {
        let mut frames = frames.into_iter().peekable();
        if frames.peek().is_none() {
            return Ok(());
        }
        if self.shared.queued.load(Ordering::Acquire) == 0 {
            if let Ok(mut side) = self.shared.side.try_lock() {
                // Checked again under the lock: the writer uncounts what it
                // wrote before letting the lock go.
                if self.shared.queued.load(Ordering::Acquire) == 0 {
                    for f in frames {
                        f.encode(&mut side.buf);
                    }
                    let ok = side.write_buffered().await;
                    side.settle(false);
                    return ok.then_some(()).ok_or(WriterGone);
                }
            }
        }
        for f in frames {
            self.queue(Out::Frame(f)).await?;
        }
        Ok(())
    }

    /// Queues `item` for the writer task, waiting while the queue is full.
    pub(crate) async fn queue(&self, item: Out) -> Result<(), WriterGone> {
        self.shared.queued.fetch_add(1, Ordering::AcqRel);
        if self.tx.send(item).await.is_err() {
            self.shared.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(WriterGone);
        }
        Ok(())
    }
}

/// Writes everything queued, in order, gathering whatever is queued into
/// one buffer per write. Ends after [`Out::Close`], when every sender is
/// gone, or when a write fails; then shuts the writer half down.
async fn writer(shared: Arc<Shared>, mut rx: mpsc::Receiver<Out>) {
    while let Some(item) = rx.recv().await {
        let mut side = shared.side.lock().await;
        let reserve = side.last.min(WRITE_COALESCE);
        side.buf.reserve(reserve);
        let mut taken = 1;
        let mut closing = encode(item, &mut side);
        while !closing && side.pending() < WRITE_COALESCE {
            match rx.try_recv() {
                Ok(item) => {
                    taken += 1;
                    closing |= encode(item, &mut side);
                }
                Err(_) => break,
            }
        }
        let ok = side.write_buffered().await;
        side.settle(!rx.is_empty());
        shared.queued.fetch_sub(taken, Ordering::AcqRel);
        if !ok || closing {
            break;
        }
    }
    let mut side = shared.side.lock().await;
    if !side.done {
        side.done = true;
        let _ = side.w.shutdown().await;
    }
}

/// Adds `item` to what `side` writes next; `true` for [`Out::Close`].
fn encode(item: Out, side: &mut WriteSide) -> bool {
    match item {
        Out::Frame(f) => f.encode(&mut side.buf),
        Out::Events {
            subscription,
            missed,
            batches,
            ..
        } => side.events(subscription, missed, &batches),
        Out::Close => return true,
    }
    false
}

/// A connection's writer half, as the writer task takes it.
pub(crate) trait ChunkWrite: AsyncWrite + Send + Unpin {
    /// `true` when [`poll_write_chunks`](Self::poll_write_chunks) keeps the
    /// `Bytes` it is given instead of copying them (a QUIC stream).
    fn owns_chunks(&self) -> bool {
        false
    }

    /// Writes from the front of `chunks`, advancing them past what was
    /// written; ready with an error if nothing could be. By default one
    /// vectored write of at most [`SLICES`] buffers, whose slices are made
    /// afresh on each poll, on the poll's stack: an array of them held
    /// across an await would sit in the writer task's future, about 1 KiB
    /// more on every connection.
    fn poll_write_chunks(
        &mut self,
        cx: &mut Context<'_>,
        chunks: &mut [Bytes],
    ) -> Poll<std::io::Result<()>> {
        let mut slices = [IoSlice::new(&[]); SLICES];
        let mut count = 0;
        for (slot, chunk) in slices.iter_mut().zip(chunks.iter()) {
            *slot = IoSlice::new(chunk);
            count += 1;
        }
        let mut n = match Pin::new(&mut *self).poll_write_vectored(cx, &slices[..count]) {
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => n,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        };
        for chunk in chunks.iter_mut() {
            let step = n.min(chunk.len());
            chunk.advance(step);
            n -= step;
            if n == 0 {
                break;
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Send> ChunkWrite for tokio::io::WriteHalf<T> {}
#[cfg(test)]
impl ChunkWrite for tokio::io::DuplexStream {}
#[cfg(test)]
impl ChunkWrite for tokio::io::Sink {}

impl ChunkWrite for quinn::SendStream {
    fn owns_chunks(&self) -> bool {
        true
    }

    /// quinn's `write_chunks` moves whole chunks into the stream's send
    /// buffer (and advances a chunk it took part of); `poll_write` would
    /// copy them there. Polled once and dropped, as quinn's own
    /// `poll_write` does with `write`: nothing is written unless the future
    /// resolves.
    fn poll_write_chunks(
        &mut self,
        cx: &mut Context<'_>,
        chunks: &mut [Bytes],
    ) -> Poll<std::io::Result<()>> {
        let polled = std::pin::pin!(self.write_chunks(chunks)).poll(cx);
        polled.map(|r| r.map(|_| ()).map_err(std::io::Error::from))
    }
}

/// Writes all of `chunks`, in order.
async fn write_chunks(w: &mut Box<dyn ChunkWrite>, chunks: &mut [Bytes]) -> std::io::Result<()> {
    let mut first = 0;
    loop {
        while chunks.get(first).is_some_and(Bytes::is_empty) {
            first += 1;
        }
        if first == chunks.len() {
            return Ok(());
        }
        let rest = &mut chunks[first..];
        std::future::poll_fn(|cx| w.poll_write_chunks(cx, rest)).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_proto::{FrameDecoder, Message, DEFAULT_MAX_FRAME};
    use tokio::io::AsyncReadExt;

    fn ping(id: u64) -> Frame {
        Frame::new(id, Message::Ping)
    }

    async fn read_ids(mut r: tokio::io::DuplexStream) -> Vec<u64> {
        let mut bytes = Vec::new();
        r.read_to_end(&mut bytes).await.unwrap();
        let mut buf = BytesMut::from(&bytes[..]);
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
        let mut ids = Vec::new();
        while let Some(d) = decoder.decode(&mut buf).unwrap() {
            ids.push(d.frame.unwrap().id);
        }
        ids
    }

    #[tokio::test]
    async fn direct_and_queued_frames_keep_their_order() {
        let (w, r) = tokio::io::duplex(1 << 20);
        let (out, task) = outbound(w);
        let writer = tokio::spawn(task);
        // Nothing queued: written directly.
        out.frames([ping(1), ping(2)]).await.unwrap();
        // Queued while the writer task has not run yet: the direct path
        // must wait behind them, so it queues too.
        out.queue(Out::Frame(ping(3))).await.unwrap();
        out.queue(Out::Frame(ping(4))).await.unwrap();
        out.frames([ping(5)]).await.unwrap();
        out.queue(Out::Close).await.unwrap();
        drop(out);
        writer.await.unwrap();
        assert_eq!(read_ids(r).await, [1, 2, 3, 4, 5]);
    }

    #[tokio::test]
    async fn many_senders_lose_nothing_and_each_keeps_its_order() {
        let (w, r) = tokio::io::duplex(1 << 20);
        let (out, task) = outbound(w);
        let writer = tokio::spawn(task);
        let mut senders = Vec::new();
        for s in 0..4u64 {
            let out = out.clone();
            senders.push(tokio::spawn(async move {
                for i in 0..500u64 {
                    let id = s * 1_000 + i;
                    if i % 3 == 0 {
                        out.queue(Out::Frame(ping(id))).await.unwrap();
                    } else {
                        out.frames([ping(id)]).await.unwrap();
                    }
                    if i % 50 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            }));
        }
        for s in senders {
            s.await.unwrap();
        }
        out.queue(Out::Close).await.unwrap();
        drop(out);
        writer.await.unwrap();
        let ids = read_ids(r).await;
        assert_eq!(ids.len(), 2_000);
        for s in 0..4u64 {
            let mine: Vec<u64> = ids.iter().copied().filter(|id| id / 1_000 == s).collect();
            let want: Vec<u64> = (0..500).map(|i| s * 1_000 + i).collect();
            assert_eq!(mine, want, "sender {s}");
        }
    }

    /// A frame of `len` payload bytes.
    fn big(id: u64, len: usize) -> Frame {
        Frame::new(
            id,
            Message::Publish(rampart_proto::Publish {
                ack: rampart_proto::AckMode::None,
                tenant: rampart_proto::TenantId::parse("acme").unwrap(),
                namespace: rampart_proto::NamespaceName::parse("prod").unwrap(),
                stream: rampart_proto::StreamName::parse("orders").unwrap(),
                payload: vec![7u8; len].into(),
            }),
        )
    }

    fn held(out: &Outbound) -> usize {
        out.shared
            .side
            .try_lock()
            .map_or(usize::MAX, |s| s.buf.capacity())
    }

    #[tokio::test]
    async fn a_quiet_connection_keeps_little_write_buffer() {
        let (w, mut r) = tokio::io::duplex(1 << 22);
        let (out, task) = outbound(w);
        let writer = tokio::spawn(task);
        // Written directly: a large reply, then nothing.
        out.frames([big(1, 200_000)]).await.unwrap();
        assert!(held(&out) <= WRITE_KEEP, "{}", held(&out));
        // Through the writer task: a burst, then nothing.
        for id in 2..40 {
            out.queue(Out::Frame(big(id, 30_000))).await.unwrap();
        }
        let mut sink = vec![0u8; 1 << 16];
        let mut read = 0;
        while read < 200_000 + 38 * 30_000 {
            read += r.read(&mut sink).await.unwrap();
        }
        for _ in 0..100 {
            if out.shared.queued.load(Ordering::Acquire) == 0 && held(&out) <= WRITE_KEEP {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(out.shared.queued.load(Ordering::Acquire), 0);
        assert!(held(&out) <= WRITE_KEEP, "{}", held(&out));
        // Small replies keep their small buffer (no allocation per write).
        out.frames([ping(100)]).await.unwrap();
        let small = held(&out);
        assert!(small > 0 && small <= WRITE_KEEP, "{small}");
        out.frames([ping(101)]).await.unwrap();
        assert_eq!(held(&out), small);
        drop(out);
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn a_closed_peer_is_reported_and_the_writer_ends() {
        let (w, r) = tokio::io::duplex(64);
        drop(r);
        let (out, task) = outbound(w);
        let writer = tokio::spawn(task);
        assert_eq!(out.frames([ping(1)]).await, Err(WriterGone));
        // The queue still takes items until the writer task has ended;
        // it ends on the failed half without writing.
        let _ = out.queue(Out::Frame(ping(2))).await;
        drop(out);
        writer.await.unwrap();
    }

    /// A writer that takes several buffers per call, at most `per_call`
    /// bytes, and notes where every buffer it was handed lives.
    struct Vectored {
        data: Arc<std::sync::Mutex<(Vec<u8>, Vec<usize>)>>,
        per_call: usize,
    }

    impl ChunkWrite for Vectored {}

    impl AsyncWrite for Vectored {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let mut data = self.data.lock().unwrap();
            let mut left = self.per_call;
            for b in bufs {
                data.1.push(b.as_ptr() as usize);
                let n = left.min(b.len());
                data.0.extend_from_slice(&b[..n]);
                left -= n;
                if left == 0 {
                    break;
                }
            }
            std::task::Poll::Ready(Ok(self.per_call - left))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    fn events(first_seq: u64, payloads: &[&[u8]]) -> SharedEvents {
        let mut b = rampart_proto::EntriesBuilder::new();
        for p in payloads {
            b.push(p);
        }
        let (count, entries) = b.finish();
        SharedEvents {
            first_seq,
            count,
            entries,
        }
    }

    #[tokio::test]
    async fn large_shared_events_go_out_by_reference_and_whole() {
        let data = Arc::new(std::sync::Mutex::new((Vec::new(), Vec::new())));
        // 700 bytes per call: heads and entries are cut mid-way.
        let w = Vectored {
            data: data.clone(),
            per_call: 700,
        };
        let (out, task) = outbound(w);
        let budget = Arc::new(tokio::sync::Semaphore::new(8));
        let small = events(1, &[b"tiny", b"small"]);
        let large = events(3, &[&[5u8; 3000], &[6u8; 10]]);
        out.queue(Out::Frame(ping(1))).await.unwrap();
        out.queue(Out::Events {
            subscription: 7,
            missed: 2,
            batches: vec![small.clone(), large.clone()],
            _budget: budget.clone().acquire_owned().await.unwrap(),
        })
        .await
        .unwrap();
        out.queue(Out::Frame(ping(2))).await.unwrap();
        out.queue(Out::Close).await.unwrap();
        drop(out);
        task.await;

        let (bytes, handed) = std::mem::take(&mut *data.lock().unwrap());
        assert!(
            handed.contains(&(large.entries.as_ptr() as usize)),
            "the large batch's shared bytes were handed over as they are"
        );
        assert!(
            !handed.contains(&(small.entries.as_ptr() as usize)),
            "the small batch was copied into the buffer"
        );
        let mut buf = BytesMut::from(&bytes[..]);
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
        let mut got = Vec::new();
        while let Some(d) = decoder.decode(&mut buf).unwrap() {
            got.push(d.frame.unwrap());
        }
        assert!(buf.is_empty());
        assert_eq!(got.len(), 4);
        assert_eq!((got[0].id, got[3].id), (1, 2));
        for (frame, (want, missed)) in got[1..3].iter().zip([(&small, 2), (&large, 0)]) {
            let Message::EventBatch(e) = &frame.msg else {
                panic!("an event batch, got {:?}", frame.msg);
            };
            assert_eq!(
                (e.subscription_id, e.missed, e.first_seq, e.count),
                (7, missed, want.first_seq, want.count)
            );
            assert_eq!(e.entries, want.entries);
        }
    }

    /// A writer that keeps the `Bytes` it is handed, at most `per_call`
    /// bytes per call, as a QUIC stream does; its copying `poll_write`
    /// only counts how often it was used.
    struct Keeps {
        kept: Arc<std::sync::Mutex<Vec<Bytes>>>,
        copied: Arc<AtomicUsize>,
        per_call: usize,
    }

    impl ChunkWrite for Keeps {
        fn owns_chunks(&self) -> bool {
            true
        }

        fn poll_write_chunks(
            &mut self,
            _cx: &mut Context<'_>,
            chunks: &mut [Bytes],
        ) -> Poll<std::io::Result<()>> {
            let mut kept = self.kept.lock().unwrap();
            let mut left = self.per_call;
            for chunk in chunks.iter_mut() {
                let n = left.min(chunk.len());
                kept.push(chunk.split_to(n));
                left -= n;
                if left == 0 {
                    break;
                }
            }
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Keeps {
        fn poll_write(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.copied.fetch_add(1, Ordering::Relaxed);
            self.kept.lock().unwrap().push(Bytes::copy_from_slice(buf));
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_stream_that_keeps_chunks_is_handed_everything_as_it_is() {
        let kept = Arc::new(std::sync::Mutex::new(Vec::new()));
        let copied = Arc::new(AtomicUsize::new(0));
        let w = Keeps {
            kept: kept.clone(),
            copied: copied.clone(),
            per_call: 900,
        };
        let (out, task) = outbound(w);
        let writer = tokio::spawn(task);
        // Direct, then queued: both hand their buffer over.
        out.frames([ping(1)]).await.unwrap();
        let budget = Arc::new(tokio::sync::Semaphore::new(8));
        let small = events(1, &[b"tiny", b"small"]);
        let large = events(3, &[&[5u8; 3000], &[6u8; 10]]);
        out.queue(Out::Events {
            subscription: 7,
            missed: 0,
            batches: vec![small.clone(), large.clone()],
            _budget: budget.clone().acquire_owned().await.unwrap(),
        })
        .await
        .unwrap();
        out.queue(Out::Frame(ping(2))).await.unwrap();
        out.queue(Out::Close).await.unwrap();
        drop(out);
        writer.await.unwrap();

        assert_eq!(copied.load(Ordering::Relaxed), 0, "something was copied");
        let kept = std::mem::take(&mut *kept.lock().unwrap());
        assert!(
            kept.iter().any(|c| c.as_ptr() == large.entries.as_ptr()),
            "the large batch's shared bytes were handed over as they are"
        );
        let mut buf = BytesMut::new();
        for c in &kept {
            buf.extend_from_slice(c);
        }
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
        let mut got = Vec::new();
        while let Some(d) = decoder.decode(&mut buf).unwrap() {
            got.push(d.frame.unwrap());
        }
        assert!(buf.is_empty());
        assert_eq!(got.len(), 4);
        assert_eq!((got[0].id, got[3].id), (1, 2));
        for (frame, want) in got[1..3].iter().zip([&small, &large]) {
            let Message::EventBatch(e) = &frame.msg else {
                panic!("an event batch, got {:?}", frame.msg);
            };
            assert_eq!((e.first_seq, e.count), (want.first_seq, want.count));
            assert_eq!(e.entries, want.entries);
        }
    }

    /// The writer task lives as long as its connection, and its future is
    /// allocated whole for that time: what it holds across an await (an
    /// array of slices for a vectored write once made it 1,336 bytes
    /// instead of 424) costs every quiet connection.
    #[test]
    fn the_writer_task_is_small() {
        let (_out, task) = outbound(tokio::io::sink());
        let size = std::mem::size_of_val(&task);
        assert!(size < 1024, "the writer future is {size} bytes");
    }
}
