//! An async TLS stream over any `AsyncRead + AsyncWrite`, and the two
//! handshakes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use boring::ssl::{Ssl, SslRef};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A TLS connection over `S`.
pub struct TlsStream<S>(tokio_boring::SslStream<S>);

impl<S: std::fmt::Debug> std::fmt::Debug for TlsStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TlsStream").field(self.0.get_ref()).finish()
    }
}

/// Why a handshake failed.
#[derive(Debug)]
pub struct HandshakeFailure {
    /// What the library said.
    pub message: String,
    /// The certificate verification result (an `X509_V_*` code), when a
    /// certificate was checked and failed.
    pub verify_code: Option<i32>,
    /// The I/O error underneath, if the failure was one.
    pub io: Option<io::Error>,
}

impl std::fmt::Display for HandshakeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HandshakeFailure {}

fn failure<S>(e: tokio_boring::HandshakeError<S>) -> HandshakeFailure {
    let verify_code = e
        .ssl()
        .and_then(|s| s.verify_result().err())
        .map(|v| v.as_raw());
    HandshakeFailure {
        message: e.to_string(),
        verify_code,
        io: e
            .as_io_error()
            .map(|io| io::Error::new(io.kind(), io.to_string())),
    }
}

/// Run the server side of the handshake on `stream`.
///
/// # Errors
///
/// `HandshakeFailure` if the handshake fails: a TLS protocol error, a client
/// certificate that fails verification (`verify_code` set), or an I/O error
/// on `stream` (`io` set).
pub async fn accept<S>(ssl: Ssl, stream: S) -> Result<TlsStream<S>, HandshakeFailure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tokio_boring::SslStreamBuilder::new(ssl, stream)
        .accept()
        .await
        .map(TlsStream)
        .map_err(failure)
}

/// Run the client side of the handshake on `stream`.
///
/// # Errors
///
/// `HandshakeFailure` if the handshake fails: a TLS protocol error, a server
/// certificate that fails verification (`verify_code` set), or an I/O error
/// on `stream` (`io` set).
pub async fn connect<S>(ssl: Ssl, stream: S) -> Result<TlsStream<S>, HandshakeFailure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tokio_boring::SslStreamBuilder::new(ssl, stream)
        .connect()
        .await
        .map(TlsStream)
        .map_err(failure)
}

impl<S> TlsStream<S> {
    /// The TLS connection's state.
    pub fn ssl(&self) -> &SslRef {
        self.0.ssl()
    }

    /// The stream underneath.
    pub fn get_ref(&self) -> &S {
        self.0.get_ref()
    }

    /// The stream underneath, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        self.0.get_mut()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
