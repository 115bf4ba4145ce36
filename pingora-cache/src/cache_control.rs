//! `Cache-Control` (RFC 9111 §5.2): `directive[=value]` items separated by
//! commas, over any number of header lines; names are case-insensitive,
//! values a token or a quoted string.

use std::time::Duration;

use http::header::CACHE_CONTROL;
use http::HeaderMap;

/// The directives of one message's `Cache-Control` fields. Unknown
/// directives are ignored (§5.2.3). A `delta-seconds` value that is not a
/// number makes the message stale at once (0), the safe reading of §1.2.2;
/// a number too large for the clock is capped at 2^31 seconds, as §1.2.2
/// asks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheControl {
    /// `no-store`: never store this message.
    pub no_store: bool,
    /// `no-cache` (response: revalidate before every use; request: do not
    /// answer from cache without revalidating). With field names on a
    /// response, only those fields need it (`no_cache_fields`).
    pub no_cache: bool,
    /// The field names of a qualified response `no-cache="a, b"`.
    pub no_cache_fields: Vec<String>,
    /// `private`: a shared cache must not store it (unqualified), or must
    /// not store the listed fields (`private_fields`).
    pub private: bool,
    /// The field names of a qualified `private="a, b"`.
    pub private_fields: Vec<String>,
    /// `public`: storable even where it would otherwise not be.
    pub public: bool,
    /// `max-age`: freshness lifetime (response), or the oldest response the
    /// client accepts (request).
    pub max_age: Option<Duration>,
    /// `s-maxage`: freshness lifetime for shared caches (response).
    pub s_maxage: Option<Duration>,
    /// `must-revalidate`: never served stale (response).
    pub must_revalidate: bool,
    /// `proxy-revalidate`: never served stale by a shared cache.
    pub proxy_revalidate: bool,
    /// `no-transform`.
    pub no_transform: bool,
    /// `immutable` (RFC 8246).
    pub immutable: bool,
    /// `stale-while-revalidate` (RFC 5861 §3): how long past fresh it may
    /// be served while a background request refreshes it.
    pub stale_while_revalidate: Option<Duration>,
    /// `stale-if-error` (RFC 5861 §4): how long past fresh it may be served
    /// when the origin fails.
    pub stale_if_error: Option<Duration>,
    /// `max-stale` (request): stale responses are acceptable, by up to
    /// this much (`Some(None)`: by any amount).
    pub max_stale: Option<Option<Duration>>,
    /// `min-fresh` (request): at least this much freshness must be left.
    pub min_fresh: Option<Duration>,
    /// `only-if-cached` (request): answer from cache or 504.
    pub only_if_cached: bool,
}

/// The largest delta-seconds kept (RFC 9111 §1.2.2).
const MAX_DELTA: u64 = 1 << 31;

impl CacheControl {
    /// The directives of every `Cache-Control` line in `headers`.
    pub fn parse(headers: &HeaderMap) -> CacheControl {
        let mut cc = CacheControl::default();
        for value in headers.get_all(CACHE_CONTROL) {
            for (name, arg) in items(value.as_bytes()) {
                cc.apply(&name, arg.as_deref());
            }
        }
        cc
    }

    /// Whether any `Cache-Control` line is present.
    pub fn present(headers: &HeaderMap) -> bool {
        headers.contains_key(CACHE_CONTROL)
    }

    fn apply(&mut self, name: &str, arg: Option<&str>) {
        let secs = || Some(delta_seconds(arg));
        match name {
            "no-store" => self.no_store = true,
            "no-cache" => match arg {
                Some(fields) if !fields.is_empty() => {
                    self.no_cache_fields.extend(field_list(fields))
                }
                _ => self.no_cache = true,
            },
            "private" => match arg {
                Some(fields) if !fields.is_empty() => {
                    self.private_fields.extend(field_list(fields))
                }
                _ => self.private = true,
            },
            "public" => self.public = true,
            "max-age" => self.max_age = min(self.max_age, secs()),
            "s-maxage" => self.s_maxage = min(self.s_maxage, secs()),
            "must-revalidate" => self.must_revalidate = true,
            "proxy-revalidate" => self.proxy_revalidate = true,
            "no-transform" => self.no_transform = true,
            "immutable" => self.immutable = true,
            "stale-while-revalidate" => {
                self.stale_while_revalidate = min(self.stale_while_revalidate, secs())
            }
            "stale-if-error" => self.stale_if_error = min(self.stale_if_error, secs()),
            "max-stale" => self.max_stale = Some(arg.map(|a| delta_seconds(Some(a)))),
            "min-fresh" => self.min_fresh = min(self.min_fresh, secs()),
            "only-if-cached" => self.only_if_cached = true,
            _ => {}
        }
    }
}

/// The stricter (shorter) of a directive given twice.
fn min(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `delta-seconds` (digits only); anything else is 0, the safe reading.
fn delta_seconds(arg: Option<&str>) -> Duration {
    let Some(a) = arg.filter(|a| !a.is_empty() && a.bytes().all(|b| b.is_ascii_digit())) else {
        return Duration::ZERO;
    };
    // Digits only: a parse error is an overflow, capped like a large one.
    Duration::from_secs(a.parse::<u64>().unwrap_or(MAX_DELTA).min(MAX_DELTA))
}

/// The names of a `"a, b"` field list, lowercase.
fn field_list(s: &str) -> impl Iterator<Item = String> + '_ {
    s.split(',')
        .map(|f| f.trim().to_ascii_lowercase())
        .filter(|f| !f.is_empty())
}

/// The `name[=value]` items of one header value: names lowercase, quoted
/// values unquoted (with `\` escapes), items that are not well formed
/// skipped (but for their name, when it only restricts caching).
fn items(v: &[u8]) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < v.len() {
        // Skip separators and spaces before a name.
        while i < v.len() && (v[i] == b',' || v[i] == b' ' || v[i] == b'\t') {
            i += 1;
        }
        let start = i;
        while i < v.len() && is_tchar(v[i]) {
            i += 1;
        }
        if i == start {
            // Not a token: skip to the next comma.
            while i < v.len() && v[i] != b',' {
                i += 1;
            }
            continue;
        }
        let name = String::from_utf8_lossy(&v[start..i]).to_ascii_lowercase();
        let mut arg = None;
        let mut ok = true;
        if i < v.len() && v[i] == b'=' {
            i += 1;
            if i < v.len() && v[i] == b'"' {
                i += 1;
                let mut s = Vec::new();
                let mut closed = false;
                while i < v.len() {
                    match v[i] {
                        b'\\' if i + 1 < v.len() => {
                            s.push(v[i + 1]);
                            i += 2;
                        }
                        b'"' => {
                            closed = true;
                            i += 1;
                            break;
                        }
                        b => {
                            s.push(b);
                            i += 1;
                        }
                    }
                }
                ok = closed;
                arg = Some(String::from_utf8_lossy(&s).into_owned());
            } else {
                let vs = i;
                while i < v.len() && is_tchar(v[i]) {
                    i += 1;
                }
                arg = Some(String::from_utf8_lossy(&v[vs..i]).into_owned());
            }
        }
        // Only spaces may follow, up to the comma.
        while i < v.len() && (v[i] == b' ' || v[i] == b'\t') {
            i += 1;
        }
        if i < v.len() && v[i] != b',' {
            ok = false;
            while i < v.len() && v[i] != b',' {
                i += 1;
            }
        }
        if ok {
            out.push((name, arg));
        } else if RESTRICTIVE.contains(&name.as_str()) {
            // `no-store; x` or `private; max-age=0` (seen in the wild):
            // the item is malformed, but a directive that only restricts
            // is kept, so that caching fails closed, as nginx does.
            out.push((name, None));
        }
    }
    out
}

/// Directives that only ever restrict caching: kept from a malformed item.
const RESTRICTIVE: [&str; 5] = [
    "no-store",
    "no-cache",
    "private",
    "must-revalidate",
    "proxy-revalidate",
];

/// A `tchar` of RFC 9110 §5.6.2.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cc(lines: &[&str]) -> CacheControl {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(CACHE_CONTROL, l.parse().unwrap());
        }
        CacheControl::parse(&h)
    }

    #[test]
    fn directives_over_several_lines_any_case() {
        let c = cc(&["Public, MAX-AGE=60", "s-maxage=30,must-revalidate"]);
        assert!(c.public && c.must_revalidate);
        assert_eq!(c.max_age, Some(Duration::from_secs(60)));
        assert_eq!(c.s_maxage, Some(Duration::from_secs(30)));
        assert!(!c.no_store && !c.private);
    }

    #[test]
    fn quoted_field_lists_qualify_private_and_no_cache() {
        let c = cc(&[r#"private="Set-Cookie, X-A", no-cache="x-b""#]);
        assert!(!c.private && !c.no_cache);
        assert_eq!(c.private_fields, ["set-cookie", "x-a"]);
        assert_eq!(c.no_cache_fields, ["x-b"]);
        let c = cc(&["private, no-cache"]);
        assert!(c.private && c.no_cache);
    }

    #[test]
    fn bad_numbers_are_stale_and_huge_ones_capped() {
        assert_eq!(cc(&["max-age=abc"]).max_age, Some(Duration::ZERO));
        assert_eq!(cc(&["max-age=-1"]).max_age, Some(Duration::ZERO));
        assert_eq!(cc(&["max-age"]).max_age, Some(Duration::ZERO));
        let big = cc(&["max-age=99999999999999999999999"]).max_age.unwrap();
        assert_eq!(big, Duration::from_secs(MAX_DELTA));
        // Given twice: the shorter.
        assert_eq!(
            cc(&["max-age=60, max-age=10"]).max_age,
            Some(Duration::from_secs(10))
        );
    }

    #[test]
    fn request_directives() {
        let c = cc(&["max-stale, min-fresh=5, only-if-cached"]);
        assert_eq!(c.max_stale, Some(None));
        assert_eq!(c.min_fresh, Some(Duration::from_secs(5)));
        assert!(c.only_if_cached);
        assert_eq!(
            cc(&["max-stale=9"]).max_stale,
            Some(Some(Duration::from_secs(9)))
        );
    }

    #[test]
    fn malformed_items_are_skipped_not_misread() {
        // An unterminated quote, junk after a value: those items drop,
        // but for a name that only restricts (fail closed).
        let c = cc(&[r#"private="a, no-store"#]);
        assert!(!c.no_store && c.private);
        let c = cc(&["max-age=60 junk, no-store"]);
        assert_eq!(c.max_age, None);
        assert!(c.no_store);
        let c = cc(&["private; max-age=60"]);
        assert!(c.private);
        assert_eq!(c.max_age, None);
        let c = cc(&["no-store; x, max-age=5"]);
        assert!(c.no_store);
        assert_eq!(c.max_age, Some(std::time::Duration::from_secs(5)));
        assert!(!cc(&["public; x"]).public, "broadening names are not kept");
        // Unknown directives are ignored.
        assert!(cc(&["x-ours=1, public"]).public);
    }
}
