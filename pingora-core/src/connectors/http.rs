//! HTTP sessions to upstreams, over pooled connections.

use pingora_error::Result;

use super::TransportConnector;
use crate::protocols::http::v1::client::HttpSession;
use crate::protocols::http::v1::H1Options;
use crate::server::ServerConf;
use crate::upstreams::peer::HttpPeer;

/// Gives out HTTP/1 client sessions to peers, reusing idle connections.
///
/// ```no_run
/// # async fn f() -> pingora_error::Result<()> {
/// use pingora_core::connectors::http::Connector;
/// use pingora_core::upstreams::peer::HttpPeer;
/// use pingora_http::RequestHeader;
///
/// let connector = Connector::new(None);
/// let peer = HttpPeer::new("127.0.0.1:8080", false, String::new())?;
/// let (mut session, _reused) = connector.get_http_session(&peer).await?;
/// let mut req = RequestHeader::build("GET", b"/", None)?;
/// req.insert_header("Host", "example.test")?;
/// session.write_request_header(Box::new(req)).await?;
/// session.read_response().await?;
/// while session.read_body_bytes().await?.is_some() {}
/// connector.release_http_session(session, &peer);
/// # Ok(()) }
/// ```
pub struct Connector {
    transport: TransportConnector,
}

impl Connector {
    /// A connector sized and configured by the server conf (or defaults).
    pub fn new(conf: Option<&ServerConf>) -> Self {
        Connector {
            transport: TransportConnector::new(conf),
        }
    }

    /// The connection layer underneath.
    pub fn transport(&self) -> &TransportConnector {
        &self.transport
    }

    /// A session to `peer`, on a pooled connection when one is idle
    /// (`true`), else on a new one.
    pub async fn get_http_session(&self, peer: &HttpPeer) -> Result<(HttpSession, bool)> {
        let (stream, reused) = self.transport.get_stream(peer).await?;
        let o = &peer.options;
        let opts = H1Options {
            header_read_timeout: o.read_timeout,
            body_read_timeout: o.read_timeout,
            write_timeout: o.write_timeout,
            ..H1Options::default()
        };
        Ok((HttpSession::new_with_options(stream, opts), reused))
    }

    /// Done with a session: its connection goes back to the pool if the
    /// exchange left it reusable, else it is closed.
    pub fn release_http_session(&self, session: HttpSession, peer: &HttpPeer) {
        if let Some(stream) = session.reuse() {
            self.transport
                .release_stream(stream, peer.reuse_hash(), peer.options.idle_timeout);
        }
    }
}
