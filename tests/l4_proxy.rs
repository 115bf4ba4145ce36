//! The TCP and UDP proxy examples as users run them, over real sockets:
//! TLS on either side, many connections and 100 MB each way, half-close,
//! the PROXY protocol (from curl and from raw sockets, well-formed and
//! not), the connection filter, the UDP proxy in front of a UDP echo
//! server with 1,000 clients, the session cap and idle timeout, and the UDP
//! socket kept across a graceful upgrade with no datagram lost.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pingora::core::connectors::tls::{TlsConnector, TlsPeer};
use pingora::core::protocols::proxy_protocol::{ProxyHeader, ProxyVersion};
use pingora::core::protocols::L4Stream;
use pingora::core::utils::certs::TestCa;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

mod common;
use common::*;

const LIMIT: Duration = Duration::from_secs(60);

fn start(name: &str, args: &[String], log: &Path) -> Proc {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Proc::start_example(name, &args, log)
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn log_text(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// Send `msg`, half-close, and read everything back until the far end
/// closes.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S, msg: &[u8]) -> Vec<u8> {
    io.write_all(msg).await.unwrap();
    io.shutdown().await.unwrap();
    let mut back = Vec::new();
    io.read_to_end(&mut back).await.unwrap();
    back
}

async fn tls_connect(port: u16, ca: &str) -> pingora::core::protocols::tls::SslStream {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let connector = TlsConnector::new(Some(ca));
    connector
        .connect(L4Stream::from_tcp(tcp), &TlsPeer::new("proxy.test"))
        .await
        .unwrap()
}

/// The bytes at `offset` of a long deterministic stream, built from one
/// 64 KiB block with the block's number in its first 8 bytes.
fn pattern(block: &[u8], n: u64) -> Vec<u8> {
    let mut b = block.to_vec();
    b[..8].copy_from_slice(&n.to_be_bytes());
    b
}

/// A TLS client → proxy A (TLS terminated, TLS originated) → proxy B (TLS
/// terminated) → B's echo upstream: 1,000 connections through A's TLS
/// listener and 200 through its plain one, each half-closing after its
/// message and reading the echo to the end; then 100 MB each way on one
/// TLS connection, with the byte counts in A's log.
#[test]
fn tcp_proxy_tls_both_sides_many_connections_and_100_mb() {
    let dir = temp_dir("tcp-proxy-tls");
    let ca = TestCa::new("test ca").unwrap();
    let (ca_file, _) = ca.ca.write(&dir, "ca").unwrap();
    let (cert, key) = ca
        .issue(&["proxy.test"], 1, false)
        .unwrap()
        .write(&dir, "proxy")
        .unwrap();
    let (b_plain, b_tls, a_plain, a_tls) = (free_port(), free_port(), free_port(), free_port());
    let b_log = dir.join("b.log");
    let _b = start(
        "tcp_proxy",
        &s(&[
            "--listen",
            &format!("127.0.0.1:{b_plain}"),
            "--tls-listen",
            &format!("127.0.0.1:{b_tls}"),
            "--cert",
            &cert,
            "--key",
            &key,
        ]),
        &b_log,
    );
    // B first: A health-checks it from the start.
    wait_listening(b_plain);
    wait_listening(b_tls);
    let a_log = dir.join("a.log");
    let _a = start(
        "tcp_proxy",
        &s(&[
            "--listen",
            &format!("127.0.0.1:{a_plain}"),
            "--tls-listen",
            &format!("127.0.0.1:{a_tls}"),
            "--cert",
            &cert,
            "--key",
            &key,
            "--upstream",
            &format!("127.0.0.1:{b_tls}"),
            "--upstream-tls",
            "--upstream-ca",
            &ca_file,
            "--upstream-sni",
            "proxy.test",
        ]),
        &a_log,
    );
    wait_listening(a_plain);
    wait_listening(a_tls);
    let rt = runtime();
    rt.block_on(async {
        let gate = Arc::new(tokio::sync::Semaphore::new(50));
        let mut tasks = vec![];
        for i in 0..1200usize {
            let gate = gate.clone();
            let ca_file = ca_file.clone();
            tasks.push(tokio::spawn(async move {
                let _permit = gate.acquire().await.unwrap();
                let msg = format!("connection {i} {}", "x".repeat(i % 3000)).into_bytes();
                let back = if i < 1000 {
                    exchange(&mut tls_connect(a_tls, &ca_file).await, &msg).await
                } else {
                    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", a_plain))
                        .await
                        .unwrap();
                    exchange(&mut tcp, &msg).await
                };
                assert_eq!(back, msg, "connection {i}");
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }

        // 100 MB each way at once on one TLS connection.
        const TOTAL: u64 = 100 * 1024 * 1024;
        const BLOCK: usize = 64 * 1024;
        let block: Vec<u8> = (0..BLOCK).map(|i| (i * 31 % 251) as u8).collect();
        let conn = tls_connect(a_tls, &ca_file).await;
        let (mut rd, mut wr) = tokio::io::split(conn);
        let wblock = block.clone();
        let writer = tokio::spawn(async move {
            for n in 0..TOTAL / BLOCK as u64 {
                wr.write_all(&pattern(&wblock, n)).await.unwrap();
            }
            wr.shutdown().await.unwrap();
        });
        let mut got: u64 = 0;
        let mut buf = vec![0u8; BLOCK];
        let mut expect = pattern(&block, 0);
        loop {
            let n = rd.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            let mut off = 0;
            while off < n {
                let at = (got % BLOCK as u64) as usize;
                if at == 0 {
                    expect = pattern(&block, got / BLOCK as u64);
                }
                let take = (BLOCK - at).min(n - off);
                assert!(
                    buf[off..off + take] == expect[at..at + take],
                    "byte {got} differs"
                );
                off += take;
                got += take as u64;
            }
        }
        writer.await.unwrap();
        assert_eq!(got, TOTAL);
    });
    // One log line per connection, with the byte counts of the big one.
    let line = format!("sent={} received={}", 100 << 20, 100 << 20);
    poll_until(LIMIT, "the 100 MB connection in A's log", || {
        log_text(&a_log).contains(&line)
    });
    // Every connection with bytes (wait_listening's probe had none) is
    // logged once, without an error.
    let text = log_text(&a_log);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("tcp client=127.0.0.1:") && !l.contains(" sent=0 "))
        .collect();
    assert_eq!(lines.len(), 1201, "{text}");
    assert!(lines.iter().all(|l| l.ends_with(" error=-")), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The upstream half-closes first: it sends a greeting and shuts down its
/// write side at once, then reads everything the client sends. The client
/// sees the greeting and EOF, and what it sends after that still arrives.
#[test]
fn tcp_proxy_half_close_from_the_upstream() {
    let dir = temp_dir("tcp-proxy-half-close");
    let up = TcpListener::bind("127.0.0.1:0").unwrap();
    let up_port = up.local_addr().unwrap().port();
    let received = Arc::new(Mutex::new(Vec::new()));
    let rec = received.clone();
    let upstream = std::thread::spawn(move || {
        // The health check connects too: serve until the real client's
        // bytes arrived.
        loop {
            let (mut c, _) = up.accept().unwrap();
            if c.write_all(b"bye").is_err() {
                continue;
            }
            let _ = c.shutdown(std::net::Shutdown::Write);
            let mut all = Vec::new();
            let _ = c.read_to_end(&mut all);
            if !all.is_empty() {
                *rec.lock().unwrap() = all;
                return;
            }
        }
    });
    let port = free_port();
    let log = dir.join("proxy.log");
    let _p = start(
        "tcp_proxy",
        &s(&[
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--upstream",
            &format!("127.0.0.1:{up_port}"),
        ]),
        &log,
    );
    wait_listening(port);
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(LIMIT)).unwrap();
    let mut greeting = Vec::new();
    c.read_to_end(&mut greeting).unwrap();
    assert_eq!(greeting, b"bye");
    // Our direction is still open.
    let payload = vec![7u8; 1 << 20];
    c.write_all(&payload).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    upstream.join().unwrap();
    assert_eq!(received.lock().unwrap().len(), payload.len());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A test upstream that reads the PROXY header the proxy sends and
/// answers with what it said: as an HTTP response to an HTTP request, else
/// as a line followed by the echo of the rest.
fn proxy_header_upstream() -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let c2 = count.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let count = c2.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (h, len) = loop {
                    match ProxyHeader::parse(&buf) {
                        Ok(Some(x)) => break x,
                        Ok(None) => {}
                        // The health check sends nothing.
                        Err(_) => return,
                    }
                    match c.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                count.fetch_add(1, Ordering::SeqCst);
                let line = format!(
                    "{:?} src={} dst={}",
                    h.version,
                    h.source.map(|a| a.to_string()).unwrap_or_default(),
                    h.destination.map(|a| a.to_string()).unwrap_or_default()
                );
                let mut rest = buf.split_off(len);
                // Enough to tell HTTP from the rest (the header may have
                // come alone).
                while rest.len() < 4 {
                    match c.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => rest.extend_from_slice(&chunk[..n]),
                    }
                }
                if rest.starts_with(b"GET ") {
                    while !rest.windows(4).any(|w| w == b"\r\n\r\n") {
                        match c.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => rest.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let _ = write!(
                        c,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{line}",
                        line.len()
                    );
                    return;
                }
                let _ = writeln!(c, "{line}");
                let _ = c.write_all(&rest);
                let _ = std::io::copy(&mut c.try_clone().unwrap(), &mut c);
            });
        }
    });
    (port, count)
}

/// What a raw client gets back after sending `bytes` and half-closing
/// (empty when the proxy closed the connection).
fn raw(port: u16, bytes: &[u8]) -> String {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(LIMIT)).unwrap();
    c.write_all(bytes).unwrap();
    let _ = c.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    // A reset is as good as a close here.
    let _ = c.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Like [`raw`], but the bytes go out one per write (Nagle off), so the
/// proxy meets the header in pieces.
fn raw_in_pieces(port: u16, bytes: &[u8]) -> String {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_nodelay(true).unwrap();
    c.set_read_timeout(Some(LIMIT)).unwrap();
    for b in bytes {
        c.write_all(std::slice::from_ref(b)).unwrap();
    }
    let _ = c.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// PROXY v1 and v2 parsed on accept (from curl and from raw sockets), the
/// original client passed on to the upstream as v2 (and v1 by a second
/// proxy), and malformed or missing headers refused before any upstream
/// connection, with the reason logged.
#[test]
fn tcp_proxy_reads_and_sends_the_proxy_protocol() {
    let dir = temp_dir("tcp-proxy-pp");
    let (up, seen) = proxy_header_upstream();
    let (p2, p1) = (free_port(), free_port());
    let log = dir.join("proxy.log");
    let mut procs = vec![];
    for (port, version) in [(p2, "v2"), (p1, "v1")] {
        procs.push(start(
            "tcp_proxy",
            &s(&[
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--proxy-protocol",
                "--send-proxy",
                version,
                "--upstream",
                &format!("127.0.0.1:{up}"),
            ]),
            &log,
        ));
    }
    // wait_listening's probe connections carry no header: refused, and
    // never reach the upstream.
    wait_listening(p2);
    wait_listening(p1);

    // curl sends a v1 header with its own address.
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "20", "--haproxy-protocol"])
        .arg(format!("http://127.0.0.1:{p2}/"))
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(body.starts_with("V2 src=127.0.0.1:"), "{body}");
    assert!(body.ends_with(&format!("dst=127.0.0.1:{p2}")), "{body}");

    // Raw v1, passed on as v2 and as v1.
    let v1 = b"PROXY TCP4 192.0.2.7 198.51.100.9 4242 443\r\nhello";
    assert_eq!(
        raw(p2, v1),
        "V2 src=192.0.2.7:4242 dst=198.51.100.9:443\nhello"
    );
    assert_eq!(
        raw(p1, v1),
        "V1 src=192.0.2.7:4242 dst=198.51.100.9:443\nhello"
    );
    // Raw v2 with a TLV, IPv6.
    let mut h = ProxyHeader::new(
        ProxyVersion::V2,
        "[2001:db8::5]:5555".parse().unwrap(),
        "[2001:db8::1]:443".parse().unwrap(),
    );
    h.tlvs.push((0x04, b"noop".to_vec()));
    let mut v2 = h.to_bytes();
    v2.extend_from_slice(b"hi");
    assert_eq!(
        raw(p2, &v2),
        "V2 src=[2001:db8::5]:5555 dst=[2001:db8::1]:443\nhi"
    );
    // The same headers, a byte per write.
    assert_eq!(
        raw_in_pieces(p2, &v2),
        "V2 src=[2001:db8::5]:5555 dst=[2001:db8::1]:443\nhi"
    );
    assert_eq!(
        raw_in_pieces(p1, v1),
        "V1 src=192.0.2.7:4242 dst=198.51.100.9:443\nhello"
    );
    // v2 LOCAL: the sender speaks for itself; the socket's peer is passed on.
    let local = ProxyHeader {
        version: ProxyVersion::V2,
        source: None,
        destination: None,
        tlvs: vec![],
    };
    let got = raw(p2, &[local.to_bytes(), b"x".to_vec()].concat());
    assert!(got.starts_with("V2 src=127.0.0.1:"), "{got}");
    assert!(got.ends_with(&format!("dst=127.0.0.1:{p2}\nx")), "{got}");
    assert_eq!(seen.load(Ordering::SeqCst), 7);

    // Malformed or missing: closed, never proxied.
    let mut bad_version = v2.clone();
    bad_version[12] = 0x11;
    for bad in [
        b"PROXY TCP4 192.0.2.7 198.51.100.9 99999 443\r\nhello".to_vec(),
        b"PROXY TCP4 192.0.2.7\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        [b"PROXY UNKNOWN ".as_slice(), &[b'a'; 200]].concat(),
        bad_version,
        b"PROXY TCP4 192.0.2.7 198.51.100.9 1 2".to_vec(), // closed before the CRLF
    ] {
        assert_eq!(raw(p2, &bad), "", "{:?}", String::from_utf8_lossy(&bad));
    }
    assert_eq!(seen.load(Ordering::SeqCst), 7);
    poll_until(LIMIT, "the reasons in the log", || {
        let t = log_text(&log);
        t.contains("bad port \"99999\"")
            && t.contains("no PROXY protocol header")
            && t.contains("longer than 107 bytes")
            && t.contains("version 1")
            && t.contains("closed after")
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--deny` / `--allow`: a refused client is closed before anything is
/// read; an allowed one is served.
#[test]
fn tcp_proxy_connection_filter() {
    let dir = temp_dir("tcp-proxy-filter");
    let port = free_port();
    let _p = start(
        "tcp_proxy",
        &s(&[
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--deny",
            "127.0.0.2",
            "--allow",
            "127.0.0.0/8",
        ]),
        &dir.join("proxy.log"),
    );
    wait_listening(port);
    assert_eq!(raw(port, b"let me in"), "let me in");
    assert_eq!(
        from_source("127.0.0.3", port, b"let me in", true),
        b"let me in"
    );
    assert_eq!(from_source("127.0.0.2", port, b"let me in", true), b"");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A UDP echo server on a thread, stopped by dropping the handle.
struct UdpEcho {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl UdpEcho {
    fn start() -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let port = sock.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !st.load(Ordering::Relaxed) {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(&buf[..n], from);
                }
            }
        });
        UdpEcho {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Start the udp_proxy example with `args(port)` on a free port, and wait
/// until it answers; returns it, the port and the probe's socket (keep it
/// open, so that no test client gets its port, and with it the probe's
/// session, which lives until it idles out). The port is free when picked,
/// but another test's UDP socket (the 1,000-client test binds many) can
/// take it before the proxy binds: the proxy then exits, and a new port
/// is tried.
fn start_udp_proxy(log: &Path, args: impl Fn(u16) -> Vec<String>) -> (Proc, u16, UdpSocket) {
    for _ in 0..5 {
        let port = free_port();
        let mut p = start("udp_proxy", &args(port), log);
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        c.connect(("127.0.0.1", port)).unwrap();
        let mut buf = [0u8; 64];
        let mut exited = false;
        poll_until(LIMIT, "the UDP proxy to answer", || {
            let _ = c.send(b"probe");
            if matches!(c.recv(&mut buf), Ok(5)) {
                return true;
            }
            exited = p.0.as_mut().unwrap().try_wait().unwrap().is_some();
            exited
        });
        if !exited {
            return (p, port, c);
        }
    }
    panic!(
        "the UDP proxy could not bind a port in 5 tries; see {}",
        log.display()
    );
}

/// The udp_proxy example on a free port in front of `echo`, with `extra`
/// flags, answering; its log file, and the probe socket (keep it).
fn udp_proxy(
    dir: &Path,
    echo: &UdpEcho,
    extra: &[&str],
) -> (Proc, u16, std::path::PathBuf, UdpSocket) {
    let log = dir.join("proxy.log");
    let (p, port, probe) = start_udp_proxy(&log, |port| {
        let mut args = s(&[
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--upstream",
            &format!("127.0.0.1:{}", echo.port),
        ]);
        args.extend(s(extra));
        args
    });
    (p, port, log, probe)
}

/// A two-thread tokio runtime for a test's clients.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// 1,000 clients, 3 datagrams each, at most 100 in flight: each gets its
/// own replies and nothing else; every session is logged when it idles
/// out.
#[test]
fn udp_proxy_1000_clients_get_only_their_own_replies() {
    let dir = temp_dir("udp-proxy");
    let echo = UdpEcho::start();
    let (_p, port, log, _probe) = udp_proxy(&dir, &echo, &["--idle-timeout-secs", "1"]);
    let rt = runtime();
    rt.block_on(async {
        let gate = Arc::new(tokio::sync::Semaphore::new(100));
        let mut tasks = vec![];
        for i in 0..1000 {
            let gate = gate.clone();
            tasks.push(tokio::spawn(async move {
                let _permit = gate.acquire().await.unwrap();
                let c = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
                c.connect(("127.0.0.1", port)).await.unwrap();
                let mut buf = [0u8; 64];
                for j in 0..3 {
                    let msg = format!("client {i} datagram {j}");
                    c.send(msg.as_bytes()).await.unwrap();
                    let n = tokio::time::timeout(LIMIT, c.recv(&mut buf))
                        .await
                        .expect("a reply")
                        .unwrap();
                    assert_eq!(&buf[..n], msg.as_bytes());
                }
                c
            }));
        }
        let mut clients = vec![];
        for t in tasks {
            clients.push(t.await.unwrap());
        }
        // Nothing else arrived for anyone.
        for c in &clients {
            let mut buf = [0u8; 64];
            assert!(c.try_recv(&mut buf).is_err());
        }
    });
    poll_until(LIMIT, "1,000 sessions logged as closed", || {
        log_text(&log)
            .matches("datagrams_in=3 datagrams_out=3")
            .count()
            == 1000
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// SIGTERM: a UDP service answers until it stops, then exits 0 and logs a
/// graceful shutdown, as a TCP one does.
/// The UDP service runs on the conf's worker threads, like the TCP
/// services: `threads: 3` without work stealing is three runtimes, each a
/// thread named after the service.
#[test]
fn udp_proxy_runs_on_the_confs_threads() {
    let dir = temp_dir("udp-threads");
    let conf = dir.join("conf.yaml");
    std::fs::write(&conf, "version: 1\nthreads: 3\nwork_stealing: false\n").unwrap();
    let echo = UdpEcho::start();
    let (p, _port, _log, probe) = udp_proxy(&dir, &echo, &["-c", conf.to_str().unwrap()]);
    let mut buf = [0u8; 64];
    probe.send(b"hello").unwrap();
    let n = probe.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"hello");
    let pid = p.pid().as_raw();
    let workers = || {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|comm| comm.starts_with("UDP proxy-"))
            .count()
    };
    // The runtimes start one by one: wait for all three (seen with two
    // once, on a loaded machine), and never more.
    poll_until(LIMIT, "three UDP proxy worker threads", || workers() == 3);
    assert_eq!(workers(), 3);
}

#[test]
fn udp_proxy_sigterm_exits_gracefully() {
    let dir = temp_dir("udp-sigterm");
    let echo = UdpEcho::start();
    let (mut p, port, log, _probe) = udp_proxy(&dir, &echo, &[]);
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(LIMIT)).unwrap();
    let mut buf = [0u8; 16];
    c.send(b"before").unwrap();
    assert_eq!(c.recv(&mut buf).unwrap(), 6);
    assert_eq!(&buf[..6], b"before");
    p.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(p.wait_exit(LIMIT), Some(0));
    poll_until(LIMIT, "the shutdown in the log", || {
        log_text(&log).contains("graceful shutdown complete")
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--max-sessions 2`: a third client is not served while two sessions
/// live, and is once they idle out.
#[test]
fn udp_proxy_session_cap() {
    let dir = temp_dir("udp-proxy-cap");
    let echo = UdpEcho::start();
    let (_p, port, _log, _probe) = udp_proxy(
        &dir,
        &echo,
        &["--idle-timeout-secs", "1", "--max-sessions", "2"],
    );
    let client = || {
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.connect(("127.0.0.1", port)).unwrap();
        c
    };
    let (a, b, third) = (client(), client(), client());
    let mut buf = [0u8; 64];
    // The probe's session may still hold a place: wait until a and b are
    // both answered in one round, so both places are theirs and fresh.
    a.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    b.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    poll_until(LIMIT, "two sessions", || {
        let _ = a.send(b"mine");
        let ok_a = matches!(a.recv(&mut buf), Ok(4));
        let _ = b.send(b"mine");
        ok_a && matches!(b.recv(&mut buf), Ok(4))
    });
    // Both places taken, and neither idle for a second yet: the third is
    // dropped.
    third
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    third.send(b"me too").unwrap();
    assert!(third.recv(&mut buf).is_err(), "served beyond the cap");
    // Once they idle out, the third gets a session.
    poll_until(LIMIT, "the third client to be served", || {
        let _ = third.send(b"me too");
        matches!(third.recv(&mut buf), Ok(6))
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--max-sessions-per-ip 2`: a third client from the same address (another
/// port) is not served while two sessions from it live; a client from
/// another address is.
#[test]
fn udp_proxy_session_cap_per_address() {
    let dir = temp_dir("udp-proxy-ip-cap");
    let echo = UdpEcho::start();
    let (_p, port, _log, _probe) = udp_proxy(
        &dir,
        &echo,
        &["--idle-timeout-secs", "60", "--max-sessions-per-ip", "2"],
    );
    let client = |ip: &str| {
        let c = UdpSocket::bind((ip, 0)).unwrap();
        c.connect(("127.0.0.1", port)).unwrap();
        c.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        c
    };
    let mut buf = [0u8; 64];
    // The probe (from 127.0.0.1) holds one place: one more fits.
    let a = client("127.0.0.1");
    poll_until(LIMIT, "a second session from 127.0.0.1", || {
        let _ = a.send(b"mine");
        matches!(a.recv(&mut buf), Ok(4))
    });
    let third = client("127.0.0.1");
    third.send(b"me too").unwrap();
    assert!(
        third.recv(&mut buf).is_err(),
        "served beyond the per-address cap"
    );
    let other = client("127.0.0.2");
    poll_until(LIMIT, "a client from another address", || {
        let _ = other.send(b"hello");
        matches!(other.recv(&mut buf), Ok(5))
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// Steady traffic through the UDP proxy while it is upgraded: the new
/// process takes the UDP socket, the old one drains and exits, and every
/// datagram sent is answered.
#[test]
fn udp_proxy_graceful_upgrade_loses_nothing() {
    let dir = temp_dir("udp-upgrade");
    let echo = UdpEcho::start();
    let conf = dir.join("conf.yaml");
    std::fs::write(
        &conf,
        format!(
            "---\nversion: 1\nupgrade_sock: {}\ngrace_period_seconds: 1\ngraceful_shutdown_timeout_seconds: 10\n",
            dir.join("upgrade.sock").display()
        ),
    )
    .unwrap();
    let args = |port: u16, upgrade: bool| {
        let mut a = s(&[
            "-c",
            &conf.display().to_string(),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--upstream",
            &format!("127.0.0.1:{}", echo.port),
        ]);
        if upgrade {
            a.push("-u".into());
        }
        a
    };
    let log = dir.join("proxy.log");
    let (mut old, port, _probe) = start_udp_proxy(&log, |port| args(port, false));

    // Four clients take turns sending numbered datagrams every 2 ms; a
    // receiver per client records the numbers that come back.
    let clients: Vec<Arc<UdpSocket>> = (0..4)
        .map(|_| {
            let c = UdpSocket::bind("127.0.0.1:0").unwrap();
            c.connect(("127.0.0.1", port)).unwrap();
            c.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            Arc::new(c)
        })
        .collect();
    let got = Arc::new(Mutex::new(HashSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let receivers: Vec<_> = clients
        .iter()
        .map(|c| {
            let (c, got, stop) = (c.clone(), got.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 16];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(8) = c.recv(&mut buf) {
                        let n = u64::from_be_bytes(buf[..8].try_into().unwrap());
                        got.lock().unwrap().insert(n);
                    }
                }
            })
        })
        .collect();
    let sent = Arc::new(AtomicUsize::new(0));
    let sending = Arc::new(AtomicBool::new(true));
    let sender = {
        let (clients, sent, sending) = (clients.clone(), sent.clone(), sending.clone());
        std::thread::spawn(move || {
            let mut n: u64 = 0;
            while sending.load(Ordering::Relaxed) {
                clients[(n % 4) as usize].send(&n.to_be_bytes()).unwrap();
                n += 1;
                sent.store(n as usize, Ordering::Relaxed);
                // Steady low rate: pacing, not waiting for anything.
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    poll_until(LIMIT, "traffic before the upgrade", || {
        got.lock().unwrap().len() > 100
    });
    let _new = start("udp_proxy", &args(port, true), &log);
    let sock = dir.join("upgrade.sock");
    poll_until(LIMIT, "the new process's upgrade_sock", || sock.exists());
    old.signal(nix::sys::signal::Signal::SIGQUIT);
    assert_eq!(old.wait_exit(LIMIT), Some(0));
    // The new process alone carries the traffic for a while.
    let after = sent.load(Ordering::Relaxed);
    poll_until(LIMIT, "traffic after the old process exited", || {
        sent.load(Ordering::Relaxed) > after + 200
    });
    sending.store(false, Ordering::Relaxed);
    sender.join().unwrap();
    let total = sent.load(Ordering::Relaxed);
    poll_until(LIMIT, "every datagram answered", || {
        got.lock().unwrap().len() == total
    });
    stop.store(true, Ordering::Relaxed);
    for r in receivers {
        r.join().unwrap();
    }
    assert!(log_text(&log).contains("received 1 listening sockets"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A TLS ClientHello, as a client would send it first: written by the TLS
/// library into memory (its reads say "not yet").
fn client_hello() -> Vec<u8> {
    use pingora::core::tls::ssl::{HandshakeError, SslConnector, SslMethod};
    struct Capture(Vec<u8>);
    impl Read for Capture {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::WouldBlock.into())
        }
    }
    impl Write for Capture {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let connector = SslConnector::builder(SslMethod::tls()).unwrap().build();
    match connector.connect("proxy.test", Capture(Vec::new())) {
        Err(HandshakeError::WouldBlock(mid)) => mid.get_ref().0.clone(),
        _ => panic!("the handshake should wait for the server"),
    }
}

/// Connect to `port` from the local address `src` and send `bytes`. With
/// `read_all`, shut the writing side and read what comes back until the
/// server closes (EOF or reset); without, return the first piece read.
/// Nothing within 20 s is a panic.
fn from_source(src: &str, port: u16, bytes: &[u8], read_all: bool) -> Vec<u8> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(
        &format!("{src}:0")
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    sock.connect(
        &format!("127.0.0.1:{port}")
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    let mut c: TcpStream = sock.into();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = c.write_all(bytes);
    if read_all {
        let _ = c.shutdown(std::net::Shutdown::Write);
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if !read_all {
                    return out;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("from {src}: {e} after {} bytes", out.len()),
        }
    }
}

/// The connection filter on a TLS listener runs before the handshake: a
/// denied client's ClientHello gets no answer at all (the connection is
/// closed without a byte of ServerHello), an allowed one's gets the
/// server's handshake, and a full TLS client from an allowed address is
/// served.
#[test]
fn tcp_proxy_connection_filter_before_the_tls_handshake() {
    let dir = temp_dir("tcp-proxy-tls-filter");
    let ca = TestCa::new("test ca").unwrap();
    let (ca_file, _) = ca.ca.write(&dir, "ca").unwrap();
    let (cert, key) = ca
        .issue(&["proxy.test"], 1, false)
        .unwrap()
        .write(&dir, "proxy")
        .unwrap();
    let (plain, tls) = (free_port(), free_port());
    let _p = start(
        "tcp_proxy",
        &s(&[
            "--listen",
            &format!("127.0.0.1:{plain}"),
            "--tls-listen",
            &format!("127.0.0.1:{tls}"),
            "--cert",
            &cert,
            "--key",
            &key,
            "--deny",
            "127.0.0.2",
            "--allow",
            "127.0.0.0/8",
        ]),
        &dir.join("proxy.log"),
    );
    wait_listening(tls);
    let hello = client_hello();
    assert_eq!(hello[0], 0x16, "a handshake record");
    // Allowed: the server answers with its handshake (a TLS handshake
    // record, the ServerHello first).
    let answer = from_source("127.0.0.3", tls, &hello, false);
    assert_eq!(answer.first(), Some(&0x16), "{answer:?}");
    // Denied: closed, and not one byte of handshake.
    assert_eq!(from_source("127.0.0.2", tls, &hello, true), b"");
    // A whole TLS session from an allowed address.
    let rt = runtime();
    let back = rt.block_on(async {
        let mut io = tls_connect(tls, &ca_file).await;
        exchange(&mut io, b"over tls").await
    });
    assert_eq!(back, b"over tls");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--idle-timeout-secs`: a connection on which nothing moves is closed
/// after the timeout; one with traffic more often than that stays open
/// for well past it.
#[test]
fn tcp_proxy_idle_timeout() {
    let dir = temp_dir("tcp-proxy-idle");
    let port = free_port();
    let _p = start(
        "tcp_proxy",
        &s(&[
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--idle-timeout-secs",
            "1",
        ]),
        &dir.join("proxy.log"),
    );
    wait_listening(port);
    // Both start with one echoed exchange. Idle times are counted from
    // just before a connection's last write: the proxy's idle timer starts
    // after that, so a client that is slow to look at the clock afterwards
    // (a busy machine) cannot make the timeout look short.
    let open = || {
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let sent = std::time::Instant::now();
        c.write_all(b"hi").unwrap();
        let mut buf = [0u8; 2];
        c.set_read_timeout(Some(LIMIT)).unwrap();
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi");
        (c, sent)
    };
    let (mut idle, idle_since) = open();
    let (mut active, active_since) = open();
    // The active one: a byte every 300 ms (the wait being a read that
    // must time out: nothing arrives, the connection is not closed), for
    // 2.5 s, over twice the idle timeout.
    active
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 16];
    let mut last_sent = active_since;
    while active_since.elapsed() < Duration::from_millis(2500) {
        last_sent = std::time::Instant::now();
        active.write_all(b"x").unwrap();
        let mut got = [0u8; 1];
        active.set_read_timeout(Some(LIMIT)).unwrap();
        active.read_exact(&mut got).expect("the echo while active");
        active
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        match active.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("the active connection: {other:?}"),
        }
    }
    // The idle one was closed by now: EOF, after at least the timeout.
    idle.set_read_timeout(Some(LIMIT)).unwrap();
    assert_eq!(idle.read(&mut buf).unwrap(), 0, "closed");
    let idle_for = idle_since.elapsed();
    assert!(idle_for >= Duration::from_millis(900), "{idle_for:?}");
    // And the active one, left idle now, is closed in turn, the timeout
    // after its last byte (not before).
    active.set_read_timeout(Some(LIMIT)).unwrap();
    assert_eq!(active.read(&mut buf).unwrap(), 0, "closed once idle");
    let waited = last_sent.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
