//! Pingora 0.8's public names and shapes, used as its documentation uses
//! them, with behaviour checked where there is some.
use std::net::{Ipv4Addr, SocketAddr as StdSocketAddr};

use pingora::prelude::*;
use pingora::upstreams::peer::{BasicPeer, Peer, PeerOptions, ALPN};

#[test]
fn error_items_at_every_root_pingora_has_them() {
    // pingora_core's root, pingora's root, and the preludes.
    let e: Box<pingora_core::Error> = pingora_core::Error::new(pingora_core::InternalError);
    assert_eq!(e.etype(), &pingora_core::ErrorType::InternalError);
    let r: pingora::Result<()> = Err(pingora::Error::new(pingora::ErrorType::ReadError));
    assert!(r.is_err());
    // `ErrorType`'s variants come with the prelude.
    let e = Error::explain(ConnectTimedout, "slow");
    assert_eq!(e.etype(), &ErrorType::ConnectTimedout);
    let _: pingora_core::BError = e;
}

#[test]
fn module_paths_of_pingoras_facade() {
    // pingora::{server, services, upstreams, connectors, protocols, apps, ...}
    let conf = pingora::server::configuration::ServerConf::default();
    let _connector = pingora::connectors::http::Connector::new(Some(
        pingora::connectors::ConnectorOptions::from_server_conf(&conf),
    ));
    let _ = pingora::connectors::http::Connector::new(Some(
        pingora::connectors::ConnectorOptions::new(16),
    ));
    let _: Option<pingora::protocols::SocketAddr> = None;
    drop(pingora::time::timeout(
        std::time::Duration::from_secs(1),
        async {},
    ));
    let _ = pingora_http::prelude::RequestHeader::build("GET", b"/", None).unwrap();
    let _: pingora_http::Version = pingora_http::Version::HTTP_11;
    let _: pingora_http::HMap = pingora_http::HMap::new();
    let _ = pingora_proxy::prelude::http_proxy_service::<NoProxy>;
    let _ = pingora_load_balancing::prelude::TcpHealthCheck::new();
    let _ = pingora_core::prelude::background_service::<
        pingora_load_balancing::LoadBalancer<pingora_load_balancing::selection::RoundRobin>,
    >;
}

/// A proxy with only the one phase every proxy has.
struct NoProxy;

#[async_trait::async_trait]
impl ProxyHttp for NoProxy {
    type CTX = ();
    fn new_ctx(&self) {}
    async fn upstream_peer(&self, _s: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            "127.0.0.1:80",
            false,
            String::new(),
        )))
    }
}

#[test]
fn http_peer_new_takes_any_address_and_turns_tls_on() {
    // A string, a tuple, a std socket address: infallible, as Pingora's.
    let a = HttpPeer::new("127.0.0.1:443", true, "one.example".to_string());
    let b = HttpPeer::new(("127.0.0.1", 443), true, "one.example".to_string());
    let c = HttpPeer::new(
        StdSocketAddr::from((Ipv4Addr::LOCALHOST, 443)),
        true,
        "one.example".to_string(),
    );
    for p in [&a, &b, &c] {
        assert!(p.is_tls() && p.tls());
        assert_eq!(p.sni(), "one.example");
        assert_eq!(p.address().to_string(), "127.0.0.1:443");
    }
    assert_eq!(a.reuse_hash(), b.reuse_hash());
    // Debug, as derived in Pingora.
    assert!(format!("{a:?}").contains("one.example"));
    // The fallible form stays, as an addition.
    assert!(HttpPeer::try_new("not an address", false, String::new()).is_err());
}

#[test]
#[should_panic]
fn http_peer_new_panics_on_an_address_that_resolves_to_nothing() {
    let _ = HttpPeer::new("not an address", false, String::new());
}

#[test]
fn basic_peer_and_peer_options() {
    let p = BasicPeer::new("127.0.0.1:25");
    assert!(!p.tls());
    assert_eq!(p.address().to_string(), "127.0.0.1:25");
    let mut o = PeerOptions::new();
    o.set_http_version(2, 1);
    assert_eq!(o.alpn, ALPN::H2H1);
    o.set_http_version(2, 2);
    assert_eq!(o.alpn, ALPN::H2);
    o.set_http_version(1, 1);
    assert_eq!(o.alpn, ALPN::H1);
    let mut peer = HttpPeer::new("127.0.0.1:80", false, String::new());
    peer.options.set_http_version(2, 2);
    assert_eq!(peer.options.alpn, ALPN::H2);
}

#[tokio::test]
async fn load_balancer_as_pingora_sets_it_up() {
    let mut upstreams =
        LoadBalancer::<RoundRobin>::try_from_iter(["127.0.0.1:1", "127.0.0.1:2"]).unwrap();
    upstreams.set_health_check(TcpHealthCheck::new());
    upstreams.parallel_health_check = true;
    // Nothing listens on ports 1 and 2: one round marks both down.
    upstreams
        .backends()
        .run_health_check(upstreams.parallel_health_check)
        .await;
    assert!(upstreams.select(b"", 256).is_none());
    // A backend is an address for `HttpPeer::new`.
    let all = LoadBalancer::<RoundRobin>::try_from_iter(["127.0.0.1:8080"]).unwrap();
    let b = all.select(b"", 1).unwrap();
    let peer = HttpPeer::new(b, false, String::new());
    assert_eq!(peer.address().to_string(), "127.0.0.1:8080");
}

#[test]
fn error_api_as_pingora_has_it() {
    use pingora_error::{ErrorTrait, ImmutStr, OrErr, RetryType};
    const MY_ERROR: ErrorType = ErrorType::new("MyError");
    const MY_CODE: ErrorType = ErrorType::new_code("MyCode", 429);
    let e = Error::new(MY_ERROR).more_context("while testing");
    assert_eq!(e.etype(), &MY_ERROR);
    assert_eq!(
        e.context.as_ref().map(|c| c.as_str()),
        Some("while testing")
    );
    assert_eq!(Error::new(MY_CODE).etype().as_str(), "MyCode");
    // `or_fail` without a kind: an internal error with the cause kept.
    let r: std::result::Result<(), std::io::Error> = Err(std::io::Error::other("disk"));
    let e = r.or_fail().unwrap_err();
    assert_eq!(e.etype(), &InternalError);
    assert!(e.root_cause().to_string().contains("disk"));
    // The source as a string, empty when unset.
    assert_eq!(Error::new_up(ReadError).source_str(), "Upstream");
    assert_eq!(Error::new(ReadError).source_str(), "");
    let mut e = Error::new(ReadError);
    e.as_down();
    assert_eq!(e.esource(), &ErrorSource::Downstream);
    e.set_context(ImmutStr::from("ctx"));
    assert!(!e.context.as_ref().unwrap().is_owned());
    let _: &dyn ErrorTrait = &*e;
    // The root kind under causes.
    let inner = Error::new(ConnectRefused);
    let outer = Error::because(ConnectProxyFailure, "via proxy", inner);
    assert_eq!(outer.root_etype(), &ConnectRefused);
    let r: Result<()> = Error::err_down(WriteError);
    assert!(r.is_err());
    // `ReusedOnly` settled by whether the connection was reused.
    let mut retry = RetryType::ReusedOnly;
    retry.decide_reuse(true);
    assert!(retry.retry());
    let mut retry = RetryType::ReusedOnly;
    retry.decide_reuse(false);
    assert!(!retry.retry());
}

#[test]
fn header_helpers_as_pingora_has_them() {
    let mut resp = ResponseHeader::build_no_case(200, None).unwrap();
    resp.set_content_length(42).unwrap();
    assert_eq!(resp.headers.get("content-length").unwrap(), "42");
    let req = RequestHeader::build_no_case("GET", b"/a/b?c=d", None).unwrap();
    assert_eq!(req.raw_path(), b"/a/b?c=d");
}

#[test]
fn http_peer_fields_as_pingora_has_them() {
    use pingora::upstreams::peer::Scheme;
    let mut p = HttpPeer::new("127.0.0.1:443", true, "one.example".to_string());
    assert_eq!(p.scheme, Scheme::HTTPS);
    assert_eq!(p.scheme.to_string(), "HTTPS");
    // The scheme is the TLS switch.
    p.scheme = Scheme::HTTP;
    assert!(!p.is_tls());
    // A group key keeps connections apart.
    let same = p.clone();
    p.group_key = 1;
    assert_ne!(p.reuse_hash(), same.reuse_hash());
    assert!(p.client_cert_key.is_none() && p.proxy.is_none());
    // Through a CONNECT proxy on a Unix socket.
    let via = HttpPeer::new_proxy(
        "/run/proxy.sock",
        "10.0.0.1".parse().unwrap(),
        8443,
        true,
        "inner.example",
        std::collections::BTreeMap::new(),
    );
    let proxy = via.get_proxy().expect("a proxy");
    assert_eq!((proxy.host.as_str(), proxy.port), ("10.0.0.1", 8443));
    assert_eq!(&*proxy.next_hop, std::path::Path::new("/run/proxy.sock"));
    assert!(via.is_tls());
    // The options through the trait, as Pingora's.
    let mut q = HttpPeer::new("127.0.0.1:80", false, String::new());
    q.get_mut_peer_options().unwrap().idle_timeout = None;
    assert_eq!(q.get_peer_options().unwrap().idle_timeout, None);
}

#[test]
fn header_parts_edited_directly() {
    use pingora_http::{RequestHeader, ResponseHeader};
    let mut req = RequestHeader::build("GET", b"/a", None).unwrap();
    req.insert_header("Host", "example").unwrap();
    // Pingora programs write the parts through `DerefMut`.
    req.headers.insert("x-added", "1".parse().unwrap());
    req.uri = "/b".parse().unwrap();
    req.method = pingora_http::Method::POST;
    assert_eq!(
        &req.to_wire()[..],
        &b"POST /b HTTP/1.1\r\nHost: example\r\nx-added: 1\r\n\r\n"[..]
    );
    assert_eq!(req.as_owned_parts().uri, "/b");
    let mut resp = ResponseHeader::build(200, None).unwrap();
    // `append_header` says whether the name was already there.
    assert!(!resp.append_header("Set-Cookie", "a=1").unwrap());
    assert!(resp.append_header("Set-Cookie", "b=2").unwrap());
    resp.status = pingora_http::StatusCode::ACCEPTED;
    assert_eq!(resp.status(), 202);
}

/// Pingora's HTTP client, as its docs use it: a request to a local server
/// of the test's own, the connection pooled with an idle timeout.
#[tokio::test]
async fn http_client_with_pingoras_names() {
    use pingora::connectors::http::Connector;
    use pingora::connectors::ConnectorOptions;
    use pingora::protocols::http::client::HttpSession;
    use pingora_http::RequestHeader;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        for _ in 0..2 {
            let mut got = Vec::new();
            let mut b = [0u8; 1024];
            while !got.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut b).await.unwrap();
                got.extend_from_slice(&b[..n]);
            }
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
                .await
                .unwrap();
        }
    });
    let connector = Connector::new(Some(ConnectorOptions::new(8)));
    let peer = HttpPeer::new(("127.0.0.1", port), false, String::new());
    for round in 0..2 {
        let (mut session, reused): (HttpSession, bool) =
            connector.get_http_session(&peer).await.unwrap();
        assert_eq!(reused, round == 1);
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("Host", "test").unwrap();
        session.write_request_header(Box::new(req)).await.unwrap();
        session.finish_request_body().await.unwrap();
        session.read_response_header().await.unwrap();
        assert_eq!(session.response_header().unwrap().status, 200);
        let body = session.read_response_body().await.unwrap().unwrap();
        assert_eq!(&body[..], b"hi");
        assert!(session.read_response_body().await.unwrap().is_none());
        assert!(session.response_done());
        assert!(session.as_http1().is_some() && session.stream().is_some());
        assert_eq!(
            session.server_addr().map(|a| a.to_string()),
            Some(format!("127.0.0.1:{port}"))
        );
        connector
            .release_http_session(session, &peer, Some(std::time::Duration::from_secs(5)))
            .await;
    }
    server.await.unwrap();
}

/// A health check written against Pingora's trait: thresholds through
/// `health_threshold`, state changes reported to `health_status_change`.
#[tokio::test]
async fn health_checks_with_pingoras_trait() {
    use pingora_load_balancing::health_check::{HealthCheck, HttpHealthCheck};
    use pingora_load_balancing::{selection::RoundRobin, Backend, LoadBalancer};
    use std::sync::{Arc, Mutex};

    #[derive(Default)]
    struct DownOn81(Arc<Mutex<Vec<(String, bool)>>>);

    #[async_trait::async_trait]
    impl HealthCheck for DownOn81 {
        async fn check(&self, target: &Backend) -> Result<()> {
            if target.addr.to_string().ends_with(":81") {
                return Error::e_explain(ConnectRefused, "down");
            }
            Ok(())
        }
        fn health_threshold(&self, _success: bool) -> usize {
            1
        }
        async fn health_status_change(&self, target: &Backend, healthy: bool) {
            self.0
                .lock()
                .unwrap()
                .push((target.addr.to_string(), healthy));
        }
    }

    let changes = Arc::new(Mutex::new(vec![]));
    let mut lb: LoadBalancer<RoundRobin> =
        LoadBalancer::try_from_iter(["127.0.0.1:80", "127.0.0.1:81"]).unwrap();
    lb.set_health_check(Box::new(DownOn81(changes.clone())));
    lb.health_check_frequency = Some(std::time::Duration::from_secs(1));
    lb.backends().run_health_check(false).await;
    for _ in 0..4 {
        let b = lb.select(b"", 8).unwrap();
        assert_eq!(b.addr.to_string(), "127.0.0.1:80");
    }
    assert_eq!(
        *changes.lock().unwrap(),
        vec![("127.0.0.1:81".to_string(), false)]
    );

    // Pingora's HTTP check: built infallibly, a header-only validator.
    let mut hc = HttpHealthCheck::new("example.test", false);
    hc.validator = Some(Box::new(|resp: &pingora_http::ResponseHeader| {
        if resp.headers.contains_key("x-ok") {
            Ok(())
        } else {
            Error::e_explain(InternalError, "no x-ok")
        }
    }));
    hc.port_override = Some(8080);
    assert_eq!(hc.health_threshold(true), 1);
    lb.set_health_check(Box::new(hc));
}

/// A custom L4 connector written against Pingora's paths: the connector
/// asks it (here it refuses), not the kernel.
#[tokio::test]
async fn custom_l4_with_pingoras_paths() {
    use pingora::connectors::L4Connect;
    use pingora::protocols::l4::socket::SocketAddr;
    use pingora::protocols::l4::stream::Stream;

    #[derive(Debug)]
    struct Nowhere;

    #[async_trait::async_trait]
    impl L4Connect for Nowhere {
        async fn connect(&self, addr: &SocketAddr) -> Result<Stream> {
            Error::e_explain(ConnectRefused, format!("nowhere: {addr}"))
        }
    }

    let mut peer = HttpPeer::new("127.0.0.1:9", false, String::new());
    peer.options.custom_l4 = Some(std::sync::Arc::new(Nowhere));
    let connector = pingora::connectors::http::Connector::new(None);
    let e = connector.get_http_session(&peer).await.err().unwrap();
    assert_eq!(e.etype(), &ConnectRefused);
    assert!(e.to_string().contains("nowhere: 127.0.0.1:9"), "{e}");
}

#[test]
fn server_conf_keys_and_small_entry_points_of_pingora() {
    use pingora::server::configuration::ServerConf;
    // A conf written for Pingora, its keys set in code.
    let conf = ServerConf {
        threads: 2,
        max_retries: 5,
        listener_tasks_per_fd: 1,
        upstream_debug_ssl_keylog: false,
        ..Default::default()
    };
    assert_eq!(conf.max_retries, 5);
    assert_eq!(ServerConf::default().max_retries, 16);
    // ... and a proxy made with it retries that often.
    let proxy = pingora_proxy::http_proxy(&std::sync::Arc::new(conf), NoProxy);
    assert_eq!(proxy.options().max_retries, 5);
    // `HttpServer::new_app`, `Listeners::tls`.
    struct Hello;
    #[async_trait::async_trait]
    impl pingora::apps::http_app::ServeHttp for Hello {
        async fn response(
            &self,
            _: &mut pingora::protocols::http::ServerSession,
        ) -> http::Response<Vec<u8>> {
            http::Response::new(b"hi".to_vec())
        }
    }
    let _ = pingora::apps::http_app::HttpServer::new_app(Hello);
    let tls =
        pingora::listeners::Listeners::tls("127.0.0.1:0", "/nonexistent.crt", "/nonexistent.key");
    let Err(e) = tls else {
        panic!("files that do not exist are refused at once");
    };
    assert!(e.to_string().contains("nonexistent"), "{e}");
}

/// A selection algorithm written against Pingora's traits (`BackendSelection`
/// with `Iter` and `Config`, `BackendIter`), and Pingora's names for the
/// shipped ones, in a load balancer.
#[tokio::test]
async fn selection_with_pingoras_traits() {
    use pingora_load_balancing::selection::{
        algorithms, weighted::Weighted, BackendIter, BackendSelection, Consistent, FNVHash,
    };
    use pingora_load_balancing::{Backend, LoadBalancer};
    use std::collections::BTreeSet;
    use std::sync::Arc;

    /// Always the highest address first, then downwards.
    struct Highest(Vec<Backend>);
    struct Down(Arc<Highest>, usize);

    impl BackendIter for Down {
        fn next(&mut self) -> Option<&Backend> {
            let b = self.0 .0.iter().rev().nth(self.1);
            self.1 += 1;
            b
        }
    }

    impl BackendSelection for Highest {
        type Iter = Down;
        type Config = ();
        fn build(backends: &BTreeSet<Backend>) -> Self {
            Highest(backends.iter().cloned().collect())
        }
        fn iter(self: &Arc<Self>, _key: &[u8]) -> Down {
            Down(self.clone(), 0)
        }
    }

    let addrs = ["127.0.0.1:80", "127.0.0.1:81", "127.0.0.1:82"];
    let lb: LoadBalancer<Highest> = LoadBalancer::try_from_iter(addrs).unwrap();
    assert_eq!(lb.select(b"", 3).unwrap().addr.to_string(), "127.0.0.1:82");
    let next = lb.select_with(b"", 3, |b, _| !b.addr.to_string().ends_with(":82"));
    assert_eq!(next.unwrap().addr.to_string(), "127.0.0.1:81");

    // Pingora's names for the shipped ones.
    let ring: LoadBalancer<Consistent> = LoadBalancer::try_from_iter(addrs).unwrap();
    let pick = ring.select(b"user-1", 3).unwrap();
    assert_eq!(ring.select(b"user-1", 3).unwrap(), pick);
    let fnv: LoadBalancer<FNVHash> = LoadBalancer::try_from_iter(addrs).unwrap();
    assert!(fnv.select(b"user-1", 3).is_some());
    let rr: LoadBalancer<Weighted<algorithms::RoundRobin>> =
        LoadBalancer::try_from_iter(addrs).unwrap();
    let (a, b) = (rr.select(b"", 3).unwrap(), rr.select(b"", 3).unwrap());
    assert_ne!(a, b);
}

/// Service discovery written against Pingora's trait: the set and which
/// backends are enabled; a disabled backend stays but is never picked.
#[tokio::test]
async fn discovery_with_enablement() {
    use pingora_load_balancing::discovery::ServiceDiscovery;
    use pingora_load_balancing::selection::RoundRobin;
    use pingora_load_balancing::{Backend, Backends, LoadBalancer};
    use std::collections::{BTreeSet, HashMap};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// Two backends; the second is disabled while `drain` is set.
    struct Registry {
        drain: Arc<AtomicBool>,
    }

    #[async_trait::async_trait]
    impl ServiceDiscovery for Registry {
        async fn discover(&self) -> Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
            let a = Backend::new("127.0.0.1:80")?;
            let b = Backend::new("127.0.0.1:81")?;
            let enabled = HashMap::from([(b.hash_key(), !self.drain.load(Ordering::Relaxed))]);
            Ok((BTreeSet::from([a, b]), enabled))
        }
    }

    let drain = Arc::new(AtomicBool::new(true));
    let backends = Backends::new(Box::new(Registry {
        drain: drain.clone(),
    }));
    let lb: LoadBalancer<RoundRobin> = LoadBalancer::from_backends(backends);
    lb.update().await.unwrap();
    assert_eq!(lb.backends().get_backend().len(), 2);
    for _ in 0..4 {
        assert_eq!(lb.select(b"", 2).unwrap().addr.to_string(), "127.0.0.1:80");
    }
    drain.store(false, Ordering::Relaxed);
    lb.update().await.unwrap();
    let picks: BTreeSet<String> = (0..4)
        .map(|_| lb.select(b"", 2).unwrap().addr.to_string())
        .collect();
    assert_eq!(picks.len(), 2, "{picks:?}");
    // The program may disable one itself.
    let b = Backend::new("127.0.0.1:80").unwrap();
    lb.backends().set_enable(&b, false);
    assert!(!lb.backends().ready(&b));
    assert_eq!(lb.select(b"", 2).unwrap().addr.to_string(), "127.0.0.1:81");
}

/// A `HealthObserve` callback on the shipped TCP check, as Pingora's: told
/// when a backend turns unhealthy (a closed port) and not for a healthy one.
#[tokio::test]
async fn health_observe_callback() {
    use pingora_load_balancing::health_check::{HealthObserve, TcpHealthCheck};
    use pingora_load_balancing::{selection::RoundRobin, Backend, LoadBalancer};
    use std::sync::{Arc, Mutex};

    struct Seen(Arc<Mutex<Vec<(String, bool)>>>);

    #[async_trait::async_trait]
    impl HealthObserve for Seen {
        async fn observe(&self, target: &Backend, healthy: bool) {
            self.0
                .lock()
                .unwrap()
                .push((target.addr.to_string(), healthy));
        }
    }

    let open = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (open_addr, closed_addr) = (
        open.local_addr().unwrap().to_string(),
        format!("127.0.0.1:{}", pingora_test_support::closed_port()),
    );
    let seen = Arc::new(Mutex::new(vec![]));
    let mut hc = TcpHealthCheck::new();
    hc.health_changed_callback = Some(Box::new(Seen(seen.clone())));
    let mut lb: LoadBalancer<RoundRobin> =
        LoadBalancer::try_from_iter([open_addr.as_str(), closed_addr.as_str()]).unwrap();
    lb.set_health_check(hc);
    lb.backends().run_health_check(false).await;
    assert_eq!(*seen.lock().unwrap(), vec![(closed_addr, false)]);
    assert_eq!(lb.select(b"", 2).unwrap().addr.to_string(), open_addr);
}

/// Pingora's `pingora-prometheus` crate: the service and its parts, as its
/// documentation builds them (served for real by the load_balancer
/// example's `metrics_count_known_traffic` test).
#[test]
fn prometheus_crate() {
    use pingora_core::services::listening::Service;
    let mut service = pingora_prometheus::prometheus_http_service();
    service.add_tcp("127.0.0.1:6150");
    let mut named = Service::new(
        "Prometheus HTTP".to_string(),
        pingora_prometheus::new_prometheus_server(),
    );
    named.add_tcp("127.0.0.1:6151");
    let _app: pingora_prometheus::PrometheusHttpApp = Default::default();
    let _ = pingora_prometheus::prometheus::gather();
}

/// TLS as Pingora programs write it: async `TlsAccept` callbacks through
/// `pingora_core::listeners`, the library's builder through `Deref`, the
/// `ext` helpers, and the digest's extension (served for real in
/// pingora-core's `tests/tls.rs`, with curl, over both TLS libraries).
#[test]
fn tls_settings_and_callbacks() {
    use async_trait::async_trait;
    use pingora_core::listeners::tls::TlsSettings;
    use pingora_core::listeners::{TlsAccept, TlsAcceptCallbacks};
    use pingora_core::protocols::tls::{SslDigest, TlsRef};
    use pingora_core::tls::ext;
    use pingora_core::tls::ssl::{NameType, SslVersion};
    use std::any::Any;
    use std::sync::Arc;

    struct Certs(pingora_core::tls::x509::X509);

    #[async_trait]
    impl TlsAccept for Certs {
        async fn certificate_callback(&self, ssl: &mut TlsRef) {
            if ssl.servername(NameType::HOST_NAME) == Some("example.test") {
                let _ = ext::ssl_use_certificate(ssl, &self.0);
            }
        }

        async fn handshake_complete_callback(
            &self,
            _ssl: &TlsRef,
        ) -> Option<Arc<dyn Any + Send + Sync>> {
            Some(Arc::new(7u32))
        }
    }

    let ca = pingora_core::utils::certs::TestCa::new("ca").unwrap();
    let cert = pingora_core::tls::x509::X509::from_pem(ca.ca.cert_pem().as_bytes()).unwrap();
    let callbacks: TlsAcceptCallbacks = Box::new(Certs(cert));
    let mut tls = TlsSettings::with_callbacks(callbacks).unwrap();
    tls.enable_h2();
    tls.set_alpn(pingora_core::listeners::ALPN::H2H1);
    tls.set_min_proto_version(Some(SslVersion::TLS1_2)).unwrap();
    assert!(tls.build().is_ok());
    let digest = SslDigest::default();
    assert!(digest.extension.get::<u32>().is_none());
}

/// Pingora's digest traits on a stream: a connected socket's digest and
/// its one timing layer.
#[tokio::test]
async fn digest_traits_on_streams() {
    use pingora_core::protocols::l4::L4Stream;
    use pingora_core::protocols::{GetProxyDigest, GetSocketDigest, GetTimingDigest, Stream};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = tokio::net::TcpStream::connect(addr).await.unwrap();
    let stream: Stream = Box::new(L4Stream::from_tcp(client));
    let socket = stream.get_socket_digest().expect("a socket digest");
    assert_eq!(
        socket.peer_addr().and_then(|a| a.as_inet().copied()),
        Some(addr)
    );
    assert_eq!(stream.get_timing_digest().len(), 1);
    assert!(stream.get_proxy_digest().is_none());
}

/// A `ServeHttp` app served without an `HttpServer` around it, as Pingora
/// programs write it (`Service::new(name, app)`), with listeners added.
#[test]
fn serve_http_apps_are_services_by_themselves() {
    use async_trait::async_trait;
    use pingora_core::apps::http_app::ServeHttp;
    use pingora_core::protocols::http::ServerSession;
    use pingora_core::services::listening::Service;

    struct Hello;

    #[async_trait]
    impl ServeHttp for Hello {
        async fn response(&self, _session: &mut ServerSession) -> http::Response<Vec<u8>> {
            http::Response::new(b"hello\n".to_vec())
        }
    }

    let mut service = Service::new("hello".to_string(), Hello);
    service.add_tcp("127.0.0.1:0");
    use pingora_core::services::Service as _;
    assert_eq!(service.name(), "hello");
}
