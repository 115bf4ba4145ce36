//! Syslog output (RFC 5424) over UDP or a Unix datagram socket, for the
//! error log and the access log.
//!
//! Our own, on purpose: the maintained `syslog` crate (7.0) writes the
//! RFC 5424 MSGID as a number (`u32`), where the RFC's is a name (ours are
//! `error` and `access`, which collectors filter on), and it would bring
//! the `time` crate for a timestamp this file formats in a dozen lines.
//!
//! A target is written `syslog:udp:HOST:PORT` or `syslog:unix:PATH` (for
//! example `syslog:unix:/dev/log`) wherever a log destination is asked for
//! (`error_log`, `access_log`).
//!
//! ```no_run
//! use pingora_core::syslog::{Syslog, SyslogTarget};
//!
//! let target: SyslogTarget = "syslog:udp:127.0.0.1:514".parse().unwrap();
//! let log = Syslog::connect(&target, "my-proxy").unwrap();
//! log.send(6, "access", "GET / 200");
//! ```

use std::io::Write;
use std::net::UdpSocket;
use std::os::unix::net::UnixDatagram;
use std::str::FromStr;
use std::time::SystemTime;

use pingora_error::{Error, ErrorType, OrErr, Result};

/// Where syslog datagrams go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyslogTarget {
    /// A syslog server over UDP (`HOST:PORT`).
    Udp(String),
    /// A local syslog daemon's datagram socket (usually `/dev/log`).
    Unix(String),
}

impl FromStr for SyslogTarget {
    type Err = Box<Error>;
    fn from_str(s: &str) -> Result<Self> {
        if let Some(addr) = s.strip_prefix("syslog:udp:") {
            if addr
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
            {
                return Ok(SyslogTarget::Udp(addr.to_string()));
            }
        } else if let Some(path) = s.strip_prefix("syslog:unix:") {
            if !path.is_empty() {
                return Ok(SyslogTarget::Unix(path.to_string()));
            }
        }
        Error::e_explain(
            ErrorType::InvalidInput,
            format!("{s:?} is not syslog:udp:HOST:PORT or syslog:unix:PATH"),
        )
    }
}

impl SyslogTarget {
    /// Whether `s` names a syslog target (else it is a file path).
    pub fn is_syslog(s: &str) -> bool {
        s.starts_with("syslog:")
    }
}

enum Sock {
    Udp(UdpSocket),
    Unix(UnixDatagram),
}

/// Names the type; its state is not shown.
impl std::fmt::Debug for Syslog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syslog").finish_non_exhaustive()
    }
}

/// Sends RFC 5424 messages (facility local0) to a syslog target.
pub struct Syslog {
    sock: Sock,
    host: String,
    app: String,
    pid: u32,
}

/// `local0`, the facility for the messages we send.
const FACILITY: u8 = 16;

impl Syslog {
    /// Open a socket to `target`; `app` is the APP-NAME field.
    ///
    /// # Errors
    ///
    /// `BindError` or `SocketError` if no socket can be made; `ConnectError`
    /// if it cannot be connected (a UDP address that does not resolve, a
    /// Unix socket path nobody listens on).
    pub fn connect(target: &SyslogTarget, app: &str) -> Result<Syslog> {
        let sock = match target {
            SyslogTarget::Udp(addr) => {
                let s = UdpSocket::bind(if addr.starts_with('[') {
                    "[::]:0"
                } else {
                    "0.0.0.0:0"
                })
                .or_err(ErrorType::BindError, "syslog: binding a UDP socket")?;
                s.connect(addr)
                    .or_err_with(ErrorType::ConnectError, || format!("syslog: {addr}"))?;
                Sock::Udp(s)
            }
            SyslogTarget::Unix(path) => {
                let s = UnixDatagram::unbound()
                    .or_err(ErrorType::SocketError, "syslog: a Unix datagram socket")?;
                s.connect(path)
                    .or_err_with(ErrorType::ConnectError, || format!("syslog: {path}"))?;
                Sock::Unix(s)
            }
        };
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "-".to_string());
        Ok(Syslog {
            sock,
            host,
            app: field(app),
            pid: std::process::id(),
        })
    }

    /// Send `msg` with `severity` (0 emergency … 3 error, 4 warning, 6
    /// info, 7 debug) and `msgid`. A lost datagram is not an error: logging
    /// must never stop the server.
    pub fn send(&self, severity: u8, msgid: &str, msg: &str) {
        let line = self.format(severity, msgid, msg, SystemTime::now());
        let _ = match &self.sock {
            Sock::Udp(s) => s.send(line.as_bytes()),
            Sock::Unix(s) => s.send(line.as_bytes()),
        };
    }

    /// One RFC 5424 message: `<PRI>1 TIMESTAMP HOST APP PROCID MSGID - MSG`.
    pub fn format(&self, severity: u8, msgid: &str, msg: &str, at: SystemTime) -> String {
        format!(
            "<{}>1 {} {} {} {} {} - {}",
            u16::from(FACILITY) * 8 + u16::from(severity.min(7)),
            rfc3339(at),
            self.host,
            self.app,
            self.pid,
            field(msgid),
            msg.trim_end_matches('\n')
        )
    }
}

/// A header field: printable ASCII without spaces, at most 48 characters,
/// `-` when empty (RFC 5424 §6.2).
fn field(s: &str) -> String {
    let f: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(48)
        .collect();
    if f.is_empty() {
        "-".to_string()
    } else {
        f
    }
}

/// Civil date from days since 1970-01-01 (proleptic Gregorian).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// UTC date and time parts of `at`: (year, month, day, h, m, s, micros).
pub fn utc_parts(at: SystemTime) -> (i64, u32, u32, u32, u32, u32, u32) {
    let d = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (y, mo, day) = civil(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400) as u32;
    (
        y,
        mo,
        day,
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_micros(),
    )
}

/// `2026-12-01T14:18:19.123456Z`.
pub fn rfc3339(at: SystemTime) -> String {
    let (y, mo, d, h, mi, s, us) = utc_parts(at);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{us:06}Z")
}

/// Names the type; its state is not shown.
impl std::fmt::Debug for SyslogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyslogWriter").finish_non_exhaustive()
    }
}

/// A `Write` that sends each write as one syslog message (the error log's
/// writer: `tracing` writes one event per call).
pub struct SyslogWriter {
    syslog: Syslog,
    severity: u8,
}

impl SyslogWriter {
    /// Messages go to `syslog` with `severity`.
    pub fn new(syslog: Syslog, severity: u8) -> Self {
        SyslogWriter { syslog, severity }
    }
}

impl Write for SyslogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            // tracing's level is the first word (or the second, after a
            // time stamp).
            let level = line
                .split_whitespace()
                .take(2)
                .find(|w| matches!(*w, "ERROR" | "WARN" | "INFO" | "DEBUG" | "TRACE"));
            let severity = match level {
                Some("ERROR") => 3,
                Some("WARN") => 4,
                Some("INFO") => 6,
                Some("DEBUG") | Some("TRACE") => 7,
                _ => self.severity,
            };
            self.syslog.send(severity, "-", line.trim());
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_micros(1_764_598_699_123_456);
        assert_eq!(rfc3339(t), "2025-12-01T14:18:19.123456Z");
        assert_eq!(
            rfc3339(SystemTime::UNIX_EPOCH),
            "1970-01-01T00:00:00.000000Z"
        );
        // A leap day.
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.000000Z");
    }

    #[test]
    fn targets() {
        assert_eq!(
            "syslog:udp:127.0.0.1:514".parse::<SyslogTarget>().unwrap(),
            SyslogTarget::Udp("127.0.0.1:514".into())
        );
        assert_eq!(
            "syslog:unix:/dev/log".parse::<SyslogTarget>().unwrap(),
            SyslogTarget::Unix("/dev/log".into())
        );
        for bad in [
            "syslog:udp:nohost",
            "syslog:tcp:1.2.3.4:5",
            "syslog:unix:",
            "/var/log/x",
        ] {
            assert!(bad.parse::<SyslogTarget>().is_err(), "{bad}");
        }
    }

    #[test]
    fn unix_datagram_socket() {
        let path = std::env::temp_dir().join(format!("pingora-syslog-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let l = UnixDatagram::bind(&path).unwrap();
        let target: SyslogTarget = format!("syslog:unix:{}", path.display()).parse().unwrap();
        let mut w = SyslogWriter::new(Syslog::connect(&target, "app").unwrap(), 6);
        w.write_all(b" WARN pingora: upstream slow\n").unwrap();
        let mut buf = [0u8; 512];
        let n = l.recv(&mut buf).unwrap();
        let got = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(
            got.starts_with("<132>1 ") && got.ends_with(" - - WARN pingora: upstream slow"),
            "{got}"
        );
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn message_format() {
        let l = UdpSocket::bind("127.0.0.1:0").unwrap();
        let target = SyslogTarget::Udp(l.local_addr().unwrap().to_string());
        let s = Syslog::connect(&target, "my app").unwrap();
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1);
        let line = s.format(6, "access", "GET / 200\n", t);
        let pid = std::process::id();
        assert!(
            line.starts_with("<134>1 1970-01-01T00:00:01.000000Z "),
            "{line}"
        );
        assert!(
            line.ends_with(&format!(" myapp {pid} access - GET / 200")),
            "{line}"
        );
        s.send(3, "", "boom");
        let mut buf = [0u8; 512];
        let n = l.recv(&mut buf).unwrap();
        let got = String::from_utf8_lossy(&buf[..n]);
        assert!(
            got.starts_with("<131>1 ") && got.ends_with(" - - boom"),
            "{got}"
        );
    }
}
