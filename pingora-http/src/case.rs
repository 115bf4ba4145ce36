//! Header names that remember how they were spelled.

use bytes::Bytes;
use http::header::HeaderName;
use pingora_error::{ErrorType, OrErr, Result};

/// A header name as written on the wire (any case), with its normalized
/// [`HeaderName`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseHeaderName {
    /// The spelling to write; `None` when it is the lowercase name itself.
    case: Option<Bytes>,
    name: HeaderName,
}

impl CaseHeaderName {
    /// A name spelled as in `raw`; fails if `raw` is not a valid token.
    ///
    /// # Errors
    ///
    /// `InvalidHTTPHeader` if `raw` is not a valid header name.
    pub fn from_bytes(raw: Bytes) -> Result<Self> {
        let name = HeaderName::from_bytes(&raw)
            .or_err_with(ErrorType::InvalidHTTPHeader, || {
                format!("invalid header name {:?}", String::from_utf8_lossy(&raw))
            })?;
        Ok(Self::with_name(raw, name))
    }

    /// A name spelled as in `raw`, with its already-parsed `name`. `raw`
    /// must be `name` in some case.
    pub(crate) fn with_name(raw: Bytes, name: HeaderName) -> Self {
        let case = (raw.as_ref() != name.as_str().as_bytes()).then_some(raw);
        CaseHeaderName { case, name }
    }

    /// A name as parsed from `buf`: no bytes kept when spelled in lowercase,
    /// a static string when spelled in the usual Title-Case, else a shared
    /// slice of `buf`. (Sharing costs two atomic operations per header.)
    pub(crate) fn from_parsed(raw: &[u8], name: HeaderName, buf: &Bytes) -> Self {
        let case = if raw == name.as_str().as_bytes() {
            None
        } else {
            match title_case(&name) {
                Some(t) if t.as_bytes() == raw => Some(Bytes::from_static(t.as_bytes())),
                _ => Some(crate::share(buf, raw)),
            }
        };
        CaseHeaderName { case, name }
    }

    /// The spelling written on the wire.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.case {
            Some(c) => c,
            None => self.name.as_str().as_bytes(),
        }
    }

    /// The normalized (lowercase) name.
    pub fn name(&self) -> &HeaderName {
        &self.name
    }
}

/// Anything that can become a [`CaseHeaderName`]: string slices and
/// `String`s keep their spelling; a [`HeaderName`] is written in lowercase.
pub trait IntoCaseHeaderName {
    /// Convert, keeping the spelling.
    ///
    /// # Errors
    ///
    /// `InvalidHTTPHeader` if a string is not a valid header name
    /// (a `HeaderName` or `CaseHeaderName` never fails).
    fn into_case_header_name(self) -> Result<CaseHeaderName>;
}

impl IntoCaseHeaderName for &'static str {
    fn into_case_header_name(self) -> Result<CaseHeaderName> {
        CaseHeaderName::from_bytes(Bytes::from_static(self.as_bytes()))
    }
}

impl IntoCaseHeaderName for String {
    fn into_case_header_name(self) -> Result<CaseHeaderName> {
        CaseHeaderName::from_bytes(Bytes::from(self))
    }
}

impl IntoCaseHeaderName for &String {
    fn into_case_header_name(self) -> Result<CaseHeaderName> {
        CaseHeaderName::from_bytes(Bytes::copy_from_slice(self.as_bytes()))
    }
}

impl IntoCaseHeaderName for HeaderName {
    fn into_case_header_name(self) -> Result<CaseHeaderName> {
        Ok(CaseHeaderName {
            case: None,
            name: self,
        })
    }
}

impl IntoCaseHeaderName for &HeaderName {
    fn into_case_header_name(self) -> Result<CaseHeaderName> {
        self.clone().into_case_header_name()
    }
}

impl IntoCaseHeaderName for CaseHeaderName {
    fn into_case_header_name(self) -> Result<CaseHeaderName> {
        Ok(self)
    }
}

impl From<HeaderName> for CaseHeaderName {
    fn from(name: HeaderName) -> Self {
        CaseHeaderName { case: None, name }
    }
}

/// The usual spelling of common header names.
fn title_case(name: &HeaderName) -> Option<&'static str> {
    use http::header::*;
    Some(match *name {
        HOST => "Host",
        USER_AGENT => "User-Agent",
        ACCEPT => "Accept",
        ACCEPT_LANGUAGE => "Accept-Language",
        ACCEPT_ENCODING => "Accept-Encoding",
        ACCEPT_RANGES => "Accept-Ranges",
        REFERER => "Referer",
        CONNECTION => "Connection",
        COOKIE => "Cookie",
        SET_COOKIE => "Set-Cookie",
        UPGRADE_INSECURE_REQUESTS => "Upgrade-Insecure-Requests",
        CONTENT_TYPE => "Content-Type",
        CONTENT_LENGTH => "Content-Length",
        CONTENT_ENCODING => "Content-Encoding",
        TRANSFER_ENCODING => "Transfer-Encoding",
        CACHE_CONTROL => "Cache-Control",
        DATE => "Date",
        SERVER => "Server",
        LOCATION => "Location",
        VARY => "Vary",
        ETAG => "ETag",
        EXPIRES => "Expires",
        LAST_MODIFIED => "Last-Modified",
        IF_MODIFIED_SINCE => "If-Modified-Since",
        IF_NONE_MATCH => "If-None-Match",
        AUTHORIZATION => "Authorization",
        ORIGIN => "Origin",
        RANGE => "Range",
        PRAGMA => "Pragma",
        UPGRADE => "Upgrade",
        EXPECT => "Expect",
        VIA => "Via",
        AGE => "Age",
        _ => return None,
    })
}
