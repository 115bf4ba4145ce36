//! The client side of an HTTP/1 connection, for talking to upstreams.

use bytes::Bytes;
use http::header::{HeaderMap, CONTENT_LENGTH};
use http::{StatusCode, Version};
use pingora_error::{Error, ErrorType::*, Result, RetryType};
use pingora_http::{RequestHeader, ResponseHeader};

use super::conn::{conn_timed, BodyWriter, Conn};
use super::framing::{self, Framing};
use super::H1Options;
use crate::protocols::http::Progress;
use crate::protocols::Stream;

/// Names the type; its state is not shown.
impl std::fmt::Debug for HttpSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSession").finish_non_exhaustive()
    }
}

/// One HTTP/1 client connection: write a request, read its response, and
/// learn whether the connection may carry another request.
///
/// ```no_run
/// # async fn f(stream: pingora_core::protocols::Stream) -> pingora_error::Result<()> {
/// use pingora_core::protocols::http::v1::client::HttpSession;
/// use pingora_http::RequestHeader;
///
/// let mut session = HttpSession::new(stream);
/// let mut req = RequestHeader::build("GET", b"/", None)?;
/// req.insert_header("Host", "example.com")?;
/// session.write_request_header(Box::new(req)).await?;
/// session.read_response().await?;
/// while let Some(chunk) = session.read_body_bytes().await? {
///     // use chunk
/// }
/// let reusable = session.reuse();
/// # Ok(()) }
/// ```
pub struct HttpSession {
    /// Boxed: the session moves between the connector, the proxy and the
    /// pool on every request, and a pointer moves for free where the
    /// whole connection state (~500 bytes) cost a copy each time.
    conn: Box<Conn>,
    req: Option<Box<RequestHeader>>,
    resp: Option<Box<ResponseHeader>>,
    /// Status and version of the last response header read (kept when the
    /// header itself is taken).
    resp_meta: Option<(StatusCode, Version)>,
    keepalive: bool,
    upgraded: bool,
    /// The connection pool key it was taken under, set by the connector.
    pub(crate) pool_key: Option<u64>,
}

impl HttpSession {
    /// A session on a connected stream, with default limits.
    pub fn new(stream: Stream) -> Self {
        Self::new_with_options(stream, H1Options::default())
    }

    /// A session with the given limits and timeouts. `header_read_timeout`
    /// bounds the wait for a response header; `body_read_timeout` each body
    /// read; `max_body_bytes` is not applied to responses.
    pub fn new_with_options(stream: Stream, opts: H1Options) -> Self {
        HttpSession {
            conn: Conn::with_spare_buffers(stream, opts),
            req: None,
            resp: None,
            resp_meta: None,
            keepalive: false,
            upgraded: false,
            pool_key: None,
        }
    }

    /// Write a request header and flush it. The body framing follows its
    /// Transfer-Encoding (chunked) or Content-Length; with neither, the
    /// request has no body.
    ///
    /// # Errors
    ///
    /// `InvalidHTTPHeader` if the Content-Length values are invalid or differ;
    /// `WriteError` or `WriteTimedout` if sending fails or outlasts the write
    /// timeout.
    pub async fn write_request_header(&mut self, req: Box<RequestHeader>) -> Result<usize> {
        let framing =
            if framing::has_token(&*req, pingora_http::tracked::TRANSFER_ENCODING, "chunked") {
                Framing::Chunked
            } else {
                match framing::content_length(&*req)? {
                    Some(n) => Framing::Length(n),
                    None => Framing::None,
                }
            };
        self.keepalive = framing::wants_keepalive(req.version(), &*req);
        let pending = self.conn.pending_mut();
        pending.reserve(req.h1_len());
        req.write_h1(pending);
        let n = self.conn.pending_len();
        self.conn.start_write(framing);
        self.conn.flush().await.map_err(|e| e.into_up())?;
        self.resp = None;
        self.resp_meta = None;
        self.upgraded = false;
        if let Some(old) = self.req.replace(req) {
            RequestHeader::recycle(old);
        }
        Ok(n)
    }

    /// Write request body bytes (raw bytes after an upgrade).
    ///
    /// # Errors
    ///
    /// `H1Error` if the request has no body (or it has ended), or if `data`
    /// runs past the Content-Length; `WriteError` or `WriteTimedout` if the
    /// write fails or outlasts the write timeout.
    pub async fn write_body(&mut self, data: &[u8]) -> Result<()> {
        self.conn.write_body(data).await.map_err(|e| e.into_up())
    }

    /// Queue request body bytes, to be sent by [`read_body_while_sending`](Self::read_body_while_sending)
    /// while the response is read: neither direction then waits on the
    /// other (an upstream that echoes a large body as it reads it).
    ///
    /// # Errors
    ///
    /// `H1Error` if the request has no body (or it has ended), or if `data`
    /// runs past the Content-Length.
    pub fn queue_body(&mut self, data: Bytes) -> Result<()> {
        self.conn.queue_body(data).map_err(|e| e.into_up())
    }

    /// Queue the end of the request body (last chunk and trailers).
    ///
    /// # Errors
    ///
    /// `H1Error` if a body framed by Content-Length is short.
    pub fn queue_finish(&mut self, trailers: Option<&HeaderMap>) -> Result<()> {
        if self.conn.owes_body() {
            self.keepalive = false;
        }
        self.conn.queue_finish(trailers).map_err(|e| e.into_up())
    }

    /// Whether queued request body bytes are still to be sent.
    pub fn has_queued(&self) -> bool {
        self.conn.has_queued()
    }

    /// Whether a request body framed by Content-Length has gone out whole:
    /// ending it ([`finish_body`](Self::finish_body)) then writes nothing.
    pub fn request_length_sent(&self) -> bool {
        self.conn.writer() == BodyWriter::Length(0) && !self.conn.has_queued()
    }

    /// Read the response header while sending the queued body. `false`:
    /// the queue went out first and no header is in yet (call again).
    ///
    /// # Errors
    ///
    /// While the queue goes out: `WriteError`, `ReadError`, or `WriteTimedout`
    /// if nothing moves within the write timeout. Then the errors of
    /// [`read_response`](Self::read_response).
    pub async fn read_response_while_sending(&mut self) -> Result<bool> {
        if self.conn.has_queued()
            && self.conn.drive_header().await.map_err(|e| e.into_up())? == Progress::Sent
        {
            return Ok(false);
        }
        self.read_response().await.map(|_| true)
    }

    /// The next piece of response body (`Some(None)` at its end) while
    /// sending the queued body. `None`: the queue went out first and
    /// nothing was read (call again).
    ///
    /// # Errors
    ///
    /// While the queue goes out: `WriteError`, `ReadError`, or `WriteTimedout`
    /// if nothing moves within the write timeout. Then the errors of
    /// [`read_body_bytes`](Self::read_body_bytes).
    pub async fn read_body_while_sending(&mut self) -> Result<Option<Option<Bytes>>> {
        if self.conn.has_queued() {
            return self.conn.drive_body().await.map_err(|e| e.into_up());
        }
        self.read_body_bytes().await.map(Some)
    }

    /// End the request body (last chunk and `trailers` when chunked).
    ///
    /// # Errors
    ///
    /// `H1Error` if a body framed by Content-Length is short; `WriteError` or
    /// `WriteTimedout` if the flush fails or outlasts the write timeout.
    pub async fn finish_body(&mut self, trailers: Option<&HeaderMap>) -> Result<()> {
        if self.conn.owes_body() {
            self.keepalive = false;
        }
        self.conn
            .finish_body(trailers)
            .await
            .map_err(|e| e.into_up())
    }

    /// Read the next response header. This may be an interim 1xx
    /// response (check [`is_interim`](Self::is_interim) and call again for
    /// the final one). After `101 Switching Protocols` the connection is a
    /// raw tunnel.
    ///
    /// # Errors
    ///
    /// `ReadTimedout` if the header is not whole within the header read
    /// timeout; `ReadError` if the socket fails; `ConnectionClosed` if the
    /// upstream closes before or inside the header; `InvalidHTTPHeader` for a
    /// malformed header or body framing; `HeaderTooLarge` past the header limits.
    pub async fn read_response(&mut self) -> Result<usize> {
        let opts = *self.conn.opts();
        // Nothing of a response has come yet on this connection.
        let first = self.resp_meta.is_none();
        // One time limit for the whole header, however many reads it takes.
        conn_timed!(
            self.conn,
            opts.header_read_timeout,
            ReadTimedout,
            "response header read timed out",
            self.read_response_steps(first)
        )
        .map_err(|e| e.into_up())
    }

    /// First parse what the first read brings (usually the whole header,
    /// often with body bytes after it); only if that is short, wait for
    /// the whole header block and parse again.
    async fn read_response_steps(&mut self, first: bool) -> Result<usize> {
        for optimistic in [true, false] {
            let len = self
                .conn
                .fill_header(None, optimistic)
                .await
                .map_err(|mut e| {
                    // Reset before a single response byte: on a reused
                    // connection the upstream closed it idle as the request
                    // went out, and never saw the request.
                    if first && e.etype() == &ReadError && self.conn.buf().is_empty() {
                        e.retry = RetryType::ReusedOnly;
                    }
                    e.into_up()
                })?
                .ok_or_else(|| {
                    let mut e =
                        Error::explain(ConnectionClosed, "upstream closed before responding");
                    if first {
                        e.retry = RetryType::ReusedOnly;
                    }
                    e.into_up()
                })?;
            if let Some(n) = self
                .parse_response(len, optimistic)
                .map_err(|e| e.into_up())?
            {
                return Ok(n);
            }
        }
        Error::e_explain(InvalidHTTPHeader, "malformed response header").map_err(|e| e.into_up())
    }

    /// Parse the response header in the first `len` bytes; `None` if they
    /// hold only part of it and `partial_ok`.
    fn parse_response(&mut self, len: usize, partial_ok: bool) -> Result<Option<usize>> {
        let max_headers = self.conn.opts().max_headers;
        // Parsed in one pass; the head's bytes are split off the buffer
        // and shared by the header.
        let (mut header, len) =
            match ResponseHeader::parse_h1(self.conn.buf_mut(), len, max_headers)? {
                Some(parsed) => parsed,
                None if partial_ok => return Ok(None),
                None => return Error::e_explain(InvalidHTTPHeader, "malformed response header"),
            };
        let method = self
            .req
            .as_deref()
            .map(|r| r.method().clone())
            .unwrap_or_default();
        let status = header.status();
        if status == StatusCode::SWITCHING_PROTOCOLS {
            self.upgraded = true;
            self.keepalive = false;
            self.conn.start_body(Framing::UntilClose);
            self.conn.start_write(Framing::UntilClose);
        } else if status.is_informational() {
            self.conn.start_body(Framing::None);
        } else {
            let (framing, clean) =
                framing::response_framing(&method, status, header.version(), &*header)?;
            // Transfer-Encoding overrides Content-Length (RFC 9112 §6.3):
            // the length describes nothing, and must not be forwarded.
            if header.has_tracked(pingora_http::tracked::TRANSFER_ENCODING) {
                header.remove_header(&CONTENT_LENGTH);
            }
            if method == http::Method::CONNECT && status.is_success() {
                self.upgraded = true;
                self.conn.start_write(Framing::UntilClose);
            }
            self.keepalive =
                self.keepalive && clean && framing::wants_keepalive(header.version(), &*header);
            self.conn.start_body(framing);
        }
        self.resp_meta = Some((status, header.version()));
        self.resp = Some(header);
        Ok(Some(len))
    }

    /// The last response header read.
    pub fn resp_header(&self) -> Option<&ResponseHeader> {
        self.resp.as_deref()
    }

    /// Take the last response header read, to forward it without a copy.
    /// The session still knows its status and version (for reuse and
    /// [`resp_version`](Self::resp_version)); `resp_header` is `None`
    /// after this.
    pub fn take_resp_header(&mut self) -> Option<Box<ResponseHeader>> {
        self.resp.take()
    }

    /// Whether the last response header read is an interim (1xx, not 101)
    /// one, so that the final response is still to come.
    pub fn is_interim(&self) -> bool {
        self.resp_meta.is_some_and(|(status, _)| {
            status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS
        })
    }

    /// Whether the connection became a raw tunnel (101, or 2xx to CONNECT).
    pub fn is_upgraded(&self) -> bool {
        self.upgraded
    }

    /// The next piece of the response body; `None` at its end.
    ///
    /// # Errors
    ///
    /// `ReadTimedout` if a read waits past the body read timeout; `ReadError`
    /// if the socket fails; `ConnectionClosed` if the upstream closes inside a
    /// Content-Length or chunked body; `InvalidHTTPHeader` for bad chunked
    /// framing (`HeaderTooLarge` for oversized trailers).
    pub async fn read_body_bytes(&mut self) -> Result<Option<Bytes>> {
        self.conn.read_body().await.map_err(|e| e.into_up())
    }

    /// Whether the response body has been read to its end.
    pub fn is_body_done(&self) -> bool {
        self.conn.body_done()
    }

    /// Response body bytes read so far.
    pub fn body_bytes_read(&self) -> u64 {
        self.conn.body_read()
    }

    /// The response's trailer fields, after its chunked body was read.
    pub fn trailers(&self) -> Option<&HeaderMap> {
        self.conn.trailers()
    }

    /// Whether the connection may carry another request: both sides allow
    /// keep-alive, both bodies are complete, and no stray bytes arrived.
    pub fn can_reuse(&self) -> bool {
        self.keepalive
            && !self.upgraded
            && self.resp_meta.is_some()
            && !self.is_interim()
            && self.conn.body_done()
            && self.conn.body_done()
            && self.conn.writer() == BodyWriter::Done
            && !self.conn.has_queued()
            && self.conn.buf().is_empty()
            && !self.conn.eof()
    }

    /// The stream back, for the connection pool, if it can be reused.
    pub fn reuse(mut self) -> Option<Stream> {
        if let Some(req) = self.req.take() {
            RequestHeader::recycle(req);
        }
        if self.can_reuse() {
            Some(self.conn.keep_buffers_spare())
        } else {
            None
        }
    }

    /// The HTTP version of the response, once read.
    pub fn resp_version(&self) -> Option<Version> {
        self.resp_meta.map(|(_, v)| v)
    }

    /// Time allowed for the response header and for each body read.
    pub fn set_read_timeout(&mut self, timeout: Option<std::time::Duration>) {
        self.conn.opts_mut().header_read_timeout = timeout;
        self.conn.opts_mut().body_read_timeout = timeout;
    }

    /// Time allowed for each write.
    pub fn set_write_timeout(&mut self, timeout: Option<std::time::Duration>) {
        self.conn.opts_mut().write_timeout = timeout;
    }

    /// Close the connection (it is never reused after this).
    pub async fn shutdown(&mut self) {
        use tokio::io::AsyncWriteExt;
        self.keepalive = false;
        let _ = self.conn.stream_mut().shutdown().await;
    }

    /// The underlying stream.
    pub fn stream(&self) -> &Stream {
        self.conn.stream()
    }
}
