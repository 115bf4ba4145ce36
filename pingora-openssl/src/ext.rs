//! What OpenSSL and BoringSSL spell differently, behind one set of names.

use openssl::error::ErrorStack;
use openssl::ssl::{SslContext, SslContextBuilder, SslMethod, SslRef};

/// The post-quantum hybrid key exchange (ML-KEM-768 with X25519).
pub const PQ_HYBRID_GROUP: &str = "X25519MLKEM768";

/// Set the key-exchange groups offered or accepted, most preferred first,
/// as a colon-separated list (`"X25519MLKEM768:X25519:P-256"`).
///
/// # Errors
///
/// `ErrorStack` if OpenSSL does not know a group in the list, or the list
/// is malformed.
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
///
/// # Errors
///
/// `ErrorStack` if OpenSSL cannot add the extension (`X509_add_ext` fails).
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
///
/// # Errors
///
/// `ErrorStack` if `pem` does not parse as PEM certificates, or the
/// store refuses one (those added before it stay trusted).
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
///
/// # Errors
///
/// `ErrorStack` if setting the TLS 1.3 ticket count fails, which
/// `SSL_CTX_set_num_tickets` never does in current OpenSSL.
pub fn disable_session_tickets(builder: &mut SslContextBuilder) -> Result<(), ErrorStack> {
    builder.set_options(openssl::ssl::SslOptions::NO_TICKET);
    builder.set_num_tickets(0)
}

/// Serve `cert` on this connection (in a certificate callback).
///
/// # Errors
///
/// `ErrorStack` if OpenSSL cannot use the certificate: an unsupported public
/// key type, an EC key that cannot sign, or a key or signature too weak for
/// the security level.
pub fn ssl_use_certificate(
    ssl: &mut SslRef,
    cert: &openssl::x509::X509Ref,
) -> Result<(), ErrorStack> {
    ssl.set_certificate(cert)
}

/// Sign with `key` on this connection (in a certificate callback).
///
/// # Errors
///
/// `ErrorStack` if OpenSSL does not support the key's type, or `key` does
/// not match the certificate already set.
pub fn ssl_use_private_key<T: openssl::pkey::HasPrivate>(
    ssl: &mut SslRef,
    key: &openssl::pkey::PKeyRef<T>,
) -> Result<(), ErrorStack> {
    use foreign_types::ForeignTypeRef;
    // SAFETY: both are live objects; OpenSSL takes its own reference to
    // the key.
    let r = unsafe { openssl_sys::SSL_use_PrivateKey(ssl.as_ptr(), key.as_ptr()) };
    if r > 0 {
        Ok(())
    } else {
        Err(ErrorStack::get())
    }
}

/// Send `cert` after the leaf, as part of the chain (in a certificate
/// callback).
///
/// # Errors
///
/// `ErrorStack` if `cert`'s key or signature is too weak for the security
/// level.
pub fn ssl_add_chain_cert(
    ssl: &mut SslRef,
    cert: &openssl::x509::X509Ref,
) -> Result<(), ErrorStack> {
    ssl.add_chain_cert(cert.to_owned())
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

/// Where a context keeps its certificate callback.
fn callback_index() -> openssl::ex_data::Index<SslContext, CertificateCallback> {
    static INDEX: std::sync::OnceLock<openssl::ex_data::Index<SslContext, CertificateCallback>> =
        std::sync::OnceLock::new();
    *INDEX.get_or_init(|| SslContext::new_ex_index().expect("a context ex_data index"))
}

/// Marks a connection whose certificate callback has run.
fn resumed_index() -> openssl::ex_data::Index<openssl::ssl::Ssl, ()> {
    static INDEX: std::sync::OnceLock<openssl::ex_data::Index<openssl::ssl::Ssl, ()>> =
        std::sync::OnceLock::new();
    *INDEX.get_or_init(|| openssl::ssl::Ssl::new_ex_index().expect("an ssl ex_data index"))
}

extern "C" {
    // In libssl (1.0.2 and later); openssl-sys does not declare it.
    fn SSL_CTX_set_cert_cb(
        ctx: *mut openssl_sys::SSL_CTX,
        cb: Option<unsafe extern "C" fn(*mut openssl_sys::SSL, *mut libc::c_void) -> libc::c_int>,
        arg: *mut libc::c_void,
    );
}

/// OpenSSL's certificate hook: pause the handshake (the accept returns
/// `WANT_X509_LOOKUP`) until the async callback has run for this
/// connection, then go on.
unsafe extern "C" fn pause_for_certificate(
    ssl: *mut openssl_sys::SSL,
    _arg: *mut libc::c_void,
) -> libc::c_int {
    use foreign_types::ForeignTypeRef;
    // SAFETY: OpenSSL calls this with the live SSL object of the handshake.
    let ssl = unsafe { SslRef::from_ptr(ssl) };
    if ssl.ex_data(resumed_index()).is_some() {
        1
    } else {
        -1
    }
}

/// Run `callback` in every server handshake on contexts built from
/// `builder`, after the client's hello: the handshake waits for its
/// future (see [`CertificateCallback`]); [`stream::accept`](crate::stream::accept)
/// drives it.
pub fn set_async_certificate_callback(
    builder: &mut SslContextBuilder,
    callback: CertificateCallback,
) {
    builder.set_ex_data(callback_index(), callback);
    // SAFETY: installs a hook on a context being built; the hook only reads
    // this crate's ex_data.
    unsafe {
        SSL_CTX_set_cert_cb(
            builder.as_ptr(),
            Some(pause_for_certificate),
            std::ptr::null_mut(),
        )
    }
}

/// The certificate callback of `ssl`'s context, marked as run for `ssl`
/// (so the handshake goes on when resumed); `None` if it has none.
pub(crate) fn take_certificate_callback(ssl: &mut SslRef) -> Option<CertificateCallback> {
    let cb = ssl.ssl_context().ex_data(callback_index())?.clone();
    ssl.set_ex_data(resumed_index(), ());
    Some(cb)
}
