//! Where shutdown signals come from: [`ShutdownSignalWatch`], the Unix
//! signals by default, and [`RunArgs`] to choose another source.

use tokio::signal::unix::{signal, SignalKind};

/// What a shutdown signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownSignal {
    /// Hand the listening sockets to a new process, then shut down
    /// gracefully (SIGQUIT).
    GracefulUpgrade,
    /// Stop accepting and finish in-flight work (SIGTERM).
    GracefulTerminate,
    /// Exit now (SIGINT).
    FastShutdown,
}

/// Where a server's shutdown signals come from (as Pingora's): the Unix
/// signals by default ([`UnixShutdownSignalWatch`]), or a source of the
/// user's, through [`RunArgs`].
#[async_trait::async_trait]
pub trait ShutdownSignalWatch: Send + Sync {
    /// The next signal.
    async fn recv(&self) -> ShutdownSignal;
}

/// Names the type; its state is not shown.
impl std::fmt::Debug for UnixShutdownSignalWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnixShutdownSignalWatch")
            .finish_non_exhaustive()
    }
}

/// SIGQUIT, SIGTERM and SIGINT, as [`ShutdownSignal`]s. The handlers are
/// installed on the first call to `recv` (which [`Server::run`](super::Server::run) makes
/// before any service starts).
#[derive(Default)]
pub struct UnixShutdownSignalWatch {
    signals: tokio::sync::Mutex<Option<[tokio::signal::unix::Signal; 3]>>,
}

#[async_trait::async_trait]
impl ShutdownSignalWatch for UnixShutdownSignalWatch {
    async fn recv(&self) -> ShutdownSignal {
        let mut guard = self.signals.lock().await;
        if guard.is_none() {
            let install = |k| signal(k).expect("installing a signal handler");
            *guard = Some([
                install(SignalKind::quit()),
                install(SignalKind::terminate()),
                install(SignalKind::interrupt()),
            ]);
        }
        let [quit, term, int] = guard.as_mut().expect("installed above");
        tokio::select! {
            _ = quit.recv() => ShutdownSignal::GracefulUpgrade,
            _ = term.recv() => ShutdownSignal::GracefulTerminate,
            _ = int.recv() => ShutdownSignal::FastShutdown,
        }
    }
}

/// Names the type; its state is not shown.
impl std::fmt::Debug for RunArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunArgs").finish_non_exhaustive()
    }
}

/// How [`Server::run`](super::Server::run) runs (as Pingora's).
pub struct RunArgs {
    /// Where shutdown signals come from.
    pub shutdown_signal: Box<dyn ShutdownSignalWatch>,
}

impl Default for RunArgs {
    fn default() -> Self {
        RunArgs {
            shutdown_signal: Box::new(UnixShutdownSignalWatch::default()),
        }
    }
}
