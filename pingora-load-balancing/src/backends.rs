//! The live backend set and each backend's health: active checks with
//! thresholds, and passive outlier ejection from reported errors.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
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
    healthy: AtomicBool,
    /// The current streak: (last result, how many in a row).
    streak: Mutex<(bool, usize)>,
    errors: AtomicUsize,
    /// The error-share window: (start in ns since the epoch, requests,
    /// errors). Counted only when `error_percent` is set.
    window: Mutex<(u64, u32, u32)>,
    ejections: AtomicU32,
    /// ns since the epoch until which it is ejected; 0 when not.
    ejected_until: AtomicU64,
}

/// Called with a backend and its new health (true = healthy).
pub type HealthObserver = Box<dyn Fn(&Backend, bool) + Send + Sync>;

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

    /// Hear every health change (from checks or ejection).
    pub fn set_health_observer(&mut self, f: HealthObserver) {
        self.observer = Some(f);
    }

    /// The current set, sorted.
    pub fn get(&self) -> Arc<Vec<Backend>> {
        self.set.load_full()
    }

    /// Health changes seen so far.
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
                    let h = Health::default();
                    h.healthy.store(true, Ordering::Relaxed);
                    health_gauge(b).set(1);
                    Arc::new(h)
                });
                (key, h)
            })
            .collect();
        self.health.store(Arc::new(health));
        self.set.store(Arc::new(new));
        true
    }

    /// Ask discovery again; returns whether the set changed.
    pub async fn update(&self) -> Result<bool> {
        let found = self.discovery.discover().await?;
        Ok(self.replace(found))
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
        if !h.healthy.load(Ordering::Relaxed) {
            return false;
        }
        // Never ejected (0): no clock to read.
        let until = h.ejected_until.load(Ordering::Relaxed);
        until == 0 || until <= self.now_ns()
    }

    fn changed(&self, b: &Backend, healthy: bool, why: &str) {
        self.changes.fetch_add(1, Ordering::Relaxed);
        health_gauge(b).set(i64::from(healthy));
        if healthy {
            info!(backend = %b.addr, "backend healthy again ({why})");
        } else {
            warn!(backend = %b.addr, "backend unhealthy ({why})");
        }
        if let Some(f) = &self.observer {
            f(b, healthy);
        }
    }

    /// Run the health check on every backend at once, and apply the
    /// results with their thresholds.
    pub async fn run_health_check(&self) {
        let Some(hc) = self.health_check.clone() else {
            return;
        };
        let set = self.get();
        let checks = set.iter().map(|b| {
            let hc = hc.clone();
            let b = b.clone();
            tokio::spawn(async move {
                let r = hc.check(&b).await;
                (b, r)
            })
        });
        let checks: Vec<_> = checks.collect();
        for task in checks {
            let Ok((b, result)) = task.await else {
                continue;
            };
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
                was != ok && streak.1 >= hc.threshold(ok)
            };
            if flip {
                h.healthy.store(ok, Ordering::Relaxed);
                let why = match &result {
                    Ok(()) => "health check passed".to_string(),
                    Err(e) => format!("health check failed: {e}"),
                };
                self.changed(&b, ok, &why);
            }
        }
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
            h.errors.store(0, Ordering::Relaxed);
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
        if (errors < self.outlier.consecutive_errors && share.is_none())
            || h.ejected_until.load(Ordering::Relaxed) > now
        {
            return;
        }
        let ejected = health
            .values()
            .filter(|x| x.ejected_until.load(Ordering::Relaxed) > now)
            .count();
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
        self.changed(b, false, &why);
    }

    /// Whether `b` is ejected now.
    pub fn is_ejected(&self, b: &Backend) -> bool {
        let health = self.health.load();
        health
            .get(&b.hash_key())
            .is_some_and(|h| h.ejected_until.load(Ordering::Relaxed) > self.now_ns())
    }
}

/// `pingora_backend_healthy{backend}`: 1 while the active health checks
/// find the backend healthy, else 0.
static HEALTHY: std::sync::LazyLock<prometheus::IntGaugeVec> = std::sync::LazyLock::new(|| {
    prometheus::register_int_gauge_vec!(
        "pingora_backend_healthy",
        "1 if the backend passes its health checks, else 0",
        &["backend"]
    )
    .expect("registering a built-in metric")
});

fn health_gauge(b: &Backend) -> prometheus::IntGauge {
    HEALTHY.with_label_values(&[&b.addr.to_string()])
}
