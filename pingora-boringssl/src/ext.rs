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
