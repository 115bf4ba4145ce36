//! Load-aware algorithms: least connections, and the power of two choices
//! over a peak-EWMA of latency. Both learn from `on_start` / `on_done`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{random_u64, walked_selection, BackendSelection};
use crate::Backend;

/// The backends with their requests in flight: what both algorithms keep
/// and update alike.
struct InFlight {
    backends: Vec<Backend>,
    /// Backend (by hash key) to its place in `backends`.
    index: HashMap<u64, usize>,
    counts: Vec<AtomicUsize>,
}

impl InFlight {
    fn new(backends: &[Backend]) -> Self {
        InFlight {
            backends: backends.to_vec(),
            index: backends
                .iter()
                .enumerate()
                .map(|(i, b)| (b.hash_key(), i))
                .collect(),
            counts: backends.iter().map(|_| AtomicUsize::new(0)).collect(),
        }
    }

    fn len(&self) -> usize {
        self.backends.len()
    }

    /// Requests in flight to backend `i`.
    fn load(&self, i: usize) -> usize {
        self.counts[i].load(Ordering::Relaxed)
    }

    /// The walk from the chosen backend `state`: the others in order.
    fn candidate(&self, state: u64, step: usize) -> Option<&Backend> {
        let n = self.backends.len();
        if step >= n {
            return None;
        }
        self.backends.get((state as usize + step) % n)
    }

    /// A request to `backend` started.
    fn start(&self, backend: &Backend) {
        if let Some(&i) = self.index.get(&backend.hash_key()) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A request to `backend` ended; its index, if it is one of ours.
    fn done(&self, backend: &Backend) -> Option<usize> {
        let &i = self.index.get(&backend.hash_key())?;
        let _ =
            self.counts[i].fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
        Some(i)
    }
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
    inflight: InFlight,
}

impl LeastConnection {
    /// Requests in flight to `backend` now.
    pub fn in_flight(&self, backend: &Backend) -> usize {
        let index = &self.inflight.index;
        index
            .get(&backend.hash_key())
            .map_or(0, |&i| self.inflight.load(i))
    }
}

impl BackendSelection for LeastConnection {
    walked_selection!(tracks_load);

    fn build_sorted(backends: &[Backend]) -> Self {
        LeastConnection {
            inflight: InFlight::new(backends),
        }
    }

    fn start(&self, _key: &[u8]) -> u64 {
        let n = self.inflight.len();
        if n == 0 {
            return 0;
        }
        let offset = (random_u64() % n as u64) as usize;
        let mut best = offset;
        let mut best_load = f64::MAX;
        for k in 0..n {
            let i = (offset + k) % n;
            let load = self.inflight.load(i) as f64 / self.inflight.backends[i].weight as f64;
            if load < best_load {
                best = i;
                best_load = load;
            }
        }
        best as u64
    }

    fn candidate(&self, state: u64, step: usize) -> Option<&Backend> {
        self.inflight.candidate(state, step)
    }

    fn on_start(&self, backend: &Backend) {
        self.inflight.start(backend);
    }

    fn on_done(&self, backend: &Backend, _latency: Duration) {
        self.inflight.done(backend);
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
    inflight: InFlight,
    /// f64 bits: the latency estimate, ns.
    ewma: Vec<AtomicU64>,
    /// ns since `epoch` of the last update.
    updated: Vec<AtomicU64>,
    epoch: Instant,
}

impl PeakEwma {
    fn cost(&self, i: usize) -> f64 {
        let rtt = f64::from_bits(self.ewma[i].load(Ordering::Relaxed));
        let load = self.inflight.load(i) as f64 + 1.0;
        rtt * load / self.inflight.backends[i].weight as f64
    }

    /// The current latency estimate of `backend`.
    pub fn latency(&self, backend: &Backend) -> Option<Duration> {
        let i = *self.inflight.index.get(&backend.hash_key())?;
        Some(Duration::from_nanos(
            f64::from_bits(self.ewma[i].load(Ordering::Relaxed)) as u64,
        ))
    }
}

impl BackendSelection for PeakEwma {
    walked_selection!(tracks_load);

    fn build_sorted(backends: &[Backend]) -> Self {
        PeakEwma {
            inflight: InFlight::new(backends),
            ewma: backends
                .iter()
                .map(|_| AtomicU64::new(DEFAULT_RTT_NS.to_bits()))
                .collect(),
            updated: backends.iter().map(|_| AtomicU64::new(0)).collect(),
            epoch: Instant::now(),
        }
    }

    fn start(&self, _key: &[u8]) -> u64 {
        let n = self.inflight.len() as u64;
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
        self.inflight.candidate(state, step)
    }

    fn on_start(&self, backend: &Backend) {
        self.inflight.start(backend);
    }

    fn on_done(&self, backend: &Backend, latency: Duration) {
        let Some(i) = self.inflight.done(backend) else {
            return;
        };
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
