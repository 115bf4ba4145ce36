//! Logging through `tracing`: to stderr, or to the `error_log` file.
//! The level comes from `RUST_LOG` (default `info`).

use std::fs::OpenOptions;
use std::sync::Mutex;

use pingora_error::{ErrorType, OrErr, Result};
use tracing_subscriber::EnvFilter;

/// Install the global subscriber, unless the program installed its own.
pub fn init(error_log: Option<&str>) -> Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    // `try_init` fails only when a subscriber is already set: keep theirs.
    match error_log {
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
