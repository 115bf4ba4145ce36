//! OpenTelemetry (feature `otel`): spans exported to a minimal OTLP
//! collector in this test, over each OTLP protocol (HTTP with protobuf,
//! HTTP with JSON, gRPC over h2c), with the right parent/child ids, and
//! the `traceparent` the upstream sees. The collector decodes with
//! `opentelemetry-proto`, the protocol's own message types.
#![cfg(feature = "otel")]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use pingora_core::apps::http_app::HttpServer;
use pingora_proxy::otel::{OtlpProtocol, Tracer};
use pingora_proxy::{HttpProxy, ProxyOptions};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

mod common;
use common::*;

/// One export as the collector got it: the path (HTTP) or gRPC method,
/// the content type, and the decoded request.
type Export = (String, String, ExportTraceServiceRequest);

/// A minimal OTLP/HTTP collector: each POSTed body, decoded as JSON or
/// protobuf by its content type, goes to the channel.
async fn http_collector() -> (u16, UnboundedReceiver<Export>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let mut chunk = [0u8; 8192];
                    // One request: header, then Content-Length bytes.
                    let end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let n = s.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    let len = content_length(&head).unwrap_or(0);
                    while buf.len() < end + len {
                        let n = s.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let body = buf[end..end + len].to_vec();
                    buf.drain(..end + len);
                    let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                    let ctype = head
                        .lines()
                        .find_map(|l| {
                            let l = l.to_ascii_lowercase();
                            l.strip_prefix("content-type:")
                                .map(|v| v.trim().to_string())
                        })
                        .unwrap_or_default();
                    let req = if ctype == "application/json" {
                        serde_json::from_slice(&body).expect("OTLP JSON")
                    } else {
                        ExportTraceServiceRequest::decode(&body[..]).expect("OTLP protobuf")
                    };
                    let _ = tx.send((path, ctype, req));
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                        .await;
                }
            });
        }
    });
    (port, rx)
}

/// A minimal OTLP/gRPC collector over h2c: each call's message, decoded,
/// goes to the channel; the answer is an empty message and status 0.
async fn grpc_collector() -> (u16, UnboundedReceiver<Export>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = unbounded_channel();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let tx: UnboundedSender<Export> = tx.clone();
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(s).await else {
                    return;
                };
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let path = req.uri().path().to_string();
                        let ctype = req
                            .headers()
                            .get("content-type")
                            .map(|v| v.to_str().unwrap().to_string())
                            .unwrap_or_default();
                        let mut body = req.into_body();
                        let mut got = Vec::new();
                        while let Some(d) = body.data().await {
                            let d = d.unwrap();
                            let _ = body.flow_control().release_capacity(d.len());
                            got.extend_from_slice(&d);
                        }
                        // One length-prefixed message: flag, 4-byte length.
                        assert_eq!(got[0], 0, "uncompressed");
                        let len = u32::from_be_bytes([got[1], got[2], got[3], got[4]]) as usize;
                        let msg = ExportTraceServiceRequest::decode(&got[5..5 + len]).unwrap();
                        let _ = tx.send((path, ctype, msg));
                        let resp = http::Response::builder()
                            .status(200)
                            .header("content-type", "application/grpc")
                            .body(())
                            .unwrap();
                        let mut send = respond.send_response(resp, false).unwrap();
                        send.send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), false)
                            .unwrap();
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("grpc-status", "0".parse().unwrap());
                        send.send_trailers(trailers).unwrap();
                    });
                }
            });
        }
    });
    (port, rx)
}

/// Spans from the exports on `rx` until `n` have come (a batch may be
/// split across exports); each export is checked for the resource's
/// `service.name`. Also the first export's path and content type.
async fn spans(rx: &mut UnboundedReceiver<Export>, n: usize) -> (String, String, Vec<Span>) {
    let mut out = Vec::new();
    let mut first = None;
    while out.len() < n {
        let (path, ctype, req) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} spans: {out:#?}", out.len()))
            .unwrap();
        first.get_or_insert((path, ctype));
        for rs in req.resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                .and_then(|a| a.value.as_ref()?.value.clone());
            assert_eq!(service, Some(AnyValue::StringValue("test-proxy".into())));
            for ss in rs.scope_spans {
                out.extend(ss.spans);
            }
        }
    }
    let (path, ctype) = first.unwrap();
    (path, ctype, out)
}

fn find<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    spans
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no {name} span in {spans:#?}"))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A proxy traced by `tracer`, in front of the test upstream.
async fn traced_proxy(tracer: &Arc<Tracer>) -> u16 {
    let (up, _) = upstream().await;
    let rec = Recorder {
        peers: vec![peer(up, false)],
        log: Arc::default(),
    };
    let options = ProxyOptions {
        otel: Some(tracer.clone()),
        ..Default::default()
    };
    let mut app = HttpServer::new(HttpProxy::with_options(rec, None, options));
    app.set_h2c(true);
    serve(app, Arc::default()).await
}

/// A request with the client's `traceparent`, and one without: the spans
/// the collector gets, whatever the protocol.
async fn check_spans(tracer: Arc<Tracer>, rx: &mut UnboundedReceiver<Export>) -> (String, String) {
    let port = traced_proxy(&tracer).await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let r = curl(&[
        "-H",
        &format!("traceparent: 00-{trace}-{parent}-01"),
        "--data-binary",
        "traced",
        &format!("http://127.0.0.1:{port}/echo"),
    ])
    .await;
    assert_eq!((r.status, r.body.as_str()), (200, "traced"));
    tracer.flush().await.unwrap();
    let (path, ctype, spans) = spans(rx, 4).await;
    assert_eq!(spans.len(), 4, "{spans:#?}");
    let root = find(&spans, "proxy request");
    assert_eq!(root.kind, 2, "server");
    assert_eq!(hex(&root.trace_id), trace);
    assert_eq!(
        hex(&root.parent_span_id),
        parent,
        "the client's span is the root's parent"
    );
    for name in ["upstream connect", "upstream request", "upstream response"] {
        let s = find(&spans, name);
        assert_eq!(hex(&s.trace_id), trace, "{name}");
        assert_eq!(
            s.parent_span_id, root.span_id,
            "{name} is a child of the request"
        );
        let (a, b) = (s.start_time_unix_nano, s.end_time_unix_nano);
        assert!(a > 0 && b >= a, "{name}: {a}..{b}");
    }
    let up_req = find(&spans, "upstream request");
    assert_eq!(up_req.kind, 3, "client");
    // The upstream saw a traceparent naming the upstream-request span.
    let seen = r
        .header("x-seen-traceparent")
        .expect("the upstream got a traceparent");
    assert_eq!(seen, format!("00-{trace}-{}-01", hex(&up_req.span_id)));
    let status = root
        .attributes
        .iter()
        .find(|a| a.key == "http.response.status_code")
        .and_then(|a| a.value.as_ref()?.value.clone());
    assert_eq!(status, Some(AnyValue::IntValue(200)));

    // Without a traceparent: a new trace, and the root has no parent.
    let r = curl(&[&format!("http://127.0.0.1:{port}/echo")]).await;
    assert_eq!(r.status, 200);
    tracer.flush().await.unwrap();
    let (_, _, spans) = self::spans(rx, 4).await;
    let root = find(&spans, "proxy request");
    assert!(root.parent_span_id.is_empty());
    assert_ne!(hex(&root.trace_id), trace);
    assert_eq!(root.trace_id.len(), 16);
    (path, ctype)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_over_otlp_http_protobuf() {
    let (cport, mut rx) = http_collector().await;
    // No path: the standard one.
    let tracer = Tracer::new(&format!("http://127.0.0.1:{cport}"), "test-proxy").unwrap();
    let (path, ctype) = check_spans(Arc::new(tracer), &mut rx).await;
    assert_eq!(path, "/v1/traces");
    assert_eq!(ctype, "application/x-protobuf");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_over_otlp_http_json() {
    let (cport, mut rx) = http_collector().await;
    let endpoint = format!("http://127.0.0.1:{cport}/custom/traces");
    let tracer = Tracer::with_protocol(&endpoint, "test-proxy", OtlpProtocol::HttpJson).unwrap();
    let (path, ctype) = check_spans(Arc::new(tracer), &mut rx).await;
    assert_eq!(path, "/custom/traces");
    assert_eq!(ctype, "application/json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_over_otlp_grpc() {
    let (cport, mut rx) = grpc_collector().await;
    let endpoint = format!("http://127.0.0.1:{cport}");
    let tracer = Tracer::with_protocol(&endpoint, "test-proxy", OtlpProtocol::Grpc).unwrap();
    let (path, ctype) = check_spans(Arc::new(tracer), &mut rx).await;
    assert_eq!(
        path,
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
    );
    assert!(ctype.starts_with("application/grpc"), "{ctype}");
}

#[test]
fn bad_endpoints_are_refused_by_name() {
    for (bad, protocol) in [
        ("127.0.0.1:4318", OtlpProtocol::HttpProtobuf),
        ("http://", OtlpProtocol::HttpJson),
        ("https://collector:4317", OtlpProtocol::Grpc),
    ] {
        let e = Tracer::with_protocol(bad, "x", protocol).unwrap_err();
        assert!(e.to_string().contains(bad), "{e}");
    }
}

/// A tracer made and dropped inside async code (a refused endpoint, or
/// one that goes out of use) does not panic: its runtime is shut down in
/// the background.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tracer_made_and_dropped_in_async_code() {
    assert!(Tracer::with_protocol("https://c:4317", "x", OtlpProtocol::Grpc).is_err());
    let t = Tracer::new("http://127.0.0.1:9/v1/traces", "x").unwrap();
    drop(t);
    let t = Tracer::with_protocol("http://127.0.0.1:9", "x", OtlpProtocol::Grpc).unwrap();
    drop(t);
}

/// The conf's `otel_endpoint` / `otel_service_name` / `otel_protocol`
/// turn tracing on for a proxy built from the conf (as
/// `http_proxy_service` builds it), with no tracer set up by hand: batches
/// go on their own, and a last one as soon as the server begins shutting
/// down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conf_keys_turn_tracing_on() {
    use pingora_core::apps::ServerApp;
    use pingora_core::protocols::{L4Stream, Stream};
    use pingora_core::server::ServerConf;
    use std::time::Instant;

    let (cport, mut rx) = http_collector().await;
    let conf = ServerConf::from_yaml(&format!(
        "version: 1\notel_endpoint: http://127.0.0.1:{cport}/v1/traces\notel_service_name: test-proxy\notel_protocol: http/json\n"
    ))
    .unwrap();
    let (up, _) = upstream().await;
    let rec = Recorder {
        peers: vec![peer(up, false)],
        log: Arc::default(),
    };
    let proxy = HttpProxy::new(rec, Some(&conf));
    assert!(proxy.options().otel.is_some());
    // Served with a shutdown watch of our own.
    let app = Arc::new(HttpServer::new(proxy));
    let (stop, watch) = tokio::sync::watch::channel(false);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let (app, watch) = (app.clone(), watch.clone());
            tokio::spawn(async move {
                let s: Stream = Box::new(L4Stream::from_tcp(s));
                app.process_new(s, &watch).await;
            });
        }
    });

    let trace = "0af7651916cd43dd8448eb211c80319c";
    let r = curl(&[
        "-H",
        &format!("traceparent: 00-{trace}-b7ad6b7169203331-01"),
        &format!("http://127.0.0.1:{port}/echo"),
    ])
    .await;
    assert_eq!(r.status, 200);
    // Sent without a flush by hand.
    let (path, ctype, spans) = spans(&mut rx, 4).await;
    assert_eq!(
        (path.as_str(), ctype.as_str()),
        ("/v1/traces", "application/json")
    );
    let root = find(&spans, "proxy request");
    assert_eq!(hex(&root.trace_id), trace);
    assert_eq!(hex(&root.parent_span_id), "b7ad6b7169203331");

    // Right after a batch went (the next is a second away): one more
    // request, then shutdown: its spans go at once.
    let r = curl(&[&format!("http://127.0.0.1:{port}/echo")]).await;
    assert_eq!(r.status, 200);
    stop.send_replace(true);
    let asked = Instant::now();
    let (_, _, spans) = self::spans(&mut rx, 4).await;
    // Generous for a busy machine, still well under the batch interval.
    assert!(
        asked.elapsed() < Duration::from_millis(900),
        "sent at shutdown, not a second later: {:?}",
        asked.elapsed()
    );
    assert_ne!(hex(&find(&spans, "proxy request").trace_id), trace);
}
