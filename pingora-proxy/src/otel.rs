//! OpenTelemetry tracing (feature `otel`): a span per proxied request with
//! child spans for the upstream connect, the upstream request and the
//! upstream response; the W3C `traceparent` read from the client and
//! passed to the upstream; spans exported over OTLP to a collector.
//!
//! Built on the field's crates: `opentelemetry` for spans and the W3C
//! trace-context propagator, `opentelemetry_sdk` for the batch processor
//! (a bounded queue, batches sent from a thread of its own), and
//! `opentelemetry-otlp` for the wire formats: OTLP/HTTP with protobuf
//! (the default) or JSON, and OTLP/gRPC. OTLP/HTTP goes through this
//! framework's own HTTP client (TLS by the OpenSSL or BoringSSL the proxy
//! is built with), not a second HTTP stack; gRPC through tonic (h2c).
//!
//! The simplest way on is the conf: `otel_endpoint` (with
//! `otel_service_name` and `otel_protocol`) make every HTTP proxy built
//! with that conf ([`http_proxy_service`](crate::http_proxy_service),
//! `HttpProxy::new`) trace its requests; a last batch goes when the server
//! begins shutting down. Or build one by hand:
//!
//! ```no_run
//! use std::sync::Arc;
//! use pingora_proxy::otel::{OtlpProtocol, Tracer};
//! use pingora_proxy::ProxyOptions;
//!
//! let tracer = Tracer::with_protocol("http://127.0.0.1:4317", "my-proxy", OtlpProtocol::Grpc).unwrap();
//! let options = ProxyOptions { otel: Some(Arc::new(tracer)), ..Default::default() };
//! // HttpProxy::with_options(app, conf, options) ...
//! ```

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider,
};
use opentelemetry_sdk::Resource;
use pingora_core::connectors::http::Connector;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, OkOrErr, OrErr, Result};
use pingora_http::RequestHeader;

pub use opentelemetry::trace::SpanKind;

/// Most spans queued before new ones are dropped (a collector that is
/// down must not grow the proxy's memory).
const MAX_QUEUED: usize = 8192;
/// A batch is sent at least this often.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Time allowed for one export.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// Most bytes of a collector's answer read.
const MAX_ANSWER: usize = 64 * 1024;

/// How spans travel to the collector, as OTLP's
/// `OTEL_EXPORTER_OTLP_PROTOCOL` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OtlpProtocol {
    /// OTLP/HTTP, protobuf body (`http/protobuf`; the default).
    #[default]
    HttpProtobuf,
    /// OTLP/HTTP, JSON body (`http/json`).
    HttpJson,
    /// OTLP/gRPC over HTTP/2 without TLS (`grpc`).
    Grpc,
}

impl FromStr for OtlpProtocol {
    type Err = Box<Error>;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "http/protobuf" => Ok(OtlpProtocol::HttpProtobuf),
            "http/json" => Ok(OtlpProtocol::HttpJson),
            "grpc" => Ok(OtlpProtocol::Grpc),
            _ => Error::e_explain(
                ErrorType::InvalidInput,
                format!("OTLP protocol {s:?}: one of http/protobuf, http/json, grpc"),
            ),
        }
    }
}

/// Whether `v` has a `traceparent`'s exact shape (W3C trace context §3.2):
/// `VV-TRACEID-SPANID-FF` in lowercase hex of 2, 32, 16 and 2 digits,
/// version `ff` never, nothing after the flags in version 00. The
/// propagator itself takes shorter ids; a malformed header must be
/// ignored, not read as some other trace.
fn well_formed(v: &str) -> bool {
    let parts: Vec<&str> = v.trim().split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    parts.len() >= 4
        && hex(parts[0], 2)
        && parts[0] != "ff"
        && (parts[0] != "00" || parts.len() == 4)
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
}

/// A W3C `traceparent` (version 00): trace id, parent span id, flags.
pub fn parse_traceparent(v: &str) -> Option<([u8; 16], [u8; 8], u8)> {
    if !well_formed(v) {
        return None;
    }
    let cx = TraceContextPropagator::new().extract(&One("traceparent", v));
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| {
        (
            sc.trace_id().to_bytes(),
            sc.span_id().to_bytes(),
            sc.trace_flags().to_u8(),
        )
    })
}

/// One header, as the propagator reads them.
struct One<'a>(&'static str, &'a str);

impl Extractor for One<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == self.0).then_some(self.1)
    }
    fn keys(&self) -> Vec<&str> {
        vec![self.0]
    }
}

/// A request header's fields, as the propagator reads them (without
/// building the map of a header still as parsed).
struct FromRequest<'a>(&'a RequestHeader);

static TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
static TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");

impl Extractor for FromRequest<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let name = match key {
            "traceparent" => &TRACEPARENT,
            "tracestate" => &TRACESTATE,
            _ => return None,
        };
        let v = self.0.header_values(name).first_str()?;
        (*name != TRACEPARENT || well_formed(v)).then_some(v)
    }
    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

/// The `traceparent` the propagator writes.
#[derive(Default)]
struct Traceparent(Option<String>);

impl Injector for Traceparent {
    fn set(&mut self, key: &str, value: String) {
        if key == "traceparent" {
            self.0 = Some(value);
        }
    }
}

/// Exports the spans of traced requests to an OTLP collector.
pub struct Tracer {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
    endpoint: String,
    protocol: OtlpProtocol,
    /// Whether a task waits to send the last batch at shutdown.
    flushing: AtomicBool,
    /// The exporter's I/O runs here: the batch processor exports from a
    /// thread of its own, outside the server's runtimes. Shut down in the
    /// background when the tracer goes (dropping a runtime in an async
    /// context would panic).
    io: Option<tokio::runtime::Runtime>,
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if let Some(io) = self.io.take() {
            io.shutdown_background();
        }
    }
}

impl Tracer {
    /// Export over OTLP/HTTP (protobuf) to `endpoint` (e.g.
    /// `http://127.0.0.1:4318/v1/traces`; `/v1/traces` when no path is
    /// given), with `service` as the resource's `service.name`.
    ///
    /// # Errors
    ///
    /// As [`with_protocol`](Self::with_protocol): `InvalidInput` for an
    /// endpoint that is not an `http://` or `https://` URL with a host.
    pub fn new(endpoint: &str, service: &str) -> Result<Tracer> {
        Self::with_protocol(endpoint, service, OtlpProtocol::HttpProtobuf)
    }

    /// Export to `endpoint` over `protocol`: for gRPC the collector's
    /// address (`http://HOST:4317`).
    ///
    /// # Errors
    ///
    /// `InvalidInput` if `endpoint` is not an `http://` or `https://` URL with
    /// a host, is `https://` for gRPC, or the exporter cannot be built from it.
    /// `InternalError` if the exporter's runtime cannot be started.
    pub fn with_protocol(endpoint: &str, service: &str, protocol: OtlpProtocol) -> Result<Tracer> {
        let bad = |why: &str| {
            Error::explain(
                ErrorType::InvalidInput,
                format!("OTLP endpoint {endpoint:?}: {why}"),
            )
        };
        let rest = endpoint
            .strip_prefix("http://")
            .or_else(|| endpoint.strip_prefix("https://"))
            .ok_or_else(|| bad("not an http:// or https:// URL"))?;
        if rest.is_empty() || rest.starts_with('/') {
            return Err(bad("no host"));
        }
        if protocol == OtlpProtocol::Grpc && endpoint.starts_with("https://") {
            return Err(bad("gRPC is supported without TLS only (http://)"));
        }
        let io = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("otlp-export")
            .enable_all()
            .build()
            .or_err(ErrorType::InternalError, "a runtime for the OTLP exporter")?;
        let exporter = match protocol {
            OtlpProtocol::Grpc => {
                // tonic's channel lives on the runtime it was made in.
                let _in = io.enter();
                opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(endpoint)
                    .with_timeout(EXPORT_TIMEOUT)
                    .build()
            }
            OtlpProtocol::HttpProtobuf | OtlpProtocol::HttpJson => {
                let url = if rest.contains('/') && !rest.ends_with('/') {
                    endpoint.to_string()
                } else {
                    format!("{}/v1/traces", endpoint.trim_end_matches('/'))
                };
                let wire = if protocol == OtlpProtocol::HttpJson {
                    opentelemetry_otlp::Protocol::HttpJson
                } else {
                    opentelemetry_otlp::Protocol::HttpBinary
                };
                let client = OtlpHttp {
                    connector: Arc::new(Connector::new(None)),
                    io: io.handle().clone(),
                };
                opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_http_client(client)
                    .with_protocol(wire)
                    .with_endpoint(url)
                    .with_timeout(EXPORT_TIMEOUT)
                    .build()
            }
        };
        let exporter = match exporter {
            Ok(e) => e,
            Err(e) => {
                io.shutdown_background();
                return Err(Error::because(
                    ErrorType::InvalidInput,
                    "building the OTLP exporter",
                    e,
                ));
            }
        };
        let batches = BatchConfigBuilder::default()
            .with_max_queue_size(MAX_QUEUED)
            .with_scheduled_delay(FLUSH_EVERY)
            .build();
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(batches)
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(
                Resource::builder_empty()
                    .with_service_name(service.to_string())
                    .build(),
            )
            .build();
        let tracer = provider.tracer_with_scope(
            opentelemetry::InstrumentationScope::builder("pingora-proxy")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        );
        Ok(Tracer {
            provider,
            tracer,
            propagator: TraceContextPropagator::new(),
            endpoint: endpoint.to_string(),
            protocol,
            flushing: AtomicBool::new(false),
            io: Some(io),
        })
    }

    /// Send what is queued now (the batch processor also sends every
    /// second on its own).
    ///
    /// # Errors
    ///
    /// `WriteError` if the spans could not be exported (the collector
    /// unreachable or refusing them, or a timeout); `InternalError` if the
    /// blocking flush task failed.
    pub async fn flush(&self) -> Result<()> {
        let provider = self.provider.clone();
        // The processor's flush blocks until its thread is done.
        let flushed = match tokio::runtime::Handle::try_current() {
            Ok(_) => tokio::task::spawn_blocking(move || provider.force_flush())
                .await
                .or_err(ErrorType::InternalError, "flushing spans")?,
            Err(_) => provider.force_flush(),
        };
        flushed.map_err(|e| Error::because(ErrorType::WriteError, "exporting spans", e))
    }

    /// Start the task that sends the last batch when `shutdown` turns true
    /// (batches before then go every second on their own), on the current
    /// runtime, unless one runs already. The proxy calls it for each traced
    /// request: after the first, it costs one atomic load.
    pub fn ensure_flushing(self: &Arc<Self>, shutdown: &ShutdownWatch) {
        if self.flushing.load(Ordering::Relaxed) || self.flushing.swap(true, Ordering::AcqRel) {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                let (tracer, shutdown) = (self.clone(), shutdown.clone());
                rt.spawn(async move {
                    // However the task ends, the next traced request
                    // starts another: spans of requests that finish during
                    // a graceful shutdown are still sent.
                    struct Done<'a>(&'a AtomicBool);
                    impl Drop for Done<'_> {
                        fn drop(&mut self) {
                            self.0.store(false, Ordering::Release);
                        }
                    }
                    let _done = Done(&tracer.flushing);
                    tracer.flush_at(shutdown).await
                });
            }
            Err(_) => self.flushing.store(false, Ordering::Release),
        }
    }

    /// Wait for `shutdown`, then send what is queued.
    async fn flush_at(&self, mut shutdown: ShutdownWatch) {
        // Shutdown, or no server left to tell us of one.
        let _ = shutdown.wait_for(|s| *s).await;
        if let Err(e) = self.flush().await {
            tracing::warn!("exporting spans: {e}");
        }
    }
}

#[async_trait]
impl BackgroundService for Tracer {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.flushing.store(true, Ordering::Release);
        self.flush_at(shutdown).await
    }
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tracer({} over {:?})", self.endpoint, self.protocol)
    }
}

/// OTLP/HTTP's transport: this framework's HTTP client, on the exporter's
/// runtime.
#[derive(Debug)]
struct OtlpHttp {
    connector: Arc<Connector>,
    io: tokio::runtime::Handle,
}

#[async_trait]
impl opentelemetry_http::HttpClient for OtlpHttp {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> std::result::Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        let connector = self.connector.clone();
        // The batch processor's thread has no runtime: the exchange runs
        // on ours, and this waits for it.
        let answer = self
            .io
            .spawn(async move { post(&connector, request).await });
        Ok(answer.await??)
    }
}

/// `request` to its URL over `connector`; the answer with its body.
async fn post(
    connector: &Connector,
    request: http::Request<Bytes>,
) -> Result<http::Response<Bytes>> {
    let (parts, body) = request.into_parts();
    let uri = &parts.uri;
    let tls = uri.scheme_str() == Some("https");
    let host = uri
        .host()
        .or_err(ErrorType::InvalidInput, "an OTLP URL without a host")?;
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let mut peer = HttpPeer::try_new(&format!("{host}:{port}"), tls, host.to_string())?;
    peer.options.connection_timeout = Some(Duration::from_secs(2));
    peer.options.read_timeout = Some(EXPORT_TIMEOUT);
    peer.options.write_timeout = Some(EXPORT_TIMEOUT);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut req = RequestHeader::build(parts.method.as_str(), path.as_bytes(), None)?;
    req.insert_header("Host", uri.authority().map_or(host, |a| a.as_str()))?;
    for (name, value) in &parts.headers {
        req.append_header(name.clone(), value.clone())?;
    }
    req.insert_header("Content-Length", body.len().to_string())?;
    let (mut s, _) = connector.get_http_session(&peer).await?;
    s.write_request_header_eos(Box::new(req), body.is_empty())
        .await?;
    if !body.is_empty() {
        s.write_body(body).await?;
    }
    s.finish_body(None).await?;
    s.read_response().await?;
    let mut got = Vec::new();
    while let Some(piece) = s.read_body_bytes().await? {
        if got.len() + piece.len() > MAX_ANSWER {
            return Error::e_explain(ErrorType::InvalidHTTPHeader, "an OTLP answer too large");
        }
        got.extend_from_slice(&piece);
    }
    let status = s.resp_header().map_or(0, |r| r.status.as_u16());
    connector.release(s, &peer);
    http::Response::builder()
        .status(status)
        .body(Bytes::from(got))
        .or_err(ErrorType::InvalidHTTPHeader, "the OTLP collector's answer")
}

/// The spans of one proxied request, each held in a context (which the
/// request's state can clone).
#[derive(Clone)]
pub(crate) struct RequestTrace {
    tracer: Arc<Tracer>,
    /// The root span (the request), in the context its children start in.
    root: Context,
    /// Connect, upstream request or upstream response, while running.
    open: Vec<(&'static str, Context)>,
}

impl RequestTrace {
    /// The root span, a child of the client's `traceparent` if it sent a
    /// valid one.
    pub(crate) fn start(tracer: &Arc<Tracer>, req: &RequestHeader) -> RequestTrace {
        let parent = tracer.propagator.extract(&FromRequest(req));
        let root = tracer
            .tracer
            .span_builder("proxy request")
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("http.request.method", req.method().as_str().to_string()),
                KeyValue::new("url.path", req.uri().path().to_string()),
            ])
            .start_with_context(&tracer.tracer, &parent);
        RequestTrace {
            tracer: tracer.clone(),
            root: parent.with_span(root),
            open: Vec::new(),
        }
    }

    /// Start a child span of the root; returns its `traceparent`.
    pub(crate) fn begin(&mut self, name: &'static str, kind: SpanKind) -> String {
        let t = &self.tracer.tracer;
        let span = t
            .span_builder(name)
            .with_kind(kind)
            .start_with_context(t, &self.root);
        let cx = Context::new().with_span(span);
        let mut tp = Traceparent::default();
        self.tracer.propagator.inject_context(&cx, &mut tp);
        self.open.push((name, cx));
        tp.0.unwrap_or_default()
    }

    /// End the running child span `name`, if any.
    pub(crate) fn end(
        &mut self,
        name: &'static str,
        error: bool,
        attr: Option<(&'static str, i64)>,
    ) {
        if let Some(i) = self.open.iter().position(|(n, _)| *n == name) {
            let (_, cx) = self.open.swap_remove(i);
            let span = cx.span();
            if let Some((k, v)) = attr {
                span.set_attribute(KeyValue::new(k, v));
            }
            if error {
                span.set_status(Status::error(""));
            }
            span.end();
        }
    }

    /// End the root (and whatever is still running); the batch processor
    /// sends them.
    pub(crate) fn finish(mut self, status: u16, error: bool) {
        for (_, cx) in std::mem::take(&mut self.open) {
            if error {
                cx.span().set_status(Status::error(""));
            }
            cx.span().end();
        }
        let root = self.root.span();
        root.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        if error {
            root.set_status(Status::error(""));
        }
        root.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents() {
        let (t, s, f) =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(t[0], 0x4b);
        assert_eq!(t[15], 0x36);
        assert_eq!(s, [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
        assert_eq!(f, 1);
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "garbage",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn protocols_by_name() {
        assert_eq!("grpc".parse::<OtlpProtocol>().unwrap(), OtlpProtocol::Grpc);
        assert_eq!(
            "http/json".parse::<OtlpProtocol>().unwrap(),
            OtlpProtocol::HttpJson
        );
        assert!("thrift".parse::<OtlpProtocol>().is_err());
    }
}
