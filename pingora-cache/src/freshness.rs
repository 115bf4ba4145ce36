//! Freshness lifetime (RFC 9111 §4.2.1, heuristics §4.2.2), age
//! (§4.2.3), and when a stored response may be used: fresh, stale while
//! revalidating or on error (RFC 5861), or as the request's directives
//! allow (§5.2.1).

use std::time::{Duration, SystemTime};

use http::header::{AGE, DATE, EXPIRES, LAST_MODIFIED};
use http::{HeaderMap, StatusCode};

use crate::storable::heuristically_cacheable;
use crate::CacheControl;

/// The heuristic freshness is this fraction of the time since
/// `Last-Modified` (§4.2.2 suggests 10 %, as nginx and browsers use)...
const HEURISTIC_FRACTION: u32 = 10;
/// ...and never more than a day.
const HEURISTIC_MAX: Duration = Duration::from_secs(24 * 3600);

/// When the request that brought a response went out, and when the
/// response arrived (the inputs of the age calculation, §4.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// When the request was sent upstream.
    pub request_time: SystemTime,
    /// When the response header arrived.
    pub response_time: SystemTime,
}

impl Timing {
    /// A request and its response at the same instant.
    pub fn at(t: SystemTime) -> Timing {
        Timing {
            request_time: t,
            response_time: t,
        }
    }
}

/// A stored response's freshness: how long it is fresh, how old it was
/// when stored, and how it may be used once stale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freshness {
    /// The freshness lifetime (zero: stale at once, must be revalidated).
    pub lifetime: Duration,
    /// Its age when it arrived (`corrected_initial_age`).
    pub initial_age: Duration,
    /// When it arrived.
    pub response_time: SystemTime,
    /// `stale-while-revalidate`, unless revalidation is mandatory.
    pub stale_while_revalidate: Duration,
    /// `stale-if-error`, unless revalidation is mandatory.
    pub stale_if_error: Duration,
    /// `no-cache` (unqualified): every use must be revalidated.
    pub always_revalidate: bool,
    /// `must-revalidate` (or, in a shared cache, `proxy-revalidate` or
    /// `s-maxage`): never served stale, whatever the request accepts.
    pub never_stale: bool,
}

/// The largest age kept (RFC 9111 §1.2.2): an `Age` beyond it is capped,
/// so that no age arithmetic can overflow.
const MAX_AGE: Duration = Duration::from_secs(1 << 31);

/// An HTTP date header's time (RFC 9110 §5.6.7), if present and valid.
fn date(headers: &HeaderMap, name: http::header::HeaderName) -> Option<SystemTime> {
    let v = headers.get(name)?.to_str().ok()?;
    httpdate::parse_http_date(v).ok()
}

fn since(later: SystemTime, earlier: SystemTime) -> Duration {
    later.duration_since(earlier).unwrap_or_default()
}

impl Freshness {
    /// The freshness of a response with `status` and `headers`, received
    /// as `timing` says, for a shared cache (`shared`) or a private one.
    pub fn of(status: StatusCode, headers: &HeaderMap, timing: Timing, shared: bool) -> Freshness {
        let cc = CacheControl::parse(headers);
        let date_value = date(headers, DATE).unwrap_or(timing.response_time);
        let lifetime = if let (true, Some(s)) = (shared, cc.s_maxage) {
            s
        } else if let Some(m) = cc.max_age {
            m
        } else if headers.contains_key(EXPIRES) {
            // An invalid Expires (often "0") means already expired.
            date(headers, EXPIRES).map_or(Duration::ZERO, |e| since(e, date_value))
        } else if heuristically_cacheable(status) || cc.public {
            date(headers, LAST_MODIFIED).map_or(Duration::ZERO, |lm| {
                (since(date_value, lm) / HEURISTIC_FRACTION).min(HEURISTIC_MAX)
            })
        } else {
            Duration::ZERO
        };
        // §4.2.3: the age it had when it arrived.
        let age_value = headers
            .get(AGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(Duration::ZERO, Duration::from_secs)
            .min(MAX_AGE);
        let apparent_age = since(timing.response_time, date_value);
        let response_delay = since(timing.response_time, timing.request_time);
        let initial_age = apparent_age
            .max(age_value.saturating_add(response_delay))
            .min(MAX_AGE);
        // §4.2.4: these forbid serving it stale at all.
        let no_stale =
            cc.must_revalidate || (shared && (cc.proxy_revalidate || cc.s_maxage.is_some()));
        let stale = |d: Option<Duration>| {
            if no_stale {
                Duration::ZERO
            } else {
                d.unwrap_or_default()
            }
        };
        Freshness {
            lifetime,
            initial_age,
            response_time: timing.response_time,
            stale_while_revalidate: stale(cc.stale_while_revalidate),
            stale_if_error: stale(cc.stale_if_error),
            always_revalidate: cc.no_cache,
            never_stale: no_stale,
        }
    }

    /// Its current age at `now` (§4.2.3).
    pub fn age(&self, now: SystemTime) -> Duration {
        self.initial_age
            .saturating_add(since(now, self.response_time))
    }

    /// Whether it is fresh at `now`.
    pub fn is_fresh(&self, now: SystemTime) -> bool {
        !self.always_revalidate && self.lifetime > self.age(now)
    }

    /// How long past its lifetime it is at `now` (zero while fresh).
    pub fn staleness(&self, now: SystemTime) -> Duration {
        self.age(now).saturating_sub(self.lifetime)
    }

    /// Whether, stale at `now`, it may be served while a background
    /// request revalidates it (RFC 5861 §3).
    pub fn serve_while_revalidating(&self, now: SystemTime) -> bool {
        !self.always_revalidate
            && !self.is_fresh(now)
            && self.staleness(now) < self.stale_while_revalidate
    }

    /// Whether, stale at `now`, it may be served because the origin failed
    /// (an error or a 500, 502, 503, 504; RFC 5861 §4).
    pub fn serve_on_error(&self, now: SystemTime) -> bool {
        !self.always_revalidate && self.staleness(now) < self.stale_if_error
    }

    /// Whether a request with these directives may be answered with it at
    /// `now` without revalidating (§5.2.1): `no-cache` never; `max-age`
    /// bounds the age; `min-fresh` asks for that much freshness left;
    /// `max-stale` accepts it stale (by up to its value).
    pub fn satisfies(&self, req: &CacheControl, now: SystemTime) -> bool {
        if req.no_cache || self.always_revalidate {
            return false;
        }
        let age = self.age(now);
        if req.max_age.is_some_and(|m| age > m) {
            return false;
        }
        let left = self.lifetime.saturating_sub(age);
        if req.min_fresh.is_some_and(|m| left < m) {
            return false;
        }
        if self.is_fresh(now) {
            return true;
        }
        if self.never_stale {
            return false;
        }
        match req.max_stale {
            Some(None) => true,
            Some(Some(m)) => self.staleness(now) <= m,
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000;

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    fn fmt(s: u64) -> String {
        httpdate::fmt_http_date(at(s))
    }

    fn headers(lines: &[(&'static str, String)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in lines {
            m.append(*k, v.parse().unwrap());
        }
        m
    }

    fn of(status: u16, lines: &[(&'static str, String)]) -> Freshness {
        let s = StatusCode::from_u16(status).unwrap();
        Freshness::of(s, &headers(lines), Timing::at(at(T0)), true)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn lifetime_in_order_s_maxage_max_age_expires() {
        let cc = |v: &str| ("cache-control", v.to_string());
        assert_eq!(of(200, &[cc("max-age=60, s-maxage=30")]).lifetime, secs(30));
        // A private cache ignores s-maxage.
        let h = headers(&[cc("max-age=60, s-maxage=30")]);
        let private = Freshness::of(StatusCode::OK, &h, Timing::at(at(T0)), false);
        assert_eq!(private.lifetime, secs(60));
        // max-age beats Expires.
        let f = of(200, &[cc("max-age=60"), ("expires", fmt(T0 + 600))]);
        assert_eq!(f.lifetime, secs(60));
        // Expires counts from Date.
        let f = of(200, &[("date", fmt(T0 - 10)), ("expires", fmt(T0 + 90))]);
        assert_eq!(f.lifetime, secs(100));
        // An invalid Expires is already expired.
        assert_eq!(of(200, &[("expires", "0".into())]).lifetime, Duration::ZERO);
    }

    #[test]
    fn heuristic_freshness_from_last_modified() {
        let lm = ("last-modified", fmt(T0 - 1000));
        assert_eq!(
            of(200, &[("date", fmt(T0)), lm.clone()]).lifetime,
            secs(100)
        );
        // Capped at a day.
        let old = ("last-modified", fmt(T0 - 100 * 86400));
        assert_eq!(of(200, &[old]).lifetime, secs(86400));
        // Not for a status that is not cacheable by default.
        assert_eq!(of(302, &[lm]).lifetime, Duration::ZERO);
        // Nothing to go on: zero.
        assert_eq!(of(200, &[]).lifetime, Duration::ZERO);
    }

    #[test]
    fn age_from_the_age_header_date_and_delay() {
        let cc = ("cache-control", "max-age=100".to_string());
        // Age: 30 on arrival.
        let f = of(200, &[cc.clone(), ("age", "30".into())]);
        assert_eq!(f.age(at(T0)), secs(30));
        assert_eq!(f.age(at(T0 + 50)), secs(80));
        assert!(f.is_fresh(at(T0 + 69)));
        assert!(!f.is_fresh(at(T0 + 70)));
        // A Date in the past: the apparent age counts.
        let f = of(200, &[cc.clone(), ("date", fmt(T0 - 40))]);
        assert_eq!(f.initial_age, secs(40));
        // The time the request took counts with Age.
        let h = headers(&[cc, ("age", "5".into())]);
        let t = Timing {
            request_time: at(T0 - 3),
            response_time: at(T0),
        };
        assert_eq!(
            Freshness::of(StatusCode::OK, &h, t, true).initial_age,
            secs(8)
        );
    }

    #[test]
    fn stale_while_revalidate_and_if_error() {
        let f = of(
            200,
            &[(
                "cache-control",
                "max-age=10, stale-while-revalidate=20, stale-if-error=100".into(),
            )],
        );
        assert!(!f.serve_while_revalidating(at(T0 + 5)), "still fresh");
        assert!(f.serve_while_revalidating(at(T0 + 15)));
        assert!(!f.serve_while_revalidating(at(T0 + 31)));
        assert!(f.serve_on_error(at(T0 + 90)));
        assert!(!f.serve_on_error(at(T0 + 111)));
        // must-revalidate forbids both.
        let f = of(
            200,
            &[(
                "cache-control",
                "max-age=10, must-revalidate, stale-while-revalidate=20, stale-if-error=100".into(),
            )],
        );
        assert!(!f.serve_while_revalidating(at(T0 + 15)));
        assert!(!f.serve_on_error(at(T0 + 15)));
    }

    #[test]
    fn no_cache_means_revalidate_every_time() {
        let f = of(200, &[("cache-control", "no-cache, max-age=60".into())]);
        assert!(!f.is_fresh(at(T0)));
        assert!(!f.satisfies(&CacheControl::default(), at(T0)));
    }

    #[test]
    fn request_directives_bound_what_is_served() {
        let f = of(200, &[("cache-control", "max-age=60".into())]);
        let req = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("cache-control", v.parse().unwrap());
            CacheControl::parse(&h)
        };
        let now = at(T0 + 30);
        assert!(f.satisfies(&CacheControl::default(), now));
        assert!(!f.satisfies(&req("no-cache"), now));
        assert!(!f.satisfies(&req("max-age=20"), now));
        assert!(f.satisfies(&req("max-age=40"), now));
        assert!(!f.satisfies(&req("min-fresh=40"), now));
        assert!(f.satisfies(&req("min-fresh=20"), now));
        let later = at(T0 + 70);
        assert!(!f.satisfies(&CacheControl::default(), later));
        assert!(f.satisfies(&req("max-stale"), later));
        assert!(f.satisfies(&req("max-stale=15"), later));
        assert!(!f.satisfies(&req("max-stale=5"), later));
        // must-revalidate: never stale, whatever the request accepts.
        let f = of(
            200,
            &[("cache-control", "max-age=60, must-revalidate".into())],
        );
        assert!(!f.satisfies(&req("max-stale"), later));
    }

    #[test]
    fn a_huge_age_is_capped_not_overflowed() {
        let f = of(
            200,
            &[
                ("cache-control", "max-age=60".into()),
                ("age", u64::MAX.to_string()),
            ],
        );
        assert_eq!(f.initial_age, MAX_AGE);
        assert!(!f.is_fresh(at(T0 + 1_000_000)));
        assert!(!f.satisfies(&CacheControl::default(), at(T0 + 1)));
    }
}
