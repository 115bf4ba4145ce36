//! The Prometheus exporter as an app (Pingora 0.8's path): every metric in
//! the `prometheus` crate's default registry, which holds the framework's
//! own (see [`metrics`](crate::metrics)) and any the program registers, in
//! the text format at `/metrics`. The `pingora-prometheus` crate gives the
//! same under the names Pingora's later versions use.
//!
//! ```
//! use pingora_core::services::listening::Service;
//!
//! let mut metrics = Service::prometheus_http_service();
//! metrics.add_tcp("127.0.0.1:6150");
//! // server.add_service(metrics);
//! ```

use async_trait::async_trait;
use prometheus::{Encoder, TextEncoder};

use crate::apps::http_app::{HttpServer, ServeHttp};
use crate::protocols::http::ServerSession;

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
        crate::metrics::refresh_gauges();
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

/// A new [`PrometheusServer`]. (Pingora 0.8's `PrometheusServer::new()`
/// is taken here by `HttpServer::new(app)`, which every `HttpServer` has.)
pub fn new_prometheus_server() -> PrometheusServer {
    HttpServer::new(PrometheusHttpApp)
}
