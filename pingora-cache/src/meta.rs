//! [`CacheMeta`]: what is kept of a stored response besides its body: its
//! status and header, when it was fetched, and (for a response that
//! varies) which request it answers. It is written to disk with
//! [`CacheMeta::encode`] and read back with [`CacheMeta::decode`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, ETAG, LAST_MODIFIED, VARY};
use http::{HeaderMap, StatusCode};

use crate::freshness::{Freshness, Timing};

/// The format's first bytes; a change of layout changes them.
const VERSION: &[u8; 4] = b"PGM1";

/// A stored response's status, header and timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheMeta {
    /// The response's status.
    pub status: StatusCode,
    /// The response's header fields (as stored: after
    /// `upstream_response_filter`).
    pub headers: HeaderMap,
    /// When it was requested and received (the age calculation's inputs).
    pub timing: Timing,
    /// For an object under a secondary key: the variance it was stored
    /// under (see [`crate::vary`]).
    pub variance: Option<Vec<u8>>,
    /// A marker at a primary key: the responses there vary (by the
    /// `Vary` fields in `headers`), and each is stored under its
    /// secondary key. A marker has no body and is never served.
    pub vary_marker: bool,
}

impl CacheMeta {
    /// The meta of a response with `status` and `headers` fetched as
    /// `timing` says.
    pub fn new(status: StatusCode, headers: HeaderMap, timing: Timing) -> CacheMeta {
        CacheMeta {
            status,
            headers,
            timing,
            variance: None,
            vary_marker: false,
        }
    }

    /// Its freshness (for a shared cache when `shared`).
    pub fn freshness(&self, shared: bool) -> Freshness {
        Freshness::of(self.status, &self.headers, self.timing, shared)
    }

    /// Its `ETag`, if any.
    pub fn etag(&self) -> Option<&HeaderValue> {
        self.headers.get(ETAG)
    }

    /// Its `Last-Modified`, if any.
    pub fn last_modified(&self) -> Option<&HeaderValue> {
        self.headers.get(LAST_MODIFIED)
    }

    /// Whether it can be revalidated with a conditional request.
    pub fn has_validator(&self) -> bool {
        self.etag().is_some() || self.last_modified().is_some()
    }

    /// Whether it has a `Vary` naming request fields.
    pub fn varies(&self) -> bool {
        self.headers.contains_key(VARY)
    }

    /// Take in a `304 Not Modified` that revalidated it (RFC 9111
    /// §4.3.4): the 304's fields replace the stored ones of the same name
    /// (but `Content-Length`, which describes the 304's own empty body),
    /// and its timing becomes the entry's, so that its age starts again.
    pub fn merge_not_modified(&mut self, not_modified: &HeaderMap, timing: Timing) {
        // The stored `Age` and `Date` were the old response's; the age now
        // starts from the 304 (and its own `Age` and `Date`, if it has them).
        self.headers.remove(http::header::AGE);
        self.headers.remove(http::header::DATE);
        let mut replaced: Vec<&HeaderName> = Vec::new();
        for (name, value) in not_modified {
            if name == CONTENT_LENGTH {
                continue;
            }
            if !replaced.contains(&name) {
                self.headers.remove(name);
                replaced.push(name);
            }
            self.headers.append(name.clone(), value.clone());
        }
        self.timing = timing;
    }

    /// The bytes [`decode`](Self::decode) reads back.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(VERSION);
        out.extend_from_slice(&self.status.as_u16().to_le_bytes());
        for t in [self.timing.request_time, self.timing.response_time] {
            let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
            out.extend_from_slice(&d.as_secs().to_le_bytes());
            out.extend_from_slice(&d.subsec_nanos().to_le_bytes());
        }
        out.push(u8::from(self.vary_marker));
        match &self.variance {
            Some(v) => {
                out.push(1);
                put_bytes(&mut out, v);
            }
            None => out.push(0),
        }
        out.extend_from_slice(&(self.headers.len() as u32).to_le_bytes());
        for (name, value) in &self.headers {
            put_bytes(&mut out, name.as_str().as_bytes());
            put_bytes(&mut out, value.as_bytes());
        }
        out
    }

    /// The meta [`encode`](Self::encode) wrote, or `None` if the bytes are
    /// not such a meta (another version, cut short, a bad field).
    pub fn decode(bytes: &[u8]) -> Option<CacheMeta> {
        let mut r = Reader(bytes);
        if r.take(4)? != VERSION {
            return None;
        }
        let status = StatusCode::from_u16(u16::from_le_bytes(r.array()?)).ok()?;
        let mut time = || -> Option<SystemTime> {
            let secs = u64::from_le_bytes(r.array()?);
            let nanos = u32::from_le_bytes(r.array()?);
            UNIX_EPOCH.checked_add(Duration::new(secs, nanos.min(999_999_999)))
        };
        let timing = Timing {
            request_time: time()?,
            response_time: time()?,
        };
        let vary_marker = r.take(1)?[0] == 1;
        let variance = match r.take(1)?[0] {
            1 => Some(r.bytes()?.to_vec()),
            _ => None,
        };
        let n = u32::from_le_bytes(r.array()?);
        let mut headers = HeaderMap::new();
        for _ in 0..n {
            let name = HeaderName::from_bytes(r.bytes()?).ok()?;
            let value = HeaderValue::from_bytes(r.bytes()?).ok()?;
            headers.append(name, value);
        }
        Some(CacheMeta {
            status,
            headers,
            timing,
            variance,
            vary_marker,
        })
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// Reads the encoded form, failing (`None`) on anything cut short.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = u32::from_le_bytes(self.array()?) as usize;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> CacheMeta {
        let mut h = HeaderMap::new();
        h.insert("cache-control", "max-age=60".parse().unwrap());
        h.append("set-thing", "a".parse().unwrap());
        h.append("set-thing", "b".parse().unwrap());
        h.insert("etag", "\"v1\"".parse().unwrap());
        h.insert("age", "500".parse().unwrap());
        let at = UNIX_EPOCH + Duration::new(1_700_000_000, 5);
        CacheMeta::new(StatusCode::OK, h, Timing::at(at))
    }

    #[test]
    fn encoding_round_trips() {
        let mut m = meta();
        m.variance = Some(b"gzip".to_vec());
        let back = CacheMeta::decode(&m.encode()).unwrap();
        assert_eq!(back, m);
        let all: Vec<_> = back.headers.get_all("set-thing").iter().collect();
        assert_eq!(all, ["a", "b"]);
    }

    #[test]
    fn bad_bytes_decode_to_none() {
        let bytes = meta().encode();
        for cut in 0..bytes.len() {
            assert!(CacheMeta::decode(&bytes[..cut]).is_none(), "cut at {cut}");
        }
        let mut other = bytes.clone();
        other[3] = b'9';
        assert!(CacheMeta::decode(&other).is_none());
    }

    #[test]
    fn a_304_replaces_fields_and_restarts_the_age() {
        let mut m = meta();
        let mut nm = HeaderMap::new();
        nm.insert("cache-control", "max-age=120".parse().unwrap());
        nm.insert("content-length", "0".parse().unwrap());
        nm.insert("x-new", "1".parse().unwrap());
        let later = Timing::at(m.timing.response_time + Duration::from_secs(500));
        m.merge_not_modified(&nm, later);
        assert_eq!(m.headers["cache-control"], "max-age=120");
        assert_eq!(m.headers["x-new"], "1");
        assert_eq!(m.headers["etag"], "\"v1\"");
        assert!(!m.headers.contains_key("content-length"));
        assert!(!m.headers.contains_key("age"), "the old age is gone");
        assert_eq!(m.timing, later);
        assert!(m
            .freshness(true)
            .is_fresh(later.response_time + Duration::from_secs(100)));
    }
}
