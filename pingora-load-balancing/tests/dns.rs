//! DNS discovery against a small DNS server the test runs on loopback:
//! A/AAAA with a fixed port, SRV with weights and ports, backends that
//! change live when the records do, answers kept for their TTL, and the
//! retry over TCP of a truncated answer.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use pingora_load_balancing::discovery::{Dns, DnsQuery};
use pingora_load_balancing::selection::RoundRobin;
use pingora_load_balancing::{Backends, LoadBalancer};

#[derive(Clone)]
enum Rr {
    Ip(IpAddr),
    Srv(u16, u16, u16, &'static str),
}

type Zone = Arc<Mutex<HashMap<(String, u16), Vec<Rr>>>>;

fn name_bytes(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for l in name.split('.') {
        out.push(l.len() as u8);
        out.extend_from_slice(l.as_bytes());
    }
    out.push(0);
    out
}

/// A DNS server on loopback (UDP, and TCP on the same port) answering
/// from `zone` with records of TTL `ttl`; it counts the queries it gets.
/// Names in `truncate` get an empty truncated (TC) answer over UDP, so a
/// resolver must ask again over TCP to see their records.
struct DnsServer {
    addr: std::net::SocketAddr,
    queries: Arc<AtomicUsize>,
}

/// The answer to query `q` (a whole DNS message) from `zone`; with
/// `truncated`, the TC flag and no records instead.
fn answer(q: &[u8], zone: &Zone, ttl: u32, truncated: bool) -> Vec<u8> {
    // The question: labels from offset 12, then type and class.
    let mut pos = 12;
    let mut labels = Vec::new();
    while q[pos] != 0 {
        let len = q[pos] as usize;
        labels.push(String::from_utf8_lossy(&q[pos + 1..pos + 1 + len]).into_owned());
        pos += 1 + len;
    }
    let qtype = u16::from_be_bytes([q[pos + 1], q[pos + 2]]);
    let qend = pos + 5;
    let name = labels.join(".");
    let answers = if truncated {
        vec![]
    } else {
        let zone = zone.lock().unwrap();
        zone.get(&(name, qtype)).cloned().unwrap_or_default()
    };
    let mut r = Vec::new();
    r.extend_from_slice(&q[0..2]);
    // QR, RD (and TC); RA, no error.
    r.extend_from_slice(&[if truncated { 0x83 } else { 0x81 }, 0x80, 0, 1]);
    r.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    r.extend_from_slice(&[0, 0, 0, 0]);
    r.extend_from_slice(&q[12..qend]);
    for a in answers {
        // The question's name, by pointer, as real servers do.
        r.extend_from_slice(&[0xc0, 12]);
        let rdata = match a {
            Rr::Ip(IpAddr::V4(ip)) => ip.octets().to_vec(),
            Rr::Ip(IpAddr::V6(ip)) => ip.octets().to_vec(),
            Rr::Srv(prio, weight, port, target) => {
                let mut d = Vec::new();
                d.extend_from_slice(&prio.to_be_bytes());
                d.extend_from_slice(&weight.to_be_bytes());
                d.extend_from_slice(&port.to_be_bytes());
                d.extend_from_slice(&name_bytes(target));
                d
            }
        };
        r.extend_from_slice(&qtype.to_be_bytes());
        r.extend_from_slice(&[0, 1]);
        r.extend_from_slice(&ttl.to_be_bytes());
        r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        r.extend_from_slice(&rdata);
    }
    r
}

/// The name a query asks about.
fn qname(q: &[u8]) -> String {
    let mut pos = 12;
    let mut labels = Vec::new();
    while pos < q.len() && q[pos] != 0 {
        let len = q[pos] as usize;
        labels.push(String::from_utf8_lossy(&q[pos + 1..pos + 1 + len]).into_owned());
        pos += 1 + len;
    }
    labels.join(".")
}

async fn dns_server_with(zone: Zone, ttl: u32, truncate: &'static [&'static str]) -> DnsServer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A UDP port whose TCP twin is free too.
    let (udp, tcp) = loop {
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = udp.local_addr().unwrap().port();
        if let Ok(tcp) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            break (udp, tcp);
        }
    };
    let addr = udp.local_addr().unwrap();
    let queries = Arc::new(AtomicUsize::new(0));
    let (z, n) = (zone.clone(), queries.clone());
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((len, from)) = udp.recv_from(&mut buf).await {
            n.fetch_add(1, Ordering::SeqCst);
            let q = &buf[..len];
            let truncated = truncate.contains(&qname(q).as_str());
            let _ = udp.send_to(&answer(q, &z, ttl, truncated), from).await;
        }
    });
    let n = queries.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = tcp.accept().await {
            let (zone, n) = (zone.clone(), n.clone());
            tokio::spawn(async move {
                // Each message with its two-byte length first.
                let mut len = [0u8; 2];
                while s.read_exact(&mut len).await.is_ok() {
                    let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
                    if s.read_exact(&mut q).await.is_err() {
                        return;
                    }
                    n.fetch_add(1, Ordering::SeqCst);
                    let r = answer(&q, &zone, ttl, false);
                    let _ = s.write_all(&(r.len() as u16).to_be_bytes()).await;
                    let _ = s.write_all(&r).await;
                }
            });
        }
    });
    DnsServer { addr, queries }
}

/// A server whose records may not be cached (TTL 0): every update sees
/// the zone as it is.
async fn dns_server(zone: Zone) -> std::net::SocketAddr {
    dns_server_with(zone, 0, &[]).await.addr
}

fn addrs(lb: &LoadBalancer<RoundRobin>) -> Vec<(String, usize)> {
    lb.backends()
        .get()
        .iter()
        .map(|b| (b.addr.to_string(), b.weight))
        .collect()
}

#[tokio::test]
async fn a_and_aaaa_with_live_updates() {
    let zone: Zone = Arc::default();
    zone.lock().unwrap().insert(
        ("app.test".into(), 1),
        vec![
            Rr::Ip("10.0.0.1".parse().unwrap()),
            Rr::Ip("10.0.0.2".parse().unwrap()),
        ],
    );
    zone.lock().unwrap().insert(
        ("app.test".into(), 28),
        vec![Rr::Ip("::1".parse().unwrap())],
    );
    let server = dns_server(zone.clone()).await;
    let dns = Dns::new(
        DnsQuery::Host {
            name: "app.test".into(),
            port: 8080,
        },
        server,
    );
    let lb: LoadBalancer<RoundRobin> = LoadBalancer::from_backends(Backends::new(dns));
    lb.update().await.unwrap();
    assert_eq!(
        addrs(&lb),
        vec![
            ("10.0.0.1:8080".into(), 1),
            ("10.0.0.2:8080".into(), 1),
            ("[::1]:8080".into(), 1)
        ]
    );
    // The records change: the next update follows, no restart.
    zone.lock().unwrap().insert(
        ("app.test".into(), 1),
        vec![Rr::Ip("10.0.0.3".parse().unwrap())],
    );
    zone.lock().unwrap().remove(&("app.test".into(), 28));
    lb.update().await.unwrap();
    assert_eq!(addrs(&lb), vec![("10.0.0.3:8080".into(), 1)]);
    assert_eq!(lb.select(b"", 1).unwrap().addr.to_string(), "10.0.0.3:8080");
}

#[tokio::test]
async fn srv_weights_ports_and_priorities() {
    let zone: Zone = Arc::default();
    zone.lock().unwrap().insert(
        ("_http._tcp.svc.test".into(), 33),
        vec![
            Rr::Srv(10, 3, 9001, "a.svc.test"),
            Rr::Srv(10, 1, 9002, "b.svc.test"),
            // A backup (higher priority value): not used while the others exist.
            Rr::Srv(20, 1, 9003, "c.svc.test"),
        ],
    );
    for (n, ip) in [
        ("a.svc.test", "10.1.0.1"),
        ("b.svc.test", "10.1.0.2"),
        ("c.svc.test", "10.1.0.3"),
    ] {
        zone.lock()
            .unwrap()
            .insert((n.into(), 1), vec![Rr::Ip(ip.parse().unwrap())]);
    }
    let server = dns_server(zone).await;
    let dns = Dns::new(
        DnsQuery::Srv {
            name: "_http._tcp.svc.test".into(),
        },
        server,
    );
    let lb: LoadBalancer<RoundRobin> = LoadBalancer::from_backends(Backends::new(dns));
    lb.update().await.unwrap();
    assert_eq!(
        addrs(&lb),
        vec![("10.1.0.1:9001".into(), 3), ("10.1.0.2:9002".into(), 1)]
    );
    // Weights carry through to the picks.
    let picks: Vec<String> = (0..8)
        .map(|_| lb.select(b"", 1).unwrap().addr.to_string())
        .collect();
    assert_eq!(picks.iter().filter(|p| *p == "10.1.0.1:9001").count(), 6);
}

#[tokio::test]
async fn no_answer_is_an_error_not_an_empty_set() {
    // A socket that never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut dns = Dns::new(
        DnsQuery::Host {
            name: "x.test".into(),
            port: 1,
        },
        silent.local_addr().unwrap(),
    );
    dns.set_timeout(std::time::Duration::from_millis(100));
    let lb: LoadBalancer<RoundRobin> = LoadBalancer::from_backends(Backends::new(dns));
    assert!(lb.update().await.is_err());
}

/// The load balancer as a background service: the first discovery at
/// once, then again every `update_frequency`, with no update by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_service_resolves_at_once_and_on_its_interval() {
    use pingora_core::services::background::BackgroundService;
    use std::time::{Duration, Instant};

    async fn until(what: &str, mut f: impl FnMut() -> bool) {
        let start = Instant::now();
        while !f() {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "timed out waiting for {what}"
            );
            pingora_timeout::sleep(Duration::from_millis(5)).await;
        }
    }

    let zone: Zone = Arc::default();
    zone.lock().unwrap().insert(
        ("bg.test".into(), 1),
        vec![Rr::Ip("10.2.0.1".parse().unwrap())],
    );
    let server = dns_server(zone.clone()).await;
    let query = || DnsQuery::Host {
        name: "bg.test".into(),
        port: 80,
    };

    // An interval far longer than the test: only a discovery at start
    // gives it backends.
    let mut lb: LoadBalancer<RoundRobin> =
        LoadBalancer::from_backends(Backends::new(Dns::new(query(), server)));
    lb.update_frequency = Some(Duration::from_secs(3600));
    let lb = Arc::new(lb);
    assert!(lb.select(b"", 1).is_none(), "no backends before discovery");
    let (tx, rx) = tokio::sync::watch::channel(false);
    let bg = {
        let lb = lb.clone();
        tokio::spawn(async move { lb.start(rx).await })
    };
    until("the first discovery", || lb.select(b"", 1).is_some()).await;
    assert_eq!(addrs(&lb), vec![("10.2.0.1:80".into(), 1)]);
    tx.send(true).unwrap();
    bg.await.unwrap();

    // A short interval: the service follows the records as they change.
    let mut lb: LoadBalancer<RoundRobin> =
        LoadBalancer::from_backends(Backends::new(Dns::new(query(), server)));
    lb.update_frequency = Some(Duration::from_millis(50));
    let lb = Arc::new(lb);
    let (tx, rx) = tokio::sync::watch::channel(false);
    let bg = {
        let lb = lb.clone();
        tokio::spawn(async move { lb.start(rx).await })
    };
    until("the first discovery", || lb.select(b"", 1).is_some()).await;
    zone.lock().unwrap().insert(
        ("bg.test".into(), 1),
        vec![
            Rr::Ip("10.2.0.2".parse().unwrap()),
            Rr::Ip("10.2.0.3".parse().unwrap()),
        ],
    );
    until("the new records", || addrs(&lb).len() == 2).await;
    assert_eq!(
        addrs(&lb),
        vec![("10.2.0.2:80".into(), 1), ("10.2.0.3:80".into(), 1)]
    );
    // The selection was rebuilt with them.
    let mut picks: Vec<String> = (0..4)
        .map(|_| lb.select(b"", 1).unwrap().addr.to_string())
        .collect();
    picks.sort();
    picks.dedup();
    assert_eq!(picks, vec!["10.2.0.2:80", "10.2.0.3:80"]);
    // And again: a record removed is a backend gone.
    zone.lock().unwrap().insert(
        ("bg.test".into(), 1),
        vec![Rr::Ip("10.2.0.3".parse().unwrap())],
    );
    until("the record removed", || addrs(&lb).len() == 1).await;
    assert_eq!(lb.select(b"", 2).unwrap().addr.to_string(), "10.2.0.3:80");
    tx.send(true).unwrap();
    bg.await.unwrap();
}

/// An answer is kept for its TTL: updates within it ask the server
/// nothing and keep the backends; a shorter cap (`set_max_ttl`) makes the
/// next update ask again and follow the records.
#[tokio::test]
async fn answers_are_kept_for_their_ttl() {
    let zone: Zone = Arc::default();
    let a = |ip: &str| vec![Rr::Ip(ip.parse().unwrap())];
    zone.lock()
        .unwrap()
        .insert(("ttl.test".into(), 1), a("10.3.0.1"));
    // An AAAA record too: an empty answer (no SOA) is not cached.
    zone.lock()
        .unwrap()
        .insert(("ttl.test".into(), 28), a("::2"));
    let server = dns_server_with(zone.clone(), 300, &[]).await;
    let query = DnsQuery::Host {
        name: "ttl.test".into(),
        port: 80,
    };
    let lb: LoadBalancer<RoundRobin> =
        LoadBalancer::from_backends(Backends::new(Dns::new(query.clone(), server.addr)));
    lb.update().await.unwrap();
    let asked = server.queries.load(Ordering::SeqCst);
    assert!(asked >= 1);
    zone.lock()
        .unwrap()
        .insert(("ttl.test".into(), 1), a("10.3.0.2"));
    lb.update().await.unwrap();
    assert_eq!(
        addrs(&lb),
        vec![("10.3.0.1:80".into(), 1), ("[::2]:80".into(), 1)],
        "cached for 300 s"
    );
    assert_eq!(server.queries.load(Ordering::SeqCst), asked, "no new query");

    // Capped at 1 s: once that passed, the next update asks again.
    let mut dns = Dns::new(query, server.addr);
    dns.set_max_ttl(std::time::Duration::from_secs(1));
    let lb: LoadBalancer<RoundRobin> = LoadBalancer::from_backends(Backends::new(dns));
    lb.update().await.unwrap();
    assert_eq!(
        addrs(&lb),
        vec![("10.3.0.2:80".into(), 1), ("[::2]:80".into(), 1)]
    );
    zone.lock()
        .unwrap()
        .insert(("ttl.test".into(), 1), a("10.3.0.3"));
    // The cap is what is under test: past it, the answer is stale.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    lb.update().await.unwrap();
    assert_eq!(
        addrs(&lb),
        vec![("10.3.0.3:80".into(), 1), ("[::2]:80".into(), 1)]
    );
}

/// A truncated UDP answer (TC) is asked again over TCP, where the whole
/// answer comes.
#[tokio::test]
async fn a_truncated_answer_is_asked_again_over_tcp() {
    let zone: Zone = Arc::default();
    zone.lock().unwrap().insert(
        ("big.test".into(), 1),
        (1..=40)
            .map(|i| Rr::Ip(format!("10.4.0.{i}").parse().unwrap()))
            .collect(),
    );
    let server = dns_server_with(zone, 0, &["big.test"]).await;
    let dns = Dns::new(
        DnsQuery::Host {
            name: "big.test".into(),
            port: 80,
        },
        server.addr,
    );
    let lb: LoadBalancer<RoundRobin> = LoadBalancer::from_backends(Backends::new(dns));
    lb.update().await.unwrap();
    assert_eq!(addrs(&lb).len(), 40);
}

/// A name that does not exist (NXDOMAIN) or has no records: no backends,
/// not an error.
#[tokio::test]
async fn a_missing_name_is_an_empty_set() {
    let server = dns_server(Zone::default()).await;
    let dns = Dns::new(
        DnsQuery::Host {
            name: "gone.test".into(),
            port: 80,
        },
        server,
    );
    let lb: LoadBalancer<RoundRobin> = LoadBalancer::from_backends(Backends::new(dns));
    lb.update().await.unwrap();
    assert!(addrs(&lb).is_empty());
}
