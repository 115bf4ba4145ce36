//! Response compression and decompression for HTTP (gzip, brotli, zstd),
//! streaming: each piece of body goes through the coder as it passes, so
//! memory stays bounded by the codec's window whatever the body's size.
//!
//! [`ResponseCompressionCtx`] is one response's decision and coder: it
//! reads the request's `Accept-Encoding` (with q-values), decides on the
//! response header (skipping bodies already encoded, small ones, HEAD,
//! 204/304, partial content, `Cache-Control: no-transform` and types not
//! worth compressing), fixes the header (`Content-Encoding`, no
//! `Content-Length`, `Vary: Accept-Encoding`, a weak `ETag`) and codes the
//! body. The HTTP module in `modules::http::compression` wraps it.
//!
//! Codecs: `flate2` on `zlib-rs` (gzip), `brotli` and `zstd`, chosen in
//! `docs/BENCHMARKS.md` ("compression").
//!
//! ```
//! use bytes::Bytes;
//! use pingora_core::protocols::http::compression::ResponseCompressionCtx;
//! use pingora_http::{RequestHeader, ResponseHeader};
//!
//! let mut ctx = ResponseCompressionCtx::new(6, false, false);
//! let mut req = RequestHeader::build("GET", b"/", None).unwrap();
//! req.insert_header("Accept-Encoding", "gzip;q=0.5, br").unwrap();
//! ctx.request_filter(&req);
//! let mut resp = ResponseHeader::build(200, None).unwrap();
//! resp.insert_header("Content-Type", "text/html").unwrap();
//! ctx.response_header_filter(&mut resp, false);
//! assert_eq!(resp.headers.get("content-encoding").unwrap(), "br");
//! let body = Bytes::from(vec![b'a'; 10_000]);
//! let out = ctx.response_body_filter(Some(&body), true).unwrap();
//! assert!(out.len() < 100);
//! ```

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{
    ACCEPT_ENCODING, ACCEPT_RANGES, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE,
    CONTENT_TYPE, ETAG, VARY,
};
use http::{HeaderValue, Method};
use pingora_error::{ErrorType, OrErr, Result};
use pingora_http::{RequestHeader, ResponseHeader};

/// A content coding this module speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// Anything else (`deflate`, `compress`, unknown ones).
    Any,
    /// `gzip`.
    Gzip,
    /// `br` (brotli).
    Brotli,
    /// `zstd`.
    Zstd,
}

/// The algorithms in order of preference when a client accepts several
/// equally: zstd (the cheapest per byte saved), brotli, gzip.
const PREFERENCE: [Algorithm; 3] = [Algorithm::Zstd, Algorithm::Brotli, Algorithm::Gzip];

impl Algorithm {
    /// The coding's name in `Content-Encoding`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Algorithm::Gzip => "gzip",
            Algorithm::Brotli => "br",
            Algorithm::Zstd => "zstd",
            Algorithm::Any => "*",
        }
    }

    /// The algorithm's place in per-algorithm settings.
    pub fn index(&self) -> usize {
        match self {
            Algorithm::Any => 0,
            Algorithm::Gzip => 1,
            Algorithm::Brotli => 2,
            Algorithm::Zstd => 3,
        }
    }

    /// A compressor at `level` (clamped to the codec's range; 0: none).
    pub fn compressor(&self, level: u32) -> Option<Box<dyn Encode + Send + Sync>> {
        if level == 0 {
            return None;
        }
        let coder = match self {
            Algorithm::Gzip => Coder::GzipEnc(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(level.min(9)),
            )),
            // A 4 MiB window at most (lgwin 22): the memory bound per
            // response.
            Algorithm::Brotli => Coder::BrEnc(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                16 * 1024,
                level.min(11),
                22,
            ))),
            Algorithm::Zstd => Coder::ZstdEnc(
                zstd::stream::write::Encoder::new(Vec::new(), level.min(19) as i32).ok()?,
            ),
            Algorithm::Any => return None,
        };
        Some(Box::new(Stream::new(*self, true, coder)))
    }

    /// A decompressor, if `enabled`.
    pub fn decompressor(&self, enabled: bool) -> Option<Box<dyn Encode + Send + Sync>> {
        if !enabled {
            return None;
        }
        let coder = match self {
            Algorithm::Gzip => Coder::GzipDec(flate2::write::GzDecoder::new(Vec::new())),
            Algorithm::Brotli => Coder::BrDec(Box::new(brotli::DecompressorWriter::new(
                Vec::new(),
                16 * 1024,
            ))),
            Algorithm::Zstd => Coder::ZstdDec(zstd::stream::write::Decoder::new(Vec::new()).ok()?),
            Algorithm::Any => return None,
        };
        Some(Box::new(Stream::new(*self, false, coder)))
    }
}

impl From<&str> for Algorithm {
    fn from(s: &str) -> Self {
        if s.eq_ignore_ascii_case("gzip") || s.eq_ignore_ascii_case("x-gzip") {
            Algorithm::Gzip
        } else if s.eq_ignore_ascii_case("br") {
            Algorithm::Brotli
        } else if s.eq_ignore_ascii_case("zstd") {
            Algorithm::Zstd
        } else {
            Algorithm::Any
        }
    }
}

/// A streaming coder: each call takes the next input and returns the
/// output it made so far (the rest at `end`).
pub trait Encode {
    /// Code `input`; with `end`, finish the stream.
    fn encode(&mut self, input: &[u8], end: bool) -> Result<Bytes>;

    /// The coding's name, bytes in, bytes out and time spent.
    fn stat(&self) -> (&'static str, usize, usize, Duration);
}

/// The codecs, each writing into a `Vec` the output is taken from.
enum Coder {
    GzipEnc(flate2::write::GzEncoder<Vec<u8>>),
    GzipDec(flate2::write::GzDecoder<Vec<u8>>),
    BrEnc(Box<brotli::CompressorWriter<Vec<u8>>>),
    BrDec(Box<brotli::DecompressorWriter<Vec<u8>>>),
    ZstdEnc(zstd::stream::write::Encoder<'static, Vec<u8>>),
    ZstdDec(zstd::stream::write::Decoder<'static, Vec<u8>>),
    /// Finished.
    Done,
}

impl Coder {
    fn write_all(&mut self, input: &[u8]) -> std::io::Result<()> {
        match self {
            Coder::GzipEnc(c) => c.write_all(input),
            Coder::GzipDec(c) => c.write_all(input),
            Coder::BrEnc(c) => c.write_all(input),
            Coder::BrDec(c) => c.write_all(input),
            Coder::ZstdEnc(c) => c.write_all(input),
            Coder::ZstdDec(c) => c.write_all(input),
            Coder::Done => Err(std::io::ErrorKind::BrokenPipe.into()),
        }
    }

    /// The output made so far.
    fn output(&mut self) -> Vec<u8> {
        let out = match self {
            Coder::GzipEnc(c) => c.get_mut(),
            Coder::GzipDec(c) => c.get_mut(),
            Coder::BrEnc(c) => c.get_mut(),
            Coder::BrDec(c) => c.get_mut(),
            Coder::ZstdEnc(c) => c.get_mut(),
            Coder::ZstdDec(c) => c.get_mut(),
            Coder::Done => return Vec::new(),
        };
        std::mem::take(out)
    }

    /// End the stream; the last of the output.
    fn finish(&mut self) -> std::io::Result<Vec<u8>> {
        match std::mem::replace(self, Coder::Done) {
            Coder::GzipEnc(c) => c.finish(),
            Coder::GzipDec(c) => c.finish(),
            Coder::BrEnc(c) => Ok(c.into_inner()),
            Coder::BrDec(c) => c
                .into_inner()
                .map_err(|_| std::io::Error::other("brotli stream cut short")),
            Coder::ZstdEnc(c) => c.finish(),
            Coder::ZstdDec(c) => c.finish(),
            Coder::Done => Ok(Vec::new()),
        }
    }
}

/// A coder with its counts.
struct Stream {
    algorithm: Algorithm,
    compress: bool,
    coder: Coder,
    bytes_in: usize,
    bytes_out: usize,
    spent: Duration,
}

impl Stream {
    fn new(algorithm: Algorithm, compress: bool, coder: Coder) -> Self {
        Stream {
            algorithm,
            compress,
            coder,
            bytes_in: 0,
            bytes_out: 0,
            spent: Duration::ZERO,
        }
    }
}

/// Input is fed to a decompressor in pieces this big, so that one piece
/// of a hostile stream (deflate expands up to ~1000×) makes at most a few
/// MiB of output at a time.
const DECODE_STEP: usize = 4096;

impl Encode for Stream {
    fn encode(&mut self, input: &[u8], end: bool) -> Result<Bytes> {
        let start = Instant::now();
        let what = if self.compress {
            "compressing the response"
        } else {
            "decompressing the response"
        };
        let step = if self.compress {
            input.len().max(1)
        } else {
            DECODE_STEP
        };
        let mut out = Vec::new();
        for piece in input.chunks(step) {
            self.coder
                .write_all(piece)
                .or_err(ErrorType::InternalError, what)?;
            let made = self.coder.output();
            if out.is_empty() {
                out = made;
            } else {
                out.extend_from_slice(&made);
            }
        }
        if end {
            let last = self.coder.finish().or_err(ErrorType::InternalError, what)?;
            out.extend_from_slice(&last);
        }
        self.bytes_in += input.len();
        self.bytes_out += out.len();
        self.spent += start.elapsed();
        Ok(Bytes::from(out))
    }

    fn stat(&self) -> (&'static str, usize, usize, Duration) {
        (
            self.algorithm.as_str(),
            self.bytes_in,
            self.bytes_out,
            self.spent,
        )
    }
}

/// What a client accepts: the q-value of each coding (in thousandths).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Accepted {
    /// Indexed by `Algorithm::index`; `None`: not named.
    q: [Option<u16>; 4],
    /// `*`'s q-value, for codings not named.
    star: Option<u16>,
}

impl Accepted {
    fn parse<'a>(values: impl Iterator<Item = &'a [u8]>) -> Self {
        let mut a = Accepted::default();
        for v in values {
            let Ok(v) = std::str::from_utf8(v) else {
                continue;
            };
            for item in v.split(',') {
                let mut parts = item.split(';');
                let name = parts.next().unwrap_or("").trim();
                if name.is_empty() {
                    continue;
                }
                let mut q = 1000;
                for p in parts {
                    let p = p.trim();
                    if let Some(v) = p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")) {
                        q = parse_q(v.trim()).unwrap_or(0);
                    }
                }
                if name == "*" {
                    a.star = Some(q);
                } else {
                    let alg = Algorithm::from(name);
                    if alg != Algorithm::Any {
                        a.q[alg.index()] = Some(q);
                    }
                }
            }
        }
        a
    }

    /// The q-value for `alg` (0: not acceptable).
    fn q(&self, alg: Algorithm) -> u16 {
        self.q[alg.index()].or(self.star).unwrap_or(0)
    }
}

/// A q-value (`0`, `0.5`, `1.000`) in thousandths; `None` if malformed.
fn parse_q(v: &str) -> Option<u16> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: u16 = match int {
        "0" => 0,
        "1" => 1,
        _ => return None,
    };
    let mut thousandths = 0;
    for (i, d) in frac.bytes().enumerate() {
        thousandths += u16::from(d - b'0') * [100, 10, 1][i];
    }
    let q = whole * 1000 + thousandths;
    (q <= 1000).then_some(q)
}

/// The media types compressed by default: text (but not event streams,
/// which must flow as they come), and the structured and font types that
/// are text underneath.
const DEFAULT_TYPES: &[&str] = &[
    "text/*",
    "application/json",
    "application/javascript",
    "application/x-javascript",
    "application/ecmascript",
    "application/xml",
    "application/wasm",
    "application/x-font-ttf",
    "application/vnd.ms-fontobject",
    "image/svg+xml",
    "image/x-icon",
    "image/vnd.microsoft.icon",
    "font/ttf",
    "font/otf",
    "font/collection",
];

/// Whether responses of `content_type` are worth compressing: a type in
/// `types` (`type/*` matches the whole type), or any `+json`/`+xml`
/// structured type when the defaults are in use.
fn compressible(content_type: &[u8], types: Option<&[String]>) -> bool {
    let t = content_type
        .split(|b| *b == b';')
        .next()
        .unwrap_or(b"")
        .trim_ascii();
    let major = t.split(|b| *b == b'/').next().unwrap_or(b"");
    let matches = |pattern: &str| match pattern.strip_suffix("/*") {
        Some(p) => major.eq_ignore_ascii_case(p.as_bytes()),
        None => t.eq_ignore_ascii_case(pattern.as_bytes()),
    };
    let ends_with = |suffix: &[u8]| {
        t.len() >= suffix.len() && t[t.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
    };
    match types {
        Some(list) => list.iter().any(|p| matches(p)),
        None => {
            !t.eq_ignore_ascii_case(b"text/event-stream")
                && (DEFAULT_TYPES.iter().any(|p| matches(p))
                    || ends_with(b"+json")
                    || ends_with(b"+xml"))
        }
    }
}

/// Settings per algorithm, indexed by `Algorithm::index`.
#[derive(Debug, Clone, Copy, Default)]
struct PerAlgorithm<T>([T; 4]);

/// One response's compression: settings, the client's `Accept-Encoding`,
/// and the coder once the response header decided on one.
pub struct ResponseCompressionCtx {
    level: PerAlgorithm<u32>,
    decompress: PerAlgorithm<bool>,
    preserve_etag: PerAlgorithm<bool>,
    /// Responses with a smaller `Content-Length` are left alone.
    min_length: usize,
    /// Media types to compress; `None`: the defaults.
    types: Option<Arc<Vec<String>>>,
    /// From the request.
    accepted: Option<Accepted>,
    head: bool,
    coder: Option<Box<dyn Encode + Send + Sync>>,
    /// The finished coder's counts.
    info: Option<(&'static str, usize, usize, Duration)>,
}

impl std::fmt::Debug for ResponseCompressionCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCompressionCtx")
            .field("level", &self.level)
            .field("decompress", &self.decompress)
            .field("min_length", &self.min_length)
            .field("active", &self.coder.is_some())
            .finish()
    }
}

/// Bodies shorter than this are not worth a coder (nginx's default
/// `gzip_min_length` is 20; a gzip stream alone costs 20 bytes, and below a
/// few hundred bytes the saving rarely pays for the work).
pub const DEFAULT_MIN_LENGTH: usize = 256;

impl ResponseCompressionCtx {
    /// Compress at `compression_level` (every algorithm; 0: off), decode
    /// an upstream's encoding the client does not accept when
    /// `decompress_enable`, keep strong `ETag`s as they are when
    /// `preserve_etag`.
    pub fn new(compression_level: u32, decompress_enable: bool, preserve_etag: bool) -> Self {
        ResponseCompressionCtx {
            level: PerAlgorithm([0, compression_level, compression_level, compression_level]),
            decompress: PerAlgorithm([
                false,
                decompress_enable,
                decompress_enable,
                decompress_enable,
            ]),
            preserve_etag: PerAlgorithm([preserve_etag; 4]),
            min_length: DEFAULT_MIN_LENGTH,
            types: None,
            accepted: None,
            head: false,
            coder: None,
            info: None,
        }
    }

    /// Whether this would compress or decompress anything.
    pub fn is_enabled(&self) -> bool {
        self.level.0.iter().any(|l| *l > 0) || self.decompress.0.iter().any(|d| *d)
    }

    /// The coder's name, bytes in, bytes out and time spent, once the body
    /// went through one.
    pub fn get_info(&self) -> Option<(&'static str, usize, usize, Duration)> {
        self.coder.as_ref().map(|c| c.stat()).or(self.info)
    }

    /// Every algorithm's level (0: no compression). Only before the
    /// response header.
    pub fn adjust_level(&mut self, new_level: u32) {
        for a in PREFERENCE {
            self.level.0[a.index()] = new_level;
        }
    }

    /// One algorithm's level (0: never that one).
    pub fn adjust_algorithm_level(&mut self, algorithm: Algorithm, new_level: u32) {
        if algorithm == Algorithm::Any {
            return self.adjust_level(new_level);
        }
        self.level.0[algorithm.index()] = new_level;
    }

    /// Decode every algorithm for clients that do not accept it.
    pub fn adjust_decompression(&mut self, enabled: bool) {
        for a in PREFERENCE {
            self.decompress.0[a.index()] = enabled;
        }
    }

    /// Decode one algorithm for clients that do not accept it.
    pub fn adjust_algorithm_decompression(&mut self, algorithm: Algorithm, enabled: bool) {
        if algorithm == Algorithm::Any {
            return self.adjust_decompression(enabled);
        }
        self.decompress.0[algorithm.index()] = enabled;
    }

    /// Keep strong `ETag`s on coded responses (default: made weak, as the
    /// coded bytes differ from the original's).
    pub fn adjust_preserve_etag(&mut self, enabled: bool) {
        self.preserve_etag.0 = [enabled; 4];
    }

    /// [`adjust_preserve_etag`](Self::adjust_preserve_etag) for one
    /// algorithm.
    pub fn adjust_algorithm_preserve_etag(&mut self, algorithm: Algorithm, enabled: bool) {
        if algorithm == Algorithm::Any {
            return self.adjust_preserve_etag(enabled);
        }
        self.preserve_etag.0[algorithm.index()] = enabled;
    }

    /// Ours: leave responses whose `Content-Length` is below `bytes`
    /// alone (default [`DEFAULT_MIN_LENGTH`]).
    pub fn adjust_min_length(&mut self, bytes: usize) {
        self.min_length = bytes;
    }

    /// Ours: compress only these media types (`type/subtype`, or `type/*`
    /// for a whole type) instead of the defaults (text other than event
    /// streams, JSON, JavaScript, XML, SVG, WebAssembly, fonts, and any
    /// `+json`/`+xml` type).
    pub fn adjust_content_types(&mut self, types: Arc<Vec<String>>) {
        self.types = Some(types);
    }

    /// Read what the client accepts (call with the request header).
    pub fn request_filter(&mut self, req: &RequestHeader) {
        if !self.is_enabled() {
            return;
        }
        // Read from the header lines as parsed: no map is built.
        self.head = req.method() == Method::HEAD;
        self.accepted = Some(Accepted::parse(req.header_values(&ACCEPT_ENCODING)));
    }

    /// Decide on the response header, and fix it up if its body will be
    /// coded. `end`: the response has no body.
    pub fn response_header_filter(&mut self, resp: &mut ResponseHeader, end: bool) {
        let Some(accepted) = self.accepted else {
            return; // off, or no request seen
        };
        if end || self.head {
            return;
        }
        let status = resp.status().as_u16();
        if status < 200 || status == 204 || status == 206 || status == 304 {
            return;
        }
        if resp.has_header(&CONTENT_RANGE) || no_transform(resp) {
            return;
        }
        let encoded = encodings(resp);
        if let Some(name) = encoded {
            // Already coded: decode it only for a client that cannot.
            let alg = Algorithm::from(name.as_str());
            if alg == Algorithm::Any || accepted.q(alg) > 0 {
                return;
            }
            if let Some(coder) = alg.decompressor(self.decompress.0[alg.index()]) {
                resp.remove_header(&CONTENT_ENCODING);
                self.recode(resp, alg);
                self.coder = Some(coder);
            }
            return;
        }
        let length = resp
            .header_values(&CONTENT_LENGTH)
            .next()
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().parse::<usize>().ok());
        if length.is_some_and(|n| n < self.min_length) {
            return;
        }
        let worth = resp
            .header_values(&CONTENT_TYPE)
            .next()
            .is_some_and(|t| compressible(t, self.types.as_ref().map(|t| t.as_slice())));
        if !worth {
            return;
        }
        // The client's best (highest q) among the algorithms turned on;
        // ties go by our preference.
        let mut best: Option<(u16, Algorithm)> = None;
        for alg in PREFERENCE {
            let q = accepted.q(alg);
            if q > 0 && self.level.0[alg.index()] > 0 && best.is_none_or(|(bq, _)| q > bq) {
                best = Some((q, alg));
            }
        }
        let Some((_, alg)) = best else { return };
        let Some(coder) = alg.compressor(self.level.0[alg.index()]) else {
            return;
        };
        let _ = resp.insert_header(CONTENT_ENCODING, alg.as_str());
        self.recode(resp, alg);
        self.coder = Some(coder);
    }

    /// The header of a response whose body changes coding: no length,
    /// `Vary: Accept-Encoding`, a weak `ETag`, no ranges.
    fn recode(&self, resp: &mut ResponseHeader, alg: Algorithm) {
        resp.remove_header(&CONTENT_LENGTH);
        resp.remove_header(&ACCEPT_RANGES);
        let varies = resp.header_values(&VARY).any(|v| {
            v.split(|b| *b == b',').any(|t| {
                let t = t.trim_ascii();
                t == b"*" || t.eq_ignore_ascii_case(b"accept-encoding")
            })
        });
        if !varies {
            let _ = resp.append_header(VARY, "Accept-Encoding");
        }
        if !self.preserve_etag.0[alg.index()] {
            let strong = resp
                .header_values(&ETAG)
                .next()
                .filter(|e| !e.starts_with(b"W/"))
                .map(|e| {
                    let mut weak = b"W/".to_vec();
                    weak.extend_from_slice(e);
                    weak
                });
            if let Some(weak) = strong.and_then(|w| HeaderValue::from_bytes(&w).ok()) {
                let _ = resp.insert_header(ETAG, weak);
            }
        }
    }

    /// Code a piece of body (`end`: the last). `None` when this response
    /// is not coded (the piece goes as it is); otherwise the coded bytes
    /// (possibly empty: the coder holds them for now).
    pub fn response_body_filter(&mut self, data: Option<&Bytes>, end: bool) -> Option<Bytes> {
        self.try_body(data, end).unwrap_or_else(|e| {
            // Pingora's form has no error: the body ends here (use
            // `try_body` to fail the response instead).
            tracing::warn!("response coding failed: {e}");
            Some(Bytes::new())
        })
    }

    /// [`response_body_filter`](Self::response_body_filter) with the
    /// coder's error (a corrupt upstream encoding) as an error.
    pub fn try_body(&mut self, data: Option<&Bytes>, end: bool) -> Result<Option<Bytes>> {
        let Some(coder) = self.coder.as_mut() else {
            return Ok(None);
        };
        let input = data.map_or(&[][..], |d| &d[..]);
        let out = coder.encode(input, end);
        if end || out.is_err() {
            self.finished();
        }
        out.map(Some)
    }

    /// Whether a coder is at work on this response.
    pub fn is_coding(&self) -> bool {
        self.coder.is_some()
    }

    fn finished(&mut self) {
        if let Some(c) = self.coder.take() {
            self.info = Some(c.stat());
        }
    }
}

/// The response's `Content-Encoding`, if it names a coding other than
/// identity (several codings: the last applied).
fn encodings(resp: &ResponseHeader) -> Option<String> {
    let mut last = None;
    for v in resp.header_values(&CONTENT_ENCODING) {
        for t in std::str::from_utf8(v).unwrap_or("x-unknown").split(',') {
            let t = t.trim();
            if !t.is_empty() && !t.eq_ignore_ascii_case("identity") {
                last = Some(t.to_string());
            }
        }
    }
    last
}

/// `Cache-Control: no-transform`: intermediaries must not change the body.
fn no_transform(resp: &ResponseHeader) -> bool {
    resp.header_values(&CACHE_CONTROL).any(|v| {
        v.split(|b| *b == b',')
            .any(|d| d.trim_ascii().eq_ignore_ascii_case(b"no-transform"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(accept: &str) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        if !accept.is_empty() {
            r.insert_header("Accept-Encoding", accept).unwrap();
        }
        r
    }

    fn resp(fields: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(200, None).unwrap();
        for (n, v) in fields {
            r.append_header(n.to_string(), *v).unwrap();
        }
        r
    }

    fn chosen(accept: &str, fields: &[(&str, &str)]) -> Option<String> {
        let mut ctx = ResponseCompressionCtx::new(6, false, false);
        ctx.request_filter(&req(accept));
        let mut r = resp(fields);
        ctx.response_header_filter(&mut r, false);
        r.headers
            .get(CONTENT_ENCODING)
            .map(|v| v.to_str().unwrap().to_string())
    }

    const HTML: (&str, &str) = ("Content-Type", "text/html; charset=utf-8");

    #[test]
    fn negotiation_follows_q_values_then_our_preference() {
        assert_eq!(chosen("gzip, br, zstd", &[HTML]).as_deref(), Some("zstd"));
        assert_eq!(
            chosen("gzip;q=1, br;q=0.9", &[HTML]).as_deref(),
            Some("gzip")
        );
        assert_eq!(
            chosen("br;q=0.1, gzip;q=0.05", &[HTML]).as_deref(),
            Some("br")
        );
        assert_eq!(chosen("*", &[HTML]).as_deref(), Some("zstd"));
        assert_eq!(chosen("*, zstd;q=0", &[HTML]).as_deref(), Some("br"));
        assert_eq!(chosen("gzip;q=0", &[HTML]), None);
        assert_eq!(chosen("identity", &[HTML]), None);
        assert_eq!(chosen("", &[HTML]), None);
        assert_eq!(chosen("deflate", &[HTML]), None);
        assert_eq!(chosen("GZIP ; Q=0.5", &[HTML]).as_deref(), Some("gzip"));
        // A malformed q-value counts as 0.
        assert_eq!(chosen("gzip;q=2", &[HTML]), None);
        assert_eq!(chosen("gzip;q=0.5x", &[HTML]), None);
    }

    #[test]
    fn skipped_when_not_worth_it_or_not_allowed() {
        let all = "gzip, br, zstd";
        assert_eq!(chosen(all, &[("Content-Type", "image/png")]), None);
        assert_eq!(chosen(all, &[("Content-Type", "text/event-stream")]), None);
        assert_eq!(chosen(all, &[]), None);
        assert_eq!(chosen(all, &[HTML, ("Content-Length", "100")]), None);
        assert_eq!(
            chosen(all, &[HTML, ("Content-Range", "bytes 0-9/100")]),
            None
        );
        assert_eq!(
            chosen(all, &[HTML, ("Cache-Control", "public, no-transform")]),
            None
        );
        // Already encoded: left as it is.
        assert_eq!(
            chosen(all, &[HTML, ("Content-Encoding", "gzip")]).as_deref(),
            Some("gzip")
        );
        assert!(chosen(all, &[("Content-Type", "application/vnd.api+json")]).is_some());
        let mut ctx = ResponseCompressionCtx::new(6, false, false);
        let mut head = req(all);
        head.set_method(Method::HEAD);
        ctx.request_filter(&head);
        let mut r = resp(&[HTML]);
        ctx.response_header_filter(&mut r, false);
        assert!(!ctx.is_coding());
        for status in [204, 304, 206] {
            let mut ctx = ResponseCompressionCtx::new(6, false, false);
            ctx.request_filter(&req(all));
            let mut r = resp(&[HTML]);
            r.set_status(status).unwrap();
            ctx.response_header_filter(&mut r, false);
            assert!(!ctx.is_coding(), "{status}");
        }
    }

    #[test]
    fn the_header_is_fixed_for_a_coded_body() {
        let mut ctx = ResponseCompressionCtx::new(6, false, false);
        ctx.request_filter(&req("gzip"));
        let mut r = resp(&[
            HTML,
            ("Content-Length", "5000"),
            ("ETag", "\"abc\""),
            ("Accept-Ranges", "bytes"),
            ("Vary", "Origin"),
        ]);
        ctx.response_header_filter(&mut r, false);
        assert_eq!(r.headers.get(CONTENT_ENCODING).unwrap(), "gzip");
        assert!(r.headers.get(CONTENT_LENGTH).is_none());
        assert!(r.headers.get(ACCEPT_RANGES).is_none());
        assert_eq!(r.headers.get(ETAG).unwrap(), "W/\"abc\"");
        let vary: Vec<_> = r.headers.get_all(VARY).iter().collect();
        assert_eq!(vary, ["Origin", "Accept-Encoding"]);
        // A Vary that names it already is left alone; a weak ETag too.
        let mut ctx = ResponseCompressionCtx::new(6, false, true);
        ctx.request_filter(&req("br"));
        let mut r = resp(&[HTML, ("Vary", "accept-encoding"), ("ETag", "\"x\"")]);
        ctx.response_header_filter(&mut r, false);
        assert_eq!(r.headers.get_all(VARY).iter().count(), 1);
        assert_eq!(r.headers.get(ETAG).unwrap(), "\"x\"");
    }

    /// Each algorithm round-trips through its own decoder, fed in pieces.
    #[test]
    fn streams_round_trip_in_pieces() {
        let text: Vec<u8> = (0..200_000u32)
            .flat_map(|i| format!("line {i} of the body\n").into_bytes())
            .collect();
        for alg in PREFERENCE {
            let mut enc = alg.compressor(6).unwrap();
            let mut coded = Vec::new();
            let pieces: Vec<&[u8]> = text.chunks(65_536).collect();
            for (i, p) in pieces.iter().enumerate() {
                coded.extend_from_slice(&enc.encode(p, i + 1 == pieces.len()).unwrap());
            }
            assert!(coded.len() < text.len() / 5, "{alg:?}: {}", coded.len());
            let (name, i, o, _) = enc.stat();
            assert_eq!((name, i, o), (alg.as_str(), text.len(), coded.len()));
            let mut dec = alg.decompressor(true).unwrap();
            let mut plain = Vec::new();
            for p in coded.chunks(1000) {
                plain.extend_from_slice(&dec.encode(p, false).unwrap());
            }
            plain.extend_from_slice(&dec.encode(&[], true).unwrap());
            assert!(plain == text, "{alg:?}");
        }
    }

    #[test]
    fn an_encoding_the_client_lacks_is_decoded_when_allowed() {
        let body = Bytes::from(vec![b'z'; 50_000]);
        let mut enc = Algorithm::Gzip.compressor(6).unwrap();
        let gz = enc.encode(&body, true).unwrap();
        for (decompress, accept, decoded) in [
            (true, "br", true),
            (true, "gzip", false),
            (false, "", false),
        ] {
            let mut ctx = ResponseCompressionCtx::new(6, decompress, false);
            ctx.request_filter(&req(accept));
            let mut r = resp(&[HTML, ("Content-Encoding", "gzip")]);
            ctx.response_header_filter(&mut r, false);
            assert_eq!(ctx.is_coding(), decoded, "{accept}");
            if decoded {
                assert!(r.headers.get(CONTENT_ENCODING).is_none());
                let out = ctx.try_body(Some(&gz), true).unwrap().unwrap();
                assert_eq!(out, body);
                assert_eq!(ctx.get_info().unwrap().0, "gzip");
            }
        }
        // A corrupt stream is an error, not a silent cut.
        let mut ctx = ResponseCompressionCtx::new(6, true, false);
        ctx.request_filter(&req(""));
        let mut r = resp(&[HTML, ("Content-Encoding", "gzip")]);
        ctx.response_header_filter(&mut r, false);
        assert!(ctx
            .try_body(Some(&Bytes::from_static(b"not gzip at all")), true)
            .is_err());
    }

    #[test]
    fn q_values_parse_strictly() {
        assert_eq!(parse_q("1"), Some(1000));
        assert_eq!(parse_q("1.000"), Some(1000));
        assert_eq!(parse_q("0.25"), Some(250));
        assert_eq!(parse_q("0"), Some(0));
        assert_eq!(parse_q("1.5"), None);
        assert_eq!(parse_q("0.1234"), None);
        assert_eq!(parse_q("-1"), None);
    }
}
