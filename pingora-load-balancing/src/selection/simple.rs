//! Round robin (smooth weighted) and random (weighted).

use std::sync::atomic::{AtomicU64, Ordering};

use super::{random_u64, walked_selection, BackendSelection};
use crate::Backend;

/// Most entries in a precomputed weighted sequence; larger weight sums are
/// scaled down (keeping every backend at least once).
const MAX_SEQUENCE: u64 = 1 << 16;

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Weights reduced by their common divisor and, if still large, scaled.
fn reduced_weights(backends: &[Backend]) -> Vec<u64> {
    let g = backends
        .iter()
        .fold(0, |g, b| gcd(g, b.weight as u64))
        .max(1);
    let mut w: Vec<u64> = backends.iter().map(|b| b.weight as u64 / g).collect();
    let total: u64 = w.iter().sum();
    if total > MAX_SEQUENCE {
        for x in &mut w {
            *x = (*x * MAX_SEQUENCE / total).max(1);
        }
    }
    w
}

/// Names the type; its state is not shown.
impl std::fmt::Debug for RoundRobin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoundRobin").finish_non_exhaustive()
    }
}

/// Smooth weighted round robin, as nginx does it: a backend of weight 3
/// next to one of weight 1 gets `a a b a`, not `a a a b`. The whole cycle is
/// computed when the set is built, so a pick is one atomic increment.
pub struct RoundRobin {
    backends: Vec<Backend>,
    /// One cycle of picks (indices into `backends`).
    sequence: Vec<u32>,
    next: AtomicU64,
}

impl BackendSelection for RoundRobin {
    walked_selection!();

    fn build_sorted(backends: &[Backend]) -> Self {
        let weights = reduced_weights(backends);
        let total: i64 = weights.iter().sum::<u64>() as i64;
        let mut current = vec![0i64; weights.len()];
        let mut sequence = Vec::with_capacity(total as usize);
        for _ in 0..total {
            let mut best = 0;
            for (i, w) in weights.iter().enumerate() {
                current[i] += *w as i64;
                if current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= total;
            sequence.push(best as u32);
        }
        RoundRobin {
            backends: backends.to_vec(),
            sequence,
            next: AtomicU64::new(0),
        }
    }

    fn start(&self, _key: &[u8]) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    fn candidate(&self, state: u64, step: usize) -> Option<&Backend> {
        super::walk_table(&self.backends, &self.sequence, state, step)
    }
}

/// Names the type; its state is not shown.
impl std::fmt::Debug for Random {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Random").finish_non_exhaustive()
    }
}

/// Random picks, in proportion to weight.
pub struct Random {
    backends: Vec<Backend>,
    /// Running sums of the weights (empty when all weights are equal).
    cumulative: Vec<u64>,
}

impl BackendSelection for Random {
    walked_selection!();

    fn build_sorted(backends: &[Backend]) -> Self {
        let uniform = backends.windows(2).all(|w| w[0].weight == w[1].weight);
        let cumulative = if uniform {
            vec![]
        } else {
            backends
                .iter()
                .scan(0u64, |sum, b| {
                    *sum += b.weight as u64;
                    Some(*sum)
                })
                .collect()
        };
        Random {
            backends: backends.to_vec(),
            cumulative,
        }
    }

    fn start(&self, _key: &[u8]) -> u64 {
        random_u64()
    }

    fn candidate(&self, state: u64, step: usize) -> Option<&Backend> {
        let n = self.backends.len();
        if step >= n {
            return None;
        }
        let first = match self.cumulative.last() {
            None => (state % n as u64) as usize,
            Some(&total) => {
                let r = state % total;
                self.cumulative.partition_point(|&c| c <= r)
            }
        };
        self.backends.get((first + step) % n)
    }
}
