//! Shared by the fuzz targets: the session's stream is pingora-core's
//! in-memory [`MemStream`], fed the fuzzer's bytes in pieces.

use pingora_core::protocols::mem::MemStream;
use pingora_core::protocols::Stream;

/// The first byte of `input` picks the read size (1 to 64); the rest is
/// what the peer sent.
pub fn stream(input: &[u8]) -> Stream {
    let (step, data) = match input.split_first() {
        Some((s, rest)) => (*s as usize % 64 + 1, rest.to_vec()),
        None => (1, Vec::new()),
    };
    Box::new(MemStream::new(data, step).0)
}

/// Run a future to completion on a current-thread runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    thread_local! {
        static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
    }
    RT.with(|rt| rt.block_on(f))
}
