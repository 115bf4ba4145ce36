//! Connection filters: whether to serve a connection, by its peer address,
//! before anything is read from it.

use pingora_error::{ErrorType, OkOrErr, OrErr, Result};

/// Decides, right after accept and before any byte is read (so before a
/// TLS handshake), whether to serve a connection, by its peer address.
///
/// `addr` is `None` for a Unix-socket peer. A refused connection is
/// closed at once.
#[async_trait::async_trait]
pub trait ConnectionFilter: std::fmt::Debug + Send + Sync {
    /// Serve a connection from `addr`?
    async fn should_accept(&self, addr: Option<&std::net::SocketAddr>) -> bool;
}

/// A [`ConnectionFilter`] by address ranges, like nginx's `allow` and
/// `deny`: rules are checked in order, the first that matches decides, and
/// an address no rule matches gets the default.
///
/// ```
/// use pingora_core::listeners::AddressFilter;
/// // Only loopback and 10.0.0.0/8, except 10.0.0.1.
/// let f = AddressFilter::new(false)
///     .deny("10.0.0.1")
///     .unwrap()
///     .allow("127.0.0.0/8")
///     .unwrap()
///     .allow("10.0.0.0/8")
///     .unwrap();
/// assert!(f.allows(Some(&"10.2.3.4:80".parse().unwrap())));
/// assert!(!f.allows(Some(&"10.0.0.1:80".parse().unwrap())));
/// assert!(!f.allows(Some(&"192.0.2.1:80".parse().unwrap())));
/// ```
#[derive(Debug, Clone)]
pub struct AddressFilter {
    rules: Vec<(std::net::IpAddr, u8, bool)>,
    default_allow: bool,
}

impl AddressFilter {
    /// No rules yet; addresses no rule matches are allowed if
    /// `default_allow`.
    pub fn new(default_allow: bool) -> Self {
        AddressFilter {
            rules: vec![],
            default_allow,
        }
    }

    fn rule(mut self, cidr: &str, allow: bool) -> Result<Self> {
        let (ip, len) = match cidr.split_once('/') {
            Some((ip, len)) => (ip, Some(len)),
            None => (cidr, None),
        };
        let ip: std::net::IpAddr = ip.parse().or_err_with(ErrorType::InvalidInput, || {
            format!("bad address range {cidr:?}")
        })?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .or_err_with(ErrorType::InvalidInput, || {
                    format!("bad prefix length in address range {cidr:?}")
                })?,
        };
        self.rules.push((ip, len, allow));
        Ok(self)
    }

    /// Allow `cidr` (`10.0.0.0/8`, `::1`, `2001:db8::/32`).
    ///
    /// # Errors
    ///
    /// `InvalidInput` if the address does not parse, or the prefix length is
    /// not a number up to 32 (IPv4) or 128 (IPv6).
    pub fn allow(self, cidr: &str) -> Result<Self> {
        self.rule(cidr, true)
    }

    /// Deny `cidr`.
    ///
    /// # Errors
    ///
    /// `InvalidInput` as for [`allow`](Self::allow).
    pub fn deny(self, cidr: &str) -> Result<Self> {
        self.rule(cidr, false)
    }

    /// The decision for `addr` (`None`: a Unix-socket peer, which gets the
    /// default).
    pub fn allows(&self, addr: Option<&std::net::SocketAddr>) -> bool {
        let Some(addr) = addr else {
            return self.default_allow;
        };
        // An IPv4-mapped IPv6 peer is matched as IPv4.
        let ip = match addr.ip() {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr.ip(), std::net::IpAddr::V4),
            v4 => v4,
        };
        for (net, len, allow) in &self.rules {
            let hit = match (net, ip) {
                (std::net::IpAddr::V4(n), std::net::IpAddr::V4(a)) => {
                    prefix_eq(&n.octets(), &a.octets(), *len)
                }
                (std::net::IpAddr::V6(n), std::net::IpAddr::V6(a)) => {
                    prefix_eq(&n.octets(), &a.octets(), *len)
                }
                _ => false,
            };
            if hit {
                return *allow;
            }
        }
        self.default_allow
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let full = (bits / 8) as usize;
    if a[..full] != b[..full] {
        return false;
    }
    let rest = bits % 8;
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        a[full] & mask == b[full] & mask
    }
}

#[async_trait::async_trait]
impl ConnectionFilter for AddressFilter {
    async fn should_accept(&self, addr: Option<&std::net::SocketAddr>) -> bool {
        self.allows(addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_filter_rules() {
        let f = AddressFilter::new(true)
            .deny("192.0.2.0/25")
            .unwrap()
            .deny("2001:db8::/32")
            .unwrap();
        let ok = |s: &str| f.allows(Some(&s.parse().unwrap()));
        assert!(!ok("192.0.2.1:1"));
        assert!(!ok("192.0.2.127:1"));
        assert!(ok("192.0.2.128:1"));
        assert!(!ok("[2001:db8:1::5]:1"));
        assert!(ok("[2001:db9::5]:1"));
        // IPv4-mapped IPv6 is matched as IPv4.
        assert!(!ok("[::ffff:192.0.2.9]:1"));
        assert!(f.allows(None));
        let all = AddressFilter::new(false).allow("0.0.0.0/0").unwrap();
        assert!(all.allows(Some(&"8.8.8.8:1".parse().unwrap())));
        assert!(!all.allows(Some(&"[::2]:1".parse().unwrap())));
        for bad in ["10.0.0.0/33", "::/129", "nonsense", "10.0.0.0/x"] {
            let e = AddressFilter::new(true).allow(bad).unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
    }
}
