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
//! * [`ConnectionPool::watch`] keeps an eye on one idle connection: when the
//!   peer closes it (or sends anything unasked) or it idles past its
//!   timeout, it is dropped before anyone can pick it.
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

use std::cell::UnsafeCell;
use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use atomic_waker::AtomicWaker;
use crossbeam_queue::{ArrayQueue, SegQueue};

/// Slot states.
const IDLE: u8 = 0;
/// Its watcher is looking at the connection (a few instructions).
const PEEKING: u8 = 1;
const TAKEN: u8 = 2;

/// One idle connection's place in the pool. The state word decides who
/// may touch the connection: whoever moves it from `IDLE` to `TAKEN` owns
/// it; the watcher borrows it only between `IDLE` → `PEEKING` → `IDLE`.
struct Slot<S> {
    state: AtomicU8,
    conn: UnsafeCell<Option<S>>,
    /// The watcher's waker, woken when the connection is taken.
    watcher: AtomicWaker,
}

// SAFETY: `conn` is only accessed by the thread that won the state
// transition (see `take` and `peek`), so sharing a `Slot` is as safe as
// sending an `S`.
unsafe impl<S: Send> Send for Slot<S> {}
unsafe impl<S: Send> Sync for Slot<S> {}

impl<S> Slot<S> {
    fn new(conn: S) -> Self {
        Slot {
            state: AtomicU8::new(IDLE),
            conn: UnsafeCell::new(Some(conn)),
            watcher: AtomicWaker::new(),
        }
    }

    /// Take the connection if it is still idle. Lock-free, except that it
    /// waits out a watcher's peek in progress (a few instructions).
    fn take(&self) -> Option<S> {
        loop {
            match self
                .state
                .compare_exchange(IDLE, TAKEN, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    // SAFETY: we moved the state to TAKEN: nobody else
                    // touches `conn` any more.
                    let conn = unsafe { (*self.conn.get()).take() };
                    self.watcher.wake();
                    return conn;
                }
                Err(TAKEN) => return None,
                Err(_) => std::hint::spin_loop(),
            }
        }
    }

    /// Look at the idle connection, if it is still idle.
    fn peek<R>(&self, f: impl FnOnce(&S) -> R) -> Option<R> {
        if self
            .state
            .compare_exchange(IDLE, PEEKING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return None;
        }
        struct Back<'a>(&'a AtomicU8);
        impl Drop for Back<'_> {
            fn drop(&mut self) {
                self.0.store(IDLE, Ordering::Release);
            }
        }
        let _back = Back(&self.state);
        // SAFETY: PEEKING keeps `take` away until `_back` resets the state.
        unsafe { (*self.conn.get()).as_ref().map(f) }
    }

    fn is_taken(&self) -> bool {
        self.state.load(Ordering::Acquire) == TAKEN
    }
}

/// A handle on an idle connection just put in the pool, for
/// [`ConnectionPool::watch`].
pub struct IdleHandle<S> {
    slot: Arc<Slot<S>>,
}

/// One key's idle connections.
type KeyQueue<S> = ArrayQueue<Arc<Slot<S>>>;

/// A pool of idle connections of type `S`, keyed by `u64`.
pub struct ConnectionPool<S> {
    /// Per-key lock-free queues. The map itself is replaced (copy on
    /// write) only when a new key appears.
    keys: ArcSwap<HashMap<u64, Arc<KeyQueue<S>>>>,
    /// Every put, oldest first, for the global LRU cap (lock-free).
    order: SegQueue<Weak<Slot<S>>>,
    order_len: AtomicUsize,
    idle: AtomicUsize,
    capacity: usize,
    per_key: usize,
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
    /// Connections dropped by the caps, a watcher (remote close), or an
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
        ConnectionPool {
            keys: ArcSwap::default(),
            order: SegQueue::new(),
            order_len: AtomicUsize::new(0),
            idle: AtomicUsize::new(0),
            capacity,
            per_key: capacity.clamp(1, MAX_PER_KEY),
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
    /// Lock-free.
    pub fn get(&self, key: u64) -> Option<S> {
        if let Some(q) = self.queue(key) {
            while let Some(slot) = q.pop() {
                if let Some(conn) = slot.take() {
                    self.idle.fetch_sub(1, Ordering::Relaxed);
                    self.stats.hits.fetch_add(1, Ordering::Relaxed);
                    return Some(conn);
                }
            }
        }
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// Put `conn` back for reuse under `key`. If the pool (or the key) is
    /// then over its cap, the connection idle the longest is dropped.
    /// Returns a handle to [`watch`](Self::watch) it with, or `None` when
    /// the pool keeps nothing (capacity 0). Lock-free.
    pub fn put(&self, key: u64, conn: S) -> Option<IdleHandle<S>> {
        if self.capacity == 0 {
            return None;
        }
        let slot = Arc::new(Slot::new(conn));
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
        self.order.push(Arc::downgrade(&slot));
        let len = self.order_len.fetch_add(1, Ordering::Relaxed) + 1;
        while self.idle.load(Ordering::Relaxed) > self.capacity {
            let Some(oldest) = self.order.pop() else {
                break;
            };
            self.order_len.fetch_sub(1, Ordering::Relaxed);
            if let Some(old) = oldest.upgrade() {
                self.evict(&old);
            }
        }
        // Keep the order list from growing with entries already taken.
        if len > 2 * self.capacity + 64 {
            for _ in 0..len {
                let Some(w) = self.order.pop() else {
                    break;
                };
                if w.upgrade().is_some_and(|s| !s.is_taken()) {
                    self.order.push(w);
                } else {
                    self.order_len.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
        Some(IdleHandle { slot })
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

    /// Watch an idle connection until it is taken, or `closed` reports the
    /// peer closed it (or sent something unasked), or it has been idle for
    /// `idle_timeout`; in the last two cases it is dropped from the pool.
    /// Run it in its own task right after [`put`](Self::put).
    ///
    /// `closed` is called with the idle connection (never across an await,
    /// and never while someone takes it); it should register `cx`'s waker
    /// with the connection's read readiness and return `Ready` when the
    /// connection is readable.
    pub async fn watch<F>(&self, handle: IdleHandle<S>, idle_timeout: Option<Duration>, closed: F)
    where
        F: Fn(&S, &mut Context<'_>) -> Poll<()>,
    {
        let slot = handle.slot;
        let readable = poll_fn(|cx| {
            slot.watcher.register(cx.waker());
            match slot.peek(|conn| closed(conn, cx)) {
                // Taken by someone: stop watching.
                None => Poll::Ready(false),
                Some(Poll::Ready(())) => Poll::Ready(true),
                Some(Poll::Pending) => Poll::Pending,
            }
        });
        let timeout = async {
            match idle_timeout {
                Some(d) => pingora_timeout::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            gone = readable => {
                if gone {
                    self.evict(&slot);
                }
            }
            _ = timeout => {
                self.evict(&slot);
            }
        }
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
