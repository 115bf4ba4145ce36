//! The one-pass parser against its rules and against httparse.

use super::*;

#[test]
fn the_name_scan_stops_at_the_first_non_token_byte() {
    for c in 0..=255u8 {
        let fast = c.is_ascii_alphanumeric() || c == b'-';
        let x = u64::from_le_bytes([b'a', c, b'Z', b'0', b'-', b'9', b'z', b'A']);
        assert_eq!(not_name_fast(x), if fast { 0 } else { 0x8000 }, "{c:#x}");
        for at in 0..20 {
            let mut v = vec![b'n'; 20];
            v[at] = c;
            let end = if TCHAR[c as usize] { 20 } else { at };
            assert_eq!(token_end(&v, 0), end, "{c:#x} at {at}");
        }
    }
}

#[test]
fn scan_finds_the_first_control_byte() {
    let mut v = vec![b'a'; 40];
    for at in 0..40 {
        for bad in [0u8, b'\t', b'\r', b'\n', 0x1f, 0x7f] {
            v[at] = bad;
            assert_eq!(scan(&v, 0, 0x20), at, "{bad:#x} at {at}");
            v[at] = b'a';
        }
        // A space passes for a value, stops a target.
        v[at] = b' ';
        assert_eq!(scan(&v, 0, 0x20), 40);
        assert_eq!(scan(&v, 0, 0x21), at);
        // obs-text passes.
        v[at] = 0x80;
        assert_eq!(scan(&v, 0, 0x20), 40);
        v[at] = 0xff;
        assert_eq!(scan(&v, 0, 0x21), 40);
        v[at] = b'a';
    }
    // Two flagged bytes: the first is found, whatever follows.
    let mut w = *b"ab\x01\x00\x7fcdefgh";
    assert_eq!(scan(&w, 0, 0x20), 2);
    w[2] = b'c';
    assert_eq!(scan(&w, 0, 0x20), 3);
}

#[test]
fn a_request_head_in_one_pass() {
    let b = b"\r\nPOST /a?b HTTP/1.0\r\nHost: x\r\nContent-Length:  5 \t\r\nX-E:\r\n\r\nbody";
    let mut out = RawLines::empty();
    let h = request(b, 10, &mut out).unwrap().unwrap();
    assert_eq!(&b[h.start.method.0..h.start.method.1], b"POST");
    assert_eq!(&b[h.start.target.0..h.start.target.1], b"/a?b");
    assert_eq!(h.start.minor, 0);
    assert_eq!(&b[h.len..], b"body");
    let l = out.lines();
    assert_eq!(l.len(), 3);
    assert_eq!(
        &b[l[1].value as usize..(l[1].value + l[1].value_len) as usize],
        b"5"
    );
    assert_eq!(l[2].value_len, 0);
    assert_eq!(out.wire_len(), 9 + 19 + 7);
    // Every proper prefix is partial.
    for n in 0..h.len {
        let partial = request(&b[..n], 10, &mut RawLines::empty());
        assert!(matches!(partial, Ok(None)), "prefix {n}");
    }
    let e = request(b, 2, &mut RawLines::empty()).unwrap_err();
    assert_eq!(e, Bad::TooMany);
}

#[test]
fn a_response_head_in_one_pass() {
    let b = b"HTTP/1.1 404 Not\tFound\r\nA: b\r\n\r\n";
    let h = response(b, 10, &mut RawLines::empty()).unwrap().unwrap();
    assert_eq!(h.start.code, 404);
    assert_eq!(&b[h.start.reason.0..h.start.reason.1], b"Not\tFound");
    assert_eq!(h.len, b.len());
    let h = response(b"HTTP/1.0 200\n\n", 10, &mut RawLines::empty())
        .unwrap()
        .unwrap();
    assert_eq!((h.start.code, h.start.minor, h.len), (200, 0, 14));
    for bad in [
        &b"HTTP/1.1 20 OK\r\n\r\n"[..],
        b"HTTP/1.2 200 OK\r\n\r\n",
        b"HTTP/1.1  200 OK\r\n\r\n",
        b"HTTP/1.1 200 O\x01K\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nA : b\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nA: b\r\n c\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nA: b\rc\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n: b\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nA: \x7f\r\n\r\n",
    ] {
        let e = response(bad, 10, &mut RawLines::empty());
        assert!(e.is_err(), "{:?}", String::from_utf8_lossy(bad));
    }
}

/// Pieces heads are made of, valid and not, so that random joins and
/// mutations land near every rule.
const PIECES: &[&[u8]] = &[
    b"GET",
    b"POST",
    b"M-1!",
    b" ",
    b"  ",
    b"\t",
    b"/",
    b"/a?b=c",
    b"*",
    b"http://h/p",
    b"HTTP/1.1",
    b"HTTP/1.0",
    b"HTTP/1.2",
    b"HTTP/2.0",
    b"HTTP/1.",
    b"\r\n",
    b"\n",
    b"\r",
    b"200",
    b"404",
    b"20",
    b"OK",
    b"Not Found",
    b"Host",
    b"content-length",
    b"X_y",
    b":",
    b": ",
    b"v",
    b"a b",
    b"\x80\xff",
    b"\xc3\xa9",
    b"\x00",
    b"\x7f",
    b"\x01",
    b"@",
    b"\"",
    b"(",
    b"Transfer-Encoding: chunked",
    b"a\tb",
];

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A head: mostly well formed, then a few random edits.
fn head(r: &mut Rng, request: bool) -> Vec<u8> {
    let mut v = Vec::new();
    if r.below(8) == 0 {
        v.extend_from_slice(b"\r\n");
    }
    if request {
        v.extend_from_slice(PIECES[r.below(3)]);
        v.push(b' ');
        v.extend_from_slice([&b"/"[..], b"/a?b=c", b"*", b"http://h/p"][r.below(4)]);
        v.extend_from_slice(b" HTTP/1.1\r\n");
    } else {
        v.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    }
    for _ in 0..r.below(6) {
        v.extend_from_slice([&b"Host"[..], b"content-length", b"X_y", b"a"][r.below(4)]);
        v.extend_from_slice(b": ");
        v.extend_from_slice([&b"v"[..], b"a b", b"\x80\xff", b" x \t", b""][r.below(5)]);
        v.extend_from_slice(b"\r\n");
    }
    v.extend_from_slice(b"\r\n");
    for _ in 0..r.below(4) {
        let at = r.below(v.len() + 1);
        match r.below(4) {
            0 => {
                let p = PIECES[r.below(PIECES.len())];
                v.splice(at..at, p.iter().copied());
            }
            1 if at < v.len() => {
                v.remove(at);
            }
            2 if at < v.len() => v[at] = r.next() as u8,
            _ => v.truncate(at),
        }
    }
    v.extend_from_slice(b"body");
    v
}

/// The outcome as a value both parsers can give: the length and the
/// parts of a complete head, or "partial", or "refused".
#[derive(Debug, PartialEq)]
enum Seen {
    Partial,
    Refused,
    Done(usize, Vec<Vec<u8>>),
}

fn ours(b: &[u8], is_request: bool) -> Seen {
    let field_parts = |f: &RawLines, out: &mut Vec<Vec<u8>>| {
        for l in f.lines() {
            let n = l.name as usize;
            out.push(b[n..n + l.name_len as usize].to_vec());
            let v = l.value as usize;
            out.push(b[v..v + l.value_len as usize].to_vec());
        }
    };
    let mut parts = Vec::new();
    let mut lines = RawLines::empty();
    let len = if is_request {
        match request(b, 4, &mut lines) {
            Ok(None) => return Seen::Partial,
            Err(_) => return Seen::Refused,
            Ok(Some(h)) => {
                let s = h.start;
                parts.push(b[s.method.0..s.method.1].to_vec());
                parts.push(b[s.target.0..s.target.1].to_vec());
                parts.push(vec![s.minor]);
                field_parts(&lines, &mut parts);
                h.len
            }
        }
    } else {
        match response(b, 4, &mut lines) {
            Ok(None) => return Seen::Partial,
            Err(_) => return Seen::Refused,
            Ok(Some(h)) => {
                let s = h.start;
                parts.push(vec![s.minor]);
                parts.push(s.code.to_be_bytes().to_vec());
                parts.push(b[s.reason.0..s.reason.1].to_vec());
                field_parts(&lines, &mut parts);
                h.len
            }
        }
    };
    Seen::Done(len, parts)
}

fn theirs(b: &[u8], request: bool) -> Seen {
    let mut headers = [httparse::EMPTY_HEADER; 4];
    let mut parts = Vec::new();
    let status = if request {
        let mut r = httparse::Request::new(&mut headers);
        let s = r.parse(b);
        if let Ok(httparse::Status::Complete(_)) = s {
            parts.push(r.method.unwrap().as_bytes().to_vec());
            parts.push(r.path.unwrap().as_bytes().to_vec());
            parts.push(vec![r.version.unwrap()]);
            for h in r.headers.iter() {
                parts.push(h.name.as_bytes().to_vec());
                parts.push(h.value.to_vec());
            }
        }
        s
    } else {
        let mut r = httparse::Response::new(&mut headers);
        let s = r.parse(b);
        if let Ok(httparse::Status::Complete(_)) = s {
            parts.push(vec![r.version.unwrap()]);
            parts.push(r.code.unwrap().to_be_bytes().to_vec());
            parts.push(r.reason.unwrap().as_bytes().to_vec());
            for h in r.headers.iter() {
                parts.push(h.name.as_bytes().to_vec());
                parts.push(h.value.to_vec());
            }
        }
        s
    };
    match status {
        Ok(httparse::Status::Complete(n)) => Seen::Done(n, parts),
        Ok(httparse::Status::Partial) => Seen::Partial,
        Err(_) => Seen::Refused,
    }
}

/// Lines written out (runs of lines that came as `Name: value\r\n`
/// copied whole from the block) are the lines, one by one, as
/// `Name: value\r\n`, whatever the spacing they came with.
#[test]
fn lines_are_written_as_name_colon_space_value() {
    let mut r = Rng(0x2545_f491_4f6c_dd1d);
    let mut written = 0;
    for i in 0..20_000 {
        let v = head(&mut r, i % 2 == 0);
        let mut lines = RawLines::empty();
        let done = if i % 2 == 0 {
            request(&v, 8, &mut lines).map(|h| h.map(|h| h.len))
        } else {
            response(&v, 8, &mut lines).map(|h| h.map(|h| h.len))
        };
        let Ok(Some(_)) = done else { continue };
        lines.set_block(bytes::Bytes::copy_from_slice(&v));
        if i % 3 == 0 {
            // Gaps between runs, as removing hop-by-hop lines leaves.
            lines.retain_names(&mut |n| !n.eq_ignore_ascii_case(b"host"));
        }
        let mut expect = Vec::new();
        for l in lines.lines() {
            let n = l.name as usize;
            expect.extend_from_slice(&v[n..n + l.name_len as usize]);
            expect.extend_from_slice(b": ");
            let at = l.value as usize;
            expect.extend_from_slice(&v[at..at + l.value_len as usize]);
            expect.extend_from_slice(b"\r\n");
        }
        let mut out = Vec::new();
        lines.write_h1(&mut out);
        assert_eq!(out, expect, "{:?}", String::from_utf8_lossy(&v));
        written += 1;
    }
    assert!(written > 5_000, "{written}");
}

/// The one-pass parser and httparse (default config) agree on every
/// generated head and every prefix of it: complete with the same
/// parts and length, partial, or refused.
#[test]
fn agrees_with_httparse() {
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let mut done = [0usize; 3];
    for i in 0..40_000 {
        let request = i % 2 == 0;
        let v = head(&mut r, request);
        let cuts = [v.len(), r.below(v.len() + 1)];
        for cut in cuts {
            let b = &v[..cut];
            let (a, t) = (ours(b, request), theirs(b, request));
            assert_eq!(a, t, "{:?}", String::from_utf8_lossy(b));
            done[match a {
                Seen::Done(..) => 0,
                Seen::Partial => 1,
                Seen::Refused => 2,
            }] += 1;
        }
    }
    // The generator reaches all three outcomes often.
    assert!(done.iter().all(|&n| n > 5_000), "{done:?}");
}
