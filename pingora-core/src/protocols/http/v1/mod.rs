//! HTTP/1.x over any [`Stream`](crate::protocols::Stream).
//!
//! The rules this code enforces against hostile input are written down,
//! each with its RFC 9112 section, in `docs/HTTP1.md`.
//!
//! * [`server::HttpSession`] reads requests and writes responses on an
//!   accepted connection, one request after another (keep-alive and
//!   pipelining).
//! * [`client::HttpSession`] writes requests and reads responses on an
//!   upstream connection, and says whether it may be reused.
//! * [`chunked::ChunkedDecoder`] is the chunked transfer-coding decoder both
//!   use; it is public so that it can be fuzzed and benchmarked alone.

use std::time::Duration;

pub mod chunked;
pub mod client;
mod conn;
pub(crate) mod framing;
pub mod server;

/// Limits and timeouts of an HTTP/1 session. All have safe defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H1Options {
    /// Most bytes a header block (request line and fields) may take; more
    /// is answered with 431. Default 64 KiB.
    pub max_header_bytes: usize,
    /// Most header fields; more is answered with 431. Default 256.
    pub max_headers: usize,
    /// Longest request target (URI); longer is answered with 414.
    /// Default 8 KiB.
    pub max_uri_len: usize,
    /// Largest request body; larger is answered with 413. Default: no
    /// limit.
    pub max_body_bytes: Option<u64>,
    /// Time allowed to receive a whole header block once the connection or
    /// the request has started (slowloris). Default 60 s.
    pub header_read_timeout: Option<Duration>,
    /// Time allowed between two reads of body bytes. Default 60 s.
    pub body_read_timeout: Option<Duration>,
    /// Time allowed for one write to complete. Default 60 s.
    pub write_timeout: Option<Duration>,
    /// How long an idle keep-alive connection waits for its next request.
    /// Default 60 s.
    pub keepalive_timeout: Option<Duration>,
    /// Longest chunk-size line, extensions included; longer is a 400.
    /// Default 4 KiB.
    pub max_chunk_line: usize,
    /// Whether request header lines whose name holds `_` are kept. Off by
    /// default, as nginx's `underscores_in_headers off`: such lines are
    /// dropped before the request is served (over HTTP/1 and HTTP/2), so
    /// that `X_Forwarded_For` cannot pass for `X-Forwarded-For` at an
    /// upstream that folds `_` into `-` (CGI-style). Pingora keeps them.
    pub underscores_in_headers: bool,
}

impl Default for H1Options {
    fn default() -> Self {
        let min = Some(Duration::from_secs(60));
        H1Options {
            max_header_bytes: 64 * 1024,
            max_headers: 256,
            max_uri_len: 8 * 1024,
            max_body_bytes: None,
            header_read_timeout: min,
            body_read_timeout: min,
            write_timeout: min,
            keepalive_timeout: min,
            max_chunk_line: 4096,
            underscores_in_headers: false,
        }
    }
}
