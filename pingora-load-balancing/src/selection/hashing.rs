//! Hashing algorithms: Ketama consistent hashing, and plain FNV modulo.

use super::{walked_selection, BackendSelection};
use crate::backend::{fnv1a, mix};
use crate::Backend;

/// Points on the ring per unit of weight.
const POINTS_PER_WEIGHT: usize = 160;

/// Names the type; its state is not shown.
impl std::fmt::Debug for Ketama {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ketama").finish_non_exhaustive()
    }
}

/// Consistent hashing on a ring (Ketama): each backend owns many points in
/// proportion to its weight; a key goes to the first point at or after its
/// hash. When a backend leaves, only its keys move.
pub struct Ketama {
    backends: Vec<Backend>,
    /// (point, backend index), sorted by point.
    ring: Vec<(u64, u32)>,
}

impl BackendSelection for Ketama {
    walked_selection!();

    fn build_sorted(backends: &[Backend]) -> Self {
        let mut ring = Vec::new();
        for (i, b) in backends.iter().enumerate() {
            let id = b.hash_key();
            for p in 0..b.weight * POINTS_PER_WEIGHT {
                ring.push((mix(id ^ mix(p as u64 + 1)), i as u32));
            }
        }
        ring.sort_unstable();
        Ketama {
            backends: backends.to_vec(),
            ring,
        }
    }

    fn start(&self, key: &[u8]) -> u64 {
        let h = mix(fnv1a(key));
        self.ring.partition_point(|&(p, _)| p < h) as u64
    }

    fn candidate(&self, state: u64, step: usize) -> Option<&Backend> {
        if step >= self.backends.len() || self.ring.is_empty() {
            return None;
        }
        // Walk the ring from the key's point, taking each backend once.
        let len = self.ring.len();
        let mut seen = 0;
        let mut found: Vec<u32> = Vec::new();
        let mut i = state as usize % len;
        for _ in 0..len {
            let b = self.ring[i].1;
            if step == 0 {
                return self.backends.get(b as usize);
            }
            if !found.contains(&b) {
                if seen == step {
                    return self.backends.get(b as usize);
                }
                found.push(b);
                seen += 1;
            }
            i = (i + 1) % len;
        }
        None
    }
}

/// Names the type; its state is not shown.
impl std::fmt::Debug for FnvHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnvHash").finish_non_exhaustive()
    }
}

/// Plain hashing: FNV-1a of the key, modulo the weighted backend list.
/// Cheap and even, but most keys move when the set changes (use [`Ketama`]
/// or [`Maglev`](super::Maglev) when that matters).
pub struct FnvHash {
    backends: Vec<Backend>,
    /// Backend indices, each repeated by its weight.
    weighted: Vec<u32>,
}

impl BackendSelection for FnvHash {
    walked_selection!();

    fn build_sorted(backends: &[Backend]) -> Self {
        let weighted = backends
            .iter()
            .enumerate()
            .flat_map(|(i, b)| std::iter::repeat_n(i as u32, b.weight))
            .collect();
        FnvHash {
            backends: backends.to_vec(),
            weighted,
        }
    }

    fn start(&self, key: &[u8]) -> u64 {
        fnv1a(key)
    }

    fn candidate(&self, state: u64, step: usize) -> Option<&Backend> {
        super::walk_table(&self.backends, &self.weighted, state, step)
    }
}
