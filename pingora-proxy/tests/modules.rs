//! HTTP modules in the proxy's pipeline, with curl as the client over
//! HTTP/1.1 and h2c: modules added by `init_downstream_modules` see the
//! request header and body and the response header, body, trailers and
//! end, in their order; a phase finds a module by type and changes its
//! state for one request.

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::apps::http_app::HttpServer;
use pingora_core::modules::http::{HttpModule, HttpModuleBuilder, HttpModules, Module};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{HttpProxy, ProxyHttp, Session};

mod common;
use common::*;

/// Upper-cases the response body unless told not to; adds a line at the
/// end; marks the request, the response and the trailers.
struct Upper {
    enabled: bool,
}

#[async_trait]
impl HttpModule for Upper {
    async fn request_header_filter(&mut self, req: &mut RequestHeader) -> Result<()> {
        req.insert_header("x-mod-req", "upper")
    }
    async fn request_body_filter(&mut self, body: &mut Option<Bytes>, _eos: bool) -> Result<()> {
        // The upstream echoes the body: what it gets is what we sent it.
        // (Same length: the request's Content-Length stands.)
        if let Some(b) = body {
            *b = Bytes::from(
                b.iter()
                    .map(|&c| if c == b'a' { b'x' } else { c })
                    .collect::<Vec<u8>>(),
            );
        }
        Ok(())
    }
    async fn response_header_filter(
        &mut self,
        resp: &mut ResponseHeader,
        _eos: bool,
    ) -> Result<()> {
        // The body grows at the end: no Content-Length.
        resp.remove_header("content-length");
        resp.append_header("x-mod-order", "upper")?;
        Ok(())
    }
    fn response_body_filter(&mut self, body: &mut Option<Bytes>, _eos: bool) -> Result<()> {
        if let (true, Some(b)) = (self.enabled, body.as_mut()) {
            *b = Bytes::from(b.to_ascii_uppercase());
        }
        Ok(())
    }
    fn response_trailer_filter(
        &mut self,
        trailers: &mut Option<Box<http::HeaderMap>>,
    ) -> Result<Option<Bytes>> {
        if let Some(t) = trailers {
            t.insert("x-mod-trailer", "yes".parse().unwrap());
        }
        Ok(None)
    }
    fn response_done_filter(&mut self) -> Result<Option<Bytes>> {
        Ok(Some(Bytes::from_static(b"<done>")))
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

struct UpperBuilder;

impl HttpModuleBuilder for UpperBuilder {
    fn order(&self) -> i16 {
        10
    }
    fn init(&self) -> Module {
        Box::new(Upper { enabled: true })
    }
}

/// Runs after `Upper` (lower order); marks the response.
struct Second;

#[async_trait]
impl HttpModule for Second {
    async fn response_header_filter(
        &mut self,
        resp: &mut ResponseHeader,
        _eos: bool,
    ) -> Result<()> {
        resp.append_header("x-mod-order", "second")?;
        Ok(())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

struct SecondBuilder;

impl HttpModuleBuilder for SecondBuilder {
    fn init(&self) -> Module {
        Box::new(Second)
    }
}

struct WithModules {
    upstream: u16,
}

#[async_trait]
impl ProxyHttp for WithModules {
    type CTX = ();
    fn new_ctx(&self) {}

    fn init_downstream_modules(&self, modules: &mut HttpModules) {
        // Added in the "wrong" order: the order numbers decide.
        modules.add_module(Box::new(SecondBuilder));
        modules.add_module(Box::new(UpperBuilder));
    }

    async fn request_filter(&self, session: &mut Session, _: &mut ()) -> Result<bool> {
        // Per request: `?plain` turns the upper-casing off.
        if session.req_header().uri.query() == Some("plain") {
            session
                .downstream_modules_ctx
                .get_mut::<Upper>()
                .expect("the module is there")
                .enabled = false;
        }
        Ok(false)
    }

    async fn upstream_peer(&self, _: &mut Session, _: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(peer(self.upstream, false)))
    }
}

async fn start() -> u16 {
    let (up, _) = upstream().await;
    let mut app = HttpServer::new(HttpProxy::new(WithModules { upstream: up }, None));
    app.set_h2c(true);
    serve(app, Arc::default()).await
}

#[tokio::test]
async fn modules_see_every_part_of_the_exchange_in_order() {
    let port = start().await;
    let url = format!("http://127.0.0.1:{port}/echo");
    for h2 in [false, true] {
        let mut args = vec!["--data-binary", "abc", url.as_str()];
        if h2 {
            args.insert(0, "--http2-prior-knowledge");
        }
        let r = curl(&args).await;
        assert_eq!(r.status, 200, "h2 {h2}");
        // Request: header and body passed through the module on the way up.
        assert!(
            r.header("x-seen-names").unwrap().contains("x-mod-req"),
            "h2 {h2}: {:?}",
            r.headers
        );
        // Response: upper-cased, with the module's end piece.
        assert_eq!(r.body, "XBC<done>", "h2 {h2}");
        // Higher order first.
        let order: Vec<&str> = r
            .headers
            .iter()
            .filter(|(n, _)| n == "x-mod-order")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(order.join(","), "upper,second", "h2 {h2}");
        // The upstream's trailer, and the module's.
        let t: Vec<&str> = r.trailers.iter().map(|(n, _)| n.as_str()).collect();
        assert!(
            t.contains(&"x-up-trailer") && t.contains(&"x-mod-trailer"),
            "h2 {h2}: {t:?}"
        );
    }
    // A response without a body: the modules' end piece is the body.
    for h2 in [false, true] {
        let status = format!("http://127.0.0.1:{port}/status/200");
        let mut args = vec![status.as_str()];
        if h2 {
            args.insert(0, "--http2-prior-knowledge");
        }
        let r = curl(&args).await;
        assert_eq!((r.status, r.body.as_str()), (200, "<done>"), "h2 {h2}");
    }
    // One request's module state, changed by a phase.
    let r = curl(&["--data-binary", "abc", &format!("{url}?plain")]).await;
    assert_eq!(r.body, "xbc<done>");
}

/// A proxy limiting requests per `x-key` value to one per second.
struct Limited {
    upstream: u16,
}

#[async_trait]
impl ProxyHttp for Limited {
    type CTX = ();
    fn new_ctx(&self) {}
    fn init_downstream_modules(&self, modules: &mut HttpModules) {
        use pingora_core::modules::http::rate_limit::RateLimit;
        modules.add_module(Box::new(RateLimit::per_header(1, "x-key")));
    }
    async fn upstream_peer(&self, _: &mut Session, _: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(peer(self.upstream, false)))
    }
}

/// One HTTP/1.1 response with a Content-Length: its head (lower case)
/// and body.
async fn read_response(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> (String, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = content_length(&head).expect("a Content-Length");
            while buf.len() < end + 4 + len {
                let mut more = [0u8; 4096];
                let n = s.read(&mut more).await.unwrap();
                assert!(n > 0, "closed inside a body");
                buf.extend_from_slice(&more[..n]);
            }
            let body = buf[end + 4..end + 4 + len].to_vec();
            buf.drain(..end + 4 + len);
            return (head, body);
        }
        let mut more = [0u8; 4096];
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), s.read(&mut more))
            .await
            .expect("a response in time")
            .unwrap();
        assert!(
            n > 0,
            "the connection closed: {:?}",
            String::from_utf8_lossy(buf)
        );
        buf.extend_from_slice(&more[..n]);
    }
}

/// A module's early answer (the rate limit's 429) on a keep-alive HTTP/1.1
/// connection: the refused request's body is read and dropped, never taken
/// for the next request (its bytes here look like one), and the next
/// request is served on the same connection.
#[tokio::test]
async fn an_early_module_answer_drops_the_refused_body_and_keeps_the_connection() {
    use tokio::io::AsyncWriteExt;
    let (up, _) = upstream().await;
    let mut app = HttpServer::new(HttpProxy::new(Limited { upstream: up }, None));
    app.set_h2c(true);
    let port = serve(app, Arc::default()).await;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut buf = Vec::new();
    let post = |key: &str, body: &str| {
        format!(
            "POST /status/200 HTTP/1.1\r\nHost: t\r\nx-key: {key}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    s.write_all(post("a", "12345").as_bytes()).await.unwrap();
    let (head, _) = read_response(&mut s, &mut buf).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    // Over the limit; its body looks like a request of its own.
    let inner = "GET /smuggled HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n";
    s.write_all(post("a", inner).as_bytes()).await.unwrap();
    let (head, body) = read_response(&mut s, &mut buf).await;
    assert!(head.starts_with("http/1.1 429"), "{head}");
    assert!(head.contains("\r\nretry-after: "), "{head}");
    assert!(head.contains("\r\nratelimit-remaining: 0"), "{head}");
    assert!(!head.contains("connection: close"), "{head}");
    assert_eq!(body, b"429 Too Many Requests\n");
    // Another key passes, on the same connection; nothing was smuggled in
    // between.
    s.write_all(post("b", "").as_bytes()).await.unwrap();
    let (head, _) = read_response(&mut s, &mut buf).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("x-upstream-port"), "{head}");
    assert!(buf.is_empty(), "{:?}", String::from_utf8_lossy(&buf));
}
