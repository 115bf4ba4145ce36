//! Background services: a task of the user's that runs beside the
//! listening services until shutdown (health checks, discovery, cache
//! refreshes, ...).

use std::sync::Arc;

use async_trait::async_trait;

use super::{Service, ServiceContext, ServiceReadyNotifier};
use crate::shutdown::ShutdownWatch;

/// A task that runs until shutdown.
#[async_trait]
pub trait BackgroundService: Send + Sync + 'static {
    /// Run, saying when ready (services that depend on this one start
    /// then); return soon after `shutdown` turns true. The default says
    /// ready at once and runs [`start`](Self::start).
    async fn start_with_ready_notifier(
        &self,
        shutdown: ShutdownWatch,
        ready_notifier: ServiceReadyNotifier,
    ) {
        ready_notifier.notify_ready();
        self.start(shutdown).await
    }

    /// Run; return soon after `shutdown` turns true. The default returns
    /// at once.
    async fn start(&self, _shutdown: ShutdownWatch) {}
}

/// Names the type; its state is not shown.
impl<A> std::fmt::Debug for GenBackgroundService<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenBackgroundService")
            .finish_non_exhaustive()
    }
}

/// Runs a [`BackgroundService`] as a server [`Service`].
pub struct GenBackgroundService<A> {
    name: String,
    task: Arc<A>,
    /// Worker threads; `None` uses the conf's `threads`. Default 1 (as
    /// Pingora's): a background task rarely needs more.
    pub threads: Option<usize>,
}

impl<A> GenBackgroundService<A> {
    /// Wrap `task` under `name`.
    pub fn new(name: String, task: Arc<A>) -> Self {
        GenBackgroundService {
            name,
            task,
            threads: Some(1),
        }
    }

    /// The task, to share with other services (a load balancer the proxy
    /// reads, for example).
    pub fn task(&self) -> Arc<A> {
        self.task.clone()
    }
}

/// Wrap `task` as a service named `name`.
pub fn background_service<A>(name: &str, task: A) -> GenBackgroundService<A> {
    GenBackgroundService::new(name.to_string(), Arc::new(task))
}

#[async_trait]
impl<A: BackgroundService> Service for GenBackgroundService<A> {
    async fn run(&mut self, ctx: ServiceContext) {
        self.task
            .start_with_ready_notifier(ctx.shutdown, ctx.ready)
            .await;
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn threads(&self) -> Option<usize> {
        self.threads
    }
}
