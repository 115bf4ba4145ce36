//! The client side of HTTP/2: a shared [`H2Connection`] that carries many
//! concurrent [`Http2Session`]s (one per request), over the `h2` crate.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use h2::client::{ResponseFuture, SendRequest};
use h2::{RecvStream, SendStream};
use http::header::{HeaderMap, HeaderName, CONNECTION, HOST, TRANSFER_ENCODING, UPGRADE};
use http::uri::{Authority, Scheme, Uri};
use pingora_error::{Error, ErrorType::*, OkOrErr, OrErr, Result};
use pingora_http::{RequestHeader, ResponseHeader};

use crate::protocols::http::Progress;
use crate::protocols::Stream;

mod session;

pub use session::Http2Session;

/// How long a new connection waits for the peer's SETTINGS when the peer's
/// options set no connect timeout.
pub const DEFAULT_SETTINGS_WAIT: Duration = Duration::from_secs(10);

/// Names the type; its state is not shown.
impl std::fmt::Debug for H2Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Connection").finish_non_exhaustive()
    }
}

/// An HTTP/2 connection to an upstream, shared by requests. Its driver
/// runs in its own task; a PING keepalive runs beside it if asked for.
#[derive(Clone)]
pub struct H2Connection {
    send: SendRequest<Bytes>,
    /// The connection ended, failed, or the peer sent GOAWAY.
    closed: Arc<AtomicBool>,
    /// Streams given out and not yet dropped.
    active: Arc<AtomicUsize>,
    /// Streams ever given out (tells an idle connection from a busy one
    /// whose streams are short).
    used: Arc<AtomicUsize>,
    /// Tells the driver task to close the connection (idle).
    close: Arc<tokio::sync::Notify>,
    max_streams: usize,
    tls: bool,
    authority: Option<Authority>,
    /// The connection's digest (its socket and TLS session), taken at the
    /// handshake.
    digest: Option<Arc<crate::protocols::Digest>>,
}

impl H2Connection {
    /// The HTTP/2 handshake on a connected stream (after ALPN h2, or by
    /// prior knowledge). `max_streams` caps the streams this side opens at
    /// once (besides the peer's own limit); `tls` picks the `https` scheme.
    /// `settings_wait` bounds the wait for the peer's SETTINGS: a peer that
    /// allows no stream within it fails the connect with a retryable
    /// `ConnectTimedout`.
    ///
    /// # Errors
    ///
    /// `H2Error` if the handshake or the connection fails; `ConnectionClosed`
    /// if the upstream closes before its SETTINGS; `ConnectTimedout` as above.
    /// All but a failed handshake are marked retryable.
    pub async fn handshake(
        stream: Stream,
        max_streams: usize,
        ping_interval: Option<Duration>,
        tls: bool,
        settings_wait: Duration,
    ) -> Result<Self> {
        let digest = stream.connection_digest().cloned().map(Arc::new);
        let (send, mut conn) = h2::client::Builder::new()
            // The peer's limit is unknown until its SETTINGS arrive: until
            // then the connection counts as full (the stream that opened
            // it waits inside h2 for them), so concurrent requests are not
            // piled onto a connection that may take fewer. The peer's
            // SETTINGS replace this (no limit given: unlimited).
            .initial_max_send_streams(0)
            .initial_window_size(1 << 20)
            .initial_connection_window_size(4 << 20)
            .handshake::<_, Bytes>(stream)
            .await
            .or_err(H2Error, "HTTP/2 handshake with upstream")
            .map_err(|e| e.into_up())?;
        // Drive the connection until the peer's SETTINGS (its stream
        // limit) are in, so that the connection is shared only up to that
        // limit. A peer that sends none (or allows no stream) within
        // `settings_wait` is a failed connect, which may be retried: a
        // connection that could carry no stream is never handed out.
        let wait = poll_fn(|cx| match Pin::new(&mut conn).poll(cx) {
            Poll::Ready(r) => Poll::Ready(Some(r)),
            Poll::Pending if send.current_max_send_streams() > 0 => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        });
        let failed = match pingora_timeout::timeout(settings_wait, wait).await {
            Ok(None) => None,
            Ok(Some(Err(e))) => Some(Error::because(
                H2Error,
                "HTTP/2 connection to upstream failed",
                e,
            )),
            Ok(Some(Ok(()))) => Some(Error::explain(
                ConnectionClosed,
                "upstream closed the HTTP/2 connection before its SETTINGS",
            )),
            Err(_) => Some(Error::explain(
                ConnectTimedout,
                format!("upstream allowed no HTTP/2 stream within {settings_wait:?} (no SETTINGS, or a limit of 0)"),
            )),
        };
        if let Some(mut e) = failed {
            e.set_retry(true);
            return Err(e.into_up());
        }
        let closed = Arc::new(AtomicBool::new(false));
        let close = Arc::new(tokio::sync::Notify::new());
        let pingpong = conn.ping_pong();
        let done = closed.clone();
        let told = close.clone();
        tokio::spawn(async move {
            let keepalive = async {
                let (Some(mut pp), Some(every)) = (pingpong, ping_interval) else {
                    return std::future::pending::<()>().await;
                };
                loop {
                    pingora_timeout::sleep(every).await;
                    if !matches!(
                        pingora_timeout::timeout(every, pp.ping(h2::Ping::opaque())).await,
                        Ok(Ok(_))
                    ) {
                        return;
                    }
                }
            };
            tokio::select! {
                _ = &mut conn => {}
                _ = keepalive => {}
                _ = told.notified() => {}
            }
            // Dropping `conn` closes the socket.
            done.store(true, Ordering::Release);
        });
        Ok(H2Connection {
            send,
            closed,
            close,
            used: Arc::default(),
            active: Arc::default(),
            max_streams: max_streams.max(1),
            tls,
            authority: None,
            digest,
        })
    }

    /// The connection's digest (socket, TLS session), if its stream kept
    /// one.
    pub fn digest(&self) -> Option<&crate::protocols::Digest> {
        self.digest.as_deref()
    }

    /// The most streams open at once: ours (`max_streams`) or the peer's
    /// (its SETTINGS_MAX_CONCURRENT_STREAMS), whichever is lower; 0 until
    /// the peer's SETTINGS have arrived.
    pub fn stream_limit(&self) -> usize {
        self.max_streams.min(self.send.current_max_send_streams())
    }

    /// Whether the connection still takes new streams: open, no GOAWAY,
    /// and fewer streams than both sides allow.
    pub fn more_streams_allowed(&self) -> bool {
        !self.is_closed() && self.active.load(Ordering::Acquire) < self.stream_limit()
    }

    /// A new stream if the connection takes one now (see
    /// [`more_streams_allowed`](Self::more_streams_allowed)): the slot is
    /// claimed atomically, so requests racing for the last slot do not
    /// both get it. `None`: full or closed; open another connection.
    pub async fn try_new_session(&self) -> Option<Result<Http2Session>> {
        if self.is_closed() {
            return None;
        }
        let limit = self.stream_limit();
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()?;
        Some(self.claimed_session().await)
    }

    /// Close the connection once no stream has been open on it for
    /// `idle` (checked every `idle`, so it closes between one and two
    /// periods after its last stream), as pooled HTTP/1 connections close
    /// after their idle timeout. A request racing the close sees the
    /// connection closed and opens another.
    pub fn close_when_idle(&self, idle: Duration) {
        let conn = self.clone();
        tokio::spawn(async move {
            let mut last = usize::MAX;
            while !conn.is_closed() {
                pingora_timeout::sleep(idle).await;
                let used = conn.used.load(Ordering::Acquire);
                if used == last && conn.active.load(Ordering::Acquire) == 0 {
                    conn.closed.store(true, Ordering::Release);
                    conn.close.notify_one();
                    return;
                }
                last = used;
            }
        });
    }

    /// Whether `other` is a handle to this same connection.
    pub fn same(&self, other: &H2Connection) -> bool {
        Arc::ptr_eq(&self.active, &other.active)
    }

    /// Whether the connection is done (closed, failed, or told to go away).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Streams open on it now.
    pub fn active_streams(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// Send requests for this authority when a request has no Host.
    pub fn set_authority(&mut self, authority: Authority) {
        self.authority = Some(authority);
    }

    /// A new stream for one request. Fails (and marks the connection
    /// closed) if the peer sent GOAWAY.
    ///
    /// # Errors
    ///
    /// `H2Error` if the connection takes no new streams (GOAWAY, or it
    /// failed or closed).
    pub async fn new_session(&self) -> Result<Http2Session> {
        self.active.fetch_add(1, Ordering::AcqRel);
        self.claimed_session().await
    }

    /// The session for a stream slot already counted in `active` (given
    /// back if the connection takes no new streams).
    async fn claimed_session(&self) -> Result<Http2Session> {
        self.used.fetch_add(1, Ordering::AcqRel);
        let send = match self.send.clone().ready().await {
            Ok(send) => send,
            Err(e) => {
                self.active.fetch_sub(1, Ordering::AcqRel);
                self.closed.store(true, Ordering::Release);
                return Err(
                    Error::because(H2Error, "HTTP/2 connection takes no new streams", e).into_up(),
                );
            }
        };
        Ok(Http2Session::new(send, self.clone()))
    }
}
