//! What the proxy tests share: an upstream that reports what it saw, a
//! proxy that records its phases, and curl.
// Test helpers: `pub` for the test files, which are crates of their own;
// each uses some of them.
#![allow(dead_code, unreachable_pub, unused_imports)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::apps::http_app::{HttpServer, HttpServerApp};
use pingora_core::apps::ServerApp;
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::{L4Stream, Stream};
use pingora_core::server::ShutdownWatch;
use pingora_core::upstreams::peer::{HttpPeer, ALPN};
use pingora_error::{Error, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, HttpProxy, ProxyHttp, ProxyOptions, Session};

/// Serve `app` on a port from the OS; each accepted connection is counted.
pub async fn serve<A: ServerApp>(app: A, accepted: Arc<AtomicUsize>) -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let app = Arc::new(app);
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _keep = tx;
        while let Ok((s, _)) = l.accept().await {
            accepted.fetch_add(1, Ordering::Relaxed);
            let (app, rx) = (app.clone(), rx.clone());
            tokio::spawn(async move {
                let s: Stream = Box::new(L4Stream::from_tcp(s));
                app.process_new(s, &rx).await;
            });
        }
    });
    port
}

/// The test upstream (HTTP/1 and h2c): `/echo` sends the body back with
/// what it saw in `x-seen-*` headers and a trailer; `/slow` never answers;
/// `/status/N` answers N; `/count` answers the body's length; `/bytes/N`
/// sends N bytes.
pub struct Upstream;

const WATCHED: [&str; 8] = [
    "connection",
    "keep-alive",
    "x-secret",
    "proxy-authorization",
    "upgrade",
    "transfer-encoding",
    "te",
    "expect",
];

impl HttpServerApp for Upstream {
    async fn process_request(
        self: &Arc<Self>,
        s: &mut ServerSession,
        _: &ShutdownWatch,
    ) -> Result<()> {
        let req = s.req_header().clone();
        let path = req.uri.path().to_string();
        if path == "/slow" {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        if let Some(code) = path.strip_prefix("/status/") {
            let code: u16 = code.parse().unwrap_or(500);
            let mut resp = ResponseHeader::build(code, None)?;
            resp.insert_header("Content-Length", "0")?;
            resp.insert_header("x-upstream-port", s.server_addr().unwrap().to_string())?;
            s.write_response_header(Box::new(resp)).await?;
            return s.finish_body().await;
        }
        if let Some(n) = path.strip_prefix("/bytes/") {
            let mut left: u64 = n.parse().unwrap_or(0);
            let mut resp = ResponseHeader::build(200, None)?;
            resp.insert_header("Content-Length", left.to_string())?;
            s.write_response_header(Box::new(resp)).await?;
            let block = Bytes::from(vec![b'x'; 64 * 1024]);
            while left > 0 {
                let n = left.min(block.len() as u64) as usize;
                s.write_response_body(block.slice(..n)).await?;
                left -= n as u64;
            }
            return s.finish_body().await;
        }
        let mut body = Vec::new();
        let mut count = 0u64;
        while let Some(b) = s.read_request_body().await? {
            count += b.len() as u64;
            if path != "/count" {
                body.extend_from_slice(&b);
            }
        }
        if path == "/count" {
            body = count.to_string().into_bytes();
        }
        let mut resp = ResponseHeader::build(200, None)?;
        let host = req
            .headers
            .get("host")
            .map(|h| h.to_str().unwrap().to_string())
            .or_else(|| req.uri.authority().map(|a| a.to_string()))
            .unwrap_or_default();
        resp.insert_header("x-seen-host", host)?;
        let hop: Vec<&str> = WATCHED
            .iter()
            .copied()
            .filter(|h| req.headers.contains_key(*h))
            .collect();
        resp.insert_header("x-seen-hop", hop.join(","))?;
        resp.insert_header("x-seen-version", format!("{:?}", req.version))?;
        let names: Vec<&str> = req.headers.keys().map(|k| k.as_str()).collect();
        resp.insert_header("x-seen-names", names.join(","))?;
        if let Some(x) = req.headers.get("x-forwarded-for") {
            resp.insert_header("x-seen-xff", x.clone())?;
        }
        if let Some(x) = req.headers.get("traceparent") {
            resp.insert_header("x-seen-traceparent", x.clone())?;
        }
        if let Some(x) = req.headers.get("via") {
            resp.insert_header("x-seen-via", x.clone())?;
        }
        if let Some(x) = req.headers.get("forwarded") {
            resp.insert_header("x-seen-forwarded", x.clone())?;
        }
        // Hop-by-hop fields in the response, for the proxy to drop.
        resp.insert_header("Keep-Alive", "timeout=5")?;
        resp.insert_header("Proxy-Authenticate", "Basic")?;
        s.write_response_header(Box::new(resp)).await?;
        s.write_response_body(Bytes::from(body)).await?;
        let mut t = http::HeaderMap::new();
        t.insert("x-up-trailer", "yes".parse().unwrap());
        s.set_response_trailers(t);
        s.finish_body().await
    }
}

/// The test upstream on a port from the OS (HTTP/1 and h2c); returns the
/// port and its count of accepted connections.
pub async fn upstream() -> (u16, Arc<AtomicUsize>) {
    let accepted = Arc::new(AtomicUsize::new(0));
    // It reports what it received, underscores and all.
    let opts = pingora_core::protocols::http::v1::H1Options {
        underscores_in_headers: true,
        ..Default::default()
    };
    let mut app = HttpServer::with_options(Upstream, opts);
    app.set_h2c(true);
    (serve(app, accepted.clone()).await, accepted)
}

// A port where nothing listens (connections are refused).
pub use pingora_test_support::closed_port;

/// A proxy that goes to `peers[retries]` (the last one once they run out)
/// and writes down each phase it runs.
pub struct Recorder {
    pub peers: Vec<HttpPeer>,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    pub fn note(&self, s: impl Into<String>) {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(s.into());
    }
}

#[async_trait]
impl ProxyHttp for Recorder {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn early_request_filter(&self, _s: &mut Session, _: &mut ()) -> Result<()> {
        self.note("early_request_filter");
        Ok(())
    }
    async fn request_filter(&self, s: &mut Session, _: &mut ()) -> Result<bool> {
        self.note("request_filter");
        if s.req_header().uri.path() == "/local" {
            let mut resp = ResponseHeader::build(200, None)?;
            resp.insert_header("Content-Length", "6")?;
            s.write_response_header(Box::new(resp), false).await?;
            let body = Bytes::from_static(b"local\n");
            s.write_response_body(Some(body), true).await?;
            return Ok(true);
        }
        if s.req_header().uri.path() == "/route-on-body" {
            let body = s.read_body_ahead(1024).await?;
            self.note(format!("body ahead: {}", String::from_utf8_lossy(&body)));
        }
        Ok(false)
    }
    async fn request_body_filter(
        &self,
        _s: &mut Session,
        body: &mut Option<Bytes>,
        end: bool,
        _: &mut (),
    ) -> Result<()> {
        self.note("request_body_filter");
        if end {
            self.note("request body end");
        }
        if let Some(b) = body {
            if b.as_ref() == b"please-rewrite" {
                *body = Some(Bytes::from_static(b"rewritten"));
            }
        }
        Ok(())
    }
    async fn proxy_upstream_filter(&self, s: &mut Session, _: &mut ()) -> Result<bool> {
        self.note("proxy_upstream_filter");
        Ok(s.req_header().uri.path() != "/not-upstream")
    }
    async fn upstream_peer(&self, s: &mut Session, _: &mut ()) -> Result<Box<HttpPeer>> {
        self.note("upstream_peer");
        if let Some(e) = s.previous_error() {
            self.note(format!("previous error: {:?}", e.etype()));
        }
        let i = s.retries().min(self.peers.len() - 1);
        Ok(Box::new(self.peers[i].clone()))
    }
    async fn connected_to_upstream(
        &self,
        _s: &mut Session,
        reused: bool,
        peer: &HttpPeer,
        fd: std::os::fd::RawFd,
        digest: Option<&pingora_core::protocols::Digest>,
        _: &mut (),
    ) -> Result<()> {
        // The digest is the upstream connection's: its socket, at the
        // peer's address.
        let socket = digest
            .and_then(|d| d.socket_digest.as_ref())
            .expect("a socket digest");
        assert_eq!(socket.raw_fd, fd);
        assert_eq!(socket.peer_addr.as_ref(), Some(peer.address()));
        assert!(!digest.unwrap().timing_digest.is_empty());
        self.note("connected_to_upstream");
        self.note(format!("reused: {reused}"));
        Ok(())
    }
    async fn upstream_request_filter(
        &self,
        s: &mut Session,
        req: &mut RequestHeader,
        _: &mut (),
    ) -> Result<()> {
        self.note("upstream_request_filter");
        if s.req_header().uri.path() == "/route-on-body" {
            // request_body_filter may change the body's length.
            req.remove_header("Content-Length");
        }
        pingora_proxy::forwarded::append_x_forwarded_for(s, req)?;
        pingora_proxy::forwarded::append_forwarded(s, req)?;
        pingora_proxy::forwarded::append_via(s, req, "test-proxy")
    }
    fn error_while_proxy(
        &self,
        _peer: &HttpPeer,
        s: &mut Session,
        mut e: Box<Error>,
        _: &mut (),
        _reused: bool,
    ) -> Box<Error> {
        self.note(format!("error_while_proxy: {:?}", e.etype()));
        if s.req_header().uri.path() == "/retry-me" {
            e.set_retry(true);
        }
        e
    }
    fn fail_to_connect(
        &self,
        s: &mut Session,
        _peer: &HttpPeer,
        _: &mut (),
        mut e: Box<Error>,
    ) -> Box<Error> {
        self.note(format!("fail_to_connect: {:?}", e.etype()));
        if s.req_header().uri.path() == "/no-retry" {
            e.set_retry(false);
        }
        e
    }
    async fn fail_to_proxy(&self, s: &mut Session, e: &Error, _: &mut ()) -> FailToProxy {
        self.note(format!("fail_to_proxy: {:?}", e.etype()));
        // What the default does, with a body of our own for one path.
        let code = pingora_proxy::error_status(e);
        if s.response_written().is_none() {
            if s.req_header().uri.path() == "/no-retry" {
                let mut resp = ResponseHeader::build(code, None).unwrap();
                resp.insert_header("Content-Length", "11").unwrap();
                let _ = s.write_response_header(Box::new(resp), false).await;
                let body = Bytes::from_static(b"no retries\n");
                let _ = s.write_response_body(Some(body), true).await;
            } else if s.req_header().uri.path() == "/keep-after-error" {
                // Pingora's form: the body given, and the connection kept.
                let body = Bytes::from_static(b"kept\n");
                let _ = s.respond_error_with_body(code, body).await;
                return FailToProxy {
                    error_code: code,
                    can_reuse_downstream: true,
                };
            } else if s.is_http2() && s.is_grpc() {
                let _ = s.respond_grpc_error(code).await;
            } else {
                let _ = s.respond_error_with_text(code).await;
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }
    fn suppress_error_log(&self, _s: &Session, _: &(), e: &Error) -> bool {
        self.note(format!("suppress_error_log: {:?}", e.etype()));
        false
    }
    fn request_summary(&self, s: &Session, _: &()) -> String {
        self.note("request_summary");
        format!("{} {}", s.req_header().method, s.req_header().uri)
    }
    async fn upstream_response_filter(
        &self,
        _s: &mut Session,
        _r: &mut ResponseHeader,
        _: &mut (),
    ) -> Result<()> {
        self.note("upstream_response_filter");
        Ok(())
    }
    async fn response_filter(
        &self,
        _s: &mut Session,
        r: &mut ResponseHeader,
        _: &mut (),
    ) -> Result<()> {
        self.note("response_filter");
        r.insert_header("x-proxied", "yes")
    }
    fn upstream_response_body_filter(
        &self,
        _s: &mut Session,
        _b: &mut Option<Bytes>,
        _end: bool,
        _: &mut (),
    ) -> Result<Option<Duration>> {
        self.note("upstream_response_body_filter");
        Ok(None)
    }
    fn response_body_filter(
        &self,
        s: &mut Session,
        b: &mut Option<Bytes>,
        _end: bool,
        _: &mut (),
    ) -> Result<Option<Duration>> {
        self.note("response_body_filter");
        // Size-changing filters, chosen by the query: `double` every piece,
        // `shrink` to one byte, or `late` (double every piece but the
        // first, after the Content-Length went out).
        let query = s.req_header().uri.query().unwrap_or("").to_string();
        if let Some(piece) = b.as_mut().filter(|p| !p.is_empty()) {
            let first = s.body_bytes_sent() == 0;
            match query.as_str() {
                "double" => *piece = [&piece[..], &piece[..]].concat().into(),
                "shrink" => *piece = piece.slice(..1),
                "late" if !first => *piece = [&piece[..], &piece[..]].concat().into(),
                _ => {}
            }
        }
        // `delay`: each piece held back 300 ms (a rate limit).
        Ok((query == "delay").then(|| Duration::from_millis(300)))
    }
    fn upstream_response_trailer_filter(
        &self,
        _s: &mut Session,
        _t: &mut http::HeaderMap,
        _: &mut (),
    ) -> Result<()> {
        self.note("upstream_response_trailer_filter");
        Ok(())
    }
    async fn response_trailer_filter(
        &self,
        s: &mut Session,
        t: &mut http::HeaderMap,
        _: &mut (),
    ) -> Result<Option<Bytes>> {
        self.note("response_trailer_filter");
        if let Some(v) = t.get("x-up-trailer") {
            self.note(format!("trailer: {}", v.to_str().unwrap()));
        }
        // `/trailer-body`: the trailers become the body's last piece.
        if s.req_header().uri.path() == "/trailer-body" {
            let v = t
                .get("x-up-trailer")
                .map_or("none", |v| v.to_str().unwrap());
            return Ok(Some(Bytes::from(format!("|trailer {v}"))));
        }
        Ok(None)
    }
    async fn logging(&self, _s: &mut Session, e: Option<&Error>, _: &mut ()) {
        self.note("logging");
        if let Some(e) = e {
            // The whole error on stderr: shown when a test fails.
            eprintln!("proxy logged an error: {e}");
            self.note(format!("logged error: {:?}", e.etype()));
        }
    }
}

/// A proxy on a port from the OS, accepting h2c as well as HTTP/1.
pub async fn proxy(peers: Vec<HttpPeer>, options: ProxyOptions) -> (u16, Arc<Mutex<Vec<String>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let rec = Recorder {
        peers,
        log: log.clone(),
    };
    let mut app = HttpServer::new(HttpProxy::with_options(rec, None, options));
    app.set_h2c(true);
    (serve(app, Arc::default()).await, log)
}

/// As [`proxy`], with these HTTP/1 (and request) options downstream.
pub async fn proxy_with(
    peers: Vec<HttpPeer>,
    options: ProxyOptions,
    h1: pingora_core::protocols::http::v1::H1Options,
) -> (u16, Arc<Mutex<Vec<String>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let rec = Recorder {
        peers,
        log: log.clone(),
    };
    let mut app = HttpServer::with_options(HttpProxy::with_options(rec, None, options), h1);
    app.set_h2c(true);
    (serve(app, Arc::default()).await, log)
}

/// A peer on loopback; HTTP/2 (prior knowledge) when `h2`.
pub fn peer(port: u16, h2: bool) -> HttpPeer {
    let mut p = HttpPeer::try_new(&format!("127.0.0.1:{port}"), false, String::new()).unwrap();
    if h2 {
        p.options.alpn = ALPN::H2;
        p.options.max_h2_streams = 100;
    }
    p
}

/// What curl got: status, header fields and trailer fields (names in
/// lower case), body.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub trailers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn fields(block: &str) -> Vec<(String, String)> {
    block
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect()
}

/// Run curl with `args`; the header blocks (and trailers) come from `-D -`,
/// the body from a file.
pub async fn curl(args: &[&str]) -> Reply {
    static N: AtomicUsize = AtomicUsize::new(0);
    let file = std::env::temp_dir().join(format!(
        "pingora-proxy-curl-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "20", "-D", "-", "-o"])
        .arg(&file)
        .args(args)
        .output()
        .await
        .expect("curl");
    let body = std::fs::read(&file).unwrap_or_default();
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "curl {:?} failed: {}",
        &args[..args.len().min(6)],
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // Interim responses (100 Continue) first, then the final header, then
    // any trailers.
    let mut blocks = text.split("\r\n\r\n").filter(|b| !b.trim().is_empty());
    loop {
        let head = blocks.next().expect("a final response header");
        let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        if (100..200).contains(&status) {
            continue;
        }
        let headers = fields(head.split_once("\r\n").map_or("", |x| x.1));
        let trailers = blocks.next().map(fields).unwrap_or_default();
        return Reply {
            status,
            headers,
            trailers,
            body: String::from_utf8_lossy(&body).into_owned(),
        };
    }
}

/// Consecutive repeats folded into one, for comparing phase orders.
pub fn folded(log: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for l in log {
        if out.last() != Some(l) {
            out.push(l.clone());
        }
    }
    out
}

/// An upstream that reads a request header and 20 KB of body (or all
/// there is), then hangs up without answering.
pub async fn hang_up_upstream() -> u16 {
    use tokio::io::AsyncReadExt;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let mut buf = vec![0u8; 65536];
            let mut got = 0;
            while got < 20_000 {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n,
                }
            }
        }
    });
    port
}

/// The phase log once `n` requests have run their `logging` phase (which
/// comes after the client already has its response), waiting up to 10 s.
pub async fn logged(log: &Arc<Mutex<Vec<String>>>, n: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = log.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if now.iter().filter(|l| *l == "logging").count() >= n {
            return now;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {now:#?} after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The Content-Length of an HTTP/1 header block given as text, if it has
/// one.
pub fn content_length(head: &str) -> Option<usize> {
    head.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("content-length:")
            .map(|v| v.trim().parse().unwrap())
    })
}
