//! An HTTP/2 load client that behaves as browsers and curl do when a
//! server goes away gracefully: a request the server refused (GOAWAY past
//! its stream, REFUSED_STREAM, a connection that closed before any response
//! byte) is sent again on a new connection. Used by
//! `benches/load/upgrade.sh` beside h2load (which counts such requests as
//! failed instead): what clients that follow RFC 9113 §6.8 see across
//! graceful upgrades.
//!
//! `cargo bench --bench h2_retry_client -- URL SECONDS CONCURRENCY`
//! (`http://` for h2c by prior knowledge, `https://` for h2 by ALPN,
//! certificate not verified). Prints `requests N, errors E, resent R`.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pingora::connectors::http::Connector;
use pingora::upstreams::peer::{HttpPeer, ALPN};
use pingora_http::RequestHeader;

/// Tries per request before it counts as an error.
const TRIES: usize = 4;

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    errors: AtomicU64,
    resent: AtomicU64,
}

async fn one(c: &Connector, peer: &HttpPeer, host: &str) -> pingora_error::Result<()> {
    let (mut s, _) = c.get_http_session(peer).await?;
    let mut req = RequestHeader::build("GET", b"/", None)?;
    req.insert_header("Host", host)?;
    s.write_request_header_eos(Box::new(req), true).await?;
    s.read_response().await?;
    let status = s.resp_header().map_or(0, |r| r.status.as_u16());
    while s.read_body_bytes().await?.is_some() {}
    c.release(s, peer);
    if status != 200 {
        return pingora_error::Error::e_explain(
            pingora_error::ErrorType::HTTPStatus(status),
            "not a 200",
        );
    }
    Ok(())
}

fn main() {
    // `cargo bench` passes `--bench`; the rest are ours.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.len() < 3 {
        eprintln!("usage: h2_retry_client URL SECONDS CONCURRENCY");
        return;
    }
    let url: http::Uri = args[0].parse().expect("a URL");
    let seconds: u64 = args[1].parse().expect("seconds");
    let concurrency: usize = args[2].parse().expect("concurrency");
    let tls = url.scheme_str() == Some("https");
    let authority = url.authority().expect("host:port").to_string();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let counts = Arc::new(Counts::default());
    rt.block_on(async {
        let mut peer = HttpPeer::new(authority.as_str(), tls, "localhost".to_string());
        peer.options.alpn = ALPN::H2;
        peer.options.max_h2_streams = 5;
        peer.options.verify_cert = false;
        peer.options.verify_hostname = false;
        let peer = Arc::new(peer);
        let connector = Arc::new(Connector::new(None));
        let until = Instant::now() + Duration::from_secs(seconds);
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let (c, p, n, host) = (
                connector.clone(),
                peer.clone(),
                counts.clone(),
                authority.clone(),
            );
            tasks.push(tokio::spawn(async move {
                while Instant::now() < until {
                    let mut tries = 0;
                    loop {
                        tries += 1;
                        match one(&c, &p, &host).await {
                            Ok(()) => {
                                n.ok.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            // Never processed by the server: safe to send
                            // again, as RFC 9113 §8.7 allows.
                            Err(e) if e.retry() && tries < TRIES => {
                                n.resent.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                eprintln!("request failed: {e}");
                                n.errors.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                        }
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    println!(
        "requests {}, errors {}, resent {}",
        counts.ok.load(Ordering::Relaxed) + counts.errors.load(Ordering::Relaxed),
        counts.errors.load(Ordering::Relaxed),
        counts.resent.load(Ordering::Relaxed)
    );
}
