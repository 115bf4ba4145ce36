//! Utilities that do not belong to one layer.

#[cfg(any(feature = "openssl", feature = "boringssl"))]
pub mod certs;

use pingora_error::{ErrorType, OrErr, Result};

/// A `127.0.0.1:PORT` address with a port the OS handed out a moment ago
/// (and that is free again now): for demo servers and tests that need to
/// know an address before they listen on it.
pub fn free_loopback_addr() -> Result<String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .or_err(ErrorType::BindError, "asking the OS for a free port")?;
    let addr = l
        .local_addr()
        .or_err(ErrorType::BindError, "reading the free port")?;
    Ok(addr.to_string())
}

/// `s` as a JSON string literal, quotes included (for the hand-written
/// JSON of the access log, Sentry events and OTLP spans).
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
