//! When a token's own history is long enough for "new" to mean something.
//!
//! Novelty (new ASN, user agent, action class) and new-country findings
//! stay silent until the token has at least `min_events` events spanning
//! at least `min_history`. After that they speak, with a confidence that
//! grows with the evidence: from `FIRST_CONFIDENCE` at `min_events` to 1.0
//! at `full_confidence_events`. Below the decision's
//! `min_confidence_to_revoke` (0.7) such a finding can alert but never
//! count towards a revocation, so a young token is judged carefully.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[detectors.learning]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LearningConfig {
    /// Events a token needs before anything is "new" for it.
    #[serde(default = "default_min_events")]
    pub min_events: u32,
    /// Time from a token's first event before anything is "new" for it.
    #[serde(default = "default_min_history", with = "humantime_serde")]
    pub min_history: Duration,
    /// Events at which novelty findings reach full confidence.
    #[serde(default = "default_full_events")]
    pub full_confidence_events: u32,
}

/// Confidence of a novelty finding on a token that has just finished
/// learning: enough to alert, not to revoke.
pub const FIRST_CONFIDENCE: f64 = 0.6;

fn default_min_events() -> u32 {
    50
}
fn default_min_history() -> Duration {
    Duration::from_secs(12 * 3600)
}
fn default_full_events() -> u32 {
    500
}

impl Default for LearningConfig {
    fn default() -> Self {
        LearningConfig {
            min_events: default_min_events(),
            min_history: default_min_history(),
            full_confidence_events: default_full_events(),
        }
    }
}

impl LearningConfig {
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.full_confidence_events < self.min_events {
            p.push(format!(
                "detectors.learning.full_confidence_events ({}) must be at least min_events ({})",
                self.full_confidence_events, self.min_events
            ));
        }
        if self.min_history > Duration::from_secs(365 * 86_400) {
            p.push("detectors.learning.min_history: at most 365d".into());
        }
        p
    }

    /// `None` while a token with `events` events over `age_s` seconds is
    /// still learning; otherwise the confidence its novelty deserves.
    pub fn confidence(&self, events: u32, age_s: u32) -> Option<f64> {
        if events < self.min_events || u64::from(age_s) < self.min_history.as_secs() {
            return None;
        }
        let span = self.full_confidence_events.saturating_sub(self.min_events);
        let progress = if span == 0 {
            1.0
        } else {
            f64::from(events - self.min_events) / f64::from(span)
        };
        Some(FIRST_CONFIDENCE + (1.0 - FIRST_CONFIDENCE) * progress.min(1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silent_until_enough_events_and_time_then_confidence_grows() {
        let l = LearningConfig::default();
        let day = 86_400;
        assert_eq!(l.confidence(10_000, 3600), None, "many events, one hour");
        assert_eq!(l.confidence(49, 10 * day), None, "old but sparse");
        assert_eq!(l.confidence(50, 12 * 3600), Some(FIRST_CONFIDENCE));
        let mid = l.confidence(275, day).unwrap();
        assert!((mid - 0.8).abs() < 1e-9, "{mid}");
        assert_eq!(l.confidence(500, day), Some(1.0));
        assert_eq!(l.confidence(u32::MAX, day), Some(1.0));
    }
}
