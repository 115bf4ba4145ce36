//! The connection pool's put + get (the reuse cycle of a keep-alive
//! upstream connection), alone and with two threads at once.
// criterion's macros make public functions that carry no docs.
#![allow(missing_docs)]
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use pingora::pool::ConnectionPool;

/// `iters` put+get pairs on each of `threads` threads; wall time per pair
/// per thread.
fn contended(
    pool: &Arc<ConnectionPool<u64>>,
    threads: u64,
    iters: u64,
    same_key: bool,
) -> Duration {
    let barrier = Arc::new(Barrier::new(threads as usize + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (pool, barrier) = (pool.clone(), barrier.clone());
            std::thread::spawn(move || {
                let key = if same_key { 7 } else { t };
                barrier.wait();
                for i in 0..iters {
                    pool.put(key, i);
                    std::hint::black_box(pool.get(key));
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
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("pool");
    let pool = Arc::new(ConnectionPool::<u64>::new(128));
    // Some other keys and idle connections around, as in a real pool.
    for k in 100..164 {
        pool.put(k, k);
    }
    g.bench_function("put_get_one_thread", |b| {
        b.iter(|| {
            pool.put(7, 1);
            std::hint::black_box(pool.get(7));
        })
    });
    g.bench_function("put_get_two_threads_same_key", |b| {
        b.iter_custom(|iters| contended(&pool, 2, iters, true))
    });
    g.bench_function("put_get_two_threads_own_keys", |b| {
        b.iter_custom(|iters| contended(&pool, 2, iters, false))
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
