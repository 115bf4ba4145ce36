//! How many of something are under way, per key.

use std::hash::Hash;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;

use crate::estimator::Estimator;

/// Counts per key of things under way (requests to an upstream, uploads
/// per client): [`incr`](Self::incr) adds and hands back a [`Guard`] that
/// takes it away again when dropped. Fixed memory (2 × 16,384 counters,
/// 256 KiB); counts are estimates, never below the truth.
///
/// ```
/// use pingora_limits::inflight::Inflight;
///
/// let inflight = Inflight::new();
/// let (guard, now) = inflight.incr("upstream-a", 1);
/// assert_eq!(now, 1);
/// let (_second, now) = inflight.incr("upstream-a", 1);
/// assert_eq!(now, 2);
/// drop(guard);
/// assert_eq!(inflight.incr("upstream-a", 0).1, 1);
/// ```
#[derive(Debug, Clone)]
pub struct Inflight {
    estimator: Arc<Estimator>,
}

const HASHES: usize = 2;
const SLOTS: usize = 16_384;

impl Default for Inflight {
    fn default() -> Self {
        Self::new()
    }
}

impl Inflight {
    /// An empty count.
    pub fn new() -> Self {
        Inflight {
            estimator: Arc::new(Estimator::new(HASHES, SLOTS)),
        }
    }

    /// Add `value` to `key`: a guard that takes it away when dropped, and
    /// the key's count now.
    pub fn incr<T: Hash>(&self, key: T, value: isize) -> (Guard, isize) {
        let hash = self.estimator.hash(key);
        let now = self.estimator.incr_hash(hash, value);
        let guard = Guard {
            estimator: self.estimator.clone(),
            hash,
            value,
            added: AtomicIsize::new(value),
        };
        (guard, now)
    }
}

/// One key's share of an [`Inflight`] count: everything it added goes
/// away when it drops.
pub struct Guard {
    estimator: Arc<Estimator>,
    hash: u64,
    value: isize,
    /// All this guard added (its first value and each `incr`).
    added: AtomicIsize,
}

impl Guard {
    /// Add the guard's value to its key once more (taken away with the
    /// rest when the guard drops); the key's count now.
    pub fn incr(&self) -> isize {
        self.added.fetch_add(self.value, Ordering::Relaxed);
        self.estimator.incr_hash(self.hash, self.value)
    }

    /// The key's count now.
    pub fn get(&self) -> isize {
        self.estimator.get_hash(self.hash)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.estimator
            .decr_hash(self.hash, self.added.load(Ordering::Relaxed));
    }
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("value", &self.value)
            .field("added", &self.added.load(Ordering::Relaxed))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guard_takes_back_all_it_added() {
        let f = Inflight::new();
        let (g, n) = f.incr(7u64, 2);
        assert_eq!(n, 2);
        assert_eq!(g.incr(), 4);
        assert_eq!(g.get(), 4);
        let (other, _) = f.incr(8u64, 1);
        drop(g);
        assert_eq!(f.incr(7u64, 0).1, 0);
        assert_eq!(other.get(), 1);
    }

    #[test]
    fn guards_cross_threads() {
        let f = Inflight::new();
        let (g, _) = f.incr("k", 1);
        std::thread::spawn(move || drop(g)).join().unwrap();
        assert_eq!(f.incr("k", 0).1, 0);
    }
}
