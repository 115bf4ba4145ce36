//! Error reporting to Sentry (feature `sentry`): panics, and the errors the
//! program chooses, become Sentry events when a DSN is configured (the
//! conf's `sentry_dsn`, or [`init`]).
//!
//! Through the `sentry` crate, the field's client: its panic integration
//! (with a backtrace), host and OS contexts, and its transport (a
//! background thread with `ureq`, TLS by rustls, so reporting works the
//! same whichever TLS library the proxy uses and never blocks a request).
//! A panic's report is flushed (at most 2 s) before the panic goes on.
//!
//! ```no_run
//! pingora_core::sentry::init("https://key@o0.ingest.sentry.io/42").unwrap();
//! let e = pingora_error::Error::explain(pingora_error::ErrorType::InternalError, "boom");
//! pingora_core::sentry::capture_error(&e);
//! ```

use std::sync::OnceLock;
use std::time::Duration;

use pingora_error::{Error, ErrorType, Result};
use sentry::protocol::{Event, Exception, Level};

/// The client's guard, kept for the life of the process (dropping it would
/// shut the client down).
static GUARD: OnceLock<sentry::ClientInitGuard> = OnceLock::new();

/// Report to `dsn` from now on: panics (the panic hook already installed
/// still runs after ours) and [`capture_error`] / [`capture_message`]. A
/// second call keeps the first DSN. An invalid DSN is an error naming it.
///
/// # Errors
///
/// `InvalidInput` if `dsn` does not parse as a Sentry DSN (checked on every
/// call, even when a DSN is already set).
pub fn init(dsn: &str) -> Result<()> {
    let parsed: sentry::types::Dsn = dsn.parse().map_err(|e| {
        Error::because(
            ErrorType::InvalidInput,
            format!("sentry DSN {dsn:?} is not valid"),
            e,
        )
    })?;
    GUARD.get_or_init(|| {
        let mut options = sentry::ClientOptions::new();
        options.dsn = Some(parsed);
        options.release = Some(concat!("pingora@", env!("CARGO_PKG_VERSION")).into());
        // Reports must not wait long on a slow collector at exit.
        options.shutdown_timeout = Duration::from_secs(2);
        sentry::init(options)
    });
    Ok(())
}

/// Whether a DSN is set.
pub fn enabled() -> bool {
    sentry::Hub::current()
        .client()
        .is_some_and(|c| c.is_enabled())
}

/// Report `e` at level `error`: its kind as the exception's type, the
/// whole error (source, context and causes) as its value.
pub fn capture_error(e: &Error) {
    let exception = Exception {
        ty: e.etype().as_str().to_string(),
        value: Some(e.to_string()),
        ..Default::default()
    };
    sentry::capture_event(Event {
        level: Level::Error,
        message: Some(e.to_string()),
        exception: vec![exception].into(),
        logger: Some("pingora".into()),
        ..Default::default()
    });
}

/// Report `msg` at `level` (`fatal`, `error`, `warning`, `info`, `debug`;
/// anything else is `error`).
pub fn capture_message(level: &str, msg: &str) {
    let level = match level {
        "fatal" => Level::Fatal,
        "warning" => Level::Warning,
        "info" => Level::Info,
        "debug" => Level::Debug,
        _ => Level::Error,
    };
    sentry::capture_message(msg, level);
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_invalid_dsn_is_refused_by_name() {
        for bad in ["ftp://k@h/1", "https://h/1", "https://k@h", "not a dsn"] {
            let e = super::init(bad).unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
        assert!(!super::enabled());
    }
}
