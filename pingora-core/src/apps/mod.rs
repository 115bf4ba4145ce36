//! Apps: what a listening service does with each accepted connection.
//!
//! [`ServerApp`] handles raw streams; [`http_app`] runs HTTP apps on top.

pub mod http_app;

use std::sync::Arc;

use async_trait::async_trait;

use crate::protocols::Stream;
use crate::server::ShutdownWatch;

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

    /// Called once, after the service stopped and drained.
    async fn cleanup(&self) {}
}
