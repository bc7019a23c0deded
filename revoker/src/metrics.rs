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
    /// Revocations that found no raw secret held and began to wait for one.
    pub awaiting_secret: u64,
    /// Revocations still not done `retry.alert_after` after their decision
    /// (one `revocation_failing` alert each).
    pub failing: u64,
    /// Records that named a token id already holding another secret.
    pub secret_conflicts: u64,
    /// Revoke decisions for tokens already in the ledger (no issuer call).
    pub duplicates: u64,
}

/// The label that every issuer not in the config is counted under: event
/// input names issuers, so it must not be able to mint labels.
pub const UNCONFIGURED: &str = "unconfigured";

pub struct RevokerMetrics {
    pub by_issuer: Mutex<BTreeMap<String, IssuerCounts>>,
    /// Configured issuers; `None` counts every name as it is (tests).
    known: Option<std::collections::BTreeSet<String>>,
    pub breaker_opened: AtomicU64,
    /// Ledger writes of a new revocation that failed (each retry counts).
    pub ledger_write_failures: AtomicU64,
    /// Alert messages held back by the alert budget.
    pub alerts_over_budget: AtomicU64,
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
            known: None,
            breaker_opened: AtomicU64::new(0),
            ledger_write_failures: AtomicU64::new(0),
            alerts_over_budget: AtomicU64::new(0),
            decision_to_answer_us: histogram(),
            event_to_revoked_us: histogram(),
        }
    }
}

impl RevokerMetrics {
    /// Counts only `issuers` by name; any other name is [`UNCONFIGURED`].
    pub fn for_issuers<'a>(issuers: impl IntoIterator<Item = &'a String>) -> Self {
        RevokerMetrics {
            known: Some(issuers.into_iter().cloned().collect()),
            ..Default::default()
        }
    }

    fn label<'a>(&self, issuer: &'a str) -> &'a str {
        match &self.known {
            Some(known) if !known.contains(issuer) => UNCONFIGURED,
            _ => issuer,
        }
    }

    pub fn count(&self, issuer: &str, f: impl FnOnce(&mut IssuerCounts)) {
        let label = self.label(issuer);
        if let Ok(mut m) = self.by_issuer.lock() {
            f(m.entry(label.to_string()).or_default());
        }
    }

    pub fn issuer(&self, issuer: &str) -> IssuerCounts {
        self.by_issuer
            .lock()
            .ok()
            .and_then(|m| m.get(self.label(issuer)).cloned())
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
