//! Whether a cache may store a response (RFC 9111 §3).

use http::header::{AUTHORIZATION, EXPIRES, VARY};
use http::{HeaderMap, Method, StatusCode};

use crate::CacheControl;

/// Why a response may not be stored; the `detail` of a `Cache-Status`
/// (RFC 9211) can name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStorable {
    /// The request method is not one this cache stores (GET and HEAD).
    Method,
    /// An interim (1xx), partial (206) or not-modified (304) status.
    Status,
    /// `no-store` on the request or the response.
    NoStore,
    /// `private` on a response, in a shared cache.
    Private,
    /// The request had `Authorization` and the response does not say a
    /// shared cache may store it anyway (§3.5).
    Authorization,
    /// `Vary: *`: no later request can match it.
    VaryStar,
    /// Nothing makes it storable: no explicit freshness, no `public`, and
    /// a status that is not cacheable by default.
    NoFreshness,
}

/// Statuses cacheable by default (RFC 9110 §15.1): storable with a
/// heuristic freshness when nothing says otherwise.
pub fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Whether a response to `method` with these request headers may be
/// stored (`shared`: by a shared cache, as a proxy's is).
///
/// # Errors
///
/// The first rule of RFC 9111 §3 (and §3.5) the exchange breaks.
pub fn storable(
    method: &Method,
    req: &HeaderMap,
    status: StatusCode,
    resp: &HeaderMap,
    shared: bool,
) -> Result<(), NotStorable> {
    if method != Method::GET && method != Method::HEAD {
        return Err(NotStorable::Method);
    }
    // 206 needs range support in the store, 304 updates an entry: neither
    // is stored as a response of its own.
    if status.is_informational()
        || status == StatusCode::PARTIAL_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Err(NotStorable::Status);
    }
    let req_cc = CacheControl::parse(req);
    let cc = CacheControl::parse(resp);
    if req_cc.no_store || cc.no_store {
        return Err(NotStorable::NoStore);
    }
    if shared && cc.private {
        return Err(NotStorable::Private);
    }
    if shared
        && req.contains_key(AUTHORIZATION)
        && !(cc.must_revalidate || cc.public || cc.s_maxage.is_some())
    {
        return Err(NotStorable::Authorization);
    }
    let vary_star = resp.get_all(VARY).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|f| f.trim_ascii() == b"*")
    });
    if vary_star {
        return Err(NotStorable::VaryStar);
    }
    let explicit = cc.max_age.is_some()
        || (shared && cc.s_maxage.is_some())
        || resp.contains_key(EXPIRES)
        || cc.public
        || (!shared && cc.private);
    if !explicit && !heuristically_cacheable(status) {
        return Err(NotStorable::NoFreshness);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::headers as h;

    fn check(
        method: Method,
        req: &[(&'static str, &str)],
        status: u16,
        resp: &[(&'static str, &str)],
    ) -> Result<(), NotStorable> {
        storable(
            &method,
            &h(req),
            StatusCode::from_u16(status).unwrap(),
            &h(resp),
            true,
        )
    }

    #[test]
    fn methods_and_statuses() {
        assert_eq!(check(Method::GET, &[], 200, &[]), Ok(()));
        assert_eq!(check(Method::HEAD, &[], 404, &[]), Ok(()));
        assert_eq!(
            check(Method::POST, &[], 200, &[("cache-control", "max-age=60")]),
            Err(NotStorable::Method)
        );
        for s in [100, 206, 304] {
            assert_eq!(
                check(Method::GET, &[], s, &[("cache-control", "max-age=60")]),
                Err(NotStorable::Status)
            );
        }
        // Not cacheable by default, unless the response says how long.
        assert_eq!(
            check(Method::GET, &[], 302, &[]),
            Err(NotStorable::NoFreshness)
        );
        assert_eq!(
            check(Method::GET, &[], 500, &[]),
            Err(NotStorable::NoFreshness)
        );
        assert_eq!(
            check(Method::GET, &[], 302, &[("cache-control", "max-age=5")]),
            Ok(())
        );
        assert_eq!(
            check(
                Method::GET,
                &[],
                500,
                &[("expires", "Thu, 01 Jan 2099 00:00:00 GMT")]
            ),
            Ok(())
        );
    }

    #[test]
    fn no_store_and_private() {
        let no_store = [("cache-control", "no-store")];
        assert_eq!(
            check(Method::GET, &no_store, 200, &[]),
            Err(NotStorable::NoStore)
        );
        assert_eq!(
            check(Method::GET, &[], 200, &no_store),
            Err(NotStorable::NoStore)
        );
        let private = [("cache-control", "private, max-age=60")];
        assert_eq!(
            check(Method::GET, &[], 200, &private),
            Err(NotStorable::Private)
        );
        // A private cache may.
        assert_eq!(
            storable(&Method::GET, &h(&[]), StatusCode::OK, &h(&private), false),
            Ok(())
        );
        // Qualified private: the response is storable (the fields are not).
        assert_eq!(
            check(
                Method::GET,
                &[],
                200,
                &[("cache-control", "private=\"set-cookie\"")]
            ),
            Ok(())
        );
    }

    #[test]
    fn authorization_needs_the_response_to_allow_it() {
        let auth = [("authorization", "Basic x")];
        assert_eq!(
            check(Method::GET, &auth, 200, &[]),
            Err(NotStorable::Authorization)
        );
        for allow in ["public", "must-revalidate", "s-maxage=10"] {
            assert_eq!(
                check(Method::GET, &auth, 200, &[("cache-control", allow)]),
                Ok(()),
                "{allow}"
            );
        }
    }

    #[test]
    fn vary_star_never_matches() {
        assert_eq!(
            check(Method::GET, &[], 200, &[("vary", "accept-encoding, *")]),
            Err(NotStorable::VaryStar)
        );
        assert_eq!(
            check(Method::GET, &[], 200, &[("vary", "accept-encoding")]),
            Ok(())
        );
    }
}
