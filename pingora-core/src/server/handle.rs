//! [`ServiceHandle`]: a service added to a server, to declare what it
//! depends on.

use std::sync::Arc;

use tokio::sync::watch;
use tracing::error;

/// Each service's dependencies, by the service's index.
pub(super) type Dependencies = Arc<std::sync::Mutex<Vec<Vec<ServiceHandle>>>>;

/// A service added to a server: use it to declare dependencies.
#[derive(Debug, Clone)]
pub struct ServiceHandle {
    pub(super) id: usize,
    pub(super) name: String,
    pub(super) ready: watch::Receiver<bool>,
    pub(super) deps: std::sync::Weak<std::sync::Mutex<Vec<Vec<ServiceHandle>>>>,
}

impl ServiceHandle {
    /// The service's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the service is ready (listening, or started).
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Start this service only once `dependency` is ready (as Pingora's).
    /// A dependency on itself, or one that would close a cycle, is refused
    /// with an error in the log (the services would never start).
    pub fn add_dependency(&self, dependency: impl std::borrow::Borrow<ServiceHandle>) {
        let dependency = dependency.borrow();
        let Some(deps) = self.deps.upgrade() else {
            error!(
                "service {}: the server is gone; dependency ignored",
                self.name
            );
            return;
        };
        let mut deps = deps.lock().unwrap_or_else(|p| p.into_inner());
        // Would `dependency` (transitively) wait for this service?
        let mut todo = vec![dependency.id];
        let mut seen = vec![false; deps.len()];
        while let Some(i) = todo.pop() {
            if i == self.id {
                error!(
                    "service {} cannot depend on {}: that would be a cycle; ignored",
                    self.name, dependency.name
                );
                return;
            }
            if i < seen.len() && !std::mem::replace(&mut seen[i], true) {
                todo.extend(deps[i].iter().map(|d| d.id));
            }
        }
        if let Some(mine) = deps.get_mut(self.id) {
            mine.push(dependency.clone());
        }
    }

    /// [`add_dependency`](Self::add_dependency) for each of `dependencies`.
    pub fn add_dependencies<D: std::borrow::Borrow<ServiceHandle>>(
        &self,
        dependencies: impl IntoIterator<Item = D>,
    ) {
        for d in dependencies {
            self.add_dependency(d);
        }
    }
}
