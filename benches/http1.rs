//! The HTTP/1 server session on a typical browser request (12 headers):
//! read and parse it, then write a response; next to httparse alone (the
//! floor) on the same bytes. And the chunked decoder's throughput.
//!
//! The session reads from an in-memory stream, so no syscalls are counted.
// criterion's macros make public functions that carry no docs.
#![allow(missing_docs)]
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pingora::core::protocols::http::v1::chunked::{ChunkedDecoder, Decoded};
use pingora::core::protocols::http::v1::server::HttpSession;
use pingora::core::protocols::mem::MemStream;
use pingora::http::ResponseHeader;

const REQUEST: &[u8] = b"GET /articles/2026/11/index.html?page=2 HTTP/1.1\r\n\
Host: www.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Referer: https://www.example.com/\r\n\
Connection: keep-alive\r\n\
Cookie: session=3f2a9c1e7b; theme=dark; consent=yes\r\n\
Upgrade-Insecure-Requests: 1\r\n\
Sec-Fetch-Dest: document\r\n\
Sec-Fetch-Mode: navigate\r\n\
Priority: u=0, i\r\n\r\n";

fn response() -> Box<ResponseHeader> {
    let mut resp = ResponseHeader::build(200, Some(6)).unwrap();
    resp.append_header("Server", "pingora").unwrap();
    resp.append_header("Date", "Wed, 25 Nov 2026 10:00:00 GMT")
        .unwrap();
    resp.append_header("Content-Type", "text/html; charset=utf-8")
        .unwrap();
    resp.append_header("Cache-Control", "max-age=60").unwrap();
    resp.append_header("Content-Length", "13").unwrap();
    Box::new(resp)
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let wire = Bytes::from_static(REQUEST);
    let mut g = c.benchmark_group("http1");

    g.bench_function("httparse_only_12_headers", |b| {
        b.iter(|| {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut r = httparse::Request::new(&mut headers);
            std::hint::black_box(r.parse(&wire).unwrap());
        })
    });

    g.bench_function("session_read_request_12_headers", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let (s, _) = MemStream::new(wire.clone(), usize::MAX);
                    let mut session = HttpSession::new(Box::new(s));
                    std::hint::black_box(session.read_request().await.unwrap());
                }
                start.elapsed()
            })
        })
    });

    g.bench_function("session_request_and_response", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let (s, out) = MemStream::new(wire.clone(), usize::MAX);
                    let mut session = HttpSession::new(Box::new(s));
                    session.read_request().await.unwrap();
                    session.write_response_header(response()).await.unwrap();
                    session.write_body(b"<html></html>").await.unwrap();
                    session.finish_body().await.unwrap();
                    std::hint::black_box(out);
                }
                start.elapsed()
            })
        })
    });

    // 64 KiB of body in 4 KiB chunks.
    let mut chunked = BytesMut::new();
    for _ in 0..16 {
        chunked.extend_from_slice(b"1000\r\n");
        chunked.extend_from_slice(&[b'x'; 4096]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let chunked = chunked.freeze();
    g.throughput(Throughput::Bytes(65536));
    g.bench_function("chunked_decode_64k", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&chunked[..]);
            let mut dec = ChunkedDecoder::new(4096, 4096, 16);
            let mut n = 0;
            while let Decoded::Data(d) = dec.decode(&mut buf).unwrap() {
                n += d.len();
            }
            assert_eq!(n, 65536);
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
