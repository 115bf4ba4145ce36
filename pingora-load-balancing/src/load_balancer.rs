//! [`LoadBalancer`]: backends, their health, and a selection algorithm,
//! run as a background service that keeps discovery and health checks
//! going.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_error::Result;
use tracing::warn;

use crate::backends::Backends;
use crate::discovery::Static;
use crate::health_check::HealthCheck;
use crate::selection::{BackendIter, BackendSelection, UniqueIterator};
use crate::Backend;

/// Names the type; its state is not shown.
impl<S: BackendSelection> std::fmt::Debug for LoadBalancer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadBalancer").finish_non_exhaustive()
    }
}

/// Picks healthy backends with the algorithm `S`.
///
/// ```
/// use pingora_load_balancing::LoadBalancer;
/// use pingora_load_balancing::selection::RoundRobin;
///
/// let lb: LoadBalancer<RoundRobin> =
///     LoadBalancer::try_from_iter(["127.0.0.1:8001", "127.0.0.1:8002"]).unwrap();
/// let a = lb.select(b"", 8).unwrap();
/// let b = lb.select(b"", 8).unwrap();
/// assert_ne!(a.addr, b.addr);
/// ```
pub struct LoadBalancer<S: BackendSelection> {
    backends: Backends,
    selector: ArcSwap<S>,
    /// The selection's configuration, if one was given
    /// ([`from_backends_with_config`](Self::from_backends_with_config)).
    config: Option<S::Config>,
    /// How often to run the health check (none: never). The background
    /// service runs the first one as soon as it starts.
    pub health_check_frequency: Option<Duration>,
    /// How often to ask discovery again (none: only once, when the
    /// background service starts).
    pub update_frequency: Option<Duration>,
    /// Whether a health check round checks every backend at once (each in
    /// a task of its own) rather than one after another. Off by default,
    /// as in Pingora: turn it on when there are many backends or slow
    /// checks.
    pub parallel_health_check: bool,
}

impl<S> LoadBalancer<S>
where
    S: BackendSelection + 'static,
    S::Iter: BackendIter,
{
    /// A load balancer over `backends`, with its current set.
    pub fn from_backends(backends: Backends) -> Self {
        Self::from_backends_with_config(backends, None)
    }

    /// As [`from_backends`](Self::from_backends), the selection built with
    /// `config` (Pingora's `build_with_config`) when one is given.
    pub fn from_backends_with_config(backends: Backends, config: Option<S::Config>) -> Self {
        let selector = ArcSwap::new(Arc::new(Self::build(&backends, config.as_ref())));
        LoadBalancer {
            backends,
            selector,
            config,
            health_check_frequency: None,
            update_frequency: None,
            parallel_health_check: false,
        }
    }

    /// The selection for the backends' current set.
    fn build(backends: &Backends, config: Option<&S::Config>) -> S {
        match config {
            Some(c) => S::build_with_config(&backends.get().iter().cloned().collect(), c),
            None => S::build_sorted(&backends.get()),
        }
    }

    /// A load balancer over a static list of `host:port` addresses.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for the first address that is not a valid backend
    /// address (see [`Backend::new`]).
    pub fn try_from_iter<A: AsRef<str>, I: IntoIterator<Item = A>>(addrs: I) -> Result<Self> {
        let set = addrs
            .into_iter()
            .map(|a| Backend::new(a.as_ref()))
            .collect::<Result<BTreeSet<_>>>()?;
        let backends = Backends::new(Static::new(set.clone()));
        backends.replace(set);
        Ok(Self::from_backends(backends))
    }

    /// The backends and their health (to set checks, report results).
    pub fn backends(&self) -> &Backends {
        &self.backends
    }

    /// Check the backends' health with `hc` (run by the background
    /// service every `health_check_frequency`), as
    /// `backends_mut().set_health_check(hc)`.
    pub fn set_health_check(&mut self, hc: Box<dyn HealthCheck + Send + Sync + 'static>) {
        self.backends.set_health_check(hc);
    }

    /// The backends, to configure before the service starts.
    pub fn backends_mut(&mut self) -> &mut Backends {
        &mut self.backends
    }

    /// Ask discovery again, and rebuild the selection if the set changed.
    ///
    /// # Errors
    ///
    /// Whatever discovery returns (see [`Backends::update`]); the set and
    /// the selection stay as they were.
    pub async fn update(&self) -> Result<()> {
        if self.backends.update().await? {
            self.selector
                .store(Arc::new(Self::build(&self.backends, self.config.as_ref())));
        }
        Ok(())
    }

    /// The first ready backend among the first `max_iterations`
    /// candidates for `key`.
    pub fn select(&self, key: &[u8], max_iterations: usize) -> Option<Backend> {
        self.select_with(key, max_iterations, |_, ready| ready)
    }

    /// As [`select`](Self::select), with the caller deciding which
    /// candidate to accept (given whether it is ready), e.g. to skip one
    /// that just failed.
    pub fn select_with<F>(&self, key: &[u8], max_iterations: usize, accept: F) -> Option<Backend>
    where
        F: Fn(&Backend, bool) -> bool,
    {
        if S::WALKS {
            // The shipped algorithms: a walk on the current selection, no
            // `Arc` clone, no set of backends seen.
            let selector = self.selector.load();
            let state = selector.start(key);
            return (0..max_iterations)
                .map_while(|step| selector.candidate(state, step))
                .find(|b| accept(b, self.backends.ready(b)))
                .cloned();
        }
        // A selection of the user's, through Pingora's iterator: each
        // backend once.
        let selector = self.selector.load_full();
        let mut candidates = UniqueIterator::new(selector.iter(key), max_iterations);
        while let Some(b) = candidates.get_next() {
            if accept(&b, self.backends.ready(&b)) {
                return Some(b);
            }
        }
        None
    }

    /// A request to `b` started (for load-aware algorithms).
    pub fn on_start(&self, b: &Backend) {
        if S::TRACKS_LOAD {
            self.selector.load().on_start(b);
        }
    }

    /// A request to `b` ended after `latency`, well or not: feeds the
    /// load-aware algorithms and outlier ejection.
    pub fn on_done(&self, b: &Backend, latency: Duration, ok: bool) {
        if S::TRACKS_LOAD {
            self.selector.load().on_done(b, latency);
        }
        self.backends.report(b, ok);
    }
}

/// Runs discovery and a first health check at once, so a balancer whose
/// backends come from discovery (DNS, say) has them from the start; then
/// each on its own interval. Each tick also ends the outlier ejections
/// whose cooling period is over, reporting those backends back.
#[async_trait]
impl<S> BackgroundService for LoadBalancer<S>
where
    S: BackendSelection + Send + Sync + 'static,
    S::Iter: BackendIter,
    S::Config: Send + Sync,
{
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if let Err(e) = self.update().await {
            warn!("backend discovery failed: {e}");
        }
        if self.health_check_frequency.is_some() {
            self.backends
                .run_health_check(self.parallel_health_check)
                .await;
        }
        let now = Instant::now();
        let mut next_update = self.update_frequency.map(|every| now + every);
        let mut next_check = self.health_check_frequency.map(|every| now + every);
        loop {
            let Some(wake) = next_update.into_iter().chain(next_check).min() else {
                return;
            };
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => return,
                _ = pingora_timeout::sleep(wake.saturating_duration_since(Instant::now())) => {}
            }
            if let (Some(at), Some(every)) = (next_update, self.update_frequency) {
                if Instant::now() >= at {
                    if let Err(e) = self.update().await {
                        warn!("backend discovery failed: {e}");
                    }
                    next_update = Some(Instant::now() + every);
                }
            }
            if let (Some(at), Some(every)) = (next_check, self.health_check_frequency) {
                if Instant::now() >= at {
                    self.backends
                        .run_health_check(self.parallel_health_check)
                        .await;
                    next_check = Some(Instant::now() + every);
                }
            }
            self.backends.end_ejections();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selection::{LeastConnection, RoundRobin};

    /// A load-tracking algorithm still hears of each request through the
    /// balancer (the others skip the selection read for it).
    #[test]
    fn requests_in_flight_reach_a_load_tracking_algorithm() {
        const { assert!(LeastConnection::TRACKS_LOAD && !RoundRobin::TRACKS_LOAD) };
        let lb: LoadBalancer<LeastConnection> =
            LoadBalancer::try_from_iter(["127.0.0.1:1", "127.0.0.1:2"]).unwrap();
        let busy = lb.select(b"", 8).unwrap();
        for _ in 0..3 {
            lb.on_start(&busy);
        }
        // The other one has none in flight: it is chosen, every time.
        let other = lb.select(b"", 8).unwrap();
        assert_ne!(other, busy);
        for _ in 0..4 {
            assert_eq!(lb.select(b"", 8).unwrap(), other);
        }
        for _ in 0..3 {
            lb.on_done(&busy, Duration::from_millis(1), true);
        }
        lb.on_start(&other);
        // Now `busy` is the idle one.
        assert_eq!(lb.select(b"", 8).unwrap(), busy);
    }
}
