//! OpenTelemetry tracing (feature `otel`): a span per proxied request with
//! child spans for the upstream connect, the upstream request and the
//! upstream response; the W3C `traceparent` read from the client and
//! passed to the upstream; spans exported over OTLP/HTTP (JSON encoding)
//! to a collector.
//!
//! A small implementation of our own (no OpenTelemetry crates): spans are
//! collected in a bounded buffer and posted in batches by [`Tracer`].
//!
//! The simplest way on is the conf: `otel_endpoint` (and
//! `otel_service_name`) make every HTTP proxy built with that conf
//! ([`http_proxy_service`](crate::http_proxy_service), `HttpProxy::new`)
//! trace its requests; the tracer then sends its batches from a task it
//! starts on the first request, and a last batch when the server begins
//! shutting down. Or build one by hand and run it as a background service:
//!
//! ```no_run
//! use pingora_core::services::background::background_service;
//! use pingora_proxy::otel::Tracer;
//! use pingora_proxy::ProxyOptions;
//!
//! let exporter = background_service("otlp", Tracer::new("http://127.0.0.1:4318/v1/traces", "my-proxy").unwrap());
//! let options = ProxyOptions { otel: Some(exporter.task()), ..Default::default() };
//! // server.add_service(exporter); HttpProxy::with_options(app, conf, options) ...
//! ```

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::connectors::http::Connector;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::utils::json_str;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::RequestHeader;

/// Most spans held before the oldest are dropped (a collector that is down
/// must not grow the proxy's memory).
const MAX_BUFFERED: usize = 8192;
/// A batch is sent at least this often.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Span kinds, as OTLP numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// Work inside the proxy.
    Internal = 1,
    /// The request from the client.
    Server = 2,
    /// The request to the upstream.
    Client = 3,
}

/// One finished or running span.
#[derive(Debug, Clone)]
pub struct Span {
    /// The trace it belongs to.
    pub trace_id: [u8; 16],
    /// Its own id.
    pub span_id: [u8; 8],
    /// Its parent's id (the client's span for the root, if it sent one).
    pub parent: Option<[u8; 8]>,
    /// What it is.
    pub name: &'static str,
    /// Server, client or internal.
    pub kind: SpanKind,
    start: u128,
    end: u128,
    /// `key = value` attributes (strings or integers).
    pub attributes: Vec<(&'static str, AttrValue)>,
    /// The span ended in error.
    pub error: bool,
}

/// An attribute's value.
#[derive(Debug, Clone)]
pub enum AttrValue {
    /// A string.
    Str(String),
    /// An integer.
    Int(i64),
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

// A random 64-bit number (ids of traces and spans).
use pingora_core::utils::random_u64 as random;

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A W3C `traceparent` (version 00): trace id, parent span id, flags.
pub fn parse_traceparent(v: &str) -> Option<([u8; 16], [u8; 8], u8)> {
    let mut parts = v.trim().split('-');
    let version = parts.next()?;
    let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2 || version == "ff" || (version == "00" && parts.next().is_some()) {
        return None;
    }
    let trace = unhex::<16>(trace).filter(|t| t.iter().any(|&b| b != 0))?;
    let span = unhex::<8>(span).filter(|s| s.iter().any(|&b| b != 0))?;
    let flags = unhex::<1>(flags)?[0];
    Some((trace, span, flags))
}

impl Span {
    fn new(
        trace_id: [u8; 16],
        parent: Option<[u8; 8]>,
        name: &'static str,
        kind: SpanKind,
    ) -> Span {
        Span {
            trace_id,
            span_id: random().to_le_bytes(),
            parent,
            name,
            kind,
            start: now_ns(),
            end: 0,
            attributes: Vec::new(),
            error: false,
        }
    }

    /// Add a string attribute.
    pub fn set_str(&mut self, key: &'static str, value: impl Into<String>) {
        self.attributes.push((key, AttrValue::Str(value.into())));
    }

    /// Add an integer attribute.
    pub fn set_int(&mut self, key: &'static str, value: i64) {
        self.attributes.push((key, AttrValue::Int(value)));
    }

    /// The `traceparent` that makes a downstream span a child of this one.
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-01", hex(&self.trace_id), hex(&self.span_id))
    }

    fn to_json(&self, out: &mut String) {
        let _ = write!(
            out,
            "{{\"traceId\":\"{}\",\"spanId\":\"{}\",",
            hex(&self.trace_id),
            hex(&self.span_id)
        );
        if let Some(p) = self.parent {
            let _ = write!(out, "\"parentSpanId\":\"{}\",", hex(&p));
        }
        let _ = write!(
            out,
            "\"name\":\"{}\",\"kind\":{},\"startTimeUnixNano\":\"{}\",\"endTimeUnixNano\":\"{}\",\"attributes\":[",
            self.name, self.kind as u8, self.start, self.end
        );
        for (i, (k, v)) in self.attributes.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            match v {
                AttrValue::Str(s) => {
                    let _ = write!(
                        out,
                        "{{\"key\":\"{k}\",\"value\":{{\"stringValue\":{}}}}}",
                        json_str(s)
                    );
                }
                AttrValue::Int(n) => {
                    let _ = write!(
                        out,
                        "{{\"key\":\"{k}\",\"value\":{{\"intValue\":\"{n}\"}}}}"
                    );
                }
            }
        }
        let _ = write!(
            out,
            "],\"status\":{{\"code\":{}}}}}",
            if self.error { 2 } else { 1 }
        );
    }
}

/// Collects finished spans and exports them to an OTLP/HTTP collector.
/// Run it as a background service (it sends a batch every second).
pub struct Tracer {
    endpoint: HttpPeer,
    path: String,
    host: String,
    service: String,
    spans: Mutex<Vec<Span>>,
    connector: Connector,
    /// Whether a task sends the batches (a background service, or the
    /// task [`ensure_flushing`](Tracer::ensure_flushing) started).
    flushing: AtomicBool,
}

impl Tracer {
    /// Export to `endpoint` (e.g. `http://127.0.0.1:4318/v1/traces`), with
    /// `service` as the resource's `service.name`.
    pub fn new(endpoint: &str, service: &str) -> Result<Tracer> {
        let bad = || {
            Error::explain(
                ErrorType::InvalidInput,
                format!("OTLP endpoint {endpoint:?}: not http(s)://HOST:PORT/PATH"),
            )
        };
        let (tls, rest) = if let Some(r) = endpoint.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = endpoint.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(bad());
        };
        let (hostport, path) = rest
            .split_once('/')
            .map_or((rest, "/v1/traces".to_string()), |(h, p)| {
                (h, format!("/{p}"))
            });
        let with_port = if hostport
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            hostport.to_string()
        } else {
            format!("{hostport}:{}", if tls { 443 } else { 4318 })
        };
        let sni = with_port
            .rsplit_once(':')
            .map_or("", |(h, _)| h)
            .to_string();
        let mut peer = HttpPeer::try_new(&with_port, tls, sni).map_err(|_| bad())?;
        peer.options.connection_timeout = Some(Duration::from_secs(2));
        peer.options.read_timeout = Some(Duration::from_secs(5));
        peer.options.write_timeout = Some(Duration::from_secs(5));
        Ok(Tracer {
            endpoint: peer,
            path,
            host: hostport.to_string(),
            service: service.to_string(),
            spans: Mutex::new(Vec::new()),
            connector: Connector::new(None),
            flushing: AtomicBool::new(false),
        })
    }

    fn record(&self, spans: impl IntoIterator<Item = Span>) {
        let mut buf = self.spans.lock().unwrap_or_else(|p| p.into_inner());
        buf.extend(spans);
        if buf.len() > MAX_BUFFERED {
            let extra = buf.len() - MAX_BUFFERED;
            buf.drain(..extra);
        }
    }

    /// The OTLP/HTTP JSON body for `spans`.
    fn body(&self, spans: &[Span]) -> String {
        let mut out = String::with_capacity(256 + spans.len() * 400);
        let _ = write!(
            out,
            "{{\"resourceSpans\":[{{\"resource\":{{\"attributes\":[{{\"key\":\"service.name\",\"value\":{{\"stringValue\":{}}}}}]}},\"scopeSpans\":[{{\"scope\":{{\"name\":\"pingora-proxy\",\"version\":\"{}\"}},\"spans\":[",
            json_str(&self.service),
            env!("CARGO_PKG_VERSION")
        );
        for (i, s) in spans.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            s.to_json(&mut out);
        }
        out.push_str("]}]}]}");
        out
    }

    /// Send what is buffered now. Spans that cannot be sent are dropped
    /// (and the failure logged).
    pub async fn flush(&self) -> Result<()> {
        let spans = std::mem::take(&mut *self.spans.lock().unwrap_or_else(|p| p.into_inner()));
        if spans.is_empty() {
            return Ok(());
        }
        let body = self.body(&spans);
        let (mut s, _) = self.connector.get_http_session(&self.endpoint).await?;
        let mut req = RequestHeader::build("POST", self.path.as_bytes(), None)?;
        req.insert_header("Host", self.host.as_str())?;
        req.insert_header("Content-Type", "application/json")?;
        req.insert_header("Content-Length", body.len().to_string())?;
        s.write_request_header_eos(Box::new(req), false).await?;
        s.write_body(Bytes::from(body)).await?;
        s.finish_body(None).await?;
        s.read_response().await?;
        while s.read_body_bytes().await?.is_some() {}
        let status = s.resp_header().map_or(0, |r| r.status.as_u16());
        self.connector.release(s, &self.endpoint);
        if !(200..300).contains(&status) {
            return Error::e_explain(
                ErrorType::HTTPStatus(status),
                "the OTLP collector refused the spans",
            );
        }
        Ok(())
    }
}

impl Tracer {
    /// Start the task that sends the batches (every second, and once more
    /// when `shutdown` turns true) on the current runtime, unless one runs
    /// already (this tracer's background service, or an earlier call).
    /// The proxy calls it for each traced request: after the first, it
    /// costs one atomic load.
    pub fn ensure_flushing(self: &Arc<Self>, shutdown: &ShutdownWatch) {
        if self.flushing.load(Ordering::Relaxed) || self.flushing.swap(true, Ordering::AcqRel) {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                let (tracer, shutdown) = (self.clone(), shutdown.clone());
                rt.spawn(async move {
                    // However the task ends (its last flush at shutdown,
                    // or its runtime going away), the next traced request
                    // starts another: spans of requests that finish during
                    // a graceful shutdown are still sent.
                    struct Done<'a>(&'a AtomicBool);
                    impl Drop for Done<'_> {
                        fn drop(&mut self) {
                            self.0.store(false, Ordering::Release);
                        }
                    }
                    let _done = Done(&tracer.flushing);
                    tracer.flush_until(shutdown).await
                });
            }
            Err(_) => self.flushing.store(false, Ordering::Release),
        }
    }

    /// Send a batch every second until `shutdown`, then the last one.
    async fn flush_until(&self, mut shutdown: ShutdownWatch) {
        loop {
            let stop = tokio::select! {
                _ = tokio::time::sleep(FLUSH_EVERY) => false,
                // Shutdown, or no server left to tell us of one.
                _ = shutdown.wait_for(|s| *s) => true,
            };
            if stop {
                let _ = self.flush().await;
                return;
            }
            if let Err(e) = self.flush().await {
                tracing::warn!("exporting spans: {e}");
            }
        }
    }
}

#[async_trait]
impl BackgroundService for Tracer {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.flushing.store(true, Ordering::Release);
        self.flush_until(shutdown).await
    }
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Tracer({}{}, service {})",
            self.host, self.path, self.service
        )
    }
}

/// The spans of one proxied request.
#[derive(Clone)]
pub(crate) struct RequestTrace {
    tracer: Arc<Tracer>,
    pub(crate) root: Span,
    done: Vec<Span>,
    /// Connect, upstream request or upstream response, while running.
    open: Vec<Span>,
}

impl RequestTrace {
    /// The root span, a child of the client's `traceparent` if it sent a
    /// valid one.
    pub(crate) fn start(tracer: &Arc<Tracer>, req: &RequestHeader) -> RequestTrace {
        // (The accessors do not build the map of a header still as parsed.)
        let traceparent = http::HeaderName::from_static("traceparent");
        let parent = req
            .header_values(&traceparent)
            .first_str()
            .and_then(parse_traceparent);
        let (trace_id, parent_id) = match parent {
            Some((t, s, _)) => (t, Some(s)),
            None => {
                let mut t = [0u8; 16];
                t[..8].copy_from_slice(&random().to_le_bytes());
                t[8..].copy_from_slice(&random().to_le_bytes());
                (t, None)
            }
        };
        let mut root = Span::new(trace_id, parent_id, "proxy request", SpanKind::Server);
        root.set_str("http.request.method", req.method().as_str());
        root.set_str("url.path", req.uri().path());
        RequestTrace {
            tracer: tracer.clone(),
            root,
            done: Vec::new(),
            open: Vec::new(),
        }
    }

    /// Start a child span of the root; returns its `traceparent`.
    pub(crate) fn begin(&mut self, name: &'static str, kind: SpanKind) -> String {
        let span = Span::new(self.root.trace_id, Some(self.root.span_id), name, kind);
        let tp = span.traceparent();
        self.open.push(span);
        tp
    }

    /// End the running child span `name`, if any.
    pub(crate) fn end(
        &mut self,
        name: &'static str,
        error: bool,
        attr: Option<(&'static str, i64)>,
    ) {
        if let Some(i) = self.open.iter().position(|s| s.name == name) {
            let mut span = self.open.swap_remove(i);
            span.end = now_ns();
            span.error = error;
            if let Some((k, v)) = attr {
                span.set_int(k, v);
            }
            self.done.push(span);
        }
    }

    /// End the root (and whatever is still running) and hand every span to
    /// the exporter.
    pub(crate) fn finish(mut self, status: u16, error: bool) {
        let now = now_ns();
        for mut span in std::mem::take(&mut self.open) {
            span.end = now;
            span.error = error;
            self.done.push(span);
        }
        self.root
            .set_int("http.response.status_code", i64::from(status));
        self.root.end = now;
        self.root.error = error;
        let mut spans = std::mem::take(&mut self.done);
        spans.push(self.root);
        self.tracer.record(spans);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents() {
        let (t, s, f) =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(hex(&t), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&s), "00f067aa0ba902b7");
        assert_eq!(f, 1);
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "garbage",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
        let span = Span::new(t, Some(s), "x", SpanKind::Client);
        let (t2, s2, _) = parse_traceparent(&span.traceparent()).unwrap();
        assert_eq!((t2, s2), (t, span.span_id));
    }
}
