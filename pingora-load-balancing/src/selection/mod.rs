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

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::Backend;

pub mod algorithms;
mod ewma;
mod hashing;
mod maglev;
mod simple;
pub mod weighted;

pub use ewma::{LeastConnection, PeakEwma};
pub use hashing::{FnvHash, Ketama};
pub use maglev::Maglev;
pub use simple::{Random, RoundRobin};

/// Pingora's name for consistent hashing: [`Ketama`] here.
pub type Consistent = Ketama;

/// Pingora's spelling of [`FnvHash`].
pub type FNVHash = FnvHash;

/// Pingora's module path for its consistent hashing type.
pub mod consistent {
    /// Pingora's `KetamaHashing`: [`Ketama`](super::Ketama) here.
    pub type KetamaHashing = super::Ketama;
}

/// A way to pick backends, as Pingora's trait: built from the backend set
/// (again when it changes), then asked for candidates per key.
///
/// A selection of the user's implements `Iter`, `Config`, `build` and
/// `iter` as with Pingora (see [`weighted::Weighted`] for a selection made
/// from a [`SelectionAlgorithm`]). The algorithms shipped here also walk
/// their candidates without an `Arc` clone or an allocation, through
/// hidden methods the [`LoadBalancer`](crate::LoadBalancer) uses.
pub trait BackendSelection: Sized {
    /// The candidates [`iter`](Self::iter) gives, as a [`BackendIter`].
    type Iter;

    /// Configuration for [`build_with_config`](Self::build_with_config)
    /// (`()` for the algorithms shipped here).
    type Config: Send + Sync;

    /// Build with a configuration; by default ignores it and calls
    /// [`build`](Self::build).
    fn build_with_config(backends: &BTreeSet<Backend>, _config: &Self::Config) -> Self {
        Self::build(backends)
    }

    /// Build from the backends (in order, so that every process builds the
    /// same structure from the same set).
    fn build(backends: &BTreeSet<Backend>) -> Self;

    /// Candidates for `key`, best first: the caller walks on when one is
    /// unhealthy. Algorithms that ignore the key may take an empty one.
    fn iter(self: &Arc<Self>, key: &[u8]) -> Self::Iter
    where
        Self::Iter: BackendIter;

    /// Ours: a request to `backend` started (for algorithms that track load).
    fn on_start(&self, _backend: &Backend) {}

    /// Ours: a request to `backend` finished after `latency` (for
    /// algorithms that track load or latency).
    fn on_done(&self, _backend: &Backend, _latency: Duration) {}

    /// Whether [`on_start`](Self::on_start) and [`on_done`](Self::on_done)
    /// do anything: when not, the load balancer does not read the current
    /// selection to call them (an `ArcSwap` load each, twice a request).
    /// True unless an algorithm says otherwise, so that a user's own
    /// `on_start`/`on_done` are always called.
    #[doc(hidden)]
    const TRACKS_LOAD: bool = true;

    /// Whether [`start`](Self::start) and [`candidate`](Self::candidate)
    /// walk the candidates (the shipped algorithms); otherwise the load
    /// balancer goes through [`iter`](Self::iter).
    #[doc(hidden)]
    const WALKS: bool = false;

    /// Build from backends already sorted (the load balancer's set).
    #[doc(hidden)]
    fn build_sorted(backends: &[Backend]) -> Self {
        Self::build(&backends.iter().cloned().collect())
    }

    /// The first candidate's position and the walk's starting state.
    #[doc(hidden)]
    fn start(&self, _key: &[u8]) -> u64 {
        0
    }

    /// The `step`-th candidate from `state` (step 0 is the pick), or `None`
    /// when there are no more.
    #[doc(hidden)]
    fn candidate(&self, _state: u64, _step: usize) -> Option<&Backend> {
        None
    }
}

/// Candidates one after another, as Pingora's trait: the first is the
/// pick; `None` when there are no more.
pub trait BackendIter {
    /// The next candidate.
    fn next(&mut self) -> Option<&Backend>;
}

/// Pingora's hashing or picking function for a [`weighted::Weighted`]
/// selection: a number for a key (the caller takes it modulo the number
/// of backends). Any `Hasher + Default` is one (the key hashed).
pub trait SelectionAlgorithm {
    /// A new instance.
    fn new() -> Self;
    /// The number for `key`.
    fn next(&self, key: &[u8]) -> u64;
}

impl<H: std::hash::Hasher + Default> SelectionAlgorithm for H {
    fn new() -> Self {
        H::default()
    }

    fn next(&self, key: &[u8]) -> u64 {
        let mut h = H::default();
        h.write(key);
        h.finish()
    }
}

/// Names the type; its state is not shown.
impl<S: BackendSelection> std::fmt::Debug for SelectionIter<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelectionIter").finish_non_exhaustive()
    }
}

/// The candidates of one of the shipped algorithms for one key, best
/// first (a [`BackendIter`]; it holds the selection it walks).
pub struct SelectionIter<S: BackendSelection> {
    selector: Arc<S>,
    state: u64,
    step: usize,
}

impl<S: BackendSelection> SelectionIter<S> {
    /// The walk of `selector`'s candidates for `key`.
    pub fn new(selector: &Arc<S>, key: &[u8]) -> Self {
        SelectionIter {
            state: selector.start(key),
            selector: selector.clone(),
            step: 0,
        }
    }
}

impl<S: BackendSelection> BackendIter for SelectionIter<S> {
    fn next(&mut self) -> Option<&Backend> {
        let b = self.selector.candidate(self.state, self.step)?;
        self.step += 1;
        Some(b)
    }
}

/// The [`BackendSelection`] items of a shipped algorithm that walks its
/// candidates with `start` and `candidate` (and builds from a sorted slice
/// with `build_sorted`); `tracks_load` for one with its own `on_start` and
/// `on_done`.
macro_rules! walked_selection {
    () => {
        const TRACKS_LOAD: bool = false;
        $crate::selection::walked_selection!(@walks);
    };
    (tracks_load) => {
        $crate::selection::walked_selection!(@walks);
    };
    (@walks) => {
        type Iter = $crate::selection::SelectionIter<Self>;
        type Config = ();
        const WALKS: bool = true;

        fn build(backends: &std::collections::BTreeSet<$crate::Backend>) -> Self {
            Self::build_sorted(&backends.iter().cloned().collect::<Vec<_>>())
        }

        fn iter(self: &std::sync::Arc<Self>, key: &[u8]) -> Self::Iter {
            $crate::selection::SelectionIter::new(self, key)
        }
    };
}
pub(crate) use walked_selection;

/// Names the type; its state is not shown.
impl<I: BackendIter> std::fmt::Debug for UniqueIterator<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UniqueIterator").finish_non_exhaustive()
    }
}

/// Pingora's wrapper of a [`BackendIter`]: each backend once, and at most
/// `max_iterations` steps (repeats count).
pub struct UniqueIterator<I: BackendIter> {
    iter: I,
    seen: HashSet<u64>,
    max_iterations: usize,
    steps: usize,
}

impl<I: BackendIter> UniqueIterator<I> {
    /// Wrap `iter`, walking at most `max_iterations` steps.
    pub fn new(iter: I, max_iterations: usize) -> Self {
        UniqueIterator {
            iter,
            seen: HashSet::new(),
            max_iterations,
            steps: 0,
        }
    }

    /// The next backend not seen yet, if any within the steps left.
    pub fn get_next(&mut self) -> Option<Backend> {
        while self.steps < self.max_iterations {
            let b = self.iter.next()?;
            self.steps += 1;
            if self.seen.insert(b.hash_key()) {
                return Some(b.clone());
            }
        }
        None
    }
}

/// The walk of a table-driven algorithm: `state` picks a slot of `table`
/// (backend indexes, each as often as its weight or place says), and the
/// walk goes on from that backend through the others in order, each once.
pub(crate) fn walk_table<'a>(
    backends: &'a [Backend],
    table: &[u32],
    state: u64,
    step: usize,
) -> Option<&'a Backend> {
    let n = backends.len();
    if step >= n || table.is_empty() {
        return None;
    }
    let first = table[(state % table.len() as u64) as usize] as usize;
    backends.get((first + step) % n)
}

/// A cheap per-thread random number, for the random and two-choices
/// algorithms.
pub(crate) use pingora_core::utils::random_u64;

#[cfg(test)]
mod tests;
