//! How long is a message body? The header rules of RFC 9112 §6, applied so
//! that no request can be read two ways.

use http::{Method, StatusCode, Version};
use pingora_error::{Error, ErrorType::*, Result};
use pingora_http::tracked::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use pingora_http::{HeaderValues, RequestHeader, ResponseHeader, TrackedName};

/// A header block as the framing rules read it: the values of a name, and
/// whether a name is present (which request and response headers answer
/// without a lookup for the names asked about here, usually to find them
/// absent, and without building the map of a header still as parsed).
pub(crate) trait Fields {
    /// The values of the lines named `name`, in order.
    fn values(&self, name: TrackedName) -> HeaderValues<'_>;
    /// Whether a line named `name` is present.
    fn has(&self, name: TrackedName) -> bool;
}

impl Fields for RequestHeader {
    fn values(&self, name: TrackedName) -> HeaderValues<'_> {
        self.tracked_values(name)
    }
    fn has(&self, name: TrackedName) -> bool {
        self.has_tracked(name)
    }
}

impl Fields for ResponseHeader {
    fn values(&self, name: TrackedName) -> HeaderValues<'_> {
        self.tracked_values(name)
    }
    fn has(&self, name: TrackedName) -> bool {
        self.has_tracked(name)
    }
}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// The chunked transfer coding.
    Chunked,
    /// Everything until the connection closes.
    UntilClose,
}

fn bad(msg: &'static str) -> Box<Error> {
    Error::explain(InvalidHTTPHeader, msg)
}

/// The single value of the Content-Length lines, if any. Repeated lines or
/// list members must all be the same decimal number (RFC 9110 §8.6).
pub(crate) fn content_length(headers: &impl Fields) -> Result<Option<u64>> {
    if !headers.has(CONTENT_LENGTH) {
        return Ok(None);
    }
    let mut found: Option<u64> = None;
    for value in headers.values(CONTENT_LENGTH) {
        // The usual value, one number alone, without splitting (the same
        // answer as the general path below gives it).
        if !value.is_empty() && value.len() <= 19 && value.iter().all(u8::is_ascii_digit) {
            let n = value.iter().fold(0u64, |n, &d| n * 10 + (d - b'0') as u64);
            match found {
                Some(m) if m != n => return Err(bad("differing Content-Length values")),
                _ => found = Some(n),
            }
            continue;
        }
        for part in value.split(|&b| b == b',') {
            let part = trim_ows(part);
            if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
                return Err(bad("invalid Content-Length"));
            }
            let n = part.iter().fold(0u64, |n, &d| n * 10 + (d - b'0') as u64);
            match found {
                Some(m) if m != n => return Err(bad("differing Content-Length values")),
                _ => found = Some(n),
            }
        }
    }
    Ok(found)
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// The comma-separated tokens of every line of a list header, trimmed.
pub(crate) fn list_tokens<'a>(values: HeaderValues<'a>) -> impl Iterator<Item = &'a [u8]> + 'a {
    values
        .flat_map(|v| v.split(|&b| b == b','))
        .map(trim_ows)
        .filter(|t| !t.is_empty())
}

/// Whether a list header carries `token` (case-insensitive).
pub(crate) fn has_token(headers: &impl Fields, name: TrackedName, token: &str) -> bool {
    let token = token.as_bytes();
    headers.has(name)
        && headers.values(name).any(|v| {
            // Most lines hold one token: compared whole, without splitting.
            if v.contains(&b',') {
                v.split(|&b| b == b',')
                    .any(|t| trim_ows(t).eq_ignore_ascii_case(token))
            } else {
                trim_ows(v).eq_ignore_ascii_case(token)
            }
        })
}

/// What Transfer-Encoding says: `None` if absent, `Some(true)` if its last
/// coding is chunked (and chunked appears nowhere else), `Some(false)` if
/// the last coding is something else. Unknown codings before chunked are
/// a 501, chunked twice or not last in a request a 400.
fn transfer_encoding(headers: &impl Fields, request: bool) -> Result<Option<bool>> {
    if !headers.has(TRANSFER_ENCODING) {
        return Ok(None);
    }
    let codings: Vec<&[u8]> = list_tokens(headers.values(TRANSFER_ENCODING)).collect();
    let Some((last, before)) = codings.split_last() else {
        return Err(bad("empty Transfer-Encoding"));
    };
    let chunked = |c: &[u8]| c.eq_ignore_ascii_case(b"chunked");
    if before.iter().any(|c| chunked(c)) {
        return Err(bad("chunked applied more than once"));
    }
    if request {
        for c in before {
            let known = [
                &b"gzip"[..],
                b"x-gzip",
                b"deflate",
                b"compress",
                b"x-compress",
            ]
            .iter()
            .any(|k| c.eq_ignore_ascii_case(k));
            if !known {
                return Err(Error::explain(
                    HTTPStatus(501),
                    "unknown transfer coding in request",
                ));
            }
        }
    }
    Ok(Some(chunked(last)))
}

/// The framing of a request body (RFC 9112 §6.3).
pub(crate) fn request_framing(version: Version, headers: &impl Fields) -> Result<Framing> {
    match transfer_encoding(headers, true)? {
        Some(_) if version == Version::HTTP_10 => {
            Err(bad("Transfer-Encoding in an HTTP/1.0 request"))
        }
        Some(_) if headers.has(CONTENT_LENGTH) => {
            Err(bad("both Content-Length and Transfer-Encoding"))
        }
        Some(true) => Ok(Framing::Chunked),
        Some(false) => Err(bad("Transfer-Encoding does not end in chunked")),
        None => Ok(match content_length(headers)? {
            Some(0) | None => Framing::None,
            Some(n) => Framing::Length(n),
        }),
    }
}

/// The framing of a response body, and whether the connection may be
/// reused afterwards as far as framing goes (RFC 9112 §6.3).
pub(crate) fn response_framing(
    req_method: &Method,
    status: StatusCode,
    version: Version,
    headers: &impl Fields,
) -> Result<(Framing, bool)> {
    if req_method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((Framing::None, true));
    }
    if req_method == Method::CONNECT && status.is_success() {
        return Ok((Framing::UntilClose, false));
    }
    match transfer_encoding(headers, false)? {
        // Both present, or TE in HTTP/1.0: read by TE, then close.
        Some(true) => {
            let clean = version != Version::HTTP_10 && !headers.has(CONTENT_LENGTH);
            Ok((Framing::Chunked, clean))
        }
        Some(false) => Ok((Framing::UntilClose, false)),
        None => Ok(match content_length(headers)? {
            Some(0) => (Framing::None, true),
            Some(n) => (Framing::Length(n), true),
            None => (Framing::UntilClose, false),
        }),
    }
}

/// Whether the peer allows the connection to stay open after this message.
pub(crate) fn wants_keepalive(version: Version, headers: &impl Fields) -> bool {
    if has_token(headers, CONNECTION, "close") {
        return false;
    }
    version != Version::HTTP_10 || has_token(headers, CONNECTION, "keep-alive")
}

#[cfg(test)]
mod tests {
    use super::*;

    use http::HeaderMap;

    /// The rules on a bare map (every lookup a real one).
    impl Fields for HeaderMap {
        fn values(&self, name: TrackedName) -> HeaderValues<'_> {
            HeaderValues::from_map(self, name.name())
        }
        fn has(&self, name: TrackedName) -> bool {
            self.contains_key(name.name())
        }
    }

    fn h(lines: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in lines {
            m.append(*k, v.parse().unwrap());
        }
        m
    }

    #[test]
    fn request_rules() {
        let v11 = Version::HTTP_11;
        assert_eq!(request_framing(v11, &h(&[])).unwrap(), Framing::None);
        assert_eq!(
            request_framing(v11, &h(&[("content-length", "5")])).unwrap(),
            Framing::Length(5)
        );
        assert_eq!(
            request_framing(
                v11,
                &h(&[("content-length", "5"), ("content-length", "5, 5")])
            )
            .unwrap(),
            Framing::Length(5)
        );
        assert_eq!(
            request_framing(v11, &h(&[("transfer-encoding", "gzip, Chunked")])).unwrap(),
            Framing::Chunked
        );
        for bad in [
            h(&[("content-length", "5"), ("content-length", "6")]),
            h(&[("content-length", "+5")]),
            h(&[("content-length", "5 5")]),
            h(&[("content-length", "")]),
            h(&[("content-length", "99999999999999999999")]),
            h(&[("content-length", "5"), ("transfer-encoding", "chunked")]),
            h(&[("transfer-encoding", "chunked, gzip")]),
            h(&[
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "chunked"),
            ]),
            h(&[("transfer-encoding", "")]),
        ] {
            assert_eq!(
                request_framing(v11, &bad).unwrap_err().etype(),
                &InvalidHTTPHeader,
                "{bad:?}"
            );
        }
        let e = request_framing(v11, &h(&[("transfer-encoding", "foo, chunked")])).unwrap_err();
        assert_eq!(e.etype(), &HTTPStatus(501));
        assert!(
            request_framing(Version::HTTP_10, &h(&[("transfer-encoding", "chunked")])).is_err()
        );
    }

    #[test]
    fn response_rules() {
        let get = Method::GET;
        let v11 = Version::HTTP_11;
        let ok = StatusCode::OK;
        let f = |m: &Method, s: u16, hs: &HeaderMap| {
            response_framing(m, StatusCode::from_u16(s).unwrap(), v11, hs).unwrap()
        };
        let cl = h(&[("content-length", "3")]);
        assert_eq!(f(&Method::HEAD, 200, &cl), (Framing::None, true));
        assert_eq!(f(&get, 204, &h(&[])), (Framing::None, true));
        assert_eq!(f(&get, 304, &cl), (Framing::None, true));
        assert_eq!(f(&get, 200, &cl), (Framing::Length(3), true));
        assert_eq!(f(&get, 200, &h(&[])), (Framing::UntilClose, false));
        assert_eq!(
            f(&Method::CONNECT, 200, &h(&[])),
            (Framing::UntilClose, false)
        );
        let both = h(&[("content-length", "3"), ("transfer-encoding", "chunked")]);
        assert_eq!(f(&get, 200, &both), (Framing::Chunked, false));
        assert_eq!(
            f(&get, 200, &h(&[("transfer-encoding", "gzip")])),
            (Framing::UntilClose, false)
        );
        assert!(response_framing(&get, ok, v11, &h(&[("content-length", "1, 2")])).is_err());
    }

    /// The one-number fast path answers as the general path: the longest
    /// number taken, one digit more refused, leading zeros read, and a
    /// fast-path value compared with a listed one.
    #[test]
    fn content_length_values() {
        let cl = |vs: &[&'static str]| {
            let lines: Vec<_> = vs.iter().map(|v| ("content-length", *v)).collect();
            content_length(&h(&lines))
        };
        assert_eq!(
            cl(&["9999999999999999999"]).unwrap(),
            Some(9_999_999_999_999_999_999)
        );
        assert!(cl(&["99999999999999999999"]).is_err());
        assert_eq!(cl(&["007"]).unwrap(), Some(7));
        assert_eq!(cl(&["0"]).unwrap(), Some(0));
        assert_eq!(cl(&["7", "7, 07"]).unwrap(), Some(7));
        assert!(cl(&["7", "8"]).is_err());
        assert!(cl(&["7", "7, 8"]).is_err());
        assert!(cl(&["-7"]).is_err());
    }

    #[test]
    fn keepalive() {
        assert!(wants_keepalive(Version::HTTP_11, &h(&[])));
        assert!(!wants_keepalive(
            Version::HTTP_11,
            &h(&[("connection", "foo, Close")])
        ));
        assert!(!wants_keepalive(Version::HTTP_10, &h(&[])));
        assert!(wants_keepalive(
            Version::HTTP_10,
            &h(&[("connection", "keep-alive")])
        ));
    }
}
