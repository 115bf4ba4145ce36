//! TLS on top of an L4 stream: the [`TlsDigest`] apps can read, and (with
//! a TLS feature on) the [`SslStream`] that carries it.

use std::time::Duration;

/// What is known about a TLS connection once its handshake is done.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsDigest {
    /// Protocol version, e.g. `TLSv1.3`.
    pub version: String,
    /// Cipher suite, e.g. `TLS_AES_128_GCM_SHA256`.
    pub cipher: String,
    /// Key-exchange group, e.g. `X25519` or `X25519MLKEM768`.
    pub group: Option<String>,
    /// The ALPN protocol agreed on, e.g. `h2`.
    pub alpn: Option<Vec<u8>>,
    /// The server name (SNI) the client asked for.
    pub sni: Option<String>,
    /// The peer certificate's subject, e.g. `CN=client.test`.
    pub peer_subject: Option<String>,
    /// The peer certificate's subject common name (CN) alone.
    pub peer_cn: Option<String>,
    /// The peer certificate's subject organization (O), as Pingora's
    /// `SslDigest::organization`.
    pub organization: Option<String>,
    /// The peer certificate's serial number, in hexadecimal.
    pub serial_number: Option<String>,
    /// SHA-256 of the peer certificate (DER); empty without one.
    pub cert_digest: Vec<u8>,
    /// The peer certificate's DNS names, URI names (SPIFFE IDs) and IP
    /// addresses.
    pub peer_sans: Vec<String>,
    /// How long the handshake took.
    pub handshake_duration: Duration,
    /// Whether an earlier session was resumed.
    pub session_reused: bool,
}

/// Pingora's name for the TLS digest.
pub type SslDigest = TlsDigest;

impl TlsDigest {
    /// Whether ALPN chose HTTP/2.
    pub fn is_h2(&self) -> bool {
        self.alpn.as_deref() == Some(b"h2")
    }
}

#[cfg(any(feature = "openssl", feature = "boringssl"))]
mod stream;
#[cfg(any(feature = "openssl", feature = "boringssl"))]
pub use stream::{digest_of, SslStream, TlsSocket};
