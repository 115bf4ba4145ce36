//! Upstream connectors and the connection pool against a real nginx: reuse
//! proven by nginx's own connection counter, remote close and idle timeout
//! noticed while idle, connect errors told apart, bind address, TLS.

use std::time::Duration;

use pingora_core::connectors::http::Connector;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::ErrorType;
use pingora_http::RequestHeader;

mod common;
use common::{eventually, nginx_dir, start_nginx, Nginx};

fn nginx(tag: &str) -> Nginx {
    start_nginx(
        nginx_dir(tag),
        r#"keepalive_requests 100000;
        keepalive_timeout 60s;
        location /conn { return 200 "$connection\n"; }
        location /addr { return 200 "$remote_addr\n"; }
        location /short {
            keepalive_timeout 300ms;
            return 200 "$connection\n";
        }"#,
    )
}

/// One GET through the connector; returns the body and whether the
/// connection was reused, and releases the session.
async fn get(c: &Connector, peer: &HttpPeer, path: &str) -> (String, bool) {
    let (mut s, reused) = c.get_http_session(peer).await.unwrap();
    let mut req = RequestHeader::build("GET", path.as_bytes(), None).unwrap();
    req.insert_header("Host", "upstream.test").unwrap();
    s.write_request_header(Box::new(req), true).await.unwrap();
    s.read_response().await.unwrap();
    let mut body = Vec::new();
    while let Some(b) = s.read_body_bytes().await.unwrap() {
        body.extend_from_slice(&b);
    }
    c.release_http_session(s, peer);
    (String::from_utf8(body).unwrap(), reused)
}

fn peer(n: &Nginx) -> HttpPeer {
    HttpPeer::new(&format!("127.0.0.1:{}", n.port), false, String::new()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_requests_one_upstream_connection() {
    let n = nginx("reuse");
    let c = Connector::new(None);
    let p = peer(&n);
    let (first, reused) = get(&c, &p, "/conn").await;
    assert!(!reused);
    for i in 1..1000 {
        let (body, reused) = get(&c, &p, "/conn").await;
        assert!(reused, "request {i} opened a new connection");
        assert_eq!(body, first, "nginx saw another connection at request {i}");
    }
    let s = c.transport().pool_stats();
    assert_eq!((s.hits, s.misses, s.idle), (999, 1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_close_and_idle_timeout_are_noticed_while_idle() {
    let n = nginx("idle");
    let c = Connector::new(None);
    let p = peer(&n);
    // nginx closes this one after 300 ms idle: the pool must notice by
    // itself, not hand out a dead connection.
    let (a, _) = get(&c, &p, "/short").await;
    assert_eq!(c.transport().pool_stats().idle, 1);
    eventually(
        Duration::from_secs(10),
        "the remote close to be noticed",
        || c.transport().pool_stats().evicted == 1,
    )
    .await;
    assert_eq!(c.transport().pool_stats().idle, 0);
    let (b, reused) = get(&c, &p, "/conn").await;
    assert!(!reused);
    assert_ne!(a, b);

    // Our own idle timeout.
    let mut p = peer(&n);
    p.options.idle_timeout = Some(Duration::from_millis(100));
    get(&c, &p, "/conn").await;
    eventually(Duration::from_secs(10), "the idle timeout", || {
        c.transport().pool_stats().evicted == 2
    })
    .await;
    let (_, reused) = get(&c, &p, "/conn").await;
    assert!(!reused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_errors_and_bind_address() {
    let n = nginx("errors");
    let c = Connector::new(None);

    // Nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let p = HttpPeer::new(&addr.to_string(), false, String::new()).unwrap();
    let e = c.get_http_session(&p).await.err().unwrap();
    assert_eq!(e.etype(), &ErrorType::ConnectRefused, "{e}");

    // A listener that never accepts, with its queue full: the connect hangs.
    let full = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    full.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    full.listen(0).unwrap();
    let full_addr = full.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        let _ = s.connect(&full_addr.into());
        fillers.push(s);
    }
    let mut p = HttpPeer::new(&full_addr.to_string(), false, String::new()).unwrap();
    p.options.connection_timeout = Some(Duration::from_millis(200));
    let e = c.get_http_session(&p).await.err().unwrap();
    assert_eq!(e.etype(), &ErrorType::ConnectTimedout, "{e}");

    // Connecting from a chosen source address.
    let mut p = peer(&n);
    p.options.bind_to = Some("127.0.0.2:0".parse().unwrap());
    let (body, _) = get(&c, &p, "/addr").await;
    assert_eq!(body, "127.0.0.2\n");
}

#[cfg(any(feature = "openssl", feature = "boringssl"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_upstreams_pool_and_verify() {
    use pingora_core::utils::certs::TestCa;
    let dir = nginx_dir("tls");
    let ca = TestCa::new("Test CA").unwrap();
    let (cert, key) = ca
        .issue(&["up.test"], 30, false)
        .unwrap()
        .write(&dir, "up")
        .unwrap();
    let (ca_file, _) = ca.ca.write(&dir, "ca").unwrap();
    let n = start_nginx(
        dir,
        &format!(
            r#"ssl_certificate {cert};
        ssl_certificate_key {key};
        keepalive_requests 100000;
        location /conn {{ return 200 "$connection $ssl_server_name\n"; }}"#
        ),
    );
    let c = Connector::new(None);
    let mut p = HttpPeer::new(&format!("127.0.0.1:{}", n.port), true, "up.test".into()).unwrap();
    p.options.ca = Some(ca_file);
    let (first, _) = get(&c, &p, "/conn").await;
    assert!(first.ends_with(" up.test\n"), "{first}");
    for _ in 0..20 {
        let (body, reused) = get(&c, &p, "/conn").await;
        assert!(reused);
        assert_eq!(body, first);
    }
    // Without our CA the certificate is not trusted.
    let mut untrusted = p.clone();
    untrusted.options.ca = Some(format!("{}/up.crt", n.dir.display()));
    let e = c.get_http_session(&untrusted).await.err().unwrap();
    assert_eq!(e.etype(), &ErrorType::CertUnknownCA, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_peers_and_tcp_keepalive() {
    use pingora_core::listeners::TcpKeepalive;
    let n = nginx("ka");
    let c = Connector::new(None);
    // TCP keepalive is set on the upstream socket.
    let mut p = peer(&n);
    p.options.tcp_keepalive = Some(TcpKeepalive {
        idle: Duration::from_secs(30),
        interval: Duration::from_secs(5),
        count: 3,
    });
    let s = c.transport().new_stream(&p).await.unwrap();
    let fd = s.socket_digest().unwrap().raw_fd;
    // SAFETY: a live fd owned by `s`, borrowed for the query only.
    let sock = std::mem::ManuallyDrop::new(unsafe {
        <socket2::Socket as std::os::fd::FromRawFd>::from_raw_fd(fd)
    });
    assert!(sock.keepalive().unwrap());
    assert_eq!(sock.keepalive_time().unwrap(), Duration::from_secs(30));
    drop(s);

    // A Unix-socket upstream: an HTTP/1 echo of our own.
    let path = std::env::temp_dir().join(format!("pingora-uds-peer-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let l = tokio::net::UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.ends_with(b"\r\n\r\n") {
                    let n = s.read(&mut buf).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nunix")
                    .await
                    .unwrap();
            });
        }
    });
    let p = HttpPeer::new(&format!("unix:{}", path.display()), false, String::new()).unwrap();
    let (body, _) = get(&c, &p, "/").await;
    assert_eq!(body, "unix");
    let _ = std::fs::remove_file(&path);
}

#[cfg(any(feature = "openssl", feature = "boringssl"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn total_timeout_covers_the_tls_handshake_and_fast_open_connects() {
    // A listener that accepts and then says nothing: TCP connects, the TLS
    // handshake never finishes.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    let c = Connector::new(None);
    let mut p = HttpPeer::new(&format!("127.0.0.1:{port}"), true, "silent.test".into()).unwrap();
    p.options.total_connection_timeout = Some(Duration::from_millis(200));
    let e = c.get_http_session(&p).await.err().unwrap();
    assert!(
        matches!(
            e.etype(),
            ErrorType::ConnectTimedout | ErrorType::TLSHandshakeTimedout
        ),
        "{e}"
    );

    // TCP Fast Open on the client side: the connection works as usual.
    let n = nginx("tfo");
    let mut p = peer(&n);
    p.options.tcp_fast_open = true;
    let (body, _) = get(&c, &p, "/addr").await;
    assert_eq!(body, "127.0.0.1\n");
}
