//! The programmable HTTP proxy.
//!
//! Implement [`ProxyHttp`] — at least [`ProxyHttp::upstream_peer`], and any
//! of the other phases — and serve it with [`http_proxy_service`]. The
//! [`HttpProxy`] pipeline runs the phases for every request over HTTP/1 or
//! HTTP/2 on either side, streams the request body and the response at the
//! same time, drops hop-by-hop headers, retries connect failures (and what
//! the user marks retryable), and answers 502 / 504 / 4xx when a request
//! fails.
//!
//! Beside it: [`tcp`], a TCP (L4) proxy with TLS on either side and
//! half-close, and [`udp`], a UDP proxy with per-client sessions.
//!
//! ```no_run
//! use async_trait::async_trait;
//! use pingora_core::server::Server;
//! use pingora_core::upstreams::peer::HttpPeer;
//! use pingora_error::Result;
//! use pingora_proxy::{http_proxy_service, ProxyHttp, Session};
//!
//! struct Forward;
//!
//! #[async_trait]
//! impl ProxyHttp for Forward {
//!     type CTX = ();
//!     fn new_ctx(&self) {}
//!     async fn upstream_peer(&self, _s: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
//!         Ok(Box::new(HttpPeer::try_new("127.0.0.1:8080", false, String::new())?))
//!     }
//! }
//!
//! let mut server = Server::new(None).unwrap();
//! server.bootstrap();
//! let mut proxy = http_proxy_service(&server.configuration, Forward);
//! proxy.add_tcp("127.0.0.1:6188");
//! server.add_service(proxy);
//! server.run_forever();
//! ```
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod access_log;
pub mod forwarded;
pub mod metrics;
#[cfg(feature = "otel")]
#[cfg_attr(docsrs, doc(cfg(feature = "otel")))]
pub mod otel;
mod proxy;
mod proxy_trait;
mod session;
pub mod tcp;
pub mod udp;

pub use proxy::{
    error_status, http_proxy, http_proxy_service, http_proxy_service_with_name, is_connect_error,
    HttpProxy, ProxyOptions,
};
pub use proxy_trait::{FailToProxy, PhaseFuture, ProxyHttp};
pub use session::Session;

/// The names every proxy program needs, in one
/// `use pingora_proxy::prelude::*`.
pub mod prelude {
    pub use crate::{http_proxy, http_proxy_service, ProxyHttp, Session};
}
