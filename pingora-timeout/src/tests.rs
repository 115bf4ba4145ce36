use super::*;
use std::future::{pending, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake};
use std::time::{Duration, Instant};

/// How late a wheel timer may fire: two ticks by design, plus generous
/// slack for a busy CI machine. Lateness beyond this is a bug, not noise.
const MAX_LATE: Duration = Duration::from_millis(250);

#[test]
fn ready_future_is_not_timed() {
    // Registering a timer clones the waker; a ready future must not.
    let counter = Arc::new(CountWake(AtomicUsize::new(0)));
    let waker: std::task::Waker = counter.clone().into();
    let mut cx = Context::from_waker(&waker);
    let mut t = Box::pin(timeout(Duration::from_secs(5), async { 1 }));
    assert_eq!(t.as_mut().poll(&mut cx), Poll::Ready(Ok(1)));
    assert_eq!(Arc::strong_count(&counter), 2, "a timer was registered");
}

#[tokio::test]
async fn expires_not_early_and_not_much_late() {
    for ms in [1u64, 15, 50, 120] {
        let d = Duration::from_millis(ms);
        let start = Instant::now();
        let r = timeout(d, pending::<()>()).await;
        let took = start.elapsed();
        assert_eq!(r, Err(Elapsed));
        assert!(took >= d, "fired early: {took:?} < {d:?}");
        assert!(took < d + MAX_LATE, "fired late: {took:?} for {d:?}");
    }
}

/// The typical lateness is what the crate documents (up to two ticks):
/// the median of several timers, so one scheduling hiccup on a busy
/// machine does not decide it, while a wheel that ran a tick or more
/// behind on every timer would.
#[tokio::test]
async fn typical_lateness_is_within_two_ticks() {
    let d = Duration::from_millis(15);
    let mut late: Vec<Duration> = Vec::new();
    for _ in 0..9 {
        let start = Instant::now();
        assert_eq!(timeout(d, pending::<()>()).await, Err(Elapsed));
        late.push(start.elapsed() - d);
    }
    late.sort();
    let median = late[late.len() / 2];
    let bound = Duration::from_millis(2 * crate::wheel::TICK_MS + 10);
    assert!(median < bound, "median lateness {median:?} (all: {late:?})");
}

#[tokio::test]
async fn sleep_waits_its_duration() {
    let d = Duration::from_millis(30);
    let start = Instant::now();
    sleep(d).await;
    let took = start.elapsed();
    assert!(took >= d, "woke early: {took:?}");
    assert!(took < d + MAX_LATE, "woke late: {took:?}");
    // Zero duration is ready at once.
    sleep(Duration::ZERO).await;
}

#[tokio::test]
async fn zero_duration_times_out_pending_future_only() {
    assert_eq!(timeout(Duration::ZERO, async { 3 }).await, Ok(3));
    assert_eq!(timeout(Duration::ZERO, pending::<()>()).await, Err(Elapsed));
}

#[tokio::test]
async fn inner_finishing_first_wins() {
    let r = timeout(Duration::from_secs(2), async {
        sleep(Duration::from_millis(20)).await;
        "done"
    })
    .await;
    assert_eq!(r, Ok("done"));
}

/// A waker that counts its wakes.
struct CountWake(AtomicUsize);
impl Wake for CountWake {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn cancelled_timer_is_removed_and_never_wakes() {
    let counter = Arc::new(CountWake(AtomicUsize::new(0)));
    let waker = counter.clone().into();
    let mut cx = Context::from_waker(&waker);
    let mut t = Box::pin(timeout(Duration::from_millis(20), pending::<()>()));
    assert!(t.as_mut().poll(&mut cx).is_pending());
    assert!(wheel::pending_wakers() >= 1);
    // Cancel by dropping, then let the deadline pass on a timer of our own.
    drop(t);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(sleep(Duration::from_millis(60)));
    assert_eq!(
        counter.0.load(Ordering::SeqCst),
        0,
        "a dropped timer woke its task"
    );
}

#[test]
fn many_cancelled_timers_do_not_accumulate() {
    let counter = Arc::new(CountWake(AtomicUsize::new(0)));
    let waker = counter.into();
    let mut cx = Context::from_waker(&waker);
    for _ in 0..10_000 {
        let mut t = Box::pin(timeout(Duration::from_secs(3600), pending::<()>()));
        assert!(t.as_mut().poll(&mut cx).is_pending());
    }
    // Each drop freed its slot; the slots are reused, so few remain live.
    assert!(wheel::pending_wakers() < 100, "{}", wheel::pending_wakers());
}

#[test]
fn latest_waker_is_woken() {
    let first = Arc::new(CountWake(AtomicUsize::new(0)));
    let second = Arc::new(CountWake(AtomicUsize::new(0)));
    let (w1, w2) = (first.clone().into(), second.clone().into());
    let mut t = Box::pin(timeout(Duration::from_millis(10), pending::<()>()));
    assert!(t.as_mut().poll(&mut Context::from_waker(&w1)).is_pending());
    assert!(t.as_mut().poll(&mut Context::from_waker(&w2)).is_pending());
    let deadline = Instant::now() + Duration::from_secs(5);
    while second.0.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "timer never fired");
        std::thread::yield_now();
    }
    assert_eq!(first.0.load(Ordering::SeqCst), 0);
    assert_eq!(
        t.as_mut().poll(&mut Context::from_waker(&w2)),
        Poll::Ready(Err(Elapsed))
    );
}

#[test]
fn works_without_a_runtime_across_threads() {
    // Timers registered from many threads, each on its own shard.
    let handles: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let d = Duration::from_millis(5 + i * 3);
                    let start = Instant::now();
                    assert_eq!(timeout(d, pending::<()>()).await, Err(Elapsed));
                    assert!(start.elapsed() >= d);
                })
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[tokio::test]
async fn tokio_variant_has_same_behaviour() {
    assert_eq!(
        tokio_timer::timeout(Duration::from_secs(1), async { 2 }).await,
        Ok(2)
    );
    let start = Instant::now();
    let r = tokio_timer::timeout(Duration::from_millis(20), pending::<()>()).await;
    assert_eq!(r, Err(Elapsed));
    assert!(start.elapsed() >= Duration::from_millis(20));
    tokio_timer::sleep(Duration::from_millis(1)).await;
}

#[tokio::test]
async fn pingora_names_work() {
    use fast_timeout::{fast_sleep, fast_timeout};
    assert_eq!(
        fast_timeout(Duration::from_secs(1), async { 4 }).await,
        Ok(4)
    );
    fast_sleep(Duration::from_millis(1)).await;
    assert_eq!(Elapsed.to_string(), "deadline has elapsed");
    let boxed: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(sleep(Duration::ZERO));
    boxed.await;
}

#[tokio::test]
async fn huge_duration_does_not_overflow() {
    assert_eq!(timeout(Duration::MAX, async { 5 }).await, Ok(5));
    let r = timeout(
        Duration::from_millis(10),
        timeout(Duration::MAX, pending::<()>()),
    )
    .await;
    assert_eq!(r, Err(Elapsed));
}

/// Wait on `d` until it expires; how long that took.
async fn wait_expired(d: &mut Deadline) -> Duration {
    let start = Instant::now();
    std::future::poll_fn(|cx| d.poll_expired(cx)).await;
    start.elapsed()
}

#[tokio::test]
async fn a_deadline_expires_not_early_and_not_much_late() {
    let mut d = Deadline::new();
    for ms in [15u64, 60] {
        let limit = Duration::from_millis(ms);
        d.arm(limit);
        let took = wait_expired(&mut d).await;
        assert!(took >= limit, "fired early: {took:?} < {limit:?}");
        assert!(took < limit + MAX_LATE, "fired late: {took:?}");
    }
}

#[tokio::test]
async fn a_deadline_moves_with_each_operation() {
    let mut d = Deadline::new();
    // Operations that each finish within 40 ms of their 150 ms limit, for
    // 600 ms: the timer registered by the first one fires while later ones
    // run, and must not end them.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(600) {
        d.arm(Duration::from_millis(150));
        let work = tokio::time::sleep(Duration::from_millis(40));
        tokio::pin!(work);
        let expired = std::future::poll_fn(|cx| {
            if work.as_mut().poll(cx).is_ready() {
                return Poll::Ready(false);
            }
            d.poll_expired(cx).map(|()| true)
        })
        .await;
        assert!(!expired, "an operation within its limit timed out");
    }
    // Nothing armed: never expires.
    d.disarm();
    let never = tokio::time::timeout(Duration::from_millis(50), wait_expired(&mut d)).await;
    assert!(never.is_err());
}

#[tokio::test]
async fn a_shorter_operation_after_a_longer_one_gets_its_own_deadline() {
    let mut d = Deadline::new();
    // A long operation registers a timer 10 s out and finishes at once.
    d.arm(Duration::from_secs(10));
    let mut cx = Context::from_waker(std::task::Waker::noop());
    assert!(d.poll_expired(&mut cx).is_pending());
    // A short one must not wait for that timer.
    let limit = Duration::from_millis(30);
    d.arm(limit);
    let took = wait_expired(&mut d).await;
    assert!(took >= limit && took < limit + MAX_LATE, "{took:?}");
    // And a long one after a short one is not ended by the short one's
    // timer, which fires first.
    d.arm(Duration::from_millis(20));
    assert!(d.poll_expired(&mut cx).is_pending());
    let limit = Duration::from_millis(200);
    d.arm(limit);
    let took = wait_expired(&mut d).await;
    assert!(took >= limit && took < limit + MAX_LATE, "{took:?}");
}
