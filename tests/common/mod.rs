//! Helpers shared by the integration tests: example binaries as child
//! processes, free ports, temp dirs, polling with a deadline.
// Test helpers: `pub` for the test files, which are crates of their own.
#![allow(dead_code, unreachable_pub)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The example binary, built by `cargo test` beside this test.
pub fn example(name: &str) -> PathBuf {
    let mut p = std::env::current_exe().unwrap();
    p.pop();
    if p.ends_with("deps") {
        p.pop();
    }
    p.join("examples").join(name)
}

/// A fresh directory for one test's files.
pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pingora-it-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A port that was free a moment ago (the OS picks it), and never one
/// already handed to another test of this process: our listeners use
/// SO_REUSEPORT, so two tests' servers given the same port would both bind
/// it and share its connections.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A child process that is killed if the test fails before stopping it.
pub struct Proc(pub Option<Child>);

impl Proc {
    /// Start the `server` example.
    pub fn start(args: &[&str], log: &Path) -> Proc {
        Proc::start_example("server", args, log)
    }

    /// Start example `name` with `args`, its stderr appended to `log`.
    pub fn start_example(name: &str, args: &[&str], log: &Path) -> Proc {
        Proc::start_example_env(name, args, log, &[])
    }

    /// As [`start_example`](Self::start_example), with environment
    /// variables set (`Some`) or removed (`None`).
    pub fn start_example_env(
        name: &str,
        args: &[&str],
        log: &Path,
        env: &[(&str, Option<&str>)],
    ) -> Proc {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let mut cmd = Command::new(example(name));
        for (k, v) in env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        let child = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start the {name} example: {e}"));
        Proc(Some(child))
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.0.as_ref().unwrap().id() as i32)
    }

    pub fn signal(&self, s: Signal) {
        kill(self.pid(), s).unwrap();
    }

    /// Wait for exit, up to `limit`; returns the exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        let child = self.0.as_mut().unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.0 = None;
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "process did not exit within {limit:?}"
            );
            std::thread::yield_now();
            std::thread::park_timeout(Duration::from_millis(5));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Poll until `f` is true, failing after `limit`.
pub fn poll_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::park_timeout(Duration::from_millis(5));
    }
}

/// Wait until something listens on `port`. A connect to a port in the
/// ephemeral range where nothing listens can "succeed" by connecting the
/// socket to itself (TCP simultaneous open, when the OS picks the same
/// port as the source): that is not a listener, so it does not count.
pub fn wait_listening(port: u16) {
    poll_until(Duration::from_secs(20), "the server to listen", || {
        TcpStream::connect(("127.0.0.1", port))
            .is_ok_and(|s| s.local_addr().ok() != s.peer_addr().ok())
    });
}

/// Wait until a daemon has written its pid file (a full line), and return
/// the pid in it.
pub fn wait_pid_file(path: &Path) -> i32 {
    poll_until(Duration::from_secs(20), "the pid file", || {
        std::fs::read_to_string(path).is_ok_and(|s| s.ends_with('\n'))
    });
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// `curl -sS` (2 minutes at most) with `args`; its stdout as bytes. Fails
/// the test if curl fails.
pub fn curl_raw(args: &[&str]) -> Vec<u8> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "120"])
        .args(args)
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Debian's python, where python3-grpcio, -brotli and -zstandard are.
pub const PYTHON: &str = "/usr/bin/python3";

/// The real gRPC peer script (grpcio) shared with pingora-proxy's tests.
pub fn grpc_script() -> String {
    format!(
        "{}/pingora-proxy/tests/grpc_peer.py",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// `python3 grpc_peer.py CMD`, which prints its port: the server process
/// and `127.0.0.1:PORT`.
pub fn grpc_peer_server() -> (Proc, String) {
    use std::io::BufRead;
    let mut server = Command::new(PYTHON)
        .args([&grpc_script(), "server"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 with grpcio");
    let mut line = String::new();
    std::io::BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (Proc(Some(server)), format!("127.0.0.1:{}", line.trim()))
}

/// `python3 grpc_peer.py MODE TARGET`: the real gRPC client's checks
/// (`client`: every call type) pass against `target`.
pub fn grpc_peer_client(mode: &str, target: &str) {
    let out = Command::new(PYTHON)
        .args([&grpc_script(), mode, target])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
