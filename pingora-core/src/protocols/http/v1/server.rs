//! The server side of an HTTP/1 connection: read a request, write its
//! response, then the next request on the same connection.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{Method, StatusCode, Version};
use pingora_error::{Error, ErrorType::*, OkOrErr, Result};
use pingora_http::{RequestHeader, ResponseHeader};

use super::conn::{conn_timed, BodyWriter, Conn};
use super::framing::{self, Framing};
use super::H1Options;
use crate::protocols::{SocketAddr, Stream};

mod respond;

/// Request body bytes we read and drop to keep a connection alive after a
/// response that did not read the body. Past this, the connection closes.
const DRAIN_BUDGET: u64 = 64 * 1024;

/// Names the type; its state is not shown.
impl std::fmt::Debug for HttpSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSession").finish_non_exhaustive()
    }
}

/// One HTTP/1 server connection, one request at a time.
///
/// ```no_run
/// # async fn f(stream: pingora_core::protocols::Stream) -> pingora_error::Result<()> {
/// use pingora_core::protocols::http::v1::server::HttpSession;
/// use pingora_http::ResponseHeader;
///
/// let mut session = HttpSession::new(stream);
/// while session.read_request().await?.is_some() {
///     let mut resp = ResponseHeader::build(200, None)?;
///     resp.insert_header("Content-Length", "2")?;
///     session.write_response_header(Box::new(resp)).await?;
///     session.write_body(b"ok").await?;
///     if !session.finish().await? {
///         break;
///     }
/// }
/// # Ok(()) }
/// ```
pub struct HttpSession {
    conn: Conn,
    /// Inline, not boxed: one allocation fewer per request (an idle
    /// connection is parked without this struct, so its size costs little).
    req: Option<RequestHeader>,
    resp: Option<Box<ResponseHeader>>,
    /// Both sides allow another request on this connection.
    keepalive: bool,
    /// `Expect: 100-continue` was asked and not yet answered.
    continue_pending: bool,
    /// The connection became a raw tunnel (101, or 2xx to CONNECT).
    upgraded: bool,
    /// A final (non-1xx) response header was written.
    final_written: bool,
    /// Requests read on this connection.
    requests: usize,
    trailers_out: Option<Box<HeaderMap>>,
    /// The response may carry no body (HEAD, 204, 304): body writes are
    /// dropped.
    no_body: bool,
    /// Per-request data for layers above (cleared for each request).
    ext: http::Extensions,
    /// Between requests, wait this long (instead of the keep-alive
    /// timeout) before giving up the connection to be parked.
    park_after: Option<Duration>,
    /// The server's shutdown switch: a response written once a graceful
    /// shutdown began says `Connection: close` (the request was already in
    /// hand; the client must not send another on this connection).
    shutdown: Option<crate::shutdown::ShutdownWatch>,
    /// The last idle wait ended at `park_after`: hand the stream back.
    park_now: bool,
}

impl HttpSession {
    /// A session on an accepted stream, with default limits.
    pub fn new(stream: Stream) -> Self {
        Self::new_with_options(stream, H1Options::default())
    }

    /// A session with the given limits and timeouts.
    pub fn new_with_options(stream: Stream, opts: H1Options) -> Self {
        let mut conn = Conn::new(stream, opts);
        conn.set_read_limit(opts.max_body_bytes);
        HttpSession {
            conn,
            req: None,
            resp: None,
            keepalive: false,
            continue_pending: false,
            upgraded: false,
            final_written: false,
            requests: 0,
            trailers_out: None,
            no_body: false,
            ext: http::Extensions::new(),
            park_after: None,
            shutdown: None,
            park_now: false,
        }
    }

    /// Between requests, wait `after` (not the keep-alive timeout) for the
    /// next one; then `read_request` returns `Ok(None)` and
    /// [`wants_park`](Self::wants_park) says the stream should be parked.
    /// Only for connections that [`can_park`](Self::can_park).
    pub(crate) fn set_park_after(&mut self, after: Option<Duration>) {
        self.park_after = after;
    }

    /// Watch this switch: responses written after it turns true close the
    /// connection (`Connection: close`).
    pub(crate) fn set_shutdown_watch(&mut self, shutdown: crate::shutdown::ShutdownWatch) {
        self.shutdown = Some(shutdown);
    }

    /// Whether the last `read_request` ended because the connection was
    /// idle for the park delay (so the stream is to be parked, not closed).
    pub(crate) fn wants_park(&self) -> bool {
        self.park_now
    }

    /// The limits and timeouts in force.
    pub fn options(&self) -> &H1Options {
        self.conn.opts()
    }

    /// Read the next request header. `Ok(None)` means the client closed the
    /// connection (or let it idle out) before starting a request. An error
    /// carries the status to answer with (`etype().http_status()`): 400,
    /// 413, 414, 431 or 501; then call [`respond_error`](Self::respond_error)
    /// and close.
    ///
    /// # Errors
    ///
    /// `InvalidHTTPHeader` (400: malformed header, Host, target or framing),
    /// `BodyTooLarge` (413), `UriTooLong` (414), `HeaderTooLarge` (431),
    /// `HTTPStatus(501)` (unknown transfer coding); `ReadTimedout` if a started
    /// header is not whole in time; `ReadError`, or `ConnectionClosed` mid-header.
    pub async fn read_request(&mut self) -> Result<Option<usize>> {
        let opts = *self.conn.opts();
        // Between requests: the keep-alive timeout, or the park delay
        // when the connection may be parked (one wait either way).
        let park = self.requests > 0 && self.park_after.is_some() && self.can_park();
        let idle = if self.requests == 0 {
            opts.header_read_timeout
        } else if park {
            self.park_after
        } else {
            opts.keepalive_timeout
        };
        // A connection that may be parked keeps its buffers until it is
        // (parking frees them with the task): a busy keep-alive client
        // reuses them request after request. Any other gives them back
        // while it waits.
        if !park {
            self.conn.release_buffer();
        }
        match self.conn.read_when_readable(idle, !park).await {
            Ok(()) => {}
            // Idle keep-alive connections end quietly (or are parked).
            Err(e) if matches!(e.etype(), ReadTimedout) => {
                self.park_now = park;
                return Ok(None);
            }
            Err(e) => return Err(e.into_down()),
        }
        let header = conn_timed!(
            self.conn,
            opts.header_read_timeout,
            ReadTimedout,
            "request header read timed out",
            self.conn.fill_header(Some(opts.max_uri_len + 16), false)
        )
        .map_err(|e| e.into_down())?;
        let Some(len) = header else {
            return Ok(None);
        };
        self.requests += 1;
        let len = self.parse_request(len).map_err(|e| e.into_down())?;
        Ok(Some(len))
    }

    fn parse_request(&mut self, len: usize) -> Result<usize> {
        let opts = *self.conn.opts();
        // Parsed in one pass into the header, built where the session
        // keeps it (not moved again); the head's bytes are split off the
        // buffer and shared by it. The whole head is there: `fill_header`
        // found its end.
        let parsed = RequestHeader::parse_h1_into(
            self.conn.buf_mut(),
            len,
            opts.max_headers,
            opts.max_uri_len,
            &mut self.req,
        );
        let len = match parsed {
            Ok(Some(n)) => n,
            Ok(None) => return Error::e_explain(InvalidHTTPHeader, "malformed request header"),
            Err(e) => return Err(e),
        };
        if let Err(e) = self.start_exchange() {
            self.req = None;
            return Err(e);
        }
        Ok(len)
    }

    /// Host rules (RFC 9112 §3.2) and target forms.
    fn validate(req: &RequestHeader) -> Result<()> {
        // (Read without building the map: see `RequestHeader::method`.)
        let hosts = req.tracked_values(pingora_http::tracked::HOST).count();
        if hosts > 1 {
            return Error::e_explain(InvalidHTTPHeader, "more than one Host");
        }
        if hosts == 0 && req.version() == Version::HTTP_11 {
            return Error::e_explain(InvalidHTTPHeader, "HTTP/1.1 request without Host");
        }
        let uri = req.uri();
        if req.method() == Method::CONNECT {
            if uri.authority().is_none() || uri.scheme().is_some() {
                return Error::e_explain(InvalidHTTPHeader, "CONNECT target must be host:port");
            }
        } else if uri.scheme().is_none() && !uri.path().starts_with('/') && uri != "*" {
            return Error::e_explain(InvalidHTTPHeader, "invalid request target");
        }
        Ok(())
    }

    /// Set up the exchange for the request header just read.
    fn start_exchange(&mut self) -> Result<()> {
        if !self.conn.opts().underscores_in_headers {
            if let Some(req) = self.req.as_mut() {
                crate::protocols::http::drop_underscore_names(req);
            }
        }
        let Some(req) = self.req.as_ref() else {
            return Error::e_explain(InternalError, "no request header");
        };
        Self::validate(req)?;
        let framing = framing::request_framing(req.version(), req)?;
        if let (Framing::Length(n), Some(max)) = (framing, self.conn.opts().max_body_bytes) {
            if n > max {
                return Error::e_explain(BodyTooLarge, "Content-Length above the limit");
            }
        }
        self.conn.start_body(framing);
        if framing == Framing::Chunked && !self.conn.buf().is_empty() {
            // Body bytes that came with the header are checked now, so a
            // malformed body is refused before any upstream is contacted.
            self.conn.check_buffered_chunks()?;
        }
        self.keepalive = framing::wants_keepalive(req.version(), req);
        self.continue_pending = req.version() == Version::HTTP_11
            && framing != Framing::None
            && req.has_tracked(pingora_http::tracked::EXPECT)
            && req
                .tracked_values(pingora_http::tracked::EXPECT)
                .next()
                .is_some_and(|v| v.eq_ignore_ascii_case(b"100-continue"));
        self.upgraded = false;
        self.final_written = false;
        self.resp = None;
        self.trailers_out = None;
        self.ext.clear();
        Ok(())
    }

    /// The request header.
    ///
    /// # Panics
    ///
    /// Before [`read_request`](Self::read_request) has read a request.
    pub fn req_header(&self) -> &RequestHeader {
        self.req.as_ref().expect("read_request() first")
    }

    /// The request header, to change.
    ///
    /// # Panics
    ///
    /// Before [`read_request`](Self::read_request) has read a request.
    pub fn req_header_mut(&mut self) -> &mut RequestHeader {
        self.req.as_mut().expect("read_request() first")
    }

    /// Whether the request asks to switch protocols (Upgrade, e.g.
    /// WebSocket). An upgrade to `h2c` is not one: it is never honoured or
    /// forwarded (a proxy that passed it on would let the client talk
    /// HTTP/2 to the upstream past every rule of the proxy: "h2c
    /// smuggling"), so the request is served as plain HTTP/1.1 and the
    /// `Upgrade` field is dropped as hop-by-hop.
    pub fn is_upgrade_req(&self) -> bool {
        self.req.as_ref().is_some_and(|r| {
            r.has_tracked(pingora_http::tracked::UPGRADE)
                && framing::has_token(r, pingora_http::tracked::CONNECTION, "upgrade")
                && !framing::has_token(r, pingora_http::tracked::UPGRADE, "h2c")
        })
    }

    /// Whether the connection is now a raw tunnel (after 101, or a 2xx to
    /// CONNECT): body reads and writes are raw bytes until either side
    /// closes.
    pub fn is_upgraded(&self) -> bool {
        self.upgraded
    }

    /// Read the next piece of the request body; `None` at its end. Sends
    /// `100 Continue` first if the client asked for it.
    ///
    /// # Errors
    ///
    /// `ReadTimedout` if a read waits past the body read timeout; `ReadError`;
    /// `ConnectionClosed` if the client closes inside the body; `BodyTooLarge`
    /// past `max_body_bytes`; `InvalidHTTPHeader` for bad chunked framing
    /// (`HeaderTooLarge` for its trailers); `WriteError` or `WriteTimedout`
    /// sending `100 Continue`.
    pub async fn read_body_bytes(&mut self) -> Result<Option<Bytes>> {
        if self.continue_pending && !self.final_written {
            self.continue_pending = false;
            self.conn
                .write_parts(&[b"HTTP/1.1 100 Continue\r\n\r\n"])
                .await?;
        }
        self.conn.read_body().await.map_err(|e| e.into_down())
    }

    /// Return once the client is known to have gone away (closed or reset
    /// its connection) while its request waits for a response: for a
    /// proxy to give up the upstream request (nginx answers such a request
    /// 499). Only watched once the request body was read to its end and
    /// the connection is not a tunnel; until then (and forever once the
    /// client sends more, such as a pipelined request) this pends. It
    /// costs no system call until the socket becomes readable.
    pub async fn wait_client_gone(&mut self) {
        std::future::poll_fn(|cx| self.poll_client_gone(cx)).await
    }

    /// [`wait_client_gone`](Self::wait_client_gone) as a poll.
    pub fn poll_client_gone(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if !self.conn.body_done() || self.upgraded || self.continue_pending {
            return std::task::Poll::Pending; // never woken: not watched
        }
        self.conn.poll_peer_gone(cx)
    }

    /// Whether the whole request body has been read.
    pub fn is_body_done(&self) -> bool {
        self.conn.body_done()
    }

    /// Request body bytes read so far.
    pub fn body_bytes_read(&self) -> u64 {
        self.conn.body_read()
    }

    /// The request's trailer fields, once its chunked body has been read.
    pub fn trailers(&self) -> Option<&HeaderMap> {
        self.conn.trailers()
    }

    /// Force the connection to close after this response (sends
    /// `Connection: close` if the header is not yet written).
    pub fn set_keepalive(&mut self, keepalive: bool) {
        if !keepalive {
            self.keepalive = false;
        }
    }

    /// Keep the connection for another request's wait at most `timeout`
    /// (`None`: no limit), instead of the configured keep-alive timeout.
    /// The connection still closes when the client or the framing says so.
    pub fn set_keepalive_timeout(&mut self, timeout: Option<Duration>) {
        self.conn.opts_mut().keepalive_timeout = timeout;
    }

    /// Whether the connection will be kept for another request.
    pub fn will_keepalive(&self) -> bool {
        self.keepalive
    }

    /// The response header written, if any.
    pub fn response_written(&self) -> Option<&ResponseHeader> {
        self.resp.as_deref()
    }

    /// Response body bytes written so far.
    pub fn body_bytes_sent(&self) -> u64 {
        self.conn.body_written()
    }

    /// The stream, if the connection is between requests with nothing read
    /// ahead and its socket can be parked.
    pub(crate) fn into_idle_stream(self) -> Option<Stream> {
        if self.can_park() {
            Some(self.conn.into_parts().0)
        } else {
            None
        }
    }

    /// Whether [`into_idle_stream`](Self::into_idle_stream) would give the
    /// stream back now.
    pub(crate) fn can_park(&self) -> bool {
        self.conn.buf().is_empty() && crate::protocols::is_parkable(self.conn.stream())
    }

    /// How many requests this connection has carried.
    pub fn requests_served(&self) -> usize {
        self.requests
    }

    /// The client's address: the original client named by a PROXY
    /// protocol header, when the connection came with one, else the
    /// socket's peer.
    pub fn client_addr(&self) -> Option<&SocketAddr> {
        self.conn.stream().socket_digest()?.client_addr()
    }

    /// The local address the client connected to.
    pub fn server_addr(&self) -> Option<&SocketAddr> {
        self.conn.stream().socket_digest()?.local_addr.as_ref()
    }

    /// Per-request data for the layers above (a proxy keeps its state
    /// here); empty at the start of each request.
    pub fn extensions_mut(&mut self) -> &mut http::Extensions {
        &mut self.ext
    }

    /// Per-request data for the layers above.
    pub fn extensions(&self) -> &http::Extensions {
        &self.ext
    }

    /// The TLS digest of the connection (version, cipher, group, ALPN,
    /// SNI, client certificate), if it is TLS.
    pub fn tls_digest(&self) -> Option<&crate::protocols::TlsDigest> {
        self.conn.stream().tls_digest()
    }

    /// The connection's digest in Pingora's shape (kept by the stream,
    /// built on the first call); `None` for a stream that keeps none.
    pub fn digest(&self) -> Option<&crate::protocols::Digest> {
        self.conn.stream().connection_digest()
    }

    /// The underlying stream.
    pub fn stream(&self) -> &Stream {
        self.conn.stream()
    }

    /// Take the stream back, with any bytes already read but not consumed.
    pub fn into_inner(self) -> (Stream, Bytes) {
        let (stream, buf) = self.conn.into_parts();
        (stream, buf.freeze())
    }
}
