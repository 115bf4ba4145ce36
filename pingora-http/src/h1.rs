//! HTTP/1 message heads parsed in one pass, straight into the line table.
//!
//! Before this, a head was parsed twice over: `httparse` found the request
//! or status line and a `(name, value)` slice pair per line, then a second
//! loop turned those slices back into offsets, looked up each name's
//! tracked bit and summed the wire length. Here one walk over the bytes
//! does all of it, and the lines go into the table they are read from.
//!
//! The rules are the ones `httparse` applies with its default
//! configuration, byte for byte (the differential test in `tests.rs`
//! holds the two side by side on generated and mutated heads):
//!
//! - empty lines before the start line are skipped (RFC 9112 §2.2);
//! - a request line is `token SP target SP HTTP/1.x`, one space each, the
//!   target of visible ASCII (and UTF-8 above it);
//! - a status line is `HTTP/1.x SP 3DIGIT`, then a space and a reason of
//!   HTAB, SP, VCHAR and obs-text (a reason with obs-text is read as
//!   empty), or the line's end;
//! - a field line is a token, `:` with no space before it, optional
//!   whitespace, and a value of HTAB, SP, VCHAR and obs-text, trailing
//!   whitespace trimmed; no obs-fold;
//! - a line ends in CRLF or a bare LF; a CR anywhere else is refused.
//!
//! Values are scanned eight bytes at a time: one subtraction finds a byte
//! below 0x20 (a control, the line's end, or a tab to step over), one more
//! finds DEL; bytes at 0x80 and up (obs-text) pass.

use crate::order::tracked_bit_token;
use crate::raw::{Line, RawLines};

/// Why a head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bad {
    /// The method is not a token, or is not followed by one space.
    Method,
    /// The request target is empty or holds a byte it may not.
    Target,
    /// Not `HTTP/1.0` or `HTTP/1.1`.
    Version,
    /// The status code or reason phrase is malformed.
    Status,
    /// A field name is empty, holds a non-token byte, or has space before
    /// its colon (or a line starts with whitespace: obs-fold).
    Name,
    /// A field value holds a control byte or a bare CR.
    Value,
    /// A line does not end in CRLF or LF.
    NewLine,
    /// More field lines than allowed.
    TooMany,
}

impl Bad {
    /// What to say about it.
    pub(crate) fn explain(self) -> &'static str {
        match self {
            Bad::Method => "malformed header: invalid method",
            Bad::Target => "malformed header: invalid request target",
            Bad::Version => "unsupported HTTP version",
            Bad::Status => "malformed header: invalid status line",
            Bad::Name => "malformed header: invalid field name",
            Bad::Value => "malformed header: invalid field value",
            Bad::NewLine => "malformed header: invalid line ending",
            Bad::TooMany => "too many header fields",
        }
    }
}

/// The error a caller reports for `bad`.
pub(crate) fn error(bad: Bad) -> Box<pingora_error::Error> {
    let etype = match bad {
        Bad::TooMany => pingora_error::ErrorType::HeaderTooLarge,
        _ => pingora_error::ErrorType::InvalidHTTPHeader,
    };
    pingora_error::Error::explain(etype, bad.explain())
}

/// A parse step's outcome: `Ok(None)` when the bytes end first.
type Step<T> = Result<Option<T>, Bad>;

/// The request line, as offsets into the parsed bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestLine {
    pub(crate) method: (usize, usize),
    pub(crate) target: (usize, usize),
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub(crate) minor: u8,
}

/// The status line, as parsed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StatusLine {
    pub(crate) code: u16,
    /// Empty when there was none, or it held obs-text.
    pub(crate) reason: (usize, usize),
    pub(crate) minor: u8,
}

/// A head parsed: its start line and its length (the offset of the
/// first body byte). The field lines went into the caller's table.
#[derive(Debug)]
pub(crate) struct Head<S> {
    pub(crate) start: S,
    pub(crate) len: usize,
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// The high bit of the first byte of `x` (in memory order) that is below
/// `n` (at most 0x80) or is DEL, and maybe of bytes after it (a borrow
/// from a flagged byte can flag the next; never one before it).
#[inline(always)]
fn flags(x: u64, n: u8) -> u64 {
    let below = x.wrapping_sub(LO * n as u64) & !x;
    let y = x ^ (LO * 0x7f);
    let del = y.wrapping_sub(LO) & !y;
    (below | del) & HI
}

/// The first byte at or after `i` that is below `n` or DEL, or `b.len()`.
#[inline(always)]
fn scan(b: &[u8], mut i: usize, n: u8) -> usize {
    while let Some(chunk) = b.get(i..i + 8) {
        let mut w = [0; 8];
        w.copy_from_slice(chunk);
        let m = flags(u64::from_le_bytes(w), n);
        if m != 0 {
            return i + (m.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < b.len() && b[i] >= n && b[i] != 0x7f {
        i += 1;
    }
    i
}

/// The high bit of each byte of `x` that is not an ASCII letter, digit or
/// `-` (what nearly every field name is made of), exactly: the sums stay
/// within their bytes, so no byte's answer depends on another's.
#[inline(always)]
fn not_name_fast(x: u64) -> u64 {
    let a = x & !HI;
    let folded = a | (LO * 0x20);
    let alpha = folded.wrapping_add(LO * (0x80 - b'a' as u64))
        & !folded.wrapping_add(LO * (0x80 - b'z' as u64 - 1));
    let digit =
        a.wrapping_add(LO * (0x80 - b'0' as u64)) & !a.wrapping_add(LO * (0x80 - b'9' as u64 - 1));
    let dash = !(a ^ (LO * b'-' as u64)).wrapping_add(LO * 0x7f);
    !((alpha | digit | dash) & !x) & HI
}

/// The end of a field value or reason phrase from `i`: the first control
/// byte other than a tab (or DEL); `None` if the bytes end first.
#[inline(always)]
fn text_end(b: &[u8], mut i: usize) -> Option<usize> {
    loop {
        i = scan(b, i, 0x20);
        match b.get(i)? {
            b'\t' => i += 1,
            _ => return Some(i),
        }
    }
}

/// The first byte at or after `i` that is not a token byte, or `b.len()`:
/// eight bytes at a time while they are letters, digits and `-`.
#[inline(always)]
fn token_end(b: &[u8], mut i: usize) -> usize {
    while let Some(chunk) = b.get(i..i + 8) {
        let mut w = [0; 8];
        w.copy_from_slice(chunk);
        let m = not_name_fast(u64::from_le_bytes(w));
        if m == 0 {
            i += 8;
            continue;
        }
        i += (m.trailing_zeros() / 8) as usize;
        // Another token byte (`_`, `.`, …) goes on; anything else ends it.
        if !TCHAR[b[i] as usize] {
            return i;
        }
        i += 1;
    }
    while i < b.len() && TCHAR[b[i] as usize] {
        i += 1;
    }
    i
}

/// The position after the line end at `i` (CRLF or LF); `err` for
/// anything else there.
#[inline(always)]
fn newline(b: &[u8], i: usize, err: Bad) -> Step<usize> {
    match b.get(i) {
        Some(b'\n') => Ok(Some(i + 1)),
        Some(b'\r') => match b.get(i + 1) {
            Some(b'\n') => Ok(Some(i + 2)),
            Some(_) => Err(err),
            None => Ok(None),
        },
        Some(_) => Err(err),
        None => Ok(None),
    }
}

/// Skip empty lines before the start line.
fn skip_empty_lines(b: &[u8]) -> Step<usize> {
    let mut i = 0;
    loop {
        match b.get(i) {
            Some(b'\n') => i += 1,
            Some(b'\r') => match b.get(i + 1) {
                Some(b'\n') => i += 2,
                Some(_) => return Err(Bad::NewLine),
                None => return Ok(None),
            },
            Some(_) => return Ok(Some(i)),
            None => return Ok(None),
        }
    }
}

/// `HTTP/1.0` or `HTTP/1.1` at `i`: the minor version and the position
/// after it.
fn version(b: &[u8], i: usize) -> Step<(u8, usize)> {
    const PREFIX: &[u8] = b"HTTP/1.";
    match b.get(i..i + 8) {
        Some(b"HTTP/1.1") => Ok(Some((1, i + 8))),
        Some(b"HTTP/1.0") => Ok(Some((0, i + 8))),
        Some(_) => Err(Bad::Version),
        None => {
            // Short: partial only while what is there could still be one
            // (the minor digit itself is judged once it is there, with
            // the rest).
            let rest = &b[i.min(b.len())..];
            let n = rest.len().min(PREFIX.len());
            if rest[..n] == PREFIX[..n] {
                Ok(None)
            } else {
                Err(Bad::Version)
            }
        }
    }
}

/// The field lines from `i` to the empty line that ends the head, into
/// `out`; the position after it.
fn fields(b: &[u8], mut i: usize, max: usize, out: &mut RawLines) -> Step<usize> {
    loop {
        let name_at = i;
        // The empty line, or a name.
        match b.get(i) {
            None => return Ok(None),
            Some(b'\r' | b'\n') => return newline(b, i, Bad::NewLine),
            Some(_) => {}
        }
        i = token_end(b, i);
        match b.get(i) {
            None => return Ok(None),
            Some(b':') if i > name_at => {}
            Some(_) => return Err(Bad::Name),
        }
        let name_len = i - name_at;
        i += 1;
        // Whitespace before the value.
        while matches!(b.get(i), Some(b' ' | b'\t')) {
            i += 1;
        }
        let value_at = i;
        // The value, to the first control byte.
        let Some(end) = text_end(b, i) else {
            return Ok(None);
        };
        i = end;
        let mut value_end = i;
        let Some(next) = newline(b, i, Bad::Value)? else {
            return Ok(None);
        };
        i = next;
        while value_end > value_at && matches!(b[value_end - 1], b' ' | b'\t') {
            value_end -= 1;
        }
        if out.len() >= max {
            return Err(Bad::TooMany);
        }
        if name_len > u16::MAX as usize {
            return Err(Bad::Name);
        }
        let value_len = value_end - value_at;
        out.push_parsed(Line {
            name: name_at as u32,
            value: if value_len == 0 { 0 } else { value_at as u32 },
            value_len: value_len as u32,
            name_len: name_len as u16,
            bit: tracked_bit_token(&b[name_at..name_at + name_len]),
        });
    }
}

/// Parse a request head at the start of `b`, with at most `max` field
/// lines, those into `out` (empty). Offsets are `u32`s: callers keep `b`
/// under 4 GiB.
pub(crate) fn request(b: &[u8], max: usize, out: &mut RawLines) -> Step<Head<RequestLine>> {
    let Some(mut i) = skip_empty_lines(b)? else {
        return Ok(None);
    };
    // The method: a token, then one space.
    let method_at = i;
    if b[i..].starts_with(b"GET ") {
        i += 3;
    } else {
        i = token_end(b, i);
        match b.get(i) {
            None => return Ok(None),
            Some(b' ') if i > method_at => {}
            Some(_) => return Err(Bad::Method),
        }
    }
    let method = (method_at, i);
    i += 1;
    // The target: visible ASCII or bytes above it, then one space.
    let target_at = i;
    i = scan(b, i, 0x21);
    match b.get(i) {
        None => return Ok(None),
        Some(b' ') if i > target_at => {}
        Some(_) => return Err(Bad::Target),
    }
    let target = &b[target_at..i];
    if !target.is_ascii() && std::str::from_utf8(target).is_err() {
        return Err(Bad::Target);
    }
    let target = (target_at, i);
    i += 1;
    let Some((minor, after)) = version(b, i)? else {
        return Ok(None);
    };
    let Some(i) = newline(b, after, Bad::NewLine)? else {
        return Ok(None);
    };
    let Some(len) = fields(b, i, max, out)? else {
        return Ok(None);
    };
    Ok(Some(Head {
        start: RequestLine {
            method,
            target,
            minor,
        },
        len,
    }))
}

/// Parse a response head at the start of `b`, with at most `max` field
/// lines, those into `out` (empty).
pub(crate) fn response(b: &[u8], max: usize, out: &mut RawLines) -> Step<Head<StatusLine>> {
    let Some(i) = skip_empty_lines(b)? else {
        return Ok(None);
    };
    let Some((minor, mut i)) = version(b, i)? else {
        return Ok(None);
    };
    match b.get(i) {
        None => return Ok(None),
        Some(b' ') => i += 1,
        Some(_) => return Err(Bad::Version),
    }
    let mut code = 0u16;
    for _ in 0..3 {
        match b.get(i) {
            None => return Ok(None),
            Some(d @ b'0'..=b'9') => code = code * 10 + u16::from(d - b'0'),
            Some(_) => return Err(Bad::Status),
        }
        i += 1;
    }
    let mut reason = (i, i);
    match b.get(i) {
        None => return Ok(None),
        Some(b' ') => {
            i += 1;
            let at = i;
            let Some(end) = text_end(b, i) else {
                return Ok(None);
            };
            i = end;
            reason = if b[at..i].is_ascii() { (at, i) } else { (i, i) };
            let Some(next) = newline(b, i, Bad::Status)? else {
                return Ok(None);
            };
            i = next;
        }
        Some(b'\r' | b'\n') => {
            let Some(next) = newline(b, i, Bad::Status)? else {
                return Ok(None);
            };
            i = next;
        }
        Some(_) => return Err(Bad::Status),
    }
    let Some(len) = fields(b, i, max, out)? else {
        return Ok(None);
    };
    Ok(Some(Head {
        start: StatusLine {
            code,
            reason,
            minor,
        },
        len,
    }))
}

/// The bytes of a token (RFC 9110 §5.6.2): field names and methods.
pub(crate) static TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    t
};

#[cfg(test)]
mod tests;
