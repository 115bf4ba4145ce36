//! Tests of `proxy_protocol`.

use super::*;

fn sa(s: &str) -> std::net::SocketAddr {
    s.parse().unwrap()
}

#[test]
fn v1_tcp4_tcp6_unknown() {
    let (h, n) = ProxyHeader::parse(b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET")
        .unwrap()
        .unwrap();
    assert_eq!(n, 45);
    assert_eq!(h.source, Some(sa("192.0.2.1:56324").into()));
    assert_eq!(h.destination, Some(sa("198.51.100.2:443").into()));
    let (h, _) = ProxyHeader::parse(b"PROXY TCP6 2001:db8::1 ::1 1 65535\r\n")
        .unwrap()
        .unwrap();
    assert_eq!(h.source, Some(sa("[2001:db8::1]:1").into()));
    let (h, n) = ProxyHeader::parse(b"PROXY UNKNOWN whatever\r\n")
        .unwrap()
        .unwrap();
    assert_eq!((h.source, n), (None, 24));
    // Round trip.
    let h = ProxyHeader::new(ProxyVersion::V1, sa("10.0.0.1:1000"), sa("10.0.0.2:80"));
    assert_eq!(h.to_bytes(), b"PROXY TCP4 10.0.0.1 10.0.0.2 1000 80\r\n");
    let (back, _) = ProxyHeader::parse(&h.to_bytes()).unwrap().unwrap();
    assert_eq!(back, h);
}

#[test]
fn v1_incomplete_and_malformed() {
    for partial in [
        &b"PRO"[..],
        b"PROXY TCP4 1.2.3.4",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r",
    ] {
        assert_eq!(ProxyHeader::parse(partial), Ok(None), "{partial:?}");
    }
    for bad in [
        &b"GET / HTTP/1.1\r\n"[..],
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",
        b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
        b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
        b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
    ] {
        assert!(
            ProxyHeader::parse(bad).is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    let long = [b"PROXY UNKNOWN ".as_slice(), &[b'a'; 100]].concat();
    assert!(ProxyHeader::parse(&long).is_err());
}

#[test]
fn v2_round_trip_and_tlvs() {
    for (s, d) in [
        ("10.1.2.3:4000", "10.9.9.9:443"),
        ("[2001:db8::7]:5", "[::1]:80"),
    ] {
        let mut h = ProxyHeader::new(ProxyVersion::V2, sa(s), sa(d));
        h.tlvs = vec![(0x04, b"noop".to_vec()), (0x01, b"h2".to_vec())];
        let bytes = h.to_bytes();
        let mut more = bytes.clone();
        more.extend_from_slice(b"\x16\x03\x01");
        let (back, n) = ProxyHeader::parse(&more).unwrap().unwrap();
        assert_eq!((back, n), (h, bytes.len()));
        // Every strict prefix asks for more.
        for i in 0..bytes.len() {
            assert_eq!(ProxyHeader::parse(&bytes[..i]), Ok(None), "prefix {i}");
        }
    }
    // Mixed families go as IPv6.
    let h = ProxyHeader::new(ProxyVersion::V2, sa("1.2.3.4:1"), sa("[::1]:2"));
    let (back, _) = ProxyHeader::parse(&h.to_bytes()).unwrap().unwrap();
    assert_eq!(back.source, Some(sa("[::ffff:1.2.3.4]:1").into()));
    // LOCAL: no addresses.
    let local = ProxyHeader {
        version: ProxyVersion::V2,
        source: None,
        destination: None,
        tlvs: vec![],
    };
    let bytes = local.to_bytes();
    assert_eq!(&bytes[12..16], &[0x20, 0x00, 0, 0]);
    assert_eq!(ProxyHeader::parse(&bytes).unwrap().unwrap().0, local);
    // Unix addresses.
    let unix = ProxyHeader {
        version: ProxyVersion::V2,
        source: Some(SocketAddr::Unix(Some("/run/a".into()))),
        destination: Some(SocketAddr::Unix(Some("/run/b".into()))),
        tlvs: vec![],
    };
    assert_eq!(
        ProxyHeader::parse(&unix.to_bytes()).unwrap().unwrap().0,
        unix
    );
}

#[test]
fn v2_malformed() {
    let good = ProxyHeader::new(ProxyVersion::V2, sa("1.2.3.4:1"), sa("5.6.7.8:2")).to_bytes();
    let with = |i: usize, b: u8| {
        let mut v = good.clone();
        v[i] = b;
        v
    };
    // Version 1 in the v2 framing, unknown command, family, transport.
    for v in [
        with(12, 0x11),
        with(12, 0x2f),
        with(13, 0x41),
        with(13, 0x13),
    ] {
        assert!(ProxyHeader::parse(&v).is_err(), "{v:?}");
    }
    // Address block shorter than the family needs.
    let mut short = good[..16].to_vec();
    short[15] = 4;
    short.extend_from_slice(&[0; 4]);
    assert!(ProxyHeader::parse(&short).is_err());
    // A TLV running past the end.
    let mut t = good.clone();
    t[15] += 3;
    t.extend_from_slice(&[1, 0, 9]);
    assert!(ProxyHeader::parse(&t).is_err());
    // Too long.
    let mut long = good[..16].to_vec();
    long[14] = 0xff;
    assert!(ProxyHeader::parse(&long).is_err());
    // A broken signature.
    let mut sig = good.clone();
    sig[5] = b'x';
    assert!(ProxyHeader::parse(&sig).is_err());
}
