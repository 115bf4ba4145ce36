//! Serves Prometheus metrics over HTTP, as Pingora's crate of this name:
//! every metric in the `prometheus` crate's default registry, which holds
//! the framework's own (see `pingora_core::metrics`) and any the program
//! registers, in the text format at `/metrics`. The app itself is
//! pingora-core's (`apps::prometheus_http_app`, Pingora 0.8's path); this
//! crate gives it the names Pingora's later versions use.
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
#![forbid(unsafe_code)]

use pingora_core::services::listening::Service;

pub use pingora_core::apps::prometheus_http_app::{
    new_prometheus_server, PrometheusHttpApp, PrometheusServer,
};

/// The `prometheus` crate the metrics live in, for the program's own:
/// registered in its default registry (e.g. with
/// `prometheus::register_int_counter!`), they are served too.
pub use prometheus;

/// A listening service serving the metrics (add a listener to it).
pub fn prometheus_http_service() -> Service<PrometheusServer> {
    Service::prometheus_http_service()
}
