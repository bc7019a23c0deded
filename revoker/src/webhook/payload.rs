//! Alert payloads, documented in `revoker/alert-webhook.schema.json`.
//! They carry token ids (never secrets), findings with evidence, the
//! revocation's state, the config hash and timings.

use serde::Serialize;

use schemas::time::format_rfc3339_ms;
use schemas::{Decision, SystemAlert};

use crate::ledger::Record;

/// The Standard Webhooks envelope: `type`, `timestamp`, `data`.
#[derive(Debug, Serialize)]
pub struct Envelope<T: Serialize> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub timestamp: String,
    pub data: T,
}

/// When things happened, and how long each step took.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    pub event_ts: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_ts: Option<String>,
    pub decided_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer_answered_at: Option<String>,
    /// Kafka timestamp (or event time) → decision.
    pub event_to_decision_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision_to_issuer_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_to_revoked_ms: Option<i64>,
}

impl Timings {
    pub fn new(
        event_ts_ms: i64,
        kafka_ts_ms: Option<i64>,
        decided_at_ms: i64,
        answered_at_ms: Option<i64>,
        revoked: bool,
    ) -> Self {
        let start = kafka_ts_ms.unwrap_or(event_ts_ms);
        Timings {
            event_ts: format_rfc3339_ms(event_ts_ms),
            kafka_ts: kafka_ts_ms.map(format_rfc3339_ms),
            decided_at: format_rfc3339_ms(decided_at_ms),
            issuer_answered_at: answered_at_ms.map(format_rfc3339_ms),
            event_to_decision_ms: decided_at_ms - start,
            decision_to_issuer_ms: answered_at_ms.map(|a| a - decided_at_ms),
            event_to_revoked_ms: answered_at_ms.filter(|_| revoked).map(|a| a - start),
        }
    }
}

/// The revocation part of a decision alert.
#[derive(Debug, Clone, Serialize)]
pub struct Revocation {
    pub state: crate::ledger::State,
    pub attempts: u32,
    pub accepted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub manual: bool,
}

impl From<&Record> for Revocation {
    fn from(r: &Record) -> Self {
        Revocation {
            state: r.state,
            attempts: r.attempts,
            accepted: r.accepted,
            last_error: r.last_error.clone(),
            manual: r.manual,
        }
    }
}

/// `tokenwatch.decision`: a decision, as made.
#[derive(Debug, Serialize)]
pub struct DecisionAlert<'a> {
    #[serde(flatten)]
    pub decision: &'a Decision,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revocation: Option<Revocation>,
    pub config_hash: &'a str,
    pub timings: Timings,
}

/// `tokenwatch.revocation`: a revocation reached a final state (revoked,
/// accepted, or failed after retries).
#[derive(Debug, Serialize)]
pub struct RevocationAlert<'a> {
    pub decision_id: &'a str,
    pub issuer: &'a str,
    pub token_id: &'a str,
    pub reason: &'a str,
    pub revocation: Revocation,
    pub config_hash: &'a str,
    pub timings: Timings,
}

/// `tokenwatch.system`: tokenwatch itself needs attention.
#[derive(Debug, Serialize)]
pub struct SystemData<'a> {
    #[serde(flatten)]
    pub alert: &'a SystemAlert,
    pub config_hash: &'a str,
}
