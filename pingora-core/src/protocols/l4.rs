//! Layer-4 streams: accepted TCP and Unix-domain connections, with a digest.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use super::proxy_protocol::ProxyHeader;

/// Pingora's path to [`SocketAddr`]: `protocols::l4::socket::SocketAddr`.
pub mod socket {
    pub use super::SocketAddr;
}

/// Pingora's path to the L4 stream: `protocols::l4::stream::Stream` is
/// [`L4Stream`].
pub mod stream {
    pub use super::L4Stream as Stream;
}

/// Virtual sockets (as Pingora's): any async byte stream of the user's
/// (an in-process service, a tunnel) made into an [`L4Stream`], so that a
/// custom L4 connector (`PeerOptions::custom_l4`) can hand it to the HTTP
/// layers in place of a kernel socket.
pub mod virt {
    use tokio::io::{AsyncRead, AsyncWrite};

    use crate::protocols::sockopt::TcpKeepalive;

    /// A socket option asked of a virtual socket.
    #[non_exhaustive]
    #[derive(Debug, Clone)]
    pub enum VirtualSockOpt {
        /// Disable Nagle's algorithm.
        NoDelay,
        /// TCP keepalive probes.
        KeepAlive(TcpKeepalive),
    }

    /// A stream that stands in for a socket.
    pub trait VirtualSocket:
        AsyncRead + AsyncWrite + Unpin + Send + Sync + std::fmt::Debug
    {
        /// Apply a socket option (or ignore it, if it means nothing here).
        ///
        /// # Errors
        ///
        /// An `io::Error` if the option applies here but cannot be set; one
        /// that means nothing for this socket should give `Ok`, not an error.
        fn set_socket_option(&self, opt: VirtualSockOpt) -> std::io::Result<()>;
    }

    /// A [`VirtualSocket`], boxed, ready to become an
    /// [`L4Stream`](super::L4Stream) (`L4Stream::from`).
    #[derive(Debug)]
    pub struct VirtualSocketStream {
        pub(crate) socket: Box<dyn VirtualSocket>,
    }

    impl VirtualSocketStream {
        /// Wrap `socket`.
        pub fn new(socket: Box<dyn VirtualSocket>) -> Self {
            VirtualSocketStream { socket }
        }

        /// Apply a socket option.
        ///
        /// # Errors
        ///
        /// The socket's own `io::Error`, as
        /// [`VirtualSocket::set_socket_option`] returns it.
        pub fn set_socket_option(&self, opt: VirtualSockOpt) -> std::io::Result<()> {
            self.socket.set_socket_option(opt)
        }
    }
}

impl From<virt::VirtualSocketStream> for L4Stream {
    /// A stream over a virtual socket: no file descriptor (-1), no
    /// addresses, never parked while idle.
    fn from(v: virt::VirtualSocketStream) -> Self {
        L4Stream {
            inner: Inner::Virtual(v.socket),
            digest: SocketDigest {
                raw_fd: -1,
                peer_addr: None,
                local_addr: None,
                accepted_at: SystemTime::now(),
                proxy: None,
                h2c: None,
            },
            unread: None,
            unread_pos: 0,
            stale_readiness: true,
            kept: Default::default(),
        }
    }
}

/// A socket address: IP and port, or a Unix socket path (absent for an
/// unnamed socket, such as the client end of a Unix connection).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SocketAddr {
    /// An IPv4 or IPv6 address and port.
    Inet(std::net::SocketAddr),
    /// A Unix-domain socket path.
    Unix(Option<PathBuf>),
}

impl SocketAddr {
    /// The IP address and port, if this is an internet address.
    pub fn as_inet(&self) -> Option<&std::net::SocketAddr> {
        match self {
            SocketAddr::Inet(a) => Some(a),
            SocketAddr::Unix(_) => None,
        }
    }
}

impl fmt::Display for SocketAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocketAddr::Inet(a) => write!(f, "{a}"),
            SocketAddr::Unix(Some(p)) => write!(f, "unix:{}", p.display()),
            SocketAddr::Unix(None) => f.write_str("unix:(unnamed)"),
        }
    }
}

impl From<std::net::SocketAddr> for SocketAddr {
    fn from(a: std::net::SocketAddr) -> Self {
        SocketAddr::Inet(a)
    }
}

/// What is known about a connection's socket.
#[derive(Debug, Clone)]
pub struct SocketDigest {
    /// The file descriptor.
    pub raw_fd: RawFd,
    /// The other end.
    pub peer_addr: Option<SocketAddr>,
    /// Our end.
    pub local_addr: Option<SocketAddr>,
    /// When the connection was accepted (or established).
    pub accepted_at: SystemTime,
    /// The PROXY protocol header the connection started with, on a
    /// listener that reads one.
    pub proxy: Option<Arc<ProxyHeader>>,
    /// Whether the listener that accepted the connection takes HTTP/2
    /// with prior knowledge (h2c); `None` leaves it to the app's own
    /// setting (`HttpServer::set_h2c`). See `Listeners::set_h2c`.
    pub h2c: Option<bool>,
}

impl SocketDigest {
    /// The other end (Pingora's accessor for the `peer_addr` field).
    pub fn peer_addr(&self) -> Option<&SocketAddr> {
        self.peer_addr.as_ref()
    }

    /// Our end (Pingora's accessor for the `local_addr` field).
    pub fn local_addr(&self) -> Option<&SocketAddr> {
        self.local_addr.as_ref()
    }

    /// The original client: the source a PROXY protocol header named, or
    /// else the socket's peer.
    pub fn client_addr(&self) -> Option<&SocketAddr> {
        self.proxy
            .as_ref()
            .and_then(|p| p.source.as_ref())
            .or(self.peer_addr.as_ref())
    }
}

enum Inner {
    /// A user's stream in place of a socket (see [`virt`]).
    Virtual(Box<dyn virt::VirtualSocket>),
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// An accepted (or connected) TCP or Unix-domain stream and its digest.
pub struct L4Stream {
    inner: Inner,
    digest: SocketDigest,
    /// Bytes read ahead (past a PROXY header) and given back: read first.
    unread: Option<Box<[u8]>>,
    unread_pos: usize,
    /// The reactor's "readable" may be left over from bytes already read
    /// (the last read filled its buffer, or none happened yet), so
    /// [`L4Stream::poll_read_ready`] must confirm it with a peek. After a
    /// short read the readiness is cleared and any new readiness is real.
    stale_readiness: bool,
    /// The connection digest in Pingora's shape, once asked for.
    kept: super::digest::KeptDigest,
}

/// An idle connection out of the reactor: the socket and what its digest
/// cannot learn again from the kernel, and nothing else (no task, no
/// buffer, no reactor registration). About 48 bytes, where a connection
/// waiting in a task holds a kilobyte or more. The addresses are asked of
/// the kernel again when it wakes ([`ParkedL4::into_stream`]).
#[derive(Debug)]
pub(crate) struct ParkedL4 {
    sock: ParkedSocket,
    accepted_at: SystemTime,
    proxy: Option<Arc<ProxyHeader>>,
    h2c: Option<bool>,
}

#[derive(Debug)]
enum ParkedSocket {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

impl ParkedL4 {
    /// The socket's file descriptor.
    pub(crate) fn raw_fd(&self) -> RawFd {
        match &self.sock {
            ParkedSocket::Tcp(s) => s.as_raw_fd(),
            ParkedSocket::Unix(s) => s.as_raw_fd(),
        }
    }

    /// Back into the reactor of the current tokio runtime, as the stream
    /// it was (same accept time and PROXY header).
    pub(crate) fn into_stream(self) -> io::Result<L4Stream> {
        let mut s = match self.sock {
            ParkedSocket::Tcp(s) => L4Stream::from_tcp(TcpStream::from_std(s)?),
            ParkedSocket::Unix(s) => L4Stream::from_unix(UnixStream::from_std(s)?),
        };
        s.digest.accepted_at = self.accepted_at;
        s.digest.proxy = self.proxy;
        s.digest.h2c = self.h2c;
        Ok(s)
    }
}

impl fmt::Debug for L4Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("L4Stream")
            .field("digest", &self.digest)
            .finish()
    }
}

fn unix_addr(a: io::Result<tokio::net::unix::SocketAddr>) -> Option<SocketAddr> {
    a.ok()
        .map(|a| SocketAddr::Unix(a.as_pathname().map(|p| p.to_path_buf())))
}

impl L4Stream {
    /// Wrap a TCP stream, recording its addresses now.
    pub fn from_tcp(s: TcpStream) -> Self {
        let (peer, local) = (s.peer_addr().ok(), s.local_addr().ok());
        Self::from_tcp_with(s, peer, local)
    }

    /// Wrap a TCP stream just accepted, with the peer address `accept`
    /// returned and, when the listener's own address is specific (not a
    /// wildcard), that as the local address: two system calls fewer per
    /// connection than [`from_tcp`](Self::from_tcp).
    pub fn from_accepted_tcp(
        s: TcpStream,
        peer: std::net::SocketAddr,
        local: Option<std::net::SocketAddr>,
    ) -> Self {
        let local = local.or_else(|| s.local_addr().ok());
        Self::from_tcp_with(s, Some(peer), local)
    }

    fn from_tcp_with(
        s: TcpStream,
        peer: Option<std::net::SocketAddr>,
        local: Option<std::net::SocketAddr>,
    ) -> Self {
        let digest = SocketDigest {
            raw_fd: s.as_raw_fd(),
            peer_addr: peer.map(SocketAddr::Inet),
            local_addr: local.map(SocketAddr::Inet),
            accepted_at: SystemTime::now(),
            proxy: None,
            h2c: None,
        };
        L4Stream {
            inner: Inner::Tcp(s),
            digest,
            unread: None,
            unread_pos: 0,
            stale_readiness: true,
            kept: Default::default(),
        }
    }

    /// Wrap a Unix-domain stream, recording its addresses now.
    pub fn from_unix(s: UnixStream) -> Self {
        let digest = SocketDigest {
            raw_fd: s.as_raw_fd(),
            peer_addr: unix_addr(s.peer_addr()),
            local_addr: unix_addr(s.local_addr()),
            accepted_at: SystemTime::now(),
            proxy: None,
            h2c: None,
        };
        L4Stream {
            inner: Inner::Unix(s),
            digest,
            unread: None,
            unread_pos: 0,
            stale_readiness: true,
            kept: Default::default(),
        }
    }

    /// The socket digest.
    pub fn digest(&self) -> &SocketDigest {
        &self.digest
    }

    /// The connection digest in Pingora's shape, built on the first call.
    pub(crate) fn kept_digest(&self) -> &super::Digest {
        self.kept.get(Some(&self.digest), None)
    }

    /// Give back bytes that were read ahead: the next reads return them
    /// before anything from the socket.
    pub fn unread(&mut self, bytes: Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        let mut rest = bytes;
        if let Some(old) = self.unread.take() {
            rest.extend_from_slice(&old[self.unread_pos..]);
        }
        self.unread = Some(rest.into_boxed_slice());
        self.unread_pos = 0;
    }

    /// Record the PROXY protocol header the connection started with.
    pub fn set_proxy_header(&mut self, header: ProxyHeader) {
        self.digest.proxy = Some(Arc::new(header));
    }

    /// Record the accepting listener's h2c choice (see
    /// [`SocketDigest::h2c`]).
    pub fn set_h2c(&mut self, h2c: Option<bool>) {
        self.digest.h2c = h2c;
    }

    /// The reactor's read readiness of the socket, as it stands.
    fn poll_reactor_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &self.inner {
            Inner::Tcp(s) => s.poll_read_ready(cx),
            Inner::Unix(s) => s.poll_read_ready(cx),
            // No readiness to ask for: a read says.
            Inner::Virtual(_) => Poll::Ready(Ok(())),
        }
    }

    /// Run `f` against the socket if the reactor says it is readable; an
    /// `f` that says "would block" clears that readiness (unless a newer
    /// event came in meanwhile).
    fn try_read_io<R>(&self, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        match &self.inner {
            Inner::Tcp(s) => s.try_io(tokio::io::Interest::READABLE, f),
            Inner::Unix(s) => s.try_io(tokio::io::Interest::READABLE, f),
            Inner::Virtual(_) => f(),
        }
    }

    /// Ready when a read would not block: bytes, EOF or an error wait.
    ///
    /// The reactor's readiness can be left over from bytes already read
    /// (a new socket, or a read that filled its buffer): then it is
    /// confirmed with a one-byte `MSG_PEEK`, and a false alarm clears it
    /// and the wait goes on. After a short read (the usual case) the
    /// readiness was cleared, so a new one is trusted without a syscall.
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.unread.is_some() || matches!(self.inner, Inner::Virtual(_)) {
            return Poll::Ready(Ok(()));
        }
        if !self.stale_readiness {
            // Readiness now can only come from a new event: no peek.
            return self.poll_reactor_ready(cx);
        }
        let fd = self.digest.raw_fd;
        let peek = || {
            let mut byte = 0u8;
            // SAFETY: a valid fd we own, and a one-byte buffer on the stack.
            let n = unsafe {
                libc::recv(
                    fd,
                    (&mut byte as *mut u8).cast(),
                    1,
                    libc::MSG_PEEK | libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        loop {
            std::task::ready!(self.poll_reactor_ready(cx))?;
            match self.try_read_io(peek) {
                // A false alarm: readiness is cleared, poll again.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                // Bytes, EOF, or an error the next read will report.
                _ => return Poll::Ready(Ok(())),
            }
        }
    }

    /// Whether [`into_parked`](Self::into_parked) may take this stream:
    /// not while bytes read ahead wait to be read again.
    pub(crate) fn can_park(&self) -> bool {
        self.unread.is_none() && !matches!(self.inner, Inner::Virtual(_))
    }

    /// Take the socket out of the reactor, to be parked while idle (see
    /// [`ParkedL4`]). Check [`can_park`](Self::can_park) first. An error
    /// (the reactor is gone) leaves the socket closed.
    pub(crate) fn into_parked(self) -> io::Result<ParkedL4> {
        let sock = match self.inner {
            Inner::Tcp(s) => ParkedSocket::Tcp(s.into_std()?),
            Inner::Unix(s) => ParkedSocket::Unix(s.into_std()?),
            Inner::Virtual(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "a virtual socket cannot be parked",
                ))
            }
        };
        Ok(ParkedL4 {
            sock,
            accepted_at: self.digest.accepted_at,
            proxy: self.digest.proxy,
            h2c: self.digest.h2c,
        })
    }

    /// The TCP stream underneath, if this is TCP.
    pub fn as_tcp(&self) -> Option<&TcpStream> {
        match &self.inner {
            Inner::Tcp(s) => Some(s),
            Inner::Unix(_) | Inner::Virtual(_) => None,
        }
    }
}

impl AsRawFd for L4Stream {
    fn as_raw_fd(&self) -> RawFd {
        self.digest.raw_fd
    }
}

impl AsyncRead for L4Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(pending) = &this.unread {
            let rest = &pending[this.unread_pos..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.unread_pos += n;
            if this.unread_pos == pending.len() {
                this.unread = None;
                this.unread_pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        let want = buf.remaining();
        if want == 0 {
            return Poll::Ready(Ok(()));
        }
        if let Inner::Virtual(v) = &mut this.inner {
            return Pin::new(v).poll_read(cx, buf);
        }
        let fd = this.digest.raw_fd;
        loop {
            std::task::ready!(this.poll_reactor_ready(cx))?;
            // The read runs inside `try_io`, which notes the readiness
            // (and its event count) before the read. A short read (fewer
            // bytes than asked for: the receive queue is now empty) is
            // reported to `try_io` as "would block", so the readiness is
            // cleared — but only if no new event arrived meanwhile (the
            // count still matches), so a wake-up is never lost, even when
            // another thread drives the reactor. The next wait then parks
            // at once, without a read or peek that would only say EAGAIN.
            let mut got: Option<usize> = None;
            // SAFETY: recv only writes into these bytes; nothing here
            // de-initializes any.
            let unfilled = unsafe { buf.unfilled_mut() };
            let ptr = unfilled.as_mut_ptr().cast::<libc::c_void>();
            let read = || {
                // SAFETY: `ptr` points at `want` writable bytes of `buf`'s
                // unfilled part; recv writes at most that many.
                let n = unsafe { libc::recv(fd, ptr, want, 0) };
                if n < 0 {
                    return Err(io::Error::last_os_error());
                }
                let n = n as usize;
                got = Some(n);
                if n > 0 && n < want {
                    Err(io::ErrorKind::WouldBlock.into())
                } else {
                    Ok(())
                }
            };
            let tried = this.try_read_io(read);
            match (got, tried) {
                (Some(n), _) => {
                    // SAFETY: recv initialized the first `n` bytes.
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    // Only a short read proves the queue was drained.
                    this.stale_readiness = !(n > 0 && n < want);
                    return Poll::Ready(Ok(()));
                }
                // Not readable after all: readiness cleared, wait again.
                (None, Err(e)) if e.kind() == io::ErrorKind::WouldBlock => continue,
                (None, Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                (None, Err(e)) => return Poll::Ready(Err(e)),
                (None, Ok(())) => unreachable!("a successful read sets `got`"),
            }
        }
    }
}

impl AsyncWrite for L4Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().inner {
            Inner::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Inner::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Inner::Virtual(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().inner {
            Inner::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Inner::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Inner::Virtual(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Tcp(s) => Pin::new(s).poll_flush(cx),
            Inner::Unix(s) => Pin::new(s).poll_flush(cx),
            Inner::Virtual(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Inner::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Inner::Virtual(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
