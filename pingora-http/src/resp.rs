//! The response header.

use bytes::{BufMut, Bytes, BytesMut};
use http::response::Parts;
use http::{StatusCode, Version};
use pingora_error::{Error, ErrorType, OkOrErr, OrErr, Result};

use crate::lines::Lines;
use crate::order::WireOrder;
use crate::req::parsed_header;
use crate::version_str;

thread_local! {
    /// This thread's spare response boxes (see [`ResponseHeader::recycle`]).
    static SPARE: crate::spare::Spares<ResponseHeader> = const { std::cell::RefCell::new(Vec::new()) };
}

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

crate::lines::header_deref!(ResponseHeader);

impl ResponseHeader {
    /// A new HTTP/1.1 response with this status. `size_hint` is the number
    /// of header lines to make room for.
    ///
    /// # Errors
    ///
    /// `InvalidHTTPHeader` if `status` is not a valid status code (100 to 999).
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
    ///
    /// # Errors
    ///
    /// `InvalidHTTPHeader` if `resp` has no status (a partial parse), or its
    /// status, reason phrase, or a header name or value is not valid.
    pub fn from_httparse(resp: &httparse::Response<'_, '_>, buf: &Bytes) -> Result<Self> {
        Self::from_httparse_inner(resp, buf).map(|h| *h)
    }

    /// Parse the HTTP/1 response head at the start of `buf[..limit]`,
    /// with at most `max_headers` field lines, into a box (see
    /// [`boxed`](Self::boxed)). The head's bytes are split off `buf` and
    /// shared by the header, not copied. Returns the header and the
    /// head's length, or `None` (and `buf` untouched) if the bytes end
    /// inside the head. For pingora-core's HTTP/1 client.
    ///
    /// # Errors
    ///
    /// `HeaderTooLarge` for too many lines, `InvalidHTTPHeader` for
    /// anything malformed (the rules are in `h1.rs`).
    #[doc(hidden)]
    pub fn parse_h1(
        buf: &mut BytesMut,
        limit: usize,
        max_headers: usize,
    ) -> Result<Option<(Box<Self>, usize)>> {
        let raw = &buf[..limit.min(buf.len())];
        if u32::try_from(raw.len()).is_err() {
            return Error::e_explain(ErrorType::HeaderTooLarge, "header block too large");
        }
        // The box first, so that the lines go straight into its table.
        let mut h = Self::build(StatusCode::OK, Some(0))?.boxed();
        let head = match crate::h1::response(raw, max_headers, h.lines.parse_in_place()) {
            Ok(Some(head)) => head,
            Ok(None) => return Ok(None),
            Err(e) => return Err(crate::h1::error(e)),
        };
        h.base.status = StatusCode::from_u16(head.start.code)
            .or_err(ErrorType::InvalidHTTPHeader, "invalid status code")?;
        h.base.version = if head.start.minor == 0 {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        let block = buf.split_to(head.len).freeze();
        let (r0, r1) = head.start.reason;
        // Checked by the parse: HTAB, SP and VCHAR only.
        let reason = std::str::from_utf8(&block[r0..r1]).unwrap_or_default();
        h.set_reason_phrase(Some(reason))?;
        if let Some(raw) = h.lines.raw.as_mut() {
            raw.set_block(block);
        }
        Ok(Some((h, head.len)))
    }

    fn from_httparse_inner(resp: &httparse::Response<'_, '_>, buf: &Bytes) -> Result<Box<Self>> {
        let code = resp
            .code
            .or_err(ErrorType::InvalidHTTPHeader, "response has no status")?;
        let mut h = Self::build(code, Some(0))?.boxed();
        h.base.version = match resp.version {
            Some(0) => Version::HTTP_10,
            _ => Version::HTTP_11,
        };
        if let Some(reason) = resp.reason {
            h.set_reason_phrase(Some(reason))?;
        }
        if h.lines.parse_into(resp.headers, buf) {
            return Ok(h);
        }
        // A line outside `buf`, or one the map would refuse: build the map
        // now (it names the bad line).
        h.base.headers.reserve(resp.headers.len());
        for hdr in resp.headers.iter() {
            let (name, value) = parsed_header(hdr, buf)?;
            h.lines.order.append(&mut h.base.headers, name, value);
        }
        Ok(h)
    }

    crate::lines::line_methods!("response");

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

    /// As [`build`](Self::build): Pingora's form for a header whose names
    /// need not keep their case (ours always keep it).
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build): `InvalidHTTPHeader` for an invalid status.
    pub fn build_no_case<S>(status: S, size_hint: Option<usize>) -> Result<Self>
    where
        S: TryInto<StatusCode>,
        <S as TryInto<StatusCode>>::Error: Into<pingora_error::Cause>,
    {
        Self::build(status, size_hint)
    }

    /// Set `Content-Length` to `len` (replacing any).
    ///
    /// # Errors
    ///
    /// None in practice: a number is always a valid header value.
    pub fn set_content_length(&mut self, len: usize) -> Result<()> {
        self.insert_header(http::header::CONTENT_LENGTH, len)
    }

    /// Replace the status. A custom reason phrase is dropped.
    ///
    /// # Errors
    ///
    /// `InvalidHTTPHeader` if `status` is not a valid status code; nothing
    /// changes then.
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
    ///
    /// # Errors
    ///
    /// `InvalidHTTPHeader` if `reason` holds a control character other than
    /// tab (DEL included); the old phrase stays.
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
        let lines = self.lines.wire_len(&self.base.headers);
        17 + reason + lines
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
