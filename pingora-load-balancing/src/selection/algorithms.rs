//! Pingora's plain picking functions, for a [`Weighted`](super::weighted::Weighted)
//! selection: a number per pick, which the selection takes modulo its
//! backends. (The shipped [`RoundRobin`](super::RoundRobin) and
//! [`Random`](super::Random) selections are the smooth weighted ones.)

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{random_u64, SelectionAlgorithm};

/// The next number each time, whatever the key.
#[derive(Debug, Default)]
pub struct RoundRobin(AtomicUsize);

impl SelectionAlgorithm for RoundRobin {
    fn new() -> Self {
        Self::default()
    }

    fn next(&self, _key: &[u8]) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed) as u64
    }
}

/// A random number each time, whatever the key.
#[derive(Debug, Default)]
pub struct Random;

impl SelectionAlgorithm for Random {
    fn new() -> Self {
        Random
    }

    fn next(&self, _key: &[u8]) -> u64 {
        random_u64()
    }
}
