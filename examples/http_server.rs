//! An HTTP/1 server: a greeting, a streaming echo, and the server's limits.
//!
//! ```sh
//! cargo run --example http_server -- --listen 127.0.0.1:6145 --h2c
//! curl http://127.0.0.1:6145/                     # hello
//! curl --http2-prior-knowledge http://127.0.0.1:6145/   # the same over HTTP/2
//! curl -T big.file http://127.0.0.1:6145/echo     # streamed back, chunked
//! ```
//!
//! `--max-header-bytes`, `--max-headers`, `--max-uri-len` and `--max-body`
//! set the request limits (431, 431, 414 and 413 above them).
//!
//! The framework reads and checks each request (bad ones get a 4xx and a
//! closed connection), keeps connections alive, answers pipelined requests
//! in order and sends `100 Continue` when the body is first read. The app
//! below only decides what to answer.
use std::sync::Arc;

use bytes::Bytes;
use clap::Parser;
use pingora::core::apps::http_app::{HttpServer, HttpServerApp};
use pingora::core::protocols::http::v1::H1Options;
use pingora::core::protocols::http::ServerSession;
use pingora::core::server::{Opt, Server, ShutdownWatch};
use pingora::core::services::listening::Service;
use pingora::error::Result;
use pingora::http::ResponseHeader;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    opt: Opt,
    /// Address to listen on (repeatable).
    #[arg(long, default_value = "127.0.0.1:6145")]
    listen: Vec<String>,
    /// Largest request body accepted, in bytes (413 above).
    #[arg(long, default_value_t = 1 << 20)]
    max_body: u64,
    /// Largest request header block (request line, fields and the empty
    /// line that ends them), in bytes; larger is answered with 431.
    /// Default 64 KiB.
    #[arg(long)]
    max_header_bytes: Option<usize>,
    /// Most header fields in a request; more is answered with 431.
    /// Default 256.
    #[arg(long)]
    max_headers: Option<usize>,
    /// Longest request target, in bytes; longer is answered with 414.
    /// Default 8 KiB.
    #[arg(long)]
    max_uri_len: Option<usize>,
    /// Time allowed to send a request header, in milliseconds.
    #[arg(long, default_value_t = 60_000)]
    header_timeout_ms: u64,
    /// Time allowed between body reads, in milliseconds.
    #[arg(long, default_value_t = 60_000)]
    body_timeout_ms: u64,
    /// Time allowed for one write, in milliseconds.
    #[arg(long, default_value_t = 60_000)]
    write_timeout_ms: u64,
    /// How long an idle keep-alive connection is kept, in milliseconds.
    #[arg(long, default_value_t = 60_000)]
    keepalive_timeout_ms: u64,
    /// Also accept HTTP/2 with prior knowledge (h2c) on the same port.
    #[arg(long)]
    h2c: bool,
    /// Park a keep-alive connection idle this long, in milliseconds: it
    /// leaves its task and costs ~100 bytes until its next request. 0:
    /// never park.
    #[arg(long, default_value_t = 1000)]
    park_idle_after_ms: u64,
    /// Also serve Prometheus metrics (`/metrics`) on this address.
    #[arg(long)]
    metrics: Option<String>,
}

struct App;

impl HttpServerApp for App {
    async fn process_request(
        self: &Arc<Self>,
        session: &mut ServerSession,
        _shutdown: &ShutdownWatch,
    ) -> Result<()> {
        let req = session.req_header();
        let path = req.uri.path().to_string();
        if session.is_upgrade_req() || req.method == http::Method::CONNECT {
            // WebSocket-style upgrade or CONNECT: after 101 (or 200 to
            // CONNECT) the connection is a raw byte tunnel; echo it.
            let status = if req.method == http::Method::CONNECT {
                200
            } else {
                101
            };
            let mut resp = ResponseHeader::build(status, None)?;
            if status == 101 {
                let proto = req.headers.get("upgrade").cloned();
                resp.insert_header("Connection", "Upgrade")?;
                resp.insert_header("Upgrade", proto.unwrap_or_else(|| "echo".parse().unwrap()))?;
            }
            session.write_response_header(Box::new(resp)).await?;
            while let Some(bytes) = session.read_request_body().await? {
                session.write_response_body(bytes).await?;
            }
            return Ok(());
        }
        if path == "/upload" {
            // Read the whole body (counting, not keeping it), then answer.
            // A malformed or oversized body is an error here, answered with
            // its 4xx because no response has started.
            let mut total = 0;
            while let Some(chunk) = session.read_request_body().await? {
                total += chunk.len();
            }
            let body = Bytes::from(format!("{total}\n"));
            let mut resp = ResponseHeader::build(200, None)?;
            resp.insert_header("Content-Length", body.len().to_string())?;
            session.write_response_header(Box::new(resp)).await?;
            session.write_response_body(body).await?;
            return session.finish_body().await;
        }
        if path == "/echo" {
            // Stream the request body back as it arrives; no Content-Length
            // is known, so the framework sends it chunked (or, to an
            // HTTP/1.0 client, delimited by closing the connection).
            let resp = ResponseHeader::build(200, None)?;
            session.write_response_header(Box::new(resp)).await?;
            while let Some(chunk) = session.read_request_body().await? {
                session.write_response_body(chunk).await?;
            }
            // Echo the request's trailers back as response trailers.
            if let Some(t) = session.request_trailers().cloned() {
                session.set_response_trailers(t);
            }
            return session.finish_body().await;
        }
        let body = Bytes::from_static(b"hello from pingora\n");
        // `/status/NNN` answers with that status (204 and 304 get no body).
        let status = match path.strip_prefix("/status/") {
            Some(code) => code.parse().unwrap_or(400),
            None if path == "/" => 200,
            None => 404,
        };
        let mut resp = ResponseHeader::build(status, None)?;
        resp.insert_header("Content-Type", "text/plain")?;
        resp.insert_header("Content-Length", body.len().to_string())?;
        session.write_response_header(Box::new(resp)).await?;
        // For HEAD, 204 and 304 the framework writes no body, whatever is
        // passed here.
        session.write_response_body(body).await?;
        session.finish_body().await
    }
}

fn main() {
    let args = Args::parse();
    let mut server = Server::new_or_exit(args.opt);
    server.bootstrap();
    let ms = |v: u64| Some(std::time::Duration::from_millis(v));
    let defaults = H1Options::default();
    let options = H1Options {
        max_header_bytes: args.max_header_bytes.unwrap_or(defaults.max_header_bytes),
        max_headers: args.max_headers.unwrap_or(defaults.max_headers),
        max_uri_len: args.max_uri_len.unwrap_or(defaults.max_uri_len),
        max_body_bytes: Some(args.max_body),
        header_read_timeout: ms(args.header_timeout_ms),
        body_read_timeout: ms(args.body_timeout_ms),
        write_timeout: ms(args.write_timeout_ms),
        keepalive_timeout: ms(args.keepalive_timeout_ms),
        ..Default::default()
    };
    let mut http = HttpServer::with_options(App, options);
    http.set_h2c(args.h2c);
    http.set_park_idle_after(ms(args.park_idle_after_ms).filter(|d| !d.is_zero()));
    let mut service = Service::new("http".to_string(), http);
    for addr in &args.listen {
        service.add_tcp(addr);
    }
    server.add_service(service);
    if let Some(addr) = &args.metrics {
        let mut metrics = pingora_prometheus::prometheus_http_service();
        metrics.add_tcp(addr);
        server.add_service(metrics);
    }
    server.run_forever();
}
