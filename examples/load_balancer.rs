//! A load-balancing reverse proxy: round robin over healthy upstreams,
//! failing over to the next one when a connection is refused.
//!
//! ```sh
//! cargo run --release --example load_balancer           # with two demo upstreams
//! cargo run --release --example load_balancer -- --upstream 127.0.0.1:8000 --upstream 127.0.0.1:8001
//! curl http://127.0.0.1:6188/
//! ```
//!
//! `--tls-listen ADDR --cert FILE --key FILE` adds a TLS listener (h2 and
//! http/1.1 by ALPN), `--h2c` accepts HTTP/2 with prior knowledge on the
//! plain listener, `--upstream-h2` speaks HTTP/2 to the upstreams (h2c, or h2
//! with `--upstream-tls`). The server's own flags (`-c`, `-d`, `-u`, `-t`)
//! work too, so it can be upgraded without dropping a request. Prometheus
//! metrics are served at `http://127.0.0.1:6192/metrics` (`--metrics`); the
//! conf's `access_log` (a file or `syslog:udp:HOST:PORT`) and
//! `access_log_format` (`combined` or `json`) turn on the access log.
//! `--proxy-protocol` reads a PROXY v1/v2 header on `--listen` (behind
//! HAProxy or a cloud load balancer). `--rate-limit N` answers a client
//! address's requests beyond N per second with 429 (the rate-limit module;
//! `--rate-limit-redis redis://HOST:PORT` shares the counts between proxies);
//! `--compress` compresses responses worth it (zstd, br or gzip, as the
//! client accepts). `--grpc-web` (with `--upstream-h2`) bridges browsers'
//! gRPC-web calls to gRPC upstreams; `--grpc-web-cors ORIGIN` (repeatable,
//! `*` for any) answers their CORS preflights. `--cache` caches responses
//! in memory by RFC 9111 (`--cache-size`, 128M by default); `--cache-dir DIR`
//! keeps them in files instead (`--cache-size 1G`); `PURGE` from a loopback
//! client removes a URL's object (see docs/CACHE.md).
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use clap::Parser;
use pingora::cache::HttpCache;
use pingora::core::apps::http_app::{HttpServer, ServeHttp};
use pingora::core::listeners::tls::TlsSettings;
use pingora::core::metrics::prometheus::{register_int_counter, IntCounter};
use pingora::core::modules::http::compression::ResponseCompressionBuilder;
use pingora::core::modules::http::grpc_web::{GrpcWebBuilder, GrpcWebCors};
use pingora::core::modules::http::rate_limit::{redis::RedisAddr, RateLimit};
use pingora::core::modules::http::HttpModules;
use pingora::core::protocols::http::ServerSession;
use pingora::core::server::{Opt, Server};
use pingora::core::services::background::background_service;
use pingora::core::services::listening::Service;
use pingora::core::upstreams::peer::{HttpPeer, ALPN};
use pingora::error::{Error, ErrorType, Result};
use pingora::lb::{health_check::TcpHealthCheck, selection::RoundRobin, Backend, LoadBalancer};
use pingora::proxy::{access_log::AccessLog, HttpProxy, ProxyHttp, Session};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    opt: Opt,
    /// An upstream `HOST:PORT` (repeatable); none starts two demo upstreams.
    #[arg(long)]
    upstream: Vec<String>,
    /// Plain-text listener.
    #[arg(long, default_value = "127.0.0.1:6188")]
    listen: String,
    /// TLS listener (needs --cert and --key).
    #[arg(long, requires_all = ["cert", "key"])]
    tls_listen: Option<String>,
    /// Certificate chain (PEM) for --tls-listen.
    #[arg(long)]
    cert: Option<String>,
    /// Private key (PEM) for --tls-listen.
    #[arg(long)]
    key: Option<String>,
    /// Accept HTTP/2 with prior knowledge on the plain listener.
    #[arg(long)]
    h2c: bool,
    /// Speak HTTP/2 to the upstreams.
    #[arg(long)]
    upstream_h2: bool,
    /// Speak TLS to the upstreams (SNI and verification by host name).
    #[arg(long)]
    upstream_tls: bool,
    /// CA file (PEM) to verify the upstreams with.
    #[arg(long)]
    upstream_ca: Option<String>,
    /// Where to serve Prometheus metrics (`/metrics`).
    #[arg(long, default_value = "127.0.0.1:6192")]
    metrics: String,
    /// Read a PROXY protocol header (v1 or v2) on --listen: the client it
    /// names is the one logged and passed on.
    #[arg(long)]
    proxy_protocol: bool,
    /// Time allowed for each upstream read or write, in milliseconds (504 after).
    #[arg(long, default_value_t = 60_000)]
    upstream_timeout_ms: u64,
    /// Seconds between active health checks of the upstreams.
    #[arg(long, default_value_t = 1)]
    health_check_secs: u64,
    /// Requests per second allowed from each client address (429 beyond).
    #[arg(long)]
    rate_limit: Option<u32>,
    /// Keep the rate limit's counts in this Redis (`redis://HOST:PORT[/DB]`),
    /// shared by every proxy using it (local counts while it is down).
    #[arg(long, requires = "rate_limit")]
    rate_limit_redis: Option<String>,
    /// Compress responses (zstd, br, gzip at level 6) for clients that accept it.
    #[arg(long)]
    compress: bool,
    /// Bridge gRPC-web requests (binary and text) to the upstreams as gRPC
    /// (use with --upstream-h2).
    #[arg(long)]
    grpc_web: bool,
    /// An origin whose gRPC-web calls browsers may make (CORS; repeatable,
    /// `*` for any).
    #[arg(long, requires = "grpc_web")]
    grpc_web_cors: Vec<String>,
    /// Cache responses in memory (RFC 9111; `Cache-Status` tells hits).
    #[arg(long)]
    cache: bool,
    /// Cache responses in files in this directory (kept across restarts).
    #[arg(long)]
    cache_dir: Option<std::path::PathBuf>,
    /// The cache's size: bytes, or with K, M or G (default 128M).
    #[arg(long, value_parser = parse_size)]
    cache_size: Option<u64>,
}

/// A size such as `1G`, `512M`, `64K` or `1000`.
fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let (num, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, ""),
    };
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        _ => return Err(format!("{s:?}: a number with K, M or G")),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: a number with K, M or G"))?;
    n.checked_mul(1 << shift)
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{s:?}: out of range"))
}

/// The proxy: the load balancer and how to reach the upstreams.
struct Lb {
    lb: Arc<LoadBalancer<RoundRobin>>,
    /// From the conf's `access_log` / `access_log_format`, if set.
    access_log: Option<AccessLog>,
    h2: bool,
    tls: bool,
    ca: Option<String>,
    timeout: Duration,
    /// A metric of our own, served beside the built-in ones.
    failovers: IntCounter,
    /// Requests per second per client address, if limited.
    rate_limit: Option<u32>,
    /// Where the rate limit's counts are shared, if anywhere.
    rate_limit_redis: Option<String>,
    compress: bool,
    /// The gRPC-web bridge, if on.
    grpc_web: Option<GrpcWebBuilder>,
    /// The response cache, if on.
    cache: Option<HttpCache>,
}

/// Per request: the backends tried (the last one apart, so that a request
/// that is not retried allocates nothing for them), when the request began
/// and when the last backend was picked.
struct Ctx {
    last: Option<Backend>,
    earlier: Vec<Backend>,
    begun: Instant,
    start: Instant,
}

#[async_trait]
impl ProxyHttp for Lb {
    type CTX = Ctx;
    fn new_ctx(&self) -> Ctx {
        let now = Instant::now();
        Ctx {
            last: None,
            earlier: Vec::new(),
            begun: now,
            start: now,
        }
    }

    fn request_cache_filter(&self, s: &mut Session, _ctx: &mut Ctx) -> Result<()> {
        if let Some(cache) = &self.cache {
            s.cache_enable(cache);
        }
        Ok(())
    }

    /// `PURGE` from a loopback client removes the URL's cached object.
    fn is_purge(&self, s: &Session, _ctx: &Ctx) -> bool {
        self.cache.is_some()
            && s.req_header().method.as_str() == "PURGE"
            && s.client_addr()
                .and_then(|a| a.as_inet())
                .is_some_and(|a| a.ip().is_loopback())
    }

    fn init_downstream_modules(&self, modules: &mut HttpModules) {
        if let Some(n) = self.rate_limit {
            let mut limit = RateLimit::per_client_addr(n);
            if let Some(url) = &self.rate_limit_redis {
                limit = limit
                    .shared_through_redis(url, Duration::from_millis(50))
                    .expect("checked in main");
            }
            modules.add_module(Box::new(limit));
        }
        if self.compress {
            modules.add_module(ResponseCompressionBuilder::enable(6));
        }
        if let Some(bridge) = &self.grpc_web {
            modules.add_module(Box::new(bridge.clone()));
        }
    }

    async fn upstream_peer(&self, _s: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        // A healthy backend not tried yet for this request (a retry walks on).
        let b = self
            .lb
            .select_with(b"", 64, |b, ready| {
                ready && ctx.last.as_ref() != Some(b) && !ctx.earlier.contains(b)
            })
            .ok_or_else(|| Error::explain(ErrorType::ConnectNoRoute, "no healthy upstream left"))?;
        // SNI (and the name checked in the certificate): the host.
        let sni = match (self.tls, b.addr.as_inet()) {
            (true, Some(a)) => a.ip().to_string(),
            _ => String::new(),
        };
        let mut peer = HttpPeer::new_from_sockaddr(b.addr.clone(), self.tls, sni);
        peer.options.connection_timeout = Some(Duration::from_secs(3));
        peer.options.read_timeout = Some(self.timeout);
        peer.options.write_timeout = Some(self.timeout);
        peer.options.ca = self.ca.clone();
        if self.h2 {
            peer.options.alpn = ALPN::H2;
            peer.options.max_h2_streams = 100;
        }
        self.lb.on_start(&b);
        if let Some(prev) = ctx.last.replace(b) {
            ctx.earlier.push(prev);
        }
        ctx.start = Instant::now();
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _s: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        e: Box<Error>,
    ) -> Box<Error> {
        // Passive health: count the failure against this backend (the
        // error stays retryable, so the next backend is tried).
        self.failovers.inc();
        if let Some(b) = &ctx.last {
            self.lb.on_done(b, ctx.start.elapsed(), false);
        }
        e
    }

    async fn logging(&self, s: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        if let Some(log) = &self.access_log {
            log.log(s, e, ctx.begun.elapsed());
        }
        if let Some(b) = &ctx.last {
            let ok = !matches!(e, Some(e) if *e.esource() == pingora::error::ErrorSource::Upstream);
            self.lb.on_done(b, ctx.start.elapsed(), ok);
        }
    }
}

/// A demo upstream that says who it is.
struct Demo(usize);

#[async_trait]
impl ServeHttp for Demo {
    async fn response(&self, s: &mut ServerSession) -> http::Response<Vec<u8>> {
        let body = format!(
            "hello from demo upstream {} ({})\n",
            self.0,
            s.req_header().uri
        );
        http::Response::new(body.into_bytes())
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(url) = &args.rate_limit_redis {
        if let Err(e) = RedisAddr::parse(url) {
            eprintln!("--rate-limit-redis: {e}");
            std::process::exit(2);
        }
    }
    let grpc_web = args.grpc_web.then(|| {
        let mut bridge = GrpcWebBuilder::new();
        let cors = match args.grpc_web_cors.as_slice() {
            [] => return bridge,
            [any] if any == "*" => Ok(GrpcWebCors::any_origin()),
            origins => GrpcWebCors::origins(origins),
        };
        match cors {
            Ok(cors) => bridge = bridge.cors(cors),
            Err(e) => {
                eprintln!("--grpc-web-cors: {e}");
                std::process::exit(2);
            }
        }
        bridge
    });
    let size = args.cache_size.unwrap_or(128 << 20);
    let cache = match &args.cache_dir {
        Some(dir) => match HttpCache::disk(dir, size) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("--cache-dir {}: {e}", dir.display());
                std::process::exit(2);
            }
        },
        None if args.cache => Some(HttpCache::memory(size as usize)),
        None => None,
    };
    let mut server = Server::new_or_exit(args.opt);
    server.bootstrap();

    let mut upstreams = args.upstream.clone();
    if upstreams.is_empty() {
        // No upstream given: two demo servers on ports from the OS.
        for i in 1..=2 {
            let addr = pingora::core::utils::free_loopback_addr()?;
            let mut app = HttpServer::new(Demo(i));
            app.set_h2c(true);
            let mut demo = Service::new(format!("demo upstream {i}"), app);
            demo.add_tcp(&addr);
            server.add_service(demo);
            upstreams.push(addr);
        }
        eprintln!("demo upstreams: {}", upstreams.join(", "));
    }

    // Round robin, with a TCP health check every second in the background.
    let mut lb = LoadBalancer::<RoundRobin>::try_from_iter(&upstreams)?;
    lb.backends_mut().set_health_check(TcpHealthCheck::new());
    lb.health_check_frequency = Some(Duration::from_secs(args.health_check_secs));
    // Every backend checked at once each round (not one after another).
    lb.parallel_health_check = true;
    let checks = background_service("health checks", lb);
    let proxy = Lb {
        lb: checks.task(),
        access_log: AccessLog::from_conf(&server.configuration)?,
        h2: args.upstream_h2,
        tls: args.upstream_tls,
        ca: args.upstream_ca,
        timeout: Duration::from_millis(args.upstream_timeout_ms),
        failovers: register_int_counter!(
            "lb_example_failed_connects_total",
            "Upstream connects that failed (each is retried on another backend)"
        )
        .map_err(|e| Error::because(ErrorType::InternalError, "metric", e))?,
        rate_limit: args.rate_limit,
        rate_limit_redis: args.rate_limit_redis,
        compress: args.compress,
        grpc_web,
        cache,
    };

    let mut app = HttpServer::new(HttpProxy::new(proxy, Some(&server.configuration)));
    app.set_h2c(args.h2c);
    let mut service = Service::new("load balancer".to_string(), app);
    service.add_tcp(&args.listen);
    if args.proxy_protocol {
        service.enable_proxy_protocol(&args.listen, None)?;
    }
    if let (Some(addr), Some(cert), Some(key)) = (&args.tls_listen, &args.cert, &args.key) {
        let mut tls = TlsSettings::intermediate(cert, key)?;
        tls.enable_h2();
        service.add_tls_with_settings(addr, None, tls)?;
    }
    // Prometheus metrics: ours and any the program registers itself.
    let mut metrics = pingora_prometheus::prometheus_http_service();
    metrics.add_tcp(&args.metrics);
    server.add_service(metrics);

    eprintln!("try: curl http://{}/", args.listen);
    eprintln!("metrics: curl http://{}/metrics", args.metrics);
    server.add_service(checks);
    server.add_service(service);
    server.run_forever();
}
