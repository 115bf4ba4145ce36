//! The listening sockets a graceful upgrade hands over: this process's, and
//! those received from the previous one until a listener or a service takes
//! them.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
struct FdTable {
    /// Listening sockets of this process, by key, for handing over.
    own: HashMap<String, RawFd>,
    /// Sockets received from the previous process and not yet taken.
    inherited: HashMap<String, RawFd>,
    /// Inherited sockets a service looked up with [`FdsGuard::get`]
    /// (Pingora's way: the socket stays in the table): in use, so never
    /// closed as unclaimed, and handed on at the next upgrade.
    looked_up: std::cell::RefCell<std::collections::HashSet<String>>,
}

/// The table as Pingora's `Fds` shows it, from [`ListenFds::lock`]: for a
/// service of the user's that takes its listening sockets itself in
/// `start_service` (`fds.lock().get(addr)` for one inherited in an
/// upgrade; `add` for one it bound).
#[derive(Debug)]
pub struct FdsGuard<'a>(std::sync::MutexGuard<'a, FdTable>);

impl FdsGuard<'_> {
    /// The socket for `bind`: this process's own, or one inherited from
    /// the previous process (which then counts as in use).
    pub fn get(&self, bind: &str) -> Option<&RawFd> {
        if let Some(fd) = self.0.own.get(bind) {
            return Some(fd);
        }
        let fd = self.0.inherited.get(bind)?;
        self.0.looked_up.borrow_mut().insert(bind.to_string());
        Some(fd)
    }

    /// Record a socket this process bound for `bind`, to hand over at the
    /// next upgrade.
    pub fn add(&mut self, bind: String, fd: RawFd) {
        self.0.own.insert(bind, fd);
    }

    /// Whether the table holds no socket at all.
    pub fn is_empty(&self) -> bool {
        self.0.own.is_empty() && self.0.inherited.is_empty()
    }

    /// The sockets an upgrade hands over, as (keys, fds).
    pub fn serialize(&self) -> (Vec<String>, Vec<RawFd>) {
        own_sockets(&self.0).into_iter().unzip()
    }
}

/// This process's sockets in `t`, by key: its own and the inherited ones
/// in use.
fn own_sockets(t: &FdTable) -> Vec<(String, RawFd)> {
    let looked_up = t.looked_up.borrow();
    let mut v: Vec<_> = t
        .own
        .iter()
        .chain(t.inherited.iter().filter(|(k, _)| looked_up.contains(*k)))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    v.sort();
    v
}

/// The listening sockets of this process, by key: what a graceful upgrade
/// sends to the new process, and what the new process received.
#[derive(Debug, Clone, Default)]
pub struct ListenFds(Arc<Mutex<FdTable>>);

impl ListenFds {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    fn table(&self) -> std::sync::MutexGuard<'_, FdTable> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The table as Pingora's `Fds` (see [`FdsGuard`]), held until the
    /// guard drops.
    pub fn lock(&self) -> FdsGuard<'_> {
        FdsGuard(self.table())
    }

    /// Record one of this process's listening sockets.
    pub fn add(&self, key: String, fd: RawFd) {
        self.table().own.insert(key, fd);
    }

    /// Add sockets received from the previous process.
    pub fn set_inherited(&self, fds: Vec<(String, RawFd)>) {
        self.table().inherited.extend(fds);
    }

    /// Take an inherited socket for `key`, if one was received.
    pub fn take_inherited(&self, key: &str) -> Option<RawFd> {
        let mut t = self.table();
        t.looked_up.get_mut().remove(key);
        t.inherited.remove(key)
    }

    /// This process's listening sockets, for handing over.
    pub fn own(&self) -> Vec<(String, RawFd)> {
        own_sockets(&self.table())
    }

    /// Inherited sockets no listener took and no service looked up (the
    /// new conf dropped them).
    pub fn unclaimed(&self) -> Vec<String> {
        let t = self.table();
        let looked_up = t.looked_up.borrow();
        t.inherited
            .keys()
            .filter(|k| !looked_up.contains(*k))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_looked_up_pingoras_way_are_kept_and_handed_on() {
        let fds = ListenFds::new();
        fds.set_inherited(vec![("a:1".into(), 7), ("b:2".into(), 8)]);
        assert_eq!(fds.unclaimed().len(), 2);
        // A service of the user's takes "a:1" as Pingora's do.
        assert_eq!(fds.lock().get("a:1"), Some(&7));
        assert_eq!(fds.lock().get("c:3"), None);
        fds.lock().add("c:3".into(), 9);
        assert_eq!(fds.unclaimed(), vec!["b:2".to_string()]);
        assert_eq!(
            fds.own(),
            vec![("a:1".to_string(), 7), ("c:3".to_string(), 9)]
        );
        assert_eq!(
            fds.lock().serialize(),
            (vec!["a:1".to_string(), "c:3".to_string()], vec![7, 9])
        );
        assert!(!fds.lock().is_empty());
    }
}
