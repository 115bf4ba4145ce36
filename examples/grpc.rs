//! A gRPC proxy: HTTP/2 on both sides (h2c here; add a TLS listener with
//! `enable_h2` for h2), trailers passed through, and failures answered as
//! gRPC statuses that gRPC clients understand.
//!
//! ```sh
//! cargo run --example grpc -- --upstream 127.0.0.1:50051
//! grpcurl -plaintext 127.0.0.1:6196 list      # through the proxy to your gRPC server
//! ```
//!
//! Without a server at the upstream address every call gets `UNAVAILABLE`
//! (not an HTTP 502 page). Non-gRPC requests get 415. Each call's
//! `grpc-status` is logged.
use async_trait::async_trait;
use clap::Parser;
use pingora::core::apps::http_app::HttpServer;
use pingora::core::server::{Opt, Server};
use pingora::core::services::listening::Service;
use pingora::core::upstreams::peer::{HttpPeer, ALPN};
use pingora::error::{Error, ErrorType, Result};
use pingora::proxy::{HttpProxy, ProxyHttp, Session};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    opt: Opt,
    #[arg(long, default_value = "127.0.0.1:6196")]
    listen: String,
    /// The gRPC server (plain-text HTTP/2).
    #[arg(long, default_value = "127.0.0.1:50051")]
    upstream: String,
}

struct GrpcProxy {
    upstream: String,
}

/// The call's status, from the upstream's trailers (or headers).
struct Call(Option<String>);

#[async_trait]
impl ProxyHttp for GrpcProxy {
    type CTX = Call;
    fn new_ctx(&self) -> Call {
        Call(None)
    }

    async fn request_filter(&self, session: &mut Session, _c: &mut Call) -> Result<bool> {
        if !session.is_grpc() {
            return Error::e_explain(ErrorType::HTTPStatus(415), "not a gRPC call");
        }
        Ok(false)
    }

    async fn upstream_peer(&self, _s: &mut Session, _c: &mut Call) -> Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::try_new(&self.upstream, false, String::new())?;
        peer.options.alpn = ALPN::H2; // h2c with prior knowledge
        peer.options.max_h2_streams = 100; // calls share connections
        Ok(Box::new(peer))
    }

    async fn response_filter(
        &self,
        _s: &mut Session,
        resp: &mut pingora::http::ResponseHeader,
        call: &mut Call,
    ) -> Result<()> {
        // A "Trailers-Only" answer carries the status in its header.
        call.0 = resp
            .headers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok(())
    }

    async fn response_trailer_filter(
        &self,
        _s: &mut Session,
        trailers: &mut http::HeaderMap,
        call: &mut Call,
    ) -> Result<Option<bytes::Bytes>> {
        call.0 = trailers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok(None) // the trailers go on as trailers
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, call: &mut Call) {
        let status = call
            .0
            .as_deref()
            .unwrap_or(if e.is_some() { "proxy error" } else { "?" });
        eprintln!("{} grpc-status {status}", session.req_header().uri.path());
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut server = Server::new_or_exit(args.opt);
    server.bootstrap();
    let proxy = HttpProxy::new(
        GrpcProxy {
            upstream: args.upstream,
        },
        Some(&server.configuration),
    );
    let mut app = HttpServer::new(proxy);
    app.set_h2c(true); // gRPC clients speak HTTP/2 with prior knowledge
    let mut service = Service::new("grpc proxy".to_string(), app);
    service.add_tcp(&args.listen);
    server.add_service(service);
    eprintln!("gRPC proxy on {}", args.listen);
    server.run_forever();
}
