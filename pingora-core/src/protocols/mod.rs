//! Protocols: the byte streams that apps read and write.
//!
//! Today: L4 (TCP and Unix socket) streams with their [`SocketDigest`].
//! TLS and HTTP sessions are layered on the same [`Stream`] type by later
//! issues.

use std::fmt::Debug;

use tokio::io::{AsyncRead, AsyncWrite};

pub mod l4;

pub use l4::{L4Stream, SocketAddr, SocketDigest};

/// What every stream handed to an app can do: async read and write, and
/// say where it came from.
pub trait IO: AsyncRead + AsyncWrite + Unpin + Send + Sync + Debug + 'static {
    /// Addresses, file descriptor and accept time of the socket underneath.
    fn socket_digest(&self) -> Option<&SocketDigest>;
}

/// A boxed stream of any kind (TCP, Unix, later TLS on either).
pub type Stream = Box<dyn IO>;

impl IO for L4Stream {
    fn socket_digest(&self) -> Option<&SocketDigest> {
        Some(self.digest())
    }
}
