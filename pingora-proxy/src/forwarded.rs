//! Helpers for `upstream_request_filter` that tell the upstream who the
//! client is: `X-Forwarded-For`, `Forwarded` (RFC 7239) and `Via`
//! (RFC 9110 §7.6.3). Each adds to what earlier proxies wrote.

use std::net::IpAddr;

use pingora_error::Result;
use pingora_http::RequestHeader;

use crate::Session;

fn client_ip(session: &Session) -> Option<IpAddr> {
    session.client_addr()?.as_inet().map(|a| a.ip())
}

fn append_list(req: &mut RequestHeader, name: &'static str, item: &str) -> Result<()> {
    let joined = match req.headers.get(name).and_then(|v| v.to_str().ok()) {
        Some(old) if !old.trim().is_empty() => format!("{old}, {item}"),
        _ => item.to_string(),
    };
    req.insert_header(name, joined)
}

/// Add the client's IP to `X-Forwarded-For` (after the addresses earlier
/// proxies put there). Nothing is added for a Unix-socket client.
///
/// # Errors
///
/// None in practice: an IP address always makes a valid header value.
pub fn append_x_forwarded_for(session: &Session, req: &mut RequestHeader) -> Result<()> {
    match client_ip(session) {
        Some(ip) => append_list(req, "X-Forwarded-For", &ip.to_string()),
        None => Ok(()),
    }
}

/// The `Forwarded` element for one hop: `for=`, `proto=` and `host=`.
pub fn forwarded_element(client: Option<IpAddr>, tls: bool, host: Option<&str>) -> String {
    let mut out = match client {
        Some(IpAddr::V4(ip)) => format!("for={ip}"),
        // IPv6 needs brackets, and so quotes (RFC 7239 §6).
        Some(IpAddr::V6(ip)) => format!("for=\"[{ip}]\""),
        None => "for=unknown".to_string(),
    };
    out.push_str(if tls { ";proto=https" } else { ";proto=http" });
    if let Some(h) = host.filter(|h| !h.is_empty()) {
        if h.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-.:".contains(&c))
        {
            out.push_str(";host=");
            out.push_str(h);
        } else {
            out.push_str(&format!(";host=\"{}\"", h.replace(['"', '\\'], "")));
        }
    }
    out
}

/// Add this hop to the `Forwarded` header (RFC 7239): the client's
/// address, whether it came over TLS, and the host it asked for.
///
/// # Errors
///
/// None in practice: the element is built from an address and from a host
/// that is already a valid header value.
pub fn append_forwarded(session: &Session, req: &mut RequestHeader) -> Result<()> {
    let down = session.req_header();
    let host = down
        .header_values(&http::header::HOST)
        .first_str()
        .map(str::to_string)
        .or_else(|| down.uri().authority().map(|a| a.to_string()));
    let element = forwarded_element(
        client_ip(session),
        session.tls_digest().is_some(),
        host.as_deref(),
    );
    append_list(req, "Forwarded", &element)
}

/// Add this hop to `Via`: the client's protocol version and `pseudonym`
/// (e.g. the proxy's host name).
///
/// # Errors
///
/// `InvalidHTTPHeader` if `pseudonym` holds a control character other than
/// tab; `Via` is left as it was.
pub fn append_via(session: &Session, req: &mut RequestHeader, pseudonym: &str) -> Result<()> {
    let version = match session.req_header().version() {
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        _ => "1.1",
    };
    append_list(req, "Via", &format!("{version} {pseudonym}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_elements() {
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(
            forwarded_element(Some(v4), false, Some("example.com")),
            "for=192.0.2.7;proto=http;host=example.com"
        );
        assert_eq!(
            forwarded_element(Some(v6), true, None),
            "for=\"[2001:db8::1]\";proto=https"
        );
        assert_eq!(
            forwarded_element(None, false, Some("a b")),
            "for=unknown;proto=http;host=\"a b\""
        );
    }

    #[test]
    fn lists_are_appended() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        append_list(&mut req, "X-Forwarded-For", "10.0.0.1").unwrap();
        append_list(&mut req, "X-Forwarded-For", "10.0.0.2").unwrap();
        assert_eq!(req.headers["x-forwarded-for"], "10.0.0.1, 10.0.0.2");
    }
}
