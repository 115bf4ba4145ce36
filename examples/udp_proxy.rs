//! A UDP proxy: each client address gets a session with an upstream (round
//! robin over `--upstream`), and the upstream's replies go back to that
//! client only. In front of a DNS server, for example.
//!
//! ```sh
//! cargo run --example udp_proxy                      # in front of a demo echo upstream
//! cargo run --example udp_proxy -- --listen 127.0.0.1:6191 --upstream 127.0.0.1:53
//! dig @127.0.0.1 -p 6191 example.test
//! ```
//!
//! The server's own flags (`-c`, `-d`, `-u`, `-t`) work too: on a graceful
//! upgrade the UDP socket is handed to the new process, so no datagram
//! meets a closed port.
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use clap::Parser;
use pingora::core::server::{Opt, Server};
use pingora::core::services::udp::{UdpApp, UdpDownstream, UdpService};
use pingora::error::{Error, ErrorType, Result};
use pingora::lb::{selection::RoundRobin, LoadBalancer};
use pingora::proxy::udp::{UdpProxy, UdpProxyHandler, UdpProxyOptions, UdpSessionSummary};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    opt: Opt,
    /// Where clients send datagrams.
    #[arg(long, default_value = "127.0.0.1:6191")]
    listen: String,
    /// An upstream `HOST:PORT` (repeatable); none starts a demo echo upstream.
    #[arg(long)]
    upstream: Vec<String>,
    /// End a session idle this many seconds.
    #[arg(long, default_value_t = 60)]
    idle_timeout_secs: u64,
    /// Most client sessions at once.
    #[arg(long, default_value_t = 10_000)]
    max_sessions: usize,
    /// Most client sessions at once from one IP address.
    #[arg(long, default_value_t = 2_000)]
    max_sessions_per_ip: usize,
}

/// Picks the upstream of each new client session.
struct Lb(Arc<LoadBalancer<RoundRobin>>);

#[async_trait]
impl UdpProxyHandler for Lb {
    async fn upstream_peer(&self, _client: std::net::SocketAddr) -> Result<std::net::SocketAddr> {
        let b = self
            .0
            .select(b"", 64)
            .ok_or_else(|| Error::explain(ErrorType::ConnectNoRoute, "no upstream"))?;
        b.addr
            .as_inet()
            .copied()
            .ok_or_else(|| Error::explain(ErrorType::InvalidInput, "UDP needs an IP upstream"))
    }

    async fn session_closed(&self, s: &UdpSessionSummary) {
        tracing::info!(
            "udp client={} upstream={} datagrams_in={} datagrams_out={} bytes_in={} bytes_out={}",
            s.client,
            s.upstream,
            s.datagrams_from_client,
            s.datagrams_from_upstream,
            s.bytes_from_client,
            s.bytes_from_upstream
        );
    }
}

/// A demo upstream: sends each datagram back.
struct Echo;

#[async_trait]
impl UdpApp for Echo {
    async fn process_datagram(
        self: &Arc<Self>,
        d: &[u8],
        peer: std::net::SocketAddr,
        down: &UdpDownstream,
    ) {
        let _ = down.send_to(d, peer).await;
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut server = Server::new_or_exit(args.opt);
    server.bootstrap();

    let mut upstreams = args.upstream.clone();
    if upstreams.is_empty() {
        // A port from the OS that is free for UDP too.
        let addr = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map_err(|e| Error::because(ErrorType::BindError, "demo upstream", e))?
            .to_string();
        let mut echo = UdpService::new("demo echo upstream".into(), Echo);
        echo.add_udp(&addr);
        server.add_service(echo);
        eprintln!("demo echo upstream: {addr}");
        upstreams.push(addr);
    }

    let lb = Arc::new(LoadBalancer::<RoundRobin>::try_from_iter(&upstreams)?);
    let options = UdpProxyOptions {
        idle_timeout: Duration::from_secs(args.idle_timeout_secs),
        max_sessions: args.max_sessions,
        max_sessions_per_ip: args.max_sessions_per_ip,
        ..Default::default()
    };
    let mut proxy = UdpService::new("UDP proxy".into(), UdpProxy::with_options(Lb(lb), options));
    proxy.add_udp(&args.listen);
    eprintln!("UDP proxy on {}", args.listen);
    server.add_service(proxy);
    server.run_forever();
}
