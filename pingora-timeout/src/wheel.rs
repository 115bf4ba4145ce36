//! The shared timer wheel: buckets of wakers keyed by tick, fired by one
//! background thread.
//!
//! Each registering thread uses its own shard (a map from tick to bucket),
//! so threads do not contend on one lock; and each thread remembers the last
//! bucket it used, so the many timers created within one tick with the same
//! duration share a bucket without touching the shard at all.
//!
//! The background thread wakes every tick, publishes the current tick, and
//! fires every bucket whose tick has come. When no timers are pending for a
//! while it parks, and the next registration wakes it up.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::Waker;
use std::thread::Thread;
use std::time::{Duration, Instant};

/// Milliseconds per tick.
pub(crate) const TICK_MS: u64 = 10;
const TICK: Duration = Duration::from_millis(TICK_MS);
/// Ticks with no pending timer before the thread parks.
const IDLE_TICKS_BEFORE_PARK: u32 = 100;

/// Lock a mutex, ignoring poison: the data here (waker lists, maps of
/// buckets) stays consistent even if a waker's `wake` panicked.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The wakers waiting on one tick.
#[derive(Default)]
struct Wakers {
    slots: Vec<Option<Waker>>,
    free: Vec<usize>,
    fired: bool,
}

/// All timers due on one tick (of one shard).
#[derive(Default)]
pub(crate) struct Bucket {
    fired: AtomicBool,
    wakers: Mutex<Wakers>,
}

impl Bucket {
    /// Whether this bucket's tick has come.
    pub(crate) fn fired(&self) -> bool {
        self.fired.load(Ordering::Acquire)
    }

    fn fire(&self) {
        let slots = {
            let mut w = lock(&self.wakers);
            w.fired = true;
            self.fired.store(true, Ordering::Release);
            w.free.clear();
            std::mem::take(&mut w.slots)
        };
        // Wake outside the lock: a waker may run code of its own.
        for waker in slots.into_iter().flatten() {
            waker.wake();
        }
    }
}

/// A waker registered in a bucket; removes itself when dropped.
pub(crate) struct Registration {
    bucket: Arc<Bucket>,
    key: usize,
}

impl Registration {
    /// Whether the deadline has passed.
    pub(crate) fn fired(&self) -> bool {
        self.bucket.fired()
    }

    /// Make sure `waker` is the one woken at the deadline.
    pub(crate) fn update(&self, waker: &Waker) {
        let mut w = lock(&self.bucket.wakers);
        if w.fired {
            return;
        }
        if let Some(Some(cur)) = w.slots.get_mut(self.key) {
            if !cur.will_wake(waker) {
                cur.clone_from(waker);
            }
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if self.bucket.fired() {
            return;
        }
        let mut w = lock(&self.bucket.wakers);
        if w.fired {
            return;
        }
        if let Some(slot) = w.slots.get_mut(self.key) {
            if slot.take().is_some() {
                w.free.push(self.key);
            }
        }
    }
}

/// One thread's buckets, by due tick.
type Shard = Mutex<BTreeMap<u64, Arc<Bucket>>>;

struct Wheel {
    start: Instant,
    /// The tick the background thread last saw.
    now: AtomicU64,
    /// Whether the background thread is ticking (not parked).
    running: AtomicBool,
    shards: Box<[Shard]>,
    thread: OnceLock<Thread>,
}

static WHEEL: OnceLock<Wheel> = OnceLock::new();
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's shard, and the last bucket it registered in.
    static LOCAL: RefCell<Local> = RefCell::new(Local {
        shard: NEXT_SHARD.fetch_add(1, Ordering::Relaxed),
        last: None,
    });
}

struct Local {
    shard: usize,
    last: Option<(u64, Arc<Bucket>)>,
}

fn wheel() -> &'static Wheel {
    WHEEL.get_or_init(|| {
        let n = std::thread::available_parallelism().map_or(4, |n| n.get()) * 4;
        Wheel {
            start: Instant::now(),
            now: AtomicU64::new(0),
            running: AtomicBool::new(false),
            shards: (0..n).map(|_| Mutex::default()).collect(),
            thread: OnceLock::new(),
        }
    })
}

impl Wheel {
    fn tick_of(&self, t: Instant) -> u64 {
        (t.saturating_duration_since(self.start).as_millis() / TICK_MS as u128) as u64
    }

    /// Start the background thread on first use; wake it if it parked.
    fn ensure_running(&'static self) {
        if self.running.load(Ordering::SeqCst) {
            return;
        }
        let thread = self.thread.get_or_init(|| {
            std::thread::Builder::new()
                .name("pingora-timer".into())
                .spawn(move || self.run())
                .expect("spawning the timer thread")
                .thread()
                .clone()
        });
        thread.unpark();
    }

    fn run(&self) {
        let mut idle = 0u32;
        loop {
            let now = self.tick_of(Instant::now());
            self.now.store(now, Ordering::Release);
            self.running.store(true, Ordering::SeqCst);
            if self.fire_until(now) {
                idle = 0;
            } else {
                idle += 1;
                if idle >= IDLE_TICKS_BEFORE_PARK {
                    // Announce the park, then look again: a registration
                    // that raced with us either is seen here or sees
                    // `running == false` and unparks us.
                    self.running.store(false, Ordering::SeqCst);
                    if !self.any_pending() {
                        std::thread::park();
                    }
                    idle = 0;
                    continue;
                }
            }
            let next = self.start + TICK * (now as u32 + 1);
            let wait = next.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
        }
    }

    /// Fire every bucket due at or before `now`. Returns whether any timer
    /// is still pending.
    fn fire_until(&self, now: u64) -> bool {
        let mut pending = false;
        for shard in self.shards.iter() {
            let due = {
                let mut map = lock(shard);
                let later = map.split_off(&(now + 1));
                let due = std::mem::replace(&mut *map, later);
                pending |= !map.is_empty();
                due
            };
            for bucket in due.into_values() {
                bucket.fire();
            }
        }
        pending
    }

    fn any_pending(&self) -> bool {
        self.shards.iter().any(|s| !lock(s).is_empty())
    }

    /// The current tick, as cheaply as possible: the background thread's
    /// published tick while it runs, the clock otherwise. Either way never
    /// ahead of the true tick, and the published one at most a tick behind.
    fn current_tick(&self) -> u64 {
        if self.running.load(Ordering::Acquire) {
            self.now.load(Ordering::Acquire)
        } else {
            self.tick_of(Instant::now())
        }
    }
}

/// `duration` in ticks, rounded up, without 128-bit division.
fn ticks_ceil(d: Duration) -> u64 {
    const NANOS_PER_TICK: u32 = (TICK_MS * 1_000_000) as u32;
    let per_sec = 1000 / TICK_MS;
    let sub = d.subsec_nanos();
    d.as_secs()
        .saturating_mul(per_sec)
        .saturating_add(sub.div_ceil(NANOS_PER_TICK) as u64)
}

/// The tick at which a timer of `duration` started now is due.
pub(crate) fn due_tick(duration: Duration) -> u64 {
    let now = wheel().current_tick();
    // Round up; then one tick because `now` is the floor of the true time,
    // and one more because the published tick may lag the true one while
    // the timer thread waits to be scheduled. So the timer never fires
    // early unless that thread is delayed by more than a whole tick.
    now.saturating_add(ticks_ceil(duration)).saturating_add(2)
}

/// Register `waker` to be woken once `duration` has passed. Returns `None`
/// if that deadline is already due.
pub(crate) fn register(duration: Duration, waker: &Waker) -> Option<Registration> {
    register_at(due_tick(duration), waker)
}

/// Register `waker` to be woken at tick `due` (from [`due_tick`]).
/// Returns `None` if that tick has already fired.
pub(crate) fn register_at(due: u64, waker: &Waker) -> Option<Registration> {
    let wheel = wheel();
    let bucket = LOCAL.with(|local| {
        let mut local = local.borrow_mut();
        if let Some((tick, bucket)) = &local.last {
            if *tick == due && !bucket.fired() {
                return bucket.clone();
            }
        }
        let shard = &wheel.shards[local.shard % wheel.shards.len()];
        let bucket = lock(shard).entry(due).or_default().clone();
        local.last = Some((due, bucket.clone()));
        bucket
    });

    let key = {
        let mut w = lock(&bucket.wakers);
        if w.fired {
            return None;
        }
        match w.free.pop() {
            Some(k) => {
                w.slots[k] = Some(waker.clone());
                k
            }
            None => {
                w.slots.push(Some(waker.clone()));
                w.slots.len() - 1
            }
        }
    };
    wheel.ensure_running();
    Some(Registration { bucket, key })
}

#[cfg(test)]
pub(crate) fn pending_wakers() -> usize {
    let wheel = wheel();
    wheel
        .shards
        .iter()
        .map(|s| {
            lock(s)
                .values()
                .map(|b| lock(&b.wakers).slots.iter().flatten().count())
                .sum::<usize>()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_round_up() {
        assert_eq!(ticks_ceil(Duration::ZERO), 0);
        assert_eq!(ticks_ceil(Duration::from_nanos(1)), 1);
        assert_eq!(ticks_ceil(Duration::from_millis(10)), 1);
        assert_eq!(ticks_ceil(Duration::from_millis(11)), 2);
        assert_eq!(ticks_ceil(Duration::from_millis(1500)), 150);
        assert_eq!(ticks_ceil(Duration::MAX), u64::MAX);
    }
}
