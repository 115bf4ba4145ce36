//! The OpenSSL TLS backend.
//!
//! The small TLS API that pingora-core uses, over the system OpenSSL (or,
//! with the `vendored` feature, a current OpenSSL built from source): the
//! library's own modules ([`ssl`], [`x509`], [`pkey`], …) re-exported,
//! an async [`stream::TlsStream`] with server and client handshakes, and
//! [`ext`] helpers for what the two libraries spell differently (key
//! exchange groups). Its twin, `pingora-boringssl`, has the same API over
//! BoringSSL; pingora-core picks one through its `openssl` / `boringssl`
//! features, and code above core never names either.
//!
//! ```
//! use pingora_openssl::ssl::{SslAcceptor, SslMethod};
//! use pingora_openssl::ext;
//!
//! let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
//! // Prefer the post-quantum hybrid where this OpenSSL has it.
//! let groups = if ext::group_supported(ext::PQ_HYBRID_GROUP) {
//!     "X25519MLKEM768:X25519:P-256"
//! } else {
//!     "X25519:P-256"
//! };
//! ext::set_groups(&mut b, groups).unwrap();
//! ```
#![warn(missing_docs)]

pub use openssl::{asn1, bn, ec, error, hash, nid, pkey, ssl, stack, x509};

pub mod ext;
pub mod stream;

/// Which library this is: `"openssl"`.
pub const BACKEND: &str = "openssl";
