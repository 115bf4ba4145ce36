//! An access log for the `logging` phase: one line per request, in the
//! combined log format or as JSON, to a file or to syslog, as the conf's
//! `access_log` and `access_log_format` say.
//!
//! ```no_run
//! # use pingora_proxy::{access_log::AccessLog, Session};
//! # use pingora_core::server::ServerConf;
//! # fn f(conf: &ServerConf, session: &Session) -> pingora_error::Result<()> {
//! let log = AccessLog::from_conf(conf)?; // None when `access_log` is unset
//! // in `logging`:
//! if let Some(log) = &log {
//!     log.log(session, None, std::time::Duration::from_millis(3));
//! }
//! # Ok(()) }
//! ```

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use pingora_core::server::ServerConf;
use pingora_core::syslog::{rfc3339, utc_parts, Syslog, SyslogTarget};
use pingora_core::utils::json_str;
use pingora_error::{Error, ErrorType, OrErr, Result};

use crate::Session;

/// How each line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// The combined log format (Apache's and nginx's default).
    Combined,
    /// One JSON object per line.
    Json,
}

enum Sink {
    File(Mutex<File>),
    Syslog(Syslog),
}

/// Names the type; its state is not shown.
impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog").finish_non_exhaustive()
    }
}

/// Writes one line per request.
pub struct AccessLog {
    format: AccessLogFormat,
    sink: Sink,
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn json_opt(s: Option<&str>) -> String {
    s.map_or_else(|| "null".to_string(), json_str)
}

/// A quoted field of the combined format: `"-"` when absent; quotes and
/// control characters escaped as nginx does (`\xHH`).
fn clf_quoted(s: Option<&str>) -> String {
    let Some(s) = s else {
        return "\"-\"".to_string();
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for b in s.bytes() {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            out.push_str(&format!("\\x{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out.push('"');
    out
}

impl AccessLog {
    /// The access log the conf asks for (`access_log`, `access_log_format`),
    /// or `None` when `access_log` is unset.
    ///
    /// # Errors
    ///
    /// `ConfError` if `access_log_format` is not `combined` or `json`;
    /// otherwise those of [`open`](Self::open).
    pub fn from_conf(conf: &ServerConf) -> Result<Option<AccessLog>> {
        let Some(dest) = &conf.access_log else {
            return Ok(None);
        };
        let format = match conf.access_log_format.as_deref() {
            None | Some("combined") => AccessLogFormat::Combined,
            Some("json") => AccessLogFormat::Json,
            Some(f) => {
                return Error::e_explain(
                    ErrorType::ConfError,
                    format!("key `access_log_format`: {f:?} is not `combined` or `json`"),
                )
            }
        };
        Self::open(dest, format).map(Some)
    }

    /// An access log to `dest` (a file path, appended to, or a syslog
    /// target such as `syslog:udp:127.0.0.1:514`).
    ///
    /// # Errors
    ///
    /// `FileOpenError` if the file cannot be opened for appending. For a
    /// `syslog:` target: `InvalidInput` if it is malformed, `BindError`,
    /// `SocketError` or `ConnectError` if no socket can be set up.
    pub fn open(dest: &str, format: AccessLogFormat) -> Result<AccessLog> {
        let sink = if SyslogTarget::is_syslog(dest) {
            Sink::Syslog(Syslog::connect(&dest.parse()?, "pingora-access")?)
        } else {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(dest)
                .or_err_with(ErrorType::FileOpenError, || format!("access_log {dest}"))?;
            Sink::File(Mutex::new(f))
        };
        Ok(AccessLog { format, sink })
    }

    /// Log the request in `session`, which took `took`, with its error if
    /// it failed.
    pub fn log(&self, session: &Session, error: Option<&Error>, took: Duration) {
        let line = self.format_line(session, error, took, SystemTime::now());
        match &self.sink {
            Sink::File(f) => {
                let mut f = f.lock().unwrap_or_else(|p| p.into_inner());
                let _ = f.write_all(format!("{line}\n").as_bytes());
            }
            Sink::Syslog(s) => s.send(6, "access", &line),
        }
    }

    /// The line for one request, as of `now`.
    pub fn format_line(
        &self,
        session: &Session,
        error: Option<&Error>,
        took: Duration,
        now: SystemTime,
    ) -> String {
        // Read through the accessors, which do not build the map of a
        // header still as parsed.
        let req = session.req_header();
        let client = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map_or_else(|| "-".to_string(), |a| a.ip().to_string());
        let protocol = match req.version() {
            http::Version::HTTP_10 => "HTTP/1.0",
            http::Version::HTTP_2 => "HTTP/2.0",
            _ => "HTTP/1.1",
        };
        let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let status = session
            .response_written()
            .map(|r| r.status().as_u16())
            .or_else(|| error.map(crate::error_status))
            .unwrap_or(0);
        let bytes = session.body_bytes_sent();
        let (referer, agent, host) = (
            http::header::REFERER,
            http::header::USER_AGENT,
            http::header::HOST,
        );
        let header = |name| req.header_values(name).first_str();
        match self.format {
            AccessLogFormat::Combined => {
                let (y, mo, d, h, mi, s, _) = utc_parts(now);
                format!(
                    "{client} - - [{d:02}/{}/{y:04}:{h:02}:{mi:02}:{s:02} +0000] {} {status} {bytes} {} {}",
                    MONTHS[(mo - 1) as usize],
                    clf_quoted(Some(&format!("{} {target} {protocol}", req.method()))),
                    clf_quoted(header(&referer)),
                    clf_quoted(header(&agent)),
                )
            }
            AccessLogFormat::Json => {
                let host = header(&host).or_else(|| req.uri().authority().map(|a| a.as_str()));
                format!(
                    "{{\"time\":\"{}\",\"client\":{},\"method\":{},\"uri\":{},\"protocol\":\"{protocol}\",\"host\":{},\"status\":{status},\"bytes\":{bytes},\"duration_ms\":{:.3},\"referer\":{},\"user_agent\":{},\"error\":{},\"cache\":{}}}",
                    rfc3339(now),
                    json_str(&client),
                    json_str(req.method().as_str()),
                    json_str(target),
                    json_opt(host),
                    took.as_secs_f64() * 1000.0,
                    json_opt(header(&referer)),
                    json_opt(header(&agent)),
                    json_opt(error.map(|e| e.to_string()).as_deref()),
                    json_opt(session.cache_status().map(|c| c.as_str())),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(json_str("a\"b\\c\n\u{1}"), r#""a\"b\\c\n\u0001""#);
        assert_eq!(
            clf_quoted(Some("say \"hi\"\u{7f}")),
            r#""say \x22hi\x22\x7F""#
        );
        assert_eq!(clf_quoted(None), "\"-\"");
    }
}
