//! [`Session`]: the downstream session as the proxy's phases see it.

use std::collections::VecDeque;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use pingora_cache::freshness::Timing;
use pingora_cache::{CacheStatus, HttpCache};
use pingora_core::modules::http::HttpModuleCtx;
use pingora_core::protocols::http::ServerSession;
use pingora_error::{Error, Result};
use pingora_http::ResponseHeader;

/// Names the type; its state is not shown.
impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").finish_non_exhaustive()
    }
}

/// The downstream request being proxied: a [`ServerSession`] (HTTP/1 or
/// HTTP/2, through `Deref`) plus what the proxy knows about it.
#[repr(transparent)]
pub struct Session(ServerSession);

/// The proxy's per-request state, kept in the session's extensions (which
/// the server clears for every request).
#[derive(Default, Clone)]
pub(crate) struct ProxyState {
    pub(crate) previous_error: Option<Arc<Error>>,
    pub(crate) retries: usize,
    /// Request body read ahead of `upstream_peer`, not yet filtered or sent.
    pub(crate) read_ahead: VecDeque<Bytes>,
    /// Request body (after `request_body_filter`) sent upstream, kept so
    /// that a retry can send it again.
    pub(crate) sent: Vec<Bytes>,
    pub(crate) sent_len: usize,
    /// Some request body went upstream and was not kept: no retry.
    pub(crate) sent_lost: bool,
    /// `request_body_filter` has seen the end of the body.
    pub(crate) end_filtered: bool,
    /// The request's spans, when tracing is on.
    #[cfg(feature = "otel")]
    pub(crate) trace: Option<crate::otel::RequestTrace>,
    /// The cache `request_cache_filter` enabled for the request.
    pub(crate) cache: Option<HttpCache>,
    /// How the cache took part, once it did.
    pub(crate) cache_status: Option<CacheStatus>,
    /// When the upstream request went out and its response came (for the
    /// age of what is stored).
    pub(crate) cache_timing: Option<Timing>,
}

impl Session {
    /// View a server session as a proxy session.
    pub fn from_mut(s: &mut ServerSession) -> &mut Session {
        // SAFETY: `Session` is `repr(transparent)` over `ServerSession`.
        unsafe { &mut *(s as *mut ServerSession as *mut Session) }
    }

    /// The request's modules (`downstream_modules_ctx`, Pingora's field,
    /// which the phases reach through the session), if it has any.
    pub(crate) fn modules(&mut self) -> Option<&mut HttpModuleCtx> {
        let m = &mut self.0.downstream_modules_ctx;
        (!m.is_empty()).then_some(m)
    }

    pub(crate) fn state(&self) -> Option<&ProxyState> {
        self.0.extensions().get::<ProxyState>()
    }

    pub(crate) fn state_mut(&mut self) -> &mut ProxyState {
        let ext = self.0.extensions_mut();
        if ext.get::<ProxyState>().is_none() {
            ext.insert(ProxyState::default());
        }
        ext.get_mut::<ProxyState>().expect("just inserted")
    }

    /// Serve this request through `cache` (call it in
    /// `request_cache_filter`). Pingora's `session.cache.enable(..)`.
    pub fn cache_enable(&mut self, cache: &HttpCache) {
        self.state_mut().cache = Some(cache.clone());
    }

    /// Serve this request without a cache after all.
    pub fn cache_disable(&mut self) {
        if self.state().is_some_and(|s| s.cache.is_some()) {
            self.state_mut().cache = None;
        }
    }

    /// Whether a cache is enabled for this request.
    pub fn cache_enabled(&self) -> bool {
        self.state().is_some_and(|s| s.cache.is_some())
    }

    /// How the cache took part in this request (for `logging`), once it
    /// did: a hit, a miss, stale...
    pub fn cache_status(&self) -> Option<CacheStatus> {
        self.state()?.cache_status
    }

    pub(crate) fn set_cache_status(&mut self, status: CacheStatus) {
        self.state_mut().cache_status = Some(status);
        crate::metrics::proxy().cache_status(status);
    }

    /// The error of the previous attempt, when `upstream_peer` is called
    /// again for a retry.
    pub fn previous_error(&self) -> Option<&Error> {
        self.state()?.previous_error.as_deref()
    }

    /// How many times this request has been retried.
    pub fn retries(&self) -> usize {
        self.state().map_or(0, |s| s.retries)
    }

    /// Read the request body ahead of `upstream_peer` (e.g. to route on it
    /// in `request_filter`), until its end or until more than `limit`
    /// bytes are held. Returns what has been read ahead so far (the whole
    /// body when [`is_body_done`](ServerSession::is_body_done)); all of it
    /// still goes upstream, through `request_body_filter`.
    ///
    /// # Errors
    ///
    /// A failed read of the client's body: `ReadError`, `ReadTimedout`,
    /// `ConnectionClosed` (cut short), `BodyTooLarge` (over the limit),
    /// `InvalidHTTPHeader` (bad chunking) or `H2Error`; `WriteError` or
    /// `WriteTimedout` if an awaited `100 Continue` cannot be sent.
    pub async fn read_body_ahead(&mut self, limit: usize) -> Result<Bytes> {
        let mut held: usize = self
            .state()
            .map_or(0, |s| s.read_ahead.iter().map(Bytes::len).sum());
        while held <= limit && !self.0.is_body_done() {
            match self.0.read_request_body().await? {
                Some(b) => {
                    held += b.len();
                    self.state_mut().read_ahead.push_back(b);
                }
                None => break,
            }
        }
        let Some(state) = self.state() else {
            return Ok(Bytes::new());
        };
        if state.read_ahead.len() == 1 {
            return Ok(state.read_ahead[0].clone());
        }
        let mut all = BytesMut::with_capacity(held);
        for b in &state.read_ahead {
            all.extend_from_slice(b);
        }
        Ok(all.freeze())
    }

    /// While the request body is not all read (`!ended`): its next piece.
    /// After that: an error once the client goes away (never `Ok`), unless
    /// `ignore_abort`, when this simply pends.
    pub(crate) async fn body_or_gone(
        &mut self,
        ended: bool,
        ignore_abort: bool,
    ) -> Result<Option<Bytes>> {
        if !ended {
            return self.0.read_request_body().await;
        }
        if ignore_abort {
            return std::future::pending().await;
        }
        std::future::poll_fn(|cx| self.0.poll_client_gone(cx)).await;
        Err(Error::explain(
            pingora_error::ErrorType::ConnectionClosed,
            "the client went away before the response ended",
        )
        .into_down())
    }

    /// Whether request body is waiting in the proxy (read ahead, or kept
    /// for a retry) besides what the client has yet to send.
    pub(crate) fn has_held_body(&self) -> bool {
        self.state()
            .is_some_and(|s| !s.read_ahead.is_empty() || !s.sent.is_empty())
    }

    /// Run `f` on the request's trace, if tracing is on.
    #[cfg(feature = "otel")]
    pub(crate) fn trace<T>(
        &mut self,
        f: impl FnOnce(&mut crate::otel::RequestTrace) -> T,
    ) -> Option<T> {
        self.state_mut().trace.as_mut().map(f)
    }

    /// Whether request body read ahead still waits to go upstream.
    pub(crate) fn has_read_ahead(&self) -> bool {
        self.state().is_some_and(|s| !s.read_ahead.is_empty())
    }

    /// Whether this is a gRPC call (`content-type: application/grpc…`).
    pub fn is_grpc(&self) -> bool {
        self.0
            .req_header()
            .header_values(&http::header::CONTENT_TYPE)
            .next()
            .is_some_and(|v| v.starts_with(b"application/grpc"))
    }

    /// Answer a gRPC call that failed with HTTP status `code` the way gRPC
    /// clients understand: 200 with `grpc-status` and `grpc-message` in a
    /// header block that ends the stream ("Trailers-Only"), the status
    /// mapped as gRPC's HTTP mapping says (502/503 → UNAVAILABLE, 504 →
    /// DEADLINE_EXCEEDED, …).
    ///
    /// # Errors
    ///
    /// `H1Error` or `H2Error` if a response header was already written (or
    /// the HTTP/2 stream failed); `WriteError` or `WriteTimedout` if writing
    /// to the client fails.
    pub async fn respond_grpc_error(&mut self, code: u16) -> Result<()> {
        let (status, message) = match code {
            400 => (13, "bad request"),
            401 => (16, "unauthenticated"),
            403 => (7, "permission denied"),
            404 => (12, "not found"),
            413 | 429 => (8, "resource exhausted"),
            502 | 503 => (14, "upstream unavailable"),
            504 => (4, "upstream timed out"),
            _ => (2, "proxy error"),
        };
        let mut resp = ResponseHeader::build(200, Some(4))?;
        resp.insert_header("content-type", "application/grpc")?;
        resp.insert_header("grpc-status", status.to_string())?;
        resp.insert_header("grpc-message", format!("{message} (HTTP {code})"))?;
        self.0.write_response_header_eos(Box::new(resp), true).await
    }

    /// Answer with `code` and a short plain-text body naming it; the
    /// connection closes afterwards if it is HTTP/1.
    ///
    /// # Errors
    ///
    /// `InvalidHTTPHeader` if `code` is not a valid status (100 to 999);
    /// `H1Error` or `H2Error` if a response header was already written (or
    /// the HTTP/2 stream failed); `WriteError` or `WriteTimedout` if writing
    /// to the client fails.
    pub async fn respond_error_with_text(&mut self, code: u16) -> Result<()> {
        let reason = http::StatusCode::from_u16(code)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error");
        let body = Bytes::from(format!("{code} {reason}\n"));
        self.respond_error_inner(code, body, true).await
    }

    /// Answer with `code` and `body` (sent as plain text), as Pingora's:
    /// whether the connection goes on is left to the caller
    /// (`set_keepalive`; after a failed request, `FailToProxy`'s
    /// `can_reuse_downstream`).
    ///
    /// # Errors
    ///
    /// As [`respond_error_with_text`](Self::respond_error_with_text):
    /// `InvalidHTTPHeader` for an invalid `code`, `H1Error` or `H2Error`,
    /// `WriteError` or `WriteTimedout`.
    pub async fn respond_error_with_body(&mut self, code: u16, body: Bytes) -> Result<()> {
        self.respond_error_inner(code, body, false).await
    }

    async fn respond_error_inner(&mut self, code: u16, body: Bytes, close: bool) -> Result<()> {
        let mut resp = ResponseHeader::build(code, Some(3))?;
        resp.insert_header("Content-Type", "text/plain")?;
        resp.insert_header("Content-Length", body.len().to_string())?;
        if close && !self.0.is_http2() {
            resp.insert_header("Connection", "close")?;
            self.0.set_keepalive(None);
        }
        self.0.write_response_header(Box::new(resp)).await?;
        if !body.is_empty() {
            self.0.write_response_body(body).await?;
        }
        self.0.finish_body().await
    }

    /// Send the response header; with `end_of_stream`, the response ends
    /// with it (no body).
    ///
    /// # Errors
    ///
    /// Whatever an HTTP module's `response_header_filter` returns. `H1Error`
    /// or `H2Error` if a final header was already written, a 101 is not
    /// allowed here, or the HTTP/2 stream failed; `InvalidHTTPHeader` for a
    /// bad Content-Length; `WriteError` or `WriteTimedout` if writing fails.
    pub async fn write_response_header(
        &mut self,
        mut resp: Box<ResponseHeader>,
        end_of_stream: bool,
    ) -> Result<()> {
        if let Some(m) = self.modules() {
            m.response_header_filter(&mut resp, end_of_stream).await?;
        }
        self.0.write_response_header_eos(resp, end_of_stream).await
    }

    /// [`write_response_header`](Self::write_response_header) with a copy
    /// of `resp`.
    ///
    /// # Errors
    ///
    /// As [`write_response_header`](Self::write_response_header).
    pub async fn write_response_header_ref(
        &mut self,
        resp: &ResponseHeader,
        end_of_stream: bool,
    ) -> Result<()> {
        self.write_response_header(Box::new(resp.clone()), end_of_stream)
            .await
    }

    /// Send a piece of the response body (if any); with `end_of_stream`,
    /// the response ends after it.
    ///
    /// # Errors
    ///
    /// Whatever an HTTP module's `response_body_filter` returns. `H1Error` or
    /// `H2Error` if no header was written yet or the HTTP/2 stream failed;
    /// `H1Error` if the body is longer (or, at its end, shorter) than its
    /// Content-Length; `WriteError` or `WriteTimedout` if writing fails.
    pub async fn write_response_body(
        &mut self,
        mut data: Option<Bytes>,
        end_of_stream: bool,
    ) -> Result<()> {
        if let Some(m) = self.modules() {
            m.response_body_filter(&mut data, end_of_stream)?;
        }
        if let Some(d) = data.filter(|d| !d.is_empty()) {
            self.0.write_response_body(d).await?;
        }
        if end_of_stream {
            self.0.finish_body().await?;
        }
        Ok(())
    }

    /// The downstream session.
    pub fn as_downstream(&self) -> &ServerSession {
        &self.0
    }

    /// The downstream session, to use its own methods (whose names the
    /// proxy's session shadows with Pingora's forms).
    pub fn as_downstream_mut(&mut self) -> &mut ServerSession {
        &mut self.0
    }
}

impl AsRef<ServerSession> for Session {
    fn as_ref(&self) -> &ServerSession {
        &self.0
    }
}

impl AsMut<ServerSession> for Session {
    fn as_mut(&mut self) -> &mut ServerSession {
        &mut self.0
    }
}

impl Deref for Session {
    type Target = ServerSession;
    fn deref(&self) -> &ServerSession {
        &self.0
    }
}

impl DerefMut for Session {
    fn deref_mut(&mut self) -> &mut ServerSession {
        &mut self.0
    }
}
