//! The server's YAML configuration and its command-line options.
//!
//! The keys are Pingora's, so an existing Pingora conf file loads
//! unchanged. Unknown keys are ignored (they may be the user's own: read
//! them with [`load_yaml`] into a type of your own).

use std::path::Path;

use clap::Parser;
use pingora_error::{Error, ErrorType, OrErr, Result};
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// The command-line options every server takes.
///
/// Flatten it into your own `clap` parser to add options of your own:
/// `#[command(flatten)] opt: Opt`.
#[derive(Parser, Debug, Clone, Default)]
#[command(about = "A server built on the pingora framework")]
pub struct Opt {
    /// Take the listening sockets from a running instance (zero-downtime
    /// upgrade): wait on `upgrade_sock` for the old process to hand them
    /// over when it receives SIGQUIT.
    #[arg(short, long)]
    pub upgrade: bool,

    /// Run in the background (fork, new session, pid file).
    #[arg(short, long)]
    pub daemon: bool,

    /// Load and check the configuration, print `configuration OK` or the
    /// error, and exit 0 or 1.
    #[arg(short, long)]
    pub test: bool,

    /// The YAML configuration file.
    #[arg(short, long, value_name = "FILE")]
    pub conf: Option<String>,
}

impl Opt {
    /// Parse the process's command line; prints help or an error and exits
    /// on bad arguments.
    pub fn parse_args() -> Self {
        Opt::parse()
    }
}

/// The server's configuration. Every key has a default, so an empty file
/// (or none) is a valid configuration.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub struct ServerConf {
    /// Version of the conf format; must be 1.
    pub version: usize,
    /// Worker threads per service.
    pub threads: usize,
    /// `true`: one work-stealing runtime with `threads` workers per
    /// service. `false`: `threads` single-threaded runtimes per service,
    /// each accepting on its own. With `threads: 1` both mean one
    /// single-threaded runtime.
    pub work_stealing: bool,
    /// Where daemon mode writes the process id.
    pub pid_file: String,
    /// The Unix socket over which listening sockets are handed to a new
    /// process during a graceful upgrade.
    pub upgrade_sock: String,
    /// Run in the background, as with `-d`.
    pub daemon: bool,
    /// In daemon mode, the process started by the command waits for the
    /// daemon to be ready before it exits: listening, or (with `-u`)
    /// waiting for the old process's sockets. It exits 0 then, or 1 if
    /// the daemon did not get there within `daemon_ready_timeout_seconds`.
    /// So a supervisor (systemd's `ExecReload`) goes on, e.g. to send the
    /// old process SIGQUIT, only once the new one can take over. Off by
    /// default: the command exits as soon as the daemon is forked.
    pub daemon_wait_for_ready: bool,
    /// How long `daemon_wait_for_ready` waits (default 600 s).
    pub daemon_ready_timeout_seconds: Option<std::num::NonZeroU64>,
    /// Append logs (and, in daemon mode, stderr) to this file.
    pub error_log: Option<String>,
    /// In daemon mode, switch to this user after start-up.
    pub user: Option<String>,
    /// In daemon mode, switch to this group after start-up. The groups the
    /// process started with are dropped: with `user` set, the process
    /// takes that user's groups from the group database (like nginx's
    /// `initgroups`), otherwise this group alone.
    pub group: Option<String>,
    /// In daemon mode, change to this directory.
    pub working_directory: Option<String>,
    /// After handing the listening sockets to a new process, keep
    /// accepting for this long before the graceful shutdown starts.
    pub grace_period_seconds: Option<u64>,
    /// How long a graceful shutdown waits for in-flight work before the
    /// process exits anyway.
    pub graceful_shutdown_timeout_seconds: Option<u64>,
    /// Idle upstream connections kept for reuse, across all threads.
    pub upstream_keepalive_pool_size: usize,
    /// Source IPv4 addresses to bind outgoing connections to.
    pub client_bind_to_ipv4: Vec<String>,
    /// Source IPv6 addresses to bind outgoing connections to.
    pub client_bind_to_ipv6: Vec<String>,
    /// CA certificates (PEM) to verify upstreams with, instead of the
    /// system's.
    pub ca_file: Option<String>,
    /// Log level or `tracing` filter (`info`, `debug`,
    /// `warn,pingora_proxy=debug`); `RUST_LOG` overrides it. Default
    /// `info`. (Ours; not a Pingora key.)
    pub log_level: Option<String>,
    /// Where the access log goes: a file path, or a syslog target
    /// (`syslog:udp:HOST:PORT`, `syslog:unix:/dev/log`). None: no access
    /// log. (Ours; used by `pingora_proxy::access_log`.)
    pub access_log: Option<String>,
    /// `combined` (the default) or `json`. (Ours.)
    pub access_log_format: Option<String>,
    /// Report panics to this Sentry DSN (needs the `sentry` feature).
    /// (Ours; Pingora sets it in code.)
    pub sentry_dsn: Option<String>,
    /// Export OpenTelemetry traces of proxied requests to this OTLP/HTTP
    /// endpoint (`http://HOST:PORT/v1/traces`; `/v1/traces` when no path
    /// is given). Every HTTP proxy made with this conf
    /// (`pingora_proxy::http_proxy_service`, `HttpProxy::new`) then traces
    /// its requests; needs pingora-proxy's `otel` feature. (Ours.)
    pub otel_endpoint: Option<String>,
    /// The `service.name` the traces are exported under (default: the
    /// program's file name). (Ours.)
    pub otel_service_name: Option<String>,
    /// How traces go to `otel_endpoint`, as OTLP's
    /// `OTEL_EXPORTER_OTLP_PROTOCOL`: `http/protobuf` (the default),
    /// `http/json` or `grpc` (the endpoint is then the collector's gRPC
    /// address, `http://HOST:4317`). (Ours.)
    pub otel_protocol: Option<String>,
    /// Most retries of one proxied request whose error allows a retry
    /// (Pingora's key; default 16, its fail-safe). Proxies made with this
    /// conf take it as `ProxyOptions::max_retries`.
    pub max_retries: usize,
    /// Pingora's key for parallel accept loops; accepted, and not needed
    /// here: every runtime of a service accepts on each listener.
    pub listener_tasks_per_fd: usize,
    /// Pingora's key; accepted, no effect (upstream connects run on the
    /// service's runtimes).
    pub upstream_connect_offload_threadpools: Option<usize>,
    /// Pingora's key; accepted, no effect (see above).
    pub upstream_connect_offload_thread_per_pool: Option<usize>,
    /// Pingora's key; accepted, no effect: TLS keys are never logged.
    pub upstream_debug_ssl_keylog: bool,
    /// Pingora's key; accepted, no effect: the hand-over of sockets to a
    /// new process is bounded by time (10 s to send, 300 s to receive).
    pub upgrade_sock_connect_accept_max_retries: Option<usize>,
}

/// Default for `grace_period_seconds`.
pub const DEFAULT_GRACE_PERIOD_SECONDS: u64 = 5;
/// Default for `graceful_shutdown_timeout_seconds`.
pub const DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT_SECONDS: u64 = 300;

impl Default for ServerConf {
    fn default() -> Self {
        ServerConf {
            version: 1,
            threads: 1,
            work_stealing: true,
            pid_file: "/tmp/pingora.pid".into(),
            upgrade_sock: "/tmp/pingora_upgrade.sock".into(),
            daemon: false,
            daemon_wait_for_ready: false,
            daemon_ready_timeout_seconds: None,
            error_log: None,
            user: None,
            group: None,
            working_directory: None,
            grace_period_seconds: None,
            graceful_shutdown_timeout_seconds: None,
            upstream_keepalive_pool_size: 128,
            client_bind_to_ipv4: vec![],
            client_bind_to_ipv6: vec![],
            ca_file: None,
            log_level: None,
            access_log: None,
            access_log_format: None,
            sentry_dsn: None,
            otel_endpoint: None,
            otel_service_name: None,
            otel_protocol: None,
            max_retries: 16,
            listener_tasks_per_fd: 1,
            upstream_connect_offload_threadpools: None,
            upstream_connect_offload_thread_per_pool: None,
            upstream_debug_ssl_keylog: false,
            upgrade_sock_connect_accept_max_retries: None,
        }
    }
}

/// The line of `text` where `key:` is set at the start of a line, if any.
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with(':'))
        })
        .map(|i| i + 1)
}

/// The key set on line `line` (1-based) of `text`, if that line sets one.
fn key_on_line(text: &str, line: usize) -> Option<String> {
    let l = text.lines().nth(line.checked_sub(1)?)?;
    let (key, _) = l.trim_start().trim_start_matches("- ").split_once(':')?;
    let key = key.trim().trim_matches(|c| c == '"' || c == '\'');
    (!key.is_empty() && !key.contains(' ')).then(|| key.to_string())
}

/// Parse YAML `text` (read from `origin`) into any type, with an error
/// that names the key and line at fault.
///
/// # Errors
///
/// `ConfError` if `text` is not YAML or does not fit `T` (a wrong type, a
/// missing or refused key), naming `origin` and, when known, the key and line.
pub fn from_yaml_str<T: DeserializeOwned>(text: &str, origin: &str) -> Result<T> {
    serde_saphyr::from_str(text).map_err(|e| {
        let line = e.location().map(|l| l.line() as usize).filter(|l| *l > 0);
        let key = line.and_then(|l| key_on_line(text, l));
        // serde's message, on one line, without its own location suffix.
        let msg = e.to_string();
        let msg = msg.lines().next().unwrap_or("").trim().to_string();
        let ctx = match (key, line) {
            (Some(k), Some(l)) => format!("{origin}: key `{k}` (line {l}): {msg}"),
            (None, Some(l)) => format!("{origin}: line {l}: {msg}"),
            _ => format!("{origin}: {msg}"),
        };
        Error::explain(ErrorType::ConfError, ctx)
    })
}

/// Read and parse a YAML file into any type (for example a type holding
/// the user's own keys from the server's conf file).
///
/// # Errors
///
/// `ConfError` if the file cannot be read, or as for [`from_yaml_str`],
/// naming the file.
pub fn load_yaml<T: DeserializeOwned>(path: impl AsRef<Path>) -> Result<T> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).or_err_with(ErrorType::ConfError, || {
        format!("cannot read conf file {}", path.display())
    })?;
    from_yaml_str(&text, &path.display().to_string())
}

impl ServerConf {
    /// Parse and check a conf from YAML text.
    ///
    /// # Errors
    ///
    /// `ConfError` if the text is not YAML or a value has the wrong type, or
    /// if [`validate`](Self::validate) refuses a value; it names the key and
    /// its line when they are known.
    pub fn from_yaml(text: &str) -> Result<Self> {
        Self::from_yaml_named(text, "conf")
    }

    pub(crate) fn from_yaml_named(text: &str, origin: &str) -> Result<Self> {
        // An empty document is the default conf.
        let conf: ServerConf = if text.trim().is_empty() {
            ServerConf::default()
        } else {
            from_yaml_str(text, origin)?
        };
        conf.validate().map_err(|(key, msg)| {
            let ctx = match line_of_key(text, key) {
                Some(l) => format!("{origin}: key `{key}` (line {l}): {msg}"),
                None => format!("{origin}: key `{key}`: {msg}"),
            };
            Error::explain(ErrorType::ConfError, ctx)
        })?;
        Ok(conf)
    }

    /// Read, parse and check a conf file.
    ///
    /// # Errors
    ///
    /// `ConfError` if the file cannot be read, or as for
    /// [`from_yaml`](Self::from_yaml), naming the file.
    pub fn load_from_yaml(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).or_err_with(ErrorType::ConfError, || {
            format!("cannot read conf file {}", path.display())
        })?;
        Self::from_yaml_named(&text, &path.display().to_string())
    }

    /// Check values that parse but make no sense: returns the key at fault
    /// and why.
    ///
    /// # Errors
    ///
    /// The first key at fault and why: a `version` other than 1, `threads` 0 or
    /// over 1024, an empty path, a bad syslog target, log format or level, a
    /// bind address of the wrong family, a `ca_file` or `working_directory`
    /// that is not there, an `otel_*` value that is not a URL, name or protocol.
    pub fn validate(&self) -> std::result::Result<(), (&'static str, String)> {
        if self.version != 1 {
            return Err((
                "version",
                format!("unsupported version {}, expected 1", self.version),
            ));
        }
        if self.threads == 0 {
            return Err(("threads", "must be at least 1".into()));
        }
        if self.threads > 1024 {
            return Err(("threads", format!("{} is more than 1024", self.threads)));
        }
        if self.upgrade_sock.is_empty() {
            return Err(("upgrade_sock", "must not be empty".into()));
        }
        if self.pid_file.is_empty() {
            return Err(("pid_file", "must not be empty".into()));
        }
        for (key, value) in [
            ("error_log", &self.error_log),
            ("access_log", &self.access_log),
        ] {
            if let Some(v) = value {
                if v.is_empty() {
                    return Err((key, "must not be empty".into()));
                }
                if crate::syslog::SyslogTarget::is_syslog(v) {
                    if let Err(e) = v.parse::<crate::syslog::SyslogTarget>() {
                        return Err((key, e.context().unwrap_or("bad syslog target").to_string()));
                    }
                }
            }
        }
        if let Some(f) = &self.access_log_format {
            if f != "combined" && f != "json" {
                return Err((
                    "access_log_format",
                    format!("{f:?} is not `combined` or `json`"),
                ));
            }
        }
        if let Some(l) = &self.log_level {
            if let Err(e) = tracing_subscriber::EnvFilter::try_new(l) {
                return Err((
                    "log_level",
                    format!("{l:?} is not a log level or filter: {e}"),
                ));
            }
        }
        for a in &self.client_bind_to_ipv4 {
            if a.parse::<std::net::Ipv4Addr>().is_err() {
                return Err((
                    "client_bind_to_ipv4",
                    format!("{a:?} is not an IPv4 address"),
                ));
            }
        }
        for a in &self.client_bind_to_ipv6 {
            if a.parse::<std::net::Ipv6Addr>().is_err() {
                return Err((
                    "client_bind_to_ipv6",
                    format!("{a:?} is not an IPv6 address"),
                ));
            }
        }
        if let Some(f) = &self.ca_file {
            if !Path::new(f).is_file() {
                return Err(("ca_file", format!("{f:?} is not a readable file")));
            }
        }
        if let Some(e) = &self.otel_endpoint {
            let rest = e
                .strip_prefix("http://")
                .or_else(|| e.strip_prefix("https://"));
            if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
                return Err((
                    "otel_endpoint",
                    format!("{e:?} is not an http:// or https:// URL"),
                ));
            }
        }
        if self.otel_service_name.as_deref() == Some("") {
            return Err(("otel_service_name", "must not be empty".into()));
        }
        if let Some(p) = &self.otel_protocol {
            if !["http/protobuf", "http/json", "grpc"].contains(&p.as_str()) {
                return Err((
                    "otel_protocol",
                    format!("{p:?} is not one of http/protobuf, http/json, grpc"),
                ));
            }
        }
        if let Some(d) = &self.working_directory {
            if !Path::new(d).is_dir() {
                return Err(("working_directory", format!("{d:?} is not a directory")));
            }
        }
        Ok(())
    }

    /// `grace_period_seconds` or its default.
    pub fn grace_period(&self) -> std::time::Duration {
        std::time::Duration::from_secs(
            self.grace_period_seconds
                .unwrap_or(DEFAULT_GRACE_PERIOD_SECONDS),
        )
    }

    /// `graceful_shutdown_timeout_seconds` or its default.
    pub fn graceful_shutdown_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(
            self.graceful_shutdown_timeout_seconds
                .unwrap_or(DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT_SECONDS),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pingora_conf_loads_unchanged() {
        let text = "---\nversion: 1\nthreads: 2\npid_file: /run/pingora.pid\n\
                    upgrade_sock: /tmp/pingora_upgrade.sock\nuser: nobody\ngroup: webusers\n\
                    upstream_connect_offload_threadpools: 2\nwork_stealing: false\n\
                    grace_period_seconds: 10\ngraceful_shutdown_timeout_seconds: 3\n\
                    client_bind_to_ipv4: [127.0.0.2]\n";
        let c = ServerConf::from_yaml(text).unwrap();
        assert_eq!(c.threads, 2);
        assert!(!c.work_stealing);
        assert_eq!(c.user.as_deref(), Some("nobody"));
        assert_eq!(c.grace_period().as_secs(), 10);
        assert_eq!(c.client_bind_to_ipv4, vec!["127.0.0.2"]);
    }

    #[test]
    fn empty_is_default() {
        assert_eq!(ServerConf::from_yaml("").unwrap(), ServerConf::default());
        assert_eq!(
            ServerConf::from_yaml("---\n").unwrap(),
            ServerConf::default()
        );
    }

    #[test]
    fn wrong_type_names_key_and_line() {
        let e = ServerConf::from_yaml("version: 1\nthreads: many\n").unwrap_err();
        let s = e.to_string();
        assert!(s.contains("key `threads` (line 2)"), "{s}");
    }

    #[test]
    fn bad_value_names_key_and_line() {
        let e = ServerConf::from_yaml("version: 1\n\nthreads: 0\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("key `threads` (line 3): must be at least 1"),
            "{e}"
        );
        let e = ServerConf::from_yaml("client_bind_to_ipv4: [nope]\n").unwrap_err();
        assert!(
            e.to_string().contains("key `client_bind_to_ipv4` (line 1)"),
            "{e}"
        );
    }

    #[test]
    fn otel_keys() {
        let c = ServerConf::from_yaml(
            "otel_endpoint: http://127.0.0.1:4318/v1/traces\notel_service_name: edge\n",
        )
        .unwrap();
        assert_eq!(
            c.otel_endpoint.as_deref(),
            Some("http://127.0.0.1:4318/v1/traces")
        );
        assert_eq!(c.otel_service_name.as_deref(), Some("edge"));
        let c = ServerConf::from_yaml("otel_protocol: grpc\n").unwrap();
        assert_eq!(c.otel_protocol.as_deref(), Some("grpc"));
        let e = ServerConf::from_yaml("version: 1\notel_protocol: thrift\n").unwrap_err();
        assert!(
            e.to_string().contains("key `otel_protocol` (line 2)"),
            "{e}"
        );
        for bad in ["127.0.0.1:4318", "http://", "grpc://collector:4317"] {
            let e =
                ServerConf::from_yaml(&format!("version: 1\notel_endpoint: {bad}\n")).unwrap_err();
            assert!(
                e.to_string().contains("key `otel_endpoint` (line 2)"),
                "{e}"
            );
        }
    }

    #[test]
    fn bad_yaml_has_line() {
        let e = ServerConf::from_yaml("version: 1\nthreads: [1, 2\n").unwrap_err();
        assert!(e.to_string().contains("line"), "{e}");
    }

    #[test]
    fn user_keys_from_same_text() {
        #[derive(Deserialize, Debug)]
        struct Mine {
            my_port: u16,
        }
        let m: Mine = from_yaml_str("version: 1\nmy_port: 8080\n", "t").unwrap();
        assert_eq!(m.my_port, 8080);
        let e = from_yaml_str::<Mine>("version: 1\nmy_port: 70000\n", "t").unwrap_err();
        assert!(e.to_string().contains("key `my_port` (line 2)"), "{e}");
    }
}
