//! A lock-free count-min sketch.

use std::hash::{BuildHasher, Hash};

use foldhash::fast::RandomState;
use std::sync::atomic::{AtomicIsize, Ordering};

/// Counts per key in fixed memory: `hashes` rows of `slots` atomic
/// counters (`slots` rounded up to a power of two). A key adds to one counter in each row; its estimate is the
/// smallest of those. The estimate never falls below the key's true count
/// (when counts only go up) and exceeds it by at most about
/// `e / slots × (all events)` with probability `1 − e^−hashes`.
///
/// Counters wrap on overflow (a negative estimate then says so).
///
/// ```
/// use pingora_limits::estimator::Estimator;
///
/// let e = Estimator::new(4, 1024);
/// assert_eq!(e.incr("a", 2), 2);
/// assert_eq!(e.incr("a", 3), 5);
/// e.decr("a", 1);
/// assert_eq!(e.get("a"), 4);
/// assert_eq!(e.get("never seen"), 0);
/// ```
pub struct Estimator {
    /// Row after row, `slots` counters each.
    counters: Box<[AtomicIsize]>,
    hashes: usize,
    slots: usize,
    hasher: RandomState,
}

impl std::fmt::Debug for Estimator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Estimator")
            .field("hashes", &self.hashes)
            .field("slots", &self.slots)
            .finish()
    }
}

impl Estimator {
    /// A sketch of `hashes` rows of `slots` counters (each at least 1;
    /// `slots` rounded up to a power of two).
    pub fn new(hashes: usize, slots: usize) -> Self {
        Self::with_hasher(hashes, slots, RandomState::default())
    }

    /// A sketch hashing with `hasher` (two sketches that share one can
    /// take the same hash).
    pub(crate) fn with_hasher(hashes: usize, slots: usize, hasher: RandomState) -> Self {
        let (hashes, slots) = (hashes.max(1), slots.max(1).next_power_of_two());
        Estimator {
            counters: (0..hashes * slots).map(|_| AtomicIsize::new(0)).collect(),
            hashes,
            slots,
            hasher,
        }
    }

    /// The key's hash, from which its counters follow.
    pub(crate) fn hash<T: Hash>(&self, key: T) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The key's counter in each row. One 64-bit hash gives them all:
    /// row `i` takes `h1 + i·h2` (Kirsch and Mitzenmacher), as good for a
    /// sketch as independent hashes and `hashes` times cheaper.
    fn counters(&self, hash: u64) -> impl Iterator<Item = &AtomicIsize> {
        let h1 = hash as u32 as usize;
        let h2 = ((hash >> 32) as usize) | 1;
        (0..self.hashes).map(move |row| {
            let slot = h1.wrapping_add(row.wrapping_mul(h2)) & (self.slots - 1);
            &self.counters[row * self.slots + slot]
        })
    }

    /// Add `value` to `key`; its new estimate.
    pub fn incr<T: Hash>(&self, key: T, value: isize) -> isize {
        self.incr_hash(self.hash(key), value)
    }

    pub(crate) fn incr_hash(&self, hash: u64, value: isize) -> isize {
        self.counters(hash)
            .map(|c| c.fetch_add(value, Ordering::Relaxed).wrapping_add(value))
            .min()
            .unwrap_or(0)
    }

    /// Take `value` from `key`.
    pub fn decr<T: Hash>(&self, key: T, value: isize) {
        self.decr_hash(self.hash(key), value)
    }

    pub(crate) fn decr_hash(&self, hash: u64, value: isize) {
        for c in self.counters(hash) {
            c.fetch_sub(value, Ordering::Relaxed);
        }
    }

    /// The estimate for `key`.
    pub fn get<T: Hash>(&self, key: T) -> isize {
        self.get_hash(self.hash(key))
    }

    pub(crate) fn get_hash(&self, hash: u64) -> isize {
        self.counters(hash)
            .map(|c| c.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0)
    }

    /// Every count back to zero.
    pub fn reset(&self) {
        for c in self.counters.iter() {
            c.store(0, Ordering::Relaxed);
        }
    }

    /// The memory the counters take, in bytes.
    pub fn size_of_counters(&self) -> usize {
        self.counters.len() * std::mem::size_of::<AtomicIsize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_below_the_true_count_and_close_when_keys_are_few() {
        let e = Estimator::new(4, 1024);
        for k in 0..200u32 {
            e.incr(k, k as isize + 1);
        }
        let mut over = 0;
        for k in 0..200u32 {
            let est = e.get(k);
            assert!(est > k as isize, "key {k}: {est}");
            over += est - (k as isize + 1);
        }
        // 200 keys in 1024 slots of 4 rows: almost every key alone in one.
        assert!(over < 200, "overestimated by {over} in all");
    }

    #[test]
    fn two_sketches_hash_differently() {
        let (a, b) = (Estimator::new(1, 1 << 20), Estimator::new(1, 1 << 20));
        assert!((0..8u8).any(|k| a.hash(k) != b.hash(k)));
    }

    #[test]
    fn concurrent_increments_are_all_counted() {
        let e = std::sync::Arc::new(Estimator::new(2, 64));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let e = e.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        e.incr("k", 1);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(e.get("k"), 40_000);
        e.reset();
        assert_eq!(e.get("k"), 0);
    }

    #[test]
    fn degenerate_sizes_still_count() {
        let e = Estimator::new(0, 0);
        assert_eq!(e.incr(1, 1), 1);
        assert_eq!(e.incr(2, 1), 2); // one counter for everyone
        assert_eq!(e.size_of_counters(), std::mem::size_of::<AtomicIsize>());
    }
}
