//! Scope: an action that none of the token's allowed patterns match.

use schemas::{DetectorKind, Evidence, Finding};

use crate::detector::{Detector, Observation};
use crate::state::TokenState;

pub struct ScopeDetector;

impl Detector for ScopeDetector {
    fn kind(&self) -> DetectorKind {
        DetectorKind::Scope
    }

    fn stateful(&self) -> bool {
        false
    }

    fn observe(&self, obs: &Observation<'_>, _: &mut TokenState, out: &mut Vec<Finding>) {
        let Some(scopes) = obs.metadata.and_then(|m| m.scopes.as_ref()) else {
            return;
        };
        let action = &obs.event.action;
        if scopes.iter().any(|g| g.matches(action)) {
            return;
        }
        let allowed: Vec<String> = scopes.iter().map(|g| g.as_string()).collect();
        let evidence = Evidence {
            events: vec![obs.event_ref()],
            ..Default::default()
        }
        .fact("action", action.as_str())
        .fact("scopes", allowed.clone());
        let summary = format!(
            "{action} is outside the token's scopes ({})",
            allowed.join(", ")
        );
        out.push(Finding::new(
            DetectorKind::Scope,
            "out_of_scope",
            0.9,
            summary,
            evidence,
        ));
    }
}

#[cfg(test)]
mod tests;
