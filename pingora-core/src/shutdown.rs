//! The shutdown signal every service, app and session watches: a leaf
//! module, so that apps, services and protocols need nothing of the server
//! that sends it.

/// Turns `true` when the server begins to shut down.
pub type ShutdownWatch = tokio::sync::watch::Receiver<bool>;
