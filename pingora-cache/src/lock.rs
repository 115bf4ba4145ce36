//! The cache lock (collapsed forwarding): of concurrent misses for one
//! key, the first goes upstream ([`Locked::Write`]) and the others wait
//! ([`Locked::Read`]), reading the object as it is being written: its
//! header once published, then each piece of body as it arrives. A waiter
//! gives up after a bounded time (then goes upstream itself), and if the
//! writer fails or is dropped without finishing, every waiter learns it
//! at once. The body kept for the readers is bounded: past the lock's
//! byte limit the fill stops being shared (its readers go upstream), so
//! a large object never sits in memory whole.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;

/// How a wait on someone else's fill ended, when it did not end well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitError {
    /// The writer stopped without finishing (an upstream error, or it was
    /// dropped): go upstream.
    Abandoned,
    /// Nothing came within the lock's timeout: go upstream.
    TimedOut,
}

/// An object being filled: its header, its body so far, and whether it
/// is complete or abandoned.
#[derive(Debug)]
struct Fill<H> {
    state: Mutex<FillState<H>>,
    changed: Notify,
}

#[derive(Debug)]
struct FillState<H> {
    header: Option<H>,
    chunks: Vec<Bytes>,
    /// Bytes in `chunks`.
    bytes: usize,
    done: bool,
    abandoned: bool,
}

impl<H> Fill<H> {
    fn update(&self, f: impl FnOnce(&mut FillState<H>)) {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()));
        self.changed.notify_waiters();
    }
}

/// The keys being filled now.
#[derive(Debug)]
pub struct CacheLock<K, H> {
    fills: Mutex<HashMap<K, Arc<Fill<H>>>>,
    timeout: Duration,
    /// Most body bytes a fill keeps for its readers.
    max_bytes: usize,
}

/// The outcome of [`CacheLock::lock`].
#[derive(Debug)]
pub enum Locked<K: Hash + Eq + Clone, H> {
    /// This request fills the key: go upstream, publish what comes.
    Write(Writer<K, H>),
    /// Another request fills it: read from it.
    Read(Reader<H>),
}

impl<K: Hash + Eq + Clone, H: Clone> CacheLock<K, H> {
    /// A lock whose waiters give up after `timeout` without progress, and
    /// whose fills share at most `max_bytes` of body with their readers.
    pub fn new(timeout: Duration, max_bytes: usize) -> Arc<Self> {
        Arc::new(CacheLock {
            fills: Mutex::new(HashMap::new()),
            timeout,
            max_bytes,
        })
    }

    /// Fill `key` (the first asker), or read the fill under way.
    pub fn lock(self: &Arc<Self>, key: &K) -> Locked<K, H> {
        let mut fills = self.fills.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(fill) = fills.get(key) {
            return Locked::Read(Reader {
                fill: fill.clone(),
                next: 0,
                timeout: self.timeout,
            });
        }
        let fill = Arc::new(Fill {
            state: Mutex::new(FillState {
                header: None,
                chunks: Vec::new(),
                bytes: 0,
                done: false,
                abandoned: false,
            }),
            changed: Notify::new(),
        });
        fills.insert(key.clone(), fill.clone());
        Locked::Write(Writer {
            lock: self.clone(),
            key: key.clone(),
            fill,
            finished: false,
        })
    }

    /// How long a waiter waits for progress.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether `key` is being filled.
    pub fn is_locked(&self, key: &K) -> bool {
        self.fills
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(key)
    }
}

/// The request that fills a key. Dropped without [`finish`](Self::finish),
/// the fill is abandoned: its readers are told, and the key is free.
#[derive(Debug)]
pub struct Writer<K: Hash + Eq + Clone, H> {
    lock: Arc<CacheLock<K, H>>,
    key: K,
    fill: Arc<Fill<H>>,
    finished: bool,
}

impl<K: Hash + Eq + Clone, H> Writer<K, H> {
    /// The response header: readers may start answering.
    pub fn header(&self, header: H) {
        self.fill.update(|s| s.header = Some(header));
    }

    /// A piece of body, for the readers (shared, not copied). Past the
    /// lock's byte limit the readers are let go (told the fill was
    /// abandoned: they go upstream) and nothing more is kept.
    pub fn body(&self, piece: Bytes) {
        if piece.is_empty() {
            return;
        }
        let max = self.lock.max_bytes;
        self.fill.update(|s| {
            if s.abandoned {
                return;
            }
            if s.bytes + piece.len() > max {
                s.abandoned = true;
                s.chunks = Vec::new();
                return;
            }
            s.bytes += piece.len();
            s.chunks.push(piece);
        });
    }

    /// The object is complete; the key is free again (the store has it).
    pub fn finish(mut self) {
        self.finished = true;
        self.fill.update(|s| s.done = true);
    }
}

impl<K: Hash + Eq + Clone, H> Drop for Writer<K, H> {
    fn drop(&mut self) {
        if !self.finished {
            self.fill.update(|s| s.abandoned = true);
        }
        let mut fills = self.lock.fills.lock().unwrap_or_else(|p| p.into_inner());
        // This fill's entry only.
        if fills
            .get(&self.key)
            .is_some_and(|f| Arc::ptr_eq(f, &self.fill))
        {
            fills.remove(&self.key);
        }
    }
}

/// A request reading someone else's fill.
#[derive(Debug)]
pub struct Reader<H> {
    fill: Arc<Fill<H>>,
    /// The next piece of body to hand out.
    next: usize,
    timeout: Duration,
}

impl<H: Clone> Reader<H> {
    /// Wait for `ready` to give something, each wait bounded by the
    /// timeout.
    async fn wait_for<T>(
        &self,
        bounded: bool,
        mut ready: impl FnMut(&FillState<H>) -> Option<Result<T, WaitError>>,
    ) -> Result<T, WaitError> {
        loop {
            let changed = self.fill.changed.notified();
            tokio::pin!(changed);
            // Registered before looking, so no change is missed.
            changed.as_mut().enable();
            {
                let s = self.fill.state.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(r) = ready(&s) {
                    return r;
                }
                if s.abandoned {
                    return Err(WaitError::Abandoned);
                }
            }
            if !bounded {
                changed.await;
            } else if tokio::time::timeout(self.timeout, changed).await.is_err() {
                return Err(WaitError::TimedOut);
            }
        }
    }

    /// The header, once the writer published it.
    ///
    /// # Errors
    ///
    /// `Abandoned` if the writer stopped first; `TimedOut` if nothing came
    /// within the lock's timeout.
    pub async fn header(&self) -> Result<H, WaitError> {
        self.wait_for(true, |s| s.header.clone().map(Ok)).await
    }

    /// The next piece of body, or `None` once the object is complete.
    /// Not bounded by the lock's timeout: once a reader has its header it
    /// cannot go upstream any more, and the writer's own read and write
    /// timeouts bound the fill (an abandoned fill wakes its readers).
    ///
    /// # Errors
    ///
    /// `Abandoned` if the writer stopped before the end.
    pub async fn body(&mut self) -> Result<Option<Bytes>, WaitError> {
        let next = self.next;
        let r = self
            .wait_for(false, |s| match s.chunks.get(next) {
                Some(c) => Some(Ok(Some(c.clone()))),
                None if s.done => Some(Ok(None)),
                None => None,
            })
            .await;
        if let Ok(Some(_)) = r {
            self.next += 1;
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Lock = Arc<CacheLock<&'static str, u16>>;

    fn write(l: &Lock) -> Writer<&'static str, u16> {
        match l.lock(&"k") {
            Locked::Write(w) => w,
            Locked::Read(_) => panic!("expected to fill"),
        }
    }

    fn read(l: &Lock) -> Reader<u16> {
        match l.lock(&"k") {
            Locked::Read(r) => r,
            Locked::Write(_) => panic!("expected to wait"),
        }
    }

    async fn all(mut r: Reader<u16>) -> Result<(u16, Vec<u8>), WaitError> {
        let h = r.header().await?;
        let mut body = Vec::new();
        while let Some(b) = r.body().await? {
            body.extend_from_slice(&b);
        }
        Ok((h, body))
    }

    #[tokio::test]
    async fn one_fills_the_others_stream_from_it() {
        let l: Lock = CacheLock::new(Duration::from_secs(5), 1 << 20);
        let w = write(&l);
        let readers: Vec<_> = (0..8).map(|_| tokio::spawn(all(read(&l)))).collect();
        assert!(l.is_locked(&"k"));
        tokio::task::yield_now().await;
        w.header(200);
        for piece in ["hel", "lo ", "world"] {
            tokio::task::yield_now().await;
            w.body(Bytes::from(piece));
        }
        w.finish();
        for r in readers {
            assert_eq!(r.await.unwrap(), Ok((200, b"hello world".to_vec())));
        }
        assert!(!l.is_locked(&"k"), "free once finished");
    }

    #[tokio::test]
    async fn a_reader_that_comes_late_gets_it_all() {
        let l: Lock = CacheLock::new(Duration::from_secs(5), 1 << 20);
        let w = write(&l);
        w.header(200);
        w.body(Bytes::from_static(b"ab"));
        let r = read(&l);
        w.body(Bytes::from_static(b"cd"));
        w.finish();
        assert_eq!(all(r).await, Ok((200, b"abcd".to_vec())));
    }

    #[tokio::test]
    async fn an_abandoned_fill_tells_its_readers_and_frees_the_key() {
        let l: Lock = CacheLock::new(Duration::from_secs(5), 1 << 20);
        let w = write(&l);
        let r = tokio::spawn(all(read(&l)));
        w.header(200);
        drop(w);
        assert_eq!(r.await.unwrap(), Err(WaitError::Abandoned));
        // The next asker fills it.
        let _w = write(&l);
    }

    #[tokio::test]
    async fn a_large_fill_lets_its_readers_go() {
        let l: Lock = CacheLock::new(Duration::from_secs(5), 10);
        let w = write(&l);
        let r = tokio::spawn(all(read(&l)));
        w.header(200);
        w.body(Bytes::from_static(b"12345678"));
        w.body(Bytes::from_static(b"90abc"));
        assert_eq!(r.await.unwrap(), Err(WaitError::Abandoned));
        // The writer goes on; the key stays its own until it finishes.
        assert!(l.is_locked(&"k"));
        w.finish();
        assert!(!l.is_locked(&"k"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_is_bounded() {
        let l: Lock = CacheLock::new(Duration::from_secs(2), 1 << 20);
        let _w = write(&l);
        let r = read(&l);
        let start = tokio::time::Instant::now();
        assert_eq!(r.header().await, Err(WaitError::TimedOut));
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }
}
