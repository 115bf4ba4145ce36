//! The wire order of a header block, kept beside the `http` crate's
//! `HeaderMap`.
//!
//! `HeaderMap` answers lookups but groups repeated names and forgets their
//! spelling. [`WireOrder`] keeps one entry per header line, in order: its
//! spelling and which occurrence of its name it is. Values stay in the
//! `HeaderMap` only. This works because the only edits are "append one"
//! (a new last occurrence) and "remove every occurrence of a name", so the
//! n-th entry of a name here is always the n-th value of that name there.

use std::collections::HashMap;

use bytes::BufMut;
use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::case::CaseHeaderName;

#[derive(Debug, Clone)]
struct Entry {
    name: CaseHeaderName,
    /// Which occurrence of this name the entry is (0 for the first).
    nth: usize,
}

/// Names that the HTTP/1 framing and hop-by-hop rules ask about on every
/// message, mostly to find them absent. [`WireOrder`] keeps one bit per
/// name for "a line of it is present", so that asking costs no lookup.
static TRACKED: [&str; 12] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "expect",
    "te",
    "trailer",
    "host",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
];

/// A header name whose presence every message keeps as a bit (see
/// [`tracked`](crate::tracked)), with that bit found once, at compile
/// time: `has_tracked` is one bit test and `tracked_values` skips the
/// name lookup, where `has_header`/`header_values` first find the name's
/// bit by comparing strings. For code that asks on every message (the
/// HTTP/1 framing rules ask about a few of these each time).
#[derive(Clone, Copy, Debug)]
pub struct TrackedName {
    pub(crate) bit: u16,
    pub(crate) name: &'static HeaderName,
}

impl TrackedName {
    const fn new(i: usize, name: &'static HeaderName) -> Self {
        TrackedName { bit: 1 << i, name }
    }

    /// The name.
    pub fn name(&self) -> &'static HeaderName {
        self.name
    }
}

/// The tracked names ([`TrackedName`]) that framing rules ask about.
pub mod tracked {
    use super::TrackedName;
    use http::header::{self, HeaderName};

    /// The names, in [`TRACKED`](super::TRACKED)'s order.
    static NAMES: [HeaderName; 8] = [
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::CONNECTION,
        header::UPGRADE,
        header::EXPECT,
        header::TE,
        header::TRAILER,
        header::HOST,
    ];

    /// `Content-Length`.
    pub const CONTENT_LENGTH: TrackedName = TrackedName::new(0, &NAMES[0]);
    /// `Transfer-Encoding`.
    pub const TRANSFER_ENCODING: TrackedName = TrackedName::new(1, &NAMES[1]);
    /// `Connection`.
    pub const CONNECTION: TrackedName = TrackedName::new(2, &NAMES[2]);
    /// `Upgrade`.
    pub const UPGRADE: TrackedName = TrackedName::new(3, &NAMES[3]);
    /// `Expect`.
    pub const EXPECT: TrackedName = TrackedName::new(4, &NAMES[4]);
    /// `TE`.
    pub const TE: TrackedName = TrackedName::new(5, &NAMES[5]);
    /// `Trailer`.
    pub const TRAILER: TrackedName = TrackedName::new(6, &NAMES[6]);
    /// `Host`.
    pub const HOST: TrackedName = TrackedName::new(7, &NAMES[7]);
}

/// The [`TRACKED`] bits of the hop-by-hop names (all but Content-Length,
/// Expect and Host).
pub(crate) const HOP_BY_HOP_BITS: u16 = 0b1111_0110_1110;
/// The [`TRACKED`] bit of `connection`.
pub(crate) const CONNECTION_BIT: u16 = 1 << 2;

/// The bit of a tracked name, 0 for the others: string comparisons, which
/// differ in length at once for most names (comparing `HeaderName`s,
/// switching on the length first, or testing a mask of the lengths first
/// all measured the same or slower).
pub(crate) fn tracked_bit(name: &HeaderName) -> u16 {
    let name = name.as_str();
    TRACKED
        .iter()
        .position(|t| *t == name)
        .map_or(0, |i| 1 << i)
}

/// The same for a name given as a string, in any case.
pub(crate) fn tracked_bit_str(name: &str) -> u16 {
    TRACKED
        .iter()
        .position(|t| t.eq_ignore_ascii_case(name))
        .map_or(0, |i| 1 << i)
}

/// The same for a header name as received, whose bytes are all token
/// characters (checked by the caller), for every line of a parsed header:
/// the length (and for two pairs of names the first letter) picks the one
/// candidate, compared eight bytes at a time with the case bit set. For
/// token characters that is exact against these names, which hold only
/// lowercase letters and `-`: `b | 0x20` equals a letter only for that
/// letter in either case, and equals `-` only for `-` or a CR.
#[inline]
pub(crate) fn tracked_bit_token(name: &[u8]) -> u16 {
    let i = match name.len() {
        14 => 0,
        17 => 1,
        10 if name[0] | 0x20 == b'k' => 8,
        10 => 2,
        7 if name[0] | 0x20 == b'u' => 3,
        7 => 6,
        6 => 4,
        2 => 5,
        4 => 7,
        16 => 9,
        18 => 10,
        19 => 11,
        _ => return 0,
    };
    let (mut a, mut t) = (name, TRACKED[i].as_bytes());
    while a.len() >= 8 {
        let word = |s: &[u8]| u64::from_ne_bytes(s[..8].try_into().expect("8 bytes"));
        if word(a) | 0x2020_2020_2020_2020 != word(t) {
            return 0;
        }
        a = &a[8..];
        t = &t[8..];
    }
    if a.iter().zip(t).all(|(x, y)| x | 0x20 == *y) {
        1 << i
    } else {
        0
    }
}

/// The names a `Connection` header lists (RFC 9110 §7.6.1): the tracked
/// ones as bits, the others as byte slices, sorted case-blind and without
/// repeats so that a lookup is a binary search. Tokens are split on `,`
/// and trimmed as bytes, so a value with non-ASCII bytes elsewhere still
/// lists its names. A hostile list (tens of thousands of tokens in a 64 KiB
/// header) costs a sort, not a comparison of every token with every line.
pub(crate) struct ListedNames<'a> {
    pub(crate) bits: u16,
    others: Vec<&'a [u8]>,
}

fn fold_cmp(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    a.iter()
        .map(u8::to_ascii_lowercase)
        .cmp(b.iter().map(u8::to_ascii_lowercase))
}

impl<'a> ListedNames<'a> {
    pub(crate) fn new(values: impl Iterator<Item = &'a [u8]>) -> Self {
        let mut bits = 0;
        let mut others = Vec::new();
        for v in values {
            for t in v.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if t.is_empty() {
                    continue;
                }
                // Exact for any bytes but CR, which no header value holds
                // (see `tracked_bit_token`).
                match tracked_bit_token(t) {
                    0 => others.push(t),
                    bit => bits |= bit,
                }
            }
        }
        if others.len() > 1 {
            others.sort_unstable_by(|a, b| fold_cmp(a, b));
            others.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
        }
        ListedNames { bits, others }
    }

    /// Whether `name` (not a tracked one) is listed.
    pub(crate) fn has_other(&self, name: &[u8]) -> bool {
        !self.others.is_empty() && self.others.binary_search_by(|t| fold_cmp(t, name)).is_ok()
    }
}

/// Bytes of one `Name: value\r\n` line.
fn line_len(name: &[u8], value: &HeaderValue) -> usize {
    name.len() + value.len() + 4
}

/// One entry per header line, in wire order.
#[derive(Debug, Clone)]
pub(crate) struct WireOrder {
    entries: Vec<Entry>,
    /// Which [`TRACKED`] names have lines, one bit each.
    present: u16,
    /// Bytes the lines take on the wire (`Name: value\r\n` each), kept by
    /// every edit so that sizing a buffer does not walk the lines again.
    wire_bytes: usize,
    /// Whether the map iterates its values in wire order, so that the lines
    /// can be walked beside `HeaderMap::values` without a lookup each. Kept
    /// by `append` and `remove`, the only ways the map changes: a new name
    /// (or one more line of the last name) keeps it; removing any name but
    /// the last moves the map's last entry into its place, and a line of an
    /// earlier name goes with that name's others, so both end it.
    aligned: bool,
}

impl Default for WireOrder {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl WireOrder {
    pub(crate) fn with_capacity(n: usize) -> Self {
        WireOrder {
            entries: Vec::with_capacity(n),
            present: 0,
            wire_bytes: 0,
            aligned: true,
        }
    }

    /// The order of a map built elsewhere (e.g. from HTTP/2): names spelled
    /// in lowercase, repeated names kept together.
    pub(crate) fn from_map(map: &HeaderMap) -> Self {
        let mut entries = Vec::with_capacity(map.len());
        let mut present = 0;
        let wire_bytes = map
            .iter()
            .map(|(n, v)| line_len(n.as_str().as_bytes(), v))
            .sum();
        for name in map.keys() {
            present |= tracked_bit(name);
            for nth in 0..map.get_all(name).iter().count() {
                entries.push(Entry {
                    name: CaseHeaderName::from(name.clone()),
                    nth,
                });
            }
        }
        // Repeated names are together here as in the map's iteration.
        WireOrder {
            entries,
            present,
            wire_bytes,
            aligned: true,
        }
    }

    /// Add `value` as the last line, spelled as `name`.
    pub(crate) fn append(&mut self, map: &mut HeaderMap, name: CaseHeaderName, value: HeaderValue) {
        // `append` says whether the name was there already: only then is
        // there a count to take (one lookup for the common, new name).
        self.wire_bytes += line_len(name.as_bytes(), &value);
        let nth = if map.append(name.name().clone(), value) {
            self.aligned &= self
                .entries
                .last()
                .is_some_and(|e| e.name.name() == name.name());
            map.get_all(name.name()).iter().count() - 1
        } else {
            self.present |= tracked_bit(name.name());
            0
        };
        self.entries.push(Entry { name, nth });
        self.debug_check(map);
    }

    /// Bring the lines back in step with `map` after it was edited
    /// directly (through `DerefMut`): a line whose value is gone goes, the
    /// values the lines lack are added at the end (spelled as another line
    /// of that name, else in lowercase), and the bits and lengths are
    /// counted again. Lines that stayed keep their place and spelling.
    pub(crate) fn resync(&mut self, map: &HeaderMap) {
        let mut kept: HashMap<HeaderName, (usize, CaseHeaderName)> = HashMap::new();
        let mut entries = Vec::with_capacity(map.len());
        for e in self.entries.drain(..) {
            let have = map.get_all(e.name.name()).iter().count();
            let seen = kept
                .entry(e.name.name().clone())
                .or_insert_with(|| (0, e.name.clone()));
            if seen.0 < have {
                entries.push(Entry {
                    name: e.name,
                    nth: seen.0,
                });
                seen.0 += 1;
            }
        }
        for name in map.keys() {
            let have = map.get_all(name).iter().count();
            let (seen, spelling) = kept
                .get(name)
                .map_or((0, None), |(n, s)| (*n, Some(s.clone())));
            let spelling = spelling.unwrap_or_else(|| CaseHeaderName::from(name.clone()));
            entries.extend((seen..have).map(|nth| Entry {
                name: spelling.clone(),
                nth,
            }));
        }
        self.entries = entries;
        self.present = map.keys().fold(0, |bits, n| bits | tracked_bit(n));
        self.wire_bytes = self.iter(map).map(|(n, v)| line_len(n, v)).sum();
        self.aligned = self.entries.len() == map.len()
            && self
                .entries
                .iter()
                .zip(map.iter())
                .all(|(e, (k, _))| e.name.name() == k);
        self.debug_check(map);
    }

    /// Replace every line of this name with one line at the end.
    pub(crate) fn insert(&mut self, map: &mut HeaderMap, name: CaseHeaderName, value: HeaderValue) {
        self.remove(map, name.name());
        self.append(map, name, value);
    }

    /// Remove every line named `name` (any case); returns the first value.
    /// A `HeaderName` is looked up as it is; a `&str` is looked up without
    /// allocating, so removing an absent header is cheap either way.
    pub(crate) fn remove<K: http::header::AsHeaderName + Copy>(
        &mut self,
        map: &mut HeaderMap,
        name: K,
    ) -> Option<HeaderValue> {
        let bit = tracked_bit_str(name.as_str());
        self.remove_with_bit(map, name, bit)
    }

    /// [`remove`](Self::remove) with the name's [`TRACKED`] bit known.
    fn remove_with_bit<K: http::header::AsHeaderName + Copy>(
        &mut self,
        map: &mut HeaderMap,
        name: K,
        bit: u16,
    ) -> Option<HeaderValue> {
        if bit != 0 && self.present & bit == 0 {
            return None;
        }
        let name_str = name.as_str();
        let is_name = |e: &Entry| e.name.name().as_str().eq_ignore_ascii_case(name_str);
        // The common case (a `Connection` line at the end): the last line
        // is the name's first, hence only, line.
        let only_last = self
            .entries
            .last()
            .is_some_and(|e| e.nth == 0 && is_name(e));
        // The values after the first, which `remove` does not return.
        let more: usize = if only_last {
            0
        } else {
            map.get_all(name).iter().skip(1).map(|v| v.len()).sum()
        };
        let first = map.remove(name)?;
        self.present &= !bit;
        let mut gone = first.len() + more;
        if only_last {
            if let Some(e) = self.entries.pop() {
                gone += e.name.as_bytes().len() + 4;
            }
        } else {
            self.aligned &= self.entries.last().is_some_and(is_name);
            self.entries.retain(|e| {
                let keep = !is_name(e);
                if !keep {
                    gone += e.name.as_bytes().len() + 4;
                }
                keep
            });
        }
        self.wire_bytes -= gone;
        self.debug_check(map);
        Some(first)
    }

    /// The lines in order: spelling and value.
    pub(crate) fn iter<'a>(
        &'a self,
        map: &'a HeaderMap,
    ) -> impl Iterator<Item = (&'a [u8], &'a HeaderValue)> + 'a {
        self.entries.iter().filter_map(move |e| {
            let v = if e.nth == 0 {
                map.get(e.name.name())
            } else {
                map.get_all(e.name.name()).iter().nth(e.nth)
            };
            v.map(|v| (e.name.as_bytes(), v))
        })
    }

    /// Whether `map` has a line named `name`: for the [`TRACKED`] names
    /// without a lookup.
    pub(crate) fn contains(&self, map: &HeaderMap, name: &HeaderName) -> bool {
        match tracked_bit(name) {
            0 => map.contains_key(name),
            bit => self.present & bit != 0,
        }
    }

    /// Whether a line of the tracked name with this bit is present.
    pub(crate) fn has_bit(&self, bit: u16) -> bool {
        self.present & bit != 0
    }

    /// Whether any of the hop-by-hop names of RFC 9110 §7.6.1 (Connection,
    /// Keep-Alive, Proxy-Connection, Proxy-Authenticate, Proxy-Authorization,
    /// TE, Trailer, Transfer-Encoding, Upgrade) has a line: one bit test.
    pub(crate) fn has_hop_by_hop(&self) -> bool {
        self.present & HOP_BY_HOP_BITS != 0
    }

    /// Remove every hop-by-hop line (RFC 9110 §7.6.1): those named in
    /// [`HOP_BY_HOP_BITS`], and those that `Connection` lists. The bits
    /// say which of the fixed names are present, so a block without them
    /// costs one test and one with them no search for the others.
    pub(crate) fn remove_hop_by_hop(&mut self, map: &mut HeaderMap) {
        let found = self.present & HOP_BY_HOP_BITS;
        if found == 0 {
            return;
        }
        // The names `Connection` lists, taken before it goes: of the lines
        // of other names, those it lists.
        let mut named: Vec<HeaderName> = Vec::new();
        let mut listed_bits = 0;
        if found & CONNECTION_BIT != 0 {
            let listed = ListedNames::new(
                map.get_all(http::header::CONNECTION)
                    .iter()
                    .map(HeaderValue::as_bytes),
            );
            listed_bits = listed.bits & !HOP_BY_HOP_BITS;
            for name in map.keys() {
                if tracked_bit(name) == 0 && listed.has_other(name.as_str().as_bytes()) {
                    named.push(name.clone());
                }
            }
        }
        for (i, name) in TRACKED.iter().enumerate() {
            let bit = 1 << i;
            if (found | listed_bits) & bit != 0 {
                self.remove_with_bit(map, *name, bit);
            }
        }
        for name in &named {
            self.remove(map, name);
        }
    }

    /// In debug builds (the tests), that `aligned` and `present` tell the
    /// truth.
    fn debug_check(&self, map: &HeaderMap) {
        debug_assert!(
            TRACKED
                .iter()
                .all(|t| (self.present & tracked_bit_str(t) != 0) == map.contains_key(*t)),
            "tracked names out of step with the map"
        );
        debug_assert!(
            !self.aligned
                || (self.entries.len() == map.len()
                    && self
                        .entries
                        .iter()
                        .zip(map.iter())
                        .all(|(e, (k, _))| e.name.name() == k)),
            "wire order marked aligned but not"
        );
        debug_assert_eq!(
            self.wire_bytes,
            self.iter(map).map(|(n, v)| line_len(n, v)).sum::<usize>(),
            "wire length out of step with the lines"
        );
    }

    /// Write the lines as HTTP/1 `Name: value\r\n`.
    pub(crate) fn write_h1<B: BufMut>(&self, map: &HeaderMap, buf: &mut B) {
        let mut line = |name: &[u8], value: &HeaderValue| {
            buf.put_slice(name);
            buf.put_slice(b": ");
            buf.put_slice(value.as_bytes());
            buf.put_slice(b"\r\n");
        };
        self.debug_check(map);
        if self.aligned {
            for (e, value) in self.entries.iter().zip(map.values()) {
                line(e.name.as_bytes(), value);
            }
        } else {
            for (name, value) in self.iter(map) {
                line(name, value);
            }
        }
    }

    /// Bytes the lines take on the wire, for sizing buffers.
    pub(crate) fn wire_len(&self) -> usize {
        self.wire_bytes
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_bits() {
        let hop = [
            "connection",
            "keep-alive",
            "proxy-connection",
            "proxy-authenticate",
            "proxy-authorization",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
        ];
        let bits = hop.iter().fold(0, |b, n| b | tracked_bit_str(n));
        assert_eq!(bits, HOP_BY_HOP_BITS);
        assert_eq!(tracked_bit_str("connection"), CONNECTION_BIT);
        assert_eq!(bits.count_ones(), 9);
    }

    #[test]
    fn tracked_bits_of_every_tracked_name_and_no_other() {
        for (i, t) in TRACKED.iter().enumerate() {
            assert_eq!(tracked_bit(&HeaderName::from_static(t)), 1 << i, "{t}");
            assert_eq!(tracked_bit_str(t), 1 << i, "{t}");
            assert_eq!(tracked_bit_str(&t.to_uppercase()), 1 << i, "{t}");
            assert_eq!(tracked_bit_token(t.as_bytes()), 1 << i, "{t}");
            assert_eq!(
                tracked_bit_token(t.to_uppercase().as_bytes()),
                1 << i,
                "{t}"
            );
        }
        // Same lengths (and first letters) as tracked names, not tracked.
        for other in [
            "content-type12",
            "x-forwarded-proto",
            "keep-alives",
            "u-agent",
            "x-forwarded-host",
            "x-forwarded-server",
            "x-forwarded-protocol",
            "referer",
            "cookie",
            "ab",
            "date",
            "via",
            "",
            "proxy-connections",
        ] {
            assert_eq!(tracked_bit_str(other), 0, "{other}");
            assert_eq!(tracked_bit_token(other.as_bytes()), 0, "{other}");
            if let Ok(n) = HeaderName::from_bytes(other.as_bytes()) {
                assert_eq!(tracked_bit(&n), 0, "{other}");
            }
        }
    }
}
