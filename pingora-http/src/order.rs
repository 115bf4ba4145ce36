//! The wire order of a header block, kept beside the `http` crate's
//! `HeaderMap`.
//!
//! `HeaderMap` answers lookups but groups repeated names and forgets their
//! spelling. [`WireOrder`] keeps one entry per header line, in order: its
//! spelling and which occurrence of its name it is. Values stay in the
//! `HeaderMap` only. This works because the only edits are "append one"
//! (a new last occurrence) and "remove every occurrence of a name", so the
//! n-th entry of a name here is always the n-th value of that name there.

use bytes::BufMut;
use http::header::{HeaderMap, HeaderValue};

use crate::case::CaseHeaderName;

#[derive(Debug, Clone)]
struct Entry {
    name: CaseHeaderName,
    /// Which occurrence of this name the entry is (0 for the first).
    nth: usize,
}

/// One entry per header line, in wire order.
#[derive(Debug, Clone)]
pub(crate) struct WireOrder {
    entries: Vec<Entry>,
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
            aligned: true,
        }
    }

    /// The order of a map built elsewhere (e.g. from HTTP/2): names spelled
    /// in lowercase, repeated names kept together.
    pub(crate) fn from_map(map: &HeaderMap) -> Self {
        let mut entries = Vec::with_capacity(map.len());
        for name in map.keys() {
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
            aligned: true,
        }
    }

    /// Add `value` as the last line, spelled as `name`.
    pub(crate) fn append(&mut self, map: &mut HeaderMap, name: CaseHeaderName, value: HeaderValue) {
        // `append` says whether the name was there already: only then is
        // there a count to take (one lookup for the common, new name).
        let nth = if map.append(name.name().clone(), value) {
            self.aligned &= self
                .entries
                .last()
                .is_some_and(|e| e.name.name() == name.name());
            map.get_all(name.name()).iter().count() - 1
        } else {
            0
        };
        self.entries.push(Entry { name, nth });
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
        let first = map.remove(name)?;
        let name = name.as_str();
        self.aligned &= self
            .entries
            .last()
            .is_some_and(|e| e.name.name().as_str().eq_ignore_ascii_case(name));
        self.entries
            .retain(|e| !e.name.name().as_str().eq_ignore_ascii_case(name));
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

    /// In debug builds (the tests), that `aligned` tells the truth.
    fn debug_check(&self, map: &HeaderMap) {
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
    pub(crate) fn wire_len(&self, map: &HeaderMap) -> usize {
        let line = |n: &[u8], v: &HeaderValue| n.len() + v.len() + 4;
        if self.aligned {
            self.entries
                .iter()
                .zip(map.values())
                .map(|(e, v)| line(e.name.as_bytes(), v))
                .sum()
        } else {
            self.iter(map).map(|(n, v)| line(n, v)).sum()
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}
