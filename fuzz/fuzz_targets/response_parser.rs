//! The client session on arbitrary upstream bytes: interim responses, the
//! final header, the body in every framing. It must never panic or loop.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pingora_core::protocols::http::v1::{client::HttpSession, H1Options};
use pingora_fuzz::{block_on, stream};
use pingora_http::RequestHeader;

fuzz_target!(|input: &[u8]| {
    // The second byte picks the request method (HEAD changes framing).
    let method = match input.get(1) {
        Some(b) if b % 3 == 0 => "HEAD",
        Some(b) if b % 3 == 1 => "CONNECT",
        _ => "GET",
    };
    let opts = H1Options {
        max_header_bytes: 4096,
        max_headers: 32,
        ..Default::default()
    };
    let mut s = HttpSession::new_with_options(stream(input), opts);
    block_on(async {
        let mut req = RequestHeader::build(method, b"/", None).unwrap();
        req.insert_header("Host", "fuzz").unwrap();
        s.write_request_header(Box::new(req)).await.unwrap();
        let mut interim = 0;
        loop {
            if s.read_response().await.is_err() {
                return;
            }
            if !s.is_interim() {
                break;
            }
            interim += 1;
            assert!(interim <= input.len(), "more 1xx than input bytes");
        }
        let mut total = 0u64;
        loop {
            match s.read_body_bytes().await {
                Ok(Some(b)) => total += b.len() as u64,
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(total <= input.len() as u64);
        let _ = s.can_reuse();
    });
});
