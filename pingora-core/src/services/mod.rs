//! Services: the units a [`Server`](crate::server::Server) runs.
//!
//! A [`listening::Service`] accepts connections on its listeners and hands
//! each to its app; a [`background::GenBackgroundService`] runs a task of
//! the user's until shutdown; a [`udp::UdpService`] hands each datagram
//! to its app. Each service runs on runtimes of its own, so
//! a busy one cannot starve another.

use std::time::Duration;

use async_trait::async_trait;
use pingora_error::Result;
use tokio::runtime::Handle;
use tokio::sync::watch;
use tracing::info;

use crate::listeners::ListenFds;
use crate::shutdown::ShutdownWatch;

pub mod background;
mod idle;
pub mod listening;
pub mod udp;

/// Tells the server (and services that depend on this one) that a service
/// is ready: listening, or started. Dropping it counts as ready too (as
/// Pingora's `ServiceReadyNotifier`): a service that never says so does
/// not hold up the ones that depend on it forever.
#[derive(Debug)]
pub struct ReadyNotifier(pub(crate) watch::Sender<bool>);

/// Pingora's name for [`ReadyNotifier`].
pub type ServiceReadyNotifier = ReadyNotifier;

/// The other end of a [`ReadyNotifier`]: turns true once the service is
/// ready.
pub type ServiceReadyWatch = watch::Receiver<bool>;

impl ReadyNotifier {
    /// A notifier that sets `sender` to true when the service is ready.
    pub fn new(sender: watch::Sender<bool>) -> Self {
        ReadyNotifier(sender)
    }

    /// Mark the service ready. Calling it again does nothing.
    pub fn notify_ready(&self) {
        self.0.send_replace(true);
    }
}

impl Drop for ReadyNotifier {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}

/// Names the type; its state is not shown.
impl std::fmt::Debug for ServiceContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceContext").finish_non_exhaustive()
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
    /// The listening sockets inherited in a graceful upgrade.
    pub fds: ListenFds,
}

/// A unit of work the server runs until shutdown, with Pingora's
/// signature: implement [`start_service`](Self::start_service) (run until
/// `shutdown` turns true) and [`name`](Self::name). Every `Service` is a
/// [`ServiceWithDependents`] that is ready as soon as it starts.
///
/// The services of this crate implement the two methods of ours instead:
/// [`bind`](Self::bind) (sockets bound before any runtime starts) and
/// [`run`](Self::run) (with all of the service's runtimes).
#[async_trait]
pub trait Service: Send + Sync {
    /// Run until `shutdown` turns true, then finish in-flight work and
    /// return (Pingora's entry point; `fds` holds the sockets inherited in
    /// an upgrade, `listeners_per_fd` how many accept loops each gets).
    async fn start_service(
        &mut self,
        _fds: Option<ListenFds>,
        _shutdown: ShutdownWatch,
        _listeners_per_fd: usize,
    ) {
    }

    /// The service's name, for logs.
    fn name(&self) -> &str;

    /// Worker threads for this service; `None` uses the conf's `threads`.
    fn threads(&self) -> Option<usize> {
        None
    }

    /// Called while the service waits for the ones it depends on.
    fn on_startup_delay(&self, time_waited: Duration) {
        info!(
            service = self.name(),
            "still waiting for dependencies after {time_waited:?}"
        );
    }

    /// Bind what the service listens on, before any runtime starts, taking
    /// inherited sockets from `fds` during an upgrade. A failure stops the
    /// server's start-up with this error.
    ///
    /// # Errors
    ///
    /// None from the default. The crate's listening and UDP services fail
    /// as their sockets do: `BindError` if an address cannot be bound,
    /// `SocketError` if a socket cannot be made non-blocking.
    fn bind(&mut self, _fds: &ListenFds) -> Result<()> {
        Ok(())
    }

    /// Run with the server's context until `ctx.shutdown` turns true. The
    /// default marks the service ready and calls
    /// [`start_service`](Self::start_service).
    async fn run(&mut self, ctx: ServiceContext) {
        ctx.ready.notify_ready();
        self.start_service(Some(ctx.fds), ctx.shutdown, 1).await;
    }
}

/// A service that says itself when it is ready (Pingora's): the server
/// starts the services that depend on it only then. Every [`Service`] is
/// one.
#[async_trait]
pub trait ServiceWithDependents: Send + Sync {
    /// Run until `shutdown` turns true; call
    /// `ready_notifier.notify_ready()` once ready (or drop it).
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        listeners_per_fd: usize,
        ready_notifier: ServiceReadyNotifier,
    );

    /// The service's name, for logs.
    fn name(&self) -> &str;

    /// Worker threads for this service; `None` uses the conf's `threads`.
    fn threads(&self) -> Option<usize> {
        None
    }

    /// Called while the service waits for the ones it depends on.
    fn on_startup_delay(&self, time_waited: Duration) {
        info!(
            service = self.name(),
            "still waiting for dependencies after {time_waited:?}"
        );
    }

    /// See [`Service::bind`].
    ///
    /// # Errors
    ///
    /// None from the default; see [`Service::bind`].
    fn bind(&mut self, _fds: &ListenFds) -> Result<()> {
        Ok(())
    }

    /// See [`Service::run`]. The default calls
    /// [`start_service`](Self::start_service) with the context's notifier.
    async fn run(&mut self, ctx: ServiceContext) {
        self.start_service(Some(ctx.fds), ctx.shutdown, 1, ctx.ready)
            .await;
    }
}

#[async_trait]
impl<S: Service> ServiceWithDependents for S {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        listeners_per_fd: usize,
        ready_notifier: ServiceReadyNotifier,
    ) {
        ready_notifier.notify_ready();
        Service::start_service(self, fds, shutdown, listeners_per_fd).await
    }

    fn name(&self) -> &str {
        Service::name(self)
    }

    fn threads(&self) -> Option<usize> {
        Service::threads(self)
    }

    fn on_startup_delay(&self, time_waited: Duration) {
        Service::on_startup_delay(self, time_waited)
    }

    fn bind(&mut self, fds: &ListenFds) -> Result<()> {
        Service::bind(self, fds)
    }

    async fn run(&mut self, ctx: ServiceContext) {
        Service::run(self, ctx).await
    }
}

/// Pingora's `start_service` for the services of this crate: bind (if
/// not bound yet), then [`Service::run`] on the current runtime alone.
pub(crate) async fn start_here<S: Service + ?Sized>(
    svc: &mut S,
    fds: Option<ListenFds>,
    shutdown: ShutdownWatch,
) {
    let fds = fds.unwrap_or_default();
    if let Err(e) = svc.bind(&fds) {
        tracing::error!(service = svc.name(), "{e}");
        return;
    }
    let (ready, _) = watch::channel(false);
    let ctx = ServiceContext {
        shutdown,
        ready: ReadyNotifier(ready),
        runtimes: vec![Handle::current()],
        threads: 1,
        fds,
    };
    svc.run(ctx).await;
}

/// Start `svc` on the current runtime with `threads` workers, as the server
/// would, and wait until it is ready. Send `true` to stop it; the handle
/// gives the service back once it stopped.
#[cfg(test)]
pub(crate) async fn start_for_test<S: ServiceWithDependents + 'static>(
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
        fds: ListenFds::default(),
    };
    let task = tokio::spawn(async move {
        svc.run(ctx).await;
        svc
    });
    ready_rx
        .wait_for(|r| *r)
        .await
        .expect("the service got ready");
    (tx, task)
}
