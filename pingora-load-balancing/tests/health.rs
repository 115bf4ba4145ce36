//! Health checks against real listeners that the test stops and starts,
//! outlier ejection and its cap, and the load balancer as a background
//! service.

use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pingora_core::services::background::BackgroundService;
use pingora_load_balancing::health_check::{HttpHealthCheck, TcpHealthCheck};
use pingora_load_balancing::selection::RoundRobin;
use pingora_load_balancing::{LoadBalancer, OutlierEjection};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How an [`Upstream`] answers: the status (changeable while it runs),
/// and when; it records each request's Host header.
#[derive(Clone)]
struct Answer {
    status: Arc<AtomicU16>,
    /// If set, answer only once every request the barrier counts is in
    /// (the upstreams that share it each have theirs).
    together: Option<Arc<tokio::sync::Barrier>>,
    hosts: Arc<Mutex<Vec<String>>>,
}

impl Answer {
    fn status(status: u16) -> Answer {
        Answer {
            status: Arc::new(AtomicU16::new(status)),
            together: None,
            hosts: Arc::default(),
        }
    }
}

/// Read one request head from `s`, record its Host, and answer as told.
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, a: Answer) {
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !got.ends_with(b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&got);
    let host = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("host")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_default();
    a.hosts.lock().unwrap().push(host);
    if let Some(all) = &a.together {
        all.wait().await;
    }
    let status = a.status.load(Ordering::Relaxed);
    let resp = format!("HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
    let _ = s.write_all(resp.as_bytes()).await;
    let _ = s.shutdown().await;
}

/// A listener that answers every HTTP request as its [`Answer`] says,
/// until stopped.
struct Upstream {
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    async fn start(addr: &str, status: u16) -> Upstream {
        Self::with(addr, Answer::status(status)).await
    }

    async fn with(addr: &str, a: Answer) -> Upstream {
        let l = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = l.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(answer(s, a.clone()));
            }
        });
        Upstream { addr, task }
    }

    fn stop(self) {
        self.task.abort();
    }
}

async fn until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        pingora_timeout::sleep(Duration::from_millis(5)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_check_ejects_a_stopped_backend_and_takes_it_back() {
    let a = Upstream::start("127.0.0.1:0", 200).await;
    let b = Upstream::start("127.0.0.1:0", 200).await;
    let b_addr = b.addr;
    let mut lb: LoadBalancer<RoundRobin> =
        LoadBalancer::try_from_iter([a.addr.to_string(), b.addr.to_string()]).unwrap();
    let mut hc = TcpHealthCheck::new();
    hc.consecutive_failure = 2;
    hc.consecutive_success = 2;
    lb.backends_mut().set_health_check(hc);
    let seen: Arc<Mutex<Vec<(String, bool)>>> = Arc::default();
    let s = seen.clone();
    lb.backends_mut()
        .set_health_observer(Box::new(move |b, healthy| {
            s.lock().unwrap().push((b.addr.to_string(), healthy));
        }));
    let interval = Duration::from_millis(50);
    lb.health_check_frequency = Some(interval);
    let lb = Arc::new(lb);
    let (tx, rx) = tokio::sync::watch::channel(false);
    let bg = {
        let lb = lb.clone();
        tokio::spawn(async move { lb.start(rx).await })
    };
    let b_backend = lb
        .backends()
        .get()
        .iter()
        .find(|x| x.addr.to_string() == b_addr.to_string())
        .unwrap()
        .clone();

    b.stop();
    // Out within threshold × interval (plus a check's own time and slack).
    let took = until(Duration::from_secs(5), "b to be marked down", || {
        !lb.backends().ready(&b_backend)
    })
    .await;
    assert!(
        took < interval * 2 + Duration::from_millis(500),
        "took {took:?}"
    );
    for _ in 0..20 {
        assert_eq!(
            lb.select(b"", 4).unwrap().addr.to_string(),
            a.addr.to_string()
        );
    }
    // Back on the same port: back in rotation.
    let b = Upstream::start(&b_addr.to_string(), 200).await;
    // Back within threshold × interval likewise.
    let took = until(Duration::from_secs(5), "b to be back", || {
        lb.backends().ready(&b_backend)
    })
    .await;
    assert!(
        took < interval * 2 + Duration::from_millis(500),
        "took {took:?}"
    );
    let picks: Vec<String> = (0..4)
        .map(|_| lb.select(b"", 4).unwrap().addr.to_string())
        .collect();
    assert!(picks.contains(&b_addr.to_string()));
    assert_eq!(
        *seen.lock().unwrap(),
        vec![(b_addr.to_string(), false), (b_addr.to_string(), true)]
    );
    assert_eq!(lb.backends().health_changes(), 2);
    tx.send(true).unwrap();
    bg.await.unwrap();
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_check_wants_the_expected_status_and_validator() {
    let good = Upstream::start("127.0.0.1:0", 200).await;
    let bad = Upstream::start("127.0.0.1:0", 503).await;
    let lb: LoadBalancer<RoundRobin> =
        LoadBalancer::try_from_iter([good.addr.to_string(), bad.addr.to_string()]).unwrap();
    let mut lb = lb;
    let mut hc = HttpHealthCheck::new("health.test", false);
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    hc.body_validator = Some(Box::new(move |_resp, body| {
        c.fetch_add(1, Ordering::Relaxed);
        if body == b"ok" {
            Ok(())
        } else {
            pingora_error::Error::e_explain(pingora_error::ErrorType::InvalidInput, "bad body")
        }
    }));
    lb.backends_mut().set_health_check(Box::new(hc));
    lb.backends().run_health_check(true).await;
    let set = lb.backends().get();
    for b in set.iter() {
        let want = b.addr.to_string() == good.addr.to_string();
        assert_eq!(lb.backends().ready(b), want, "{}", b.addr);
    }
    assert_eq!(
        calls.load(Ordering::Relaxed),
        1,
        "the validator runs on a 200 only"
    );
}

#[tokio::test]
async fn outlier_ejection_grows_and_is_capped() {
    let addrs: Vec<String> = (1..=4).map(|i| format!("127.0.0.{i}:80")).collect();
    let mut lb: LoadBalancer<RoundRobin> = LoadBalancer::try_from_iter(&addrs).unwrap();
    lb.backends_mut().set_outlier_ejection(OutlierEjection {
        consecutive_errors: 3,
        base_ejection_time: Duration::from_millis(100),
        max_ejection_percent: 50,
        ..Default::default()
    });
    let set = lb.backends().get();
    let report = |i: usize, n: usize| {
        for _ in 0..n {
            lb.on_done(&set[i], Duration::from_millis(1), false);
        }
    };
    report(0, 2);
    assert!(
        !lb.backends().is_ejected(&set[0]),
        "2 errors are not enough"
    );
    lb.on_done(&set[0], Duration::from_millis(1), true);
    report(0, 2);
    assert!(
        !lb.backends().is_ejected(&set[0]),
        "a success resets the count"
    );
    report(0, 1);
    assert!(lb.backends().is_ejected(&set[0]));
    report(1, 3);
    assert!(lb.backends().is_ejected(&set[1]));
    // Half are out: the cap keeps the third in.
    report(2, 3);
    assert!(
        !lb.backends().is_ejected(&set[2]),
        "no more than 50% ejected"
    );
    for _ in 0..10 {
        let pick = lb.select(b"", 4).unwrap();
        assert!(pick == set[2] || pick == set[3]);
    }
    // The ejection ends by itself; the second one lasts twice as long.
    let first = until(Duration::from_secs(5), "the first ejection to end", || {
        !lb.backends().is_ejected(&set[0])
    })
    .await;
    report(0, 3);
    assert!(lb.backends().is_ejected(&set[0]));
    let second = until(Duration::from_secs(5), "the second ejection to end", || {
        !lb.backends().is_ejected(&set[0])
    })
    .await;
    assert!(
        second > first + Duration::from_millis(50),
        "{first:?} then {second:?}"
    );
}

#[test]
fn outlier_ejection_by_error_share() {
    let addrs: Vec<String> = (1..=4).map(|i| format!("127.0.0.{i}:80")).collect();
    let mut lb: LoadBalancer<RoundRobin> = LoadBalancer::try_from_iter(&addrs).unwrap();
    lb.backends_mut().set_outlier_ejection(OutlierEjection {
        consecutive_errors: 3,
        error_percent: Some(50),
        error_window: Duration::from_secs(600),
        error_min_requests: 10,
        base_ejection_time: Duration::from_secs(600),
        max_ejection_percent: 50,
    });
    let set = lb.backends().get();
    let report = |i: usize, ok: bool| lb.on_done(&set[i], Duration::from_millis(1), ok);
    // Every other request fails: never three in a row, but half of them.
    for _ in 0..4 {
        report(0, true);
        report(0, false);
    }
    assert!(
        !lb.backends().is_ejected(&set[0]),
        "8 requests are below the minimum of 10"
    );
    report(0, true);
    report(0, false);
    assert!(lb.backends().is_ejected(&set[0]), "5 errors in 10 requests");
    // One error in ten is below the share.
    for i in 0..10 {
        report(1, i != 9);
    }
    assert!(!lb.backends().is_ejected(&set[1]));
    // Errors in a row still eject on their own.
    for _ in 0..3 {
        report(1, false);
    }
    assert!(lb.backends().is_ejected(&set[1]));
    // The cap holds for this trigger too.
    for _ in 0..5 {
        report(2, true);
        report(2, false);
    }
    assert!(
        !lb.backends().is_ejected(&set[2]),
        "no more than 50% ejected"
    );

    // A window too short to hold the minimum never ejects by share: the
    // counts start over with each window.
    let mut lb: LoadBalancer<RoundRobin> = LoadBalancer::try_from_iter(&addrs).unwrap();
    lb.backends_mut().set_outlier_ejection(OutlierEjection {
        error_percent: Some(50),
        error_window: Duration::ZERO,
        error_min_requests: 2,
        ..Default::default()
    });
    let set = lb.backends().get();
    for _ in 0..20 {
        lb.on_done(&set[0], Duration::from_millis(1), true);
        lb.on_done(&set[0], Duration::from_millis(1), false);
    }
    assert!(!lb.backends().is_ejected(&set[0]));
}

#[tokio::test]
async fn static_discovery_updates_live() {
    use pingora_load_balancing::discovery::Static;
    use pingora_load_balancing::{Backend, Backends};
    let discovery = Arc::new(*Static::try_from_iter(["127.0.0.1:1"]).unwrap());
    let lb: LoadBalancer<RoundRobin> =
        LoadBalancer::from_backends(Backends::new(Box::new(discovery.clone())));
    lb.update().await.unwrap();
    assert_eq!(lb.select(b"", 1).unwrap().addr.to_string(), "127.0.0.1:1");
    // Changed while running: picked up by the next update.
    discovery.add(Backend::new("127.0.0.1:2").unwrap());
    discovery.remove(&Backend::new("127.0.0.1:1").unwrap());
    lb.update().await.unwrap();
    assert_eq!(lb.select(b"", 1).unwrap().addr.to_string(), "127.0.0.1:2");
}

/// The value of `pingora_backend_healthy` for `addr`, if it is set.
fn gauge(addr: &str) -> Option<i64> {
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&prometheus::gather())
        .unwrap();
    let prefix = format!("pingora_backend_healthy{{backend=\"{addr}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().parse().unwrap())
}

type Seen = Arc<Mutex<Vec<(String, bool)>>>;

fn observe(lb: &mut LoadBalancer<RoundRobin>) -> Seen {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    lb.backends_mut()
        .set_health_observer(Box::new(move |b, healthy| {
            s.lock().unwrap().push((b.addr.to_string(), healthy));
        }));
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_end_of_an_ejection_is_reported_by_the_next_selection() {
    // Addresses no other test uses: the gauge is process-wide.
    let addrs: Vec<String> = (1..=4).map(|i| format!("127.0.9.{i}:80")).collect();
    let mut lb: LoadBalancer<RoundRobin> = LoadBalancer::try_from_iter(&addrs).unwrap();
    let cooling = Duration::from_millis(200);
    lb.backends_mut().set_outlier_ejection(OutlierEjection {
        consecutive_errors: 2,
        base_ejection_time: cooling,
        ..Default::default()
    });
    let seen = observe(&mut lb);
    let set = lb.backends().get();
    let x = &set[0];
    let name = x.addr.to_string();
    assert_eq!(gauge(&name), Some(1));
    lb.on_done(x, Duration::from_millis(1), false);
    // Just before the call that ejects: its cooling period starts after
    // this, so a delay on this thread cannot make it look short.
    let ejected_at = Instant::now();
    lb.on_done(x, Duration::from_millis(1), false);
    assert_eq!(gauge(&name), Some(0));
    assert_eq!(*seen.lock().unwrap(), vec![(name.clone(), false)]);
    // Selection goes on; the first one to consider `x` after the cooling
    // period reports it back.
    until(Duration::from_secs(5), "the gauge to say 1 again", || {
        lb.select(b"", 4).unwrap();
        gauge(&name) == Some(1)
    })
    .await;
    let took = ejected_at.elapsed();
    assert!(
        took >= cooling && took < cooling + Duration::from_millis(500),
        "back after {took:?}"
    );
    assert_eq!(
        *seen.lock().unwrap(),
        vec![(name.clone(), false), (name.clone(), true)]
    );
    // Once: later selections that see it back say nothing more.
    let picks: Vec<String> = (0..20)
        .map(|_| lb.select(b"", 4).unwrap().addr.to_string())
        .collect();
    assert!(picks.contains(&name));
    assert_eq!(seen.lock().unwrap().len(), 2);
    assert_eq!(lb.backends().health_changes(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_end_of_an_ejection_is_reported_by_the_background_service() {
    let addrs: Vec<String> = (11..=14).map(|i| format!("127.0.9.{i}:80")).collect();
    let mut lb: LoadBalancer<RoundRobin> = LoadBalancer::try_from_iter(&addrs).unwrap();
    let cooling = Duration::from_millis(200);
    lb.backends_mut().set_outlier_ejection(OutlierEjection {
        consecutive_errors: 2,
        base_ejection_time: cooling,
        ..Default::default()
    });
    // Ticks, with no check to run: only the end of ejections to notice.
    lb.health_check_frequency = Some(Duration::from_millis(20));
    let seen = observe(&mut lb);
    let lb = Arc::new(lb);
    let set = lb.backends().get();
    let x = &set[0];
    let name = x.addr.to_string();
    lb.on_done(x, Duration::from_millis(1), false);
    // Just before the call that ejects (as above).
    let ejected_at = Instant::now();
    lb.on_done(x, Duration::from_millis(1), false);
    assert_eq!(gauge(&name), Some(0));
    let (tx, rx) = tokio::sync::watch::channel(false);
    let bg = {
        let lb = lb.clone();
        tokio::spawn(async move { lb.start(rx).await })
    };
    // No selection here: the service's tick reports it back.
    until(Duration::from_secs(5), "the gauge to say 1 again", || {
        gauge(&name) == Some(1)
    })
    .await;
    let took = ejected_at.elapsed();
    assert!(
        took >= cooling && took < cooling + Duration::from_millis(500),
        "back after {took:?}"
    );
    assert_eq!(
        *seen.lock().unwrap(),
        vec![(name.clone(), false), (name, true)]
    );
    tx.send(true).unwrap();
    bg.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_down_by_its_checks_stays_down_when_its_ejection_ends() {
    let up = Upstream::start("127.0.0.1:0", 200).await;
    let down = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down_addr = down.local_addr().unwrap();
    drop(down);
    let mut lb: LoadBalancer<RoundRobin> =
        LoadBalancer::try_from_iter([up.addr.to_string(), down_addr.to_string()]).unwrap();
    lb.backends_mut().set_health_check(TcpHealthCheck::new());
    lb.backends_mut().set_outlier_ejection(OutlierEjection {
        consecutive_errors: 1,
        base_ejection_time: Duration::from_millis(100),
        ..Default::default()
    });
    let seen = observe(&mut lb);
    let name = down_addr.to_string();
    let x = lb
        .backends()
        .get()
        .iter()
        .find(|b| b.addr.to_string() == name)
        .unwrap()
        .clone();
    lb.backends().run_health_check(true).await;
    assert_eq!(*seen.lock().unwrap(), vec![(name.clone(), false)]);
    // Ejected as well: it was already out, nothing new to say.
    lb.on_done(&x, Duration::from_millis(1), false);
    assert!(lb.backends().is_ejected(&x));
    until(Duration::from_secs(5), "the ejection to end", || {
        !lb.backends().is_ejected(&x)
    })
    .await;
    assert!(!lb.backends().ready(&x));
    assert_eq!(gauge(&name), Some(0));
    assert_eq!(*seen.lock().unwrap(), vec![(name.clone(), false)]);
    // Listening again: the check brings it back, once.
    let _back = Upstream::start(&name, 200).await;
    lb.backends().run_health_check(true).await;
    assert!(lb.backends().ready(&x));
    assert_eq!(gauge(&name), Some(1));
    assert_eq!(
        *seen.lock().unwrap(),
        vec![(name.clone(), false), (name, true)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_service_checks_at_once() {
    let up = Upstream::start("127.0.0.1:0", 200).await;
    let down = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down_addr = down.local_addr().unwrap();
    drop(down);
    let mut lb: LoadBalancer<RoundRobin> =
        LoadBalancer::try_from_iter([up.addr.to_string(), down_addr.to_string()]).unwrap();
    lb.backends_mut().set_health_check(TcpHealthCheck::new());
    // An interval far longer than the test: only a check at start can
    // find the dead backend.
    lb.health_check_frequency = Some(Duration::from_secs(3600));
    let lb = Arc::new(lb);
    let (tx, rx) = tokio::sync::watch::channel(false);
    let bg = {
        let lb = lb.clone();
        tokio::spawn(async move { lb.start(rx).await })
    };
    until(Duration::from_secs(5), "the first check", || {
        lb.backends().health_changes() == 1
    })
    .await;
    for _ in 0..10 {
        assert_eq!(
            lb.select(b"", 2).unwrap().addr.to_string(),
            up.addr.to_string()
        );
    }
    tx.send(true).unwrap();
    bg.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_check_thresholds() {
    let answer = Answer::status(200);
    let up = Upstream::with("127.0.0.1:0", answer.clone()).await;
    let mut lb: LoadBalancer<RoundRobin> =
        LoadBalancer::try_from_iter([up.addr.to_string()]).unwrap();
    let mut hc = HttpHealthCheck::new("health.test", false);
    hc.consecutive_failure = 3;
    hc.consecutive_success = 2;
    lb.backends_mut().set_health_check(Box::new(hc));
    let b = lb.backends().get()[0].clone();
    // (status this round, ready after it)
    let rounds = [
        (503, true),
        (503, true),
        (200, true), // a success breaks the run of failures
        (503, true),
        (503, true),
        (503, false), // the third failure in a row
        (200, false),
        (503, false), // a failure breaks the run of successes
        (200, false),
        (200, true), // the second success in a row
    ];
    for (i, (status, ready)) in rounds.into_iter().enumerate() {
        answer.status.store(status, Ordering::Relaxed);
        lb.backends().run_health_check(true).await;
        assert_eq!(lb.backends().ready(&b), ready, "round {i} ({status})");
    }
    assert_eq!(answer.hosts.lock().unwrap().len(), rounds.len());
    assert_eq!(lb.backends().health_changes(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_backends_are_checked_at_once() {
    const N: usize = 8;
    // Each answers 503 only once all N requests are in: every check must
    // wait for its answer to take its backend out, and checks made one (or
    // a few) at a time would wait for an answer that never comes.
    let together = Arc::new(tokio::sync::Barrier::new(N));
    let mut ups = Vec::new();
    for _ in 0..N {
        let a = Answer {
            together: Some(together.clone()),
            ..Answer::status(503)
        };
        ups.push(Upstream::with("127.0.0.1:0", a).await);
    }
    let mut lb: LoadBalancer<RoundRobin> =
        LoadBalancer::try_from_iter(ups.iter().map(|u| u.addr.to_string())).unwrap();
    let mut hc = HttpHealthCheck::new("health.test", false);
    // Longer than the wait below: a check given up on (a timeout would
    // take its backend out too) cannot pass for one that was answered.
    hc.options.read_timeout = Some(Duration::from_secs(60));
    lb.backends_mut().set_health_check(Box::new(hc));
    tokio::time::timeout(
        Duration::from_secs(30),
        lb.backends().run_health_check(true),
    )
    .await
    .expect("all the checks in flight together");
    for b in lb.backends().get().iter() {
        assert!(!lb.backends().ready(b), "{} was not checked", b.addr);
    }
}

#[cfg(any(feature = "openssl", feature = "boringssl"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_check_over_tls_sends_its_host() {
    use pingora_core::listeners::tls::{CertKey, TlsSettings};
    use pingora_core::protocols::{L4Stream, IO};
    use pingora_core::utils::certs::TestCa;

    let ca = TestCa::new("LB test CA").unwrap();
    let issued = ca.issue(&["health.test"], 30, false).unwrap();
    let dir = std::env::temp_dir().join(format!("pingora-lb-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_file = dir.join("ca.crt");
    std::fs::write(&ca_file, ca.ca.cert_pem()).unwrap();
    let cert = CertKey::from_pem(issued.cert_pem().as_bytes(), issued.key_pem().as_bytes());
    let acceptor = Arc::new(
        TlsSettings::with_cert(Arc::new(cert.unwrap()))
            .build()
            .unwrap(),
    );

    // A TLS listener that records the SNI of each handshake, and the Host
    // of each request.
    let rec = Answer::status(200);
    let snis: Arc<Mutex<Vec<String>>> = Arc::default();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    {
        let (rec, snis) = (rec.clone(), snis.clone());
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let (acceptor, rec, snis) = (acceptor.clone(), rec.clone(), snis.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.handshake(L4Stream::from_tcp(s)).await {
                        let sni = tls.tls_digest().and_then(|d| d.sni.clone());
                        snis.lock().unwrap().push(sni.unwrap_or_default());
                        answer(tls, rec).await;
                    }
                });
            }
        });
    }
    let check = |host: &str| {
        let mut hc = HttpHealthCheck::new(host, true);
        hc.options.ca = Some(ca_file.display().to_string());
        hc
    };

    let mut lb: LoadBalancer<RoundRobin> = LoadBalancer::try_from_iter([addr.to_string()]).unwrap();
    lb.backends_mut()
        .set_health_check(Box::new(check("health.test")));
    let b = lb.backends().get()[0].clone();
    lb.backends().run_health_check(true).await;
    assert!(lb.backends().ready(&b));
    assert_eq!(*rec.hosts.lock().unwrap(), vec!["health.test"]);
    assert_eq!(*snis.lock().unwrap(), vec!["health.test"]);

    // A name the certificate does not carry: the certificate is verified,
    // the check fails before any request is sent.
    let mut lb: LoadBalancer<RoundRobin> = LoadBalancer::try_from_iter([addr.to_string()]).unwrap();
    lb.backends_mut()
        .set_health_check(Box::new(check("other.test")));
    lb.backends().run_health_check(true).await;
    assert!(!lb.backends().ready(&b));
    assert_eq!(rec.hosts.lock().unwrap().len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Threads eject a backend and end its ejections (1 µs long) as fast as
/// they can, while the observer takes its time: its calls for the backend
/// never cross, so it hears alternating values, starting with the first
/// change, and its last word is the backend's state once they stop.
#[test]
fn observer_calls_for_a_backend_stay_in_order_under_contention() {
    let addrs: Vec<String> = (21..=24).map(|i| format!("127.0.9.{i}:80")).collect();
    let mut lb: LoadBalancer<RoundRobin> = LoadBalancer::try_from_iter(&addrs).unwrap();
    lb.backends_mut().set_outlier_ejection(OutlierEjection {
        consecutive_errors: 1,
        base_ejection_time: Duration::from_micros(1),
        ..Default::default()
    });
    let heard: Arc<Mutex<Vec<bool>>> = Arc::default();
    let h = heard.clone();
    let busy = Arc::new(AtomicUsize::new(0));
    let b2 = busy.clone();
    lb.backends_mut()
        .set_health_observer(Box::new(move |_, healthy| {
            // Two calls at once for the same backend would be a crossing.
            assert_eq!(
                b2.fetch_add(1, Ordering::SeqCst),
                0,
                "observer calls overlap"
            );
            std::thread::sleep(Duration::from_micros(50));
            h.lock().unwrap().push(healthy);
            b2.fetch_sub(1, Ordering::SeqCst);
        }));
    let lb = Arc::new(lb);
    let x = lb.backends().get()[0].clone();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (lb, x) = (lb.clone(), x.clone());
            std::thread::spawn(move || {
                for _ in 0..2000 {
                    lb.on_done(&x, Duration::from_millis(1), false);
                    lb.backends().ready(&x);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Let the last ejection (at most 32 µs) run out and be noticed.
    std::thread::sleep(Duration::from_millis(5));
    let state = lb.backends().ready(&x);
    assert!(state);
    let heard = heard.lock().unwrap();
    assert!(heard.len() >= 2, "{heard:?}");
    assert!(!heard[0], "the first change is the ejection");
    assert!(
        heard.windows(2).all(|w| w[0] != w[1]),
        "the observer heard the same value twice in a row: the calls crossed"
    );
    assert_eq!(
        *heard.last().unwrap(),
        state,
        "the observer's last word is stale"
    );
}
