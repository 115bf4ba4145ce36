//! Events per key over an interval.

use std::hash::Hash;

use foldhash::fast::RandomState;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::estimator::Estimator;

/// What a custom rate function gets ([`Rate::rate_with`]): the counts of
/// the interval before and of the one under way, the interval's length,
/// and how far into the current interval (0 to 1) the question came.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct RateComponents {
    /// Events in the last whole interval.
    pub prev_samples: isize,
    /// Events so far in the interval under way.
    pub curr_samples: isize,
    /// The interval's length.
    pub interval: Duration,
    /// How much of the current interval has passed, from 0 to 1.
    pub current_interval_fraction: f64,
}

/// The rate per second over the last `interval`, sliding: the previous
/// interval's count weighted by how much of it is still inside the window,
/// plus the current interval's count (the estimate Cloudflare describes in
/// "Counting things, a lot of different things").
///
/// ```
/// use std::time::Duration;
/// use pingora_limits::rate::{Rate, PROPORTIONAL_RATE_ESTIMATE_CALC_FN};
///
/// let rate = Rate::new(Duration::from_secs(1));
/// rate.observe(&"k", 5);
/// // Nothing before, 5 so far: 5 per second.
/// assert_eq!(rate.rate_with(&"k", PROPORTIONAL_RATE_ESTIMATE_CALC_FN), 5.0);
/// ```
pub static PROPORTIONAL_RATE_ESTIMATE_CALC_FN: fn(RateComponents) -> f64 = |c| {
    let secs = c.interval.as_secs_f64();
    if secs == 0.0 {
        return 0.0;
    }
    let in_window = c.prev_samples as f64 * (1.0 - c.current_interval_fraction).max(0.0);
    (in_window + c.curr_samples as f64) / secs
};

/// Events per key, counted in intervals of a fixed length: two sketches
/// take turns, one counting the interval under way, the other keeping the
/// one before. Lock-free; one `Rate` is shared by every thread.
///
/// At the turn of an interval the thread that notices clears the old
/// sketch and swaps them; events counted by other threads in that instant
/// may land on either side. Counts are estimates ([`Estimator`]): never
/// below the truth, above it only when keys share counters.
pub struct Rate {
    /// The two sketches; `red_current` says which one counts now.
    red: Estimator,
    blue: Estimator,
    red_current: AtomicBool,
    /// Milliseconds from `epoch` to the start of the interval under way.
    current_start: AtomicU64,
    /// The clock's reading (ms) when the rate was made.
    epoch: u64,
    interval_ms: u64,
    interval: Duration,
}

impl std::fmt::Debug for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rate")
            .field("interval", &self.interval)
            .field("sketch", &self.red)
            .finish()
    }
}

/// The monotonic clock in milliseconds, coarse (to a few ms, Linux's
/// `CLOCK_MONOTONIC_COARSE`): a fraction of the precise clock's cost, and
/// plenty for intervals counted in seconds.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration;
    // the clock id is one Linux always has.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    debug_assert_eq!(r, 0);
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// The monotonic clock in milliseconds (from the first call).
#[cfg(not(target_os = "linux"))]
fn now_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

/// Each sketch's shape for [`Rate::new`]: 4 × 1024 counters (32 KiB).
const DEFAULT_HASHES: usize = 4;
const DEFAULT_SLOTS: usize = 1024;

impl Rate {
    /// A rate over intervals of `interval` (at least 1 ms), each sketch 4
    /// rows of 1024 counters: good for up to about a thousand busy keys
    /// per interval. More keys want
    /// [`new_with_estimator_config`](Self::new_with_estimator_config).
    pub fn new(interval: Duration) -> Self {
        Self::new_with_estimator_config(interval, DEFAULT_HASHES, DEFAULT_SLOTS)
    }

    /// A rate over intervals of `interval` with sketches of `hashes` rows
    /// of `slots` counters.
    pub fn new_with_estimator_config(interval: Duration, hashes: usize, slots: usize) -> Self {
        let hasher = RandomState::default();
        let interval_ms = (interval.as_millis() as u64).max(1);
        Rate {
            red: Estimator::with_hasher(hashes, slots, hasher.clone()),
            blue: Estimator::with_hasher(hashes, slots, hasher),
            red_current: AtomicBool::new(true),
            current_start: AtomicU64::new(0),
            epoch: now_ms(),
            interval_ms,
            interval: Duration::from_millis(interval_ms),
        }
    }

    /// The interval's length.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The sketches counting now and keeping the interval before.
    fn sketches(&self) -> (&Estimator, &Estimator) {
        if self.red_current.load(Ordering::Acquire) {
            (&self.red, &self.blue)
        } else {
            (&self.blue, &self.red)
        }
    }

    /// Turn the interval if it is over; milliseconds into the current one.
    fn turn(&self) -> u64 {
        self.turn_at(now_ms().saturating_sub(self.epoch))
    }

    /// [`turn`](Self::turn) at `now` milliseconds from the epoch.
    fn turn_at(&self, now: u64) -> u64 {
        loop {
            let began = self.current_start.load(Ordering::Acquire);
            let past = now.saturating_sub(began);
            if past < self.interval_ms {
                return past;
            }
            // Intervals stay aligned to the first one.
            let start = now - past % self.interval_ms;
            if self
                .current_start
                .compare_exchange(began, start, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                continue; // another thread turned it: look again
            }
            let (current, previous) = self.sketches();
            // The sketch that counted two intervals ago starts over; so
            // does the current one when a whole interval went by unseen
            // (its counts are older than the window).
            previous.reset();
            if past >= 2 * self.interval_ms {
                current.reset();
            }
            self.red_current.fetch_xor(true, Ordering::AcqRel);
            return past % self.interval_ms;
        }
    }

    /// Count `events` for `key` (0 just asks); the key's count so far in
    /// the interval under way.
    pub fn observe<T: Hash>(&self, key: &T, events: isize) -> isize {
        self.turn();
        self.count(key, events)
    }

    fn count<T: Hash>(&self, key: &T, events: isize) -> isize {
        let (current, _) = self.sketches();
        if events == 0 {
            current.get(key)
        } else {
            current.incr(key, events)
        }
    }

    /// The key's events per second in the last whole interval.
    pub fn rate<T: Hash>(&self, key: &T) -> f64 {
        self.turn();
        let (_, previous) = self.sketches();
        previous.get(key) as f64 / self.interval.as_secs_f64()
    }

    /// The key's rate as `rate_calc_fn` computes it from the counts of
    /// both intervals ([`RateComponents`]); see
    /// [`PROPORTIONAL_RATE_ESTIMATE_CALC_FN`] for a sliding window.
    pub fn rate_with<F, T, K>(&self, key: &K, mut rate_calc_fn: F) -> T
    where
        F: FnMut(RateComponents) -> T,
        K: Hash,
    {
        let past = self.turn();
        self.components(key, past, &mut rate_calc_fn)
    }

    fn components<F, T, K>(&self, key: &K, past: u64, rate_calc_fn: &mut F) -> T
    where
        F: FnMut(RateComponents) -> T,
        K: Hash,
    {
        let (current, previous) = self.sketches();
        let hash = current.hash(key); // both sketches hash alike
        rate_calc_fn(RateComponents {
            prev_samples: previous.get_hash(hash),
            curr_samples: current.get_hash(hash),
            interval: self.interval,
            current_interval_fraction: past as f64 / self.interval_ms as f64,
        })
    }

    /// Our addition: [`rate_with`](Self::rate_with) and
    /// [`observe`](Self::observe) in one step, for a limiter (one clock
    /// read, one hash). `admit` sees the key's counts; `events` are counted
    /// only if it says yes. Returns the counts it saw and its answer.
    ///
    /// ```
    /// use std::time::Duration;
    /// use pingora_limits::rate::Rate;
    ///
    /// let rate = Rate::new(Duration::from_secs(1));
    /// let admit = |c: pingora_limits::rate::RateComponents| c.curr_samples < 2;
    /// let passed = (0..5).filter(|_| rate.observe_if(&"client", 1, admit).1).count();
    /// assert_eq!(passed, 2);
    /// ```
    pub fn observe_if<K, F>(&self, key: &K, events: isize, admit: F) -> (RateComponents, bool)
    where
        K: Hash,
        F: FnOnce(RateComponents) -> bool,
    {
        let past = self.turn();
        let (current, previous) = self.sketches();
        let hash = current.hash(key);
        let c = RateComponents {
            prev_samples: previous.get_hash(hash),
            curr_samples: current.get_hash(hash),
            interval: self.interval,
            current_interval_fraction: past as f64 / self.interval_ms as f64,
        };
        let yes = admit(c);
        if yes && events != 0 {
            current.incr_hash(hash, events);
        }
        (c, yes)
    }

    /// The memory both sketches take, in bytes (the same for any number
    /// of keys).
    pub fn size_of_counters(&self) -> usize {
        self.red.size_of_counters() + self.blue.size_of_counters()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key's components at `now` ms from the epoch.
    fn at(rate: &Rate, key: &str, now: u64) -> RateComponents {
        let past = rate.turn_at(now);
        rate.components(&key, past, &mut |c| c)
    }

    #[test]
    fn counts_move_to_the_previous_interval_then_age_out() {
        let rate = Rate::new(Duration::from_millis(100));
        rate.turn_at(10);
        assert_eq!(rate.count(&"a", 3), 3);
        assert_eq!(rate.count(&"a", 2), 5);
        let c = at(&rate, "a", 50);
        assert_eq!((c.prev_samples, c.curr_samples), (0, 5));
        assert_eq!(c.current_interval_fraction, 0.5);
        // The next interval: the 5 are the last whole interval's.
        let c = at(&rate, "a", 125);
        assert_eq!((c.prev_samples, c.curr_samples), (5, 0));
        assert_eq!(c.current_interval_fraction, 0.25);
        rate.count(&"a", 1);
        // Still the same interval: nothing moves.
        let c = at(&rate, "a", 199);
        assert_eq!((c.prev_samples, c.curr_samples), (5, 1));
        // One turn: the 1 is the previous interval's, the 5 are gone.
        let c = at(&rate, "a", 200);
        assert_eq!((c.prev_samples, c.curr_samples), (1, 0));
        rate.count(&"a", 4);
        // Two whole intervals without a look: nothing is left.
        let c = at(&rate, "a", 420);
        assert_eq!((c.prev_samples, c.curr_samples), (0, 0));
        assert_eq!(c.current_interval_fraction, 0.2);
        // An earlier time (another thread's clock read) turns nothing.
        let c = at(&rate, "a", 390);
        assert_eq!((c.prev_samples, c.curr_samples), (0, 0));
    }

    #[test]
    fn rate_is_the_last_whole_interval_per_second() {
        let rate = Rate::new(Duration::from_millis(500));
        rate.observe(&"k", 7);
        assert_eq!(rate.rate(&"k"), 0.0);
        rate.turn_at(now_ms() - rate.epoch + 500);
        assert_eq!(rate.rate_with(&"k", |c| c.prev_samples), 7);
    }

    #[test]
    fn the_sliding_estimate_weighs_the_previous_interval() {
        let c = RateComponents {
            prev_samples: 10,
            curr_samples: 4,
            interval: Duration::from_secs(2),
            current_interval_fraction: 0.25,
        };
        // 10 × 0.75 + 4 over 2 s.
        assert_eq!(PROPORTIONAL_RATE_ESTIMATE_CALC_FN(c), 5.75);
    }

    #[test]
    fn keys_are_counted_apart() {
        let rate = Rate::new(Duration::from_secs(60));
        for i in 0..100u32 {
            rate.observe(&i, i as isize);
        }
        for i in 0..100u32 {
            assert!(rate.observe(&i, 0) >= i as isize);
        }
        assert_eq!(rate.size_of_counters(), 2 * 4 * 1024 * 8);
    }
}
