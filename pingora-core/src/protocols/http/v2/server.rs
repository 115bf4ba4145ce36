//! The server side of HTTP/2: one [`HttpSession`] per stream, with the same
//! shape as an HTTP/1 session, over the `h2` crate.

use std::future::poll_fn;
use std::time::Duration;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::header::{HeaderMap, HeaderName, CONNECTION, TRANSFER_ENCODING, UPGRADE};
use http::{Method, StatusCode};
use pingora_error::{Error, ErrorType::*, OkOrErr, OrErr, Result};
use pingora_http::{RequestHeader, ResponseHeader};

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::protocols::{SocketAddr, SocketDigest, Stream, TlsDigest, IO};

/// Limits and timers of an HTTP/2 connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H2Options {
    /// Most streams the client may open at once (default 100).
    pub max_concurrent_streams: u32,
    /// Each stream's flow-control window (default 64 KiB), which bounds how
    /// much a client can send ahead of the app reading it.
    pub initial_window_size: u32,
    /// The connection's window (default 1 MiB).
    pub initial_connection_window_size: u32,
    /// Send a PING this often while the connection lives; if the PONG does
    /// not come back within the same time, the connection is closed.
    /// Default: none.
    pub ping_interval: Option<Duration>,
    /// Largest header list accepted (default 64 KiB).
    pub max_header_list_size: u32,
    /// A client that resets more than this many of its streams before
    /// their responses ended, when those make up more than half of the
    /// streams it opened, gets GOAWAY(ENHANCE_YOUR_CALM) and the connection
    /// closes (the HTTP/2 "rapid reset" attack, CVE-2023-44487). Each reset
    /// stream's work is cancelled at once either way. Default 100.
    pub max_reset_streams: u32,
}

impl Default for H2Options {
    fn default() -> Self {
        H2Options {
            max_concurrent_streams: 100,
            initial_window_size: 65_535,
            initial_connection_window_size: 1 << 20,
            ping_interval: None,
            max_header_list_size: 64 * 1024,
            max_reset_streams: 100,
        }
    }
}

/// An HTTP/2 server connection.
pub type H2Connection = h2::server::Connection<Stream, Bytes>;

/// The HTTP/2 handshake on an accepted stream (after ALPN h2, or the h2c
/// preface), with these settings.
///
/// # Errors
///
/// `H2Error`, marked as the client's, if its connection preface or the
/// SETTINGS exchange fails.
pub async fn handshake(io: Stream, opts: &H2Options) -> Result<H2Connection> {
    let io: Stream = Box::new(Lingering(Some(io)));
    h2::server::Builder::new()
        .max_concurrent_streams(opts.max_concurrent_streams)
        .initial_window_size(opts.initial_window_size)
        .initial_connection_window_size(opts.initial_connection_window_size)
        .max_header_list_size(opts.max_header_list_size)
        .handshake(io)
        .await
        .or_err(H2Error, "HTTP/2 handshake")
        .map_err(|e| e.into_down())
}

/// The stream under an HTTP/2 server connection. When `h2` is done with
/// it (after a GOAWAY: idle, shutdown, a reset storm) it is not closed at
/// once but drained for a moment (up to 2 s or 1 MiB, until the client
/// closes): closing a socket with unread input makes the kernel answer
/// with a reset, which can destroy the GOAWAY before the client reads it.
/// nginx's lingering close does the same.
#[derive(Debug)]
struct Lingering(Option<Stream>);

impl Lingering {
    fn inner(self: Pin<&mut Self>) -> Pin<&mut Stream> {
        Pin::new(self.get_mut().0.as_mut().expect("taken only when dropped"))
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let (Some(mut s), Ok(rt)) = (self.0.take(), tokio::runtime::Handle::try_current()) else {
            return;
        };
        rt.spawn(async move {
            crate::protocols::close_lingering(&mut s, &mut bytes::BytesMut::new()).await;
        });
    }
}

impl AsyncRead for Lingering {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.inner().poll_read(cx, buf)
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.inner().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.inner().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.inner().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.inner().poll_shutdown(cx)
    }
}

impl IO for Lingering {
    fn socket_digest(&self) -> Option<&SocketDigest> {
        self.0.as_ref()?.socket_digest()
    }

    fn tls_digest(&self) -> Option<&TlsDigest> {
        self.0.as_ref()?.tls_digest()
    }

    fn connection_digest(&self) -> Option<&crate::protocols::Digest> {
        self.0.as_ref()?.connection_digest()
    }

    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &self.0 {
            Some(s) => s.poll_read_ready(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

/// Headers that are about one HTTP/1 connection and must not appear in
/// HTTP/2 (RFC 9113 §8.2.2).
const HOP_BY_HOP: [&str; 4] = ["keep-alive", "proxy-connection", "te", "http2-settings"];

fn strip_connection_headers(h: &mut ResponseHeader) {
    h.remove_header(&CONNECTION);
    h.remove_header(&TRANSFER_ENCODING);
    h.remove_header(&UPGRADE);
    for name in HOP_BY_HOP {
        h.remove_header(&HeaderName::from_static(name));
    }
}

/// Names the type; its state is not shown.
impl std::fmt::Debug for HttpSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSession").finish_non_exhaustive()
    }
}

/// One HTTP/2 stream: a request and its response.
pub struct HttpSession {
    req: Box<RequestHeader>,
    body_in: RecvStream,
    body_done: bool,
    trailers_in: Option<HeaderMap>,
    send_resp: SendResponse<Bytes>,
    body_out: Option<SendStream<Bytes>>,
    resp: Option<Box<ResponseHeader>>,
    trailers_out: Option<HeaderMap>,
    body_read: u64,
    body_sent: u64,
    /// HEAD, 204 or 304: no body goes out.
    no_body: bool,
    ended: bool,
    tls: Option<TlsDigest>,
    socket: Option<SocketDigest>,
    /// The connection digest in Pingora's shape, once asked for.
    kept: crate::protocols::digest::KeptDigest,
    ext: http::Extensions,
    /// Largest request body taken (413, or a reset once a response began).
    max_body: Option<u64>,
    /// Longest wait for flow-control credit from the client.
    write_timeout: Option<Duration>,
}

impl HttpSession {
    /// Wrap one accepted stream of `conn`.
    pub fn new(
        request: http::Request<RecvStream>,
        send_resp: SendResponse<Bytes>,
        tls: Option<TlsDigest>,
        socket: Option<SocketDigest>,
    ) -> Self {
        let (parts, body_in) = request.into_parts();
        let body_done = body_in.is_end_stream();
        HttpSession {
            req: Box::new(RequestHeader::from_parts(parts)),
            body_in,
            body_done,
            trailers_in: None,
            send_resp,
            body_out: None,
            resp: None,
            trailers_out: None,
            body_read: 0,
            body_sent: 0,
            no_body: false,
            ended: false,
            tls,
            socket,
            kept: Default::default(),
            ext: http::Extensions::new(),
            max_body: None,
            write_timeout: None,
        }
    }

    /// The HTTP/1 limits that apply to a stream too: the largest request
    /// body (`max_body_bytes`), and the longest wait for the client's
    /// flow-control credit (`write_timeout`: a client that advertises a
    /// zero window cannot hold a response forever).
    pub fn set_limits(&mut self, max_body: Option<u64>, write_timeout: Option<Duration>) {
        self.max_body = max_body;
        self.write_timeout = write_timeout;
    }

    /// Why the request must be refused, as the status to answer with:
    /// 400 for a `:path` that is neither origin-form (`/…`) nor `*` for
    /// OPTIONS (RFC 9113 §8.3.1), or a `Host` that names another authority
    /// than `:authority` (§8.3.1); 413 for a `content-length` above the
    /// body limit. `None` for a request to serve.
    pub fn request_error(&self) -> Option<u16> {
        let req = &self.req;
        if req.method() != Method::CONNECT {
            let path = req.uri().path();
            let asterisk = path == "*" && req.method() == Method::OPTIONS;
            if !path.starts_with('/') && !asterisk {
                return Some(400);
            }
        }
        if let (Some(authority), Some(host)) = (
            req.uri().authority(),
            req.header_values(&http::header::HOST).next(),
        ) {
            if !authority.as_str().as_bytes().eq_ignore_ascii_case(host)
                || req.header_values(&http::header::HOST).nth(1).is_some()
            {
                return Some(400);
            }
        }
        if let Some(max) = self.max_body {
            let declared = req
                .header_values(&http::header::CONTENT_LENGTH)
                .next()
                .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<u64>().ok());
            if declared.is_some_and(|n| n > max) {
                return Some(413);
            }
        }
        None
    }

    /// The request header (`:authority` is in the URI; there is no Host
    /// line unless the client sent one).
    pub fn req_header(&self) -> &RequestHeader {
        &self.req
    }

    /// The request header, to change.
    pub fn req_header_mut(&mut self) -> &mut RequestHeader {
        &mut self.req
    }

    /// The next piece of the request body; `None` at its end. Flow-control
    /// credit goes back to the client only as the app reads, so a client
    /// cannot send more than a window ahead.
    ///
    /// # Errors
    ///
    /// `BodyTooLarge` once the body passes the limit of
    /// [`set_limits`](Self::set_limits); `H2Error` if the stream fails (the
    /// client reset it) or its trailers cannot be read.
    pub async fn read_body_bytes(&mut self) -> Result<Option<Bytes>> {
        if self.body_done {
            return Ok(None);
        }
        match self.body_in.data().await {
            Some(Ok(data)) => {
                let _ = self.body_in.flow_control().release_capacity(data.len());
                self.body_read += data.len() as u64;
                if self.max_body.is_some_and(|max| self.body_read > max) {
                    self.body_done = true;
                    return Error::e_explain(BodyTooLarge, "request body larger than the limit")
                        .map_err(|e| e.into_down());
                }
                Ok(Some(data))
            }
            Some(Err(e)) => {
                self.body_done = true;
                Err(Error::because(H2Error, "reading the request body", e).into_down())
            }
            None => {
                self.body_done = true;
                self.trailers_in = self
                    .body_in
                    .trailers()
                    .await
                    .or_err(H2Error, "reading request trailers")
                    .map_err(|e| e.into_down())?;
                Ok(None)
            }
        }
    }

    /// Return once the client has reset this stream (or the connection
    /// failed) before the response ended: for a proxy to give up the
    /// upstream request at once (a reset storm then costs no upstream
    /// work). Pends while the stream is open. No I/O: it asks `h2` for the
    /// stream's state.
    pub async fn wait_client_gone(&mut self) {
        poll_fn(|cx| self.poll_client_gone(cx)).await
    }

    /// [`wait_client_gone`](Self::wait_client_gone) as a poll.
    pub fn poll_client_gone(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.ended {
            return std::task::Poll::Pending; // never woken: not watched
        }
        self.poll_reset(cx).map(|_| ())
    }

    fn poll_reset(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), h2::Error>> {
        let r = match self.body_out.as_mut() {
            Some(send) => send.poll_reset(cx),
            None => self.send_resp.poll_reset(cx),
        };
        r.map_ok(|_| ())
    }

    /// Whether the client reset this stream before its response ended
    /// (what a rapid-reset attack does to every stream it opens).
    pub fn reset_by_client(&mut self) -> bool {
        if self.ended {
            return false;
        }
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        matches!(self.poll_reset(&mut cx), std::task::Poll::Ready(Ok(())))
    }

    /// Whether the request body has been read to its end.
    pub fn is_body_done(&self) -> bool {
        self.body_done
    }

    /// The request's trailers, once its body has been read.
    pub fn trailers(&self) -> Option<&HeaderMap> {
        self.trailers_in.as_ref()
    }

    /// Write the response header. Connection-specific fields (Connection,
    /// Transfer-Encoding, Upgrade, Keep-Alive, …) are dropped, as HTTP/2
    /// requires.
    ///
    /// # Errors
    ///
    /// Those of [`write_response_header_eos`](Self::write_response_header_eos):
    /// `H2Error`.
    pub async fn write_response_header(&mut self, resp: Box<ResponseHeader>) -> Result<()> {
        self.write_response_header_eos(resp, false).await
    }

    /// Write the response header; with `end_of_stream` the response ends
    /// there, in the same HEADERS frame (a gRPC "Trailers-Only" answer
    /// must arrive that way).
    ///
    /// # Errors
    ///
    /// `H2Error` if a response header was already written, for a 101, or if
    /// sending fails (the client reset the stream, the connection failed).
    pub async fn write_response_header_eos(
        &mut self,
        mut resp: Box<ResponseHeader>,
        end_of_stream: bool,
    ) -> Result<()> {
        if self.resp.is_some() {
            return Error::e_explain(H2Error, "response header already written");
        }
        let status = resp.status();
        if status.is_informational() {
            // 1xx: an interim response; 101 has no meaning in HTTP/2.
            if status == StatusCode::SWITCHING_PROTOCOLS {
                return Error::e_explain(H2Error, "101 cannot be sent over HTTP/2");
            }
            strip_connection_headers(&mut resp);
            let interim = http::Response::from_parts(resp.into_parts(), ());
            return self
                .send_resp
                .send_informational(interim)
                .or_err(H2Error, "sending an interim response");
        }
        strip_connection_headers(&mut resp);
        self.no_body = self.req.method == Method::HEAD
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        // The fields for the HEADERS frame, copied straight from the
        // lines (no copy of the whole header); `resp` is kept as written.
        let mut head = http::Response::new(());
        *head.status_mut() = status;
        *head.headers_mut() = resp.to_header_map();
        let send = self
            .send_resp
            .send_response(head, end_of_stream)
            .or_err(H2Error, "sending the response header")
            .map_err(|e| e.into_down())?;
        self.ended = end_of_stream;
        self.body_out = Some(send);
        self.resp = Some(resp);
        Ok(())
    }

    /// The final response header, once written.
    pub fn response_written(&self) -> Option<&ResponseHeader> {
        self.resp.as_deref()
    }

    /// Send response body bytes, as the client's flow-control window
    /// allows: this waits for credit rather than buffering without bound.
    ///
    /// # Errors
    ///
    /// `H2Error` if no response header was written, or the stream fails or is
    /// closed; `WriteTimedout` if the client grants no flow-control credit
    /// within the write timeout.
    pub async fn write_body(&mut self, data: Bytes) -> Result<()> {
        if self.no_body || data.is_empty() {
            return Ok(());
        }
        let send = self
            .body_out
            .as_mut()
            .or_err(H2Error, "no response header written")?;
        let to = super::Receiver::Client;
        super::send_with_credit(send, data, self.write_timeout, to, &mut self.body_sent).await
    }

    /// Trailers to send after the body (gRPC status, for one).
    pub fn set_response_trailers(&mut self, trailers: HeaderMap) {
        self.trailers_out = Some(trailers);
    }

    /// End the response: trailers if set, else an empty final DATA frame.
    ///
    /// # Errors
    ///
    /// `H2Error` if no response header was written, or the end cannot be sent
    /// (the client reset the stream, the connection failed).
    pub async fn finish_body(&mut self) -> Result<()> {
        if self.ended {
            return Ok(());
        }
        let send = self
            .body_out
            .as_mut()
            .or_err(H2Error, "no response header written")?;
        self.ended = true;
        let r = match self.trailers_out.take() {
            Some(t) if !self.no_body => send.send_trailers(t),
            _ => send.send_data(Bytes::new(), true),
        };
        r.or_err(H2Error, "ending the response")
            .map_err(|e| e.into_down())
    }

    /// Answer with an error status and an empty body.
    ///
    /// # Errors
    ///
    /// `InvalidHTTPHeader` if `status` is not 100 to 999; `H2Error` if the
    /// answer cannot be sent. Nothing is sent (and no error) once a response
    /// header was.
    pub async fn respond_error(&mut self, status: u16) -> Result<()> {
        if self.resp.is_some() {
            return Ok(());
        }
        let resp = ResponseHeader::build(status, Some(1))?;
        self.write_response_header(Box::new(resp)).await?;
        self.finish_body().await
    }

    /// Response body bytes sent.
    pub fn body_bytes_sent(&self) -> u64 {
        self.body_sent
    }

    /// Request body bytes read.
    pub fn body_bytes_read(&self) -> u64 {
        self.body_read
    }

    /// Per-request data for the layers above.
    pub fn extensions_mut(&mut self) -> &mut http::Extensions {
        &mut self.ext
    }

    /// Per-request data for the layers above.
    pub fn extensions(&self) -> &http::Extensions {
        &self.ext
    }

    /// The client's address: the original client named by a PROXY
    /// protocol header, when the connection came with one, else the
    /// socket's peer.
    pub fn client_addr(&self) -> Option<&SocketAddr> {
        self.socket.as_ref()?.client_addr()
    }

    /// The local address the client connected to.
    pub fn server_addr(&self) -> Option<&SocketAddr> {
        self.socket.as_ref()?.local_addr.as_ref()
    }

    /// The TLS digest of the connection.
    pub fn tls_digest(&self) -> Option<&TlsDigest> {
        self.tls.as_ref()
    }

    /// The connection's digest in Pingora's shape (built on the first
    /// call).
    pub fn digest(&self) -> Option<&crate::protocols::Digest> {
        Some(self.kept.get(self.socket.as_ref(), self.tls.as_ref()))
    }

    /// Break the response off: reset the stream (INTERNAL_ERROR), so the
    /// client knows it is incomplete.
    pub fn abort(&mut self) {
        self.ended = true;
        if let Some(send) = self.body_out.as_mut() {
            send.send_reset(h2::Reason::INTERNAL_ERROR);
        } else {
            self.send_resp.send_reset(h2::Reason::INTERNAL_ERROR);
        }
    }

    /// Finish the stream: end the response if the app did not. Streams are
    /// never "reused"; returns false.
    ///
    /// # Errors
    ///
    /// `H2Error` if the end of the response (or the 500 sent for want of
    /// one) cannot be sent, e.g. the client reset the stream.
    pub async fn finish(&mut self) -> Result<bool> {
        if self.resp.is_none() {
            self.respond_error(500).await?;
        } else if !self.ended {
            self.finish_body().await?;
        }
        Ok(false)
    }
}
