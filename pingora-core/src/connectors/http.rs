//! HTTP sessions to upstreams: HTTP/1 over pooled connections, or HTTP/2
//! streams over shared connections, chosen by ALPN (or prior knowledge).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};

use super::TransportConnector;
use crate::protocols::http::v1;
use crate::protocols::http::v1::H1Options;
use crate::protocols::http::v2::client::{H2Connection, Http2Session, DEFAULT_SETTINGS_WAIT};
use crate::protocols::Stream;
use crate::upstreams::peer::{HttpPeer, ALPN};

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

/// Names the type; its state is not shown.
impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector").finish_non_exhaustive()
    }
}

/// Gives out sessions to peers, reusing idle HTTP/1 connections from the
/// pool and sharing HTTP/2 connections between concurrent requests (a new
/// one opens when all are full).
///
/// ```no_run
/// # async fn f() -> pingora_error::Result<()> {
/// use pingora_core::connectors::http::Connector;
/// use pingora_core::upstreams::peer::HttpPeer;
/// use pingora_http::RequestHeader;
///
/// let connector = Connector::new(None);
/// let peer = HttpPeer::try_new("127.0.0.1:8080", false, String::new())?;
/// let (mut session, _reused) = connector.get_http_session(&peer).await?;
/// let mut req = RequestHeader::build("GET", b"/", None)?;
/// req.insert_header("Host", "example.test")?;
/// session.write_request_header(Box::new(req)).await?;
/// session.finish_request_body().await?;
/// session.read_response().await?;
/// while session.read_body_bytes().await?.is_some() {}
/// connector.release_http_session(session, &peer, None).await;
/// # Ok(()) }
/// ```
pub struct Connector {
    transport: TransportConnector,
    h2: Mutex<HashMap<u64, H2Peer>>,
}

/// The HTTP/2 connections to one peer, and how many are being opened.
#[derive(Default)]
struct H2Peer {
    conns: Vec<H2Connection>,
    opening: usize,
}

/// The HTTP/2 connection limit to a peer was reached (503, not retried).
pub const H2_CONNECTION_LIMIT: ErrorType = ErrorType::new_code("H2ConnectionLimit", 503);

impl Connector {
    /// A connector set up by `options` (or the defaults); see
    /// [`TransportConnector::new`](super::TransportConnector::new).
    pub fn new(options: Option<super::ConnectorOptions>) -> Self {
        Connector {
            transport: TransportConnector::new(options),
            h2: Mutex::default(),
        }
    }

    /// The connection layer underneath.
    pub fn transport(&self) -> &TransportConnector {
        &self.transport
    }

    /// HTTP/2 connections open to peers like this one.
    pub fn h2_connections(&self, peer: &HttpPeer) -> usize {
        let map = self.h2.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&peer.reuse_hash())
            .map_or(0, |p| p.conns.iter().filter(|c| !c.is_closed()).count())
    }

    /// A shared connection for `key` with room for a stream now. (The
    /// stream is claimed by `try_new_session`, which checks again.)
    fn shared_h2(&self, key: u64, skip: &[H2Connection]) -> Option<H2Connection> {
        let mut map = self.h2.lock().unwrap_or_else(|p| p.into_inner());
        let peer = map.get_mut(&key)?;
        peer.conns.retain(|c| !c.is_closed());
        peer.conns
            .iter()
            .find(|c| c.more_streams_allowed() && !skip.iter().any(|s| s.same(c)))
            .cloned()
    }

    /// A session to `peer`, and whether it rides on a connection that was
    /// already open.
    ///
    /// # Errors
    ///
    /// Those of [`TransportConnector::get_stream`] for a new connection;
    /// [`H2_CONNECTION_LIMIT`] (503, not retried) if the peer already has
    /// `max_h2_connections` open or opening; for a new HTTP/2 connection,
    /// `H2Error`, `ConnectionClosed` or `ConnectTimedout` (no SETTINGS in time).
    pub async fn get_http_session(&self, peer: &HttpPeer) -> Result<(ClientSession, bool)> {
        let key = peer.reuse_hash();
        let o = &peer.options;
        if matches!(o.alpn, ALPN::H2 | ALPN::H2H1) {
            // Connections that filled up (another request took the last
            // stream first) are skipped on the next look.
            let mut full: Vec<H2Connection> = Vec::new();
            while let Some(conn) = self.shared_h2(key, &full) {
                match conn.try_new_session().await {
                    Some(Ok(mut s)) => {
                        // A shared HTTP/2 connection is a reuse like a
                        // pooled one.
                        crate::metrics::core().pool_hits.inc();
                        s.set_timeouts(o.read_timeout, o.write_timeout);
                        return Ok((ClientSession::H2(s), true));
                    }
                    // A GOAWAY arrived between the check and the stream:
                    // the connection is marked closed; look again.
                    Some(Err(_)) => {}
                    None => full.push(conn),
                }
            }
        }
        // A new connection that may become an HTTP/2 one counts against the
        // peer's cap while it opens (a pooled HTTP/1 one does not).
        let _opening = if matches!(o.alpn, ALPN::H2 | ALPN::H2H1) {
            Some(self.reserve_h2(key, o.max_h2_connections)?)
        } else {
            None
        };
        let (stream, reused) = self.transport.get_stream_keyed(peer, key).await?;
        let h2 = match stream.tls_digest() {
            Some(d) => d.is_h2(),
            // Plain connections: HTTP/2 only by prior knowledge.
            None => o.alpn == ALPN::H2 && !reused,
        };
        if h2 {
            // The connect is not done until the peer allows a stream: its
            // SETTINGS wait under the peer's connect timeout.
            let settings_wait = [o.connection_timeout, o.total_connection_timeout]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(DEFAULT_SETTINGS_WAIT);
            let conn = H2Connection::handshake(
                stream,
                o.max_h2_streams,
                o.h2_ping_interval,
                peer.is_tls(),
                settings_wait,
            )
            .await?;
            if let Some(idle) = o.idle_timeout {
                conn.close_when_idle(idle);
            }
            let mut session = conn.new_session().await?;
            session.set_timeouts(o.read_timeout, o.write_timeout);
            let mut map = self.h2.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(key).or_default().conns.push(conn);
            return Ok((ClientSession::H2(session), false));
        }
        let mut session = self.h1_session(stream, peer);
        session.pool_key = Some(key);
        Ok((ClientSession::H1(session), reused))
    }

    /// Count one more HTTP/2 connection opening to `key`, unless the peer
    /// already has `max` open or opening; the count goes back when the
    /// guard drops (the connection, if made, is in the list by then).
    fn reserve_h2(&self, key: u64, max: usize) -> Result<Opening<'_>> {
        let mut map = self.h2.lock().unwrap_or_else(|p| p.into_inner());
        let peer = map.entry(key).or_default();
        peer.conns.retain(|c| !c.is_closed());
        if peer.conns.len() + peer.opening >= max {
            let mut e = Error::explain(
                H2_CONNECTION_LIMIT,
                format!("{max} HTTP/2 connections to this peer are open and full"),
            );
            e.set_retry(false);
            return Err(e.into_up());
        }
        peer.opening += 1;
        Ok(Opening {
            connector: self,
            key,
        })
    }

    fn h1_session(&self, stream: Stream, peer: &HttpPeer) -> v1::client::HttpSession {
        let o = &peer.options;
        let opts = H1Options {
            header_read_timeout: o.read_timeout,
            body_read_timeout: o.read_timeout,
            write_timeout: o.write_timeout,
            ..H1Options::default()
        };
        v1::client::HttpSession::new_with_options(stream, opts)
    }

    /// Done with a session: an HTTP/1 connection goes back to the pool if
    /// the exchange left it reusable (kept for the peer's idle timeout);
    /// an HTTP/2 stream just ends (its connection stays shared).
    pub fn release(&self, session: ClientSession, peer: &HttpPeer) {
        self.release_with(session, peer, peer.options.idle_timeout)
    }

    /// [`release`](Self::release) with Pingora's signature: `idle_timeout`
    /// (instead of the peer's) bounds how long the connection waits in the
    /// pool.
    pub async fn release_http_session(
        &self,
        session: ClientSession,
        peer: &HttpPeer,
        idle_timeout: Option<Duration>,
    ) {
        self.release_with(session, peer, idle_timeout)
    }

    fn release_with(&self, session: ClientSession, peer: &HttpPeer, idle: Option<Duration>) {
        if let ClientSession::H1(s) = session {
            // Back to the bucket it came from (no second hash).
            let key = s.pool_key.unwrap_or_else(|| peer.reuse_hash());
            if let Some(stream) = s.reuse() {
                self.transport.release_stream(stream, key, idle);
            }
        }
    }
}

/// An HTTP/2 connection being opened, counted against its peer's cap.
struct Opening<'a> {
    connector: &'a Connector,
    key: u64,
}

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        let mut map = self.connector.h2.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(peer) = map.get_mut(&self.key) {
            peer.opening = peer.opening.saturating_sub(1);
        }
    }
}
