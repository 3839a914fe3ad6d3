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
//!
//! Bounds against clients that hold the server's resources ([`Limits`]):
//! - a request head must arrive within [`Limits::header_read`] ([`HEADER_READ_TIMEOUT`]
//!   by default; also the idle time of a kept-alive connection waiting for its next request);
//! - a request body must keep arriving: at most [`Limits::body_gap`] between two pieces of
//!   it, and, except on the upload route (whose bodies are backups), at most
//!   [`Limits::small_body_time`] for the whole body (logins and settings are a few bytes).
//!   Past either, the body fails (the request answers `400`) and the connection is closed;
//! - at most [`Limits::max_connections`] connections are open at once: one past it waits up
//!   to [`CONNECTION_WAIT`] for another to close, then is answered `503` and closed.

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

/// How long a connection past [`Limits::max_connections`] waits for a free place.
pub const CONNECTION_WAIT: Duration = Duration::from_secs(2);

/// The bounds of [`serve_with`]; see the module docs.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read: Duration,
    pub max_connections: usize,
    pub body_gap: Duration,
    pub small_body_time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read: HEADER_READ_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            body_gap: DEFAULT_BODY_GAP,
            small_body_time: DEFAULT_SMALL_BODY_TIME,
        }
    }
}

/// `--max-connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// `--body-gap-secs`.
pub const DEFAULT_BODY_GAP: Duration = Duration::from_secs(30);
/// `--small-body-secs`.
pub const DEFAULT_SMALL_BODY_TIME: Duration = Duration::from_secs(15);

/// PocketBase's error body for a connection refused past the limit, as a whole answer.
const TOO_MANY_CONNECTIONS: &str = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: 74\r\n\r\n{\"data\":{},\"message\":\"Too many open connections, try again later.\",\"status\":503}";

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
    serve_with(listener, app, shutdown, grace, Limits::default()).await
}

/// [`serve`] with other [`Limits`].
///
/// # Errors
/// As [`serve`].
pub async fn serve_with(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
    limits: Limits,
) -> io::Result<()> {
    let places = std::sync::Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let mut connections = tokio::task::JoinSet::new();
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A client that opens a connection and never finishes its request head is dropped.
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read);
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
        let place = match places.clone().try_acquire_owned() {
            Ok(place) => place,
            Err(_) => {
                // Past the limit: wait for a place on a task of its own (the loop goes on
                // accepting, so that the refused are answered at once), then refuse.
                let places = places.clone();
                let (app, graceful_watch) = (app.clone(), builder.clone());
                let watcher = graceful.watcher();
                connections.spawn(async move {
                    match tokio::time::timeout(CONNECTION_WAIT, places.acquire_owned()).await {
                        Ok(Ok(place)) => {
                            let conn = connection(&graceful_watch, stream, peer, app, limits);
                            let _ = watcher.watch(conn).await;
                            drop(place);
                        }
                        _ => refuse(stream).await,
                    }
                });
                while connections.try_join_next().is_some() {}
                continue;
            }
        };
        let conn = graceful.watch(connection(&builder, stream, peer, app.clone(), limits));
        connections.spawn(async move {
            // A client that goes away mid-request is not the server's error.
            let _ = conn.await;
            drop(place);
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

/// Answers a connection past the limit `503` and closes it gracefully.
async fn refuse(mut stream: TcpStream) {
    use tokio::io::AsyncWriteExt;
    tracing::warn!("too many open connections: one refused");
    let _ = tokio::time::timeout(LINGER_TIME, async {
        let _ = stream.write_all(TOO_MANY_CONNECTIONS.as_bytes()).await;
        let _ = Lingering::new(stream).shutdown().await;
    })
    .await;
}

/// One connection's HTTP server: `app` with the peer's address on every request and every
/// request body timed ([`TimedBody`]).
fn connection(
    builder: &auto::Builder<TokioExecutor>,
    stream: TcpStream,
    peer: std::net::SocketAddr,
    app: Router,
    limits: Limits,
) -> impl hyper_util::server::graceful::GracefulConnection + Send + 'static {
    let service = hyper_util::service::TowerToHyperService::new(app.map_request(
        move |req: axum::http::Request<hyper::body::Incoming>| {
            let total = (!is_upload(&req)).then_some(limits.small_body_time);
            let mut req =
                req.map(|body| axum::body::Body::new(TimedBody::new(body, limits.body_gap, total)));
            // Where the request came from, for `GET /api/health`'s `realIP`.
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            req
        },
    ));
    builder
        .serve_connection_with_upgrades(TokioIo::new(Lingering::new(stream)), service)
        .into_owned()
}

/// The upload route, whose bodies are backups: no total time, only the gap.
fn is_upload<B>(req: &axum::http::Request<B>) -> bool {
    req.method() == axum::http::Method::POST && req.uri().path() == "/api/backups/upload"
}

/// A request body that must keep arriving: an error when no piece of it comes within
/// `gap`, or when it is not over within `total` (when given). See the module docs.
pub struct TimedBody<B> {
    inner: B,
    gap: Duration,
    next: Pin<Box<tokio::time::Sleep>>,
    /// The gap runs only while the reader waits for the client: from the first poll after
    /// a piece was handed over (a reader that stops to send an upload's part to the store
    /// is not the client being slow).
    waiting: bool,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B> TimedBody<B> {
    pub fn new(inner: B, gap: Duration, total: Option<Duration>) -> Self {
        Self {
            inner,
            gap,
            next: Box::pin(tokio::time::sleep(gap)),
            waiting: true,
            deadline: total.map(|t| Box::pin(tokio::time::sleep(t))),
        }
    }
}

/// Why a [`TimedBody`] failed.
#[derive(Debug, thiserror::Error)]
#[error("the request body stopped arriving")]
pub struct BodyTimeout;

impl<B> http_body::Body for TimedBody<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        let this = &mut *self;
        if !this.waiting {
            this.waiting = true;
            let gap = this.gap;
            this.next.as_mut().reset(tokio::time::Instant::now() + gap);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.waiting = false;
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        let late = this.next.as_mut().poll(cx).is_ready()
            || this
                .deadline
                .as_mut()
                .is_some_and(|d| d.as_mut().poll(cx).is_ready());
        if late {
            tracing::warn!("a request body stopped arriving; closing the connection");
            return Poll::Ready(Some(Err(Box::new(BodyTimeout))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
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
