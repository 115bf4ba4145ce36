//! [`ProxyHttp`]: the user's callbacks, one per phase of a proxied request.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::HeaderMap;
use pingora_cache::{CacheKey, CacheMeta, ForcedFreshness, PurgeStatus, RespCacheable};
use pingora_core::modules::http::HttpModules;
use pingora_core::protocols::Digest;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, Result};
use pingora_http::{RequestHeader, ResponseHeader};

use crate::Session;

/// The future an async phase returns, as `#[async_trait]` makes it.
pub type PhaseFuture<'f, T> = Pin<Box<dyn Future<Output = T> + Send + 'f>>;

/// A phase's default answer, ready at once. Zero-sized, so boxing it as a
/// [`PhaseFuture`] allocates nothing: the phases a proxy does not override
/// cost no allocation per request. (With `async fn` defaults,
/// `#[async_trait]` would box the arguments each time.)
struct Answer<const TRUE: bool>;

impl Future for Answer<false> {
    type Output = Result<bool>;
    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<bool>> {
        Poll::Ready(Ok(false))
    }
}

impl Future for Answer<true> {
    type Output = Result<bool>;
    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<bool>> {
        Poll::Ready(Ok(true))
    }
}

/// `Ok(())` at once; zero-sized like [`Answer`].
struct Done;

impl Future for Done {
    type Output = Result<()>;
    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// `()` at once; zero-sized like [`Answer`].
struct Nothing;

impl Future for Nothing {
    type Output = ();
    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        Poll::Ready(())
    }
}

/// `Ok(None)` at once; zero-sized like [`Answer`].
struct NotForced;

impl Future for NotForced {
    type Output = Result<Option<ForcedFreshness>>;
    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(Ok(None))
    }
}

/// What [`ProxyHttp::fail_to_proxy`] did about a failed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailToProxy {
    /// The HTTP status sent (or meant: for the log and the metrics); 0 for
    /// none.
    pub error_code: u16,
    /// Whether the client's connection may take another request. Only
    /// when the error response went out whole; a response that broke off
    /// always ends the connection.
    pub can_reuse_downstream: bool,
}

/// The phases of a proxied request, each with a default that does the
/// obvious thing; only [`upstream_peer`](Self::upstream_peer) must be
/// written. See `docs/PHASES.md` for when each runs.
///
/// Implement it with `#[async_trait]` on the `impl` block and `async fn`
/// phases, as with Pingora. (The defaults of the phases that run on every
/// request are written out in the form `#[async_trait]` gives them, so
/// that they need not allocate; an `async fn` override matches them.)
#[async_trait]
pub trait ProxyHttp: Send + Sync + 'static {
    /// Per-request state, made by [`new_ctx`](Self::new_ctx) and handed to
    /// every phase.
    type CTX: Send + Sync;

    /// A fresh context for a new request.
    fn new_ctx(&self) -> Self::CTX;

    /// Add the HTTP modules this proxy runs on every request (called once,
    /// when the proxy is made). The default adds none.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    /// First thing after the request header is read.
    fn early_request_filter<'s, 'a, 'b, 'f>(
        &'s self,
        _session: &'a mut Session,
        _ctx: &'b mut Self::CTX,
    ) -> PhaseFuture<'f, Result<()>>
    where
        's: 'f,
        'a: 'f,
        'b: 'f,
        Self: 'f,
    {
        Box::pin(Done)
    }

    /// Inspect or change the request; return `true` after answering it
    /// yourself (the request then ends here, nothing goes upstream).
    fn request_filter<'s, 'a, 'b, 'f>(
        &'s self,
        _session: &'a mut Session,
        _ctx: &'b mut Self::CTX,
    ) -> PhaseFuture<'f, Result<bool>>
    where
        's: 'f,
        'a: 'f,
        'b: 'f,
        Self: 'f,
    {
        Box::pin(Answer::<false>)
    }

    /// Each piece of the request body on its way upstream (`None` at the
    /// end); may change or drop it.
    fn request_body_filter<'s, 'a, 'b, 'c, 'f>(
        &'s self,
        _session: &'a mut Session,
        _body: &'b mut Option<Bytes>,
        _end_of_stream: bool,
        _ctx: &'c mut Self::CTX,
    ) -> PhaseFuture<'f, Result<()>>
    where
        's: 'f,
        'a: 'f,
        'b: 'f,
        'c: 'f,
        Self: 'f,
    {
        Box::pin(Done)
    }

    /// Whether to go upstream at all; `false` answers 502 unless a
    /// response was already written.
    fn proxy_upstream_filter<'s, 'a, 'b, 'f>(
        &'s self,
        _session: &'a mut Session,
        _ctx: &'b mut Self::CTX,
    ) -> PhaseFuture<'f, Result<bool>>
    where
        's: 'f,
        'a: 'f,
        'b: 'f,
        Self: 'f,
    {
        Box::pin(Answer::<true>)
    }

    /// Where to send this request. Called again on a retry, when
    /// `session.previous_error()` tells what went wrong.
    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>>;

    /// A connection to the upstream is ready: `reused` from the pool (or a
    /// shared HTTP/2 connection); `fd` its socket (-1 when unknown) and
    /// `digest` what is known of it (addresses, TLS session, set-up times),
    /// as Pingora's. To time the connect, note the time in
    /// `upstream_peer` (the connect starts when it returns).
    fn connected_to_upstream<'s, 'a, 'b, 'd, 'c, 'f>(
        &'s self,
        _session: &'a mut Session,
        _reused: bool,
        _peer: &'b HttpPeer,
        _fd: std::os::fd::RawFd,
        _digest: Option<&'d Digest>,
        _ctx: &'c mut Self::CTX,
    ) -> PhaseFuture<'f, Result<()>>
    where
        's: 'f,
        'a: 'f,
        'b: 'f,
        'd: 'f,
        'c: 'f,
        Self: 'f,
    {
        Box::pin(Done)
    }

    /// Change the request before it goes upstream.
    fn upstream_request_filter<'s, 'a, 'b, 'c, 'f>(
        &'s self,
        _session: &'a mut Session,
        _upstream_request: &'b mut RequestHeader,
        _ctx: &'c mut Self::CTX,
    ) -> PhaseFuture<'f, Result<()>>
    where
        's: 'f,
        'a: 'f,
        'b: 'f,
        'c: 'f,
        Self: 'f,
    {
        Box::pin(Done)
    }

    /// The upstream's response header, as it arrives (before
    /// [`response_filter`](Self::response_filter)).
    fn upstream_response_filter<'s, 'a, 'b, 'c, 'f>(
        &'s self,
        _session: &'a mut Session,
        _upstream_response: &'b mut ResponseHeader,
        _ctx: &'c mut Self::CTX,
    ) -> PhaseFuture<'f, Result<()>>
    where
        's: 'f,
        'a: 'f,
        'b: 'f,
        'c: 'f,
        Self: 'f,
    {
        Box::pin(Done)
    }

    /// Change the response header before it goes to the client.
    fn response_filter<'s, 'a, 'b, 'c, 'f>(
        &'s self,
        _session: &'a mut Session,
        _upstream_response: &'b mut ResponseHeader,
        _ctx: &'c mut Self::CTX,
    ) -> PhaseFuture<'f, Result<()>>
    where
        's: 'f,
        'a: 'f,
        'b: 'f,
        'c: 'f,
        Self: 'f,
    {
        Box::pin(Done)
    }

    /// Each piece of the upstream's response body, as it arrives (before
    /// [`response_body_filter`](Self::response_body_filter)). A duration
    /// returned delays sending the piece to the client by that long (a
    /// rate limit).
    ///
    /// # Errors
    ///
    /// The default never fails. An error ends the request (no retry): it goes
    /// to [`error_while_proxy`](Self::error_while_proxy) and
    /// [`fail_to_proxy`](Self::fail_to_proxy); a response already begun is cut short.
    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
        _ctx: &mut Self::CTX,
    ) -> Result<Option<Duration>> {
        Ok(None)
    }

    /// Each piece of the response body on its way to the client; may
    /// change or replace it.
    ///
    /// The Content-Length follows a change of size: a response header that
    /// has one waits for the first piece to come through this filter. When
    /// that piece is the whole body, the header gets its new length; when
    /// it is not and its size changed, the length is removed (the response
    /// goes chunked over HTTP/1). A filter that first changes size on a
    /// later piece, after the length went out, ends the response with an
    /// error (cut short, never longer than its length): remove
    /// Content-Length in `response_filter` when that may happen.
    ///
    /// A duration returned delays sending the piece by that long (a rate
    /// limit).
    ///
    /// # Errors
    ///
    /// The default never fails. An error ends the request (no retry): it goes
    /// to [`error_while_proxy`](Self::error_while_proxy) and
    /// [`fail_to_proxy`](Self::fail_to_proxy); a response already begun is cut short.
    fn response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
        _ctx: &mut Self::CTX,
    ) -> Result<Option<Duration>> {
        Ok(None)
    }

    /// The upstream's response trailers, as they arrive (before
    /// [`response_trailer_filter`](Self::response_trailer_filter)).
    ///
    /// # Errors
    ///
    /// The default never fails. An error ends the request (no retry): it goes
    /// to [`error_while_proxy`](Self::error_while_proxy) and
    /// [`fail_to_proxy`](Self::fail_to_proxy); a response already begun is cut short.
    fn upstream_response_trailer_filter(
        &self,
        _session: &mut Session,
        _upstream_trailers: &mut HeaderMap,
        _ctx: &mut Self::CTX,
    ) -> Result<()> {
        Ok(())
    }

    /// The response trailers on their way to the client. Returning bytes
    /// sends them as the last piece of the body instead of the trailers
    /// (how gRPC-web carries trailers, for example).
    async fn response_trailer_filter(
        &self,
        _session: &mut Session,
        _upstream_trailers: &mut HeaderMap,
        _ctx: &mut Self::CTX,
    ) -> Result<Option<Bytes>> {
        Ok(None)
    }

    /// Called exactly once per request, at the end, with the error if
    /// there was one.
    fn logging<'s, 'a, 'b, 'c, 'f>(
        &'s self,
        _session: &'a mut Session,
        _e: Option<&'b Error>,
        _ctx: &'c mut Self::CTX,
    ) -> PhaseFuture<'f, ()>
    where
        's: 'f,
        'a: 'f,
        'b: 'f,
        'c: 'f,
        Self: 'f,
    {
        Box::pin(Nothing)
    }

    /// An error after the upstream connection was made. Mark it retryable
    /// (`e.set_retry(true)`) to try again, or not; the proxy retries only
    /// while no response went to the client and all request body sent is
    /// still held (see `ProxyOptions::retry_buffer_size`). The error
    /// arrives already marked retryable when it is an upstream error on a
    /// reused (pooled) connection, which the upstream may have closed just
    /// as it was picked.
    fn error_while_proxy(
        &self,
        _peer: &HttpPeer,
        _session: &mut Session,
        e: Box<Error>,
        _ctx: &mut Self::CTX,
        _client_reused: bool,
    ) -> Box<Error> {
        e
    }

    /// Connecting to the upstream failed; decide whether to retry. The
    /// error arrives marked retryable when it is a connect error (refused,
    /// timed out, no route), not for TLS verification failures; change it
    /// with `e.set_retry(..)`. The next `upstream_peer` call sees this
    /// error in `session.previous_error()`.
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        _ctx: &mut Self::CTX,
        e: Box<Error>,
    ) -> Box<Error> {
        e
    }

    /// Answer a request that failed: 502 when no upstream could be
    /// reached, 504 on an upstream timeout, the parser's 4xx, else 500,
    /// with a short plain-text body; a gRPC call over HTTP/2 gets the
    /// matching `grpc-status` instead. Returns the HTTP status meant (0
    /// for none), and whether the client's connection may take another
    /// request (never, by default, after an error).
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        _ctx: &mut Self::CTX,
    ) -> FailToProxy {
        let code = crate::proxy::error_status(e);
        // 499: the client is gone, there is nobody to answer.
        if session.response_written().is_none() && code != 499 {
            let _ = if session.is_http2() && session.is_grpc() {
                session.respond_grpc_error(code).await
            } else {
                session.respond_error_with_text(code).await
            };
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// Whether to keep this error out of the error log.
    fn suppress_error_log(&self, _session: &Session, _ctx: &Self::CTX, _e: &Error) -> bool {
        false
    }

    /// One line that describes the request, for the proxy's error log line
    /// and its retry warning (asked for each, whatever the log level).
    fn request_summary(&self, session: &Session, _ctx: &Self::CTX) -> String {
        let req = session.req_header();
        format!(
            "{} {}, Host: {}",
            req.method,
            req.uri,
            req.headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .or_else(|| req.uri.authority().map(|a| a.as_str()))
                .unwrap_or("")
        )
    }

    /// Whether this request may be served from a cache, and which: call
    /// [`Session::cache_enable`] for it. The default enables none. (Runs
    /// after `request_filter`; see `docs/CACHE.md`.)
    ///
    /// # Errors
    ///
    /// An error fails the request, as any phase's does.
    fn request_cache_filter(&self, _session: &mut Session, _ctx: &mut Self::CTX) -> Result<()> {
        Ok(())
    }

    /// The request's cache key. The default is [`CacheKey::default`]: the
    /// host and the path with query (after `https://` for a TLS client).
    /// Getting it wrong mixes up objects: put in it whatever the
    /// upstream's answer depends on.
    ///
    /// # Errors
    ///
    /// An error fails the request.
    fn cache_key_callback(&self, session: &Session, _ctx: &mut Self::CTX) -> Result<CacheKey> {
        let key = CacheKey::default(session.req_header());
        if session.tls_digest().is_none() {
            return Ok(key);
        }
        // Over TLS: apart from the plain listener's objects (a redirect to
        // https cached for http clients must not reach https ones).
        let primary = format!("https://{}", key.primary());
        Ok(CacheKey::new(key.namespace(), primary, key.user_tag()))
    }

    /// A cacheable request found nothing usable in the cache and goes
    /// upstream (called once, before `proxy_upstream_filter`).
    fn cache_miss(&self, _session: &mut Session, _ctx: &mut Self::CTX) {}

    /// A stored response was found (`is_fresh` or not): overrule its
    /// freshness, or not (`None`, the default).
    fn cache_hit_filter<'s, 'a, 'm, 'c, 'f>(
        &'s self,
        _session: &'a mut Session,
        _meta: &'m CacheMeta,
        _is_fresh: bool,
        _ctx: &'c mut Self::CTX,
    ) -> PhaseFuture<'f, Result<Option<ForcedFreshness>>>
    where
        's: 'f,
        'a: 'f,
        'm: 'f,
        'c: 'f,
        Self: 'f,
    {
        Box::pin(NotForced)
    }

    /// Whether to store the upstream's response (after
    /// `upstream_response_filter`). The default follows RFC 9111 for a
    /// shared cache ([`pingora_cache::filters::resp_cacheable`]).
    ///
    /// # Errors
    ///
    /// An error fails the request.
    fn response_cache_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        _ctx: &mut Self::CTX,
    ) -> Result<RespCacheable> {
        Ok(crate::proxy::cache::default_cacheable(session, resp))
    }

    /// The variance (secondary key) of a response that varies, for this
    /// request; `None` for one that does not. The default is made from the
    /// request fields the response's `Vary` names
    /// ([`pingora_cache::vary::variance`]).
    fn cache_vary_filter(
        &self,
        meta: &CacheMeta,
        _ctx: &mut Self::CTX,
        req: &RequestHeader,
    ) -> Option<Vec<u8>> {
        pingora_cache::vary::variance(&meta.headers, &req.headers)
    }

    /// Whether the request's conditions let a response from the cache
    /// (`resp`) be answered `304 Not Modified`. The default applies
    /// `If-None-Match` and `If-Modified-Since` (RFC 9110 §13.2.2).
    ///
    /// # Errors
    ///
    /// An error fails the request.
    fn cache_not_modified_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        _ctx: &mut Self::CTX,
    ) -> Result<bool> {
        let req = &session.req_header().headers;
        Ok(pingora_cache::conditional::not_modified(
            req,
            resp.status,
            &resp.headers,
        ))
    }

    /// Whether a stale response may be served, within what its
    /// `stale-while-revalidate` (`error` is `None`) or `stale-if-error`
    /// allows. The default allows both; on an error, only an upstream's.
    /// (Pingora's default refuses stale-while-revalidate.)
    fn should_serve_stale(
        &self,
        _session: &mut Session,
        _ctx: &mut Self::CTX,
        error: Option<&Error>,
    ) -> bool {
        error.is_none_or(|e| *e.esource() == pingora_error::ErrorSource::Upstream)
    }

    /// Whether this request purges its cache key (and the key's
    /// variants) instead of being proxied. The default: never. A purge
    /// is answered 200 (found), 404 (not found) or 405 (no cache enabled).
    fn is_purge(&self, _session: &Session, _ctx: &Self::CTX) -> bool {
        false
    }

    /// Change the answer to a purge.
    ///
    /// # Errors
    ///
    /// An error fails the request (answered 500).
    fn purge_response_filter(
        &self,
        _session: &Session,
        _ctx: &mut Self::CTX,
        _purge_status: PurgeStatus,
        _purge_response: &mut ResponseHeader,
    ) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_answers_are_zero_sized_so_boxing_them_does_not_allocate() {
        assert_eq!(std::mem::size_of::<Answer<true>>(), 0);
        assert_eq!(std::mem::size_of::<Answer<false>>(), 0);
        assert_eq!(std::mem::size_of::<Done>(), 0);
        assert_eq!(std::mem::size_of::<Nothing>(), 0);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut yes: PhaseFuture<'_, Result<bool>> = Box::pin(Answer::<true>);
        assert!(matches!(yes.as_mut().poll(&mut cx), Poll::Ready(Ok(true))));
        let mut no: PhaseFuture<'_, Result<bool>> = Box::pin(Answer::<false>);
        assert!(matches!(no.as_mut().poll(&mut cx), Poll::Ready(Ok(false))));
    }
}
