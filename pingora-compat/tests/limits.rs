//! `pingora-limits` used as Pingora 0.8's documentation uses it: a rate per
//! key in `request_filter`-style code, in-flight counts with guards, and
//! the sketch itself.

use std::sync::OnceLock;
use std::time::Duration;

use pingora_limits::estimator::Estimator;
use pingora_limits::inflight::Inflight;
use pingora_limits::rate::{Rate, RateComponents, PROPORTIONAL_RATE_ESTIMATE_CALC_FN};

fn limiter() -> &'static Rate {
    static RATE: OnceLock<Rate> = OnceLock::new();
    RATE.get_or_init(|| Rate::new(Duration::from_secs(1)))
}

/// Whether a request from `appid` is over 3 per second (the shape of
/// Pingora's rate-limiter example).
fn over_limit(appid: &str) -> bool {
    let curr_window_requests: isize = limiter().observe(&appid, 1);
    curr_window_requests > 3
}

#[test]
fn rate_limiter_as_pingoras_example_writes_it() {
    let refused = (0..6).filter(|_| over_limit("app-1")).count();
    assert_eq!(refused, 3);
    assert!(!over_limit("app-2"));
    let per_sec: f64 = limiter().rate(&"app-1");
    assert!(per_sec >= 0.0);
    let sliding: f64 = limiter().rate_with(&"app-1", PROPORTIONAL_RATE_ESTIMATE_CALC_FN);
    assert!(sliding >= 6.0);
    let parts: RateComponents = limiter().rate_with(&"app-1", |c| c);
    assert_eq!(parts.interval, Duration::from_secs(1));
    assert!(parts.curr_samples >= 6 && parts.prev_samples >= 0);
    assert!((0.0..=1.0).contains(&parts.current_interval_fraction));
    let custom = Rate::new_with_estimator_config(Duration::from_millis(500), 2, 256);
    assert_eq!(custom.observe(&7u64, 2), 2);
}

#[test]
fn inflight_and_estimator() {
    let inflight = Inflight::new();
    let (guard, count): (_, isize) = inflight.incr("upstream", 1);
    assert_eq!(count, 1);
    assert_eq!(guard.incr(), 2);
    assert_eq!(guard.get(), 2);
    drop(guard);
    assert_eq!(inflight.incr("upstream", 0).1, 0);

    let e = Estimator::new(3, 128);
    assert_eq!(e.incr("k", 5), 5);
    e.decr("k", 2);
    assert_eq!(e.get("k"), 3);
    e.reset();
    assert_eq!(e.get("k"), 0);
}
