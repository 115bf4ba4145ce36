//! DNS discovery: A/AAAA records of a name (with a fixed port), or SRV
//! records (each target's port and weight), asked of a resolver over UDP
//! each time the load balancer updates.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use async_trait::async_trait;
use pingora_error::{Error, ErrorType::*, OrErr, Result};
use tokio::net::UdpSocket;

use super::ServiceDiscovery;
use crate::Backend;

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const TYPE_SRV: u16 = 33;

/// What to look up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsQuery {
    /// A and AAAA records of a name; every address gets this port.
    Host {
        /// The name.
        name: String,
        /// The port of every backend.
        port: u16,
    },
    /// SRV records (`_service._proto.name`): each target, with its port and
    /// weight; only the lowest priority value is used.
    Srv {
        /// The SRV name.
        name: String,
    },
}

/// Names the type; its state is not shown.
impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dns").finish_non_exhaustive()
    }
}

/// Backends from DNS.
pub struct Dns {
    query: DnsQuery,
    resolver: SocketAddr,
    timeout: Duration,
}

impl Dns {
    /// Look `query` up at `resolver` (a DNS server's address).
    pub fn new(query: DnsQuery, resolver: SocketAddr) -> Box<Self> {
        Box::new(Dns {
            query,
            resolver,
            timeout: Duration::from_secs(2),
        })
    }

    /// Look `query` up at the first `nameserver` of `/etc/resolv.conf`.
    pub fn with_system_resolver(query: DnsQuery) -> Result<Box<Self>> {
        let conf = std::fs::read_to_string("/etc/resolv.conf")
            .or_err(FileReadError, "reading /etc/resolv.conf")?;
        let ip: IpAddr = conf
            .lines()
            .filter_map(|l| l.trim().strip_prefix("nameserver"))
            .find_map(|v| v.trim().parse().ok())
            .ok_or_else(|| Error::explain(ConfError, "no nameserver in /etc/resolv.conf"))?;
        Ok(Self::new(query, SocketAddr::new(ip, 53)))
    }

    /// Time allowed for each query (2 s by default).
    pub fn set_timeout(&mut self, t: Duration) {
        self.timeout = t;
    }

    async fn ask(&self, name: &str, qtype: u16) -> Result<Vec<Record>> {
        let bind: SocketAddr = if self.resolver.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let sock = UdpSocket::bind(bind)
            .await
            .or_err(SocketError, "DNS socket")?;
        let id = (crate::selection::random_u64() & 0xffff) as u16;
        let q = query(id, name, qtype)?;
        sock.send_to(&q, self.resolver)
            .await
            .or_err(WriteError, "sending a DNS query")?;
        let mut buf = vec![0u8; 4096];
        let exchange = async {
            loop {
                let (n, from) = sock
                    .recv_from(&mut buf)
                    .await
                    .or_err(ReadError, "DNS reply")?;
                // Only the resolver's answer to this query counts.
                if from == self.resolver && n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
                    return parse(&buf[..n]);
                }
            }
        };
        match pingora_timeout::timeout(self.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Error::e_explain(ReadTimedout, format!("no DNS answer for {name}")),
        }
    }

    async fn addresses(&self, name: &str) -> Result<Vec<IpAddr>> {
        let mut out = Vec::new();
        for qtype in [TYPE_A, TYPE_AAAA] {
            for r in self.ask(name, qtype).await? {
                if let Record::Addr(n, ip) = r {
                    if n.eq_ignore_ascii_case(name.trim_end_matches('.')) {
                        out.push(ip);
                    }
                }
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl ServiceDiscovery for Dns {
    async fn discover(&self) -> Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let mut set = BTreeSet::new();
        match &self.query {
            DnsQuery::Host { name, port } => {
                for ip in self.addresses(name).await? {
                    set.insert(backend(SocketAddr::new(ip, *port), 1)?);
                }
            }
            DnsQuery::Srv { name } => {
                let records = self.ask(name, TYPE_SRV).await?;
                // Addresses given in the same answer, by name.
                let mut known: HashMap<String, Vec<IpAddr>> = HashMap::new();
                for r in &records {
                    if let Record::Addr(n, ip) = r {
                        known.entry(n.to_ascii_lowercase()).or_default().push(*ip);
                    }
                }
                let srv: Vec<&Record> = records
                    .iter()
                    .filter(|r| matches!(r, Record::Srv { .. }))
                    .collect();
                let best = srv
                    .iter()
                    .filter_map(|r| match r {
                        Record::Srv { priority, .. } => Some(*priority),
                        _ => None,
                    })
                    .min();
                for r in srv {
                    let Record::Srv {
                        priority,
                        weight,
                        port,
                        target,
                    } = r
                    else {
                        continue;
                    };
                    if Some(*priority) != best {
                        continue;
                    }
                    let ips = match known.get(&target.to_ascii_lowercase()) {
                        Some(ips) => ips.clone(),
                        None => self.addresses(target).await?,
                    };
                    for ip in ips {
                        set.insert(backend(
                            SocketAddr::new(ip, *port),
                            (*weight).max(1) as usize,
                        )?);
                    }
                }
            }
        }
        Ok((set, HashMap::new()))
    }
}

fn backend(addr: SocketAddr, weight: usize) -> Result<Backend> {
    Backend::new_with_weight(&addr.to_string(), weight)
}

/// A record we use.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Record {
    Addr(String, IpAddr),
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: String,
    },
    Other,
}

/// A standard query for `name`, type `qtype`, recursion desired.
fn query(id: u16, name: &str, qtype: u16) -> Result<Vec<u8>> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Error::e_explain(InvalidInput, format!("invalid DNS name {name:?}"));
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    Ok(q)
}

fn bad(what: &'static str) -> Box<Error> {
    Error::explain(InvalidInput, what)
}

/// Read a (possibly compressed) name at `pos`; returns it and the position
/// after it in the original stream.
fn read_name(msg: &[u8], mut pos: usize) -> Result<(String, usize)> {
    let mut labels: Vec<String> = Vec::new();
    let mut end = None;
    for _ in 0..128 {
        let len = *msg
            .get(pos)
            .ok_or_else(|| bad("DNS name runs past the message"))? as usize;
        if len == 0 {
            return Ok((labels.join("."), end.unwrap_or(pos + 1)));
        }
        if len & 0xc0 == 0xc0 {
            let lo = *msg
                .get(pos + 1)
                .ok_or_else(|| bad("truncated DNS pointer"))? as usize;
            end.get_or_insert(pos + 2);
            pos = ((len & 0x3f) << 8) | lo;
            continue;
        }
        let label = msg
            .get(pos + 1..pos + 1 + len)
            .ok_or_else(|| bad("truncated DNS label"))?;
        labels.push(String::from_utf8_lossy(label).into_owned());
        pos += 1 + len;
    }
    Err(bad("DNS name with too many labels or a pointer loop"))
}

fn u16_at(msg: &[u8], pos: usize) -> Result<u16> {
    msg.get(pos..pos + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or_else(|| bad("truncated DNS message"))
}

/// Every record in the answer and additional sections.
fn parse(msg: &[u8]) -> Result<Vec<Record>> {
    if msg.len() < 12 {
        return Err(bad("DNS message too short"));
    }
    let rcode = msg[3] & 0x0f;
    if rcode == 3 {
        return Ok(vec![]); // NXDOMAIN: no backends
    }
    if rcode != 0 {
        return Error::e_explain(InvalidInput, format!("DNS error code {rcode}"));
    }
    let qd = u16_at(msg, 4)? as usize;
    let records = u16_at(msg, 6)? as usize + u16_at(msg, 8)? as usize + u16_at(msg, 10)? as usize;
    let mut pos = 12;
    for _ in 0..qd {
        pos = read_name(msg, pos)?.1 + 4;
    }
    let mut out = Vec::with_capacity(records);
    for _ in 0..records {
        let (name, p) = read_name(msg, pos)?;
        let rtype = u16_at(msg, p)?;
        let rdlen = u16_at(msg, p + 8)? as usize;
        let rdata = p + 10;
        let data = msg
            .get(rdata..rdata + rdlen)
            .ok_or_else(|| bad("truncated DNS record"))?;
        out.push(match (rtype, rdlen) {
            (TYPE_A, 4) => Record::Addr(
                name,
                IpAddr::from(<[u8; 4]>::try_from(data).unwrap_or_default()),
            ),
            (TYPE_AAAA, 16) => Record::Addr(
                name,
                IpAddr::from(<[u8; 16]>::try_from(data).unwrap_or_default()),
            ),
            (TYPE_SRV, 7..) => Record::Srv {
                priority: u16_at(msg, rdata)?,
                weight: u16_at(msg, rdata + 2)?,
                port: u16_at(msg, rdata + 4)?,
                target: read_name(msg, rdata + 6)?.0,
            },
            _ => Record::Other,
        });
        pos = rdata + rdlen;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_and_hostile_replies() {
        let q = query(7, "a.example.", TYPE_A).unwrap();
        assert_eq!(&q[12..], b"\x01a\x07example\x00\x00\x01\x00\x01");
        assert!(query(1, "a..b", TYPE_A).is_err());
        // A pointer to itself must not loop.
        let mut m = vec![0, 7, 0x81, 0x80, 0, 0, 0, 1, 0, 0, 0, 0];
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 1, 2, 3, 4]);
        assert!(parse(&m).is_err());
        assert!(parse(&[0; 5]).is_err());
    }
}
