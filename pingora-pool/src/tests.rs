use std::sync::atomic::AtomicBool;

use super::*;

/// A fake connection: unusable once its flag is set (the peer closed it).
struct Conn {
    id: u32,
    closed: Arc<AtomicBool>,
}

impl Conn {
    fn new(id: u32) -> (Conn, Arc<AtomicBool>) {
        let closed = Arc::new(AtomicBool::new(false));
        (
            Conn {
                id,
                closed: closed.clone(),
            },
            closed,
        )
    }
}

fn open(c: &Conn) -> bool {
    !c.closed.load(Ordering::SeqCst)
}

#[test]
fn per_key_lists_longest_idle_first() {
    let pool = ConnectionPool::new(10);
    pool.put(1, "a1");
    pool.put(2, "b1");
    pool.put(1, "a2");
    assert_eq!(pool.idle_count(), 3);
    assert_eq!(pool.get(1), Some("a1"));
    assert_eq!(pool.get(1), Some("a2"));
    assert_eq!(pool.get(1), None);
    assert_eq!(pool.get(3), None);
    assert_eq!(pool.get(2), Some("b1"));
    let s = pool.stats();
    assert_eq!((s.hits, s.misses, s.idle), (3, 2, 0));
}

#[test]
fn global_cap_drops_the_longest_idle_across_keys() {
    let pool = ConnectionPool::new(3);
    pool.put(1, "oldest");
    pool.put(2, "b");
    pool.put(1, "c");
    pool.put(3, "d"); // over the cap: "oldest" goes
    assert_eq!(pool.idle_count(), 3);
    assert_eq!(pool.get(1), Some("c"), "the evicted one is skipped");
    assert_eq!(pool.get(1), None);
    assert_eq!(pool.stats().evicted, 1);
    // Taken entries do not count against the cap.
    pool.put(4, "e");
    pool.put(5, "f");
    assert_eq!(pool.idle_count(), 3);
    assert_eq!(pool.get(2), None, "b was the longest idle");
}

#[test]
fn capacity_zero_keeps_nothing() {
    let pool = ConnectionPool::new(0);
    assert!(!pool.put(1, "x"));
    assert_eq!(pool.get(1), None);
}

#[test]
fn order_list_stays_bounded() {
    let pool = ConnectionPool::new(4);
    for i in 0..10_000 {
        pool.put(i % 3, i);
        pool.get(i % 3);
    }
    assert!(pool.order.len() <= 2 * 4 + 65 + 1);
}

#[test]
fn per_key_cap_drops_that_keys_longest_idle() {
    let pool = ConnectionPool::new(2);
    pool.put(9, 1);
    pool.put(9, 2);
    pool.put(9, 3);
    assert_eq!(pool.idle_count(), 2);
    assert_eq!(pool.get(9), Some(2));
    assert_eq!(pool.get(9), Some(3));
}

#[test]
fn a_closed_connection_is_skipped_when_taken() {
    let pool = ConnectionPool::with_check(10, open);
    let (a, a_closed) = Conn::new(1);
    let (b, _) = Conn::new(2);
    assert!(pool.put(1, a));
    assert!(pool.put(1, b));
    a_closed.store(true, Ordering::SeqCst);
    assert_eq!(
        pool.get(1).map(|c| c.id),
        Some(2),
        "the closed one is dropped"
    );
    let s = pool.stats();
    assert_eq!((s.hits, s.evicted, s.idle), (1, 1, 0));
    assert!(pool.get(1).is_none());
}

#[test]
fn sweep_drops_closed_and_expired_connections_only() {
    let pool = ConnectionPool::with_check(10, open);
    let (a, a_closed) = Conn::new(1);
    let (b, _) = Conn::new(2);
    let (c, _) = Conn::new(3);
    let (d, _) = Conn::new(4);
    pool.put(1, a);
    pool.put_with_timeout(1, b, Some(Duration::ZERO));
    pool.put_with_timeout(2, c, Some(Duration::from_secs(3600)));
    pool.put(2, d);
    let taken = pool.get(2).unwrap();
    assert_eq!(taken.id, 3);
    // b expired at once (zero timeout); a is still open.
    assert_eq!(pool.sweep(), 1);
    assert_eq!(pool.stats().evicted, 1);
    assert_eq!(pool.sweep(), 0);
    a_closed.store(true, Ordering::SeqCst);
    assert_eq!(pool.sweep(), 1, "a, closed");
    assert_eq!(pool.idle_count(), 1);
    assert_eq!(pool.get(1).map(|c| c.id), None);
    assert_eq!(pool.get(2).map(|c| c.id), Some(4));
    // Entries of taken and dropped connections leave the order list.
    pool.sweep();
    assert_eq!(pool.order.len(), 0);
    assert_eq!(pool.order_len.load(Ordering::Relaxed), 0);
}

/// A proxy that has talked to many peers keeps no queue for a peer with
/// no idle connection left: the sweep drops such keys, and keeps the
/// others (with their connections, in order).
#[test]
fn sweep_drops_keys_left_without_connections() {
    let pool = ConnectionPool::new(10_000);
    for key in 0..1000u64 {
        pool.put_with_timeout(key, key, Some(Duration::ZERO));
    }
    pool.put(5000, 1);
    pool.put(5000, 2);
    pool.put(6000, 3);
    assert_eq!(pool.get(6000), Some(3));
    assert_eq!(pool.key_count(), 1002);
    pool.sweep();
    assert_eq!(pool.key_count(), 1, "only the key with idle connections");
    assert_eq!(pool.get(5000), Some(1));
    assert_eq!(pool.get(5000), Some(2));
    pool.sweep();
    assert_eq!(pool.key_count(), 0);
    // A dropped key takes connections again.
    pool.put(7, 70);
    assert_eq!(pool.get(7), Some(70));
}

#[test]
fn an_expired_connection_is_not_handed_out() {
    let pool = ConnectionPool::new(10);
    pool.put_with_timeout(1, "old", Some(Duration::ZERO));
    pool.put_with_timeout(1, "new", Some(Duration::from_secs(3600)));
    assert_eq!(pool.get(1), Some("new"));
    assert_eq!(pool.stats().evicted, 1);
}

#[test]
fn many_threads_put_and_get() {
    let pool = Arc::new(ConnectionPool::new(64));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                let mut got = 0;
                for i in 0..20_000u64 {
                    pool.put(i % 8, (t, i));
                    if pool.get((i + t) % 8).is_some() {
                        got += 1;
                    }
                }
                got
            })
        })
        .collect();
    let got: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(pool.idle_count() <= 64);
    let s = pool.stats();
    assert_eq!(s.hits as usize, got);
    assert_eq!(80_000 - got, s.idle + s.evicted as usize);
}

#[test]
fn pre_hashed_keys_are_used_as_they_are() {
    use std::hash::BuildHasher;
    let b = BuildPreHashed::default();
    for k in [0u64, 1, 0xdead_beef_0bad_f00d, u64::MAX] {
        assert_eq!(b.hash_one(k), k);
    }
    let mut m: HashMap<u64, u32, BuildPreHashed> = HashMap::default();
    for k in 0..1000u64 {
        m.insert(k.wrapping_mul(0x9e37_79b9_7f4a_7c15), k as u32);
    }
    assert_eq!(m[&7u64.wrapping_mul(0x9e37_79b9_7f4a_7c15)], 7);
}

#[test]
fn slots_are_reused_in_the_steady_state() {
    let pool: ConnectionPool<u32> = ConnectionPool::new(4);
    // Put and take, as a proxy does per request: the order list grows
    // with taken slots until it is compacted, which gives them back.
    for i in 0..1000 {
        pool.put(7, i);
        assert_eq!(pool.get(7), Some(i));
    }
    assert!(!pool.free.is_empty(), "no slot came back for reuse");
    assert!(pool.order_len.load(Ordering::Relaxed) <= 2 * 4 + 64 + 1);
    // The next put takes a spare instead of allocating.
    let before = pool.free.len();
    pool.put(7, 1);
    assert_eq!(pool.free.len(), before - 1);
    assert_eq!(pool.get(7), Some(1));
    // A reused slot behaves as a new one: timeouts and eviction.
    pool.put_with_timeout(7, 2, Some(std::time::Duration::ZERO));
    assert_eq!(pool.get(7), None, "expired at once");
    for i in 0..10 {
        pool.put(i, i as u32);
    }
    assert_eq!(pool.idle_count(), 4);
}
