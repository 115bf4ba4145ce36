//! The [`Storage`] trait the proxy caches through, and its two stores:
//! [`MemoryStorage`] (over [`MemoryCache`]: a byte budget, LRU with
//! TinyLFU admission) and [`DiskStorage`] (over [`DiskStore`]: files,
//! kept across restarts).
//!
//! Reads are synchronous: an object in memory is at hand, and one on disk
//! is read a piece at a time from the page cache (as nginx does without
//! `aio`), never whole.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::disk::{DiskStore, DiskWriter};
use crate::memory::MemoryCache;
use crate::meta::CacheMeta;

/// A stored object as a lookup finds it: its meta and its body.
pub type Stored = (Arc<CacheMeta>, Box<dyn HitBody>);

/// A stored object's body, read in pieces.
pub trait HitBody: Send {
    /// Its length in bytes.
    fn len(&self) -> u64;

    /// Whether it has no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Up to `max` bytes from offset `at` (empty at or past the end).
    ///
    /// # Errors
    ///
    /// The I/O error of a store that reads from files.
    fn read(&mut self, at: u64, max: usize) -> io::Result<Bytes>;
}

/// An object being written: its body in pieces, then `finish`. Dropped
/// without finishing, nothing is stored.
pub trait MissWriter: Send {
    /// The next piece of body.
    ///
    /// # Errors
    ///
    /// The store's I/O error; the object is then not stored.
    fn write(&mut self, piece: &Bytes) -> io::Result<()>;

    /// The body is complete: store the object, replacing any other under
    /// its key.
    ///
    /// # Errors
    ///
    /// The store's I/O error; the object is then not stored.
    fn finish(self: Box<Self>) -> io::Result<()>;

    /// Whether `finish` blocks on I/O (a disk store syncs its file), so
    /// that a caller on an async runtime runs it on a blocking thread.
    fn blocks(&self) -> bool {
        false
    }
}

/// Where cached objects live. Keys are the bytes of
/// [`CacheKey::storage_key`](crate::CacheKey::storage_key) (or of a
/// variant key).
pub trait Storage: Send + Sync + 'static {
    /// The object under `key`: its meta and its body.
    ///
    /// # Errors
    ///
    /// The store's I/O error (treated as a miss).
    fn lookup(&self, key: &[u8]) -> io::Result<Option<Stored>>;

    /// Start storing an object under `key` with `meta`.
    ///
    /// # Errors
    ///
    /// The store's I/O error; nothing is stored.
    fn writer(&self, key: &[u8], meta: &CacheMeta) -> io::Result<Box<dyn MissWriter>>;

    /// Replace the meta of the object under `key` (after a revalidation),
    /// keeping its body; whether it was there. The default rewrites the
    /// object through [`writer`](Self::writer).
    ///
    /// # Errors
    ///
    /// The store's I/O error.
    fn update_meta(&self, key: &[u8], meta: &CacheMeta) -> io::Result<bool> {
        let Some((_, mut body)) = self.lookup(key)? else {
            return Ok(false);
        };
        let mut w = self.writer(key, meta)?;
        let mut at = 0;
        while at < body.len() {
            let piece = body.read(at, 64 * 1024)?;
            if piece.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "body cut short",
                ));
            }
            at += piece.len() as u64;
            w.write(&piece)?;
        }
        w.finish()?;
        Ok(true)
    }

    /// Remove the object under `key`; whether it was there.
    fn purge(&self, key: &[u8]) -> bool;

    /// Remove every object whose key starts with `prefix`; how many, or
    /// `None` if the store cannot list its keys.
    fn purge_prefix(&self, prefix: &[u8]) -> Option<usize>;
}

/// An object in memory.
#[derive(Debug)]
struct MemoryObject {
    meta: Arc<CacheMeta>,
    body: Bytes,
}

/// A [`Storage`] in memory, within a byte budget.
#[derive(Debug)]
pub struct MemoryStorage {
    cache: Arc<MemoryCache<Vec<u8>, Arc<MemoryObject>>>,
    max_object: usize,
}

impl MemoryStorage {
    /// A store of at most `budget` bytes, sized for objects of about
    /// `typical_object` bytes (the admission sketch's size follows).
    pub fn new(budget: usize, typical_object: usize) -> MemoryStorage {
        let entries = budget / typical_object.max(1);
        let cache = MemoryCache::new(budget, entries);
        MemoryStorage {
            cache: Arc::new(cache),
            // What one shard can hold (see `MemoryCache::put`).
            max_object: MemoryStorage::largest_object(budget),
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.cache.bytes()
    }

    /// The largest body a store of `budget` bytes takes (a shard's share,
    /// less room for the header).
    pub fn largest_object(budget: usize) -> usize {
        (budget / 16).saturating_sub(16 * 1024)
    }
}

/// What a meta costs in memory, about: its fields and a fixed part.
fn meta_size(meta: &CacheMeta) -> usize {
    let fields: usize = meta
        .headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 32)
        .sum();
    fields + 256
}

/// A body in memory.
struct MemoryBody(Bytes);

impl HitBody for MemoryBody {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }

    fn read(&mut self, at: u64, max: usize) -> io::Result<Bytes> {
        let start = (at as usize).min(self.0.len());
        let end = start.saturating_add(max).min(self.0.len());
        Ok(self.0.slice(start..end))
    }
}

/// An object being gathered for a [`MemoryStorage`].
struct MemoryWriter {
    cache: Arc<MemoryCache<Vec<u8>, Arc<MemoryObject>>>,
    key: Vec<u8>,
    meta: Arc<CacheMeta>,
    body: BytesMut,
    max_object: usize,
}

impl MissWriter for MemoryWriter {
    fn write(&mut self, piece: &Bytes) -> io::Result<()> {
        if self.body.len() + piece.len() > self.max_object {
            return Err(io::Error::other("larger than the memory store takes"));
        }
        self.body.extend_from_slice(piece);
        Ok(())
    }

    fn finish(self: Box<Self>) -> io::Result<()> {
        let this = *self;
        let size = this.body.len() + this.key.len() + meta_size(&this.meta);
        let obj = MemoryObject {
            meta: this.meta,
            body: this.body.freeze(),
        };
        // Admission may turn it away: that is the policy, not an error.
        this.cache.put(this.key, Arc::new(obj), size);
        Ok(())
    }
}

impl Storage for MemoryStorage {
    fn lookup(&self, key: &[u8]) -> io::Result<Option<Stored>> {
        Ok(self.cache.get(key).map(|o| {
            let body: Box<dyn HitBody> = Box::new(MemoryBody(o.body.clone()));
            (o.meta.clone(), body)
        }))
    }

    fn writer(&self, key: &[u8], meta: &CacheMeta) -> io::Result<Box<dyn MissWriter>> {
        Ok(Box::new(MemoryWriter {
            cache: self.cache.clone(),
            key: key.to_vec(),
            meta: Arc::new(meta.clone()),
            body: BytesMut::new(),
            max_object: self.max_object,
        }))
    }

    fn update_meta(&self, key: &[u8], meta: &CacheMeta) -> io::Result<bool> {
        let Some(old) = self.cache.get(key) else {
            return Ok(false);
        };
        let size = old.body.len() + key.len() + meta_size(meta);
        let obj = MemoryObject {
            meta: Arc::new(meta.clone()),
            body: old.body.clone(),
        };
        Ok(self.cache.put(key.to_vec(), Arc::new(obj), size))
    }

    fn purge(&self, key: &[u8]) -> bool {
        self.cache.remove(key)
    }

    fn purge_prefix(&self, prefix: &[u8]) -> Option<usize> {
        Some(self.cache.remove_matching(|k| k.starts_with(prefix)))
    }
}

/// A [`Storage`] in a directory, within a byte budget, kept across
/// restarts.
#[derive(Debug)]
pub struct DiskStorage {
    store: Arc<DiskStore>,
}

impl DiskStorage {
    /// The store in `dir` (created if missing; what is there is indexed),
    /// holding at most `budget` bytes.
    ///
    /// # Errors
    ///
    /// The I/O error if the directory cannot be made or read.
    pub fn open(dir: impl AsRef<Path>, budget: u64) -> io::Result<DiskStorage> {
        Ok(DiskStorage {
            store: DiskStore::open(dir, budget)?,
        })
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.store.bytes()
    }
}

/// A body in a file: its first bytes read already (`head`), the rest
/// from offset `start + head.len()` on, `len` bytes in all. Read in order,
/// it costs one read per piece (no seek).
struct FileBody {
    file: File,
    start: u64,
    len: u64,
    head: Bytes,
    /// Where the file is positioned, relative to the body's start.
    pos: u64,
}

impl HitBody for FileBody {
    fn len(&self) -> u64 {
        self.len
    }

    fn read(&mut self, at: u64, max: usize) -> io::Result<Bytes> {
        let in_head = self.head.len() as u64;
        if at < in_head {
            let end = (at + max as u64).min(in_head);
            return Ok(self.head.slice(at as usize..end as usize));
        }
        let n = (max as u64).min(self.len.saturating_sub(at));
        if n == 0 {
            return Ok(Bytes::new());
        }
        if self.pos != at {
            self.file.seek(SeekFrom::Start(self.start + at))?;
        }
        // Into spare capacity: nothing zeroed first.
        let mut buf = Vec::with_capacity(n as usize);
        (&mut self.file).take(n).read_to_end(&mut buf)?;
        self.pos = at + buf.len() as u64;
        if (buf.len() as u64) < n {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(Bytes::from(buf))
    }
}

struct DiskMissWriter(DiskWriter);

impl MissWriter for DiskMissWriter {
    fn write(&mut self, piece: &Bytes) -> io::Result<()> {
        self.0.write(piece)
    }

    fn finish(self: Box<Self>) -> io::Result<()> {
        self.0.finish()
    }

    fn blocks(&self) -> bool {
        true
    }
}

impl Storage for DiskStorage {
    fn lookup(&self, key: &[u8]) -> io::Result<Option<Stored>> {
        let Some(o) = self.store.get(key)? else {
            return Ok(None);
        };
        let Some(meta) = CacheMeta::decode(&o.meta) else {
            // Another version's object: gone, and a miss.
            self.store.remove(key);
            return Ok(None);
        };
        let body = FileBody {
            file: o.file,
            start: o.body_at,
            len: o.body_len,
            pos: o.body_head.len() as u64,
            head: o.body_head,
        };
        Ok(Some((Arc::new(meta), Box::new(body))))
    }

    fn writer(&self, key: &[u8], meta: &CacheMeta) -> io::Result<Box<dyn MissWriter>> {
        Ok(Box::new(DiskMissWriter(
            self.store.writer(key, &meta.encode())?,
        )))
    }

    fn purge(&self, key: &[u8]) -> bool {
        self.store.remove(key)
    }

    fn purge_prefix(&self, prefix: &[u8]) -> Option<usize> {
        Some(self.store.remove_prefix(prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::freshness::Timing;
    use std::time::SystemTime;

    fn meta(tag: &str) -> CacheMeta {
        let mut h = http::HeaderMap::new();
        h.insert("etag", tag.parse().unwrap());
        CacheMeta::new(http::StatusCode::OK, h, Timing::at(SystemTime::now()))
    }

    fn round_trip(s: &dyn Storage) {
        let mut w = s.writer(b"k1", &meta("\"a\"")).unwrap();
        w.write(&Bytes::from_static(b"hello ")).unwrap();
        w.write(&Bytes::from_static(b"world")).unwrap();
        assert!(s.lookup(b"k1").unwrap().is_none(), "not before finish");
        w.finish().unwrap();
        let (m, mut body) = s.lookup(b"k1").unwrap().unwrap();
        assert_eq!(m.headers["etag"], "\"a\"");
        assert_eq!(body.len(), 11);
        assert_eq!(&body.read(6, 100).unwrap()[..], b"world");
        assert_eq!(&body.read(0, 5).unwrap()[..], b"hello");
        assert!(body.read(11, 5).unwrap().is_empty());
        // A dropped writer stores nothing.
        let mut w = s.writer(b"k2", &meta("\"b\"")).unwrap();
        w.write(&Bytes::from_static(b"x")).unwrap();
        drop(w);
        assert!(s.lookup(b"k2").unwrap().is_none());
        // A new meta keeps the body.
        assert!(s.update_meta(b"k1", &meta("\"c\"")).unwrap());
        let (m, mut body) = s.lookup(b"k1").unwrap().unwrap();
        assert_eq!(m.headers["etag"], "\"c\"");
        assert_eq!(&body.read(0, 100).unwrap()[..], b"hello world");
        assert!(!s.update_meta(b"nothing", &meta("\"c\"")).unwrap());
        // Purges.
        s.writer(b"p/1", &meta("\"d\"")).unwrap().finish().unwrap();
        s.writer(b"p/2", &meta("\"d\"")).unwrap().finish().unwrap();
        assert_eq!(s.purge_prefix(b"p/"), Some(2));
        assert!(s.purge(b"k1"));
        assert!(!s.purge(b"k1"));
        assert!(s.lookup(b"k1").unwrap().is_none());
    }

    #[test]
    fn memory_round_trip() {
        round_trip(&MemoryStorage::new(16 << 20, 1024));
    }

    #[test]
    fn disk_round_trip() {
        let dir = std::env::temp_dir().join(format!("pgc-storage-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        round_trip(&DiskStorage::open(&dir, 16 << 20).unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn disk_bodies_past_the_first_read_in_any_order() {
        let dir = std::env::temp_dir().join(format!("pgc-storage-big-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = DiskStorage::open(&dir, 16 << 20).unwrap();
        let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut w = s.writer(b"big", &meta("\"a\"")).unwrap();
        w.write(&Bytes::from(body.clone())).unwrap();
        w.finish().unwrap();
        let (_, mut b) = s.lookup(b"big").unwrap().unwrap();
        for (at, n) in [
            (50_000, 100),
            (50_100, 100),
            (0, 10),
            (99_990, 100),
            (16_000, 2_000),
        ] {
            let got = b.read(at, n).unwrap();
            let end = (at as usize + got.len()).min(body.len());
            assert_eq!(&got[..], &body[at as usize..end], "at {at}");
            assert!(!got.is_empty());
        }
        // In order, to the end.
        let (_, mut b) = s.lookup(b"big").unwrap().unwrap();
        let mut all = Vec::new();
        while (all.len() as u64) < b.len() {
            all.extend_from_slice(&b.read(all.len() as u64, 30_000).unwrap());
        }
        assert_eq!(all, body);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn memory_refuses_objects_past_its_share() {
        let s = MemoryStorage::new(16 * 1024, 64);
        let mut w = s.writer(b"big", &meta("\"a\"")).unwrap();
        assert!(w.write(&Bytes::from(vec![0u8; 2048])).is_err());
    }
}

#[cfg(test)]
mod reopen_tests {
    use super::*;
    use crate::freshness::Timing;
    use std::time::SystemTime;

    #[test]
    fn disk_objects_survive_a_reopen() {
        let dir = std::env::temp_dir().join(format!("pgc-reopen-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let meta = CacheMeta::new(
            http::StatusCode::OK,
            http::HeaderMap::new(),
            Timing::at(SystemTime::now()),
        );
        {
            let s = DiskStorage::open(&dir, 1 << 20).unwrap();
            let mut w = s.writer(b"\0host/d", &meta).unwrap();
            w.write(&Bytes::from_static(b"on disk")).unwrap();
            w.finish().unwrap();
            assert!(s.lookup(b"\0host/d").unwrap().is_some());
        }
        let s = DiskStorage::open(&dir, 1 << 20).unwrap();
        let (_, mut body) = s.lookup(b"\0host/d").unwrap().expect("found after reopen");
        assert_eq!(&body.read(0, 100).unwrap()[..], b"on disk");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
