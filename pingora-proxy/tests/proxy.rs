//! The proxy pipeline with real peers on loopback: curl (HTTP/1 and h2c)
//! as the client, our HTTP/1 + h2c server as the upstream. Phase order,
//! the four protocol combinations, hop-by-hop handling, failover, retries
//! and error answers.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pingora_proxy::ProxyOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phases_run_in_order() {
    let (up, _) = upstream().await;
    let (port, log) = proxy(vec![peer(up, false)], ProxyOptions::default()).await;
    let r = curl(&[
        "--data-binary",
        "hello",
        &format!("http://127.0.0.1:{port}/echo"),
    ])
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "hello");
    assert_eq!(r.header("x-proxied"), Some("yes"));
    let log = folded(&logged(&log, 1).await);
    let expected = [
        "early_request_filter",
        "request_filter",
        "proxy_upstream_filter",
        "upstream_peer",
        "connected_to_upstream",
        "reused: false",
        "upstream_request_filter",
        "request_body_filter",
        "request body end",
        "upstream_response_filter",
        "response_filter",
        "upstream_response_body_filter",
        "response_body_filter",
        "upstream_response_body_filter",
        "response_body_filter",
        "upstream_response_trailer_filter",
        "response_trailer_filter",
        "trailer: yes",
        "logging",
    ];
    assert_eq!(log, expected, "phases: {log:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_filter_can_answer_and_body_can_be_read_ahead() {
    let (up, accepted) = upstream().await;
    let (port, log) = proxy(vec![peer(up, false)], ProxyOptions::default()).await;
    let r = curl(&[&format!("http://127.0.0.1:{port}/local")]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "local\n"));
    assert_eq!(accepted.load(Ordering::Relaxed), 0, "nothing went upstream");
    assert_eq!(logged(&log, 1).await.last().unwrap(), "logging");

    // A body read ahead for routing still goes upstream, once, filtered.
    let r = curl(&[
        "--data-binary",
        "please-rewrite",
        &format!("http://127.0.0.1:{port}/route-on-body"),
    ])
    .await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "rewritten"),
        "{:#?}",
        log.lock().unwrap()
    );
    assert!(logged(&log, 2)
        .await
        .contains(&"body ahead: please-rewrite".to_string()));
}

/// Downstream HTTP/1 or h2c × upstream HTTP/1 or h2c: the body, the Host
/// ↔ :authority mapping, hop-by-hop fields dropped both ways, the
/// forwarding headers, and the upstream connection reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_protocol_combinations() {
    for (down_h2, up_h2) in [(false, false), (false, true), (true, false), (true, true)] {
        let (up, accepted) = upstream().await;
        let (port, log) = proxy(vec![peer(up, up_h2)], ProxyOptions::default()).await;
        let url = format!("http://127.0.0.1:{port}/echo");
        let proto = if down_h2 {
            "--http2-prior-knowledge"
        } else {
            "--http1.1"
        };
        let body: String = (0..20_000)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let mut args = vec![
            proto,
            "-H",
            "Host: example.test",
            "-H",
            "X-Secret: 1",
            "-H",
            "Proxy-Authorization: Basic eDp5",
            "-H",
            "TE: trailers",
            "--data-binary",
            &body,
            &url,
        ];
        if !down_h2 {
            // Connection-specific fields are not allowed over HTTP/2 at all.
            args.splice(
                0..0,
                [
                    "-H",
                    "Connection: keep-alive, X-Secret",
                    "-H",
                    "Keep-Alive: timeout=9",
                ],
            );
        }
        let r = curl(&args).await;
        let what = format!("down_h2={down_h2} up_h2={up_h2}");
        assert_eq!(r.status, 200, "{what}");
        assert!(
            r.body == body,
            "{what}: body of {} bytes differs",
            r.body.len()
        );
        assert_eq!(
            r.trailers,
            [("x-up-trailer".to_string(), "yes".to_string())],
            "{what}"
        );
        assert_eq!(r.header("x-seen-host"), Some("example.test"), "{what}");
        // X-Secret is hop-by-hop only where Connection names it (HTTP/1).
        let hop = if down_h2 { "x-secret,te" } else { "te" };
        assert_eq!(
            r.header("x-seen-hop"),
            Some(hop),
            "{what}: hop-by-hop fields"
        );
        let version = if up_h2 { "HTTP/2.0" } else { "HTTP/1.1" };
        assert_eq!(r.header("x-seen-version"), Some(version), "{what}");
        assert_eq!(r.header("x-seen-xff"), Some("127.0.0.1"), "{what}");
        let via = if down_h2 {
            "2 test-proxy"
        } else {
            "1.1 test-proxy"
        };
        assert_eq!(r.header("x-seen-via"), Some(via), "{what}");
        assert_eq!(
            r.header("x-seen-forwarded"),
            Some("for=127.0.0.1;proto=http;host=example.test"),
            "{what}"
        );
        assert_eq!(r.header("keep-alive"), None, "{what}");
        assert_eq!(r.header("proxy-authenticate"), None, "{what}");
        assert!(
            log.lock().unwrap().contains(&"trailer: yes".to_string()),
            "{what}"
        );

        // A second request on a new client connection reuses the upstream one.
        let r = curl(&[proto, &url]).await;
        assert_eq!(r.status, 200, "{what}");
        assert_eq!(
            accepted.load(Ordering::Relaxed),
            1,
            "{what}: upstream connections"
        );
        assert!(
            log.lock().unwrap().contains(&"reused: true".to_string()),
            "{what}"
        );
    }
}

/// An HTTP/2 client may end its request stream after the response came
/// (a late empty DATA frame with END_STREAM). Once every byte its
/// Content-Length promised has gone upstream, the upstream request is
/// complete, and its connection goes back to the pool for the next request
/// instead of being dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_h2_end_stream_keeps_the_upstream_connection() {
    let (up, accepted) = upstream().await;
    let (port, _log) = proxy(vec![peer(up, false)], ProxyOptions::default()).await;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let req = http::Request::post(format!("http://127.0.0.1:{port}/count"))
        .header("content-length", "5")
        .body(())
        .unwrap();
    let (resp, mut send) = client.send_request(req, false).unwrap();
    send.send_data(bytes::Bytes::from_static(b"hello"), false)
        .unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = Vec::new();
    while let Some(d) = body.data().await {
        let d = d.unwrap();
        let _ = body.flow_control().release_capacity(d.len());
        got.extend_from_slice(&d);
    }
    assert_eq!(got, b"5");
    // The request stream is still open; the next request, from another
    // client, gets the same upstream connection.
    let r = curl(&["--http1.1", &format!("http://127.0.0.1:{port}/count")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "0");
    assert_eq!(accepted.load(Ordering::Relaxed), 1, "upstream connections");
    // The proxy has closed the stream with its response (RST_STREAM
    // NO_ERROR, RFC 9113 §8.1), so the late end may be refused.
    let _ = send.send_data(bytes::Bytes::new(), true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_204_304_and_100_continue() {
    let (up, _) = upstream().await;
    // HEAD, 204 and 304 in all four protocol combinations.
    for up_h2 in [false, true] {
        let (port, _) = proxy(vec![peer(up, up_h2)], ProxyOptions::default()).await;
        let base = format!("http://127.0.0.1:{port}");
        for down_h2 in [&[][..], &["--http2-prior-knowledge"][..]] {
            let with = |args: &[&str]| -> Vec<String> {
                down_h2.iter().chain(args).map(|a| a.to_string()).collect()
            };
            let r = curl(&refs(&with(&["-I", &format!("{base}/bytes/1000")]))).await;
            // (curl -I writes the header where a body would go.)
            assert_eq!(
                (r.status, r.header("content-length"), r.body.contains("xxx")),
                (200, Some("1000"), false),
                "HEAD, upstream h2 {up_h2}, downstream {down_h2:?}"
            );
            for code in ["204", "304"] {
                let r = curl(&refs(&with(&[&format!("{base}/status/{code}")]))).await;
                assert_eq!(
                    (r.status.to_string(), r.body.as_str()),
                    (code.to_string(), ""),
                    "upstream h2 {up_h2}, downstream {down_h2:?}"
                );
            }
        }
    }
    let (port, _) = proxy(vec![peer(up, false)], ProxyOptions::default()).await;
    let base = format!("http://127.0.0.1:{port}");
    // curl waits up to 10 s for the 100 before sending the body: the
    // proxy must send it (when it starts reading the body).
    let start = Instant::now();
    let r = curl(&[
        "-H",
        "Expect: 100-continue",
        "--expect100-timeout",
        "10",
        "--data-binary",
        "continued",
        &format!("{base}/echo"),
    ])
    .await;
    assert_eq!((r.status, r.body.as_str()), (200, "continued"));
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "100 Continue was not sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_to_the_next_backend() {
    let (up, _) = upstream().await;
    let (port, log) = proxy(
        vec![peer(closed_port(), false), peer(up, false)],
        ProxyOptions::default(),
    )
    .await;
    let r = curl(&[&format!("http://127.0.0.1:{port}/echo")]).await;
    assert_eq!(r.status, 200);
    let log = folded(&logged(&log, 1).await);
    // `fail_to_connect` leaves the refused connect retryable; the retry is
    // logged with the request's summary, and the next `upstream_peer`
    // sees the error; no `fail_to_proxy`, one `logging`.
    let at = |s: &str| log.iter().position(|l| l == s).unwrap_or(usize::MAX);
    assert!(
        at("fail_to_connect: ConnectRefused") < at("request_summary"),
        "{log:#?}"
    );
    assert!(
        at("request_summary") < at("previous error: ConnectRefused"),
        "{log:#?}"
    );
    assert_eq!(log.iter().filter(|l| *l == "upstream_peer").count(), 2);
    assert!(
        !log.iter().any(|l| l.starts_with("fail_to_proxy")),
        "{log:#?}"
    );
    assert_eq!(log.iter().filter(|l| *l == "logging").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_reachable_backend_is_502() {
    let (port, log) = proxy(vec![peer(closed_port(), false)], ProxyOptions::default()).await;
    let r = curl(&[&format!("http://127.0.0.1:{port}/")]).await;
    assert_eq!((r.status, r.body.as_str()), (502, "502 Bad Gateway\n"));
    let log = logged(&log, 1).await;
    // The first try and three retries, then one log call with the error.
    assert_eq!(log.iter().filter(|l| *l == "upstream_peer").count(), 4);
    assert_eq!(log.iter().filter(|l| *l == "logging").count(), 1);
    assert!(log.contains(&"logged error: ConnectRefused".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_timeout_is_504() {
    let (up, _) = upstream().await;
    let mut p = peer(up, false);
    p.options.read_timeout = Some(Duration::from_millis(300));
    let (port, log) = proxy(vec![p], ProxyOptions::default()).await;
    let start = Instant::now();
    let r = curl(&[&format!("http://127.0.0.1:{port}/slow")]).await;
    assert_eq!((r.status, r.body.as_str()), (504, "504 Gateway Timeout\n"));
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert!(logged(&log, 1)
        .await
        .contains(&"logged error: ReadTimedout".to_string()));
}

/// An upstream that answers the first request on each connection (keeping
/// it open) and closes the connection, unanswered, when a second request
/// comes on it: a pooled connection that the upstream dropped just as
/// it was reused. Counts connections and answered requests.
async fn drops_second_requests() -> (
    u16,
    Arc<std::sync::atomic::AtomicUsize>,
    Arc<std::sync::atomic::AtomicUsize>,
) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let conns = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (c, a) = (conns.clone(), answered.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            c.fetch_add(1, Ordering::Relaxed);
            let a = a.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                // The first request: its header, and its body by its length.
                loop {
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                    if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&got[..end]).to_lowercase();
                        let len = content_length(&head).unwrap_or(0);
                        if got.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                a.fetch_add(1, Ordering::Relaxed);
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none")
                    .await
                    .unwrap();
                // The next request's first bytes: close without a word.
                let _ = s.read(&mut buf).await;
            });
        }
    });
    (port, conns, answered)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_closed_before_any_answer_is_retried_on_a_new_one() {
    let (up, conns, answered) = drops_second_requests().await;
    let (port, _) = proxy(vec![peer(up, false)], ProxyOptions::default()).await;
    let url = format!("http://127.0.0.1:{port}/");
    let r = curl(&[&url]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "one"));
    // The second request goes out on the pooled connection, which the
    // upstream closes unanswered: it never saw the request, so even a POST
    // is sent again, on a new connection.
    for args in [
        vec![url.as_str()],
        vec!["--data-binary", "abc", url.as_str()],
    ] {
        let r = curl(&args).await;
        assert_eq!((r.status, r.body.as_str()), (200, "one"), "{args:?}");
    }
    assert_eq!(answered.load(Ordering::Relaxed), 3);
    assert_eq!(conns.load(Ordering::Relaxed), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_never_reads_is_a_504() {
    // An upstream that accepts and never reads: the request body (16 MiB)
    // fills the socket buffers and the proxy's write waits.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    let mut p = peer(up, false);
    p.options.write_timeout = Some(Duration::from_millis(300));
    let (port, log) = proxy(vec![p], ProxyOptions::default()).await;
    let body = std::env::temp_dir().join(format!("pingora-never-reads-{}", std::process::id()));
    std::fs::write(&body, vec![b'x'; 16 << 20]).unwrap();
    let start = Instant::now();
    let r = curl(&[
        "--data-binary",
        &format!("@{}", body.display()),
        &format!("http://127.0.0.1:{port}/count"),
    ])
    .await;
    let _ = std::fs::remove_file(&body);
    assert_eq!(r.status, 504, "{}", r.body);
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(logged(&log, 1)
        .await
        .contains(&"logged error: WriteTimedout".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_on_chosen_statuses_for_idempotent_requests() {
    let (up1, _) = upstream().await;
    let (up2, _) = upstream().await;
    let options = ProxyOptions {
        retry_on_status: vec![503],
        ..Default::default()
    };
    // The first backend answers 503; the path on the second one too, so
    // the request's answer says which backend gave it.
    let (port, _) = proxy(vec![peer(up1, false), peer(up2, false)], options).await;
    let r = curl(&[&format!("http://127.0.0.1:{port}/status/503")]).await;
    assert_eq!(r.status, 503);
    assert_eq!(
        r.header("x-upstream-port"),
        Some(format!("127.0.0.1:{up2}").as_str())
    );
    // POST is not idempotent: the first answer stands.
    let r = curl(&["-X", "POST", &format!("http://127.0.0.1:{port}/status/503")]).await;
    assert_eq!(
        r.header("x-upstream-port"),
        Some(format!("127.0.0.1:{up1}").as_str())
    );
}

/// Bad requests get the parser's 4xx and a closed connection; CONNECT is
/// refused unless enabled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_and_connect() {
    let (up, accepted) = upstream().await;
    let (port, _) = proxy(vec![peer(up, false)], ProxyOptions::default()).await;
    for (raw, code) in [
        (
            &b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"[..],
            "400",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            "400",
        ),
        (b"GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n", "400"),
        (
            b"CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n",
            "405",
        ),
    ] {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(raw).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
            .await
            .expect("the proxy closes the connection")
            .unwrap();
        let out = String::from_utf8_lossy(&out);
        assert!(
            out.starts_with(&format!("HTTP/1.1 {code} ")),
            "{raw:?}: {out}"
        );
    }
    assert_eq!(
        accepted.load(Ordering::Relaxed),
        0,
        "nothing reached the upstream"
    );
}

/// A request whose body went upstream before the upstream hung up is sent
/// again, body and all, when `error_while_proxy` says so and the body fits
/// the retry buffer; a longer body is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_resends_a_buffered_body() {
    let (up, _) = upstream().await;
    let bad = hang_up_upstream().await;
    let (port, log) = proxy(
        vec![peer(bad, false), peer(up, false)],
        ProxyOptions::default(),
    )
    .await;
    let body = "x".repeat(30_000);
    let r = curl(&[
        "--data-binary",
        &body,
        &format!("http://127.0.0.1:{port}/retry-me"),
    ])
    .await;
    assert_eq!(r.status, 200);
    assert!(
        r.body == body,
        "the body arrived whole on the second backend"
    );
    let seen = logged(&log, 1).await;
    assert!(
        seen.iter().any(|l| l.starts_with("previous error: ")),
        "{seen:#?}"
    );

    let options = ProxyOptions {
        retry_buffer_size: 1000,
        ..Default::default()
    };
    let (port, log) = proxy(vec![peer(bad, false), peer(up, false)], options).await;
    let r = curl(&[
        "--data-binary",
        &body,
        &format!("http://127.0.0.1:{port}/retry-me"),
    ])
    .await;
    assert_eq!(r.status, 502);
    assert_eq!(
        logged(&log, 1)
            .await
            .iter()
            .filter(|l| *l == "upstream_peer")
            .count(),
        1
    );
}

/// The client's connection stays open for the next request, and the
/// upstream connection is reused for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downstream_keepalive_and_upstream_reuse() {
    let (up, accepted) = upstream().await;
    let (port, _) = proxy(vec![peer(up, false)], ProxyOptions::default()).await;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    for i in 0..5 {
        s.write_all(b"GET /bytes/5 HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !(got.windows(4).any(|w| w == b"\r\n\r\n") && got.ends_with(b"xxxxx")) {
            let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
                .await
                .expect("a response")
                .unwrap();
            assert!(n > 0, "request {i}: the proxy closed the connection");
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got.starts_with(b"HTTP/1.1 200 "), "request {i}");
    }
    assert_eq!(accepted.load(Ordering::Relaxed), 1);
}

/// An upstream that dies in the middle of a chunked body: the client must
/// see the response cut short (curl fails), not a clean end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_cut_short_upstream_is_cut_short_downstream() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
                    )
                    .await;
                // and gone, without the last chunk
            });
        }
    });
    let (port, log) = proxy(vec![peer(up, false)], ProxyOptions::default()).await;
    for proto in ["--http1.1", "--http2-prior-knowledge"] {
        let out = tokio::process::Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "10",
                proto,
                &format!("http://127.0.0.1:{port}/"),
            ])
            .output()
            .await
            .unwrap();
        assert!(
            !out.status.success(),
            "{proto}: curl took a cut response for a whole one"
        );
        // (HTTP/2: the reset may overtake the data queued before it.)
        assert!(b"hello".starts_with(&out.stdout), "{proto}");
    }
    assert!(logged(&log, 2)
        .await
        .iter()
        .any(|l| l == "logged error: ConnectionClosed"));
}

/// An HTTP/1.0 request without Host (as `openssl s_time -www` sends) goes
/// upstream as HTTP/1.1, which needs a Host: the proxy names the
/// upstream, the upstream answers 200 (not 400), and its connection is
/// reused for the next such request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_request_without_host_gets_one_upstream() {
    let (up, accepted) = upstream().await;
    let (port, _) = proxy(vec![peer(up, false)], ProxyOptions::default()).await;
    for i in 0..3 {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(b"GET /bytes/5 HTTP/1.0\r\n\r\n").await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got))
            .await
            .expect("a response, then the close an HTTP/1.0 client expects")
            .unwrap();
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 200 "), "request {i}: {text}");
        assert!(text.ends_with("xxxxx"), "request {i}: {text}");
    }
    assert_eq!(
        accepted.load(Ordering::Relaxed),
        1,
        "one upstream connection"
    );
}

/// The proxy's own path reads and writes the headers as parsed: when no
/// filter reads `headers`, neither the request's nor the response's
/// `HeaderMap` is ever built (hop-by-hop lines, framing, Host and TE, and
/// the lines the proxy adds, are all handled on the lines as received),
/// and what is forwarded is right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_path_builds_no_header_map() {
    use std::sync::Mutex;

    type Seen = Arc<Mutex<Vec<(bool, Option<bool>)>>>;
    struct Lean(pingora_core::upstreams::peer::HttpPeer, Seen);
    #[async_trait::async_trait]
    impl pingora_proxy::ProxyHttp for Lean {
        type CTX = ();
        fn new_ctx(&self) {}
        async fn upstream_peer(
            &self,
            _: &mut pingora_proxy::Session,
            _: &mut (),
        ) -> pingora_error::Result<Box<pingora_core::upstreams::peer::HttpPeer>> {
            Ok(Box::new(self.0.clone()))
        }
        async fn logging(
            &self,
            s: &mut pingora_proxy::Session,
            _: Option<&pingora_error::Error>,
            _: &mut (),
        ) {
            let req = s.req_header().map_built();
            let resp = s.response_written().map(|r| r.map_built());
            self.1.lock().unwrap().push((req, resp));
        }
    }

    let (up, _) = upstream().await;
    let seen = Seen::default();
    let lean = Lean(peer(up, false), seen.clone());
    let app = pingora_core::apps::http_app::HttpServer::new(
        pingora_proxy::HttpProxy::with_options(lean, None, ProxyOptions::default()),
    );
    let port = serve(app, Default::default()).await;
    // A Content-Length response.
    let r = curl(&[
        "-H",
        "X-Secret: 1",
        "-H",
        "Connection: keep-alive, X-Secret",
        &format!("http://127.0.0.1:{port}/bytes/5"),
    ])
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "xxxxx");
    // A chunked response with hop-by-hop fields (the proxy adds its own
    // Transfer-Encoding line): the upstream saw no hop-by-hop field, the
    // client gets none of the upstream's.
    let r = curl(&[
        "-H",
        "X-Secret: 1",
        "-H",
        "Connection: keep-alive, X-Secret",
        &format!("http://127.0.0.1:{port}/echo"),
    ])
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-seen-hop"), Some(""));
    assert_eq!(r.header("x-seen-host"), Some(&*format!("127.0.0.1:{port}")));
    assert_eq!(r.header("keep-alive"), None);
    assert_eq!(r.header("proxy-authenticate"), None);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        &[(false, Some(false)), (false, Some(false))]
    );
}

/// The error phases, in order, when `fail_to_connect` says not to retry:
/// one try only, the user's `fail_to_proxy` answer, then the log phases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_to_connect_decides_and_error_phases_run_in_order() {
    let (up, _) = upstream().await;
    let (port, log) = proxy(
        vec![peer(closed_port(), false), peer(up, false)],
        ProxyOptions::default(),
    )
    .await;
    let r = curl(&[&format!("http://127.0.0.1:{port}/no-retry")]).await;
    assert_eq!((r.status, r.body.as_str()), (502, "no retries\n"));
    let log = folded(&logged(&log, 1).await);
    let expected = [
        "early_request_filter",
        "request_filter",
        "proxy_upstream_filter",
        "upstream_peer",
        "fail_to_connect: ConnectRefused",
        "fail_to_proxy: ConnectRefused",
        "suppress_error_log: ConnectRefused",
        "request_summary",
        "logging",
        "logged error: ConnectRefused",
    ];
    assert_eq!(log, expected, "phases: {log:#?}");
}

/// `proxy_upstream_filter` saying no: 502, and nothing goes upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_upstream_filter_can_refuse() {
    let (up, accepted) = upstream().await;
    let (port, log) = proxy(vec![peer(up, false)], ProxyOptions::default()).await;
    let r = curl(&[&format!("http://127.0.0.1:{port}/not-upstream")]).await;
    assert_eq!((r.status, r.body.as_str()), (502, "502 Bad Gateway\n"));
    let log = logged(&log, 1).await;
    assert!(!log.contains(&"upstream_peer".to_string()), "{log:#?}");
    assert_eq!(accepted.load(Ordering::Relaxed), 0, "nothing went upstream");
}

/// A body filter that changes the body's size: the proxy fixes the
/// Content-Length (the new length when the first piece is the whole body,
/// none and chunked when it is not), over HTTP/1 and HTTP/2; a filter
/// that changes a later piece after the length went out cuts the
/// response short instead of sending a wrong length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_follows_a_body_filter() {
    let (up, _) = upstream().await;
    let (port, _) = proxy(vec![peer(up, false)], ProxyOptions::default()).await;
    let base = format!("http://127.0.0.1:{port}");
    for h2 in [&[][..], &["--http2-prior-knowledge"][..]] {
        // One piece, the whole body: the new length is set.
        let r = curl(&[h2, &[format!("{base}/bytes/10?shrink").as_str()][..]].concat()).await;
        assert_eq!(
            (r.status, r.header("content-length"), r.body.as_str()),
            (200, Some("1"), "x"),
            "{h2:?}"
        );
        // Many pieces, each doubled: no length, the whole doubled body.
        let r = curl(&[h2, &[format!("{base}/bytes/300000?double").as_str()][..]].concat()).await;
        assert_eq!(
            (r.status, r.header("content-length")),
            (200, None),
            "{h2:?}"
        );
        assert_eq!(r.body.len(), 600_000, "{h2:?}");
        if h2.is_empty() {
            assert_eq!(r.header("transfer-encoding"), Some("chunked"));
        }
        // Unchanged: the upstream's length stands.
        let r = curl(&[h2, &[format!("{base}/bytes/300000").as_str()][..]].concat()).await;
        assert_eq!(r.header("content-length"), Some("300000"), "{h2:?}");
        assert_eq!(r.body.len(), 300_000, "{h2:?}");
    }
    // Changed after the length went out: never more bytes than it says.
    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
        ])
        .arg(format!("{base}/bytes/300000?late"))
        .output()
        .await
        .unwrap();
    assert!(!out.status.success(), "a short response was taken as whole");
    let got: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(got < 300_000, "{got} bytes");
}

/// Borrowed arguments for `curl`.
fn refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// A proxy that sends each upstream connection a PROXY header (the
/// `proxy_protocol` peer option) naming the client it was made for.
struct SendsProxyHeader {
    up: u16,
    version: pingora_core::protocols::proxy_protocol::ProxyVersion,
}

#[async_trait::async_trait]
impl pingora_proxy::ProxyHttp for SendsProxyHeader {
    type CTX = ();
    fn new_ctx(&self) {}
    async fn upstream_peer(
        &self,
        s: &mut pingora_proxy::Session,
        _: &mut (),
    ) -> pingora_error::Result<Box<pingora_core::upstreams::peer::HttpPeer>> {
        use pingora_core::protocols::proxy_protocol::ProxyHeader;
        let mut p = peer(self.up, false);
        let client = *s.client_addr().and_then(|a| a.as_inet()).unwrap();
        let server = *s.server_addr().and_then(|a| a.as_inet()).unwrap();
        p.options.proxy_protocol = Some(ProxyHeader::new(self.version, client, server));
        Ok(Box::new(p))
    }
}

/// An upstream that requires a PROXY header on each connection (parsed
/// with our own parser; anything else is hung up on) and answers every
/// request on it with the source address the header named. Returns its
/// port and the number of connections that came with a valid header.
async fn proxy_protocol_upstream() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use pingora_core::protocols::proxy_protocol::ProxyHeader;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let good = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = good.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let counted = counted.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (header, used) = loop {
                    match ProxyHeader::parse(&buf) {
                        Ok(Some(h)) => break h,
                        Ok(None) => {}
                        Err(_) => return,
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                counted.fetch_add(1, Ordering::SeqCst);
                buf.drain(..used);
                let source = header.source.unwrap().to_string();
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{source}",
                    source.len()
                );
                // Each request (no body) gets the answer.
                loop {
                    while let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..i + 4);
                        if s.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    (port, good)
}

/// One GET over `c`, the body of a `Content-Length` answer back.
async fn get_over(c: &mut tokio::net::TcpStream) -> String {
    c.write_all(b"GET / HTTP/1.1\r\nHost: pp.test\r\n\r\n")
        .await
        .unwrap();
    let text = read_answer(c).await;
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{text}");
    body.to_string()
}

/// The HTTP proxy sends a PROXY header (v1 and v2) to the upstream, naming
/// the client; connections with different headers are never shared, so
/// each client's requests arrive under its own address, while one
/// client's second request reuses its upstream connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_header_sent_to_the_upstream_names_the_client() {
    use pingora_core::apps::http_app::HttpServer;
    use pingora_core::protocols::proxy_protocol::ProxyVersion;
    use pingora_proxy::HttpProxy;
    for version in [ProxyVersion::V1, ProxyVersion::V2] {
        let (up, good) = proxy_protocol_upstream().await;
        let app = HttpServer::new(HttpProxy::new(SendsProxyHeader { up, version }, None));
        let port = serve(app, Default::default()).await;
        for round in 1..=2 {
            let mut c = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            let me = c.local_addr().unwrap().to_string();
            assert_eq!(get_over(&mut c).await, me, "{version:?}");
            assert_eq!(get_over(&mut c).await, me, "{version:?}, again");
            // One upstream connection (and header) per client.
            assert_eq!(good.load(Ordering::SeqCst), round, "{version:?}");
        }
    }
}

/// An upstream that answers the first request on each connection in full
/// and the second with only a header (of a 100-byte body) before hanging up;
/// counts the requests it got.
async fn cut_second_answer_upstream() -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                for n in 0..2 {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => buf.extend_from_slice(&chunk[..k]),
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    buf.drain(..end);
                    count.fetch_add(1, Ordering::SeqCst);
                    if n == 0 {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
                            .await;
                    } else {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
                            .await;
                        return; // hang up mid-body
                    }
                }
            });
        }
    });
    (port, seen)
}

/// A response that breaks off after its header came from a reused
/// upstream connection is not retried: the upstream answered, so the
/// request is never sent again (even though the header was still held
/// for the body filters, so the client can still get a 502).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answered_request_is_not_retried() {
    let (up, seen) = cut_second_answer_upstream().await;
    let (port, _) = proxy(vec![peer(up, false)], ProxyOptions::default()).await;
    let url = format!("http://127.0.0.1:{port}/");
    assert_eq!(curl(&[&url]).await.body, "first");
    // The header came but no body: not a response the client can have
    // whole, and not one to ask for again. A 502, from this attempt only.
    let r = curl(&[&url]).await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(
        seen.load(Ordering::SeqCst),
        2,
        "the answered request went upstream again"
    );
}

/// Pingora's `response_trailer_filter` form: bytes it returns go to the
/// client as the body's last piece, in place of the trailers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailer_filter_bytes_end_the_body() {
    let (up, _) = upstream().await;
    let (port, _) = proxy(vec![peer(up, false)], ProxyOptions::default()).await;
    let r = curl(&[
        "--data-binary",
        "hello",
        &format!("http://127.0.0.1:{port}/trailer-body"),
    ])
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "hello|trailer yes");
    // Elsewhere the trailers stay trailers.
    let r = curl(&[
        "--data-binary",
        "hello",
        &format!("http://127.0.0.1:{port}/echo"),
    ])
    .await;
    assert_eq!(r.body, "hello");
}

/// A duration from `response_body_filter` holds that piece back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_filter_delay_holds_the_piece_back() {
    let (up, _) = upstream().await;
    let (port, _) = proxy(vec![peer(up, false)], ProxyOptions::default()).await;
    let started = Instant::now();
    let r = curl(&[&format!("http://127.0.0.1:{port}/bytes/10?delay")]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "xxxxxxxxxx"));
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "the piece went out after {:?}",
        started.elapsed()
    );
}

/// `FailToProxy::can_reuse_downstream`: an error answered whole lets the
/// client's connection go on when the user says so, and ends it otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_to_proxy_decides_whether_the_connection_goes_on() {
    let (port, _) = proxy(vec![peer(closed_port(), false)], ProxyOptions::default()).await;
    let mut c = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    for i in 0..2 {
        c.write_all(b"GET /keep-after-error HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let answer = read_answer(&mut c).await;
        assert!(answer.starts_with("HTTP/1.1 502"), "request {i}: {answer}");
        assert!(answer.ends_with("\r\n\r\nkept\n"), "request {i}: {answer}");
    }
    // The default: the connection ends after the error.
    c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let answer = read_answer(&mut c).await;
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut rest))
        .await
        .expect("the proxy closes the connection")
        .unwrap_or(0);
    assert_eq!(n, 0, "nothing after the answer");
}

/// One answer with a Content-Length, read off `c` whole.
async fn read_answer(c: &mut tokio::net::TcpStream) -> String {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            if body.len() >= content_length(head).expect("a Content-Length") {
                return text;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut chunk))
            .await
            .expect("an answer within 10 s")
            .unwrap();
        assert!(n > 0, "closed early: {text}");
        got.extend_from_slice(&chunk[..n]);
    }
}

/// The proxy as its own app, as `http_proxy_service` serves it (Pingora's
/// shape: `Service<HttpProxy<_>>`): Pingora's `server_options.h2c` turns on
/// HTTP/2 with prior knowledge, and HTTP/1 is served as ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_serves_as_its_own_app_with_pingoras_server_options() {
    use pingora_core::apps::HttpServerOptions;
    use pingora_core::server::configuration::ServerConf;
    use pingora_core::services::listening::Service;
    use pingora_proxy::HttpProxy;

    let (up, _) = upstream().await;
    let rec = |log: &Arc<std::sync::Mutex<Vec<String>>>| Recorder {
        peers: vec![peer(up, false)],
        log: log.clone(),
    };
    let log = Arc::default();
    // The service's type, as Pingora programs name it.
    let conf = Arc::new(ServerConf::default());
    let _svc: Service<HttpProxy<Recorder>> = pingora_proxy::http_proxy_service(&conf, rec(&log));

    let mut app = HttpProxy::with_options(rec(&log), None, ProxyOptions::default());
    let mut options = HttpServerOptions::default();
    options.h2c = true;
    app.server_options = Some(options);
    let port = serve(app, Arc::default()).await;
    let url = format!("http://127.0.0.1:{port}/echo");
    for proto in ["--http2-prior-knowledge", "--http1.1"] {
        let reply = curl(&[proto, "--data-binary", "hello", &url]).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (200, "hello"),
            "{proto}"
        );
    }
    // Without the option, h2c is not taken.
    let plain = HttpProxy::with_options(rec(&log), None, ProxyOptions::default());
    let port = serve(plain, Arc::default()).await;
    let url = format!("http://127.0.0.1:{port}/echo");
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "5", "--http2-prior-knowledge", &url])
        .output()
        .await
        .unwrap();
    assert!(
        !out.status.success(),
        "h2c got through without server_options"
    );
}
