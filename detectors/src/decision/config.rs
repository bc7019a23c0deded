//! The `[decision]` config section.

use std::collections::BTreeMap;
use std::time::Duration;

use ipnet::IpNet;
use schemas::{Action, DetectorKind, Mode};
use serde::{Deserialize, Serialize};

/// How findings become actions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionConfig {
    /// `enforce` revokes; `dry_run` only alerts, saying "would revoke".
    #[serde(default)]
    pub mode: Mode,
    /// Combined risk at or above this alerts.
    #[serde(default = "default_alert_at")]
    pub alert_at: f64,
    /// Combined risk at or above this revokes.
    #[serde(default = "default_revoke_at")]
    pub revoke_at: f64,
    /// A revocation needs findings at least this confident; otherwise the
    /// action is capped at alert.
    #[serde(default = "default_min_confidence")]
    pub min_confidence_to_revoke: f64,
    /// Statistical findings of different kinds (network, client,
    /// behaviour, policy) this close in event time corroborate each other:
    /// a revocation on statistical evidence needs two kinds within it.
    #[serde(default = "default_corroboration_window", with = "humantime_serde")]
    pub corroboration_window: Duration,
    /// Repeats of a (token, detector) finding within this window are counted
    /// into one alert instead of sent again.
    #[serde(default = "default_dedup_window", with = "humantime_serde")]
    pub dedup_window: Duration,
    /// Per-detector policy, keyed by detector name (`volume`, `geo`,
    /// `novelty`, `binding`, `scope`, `expiry`, `policy`).
    #[serde(default = "default_detectors")]
    pub detectors: BTreeMap<DetectorKind, DetectorPolicy>,
    /// Tokens, principals, ASNs and networks that are never acted on.
    #[serde(default)]
    pub allow: AllowConfig,
    /// Caps on revocations, against a bad rule or GeoIP update.
    #[serde(default)]
    pub budget: BudgetConfig,
}

/// Policy for one detector's findings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorPolicy {
    /// Multiplies the detector's scores before they are combined.
    #[serde(default = "one")]
    pub weight: f64,
    /// Shadow mode: findings are reported but never acted on.
    #[serde(default)]
    pub shadow: bool,
    /// An action any finding of this detector takes, whatever the risk
    /// (e.g. `revoke` for binding).
    #[serde(default)]
    pub action: Option<Action>,
}

impl Default for DetectorPolicy {
    fn default() -> Self {
        DetectorPolicy {
            weight: 1.0,
            shadow: false,
            action: None,
        }
    }
}

/// `[decision.allow]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowConfig {
    /// `issuer/token_id`, or a bare `token_id` for any issuer.
    #[serde(default)]
    pub tokens: Vec<String>,
    #[serde(default)]
    pub principals: Vec<String>,
    #[serde(default)]
    pub asns: Vec<u32>,
    #[serde(default)]
    pub cidrs: Vec<IpNet>,
}

/// `[decision.budget]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// At most this many revocations per issuer in any minute of event time.
    #[serde(default = "default_per_issuer")]
    pub per_issuer_per_minute: u32,
    /// At most this many revocations overall in any minute.
    #[serde(default = "default_overall")]
    pub overall_per_minute: u32,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            per_issuer_per_minute: default_per_issuer(),
            overall_per_minute: default_overall(),
        }
    }
}

fn one() -> f64 {
    1.0
}
fn default_alert_at() -> f64 {
    0.5
}
fn default_revoke_at() -> f64 {
    0.9
}
fn default_min_confidence() -> f64 {
    0.7
}
fn default_corroboration_window() -> Duration {
    Duration::from_secs(3600)
}
fn default_dedup_window() -> Duration {
    Duration::from_secs(600)
}
fn default_per_issuer() -> u32 {
    20
}
fn default_overall() -> u32 {
    50
}

/// Binding, scope and expiry findings are facts, not guesses: they revoke.
fn default_detectors() -> BTreeMap<DetectorKind, DetectorPolicy> {
    [
        DetectorKind::Binding,
        DetectorKind::Scope,
        DetectorKind::Expiry,
    ]
    .into_iter()
    .map(|k| {
        (
            k,
            DetectorPolicy {
                action: Some(Action::Revoke),
                ..Default::default()
            },
        )
    })
    .collect()
}

impl Default for DecisionConfig {
    fn default() -> Self {
        DecisionConfig {
            mode: Mode::default(),
            alert_at: default_alert_at(),
            revoke_at: default_revoke_at(),
            min_confidence_to_revoke: default_min_confidence(),
            corroboration_window: default_corroboration_window(),
            dedup_window: default_dedup_window(),
            detectors: default_detectors(),
            allow: AllowConfig::default(),
            budget: BudgetConfig::default(),
        }
    }
}

impl DecisionConfig {
    pub fn policy(&self, kind: DetectorKind) -> DetectorPolicy {
        self.detectors.get(&kind).cloned().unwrap_or_default()
    }

    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        let unit = |x: f64| (0.0..=1.0).contains(&x);
        if !unit(self.alert_at) || !unit(self.revoke_at) || self.alert_at > self.revoke_at {
            p.push(format!(
                "decision: need 0 <= alert_at ({}) <= revoke_at ({}) <= 1",
                self.alert_at, self.revoke_at
            ));
        }
        if !unit(self.min_confidence_to_revoke) {
            p.push("decision.min_confidence_to_revoke: must be within 0..=1".into());
        }
        for (kind, policy) in &self.detectors {
            if !(policy.weight >= 0.0 && policy.weight.is_finite()) {
                p.push(format!(
                    "decision.detectors.{}.weight: must be zero or more",
                    kind.as_str()
                ));
            }
        }
        for token in &self.allow.tokens {
            if token.is_empty() || token.starts_with('/') || token.ends_with('/') {
                p.push(format!(
                    "decision.allow.tokens: {token:?} must be issuer/token_id or token_id"
                ));
            }
        }
        if self.budget.per_issuer_per_minute == 0 || self.budget.overall_per_minute == 0 {
            p.push("decision.budget: limits must be positive (use mode = \"dry_run\" to stop revoking)".into());
        }
        p
    }
}
