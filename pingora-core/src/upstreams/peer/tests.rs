//! Tests of `peer`.

use super::*;

#[test]
fn reuse_hash_separates_what_matters() {
    let a = HttpPeer::try_new("127.0.0.1:80", true, "a.test".into()).unwrap();
    let same = HttpPeer::try_new("127.0.0.1:80", true, "a.test".into()).unwrap();
    assert_eq!(a.reuse_hash(), same.reuse_hash());
    let mut others = vec![
        HttpPeer::try_new("127.0.0.1:81", true, "a.test".into()).unwrap(),
        HttpPeer::try_new("127.0.0.1:80", false, "a.test".into()).unwrap(),
        HttpPeer::try_new("127.0.0.1:80", true, "b.test".into()).unwrap(),
    ];
    let mut p = a.clone();
    p.options.verify_cert = false;
    others.push(p);
    let mut p = a.clone();
    p.options.alpn = ALPN::H2;
    others.push(p);
    let mut p = a.clone();
    p.options.bind_to = Some("127.0.0.2:0".parse().unwrap());
    others.push(p);
    for o in others {
        assert_ne!(a.reuse_hash(), o.reuse_hash(), "{o}");
    }
    // Timeouts do not make connections different.
    let mut p = a.clone();
    p.options.read_timeout = Some(Duration::from_secs(1));
    assert_eq!(a.reuse_hash(), p.reuse_hash());
}

/// A custom connector that makes nothing (only its identity matters).
#[derive(Debug)]
struct Nowhere;

#[async_trait::async_trait]
impl crate::connectors::L4Connect for Nowhere {
    async fn connect(&self, _addr: &SocketAddr) -> Result<crate::protocols::l4::L4Stream> {
        Error::e_explain(ConnectRefused, "nowhere")
    }
}

#[test]
fn a_new_custom_connector_never_shares_a_dropped_ones_pool_key() {
    let key = || {
        let mut p = HttpPeer::try_new("127.0.0.1:80", false, String::new()).unwrap();
        p.options.custom_l4 = Some(Arc::new(Nowhere));
        let k = p.reuse_hash();
        assert_eq!(k, p.reuse_hash(), "the same connector, the same key");
        k
    };
    // Each connector is dropped before the next is made, so the
    // allocator would hand the next one the same address: keyed by
    // address, they would share pooled streams.
    let keys: std::collections::HashSet<u64> = (0..100).map(|_| key()).collect();
    assert_eq!(keys.len(), 100);
}

#[test]
fn reads_and_writes_are_bounded_by_default_like_nginx() {
    let o = PeerOptions::default();
    assert_eq!(o.read_timeout, Some(Duration::from_secs(60)));
    assert_eq!(o.write_timeout, Some(Duration::from_secs(60)));
    assert_eq!(o.connection_timeout, Some(Duration::from_secs(10)));
}

#[test]
fn bad_addresses_are_errors() {
    assert!(HttpPeer::try_new("not an address", false, String::new()).is_err());
    assert!(HttpPeer::try_new("127.0.0.1", false, String::new()).is_err());
    assert!(matches!(
        HttpPeer::try_new("unix:/tmp/x.sock", false, String::new())
            .unwrap()
            ._address,
        SocketAddr::Unix(_)
    ));
}
