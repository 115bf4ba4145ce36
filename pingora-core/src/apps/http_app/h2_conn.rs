//! Serving HTTP/2: telling prior knowledge (h2c) from HTTP/1 on a plain
//! connection, and the connection loop that runs each stream in its own
//! task, with GOAWAY on shutdown, reset-storm and idle limits, and PING
//! keepalive.

use super::*;

/// The client preface that starts every HTTP/2 connection (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Read enough of a plain connection to tell HTTP/2 prior knowledge from
/// HTTP/1, and put what was read back. `None` if the client went away.
pub(super) async fn sniff_preface(mut stream: Stream) -> Option<(bool, Stream)> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::with_capacity(H2_PREFACE.len());
    while buf.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(&buf) {
        let mut chunk = [0u8; 24];
        let want = H2_PREFACE.len() - buf.len();
        match stream.read(&mut chunk[..want]).await {
            Ok(0) | Err(_) => {
                if buf.is_empty() {
                    return None;
                }
                break;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let is_h2 = buf == H2_PREFACE;
    Some((is_h2, Box::new(Rewind::new(buf.into(), stream))))
}

impl HttpServerSettings {
    /// Serve an HTTP/2 connection: each stream in its own task, the
    /// connection driven here; GOAWAY on graceful shutdown, then the open
    /// streams finish; PING keepalive if configured.
    pub(super) async fn serve_h2<A: HttpServerApp>(
        &self,
        app: &Arc<A>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let tls = stream.tls_digest().cloned();
        let socket = stream.socket_digest().cloned();
        // The client's preface and SETTINGS, bounded like a header read.
        let handshake = h2s::handshake(stream, &self.h2_options);
        let mut conn = match within(self.options.header_read_timeout, handshake).await {
            Some(Ok(c)) => c,
            Some(Err(e)) => {
                debug!("{e}");
                return None;
            }
            None => {
                debug!("HTTP/2 handshake timed out");
                return None;
            }
        };
        let for_streams = shutdown.clone();
        let mut shutdown = shutdown.clone();
        let mut going_away = *shutdown.borrow();
        if going_away {
            conn.graceful_shutdown();
        }
        let ping = keepalive(conn.ping_pong(), self.h2_options.ping_interval);
        tokio::pin!(ping);
        // Streams the client reset before their responses ended, counted
        // by the streams' tasks; past the limit the connection is closed.
        let resets = Arc::new(ResetTally::default());
        let mut opened: u32 = 0;
        // Streams running now; each one's end restarts the idle timer
        // (the keep-alive timeout: a connection with no stream open for
        // that long is sent GOAWAY and closed).
        let open = Arc::new(OpenStreams::default());
        let idle_limit = self.options.keepalive_timeout;
        // Set once the keepalive has ended: a finished future must not be
        // polled again while the connection winds down.
        let mut ping_over = false;
        loop {
            tokio::select! {
                next = conn.accept() => match next {
                    Some(Ok((request, respond))) => {
                        opened = opened.saturating_add(1);
                        let app = app.clone();
                        let watch = for_streams.clone();
                        let tally = resets.clone();
                        let mut stream = Box::new(h2s::HttpSession::new(
                            request,
                            respond,
                            tls.clone(),
                            socket.clone(),
                        ));
                        stream.set_limits(self.options.max_body_bytes, self.options.write_timeout);
                        if !self.options.underscores_in_headers {
                            crate::protocols::http::drop_underscore_names(stream.req_header_mut());
                        }
                        let mut session = ServerSession::new_http2(stream);
                        let live = open.clone();
                        live.count.fetch_add(1, Ordering::Relaxed);
                        tokio::spawn(async move {
                            // Counted down however the task ends.
                            let _open = OpenStream(live);
                            if let ServerSessionKind::H2(s) = &mut session.kind {
                                if let Some(status) = s.request_error() {
                                    debug!("refused HTTP/2 request: {status}");
                                    let _ = s.respond_error(status).await;
                                    return;
                                }
                            }
                            let result = app.process_request(&mut session, &watch).await;
                            if let ServerSessionKind::H2(s) = &mut session.kind {
                                if s.reset_by_client() {
                                    tally.count.fetch_add(1, Ordering::Relaxed);
                                    tally.notify.notify_one();
                                }
                            }
                            if let Err(e) = result {
                                debug!("request failed: {e}");
                                if session.response_written().is_none() {
                                    let _ = session.respond_error(error_status(e.etype())).await;
                                } else {
                                    // Cut short: the client must not take
                                    // it for a whole response.
                                    session.abort();
                                }
                            }
                            let _ = session.finish().await;
                        });
                    }
                    Some(Err(e)) => {
                        debug!("HTTP/2 connection error: {e}");
                        return None;
                    }
                    None => return None,
                },
                _ = open.ended.notified() => {} // restarts the idle timer
                _ = sleep_or_never(idle_limit), if !going_away => {
                    if open.count.load(Ordering::Relaxed) == 0 {
                        // Nothing is lost: no stream is open, and a request
                        // racing the GOAWAY is refused (safe to retry).
                        // Not the graceful two-step shutdown, which waits
                        // for a PONG the client may never send.
                        debug!("HTTP/2 connection idle: GOAWAY");
                        going_away = true;
                        conn.abrupt_shutdown(h2::Reason::NO_ERROR);
                    }
                }
                _ = resets.notify.notified() => {
                    let count = resets.count.load(Ordering::Relaxed);
                    if count > self.h2_options.max_reset_streams && count > opened / 2 {
                        debug!("HTTP/2 client reset {count} of {opened} streams: GOAWAY");
                        conn.abrupt_shutdown(h2::Reason::ENHANCE_YOUR_CALM);
                    }
                }
                _ = shutdown.wait_for(|s| *s), if !going_away => {
                    going_away = true;
                    conn.graceful_shutdown();
                }
                _ = &mut ping, if !ping_over => {
                    ping_over = true;
                    debug!("HTTP/2 ping unanswered: closing");
                    conn.abrupt_shutdown(h2::Reason::NO_ERROR);
                }
            }
        }
    }
}

/// The streams of one HTTP/2 connection running now, and a wake-up for
/// the connection's loop when one ends.
#[derive(Default)]
struct OpenStreams {
    count: AtomicUsize,
    ended: tokio::sync::Notify,
}

/// One running stream, counted in [`OpenStreams`] until dropped.
struct OpenStream(Arc<OpenStreams>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::Relaxed);
        self.0.ended.notify_one();
    }
}

/// `fut` under `limit` (none: no limit); `None` if it timed out.
pub(super) async fn within<F: std::future::Future>(
    limit: Option<Duration>,
    fut: F,
) -> Option<F::Output> {
    match limit {
        Some(d) => pingora_timeout::timeout(d, fut).await.ok(),
        None => Some(fut.await),
    }
}

/// A sleep of `limit`, or one that never ends.
async fn sleep_or_never(limit: Option<Duration>) {
    match limit {
        Some(d) => pingora_timeout::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// Streams of one HTTP/2 connection that the client reset before their
/// responses ended, and a wake-up for the connection's loop.
#[derive(Default)]
struct ResetTally {
    count: AtomicU32,
    notify: tokio::sync::Notify,
}

/// Ping every `interval`; complete when a pong does not come back within
/// the interval. Never completes without an interval.
async fn keepalive(pp: Option<h2::PingPong>, interval: Option<Duration>) {
    let (Some(mut pp), Some(interval)) = (pp, interval) else {
        return std::future::pending().await;
    };
    loop {
        pingora_timeout::sleep(interval).await;
        match pingora_timeout::timeout(interval, pp.ping(h2::Ping::opaque())).await {
            Ok(Ok(_)) => continue,
            _ => return,
        }
    }
}
