//! TLS listeners: certificates (one, or chosen per SNI by a callback),
//! ALPN, client-certificate verification, protocol versions, session
//! tickets, key-exchange groups and a handshake timeout.
//!
//! ```no_run
//! use pingora_core::listeners::tls::TlsSettings;
//!
//! let mut tls = TlsSettings::intermediate("server.crt", "server.key").unwrap();
//! tls.enable_h2();
//! // listening_service.add_tls_with_settings("0.0.0.0:443", None, tls);
//! ```
//!
//! As with Pingora, [`TlsSettings`] dereferences to the TLS library's
//! acceptor builder for anything not offered here, and [`TlsAccept`]'s
//! async `certificate_callback` may pick the certificate in the middle of
//! the handshake, taking as long as it needs:
//!
//! ```no_run
//! use async_trait::async_trait;
//! use pingora_core::listeners::tls::{TlsAccept, TlsSettings};
//! use pingora_core::protocols::tls::TlsRef;
//! use pingora_core::tls::{ext, pkey::PKey, ssl::NameType, x509::X509};
//!
//! struct FromStore;
//!
//! #[async_trait]
//! impl TlsAccept for FromStore {
//!     async fn certificate_callback(&self, ssl: &mut TlsRef) {
//!         let name = ssl.servername(NameType::HOST_NAME).unwrap_or("default").to_string();
//!         // Look the pair up (a file here; a store or a fetch as well).
//!         let cert = X509::from_pem(&std::fs::read(format!("{name}.crt")).unwrap()).unwrap();
//!         let key = PKey::private_key_from_pem(&std::fs::read(format!("{name}.key")).unwrap()).unwrap();
//!         ext::ssl_use_certificate(ssl, &cert).unwrap();
//!         ext::ssl_use_private_key(ssl, &key).unwrap();
//!     }
//! }
//!
//! let mut tls = TlsSettings::with_callbacks(Box::new(FromStore)).unwrap();
//! // The library's own builder, through `Deref`.
//! tls.set_session_cache_size(10_000);
//! ```

use std::any::Any;
use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use pingora_error::{Error, ErrorType::*, OkOrErr, OrErr, Result};
use tracing::info;

use crate::protocols::tls::{SslStream, TlsRef, TlsSocket};
use crate::protocols::L4Stream;
use crate::tls::ext;
use crate::tls::pkey::{PKey, Private};
use crate::tls::ssl::{
    AlpnError, NameType, SniError, Ssl, SslAcceptor, SslAcceptorBuilder, SslAlert, SslContext,
    SslContextBuilder, SslMethod, SslMode, SslRef, SslVerifyMode, SslVersion,
};
use crate::tls::x509::X509;

mod certs;

pub use certs::{CaCerts, CertKey};

/// Hooks into each server handshake: choose its certificate (many can be
/// served on one port this way), and attach data to the connection when
/// it is done. Pingora's two async callbacks, and ours, `certificate`,
/// which names a [`CertKey`] by SNI. Each has a default that does nothing.
#[async_trait]
pub trait TlsAccept: Send + Sync {
    /// Ours: the certificate for `sni` (absent when the client sent none);
    /// its context is built once and kept. `None` leaves the settings'
    /// default certificate, or what `certificate_callback` sets; a
    /// handshake left with no certificate fails.
    fn certificate(&self, _sni: Option<&str>) -> Option<Arc<CertKey>> {
        None
    }

    /// Pingora's: called in the middle of the handshake, once the client's
    /// hello is read (`ssl.servername(..)` is known): set the certificate
    /// and key with `tls::ext::ssl_use_certificate` and
    /// `ssl_use_private_key` (and `ssl_add_chain_cert`). The handshake
    /// waits for it, within its timeout.
    async fn certificate_callback(&self, _ssl: &mut TlsRef) {}

    /// Pingora's: called once the handshake is done; a value returned is
    /// attached to the connection's digest (`SslDigest::extension`), where
    /// the phases can read it.
    async fn handshake_complete_callback(
        &self,
        _ssl: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        None
    }
}

/// Pingora's name for boxed [`TlsAccept`] callbacks.
pub type TlsAcceptCallbacks = Box<dyn TlsAccept + Send + Sync>;

/// Lowest TLS version to accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2 (the default).
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

/// Names the type; its state is not shown.
impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings").finish_non_exhaustive()
    }
}

/// How a TLS listener behaves. Dereferences to the TLS library's acceptor
/// builder (Mozilla's "intermediate" profile to start with), as Pingora's:
/// what is set there applies to the listener's main context, and the
/// settings here are applied on top when the listener is built.
/// Certificates chosen by [`TlsAccept::certificate`] get contexts built
/// from these settings alone.
pub struct TlsSettings {
    /// The library's builder, until `build` takes it.
    builder: Option<SslAcceptorBuilder>,
    default_cert: Option<Arc<CertKey>>,
    callbacks: Option<Arc<dyn TlsAccept + Send + Sync>>,
    alpn: Vec<Vec<u8>>,
    client_ca: Option<CaCerts>,
    client_cert_required: bool,
    /// Set by `set_min_version`; otherwise the builder's stands.
    min_version: Option<TlsVersion>,
    session_tickets: bool,
    handshake_timeout: Duration,
    groups: Option<String>,
}

/// Groups offered by default, most preferred first.
const DEFAULT_GROUPS_PQ: &str = "X25519MLKEM768:X25519:P-256:P-384";
const DEFAULT_GROUPS: &str = "X25519:P-256:P-384";

impl Deref for TlsSettings {
    type Target = SslAcceptorBuilder;

    fn deref(&self) -> &SslAcceptorBuilder {
        self.builder
            .as_ref()
            .expect("the builder is kept until build")
    }
}

impl DerefMut for TlsSettings {
    fn deref_mut(&mut self) -> &mut SslAcceptorBuilder {
        self.builder
            .as_mut()
            .expect("the builder is kept until build")
    }
}

/// A builder with Mozilla's "intermediate" profile (TLS 1.2 and 1.3,
/// modern ciphers).
fn intermediate_builder() -> Result<SslAcceptorBuilder> {
    SslAcceptor::mozilla_intermediate_v5(SslMethod::tls())
        .or_err(InternalError, "creating a TLS context")
}

impl TlsSettings {
    fn base() -> Result<Self> {
        Ok(TlsSettings {
            builder: Some(intermediate_builder()?),
            default_cert: None,
            callbacks: None,
            alpn: vec![b"http/1.1".to_vec()],
            client_ca: None,
            client_cert_required: false,
            min_version: None,
            session_tickets: true,
            handshake_timeout: Duration::from_secs(10),
            groups: None,
        })
    }

    /// Serve the certificate and key in these PEM files, with Mozilla's
    /// "intermediate" profile (TLS 1.2 and 1.3, modern ciphers).
    ///
    /// # Errors
    ///
    /// `FileReadError` if a file cannot be read; `InvalidCert` if it holds no
    /// PEM certificate or key; `InternalError` if the TLS library cannot
    /// create a context.
    pub fn intermediate(cert_path: &str, key_path: &str) -> Result<Self> {
        let mut s = Self::base()?;
        s.default_cert = Some(Arc::new(CertKey::from_files(cert_path, key_path)?));
        Ok(s)
    }

    /// Serve one certificate already loaded.
    ///
    /// # Panics
    ///
    /// Only if the TLS library cannot create a context at all (out of
    /// memory).
    pub fn with_cert(cert: Arc<CertKey>) -> Self {
        let mut s = Self::base().expect("creating a TLS context");
        s.default_cert = Some(cert);
        s
    }

    /// Choose the certificate per handshake with `callbacks` (Pingora's
    /// `with_callbacks`, taking its `TlsAcceptCallbacks`).
    ///
    /// # Errors
    ///
    /// `InternalError` if the TLS library cannot create a context.
    pub fn with_callbacks(callbacks: TlsAcceptCallbacks) -> Result<Self> {
        let mut s = Self::base()?;
        s.callbacks = Some(Arc::from(callbacks));
        Ok(s)
    }

    /// A certificate for clients that send no SNI or one the callbacks do
    /// not know.
    pub fn set_default_cert(&mut self, cert: Arc<CertKey>) {
        self.default_cert = Some(cert);
    }

    /// Offer HTTP/2 by ALPN (preferred over HTTP/1.1).
    pub fn enable_h2(&mut self) {
        self.alpn = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    }

    /// Which HTTP versions to agree on by ALPN (Pingora's): `H2H1` prefers
    /// HTTP/2, `H1` or `H2` allows one, `None` answers no ALPN.
    pub fn set_alpn(&mut self, alpn: crate::upstreams::peer::ALPN) {
        self.alpn = alpn.protocols();
    }

    /// Ours: the ALPN protocols to accept by name, most preferred first
    /// (empty: no ALPN), for protocols other than HTTP.
    pub fn set_alpn_protocols(&mut self, protocols: &[&[u8]]) {
        self.alpn = protocols.iter().map(|p| p.to_vec()).collect();
    }

    /// Verify client certificates against the CAs in this PEM file (mTLS).
    /// With `required`, a client without a valid certificate is refused;
    /// without, one is asked for and checked if sent.
    pub fn set_client_ca_file(&mut self, path: &str, required: bool) {
        self.client_ca = Some(CaCerts::File(path.to_string()));
        self.client_cert_required = required;
    }

    /// As [`set_client_ca_file`](Self::set_client_ca_file), with the CA
    /// certificates given as PEM bytes (one or more blocks) instead of a
    /// file. A PEM with no certificate in it is refused when the settings
    /// are built.
    pub fn set_client_ca_pem(&mut self, pem: &[u8], required: bool) {
        self.client_ca = Some(CaCerts::Pem(Arc::from(pem)));
        self.client_cert_required = required;
    }

    /// The lowest TLS version accepted (TLS 1.2 by default).
    pub fn set_min_version(&mut self, v: TlsVersion) {
        self.min_version = Some(v);
    }

    /// Issue session tickets for resumption (on by default). Off, no
    /// ticket is sent in TLS 1.2 or 1.3, so TLS 1.3 clients cannot resume
    /// (TLS 1.2 clients still may, by session id).
    pub fn set_session_tickets(&mut self, on: bool) {
        self.session_tickets = on;
    }

    /// Time allowed for a handshake (10 s by default).
    pub fn set_handshake_timeout(&mut self, d: Duration) {
        self.handshake_timeout = d;
    }

    /// Key-exchange groups, most preferred first, colon-separated. The
    /// default prefers X25519MLKEM768 when the library has it.
    pub fn set_groups(&mut self, groups: &str) {
        self.groups = Some(groups.to_string());
    }

    /// Apply every setting to `b`, serving `cert` if given.
    fn configure(
        &self,
        b: &mut SslContextBuilder,
        cert: Option<&CertKey>,
        groups: &str,
    ) -> Result<()> {
        // The stream coalesces write slices on the stack, so a write
        // retried after "would block" comes from another address (the
        // Mozilla profile sets this already; it must stay set).
        b.set_mode(SslMode::ACCEPT_MOVING_WRITE_BUFFER);
        if let Some(v) = self.min_version {
            let min = match v {
                TlsVersion::Tls12 => SslVersion::TLS1_2,
                TlsVersion::Tls13 => SslVersion::TLS1_3,
            };
            b.set_min_proto_version(Some(min))
                .or_err(InternalError, "setting the TLS version")?;
        }
        ext::set_groups(b, groups).or_err_with(ConfError, || {
            format!("unsupported key-exchange groups {groups:?}")
        })?;
        if let Some(ck) = cert {
            ck.install(b)?;
        }
        if !self.alpn.is_empty() {
            let ours = self.alpn.clone();
            b.set_alpn_select_callback(move |_, client| {
                select_alpn(&ours, client).ok_or(AlpnError::NOACK)
            });
        }
        if let Some(ca) = &self.client_ca {
            ca.load_into(b, "client CA")?;
            let mut mode = SslVerifyMode::PEER;
            if self.client_cert_required {
                mode |= SslVerifyMode::FAIL_IF_NO_PEER_CERT;
            }
            b.set_verify(mode);
        }
        if !self.session_tickets {
            ext::disable_session_tickets(b).or_err(InternalError, "turning session tickets off")?;
        }
        b.set_session_id_context(b"pingora")
            .or_err(InternalError, "setting the session id context")?;
        Ok(())
    }

    /// A context with every setting, serving `cert` if given.
    fn context(&self, cert: Option<&CertKey>, groups: &str) -> Result<SslContext> {
        let mut b = intermediate_builder()?;
        self.configure(&mut b, cert, groups)?;
        Ok(b.build().into_context())
    }

    /// Build the acceptor; errors name what is wrong with the settings.
    ///
    /// # Errors
    ///
    /// `ConfError` with neither a certificate nor callbacks, or for unsupported
    /// groups; `InvalidCert` if the certificate and key cannot be used (or do
    /// not match), or the client CA PEM does not parse or holds no certificate;
    /// `FileReadError` if the client CA file cannot be read; `InternalError` if
    /// the TLS library refuses a setting.
    ///
    /// # Panics
    ///
    /// Only if the library's builder is gone, which cannot happen: `build` is
    /// the one place that takes it, and it consumes the settings.
    pub fn build(mut self) -> Result<Acceptor> {
        let groups = match &self.groups {
            Some(g) => g.clone(),
            None if ext::group_supported(ext::PQ_HYBRID_GROUP) => DEFAULT_GROUPS_PQ.to_string(),
            None => {
                info!(
                    "TLS: {} is not available in this {} build; offering {DEFAULT_GROUPS}",
                    ext::PQ_HYBRID_GROUP,
                    crate::tls::BACKEND
                );
                DEFAULT_GROUPS.to_string()
            }
        };
        let mut b = self
            .builder
            .take()
            .expect("the builder is kept until build");
        let timeout = self.handshake_timeout;
        let Some(cb) = self.callbacks.clone() else {
            let cert = self.default_cert.as_deref().or_err(
                ConfError,
                "TLS listener has no certificate and no callbacks",
            )?;
            self.configure(&mut b, Some(cert), &groups)?;
            return Ok(Acceptor {
                ctx: b.build().into_context(),
                timeout,
                callbacks: None,
            });
        };
        self.configure(&mut b, self.default_cert.as_deref(), &groups)?;
        // Pingora's async callback, in the middle of each handshake.
        let pingoras = cb.clone();
        ext::set_async_certificate_callback(
            &mut b,
            Arc::new(move |ssl| {
                let cb = pingoras.clone();
                Box::pin(async move { cb.certificate_callback(ssl).await })
            }),
        );
        let sni = Arc::new(SniContexts {
            settings: self,
            groups,
            cache: Mutex::default(),
        });
        let contexts = sni.clone();
        let ours = cb.clone();
        // Ours, early in the handshake: a certificate named for the SNI
        // switches the connection to that certificate's context (same
        // settings); none leaves the default, or what Pingora's callback
        // sets (a handshake with no certificate at all fails).
        b.set_servername_callback(move |ssl: &mut SslRef, _alert: &mut SslAlert| {
            let name = ssl.servername(NameType::HOST_NAME).map(str::to_string);
            match ours.certificate(name.as_deref()) {
                Some(ck) => match contexts.context_for(&ck) {
                    Some(ctx) => ssl.set_ssl_context(&ctx).map_err(|_| SniError::ALERT_FATAL),
                    None => Err(SniError::ALERT_FATAL),
                },
                None => Ok(()),
            }
        });
        Ok(Acceptor {
            ctx: b.build().into_context(),
            timeout,
            callbacks: Some(cb),
        })
    }
}

/// Our most preferred protocol that the client offers, as a slice of the
/// client's ALPN list (length-prefixed entries).
fn select_alpn<'a>(ours: &[Vec<u8>], client: &'a [u8]) -> Option<&'a [u8]> {
    ours.iter().find_map(|want| {
        let mut rest = client;
        while let Some((&len, tail)) = rest.split_first() {
            let len = len as usize;
            if tail.len() < len {
                return None;
            }
            let (proto, next) = tail.split_at(len);
            if proto == want.as_slice() {
                return Some(proto);
            }
            rest = next;
        }
        None
    })
}

/// Most TLS contexts kept for certificates chosen by SNI: a callback that
/// makes a new `CertKey` per handshake costs a context build each time,
/// never unbounded memory.
const SNI_CONTEXTS_MAX: usize = 1024;

struct SniContexts {
    settings: TlsSettings,
    groups: String,
    cache: Mutex<SniCache<Arc<CertKey>>>,
}

/// Contexts by certificate, least recently used dropped first.
struct SniCache<K> {
    /// Certificate (by address; the Arc is kept so the address cannot be
    /// reused by another certificate) → context and when last used.
    map: HashMap<usize, (K, SslContext, u64)>,
    clock: u64,
}

impl<K> Default for SniCache<K> {
    fn default() -> Self {
        SniCache {
            map: HashMap::new(),
            clock: 0,
        }
    }
}

impl<K> SniCache<K> {
    fn get(&mut self, key: usize) -> Option<SslContext> {
        self.clock += 1;
        let clock = self.clock;
        self.map.get_mut(&key).map(|(_, ctx, used)| {
            *used = clock;
            ctx.clone()
        })
    }

    fn insert(&mut self, key: usize, ck: K, ctx: SslContext, cap: usize) {
        if self.map.len() >= cap {
            // A miss with a full cache: one pass to find the oldest.
            if let Some(oldest) = self.map.iter().min_by_key(|(_, v)| v.2).map(|(k, _)| *k) {
                self.map.remove(&oldest);
            }
        }
        self.clock += 1;
        self.map.insert(key, (ck, ctx, self.clock));
    }
}

impl SniContexts {
    fn context_for(&self, ck: &Arc<CertKey>) -> Option<SslContext> {
        let key = Arc::as_ptr(ck) as usize;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ctx) = cache.get(key) {
            return Some(ctx);
        }
        let ctx = self.settings.context(Some(ck), &self.groups).ok()?;
        cache.insert(key, ck.clone(), ctx.clone(), SNI_CONTEXTS_MAX);
        Some(ctx)
    }
}

/// Names the type; its state is not shown.
impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor").finish_non_exhaustive()
    }
}

/// Runs server handshakes for one listener.
pub struct Acceptor {
    ctx: SslContext,
    timeout: Duration,
    /// For `handshake_complete_callback`.
    callbacks: Option<Arc<dyn TlsAccept + Send + Sync>>,
}

impl Acceptor {
    /// The handshake on an accepted connection, within the timeout.
    ///
    /// # Errors
    ///
    /// `TLSHandshakeTimedout` past the handshake timeout; `TLSHandshakeFailure`
    /// for any failed handshake (a refused client certificate too), both the
    /// downstream's; `InternalError` if the TLS session cannot be created.
    pub async fn handshake(&self, stream: L4Stream) -> Result<SslStream> {
        let ssl = Ssl::new(&self.ctx).or_err(InternalError, "creating a TLS session")?;
        let start = Instant::now();
        match pingora_timeout::timeout(
            self.timeout,
            crate::tls::stream::accept(ssl, TlsSocket::new(stream)),
        )
        .await
        {
            Err(_) => Error::e_explain(TLSHandshakeTimedout, "TLS handshake timed out")
                .map_err(|e| e.into_down()),
            Ok(Err(f)) => {
                Err(Error::because(TLSHandshakeFailure, "TLS handshake failed", f).into_down())
            }
            Ok(Ok(s)) => {
                let mut s = SslStream::new(s, start.elapsed());
                if let Some(cb) = &self.callbacks {
                    if let Some(v) = cb.handshake_complete_callback(s.ssl()).await {
                        s.set_extension(v);
                    }
                }
                Ok(s)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SNI context cache stays within its cap, dropping the least
    /// recently used context first.
    #[test]
    fn sni_contexts_are_an_lru_with_a_cap() {
        let ctx = SslContext::builder(SslMethod::tls()).unwrap().build();
        let mut cache = SniCache::<()>::default();
        for key in 0..10 {
            cache.insert(key, (), ctx.clone(), 8);
        }
        assert_eq!(cache.map.len(), 8);
        // 0 and 1 went first; 2 is used again, so 3 goes next.
        assert!(cache.get(0).is_none() && cache.get(1).is_none());
        assert!(cache.get(2).is_some());
        cache.insert(100, (), ctx.clone(), 8);
        assert!(cache.get(2).is_some());
        assert!(cache.get(3).is_none());
        assert_eq!(cache.map.len(), 8);
    }
}
