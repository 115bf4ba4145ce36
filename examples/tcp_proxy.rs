//! A load-balancing TCP proxy: round robin over healthy upstreams, bytes
//! copied both ways (half-close kept), one log line per connection with the
//! byte counts.
//!
//! ```sh
//! cargo run --example tcp_proxy                     # in front of a demo echo upstream
//! cargo run --example tcp_proxy -- --listen 127.0.0.1:6190 --upstream 127.0.0.1:7000
//! printf 'hello' | nc -N 127.0.0.1 6190
//! ```
//!
//! `--tls-listen ADDR --cert FILE --key FILE` terminates TLS; `--upstream-tls`
//! (with `--upstream-ca FILE`) originates it. `--proxy-protocol` reads a
//! PROXY v1/v2 header on `--listen`; `--send-proxy v1|v2` sends one to the
//! upstreams; `--allow CIDR` / `--deny CIDR` filter clients by address
//! before anything is read. The server's own flags (`-c`, `-d`, `-u`, `-t`)
//! work too.
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use clap::Parser;
use pingora::core::apps::ServerApp;
use pingora::core::listeners::AddressFilter;
use pingora::core::protocols::proxy_protocol::{ProxyHeader, ProxyVersion};
use pingora::core::protocols::Stream;
use pingora::core::server::{Opt, Server, ShutdownWatch};
use pingora::core::services::background::background_service;
use pingora::core::services::listening::Service;
use pingora::core::upstreams::peer::BasicPeer;
use pingora::error::{Error, ErrorType, Result};
use pingora::lb::{health_check::TcpHealthCheck, selection::RoundRobin, Backend, LoadBalancer};
use pingora::proxy::tcp::{TcpProxy, TcpProxyHandler, TcpProxyOptions, TcpSession};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    opt: Opt,
    /// Plain listener.
    #[arg(long, default_value = "127.0.0.1:6190")]
    listen: String,
    /// An upstream `HOST:PORT` (repeatable); none starts a demo echo upstream.
    #[arg(long)]
    upstream: Vec<String>,
    /// TLS listener (needs --cert and --key).
    #[arg(long, requires_all = ["cert", "key"])]
    tls_listen: Option<String>,
    /// Certificate chain (PEM) for --tls-listen.
    #[arg(long)]
    cert: Option<String>,
    /// Private key (PEM) for --tls-listen.
    #[arg(long)]
    key: Option<String>,
    /// Speak TLS to the upstreams.
    #[arg(long)]
    upstream_tls: bool,
    /// CA file (PEM) to verify the upstreams with.
    #[arg(long)]
    upstream_ca: Option<String>,
    /// Name to send as SNI and verify (default: the upstream's host).
    #[arg(long)]
    upstream_sni: Option<String>,
    /// Read a PROXY protocol header (v1 or v2) on --listen.
    #[arg(long)]
    proxy_protocol: bool,
    /// Send a PROXY protocol header (`v1` or `v2`) to the upstreams.
    #[arg(long, value_parser = ["v1", "v2"])]
    send_proxy: Option<String>,
    /// Accept clients from this range only (repeatable; CIDR or address).
    #[arg(long)]
    allow: Vec<String>,
    /// Refuse clients from this range (repeatable; checked before --allow).
    #[arg(long)]
    deny: Vec<String>,
    /// Close a connection idle this many seconds.
    #[arg(long, default_value_t = 600)]
    idle_timeout_secs: u64,
}

/// Picks an upstream and says how to reach it.
struct Lb {
    lb: Arc<LoadBalancer<RoundRobin>>,
    tls: bool,
    ca: Option<String>,
    sni: Option<String>,
    send_proxy: Option<ProxyVersion>,
}

#[async_trait]
impl TcpProxyHandler for Lb {
    /// The backends tried for this connection.
    type CTX = Vec<Backend>;
    fn new_ctx(&self) -> Vec<Backend> {
        vec![]
    }

    async fn upstream_peer(
        &self,
        s: &TcpSession,
        tried: &mut Vec<Backend>,
    ) -> Result<Box<BasicPeer>> {
        // A healthy backend not tried yet (a failed connect walks on).
        let b = self
            .lb
            .select_with(b"", 64, |b, ready| ready && !tried.contains(b))
            .ok_or_else(|| Error::explain(ErrorType::ConnectNoRoute, "no healthy upstream left"))?;
        let host = b.addr.to_string();
        tried.push(b);
        let mut peer = if self.tls {
            let name = host.rsplit_once(':').map_or(host.as_str(), |(h, _)| h);
            let sni = self.sni.clone().unwrap_or_else(|| name.to_string());
            BasicPeer::new_tls(&host, sni)?
        } else {
            BasicPeer::try_new(&host)?
        };
        peer.options.connection_timeout = Some(Duration::from_secs(3));
        peer.options.ca = self.ca.clone();
        if let (Some(v), Some(d)) = (self.send_proxy, s.socket_digest()) {
            peer.options.proxy_protocol = ProxyHeader::for_client(v, d);
        }
        Ok(Box::new(peer))
    }

    async fn logging(&self, s: &TcpSession, e: Option<&Error>, _tried: &mut Vec<Backend>) {
        let client = s.client_addr().map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(
            "tcp client={client} upstream={} sent={} received={} duration_ms={} error={}",
            s.upstream().unwrap_or("-"),
            s.bytes_from_downstream,
            s.bytes_from_upstream,
            s.duration().as_millis(),
            e.map_or("-".to_string(), |e| e.to_string()),
        );
    }
}

/// A demo upstream: echoes what it reads, then closes when the client does.
struct Echo;

#[async_trait]
impl ServerApp for Echo {
    async fn process_new(self: &Arc<Self>, mut io: Stream, _s: &ShutdownWatch) -> Option<Stream> {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if io.write_all(&buf[..n]).await.is_err() {
                        return None;
                    }
                }
            }
        }
        let _ = io.shutdown().await;
        None
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut server = Server::new_or_exit(args.opt);
    server.bootstrap();

    let mut upstreams = args.upstream.clone();
    if upstreams.is_empty() {
        let addr = pingora::core::utils::free_loopback_addr()?;
        let mut echo = Service::new("demo echo upstream".into(), Echo);
        echo.add_tcp(&addr);
        server.add_service(echo);
        eprintln!("demo echo upstream: {addr}");
        upstreams.push(addr);
    }

    // Round robin, with a TCP health check every second in the background.
    let mut lb = LoadBalancer::<RoundRobin>::try_from_iter(&upstreams)?;
    lb.backends_mut().set_health_check(TcpHealthCheck::new());
    lb.health_check_frequency = Some(Duration::from_secs(1));
    lb.parallel_health_check = true;
    let checks = background_service("health checks", lb);
    let handler = Lb {
        lb: checks.task(),
        tls: args.upstream_tls,
        ca: args.upstream_ca,
        sni: args.upstream_sni,
        send_proxy: args.send_proxy.map(|v| match v.as_str() {
            "v1" => ProxyVersion::V1,
            _ => ProxyVersion::V2,
        }),
    };
    let options = TcpProxyOptions {
        idle_timeout: Duration::from_secs(args.idle_timeout_secs),
        ..Default::default()
    };
    let app = TcpProxy::with_options(&server.configuration, handler, options);
    let mut service = Service::new("TCP proxy".into(), app);
    service.add_tcp(&args.listen);
    if args.proxy_protocol {
        service.enable_proxy_protocol(&args.listen, None)?;
    }
    if let (Some(addr), Some(cert), Some(key)) = (&args.tls_listen, &args.cert, &args.key) {
        service.add_tls(addr, cert, key)?;
    }
    if !args.allow.is_empty() || !args.deny.is_empty() {
        // Deny rules first; then, if any allow rule is given, only those.
        let mut f = AddressFilter::new(args.allow.is_empty());
        for d in &args.deny {
            f = f.deny(d)?;
        }
        for a in &args.allow {
            f = f.allow(a)?;
        }
        service.set_connection_filter(Arc::new(f));
    }
    eprintln!("TCP proxy on {}", args.listen);
    server.add_service(checks);
    server.add_service(service);
    server.run_forever();
}
