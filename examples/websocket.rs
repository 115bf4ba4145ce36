//! WebSocket through the proxy: the upgrade is passed on, and after the
//! upstream's `101` both sides are one raw tunnel.
//!
//! ```sh
//! cargo run --example websocket
//! websocat ws://127.0.0.1:6195/      # or any WebSocket client: each message comes back
//! ```
//!
//! The upstream is a WebSocket echo server started here on loopback
//! (tokio-tungstenite over a plain pingora service), or `--upstream`. A
//! tunnel with no traffic either way for `--idle-secs` is closed.
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use pingora::core::apps::http_app::HttpServer;
use pingora::core::apps::ServerApp;
use pingora::core::protocols::Stream;
use pingora::core::server::{Opt, Server, ShutdownWatch};
use pingora::core::services::listening::Service;
use pingora::core::upstreams::peer::HttpPeer;
use pingora::error::Result;
use pingora::proxy::{HttpProxy, ProxyHttp, ProxyOptions, Session};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    opt: Opt,
    #[arg(long, default_value = "127.0.0.1:6195")]
    listen: String,
    /// The WebSocket upstream; none starts a demo echo server.
    #[arg(long)]
    upstream: Option<String>,
    /// Close a tunnel idle this long.
    #[arg(long, default_value_t = 300)]
    idle_secs: u64,
}

struct WsProxy {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for WsProxy {
    type CTX = ();
    fn new_ctx(&self) {}

    // Nothing WebSocket-specific to write: the proxy forwards `Upgrade`
    // and turns the connection into a tunnel on `101`.
    async fn upstream_peer(&self, _s: &mut Session, _c: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::try_new(
            &self.upstream,
            false,
            String::new(),
        )?))
    }
}

/// The demo upstream: a WebSocket echo server on a raw pingora service.
struct Echo;

#[async_trait]
impl ServerApp for Echo {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        _shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let mut ws = tokio_tungstenite::accept_async(stream).await.ok()?;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_close() || ws.send(msg).await.is_err() {
                break;
            }
        }
        None
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
            let mut echo = Service::new("websocket echo".to_string(), Echo);
            echo.add_tcp(&addr);
            server.add_service(echo);
            addr
        }
    };
    let options = ProxyOptions {
        tunnel_idle_timeout: Duration::from_secs(args.idle_secs),
        ..Default::default()
    };
    let proxy = HttpProxy::with_options(WsProxy { upstream }, Some(&server.configuration), options);
    let mut service = Service::new("websocket proxy".to_string(), HttpServer::new(proxy));
    service.add_tcp(&args.listen);
    server.add_service(service);
    eprintln!("try: websocat ws://{}/", args.listen);
    server.run_forever();
}
