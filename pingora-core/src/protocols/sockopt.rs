//! Socket options that listeners and connectors both set: TCP keepalive
//! (with `TCP_USER_TIMEOUT`) and integer options by level.

use std::os::fd::RawFd;
use std::time::Duration;

/// TCP keepalive probes (on accepted connections, or on upstream
/// connections through `PeerOptions::tcp_keepalive`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpKeepalive {
    /// Idle time before the first probe.
    pub idle: Duration,
    /// Time between probes.
    pub interval: Duration,
    /// Unanswered probes before the connection is dropped.
    pub count: u32,
    /// How long sent data may stay unacknowledged before the connection is
    /// dropped (`TCP_USER_TIMEOUT`, Linux only); zero leaves the system's
    /// default.
    pub user_timeout: Duration,
}

impl TcpKeepalive {
    /// Set these on `socket`.
    pub(crate) fn apply(&self, socket: socket2::SockRef<'_>) -> std::io::Result<()> {
        let params = socket2::TcpKeepalive::new()
            .with_time(self.idle)
            .with_interval(self.interval)
            .with_retries(self.count);
        socket.set_tcp_keepalive(&params)?;
        // `TCP_USER_TIMEOUT` is Linux's; elsewhere the system's default.
        #[cfg(target_os = "linux")]
        if !self.user_timeout.is_zero() {
            socket.set_tcp_user_timeout(Some(self.user_timeout))?;
        }
        Ok(())
    }
}

/// Set an integer `IPPROTO_TCP` option (`TCP_FASTOPEN`,
/// `TCP_FASTOPEN_CONNECT`) on a socket.
pub(crate) fn set_tcp_int(fd: RawFd, name: libc::c_int, v: libc::c_int) -> std::io::Result<()> {
    set_sock_int(fd, libc::IPPROTO_TCP, name, v)
}

/// Set an integer socket option at `level` (`IPPROTO_TCP`, `IPPROTO_IP`, …).
pub(crate) fn set_sock_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    v: libc::c_int,
) -> std::io::Result<()> {
    // SAFETY: a valid socket fd, and a pointer to a c_int of the given size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &v as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
