//! gRPC-web to gRPC over HTTP/2, as the gRPC-web protocol describes it
//! (`doc/PROTOCOL-WEB.md` in the gRPC repository).
//!
//! A gRPC-web request is a gRPC request a browser can send: any HTTP
//! version, `Content-Type: application/grpc-web[+format]` (the body framed
//! as gRPC frames it: a flag byte, a 4-byte length, the message) or
//! `application/grpc-web-text[+format]` (the same bytes in base64). The
//! answer carries gRPC's trailers (`grpc-status`, `grpc-message`, …) in the
//! body, as one last frame whose flag byte has its top bit set, because
//! browsers cannot read HTTP trailers.
//!
//! [`GrpcWebCtx`] is Pingora's state machine for the binary form: it turns
//! the request header into gRPC's, the response header back, and the
//! trailers into that frame. [`TextDecoder`] and [`TextEncoder`] carry the
//! `-text` form's base64 across body pieces of any size. The
//! [`GrpcWebBridge`](crate::modules::http::grpc_web::GrpcWebBridge) module
//! puts them together.
//!
//! ```
//! use pingora_core::protocols::http::bridge::grpc_web::{trailer_frame, GrpcWebCtx};
//! use pingora_http::{RequestHeader, ResponseHeader};
//!
//! let mut ctx = GrpcWebCtx::default();
//! ctx.init(); // bridge this request if it is gRPC-web
//! let mut req = RequestHeader::build("POST", b"/echo.Echo/Say", None).unwrap();
//! req.insert_header("Content-Type", "application/grpc-web+proto").unwrap();
//! ctx.request_header_filter(&mut req);
//! assert_eq!(req.headers["content-type"], "application/grpc+proto");
//! assert_eq!(req.headers["te"], "trailers"); // gRPC servers insist on it
//!
//! let mut resp = ResponseHeader::build(200, None).unwrap();
//! resp.insert_header("Content-Type", "application/grpc").unwrap();
//! ctx.response_header_filter(&mut resp);
//! assert_eq!(resp.headers["content-type"], "application/grpc-web");
//!
//! let mut trailers = http::HeaderMap::new();
//! trailers.insert("grpc-status", "0".parse().unwrap());
//! let frame = ctx.response_trailer_filter(&mut trailers).unwrap().unwrap();
//! assert_eq!(&frame[..], b"\x80\x00\x00\x00\x0fgrpc-status:0\r\n");
//! assert_eq!(frame, trailer_frame(&trailers));
//! ```

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};
use http::{header, HeaderMap};
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};

/// How a gRPC-web body is carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/grpc-web[+format]`: gRPC's framing, as bytes.
    Binary,
    /// `application/grpc-web-text[+format]`: the same bytes in base64.
    Text,
}

/// Where one request is in the bridge, as Pingora's: `Disabled` until
/// [`init`](Self::init), then `Init` → `Upgrade` (the request became gRPC)
/// → `Trailers` (the response became gRPC-web) → `Done` (its trailers went
/// out as a frame, or the response was not gRPC).
#[derive(Default, PartialEq, Eq, Debug, Clone, Copy)]
pub enum GrpcWebCtx {
    /// Not bridging (the default).
    #[default]
    Disabled,
    /// Bridging, if the request is gRPC-web.
    Init,
    /// The request went on as gRPC; the response header is awaited.
    Upgrade,
    /// The response goes out as gRPC-web; its trailers will become a frame.
    Trailers,
    /// Nothing more to do.
    Done,
}

/// The flag byte of the frame that carries the trailers.
const TRAILER_FLAG: u8 = 0x80;

/// The media type without parameters, trimmed.
fn media_type(ct: &[u8]) -> &[u8] {
    let end = ct.iter().position(|&b| b == b';').unwrap_or(ct.len());
    ct[..end].trim_ascii()
}

/// `rest` after `prefix`, the prefix matched without regard to case.
fn strip_prefix_ignore_case<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &s[prefix.len()..])
}

/// The encoding a gRPC-web `Content-Type` names and its format suffix
/// (`+proto`, `+json`, or empty); `None` if it is not gRPC-web.
pub fn grpc_web_content_type(ct: &[u8]) -> Option<(Encoding, &[u8])> {
    let rest = strip_prefix_ignore_case(media_type(ct), b"application/grpc-web")?;
    let (encoding, format) = match strip_prefix_ignore_case(rest, b"-text") {
        Some(format) => (Encoding::Text, format),
        None => (Encoding::Binary, rest),
    };
    (format.is_empty() || format.starts_with(b"+")).then_some((encoding, format))
}

/// The format suffix of a gRPC `Content-Type` (`application/grpc[+format]`),
/// `None` if it is not gRPC.
pub fn grpc_content_type(ct: &[u8]) -> Option<&[u8]> {
    let format = strip_prefix_ignore_case(media_type(ct), b"application/grpc")?;
    (format.is_empty() || format.starts_with(b"+")).then_some(format)
}

impl GrpcWebCtx {
    /// Bridge this request if it is gRPC-web (the state is `Disabled` until
    /// this is called, as with Pingora's).
    pub fn init(&mut self) {
        *self = Self::Init;
    }

    /// A binary gRPC-web request header becomes gRPC's: `Content-Type:
    /// application/grpc[+format]` and `TE: trailers`. Anything else (and the
    /// `-text` form, whose body needs the module's decoding) goes on as it
    /// is.
    pub fn request_header_filter(&mut self, req: &mut RequestHeader) {
        // Only fails on a header it could not add, which these are not.
        let _ = self.upgrade_request(req, false);
    }

    /// [`request_header_filter`](Self::request_header_filter), the `-text`
    /// form too when `text` is set (its Content-Length then goes, the body
    /// shrinking as it is decoded). Returns the request's encoding when it
    /// was bridged.
    ///
    /// # Errors
    ///
    /// `InvalidHTTPHeader` if a header could not be set; the values written
    /// here are always valid, so in practice never.
    pub fn upgrade_request(
        &mut self,
        req: &mut RequestHeader,
        text: bool,
    ) -> Result<Option<Encoding>> {
        if *self != Self::Init {
            return Ok(None);
        }
        let ct = req.header_values(&header::CONTENT_TYPE).next();
        let Some((encoding, format)) = ct.and_then(grpc_web_content_type) else {
            return Ok(None);
        };
        if encoding == Encoding::Text && !text {
            return Ok(None);
        }
        let mut grpc = b"application/grpc".to_vec();
        grpc.extend_from_slice(format);
        req.insert_header(header::CONTENT_TYPE, grpc)?;
        if encoding == Encoding::Text {
            req.remove_header(&header::CONTENT_LENGTH);
        }
        req.insert_header(header::TE, "trailers")?;
        *self = Self::Upgrade;
        Ok(Some(encoding))
    }

    /// A gRPC response header to a bridged request becomes gRPC-web's:
    /// `Content-Type: application/grpc-web[+format]`, no Content-Length (the
    /// trailers' frame will follow the body). 1xx pass; any other response
    /// goes on as it is, and the bridge is done.
    pub fn response_header_filter(&mut self, resp: &mut ResponseHeader) {
        let _ = self.upgrade_response(resp, Encoding::Binary);
    }

    /// [`response_header_filter`](Self::response_header_filter), naming
    /// the given encoding (`application/grpc-web-text` for [`Encoding::Text`]).
    /// Returns whether the response was bridged.
    ///
    /// # Errors
    ///
    /// `InvalidHTTPHeader` if a header could not be set; the values written
    /// here are always valid, so in practice never.
    pub fn upgrade_response(
        &mut self,
        resp: &mut ResponseHeader,
        encoding: Encoding,
    ) -> Result<bool> {
        if *self != Self::Upgrade || resp.status.is_informational() {
            return Ok(false);
        }
        let ct = resp.header_values(&header::CONTENT_TYPE).next();
        let Some(format) = ct.and_then(grpc_content_type) else {
            *self = Self::Done;
            return Ok(false);
        };
        let mut web = match encoding {
            Encoding::Binary => b"application/grpc-web".to_vec(),
            Encoding::Text => b"application/grpc-web-text".to_vec(),
        };
        web.extend_from_slice(format);
        resp.insert_header(header::CONTENT_TYPE, web)?;
        resp.remove_header(&header::CONTENT_LENGTH);
        *self = Self::Trailers;
        Ok(true)
    }

    /// The response's trailers as gRPC-web's trailer frame, to go out as
    /// the last piece of body in their place; `None` when this response
    /// is not being bridged.
    ///
    /// # Errors
    ///
    /// Never; the `Result` keeps Pingora's signature.
    pub fn response_trailer_filter(&mut self, trailers: &mut HeaderMap) -> Result<Option<Bytes>> {
        if *self != Self::Trailers {
            return Ok(None);
        }
        *self = Self::Done;
        Ok(Some(trailer_frame(trailers)))
    }
}

/// Trailers as gRPC-web's trailer frame: flag `0x80`, the block's length
/// (4 bytes, big-endian), then `name:value\r\n` for each field (names are
/// lower case in a `HeaderMap`).
pub fn trailer_frame(trailers: &HeaderMap) -> Bytes {
    let len: usize = trailers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 3)
        .sum();
    let mut frame = BytesMut::with_capacity(5 + len);
    frame.put_u8(TRAILER_FLAG);
    // Trailers are bounded by the HTTP/2 header list limit, far below 4 GiB.
    frame.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    for (name, value) in trailers {
        frame.put_slice(name.as_str().as_bytes());
        frame.put_u8(b':');
        frame.put_slice(value.as_bytes());
        frame.put_slice(b"\r\n");
    }
    frame.freeze()
}

/// The error for a `-text` body that is not base64.
fn bad_text(why: &'static str) -> Box<Error> {
    Error::explain(ErrorType::HTTPStatus(400), why)
}

/// Decodes whole 4-character groups; a group ending in `=` closes a run,
/// so that separately padded pieces joined together decode too.
fn decode_groups(input: &[u8], out: &mut Vec<u8>) -> Result<()> {
    debug_assert_eq!(input.len() % 4, 0);
    let mut start = 0;
    for end in (4..=input.len()).step_by(4) {
        if input[end - 1] == b'=' || end == input.len() {
            STANDARD
                .decode_vec(&input[start..end], out)
                .map_err(|_| bad_text("grpc-web-text: the body is not base64"))?;
            start = end;
        }
    }
    Ok(())
}

/// A stream of pieces regrouped into whole groups of `N` bytes (base64's
/// 4 characters, or the 3 bytes they stand for): a group split between
/// pieces waits here for the rest.
#[derive(Debug)]
struct Groups<const N: usize> {
    held: [u8; N],
    len: usize,
}

impl<const N: usize> Default for Groups<N> {
    fn default() -> Self {
        Groups {
            held: [0; N],
            len: 0,
        }
    }
}

impl<const N: usize> Groups<N> {
    /// Whole groups of `piece` (a waiting group first, once this piece
    /// completes it) to `emit`; a partial group at the end waits.
    fn feed<E>(
        &mut self,
        mut piece: &[u8],
        mut emit: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        if self.len > 0 {
            let take = (N - self.len).min(piece.len());
            self.held[self.len..self.len + take].copy_from_slice(&piece[..take]);
            self.len += take;
            piece = &piece[take..];
            if self.len < N {
                return Ok(());
            }
            self.len = 0;
            emit(&self.held)?;
        }
        let whole = piece.len() / N * N;
        emit(&piece[..whole])?;
        let rest = &piece[whole..];
        self.held[..rest.len()].copy_from_slice(rest);
        self.len = rest.len();
        Ok(())
    }

    /// The bytes of a partial group, taken.
    fn take_rest(&mut self) -> &[u8] {
        let len = std::mem::take(&mut self.len);
        &self.held[..len]
    }
}

/// A `-text` request body, decoded piece by piece: the pieces may split
/// base64's 4-character groups anywhere, and the stream may be several
/// padded runs joined (as clients that encode each message send it).
#[derive(Debug, Default)]
pub struct TextDecoder {
    groups: Groups<4>,
}

impl TextDecoder {
    /// The bytes this piece completes (a partial group waits for the next).
    ///
    /// # Errors
    ///
    /// `HTTPStatus(400)` if the body is not base64 (a character outside its
    /// alphabet, or bad padding).
    pub fn decode(&mut self, piece: &[u8]) -> Result<Bytes> {
        let mut out = Vec::with_capacity((self.groups.len + piece.len()) / 4 * 3);
        self.groups.feed(piece, |g| decode_groups(g, &mut out))?;
        Ok(out.into())
    }

    /// The body ended: an error if it stopped inside a group.
    ///
    /// # Errors
    ///
    /// `HTTPStatus(400)` if the body ended inside a 4-character group.
    pub fn finish(&self) -> Result<()> {
        if self.groups.len == 0 {
            Ok(())
        } else {
            Err(bad_text(
                "grpc-web-text: the body ends inside a base64 group",
            ))
        }
    }
}

/// A `-text` response body, encoded piece by piece as one base64 stream:
/// up to two bytes wait for the next piece, and the end is padded.
#[derive(Debug, Default)]
pub struct TextEncoder {
    groups: Groups<3>,
}

impl TextEncoder {
    /// The base64 of this piece's whole 3-byte groups (with what waited).
    pub fn encode(&mut self, piece: &[u8]) -> Bytes {
        let mut out = String::with_capacity((self.groups.len + piece.len()) / 3 * 4);
        self.encode_into(piece, &mut out);
        out.into()
    }

    fn encode_into(&mut self, piece: &[u8], out: &mut String) {
        let _ = self.groups.feed(piece, |g| {
            STANDARD.encode_string(g, out);
            Ok::<(), std::convert::Infallible>(())
        });
    }

    /// Whether bytes wait for [`finish`](Self::finish).
    pub fn is_holding(&self) -> bool {
        self.groups.len > 0
    }

    /// The base64 of what waited and this last piece, padded.
    pub fn finish(&mut self, last: &[u8]) -> Bytes {
        let mut out = String::with_capacity((self.groups.len + last.len()).div_ceil(3) * 4);
        self.encode_into(last, &mut out);
        STANDARD.encode_string(self.groups.take_rest(), &mut out);
        out.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        use Encoding::*;
        let web = grpc_web_content_type;
        assert_eq!(web(b"application/grpc-web"), Some((Binary, &b""[..])));
        assert_eq!(
            web(b"Application/GRPC-Web+proto"),
            Some((Binary, &b"+proto"[..]))
        );
        assert_eq!(web(b"application/grpc-web-text"), Some((Text, &b""[..])));
        assert_eq!(
            web(b"application/grpc-web-text+proto; charset=x"),
            Some((Text, &b"+proto"[..]))
        );
        assert_eq!(web(b"application/grpc"), None);
        assert_eq!(web(b"application/grpc-webx"), None);
        assert_eq!(web(b"text/plain"), None);
        assert_eq!(grpc_content_type(b"application/grpc"), Some(&b""[..]));
        assert_eq!(
            grpc_content_type(b"application/grpc+json"),
            Some(&b"+json"[..])
        );
        assert_eq!(grpc_content_type(b"application/grpc-web"), None);
        assert_eq!(grpc_content_type(b"application/json"), None);
    }

    #[test]
    fn only_initialised_requests_are_bridged() {
        let mut req = RequestHeader::build("POST", b"/s/m", None).unwrap();
        req.insert_header("Content-Type", "application/grpc-web")
            .unwrap();
        let mut ctx = GrpcWebCtx::default();
        ctx.request_header_filter(&mut req);
        assert_eq!(ctx, GrpcWebCtx::Disabled);
        assert_eq!(req.headers["content-type"], "application/grpc-web");
        // The text form needs the module's body decoding.
        let mut text = RequestHeader::build("POST", b"/s/m", None).unwrap();
        text.insert_header("Content-Type", "application/grpc-web-text")
            .unwrap();
        text.insert_header("Content-Length", "8").unwrap();
        ctx.init();
        ctx.request_header_filter(&mut text);
        assert_eq!(ctx, GrpcWebCtx::Init);
        assert_eq!(
            ctx.upgrade_request(&mut text, true).unwrap(),
            Some(Encoding::Text)
        );
        assert_eq!(text.headers["content-type"], "application/grpc");
        assert!(text.headers.get("content-length").is_none());
    }

    #[test]
    fn a_response_that_is_not_grpc_passes() {
        let mut ctx = GrpcWebCtx::Upgrade;
        let mut info = ResponseHeader::build(100, None).unwrap();
        ctx.response_header_filter(&mut info);
        assert_eq!(ctx, GrpcWebCtx::Upgrade);
        let mut resp = ResponseHeader::build(502, None).unwrap();
        resp.insert_header("Content-Type", "text/html").unwrap();
        resp.insert_header("Content-Length", "10").unwrap();
        ctx.response_header_filter(&mut resp);
        assert_eq!(ctx, GrpcWebCtx::Done);
        assert_eq!(resp.headers["content-length"], "10");
        let mut t = HeaderMap::new();
        assert_eq!(ctx.response_trailer_filter(&mut t).unwrap(), None);
    }

    #[test]
    fn text_survives_any_split() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        // Two separately padded runs joined, as per-message encoders send.
        let mut text = STANDARD.encode(&data[..7]);
        text.push_str(&STANDARD.encode(&data[7..]));
        for step in 1..=9 {
            let mut dec = TextDecoder::default();
            let mut got = Vec::new();
            for piece in text.as_bytes().chunks(step) {
                got.extend_from_slice(&dec.decode(piece).unwrap());
            }
            dec.finish().unwrap();
            assert_eq!(got, data, "pieces of {step}");

            let mut enc = TextEncoder::default();
            let mut out = Vec::new();
            for piece in data.chunks(step) {
                out.extend_from_slice(&enc.encode(piece));
            }
            out.extend_from_slice(&enc.finish(b"\x80"));
            let mut whole = data.clone();
            whole.push(0x80);
            assert_eq!(out, STANDARD.encode(&whole).as_bytes(), "pieces of {step}");
        }
    }

    #[test]
    fn bad_text_is_a_400() {
        let mut dec = TextDecoder::default();
        let e = dec.decode(b"ab!d").unwrap_err();
        assert_eq!(e.etype(), &ErrorType::HTTPStatus(400));
        let mut dec = TextDecoder::default();
        dec.decode(b"QUJDRA=").unwrap();
        assert!(dec.finish().is_err());
        // Padding inside a group that is not the last of its run.
        assert!(TextDecoder::default().decode(b"QQ==QUJD").is_ok());
        assert!(TextDecoder::default().decode(b"Q=Q=").is_err());
    }
}
