//! Sentry reporting (feature `sentry`) against a fake DSN endpoint on
//! loopback: a panic and a chosen error each arrive as an envelope with the
//! right path, auth header and message.
#![cfg(feature = "sentry")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::time::Duration;

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
    assert!(
        lines[2].contains("sentry.rs:"),
        "the panic's location: {body}"
    );
    assert!(
        body2.contains("\"level\":\"error\"")
            && body2.contains("ConnectRefused")
            && body2.contains("upstream x"),
        "{body2}"
    );
}
