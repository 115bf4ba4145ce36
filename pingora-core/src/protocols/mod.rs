//! Protocols: the byte streams that apps read and write.
//!
//! L4 (TCP and Unix socket) streams with their [`SocketDigest`], and the
//! HTTP sessions ([`http`]) that read and write requests over any
//! [`Stream`]. TLS is layered on the same [`Stream`] type.

use std::fmt::Debug;
use std::io;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite};

pub mod digest;
pub mod http;
pub mod l4;
pub mod mem;
pub mod proxy_protocol;
pub mod rewind;
pub mod sockopt;
pub mod tls;

/// Pingora's path to the ALPN choice.
pub use crate::upstreams::peer::ALPN;
pub use digest::{
    Digest, GetProxyDigest, GetSocketDigest, GetTimingDigest, ProxyDigest, TimingDigest,
};
pub use l4::{L4Stream, SocketAddr, SocketDigest};
/// Pingora's path to the TCP keepalive settings.
pub use sockopt::TcpKeepalive;
pub use tls::TlsDigest;

/// What every stream handed to an app can do: async read and write, and
/// say where it came from.
pub trait IO: AsyncRead + AsyncWrite + Unpin + Send + Sync + Debug + std::any::Any {
    /// Addresses, file descriptor and accept time of the socket underneath.
    fn socket_digest(&self) -> Option<&SocketDigest>;

    /// Ready when a read would not block (or the stream has data buffered).
    ///
    /// Lets an idle keep-alive connection wait for its next request without
    /// holding a read buffer. The default says "always ready", which is
    /// correct but makes the caller allocate before it waits.
    fn poll_read_ready(&self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// The TLS digest, for a TLS stream.
    fn tls_digest(&self) -> Option<&TlsDigest> {
        None
    }

    /// The whole connection's [`Digest`] (Pingora's shape), kept by the
    /// stream once built. The default has none; sockets and TLS streams
    /// build theirs on the first call.
    fn connection_digest(&self) -> Option<&Digest> {
        None
    }
}

/// A boxed stream of any kind (TCP, Unix, later TLS on either).
pub type Stream = Box<dyn IO>;

/// Longest a lingering close waits for the peer to close.
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(2);
/// Most bytes a lingering close reads and drops.
const LINGER_BYTES: usize = 1 << 20;
/// Bytes asked for per read while lingering.
const LINGER_READ: usize = 4096;

/// Close `stream` without losing what was written to it: send FIN, then
/// read and drop what the peer still sends (up to 2 s or 1 MiB, until it
/// closes), so the kernel does not answer unread input with a reset that
/// could destroy the last response (or a GOAWAY) in flight. `buf` is
/// scratch space (its contents are dropped; no zeroed buffer is made).
/// HTTP/1 and HTTP/2 both close this way, as nginx's lingering close.
pub(crate) async fn close_lingering(stream: &mut Stream, buf: &mut bytes::BytesMut) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let linger = async {
        let _ = stream.shutdown().await;
        let mut total = 0usize;
        while total < LINGER_BYTES {
            buf.clear();
            buf.reserve(LINGER_READ);
            match stream.read_buf(buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = pingora_timeout::timeout(LINGER_TIME, linger).await;
}

/// The plain socket under `stream`, when it is one that can be parked
/// while idle: an [`L4Stream`] with nothing read ahead, bare or under a
/// [`rewind::Rewind`] whose bytes were all read again. Otherwise the
/// stream comes back unchanged.
pub(crate) fn into_parkable(stream: Stream) -> std::result::Result<L4Stream, Stream> {
    let any: &dyn std::any::Any = &*stream;
    if any.is::<rewind::Rewind>() {
        let boxed: Box<dyn std::any::Any> = stream;
        let Ok(rw) = boxed.downcast::<rewind::Rewind>() else {
            unreachable!("checked above")
        };
        return match rw.into_inner_if_drained() {
            Ok(inner) => into_parkable(inner),
            Err(rw) => Err(Box::new(rw)),
        };
    }
    match any.downcast_ref::<L4Stream>() {
        Some(l4) if l4.can_park() => {
            let boxed: Box<dyn std::any::Any> = stream;
            match boxed.downcast::<L4Stream>() {
                Ok(l4) => Ok(*l4),
                Err(_) => unreachable!("checked above"),
            }
        }
        _ => Err(stream),
    }
}

/// Whether [`into_parkable`] would take `stream`.
pub(crate) fn is_parkable(stream: &Stream) -> bool {
    let any: &dyn std::any::Any = &**stream;
    if let Some(rw) = any.downcast_ref::<rewind::Rewind>() {
        return rw.inner_if_drained().is_some_and(is_parkable);
    }
    any.downcast_ref::<L4Stream>()
        .is_some_and(L4Stream::can_park)
}

impl IO for L4Stream {
    fn socket_digest(&self) -> Option<&SocketDigest> {
        Some(self.digest())
    }

    fn connection_digest(&self) -> Option<&Digest> {
        Some(self.kept_digest())
    }

    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_read_ready(cx)
    }
}
