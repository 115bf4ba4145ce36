//! Upstream connectors and the connection pool against a real nginx: reuse
//! proven by nginx's own connection counter, remote close and idle timeout
//! noticed while idle, connect errors told apart, bind address, TLS.

use std::time::Duration;

use pingora_core::connectors::http::{ClientSession, Connector};
use pingora_core::connectors::ConnectorOptions;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::ErrorType;
use pingora_http::RequestHeader;

mod common;
use common::{eventually, nginx_dir, start_nginx, up_test_cert, Nginx};

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
    s.write_request_header_eos(Box::new(req), true)
        .await
        .unwrap();
    s.read_response().await.unwrap();
    let mut body = Vec::new();
    while let Some(b) = s.read_body_bytes().await.unwrap() {
        body.extend_from_slice(&b);
    }
    c.release(s, peer);
    (String::from_utf8(body).unwrap(), reused)
}

fn peer(n: &Nginx) -> HttpPeer {
    HttpPeer::try_new(&format!("127.0.0.1:{}", n.port), false, String::new()).unwrap()
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
    let addr = format!("127.0.0.1:{}", pingora_test_support::closed_port());
    let p = HttpPeer::try_new(&addr, false, String::new()).unwrap();
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
    let mut p = HttpPeer::try_new(&full_addr.to_string(), false, String::new()).unwrap();
    p.options.connection_timeout = Some(Duration::from_millis(200));
    let e = c.get_http_session(&p).await.err().unwrap();
    assert_eq!(e.etype(), &ErrorType::ConnectTimedout, "{e}");

    // Connecting from a chosen source address.
    let mut p = peer(&n);
    p.options.bind_to = Some("127.0.0.2:0".parse().unwrap());
    let (body, _) = get(&c, &p, "/addr").await;
    assert_eq!(body, "127.0.0.2\n");
}

#[cfg(feature = "any_tls")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_upstreams_pool_and_verify() {
    let dir = nginx_dir("tls");
    let (cert, key, ca_file, _ca) = up_test_cert(&dir);
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
    let mut p =
        HttpPeer::try_new(&format!("127.0.0.1:{}", n.port), true, "up.test".into()).unwrap();
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
        user_timeout: Duration::ZERO,
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
    let p = HttpPeer::try_new(&format!("unix:{}", path.display()), false, String::new()).unwrap();
    let (body, _) = get(&c, &p, "/").await;
    assert_eq!(body, "unix");
    let _ = std::fs::remove_file(&path);
}

#[cfg(feature = "any_tls")]
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
    let mut p =
        HttpPeer::try_new(&format!("127.0.0.1:{port}"), true, "silent.test".into()).unwrap();
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

/// `getsockopt` of an integer option on a connection's socket.
fn sockopt_int(fd: std::os::fd::RawFd, level: libc::c_int, name: libc::c_int) -> libc::c_int {
    let mut v: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a live socket fd, and a c_int-sized buffer with its length.
    let r = unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            &mut v as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    };
    assert_eq!(r, 0, "getsockopt: {}", std::io::Error::last_os_error());
    v
}

/// TCP Fast Open on the connector is set on the upstream socket (read
/// back with getsockopt), and only when the peer asks for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_fast_open_is_set_on_the_socket() {
    let n = nginx("tfo-opt");
    let c = Connector::new(None);
    for tfo in [true, false] {
        let mut p = peer(&n);
        p.options.tcp_fast_open = tfo;
        let s = c.transport().new_stream(&p).await.unwrap();
        let fd = s.socket_digest().unwrap().raw_fd;
        assert_eq!(
            sockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_FASTOPEN_CONNECT),
            tfo as libc::c_int,
            "tcp_fast_open {tfo}"
        );
        // And through an HTTP session, the connection works.
        let (mut sess, _) = c.get_http_session(&p).await.unwrap();
        let ClientSession::H1(h1) = &sess else {
            panic!("HTTP/1 expected")
        };
        let fd = h1.stream().socket_digest().unwrap().raw_fd;
        assert_eq!(
            sockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_FASTOPEN_CONNECT),
            tfo as libc::c_int
        );
        let mut req = RequestHeader::build("GET", b"/addr", None).unwrap();
        req.insert_header("Host", "upstream.test").unwrap();
        sess.write_request_header_eos(Box::new(req), true)
            .await
            .unwrap();
        sess.read_response().await.unwrap();
        assert_eq!(sess.resp_header().unwrap().status, 200);
    }
}

/// A peer's `write_timeout`: an upstream that accepts but never reads,
/// and a request body far bigger than the socket buffers, ends in
/// `WriteTimedout` soon after the buffers fill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_timeout_to_an_upstream_that_never_reads() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    let c = Connector::new(None);
    let mut p = HttpPeer::try_new(&format!("127.0.0.1:{port}"), false, String::new()).unwrap();
    p.options.write_timeout = Some(Duration::from_millis(300));
    let (mut s, _) = c.get_http_session(&p).await.unwrap();
    let total: usize = 256 << 20;
    let mut req = RequestHeader::build("POST", b"/upload", None).unwrap();
    req.insert_header("Host", "upstream.test").unwrap();
    req.insert_header("Content-Length", total.to_string())
        .unwrap();
    s.write_request_header_eos(Box::new(req), false)
        .await
        .unwrap();
    let chunk = bytes::Bytes::from(vec![b'x'; 1 << 20]);
    let started = std::time::Instant::now();
    let mut sent = 0;
    let writes = async {
        loop {
            assert!(
                sent < total,
                "the whole body went to a peer that never reads"
            );
            match s.write_body(chunk.clone()).await {
                Ok(()) => sent += chunk.len(),
                Err(e) => break e,
            }
        }
    };
    // Without the write timeout the writes would block for good.
    let e = tokio::time::timeout(Duration::from_secs(10), writes)
        .await
        .expect("the write timed out within 10 s");
    assert_eq!(e.etype(), &ErrorType::WriteTimedout, "{e}");
    // Blocked for the timeout, not for long after.
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

/// `verify_hostname = false` alone: a certificate for another name is
/// accepted as long as its chain verifies (an unknown CA is still
/// refused); with it on, the wrong name is refused.
#[cfg(feature = "any_tls")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_hostname_off_still_verifies_the_chain() {
    use pingora_core::utils::certs::TestCa;
    let dir = nginx_dir("hostname");
    let (cert, key, ca_file, _ca) = up_test_cert(&dir);
    let other = TestCa::new("Other CA").unwrap();
    let (other_ca, _) = other.ca.write(&dir, "other").unwrap();
    let n = start_nginx(
        dir,
        &format!(
            r#"ssl_certificate {cert};
        ssl_certificate_key {key};
        location /name {{ return 200 "$ssl_server_name\n"; }}"#
        ),
    );
    let c = Connector::new(None);
    let mut p =
        HttpPeer::try_new(&format!("127.0.0.1:{}", n.port), true, "wrong.test".into()).unwrap();
    p.options.ca = Some(ca_file);
    let e = c.get_http_session(&p).await.err().unwrap();
    assert_eq!(e.etype(), &ErrorType::CertHostnameMismatch, "{e}");
    p.options.verify_hostname = false;
    let (body, _) = get(&c, &p, "/name").await;
    assert_eq!(body, "wrong.test\n");
    // The chain is still checked.
    p.options.ca = Some(other_ca);
    let e = c.get_http_session(&p).await.err().unwrap();
    assert_eq!(e.etype(), &ErrorType::CertUnknownCA, "{e}");
}

/// The conf file's `upstream_keepalive_pool_size` and `ca_file` reach
/// the connector built from it: a TLS upstream signed by that CA is
/// trusted with no CA on the peer, and of 4 connections released at once
/// only 2 stay idle (4 with the default size).
#[cfg(feature = "any_tls")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conf_file_pool_size_and_ca_file_reach_the_connector() {
    use pingora_core::server::ServerConf;
    let dir = nginx_dir("conf");
    let (cert, key, ca_file, _ca) = up_test_cert(&dir);
    let conf_path = dir.join("pingora.yaml");
    std::fs::write(
        &conf_path,
        format!("version: 1\nupstream_keepalive_pool_size: 2\nca_file: {ca_file}\n"),
    )
    .unwrap();
    let n = start_nginx(
        dir,
        &format!(
            r#"ssl_certificate {cert};
        ssl_certificate_key {key};
        keepalive_requests 100000;
        location /conn {{ return 200 "$connection\n"; }}"#
        ),
    );
    let conf = ServerConf::load_from_yaml(&conf_path).unwrap();
    let p = HttpPeer::try_new(&format!("127.0.0.1:{}", n.port), true, "up.test".into()).unwrap();
    assert!(p.options.ca.is_none());

    // Without the conf, the system CAs do not know ours.
    let e = Connector::new(None)
        .get_http_session(&p)
        .await
        .err()
        .unwrap();
    assert_eq!(e.etype(), &ErrorType::CertUnknownCA, "{e}");

    for (c, idle) in [
        (
            Connector::new(Some(ConnectorOptions::from_server_conf(&conf))),
            2,
        ),
        (
            Connector::new(Some(ConnectorOptions::from_server_conf(
                &ServerConf::default(),
            ))),
            4,
        ),
    ] {
        let mut sessions = Vec::new();
        for _ in 0..4 {
            let (mut s, reused) = match c.get_http_session(&p).await {
                Ok(s) => s,
                // The default conf has no CA file: trust ours per peer.
                Err(e) if e.etype() == &ErrorType::CertUnknownCA => {
                    let mut p = p.clone();
                    p.options.ca = Some(ca_file.clone());
                    c.get_http_session(&p).await.unwrap()
                }
                Err(e) => panic!("{e}"),
            };
            assert!(!reused);
            let mut req = RequestHeader::build("GET", b"/conn", None).unwrap();
            req.insert_header("Host", "up.test").unwrap();
            s.write_request_header_eos(Box::new(req), true)
                .await
                .unwrap();
            s.read_response().await.unwrap();
            while s.read_body_bytes().await.unwrap().is_some() {}
            sessions.push(s);
        }
        for s in sessions {
            c.release(s, &p);
        }
        assert_eq!(c.transport().pool_stats().idle, idle);
    }
}

/// An HTTP CONNECT proxy on a Unix socket: answers `status` to each
/// CONNECT, then (for a 2xx) relays the bytes both ways to the target it
/// was asked for. Sends each request header it got to `seen`.
async fn connect_proxy(
    path: &std::path::Path,
    status: u16,
    seen: tokio::sync::mpsc::UnboundedSender<String>,
) -> tokio::task::JoinHandle<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path).unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if s.read(&mut b).await.unwrap() == 0 {
                        return;
                    }
                    head.push(b[0]);
                }
                let head = String::from_utf8(head).unwrap();
                let target = head.split(' ').nth(1).unwrap().to_string();
                seen.send(head).unwrap();
                s.write_all(format!("HTTP/1.1 {status} Whatever\r\n\r\n").as_bytes())
                    .await
                    .unwrap();
                if status == 200 {
                    let mut up = tokio::net::TcpStream::connect(target).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut s, &mut up).await;
                }
            });
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_behind_a_connect_proxy() {
    let n = nginx("connect-proxy");
    let sock = n.dir.join("proxy.sock");
    let (tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let proxy = connect_proxy(&sock, 200, tx).await;
    let mut headers = std::collections::BTreeMap::new();
    headers.insert("X-Tunnel-Token".to_string(), b"t1".to_vec());
    let p = HttpPeer::new_proxy(
        sock.to_str().unwrap(),
        "127.0.0.1".parse().unwrap(),
        n.port,
        false,
        "",
        headers,
    );
    let c = Connector::new(None);
    let (first, reused) = get(&c, &p, "/conn").await;
    assert!(!reused);
    let head = seen.recv().await.unwrap();
    assert!(
        head.starts_with(&format!(
            "CONNECT 127.0.0.1:{0} HTTP/1.1\r\nHost: 127.0.0.1:{0}\r\n",
            n.port
        )),
        "{head}"
    );
    assert!(head.contains("X-Tunnel-Token: t1\r\n"), "{head}");
    // The tunnel is pooled like any connection...
    let (again, reused) = get(&c, &p, "/conn").await;
    assert!(reused);
    assert_eq!(again, first);
    // ...and never shared with the same address reached directly, nor
    // with another group.
    let (_, reused) = get(&c, &peer(&n), "/conn").await;
    assert!(!reused);
    let mut other = p.clone();
    other.group_key = 7;
    let (_, reused) = get(&c, &other, "/conn").await;
    assert!(!reused);
    assert!(seen.recv().await.is_some());
    proxy.abort();

    // A proxy that refuses: a clear error naming its answer.
    let (tx, _seen) = tokio::sync::mpsc::unbounded_channel();
    let refusing = connect_proxy(&sock, 407, tx).await;
    // (A new connector: the first one still holds the pooled tunnel.)
    let e = Connector::new(None)
        .get_http_session(&p)
        .await
        .expect_err("a refused CONNECT fails");
    assert_eq!(e.etype(), &ErrorType::ConnectProxyFailure, "{e}");
    assert!(e.to_string().contains("407"), "{e}");
    refusing.abort();
}

/// A virtual socket: one end of an in-memory pipe.
#[derive(Debug)]
struct Pipe(tokio::io::DuplexStream);

impl tokio::io::AsyncRead for Pipe {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Pipe {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl pingora_core::protocols::l4::virt::VirtualSocket for Pipe {
    fn set_socket_option(
        &self,
        _: pingora_core::protocols::l4::virt::VirtualSockOpt,
    ) -> std::io::Result<()> {
        Ok(())
    }
}

fn virtual_stream(end: tokio::io::DuplexStream) -> pingora_core::protocols::L4Stream {
    use pingora_core::protocols::l4::virt::VirtualSocketStream;
    pingora_core::protocols::L4Stream::from(VirtualSocketStream::new(Box::new(Pipe(end))))
}

/// Answers with the path it was asked for.
struct PathEcho;

#[async_trait::async_trait]
impl pingora_core::apps::http_app::ServeHttp for PathEcho {
    async fn response(
        &self,
        s: &mut pingora_core::protocols::http::ServerSession,
    ) -> http::Response<Vec<u8>> {
        http::Response::new(format!("in-process {}\n", s.req_header().uri.path()).into_bytes())
    }
}

/// A custom L4 connector to an HTTP server in this process, over a pipe
/// (no socket at all): each connect starts a server session on the other
/// end.
struct InProcess {
    app: std::sync::Arc<pingora_core::apps::http_app::HttpServer<PathEcho>>,
    connects: std::sync::atomic::AtomicUsize,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl std::fmt::Debug for InProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InProcess")
    }
}

#[async_trait::async_trait]
impl pingora_core::connectors::L4Connect for InProcess {
    async fn connect(
        &self,
        _addr: &pingora_core::protocols::SocketAddr,
    ) -> pingora_error::Result<pingora_core::protocols::L4Stream> {
        use pingora_core::apps::ServerApp;
        self.connects
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (near, far) = tokio::io::duplex(64 * 1024);
        let (app, rx) = (self.app.clone(), self.shutdown.clone());
        tokio::spawn(async move {
            let s: pingora_core::protocols::Stream = Box::new(virtual_stream(far));
            app.process_new(s, &rx).await;
        });
        Ok(virtual_stream(near))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_l4_connector_reaches_an_in_process_server() {
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let custom = std::sync::Arc::new(InProcess {
        app: std::sync::Arc::new(pingora_core::apps::http_app::HttpServer::new(PathEcho)),
        connects: Default::default(),
        shutdown: rx,
    });
    // An address nothing listens on: the connector never dials it.
    let mut p = HttpPeer::new("192.0.2.1:80", false, String::new());
    p.options.custom_l4 = Some(custom.clone());
    p.options.connection_timeout = Some(Duration::from_secs(2));
    let c = Connector::new(None);
    for path in ["/a", "/b"] {
        let (body, _reused) = get(&c, &p, path).await;
        assert_eq!(body, format!("in-process {path}\n"));
    }
    // Not pooled (a pipe's idleness cannot be checked): one connect each.
    assert_eq!(
        custom.connects.load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    assert_eq!(c.transport().pool_stats().idle, 0);
    // The digest of a virtual socket: no descriptor, no addresses.
    let (s, _) = c.get_http_session(&p).await.unwrap();
    assert_eq!(s.fd(), -1);
    assert!(s.server_addr().is_none());
}
