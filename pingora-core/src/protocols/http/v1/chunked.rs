//! The chunked transfer coding (RFC 9112 §7.1), decoded strictly.
//!
//! The decoder works on a buffer the caller fills; it takes what it can and
//! says when it needs more. Data comes out as slices of the buffer (no
//! copy). Anything that could be read two ways is an error: a size that is
//! not hex or overflows 64 bits, a chunk line longer than the limit, a
//! control character in an extension, a bare CR or LF where CRLF belongs,
//! data not followed by CRLF, a malformed trailer section.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use pingora_error::{Error, ErrorType::*, Result};

/// What one step of decoding produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Some body bytes.
    Data(Bytes),
    /// The buffer holds no complete next piece: read more and call again.
    NeedMore,
    /// The last chunk and the trailer section were read.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting a chunk-size line.
    Size,
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// After the last chunk: trailer fields, then an empty line.
    Trailers,
    Done,
}

/// Decodes a chunked body from a buffer, keeping its trailer fields.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: State,
    max_line: usize,
    max_trailer_bytes: usize,
    max_trailers: usize,
    trailers: Option<HeaderMap>,
}

fn bad(msg: &'static str) -> Box<Error> {
    Error::explain(InvalidHTTPHeader, msg)
}

/// The whole line before `\n` at `pos`, requiring the CR before it.
fn crlf_line(buf: &[u8], pos: usize) -> Result<&[u8]> {
    if pos == 0 || buf[pos - 1] != b'\r' {
        return Err(bad("chunk line not ended by CRLF"));
    }
    Ok(&buf[..pos - 1])
}

/// Parse `1*HEXDIG [ BWS ";" ext ]` with no CR or LF inside.
fn parse_size_line(line: &[u8]) -> Result<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(bad("chunk size is not hex"));
    }
    let mut size: u64 = 0;
    for &b in &line[..digits] {
        let d = (b as char).to_digit(16).unwrap_or(0) as u64;
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(d))
            .ok_or_else(|| bad("chunk size overflows"))?;
    }
    let rest = &line[digits..];
    let ws = rest
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    let rest = &rest[ws..];
    if rest.is_empty() {
        return Ok(size);
    }
    if rest[0] != b';' {
        return Err(bad("junk after chunk size"));
    }
    // Extensions are ignored, but must not hide control characters.
    if rest.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(bad("control character in chunk extension"));
    }
    Ok(size)
}

impl ChunkedDecoder {
    /// A decoder whose chunk-size lines may be `max_line` bytes long and
    /// whose trailer section may take `max_trailer_bytes` bytes and
    /// `max_trailers` fields.
    pub fn new(max_line: usize, max_trailer_bytes: usize, max_trailers: usize) -> Self {
        ChunkedDecoder {
            state: State::Size,
            max_line,
            max_trailer_bytes,
            max_trailers,
            trailers: None,
        }
    }

    /// Whether the last chunk and trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The trailer fields, once decoding is done (`None` if there were none).
    pub fn take_trailers(&mut self) -> Option<HeaderMap> {
        self.trailers.take()
    }

    /// Take the next piece from the front of `buf`. Returns
    /// [`Decoded::NeedMore`] when `buf` must grow first; errors are final.
    ///
    /// # Errors
    ///
    /// `InvalidHTTPHeader` for bad framing: a size line that is not hex,
    /// overflows or runs past `max_line`, a missing CRLF, a malformed trailer;
    /// `HeaderTooLarge` for trailers past `max_trailer_bytes` or `max_trailers`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded> {
        loop {
            match self.state {
                State::Done => return Ok(Decoded::Done),
                State::Size => {
                    let Some(pos) = find_lf(buf, self.max_line + 2) else {
                        if buf.len() > self.max_line + 1 {
                            return Err(bad("chunk size line too long"));
                        }
                        return Ok(Decoded::NeedMore);
                    };
                    let size = parse_size_line(crlf_line(buf, pos)?)?;
                    buf.advance(pos + 1);
                    self.state = if size == 0 {
                        State::Trailers
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = (buf.len() as u64).min(left) as usize;
                    let data = buf.split_to(n).freeze();
                    self.state = if left == n as u64 {
                        State::DataEnd
                    } else {
                        State::Data(left - n as u64)
                    };
                    return Ok(Decoded::Data(data));
                }
                State::DataEnd => {
                    if buf.len() < 2 {
                        if buf.first().is_some_and(|&b| b != b'\r') {
                            return Err(bad("chunk data not followed by CRLF"));
                        }
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(bad("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    self.state = State::Size;
                }
                State::Trailers => return self.decode_trailers(buf),
            }
        }
    }

    fn decode_trailers(&mut self, buf: &mut BytesMut) -> Result<Decoded> {
        if buf.len() < 2 {
            if buf
                .first()
                .is_some_and(|&b| b != b'\r' && b.is_ascii_control())
            {
                return Err(bad("bad end of chunked body"));
            }
            return Ok(Decoded::NeedMore);
        }
        if &buf[..2] == b"\r\n" {
            buf.advance(2);
            self.state = State::Done;
            return Ok(Decoded::Done);
        }
        // Trailer fields: wait for the empty line that ends them, so that
        // parsing happens once, then check each line strictly.
        let Some(end) = find_header_end(buf, self.max_trailer_bytes) else {
            if buf.len() >= self.max_trailer_bytes {
                return Err(Error::explain(HeaderTooLarge, "trailer section too large"));
            }
            return Ok(Decoded::NeedMore);
        };
        let mut headers = vec![httparse::EMPTY_HEADER; self.max_trailers];
        let parsed = httparse::parse_headers(&buf[..end], &mut headers);
        let fields = match parsed {
            Ok(httparse::Status::Complete((n, fields))) if n == end => fields,
            Err(httparse::Error::TooManyHeaders) => {
                return Err(Error::explain(HeaderTooLarge, "too many trailer fields"))
            }
            _ => return Err(bad("malformed trailer section")),
        };
        if buf[..end]
            .windows(2)
            .filter(|w| w[1] == b'\n')
            .any(|w| w[0] != b'\r')
            || buf[0] == b'\n'
        {
            return Err(bad("trailer line not ended by CRLF"));
        }
        let mut map = HeaderMap::with_capacity(fields.len());
        for f in fields.iter() {
            let name = HeaderName::from_bytes(f.name.as_bytes())
                .map_err(|_| bad("invalid trailer name"))?;
            let value =
                HeaderValue::from_bytes(f.value).map_err(|_| bad("invalid trailer value"))?;
            map.append(name, value);
        }
        buf.advance(end);
        self.trailers = Some(map);
        self.state = State::Done;
        Ok(Decoded::Done)
    }
}

/// Position of the first `\n` within the first `limit` bytes.
fn find_lf(buf: &[u8], limit: usize) -> Option<usize> {
    buf[..buf.len().min(limit)].iter().position(|&b| b == b'\n')
}

/// The length of a header block ending in an empty line (CRLF CRLF, or a
/// bare-LF variant that the strict checks then refuse), if the block is
/// complete and at most `limit` bytes long.
pub(crate) fn find_header_end(buf: &[u8], limit: usize) -> Option<usize> {
    find_header_end_from(buf, 0, limit)
}

/// As [`find_header_end`], but skips the first `from` bytes, which an
/// earlier call already scanned.
pub(crate) fn find_header_end_from(buf: &[u8], from: usize, limit: usize) -> Option<usize> {
    let end = buf.len().min(limit);
    let mut i = from.saturating_sub(2);
    while i < end {
        let off = memchr::memchr(b'\n', &buf[i..end])?;
        let lf = i + off;
        let found = match (buf.get(lf + 1), buf.get(lf + 2)) {
            (Some(b'\n'), _) => lf + 2,
            (Some(b'\r'), Some(b'\n')) => lf + 3,
            _ => {
                i = lf + 1;
                continue;
            }
        };
        // A block that ends past the limit is too large, however it was
        // split into reads.
        return (found <= limit).then_some(found);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], step: usize) -> Result<(Vec<u8>, Option<HeaderMap>)> {
        let mut dec = ChunkedDecoder::new(64, 1024, 16);
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut fed = 0;
        loop {
            match dec.decode(&mut buf)? {
                Decoded::Data(d) => body.extend_from_slice(&d),
                Decoded::Done => return Ok((body, dec.take_trailers())),
                Decoded::NeedMore => {
                    if fed == input.len() {
                        return Err(bad("eof"));
                    }
                    let n = step.min(input.len() - fed);
                    buf.extend_from_slice(&input[fed..fed + n]);
                    fed += n;
                }
            }
        }
    }

    #[test]
    fn decodes_in_any_split() {
        let input = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Sum: 9\r\n\r\n";
        for step in 1..input.len() {
            let (body, trailers) = decode_all(input, step).unwrap();
            assert_eq!(body, b"hello world");
            assert_eq!(trailers.unwrap()["x-sum"], "9");
        }
    }

    #[test]
    fn no_trailers() {
        let (body, t) = decode_all(b"3\r\nabc\r\n0\r\n\r\n", 100).unwrap();
        assert_eq!(body, b"abc");
        assert!(t.is_none());
    }

    #[test]
    fn refuses_ambiguous_input() {
        for bad_input in [
            &b"g\r\n"[..],                     // not hex
            b"-1\r\n",                         // sign
            b"0x5\r\nhello\r\n0\r\n\r\n",      // 0x prefix
            b"11111111111111111\r\n",          // overflows 64 bits
            b"5\nhello\r\n0\r\n\r\n",          // bare LF
            b"5\r\nhello\n0\r\n\r\n",          // data not followed by CRLF
            b"5\r\nhelloXX0\r\n\r\n",          // data too long
            b"5 x\r\nhello\r\n0\r\n\r\n",      // junk after size
            b"5;a\x00b\r\nhello\r\n0\r\n\r\n", // NUL in extension
            b"5;a\rb\r\nhello\r\n0\r\n\r\n",   // bare CR in extension
            b"0\r\nX: 1\n\r\n",                // bare LF in trailer
            b"0\r\nX : 1\r\n\r\n",             // space before colon
            b"0\r\nX: 1\r\n folded\r\n\r\n",   // obs-fold
        ] {
            assert!(
                decode_all(bad_input, 1).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad_input)
            );
            assert!(
                decode_all(bad_input, 1000).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad_input)
            );
        }
    }

    #[test]
    fn long_extension_is_refused() {
        let mut input = b"5;".to_vec();
        input.extend(std::iter::repeat_n(b'a', 200));
        input.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
        assert!(decode_all(&input, 7).is_err());
    }

    #[test]
    fn header_end() {
        assert_eq!(find_header_end(b"a\r\n\r\nrest", 100), Some(5));
        assert_eq!(find_header_end(b"a\n\nrest", 100), Some(3));
        assert_eq!(find_header_end(b"a\r\nb", 100), None);
        let buf = b"GET / HTTP/1.1\r\nA: b\r\n\r\n";
        for from in 0..buf.len() {
            assert_eq!(
                find_header_end_from(buf, from.min(buf.len() - 4), 100),
                Some(buf.len())
            );
        }
    }
}
