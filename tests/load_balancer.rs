//! The load_balancer example as users run it: the demo mode, round robin,
//! failover past a refused upstream, the server's own flags, and a 1 GiB
//! body streamed through both ways with the proxy's memory bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

mod common;
use common::*;
#[path = "../pingora-core/tests/common/mod.rs"]
mod nginx;

/// Start the load_balancer example with `args`, its metrics on a free port
/// (returned), its log in `dir`.
fn start_lb(dir: &std::path::Path, args: &[&str]) -> (Proc, String) {
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut all = vec!["--metrics", metrics.as_str()];
    all.extend_from_slice(args);
    let p = Proc::start_example("load_balancer", &all, &dir.join("lb.log"));
    (p, metrics)
}

/// The body at `url`.
fn curl(url: &str) -> String {
    curl_text(&[url])
}

#[test]
fn demo_mode_balances_over_two_upstreams() {
    let dir = temp_dir("lb-demo");
    let log = dir.join("lb.log");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let (_lb, _) = start_lb(&dir, &["--listen", &listen]);
    wait_listening(port);
    poll_until(Duration::from_secs(10), "the curl hint", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(&format!("try: curl http://{listen}/"))
    });
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let body = curl(&format!("http://{listen}/hi"));
        assert!(body.starts_with("hello from demo upstream "), "{body}");
        seen.insert(body);
    }
    assert_eq!(
        seen.len(),
        2,
        "round robin over both demo upstreams: {seen:?}"
    );
}

#[test]
fn test_flag_checks_the_conf() {
    let out = Command::new(example("load_balancer"))
        .args(["-t"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration OK"));
}

/// The http_server example as an upstream, on a port from the OS.
fn upstream(dir: &std::path::Path, extra: &[&str]) -> (Proc, u16) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["--listen", &listen];
    args.extend_from_slice(extra);
    let p = Proc::start_example("http_server", &args, &dir.join("upstream.log"));
    wait_listening(port);
    (p, port)
}

/// A backend that was healthy goes away between health checks: the proxy
/// itself meets the refused connects. Each is retried on the other backend
/// (every request lands), counted against the dead one (passive health),
/// and after five in a row it is ejected: no request tries it again.
#[test]
fn failover_past_a_refused_upstream() {
    let dir = temp_dir("lb-failover");
    let (mut doomed, dead) = upstream(&dir, &[]);
    let (_up, up) = upstream(&dir, &[]);
    let port = free_port();
    let (listen, a, b) = (
        format!("127.0.0.1:{port}"),
        format!("127.0.0.1:{dead}"),
        format!("127.0.0.1:{up}"),
    );
    // One health check, at start: the rest is up to the proxy.
    let (_lb, metrics) = start_lb(
        &dir,
        &[
            "--listen",
            &listen,
            "--upstream",
            &a,
            "--upstream",
            &b,
            "--health-check-secs",
            "3600",
        ],
    );
    wait_listening(port);
    let url = format!("http://{metrics}/metrics");
    let healthy = |page: &str, backend: &str| {
        sample(
            page,
            &format!("pingora_backend_healthy{{backend=\"{backend}\"}}"),
        )
    };
    poll_until(Duration::from_secs(10), "both backends checked", || {
        let page = curl(&url);
        healthy(&page, &a) == 1.0 && healthy(&page, &b) == 1.0
    });
    doomed.signal(nix::sys::signal::Signal::SIGKILL);
    doomed.wait_exit(Duration::from_secs(10));
    for _ in 0..20 {
        assert_eq!(curl(&format!("http://{listen}/")), "hello from pingora\n");
    }
    let page = curl(&url);
    let get = |s: &str| sample(&page, s);
    assert_eq!(
        get("pingora_upstream_connect_errors_total{kind=\"ConnectRefused\"}"),
        5.0,
        "{page}"
    );
    assert_eq!(get("pingora_proxy_retries_total"), 5.0);
    // The example's own metric, served beside the built-in ones.
    assert_eq!(get("lb_example_failed_connects_total"), 5.0);
    assert_eq!((healthy(&page, &a), healthy(&page, &b)), (0.0, 1.0));
    assert_eq!(
        get("pingora_http_requests_total{protocol=\"http1\",status_class=\"2xx\"}"),
        20.0
    );
}

/// VmHWM (peak resident memory) of a process, in KiB.
fn peak_rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_gigabyte_streams_through_with_bounded_memory() {
    const TOTAL: u64 = 1 << 30;
    let dir = temp_dir("lb-gigabyte");
    let (_up, up) = upstream(
        &dir,
        &[
            "--max-body",
            &(2 * TOTAL).to_string(),
            "--body-timeout-ms",
            "600000",
            "--write-timeout-ms",
            "600000",
        ],
    );
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let upstream_addr = format!("127.0.0.1:{up}");
    let (lb, _) = start_lb(
        &dir,
        &[
            "--listen",
            &listen,
            "--upstream",
            &upstream_addr,
            "--upstream-timeout-ms",
            "600000",
        ],
    );
    wait_listening(port);
    let start = std::time::Instant::now();

    // POST 1 GiB to /echo while reading the echo back at the same time.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "POST /echo HTTP/1.1\r\nHost: lb.test\r\nContent-Length: {TOTAL}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let block = vec![b'g'; 256 * 1024];
        let mut left = TOTAL;
        while left > 0 {
            let n = left.min(block.len() as u64) as usize;
            w.write_all(&block[..n]).unwrap();
            left -= n as u64;
        }
    });
    let mut r = BufReader::with_capacity(256 * 1024, s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
    }
    // The echo comes back chunked: count the data.
    let mut got = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        let size = u64::from_str_radix(line.trim(), 16).expect("a chunk size");
        if size == 0 {
            break;
        }
        let mut left = size;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            r.read_exact(&mut buf[..n]).unwrap();
            assert!(buf[..n].iter().all(|&b| b == b'g'));
            left -= n as u64;
        }
        got += size;
        line.clear();
        r.read_line(&mut line).unwrap();
    }
    writer.join().unwrap();
    assert_eq!(got, TOTAL);
    let peak = peak_rss_kib(lb.pid().as_raw());
    eprintln!(
        "load_balancer peak RSS after 1 GiB each way: {peak} KiB, in {:?}",
        start.elapsed()
    );
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB is over 64 MiB");
}

/// `--tls-listen` (h2 and http/1.1 by ALPN), `--h2c` and `--upstream-h2`.
#[test]
fn tls_h2c_and_h2_upstreams() {
    use pingora::core::utils::certs::TestCa;
    let dir = temp_dir("lb-protocols");
    let ca = TestCa::new("lb test CA").unwrap();
    let (ca_file, _) = ca.ca.write(&dir, "ca").unwrap();
    let (cert, key) = ca
        .issue(&["localhost"], 1, false)
        .unwrap()
        .write(&dir, "localhost")
        .unwrap();
    let (port, tls_port) = (free_port(), free_port());
    let (listen, tls_listen) = (format!("127.0.0.1:{port}"), format!("127.0.0.1:{tls_port}"));
    let (_lb, metrics) = start_lb(
        &dir,
        &[
            "--listen",
            &listen,
            "--h2c",
            "--upstream-h2",
            "--tls-listen",
            &tls_listen,
            "--cert",
            &cert,
            "--key",
            &key,
        ],
    );
    wait_listening(port);
    wait_listening(tls_port);
    let get = |args: &[&str]| -> String {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "20", "-w", " %{http_version}"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The demo upstreams see an HTTP/2 request (its URI is absolute) in
    // every case; the client's protocol is what curl reports.
    // The client's authority reaches the upstream unchanged.
    let h2c = get(&["--http2-prior-knowledge", &format!("http://{listen}/a")]);
    assert!(h2c.ends_with(" 2"), "{h2c}");
    assert!(
        h2c.contains(&format!("(http://{listen}/a)")),
        "the upstream got HTTP/2: {h2c}"
    );
    let h1 = get(&["--http1.1", &format!("http://{listen}/b")]);
    assert!(h1.ends_with(" 1.1") && h1.contains("(http://"), "{h1}");
    let url = format!("https://localhost:{tls_port}/c");
    let resolve = format!("localhost:{tls_port}:127.0.0.1");
    let h2 = get(&["--cacert", &ca_file, "--resolve", &resolve, "--http2", &url]);
    assert!(
        h2.ends_with(" 2") && h2.starts_with("hello from demo upstream"),
        "{h2}"
    );
    let tls_h1 = get(&[
        "--cacert",
        &ca_file,
        "--resolve",
        &resolve,
        "--http1.1",
        &url,
    ]);
    assert!(tls_h1.ends_with(" 1.1"), "{tls_h1}");
    // Handshakes that fail count too: curl not trusting the CA, and the
    // bare connect that waited for the port.
    let bad = Command::new("curl")
        .args(["-sS", "--resolve", &resolve, &url])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let page = curl(&format!("http://{metrics}/metrics"));
    assert_eq!(sample(&page, "pingora_tls_handshakes_total"), 2.0, "{page}");
    assert_eq!(sample(&page, "pingora_tls_handshake_failures_total"), 2.0);
    let h2 = "pingora_http_requests_total{protocol=\"http2\",status_class=\"2xx\"}";
    assert_eq!(sample(&page, h2), 2.0);
}

/// One sample's value from a Prometheus text page (`name{labels}`
/// exactly as written there); 0 when absent.
fn sample(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// Known traffic, then a scrape with a real client: the counters say
/// exactly what happened.
#[test]
fn metrics_count_known_traffic() {
    let dir = temp_dir("lb-metrics");
    let (_up, up) = upstream(&dir, &[]);
    let dead = free_port();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let (a, b) = (format!("127.0.0.1:{dead}"), format!("127.0.0.1:{up}"));
    let (_lb, metrics) = start_lb(
        &dir,
        &["--listen", &listen, "--upstream", &a, "--upstream", &b],
    );
    wait_listening(port);
    for _ in 0..10 {
        assert_eq!(curl(&format!("http://{listen}/")), "hello from pingora\n");
    }
    let url = format!("http://{metrics}/metrics");
    // The dead backend is marked unhealthy by the next health check.
    poll_until(
        Duration::from_secs(10),
        "the dead backend to be unhealthy",
        || {
            let page = curl(&url);
            sample(
                &page,
                &format!("pingora_backend_healthy{{backend=\"{a}\"}}"),
            ) == 0.0
                && sample(
                    &page,
                    &format!("pingora_backend_healthy{{backend=\"{b}\"}}"),
                ) == 1.0
        },
    );
    let page = curl(&url);
    let get = |s: &str| sample(&page, s);
    assert_eq!(
        get("pingora_http_requests_total{protocol=\"http1\",status_class=\"2xx\"}"),
        10.0,
        "{page}"
    );
    assert_eq!(
        get("pingora_http_request_duration_seconds_count{protocol=\"http1\"}"),
        10.0
    );
    // Ten curls and the one connect that found the port open.
    assert_eq!(
        get("pingora_downstream_connections_accepted_total{service=\"load balancer\"}"),
        11.0
    );
    // Each refused connect was retried on the live backend.
    let refused = get("pingora_upstream_connect_errors_total{kind=\"ConnectRefused\"}");
    assert_eq!(get("pingora_proxy_retries_total"), refused);
    // One upstream connection, reused for every other request.
    let (hits, misses) = (
        get("pingora_upstream_pool_hits_total"),
        get("pingora_upstream_pool_misses_total"),
    );
    assert_eq!((hits, misses - refused), (9.0, 1.0), "{page}");
    assert_eq!(get("pingora_upstream_pool_idle_connections"), 1.0);
    // A program's own metrics would appear on the same page: the default
    // registry is the one served.
    assert!(page.contains("# TYPE pingora_upstream_connect_seconds histogram"));
}

/// The access log (combined, to syslog over UDP; JSON, to a file) and the
/// error log to syslog, as the conf says.
#[test]
fn access_and_error_logs() {
    let dir = temp_dir("lb-logs");
    let (_up, up) = upstream(&dir, &[]);
    let access = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let errors = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for s in [&access, &errors] {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }
    let conf = dir.join("syslog.yaml");
    std::fs::write(
        &conf,
        format!(
            "---\nversion: 1\nlog_level: info\naccess_log: syslog:udp:{}\naccess_log_format: combined\nerror_log: syslog:udp:{}\n",
            access.local_addr().unwrap(),
            errors.local_addr().unwrap()
        ),
    )
    .unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let dead = format!("127.0.0.1:{}", free_port());
    let (mut lb, _) = start_lb(
        &dir,
        &[
            "-c",
            conf.to_str().unwrap(),
            "--listen",
            &listen,
            "--upstream",
            &dead,
        ],
    );
    wait_listening(port);
    let out = Command::new("curl")
        .args([
            "-sS",
            "-A",
            "test-agent/1.0",
            "-e",
            "http://ref.test/",
            &format!("http://{listen}/a?b=c"),
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("502"));
    let mut buf = [0u8; 4096];
    let n = access.recv(&mut buf).unwrap();
    let line = String::from_utf8_lossy(&buf[..n]).into_owned();
    // RFC 5424 header (facility local0, severity info), then the combined
    // log format.
    assert!(line.starts_with("<134>1 20"), "{line}");
    assert!(line.contains(" pingora-access "), "{line}");
    assert!(
        line.contains(r#" - - ["#)
            && line
                .ends_with(r#"] "GET /a?b=c HTTP/1.1" 502 16 "http://ref.test/" "test-agent/1.0""#),
        "{line}"
    );
    // The error log: the failed request, at severity error (<131>).
    let mut seen = Vec::new();
    let found = loop {
        let n = errors
            .recv(&mut buf)
            .expect("an error-log line over syslog");
        let l = String::from_utf8_lossy(&buf[..n]).into_owned();
        if l.starts_with("<131>1 ") && l.contains("failed with 502") {
            break l;
        }
        seen.push(l);
        assert!(seen.len() < 50, "{seen:#?}");
    };
    assert!(found.contains("GET /a?b=c"), "{found}");
    lb.signal(nix::sys::signal::Signal::SIGTERM);
    lb.wait_exit(Duration::from_secs(20));

    // JSON to a file.
    let (_lb, listen, file) = lb_with_json_log(&dir, up, &[]);
    assert_eq!(curl(&format!("http://{listen}/")), "hello from pingora\n");
    poll_until(Duration::from_secs(10), "the JSON access log line", || {
        std::fs::read_to_string(&file).is_ok_and(|t| t.ends_with('\n'))
    });
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("{\"time\":\"20"), "{text}");
    for part in [
        r#""client":"127.0.0.1""#,
        r#""method":"GET""#,
        r#""uri":"/""#,
        r#""protocol":"HTTP/1.1""#,
        &format!(r#""host":"{listen}""#),
        r#""status":200"#,
        r#""bytes":19"#,
        r#""error":null,"#,
        r#""cache":null}"#,
    ] {
        assert!(text.contains(part), "{part} in {text}");
    }

    // A bad value is refused at start, naming the key.
    std::fs::write(&conf, "---\nversion: 1\naccess_log_format: xml\n").unwrap();
    let out = Command::new(example("load_balancer"))
        .args(["-t", "-c", conf.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let msg =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        msg.contains("access_log_format") && msg.contains("line 3"),
        "{msg}"
    );
}

/// The load balancer in front of `up` on a free port, with the JSON
/// access log in a file, and `extra` flags; listening. Returns the
/// listening address and the log file.
fn lb_with_json_log(
    dir: &std::path::Path,
    up: u16,
    extra: &[&str],
) -> (Proc, String, std::path::PathBuf) {
    let file = dir.join("access.json");
    let conf = dir.join("json.yaml");
    std::fs::write(
        &conf,
        format!(
            "---\nversion: 1\naccess_log: {}\naccess_log_format: json\n",
            file.display()
        ),
    )
    .unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let live = format!("127.0.0.1:{up}");
    let mut args = vec![
        "-c",
        conf.to_str().unwrap(),
        "--listen",
        &listen,
        "--upstream",
        &live,
    ];
    args.extend_from_slice(extra);
    let (lb, _) = start_lb(dir, &args);
    wait_listening(port);
    (lb, listen, file)
}

/// `--proxy-protocol`: the client a PROXY header names is the one the
/// access log records; curl's own v1 header works; a request without a
/// header is refused.
#[test]
fn proxy_protocol_names_the_client() {
    use std::io::{Read, Write};
    let dir = temp_dir("lb-proxy-protocol");
    let (_up, up) = upstream(&dir, &[]);
    let (_lb, listen, file) = lb_with_json_log(&dir, up, &["--proxy-protocol"]);
    let port = listen.rsplit_once(':').unwrap().1;
    let send = |bytes: &[u8]| {
        let mut c = std::net::TcpStream::connect(&listen).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        c.write_all(bytes).unwrap();
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    };
    let req = format!("GET / HTTP/1.1\r\nHost: {listen}\r\nConnection: close\r\n\r\n");
    let reply = send(format!("PROXY TCP4 192.0.2.9 127.0.0.1 5000 {port}\r\n{req}").as_bytes());
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with("hello from pingora\n"), "{reply}");
    poll_until(Duration::from_secs(10), "the access log line", || {
        std::fs::read_to_string(&file).is_ok_and(|t| t.contains(r#""client":"192.0.2.9""#))
    });
    // No header: closed without an answer.
    assert_eq!(send(req.as_bytes()), "");
    // curl sends a v1 header with its own address.
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--haproxy-protocol"])
        .arg(format!("http://{listen}/"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from pingora\n");
}

/// A graceful upgrade of the load balancer: the new process takes the
/// listening sockets, counts the hand-over (`received`), and serves; the
/// old one counts it too (`sent`). Each process serves its metrics on an
/// address of its own (the new one closes the old one's metrics socket it
/// inherits, unclaimed, while the old one keeps serving on it through its
/// grace period), so each page is known to be that process's.
#[test]
fn graceful_upgrade_is_counted() {
    let dir = temp_dir("lb-upgrade");
    let (_up, up) = upstream(&dir, &[]);
    let conf = dir.join("conf.yaml");
    std::fs::write(
        &conf,
        format!(
            "---\nversion: 1\nupgrade_sock: {}\npid_file: {}\ngrace_period_seconds: 60\ngraceful_shutdown_timeout_seconds: 2\n",
            dir.join("upgrade.sock").display(),
            dir.join("lb.pid").display()
        ),
    )
    .unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let old_metrics = format!("127.0.0.1:{}", free_port());
    let new_metrics = format!("127.0.0.1:{}", free_port());
    let live = format!("127.0.0.1:{up}");
    let args = |metrics: &str, extra: Option<&'static str>| {
        let mut a = vec![
            "-c".to_string(),
            conf.display().to_string(),
            "--listen".into(),
            listen.clone(),
            "--metrics".into(),
            metrics.to_string(),
            "--upstream".into(),
            live.clone(),
        ];
        a.extend(extra.map(String::from));
        a
    };
    let log = dir.join("lb.log");
    let old_args = args(&old_metrics, None);
    let old_args: Vec<&str> = old_args.iter().map(String::as_str).collect();
    let mut old = Proc::start_example("load_balancer", &old_args, &log);
    wait_listening(port);
    assert_eq!(curl(&format!("http://{listen}/")), "hello from pingora\n");
    let upgrades = |metrics: &str| {
        let page = curl(&format!("http://{metrics}/metrics"));
        (
            sample(
                &page,
                "pingora_graceful_upgrade_events_total{event=\"sent\"}",
            ),
            sample(
                &page,
                "pingora_graceful_upgrade_events_total{event=\"received\"}",
            ),
        )
    };
    assert_eq!(upgrades(&old_metrics), (0.0, 0.0));

    let new_args = args(&new_metrics, Some("-u"));
    let new_args: Vec<&str> = new_args.iter().map(String::as_str).collect();
    let _new = Proc::start_example("load_balancer", &new_args, &log);
    let sock = dir.join("upgrade.sock");
    poll_until(
        Duration::from_secs(20),
        "the new process's upgrade_sock",
        || sock.exists(),
    );
    old.signal(nix::sys::signal::Signal::SIGQUIT);
    // The old process, in its grace period: it counted the hand-over.
    poll_until(
        Duration::from_secs(20),
        "the old process's sent count",
        || upgrades(&old_metrics) == (1.0, 0.0),
    );
    // SIGINT ends the grace period at once.
    old.signal(nix::sys::signal::Signal::SIGINT);
    assert_eq!(old.wait_exit(Duration::from_secs(20)), Some(0));

    // Only the new process is left: it answers, on the same sockets.
    assert_eq!(curl(&format!("http://{listen}/")), "hello from pingora\n");
    wait_listening(new_metrics.rsplit_once(':').unwrap().1.parse().unwrap());
    assert_eq!(upgrades(&new_metrics), (0.0, 1.0));
}

/// `pingora_downstream_connections_open`: idle keep-alive connections are
/// counted while they are open, and no longer once the clients close them.
#[test]
fn open_connections_are_counted() {
    let dir = temp_dir("lb-open");
    let (_up, up) = upstream(&dir, &[]);
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let live = format!("127.0.0.1:{up}");
    let (_lb, metrics) = start_lb(&dir, &["--listen", &listen, "--upstream", &live]);
    wait_listening(port);
    let url = format!("http://{metrics}/metrics");
    let open = || {
        sample(
            &curl(&url),
            "pingora_downstream_connections_open{service=\"load balancer\"}",
        )
    };
    // wait_listening's probe connection may still be open: wait it out.
    poll_until(Duration::from_secs(10), "no connection open", || {
        open() == 0.0
    });
    // Three clients, each with one answered request, left idle.
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut c = TcpStream::connect(&listen).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        write!(c, "GET / HTTP/1.1\r\nHost: lb.test\r\n\r\n").unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.ends_with(b"hello from pingora\n") {
            let n = c.read(&mut buf).unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        clients.push(c);
    }
    assert_eq!(open(), 3.0);
    // Two hang up: the count follows.
    drop(clients.drain(..2));
    poll_until(Duration::from_secs(10), "one connection left open", || {
        open() == 1.0
    });
    drop(clients);
    poll_until(Duration::from_secs(10), "no connection left open", || {
        open() == 0.0
    });
}

/// `pingora_upstream_errors_total{kind}`: an upstream that reads the
/// request and hangs up without answering is counted by its error kind.
#[test]
fn upstream_errors_are_counted_by_kind() {
    let dir = temp_dir("lb-upstream-errors");
    let rude = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let rude_addr = rude.local_addr().unwrap().to_string();
    let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = requests.clone();
    std::thread::spawn(move || {
        for c in rude.incoming() {
            let Ok(mut c) = c else { return };
            let seen = seen.clone();
            std::thread::spawn(move || {
                c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut got = Vec::new();
                let mut buf = [0u8; 1024];
                // Health checks connect and close; requests are read whole.
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut buf) {
                        Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                }
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                // Hang up without a word.
            });
        }
    });
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let (_lb, metrics) = start_lb(&dir, &["--listen", &listen, "--upstream", &rude_addr]);
    wait_listening(port);
    for _ in 0..3 {
        let body = curl(&format!("http://{listen}/"));
        assert!(body.starts_with("502"), "{body}");
    }
    let page = curl(&format!("http://{metrics}/metrics"));
    let errors: Vec<&str> = page
        .lines()
        .filter(|l| l.starts_with("pingora_upstream_errors_total{"))
        .collect();
    assert_eq!(
        errors,
        ["pingora_upstream_errors_total{kind=\"ConnectionClosed\"} 3"],
        "{page}"
    );
    assert!(requests.load(std::sync::atomic::Ordering::SeqCst) >= 3);
}

/// The log level: the conf's `log_level`, unless `RUST_LOG` is set, which
/// wins. Seen in the `error_log` file of a running load balancer: a
/// malformed request is logged at debug level ("bad request") before the
/// 400 goes out, so once the client has the 400 the line is either in the
/// file or was filtered out.
#[test]
fn log_level_from_conf_and_rust_log() {
    let dir = temp_dir("lb-log-level");
    let (_up, up) = upstream(&dir, &[]);
    let live = format!("127.0.0.1:{up}");
    // (conf's log_level, RUST_LOG, debug lines expected, info lines expected)
    let cases = [
        (Some("debug"), None, true, true),
        (Some("info"), None, false, true),
        (None, None, false, true),
        (Some("info"), Some("debug"), true, true),
        (Some("debug"), Some("warn"), false, false),
    ];
    for (i, (level, rust_log, debug, info)) in cases.into_iter().enumerate() {
        let what = format!("log_level {level:?}, RUST_LOG {rust_log:?}");
        let error_log = dir.join(format!("error-{i}.log"));
        let conf = dir.join(format!("conf-{i}.yaml"));
        let mut text = format!("---\nversion: 1\nerror_log: {}\n", error_log.display());
        if let Some(l) = level {
            text.push_str(&format!("log_level: {l}\n"));
        }
        std::fs::write(&conf, text).unwrap();
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let metrics = format!("127.0.0.1:{}", free_port());
        let mut lb = Proc::start_example_env(
            "load_balancer",
            &[
                "-c",
                conf.to_str().unwrap(),
                "--listen",
                &listen,
                "--metrics",
                &metrics,
                "--upstream",
                &live,
            ],
            &dir.join("lb.log"),
            &[("RUST_LOG", rust_log)],
        );
        wait_listening(port);
        let mut c = TcpStream::connect(&listen).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        c.write_all(b"NOT HTTP AT ALL\r\n\r\n").unwrap();
        let mut reply = String::new();
        let _ = c.read_to_string(&mut reply);
        assert!(reply.starts_with("HTTP/1.1 400"), "{what}: {reply}");
        // Lines are written as they are logged: stop the server at once.
        lb.signal(nix::sys::signal::Signal::SIGINT);
        assert_eq!(lb.wait_exit(Duration::from_secs(20)), Some(0), "{what}");
        let text = std::fs::read_to_string(&error_log).unwrap_or_default();
        assert_eq!(
            text.contains(" DEBUG ") && text.contains("bad request"),
            debug,
            "{what}: {text}"
        );
        assert_eq!(
            text.contains(" INFO ") && text.contains("server started"),
            info,
            "{what}: {text}"
        );
        assert!(!text.contains(" TRACE "), "{what}: {text}");
    }
}

/// `--upstream-tls`, with and without `--upstream-h2`, in front of a real
/// nginx that terminates TLS: the certificate is verified against
/// `--upstream-ca` (its name is the upstream's IP), and nginx sees HTTP/2
/// or HTTP/1.1 as asked.
#[test]
fn tls_upstreams_over_h2_and_http1() {
    use pingora::core::utils::certs::TestCa;
    let dir = nginx::nginx_dir("lb-tls-up");
    let ca = TestCa::new("lb upstream CA").unwrap();
    let (ca_file, _) = ca.ca.write(&dir, "ca").unwrap();
    let (cert, key) = ca
        .issue(&["127.0.0.1"], 1, false)
        .unwrap()
        .write(&dir, "upstream")
        .unwrap();
    let up = nginx::start_nginx(
        dir.clone(),
        &format!(
            "ssl_certificate {cert}; ssl_certificate_key {key}; # http2\n\
             location / {{ return 200 \"nginx saw $server_protocol over $ssl_protocol\\n\"; }}"
        ),
    );
    let upstream = format!("127.0.0.1:{}", up.port);
    for (h2, expect) in [(true, "HTTP/2.0"), (false, "HTTP/1.1")] {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut args = vec![
            "--listen",
            &listen,
            "--upstream",
            &upstream,
            "--upstream-tls",
            "--upstream-ca",
            &ca_file,
        ];
        if h2 {
            args.push("--upstream-h2");
        }
        let lb_dir = temp_dir(if h2 { "lb-tls-h2" } else { "lb-tls-h1" });
        let (_lb, _) = start_lb(&lb_dir, &args);
        wait_listening(port);
        let body = curl(&format!("http://{listen}/"));
        assert!(
            body.starts_with(&format!("nginx saw {expect} over TLSv1.")),
            "{body}"
        );
    }
    // Without the CA the certificate is refused: 502, not a request.
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let lb_dir = temp_dir("lb-tls-noca");
    let (_lb, _) = start_lb(
        &lb_dir,
        &[
            "--listen",
            &listen,
            "--upstream",
            &upstream,
            "--upstream-tls",
        ],
    );
    wait_listening(port);
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg(format!("http://{listen}/"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "502");
}

/// A conf for a daemonized load balancer in `dir` (pid file, error log,
/// upgrade socket there), with `extra` keys; returns its path and the pid
/// file's.
fn daemon_conf(dir: &std::path::Path, extra: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let pid_file = dir.join("lb.pid");
    let conf = dir.join("conf.yaml");
    std::fs::write(
        &conf,
        format!(
            "version: 1\nthreads: 1\npid_file: {}\nerror_log: {}\nupgrade_sock: {}\n{extra}",
            pid_file.display(),
            dir.join("error.log").display(),
            dir.join("upgrade.sock").display()
        ),
    )
    .unwrap();
    (conf, pid_file)
}

/// `load_balancer -d -c conf --listen listen`, a metrics port of its own;
/// the starting command's exit status.
fn run_daemon(conf: &std::path::Path, listen: &str) -> std::process::ExitStatus {
    let metrics = format!("127.0.0.1:{}", free_port());
    Command::new(example("load_balancer"))
        .args(["-d", "-c", conf.to_str().unwrap()])
        .args(["--listen", listen, "--metrics", &metrics])
        .status()
        .unwrap()
}

/// SIGTERM to the daemon `pid`, and wait until it is gone.
fn stop_daemon(pid: i32) {
    let pid = nix::unistd::Pid::from_raw(pid);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    poll_until(Duration::from_secs(30), "the daemon to exit", || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z "))
    });
}

/// The server's own `-d` works for the load balancer too: it detaches,
/// writes its pid file, serves, and stops on SIGTERM.
#[test]
fn daemon_mode() {
    let dir = temp_dir("lb-daemon");
    let (conf, pid_file) = daemon_conf(&dir, "");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    assert!(run_daemon(&conf, &listen).success());
    let pid = wait_pid_file(&pid_file);
    wait_listening(port);
    let body = curl(&format!("http://{listen}/"));
    assert!(body.starts_with("hello from demo upstream "), "{body}");
    stop_daemon(pid);
}

/// `daemon_wait_for_ready`: the command returns once the daemon listens
/// (no polling needed), and fails when the daemon never gets there.
#[test]
fn daemon_waits_for_ready() {
    let dir = temp_dir("lb-daemon-ready");
    let (conf, pid_file) = daemon_conf(
        &dir,
        "daemon_wait_for_ready: true\ndaemon_ready_timeout_seconds: 2\n",
    );
    let listen = format!("127.0.0.1:{}", free_port());
    assert!(run_daemon(&conf, &listen).success());
    // Ready means listening: the first request is answered at once.
    let body = curl(&format!("http://{listen}/"));
    assert!(body.starts_with("hello from demo upstream "), "{body}");
    let pid = wait_pid_file(&pid_file);
    // A second daemon on the same port cannot bind: never ready.
    let started = std::time::Instant::now();
    assert_eq!(run_daemon(&conf, &listen).code(), Some(1));
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "it waited its timeout"
    );
    stop_daemon(pid);
}

/// `--rate-limit N`: a client address's requests beyond N per second get
/// 429 with `Retry-After` and the `RateLimit-*` fields, over HTTP/1.1 (the
/// connection stays open) and h2c alike; a client that waits as told gets
/// through again.
#[test]
fn rate_limit_flag_answers_429_per_client() {
    let dir = temp_dir("lb-rate");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let (_lb, _) = start_lb(&dir, &["--listen", &listen, "--h2c", "--rate-limit", "5"]);
    wait_listening(port);
    let url = format!("http://{listen}/r");
    // Ten requests on one keep-alive connection: status and connects each.
    let mut args = vec!["-sS", "--max-time", "20"];
    args.extend(["-w", "%{http_code} %{num_connects}\n"]);
    for _ in 0..10 {
        args.extend(["-o", "/dev/null", &url]);
    }
    let out = Command::new("curl").args(&args).output().expect("curl");
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    let codes: Vec<&str> = out.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(codes.len(), 10, "{out}");
    assert!(codes[..5].iter().all(|c| *c == "200"), "{out}");
    // The window slides: on a slow machine one more may fit.
    let refused = codes.iter().filter(|c| **c == "429").count();
    assert!((3..=5).contains(&refused), "{out}");
    let connects: u32 = out.lines().map(|l| l[4..].parse::<u32>().unwrap()).sum();
    assert_eq!(connects, 1, "a 429 keeps the connection: {out}");
    // Over h2c, the same client is still over its limit.
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "--http2-prior-knowledge",
            "-D",
            "-",
            "-o",
            "/dev/null",
            &url,
        ])
        .output()
        .expect("curl");
    let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(head.starts_with("http/2 429"), "{head}");
    for field in [
        "retry-after: ",
        "ratelimit-limit: 5",
        "ratelimit-remaining: 0",
        "ratelimit-reset: ",
    ] {
        assert!(head.contains(field), "{field} in {head}");
    }
    let wait: u64 = head
        .lines()
        .find_map(|l| l.strip_prefix("retry-after: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("a Retry-After in seconds");
    assert!((1..=2).contains(&wait), "{head}");
    // Waiting as told is enough.
    std::thread::sleep(Duration::from_secs(wait));
    assert!(curl(&url).starts_with("hello from demo upstream"));
}

/// Python's own decoder for `coding` (gzip from the standard library,
/// brotli and zstandard from Debian's python3-brotli and
/// python3-zstandard) turns `file` back into plain bytes, written to
/// `file.plain`.
fn python_decode(coding: &str, file: &std::path::Path) -> Vec<u8> {
    let script = r#"
import sys
coding, path = sys.argv[1], sys.argv[2]
data = open(path, "rb").read()
if coding == "gzip":
    import gzip; plain = gzip.decompress(data)
elif coding == "br":
    import brotli; plain = brotli.decompress(data)
else:
    import zstandard; plain = zstandard.ZstdDecompressor().decompressobj().decompress(data)
open(path + ".plain", "wb").write(plain)
"#;
    let out = Command::new("/usr/bin/python3")
        .args(["-c", script, coding, &file.to_string_lossy()])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python3 {coding}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(format!("{}.plain", file.display())).unwrap()
}

/// `--compress` in front of nginx: curl --compressed gets each coding it
/// offers (zstd preferred) over HTTP/1.1 and h2c; Python's decoders read
/// gzip, br and zstd back to the file nginx served; a small body and one
/// already encoded pass as they are; a 1 GiB body streams through
/// compressed with the proxy's memory bounded.
#[test]
fn compress_flag_with_real_clients() {
    let dir = temp_dir("lb-compress");
    let ndir = nginx::nginx_dir("lb-compress");
    let page: Vec<u8> = (0..4000u32)
        .flat_map(|i| format!("<p>paragraph {i}: the quick brown fox</p>\n").into_bytes())
        .collect();
    std::fs::write(ndir.join("www/page.html"), &page).unwrap();
    std::fs::write(ndir.join("www/small.txt"), b"short\n").unwrap();
    // 1 GiB of zeros, sparse on disk.
    let big = std::fs::File::create(ndir.join("www/big.txt")).unwrap();
    big.set_len(1 << 30).unwrap();
    drop(big);
    let n = nginx::start_nginx(
        ndir.clone(),
        r#"location = /encoded { add_header Content-Encoding gzip; return 200 "not really gzip"; }"#,
    );
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let up = format!("127.0.0.1:{}", n.port);
    let (lb, _) = start_lb(
        &dir,
        &[
            "--listen",
            &listen,
            "--upstream",
            &up,
            "--h2c",
            "--compress",
        ],
    );
    wait_listening(port);
    let url = format!("http://{listen}/page.html");

    for h2 in [false, true] {
        let proto = if h2 {
            "--http2-prior-knowledge"
        } else {
            "--http1.1"
        };
        let head_file = dir.join("head.txt");
        let body = curl_raw(&[
            proto,
            "--compressed",
            "-D",
            &head_file.to_string_lossy(),
            &url,
        ]);
        assert!(body == page, "h2 {h2}: the page came back changed");
        let head = std::fs::read_to_string(&head_file)
            .unwrap()
            .to_ascii_lowercase();
        assert!(head.contains("content-encoding: zstd"), "h2 {h2}: {head}");
        assert!(head.contains("vary: accept-encoding"), "h2 {h2}: {head}");
        assert!(!head.contains("content-length"), "h2 {h2}: {head}");
    }
    for coding in ["gzip", "br", "zstd"] {
        let file = dir.join(format!("page.{coding}"));
        let accept = format!("Accept-Encoding: {coding}");
        let head = curl_raw(&[
            "-H",
            &accept,
            "-D",
            "-",
            "-o",
            &file.to_string_lossy(),
            &url,
        ]);
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        assert!(
            head.contains(&format!("content-encoding: {coding}")),
            "{head}"
        );
        let coded = std::fs::metadata(&file).unwrap().len() as usize;
        assert!(
            coded < page.len() / 4,
            "{coding}: {coded} of {}",
            page.len()
        );
        assert!(
            python_decode(coding, &file) == page,
            "{coding}: decoded differently"
        );
    }
    // Not worth it, or not ours to change.
    for path in ["/small.txt", "/encoded"] {
        let head = curl_raw(&[
            "-H",
            "Accept-Encoding: gzip, br, zstd",
            "-D",
            "-",
            "-o",
            "/dev/null",
            &format!("http://{listen}{path}"),
        ]);
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        let coded = head
            .lines()
            .filter(|l| l.starts_with("content-encoding"))
            .count();
        assert_eq!(coded, usize::from(path == "/encoded"), "{path}: {head}");
    }
    // A gigabyte, compressed on the way: curl decodes and counts it.
    let big_url = format!("http://{listen}/big.txt");
    let out = Command::new("sh")
        .args([
            "-c",
            &format!(
                "curl -sS --max-time 300 --compressed -H 'Accept-Encoding: zstd' {big_url} | wc -c"
            ),
        ])
        .output()
        .unwrap();
    let count: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(count, 1 << 30);
    let peak = peak_rss_kib(lb.pid().as_raw());
    eprintln!("load_balancer peak RSS after compressing 1 GiB: {peak} KiB");
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB is over 64 MiB");
    let _ = std::fs::remove_dir_all(&ndir);
}

/// One keep-alive HTTP/1.1 client: GET `/`, the status of each answer.
struct Client(BufReader<TcpStream>);

impl Client {
    fn connect(port: u16) -> Client {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        Client(BufReader::new(s))
    }

    fn get(&mut self) -> u16 {
        self.0
            .get_mut()
            .write_all(b"GET / HTTP/1.1\r\nHost: lb.test\r\n\r\n")
            .unwrap();
        let mut line = String::new();
        self.0.read_line(&mut line).unwrap();
        let status: u16 = line
            .split(' ')
            .nth(1)
            .expect("a status line")
            .parse()
            .unwrap();
        let mut length = 0;
        loop {
            line.clear();
            self.0.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        self.0.read_exact(&mut body).unwrap();
        status
    }
}

/// `--rate-limit-redis`: two proxies share one limit through a real
/// redis-server (started and stopped here): clients of both, together
/// over the limit, get through at the limit's rate within 10 % (not
/// twice it); with Redis gone, each proxy limits on its own and nothing
/// fails.
#[test]
fn rate_limit_shared_through_redis_by_two_proxies() {
    const LIMIT: u64 = 40;
    const SECONDS: u64 = 5;
    let dir = temp_dir("lb-redis");
    let rport = free_port();
    let redis = Command::new("redis-server")
        .args(["--port", &rport.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server (apt-get install redis-server)");
    let mut redis = Proc(Some(redis));
    wait_listening(rport);
    let url = format!("redis://127.0.0.1:{rport}");
    let limit = LIMIT.to_string();
    let mut ports = Vec::new();
    let mut lbs = Vec::new();
    for i in 0..2 {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let sub = dir.join(format!("lb{i}"));
        std::fs::create_dir_all(&sub).unwrap();
        let args = [
            "--listen",
            &listen,
            "--rate-limit",
            &limit,
            "--rate-limit-redis",
            &url,
        ];
        lbs.push(start_lb(&sub, &args).0);
        ports.push(port);
    }
    for p in &ports {
        wait_listening(*p);
    }
    let mut clients: Vec<Client> = ports.iter().map(|p| Client::connect(*p)).collect();
    // Start on a whole second of the clock Redis counts by (this machine's),
    // and send twice the limit, half to each proxy, for whole seconds.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    std::thread::sleep(
        Duration::from_millis(1000 - u64::from(now.subsec_millis())) + Duration::from_millis(20),
    );
    let start = std::time::Instant::now();
    let step = Duration::from_secs(1) / (2 * LIMIT as u32);
    let (mut passed, mut refused, mut sent) = (0u64, 0u64, 0u32);
    while start.elapsed() < Duration::from_secs(SECONDS) {
        match clients[(sent % 2) as usize].get() {
            200 => passed += 1,
            429 => refused += 1,
            other => panic!("status {other}"),
        }
        sent += 1;
        if let Some(wait) = (step * sent).checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    let expected = LIMIT * SECONDS;
    eprintln!("shared limit: {passed} passed, {refused} refused; {expected} expected");
    assert!(
        passed.abs_diff(expected) * 10 <= expected,
        "{passed} passed of {} sent, {expected} expected",
        passed + refused
    );
    // Redis gone: each proxy counts locally; no request fails.
    redis.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = redis.wait_exit(Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(1100));
    let mut alone = 0;
    for _ in 0..(3 * LIMIT) {
        match clients[0].get() {
            200 => alone += 1,
            429 => {}
            other => panic!("status {other} with Redis down"),
        }
    }
    assert!(
        (LIMIT / 2..=LIMIT + 5).contains(&alone),
        "{alone} passed with Redis down"
    );
}

/// One gRPC-web call through the proxy with curl, framed by hand as a
/// browser's client frames it: `messages` as gRPC frames (base64 for
/// `text`), over HTTP/1.1 or h2c. Returns the response's header block (lower
/// case) and its frames (flag, payload), the trailer frame last.
fn grpc_web_call(
    dir: &std::path::Path,
    url: &str,
    text: bool,
    h2: bool,
    messages: &[&[u8]],
) -> (String, Vec<(u8, Vec<u8>)>) {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut body = Vec::new();
    for m in messages {
        body.push(0);
        body.extend_from_slice(&(m.len() as u32).to_be_bytes());
        body.extend_from_slice(m);
    }
    if text {
        body = b64.encode(&body).into_bytes();
    }
    let (req, head, out) = (dir.join("req"), dir.join("head"), dir.join("out"));
    std::fs::write(&req, &body).unwrap();
    let ct = if text {
        "content-type: application/grpc-web-text"
    } else {
        "content-type: application/grpc-web+proto"
    };
    let data = format!("@{}", req.display());
    curl_raw(&[
        if h2 {
            "--http2-prior-knowledge"
        } else {
            "--http1.1"
        },
        "-H",
        ct,
        "-H",
        "x-grpc-web: 1",
        "-H",
        "origin: https://app.example",
        "--data-binary",
        &data,
        "-D",
        head.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        url,
    ]);
    let head = std::fs::read_to_string(&head).unwrap().to_ascii_lowercase();
    let mut body = std::fs::read(&out).unwrap();
    if text {
        body = b64.decode(&body).expect("one padded base64 stream");
    }
    let mut frames = Vec::new();
    let mut rest = &body[..];
    while !rest.is_empty() {
        assert!(rest.len() >= 5, "a cut frame: {rest:?}");
        let len = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
        frames.push((rest[0], rest[5..5 + len].to_vec()));
        rest = &rest[5 + len..];
    }
    (head, frames)
}

/// The `grpc-status` of a gRPC-web answer: from its trailer frame, or from
/// the header of a trailers-only answer.
fn grpc_web_status(head: &str, frames: &[(u8, Vec<u8>)]) -> String {
    let trailers = match frames.last() {
        Some((0x80, t)) => String::from_utf8_lossy(t).into_owned(),
        _ => head.to_string(),
    };
    trailers
        .lines()
        .find_map(|l| l.strip_prefix("grpc-status:"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| panic!("no grpc-status in {head}{frames:?}"))
}

#[test]
fn grpc_web_flag_bridges_to_a_real_grpc_server() {
    let dir = temp_dir("lb-grpc-web");
    let (_server, upstream) = grpc_peer_server();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let (_lb, _) = start_lb(
        &dir,
        &[
            "--listen",
            &listen,
            "--h2c",
            "--upstream",
            &upstream,
            "--upstream-h2",
            "--grpc-web",
            "--grpc-web-cors",
            "https://app.example",
        ],
    );
    wait_listening(port);
    let unary = format!("http://{listen}/test.Echo/Unary");
    for (text, h2) in [(false, false), (true, false), (false, true), (true, true)] {
        let what = format!("text {text}, h2 {h2}");
        let (head, frames) = grpc_web_call(&dir, &unary, text, h2, &[b"hi"]);
        let ct = if text {
            "content-type: application/grpc-web-text"
        } else {
            "content-type: application/grpc-web"
        };
        assert!(head.contains(ct), "{what}: {head}");
        assert!(
            head.contains("access-control-allow-origin: https://app.example"),
            "{what}: {head}"
        );
        assert!(
            head.contains("access-control-expose-headers: grpc-status"),
            "{head}"
        );
        assert_eq!(frames.len(), 2, "{what}: {frames:?}");
        assert_eq!(frames[0], (0, b"echo:hi".to_vec()), "{what}");
        // The trailers, carried in the body.
        let trailers = String::from_utf8_lossy(&frames[1].1).into_owned();
        assert_eq!(frames[1].0, 0x80, "{what}");
        assert!(trailers.contains("grpc-status:0\r\n"), "{what}: {trailers}");
        assert!(
            trailers.contains("x-served-by:grpc-peer\r\n"),
            "{what}: {trailers}"
        );
    }
    // A megabyte each way in base64, the pieces splitting its groups anywhere.
    let big: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    for h2 in [false, true] {
        let (_, frames) = grpc_web_call(&dir, &unary, true, h2, &[&big]);
        assert_eq!(frames[0].1.len(), big.len() + 5, "h2 {h2}");
        assert!(frames[0].1.starts_with(b"echo:") && frames[0].1[5..] == big[..]);
        assert_eq!(grpc_web_status("", &frames), "0");
    }
    // Server streaming: every message, then the status.
    let stream = format!("http://{listen}/test.Echo/ServerStream");
    let (head, frames) = grpc_web_call(&dir, &stream, false, false, &[b"50"]);
    assert_eq!(frames.len(), 51, "{head}");
    assert!((0..50).all(|i| frames[i] == (0, format!("part{i}").into_bytes())));
    assert_eq!(grpc_web_status(&head, &frames), "0");
    // Several messages in one request body (client streaming).
    let collect = format!("http://{listen}/test.Echo/ClientStream");
    let (_, frames) = grpc_web_call(&dir, &collect, true, false, &[b"a", b"b", b"c"]);
    assert_eq!(frames[0], (0, b"a+b+c".to_vec()));
    // A gRPC error reaches the browser as a status, not an HTTP error.
    for h2 in [false, true] {
        let (head, frames) = grpc_web_call(&dir, &unary, false, h2, &[b"fail"]);
        assert!(
            head.starts_with(if h2 { "http/2 200" } else { "http/1.1 200" }),
            "{head}"
        );
        assert_eq!(grpc_web_status(&head, &frames), "3", "{head}{frames:?}");
    }
    // The browser's CORS preflight is answered by the proxy.
    let preflight = |origin: &str| {
        let out = curl_raw(&[
            "-X",
            "OPTIONS",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-H",
            &format!("origin: {origin}"),
            "-H",
            "access-control-request-method: POST",
            "-H",
            "access-control-request-headers: content-type,x-grpc-web,x-user-agent",
            &unary,
        ]);
        String::from_utf8_lossy(&out).to_ascii_lowercase()
    };
    let head = preflight("https://app.example");
    assert!(head.starts_with("http/1.1 204"), "{head}");
    for field in [
        "access-control-allow-origin: https://app.example",
        "access-control-allow-methods: post, options",
        "access-control-max-age: 86400",
        "vary: origin",
    ] {
        assert!(head.contains(field), "{field} in {head}");
    }
    let allowed = head
        .lines()
        .find_map(|l| l.strip_prefix("access-control-allow-headers: "))
        .unwrap_or_default();
    for h in ["content-type", "x-grpc-web", "x-user-agent"] {
        assert!(
            allowed.split(',').any(|a| a.trim() == h),
            "{h} in {allowed}"
        );
    }
    assert!(preflight("https://evil.example").starts_with("http/1.1 403"));
    // A -text body that is not base64 is the client's error.
    let code = curl_raw(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        "content-type: application/grpc-web-text",
        "--data-binary",
        "AAA*AAJoaQ==",
        &unary,
    ]);
    assert_eq!(String::from_utf8_lossy(&code), "400");
    // Plain gRPC through the same proxy is untouched.
    grpc_peer_client("client", &listen);
}

/// `--cache` and `--cache-dir` before nginx as the origin: a static file
/// with `expires 1m` is fetched once, then served from the cache; one
/// with `Cache-Control: no-cache` is revalidated on every request (nginx
/// answers the proxy's `If-None-Match` with 304); objects on disk are
/// still served after a restart; `PURGE` from loopback removes one.
#[test]
fn cache_in_memory_and_on_disk_before_nginx() {
    let ndir = nginx::nginx_dir("lb-cache");
    std::fs::write(ndir.join("www/fresh.txt"), "fresh body\n").unwrap();
    std::fs::write(ndir.join("www/reval.txt"), "reval body\n").unwrap();
    let server = format!(
        "access_log {}/access.log;\n\
         location /fresh.txt {{ expires 1m; }}\n\
         location /reval.txt {{ add_header Cache-Control no-cache; }}",
        ndir.display()
    );
    let n = nginx::start_nginx(ndir.clone(), &server);
    let origin = format!("127.0.0.1:{}", n.port);
    let asked = |path: &str, status: &str| {
        std::fs::read_to_string(ndir.join("access.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(path) && l.contains(&format!("\" {status} ")))
            .count()
    };
    // The header block and the body of a GET (one Host for every proxy).
    let get = |listen: &str, path: &str, extra: &[&str]| -> (String, String) {
        let url = format!("http://{listen}{path}");
        let headers = temp_dir("lb-cache-h").join("h");
        let mut args = vec!["-H", "host: cache.test", "-D"];
        let h = headers.to_string_lossy().into_owned();
        args.push(&h);
        args.extend_from_slice(extra);
        args.push(&url);
        let body = curl_text(&args);
        let head = std::fs::read_to_string(&headers)
            .unwrap()
            .to_ascii_lowercase();
        (head, body)
    };
    let cache_status = |head: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix("cache-status: "))
            .unwrap_or("")
            .trim()
            .to_string()
    };

    // In memory, with the JSON access log.
    let dir = temp_dir("lb-cache");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let log = dir.join("access.json");
    let conf = dir.join("json.yaml");
    let yaml = format!(
        "---\nversion: 1\naccess_log: {}\naccess_log_format: json\n",
        log.display()
    );
    std::fs::write(&conf, yaml).unwrap();
    let c = conf.to_string_lossy().into_owned();
    let (mut lb, _) = start_lb(
        &dir,
        &[
            "-c",
            &c,
            "--listen",
            &listen,
            "--upstream",
            &origin,
            "--cache",
        ],
    );
    wait_listening(port);
    let (head, body) = get(&listen, "/fresh.txt", &[]);
    assert_eq!(body, "fresh body\n");
    assert_eq!(cache_status(&head), "pingora; fwd=uri-miss; stored");
    for _ in 0..3 {
        let (head, body) = get(&listen, "/fresh.txt", &[]);
        assert_eq!(body, "fresh body\n");
        assert!(cache_status(&head).starts_with("pingora; hit"), "{head}");
    }
    assert_eq!(asked("/fresh.txt", "200"), 1, "one trip to nginx");
    for i in 0..3 {
        let (head, body) = get(&listen, "/reval.txt", &[]);
        assert_eq!(body, "reval body\n");
        if i > 0 {
            assert_eq!(
                cache_status(&head),
                "pingora; fwd=stale; fwd-status=304; stored"
            );
        }
    }
    assert_eq!(
        (asked("/reval.txt", "200"), asked("/reval.txt", "304")),
        (1, 2)
    );
    // The access log says how the cache took part.
    poll_until(Duration::from_secs(10), "the access log", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("\"cache\":\"hit\"")
            && text.contains("\"cache\":\"miss\"")
            && text.contains("\"cache\":\"revalidated\"")
    });
    // PURGE, then a miss.
    let (head, _) = get(&listen, "/fresh.txt", &["-X", "PURGE"]);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let (head, _) = get(&listen, "/fresh.txt", &[]);
    assert_eq!(cache_status(&head), "pingora; fwd=uri-miss; stored");
    lb.kill();

    // On disk, across a restart.
    let cache_dir = dir.join("cache");
    let cd = cache_dir.to_string_lossy().into_owned();
    let disk_args = |listen: &str| -> Vec<String> {
        [
            "--listen",
            listen,
            "--upstream",
            &origin,
            "--cache-dir",
            &cd,
            "--cache-size",
            "1M",
        ]
        .map(String::from)
        .to_vec()
    };
    let before = asked("/fresh.txt", "200");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let args = disk_args(&listen);
    let (mut lb, _) = start_lb(&dir, &args.iter().map(String::as_str).collect::<Vec<_>>());
    wait_listening(port);
    get(&listen, "/fresh.txt", &[]);
    // On disk (synced on a blocking thread) once it is a hit.
    poll_until(Duration::from_secs(10), "the object on disk", || {
        cache_status(&get(&listen, "/fresh.txt", &[]).0).starts_with("pingora; hit")
    });
    lb.kill();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let args = disk_args(&listen);
    let (_lb, _) = start_lb(&dir, &args.iter().map(String::as_str).collect::<Vec<_>>());
    wait_listening(port);
    let (head, body) = get(&listen, "/fresh.txt", &[]);
    assert_eq!(body, "fresh body\n");
    assert!(cache_status(&head).starts_with("pingora; hit"), "{head}");
    assert_eq!(
        asked("/fresh.txt", "200"),
        before + 1,
        "one fill, kept across the restart"
    );
    // A bad size is refused, naming the flag.
    let out = Command::new(example("load_balancer"))
        .args(["--cache", "--cache-size", "lots"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--cache-size"));
}
