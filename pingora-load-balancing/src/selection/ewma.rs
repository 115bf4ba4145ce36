//! Load-aware algorithms: least connections, and the power of two choices
//! over a peak-EWMA of latency. Both learn from `on_start` / `on_done`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{random_u64, walked_selection, BackendSelection};
use crate::Backend;

fn index_of(backends: &[Backend]) -> HashMap<u64, usize> {
    backends
        .iter()
        .enumerate()
        .map(|(i, b)| (b.hash_key(), i))
        .collect()
}

/// Names the type; its state is not shown.
impl std::fmt::Debug for LeastConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeastConnection").finish_non_exhaustive()
    }
}

/// The backend with the fewest requests in flight (per unit of weight);
/// ties are broken at random. A pick scans all backends.
pub struct LeastConnection {
    backends: Vec<Backend>,
    index: HashMap<u64, usize>,
    inflight: Vec<AtomicUsize>,
}

impl LeastConnection {
    /// Requests in flight to `backend` now.
    pub fn in_flight(&self, backend: &Backend) -> usize {
        self.index
            .get(&backend.hash_key())
            .map_or(0, |&i| self.inflight[i].load(Ordering::Relaxed))
    }
}

impl BackendSelection for LeastConnection {
    walked_selection!(tracks_load);

    fn build_sorted(backends: &[Backend]) -> Self {
        LeastConnection {
            backends: backends.to_vec(),
            index: index_of(backends),
            inflight: backends.iter().map(|_| AtomicUsize::new(0)).collect(),
        }
    }

    fn start(&self, _key: &[u8]) -> u64 {
        let n = self.backends.len();
        if n == 0 {
            return 0;
        }
        let offset = (random_u64() % n as u64) as usize;
        let mut best = offset;
        let mut best_load = f64::MAX;
        for k in 0..n {
            let i = (offset + k) % n;
            let load =
                self.inflight[i].load(Ordering::Relaxed) as f64 / self.backends[i].weight as f64;
            if load < best_load {
                best = i;
                best_load = load;
            }
        }
        best as u64
    }

    fn candidate(&self, state: u64, step: usize) -> Option<&Backend> {
        let n = self.backends.len();
        if step >= n {
            return None;
        }
        self.backends.get((state as usize + step) % n)
    }

    fn on_start(&self, backend: &Backend) {
        if let Some(&i) = self.index.get(&backend.hash_key()) {
            self.inflight[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn on_done(&self, backend: &Backend, _latency: Duration) {
        if let Some(&i) = self.index.get(&backend.hash_key()) {
            let _ = self.inflight[i]
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
        }
    }
}

/// How fast a latency spike is forgotten.
const DECAY: Duration = Duration::from_secs(10);
/// The latency assumed for a backend not yet measured.
const DEFAULT_RTT_NS: f64 = 1_000_000.0;

/// Names the type; its state is not shown.
impl std::fmt::Debug for PeakEwma {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeakEwma").finish_non_exhaustive()
    }
}

/// Power of two choices over a peak-EWMA of latency: two backends at
/// random, and the one whose (latency × (in flight + 1)) / weight is lower.
/// A slow backend's estimate jumps to each slow sample at once (peak) and
/// decays slowly, so it gets less traffic until it is fast again.
pub struct PeakEwma {
    backends: Vec<Backend>,
    index: HashMap<u64, usize>,
    inflight: Vec<AtomicUsize>,
    /// f64 bits: the latency estimate, ns.
    ewma: Vec<AtomicU64>,
    /// ns since `epoch` of the last update.
    updated: Vec<AtomicU64>,
    epoch: Instant,
}

impl PeakEwma {
    fn cost(&self, i: usize) -> f64 {
        let rtt = f64::from_bits(self.ewma[i].load(Ordering::Relaxed));
        let load = self.inflight[i].load(Ordering::Relaxed) as f64 + 1.0;
        rtt * load / self.backends[i].weight as f64
    }

    /// The current latency estimate of `backend`.
    pub fn latency(&self, backend: &Backend) -> Option<Duration> {
        let i = *self.index.get(&backend.hash_key())?;
        Some(Duration::from_nanos(
            f64::from_bits(self.ewma[i].load(Ordering::Relaxed)) as u64,
        ))
    }
}

impl BackendSelection for PeakEwma {
    walked_selection!(tracks_load);

    fn build_sorted(backends: &[Backend]) -> Self {
        PeakEwma {
            backends: backends.to_vec(),
            index: index_of(backends),
            inflight: backends.iter().map(|_| AtomicUsize::new(0)).collect(),
            ewma: backends
                .iter()
                .map(|_| AtomicU64::new(DEFAULT_RTT_NS.to_bits()))
                .collect(),
            updated: backends.iter().map(|_| AtomicU64::new(0)).collect(),
            epoch: Instant::now(),
        }
    }

    fn start(&self, _key: &[u8]) -> u64 {
        let n = self.backends.len() as u64;
        if n < 2 {
            return 0;
        }
        let r = random_u64();
        let a = (r % n) as usize;
        let mut b = ((r >> 32) % (n - 1)) as usize;
        if b >= a {
            b += 1;
        }
        if self.cost(b) < self.cost(a) {
            b as u64
        } else {
            a as u64
        }
    }

    fn candidate(&self, state: u64, step: usize) -> Option<&Backend> {
        let n = self.backends.len();
        if step >= n {
            return None;
        }
        self.backends.get((state as usize + step) % n)
    }

    fn on_start(&self, backend: &Backend) {
        if let Some(&i) = self.index.get(&backend.hash_key()) {
            self.inflight[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn on_done(&self, backend: &Backend, latency: Duration) {
        let Some(&i) = self.index.get(&backend.hash_key()) else {
            return;
        };
        let _ = self.inflight[i]
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
        let now = self.epoch.elapsed().as_nanos() as u64;
        let last = self.updated[i].swap(now, Ordering::Relaxed);
        let sample = latency.as_nanos() as f64;
        let old = f64::from_bits(self.ewma[i].load(Ordering::Relaxed));
        let new = if sample > old {
            sample
        } else {
            let w = (-((now.saturating_sub(last)) as f64) / DECAY.as_nanos() as f64).exp();
            old * w + sample * (1.0 - w)
        };
        self.ewma[i].store(new.to_bits(), Ordering::Relaxed);
    }
}
