//! The conf's `client_bind_to_ipv4` / `client_bind_to_ipv6`: outgoing
//! connections leave from those addresses, as the upstream sees them.
//! Linux routes all of 127.0.0.0/8 to the loopback device, so 127.0.0.2 and
//! 127.0.0.3 are usable source addresses without any set-up.

use std::net::{IpAddr, SocketAddr};

use pingora_core::connectors::http::Connector;
use pingora_core::connectors::{ConnectorOptions, TransportConnector};
use pingora_core::server::ServerConf;
use pingora_core::upstreams::peer::{BasicPeer, HttpPeer};
use tokio::net::TcpListener;

fn conf(v4: &[&str], v6: &[&str]) -> ServerConf {
    let text = format!(
        "version: 1\nclient_bind_to_ipv4: [{}]\nclient_bind_to_ipv6: [{}]\n",
        v4.join(", "),
        v6.join(", ")
    );
    ServerConf::from_yaml(&text).unwrap()
}

/// Connect through `c` to the listener, and return the source address the
/// listener saw.
async fn seen_from(c: &TransportConnector, l: &TcpListener, peer: &BasicPeer) -> SocketAddr {
    let (conn, accepted) = tokio::join!(c.new_stream(peer), l.accept());
    let _stream = conn.unwrap();
    accepted.unwrap().1
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test]
async fn outgoing_connections_leave_from_the_conf_address() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer = BasicPeer::try_new(&l.local_addr().unwrap().to_string()).unwrap();

    // No conf: the system picks the source, the destination's own address.
    let plain = TransportConnector::new(None);
    assert_eq!(seen_from(&plain, &l, &peer).await.ip(), ip("127.0.0.1"));

    // One address: every connection comes from it.
    let c = TransportConnector::new(Some(ConnectorOptions::from_server_conf(&conf(
        &["127.0.0.2"],
        &[],
    ))));
    for _ in 0..3 {
        assert_eq!(seen_from(&c, &l, &peer).await.ip(), ip("127.0.0.2"));
    }

    // Several: each is used.
    let c = TransportConnector::new(Some(ConnectorOptions::from_server_conf(&conf(
        &["127.0.0.2", "127.0.0.3"],
        &[],
    ))));
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(seen_from(&c, &l, &peer).await.ip());
    }
    assert!(seen.contains(&ip("127.0.0.2")), "{seen:?}");
    assert!(seen.contains(&ip("127.0.0.3")), "{seen:?}");
    assert!(seen
        .iter()
        .all(|a| *a == ip("127.0.0.2") || *a == ip("127.0.0.3")));

    // A peer's own bind_to wins over the conf.
    let mut own = peer.clone();
    own.options.bind_to = Some("127.0.0.4:0".parse().unwrap());
    assert_eq!(seen_from(&c, &l, &own).await.ip(), ip("127.0.0.4"));
}

#[tokio::test]
async fn each_family_uses_its_own_list() {
    // An IPv6 peer with only an IPv4 source listed: no bind (binding an
    // IPv6 socket to an IPv4 address would fail the connect).
    let l6 = TcpListener::bind("[::1]:0").await.unwrap();
    let peer6 = BasicPeer::try_new(&l6.local_addr().unwrap().to_string()).unwrap();
    let c = TransportConnector::new(Some(ConnectorOptions::from_server_conf(&conf(
        &["127.0.0.2"],
        &[],
    ))));
    assert_eq!(seen_from(&c, &l6, &peer6).await.ip(), ip("::1"));

    // Both listed: each peer gets its family's address.
    let c = TransportConnector::new(Some(ConnectorOptions::from_server_conf(&conf(
        &["127.0.0.3"],
        &["::1"],
    ))));
    assert_eq!(seen_from(&c, &l6, &peer6).await.ip(), ip("::1"));
    let l4 = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer4 = BasicPeer::try_new(&l4.local_addr().unwrap().to_string()).unwrap();
    assert_eq!(seen_from(&c, &l4, &peer4).await.ip(), ip("127.0.0.3"));
}

#[tokio::test]
async fn http_connector_binds_too() {
    // The HTTP connector (what the proxy uses) takes the conf's addresses.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer =
        HttpPeer::try_new(&l.local_addr().unwrap().to_string(), false, String::new()).unwrap();
    let c = Connector::new(Some(ConnectorOptions::from_server_conf(&conf(
        &["127.0.0.5"],
        &[],
    ))));
    let (session, accepted) = tokio::join!(c.get_http_session(&peer), l.accept());
    let (_session, reused) = session.unwrap();
    assert!(!reused);
    assert_eq!(accepted.unwrap().1.ip(), ip("127.0.0.5"));
}
