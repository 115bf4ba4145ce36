//! Nanoseconds per operation of the estimators, one thread and two
//! sharing one `Rate` (`cargo bench -p pingora-limits --bench limits`).
// criterion's macros make public functions that carry no docs.
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use pingora_limits::estimator::Estimator;
use pingora_limits::inflight::Inflight;
use pingora_limits::rate::{Rate, PROPORTIONAL_RATE_ESTIMATE_CALC_FN};

fn estimators(c: &mut Criterion) {
    let e = Estimator::new(4, 1024);
    let mut i = 0u32;
    c.bench_function("estimator incr (4 x 1024)", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            black_box(e.incr(i % 1000, 1))
        })
    });
    let rate = Rate::new(Duration::from_secs(1));
    let ip: std::net::IpAddr = "192.0.2.7".parse().unwrap();
    c.bench_function("rate observe (client address)", |b| {
        b.iter(|| black_box(rate.observe(&ip, 1)))
    });
    c.bench_function("rate sliding estimate (client address)", |b| {
        b.iter(|| black_box(rate.rate_with(&ip, PROPORTIONAL_RATE_ESTIMATE_CALC_FN)))
    });
    let f = Inflight::new();
    c.bench_function("inflight incr + guard drop", |b| {
        b.iter(|| drop(black_box(f.incr(ip, 1))))
    });
    // A second thread hammering the same counters: the cost of sharing.
    let shared = Arc::new(Rate::new(Duration::from_secs(1)));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let other = {
        let (shared, stop) = (shared.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                shared.observe(&ip, 1);
            }
        })
    };
    c.bench_function("rate observe, contended by a second thread", |b| {
        b.iter(|| black_box(shared.observe(&ip, 1)))
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    other.join().unwrap();
}

criterion_group!(benches, estimators);
criterion_main!(benches);
