//! Health checks against real listeners that the test stops and starts,
//! outlier ejection and its cap, and the load balancer as a background
//! service.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pingora_core::services::background::BackgroundService;
use pingora_load_balancing::health_check::{HttpHealthCheck, TcpHealthCheck};
use pingora_load_balancing::selection::RoundRobin;
use pingora_load_balancing::{LoadBalancer, OutlierEjection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A listener that answers every HTTP request with `status`, until
/// dropped.
struct Upstream {
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    async fn start(addr: &str, status: u16) -> Upstream {
        let l = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = l.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut got = Vec::new();
                    while !got.ends_with(b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    let resp = format!(
                        "HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                });
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
    until(Duration::from_secs(5), "b to be back", || {
        lb.backends().ready(&b_backend)
    })
    .await;
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
    let mut hc = HttpHealthCheck::new("health.test", false).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    hc.validator = Some(Box::new(move |_resp, body| {
        c.fetch_add(1, Ordering::Relaxed);
        if body == b"ok" {
            Ok(())
        } else {
            pingora_error::Error::e_explain(pingora_error::ErrorType::InvalidInput, "bad body")
        }
    }));
    lb.backends_mut().set_health_check(hc);
    lb.backends().run_health_check().await;
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
