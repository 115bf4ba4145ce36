//! The shape of Pingora's gRPC-web example: the `GrpcWeb` module added to
//! the service, turned on per request in `early_request_filter`, and an
//! HTTP/2 upstream that speaks gRPC. Compiled by CI; run it by hand with
//! `cargo run -p pingora-compat --example grpc_web_bridge` (it bridges
//! 127.0.0.1:6194 to a gRPC server on 127.0.0.1:50051).
use async_trait::async_trait;
use pingora_core::modules::http::grpc_web::{GrpcWeb, GrpcWebBridge};
use pingora_core::modules::http::HttpModules;
use pingora_core::prelude::Opt;
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::Result;
use pingora_proxy::{ProxyHttp, Session};

/// Bridges browsers' gRPC-web calls to one gRPC server.
struct Bridge;

#[async_trait]
impl ProxyHttp for Bridge {
    type CTX = ();
    fn new_ctx(&self) -> Self::CTX {}

    fn init_downstream_modules(&self, modules: &mut HttpModules) {
        modules.add_module(Box::new(GrpcWeb));
    }

    async fn early_request_filter(&self, session: &mut Session, _ctx: &mut ()) -> Result<()> {
        // The module does nothing for a request until it is initialised.
        session
            .downstream_modules_ctx
            .get_mut::<GrpcWebBridge>()
            .expect("the module was added")
            .init();
        Ok(())
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        // gRPC needs HTTP/2 to the upstream (h2c here: no TLS).
        let mut peer = HttpPeer::new(("127.0.0.1", 50051), false, String::new());
        peer.options.set_http_version(2, 2);
        Ok(Box::new(peer))
    }
}

fn main() {
    let mut server = Server::new(Some(Opt::parse_args())).unwrap();
    server.bootstrap();
    let mut proxy = pingora_proxy::http_proxy_service(&server.configuration, Bridge);
    proxy.add_tcp("127.0.0.1:6194");
    server.add_service(proxy);
    server.run_forever();
}
