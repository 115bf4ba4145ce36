//! A service of the user's that takes its listening socket from `fds`
//! itself (Pingora's way) keeps it across a graceful upgrade: the new
//! process finds it in the table, and no connection meets a closed port.
use std::io::Read;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The example binary, beside this test's.
fn example() -> PathBuf {
    let mut p = std::env::current_exe().unwrap();
    p.pop();
    if p.ends_with("deps") {
        p.pop();
    }
    p.join("examples").join("fd_service")
}

/// Killed when dropped (a failing test leaves nothing running).
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn hello(addr: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

#[test]
fn a_service_that_takes_its_own_socket_keeps_it_across_an_upgrade() {
    let dir = std::env::temp_dir().join(format!("pingora-compat-fds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
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
        Proc(
            cmd.env("HELLO_ADDR", &addr)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("the fd_service example (built by cargo test)"),
        )
    };
    let mut old = start("old.log", false);
    until("the old process to answer", || hello(&addr).is_some());
    let old_pid = old.0.id();
    assert_eq!(hello(&addr).unwrap(), format!("hello from {old_pid}\n"));

    let new = start("new.log", true);
    until("the new process's upgrade socket", || sock.exists());
    let quit = Command::new("kill")
        .args(["-QUIT", &old_pid.to_string()])
        .status()
        .unwrap();
    assert!(quit.success());
    // Connections keep being answered through the hand-over.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = hello(&addr).expect("every connection is answered");
        if got == format!("hello from {}\n", new.0.id()) {
            break;
        }
        assert!(Instant::now() < deadline, "the new process never answered");
    }
    assert!(old.0.wait().unwrap().success());
    let log = std::fs::read_to_string(dir.join("new.log")).unwrap();
    assert!(
        log.contains(&format!("listening on {addr} (inherited)")),
        "{log}"
    );
    // Past the wait for unclaimed sockets, the one in use is still open.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        hello(&addr).unwrap(),
        format!("hello from {}\n", new.0.id())
    );
    drop(new);
    let _ = std::fs::remove_dir_all(&dir);
}
