//! What OpenSSL and BoringSSL spell differently, behind one set of names.

use boring::error::ErrorStack;
use boring::ssl::{SslContext, SslContextBuilder, SslMethod, SslRef};

/// The post-quantum hybrid key exchange (ML-KEM-768 with X25519).
pub const PQ_HYBRID_GROUP: &str = "X25519MLKEM768";

/// Set the key-exchange groups offered or accepted, most preferred first,
/// as a colon-separated list (`"X25519MLKEM768:X25519:P-256"`).
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
pub fn disable_session_tickets(builder: &mut SslContextBuilder) -> Result<(), ErrorStack> {
    builder.set_options(boring::ssl::SslOptions::NO_TICKET);
    Ok(())
}
