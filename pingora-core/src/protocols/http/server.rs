//! [`ServerSession`]: one request and its response, as apps see them,
//! whichever HTTP version carried them.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};

use super::{v1, v2};
use crate::protocols::{SocketAddr, Stream};

/// Names the type; its state is not shown.
impl std::fmt::Debug for ServerSessionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSessionKind").finish_non_exhaustive()
    }
}

/// Which protocol a [`ServerSession`] speaks.
// The HTTP/1 session stays inline: it lives for the whole connection in
// the connection's own task. HTTP/2 streams are boxed, one per stream.
#[allow(clippy::large_enum_variant)]
pub enum ServerSessionKind {
    /// An HTTP/1.0 or HTTP/1.1 connection.
    H1(v1::server::HttpSession),
    /// One stream of an HTTP/2 connection.
    H2(Box<v2::server::HttpSession>),
}

/// Names the type; its state is not shown.
impl std::fmt::Debug for ServerSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSession").finish_non_exhaustive()
    }
}

/// A downstream HTTP session: an HTTP/1.x connection, or one HTTP/2
/// stream. The methods are the same for both.
pub struct ServerSession {
    /// The protocol's own session.
    pub kind: ServerSessionKind,
    /// This request's HTTP modules (Pingora's field; see
    /// [`modules::http`](crate::modules::http)): set by a proxy that runs
    /// modules, empty otherwise, and cleared for each new request.
    pub downstream_modules_ctx: crate::modules::http::HttpModuleCtx,
}

impl From<ServerSessionKind> for ServerSession {
    fn from(kind: ServerSessionKind) -> Self {
        ServerSession {
            kind,
            downstream_modules_ctx: crate::modules::http::HttpModuleCtx::empty(),
        }
    }
}

impl ServerSession {
    /// An HTTP/1 session on an accepted stream.
    pub fn new_http1(stream: Stream, opts: v1::H1Options) -> Self {
        ServerSessionKind::H1(v1::server::HttpSession::new_with_options(stream, opts)).into()
    }

    /// A session for one HTTP/2 stream.
    pub fn new_http2(stream: Box<v2::server::HttpSession>) -> Self {
        ServerSessionKind::H2(stream).into()
    }

    /// Read the next request header; `None` if the client went away first.
    /// (An HTTP/2 stream arrives with its header already read.)
    ///
    /// # Errors
    ///
    /// HTTP/1 only: those of [`v1::server::HttpSession::read_request`]
    /// (`InvalidHTTPHeader`, `BodyTooLarge`, `UriTooLong`, `HeaderTooLarge`,
    /// `HTTPStatus(501)`, `ReadTimedout`, `ReadError`, `ConnectionClosed`).
    pub async fn read_request(&mut self) -> Result<Option<usize>> {
        if !self.downstream_modules_ctx.is_empty() {
            // The last request's modules end with it.
            self.downstream_modules_ctx = crate::modules::http::HttpModuleCtx::empty();
        }
        match &mut self.kind {
            ServerSessionKind::H1(s) => s.read_request().await,
            ServerSessionKind::H2(_) => Ok(Some(0)),
        }
    }

    /// The request header.
    pub fn req_header(&self) -> &RequestHeader {
        match &self.kind {
            ServerSessionKind::H1(s) => s.req_header(),
            ServerSessionKind::H2(s) => s.req_header(),
        }
    }

    /// The request header, to change.
    pub fn req_header_mut(&mut self) -> &mut RequestHeader {
        match &mut self.kind {
            ServerSessionKind::H1(s) => s.req_header_mut(),
            ServerSessionKind::H2(s) => s.req_header_mut(),
        }
    }

    /// The next piece of the request body; `None` at its end.
    ///
    /// # Errors
    ///
    /// `BodyTooLarge` past the body limit. HTTP/1: `ReadTimedout`, `ReadError`,
    /// `ConnectionClosed` inside the body, `InvalidHTTPHeader` for bad chunked
    /// framing. HTTP/2: `H2Error` if the stream fails.
    pub async fn read_request_body(&mut self) -> Result<Option<Bytes>> {
        match &mut self.kind {
            ServerSessionKind::H1(s) => s.read_body_bytes().await,
            ServerSessionKind::H2(s) => s.read_body_bytes().await,
        }
    }

    /// Return once the client is known to have given up on this request
    /// (HTTP/1: closed or reset its connection after sending the whole
    /// request; HTTP/2: reset the stream). Pends otherwise. A proxy
    /// watches this while it waits on the upstream, to abort the upstream
    /// request instead of finishing work nobody will read.
    pub async fn wait_client_gone(&mut self) {
        std::future::poll_fn(|cx| self.poll_client_gone(cx)).await
    }

    /// [`wait_client_gone`](Self::wait_client_gone) as a poll, for a
    /// caller that watches it beside other work without an extra future.
    pub fn poll_client_gone(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        match &mut self.kind {
            ServerSessionKind::H1(s) => s.poll_client_gone(cx),
            ServerSessionKind::H2(s) => s.poll_client_gone(cx),
        }
    }

    /// Whether the request body has been read to its end.
    pub fn is_body_done(&self) -> bool {
        match &self.kind {
            ServerSessionKind::H1(s) => s.is_body_done(),
            ServerSessionKind::H2(s) => s.is_body_done(),
        }
    }

    /// The request's trailer fields, once its body has been read.
    pub fn request_trailers(&self) -> Option<&HeaderMap> {
        match &self.kind {
            ServerSessionKind::H1(s) => s.trailers(),
            ServerSessionKind::H2(s) => s.trailers(),
        }
    }

    /// Whether the request asks to switch protocols (WebSocket).
    pub fn is_upgrade_req(&self) -> bool {
        match &self.kind {
            ServerSessionKind::H1(s) => s.is_upgrade_req(),
            ServerSessionKind::H2(_) => false,
        }
    }

    /// Write the response header (1xx first if wanted, then the final one).
    ///
    /// # Errors
    ///
    /// HTTP/1: `H1Error` if a final header was already written or a 101 was
    /// not asked for, `InvalidHTTPHeader` for a bad Content-Length, `WriteError`
    /// or `WriteTimedout` when it is flushed. HTTP/2: `H2Error`.
    pub async fn write_response_header(&mut self, resp: Box<ResponseHeader>) -> Result<()> {
        match &mut self.kind {
            ServerSessionKind::H1(s) => s.write_response_header(resp).await,
            ServerSessionKind::H2(s) => s.write_response_header(resp).await,
        }
    }

    /// Write a final response header; with `end_of_stream` the response
    /// has no body and ends here (HTTP/2: in the HEADERS frame itself).
    ///
    /// # Errors
    ///
    /// Those of [`write_response_header`](Self::write_response_header) and,
    /// with `end_of_stream`, [`finish_body`](Self::finish_body).
    pub async fn write_response_header_eos(
        &mut self,
        resp: Box<ResponseHeader>,
        end_of_stream: bool,
    ) -> Result<()> {
        match &mut self.kind {
            ServerSessionKind::H1(s) => {
                s.write_response_header(resp).await?;
                if end_of_stream {
                    s.finish_body().await?;
                }
                Ok(())
            }
            ServerSessionKind::H2(s) => s.write_response_header_eos(resp, end_of_stream).await,
        }
    }

    /// Response body bytes sent so far.
    pub fn body_bytes_sent(&self) -> u64 {
        match &self.kind {
            ServerSessionKind::H1(s) => s.body_bytes_sent(),
            ServerSessionKind::H2(s) => s.body_bytes_sent(),
        }
    }

    /// The final response header, once written.
    pub fn response_written(&self) -> Option<&ResponseHeader> {
        match &self.kind {
            ServerSessionKind::H1(s) => s.response_written(),
            ServerSessionKind::H2(s) => s.response_written(),
        }
    }

    /// Write response body bytes.
    ///
    /// # Errors
    ///
    /// HTTP/1: `H1Error` if no final header was written, the body ended, or
    /// `data` runs past the Content-Length; `WriteError` or `WriteTimedout`.
    /// HTTP/2: `H2Error` if the stream fails, `WriteTimedout` if the client
    /// grants no flow-control credit within the write timeout.
    pub async fn write_response_body(&mut self, data: Bytes) -> Result<()> {
        match &mut self.kind {
            ServerSessionKind::H1(s) => s.write_body(&data).await,
            ServerSessionKind::H2(s) => s.write_body(data).await,
        }
    }

    /// Trailer fields to send after the response body.
    pub fn set_response_trailers(&mut self, trailers: HeaderMap) {
        match &mut self.kind {
            ServerSessionKind::H1(s) => s.set_response_trailers(trailers),
            ServerSessionKind::H2(s) => s.set_response_trailers(trailers),
        }
    }

    /// End the response body and flush.
    ///
    /// # Errors
    ///
    /// HTTP/1: `H1Error` if no final header was written or a Content-Length
    /// body is short, `WriteError` or `WriteTimedout` from the flush. HTTP/2:
    /// `H2Error` if no header was written or the end cannot be sent.
    pub async fn finish_body(&mut self) -> Result<()> {
        match &mut self.kind {
            ServerSessionKind::H1(s) => s.finish_body().await,
            ServerSessionKind::H2(s) => s.finish_body().await,
        }
    }

    /// Break off a response that cannot be completed: HTTP/1 closes the
    /// connection (the caller drops it), HTTP/2 resets the stream.
    pub fn abort(&mut self) {
        match &mut self.kind {
            ServerSessionKind::H1(s) => s.set_keepalive(false),
            ServerSessionKind::H2(s) => s.abort(),
        }
    }

    /// Answer with an error status and an empty body; the connection closes.
    ///
    /// # Errors
    ///
    /// HTTP/1: `WriteError` or `WriteTimedout`. HTTP/2: `InvalidHTTPHeader` for
    /// a status outside 100 to 999, `H2Error` if sending fails. No error (and
    /// nothing sent) once a response header was written.
    pub async fn respond_error(&mut self, status: u16) -> Result<()> {
        match &mut self.kind {
            ServerSessionKind::H1(s) => s.respond_error(status).await,
            ServerSessionKind::H2(s) => s.respond_error(status).await,
        }
    }

    /// Whether the connection may take another request after this one,
    /// as Pingora's: `None` closes it after this response; `Some(0)` keeps
    /// it (if the client does too) with no idle limit; `Some(n)` keeps it
    /// for at most `n` seconds idle. An HTTP/2 stream has no say (the
    /// connection outlives it).
    pub fn set_keepalive(&mut self, duration: Option<u64>) {
        match &mut self.kind {
            ServerSessionKind::H1(s) => match duration {
                None => s.set_keepalive(false),
                Some(secs) => {
                    s.set_keepalive_timeout((secs > 0).then(|| Duration::from_secs(secs)))
                }
            },
            ServerSessionKind::H2(s) => {
                let _ = (s, duration);
            }
        }
    }

    /// The first value of the request's header `name`.
    pub fn get_header<K: http::header::AsHeaderName>(&self, name: K) -> Option<&HeaderValue> {
        self.req_header().headers.get(name)
    }

    /// The bytes of the first value of the request's header `name`; empty
    /// when there is none.
    pub fn get_header_bytes<K: http::header::AsHeaderName>(&self, name: K) -> &[u8] {
        self.get_header(name).map_or(b"", |v| v.as_bytes())
    }

    /// Finish the exchange; true if the connection can take another
    /// request.
    ///
    /// # Errors
    ///
    /// HTTP/1: `H1Error` for a short Content-Length body, `WriteError` or
    /// `WriteTimedout` from the flush. HTTP/2: `H2Error` if the end of the
    /// response cannot be sent.
    pub async fn finish(&mut self) -> Result<bool> {
        match &mut self.kind {
            ServerSessionKind::H1(s) => s.finish().await,
            ServerSessionKind::H2(s) => s.finish().await,
        }
    }

    /// The client's address.
    pub fn client_addr(&self) -> Option<&SocketAddr> {
        match &self.kind {
            ServerSessionKind::H1(s) => s.client_addr(),
            ServerSessionKind::H2(s) => s.client_addr(),
        }
    }

    /// The local address the client connected to.
    pub fn server_addr(&self) -> Option<&SocketAddr> {
        match &self.kind {
            ServerSessionKind::H1(s) => s.server_addr(),
            ServerSessionKind::H2(s) => s.server_addr(),
        }
    }

    /// The connection's digest in Pingora's shape: socket, TLS session,
    /// set-up times. Built on the first call and kept with the connection.
    pub fn digest(&self) -> Option<&crate::protocols::Digest> {
        match &self.kind {
            ServerSessionKind::H1(s) => s.digest(),
            ServerSessionKind::H2(s) => s.digest(),
        }
    }

    /// The TLS digest of the connection, if it is TLS.
    pub fn tls_digest(&self) -> Option<&crate::protocols::TlsDigest> {
        match &self.kind {
            ServerSessionKind::H1(s) => s.tls_digest(),
            ServerSessionKind::H2(s) => s.tls_digest(),
        }
    }

    /// Per-request data for the layers above (a proxy keeps its state
    /// here); empty at the start of each request.
    pub fn extensions_mut(&mut self) -> &mut http::Extensions {
        match &mut self.kind {
            ServerSessionKind::H1(s) => s.extensions_mut(),
            ServerSessionKind::H2(s) => s.extensions_mut(),
        }
    }

    /// Per-request data for the layers above.
    pub fn extensions(&self) -> &http::Extensions {
        match &self.kind {
            ServerSessionKind::H1(s) => s.extensions(),
            ServerSessionKind::H2(s) => s.extensions(),
        }
    }

    /// Whether this is an HTTP/2 stream.
    pub fn is_http2(&self) -> bool {
        matches!(self.kind, ServerSessionKind::H2(_))
    }

    /// The HTTP/1 session, when that is the protocol.
    pub fn as_http1(&mut self) -> Option<&mut v1::server::HttpSession> {
        match &mut self.kind {
            ServerSessionKind::H1(s) => Some(s),
            ServerSessionKind::H2(_) => None,
        }
    }
}
