//! Pingora 0.8's server entry points, as its documentation uses them:
//! services written against `Service` and `ServiceWithDependents`,
//! dependencies declared on handles, background services that say when
//! they are ready, and `Server::run` with a shutdown signal of the
//! program's own, which returns when the server stops.
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::{RunArgs, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::{Service, ServiceReadyNotifier, ServiceWithDependents};
use pingora_core::listeners::ListenFds;
use pingora_core::server::Server;
use pingora_test_support::poll_until;

type Log = Arc<Mutex<Vec<String>>>;

fn note(log: &Log, s: impl Into<String>) {
    log.lock().unwrap().push(s.into());
}

/// A plain Pingora service: runs until shutdown.
struct Plain(Log);

#[async_trait]
impl Service for Plain {
    async fn start_service(
        &mut self,
        #[cfg(unix)] _fds: Option<ListenFds>,
        mut shutdown: ShutdownWatch,
        _listeners_per_fd: usize,
    ) {
        note(&self.0, "plain started");
        let _ = shutdown.changed().await;
        note(&self.0, "plain stopped");
    }

    fn name(&self) -> &str {
        "plain"
    }

    fn threads(&self) -> Option<usize> {
        Some(1)
    }
}

/// A service that takes a while to be ready, and says so.
struct SlowReady(Log);

#[async_trait]
impl ServiceWithDependents for SlowReady {
    async fn start_service(
        &mut self,
        #[cfg(unix)] _fds: Option<ListenFds>,
        mut shutdown: ShutdownWatch,
        _listeners_per_fd: usize,
        ready_notifier: ServiceReadyNotifier,
    ) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        note(&self.0, "slow ready");
        ready_notifier.notify_ready();
        let _ = shutdown.changed().await;
    }

    fn name(&self) -> &str {
        "slow"
    }

    fn threads(&self) -> Option<usize> {
        Some(1)
    }
}

/// A background task that is ready once it has loaded something.
struct Loader(Log);

#[async_trait]
impl BackgroundService for Loader {
    async fn start_with_ready_notifier(
        &self,
        mut shutdown: ShutdownWatch,
        ready_notifier: ServiceReadyNotifier,
    ) {
        note(&self.0, "loader ready");
        ready_notifier.notify_ready();
        let _ = shutdown.changed().await;
    }
}

/// Shutdown signals from the test, not from Unix signals.
struct FromTest(tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<ShutdownSignal>>);

#[async_trait]
impl ShutdownSignalWatch for FromTest {
    async fn recv(&self) -> ShutdownSignal {
        match self.0.lock().await.recv().await {
            Some(s) => s,
            None => std::future::pending().await,
        }
    }
}

#[test]
fn services_start_in_dependency_order_and_run_returns() {
    let log = Log::default();
    let mut server = Server::new(None).unwrap();
    let slow = server.add_service(SlowReady(log.clone()));
    let loader = server.add_service(background_service("loader", Loader(log.clone())));
    let plain = server.add_service(Plain(log.clone()));
    // `plain` waits for both; `loader` for `slow`.
    plain.add_dependencies([&slow, &loader]);
    loader.add_dependency(&slow);
    // A cycle is refused (logged), not a deadlock.
    slow.add_dependency(&plain);
    assert_eq!(plain.name(), "plain");

    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let watch = FromTest(tokio::sync::Mutex::new(rx));
    let waiter = {
        let log = log.clone();
        std::thread::spawn(move || {
            // Stop once the last service is up; stop all the same if it
            // never is (`run` would wait for good), and fail after `run`
            // returns.
            let up = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                poll_until(Duration::from_secs(30), "the last service to start", || {
                    log.lock().unwrap().iter().any(|l| l == "plain started")
                })
            }));
            tx.send(ShutdownSignal::GracefulTerminate).unwrap();
            up
        })
    };
    server.run(RunArgs {
        shutdown_signal: Box::new(watch),
    });
    if let Err(panic) = waiter.join().unwrap() {
        std::panic::resume_unwind(panic);
    }
    let log = log.lock().unwrap().clone();
    assert_eq!(
        log,
        [
            "slow ready",
            "loader ready",
            "plain started",
            "plain stopped"
        ],
        "{log:?}"
    );
}
