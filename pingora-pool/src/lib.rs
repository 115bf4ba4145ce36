//! A generic, keyed connection pool.
//!
//! pingora-core's connectors keep upstream connections here for reuse. Two
//! connections are interchangeable when their keys are equal: the key is a
//! hash of everything that matters (address, TLS, SNI, verification
//! settings, client certificate, bind address, ALPN, …), computed by the
//! caller. The pool knows nothing of HTTP or TLS.
//!
//! * Per-key idle lists, most recently returned first (the warmest
//!   connection is reused).
//! * A global cap on idle connections across all keys and threads: past
//!   it, the connection idle the longest is closed (LRU).
//! * [`ConnectionPool::watch`] keeps an eye on one idle connection: when the
//!   peer closes it (or sends anything unasked) or it idles past its
//!   timeout, it is dropped before anyone can pick it.
//! * The common path (put back, then take out, on the same key) touches no
//!   global lock: a shared read lock on the key map, and short per-key and
//!   per-connection locks that are rarely contended.
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

use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Notify;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One idle connection's place in the pool.
struct Slot<S> {
    conn: Mutex<Option<S>>,
    key: u64,
    /// Woken when the connection is taken, so its watcher can stop.
    taken: Notify,
}

/// A handle on an idle connection just put in the pool, for
/// [`ConnectionPool::watch`].
pub struct IdleHandle<S> {
    slot: Arc<Slot<S>>,
}

type Stack<S> = Mutex<Vec<Arc<Slot<S>>>>;

/// A pool of idle connections of type `S`, keyed by `u64`.
pub struct ConnectionPool<S> {
    keys: RwLock<HashMap<u64, Arc<Stack<S>>>>,
    /// Every put, oldest first, for the global LRU cap. Entries of slots
    /// already taken are skipped and pruned lazily.
    order: Mutex<VecDeque<Weak<Slot<S>>>>,
    idle: AtomicUsize,
    capacity: usize,
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
    /// Connections dropped by the cap, a watcher (remote close), or an idle
    /// timeout.
    pub evicted: u64,
    /// Connections idle in the pool now.
    pub idle: usize,
}

impl<S: Send + 'static> ConnectionPool<S> {
    /// A pool that keeps at most `capacity` idle connections in all.
    pub fn new(capacity: usize) -> Self {
        ConnectionPool {
            keys: RwLock::default(),
            order: Mutex::default(),
            idle: AtomicUsize::new(0),
            capacity,
            stats: Stats::default(),
        }
    }

    fn stack(&self, key: u64) -> Option<Arc<Stack<S>>> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        keys.get(&key).cloned()
    }

    /// Take an idle connection for `key`, the most recently returned one.
    pub fn get(&self, key: u64) -> Option<S> {
        if let Some(stack) = self.stack(key) {
            loop {
                let Some(slot) = lock(&stack).pop() else {
                    break;
                };
                let taken = lock(&slot.conn).take();
                if let Some(conn) = taken {
                    self.idle.fetch_sub(1, Ordering::Relaxed);
                    slot.taken.notify_one();
                    self.stats.hits.fetch_add(1, Ordering::Relaxed);
                    return Some(conn);
                }
            }
        }
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// Put `conn` back for reuse under `key`. If the pool is then over its
    /// capacity, the connection idle the longest is dropped. Returns a
    /// handle to [`watch`](Self::watch) it with, or `None` when the pool
    /// keeps nothing (capacity 0).
    pub fn put(&self, key: u64, conn: S) -> Option<IdleHandle<S>> {
        if self.capacity == 0 {
            return None;
        }
        let slot = Arc::new(Slot {
            conn: Mutex::new(Some(conn)),
            key,
            taken: Notify::new(),
        });
        let stack = match self.stack(key) {
            Some(s) => s,
            None => {
                let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
                keys.entry(key).or_default().clone()
            }
        };
        lock(&stack).push(slot.clone());
        self.idle.fetch_add(1, Ordering::Relaxed);
        let mut order = lock(&self.order);
        order.push_back(Arc::downgrade(&slot));
        while self.idle.load(Ordering::Relaxed) > self.capacity {
            let Some(oldest) = order.pop_front() else {
                break;
            };
            if let Some(old) = oldest.upgrade() {
                self.evict(&old);
            }
        }
        // Keep the order list from growing with entries already taken.
        if order.len() > 2 * self.capacity + 64 {
            order.retain(|w| w.upgrade().is_some_and(|s| lock(&s.conn).is_some()));
        }
        drop(order);
        Some(IdleHandle { slot })
    }

    /// Drop this slot's connection if it is still idle.
    fn evict(&self, slot: &Arc<Slot<S>>) -> bool {
        let Some(conn) = lock(&slot.conn).take() else {
            return false;
        };
        self.idle.fetch_sub(1, Ordering::Relaxed);
        self.stats.evicted.fetch_add(1, Ordering::Relaxed);
        if let Some(stack) = self.stack(slot.key) {
            lock(&stack).retain(|s| !Arc::ptr_eq(s, slot));
        }
        drop(conn);
        true
    }

    /// Watch an idle connection until it is taken, or `closed` reports the
    /// peer closed it (or sent something unasked), or it has been idle for
    /// `idle_timeout`; in the last two cases it is dropped from the pool.
    /// Run it in its own task right after [`put`](Self::put).
    ///
    /// `closed` is polled with the idle connection (under a short lock,
    /// never across an await); it should register `cx`'s waker with the
    /// connection's read readiness and return `Ready` when the connection
    /// is readable.
    pub async fn watch<F>(&self, handle: IdleHandle<S>, idle_timeout: Option<Duration>, closed: F)
    where
        F: Fn(&S, &mut Context<'_>) -> Poll<()>,
    {
        let slot = handle.slot;
        let readable = poll_fn(|cx| match lock(&slot.conn).as_ref() {
            None => Poll::Ready(false),
            Some(conn) => closed(conn, cx).map(|()| true),
        });
        let timeout = async {
            match idle_timeout {
                Some(d) => pingora_timeout::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = slot.taken.notified() => {}
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
