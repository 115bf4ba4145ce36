//! The PROXY protocol (v1 text and v2 binary), as HAProxy specifies it: a
//! header a load balancer sends first on a connection to say who the
//! original client was.
//!
//! A listener with the PROXY protocol on ([`Listeners::enable_proxy_protocol`])
//! reads the header on accept, before any TLS handshake; the stream's
//! [`SocketDigest`] then carries it, and
//! [`SocketDigest::client_addr`] is the original client's address. A
//! missing, malformed or too slow header closes the connection with a
//! logged reason.
//!
//! To send one to an upstream, set [`PeerOptions::proxy_protocol`]; the
//! connector writes it first on each new connection.
//!
//! [`Listeners::enable_proxy_protocol`]: crate::listeners::Listeners::enable_proxy_protocol
//! [`SocketDigest`]: super::SocketDigest
//! [`SocketDigest::client_addr`]: super::SocketDigest::client_addr
//! [`PeerOptions::proxy_protocol`]: crate::upstreams::peer::PeerOptions::proxy_protocol

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use pingora_error::{Error, ErrorType, OrErr, Result};
use tokio::io::AsyncReadExt;

use super::{L4Stream, SocketAddr};

/// The 12 bytes every v2 header starts with.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 header, CRLF included.
pub const V1_MAX_LEN: usize = 107;
/// The longest v2 header accepted (signature and length included). The
/// address block and the TLVs a balancer sends are far smaller.
pub const V2_MAX_LEN: usize = 16 + 4096;
/// How long a client has to send the header, by default.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Which PROXY protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyVersion {
    /// The text form: `PROXY TCP4 1.2.3.4 5.6.7.8 1234 80\r\n`.
    V1,
    /// The binary form, with optional TLVs.
    V2,
}

/// A PROXY protocol header: the original connection's addresses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProxyHeader {
    /// The version it came in (or goes out) as.
    pub version: ProxyVersion,
    /// The original client. `None` for v1 `UNKNOWN`, v2 `LOCAL` or an
    /// unspecified family: the sender speaks for itself, and the socket's
    /// own peer address is the client.
    pub source: Option<SocketAddr>,
    /// The address the client connected to, when given.
    pub destination: Option<SocketAddr>,
    /// v2 type-length-value extensions, as sent (type, value).
    pub tlvs: Vec<(u8, Vec<u8>)>,
}

/// Why a header was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn bad<T>(why: impl Into<String>) -> std::result::Result<T, ParseError> {
    Err(ParseError(why.into()))
}

impl ProxyHeader {
    /// A header naming `source` → `destination`.
    pub fn new(
        version: ProxyVersion,
        source: std::net::SocketAddr,
        destination: std::net::SocketAddr,
    ) -> Self {
        ProxyHeader {
            version,
            source: Some(source.into()),
            destination: Some(destination.into()),
            tlvs: vec![],
        }
    }

    /// A header for a connection made on behalf of the client described by
    /// `digest`: its original client (from a PROXY header it came with, or
    /// its peer) and the address it reached. `None` when the digest has no
    /// internet addresses (a Unix-socket client with v1).
    pub fn for_client(version: ProxyVersion, digest: &super::SocketDigest) -> Option<Self> {
        let src = digest.client_addr()?.clone();
        let dst = digest
            .proxy
            .as_ref()
            .and_then(|p| p.destination.clone())
            .or_else(|| digest.local_addr.clone())?;
        if version == ProxyVersion::V1 && (src.as_inet().is_none() || dst.as_inet().is_none()) {
            return None;
        }
        Some(ProxyHeader {
            version,
            source: Some(src),
            destination: Some(dst),
            tlvs: vec![],
        })
    }

    /// Parse a header at the start of `buf`. `Ok(None)`: not enough bytes
    /// yet to tell; `Ok(Some((header, len)))`: a header of `len` bytes;
    /// `Err`: not a valid header (missing or malformed).
    ///
    /// # Errors
    ///
    /// A [`ParseError`] saying why, once the bytes cannot start a header:
    /// neither the v1 text nor the v2 signature, or a malformed v1 line or v2
    /// block (too long, an unknown version, command, family or protocol, a bad
    /// address or length).
    pub fn parse(buf: &[u8]) -> std::result::Result<Option<(Self, usize)>, ParseError> {
        const V1_PREFIX: &[u8] = b"PROXY ";
        let n = buf.len().min(V1_PREFIX.len());
        if buf[..n] == V1_PREFIX[..n] {
            return if buf.len() < V1_PREFIX.len() {
                Ok(None)
            } else {
                parse_v1(buf)
            };
        }
        let n = buf.len().min(V2_SIGNATURE.len());
        if buf[..n] == V2_SIGNATURE[..n] {
            return parse_v2(buf);
        }
        bad("no PROXY protocol header (neither v1 text nor the v2 signature)")
    }

    /// The header as sent on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self.version {
            ProxyVersion::V1 => self.v1_bytes(),
            ProxyVersion::V2 => self.v2_bytes(),
        }
    }

    fn inet_pair(&self) -> Option<(std::net::SocketAddr, std::net::SocketAddr)> {
        let s = *self.source.as_ref()?.as_inet()?;
        let d = *self.destination.as_ref()?.as_inet()?;
        // Both in one family: an IPv4 address beside an IPv6 one is sent
        // as IPv4-mapped IPv6.
        let v6 = |a: std::net::SocketAddr| match a.ip() {
            IpAddr::V4(ip) => std::net::SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), a.port()),
            IpAddr::V6(_) => a,
        };
        Some(if s.is_ipv4() == d.is_ipv4() {
            (s, d)
        } else {
            (v6(s), v6(d))
        })
    }

    fn v1_bytes(&self) -> Vec<u8> {
        match self.inet_pair() {
            Some((s, d)) => format!(
                "PROXY {} {} {} {} {}\r\n",
                if s.is_ipv4() { "TCP4" } else { "TCP6" },
                s.ip(),
                d.ip(),
                s.port(),
                d.port()
            )
            .into_bytes(),
            None => b"PROXY UNKNOWN\r\n".to_vec(),
        }
    }

    fn v2_bytes(&self) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        let mut body = Vec::new();
        let (cmd, fam) = match (self.inet_pair(), &self.source, &self.destination) {
            (Some((s, d)), _, _) => {
                match (s.ip(), d.ip()) {
                    (IpAddr::V4(a), IpAddr::V4(b)) => {
                        body.extend_from_slice(&a.octets());
                        body.extend_from_slice(&b.octets());
                    }
                    (IpAddr::V6(a), IpAddr::V6(b)) => {
                        body.extend_from_slice(&a.octets());
                        body.extend_from_slice(&b.octets());
                    }
                    _ => unreachable!("inet_pair gives one family"),
                }
                body.extend_from_slice(&s.port().to_be_bytes());
                body.extend_from_slice(&d.port().to_be_bytes());
                (0x21, if s.is_ipv4() { 0x11 } else { 0x21 })
            }
            (None, Some(SocketAddr::Unix(s)), Some(SocketAddr::Unix(d))) => {
                for p in [s, d] {
                    let mut field = [0u8; 108];
                    if let Some(p) = p {
                        let b = p.as_os_str().as_encoded_bytes();
                        let n = b.len().min(107);
                        field[..n].copy_from_slice(&b[..n]);
                    }
                    body.extend_from_slice(&field);
                }
                (0x21, 0x31)
            }
            // Nothing to say about the client: LOCAL, unspecified family.
            _ => (0x20, 0x00),
        };
        for (t, v) in &self.tlvs {
            body.push(*t);
            body.extend_from_slice(&(v.len() as u16).to_be_bytes());
            body.extend_from_slice(v);
        }
        out.push(cmd);
        out.push(fam);
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }
}

fn parse_port(s: &str) -> std::result::Result<u16, ParseError> {
    // Decimal, 1-5 digits, no sign, no leading zero (the spec's form).
    let ok = !s.is_empty()
        && s.len() <= 5
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'));
    match s.parse::<u16>() {
        Ok(p) if ok => Ok(p),
        _ => bad(format!("bad port {s:?} in PROXY v1 header")),
    }
}

fn parse_v1(buf: &[u8]) -> std::result::Result<Option<(ProxyHeader, usize)>, ParseError> {
    let limit = buf.len().min(V1_MAX_LEN);
    let Some(cr) = buf[..limit].iter().position(|&b| b == b'\r') else {
        if buf.len() >= V1_MAX_LEN {
            return bad("PROXY v1 header longer than 107 bytes");
        }
        if let Some(b) = buf
            .iter()
            .find(|b| **b == b'\n' || !(0x20..0x7f).contains(*b))
        {
            return bad(format!("byte 0x{b:02x} in PROXY v1 header"));
        }
        return Ok(None);
    };
    match buf.get(cr + 1) {
        None => return Ok(None),
        Some(b'\n') => {}
        Some(_) => return bad("PROXY v1 header: CR not followed by LF"),
    }
    let line = std::str::from_utf8(&buf[..cr])
        .ok()
        .filter(|l| l.bytes().all(|b| (0x20..0x7f).contains(&b)))
        .ok_or_else(|| ParseError("PROXY v1 header is not printable ASCII".into()))?;
    let len = cr + 2;
    let parts: Vec<&str> = line.split(' ').collect();
    let unknown = |len| {
        Ok(Some((
            ProxyHeader {
                version: ProxyVersion::V1,
                source: None,
                destination: None,
                tlvs: vec![],
            },
            len,
        )))
    };
    match parts.get(1).copied() {
        // Anything may follow UNKNOWN; the receiver ignores it.
        Some("UNKNOWN") => unknown(len),
        Some(proto @ ("TCP4" | "TCP6")) => {
            if parts.len() != 6 {
                return bad(format!(
                    "PROXY v1 {proto} header needs 4 fields after the protocol, got {:?}",
                    line
                ));
            }
            let ip = |s: &str| -> std::result::Result<IpAddr, ParseError> {
                let ip = if proto == "TCP4" {
                    s.parse::<Ipv4Addr>().map(IpAddr::V4).ok()
                } else {
                    s.parse::<Ipv6Addr>().map(IpAddr::V6).ok()
                };
                ip.ok_or_else(|| {
                    ParseError(format!("bad {proto} address {s:?} in PROXY v1 header"))
                })
            };
            let src = std::net::SocketAddr::new(ip(parts[2])?, parse_port(parts[4])?);
            let dst = std::net::SocketAddr::new(ip(parts[3])?, parse_port(parts[5])?);
            Ok(Some((ProxyHeader::new(ProxyVersion::V1, src, dst), len)))
        }
        other => bad(format!("unknown PROXY v1 protocol {other:?}")),
    }
}

fn unix_path(b: &[u8]) -> SocketAddr {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    if end == 0 {
        return SocketAddr::Unix(None);
    }
    let s = std::ffi::OsStr::from_bytes(&b[..end]);
    SocketAddr::Unix(Some(s.into()))
}

use std::os::unix::ffi::OsStrExt;

fn parse_v2(buf: &[u8]) -> std::result::Result<Option<(ProxyHeader, usize)>, ParseError> {
    if buf.len() < 16 {
        return Ok(None);
    }
    let ver_cmd = buf[12];
    if ver_cmd >> 4 != 2 {
        return bad(format!("PROXY v2 header with version {}", ver_cmd >> 4));
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        c => return bad(format!("PROXY v2 header with unknown command {c}")),
    };
    let fam = buf[13];
    let body_len = u16::from_be_bytes([buf[14], buf[15]]) as usize;
    if 16 + body_len > V2_MAX_LEN {
        return bad(format!(
            "PROXY v2 header of {} bytes is longer than the {V2_MAX_LEN} accepted",
            16 + body_len
        ));
    }
    let len = 16 + body_len;
    if buf.len() < len {
        return Ok(None);
    }
    let body = &buf[16..len];
    let addr_len = match fam >> 4 {
        0 => 0,
        1 => 12,
        2 => 36,
        3 => 216,
        f => return bad(format!("PROXY v2 header with unknown address family {f}")),
    };
    if !matches!(fam & 0x0f, 0..=2) {
        return bad(format!(
            "PROXY v2 header with unknown transport {}",
            fam & 0x0f
        ));
    }
    if body.len() < addr_len {
        return bad(format!(
            "PROXY v2 address block of {} bytes, family 0x{fam:02x} needs {addr_len}",
            body.len()
        ));
    }
    let (source, destination) = match fam >> 4 {
        _ if local => (None, None),
        0 => (None, None),
        1 => {
            let ip = |o: usize| {
                IpAddr::V4(Ipv4Addr::new(
                    body[o],
                    body[o + 1],
                    body[o + 2],
                    body[o + 3],
                ))
            };
            let port = |o: usize| u16::from_be_bytes([body[o], body[o + 1]]);
            (
                Some(std::net::SocketAddr::new(ip(0), port(8)).into()),
                Some(std::net::SocketAddr::new(ip(4), port(10)).into()),
            )
        }
        2 => {
            let ip = |o: usize| {
                let mut b = [0u8; 16];
                b.copy_from_slice(&body[o..o + 16]);
                IpAddr::V6(Ipv6Addr::from(b))
            };
            let port = |o: usize| u16::from_be_bytes([body[o], body[o + 1]]);
            (
                Some(std::net::SocketAddr::new(ip(0), port(32)).into()),
                Some(std::net::SocketAddr::new(ip(16), port(34)).into()),
            )
        }
        _ => (
            Some(unix_path(&body[..108])),
            Some(unix_path(&body[108..216])),
        ),
    };
    let mut tlvs = vec![];
    let mut rest = &body[addr_len..];
    while !rest.is_empty() {
        if rest.len() < 3 {
            return bad("PROXY v2 header: truncated TLV");
        }
        let t = rest[0];
        let l = u16::from_be_bytes([rest[1], rest[2]]) as usize;
        if rest.len() < 3 + l {
            return bad(format!(
                "PROXY v2 header: TLV 0x{t:02x} runs past the header"
            ));
        }
        tlvs.push((t, rest[3..3 + l].to_vec()));
        rest = &rest[3 + l..];
    }
    Ok(Some((
        ProxyHeader {
            version: ProxyVersion::V2,
            source,
            destination,
            tlvs,
        },
        len,
    )))
}

/// Read a PROXY header from the start of a newly accepted stream, within
/// `timeout`, and record it in the stream's digest. Bytes read past the
/// header stay in the stream for whoever reads next (the TLS handshake or
/// the app). An `Err` says why the connection must be closed.
///
/// # Errors
///
/// `InvalidHTTPHeader` if the bytes are not a valid header (the reason from
/// [`ProxyHeader::parse`]); `ReadTimedout` if no whole header comes within
/// `timeout`; `ReadError` if the read fails; `ConnectionClosed` if the client
/// closes first.
pub async fn accept(stream: &mut L4Stream, timeout: Duration) -> Result<()> {
    let read = async {
        let mut buf = Vec::with_capacity(256);
        loop {
            match ProxyHeader::parse(&buf) {
                Ok(Some((h, len))) => {
                    let rest = buf.split_off(len);
                    stream.unread(rest);
                    stream.set_proxy_header(h);
                    return Ok(());
                }
                Ok(None) => {}
                Err(e) => {
                    return Error::e_explain(ErrorType::InvalidHTTPHeader, e.to_string());
                }
            }
            // Read only what is needed to decide (at most the rest of the
            // longest possible header); anything past it is given back.
            let want = if buf.len() >= 16 && buf.starts_with(&V2_SIGNATURE) {
                16 + u16::from_be_bytes([buf[14], buf[15]]) as usize - buf.len()
            } else {
                (V1_MAX_LEN + 1).saturating_sub(buf.len()).max(1)
            };
            let start = buf.len();
            buf.resize(start + want, 0);
            let n = stream
                .read(&mut buf[start..])
                .await
                .or_err(ErrorType::ReadError, "reading the PROXY protocol header")?;
            buf.truncate(start + n);
            if n == 0 {
                let what = if start == 0 {
                    "closed before sending a PROXY protocol header".to_string()
                } else {
                    format!("closed after {start} bytes of a PROXY protocol header")
                };
                return Error::e_explain(ErrorType::ConnectionClosed, what);
            }
        }
    };
    match pingora_timeout::timeout(timeout, read).await {
        Ok(r) => r,
        Err(_) => Error::e_explain(
            ErrorType::ReadTimedout,
            format!("no complete PROXY protocol header within {timeout:?}"),
        ),
    }
}

#[cfg(test)]
mod tests;
