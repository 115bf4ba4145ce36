//! The chunked decoder alone, fed in pieces of fuzzer-chosen size. It must
//! never panic, never emit more bytes than it was given, and decode the
//! same whatever the split.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pingora_core::protocols::http::v1::chunked::{ChunkedDecoder, Decoded};

fn run(data: &[u8], step: usize) -> Option<Vec<u8>> {
    let mut dec = ChunkedDecoder::new(256, 1024, 16);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut fed = 0;
    loop {
        match dec.decode(&mut buf) {
            Err(_) => return None,
            Ok(Decoded::Data(d)) => {
                assert!(!d.is_empty());
                out.extend_from_slice(&d);
            }
            Ok(Decoded::Done) => return Some(out),
            Ok(Decoded::NeedMore) => {
                if fed == data.len() {
                    return None;
                }
                let n = step.min(data.len() - fed);
                buf.extend_from_slice(&data[fed..fed + n]);
                fed += n;
            }
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&step, data)) = input.split_first() else {
        return;
    };
    let a = run(data, step as usize % 32 + 1);
    let b = run(data, data.len().max(1));
    if let Some(a) = &a {
        assert!(a.len() <= data.len());
    }
    assert_eq!(a, b, "decoding depends on how the input was split");
});
