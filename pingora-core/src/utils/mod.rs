//! Utilities that do not belong to one layer.

#[cfg(feature = "any_tls")]
pub mod certs;

use pingora_error::{ErrorType, OrErr, Result};

pub use pingora_pool::{BuildPreHashed, PreHashed};

/// A `127.0.0.1:PORT` address with a port the OS handed out a moment ago
/// (and that is free again now): for demo servers and tests that need to
/// know an address before they listen on it.
///
/// # Errors
///
/// `BindError` if no port can be bound on 127.0.0.1 (no loopback interface,
/// or no free port).
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

/// A fast 64-bit hasher for identity keys inside one process: connection
/// pool keys and backend keys, hashed on every proxied request. SipHash
/// (`DefaultHasher`) guards hash tables against chosen keys, which these
/// are not (they name upstreams from the configuration or the user's
/// code), and costs several times more. Each 8-byte word is folded in with
/// a rotate, xor and odd multiply; `finish` mixes the state with the
/// MurmurHash3 finalizer, so that nearby inputs land far apart.
///
/// ```
/// use std::hash::{Hash, Hasher};
/// use pingora_core::utils::KeyHasher;
///
/// let key = |s: &str| {
///     let mut h = KeyHasher::default();
///     s.hash(&mut h);
///     h.finish()
/// };
/// assert_eq!(key("10.0.0.1:80"), key("10.0.0.1:80"));
/// assert_ne!(key("10.0.0.1:80"), key("10.0.0.2:80"));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyHasher {
    state: u64,
}

impl KeyHasher {
    const K: u64 = 0x517c_c1b7_2722_0a95;

    #[inline]
    fn word(&mut self, w: u64) {
        self.state = (self.state.rotate_left(5) ^ w).wrapping_mul(Self::K);
    }
}

impl std::hash::Hasher for KeyHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.word(u64::from_le_bytes(c.try_into().unwrap_or_default()));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut tail = [0u8; 8];
            tail[..rest.len()].copy_from_slice(rest);
            // The length goes in too: "a\0" and "a" must differ.
            self.word(u64::from_le_bytes(tail) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.word(u64::from(i));
    }

    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.word(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.word(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.word(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.word(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        let mut h = self.state;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

/// A fast pseudo-random number (xorshift64*, one state per thread, seeded
/// from `/dev/urandom`, else the clock): for load-balancing choices and
/// trace ids, never for secrets.
pub fn random_u64() -> u64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(random_seed());
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

/// A non-zero seed for [`random_u64`].
fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    let read = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b));
    if read.is_ok() {
        return u64::from_le_bytes(b) | 1;
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    // Threads seeded in the same nanosecond still differ by their stack.
    let addr = std::ptr::addr_of!(b) as u64;
    (t ^ addr.rotate_left(32)) | 1
}

#[cfg(test)]
mod key_hasher_tests {
    use super::KeyHasher;
    use std::collections::HashSet;
    use std::hash::{Hash, Hasher};

    fn key<T: Hash + ?Sized>(t: &T) -> u64 {
        let mut h = KeyHasher::default();
        t.hash(&mut h);
        h.finish()
    }

    #[test]
    fn distinct_inputs_get_distinct_keys() {
        // Every IPv4 address in a /16 on two ports, and strings that differ
        // in one byte, in length, or only by trailing zero bytes.
        let mut seen = HashSet::new();
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                for port in [80u16, 443] {
                    let addr = std::net::SocketAddr::from(([10, 0, a, b], port));
                    assert!(seen.insert(key(&addr)), "{addr}");
                }
            }
        }
        for s in [
            "",
            "a",
            "a\0",
            "a\0\0",
            "ab",
            "ba",
            "example.com",
            "example.org",
        ] {
            assert!(seen.insert(key(s)), "{s:?}");
        }
        let mut h = KeyHasher::default();
        h.write(b"abcdefgh\0");
        let mut g = KeyHasher::default();
        g.write(b"abcdefgh");
        assert_ne!(h.finish(), g.finish());
    }
}
