//! A disk store: one file per object under a directory, a byte budget
//! (least recently used objects removed past it), kept across restarts.
//!
//! An object is written to a temporary file and renamed into place only
//! when complete ([`DiskWriter::finish`]), so a reader never sees a partial
//! object; temporary files left by a crash are removed when the store
//! opens. Each file begins with its full key, which a lookup compares, so
//! two keys whose names collide never answer for each other.
//!
//! File layout: the magic `PGC1`, `u32` key length, key, `u32` metadata
//! length, metadata (the caller's: a serialized response header), `u64`
//! body length, then the body; all little-endian. The data is synced
//! before the rename, and a file whose body is shorter than its header
//! says is never served. Files without the magic are not ours and are
//! left alone.

use std::collections::HashMap;
use std::fs::{self, File};

use bytes::Bytes;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The subdirectory of objects being written.
const TMP: &str = "tmp";
/// The first bytes of every object file.
const MAGIC: &[u8; 4] = b"PGC1";
/// Bytes read at once when an object is opened: its header and, for a
/// small object, all of its body.
const FIRST_READ: u64 = 16 * 1024;

/// An object found by [`DiskStore::get`].
#[derive(Debug)]
pub struct DiskObject {
    /// Its metadata, as written.
    pub meta: Vec<u8>,
    /// Its body's length.
    pub body_len: u64,
    /// Where its body begins in `file`.
    pub body_at: u64,
    /// The body's first bytes (all of it for a small object), read with
    /// the header.
    pub body_head: Bytes,
    /// The file, positioned just past `body_head`.
    pub file: File,
}

/// The bytes read at the head of an object file, read further from the
/// file when a field runs past them (a long key or meta).
struct Head<'a> {
    buf: Vec<u8>,
    at: usize,
    file: &'a mut File,
}

impl Head<'_> {
    fn take(&mut self, n: usize) -> io::Result<&[u8]> {
        let want = self.at + n;
        if self.buf.len() < want {
            let more = (want - self.buf.len()) as u64;
            (&mut *self.file).take(more).read_to_end(&mut self.buf)?;
            if self.buf.len() < want {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        let out = &self.buf[self.at..want];
        self.at = want;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> io::Result<[u8; N]> {
        let b = self.take(N)?;
        b.try_into().map_err(|_| io::ErrorKind::InvalidData.into())
    }
}

/// One stored object, as the index knows it.
#[derive(Debug, Clone)]
struct Entry {
    key: Vec<u8>,
    size: u64,
    /// When it was last used (a counter; at start-up, by modification time).
    used: u64,
}

#[derive(Debug, Default)]
struct Index {
    entries: HashMap<String, Entry>,
    bytes: u64,
    clock: u64,
}

/// Objects on disk under one directory, within a byte budget.
#[derive(Debug)]
pub struct DiskStore {
    dir: PathBuf,
    budget: u64,
    index: Mutex<Index>,
    /// Names of temporary files.
    next_tmp: AtomicU64,
}

/// The file name of `key`: a fixed hash, so that it is the same after a
/// restart of the same build.
fn name(key: &[u8]) -> String {
    let h = BuildHasherDefault::<DefaultHasher>::default().hash_one(key);
    format!("{h:016x}")
}

/// The key at the start of an object file (after checking its magic).
fn read_key(r: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut magic = [0u8; 4];
    r.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(io::Error::other("not a cache object"));
    }
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let mut key = vec![0u8; u32::from_le_bytes(len) as usize];
    r.read_exact(&mut key)?;
    Ok(key)
}

impl DiskStore {
    /// Open (or create) the store in `dir`, at most `budget` bytes: the
    /// objects already there are indexed (their last use taken from their
    /// modification time), temporary files of an earlier run removed.
    ///
    /// # Errors
    ///
    /// The I/O error if `dir` cannot be created or read.
    pub fn open(dir: impl AsRef<Path>, budget: u64) -> io::Result<Arc<DiskStore>> {
        let dir = dir.as_ref().to_path_buf();
        let tmp = dir.join(TMP);
        fs::create_dir_all(&tmp)?;
        // Objects a process that is gone was writing (named by its pid);
        // not those of one still running (the old process of a graceful
        // upgrade, sharing the directory).
        for e in fs::read_dir(&tmp)?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name.split('-').next().unwrap_or("");
            if pid.parse::<u32>().is_err() || !Path::new("/proc").join(pid).exists() {
                let _ = fs::remove_file(e.path());
            }
        }
        let mut found = Vec::new();
        for e in fs::read_dir(&dir)? {
            let e = e?;
            let meta = e.metadata()?;
            if !meta.is_file() {
                continue;
            }
            let Ok(mut f) = File::open(e.path()) else {
                continue;
            };
            let Ok(key) = read_key(&mut BufReader::new(&mut f)) else {
                continue; // not one of ours: left alone
            };
            // Indexed under the name its key has now (a toolchain upgrade
            // may change the hash): renamed if it differs.
            let file = name(&key);
            if e.file_name().to_string_lossy() != file.as_str()
                && fs::rename(e.path(), dir.join(&file)).is_err()
            {
                continue;
            }
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            found.push((file, key, meta.len(), mtime));
        }
        // Oldest first: their use order, by the counter, follows.
        found.sort_by_key(|f| f.3);
        let mut index = Index::default();
        for (file, key, size, _) in found {
            index.clock += 1;
            index.bytes += size;
            let used = index.clock;
            index.entries.insert(file, Entry { key, size, used });
        }
        let store = Arc::new(DiskStore {
            dir,
            budget,
            index: Mutex::new(index),
            next_tmp: AtomicU64::new(0),
        });
        store.evict(&mut store.index.lock().unwrap_or_else(|p| p.into_inner()));
        Ok(store)
    }

    /// Start writing the object for `key` with `meta`; the body follows
    /// through the writer.
    ///
    /// # Errors
    ///
    /// The I/O error if the temporary file cannot be created or written.
    pub fn writer(self: &Arc<Self>, key: &[u8], meta: &[u8]) -> io::Result<DiskWriter> {
        let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .dir
            .join(TMP)
            .join(format!("{}-{n}", std::process::id()));
        let mut file = File::create(&tmp)?;
        file.write_all(MAGIC)?;
        file.write_all(&(key.len() as u32).to_le_bytes())?;
        file.write_all(key)?;
        file.write_all(&(meta.len() as u32).to_le_bytes())?;
        file.write_all(meta)?;
        // The body's length, filled in by `finish`.
        file.write_all(&0u64.to_le_bytes())?;
        let length_at = file.stream_position()? - 8;
        Ok(DiskWriter {
            store: self.clone(),
            key: key.to_vec(),
            tmp,
            file: Some(file),
            length_at,
            body: 0,
        })
    }

    /// The object for `key`, made the most recently used: its metadata,
    /// and its body's first bytes, read with the header in one read (a
    /// small object whole: open, fstat, read, as nginx's cache does), the
    /// rest left in the file.
    ///
    /// # Errors
    ///
    /// The I/O error if the object file cannot be read.
    pub fn get(&self, key: &[u8]) -> io::Result<Option<DiskObject>> {
        let file_name = name(key);
        {
            let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
            index.clock += 1;
            let clock = index.clock;
            match index.entries.get_mut(&file_name) {
                Some(e) if e.key == key => e.used = clock,
                _ => return Ok(None),
            }
        }
        let mut file = match File::open(self.dir.join(&file_name)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let total = file.metadata()?.len();
        // Exactly what is there (up to the first read's size): one read
        // call, not a second to find the end.
        let first = total.min(FIRST_READ);
        let mut buf = Vec::with_capacity(first as usize);
        (&mut file).take(first).read_to_end(&mut buf)?;
        let mut head = Head {
            buf,
            at: 0,
            file: &mut file,
        };
        if head.take(4)? != MAGIC {
            return Ok(None);
        }
        let key_len = u32::from_le_bytes(head.array()?) as usize;
        if head.take(key_len)? != key {
            return Ok(None);
        }
        let meta_len = u32::from_le_bytes(head.array()?) as usize;
        let meta = head.take(meta_len)?.to_vec();
        let body_len = u64::from_le_bytes(head.array()?);
        let body_at = head.at as u64;
        if total.checked_sub(body_at) != Some(body_len) {
            // Cut short (a crash before the data reached the disk): never
            // served, and gone.
            self.remove(key);
            return Ok(None);
        }
        let Head { buf, at, .. } = head;
        let body_head = Bytes::from(buf).slice(at..);
        Ok(Some(DiskObject {
            meta,
            body_len,
            body_at,
            body_head,
            file,
        }))
    }

    /// Remove the object for `key`; whether it was there.
    pub fn remove(&self, key: &[u8]) -> bool {
        let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        let file_name = name(key);
        if index.entries.get(&file_name).is_none_or(|e| e.key != key) {
            return false;
        }
        self.drop_entry(&mut index, &file_name);
        true
    }

    /// Remove every object whose key starts with `prefix`; how many.
    pub fn remove_prefix(&self, prefix: &[u8]) -> usize {
        let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        let doomed: Vec<String> = index
            .entries
            .iter()
            .filter(|(_, e)| e.key.starts_with(prefix))
            .map(|(n, _)| n.clone())
            .collect();
        for n in &doomed {
            self.drop_entry(&mut index, n);
        }
        doomed.len()
    }

    /// Bytes held (files as written, key and metadata included).
    pub fn bytes(&self) -> u64 {
        self.index.lock().unwrap_or_else(|p| p.into_inner()).bytes
    }

    fn drop_entry(&self, index: &mut Index, file_name: &str) {
        if let Some(e) = index.entries.remove(file_name) {
            index.bytes -= e.size;
            let _ = fs::remove_file(self.dir.join(file_name));
        }
    }

    /// Remove the least recently used objects until within the budget.
    fn evict(&self, index: &mut Index) {
        while index.bytes > self.budget {
            let Some(oldest) = index
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(n, _)| n.clone())
            else {
                return;
            };
            self.drop_entry(index, &oldest);
        }
    }
}

/// An object being written. Dropped without [`finish`](Self::finish), it
/// is discarded: nothing of it is ever served.
#[derive(Debug)]
pub struct DiskWriter {
    store: Arc<DiskStore>,
    key: Vec<u8>,
    tmp: PathBuf,
    file: Option<File>,
    /// Where the body's length goes in the file.
    length_at: u64,
    /// Body bytes written.
    body: u64,
}

impl DiskWriter {
    /// Append a piece of body.
    ///
    /// # Errors
    ///
    /// The I/O error if the write fails (the object is then discarded when
    /// the writer is dropped).
    pub fn write(&mut self, piece: &[u8]) -> io::Result<()> {
        match &mut self.file {
            Some(f) => {
                f.write_all(piece)?;
                self.body += piece.len() as u64;
                Ok(())
            }
            None => Err(io::Error::other("the object was finished")),
        }
    }

    /// The object is complete: it replaces any earlier one for its key and
    /// is served from now on; the least recently used objects are removed
    /// if the store is over budget. An object larger than the whole budget
    /// is discarded instead.
    ///
    /// # Errors
    ///
    /// The I/O error if the file cannot be flushed or moved into place.
    pub fn finish(mut self) -> io::Result<()> {
        let Some(mut file) = self.file.take() else {
            return Err(io::Error::other("the object was finished"));
        };
        file.seek(SeekFrom::Start(self.length_at))?;
        file.write_all(&self.body.to_le_bytes())?;
        file.sync_data()?;
        let size = file.metadata()?.len();
        drop(file);
        let store = self.store.clone();
        let file_name = name(&self.key);
        let mut index = store.index.lock().unwrap_or_else(|p| p.into_inner());
        if size > store.budget {
            // Not kept (with its temporary file); nor is an older version.
            if index
                .entries
                .get(&file_name)
                .is_some_and(|e| e.key == self.key)
            {
                store.drop_entry(&mut index, &file_name);
            }
            return Ok(());
        }
        fs::rename(&self.tmp, store.dir.join(&file_name))?;
        if let Some(old) = index.entries.remove(&file_name) {
            index.bytes -= old.size;
        }
        index.clock += 1;
        let used = index.clock;
        index.bytes += size;
        let key = std::mem::take(&mut self.key);
        index.entries.insert(file_name, Entry { key, size, used });
        store.evict(&mut index);
        Ok(())
    }
}

impl Drop for DiskWriter {
    fn drop(&mut self) {
        // Unfinished (or renamed already, when this fails harmlessly).
        let _ = fs::remove_file(&self.tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pingora-cache-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn put(s: &Arc<DiskStore>, key: &str, body: &[u8]) {
        let mut w = s.writer(key.as_bytes(), b"meta").unwrap();
        for piece in body.chunks(3) {
            w.write(piece).unwrap();
        }
        w.finish().unwrap();
    }

    fn body_of(s: &DiskStore, key: &str) -> Option<Vec<u8>> {
        let mut o = s.get(key.as_bytes()).unwrap()?;
        assert_eq!(o.meta, b"meta");
        let mut body = o.body_head.to_vec();
        o.file.read_to_end(&mut body).unwrap();
        assert_eq!(body.len() as u64, o.body_len);
        Some(body)
    }

    #[test]
    fn long_metadata_and_bodies_past_the_first_read() {
        let d = dir("long");
        let s = DiskStore::open(&d, 1 << 24).unwrap();
        let meta = vec![b'm'; 20_000];
        let body: Vec<u8> = (0..50_000u32).map(|i| i as u8).collect();
        let mut w = s.writer(b"k", &meta).unwrap();
        w.write(&body).unwrap();
        w.finish().unwrap();
        let mut o = s.get(b"k").unwrap().unwrap();
        assert_eq!(o.meta, meta);
        assert!(o.body_head.is_empty(), "the header filled the first read");
        let mut all = Vec::new();
        o.file.read_to_end(&mut all).unwrap();
        assert_eq!(all, body);
        // A small header: the first read has part of the body.
        let mut w = s.writer(b"j", b"x").unwrap();
        w.write(&body).unwrap();
        w.finish().unwrap();
        let mut o = s.get(b"j").unwrap().unwrap();
        assert!(!o.body_head.is_empty());
        let mut all = o.body_head.to_vec();
        o.file.read_to_end(&mut all).unwrap();
        assert_eq!(all, body);
    }

    #[test]
    fn objects_are_written_whole_and_survive_a_restart() {
        let d = dir("restart");
        let s = DiskStore::open(&d, 1 << 20).unwrap();
        put(&s, "GET /a", b"hello world");
        // Being written: not served.
        let mut w = s.writer(b"GET /b", b"meta").unwrap();
        w.write(b"part").unwrap();
        assert_eq!(body_of(&s, "GET /b"), None);
        drop(w);
        assert_eq!(body_of(&s, "GET /b"), None, "abandoned: never served");
        assert_eq!(body_of(&s, "GET /a").unwrap(), b"hello world");
        // A process that crashed while writing left its temporary file
        // (named by its pid, gone now); a live one's stays.
        fs::write(d.join(TMP).join("4000000000-0"), b"PGC1 partial").unwrap();
        let live = s.writer(b"GET /c", b"meta").unwrap();
        drop(s);
        let s = DiskStore::open(&d, 1 << 20).unwrap();
        assert_eq!(body_of(&s, "GET /a").unwrap(), b"hello world");
        let left: Vec<_> = fs::read_dir(d.join(TMP)).unwrap().flatten().collect();
        assert_eq!(left.len(), 1, "only the live writer's");
        drop(live);
        assert_eq!(fs::read_dir(d.join(TMP)).unwrap().count(), 0);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn the_budget_evicts_the_least_recently_used() {
        let d = dir("budget");
        // Each object is 4 + 4 + 6 + 4 + 4 + 8 + 100 = 130 bytes: room for
        // three.
        let s = DiskStore::open(&d, 400).unwrap();
        for k in ["GET /1", "GET /2", "GET /3"] {
            put(&s, k, &[b'x'; 100]);
        }
        assert!(body_of(&s, "GET /1").is_some()); // now the most recent
        put(&s, "GET /4", &[b'y'; 100]);
        assert!(body_of(&s, "GET /2").is_none(), "the least recent went");
        assert!(body_of(&s, "GET /1").is_some());
        assert!(s.bytes() <= 400);
        // Larger than the whole budget: not kept.
        put(&s, "GET /big", &[b'z'; 500]);
        assert!(body_of(&s, "GET /big").is_none());
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_file_cut_short_is_not_served_and_strangers_are_left_alone() {
        let d = dir("short");
        let s = DiskStore::open(&d, 1 << 20).unwrap();
        put(&s, "GET /a", b"hello world");
        let path = d.join(name(b"GET /a"));
        let len = fs::metadata(&path).unwrap().len();
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        assert_eq!(body_of(&s, "GET /a"), None);
        assert!(!path.exists(), "removed");
        // A file that is not ours survives a restart.
        fs::write(d.join("README"), b"mine").unwrap();
        drop(s);
        let _s = DiskStore::open(&d, 1 << 20).unwrap();
        assert!(d.join("README").exists());
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn purge_by_key_and_by_prefix() {
        let d = dir("purge");
        let s = DiskStore::open(&d, 1 << 20).unwrap();
        for k in ["GET a/1", "GET a/2", "GET b/1"] {
            put(&s, k, b"v");
        }
        assert!(s.remove(b"GET b/1"));
        assert!(!s.remove(b"GET b/1"));
        assert_eq!(s.remove_prefix(b"GET a/"), 2);
        assert_eq!(s.bytes(), 0);
        let _ = fs::remove_dir_all(&d);
    }
}
