//! An async TLS stream over any `AsyncRead + AsyncWrite`, and the two
//! handshakes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use openssl::ssl::{Ssl, SslRef};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A TLS connection over `S`.
#[derive(Debug)]
pub struct TlsStream<S>(tokio_openssl::SslStream<S>);

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

fn failure(e: openssl::ssl::Error, ssl: &SslRef) -> HandshakeFailure {
    let verify = ssl.verify_result();
    HandshakeFailure {
        message: e.to_string(),
        verify_code: (verify.as_raw() != 0).then(|| verify.as_raw()),
        io: e.into_io_error().ok(),
    }
}

async fn handshake<S>(ssl: Ssl, stream: S, server: bool) -> Result<TlsStream<S>, HandshakeFailure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut s = tokio_openssl::SslStream::new(ssl, stream).map_err(|e| HandshakeFailure {
        message: e.to_string(),
        verify_code: None,
        io: None,
    })?;
    if !server {
        return match Pin::new(&mut s).connect().await {
            Ok(()) => Ok(TlsStream(s)),
            Err(e) => Err(failure(e, s.ssl())),
        };
    }
    loop {
        match Pin::new(&mut s).accept().await {
            Ok(()) => return Ok(TlsStream(s)),
            // Paused for the context's async certificate callback
            // (`ext::set_async_certificate_callback`): run it, then resume.
            Err(e) if e.code().as_raw() == openssl_sys::SSL_ERROR_WANT_X509_LOOKUP => {
                use foreign_types::ForeignTypeRef;
                // SAFETY: `s` is ours alone and no handshake step runs while
                // the callback has the connection.
                let ssl = unsafe { SslRef::from_ptr_mut(s.ssl().as_ptr()) };
                match crate::ext::take_certificate_callback(ssl) {
                    Some(cb) => cb(ssl).await,
                    None => return Err(failure(e, s.ssl())),
                }
            }
            Err(e) => return Err(failure(e, s.ssl())),
        }
    }
}

/// Run the server side of the handshake on `stream`.
///
/// # Errors
///
/// `HandshakeFailure` if the handshake fails: a TLS protocol error, a client
/// certificate that fails verification (`verify_code` set), an I/O error on
/// `stream` (`io` set), or a certificate lookup with no callback installed.
pub async fn accept<S>(ssl: Ssl, stream: S) -> Result<TlsStream<S>, HandshakeFailure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    handshake(ssl, stream, true).await
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
    handshake(ssl, stream, false).await
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
