//! HTTP sessions: reading requests and writing responses (server side), and
//! writing requests and reading responses (client side).
//!
//! [`v1`] speaks HTTP/1.0 and HTTP/1.1, [`v2`] HTTP/2. [`ServerSession`] is
//! what apps see:
//! one request and its response, whatever protocol carried them.

/// Pingora's path to the client session: `protocols::http::client::HttpSession`
/// is the connector's [`ClientSession`](crate::connectors::http::ClientSession).
pub mod client {
    pub use crate::connectors::http::ClientSession as HttpSession;
    pub use crate::protocols::http::v1::client::HttpSession as Http1Session;
    pub use crate::protocols::http::v2::client::Http2Session;
}
pub mod bridge;
pub mod compression;
pub mod server;
pub mod v1;
pub mod v2;

pub use server::{ServerSession, ServerSessionKind};

/// What sending a queued body while reading made happen: the queue went
/// out, or the peer sent something to read first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    /// Everything queued was sent.
    Sent,
    /// The peer sent bytes (or closed): read them now.
    Readable,
}
pub use v1::H1Options;

/// Drop the request's header lines whose name holds `_` (see
/// `H1Options::underscores_in_headers`); returns how many went.
pub(crate) fn drop_underscore_names(req: &mut pingora_http::RequestHeader) -> usize {
    req.retain_header_names(|name| !name.contains(&b'_'))
}
