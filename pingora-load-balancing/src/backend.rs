//! Backends: where an upstream is, how much traffic it should get, and
//! whatever the user wants to attach to it.

use std::hash::{Hash, Hasher};

use pingora_core::protocols::SocketAddr;
use pingora_error::{Error, ErrorType::*, OrErr, Result};

/// One upstream server.
#[derive(Debug, Clone)]
pub struct Backend {
    /// Its address.
    pub addr: SocketAddr,
    /// Its share of the traffic relative to the others (at least 1).
    pub weight: usize,
    /// Anything the user attaches (e.g. the peer options to reach it).
    pub ext: http::Extensions,
}

impl Backend {
    /// A backend at `addr` (`host:port`, or `unix:/path`) with weight 1.
    ///
    /// # Errors
    ///
    /// `InvalidInput` if `addr` is neither `unix:/path` nor an `ip:port`
    /// socket address (a host name is not resolved).
    pub fn new(addr: &str) -> Result<Self> {
        Self::new_with_weight(addr, 1)
    }

    /// A backend at `addr` with this weight.
    ///
    /// # Errors
    ///
    /// `InvalidInput` if `addr` is neither `unix:/path` nor an `ip:port`
    /// socket address, or `weight` is 0.
    pub fn new_with_weight(addr: &str, weight: usize) -> Result<Self> {
        let addr = if let Some(path) = addr.strip_prefix("unix:") {
            SocketAddr::Unix(Some(path.into()))
        } else {
            let a: std::net::SocketAddr = addr
                .parse()
                .or_err_with(InvalidInput, || format!("invalid backend address {addr:?}"))?;
            SocketAddr::Inet(a)
        };
        if weight == 0 {
            return Error::e_explain(InvalidInput, format!("backend {addr} has weight 0"));
        }
        Ok(Backend {
            addr,
            weight,
            ext: http::Extensions::new(),
        })
    }

    /// A stable 64-bit hash of the address, the backend's identity: the
    /// same in every process and with every compiler (it hashes the
    /// address's bytes, not its `Hash` impl), so consistent hashing places
    /// keys the same way after a restart or an upgrade.
    pub fn hash_key(&self) -> u64 {
        let mut h = pingora_core::utils::KeyHasher::default();
        match &self.addr {
            SocketAddr::Inet(std::net::SocketAddr::V4(a)) => {
                h.write(&a.ip().octets());
                h.write_u16(a.port());
            }
            SocketAddr::Inet(std::net::SocketAddr::V6(a)) => {
                h.write(&a.ip().octets());
                h.write_u16(a.port());
            }
            SocketAddr::Unix(p) => {
                h.write(b"unix:");
                if let Some(p) = p {
                    h.write(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()));
                }
            }
        }
        h.finish()
    }
}

// Identity is the address and weight; `ext` is the user's payload.
impl PartialEq for Backend {
    fn eq(&self, other: &Self) -> bool {
        self.addr == other.addr && self.weight == other.weight
    }
}

impl Eq for Backend {}

impl Hash for Backend {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.addr.hash(state);
        self.weight.hash(state);
    }
}

impl PartialOrd for Backend {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Backend {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.addr.to_string(), self.weight).cmp(&(other.addr.to_string(), other.weight))
    }
}

/// FNV-1a, 64-bit: the hash of request keys for the hashing algorithms.
pub fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A fast mixer for 64-bit values (splitmix64's finalizer).
pub(crate) fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A backend is an address to connect to, as in Pingora:
/// `HttpPeer::new(backend, tls, sni)`. A Unix-socket backend resolves to
/// no internet address (an error); reach it with
/// `HttpPeer::new_from_sockaddr(backend.addr.clone(), ..)`.
impl std::net::ToSocketAddrs for Backend {
    type Iter = std::option::IntoIter<std::net::SocketAddr>;
    fn to_socket_addrs(&self) -> std::io::Result<Self::Iter> {
        match self.addr.as_inet() {
            Some(a) => Ok(Some(*a).into_iter()),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("backend {} is not an internet address", self.addr),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_weights() {
        let b = Backend::new_with_weight("127.0.0.1:80", 3).unwrap();
        assert_eq!(b.weight, 3);
        assert!(Backend::new("nonsense").is_err());
        assert!(Backend::new_with_weight("127.0.0.1:80", 0).is_err());
        assert!(matches!(
            Backend::new("unix:/tmp/s").unwrap().addr,
            SocketAddr::Unix(_)
        ));
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
