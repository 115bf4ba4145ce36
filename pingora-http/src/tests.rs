use super::*;
use bytes::BytesMut;
use proptest::prelude::*;

mod parsed;

fn parse_req(wire: &Bytes) -> RequestHeader {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut headers);
    let status = req.parse(wire).expect("httparse accepts our output");
    assert!(status.is_complete());
    assert_eq!(status.unwrap(), wire.len(), "whole header consumed");
    RequestHeader::from_httparse(&req, wire).unwrap()
}

fn parse_resp(wire: &Bytes) -> ResponseHeader {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut resp = httparse::Response::new(&mut headers);
    let status = resp.parse(wire).expect("httparse accepts our output");
    assert_eq!(status.unwrap(), wire.len());
    ResponseHeader::from_httparse(&resp, wire).unwrap()
}

fn lines<'a>(it: impl Iterator<Item = (&'a [u8], &'a HeaderValue)>) -> Vec<(Vec<u8>, Vec<u8>)> {
    it.map(|(n, v)| (n.to_vec(), v.as_bytes().to_vec()))
        .collect()
}

#[test]
fn insert_replaces_all_and_moves_to_end() {
    let mut req = RequestHeader::build("POST", b"/", None).unwrap();
    req.append_header("Accept", "a").unwrap();
    req.append_header("Host", "h").unwrap();
    req.append_header("ACCEPT", "b").unwrap();
    req.insert_header("accept", "c").unwrap();
    assert_eq!(
        &req.to_wire()[..],
        b"POST / HTTP/1.1\r\nHost: h\r\naccept: c\r\n\r\n"
    );
    assert_eq!(req.headers.get_all("accept").iter().count(), 1);
}

#[test]
fn remove_keeps_others_in_order() {
    let mut req = RequestHeader::build("GET", b"/x", Some(4)).unwrap();
    for (n, v) in [("A", "1"), ("B", "2"), ("a", "3"), ("C", "4"), ("b", "5")] {
        req.append_header(n, v).unwrap();
    }
    assert_eq!(req.remove_header("a").unwrap(), "1");
    assert!(req.remove_header("a").is_none());
    assert!(req.remove_header("not a name").is_none());
    assert_eq!(
        lines(req.headers_in_order()),
        vec![
            (b"B".to_vec(), b"2".to_vec()),
            (b"C".to_vec(), b"4".to_vec()),
            (b"b".to_vec(), b"5".to_vec())
        ]
    );
    // Appending after a removal numbers occurrences correctly.
    req.append_header("B", "6").unwrap();
    assert_eq!(
        &req.to_wire()[..],
        b"GET /x HTTP/1.1\r\nB: 2\r\nC: 4\r\nb: 5\r\nB: 6\r\n\r\n"
    );
    assert_eq!(req.header_count(), 4);
}

#[test]
fn bad_input_is_an_error() {
    assert!(RequestHeader::build("BAD METHOD", b"/", None).is_err());
    assert!(RequestHeader::build("GET", b"/a b", None).is_err());
    let mut req = RequestHeader::build("GET", b"/", None).unwrap();
    let e = req.insert_header("Bad Name", "v").unwrap_err();
    assert_eq!(e.etype(), &pingora_error::ErrorType::InvalidHTTPHeader);
    assert!(req.insert_header("X", "a\r\nInjected: 1").is_err());
    assert_eq!(req.header_count(), 0);
    let mut resp = ResponseHeader::build(200, None).unwrap();
    assert!(resp.set_reason_phrase(Some("OK\r\nX: y")).is_err());
    assert!(ResponseHeader::build(1000, None).is_err());
}

#[test]
fn request_targets() {
    let mut req = RequestHeader::build("GET", b"http://example.com:8080/p?q", None).unwrap();
    assert_eq!(
        &req.to_wire()[..],
        b"GET http://example.com:8080/p?q HTTP/1.1\r\n\r\n"
    );
    req.set_method(Method::CONNECT);
    req.set_raw_path(b"example.com:443").unwrap();
    assert_eq!(
        &req.to_wire()[..],
        b"CONNECT example.com:443 HTTP/1.1\r\n\r\n"
    );
    req.set_method(Method::OPTIONS);
    req.set_uri(Uri::from_static("*"));
    req.set_version(Version::HTTP_10);
    assert_eq!(&req.to_wire()[..], b"OPTIONS * HTTP/1.0\r\n\r\n");
}

#[test]
fn response_wire_and_reason() {
    let mut resp = ResponseHeader::build(404, None).unwrap();
    resp.insert_header("Content-Length", "0").unwrap();
    assert_eq!(
        &resp.to_wire()[..],
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
    );
    resp.set_reason_phrase(Some("Nope")).unwrap();
    assert_eq!(resp.get_reason_phrase(), Some("Nope"));
    resp.set_status(599).unwrap();
    assert_eq!(resp.get_reason_phrase(), None);
    assert_eq!(
        &resp.to_wire()[..],
        b"HTTP/1.1 599 \r\nContent-Length: 0\r\n\r\n"
    );
    let parsed = parse_resp(&Bytes::from_static(b"HTTP/1.0 200 Fine\r\nX-A: 1\r\n\r\n"));
    assert_eq!(parsed.version, Version::HTTP_10);
    assert_eq!(parsed.get_reason_phrase(), Some("Fine"));
    assert_eq!(parsed.headers.get("x-a").unwrap(), "1");
}

#[test]
fn parsing_shares_the_buffer() {
    let wire = Bytes::from_static(b"GET /a HTTP/1.1\r\nX-Long-Header: value\r\n\r\n");
    let req = parse_req(&wire);
    let (name, value) = req.headers_in_order().next().unwrap();
    let range = wire.as_ptr() as usize..wire.as_ptr() as usize + wire.len();
    assert!(range.contains(&(name.as_ptr() as usize)));
    assert!(range.contains(&(value.as_bytes().as_ptr() as usize)));
}

// --- property tests: serialize -> httparse -> our type is the identity ---

fn token() -> impl Strategy<Value = String> {
    // A small pool of names in random case, so repeated and interleaved
    // names with different spellings are common.
    (
        prop::sample::select(vec![
            "host",
            "accept",
            "x-a",
            "x-b",
            "cookie",
            "content-type",
            "via",
            "x-forwarded-for",
            "connection",
            "content-length",
            "transfer-encoding",
        ]),
        prop::collection::vec(any::<bool>(), 16),
        "[!#$%&'*+.^_`|~0-9a-zA-Z-]{0,3}",
    )
        .prop_map(|(base, ups, suffix)| {
            let mut s: String = base
                .chars()
                .zip(ups.iter().cycle())
                .map(|(c, up)| if *up { c.to_ascii_uppercase() } else { c })
                .collect();
            s.push_str(&suffix);
            s
        })
}

fn value() -> impl Strategy<Value = String> {
    // Visible ASCII with inner spaces and tabs; no leading or trailing
    // whitespace (RFC 9110 §5.5 excludes it from the field value).
    "([!-~]([ \t!-~]{0,40}[!-~])?)?"
}

/// A value as raw bytes: visible ASCII and obs-text (0x80–0xFF, which
/// RFC 9110 allows in a field value), with inner spaces and tabs.
fn value_bytes() -> impl Strategy<Value = Vec<u8>> {
    "([!-~\u{80}-\u{ff}]([ \t!-~\u{80}-\u{ff}]{0,40}[!-~\u{80}-\u{ff}])?)?"
        .prop_map(|s| s.chars().map(|c| c as u8).collect())
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("GET".to_string()),
        Just("POST".to_string()),
        Just("DELETE".to_string()),
        "[A-Z]{1,10}",
    ]
}

proptest! {
    /// `has_header` (a bit per framing name, kept by every edit) agrees
    /// with the map after any sequence of appends, inserts and removals,
    /// names given in any case. (Debug builds also check after each edit.)
    #[test]
    fn has_header_follows_every_edit(
        ops in prop::collection::vec((0u8..3, token()), 0..30),
    ) {
        use http::header::*;
        let names = [CONTENT_LENGTH, TRANSFER_ENCODING, CONNECTION, UPGRADE, EXPECT, TE, TRAILER, HOST, VIA, ACCEPT];
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        let mut resp = ResponseHeader::build(200, None).unwrap();
        for (op, name) in ops {
            match op {
                0 => {
                    req.append_header(name.clone(), "1").unwrap();
                    resp.append_header(name.clone(), "1").unwrap();
                }
                1 => {
                    req.insert_header(name.clone(), "2").unwrap();
                    resp.insert_header(name.clone(), "2").unwrap();
                }
                _ => {
                    req.remove_header(name.as_str());
                    resp.remove_header(name.as_str());
                }
            }
            for n in &names {
                prop_assert_eq!(req.has_header(n), req.headers.contains_key(n), "{}", n);
                prop_assert_eq!(resp.has_header(n), resp.headers.contains_key(n), "{}", n);
            }
        }
        let parsed = parse_req(&req.to_wire());
        for n in &names {
            prop_assert_eq!(parsed.has_header(n), req.has_header(n), "{}", n);
        }
    }

    #[test]
    fn request_round_trip(
        method in method(),
        path in "/[a-zA-Z0-9._~!$&'()*+,;=:@/-]{0,30}(\\?[a-zA-Z0-9=&%]{0,20})?",
        http10 in any::<bool>(),
        headers in prop::collection::vec((token(), value_bytes()), 0..40),
    ) {
        let mut req = RequestHeader::build(method.as_str(), path.as_bytes(), None).unwrap();
        if http10 { req.set_version(Version::HTTP_10); }
        for (n, v) in &headers {
            req.append_header(n.clone(), &v[..]).unwrap();
        }
        let wire = req.to_wire();
        let back = parse_req(&wire);
        prop_assert_eq!(&back.method, &req.method);
        prop_assert_eq!(&back.uri, &req.uri);
        prop_assert_eq!(back.version, req.version);
        let expect: Vec<_> = headers.iter().map(|(n, v)| (n.clone().into_bytes(), v.clone())).collect();
        prop_assert_eq!(lines(back.headers_in_order()), expect.clone());
        prop_assert_eq!(lines(req.headers_in_order()), expect);
        prop_assert_eq!(&back.headers, &req.headers);
        prop_assert_eq!(back.to_wire(), wire);
    }

    #[test]
    fn response_round_trip(
        code in 100u16..1000,
        reason in "([!-~]([ !-~]{0,20}[!-~])?)?",
        headers in prop::collection::vec((token(), value_bytes()), 0..40),
    ) {
        let mut resp = ResponseHeader::build(code, None).unwrap();
        resp.set_reason_phrase(Some(&reason)).unwrap();
        for (n, v) in &headers {
            resp.append_header(n.clone(), &v[..]).unwrap();
        }
        let wire = resp.to_wire();
        let back = parse_resp(&wire);
        prop_assert_eq!(back.status, resp.status);
        prop_assert_eq!(back.get_reason_phrase().unwrap_or(""), resp.get_reason_phrase().unwrap_or(""));
        let expect: Vec<_> = headers.iter().map(|(n, v)| (n.clone().into_bytes(), v.clone())).collect();
        prop_assert_eq!(lines(back.headers_in_order()), expect);
        prop_assert_eq!(back.to_wire(), wire);
    }
}

#[test]
fn wire_order_survives_removal_reordering_the_map() {
    // Removing a name moves the map's last entry into its place; the
    // written order must still be the order the lines were added in.
    let mut resp = ResponseHeader::build(200, None).unwrap();
    for (n, v) in [("X-A", "1"), ("X-B", "2"), ("X-C", "3")] {
        resp.append_header(n, v).unwrap();
    }
    let wire = |r: &ResponseHeader| String::from_utf8(r.to_wire().to_vec()).unwrap();
    assert_eq!(
        wire(&resp),
        "HTTP/1.1 200 OK\r\nX-A: 1\r\nX-B: 2\r\nX-C: 3\r\n\r\n"
    );
    resp.remove_header("x-a");
    resp.append_header("X-D", "4").unwrap();
    assert_eq!(
        wire(&resp),
        "HTTP/1.1 200 OK\r\nX-B: 2\r\nX-C: 3\r\nX-D: 4\r\n\r\n"
    );
    assert!(resp.h1_len() >= wire(&resp).len());
    // Repeated names are written where each line was added.
    resp.append_header("x-b", "5").unwrap();
    resp.append_header("X-E", "6").unwrap();
    assert_eq!(
        wire(&resp),
        "HTTP/1.1 200 OK\r\nX-B: 2\r\nX-C: 3\r\nX-D: 4\r\nx-b: 5\r\nX-E: 6\r\n\r\n"
    );
}

#[test]
fn remove_hop_by_hop_keeps_the_rest_in_order() {
    let wire = Bytes::from_static(
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close, X-Gone , keep-alive\r\n\
          Keep-Alive: timeout=5\r\nX-Kept: 1\r\nTE: trailers\r\nx-gone: a\r\n\
          Proxy-Authorization: b\r\nUpgrade: ws\r\nX-Gone: b\r\nContent-Length: 0\r\n\
          Proxy-Connection: c\r\nTrailer: d\r\nProxy-Authenticate: e\r\n\r\n",
    );
    let mut req = parse_req(&wire);
    assert!(!req.map_built(), "parsed lines stay as parsed");
    assert!(req.has_hop_by_hop());
    req.remove_hop_by_hop();
    assert!(!req.has_hop_by_hop());
    assert!(!req.map_built(), "removing lines builds no map");
    let want: Vec<(Vec<u8>, Vec<u8>)> = [("Host", "h"), ("X-Kept", "1"), ("Content-Length", "0")]
        .iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect();
    assert_eq!(lines(req.headers_in_order()), want);
    assert!(
        req.map_built(),
        "reading the lines with their values built it"
    );
    assert_eq!(req.headers.len(), 3);
    let mut out = BytesMut::new();
    req.write_h1(&mut out);
    assert_eq!(
        &out[..],
        b"GET / HTTP/1.1\r\nHost: h\r\nX-Kept: 1\r\nContent-Length: 0\r\n\r\n"
    );
    // Nothing to remove: nothing changes.
    let mut resp = parse_resp(&Bytes::from_static(
        b"HTTP/1.1 200 OK\r\nServer: s\r\nContent-Length: 2\r\n\r\n",
    ));
    assert!(!resp.has_hop_by_hop());
    resp.remove_hop_by_hop();
    assert_eq!(resp.header_count(), 2);
}

#[test]
fn to_header_map_matches_the_parts_whether_parsed_built_or_edited() {
    let wire = Bytes::from_static(
        b"HTTP/1.1 200 OK\r\nServer: x\r\nSet-Cookie: a=1\r\nX-Custom: v\r\nset-cookie: b=2\r\n\r\n",
    );
    // As parsed (no map yet), and with a view already built.
    let parsed = parse_resp(&wire);
    let want = parsed.clone().into_parts().headers;
    assert_eq!(parsed.to_header_map(), want);
    let viewed = parse_resp(&wire);
    assert_eq!(viewed.headers.len(), 4);
    assert_eq!(viewed.to_header_map(), want);
    // Edited: the edit shows.
    let mut edited = parse_resp(&wire);
    edited.insert_header("X-Custom", "w").unwrap();
    let map = edited.to_header_map();
    assert_eq!(map["x-custom"], "w");
    let cookies: Vec<_> = map.get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["a=1", "b=2"]);
    // Built.
    let mut built = ResponseHeader::build(204, None).unwrap();
    built.append_header("A", "1").unwrap();
    assert_eq!(built.to_header_map()["a"], "1");
}
