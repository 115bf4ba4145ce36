//! A generic, keyed connection pool.
//!
//! pingora-core's connectors keep upstream connections here for reuse. Two
//! connections are interchangeable when their keys are equal: the key is a
//! hash of everything that matters (address, TLS, SNI, verification
//! settings, client certificate, bind address, ALPN, …), computed by the
//! caller. The pool knows nothing of HTTP or TLS.
//!
//! * Per-key idle lists (lock-free queues), longest idle first.
//! * A global cap on idle connections across all keys and threads: past
//!   it, the connection idle the longest is closed (LRU).
//! * A connection is checked when it is taken: one past its idle timeout,
//!   or one the pool's check finds unusable (the peer closed it, or sent
//!   something unasked), is dropped and the next one tried. No task or
//!   timer per idle connection: [`ConnectionPool::sweep`], run now and
//!   then by the owner, drops the dead and expired ones nobody asked for.
//! * `get` and `put` are lock-free: the key map is read through an
//!   `ArcSwap` (replaced only when a new key appears), each key's idle list
//!   is a bounded lock-free queue, the LRU order a lock-free queue, and
//!   each idle connection is claimed with one compare-and-swap.
//!
//! ```
//! use pingora_pool::ConnectionPool;
//!
//! let pool: ConnectionPool<String> = ConnectionPool::new(100);
//! pool.put(42, "connection to upstream A".to_string());
//! assert_eq!(pool.get(42).as_deref(), Some("connection to upstream A"));
//! assert_eq!(pool.get(42), None);
//! ```
#![warn(missing_docs)]

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam_queue::{ArrayQueue, SegQueue};

mod slot;

use slot::Slot;

/// One key's idle connections.
type KeyQueue<S> = ArrayQueue<Arc<Slot<S>>>;

/// A `Hasher` for maps whose `u64` keys are hashes already (a pool key, a
/// backend's hash): the key is used as it is, not hashed again. Build maps
/// with [`BuildPreHashed`]. Only for keys that are well-mixed hashes.
#[derive(Debug, Default, Clone, Copy)]
pub struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used for `u64` keys; anything else is folded.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The `BuildHasher` of [`PreHashed`], for `HashMap<u64, V, BuildPreHashed>`.
pub type BuildPreHashed = BuildHasherDefault<PreHashed>;

type KeyMap<S> = HashMap<u64, Arc<KeyQueue<S>>, BuildPreHashed>;

/// Names the type; its state is not shown.
impl<S> std::fmt::Debug for ConnectionPool<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionPool").finish_non_exhaustive()
    }
}

/// A pool of idle connections of type `S`, keyed by `u64`.
pub struct ConnectionPool<S> {
    /// Per-key lock-free queues. The map itself is replaced (copy on
    /// write) only when a new key appears.
    keys: ArcSwap<KeyMap<S>>,
    /// Every put, oldest first, for the global LRU cap (lock-free).
    order: SegQueue<Arc<Slot<S>>>,
    /// Slots out of use, kept to hold the next `put`s (a slot leaves use
    /// when the order list lets go of it and nothing else holds it): no
    /// allocation per `put` in the steady state.
    free: ArrayQueue<Arc<Slot<S>>>,
    order_len: AtomicUsize,
    idle: AtomicUsize,
    capacity: usize,
    per_key: usize,
    /// Whether an idle connection can still be used (see
    /// [`ConnectionPool::with_check`]).
    check: fn(&S) -> bool,
    stats: Stats,
}

#[derive(Default)]
struct Stats {
    hits: AtomicU64,
    misses: AtomicU64,
    evicted: AtomicU64,
}

/// Counters of a pool's activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// `get` calls that returned a connection.
    pub hits: u64,
    /// `get` calls that found none.
    pub misses: u64,
    /// Connections dropped by the caps, the check (remote close), or an
    /// idle timeout.
    pub evicted: u64,
    /// Connections idle in the pool now.
    pub idle: usize,
}

/// Idle connections kept per key at most, whatever the global capacity.
const MAX_PER_KEY: usize = 256;

impl<S: Send + 'static> ConnectionPool<S> {
    /// A pool that keeps at most `capacity` idle connections in all (and
    /// at most 256 per key).
    pub fn new(capacity: usize) -> Self {
        Self::with_check(capacity, |_| true)
    }

    /// A pool whose idle connections are checked with `check` when taken
    /// and when [swept](Self::sweep): one it says `false` of is dropped.
    /// The check sees the connection idle, never while anyone uses it;
    /// it must be quick and must not block (a socket's readiness, say).
    pub fn with_check(capacity: usize, check: fn(&S) -> bool) -> Self {
        ConnectionPool {
            keys: ArcSwap::default(),
            order: SegQueue::new(),
            // The order list holds up to about 2 × capacity + 64 entries
            // before it is compacted: enough spares for all of them.
            free: ArrayQueue::new(2 * capacity.min(1 << 16) + 64),
            order_len: AtomicUsize::new(0),
            idle: AtomicUsize::new(0),
            capacity,
            per_key: capacity.clamp(1, MAX_PER_KEY),
            check,
            stats: Stats::default(),
        }
    }

    fn queue(&self, key: u64) -> Option<Arc<KeyQueue<S>>> {
        self.keys.load().get(&key).cloned()
    }

    fn queue_or_insert(&self, key: u64) -> Arc<KeyQueue<S>> {
        if let Some(q) = self.queue(key) {
            return q;
        }
        let per_key = self.per_key;
        self.keys.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.entry(key)
                .or_insert_with(|| Arc::new(ArrayQueue::new(per_key)));
            map
        });
        self.queue(key).expect("just inserted")
    }

    /// Take an idle connection for `key` (the longest idle one first).
    /// One past its idle timeout or failing the check is dropped, and the
    /// next one tried. Lock-free.
    pub fn get(&self, key: u64) -> Option<S> {
        if let Some(q) = self.keys.load().get(&key) {
            let mut now = None;
            while let Some(slot) = q.pop() {
                if let Some(conn) = slot.take() {
                    self.idle.fetch_sub(1, Ordering::Relaxed);
                    if slot.expired(&mut now) || !(self.check)(&conn) {
                        self.stats.evicted.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    self.stats.hits.fetch_add(1, Ordering::Relaxed);
                    return Some(conn);
                }
            }
        }
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// Put `conn` back for reuse under `key`, with no idle time limit. If
    /// the pool (or the key) is then over its cap, the connection idle the
    /// longest is dropped. Returns whether the pool kept it (not with
    /// capacity 0). Lock-free.
    pub fn put(&self, key: u64, conn: S) -> bool {
        self.put_with_timeout(key, conn, None)
    }

    /// [`put`](Self::put), and drop the connection once it has been idle
    /// for `idle_timeout`: it is not handed out after that, and the next
    /// [`sweep`](Self::sweep) closes it.
    pub fn put_with_timeout(&self, key: u64, conn: S, idle_timeout: Option<Duration>) -> bool {
        if self.capacity == 0 {
            return false;
        }
        let deadline = idle_timeout.and_then(|d| Instant::now().checked_add(d));
        let slot = match self.free.pop() {
            Some(mut spare) => match Arc::get_mut(&mut spare) {
                Some(s) => {
                    s.refill(conn, deadline);
                    spare
                }
                // Not ours alone after all (cannot happen: a spare is held
                // by the free list only); a new one.
                None => Arc::new(Slot::new(conn, deadline)),
            },
            None => Arc::new(Slot::new(conn, deadline)),
        };
        let q = self.queue_or_insert(key);
        self.idle.fetch_add(1, Ordering::Relaxed);
        let mut pending = slot.clone();
        while let Err(back) = q.push(pending) {
            // This key is full: its longest-idle connection goes.
            if let Some(old) = q.pop() {
                self.evict(&old);
            }
            pending = back;
        }
        self.order.push(slot.clone());
        let len = self.order_len.fetch_add(1, Ordering::Relaxed) + 1;
        while self.idle.load(Ordering::Relaxed) > self.capacity {
            let Some(oldest) = self.order.pop() else {
                break;
            };
            self.order_len.fetch_sub(1, Ordering::Relaxed);
            self.evict(&oldest);
            self.retire(oldest);
        }
        // Keep the order list from growing with entries already taken.
        if len > 2 * self.capacity + 64 {
            for _ in 0..len {
                let Some(w) = self.order.pop() else {
                    break;
                };
                if !w.is_taken() {
                    self.order.push(w);
                } else {
                    self.order_len.fetch_sub(1, Ordering::Relaxed);
                    self.retire(w);
                }
            }
        }
        true
    }

    /// The order list is done with `slot`: if it is out of use and held by
    /// nothing else (no key queue still lists it), keep it as a spare.
    fn retire(&self, slot: Arc<Slot<S>>) {
        if slot.is_taken() && Arc::strong_count(&slot) == 1 {
            let _ = self.free.push(slot);
        }
    }

    /// Drop this slot's connection if it is still idle. (The slot itself
    /// leaves its key's queue when `get` or `put` next passes it.)
    fn evict(&self, slot: &Slot<S>) -> bool {
        let Some(conn) = slot.take() else {
            return false;
        };
        self.idle.fetch_sub(1, Ordering::Relaxed);
        self.stats.evicted.fetch_add(1, Ordering::Relaxed);
        drop(conn);
        true
    }

    /// Drop every idle connection that is past its idle timeout or fails
    /// the check; returns how many went. Meant to run every second or so
    /// (pingora-core's connectors do), so that a connection the peer
    /// closed does not hold its socket until someone asks for its key.
    /// Takes time in proportion to the idle connections; `get` and `put`
    /// may run meanwhile.
    pub fn sweep(&self) -> usize {
        let mut now = None;
        let mut gone = 0;
        for _ in 0..self.order_len.load(Ordering::Relaxed) {
            let Some(w) = self.order.pop() else {
                break;
            };
            let keep = if w.is_taken() {
                false
            } else {
                let dead = w
                    .peek(|c| w.expired(&mut now) || !(self.check)(c))
                    .unwrap_or(false);
                if dead && self.evict(&w) {
                    gone += 1;
                }
                !w.is_taken()
            };
            if keep {
                self.order.push(w);
            } else {
                self.order_len.fetch_sub(1, Ordering::Relaxed);
                self.retire(w);
            }
        }
        self.drop_empty_keys();
        gone
    }

    /// Drop the keys that hold no idle connection, so that a proxy that
    /// has talked to many peers does not keep a queue for each forever.
    /// Each queue is first rid of slots already taken or evicted (kept
    /// in order). A `put` racing the removal of its key's queue loses
    /// that one connection (it is closed, not leaked).
    fn drop_empty_keys(&self) {
        let map = self.keys.load();
        let mut empty = Vec::new();
        for (key, q) in map.iter() {
            for _ in 0..q.len() {
                match q.pop() {
                    Some(slot) if !slot.is_taken() => {
                        if let Err(slot) = q.push(slot) {
                            // Filled meanwhile by a `put`: that one goes.
                            self.evict(&slot);
                        }
                    }
                    Some(_) => {}
                    None => break,
                }
            }
            if q.is_empty() {
                empty.push(*key);
            }
        }
        drop(map);
        if empty.is_empty() {
            return;
        }
        self.keys.rcu(|map| {
            let mut map = HashMap::clone(map);
            for key in &empty {
                if map.get(key).is_some_and(|q| q.is_empty()) {
                    map.remove(key);
                }
            }
            map
        });
    }

    /// Keys (peers) with a queue now; [`sweep`](Self::sweep) drops those
    /// left without an idle connection.
    pub fn key_count(&self) -> usize {
        self.keys.load().len()
    }

    /// Idle connections in the pool now.
    pub fn idle_count(&self) -> usize {
        self.idle.load(Ordering::Relaxed)
    }

    /// Counters since the pool was made.
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            hits: self.stats.hits.load(Ordering::Relaxed),
            misses: self.stats.misses.load(Ordering::Relaxed),
            evicted: self.stats.evicted.load(Ordering::Relaxed),
            idle: self.idle_count(),
        }
    }
}

#[cfg(test)]
mod tests;
