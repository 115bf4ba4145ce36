//! Pingora's `Weighted` selection: any [`SelectionAlgorithm`] over the
//! backends, in proportion to their weights for the first pick.
//!
//! ```
//! use std::collections::BTreeSet;
//! use std::sync::Arc;
//! use pingora_load_balancing::selection::{algorithms, weighted::Weighted, BackendIter, BackendSelection};
//! use pingora_load_balancing::Backend;
//!
//! let set: BTreeSet<Backend> = ["127.0.0.1:8001", "127.0.0.1:8002"]
//!     .into_iter()
//!     .map(|a| Backend::new(a).unwrap())
//!     .collect();
//! let rr = Arc::new(Weighted::<algorithms::RoundRobin>::build(&set));
//! let first = rr.iter(b"").next().unwrap().clone();
//! let second = rr.iter(b"").next().unwrap().clone();
//! assert_ne!(first, second);
//! ```

use std::collections::BTreeSet;
use std::sync::Arc;

use super::{BackendIter, BackendSelection, SelectionAlgorithm};
use crate::Backend;

/// Most weighted slots; larger weight sums keep each backend's share
/// roughly (every backend keeps at least one slot).
const MAX_SLOTS: usize = 1 << 16;

/// Names the type; its state is not shown.
impl<A> std::fmt::Debug for Weighted<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Weighted").finish_non_exhaustive()
    }
}

/// Backends picked by `A`: the first candidate from a table where each
/// backend appears as often as its weight, the next ones from `A` again
/// over the backends alone (so a walk past an unhealthy backend is not
/// drawn to the heavy ones).
pub struct Weighted<A> {
    backends: Box<[Backend]>,
    /// Indices into `backends`, each repeated by its weight.
    slots: Box<[u32]>,
    algorithm: A,
}

impl<A: SelectionAlgorithm> BackendSelection for Weighted<A> {
    type Iter = WeightedIterator<A>;
    type Config = ();
    const TRACKS_LOAD: bool = false;

    fn build(backends: &BTreeSet<Backend>) -> Self {
        let total: usize = backends.iter().map(|b| b.weight.max(1)).sum();
        let scale = |w: usize| match total > MAX_SLOTS {
            true => (w * MAX_SLOTS / total).max(1),
            false => w,
        };
        let slots = backends
            .iter()
            .enumerate()
            .flat_map(|(i, b)| std::iter::repeat_n(i as u32, scale(b.weight.max(1))))
            .collect();
        Weighted {
            backends: backends.iter().cloned().collect(),
            slots,
            algorithm: A::new(),
        }
    }

    fn iter(self: &Arc<Self>, key: &[u8]) -> WeightedIterator<A> {
        WeightedIterator {
            index: self.algorithm.next(key),
            selection: self.clone(),
            first: true,
        }
    }
}

/// Names the type; its state is not shown.
impl<A> std::fmt::Debug for WeightedIterator<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeightedIterator").finish_non_exhaustive()
    }
}

/// The candidates of a [`Weighted`] selection (endless: the caller bounds
/// the walk).
pub struct WeightedIterator<A> {
    index: u64,
    selection: Arc<Weighted<A>>,
    first: bool,
}

impl<A: SelectionAlgorithm> BackendIter for WeightedIterator<A> {
    fn next(&mut self) -> Option<&Backend> {
        let w = &self.selection;
        if w.backends.is_empty() {
            return None;
        }
        if self.first {
            self.first = false;
            let slot = w.slots[(self.index % w.slots.len() as u64) as usize];
            return w.backends.get(slot as usize);
        }
        // Onward: the algorithm again, keyed by where the walk is.
        self.index = w.algorithm.next(&self.index.to_le_bytes());
        w.backends
            .get((self.index % w.backends.len() as u64) as usize)
    }
}
