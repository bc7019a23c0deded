//! The demo's closing summary: per scripted attack, detected? revoked?
//! latency; and what happened to the benign tokens.

use serde::Serialize;

use super::receiver::Seen;
use crate::scenario::Scenario;

#[derive(Debug, Serialize)]
pub struct AttackResult {
    pub scenario: &'static str,
    pub token_id: String,
    pub detected: bool,
    pub revoked: bool,
    /// Kafka timestamp of the triggering event → issuer confirmed, ms.
    pub latency_ms: Option<i64>,
    pub issuer_calls: u32,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub attacks: Vec<AttackResult>,
    pub benign_tokens: usize,
    /// Benign tokens that got an alert, by trap (`home` for plain tokens).
    pub benign_alerts: std::collections::BTreeMap<&'static str, usize>,
    /// Benign tokens per trap.
    pub benign_by_trap: std::collections::BTreeMap<&'static str, usize>,
    /// Benign tokens that were revoked.
    pub benign_false_revocations: usize,
    pub events_produced: u64,
    pub bad_signatures: u64,
}

impl Summary {
    pub fn build(scenario: &Scenario, seen: &Seen, events_produced: u64) -> Self {
        let attacks = scenario
            .attacks
            .iter()
            .map(|a| AttackResult {
                scenario: a.name,
                token_id: a.token_id.clone(),
                detected: seen.decisions.contains_key(&a.token_id),
                revoked: seen.revoked.contains_key(&a.token_id),
                latency_ms: seen.revocation_ms.get(&a.token_id).copied(),
                issuer_calls: seen.revoked.get(&a.token_id).map_or(0, |r| r.1),
            })
            .collect();
        let benign = |t: &String| !t.starts_with("atk-");
        let trap = |t: &String| scenario.traps.get(t).copied().unwrap_or("home");
        let mut benign_by_trap = std::collections::BTreeMap::new();
        for t in &scenario.benign_tokens {
            *benign_by_trap.entry(trap(t)).or_insert(0) += 1;
        }
        let mut benign_alerts = std::collections::BTreeMap::new();
        for t in seen.decisions.keys().filter(|t| benign(t)) {
            *benign_alerts.entry(trap(t)).or_insert(0) += 1;
        }
        Summary {
            attacks,
            benign_tokens: scenario.benign_tokens.len(),
            benign_alerts,
            benign_by_trap,
            benign_false_revocations: seen.revoked.keys().filter(|t| benign(t)).count(),
            events_produced,
            bad_signatures: seen.bad_signatures,
        }
    }

    pub fn print(&self) {
        println!(
            "\n{:<20} {:<24} {:>9} {:>8} {:>13}",
            "scripted attack", "token", "detected", "revoked", "latency (ms)"
        );
        for a in &self.attacks {
            let yes = |b: bool| if b { "yes" } else { "NO" };
            let latency = a.latency_ms.map_or("-".to_string(), |ms| ms.to_string());
            println!(
                "{:<20} {:<24} {:>9} {:>8} {:>13}",
                a.scenario,
                a.token_id,
                yes(a.detected),
                yes(a.revoked),
                latency
            );
        }
        let traps: Vec<String> = self
            .benign_by_trap
            .iter()
            .map(|(trap, n)| {
                let alerted = self.benign_alerts.get(trap).copied().unwrap_or(0);
                format!("{trap} {n} ({alerted} alerted)")
            })
            .collect();
        println!(
            "\nbenign tokens: {}: {}; falsely revoked: {}; events: {}; bad webhook signatures: {}",
            self.benign_tokens,
            traps.join(", "),
            self.benign_false_revocations,
            self.events_produced,
            self.bad_signatures
        );
        if self.benign_alerts.get("traveller").is_some_and(|&n| n > 0) {
            println!(
                "(a traveller's first call abroad alerts once: a new country and network, same client)"
            );
        }
    }

    /// Every attack detected and revoked, nothing benign revoked.
    pub fn all_good(&self) -> bool {
        self.attacks.iter().all(|a| a.detected && a.revoked)
            && self.benign_false_revocations == 0
            && self.bad_signatures == 0
    }
}
