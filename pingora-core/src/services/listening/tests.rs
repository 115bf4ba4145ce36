//! Tests of `listening`.

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Panics when the client sends "panic", says its local address on
/// "who", echoes otherwise.
struct Fragile;

#[async_trait]
impl ServerApp for Fragile {
    async fn process_new(self: &Arc<Self>, mut io: Stream, _s: &ShutdownWatch) -> Option<Stream> {
        // The digest describes the accepted socket.
        let d = io.socket_digest().expect("L4 stream has a digest");
        // A real, open socket fd.
        // SAFETY: the fd of the stream this test holds, open for the
        // borrow's whole use.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(d.raw_fd) };
        assert!(socket2::SockRef::from(&fd).local_addr().is_ok());
        let local = d.local_addr.clone().expect("local address");
        let peer = d.peer_addr.clone().expect("peer address");
        assert!(d.accepted_at <= std::time::SystemTime::now());
        let mut buf = [0u8; 64];
        let n = io.read(&mut buf).await.ok()?;
        if &buf[..n] == b"who" || &buf[..n] == b"both" {
            let reply = if &buf[..n] == b"who" {
                format!("{local}")
            } else {
                format!("{local} {peer}")
            };
            io.write_all(reply.as_bytes()).await.ok()?;
            return Some(io);
        }
        if &buf[..n] == b"panic" {
            panic!("the app blew up");
        }
        io.write_all(&buf[..n]).await.ok()?;
        // Hand the connection back: the service calls us again.
        Some(io)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_in_one_connection_does_not_stop_the_service() {
    let mut svc = Service::with_listeners("fragile".into(), Listeners::tcp("127.0.0.1:0"), Fragile);
    svc.bind(&ListenFds::new()).unwrap();
    let Some(crate::protocols::SocketAddr::Inet(addr)) = svc.bound[0].local_addr() else {
        panic!("no address")
    };
    let (tx, task) = crate::services::start_for_test(svc, 1).await;

    // This connection's task panics: the connection is closed.
    let mut bad = tokio::net::TcpStream::connect(addr).await.unwrap();
    bad.write_all(b"panic").await.unwrap();
    let mut buf = Vec::new();
    assert_eq!(bad.read_to_end(&mut buf).await.unwrap_or(0), 0);

    // The service goes on, and keep-alive (app returns the stream) works.
    let mut good = tokio::net::TcpStream::connect(addr).await.unwrap();
    for msg in [&b"one"[..], b"two"] {
        good.write_all(msg).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        good.read_exact(&mut back).await.unwrap();
        assert_eq!(back, msg);
    }
    good.write_all(b"who").await.unwrap();
    let mut back = vec![0u8; addr.to_string().len()];
    good.read_exact(&mut back).await.unwrap();
    assert_eq!(back, addr.to_string().as_bytes());
    drop(good);

    // Shutdown: accepting stops, the service returns once drained.
    tx.send_replace(true);
    let svc = task.await.unwrap();
    assert_eq!(svc.active_connections(), 0);
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

/// The digest's addresses are the connection's own, whether the
/// listener's address is specific (taken from the listener) or a
/// wildcard (asked of the socket); the peer's is what accept returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_addresses_on_specific_and_wildcard_listeners() {
    for bind in ["127.0.0.1:0", "0.0.0.0:0"] {
        let mut svc = Service::with_listeners("who".into(), Listeners::tcp(bind), Fragile);
        svc.bind(&ListenFds::new()).unwrap();
        let Some(crate::protocols::SocketAddr::Inet(addr)) = svc.bound[0].local_addr() else {
            panic!("no address")
        };
        let (tx, task) = crate::services::start_for_test(svc, 1).await;
        let mut c = tokio::net::TcpStream::connect(("127.0.0.1", addr.port()))
            .await
            .unwrap();
        c.write_all(b"both").await.unwrap();
        let expect = format!("{} {}", c.peer_addr().unwrap(), c.local_addr().unwrap());
        let mut back = vec![0u8; expect.len()];
        c.read_exact(&mut back).await.unwrap();
        assert_eq!(String::from_utf8_lossy(&back), expect, "listener on {bind}");
        drop(c);
        tx.send_replace(true);
        task.await.unwrap();
    }
}
/// h2c is chosen per listener: two plain listeners on one service,
/// only the one that enables it taking HTTP/2 with prior knowledge
/// (checked with curl); the app's own setting is the default for the
/// listeners that say nothing, and a listener can turn it off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_per_listener() {
    use crate::apps::http_app::{HttpServer, ServeHttp};
    use crate::protocols::http::ServerSession;

    struct Hello;
    #[async_trait]
    impl ServeHttp for Hello {
        async fn response(&self, _s: &mut ServerSession) -> http::Response<Vec<u8>> {
            http::Response::new(b"hello".to_vec())
        }
    }

    /// curl's exit status and the HTTP version it used (`2`, `1.1`).
    async fn curl(addr: std::net::SocketAddr, flag: &'static str) -> (bool, String) {
        let url = format!("http://{addr}/");
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new("curl")
                .args(["-sS", "--max-time", "10", flag, "-w", "\n%{http_version}"])
                .arg(&url)
                .output()
                .expect("curl is installed")
        })
        .await
        .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let ok = out.status.success() && text.starts_with("hello");
        (ok, text.rsplit('\n').next().unwrap_or("").to_string())
    }

    let (a, b) = ("127.0.0.1:0", "127.0.0.2:0");
    // (app default, listener a's choice, listener b's choice) and
    // whether each then takes h2c.
    let cases = [
        (false, Some(true), None, true, false),
        (true, None, Some(false), true, false),
        (false, None, None, false, false),
    ];
    for (app_h2c, on_a, on_b, want_a, want_b) in cases {
        let mut http = HttpServer::new(Hello);
        http.set_h2c(app_h2c);
        let mut listeners = Listeners::tcp(a);
        listeners.add_tcp(b);
        let mut svc = Service::with_listeners("h2c".into(), listeners, http);
        if let Some(on) = on_a {
            svc.set_h2c(a, on).unwrap();
        }
        if let Some(on) = on_b {
            svc.set_h2c(b, on).unwrap();
        }
        assert!(svc.set_h2c("127.0.0.3:0", true).is_err());
        svc.bind(&ListenFds::new()).unwrap();
        let addr = |i: usize| match svc.bound[i].local_addr() {
            Some(crate::protocols::SocketAddr::Inet(a)) => a,
            _ => panic!("no address"),
        };
        let (addr_a, addr_b) = (addr(0), addr(1));
        let (tx, task) = crate::services::start_for_test(svc, 1).await;
        for (addr, want) in [(addr_a, want_a), (addr_b, want_b)] {
            let case = format!("app {app_h2c}, {addr}");
            let (ok, version) = curl(addr, "--http2-prior-knowledge").await;
            assert_eq!(ok && version == "2", want, "{case}: {ok} {version}");
            // HTTP/1 is served either way.
            let (ok, version) = curl(addr, "--http1.1").await;
            assert!(ok && version == "1.1", "{case}: {ok} {version}");
        }
        tx.send_replace(true);
        task.await.unwrap();
    }
}
