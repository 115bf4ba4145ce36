//! [`HttpProxy`]: runs the [`ProxyHttp`] phases for each request, over
//! HTTP/1 or HTTP/2 on either side.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::Method;
use pingora_core::apps::http_app::{HttpServerApp, HttpServerSettings};
use pingora_core::apps::HttpServerOptions;
use pingora_core::connectors::http::{ClientSession, Connector};
use pingora_core::connectors::ConnectorOptions;
use pingora_core::modules::http::HttpModules;
use pingora_core::protocols::http::v2::server::H2Options;
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::{ServerConf, ShutdownWatch};
use pingora_core::services::listening::Service;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, ErrorType::*, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use tracing::{error, warn};

use crate::{ProxyHttp, Session};

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
                let tracer = crate::otel::Tracer::new(endpoint, &service)?;
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

/// The name of `peer` for a Host header: its SNI when set, else its
/// address (`localhost` for a Unix socket).
fn peer_host(peer: &HttpPeer) -> String {
    if !peer.sni.is_empty() {
        return peer.sni.clone();
    }
    match peer.address() {
        pingora_core::protocols::l4::SocketAddr::Inet(a) => a.to_string(),
        pingora_core::protocols::l4::SocketAddr::Unix(_) => "localhost".to_string(),
    }
}

/// Wait out a body filter's delay, if it asked for one.
async fn pause(delay: Option<Duration>) {
    if let Some(d) = delay.filter(|d| !d.is_zero()) {
        tokio::time::sleep(d).await;
    }
}

/// The downstream request made fit for the upstream `peer`.
fn upstream_request(session: &Session, peer: &HttpPeer, to_h2: bool) -> Result<Box<RequestHeader>> {
    // Everything here reads the request without building the map of a
    // header still as parsed (`method()`, `header_values`, `has_header`).
    // Boxed at once (in this thread's spare box, given back when the
    // upstream session is done with it): the header (over 400 bytes) is
    // not moved again.
    let mut req = session.req_header().clone().boxed();
    let connect = req.method() == Method::CONNECT;
    let wants_upgrade = session.is_upgrade_req() && !to_h2;
    let upgrade = if wants_upgrade {
        req.tracked_values(pingora_http::tracked::UPGRADE)
            .next()
            .and_then(|v| http::HeaderValue::from_bytes(v).ok())
    } else {
        None
    };
    let te_trailers = req.has_tracked(pingora_http::tracked::TE)
        && req.tracked_values(pingora_http::tracked::TE).any(|v| {
            v.split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"))
        });
    req.remove_hop_by_hop();
    if te_trailers {
        req.insert_header("TE", "trailers")?;
    }
    if to_h2 {
        return Ok(req);
    }
    // HTTP/1 upstream: Host from :authority, origin-form target, framing.
    if !req.has_tracked(pingora_http::tracked::HOST) {
        // HTTP/1.1 requires Host (RFC 9112 §3.2): from the target's
        // authority, else (an HTTP/1.0 client that sent none, an HTTP/2
        // request without :authority) the upstream's name, as nginx's
        // default `$proxy_host`. `upstream_request_filter` may change it.
        let host = match req.uri().authority() {
            Some(a) => a.to_string(),
            None => peer_host(peer),
        };
        req.insert_header("Host", host)?;
    }
    if req.uri().scheme().is_some() && !connect {
        let pq = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        req.set_raw_path(pq.as_bytes())?;
    }
    req.set_version(http::Version::HTTP_11);
    if wants_upgrade {
        if let Some(u) = upgrade {
            req.insert_header("Connection", "Upgrade")?;
            req.insert_header("Upgrade", u)?;
        }
    }
    Ok(req)
}

/// HTTP/1 framing for a request body of unknown length: chunked, unless
/// the request has no body or a Content-Length (which the user's
/// `upstream_request_filter` may have removed after changing the body).
fn frame_h1_request(session: &Session, req: &mut RequestHeader) -> Result<()> {
    let body_follows = !session.is_body_done() || session.has_held_body();
    if body_follows
        && req.method() != Method::CONNECT
        && !req.has_tracked(pingora_http::tracked::CONTENT_LENGTH)
        && !req.has_tracked(pingora_http::tracked::TRANSFER_ENCODING)
    {
        req.insert_header("Transfer-Encoding", "chunked")?;
    }
    Ok(())
}

/// The upstream's response made fit for the client.
fn downstream_response(mut out: Box<ResponseHeader>) -> Box<ResponseHeader> {
    let switching = out.status() == http::StatusCode::SWITCHING_PROTOCOLS;
    let upgrade = if switching {
        out.tracked_values(pingora_http::tracked::UPGRADE)
            .next()
            .and_then(|v| http::HeaderValue::from_bytes(v).ok())
    } else {
        None
    };
    out.remove_hop_by_hop();
    if switching {
        let _ = out.insert_header("Connection", "Upgrade");
        if let Some(u) = upgrade {
            let _ = out.insert_header("Upgrade", u);
        }
    }
    out
}

impl<SV: ProxyHttp> HttpProxy<SV> {
    async fn run(&self, session: &mut Session, ctx: &mut SV::CTX) -> Result<()> {
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
        if !self.inner.proxy_upstream_filter(session, ctx).await? {
            if session.response_written().is_none() {
                session.respond_error_with_text(502).await?;
            }
            return Ok(());
        }
        let mut attempt = 0;
        loop {
            let peer = self.inner.upstream_peer(session, ctx).await?;
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
                    // Held here and lent out: the session (over 500 bytes)
                    // is not moved into each step's future.
                    let mut up = Some(upstream);
                    self.inner
                        .connected_to_upstream(
                            session,
                            reused,
                            &peer,
                            up.as_ref().map_or(-1, ClientSession::fd),
                            up.as_ref().and_then(ClientSession::digest),
                            ctx,
                        )
                        .await?;
                    let retry_status = attempt < self.options.max_retries;
                    // Set once the upstream's response header was taken:
                    // the request was answered, and is never sent again.
                    let mut answered = false;
                    match self
                        .proxy_to_upstream(
                            session,
                            &mut up,
                            &peer,
                            ctx,
                            retry_status,
                            &mut answered,
                        )
                        .await
                    {
                        Ok(()) => return Ok(()),
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
                            if lost || answered || session.response_written().is_some() {
                                return Err(e);
                            }
                            e
                        }
                    }
                }
            };
            if !e.retry() || attempt >= self.options.max_retries {
                return Err(e);
            }
            attempt += 1;
            crate::metrics::proxy().retries.inc();
            let summary = self.inner.request_summary(session, ctx);
            warn!("retrying {summary} after: {e}");
            let state = session.state_mut();
            state.retries = attempt;
            state.previous_error = Some(Arc::from(e));
        }
    }

    /// One attempt at the request over `slot`'s upstream session, which
    /// `finish_upstream` takes from the slot to release when it can be
    /// reused.
    async fn proxy_to_upstream(
        &self,
        session: &mut Session,
        slot: &mut Option<ClientSession>,
        peer: &HttpPeer,
        ctx: &mut SV::CTX,
        retry_status: bool,
        answered: &mut bool,
    ) -> Result<()> {
        let Some(up) = slot.as_mut() else {
            return Error::e_explain(InternalError, "no upstream session");
        };
        let mut req = upstream_request(session, peer, up.is_http2())?;
        self.inner
            .upstream_request_filter(session, &mut req, ctx)
            .await?;
        if !up.is_http2() {
            frame_h1_request(session, &mut req)?;
        }
        #[cfg(feature = "otel")]
        if let Some(tp) =
            session.trace(|t| t.begin("upstream request", crate::otel::SpanKind::Client))
        {
            // The upstream's spans become children of this one.
            req.insert_header("traceparent", tp)?;
        }
        let method = req.method().clone();
        let mut req_ended = session.is_body_done() && !session.has_held_body();
        up.write_request_header_eos(req, req_ended).await?;
        if req_ended {
            up.finish_body(None).await?;
        } else {
            // What an earlier attempt sent (already filtered), then what
            // was read ahead.
            let sent = session.state().map(|s| s.sent.clone()).unwrap_or_default();
            for b in sent {
                up.write_body(b).await?;
            }
            while let Some(b) = session.state_mut().read_ahead.pop_front() {
                req_ended = self
                    .forward_request_piece(session, up, Some(b), ctx, false)
                    .await?;
            }
        }

        // Until the response header arrives, the request body streams up.
        // Body pieces are queued and sent while the upstream is also read,
        // so neither side ever waits on the other.
        loop {
            tokio::select! {
                // The upstream first: it is pending until the header comes,
                // and the body branch is off while anything is queued.
                biased;
                r = up.read_response_while_sending() => {
                    if !r? {
                        continue; // the queue went out; no header yet
                    }
                    let status = up.resp_header().map(|r| r.status());
                    // Interim 100s are ours to send (or not), not the upstream's.
                    if status.is_some_and(|s| s.is_informational() && s != http::StatusCode::SWITCHING_PROTOCOLS) {
                        continue;
                    }
                    break;
                }
                // The client: its next piece of body; once the request is
                // all sent, whether it went away (then the upstream request
                // is dropped, and its connection with it).
                chunk = session.body_or_gone(req_ended, self.options.ignore_client_abort), if req_ended || !up.has_queued() => {
                    let chunk = chunk.map_err(|e| e.into_down())?;
                    req_ended = self.forward_request_piece(session, up, chunk, ctx, true).await?;
                }
            }
        }

        let status = up
            .resp_header()
            .ok_or_else(|| Error::explain(InvalidHTTPHeader, "no response"))?
            .status();
        #[cfg(feature = "otel")]
        session.trace(|t| {
            let code = Some(("http.response.status_code", i64::from(status.as_u16())));
            t.end("upstream request", status.is_server_error(), code);
            t.begin("upstream response", crate::otel::SpanKind::Internal);
        });
        if retry_status
            && self.options.retry_on_status.contains(&status.as_u16())
            && idempotent(&method)
        {
            let mut e = Error::explain(
                HTTPStatus(status.as_u16()),
                format!("upstream answered {status}"),
            )
            .into_up();
            e.set_retry(true);
            return Err(e);
        }
        // Taken, not copied: the upstream session has no further use for it.
        let Some(upstream_resp) = up.take_resp_header() else {
            return Error::e_explain(InvalidHTTPHeader, "no response");
        };
        *answered = true;
        let mut resp = downstream_response(upstream_resp);
        self.inner
            .upstream_response_filter(session, &mut resp, ctx)
            .await?;
        self.inner.response_filter(session, &mut resp, ctx).await?;
        if !self.downstream_modules.is_empty() {
            let eos = up.is_body_done() && up.trailers().is_none();
            if let Some(m) = session.modules() {
                m.response_header_filter(&mut resp, eos).await?;
            }
        }
        let tunnel = status == http::StatusCode::SWITCHING_PROTOCOLS
            || (method == Method::CONNECT && status.is_success());
        if tunnel {
            session
                .as_downstream_mut()
                .write_response_header(resp)
                .await
                .map_err(|e| e.into_down())?;
            return self.tunnel(session, up).await;
        }
        if up.is_body_done() && up.trailers().is_none() {
            // No body at all: unless the filters make one, the header ends
            // the response (one HEADERS frame over HTTP/2, which is how a
            // gRPC error without a message must arrive).
            let mut data = None;
            let delay = self.body_filters(session, &mut data, true, ctx)?;
            let mut data = data.filter(|d| !d.is_empty());
            // The modules' last word comes with the rest of the body.
            if !self.downstream_modules.is_empty() {
                if let Some(m) = session.modules() {
                    if let Some(done) = m.response_done_filter()?.filter(|b| !b.is_empty()) {
                        data = Some(match data.take() {
                            Some(d) => Bytes::from([&d[..], &done[..]].concat()),
                            None => done,
                        });
                    }
                }
            }
            if let Some(d) = &data {
                // A body made from nothing: its length replaces the
                // upstream's (not for HEAD, where it describes a GET).
                if method != Method::HEAD && resp.has_tracked(pingora_http::tracked::CONTENT_LENGTH)
                {
                    resp.insert_header(CONTENT_LENGTH, d.len().to_string())?;
                }
            }
            self.finish_upstream(session, slot, peer, ctx, req_ended)
                .await?;
            session
                .write_response_header_eos(resp, data.is_none())
                .await
                .map_err(|e| e.into_down())?;
            if let Some(d) = data {
                pause(delay).await;
                // Straight to the client: the filters (the modules' too)
                // have run on this piece.
                session
                    .as_downstream_mut()
                    .write_response_body(d)
                    .await
                    .map_err(|e| e.into_down())?;
                session.finish_body().await.map_err(|e| e.into_down())?;
            }
            return Ok(());
        }
        // A header with a Content-Length waits for the first piece of body
        // to come through the filters, so that a filter that changes the
        // body's size cannot leave a wrong length on it: when that piece
        // is the whole body its new length is set, otherwise the length is
        // removed (the response goes chunked over HTTP/1).
        let mut held = None;
        if resp.has_tracked(pingora_http::tracked::CONTENT_LENGTH) && method != Method::HEAD {
            held = Some(resp);
        } else {
            session
                .as_downstream_mut()
                .write_response_header(resp)
                .await
                .map_err(|e| e.into_down())?;
        }
        // Body bytes in from the upstream and out through the filters,
        // while a Content-Length that went out holds them to it.
        let (mut bytes_in, mut bytes_out, mut length_sent) = (0usize, 0usize, false);
        // Whether any Content-Length went out (the upstream's or a new one).
        let mut length_out = false;

        // Then both directions at once, until the response is complete.
        let (last, trailer_body, delay) = loop {
            tokio::select! {
                data = up.read_body_while_sending() => {
                    let Some(mut data) = data? else {
                        continue; // the queue went out; nothing read yet
                    };
                    // The end comes with the last piece when the framing
                    // says so (and as `None` otherwise).
                    let end = data.is_none() || up.is_body_done();
                    let size_in = data.as_ref().map_or(0, Bytes::len);
                    let delay = self.body_filters(session, &mut data, end, ctx)?;
                    let size_out = data.as_ref().map_or(0, Bytes::len);
                    bytes_in += size_in;
                    bytes_out += size_out;
                    if let Some(mut resp) = held.take() {
                        if size_out != size_in {
                            if end {
                                // The whole body, already filtered.
                                resp.insert_header(CONTENT_LENGTH, size_out.to_string())?;
                                length_out = true;
                            } else {
                                resp.remove_header(&CONTENT_LENGTH);
                            }
                        } else {
                            // The upstream's length stands: what goes out
                            // must add up to what came in.
                            length_sent = true;
                            length_out = true;
                        }
                        session
                            .as_downstream_mut()
                            .write_response_header(resp)
                            .await
                            .map_err(|e| e.into_down())?;
                    }
                    if length_sent && (bytes_out > bytes_in || (end && bytes_out != bytes_in)) {
                        return Error::e_explain(
                            InternalError,
                            "a body filter changed the response's size after its Content-Length \
                             went out; remove Content-Length in response_filter when a filter \
                             may change the body after its first piece",
                        );
                    }
                    if end {
                        let mut trailer_body = None;
                        if let Some(t) = up.trailers() {
                            let mut t = t.clone();
                            self.inner.upstream_response_trailer_filter(session, &mut t, ctx)?;
                            // Bytes from the filter go instead of the trailers.
                            trailer_body = self.inner.response_trailer_filter(session, &mut t, ctx).await?;
                            let mut t = Some(Box::new(t));
                            if !self.downstream_modules.is_empty() {
                                if let Some(m) = session.modules() {
                                    if let Some(b) = m.response_trailer_filter(&mut t)? {
                                        trailer_body = Some(b);
                                    }
                                }
                            }
                            if let (None, Some(t)) = (&trailer_body, t) {
                                session.set_response_trailers(*t);
                            }
                        }
                        break (data, trailer_body, delay);
                    }
                    if let Some(d) = data.filter(|d| !d.is_empty()) {
                        pause(delay).await;
                        session.as_downstream_mut().write_response_body(d).await.map_err(|e| e.into_down())?;
                    }
                }
                // The client: its next piece of body; once the request is
                // all sent, whether it went away (then the upstream request
                // is dropped, and its connection with it).
                chunk = session.body_or_gone(req_ended, self.options.ignore_client_abort), if req_ended || !up.has_queued() => {
                    let chunk = chunk.map_err(|e| e.into_down())?;
                    req_ended = self.forward_request_piece(session, up, chunk, ctx, true).await?;
                }
            }
        };
        // The upstream connection goes back to the pool before the client
        // sees the end, so that its next request can have it.
        self.finish_upstream(session, slot, peer, ctx, req_ended)
            .await?;
        let mut done_body = None;
        if !self.downstream_modules.is_empty() {
            if let Some(m) = session.modules() {
                done_body = m.response_done_filter()?.filter(|b| !b.is_empty());
            }
        }
        if length_out && done_body.is_some() {
            return Error::e_explain(
                InternalError,
                "an HTTP module's response_done_filter added body after the Content-Length \
                 went out; remove Content-Length in its response_header_filter",
            );
        }
        for d in [last, trailer_body, done_body].into_iter().flatten() {
            if !d.is_empty() {
                pause(delay).await;
                session
                    .as_downstream_mut()
                    .write_response_body(d)
                    .await
                    .map_err(|e| e.into_down())?;
            }
        }
        session.finish_body().await.map_err(|e| e.into_down())
    }

    /// A piece of response body through `upstream_response_body_filter`
    /// and `response_body_filter`; returns the longer delay they asked for.
    fn body_filters(
        &self,
        session: &mut Session,
        data: &mut Option<Bytes>,
        end: bool,
        ctx: &mut SV::CTX,
    ) -> Result<Option<Duration>> {
        let up = self
            .inner
            .upstream_response_body_filter(session, data, end, ctx)?;
        let down = self.inner.response_body_filter(session, data, end, ctx)?;
        if !self.downstream_modules.is_empty() {
            if let Some(m) = session.modules() {
                m.response_body_filter(data, end)?;
            }
        }
        Ok(up.max(down))
    }

    /// The response is complete: end the request too if its body is all
    /// in, and give the upstream connection back for reuse when it can be.
    async fn finish_upstream(
        &self,
        session: &mut Session,
        slot: &mut Option<ClientSession>,
        peer: &HttpPeer,
        ctx: &mut SV::CTX,
        mut req_ended: bool,
    ) -> Result<()> {
        #[cfg(feature = "otel")]
        session.trace(|t| t.end("upstream response", false, None));
        let Some(up) = slot.as_mut() else {
            return Ok(());
        };
        if !req_ended && (session.is_body_done() || up.request_length_sent()) {
            // The client's body ended as the response did; or every byte
            // its length promised has gone upstream and only its end (an
            // HTTP/2 END_STREAM, which may come after the response) is
            // missing: the upstream request is complete either way, and
            // its connection can be reused.
            req_ended = self
                .forward_request_piece(session, up, None, ctx, false)
                .await?;
        }
        if req_ended {
            if let Some(up) = slot.take() {
                self.connector.release(up, peer);
            }
        }
        Ok(())
    }

    /// One piece of request body (or its end, `None`) from downstream to
    /// upstream, through `request_body_filter`, kept for a retry while it
    /// fits; `queue`d for `drive` to send, or written at once. Returns
    /// whether the request body is complete.
    async fn forward_request_piece(
        &self,
        session: &mut Session,
        up: &mut ClientSession,
        mut chunk: Option<Bytes>,
        ctx: &mut SV::CTX,
        queue: bool,
    ) -> Result<bool> {
        // The end comes with the last piece when the body's length says so
        // (and as `None` otherwise).
        let end = chunk.is_none() || (session.is_body_done() && !session.has_read_ahead());
        if end && session.state().is_some_and(|s| s.end_filtered) {
            // A retry: the filter has seen the end already.
            let trailers = session.request_trailers().cloned();
            Self::end_request(up, trailers, queue).await?;
            return Ok(true);
        }
        if !self.downstream_modules.is_empty() {
            if let Some(m) = session.modules() {
                m.request_body_filter(&mut chunk, end).await?;
            }
        }
        self.inner
            .request_body_filter(session, &mut chunk, end, ctx)
            .await?;
        let limit = self.options.retry_buffer_size;
        let state = session.state_mut();
        state.end_filtered |= end;
        if let Some(d) = chunk.filter(|d| !d.is_empty()) {
            if !state.sent_lost && state.sent_len + d.len() <= limit {
                state.sent_len += d.len();
                state.sent.push(d.clone());
            } else {
                state.sent_lost = true;
                state.sent = Vec::new();
            }
            if queue {
                up.queue_body(d)?;
            } else {
                up.write_body(d).await?;
            }
        }
        if end {
            let trailers = session.request_trailers().cloned();
            Self::end_request(up, trailers, queue).await?;
        }
        Ok(end)
    }

    async fn end_request(
        up: &mut ClientSession,
        trailers: Option<http::HeaderMap>,
        queue: bool,
    ) -> Result<()> {
        if queue {
            up.queue_finish(trailers)
        } else {
            up.finish_body(trailers).await
        }
    }

    /// After a 101 (or a 2xx to CONNECT): copy raw bytes both ways until
    /// either side closes or nothing moves for the idle timeout.
    async fn tunnel(&self, session: &mut Session, up: &mut ClientSession) -> Result<()> {
        let idle = self.options.tunnel_idle_timeout;
        loop {
            tokio::select! {
                d = session.read_request_body(), if !up.has_queued() => match d.map_err(|e| e.into_down())? {
                    Some(d) => up.queue_body(d)?,
                    None => {
                        let _ = up.finish_body(None).await;
                        return Ok(());
                    }
                },
                u = up.read_body_while_sending() => match u? {
                    None => {} // the queue went out
                    Some(Some(u)) => session.as_downstream_mut().write_response_body(u).await.map_err(|e| e.into_down())?,
                    Some(None) => {
                        let _ = session.finish_body().await;
                        return Ok(());
                    }
                },
                _ = tokio::time::sleep(idle) => {
                    let _ = session.finish_body().await;
                    return Ok(());
                }
            }
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
