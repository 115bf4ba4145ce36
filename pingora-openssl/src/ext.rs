//! What OpenSSL and BoringSSL spell differently, behind one set of names.

use openssl::error::ErrorStack;
use openssl::ssl::{SslContext, SslContextBuilder, SslMethod, SslRef};

/// The post-quantum hybrid key exchange (ML-KEM-768 with X25519).
pub const PQ_HYBRID_GROUP: &str = "X25519MLKEM768";

/// Set the key-exchange groups offered or accepted, most preferred first,
/// as a colon-separated list (`"X25519MLKEM768:X25519:P-256"`).
pub fn set_groups(builder: &mut SslContextBuilder, groups: &str) -> Result<(), ErrorStack> {
    builder.set_groups_list(groups)
}

/// Whether this library knows the key-exchange group `name`. OpenSSL has
/// X25519MLKEM768 from 3.5 on; the system library may be older, so this is
/// checked at run time.
pub fn group_supported(name: &str) -> bool {
    SslContext::builder(SslMethod::tls())
        .map(|mut b| b.set_groups_list(name).is_ok())
        .unwrap_or(false)
}

/// `SSL_CTRL_GET_NEGOTIATED_GROUP` from `ssl.h`.
const GET_NEGOTIATED_GROUP: libc::c_int = 134;
/// OpenSSL marks group ids without a NID with this bit.
const NID_UNKNOWN_FLAG: libc::c_int = 0x0100_0000;

/// The key-exchange group the handshake used, by name.
pub fn negotiated_group(ssl: &SslRef) -> Option<String> {
    use foreign_types::ForeignTypeRef;
    // SAFETY: a plain query on a live SSL object.
    let id = unsafe {
        openssl_sys::SSL_ctrl(ssl.as_ptr(), GET_NEGOTIATED_GROUP, 0, std::ptr::null_mut())
    } as libc::c_int;
    if id <= 0 {
        return None;
    }
    if id & NID_UNKNOWN_FLAG != 0 {
        // A group with no NID: name the ones we know by their TLS id.
        return Some(match id & 0xffff {
            0x11ec => PQ_HYBRID_GROUP.to_string(),
            0x11eb => "SecP256r1MLKEM768".to_string(),
            other => format!("0x{other:04x}"),
        });
    }
    openssl::nid::Nid::from_raw(id)
        .short_name()
        .ok()
        .map(str::to_string)
}

/// Add an extension to a certificate being built.
pub fn add_x509_extension(
    builder: &mut openssl::x509::X509Builder,
    extension: &openssl::x509::X509ExtensionRef,
) -> Result<(), ErrorStack> {
    builder.append_extension2(extension)
}

/// Mark the connection as closed cleanly before it is dropped, so that
/// OpenSSL does not invalidate its session (OpenSSL drops the session of a
/// connection freed without a close_notify, which would defeat resumption
/// for every connection closed by dropping it).
pub fn keep_session_on_drop(ssl: &SslRef) {
    use foreign_types::ForeignTypeRef;
    // SAFETY: sets two flag bits on a live SSL object we are about to free.
    unsafe {
        openssl_sys::SSL_set_shutdown(
            ssl.as_ptr(),
            openssl_sys::SSL_SENT_SHUTDOWN | openssl_sys::SSL_RECEIVED_SHUTDOWN,
        )
    }
}

/// Trust the CA certificates in `pem` (one or more PEM blocks, from
/// memory rather than a file) for verifying the peer: the upstream's
/// chain in a client context, client certificates in a server context.
/// Adds to what the context already trusts. Returns how many
/// certificates were added (0 when `pem` holds none).
pub fn add_ca_pem(builder: &mut SslContextBuilder, pem: &[u8]) -> Result<usize, ErrorStack> {
    let certs = openssl::x509::X509::stack_from_pem(pem)?;
    let n = certs.len();
    for cert in certs {
        builder.cert_store_mut().add_cert(cert)?;
    }
    Ok(n)
}

/// Issue no session tickets: none in TLS 1.2 (no ticket extension) and
/// no NewSessionTicket messages after a TLS 1.3 handshake (OpenSSL would
/// otherwise send stateful tickets even with `NO_TICKET`).
pub fn disable_session_tickets(builder: &mut SslContextBuilder) -> Result<(), ErrorStack> {
    builder.set_options(openssl::ssl::SslOptions::NO_TICKET);
    builder.set_num_tickets(0)
}
