//! The proxy's cache against a real upstream over loopback whose answers
//! (status, header fields, body, delay) each test sets, and which counts
//! what reaches it; curl is the client. One test per rule of
//! `docs/CACHE.md`.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::{curl, serve, Reply};
use pingora_cache::HttpCache;
use pingora_core::apps::http_app::{HttpServer, HttpServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::ShutdownWatch;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{HttpProxy, ProxyHttp, Session};

/// What the origin answers for a path.
#[derive(Clone, Default)]
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    delay: Duration,
}

/// The origin: answers as set per path (404 otherwise), answers `304` to
/// an `If-None-Match` that matches its `etag` (or, without one, an
/// `If-Modified-Since` equal to its `last-modified`), and counts and keeps
/// the requests it gets. A body of `ECHO:<field>` is the request's field.
#[derive(Default)]
struct Origin {
    answers: Mutex<HashMap<String, Answer>>,
    seen: Mutex<Vec<RequestHeader>>,
}

impl Origin {
    fn set(&self, path: &str, status: u16, headers: &[(&'static str, &str)], body: &[u8]) {
        let a = Answer {
            status,
            headers: headers.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            body: body.to_vec(),
            delay: Duration::ZERO,
        };
        self.answers.lock().unwrap().insert(path.into(), a);
    }

    fn slow(&self, path: &str, delay: Duration) {
        self.answers.lock().unwrap().get_mut(path).unwrap().delay = delay;
    }

    /// Requests for `path` so far.
    fn hits(&self, path: &str) -> usize {
        let seen = self.seen.lock().unwrap();
        seen.iter().filter(|r| r.uri.path() == path).count()
    }

    /// The last request's `name` field for `path`.
    fn last_field(&self, path: &str, name: &str) -> Option<String> {
        let seen = self.seen.lock().unwrap();
        let r = seen.iter().rev().find(|r| r.uri.path() == path)?;
        r.headers.get(name).map(|v| v.to_str().unwrap().to_string())
    }
}

struct OriginApp(Arc<Origin>);

impl HttpServerApp for OriginApp {
    async fn process_request(
        self: &Arc<Self>,
        s: &mut ServerSession,
        _: &ShutdownWatch,
    ) -> Result<()> {
        let req = s.req_header().clone();
        while s.read_request_body().await?.is_some() {}
        self.0.seen.lock().unwrap().push(req.clone());
        let path = req.uri.path().to_string();
        let a = self.0.answers.lock().unwrap().get(&path).cloned();
        let a = a.unwrap_or(Answer {
            status: 404,
            ..Answer::default()
        });
        if !a.delay.is_zero() {
            tokio::time::sleep(a.delay).await;
        }
        let etag = a.headers.iter().find(|(k, _)| *k == "etag").map(|x| &x.1);
        let inm = req
            .headers
            .get("if-none-match")
            .map(|v| v.to_str().unwrap());
        let lm = a
            .headers
            .iter()
            .find(|(k, _)| *k == "last-modified")
            .map(|x| &x.1);
        let ims = req
            .headers
            .get("if-modified-since")
            .map(|v| v.to_str().unwrap());
        let not_modified = match (etag, inm) {
            (Some(e), Some(i)) => e == i,
            _ => etag.is_none() && lm.is_some() && lm.map(String::as_str) == ims,
        };
        let status = if not_modified { 304 } else { a.status };
        let mut resp = ResponseHeader::build(status, None)?;
        for (k, v) in &a.headers {
            if !(not_modified && *k == "age") {
                resp.append_header(*k, v.as_str())?;
            }
        }
        let body = match std::str::from_utf8(&a.body)
            .ok()
            .and_then(|b| b.strip_prefix("ECHO:"))
        {
            Some(field) => req
                .headers
                .get(field)
                .map_or(b"none".to_vec(), |v| v.as_bytes().to_vec()),
            None => a.body.clone(),
        };
        if not_modified {
            s.write_response_header(Box::new(resp)).await?;
            return s.finish_body().await;
        }
        resp.insert_header("content-length", body.len().to_string())?;
        s.write_response_header(Box::new(resp)).await?;
        if !body.is_empty() && req.method != http::Method::HEAD {
            s.write_response_body(body.into()).await?;
        }
        s.finish_body().await
    }
}

/// The proxy under test: every request through `cache`; `PURGE` purges;
/// with `down` set, the upstream is a closed port.
struct Caching {
    cache: HttpCache,
    origin: u16,
    closed: u16,
    down: AtomicBool,
}

#[async_trait]
impl ProxyHttp for Caching {
    type CTX = ();
    fn new_ctx(&self) {}

    fn request_cache_filter(&self, session: &mut Session, _ctx: &mut ()) -> Result<()> {
        session.cache_enable(&self.cache);
        Ok(())
    }

    fn is_purge(&self, session: &Session, _ctx: &()) -> bool {
        session.req_header().method.as_str() == "PURGE"
    }

    async fn upstream_peer(&self, _s: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let port = if self.down.load(Ordering::Relaxed) {
            self.closed
        } else {
            self.origin
        };
        Ok(Box::new(HttpPeer::new(
            format!("127.0.0.1:{port}"),
            false,
            String::new(),
        )))
    }
}

struct Setup {
    origin: Arc<Origin>,
    proxy: Arc<Caching>,
    port: u16,
}

impl Setup {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn get(&self, path: &str, extra: &[&str]) -> Reply {
        let url = self.url(path);
        let mut args: Vec<&str> = extra.to_vec();
        args.push(&url);
        curl(&args).await
    }
}

/// A proxy caching into `cache`, before an origin of its own.
async fn setup_with(cache: HttpCache) -> Setup {
    let origin = Arc::new(Origin::default());
    let origin_port = serve(HttpServer::new(OriginApp(origin.clone())), Arc::default()).await;
    let closed = pingora_test_support::closed_port();
    let proxy = Arc::new(Caching {
        cache,
        origin: origin_port,
        closed,
        down: AtomicBool::new(false),
    });
    let mut app = HttpServer::new(HttpProxy::new(ArcProxy(proxy.clone()), None));
    app.set_h2c(true);
    let port = serve(app, Arc::default()).await;
    Setup {
        origin,
        proxy,
        port,
    }
}

async fn setup() -> Setup {
    setup_with(HttpCache::memory(16 << 20)).await
}

/// The proxy behind an `Arc`, so that the test can reach it while it
/// serves.
struct ArcProxy(Arc<Caching>);

#[async_trait]
impl ProxyHttp for ArcProxy {
    type CTX = ();
    fn new_ctx(&self) {}
    fn request_cache_filter(&self, s: &mut Session, c: &mut ()) -> Result<()> {
        self.0.request_cache_filter(s, c)
    }
    fn is_purge(&self, s: &Session, c: &()) -> bool {
        self.0.is_purge(s, c)
    }
    async fn upstream_peer(&self, s: &mut Session, c: &mut ()) -> Result<Box<HttpPeer>> {
        self.0.upstream_peer(s, c).await
    }
}

fn status_of(r: &Reply) -> &str {
    r.header("cache-status").unwrap_or("")
}

#[tokio::test]
async fn a_miss_is_stored_and_then_served_from_the_cache() {
    let counted = || {
        pingora_proxy::metrics::proxy()
            .cache
            .with_label_values(&["hit"])
            .get()
    };
    let before = counted();
    let t = setup().await;
    t.origin.set(
        "/a",
        200,
        &[("cache-control", "max-age=60")],
        b"hello cache",
    );
    let first = t.get("/a", &[]).await;
    assert_eq!(first.body, "hello cache");
    assert_eq!(status_of(&first), "pingora; fwd=uri-miss; stored");
    let second = t.get("/a", &[]).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.body, "hello cache");
    assert!(
        status_of(&second).starts_with("pingora; hit; ttl="),
        "{}",
        status_of(&second)
    );
    assert!(second.header("age").is_some());
    assert_eq!(second.header("content-length"), Some("11"));
    // Over HTTP/2 as well.
    let h2 = t.get("/a", &["--http2-prior-knowledge"]).await;
    assert_eq!(h2.body, "hello cache");
    assert!(status_of(&h2).contains("hit"));
    assert_eq!(t.origin.hits("/a"), 1);
    let hits = counted() - before;
    assert!(hits >= 2, "hits counted: {hits}");
}

/// A path, the origin's fields, curl's extra arguments, and the detail
/// `Cache-Status` gives.
type Case = (
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static [&'static str],
    &'static str,
);

#[tokio::test]
async fn what_may_not_be_stored_is_not() {
    let t = setup().await;
    let cases: [Case; 5] = [
        (
            "/no-store",
            &[("cache-control", "no-store, max-age=60")],
            &[],
            "no-store",
        ),
        (
            "/private",
            &[("cache-control", "private, max-age=60")],
            &[],
            "private",
        ),
        (
            "/auth",
            &[("cache-control", "max-age=60")],
            &["-H", "authorization: x"],
            "authorization",
        ),
        ("/never-fresh", &[], &[], "never-fresh"),
        (
            "/req-no-store",
            &[("cache-control", "max-age=60")],
            &["-H", "cache-control: no-store"],
            "no-store",
        ),
    ];
    for (path, headers, req, detail) in cases {
        t.origin.set(path, 200, headers, b"x");
        for _ in 0..2 {
            let r = t.get(path, req).await;
            assert_eq!(r.body, "x");
            assert_eq!(
                status_of(&r),
                format!("pingora; fwd=uri-miss; detail={detail}"),
                "{path}"
            );
        }
        assert_eq!(t.origin.hits(path), 2, "{path}");
    }
    // With Authorization, `public` (or s-maxage) lets a shared cache store.
    t.origin.set(
        "/auth-public",
        200,
        &[("cache-control", "public, max-age=60")],
        b"p",
    );
    t.get("/auth-public", &["-H", "authorization: x"]).await;
    let r = t.get("/auth-public", &["-H", "authorization: x"]).await;
    assert!(status_of(&r).contains("hit"));
    assert_eq!(t.origin.hits("/auth-public"), 1);
}

#[tokio::test]
async fn a_stale_object_is_revalidated_and_a_304_refreshes_it() {
    let t = setup().await;
    // Already 120 s old at a 60 s lifetime: stored stale.
    let h = [
        ("cache-control", "max-age=60"),
        ("etag", "\"v1\""),
        ("age", "120"),
    ];
    t.origin.set("/r", 200, &h, b"version one");
    t.get("/r", &[]).await;
    let r = t.get("/r", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "version one");
    assert_eq!(status_of(&r), "pingora; fwd=stale; fwd-status=304; stored");
    assert_eq!(
        t.origin.last_field("/r", "if-none-match").as_deref(),
        Some("\"v1\"")
    );
    // The 304 restarted its age: fresh now.
    let r = t.get("/r", &[]).await;
    assert!(status_of(&r).contains("hit"), "{}", status_of(&r));
    assert_eq!(t.origin.hits("/r"), 2);
    // A changed object comes back whole and replaces the stored one.
    let h2 = [
        ("cache-control", "max-age=60"),
        ("etag", "\"v2\""),
        ("age", "120"),
    ];
    t.origin.set("/r", 200, &h2, b"version two");
    let r = t.get("/r", &["-H", "cache-control: no-cache"]).await;
    assert_eq!(r.body, "version two");
    // Forwarded because the request asked (the object was fresh).
    assert_eq!(
        status_of(&r),
        "pingora; fwd=request; fwd-status=200; stored"
    );
}

#[tokio::test]
async fn last_modified_alone_revalidates_with_if_modified_since() {
    let t = setup().await;
    let lm = "Sat, 05 Dec 2026 10:00:00 GMT";
    let h = [
        ("cache-control", "max-age=60"),
        ("last-modified", lm),
        ("age", "120"),
    ];
    t.origin.set("/lm", 200, &h, b"dated");
    t.get("/lm", &[]).await;
    let r = t.get("/lm", &[]).await;
    assert_eq!(r.body, "dated");
    assert_eq!(status_of(&r), "pingora; fwd=stale; fwd-status=304; stored");
    assert_eq!(
        t.origin.last_field("/lm", "if-modified-since").as_deref(),
        Some(lm)
    );
    assert_eq!(t.origin.last_field("/lm", "if-none-match"), None);
}

#[tokio::test]
async fn request_no_cache_forces_a_revalidation() {
    let t = setup().await;
    let h = [("cache-control", "max-age=60"), ("etag", "\"e\"")];
    t.origin.set("/nc", 200, &h, b"body");
    t.get("/nc", &[]).await;
    for field in [
        "cache-control: no-cache",
        "pragma: no-cache",
        "cache-control: max-age=0",
    ] {
        let r = t.get("/nc", &["-H", field]).await;
        assert_eq!(r.body, "body");
        let want = "pingora; fwd=request; fwd-status=304; stored";
        assert_eq!(status_of(&r), want, "{field}");
    }
    assert_eq!(t.origin.hits("/nc"), 4);
}

#[tokio::test]
async fn stale_while_revalidate_answers_stale_then_refreshes_in_the_background() {
    let t = setup().await;
    let h = [
        ("cache-control", "max-age=60, stale-while-revalidate=600"),
        ("age", "120"),
    ];
    t.origin.set("/swr", 200, &h, b"old");
    t.get("/swr", &[]).await;
    t.origin
        .set("/other", 200, &[("cache-control", "max-age=60")], b"other");
    t.get("/other", &[]).await;
    // The refresh will take 6 s.
    t.origin
        .set("/swr", 200, &[("cache-control", "max-age=60")], b"new");
    t.origin.slow("/swr", Duration::from_secs(6));
    let r = t.get("/swr", &[]).await;
    assert_eq!(r.body, "old");
    assert!(
        status_of(&r).ends_with("detail=stale-while-revalidate"),
        "{}",
        status_of(&r)
    );
    // Two requests on one connection within 4 s: the stale answer, then
    // another; neither waits for the refresh.
    let (a, b) = (t.url("/swr"), t.url("/other"));
    let both = tokio::task::spawn_blocking(move || {
        pingora_test_support::curl_text(&["--max-time", "4", &a, &b])
    })
    .await
    .unwrap();
    assert_eq!(both, "oldother");
    let origin = t.origin.clone();
    pingora_test_support::eventually(Duration::from_secs(20), "the refresh", || {
        origin.hits("/swr") == 2
    })
    .await;
    // Stale answers until the refresh (6 s) is stored.
    let mut body = String::new();
    for _ in 0..400 {
        let r = t.get("/swr", &[]).await;
        body = r.body.clone();
        if body == "new" {
            assert!(status_of(&r).contains("hit"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(body, "new");
    assert_eq!(
        t.origin.hits("/swr"),
        2,
        "one refresh for the stale answers"
    );
}

#[tokio::test]
async fn stale_if_error_answers_stale_when_the_upstream_fails() {
    let t = setup().await;
    let h = [
        ("cache-control", "max-age=60, stale-if-error=600"),
        ("age", "120"),
    ];
    t.origin.set("/sie", 200, &h, b"kept");
    t.get("/sie", &[]).await;
    // A 5xx from the upstream.
    t.origin.set("/sie", 503, &[], b"down");
    let r = t.get("/sie", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "kept"));
    assert!(
        status_of(&r).ends_with("detail=stale-if-error"),
        "{}",
        status_of(&r)
    );
    // No upstream at all.
    t.proxy.down.store(true, Ordering::Relaxed);
    let r = t.get("/sie", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "kept"));
    // Without stale-if-error, the error goes through.
    t.proxy.down.store(false, Ordering::Relaxed);
    t.origin.set(
        "/plain",
        200,
        &[("cache-control", "max-age=60"), ("age", "120")],
        b"p",
    );
    t.get("/plain", &[]).await;
    t.origin.set("/plain", 503, &[], b"");
    assert_eq!(t.get("/plain", &[]).await.status, 503);
}

#[tokio::test]
async fn variants_are_stored_side_by_side() {
    let t = setup().await;
    let h = [("cache-control", "max-age=60"), ("vary", "Accept-Encoding")];
    t.origin.set("/v", 200, &h, b"ECHO:accept-encoding");
    for enc in ["gzip", "br", "gzip", "br"] {
        let field = format!("accept-encoding: {enc}");
        let r = t.get("/v", &["-H", &field]).await;
        assert_eq!(r.body, enc);
    }
    assert_eq!(t.origin.hits("/v"), 2, "one fill per variant");
    let r = t.get("/v", &[]).await;
    assert_eq!(r.body, "none");
    assert_eq!(t.origin.hits("/v"), 3);
    // A purge takes every variant.
    let p = t.get("/v", &["-X", "PURGE"]).await;
    assert_eq!(p.status, 200);
    t.get("/v", &["-H", "accept-encoding: gzip"]).await;
    assert_eq!(t.origin.hits("/v"), 4);
}

#[tokio::test]
async fn unsafe_methods_invalidate() {
    let t = setup().await;
    t.origin
        .set("/u", 200, &[("cache-control", "max-age=60")], b"u");
    t.get("/u", &[]).await;
    assert!(status_of(&t.get("/u", &[]).await).contains("hit"));
    let post = t.get("/u", &["-d", "x"]).await;
    assert_eq!(status_of(&post), "pingora; fwd=bypass");
    let r = t.get("/u", &[]).await;
    assert_eq!(status_of(&r), "pingora; fwd=uri-miss; stored");
    // An error answer invalidates nothing.
    t.origin
        .set("/e", 200, &[("cache-control", "max-age=60")], b"e");
    t.get("/e", &[]).await;
    t.origin.set("/e", 500, &[], b"");
    t.get("/e", &["-X", "DELETE"]).await;
    assert!(status_of(&t.get("/e", &[]).await).contains("hit"));
}

#[tokio::test]
async fn head_ranges_and_conditionals_are_answered_from_the_cache() {
    let t = setup().await;
    let body: Vec<u8> = (0..100u8).map(|i| b'a' + i % 26).collect();
    let h = [("cache-control", "max-age=60"), ("etag", "\"r1\"")];
    t.origin.set("/obj", 200, &h, &body);
    t.get("/obj", &[]).await;
    // HEAD from the cached GET.
    let head = t.get("/obj", &["-I"]).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("100"));
    assert!(status_of(&head).contains("hit"));
    // A range.
    let r = t.get("/obj", &["-H", "range: bytes=10-19"]).await;
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 10-19/100"));
    assert_eq!(r.body.as_bytes(), &body[10..20]);
    let r = t.get("/obj", &["-H", "range: bytes=-5"]).await;
    assert_eq!(r.body.as_bytes(), &body[95..]);
    let r = t.get("/obj", &["-H", "range: bytes=500-"]).await;
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */100"));
    // If-Range that does not match: the whole object.
    let r = t
        .get(
            "/obj",
            &["-H", "range: bytes=0-0", "-H", "if-range: \"other\""],
        )
        .await;
    assert_eq!((r.status, r.body.len()), (200, 100));
    // A client's condition, answered 304 from the cache.
    let r = t.get("/obj", &["-H", "if-none-match: \"r1\""]).await;
    assert_eq!(r.status, 304);
    assert!(status_of(&r).contains("hit"));
    let r = t.get("/obj", &["-H", "if-none-match: \"zz\""]).await;
    assert_eq!(r.status, 200);
    assert_eq!(t.origin.hits("/obj"), 1, "all from the cache");
}

#[tokio::test]
async fn concurrent_misses_send_one_request_upstream() {
    let t = setup().await;
    t.origin.set(
        "/lock",
        200,
        &[("cache-control", "max-age=60")],
        &[b'z'; 5000],
    );
    t.origin.slow("/lock", Duration::from_millis(400));
    let url = t.url("/lock");
    let mut all = Vec::new();
    for _ in 0..6 {
        let url = url.clone();
        all.push(tokio::spawn(async move { curl(&[&url]).await }));
    }
    let mut collapsed = 0;
    for r in all {
        let r = r.await.unwrap();
        assert_eq!(r.body.len(), 5000);
        if status_of(&r).contains("collapsed") {
            collapsed += 1;
        }
    }
    assert_eq!(t.origin.hits("/lock"), 1, "one fill for all");
    assert!(collapsed >= 1, "some waited on the fill");
}

#[tokio::test]
async fn a_waiter_for_another_variant_goes_upstream() {
    let t = setup().await;
    let h = [("cache-control", "max-age=60"), ("vary", "accept-encoding")];
    t.origin.set("/cv", 200, &h, b"ECHO:accept-encoding");
    t.origin.slow("/cv", Duration::from_millis(400));
    let url = t.url("/cv");
    let mut all = Vec::new();
    for enc in ["gzip", "br", "gzip", "br"] {
        let url = url.clone();
        let field = format!("accept-encoding: {enc}");
        all.push(tokio::spawn(async move {
            (enc, curl(&["-H", &field, &url]).await)
        }));
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    for r in all {
        let (enc, r) = r.await.unwrap();
        assert_eq!(r.body, enc, "each gets its own variant");
    }
}

#[tokio::test]
async fn a_request_whose_host_and_authority_disagree_is_not_cached() {
    let t = setup().await;
    t.origin
        .set("/h", 200, &[("cache-control", "max-age=60")], b"h");
    let target = "http://victim.test/h";
    for _ in 0..2 {
        let r = t
            .get("/h", &["--request-target", target, "-H", "host: evil.test"])
            .await;
        assert_eq!(status_of(&r), "");
    }
    assert_eq!(t.origin.hits("/h"), 2);
    // Nothing stored under either host.
    let r = t.get("/h", &["-H", "host: victim.test"]).await;
    assert_eq!(status_of(&r), "pingora; fwd=uri-miss; stored");
}

#[tokio::test]
async fn objects_past_the_size_limit_stream_through_uncached() {
    let t = setup_with(HttpCache::memory(16 << 20).with_max_object_size(1000)).await;
    t.origin.set(
        "/big",
        200,
        &[("cache-control", "max-age=60")],
        &[b'b'; 5000],
    );
    for _ in 0..2 {
        let r = t.get("/big", &[]).await;
        assert_eq!(r.body.len(), 5000);
        assert_eq!(status_of(&r), "pingora; fwd=uri-miss; detail=too-large");
    }
    assert_eq!(t.origin.hits("/big"), 2);
}

#[tokio::test]
async fn only_if_cached_answers_504_on_a_miss_and_head_is_not_stored() {
    let t = setup().await;
    t.origin
        .set("/oic", 200, &[("cache-control", "max-age=60")], b"o");
    let r = t
        .get("/oic", &["-H", "cache-control: only-if-cached"])
        .await;
    assert_eq!(r.status, 504);
    assert_eq!(t.origin.hits("/oic"), 0);
    // A HEAD miss goes upstream as HEAD and stores nothing.
    let r = t.get("/oic", &["-I"]).await;
    assert_eq!(status_of(&r), "pingora; fwd=uri-miss; detail=method");
    t.get("/oic", &[]).await;
    let r = t
        .get("/oic", &["-H", "cache-control: only-if-cached"])
        .await;
    assert_eq!((r.status, r.body.as_str()), (200, "o"));
    assert_eq!(t.origin.hits("/oic"), 2);
}

#[tokio::test]
async fn purge_removes_an_object() {
    let t = setup().await;
    t.origin
        .set("/p", 200, &[("cache-control", "max-age=60")], b"p");
    t.get("/p", &[]).await;
    assert_eq!(t.get("/p", &["-X", "PURGE"]).await.status, 200);
    assert_eq!(t.get("/p", &["-X", "PURGE"]).await.status, 404);
    let r = t.get("/p", &[]).await;
    assert_eq!(status_of(&r), "pingora; fwd=uri-miss; stored");
    assert_eq!(t.origin.hits("/p"), 2);
    // By prefix: a key ending in `*`.
    for path in ["/dir/a", "/dir/b", "/other"] {
        t.origin
            .set(path, 200, &[("cache-control", "max-age=60")], b"d");
        t.get(path, &[]).await;
    }
    let r = t.get("/dir/*", &["-X", "PURGE"]).await;
    assert_eq!(r.status, 200);
    for (path, cached) in [("/dir/a", false), ("/dir/b", false), ("/other", true)] {
        let r = t.get(path, &[]).await;
        assert_eq!(status_of(&r).contains("hit"), cached, "{path}");
    }
}

#[tokio::test]
async fn the_disk_cache_survives_a_restart() {
    let dir = pingora_test_support::temp_dir("cache-disk");
    let t = setup_with(HttpCache::disk(&dir, 1 << 20).unwrap()).await;
    t.origin
        .set("/d", 200, &[("cache-control", "max-age=600")], b"on disk");
    // One Host for both proxies (the default key has it).
    let host = ["-H", "host: cache.test"];
    t.get("/d", &host).await;
    // Stored (synced on a blocking thread) once it is a hit.
    let mut hit = false;
    for _ in 0..200 {
        hit = status_of(&t.get("/d", &host).await).contains("hit");
        if hit {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(hit);
    // A new store over the same directory, and a new proxy.
    let again = setup_with(HttpCache::disk(&dir, 1 << 20).unwrap()).await;
    let r = again.get("/d", &host).await;
    assert_eq!(r.body, "on disk", "{} {:?}", r.status, r.headers);
    assert!(status_of(&r).contains("hit"), "{}", status_of(&r));
    assert_eq!(again.origin.hits("/d"), 0);
    let _ = std::fs::remove_dir_all(&dir);
}
