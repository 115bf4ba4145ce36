//! The BoringSSL TLS backend.
//!
//! The small TLS API that pingora-core uses, over BoringSSL (built from
//! source by `boring-sys`, which needs cmake, a C++ compiler and
//! libclang): the library's own modules ([`ssl`], [`x509`], [`pkey`], …)
//! re-exported, an async [`stream::TlsStream`] with server and client
//! handshakes, and [`ext`] helpers for what the two libraries spell
//! differently (key-exchange groups). Its twin, `pingora-openssl`, has the
//! same API over OpenSSL; pingora-core picks one through its `openssl` /
//! `boringssl` features, and code above core never names either. The two
//! cannot be linked into one binary.
//!
//! ```
//! use pingora_boringssl::ssl::{SslAcceptor, SslMethod};
//! use pingora_boringssl::ext;
//!
//! let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
//! // BoringSSL always has the post-quantum hybrid.
//! assert!(ext::group_supported(ext::PQ_HYBRID_GROUP));
//! ext::set_groups(&mut b, "X25519MLKEM768:X25519:P-256").unwrap();
//! ```
#![warn(missing_docs)]

pub use boring::{asn1, bn, ec, error, hash, nid, pkey, ssl, stack, x509};

pub mod ext;
pub mod stream;

/// Which library this is: `"boringssl"`.
pub const BACKEND: &str = "boringssl";
