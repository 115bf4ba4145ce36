//! What OpenSSL and BoringSSL spell differently, behind one set of names.

use boring::error::ErrorStack;
use boring::ssl::{SslContext, SslContextBuilder, SslMethod, SslRef};

/// The post-quantum hybrid key exchange (ML-KEM-768 with X25519).
pub const PQ_HYBRID_GROUP: &str = "X25519MLKEM768";

/// Set the key-exchange groups offered or accepted, most preferred first,
/// as a colon-separated list (`"X25519MLKEM768:X25519:P-256"`).
///
/// # Errors
///
/// `ErrorStack` if BoringSSL does not know a group in the list, or
/// `groups` holds a NUL byte.
pub fn set_groups(builder: &mut SslContextBuilder, groups: &str) -> Result<(), ErrorStack> {
    builder.set_curves_list(groups)
}

/// Whether this library knows the key-exchange group `name`.
pub fn group_supported(name: &str) -> bool {
    SslContext::builder(SslMethod::tls())
        .map(|mut b| b.set_curves_list(name).is_ok())
        .unwrap_or(false)
}

/// The key-exchange group the handshake used, by name.
pub fn negotiated_group(ssl: &SslRef) -> Option<String> {
    ssl.curve_name().map(str::to_string)
}

/// Add an extension to a certificate being built.
///
/// # Errors
///
/// `ErrorStack` if BoringSSL cannot add the extension (`X509_add_ext` fails).
pub fn add_x509_extension(
    builder: &mut boring::x509::X509Builder,
    extension: &boring::x509::X509ExtensionRef,
) -> Result<(), ErrorStack> {
    builder.append_extension(extension)
}

/// Kept for parity with the OpenSSL backend: BoringSSL does not invalidate
/// the session of a connection dropped without a close_notify, so there is
/// nothing to do.
pub fn keep_session_on_drop(_ssl: &SslRef) {}

/// Trust the CA certificates in `pem` (one or more PEM blocks, from
/// memory rather than a file) for verifying the peer: the upstream's
/// chain in a client context, client certificates in a server context.
/// Adds to what the context already trusts. Returns how many
/// certificates were added (0 when `pem` holds none).
///
/// # Errors
///
/// `ErrorStack` if `pem` does not parse as PEM certificates, or the
/// store refuses one (those added before it stay trusted).
pub fn add_ca_pem(builder: &mut SslContextBuilder, pem: &[u8]) -> Result<usize, ErrorStack> {
    let certs = boring::x509::X509::stack_from_pem(pem)?;
    let n = certs.len();
    for cert in certs {
        builder.cert_store_mut().add_cert(&*cert)?;
    }
    Ok(n)
}

/// Issue no session tickets: none in TLS 1.2 (no ticket extension) and
/// no NewSessionTicket messages after a TLS 1.3 handshake (BoringSSL
/// sends TLS 1.3 tickets only when tickets are on).
///
/// # Errors
///
/// None: always `Ok` here (the `Result` matches the OpenSSL backend).
pub fn disable_session_tickets(builder: &mut SslContextBuilder) -> Result<(), ErrorStack> {
    builder.set_options(boring::ssl::SslOptions::NO_TICKET);
    Ok(())
}

/// Serve `cert` on this connection (in a certificate callback).
///
/// # Errors
///
/// `ErrorStack` if BoringSSL cannot use the certificate's public key (an
/// unsupported type, or an EC certificate whose key usage forbids signing).
pub fn ssl_use_certificate(
    ssl: &mut SslRef,
    cert: &boring::x509::X509Ref,
) -> Result<(), ErrorStack> {
    ssl.set_certificate(cert)
}

/// Sign with `key` on this connection (in a certificate callback).
///
/// # Errors
///
/// `ErrorStack` if `key` does not match the certificate already set.
pub fn ssl_use_private_key<T: boring::pkey::HasPrivate>(
    ssl: &mut SslRef,
    key: &boring::pkey::PKeyRef<T>,
) -> Result<(), ErrorStack> {
    ssl.set_private_key(key)
}

/// Send `cert` after the leaf, as part of the chain (in a certificate
/// callback).
///
/// # Errors
///
/// `ErrorStack` if BoringSSL cannot append the certificate (out of memory).
pub fn ssl_add_chain_cert(
    ssl: &mut SslRef,
    cert: &boring::x509::X509Ref,
) -> Result<(), ErrorStack> {
    ssl.add_chain_cert(cert)
}

/// An async certificate callback: given the connection in the middle of
/// a server handshake (the client's hello read, its SNI known), it sets
/// the certificate and key with [`ssl_use_certificate`] and
/// [`ssl_use_private_key`], taking as long as it needs; the handshake
/// goes on when its future is done.
pub type CertificateCallback = std::sync::Arc<
    dyn for<'a> Fn(
            &'a mut SslRef,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>
        + Send
        + Sync,
>;

/// The connection, carried into the certificate future.
struct SslPtr(*mut SslRef);

// SAFETY: the pointer is only used by the handshake's own task, while
// BoringSSL waits for the future (nothing else touches the connection).
unsafe impl Send for SslPtr {}

impl SslPtr {
    fn get(self) -> *mut SslRef {
        self.0
    }
}

/// Run `callback` in every server handshake on contexts built from
/// `builder`, after the client's hello: the handshake waits for its
/// future (BoringSSL's asynchronous certificate selection, driven by the
/// handshake in [`stream::accept`](crate::stream::accept)).
pub fn set_async_certificate_callback(
    builder: &mut SslContextBuilder,
    callback: CertificateCallback,
) {
    builder.set_async_select_certificate_callback(move |hello| {
        let ssl = SslPtr(hello.ssl_mut() as *mut SslRef);
        let callback = callback.clone();
        Ok(Box::pin(async move {
            // SAFETY: the connection outlives its handshake, which is
            // paused on this future; see `SslPtr`.
            let ssl = unsafe { &mut *ssl.get() };
            callback(ssl).await;
            Ok(Box::new(|_: boring::ssl::ClientHello<'_>| Ok(()))
                as boring::ssl::BoxSelectCertFinish)
        }))
    });
}
