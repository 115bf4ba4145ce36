//! The rate limit's shared store: a sliding-window counter in Redis, one
//! round trip per request (a Lua script that reads both intervals' counts,
//! decides, and counts the request if it passes, on the server's clock so
//! that every proxy agrees on the intervals).
//!
//! The client is ours, not the `redis` crate: that crate (0.32, with
//! `tokio-comp`) brings about 45 crates (`url` → `idna` → ICU4X, `syn` 3,
//! `num-bigint`, `combine`) for the one command sent here; this is the
//! RESP exchange of that command (`EVALSHA`, `SCRIPT LOAD`, `AUTH`,
//! `SELECT`), with a pool of connections, a deadline on each call, and
//! nothing else.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The script: `KEYS[1]` the key's base, `ARGV[1]` the limit per
/// interval, `ARGV[2]` the interval in ms. Returns `{passed (0/1), the
/// previous interval's count, the current one's (before this request),
/// ms into the current interval}`.
const SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local iv = tonumber(ARGV[2])
local idx = math.floor(now / iv)
local into = now - idx * iv
local ck = KEYS[1] .. ':' .. idx
local curr = tonumber(redis.call('GET', ck) or '0')
local prev = tonumber(redis.call('GET', KEYS[1] .. ':' .. (idx - 1)) or '0')
local ok = 0
if prev * (1 - into / iv) + curr + 1 <= tonumber(ARGV[1]) then
  ok = 1
  if redis.call('INCR', ck) == 1 then redis.call('PEXPIRE', ck, 2 * iv + 1000) end
end
return {ok, prev, curr, into}
"#;

/// Where the Redis server is and how to log in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisAddr {
    /// `host:port`.
    pub addr: String,
    /// `AUTH` with this (and `user`, if given).
    pub password: Option<String>,
    /// The ACL user for `AUTH`.
    pub user: Option<String>,
    /// `SELECT` this database.
    pub db: u32,
}

impl RedisAddr {
    /// Parse `redis://[[user]:password@]host[:port][/db]`; the error says
    /// what is wrong.
    ///
    /// # Errors
    ///
    /// A message naming `url` if it does not start with `redis://`, names no
    /// host, or its database is not a number.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("redis://")
            .ok_or_else(|| format!("{url:?}: a Redis URL starts with redis://"))?;
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((a, r)) => (Some(a), r),
            None => (None, rest),
        };
        let (hostport, db) = match rest.split_once('/') {
            Some((h, "")) => (h, 0),
            Some((h, d)) => (
                h,
                d.parse()
                    .map_err(|_| format!("{url:?}: the database must be a number"))?,
            ),
            None => (rest, 0),
        };
        if hostport.is_empty() {
            return Err(format!("{url:?}: no host"));
        }
        let addr = if hostport
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
            && !hostport.ends_with(']')
        {
            hostport.to_string()
        } else {
            format!("{hostport}:6379")
        };
        let (user, password) = match auth {
            None => (None, None),
            Some(a) => match a.split_once(':') {
                Some(("", p)) => (None, Some(p.to_string())),
                Some((u, p)) => (Some(u.to_string()), Some(p.to_string())),
                None => (None, Some(a.to_string())),
            },
        };
        Ok(RedisAddr {
            addr,
            password,
            user,
            db,
        })
    }
}

/// One RESP reply, as far as the script and set-up need.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

/// Parse one reply from the front of `buf`: the reply and its length, or
/// `None` if more bytes are needed.
pub(crate) fn parse_reply(buf: &[u8]) -> io::Result<Option<(Reply, usize)>> {
    fn line(buf: &[u8]) -> Option<(&[u8], usize)> {
        let end = buf.windows(2).position(|w| w == b"\r\n")?;
        Some((&buf[..end], end + 2))
    }
    fn bad(what: &str) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, format!("Redis reply: {what}"))
    }
    fn int(b: &[u8]) -> io::Result<i64> {
        std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("a bad number"))
    }
    let Some(&kind) = buf.first() else {
        return Ok(None);
    };
    let Some((head, used)) = line(&buf[1..]) else {
        return Ok(None);
    };
    let used = used + 1;
    let text = || String::from_utf8_lossy(head).into_owned();
    Ok(Some(match kind {
        b'+' => (Reply::Simple(text()), used),
        b'-' => (Reply::Error(text()), used),
        b':' => (Reply::Int(int(head)?), used),
        b'$' => {
            let n = int(head)?;
            if n < 0 {
                return Ok(Some((Reply::Bulk(None), used)));
            }
            let n = usize::try_from(n).map_err(|_| bad("a bad length"))?;
            if n > 1 << 20 {
                return Err(bad("a bulk string over 1 MiB"));
            }
            if buf.len() < used + n + 2 {
                return Ok(None);
            }
            (
                Reply::Bulk(Some(buf[used..used + n].to_vec())),
                used + n + 2,
            )
        }
        b'*' => {
            let n = int(head)?;
            if n < 0 {
                return Ok(Some((Reply::Array(Vec::new()), used)));
            }
            if n > 64 {
                return Err(bad("an array over 64 items"));
            }
            let mut items = Vec::with_capacity(n as usize);
            let mut at = used;
            for _ in 0..n {
                match parse_reply(&buf[at..])? {
                    Some((r, len)) => {
                        items.push(r);
                        at += len;
                    }
                    None => return Ok(None),
                }
            }
            (Reply::Array(items), at)
        }
        _ => return Err(bad("an unknown type")),
    }))
}

/// A command as RESP: an array of bulk strings.
fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// One connection to Redis.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn call(&mut self, args: &[&[u8]]) -> io::Result<Reply> {
        self.stream.write_all(&command(args)).await?;
        loop {
            if let Some((reply, used)) = parse_reply(&self.buf)? {
                self.buf.drain(..used);
                return Ok(reply);
            }
            let mut chunk = [0u8; 512];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// What the store said about one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Counts {
    pub passed: bool,
    pub prev: f64,
    pub curr: f64,
    /// How far into the current interval, 0 to 1.
    pub frac: f64,
}

/// The shared counter: connections to one Redis server, reused.
pub(crate) struct RedisCounter {
    addr: RedisAddr,
    idle: std::sync::Mutex<Vec<Conn>>,
    max_idle: usize,
    /// The script's SHA-1, once loaded.
    sha: std::sync::Mutex<Option<String>>,
    timeout: Duration,
}

impl RedisCounter {
    pub(crate) fn new(addr: RedisAddr, timeout: Duration, connections: usize) -> Self {
        RedisCounter {
            addr,
            idle: std::sync::Mutex::new(Vec::new()),
            max_idle: connections.max(1),
            sha: std::sync::Mutex::new(None),
            timeout,
        }
    }

    async fn connect(&self) -> io::Result<Conn> {
        let stream = TcpStream::connect(&self.addr.addr).await?;
        stream.set_nodelay(true)?;
        let mut conn = Conn {
            stream,
            buf: Vec::new(),
        };
        if let Some(p) = &self.addr.password {
            let mut args: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(u) = &self.addr.user {
                args.push(u.as_bytes());
            }
            args.push(p.as_bytes());
            expect_ok(conn.call(&args).await?)?;
        }
        if self.addr.db != 0 {
            let db = self.addr.db.to_string();
            expect_ok(conn.call(&[b"SELECT", db.as_bytes()]).await?)?;
        }
        Ok(conn)
    }

    /// Count one request for `key` against `limit` per `interval_ms`, on
    /// the server: within the deadline, or an error.
    pub(crate) async fn check(
        &self,
        key: &str,
        limit: u64,
        interval_ms: u64,
    ) -> io::Result<Counts> {
        match pingora_timeout::timeout(self.timeout, self.check_now(key, limit, interval_ms)).await
        {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "Redis did not answer in time",
            )),
        }
    }

    async fn check_now(&self, key: &str, limit: u64, interval_ms: u64) -> io::Result<Counts> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut conn = match idle {
            Some(c) => c,
            None => self.connect().await?,
        };
        let base = format!("pingora-rl:{{{key}}}");
        let (limit, interval) = (limit.to_string(), interval_ms.to_string());
        let mut reply = None;
        for _ in 0..2 {
            let sha = self.sha.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let sha = match sha {
                Some(s) => s,
                None => {
                    let r = conn.call(&[b"SCRIPT", b"LOAD", SCRIPT.as_bytes()]).await?;
                    let Reply::Bulk(Some(s)) = r else {
                        return Err(unexpected(r));
                    };
                    let s = String::from_utf8_lossy(&s).into_owned();
                    *self.sha.lock().unwrap_or_else(|p| p.into_inner()) = Some(s.clone());
                    s
                }
            };
            let r = conn
                .call(&[
                    b"EVALSHA",
                    sha.as_bytes(),
                    b"1",
                    base.as_bytes(),
                    limit.as_bytes(),
                    interval.as_bytes(),
                ])
                .await?;
            match r {
                // The server lost its scripts (a restart): load it again.
                Reply::Error(e) if e.starts_with("NOSCRIPT") => {
                    *self.sha.lock().unwrap_or_else(|p| p.into_inner()) = None;
                }
                r => {
                    reply = Some(r);
                    break;
                }
            }
        }
        let counts = match reply {
            Some(Reply::Array(v)) => match v.as_slice() {
                [Reply::Int(ok), Reply::Int(prev), Reply::Int(curr), Reply::Int(into)] => Counts {
                    passed: *ok == 1,
                    prev: *prev as f64,
                    curr: *curr as f64,
                    frac: (*into as f64 / interval_ms as f64).clamp(0.0, 1.0),
                },
                _ => return Err(unexpected(Reply::Array(v))),
            },
            Some(r) => return Err(unexpected(r)),
            None => return Err(io::Error::other("the script could not be loaded")),
        };
        // Back for the next request (dropped if enough are idle).
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.max_idle {
            idle.push(conn);
        }
        Ok(counts)
    }
}

fn expect_ok(r: Reply) -> io::Result<()> {
    match r {
        Reply::Simple(_) => Ok(()),
        r => Err(unexpected(r)),
    }
}

fn unexpected(r: Reply) -> io::Error {
    io::Error::other(format!("unexpected Redis reply: {r:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let a = RedisAddr::parse("redis://127.0.0.1:6380/2").unwrap();
        assert_eq!(
            (a.addr.as_str(), a.db, a.password),
            ("127.0.0.1:6380", 2, None)
        );
        let a = RedisAddr::parse("redis://:secret@cache").unwrap();
        assert_eq!(
            (a.addr.as_str(), a.password.as_deref()),
            ("cache:6379", Some("secret"))
        );
        let a = RedisAddr::parse("redis://me:pw@[::1]:7000").unwrap();
        assert_eq!(
            (a.addr.as_str(), a.user.as_deref()),
            ("[::1]:7000", Some("me"))
        );
        assert!(RedisAddr::parse("http://x")
            .unwrap_err()
            .contains("redis://"));
        assert!(RedisAddr::parse("redis://x/y")
            .unwrap_err()
            .contains("database"));
    }

    #[test]
    fn replies_parse_whole_or_wait_for_more() {
        let whole = b"*4\r\n:1\r\n:3\r\n:0\r\n$-1\r\n";
        let (r, n) = parse_reply(whole).unwrap().unwrap();
        assert_eq!(n, whole.len());
        assert_eq!(
            r,
            Reply::Array(vec![
                Reply::Int(1),
                Reply::Int(3),
                Reply::Int(0),
                Reply::Bulk(None)
            ])
        );
        for cut in 0..whole.len() {
            assert_eq!(parse_reply(&whole[..cut]).unwrap(), None, "{cut}");
        }
        let (r, _) = parse_reply(b"$3\r\nabc\r\n+OK\r\n").unwrap().unwrap();
        assert_eq!(r, Reply::Bulk(Some(b"abc".to_vec())));
        assert!(parse_reply(b"?x\r\n").is_err());
        assert!(parse_reply(b"*1000\r\n").is_err());
        assert!(parse_reply(b":12x\r\n").is_err());
    }

    #[test]
    fn commands_are_bulk_arrays() {
        assert_eq!(command(&[b"GET", b"k"]), b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    }
}
