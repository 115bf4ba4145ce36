//! The server as users run it: the `server` example as a child process, on
//! loopback, driven by signals and real connections.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::*;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Connect, send `msg`, half-close, read everything back.
fn echo_once(port: u16, msg: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(msg)?;
    s.shutdown(Shutdown::Write)?;
    let mut back = Vec::new();
    s.read_to_end(&mut back)?;
    Ok(back)
}

fn write_conf(dir: &Path, extra: &str) -> PathBuf {
    let conf = dir.join("conf.yaml");
    let text = format!(
        "---\nversion: 1\nthreads: 2\nupgrade_sock: {}\npid_file: {}\n{extra}",
        dir.join("upgrade.sock").display(),
        dir.join("server.pid").display(),
    );
    std::fs::write(&conf, text).unwrap();
    conf
}

#[derive(Default)]
struct LoadStats {
    attempts: AtomicUsize,
    ok: AtomicUsize,
    failures: Mutex<Vec<String>>,
}

impl LoadStats {
    fn fail(&self, what: String) {
        self.failures.lock().unwrap().push(what);
    }
}

/// Many short connections, one after another, each checked.
fn short_connections(port: u16, id: usize, stop: Arc<AtomicBool>, stats: Arc<LoadStats>) {
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let msg = format!("short {id} {n} {}", "x".repeat(n % 200)).into_bytes();
        stats.attempts.fetch_add(1, Ordering::Relaxed);
        match echo_once(port, &msg) {
            Ok(back) if back == msg => {
                stats.ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok(back) => stats.fail(format!(
                "short {id}/{n}: echo mismatch, {} bytes",
                back.len()
            )),
            Err(e) => stats.fail(format!("short {id}/{n}: {e}")),
        }
        // Pace the load (at most ~1000 connections/s per thread), so the
        // test stays bounded and leaves ephemeral ports to spare.
        std::thread::park_timeout(Duration::from_millis(1));
    }
}

/// Long-lived connections: each does round trips for about a second, then
/// closes cleanly and a new one starts.
fn long_connections(port: u16, id: usize, stop: Arc<AtomicBool>, stats: Arc<LoadStats>) {
    let mut conn = 0usize;
    while !stop.load(Ordering::Relaxed) {
        conn += 1;
        stats.attempts.fetch_add(1, Ordering::Relaxed);
        let mut s = match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => s,
            Err(e) => {
                stats.fail(format!("long {id}/{conn}: connect: {e}"));
                continue;
            }
        };
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let until = Instant::now() + Duration::from_millis(1000);
        let mut round = 0usize;
        let mut good = true;
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            round += 1;
            let msg = format!("long {id} {conn} {round}\n").into_bytes();
            let mut back = vec![0u8; msg.len()];
            if let Err(e) = s.write_all(&msg).and_then(|_| s.read_exact(&mut back)) {
                stats.fail(format!("long {id}/{conn} round {round}: {e}"));
                good = false;
                break;
            }
            if back != msg {
                stats.fail(format!("long {id}/{conn} round {round}: mismatch"));
                good = false;
                break;
            }
        }
        if good {
            let _ = s.shutdown(Shutdown::Write);
            let mut rest = Vec::new();
            match s.read_to_end(&mut rest) {
                Ok(_) if rest.is_empty() => {
                    stats.ok.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => stats.fail(format!("long {id}/{conn}: unexpected trailing bytes")),
                Err(e) => stats.fail(format!("long {id}/{conn}: close: {e}")),
            }
        }
    }
}

#[test]
fn three_graceful_upgrades_under_load_lose_nothing() {
    let dir = temp_dir("upgrade");
    let grace = 1u64;
    let drain = 10u64;
    let conf = write_conf(
        &dir,
        &format!("grace_period_seconds: {grace}\ngraceful_shutdown_timeout_seconds: {drain}\n"),
    );
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let log = dir.join("server.log");
    let conf_s = conf.to_str().unwrap();
    let mut current = Proc::start(&["-c", conf_s, "--listen", &listen], &log);
    wait_listening(port);

    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(LoadStats::default());
    let mut load = Vec::new();
    for id in 0..3 {
        let (stop, stats) = (stop.clone(), stats.clone());
        load.push(std::thread::spawn(move || {
            short_connections(port, id, stop, stats)
        }));
    }
    for id in 0..2 {
        let (stop, stats) = (stop.clone(), stats.clone());
        load.push(std::thread::spawn(move || {
            long_connections(port, id, stop, stats)
        }));
    }
    // Let load reach the first process.
    let before = stats.ok.load(Ordering::Relaxed);
    poll_until(Duration::from_secs(10), "load to flow", || {
        stats.ok.load(Ordering::Relaxed) > before + 20
    });

    let upgrade_sock = dir.join("upgrade.sock");
    for round in 0..3 {
        let next = Proc::start(&["-c", conf_s, "--listen", &listen, "-u"], &log);
        // The new process is ready for the hand-over once its socket exists.
        poll_until(
            Duration::from_secs(20),
            "the new process's upgrade_sock",
            || upgrade_sock.exists(),
        );
        let sent_at = Instant::now();
        current.signal(Signal::SIGQUIT);
        let code = current.wait_exit(Duration::from_secs(grace + drain + 10));
        let took = sent_at.elapsed();
        assert_eq!(code, Some(0), "old process {round} exit code");
        assert!(
            took <= Duration::from_secs(grace + drain),
            "old process {round} took {took:?} to exit"
        );
        current = next;
        // Traffic keeps flowing through the new process.
        let before = stats.ok.load(Ordering::Relaxed);
        poll_until(Duration::from_secs(10), "load after the upgrade", || {
            stats.ok.load(Ordering::Relaxed) > before + 20
        });
    }

    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    current.signal(Signal::SIGTERM);
    assert_eq!(current.wait_exit(Duration::from_secs(drain + 5)), Some(0));

    let failures = stats.failures.lock().unwrap();
    let attempts = stats.attempts.load(Ordering::Relaxed);
    let ok = stats.ok.load(Ordering::Relaxed);
    assert!(
        failures.is_empty(),
        "{} of {attempts} connections failed: {:?}\nserver log:\n{}",
        failures.len(),
        &failures[..failures.len().min(10)],
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(ok, attempts);
    eprintln!("{ok} connections through 3 upgrades, none failed");
    assert!(ok > 100, "only {ok} connections made");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sigterm_lets_50_in_flight_requests_finish() {
    let dir = temp_dir("sigterm");
    // Single-threaded runtimes this time, to cover work_stealing: false.
    let conf = write_conf(
        &dir,
        "work_stealing: false\ngraceful_shutdown_timeout_seconds: 30\n",
    );
    let port = free_port();
    let log = dir.join("server.log");
    let mut server = Proc::start(
        &[
            "-c",
            conf.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ],
        &log,
    );
    wait_listening(port);

    // 50 requests, each half sent and its first half echoed: in flight.
    let mut conns = Vec::new();
    for i in 0..50 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let first = format!("request {i} first half;");
        s.write_all(first.as_bytes()).unwrap();
        let mut back = vec![0u8; first.len()];
        s.read_exact(&mut back).unwrap();
        assert_eq!(back, first.as_bytes());
        conns.push(s);
    }
    server.signal(Signal::SIGTERM);
    // New connections are refused once the listener closes.
    poll_until(Duration::from_secs(10), "the listener to close", || {
        TcpStream::connect(("127.0.0.1", port)).is_err()
    });
    // Every in-flight request completes.
    for (i, s) in conns.iter_mut().enumerate() {
        let second = format!("request {i} second half");
        s.write_all(second.as_bytes()).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut back = Vec::new();
        s.read_to_end(&mut back).unwrap();
        assert_eq!(back, second.as_bytes(), "request {i}");
    }
    assert_eq!(server.wait_exit(Duration::from_secs(20)), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

fn check_conf(dir: &Path, name: &str, text: Option<&str>) -> Output {
    let path = dir.join(name);
    if let Some(t) = text {
        std::fs::write(&path, t).unwrap();
    }
    Command::new(example("server"))
        .args(["-t", "-c", path.to_str().unwrap()])
        .output()
        .unwrap()
}

#[test]
fn test_flag_checks_the_conf() {
    let dir = temp_dir("conftest");
    let ok = check_conf(
        &dir,
        "ok.yaml",
        Some("version: 1\nthreads: 4\nmy_own_key: 1\n"),
    );
    assert_eq!(ok.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout).trim(),
        "configuration OK"
    );

    let cases = [
        (
            "bad_yaml.yaml",
            Some("version: 1\nthreads: 4\n  - : [\n"),
            "line",
        ),
        (
            "wrong_type.yaml",
            Some("version: 1\nthreads: four\n"),
            "key `threads` (line 2)",
        ),
        (
            "bad_value.yaml",
            Some("version: 1\n\nthreads: 0\n"),
            "key `threads` (line 3)",
        ),
        (
            "bad_version.yaml",
            Some("version: 2\n"),
            "key `version` (line 1)",
        ),
        ("missing.yaml", None, "cannot read conf file"),
    ];
    for (name, text, expect) in cases {
        let out = check_conf(&dir, name, text);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert!(err.contains(expect), "{name}: {err:?} lacks {expect:?}");
        assert!(out.stdout.is_empty(), "{name}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn daemon_mode_detaches_and_writes_pid_file() {
    let dir = temp_dir("daemon");
    let log = dir.join("error.log");
    // As root, also drop privileges to nobody:nogroup (the directory must
    // then be theirs to write the Unix socket into).
    let root = nix::unistd::geteuid().is_root();
    let mut extra = format!("error_log: {}\n", log.display());
    if root {
        extra.push_str("user: nobody\ngroup: nogroup\n");
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
        let nogroup = nix::unistd::Group::from_name("nogroup").unwrap().unwrap();
        nix::unistd::chown(&dir, Some(nobody.uid), Some(nogroup.gid)).unwrap();
    }
    let conf = write_conf(&dir, &extra);
    let pid_file = dir.join("server.pid");
    let uds = dir.join("echo.sock");
    let port = free_port();
    // The launching process returns at once; the daemon lives on.
    let status = Command::new(example("server"))
        .args(["-d", "-c", conf.to_str().unwrap()])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--uds", uds.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    let pid = wait_pid_file(&pid_file);
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    assert!(proc_dir.exists(), "daemon {pid} is not running");
    // Detached: a session of its own, not ours.
    let stat = std::fs::read_to_string(proc_dir.join("stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let session: i32 = after_name.split(' ').nth(3).unwrap().parse().unwrap();
    let ours = nix::unistd::getsid(None).unwrap().as_raw();
    assert_ne!(session, ours);
    if root {
        // The pid file is written as root, just before the daemon drops its
        // privileges: wait for the drop rather than race it.
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
        let effective_uid = || -> Option<u32> {
            let status = std::fs::read_to_string(proc_dir.join("status")).ok()?;
            let uid_line = status.lines().find(|l| l.starts_with("Uid:"))?;
            uid_line.split_whitespace().nth(2)?.parse().ok()
        };
        poll_until(
            Duration::from_secs(20),
            "the daemon to drop to nobody",
            || effective_uid() == Some(nobody.uid.as_raw()),
        );
    }

    wait_listening(port);
    assert_eq!(echo_once(port, b"daemon tcp").unwrap(), b"daemon tcp");
    // The Unix socket listener works too.
    let mut s = std::os::unix::net::UnixStream::connect(&uds).unwrap();
    s.write_all(b"daemon uds").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::new();
    s.read_to_end(&mut back).unwrap();
    assert_eq!(back, b"daemon uds");

    kill(Pid::from_raw(pid), Signal::SIGTERM).unwrap();
    poll_until(Duration::from_secs(20), "the daemon to exit", || {
        !proc_dir.exists()
            || std::fs::read_to_string(proc_dir.join("stat"))
                .is_ok_and(|s| s[s.rfind(')').unwrap() + 2..].starts_with('Z'))
    });
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("graceful shutdown complete"), "{logged}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// One line to the graceful_upgrade example, its answer back.
fn who_answers(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"hi\n").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut back = String::new();
    s.read_to_string(&mut back).unwrap();
    back
}

/// The graceful_upgrade example, step by step as its doc (and the
/// README) tell it: the old process answers; a new one started with
/// `--upgrade` waits for the sockets; SIGQUIT to the old one hands them
/// over, and the new one answers on the same port while the old one
/// drains and exits 0. A connection open across the hand-over is still
/// served by the old process.
#[test]
fn graceful_upgrade_example_hands_over() {
    let dir = temp_dir("upgrade-example");
    let conf = dir.join("upgrade.yaml");
    std::fs::write(
        &conf,
        format!(
            "version: 1\nupgrade_sock: {}\ngrace_period_seconds: 1\ngraceful_shutdown_timeout_seconds: 5\n",
            dir.join("upgrade.sock").display()
        ),
    )
    .unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let args = ["-c", conf.to_str().unwrap(), "--listen", &listen];
    let log = dir.join("upgrade.log");
    let mut old = Proc::start_example("graceful_upgrade", &args, &log);
    wait_listening(port);
    let old_pid = old.pid().as_raw();
    assert_eq!(who_answers(port), format!("pid {old_pid}: hi\n"));
    // A client connected before the hand-over, mid-conversation.
    let mut open = TcpStream::connect(("127.0.0.1", port)).unwrap();
    open.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    open.write_all(b"before\n").unwrap();
    let mut buf = [0u8; 64];
    let n = open.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], format!("pid {old_pid}: before\n").as_bytes());

    let mut upgraded = args.to_vec();
    upgraded.push("--upgrade");
    let new = Proc::start_example("graceful_upgrade", &upgraded, &log);
    let new_pid = new.pid().as_raw();
    // The new process is waiting on the upgrade socket; the old one sends.
    poll_until(Duration::from_secs(20), "the upgrade socket", || {
        dir.join("upgrade.sock").exists()
    });
    old.signal(Signal::SIGQUIT);
    poll_until(Duration::from_secs(20), "the new process to answer", || {
        who_answers(port) == format!("pid {new_pid}: hi\n")
    });
    // The old process still serves the connection it had, then exits 0.
    open.write_all(b"after\n").unwrap();
    let n = open.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], format!("pid {old_pid}: after\n").as_bytes());
    drop(open);
    assert_eq!(old.wait_exit(Duration::from_secs(20)), Some(0));
    assert_eq!(who_answers(port), format!("pid {new_pid}: hi\n"));
    drop(new);
}
