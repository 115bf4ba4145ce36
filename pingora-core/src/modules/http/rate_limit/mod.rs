//! A rate limit as an HTTP module: requests per second per client address
//! (or per any key the user derives from the request), over a sliding
//! one-second window counted by [`pingora_limits::rate::Rate`]. A request
//! over the limit is answered at once with `429 Too Many Requests`,
//! `Retry-After` and the `RateLimit-Limit`/`-Remaining`/`-Reset` fields
//! (draft-ietf-httpapi-ratelimit-headers); it is not counted, so a client
//! that waits as told gets through.
//!
//! ```
//! use pingora_core::modules::http::rate_limit::RateLimit;
//! use pingora_core::modules::http::HttpModules;
//!
//! let mut modules = HttpModules::new();
//! // 100 requests per second per client address, the fields on every
//! // response (not only on 429s).
//! modules.add_module(Box::new(RateLimit::per_client_addr(100).headers_on_every_response(true)));
//! ```
//!
//! Across several proxies, the counts can live in Redis instead
//! ([`RateLimit::shared_through_redis`]): one round trip per request, on the
//! Redis server's clock, with the local counts as the fallback while Redis
//! cannot be reached ([`RedisFailure`]).
//!
//! Accuracy: the window slides by weighting the previous second's count
//! by how much of it is still inside the window (the estimate is exact
//! when requests are spread evenly). Counts are count-min estimates, never
//! below the truth: two clients can share a counter only when they
//! collide in every row of the sketch (4 rows of 16,384 counters by
//! default, 1 MiB). Requests decided at the same instant on several
//! threads may let a few more through than the limit.

use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderName;
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_limits::rate::{Rate, RateComponents};

use super::{finished, Done, FilterFuture, HttpModule, HttpModuleBuilder, Module};
use redis::{RedisAddr, RedisCounter};

pub mod redis;
use crate::protocols::http::ServerSession;
use crate::protocols::SocketAddr;

/// A function that names the bucket a request counts in (`None`: the
/// request is not limited).
pub type KeyFn = dyn Fn(&RequestHeader, Option<&SocketAddr>) -> Option<String> + Send + Sync;

/// What a request is counted by.
enum KeyKind {
    /// The client's IP address (a Unix-socket client is not limited).
    ClientIp,
    /// A request header's value (requests without it are not limited).
    Header(HeaderName),
    /// The user's function.
    Custom(Box<KeyFn>),
}

/// One request's key, borrowed where it can be.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Key<'a> {
    Ip(IpAddr),
    Bytes(&'a [u8]),
    Owned(String),
}

impl Hash for Key<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            Key::Ip(ip) => ip.hash(state),
            Key::Bytes(b) => b.hash(state),
            // The same bytes as a header value hash alike.
            Key::Owned(s) => s.as_bytes().hash(state),
        }
    }
}

impl Key<'_> {
    /// The key as text (for a shared store).
    pub(crate) fn to_text(&self) -> String {
        match self {
            Key::Ip(ip) => ip.to_string(),
            Key::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
            Key::Owned(s) => s.clone(),
        }
    }
}

/// The rate-limit module's builder: add it to a service's `HttpModules`.
pub struct RateLimit {
    shared: Arc<Shared>,
}

struct Shared {
    per_second: u32,
    key: KeyKind,
    rate: Rate,
    every_response: bool,
    redis: Option<RedisCounter>,
    on_redis_failure: RedisFailure,
    /// Redis is not asked again before this (ms from `epoch`) after a
    /// failure.
    redis_down_until: AtomicU64,
    epoch: Instant,
}

/// What the limit does while Redis cannot be reached (after a failure it
/// is tried again each second).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RedisFailure {
    /// Count locally: each proxy holds the limit on its own (default).
    #[default]
    Local,
    /// Let every request through.
    Open,
    /// Refuse every request (503).
    Closed,
}

impl std::fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit")
            .field("per_second", &self.shared.per_second)
            .finish()
    }
}

/// The sketch's shape: 4 rows of 16,384 counters, for each of the two
/// intervals (1 MiB in all).
const HASHES: usize = 4;
const SLOTS: usize = 16_384;
const WINDOW: Duration = Duration::from_secs(1);

impl RateLimit {
    fn new(per_second: u32, key: KeyKind) -> Self {
        RateLimit {
            shared: Arc::new(Shared {
                per_second,
                key,
                rate: Rate::new_with_estimator_config(WINDOW, HASHES, SLOTS),
                every_response: false,
                redis: None,
                on_redis_failure: RedisFailure::Local,
                redis_down_until: AtomicU64::new(0),
                epoch: Instant::now(),
            }),
        }
    }

    /// At most `per_second` requests per second from each client IP
    /// address.
    pub fn per_client_addr(per_second: u32) -> Self {
        Self::new(per_second, KeyKind::ClientIp)
    }

    /// At most `per_second` requests per second for each value of the
    /// request header `name` (an API key, a tenant); requests without it
    /// are not limited.
    ///
    /// # Panics
    ///
    /// If `name` is not a valid header name.
    pub fn per_header(per_second: u32, name: &str) -> Self {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("a valid header name");
        Self::new(per_second, KeyKind::Header(name))
    }

    /// At most `per_second` requests per second for each key `key` gives
    /// (from the request header and the client's address); requests it
    /// gives `None` for are not limited.
    pub fn per_key<F>(per_second: u32, key: F) -> Self
    where
        F: Fn(&RequestHeader, Option<&SocketAddr>) -> Option<String> + Send + Sync + 'static,
    {
        Self::new(per_second, KeyKind::Custom(Box::new(key)))
    }

    /// Whether responses that pass carry the `RateLimit-*` fields too
    /// (default: only the 429s).
    pub fn headers_on_every_response(mut self, on: bool) -> Self {
        if let Some(s) = Arc::get_mut(&mut self.shared) {
            s.every_response = on;
        }
        self
    }

    /// Keep the counts in the Redis server at `url`
    /// (`redis://[[user]:password@]host[:port][/db]`), shared by every
    /// proxy pointed at it: one round trip per request, each under
    /// `timeout`. The error names what is wrong with the URL.
    ///
    /// # Errors
    ///
    /// `InternalError` if `url` is not such a URL (see [`RedisAddr::parse`]).
    /// Nothing is connected yet: an unreachable server shows per request.
    pub fn shared_through_redis(mut self, url: &str, timeout: Duration) -> Result<Self> {
        let addr = RedisAddr::parse(url).map_err(|e| {
            pingora_error::Error::explain(pingora_error::ErrorType::InternalError, e)
        })?;
        if let Some(s) = Arc::get_mut(&mut self.shared) {
            s.redis = Some(RedisCounter::new(addr, timeout, 64));
        }
        Ok(self)
    }

    /// What to do while Redis cannot be reached (default: count locally).
    pub fn on_redis_failure(mut self, mode: RedisFailure) -> Self {
        if let Some(s) = Arc::get_mut(&mut self.shared) {
            s.on_redis_failure = mode;
        }
        self
    }

    /// The limit, in requests per second per key.
    pub fn per_second(&self) -> u32 {
        self.shared.per_second
    }
}

impl HttpModuleBuilder for RateLimit {
    /// Early among modules: a refused request costs the others nothing.
    fn order(&self) -> i16 {
        1000
    }

    fn init(&self) -> Module {
        Box::new(RateLimitCtx {
            shared: self.shared.clone(),
            client: Client::default(),
            verdict: None,
        })
    }
}

/// Names the type; its state is not shown.
impl std::fmt::Debug for RateLimitCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitCtx").finish_non_exhaustive()
    }
}

/// The module's per-request state: the client's address and the verdict.
pub struct RateLimitCtx {
    shared: Arc<Shared>,
    client: Client,
    verdict: Option<Verdict>,
}

/// What the key needs of the client: its IP (per-address limits), or its
/// whole address (for the user's key function).
#[derive(Default)]
struct Client {
    ip: Option<IpAddr>,
    addr: Option<SocketAddr>,
}

impl Client {
    fn of(addr: Option<&SocketAddr>) -> Self {
        Client {
            ip: addr.and_then(|a| a.as_inet()).map(|a| a.ip()),
            addr: addr.cloned(),
        }
    }
}

impl RateLimitCtx {
    /// Whether this request was refused (429).
    pub fn limited(&self) -> bool {
        self.verdict.as_ref().is_some_and(|v| !v.allowed)
    }
}

/// The decision on one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Verdict {
    pub allowed: bool,
    /// Refused because the shared store is down (`RedisFailure::Closed`).
    pub unavailable: bool,
    /// Requests left in the window after this one.
    pub remaining: u64,
    /// Seconds until the window's counts turn (`RateLimit-Reset`), or for
    /// a refused request until one would pass (`Retry-After`).
    pub reset: u64,
}

/// The verdict for one more request when the window holds `prev` requests
/// of the last interval (of which `1 - frac` is still inside it) and
/// `curr` of this one, against `limit` per interval.
pub(crate) fn sliding_verdict(
    prev: f64,
    curr: f64,
    frac: f64,
    limit: f64,
    interval: f64,
) -> Verdict {
    let used = prev * (1.0 - frac) + curr;
    let to_turn = ((1.0 - frac) * interval).ceil().max(1.0) as u64;
    if used + 1.0 <= limit {
        return Verdict {
            allowed: true,
            unavailable: false,
            remaining: (limit - used - 1.0).max(0.0) as u64,
            reset: to_turn,
        };
    }
    // When will one more fit? Within this interval if the previous one's
    // share is the excess; else in the next, once enough of this one's
    // share has slid out.
    let wait = if curr + 1.0 <= limit && prev > 0.0 {
        let f = 1.0 - (limit - curr - 1.0) / prev;
        (f - frac).max(0.0) * interval
    } else {
        let f = if curr > 0.0 {
            (1.0 - (limit - 1.0) / curr).clamp(0.0, 1.0)
        } else {
            0.0
        };
        (1.0 - frac) * interval + f * interval
    };
    Verdict {
        allowed: false,
        unavailable: false,
        remaining: 0,
        reset: (wait.ceil() as u64).max(1),
    }
}

impl Shared {
    fn key<'a>(&'a self, req: &'a RequestHeader, client: &Client) -> Option<Key<'a>> {
        match &self.key {
            KeyKind::ClientIp => client.ip.map(Key::Ip),
            // From the header lines as parsed: no map is built.
            KeyKind::Header(name) => req.header_values(name).next().map(Key::Bytes),
            KeyKind::Custom(f) => f(req, client.addr.as_ref()).map(Key::Owned),
        }
    }

    fn check(&self, key: &Key<'_>) -> Verdict {
        let interval = WINDOW.as_secs_f64();
        let verdict = |c: RateComponents| {
            sliding_verdict(
                c.prev_samples as f64,
                c.curr_samples as f64,
                c.current_interval_fraction,
                self.per_second as f64 * interval,
                interval,
            )
        };
        // Counted only if it passes.
        let (c, _) = self.rate.observe_if(key, 1, |c| verdict(c).allowed);
        verdict(c)
    }

    /// [`check`](Self::check) against the counts in Redis; while Redis
    /// cannot be reached, as `on_redis_failure` says.
    async fn check_shared(&self, redis: &RedisCounter, key: &Key<'_>) -> Verdict {
        let now = self.epoch.elapsed().as_millis() as u64;
        let interval = WINDOW.as_secs_f64();
        let limit = self.per_second as f64 * interval;
        if now >= self.redis_down_until.load(Ordering::Relaxed) {
            let text = key.to_text();
            match redis
                .check(&text, limit as u64, WINDOW.as_millis() as u64)
                .await
            {
                Ok(c) => {
                    let mut v = sliding_verdict(c.prev, c.curr, c.frac, limit, interval);
                    // The server's decision stands (it counted by it).
                    v.allowed = c.passed;
                    if !c.passed {
                        v.remaining = 0;
                    }
                    return v;
                }
                Err(e) => {
                    tracing::warn!(
                        "rate limit: Redis failed ({e}); {:?} for a second",
                        self.on_redis_failure
                    );
                    self.redis_down_until.store(now + 1000, Ordering::Relaxed);
                }
            }
        }
        match self.on_redis_failure {
            RedisFailure::Local => self.check(key),
            RedisFailure::Open => Verdict {
                allowed: true,
                unavailable: false,
                remaining: self.per_second as u64,
                reset: 1,
            },
            RedisFailure::Closed => Verdict {
                allowed: false,
                unavailable: true,
                remaining: 0,
                reset: 1,
            },
        }
    }
}

/// The `RateLimit-*` fields (and `Retry-After` on a refusal).
fn add_fields(resp: &mut ResponseHeader, limit: u32, v: &Verdict) -> Result<()> {
    resp.insert_header("RateLimit-Limit", limit.to_string())?;
    resp.insert_header("RateLimit-Remaining", v.remaining.to_string())?;
    resp.insert_header("RateLimit-Reset", v.reset.to_string())?;
    if !v.allowed {
        resp.insert_header("Retry-After", v.reset.to_string())?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl HttpModule for RateLimitCtx {
    fn downstream_session(&mut self, session: &ServerSession) {
        match self.shared.key {
            KeyKind::ClientIp => {
                self.client.ip = session
                    .client_addr()
                    .and_then(|a| a.as_inet())
                    .map(|a| a.ip())
            }
            KeyKind::Custom(_) => self.client = Client::of(session.client_addr()),
            KeyKind::Header(_) => {}
        }
    }

    // Written out (not `async fn`): nothing to wait for, and the ready
    // future is zero-sized, so no allocation.
    fn request_header_filter<'s, 'a, 'f>(
        &'s mut self,
        req: &'a mut RequestHeader,
    ) -> FilterFuture<'f>
    where
        's: 'f,
        'a: 'f,
        Self: 'f,
    {
        if self.shared.redis.is_some() {
            // A round trip to Redis: the one case that waits.
            return Box::pin(async move {
                let shared = &self.shared;
                if let (Some(redis), Some(key)) = (&shared.redis, shared.key(req, &self.client)) {
                    self.verdict = Some(shared.check_shared(redis, &key).await);
                }
                Ok(())
            });
        }
        if let Some(key) = self.shared.key(req, &self.client) {
            self.verdict = Some(self.shared.check(&key));
        }
        Box::pin(Done)
    }

    fn early_response(&mut self) -> Option<(Box<ResponseHeader>, Bytes)> {
        if !self.limited() {
            return None;
        }
        let unavailable = self.verdict.is_some_and(|v| v.unavailable);
        let (status, body) = if unavailable {
            (503, Bytes::from_static(b"503 Service Unavailable\n"))
        } else {
            (429, Bytes::from_static(b"429 Too Many Requests\n"))
        };
        let mut resp = ResponseHeader::build(status, Some(6)).ok()?;
        resp.insert_header("Content-Type", "text/plain").ok()?;
        resp.insert_header("Content-Length", body.len().to_string())
            .ok()?;
        Some((Box::new(resp), body))
    }

    fn response_header_filter<'s, 'a, 'f>(
        &'s mut self,
        resp: &'a mut ResponseHeader,
        _end_of_stream: bool,
    ) -> FilterFuture<'f>
    where
        's: 'f,
        'a: 'f,
        Self: 'f,
    {
        match &self.verdict {
            Some(v) if !v.allowed || self.shared.every_response => {
                finished(add_fields(resp, self.shared.per_second, v))
            }
            _ => Box::pin(Done),
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_slides() {
        // 10 per second; 10 in the last second, a quarter into this one:
        // 7.5 count, 2 more fit.
        let v = sliding_verdict(10.0, 0.0, 0.25, 10.0, 1.0);
        assert_eq!((v.allowed, v.remaining, v.reset), (true, 1, 1));
        let v = sliding_verdict(10.0, 2.0, 0.25, 10.0, 1.0);
        assert!(!v.allowed);
        // 10 × (1 − f) + 2 + 1 ≤ 10 once f ≥ 0.3: in 0.05 s, so 1 s.
        assert_eq!(v.reset, 1);
    }

    #[test]
    fn a_full_interval_waits_for_the_next() {
        // 5 per second, all 5 used in this interval 0.5 s in, none before:
        // the next interval starts in 0.5 s; then 5 × (1 − f) + 1 ≤ 5
        // once f ≥ 0.2 (0.2 s more): 0.7 s, so 1 s.
        let v = sliding_verdict(0.0, 5.0, 0.5, 5.0, 1.0);
        assert_eq!((v.allowed, v.remaining, v.reset), (false, 0, 1));
        // Over 10 s intervals: 5 s to the turn, then 2 s: 7 s.
        let v = sliding_verdict(0.0, 5.0, 0.5, 5.0, 10.0);
        assert_eq!(v.reset, 7);
    }

    #[test]
    fn a_zero_limit_refuses_everything() {
        let v = sliding_verdict(0.0, 0.0, 0.0, 0.0, 1.0);
        assert!(!v.allowed);
    }

    #[test]
    fn keys_by_header_and_address() {
        let m = RateLimit::per_header(1, "x-api-key");
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        let none = Client::default();
        assert_eq!(m.shared.key(&req, &none), None);
        req.insert_header("X-Api-Key", "k1").unwrap();
        assert_eq!(m.shared.key(&req, &none), Some(Key::Bytes(b"k1")));
        let m = RateLimit::per_client_addr(1);
        let addr = SocketAddr::Inet("192.0.2.1:5000".parse().unwrap());
        assert_eq!(
            m.shared.key(&req, &Client::of(Some(&addr))),
            Some(Key::Ip("192.0.2.1".parse().unwrap()))
        );
        let unix = Client::of(Some(&SocketAddr::Unix(None)));
        assert_eq!(m.shared.key(&req, &unix), None);
        let m = RateLimit::per_key(1, |req, addr| {
            Some(format!("{} {}", req.uri.path(), addr?.as_inet()?.port()))
        });
        assert_eq!(
            m.shared.key(&req, &Client::of(Some(&addr))),
            Some(Key::Owned("/ 5000".into()))
        );
    }

    #[test]
    fn the_limit_holds_and_refusals_are_not_counted() {
        let m = RateLimit::per_client_addr(3);
        let key = Key::Ip("192.0.2.9".parse().unwrap());
        let passed = (0..10).filter(|_| m.shared.check(&key).allowed).count();
        assert_eq!(passed, 3);
        let other = Key::Ip("192.0.2.10".parse().unwrap());
        assert!(m.shared.check(&other).allowed);
    }
}
