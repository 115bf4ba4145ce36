//! [`CacheKey`]: which stored object a request asks for.

use http::request::Parts;

/// The key of a cached object: a namespace (to keep apart objects of
/// different users or stores), a primary part (by default the host and the
/// path with query) and a user tag, which is not part of the key but
/// travels with it (for logs).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    namespace: String,
    primary: String,
    user_tag: String,
}

impl CacheKey {
    /// A key from its parts (Pingora's form).
    pub fn new(
        namespace: impl Into<String>,
        primary: impl Into<String>,
        user_tag: impl Into<String>,
    ) -> CacheKey {
        CacheKey {
            namespace: namespace.into(),
            primary: primary.into(),
            user_tag: user_tag.into(),
        }
    }

    /// The key most proxies use (nginx's `$host$request_uri`): the
    /// request's host (its `Host` field, which is what goes upstream, else
    /// its URI's authority, as an HTTP/2 request has it; lower case) and
    /// its path with query, in no namespace. The method is not in it: a
    /// HEAD finds the GET's object. (The proxy's default key puts
    /// `https://` before it for a TLS client, and caches nothing for a
    /// request whose URI authority and `Host` disagree.)
    pub fn default(req: &Parts) -> CacheKey {
        let host = CacheKey::request_host(req);
        let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut primary = String::with_capacity(host.len() + path.len());
        primary.extend(host.chars().map(|c| c.to_ascii_lowercase()));
        primary.push_str(path);
        CacheKey::new("", primary, "")
    }

    /// The host a request is for, as the default key has it (not yet in
    /// lower case): its `Host` field, which is what goes upstream, else
    /// its URI's authority (an HTTP/2 request's `:authority`); empty if
    /// neither.
    pub fn request_host(req: &Parts) -> &str {
        req.headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri.authority().map(|a| a.as_str()))
            .unwrap_or("")
    }

    /// Whether the request names one host: its URI's authority (when it
    /// has one) and its `Host` field (when it has one) agree. A request
    /// whose two disagree must not be cached under either.
    pub fn host_agrees(req: &Parts) -> bool {
        match (req.uri.authority(), req.headers.get(http::header::HOST)) {
            (Some(a), Some(h)) => a.as_str().as_bytes().eq_ignore_ascii_case(h.as_bytes()),
            _ => true,
        }
    }

    /// Its namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Its primary part.
    pub fn primary(&self) -> &str {
        &self.primary
    }

    /// Its user tag.
    pub fn user_tag(&self) -> &str {
        &self.user_tag
    }

    /// The bytes a store keys the object by: the namespace, a NUL, then
    /// the primary part; so that objects whose primary parts share a
    /// prefix share a prefix here too (for purging by prefix).
    pub fn storage_key(&self) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.namespace.len() + 1 + self.primary.len());
        k.extend_from_slice(self.namespace.as_bytes());
        k.push(0);
        k.extend_from_slice(self.primary.as_bytes());
        k
    }

    /// The storage key prefix of every object whose primary part starts
    /// with `prefix`, in `namespace`.
    pub fn storage_prefix(namespace: &str, prefix: &str) -> Vec<u8> {
        CacheKey::new(namespace, prefix, "").storage_key()
    }

    /// The storage key of this key's variant with `variance` (a response
    /// that varies: see [`crate::vary`]).
    pub fn variant_key(&self, variance: &[u8]) -> Vec<u8> {
        let mut k = self.storage_key();
        k.extend_from_slice(VARIANT_SEPARATOR);
        k.extend_from_slice(variance);
        k
    }
}

/// Between a primary key and a variance (a NUL cannot be in a URI, so it
/// cannot be part of a primary key made from one).
pub(crate) const VARIANT_SEPARATOR: &[u8] = b"\0v";

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, host: Option<&str>) -> Parts {
        let mut b = http::Request::builder().uri(uri);
        if let Some(h) = host {
            b = b.header("host", h);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn the_default_key_is_host_and_path() {
        let k = CacheKey::default(&parts("/a?b=1", Some("Example.COM")));
        assert_eq!(k.primary(), "example.com/a?b=1");
        let k2 = CacheKey::default(&parts("http://example.com/a?b=1", None));
        assert_eq!(k.storage_key(), k2.storage_key());
        assert_ne!(
            k.storage_key(),
            CacheKey::default(&parts("/a?b=2", Some("example.com"))).storage_key()
        );
        // Host and authority must agree.
        assert!(CacheKey::host_agrees(&parts(
            "http://A.com/x",
            Some("a.com")
        )));
        assert!(!CacheKey::host_agrees(&parts(
            "http://victim.com/x",
            Some("evil.com")
        )));
        assert!(CacheKey::host_agrees(&parts("/x", Some("evil.com"))));
    }

    #[test]
    fn variants_and_prefixes_share_the_primary_prefix() {
        let k = CacheKey::new("ns", "host/dir/file", "");
        assert!(k.variant_key(b"x").starts_with(&k.storage_key()));
        assert!(k
            .storage_key()
            .starts_with(&CacheKey::storage_prefix("ns", "host/dir/")));
        assert!(!k
            .storage_key()
            .starts_with(&CacheKey::storage_prefix("other", "host/dir/")));
    }
}
