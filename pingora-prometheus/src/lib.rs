//! Serves Prometheus metrics over HTTP, as Pingora's crate of this name:
//! every metric in the `prometheus` crate's default registry, which holds
//! the framework's own (see `pingora_core::metrics`) and any the program
//! registers, in the text format at `/metrics`.
//!
//! ```
//! use pingora_prometheus::prometheus::{register_int_counter, IntCounter};
//!
//! // A metric of the program's own, served beside the built-in ones.
//! let orders: IntCounter =
//!     register_int_counter!("shop_orders_total", "Orders taken").unwrap();
//! orders.inc();
//!
//! let mut metrics = pingora_prometheus::prometheus_http_service();
//! metrics.add_tcp("127.0.0.1:6150");
//! // server.add_service(metrics);
//! ```
#![warn(missing_docs)]

use async_trait::async_trait;
use pingora_core::apps::http_app::{HttpServer, ServeHttp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::services::listening::Service;

/// The `prometheus` crate the metrics live in, for the program's own:
/// registered in its default registry (e.g. with
/// `prometheus::register_int_counter!`), they are served too.
pub use prometheus;

use prometheus::{Encoder, TextEncoder};

/// The app: the default registry's metrics at `/metrics` (any other path:
/// 404).
#[derive(Debug, Default, Clone, Copy)]
pub struct PrometheusHttpApp;

#[async_trait]
impl ServeHttp for PrometheusHttpApp {
    async fn response(&self, session: &mut ServerSession) -> http::Response<Vec<u8>> {
        if session.req_header().uri.path() != "/metrics" {
            let mut r = http::Response::new(b"not found; metrics are at /metrics\n".to_vec());
            *r.status_mut() = http::StatusCode::NOT_FOUND;
            return r;
        }
        pingora_core::metrics::refresh_gauges();
        let mut body = Vec::with_capacity(16 * 1024);
        if let Err(e) = TextEncoder::new().encode(&prometheus::gather(), &mut body) {
            let mut r = http::Response::new(format!("encoding metrics: {e}\n").into_bytes());
            *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
            return r;
        }
        let mut r = http::Response::new(body);
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; version=0.0.4"),
        );
        r
    }
}

/// The app as an HTTP server, ready for a listening service.
pub type PrometheusServer = HttpServer<PrometheusHttpApp>;

/// A new [`PrometheusServer`].
pub fn new_prometheus_server() -> PrometheusServer {
    HttpServer::new(PrometheusHttpApp)
}

/// A listening service serving the metrics (add a listener to it).
pub fn prometheus_http_service() -> Service<PrometheusServer> {
    Service::new(
        "Prometheus metric exporter".to_string(),
        new_prometheus_server(),
    )
}
