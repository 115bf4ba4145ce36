//! [`SslStream`]: a TLS connection over an [`L4Stream`], as a [`Stream`](crate::protocols::Stream).

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::TlsDigest;
use crate::protocols::{L4Stream, SocketDigest, IO};
use crate::tls::ssl::{NameType, SslRef};
use crate::tls::stream::TlsStream;

/// Bytes of several write slices copied into one TLS record.
const COALESCE: usize = 8 * 1024;

/// Bytes the socket under TLS reads ahead at most (a size the allocator
/// serves from its per-thread cache).
const READ_AHEAD: usize = 1024;

/// The socket under a TLS stream, reading ahead.
///
/// The TLS library asks for a record's 5-byte header, then for its body,
/// and after the last record for more: each a system call of its own, and
/// reads that fill their buffer leave the reactor's readiness in doubt (a
/// peek later). This reads what the socket has, up to `READ_AHEAD`
/// bytes, in one call and serves those asks from it; a large ask (a big
/// record's body) reads straight into the library's buffer. The buffer
/// exists only while it holds bytes, so an idle connection keeps none.
pub struct TlsSocket {
    l4: L4Stream,
    ahead: Option<Box<[u8]>>,
    start: usize,
    end: usize,
}

impl TlsSocket {
    /// Wrap the socket a TLS handshake is to run on.
    pub fn new(l4: L4Stream) -> Self {
        TlsSocket {
            l4,
            ahead: None,
            start: 0,
            end: 0,
        }
    }

    /// The socket.
    pub fn l4(&self) -> &L4Stream {
        &self.l4
    }

    /// Bytes read from the socket that the TLS library has not asked for.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }
}

impl fmt::Debug for TlsSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSocket")
            .field("l4", &self.l4)
            .field("buffered", &self.buffered())
            .finish()
    }
}

impl AsyncRead for TlsSocket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if let Some(ahead) = &this.ahead {
            let n = (this.end - this.start).min(buf.remaining());
            buf.put_slice(&ahead[this.start..this.start + n]);
            this.start += n;
            if this.start == this.end {
                this.ahead = None;
            }
            return Poll::Ready(Ok(()));
        }
        if buf.remaining() >= READ_AHEAD {
            return Pin::new(&mut this.l4).poll_read(cx, buf);
        }
        let mut ahead = vec![0u8; READ_AHEAD].into_boxed_slice();
        let mut rb = ReadBuf::new(&mut ahead);
        std::task::ready!(Pin::new(&mut this.l4).poll_read(cx, &mut rb))?;
        let got = rb.filled().len();
        let n = got.min(buf.remaining());
        buf.put_slice(&ahead[..n]);
        if n < got {
            this.ahead = Some(ahead);
            this.start = n;
            this.end = got;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for TlsSocket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.l4).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.l4).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.l4.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.l4).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.l4).poll_shutdown(cx)
    }
}

/// A TLS connection over a TCP or Unix stream, with its digest.
pub struct SslStream {
    inner: TlsStream<TlsSocket>,
    digest: TlsDigest,
    /// The connection digest in Pingora's shape, once asked for.
    kept: crate::protocols::digest::KeptDigest,
}

impl fmt::Debug for SslStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SslStream")
            .field("socket", self.inner.get_ref())
            .field("tls", &self.digest)
            .finish()
    }
}

/// A name entry's value as text.
fn entry_text(e: &crate::tls::x509::X509NameEntryRef) -> Option<String> {
    #[allow(deprecated)] // `to_string` is not in BoringSSL's binding
    e.data().as_utf8().ok().map(|s| s.to_string())
}

/// Read the digest off a finished handshake.
pub fn digest_of(ssl: &SslRef, handshake_duration: Duration) -> TlsDigest {
    let peer = ssl.peer_certificate();
    let peer_subject = peer.as_ref().map(|c| {
        c.subject_name()
            .entries()
            .map(|e| {
                let key = e.object().nid().short_name().unwrap_or("?");
                let value = entry_text(e).unwrap_or_default();
                format!("{key}={value}")
            })
            .collect::<Vec<_>>()
            .join(",")
    });
    let mut peer_sans = Vec::new();
    if let Some(names) = peer.as_ref().and_then(|c| c.subject_alt_names()) {
        for n in names.iter() {
            if let Some(d) = n.dnsname() {
                peer_sans.push(d.to_string());
            } else if let Some(u) = n.uri() {
                // URI names, such as SPIFFE IDs (`spiffe://trust/id`).
                peer_sans.push(u.to_string());
            } else if let Some(ip) = n.ipaddress() {
                let ip = match ip.len() {
                    4 => <[u8; 4]>::try_from(ip)
                        .ok()
                        .map(|a| std::net::IpAddr::from(a).to_string()),
                    16 => <[u8; 16]>::try_from(ip)
                        .ok()
                        .map(|a| std::net::IpAddr::from(a).to_string()),
                    _ => None,
                };
                peer_sans.extend(ip);
            }
        }
    }
    let peer_cn = peer.as_ref().and_then(|c| {
        c.subject_name()
            .entries_by_nid(crate::tls::nid::Nid::COMMONNAME)
            .next()
            .and_then(entry_text)
    });
    let organization = peer.as_ref().and_then(|c| {
        c.subject_name()
            .entries_by_nid(crate::tls::nid::Nid::ORGANIZATIONNAME)
            .next()
            .and_then(entry_text)
    });
    let serial_number = peer.as_ref().and_then(|c| {
        c.serial_number()
            .to_bn()
            .ok()
            .and_then(|b| b.to_hex_str().ok())
            .map(|h| h.to_string())
    });
    let cert_digest = peer
        .as_ref()
        .and_then(|c| c.digest(crate::tls::hash::MessageDigest::sha256()).ok())
        .map(|d| d.to_vec())
        .unwrap_or_default();
    TlsDigest {
        version: ssl.version_str().to_string(),
        cipher: ssl
            .current_cipher()
            .map(|c| c.name().to_string())
            .unwrap_or_default(),
        group: crate::tls::ext::negotiated_group(ssl),
        alpn: ssl.selected_alpn_protocol().map(<[u8]>::to_vec),
        sni: ssl.servername(NameType::HOST_NAME).map(str::to_string),
        peer_subject,
        peer_cn,
        organization,
        serial_number,
        cert_digest,
        peer_sans,
        handshake_duration,
        session_reused: ssl.session_reused(),
        extension: Default::default(),
    }
}

impl SslStream {
    /// Wrap a finished handshake.
    pub fn new(inner: TlsStream<TlsSocket>, handshake_duration: Duration) -> Self {
        let digest = digest_of(inner.ssl(), handshake_duration);
        SslStream {
            inner,
            digest,
            kept: Default::default(),
        }
    }

    /// Attach what `TlsAccept::handshake_complete_callback` returned to
    /// the digest.
    pub(crate) fn set_extension(&mut self, value: std::sync::Arc<dyn std::any::Any + Send + Sync>) {
        self.digest.extension.set(value);
    }

    /// The TLS state, for anything the digest does not carry.
    pub fn ssl(&self) -> &SslRef {
        self.inner.ssl()
    }

    /// The digest, refreshed (session resumption data can change after
    /// the handshake, when tickets arrive).
    pub fn refresh_digest(&mut self) {
        let d = self.digest.handshake_duration;
        let extension = std::mem::take(&mut self.digest.extension);
        self.digest = digest_of(self.inner.ssl(), d);
        self.digest.extension = extension;
    }
}

impl Drop for SslStream {
    fn drop(&mut self) {
        crate::tls::ext::keep_session_on_drop(self.inner.ssl());
    }
}

impl AsyncRead for SslStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for SslStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    /// Several slices become one TLS record where they fit: the HTTP/1
    /// layer writes a response header and a small body as two slices,
    /// which would otherwise be two records and two system calls. Up to
    /// `COALESCE` bytes from the front are copied into one record (on
    /// the stack); a first slice that large is written as it is.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut parts = bufs.iter().filter(|b| !b.is_empty());
        let Some(first) = parts.next() else {
            return Poll::Ready(Ok(0));
        };
        if first.len() >= COALESCE || bufs.iter().filter(|b| !b.is_empty()).count() == 1 {
            return Pin::new(&mut self.inner).poll_write(cx, first);
        }
        let mut record = [0u8; COALESCE];
        let mut n = 0;
        for b in std::iter::once(first).chain(parts) {
            let take = b.len().min(COALESCE - n);
            record[n..n + take].copy_from_slice(&b[..take]);
            n += take;
            if n == COALESCE {
                break;
            }
        }
        // A retry after `Pending` passes the same slices, so the same
        // bytes, from another address: both TLS contexts accept a moving
        // write buffer (`SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER`).
        Pin::new(&mut self.inner).poll_write(cx, &record[..n])
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl IO for SslStream {
    fn socket_digest(&self) -> Option<&SocketDigest> {
        Some(self.inner.get_ref().l4.digest())
    }

    fn tls_digest(&self) -> Option<&TlsDigest> {
        Some(&self.digest)
    }

    fn connection_digest(&self) -> Option<&crate::protocols::Digest> {
        Some(self.kept.get(self.socket_digest(), Some(&self.digest)))
    }

    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Decrypted bytes buffered by the TLS library count, and so do
        // bytes read ahead under it (the next pipelined record, say).
        if self.inner.ssl().pending() > 0 || self.inner.get_ref().buffered() > 0 {
            return Poll::Ready(Ok(()));
        }
        self.inner.get_ref().l4.poll_read_ready(cx)
    }
}
