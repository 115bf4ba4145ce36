//! The answers of the proxy's cache phases: [`RespCacheable`] (may this
//! response be stored), [`ForcedFreshness`] (a hit's freshness,
//! overruled), [`PurgeStatus`]; and [`resp_cacheable`], the RFC 9111
//! decision the default `response_cache_filter` makes.

use http::{HeaderMap, Method, StatusCode};

use crate::freshness::Timing;
use crate::meta::CacheMeta;
use crate::storable::{storable, NotStorable};

/// Why a response is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoCacheReason {
    /// An RFC 9111 rule forbids it.
    NotStorable(NotStorable),
    /// Storable, but with no freshness and no validator: it could never be
    /// served.
    NeverFresh,
    /// Larger than the cache's largest object.
    ResponseTooLarge,
    /// The store failed to take it.
    StorageError,
    /// The user's `response_cache_filter` said so.
    Custom(&'static str),
}

impl NoCacheReason {
    /// A short token for `Cache-Status`'s `detail` and for logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            NoCacheReason::NotStorable(n) => match n {
                NotStorable::Method => "method",
                NotStorable::Status => "status",
                NotStorable::NoStore => "no-store",
                NotStorable::Private => "private",
                NotStorable::Authorization => "authorization",
                NotStorable::VaryStar => "vary-star",
                NotStorable::NoFreshness => "no-freshness",
            },
            NoCacheReason::NeverFresh => "never-fresh",
            NoCacheReason::ResponseTooLarge => "too-large",
            NoCacheReason::StorageError => "storage-error",
            NoCacheReason::Custom(s) => s,
        }
    }
}

/// Whether a response is stored, and as what.
#[derive(Debug, Clone)]
pub enum RespCacheable {
    /// Store it, with this meta.
    Cacheable(CacheMeta),
    /// Do not store it.
    Uncacheable(NoCacheReason),
}

/// A hit's freshness as `cache_hit_filter` overrules it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForcedFreshness {
    /// Treat it as stale: revalidate it (or refetch it).
    ForceExpired,
    /// Treat it as absent: fetch and store anew.
    ForceMiss,
    /// Treat it as fresh: serve it.
    ForceFresh,
}

/// How a purge request went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeStatus {
    /// Caching is not enabled for the request.
    NoCache,
    /// Objects were removed (how many).
    Found(usize),
    /// Nothing was stored under the key.
    NotFound,
}

impl PurgeStatus {
    /// The status the purge is answered with: 200, 404, or 405 when the
    /// cache is off.
    pub fn http_status(&self) -> u16 {
        match self {
            PurgeStatus::Found(_) => 200,
            PurgeStatus::NotFound => 404,
            PurgeStatus::NoCache => 405,
        }
    }
}

/// The RFC 9111 decision for a shared cache: a response is stored when
/// §3 allows it, and it can be used (it has a freshness lifetime, or a
/// validator to revalidate it with).
pub fn resp_cacheable(
    method: &Method,
    req: &HeaderMap,
    status: StatusCode,
    resp: &HeaderMap,
    timing: Timing,
) -> RespCacheable {
    if let Err(n) = storable(method, req, status, resp, true) {
        return RespCacheable::Uncacheable(NoCacheReason::NotStorable(n));
    }
    let mut stored = resp.clone();
    // `private="f"` (a shared cache must not store field f) and
    // `no-cache="f"` (f must not be reused without revalidation): such
    // fields are left out of what is stored (RFC 9111 §5.2.2.4, §5.2.2.7),
    // e.g. a `Set-Cookie` the origin marks so.
    let cc = crate::CacheControl::parse(resp);
    for f in cc.private_fields.iter().chain(&cc.no_cache_fields) {
        stored.remove(f.as_str());
    }
    let meta = CacheMeta::new(status, stored, timing);
    let f = meta.freshness(true);
    if f.lifetime.is_zero() && !meta.has_validator() {
        return RespCacheable::Uncacheable(NoCacheReason::NeverFresh);
    }
    RespCacheable::Cacheable(meta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    use crate::headers as h;

    #[test]
    fn storable_and_usable() {
        let t = Timing::at(SystemTime::now());
        let ok = |resp: &[(&'static str, &str)]| {
            resp_cacheable(&Method::GET, &h(&[]), StatusCode::OK, &h(resp), t)
        };
        assert!(matches!(
            ok(&[("cache-control", "max-age=5")]),
            RespCacheable::Cacheable(_)
        ));
        assert!(matches!(
            ok(&[("etag", "\"x\"")]),
            RespCacheable::Cacheable(_)
        ));
        assert!(matches!(
            ok(&[]),
            RespCacheable::Uncacheable(NoCacheReason::NeverFresh)
        ));
        match ok(&[("cache-control", "private, max-age=5")]) {
            RespCacheable::Uncacheable(r) => assert_eq!(r.as_str(), "private"),
            other => panic!("{other:?}"),
        }
        // Qualified private / no-cache: stored without the fields named.
        let qualified = [
            (
                "cache-control",
                r#"max-age=5, private="set-cookie", no-cache="x-a""#,
            ),
            ("set-cookie", "s=1"),
            ("x-a", "1"),
            ("x-b", "2"),
        ];
        match ok(&qualified) {
            RespCacheable::Cacheable(m) => {
                assert!(!m.headers.contains_key("set-cookie"));
                assert!(!m.headers.contains_key("x-a"));
                assert_eq!(m.headers["x-b"], "2");
            }
            other => panic!("{other:?}"),
        }
    }
}
