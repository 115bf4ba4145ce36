//! The cache phases of a request (see `docs/CACHE.md`): the lookup before
//! going upstream (a fresh hit is served, a stale one revalidated or
//! served while revalidating, concurrent misses collapsed), the
//! conditional request of a revalidation, the fill of a storable
//! response as it streams to the client, stale-if-error, and the
//! invalidation that unsafe methods cause (RFC 9111 §4.4).

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{
    CONTENT_LENGTH, CONTENT_LOCATION, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE,
    IF_UNMODIFIED_SINCE, LOCATION, PRAGMA, RANGE,
};
use http::{Method, StatusCode};
use pingora_cache::freshness::Freshness;
use pingora_cache::lock::{Locked, Writer};
use pingora_cache::{
    CacheControl, CacheKey, CacheMeta, CacheStatus, ForcedFreshness, Hit, HttpCache, MissWriter,
    NoCacheReason, RespCacheable,
};
use pingora_error::{Error, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use tracing::warn;

use super::HttpProxy;
use crate::{ProxyHttp, Session};

/// What the cache knows about a request that goes upstream.
pub(crate) struct CacheCtx {
    pub(super) cache: HttpCache,
    pub(super) key: CacheKey,
    /// A stored response no longer fresh: revalidated with a conditional
    /// request, or served if the upstream fails (stale-if-error).
    pub(super) stale: Option<Hit>,
    /// The upstream request carries our validators.
    pub(super) revalidate: bool,
    /// The stale object was fresh: the request's directives forced the
    /// trip upstream.
    pub(super) by_request: bool,
    /// The response may be stored (a GET the request lets be stored).
    pub(super) fill_allowed: bool,
    /// This request fills the key for the others waiting on it.
    lock: Option<Writer<Vec<u8>, Arc<CacheMeta>>>,
    /// The object being stored.
    fill: Option<Fill>,
    /// An unsafe method: the key is invalidated after a non-error answer.
    pub(super) invalidate: bool,
    /// The request's `only-if-cached`: a miss is answered 504.
    only_if_cached: bool,
}

/// An object being stored as its body streams by.
struct Fill {
    writer: Box<dyn MissWriter>,
    bytes: usize,
    max: usize,
}

/// The outcome of the lookup.
pub(super) enum Lookup {
    /// Answered from the cache (or a purge): nothing goes upstream.
    Served,
    /// Go upstream, with what the cache needs of the exchange.
    Proceed(Option<Box<CacheCtx>>),
}

/// The request's own directives, `Pragma: no-cache` read as `no-cache`
/// when it has no `Cache-Control` (RFC 9111 §5.4).
fn request_directives(req: &RequestHeader) -> CacheControl {
    let mut cc = CacheControl::parse(&req.headers);
    if !CacheControl::present(&req.headers)
        && req
            .headers
            .get_all(PRAGMA)
            .iter()
            .any(|v| v.as_bytes().eq_ignore_ascii_case(b"no-cache"))
    {
        cc.no_cache = true;
    }
    cc
}

/// Seconds, signed: freshness left (or, negative, past it).
pub(super) fn ttl(f: &Freshness, now: SystemTime) -> i64 {
    let age = f.age(now).as_secs() as i64;
    (f.lifetime.as_secs() as i64).saturating_sub(age)
}

/// The upstream's response header arrived: noted for its age.
#[inline(never)]
pub(super) fn response_arrived(session: &mut Session) {
    if let Some(t) = session.state_mut().cache_timing.as_mut() {
        t.response_time = SystemTime::now();
    }
}

/// The RFC 9111 decision of the default `response_cache_filter`.
pub(crate) fn default_cacheable(session: &Session, resp: &ResponseHeader) -> RespCacheable {
    let req = session.req_header();
    let timing = session
        .state()
        .and_then(|s| s.cache_timing)
        .unwrap_or_else(|| pingora_cache::freshness::Timing::at(SystemTime::now()));
    pingora_cache::filters::resp_cacheable(
        &req.method,
        &req.headers,
        resp.status,
        &resp.headers,
        timing,
    )
}

impl<SV: ProxyHttp> HttpProxy<SV> {
    /// Before going upstream: purge, serve from the cache, or go upstream
    /// knowing what to store.
    pub(super) async fn cache_lookup(
        self: &Arc<Self>,
        session: &mut Session,
        ctx: &mut SV::CTX,
    ) -> Result<Lookup> {
        let cache = session.state().and_then(|s| s.cache.clone());
        if self.inner.is_purge(session, ctx) {
            self.purge(session, ctx, cache.as_ref()).await?;
            return Ok(Lookup::Served);
        }
        let Some(cache) = cache else {
            return Ok(Lookup::Proceed(None));
        };
        let method = session.req_header().method.clone();
        if !CacheKey::host_agrees(session.req_header()) {
            // Which host would the answer be for? Not cached, either way.
            session.set_cache_status(CacheStatus::Bypass);
            return Ok(Lookup::Proceed(None));
        }
        if method != Method::GET && method != Method::HEAD {
            session.set_cache_status(CacheStatus::Bypass);
            if matches!(method, Method::OPTIONS | Method::TRACE) {
                return Ok(Lookup::Proceed(None));
            }
            // Unsafe: invalidate after a non-error answer.
            let key = self.inner.cache_key_callback(session, ctx)?;
            let mut cc = CacheCtx::new(cache, key);
            cc.invalidate = true;
            return Ok(Lookup::Proceed(Some(Box::new(cc))));
        }
        let key = self.inner.cache_key_callback(session, ctx)?;
        let req_cc = request_directives(session.req_header());
        let mut hit = cache.lookup(&key);
        if let Some(marker) = hit.take_if(|h| h.meta.vary_marker) {
            hit = self
                .inner
                .cache_vary_filter(&marker.meta, ctx, session.req_header())
                .and_then(|v| cache.lookup_variant(&key, &v));
        }
        let mut cc = CacheCtx::new(cache, key);
        cc.fill_allowed = method == Method::GET && !req_cc.no_store;
        cc.only_if_cached = req_cc.only_if_cached;
        if let Some(hit) = hit {
            let now = SystemTime::now();
            let f = hit.meta.freshness(true);
            let mut usable = f.satisfies(&req_cc, now);
            match self
                .inner
                .cache_hit_filter(session, &hit.meta, usable, ctx)
                .await?
            {
                Some(ForcedFreshness::ForceFresh) => usable = true,
                Some(ForcedFreshness::ForceExpired) => usable = false,
                Some(ForcedFreshness::ForceMiss) => return self.miss(session, ctx, cc).await,
                None => {}
            }
            if usable {
                let status = CacheStatus::Hit { ttl: ttl(&f, now) };
                self.serve_hit(session, ctx, hit, status, f.age(now))
                    .await?;
                return Ok(Lookup::Served);
            }
            // A request that bounds the age it accepts, or keeps the
            // exchange out of caches, gets no stale answer nor a refresh.
            let swr = !req_cc.no_cache
                && !req_cc.no_store
                && req_cc.max_age.is_none()
                && req_cc.min_fresh.is_none()
                && !f.is_fresh(now)
                && f.serve_while_revalidating(now)
                && self.inner.should_serve_stale(session, ctx, None);
            if swr {
                let meta = hit.meta.clone();
                let status = CacheStatus::Stale {
                    ttl: ttl(&f, now),
                    on_error: false,
                };
                self.serve_hit(session, ctx, hit, status, f.age(now))
                    .await?;
                // The client has its answer; now refresh the object.
                cc.revalidate = meta.has_validator();
                self.refresh_in_background(session, cc, meta);
                return Ok(Lookup::Served);
            }
            cc.revalidate = hit.meta.has_validator() && method == Method::GET;
            // Fresh, but the request would not have it as it is.
            cc.by_request = f.is_fresh(now);
            cc.stale = Some(hit);
        }
        self.miss(session, ctx, cc).await
    }

    /// Nothing usable in the cache: tell the user, then take the lock
    /// (first of concurrent misses) or wait on the fill under way and be
    /// served from it.
    async fn miss(
        &self,
        session: &mut Session,
        ctx: &mut SV::CTX,
        mut cc: CacheCtx,
    ) -> Result<Lookup> {
        if cc.only_if_cached {
            // RFC 9111 §5.2.1.7: nothing usable stored, and the client
            // will not have it fetched.
            let status = CacheStatus::Miss {
                stored: false,
                detail: Some("only-if-cached"),
            };
            session.set_cache_status(status);
            let mut resp = ResponseHeader::build(504, Some(2))?;
            resp.insert_header(CONTENT_LENGTH, "0")?;
            resp.insert_header("cache-status", status.header_value(cc.cache.name()))?;
            session.write_response_header(Box::new(resp), true).await?;
            return Ok(Lookup::Served);
        }
        self.inner.cache_miss(session, ctx);
        if cc.fill_allowed && cc.stale.is_none() {
            if let Some(lock) = cc.cache.lock() {
                match lock.lock(&cc.key.storage_key()) {
                    Locked::Write(w) => cc.lock = Some(w),
                    Locked::Read(r) => {
                        if self.serve_collapsed(session, ctx, r).await? {
                            return Ok(Lookup::Served);
                        }
                        // The fill failed or took too long: go upstream.
                    }
                }
            }
        }
        Ok(Lookup::Proceed(Some(Box::new(cc))))
    }

    /// A purge: remove the key and its variants (or, for a key ending in
    /// `*`, every key it begins), answer 200, 404, or 405 when no cache is
    /// enabled for the request.
    async fn purge(
        &self,
        session: &mut Session,
        ctx: &mut SV::CTX,
        cache: Option<&HttpCache>,
    ) -> Result<()> {
        use pingora_cache::PurgeStatus;
        let status = match cache {
            None => PurgeStatus::NoCache,
            Some(c) => {
                // A key ending in `*` purges every key it begins.
                let key = self.inner.cache_key_callback(session, ctx)?;
                let n = match key.primary().strip_suffix('*') {
                    Some(prefix) => c.purge_prefix(key.namespace(), prefix).unwrap_or(0),
                    None => c.purge(&key),
                };
                match n {
                    0 => PurgeStatus::NotFound,
                    n => PurgeStatus::Found(n),
                }
            }
        };
        session.set_cache_status(CacheStatus::Bypass);
        let mut resp = ResponseHeader::build(status.http_status(), Some(2))?;
        resp.insert_header(CONTENT_LENGTH, "0")?;
        if let Err(e) = self
            .inner
            .purge_response_filter(session, ctx, status, &mut resp)
        {
            warn!("purge_response_filter: {e}");
            resp = ResponseHeader::build(500, Some(1))?;
            resp.insert_header(CONTENT_LENGTH, "0")?;
        }
        session.write_response_header(Box::new(resp), true).await
    }

    /// After an unsafe method's non-error answer: invalidate its key and
    /// the same-host `Location` and `Content-Location` (RFC 9111 §4.4).
    pub(super) fn cache_invalidate(&self, session: &Session, cc: &CacheCtx) {
        let Some(status) = session.response_written().map(|r| r.status()) else {
            return;
        };
        if !(status.is_success() || status.is_redirection()) {
            return;
        }
        cc.cache.purge(&cc.key);
        let host = CacheKey::request_host(session.req_header()).to_ascii_lowercase();
        // The default key's form: `https://` first for a TLS client.
        let scheme = if cc.key.primary().starts_with("https://") {
            "https://"
        } else {
            ""
        };
        let resp = session.response_written().map(|r| r.headers.clone());
        for name in [LOCATION, CONTENT_LOCATION] {
            let Some(uri) = resp
                .as_ref()
                .and_then(|h| h.get(&name))
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<http::Uri>().ok())
            else {
                continue;
            };
            let same_host = uri
                .authority()
                .is_none_or(|a| a.as_str().eq_ignore_ascii_case(&host));
            let Some(path) = uri.path_and_query().filter(|_| same_host) else {
                continue;
            };
            let key = CacheKey::new(cc.key.namespace(), format!("{scheme}{host}{path}"), "");
            cc.cache.purge(&key);
        }
    }

    /// The upstream request of a cached GET: our validators when
    /// revalidating (then without the client's conditions and range: the
    /// whole object is wanted); without the client's conditions when the
    /// response may be stored and the client asked for no range. The request's
    /// time is noted for the age of what comes back. (Not inlined, nor
    /// are the other cache steps the per-request path calls: they would
    /// crowd out what it inlines when no cache is on.)
    #[inline(never)]
    pub(super) fn cache_upstream_request(
        &self,
        session: &mut Session,
        cc: &CacheCtx,
        req: &mut RequestHeader,
    ) -> Result<()> {
        let now = SystemTime::now();
        session.state_mut().cache_timing = Some(pingora_cache::freshness::Timing::at(now));
        if !cc.fill_allowed && !cc.revalidate {
            return Ok(());
        }
        // The client's own conditions would turn the answer into a 304 or
        // 412 that cannot be stored; its `Range` stays on a miss (the
        // upstream's 206 goes to the client, not into the cache; a whole
        // GET fills it).
        if req.headers.contains_key(RANGE) && !cc.revalidate {
            return Ok(());
        }
        for name in [
            IF_NONE_MATCH,
            IF_MODIFIED_SINCE,
            IF_MATCH,
            IF_UNMODIFIED_SINCE,
            IF_RANGE,
            RANGE,
        ] {
            req.remove_header(&name);
        }
        if let (true, Some(stale)) = (cc.revalidate, &cc.stale) {
            if let Some(etag) = stale.meta.etag() {
                req.insert_header(IF_NONE_MATCH, etag.clone())?;
            }
            if let Some(lm) = stale.meta.last_modified() {
                req.insert_header(IF_MODIFIED_SINCE, lm.clone())?;
            }
        }
        Ok(())
    }

    /// The upstream's response header (after `upstream_response_filter`):
    /// decide whether to store it, start the fill, and say so in
    /// `Cache-Status`.
    #[inline(never)]
    pub(super) fn cache_response(
        &self,
        session: &mut Session,
        cc: &mut CacheCtx,
        resp: &mut ResponseHeader,
        ctx: &mut SV::CTX,
    ) -> Result<()> {
        if cc.invalidate {
            let status = CacheStatus::Bypass;
            resp.insert_header("cache-status", status.header_value(cc.cache.name()))?;
            return Ok(());
        }
        if resp.status == StatusCode::NOT_MODIFIED {
            // The upstream answered the client's own condition.
            let status = CacheStatus::Miss {
                stored: false,
                detail: Some("status"),
            };
            cc.lock = None;
            resp.insert_header("cache-status", status.header_value(cc.cache.name()))?;
            session.set_cache_status(status);
            return Ok(());
        }
        let decision = if cc.fill_allowed {
            self.inner.response_cache_filter(session, resp, ctx)?
        } else {
            // A HEAD, or a request with `no-store`.
            let why = if session.req_header().method == Method::HEAD {
                pingora_cache::storable::NotStorable::Method
            } else {
                pingora_cache::storable::NotStorable::NoStore
            };
            RespCacheable::Uncacheable(NoCacheReason::NotStorable(why))
        };
        let stored = match decision {
            RespCacheable::Cacheable(meta) => self.start_fill(session, cc, meta, ctx),
            RespCacheable::Uncacheable(r) => Err(r),
        };
        let status = match (&cc.stale, stored) {
            (Some(_), s) => CacheStatus::Revalidated {
                fwd_status: resp.status.as_u16(),
                stored: s.is_ok(),
                by_request: cc.by_request,
            },
            (None, Ok(())) => CacheStatus::Miss {
                stored: true,
                detail: None,
            },
            (None, Err(r)) => CacheStatus::Miss {
                stored: false,
                detail: Some(r.as_str()),
            },
        };
        // Waiters are let go at once when nothing will be stored.
        if cc.fill.is_none() {
            cc.lock = None;
        }
        resp.insert_header("cache-status", status.header_value(cc.cache.name()))?;
        session.set_cache_status(status);
        Ok(())
    }

    /// Open the store's writer for a storable response, and publish its
    /// header to the requests waiting on the lock.
    fn start_fill(
        &self,
        session: &Session,
        cc: &mut CacheCtx,
        mut meta: CacheMeta,
        ctx: &mut SV::CTX,
    ) -> std::result::Result<(), NoCacheReason> {
        let max = cc.cache.max_object_size();
        let too_big = meta
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .is_some_and(|n| n > max as u64);
        if too_big {
            return Err(NoCacheReason::ResponseTooLarge);
        }
        let variance = if meta.varies() {
            self.inner
                .cache_vary_filter(&meta, ctx, session.req_header())
        } else {
            None
        };
        let storage_key = cc.cache.storage_key_for(&cc.key, &mut meta, variance);
        let writer = cc
            .cache
            .writer(&storage_key, &meta)
            .map_err(|_| NoCacheReason::StorageError)?;
        // Waiters may share only a body whose length is known up front.
        let shareable = meta.headers.contains_key(CONTENT_LENGTH);
        match (&cc.lock, shareable) {
            (Some(lock), true) => lock.header(Arc::new(meta)),
            _ => cc.lock = None,
        }
        cc.fill = Some(Fill {
            writer,
            bytes: 0,
            max,
        });
        Ok(())
    }
}

impl CacheCtx {
    fn new(cache: HttpCache, key: CacheKey) -> CacheCtx {
        CacheCtx {
            cache,
            key,
            stale: None,
            revalidate: false,
            by_request: false,
            fill_allowed: false,
            lock: None,
            fill: None,
            invalidate: false,
            only_if_cached: false,
        }
    }

    /// A piece of the stored body (as `upstream_response_body_filter`
    /// left it); the end stores the object and frees the lock. A piece
    /// past the largest object, or a store's error, ends the fill and
    /// lets the waiters go upstream.
    #[inline(never)]
    pub(super) fn fill_piece(&mut self, data: Option<&Bytes>, end: bool) {
        let Some(fill) = self.fill.as_mut() else {
            return;
        };
        if let Some(d) = data.filter(|d| !d.is_empty()) {
            fill.bytes += d.len();
            if fill.bytes > fill.max || fill.writer.write(d).is_err() {
                self.fill = None;
                self.lock = None;
                return;
            }
            if let Some(l) = &self.lock {
                l.body(d.clone());
            }
        }
        if end {
            let fill = self.fill.take().expect("checked above");
            let lock = self.lock.take();
            let blocks = fill.writer.blocks();
            // The object is in the store before the key is free; the
            // waiters have every piece either way.
            let finish = move || {
                if let Err(e) = fill.writer.finish() {
                    warn!("storing a cached object: {e}");
                }
                if let Some(l) = lock {
                    l.finish();
                }
            };
            if blocks {
                // A disk store syncs the file: not on the runtime's thread.
                tokio::task::spawn_blocking(finish);
            } else {
                finish();
            }
        }
    }

    /// Take in a 304 that revalidated the stale object: its meta updated
    /// (and stored), the object to serve.
    pub(super) fn revalidated(
        &mut self,
        not_modified: &ResponseHeader,
        timing: pingora_cache::freshness::Timing,
    ) -> Option<Hit> {
        let mut hit = self.stale.take()?;
        // A 304 whose validator names another representation than the
        // stored one does not update it (RFC 9111 §4.3.4).
        let other = |n: http::header::HeaderName, ours: Option<&http::HeaderValue>| matches!((not_modified.headers.get(&n), ours), (Some(a), Some(b)) if a != b);
        if other(http::header::ETAG, hit.meta.etag())
            || other(http::header::LAST_MODIFIED, hit.meta.last_modified())
        {
            return Some(hit);
        }
        let mut meta = (*hit.meta).clone();
        meta.merge_not_modified(&not_modified.headers, timing);
        let meta = Arc::new(meta);
        let storage = self.cache.storage().clone();
        let (key, stored) = (hit.storage_key.clone(), meta.clone());
        // A disk store rewrites the object: not on the runtime's thread.
        tokio::task::spawn_blocking(move || {
            if let Err(e) = storage.update_meta(&key, &stored) {
                warn!("updating a revalidated object: {e}");
            }
        });
        hit.meta = meta;
        Some(hit)
    }
}

/// An error for a response the cache could not read.
pub(super) fn read_error(e: std::io::Error) -> Box<Error> {
    Error::because(
        pingora_error::ErrorType::InternalError,
        "reading a cached object",
        e,
    )
}
