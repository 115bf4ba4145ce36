//! One attempt at a request over one upstream connection, in named steps:
//!
//! 1. [`send_request`](HttpProxy::send_request): the request header
//!    through the filters, then what an earlier attempt sent and what was
//!    read ahead;
//! 2. [`response_header`](HttpProxy::response_header): the request body
//!    streams up until the response header arrives;
//! 3. [`retry_on_status`](HttpProxy::retry_on_status): a status the
//!    options retry, for an idempotent request;
//! 4. [`filtered_response`](HttpProxy::filtered_response): the header
//!    taken (the request is answered from here on) and filtered;
//! 5. then a tunnel (101, or 2xx to CONNECT), a response without a body
//!    ([`respond_without_body`](HttpProxy::respond_without_body)), or the
//!    body streamed both ways ([`stream_response`](HttpProxy::stream_response),
//!    in `body.rs`).
//!
//! The upstream connection goes back to the pool
//! ([`finish_upstream`](HttpProxy::finish_upstream)) as soon as the
//! exchange on it is complete, before the client sees the end.

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{Method, StatusCode};
use pingora_core::connectors::http::ClientSession;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType::*, Result};
use pingora_http::ResponseHeader;

use super::body::send_down;
use super::cache::CacheCtx;
use super::headers::{downstream_response, frame_h1_request, upstream_request};
use super::{idempotent, HttpProxy};
use crate::{ProxyHttp, Session};

/// The state of one attempt: the upstream session (held by the caller's
/// frame and lent to each step, so that it is not moved into each step's
/// future), and how far the exchange got.
pub(super) struct Attempt<'a> {
    /// The upstream session; `None` once it went back to the pool.
    pub(super) up: Option<ClientSession>,
    pub(super) peer: &'a HttpPeer,
    /// The request's method as sent upstream (after the filters).
    pub(super) method: Method,
    /// The request body, with its end, has all gone upstream.
    pub(super) req_ended: bool,
    /// The upstream's response header was taken: the request was
    /// answered, and is never sent again.
    pub(super) answered: bool,
    /// The cache's part in the exchange, when a cache is enabled.
    pub(super) cache: Option<&'a mut CacheCtx>,
}

impl<'a> Attempt<'a> {
    /// An attempt over `up`, connected to `peer`.
    pub(super) fn new(
        up: ClientSession,
        peer: &'a HttpPeer,
        cache: Option<&'a mut CacheCtx>,
    ) -> Self {
        Attempt {
            up: Some(up),
            peer,
            method: Method::GET,
            req_ended: false,
            answered: false,
            cache,
        }
    }
}

/// The upstream session of an attempt that still holds one.
pub(super) fn upstream(up: &mut Option<ClientSession>) -> Result<&mut ClientSession> {
    match up {
        Some(up) => Ok(up),
        None => Error::e_explain(InternalError, "no upstream session"),
    }
}

impl<SV: ProxyHttp> HttpProxy<SV> {
    /// One attempt at the request over `att`'s upstream session. On an
    /// error, `att.answered` tells whether the request may be sent again.
    pub(super) async fn proxy_to_upstream(
        &self,
        session: &mut Session,
        att: &mut Attempt<'_>,
        ctx: &mut SV::CTX,
        retry_status: bool,
    ) -> Result<()> {
        self.send_request(session, att, ctx).await?;
        let status = self.response_header(session, att, ctx).await?;
        if let Some(cc) = att.cache.as_deref() {
            super::cache::response_arrived(session);
            // Boxed: the cache's future stays out of every request's.
            if cc.stale.is_some()
                && Box::pin(self.cache_answer_stale(session, att, ctx, status)).await?
            {
                return Ok(());
            }
        }
        if retry_status {
            self.retry_on_status(status, &att.method)?;
        }
        let resp = self.filtered_response(session, att, ctx).await?;
        let up = upstream(&mut att.up)?;
        let tunnel = status == StatusCode::SWITCHING_PROTOCOLS
            || (att.method == Method::CONNECT && status.is_success());
        if tunnel {
            session
                .as_downstream_mut()
                .write_response_header(resp)
                .await
                .map_err(|e| e.into_down())?;
            return self.tunnel(session, up).await;
        }
        if up.is_body_done() && up.trailers().is_none() {
            return self.respond_without_body(session, att, resp, ctx).await;
        }
        self.stream_response(session, att, resp, ctx).await
    }

    /// Step 1: the request header, filtered and framed for the upstream,
    /// then the body an earlier attempt sent and what was read ahead (or
    /// the request's end, when it has no more body).
    async fn send_request(
        &self,
        session: &mut Session,
        att: &mut Attempt<'_>,
        ctx: &mut SV::CTX,
    ) -> Result<()> {
        let up = upstream(&mut att.up)?;
        let mut req = upstream_request(session, att.peer, up.is_http2())?;
        if let Some(cc) = att.cache.as_deref() {
            self.cache_upstream_request(session, cc, &mut req)?;
        }
        self.inner
            .upstream_request_filter(session, &mut req, ctx)
            .await?;
        if !up.is_http2() {
            frame_h1_request(session, &mut req)?;
        }
        #[cfg(feature = "otel")]
        if let Some(tp) =
            session.trace(|t| t.begin("upstream request", crate::otel::SpanKind::Client))
        {
            // The upstream's spans become children of this one.
            req.insert_header("traceparent", tp)?;
        }
        att.method = req.method().clone();
        att.req_ended = session.is_body_done() && !session.has_held_body();
        up.write_request_header_eos(req, att.req_ended).await?;
        if att.req_ended {
            return up.finish_body(None).await;
        }
        // What an earlier attempt sent (already filtered), then what was
        // read ahead.
        let sent = session.state().map(|s| s.sent.clone()).unwrap_or_default();
        for b in sent {
            up.write_body(b).await?;
        }
        while let Some(b) = session.state_mut().read_ahead.pop_front() {
            att.req_ended = self
                .forward_request_piece(session, up, Some(b), ctx, false)
                .await?;
        }
        Ok(())
    }

    /// Step 2: until the response header arrives, the request body
    /// streams up. Body pieces are queued and sent while the upstream is
    /// also read, so neither side ever waits on the other. Interim 1xx
    /// responses (but 101) are skipped: they are ours to send, or not.
    async fn response_header(
        &self,
        session: &mut Session,
        att: &mut Attempt<'_>,
        ctx: &mut SV::CTX,
    ) -> Result<StatusCode> {
        let up = upstream(&mut att.up)?;
        loop {
            tokio::select! {
                // The upstream first: it is pending until the header comes,
                // and the body branch is off while anything is queued.
                biased;
                r = up.read_response_while_sending() => {
                    if !r? {
                        continue; // the queue went out; no header yet
                    }
                    let status = up.resp_header().map(|r| r.status());
                    if status.is_some_and(|s| s.is_informational() && s != StatusCode::SWITCHING_PROTOCOLS) {
                        continue;
                    }
                    break;
                }
                // The client: its next piece of body; once the request is
                // all sent, whether it went away (then the upstream request
                // is dropped, and its connection with it).
                chunk = session.body_or_gone(att.req_ended, self.options.ignore_client_abort), if att.req_ended || !up.has_queued() => {
                    let chunk = chunk.map_err(|e| e.into_down())?;
                    att.req_ended = self.forward_request_piece(session, up, chunk, ctx, true).await?;
                }
            }
        }
        let status = up
            .resp_header()
            .ok_or_else(|| Error::explain(InvalidHTTPHeader, "no response"))?
            .status();
        #[cfg(feature = "otel")]
        session.trace(|t| {
            let code = Some(("http.response.status_code", i64::from(status.as_u16())));
            t.end("upstream request", status.is_server_error(), code);
            t.begin("upstream response", crate::otel::SpanKind::Internal);
        });
        Ok(status)
    }

    /// With a stale object at hand: a 304 to our validators is answered
    /// from it (refreshed), and a 5xx with it when its `stale-if-error`
    /// allows. Whether the request was answered so.
    async fn cache_answer_stale(
        &self,
        session: &mut Session,
        att: &mut Attempt<'_>,
        ctx: &mut SV::CTX,
        status: StatusCode,
    ) -> Result<bool> {
        let revalidate = att.cache.as_deref().is_some_and(|c| c.revalidate);
        if status == StatusCode::NOT_MODIFIED && revalidate {
            let Some(not_modified) = upstream(&mut att.up)?.take_resp_header() else {
                return Error::e_explain(InvalidHTTPHeader, "no response");
            };
            att.answered = true;
            // As any upstream header: without hop-by-hop fields, through the
            // user's filter, before it is merged into what is stored.
            let mut not_modified = downstream_response(not_modified);
            self.inner
                .upstream_response_filter(session, &mut not_modified, ctx)
                .await?;
            self.finish_upstream(session, att, ctx).await?;
            if let Some(cc) = att.cache.as_deref_mut() {
                self.serve_revalidated(session, ctx, cc, &not_modified)
                    .await?;
            }
            return Ok(true);
        }
        // RFC 5861 §4: an error, or one of these.
        if matches!(status.as_u16(), 500 | 502 | 503 | 504) {
            let e = Error::explain(HTTPStatus(status.as_u16()), "upstream answered 5xx").into_up();
            if let Some(cc) = att.cache.as_deref_mut() {
                if self.serve_stale_on_error(session, ctx, cc, &e).await? {
                    att.answered = true;
                    att.up = None;
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Step 3: a retryable error when the options retry `status` and the
    /// request is idempotent.
    fn retry_on_status(&self, status: StatusCode, method: &Method) -> Result<()> {
        if self.options.retry_on_status.contains(&status.as_u16()) && idempotent(method) {
            let mut e = Error::explain(
                HTTPStatus(status.as_u16()),
                format!("upstream answered {status}"),
            )
            .into_up();
            e.set_retry(true);
            return Err(e);
        }
        Ok(())
    }

    /// Step 4: the response header, taken from the upstream session (not
    /// copied: it has no further use for it), made fit for the client and
    /// through the response header filters and the modules'. From here
    /// on the request counts as answered.
    async fn filtered_response(
        &self,
        session: &mut Session,
        att: &mut Attempt<'_>,
        ctx: &mut SV::CTX,
    ) -> Result<Box<ResponseHeader>> {
        let up = upstream(&mut att.up)?;
        let Some(upstream_resp) = up.take_resp_header() else {
            return Error::e_explain(InvalidHTTPHeader, "no response");
        };
        att.answered = true;
        let mut resp = downstream_response(upstream_resp);
        self.inner
            .upstream_response_filter(session, &mut resp, ctx)
            .await?;
        if let Some(cc) = att.cache.as_deref_mut() {
            self.cache_response(session, cc, &mut resp, ctx)?;
        }
        self.inner.response_filter(session, &mut resp, ctx).await?;
        if !self.downstream_modules.is_empty() {
            let eos = up.is_body_done() && up.trailers().is_none();
            if let Some(m) = session.modules() {
                m.response_header_filter(&mut resp, eos).await?;
            }
        }
        Ok(resp)
    }

    /// Step 5, a response without a body: unless the filters make one,
    /// the header ends the response (one HEADERS frame over HTTP/2, which
    /// is how a gRPC error without a message must arrive).
    async fn respond_without_body(
        &self,
        session: &mut Session,
        att: &mut Attempt<'_>,
        mut resp: Box<ResponseHeader>,
        ctx: &mut SV::CTX,
    ) -> Result<()> {
        let mut data = None;
        let delay = self.body_filters(session, &mut data, true, ctx, att.cache.as_deref_mut())?;
        let mut data = data.filter(|d| !d.is_empty());
        // The modules' last word comes with the rest of the body.
        if !self.downstream_modules.is_empty() {
            if let Some(m) = session.modules() {
                if let Some(done) = m.response_done_filter()?.filter(|b| !b.is_empty()) {
                    data = Some(match data.take() {
                        Some(d) => Bytes::from([&d[..], &done[..]].concat()),
                        None => done,
                    });
                }
            }
        }
        if let Some(d) = &data {
            // A body made from nothing: its length replaces the
            // upstream's (not for HEAD, where it describes a GET).
            if att.method != Method::HEAD && resp.has_tracked(pingora_http::tracked::CONTENT_LENGTH)
            {
                resp.insert_header(CONTENT_LENGTH, d.len().to_string())?;
            }
        }
        self.finish_upstream(session, att, ctx).await?;
        session
            .write_response_header_eos(resp, data.is_none())
            .await
            .map_err(|e| e.into_down())?;
        if let Some(d) = data {
            send_down(session, d, delay).await?;
            session.finish_body().await.map_err(|e| e.into_down())?;
        }
        Ok(())
    }

    /// The response is complete: end the request too if its body is all
    /// in, and give the upstream connection back for reuse when it can be.
    pub(super) async fn finish_upstream(
        &self,
        session: &mut Session,
        att: &mut Attempt<'_>,
        ctx: &mut SV::CTX,
    ) -> Result<()> {
        #[cfg(feature = "otel")]
        session.trace(|t| t.end("upstream response", false, None));
        let Some(up) = att.up.as_mut() else {
            return Ok(());
        };
        if !att.req_ended && (session.is_body_done() || up.request_length_sent()) {
            // The client's body ended as the response did; or every byte
            // its length promised has gone upstream and only its end (an
            // HTTP/2 END_STREAM, which may come after the response) is
            // missing: the upstream request is complete either way, and
            // its connection can be reused.
            att.req_ended = self
                .forward_request_piece(session, up, None, ctx, false)
                .await?;
        }
        if att.req_ended {
            if let Some(up) = att.up.take() {
                self.connector.release(up, att.peer);
            }
        }
        Ok(())
    }

    /// One piece of request body (or its end, `None`) from downstream to
    /// upstream, through `request_body_filter`, kept for a retry while it
    /// fits; `queue`d for `drive` to send, or written at once. Returns
    /// whether the request body is complete.
    pub(super) async fn forward_request_piece(
        &self,
        session: &mut Session,
        up: &mut ClientSession,
        mut chunk: Option<Bytes>,
        ctx: &mut SV::CTX,
        queue: bool,
    ) -> Result<bool> {
        // The end comes with the last piece when the body's length says so
        // (and as `None` otherwise).
        let end = chunk.is_none() || (session.is_body_done() && !session.has_read_ahead());
        if end && session.state().is_some_and(|s| s.end_filtered) {
            // A retry: the filter has seen the end already.
            let trailers = session.request_trailers().cloned();
            end_request(up, trailers, queue).await?;
            return Ok(true);
        }
        if !self.downstream_modules.is_empty() {
            if let Some(m) = session.modules() {
                m.request_body_filter(&mut chunk, end).await?;
            }
        }
        self.inner
            .request_body_filter(session, &mut chunk, end, ctx)
            .await?;
        let limit = self.options.retry_buffer_size;
        let state = session.state_mut();
        state.end_filtered |= end;
        if let Some(d) = chunk.filter(|d| !d.is_empty()) {
            if !state.sent_lost && state.sent_len + d.len() <= limit {
                state.sent_len += d.len();
                state.sent.push(d.clone());
            } else {
                state.sent_lost = true;
                state.sent = Vec::new();
            }
            if queue {
                up.queue_body(d)?;
            } else {
                up.write_body(d).await?;
            }
        }
        if end {
            let trailers = session.request_trailers().cloned();
            end_request(up, trailers, queue).await?;
        }
        Ok(end)
    }
}

/// The end of the upstream request (with the client's trailers), queued
/// or written at once.
async fn end_request(
    up: &mut ClientSession,
    trailers: Option<http::HeaderMap>,
    queue: bool,
) -> Result<()> {
    if queue {
        up.queue_finish(trailers)
    } else {
        up.finish_body(trailers).await
    }
}
