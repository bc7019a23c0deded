//! What detectors report: findings with a score, a confidence and evidence.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::batch::Origin;

/// The detector that produced a finding.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum DetectorKind {
    Volume,
    Geo,
    Novelty,
    Binding,
    Scope,
    Expiry,
    Policy,
}

impl DetectorKind {
    pub const ALL: [DetectorKind; 7] = [
        DetectorKind::Volume,
        DetectorKind::Geo,
        DetectorKind::Novelty,
        DetectorKind::Binding,
        DetectorKind::Scope,
        DetectorKind::Expiry,
        DetectorKind::Policy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DetectorKind::Volume => "volume",
            DetectorKind::Geo => "geo",
            DetectorKind::Novelty => "novelty",
            DetectorKind::Binding => "binding",
            DetectorKind::Scope => "scope",
            DetectorKind::Expiry => "expiry",
            DetectorKind::Policy => "policy",
        }
    }

    /// A dense index, for per-detector arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The finding kinds this detector reports (README, "Detection").
    /// Policy rules name them in `with_findings`.
    pub fn finding_kinds(self) -> &'static [&'static str] {
        match self {
            DetectorKind::Volume => &["mass_export", "volume_spike"],
            DetectorKind::Geo => &["impossible_travel", "new_country"],
            DetectorKind::Novelty => &["new_asn", "new_user_agent", "new_action_class"],
            DetectorKind::Binding => &["outside_bound_cidr", "device_drift"],
            DetectorKind::Scope => &["out_of_scope"],
            DetectorKind::Expiry => &["expired"],
            DetectorKind::Policy => &["rule"],
        }
    }
}

/// What to do about a token. Ordered: `None < Alert < Revoke`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    None,
    Alert,
    Revoke,
}

/// The event a finding points at.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRef {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    pub ts_ms: i64,
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_ts_ms: Option<i64>,
}

impl EventRef {
    pub fn new(request_id: Option<&str>, ts_ms: i64, origin: &Origin) -> Self {
        EventRef {
            request_id: request_id.map(str::to_owned),
            ts_ms,
            topic: Arc::clone(&origin.topic),
            partition: origin.partition,
            offset: origin.offset,
            kafka_ts_ms: origin.kafka_ts_ms,
        }
    }
}

/// Why a detector fired, in numbers a person can check.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Evidence {
    /// The measured value (requests in the window, km/h, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed: Option<f64>,
    /// What was expected: the learned baseline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<f64>,
    /// The configured limit that was crossed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<f64>,
    /// Unit of `observed`, `baseline` and `limit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<&'static str>,
    /// Named facts: countries, distance_km, speed_kmh, asn, pattern, rule...
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub facts: BTreeMap<&'static str, serde_json::Value>,
    /// The triggering events (the last few, newest last).
    pub events: Vec<EventRef>,
}

impl Evidence {
    pub fn fact(mut self, name: &'static str, value: impl Into<serde_json::Value>) -> Self {
        self.facts.insert(name, value.into());
        self
    }
}

/// One detector's verdict on one event of one token.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub detector: DetectorKind,
    /// The specific pattern: `mass_export`, `impossible_travel`, `new_country`...
    pub kind: &'static str,
    /// How bad, in [0, 1].
    pub score: f64,
    /// How sure, in [0, 1]. Low confidence caps the action at alert.
    pub confidence: f64,
    /// A one-line explanation.
    pub summary: String,
    pub evidence: Evidence,
    /// An action this finding asks for whatever the risk (a policy rule's
    /// `action`); the detector's configured action still applies too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
}

impl Finding {
    pub fn new(
        detector: DetectorKind,
        kind: &'static str,
        score: f64,
        summary: String,
        evidence: Evidence,
    ) -> Self {
        Finding {
            detector,
            kind,
            score: score.clamp(0.0, 1.0),
            confidence: 1.0,
            summary,
            evidence,
            action: None,
        }
    }

    pub fn with_action(mut self, action: Option<Action>) -> Self {
        self.action = action;
        self
    }

    pub fn with_confidence(mut self, confidence: f64) -> Self {
        self.confidence = confidence.clamp(0.0, 1.0);
        self
    }
}
