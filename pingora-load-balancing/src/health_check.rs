//! Active health checks: TCP connect, or an HTTP request with an expected
//! status and an optional validator. Each has consecutive success and
//! failure thresholds; the load balancer runs them on an interval, all
//! backends in parallel.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::connectors::http::Connector;
use pingora_core::connectors::l4;
use pingora_core::upstreams::peer::{HttpPeer, PeerOptions};
use pingora_error::{Error, ErrorType::*, Result};
use pingora_http::{RequestHeader, ResponseHeader};

use crate::Backend;

/// A check of one backend.
#[async_trait]
pub trait HealthCheck: Send + Sync + 'static {
    /// `Ok` if `target` is healthy now.
    async fn check(&self, target: &Backend) -> Result<()>;

    /// Consecutive results needed to change state: successes to become
    /// healthy (`true`), failures to become unhealthy (`false`).
    fn health_threshold(&self, success: bool) -> usize;

    /// Called when `target` turns healthy or unhealthy.
    async fn health_status_change(&self, _target: &Backend, _healthy: bool) {}

    /// How `target` is named in the logs.
    fn backend_summary(&self, target: &Backend) -> String {
        format!("{target:?}")
    }
}

/// Told when a check turns a backend healthy or unhealthy (Pingora's; set
/// as a check's `health_changed_callback`). The load balancer's own
/// observer, which also hears of ejections, is
/// [`Backends::set_health_observer`](crate::Backends::set_health_observer).
#[async_trait]
pub trait HealthObserve {
    /// `target` became healthy (`true`) or unhealthy (`false`).
    async fn observe(&self, target: &Backend, healthy: bool);
}

/// A boxed [`HealthObserve`], as the checks hold it.
pub type HealthObserveCallback = Box<dyn HealthObserve + Send + Sync>;

/// Names the type; its state is not shown.
impl std::fmt::Debug for TcpHealthCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpHealthCheck").finish_non_exhaustive()
    }
}

/// Healthy when a TCP (or Unix) connect succeeds in time.
pub struct TcpHealthCheck {
    /// Successes in a row to become healthy (default 1).
    pub consecutive_success: usize,
    /// Failures in a row to become unhealthy (default 1).
    pub consecutive_failure: usize,
    /// Connect timeout (default 1 s).
    pub timeout: Duration,
    /// Told of each change of health this check finds.
    pub health_changed_callback: Option<HealthObserveCallback>,
}

impl Default for TcpHealthCheck {
    fn default() -> Self {
        TcpHealthCheck {
            consecutive_success: 1,
            consecutive_failure: 1,
            timeout: Duration::from_secs(1),
            health_changed_callback: None,
        }
    }
}

impl TcpHealthCheck {
    /// The default check, boxed for a load balancer.
    pub fn new() -> Box<Self> {
        Box::default()
    }
}

#[async_trait]
impl HealthCheck for TcpHealthCheck {
    async fn check(&self, target: &Backend) -> Result<()> {
        let opts = PeerOptions {
            connection_timeout: Some(self.timeout),
            ..Default::default()
        };
        l4::connect(&target.addr, &opts).await.map(|_| ())
    }

    fn health_threshold(&self, success: bool) -> usize {
        if success {
            self.consecutive_success
        } else {
            self.consecutive_failure
        }
    }

    async fn health_status_change(&self, target: &Backend, healthy: bool) {
        if let Some(cb) = &self.health_changed_callback {
            cb.observe(target, healthy).await;
        }
    }
}

/// Decides whether a response header means healthy (Pingora's).
pub type Validator = Box<dyn Fn(&ResponseHeader) -> Result<()> + Send + Sync>;

/// Decides whether a response header and body mean healthy.
pub type BodyValidator = Box<dyn Fn(&ResponseHeader, &[u8]) -> Result<()> + Send + Sync>;

/// Names the type; its state is not shown.
impl std::fmt::Debug for HttpHealthCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpHealthCheck").finish_non_exhaustive()
    }
}

/// Healthy when an HTTP request gets the expected status (and passes the
/// validator, if any). Over TLS when `tls` is set.
pub struct HttpHealthCheck {
    /// Successes in a row to become healthy (default 1).
    pub consecutive_success: usize,
    /// Failures in a row to become unhealthy (default 1).
    pub consecutive_failure: usize,
    /// The request sent (default `GET /` with the given Host).
    pub req: RequestHeader,
    /// The status that means healthy (default 200).
    pub expected_status: u16,
    /// Extra check of the response header (as Pingora's).
    pub validator: Option<Validator>,
    /// Extra check of the response header and body (read up to 64 KiB).
    pub body_validator: Option<BodyValidator>,
    /// Speak TLS, with this SNI.
    pub tls: Option<String>,
    /// Check this port instead of the backend's.
    pub port_override: Option<u16>,
    /// Keep the connection for the next check (default false: a new
    /// connection each time, which also checks that connecting works).
    pub reuse_connection: bool,
    /// Peer options: timeouts, CA, verification.
    pub options: PeerOptions,
    /// Told of each change of health this check finds.
    pub health_changed_callback: Option<HealthObserveCallback>,
    connector: Arc<Connector>,
}

impl HttpHealthCheck {
    /// `GET /` with `Host: host`, expecting 200; TLS if `tls` (with `host`
    /// as the SNI). Panics if `host` is not a valid header value (as
    /// Pingora's); [`try_new`](Self::try_new) returns an error instead.
    ///
    /// # Panics
    ///
    /// If `host` is not a valid header value: anything but visible ASCII,
    /// spaces and tabs.
    pub fn new(host: &str, tls: bool) -> Self {
        match Self::try_new(host, tls) {
            Ok(hc) => hc,
            Err(e) => panic!("HttpHealthCheck::new({host:?}): {e}"),
        }
    }

    /// [`new`](Self::new), failing on an invalid `host`.
    ///
    /// # Errors
    ///
    /// `InvalidHTTPHeader` if `host` is not a valid header value.
    pub fn try_new(host: &str, tls: bool) -> Result<Self> {
        let mut req = RequestHeader::build("GET", b"/", None)?;
        req.insert_header("Host", host)?;
        req.insert_header("User-Agent", "pingora-health-check")?;
        let options = PeerOptions {
            connection_timeout: Some(Duration::from_secs(1)),
            total_connection_timeout: Some(Duration::from_secs(2)),
            read_timeout: Some(Duration::from_secs(2)),
            write_timeout: Some(Duration::from_secs(2)),
            ..Default::default()
        };
        Ok(HttpHealthCheck {
            consecutive_success: 1,
            consecutive_failure: 1,
            req,
            expected_status: 200,
            validator: None,
            body_validator: None,
            tls: tls.then(|| host.to_string()),
            port_override: None,
            reuse_connection: false,
            options,
            health_changed_callback: None,
            connector: Arc::new(Connector::new(None)),
        })
    }
}

#[async_trait]
impl HealthCheck for HttpHealthCheck {
    async fn check(&self, target: &Backend) -> Result<()> {
        let mut addr = target.addr.clone();
        if let (Some(port), pingora_core::protocols::SocketAddr::Inet(a)) =
            (self.port_override, &mut addr)
        {
            a.set_port(port);
        }
        let mut peer = HttpPeer::new_from_sockaddr(
            addr,
            self.tls.is_some(),
            self.tls.clone().unwrap_or_default(),
        );
        peer.options = self.options.clone();
        let (mut s, _) = self.connector.get_http_session(&peer).await?;
        s.write_request_header_eos(Box::new(self.req.clone()), true)
            .await?;
        s.read_response().await?;
        let mut body = Vec::new();
        while let Some(chunk) = s.read_body_bytes().await? {
            if body.len() < 64 * 1024 {
                body.extend_from_slice(&chunk);
            }
        }
        let resp = s
            .resp_header()
            .cloned()
            .ok_or_else(|| Error::explain(H1Error, "no response"))?;
        if self.reuse_connection {
            self.connector.release(s, &peer);
        }
        if resp.status.as_u16() != self.expected_status {
            return Error::e_explain(
                HTTPStatus(resp.status.as_u16()),
                format!(
                    "health check got {} instead of {}",
                    resp.status.as_u16(),
                    self.expected_status
                ),
            );
        }
        if let Some(v) = &self.validator {
            v(&resp)?;
        }
        match &self.body_validator {
            Some(v) => v(&resp, &body),
            None => Ok(()),
        }
    }

    fn health_threshold(&self, success: bool) -> usize {
        if success {
            self.consecutive_success
        } else {
            self.consecutive_failure
        }
    }

    async fn health_status_change(&self, target: &Backend, healthy: bool) {
        if let Some(cb) = &self.health_changed_callback {
            cb.observe(target, healthy).await;
        }
    }
}
