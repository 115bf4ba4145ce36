//! Certificates and keys ([`CertKey`]) and the CAs that verify clients
//! ([`CaCerts`]).

use super::*;

/// A certificate chain (leaf first) and its private key.
pub struct CertKey {
    certs: Vec<X509>,
    key: PKey<Private>,
    /// Unique for the life of the process: what tells two of them apart in
    /// the connection pool's keys and the TLS context cache (an address
    /// could be reused by another one once this one is dropped).
    id: u64,
}

/// Shows how many certificates and the id, never the key.
impl std::fmt::Debug for CertKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertKey")
            .field("certs", &self.certs.len())
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The next [`CertKey`]'s id.
fn next_cert_key_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl CertKey {
    /// From PEM: `cert` holds the leaf then any intermediates.
    ///
    /// # Errors
    ///
    /// `InvalidCert` if `cert` does not parse or holds no certificate, or if
    /// `key` is not a PEM private key.
    pub fn from_pem(cert: &[u8], key: &[u8]) -> Result<Self> {
        let certs = X509::stack_from_pem(cert).or_err(InvalidCert, "parsing certificate PEM")?;
        if certs.is_empty() {
            return Error::e_explain(InvalidCert, "no certificate in PEM");
        }
        let key = PKey::private_key_from_pem(key).or_err(InvalidCert, "parsing private key PEM")?;
        Ok(CertKey::new(certs, key))
    }

    /// From PEM files.
    ///
    /// # Errors
    ///
    /// `FileReadError` if either file cannot be read; `InvalidCert` as for
    /// [`from_pem`](Self::from_pem), with both paths in the context.
    pub fn from_files(cert_path: &str, key_path: &str) -> Result<Self> {
        let cert = std::fs::read(cert_path)
            .or_err_with(FileReadError, || format!("reading certificate {cert_path}"))?;
        let key = std::fs::read(key_path)
            .or_err_with(FileReadError, || format!("reading key {key_path}"))?;
        Self::from_pem(&cert, &key).map_err(|mut e| {
            e.add_context(format!("{cert_path} / {key_path}"));
            e
        })
    }

    /// From a certificate and key already parsed.
    pub fn new(certs: Vec<X509>, key: PKey<Private>) -> Self {
        CertKey {
            certs,
            key,
            id: next_cert_key_id(),
        }
    }

    /// An id unique to this certificate and key for the life of the
    /// process.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The leaf certificate.
    pub fn leaf(&self) -> &X509 {
        &self.certs[0]
    }

    pub(crate) fn chain(&self) -> &[X509] {
        &self.certs[1..]
    }

    pub(crate) fn key(&self) -> &PKey<Private> {
        &self.key
    }

    /// Make `b` present this certificate, its chain and key; an error if
    /// the key does not match the certificate.
    pub(crate) fn install(&self, b: &mut SslContextBuilder) -> Result<()> {
        b.set_certificate(self.leaf())
            .or_err(InvalidCert, "using the certificate")?;
        for c in self.chain() {
            b.add_extra_chain_cert(c.clone())
                .or_err(InvalidCert, "adding a chain certificate")?;
        }
        b.set_private_key(self.key())
            .or_err(InvalidCert, "using the private key")?;
        b.check_private_key().or_err(
            InvalidCert,
            "the private key does not match the certificate",
        )
    }
}

/// CA certificates to trust: a PEM file, or PEM bytes already in memory.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CaCerts {
    /// A PEM file, read when the context is built.
    File(String),
    /// PEM bytes (one or more certificates).
    Pem(Arc<[u8]>),
}

impl CaCerts {
    /// Add these CAs to the trust store of `b`; `what` names them in
    /// errors (`"client CA"`, `"upstream CA"`).
    pub(crate) fn load_into(&self, b: &mut SslContextBuilder, what: &str) -> Result<()> {
        match self {
            CaCerts::File(path) => b
                .set_ca_file(path)
                .or_err_with(FileReadError, || format!("reading {what} file {path}")),
            CaCerts::Pem(pem) => {
                let n = ext::add_ca_pem(b, pem)
                    .or_err_with(InvalidCert, || format!("parsing {what} PEM"))?;
                if n == 0 {
                    return Error::e_explain(InvalidCert, format!("no certificate in {what} PEM"));
                }
                Ok(())
            }
        }
    }
}
