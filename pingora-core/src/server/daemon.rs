//! Daemon mode: detach from the terminal, write the pid file, drop
//! privileges (supplementary groups, group, user).

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;

use nix::unistd::{
    chdir, dup2, fork, geteuid, initgroups, setgid, setgroups, setsid, setuid, ForkResult, Group,
    User,
};
use pingora_error::{Error, ErrorType, OkOrErr, OrErr, Result};

use super::configuration::ServerConf;

/// Default of `daemon_ready_timeout_seconds`.
const DEFAULT_READY_TIMEOUT_SECONDS: u64 = 600;

/// The signal a daemon sends the process that started it once it is
/// ready (`daemon_wait_for_ready`).
const READY_SIGNAL: nix::sys::signal::Signal = nix::sys::signal::Signal::SIGUSR1;

/// The `kind` (`user` or `group`) named by the conf key of that name, if
/// set; an error naming the key when there is none of that name.
fn lookup<T>(
    name: Option<&str>,
    kind: &str,
    find: impl FnOnce(&str) -> nix::Result<Option<T>>,
) -> Result<Option<T>> {
    let Some(name) = name else {
        return Ok(None);
    };
    let found =
        find(name).or_err_with(ErrorType::ConfError, || format!("looking up {kind} {name}"))?;
    found
        .or_err_with(ErrorType::ConfError, || {
            format!("{kind}: no {kind} named {name:?}")
        })
        .map(Some)
}

/// Fork into the background. Must run before any thread is started: only
/// the calling thread survives a fork. The parent process exits 0 (with
/// `daemon_wait_for_ready`: once the daemon says it is ready, see
/// [`notify_ready`]). Returns the process to tell, if one waits.
pub(crate) fn daemonize(conf: &ServerConf) -> Result<Option<nix::unistd::Pid>> {
    // Look everything up and open files first, so that errors still reach
    // the terminal.
    let log = match &conf.error_log {
        // Syslog: stderr goes to /dev/null; the logs go to syslog.
        Some(target) if crate::syslog::SyslogTarget::is_syslog(target) => None,
        Some(path) => Some(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .or_err_with(ErrorType::FileOpenError, || format!("error_log {path}"))?,
        ),
        None => None,
    };
    let null = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .or_err(ErrorType::FileOpenError, "/dev/null")?;
    let group = lookup(conf.group.as_deref(), "group", Group::from_name)?;
    let user = lookup(conf.user.as_deref(), "user", User::from_name)?;

    // With `daemon_wait_for_ready`, the ready signal is blocked before the
    // fork, so that it cannot arrive before the parent waits for it.
    let starter = conf.daemon_wait_for_ready.then(nix::unistd::getpid);
    let mut ready = nix::sys::signal::SigSet::empty();
    ready.add(READY_SIGNAL);
    if starter.is_some() {
        ready
            .thread_block()
            .or_err(ErrorType::InternalError, "blocking SIGUSR1")?;
    }
    // SAFETY: called before the server starts any thread.
    match unsafe { fork() }.or_err(ErrorType::InternalError, "fork")? {
        ForkResult::Parent { .. } if starter.is_some() => wait_for_ready(conf, &ready),
        ForkResult::Parent { .. } => std::process::exit(0),
        ForkResult::Child => {}
    }
    if starter.is_some() {
        ready
            .thread_unblock()
            .or_err(ErrorType::InternalError, "unblocking SIGUSR1")?;
    }
    setsid().or_err(ErrorType::InternalError, "setsid")?;
    // Fork again so the daemon, not being a session leader, can never
    // acquire a controlling terminal.
    // SAFETY: still single-threaded.
    match unsafe { fork() }.or_err(ErrorType::InternalError, "fork")? {
        ForkResult::Parent { .. } => std::process::exit(0),
        ForkResult::Child => {}
    }
    if let Some(dir) = &conf.working_directory {
        chdir(dir.as_str())
            .or_err_with(ErrorType::ConfError, || format!("working_directory {dir}"))?;
    }
    std::fs::write(&conf.pid_file, format!("{}\n", std::process::id()))
        .or_err_with(ErrorType::FileWriteError, || {
            format!("pid_file {}", conf.pid_file)
        })?;
    // The group to switch to: `group`, else the user's own group.
    let gid = match (&group, &user) {
        (Some(g), _) => Some((g.gid, g.name.as_str())),
        (None, Some(u)) => Some((u.gid, u.name.as_str())),
        (None, None) => None,
    };
    if let Some((gid, name)) = gid {
        // The supplementary groups go first, while we may still change
        // them: a daemon that kept root's (or its starter's) would keep
        // their access after setgid/setuid.
        // With a `user`, its own groups from the group database (as
        // nginx does, by initgroups); with only a `group`, that one alone.
        if geteuid().is_root() {
            match &user {
                Some(u) => {
                    let uname = std::ffi::CString::new(u.name.as_str())
                        .or_err_with(ErrorType::ConfError, || format!("user {}", u.name))?;
                    initgroups(&uname, gid).or_err_with(ErrorType::InternalError, || {
                        format!("initgroups {} [{name}]", u.name)
                    })?;
                }
                None => setgroups(&[gid])
                    .or_err_with(ErrorType::InternalError, || format!("setgroups [{name}]"))?,
            }
        }
        setgid(gid).or_err_with(ErrorType::InternalError, || format!("setgid {name}"))?;
    }
    if let Some(u) = user {
        setuid(u.uid).or_err_with(ErrorType::InternalError, || format!("setuid {}", u.name))?;
    }
    let err_fd = log.as_ref().map_or(null.as_raw_fd(), |f| f.as_raw_fd());
    for (from, to) in [(null.as_raw_fd(), 0), (null.as_raw_fd(), 1), (err_fd, 2)] {
        dup2(from, to)
            .map_err(|e| Error::because(ErrorType::InternalError, "redirect stdio", e))?;
    }
    Ok(starter)
}

/// The starting process: wait for the daemon's ready signal, then exit 0;
/// exit 1 if it does not come in time.
fn wait_for_ready(conf: &ServerConf, ready: &nix::sys::signal::SigSet) -> ! {
    let secs = conf
        .daemon_ready_timeout_seconds
        .map_or(DEFAULT_READY_TIMEOUT_SECONDS, |s| s.get());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            eprintln!(
                "the daemon did not report ready within daemon_ready_timeout_seconds ({secs} s)"
            );
            std::process::exit(1);
        }
        let timeout = libc::timespec {
            tv_sec: left.as_secs() as libc::time_t,
            tv_nsec: left.subsec_nanos() as libc::c_long,
        };
        // SAFETY: waits on a valid signal set with a valid timeout; no
        // info is asked for.
        let got = unsafe { libc::sigtimedwait(ready.as_ref(), std::ptr::null_mut(), &timeout) };
        if got == READY_SIGNAL as libc::c_int {
            std::process::exit(0);
        }
        // Interrupted (EINTR) or timed out (EAGAIN): the loop decides.
    }
}

/// In the daemon: tell the process that started it (`daemonize`'s answer)
/// that the daemon is ready, so that it exits 0.
pub(crate) fn notify_ready(starter: nix::unistd::Pid) {
    if let Err(e) = nix::sys::signal::kill(starter, READY_SIGNAL) {
        tracing::warn!("telling the starting process the daemon is ready: {e}");
    }
}
