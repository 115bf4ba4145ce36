//! Maglev hashing (Eisenbud et al., NSDI 2016): a lookup table filled from
//! each backend's own permutation, so keys spread evenly and few move when
//! the set changes.

use super::{walked_selection, BackendSelection};
use crate::backend::{fnv1a, mix};
use crate::Backend;

/// Table size: a prime well above 100 × the largest expected backend count.
const TABLE: usize = 65_537;

/// Names the type; its state is not shown.
impl std::fmt::Debug for Maglev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maglev").finish_non_exhaustive()
    }
}

/// Maglev consistent hashing, weighted by giving heavier backends more
/// turns while the table fills.
pub struct Maglev {
    backends: Vec<Backend>,
    table: Vec<u32>,
}

impl BackendSelection for Maglev {
    walked_selection!();

    fn build_sorted(backends: &[Backend]) -> Self {
        let n = backends.len();
        let mut table = vec![u32::MAX; if n == 0 { 0 } else { TABLE }];
        if n > 0 {
            let m = TABLE as u64;
            let perms: Vec<(u64, u64)> = backends
                .iter()
                .map(|b| {
                    let h = b.hash_key();
                    (mix(h) % m, mix(h ^ 0x9e37_79b9_7f4a_7c15) % (m - 1) + 1)
                })
                .collect();
            let mut next = vec![0u64; n];
            let mut filled = 0;
            'fill: loop {
                for (i, b) in backends.iter().enumerate() {
                    for _ in 0..b.weight {
                        let (offset, skip) = perms[i];
                        let mut c = (offset + next[i] * skip) % m;
                        while table[c as usize] != u32::MAX {
                            next[i] += 1;
                            c = (offset + next[i] * skip) % m;
                        }
                        table[c as usize] = i as u32;
                        next[i] += 1;
                        filled += 1;
                        if filled == TABLE {
                            break 'fill;
                        }
                    }
                }
            }
        }
        Maglev {
            backends: backends.to_vec(),
            table,
        }
    }

    fn start(&self, key: &[u8]) -> u64 {
        mix(fnv1a(key))
    }

    fn candidate(&self, state: u64, step: usize) -> Option<&Backend> {
        super::walk_table(&self.backends, &self.table, state, step)
    }
}
