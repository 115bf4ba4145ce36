//! The response header.

use std::ops::Deref;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::response::Parts;
use http::{StatusCode, Version};
use pingora_error::{Error, ErrorType, OkOrErr, OrErr, Result};

use crate::case::IntoCaseHeaderName;
use crate::order::WireOrder;
use crate::raw::{HeaderValues, Lines, RawLines};
use crate::req::parsed_header;
use crate::version_str;

/// An HTTP response header: status, reason phrase, version and header
/// lines, each line kept in the case and order it was given.
///
/// Read it as an [`http::response::Parts`] through `Deref` (`resp.status`,
/// `resp.headers.get(..)`); change it through the methods here.
///
/// As with [`RequestHeader`](crate::RequestHeader), a header parsed from
/// HTTP/1 keeps its lines as parsed until `headers` is read through
/// `Deref` or a line is edited.
#[derive(Debug, Clone)]
pub struct ResponseHeader {
    /// Status, version, extensions; the map once the lines are built.
    base: Parts,
    lines: Lines<Parts>,
    /// A reason phrase other than the status code's canonical one.
    reason: Option<Box<str>>,
}

impl Deref for ResponseHeader {
    type Target = Parts;
    fn deref(&self) -> &Parts {
        self.lines.view(&self.base).0
    }
}

impl ResponseHeader {
    /// A new HTTP/1.1 response with this status. `size_hint` is the number
    /// of header lines to make room for.
    pub fn build<S>(status: S, size_hint: Option<usize>) -> Result<Self>
    where
        S: TryInto<StatusCode>,
        <S as TryInto<StatusCode>>::Error: Into<pingora_error::Cause>,
    {
        let status = status
            .try_into()
            .or_err(ErrorType::InvalidHTTPHeader, "invalid status code")?;
        let n = size_hint.unwrap_or(8);
        let (mut base, ()) = http::Response::new(()).into_parts();
        base.status = status;
        base.headers.reserve(n);
        Ok(ResponseHeader {
            base,
            lines: Lines::built(WireOrder::with_capacity(n)),
            reason: None,
        })
    }

    /// Build from a response parsed by `httparse`, sharing slices of `buf`.
    pub fn from_httparse(resp: &httparse::Response<'_, '_>, buf: &Bytes) -> Result<Self> {
        let code = resp
            .code
            .or_err(ErrorType::InvalidHTTPHeader, "response has no status")?;
        let raw = RawLines::parse(resp.headers, buf);
        let n = if raw.is_some() { 0 } else { resp.headers.len() };
        let mut h = Self::build(code, Some(n))?;
        h.base.version = match resp.version {
            Some(0) => Version::HTTP_10,
            _ => Version::HTTP_11,
        };
        if let Some(reason) = resp.reason {
            h.set_reason_phrase(Some(reason))?;
        }
        if let Some(raw) = raw {
            h.lines = Lines::parsed(raw);
            return Ok(h);
        }
        // A line outside `buf`, or one the map would refuse: build the map
        // now (it names the bad line).
        for hdr in resp.headers.iter() {
            let (name, value) = parsed_header(hdr, buf)?;
            h.lines.order.append(&mut h.base.headers, name, value);
        }
        Ok(h)
    }

    /// Add a header line at the end, keeping any others of the same name.
    pub fn append_header<N, V>(&mut self, name: N, value: V) -> Result<()>
    where
        N: IntoCaseHeaderName,
        V: TryInto<HeaderValue>,
        <V as TryInto<HeaderValue>>::Error: Into<pingora_error::Cause>,
    {
        let name = name.into_case_header_name()?;
        let value = value
            .try_into()
            .or_err(ErrorType::InvalidHTTPHeader, "invalid header value")?;
        self.lines.append(&mut self.base, name, value);
        Ok(())
    }

    /// Set a header: every line of that name is replaced by one line, at
    /// the end.
    pub fn insert_header<N, V>(&mut self, name: N, value: V) -> Result<()>
    where
        N: IntoCaseHeaderName,
        V: TryInto<HeaderValue>,
        <V as TryInto<HeaderValue>>::Error: Into<pingora_error::Cause>,
    {
        let name = name.into_case_header_name()?;
        let value = value
            .try_into()
            .or_err(ErrorType::InvalidHTTPHeader, "invalid header value")?;
        self.lines.insert(&mut self.base, name, value);
        Ok(())
    }

    /// Remove every line of this name; returns the first value, if any.
    /// Takes `&HeaderName` (no parsing) or `&str`, as Pingora's does.
    pub fn remove_header<'a, N: ?Sized>(&mut self, name: &'a N) -> Option<HeaderValue>
    where
        &'a N: http::header::AsHeaderName,
    {
        self.lines.remove(&mut self.base.headers, name)
    }

    /// Remove every hop-by-hop header (RFC 9110 §7.6.1), as a proxy must
    /// before forwarding: Connection, Keep-Alive, Proxy-Connection,
    /// Proxy-Authenticate, Proxy-Authorization, TE, Trailer,
    /// Transfer-Encoding, Upgrade, and every header that Connection names.
    /// Costs one bit test when there are none.
    pub fn remove_hop_by_hop(&mut self) {
        self.lines.remove_hop_by_hop(&mut self.base.headers);
    }

    /// Whether the response has any hop-by-hop header (RFC 9110 §7.6.1:
    /// Connection, Keep-Alive, Proxy-Connection, Proxy-Authenticate,
    /// Proxy-Authorization, TE, Trailer, Transfer-Encoding, Upgrade), which
    /// a proxy must not forward; answered without a lookup.
    pub fn has_hop_by_hop(&self) -> bool {
        self.lines.has_hop_by_hop()
    }

    /// Whether the response has a header of this name. The names HTTP
    /// framing and proxies ask about (Content-Length, Transfer-Encoding,
    /// Connection, Upgrade, Expect, TE, Trailer, Host, and the hop-by-hop
    /// Keep-Alive, Proxy-Connection, Proxy-Authenticate,
    /// Proxy-Authorization) are answered without a lookup.
    pub fn has_header(&self, name: &HeaderName) -> bool {
        self.lines.contains(&self.base.headers, name)
    }

    /// The values of the lines named `name`, in order, as bytes; unlike
    /// `headers.get_all(name)`, this does not build the map of a header
    /// still as parsed.
    pub fn header_values<'a>(&'a self, name: &'a HeaderName) -> HeaderValues<'a> {
        self.lines.values(&self.base.headers, name)
    }

    /// The header lines in wire order, each with its original spelling.
    pub fn headers_in_order(&self) -> impl Iterator<Item = (&[u8], &HeaderValue)> {
        let (base, order) = self.lines.view(&self.base);
        order.iter(&base.headers)
    }

    /// Whether this response's `HeaderMap` exists: `false` for a header parsed
    /// from HTTP/1 that nothing has read through `Deref` or edited yet.
    /// For tests and diagnostics (a proxy that forwards without reading
    /// `headers` should never build it).
    pub fn map_built(&self) -> bool {
        self.lines.map_built()
    }

    /// Build the map in place now (the tests compare both states).
    #[cfg(test)]
    pub(crate) fn build_map_now(&mut self) {
        self.lines.settle(&mut self.base);
    }

    /// The number of header lines.
    pub fn header_count(&self) -> usize {
        self.lines.len()
    }

    /// The status (as `resp.status`, without building a parsed header's
    /// map).
    pub fn status(&self) -> StatusCode {
        self.base.status
    }

    /// The version (as `resp.version`, without building a parsed header's
    /// map).
    pub fn version(&self) -> Version {
        self.base.version
    }

    /// Replace the status. A custom reason phrase is dropped.
    pub fn set_status<S>(&mut self, status: S) -> Result<()>
    where
        S: TryInto<StatusCode>,
        <S as TryInto<StatusCode>>::Error: Into<pingora_error::Cause>,
    {
        self.base.status = status
            .try_into()
            .or_err(ErrorType::InvalidHTTPHeader, "invalid status code")?;
        self.reason = None;
        self.lines.changed();
        Ok(())
    }

    /// Set the reason phrase; `None` means the status code's canonical one.
    /// Fails on control characters other than tab.
    pub fn set_reason_phrase(&mut self, reason: Option<&str>) -> Result<()> {
        let Some(reason) = reason else {
            self.reason = None;
            return Ok(());
        };
        if reason
            .bytes()
            .any(|b| (b < 0x20 && b != b'\t') || b == 0x7f)
        {
            return Error::e_explain(
                ErrorType::InvalidHTTPHeader,
                format!("invalid reason phrase {reason:?}"),
            );
        }
        self.reason = (Some(reason) != self.base.status.canonical_reason()).then(|| reason.into());
        Ok(())
    }

    /// The reason phrase that will be written.
    pub fn get_reason_phrase(&self) -> Option<&str> {
        self.reason
            .as_deref()
            .or_else(|| self.base.status.canonical_reason())
    }

    /// Replace the HTTP version.
    pub fn set_version(&mut self, version: Version) {
        if self.base.version == version {
            return;
        }
        self.base.version = version;
        self.lines.changed();
    }

    /// The status line and header lines as HTTP/1 wire bytes, ending with
    /// the blank line.
    pub fn write_h1<B: BufMut>(&self, buf: &mut B) {
        buf.put_slice(version_str(self.base.version));
        buf.put_u8(b' ');
        buf.put_slice(self.base.status.as_str().as_bytes());
        buf.put_u8(b' ');
        buf.put_slice(self.get_reason_phrase().unwrap_or("").as_bytes());
        buf.put_slice(b"\r\n");
        self.lines.write_h1(&self.base.headers, buf);
        buf.put_slice(b"\r\n");
    }

    /// How many bytes [`ResponseHeader::write_h1`] writes, to size a
    /// buffer once.
    pub fn h1_len(&self) -> usize {
        let reason = self.get_reason_phrase().map_or(0, str::len);
        let lines = self.lines.wire_len();
        17 + reason + lines
    }

    /// [`ResponseHeader::write_h1`] into a new buffer of the right size.
    pub fn to_wire(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(self.h1_len());
        self.write_h1(&mut buf);
        buf.freeze()
    }

    /// Turn into the `http` crate's parts (spelling and order are lost).
    pub fn into_parts(mut self) -> Parts {
        self.lines.settle(&mut self.base);
        self.base
    }

    /// From the `http` crate's parts (as HTTP/2 delivers them): names are
    /// lowercase, in the map's order.
    pub fn from_parts(base: Parts) -> Self {
        let order = WireOrder::from_map(&base.headers);
        ResponseHeader {
            base,
            lines: Lines::built(order),
            reason: None,
        }
    }
}
