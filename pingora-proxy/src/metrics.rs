//! The proxy's Prometheus metrics (in the default registry, served by
//! the `pingora-prometheus` crate's `prometheus_http_service`).

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{
    register_histogram_vec, register_int_counter, register_int_counter_vec, Histogram,
    HistogramVec, IntCounter, IntCounterVec,
};

/// Names the type; its state is not shown.
impl std::fmt::Debug for ProxyMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyMetrics").finish_non_exhaustive()
    }
}

/// The proxy's metrics.
pub struct ProxyMetrics {
    /// `pingora_http_requests_total{protocol, status_class}`, with handles
    /// resolved up front for the hot path: `[protocol][class]`, protocol
    /// 0 = HTTP/1, 1 = HTTP/2; class 0..5 = 1xx..5xx.
    requests: [[IntCounter; 5]; 2],
    /// `pingora_http_request_duration_seconds{protocol}`.
    duration: [Histogram; 2],
    /// `pingora_proxy_retries_total`.
    pub retries: IntCounter,
    /// `pingora_upstream_errors_total{kind}`: errors from upstreams while
    /// proxying (connect errors included).
    pub upstream_errors: IntCounterVec,
    /// `pingora_cache_requests_total{status}`: requests with a cache
    /// enabled, by how the cache took part (`CacheStatus::as_str`).
    pub cache: IntCounterVec,
}

const PROTOCOLS: [&str; 2] = ["http1", "http2"];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

static PROXY: LazyLock<ProxyMetrics> = LazyLock::new(|| {
    let requests = register_int_counter_vec!(
        "pingora_http_requests_total",
        "Requests answered by the proxy, by protocol and status class",
        &["protocol", "status_class"]
    )
    .expect("registering a built-in metric");
    let duration = register_histogram_vec!(
        "pingora_http_request_duration_seconds",
        "Time from the request header to the end of the response",
        &["protocol"],
        vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
    )
    .expect("registering a built-in metric");
    let by = |p: &str| CLASSES.map(|c| requests.with_label_values(&[p, c]));
    let hist = |d: &HistogramVec, p: &str| d.with_label_values(&[p]);
    ProxyMetrics {
        requests: PROTOCOLS.map(by),
        duration: PROTOCOLS.map(|p| hist(&duration, p)),
        retries: register_int_counter!("pingora_proxy_retries_total", "Requests retried")
            .expect("registering a built-in metric"),
        upstream_errors: register_int_counter_vec!(
            "pingora_upstream_errors_total",
            "Upstream errors while proxying, by error kind",
            &["kind"]
        )
        .expect("registering a built-in metric"),
        cache: register_int_counter_vec!(
            "pingora_cache_requests_total",
            "Requests with a cache enabled, by cache status",
            &["status"]
        )
        .expect("registering a built-in metric"),
    }
});

/// The proxy's metrics (registered on first use).
pub fn proxy() -> &'static ProxyMetrics {
    &PROXY
}

impl ProxyMetrics {
    /// Count a request's cache status.
    pub fn cache_status(&self, status: pingora_cache::CacheStatus) {
        self.cache.with_label_values(&[status.as_str()]).inc();
    }

    /// Count one finished request.
    pub fn request_done(&self, http2: bool, status: u16, took: Duration) {
        let p = usize::from(http2);
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.requests[p][class].inc();
        self.duration[p].observe(took.as_secs_f64());
    }
}
