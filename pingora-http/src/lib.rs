//! HTTP request and response headers that keep header-name case and order.
//!
//! The `http` crate's [`HeaderMap`](http::HeaderMap) is the right tool for
//! looking headers up, but it lowercases names and groups repeated names
//! together. A proxy must not do either to what it forwards: some peers
//! depend on `Content-Type` being spelled that way, and on the order of
//! repeated lines. [`RequestHeader`] and [`ResponseHeader`] keep both: they
//! dereference to the `http` crate's parts for reading, and their methods
//! keep the lookup map and the wire order in step.
//!
//! ```
//! use pingora_http::RequestHeader;
//!
//! let mut req = RequestHeader::build("GET", b"/index.html?x=1", None).unwrap();
//! req.insert_header("Host", "example.com").unwrap();
//! req.append_header("X-Tag", "a").unwrap();
//! req.append_header("x-tag", "b").unwrap();
//! // Look up like an http::request::Parts ...
//! assert_eq!(req.headers.get("host").unwrap(), "example.com");
//! assert_eq!(req.method, http::Method::GET);
//! // ... and write it out as given.
//! assert_eq!(
//!     &req.to_wire()[..],
//!     b"GET /index.html?x=1 HTTP/1.1\r\nHost: example.com\r\nX-Tag: a\r\nx-tag: b\r\n\r\n"
//! );
//! ```
#![warn(missing_docs)]

use bytes::Bytes;

mod case;
mod h1;
mod lines;
mod order;
mod raw;
mod req;
mod resp;
mod spare;

pub use case::{CaseHeaderName, IntoCaseHeaderName};
pub use http::{HeaderName, HeaderValue, Method, StatusCode, Uri, Version as HttpVersion};
pub use lines::HeaderValues;
pub use order::{tracked, TrackedName};
pub use req::RequestHeader;
pub use resp::ResponseHeader;

/// The `http` crate's `Version`, under the name Pingora gives it
/// (also [`HttpVersion`]).
pub use http::Version;

/// The `http` crate's header map, under the name Pingora gives it.
pub type HMap = http::HeaderMap<HeaderValue>;

/// The two header types, in one `use pingora_http::prelude::*`.
pub mod prelude {
    pub use crate::{RequestHeader, ResponseHeader};
}

/// `part` as a `Bytes`: a shared slice of `buf` if it lies inside it (no
/// copy), else a copy.
fn share(buf: &Bytes, part: &[u8]) -> Bytes {
    let start = buf.as_ptr() as usize;
    let p = part.as_ptr() as usize;
    if !part.is_empty() && p >= start && p + part.len() <= start + buf.len() {
        buf.slice_ref(part)
    } else {
        Bytes::copy_from_slice(part)
    }
}

/// The HTTP/1 version token; HTTP/2 and later are written as HTTP/1.1,
/// since that is what goes on an HTTP/1 wire.
fn version_str(v: Version) -> &'static [u8] {
    match v {
        Version::HTTP_09 => b"HTTP/0.9",
        Version::HTTP_10 => b"HTTP/1.0",
        _ => b"HTTP/1.1",
    }
}

#[cfg(test)]
mod tests;
