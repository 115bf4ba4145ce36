//! Timeouts made and dropped before they fire: the wheel-backed
//! `pingora::timeout::timeout` against `tokio::time::timeout`.
//!
//! Two inner futures: one ready at once (a read that finds data waiting), and
//! one pending once (a read that waits for data: the timer is registered and
//! then cancelled). Each on one task, and on 64 tasks of a 2-worker
//! multi-thread runtime.
// criterion's macros make public functions that carry no docs.
#![allow(missing_docs)]
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use pingora::timeout::{timeout, tokio_timer};

/// Pending on the first poll (after asking to be polled again), then ready.
struct PendingOnce(bool);

impl Future for PendingOnce {
    type Output = u32;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u32> {
        if self.0 {
            Poll::Ready(1)
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

const D: Duration = Duration::from_secs(1);
const TASKS: u64 = 64;

macro_rules! one_task {
    ($group:expr, $name:expr, $rt:expr, $make:expr) => {
        $group.bench_function($name, |b| {
            b.iter_custom(|iters| {
                // Inside a spawned task, so a wake is a cheap reschedule
                // rather than an unpark of the thread blocked in block_on.
                $rt.block_on($rt.spawn(async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let r = $make.await;
                        std::hint::black_box(r.unwrap());
                    }
                    start.elapsed()
                }))
                .unwrap()
            })
        });
    };
}

macro_rules! many_tasks {
    ($group:expr, $name:expr, $rt:expr, $make:expr) => {
        $group.bench_function($name, |b| {
            b.iter_custom(|iters| {
                $rt.block_on(async {
                    let per_task = iters.div_ceil(TASKS);
                    let start = Instant::now();
                    let handles: Vec<_> = (0..TASKS)
                        .map(|_| {
                            tokio::spawn(async move {
                                for _ in 0..per_task {
                                    let r = $make.await;
                                    std::hint::black_box(r.unwrap());
                                }
                            })
                        })
                        .collect();
                    for h in handles {
                        h.await.unwrap();
                    }
                    start.elapsed()
                })
            })
        });
    };
}

fn bench(c: &mut Criterion) {
    let single = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let mut g = c.benchmark_group("timeout_ready/one_task");
    one_task!(g, "pingora", single, timeout(D, async { 1u32 }));
    one_task!(g, "tokio", single, tokio::time::timeout(D, async { 1u32 }));
    one_task!(
        g,
        "pingora_tokio_variant",
        single,
        tokio_timer::timeout(D, async { 1u32 })
    );
    g.finish();

    let mut g = c.benchmark_group("timeout_pending_once/one_task");
    // The floor: the inner future alone, with no timeout.
    one_task!(g, "no_timeout", single, async {
        Ok::<_, ()>(PendingOnce(false).await)
    });
    one_task!(g, "pingora", single, timeout(D, PendingOnce(false)));
    one_task!(
        g,
        "tokio",
        single,
        tokio::time::timeout(D, PendingOnce(false))
    );
    g.finish();

    let mut g = c.benchmark_group("timeout_ready/64_tasks_2_threads");
    many_tasks!(g, "pingora", multi, timeout(D, async { 1u32 }));
    many_tasks!(g, "tokio", multi, tokio::time::timeout(D, async { 1u32 }));
    g.finish();

    let mut g = c.benchmark_group("timeout_pending_once/64_tasks_2_threads");
    many_tasks!(g, "no_timeout", multi, async {
        Ok::<_, ()>(PendingOnce(false).await)
    });
    many_tasks!(g, "pingora", multi, timeout(D, PendingOnce(false)));
    many_tasks!(
        g,
        "tokio",
        multi,
        tokio::time::timeout(D, PendingOnce(false))
    );
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
