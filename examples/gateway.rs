//! An API gateway: route by host and path, answer some requests locally.
//!
//! ```sh
//! cargo run --example gateway
//! curl http://127.0.0.1:6194/health                      # answered by the gateway
//! curl -H 'Host: api.example' http://127.0.0.1:6194/v1/  # the api upstream
//! curl http://127.0.0.1:6194/static/logo.png             # the static upstream
//! curl -i http://127.0.0.1:6194/other                    # 404 from the gateway
//! ```
//!
//! Routes: host `api.example` → the api upstream; path `/static/` → the
//! static upstream; `/health` → `ok` from the gateway itself; anything
//! else → 404 without touching an upstream. Two demo upstreams run here on
//! loopback.
use async_trait::async_trait;
use bytes::Bytes;
use clap::Parser;
use pingora::core::apps::http_app::{HttpServer, ServeHttp};
use pingora::core::protocols::http::ServerSession;
use pingora::core::server::{Opt, Server};
use pingora::core::services::listening::Service;
use pingora::core::upstreams::peer::HttpPeer;
use pingora::error::{Error, ErrorType, Result};
use pingora::http::ResponseHeader;
use pingora::proxy::{http_proxy_service, ProxyHttp, Session};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    opt: Opt,
    #[arg(long, default_value = "127.0.0.1:6194")]
    listen: String,
}

struct Gateway {
    api: String,
    assets: String,
}

/// Which upstream a request goes to, decided in `request_filter`.
struct Route(Option<String>);

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Route;
    fn new_ctx(&self) -> Route {
        Route(None)
    }

    async fn request_filter(&self, session: &mut Session, route: &mut Route) -> Result<bool> {
        let req = session.req_header();
        let host = req
            .headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .or(req.uri.host())
            .unwrap_or("");
        let host = host.split(':').next().unwrap_or("");
        let path = req.uri.path();
        route.0 = if host == "api.example" {
            Some(self.api.clone())
        } else if path.starts_with("/static/") {
            Some(self.assets.clone())
        } else {
            // Answered here: a health check, or 404.
            let (status, body) = if path == "/health" {
                (200, "ok\n")
            } else {
                (404, "no route\n")
            };
            let mut resp = ResponseHeader::build(status, None)?;
            resp.insert_header("Content-Length", body.len().to_string())?;
            session.write_response_header(Box::new(resp), false).await?;
            let body = Bytes::from_static(body.as_bytes());
            session.write_response_body(Some(body), true).await?;
            return Ok(true); // done: nothing goes upstream
        };
        Ok(false)
    }

    async fn upstream_peer(&self, _s: &mut Session, route: &mut Route) -> Result<Box<HttpPeer>> {
        let addr = route
            .0
            .as_deref()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no route"))?;
        Ok(Box::new(HttpPeer::try_new(addr, false, String::new())?))
    }
}

struct Named(&'static str);

#[async_trait]
impl ServeHttp for Named {
    async fn response(&self, s: &mut ServerSession) -> http::Response<Vec<u8>> {
        http::Response::new(format!("{} upstream: {}\n", self.0, s.req_header().uri).into_bytes())
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut server = Server::new_or_exit(args.opt);
    server.bootstrap();
    let mut addrs = Vec::new();
    for name in ["api", "static"] {
        let addr = pingora::core::utils::free_loopback_addr()?;
        let mut demo = Service::new(format!("{name} upstream"), HttpServer::new(Named(name)));
        demo.add_tcp(&addr);
        server.add_service(demo);
        addrs.push(addr);
    }
    let gateway = Gateway {
        api: addrs[0].clone(),
        assets: addrs[1].clone(),
    };
    let mut proxy = http_proxy_service(&server.configuration, gateway);
    proxy.add_tcp(&args.listen);
    server.add_service(proxy);
    eprintln!("try: curl http://{}/health", args.listen);
    server.run_forever();
}
