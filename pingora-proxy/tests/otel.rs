//! OpenTelemetry (feature `otel`): spans exported over OTLP/HTTP to a
//! minimal collector in this test, with the right parent/child ids, and
//! the `traceparent` the upstream sees.
#![cfg(feature = "otel")]

use std::sync::Arc;

use pingora_core::apps::http_app::HttpServer;
use pingora_proxy::otel::Tracer;
use pingora_proxy::{HttpProxy, ProxyOptions};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;
use common::*;

/// A minimal OTLP/HTTP collector: each POSTed body goes to the channel.
async fn collector() -> (u16, tokio::sync::mpsc::UnboundedReceiver<(String, String)>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
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
                    let body = String::from_utf8_lossy(&buf[end..end + len]).to_string();
                    buf.drain(..end + len);
                    let _ = tx.send((head, body));
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                        .await;
                }
            });
        }
    });
    (port, rx)
}

fn parse_spans(body: &str) -> Vec<Value> {
    let v: Value = serde_json::from_str(body).expect("OTLP JSON");
    let rs = &v["resourceSpans"][0];
    assert_eq!(rs["resource"]["attributes"][0]["key"], "service.name");
    assert_eq!(
        rs["resource"]["attributes"][0]["value"]["stringValue"],
        "test-proxy"
    );
    rs["scopeSpans"][0]["spans"].as_array().unwrap().clone()
}

fn find<'a>(spans: &'a [Value], name: &str) -> &'a Value {
    spans
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no {name} span in {spans:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_the_collector_with_parents_and_traceparent() {
    let (cport, mut bodies) = collector().await;
    let tracer = Arc::new(
        Tracer::new(&format!("http://127.0.0.1:{cport}/v1/traces"), "test-proxy").unwrap(),
    );
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
    let port = serve(app, Arc::default()).await;

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
    let (head, body) = bodies.recv().await.unwrap();
    assert!(head.starts_with("POST /v1/traces HTTP/1.1"), "{head}");
    assert!(head
        .to_ascii_lowercase()
        .contains("content-type: application/json"));
    let spans = parse_spans(&body);
    assert_eq!(spans.len(), 4, "{spans:#?}");
    let root = find(&spans, "proxy request");
    assert_eq!(root["kind"], 2);
    assert_eq!(root["traceId"], trace);
    assert_eq!(
        root["parentSpanId"], parent,
        "the client's span is the root's parent"
    );
    let root_id = root["spanId"].as_str().unwrap();
    for name in ["upstream connect", "upstream request", "upstream response"] {
        let s = find(&spans, name);
        assert_eq!(s["traceId"], trace, "{name}");
        assert_eq!(
            s["parentSpanId"], root_id,
            "{name} is a child of the request"
        );
        let (a, b): (u128, u128) = (
            s["startTimeUnixNano"].as_str().unwrap().parse().unwrap(),
            s["endTimeUnixNano"].as_str().unwrap().parse().unwrap(),
        );
        assert!(a > 0 && b >= a, "{name}: {a}..{b}");
    }
    let up_req = find(&spans, "upstream request");
    assert_eq!(up_req["kind"], 3);
    // The upstream saw a traceparent naming the upstream-request span.
    let seen = r
        .header("x-seen-traceparent")
        .expect("the upstream got a traceparent");
    assert_eq!(
        seen,
        format!("00-{trace}-{}-01", up_req["spanId"].as_str().unwrap())
    );
    let status = root["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["key"] == "http.response.status_code")
        .unwrap();
    assert_eq!(status["value"]["intValue"], "200");

    // Without a traceparent: a new trace, and the root has no parent.
    let r = curl(&[&format!("http://127.0.0.1:{port}/echo")]).await;
    assert_eq!(r.status, 200);
    tracer.flush().await.unwrap();
    let (_, body) = bodies.recv().await.unwrap();
    let spans = parse_spans(&body);
    let root = find(&spans, "proxy request");
    assert!(root.get("parentSpanId").is_none());
    assert_ne!(root["traceId"], trace);
    assert_eq!(root["traceId"].as_str().unwrap().len(), 32);
}

/// The conf's `otel_endpoint` / `otel_service_name` turn tracing on for a
/// proxy built from the conf (as `http_proxy_service` builds it), with no
/// tracer set up by hand: the tracer sends its batches on its own, and a
/// last one as soon as the server begins shutting down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conf_keys_turn_tracing_on() {
    use pingora_core::apps::ServerApp;
    use pingora_core::protocols::{L4Stream, Stream};
    use pingora_core::server::ServerConf;
    use std::time::{Duration, Instant};

    let (cport, mut bodies) = collector().await;
    let conf = ServerConf::from_yaml(&format!(
        "version: 1\notel_endpoint: http://127.0.0.1:{cport}/v1/traces\notel_service_name: test-proxy\n"
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
    let (head, body) = tokio::time::timeout(Duration::from_secs(10), bodies.recv())
        .await
        .expect("spans sent without a flush by hand")
        .unwrap();
    assert!(head.starts_with("POST /v1/traces HTTP/1.1"), "{head}");
    let spans = parse_spans(&body);
    assert_eq!(spans.len(), 4, "{spans:#?}");
    let root = find(&spans, "proxy request");
    assert_eq!(root["traceId"], trace);
    assert_eq!(root["parentSpanId"], "b7ad6b7169203331");

    // Right after a batch went (the next is a second away): one more
    // request, then shutdown: its spans go at once.
    let r = curl(&[&format!("http://127.0.0.1:{port}/echo")]).await;
    assert_eq!(r.status, 200);
    stop.send_replace(true);
    let asked = Instant::now();
    let (_, body) = tokio::time::timeout(Duration::from_secs(10), bodies.recv())
        .await
        .expect("the last batch")
        .unwrap();
    assert!(
        asked.elapsed() < Duration::from_millis(600),
        "sent at shutdown, not a second later: {:?}",
        asked.elapsed()
    );
    let spans = parse_spans(&body);
    assert_eq!(spans.len(), 4, "{spans:#?}");
    assert_ne!(find(&spans, "proxy request")["traceId"], trace);
}
