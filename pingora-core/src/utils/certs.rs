//! Certificates made on the spot: a private CA and certificates it signs.
//!
//! For tests and examples, which must not ship private keys and must run
//! without a network. Not for production use.
//!
//! ```
//! use pingora_core::utils::certs::TestCa;
//!
//! let ca = TestCa::new("Example CA").unwrap();
//! let server = ca.issue(&["example.test", "127.0.0.1"], 30, false).unwrap();
//! assert!(server.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
//! ```

use std::path::Path;

use pingora_error::{Error, ErrorType::*, OrErr, Result};

use crate::tls::asn1::{Asn1Integer, Asn1Time};
use crate::tls::bn::BigNum;
use crate::tls::ec::{EcGroup, EcKey};
use crate::tls::ext::add_x509_extension as add_ext;
use crate::tls::hash::MessageDigest;
use crate::tls::nid::Nid;
use crate::tls::pkey::{PKey, Private};
use crate::tls::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
};
use crate::tls::x509::{X509Builder, X509Name, X509NameBuilder, X509NameRef, X509};

/// Names the type; its state is not shown.
impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued").finish_non_exhaustive()
    }
}

/// A certificate and its private key.
#[derive(Clone)]
pub struct Issued {
    /// The certificate.
    pub cert: X509,
    /// Its private key.
    pub key: PKey<Private>,
}

impl Issued {
    /// The certificate, PEM-encoded.
    pub fn cert_pem(&self) -> String {
        String::from_utf8(self.cert.to_pem().unwrap_or_default()).unwrap_or_default()
    }

    /// The private key, PEM-encoded (PKCS#8).
    pub fn key_pem(&self) -> String {
        String::from_utf8(self.key.private_key_to_pem_pkcs8().unwrap_or_default())
            .unwrap_or_default()
    }

    /// Write `NAME.crt` and `NAME.key` into `dir`; returns their paths.
    ///
    /// # Errors
    ///
    /// `FileWriteError` if either file cannot be written (the certificate is
    /// written first).
    pub fn write(&self, dir: &Path, name: &str) -> Result<(String, String)> {
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, self.cert_pem()).or_err(FileWriteError, "writing a certificate")?;
        std::fs::write(&key, self.key_pem()).or_err(FileWriteError, "writing a key")?;
        Ok((cert.display().to_string(), key.display().to_string()))
    }
}

/// Names the type; its state is not shown.
impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

/// A private certificate authority.
pub struct TestCa {
    /// The CA's own certificate and key.
    pub ca: Issued,
}

fn tls_err<E: Into<pingora_error::Cause>>(what: &'static str) -> impl FnOnce(E) -> Box<Error> {
    move |e| Error::because(InternalError, what, e)
}

fn new_key() -> Result<PKey<Private>> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(tls_err("EC group"))?;
    let ec = EcKey::generate(&group).map_err(tls_err("EC key"))?;
    PKey::from_ec_key(ec).map_err(tls_err("EC key"))
}

fn name(cn: &str) -> Result<X509Name> {
    let mut b = X509NameBuilder::new().map_err(tls_err("X509 name"))?;
    b.append_entry_by_nid(Nid::COMMONNAME, cn)
        .map_err(tls_err("X509 name"))?;
    Ok(b.build())
}

fn serial() -> Result<Asn1Integer> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ^ (std::process::id() << 12)
        ^ (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos()));
    BigNum::from_u32(n | 1)
        .and_then(|b| b.to_asn1_integer())
        .map_err(tls_err("serial number"))
}

/// The fields every certificate here has: X.509 v3, serial, subject and
/// issuer, public key, and validity between two Unix times.
fn start_cert(
    b: &mut X509Builder,
    serial: &Asn1Integer,
    subject: &X509NameRef,
    issuer: &X509NameRef,
    key: &PKey<Private>,
    not_before: i64,
    not_after: i64,
) -> std::result::Result<(), crate::tls::error::ErrorStack> {
    b.set_version(2)?;
    b.set_serial_number(serial)?;
    b.set_subject_name(subject)?;
    b.set_issuer_name(issuer)?;
    b.set_pubkey(key)?;
    let not_before = Asn1Time::from_unix(not_before as _)?;
    let not_after = Asn1Time::from_unix(not_after as _)?;
    b.set_not_before(&not_before)?;
    b.set_not_after(&not_after)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl TestCa {
    /// A new self-signed CA named `cn`, valid for ten years.
    ///
    /// # Errors
    ///
    /// `InternalError` if the TLS library cannot make the key or certificate,
    /// e.g. for a `cn` longer than a CN allows (64 bytes).
    pub fn new(cn: &str) -> Result<Self> {
        let key = new_key()?;
        let n = name(cn)?;
        let e = tls_err::<crate::tls::error::ErrorStack>("building the CA certificate");
        let sn = serial()?;
        let now = now();
        let mut b = X509Builder::new().map_err(tls_err("X509 builder"))?;
        (|| -> std::result::Result<(), crate::tls::error::ErrorStack> {
            start_cert(&mut b, &sn, &n, &n, &key, now - 3600, now + 3650 * 86400)?;
            let basic = BasicConstraints::new().critical().ca().build()?;
            add_ext(&mut b, &basic)?;
            let usage = KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()?;
            add_ext(&mut b, &usage)?;
            b.sign(&key, MessageDigest::sha256())
        })()
        .map_err(e)?;
        Ok(TestCa {
            ca: Issued {
                cert: b.build(),
                key,
            },
        })
    }

    /// A certificate for `names` (DNS names, IP addresses, or URIs such as
    /// SPIFFE IDs; the first is also the subject CN), valid from an hour ago for `days` days, for a
    /// server or (`client`) a client.
    ///
    /// # Errors
    ///
    /// `InternalError` as for [`issue_between`](Self::issue_between).
    pub fn issue(&self, names: &[&str], days: i64, client: bool) -> Result<Issued> {
        let now = now();
        self.issue_between(names, now - 3600, now + days * 86400, client)
    }

    /// As [`issue`](Self::issue), valid between two Unix times (so an
    /// expired certificate can be made).
    ///
    /// # Errors
    ///
    /// `InternalError` if the TLS library refuses a part: the first name too
    /// long for a CN (64 bytes), a name not valid in a SAN, or a time it
    /// cannot represent.
    pub fn issue_between(
        &self,
        names: &[&str],
        not_before: i64,
        not_after: i64,
        client: bool,
    ) -> Result<Issued> {
        let key = new_key()?;
        let subject = name(names.first().copied().unwrap_or("localhost"))?;
        let e = tls_err::<crate::tls::error::ErrorStack>("building a certificate");
        let sn = serial()?;
        let mut b = X509Builder::new().map_err(tls_err("X509 builder"))?;
        (|| -> std::result::Result<(), crate::tls::error::ErrorStack> {
            let issuer = self.ca.cert.subject_name();
            start_cert(&mut b, &sn, &subject, issuer, &key, not_before, not_after)?;
            let basic = BasicConstraints::new().build()?;
            add_ext(&mut b, &basic)?;
            let mut usage = ExtendedKeyUsage::new();
            if client {
                usage.client_auth();
            } else {
                usage.server_auth();
            }
            let usage = usage.build()?;
            add_ext(&mut b, &usage)?;
            let mut san = SubjectAlternativeName::new();
            for n in names {
                if n.parse::<std::net::IpAddr>().is_ok() {
                    san.ip(n);
                } else if n.contains("://") {
                    san.uri(n);
                } else {
                    san.dns(n);
                }
            }
            if !names.is_empty() {
                let ext = san.build(&b.x509v3_context(Some(&self.ca.cert), None))?;
                add_ext(&mut b, &ext)?;
            }
            b.sign(&self.ca.key, MessageDigest::sha256())
        })()
        .map_err(e)?;
        Ok(Issued {
            cert: b.build(),
            key,
        })
    }
}
