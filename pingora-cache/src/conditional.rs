//! A client's conditional and range requests, answered from a stored
//! response: `If-None-Match` and `If-Modified-Since` (RFC 9110 §13.1.2,
//! §13.1.3, in §13.2.2's order) and `Range` with `If-Range` (§14.2,
//! §13.1.5).

use http::header::{ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, LAST_MODIFIED, RANGE};
use http::{HeaderMap, StatusCode};

/// An entity tag's opaque part and whether it is weak.
fn entity_tag(t: &str) -> Option<(bool, &str)> {
    let t = t.trim();
    let (weak, t) = match t.strip_prefix("W/") {
        Some(rest) => (true, rest),
        None => (false, t),
    };
    (t.len() >= 2 && t.starts_with('"') && t.ends_with('"')).then_some((weak, t))
}

/// Whether a GET or HEAD with `req`'s conditions may be answered `304 Not
/// Modified` from a stored 200 with `resp`'s fields: `If-None-Match` by
/// weak comparison, or, without it, `If-Modified-Since` against the
/// stored `Last-Modified`.
pub fn not_modified(req: &HeaderMap, status: StatusCode, resp: &HeaderMap) -> bool {
    if status != StatusCode::OK {
        return false;
    }
    if req.contains_key(IF_NONE_MATCH) {
        let stored = resp
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .and_then(entity_tag);
        return req.get_all(IF_NONE_MATCH).iter().any(|v| {
            let Ok(v) = v.to_str() else { return false };
            v.split(',').any(|t| {
                if t.trim() == "*" {
                    return true;
                }
                matches!((entity_tag(t), stored), (Some((_, a)), Some((_, b))) if a == b)
            })
        });
    }
    let (Some(ims), Some(lm)) = (date(req, IF_MODIFIED_SINCE), date(resp, LAST_MODIFIED)) else {
        return false;
    };
    lm <= ims
}

fn date(h: &HeaderMap, name: http::header::HeaderName) -> Option<std::time::SystemTime> {
    httpdate::parse_http_date(h.get(name)?.to_str().ok()?).ok()
}

/// How to answer a request's `Range` from a stored object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeAnswer {
    /// The whole object (no range, several ranges, a range that does not
    /// parse, or an `If-Range` that does not match: all allowed to be
    /// ignored).
    Full,
    /// `206 Partial Content` of bytes `start..=end`.
    Partial {
        /// The first byte.
        start: u64,
        /// The last byte, included.
        end: u64,
    },
    /// `416 Range Not Satisfiable`: the range starts past the end.
    Unsatisfiable,
}

/// The answer to `req`'s `Range` from a stored response (`status`,
/// `resp`'s fields) whose body is `len` bytes. A single byte range is
/// served; anything else gets the whole object.
pub fn range(req: &HeaderMap, status: StatusCode, resp: &HeaderMap, len: u64) -> RangeAnswer {
    if status != StatusCode::OK {
        return RangeAnswer::Full;
    }
    let Some(spec) = req.get(RANGE).and_then(|v| v.to_str().ok()) else {
        return RangeAnswer::Full;
    };
    if let Some(cond) = req.get(IF_RANGE).and_then(|v| v.to_str().ok()) {
        // A strong validator must match exactly (§13.1.5).
        let matches = match entity_tag(cond) {
            Some((false, tag)) => resp
                .get(ETAG)
                .and_then(|v| v.to_str().ok())
                .and_then(entity_tag)
                .is_some_and(|(weak, t)| !weak && t == tag),
            Some((true, _)) => false,
            None => resp
                .get(LAST_MODIFIED)
                .is_some_and(|lm| lm.to_str().is_ok_and(|lm| lm == cond.trim())),
        };
        if !matches {
            return RangeAnswer::Full;
        }
    }
    let Some(set) = spec.trim().strip_prefix("bytes=") else {
        return RangeAnswer::Full;
    };
    if set.contains(',') {
        return RangeAnswer::Full;
    }
    let Some((first, last)) = set.trim().split_once('-') else {
        return RangeAnswer::Full;
    };
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let (first, last) = (first.trim(), last.trim());
    let last = match (last.is_empty(), num(last)) {
        (true, _) => None,
        (false, Some(n)) => Some(n),
        (false, None) => return RangeAnswer::Full,
    };
    if first.is_empty() {
        // bytes=-N: the last N bytes.
        return match last {
            None => RangeAnswer::Full,
            Some(0) => RangeAnswer::Unsatisfiable,
            Some(_) if len == 0 => RangeAnswer::Unsatisfiable,
            Some(n) => RangeAnswer::Partial {
                start: len.saturating_sub(n),
                end: len - 1,
            },
        };
    }
    let Some(start) = num(first) else {
        return RangeAnswer::Full;
    };
    if last.is_some_and(|l| l < start) {
        return RangeAnswer::Full;
    }
    if start >= len {
        return RangeAnswer::Unsatisfiable;
    }
    RangeAnswer::Partial {
        start,
        end: last.map_or(len - 1, |l| l.min(len - 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::freshness::Timing;
    use crate::meta::CacheMeta;
    use std::time::SystemTime;

    fn meta(pairs: &[(&str, &str)]) -> CacheMeta {
        let h = crate::headers(pairs);
        CacheMeta::new(StatusCode::OK, h, Timing::at(SystemTime::now()))
    }

    fn req(pairs: &[(&str, &str)]) -> HeaderMap {
        meta(pairs).headers
    }

    fn nm(req: &HeaderMap, m: &CacheMeta) -> bool {
        not_modified(req, m.status, &m.headers)
    }

    const LM: &str = "Sun, 06 Dec 2026 00:00:00 GMT";

    #[test]
    fn if_none_match_compares_weakly() {
        let m = meta(&[("etag", "W/\"v1\""), ("last-modified", LM)]);
        assert!(nm(&req(&[("if-none-match", "\"v1\"")]), &m));
        assert!(nm(&req(&[("if-none-match", "\"x\", W/\"v1\"")]), &m));
        assert!(nm(&req(&[("if-none-match", "*")]), &m));
        assert!(!nm(&req(&[("if-none-match", "\"v2\"")]), &m));
        // If-None-Match wins over If-Modified-Since.
        let both = req(&[("if-none-match", "\"v2\""), ("if-modified-since", LM)]);
        assert!(!nm(&both, &m));
    }

    #[test]
    fn if_modified_since_compares_dates() {
        let m = meta(&[("last-modified", LM)]);
        assert!(nm(&req(&[("if-modified-since", LM)]), &m));
        let earlier = "Sat, 05 Dec 2026 00:00:00 GMT";
        assert!(!nm(&req(&[("if-modified-since", earlier)]), &m));
        assert!(!nm(&req(&[("if-modified-since", "garbage")]), &m));
        assert!(!nm(&req(&[]), &m));
    }

    #[test]
    fn ranges() {
        let m = meta(&[("etag", "\"s\""), ("last-modified", LM)]);
        let r = |v: &str| range(&req(&[("range", v)]), m.status, &m.headers, 100);
        assert_eq!(r("bytes=0-9"), RangeAnswer::Partial { start: 0, end: 9 });
        assert_eq!(r("bytes=90-"), RangeAnswer::Partial { start: 90, end: 99 });
        assert_eq!(
            r("bytes=90-500"),
            RangeAnswer::Partial { start: 90, end: 99 }
        );
        assert_eq!(r("bytes=-10"), RangeAnswer::Partial { start: 90, end: 99 });
        assert_eq!(r("bytes=-500"), RangeAnswer::Partial { start: 0, end: 99 });
        assert_eq!(r("bytes=100-"), RangeAnswer::Unsatisfiable);
        assert_eq!(r("bytes=-0"), RangeAnswer::Unsatisfiable);
        assert_eq!(r("bytes=0-1,5-6"), RangeAnswer::Full);
        assert_eq!(r("bytes=5-1"), RangeAnswer::Full);
        assert_eq!(r("bytes=a-b"), RangeAnswer::Full);
        assert_eq!(r("bytes=1-x"), RangeAnswer::Full);
        assert_eq!(r("items=0-1"), RangeAnswer::Full);
        assert_eq!(
            range(&req(&[]), m.status, &m.headers, 100),
            RangeAnswer::Full
        );
    }

    #[test]
    fn if_range_must_match_strongly() {
        let m = meta(&[("etag", "\"s\""), ("last-modified", LM)]);
        let r = |c: &str| {
            range(
                &req(&[("range", "bytes=0-0"), ("if-range", c)]),
                m.status,
                &m.headers,
                10,
            )
        };
        assert_eq!(r("\"s\""), RangeAnswer::Partial { start: 0, end: 0 });
        assert_eq!(r(LM), RangeAnswer::Partial { start: 0, end: 0 });
        assert_eq!(r("\"t\""), RangeAnswer::Full);
        assert_eq!(r("W/\"s\""), RangeAnswer::Full);
        let weak = meta(&[("etag", "W/\"s\"")]);
        let rq = req(&[("range", "bytes=0-0"), ("if-range", "\"s\"")]);
        assert_eq!(
            range(&rq, weak.status, &weak.headers, 10),
            RangeAnswer::Full
        );
    }
}
