//! Answers from the cache: a stored object (whole, a range, a `304` to
//! a client's conditions, or the header alone for HEAD), another
//! request's fill as it is written (collapsed forwarding), and the
//! refresh that follows an answer served stale while revalidating.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{
    ACCEPT_RANGES, AGE, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE,
    TRANSFER_ENCODING,
};
use http::{Method, StatusCode};
use pingora_cache::conditional::{range, RangeAnswer};
use pingora_cache::freshness::Timing;
use pingora_cache::lock::Reader;
use pingora_cache::{CacheMeta, CacheStatus, HitBody, RespCacheable};
use pingora_core::protocols::http::v1::H1Options;
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::mem::MemStream;
use pingora_error::{Error, ErrorType::*, Result};
use pingora_http::ResponseHeader;
use tracing::warn;

use super::body::{send_down, LengthGuard};
use super::cache::{read_error, CacheCtx};
use super::headers::upstream_request;
use super::HttpProxy;
use crate::{ProxyHttp, Session};

/// Bytes read from a store at a time.
const PIECE: usize = 64 * 1024;

/// Where a cached answer's body comes from.
enum Source {
    /// A stored object's bytes `at..end`.
    Stored {
        body: Box<dyn HitBody>,
        at: u64,
        end: u64,
    },
    /// Another request's fill.
    Fill(Reader<Arc<CacheMeta>>),
}

impl Source {
    /// No body (a 304, a 416).
    fn empty() -> Source {
        Source::Stored {
            body: Box::new(NoBody),
            at: 0,
            end: 0,
        }
    }

    async fn next(&mut self) -> Result<Option<Bytes>> {
        match self {
            Source::Stored { body, at, end } => {
                if *at >= *end {
                    return Ok(None);
                }
                let want = (*end - *at).min(PIECE as u64) as usize;
                let piece = body.read(*at, want).map_err(read_error)?;
                if piece.is_empty() {
                    return Error::e_explain(InternalError, "a cached object was cut short");
                }
                *at += piece.len() as u64;
                Ok(Some(piece))
            }
            Source::Fill(r) => r.body().await.map_err(|e| {
                Error::explain(InternalError, format!("the fill being read failed: {e:?}"))
            }),
        }
    }

    fn at_end(&self) -> bool {
        matches!(self, Source::Stored { at, end, .. } if at >= end)
    }
}

/// The name `Cache-Status` gives the request's cache.
fn cache_name(session: &Session) -> String {
    session
        .state()
        .and_then(|s| s.cache.as_ref().map(|c| c.name().to_string()))
        .unwrap_or_else(|| "pingora".into())
}

/// The response header of a stored object, its age set.
fn stored_response(meta: &CacheMeta, age: Duration) -> Result<Box<ResponseHeader>> {
    let mut resp = ResponseHeader::build(meta.status, Some(meta.headers.len() + 4))?;
    for (name, value) in &meta.headers {
        resp.append_header(name.clone(), value.clone())?;
    }
    resp.remove_header(&TRANSFER_ENCODING);
    resp.insert_header(AGE, age.as_secs().to_string())?;
    Ok(Box::new(resp))
}

/// A stored response turned into `304 Not Modified`: no body, and none
/// of the fields that describe one (RFC 9110 §15.4.5).
fn make_not_modified(resp: &mut ResponseHeader) -> Result<()> {
    resp.set_status(StatusCode::NOT_MODIFIED)?;
    for name in [
        CONTENT_LENGTH,
        CONTENT_TYPE,
        CONTENT_ENCODING,
        CONTENT_RANGE,
        ACCEPT_RANGES,
    ] {
        resp.remove_header(&name);
    }
    Ok(())
}

impl<SV: ProxyHttp> HttpProxy<SV> {
    /// Answer from a stored object `age` old (from the freshness the
    /// caller computed once), with `status` in `Cache-Status`.
    pub(super) async fn serve_hit(
        &self,
        session: &mut Session,
        ctx: &mut SV::CTX,
        hit: pingora_cache::Hit,
        status: CacheStatus,
        age: Duration,
    ) -> Result<()> {
        let len = hit.body.len();
        let meta = hit.meta.clone();
        let mut resp = stored_response(&meta, age)?;
        let name = cache_name(session);
        resp.insert_header("cache-status", status.header_value(&name))?;
        session.set_cache_status(status);
        let mut source = Source::Stored {
            body: hit.body,
            at: 0,
            end: len,
        };
        if self.inner.cache_not_modified_filter(session, &resp, ctx)? {
            make_not_modified(&mut resp)?;
            source = Source::empty();
        } else {
            let req = &session.req_header().headers;
            match range(req, meta.status, &meta.headers, len) {
                RangeAnswer::Full => {
                    resp.insert_header(CONTENT_LENGTH, len.to_string())?;
                }
                RangeAnswer::Partial { start, end } => {
                    resp.set_status(StatusCode::PARTIAL_CONTENT)?;
                    resp.insert_header(CONTENT_RANGE, format!("bytes {start}-{end}/{len}"))?;
                    resp.insert_header(CONTENT_LENGTH, (end - start + 1).to_string())?;
                    if let Source::Stored { at, end: e, .. } = &mut source {
                        *at = start;
                        *e = end + 1;
                    }
                }
                RangeAnswer::Unsatisfiable => {
                    resp.set_status(StatusCode::RANGE_NOT_SATISFIABLE)?;
                    resp.insert_header(CONTENT_RANGE, format!("bytes */{len}"))?;
                    resp.insert_header(CONTENT_LENGTH, "0")?;
                    source = Source::empty();
                }
            }
            if meta.status == StatusCode::OK && !resp.headers.contains_key(ACCEPT_RANGES) {
                resp.insert_header(ACCEPT_RANGES, "bytes")?;
            }
        }
        self.send_cached(session, ctx, resp, source).await
    }

    /// Wait on another request's fill of the key and answer from it as it
    /// is written. `false` if the wait failed before anything was sent
    /// (the fill was abandoned, took too long, or has no known length):
    /// then go upstream.
    pub(super) async fn serve_collapsed(
        &self,
        session: &mut Session,
        ctx: &mut SV::CTX,
        reader: Reader<Arc<CacheMeta>>,
    ) -> Result<bool> {
        let Ok(meta) = reader.header().await else {
            return Ok(false);
        };
        // The fill is for the primary key: a response that varies may be
        // another variant than this request's.
        if let Some(v) = &meta.variance {
            let ours = self
                .inner
                .cache_vary_filter(&meta, ctx, session.req_header());
            if ours.as_ref() != Some(v) {
                return Ok(false);
            }
        }
        let age = meta.freshness(true).age(SystemTime::now());
        let mut resp = stored_response(&meta, age)?;
        let name = cache_name(session);
        resp.insert_header("cache-status", CacheStatus::Collapsed.header_value(&name))?;
        session.set_cache_status(CacheStatus::Collapsed);
        let mut source = Source::Fill(reader);
        if self.inner.cache_not_modified_filter(session, &resp, ctx)? {
            make_not_modified(&mut resp)?;
            source = Source::empty();
        }
        self.send_cached(session, ctx, resp, source).await?;
        Ok(true)
    }

    /// A cached answer through `response_filter`, the body filters and
    /// the modules, to the client (only the header for HEAD).
    async fn send_cached(
        &self,
        session: &mut Session,
        ctx: &mut SV::CTX,
        mut resp: Box<ResponseHeader>,
        mut source: Source,
    ) -> Result<()> {
        let method = session.req_header().method.clone();
        self.inner.response_filter(session, &mut resp, ctx).await?;
        let bodiless = method == Method::HEAD || source.at_end();
        if !self.downstream_modules.is_empty() {
            if let Some(m) = session.modules() {
                m.response_header_filter(&mut resp, bodiless).await?;
            }
        }
        let down = |e: Box<Error>| e.into_down();
        if bodiless {
            return session
                .as_downstream_mut()
                .write_response_header_eos(resp, true)
                .await
                .map_err(down);
        }
        let (mut guard, now) = LengthGuard::new(resp, &method);
        if let Some(resp) = now {
            session
                .as_downstream_mut()
                .write_response_header(resp)
                .await
                .map_err(down)?;
        }
        let mut delay;
        let mut data = source.next().await?;
        loop {
            let next = if data.is_some() {
                source.next().await?
            } else {
                None
            };
            let end = next.is_none();
            let size_in = data.as_ref().map_or(0, Bytes::len);
            delay = self.down_body_filters(session, &mut data, end, ctx)?;
            let size_out = data.as_ref().map_or(0, Bytes::len);
            if let Some(resp) = guard.piece(size_in, size_out, end)? {
                session
                    .as_downstream_mut()
                    .write_response_header(resp)
                    .await
                    .map_err(down)?;
            }
            if let Some(d) = data.take().filter(|d| !d.is_empty()) {
                send_down(session, d, delay).await?;
            }
            if end {
                break;
            }
            data = next;
        }
        if !self.downstream_modules.is_empty() {
            if let Some(m) = session.modules() {
                if let Some(d) = m.response_done_filter()?.filter(|b| !b.is_empty()) {
                    send_down(session, d, delay).await?;
                }
            }
        }
        session.finish_body().await.map_err(down)
    }

    /// Answer from the stale object a 304 revalidated (its meta updated
    /// and stored); the upstream connection goes back to the pool.
    pub(super) async fn serve_revalidated(
        &self,
        session: &mut Session,
        ctx: &mut SV::CTX,
        cc: &mut CacheCtx,
        not_modified: &ResponseHeader,
    ) -> Result<()> {
        let timing = session
            .state()
            .and_then(|s| s.cache_timing)
            .unwrap_or_else(|| Timing::at(SystemTime::now()));
        let Some(hit) = cc.revalidated(not_modified, timing) else {
            return Error::e_explain(InternalError, "a 304 with nothing to revalidate");
        };
        let status = CacheStatus::Revalidated {
            fwd_status: 304,
            stored: true,
            by_request: cc.by_request,
        };
        let age = hit.meta.freshness(true).age(SystemTime::now());
        self.serve_hit(session, ctx, hit, status, age).await
    }

    /// Serve the stale object because the upstream failed, if its
    /// `stale-if-error` and `should_serve_stale` allow; whether it did.
    pub(super) async fn serve_stale_on_error(
        &self,
        session: &mut Session,
        ctx: &mut SV::CTX,
        cc: &mut CacheCtx,
        e: &Error,
    ) -> Result<bool> {
        if session.response_written().is_some() {
            return Ok(false);
        }
        let Some(f) = cc.stale.as_ref().map(|h| h.meta.freshness(true)) else {
            return Ok(false);
        };
        let now = SystemTime::now();
        if !f.serve_on_error(now) || !self.inner.should_serve_stale(session, ctx, Some(e)) {
            return Ok(false);
        }
        let Some(hit) = cc.stale.take() else {
            return Ok(false);
        };
        let status = CacheStatus::Stale {
            ttl: super::cache::ttl(&f, now),
            on_error: true,
        };
        warn!("serving stale after: {e}");
        self.serve_hit(session, ctx, hit, status, f.age(now))
            .await?;
        Ok(true)
    }

    /// After an answer served stale while revalidating: fetch the object
    /// again (conditionally when it has a validator) and store what comes
    /// back, in a task of its own, so that neither this client nor its
    /// connection's next request waits for it. The task runs the phases a
    /// refresh needs (`upstream_peer`, `upstream_request_filter`,
    /// `upstream_response_filter`, `response_cache_filter`,
    /// `upstream_response_body_filter`) on a session of its own: this
    /// request as the filters left it, read from memory, with a new
    /// context. One refresh per key at a time.
    pub(super) fn refresh_in_background(
        self: &Arc<Self>,
        session: &Session,
        mut cc: CacheCtx,
        meta: Arc<CacheMeta>,
    ) {
        // Held to the end: one refresh per key.
        let Some(refreshing) = cc.cache.start_refresh(&cc.key) else {
            return; // one under way
        };
        let wire = match request_wire(session.req_header()) {
            Ok(w) => w,
            Err(e) => {
                warn!("refreshing a stale cached object: {e}");
                return;
            }
        };
        let this = self.clone();
        tokio::spawn(async move {
            let _refreshing = refreshing;
            let (stream, _) = MemStream::new(wire, usize::MAX);
            let mut own = ServerSession::new_http1(Box::new(stream), H1Options::default());
            let result = match own.read_request().await {
                Ok(Some(_)) => {
                    let session = Session::from_mut(&mut own);
                    let mut ctx = this.inner.new_ctx();
                    this.refresh_inner(session, &mut ctx, &mut cc, meta).await
                }
                Ok(None) => Error::e_explain(InternalError, "the request did not parse again"),
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                warn!("refreshing a stale cached object: {e}");
            }
        });
    }

    async fn refresh_inner(
        &self,
        session: &mut Session,
        ctx: &mut SV::CTX,
        cc: &mut CacheCtx,
        meta: Arc<CacheMeta>,
    ) -> Result<()> {
        let peer = self.inner.upstream_peer(session, ctx).await?;
        let (mut up, _) = self.connector.get_http_session(&peer).await?;
        let mut req = upstream_request(session, &peer, up.is_http2())?;
        req.set_method(Method::GET);
        req.remove_header(&CONTENT_LENGTH);
        req.remove_header(&TRANSFER_ENCODING);
        self.inner
            .upstream_request_filter(session, &mut req, ctx)
            .await?;
        cc.fill_allowed = true;
        // The stored object itself (the variant this request was served),
        // for the 304's merge.
        cc.stale = stale_for(cc, &meta);
        self.cache_upstream_request(session, cc, &mut req)?;
        let request_time = SystemTime::now();
        up.write_request_header_eos(req, true).await?;
        up.finish_body(None).await?;
        up.read_response_header().await?;
        let timing = Timing {
            request_time,
            response_time: SystemTime::now(),
        };
        let Some(resp) = up.take_resp_header() else {
            return Error::e_explain(InvalidHTTPHeader, "no response");
        };
        // As any upstream header: without hop-by-hop fields, through the
        // user's filter (a 304 too, before it is merged).
        let mut resp = super::headers::downstream_response(resp);
        self.inner
            .upstream_response_filter(session, &mut resp, ctx)
            .await?;
        if resp.status == StatusCode::NOT_MODIFIED && cc.revalidate {
            cc.revalidated(&resp, timing);
            self.connector.release(up, &peer);
            return Ok(());
        }
        session.state_mut().cache_timing = Some(timing);
        let meta = match self.inner.response_cache_filter(session, &resp, ctx)? {
            RespCacheable::Cacheable(m) => m,
            RespCacheable::Uncacheable(_) => return Ok(()),
        };
        let mut meta = meta;
        let variance = if meta.varies() {
            self.inner
                .cache_vary_filter(&meta, ctx, session.req_header())
        } else {
            None
        };
        let key = cc.cache.storage_key_for(&cc.key, &mut meta, variance);
        let mut w = cc.cache.writer(&key, &meta).map_err(read_error)?;
        let mut bytes = 0usize;
        while !up.is_body_done() {
            let mut data = up.read_response_body().await?;
            let end = data.is_none() || up.is_body_done();
            self.inner
                .upstream_response_body_filter(session, &mut data, end, ctx)?;
            if let Some(d) = data.filter(|d| !d.is_empty()) {
                bytes += d.len();
                if bytes > cc.cache.max_object_size() {
                    return Ok(());
                }
                w.write(&d).map_err(read_error)?;
            }
            if end {
                break;
            }
        }
        w.finish().map_err(read_error)?;
        self.connector.release(up, &peer);
        Ok(())
    }

    /// `response_body_filter` and the modules' body filters, for an answer
    /// that did not come from the upstream.
    fn down_body_filters(
        &self,
        session: &mut Session,
        data: &mut Option<Bytes>,
        end: bool,
        ctx: &mut SV::CTX,
    ) -> Result<Option<Duration>> {
        let delay = self.inner.response_body_filter(session, data, end, ctx)?;
        if !self.downstream_modules.is_empty() {
            if let Some(m) = session.modules() {
                m.response_body_filter(data, end)?;
            }
        }
        Ok(delay)
    }
}

/// A request header in HTTP/1.1 wire form, for the session a background
/// refresh runs on: the header's own `to_wire`, as HTTP/1.1, with `Host`
/// from the URI's authority when it has none (as an HTTP/2 request), and
/// without body framing (the refresh is a GET without a body).
fn request_wire(req: &pingora_http::RequestHeader) -> Result<bytes::Bytes> {
    let mut req = req.clone();
    req.set_version(http::Version::HTTP_11);
    req.remove_header(&CONTENT_LENGTH);
    req.remove_header(&TRANSFER_ENCODING);
    if !req.has_header(&http::header::HOST) {
        if let Some(a) = req.uri.authority().cloned() {
            req.insert_header(http::header::HOST, a.as_str())?;
        }
    }
    Ok(req.to_wire())
}

/// The stored object a refresh revalidates, looked up again: the variant
/// `meta` names when it varies.
fn stale_for(cc: &CacheCtx, meta: &CacheMeta) -> Option<pingora_cache::Hit> {
    let hit = cc.cache.lookup(&cc.key)?;
    if !hit.meta.vary_marker {
        return Some(hit);
    }
    cc.cache.lookup_variant(&cc.key, meta.variance.as_deref()?)
}

/// An empty body.
struct NoBody;

impl HitBody for NoBody {
    fn len(&self) -> u64 {
        0
    }

    fn read(&mut self, _at: u64, _max: usize) -> std::io::Result<Bytes> {
        Ok(Bytes::new())
    }
}
