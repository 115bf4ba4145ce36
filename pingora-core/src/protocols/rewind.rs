//! A stream with some bytes put back in front: what was read to look at
//! the start of a connection (the HTTP/2 preface) is read again.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{SocketDigest, Stream, TlsDigest, IO};

/// `prefix`, then the rest of `inner`.
#[derive(Debug)]
pub struct Rewind {
    prefix: Bytes,
    inner: Stream,
}

impl Rewind {
    /// Put `prefix` back in front of `inner`.
    pub fn new(prefix: Bytes, inner: Stream) -> Self {
        Rewind { prefix, inner }
    }

    /// The stream underneath, once the put-back bytes were all read again.
    pub(crate) fn into_inner_if_drained(self) -> Result<Stream, Self> {
        if self.prefix.is_empty() {
            Ok(self.inner)
        } else {
            Err(self)
        }
    }

    /// The stream underneath, if the put-back bytes were all read again.
    pub(crate) fn inner_if_drained(&self) -> Option<&Stream> {
        self.prefix.is_empty().then_some(&self.inner)
    }
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl IO for Rewind {
    fn socket_digest(&self) -> Option<&SocketDigest> {
        self.inner.socket_digest()
    }

    fn tls_digest(&self) -> Option<&TlsDigest> {
        self.inner.tls_digest()
    }

    fn connection_digest(&self) -> Option<&super::Digest> {
        self.inner.connection_digest()
    }

    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            return Poll::Ready(Ok(()));
        }
        self.inner.poll_read_ready(cx)
    }
}
