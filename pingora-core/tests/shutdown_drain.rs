//! A graceful shutdown that begins while a keep-alive connection is between
//! requests: a request already on its way is served (with `Connection:
//! close`), and a quiet connection closes after the drain time, never
//! under a request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::apps::http_app::{HttpServer, ServeHttp};
use pingora_core::apps::ServerApp;
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::L4Stream;
use pingora_test_support::eventually;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Hello {
    /// Set once `/slow` is being served.
    slow_started: Arc<AtomicBool>,
    /// The shutdown switch, which `/slow` waits for.
    shutdown: tokio::sync::watch::Receiver<bool>,
}

#[async_trait]
impl ServeHttp for Hello {
    async fn response(&self, s: &mut ServerSession) -> http::Response<Vec<u8>> {
        // `/slow` is answered only once a shutdown began: the shutdown
        // begins while it is served, however slow the machine.
        if s.req_header().uri.path() == "/slow" {
            self.slow_started.store(true, Ordering::SeqCst);
            let mut shutdown = self.shutdown.clone();
            let _ = shutdown.wait_for(|on| *on).await;
        }
        http::Response::new(b"hi".to_vec())
    }
}

/// Our HTTP server on a port from the OS, every connection watching the
/// returned shutdown switch; the flag says when `/slow` is being served.
async fn serve(drain: Duration) -> (u16, tokio::sync::watch::Sender<bool>, Arc<AtomicBool>) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let slow_started = Arc::new(AtomicBool::new(false));
    let mut http = HttpServer::new(Hello {
        slow_started: slow_started.clone(),
        shutdown: rx.clone(),
    });
    http.set_shutdown_drain(drain);
    let app = Arc::new(http);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let (app, rx) = (app.clone(), rx.clone());
            tokio::spawn(async move {
                app.process_new(Box::new(L4Stream::from_tcp(s)), &rx).await;
            });
        }
    });
    (port, tx, slow_started)
}

/// Send a GET and read its whole response (2-byte body); the response
/// header in lower case, or `None` if the connection was closed instead.
async fn get(c: &mut TcpStream) -> Option<String> {
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            if got.len() >= end + 4 + 2 {
                return Some(String::from_utf8_lossy(&got[..end]).to_lowercase());
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .expect("an answer or a close within 5 s")
            .ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_racing_a_graceful_shutdown_is_served_then_the_connection_closes() {
    // A drain far longer than the moment below: a busy machine that
    // stretches the moment still gets the request in within the drain.
    let (port, shutdown, _) = serve(Duration::from_secs(5)).await;
    let mut c = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let first = get(&mut c).await.expect("the first answer");
    assert!(!first.contains("connection: close"), "{first}");
    // The shutdown begins while the connection is idle; the client's next
    // request, sent a moment later (the server most likely saw the switch
    // by then: nothing outside shows when it has), is still answered, and
    // told to close.
    shutdown.send_replace(true);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = get(&mut c)
        .await
        .expect("the request sent just after the shutdown began is answered");
    assert!(second.starts_with("http/1.1 200"), "{second}");
    assert!(second.contains("connection: close"), "{second}");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut rest)).await;
    assert!(rest.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_connection_closes_after_the_drain_time() {
    let (port, shutdown, _) = serve(Duration::from_millis(300)).await;
    let mut c = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    assert!(get(&mut c).await.is_some());
    let start = Instant::now();
    shutdown.send_replace(true);
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut rest))
        .await
        .expect("closed within 5 s")
        .unwrap();
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "closed after {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_progress_when_the_shutdown_begins_gets_connection_close() {
    let (port, tx, slow_started) = serve(Duration::from_secs(1)).await;
    let mut c = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    // A first request on the connection, so that it is a keep-alive one.
    let first = get(&mut c).await.expect("served");
    assert!(!first.contains("connection: close"), "{first}");
    c.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // The shutdown begins while `/slow` is being served (it waits for it).
    eventually(Duration::from_secs(10), "`/slow` to be served", || {
        slow_started.load(Ordering::SeqCst)
    })
    .await;
    tx.send_replace(true);
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert!(n > 0, "closed without an answer");
        got.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&got).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
}
