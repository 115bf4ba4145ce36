//! Where the backend list comes from: a static list (which can still be
//! changed at run time), DNS ([`Dns`]: A/AAAA, or SRV with weights and
//! ports), or the user's own [`ServiceDiscovery`].

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora_error::Result;

use crate::Backend;

#[cfg(feature = "dns")]
mod dns;
#[cfg(feature = "dns")]
#[cfg_attr(docsrs, doc(cfg(feature = "dns")))]
pub use dns::{Dns, DnsQuery};

/// A source of backends, asked again on the load balancer's update
/// interval, as Pingora's trait.
#[async_trait]
pub trait ServiceDiscovery: Send + Sync + 'static {
    /// The backends now, and which of them to enable (`true`) or disable
    /// (`false`), by [`Backend::hash_key`]; backends the map does not name
    /// keep their state (enabled when new). A disabled backend stays in the
    /// set but is never picked.
    async fn discover(&self) -> Result<(BTreeSet<Backend>, HashMap<u64, bool>)>;
}

/// Names the type; its state is not shown.
impl std::fmt::Debug for Static {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Static").finish_non_exhaustive()
    }
}

/// A fixed list that the program may replace while running.
#[derive(Default)]
pub struct Static {
    backends: ArcSwap<BTreeSet<Backend>>,
}

impl Static {
    /// A list of these backends.
    pub fn new(backends: BTreeSet<Backend>) -> Box<Self> {
        Box::new(Static {
            backends: ArcSwap::new(Arc::new(backends)),
        })
    }

    /// Parse `host:port` (or `unix:/path`) strings into a list.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for the first string that is not a valid backend
    /// address (see [`Backend::new`]).
    pub fn try_from_iter<A: AsRef<str>, I: IntoIterator<Item = A>>(addrs: I) -> Result<Box<Self>> {
        let set = addrs
            .into_iter()
            .map(|a| Backend::new(a.as_ref()))
            .collect::<Result<BTreeSet<_>>>()?;
        Ok(Self::new(set))
    }

    /// Replace the list; the next update picks it up.
    pub fn set(&self, backends: BTreeSet<Backend>) {
        self.backends.store(Arc::new(backends));
    }

    /// Add one backend.
    pub fn add(&self, backend: Backend) {
        self.backends.rcu(|b| {
            let mut b = BTreeSet::clone(b);
            b.insert(backend.clone());
            b
        });
    }

    /// Remove one backend.
    pub fn remove(&self, backend: &Backend) {
        self.backends.rcu(|b| {
            let mut b = BTreeSet::clone(b);
            b.remove(backend);
            b
        });
    }
}

#[async_trait]
impl ServiceDiscovery for Static {
    async fn discover(&self) -> Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        Ok((BTreeSet::clone(&self.backends.load()), HashMap::new()))
    }
}

/// A shared source works too, so the program can keep a handle (to a
/// [`Static`] list, say) and change it while the load balancer runs.
#[async_trait]
impl<T: ServiceDiscovery> ServiceDiscovery for Arc<T> {
    async fn discover(&self) -> Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        T::discover(self).await
    }
}
