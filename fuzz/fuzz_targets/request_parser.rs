//! The server session on arbitrary client bytes: requests, bodies,
//! pipelining. It must never panic or loop; every request it accepts must
//! have a consistent header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pingora_core::protocols::http::v1::{server::HttpSession, H1Options};
use pingora_fuzz::{block_on, stream};
use pingora_http::ResponseHeader;

fuzz_target!(|input: &[u8]| {
    let opts = H1Options {
        max_header_bytes: 4096,
        max_headers: 32,
        max_uri_len: 1024,
        max_body_bytes: Some(1 << 16),
        ..Default::default()
    };
    let mut s = HttpSession::new_with_options(stream(input), opts);
    block_on(async {
        // At most as many requests as there are bytes: each takes some.
        for _ in 0..input.len() + 1 {
            match s.read_request().await {
                Ok(Some(_)) => {}
                _ => return,
            }
            let req = s.req_header();
            assert!(req.headers.len() <= 32);
            assert!(req.version == http::Version::HTTP_10 || req.version == http::Version::HTTP_11);
            let mut total = 0u64;
            loop {
                match s.read_body_bytes().await {
                    Ok(Some(b)) => total += b.len() as u64,
                    Ok(None) => break,
                    Err(_) => return,
                }
            }
            assert!(total <= input.len() as u64);
            let mut resp = ResponseHeader::build(200, None).unwrap();
            resp.insert_header("Content-Length", "2").unwrap();
            if s.write_response_header(Box::new(resp)).await.is_err() {
                return;
            }
            let _ = s.write_body(b"ok").await;
            match s.finish().await {
                Ok(true) => {}
                _ => return,
            }
        }
        panic!("more requests than input bytes");
    });
});
