//! Rampart's TLS streams over TCP: how the server, the client library and
//! the bench's own clients hand their bytes to rustls.
//!
//! One thing lives here, [`Pieces`]: a stream wrapper that gives the
//! stream under it every write as a vectored write of pieces of at most
//! [`PIECE`] bytes. Under it sits a tokio-rustls stream, whose writes
//! rustls cuts into records of up to 16 KiB and copies, record by record,
//! into a fresh buffer to encrypt in place, one `memcpy` per piece it was
//! given. glibc copies 2 KiB or more with `rep movsb` on x86-64 CPUs that
//! advertise fast string moves, and on AMD Zen cores that instruction
//! slows to about a twentieth of its speed when the destination lies a
//! few bytes past the source modulo 4 KiB, page aliasing. rustls's record
//! buffer starts 5 bytes (the record header) into its allocation, so a
//! plaintext buffer at the start of a page is exactly that case: on an
//! AMD EPYC host, `rampart bench pubsub --transport tcp --size 4096`
//! spent 22% of all its CPU in that one copy. Pieces below glibc's
//! threshold are copied with vector loops, at full speed at any
//! alignment, and no slower where `rep movsb` is fine. See
//! `docs/performance.md` ("What makes it fast") for the figures.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most bytes of one piece. glibc's smallest threshold for `rep
/// movsb` on x86-64 is 2,112 bytes (CPUs with fast short string moves);
/// without them it is 4 KiB or more.
pub const PIECE: usize = 2048;

/// Pieces handed to one vectored write: 64 KiB, rustls's default limit of
/// what it buffers for sending, so one call takes about all of them.
const PIECES: usize = 32;

/// A stream whose writes reach the stream under it as vectored writes of
/// pieces of at most [`PIECE`] bytes; reads, flushes and shutdowns pass
/// through. See the crate's documentation for why.
#[derive(Debug)]
pub struct Pieces<S> {
    inner: S,
}

impl<S> Pieces<S> {
    pub fn new(inner: S) -> Pieces<S> {
        Pieces { inner }
    }

    /// The stream under it (for its TLS state).
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

/// Cuts `bufs` from byte `from` on into pieces of at most [`PIECE`]
/// bytes, as many as `out` holds; how many it filled.
fn cut<'a>(bufs: &[&'a [u8]], mut from: usize, out: &mut [IoSlice<'a>; PIECES]) -> usize {
    let mut n = 0;
    for buf in bufs {
        if from >= buf.len() {
            from -= buf.len();
            continue;
        }
        for piece in buf[from..].chunks(PIECE) {
            if n == PIECES {
                return n;
            }
            out[n] = IoSlice::new(piece);
            n += 1;
        }
        from = 0;
    }
    n
}

impl<S: AsyncWrite + Unpin> Pieces<S> {
    /// Writes `bufs` in pieces as far as the stream under it takes them
    /// without waiting, as tokio-rustls's own `poll_write` goes on while
    /// its socket takes more; pending only if it took nothing.
    fn write_pieces(&mut self, cx: &mut Context<'_>, bufs: &[&[u8]]) -> Poll<io::Result<usize>> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let mut done = 0;
        while done < total {
            let mut slices = [IoSlice::new(&[]); PIECES];
            let n = cut(bufs, done, &mut slices);
            match Pin::new(&mut self.inner).poll_write_vectored(cx, &slices[..n]) {
                Poll::Ready(Ok(0)) => break,
                Poll::Ready(Ok(k)) => done += k,
                Poll::Ready(Err(e)) if done == 0 => return Poll::Ready(Err(e)),
                // Reported by the next call, which fails again.
                Poll::Ready(Err(_)) => break,
                Poll::Pending if done == 0 => return Poll::Pending,
                Poll::Pending => break,
            }
        }
        Poll::Ready(Ok(done))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Pieces<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Pieces<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.len() <= PIECE {
            return Pin::new(&mut self.inner).poll_write(cx, buf);
        }
        self.write_pieces(cx, &[buf])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut plain: [&[u8]; PIECES] = [&[]; PIECES];
        let mut n = 0;
        for (slot, b) in plain.iter_mut().zip(bufs) {
            *slot = b;
            n += 1;
        }
        self.write_pieces(cx, &plain[..n])
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use tokio::io::AsyncWriteExt;

    /// Bytes for a test: not all alike, so that a piece out of place shows.
    fn bytes(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// A writer that keeps what it is given, takes at most `cap` bytes a
    /// call, is pending on every `pending_every`th call (waking its
    /// caller), fails once `fail_after` bytes are in, and records the
    /// longest slice it was handed and whether a large plain write reached
    /// it.
    #[derive(Default)]
    struct Sink {
        got: Vec<u8>,
        cap: usize,
        pending_every: usize,
        fail_after: Option<usize>,
        calls: usize,
        longest: usize,
        vectored_calls: usize,
        large_plain: bool,
    }

    impl Sink {
        fn new(cap: usize) -> Sink {
            Sink {
                cap,
                ..Sink::default()
            }
        }

        fn take(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
            self.calls += 1;
            if self.pending_every > 0 && self.calls.is_multiple_of(self.pending_every) {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if self.fail_after.is_some_and(|n| self.got.len() >= n) {
                return Poll::Ready(Err(io::Error::other("gone")));
            }
            let mut n = 0;
            for b in bufs {
                self.longest = self.longest.max(b.len());
                let k = b.len().min(self.cap - n);
                self.got.extend_from_slice(&b[..k]);
                n += k;
                if n == self.cap {
                    break;
                }
            }
            Poll::Ready(Ok(n))
        }
    }

    impl AsyncWrite for Sink {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.large_plain |= buf.len() > PIECE;
            self.take(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            self.vectored_calls += 1;
            self.take(cx, bufs)
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn cut_covers_the_bytes_from_the_offset_in_pieces() {
        let a = bytes(5000);
        let b = bytes(10);
        let c = bytes(PIECE);
        let bufs: [&[u8]; 4] = [&a, &[], &b, &c];
        let all: Vec<u8> = bufs.concat();
        for from in [
            0,
            1,
            PIECE,
            4999,
            5000,
            5005,
            5010,
            all.len() - 1,
            all.len(),
        ] {
            let mut out = [IoSlice::new(&[]); PIECES];
            let n = cut(&bufs, from, &mut out);
            assert!(out[..n].iter().all(|s| !s.is_empty() && s.len() <= PIECE));
            let joined: Vec<u8> = out[..n].iter().flat_map(|s| s.iter().copied()).collect();
            assert_eq!(joined, all[from..], "from {from}");
        }
        // More than fits: the first PIECES pieces, in order.
        let big = bytes(PIECES * PIECE + 100);
        let mut out = [IoSlice::new(&[]); PIECES];
        assert_eq!(cut(&[&big], 3, &mut out), PIECES);
        let joined: Vec<u8> = out.iter().flat_map(|s| s.iter().copied()).collect();
        assert_eq!(joined, big[3..3 + PIECES * PIECE]);
    }

    #[tokio::test]
    async fn a_large_write_arrives_whole_in_pieces() {
        for cap in [1, 100, PIECE + 1, 64 * 1024, usize::MAX / 2] {
            let data = bytes(300 * 1024 + 17);
            let mut w = Pieces::new(Sink::new(cap));
            w.inner.pending_every = 3;
            w.write_all(&data).await.unwrap();
            w.flush().await.unwrap();
            let sink = w.inner;
            assert_eq!(sink.got, data, "cap {cap}");
            assert!(
                sink.longest <= PIECE,
                "cap {cap}: a slice of {}",
                sink.longest
            );
            assert!(!sink.large_plain, "cap {cap}");
        }
    }

    #[tokio::test]
    async fn a_small_write_passes_through_as_it_is() {
        let mut w = Pieces::new(Sink::new(usize::MAX / 2));
        w.write_all(&bytes(PIECE)).await.unwrap();
        assert_eq!(w.inner.vectored_calls, 0);
        assert_eq!(w.inner.got, bytes(PIECE));
    }

    #[tokio::test]
    async fn vectored_writes_arrive_whole_in_pieces() {
        let parts: Vec<Vec<u8>> = [0, 3, PIECE, 9000, 1, 70 * 1024, 0, 5000]
            .iter()
            .map(|&n| bytes(n))
            .collect();
        let want: Vec<u8> = parts.concat();
        for cap in [7, PIECE - 1, 50_000, usize::MAX / 2] {
            let mut w = Pieces::new(Sink::new(cap));
            w.inner.pending_every = 4;
            // As write_all does for vectored writes: skip what went out.
            let mut sent = 0;
            while sent < want.len() {
                let mut skip = sent;
                let mut slices = Vec::new();
                for p in &parts {
                    if skip >= p.len() {
                        skip -= p.len();
                        continue;
                    }
                    slices.push(IoSlice::new(&p[skip..]));
                    skip = 0;
                }
                let n = poll_fn(|cx| Pin::new(&mut w).poll_write_vectored(cx, &slices))
                    .await
                    .unwrap();
                assert!(n > 0);
                sent += n;
            }
            let sink = w.inner;
            assert_eq!(sink.got, want, "cap {cap}");
            assert!(sink.longest <= PIECE);
        }
    }

    #[tokio::test]
    async fn an_error_after_some_bytes_reports_them_then_the_error() {
        let data = bytes(10 * PIECE);
        let mut w = Pieces::new(Sink::new(PIECE));
        w.inner.fail_after = Some(3 * PIECE);
        let n = w.write(&data).await.unwrap();
        assert_eq!(n, 3 * PIECE);
        assert_eq!(w.inner.got, data[..n]);
        let e = w.write(&data[n..]).await.unwrap_err();
        assert_eq!(e.to_string(), "gone");
    }
}
