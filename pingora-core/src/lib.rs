//! The core of the framework: the server and what it runs.
//!
//! - [`server`]: [`Server`](server::Server), created from the command line
//!   ([`Opt`](server::Opt): `-c`, `-d`, `-u`, `-t`) and a YAML conf
//!   ([`ServerConf`](server::ServerConf), Pingora's keys). It runs
//!   services, and handles SIGTERM (graceful shutdown), SIGINT (fast
//!   shutdown) and SIGQUIT (zero-downtime upgrade: the listening sockets go
//!   to a new process over a Unix socket).
//! - [`services`]: a [`listening::Service`](services::listening::Service)
//!   is listeners plus a [`ServerApp`](apps::ServerApp); a
//!   [`background service`](services::background) is a task that runs
//!   until shutdown.
//! - [`listeners`]: TCP (IPv4/IPv6, with per-listener socket options) and
//!   Unix-domain listeners.
//! - [`protocols`]: the accepted [`Stream`](protocols::Stream) and its
//!   [`SocketDigest`](protocols::SocketDigest); TLS streams with their
//!   [`TlsDigest`](protocols::TlsDigest); HTTP/1 sessions.
//! - [`apps`]: [`ServerApp`](apps::ServerApp) for raw streams and
//!   [`http_app`](apps::http_app) for HTTP.
//! - [`connectors`] and [`upstreams`]: connecting to peers (L4, TLS,
//!   HTTP/1), with idle connections pooled for reuse.
//! - `tls`: the chosen TLS library's API; `utils::certs` makes certificates
//!   for tests and examples.
//!
//! The TLS backend is chosen with a cargo feature: `openssl` (the default)
//! or `boringssl`. Enabling both is a compile error, because the two
//! libraries cannot be linked into one binary.
//!
//! A TCP echo server:
//!
//! ```no_run
//! use std::sync::Arc;
//! use async_trait::async_trait;
//! use pingora_core::apps::ServerApp;
//! use pingora_core::protocols::Stream;
//! use pingora_core::server::{Opt, Server, ShutdownWatch};
//! use pingora_core::services::listening::Service;
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! struct Echo;
//!
//! #[async_trait]
//! impl ServerApp for Echo {
//!     async fn process_new(self: &Arc<Self>, mut io: Stream, _s: &ShutdownWatch) -> Option<Stream> {
//!         let mut buf = [0u8; 4096];
//!         loop {
//!             match io.read(&mut buf).await {
//!                 Ok(0) | Err(_) => return None,
//!                 Ok(n) => io.write_all(&buf[..n]).await.ok()?,
//!             }
//!         }
//!     }
//! }
//!
//! let mut server = Server::new(Opt::parse_args()).unwrap();
//! server.bootstrap();
//! let mut echo = Service::new("echo".to_string(), Echo);
//! echo.add_tcp("127.0.0.1:6142");
//! server.add_service(echo);
//! server.run_forever();
//! ```
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(all(feature = "openssl", feature = "boringssl"))]
compile_error!(
    "pingora-core: the `openssl` and `boringssl` features cannot both be enabled; \
     BoringSSL and OpenSSL cannot be linked into one binary. \
     To use BoringSSL, turn off default features: \
     `pingora = { version = \"..\", default-features = false, features = [\"boringssl\", \"proxy\", \"lb\"] }` \
     (or `cargo build --no-default-features --features boringssl,proxy,lb`)."
);

// `any_tls` is on with either TLS feature: the one name the TLS-dependent
// code is gated on. Turned on alone it has no library to use.
#[cfg(all(
    feature = "any_tls",
    not(any(feature = "openssl", feature = "boringssl"))
))]
compile_error!("pingora-core: `any_tls` is internal; turn on `openssl` or `boringssl` instead.");

pub mod apps;
pub mod connectors;
pub mod listeners;
pub mod metrics;
pub mod modules;
pub mod protocols;
#[cfg(feature = "sentry")]
#[cfg_attr(docsrs, doc(cfg(feature = "sentry")))]
pub mod sentry;
pub mod server;
pub mod services;
pub mod shutdown;
pub mod syslog;
pub mod upstreams;
pub mod utils;

// The error types at the crate root, as Pingora has them
// (`pingora_core::Result`, `pingora_core::Error`, `pingora_core::InternalError`, …).
pub use pingora_error::{ErrorType::*, *};

/// The names most programs need, in one `use pingora_core::prelude::*`:
/// the server and its options, background services, the HTTP peer, and
/// the error types (with `ErrorType`'s variants).
pub mod prelude {
    pub use crate::server::configuration::Opt;
    pub use crate::server::Server;
    pub use crate::services::background::background_service;
    pub use crate::upstreams::peer::HttpPeer;
    pub use pingora_error::{ErrorType::*, *};
}

/// The TLS library in use: `pingora-openssl` or `pingora-boringssl`,
/// whichever feature is on. Both have the same API, so code written against
/// `pingora_core::tls` builds with either.
#[cfg(all(feature = "boringssl", not(feature = "openssl")))]
pub use pingora_boringssl as tls;
/// The TLS library in use: `pingora-openssl` or `pingora-boringssl`,
/// whichever feature is on. Both have the same API, so code written against
/// `pingora_core::tls` builds with either.
#[cfg(feature = "openssl")]
pub use pingora_openssl as tls;
