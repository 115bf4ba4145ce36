//! Services: the units a [`Server`](crate::server::Server) runs.
//!
//! A [`listening::Service`] accepts connections on its listeners and hands
//! each to its app; a [`background::GenBackgroundService`] runs a task of
//! the user's until shutdown; a [`udp::UdpService`] hands each datagram
//! to its app. Each service runs on runtimes of its own, so
//! a busy one cannot starve another.

use async_trait::async_trait;
use pingora_error::Result;
use tokio::runtime::Handle;
use tokio::sync::watch;

use crate::listeners::ListenFds;
use crate::server::ShutdownWatch;

pub mod background;
mod idle;
pub mod listening;
pub mod udp;

/// Tells the server (and services that depend on this one) that a service
/// is ready: listening, or started.
#[derive(Debug)]
pub struct ReadyNotifier(pub(crate) watch::Sender<bool>);

impl ReadyNotifier {
    /// Mark the service ready. Calling it again does nothing.
    pub fn notify_ready(&self) {
        self.0.send_replace(true);
    }
}

/// What a service gets when it starts.
pub struct ServiceContext {
    /// Turns true when the server shuts down.
    pub shutdown: ShutdownWatch,
    /// Call once the service is ready.
    pub ready: ReadyNotifier,
    /// The service's runtimes: one work-stealing runtime, or one
    /// single-threaded runtime per worker (`work_stealing: false`).
    /// Spread work across all of them.
    pub runtimes: Vec<Handle>,
    /// Worker threads across those runtimes (the service's `threads`).
    pub threads: usize,
}

/// A unit of work the server runs until shutdown.
#[async_trait]
pub trait Service: Send + Sync {
    /// Bind what the service listens on, before any runtime starts, taking
    /// inherited sockets from `fds` during an upgrade. A failure stops the
    /// server's start-up with this error.
    fn bind(&mut self, _fds: &ListenFds) -> Result<()> {
        Ok(())
    }

    /// Run until `ctx.shutdown` turns true, then finish in-flight work and
    /// return. Runs on the first of `ctx.runtimes`.
    async fn start_service(&mut self, ctx: ServiceContext);

    /// The service's name, for logs.
    fn name(&self) -> &str;

    /// Worker threads for this service; `None` uses the conf's `threads`.
    fn threads(&self) -> Option<usize> {
        None
    }
}

/// Start `svc` on the current runtime with `threads` workers, as the server
/// would, and wait until it is ready. Send `true` to stop it; the handle
/// gives the service back once it stopped.
#[cfg(test)]
pub(crate) async fn start_for_test<S: Service + 'static>(
    mut svc: S,
    threads: usize,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<S>) {
    let (tx, rx) = watch::channel(false);
    let (ready_tx, mut ready_rx) = watch::channel(false);
    let ctx = ServiceContext {
        shutdown: rx,
        ready: ReadyNotifier(ready_tx),
        runtimes: vec![Handle::current()],
        threads,
    };
    let task = tokio::spawn(async move {
        svc.start_service(ctx).await;
        svc
    });
    ready_rx
        .wait_for(|r| *r)
        .await
        .expect("the service got ready");
    (tx, task)
}
