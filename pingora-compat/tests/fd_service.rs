//! A service of the user's that takes its listening socket from `fds`
//! itself (Pingora's way) keeps it across a graceful upgrade: the new
//! process finds it in the table, and no connection meets a closed port.
use std::io::Read;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pingora_test_support::{free_port, poll_until, temp_dir, Proc, Signal};

/// How long each step may take.
const LIMIT: Duration = Duration::from_secs(20);

/// The example binary, beside this test's.
fn example() -> PathBuf {
    let mut p = std::env::current_exe().unwrap();
    p.pop();
    if p.ends_with("deps") {
        p.pop();
    }
    p.join("examples").join("fd_service")
}

fn hello(addr: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

#[test]
fn a_service_that_takes_its_own_socket_keeps_it_across_an_upgrade() {
    let dir = temp_dir("compat-fds");
    let addr = format!("127.0.0.1:{}", free_port());
    let conf = dir.join("conf.yaml");
    let sock = dir.join("upgrade.sock");
    std::fs::write(
        &conf,
        format!(
            "version: 1\nupgrade_sock: {}\ngrace_period_seconds: 1\ngraceful_shutdown_timeout_seconds: 2\n",
            sock.display()
        ),
    )
    .unwrap();
    let start = |log: &str, upgrade: bool| {
        let mut cmd = Command::new(example());
        cmd.args(["-c", conf.to_str().unwrap()]);
        if upgrade {
            cmd.arg("-u");
        }
        let log = std::fs::File::create(dir.join(log)).unwrap();
        Proc::spawn(
            cmd.env("HELLO_ADDR", &addr)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log),
        )
    };
    let mut old = start("old.log", false);
    poll_until(LIMIT, "the old process to answer", || {
        hello(&addr).is_some()
    });
    assert_eq!(hello(&addr).unwrap(), format!("hello from {}\n", old.pid()));

    let new = start("new.log", true);
    let from_new = format!("hello from {}\n", new.pid());
    poll_until(LIMIT, "the new process's upgrade socket", || sock.exists());
    old.signal(Signal::SIGQUIT);
    // Connections keep being answered through the hand-over: asked without
    // a pause, so that a moment with the port closed would be met.
    let deadline = Instant::now() + LIMIT;
    loop {
        let got = hello(&addr).expect("every connection is answered");
        if got == from_new {
            break;
        }
        assert!(Instant::now() < deadline, "the new process never answered");
    }
    assert_eq!(old.wait_exit(LIMIT), Some(0));
    let log = std::fs::read_to_string(dir.join("new.log")).unwrap();
    assert!(
        log.contains(&format!("listening on {addr} (inherited)")),
        "{log}"
    );
    // Past the wait for unclaimed sockets, the one in use is still open.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(hello(&addr).unwrap(), from_new);
    drop(new);
    let _ = std::fs::remove_dir_all(&dir);
}
