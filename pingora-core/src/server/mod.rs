//! The server: runs services, handles signals, shuts down and upgrades
//! gracefully.
//!
//! Life of a server:
//!
//! 1. [`Server::new`] reads the command line ([`Opt`]) and the YAML conf
//!    ([`ServerConf`]). With `-t` it checks the conf, prints the verdict and
//!    exits.
//! 2. [`Server::bootstrap`] goes to the background with `-d` and, with
//!    `-u`, receives the listening sockets of the process it replaces.
//! 3. [`Server::run_forever`] binds every service's listeners (or takes the
//!    inherited ones), starts each service on runtimes of its own, and
//!    waits for a signal:
//!    - **SIGTERM**: graceful shutdown. Stop accepting, let in-flight work
//!      finish within `graceful_shutdown_timeout_seconds`, exit 0.
//!    - **SIGINT**: fast shutdown: exit now.
//!    - **SIGQUIT**: graceful upgrade. Hand every listening socket to the
//!      new process waiting on `upgrade_sock`, keep accepting for
//!      `grace_period_seconds` (both processes accept; the kernel queues
//!      connections on the shared socket, so none is refused), then shut
//!      down gracefully.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use pingora_error::{ErrorType, OrErr, Result};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tracing::{error, info, warn};

/// The listening sockets handed over in a graceful upgrade (Pingora's path).
pub use crate::listeners::ListenFds;
use crate::services::{ReadyNotifier, ServiceContext, ServiceWithDependents};

pub mod configuration;
mod daemon;
mod handle;
mod logging;
mod signal;
pub mod transfer_fd;

pub use configuration::{Opt, ServerConf};
use handle::Dependencies;
pub use handle::ServiceHandle;
pub use signal::{RunArgs, ShutdownSignal, ShutdownSignalWatch, UnixShutdownSignalWatch};

/// Turns `true` when the server begins to shut down (defined in the leaf
/// module [`shutdown`](crate::shutdown); here as Pingora has it).
pub use crate::shutdown::ShutdownWatch;

/// How often a service waiting for its dependencies reports it
/// (`on_startup_delay`).
const STARTUP_DELAY_REPORT: Duration = Duration::from_secs(10);

/// How long after start-up inherited listening sockets that no listener
/// took and no service looked up (`ListenFds::lock().get`) are closed.
const UNCLAIMED_FDS_WAIT: Duration = Duration::from_secs(5);

/// How long a new process (`-u`) waits for the old one to send its sockets.
pub const UPGRADE_RECEIVE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the old process tries to reach the new one on SIGQUIT.
pub const UPGRADE_SEND_TIMEOUT: Duration = Duration::from_secs(10);

struct Entry {
    service: Box<dyn ServiceWithDependents>,
    ready: watch::Sender<bool>,
}

/// Names the type; its state is not shown.
impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").finish_non_exhaustive()
    }
}

/// Runs services until told to stop. See the [module docs](self).
pub struct Server {
    services: Vec<Entry>,
    deps: Dependencies,
    /// The loaded configuration.
    pub configuration: Arc<ServerConf>,
    /// The command-line options, if any.
    pub options: Option<Opt>,
    conf_text: Option<(String, String)>,
    listen_fds: ListenFds,
    /// The process that started the daemon, waiting to hear it is ready
    /// (`daemon_wait_for_ready`).
    ready_starter: Option<nix::unistd::Pid>,
    shutdown_tx: watch::Sender<bool>,
    shutdown_rx: ShutdownWatch,
    /// `bootstrap_as_a_service` was called: bootstrap when run.
    bootstrap_pending: bool,
}

/// The service `bootstrap_as_a_service` returns: the bootstrap itself runs
/// before any service starts, so this one is ready at once.
struct BootstrapDone;

#[async_trait::async_trait]
impl crate::services::background::BackgroundService for BootstrapDone {}

/// How the signal loop ended.
enum Exit {
    Graceful,
    Fast,
    Upgraded,
}

/// The runtimes of one service.
enum Runtimes {
    Steal(tokio::runtime::Runtime),
    NoSteal(
        Vec<(
            std::thread::JoinHandle<()>,
            tokio::sync::oneshot::Sender<()>,
        )>,
    ),
}

impl Server {
    /// Create a server from command-line options (`None`: no options, the
    /// default conf). Loads and checks the conf file given with `-c`.
    ///
    /// With `-t`, prints `configuration OK` (exit 0) or the error (exit 1)
    /// and does not return.
    ///
    /// # Errors
    ///
    /// `ConfError` if the `-c` file cannot be read, is not YAML of the conf's
    /// shape, or holds a value [`ServerConf::validate`] refuses; the error
    /// names the file and, when known, the key and its line.
    pub fn new(opt: impl Into<Option<Opt>>) -> Result<Server> {
        let opt = opt.into();
        let loaded = Self::load_conf(opt.as_ref());
        if opt.as_ref().is_some_and(|o| o.test) {
            match loaded {
                Ok(_) => {
                    println!("configuration OK");
                    std::process::exit(0)
                }
                Err(e) => {
                    eprintln!("configuration error: {e}");
                    std::process::exit(1)
                }
            }
        }
        let (conf, text) = loaded?;
        let mut server = Self::new_with_opt_and_conf(opt, conf);
        server.conf_text = text;
        Ok(server)
    }

    /// [`Server::new`], printing the error and exiting 1 on a bad conf.
    pub fn new_or_exit(opt: impl Into<Option<Opt>>) -> Server {
        Self::new(opt).unwrap_or_else(|e| {
            eprintln!("configuration error: {e}");
            std::process::exit(1)
        })
    }

    /// Create a server from options and an already-loaded conf.
    pub fn new_with_opt_and_conf(opt: impl Into<Option<Opt>>, mut conf: ServerConf) -> Server {
        let options = opt.into();
        if options.as_ref().is_some_and(|o| o.daemon) {
            conf.daemon = true;
        }
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        Server {
            services: vec![],
            deps: Dependencies::default(),
            configuration: Arc::new(conf),
            options,
            conf_text: None,
            listen_fds: ListenFds::new(),
            ready_starter: None,
            shutdown_tx,
            shutdown_rx,
            bootstrap_pending: false,
        }
    }

    fn load_conf(opt: Option<&Opt>) -> Result<(ServerConf, Option<(String, String)>)> {
        match opt.and_then(|o| o.conf.as_deref()) {
            None => Ok((ServerConf::default(), None)),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .or_err_with(ErrorType::ConfError, || {
                        format!("cannot read conf file {path}")
                    })?;
                let conf = ServerConf::from_yaml_named(&text, path)?;
                Ok((conf, Some((path.to_string(), text))))
            }
        }
    }

    /// Read the user's own keys from the same conf file into `T` (keys of
    /// the server's are ignored unless `T` names them). Without a conf
    /// file, `T` is parsed from an empty document.
    ///
    /// # Errors
    ///
    /// `ConfError` if the conf does not fit `T` (a wrong type, a missing key
    /// `T` requires), naming the file and, when known, the key and its line.
    pub fn user_conf<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        match &self.conf_text {
            Some((path, text)) => configuration::from_yaml_str(text, path),
            None => configuration::from_yaml_str("{}", "conf"),
        }
    }

    /// Prepare the process: set up logging, go to the background with
    /// `-d` (or `daemon: true`), and with `-u` receive the listening sockets
    /// of the process being replaced. Exits 1 with a message on failure.
    pub fn bootstrap(&mut self) {
        if let Err(e) = self.try_bootstrap() {
            eprintln!("start-up failed: {e}");
            error!("start-up failed: {e}");
            std::process::exit(1);
        }
    }

    fn try_bootstrap(&mut self) -> Result<()> {
        logging::init(
            self.configuration.error_log.as_deref(),
            self.configuration.log_level.as_deref(),
        )?;
        if self.configuration.daemon {
            self.ready_starter = daemon::daemonize(&self.configuration)?;
        }
        if let Some(dsn) = &self.configuration.sentry_dsn {
            #[cfg(feature = "sentry")]
            crate::sentry::init(dsn)?;
            #[cfg(not(feature = "sentry"))]
            tracing::warn!("sentry_dsn {dsn} is set, but this build has no `sentry` feature");
        }
        if self.options.as_ref().is_some_and(|o| o.upgrade) {
            // The starting process may go on now (a supervisor sends the
            // old process SIGQUIT next, which is what makes it send its
            // sockets); the old process retries while the socket appears.
            if let Some(starter) = self.ready_starter.take() {
                daemon::notify_ready(starter);
            }
            let sock = Path::new(&self.configuration.upgrade_sock);
            info!("waiting for listening sockets on {}", sock.display());
            let fds = transfer_fd::receive_fds(sock, UPGRADE_RECEIVE_TIMEOUT)?;
            crate::metrics::core()
                .upgrades
                .with_label_values(&["received"])
                .inc();
            info!("received {} listening sockets", fds.len());
            self.listen_fds.set_inherited(fds);
        }
        Ok(())
    }

    /// Add a service (any [`Service`](crate::services::Service) or
    /// [`ServiceWithDependents`]); returns a handle for declaring
    /// dependencies.
    pub fn add_service(&mut self, service: impl ServiceWithDependents + 'static) -> ServiceHandle {
        self.add_boxed_service(Box::new(service))
    }

    /// Add a boxed service.
    pub fn add_boxed_service(&mut self, service: Box<dyn ServiceWithDependents>) -> ServiceHandle {
        let (tx, rx) = watch::channel(false);
        let handle = ServiceHandle {
            id: self.services.len(),
            name: service.name().to_string(),
            ready: rx,
            deps: Arc::downgrade(&self.deps),
        };
        self.services.push(Entry { service, ready: tx });
        self.deps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(vec![]);
        handle
    }

    /// Add several boxed services; their handles, in order.
    pub fn add_services(
        &mut self,
        services: Vec<Box<dyn ServiceWithDependents>>,
    ) -> Vec<ServiceHandle> {
        services
            .into_iter()
            .map(|s| self.add_boxed_service(s))
            .collect()
    }

    /// Start `dependent` only once `dependency` is ready (same as
    /// `dependent.add_dependency(dependency)`).
    pub fn add_dependency(&mut self, dependent: &ServiceHandle, dependency: &ServiceHandle) {
        dependent.add_dependency(dependency);
    }

    /// [`bootstrap`](Self::bootstrap) as a service (as Pingora's): the
    /// start-up steps run when the server runs, and the services that
    /// depend on the returned handle start after them. Call it instead of
    /// `bootstrap`.
    pub fn bootstrap_as_a_service(&mut self) -> ServiceHandle {
        self.bootstrap_pending = true;
        self.add_service(crate::services::background::background_service(
            "bootstrap",
            BootstrapDone,
        ))
    }

    /// A receiver that turns true when shutdown starts (for code outside
    /// the services).
    pub fn shutdown_watch(&self) -> ShutdownWatch {
        self.shutdown_rx.clone()
    }

    /// Run the services until a signal from `run_args` stops the server,
    /// and return (as Pingora's); on a start-up failure, print it and exit
    /// 1.
    pub fn run(self, run_args: RunArgs) {
        if let Err(e) = self.run_with(run_args) {
            eprintln!("server failed: {e}");
            error!("server failed: {e}");
            std::process::exit(1)
        }
    }

    /// Run the services until a signal stops the server; then exit the
    /// process (0 after a graceful or fast shutdown or an upgrade).
    pub fn run_forever(self) -> ! {
        match self.run_with(RunArgs::default()) {
            Ok(()) => std::process::exit(0),
            Err(e) => {
                eprintln!("server failed: {e}");
                error!("server failed: {e}");
                std::process::exit(1)
            }
        }
    }

    fn run_with(mut self, run_args: RunArgs) -> Result<()> {
        if std::mem::take(&mut self.bootstrap_pending) {
            self.try_bootstrap()?;
        }
        let conf = self.configuration.clone();
        let main_rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .or_err(ErrorType::InternalError, "main runtime")?;
        // Ask for the first signal before anything runs, so that the
        // watch is in place (the Unix one installs its handlers then) and
        // none is lost to the default action.
        let watch = run_args.shutdown_signal;
        let mut early = main_rt.block_on(async {
            tokio::select! {
                biased;
                s = watch.recv() => Some(s),
                _ = std::future::ready(()) => None,
            }
        });
        // Resolves once a fast shutdown is asked for.
        let fast = || async { while watch.recv().await != ShutdownSignal::FastShutdown {} };

        for e in &mut self.services {
            let name = e.service.name().to_string();
            e.service
                .bind(&self.listen_fds)
                .map_err(|err| err.wrap(ErrorType::BindError, format!("service {name}")))?;
        }

        let mut running = Vec::new();
        let mut tasks = Vec::new();
        let mut all_deps =
            std::mem::take(&mut *self.deps.lock().unwrap_or_else(|p| p.into_inner()));
        for (i, e) in self.services.drain(..).enumerate() {
            let name = e.service.name().to_string();
            let threads = e.service.threads().unwrap_or(conf.threads).max(1);
            let (rts, handles) = build_runtimes(&name, threads, conf.work_stealing)?;
            let ctx = ServiceContext {
                shutdown: self.shutdown_rx.clone(),
                ready: ReadyNotifier(e.ready),
                runtimes: handles.clone(),
                threads,
                fds: self.listen_fds.clone(),
            };
            let mut service = e.service;
            let deps = all_deps.get_mut(i).map(std::mem::take).unwrap_or_default();
            tasks.push(handles[0].spawn(async move {
                let started = std::time::Instant::now();
                for mut d in deps {
                    if !*d.ready.borrow() {
                        info!("service {name} waits for {}", d.name);
                    }
                    loop {
                        let wait = d.ready.wait_for(|r| *r);
                        match tokio::time::timeout(STARTUP_DELAY_REPORT, wait).await {
                            Ok(_) => break,
                            Err(_) => service.on_startup_delay(started.elapsed()),
                        }
                    }
                }
                service.run(ctx).await;
            }));
            running.push(rts);
        }
        info!("server started, pid {}", std::process::id());

        // Listening: a starting process that waits may go on.
        if let Some(starter) = self.ready_starter.take() {
            daemon::notify_ready(starter);
        }
        // Inherited sockets nobody took are closed (a client must not wait
        // on a socket nobody accepts on), once services of the user's that
        // look theirs up in `start_service` (Pingora's way) have had time to.
        let fds = self.listen_fds.clone();
        main_rt.spawn(async move {
            tokio::time::sleep(UNCLAIMED_FDS_WAIT).await;
            for key in fds.unclaimed() {
                warn!("inherited listener {key} is not in this configuration; closing it");
                if let Some(fd) = fds.take_inherited(&key) {
                    let _ = nix::unistd::close(fd);
                }
            }
        });
        let exit = main_rt.block_on(async {
            loop {
                let signal = match early.take() {
                    Some(s) => s,
                    None => watch.recv().await,
                };
                match signal {
                    ShutdownSignal::GracefulTerminate => {
                        info!("SIGTERM: graceful shutdown");
                        return Exit::Graceful;
                    }
                    ShutdownSignal::FastShutdown => {
                        info!("SIGINT: fast shutdown");
                        return Exit::Fast;
                    }
                    ShutdownSignal::GracefulUpgrade => {
                        info!("SIGQUIT: handing listening sockets to the new process");
                        let fds = self.listen_fds.own();
                        let sock = conf.upgrade_sock.clone();
                        let sent = tokio::task::spawn_blocking(move || {
                            transfer_fd::send_fds(Path::new(&sock), &fds, UPGRADE_SEND_TIMEOUT)
                        })
                        .await;
                        match sent {
                            Ok(Ok(())) => {
                                crate::metrics::core()
                                    .upgrades
                                    .with_label_values(&["sent"])
                                    .inc();
                                return Exit::Upgraded;
                            }
                            Ok(Err(e)) => error!("upgrade failed, still serving: {e}"),
                            Err(e) => error!("upgrade failed, still serving: {e}"),
                        }
                    }
                }
            }
        });

        match exit {
            Exit::Fast => return Ok(()),
            Exit::Upgraded => {
                let grace = conf.grace_period();
                info!("sockets handed over; accepting for {grace:?} more, then shutting down");
                main_rt.block_on(async {
                    tokio::select! {
                        _ = tokio::time::sleep(grace) => {}
                        _ = fast() => {
                            info!("SIGINT: fast shutdown");
                            std::process::exit(0);
                        }
                    }
                });
            }
            Exit::Graceful => {}
        }

        self.shutdown_tx.send_replace(true);
        let timeout = conf.graceful_shutdown_timeout();
        let finished = main_rt.block_on(async {
            let all = async {
                for t in tasks {
                    let _ = t.await;
                }
            };
            tokio::select! {
                r = tokio::time::timeout(timeout, all) => Some(r.is_ok()),
                _ = fast() => None,
            }
        });
        match finished {
            Some(true) => info!("graceful shutdown complete"),
            Some(false) => warn!(
                "graceful shutdown: work still in flight after \
                 graceful_shutdown_timeout_seconds ({timeout:?}); exiting anyway"
            ),
            None => warn!("SIGINT during the graceful shutdown: exiting now"),
        }
        for rts in running {
            match rts {
                Runtimes::Steal(rt) => rt.shutdown_timeout(Duration::from_millis(100)),
                Runtimes::NoSteal(threads) => {
                    for (_, stop) in threads {
                        let _ = stop.send(());
                    }
                }
            }
        }
        Ok(())
    }
}

/// Build a service's runtimes; returns them and their handles.
fn build_runtimes(name: &str, threads: usize, steal: bool) -> Result<(Runtimes, Vec<Handle>)> {
    // With one thread there is nobody to steal from: a current-thread
    // runtime does the same work without the multi-thread scheduler's
    // atomics and wake-ups.
    if steal && threads > 1 {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name(name)
            .enable_all()
            .build()
            .or_err_with(ErrorType::InternalError, || format!("runtime for {name}"))?;
        let h = rt.handle().clone();
        return Ok((Runtimes::Steal(rt), vec![h]));
    }
    let mut threads_out = Vec::with_capacity(threads);
    let mut handles = Vec::with_capacity(threads);
    for i in 0..threads {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .or_err_with(ErrorType::InternalError, || format!("runtime for {name}"))?;
        handles.push(rt.handle().clone());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let t = std::thread::Builder::new()
            .name(format!("{name}-{i}"))
            .spawn(move || {
                let _ = rt.block_on(stop_rx);
                rt.shutdown_timeout(Duration::from_millis(100));
            })
            .or_err_with(ErrorType::InternalError, || format!("thread for {name}"))?;
        threads_out.push((t, stop_tx));
    }
    Ok((Runtimes::NoSteal(threads_out), handles))
}
