//! Per-request state (`CTX`) and state shared by all requests.
//!
//! ```sh
//! cargo run --example ctx
//! curl -i http://127.0.0.1:6193/                        # x-request-number: 1
//! curl -i -H 'beta-flag: 1' http://127.0.0.1:6193/      # goes to the beta upstream
//! ```
//!
//! The proxy counts every request in a shared atomic counter, and keeps in
//! each request's context whether the client is a beta user: beta users go
//! to the beta upstream, the others to the stable one (two demo servers
//! started here on loopback).
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use clap::Parser;
use pingora::core::apps::http_app::{HttpServer, ServeHttp};
use pingora::core::protocols::http::ServerSession;
use pingora::core::server::{Opt, Server};
use pingora::core::services::listening::Service;
use pingora::core::upstreams::peer::HttpPeer;
use pingora::error::Result;
use pingora::http::ResponseHeader;
use pingora::proxy::{http_proxy_service, ProxyHttp, Session};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    opt: Opt,
    #[arg(long, default_value = "127.0.0.1:6193")]
    listen: String,
}

/// Shared by every request: the upstreams and a counter.
struct BetaRouter {
    stable: String,
    beta: String,
    requests: AtomicUsize,
}

/// One request's own state.
struct Ctx {
    beta_user: bool,
    number: usize,
}

#[async_trait]
impl ProxyHttp for BetaRouter {
    type CTX = Ctx;
    fn new_ctx(&self) -> Ctx {
        Ctx {
            beta_user: false,
            number: 0,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        ctx.beta_user = session.req_header().headers.get("beta-flag").is_some();
        ctx.number = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(false) // go on to the upstream
    }

    async fn upstream_peer(&self, _s: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let addr = if ctx.beta_user {
            &self.beta
        } else {
            &self.stable
        };
        Ok(Box::new(HttpPeer::try_new(addr, false, String::new())?))
    }

    async fn response_filter(
        &self,
        _s: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        resp.insert_header("x-request-number", ctx.number.to_string())
    }
}

/// A demo upstream that says which one it is.
struct Named(&'static str);

#[async_trait]
impl ServeHttp for Named {
    async fn response(&self, _s: &mut ServerSession) -> http::Response<Vec<u8>> {
        http::Response::new(format!("{} upstream\n", self.0).into_bytes())
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut server = Server::new_or_exit(args.opt);
    server.bootstrap();
    let mut addrs = Vec::new();
    for name in ["stable", "beta"] {
        let addr = pingora::core::utils::free_loopback_addr()?;
        let mut demo = Service::new(format!("{name} upstream"), HttpServer::new(Named(name)));
        demo.add_tcp(&addr);
        server.add_service(demo);
        addrs.push(addr);
    }
    let router = BetaRouter {
        stable: addrs[0].clone(),
        beta: addrs[1].clone(),
        requests: AtomicUsize::new(0),
    };
    let mut proxy = http_proxy_service(&server.configuration, router);
    proxy.add_tcp(&args.listen);
    server.add_service(proxy);
    eprintln!("try: curl -i http://{}/", args.listen);
    server.run_forever();
}
