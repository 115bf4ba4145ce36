//! Rewrite a JSON response body on its way through the proxy.
//!
//! ```sh
//! cargo run --example modify_response
//! curl http://127.0.0.1:6191/
//! # {"proxied_by":"pingora","name":"demo","ok":true}
//! ```
//!
//! The upstream (a demo server started here on loopback, or `--upstream
//! HOST:PORT`) answers `{"name":"demo","ok":true}`. The proxy asks for the
//! body to be held until it is complete (the one case where buffering a
//! body whole is the user's choice), rewrites it, and sends it with the
//! new length.
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
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
    #[arg(long, default_value = "127.0.0.1:6191")]
    listen: String,
    /// The JSON upstream; none starts a demo one.
    #[arg(long)]
    upstream: Option<String>,
}

struct Rewrite {
    upstream: String,
}

/// The upstream body so far, when it is JSON.
struct Json(Option<BytesMut>);

#[async_trait]
impl ProxyHttp for Rewrite {
    type CTX = Json;
    fn new_ctx(&self) -> Json {
        Json(None)
    }

    async fn upstream_peer(&self, _s: &mut Session, _c: &mut Json) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::try_new(
            &self.upstream,
            false,
            String::new(),
        )?))
    }

    async fn response_filter(
        &self,
        _s: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Json,
    ) -> Result<()> {
        let json = resp
            .headers
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
        if json {
            // The length will change: the proxy sets the new one when the
            // upstream's body came in one piece, else sends it chunked.
            ctx.0 = Some(BytesMut::new());
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _s: &mut Session,
        body: &mut Option<Bytes>,
        end: bool,
        ctx: &mut Json,
    ) -> Result<Option<std::time::Duration>> {
        let Some(held) = ctx.0.as_mut() else {
            return Ok(None);
        };
        if let Some(b) = body.take() {
            held.extend_from_slice(&b); // hold every piece...
        }
        if end {
            // ...and send one rewritten body at the end.
            let text = String::from_utf8_lossy(held);
            let rest = text.trim_start().strip_prefix('{').unwrap_or("}");
            let sep = if rest.trim_start().starts_with('}') {
                ""
            } else {
                ","
            };
            *body = Some(Bytes::from(format!(
                "{{\"proxied_by\":\"pingora\"{sep}{rest}"
            )));
        }
        Ok(None)
    }
}

struct Demo;

#[async_trait]
impl ServeHttp for Demo {
    async fn response(&self, _s: &mut ServerSession) -> http::Response<Vec<u8>> {
        http::Response::builder()
            .header("content-type", "application/json")
            .body(br#"{"name":"demo","ok":true}"#.to_vec())
            .unwrap()
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut server = Server::new_or_exit(args.opt);
    server.bootstrap();
    let upstream = match args.upstream {
        Some(u) => u,
        None => {
            let addr = pingora::core::utils::free_loopback_addr()?;
            let mut demo = Service::new("demo json".to_string(), HttpServer::new(Demo));
            demo.add_tcp(&addr);
            server.add_service(demo);
            addr
        }
    };
    let mut proxy = http_proxy_service(&server.configuration, Rewrite { upstream });
    proxy.add_tcp(&args.listen);
    server.add_service(proxy);
    eprintln!("try: curl http://{}/", args.listen);
    server.run_forever();
}
