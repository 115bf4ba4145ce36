//! Hostile clients and faulty upstreams, with real sockets on loopback:
//! clients that go away while their request waits (HTTP/1 close, HTTP/2
//! stream resets, a rapid-reset storm), and upstream responses framed
//! ambiguously.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pingora_proxy::ProxyOptions;
use pingora_test_support::eventually;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;
use common::*;

/// An upstream that reads what it is sent and never answers, counting the
/// connections it holds open (each is counted down when the proxy closes
/// it).
async fn silent_upstream() -> (u16, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let open = Arc::new(AtomicUsize::new(0));
    let count = open.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let count = count.clone();
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
                count.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (port, open)
}

/// A raw client connection to the proxy at `port` that has sent `bytes`.
async fn send(port: u16, bytes: &[u8]) -> tokio::net::TcpStream {
    let mut c = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    c.write_all(bytes).await.unwrap();
    c
}

/// All the proxy sends on `c` until it closes (within 10 s), as text.
async fn rest(c: &mut tokio::net::TcpStream) -> String {
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut got)).await;
    String::from_utf8_lossy(&got).into_owned()
}

/// Send `bytes` on a new connection; everything the proxy answers.
async fn exchange(port: u16, bytes: &[u8]) -> String {
    rest(&mut send(port, bytes).await).await
}

/// Wait up to `limit` for `open` to read `want`; its last value.
async fn settles(open: &AtomicUsize, want: usize, limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    loop {
        let now = open.load(Ordering::SeqCst);
        if now == want || Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An HTTP/1 client that sends a request and closes before the answer:
/// the upstream request is aborted at once (its connection closed, not
/// kept), with or without a request body, and logged as 499.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_http1_client_aborts_the_upstream_request() {
    let (up, open) = silent_upstream().await;
    let (port, log) = proxy(vec![peer(up, false)], ProxyOptions::default()).await;
    let requests: [&[u8]; 2] = [
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    ];
    for (i, req) in requests.iter().enumerate() {
        let c = send(port, req).await;
        assert_eq!(
            settles(&open, 1, Duration::from_secs(5)).await,
            1,
            "the request reached the upstream"
        );
        drop(c);
        assert_eq!(
            settles(&open, 0, Duration::from_secs(3)).await,
            0,
            "request {i}: the upstream connection is closed once the client left"
        );
        let log = logged(&log, i + 1).await;
        assert!(
            log.iter().any(|l| l == "logged error: ConnectionClosed"),
            "{log:?}"
        );
    }
}

/// `ignore_client_abort` keeps the upstream request going, as nginx's
/// `proxy_ignore_client_abort on` does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignore_client_abort_keeps_the_upstream_request() {
    let (up, open) = silent_upstream().await;
    let options = ProxyOptions {
        ignore_client_abort: true,
        ..Default::default()
    };
    let (port, _log) = proxy(vec![peer(up, false)], options).await;
    let c = send(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(settles(&open, 1, Duration::from_secs(5)).await, 1);
    drop(c);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(open.load(Ordering::SeqCst), 1, "still waiting upstream");
}

/// A pipelined second request that arrives while the first waits on its
/// upstream is not taken for a client that went away: both are answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_request_is_not_a_client_abort() {
    let (up, _) = upstream().await;
    let (port, _log) = proxy(vec![peer(up, false)], ProxyOptions::default()).await;
    let text = exchange(port, b"GET /bytes/3 HTTP/1.1\r\nHost: x\r\n\r\nGET /bytes/4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert_eq!(text.matches("HTTP/1.1 200").count(), 2, "{text}");
}

/// An h2c connection to the proxy, driven in the background; the
/// connection's end (with a GOAWAY's reason) comes out of the handle.
async fn h2c(
    port: u16,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    (client, tokio::spawn(conn))
}

/// HTTP/2 streams reset by the client while their upstream requests wait:
/// each upstream request is aborted at once (its connection closed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_h2_streams_abort_their_upstream_requests() {
    let (up, open) = silent_upstream().await;
    let (port, _log) = proxy(vec![peer(up, false)], ProxyOptions::default()).await;
    let (client, _conn) = h2c(port).await;
    let mut streams = Vec::new();
    for i in 0..20 {
        let mut client = client.clone().ready().await.unwrap();
        let req = http::Request::get(format!("http://127.0.0.1:{port}/r{i}"))
            .body(())
            .unwrap();
        streams.push(client.send_request(req, true).unwrap().0);
    }
    assert_eq!(
        settles(&open, 20, Duration::from_secs(5)).await,
        20,
        "every request reached the upstream"
    );
    // Dropping a response future of an open stream resets it (CANCEL).
    drop(streams);
    assert_eq!(
        settles(&open, 0, Duration::from_secs(3)).await,
        0,
        "the upstream requests of the reset streams are aborted"
    );
}

/// The rapid-reset attack (CVE-2023-44487): a client that keeps opening
/// streams and resetting them ~50 ms later leaves no upstream work behind,
/// and gets GOAWAY(ENHANCE_YOUR_CALM) once it has reset more than
/// `max_reset_streams` (100) of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rapid_reset_client_gets_goaway_enhance_your_calm() {
    let (up, open) = silent_upstream().await;
    let (port, _log) = proxy(vec![peer(up, false)], ProxyOptions::default()).await;
    let (client, conn) = h2c(port).await;
    let mut sent = 0;
    let mut peak = 0;
    let started = Instant::now();
    'attack: for wave in 0..40 {
        let mut wave_streams = Vec::new();
        for i in 0..10 {
            let Ok(mut c) = client.clone().ready().await else {
                break 'attack;
            };
            let req = http::Request::get(format!("http://127.0.0.1:{port}/w{wave}/{i}"))
                .body(())
                .unwrap();
            match c.send_request(req, true) {
                Ok((resp, _)) => wave_streams.push(resp),
                Err(_) => break 'attack,
            }
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        peak = peak.max(open.load(Ordering::SeqCst));
        drop(wave_streams);
        if conn.is_finished() {
            break;
        }
    }
    let end = tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("the proxy closes the connection")
        .unwrap();
    let e = end.expect_err("the connection ends with a GOAWAY error");
    assert_eq!(
        e.reason(),
        Some(h2::Reason::ENHANCE_YOUR_CALM),
        "{e} after {sent} streams in {:?}",
        started.elapsed()
    );
    assert!(e.is_go_away() && e.is_remote(), "{e}");
    assert!(
        (101..=250).contains(&sent),
        "GOAWAY came after {sent} streams"
    );
    assert!(peak <= 40, "upstream requests piled up: {peak}");
    assert_eq!(settles(&open, 0, Duration::from_secs(3)).await, 0);
}

/// An upstream response with both Transfer-Encoding and Content-Length is
/// read by its Transfer-Encoding (RFC 9112 §6.3), and the client never sees
/// the Content-Length that does not describe it, over HTTP/1 or HTTP/2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_with_te_and_cl_is_forwarded_by_its_te() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n\
                          b\r\nhello world\r\n0\r\n\r\n",
                    )
                    .await;
                let _ = s.read(&mut buf).await;
            });
        }
    });
    let (port, _log) = proxy(vec![peer(up, false)], ProxyOptions::default()).await;
    for flags in [&["--http1.1"][..], &["--http2-prior-knowledge"][..]] {
        let url = format!("http://127.0.0.1:{port}/");
        let mut args = flags.to_vec();
        args.push(&url);
        let r = curl(&args).await;
        assert_eq!(r.status, 200, "{flags:?}");
        assert_eq!(r.body, "hello world", "{flags:?}");
        assert_ne!(r.header("content-length"), Some("5"), "{flags:?}");
    }
}

/// A keep-alive upstream that answers `GET /ok` and holds every other
/// request unanswered; counts what it received by request line.
async fn ok_or_silent_upstream() -> (u16, Arc<std::sync::Mutex<Vec<String>>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&got[..end]).to_string();
                    let line = head.lines().next().unwrap_or("").to_string();
                    let len = content_length(&head).unwrap_or(0);
                    while got.len() < end + 4 + len {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    got.drain(..end + 4 + len);
                    log.lock().unwrap().push(line.clone());
                    if line.starts_with("GET /ok ") {
                        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                        if s.write_all(ok).await.is_err() {
                            return;
                        }
                    } else {
                        // Never answered; wait for the proxy to close.
                        while let Ok(n) = s.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                        }
                        return;
                    }
                }
            });
        }
    });
    (port, seen)
}

/// A POST that may have been processed (the reused upstream connection
/// timed out waiting for its answer) is not sent again: it reaches the
/// upstream once, and the client gets 504. An idempotent GET in the same
/// spot is retried on a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_reaches_the_upstream_at_most_once() {
    let (up, seen) = ok_or_silent_upstream().await;
    let mut p = peer(up, false);
    p.options.read_timeout = Some(Duration::from_millis(300));
    let (port, _log) = proxy(vec![p], ProxyOptions::default()).await;
    let base = format!("http://127.0.0.1:{port}");
    let count = |line: &str| seen.lock().unwrap().iter().filter(|l| *l == line).count();

    // A pooled connection first, then the POST goes out on it.
    assert_eq!(curl(&[&format!("{base}/ok")]).await.status, 200);
    let r = curl(&["--data-binary", "pay once", &format!("{base}/pay")]).await;
    assert_eq!(r.status, 504);
    assert_eq!(count("POST /pay HTTP/1.1"), 1, "{:?}", seen.lock().unwrap());

    // The same for a GET: tried again on a fresh connection.
    assert_eq!(curl(&[&format!("{base}/ok")]).await.status, 200);
    let r = curl(&[&format!("{base}/silent")]).await;
    assert_eq!(r.status, 504);
    assert_eq!(
        count("GET /silent HTTP/1.1"),
        2,
        "{:?}",
        seen.lock().unwrap()
    );
}

/// An HTTP/1 request that asks to upgrade to h2c is served as plain
/// HTTP/1.1: the upstream never sees the Upgrade (no "h2c smuggling" past
/// the proxy's rules).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_upgrade_is_never_forwarded() {
    let (up, _) = upstream().await;
    let (port, _log) = proxy(vec![peer(up, false)], ProxyOptions::default()).await;
    let mut c = send(
        port,
        b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings, close\r\n\
          Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
    )
    .await;
    let text = rest(&mut c).await.to_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    let hop = text
        .lines()
        .find_map(|l| l.strip_prefix("x-seen-hop:"))
        .unwrap_or("")
        .trim()
        .to_string();
    assert!(!hop.contains("upgrade"), "the upstream saw: {hop}");
}

/// A chunked body whose framing is already wrong in the bytes that came
/// with the header is refused (400) before any upstream is contacted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_body_known_in_time_never_reaches_the_upstream() {
    let (up, accepted) = upstream().await;
    let (port, _log) = proxy(vec![peer(up, false)], ProxyOptions::default()).await;
    let text = exchange(port, b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\nmore\r\n0\r\n\r\n").await;
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert_eq!(
        accepted.load(Ordering::Relaxed),
        0,
        "the upstream was contacted"
    );
}

/// A chunked body that turns out malformed after the upstream request
/// began aborts it: the upstream sees its connection close before the
/// body's end, never a complete (truncated) request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_malformed_later_aborts_the_upstream_request() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap().port();
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel::<Vec<u8>>();
    // Set once the body's first chunk is at the upstream.
    let body_began = Arc::new(AtomicBool::new(false));
    let began = body_began.clone();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        // Everything until the proxy closes (bounded by the test's wait).
        while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
            if all.windows(5).any(|w| w == b"hello") {
                began.store(true, Ordering::SeqCst);
            }
        }
        let _ = seen_tx.send(all);
    });
    let (port, _log) = proxy(vec![peer(up, false)], ProxyOptions::default()).await;
    let mut c = send(
        port,
        b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    )
    .await;
    // The rest, malformed, only once the upstream request began.
    eventually(Duration::from_secs(10), "the body upstream", || {
        body_began.load(Ordering::SeqCst)
    })
    .await;
    c.write_all(b"ZZ\r\nmore\r\n0\r\n\r\n").await.unwrap();
    let text = rest(&mut c).await;
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    let seen = tokio::time::timeout(Duration::from_secs(10), seen_rx)
        .await
        .expect("the upstream connection ends")
        .unwrap();
    let seen = String::from_utf8_lossy(&seen);
    assert!(seen.starts_with("POST /up "), "{seen}");
    assert!(seen.contains("hello"), "{seen}");
    assert!(
        !seen.contains("0\r\n\r\n"),
        "the upstream saw a complete body: {seen:?}"
    );
}

/// An upstream that misbehaves as the request path says, after reading the
/// request header: `/reset-mid-body` (half the promised body, then a
/// reset), `/close-mid-header`, `/trickle` (a whole response, a few bytes
/// at a time), `/silent`, `/half-close` (a header promising a body, then
/// FIN), `/short` (Content-Length 10, 5 bytes, close), `/long`
/// (Content-Length 5, 10 bytes), anything else a normal answer. One
/// request per connection (`Connection: close`).
async fn faulty_upstream() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&got).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                match path.as_str() {
                    "/reset-mid-body" => {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 100\r\n\r\n0123456789")
                            .await;
                        // A zero linger makes the close a reset (and
                        // never blocks, which is why tokio deprecates it).
                        #[allow(deprecated)]
                        let _ = s.set_linger(Some(Duration::ZERO));
                        drop(s);
                    }
                    "/close-mid-header" => {
                        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Le").await;
                    }
                    "/trickle" => {
                        for piece in [
                            &b"HTTP/1.1 200 OK\r\n"[..],
                            b"Connection: close\r\nContent-Length: 4\r\n",
                            b"\r\n",
                            b"ab",
                            b"cd",
                        ] {
                            let _ = s.write_all(piece).await;
                            tokio::time::sleep(Duration::from_millis(30)).await;
                        }
                        let _ = s.read(&mut buf).await;
                    }
                    "/silent" => {
                        let _ = s.read(&mut buf).await;
                    }
                    "/half-close" => {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 10\r\n\r\n")
                            .await;
                        let _ = s.shutdown().await;
                        let _ = s.read(&mut buf).await;
                    }
                    "/short" => {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 10\r\n\r\n01234")
                            .await;
                    }
                    "/long" => {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\n0123456789")
                            .await;
                        let _ = s.read(&mut buf).await;
                    }
                    _ => {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
                            .await;
                        let _ = s.read(&mut buf).await;
                    }
                }
            });
        }
    });
    port
}

/// What a raw HTTP/1.1 client got for `path` (one request, then the
/// connection closes): the status, and whether the body was whole by the
/// response's own Content-Length.
async fn fetch(port: u16, path: &str) -> (u16, bool, String) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let text = exchange(port, req.as_bytes()).await;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let whole = match text.split_once("\r\n\r\n") {
        Some((head, body)) => match content_length(head) {
            Some(n) => body.len() == n,
            // Chunked: whole only with its last chunk.
            None => body.ends_with("0\r\n\r\n"),
        },
        None => false,
    };
    (status, whole, text)
}

/// Faulty upstreams get clear answers and never a response that looks
/// whole when it is not: a broken response before its header is a 502,
/// a silent upstream a 504, one cut off after its header is cut off for
/// the client too; a trickling one is served; a body longer than its
/// Content-Length is cut at the length. The proxy stays healthy after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faulty_upstreams_get_clear_answers() {
    let up = faulty_upstream().await;
    let mut p = peer(up, false);
    p.options.read_timeout = Some(Duration::from_millis(500));
    let options = ProxyOptions {
        max_retries: 0,
        ..Default::default()
    };
    let (port, log) = proxy(vec![p], options).await;
    let (status, _, text) = fetch(port, "/close-mid-header").await;
    assert_eq!(status, 502, "{text}");
    let (status, _, text) = fetch(port, "/silent").await;
    assert_eq!(status, 504, "{text}");
    for path in ["/reset-mid-body", "/half-close", "/short"] {
        let (status, whole, text) = fetch(port, path).await;
        assert!(status == 200 || status == 502, "{path}: {text}");
        assert!(
            !whole || status == 502,
            "{path}: a cut-off body looked whole: {text:?}"
        );
    }
    let (status, whole, text) = fetch(port, "/trickle").await;
    assert!(status == 200 && whole, "{text}");
    assert!(text.ends_with("abcd"), "{text}");
    let (status, whole, text) = fetch(port, "/long").await;
    assert!(
        status == 200 && whole && text.ends_with("\r\n\r\n01234"),
        "{text:?} {:?}",
        log.lock().unwrap()
    );
    let (status, whole, _) = fetch(port, "/fine").await;
    assert!(status == 200 && whole);
}

/// The names the test upstream saw, from its `x-seen-names` answer.
fn seen_names(r: &Reply) -> String {
    r.header("x-seen-names").unwrap_or("").to_string()
}

/// Header lines whose name holds `_` are dropped by default (nginx's
/// `underscores_in_headers off`), over HTTP/1 and HTTP/2, and kept with
/// `underscores_in_headers`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_names_with_underscores_are_dropped_unless_allowed() {
    let (up, _) = upstream().await;
    let (port, _log) = proxy(vec![peer(up, false)], ProxyOptions::default()).await;
    let url = format!("http://127.0.0.1:{port}/echo");
    for h2 in [false, true] {
        let mut args = vec!["-H", "X_Forwarded_For: 6.6.6.6", "-H", "X-Kept: yes"];
        if h2 {
            args.push("--http2-prior-knowledge");
        }
        args.push(&url);
        let r = curl(&args).await;
        assert_eq!(r.status, 200);
        let names = seen_names(&r);
        assert!(names.contains("x-kept"), "h2 {h2}: {names}");
        assert!(!names.contains("x_forwarded_for"), "h2 {h2}: {names}");
    }
    let allow = pingora_core::protocols::http::v1::H1Options {
        underscores_in_headers: true,
        ..Default::default()
    };
    let (port, _log) = proxy_with(vec![peer(up, false)], ProxyOptions::default(), allow).await;
    let url = format!("http://127.0.0.1:{port}/echo");
    for h2 in [false, true] {
        let mut args = vec!["-H", "X_Forwarded_For: 6.6.6.6"];
        if h2 {
            args.push("--http2-prior-knowledge");
        }
        args.push(&url);
        let names = seen_names(&curl(&args).await);
        assert!(names.contains("x_forwarded_for"), "h2 {h2}: {names}");
    }
}

/// HTTP/2 connections to one upstream are capped
/// (`PeerOptions::max_h2_connections`): with every connection's streams
/// taken, a request that would need one more is answered 503 at once, and
/// the upstream never sees more connections than the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_upstream_connections_per_peer_are_capped() {
    let (up, accepted) = upstream().await;
    let mut p = peer(up, true);
    p.options.max_h2_streams = 1;
    p.options.max_h2_connections = 2;
    let (port, _log) = proxy(vec![p], ProxyOptions::default()).await;
    // Two requests that hold a stream each, for as long as they stay, one
    // after the other: each on a connection of its own.
    let mut held = Vec::new();
    for n in 1..=2 {
        held.push(send(port, b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n").await);
        assert_eq!(settles(&accepted, n, Duration::from_secs(10)).await, n);
    }
    // Both connections full: the next request is refused at once.
    let answer = exchange(
        port,
        b"GET /echo HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        accepted.load(Ordering::Relaxed) <= 2,
        "{} connections",
        accepted.load(Ordering::Relaxed)
    );
}

/// An upstream that answers `GET /small` with `ok` and every other request
/// with a body too large to ever finish (100 MB, written until the proxy
/// stops taking it), counting the connections it holds open.
async fn endless_upstream() -> (u16, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let open = Arc::new(AtomicUsize::new(0));
    let count = open.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let count = count.clone();
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                if got.starts_with(b"GET /small ") {
                    let _ = s
                        .write_all(
                            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
                        )
                        .await;
                    count.fetch_sub(1, Ordering::SeqCst);
                    return;
                }
                let head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n";
                let block = vec![b'x'; 16 * 1024];
                let mut w = s.write_all(head).await;
                while w.is_ok() {
                    w = s.write_all(&block).await;
                }
                count.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (port, open)
}

/// Clients that vanish at each phase of a request leave nothing behind:
/// in the middle of the request header (nothing goes upstream), in the
/// middle of the request body (the upstream request is dropped), and in
/// the middle of the response body (the upstream connection is closed,
/// not pooled half-read); the proxy serves the next client after each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_vanish_at_any_phase_leave_nothing_behind() {
    // Mid request header: no upstream connection at all.
    let (up, open) = silent_upstream().await;
    let (port, _log) = proxy(vec![peer(up, false)], ProxyOptions::default()).await;
    let mut c = send(port, b"GET / HTTP/1.1\r\nHost: a\r\nX-Half: ").await;
    // The client's end (the FIN a vanishing client sends), then the proxy
    // closing the connection: it is done with it, and contacted no one.
    let _ = c.shutdown().await;
    let _ = rest(&mut c).await;
    drop(c);
    assert_eq!(open.load(Ordering::SeqCst), 0, "an upstream was contacted");

    // Mid request body: the upstream request goes once the client does.
    let c = send(
        port,
        b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\nfirst ten.",
    )
    .await;
    assert_eq!(settles(&open, 1, Duration::from_secs(10)).await, 1);
    drop(c);
    assert_eq!(
        settles(&open, 0, Duration::from_secs(10)).await,
        0,
        "upstream request kept"
    );

    // Mid response body: the half-read upstream connection is closed.
    let (up, open) = endless_upstream().await;
    let (port, _log) = proxy(vec![peer(up, false)], ProxyOptions::default()).await;
    let mut c = send(port, b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0;
    while got < 256 * 1024 {
        let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf))
            .await
            .expect("body flowing")
            .unwrap();
        assert!(n > 0);
        got += n;
    }
    assert_eq!(open.load(Ordering::SeqCst), 1);
    drop(c);
    assert_eq!(
        settles(&open, 0, Duration::from_secs(10)).await,
        0,
        "upstream kept reading"
    );

    // The proxy is still serving.
    let answer = exchange(
        port,
        b"GET /small HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok"),
        "{answer}"
    );
}
