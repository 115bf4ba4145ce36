//! ns per pick for each selection algorithm, with 10 and 1,000 backends,
//! and with two threads picking at once (1,000 backends): the walk the
//! load balancer takes (`start`, then the first `candidate`), without the
//! `Arc` clone of Pingora's `iter`.
// criterion's macros make public functions that carry no docs.
#![allow(missing_docs)]
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use pingora::lb::selection::{
    BackendSelection, FnvHash, Ketama, LeastConnection, Maglev, PeakEwma, Random, RoundRobin,
};
use pingora::lb::Backend;

fn backends(n: usize) -> Vec<Backend> {
    (0..n)
        .map(|i| {
            Backend::new_with_weight(
                &format!("10.{}.{}.{}:80", i / 65536, (i / 256) % 256, i % 256),
                1 + i % 3,
            )
            .unwrap()
        })
        .collect()
}

fn make_keys() -> Vec<[u8; 8]> {
    (0..1024u64)
        .map(|i| (i * 0x9e37_79b9_7f4a_7c15).to_le_bytes())
        .collect()
}

fn one<S: BackendSelection + Send + Sync + 'static>(c: &mut Criterion, name: &str) {
    let keys = make_keys();
    for n in [10, 1000] {
        let s = Arc::new(S::build_sorted(&backends(n)));
        let mut i = 0;
        c.bench_function(&format!("lb/{name}/{n}"), |b| {
            b.iter(|| {
                i = (i + 1) & 1023;
                std::hint::black_box(s.candidate(s.start(&keys[i]), 0));
            })
        });
    }
    let s = Arc::new(S::build_sorted(&backends(1000)));
    c.bench_function(&format!("lb/{name}/1000/2_threads"), |b| {
        b.iter_custom(|iters| {
            let barrier = Arc::new(Barrier::new(3));
            let handles: Vec<_> = (0..2)
                .map(|t| {
                    let (s, barrier) = (s.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        let keys = make_keys();
                        barrier.wait();
                        for i in 0..iters as usize {
                            std::hint::black_box(s.candidate(s.start(&keys[(i + t) & 1023]), 0));
                        }
                    })
                })
                .collect();
            barrier.wait();
            let start = Instant::now();
            for h in handles {
                h.join().unwrap();
            }
            start.elapsed()
        })
    });
}

fn bench(c: &mut Criterion) {
    one::<RoundRobin>(c, "round_robin");
    one::<Random>(c, "weighted_random");
    one::<Ketama>(c, "ketama");
    one::<FnvHash>(c, "fnv");
    one::<Maglev>(c, "maglev");
    one::<LeastConnection>(c, "least_conn");
    one::<PeakEwma>(c, "p2c_peak_ewma");
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
