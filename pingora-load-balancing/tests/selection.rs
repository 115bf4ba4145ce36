//! Selection through the load balancer: the bound on the walk past
//! backends that are not ready, and the user's metadata on each backend
//! carried through to the pick.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pingora_load_balancing::discovery::Static;
use pingora_load_balancing::selection::{
    algorithms, weighted::Weighted, BackendIter, BackendSelection, FnvHash, Ketama,
    LeastConnection, Maglev, PeakEwma, Random, RoundRobin,
};
use pingora_load_balancing::{Backend, Backends, LoadBalancer, OutlierEjection};

fn addrs(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("10.3.0.{i}:80")).collect()
}

#[test]
fn the_walk_stops_after_max_iterations() {
    let lb: LoadBalancer<Ketama> = LoadBalancer::try_from_iter(addrs(5)).unwrap();
    let key = b"user-7";
    // The whole walk for this key: each backend once, then no more, even
    // with a larger bound.
    let walk: Mutex<Vec<Backend>> = Mutex::default();
    let none = lb.select_with(key, 100, |b, _| {
        walk.lock().unwrap().push(b.clone());
        false
    });
    assert!(none.is_none());
    let walk = walk.into_inner().unwrap();
    assert_eq!(walk.len(), 5);
    // A bound of k looks at k candidates, no more.
    for k in 0..=5 {
        let looked = Mutex::new(0);
        let got = lb.select_with(key, k, |_, _| {
            *looked.lock().unwrap() += 1;
            false
        });
        assert!(got.is_none());
        assert_eq!(*looked.lock().unwrap(), k);
    }
    // The last candidate is found with a bound of 5, not of 4.
    let last = walk[4].clone();
    assert!(lb.select_with(key, 4, |b, _| *b == last).is_none());
    assert_eq!(lb.select_with(key, 5, |b, _| *b == last), Some(last));
}

#[test]
fn the_walk_skips_backends_that_are_not_ready_within_its_bound() {
    let mut lb: LoadBalancer<Ketama> = LoadBalancer::try_from_iter(addrs(5)).unwrap();
    lb.backends_mut().set_outlier_ejection(OutlierEjection {
        consecutive_errors: 1,
        base_ejection_time: Duration::from_secs(600),
        max_ejection_percent: 100,
        ..Default::default()
    });
    let key = b"user-7";
    let walk: Mutex<Vec<Backend>> = Mutex::default();
    lb.select_with(key, 5, |b, _| {
        walk.lock().unwrap().push(b.clone());
        false
    });
    let walk = walk.into_inner().unwrap();
    // The key's first three candidates are ejected.
    for b in &walk[..3] {
        lb.on_done(b, Duration::from_millis(1), false);
        assert!(lb.backends().is_ejected(b));
    }
    for k in 0..=3 {
        assert_eq!(lb.select(key, k), None, "bound {k}");
    }
    assert_eq!(lb.select(key, 4), Some(walk[3].clone()));
    assert_eq!(lb.select(key, 5), Some(walk[3].clone()));
}

/// What the user attaches to a backend.
#[derive(Clone, Debug, PartialEq)]
struct Zone(String);

/// Picks with `S` over four backends of weights 1 to 4, each carrying a
/// [`Zone`]: every pick comes with its own; and, when `all` is set, every
/// backend is picked at least once in 200.
async fn metadata_carried<S>(name: &str, all: bool)
where
    S: BackendSelection + 'static,
    S::Iter: BackendIter,
{
    let set: BTreeSet<Backend> = addrs(4)
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let mut b = Backend::new_with_weight(a, i + 1).unwrap();
            b.ext.insert(Zone(format!("zone-{a}")));
            b
        })
        .collect();
    let lb: LoadBalancer<S> = LoadBalancer::from_backends(Backends::new(Static::new(set)));
    lb.update().await.unwrap();
    let mut seen = BTreeSet::new();
    for i in 0..200u32 {
        let b = lb.select(&i.to_le_bytes(), 4).unwrap();
        assert_eq!(
            b.ext.get::<Zone>(),
            Some(&Zone(format!("zone-{}", b.addr))),
            "{name}: {}",
            b.addr
        );
        seen.insert(b.addr.to_string());
    }
    if all {
        assert_eq!(seen.len(), 4, "{name}: picked {seen:?}");
    }
}

#[tokio::test]
async fn user_metadata_is_carried_through_selection() {
    metadata_carried::<RoundRobin>("round robin", true).await;
    metadata_carried::<Random>("random", true).await;
    metadata_carried::<Ketama>("ketama", true).await;
    metadata_carried::<FnvHash>("fnv", true).await;
    metadata_carried::<Maglev>("maglev", true).await;
    metadata_carried::<LeastConnection>("least connections", true).await;
    metadata_carried::<Weighted<algorithms::RoundRobin>>("weighted round robin", true).await;
    metadata_carried::<Weighted<std::collections::hash_map::DefaultHasher>>("weighted hash", true)
        .await;
    // The power of two choices compares load per unit of weight: the
    // lightest backend loses every draw while all are idle.
    metadata_carried::<PeakEwma>("peak ewma", false).await;
}

/// A selection of the user's, written as for Pingora: the backends in
/// order, each offered twice; its configuration skips the first ones.
struct InOrder(Vec<Backend>);

/// [`InOrder`]'s candidates.
struct InOrderIter {
    selection: Arc<InOrder>,
    step: usize,
}

impl BackendIter for InOrderIter {
    fn next(&mut self) -> Option<&Backend> {
        let b = self.selection.0.get(self.step / 2);
        self.step += 1;
        b
    }
}

impl BackendSelection for InOrder {
    type Iter = InOrderIter;
    type Config = usize;

    fn build(backends: &BTreeSet<Backend>) -> Self {
        InOrder(backends.iter().cloned().collect())
    }

    fn build_with_config(backends: &BTreeSet<Backend>, skip: &usize) -> Self {
        InOrder(backends.iter().skip(*skip).cloned().collect())
    }

    fn iter(self: &Arc<Self>, _key: &[u8]) -> InOrderIter {
        InOrderIter {
            selection: self.clone(),
            step: 0,
        }
    }
}

#[tokio::test]
async fn a_selection_written_for_pingora() {
    let set: BTreeSet<Backend> = addrs(3).iter().map(|a| Backend::new(a).unwrap()).collect();
    let lb = LoadBalancer::<InOrder>::from_backends(Backends::new(Static::new(set.clone())));
    lb.update().await.unwrap();
    let pick = |lb: &LoadBalancer<InOrder>, max, skip: &str| {
        lb.select_with(b"", max, |b, ready| ready && b.addr.to_string() != skip)
            .map(|b| b.addr.to_string())
    };
    assert_eq!(pick(&lb, 4, "").as_deref(), Some("10.3.0.1:80"));
    // Past a refused backend, each one once; repeats count as steps.
    assert_eq!(pick(&lb, 3, "10.3.0.1:80").as_deref(), Some("10.3.0.2:80"));
    assert_eq!(pick(&lb, 2, "10.3.0.1:80"), None);
    // Built with its configuration.
    let lb = LoadBalancer::<InOrder>::from_backends_with_config(
        Backends::new(Static::new(set)),
        Some(2),
    );
    lb.update().await.unwrap();
    assert_eq!(pick(&lb, 4, "").as_deref(), Some("10.3.0.3:80"));
}
