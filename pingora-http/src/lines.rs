//! A message's header lines in one of two states, built (a `HeaderMap`
//! with its wire order) or as parsed ([`RawLines`]), behind one set of
//! methods (`line_methods!`, shared by both header types), and the
//! [`HeaderValues`] iterator that reads either state.

use bytes::{BufMut, Bytes};
use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::case::CaseHeaderName;
use crate::order::{TrackedName, WireOrder};
use crate::raw::{RawLines, RawValues};

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

    /// A copy of the map: built from the raw lines when there is no map
    /// yet (and no view), else the map's clone.
    pub(crate) fn to_map(&self, base: &P) -> HeaderMap {
        match (&self.raw, self.view.get()) {
            (Some(raw), None) => raw.materialize_map(),
            _ => self.view(base).0.headers().clone(),
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
        ///
        /// # Errors
        ///
        /// `InvalidHTTPHeader` if the name or value is not valid in a header;
        /// nothing is added then.
        pub fn append_header<N, V>(&mut self, name: N, value: V) -> pingora_error::Result<bool>
        where
            N: $crate::IntoCaseHeaderName,
            V: TryInto<http::HeaderValue>,
            <V as TryInto<http::HeaderValue>>::Error: Into<pingora_error::Cause>,
        {
            let name = name.into_case_header_name()?;
            let value = $crate::lines::header_value(value)?;
            let existed = self.has_header(name.name());
            self.lines.append(&mut self.base, name, value);
            Ok(existed)
        }

        /// Set a header: every line of that name is replaced by one line, at
        /// the end.
        ///
        /// # Errors
        ///
        /// `InvalidHTTPHeader` if the name or value is not valid in a header;
        /// the existing lines stay then.
        pub fn insert_header<N, V>(&mut self, name: N, value: V) -> pingora_error::Result<()>
        where
            N: $crate::IntoCaseHeaderName,
            V: TryInto<http::HeaderValue>,
            <V as TryInto<http::HeaderValue>>::Error: Into<pingora_error::Cause>,
        {
            let name = name.into_case_header_name()?;
            let value = $crate::lines::header_value(value)?;
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

        /// This header in a box: the box a finished header gave back on
        /// this thread ([`recycle`](Self::recycle)) if there is one, else a
        /// new one. For code that boxes a header per request.
        pub fn boxed(self) -> Box<Self> {
            $crate::spare::boxed(&SPARE, self)
        }

        /// Done with `header`: what it holds is dropped now, and its box is
        /// kept (a few per thread) for the next [`boxed`](Self::boxed).
        pub fn recycle(header: Box<Self>) {
            $crate::spare::recycle(&SPARE, header);
        }

        /// Replace the HTTP version.
        pub fn set_version(&mut self, version: http::Version) {
            if self.base.version == version {
                return;
            }
            self.base.version = version;
            self.lines.changed();
        }

        /// [`write_h1`](Self::write_h1) into a new buffer of the right size.
        pub fn to_wire(&self) -> bytes::Bytes {
            let mut buf = bytes::BytesMut::with_capacity(self.h1_len());
            self.write_h1(&mut buf);
            buf.freeze()
        }

        /// A copy of the header fields as the `http` crate's map (spelling
        /// and wire order are lost): built straight from the lines as
        /// parsed, with no copy of the header and no wire order on the
        /// side (what an HTTP/2 frame needs of a header read over HTTP/1).
        pub fn to_header_map(&self) -> http::HeaderMap {
            self.lines.to_map(&self.base)
        }

        /// Turn into the `http` crate's parts (spelling and order are lost).
        pub fn into_parts(mut self) -> Parts {
            self.lines.settle(&mut self.base);
            self.base
        }

        /// The number of header lines.
        pub fn header_count(&self) -> usize {
            self.lines.len(&self.base.headers)
        }
    };
}
pub(crate) use line_methods;

/// `Deref` to the parts for a header type (reads see the map as edited),
/// and `DerefMut` for direct edits of the parts, as Pingora allows
/// (`req.headers.insert(..)`, `resp.status = ..`): the map is built
/// first, and the wire order follows the map's edits at the next read or
/// edit (lines that stayed keep their place and spelling; values added
/// this way go at the end, spelled as another line of their name or in
/// lowercase). `insert_header` and its kin keep the spelling given and
/// cost less.
macro_rules! header_deref {
    ($ty:ident) => {
        impl std::ops::Deref for $ty {
            type Target = Parts;
            fn deref(&self) -> &Parts {
                self.lines.view(&self.base).0
            }
        }

        /// Direct edits of the parts: see the crate's `header_deref!`
        /// (the map is built first; the wire order follows its edits).
        impl std::ops::DerefMut for $ty {
            fn deref_mut(&mut self) -> &mut Parts {
                self.lines.edit_directly(&mut self.base);
                &mut self.base
            }
        }
    };
}
pub(crate) use header_deref;

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
