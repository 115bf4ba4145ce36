//! An in-memory store with a byte budget: least recently used entries
//! are evicted, and a new entry is admitted only if it has been asked for
//! more often than what it would evict (TinyLFU admission: frequencies in
//! count-min sketches, `pingora_limits::estimator`: the current window's
//! and the last one's, so that old popularity fades by half a window at a
//! time instead of all at once). On skewed traffic this keeps the popular
//! objects a plain LRU lets one-hit wonders push out (see the test on a
//! Zipf trace).
//!
//! Sharded by key hash, one lock per shard, so that lookups on different
//! keys do not contend.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use pingora_limits::estimator::Estimator;

/// Shards of the store (a power of two).
const SHARDS: usize = 16;
/// Sketch rows and columns.
const SKETCH_HASHES: usize = 4;
/// Accesses counted per window, per unit of capacity in entries.
const WINDOW_PER_ENTRY: usize = 10;

/// What the store keeps per entry: the value and its size in bytes.
#[derive(Debug)]
struct Node<K, V> {
    key: K,
    value: V,
    size: usize,
    prev: usize,
    next: usize,
}

/// Index of "no node" in the LRU list.
const NIL: usize = usize::MAX;

/// One shard: its entries in a slab, the LRU order as a doubly linked list
/// over slab indices (head: most recent), and its bytes.
#[derive(Debug)]
struct Shard<K, V> {
    map: HashMap<K, usize>,
    nodes: Vec<Option<Node<K, V>>>,
    free: Vec<usize>,
    head: usize,
    tail: usize,
    bytes: usize,
    budget: usize,
}

impl<K: Hash + Eq + Clone, V> Shard<K, V> {
    fn new(budget: usize) -> Self {
        Shard {
            map: HashMap::new(),
            nodes: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            bytes: 0,
            budget,
        }
    }

    fn node(&mut self, i: usize) -> &mut Node<K, V> {
        self.nodes[i].as_mut().expect("a linked index holds a node")
    }

    fn unlink(&mut self, i: usize) {
        let (prev, next) = {
            let n = self.node(i);
            (n.prev, n.next)
        };
        if prev == NIL {
            self.head = next;
        } else {
            self.node(prev).next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.node(next).prev = prev;
        }
    }

    fn push_front(&mut self, i: usize) {
        let head = self.head;
        {
            let n = self.node(i);
            n.prev = NIL;
            n.next = head;
        }
        if head != NIL {
            self.node(head).prev = i;
        }
        self.head = i;
        if self.tail == NIL {
            self.tail = i;
        }
    }

    fn remove(&mut self, i: usize) -> Node<K, V> {
        self.unlink(i);
        let n = self.nodes[i].take().expect("a linked index holds a node");
        self.free.push(i);
        self.map.remove(&n.key);
        self.bytes -= n.size;
        n
    }
}

/// A byte-budgeted map with LRU eviction and TinyLFU admission.
#[derive(Debug)]
pub struct MemoryCache<K, V> {
    shards: Vec<Mutex<Shard<K, V>>>,
    hasher: std::hash::RandomState,
    /// This window's and the last window's access counts, taking turns:
    /// `current` says which one this window counts in.
    sketches: [Estimator; 2],
    current: AtomicUsize,
    /// Accesses in the current window.
    seen: AtomicUsize,
    window: usize,
    /// Admission on (TinyLFU); off: a plain LRU, for comparison.
    admission: bool,
}

impl<K: Hash + Eq + Clone, V: Clone> MemoryCache<K, V> {
    /// A store of at most `budget` bytes, for about `entries` entries (the
    /// sketch's size and the frequency window follow from it).
    pub fn new(budget: usize, entries: usize) -> Self {
        let per_shard = budget / SHARDS;
        let entries = entries.max(16);
        MemoryCache {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(Shard::new(per_shard)))
                .collect(),
            hasher: std::hash::RandomState::new(),
            sketches: [0, 1]
                .map(|_| Estimator::new(SKETCH_HASHES, (4 * entries).next_power_of_two())),
            current: AtomicUsize::new(0),
            seen: AtomicUsize::new(0),
            window: entries * WINDOW_PER_ENTRY,
            admission: true,
        }
    }

    /// The same store without admission: a plain LRU.
    pub fn lru_only(budget: usize, entries: usize) -> Self {
        MemoryCache {
            admission: false,
            ..Self::new(budget, entries)
        }
    }

    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> (&Mutex<Shard<K, V>>, u64) {
        let h = self.hasher.hash_one(key);
        (&self.shards[(h as usize) & (SHARDS - 1)], h)
    }

    /// Count an access to `key` (every lookup does); at the end of a
    /// window the older sketch is cleared and counts from then on.
    fn touch(&self, h: u64) {
        let cur = self.current.load(Ordering::Relaxed);
        self.sketches[cur].incr(h, 1);
        // Exactly one access ends the window (a `>=` would let several
        // threads rotate twice and clear both sketches).
        if self.seen.fetch_add(1, Ordering::Relaxed) + 1 == self.window {
            self.seen.store(0, Ordering::Relaxed);
            let next = cur ^ 1;
            self.sketches[next].reset();
            self.current.store(next, Ordering::Relaxed);
        }
    }

    /// How often `h` was asked for lately (this window and the last).
    fn frequency(&self, h: u64) -> isize {
        self.sketches[0].get(h) + self.sketches[1].get(h)
    }

    /// The value for `key`, made the most recently used.
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (shard, h) = self.shard(key);
        self.touch(h);
        let mut s = shard.lock().unwrap_or_else(|p| p.into_inner());
        let i = *s.map.get(key)?;
        s.unlink(i);
        s.push_front(i);
        Some(s.node(i).value.clone())
    }

    /// Store `value` (`size` bytes) under `key`, evicting the least
    /// recently used entries to make room; with admission, only if `key`
    /// was asked for more often than each entry it would evict. Returns
    /// whether it was stored. An entry larger than a shard's budget is
    /// never stored.
    pub fn put(&self, key: K, value: V, size: usize) -> bool {
        let (shard, h) = self.shard(&key);
        let mut s = shard.lock().unwrap_or_else(|p| p.into_inner());
        if size > s.budget {
            return false;
        }
        // A new version of a stored key replaces it without admission.
        let updating = match s.map.get(&key) {
            Some(&i) => {
                s.remove(i);
                true
            }
            None => false,
        };
        let admission = self.admission && !updating;
        let freq = self.frequency(h);
        // Victims from the LRU end until it fits; all or nothing.
        let mut need = (s.bytes + size).saturating_sub(s.budget);
        let mut victims = Vec::new();
        let mut at = s.tail;
        while need > 0 && at != NIL {
            let n = s.node(at);
            if admission && self.frequency(self.hasher.hash_one(&n.key)) >= freq {
                return false;
            }
            need = need.saturating_sub(n.size);
            victims.push(at);
            at = n.prev;
        }
        for v in victims {
            s.remove(v);
        }
        let node = Node {
            key: key.clone(),
            value,
            size,
            prev: NIL,
            next: NIL,
        };
        let i = match s.free.pop() {
            Some(i) => {
                s.nodes[i] = Some(node);
                i
            }
            None => {
                s.nodes.push(Some(node));
                s.nodes.len() - 1
            }
        };
        s.map.insert(key, i);
        s.bytes += size;
        s.push_front(i);
        true
    }

    /// Remove `key`; whether it was there.
    pub fn remove<Q>(&self, key: &Q) -> bool
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (shard, _) = self.shard(key);
        let mut s = shard.lock().unwrap_or_else(|p| p.into_inner());
        match s.map.get(key).copied() {
            Some(i) => {
                s.remove(i);
                true
            }
            None => false,
        }
    }

    /// Remove every entry whose key `matches` (a purge by prefix);
    /// returns how many.
    pub fn remove_matching(&self, mut matches: impl FnMut(&K) -> bool) -> usize {
        let mut n = 0;
        for shard in &self.shards {
            let mut s = shard.lock().unwrap_or_else(|p| p.into_inner());
            let doomed: Vec<usize> = s
                .map
                .iter()
                .filter(|(k, _)| matches(k))
                .map(|(_, &i)| i)
                .collect();
            for i in doomed {
                s.remove(i);
                n += 1;
            }
        }
        n
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).bytes)
            .sum()
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).map.len())
            .sum()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_lru_order_and_removal() {
        // One shard's budget is budget / 16: 100 bytes here.
        let c: MemoryCache<u32, u32> = MemoryCache::lru_only(1600, 64);
        // Keys that land in one shard, to watch its LRU.
        let same: Vec<u32> = (0..10_000)
            .filter(|k| std::ptr::eq(c.shard(k).0, c.shard(&0).0))
            .take(4)
            .collect();
        assert!(c.put(same[0], 0, 40));
        assert!(c.put(same[1], 1, 40));
        // Used: same[1] is now the least recent.
        assert_eq!(c.get(&same[0]), Some(0));
        assert!(c.put(same[2], 2, 40));
        assert_eq!(c.get(&same[1]), None, "the least recent went");
        assert_eq!(c.get(&same[0]), Some(0));
        assert!(c.bytes() <= 100);
        // Too large for a shard: never stored.
        assert!(!c.put(same[3], 3, 101));
        assert!(c.remove(&same[0]));
        assert!(!c.remove(&same[0]));
        assert_eq!(c.remove_matching(|_| true), 1);
        assert!(c.is_empty());
    }

    #[test]
    fn admission_keeps_the_popular_entry() {
        let c: MemoryCache<u32, u32> = MemoryCache::new(1600, 64);
        let same: Vec<u32> = (0..10_000)
            .filter(|k| std::ptr::eq(c.shard(k).0, c.shard(&0).0))
            .take(3)
            .collect();
        for _ in 0..5 {
            c.get(&same[0]);
        }
        assert!(c.put(same[0], 0, 60));
        // Asked for once: not admitted over the popular one.
        c.get(&same[1]);
        assert!(!c.put(same[1], 1, 60));
        assert_eq!(c.get(&same[0]), Some(0));
        // Asked for more often than it: admitted.
        for _ in 0..10 {
            c.get(&same[2]);
        }
        assert!(c.put(same[2], 2, 60));
        assert_eq!(c.get(&same[0]), None);
    }

    /// Requests from a Zipf distribution (s = 0.9) over 20,000 objects of
    /// one size, a cache that holds 1,000 of them: the share of requests
    /// found in the cache, for a plain LRU and with TinyLFU admission. A
    /// seeded generator: the same trace every run.
    fn zipf_hit_ratio(c: &MemoryCache<u32, ()>) -> f64 {
        let n = 20_000usize;
        // The cumulative distribution, to draw ranks from.
        let weights: Vec<f64> = (1..=n).map(|r| 1.0 / (r as f64).powf(0.9)).collect();
        let total: f64 = weights.iter().sum();
        let mut cdf = Vec::with_capacity(n);
        let mut acc = 0.0;
        for w in weights {
            acc += w / total;
            cdf.push(acc);
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let (mut hits, requests) = (0usize, 200_000usize);
        for _ in 0..requests {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = (x >> 11) as f64 / (1u64 << 53) as f64;
            let rank = cdf.partition_point(|&p| p < u) as u32;
            if c.get(&rank).is_some() {
                hits += 1;
            } else {
                c.put(rank, (), 1);
            }
        }
        hits as f64 / requests as f64
    }

    #[test]
    fn tinylfu_beats_lru_on_a_zipf_trace() {
        let lru = zipf_hit_ratio(&MemoryCache::lru_only(1000, 1000));
        let tiny = zipf_hit_ratio(&MemoryCache::new(1000, 1000));
        eprintln!("zipf 0.9, 20,000 objects, room for 1,000: LRU {lru:.3}, TinyLFU {tiny:.3}");
        assert!(tiny > lru + 0.05, "LRU {lru:.3}, TinyLFU {tiny:.3}");
    }
}
