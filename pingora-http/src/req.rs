//! The request header.

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Uri, Version};
use pingora_error::{Error, ErrorType, OkOrErr, OrErr, Result};

use crate::case::CaseHeaderName;
use crate::lines::Lines;
use crate::order::WireOrder;
use crate::{share, version_str};

thread_local! {
    /// This thread's spare request boxes (see [`RequestHeader::recycle`]).
    static SPARE: crate::spare::Spares<RequestHeader> = const { std::cell::RefCell::new(Vec::new()) };
}

/// An HTTP request header: method, URI, version and header lines, each
/// line kept in the case and order it was given.
///
/// Read it as an [`http::request::Parts`] (through `Deref`: `req.method`,
/// `req.uri`, `req.headers.get(..)`); change it through the methods here,
/// which keep the wire order and spelling in step with the lookup map.
///
/// A header parsed from HTTP/1 keeps its lines as parsed until something
/// reads `headers` through `Deref` or edits a line: what a proxy asks on
/// every request ([`method`](Self::method), [`uri`](Self::uri),
/// [`has_header`](Self::has_header), [`header_values`](Self::header_values),
/// [`remove_hop_by_hop`](Self::remove_hop_by_hop), writing it out) does not
/// build the `HeaderMap`.
#[derive(Debug, Clone)]
pub struct RequestHeader {
    /// Method, URI, version, extensions; the map once the lines are built.
    base: Parts,
    lines: Lines<Parts>,
}

crate::lines::header_deref!(RequestHeader);

impl RequestHeader {
    /// A new HTTP/1.1 request for `path` (an origin-form path such as
    /// `/a?b`, or an absolute URI). `size_hint` is the number of header
    /// lines to make room for.
    ///
    /// # Errors
    ///
    /// `InvalidHTTPHeader` if `method` is not a valid method or `path` not a
    /// valid request target.
    pub fn build<M>(method: M, path: &[u8], size_hint: Option<usize>) -> Result<Self>
    where
        M: TryInto<Method>,
        <M as TryInto<Method>>::Error: Into<pingora_error::Cause>,
    {
        let method = method
            .try_into()
            .or_err(ErrorType::InvalidHTTPHeader, "invalid method")?;
        let uri = parse_uri(Bytes::copy_from_slice(path))?;
        let n = size_hint.unwrap_or(8);
        let (mut base, ()) = http::Request::new(()).into_parts();
        base.method = method;
        base.uri = uri;
        base.headers.reserve(n);
        Ok(RequestHeader {
            base,
            lines: Lines::built(WireOrder::with_capacity(n)),
        })
    }

    /// Build from a request parsed by `httparse`. Slices of `buf` (the bytes
    /// that were parsed) are shared, not copied; anything outside `buf` is
    /// copied.
    ///
    /// # Errors
    ///
    /// `InvalidHTTPHeader` if `req` has no method or path (a partial parse),
    /// or its method, target, or a header name or value is not valid.
    pub fn from_httparse(req: &httparse::Request<'_, '_>, buf: &Bytes) -> Result<Self> {
        let mut slot = None;
        Self::from_httparse_inner(req, buf, &mut slot)?;
        slot.or_err(ErrorType::InternalError, "request not built")
    }

    /// Parse the HTTP/1 request head at the start of `buf[..limit]`, with
    /// at most `max_headers` field lines and a target of at most
    /// `max_target` bytes, into `slot` (built in place, not moved again).
    /// The head's bytes are split off `buf` and shared by the header, not
    /// copied. Returns the head's length, or `None` (and `buf` untouched)
    /// if the bytes end inside the head. For pingora-core's HTTP/1 server;
    /// `slot` is `None` after an error.
    ///
    /// # Errors
    ///
    /// `HeaderTooLarge` for too many lines, `UriTooLong` for a long
    /// target, `InvalidHTTPHeader` for anything malformed (the rules are
    /// in `h1.rs`).
    #[doc(hidden)]
    pub fn parse_h1_into(
        buf: &mut BytesMut,
        limit: usize,
        max_headers: usize,
        max_target: usize,
        slot: &mut Option<Self>,
    ) -> Result<Option<usize>> {
        *slot = None;
        let raw = &buf[..limit.min(buf.len())];
        if u32::try_from(raw.len()).is_err() {
            return Error::e_explain(ErrorType::HeaderTooLarge, "header block too large");
        }
        let h = slot.insert(RequestHeader {
            base: http::Request::new(()).into_parts().0,
            lines: Lines::built(WireOrder::default()),
        });
        // The lines go straight into the header's table.
        let head = match crate::h1::request(raw, max_headers, h.lines.parse_in_place()) {
            Ok(Some(head)) => head,
            Ok(None) => {
                *slot = None;
                return Ok(None);
            }
            Err(e) => {
                *slot = None;
                return Err(crate::h1::error(e));
            }
        };
        let built = h.finish_h1(buf, &head, max_target);
        if built.is_err() {
            *slot = None;
        }
        built.map(|()| Some(head.len))
    }

    /// Method, target and version of a head just parsed from `buf`, whose
    /// bytes are then split off and shared.
    fn finish_h1(
        &mut self,
        buf: &mut BytesMut,
        head: &crate::h1::Head<crate::h1::RequestLine>,
        max_target: usize,
    ) -> Result<()> {
        let (t0, t1) = head.start.target;
        if t1 - t0 > max_target {
            return Error::e_explain(ErrorType::UriTooLong, "request target too long");
        }
        let (m0, m1) = head.start.method;
        self.base.method = Method::from_bytes(&buf[m0..m1])
            .or_err(ErrorType::InvalidHTTPHeader, "invalid method")?;
        let block = buf.split_to(head.len).freeze();
        self.base.uri = parse_uri(block.slice(t0..t1))?;
        self.base.version = if head.start.minor == 0 {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        if let Some(raw) = self.lines.raw.as_mut() {
            raw.set_block(block);
        }
        Ok(())
    }

    fn from_httparse_inner<'s>(
        req: &httparse::Request<'_, '_>,
        buf: &Bytes,
        slot: &'s mut Option<Self>,
    ) -> Result<&'s mut Self> {
        *slot = None;
        let method = req
            .method
            .or_err(ErrorType::InvalidHTTPHeader, "request has no method")?;
        let path = req
            .path
            .or_err(ErrorType::InvalidHTTPHeader, "request has no path")?;
        let method = Method::from_bytes(method.as_bytes())
            .or_err(ErrorType::InvalidHTTPHeader, "invalid method")?;
        let uri = parse_uri(share(buf, path.as_bytes()))?;
        let h = slot.insert(RequestHeader {
            base: http::Request::new(()).into_parts().0,
            lines: Lines::built(WireOrder::default()),
        });
        h.base.method = method;
        h.base.uri = uri;
        h.base.version = match req.version {
            Some(0) => Version::HTTP_10,
            _ => Version::HTTP_11,
        };
        if h.lines.parse_into(req.headers, buf) {
            return slot
                .as_mut()
                .or_err(ErrorType::InternalError, "request not built");
        }
        // A line outside `buf`, or one the map would refuse: build the map
        // now (it names the bad line).
        h.base.headers.reserve(req.headers.len());
        for line in req.headers.iter() {
            match parsed_header(line, buf) {
                Ok((name, value)) => h.lines.order.append(&mut h.base.headers, name, value),
                Err(e) => {
                    *slot = None;
                    return Err(e);
                }
            }
        }
        slot.as_mut()
            .or_err(ErrorType::InternalError, "request not built")
    }

    crate::lines::line_methods!("request");

    /// The method (as `req.method`, without building a parsed header's
    /// map).
    pub fn method(&self) -> &Method {
        &self.base.method
    }

    /// The URI (as `req.uri`, without building a parsed header's map).
    pub fn uri(&self) -> &Uri {
        &self.base.uri
    }

    /// The version (as `req.version`, without building a parsed header's
    /// map).
    pub fn version(&self) -> Version {
        self.base.version
    }

    /// Replace the URI.
    pub fn set_uri(&mut self, uri: Uri) {
        self.base.uri = uri;
        self.lines.changed();
    }

    /// As [`build`](Self::build): Pingora's form for a header whose names
    /// need not keep their case (ours always keep it).
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build): `InvalidHTTPHeader` for an invalid method
    /// or request target.
    pub fn build_no_case<M>(method: M, path: &[u8], size_hint: Option<usize>) -> Result<Self>
    where
        M: TryInto<Method>,
        <M as TryInto<Method>>::Error: Into<pingora_error::Cause>,
    {
        Self::build(method, path, size_hint)
    }

    /// The request target as it is on the wire (path and query, or the
    /// whole target in absolute or authority form).
    pub fn raw_path(&self) -> &[u8] {
        let uri = &self.base.uri;
        match (uri.path_and_query(), uri.authority()) {
            (Some(pq), _) => pq.as_str().as_bytes(),
            // Authority form (CONNECT host:port).
            (None, Some(a)) => a.as_str().as_bytes(),
            (None, None) => b"/",
        }
    }

    /// Replace the URI from raw bytes (a path or an absolute URI).
    ///
    /// # Errors
    ///
    /// `InvalidHTTPHeader` if `path` is not a valid URI; the old one stays.
    pub fn set_raw_path(&mut self, path: &[u8]) -> Result<()> {
        self.base.uri = parse_uri(Bytes::copy_from_slice(path))?;
        self.lines.changed();
        Ok(())
    }

    /// Replace the method.
    pub fn set_method(&mut self, method: Method) {
        if self.base.method == method {
            return;
        }
        self.base.method = method;
        self.lines.changed();
    }

    /// The request line and header lines as HTTP/1 wire bytes, ending with
    /// the blank line.
    pub fn write_h1<B: BufMut>(&self, buf: &mut B) {
        buf.put_slice(self.base.method.as_str().as_bytes());
        buf.put_u8(b' ');
        write_target(&self.base.method, &self.base.uri, buf);
        buf.put_u8(b' ');
        buf.put_slice(version_str(self.base.version));
        buf.put_slice(b"\r\n");
        self.lines.write_h1(&self.base.headers, buf);
        buf.put_slice(b"\r\n");
    }

    /// How many bytes [`RequestHeader::write_h1`] writes (at most), to size
    /// a buffer once.
    pub fn h1_len(&self) -> usize {
        let uri = &self.base.uri;
        let uri_len = uri.scheme_str().map_or(0, |s| s.len() + 3)
            + uri.authority().map_or(0, |a| a.as_str().len())
            + uri.path_and_query().map_or(1, |p| p.as_str().len());
        let lines = self.lines.wire_len(&self.base.headers);
        self.base.method.as_str().len() + uri_len + 14 + lines
    }

    /// From the `http` crate's parts (as HTTP/2 delivers them): names are
    /// lowercase, in the map's order.
    pub fn from_parts(base: Parts) -> Self {
        let order = WireOrder::from_map(&base.headers);
        RequestHeader {
            base,
            lines: Lines::built(order),
        }
    }
}

/// Write the request-target in the form the URI calls for (RFC 9112 §3.2).
fn write_target<B: BufMut>(method: &Method, uri: &Uri, buf: &mut B) {
    let pq = uri.path_and_query().map(|p| p.as_str());
    if let (Some(scheme), Some(auth)) = (uri.scheme_str(), uri.authority()) {
        // absolute-form
        buf.put_slice(scheme.as_bytes());
        buf.put_slice(b"://");
        buf.put_slice(auth.as_str().as_bytes());
        buf.put_slice(pq.unwrap_or("").as_bytes());
    } else if let (true, Some(auth)) = (method == Method::CONNECT, uri.authority()) {
        // authority-form
        buf.put_slice(auth.as_str().as_bytes());
    } else {
        // origin-form or asterisk-form
        buf.put_slice(pq.unwrap_or("/").as_bytes());
    }
}

fn parse_uri(raw: Bytes) -> Result<Uri> {
    Uri::from_maybe_shared(raw.clone()).or_err_with(ErrorType::InvalidHTTPHeader, || {
        format!("invalid request target {:?}", String::from_utf8_lossy(&raw))
    })
}

/// Name (with spelling) and value of one parsed header line.
pub(crate) fn parsed_header(
    h: &httparse::Header<'_>,
    buf: &Bytes,
) -> Result<(CaseHeaderName, HeaderValue)> {
    let raw = h.name.as_bytes();
    let name = HeaderName::from_bytes(raw).or_err_with(ErrorType::InvalidHTTPHeader, || {
        format!("invalid header name {:?}", h.name)
    })?;
    let value = HeaderValue::from_maybe_shared(share(buf, h.value)).map_err(|e| {
        Error::because(
            ErrorType::InvalidHTTPHeader,
            format!("invalid value of header {:?}", h.name),
            e,
        )
    })?;
    Ok((CaseHeaderName::from_parsed(raw, name, buf), value))
}
