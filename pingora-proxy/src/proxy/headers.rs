//! The request and response headers made fit for the other side:
//! hop-by-hop fields dropped, Host and origin-form for HTTP/1 upstreams,
//! body framing, and upgrades carried through.

use http::Method;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};

use crate::Session;

/// The name of `peer` for a Host header: its SNI when set, else its
/// address (`localhost` for a Unix socket).
fn peer_host(peer: &HttpPeer) -> String {
    if !peer.sni.is_empty() {
        return peer.sni.clone();
    }
    match peer.address() {
        pingora_core::protocols::l4::SocketAddr::Inet(a) => a.to_string(),
        pingora_core::protocols::l4::SocketAddr::Unix(_) => "localhost".to_string(),
    }
}

/// The downstream request made fit for the upstream `peer`.
pub(super) fn upstream_request(
    session: &Session,
    peer: &HttpPeer,
    to_h2: bool,
) -> Result<Box<RequestHeader>> {
    // Everything here reads the request without building the map of a
    // header still as parsed (`method()`, `header_values`, `has_header`).
    // Boxed at once (in this thread's spare box, given back when the
    // upstream session is done with it): the header (over 400 bytes) is
    // not moved again.
    let mut req = session.req_header().clone().boxed();
    let connect = req.method() == Method::CONNECT;
    let wants_upgrade = session.is_upgrade_req() && !to_h2;
    let upgrade = if wants_upgrade {
        req.tracked_values(pingora_http::tracked::UPGRADE)
            .next()
            .and_then(|v| http::HeaderValue::from_bytes(v).ok())
    } else {
        None
    };
    let te_trailers = req.has_tracked(pingora_http::tracked::TE)
        && req.tracked_values(pingora_http::tracked::TE).any(|v| {
            v.split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"))
        });
    req.remove_hop_by_hop();
    if te_trailers {
        req.insert_header("TE", "trailers")?;
    }
    if to_h2 {
        return Ok(req);
    }
    // HTTP/1 upstream: Host from :authority, origin-form target, framing.
    if !req.has_tracked(pingora_http::tracked::HOST) {
        // HTTP/1.1 requires Host (RFC 9112 §3.2): from the target's
        // authority, else (an HTTP/1.0 client that sent none, an HTTP/2
        // request without :authority) the upstream's name, as nginx's
        // default `$proxy_host`. `upstream_request_filter` may change it.
        let host = match req.uri().authority() {
            Some(a) => a.to_string(),
            None => peer_host(peer),
        };
        req.insert_header("Host", host)?;
    }
    if req.uri().scheme().is_some() && !connect {
        let pq = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        req.set_raw_path(pq.as_bytes())?;
    }
    req.set_version(http::Version::HTTP_11);
    if wants_upgrade {
        if let Some(u) = upgrade {
            req.insert_header("Connection", "Upgrade")?;
            req.insert_header("Upgrade", u)?;
        }
    }
    Ok(req)
}

/// HTTP/1 framing for a request body of unknown length: chunked, unless
/// the request has no body or a Content-Length (which the user's
/// `upstream_request_filter` may have removed after changing the body).
pub(super) fn frame_h1_request(session: &Session, req: &mut RequestHeader) -> Result<()> {
    let body_follows = !session.is_body_done() || session.has_held_body();
    if body_follows
        && req.method() != Method::CONNECT
        && !req.has_tracked(pingora_http::tracked::CONTENT_LENGTH)
        && !req.has_tracked(pingora_http::tracked::TRANSFER_ENCODING)
    {
        req.insert_header("Transfer-Encoding", "chunked")?;
    }
    Ok(())
}

/// The upstream's response made fit for the client.
pub(super) fn downstream_response(mut out: Box<ResponseHeader>) -> Box<ResponseHeader> {
    let switching = out.status() == http::StatusCode::SWITCHING_PROTOCOLS;
    let upgrade = if switching {
        out.tracked_values(pingora_http::tracked::UPGRADE)
            .next()
            .and_then(|v| http::HeaderValue::from_bytes(v).ok())
    } else {
        None
    };
    out.remove_hop_by_hop();
    if switching {
        let _ = out.insert_header("Connection", "Upgrade");
        if let Some(u) = upgrade {
            let _ = out.insert_header("Upgrade", u);
        }
    }
    out
}
