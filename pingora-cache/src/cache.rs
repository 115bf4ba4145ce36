//! [`HttpCache`]: a store, its cache lock and its limits: what the proxy
//! caches through. Lookups follow a primary key's vary marker to the
//! variant the request selects; fills of a response that varies write
//! the marker and the variant.

use std::collections::HashSet;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::HeaderMap;

use crate::key::{CacheKey, VARIANT_SEPARATOR};
use crate::lock::CacheLock;
use crate::meta::CacheMeta;
use crate::storage::{DiskStorage, HitBody, MemoryStorage, MissWriter, Storage};

/// The lock the proxy's fills take: keyed by storage key, publishing the
/// stored meta.
pub type FillLock = CacheLock<Vec<u8>, Arc<CacheMeta>>;

/// A stored object found for a request.
pub struct Hit {
    /// Its meta.
    pub meta: Arc<CacheMeta>,
    /// Its body.
    pub body: Box<dyn HitBody>,
    /// The key it is stored under (the primary key, or a variant's).
    pub storage_key: Vec<u8>,
}

impl std::fmt::Debug for Hit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hit")
            .field("meta", &self.meta)
            .field("len", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// A cache: a [`Storage`], an optional lock for collapsed forwarding, and
/// the largest object it stores.
#[derive(Clone)]
pub struct HttpCache {
    storage: Arc<dyn Storage>,
    lock: Option<Arc<FillLock>>,
    max_object_size: usize,
    name: Arc<str>,
    /// Keys being refreshed in the background (one refresh per key).
    refreshing: Arc<Mutex<HashSet<Vec<u8>>>>,
}

/// A background refresh of a key under way; dropped, the key may be
/// refreshed again.
#[derive(Debug)]
pub struct Refreshing {
    set: Arc<Mutex<HashSet<Vec<u8>>>>,
    key: Vec<u8>,
}

impl Drop for Refreshing {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

impl std::fmt::Debug for HttpCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpCache")
            .field("lock", &self.lock.is_some())
            .field("max_object_size", &self.max_object_size)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The lock's default wait (nginx's `proxy_cache_lock_timeout`).
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);
/// The default largest object stored: larger ones stream through.
pub const DEFAULT_MAX_OBJECT_SIZE: usize = 8 << 20;

impl HttpCache {
    /// A cache over `storage`, with a lock (waits of
    /// [`DEFAULT_LOCK_TIMEOUT`]) and objects up to
    /// [`DEFAULT_MAX_OBJECT_SIZE`].
    pub fn new(storage: Arc<dyn Storage>) -> HttpCache {
        HttpCache {
            storage,
            lock: Some(CacheLock::new(
                DEFAULT_LOCK_TIMEOUT,
                DEFAULT_MAX_OBJECT_SIZE,
            )),
            max_object_size: DEFAULT_MAX_OBJECT_SIZE,
            name: Arc::from("pingora"),
            refreshing: Arc::default(),
        }
    }

    /// Claim the background refresh of `key`: `None` if one is under way.
    pub fn start_refresh(&self, key: &CacheKey) -> Option<Refreshing> {
        let key = key.storage_key();
        let mut set = self.refreshing.lock().unwrap_or_else(|p| p.into_inner());
        set.insert(key.clone()).then(|| Refreshing {
            set: self.refreshing.clone(),
            key,
        })
    }

    /// An in-memory cache of `budget` bytes.
    pub fn memory(budget: usize) -> HttpCache {
        let cache = HttpCache::new(Arc::new(MemoryStorage::new(budget, 16 * 1024)));
        // No larger than the store takes (a shard's share), so that a fill
        // others wait on is never refused at its end.
        let most = DEFAULT_MAX_OBJECT_SIZE.min(MemoryStorage::largest_object(budget));
        cache.with_max_object_size(most)
    }

    /// A disk cache in `dir` of `budget` bytes.
    ///
    /// # Errors
    ///
    /// The I/O error if the directory cannot be made or read.
    pub fn disk(dir: impl AsRef<Path>, budget: u64) -> io::Result<HttpCache> {
        Ok(HttpCache::new(Arc::new(DiskStorage::open(dir, budget)?)))
    }

    /// Collapse concurrent misses, the waiters giving up after `timeout`
    /// (`None`: no lock, every miss goes upstream).
    pub fn with_lock(mut self, timeout: Option<Duration>) -> HttpCache {
        self.lock = timeout.map(|t| CacheLock::new(t, self.max_object_size));
        self
    }

    /// Store objects up to `bytes`; larger ones stream through uncached.
    pub fn with_max_object_size(mut self, bytes: usize) -> HttpCache {
        self.max_object_size = bytes;
        if let Some(l) = &self.lock {
            self.lock = Some(CacheLock::new(l.timeout(), bytes));
        }
        self
    }

    /// The name `Cache-Status` reports it by (default `pingora`).
    pub fn with_name(mut self, name: &str) -> HttpCache {
        self.name = Arc::from(name);
        self
    }

    /// Its store.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// Its lock, if misses are collapsed.
    pub fn lock(&self) -> Option<&Arc<FillLock>> {
        self.lock.as_ref()
    }

    /// The largest object it stores.
    pub fn max_object_size(&self) -> usize {
        self.max_object_size
    }

    /// Its name in `Cache-Status`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The object at `key`'s primary key: a response, or a vary marker
    /// (then look the variant up with [`lookup_variant`](Self::lookup_variant)).
    /// A store's error is a miss.
    pub fn lookup(&self, key: &CacheKey) -> Option<Hit> {
        let storage_key = key.storage_key();
        let (meta, body) = self.storage.lookup(&storage_key).ok()??;
        Some(Hit {
            meta,
            body,
            storage_key,
        })
    }

    /// The variant of `key` with `variance`.
    pub fn lookup_variant(&self, key: &CacheKey, variance: &[u8]) -> Option<Hit> {
        let storage_key = key.variant_key(variance);
        let (meta, body) = self.storage.lookup(&storage_key).ok()??;
        // A variant's meta names its variance: check it.
        if meta.variance.as_deref() != Some(variance) {
            return None;
        }
        Some(Hit {
            meta,
            body,
            storage_key,
        })
    }

    /// Where a response with `meta` for `key` is stored: under the
    /// primary key, or, when it varies (`variance` is `Some`), under its
    /// variant key, with a vary marker written at the primary key.
    /// Returns the storage key.
    pub fn storage_key_for(
        &self,
        key: &CacheKey,
        meta: &mut CacheMeta,
        variance: Option<Vec<u8>>,
    ) -> Vec<u8> {
        let Some(v) = variance else {
            return key.storage_key();
        };
        let mut marker_headers = HeaderMap::new();
        for value in meta.headers.get_all(http::header::VARY) {
            marker_headers.append(http::header::VARY, value.clone());
        }
        let mut marker = CacheMeta::new(meta.status, marker_headers, meta.timing);
        marker.vary_marker = true;
        if let Ok(w) = self.storage.writer(&key.storage_key(), &marker) {
            let _ = w.finish();
        }
        let storage_key = key.variant_key(&v);
        meta.variance = Some(v);
        storage_key
    }

    /// Start storing `meta`'s object under `storage_key`.
    ///
    /// # Errors
    ///
    /// The store's I/O error.
    pub fn writer(&self, storage_key: &[u8], meta: &CacheMeta) -> io::Result<Box<dyn MissWriter>> {
        self.storage.writer(storage_key, meta)
    }

    /// Remove `key`'s object and all its variants; how many objects went.
    pub fn purge(&self, key: &CacheKey) -> usize {
        let primary = key.storage_key();
        let mut variants = primary.clone();
        variants.extend_from_slice(VARIANT_SEPARATOR);
        usize::from(self.storage.purge(&primary))
            + self.storage.purge_prefix(&variants).unwrap_or(0)
    }

    /// Remove every object whose primary part starts with `prefix` in
    /// `namespace`; how many, or `None` if the store cannot.
    pub fn purge_prefix(&self, namespace: &str, prefix: &str) -> Option<usize> {
        self.storage
            .purge_prefix(&CacheKey::storage_prefix(namespace, prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::freshness::Timing;
    use bytes::Bytes;
    use std::time::SystemTime;

    #[test]
    fn variants_live_side_by_side_and_purge_together() {
        let cache = HttpCache::memory(1 << 20);
        let key = CacheKey::new("", "h/x", "");
        for enc in ["gzip", "br"] {
            let mut h = HeaderMap::new();
            h.insert("vary", "accept-encoding".parse().unwrap());
            let mut meta = CacheMeta::new(http::StatusCode::OK, h, Timing::at(SystemTime::now()));
            let mut req = HeaderMap::new();
            req.insert("accept-encoding", enc.parse().unwrap());
            let v = crate::vary::variance(&meta.headers, &req);
            let sk = cache.storage_key_for(&key, &mut meta, v);
            let mut w = cache.writer(&sk, &meta).unwrap();
            w.write(&Bytes::from(enc)).unwrap();
            w.finish().unwrap();
        }
        let marker = cache.lookup(&key).unwrap();
        assert!(marker.meta.vary_marker);
        for enc in ["gzip", "br"] {
            let mut req = HeaderMap::new();
            req.insert("accept-encoding", enc.parse().unwrap());
            let v = crate::vary::variance(&marker.meta.headers, &req).unwrap();
            let mut hit = cache.lookup_variant(&key, &v).unwrap();
            assert_eq!(&hit.body.read(0, 10).unwrap()[..], enc.as_bytes());
        }
        assert!(cache.lookup_variant(&key, b"other").is_none());
        assert_eq!(cache.purge(&key), 3);
        assert!(cache.lookup(&key).is_none());
    }
}
