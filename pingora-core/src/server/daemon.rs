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

/// Fork into the background. Must run before any thread is started: only
/// the calling thread survives a fork. The parent process exits 0.
pub fn daemonize(conf: &ServerConf) -> Result<()> {
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
    let group = match &conf.group {
        Some(g) => Some(
            Group::from_name(g)
                .or_err_with(ErrorType::ConfError, || format!("looking up group {g}"))?
                .or_err_with(ErrorType::ConfError, || {
                    format!("group: no group named {g:?}")
                })?,
        ),
        None => None,
    };
    let user = match &conf.user {
        Some(u) => Some(
            User::from_name(u)
                .or_err_with(ErrorType::ConfError, || format!("looking up user {u}"))?
                .or_err_with(ErrorType::ConfError, || {
                    format!("user: no user named {u:?}")
                })?,
        ),
        None => None,
    };

    // SAFETY: called before the server starts any thread.
    match unsafe { fork() }.or_err(ErrorType::InternalError, "fork")? {
        ForkResult::Parent { .. } => std::process::exit(0),
        ForkResult::Child => {}
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
    Ok(())
}
