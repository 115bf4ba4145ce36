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

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    ACCEPT_ENCODING, ACCEPT_RANGES, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE,
    CONTENT_TYPE, ETAG, VARY,
};
use http::{HeaderValue, Method};
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};

mod codec;
mod negotiation;
#[cfg(test)]
mod tests;

use codec::PREFERENCE;
pub use codec::{Algorithm, Encode};
use negotiation::{compressible, Accepted};

/// Settings per algorithm, indexed by `Algorithm::index`.
#[derive(Debug, Clone, Copy, Default)]
struct PerAlgorithm<T>([T; 4]);

impl<T: Copy> PerAlgorithm<T> {
    /// Set `algorithm`'s value; `Any`: every algorithm's.
    fn set(&mut self, algorithm: Algorithm, value: T) {
        if algorithm != Algorithm::Any {
            self.0[algorithm.index()] = value;
            return;
        }
        for a in PREFERENCE {
            self.0[a.index()] = value;
        }
    }
}

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
        self.level.set(Algorithm::Any, new_level);
    }

    /// One algorithm's level (0: never that one).
    pub fn adjust_algorithm_level(&mut self, algorithm: Algorithm, new_level: u32) {
        self.level.set(algorithm, new_level);
    }

    /// Decode every algorithm for clients that do not accept it.
    pub fn adjust_decompression(&mut self, enabled: bool) {
        self.decompress.set(Algorithm::Any, enabled);
    }

    /// Decode one algorithm for clients that do not accept it.
    pub fn adjust_algorithm_decompression(&mut self, algorithm: Algorithm, enabled: bool) {
        self.decompress.set(algorithm, enabled);
    }

    /// Keep strong `ETag`s on coded responses (default: made weak, as the
    /// coded bytes differ from the original's).
    pub fn adjust_preserve_etag(&mut self, enabled: bool) {
        self.preserve_etag.set(Algorithm::Any, enabled);
    }

    /// [`adjust_preserve_etag`](Self::adjust_preserve_etag) for one
    /// algorithm.
    pub fn adjust_algorithm_preserve_etag(&mut self, algorithm: Algorithm, enabled: bool) {
        self.preserve_etag.set(algorithm, enabled);
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
    ///
    /// # Errors
    ///
    /// `InternalError` if the coder fails: a corrupt or truncated upstream
    /// encoding when decompressing. The coder is dropped then (later calls
    /// return `None`).
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
