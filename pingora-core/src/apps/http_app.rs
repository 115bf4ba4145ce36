//! HTTP apps: the user handles requests, the framework handles the
//! connection (parsing, limits, keep-alive, pipelining, errors).
//!
//! Two ways to write one:
//! * [`ServeHttp`]: one async function from a request to a whole response.
//! * [`HttpServerApp`]: full control of the session, for streaming bodies,
//!   trailers, 1xx responses and upgrades.
//!
//! Either is run by wrapping it in [`HttpServer`], which is a
//! [`ServerApp`] for a listening service.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use pingora_error::{ErrorType, Result};
use pingora_http::ResponseHeader;
use tracing::debug;

use super::{IdlePolicy, ServerApp};
use crate::protocols::http::v1::H1Options;
use crate::protocols::http::v2::server::{self as h2s, H2Options};
use crate::protocols::http::{ServerSession, ServerSessionKind};
use crate::protocols::rewind::Rewind;
use crate::protocols::Stream;
use crate::shutdown::ShutdownWatch;

mod h2_conn;

use h2_conn::{sniff_preface, within};

/// An app that handles one HTTP request at a time on a session.
///
/// Implement it with a plain `async fn` (no `#[async_trait]`): the
/// request's future then lives inside the connection's task instead of a
/// heap allocation per request.
pub trait HttpServerApp: Send + Sync + 'static {
    /// Handle the request whose header `session` has read: read its body
    /// if wanted, write a response. An `Err` before a response header was
    /// written is answered with the error's HTTP status (or 500) and the
    /// connection closes.
    fn process_request(
        self: &Arc<Self>,
        session: &mut ServerSession,
        shutdown: &ShutdownWatch,
    ) -> impl std::future::Future<Output = Result<()>> + Send;

    /// How connections are served when the app is a [`ServerApp`] by
    /// itself (as Pingora's are: `Service::new(name, app)` with no
    /// [`HttpServer`] around it): `None`, the defaults. Inside an
    /// `HttpServer`, that server's settings apply instead.
    fn server_settings(&self) -> Option<&HttpServerSettings> {
        None
    }
}

/// The settings of an app that has none of its own.
static DEFAULT_SETTINGS: std::sync::LazyLock<HttpServerSettings> =
    std::sync::LazyLock::new(HttpServerSettings::default);

fn settings_of<A: HttpServerApp + ?Sized>(app: &A) -> &HttpServerSettings {
    app.server_settings().unwrap_or(&DEFAULT_SETTINGS)
}

/// Every HTTP app is a [`ServerApp`] by itself, as in Pingora: served with
/// its [`server_settings`](HttpServerApp::server_settings).
#[async_trait]
impl<A: HttpServerApp> ServerApp for A {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        settings_of(&**self).serve(self, stream, shutdown).await
    }

    fn idle_policy(&self) -> IdlePolicy {
        settings_of(self).idle_policy()
    }

    fn shutdown_drain(&self) -> Duration {
        settings_of(self).shutdown_drain()
    }
}

/// The simplest HTTP app: a request in, a whole response out.
///
/// A `Content-Length` is added when the response has none.
#[async_trait]
pub trait ServeHttp: Send + Sync + 'static {
    /// Make the response to the request in `session` (whose body, if any,
    /// the function may read).
    async fn response(&self, session: &mut ServerSession) -> http::Response<Vec<u8>>;
}

impl<S: ServeHttp> HttpServerApp for S {
    async fn process_request(
        self: &Arc<Self>,
        session: &mut ServerSession,
        _shutdown: &ShutdownWatch,
    ) -> Result<()> {
        let (parts, body) = self.response(session).await.into_parts();
        let mut resp = ResponseHeader::build(parts.status, Some(parts.headers.len() + 1))?;
        for (name, value) in parts.headers.iter() {
            resp.append_header(name.clone(), value.clone())?;
        }
        if !resp.headers.contains_key(CONTENT_LENGTH) {
            resp.insert_header(CONTENT_LENGTH, body.len().to_string())?;
        }
        session.write_response_header(Box::new(resp)).await?;
        session.write_response_body(Bytes::from(body)).await?;
        session.finish_body().await
    }
}

/// Names the type; its state is not shown.
impl<A> std::fmt::Debug for HttpServer<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServer").finish_non_exhaustive()
    }
}

/// Runs an [`HttpServerApp`] on every connection of a listening service.
///
/// ```
/// use async_trait::async_trait;
/// use pingora_core::apps::http_app::{HttpServer, ServeHttp};
/// use pingora_core::protocols::http::ServerSession;
/// use pingora_core::services::listening::Service;
///
/// struct Hello;
///
/// #[async_trait]
/// impl ServeHttp for Hello {
///     async fn response(&self, _s: &mut ServerSession) -> http::Response<Vec<u8>> {
///         http::Response::new(b"hello\n".to_vec())
///     }
/// }
///
/// let mut service = Service::new("hello".to_string(), HttpServer::new(Hello));
/// service.add_tcp("127.0.0.1:0");
/// ```
pub struct HttpServer<A> {
    app: Arc<A>,
    settings: HttpServerSettings,
}

/// How HTTP connections are served: HTTP/1 limits and timeouts, HTTP/2
/// settings, h2c, parking of idle keep-alive connections, the drain time
/// at shutdown. What an [`HttpServer`] holds beside its app; an app that is
/// its own [`ServerApp`] (the proxy) holds one too and serves with
/// [`serve`](Self::serve).
#[derive(Debug, Clone)]
pub struct HttpServerSettings {
    options: H1Options,
    h2_options: H2Options,
    h2c: bool,
    park_after: Option<Duration>,
    shutdown_drain: Duration,
}

impl Default for HttpServerSettings {
    fn default() -> Self {
        Self::new(H1Options::default())
    }
}

/// How long a keep-alive connection waits in its task before it is parked.
const PARK_AFTER: Duration = Duration::from_secs(1);
/// See [`HttpServer::set_shutdown_drain`].
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(1);

impl<A: HttpServerApp> HttpServer<A> {
    /// Serve `app` with the default limits.
    pub fn new(app: A) -> Self {
        Self::with_options(app, H1Options::default())
    }

    /// [`new`](Self::new), under Pingora's name.
    pub fn new_app(app: A) -> Self {
        Self::new(app)
    }

    /// Serve `app` with these HTTP/1 limits and timeouts.
    pub fn with_options(app: A, options: H1Options) -> Self {
        HttpServer {
            app: Arc::new(app),
            settings: HttpServerSettings::new(options),
        }
    }

    /// See [`HttpServerSettings::set_shutdown_drain`].
    pub fn set_shutdown_drain(&mut self, drain: Duration) {
        self.settings.set_shutdown_drain(drain);
    }

    /// See [`HttpServerSettings::set_park_idle_after`].
    pub fn set_park_idle_after(&mut self, after: Option<Duration>) {
        self.settings.set_park_idle_after(after);
    }

    /// See [`HttpServerSettings::set_h2_options`].
    pub fn set_h2_options(&mut self, options: H2Options) {
        self.settings.set_h2_options(options);
    }

    /// See [`HttpServerSettings::set_h2c`].
    pub fn set_h2c(&mut self, on: bool) {
        self.settings.set_h2c(on);
    }

    /// The app.
    pub fn app(&self) -> &Arc<A> {
        &self.app
    }

    /// The limits and timeouts in force.
    pub fn options(&self) -> &H1Options {
        &self.settings.options
    }

    /// How connections are served, to change.
    pub fn settings_mut(&mut self) -> &mut HttpServerSettings {
        &mut self.settings
    }
}

impl HttpServerSettings {
    /// These HTTP/1 limits and timeouts; HTTP/2 defaults, no h2c, idle
    /// keep-alive connections parked after 1 s, 1 s drain at shutdown.
    pub fn new(options: H1Options) -> Self {
        HttpServerSettings {
            options,
            h2_options: H2Options::default(),
            h2c: false,
            park_after: Some(PARK_AFTER),
            shutdown_drain: SHUTDOWN_DRAIN,
        }
    }

    /// The HTTP/1 limits and timeouts, to change.
    pub fn options_mut(&mut self) -> &mut H1Options {
        &mut self.options
    }

    /// The limits and timeouts in force.
    pub fn options(&self) -> &H1Options {
        &self.options
    }

    /// How long a keep-alive connection that is between requests when a
    /// graceful shutdown begins stays open for a request already on its
    /// way (served with `Connection: close`) before it is closed. Default
    /// 1 s. Closing at once would race the client's next request.
    pub fn set_shutdown_drain(&mut self, drain: Duration) {
        self.shutdown_drain = drain;
    }

    /// How long an HTTP/1 keep-alive connection on a plain (not TLS)
    /// socket waits for its next request in its own task before it is
    /// parked: its task, future and reactor registration are freed, and
    /// about 100 bytes are kept until the client sends again (or the
    /// keep-alive timeout or a shutdown closes it). Default 1 s; `None`
    /// never parks. Parking costs a few system calls, so a connection
    /// that is busy never parks.
    pub fn set_park_idle_after(&mut self, after: Option<Duration>) {
        self.park_after = after;
    }

    /// When parking applies: its delay, if the keep-alive timeout is
    /// longer.
    fn park_delay(&self) -> Option<Duration> {
        let after = self.park_after?;
        match self.options.keepalive_timeout {
            Some(k) if k <= after => None,
            _ => Some(after),
        }
    }

    /// HTTP/2 settings (streams, windows, ping keepalive).
    pub fn set_h2_options(&mut self, options: H2Options) {
        self.h2_options = options;
    }

    /// Accept HTTP/2 with prior knowledge (h2c) on plain connections, as
    /// well as HTTP/1. Over TLS, HTTP/2 is chosen by ALPN instead
    /// (`TlsSettings::enable_h2`). This is the default for every listener
    /// of the service; a listener can say otherwise for its own
    /// connections (`Service::set_h2c` / `Listeners::set_h2c`).
    pub fn set_h2c(&mut self, on: bool) {
        self.h2c = on;
    }

    /// Whether h2c is taken on this plain connection: its listener's
    /// choice, else the app's.
    fn h2c_on(&self, stream: &Stream) -> bool {
        stream
            .socket_digest()
            .and_then(|d| d.h2c)
            .unwrap_or(self.h2c)
    }

    /// What a [`ServerApp`] serving with these settings answers to
    /// [`ServerApp::idle_policy`].
    pub fn idle_policy(&self) -> IdlePolicy {
        match self.park_delay() {
            // Parked for what is left of the keep-alive timeout.
            Some(after) => IdlePolicy::Park(self.options.keepalive_timeout.map(|k| k - after)),
            None => IdlePolicy::CallAgain,
        }
    }

    /// The drain time at shutdown ([`ServerApp::shutdown_drain`]).
    pub fn shutdown_drain(&self) -> Duration {
        self.shutdown_drain
    }
}

/// The status to answer a failed request with.
fn error_status(etype: &ErrorType) -> u16 {
    etype.http_status().filter(|s| *s >= 400).unwrap_or(500)
}

#[async_trait]
impl<A: HttpServerApp> ServerApp for HttpServer<A> {
    fn shutdown_drain(&self) -> Duration {
        self.settings.shutdown_drain()
    }

    fn idle_policy(&self) -> IdlePolicy {
        self.settings.idle_policy()
    }

    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        self.settings.serve(&self.app, stream, shutdown).await
    }
}

impl HttpServerSettings {
    /// Serve one connection for `app`: HTTP/1 requests one after another
    /// (parked when idle, drained at shutdown), or HTTP/2 streams (by ALPN,
    /// or by prior knowledge when h2c is on). What [`HttpServer`] does; an
    /// app that is its own [`ServerApp`] calls it from `process_new`.
    pub async fn serve<A: HttpServerApp>(
        &self,
        app: &Arc<A>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // The HTTP/2 paths are boxed, so that their state does not grow the
        // future every HTTP/1 connection keeps while idle.
        let h2 = stream.tls_digest().is_some_and(|d| d.is_h2());
        let stream = if h2 {
            stream
        } else if stream.tls_digest().is_none() && self.h2c_on(&stream) {
            // Bounded like a header read: a client that sends a few bytes
            // and stops is closed.
            let sniff = Box::pin(sniff_preface(stream));
            match within(self.options.header_read_timeout, sniff).await {
                Some(Some((true, s))) => return Box::pin(self.serve_h2(app, s, shutdown)).await,
                Some(Some((false, s))) => s,
                _ => return None,
            }
        } else {
            stream
        };
        if h2 {
            return Box::pin(self.serve_h2(app, stream, shutdown)).await;
        }
        let mut session = ServerSession::new_http1(stream, self.options);
        if let ServerSessionKind::H1(h1) = &mut session.kind {
            h1.set_park_after(self.park_delay());
            h1.set_shutdown_watch(shutdown.clone());
        }
        let mut shutdown = shutdown.clone();
        let mut first = true;
        loop {
            let read = if first || *shutdown.borrow() {
                session.read_request().await
            } else {
                let waited = tokio::select! {
                    biased;
                    r = session.read_request() => Some(r),
                    _ = shutdown.wait_for(|s| *s) => None,
                };
                match waited {
                    Some(r) => r,
                    // A graceful shutdown began while the connection was
                    // between requests. The client cannot know: its next
                    // request may be on its way. Closing now would lose it,
                    // so the connection gets a short drain time: a request
                    // that comes is served with `Connection: close`, a
                    // quiet connection closes.
                    None => {
                        if let ServerSessionKind::H1(h1) = &mut session.kind {
                            h1.set_park_after(None);
                        }
                        let next = session.read_request();
                        match pingora_timeout::timeout(self.shutdown_drain, next).await {
                            Ok(r) => r,
                            Err(_) => return None,
                        }
                    }
                }
            };
            first = false;
            match read {
                Ok(Some(_)) => {}
                // Idle for the park delay: hand the connection back to be
                // parked, freeing this task.
                Ok(None) => {
                    return match session.kind {
                        ServerSessionKind::H1(h1) if h1.wants_park() => h1.into_idle_stream(),
                        _ => None,
                    }
                }
                Err(e) => {
                    debug!("bad request: {e}");
                    if !matches!(
                        e.etype(),
                        ErrorType::ReadError
                            | ErrorType::ConnectionClosed
                            | ErrorType::ReadTimedout
                    ) {
                        let _ = session.respond_error(error_status(e.etype())).await;
                    }
                    if let Some(h1) = session.as_http1() {
                        h1.close_lingering().await;
                    }
                    return None;
                }
            }
            // (A response written once a graceful shutdown began closes the
            // connection: the session watches the switch.)
            let result = app.process_request(&mut session, &shutdown).await;
            if let Err(e) = result {
                debug!("request failed: {e}");
                if session.response_written().is_none() {
                    let _ = session.respond_error(error_status(e.etype())).await;
                    if let Some(h1) = session.as_http1() {
                        h1.close_lingering().await;
                    }
                }
                return None;
            }
            match session.finish().await {
                Ok(true) => continue,
                Ok(false) => {
                    if let Some(h1) = session.as_http1() {
                        h1.close().await;
                    }
                    return None;
                }
                Err(_) => {
                    if let Some(h1) = session.as_http1() {
                        h1.close_lingering().await;
                    }
                    return None;
                }
            }
        }
    }
}
