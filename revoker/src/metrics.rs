//! Revocation counters and latency histograms. Issuers are labels; token
//! ids never are.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use hdrhistogram::Histogram;

/// Per-issuer outcome counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IssuerCounts {
    pub attempts: u64,
    pub retries: u64,
    pub revoked: u64,
    pub accepted: u64,
    pub failed: u64,
    /// Revoke decisions for tokens already in the ledger (no issuer call).
    pub duplicates: u64,
}

pub struct RevokerMetrics {
    pub by_issuer: Mutex<BTreeMap<String, IssuerCounts>>,
    pub breaker_opened: AtomicU64,
    /// Decision → issuer's final answer, µs.
    pub decision_to_answer_us: Mutex<Histogram<u64>>,
    /// Kafka timestamp of the triggering event → issuer confirmed, µs.
    pub event_to_revoked_us: Mutex<Histogram<u64>>,
}

fn histogram() -> Mutex<Histogram<u64>> {
    Mutex::new(
        Histogram::new_with_bounds(1, 3_600_000_000, 3)
            .unwrap_or_else(|_| unreachable!("valid bounds")),
    )
}

impl Default for RevokerMetrics {
    fn default() -> Self {
        RevokerMetrics {
            by_issuer: Mutex::default(),
            breaker_opened: AtomicU64::new(0),
            decision_to_answer_us: histogram(),
            event_to_revoked_us: histogram(),
        }
    }
}

impl RevokerMetrics {
    pub fn count(&self, issuer: &str, f: impl FnOnce(&mut IssuerCounts)) {
        if let Ok(mut m) = self.by_issuer.lock() {
            f(m.entry(issuer.to_string()).or_default());
        }
    }

    pub fn issuer(&self, issuer: &str) -> IssuerCounts {
        self.by_issuer
            .lock()
            .ok()
            .and_then(|m| m.get(issuer).cloned())
            .unwrap_or_default()
    }

    pub fn record_latency(h: &Mutex<Histogram<u64>>, us: i64) {
        if let Ok(mut h) = h.lock() {
            h.saturating_record(us.max(1) as u64);
        }
    }

    pub fn breaker_opened(&self) -> u64 {
        self.breaker_opened.load(Relaxed)
    }
}
