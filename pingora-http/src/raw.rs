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
    present: u16,
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

/// The `http` crate's request and response parts, for [`Lines`].
pub(crate) trait PartsHeaders: Clone {
    fn headers(&self) -> &HeaderMap;
    fn headers_mut(&mut self) -> &mut HeaderMap;
}

impl PartsHeaders for http::request::Parts {
    fn headers(&self) -> &HeaderMap {
        &self.headers
    }
    fn headers_mut(&mut self) -> &mut HeaderMap {
        &mut self.headers
    }
}

impl PartsHeaders for http::response::Parts {
    fn headers(&self) -> &HeaderMap {
        &self.headers
    }
    fn headers_mut(&mut self) -> &mut HeaderMap {
        &mut self.headers
    }
}

/// A message's header lines, in one of two states. *Built*: the lines are
/// in the parts' `HeaderMap` and `order` (`raw` is `None`). *As parsed*:
/// they are in `raw`, the parts' map is empty, and `view` holds, once
/// something asked to read the parts, a copy of them with the map built.
/// An edit of the lines builds the map in place first (`settle`).
#[derive(Debug)]
pub(crate) struct Lines<P> {
    pub(crate) order: WireOrder,
    pub(crate) raw: Option<RawLines>,
    view: std::sync::OnceLock<Box<(P, WireOrder)>>,
    /// `Some` once the map was edited directly (through `DerefMut`), so
    /// that `order` may be out of step with it: an edit of ours brings it
    /// back first ([`sync`](Self::sync)); a read uses the order brought
    /// back in step in here (built on the first read). Boxed: nothing to
    /// drop in the common case.
    stale: Option<Box<std::sync::OnceLock<WireOrder>>>,
}

/// A copy leaves the view behind (it is rebuilt if the copy is read):
/// copying the request for the upstream must not copy a map.
impl<P> Clone for Lines<P> {
    fn clone(&self) -> Self {
        Lines {
            order: self.order.clone(),
            raw: self.raw.clone(),
            view: std::sync::OnceLock::new(),
            stale: self.stale.as_ref().map(|_| Box::default()),
        }
    }
}

impl<P: PartsHeaders> Lines<P> {
    /// Lines already in the parts' map, in this order.
    pub(crate) fn built(order: WireOrder) -> Self {
        Lines {
            order,
            raw: None,
            view: std::sync::OnceLock::new(),
            stale: None,
        }
    }

    /// The parts' map is about to be edited directly (`DerefMut`): build
    /// it, and treat the order as out of step until the next edit of ours
    /// or read.
    pub(crate) fn edit_directly(&mut self, base: &mut P) {
        self.settle(base);
        self.stale = Some(Box::default());
        self.view.take();
    }

    /// After a direct edit of `map`: bring the order back in step.
    #[inline]
    fn sync(&mut self, map: &HeaderMap) {
        if let Some(mut synced) = self.stale.take() {
            match synced.take() {
                Some(o) => self.order = o,
                None => self.order.resync(map),
            }
        }
    }

    /// The order to read beside `map` (the parts' built map).
    #[inline]
    fn order_in(&self, map: &HeaderMap) -> &WireOrder {
        match &self.stale {
            None => &self.order,
            Some(synced) => synced.get_or_init(|| {
                let mut o = self.order.clone();
                o.resync(map);
                o
            }),
        }
    }

    /// The lines httparse found in `block`, as parsed, in place of these
    /// (which must be built and empty); `false` when they must be built
    /// instead (see [`RawLines::parse_into`]).
    pub(crate) fn parse_into(&mut self, headers: &[httparse::Header<'_>], block: &Bytes) -> bool {
        self.stale = None;
        RawLines::parse_into(&mut self.raw, headers, block)
    }

    /// An empty table for [`crate::h1`] to parse into, in place of these
    /// lines (which must be built and empty).
    pub(crate) fn parse_in_place(&mut self) -> &mut RawLines {
        self.stale = None;
        self.raw.insert(RawLines::empty())
    }

    /// The parts with their map, and the wire order: `base` itself once
    /// built, else the view (built on the first call).
    pub(crate) fn view<'a>(&'a self, base: &'a P) -> (&'a P, &'a WireOrder) {
        match &self.raw {
            None => (base, self.order_in(base.headers())),
            Some(raw) => {
                let v = self.view.get_or_init(|| {
                    let mut p = base.clone();
                    let (map, order) = raw.materialize();
                    *p.headers_mut() = map;
                    Box::new((p, order))
                });
                (&v.0, &v.1)
            }
        }
    }

    /// Build the map into `base` (taking it from the view if there is
    /// one), for an edit; returns the wire order to edit beside it.
    pub(crate) fn settle(&mut self, base: &mut P) -> &mut WireOrder {
        if let Some(raw) = self.raw.take() {
            let (map, order) = match self.view.take() {
                Some(v) => {
                    let (mut p, order) = *v;
                    (std::mem::take(p.headers_mut()), order)
                }
                None => raw.materialize(),
            };
            *base.headers_mut() = map;
            self.order = order;
        }
        self.sync(base.headers());
        &mut self.order
    }

    /// Whether the map exists: built, or as parsed with a view.
    pub(crate) fn map_built(&self) -> bool {
        self.raw.is_none() || self.view.get().is_some()
    }

    /// `base` changed (method, URI, status, version, or the raw lines):
    /// a view built before is out of date.
    pub(crate) fn changed(&mut self) {
        self.view.take();
    }

    /// Add a line at the end: to the parsed lines while there are (a value
    /// marked sensitive, for HPACK, builds the map to keep the mark).
    pub(crate) fn append(&mut self, base: &mut P, name: CaseHeaderName, value: HeaderValue) {
        if let Some(raw) = &mut self.raw {
            if !value.is_sensitive() && raw.append(name.as_bytes(), name.name(), &value) {
                self.changed();
                return;
            }
        }
        let order = self.settle(base);
        order.append(base.headers_mut(), name, value);
    }

    /// Replace every line of this name with one line at the end.
    pub(crate) fn insert(&mut self, base: &mut P, name: CaseHeaderName, value: HeaderValue) {
        if self.raw.is_some() {
            self.remove(base.headers_mut(), name.name());
            self.append(base, name, value);
            return;
        }
        self.sync(base.headers());
        self.order.insert(base.headers_mut(), name, value);
    }

    /// Remove every line named `name`; returns the first value. `map` is
    /// the parts' map (used once built).
    pub(crate) fn remove<K: http::header::AsHeaderName + Copy>(
        &mut self,
        map: &mut HeaderMap,
        name: K,
    ) -> Option<HeaderValue> {
        match &mut self.raw {
            Some(raw) => {
                let first = raw.remove(name);
                if first.is_some() {
                    self.changed();
                }
                first
            }
            None => {
                self.sync(map);
                self.order.remove(map, name)
            }
        }
    }

    /// Keep only the lines whose name `keep` says yes to; returns how many
    /// went.
    pub(crate) fn retain_names(
        &mut self,
        map: &mut HeaderMap,
        mut keep: impl FnMut(&[u8]) -> bool,
    ) -> usize {
        match &mut self.raw {
            Some(raw) => {
                let gone = raw.retain_names(&mut keep);
                if gone > 0 {
                    self.changed();
                }
                gone
            }
            None => {
                self.sync(map);
                let names: Vec<HeaderName> = map
                    .keys()
                    .filter(|n| !keep(n.as_str().as_bytes()))
                    .cloned()
                    .collect();
                names
                    .iter()
                    .map(|n| {
                        let lines = map.get_all(n).iter().count();
                        self.order.remove(map, n);
                        lines
                    })
                    .sum()
            }
        }
    }

    /// Remove the hop-by-hop lines (see `RequestHeader::remove_hop_by_hop`).
    pub(crate) fn remove_hop_by_hop(&mut self, map: &mut HeaderMap) {
        match &mut self.raw {
            Some(raw) => {
                if raw.has_hop_by_hop() {
                    raw.remove_hop_by_hop();
                    self.changed();
                }
            }
            None => {
                self.sync(map);
                self.order.remove_hop_by_hop(map)
            }
        }
    }

    /// Whether any hop-by-hop line is present.
    pub(crate) fn has_hop_by_hop(&self, map: &HeaderMap) -> bool {
        match &self.raw {
            Some(raw) => raw.has_hop_by_hop(),
            None => self.order_in(map).has_hop_by_hop(),
        }
    }

    /// Whether a line is named `name`.
    pub(crate) fn contains(&self, map: &HeaderMap, name: &HeaderName) -> bool {
        match &self.raw {
            Some(raw) => raw.contains(name),
            None => self.order_in(map).contains(map, name),
        }
    }

    /// Whether a line of a tracked name is present: one bit test.
    #[inline]
    pub(crate) fn contains_tracked(&self, map: &HeaderMap, name: TrackedName) -> bool {
        match &self.raw {
            Some(raw) => raw.present & name.bit != 0,
            None => self.order_in(map).has_bit(name.bit),
        }
    }

    /// The values of a tracked name.
    pub(crate) fn values_tracked<'a>(
        &'a self,
        map: &'a HeaderMap,
        name: TrackedName,
    ) -> HeaderValues<'a> {
        match &self.raw {
            Some(raw) => HeaderValues(ValuesInner::Raw(raw.values_tracked(name))),
            None => HeaderValues(ValuesInner::Map(map.get_all(name.name).iter())),
        }
    }

    /// Number of lines.
    pub(crate) fn len(&self, map: &HeaderMap) -> usize {
        match &self.raw {
            Some(raw) => raw.len(),
            None => self.order_in(map).len(),
        }
    }

    /// Bytes the lines take on the wire.
    pub(crate) fn wire_len(&self, map: &HeaderMap) -> usize {
        match &self.raw {
            Some(raw) => raw.wire_len(),
            None => self.order_in(map).wire_len(),
        }
    }

    /// Write the lines as HTTP/1.
    pub(crate) fn write_h1<B: BufMut>(&self, map: &HeaderMap, buf: &mut B) {
        match &self.raw {
            Some(raw) => raw.write_h1(buf),
            None => self.order_in(map).write_h1(map, buf),
        }
    }

    /// The values of the lines named `name`, in order, without building
    /// the map. `map` is the parts' map (used once built).
    pub(crate) fn values<'a>(
        &'a self,
        map: &'a HeaderMap,
        name: &'a HeaderName,
    ) -> HeaderValues<'a> {
        match &self.raw {
            Some(raw) => HeaderValues(ValuesInner::Raw(raw.values(name))),
            None => HeaderValues(ValuesInner::Map(map.get_all(name).iter())),
        }
    }
}

/// Names the type; its state is not shown.
impl<'a> std::fmt::Debug for HeaderValues<'a> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderValues").finish_non_exhaustive()
    }
}

/// The values of one header name, in order, as bytes: see
/// [`RequestHeader::header_values`](crate::RequestHeader::header_values).
pub struct HeaderValues<'a>(ValuesInner<'a>);

enum ValuesInner<'a> {
    Map(http::header::ValueIter<'a, HeaderValue>),
    Raw(RawValues<'a>),
}

impl<'a> Iterator for HeaderValues<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        match &mut self.0 {
            ValuesInner::Map(it) => it.next().map(HeaderValue::as_bytes),
            ValuesInner::Raw(it) => it.next(),
        }
    }
}

impl<'a> HeaderValues<'a> {
    /// The values of `name` in a plain `HeaderMap`.
    pub fn from_map(map: &'a HeaderMap, name: &HeaderName) -> Self {
        HeaderValues(ValuesInner::Map(map.get_all(name).iter()))
    }

    /// The first value as text, if there is one and it is visible ASCII,
    /// spaces and tabs only (as `HeaderValue::to_str` requires).
    pub fn first_str(mut self) -> Option<&'a str> {
        self.next()
            .filter(|v| v.iter().all(|&b| (0x20..0x7f).contains(&b) || b == b'\t'))
            .and_then(|v| std::str::from_utf8(v).ok())
    }
}

/// The line methods `RequestHeader` and `ResponseHeader` share, written
/// once: both keep their parts in `base` and their lines in `lines`.
macro_rules! line_methods {
    ($what:literal) => {
        /// Add a header line at the end, keeping any others of the same
        /// name. `Ok(true)` when a line of that name was already there (as
        /// `HeaderMap::append` and Pingora's).
        pub fn append_header<N, V>(&mut self, name: N, value: V) -> pingora_error::Result<bool>
        where
            N: $crate::IntoCaseHeaderName,
            V: TryInto<http::HeaderValue>,
            <V as TryInto<http::HeaderValue>>::Error: Into<pingora_error::Cause>,
        {
            let name = name.into_case_header_name()?;
            let value = $crate::raw::header_value(value)?;
            let existed = self.has_header(name.name());
            self.lines.append(&mut self.base, name, value);
            Ok(existed)
        }

        /// Set a header: every line of that name is replaced by one line, at
        /// the end.
        pub fn insert_header<N, V>(&mut self, name: N, value: V) -> pingora_error::Result<()>
        where
            N: $crate::IntoCaseHeaderName,
            V: TryInto<http::HeaderValue>,
            <V as TryInto<http::HeaderValue>>::Error: Into<pingora_error::Cause>,
        {
            let name = name.into_case_header_name()?;
            let value = $crate::raw::header_value(value)?;
            self.lines.insert(&mut self.base, name, value);
            Ok(())
        }

        /// Remove every line of this name; returns the first value, if any.
        /// Takes `&HeaderName` (no parsing) or `&str`, as Pingora's does.
        pub fn remove_header<'a, N: ?Sized>(&mut self, name: &'a N) -> Option<http::HeaderValue>
        where
            &'a N: http::header::AsHeaderName,
        {
            self.lines.remove(&mut self.base.headers, name)
        }

        /// Keep only the header lines whose name (as received, any case)
        /// `keep` says yes to, in order; returns how many lines went.
        pub fn retain_header_names(&mut self, keep: impl FnMut(&[u8]) -> bool) -> usize {
            self.lines.retain_names(&mut self.base.headers, keep)
        }

        /// Remove every hop-by-hop header (RFC 9110 §7.6.1), as a proxy must
        /// before forwarding: Connection, Keep-Alive, Proxy-Connection,
        /// Proxy-Authenticate, Proxy-Authorization, TE, Trailer,
        /// Transfer-Encoding, Upgrade, and every header that Connection names.
        /// Costs one bit test when there are none.
        pub fn remove_hop_by_hop(&mut self) {
            self.lines.remove_hop_by_hop(&mut self.base.headers);
        }

        #[doc = concat!("Whether the ", $what, " has any hop-by-hop header (RFC 9110 §7.6.1:")]
        /// Connection, Keep-Alive, Proxy-Connection, Proxy-Authenticate,
        /// Proxy-Authorization, TE, Trailer, Transfer-Encoding, Upgrade), which
        /// a proxy must not forward; answered without a lookup.
        pub fn has_hop_by_hop(&self) -> bool {
            self.lines.has_hop_by_hop(&self.base.headers)
        }

        #[doc = concat!("Whether the ", $what, " has a header of this name. The names HTTP")]
        /// framing and proxies ask about (Content-Length, Transfer-Encoding,
        /// Connection, Upgrade, Expect, TE, Trailer, Host, and the hop-by-hop
        /// Keep-Alive, Proxy-Connection, Proxy-Authenticate,
        /// Proxy-Authorization) are answered without a lookup.
        pub fn has_header(&self, name: &http::HeaderName) -> bool {
            self.lines.contains(&self.base.headers, name)
        }

        /// [`has_header`](Self::has_header) for one of the
        /// [`tracked`]($crate::tracked) names: one bit test.
        #[inline]
        pub fn has_tracked(&self, name: $crate::TrackedName) -> bool {
            self.lines.contains_tracked(&self.base.headers, name)
        }

        /// [`header_values`](Self::header_values) for one of the
        /// [`tracked`]($crate::tracked) names, without looking the name up.
        pub fn tracked_values(&self, name: $crate::TrackedName) -> $crate::HeaderValues<'_> {
            self.lines.values_tracked(&self.base.headers, name)
        }

        /// The values of the lines named `name`, in order, as bytes; unlike
        /// `headers.get_all(name)`, this does not build the map of a header
        /// still as parsed.
        pub fn header_values<'a>(&'a self, name: &'a http::HeaderName) -> $crate::HeaderValues<'a> {
            self.lines.values(&self.base.headers, name)
        }

        /// The header lines in wire order, each with its original spelling.
        pub fn headers_in_order(&self) -> impl Iterator<Item = (&[u8], &http::HeaderValue)> {
            let (base, order) = self.lines.view(&self.base);
            order.iter(&base.headers)
        }

        #[doc = concat!("Whether this ", $what, "'s `HeaderMap` exists: `false` for a header parsed")]
        /// from HTTP/1 that nothing has read through `Deref` or edited yet.
        /// For tests and diagnostics (a proxy that forwards without reading
        /// `headers` should never build it).
        pub fn map_built(&self) -> bool {
            self.lines.map_built()
        }

        #[doc = concat!("A copy of this ", $what, "'s parts (its map built), as Pingora's:")]
        /// for code that wants an `http` type to keep or hand on.
        pub fn as_owned_parts(&self) -> <Self as std::ops::Deref>::Target {
            std::ops::Deref::deref(self).clone()
        }

        /// Build the map in place now (the tests compare both states).
        #[cfg(test)]
        pub(crate) fn build_map_now(&mut self) {
            self.lines.settle(&mut self.base);
        }

        /// The number of header lines.
        pub fn header_count(&self) -> usize {
            self.lines.len(&self.base.headers)
        }
    };
}
pub(crate) use line_methods;

/// A header value from anything that converts to one; the error names it.
pub(crate) fn header_value<V>(value: V) -> pingora_error::Result<HeaderValue>
where
    V: TryInto<HeaderValue>,
    <V as TryInto<HeaderValue>>::Error: Into<pingora_error::Cause>,
{
    use pingora_error::OrErr;
    value.try_into().or_err(
        pingora_error::ErrorType::InvalidHTTPHeader,
        "invalid header value",
    )
}
