//! A read-ahead buffer under TLS that a quiet connection does not hold.
//!
//! rustls reads the socket 4 KiB at a time. Under a burst of records a
//! buffer beneath it turns many of those reads into one recv, but a buffer
//! kept for a connection's whole life costs its size on every connection,
//! and most connections of a broker are quiet most of the time (idle
//! subscribers, clients between requests). [`ReadAhead`] reads straight
//! into the caller's buffer until a read fills it, a sign that more is
//! waiting; it then reads through a buffer of its own until a read finds
//! the socket drained, and lets that buffer go once it is emptied.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The read-ahead buffer's size during a burst.
const READ_AHEAD: usize = 32 * 1024;

/// `S` with reads buffered only during bursts; writes go straight through.
pub(crate) struct ReadAhead<S> {
    inner: S,
    /// Empty (no allocation) unless a burst is being read.
    buf: Vec<u8>,
    pos: usize,
    filled: usize,
    /// The last read filled what it was given: read through `buf`.
    bursting: bool,
}

impl<S> ReadAhead<S> {
    pub(crate) fn new(inner: S) -> Self {
        ReadAhead {
            inner,
            buf: Vec::new(),
            pos: 0,
            filled: 0,
            bursting: false,
        }
    }

    /// Bytes of buffer held now.
    #[cfg(test)]
    fn holds(&self) -> usize {
        self.buf.capacity()
    }

    /// Copies what is buffered into `out`; lets the buffer go once it is
    /// emptied and the burst is over.
    fn give(&mut self, out: &mut ReadBuf<'_>) {
        let n = (self.filled - self.pos).min(out.remaining());
        out.put_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        if self.pos == self.filled {
            self.pos = 0;
            self.filled = 0;
            if !self.bursting {
                self.buf = Vec::new();
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if me.pos < me.filled {
            me.give(out);
            return Poll::Ready(Ok(()));
        }
        if !me.bursting || out.remaining() >= READ_AHEAD {
            let want = out.remaining();
            let before = out.filled().len();
            ready!(Pin::new(&mut me.inner).poll_read(cx, out))?;
            let n = out.filled().len() - before;
            me.bursting = n > 0 && n == want;
            return Poll::Ready(Ok(()));
        }
        if me.buf.len() < READ_AHEAD {
            me.buf = vec![0; READ_AHEAD];
        }
        let mut rb = ReadBuf::new(&mut me.buf);
        let res = Pin::new(&mut me.inner).poll_read(cx, &mut rb);
        let n = rb.filled().len();
        if n == 0 || !matches!(res, Poll::Ready(Ok(()))) {
            // Drained after all, failed or at the end: no burst to buffer.
            me.bursting = false;
            me.buf = Vec::new();
            return res;
        }
        me.bursting = n == READ_AHEAD;
        me.pos = 0;
        me.filled = n;
        me.give(out);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::future::poll_fn;

    /// Serves scripted reads: `Some(bytes)` is what one read may take
    /// (as much as fits), `None` one `Pending`; then end of stream.
    struct Script(VecDeque<Option<Vec<u8>>>);

    impl AsyncRead for Script {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            out: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            match self.0.pop_front() {
                None => Poll::Ready(Ok(())),
                Some(None) => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                Some(Some(mut chunk)) => {
                    let n = chunk.len().min(out.remaining());
                    out.put_slice(&chunk[..n]);
                    if n < chunk.len() {
                        self.0.push_front(Some(chunk.split_off(n)));
                    }
                    Poll::Ready(Ok(()))
                }
            }
        }
    }

    fn bytes(from: usize, len: usize) -> Vec<u8> {
        (from..from + len).map(|i| (i % 251) as u8).collect()
    }

    /// Reads everything in pieces of at most `piece`, noting after each
    /// `Pending` how much buffer was held.
    async fn read_all(r: &mut ReadAhead<Script>, piece: usize) -> (Vec<u8>, Vec<usize>) {
        let mut got = Vec::new();
        let mut held_while_waiting = Vec::new();
        loop {
            let mut space = vec![0u8; piece];
            let mut rb = ReadBuf::new(&mut space);
            let ready = poll_fn(|cx| {
                let p = Pin::new(&mut *r).poll_read(cx, &mut rb);
                std::task::Poll::Ready(p)
            })
            .await;
            match ready {
                Poll::Pending => held_while_waiting.push(r.holds()),
                Poll::Ready(res) => {
                    res.unwrap();
                    if rb.filled().is_empty() {
                        return (got, held_while_waiting);
                    }
                    got.extend_from_slice(rb.filled());
                }
            }
        }
    }

    #[tokio::test]
    async fn bytes_come_through_in_order_whatever_the_read_sizes() {
        // A quiet start, a burst of 100 KiB, a pause, small reads, another
        // burst that ends exactly on the buffer's size, then the end.
        let script: Vec<Option<Vec<u8>>> = vec![
            Some(bytes(0, 300)),
            None,
            Some(bytes(300, 100 * 1024)),
            None,
            Some(bytes(300 + 100 * 1024, 10)),
            Some(bytes(310 + 100 * 1024, 4096 + READ_AHEAD)),
            None,
            Some(bytes(310 + 100 * 1024 + 4096 + READ_AHEAD, 7)),
        ];
        let total: usize = script.iter().flatten().map(Vec::len).sum();
        for piece in [1, 100, 4096, READ_AHEAD, 2 * READ_AHEAD] {
            let mut r = ReadAhead::new(Script(script.clone().into()));
            let (got, held) = read_all(&mut r, piece).await;
            assert_eq!(got, bytes(0, total), "piece {piece}");
            assert!(held.iter().all(|&h| h == 0), "piece {piece}: {held:?}");
            assert_eq!(r.holds(), 0);
        }
    }

    #[tokio::test]
    async fn a_burst_is_read_through_the_buffer_and_the_buffer_let_go() {
        // rustls asks for 4 KiB at a time: the first read fills it, the
        // rest of the burst comes through the read-ahead buffer.
        let burst = 3 * READ_AHEAD + 123;
        let mut r = ReadAhead::new(Script(vec![Some(bytes(0, burst)), None].into()));
        let mut got = Vec::new();
        let mut buffered = false;
        while got.len() < burst {
            let mut space = vec![0u8; 4096];
            let mut rb = ReadBuf::new(&mut space);
            poll_fn(|cx| Pin::new(&mut r).poll_read(cx, &mut rb))
                .await
                .unwrap();
            got.extend_from_slice(rb.filled());
            buffered |= r.holds() >= READ_AHEAD;
        }
        assert_eq!(got, bytes(0, burst));
        assert!(buffered, "the burst was read through the buffer");
        assert_eq!(r.holds(), 0, "drained: nothing kept");
    }
}
