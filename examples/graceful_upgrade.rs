//! Zero-downtime upgrade, step by step. Each reply names the process that
//! answered, so you can watch the hand-over:
//!
//! ```sh
//! cat > /tmp/upgrade.yaml <<'YAML'
//! version: 1
//! upgrade_sock: /tmp/pingora_example_upgrade.sock
//! grace_period_seconds: 2
//! graceful_shutdown_timeout_seconds: 5
//! YAML
//! cargo build --example graceful_upgrade
//! B=target/debug/examples/graceful_upgrade
//! $B -c /tmp/upgrade.yaml & OLD=$!                 # 1. the running server
//! echo hi | nc -q1 127.0.0.1 6143                  #    "pid <OLD>: hi"
//! $B -c /tmp/upgrade.yaml --upgrade & NEW=$!       # 2. new binary waits for the sockets
//! kill -QUIT $OLD                                  # 3. old hands them over, drains, exits
//! echo hi | nc -q1 127.0.0.1 6143                  #    "pid <NEW>: hi" (or OLD during grace)
//! ```
use std::sync::Arc;

use async_trait::async_trait;
use clap::Parser;
use pingora::core::apps::ServerApp;
use pingora::core::protocols::Stream;
use pingora::core::server::{Opt, Server, ShutdownWatch};
use pingora::core::services::listening::Service;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    opt: Opt,
    /// TCP address to listen on.
    #[arg(long, default_value = "127.0.0.1:6143")]
    listen: String,
}

/// Answers each line with "pid <pid>: <line>".
struct WhoAmI;

#[async_trait]
impl ServerApp for WhoAmI {
    async fn process_new(self: &Arc<Self>, io: Stream, _s: &ShutdownWatch) -> Option<Stream> {
        let mut io = BufReader::new(io);
        let mut line = String::new();
        let pid = std::process::id();
        loop {
            line.clear();
            match io.read_line(&mut line).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {
                    let reply = format!("pid {pid}: {line}");
                    io.get_mut().write_all(reply.as_bytes()).await.ok()?;
                }
            }
        }
    }
}

fn main() {
    let args = Args::parse();
    let mut server = Server::new_or_exit(args.opt);
    // With --upgrade this blocks until the old process sends its sockets.
    server.bootstrap();
    let mut svc = Service::new("whoami".to_string(), WhoAmI);
    // Same address as the old process: the inherited socket is used.
    svc.add_tcp(&args.listen);
    server.add_service(svc);
    server.run_forever();
}
