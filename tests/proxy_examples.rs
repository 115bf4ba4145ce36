//! The proxy examples, run as users run them, with real clients: curl, a
//! WebSocket client (tokio-tungstenite) and a gRPC client and server
//! (grpcio, from Debian's python3-grpcio).

use std::time::Duration;

mod common;
use common::*;

/// Start example `name` on a free port; returns it with its address.
fn start(name: &str, extra: &[&str]) -> (Proc, String) {
    let dir = temp_dir(&format!("ex-{name}"));
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["--listen", listen.as_str()];
    args.extend_from_slice(extra);
    let p = Proc::start_example(name, &args, &dir.join("log"));
    wait_listening(port);
    (p, listen)
}

/// curl's status line, headers and body, as one string.
fn curl(args: &[&str]) -> String {
    let mut all = vec!["-i"];
    all.extend_from_slice(args);
    curl_text(&all)
}

/// Retry until the demo upstreams (started beside the proxy) answer.
fn curl_ok(args: &[&str]) -> String {
    let mut last = String::new();
    poll_until(Duration::from_secs(30), "the demo upstreams", || {
        last = curl(args);
        !last.starts_with("HTTP/1.1 502")
    });
    last
}

#[test]
fn modify_response_rewrites_json() {
    let (_p, addr) = start("modify_response", &[]);
    let out = curl_ok(&[&format!("http://{addr}/")]);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    // The body changed size: the proxy gave it its new length.
    assert!(
        out.to_ascii_lowercase().contains("content-length: 48\r\n"),
        "{out}"
    );
    assert!(
        out.ends_with(r#"{"proxied_by":"pingora","name":"demo","ok":true}"#),
        "{out}"
    );
}

#[test]
fn ctx_counts_and_routes_beta_users() {
    let (_p, addr) = start("ctx", &[]);
    let url = format!("http://{addr}/");
    let first = curl_ok(&[&url]);
    assert!(first.ends_with("stable upstream\n"), "{first}");
    let beta = curl(&["-H", "beta-flag: 1", &url]);
    assert!(beta.ends_with("beta upstream\n"), "{beta}");
    let n = |s: &str| -> usize {
        s.lines()
            .find_map(|l| l.strip_prefix("x-request-number: "))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!(n(&beta), n(&first) + 1);
}

#[test]
fn gateway_routes_by_host_and_path() {
    let (_p, addr) = start("gateway", &[]);
    let health = curl(&[&format!("http://{addr}/health")]);
    assert!(
        health.starts_with("HTTP/1.1 200") && health.ends_with("ok\n"),
        "{health}"
    );
    let api = curl_ok(&[
        "-H",
        "Host: api.example",
        &format!("http://{addr}/v1/users"),
    ]);
    assert!(api.ends_with("api upstream: /v1/users\n"), "{api}");
    let assets = curl(&[&format!("http://{addr}/static/logo.png")]);
    assert!(
        assets.ends_with("static upstream: /static/logo.png\n"),
        "{assets}"
    );
    let other = curl(&[&format!("http://{addr}/other")]);
    assert!(other.starts_with("HTTP/1.1 404"), "{other}");
}

#[test]
fn websocket_example_echoes_through_the_proxy() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (_p, addr) = start("websocket", &[]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut attempt = 0;
        let mut ws = loop {
            let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
            match tokio_tungstenite::client_async(format!("ws://{addr}/"), tcp).await {
                Ok((ws, _)) => break ws,
                Err(e) if attempt < 100 => {
                    // The demo upstream may still be starting.
                    attempt += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("upgrade through the proxy: {e}"),
            }
        };
        for i in 0..100 {
            ws.send(Message::Text(format!("hello {i}"))).await.unwrap();
            assert_eq!(
                ws.next().await.unwrap().unwrap(),
                Message::Text(format!("hello {i}"))
            );
        }
        ws.close(None).await.unwrap();
    });
}

#[test]
fn grpc_example_proxies_all_call_types() {
    let (server, upstream) = grpc_peer_server();
    let (_p, addr) = start("grpc", &["--upstream", &upstream]);
    grpc_peer_client("client", &addr);
    drop(server);
    // With the upstream gone, calls fail as UNAVAILABLE.
    grpc_peer_client("unavailable", &addr);
    // And plain HTTP is refused.
    let plain = curl(&["--http2-prior-knowledge", &format!("http://{addr}/")]);
    assert!(plain.starts_with("HTTP/2 415"), "{plain}");
}
