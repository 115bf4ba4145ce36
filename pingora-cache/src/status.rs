//! [`CacheStatus`]: how a request was served with respect to the cache,
//! for the `Cache-Status` response field (RFC 9211), metrics and logs.

/// How the cache took part in a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served fresh from the cache; `ttl` seconds of freshness left.
    Hit {
        /// Seconds until it goes stale.
        ttl: i64,
    },
    /// Served stale from the cache: while it is revalidated
    /// (`stale-while-revalidate`) or because the upstream failed
    /// (`stale-if-error`).
    Stale {
        /// Seconds past its freshness (negative).
        ttl: i64,
        /// `true` for stale-if-error, `false` for stale-while-revalidate.
        on_error: bool,
    },
    /// Not in the cache: forwarded; `stored` if the response was stored
    /// (or is being), else `detail` says why not.
    Miss {
        /// Whether the response is stored.
        stored: bool,
        /// Why it was not, if it was not.
        detail: Option<&'static str>,
    },
    /// A stored response was revalidated upstream and, on `304`, served
    /// from the cache: because it was stale (`fwd=stale`), or because the
    /// request asked (`no-cache`, `max-age`...; `fwd=request`).
    Revalidated {
        /// The upstream's status for the conditional request.
        fwd_status: u16,
        /// Whether the response (the refreshed or the new one) is stored.
        stored: bool,
        /// The request, not the object's age, sent it upstream.
        by_request: bool,
    },
    /// Served from another request's fill under way (collapsed).
    Collapsed,
    /// The cache took no part (a method it does not cache, a purge).
    Bypass,
}

impl CacheStatus {
    /// A short name for metrics and logs: `hit`, `stale`, `miss`,
    /// `revalidated` (a 304), `expired` (a new object), `collapsed` or
    /// `bypass`.
    pub fn as_str(&self) -> &'static str {
        match self {
            CacheStatus::Hit { .. } => "hit",
            CacheStatus::Stale { .. } => "stale",
            CacheStatus::Miss { .. } => "miss",
            CacheStatus::Revalidated {
                fwd_status: 304, ..
            } => "revalidated",
            CacheStatus::Revalidated { .. } => "expired",
            CacheStatus::Collapsed => "collapsed",
            CacheStatus::Bypass => "bypass",
        }
    }

    /// The `Cache-Status` field value for a cache named `name` (RFC 9211
    /// §2: `hit`, `fwd`, `fwd-status`, `ttl`, `stored`, `collapsed`,
    /// `detail`).
    pub fn header_value(&self, name: &str) -> String {
        match *self {
            CacheStatus::Hit { ttl } => format!("{name}; hit; ttl={ttl}"),
            CacheStatus::Stale { ttl, on_error } => {
                let why = if on_error {
                    "stale-if-error"
                } else {
                    "stale-while-revalidate"
                };
                format!("{name}; hit; ttl={ttl}; detail={why}")
            }
            CacheStatus::Miss {
                stored: true,
                detail: _,
            } => format!("{name}; fwd=uri-miss; stored"),
            CacheStatus::Miss {
                stored: false,
                detail: Some(d),
            } => format!("{name}; fwd=uri-miss; detail={d}"),
            CacheStatus::Miss { .. } => format!("{name}; fwd=uri-miss"),
            CacheStatus::Revalidated {
                fwd_status,
                stored,
                by_request,
            } => {
                let fwd = if by_request { "request" } else { "stale" };
                let stored = if stored { "; stored" } else { "" };
                format!("{name}; fwd={fwd}; fwd-status={fwd_status}{stored}")
            }
            CacheStatus::Collapsed => format!("{name}; fwd=uri-miss; collapsed"),
            CacheStatus::Bypass => format!("{name}; fwd=bypass"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values() {
        assert_eq!(
            CacheStatus::Hit { ttl: 5 }.header_value("c"),
            "c; hit; ttl=5"
        );
        let miss = CacheStatus::Miss {
            stored: false,
            detail: Some("private"),
        };
        assert_eq!(miss.header_value("c"), "c; fwd=uri-miss; detail=private");
        let reval = CacheStatus::Revalidated {
            fwd_status: 304,
            stored: true,
            by_request: false,
        };
        assert_eq!(
            reval.header_value("c"),
            "c; fwd=stale; fwd-status=304; stored"
        );
        assert_eq!(reval.as_str(), "revalidated");
    }
}
