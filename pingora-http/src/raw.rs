//! Header lines as parsed: offsets into the received header block, not yet
//! in a `HeaderMap`.
//!
//! Building the `HeaderMap` (a name parsed and hashed, a value checked and
//! shared, one wire-order entry per line, and all of it dropped again) was
//! the largest cost of a proxied request. A proxy that only forwards a
//! message asks a few framing questions (Content-Length, Transfer-Encoding,
//! Connection, …), removes the hop-by-hop lines and writes the rest; all of
//! that works on the lines as parsed. The map is built the first time
//! anything else is asked ([`RawLines::materialize`]).
//!
//! The lines are checked when parsed with the rules `HeaderName` and
//! `HeaderValue` apply, so building the map later cannot fail.

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::case::CaseHeaderName;
use crate::order::{
    tracked_bit, tracked_bit_str, tracked_bit_token, ListedNames, TrackedName, WireOrder,
    CONNECTION_BIT, HOP_BY_HOP_BITS,
};

/// One line: where its name and value are in the block, and the tracked
/// bit of its name (0 for other names).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Line {
    pub(crate) name: u32,
    pub(crate) value: u32,
    pub(crate) value_len: u32,
    pub(crate) name_len: u16,
    pub(crate) bit: u16,
}

impl Line {
    fn wire_len(&self) -> usize {
        self.name_len as usize + self.value_len as usize + 4
    }
}

/// Lines kept inline up to this many (most messages between programs
/// have fewer), so that parsing and copying a header allocate nothing.
const INLINE_LINES: usize = 8;

/// The lines: inline while few, else on the heap.
#[derive(Debug, Clone)]
pub(crate) enum LineVec {
    Inline(u8, [Line; INLINE_LINES]),
    Heap(Vec<Line>),
}

const NO_LINE: Line = Line {
    name: 0,
    value: 0,
    value_len: 0,
    name_len: 0,
    bit: 0,
};

impl LineVec {
    pub(crate) fn with_capacity(n: usize) -> Self {
        if n <= INLINE_LINES {
            LineVec::Inline(0, [NO_LINE; INLINE_LINES])
        } else {
            LineVec::Heap(Vec::with_capacity(n))
        }
    }

    #[inline]
    pub(crate) fn push(&mut self, l: Line) {
        match self {
            LineVec::Inline(n, a) if (*n as usize) < INLINE_LINES => {
                a[*n as usize] = l;
                *n += 1;
            }
            LineVec::Inline(_, a) => {
                let mut v = a.to_vec();
                v.push(l);
                *self = LineVec::Heap(v);
            }
            LineVec::Heap(v) => v.push(l),
        }
    }

    /// Keep the lines `keep` says yes to, in order.
    fn retain(&mut self, mut keep: impl FnMut(&Line) -> bool) {
        match self {
            LineVec::Inline(n, a) => {
                let mut k = 0;
                for i in 0..*n as usize {
                    if keep(&a[i]) {
                        a[k] = a[i];
                        k += 1;
                    }
                }
                *n = k as u8;
            }
            LineVec::Heap(v) => v.retain(|l| keep(l)),
        }
    }
}

impl std::ops::Deref for LineVec {
    type Target = [Line];
    #[inline]
    fn deref(&self) -> &[Line] {
        match self {
            LineVec::Inline(n, a) => &a[..*n as usize],
            LineVec::Heap(v) => v,
        }
    }
}

/// The header lines of one parsed message, in wire order.
#[derive(Debug, Clone)]
pub(crate) struct RawLines {
    block: Bytes,
    lines: LineVec,
    /// Which tracked names (see `order.rs`) have lines, one bit each.
    pub(crate) present: u16,
    /// Bytes the lines take on the wire as `Name: value\r\n`.
    wire_bytes: usize,
}

/// Whether every byte of `v` may appear in a header value (the set
/// `HeaderValue` accepts: visible ASCII, space, tab, and obs-text). No
/// early exit, so that the loop vectorizes.
fn valid_value(v: &[u8]) -> bool {
    v.iter().fold(true, |ok, &b| {
        ok & ((b >= 0x20 && b != 0x7f) | (b == b'\t'))
    })
}

/// `part`'s offset in `block`, if it lies inside it.
fn offset_in(block: &Bytes, part: &[u8]) -> Option<u32> {
    let start = block.as_ptr() as usize;
    let p = part.as_ptr() as usize;
    if p >= start && p + part.len() <= start + block.len() {
        u32::try_from(p - start).ok()
    } else {
        None
    }
}

impl RawLines {
    /// No lines and no block yet: for [`crate::h1`] to fill in place
    /// ([`push_parsed`](Self::push_parsed), then
    /// [`set_block`](Self::set_block)).
    pub(crate) fn empty() -> Self {
        RawLines {
            block: Bytes::new(),
            lines: LineVec::Inline(0, [NO_LINE; INLINE_LINES]),
            present: 0,
            wire_bytes: 0,
        }
    }

    /// Add a line just parsed (its offsets into the block to come).
    #[inline]
    pub(crate) fn push_parsed(&mut self, l: Line) {
        self.present |= l.bit;
        self.wire_bytes += l.wire_len();
        self.lines.push(l);
    }

    /// The block the parsed lines point into.
    pub(crate) fn set_block(&mut self, block: Bytes) {
        self.block = block;
        self.debug_check();
    }

    /// The lines, in order.
    #[cfg(test)]
    pub(crate) fn lines(&self) -> &[Line] {
        &self.lines
    }

    /// The lines httparse found in `block`, written into `slot` in place
    /// (the lines are not moved again). `false`, with `slot` emptied, when
    /// a line is not a slice of `block` or breaks a rule of
    /// `HeaderName`/`HeaderValue`: then the caller builds the map at once,
    /// which reports the error (for `from_httparse`, whose input may come
    /// from any parser config; pingora-core parses with [`crate::h1`]).
    pub(crate) fn parse_into(
        slot: &mut Option<RawLines>,
        headers: &[httparse::Header<'_>],
        block: &Bytes,
    ) -> bool {
        // Offsets and lengths are `u32`s.
        if u32::try_from(block.len()).is_err() {
            *slot = None;
            return false;
        }
        let n = headers.len();
        let raw = slot.insert(RawLines {
            block: block.clone(),
            lines: LineVec::with_capacity(n),
            present: 0,
            wire_bytes: 0,
        });
        let lines: &mut [Line] = match &mut raw.lines {
            LineVec::Inline(k, a) => {
                *k = n as u8;
                &mut a[..n]
            }
            LineVec::Heap(v) => {
                v.resize(n, NO_LINE);
                v
            }
        };
        let (mut present, mut wire_bytes) = (0, 0);
        for (h, line) in headers.iter().zip(lines) {
            let name = h.name.as_bytes();
            let value = if h.value.is_empty() {
                Some(0)
            } else {
                offset_in(block, h.value)
            };
            let (Some(name_at), Some(value)) = (offset_in(block, name), value) else {
                *slot = None;
                return false;
            };
            if name.is_empty()
                || name.len() > u16::MAX as usize
                || !name.iter().all(|&b| crate::h1::TCHAR[b as usize])
                || !valid_value(h.value)
            {
                *slot = None;
                return false;
            }
            let bit = tracked_bit_token(name);
            *line = Line {
                name: name_at,
                value,
                value_len: h.value.len() as u32,
                name_len: name.len() as u16,
                bit,
            };
            present |= bit;
            wire_bytes += line.wire_len();
        }
        raw.present = present;
        raw.wire_bytes = wire_bytes;
        true
    }

    #[inline]
    fn name(&self, l: &Line) -> &[u8] {
        &self.block[l.name as usize..l.name as usize + l.name_len as usize]
    }

    #[inline]
    fn value(&self, l: &Line) -> &[u8] {
        &self.block[l.value as usize..(l.value + l.value_len) as usize]
    }

    /// Whether line `l` is named `name`, whose tracked bit is `bit`: a
    /// tracked name by its bit, another by comparing the names.
    #[inline]
    fn is(&self, l: &Line, name: &[u8], bit: u16) -> bool {
        if bit != 0 {
            l.bit == bit
        } else {
            l.bit == 0 && self.name(l).eq_ignore_ascii_case(name)
        }
    }

    /// The values of the lines named `name`, in order.
    pub(crate) fn values<'a>(&'a self, name: &'a HeaderName) -> RawValues<'a> {
        self.values_bit(name.as_str(), tracked_bit(name))
    }

    /// The values of the lines named `name` (any case), whose tracked bit
    /// is `bit`.
    fn values_bit<'a>(&'a self, name: &'a str, bit: u16) -> RawValues<'a> {
        let absent = bit != 0 && self.present & bit == 0;
        RawValues {
            raw: self,
            name: name.as_bytes(),
            bit,
            next: if absent { self.lines.len() } else { 0 },
        }
    }

    /// The values of the lines of a tracked name.
    pub(crate) fn values_tracked(&self, name: TrackedName) -> RawValues<'_> {
        self.values_bit(name.name.as_str(), name.bit)
    }

    /// Whether a line is named `name`: the tracked names by their bit.
    pub(crate) fn contains(&self, name: &HeaderName) -> bool {
        match tracked_bit(name) {
            0 => self
                .lines
                .iter()
                .any(|l| self.is(l, name.as_str().as_bytes(), 0)),
            bit => self.present & bit != 0,
        }
    }

    /// Whether any hop-by-hop line is present.
    pub(crate) fn has_hop_by_hop(&self) -> bool {
        self.present & HOP_BY_HOP_BITS != 0
    }

    /// Remove the hop-by-hop lines: the fixed names and those `Connection`
    /// lists (as `WireOrder::remove_hop_by_hop` does for a built map).
    pub(crate) fn remove_hop_by_hop(&mut self) {
        let found = self.present & HOP_BY_HOP_BITS;
        if found == 0 {
            return;
        }
        // The names `Connection` lists (slices of a handle on the block,
        // so that the lines can change meanwhile).
        let block = self.block.clone();
        let listed = if found & CONNECTION_BIT != 0 {
            let lines = &self.lines;
            ListedNames::new(
                lines
                    .iter()
                    .filter(|l| l.bit == CONNECTION_BIT)
                    .map(|l| &block[l.value as usize..(l.value + l.value_len) as usize]),
            )
        } else {
            ListedNames::new(std::iter::empty())
        };
        let drop_bits = HOP_BY_HOP_BITS | listed.bits;
        let mut gone = 0;
        self.lines.retain(|l| {
            let drop = l.bit & drop_bits != 0
                || (l.bit == 0
                    && listed
                        .has_other(&block[l.name as usize..l.name as usize + l.name_len as usize]));
            if drop {
                gone += l.wire_len();
            }
            !drop
        });
        self.wire_bytes -= gone;
        self.present &= !drop_bits;
        self.debug_check();
    }

    /// Remove every line named `name` (any case); returns the first value.
    /// Keep only the lines whose name `keep` says yes to; returns how many
    /// went.
    pub(crate) fn retain_names(&mut self, keep: &mut impl FnMut(&[u8]) -> bool) -> usize {
        // Usually every line stays: find out without rewriting them.
        if self.lines.iter().all(|l| keep(self.name(l))) {
            return 0;
        }
        let before = self.lines.len();
        let block = &self.block;
        self.lines
            .retain(|l| keep(&block[l.name as usize..l.name as usize + l.name_len as usize]));
        let gone = before - self.lines.len();
        if gone > 0 {
            self.present = self.lines.iter().fold(0, |p, l| p | l.bit);
            self.wire_bytes = self.lines.iter().map(Line::wire_len).sum();
        }
        gone
    }

    pub(crate) fn remove<K: http::header::AsHeaderName + Copy>(
        &mut self,
        name: K,
    ) -> Option<HeaderValue> {
        let name = name.as_str();
        let bit = tracked_bit_str(name);
        if bit != 0 && self.present & bit == 0 {
            return None;
        }
        let mut first = None;
        let mut gone = 0;
        let mut keep = std::mem::replace(&mut self.lines, LineVec::Heap(Vec::new()));
        keep.retain(|l| {
            if !self.is(l, name.as_bytes(), bit) {
                return true;
            }
            if first.is_none() {
                first = Some(*l);
            }
            gone += l.wire_len();
            false
        });
        self.lines = keep;
        self.wire_bytes -= gone;
        self.present &= !bit;
        self.debug_check();
        first.map(|l| self.header_value(&l))
    }

    /// Add a line at the end, spelled `spelling`: the block is copied with
    /// the line's bytes after it (the lines so far keep their offsets).
    /// `false`, changing nothing, if the block would outgrow the offsets.
    pub(crate) fn append(
        &mut self,
        spelling: &[u8],
        name: &HeaderName,
        value: &HeaderValue,
    ) -> bool {
        let total = self.block.len() + spelling.len() + value.len();
        if u32::try_from(total).is_err() || spelling.len() > u16::MAX as usize {
            return false;
        }
        let mut b = BytesMut::with_capacity(total);
        b.extend_from_slice(&self.block);
        b.extend_from_slice(spelling);
        b.extend_from_slice(value.as_bytes());
        let name_at = self.block.len() as u32;
        let line = Line {
            name: name_at,
            value: if value.is_empty() {
                0
            } else {
                name_at + spelling.len() as u32
            },
            value_len: value.len() as u32,
            name_len: spelling.len() as u16,
            bit: tracked_bit(name),
        };
        self.block = b.freeze();
        self.present |= line.bit;
        self.wire_bytes += line.wire_len();
        self.lines.push(line);
        self.debug_check();
        true
    }

    /// In debug builds (the tests), that the bits and `wire_bytes` tell
    /// the truth.
    fn debug_check(&self) {
        debug_assert_eq!(
            self.wire_bytes,
            self.lines.iter().map(Line::wire_len).sum::<usize>(),
            "wire length out of step with the lines"
        );
        debug_assert!(
            self.lines.iter().all(|l| {
                std::str::from_utf8(self.name(l)).map_or(0, tracked_bit_str) == l.bit
                    && tracked_bit_token(self.name(l)) == l.bit
            }),
            "a line's tracked bit is wrong"
        );
        debug_assert_eq!(
            self.present,
            self.lines.iter().fold(0, |a, l| a | l.bit),
            "tracked names out of step"
        );
    }

    /// A line's value as a `HeaderValue` (sharing the block).
    fn header_value(&self, l: &Line) -> HeaderValue {
        if l.value_len == 0 {
            return HeaderValue::from_static("");
        }
        let v = self
            .block
            .slice(l.value as usize..(l.value + l.value_len) as usize);
        HeaderValue::from_maybe_shared(v).expect("header value checked when parsed")
    }

    /// Number of lines.
    pub(crate) fn len(&self) -> usize {
        self.lines.len()
    }

    /// Bytes the lines take on the wire.
    pub(crate) fn wire_len(&self) -> usize {
        self.wire_bytes
    }

    /// Write the lines as HTTP/1 `Name: value\r\n`, spelled as received.
    ///
    /// A line that arrived in exactly that form (one space after the
    /// colon, CRLF) is copied from the block as it came, and a run of such
    /// lines next to each other in one copy: a message forwarded with only
    /// its hop-by-hop lines removed goes out in a copy or two.
    pub(crate) fn write_h1<B: BufMut>(&self, buf: &mut B) {
        let block = &self.block[..];
        // The bytes of the block still to copy in one go: [from, to).
        let (mut from, mut to) = (0, 0);
        for l in self.lines.iter() {
            let name = l.name as usize;
            let colon = name + l.name_len as usize;
            let value = l.value as usize;
            let end = value + l.value_len as usize;
            let as_written = l.value_len > 0
                && value == colon + 2
                && block.get(colon..value) == Some(b": ")
                && block.get(end..end + 2) == Some(b"\r\n");
            if as_written && name == to {
                to = end + 2;
                continue;
            }
            buf.put_slice(&block[from..to]);
            if as_written {
                (from, to) = (name, end + 2);
            } else {
                (from, to) = (0, 0);
                buf.put_slice(&block[name..colon]);
                buf.put_slice(b": ");
                buf.put_slice(self.value(l));
                buf.put_slice(b"\r\n");
            }
        }
        buf.put_slice(&block[from..to]);
    }

    /// The map these lines make, without a wire order.
    pub(crate) fn materialize_map(&self) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.lines.len());
        for l in self.lines.iter() {
            let name =
                HeaderName::from_bytes(self.name(l)).expect("header name checked when parsed");
            map.append(name, self.header_value(l));
        }
        map
    }

    /// The map and wire order these lines make.
    pub(crate) fn materialize(&self) -> (HeaderMap, WireOrder) {
        let mut map = HeaderMap::with_capacity(self.lines.len());
        let mut order = WireOrder::with_capacity(self.lines.len());
        for l in self.lines.iter() {
            let raw = self.name(l);
            let name = HeaderName::from_bytes(raw).expect("header name checked when parsed");
            let value = self.header_value(l);
            order.append(
                &mut map,
                CaseHeaderName::from_parsed(raw, name, &self.block),
                value,
            );
        }
        (map, order)
    }
}

/// The values of one name in [`RawLines`].
pub(crate) struct RawValues<'a> {
    raw: &'a RawLines,
    name: &'a [u8],
    bit: u16,
    next: usize,
}

impl<'a> Iterator for RawValues<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        let lines: &'a [Line] = &self.raw.lines;
        let rest = lines.get(self.next..)?;
        // A tracked name by its bit alone; another by comparing names.
        let found = if self.bit != 0 {
            rest.iter().position(|l| l.bit == self.bit)
        } else {
            rest.iter()
                .position(|l| l.bit == 0 && self.raw.name(l).eq_ignore_ascii_case(self.name))
        };
        match found {
            Some(i) => {
                let l = &rest[i];
                self.next += i + 1;
                Some(self.raw.value(l))
            }
            None => {
                self.next = lines.len();
                None
            }
        }
    }
}
