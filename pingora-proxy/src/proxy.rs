//! [`HttpProxy`]: runs the [`ProxyHttp`] phases for each request, over
//! HTTP/1 or HTTP/2 on either side.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use http::Method;
use pingora_core::apps::http_app::{HttpServerApp, HttpServerSettings};
use pingora_core::apps::HttpServerOptions;
use pingora_core::connectors::http::Connector;
use pingora_core::connectors::ConnectorOptions;
use pingora_core::modules::http::HttpModules;
use pingora_core::protocols::http::v2::server::H2Options;
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::{ServerConf, ShutdownWatch};
use pingora_core::services::listening::Service;
use pingora_error::{Error, ErrorSource, ErrorType, ErrorType::*, Result};
use tracing::{error, warn};

use crate::{ProxyHttp, Session};

mod attempt;
mod body;
pub(crate) mod cache;
mod cache_serve;
mod headers;

use attempt::Attempt;
use cache::{CacheCtx, Lookup};

/// How the proxy pipeline behaves, beyond the user's callbacks.
#[derive(Clone, Debug)]
pub struct ProxyOptions {
    /// Most retries of one request (default 3; from a conf, its
    /// `max_retries`, 16 unless set).
    pub max_retries: usize,
    /// Request body kept in memory so that a request can be retried after
    /// some of its body went upstream (default 64 KiB). A longer body is
    /// not retried once any of it was sent.
    pub retry_buffer_size: usize,
    /// Upstream statuses on which an idempotent request is tried again on
    /// the next `upstream_peer` (like nginx's `proxy_next_upstream
    /// http_502 http_503 http_504`); empty by default. The last attempt's
    /// response goes to the client as it is.
    pub retry_on_status: Vec<u16>,
    /// Pass `CONNECT` requests to the upstream and tunnel the bytes after
    /// its 2xx (default off: `CONNECT` is answered 405).
    pub allow_connect: bool,
    /// An upgraded (WebSocket) or CONNECT tunnel closes after this long
    /// with no bytes either way (default 60 s).
    pub tunnel_idle_timeout: Duration,
    /// Keep an upstream request going when the client goes away (closes
    /// its connection or resets its HTTP/2 stream) before the response
    /// ends, like nginx's `proxy_ignore_client_abort on`. Default off: the
    /// upstream request is aborted at once, its connection not reused, and
    /// the request logged with 499.
    pub ignore_client_abort: bool,
    /// Trace each request and export the spans (feature `otel`).
    #[cfg(feature = "otel")]
    pub otel: Option<Arc<crate::otel::Tracer>>,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            max_retries: 3,
            retry_buffer_size: 64 * 1024,
            retry_on_status: Vec::new(),
            allow_connect: false,
            tunnel_idle_timeout: Duration::from_secs(60),
            ignore_client_abort: false,
            #[cfg(feature = "otel")]
            otel: None,
        }
    }
}

/// Names the type; its state is not shown.
impl<SV> std::fmt::Debug for HttpProxy<SV> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpProxy").finish_non_exhaustive()
    }
}

/// Runs the user's [`ProxyHttp`] for every request of an HTTP service.
pub struct HttpProxy<SV> {
    inner: SV,
    connector: Connector,
    options: ProxyOptions,
    /// The HTTP modules run on every request: those `init_downstream_modules`
    /// added, and any added here before the proxy serves.
    pub downstream_modules: HttpModules,
    /// Pingora's: transport options (`h2c`), read when the proxy serves as
    /// its own app (a service from [`http_proxy_service`]).
    pub server_options: Option<HttpServerOptions>,
    /// Pingora's: HTTP/2 settings for downstream connections, read as
    /// `server_options` is.
    pub h2_options: Option<H2Options>,
    /// How connections are served when the proxy is its own app; inside
    /// an `HttpServer`, that server's settings apply instead.
    settings: HttpServerSettings,
    /// `settings` with `server_options` and `h2_options` applied, fixed by
    /// the first connection.
    serving: OnceLock<HttpServerSettings>,
}

impl ProxyOptions {
    /// The defaults, with what the conf turns on: tracing to the conf's
    /// `otel_endpoint` (under `otel_service_name`) when it is set. Without
    /// the `otel` feature a set `otel_endpoint` is only warned about.
    ///
    /// # Errors
    ///
    /// With the `otel` feature and `otel_endpoint` set: `InvalidInput` for an
    /// unknown `otel_protocol` or a bad endpoint, `InternalError` if the
    /// exporter's runtime cannot start (see `Tracer::with_protocol`).
    pub fn from_conf(conf: &ServerConf) -> Result<ProxyOptions> {
        #[allow(unused_mut)]
        let mut options = ProxyOptions {
            max_retries: conf.max_retries,
            ..ProxyOptions::default()
        };
        if let Some(endpoint) = &conf.otel_endpoint {
            #[cfg(feature = "otel")]
            {
                let service = conf.otel_service_name.clone().unwrap_or_else(|| {
                    std::env::args()
                        .next()
                        .and_then(|a| a.rsplit('/').next().map(str::to_string))
                        .unwrap_or_else(|| "pingora".into())
                });
                let protocol = match &conf.otel_protocol {
                    Some(p) => p.parse()?,
                    None => crate::otel::OtlpProtocol::default(),
                };
                let tracer = crate::otel::Tracer::with_protocol(endpoint, &service, protocol)?;
                options.otel = Some(Arc::new(tracer));
            }
            #[cfg(not(feature = "otel"))]
            warn!("otel_endpoint {endpoint} is set, but pingora-proxy was built without `otel`");
        }
        Ok(options)
    }
}

impl<SV: ProxyHttp> HttpProxy<SV> {
    /// A proxy running `inner` with the options the conf asks for
    /// ([`ProxyOptions::from_conf`]; the defaults without a conf),
    /// connecting with the conf's pool size and CA file.
    pub fn new(inner: SV, conf: Option<&ServerConf>) -> Self {
        let options = match conf.map(ProxyOptions::from_conf) {
            None => ProxyOptions::default(),
            Some(Ok(o)) => o,
            Some(Err(e)) => {
                // The conf was validated; what is left is, e.g., a name
                // that does not resolve. Serve, untraced, and say so.
                error!("proxy options from the conf: {e}");
                ProxyOptions::default()
            }
        };
        Self::with_options(inner, conf, options)
    }

    /// As [`new`](Self::new), with these options.
    pub fn with_options(inner: SV, conf: Option<&ServerConf>, options: ProxyOptions) -> Self {
        let mut downstream_modules = HttpModules::new();
        inner.init_downstream_modules(&mut downstream_modules);
        HttpProxy {
            inner,
            connector: Connector::new(conf.map(ConnectorOptions::from_server_conf)),
            options,
            downstream_modules,
            server_options: None,
            h2_options: None,
            settings: HttpServerSettings::default(),
            serving: OnceLock::new(),
        }
    }

    /// Accept HTTP/2 with prior knowledge (h2c) on plain connections, when
    /// the proxy is its own app (see [`HttpServerSettings::set_h2c`]).
    pub fn set_h2c(&mut self, on: bool) {
        self.settings.set_h2c(on);
    }

    /// How connections are served when the proxy is its own app: HTTP/1
    /// limits, HTTP/2 settings, parking, drain time.
    pub fn server_settings_mut(&mut self) -> &mut HttpServerSettings {
        &mut self.settings
    }

    /// The settings connections are served with: `settings` with
    /// Pingora's `server_options` and `h2_options` on top.
    fn serving(&self) -> &HttpServerSettings {
        self.serving.get_or_init(|| {
            let mut s = self.settings.clone();
            if self.server_options.as_ref().is_some_and(|o| o.h2c) {
                s.set_h2c(true);
            }
            if let Some(h2) = self.h2_options {
                s.set_h2_options(h2);
            }
            s
        })
    }

    /// The user's callbacks.
    pub fn inner(&self) -> &SV {
        &self.inner
    }

    /// The upstream connector (pool counters live here).
    pub fn connector(&self) -> &Connector {
        &self.connector
    }

    /// The options in force.
    pub fn options(&self) -> &ProxyOptions {
        &self.options
    }
}

/// A listening service that proxies with `inner` (add listeners with
/// `add_tcp` / `add_tls_with_settings`).
pub fn http_proxy_service<SV: ProxyHttp>(
    conf: &Arc<ServerConf>,
    inner: SV,
) -> Service<HttpProxy<SV>> {
    http_proxy_service_with_name(conf, inner, "Pingora HTTP Proxy Service")
}

/// The proxy pipeline around `inner`, with the server's configuration,
/// for a service built by hand (`HttpServer::new(http_proxy(..))` in a
/// `listening::Service`); [`http_proxy_service`] does both.
pub fn http_proxy<SV: ProxyHttp>(conf: &Arc<ServerConf>, inner: SV) -> HttpProxy<SV> {
    HttpProxy::new(inner, Some(conf))
}

/// As [`http_proxy_service`], with a name for logs.
pub fn http_proxy_service_with_name<SV: ProxyHttp>(
    conf: &Arc<ServerConf>,
    inner: SV,
    name: &str,
) -> Service<HttpProxy<SV>> {
    Service::new(name.to_string(), HttpProxy::new(inner, Some(conf)))
}

/// The status for an error that ends a request: 502 when no upstream could
/// be reached or it broke, 504 when it timed out, the parser's 4xx for a bad
/// request, else 500.
pub fn error_status(e: &Error) -> u16 {
    let upstream = *e.esource() == ErrorSource::Upstream;
    match e.etype() {
        ConnectTimedout | TLSHandshakeTimedout => 504,
        ReadTimedout | WriteTimedout if upstream => 504,
        ConnectRefused | ConnectNoRoute | ConnectError | ConnectProxyFailure
        | TLSHandshakeFailure | InvalidCert | CertHostnameMismatch | CertExpired
        | CertUnknownCA | BindError | SocketError => 502,
        // An explicit status, or a custom kind that names one (such as
        // the HTTP/2 connection limit's 503).
        HTTPStatus(c) | CustomCode(_, c) => *c,
        // The client went away first (nginx's "client closed request").
        ConnectionClosed if *e.esource() == ErrorSource::Downstream => 499,
        t => match t.http_status() {
            Some(c) if (400..500).contains(&c) && !upstream => c,
            _ if upstream => 502,
            _ => 500,
        },
    }
}

/// Whether an error's kind means the upstream could not be reached.
pub fn is_connect_error(e: &ErrorType) -> bool {
    matches!(
        e,
        ConnectTimedout | ConnectRefused | ConnectNoRoute | ConnectError
    )
}

/// Methods that a retry may send twice (RFC 9110 §9.2.2).
fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Decide whether an upstream error before the response header may be
/// retried elsewhere. Always when the request provably was not processed:
/// the layers below say so (connect errors, HTTP/2 GOAWAY past the stream
/// or REFUSED_STREAM, and, on a reused connection, a close or reset before
/// any response byte: the upstream closed it idle as the request went
/// out), and a failed write (the request did not all go out). Otherwise,
/// on a reused connection, only an idempotent request: a POST that may
/// have been processed (a timeout, a broken response) is never sent twice.
fn retry_if_safe(e: &mut Error, reused: bool, method: &Method) {
    if reused {
        e.set_reused();
    }
    if !e.retry() && (*e.etype() == WriteError || (reused && idempotent(method))) {
        e.set_retry(true);
    }
}

impl<SV: ProxyHttp> HttpProxy<SV> {
    async fn run(self: &Arc<Self>, session: &mut Session, ctx: &mut SV::CTX) -> Result<()> {
        if session.req_header().method() == Method::CONNECT && !self.options.allow_connect {
            return Error::e_explain(HTTPStatus(405), "CONNECT is not allowed here");
        }
        self.inner.early_request_filter(session, ctx).await?;
        if !self.downstream_modules.is_empty() {
            let mut modules = self.downstream_modules.build_ctx();
            modules.downstream_session(session.as_downstream());
            modules
                .request_header_filter(session.req_header_mut())
                .await?;
            let early = modules.early_response();
            session.downstream_modules_ctx = modules;
            if let Some((resp, body)) = early {
                // A module answered (a rate limit's 429): through the
                // modules' response filters, and no further.
                session.write_response_header(resp, body.is_empty()).await?;
                if !body.is_empty() {
                    session.write_response_body(Some(body), true).await?;
                }
                return Ok(());
            }
        }
        if self.inner.request_filter(session, ctx).await? {
            if session.response_written().is_some() {
                session.finish_body().await?;
            }
            return Ok(());
        }
        self.inner.request_cache_filter(session, ctx)?;
        let mut cache = None;
        if session.cache_enabled() || self.inner.is_purge(session, ctx) {
            // Boxed: the cache's futures stay out of every request's.
            match Box::pin(self.cache_lookup(session, ctx)).await? {
                Lookup::Served => return Ok(()),
                Lookup::Proceed(c) => cache = c,
            }
        }
        if !self.inner.proxy_upstream_filter(session, ctx).await? {
            if session.response_written().is_none() {
                session.respond_error_with_text(502).await?;
            }
            return Ok(());
        }
        let mut attempt = 0;
        let result: Result<()> = loop {
            let peer = match self.inner.upstream_peer(session, ctx).await {
                Ok(p) => p,
                Err(e) => break Err(e),
            };
            #[cfg(feature = "otel")]
            session.trace(|t| t.begin("upstream connect", crate::otel::SpanKind::Internal));
            let connected = self.connector.get_http_session(&peer).await;
            #[cfg(feature = "otel")]
            session.trace(|t| {
                let reused = connected.as_ref().map_or(0, |(_, r)| i64::from(*r));
                t.end(
                    "upstream connect",
                    connected.is_err(),
                    Some(("pingora.reused", reused)),
                );
            });
            let e = match connected {
                Err(mut e) => {
                    if is_connect_error(e.etype()) {
                        e.set_retry(true);
                    }
                    self.inner.fail_to_connect(session, &peer, ctx, e)
                }
                Ok((upstream, reused)) => {
                    if let Err(e) = self
                        .inner
                        .connected_to_upstream(
                            session,
                            reused,
                            &peer,
                            upstream.fd(),
                            upstream.digest(),
                            ctx,
                        )
                        .await
                    {
                        break Err(e);
                    }
                    let retry_status = attempt < self.options.max_retries;
                    // Held here and lent out: the session (over 500 bytes)
                    // is not moved into each step's future.
                    let mut att = Attempt::new(upstream, &peer, cache.as_deref_mut());
                    match self
                        .proxy_to_upstream(session, &mut att, ctx, retry_status)
                        .await
                    {
                        Ok(()) => break Ok(()),
                        Err(mut e) => {
                            #[cfg(feature = "otel")]
                            session.trace(|t| {
                                t.end("upstream request", true, None);
                                t.end("upstream response", true, None);
                            });
                            if *e.esource() == ErrorSource::Upstream {
                                retry_if_safe(&mut e, reused, session.req_header().method());
                            }
                            let e = self.inner.error_while_proxy(&peer, session, e, ctx, reused);
                            let lost = session.state().is_some_and(|s| s.sent_lost);
                            if lost || att.answered || session.response_written().is_some() {
                                break Err(e);
                            }
                            e
                        }
                    }
                }
            };
            if !e.retry() || attempt >= self.options.max_retries {
                break Err(e);
            }
            attempt += 1;
            crate::metrics::proxy().retries.inc();
            let summary = self.inner.request_summary(session, ctx);
            warn!("retrying {summary} after: {e}");
            let state = session.state_mut();
            state.retries = attempt;
            state.previous_error = Some(Arc::from(e));
        };
        match cache {
            None => result,
            // Boxed: the cache's future stays out of every request's.
            Some(cc) => Box::pin(self.after_upstream(session, ctx, cc, result)).await,
        }
    }

    /// After the attempts, the cache's part: on failure, the stale object
    /// if its `stale-if-error` allows; after an unsafe method, invalidation.
    async fn after_upstream(
        &self,
        session: &mut Session,
        ctx: &mut SV::CTX,
        mut cc: Box<CacheCtx>,
        result: Result<()>,
    ) -> Result<()> {
        match result {
            Err(e) if cc.stale.is_some() => {
                if self.serve_stale_on_error(session, ctx, &mut cc, &e).await? {
                    Ok(())
                } else {
                    Err(e)
                }
            }
            Ok(()) if cc.invalidate => {
                self.cache_invalidate(session, &cc);
                Ok(())
            }
            r => r,
        }
    }
}

impl<SV: ProxyHttp> HttpServerApp for HttpProxy<SV> {
    async fn process_request(
        self: &Arc<Self>,
        session: &mut ServerSession,
        _shutdown: &ShutdownWatch,
    ) -> Result<()> {
        let session = Session::from_mut(session);
        let mut ctx = self.inner.new_ctx();
        let start = Instant::now();
        #[cfg(feature = "otel")]
        if let Some(tracer) = &self.options.otel {
            tracer.ensure_flushing(_shutdown);
            let trace = crate::otel::RequestTrace::start(tracer, session.req_header());
            session.state_mut().trace = Some(trace);
        }
        let result = self.run(session, &mut ctx).await;
        let mut broken = false;
        let mut status = session.response_written().map(|r| r.status().as_u16());
        if let Err(e) = &result {
            if *e.esource() == ErrorSource::Upstream {
                crate::metrics::proxy()
                    .upstream_errors
                    .with_label_values(&[e.etype().as_str()])
                    .inc();
            }
            // A response that had started cannot be answered any more: the
            // connection (or HTTP/2 stream) must end abruptly, so that the
            // client sees it cut short rather than complete.
            broken = session.response_written().is_some();
            let fail = self.inner.fail_to_proxy(session, e, &mut ctx).await;
            let code = fail.error_code;
            status = status.or((code != 0).then_some(code));
            if !self.inner.suppress_error_log(session, &ctx, e) {
                // Asked for whatever the log level: the user may count on it.
                let summary = self.inner.request_summary(session, &ctx);
                error!(
                    "{summary} failed with {code} after {:?}: {e}",
                    start.elapsed()
                );
            }
            // A response that broke off cannot be followed by another; an
            // error answered whole ends the connection unless
            // `fail_to_proxy` said it may go on.
            if broken || !fail.can_reuse_downstream {
                session.set_keepalive(None);
            }
        }
        crate::metrics::proxy().request_done(
            session.is_http2(),
            status.unwrap_or(500),
            start.elapsed(),
        );
        #[cfg(feature = "otel")]
        if let Some(trace) = session.state_mut().trace.take() {
            trace.finish(status.unwrap_or(500), result.is_err());
        }
        self.inner
            .logging(session, result.as_ref().err().map(|e| &**e), &mut ctx)
            .await;
        match result {
            Err(e) if broken => Err(e),
            _ => Ok(()),
        }
    }

    /// Served by itself (as [`http_proxy_service`] does, Pingora's shape):
    /// its settings with `server_options` and `h2_options` on top.
    fn server_settings(&self) -> Option<&HttpServerSettings> {
        Some(self.serving())
    }
}
