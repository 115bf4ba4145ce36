//! Logging through `tracing`: to stderr, to the `error_log` file, or to
//! syslog when `error_log` is a syslog target. The level comes from
//! `RUST_LOG`, else the conf's `log_level`, else `info`.

use std::fs::OpenOptions;
use std::sync::Mutex;

use pingora_error::{ErrorType, OrErr, Result};
use tracing_subscriber::EnvFilter;

use crate::syslog::{Syslog, SyslogTarget, SyslogWriter};

/// Install the global subscriber, unless the program installed its own.
pub(crate) fn init(error_log: Option<&str>, log_level: Option<&str>) -> Result<()> {
    let filter = EnvFilter::try_from_default_env()
        .ok()
        .or_else(|| log_level.and_then(|l| EnvFilter::try_new(l).ok()))
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    // `try_init` fails only when a subscriber is already set: keep theirs.
    match error_log {
        Some(target) if SyslogTarget::is_syslog(target) => {
            let target: SyslogTarget = target.parse()?;
            let app = std::env::args()
                .next()
                .and_then(|a| a.rsplit('/').next().map(str::to_string))
                .unwrap_or_else(|| "pingora".into());
            let syslog = Syslog::connect(&target, &app)?;
            let _ = builder
                .with_ansi(false)
                .without_time() // syslog stamps each message
                .with_writer(Mutex::new(SyslogWriter::new(syslog, 6)))
                .try_init();
        }
        Some(path) => {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .or_err_with(ErrorType::FileOpenError, || format!("error_log {path}"))?;
            let _ = builder
                .with_ansi(false)
                .with_writer(Mutex::new(file))
                .try_init();
        }
        None => {
            use std::io::IsTerminal;
            let ansi = std::io::stderr().is_terminal();
            let _ = builder
                .with_ansi(ansi)
                .with_writer(std::io::stderr)
                .try_init();
        }
    }
    Ok(())
}
