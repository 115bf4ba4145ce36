//! Protocols: the byte streams that apps read and write.
//!
//! L4 (TCP and Unix socket) streams with their [`SocketDigest`], and the
//! HTTP sessions ([`http`]) that read and write requests over any
//! [`Stream`]. TLS is layered on the same [`Stream`] type.

use std::fmt::Debug;
use std::io;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite};

pub mod http;
pub mod l4;
pub mod mem;
pub mod proxy_protocol;
pub mod rewind;
pub mod tls;

pub use l4::{L4Stream, SocketAddr, SocketDigest};
pub use tls::TlsDigest;

/// What every stream handed to an app can do: async read and write, and
/// say where it came from.
pub trait IO: AsyncRead + AsyncWrite + Unpin + Send + Sync + Debug + 'static {
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
}

/// A boxed stream of any kind (TCP, Unix, later TLS on either).
pub type Stream = Box<dyn IO>;

impl IO for L4Stream {
    fn socket_digest(&self) -> Option<&SocketDigest> {
        Some(self.digest())
    }

    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_read_ready(cx)
    }
}
