//! DNS discovery through `hickory-resolver`: A and AAAA records of a name
//! (with a fixed port), or SRV records (each target's port and weight).
//!
//! The resolver is the field's (not ours): it caches each answer for its
//! TTL, so the load balancer's updates ask the DNS server again only once
//! the records may have changed (TTL-driven refresh); it retries over TCP
//! when a UDP answer is truncated; and [`Dns::with_system_resolver`] reads
//! `/etc/resolv.conf` (name servers, search domains, `ndots`, timeouts).

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use async_trait::async_trait;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioResolver;
use pingora_error::{Error, ErrorType::*, Result};

use super::ServiceDiscovery;
use crate::Backend;

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
    /// Where the resolver comes from; it is built again when an option
    /// changes.
    config: ResolverConfig,
    options: ResolverOpts,
    resolver: TokioResolver,
}

/// The longest a negative answer (no such name, no records) is kept,
/// unless [`Dns::set_max_ttl`] says otherwise.
const NEGATIVE_MAX_TTL: Duration = Duration::from_secs(5);

/// The options we set on top of the resolver's (or resolv.conf's).
fn our_options(mut options: ResolverOpts) -> ResolverOpts {
    // Both families: a backend set is every address the name has.
    options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    // Backends come from DNS only, not from /etc/hosts.
    options.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
    // A "no such name" is asked again soon: kept for its zone's negative
    // TTL it could leave a service without backends for hours.
    options.negative_max_ttl = Some(NEGATIVE_MAX_TTL);
    options
}

impl Dns {
    /// Look `query` up at `resolver` (a DNS server's address), over UDP
    /// with TCP when an answer is truncated; 2 s per query.
    pub fn new(query: DnsQuery, resolver: SocketAddr) -> Box<Self> {
        let mut udp = ConnectionConfig::udp();
        udp.port = resolver.port();
        let mut tcp = ConnectionConfig::tcp();
        tcp.port = resolver.port();
        let server = NameServerConfig::new(resolver.ip(), true, vec![udp, tcp]);
        let config = ResolverConfig::from_parts(None, vec![], vec![server]);
        let mut options = our_options(ResolverOpts::default());
        options.timeout = Duration::from_secs(2);
        Box::new(Self::build(query, config, options))
    }

    /// Look `query` up as the system does: the name servers, search
    /// domains and options of `/etc/resolv.conf`.
    ///
    /// # Errors
    ///
    /// `ConfError` if the system's resolver configuration cannot be read or
    /// parsed.
    pub fn with_system_resolver(query: DnsQuery) -> Result<Box<Self>> {
        let (config, options) = hickory_resolver::system_conf::read_system_conf()
            .map_err(|e| Error::because(ConfError, "reading /etc/resolv.conf", e))?;
        Ok(Box::new(Self::build(query, config, our_options(options))))
    }

    fn build(query: DnsQuery, config: ResolverConfig, options: ResolverOpts) -> Self {
        let resolver = resolver(&config, &options);
        Dns {
            query,
            config,
            options,
            resolver,
        }
    }

    /// Time allowed for each query (2 s by default).
    pub fn set_timeout(&mut self, t: Duration) {
        self.options.timeout = t;
        self.resolver = resolver(&self.config, &self.options);
    }

    /// The longest an answer is kept, whatever its TTL (the TTL by default,
    /// up to a day): a bound on how long a removed backend stays in use.
    pub fn set_max_ttl(&mut self, ttl: Duration) {
        self.options.positive_max_ttl = Some(ttl);
        self.options.negative_max_ttl = Some(ttl);
        self.resolver = resolver(&self.config, &self.options);
    }

    /// Every address of `name` (none if it has none or does not exist).
    async fn addresses(&self, name: &str) -> Result<Vec<IpAddr>> {
        match self.resolver.lookup_ip(name).await {
            Ok(found) => Ok(found.iter().collect()),
            Err(e) => none_or_error(e, name),
        }
    }

    /// The SRV records of `name` with the lowest priority value, and the
    /// addresses the answer gave for their targets.
    async fn srv(&self, name: &str) -> Result<(Vec<Srv>, HashMap<String, Vec<IpAddr>>)> {
        let found = match self.resolver.lookup(name, RecordType::SRV).await {
            Ok(found) => found,
            Err(e) => return none_or_error::<()>(e, name).map(|_| (vec![], HashMap::new())),
        };
        let mut records = Vec::new();
        let mut known: HashMap<String, Vec<IpAddr>> = HashMap::new();
        for r in found.answers().iter().chain(found.additionals()) {
            let owner = || r.name.to_ascii().trim_end_matches('.').to_ascii_lowercase();
            match &r.data {
                RData::SRV(srv) => records.push(Srv {
                    priority: srv.priority,
                    weight: srv.weight,
                    port: srv.port,
                    target: srv
                        .target
                        .to_ascii()
                        .trim_end_matches('.')
                        .to_ascii_lowercase(),
                }),
                RData::A(a) => known.entry(owner()).or_default().push(IpAddr::V4(a.0)),
                RData::AAAA(a) => known.entry(owner()).or_default().push(IpAddr::V6(a.0)),
                _ => {}
            }
        }
        let best = records.iter().map(|r| r.priority).min();
        records.retain(|r| Some(r.priority) == best);
        Ok((records, known))
    }
}

/// A resolver with these settings.
fn resolver(config: &ResolverConfig, options: &ResolverOpts) -> TokioResolver {
    let mut builder =
        TokioResolver::builder_with_config(config.clone(), TokioRuntimeProvider::default());
    *builder.options_mut() = options.clone();
    builder
        .build()
        .expect("a resolver without TLS or DNSSEC settings always builds")
}

/// "No such name" and "no such records" mean no backends; anything else
/// (no answer, a server failure) is an error, so that the last good set
/// stays in use.
fn none_or_error<T>(e: NetError, name: &str) -> Result<Vec<T>> {
    if e.is_no_records_found() {
        return Ok(vec![]);
    }
    let kind = match &e {
        NetError::Timeout => ReadTimedout,
        _ => ConnectError,
    };
    Err(Error::because(kind, format!("DNS lookup of {name}"), e))
}

/// An SRV record we use.
struct Srv {
    priority: u16,
    weight: u16,
    port: u16,
    target: String,
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
                let (records, known) = self.srv(name).await?;
                for r in records {
                    // Addresses the answer gave; else asked for.
                    let ips = match known.get(&r.target) {
                        Some(ips) => ips.clone(),
                        None => self.addresses(&r.target).await?,
                    };
                    for ip in ips {
                        let weight = usize::from(r.weight.max(1));
                        set.insert(backend(SocketAddr::new(ip, r.port), weight)?);
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
