//! Child processes (servers under test, peers) that a failing test does
//! not leave running.

use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::poll::{poll_until, POLL};

/// A child process, killed (SIGKILL to its pid) and reaped when dropped,
/// so that a test that fails before stopping it leaves nothing running.
///
/// The field is public for the tests that need the [`Child`] itself (its
/// pipes, its `id`).
#[derive(Debug)]
pub struct Proc(
    /// The child; `None` once it was waited for
    /// ([`wait_exit`](Proc::wait_exit), [`kill`](Proc::kill)).
    pub Option<Child>,
);

impl Proc {
    /// Spawn `cmd` as set up by the caller (arguments, environment,
    /// stdio); panics, naming the command, if it cannot start.
    ///
    /// # Panics
    ///
    /// If `cmd` cannot be started (the program missing, say).
    pub fn spawn(cmd: &mut Command) -> Proc {
        match cmd.spawn() {
            Ok(child) => Proc(Some(child)),
            Err(e) => panic!("start {cmd:?}: {e}"),
        }
    }

    /// Start `program` with `args` and environment variables set (`Some`)
    /// or removed (`None`): stdin and stdout empty, stderr appended to
    /// `log` (created if missing), where a failing test's message can
    /// point.
    ///
    /// # Panics
    ///
    /// If `log` cannot be opened for appending, or `program` cannot be started.
    pub fn start_logged(
        program: impl AsRef<OsStr>,
        args: &[&str],
        log: &Path,
        env: &[(&str, Option<&str>)],
    ) -> Proc {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for &(k, v) in env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        Proc::spawn(&mut cmd)
    }

    /// The process id. Panics once the process was waited for.
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child().id() as i32)
    }

    /// Send signal `s`. The process must not have been reaped yet (by
    /// [`wait_exit`](Self::wait_exit) or [`try_exit`](Self::try_exit)):
    /// its pid could be another process's by then.
    ///
    /// # Panics
    ///
    /// If the process was already waited for, or the signal cannot be sent.
    pub fn signal(&self, s: Signal) {
        let pid = self.pid();
        nix::sys::signal::kill(pid, s).unwrap_or_else(|e| panic!("{s} to process {pid}: {e}"));
    }

    /// Wait for the process to exit, `limit` at most (then panic); its exit
    /// code, `None` if a signal ended it.
    ///
    /// # Panics
    ///
    /// If the process has not exited within `limit`, was already waited for,
    /// or cannot be waited for.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_exit() {
                self.0 = None;
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "process did not exit within {limit:?}"
            );
            std::thread::sleep(POLL);
        }
    }

    /// The exit status if the process has exited (it is then reaped),
    /// `None` while it runs.
    ///
    /// # Panics
    ///
    /// If the process was already waited for, or cannot be waited for.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child_mut()
            .try_wait()
            .unwrap_or_else(|e| panic!("wait for a child process: {e}"))
    }

    /// Kill the process now (SIGKILL) and reap it, as dropping it does.
    /// Nothing happens if it was already waited for.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            // The std `Child` remembers an exit already reaped, and then
            // sends no signal: no other process can be hit by this.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn child(&self) -> &Child {
        self.0.as_ref().expect("the process was already waited for")
    }

    /// The [`Child`]; panics once the process was waited for.
    pub(crate) fn child_mut(&mut self) -> &mut Child {
        self.0.as_mut().expect("the process was already waited for")
    }
}

impl From<Child> for Proc {
    /// Take charge of a child spawned elsewhere.
    fn from(child: Child) -> Proc {
        Proc(Some(child))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Wait (20 s at most) until a daemon has written its pid file, a full
/// line; the pid in it.
///
/// # Panics
///
/// If no full line appears within 20 s, or the line is not a number.
pub fn wait_pid_file(path: &Path) -> i32 {
    let read = || std::fs::read_to_string(path).unwrap_or_default();
    poll_until(Duration::from_secs(20), "the pid file", || {
        read().ends_with('\n')
    });
    read()
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("the pid in {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exit_code_is_seen() {
        let mut p = Proc::spawn(Command::new("sh").args(["-c", "exit 3"]));
        assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(3));
        assert!(p.0.is_none());
    }

    #[test]
    fn a_signal_ends_it_and_a_drop_kills_it() {
        let mut p = Proc::spawn(Command::new("sleep").arg("60"));
        assert!(p.try_exit().is_none());
        p.signal(Signal::SIGTERM);
        assert_eq!(p.wait_exit(Duration::from_secs(10)), None);

        let p = Proc::spawn(Command::new("sleep").arg("60"));
        let proc_dir = format!("/proc/{}", p.pid());
        drop(p);
        // Killed and reaped: not even a zombie is left.
        assert!(!Path::new(&proc_dir).exists());
    }

    #[test]
    fn the_pid_file_is_read_once_whole() {
        let dir = crate::temp_dir("support-pid-file");
        let path = dir.join("x.pid");
        std::fs::write(&path, "4242\n").unwrap();
        assert_eq!(wait_pid_file(&path), 4242);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
