//! The decision: findings for one event combine into a risk score; the
//! thresholds, per-detector overrides and shadow flags, confidence caps,
//! allowlists, deduplication, the revocation budget and the mode turn it
//! into a [`Decision`] (or nothing).

mod budget;
mod config;
mod corroboration;
mod dedup;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

pub use budget::{Budget, OverBudget};
pub use config::{AllowConfig, BudgetConfig, DecisionConfig, DetectorPolicy};
pub use corroboration::{Basis, Corroboration, Recent};
use dedup::{Dedup, Entry};
use schemas::{Action, Decision, DetectorKind, Event, Finding, Mode, Origin, Repeats, SystemAlert};

use crate::state::TokenKey;

/// Decisions and system alerts produced by one call.
#[derive(Debug, Default)]
pub struct DecisionOutput {
    pub decisions: Vec<Decision>,
    pub alerts: Vec<SystemAlert>,
}

/// Counters, for metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DecisionStats {
    /// Findings by detector, shadow ones included.
    pub findings: [u64; DetectorKind::ALL.len()],
    /// Findings from detectors in shadow mode.
    pub shadow_findings: u64,
    /// Events with findings that an allowlist exempted.
    pub allowlisted: u64,
    /// Repeats folded into a later decision or summary.
    pub suppressed_repeats: u64,
    /// Revocations turned into alerts by the budget.
    pub over_budget: u64,
    /// Revocations turned into alerts because no issuer of that name is
    /// configured: nothing to call, and no budget of a real issuer spent.
    pub unconfigured_issuer: u64,
    /// Revocations turned into alerts by low confidence.
    pub low_confidence_caps: u64,
    /// Revocations turned into alerts for resting on one kind of
    /// statistical evidence.
    pub uncorroborated_caps: u64,
    /// Decisions emitted, by action (`None`, `Alert`, `Revoke`).
    pub decisions: [u64; 3],
}

/// Combines finding scores: 1 - Π(1 - weight·score) (a noisy OR).
pub fn combine<'a>(scores: impl Iterator<Item = &'a (f64, f64)>) -> f64 {
    1.0 - scores.fold(1.0, |acc, (score, weight)| {
        acc * (1.0 - (score * weight).clamp(0.0, 1.0))
    })
}

pub struct Decider {
    config: DecisionConfig,
    allowed_tokens: HashSet<String>,
    allowed_principals: HashSet<String>,
    dedup: Dedup,
    /// Shared by every detect shard: the limits are per instance.
    budget: Arc<Mutex<Budget>>,
    corroboration: Corroboration,
    /// The issuers a revocation can be sent to; `None`: any (tests, tools
    /// without a revoker).
    revocable: Option<HashSet<String>>,
    stats: DecisionStats,
}

impl Decider {
    pub fn new(config: DecisionConfig) -> Self {
        let dedup = Dedup::new(config.dedup_window.as_millis() as i64, 100_000);
        let budget = Arc::new(Mutex::new(Budget::new(
            config.budget.per_issuer_per_minute,
            config.budget.overall_per_minute,
        )));
        let corroboration = Corroboration::new(
            config
                .corroboration_window
                .as_millis()
                .min(i64::MAX as u128) as i64,
            100_000,
        );
        Decider {
            corroboration,
            allowed_tokens: config.allow.tokens.iter().cloned().collect(),
            allowed_principals: config.allow.principals.iter().cloned().collect(),
            dedup,
            budget,
            config,
            revocable: None,
            stats: DecisionStats::default(),
        }
    }

    /// Only these issuers have a kill switch: a revoke for any other name
    /// (events carry any `issuer` they like) becomes an alert before the
    /// budget, so it neither spends a real issuer's budget nor keeps
    /// per-issuer state for a name from input.
    pub fn set_revocable_issuers<'a>(&mut self, issuers: impl IntoIterator<Item = &'a String>) {
        self.revocable = Some(issuers.into_iter().cloned().collect());
    }

    /// A decider for another detect shard: the same config, allowlists and
    /// revocable issuers, the same revocation budget (shared), and its own
    /// deduplication, corroboration and counters.
    pub fn replica(&self) -> Decider {
        let mut d = Decider::new(self.config.clone());
        d.allowed_tokens = self.allowed_tokens.clone();
        d.revocable = self.revocable.clone();
        d.budget = Arc::clone(&self.budget);
        d
    }

    /// Adds a token (`issuer/token_id` or `token_id`) to the allowlist.
    pub fn allow_token(&mut self, token: &str) {
        self.allowed_tokens.insert(token.to_string());
    }

    pub fn stats(&self) -> &DecisionStats {
        &self.stats
    }

    pub fn config(&self) -> &DecisionConfig {
        &self.config
    }

    pub fn mode(&self) -> Mode {
        self.config.mode
    }

    fn allowlisted(&self, e: &Event) -> bool {
        let allow = &self.config.allow;
        self.allowed_tokens.contains(&e.token_id)
            || self
                .allowed_tokens
                .contains(&format!("{}/{}", e.issuer, e.token_id))
            || e.principal
                .as_ref()
                .is_some_and(|p| self.allowed_principals.contains(p))
            || e.asn.is_some_and(|asn| allow.asns.contains(&asn))
            || e.src_ip
                .is_some_and(|ip| allow.cidrs.iter().any(|net| net.contains(&ip)))
    }

    fn threshold_action(&self, risk: f64) -> Action {
        if risk >= self.config.revoke_at {
            Action::Revoke
        } else if risk >= self.config.alert_at {
            Action::Alert
        } else {
            Action::None
        }
    }

    /// What a set of findings, with the token's recent findings of other
    /// kinds (`earlier`, already weighted), calls for: (risk, action).
    fn assess<'a>(
        &self,
        findings: impl Iterator<Item = &'a Finding> + Clone,
        earlier: &[(Basis, Recent)],
    ) -> (f64, Action) {
        let weighted: Vec<(f64, f64)> = findings
            .clone()
            .map(|f| (f.score, self.config.policy(f.detector).weight))
            .chain(earlier.iter().map(|(_, r)| (r.weighted, 1.0)))
            .collect();
        let risk = combine(weighted.iter());
        let forced = findings
            .filter_map(|f| self.config.policy(f.detector).action.max(f.action))
            .max()
            .unwrap_or(Action::None);
        (risk, self.threshold_action(risk).max(forced))
    }

    /// Decides about one event's findings for the token `key`.
    pub fn decide(
        &mut self,
        key: TokenKey,
        event: &Event,
        origin: &Origin,
        findings: Vec<Finding>,
        out: &mut DecisionOutput,
    ) {
        if findings.is_empty() {
            return;
        }
        for f in &findings {
            self.stats.findings[f.detector.index()] += 1;
        }
        if self.allowlisted(event) {
            self.stats.allowlisted += 1;
            return;
        }
        let (shadow, active): (Vec<Finding>, Vec<Finding>) = findings
            .into_iter()
            .partition(|f| self.config.policy(f.detector).shadow);
        self.stats.shadow_findings += shadow.len() as u64;
        if active.is_empty() {
            return;
        }
        let now = event.ts_ms;
        let min = self.config.min_confidence_to_revoke;
        let bases: Vec<Basis> = active
            .iter()
            .map(|f| Basis::of(f, self.config.policy(f.detector).action))
            .collect();
        let earlier = self.corroboration.within(key, now, &bases);
        for (f, &basis) in active.iter().zip(&bases) {
            if f.confidence >= min {
                let weighted = f.score * self.config.policy(f.detector).weight;
                let recent = Recent {
                    ts_ms: now,
                    weighted,
                    kind: f.kind,
                };
                self.corroboration.remember(key, basis, recent);
            }
        }
        let (risk, recommended) = self.assess(active.iter(), &earlier);
        if recommended == Action::None {
            return;
        }
        let mut notes = Vec::new();
        let mut basis = Vec::new();
        let mut action = recommended;
        if action == Action::Revoke {
            let (_, confident) =
                self.assess(active.iter().filter(|f| f.confidence >= min), &earlier);
            if confident < Action::Revoke {
                action = Action::Alert;
                self.stats.low_confidence_caps += 1;
                let low: Vec<String> = active
                    .iter()
                    .filter(|f| f.confidence < min)
                    .map(|f| format!("{} {:.2}", f.kind, f.confidence))
                    .collect();
                notes.push(format!(
                    "low confidence ({}) caps the action at alert",
                    low.join(", ")
                ));
            } else {
                basis = grounds(&active, &bases, &earlier, min, now);
                // A fact needs no corroboration, and is the whole basis.
                basis.retain(|(b, _)| {
                    *b == Basis::Deterministic || !bases.contains(&Basis::Deterministic)
                });
                let text: Vec<String> = basis
                    .iter()
                    .map(|(b, what)| format!("{} ({})", b.as_str(), what.join(", ")))
                    .collect();
                let deterministic = basis.iter().any(|(b, _)| *b == Basis::Deterministic);
                if deterministic || basis.len() >= 2 {
                    notes.push(format!("revoke because: {}", text.join(" and ")));
                } else {
                    basis.clear();
                    action = Action::Alert;
                    self.stats.uncorroborated_caps += 1;
                    notes.push(format!(
                        "one kind of evidence ({}): a revocation needs a deterministic finding or two independent kinds within {}",
                        text.join(", "),
                        humantime::format_duration(self.config.corroboration_window)
                    ));
                }
            }
        }

        // Deduplication compares what the findings call for, before the
        // budget and the mode change it.
        let intended = action;
        let detectors: Vec<DetectorKind> = {
            let mut d: Vec<DetectorKind> = active.iter().map(|f| f.detector).collect();
            d.sort();
            d.dedup();
            d
        };
        if !detectors
            .iter()
            .any(|&d| self.dedup.is_new(key, d, intended, now))
        {
            for f in &active {
                self.dedup.repeated(key, f.detector, now, f);
            }
            self.stats.suppressed_repeats += 1;
            return;
        }

        if action == Action::Revoke
            && self
                .revocable
                .as_ref()
                .is_some_and(|known| !known.contains(&event.issuer))
        {
            action = Action::Alert;
            self.stats.unconfigured_issuer += 1;
            notes.push(format!(
                "no issuer named {:?} is configured, so there is no kill switch to call: alert only",
                event.issuer
            ));
        }
        // Locked only for a revocation: the budget is shared by the shards.
        let mut budget = (action == Action::Revoke)
            .then(|| self.budget.lock().unwrap_or_else(|e| e.into_inner()));
        if let Some(budget) = budget.as_mut()
            && let Err(over) = budget.take(&event.issuer, now)
        {
            action = Action::Alert;
            self.stats.over_budget += 1;
            let (scope, limit) = match over {
                OverBudget::Issuer { limit } => (format!("issuer {}", event.issuer), limit),
                OverBudget::Overall { limit } => ("all issuers".to_string(), limit),
            };
            notes.push(format!(
                "revocation budget exceeded ({limit} per minute for {scope}); downgraded to alert"
            ));
            if budget.should_alert(&event.issuer, &over, now) {
                out.alerts.push(SystemAlert {
                        kind: "revocation_budget_exceeded",
                        message: format!(
                            "More than {limit} revocations in a minute for {scope}: revocations are paused and sent as alerts. \
                             A bad rule or GeoIP update may be firing; check recent decisions."
                        ),
                        issuer: Some(event.issuer.clone()),
                        ts_ms: now,
                    });
            }
        }
        drop(budget);
        if self.config.mode == Mode::DryRun && action == Action::Revoke {
            action = Action::Alert;
            notes.push("dry run: would revoke".into());
        }

        let mut repeats: Option<Repeats> = None;
        for &d in &detectors {
            let seed = Entry {
                opened_ms: now,
                action: intended,
                repeats: 0,
                first_repeat_ms: now,
                last_repeat_ms: now,
                issuer: event.issuer.clone(),
                token_id: event.token_id.clone(),
                principal: event.principal.clone(),
                last_finding: None,
            };
            if let Some(r) = self.dedup.emitted(key, d, intended, now, seed) {
                repeats = Some(match repeats {
                    Some(acc) => Repeats {
                        count: acc.count + r.count,
                        first_ts_ms: acc.first_ts_ms.min(r.first_ts_ms),
                        last_ts_ms: acc.last_ts_ms.max(r.last_ts_ms),
                    },
                    None => r,
                });
            }
        }

        let kinds: Vec<&str> = active.iter().map(|f| f.kind).collect();
        let offset = origin.offset.to_string();
        let partition = origin.partition.to_string();
        let ts = now.to_string();
        let mut parts = vec![
            event.issuer.as_str(),
            event.token_id.as_str(),
            &origin.topic,
            &partition,
            &offset,
            &ts,
        ];
        parts.extend(kinds.iter().copied());
        self.stats.decisions[action as usize] += 1;
        out.decisions.push(Decision {
            id: Decision::make_id(&parts),
            issuer: event.issuer.clone(),
            token_id: event.token_id.clone(),
            principal: event.principal.clone(),
            action,
            recommended,
            mode: self.config.mode,
            risk: (risk * 1000.0).round() / 1000.0,
            findings: active,
            shadow_findings: shadow,
            basis: basis
                .into_iter()
                .map(|(b, what)| format!("{}: {}", b.as_str(), what.join(", ")))
                .collect(),
            repeats,
            notes,
            event_ts_ms: now,
            kafka_ts_ms: origin.kafka_ts_ms,
        });
    }

    /// Closes deduplication windows at event time `now_ms`, emitting an
    /// alert for every window that folded repeats no later decision carried.
    pub fn tick(&mut self, now_ms: i64, out: &mut DecisionOutput) {
        self.corroboration.purge(now_ms);
        for summary in self.dedup.close_expired(now_ms) {
            let e = summary.entry;
            let Some(finding) = e.last_finding else {
                continue;
            };
            let minutes = (e.last_repeat_ms - e.opened_ms).max(0) / 60_000;
            let count = e.repeats.to_string();
            let first = e.first_repeat_ms.to_string();
            let parts = [
                e.issuer.as_str(),
                e.token_id.as_str(),
                summary.detector.as_str(),
                "repeats",
                &count,
                &first,
            ];
            self.stats.decisions[Action::Alert as usize] += 1;
            out.decisions.push(Decision {
                id: Decision::make_id(&parts),
                issuer: e.issuer,
                token_id: e.token_id,
                principal: e.principal,
                action: Action::Alert,
                recommended: e.action,
                mode: self.config.mode,
                risk: finding.score,
                findings: vec![finding],
                shadow_findings: Vec::new(),
                basis: Vec::new(),
                repeats: Some(Repeats {
                    count: e.repeats,
                    first_ts_ms: e.first_repeat_ms,
                    last_ts_ms: e.last_repeat_ms,
                }),
                notes: vec![format!(
                    "{} more {} finding(s) in {minutes} min after the last alert",
                    e.repeats,
                    summary.detector.as_str()
                )],
                event_ts_ms: e.last_repeat_ms,
                kafka_ts_ms: None,
            });
        }
    }
}

/// The confident evidence a revocation would rest on, by kind: this
/// event's findings, and earlier ones of other kinds (with their age).
fn grounds(
    active: &[Finding],
    bases: &[Basis],
    earlier: &[(Basis, Recent)],
    min_confidence: f64,
    now_ms: i64,
) -> Vec<(Basis, Vec<String>)> {
    let mut by_kind: BTreeMap<Basis, Vec<String>> = BTreeMap::new();
    for (f, &b) in active.iter().zip(bases) {
        if f.confidence >= min_confidence {
            let list = by_kind.entry(b).or_default();
            if !list.iter().any(|k| k == f.kind) {
                list.push(f.kind.to_string());
            }
        }
    }
    for (b, r) in earlier {
        let ago_s = (now_ms - r.ts_ms).abs() / 1000;
        by_kind
            .entry(*b)
            .or_default()
            .push(format!("{} {ago_s} s earlier", r.kind));
    }
    by_kind.into_iter().collect()
}

#[cfg(test)]
mod tests;
