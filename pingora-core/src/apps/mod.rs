//! Apps: what a listening service does with each accepted connection.
//!
//! [`ServerApp`] handles raw streams; [`http_app`] runs HTTP apps on top.

pub mod http_app;
pub mod prometheus_http_app;

use std::sync::Arc;

use async_trait::async_trait;

use crate::protocols::Stream;
use crate::shutdown::ShutdownWatch;

/// Handles accepted connections.
///
/// The app owns the stream while it works. Returning `Some(stream)` says the
/// connection is still good and may be handed to the app again (for the
/// next request on a keep-alive connection); `None` closes it.
#[async_trait]
pub trait ServerApp: Send + Sync + 'static {
    /// Handle one connection. `shutdown` turns true when the server starts
    /// a graceful shutdown: finish the work in hand, then stop.
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream>;

    /// What the service does with a connection this app hands back
    /// (`Some(stream)`): call the app again at once (the default), or park
    /// it until its next bytes arrive. Only plain TCP and Unix-socket
    /// connections are parked; others are always handed straight back.
    fn idle_policy(&self) -> IdlePolicy {
        IdlePolicy::CallAgain
    }

    /// How long idle connections are kept once a graceful shutdown begins,
    /// for a request already on its way (then served and closed), before
    /// they are closed: the parked ones as well as those waiting in their
    /// tasks. Default: none.
    fn shutdown_drain(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    /// Called once, after the service stopped and drained.
    async fn cleanup(&self) {}
}

/// How an HTTP service handles some transports (Pingora's): set as
/// `HttpProxy::server_options` before the service serves. `h2c` turns on
/// HTTP/2 with prior knowledge on plain connections; the others are
/// accepted and have no effect here (CONNECT is proxied as the proxy's own
/// rules say; there is no per-connection request limit).
#[non_exhaustive]
#[derive(Debug, Default, Clone)]
pub struct HttpServerOptions {
    /// Accept HTTP/2 with prior knowledge (h2c) on plain connections.
    pub h2c: bool,
    /// Pingora's; no effect here.
    pub allow_connect_method_proxying: bool,
    #[doc(hidden)]
    pub force_custom: bool,
    /// Pingora's; no effect here.
    pub keepalive_request_limit: Option<u32>,
}

/// What a listening service does with a connection its app handed back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdlePolicy {
    /// Call `process_new` again at once.
    CallAgain,
    /// Park it until it is readable (a request, or the client closing),
    /// then call `process_new` again in a new task. Parked, a connection
    /// holds its socket and a few dozen bytes: no task, no buffer, no
    /// reactor registration. It is closed after the given time (`None`:
    /// no limit) and at shutdown. Parking costs four system calls, so an
    /// app should hand a connection back only once it has been idle for a
    /// while.
    Park(Option<std::time::Duration>),
}
