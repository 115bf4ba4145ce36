//! The HTTP/2 server as users meet it: the `http_server` example with h2c
//! (prior knowledge) driven by curl, nghttp and h2load.

use std::io::Write;
use std::process::{Command, Stdio};

mod common;
use common::*;

struct Srv {
    _proc: Proc,
    port: u16,
    dir: std::path::PathBuf,
}

impl Srv {
    fn start(tag: &str) -> Srv {
        let dir = temp_dir(tag);
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let proc = Proc::start_example(
            "http_server",
            &["--listen", &addr, "--h2c", "--max-body", "200000000"],
            &dir.join("server.log"),
        );
        wait_listening(port);
        Srv {
            _proc: proc,
            port,
            dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Peak resident memory of the server so far, in KiB.
    fn peak_rss_kib(&self) -> u64 {
        let pid = self._proc.pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

impl Drop for Srv {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e} (.ci/run installs it)"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn curl_over_h2c_and_http1_on_one_port() {
    let srv = Srv::start("h2-curl");
    let out =
        run(Command::new("curl").args(["-sS", "-i", "--http2-prior-knowledge", &srv.url("/")]));
    assert!(out.starts_with("HTTP/2 200"), "{out}");
    assert!(out.ends_with("hello from pingora\n"), "{out}");
    // HEAD: the header, no body.
    let out =
        run(Command::new("curl").args(["-sS", "-I", "--http2-prior-knowledge", &srv.url("/")]));
    assert!(out.contains("content-length: 19"), "{out}");
    // 404 and HTTP/1.1 on the same port.
    let out = run(Command::new("curl").args([
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{http_version}",
        "--http2-prior-knowledge",
        &srv.url("/nope"),
    ]));
    assert_eq!(out, "404 2");
    let out = run(Command::new("curl").args(["-sS", "-w", " %{http_version}", &srv.url("/")]));
    assert_eq!(out, "hello from pingora\n 1.1");
}

#[test]
fn nghttp_request_trailers_come_back_as_response_trailers() {
    let srv = Srv::start("h2-nghttp");
    let body = srv.dir.join("body.txt");
    std::fs::write(&body, "some request body").unwrap();
    let out = run(Command::new("nghttp").args([
        "-v",
        "-d",
        &body.to_string_lossy(),
        "--trailer",
        "x-checksum: 1234",
        &srv.url("/echo"),
    ]));
    assert!(out.contains("some request body"), "{out}");
    // After the response's data comes a HEADERS frame (the trailers) that
    // carries it; nghttp prints the fields before the frame line.
    let data = out.rfind("recv DATA frame").expect("response data");
    let tail = &out[data..];
    assert!(tail.contains(") x-checksum: 1234"), "{out}");
    assert!(tail.contains("recv HEADERS frame"), "{out}");
}

#[test]
fn h2load_many_streams_all_succeed() {
    let srv = Srv::start("h2-load");
    let out =
        run(Command::new("h2load").args(["-n", "2000", "-c", "4", "-m", "50", &srv.url("/")]));
    assert!(
        out.contains("2000 total, 2000 started, 2000 done, 2000 succeeded"),
        "{out}"
    );
}

/// 100 MB up and back down through one stream: flow control keeps the
/// server's memory bounded.
#[test]
fn hundred_megabytes_stream_with_bounded_memory() {
    let srv = Srv::start("h2-big");
    let before = srv.peak_rss_kib();
    let mut curl = Command::new("curl")
        .args([
            "-sS",
            "--http2-prior-knowledge",
            "--data-binary",
            "@-",
            "-o",
            "-",
            &srv.url("/echo"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run curl");
    let mut stdin = curl.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'z'; 1 << 20];
        for _ in 0..100 {
            stdin.write_all(&chunk).unwrap();
        }
    });
    let mut stdout = curl.stdout.take().unwrap();
    let mut total = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        use std::io::Read;
        let n = stdout.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        assert!(buf[..n].iter().all(|&b| b == b'z'));
        total += n as u64;
    }
    writer.join().unwrap();
    assert!(curl.wait().unwrap().success());
    assert_eq!(total, 100 << 20);
    let after = srv.peak_rss_kib();
    eprintln!("server peak RSS {before} KiB -> {after} KiB for 100 MiB echoed");
    assert!(
        after < before + 32 * 1024,
        "peak RSS grew by {} KiB",
        after - before
    );
}
