//! The HTTP/2 client and connector: against a real nginx (HTTP/2 over TLS)
//! and against our own h2 server (prior knowledge): streams shared on one
//! connection, a new connection when one is full, trailers, GOAWAY.
#![cfg(feature = "any_tls")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use pingora_core::apps::http_app::{HttpServer, HttpServerApp};
use pingora_core::apps::ServerApp;
use pingora_core::connectors::http::Connector;
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::L4Stream;
use pingora_core::server::ShutdownWatch;
use pingora_core::upstreams::peer::{HttpPeer, ALPN};
use pingora_http::{RequestHeader, ResponseHeader};

mod common;
use common::{eventually, nginx_dir, start_nginx, up_test_cert};

async fn request(
    c: &Connector,
    peer: &HttpPeer,
    path: &str,
    body: Option<(&str, http::HeaderMap)>,
) -> (u16, String, bool, Option<http::HeaderMap>) {
    let method = if body.is_some() { "POST" } else { "GET" };
    // A GOAWAY may land between getting a stream and sending on it: the
    // error says to retry, on another connection.
    let mut tries = 0;
    let (mut s, reused) = loop {
        let (mut s, reused) = c.get_http_session(peer).await.unwrap();
        assert!(s.is_http2());
        let mut req = RequestHeader::build(method, path.as_bytes(), None).unwrap();
        req.insert_header("Host", "up.test").unwrap();
        let mut sent = s
            .write_request_header_eos(Box::new(req), body.is_none())
            .await;
        if let (Ok(()), Some((b, trailers))) = (&sent, &body) {
            s.write_body(Bytes::from(b.to_string())).await.unwrap();
            s.finish_body(Some(trailers.clone())).await.unwrap();
        }
        if sent.is_ok() {
            sent = s.read_response().await;
        }
        match sent {
            Ok(()) => break (s, reused),
            Err(e) if e.retry() && tries < 3 => tries += 1,
            Err(e) => panic!("request: {e}"),
        }
    };
    let status = s.resp_header().unwrap().status.as_u16();
    let mut out = Vec::new();
    while let Some(b) = s.read_body_bytes().await.unwrap() {
        out.extend_from_slice(&b);
    }
    let trailers = s.trailers().cloned();
    c.release(s, peer);
    (status, String::from_utf8(out).unwrap(), reused, trailers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_over_tls_streams_share_connections() {
    let dir = nginx_dir("h2");
    let (cert, key, ca_file, _ca) = up_test_cert(&dir);
    let n = start_nginx(
        dir,
        &format!(
            r#"# http2
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location /proto {{ return 200 "$server_protocol $connection\n"; }}"#
        ),
    );
    let mut peer =
        HttpPeer::try_new(&format!("127.0.0.1:{}", n.port), true, "up.test".into()).unwrap();
    peer.options.ca = Some(ca_file);
    peer.options.alpn = ALPN::H2H1;
    peer.options.max_h2_streams = 100;
    let c = Arc::new(Connector::new(None));

    // One request opens the connection; then 20 at once all share it.
    // (Requests that race to open the first connection each open one.)
    let (_, first, reused, _) = request(&c, &peer, "/proto", None).await;
    assert!(!reused);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (c, peer) = (c.clone(), peer.clone());
            tokio::spawn(async move { request(&c, &peer, "/proto", None).await })
        })
        .collect();
    let mut conns = std::collections::HashSet::from([first]);
    for t in tasks {
        let (status, body, _, _) = t.await.unwrap();
        assert_eq!(status, 200);
        assert!(body.starts_with("HTTP/2.0 "), "{body}");
        conns.insert(body);
    }
    assert_eq!(conns.len(), 1, "nginx saw {} connections", conns.len());
    assert_eq!(c.h2_connections(&peer), 1);

    // At most 2 streams per connection: 6 at once need 3 connections.
    let mut small = peer.clone();
    small.options.max_h2_streams = 2;
    let c2 = Arc::new(Connector::new(None));
    let mut sessions = Vec::new();
    for _ in 0..6 {
        sessions.push(c2.get_http_session(&small).await.unwrap().0);
    }
    assert_eq!(c2.h2_connections(&small), 3);
    drop(sessions);
    // Streams done: the next request reuses an open connection.
    let (_, _, reused, _) = request(&c2, &small, "/proto", None).await;
    assert!(reused);
}

/// Echoes the request body and its trailers.
struct Echo;

impl HttpServerApp for Echo {
    async fn process_request(
        self: &Arc<Self>,
        s: &mut ServerSession,
        _: &ShutdownWatch,
    ) -> pingora_error::Result<()> {
        let mut body = Vec::new();
        while let Some(b) = s.read_request_body().await? {
            body.extend_from_slice(&b);
        }
        let trailers = s.request_trailers().cloned();
        let resp = ResponseHeader::build(200, None)?;
        s.write_response_header(Box::new(resp)).await?;
        s.write_response_body(Bytes::from(body)).await?;
        if let Some(t) = trailers {
            s.set_response_trailers(t);
        }
        s.finish_body().await
    }
}

/// Our h2c server on a port from the OS; each connection gets its own
/// shutdown switch, so one can be sent GOAWAY alone.
async fn our_server() -> (u16, Arc<Mutex<Vec<tokio::sync::watch::Sender<bool>>>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let mut http = HttpServer::new(Echo);
    http.set_h2c(true);
    let app = Arc::new(http);
    let switches: Arc<Mutex<Vec<tokio::sync::watch::Sender<bool>>>> = Arc::default();
    let sw = switches.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let (tx, rx) = tokio::sync::watch::channel(false);
            sw.lock().unwrap().push(tx);
            let app = app.clone();
            tokio::spawn(async move {
                app.process_new(Box::new(L4Stream::from_tcp(s)), &rx).await;
            });
        }
    });
    (port, switches)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_server_trailers_and_goaway() {
    let (port, switches) = our_server().await;
    let mut peer = HttpPeer::try_new(&format!("127.0.0.1:{port}"), false, String::new()).unwrap();
    peer.options.alpn = ALPN::H2;
    peer.options.max_h2_streams = 10;
    let c = Connector::new(None);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().unwrap());
    let (status, body, reused, back) = request(&c, &peer, "/", Some(("ping", trailers))).await;
    assert_eq!((status, body.as_str(), reused), (200, "ping", false));
    assert_eq!(back.unwrap()["grpc-status"], "0");
    let (_, _, reused, _) = request(&c, &peer, "/", None).await;
    assert!(reused);
    assert_eq!(switches.lock().unwrap().len(), 1);

    // The server shuts the connection down gracefully (GOAWAY): the
    // connector stops using it and opens another.
    switches.lock().unwrap()[0].send(true).unwrap();
    eventually(Duration::from_secs(10), "the GOAWAY to be noticed", || {
        c.h2_connections(&peer) == 0
    })
    .await;
    let (status, _, reused, _) = request(&c, &peer, "/", None).await;
    assert_eq!((status, reused), (200, false));
    assert_eq!(switches.lock().unwrap().len(), 2);
}

/// A shared HTTP/2 connection with no stream open for the peer's
/// `idle_timeout` is closed, as a pooled HTTP/1 connection would be; one
/// kept busy is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_h2_upstream_connection_is_closed() {
    let (port, switches) = our_server().await;
    let mut peer = HttpPeer::try_new(&format!("127.0.0.1:{port}"), false, String::new()).unwrap();
    peer.options.alpn = ALPN::H2;
    peer.options.max_h2_streams = 10;
    peer.options.idle_timeout = Some(Duration::from_millis(200));
    let c = Connector::new(None);
    // Busy for a second (a request every 50 ms): the one connection stays.
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(1) {
        let (status, _, _, _) = request(&c, &peer, "/", None).await;
        assert_eq!(status, 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        switches.lock().unwrap().len(),
        1,
        "one connection while busy"
    );
    assert_eq!(c.h2_connections(&peer), 1);
    // Then idle: closed within two periods (and some slack).
    eventually(
        Duration::from_secs(3),
        "the idle connection to close",
        || c.h2_connections(&peer) == 0,
    )
    .await;
    let (status, _, reused, _) = request(&c, &peer, "/", None).await;
    assert_eq!((status, reused), (200, false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_lets_open_streams_finish() {
    let (port, switches) = our_server().await;
    let mut peer = HttpPeer::try_new(&format!("127.0.0.1:{port}"), false, String::new()).unwrap();
    peer.options.alpn = ALPN::H2;
    peer.options.max_h2_streams = 10;
    let c = Connector::new(None);
    // A request whose body is still being sent when the server starts to
    // shut down.
    let (mut s, _) = c.get_http_session(&peer).await.unwrap();
    let mut req = RequestHeader::build("POST", b"/", None).unwrap();
    req.insert_header("Host", "up.test").unwrap();
    s.write_request_header_eos(Box::new(req), false)
        .await
        .unwrap();
    s.write_body(Bytes::from_static(b"first half, "))
        .await
        .unwrap();
    switches.lock().unwrap()[0].send(true).unwrap();
    // New requests keep succeeding, and once the GOAWAY is in they go to a
    // new connection.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, reused, _) = request(&c, &peer, "/", None).await;
        assert_eq!(status, 200);
        if !reused {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the GOAWAY was never noticed"
        );
        pingora_timeout::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(switches.lock().unwrap().len(), 2);
    // The stream that was open on the old connection still completes.
    s.write_body(Bytes::from_static(b"second half"))
        .await
        .unwrap();
    s.finish_body(None).await.unwrap();
    s.read_response().await.unwrap();
    let mut body = Vec::new();
    while let Some(b) = s.read_body_bytes().await.unwrap() {
        body.extend_from_slice(&b);
    }
    assert_eq!(body, b"first half, second half");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_pings_and_drops_a_silent_client() {
    use pingora_core::protocols::http::v2::server::H2Options;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let mut http = HttpServer::new(Echo);
    http.set_h2c(true);
    http.set_h2_options(H2Options {
        ping_interval: Some(Duration::from_millis(100)),
        ..Default::default()
    });
    let app = Arc::new(http);
    let server = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        let (_tx, rx) = tokio::sync::watch::channel(false);
        app.process_new(Box::new(L4Stream::from_tcp(s)), &rx).await;
    });
    // A client that says hello (preface and an empty SETTINGS frame), then
    // never answers anything: no SETTINGS ack, no PING ack.
    let mut c = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    c.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let mut frames = Vec::new();
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match c.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => frames.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server kept a silent client");
    // It sent at least one PING (frame type 6) before giving up, and said
    // goodbye with a GOAWAY (type 7) rather than just dropping the socket.
    let mut i = 0;
    let (mut saw_ping, mut saw_goaway) = (false, false);
    while i + 9 <= frames.len() {
        let len = u32::from_be_bytes([0, frames[i], frames[i + 1], frames[i + 2]]) as usize;
        saw_ping |= frames[i + 3] == 6 && frames[i + 4] & 1 == 0;
        saw_goaway |= frames[i + 3] == 7;
        i += 9 + len;
    }
    assert!(saw_ping, "no PING frame in {frames:?}");
    assert!(saw_goaway, "no GOAWAY frame in {frames:?}");
    // The connection's task ended on its own, without a panic.
    let ended = tokio::time::timeout(Duration::from_secs(5), server).await;
    ended
        .expect("the connection task did not end")
        .expect("the connection task panicked");
}

/// An upstream that completes the HTTP/2 greeting and then goes silent: the
/// client's PING goes unanswered and the connection is given up; a read
/// timeout ends the request that waits on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ping_keepalive_and_read_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        // Our SETTINGS (empty) and an ACK of theirs, then only reading.
        s.write_all(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x04\x01\x00\x00\x00\x00")
            .await
            .unwrap();
        let mut buf = [0u8; 4096];
        while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
    });
    let mut peer = HttpPeer::try_new(&format!("127.0.0.1:{port}"), false, String::new()).unwrap();
    peer.options.alpn = ALPN::H2;
    peer.options.max_h2_streams = 10;
    peer.options.h2_ping_interval = Some(Duration::from_millis(100));
    peer.options.read_timeout = Some(Duration::from_millis(300));
    let c = Connector::new(None);
    let (mut s, _) = c.get_http_session(&peer).await.unwrap();
    let mut req = RequestHeader::build("GET", b"/", None).unwrap();
    req.insert_header("Host", "silent.test").unwrap();
    s.write_request_header_eos(Box::new(req), true)
        .await
        .unwrap();
    let e = s.read_response().await.unwrap_err();
    assert!(
        matches!(
            e.etype(),
            pingora_error::ErrorType::ReadTimedout | pingora_error::ErrorType::H2Error
        ),
        "{e}"
    );
    drop(s);
    eventually(
        Duration::from_secs(10),
        "the unanswered PING to close the connection",
        || c.h2_connections(&peer) == 0,
    )
    .await;
}

/// Holds each `/held` request until `want` requests are in flight at once
/// (or a deadline passes), recording how many streams each connection
/// carried at once; answers anything else at once.
struct Gate {
    want: usize,
    in_flight: std::sync::atomic::AtomicUsize,
    most_in_flight: std::sync::atomic::AtomicUsize,
    /// Per connection (client address): streams open now, most at once.
    per_conn: Mutex<std::collections::HashMap<String, (usize, usize)>>,
}

impl HttpServerApp for Gate {
    async fn process_request(
        self: &Arc<Self>,
        s: &mut ServerSession,
        _: &ShutdownWatch,
    ) -> pingora_error::Result<()> {
        use std::sync::atomic::Ordering::SeqCst;
        if s.req_header().uri.path() == "/held" {
            let conn = s.client_addr().map(|a| a.to_string()).unwrap_or_default();
            {
                let mut map = self.per_conn.lock().unwrap();
                let e = map.entry(conn.clone()).or_default();
                e.0 += 1;
                e.1 = e.1.max(e.0);
            }
            let n = self.in_flight.fetch_add(1, SeqCst) + 1;
            self.most_in_flight.fetch_max(n, SeqCst);
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while self.most_in_flight.load(SeqCst) < self.want
                && std::time::Instant::now() < deadline
            {
                pingora_timeout::sleep(Duration::from_millis(5)).await;
            }
            self.in_flight.fetch_sub(1, SeqCst);
            self.per_conn.lock().unwrap().get_mut(&conn).unwrap().0 -= 1;
        }
        let resp = ResponseHeader::build(200, None)?;
        s.write_response_header(Box::new(resp)).await?;
        s.write_response_body(Bytes::from_static(b"ok")).await?;
        s.finish_body().await
    }
}

/// The client keeps to the PEER's limit on concurrent streams, not only
/// its own: our h2c server allows 2 streams per connection, our side would
/// allow 100, and 5 requests held open at once need 3 or more connections,
/// never more than 2 streams on one. (A client that put all 5 on one
/// connection would have 3 of them wait inside h2, and the 5 would never
/// be in flight together.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_max_concurrent_streams_opens_more_connections() {
    use pingora_core::protocols::http::v2::server::H2Options;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    let gate = Gate {
        want: 5,
        in_flight: AtomicUsize::new(0),
        most_in_flight: AtomicUsize::new(0),
        per_conn: Mutex::default(),
    };
    let mut http = HttpServer::new(gate);
    http.set_h2c(true);
    http.set_h2_options(H2Options {
        max_concurrent_streams: 2,
        ..Default::default()
    });
    let app = Arc::new(http);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let (acc, srv) = (accepted.clone(), app.clone());
    tokio::spawn(async move {
        let (_tx, rx) = tokio::sync::watch::channel(false);
        while let Ok((s, _)) = l.accept().await {
            acc.fetch_add(1, SeqCst);
            let (app, rx) = (srv.clone(), rx.clone());
            tokio::spawn(async move {
                app.process_new(Box::new(L4Stream::from_tcp(s)), &rx).await;
            });
        }
    });
    let mut peer = HttpPeer::try_new(&format!("127.0.0.1:{port}"), false, String::new()).unwrap();
    peer.options.alpn = ALPN::H2;
    peer.options.max_h2_streams = 100;
    let c = Arc::new(Connector::new(None));

    // One request first: its connection knows the server's SETTINGS.
    let (status, _, reused, _) = request(&c, &peer, "/", None).await;
    assert_eq!((status, reused), (200, false));
    assert_eq!(accepted.load(SeqCst), 1);
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let (c, peer) = (c.clone(), peer.clone());
            tokio::spawn(async move { request(&c, &peer, "/held", None).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().0, 200);
    }
    let gate = app.app();
    assert_eq!(
        gate.most_in_flight.load(SeqCst),
        5,
        "the 5 requests were never in flight together"
    );
    let per_conn = gate.per_conn.lock().unwrap().clone();
    assert!(
        per_conn.values().all(|(_, most)| *most <= 2),
        "{per_conn:?}"
    );
    let conns = accepted.load(SeqCst);
    assert!((3..=6).contains(&conns), "{conns} connections accepted");
    assert!(c.h2_connections(&peer) >= 3);
}

/// An HTTP/2 upstream (prior knowledge) that takes the connection but
/// allows no stream, either by sending no SETTINGS at all or by sending a
/// stream limit of 0: the connect fails with a retryable `ConnectTimedout`
/// once the peer's connect timeout has passed (not a fixed wait), and the
/// connection is never handed out.
#[tokio::test]
async fn an_upstream_allowing_no_stream_fails_within_the_connect_timeout() {
    use pingora_error::ErrorType;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // SETTINGS frame: length 6, type 4, no flags, stream 0, then
    // SETTINGS_MAX_CONCURRENT_STREAMS (3) = 0.
    const LIMIT_0: &[u8] = b"\x00\x00\x06\x04\x00\x00\x00\x00\x00\x00\x03\x00\x00\x00\x00";
    for greeting in [&b""[..], LIMIT_0] {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            s.write_all(greeting).await.unwrap();
            // Read (and ignore) what the client sends until it gives up.
            let mut buf = [0u8; 1024];
            while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
        });
        let mut peer =
            HttpPeer::try_new(&format!("127.0.0.1:{port}"), false, String::new()).unwrap();
        peer.options.alpn = ALPN::H2;
        peer.options.connection_timeout = Some(Duration::from_millis(300));
        let c = Connector::new(None);
        let started = std::time::Instant::now();
        let e = match tokio::time::timeout(Duration::from_secs(8), c.get_http_session(&peer)).await
        {
            Ok(Err(e)) => e,
            Ok(Ok(_)) => panic!("a connection that allows no stream was handed out"),
            Err(_) => panic!("the wait for SETTINGS ignored the peer's connect timeout"),
        };
        assert_eq!(e.etype(), &ErrorType::ConnectTimedout, "{e}");
        assert!(e.retry(), "{e}");
        assert!(e.to_string().contains("300ms"), "{e}");
        assert!(started.elapsed() >= Duration::from_millis(300));
        // The connector dropped the connection: the upstream sees it close.
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the connection was kept open")
            .unwrap();
    }
}

/// An HTTP/2 upstream of raw frames that answers the first request it
/// gets with `refusal` (whole frames) once its HEADERS are in.
async fn refusing_upstream(refusal: &'static [u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        // Our SETTINGS (none: no limits), then the client's preface and
        // frames until its request's HEADERS.
        s.write_all(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            .await
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let mut at = 24; // past the connection preface
        loop {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "the client went away before its request");
            got.extend_from_slice(&buf[..n]);
            let mut headers = false;
            while got.len() >= at + 9 {
                let len = u32::from_be_bytes([0, got[at], got[at + 1], got[at + 2]]) as usize;
                if got.len() < at + 9 + len {
                    break;
                }
                match got[at + 3] {
                    // SETTINGS (not an ACK): acknowledge it.
                    4 if got[at + 4] & 1 == 0 => {
                        s.write_all(b"\x00\x00\x00\x04\x01\x00\x00\x00\x00")
                            .await
                            .unwrap();
                    }
                    1 => headers = true,
                    _ => {}
                }
                at += 9 + len;
            }
            if headers {
                break;
            }
        }
        s.write_all(refusal).await.unwrap();
        // Keep the connection open until the client closes it.
        while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
    });
    port
}

#[tokio::test]
async fn requests_an_upstream_refused_unprocessed_are_marked_retryable() {
    // RST_STREAM(1, REFUSED_STREAM); GOAWAY(last stream 0, NO_ERROR).
    const REFUSED: &[u8] = b"\x00\x00\x04\x03\x00\x00\x00\x00\x01\x00\x00\x00\x07";
    const GOAWAY: &[u8] = b"\x00\x00\x08\x07\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";
    for (what, frame) in [("REFUSED_STREAM", REFUSED), ("GOAWAY", GOAWAY)] {
        let port = refusing_upstream(frame).await;
        let mut peer =
            HttpPeer::try_new(&format!("127.0.0.1:{port}"), false, String::new()).unwrap();
        peer.options.alpn = ALPN::H2;
        let c = Connector::new(None);
        let (mut s, _) = c.get_http_session(&peer).await.unwrap();
        let mut req = RequestHeader::build("POST", b"/", None).unwrap();
        req.insert_header("Host", "refusing.test").unwrap();
        let sent = s.write_request_header_eos(Box::new(req), true).await;
        let e = match sent {
            Err(e) => e,
            Ok(()) => tokio::time::timeout(Duration::from_secs(5), s.read_response())
                .await
                .expect("the refusal ends the wait")
                .expect_err("a refused request has no response"),
        };
        // Even a POST: the server said it never processed it.
        assert!(e.retry(), "{what}: {e}");
    }
}

/// A server that has sent its whole response may stop the rest of the
/// request with RST_STREAM(NO_ERROR) (RFC 9113 §8.1; gRPC servers do when a
/// call ends before the client half-closes). The response stays whole and
/// the request body that follows is dropped, not an error.
#[tokio::test]
async fn an_upstream_stopping_the_request_after_its_response_is_not_an_error() {
    // HEADERS(1, END_HEADERS, ":status: 200"); DATA(1, END_STREAM, "done");
    // RST_STREAM(1, NO_ERROR).
    const DONE: &[u8] = b"\x00\x00\x01\x01\x04\x00\x00\x00\x01\x88\
        \x00\x00\x04\x00\x01\x00\x00\x00\x01done\
        \x00\x00\x04\x03\x00\x00\x00\x00\x01\x00\x00\x00\x00";
    let port = refusing_upstream(DONE).await;
    let mut peer = HttpPeer::try_new(&format!("127.0.0.1:{port}"), false, String::new()).unwrap();
    peer.options.alpn = ALPN::H2;
    let c = Connector::new(None);
    let (mut s, _) = c.get_http_session(&peer).await.unwrap();
    let mut req = RequestHeader::build("POST", b"/", None).unwrap();
    req.insert_header("Host", "stopping.test").unwrap();
    s.write_request_header_eos(Box::new(req), false)
        .await
        .unwrap();
    s.read_response().await.unwrap();
    assert_eq!(s.resp_header().unwrap().status.as_u16(), 200);
    let mut body = Vec::new();
    while let Some(b) = s.read_body_bytes().await.unwrap() {
        body.extend_from_slice(&b);
    }
    assert_eq!(body, b"done");
    // The reset is in by now: the request's rest goes nowhere, quietly.
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.write_body(Bytes::from_static(b"more of the request"))
        .await
        .expect("a body the upstream stopped is dropped");
    s.queue_body(Bytes::from_static(b"and more")).unwrap();
    s.queue_finish(None).unwrap();
    assert!(s.read_body_while_sending().await.unwrap().is_some());
    s.finish_body(None).await.unwrap();
}
