//! Build a typical browser request (12 headers) and serialize it to HTTP/1
//! wire bytes; and the same request parsed back from the wire.
// criterion's macros make public functions that carry no docs.
#![allow(missing_docs)]
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion};
use pingora::http::RequestHeader;

const HEADERS: [(&str, &str); 12] = [
    ("Host", "www.example.com"),
    (
        "User-Agent",
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    ),
    (
        "Accept",
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    ),
    ("Accept-Language", "en-US,en;q=0.5"),
    ("Accept-Encoding", "gzip, deflate, br, zstd"),
    ("Referer", "https://www.example.com/"),
    ("Connection", "keep-alive"),
    ("Cookie", "session=3f2a9c1e7b; theme=dark; consent=yes"),
    ("Upgrade-Insecure-Requests", "1"),
    ("Sec-Fetch-Dest", "document"),
    ("Sec-Fetch-Mode", "navigate"),
    ("Priority", "u=0, i"),
];

fn build() -> RequestHeader {
    let mut req = RequestHeader::build("GET", b"/articles/2026/11/index.html?page=2", Some(12))
        .expect("valid request");
    for (n, v) in HEADERS {
        req.append_header(n, v).expect("valid header");
    }
    req
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("http_header");
    g.bench_function("build_12_headers", |b| {
        b.iter(|| std::hint::black_box(build()))
    });
    let req = build();
    let mut buf = BytesMut::with_capacity(1024);
    g.bench_function("serialize_12_headers", |b| {
        b.iter(|| {
            buf.clear();
            req.write_h1(&mut buf);
            std::hint::black_box(&buf);
        })
    });
    g.bench_function("build_and_serialize_12_headers", |b| {
        b.iter(|| std::hint::black_box(build().to_wire()))
    });
    let wire: Bytes = req.to_wire();
    g.bench_function("httparse_only_12_headers", |b| {
        b.iter(|| {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut r = httparse::Request::new(&mut headers);
            std::hint::black_box(r.parse(&wire).unwrap());
        })
    });
    g.bench_function("parse_into_request_header_12_headers", |b| {
        b.iter(|| {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut r = httparse::Request::new(&mut headers);
            r.parse(&wire).unwrap();
            std::hint::black_box(RequestHeader::from_httparse(&r, &wire).unwrap())
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
