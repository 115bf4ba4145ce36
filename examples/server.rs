//! A TCP echo service and a background service, run by one `Server`.
//!
//! ```sh
//! cargo run --example server -- --listen 127.0.0.1:6142
//! # elsewhere: nc 127.0.0.1 6142   (type a line, it comes back)
//! ```
//!
//! It takes the server's usual options too (`-c conf.yaml`, `-d`, `-u`,
//! `-t`), so it can be upgraded in place: see `graceful_upgrade.rs` and the
//! README.
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use clap::Parser;
use pingora::core::apps::ServerApp;
use pingora::core::protocols::Stream;
use pingora::core::server::{Opt, Server, ShutdownWatch};
use pingora::core::services::background::{background_service, BackgroundService};
use pingora::core::services::listening::Service;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Command line: the server's options plus where to listen.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    opt: Opt,
    /// TCP address of the echo service (repeatable).
    #[arg(long, default_value = "127.0.0.1:6142")]
    listen: Vec<String>,
    /// Also listen on this Unix socket.
    #[arg(long)]
    uds: Option<String>,
}

/// Writes back whatever it reads, until the client closes.
struct Echo;

#[async_trait]
impl ServerApp for Echo {
    async fn process_new(self: &Arc<Self>, mut io: Stream, _s: &ShutdownWatch) -> Option<Stream> {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match io.read(&mut buf).await {
                // The client finished (or broke): close our side.
                Ok(0) | Err(_) => return None,
                Ok(n) => io.write_all(&buf[..n]).await.ok()?,
            }
        }
    }
}

/// Logs a heartbeat every few seconds until shutdown.
struct Heartbeat;

#[async_trait]
impl BackgroundService for Heartbeat {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let start = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => break,
                _ = tokio::time::sleep(Duration::from_secs(10)) => {
                    tracing::info!("heartbeat: up {:?}", start.elapsed());
                }
            }
        }
        tracing::info!("heartbeat stopped");
    }
}

fn main() {
    let args = Args::parse();
    // Loads the conf (-c), or checks it and exits (-t).
    let mut server = Server::new_or_exit(args.opt);
    // Daemonizes (-d) and takes over the old process's sockets (-u).
    server.bootstrap();

    let mut echo = Service::new("echo".to_string(), Echo);
    for addr in &args.listen {
        echo.add_tcp(addr);
    }
    if let Some(path) = &args.uds {
        echo.add_uds(path, None);
    }
    let echo = server.add_service(echo);
    // The heartbeat starts once the echo service is listening.
    let heartbeat = server.add_service(background_service("heartbeat", Heartbeat));
    server.add_dependency(&heartbeat, &echo);

    server.run_forever();
}
