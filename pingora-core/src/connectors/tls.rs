//! TLS to upstreams: SNI, certificate and hostname verification (on by
//! default), an alternative name, a custom CA (a file or PEM bytes), a
//! client certificate,
//! ALPN, key-exchange groups, and session resumption through a client
//! session cache.
//!
//! Each failed check is its own error kind: [`CertExpired`], [`CertUnknownCA`],
//! [`CertHostnameMismatch`], else [`InvalidCert`] (verification) or
//! [`TLSHandshakeFailure`] (anything else).
//!
//! [`CertExpired`]: pingora_error::ErrorType::CertExpired
//! [`CertUnknownCA`]: pingora_error::ErrorType::CertUnknownCA
//! [`CertHostnameMismatch`]: pingora_error::ErrorType::CertHostnameMismatch
//! [`InvalidCert`]: pingora_error::ErrorType::InvalidCert
//! [`TLSHandshakeFailure`]: pingora_error::ErrorType::TLSHandshakeFailure

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pingora_error::{Error, ErrorType, ErrorType::*, OkOrErr, OrErr, Result};

use crate::listeners::tls::{CaCerts, CertKey};
use crate::protocols::tls::{SslStream, TlsSocket};
use crate::protocols::L4Stream;
use crate::tls::ext;
use crate::tls::ssl::{
    NameType, Ssl, SslContext, SslContextBuilder, SslMethod, SslMode, SslSession,
    SslSessionCacheMode, SslVerifyMode, SslVersion,
};
use crate::tls::stream::HandshakeFailure;
use crate::tls::x509::X509Ref;
use crate::upstreams::peer::Peer;

/// Names the type; its state is not shown.
impl std::fmt::Debug for TlsPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsPeer").finish_non_exhaustive()
    }
}

/// How to reach one TLS upstream.
#[derive(Clone)]
pub struct TlsPeer {
    /// The server name sent as SNI and, by default, checked against the
    /// certificate. May be empty (no SNI; then only `alternative_cn` is
    /// checked).
    pub sni: String,
    /// Verify the certificate chain (default true).
    pub verify_cert: bool,
    /// Verify that the certificate names `sni` or `alternative_cn`
    /// (default true).
    pub verify_hostname: bool,
    /// Another name the certificate may carry instead of `sni`.
    pub alternative_cn: Option<String>,
    /// Trust the CAs in this PEM file instead of the system's (or the
    /// connector's default CA file).
    pub ca_file: Option<String>,
    /// Trust the CAs in these PEM bytes (one or more certificates); takes
    /// precedence over `ca_file`. One context is kept per distinct CA
    /// text.
    pub ca_pem: Option<Arc<[u8]>>,
    /// Present this certificate (mTLS).
    pub client_cert_key: Option<Arc<CertKey>>,
    /// ALPN protocols to offer, most preferred first (e.g. `h2`,
    /// `http/1.1`); empty for no ALPN.
    pub alpn: Vec<Vec<u8>>,
    /// Key-exchange groups to offer, colon-separated; `None` prefers
    /// X25519MLKEM768 where the library has it.
    pub groups: Option<String>,
    /// Time allowed for the handshake (default 10 s).
    pub handshake_timeout: Duration,
}

impl TlsPeer {
    /// An upstream reached by this name, with verification on.
    pub fn new(sni: &str) -> Self {
        TlsPeer {
            sni: sni.to_string(),
            verify_cert: true,
            verify_hostname: true,
            alternative_cn: None,
            ca_file: None,
            ca_pem: None,
            client_cert_key: None,
            alpn: vec![],
            groups: None,
            handshake_timeout: Duration::from_secs(10),
        }
    }

    /// What makes two peers need different contexts.
    fn context_key(&self) -> String {
        // The certificate by its process-unique id, the CA by its text (a
        // new context per distinct CA, never one built for another that
        // happened to sit at the same address).
        let cert = self.client_cert_key.as_ref().map_or(0, |c| c.id());
        let pem = self
            .ca_pem
            .as_deref()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        format!(
            "{}|{:?}|{cert}|{:?}|{:?}|{pem}",
            self.verify_cert, self.ca_file, self.alpn, self.groups
        )
    }
}

struct Ctx {
    ctx: SslContext,
    sessions: Arc<Mutex<HashMap<String, SslSession>>>,
}

/// Names the type; its state is not shown.
impl std::fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnector").finish_non_exhaustive()
    }
}

/// Makes TLS connections to upstreams. Contexts (CA store, client
/// certificate, ALPN) are built once per distinct setting and kept;
/// sessions are kept per server name, so later connections resume.
pub struct TlsConnector {
    default_ca: Option<CaCerts>,
    /// Contexts by setting, each with when it was last used (a tick of
    /// `Contexts::clock`): past [`MAX_CONTEXTS`], the least recently used
    /// goes.
    contexts: Mutex<Contexts>,
}

#[derive(Default)]
struct Contexts {
    map: HashMap<String, (Arc<Ctx>, u64)>,
    clock: u64,
}

const MAX_SESSIONS: usize = 10_000;

/// Most TLS contexts kept: peers with many distinct client certificates
/// or CAs (hashed into the key) cannot grow the map without bound.
pub const MAX_CONTEXTS: usize = 1024;

impl TlsConnector {
    /// A connector that trusts the system's CAs, or those in
    /// `default_ca_file` (the server conf's `ca_file`) when given.
    pub fn new(default_ca_file: Option<&str>) -> Self {
        Self::with_default_ca(default_ca_file.map(|f| CaCerts::File(f.to_string())))
    }

    /// A connector that trusts `default_ca` (a file, or PEM bytes in
    /// memory) for peers that name no CA of their own, or the system's
    /// CAs when `None`.
    pub fn with_default_ca(default_ca: Option<CaCerts>) -> Self {
        TlsConnector {
            default_ca,
            contexts: Mutex::default(),
        }
    }

    fn build_ctx(&self, peer: &TlsPeer) -> Result<Ctx> {
        let mut b = SslContextBuilder::new(SslMethod::tls())
            .or_err(InternalError, "creating a TLS client context")?;
        b.set_min_proto_version(Some(SslVersion::TLS1_2))
            .or_err(InternalError, "setting the TLS version")?;
        // As the acceptors do: a write retried after "would block" may
        // come from another address with the same bytes (the stream
        // coalesces write slices on the stack).
        b.set_mode(SslMode::ACCEPT_MOVING_WRITE_BUFFER);
        let groups = match &peer.groups {
            Some(g) => g.as_str(),
            None if ext::group_supported(ext::PQ_HYBRID_GROUP) => {
                "X25519MLKEM768:X25519:P-256:P-384"
            }
            None => "X25519:P-256:P-384",
        };
        ext::set_groups(&mut b, groups).or_err_with(ConfError, || {
            format!("unsupported key-exchange groups {groups:?}")
        })?;
        if peer.verify_cert {
            let ca = match (&peer.ca_pem, &peer.ca_file) {
                (Some(pem), _) => Some(CaCerts::Pem(pem.clone())),
                (None, Some(f)) => Some(CaCerts::File(f.clone())),
                (None, None) => self.default_ca.clone(),
            };
            match ca {
                Some(ca) => ca.load_into(&mut b, "upstream CA")?,
                None => b
                    .set_default_verify_paths()
                    .or_err(InternalError, "loading the system CAs")?,
            }
            b.set_verify(SslVerifyMode::PEER);
        } else {
            b.set_verify(SslVerifyMode::NONE);
        }
        if let Some(ck) = &peer.client_cert_key {
            ck.install(&mut b)?;
        }
        if !peer.alpn.is_empty() {
            let mut wire = Vec::new();
            for p in &peer.alpn {
                wire.push(p.len() as u8);
                wire.extend_from_slice(p);
            }
            b.set_alpn_protos(&wire)
                .or_err(InternalError, "setting ALPN")?;
        }
        let sessions: Arc<Mutex<HashMap<String, SslSession>>> = Arc::default();
        let store = sessions.clone();
        b.set_session_cache_mode(SslSessionCacheMode::CLIENT);
        b.set_new_session_callback(move |ssl, session| {
            let Some(name) = ssl.servername(NameType::HOST_NAME) else {
                return;
            };
            let mut map = store.lock().unwrap_or_else(|p| p.into_inner());
            if map.len() >= MAX_SESSIONS {
                map.clear();
            }
            map.insert(name.to_string(), session);
        });
        Ok(Ctx {
            ctx: b.build(),
            sessions,
        })
    }

    fn ctx(&self, peer: &TlsPeer) -> Result<Arc<Ctx>> {
        let key = peer.context_key();
        let mut all = self.contexts.lock().unwrap_or_else(|p| p.into_inner());
        all.clock += 1;
        let now = all.clock;
        if let Some((c, used)) = all.map.get_mut(&key) {
            *used = now;
            return Ok(c.clone());
        }
        let c = Arc::new(self.build_ctx(peer)?);
        if all.map.len() >= MAX_CONTEXTS {
            // A scan, only when full: building a context costs far more.
            if let Some(oldest) = all
                .map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
            {
                all.map.remove(&oldest);
            }
        }
        all.map.insert(key, (c.clone(), now));
        Ok(c)
    }

    /// How many TLS contexts are kept (at most [`MAX_CONTEXTS`]).
    pub fn context_count(&self) -> usize {
        self.contexts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map
            .len()
    }

    /// TLS over a connected stream to the peer as its options ask:
    /// verification, CA, ALPN, its client certificate (else
    /// `default_cert`), and what is left of its total connection timeout
    /// since `start` as the handshake's limit.
    pub(crate) async fn connect_peer<P: Peer + ?Sized>(
        &self,
        stream: L4Stream,
        peer: &P,
        default_cert: Option<&Arc<CertKey>>,
        start: Instant,
    ) -> Result<crate::protocols::Stream> {
        let o = peer.options();
        let mut t = TlsPeer::new(peer.sni());
        t.verify_cert = o.verify_cert;
        t.verify_hostname = o.verify_hostname;
        t.alternative_cn = o.alternative_cn.clone();
        t.ca_file = o.ca.clone();
        t.ca_pem = o.ca_pem.clone();
        t.client_cert_key = peer.get_client_cert_key().or(default_cert).cloned();
        t.alpn = o.alpn.protocols();
        if let Some(total) = o.total_connection_timeout {
            t.handshake_timeout = total.saturating_sub(start.elapsed());
        }
        Ok(Box::new(self.connect(stream, &t).await?))
    }

    /// TLS over a connected stream to `peer`.
    ///
    /// # Errors
    ///
    /// `TLSHandshakeTimedout` past `handshake_timeout`; `CertExpired`,
    /// `CertUnknownCA`, `CertHostnameMismatch` or `InvalidCert` when the
    /// certificate fails a check; `TLSHandshakeFailure` for any other failed
    /// handshake. Before it: `FileReadError` or `InvalidCert` for a CA or
    /// client certificate that does not load, `ConfError` for unknown `groups`.
    pub async fn connect(&self, stream: L4Stream, peer: &TlsPeer) -> Result<SslStream> {
        let ctx = self.ctx(peer)?;
        let mut ssl = Ssl::new(&ctx.ctx).or_err(InternalError, "creating a TLS session")?;
        let ip_literal = peer.sni.parse::<IpAddr>().is_ok();
        if !peer.sni.is_empty() && !ip_literal {
            ssl.set_hostname(&peer.sni)
                .or_err(InternalError, "setting SNI")?;
        }
        let cached = {
            let map = ctx.sessions.lock().unwrap_or_else(|p| p.into_inner());
            map.get(&peer.sni).cloned()
        };
        if let Some(session) = cached {
            // SAFETY: the session came from this same context.
            unsafe {
                let _ = ssl.set_session(&session);
            }
        }
        let start = Instant::now();
        let shake = crate::tls::stream::connect(ssl, TlsSocket::new(stream));
        let s = match pingora_timeout::timeout(peer.handshake_timeout, shake).await {
            Err(_) => {
                return Error::e_explain(
                    TLSHandshakeTimedout,
                    "TLS handshake to upstream timed out",
                )
                .map_err(|e| e.into_up())
            }
            Ok(Err(f)) => return Err(handshake_error(f).into_up()),
            Ok(Ok(s)) => s,
        };
        if peer.verify_cert && peer.verify_hostname {
            let cert = s
                .ssl()
                .peer_certificate()
                .or_err(InvalidCert, "upstream sent no certificate")
                .map_err(|e| e.into_up())?;
            let ok = (!peer.sni.is_empty() && name_matches(&cert, &peer.sni))
                || peer
                    .alternative_cn
                    .as_deref()
                    .is_some_and(|alt| name_matches(&cert, alt));
            if !ok {
                return Err(Error::explain(
                    CertHostnameMismatch,
                    format!(
                        "upstream certificate does not name {:?}{}",
                        peer.sni,
                        peer.alternative_cn
                            .as_deref()
                            .map(|a| format!(" or {a:?}"))
                            .unwrap_or_default()
                    ),
                )
                .into_up());
            }
        }
        Ok(SslStream::new(s, start.elapsed()))
    }
}

/// `X509_V_ERR_*` codes, the same in OpenSSL and BoringSSL.
fn handshake_error(f: HandshakeFailure) -> Box<Error> {
    let (kind, what): (ErrorType, &str) = match f.verify_code {
        Some(9 | 10) => (CertExpired, "upstream certificate expired or not yet valid"),
        Some(2 | 18 | 19 | 20 | 21 | 27) => (
            CertUnknownCA,
            "upstream certificate not signed by a trusted CA",
        ),
        Some(62) => (
            CertHostnameMismatch,
            "upstream certificate names another host",
        ),
        Some(_) => (InvalidCert, "upstream certificate failed verification"),
        None => (TLSHandshakeFailure, "TLS handshake to upstream failed"),
    };
    Error::because(kind, what, f)
}

/// Whether `cert` is for `name`: a DNS SAN (with `*.` matching exactly one
/// leftmost label) or an IP SAN; the subject CN only when there is no SAN.
pub fn name_matches(cert: &X509Ref, name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let ip: Option<IpAddr> = name.parse().ok();
    if let Some(sans) = cert.subject_alt_names() {
        if sans.iter().next().is_some() {
            return sans
                .iter()
                .any(|san| match (ip, san.dnsname(), san.ipaddress()) {
                    (Some(ip), _, Some(raw)) => ip_bytes(&ip) == raw,
                    (None, Some(dns), _) => dns_matches(dns, &name),
                    _ => false,
                });
        }
    }
    if ip.is_some() {
        return false;
    }
    cert.subject_name()
        .entries_by_nid(crate::tls::nid::Nid::COMMONNAME)
        .any(|e| {
            #[allow(deprecated)] // `to_string` is not in BoringSSL's binding
            let cn = e.data().as_utf8();
            cn.is_ok_and(|cn| dns_matches(&cn, &name))
        })
}

fn ip_bytes(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn dns_matches(pattern: &str, name: &str) -> bool {
    let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(rest) => match name.split_once('.') {
            // The wildcard covers one non-empty label, and never a bare
            // suffix such as `*.com`.
            Some((label, tail)) => !label.is_empty() && tail == rest && rest.contains('.'),
            None => false,
        },
        None => pattern == name,
    }
}

#[cfg(test)]
mod tests {
    use super::{dns_matches, TlsConnector, TlsPeer, MAX_CONTEXTS};

    #[test]
    fn contexts_are_an_lru_with_a_cap() {
        // A CA in memory (no system store to load), and one context per
        // distinct ALPN list.
        let ca = crate::utils::certs::TestCa::new("cap.test").unwrap();
        let pem: std::sync::Arc<[u8]> = std::sync::Arc::from(ca.ca.cert_pem().as_bytes());
        let c = TlsConnector::new(None);
        let peer = |i: usize| {
            let mut p = TlsPeer::new("cap.test");
            p.ca_pem = Some(pem.clone());
            p.alpn = vec![format!("p{i}").into_bytes()];
            p
        };
        let first = c.ctx(&peer(0)).unwrap();
        for i in 1..MAX_CONTEXTS + 10 {
            c.ctx(&peer(i)).unwrap();
            // Keep the first one in use: it is never the least recent.
            assert!(std::sync::Arc::ptr_eq(&first, &c.ctx(&peer(0)).unwrap()));
        }
        assert_eq!(c.context_count(), MAX_CONTEXTS);
        // The oldest unused ones went: asking again builds anew.
        let again = c.ctx(&peer(1)).unwrap();
        assert_eq!(c.context_count(), MAX_CONTEXTS);
        assert!(std::sync::Arc::ptr_eq(&again, &c.ctx(&peer(1)).unwrap()));
    }

    #[test]
    fn wildcards() {
        assert!(dns_matches("example.com", "example.com"));
        assert!(dns_matches("Example.COM.", "example.com"));
        assert!(dns_matches("*.example.com", "a.example.com"));
        assert!(!dns_matches("*.example.com", "a.b.example.com"));
        assert!(!dns_matches("*.example.com", "example.com"));
        assert!(!dns_matches("*.com", "example.com"));
        assert!(!dns_matches("a.example.com", "b.example.com"));
    }
}
