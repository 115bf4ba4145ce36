//! The server as users run it, in real processes. This test binary runs
//! itself again as the server: the `child` test, told by environment
//! variables which server to build and given the server's command line,
//! builds it with the public API and runs it until a signal stops it. The
//! other tests start such children and drive them over loopback and with
//! signals.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use clap::Parser;
use nix::sys::signal::{kill, Signal};
use nix::unistd::{Gid, Pid};
use pingora_core::apps::ServerApp;
use pingora_core::listeners::TcpSocketOptions;
use pingora_core::protocols::Stream;
use pingora_core::server::{Opt, Server, ShutdownWatch};
use pingora_core::services::listening::Service as ListeningService;
use pingora_core::services::{Service, ServiceContext};
use pingora_test_support::{
    connects, free_port, poll_until, temp_dir, wait_listening, wait_pid_file, Proc,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Which server the child builds (unset: not a child).
const ROLE: &str = "PINGORA_TEST_ROLE";
/// The child server's command line, one argument per line.
const ARGS: &str = "PINGORA_TEST_ARGS";
/// The child's TCP listen address.
const LISTEN: &str = "PINGORA_TEST_LISTEN";
/// A file the child appends events to.
const EVENTS: &str = "PINGORA_TEST_EVENTS";

// ---------------------------------------------------------------- child --

/// In a child process: be the server (never returns). In a normal test
/// run: nothing to do.
#[test]
fn child() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    run_child(&role);
}

/// Echoes what it reads until the client closes; panics on `panic`;
/// answers `whoami` with the connection's digest (peer and local
/// address). It ignores the shutdown signal, so a connection left open
/// holds up a graceful shutdown.
struct Echo;

#[async_trait]
impl ServerApp for Echo {
    async fn process_new(self: &Arc<Self>, mut io: Stream, _s: &ShutdownWatch) -> Option<Stream> {
        let mut buf = vec![0u8; 4096];
        loop {
            let n = io.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            if buf[..n].starts_with(b"panic") {
                panic!("the echo app was asked to panic");
            }
            if buf[..n].starts_with(b"whoami") {
                let d = io.socket_digest()?;
                let addr = |a: Option<&pingora_core::protocols::SocketAddr>| {
                    a.and_then(|a| a.as_inet()).map(|a| a.to_string())
                };
                let me = format!(
                    "{} {}\n",
                    addr(d.peer_addr.as_ref())?,
                    addr(d.local_addr.as_ref())?
                );
                io.write_all(me.as_bytes()).await.ok()?;
                continue;
            }
            io.write_all(&buf[..n]).await.ok()?;
        }
    }
}

fn record(events: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(events)
        .unwrap();
    f.write_all(format!("{line}\n").as_bytes()).unwrap();
}

/// A service that records when it starts, takes `ready_after` to get
/// ready, records that, and runs until shutdown.
struct Slow {
    name: &'static str,
    ready_after: Duration,
    events: PathBuf,
}

#[async_trait]
impl Service for Slow {
    async fn run(&mut self, ctx: ServiceContext) {
        record(&self.events, &format!("{} started", self.name));
        tokio::time::sleep(self.ready_after).await;
        record(&self.events, &format!("{} ready", self.name));
        ctx.ready.notify_ready();
        let mut shutdown = ctx.shutdown;
        let _ = shutdown.wait_for(|s| *s).await;
    }

    fn name(&self) -> &str {
        self.name
    }
}

/// The user's own keys, from the server's conf file.
#[derive(serde::Deserialize)]
struct MyConf {
    greeting: String,
    retries: u32,
}

fn run_child(role: &str) -> ! {
    let args = std::env::var(ARGS).unwrap_or_default();
    let argv = std::iter::once("server").chain(args.lines().filter(|a| !a.is_empty()));
    // `--help` prints the usage and exits here.
    let opt = Opt::parse_from(argv);
    let mut server = Server::new_or_exit(opt);
    if role == "user_conf" {
        match server.user_conf::<MyConf>() {
            Ok(m) => {
                println!(
                    "greeting={} retries={} threads={}",
                    m.greeting, m.retries, server.configuration.threads
                );
                std::process::exit(0)
            }
            Err(e) => {
                eprintln!("user conf: {e}");
                std::process::exit(1)
            }
        }
    }
    server.bootstrap();
    // In daemon mode this goes to error_log.
    eprintln!("child stderr after bootstrap, pid {}", std::process::id());
    let listen = std::env::var(LISTEN).unwrap();
    let mut echo = ListeningService::new("echo".to_string(), Echo);
    if role == "options" {
        // Three listeners with options (see `listener_options_are_applied`).
        let addrs: Vec<&str> = listen.split(',').collect();
        let opts = |v6only, backlog, fastopen| TcpSocketOptions {
            ipv6_only: Some(v6only),
            backlog,
            tcp_fastopen: fastopen,
            ..Default::default()
        };
        echo.add_tcp_with_settings(addrs[0], opts(true, Some(17), Some(9)));
        echo.add_tcp_with_settings(addrs[1], opts(false, None, None));
        echo.add_tcp_with_settings(addrs[2], opts(true, None, None));
    } else {
        echo.add_tcp(&listen);
    }
    if role == "maxconn" {
        echo.set_max_connections(Some(2));
    }
    let echo = server.add_service(echo);
    if role == "deps" {
        let events = PathBuf::from(std::env::var(EVENTS).unwrap());
        let slow = |name, ms| Slow {
            name,
            ready_after: Duration::from_millis(ms),
            events: events.clone(),
        };
        // Added in the reverse of the order they must start in.
        let third = server.add_service(slow("third", 10));
        let second = server.add_service(slow("second", 200));
        let first = server.add_service(slow("first", 400));
        server.add_dependency(&third, &second);
        server.add_dependency(&third, &first);
        server.add_dependency(&second, &first);
        // The echo service listens once all three are ready.
        server.add_dependency(&echo, &third);
    }
    server.run_forever()
}

// -------------------------------------------------------------- helpers --

/// This binary, ready to run the `child` test as server `role` with the
/// server command line `args`, listening on `listen`.
fn child_command(role: &str, args: &[&str], listen: &str) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["child", "--exact", "--nocapture", "--test-threads=1", "-q"])
        .env(ROLE, role)
        .env(ARGS, args.join("\n"))
        .env(LISTEN, listen)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null());
    c
}

/// Start a child server with stdout and stderr appended to `log`.
fn start(role: &str, args: &[&str], listen: &str, log: &Path, env: &[(&str, &Path)]) -> Proc {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut c = child_command(role, args, listen);
    c.stdout(out.try_clone().unwrap()).stderr(out);
    for (k, v) in env {
        c.env(k, v);
    }
    Proc::spawn(&mut c)
}

/// A conf file in `dir` with its own pid file and upgrade socket.
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

/// A connection in the middle of its work: one round trip done, open.
fn in_flight(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    round_trip(&mut s, b"first half;");
    s
}

fn round_trip(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).unwrap();
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).unwrap();
    assert_eq!(back, msg);
}

/// The server closed `s` (EOF or reset), rather than leaving it open.
fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 16];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

fn text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

// ---------------------------------------------------------------- tests --

#[test]
fn sigint_exits_at_once_even_during_a_drain() {
    let dir = temp_dir("sigint");
    // Long allowances (60 s of drain, and of grace period should an exit
    // ever wait for one): a fast exit cannot be either running out, and
    // one that waited cannot pass for fast, even with the generous waits
    // below.
    let conf = write_conf(
        &dir,
        "grace_period_seconds: 60\ngraceful_shutdown_timeout_seconds: 60\n",
    );
    let conf = conf.to_str().unwrap();
    let log = dir.join("server.log");

    // SIGINT while a connection is in flight.
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut p = start("echo", &["-c", conf], &listen, &log, &[]);
    wait_listening(port);
    let mut c = in_flight(port);
    p.signal(Signal::SIGINT);
    // At once: well within the 60 s allowances (a busy machine may take
    // seconds to tear a process down).
    assert_eq!(p.wait_exit(Duration::from_secs(20)), Some(0));
    assert!(closed_by_server(&mut c));
    assert!(
        text(&log).contains("SIGINT: fast shutdown"),
        "{}",
        text(&log)
    );

    // SIGINT cuts a graceful shutdown that is waiting for a connection.
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut p = start("echo", &["-c", conf], &listen, &log, &[]);
    wait_listening(port);
    let mut c = in_flight(port);
    p.signal(Signal::SIGTERM);
    // Draining: the listener is closed, the connection still served.
    poll_until(Duration::from_secs(10), "the listener to close", || {
        !connects(port)
    });
    round_trip(&mut c, b"still served;");
    p.signal(Signal::SIGINT);
    assert_eq!(p.wait_exit(Duration::from_secs(20)), Some(0));
    assert!(closed_by_server(&mut c));
    assert!(
        text(&log).contains("SIGINT during the graceful shutdown"),
        "{}",
        text(&log)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `max_connections`: past the limit a new connection is closed at once
/// (not left hanging in the backlog), the refusal is logged, and once a
/// connection ends new ones are taken again.
#[test]
fn max_connections_refuses_politely_past_the_limit() {
    let dir = temp_dir("maxconn");
    let log = dir.join("server.log");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut p = start("maxconn", &[], &listen, &log, &[]);
    wait_listening(port);
    let first = in_flight(port);
    let mut second = in_flight(port);
    let mut third = TcpStream::connect(("127.0.0.1", port)).unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert!(
        closed_by_server(&mut third),
        "the third connection is refused"
    );
    poll_until(Duration::from_secs(10), "the refusal logged", || {
        text(&log).contains("refusing new ones")
    });
    drop(first);
    poll_until(Duration::from_secs(10), "a new connection served", || {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut b = [0u8; 1];
        s.write_all(b"x").is_ok() && matches!(s.read(&mut b), Ok(1))
    });
    round_trip(&mut second, b"still served;");
    drop(second);
    p.signal(Signal::SIGTERM);
    assert_eq!(p.wait_exit(Duration::from_secs(15)), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn graceful_shutdown_timeout_cuts_stuck_connections() {
    let dir = temp_dir("drain-limit");
    let conf = write_conf(&dir, "graceful_shutdown_timeout_seconds: 1\n");
    let log = dir.join("server.log");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut p = start("echo", &["-c", conf.to_str().unwrap()], &listen, &log, &[]);
    wait_listening(port);
    // A client that never finishes its request.
    let mut stuck = in_flight(port);
    let sent = Instant::now();
    p.signal(Signal::SIGTERM);
    // It is still served during the drain...
    round_trip(&mut stuck, b"more, never the end;");
    // ...until the limit: then the process exits 0 all the same.
    assert_eq!(p.wait_exit(Duration::from_secs(30)), Some(0));
    let took = sent.elapsed();
    assert!(
        took >= Duration::from_secs(1),
        "exited after {took:?}, before the 1 s allowance"
    );
    // Without the limit the drain would wait 300 s (the default): a bound
    // far below that, with room for a busy machine.
    assert!(
        took < Duration::from_secs(20),
        "exited after {took:?}: the 1 s limit was not applied"
    );
    assert!(closed_by_server(&mut stuck));
    let logged = text(&log);
    assert!(logged.contains("exiting anyway"), "{logged}");
    assert!(!logged.contains("graceful shutdown complete"), "{logged}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_service_starts_only_once_its_dependencies_are_ready() {
    let dir = temp_dir("deps");
    let conf = write_conf(&dir, "");
    let log = dir.join("server.log");
    let events = dir.join("events");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut p = start(
        "deps",
        &["-c", conf.to_str().unwrap()],
        &listen,
        &log,
        &[(EVENTS, &events)],
    );
    // The echo socket is bound at start-up, but the echo service depends
    // on the last of the chain: a client connected early is answered only
    // once all three are ready.
    wait_listening(port);
    let mut c = in_flight(port);
    let got: Vec<String> = text(&events).lines().map(String::from).collect();
    assert_eq!(
        got,
        [
            "first started",
            "first ready",
            "second started",
            "second ready",
            "third started",
            "third ready"
        ],
        "server log:\n{}",
        text(&log)
    );
    c.shutdown(Shutdown::Write).unwrap();
    assert!(closed_by_server(&mut c));
    p.signal(Signal::SIGTERM);
    assert_eq!(p.wait_exit(Duration::from_secs(20)), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn help_lists_the_flags() {
    let out = child_command("help", &["--help"], "127.0.0.1:1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "-c, --conf <FILE>",
        "-d, --daemon",
        "-u, --upgrade",
        "-t, --test",
        "-h, --help",
    ] {
        assert!(help.contains(flag), "{flag:?} not in:\n{help}");
    }
}

#[test]
fn user_keys_are_read_from_the_same_conf_file() {
    let dir = temp_dir("user-conf");
    let run = |conf: &str| -> Output {
        let path = dir.join("conf.yaml");
        std::fs::write(&path, conf).unwrap();
        child_command("user_conf", &["-c", path.to_str().unwrap()], "127.0.0.1:1")
            .output()
            .unwrap()
    };
    let out = run("version: 1\nthreads: 3\ngreeting: hello\nretries: 4\n");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("greeting=hello retries=4 threads=3"),
        "{stdout}"
    );
    // A bad value of the user's own key names it and its line.
    let out = run("version: 1\ngreeting: hello\n\nretries: many\n");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("key `retries` (line 4)"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Daemon mode as root: drop to nobody:nogroup with no other group, run in
/// `working_directory`, send stderr (a panic message) to `error_log`.
#[test]
fn daemon_drops_groups_changes_directory_and_logs_stderr() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("not root: the privilege drop cannot be tested");
        return;
    }
    let dir = temp_dir("daemon");
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let error_log = dir.join("error.log");
    let conf = write_conf(
        &dir,
        &format!(
            "error_log: {}\nworking_directory: {}\nuser: nobody\ngroup: nogroup\n",
            error_log.display(),
            work.display()
        ),
    );
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let nogroup = nix::unistd::Group::from_name("nogroup").unwrap().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut c = child_command("daemon", &["-d", "-c", conf.to_str().unwrap()], &listen);
    // Start it with supplementary groups, which the daemon must shed.
    // SAFETY: setgroups is async-signal-safe and touches no memory of ours
    // beyond the slice.
    unsafe {
        c.pre_exec(|| {
            nix::unistd::setgroups(&[Gid::from_raw(4242), Gid::from_raw(0)])
                .map_err(std::io::Error::from)
        });
    }
    let status = c
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let pid = wait_pid_file(&dir.join("server.pid"));
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let status_line = |key: &str| -> Option<String> {
        let status = std::fs::read_to_string(proc_dir.join("status")).ok()?;
        let line = status.lines().find(|l| l.starts_with(key))?;
        Some(
            line[key.len()..]
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
        )
    };
    // The pid file is written just before the drop: wait for the drop.
    let uid = nobody.uid.as_raw();
    poll_until(
        Duration::from_secs(20),
        "the daemon to drop to nobody",
        || status_line("Uid:") == Some(format!("{uid} {uid} {uid} {uid}")),
    );
    let gid = nogroup.gid.as_raw();
    assert_eq!(
        status_line("Gid:"),
        Some(format!("{gid} {gid} {gid} {gid}"))
    );
    assert_eq!(status_line("Groups:"), Some(gid.to_string()));
    assert_eq!(
        std::fs::read_link(proc_dir.join("cwd")).unwrap(),
        work.canonicalize().unwrap()
    );

    wait_listening(port);
    // A panic in one connection: its message reaches error_log through
    // stderr, and the server keeps serving.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"panic").unwrap();
    assert!(closed_by_server(&mut s));
    let mut s = in_flight(port);
    s.shutdown(Shutdown::Write).unwrap();
    assert!(closed_by_server(&mut s));
    poll_until(Duration::from_secs(10), "the panic in error_log", || {
        text(&error_log).contains("the echo app was asked to panic")
    });
    let logged = text(&error_log);
    // Written to stderr after daemonizing: by us, and by the panic hook
    // (the tracing line says "connection task panicked", not "panicked at").
    assert!(
        logged.contains(&format!("child stderr after bootstrap, pid {pid}")),
        "{logged}"
    );
    assert!(logged.contains("panicked at"), "{logged}");

    kill(Pid::from_raw(pid), Signal::SIGTERM).unwrap();
    poll_until(Duration::from_secs(20), "the daemon to exit", || {
        !proc_dir.exists()
            || std::fs::read_to_string(proc_dir.join("stat"))
                .is_ok_and(|s| s[s.rfind(')').unwrap() + 2..].starts_with('Z'))
    });
    assert!(
        text(&error_log).contains("graceful shutdown complete"),
        "{}",
        text(&error_log)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The listening socket on local port `port`, as
/// `ss -ltnie` reports it (one line).
fn ss_listener(port: u16) -> String {
    let out = Command::new("ss")
        .args(["-ltnieH", &format!("sport = :{port}")])
        .output()
        .expect("ss (iproute2) is installed");
    let text = String::from_utf8_lossy(&out.stdout).replace('\n', " ");
    assert!(text.starts_with("LISTEN"), "ss for port {port}: {text:?}");
    text
}

/// The field of an `ss` line after `name:` (`ino:123` -> `123`).
fn ss_field<'a>(line: &'a str, name: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(name).and_then(|v| v.strip_prefix(':')))
        .unwrap_or_else(|| panic!("no {name} in {line:?}"))
}

/// A duplicate, in this process, of the socket with inode `inode` that
/// process `pid` holds (pidfd_getfd: the test is root, or the child's
/// ancestor).
fn socket_of(pid: Pid, inode: &str) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    let want = format!("socket:[{inode}]");
    let target: i32 = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_str() == Some(&want)))
        .and_then(|e| e.file_name().to_str()?.parse().ok())
        .unwrap_or_else(|| panic!("process {pid} holds no {want}"));
    // SAFETY: plain system calls; each returns a new fd or -1.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) as i32;
        assert!(
            pidfd >= 0,
            "pidfd_open: {}",
            std::io::Error::last_os_error()
        );
        let fd = libc::syscall(libc::SYS_pidfd_getfd, pidfd, target, 0) as i32;
        let err = std::io::Error::last_os_error();
        libc::close(pidfd);
        assert!(fd >= 0, "pidfd_getfd: {err}");
        std::os::fd::OwnedFd::from_raw_fd(fd)
    }
}

fn getsockopt_int(fd: &std::os::fd::OwnedFd, level: i32, name: i32) -> i32 {
    use std::os::fd::AsRawFd;
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a valid socket and a c_int-sized buffer.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            &mut v as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    };
    assert_eq!(r, 0, "getsockopt: {}", std::io::Error::last_os_error());
    v
}

/// `whoami` over `s`: the peer and local address the server's digest has.
fn whoami(s: &mut TcpStream) -> (String, String) {
    s.write_all(b"whoami").unwrap();
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while s.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
        line.push(b[0]);
    }
    let line = String::from_utf8(line).unwrap();
    let (peer, local) = line.split_once(' ').unwrap();
    (peer.to_string(), local.to_string())
}

/// Per-listener options, read back from the running server's sockets:
/// backlog and IPV6_V6ONLY as the kernel reports them (`ss`), TCP_FASTOPEN
/// and IPV6_V6ONLY with getsockopt on the server's own socket; and real
/// connections over IPv6, over a dual-stack listener from IPv4, and refused
/// from IPv4 by a v6-only one.
#[test]
fn listener_options_are_applied() {
    let dir = temp_dir("listener-options");
    let conf = write_conf(&dir, "");
    let log = dir.join("server.log");
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    let listen = format!("[::1]:{p1},[::]:{p2},[::]:{p3}");
    let mut p = start(
        "options",
        &["-c", conf.to_str().unwrap()],
        &listen,
        &log,
        &[],
    );
    let connect6 = |port| TcpStream::connect(("::1", port));
    poll_until(Duration::from_secs(30), "the server to listen", || {
        connect6(p1).is_ok() && connect6(p2).is_ok() && connect6(p3).is_ok()
    });

    // [::1], v6 only, backlog 17, TCP_FASTOPEN 9. (Linux makes a socket
    // bound to a specific IPv6 address v6-only whatever the option says:
    // the [::] listeners below are the ones that show the option works.)
    let l1 = ss_listener(p1);
    assert_eq!(l1.split_whitespace().nth(2), Some("17"), "backlog: {l1}");
    assert_eq!(ss_field(&l1, "v6only"), "1", "{l1}");
    let fd = socket_of(p.pid(), ss_field(&l1, "ino"));
    assert_eq!(
        getsockopt_int(&fd, libc::IPPROTO_TCP, libc::TCP_FASTOPEN),
        9
    );
    assert_eq!(
        getsockopt_int(&fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY),
        1
    );
    let mut s = connect6(p1).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    round_trip(&mut s, b"over IPv6");
    let (peer, local) = whoami(&mut s);
    assert_eq!(peer, s.local_addr().unwrap().to_string());
    assert_eq!(local, format!("[::1]:{p1}"));
    drop(s);

    // [::] dual-stack: an IPv4 client is served, seen as IPv4-mapped.
    let l2 = ss_listener(p2);
    assert_eq!(ss_field(&l2, "v6only"), "0", "{l2}");
    let fd = socket_of(p.pid(), ss_field(&l2, "ino"));
    assert_eq!(
        getsockopt_int(&fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY),
        0
    );
    // Without a backlog option: the default, capped by somaxconn.
    let somaxconn: u32 = text(Path::new("/proc/sys/net/core/somaxconn"))
        .trim()
        .parse()
        .unwrap();
    let default = somaxconn
        .min(pingora_core::listeners::DEFAULT_BACKLOG)
        .to_string();
    assert_eq!(l2.split_whitespace().nth(2), Some(default.as_str()), "{l2}");
    let mut s = TcpStream::connect(("127.0.0.1", p2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    round_trip(&mut s, b"IPv4 to a dual-stack listener");
    let (peer, _) = whoami(&mut s);
    assert_eq!(
        peer,
        format!("[::ffff:127.0.0.1]:{}", s.local_addr().unwrap().port())
    );
    drop(s);

    // [::] v6 only: IPv4 is refused, IPv6 served.
    let l3 = ss_listener(p3);
    assert_eq!(ss_field(&l3, "v6only"), "1", "{l3}");
    let fd = socket_of(p.pid(), ss_field(&l3, "ino"));
    assert_eq!(
        getsockopt_int(&fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY),
        1
    );
    assert!(TcpStream::connect(("127.0.0.1", p3)).is_err());
    let mut s = connect6(p3).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    round_trip(&mut s, b"IPv6 to a v6-only wildcard");
    drop(s);

    // Nothing in flight: the graceful shutdown is quick.
    p.signal(Signal::SIGTERM);
    assert_eq!(p.wait_exit(Duration::from_secs(20)), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}
