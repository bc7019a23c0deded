//! Runs a labelled stream through the detection engine (enforce mode, the
//! shipped defaults plus the given GeoIP) and scores what it decided.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use detectors::{DecisionConfig, DetectorsConfig, Engine, GeoIp, MetadataStore};
use schemas::{Action, Decision, Event, Mode, Origin};

use super::{ATTACKS, Label, Stream, TRAPS};

/// Per label: tokens, revoked, alerted (not revoked), and for attacks the
/// lags from attack start to revocation; for benign tokens, the token-days
/// with an alert.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Row {
    pub tokens: usize,
    pub revoked: usize,
    pub alerted: usize,
    pub alert_days: usize,
    pub lags_ms: Vec<i64>,
    /// Findings in this label's alerts, by kind (what fooled us).
    pub alert_findings: BTreeMap<&'static str, usize>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Score {
    pub events: usize,
    pub days: u32,
    pub attacks: BTreeMap<&'static str, Row>,
    pub traps: BTreeMap<&'static str, Row>,
}

/// Every decision the engine makes over `events` (in event-time order),
/// in enforce mode with the shipped defaults and `geoip`.
pub fn detect(events: &[Event], geoip: GeoIp) -> Vec<Decision> {
    let decision = DecisionConfig {
        mode: Mode::Enforce,
        ..Default::default()
    };
    let mut engine = Engine::with_parts(
        &DetectorsConfig::default(),
        &decision,
        Some(geoip),
        MetadataStore::default(),
    );
    let mut decisions = Vec::new();
    let mut events = events.to_vec();
    for (b, chunk) in events.chunks_mut(1024).enumerate() {
        let origins: Vec<Origin> = (0..chunk.len())
            .map(|j| Origin {
                topic: "quality".into(),
                partition: 0,
                offset: (b * 1024 + j) as i64,
                kafka_ts_ms: None,
            })
            .collect();
        decisions.extend(engine.process(chunk, &origins).decisions);
    }
    decisions.extend(engine.flush().decisions);
    decisions
}

/// Detects over the stream and scores it.
pub fn run(stream: &Stream, geoip: GeoIp) -> Score {
    let decisions = detect(&stream.events, geoip);
    let mut first_revoke: HashMap<&str, i64> = HashMap::new();
    let mut alerted: HashSet<&str> = HashSet::new();
    let mut alert_days: HashSet<(&str, i64)> = HashSet::new();
    let mut alert_findings: HashMap<&str, Vec<&'static str>> = HashMap::new();
    for d in &decisions {
        match d.action {
            Action::Revoke => {
                let t = first_revoke
                    .entry(d.token_id.as_str())
                    .or_insert(d.event_ts_ms);
                *t = (*t).min(d.event_ts_ms);
            }
            Action::Alert => {
                alerted.insert(d.token_id.as_str());
                alert_findings
                    .entry(d.token_id.as_str())
                    .or_default()
                    .extend(d.findings.iter().map(|f| f.kind));
                let day = (d.event_ts_ms - stream.start_ms) / 86_400_000;
                alert_days.insert((d.token_id.as_str(), day));
            }
            Action::None => {}
        }
    }
    let mut score = Score {
        events: stream.events.len(),
        days: stream.days,
        ..Default::default()
    };
    for t in &stream.tokens {
        let id = t.token_id.as_str();
        let row = match t.label {
            Label::Attack(k) => score.attacks.entry(k).or_default(),
            Label::Benign(k) => score.traps.entry(k).or_default(),
        };
        row.tokens += 1;
        match first_revoke.get(id) {
            Some(&at) => {
                row.revoked += 1;
                if let Some(start) = t.attack_start_ms {
                    row.lags_ms.push(at - start);
                }
            }
            None if alerted.contains(id) => row.alerted += 1,
            None => {}
        }
        row.alert_days += alert_days.iter().filter(|(tok, _)| *tok == id).count();
        for kind in alert_findings.get(id).into_iter().flatten() {
            *row.alert_findings.entry(kind).or_default() += 1;
        }
    }
    score
}

fn median(v: &[i64]) -> Option<i64> {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied()
}

impl Score {
    pub fn benign(&self) -> Row {
        self.traps.values().fold(Row::default(), |mut acc, r| {
            acc.tokens += r.tokens;
            acc.revoked += r.revoked;
            acc.alerted += r.alerted;
            acc.alert_days += r.alert_days;
            acc
        })
    }

    pub fn attacks_total(&self) -> Row {
        self.attacks.values().fold(Row::default(), |mut acc, r| {
            acc.tokens += r.tokens;
            acc.revoked += r.revoked;
            acc.alerted += r.alerted;
            acc.lags_ms.extend(&r.lags_ms);
            acc
        })
    }

    /// The table the README reports.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| attack | tokens | revoked | alerted only | missed | median lag to revoke |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|");
        for name in ATTACKS {
            let r = self.attacks.get(name).cloned().unwrap_or_default();
            let lag =
                median(&r.lags_ms).map_or("-".into(), |ms| format!("{:.1} s", ms as f64 / 1000.0));
            let missed = r.tokens - r.revoked - r.alerted;
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {} | {missed} | {lag} |",
                r.tokens, r.revoked, r.alerted
            );
        }
        let _ = writeln!(
            out,
            "\n| benign trap | tokens | revoked | alerted | token-days alerted | findings in the alerts |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|");
        for name in TRAPS {
            let r = self.traps.get(name).cloned().unwrap_or_default();
            let kinds: Vec<String> = r
                .alert_findings
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {} | {} | {} |",
                r.tokens,
                r.revoked,
                r.alerted,
                r.alert_days,
                kinds.join(", ")
            );
        }
        let (a, b) = (self.attacks_total(), self.benign());
        let token_days = (b.tokens * self.days as usize).max(1);
        let lag =
            median(&a.lags_ms).map_or("-".into(), |ms| format!("{:.1} s", ms as f64 / 1000.0));
        let _ = writeln!(
            out,
            "\n{} events, {} days. Attacks revoked {}/{} ({:.0}%), alerted only {}; median lag {lag}. \
             Benign revoked {}/{} ({:.2}%); benign token-days alerted {}/{} ({:.2} per 1,000).",
            self.events,
            self.days,
            a.revoked,
            a.tokens,
            100.0 * a.revoked as f64 / a.tokens.max(1) as f64,
            a.alerted,
            b.revoked,
            b.tokens,
            100.0 * b.revoked as f64 / b.tokens.max(1) as f64,
            b.alert_days,
            token_days,
            1000.0 * b.alert_days as f64 / token_days as f64,
        );
        out
    }
}
