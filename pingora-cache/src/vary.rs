//! Responses that vary (RFC 9111 §4.1): a response with `Vary` is stored
//! under a secondary key made from the request fields it names, so that
//! several variants of one URI live side by side and each request gets
//! only the variant whose fields match its own.

use http::header::VARY;
use http::HeaderMap;

/// The variance of a request for a response that varies by the fields
/// its `Vary` names (in `resp`): each named field's values in the request,
/// whitespace-trimmed, in the order `Vary` names them. `None` when the
/// response does not vary; the same bytes for requests that match.
pub fn variance(resp: &HeaderMap, req: &HeaderMap) -> Option<Vec<u8>> {
    let mut names: Vec<String> = Vec::new();
    for v in resp.get_all(VARY) {
        let Ok(v) = v.to_str() else { continue };
        for name in v.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let name = name.to_ascii_lowercase();
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    if names.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    for name in &names {
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        for (i, value) in req.get_all(name.as_str()).iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(value.as_bytes().trim_ascii());
        }
        // A byte no field value can hold ends each field.
        out.push(b'\n');
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::headers as h;

    #[test]
    fn no_vary_no_variance() {
        assert_eq!(variance(&h(&[]), &h(&[("accept", "x")])), None);
    }

    #[test]
    fn named_fields_decide() {
        let resp = h(&[("vary", "Accept-Encoding, accept-language")]);
        let gzip = variance(&resp, &h(&[("accept-encoding", "gzip")]));
        let gzip2 = variance(&resp, &h(&[("accept-encoding", " gzip "), ("x", "y")]));
        let br = variance(&resp, &h(&[("accept-encoding", "br")]));
        let none = variance(&resp, &h(&[]));
        assert_eq!(gzip, gzip2);
        assert_ne!(gzip, br);
        assert_ne!(gzip, none);
        // Fields cannot run into each other.
        let a = variance(
            &resp,
            &h(&[("accept-encoding", "x"), ("accept-language", "")]),
        );
        let b = variance(
            &resp,
            &h(&[("accept-encoding", ""), ("accept-language", "x")]),
        );
        assert_ne!(a, b);
    }
}
