//! What the pipeline has seen, for the demo, logs and tests.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{SystemTime, UNIX_EPOCH};

use detectors::EngineStats;
use detectors::stage::StageStats;
use hdrhistogram::Histogram;
use ingest::Delivery;
use schemas::{Action, Decision};

pub struct FlowStats {
    pub events: AtomicU64,
    pub batches: AtomicU64,
    /// Decisions by action: none, alert, revoke.
    pub decisions: [AtomicU64; 3],
    /// Kafka record timestamp → batch received by the detect stage, µs.
    pub ingest_latency_us: Mutex<Histogram<u64>>,
    /// Kafka record timestamp of the triggering event → decision made, µs.
    pub decision_latency_us: Mutex<Histogram<u64>>,
    /// The detect stage's counters, live (every shard's, added up).
    engine: Mutex<StageStats>,
    /// The latest decisions, newest last, at most `recent_cap`.
    recent: Mutex<VecDeque<Decision>>,
    recent_cap: usize,
    /// Where the admin API listens, once it does.
    pub admin_addr: std::sync::OnceLock<std::net::SocketAddr>,
    /// Checks of the watched files for changes (GeoIP, metadata, rules).
    pub file_checks: std::sync::atomic::AtomicU64,
    /// Where the probes and metrics listen, once bound.
    pub probe_addr: std::sync::OnceLock<std::net::SocketAddr>,
    /// Whether the detect stage has applied the whole token-metadata topic
    /// as it stood at start (true when there is no topic). Events are not
    /// read before, so no token is judged without its metadata.
    pub metadata_ready: tokio::sync::watch::Sender<bool>,
    /// When each kind of reload last succeeded, Unix seconds (0: never),
    /// by [`Reloaded`] order.
    pub last_reload_s: [std::sync::atomic::AtomicI64; 3],
    /// Whether each health budget is exceeded now, by
    /// [`health::Reason`](super::health::Reason) order.
    pub degraded: [std::sync::atomic::AtomicBool; super::health::Reason::ALL.len()],
    /// The state restore running now, if any.
    restore: Mutex<super::changelog::RestoreProgress>,
    /// The state changelog's counters, when it is on.
    pub changelog: std::sync::OnceLock<std::sync::Arc<super::changelog::ChangelogStats>>,
    /// The repartition step's first hop (reading the source topics), when
    /// it is on; the main ingest counters are then detection's hop.
    pub repartition: std::sync::OnceLock<std::sync::Arc<ingest::IngestMetrics>>,
}

/// What a successful reload put in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reloaded {
    Policy = 0,
    GeoIp = 1,
    Metadata = 2,
}

impl Reloaded {
    pub const ALL: [Reloaded; 3] = [Reloaded::Policy, Reloaded::GeoIp, Reloaded::Metadata];

    pub fn name(self) -> &'static str {
        match self {
            Reloaded::Policy => "policy",
            Reloaded::GeoIp => "geoip",
            Reloaded::Metadata => "metadata",
        }
    }
}

fn histogram() -> Mutex<Histogram<u64>> {
    // 1 µs .. 1 hour at 3 significant digits; the bounds are constants.
    Mutex::new(
        Histogram::new_with_bounds(1, 3_600_000_000, 3)
            .unwrap_or_else(|_| unreachable!("valid bounds")),
    )
}

impl Default for FlowStats {
    fn default() -> Self {
        FlowStats {
            events: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            decisions: Default::default(),
            ingest_latency_us: histogram(),
            decision_latency_us: histogram(),
            engine: Mutex::default(),
            recent: Mutex::default(),
            recent_cap: 1000,
            admin_addr: std::sync::OnceLock::new(),
            probe_addr: std::sync::OnceLock::new(),
            file_checks: Default::default(),
            metadata_ready: tokio::sync::watch::Sender::new(true),
            last_reload_s: Default::default(),
            degraded: Default::default(),
            restore: Mutex::default(),
            changelog: std::sync::OnceLock::new(),
            repartition: std::sync::OnceLock::new(),
        }
    }
}

pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

fn quantiles(h: &Mutex<Histogram<u64>>) -> (f64, f64, f64) {
    match h.lock() {
        Ok(h) if !h.is_empty() => (
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
            h.max() as f64 / 1000.0,
        ),
        _ => (0.0, 0.0, 0.0),
    }
}

impl FlowStats {
    pub fn restore(&self) -> super::changelog::RestoreProgress {
        self.restore.lock().map(|r| r.clone()).unwrap_or_default()
    }

    pub fn set_restore(&self, progress: super::changelog::RestoreProgress) {
        if let Ok(mut r) = self.restore.lock() {
            *r = progress;
        }
    }

    pub fn update_restore(&self, f: impl FnOnce(&mut super::changelog::RestoreProgress)) {
        if let Ok(mut r) = self.restore.lock() {
            f(&mut r);
        }
    }

    /// Notes that a reload of `what` succeeded now.
    pub fn reloaded(&self, what: Reloaded) {
        self.last_reload_s[what as usize].store(now_us() / 1_000_000, Relaxed);
    }

    /// Records a batch's arrival, once per batch.
    pub fn record_batch(&self, delivery: &Delivery) {
        let now = now_us();
        if let Ok(mut h) = self.ingest_latency_us.lock() {
            for origin in &delivery.batch.origins {
                if let Some(ts) = origin.kafka_ts_ms {
                    h.saturating_record((now - ts * 1000).max(1) as u64);
                }
            }
        }
        self.events.fetch_add(delivery.batch.len() as u64, Relaxed);
        self.batches.fetch_add(1, Relaxed);
    }

    /// Keeps this many recent decisions for the admin API.
    pub fn with_recent_capacity(mut self, n: usize) -> Self {
        self.recent_cap = n;
        self
    }

    /// Follows this stage's counters from now on.
    pub fn follow_stage(&self, stats: StageStats) {
        if let Ok(mut e) = self.engine.lock() {
            *e = stats;
        }
    }

    pub fn engine_stats(&self) -> EngineStats {
        self.engine.lock().map(|e| e.merged()).unwrap_or_default()
    }

    /// Up to `limit` recent decisions, newest first.
    pub fn recent(&self, limit: usize) -> Vec<Decision> {
        self.recent
            .lock()
            .map(|r| r.iter().rev().take(limit).cloned().collect())
            .unwrap_or_default()
    }

    pub fn record_decisions(&self, decisions: &[Decision]) {
        if let Ok(mut r) = self.recent.lock() {
            for d in decisions {
                if r.len() >= self.recent_cap.max(1) {
                    r.pop_front();
                }
                r.push_back(d.clone());
            }
        }
        let now = now_us();
        let mut h = self.decision_latency_us.lock().ok();
        for d in decisions {
            self.decisions[d.action as usize].fetch_add(1, Relaxed);
            if let (Some(h), Some(ts)) = (h.as_mut(), d.kafka_ts_ms) {
                h.saturating_record((now - ts * 1000).max(1) as u64);
            }
        }
    }

    pub fn decided(&self, action: Action) -> u64 {
        self.decisions[action as usize].load(Relaxed)
    }

    /// `(p50, p99, max)` Kafka timestamp → detect stage, in ms.
    pub fn latency_ms(&self) -> (f64, f64, f64) {
        quantiles(&self.ingest_latency_us)
    }

    /// `(p50, p99, max)` Kafka timestamp → decision, in ms.
    pub fn decision_latency_ms(&self) -> (f64, f64, f64) {
        quantiles(&self.decision_latency_us)
    }
}
