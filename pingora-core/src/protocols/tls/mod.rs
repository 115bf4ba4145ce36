//! TLS on top of an L4 stream: the [`TlsDigest`] apps can read, and (with
//! a TLS feature on) the [`SslStream`] that carries it.

use std::any::Any;
use std::sync::Arc;
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
    /// What the program attached to the connection when its handshake
    /// completed (`TlsAccept::handshake_complete_callback`).
    pub extension: SslDigestExtension,
}

/// A value the program attached to a TLS connection (Pingora's), read back
/// by its type from the digest.
#[derive(Clone, Default)]
pub struct SslDigestExtension(Option<Arc<dyn Any + Send + Sync>>);

impl SslDigestExtension {
    /// Holding `value`.
    pub fn new(value: Arc<dyn Any + Send + Sync>) -> Self {
        SslDigestExtension(Some(value))
    }

    /// The value, if one of type `T` is attached.
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.0.as_deref()?.downcast_ref()
    }

    /// Attach `value` (replacing any earlier one).
    pub fn set(&mut self, value: Arc<dyn Any + Send + Sync>) {
        self.0 = Some(value);
    }
}

/// Shows whether a value is attached (its type is not known here).
impl std::fmt::Debug for SslDigestExtension {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = if self.0.is_some() { "attached" } else { "none" };
        f.debug_tuple("SslDigestExtension").field(&state).finish()
    }
}

/// Equal when both hold nothing or the same value.
impl PartialEq for SslDigestExtension {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for SslDigestExtension {}

/// Pingora's name for the TLS digest.
pub type SslDigest = TlsDigest;

impl TlsDigest {
    /// Whether ALPN chose HTTP/2.
    pub fn is_h2(&self) -> bool {
        self.alpn.as_deref() == Some(b"h2")
    }
}

#[cfg(feature = "any_tls")]
mod stream;
#[cfg(feature = "any_tls")]
pub use stream::{digest_of, SslStream, TlsSocket};

/// A TLS connection as the TLS library shows it (Pingora's name), for
/// `TlsAccept`'s callbacks.
#[cfg(feature = "any_tls")]
pub type TlsRef = crate::tls::ssl::SslRef;
