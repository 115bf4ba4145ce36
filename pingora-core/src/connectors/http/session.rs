//! [`ClientSession`]: one request to an upstream, over HTTP/1 or an
//! HTTP/2 stream, with the forms Pingora's callers use.

use super::*;

/// Names the type; its state is not shown.
impl std::fmt::Debug for ClientSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSession").finish_non_exhaustive()
    }
}

/// A session to an upstream: HTTP/1 (one connection) or HTTP/2 (one stream
/// of a shared connection). The methods are the same for both.
// One per request in flight, moved rarely: boxing a variant would cost an
// allocation per request for nothing.
#[allow(clippy::large_enum_variant)]
pub enum ClientSession {
    /// HTTP/1.x.
    H1(v1::client::HttpSession),
    /// One HTTP/2 stream.
    H2(Http2Session),
}

impl ClientSession {
    /// The upstream connection's digest in Pingora's shape (socket, TLS
    /// session, set-up times), kept with the connection.
    pub fn digest(&self) -> Option<&crate::protocols::Digest> {
        match self {
            ClientSession::H1(s) => s.stream().connection_digest(),
            ClientSession::H2(s) => s.connection().digest(),
        }
    }

    /// The upstream socket's file descriptor (-1 when unknown).
    pub fn fd(&self) -> std::os::fd::RawFd {
        self.digest()
            .and_then(|d| d.socket_digest.as_ref())
            .map_or(-1, |s| s.raw_fd)
    }

    /// Send the request header. With `end_of_stream` the request has no
    /// body; otherwise the body follows with `write_body`, ended by
    /// [`finish_body`](Self::finish_body). (HTTP/1 frames the body by the
    /// header's Content-Length or Transfer-Encoding.)
    ///
    /// # Errors
    ///
    /// HTTP/1: `InvalidHTTPHeader` for a bad Content-Length, `WriteError` or
    /// `WriteTimedout` if sending fails. HTTP/2: `InvalidHTTPHeader` if there is
    /// no valid authority, `H2Error` if sending fails (retryable after GOAWAY).
    pub async fn write_request_header_eos(
        &mut self,
        req: Box<RequestHeader>,
        end_of_stream: bool,
    ) -> Result<()> {
        match self {
            ClientSession::H1(s) => s.write_request_header(req).await.map(|_| ()),
            ClientSession::H2(s) => s.write_request_header(req, end_of_stream).await,
        }
    }

    /// Send the request header; a body may follow (Pingora's form: end
    /// it with [`finish_request_body`](Self::finish_request_body), even
    /// when empty).
    ///
    /// # Errors
    ///
    /// Those of [`write_request_header_eos`](Self::write_request_header_eos):
    /// `InvalidHTTPHeader`, `WriteError` or `WriteTimedout` (HTTP/1);
    /// `InvalidHTTPHeader` or `H2Error` (HTTP/2).
    pub async fn write_request_header(&mut self, req: Box<RequestHeader>) -> Result<()> {
        self.write_request_header_eos(req, false).await
    }

    /// Send request body bytes; `end` ends the body (Pingora's form).
    ///
    /// # Errors
    ///
    /// Those of [`write_body`](Self::write_body) and, with `end`,
    /// [`finish_body`](Self::finish_body): `H1Error`, `WriteError` or
    /// `WriteTimedout` (HTTP/1); `H2Error` or `WriteTimedout` (HTTP/2).
    pub async fn write_request_body(&mut self, data: Bytes, end: bool) -> Result<()> {
        if !data.is_empty() {
            self.write_body(data).await?;
        }
        if end {
            self.finish_body(None).await?;
        }
        Ok(())
    }

    /// End the request body (Pingora's form).
    ///
    /// # Errors
    ///
    /// Those of [`finish_body`](Self::finish_body): `H1Error` for a short
    /// Content-Length body, `WriteError` or `WriteTimedout` (HTTP/1); `H2Error`
    /// (HTTP/2).
    pub async fn finish_request_body(&mut self) -> Result<()> {
        self.finish_body(None).await
    }

    /// Read the response header (Pingora's name for
    /// [`read_response`](Self::read_response)).
    ///
    /// # Errors
    ///
    /// Those of [`read_response`](Self::read_response): `ReadTimedout`;
    /// `ReadError`, `ConnectionClosed`, `InvalidHTTPHeader` or `HeaderTooLarge`
    /// (HTTP/1); `H2Error` (HTTP/2).
    pub async fn read_response_header(&mut self) -> Result<()> {
        self.read_response().await
    }

    /// The response header, once read (Pingora's name).
    pub fn response_header(&self) -> Option<&ResponseHeader> {
        self.resp_header()
    }

    /// The next piece of the response body (Pingora's name for
    /// [`read_body_bytes`](Self::read_body_bytes)).
    ///
    /// # Errors
    ///
    /// Those of [`read_body_bytes`](Self::read_body_bytes): `ReadTimedout`;
    /// `ReadError`, `ConnectionClosed` or `InvalidHTTPHeader` (HTTP/1); `H2Error`
    /// (HTTP/2).
    pub async fn read_response_body(&mut self) -> Result<Option<Bytes>> {
        self.read_body_bytes().await
    }

    /// Whether the response body has been read to its end (Pingora's
    /// name).
    pub fn response_done(&mut self) -> bool {
        self.is_body_done()
    }

    /// Bound each wait for response bytes.
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        match self {
            ClientSession::H1(s) => s.set_read_timeout(timeout),
            ClientSession::H2(s) => s.set_read_timeout(timeout),
        }
    }

    /// Bound each wait to send request bytes.
    pub fn set_write_timeout(&mut self, timeout: Option<Duration>) {
        match self {
            ClientSession::H1(s) => s.set_write_timeout(timeout),
            ClientSession::H2(s) => s.set_write_timeout(timeout),
        }
    }

    /// Give up the exchange: HTTP/1 closes the connection (it is not
    /// reused), HTTP/2 resets the stream.
    pub async fn shutdown(&mut self) {
        match self {
            ClientSession::H1(s) => s.shutdown().await,
            ClientSession::H2(s) => s.abort(),
        }
    }

    /// The HTTP/1 session, if it is one.
    pub fn as_http1(&self) -> Option<&v1::client::HttpSession> {
        match self {
            ClientSession::H1(s) => Some(s),
            ClientSession::H2(_) => None,
        }
    }

    /// The HTTP/2 stream, if it is one.
    pub fn as_http2(&self) -> Option<&Http2Session> {
        match self {
            ClientSession::H1(_) => None,
            ClientSession::H2(s) => Some(s),
        }
    }

    /// The upstream's address.
    pub fn server_addr(&self) -> Option<&crate::protocols::SocketAddr> {
        self.digest()?.socket_digest.as_ref()?.peer_addr.as_ref()
    }

    /// Our end's address.
    pub fn client_addr(&self) -> Option<&crate::protocols::SocketAddr> {
        self.digest()?.socket_digest.as_ref()?.local_addr.as_ref()
    }

    /// The stream, for HTTP/1 (an HTTP/2 stream shares its connection).
    pub fn stream(&self) -> Option<&crate::protocols::Stream> {
        match self {
            ClientSession::H1(s) => Some(s.stream()),
            ClientSession::H2(_) => None,
        }
    }

    /// Send request body bytes.
    ///
    /// # Errors
    ///
    /// HTTP/1: `H1Error` if the request has no body (or it has ended) or `data`
    /// runs past the Content-Length, `WriteError` or `WriteTimedout` if the
    /// write fails. HTTP/2: `H2Error` if the stream fails, `WriteTimedout` if
    /// no flow-control credit comes within the write timeout.
    pub async fn write_body(&mut self, data: Bytes) -> Result<()> {
        match self {
            ClientSession::H1(s) => s.write_body(&data).await,
            ClientSession::H2(s) => s.write_body(data).await,
        }
    }

    /// End the request, with trailers if given.
    ///
    /// # Errors
    ///
    /// HTTP/1: `H1Error` if a body framed by Content-Length is short,
    /// `WriteError` or `WriteTimedout` if the flush fails. HTTP/2: `H2Error` if
    /// body bytes are still queued or the end cannot be sent.
    pub async fn finish_body(&mut self, trailers: Option<HeaderMap>) -> Result<()> {
        match self {
            ClientSession::H1(s) => s.finish_body(trailers.as_ref()).await,
            ClientSession::H2(s) => s.finish_body(trailers).await,
        }
    }

    /// Read the response header (HTTP/1: 1xx interim responses come first;
    /// see `is_interim`).
    ///
    /// # Errors
    ///
    /// `ReadTimedout` if no header comes within the read timeout. HTTP/1:
    /// `ReadError`, `ConnectionClosed`, `InvalidHTTPHeader` or `HeaderTooLarge`.
    /// HTTP/2: `H2Error` if the stream fails (retryable if the upstream did
    /// not process it).
    pub async fn read_response(&mut self) -> Result<()> {
        match self {
            ClientSession::H1(s) => s.read_response().await.map(|_| ()),
            ClientSession::H2(s) => s.read_response().await,
        }
    }

    /// The response header, once read.
    pub fn resp_header(&self) -> Option<&ResponseHeader> {
        match self {
            ClientSession::H1(s) => s.resp_header(),
            ClientSession::H2(s) => s.resp_header(),
        }
    }

    /// Take the response header, to forward it without a copy;
    /// `resp_header` is `None` after this.
    pub fn take_resp_header(&mut self) -> Option<Box<ResponseHeader>> {
        match self {
            ClientSession::H1(s) => s.take_resp_header(),
            ClientSession::H2(s) => s.take_resp_header(),
        }
    }

    /// The next piece of the response body; `None` at its end.
    ///
    /// # Errors
    ///
    /// `ReadTimedout` if a read waits past the read timeout. HTTP/1:
    /// `ReadError`, `ConnectionClosed` inside a delimited body, or
    /// `InvalidHTTPHeader` for bad chunked framing. HTTP/2: `H2Error` if the
    /// stream fails.
    pub async fn read_body_bytes(&mut self) -> Result<Option<Bytes>> {
        match self {
            ClientSession::H1(s) => s.read_body_bytes().await,
            ClientSession::H2(s) => s.read_body_bytes().await,
        }
    }

    /// Whether the response body has been read to its end (true at once
    /// for a response without a body).
    pub fn is_body_done(&self) -> bool {
        match self {
            ClientSession::H1(s) => s.is_body_done(),
            ClientSession::H2(s) => s.is_body_done(),
        }
    }

    /// The response trailers, once the body has been read.
    pub fn trailers(&self) -> Option<&HeaderMap> {
        match self {
            ClientSession::H1(s) => s.trailers(),
            ClientSession::H2(s) => s.trailers(),
        }
    }

    /// Queue request body bytes to be sent by [`read_body_while_sending`](Self::read_body_while_sending),
    /// instead of waiting for them to go out: the way to stream a body up
    /// while the response streams down, without either side waiting on
    /// the other.
    ///
    /// # Errors
    ///
    /// HTTP/1: `H1Error` if the request has no body (or it has ended), or if
    /// `data` runs past the Content-Length. HTTP/2: `H2Error` if body bytes are
    /// already queued.
    pub fn queue_body(&mut self, data: Bytes) -> Result<()> {
        match self {
            ClientSession::H1(s) => s.queue_body(data),
            ClientSession::H2(s) => s.queue_body(data),
        }
    }

    /// End the request body (with trailers) once the queue is out; HTTP/1
    /// queues the last chunk, HTTP/2 needs no credit to end a stream.
    ///
    /// # Errors
    ///
    /// HTTP/1: `H1Error` if a body framed by Content-Length is short. HTTP/2:
    /// `H2Error` if no request was sent or the end cannot be sent.
    pub fn queue_finish(&mut self, trailers: Option<HeaderMap>) -> Result<()> {
        match self {
            ClientSession::H1(s) => s.queue_finish(trailers.as_ref()),
            ClientSession::H2(s) => s.queue_finish(trailers),
        }
    }

    /// Whether queued request body is still to be sent.
    pub fn has_queued(&self) -> bool {
        match self {
            ClientSession::H1(s) => s.has_queued(),
            ClientSession::H2(s) => s.has_queued(),
        }
    }

    /// Whether an HTTP/1 request body framed by Content-Length has gone out
    /// whole, so that only its (empty) end is missing. Always `false` over
    /// HTTP/2, where the end of a stream is a frame of its own.
    pub fn request_length_sent(&self) -> bool {
        match self {
            ClientSession::H1(s) => s.request_length_sent(),
            ClientSession::H2(_) => false,
        }
    }

    /// Read the response header while sending the queued body. `false`:
    /// the queue went out first and no header is in yet (call again).
    ///
    /// # Errors
    ///
    /// While the queue goes out: `WriteTimedout` if nothing moves within the
    /// write timeout, `WriteError` or `ReadError` (HTTP/1), `H2Error` (HTTP/2).
    /// Then the errors of [`read_response`](Self::read_response).
    pub async fn read_response_while_sending(&mut self) -> Result<bool> {
        match self {
            ClientSession::H1(s) => s.read_response_while_sending().await,
            ClientSession::H2(s) => s.read_response_while_sending().await,
        }
    }

    /// The next piece of response body (`Some(None)` at its end), sending
    /// the queued body meanwhile. `None`: the queue went out first and
    /// nothing was read (call again).
    ///
    /// # Errors
    ///
    /// While the queue goes out: `WriteTimedout` if nothing moves within the
    /// write timeout, `WriteError` or `ReadError` (HTTP/1), `H2Error` (HTTP/2).
    /// Then the errors of [`read_body_bytes`](Self::read_body_bytes).
    pub async fn read_body_while_sending(&mut self) -> Result<Option<Option<Bytes>>> {
        match self {
            ClientSession::H1(s) => s.read_body_while_sending().await,
            ClientSession::H2(s) => s.read_body_while_sending().await,
        }
    }

    /// Whether this is an HTTP/2 stream.
    pub fn is_http2(&self) -> bool {
        matches!(self, ClientSession::H2(_))
    }
}
