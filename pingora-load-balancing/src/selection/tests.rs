use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use pingora_core::protocols::SocketAddr;

use super::*;

fn backends(weights: &[usize]) -> Vec<Backend> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            Backend::new_with_weight(&format!("10.0.{}.{}:80", i / 250, i % 250 + 1), w).unwrap()
        })
        .collect()
}

/// Share of picks per backend over `n` picks with distinct keys.
fn shares<S: BackendSelection>(b: &[Backend], n: usize) -> HashMap<SocketAddr, f64> {
    let s = Arc::new(S::build_sorted(b));
    let mut counts: HashMap<SocketAddr, usize> = HashMap::new();
    for i in 0..n {
        let key = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes();
        let pick = s.candidate(s.start(&key), 0).unwrap();
        *counts.entry(pick.addr.clone()).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|(k, c)| (k, c as f64 / n as f64))
        .collect()
}

/// Every backend's share of `picks` picks is its weight's share, within
/// `tolerance` of that share (relative: at 0.02, a backend due 10% gets
/// 9.8% to 10.2%).
fn assert_shares<S: BackendSelection>(name: &str, weights: &[usize], picks: usize, tolerance: f64) {
    let b = backends(weights);
    let got = shares::<S>(&b, picks);
    let total: usize = weights.iter().sum();
    for (backend, &w) in b.iter().zip(weights) {
        let want = w as f64 / total as f64;
        let share = got.get(&backend.addr).copied().unwrap_or(0.0);
        assert!(
            (share - want).abs() <= tolerance * want,
            "{name}: {} got {share:.4}, want {want:.4} ± {:.0}%",
            backend.addr,
            tolerance * 100.0
        );
    }
}

#[test]
fn weights_are_respected() {
    let weights = [1, 2, 3, 4];
    // Round robin is exact over whole cycles.
    assert_shares::<RoundRobin>("round robin", &weights, 100_000, 0.02);
    // Random, and the hashing ones over distinct keys: 1,000,000 picks, so
    // that sampling alone keeps the smallest share (10%) within 0.3% (one
    // standard deviation) of itself, and ±2% is over six of them.
    assert_shares::<Random>("random", &weights, 1_000_000, 0.02);
    assert_shares::<FnvHash>("fnv", &weights, 1_000_000, 0.02);
    assert_shares::<Maglev>("maglev", &weights, 1_000_000, 0.02);
    // Ketama's ring gives each backend exactly 160 points per unit of
    // weight, but the share of the hash space those random points cover
    // varies by about 1/sqrt(points) (8% for weight 1): 2% would need
    // thousands of points per unit of weight, and a slower ring. Its bound
    // is that ring's: within 15% of the share (ignoring the weights would
    // be 150% off for the lightest backend).
    assert_shares::<Ketama>("ketama", &weights, 1_000_000, 0.15);
    // Least connections and peak-EWMA follow load, not weights, when idle:
    // weight divides the load they compare (see the tests below).
}

#[test]
fn random_without_weights_is_uniform() {
    // Equal weights take the unweighted path; each of 8 backends gets an
    // eighth within 2% of it (±7.5 standard deviations at 1,000,000).
    assert_shares::<Random>("random", &[1; 8], 1_000_000, 0.02);
    assert_shares::<Random>("random", &[5; 8], 1_000_000, 0.02);
}

#[test]
fn smooth_round_robin_interleaves() {
    let b = backends(&[3, 1]);
    let rr = Arc::new(RoundRobin::build_sorted(&b));
    let picks: Vec<String> = (0..8)
        .map(|_| rr.candidate(rr.start(b""), 0).unwrap().addr.to_string())
        .collect();
    // Never three of the heavy one in a row across the cycle boundary.
    let heavy = b[0].addr.to_string();
    assert!(
        !picks.windows(4).any(|w| w.iter().all(|p| *p == heavy)),
        "{picks:?}"
    );
    assert_eq!(picks.iter().filter(|p| **p == heavy).count(), 6);
}

/// When one of n backends leaves, at most 1.2/n of the keys move.
fn assert_minimal_movement<S: BackendSelection>(name: &str) {
    let n = 10;
    let all = backends(&vec![1; n]);
    let fewer: Vec<Backend> = all
        .iter()
        .filter(|b| b.addr != all[3].addr)
        .cloned()
        .collect();
    let (a, b) = (
        Arc::new(S::build_sorted(&all)),
        Arc::new(S::build_sorted(&fewer)),
    );
    let keys = 100_000;
    let mut moved = 0;
    for i in 0..keys {
        let key = format!("key-{i}");
        let before = &a.candidate(a.start(key.as_bytes()), 0).unwrap().addr;
        let after = &b.candidate(b.start(key.as_bytes()), 0).unwrap().addr;
        if before != after {
            moved += 1;
        }
    }
    let frac = moved as f64 / keys as f64;
    assert!(frac <= 1.2 / n as f64, "{name}: {frac:.4} of keys moved");
}

#[test]
fn consistent_hashing_moves_few_keys() {
    assert_minimal_movement::<Ketama>("ketama");
    assert_minimal_movement::<Maglev>("maglev");
}

#[test]
fn walks_visit_every_backend_once() {
    let b = backends(&[1, 2, 3, 1, 1]);
    fn check<S: BackendSelection>(b: &[Backend]) {
        let s = Arc::new(S::build_sorted(b));
        let state = s.start(b"some key");
        let mut seen: Vec<String> = (0..)
            .map_while(|step| s.candidate(state, step))
            .map(|x| x.addr.to_string())
            .collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), b.len());
    }
    check::<RoundRobin>(&b);
    check::<Random>(&b);
    check::<Ketama>(&b);
    check::<FnvHash>(&b);
    check::<Maglev>(&b);
    check::<LeastConnection>(&b);
    check::<PeakEwma>(&b);
    // Empty sets give nothing.
    assert!(Arc::new(Maglev::build(&BTreeSet::new()))
        .iter(b"k")
        .next()
        .is_none());
    assert!(Arc::new(RoundRobin::build(&BTreeSet::new()))
        .iter(b"")
        .next()
        .is_none());
}

#[test]
fn least_connections_avoids_busy_backends() {
    let b = backends(&[1, 1, 1]);
    let s = Arc::new(LeastConnection::build_sorted(&b));
    s.on_start(&b[0]);
    s.on_start(&b[0]);
    s.on_start(&b[1]);
    for _ in 0..100 {
        assert_eq!(s.iter(b"").next().unwrap(), &b[2]);
    }
    s.on_done(&b[1], Duration::ZERO);
    assert_eq!(s.in_flight(&b[1]), 0);
}

#[test]
fn peak_ewma_sends_less_to_a_slow_backend() {
    let b = backends(&[1, 1]);
    let s = Arc::new(PeakEwma::build_sorted(&b));
    s.on_start(&b[0]);
    s.on_done(&b[0], Duration::from_millis(200));
    s.on_start(&b[1]);
    s.on_done(&b[1], Duration::from_millis(2));
    let slow = (0..10_000)
        .filter(|_| s.iter(b"").next().unwrap() == &b[0])
        .count();
    // With two backends both are drawn each time: the fast one always wins.
    assert_eq!(slow, 0);
    assert!(s.latency(&b[0]).unwrap() >= Duration::from_millis(199));
}
