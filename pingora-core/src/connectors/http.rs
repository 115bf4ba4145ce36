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

mod session;

pub use session::ClientSession;

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
