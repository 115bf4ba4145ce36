//! TLS listeners in a build without a TLS library (neither the `openssl`
//! nor the `boringssl` feature): the same names as with one, so code that
//! adds TLS listeners compiles either way, and a clear error at start-up
//! when it tries. No value of these types can exist: each constructor
//! answers with an error, and what takes one cannot be called.
//!
//! ```
//! use pingora_core::listeners::tls::TlsSettings;
//!
//! let err = TlsSettings::intermediate("server.crt", "server.key").unwrap_err();
//! assert!(err.to_string().contains("openssl"));
//! ```

use std::sync::Arc;

use pingora_error::{Error, ErrorType, Result};

use crate::protocols::L4Stream;

/// The error every TLS set-up step answers with in this build.
pub(crate) fn no_tls<T>(what: &str) -> Result<T> {
    Error::e_explain(
        ErrorType::InternalError,
        format!(
            "{what}: this build has no TLS library; \
             turn on pingora's `openssl` or `boringssl` feature"
        ),
    )
}

/// A certificate chain and its private key; none can be loaded in this
/// build.
#[derive(Debug)]
pub enum CertKey {}

impl CertKey {
    /// Always an error in this build.
    ///
    /// # Errors
    ///
    /// Always: no TLS library.
    pub fn from_pem(_cert: &[u8], _key: &[u8]) -> Result<Self> {
        no_tls("loading a certificate")
    }

    /// Always an error in this build.
    ///
    /// # Errors
    ///
    /// Always: no TLS library.
    pub fn from_files(cert_path: &str, _key_path: &str) -> Result<Self> {
        no_tls(&format!("loading the certificate {cert_path}"))
    }

    /// The pool key part of a certificate (cannot be called).
    pub(crate) fn id(&self) -> u64 {
        match *self {}
    }
}

/// Lowest TLS version to accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2 (the default).
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

/// How a TLS listener behaves; none can be made in this build.
#[derive(Debug)]
pub enum TlsSettings {}

impl TlsSettings {
    /// Always an error in this build.
    ///
    /// # Errors
    ///
    /// Always: no TLS library.
    pub fn intermediate(cert_path: &str, _key_path: &str) -> Result<Self> {
        no_tls(&format!("a TLS listener with {cert_path}"))
    }

    /// Serve one certificate already loaded (none can be, here).
    pub fn with_cert(cert: Arc<CertKey>) -> Self {
        match *cert {}
    }

    /// Offer HTTP/2 as well as HTTP/1.1.
    pub fn enable_h2(&mut self) {
        match *self {}
    }

    /// Which protocols to offer.
    pub fn set_alpn(&mut self, _alpn: crate::upstreams::peer::ALPN) {
        match *self {}
    }

    /// Lowest protocol version to accept.
    pub fn set_min_version(&mut self, _v: TlsVersion) {
        match *self {}
    }

    /// The listener's acceptor.
    ///
    /// # Errors
    ///
    /// None: no settings exist to build from in this build.
    pub fn build(self) -> Result<Acceptor> {
        match self {}
    }
}

/// A TLS listener's handshake; none exists in this build.
#[derive(Debug)]
pub enum Acceptor {}

impl Acceptor {
    /// The handshake on an accepted connection (cannot be called).
    ///
    /// # Errors
    ///
    /// None: no acceptor exists in this build.
    pub async fn handshake(&self, _stream: L4Stream) -> Result<L4Stream> {
        match *self {}
    }
}
