//! HTTP caching (issue 25), first part: the rules of RFC 9111 as pure
//! functions over request and response headers, so that the cache phases
//! and storage built on them (to come: the lock, the stores, the proxy's
//! cache phases) decide the same way everywhere.
//!
//! - [`CacheControl`]: the `Cache-Control` directives of a request or a
//!   response (RFC 9111 §5.2), parsed strictly.
//! - [`storable`]: whether a shared (or private) cache may store a
//!   response (§3, with §3.5's `Authorization` rule).
//! - [`freshness`]: a response's freshness lifetime (§4.2.1, heuristics
//!   by §4.2.2), its current age (§4.2.3), and whether it may be served
//!   fresh, stale while revalidating, or stale on error (RFC 5861).
//! - [`memory::MemoryCache`]: a byte-budgeted in-memory store, LRU
//!   eviction with TinyLFU admission.
//! - [`lock::CacheLock`]: collapsed forwarding: one request fills a key,
//!   the others stream from its fill, with a bounded wait.
//! - [`disk::DiskStore`]: objects in files within a byte budget, kept
//!   across restarts, never served while partly written.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use pingora_cache::freshness::{Freshness, Timing};
//!
//! let mut resp = http::HeaderMap::new();
//! resp.insert("cache-control", "public, max-age=60".parse().unwrap());
//! let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
//! let f = Freshness::of(http::StatusCode::OK, &resp, Timing::at(at), true);
//! assert_eq!(f.lifetime, Duration::from_secs(60));
//! assert!(f.is_fresh(at + Duration::from_secs(59)));
//! assert!(!f.is_fresh(at + Duration::from_secs(61)));
//! ```
#![forbid(unsafe_code)]

mod cache;
mod cache_control;
pub mod conditional;
pub mod disk;
pub mod filters;
pub mod freshness;
mod key;
pub mod lock;
pub mod memory;
pub mod meta;
mod status;
pub mod storable;
pub mod storage;
pub mod vary;

pub use cache::{
    FillLock, Hit, HttpCache, Refreshing, DEFAULT_LOCK_TIMEOUT, DEFAULT_MAX_OBJECT_SIZE,
};
pub use cache_control::CacheControl;
pub use filters::{ForcedFreshness, NoCacheReason, PurgeStatus, RespCacheable};
pub use key::CacheKey;
pub use meta::CacheMeta;
pub use status::CacheStatus;
pub use storage::{DiskStorage, HitBody, MemoryStorage, MissWriter, Storage};

/// A header map from `(name, value)` pairs, for the tests.
#[cfg(test)]
pub(crate) fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
    let mut m = http::HeaderMap::new();
    for (k, v) in pairs {
        let name = http::header::HeaderName::from_bytes(k.as_bytes()).expect("a test's name");
        m.append(name, v.parse().expect("a test's value"));
    }
    m
}
