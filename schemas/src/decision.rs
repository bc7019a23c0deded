//! The decision stage's output, which the revoker consumes and alerts carry.

use serde::Serialize;

use crate::finding::{Action, Finding};

/// Whether actions are carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Revoke decisions revoke.
    Enforce,
    /// Nothing is revoked; alerts say "would revoke".
    #[default]
    DryRun,
}

/// What was decided about one token, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// Deterministic: the same token, detectors and triggering event give
    /// the same id, so a replay reuses it.
    pub id: String,
    pub issuer: String,
    pub token_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// What will be done: `alert` or `revoke`.
    pub action: Action,
    /// What the findings alone call for, before mode, budget and caps.
    pub recommended: Action,
    pub mode: Mode,
    /// Combined risk in [0, 1].
    pub risk: f64,
    pub findings: Vec<Finding>,
    /// Findings from detectors in shadow mode: reported, never acted on.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shadow_findings: Vec<Finding>,
    /// What a revocation rests on, by kind of evidence: `deterministic:
    /// out_of_scope`, or two statistical kinds such as `network:
    /// impossible_travel` and `client: new_user_agent`. Empty unless the
    /// findings called for a revocation.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub basis: Vec<String>,
    /// Repeats of this (token, detector) finding that were folded into this
    /// decision instead of alerting again, and over how long.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repeats: Option<Repeats>,
    /// Why the action differs from `recommended`, in sentences.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Event time of the triggering event, epoch ms.
    pub event_ts_ms: i64,
    /// Kafka timestamp of the triggering record, epoch ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_ts_ms: Option<i64>,
}

/// "N more in M min": repeats folded by deduplication.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Repeats {
    pub count: u64,
    pub first_ts_ms: i64,
    pub last_ts_ms: i64,
}

/// A problem with tokenwatch itself that people must hear about.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SystemAlert {
    /// `revocation_budget_exceeded`, ...
    pub kind: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    pub ts_ms: i64,
}

impl Decision {
    /// A deterministic id from the parts that identify a decision: the same
    /// parts always give the same id (hex of SHA-256, 128 bits).
    pub fn make_id(parts: &[&str]) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for p in parts {
            h.update((p.len() as u64).to_be_bytes());
            h.update(p.as_bytes());
        }
        let digest = h.finalize();
        let mut id = String::with_capacity(36);
        id.push_str("dec_");
        for b in &digest[..16] {
            id.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
            id.push(char::from_digit(u32::from(b & 0xf), 16).unwrap_or('0'));
        }
        id
    }
}
