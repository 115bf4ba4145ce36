//! Negotiation, skipping, header fixes and round trips.

use super::negotiation::parse_q;
use super::*;

fn req(accept: &str) -> RequestHeader {
    let mut r = RequestHeader::build("GET", b"/", None).unwrap();
    if !accept.is_empty() {
        r.insert_header("Accept-Encoding", accept).unwrap();
    }
    r
}

fn resp(fields: &[(&str, &str)]) -> ResponseHeader {
    let mut r = ResponseHeader::build(200, None).unwrap();
    for (n, v) in fields {
        r.append_header(n.to_string(), *v).unwrap();
    }
    r
}

fn chosen(accept: &str, fields: &[(&str, &str)]) -> Option<String> {
    let mut ctx = ResponseCompressionCtx::new(6, false, false);
    ctx.request_filter(&req(accept));
    let mut r = resp(fields);
    ctx.response_header_filter(&mut r, false);
    r.headers
        .get(CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap().to_string())
}

const HTML: (&str, &str) = ("Content-Type", "text/html; charset=utf-8");

#[test]
fn negotiation_follows_q_values_then_our_preference() {
    assert_eq!(chosen("gzip, br, zstd", &[HTML]).as_deref(), Some("zstd"));
    assert_eq!(
        chosen("gzip;q=1, br;q=0.9", &[HTML]).as_deref(),
        Some("gzip")
    );
    assert_eq!(
        chosen("br;q=0.1, gzip;q=0.05", &[HTML]).as_deref(),
        Some("br")
    );
    assert_eq!(chosen("*", &[HTML]).as_deref(), Some("zstd"));
    assert_eq!(chosen("*, zstd;q=0", &[HTML]).as_deref(), Some("br"));
    assert_eq!(chosen("gzip;q=0", &[HTML]), None);
    assert_eq!(chosen("identity", &[HTML]), None);
    assert_eq!(chosen("", &[HTML]), None);
    assert_eq!(chosen("deflate", &[HTML]), None);
    assert_eq!(chosen("GZIP ; Q=0.5", &[HTML]).as_deref(), Some("gzip"));
    // A malformed q-value counts as 0.
    assert_eq!(chosen("gzip;q=2", &[HTML]), None);
    assert_eq!(chosen("gzip;q=0.5x", &[HTML]), None);
}

#[test]
fn skipped_when_not_worth_it_or_not_allowed() {
    let all = "gzip, br, zstd";
    assert_eq!(chosen(all, &[("Content-Type", "image/png")]), None);
    assert_eq!(chosen(all, &[("Content-Type", "text/event-stream")]), None);
    assert_eq!(chosen(all, &[]), None);
    assert_eq!(chosen(all, &[HTML, ("Content-Length", "100")]), None);
    assert_eq!(
        chosen(all, &[HTML, ("Content-Range", "bytes 0-9/100")]),
        None
    );
    assert_eq!(
        chosen(all, &[HTML, ("Cache-Control", "public, no-transform")]),
        None
    );
    // Already encoded: left as it is.
    assert_eq!(
        chosen(all, &[HTML, ("Content-Encoding", "gzip")]).as_deref(),
        Some("gzip")
    );
    assert!(chosen(all, &[("Content-Type", "application/vnd.api+json")]).is_some());
    let mut ctx = ResponseCompressionCtx::new(6, false, false);
    let mut head = req(all);
    head.set_method(Method::HEAD);
    ctx.request_filter(&head);
    let mut r = resp(&[HTML]);
    ctx.response_header_filter(&mut r, false);
    assert!(!ctx.is_coding());
    for status in [204, 304, 206] {
        let mut ctx = ResponseCompressionCtx::new(6, false, false);
        ctx.request_filter(&req(all));
        let mut r = resp(&[HTML]);
        r.set_status(status).unwrap();
        ctx.response_header_filter(&mut r, false);
        assert!(!ctx.is_coding(), "{status}");
    }
}

#[test]
fn the_header_is_fixed_for_a_coded_body() {
    let mut ctx = ResponseCompressionCtx::new(6, false, false);
    ctx.request_filter(&req("gzip"));
    let mut r = resp(&[
        HTML,
        ("Content-Length", "5000"),
        ("ETag", "\"abc\""),
        ("Accept-Ranges", "bytes"),
        ("Vary", "Origin"),
    ]);
    ctx.response_header_filter(&mut r, false);
    assert_eq!(r.headers.get(CONTENT_ENCODING).unwrap(), "gzip");
    assert!(r.headers.get(CONTENT_LENGTH).is_none());
    assert!(r.headers.get(ACCEPT_RANGES).is_none());
    assert_eq!(r.headers.get(ETAG).unwrap(), "W/\"abc\"");
    let vary: Vec<_> = r.headers.get_all(VARY).iter().collect();
    assert_eq!(vary, ["Origin", "Accept-Encoding"]);
    // A Vary that names it already is left alone; a weak ETag too.
    let mut ctx = ResponseCompressionCtx::new(6, false, true);
    ctx.request_filter(&req("br"));
    let mut r = resp(&[HTML, ("Vary", "accept-encoding"), ("ETag", "\"x\"")]);
    ctx.response_header_filter(&mut r, false);
    assert_eq!(r.headers.get_all(VARY).iter().count(), 1);
    assert_eq!(r.headers.get(ETAG).unwrap(), "\"x\"");
}

/// Each algorithm round-trips through its own decoder, fed in pieces.
#[test]
fn streams_round_trip_in_pieces() {
    let text: Vec<u8> = (0..200_000u32)
        .flat_map(|i| format!("line {i} of the body\n").into_bytes())
        .collect();
    for alg in PREFERENCE {
        let mut enc = alg.compressor(6).unwrap();
        let mut coded = Vec::new();
        let pieces: Vec<&[u8]> = text.chunks(65_536).collect();
        for (i, p) in pieces.iter().enumerate() {
            coded.extend_from_slice(&enc.encode(p, i + 1 == pieces.len()).unwrap());
        }
        assert!(coded.len() < text.len() / 5, "{alg:?}: {}", coded.len());
        let (name, i, o, _) = enc.stat();
        assert_eq!((name, i, o), (alg.as_str(), text.len(), coded.len()));
        let mut dec = alg.decompressor(true).unwrap();
        let mut plain = Vec::new();
        for p in coded.chunks(1000) {
            plain.extend_from_slice(&dec.encode(p, false).unwrap());
        }
        plain.extend_from_slice(&dec.encode(&[], true).unwrap());
        assert!(plain == text, "{alg:?}");
    }
}

#[test]
fn an_encoding_the_client_lacks_is_decoded_when_allowed() {
    let body = Bytes::from(vec![b'z'; 50_000]);
    let mut enc = Algorithm::Gzip.compressor(6).unwrap();
    let gz = enc.encode(&body, true).unwrap();
    for (decompress, accept, decoded) in [
        (true, "br", true),
        (true, "gzip", false),
        (false, "", false),
    ] {
        let mut ctx = ResponseCompressionCtx::new(6, decompress, false);
        ctx.request_filter(&req(accept));
        let mut r = resp(&[HTML, ("Content-Encoding", "gzip")]);
        ctx.response_header_filter(&mut r, false);
        assert_eq!(ctx.is_coding(), decoded, "{accept}");
        if decoded {
            assert!(r.headers.get(CONTENT_ENCODING).is_none());
            let out = ctx.try_body(Some(&gz), true).unwrap().unwrap();
            assert_eq!(out, body);
            assert_eq!(ctx.get_info().unwrap().0, "gzip");
        }
    }
    // A corrupt stream is an error, not a silent cut.
    let mut ctx = ResponseCompressionCtx::new(6, true, false);
    ctx.request_filter(&req(""));
    let mut r = resp(&[HTML, ("Content-Encoding", "gzip")]);
    ctx.response_header_filter(&mut r, false);
    assert!(ctx
        .try_body(Some(&Bytes::from_static(b"not gzip at all")), true)
        .is_err());
}

#[test]
fn q_values_parse_strictly() {
    assert_eq!(parse_q("1"), Some(1000));
    assert_eq!(parse_q("1.000"), Some(1000));
    assert_eq!(parse_q("0.25"), Some(250));
    assert_eq!(parse_q("0"), Some(0));
    assert_eq!(parse_q("1.5"), None);
    assert_eq!(parse_q("0.1234"), None);
    assert_eq!(parse_q("-1"), None);
}
