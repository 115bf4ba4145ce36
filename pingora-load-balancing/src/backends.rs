//! The live backend set and each backend's health: active checks with
//! thresholds, and passive outlier ejection from reported errors.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, TryLockError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use pingora_core::utils::BuildPreHashed;
use pingora_error::Result;
use tracing::{info, warn};

use crate::discovery::ServiceDiscovery;
use crate::health_check::HealthCheck;
use crate::Backend;

/// Keys of the health map are already hashes (`Backend::hash_key`): used
/// as they are instead of hashed again.
type HealthMap = HashMap<u64, Arc<Health>, BuildPreHashed>;

/// Passive health: how reported errors eject a backend. Two triggers,
/// either of which ejects: errors in a row, and (when `error_percent` is
/// set) the share of failed requests within a window, which catches a
/// backend that fails often but not several times in a row.
#[derive(Debug, Clone, Copy)]
pub struct OutlierEjection {
    /// Errors in a row that eject a backend (default 5).
    pub consecutive_errors: usize,
    /// Eject a backend once this percentage of its requests in the current
    /// window failed (checked on each error); `None` (the default) turns
    /// this trigger off.
    pub error_percent: Option<u32>,
    /// The window `error_percent` is counted over (default 10 s); a window
    /// starts with the first report after the last one ended.
    pub error_window: Duration,
    /// Requests a window must hold before its share of errors counts
    /// (default 20), so that two failures out of three do not eject.
    pub error_min_requests: u32,
    /// How long the first ejection lasts (default 30 s); each later
    /// ejection of the same backend lasts twice as long as the one before,
    /// up to 32 times this.
    pub base_ejection_time: Duration,
    /// Never eject more than this percentage of the backends at once
    /// (default 50).
    pub max_ejection_percent: u32,
}

impl Default for OutlierEjection {
    fn default() -> Self {
        OutlierEjection {
            consecutive_errors: 5,
            error_percent: None,
            error_window: Duration::from_secs(10),
            error_min_requests: 20,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_percent: 50,
        }
    }
}

/// One backend's health.
#[derive(Default)]
struct Health {
    /// What the active checks say.
    healthy: AtomicBool,
    /// Whether discovery (or the program) left it enabled.
    enabled: AtomicBool,
    /// The current streak: (last result, how many in a row).
    streak: Mutex<(bool, usize)>,
    errors: AtomicUsize,
    /// The error-share window: (start in ns since the epoch, requests,
    /// errors). Counted only when `error_percent` is set.
    window: Mutex<(u64, u32, u32)>,
    ejections: AtomicU32,
    /// ns since the epoch until which it is ejected; 0 when not. The first
    /// reader to see an ejection over sets it back to 0 and reports the
    /// return.
    ejected_until: AtomicU64,
    /// What the gauge and the observer were last told: whether the backend
    /// may be picked (healthy by the checks and not ejected). Locked only
    /// to report a change, never to read whether a backend is ready.
    reported: Mutex<bool>,
    /// What the observer was last told. Held by the one thread telling
    /// it, so that its calls for a backend never overlap or cross.
    observed: Mutex<bool>,
}

impl Health {
    /// A new backend: healthy, and reported so.
    fn new_healthy() -> Self {
        Health {
            healthy: AtomicBool::new(true),
            enabled: AtomicBool::new(true),
            reported: Mutex::new(true),
            observed: Mutex::new(true),
            ..Default::default()
        }
    }

    /// Whether it may be picked at `now` (ns since the epoch), as far as
    /// the checks, discovery and ejections say.
    fn usable_at(&self, now: u64) -> bool {
        self.healthy.load(Ordering::Relaxed)
            && self.enabled.load(Ordering::Relaxed)
            && !self.ejected_at(now)
    }

    /// Whether an ejection is in force at `now` (ns since the epoch).
    fn ejected_at(&self, now: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now
    }
}

/// Called with a backend and whether it may now be picked (true: healthy by
/// the checks and not ejected; false: down or ejected).
pub type HealthObserver = Box<dyn Fn(&Backend, bool) + Send + Sync>;

/// Names the type; its state is not shown.
impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends").finish_non_exhaustive()
    }
}

/// The backends of a load balancer and what is known of their health.
/// Readers never take a lock: the set and the health map are swapped
/// whole.
pub struct Backends {
    discovery: Box<dyn ServiceDiscovery>,
    health_check: Option<Arc<dyn HealthCheck>>,
    set: ArcSwap<Vec<Backend>>,
    health: ArcSwap<HealthMap>,
    outlier: OutlierEjection,
    observer: Option<HealthObserver>,
    epoch: Instant,
    changes: AtomicU64,
}

impl Backends {
    /// Backends from `discovery`. All start healthy.
    pub fn new(discovery: Box<dyn ServiceDiscovery>) -> Self {
        Backends {
            discovery,
            health_check: None,
            set: ArcSwap::default(),
            health: ArcSwap::default(),
            outlier: OutlierEjection::default(),
            observer: None,
            epoch: Instant::now(),
            changes: AtomicU64::new(0),
        }
    }

    /// Check each backend actively with `hc`.
    pub fn set_health_check(&mut self, hc: Box<dyn HealthCheck>) {
        self.health_check = Some(Arc::from(hc));
    }

    /// How reported errors eject backends.
    pub fn set_outlier_ejection(&mut self, o: OutlierEjection) {
        self.outlier = o;
    }

    /// Hear every change of whether a backend may be picked: a health check
    /// taking it out or back, an ejection, and the end of an ejection. The
    /// end of an ejection is noticed by the first selection that considers
    /// the backend after its cooling period, or by the load balancer's next
    /// background tick, whichever comes first. A backend the checks find
    /// down is not reported back when its ejection ends, only once the
    /// checks find it healthy again.
    ///
    /// The callback runs on the thread that noticed the change (possibly a
    /// request's), so it should be quick. Its calls for one backend never
    /// overlap and always end on the backend's latest state: it hears
    /// `false` and `true` in turn, never the same value twice in a row.
    pub fn set_health_observer(&mut self, f: HealthObserver) {
        self.observer = Some(f);
    }

    /// The current set, sorted.
    pub fn get(&self) -> Arc<Vec<Backend>> {
        self.set.load_full()
    }

    /// The current set as Pingora gives it (a `BTreeSet`, built for the
    /// call: [`get`](Self::get) is the cheap form).
    pub fn get_backend(&self) -> Arc<BTreeSet<Backend>> {
        Arc::new(self.set.load().iter().cloned().collect())
    }

    /// Health changes reported so far (each change of the
    /// `pingora_backend_healthy` gauge). The observer hears each of them,
    /// except that changes made while it is still being told of an earlier
    /// one reach it as their net result.
    pub fn health_changes(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }

    /// Replace the set; returns whether it changed. New backends start
    /// healthy; known ones keep their state.
    pub(crate) fn replace(&self, new: BTreeSet<Backend>) -> bool {
        let new: Vec<Backend> = new.into_iter().collect();
        if *self.set.load_full() == new {
            return false;
        }
        let old = self.health.load();
        let health = new
            .iter()
            .map(|b| {
                let key = b.hash_key();
                let h = old.get(&key).cloned().unwrap_or_else(|| {
                    health_gauge(b).set(1);
                    Arc::new(Health::new_healthy())
                });
                (key, h)
            })
            .collect();
        self.health.store(Arc::new(health));
        self.set.store(Arc::new(new));
        true
    }

    /// Ask discovery again; returns whether the set changed. The backends
    /// discovery enables or disables are set so (see
    /// [`set_enable`](Self::set_enable)).
    ///
    /// # Errors
    ///
    /// Whatever discovery's [`discover`](ServiceDiscovery::discover) returns;
    /// the set is left as it was then.
    pub async fn update(&self) -> Result<bool> {
        let (found, enablement) = self.discovery.discover().await?;
        let changed = self.replace(found);
        if !enablement.is_empty() {
            for b in self.get().iter() {
                if let Some(&enabled) = enablement.get(&b.hash_key()) {
                    self.set_enable(b, enabled);
                }
            }
        }
        Ok(changed)
    }

    /// Enable or disable `backend` (Pingora's): a disabled backend stays
    /// in the set, keeps being health-checked, and is never picked. Not
    /// in the set: nothing happens.
    pub fn set_enable(&self, backend: &Backend, enabled: bool) {
        let health = self.health.load();
        if let Some(h) = health.get(&backend.hash_key()) {
            if h.enabled.swap(enabled, Ordering::Relaxed) != enabled {
                let why = if enabled { "enabled" } else { "disabled" };
                self.report_change(backend, h, why);
            }
        }
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Whether `b` may be picked: healthy by the checks and not ejected.
    pub fn ready(&self, b: &Backend) -> bool {
        let health = self.health.load();
        let Some(h) = health.get(&b.hash_key()) else {
            return false;
        };
        h.healthy.load(Ordering::Relaxed)
            && h.enabled.load(Ordering::Relaxed)
            && !self.still_ejected(b, h)
    }

    /// Whether `h` (the health of `b`) is ejected now. An ejection found
    /// over is cleared here, once (whoever clears it reports the return);
    /// a backend never ejected, or back, costs one load and no clock read.
    fn still_ejected(&self, b: &Backend, h: &Health) -> bool {
        let until = h.ejected_until.load(Ordering::Relaxed);
        if until == 0 {
            return false;
        }
        if until > self.now_ns() {
            return true;
        }
        if h.ejected_until
            .compare_exchange(until, 0, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.report_change(b, h, "ejection over");
        }
        false
    }

    /// End the ejections whose cooling period is over, and report them
    /// back (the load balancer's background service does this on each
    /// tick, so a backend no selection considers is reported too).
    pub(crate) fn end_ejections(&self) {
        let health = self.health.load();
        for b in self.get().iter() {
            if let Some(h) = health.get(&b.hash_key()) {
                self.still_ejected(b, h);
            }
        }
    }

    /// Tell the gauge and the observer if whether `b` may be picked changed
    /// since they were last told. Returns whether it did.
    fn report_change(&self, b: &Backend, h: &Health, why: &str) -> bool {
        let usable = {
            let mut reported = h.reported.lock().unwrap_or_else(|p| p.into_inner());
            let usable = h.usable_at(self.now_ns());
            if *reported == usable {
                return false;
            }
            *reported = usable;
            // Set under the lock, so the last change wins.
            health_gauge(b).set(i64::from(usable));
            usable
        };
        self.changes.fetch_add(1, Ordering::Relaxed);
        if usable {
            info!(backend = %b.addr, "backend healthy again ({why})");
        } else {
            warn!(backend = %b.addr, "backend unhealthy ({why})");
        }
        if let Some(f) = &self.observer {
            Self::tell_observer(f, b, h);
        }
        true
    }

    /// Bring the observer up to date with `reported`, in order: one thread
    /// at a time tells it, always the latest value, and only changes. A
    /// thread that finds another telling leaves its change to that one,
    /// which looks again after letting go. The observer runs outside the
    /// `reported` lock, and may itself select and report (that inner
    /// report finds the telling taken and is told by the outer loop).
    fn tell_observer(f: &HealthObserver, b: &Backend, h: &Health) {
        let latest = || *h.reported.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let mut told = match h.observed.try_lock() {
                Ok(g) => g,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => return,
            };
            let mut now = latest();
            while *told != now {
                *told = now;
                f(b, now);
                now = latest();
            }
            let last = *told;
            drop(told);
            // A change made while we held the telling, by a thread that
            // then found it taken and left: tell it (or find that another
            // thread now does).
            if latest() == last {
                return;
            }
        }
    }

    /// Run the health check on every backend, all at once when `parallel`
    /// (each in a task of its own) or one after another, and apply the
    /// results with their thresholds.
    pub async fn run_health_check(&self, parallel: bool) {
        let Some(hc) = self.health_check.clone() else {
            return;
        };
        let set = self.get();
        let mut results = Vec::with_capacity(set.len());
        if parallel {
            let checks: Vec<_> = set
                .iter()
                .map(|b| {
                    let hc = hc.clone();
                    let b = b.clone();
                    tokio::spawn(async move {
                        let r = hc.check(&b).await;
                        (b, r)
                    })
                })
                .collect();
            for task in checks {
                if let Ok(done) = task.await {
                    results.push(done);
                }
            }
        } else {
            for b in set.iter() {
                results.push((b.clone(), hc.check(b).await));
            }
        }
        for (b, result) in results {
            let ok = result.is_ok();
            let health = self.health.load();
            let Some(h) = health.get(&b.hash_key()) else {
                continue;
            };
            let flip = {
                let mut streak = h.streak.lock().unwrap_or_else(|p| p.into_inner());
                if streak.0 == ok {
                    streak.1 += 1;
                } else {
                    *streak = (ok, 1);
                }
                let was = h.healthy.load(Ordering::Relaxed);
                was != ok && streak.1 >= hc.health_threshold(ok)
            };
            if flip {
                h.healthy.store(ok, Ordering::Relaxed);
                hc.health_status_change(&b, ok).await;
                let why = match &result {
                    Ok(()) => "health check passed".to_string(),
                    Err(e) => format!("health check failed: {e}"),
                };
                self.report_change(&b, h, &why);
            }
        }
        self.end_ejections();
    }

    /// Report how a request to `b` went (passive health). Enough errors in
    /// a row, or (if set) a high enough share of errors in the window,
    /// eject it for a while, unless too many are ejected already.
    pub fn report(&self, b: &Backend, ok: bool) {
        let health = self.health.load();
        let Some(h) = health.get(&b.hash_key()) else {
            return;
        };
        // The clock is read only when something needs it: a success with
        // no error share to count costs nothing more.
        if ok && self.outlier.error_percent.is_none() {
            // Read first: every thread writing the shared line on every
            // request would move it between their caches for nothing.
            if h.errors.load(Ordering::Relaxed) != 0 {
                h.errors.store(0, Ordering::Relaxed);
            }
            return;
        }
        let now = self.now_ns();
        // This window's requests and errors, this report included.
        let window = self.outlier.error_percent.map(|pct| {
            let mut w = h.window.lock().unwrap_or_else(|p| p.into_inner());
            if now.saturating_sub(w.0) >= self.outlier.error_window.as_nanos() as u64 {
                *w = (now, 0, 0);
            }
            w.1 += 1;
            w.2 += u32::from(!ok);
            (pct, w.1, w.2)
        });
        if ok {
            h.errors.store(0, Ordering::Relaxed);
            return;
        }
        let errors = h.errors.fetch_add(1, Ordering::Relaxed) + 1;
        let share = window.filter(|&(pct, total, failed)| {
            total >= self.outlier.error_min_requests
                && u64::from(failed) * 100 >= u64::from(pct) * u64::from(total)
        });
        // An ejection found over here is reported over before the next one.
        if (errors < self.outlier.consecutive_errors && share.is_none()) || self.still_ejected(b, h)
        {
            return;
        }
        let ejected = health.values().filter(|x| x.ejected_at(now)).count();
        let total = health.len().max(1);
        if (ejected + 1) * 100 > total * self.outlier.max_ejection_percent as usize {
            return;
        }
        let k = h.ejections.fetch_add(1, Ordering::Relaxed).min(5);
        let time = self.outlier.base_ejection_time * (1u32 << k);
        h.ejected_until
            .store(now + time.as_nanos() as u64, Ordering::Relaxed);
        h.errors.store(0, Ordering::Relaxed);
        *h.window.lock().unwrap_or_else(|p| p.into_inner()) = (now, 0, 0);
        let why = match share {
            Some((_, total, failed)) if errors < self.outlier.consecutive_errors => {
                format!("ejected for {time:?} after {failed} errors in {total} requests")
            }
            _ => format!("ejected for {time:?} after {errors} errors in a row"),
        };
        if !self.report_change(b, h, &why) {
            info!(backend = %b.addr, "backend already down by its health checks ({why})");
        }
    }

    /// Whether `b` is ejected now.
    pub fn is_ejected(&self, b: &Backend) -> bool {
        let health = self.health.load();
        health
            .get(&b.hash_key())
            .is_some_and(|h| self.still_ejected(b, h))
    }
}

/// `pingora_backend_healthy{backend}`: 1 while the backend may be picked
/// (its active health checks pass and it is not ejected), else 0.
static HEALTHY: std::sync::LazyLock<prometheus::IntGaugeVec> = std::sync::LazyLock::new(|| {
    prometheus::register_int_gauge_vec!(
        "pingora_backend_healthy",
        "1 if the backend may be picked (passes its health checks, not ejected), else 0",
        &["backend"]
    )
    .expect("registering a built-in metric")
});

fn health_gauge(b: &Backend) -> prometheus::IntGauge {
    HEALTHY.with_label_values(&[&b.addr.to_string()])
}
