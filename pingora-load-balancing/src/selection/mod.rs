//! Selection algorithms behind one trait.
//!
//! A [`BackendSelection`] is built once from a set of backends (again when
//! the set changes) and then picks lock-free. [`BackendSelection::iter`]
//! gives candidates in order for a key: the first is the pick, the next ones
//! are where to go when the first is unhealthy, so a caller can skip and walk
//! on (with a bound on the walk).
//!
//! | algorithm | type | key used |
//! |---|---|---|
//! | round robin, smooth weighted (nginx's) | [`RoundRobin`] | no |
//! | random / weighted random | [`Random`] | no |
//! | consistent hashing (Ketama) | [`Ketama`] | yes |
//! | FNV hash (modulo) | [`FnvHash`] | yes |
//! | Maglev | [`Maglev`] | yes |
//! | least connections | [`LeastConnection`] | no |
//! | power of two choices over peak-EWMA latency | [`PeakEwma`] | no |

use std::sync::Arc;
use std::time::Duration;

use crate::Backend;

mod ewma;
mod hashing;
mod maglev;
mod simple;

pub use ewma::{LeastConnection, PeakEwma};
pub use hashing::{FnvHash, Ketama};
pub use maglev::Maglev;
pub use simple::{Random, RoundRobin};

/// A way to pick backends.
pub trait BackendSelection: Send + Sync + Sized + 'static {
    /// Build from the backends (sorted, so that every process builds the
    /// same structure from the same set).
    fn build(backends: &[Backend]) -> Self;

    /// Candidates for `key`, best first. Algorithms that ignore the key
    /// may take an empty one.
    fn iter<'a>(self: &'a Arc<Self>, key: &[u8]) -> SelectionIter<'a, Self> {
        SelectionIter {
            selector: self,
            state: self.start(key),
            step: 0,
        }
    }

    /// The first candidate's position and the walk's starting state.
    #[doc(hidden)]
    fn start(&self, key: &[u8]) -> u64;

    /// The `step`-th candidate from `state` (step 0 is the pick), or `None`
    /// when there are no more.
    #[doc(hidden)]
    fn candidate(&self, state: u64, step: usize) -> Option<&Backend>;

    /// A request to `backend` started (for algorithms that track load).
    fn on_start(&self, _backend: &Backend) {}

    /// A request to `backend` finished after `latency` (for algorithms that
    /// track load or latency).
    fn on_done(&self, _backend: &Backend, _latency: Duration) {}
}

/// The candidates for one key, best first.
pub struct SelectionIter<'a, S: BackendSelection> {
    selector: &'a S,
    state: u64,
    step: usize,
}

impl<'a, S: BackendSelection> Iterator for SelectionIter<'a, S> {
    type Item = &'a Backend;

    fn next(&mut self) -> Option<&'a Backend> {
        let b = self.selector.candidate(self.state, self.step)?;
        self.step += 1;
        Some(b)
    }
}

/// A cheap per-thread random number (xorshift64*), for the random and
/// two-choices algorithms.
pub(crate) fn random_u64() -> u64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64);
            let addr = &t as *const u64 as u64;
            crate::backend::mix(t ^ addr) | 1
        });
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

#[cfg(test)]
mod tests;
