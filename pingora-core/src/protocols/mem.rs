//! An in-memory [`Stream`](super::Stream): reads come from a byte string,
//! writes are collected. For testing, fuzzing and benchmarking apps and
//! sessions without sockets.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{SocketDigest, IO};

/// A stream whose peer "sent" a fixed byte string, delivered at most
/// `step` bytes per read, then EOF. Everything written is kept in a buffer
/// shared with `MemStream::written`.
///
/// ```
/// use pingora_core::protocols::mem::MemStream;
/// use pingora_core::protocols::http::v1::server::HttpSession;
///
/// let (stream, _written) = MemStream::new(&b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..], 7);
/// let mut session = HttpSession::new(Box::new(stream));
/// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// # rt.block_on(async {
/// assert!(session.read_request().await.unwrap().is_some());
/// assert_eq!(session.req_header().uri.path(), "/");
/// # });
/// ```
#[derive(Debug)]
pub struct MemStream {
    data: Bytes,
    pos: usize,
    step: usize,
    written: Arc<Mutex<Vec<u8>>>,
}

impl MemStream {
    /// A stream that yields `data` in reads of at most `step` bytes (at
    /// least 1), and a handle to what gets written to it.
    pub fn new(data: impl Into<Bytes>, step: usize) -> (Self, Arc<Mutex<Vec<u8>>>) {
        let written = Arc::new(Mutex::new(Vec::new()));
        let s = MemStream {
            data: data.into(),
            pos: 0,
            step: step.max(1),
            written: written.clone(),
        };
        (s, written)
    }
}

impl AsyncRead for MemStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = self
            .step
            .min(buf.remaining())
            .min(self.data.len() - self.pos);
        let start = self.pos;
        buf.put_slice(&self.data[start..start + n]);
        self.pos += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for MemStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut w = self.written.lock().unwrap_or_else(|p| p.into_inner());
        w.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl IO for MemStream {
    fn socket_digest(&self) -> Option<&SocketDigest> {
        None
    }
}
