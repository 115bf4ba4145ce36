//! The built-in Prometheus metrics, in the `prometheus` crate's default
//! registry (so that a user's own metrics appear beside them).
//!
//! Every layer counts what operators need: this module has the server's
//! and the connectors' metrics; `pingora-proxy` adds requests, durations,
//! retries and upstream errors, `pingora-load-balancing` the health of each
//! backend. The `pingora-prometheus` crate serves them all over HTTP (as
//! Pingora's does); any other exporter gathers the default registry after
//! [`refresh_gauges`]:
//!
//! ```
//! use pingora_core::metrics::{core, prometheus, refresh_gauges};
//!
//! core().pool_hits.inc();
//! refresh_gauges();
//! let families = prometheus::gather();
//! assert!(families.iter().any(|f| f.name() == "pingora_upstream_pool_hits_total"));
//! ```

use std::sync::{Arc, LazyLock, Mutex, Weak};

/// The `prometheus` crate these metrics are registered with, for a
/// program's own metrics: registered in its default registry (e.g. with
/// `prometheus::register_int_counter!`), they are served beside ours.
pub use prometheus;

use prometheus::{
    register_histogram, register_int_counter, register_int_counter_vec, register_int_gauge,
    register_int_gauge_vec, Histogram, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
};

/// Names the type; its state is not shown.
impl std::fmt::Debug for CoreMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreMetrics").finish_non_exhaustive()
    }
}

/// The server's and the connectors' metrics.
pub struct CoreMetrics {
    /// `pingora_downstream_connections_accepted_total{service}`.
    pub accepted: IntCounterVec,
    /// `pingora_downstream_connections_open{service}`.
    pub open: IntGaugeVec,
    /// `pingora_downstream_connections_parked{service}`: idle keep-alive
    /// connections parked out of their tasks (a part of `open`).
    pub parked: IntGaugeVec,
    /// `pingora_tls_handshakes_total`: completed server-side handshakes.
    pub tls_handshakes: IntCounter,
    /// `pingora_tls_handshake_failures_total`.
    pub tls_handshake_failures: IntCounter,
    /// `pingora_upstream_pool_hits_total`: upstream connections reused
    /// (from the pool, or a shared HTTP/2 connection).
    pub pool_hits: IntCounter,
    /// `pingora_upstream_pool_misses_total`: new upstream connections.
    pub pool_misses: IntCounter,
    /// `pingora_upstream_pool_idle_connections`.
    pub pool_idle: IntGauge,
    /// `pingora_upstream_connect_seconds`: connect (and TLS) time of new
    /// upstream connections.
    pub connect_seconds: Histogram,
    /// `pingora_upstream_connect_errors_total{kind}`.
    pub connect_errors: IntCounterVec,
    /// `pingora_graceful_upgrade_events_total{event}`: `sent` (sockets
    /// handed to a new process) and `received` (taken from an old one).
    pub upgrades: IntCounterVec,
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Registration fails only for a duplicate or malformed name: a bug in
    // this file, found by the tests.
    r.expect("registering a built-in metric")
}

static CORE: LazyLock<CoreMetrics> = LazyLock::new(|| CoreMetrics {
    accepted: must(register_int_counter_vec!(
        "pingora_downstream_connections_accepted_total",
        "Downstream connections accepted",
        &["service"]
    )),
    open: must(register_int_gauge_vec!(
        "pingora_downstream_connections_open",
        "Downstream connections open now",
        &["service"]
    )),
    parked: must(register_int_gauge_vec!(
        "pingora_downstream_connections_parked",
        "Idle keep-alive connections parked out of their tasks",
        &["service"]
    )),
    tls_handshakes: must(register_int_counter!(
        "pingora_tls_handshakes_total",
        "Server-side TLS handshakes completed"
    )),
    tls_handshake_failures: must(register_int_counter!(
        "pingora_tls_handshake_failures_total",
        "Server-side TLS handshakes that failed"
    )),
    pool_hits: must(register_int_counter!(
        "pingora_upstream_pool_hits_total",
        "Upstream requests that reused a pooled connection"
    )),
    pool_misses: must(register_int_counter!(
        "pingora_upstream_pool_misses_total",
        "Upstream requests that needed a new connection"
    )),
    pool_idle: must(register_int_gauge!(
        "pingora_upstream_pool_idle_connections",
        "Idle upstream connections in the pool"
    )),
    connect_seconds: must(register_histogram!(
        "pingora_upstream_connect_seconds",
        "Time to connect to an upstream (TCP and TLS)",
        vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]
    )),
    connect_errors: must(register_int_counter_vec!(
        "pingora_upstream_connect_errors_total",
        "Upstream connections that failed, by error kind",
        &["kind"]
    )),
    upgrades: must(register_int_counter_vec!(
        "pingora_graceful_upgrade_events_total",
        "Listening sockets handed over (sent) or taken over (received)",
        &["event"]
    )),
});

/// The upstream pools, summed into `pingora_upstream_pool_idle_connections`
/// when the metrics are read.
static POOLS: Mutex<Vec<Weak<pingora_pool::ConnectionPool<crate::protocols::Stream>>>> =
    Mutex::new(Vec::new());

/// Count `pool`'s idle connections in the metrics (for as long as it lives).
pub(crate) fn watch_pool(
    pool: Arc<pingora_pool::ConnectionPool<crate::protocols::Stream>>,
) -> Arc<pingora_pool::ConnectionPool<crate::protocols::Stream>> {
    let mut pools = POOLS.lock().unwrap_or_else(|p| p.into_inner());
    pools.retain(|p| p.strong_count() > 0);
    pools.push(Arc::downgrade(&pool));
    pool
}

/// Bring the gauges that are read rather than counted (the pool's idle
/// connections) up to date; an exporter calls it before gathering.
pub fn refresh_gauges() {
    let pools = POOLS.lock().unwrap_or_else(|p| p.into_inner());
    let idle: usize = pools
        .iter()
        .filter_map(Weak::upgrade)
        .map(|p| p.stats().idle)
        .sum();
    core().pool_idle.set(idle as i64);
}

/// The core metrics (registered on first use).
pub fn core() -> &'static CoreMetrics {
    &CORE
}
