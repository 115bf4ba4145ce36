//! Background services: a task of the user's that runs beside the
//! listening services until shutdown (health checks, discovery, cache
//! refreshes, ...).

use std::sync::Arc;

use async_trait::async_trait;

use super::{Service, ServiceContext};
use crate::server::ShutdownWatch;

/// A task that runs until shutdown.
#[async_trait]
pub trait BackgroundService: Send + Sync + 'static {
    /// Run; return soon after `shutdown` turns true.
    async fn start(&self, shutdown: ShutdownWatch);
}

/// Runs a [`BackgroundService`] as a server [`Service`].
pub struct GenBackgroundService<A> {
    name: String,
    task: Arc<A>,
    /// Worker threads; `None` uses the conf's `threads`.
    pub threads: Option<usize>,
}

impl<A> GenBackgroundService<A> {
    /// Wrap `task` under `name`.
    pub fn new(name: String, task: Arc<A>) -> Self {
        GenBackgroundService {
            name,
            task,
            threads: None,
        }
    }

    /// The task, to share with other services (a load balancer the proxy
    /// reads, for example).
    pub fn task(&self) -> Arc<A> {
        self.task.clone()
    }
}

/// Wrap `task` as a service named `name`.
pub fn background_service<A: BackgroundService>(name: &str, task: A) -> GenBackgroundService<A> {
    GenBackgroundService::new(name.to_string(), Arc::new(task))
}

#[async_trait]
impl<A: BackgroundService> Service for GenBackgroundService<A> {
    async fn start_service(&mut self, ctx: ServiceContext) {
        // A background task is ready as soon as it runs.
        ctx.ready.notify_ready();
        self.task.start(ctx.shutdown).await;
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn threads(&self) -> Option<usize> {
        self.threads
    }
}
