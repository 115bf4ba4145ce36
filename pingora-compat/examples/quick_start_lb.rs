//! The shape of Pingora's quick-start load balancer: a round-robin proxy
//! over two origins with a TCP health check, written with
//! `pingora::prelude::*` alone. Compiled by CI; run it by hand with
//! `cargo run -p pingora-compat --example quick_start_lb` (it proxies
//! 127.0.0.1:6188 to two local ports, which need servers of their own).
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::prelude::*;

/// The proxy: picks the next healthy origin for each request.
struct Lb(Arc<LoadBalancer<RoundRobin>>);

#[async_trait]
impl ProxyHttp for Lb {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let upstream = self
            .0
            .select(b"", 256)
            .ok_or_else(|| Error::explain(ConnectNoRoute, "no healthy origin"))?;
        // A backend is an address: `HttpPeer::new` takes it as it is.
        let peer = Box::new(HttpPeer::new(upstream, false, String::new()));
        Ok(peer)
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        _ctx: &mut Self::CTX,
    ) -> Result<()> {
        upstream_request.insert_header("Host", "origin.example")?;
        Ok(())
    }
}

fn main() {
    let mut my_server = Server::new(None).unwrap();
    my_server.bootstrap();

    let mut upstreams = LoadBalancer::try_from_iter(["127.0.0.1:8081", "127.0.0.1:8082"]).unwrap();
    let hc = TcpHealthCheck::new();
    upstreams.set_health_check(hc);
    upstreams.health_check_frequency = Some(Duration::from_secs(1));

    let background = background_service("health check", upstreams);
    let upstreams = background.task();

    let mut lb = http_proxy_service(&my_server.configuration, Lb(upstreams));
    lb.add_tcp("127.0.0.1:6188");

    my_server.add_service(background);
    my_server.add_service(lb);
    my_server.run_forever();
}
