//! A framework for fast, reliable, programmable network services.
//!
//! This is the facade crate: it re-exports the layers so that a program
//! needs one dependency, and it holds the examples and benchmarks. Each
//! layer is also its own crate, for users who want only that layer:
//!
//! | module | crate | what it is |
//! |---|---|---|
//! | [`error`] | `pingora-error` | the one error type, with kind, source, retry flag, context and cause chain |
//! | [`timeout`] | `pingora-timeout` | cheap I/O timeouts on a shared coarse timer wheel |
//! | [`http`] | `pingora-http` | request and response headers that keep name case and order |
//! | [`pool`] | `pingora-pool` | a keyed connection pool |
//! | [`core`] | `pingora-core` | server, services, listeners, protocols, connectors |
//! | [`proxy`] | `pingora-proxy` | the programmable HTTP proxy (feature `proxy`) |
//! | [`lb`] | `pingora-load-balancing` | load balancing and health checks (feature `lb`) |
//!
//! Features: `openssl` (default) or `boringssl` chooses the TLS library;
//! `proxy` and `lb` (both default) add the proxy and the load balancer.
//!
//! ```
//! use pingora::prelude::*;
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let mut req = RequestHeader::build("GET", b"/index.html", None).unwrap();
//! req.insert_header("Host", "example.com").unwrap();
//! // Any future gets a deadline on the shared timer wheel.
//! let r = timeout(Duration::from_secs(1), async { req.to_wire().len() }).await;
//! assert!(r.unwrap() > 20);
//! # }
//! ```
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]

#[cfg(all(feature = "openssl", feature = "boringssl"))]
compile_error!(
    "pingora: the `openssl` and `boringssl` features cannot both be enabled, because \
     OpenSSL and BoringSSL cannot be linked into one binary. To use BoringSSL, turn off \
     the default features: `pingora = { version = \"..\", default-features = false, \
     features = [\"boringssl\", \"proxy\", \"lb\"] }`, or on the command line \
     `--no-default-features --features boringssl,proxy,lb`."
);

// Everything of pingora-core at the root, as Pingora's facade has it
// (`pingora::server`, `pingora::services`, `pingora::upstreams`,
// `pingora::connectors`, `pingora::protocols`, `pingora::listeners`,
// `pingora::apps`, `pingora::tls`, `pingora::Result`, `pingora::Error`, …).
pub use pingora_core::*;

#[cfg(feature = "proxy")]
#[cfg_attr(docsrs, doc(cfg(feature = "proxy")))]
pub use pingora_cache as cache;
pub use pingora_core as core;
pub use pingora_error as error;
pub use pingora_http as http;
#[cfg(feature = "lb")]
#[cfg_attr(docsrs, doc(cfg(feature = "lb")))]
pub use pingora_load_balancing as lb;
pub use pingora_pool as pool;
#[cfg(feature = "proxy")]
#[cfg_attr(docsrs, doc(cfg(feature = "proxy")))]
pub use pingora_proxy as proxy;
pub use pingora_timeout as timeout;
/// The timeouts (pingora-timeout), under the name Pingora gives them.
pub use pingora_timeout as time;

/// The names most programs need, in one `use pingora::prelude::*`: the
/// server, its options, background services, the HTTP peer, the error
/// types with `ErrorType`'s variants, the header types, the timeouts, and
/// (with their features) the proxy's and the load balancer's names.
pub mod prelude {
    pub use pingora_core::prelude::*;
    pub use pingora_http::prelude::*;
    #[cfg(feature = "lb")]
    pub use pingora_load_balancing::prelude::*;
    #[cfg(feature = "proxy")]
    pub use pingora_proxy::prelude::*;
    pub use pingora_timeout::*;
}
