//! Driving an HTTP/1.1 client connection in the task that sends on it.
//!
//! hyper's usual way runs each connection in a task of its own: every
//! request and every answer then goes from one task to the other and back
//! (the request, the answer's head, a "want" for its body, the body), each
//! a wake and a turn of the scheduler. A client that sends one request at a
//! time on a kept-open connection mostly pays for those hand-offs.
//! [`Driver::run`] instead polls the connection and the request side by
//! side in the caller's task.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;

/// A client connection's own future: its reads and writes.
pub(crate) type Connection = hyper::client::conn::http1::Connection<
    TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    Full<Bytes>,
>;

/// One connection, driven by whoever sends on it.
pub(crate) struct Driver {
    /// `None` once it ended (closed or failed).
    conn: Option<Pin<Box<Connection>>>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("open", &self.conn.is_some())
            .finish()
    }
}

impl Driver {
    pub(crate) fn new(conn: Connection) -> Driver {
        Driver {
            conn: Some(Box::pin(conn)),
        }
    }

    /// Runs `work`, a request on this connection's sender, while driving
    /// the connection. Between calls nothing reads the connection: a close
    /// by the server is seen by the next request, as with a spawned task.
    pub(crate) async fn run<T>(&mut self, work: impl Future<Output = T>) -> T {
        let mut work = std::pin::pin!(work);
        std::future::poll_fn(|cx| self.poll_both(cx, work.as_mut())).await
    }

    /// Two passes over both: the first poll of `work` queues the request
    /// and the second of the connection writes it; an answer the
    /// connection reads is taken by `work` in the same pass.
    fn poll_both<T>(
        &mut self,
        cx: &mut Context<'_>,
        mut work: Pin<&mut impl Future<Output = T>>,
    ) -> Poll<T> {
        for _ in 0..2 {
            if let Some(c) = self.conn.as_mut() {
                if c.as_mut().poll(cx).is_ready() {
                    // The request, if any, sees its sender fail.
                    self.conn = None;
                }
            }
            if let Poll::Ready(out) = work.as_mut().poll(cx) {
                return Poll::Ready(out);
            }
        }
        Poll::Pending
    }

    /// Hands the connection to a task of its own, for a caller that reads
    /// an answer piece by piece outside [`Driver::run`].
    pub(crate) fn detach(self) {
        drop(self);
    }
}

impl Drop for Driver {
    /// A connection still open is handed to a task of its own, which
    /// closes it properly (TLS `close_notify`) once its sender is dropped.
    fn drop(&mut self) {
        if let (Some(conn), Ok(rt)) = (self.conn.take(), tokio::runtime::Handle::try_current()) {
            rt.spawn(async move {
                let _ = conn.await;
            });
        }
    }
}
