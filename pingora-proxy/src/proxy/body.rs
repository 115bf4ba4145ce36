//! The response body: streamed from the upstream through the body filters
//! to the client while the rest of the request body still goes up, its
//! Content-Length kept true, its trailers filtered; and the raw tunnel
//! after an upgrade.

use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::Method;
use pingora_core::connectors::http::ClientSession;
use pingora_error::{Error, ErrorType::*, Result};
use pingora_http::ResponseHeader;

use super::attempt::{upstream, Attempt};
use super::cache::CacheCtx;
use super::HttpProxy;
use crate::{ProxyHttp, Session};

/// A piece of response body, already through the filters (the modules'
/// too), straight to the client once a body filter's delay, if it asked
/// for one, is waited out.
pub(super) async fn send_down(
    session: &mut Session,
    piece: Bytes,
    delay: Option<Duration>,
) -> Result<()> {
    if let Some(d) = delay.filter(|d| !d.is_zero()) {
        tokio::time::sleep(d).await;
    }
    session
        .as_downstream_mut()
        .write_response_body(piece)
        .await
        .map_err(|e| e.into_down())
}

/// Keeps a response's Content-Length true while body filters may change
/// the body: a header with a length waits for the first piece of body to
/// come through the filters. When that piece is the whole body, its new
/// length is set; when the filters changed its size, the length is
/// removed (the response goes chunked over HTTP/1); otherwise the
/// upstream's length stands, and what goes out must add up to it.
#[derive(Debug, Default)]
pub(super) struct LengthGuard {
    /// The header, until the first piece of body decides its length.
    held: Option<Box<ResponseHeader>>,
    /// Body bytes in from the upstream.
    bytes_in: usize,
    /// Body bytes out of the filters.
    bytes_out: usize,
    /// The upstream's Content-Length went out: out must equal in.
    length_kept: bool,
    /// Any Content-Length went out (the upstream's or a new one).
    length_out: bool,
}

impl LengthGuard {
    /// A guard for `resp`; the header is returned at once, to be written,
    /// unless it is held for the first piece (a Content-Length, not for
    /// HEAD, where it describes a GET).
    pub(super) fn new(
        resp: Box<ResponseHeader>,
        method: &Method,
    ) -> (Self, Option<Box<ResponseHeader>>) {
        let mut guard = LengthGuard::default();
        if resp.has_tracked(pingora_http::tracked::CONTENT_LENGTH) && *method != Method::HEAD {
            guard.held = Some(resp);
            (guard, None)
        } else {
            (guard, Some(resp))
        }
    }

    /// A piece of body went through the filters (`size_in` bytes in,
    /// `size_out` out; `end` when it is the last): the held header, with
    /// its length fixed, if it is to be written now; an error if the
    /// filters broke a length that already went out.
    pub(super) fn piece(
        &mut self,
        size_in: usize,
        size_out: usize,
        end: bool,
    ) -> Result<Option<Box<ResponseHeader>>> {
        self.bytes_in += size_in;
        self.bytes_out += size_out;
        if let Some(mut resp) = self.held.take() {
            if size_out != size_in {
                if end {
                    // The whole body, already filtered.
                    resp.insert_header(CONTENT_LENGTH, size_out.to_string())?;
                    self.length_out = true;
                } else {
                    resp.remove_header(&CONTENT_LENGTH);
                }
            } else {
                self.length_kept = true;
                self.length_out = true;
            }
            return Ok(Some(resp));
        }
        let over = self.bytes_out > self.bytes_in;
        if self.length_kept && (over || (end && self.bytes_out != self.bytes_in)) {
            return Error::e_explain(
                InternalError,
                "a body filter changed the response's size after its Content-Length \
                 went out; remove Content-Length in response_filter when a filter \
                 may change the body after its first piece",
            );
        }
        Ok(None)
    }
}

impl<SV: ProxyHttp> HttpProxy<SV> {
    /// Step 5, a response with a body: both directions at once until the
    /// response is complete; the upstream connection goes back to the pool
    /// before the client sees the end, so that its next request can have
    /// it.
    pub(super) async fn stream_response(
        &self,
        session: &mut Session,
        att: &mut Attempt<'_>,
        resp: Box<ResponseHeader>,
        ctx: &mut SV::CTX,
    ) -> Result<()> {
        let (mut guard, now) = LengthGuard::new(resp, &att.method);
        if let Some(resp) = now {
            session
                .as_downstream_mut()
                .write_response_header(resp)
                .await
                .map_err(|e| e.into_down())?;
        }
        let up = upstream(&mut att.up)?;
        let (last, trailer_body, delay) = loop {
            tokio::select! {
                data = up.read_body_while_sending() => {
                    let Some(mut data) = data? else {
                        continue; // the queue went out; nothing read yet
                    };
                    // The end comes with the last piece when the framing
                    // says so (and as `None` otherwise).
                    let end = data.is_none() || up.is_body_done();
                    let size_in = data.as_ref().map_or(0, Bytes::len);
                    let delay = self.body_filters(session, &mut data, end, ctx, att.cache.as_deref_mut())?;
                    let size_out = data.as_ref().map_or(0, Bytes::len);
                    if let Some(resp) = guard.piece(size_in, size_out, end)? {
                        session
                            .as_downstream_mut()
                            .write_response_header(resp)
                            .await
                            .map_err(|e| e.into_down())?;
                    }
                    if end {
                        let trailer_body = self.response_trailers(session, up, ctx).await?;
                        break (data, trailer_body, delay);
                    }
                    if let Some(d) = data.filter(|d| !d.is_empty()) {
                        send_down(session, d, delay).await?;
                    }
                }
                // The client: its next piece of body; once the request is
                // all sent, whether it went away (then the upstream request
                // is dropped, and its connection with it).
                chunk = session.body_or_gone(att.req_ended, self.options.ignore_client_abort), if att.req_ended || !up.has_queued() => {
                    let chunk = chunk.map_err(|e| e.into_down())?;
                    att.req_ended = self.forward_request_piece(session, up, chunk, ctx, true).await?;
                }
            }
        };
        self.finish_upstream(session, att, ctx).await?;
        let mut done_body = None;
        if !self.downstream_modules.is_empty() {
            if let Some(m) = session.modules() {
                done_body = m.response_done_filter()?.filter(|b| !b.is_empty());
            }
        }
        if guard.length_out && done_body.is_some() {
            return Error::e_explain(
                InternalError,
                "an HTTP module's response_done_filter added body after the Content-Length \
                 went out; remove Content-Length in its response_header_filter",
            );
        }
        for d in [last, trailer_body, done_body].into_iter().flatten() {
            if !d.is_empty() {
                send_down(session, d, delay).await?;
            }
        }
        session.finish_body().await.map_err(|e| e.into_down())
    }

    /// The upstream's trailers, if any, through the trailer filters (the
    /// modules' too) and set for the client; or the bytes a filter made
    /// of them, to go out as the last piece of body instead.
    async fn response_trailers(
        &self,
        session: &mut Session,
        up: &ClientSession,
        ctx: &mut SV::CTX,
    ) -> Result<Option<Bytes>> {
        let Some(t) = up.trailers() else {
            return Ok(None);
        };
        let mut t = t.clone();
        self.inner
            .upstream_response_trailer_filter(session, &mut t, ctx)?;
        let mut trailer_body = self
            .inner
            .response_trailer_filter(session, &mut t, ctx)
            .await?;
        let mut t = Some(Box::new(t));
        if !self.downstream_modules.is_empty() {
            if let Some(m) = session.modules() {
                if let Some(b) = m.response_trailer_filter(&mut t)? {
                    trailer_body = Some(b);
                }
            }
        }
        if let (None, Some(t)) = (&trailer_body, t) {
            session.set_response_trailers(*t);
        }
        Ok(trailer_body)
    }

    /// A piece of response body through `upstream_response_body_filter`,
    /// into the cache's fill if there is one, then through
    /// `response_body_filter`; returns the longer delay they asked for.
    pub(super) fn body_filters(
        &self,
        session: &mut Session,
        data: &mut Option<Bytes>,
        end: bool,
        ctx: &mut SV::CTX,
        cache: Option<&mut CacheCtx>,
    ) -> Result<Option<Duration>> {
        let up = self
            .inner
            .upstream_response_body_filter(session, data, end, ctx)?;
        if let Some(cc) = cache {
            cc.fill_piece(data.as_ref(), end);
        }
        let down = self.inner.response_body_filter(session, data, end, ctx)?;
        if !self.downstream_modules.is_empty() {
            if let Some(m) = session.modules() {
                m.response_body_filter(data, end)?;
            }
        }
        Ok(up.max(down))
    }

    /// After a 101 (or a 2xx to CONNECT): copy raw bytes both ways until
    /// either side closes or nothing moves for the idle timeout.
    pub(super) async fn tunnel(&self, session: &mut Session, up: &mut ClientSession) -> Result<()> {
        let idle = self.options.tunnel_idle_timeout;
        loop {
            tokio::select! {
                d = session.read_request_body(), if !up.has_queued() => match d.map_err(|e| e.into_down())? {
                    Some(d) => up.queue_body(d)?,
                    None => {
                        let _ = up.finish_body(None).await;
                        return Ok(());
                    }
                },
                u = up.read_body_while_sending() => match u? {
                    None => {} // the queue went out
                    Some(Some(u)) => session.as_downstream_mut().write_response_body(u).await.map_err(|e| e.into_down())?,
                    Some(None) => {
                        let _ = session.finish_body().await;
                        return Ok(());
                    }
                },
                _ = tokio::time::sleep(idle) => {
                    let _ = session.finish_body().await;
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_length(n: usize) -> Box<ResponseHeader> {
        let mut r = ResponseHeader::build(200, None).unwrap();
        r.insert_header(CONTENT_LENGTH, n.to_string()).unwrap();
        Box::new(r)
    }

    fn length(r: &ResponseHeader) -> Option<String> {
        r.headers
            .get(CONTENT_LENGTH)
            .map(|v| v.to_str().unwrap().to_string())
    }

    #[test]
    fn a_header_without_length_or_for_head_goes_at_once() {
        let plain = Box::new(ResponseHeader::build(200, None).unwrap());
        assert!(LengthGuard::new(plain, &Method::GET).1.is_some());
        assert!(LengthGuard::new(with_length(5), &Method::HEAD).1.is_some());
        assert!(LengthGuard::new(with_length(5), &Method::GET).1.is_none());
    }

    #[test]
    fn the_first_piece_decides_the_length() {
        // Unchanged: the upstream's length stands.
        let (mut g, _) = LengthGuard::new(with_length(10), &Method::GET);
        let r = g.piece(4, 4, false).unwrap().unwrap();
        assert_eq!(length(&r).as_deref(), Some("10"));
        assert!(g.length_out);
        // Changed, and the whole body: its new length.
        let (mut g, _) = LengthGuard::new(with_length(10), &Method::GET);
        let r = g.piece(10, 3, true).unwrap().unwrap();
        assert_eq!(length(&r).as_deref(), Some("3"));
        // Changed, more to come: no length (chunked).
        let (mut g, _) = LengthGuard::new(with_length(10), &Method::GET);
        let r = g.piece(4, 2, false).unwrap().unwrap();
        assert_eq!(length(&r), None);
        assert!(!g.length_out);
        // Later pieces may then change size freely.
        assert!(g.piece(6, 9, true).unwrap().is_none());
    }

    #[test]
    fn a_kept_length_must_add_up() {
        let (mut g, _) = LengthGuard::new(with_length(10), &Method::GET);
        g.piece(4, 4, false).unwrap();
        assert!(g.piece(3, 4, false).is_err(), "more out than in");
        let (mut g, _) = LengthGuard::new(with_length(10), &Method::GET);
        g.piece(4, 4, false).unwrap();
        g.piece(3, 3, false).unwrap();
        assert!(g.piece(3, 2, true).is_err(), "short at the end");
        let (mut g, _) = LengthGuard::new(with_length(10), &Method::GET);
        g.piece(4, 4, false).unwrap();
        assert!(g.piece(6, 6, true).unwrap().is_none());
    }
}
