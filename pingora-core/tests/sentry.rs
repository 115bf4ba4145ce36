//! Sentry reporting (feature `sentry`, the `sentry` crate) against a fake
//! DSN endpoint on loopback: a panic (with its backtrace) and a chosen
//! error each arrive as an envelope with the right path, auth header and
//! message.
#![cfg(feature = "sentry")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use pingora_test_support::{free_port, temp_dir, Proc};

/// One HTTP request from the listener: (request line, headers, body); the
/// answer is 200.
fn receive(l: &TcpListener) -> (String, Vec<String>, String) {
    let (s, _) = l.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let mut headers = Vec::new();
    let mut len = 0;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        let h = h.trim_end().to_string();
        if h.is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
        headers.push(h);
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).unwrap();
    let mut s = s;
    s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        .unwrap();
    (line, headers, String::from_utf8(body).unwrap())
}

#[test]
fn panics_and_errors_reach_the_dsn() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    pingora_core::sentry::init(&format!("http://testkey@127.0.0.1:{port}/42")).unwrap();
    assert!(pingora_core::sentry::enabled());

    let server = std::thread::spawn(move || (receive(&l), receive(&l)));
    let r = std::panic::catch_unwind(|| panic!("boom in a handler"));
    assert!(r.is_err());
    let e = pingora_error::Error::explain(pingora_error::ErrorType::ConnectRefused, "upstream x");
    pingora_core::sentry::capture_error(&e);
    let ((line, headers, body), (_, _, body2)) = server.join().unwrap();

    assert_eq!(line.trim_end(), "POST /api/42/envelope/ HTTP/1.1");
    let auth = headers
        .iter()
        .find(|h| h.to_ascii_lowercase().starts_with("x-sentry-auth:"))
        .expect("an auth header");
    assert!(
        auth.contains("sentry_version=7") && auth.contains("sentry_key=testkey"),
        "{auth}"
    );
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines.len(), 3, "{body}");
    assert!(
        lines[0].contains("\"event_id\":\"") && lines[1].contains("\"type\":\"event\""),
        "{body}"
    );
    assert!(
        lines[2].contains("\"level\":\"fatal\"") && lines[2].contains("boom in a handler"),
        "{body}"
    );
    // The backtrace names where it panicked.
    assert!(
        lines[2].contains("\"function\":\"sentry::panics_and_errors_reach_the_dsn")
            && lines[2].contains("tests/sentry.rs\",\"lineno\":"),
        "the panic's location: {body}"
    );
    // Level `error` is Sentry's default: sent as such, or left out.
    let level_ok = body2.contains("\"level\":\"error\"") || !body2.contains("\"level\":");
    assert!(
        level_ok
            && body2.contains("\"exception\":{\"values\":[{\"type\":\"ConnectRefused\"")
            && body2.contains("upstream x"),
        "{body2}"
    );
}

/// Set in the child process of [`sentry_dsn_in_the_conf_reports_a_panic`]:
/// the conf file, and the port to serve on.
const CHILD_CONF: &str = "PINGORA_SENTRY_TEST_CONF";
const CHILD_PORT: &str = "PINGORA_SENTRY_TEST_PORT";

/// An app that panics on every connection.
struct Panics;

#[async_trait::async_trait]
impl pingora_core::apps::ServerApp for Panics {
    async fn process_new(
        self: &std::sync::Arc<Self>,
        _io: pingora_core::protocols::Stream,
        _s: &pingora_core::server::ShutdownWatch,
    ) -> Option<pingora_core::protocols::Stream> {
        panic!("boom in a served connection");
    }
}

/// The server of [`sentry_dsn_in_the_conf_reports_a_panic`], in a process
/// of its own (the Sentry hook is per process): the conf's `sentry_dsn`
/// turns reporting on in `bootstrap`, nothing else does. Run on its own
/// (no child variables set), it does nothing.
#[test]
fn sentry_conf_child() {
    let (Ok(conf), Ok(port)) = (std::env::var(CHILD_CONF), std::env::var(CHILD_PORT)) else {
        return;
    };
    let opt = pingora_core::server::Opt {
        conf: Some(conf),
        ..Default::default()
    };
    let mut server = pingora_core::server::Server::new(opt).unwrap();
    assert!(!pingora_core::sentry::enabled());
    server.bootstrap();
    assert!(pingora_core::sentry::enabled());
    let mut service = pingora_core::services::listening::Service::new("panics".to_string(), Panics);
    service.add_tcp(&format!("127.0.0.1:{port}"));
    server.add_service(service);
    server.run_forever();
}

/// `sentry_dsn` in the conf, in a real server process (this test binary
/// again, running [`sentry_conf_child`]): a panic while serving a
/// connection reaches the fake DSN endpoint.
#[test]
fn sentry_dsn_in_the_conf_reports_a_panic() {
    let dsn = TcpListener::bind("127.0.0.1:0").unwrap();
    let dsn_port = dsn.local_addr().unwrap().port();
    let port = free_port();
    let dir = temp_dir("sentry-conf");
    let conf = dir.join("conf.yaml");
    std::fs::write(
        &conf,
        format!(
            "---\nversion: 1\nerror_log: {}\nsentry_dsn: http://confkey@127.0.0.1:{dsn_port}/7\n",
            dir.join("error.log").display()
        ),
    )
    .unwrap();
    let _child = Proc::spawn(
        std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "sentry_conf_child", "--nocapture"])
            .env(CHILD_CONF, &conf)
            .env(CHILD_PORT, port.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("child.stderr")).unwrap()),
    );
    // Connect (the server panics on it) once it listens: not with
    // `wait_listening`, whose probe would be a panic and a report too.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut c = loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(c) if c.local_addr().ok() != c.peer_addr().ok() => break c,
            _ => {
                assert!(std::time::Instant::now() < deadline, "the child's listener");
                std::thread::park_timeout(Duration::from_millis(10));
            }
        }
    };
    let _ = c.write_all(b"hello");
    // The server closes the connection it panicked on, and reports.
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    assert!(rest.is_empty());
    let (line, headers, body) = receive(&dsn);
    assert_eq!(line.trim_end(), "POST /api/7/envelope/ HTTP/1.1");
    assert!(
        headers
            .iter()
            .any(|h| h.to_ascii_lowercase().starts_with("x-sentry-auth:")
                && h.contains("sentry_key=confkey")),
        "{headers:?}"
    );
    assert!(
        body.contains("\"level\":\"fatal\"") && body.contains("boom in a served connection"),
        "{body}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
