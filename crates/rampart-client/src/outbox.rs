//! The write side of a connection, shared by the callers and the writer
//! task.
//!
//! A request costs no task hand-off on its way out when its caller finds
//! the connection idle (nothing queued, nobody writing) and no other
//! request of the connection waiting for a reply: the caller writes the
//! frame itself, as far as the stream takes it without waiting. Everything
//! else goes to the queue: a frame behind others (the writer task gathers
//! a burst into as few writes as it can), the rest of a frame the stream
//! did not take, a flush that would wait. Only the writer task ever waits
//! on the stream, so a caller that gives up (a timeout, a dropped future)
//! never leaves half a frame behind: whatever it did not write is already
//! queued, ahead of anything queued since.
//!
//! The queue and the stream have locks of their own: a caller queueing a
//! frame never waits for a write in progress.
//!
//! Queued frames stay whole until the writer task takes them: one frame
//! alone is written as it is, several are gathered into one buffer, up to
//! [`GATHER`] bytes. The writer task yields once before each take, so that
//! senders already woken queue their frames first and share the write. A
//! queued frame holds its share of the connection's write budget until its
//! last byte is written, and a gathering buffer grown by a burst is let go
//! once the burst is written out.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncWrite;
use tokio::sync::OwnedSemaphorePermit;

use crate::error::ClientError;

/// Bytes of queued frames gathered into one write at most.
const GATHER: usize = 256 * 1024;
/// A gathering buffer that grew past this is let go once written out, so
/// a connection keeps no burst-sized buffer between bursts.
const GATHER_KEEP: usize = 64 * 1024;

/// A frame (or the rest of one) and its share of the write budget.
type Queued = (Bytes, Option<OwnedSemaphorePermit>);

/// The write side of one connection.
pub(crate) struct Outbox {
    queue: Mutex<Queue>,
    stream: Mutex<Stream>,
}

/// Who is writing to the stream.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Writing {
    /// Nobody: nothing is queued.
    Idle,
    /// A caller, its own frame; it hands what is left to the writer task.
    Caller,
    /// The writer task, until the queue is written out and flushed.
    Task,
}

struct Queue {
    frames: VecDeque<Queued>,
    writing: Writing,
    /// The client is gone: the writer task writes out the queue, then shuts
    /// the stream down.
    closing: bool,
    /// A write failed: nothing more is written.
    failed: bool,
    /// The writer task's waker, while it waits for work.
    waker: Option<Waker>,
}

impl Queue {
    /// Hands the writing to the writer task; the waker to wake, if it
    /// waits.
    fn hand_to_task(&mut self) -> Option<Waker> {
        self.writing = Writing::Task;
        self.waker.take()
    }
}

/// A connection's write half, as the writer takes it.
pub(crate) trait FrameWrite: AsyncWrite + Send {
    /// Writes from the front of `buf` as [`AsyncWrite::poll_write`] does,
    /// but may keep a reference to `buf` instead of copying it: a QUIC
    /// stream queues [`Bytes`] as they are. TLS copies what it is given
    /// into its records anyway, so the default writes the slice.
    fn poll_write_bytes(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &Bytes,
    ) -> Poll<io::Result<usize>> {
        self.poll_write(cx, buf)
    }
}

impl<T: AsyncWrite + Send> FrameWrite for tokio::io::WriteHalf<T> {}
#[cfg(test)]
impl FrameWrite for tokio::io::Sink {}
#[cfg(test)]
impl FrameWrite for tokio::io::DuplexStream {}

impl FrameWrite for quinn::SendStream {
    /// quinn's `write_chunks` moves the chunk into the stream's send
    /// buffer; `poll_write` would copy it there. Polled once and dropped,
    /// as `poll_write` itself does with `write`: quinn writes nothing
    /// unless the future resolves.
    fn poll_write_bytes(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &Bytes,
    ) -> Poll<io::Result<usize>> {
        let mut chunks = [buf.clone()];
        let polled = std::pin::pin!(self.get_mut().write_chunks(&mut chunks)).poll(cx);
        polled.map(|r| r.map(|w| w.bytes).map_err(io::Error::from))
    }
}

/// Adds a frame's budget share to `shares`, merged into the last one when
/// both come from the same semaphore (they all do: the connection's write
/// budget). Giving shares back takes the semaphore's lock once per permit,
/// and one per frame was 2.2% of a single-message publisher's CPU.
fn keep_share(shares: &mut Vec<OwnedSemaphorePermit>, share: Option<OwnedSemaphorePermit>) {
    let Some(share) = share else { return };
    match shares.last_mut() {
        Some(last) if Arc::ptr_eq(last.semaphore(), share.semaphore()) => last.merge(share),
        _ => shares.push(share),
    }
}

struct Stream {
    w: Pin<Box<dyn FrameWrite>>,
    /// What the writer task is writing, not yet taken by `w`: one frame,
    /// or several gathered.
    current: Bytes,
    /// The budget shares of the frames in `current`, merged (see
    /// [`keep_share`]).
    shares: Vec<OwnedSemaphorePermit>,
    /// Frames taken from the queue, on their way into `current`.
    taken: Vec<Queued>,
    /// Where several frames are gathered.
    gathered: BytesMut,
    /// `gathered` grew past [`GATHER_KEEP`] during this burst.
    grown: bool,
    /// The writer task has yielded since it last took frames. It yields
    /// once before each take, so that the tasks already woken to send
    /// (say the callers whose replies one read just handed out) queue
    /// their frames first and go out in the same write. Without it, 64
    /// publishes in flight on one connection went out about one frame per
    /// `writev` (a loopback round of its own, each waking the server);
    /// with it, `rampart bench durable --sync interval:1000
    /// --connections 1` acknowledged about 30% more.
    yielded: bool,
}

/// How far a caller's own write went.
enum Wrote {
    /// All of it, flushed.
    All,
    /// This many bytes; the rest, or the flush, is left to the writer.
    Part(usize),
    Failed,
}

impl Stream {
    /// Writes `bytes` and flushes as far as `w` goes without waiting. The
    /// writer task takes over where it would wait, and its own poll
    /// registers its own waker: the caller's is never needed.
    fn write_now(&mut self, bytes: &Bytes) -> Wrote {
        let mut cx = Context::from_waker(Waker::noop());
        let mut from = 0;
        while from < bytes.len() {
            // A slice only for the rest of a partial write: slicing a
            // `Bytes` made from a `Vec` allocates its shared header.
            let rest;
            let chunk = if from == 0 {
                bytes
            } else {
                rest = bytes.slice(from..);
                &rest
            };
            match self.w.as_mut().poll_write_bytes(&mut cx, chunk) {
                Poll::Ready(Ok(n)) if n > 0 => from += n,
                Poll::Ready(_) => return Wrote::Failed,
                Poll::Pending => return Wrote::Part(from),
            }
        }
        match self.w.as_mut().poll_flush(&mut cx) {
            Poll::Ready(Ok(())) => Wrote::All,
            Poll::Ready(Err(_)) => Wrote::Failed,
            Poll::Pending => Wrote::Part(from),
        }
    }

    /// Makes the frames taken `current`: as it is when there is one,
    /// gathered otherwise.
    fn take_current(&mut self) {
        if self.taken.len() == 1 {
            if let Some((bytes, share)) = self.taken.pop() {
                self.current = bytes;
                keep_share(&mut self.shares, share);
            }
            return;
        }
        for (bytes, share) in self.taken.drain(..) {
            self.gathered.extend_from_slice(&bytes);
            keep_share(&mut self.shares, share);
        }
        self.grown |= self.gathered.capacity() > GATHER_KEEP;
        // Once written and dropped, the split-off part is this buffer's
        // again for the next gathering.
        self.current = self.gathered.split().freeze();
    }
}

/// Moves frames from the front of `frames` to `taken`, up to [`GATHER`]
/// bytes (at least one frame).
fn take_frames(frames: &mut VecDeque<Queued>, taken: &mut Vec<Queued>) {
    let mut size = 0;
    while let Some((bytes, _)) = frames.front() {
        if !taken.is_empty() && size + bytes.len() > GATHER {
            break;
        }
        size += bytes.len();
        taken.extend(frames.pop_front());
    }
}

fn wake(waker: Option<Waker>) {
    if let Some(w) = waker {
        w.wake();
    }
}

impl Outbox {
    pub(crate) fn new<W: FrameWrite + 'static>(w: W) -> Outbox {
        Outbox {
            queue: Mutex::new(Queue {
                frames: VecDeque::new(),
                writing: Writing::Idle,
                closing: false,
                failed: false,
                waker: None,
            }),
            stream: Mutex::new(Stream {
                w: Box::pin(w),
                current: Bytes::new(),
                shares: Vec::new(),
                taken: Vec::new(),
                gathered: BytesMut::new(),
                grown: false,
                yielded: false,
            }),
        }
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stream(&self) -> MutexGuard<'_, Stream> {
        self.stream.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `bytes` (whole frames), holding `share` of the write budget
    /// until they are written. With `alone` (no other request of the
    /// connection waits for a reply) and nobody writing, the caller writes
    /// them itself as far as the stream takes them at once; the rest, or
    /// all of it otherwise, is queued for the writer task.
    pub(crate) fn put(
        &self,
        bytes: Bytes,
        share: Option<OwnedSemaphorePermit>,
        alone: bool,
    ) -> Result<(), ClientError> {
        let mut q = self.queue();
        if q.failed || q.closing {
            return Err(ClientError::Closed);
        }
        if !alone || q.writing != Writing::Idle {
            q.frames.push_back((bytes, share));
            if q.writing == Writing::Idle {
                let waker = q.hand_to_task();
                drop(q);
                wake(waker);
            }
            return Ok(());
        }
        q.writing = Writing::Caller;
        drop(q);
        let wrote = self.stream().write_now(&bytes);
        let mut q = self.queue();
        let (waker, sent) = match wrote {
            Wrote::All if q.frames.is_empty() => {
                q.writing = Writing::Idle;
                (None, Ok(()))
            }
            // Frames queued behind this one while it was written.
            Wrote::All => (q.hand_to_task(), Ok(())),
            Wrote::Part(n) => {
                if n < bytes.len() {
                    q.frames.push_front((bytes.slice(n..), share));
                }
                (q.hand_to_task(), Ok(()))
            }
            // The writer task sees `failed` and ends.
            Wrote::Failed => {
                q.failed = true;
                (q.hand_to_task(), Err(ClientError::Closed))
            }
        };
        drop(q);
        wake(waker);
        sent
    }

    /// No more frames come: the writer task writes out the queue, then
    /// shuts the stream down and ends.
    pub(crate) fn close(&self) {
        let mut q = self.queue();
        q.closing = true;
        let waker = q.waker.take();
        drop(q);
        wake(waker);
    }

    /// The writer task's work: writes out the queue and finishes flushes
    /// while the writing is its own, waiting for work otherwise. Ready with
    /// [`Step::Yield`] before it takes frames from the queue (the task
    /// yields, then polls again), with [`Step::Done`] once the queue is
    /// written out after [`Outbox::close`], or when a write fails.
    pub(crate) fn poll_write_out(&self, cx: &mut Context<'_>) -> Poll<Step> {
        let mut st = self.stream();
        let st = &mut *st;
        loop {
            if st.current.is_empty() {
                // The frames written give their shares back.
                st.shares.clear();
                let mut q = self.queue();
                if q.failed {
                    return Poll::Ready(Step::Done);
                }
                if q.writing != Writing::Task {
                    if q.writing == Writing::Idle && q.closing {
                        drop(q);
                        return st.w.as_mut().poll_shutdown(cx).map(|_| Step::Done);
                    }
                    if !q.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        q.waker = Some(cx.waker().clone());
                    }
                    return Poll::Pending;
                }
                if q.frames.is_empty() {
                    drop(q);
                    match st.w.as_mut().poll_flush(cx) {
                        Poll::Ready(Ok(())) => {}
                        Poll::Ready(Err(_)) => {
                            self.queue().failed = true;
                            return Poll::Ready(Step::Done);
                        }
                        Poll::Pending => return Poll::Pending,
                    }
                    let mut q = self.queue();
                    if q.frames.is_empty() {
                        q.writing = Writing::Idle;
                        if st.grown {
                            st.gathered = BytesMut::new();
                            st.grown = false;
                        }
                    }
                    continue;
                }
                if !st.yielded {
                    st.yielded = true;
                    return Poll::Ready(Step::Yield);
                }
                st.yielded = false;
                take_frames(&mut q.frames, &mut st.taken);
                drop(q);
                st.take_current();
            }
            match st.w.as_mut().poll_write_bytes(cx, &st.current) {
                Poll::Ready(Ok(n)) if n > 0 => {
                    st.current.advance(n);
                    if st.current.is_empty() {
                        // Written: its buffer is not kept alive by an
                        // empty view of it.
                        st.current = Bytes::new();
                    }
                }
                Poll::Ready(_) => {
                    self.queue().failed = true;
                    return Poll::Ready(Step::Done);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// The writer task of a connection.
pub(crate) async fn writer(out: Arc<Outbox>) {
    while let Step::Yield = std::future::poll_fn(|cx| out.poll_write_out(cx)).await {
        tokio::task::yield_now().await;
    }
}

/// Why [`Outbox::poll_write_out`] returned.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Frames are queued: the writer task lets the tasks ready to run go
    /// first, then takes them (see [`Stream::yielded`]).
    Yield,
    /// The queue is written out after [`Outbox::close`], or a write failed.
    Done,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::io::AsyncReadExt;
    use tokio::sync::Semaphore;

    #[test]
    fn shares_of_one_budget_are_merged_and_given_back_whole() {
        let budget = Arc::new(Semaphore::new(100));
        let other = Arc::new(Semaphore::new(10));
        let mut shares = Vec::new();
        for n in [5, 7, 9] {
            keep_share(&mut shares, budget.clone().try_acquire_many_owned(n).ok());
        }
        keep_share(&mut shares, None);
        assert_eq!(shares.len(), 1);
        assert_eq!(shares[0].num_permits(), 21);
        // A share of another semaphore is kept apart, never merged.
        keep_share(&mut shares, other.clone().try_acquire_many_owned(3).ok());
        assert_eq!(shares.len(), 2);
        assert_eq!(budget.available_permits(), 79);
        assert_eq!(other.available_permits(), 7);
        shares.clear();
        assert_eq!(budget.available_permits(), 100);
        assert_eq!(other.available_permits(), 10);
    }

    /// A stream that takes at most `room` bytes until it is given more,
    /// counting its writes.
    #[derive(Default)]
    struct Pipe {
        room: usize,
        got: Vec<u8>,
        writes: usize,
        waiting: Option<Waker>,
    }

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Pipe>>);

    impl Shared {
        fn open(&self, room: usize) {
            let mut p = self.0.lock().unwrap();
            p.room += room;
            if let Some(w) = p.waiting.take() {
                w.wake();
            }
        }
        fn got(&self) -> Vec<u8> {
            self.0.lock().unwrap().got.clone()
        }
        fn writes(&self) -> usize {
            self.0.lock().unwrap().writes
        }
    }

    impl FrameWrite for Shared {}

    impl AsyncWrite for Shared {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let mut p = self.0.lock().unwrap();
            if p.room == 0 {
                p.waiting = Some(cx.waker().clone());
                return Poll::Pending;
            }
            let n = buf.len().min(p.room);
            p.room -= n;
            p.got.extend_from_slice(&buf[..n]);
            p.writes += 1;
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn frame(tag: u8, len: usize) -> Bytes {
        Bytes::from(vec![tag; len])
    }

    #[tokio::test]
    async fn a_lone_request_is_written_by_its_caller_and_the_rest_by_the_writer() {
        let pipe = Shared::default();
        pipe.open(10);
        let out = Arc::new(Outbox::new(pipe.clone()));
        // The writer task is not running: only the caller can write.
        out.put(frame(1, 4), None, true).expect("put");
        assert_eq!(pipe.got(), vec![1; 4], "written by the caller at once");
        // Not alone: queued, even though the stream has room.
        out.put(frame(2, 3), None, false).expect("put");
        assert_eq!(pipe.got().len(), 4);
        // Alone, but the writer has work: queued behind it, in order.
        out.put(frame(3, 3), None, true).expect("put");
        assert_eq!(pipe.got().len(), 4);
        let writer = tokio::spawn(writer(out.clone()));
        tokio::task::yield_now().await;
        while pipe.got().len() < 10 {
            tokio::task::yield_now().await;
        }
        // One write for both queued frames; the stream is full now.
        assert_eq!(pipe.writes(), 2);
        assert_eq!(pipe.got(), [vec![1; 4], vec![2; 3], vec![3; 3]].concat());
        // A caller alone with the stream full writes nothing and waits
        // nowhere: the writer finishes its frame once there is room.
        out.put(frame(4, 5), None, true).expect("put");
        pipe.open(2);
        pipe.open(100);
        out.close();
        writer.await.expect("writer ends after close");
        assert_eq!(&pipe.got()[10..], &[4; 5]);
        assert!(matches!(
            out.put(frame(5, 1), None, true),
            Err(ClientError::Closed)
        ));
    }

    #[tokio::test]
    async fn the_rest_of_a_frame_goes_out_first_and_shares_are_held_until_written() {
        let pipe = Shared::default();
        pipe.open(3);
        let out = Arc::new(Outbox::new(pipe.clone()));
        let budget = Arc::new(Semaphore::new(100));
        let share = |n| budget.clone().try_acquire_many_owned(n).expect("room");
        // The caller writes 3 bytes of 8; the rest waits in the queue.
        out.put(frame(1, 8), Some(share(8)), true).expect("put");
        out.put(frame(2, 4), Some(share(4)), true).expect("put");
        assert_eq!(pipe.got(), vec![1; 3]);
        assert_eq!(budget.available_permits(), 88, "shares held while queued");
        let writer = tokio::spawn(writer(out.clone()));
        pipe.open(5);
        while pipe.got().len() < 8 {
            tokio::task::yield_now().await;
        }
        tokio::task::yield_now().await;
        // The two frames were gathered into one write, not finished yet.
        assert_eq!(budget.available_permits(), 88, "shares back before written");
        pipe.open(4);
        out.close();
        writer.await.expect("writer ends");
        assert_eq!(pipe.got(), [vec![1; 8], vec![2; 4]].concat());
        assert_eq!(budget.available_permits(), 100);
    }

    #[test]
    fn the_writer_lets_ready_senders_queue_before_it_takes_frames() {
        let pipe = Shared::default();
        pipe.open(100);
        let out = Outbox::new(pipe.clone());
        let mut cx = Context::from_waker(Waker::noop());
        // Replies are awaited: the frame is queued for the writer task.
        out.put(frame(1, 4), None, false).expect("put");
        // Polled now, it yields before taking anything...
        assert_eq!(out.poll_write_out(&mut cx), Poll::Ready(Step::Yield));
        assert_eq!(pipe.writes(), 0);
        // ...so the frames of senders that ran meanwhile join the write.
        out.put(frame(2, 3), None, false).expect("put");
        out.put(frame(3, 2), None, false).expect("put");
        assert_eq!(out.poll_write_out(&mut cx), Poll::Pending);
        assert_eq!(pipe.writes(), 1, "one write for the three frames");
        assert_eq!(pipe.got(), [vec![1; 4], vec![2; 3], vec![3; 2]].concat());
        // The next frame waits for a yield of its own.
        out.put(frame(4, 1), None, false).expect("put");
        assert_eq!(out.poll_write_out(&mut cx), Poll::Ready(Step::Yield));
        assert_eq!(out.poll_write_out(&mut cx), Poll::Pending);
        assert_eq!(pipe.writes(), 2);
    }

    #[test]
    fn a_frame_alone_is_written_as_it_is_and_several_are_gathered() {
        let out = Outbox::new(tokio::io::sink());
        let take = || {
            let mut st = out.stream();
            take_frames(&mut out.queue().frames, &mut st.taken);
            st.take_current();
            std::mem::take(&mut st.current)
        };
        let big = frame(7, 1000);
        out.put(big.clone(), None, false).expect("put");
        assert_eq!(take().as_ptr(), big.as_ptr(), "a lone frame was copied");
        let parts: Vec<Bytes> = (0..4u8).map(|i| frame(i, GATHER / 3)).collect();
        for p in &parts {
            out.put(p.clone(), None, false).expect("put");
        }
        // Gathered up to GATHER: three of the four.
        assert_eq!(take(), parts[..3].concat());
        assert_eq!(out.queue().frames.len(), 1);
    }

    #[tokio::test]
    async fn a_burst_queue_is_let_go_once_written() {
        let (client, mut server) = tokio::io::duplex(1 << 20);
        let out = Arc::new(Outbox::new(client));
        let writer = tokio::spawn(writer(out.clone()));
        for i in 0..64u8 {
            out.put(frame(i, 4096), None, false).expect("put");
        }
        let mut got = vec![0u8; 64 * 4096];
        server.read_exact(&mut got).await.expect("reads");
        assert!(got
            .chunks(4096)
            .enumerate()
            .all(|(i, c)| c == [i as u8; 4096]));
        // The writer finishes its flush and lets the buffer go.
        for _ in 0..100 {
            if out.queue().writing == Writing::Idle {
                break;
            }
            tokio::task::yield_now().await;
        }
        // A buffer kept would offer its whole allocation again.
        {
            let mut st = out.stream();
            st.gathered.reserve(1);
            assert!(st.gathered.capacity() < GATHER_KEEP, "burst buffer kept");
        }
        out.close();
        writer.await.expect("writer ends");
        let mut rest = Vec::new();
        server
            .read_to_end(&mut rest)
            .await
            .expect("reads to the end");
        assert!(rest.is_empty());
    }
}
