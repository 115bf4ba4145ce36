//! What the client accepts (`Accept-Encoding` with q-values), and which
//! content types are worth compressing.

use super::Algorithm;

/// What a client accepts: the q-value of each coding (in thousandths).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Accepted {
    /// Indexed by `Algorithm::index`; `None`: not named.
    q: [Option<u16>; 4],
    /// `*`'s q-value, for codings not named.
    star: Option<u16>,
}

impl Accepted {
    pub(super) fn parse<'a>(values: impl Iterator<Item = &'a [u8]>) -> Self {
        let mut a = Accepted::default();
        for v in values {
            let Ok(v) = std::str::from_utf8(v) else {
                continue;
            };
            for item in v.split(',') {
                let mut parts = item.split(';');
                let name = parts.next().unwrap_or("").trim();
                if name.is_empty() {
                    continue;
                }
                let mut q = 1000;
                for p in parts {
                    let p = p.trim();
                    if let Some(v) = p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")) {
                        q = parse_q(v.trim()).unwrap_or(0);
                    }
                }
                if name == "*" {
                    a.star = Some(q);
                } else {
                    let alg = Algorithm::from(name);
                    if alg != Algorithm::Any {
                        a.q[alg.index()] = Some(q);
                    }
                }
            }
        }
        a
    }

    /// The q-value for `alg` (0: not acceptable).
    pub(super) fn q(&self, alg: Algorithm) -> u16 {
        self.q[alg.index()].or(self.star).unwrap_or(0)
    }
}

/// A q-value (`0`, `0.5`, `1.000`) in thousandths; `None` if malformed.
pub(super) fn parse_q(v: &str) -> Option<u16> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: u16 = match int {
        "0" => 0,
        "1" => 1,
        _ => return None,
    };
    let mut thousandths = 0;
    for (i, d) in frac.bytes().enumerate() {
        thousandths += u16::from(d - b'0') * [100, 10, 1][i];
    }
    let q = whole * 1000 + thousandths;
    (q <= 1000).then_some(q)
}

/// The media types compressed by default: text (but not event streams,
/// which must flow as they come), and the structured and font types that
/// are text underneath.
const DEFAULT_TYPES: &[&str] = &[
    "text/*",
    "application/json",
    "application/javascript",
    "application/x-javascript",
    "application/ecmascript",
    "application/xml",
    "application/wasm",
    "application/x-font-ttf",
    "application/vnd.ms-fontobject",
    "image/svg+xml",
    "image/x-icon",
    "image/vnd.microsoft.icon",
    "font/ttf",
    "font/otf",
    "font/collection",
];

/// Whether responses of `content_type` are worth compressing: a type in
/// `types` (`type/*` matches the whole type), or any `+json`/`+xml`
/// structured type when the defaults are in use.
pub(super) fn compressible(content_type: &[u8], types: Option<&[String]>) -> bool {
    let t = content_type
        .split(|b| *b == b';')
        .next()
        .unwrap_or(b"")
        .trim_ascii();
    let major = t.split(|b| *b == b'/').next().unwrap_or(b"");
    let matches = |pattern: &str| match pattern.strip_suffix("/*") {
        Some(p) => major.eq_ignore_ascii_case(p.as_bytes()),
        None => t.eq_ignore_ascii_case(pattern.as_bytes()),
    };
    let ends_with = |suffix: &[u8]| {
        t.len() >= suffix.len() && t[t.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
    };
    match types {
        Some(list) => list.iter().any(|p| matches(p)),
        None => {
            !t.eq_ignore_ascii_case(b"text/event-stream")
                && (DEFAULT_TYPES.iter().any(|p| matches(p))
                    || ends_with(b"+json")
                    || ends_with(b"+xml"))
        }
    }
}
