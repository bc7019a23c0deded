//! Expiry: a call made with a token after its `expires_at`. The issuer
//! should have refused it; that it did not is itself a finding.

use schemas::{DetectorKind, Evidence, Finding};

use crate::detector::{Detector, Observation};
use crate::state::TokenState;

pub struct ExpiryDetector;

impl Detector for ExpiryDetector {
    fn kind(&self) -> DetectorKind {
        DetectorKind::Expiry
    }

    fn stateful(&self) -> bool {
        false
    }

    fn observe(&self, obs: &Observation<'_>, _: &mut TokenState, out: &mut Vec<Finding>) {
        let Some(expires) = obs.metadata.and_then(|m| m.expires_at_ms) else {
            return;
        };
        let ts = obs.event.ts_ms;
        if ts <= expires {
            return;
        }
        let late_s = (ts - expires) / 1000;
        let evidence = Evidence {
            observed: Some(late_s as f64),
            unit: Some("s after expiry"),
            events: vec![obs.event_ref()],
            ..Default::default()
        }
        .fact("expires_at", schemas::time::format_rfc3339_ms(expires));
        let summary = format!(
            "used {late_s} s after it expired at {}",
            schemas::time::format_rfc3339_ms(expires)
        );
        out.push(Finding::new(
            DetectorKind::Expiry,
            "expired",
            1.0,
            summary,
            evidence,
        ));
    }
}

#[cfg(test)]
mod tests;
