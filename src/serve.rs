//! Connections: the accept loop, HTTP/1.1 and HTTP/2 (h2c) on each connection, a graceful
//! shutdown, and a lingering close.
//!
//! A server that answers before it has read the whole request (a refused upload) and then
//! closes its socket makes the kernel send a reset while the client is still sending, and
//! most clients then lose the answer they were sent (Node's `fetch` reports `EPIPE` or
//! `ECONNRESET`). Two things prevent that here:
//! - [`crate::api::edge::drain_unread_body`] reads what is left of a refused body, up to a
//!   bound, so the connection stays usable for the next request;
//! - past that bound the answer carries `Connection: close`, and [`Lingering`] closes the
//!   connection gracefully: it half-closes (FIN, so the client reads the whole answer) and
//!   keeps reading and dropping what the client still sends, for at most [`LINGER_TIME`],
//!   before the socket is closed. Go's `net/http` (PocketBase's server) does the same.

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// How long a client may take to send a request head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a closing connection keeps reading what its client still sends.
pub const LINGER_TIME: Duration = Duration::from_secs(5);

/// Serves `app` on `listener` until `shutdown` completes, then waits up to `grace` for
/// open requests (a create in progress finishes and its client gets the answer); past it,
/// the requests still open are cancelled (a create's multipart upload is aborted, see
/// [`crate::storage::s3::finish_aborts`]) and this returns.
///
/// # Errors
/// Never today: accept errors (out of file descriptors, a connection reset before it was
/// accepted) are logged and the loop goes on, as every production server does.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> io::Result<()> {
    let mut connections = tokio::task::JoinSet::new();
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A client that opens a connection and never finishes its request head is dropped.
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    // Out of descriptors: give the open connections time to finish.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(app.clone().map_request(
            move |req: axum::http::Request<hyper::body::Incoming>| {
                let mut req = req.map(axum::body::Body::new);
                // Where the request came from, for `GET /api/health`'s `realIP`.
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                req
            },
        ));
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(Lingering::new(stream)), service)
            .into_owned();
        let conn = graceful.watch(conn);
        connections.spawn(async move {
            // A client that goes away mid-request is not the server's error.
            let _ = conn.await;
        });
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!(open = connections.len(), "shutdown grace period over; cancelling open requests");
        }
    }
    // Cancels what is still open: dropping a request's future stops its work and aborts
    // its multipart upload.
    connections.shutdown().await;
    Ok(())
}

use tower::ServiceExt as _;

/// A TCP stream whose shutdown lingers: see the module docs.
pub struct Lingering {
    inner: TcpStream,
    closing: Closing,
}

enum Closing {
    Open,
    /// The write side is shut; reading and dropping until EOF or the deadline.
    Draining(Pin<Box<tokio::time::Sleep>>),
    Done,
}

impl Lingering {
    pub fn new(inner: TcpStream) -> Self {
        Self {
            inner,
            closing: Closing::Open,
        }
    }
}

impl AsyncRead for Lingering {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match &mut self.closing {
                Closing::Open => {
                    ready!(Pin::new(&mut self.inner).poll_shutdown(cx))?;
                    self.closing = Closing::Draining(Box::pin(tokio::time::sleep(LINGER_TIME)));
                }
                Closing::Draining(deadline) => {
                    if deadline.as_mut().poll(cx).is_ready() {
                        self.closing = Closing::Done;
                        continue;
                    }
                    let mut scratch = [0u8; 8192];
                    let mut buf = ReadBuf::new(&mut scratch);
                    match Pin::new(&mut self.inner).poll_read(cx, &mut buf) {
                        Poll::Ready(Ok(())) if !buf.filled().is_empty() => {}
                        // EOF or an error: the client is done with the connection.
                        Poll::Ready(_) => self.closing = Closing::Done,
                        Poll::Pending => return Poll::Pending,
                    }
                }
                Closing::Done => return Poll::Ready(Ok(())),
            }
        }
    }
}
