//! Handing listening sockets to a new process over a Unix socket
//! (`SCM_RIGHTS`), for zero-downtime upgrades.
//!
//! The new process (started with `--upgrade`) listens on `upgrade_sock`
//! and waits. The old process, on SIGQUIT, connects and sends one message:
//! a 4-byte big-endian length, then the keys of its listeners separated by
//! `\n`, with their file descriptors attached in the same order. The new
//! process answers with one byte, `1`, once it holds them; only then does the
//! old process move on towards shutdown.

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use pingora_error::{Error, ErrorType, OrErr, Result};

/// At most this many sockets go in one hand-over (the kernel's
/// `SCM_MAX_FD` is 253).
pub const MAX_FDS: usize = 250;
const MAX_PAYLOAD: usize = 64 * 1024;

/// Send `fds` (key, fd) to the process waiting on `path`, retrying the
/// connection until `timeout`.
///
/// # Errors
///
/// `InternalError` for more than [`MAX_FDS`] sockets or 64 KiB of keys;
/// `ConnectError` if nothing listens on `path` by `timeout`; `SocketError`,
/// `WriteError` or `ReadError` (no answer within `timeout`) if the exchange
/// fails; `HandshakeError` if the new process refuses the sockets.
pub fn send_fds(path: &Path, fds: &[(String, RawFd)], timeout: Duration) -> Result<()> {
    if fds.len() > MAX_FDS {
        return Error::e_explain(
            ErrorType::InternalError,
            format!(
                "{} listeners, at most {MAX_FDS} can be handed over",
                fds.len()
            ),
        );
    }
    let keys = fds
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    if keys.len() > MAX_PAYLOAD {
        return Error::e_explain(
            ErrorType::InternalError,
            "listener keys too long to hand over",
        );
    }
    let raw: Vec<RawFd> = fds.iter().map(|(_, fd)| *fd).collect();

    let deadline = Instant::now() + timeout;
    let mut stream = loop {
        match UnixStream::connect(path) {
            Ok(s) => break s,
            Err(e) if Instant::now() >= deadline => {
                return Err(Error::because(
                    ErrorType::ConnectError,
                    format!(
                        "no new process is waiting on upgrade_sock {} (start it with --upgrade first)",
                        path.display()
                    ),
                    e,
                ));
            }
            // The new process may not be listening yet: back off briefly.
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    stream
        .set_write_timeout(Some(timeout))
        .and_then(|_| stream.set_read_timeout(Some(timeout)))
        .or_err(ErrorType::SocketError, "upgrade socket timeouts")?;

    let len = (keys.len() as u32).to_be_bytes();
    let iov = [IoSlice::new(&len), IoSlice::new(keys.as_bytes())];
    let cmsg = [ControlMessage::ScmRights(&raw)];
    let sent = sendmsg::<()>(stream.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
        .or_err(ErrorType::WriteError, "sending listening sockets")?;
    // The fds went with the first byte; write whatever the kernel did not take.
    let total = 4 + keys.len();
    if sent < total {
        let mut all = Vec::with_capacity(total);
        all.extend_from_slice(&len);
        all.extend_from_slice(keys.as_bytes());
        stream
            .write_all(&all[sent..])
            .or_err(ErrorType::WriteError, "sending listener keys")?;
    }
    let mut ack = [0u8; 1];
    stream.read_exact(&mut ack).or_err(
        ErrorType::ReadError,
        "waiting for the new process to confirm",
    )?;
    if ack[0] != 1 {
        return Error::e_explain(
            ErrorType::HandshakeError,
            "the new process refused the sockets",
        );
    }
    Ok(())
}

/// Listen on `path` and wait up to `timeout` for the old process to send
/// its listening sockets.
///
/// # Errors
///
/// `BindError` if `path` cannot be bound; `Timedout` if no old process
/// connects within `timeout`; `AcceptError`, `SocketError`, `ReadError`,
/// `ConnectionClosed` or `WriteError` if the exchange fails; `InvalidInput` if
/// the keys are too long, not UTF-8, or not one per socket.
pub fn receive_fds(path: &Path, timeout: Duration) -> Result<Vec<(String, RawFd)>> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).or_err_with(ErrorType::BindError, || {
        format!("bind upgrade_sock {}", path.display())
    })?;
    let result = accept_and_receive(&listener, timeout);
    let _ = std::fs::remove_file(path);
    result
}

fn accept_and_receive(listener: &UnixListener, timeout: Duration) -> Result<Vec<(String, RawFd)>> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;

    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Error::e_explain(
                ErrorType::Timedout,
                "no old process sent its sockets (send it SIGQUIT after starting this one)",
            );
        }
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        let mut pfd = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        match poll(
            &mut pfd,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(0) => continue,
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                return Err(Error::because(
                    ErrorType::AcceptError,
                    "poll upgrade_sock",
                    e,
                ))
            }
        }
    }
    let (mut stream, _) = listener
        .accept()
        .or_err(ErrorType::AcceptError, "accept on upgrade_sock")?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .or_err(ErrorType::SocketError, "upgrade socket timeout")?;

    let mut buf = vec![0u8; 4 + MAX_PAYLOAD];
    let mut cmsg_space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let (n, fds) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg_space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .or_err(ErrorType::ReadError, "receiving listening sockets")?;
        let mut fds = Vec::new();
        for c in msg
            .cmsgs()
            .or_err(ErrorType::ReadError, "control messages")?
        {
            if let ControlMessageOwned::ScmRights(f) = c {
                fds.extend(f);
            }
        }
        (msg.bytes, fds)
    };
    let mut got = n;
    while got < 4 {
        let r = stream
            .read(&mut buf[got..4])
            .or_err(ErrorType::ReadError, "reading keys")?;
        if r == 0 {
            return Error::e_explain(ErrorType::ConnectionClosed, "old process hung up");
        }
        got += r;
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > MAX_PAYLOAD {
        return Error::e_explain(ErrorType::InvalidInput, "listener keys too long");
    }
    if got < 4 + len {
        stream
            .read_exact(&mut buf[got..4 + len])
            .or_err(ErrorType::ReadError, "reading listener keys")?;
    }
    let keys = std::str::from_utf8(&buf[4..4 + len])
        .or_err(ErrorType::InvalidInput, "listener keys are not UTF-8")?;
    let keys: Vec<&str> = if keys.is_empty() {
        vec![]
    } else {
        keys.split('\n').collect()
    };
    if keys.len() != fds.len() {
        return Error::e_explain(
            ErrorType::InvalidInput,
            format!("{} keys but {} sockets received", keys.len(), fds.len()),
        );
    }
    stream
        .write_all(&[1])
        .or_err(ErrorType::WriteError, "confirming the hand-over")?;
    Ok(keys.into_iter().map(String::from).zip(fds).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn sockets_cross_a_unix_socket() {
        let path = std::env::temp_dir().join(format!("pingora-xfer-{}.sock", std::process::id()));
        let l1 = TcpListener::bind("127.0.0.1:0").unwrap();
        let l2 = TcpListener::bind("127.0.0.1:0").unwrap();
        let a1 = l1.local_addr().unwrap();
        let p = path.clone();
        let recv = std::thread::spawn(move || receive_fds(&p, Duration::from_secs(10)));
        let fds = vec![
            ("a".to_string(), l1.as_raw_fd()),
            ("b".to_string(), l2.as_raw_fd()),
        ];
        send_fds(&path, &fds, Duration::from_secs(10)).unwrap();
        let got = recv.join().unwrap().unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, "a");
        // The received fd is the same socket: it has the same address.
        use std::os::fd::FromRawFd;
        // SAFETY: a socket received for this test and owned by nothing else.
        let r1 = unsafe { TcpListener::from_raw_fd(got[0].1) };
        assert_eq!(r1.local_addr().unwrap(), a1);
        assert_ne!(got[0].1, l1.as_raw_fd());
        // SAFETY: as above.
        let _r2 = unsafe { TcpListener::from_raw_fd(got[1].1) };
    }

    #[test]
    fn send_without_receiver_times_out_with_hint() {
        let path = std::env::temp_dir().join("pingora-nobody-here.sock");
        let e = send_fds(&path, &[], Duration::from_millis(100)).unwrap_err();
        assert!(e.to_string().contains("--upgrade"), "{e}");
    }
}
