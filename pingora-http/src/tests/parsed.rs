//! Headers as parsed against the same headers built: every question and
//! edit answers alike, and the parsed state stays as long as it can.

use super::*;

/// Names for the parsed-lines tests: hop-by-hop, framing and plain ones,
/// in random case.
const LINE_NAMES: [&str; 11] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "upgrade",
    "transfer-encoding",
    "content-length",
    "host",
    "x-a",
    "x-b",
    "accept",
];

fn line_name() -> impl Strategy<Value = String> {
    (
        prop::sample::select(LINE_NAMES.to_vec()),
        prop::collection::vec(any::<bool>(), 20),
    )
        .prop_map(|(base, ups)| {
            base.chars()
                .zip(ups.iter())
                .map(|(c, up)| if *up { c.to_ascii_uppercase() } else { c })
                .collect()
        })
}

/// A value, or for a Connection line a list of names.
fn line_value() -> impl Strategy<Value = String> {
    prop_oneof![
        value(),
        prop::sample::select(vec![
            "close",
            "X-A",
            "keep-alive, x-b",
            " upgrade ,Host",
            "te",
            "x-b, X-A, zz, x-a",
            "x-a, caf\u{e9}",
            "\u{e9}\u{e8}"
        ])
        .prop_map(str::to_string),
    ]
}

/// A header with the same lines, built into its map.
macro_rules! built {
    ($h:expr) => {{
        let mut b = $h.clone();
        b.build_map_now();
        b
    }};
}

/// The parsed and the built header answer the same.
macro_rules! same_answers {
    ($raw:expr, $built:expr) => {{
        let (raw, built) = (&$raw, &$built);
        prop_assert_eq!(raw.to_wire(), built.to_wire());
        prop_assert_eq!(raw.header_count(), built.header_count());
        prop_assert_eq!(raw.h1_len(), built.h1_len());
        prop_assert!(raw.to_wire().len() <= raw.h1_len());
        prop_assert_eq!(raw.has_hop_by_hop(), built.has_hop_by_hop());
        for n in LINE_NAMES.iter().chain(&["absent"]) {
            let n = HeaderName::from_static(n);
            prop_assert_eq!(raw.has_header(&n), built.has_header(&n), "{}", n);
            let rv: Vec<&[u8]> = raw.header_values(&n).collect();
            let bv: Vec<&[u8]> = built.header_values(&n).collect();
            prop_assert_eq!(rv, bv, "{}", n);
        }
    }};
}

proptest! {
    /// A header still as parsed (its map not built) answers every question
    /// and edit the proxy path uses exactly as the built one does, and
    /// builds the same map when asked for it.
    #[test]
    fn parsed_lines_answer_as_the_built_map(
        given in prop::collection::vec((line_name(), line_value()), 0..16),
        ops in prop::collection::vec((0u8..5, line_name(), line_value()), 0..8),
    ) {
        let mut req_wire = b"GET /a HTTP/1.1\r\n".to_vec();
        let mut resp_wire = b"HTTP/1.1 200 OK\r\n".to_vec();
        for (n, v) in &given {
            for w in [&mut req_wire, &mut resp_wire] {
                w.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
            }
        }
        req_wire.extend_from_slice(b"\r\n");
        resp_wire.extend_from_slice(b"\r\n");
        let mut req = parse_req(&Bytes::from(req_wire));
        let mut resp = parse_resp(&Bytes::from(resp_wire));
        let mut req_b = built!(req);
        let mut resp_b = built!(resp);
        same_answers!(req, req_b);
        same_answers!(resp, resp_b);
        for (op, name, value) in ops {
            match op {
                3 => {
                    req.append_header(name.clone(), value.as_str()).unwrap();
                    req_b.append_header(name.clone(), value.as_str()).unwrap();
                    resp.append_header(name.clone(), value.as_str()).unwrap();
                    resp_b.append_header(name.clone(), value.as_str()).unwrap();
                }
                4 => {
                    req.insert_header(name.clone(), value.as_str()).unwrap();
                    req_b.insert_header(name.clone(), value.as_str()).unwrap();
                    resp.insert_header(name.clone(), value.as_str()).unwrap();
                    resp_b.insert_header(name.clone(), value.as_str()).unwrap();
                }
                0 => {
                    prop_assert_eq!(req.remove_header(name.as_str()), req_b.remove_header(name.as_str()));
                    prop_assert_eq!(resp.remove_header(name.as_str()), resp_b.remove_header(name.as_str()));
                }
                1 => {
                    req.remove_hop_by_hop();
                    req_b.remove_hop_by_hop();
                    resp.remove_hop_by_hop();
                    resp_b.remove_hop_by_hop();
                }
                _ => {
                    // Reading the map builds a view; later edits must not
                    // leave it stale.
                    prop_assert_eq!(&req.headers, &req_b.headers);
                    prop_assert_eq!(&resp.headers, &resp_b.headers);
                }
            }
            same_answers!(req, req_b);
            same_answers!(resp, resp_b);
        }
        prop_assert_eq!(&req.headers, &req_b.headers);
        prop_assert_eq!(&resp.headers, &resp_b.headers);
        let order = |h: &RequestHeader| lines(h.headers_in_order());
        prop_assert_eq!(order(&req), order(&req_b));
    }
}

/// A `Connection` header listing thousands of names (a hostile one is
/// sorted once, not compared with every line): the listed lines go, in
/// both states, and the others stay.
#[test]
fn connection_listing_many_names() {
    let mut wire = b"GET / HTTP/1.1\r\nHost: h\r\nConnection: ".to_vec();
    for i in 0..5000 {
        wire.extend_from_slice(format!("t{i}, ").as_bytes());
    }
    wire.extend_from_slice(b"close\r\n");
    for i in (0..6000).step_by(1000) {
        wire.extend_from_slice(format!("T{i}: {i}\r\nx{i}: {i}\r\n").as_bytes());
    }
    wire.extend_from_slice(b"\r\n");
    let mut raw = parse_req(&Bytes::from(wire));
    let mut built = raw.clone();
    built.build_map_now();
    raw.remove_hop_by_hop();
    built.remove_hop_by_hop();
    let want = "GET / HTTP/1.1\r\nHost: h\r\nx0: 0\r\nx1000: 1000\r\nx2000: 2000\r\n\
                x3000: 3000\r\nx4000: 4000\r\nT5000: 5000\r\nx5000: 5000\r\n\r\n";
    assert_eq!(String::from_utf8_lossy(&raw.to_wire()), want);
    assert_eq!(String::from_utf8_lossy(&built.to_wire()), want);
}

/// Adding and replacing lines of a parsed header keeps it as parsed (no
/// map built) and writes them after the received ones, spelled as given.
#[test]
fn edits_of_a_parsed_header_build_no_map() {
    let mut resp = parse_resp(&Bytes::from_static(
        b"HTTP/1.1 200 OK\r\nServer: s\r\nTransfer-Encoding: chunked\r\n\r\n",
    ));
    resp.remove_hop_by_hop();
    resp.insert_header("Transfer-Encoding", "chunked").unwrap();
    resp.append_header("x-added", "1").unwrap();
    resp.insert_header("Server", "proxy").unwrap();
    assert!(!resp.map_built());
    assert!(resp.has_header(&http::header::TRANSFER_ENCODING));
    assert_eq!(
        &resp.to_wire()[..],
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nx-added: 1\r\nServer: proxy\r\n\r\n"[..]
    );
    assert_eq!(resp.to_wire().len(), resp.h1_len());
    // A value marked sensitive (for HPACK) builds the map to keep the mark.
    let mut v = HeaderValue::from_static("secret");
    v.set_sensitive(true);
    resp.insert_header("Authorization", v).unwrap();
    assert!(resp.map_built());
    assert!(resp.headers.get("authorization").unwrap().is_sensitive());
}

/// Every header line the one-pass parser (`h1.rs`) accepts passes the
/// byte rules `HeaderName` and `HeaderValue` apply, for every byte in a
/// name and in a value, in requests and responses: building the map from
/// the parsed lines (which panics on a line those types refuse) works.
#[test]
fn h1_parser_applies_our_byte_rules() {
    for b in 0..=255u8 {
        for (name, value) in [
            (vec![b'x', b, b'y'], b"v".to_vec()),
            (b"x".to_vec(), vec![b'v', b, b'w']),
        ] {
            let mut req = b"GET / HTTP/1.1\r\n".to_vec();
            let mut resp = b"HTTP/1.1 200 OK\r\n".to_vec();
            for wire in [&mut req, &mut resp] {
                wire.extend_from_slice(&name);
                wire.extend_from_slice(b": ");
                wire.extend_from_slice(&value);
                wire.extend_from_slice(b"\r\n\r\n");
            }
            let mut buf = BytesMut::from(&req[..]);
            let mut slot = None;
            if let Ok(Some(_)) =
                RequestHeader::parse_h1_into(&mut buf, req.len(), 8, 100, &mut slot)
            {
                let h = slot.unwrap();
                assert!(!h.map_built());
                assert_eq!(h.headers.len(), 1, "byte {b:#04x}");
            }
            let mut buf = BytesMut::from(&resp[..]);
            if let Ok(Some((h, _))) = ResponseHeader::parse_h1(&mut buf, resp.len(), 8) {
                assert!(!h.map_built());
                assert_eq!(h.headers.len(), 1, "byte {b:#04x}");
            }
        }
    }
}

/// Each `tracked` constant carries the bit its name has everywhere else,
/// and answers as `has_header`/`header_values` do, parsed or built.
#[test]
fn tracked_names_answer_as_the_name_lookups() {
    use crate::tracked::*;
    let all = [
        CONTENT_LENGTH,
        TRANSFER_ENCODING,
        CONNECTION,
        UPGRADE,
        EXPECT,
        TE,
        TRAILER,
        HOST,
    ];
    for t in all {
        assert_eq!(t.bit, crate::order::tracked_bit(t.name()), "{:?}", t.name());
    }
    let wire = Bytes::from_static(
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nconnection: te\r\nTE: trailers\r\n\r\n",
    );
    let parsed = parse_req(&wire);
    let mut built = RequestHeader::build("GET", b"/", None).unwrap();
    for (n, v) in [
        ("Host", "a"),
        ("Connection", "close"),
        ("connection", "te"),
        ("TE", "trailers"),
    ] {
        built.append_header(n, v).unwrap();
    }
    assert!(built.map_built() && !parsed.map_built());
    for h in [&parsed, &built] {
        for t in all {
            assert_eq!(h.has_tracked(t), h.has_header(t.name()), "{:?}", t.name());
            let a: Vec<_> = h.tracked_values(t).collect();
            let b: Vec<_> = h.header_values(t.name()).collect();
            assert_eq!(a, b, "{:?}", t.name());
        }
    }
}

#[test]
fn retain_header_names_as_parsed_and_built() {
    let wire = Bytes::from_static(
        b"GET / HTTP/1.1\r\nHost: a\r\nX_Under: 1\r\nX-Kept: yes\r\nx_low: 2\r\n\r\n",
    );
    let mut req = parse_req(&wire);
    assert!(!req.map_built());
    assert_eq!(req.retain_header_names(|n| !n.contains(&b'_')), 2);
    let kept: Vec<Vec<u8>> = req.headers_in_order().map(|(n, _)| n.to_vec()).collect();
    assert_eq!(kept, vec![b"Host".to_vec(), b"X-Kept".to_vec()]);
    assert_eq!(req.to_wire().len(), req.h1_len());
    // The same once the map is built.
    let mut req = parse_req(&wire);
    // A value marked sensitive builds the map.
    let mut v = HeaderValue::from_static("n");
    v.set_sensitive(true);
    req.insert_header("x-new", v).unwrap();
    assert!(req.map_built());
    assert_eq!(req.retain_header_names(|n| !n.contains(&b'_')), 2);
    let kept: Vec<Vec<u8>> = req.headers_in_order().map(|(n, _)| n.to_vec()).collect();
    assert_eq!(
        kept,
        vec![b"Host".to_vec(), b"X-Kept".to_vec(), b"x-new".to_vec()]
    );
}

#[test]
fn a_recycled_box_is_reused_and_its_contents_released() {
    let wire = b"GET /a HTTP/1.1\r\nHost: x\r\nX-Big: yes\r\n\r\n".to_vec();
    let buf = bytes::Bytes::from(wire);
    let mut headers = [httparse::EMPTY_HEADER; 8];
    let mut parsed = httparse::Request::new(&mut headers);
    parsed.parse(&buf).unwrap();
    let req = RequestHeader::from_httparse(&parsed, &buf).unwrap().boxed();
    let at = &*req as *const RequestHeader;
    RequestHeader::recycle(req);
    // The header's bytes are no longer shared: the buffer is ours alone.
    assert!(buf.is_unique());
    // The next box on this thread is the same allocation, holding the new value.
    let again = RequestHeader::build("PUT", b"/b", None).unwrap().boxed();
    assert_eq!(&*again as *const RequestHeader, at);
    assert_eq!(again.method(), http::Method::PUT);
    assert_eq!(again.raw_path(), b"/b");
    assert_eq!(again.headers_in_order().count(), 0);

    let resp = ResponseHeader::build(404, None).unwrap().boxed();
    let at = &*resp as *const ResponseHeader;
    ResponseHeader::recycle(resp);
    let again = ResponseHeader::build(200, None).unwrap().boxed();
    assert_eq!(&*again as *const ResponseHeader, at);
    assert_eq!(again.status(), http::StatusCode::OK);
}

#[test]
fn direct_edits_through_deref_mut_are_written_in_wire_order() {
    let wire = Bytes::from_static(
        b"GET /a HTTP/1.1\r\nHost: x\r\nX-Two: 1\r\nX-Two: 2\r\nX-Gone: g\r\nAccept: */*\r\n\r\n",
    );
    let mut req = parse_req(&wire);
    // As a Pingora program writes them: fields of the parts.
    req.headers.remove("x-gone");
    req.headers.append("x-two", HeaderValue::from_static("3"));
    req.headers
        .insert("transfer-encoding", HeaderValue::from_static("chunked"));
    req.uri = "/b?c".parse().unwrap();
    // Reads see the edits: the tracked bits, the count, the length.
    assert!(req.has_tracked(tracked::TRANSFER_ENCODING));
    assert_eq!(req.header_count(), 6);
    let out = req.to_wire();
    assert_eq!(
        &out[..],
        &b"GET /b?c HTTP/1.1\r\nHost: x\r\nX-Two: 1\r\nX-Two: 2\r\nAccept: */*\r\nX-Two: 3\r\ntransfer-encoding: chunked\r\n\r\n"[..]
    );
    assert_eq!(out.len(), req.h1_len());
    // Our own edits go on from there.
    req.insert_header("X-New", "n").unwrap();
    req.remove_header("Accept");
    let out = req.to_wire();
    assert_eq!(
        &out[..],
        &b"GET /b?c HTTP/1.1\r\nHost: x\r\nX-Two: 1\r\nX-Two: 2\r\nX-Two: 3\r\ntransfer-encoding: chunked\r\nX-New: n\r\n\r\n"[..]
    );
    assert_eq!(out.len(), req.h1_len());
    // A value replaced in place keeps its line.
    let mut resp = ResponseHeader::build(200, None).unwrap();
    resp.insert_header("Content-Length", "5").unwrap();
    resp.insert_header("X-A", "a").unwrap();
    resp.headers
        .insert("content-length", HeaderValue::from_static("7"));
    resp.status = http::StatusCode::CREATED;
    assert_eq!(
        &resp.to_wire()[..],
        &b"HTTP/1.1 201 Created\r\nContent-Length: 7\r\nX-A: a\r\n\r\n"[..]
    );
    assert_eq!(resp.as_owned_parts().status, http::StatusCode::CREATED);
    assert!(resp.append_header("x-a", "b").unwrap());
    assert!(!resp.append_header("x-b", "b").unwrap());
}
