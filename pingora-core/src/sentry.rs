//! Error reporting to Sentry (feature `sentry`): panics, and the errors the
//! program chooses, become Sentry events when a DSN is configured (the
//! conf's `sentry_dsn`, or [`init`]).
//!
//! A small client of our own: it speaks Sentry's envelope protocol over
//! this crate's own HTTP/1 client (TLS for `https` DSNs), so the feature
//! adds no dependency. Each event is sent from a short-lived thread, with
//! a time limit, so that reporting never blocks or crashes the server.
//!
//! ```no_run
//! pingora_core::sentry::init("https://key@o0.ingest.sentry.io/42").unwrap();
//! let e = pingora_error::Error::explain(pingora_error::ErrorType::InternalError, "boom");
//! pingora_core::sentry::capture_error(&e);
//! ```

use std::str::FromStr;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use pingora_error::{Error, ErrorType, OrErr, Result};
use pingora_http::RequestHeader;

use crate::connectors::http::Connector;
use crate::upstreams::peer::HttpPeer;
use crate::utils::json_str;

/// A parsed DSN: `SCHEME://PUBLIC_KEY@HOST[:PORT]/PROJECT_ID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dsn {
    /// `https` or `http`.
    pub tls: bool,
    /// The public key.
    pub key: String,
    /// Host name or address.
    pub host: String,
    /// Port (443 or 80 when not given).
    pub port: u16,
    /// The project id.
    pub project: String,
    raw: String,
}

impl FromStr for Dsn {
    type Err = Box<Error>;
    fn from_str(s: &str) -> Result<Dsn> {
        let bad =
            |why: &str| Error::explain(ErrorType::InvalidInput, format!("sentry DSN {s:?}: {why}"));
        let (tls, rest) = if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(bad("must start with https:// or http://"));
        };
        let (key, rest) = rest.split_once('@').ok_or_else(|| bad("no public key"))?;
        let key = key.split(':').next().unwrap_or_default();
        let (hostport, project) = rest.split_once('/').ok_or_else(|| bad("no project id"))?;
        let project = project.trim_end_matches('/');
        if key.is_empty() || project.is_empty() || project.contains('/') {
            return Err(bad("needs a key and a project id"));
        }
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => {
                (h.to_string(), p.parse().map_err(|_| bad("bad port"))?)
            }
            _ => (hostport.to_string(), if tls { 443 } else { 80 }),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(Dsn {
            tls,
            key: key.to_string(),
            host,
            port,
            project: project.to_string(),
            raw: s.to_string(),
        })
    }
}

static DSN: OnceLock<Dsn> = OnceLock::new();

/// Report to `dsn` from now on: panics (through a panic hook that keeps
/// the one already installed) and [`capture_error`] /
/// [`capture_message`]. A second call keeps the first DSN.
pub fn init(dsn: &str) -> Result<()> {
    let dsn: Dsn = dsn.parse()?;
    if DSN.set(dsn).is_ok() {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(non-string panic)".into());
            let place = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            send("fatal", "panic", &msg, &place);
            previous(info);
        }));
    }
    Ok(())
}

/// Whether a DSN is set.
pub fn enabled() -> bool {
    DSN.get().is_some()
}

/// Report `e` (kind, source, context and causes) at level `error`.
pub fn capture_error(e: &Error) {
    send("error", e.etype().as_str(), &e.to_string(), "");
}

/// Report `msg` at `level` (`fatal`, `error`, `warning`, `info`, `debug`).
pub fn capture_message(level: &str, msg: &str) {
    send(level, "message", msg, "");
}

fn event_id() -> String {
    let mut b = [0u8; 16];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_err()
    {
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        b = t.to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The envelope for one event.
fn envelope(dsn: &Dsn, level: &str, kind: &str, msg: &str, place: &str) -> String {
    let id = event_id();
    let now = crate::syslog::rfc3339(SystemTime::now());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let event = format!(
        "{{\"event_id\":\"{id}\",\"timestamp\":\"{now}\",\"platform\":\"native\",\"level\":{},\"logger\":\"pingora\",\"server_name\":{},\"message\":{{\"formatted\":{}}},\"exception\":{{\"values\":[{{\"type\":{},\"value\":{}}}]}},\"extra\":{{\"location\":{}}}}}",
        json_str(level),
        json_str(host.trim()),
        json_str(msg),
        json_str(kind),
        json_str(msg),
        json_str(place),
    );
    format!(
        "{{\"event_id\":\"{id}\",\"dsn\":{},\"sent_at\":\"{now}\"}}\n{{\"type\":\"event\",\"length\":{}}}\n{event}\n",
        json_str(&dsn.raw),
        event.len()
    )
}

/// Send one event, waiting at most 5 s; failures are only logged.
fn send(level: &str, kind: &str, msg: &str, place: &str) {
    let Some(dsn) = DSN.get() else { return };
    let body = envelope(dsn, level, kind, msg, place);
    let dsn = dsn.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("sentry".into())
        .spawn(move || {
            let r = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .or_err(ErrorType::InternalError, "sentry: a runtime")
                .and_then(|rt| rt.block_on(post(&dsn, body)));
            let _ = tx.send(r);
        });
    if spawned.is_err() {
        return;
    }
    match rx.recv_timeout(Duration::from_secs(5)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("sending an event to sentry: {e}"),
        Err(_) => tracing::warn!("sending an event to sentry: timed out"),
    }
}

async fn post(dsn: &Dsn, body: String) -> Result<()> {
    let connector = Connector::new(None);
    let mut peer = HttpPeer::try_new(
        &format!("{}:{}", dsn.host, dsn.port),
        dsn.tls,
        dsn.host.clone(),
    )?;
    peer.options.connection_timeout = Some(Duration::from_secs(3));
    peer.options.read_timeout = Some(Duration::from_secs(3));
    peer.options.write_timeout = Some(Duration::from_secs(3));
    let (mut s, _) = connector.get_http_session(&peer).await?;
    let path = format!("/api/{}/envelope/", dsn.project);
    let mut req = RequestHeader::build("POST", path.as_bytes(), None)?;
    req.insert_header("Host", dsn.host.as_str())?;
    req.insert_header("Content-Type", "application/x-sentry-envelope")?;
    req.insert_header("Content-Length", body.len().to_string())?;
    req.insert_header(
        "X-Sentry-Auth",
        format!(
            "Sentry sentry_version=7, sentry_client=pingora/{}, sentry_key={}",
            env!("CARGO_PKG_VERSION"),
            dsn.key
        ),
    )?;
    s.write_request_header_eos(Box::new(req), false).await?;
    s.write_body(Bytes::from(body)).await?;
    s.finish_body(None).await?;
    s.read_response().await?;
    let status = s.resp_header().map_or(0, |r| r.status.as_u16());
    if !(200..300).contains(&status) {
        return Error::e_explain(ErrorType::HTTPStatus(status), "sentry refused the event");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsns() {
        let d: Dsn = "https://abc@o1.ingest.sentry.io/42".parse().unwrap();
        assert_eq!(
            (
                d.tls,
                d.key.as_str(),
                d.host.as_str(),
                d.port,
                d.project.as_str()
            ),
            (true, "abc", "o1.ingest.sentry.io", 443, "42")
        );
        let d: Dsn = "http://k:secret@127.0.0.1:9000/7".parse().unwrap();
        assert_eq!(
            (
                d.tls,
                d.key.as_str(),
                d.host.as_str(),
                d.port,
                d.project.as_str()
            ),
            (false, "k", "127.0.0.1", 9000, "7")
        );
        for bad in [
            "ftp://k@h/1",
            "https://h/1",
            "https://k@h",
            "https://k@h/",
            "http://k@:80/1",
        ] {
            assert!(bad.parse::<Dsn>().is_err(), "{bad}");
        }
    }
}
