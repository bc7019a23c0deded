use std::time::Duration;

use schemas::{Action, DetectorKind, Evidence, Finding, Mode};

use super::*;
use crate::testkit::*;

fn finding(detector: DetectorKind, kind: &'static str, score: f64) -> Finding {
    Finding::new(detector, kind, score, kind.to_string(), Evidence::default())
}

fn enforce() -> DecisionConfig {
    DecisionConfig {
        mode: Mode::Enforce,
        ..Default::default()
    }
}

fn decide_one(d: &mut Decider, ts: i64, findings: Vec<Finding>) -> DecisionOutput {
    let mut out = DecisionOutput::default();
    let mut e = event(ts);
    e.principal = Some("svc-orders".into());
    d.decide(7, &e, &origin(ts), findings, &mut out);
    out
}

#[test]
fn thresholds_map_risk_to_actions() {
    let mut d = Decider::new(enforce());
    assert!(
        decide_one(
            &mut d,
            T0_MS,
            vec![finding(DetectorKind::Novelty, "new_asn", 0.4)]
        )
        .decisions
        .is_empty()
    );
    let out = decide_one(
        &mut d,
        T0_MS,
        vec![finding(DetectorKind::Geo, "new_country", 0.6)],
    );
    assert_eq!(out.decisions[0].action, Action::Alert);
    let out = decide_one(
        &mut d,
        T0_MS,
        vec![finding(DetectorKind::Scope, "out_of_scope", 0.9)],
    );
    assert_eq!(out.decisions[0].action, Action::Revoke);
    assert_eq!(out.decisions[0].basis, ["deterministic: out_of_scope"]);
}

#[test]
fn findings_combine_as_a_noisy_or() {
    let mut d = Decider::new(enforce());
    // 0.6, 0.5, 0.4 → 1 - 0.4·0.5·0.6 = 0.88: alert, not revoke.
    let out = decide_one(
        &mut d,
        T0_MS,
        vec![
            finding(DetectorKind::Geo, "new_country", 0.6),
            finding(DetectorKind::Novelty, "new_asn", 0.5),
            finding(DetectorKind::Novelty, "new_user_agent", 0.4),
        ],
    );
    let dec = &out.decisions[0];
    assert_eq!((dec.action, dec.risk), (Action::Alert, 0.88));
    assert_eq!(dec.findings.len(), 3);
}

#[test]
fn per_detector_action_overrides_the_threshold() {
    let mut d = Decider::new(enforce());
    // Binding is `action = revoke` by default, whatever its score.
    let out = decide_one(
        &mut d,
        T0_MS,
        vec![finding(DetectorKind::Binding, "device_drift", 0.3)],
    );
    assert_eq!(
        (out.decisions[0].action, out.decisions[0].recommended),
        (Action::Revoke, Action::Revoke)
    );
}

#[test]
fn dry_run_alerts_that_it_would_revoke() {
    let mut d = Decider::new(DecisionConfig::default());
    assert_eq!(d.mode(), Mode::DryRun);
    let out = decide_one(
        &mut d,
        T0_MS,
        vec![finding(DetectorKind::Expiry, "expired", 1.0)],
    );
    let dec = &out.decisions[0];
    assert_eq!(
        (dec.action, dec.recommended, dec.mode),
        (Action::Alert, Action::Revoke, Mode::DryRun)
    );
    assert!(dec.notes.iter().any(|n| n.contains("would revoke")));
}

#[test]
fn shadow_detectors_are_reported_but_never_acted_on() {
    let mut config = enforce();
    config.detectors.insert(
        DetectorKind::Volume,
        DetectorPolicy {
            shadow: true,
            ..Default::default()
        },
    );
    let mut d = Decider::new(config);
    assert!(
        decide_one(
            &mut d,
            T0_MS,
            vec![finding(DetectorKind::Volume, "mass_export", 1.0)]
        )
        .decisions
        .is_empty()
    );
    assert_eq!(d.stats().shadow_findings, 1);
    let out = decide_one(
        &mut d,
        T0_MS + 1,
        vec![
            finding(DetectorKind::Volume, "mass_export", 1.0),
            finding(DetectorKind::Geo, "new_country", 0.6),
        ],
    );
    let dec = &out.decisions[0];
    assert_eq!(dec.action, Action::Alert, "only the geo finding counts");
    assert_eq!(dec.shadow_findings.len(), 1);
}

#[test]
fn low_confidence_caps_revoke_at_alert() {
    let mut d = Decider::new(enforce());
    let travel = finding(DetectorKind::Geo, "impossible_travel", 0.95).with_confidence(0.4);
    let out = decide_one(&mut d, T0_MS, vec![travel]);
    let dec = &out.decisions[0];
    assert_eq!(
        (dec.action, dec.recommended),
        (Action::Alert, Action::Revoke)
    );
    assert!(dec.notes[0].contains("low confidence"));
    // A confident finding alongside still revokes.
    let out = decide_one(
        &mut d,
        T0_MS + 1,
        vec![
            finding(DetectorKind::Geo, "impossible_travel", 0.95).with_confidence(0.4),
            finding(DetectorKind::Scope, "out_of_scope", 0.9),
        ],
    );
    assert_eq!(out.decisions[0].action, Action::Revoke);
}

#[test]
fn allowlists_cover_tokens_principals_asns_and_cidrs() {
    let check = |allow: AllowConfig, tweak: &dyn Fn(&mut schemas::Event)| {
        let mut d = Decider::new(DecisionConfig { allow, ..enforce() });
        let mut e = changchun(event(T0_MS));
        tweak(&mut e);
        let mut out = DecisionOutput::default();
        d.decide(
            1,
            &e,
            &origin(1),
            vec![finding(DetectorKind::Volume, "mass_export", 1.0)],
            &mut out,
        );
        (out.decisions.len(), d.stats().allowlisted)
    };
    let none: &dyn Fn(&mut schemas::Event) = &|_| {};
    assert_eq!(check(AllowConfig::default(), none), (1, 0));
    assert_eq!(
        check(
            AllowConfig {
                tokens: vec!["oauth/tok-1".into()],
                ..Default::default()
            },
            none
        ),
        (0, 1)
    );
    assert_eq!(
        check(
            AllowConfig {
                tokens: vec!["tok-1".into()],
                ..Default::default()
            },
            none
        ),
        (0, 1)
    );
    assert_eq!(
        check(
            AllowConfig {
                tokens: vec!["github/tok-1".into()],
                ..Default::default()
            },
            none
        ),
        (1, 0)
    );
    assert_eq!(
        check(
            AllowConfig {
                principals: vec!["ci-bot".into()],
                ..Default::default()
            },
            &|e| e.principal = Some("ci-bot".into())
        ),
        (0, 1)
    );
    assert_eq!(
        check(
            AllowConfig {
                asns: vec![4837],
                ..Default::default()
            },
            none
        ),
        (0, 1)
    );
    assert_eq!(
        check(
            AllowConfig {
                cidrs: vec!["175.16.0.0/16".parse().unwrap()],
                ..Default::default()
            },
            none
        ),
        (0, 1)
    );
}

#[test]
fn dedup_sends_the_first_hit_counts_repeats_and_reports_them() {
    let mut d = Decider::new(DecisionConfig {
        dedup_window: Duration::from_secs(600),
        ..enforce()
    });
    let hit = || vec![finding(DetectorKind::Geo, "new_country", 0.6)];
    assert_eq!(decide_one(&mut d, T0_MS, hit()).decisions.len(), 1);
    for i in 1..=4 {
        assert!(
            decide_one(&mut d, T0_MS + i * MIN_MS, hit())
                .decisions
                .is_empty()
        );
    }
    assert_eq!(d.stats().suppressed_repeats, 4);
    // An escalation to revoke is never held back, and carries the count.
    let out = decide_one(
        &mut d,
        T0_MS + 5 * MIN_MS,
        vec![
            finding(DetectorKind::Geo, "impossible_travel", 0.95),
            finding(DetectorKind::Novelty, "new_user_agent", 0.35),
        ],
    );
    let dec = &out.decisions[0];
    assert_eq!(dec.action, Action::Revoke);
    let r = dec.repeats.unwrap();
    assert_eq!(
        (r.count, r.first_ts_ms, r.last_ts_ms),
        (4, T0_MS + MIN_MS, T0_MS + 4 * MIN_MS)
    );
}

#[test]
fn repeats_no_later_decision_carried_are_summarised_when_the_window_closes() {
    let mut d = Decider::new(DecisionConfig {
        dedup_window: Duration::from_secs(600),
        ..enforce()
    });
    let hit = || vec![finding(DetectorKind::Geo, "new_country", 0.6)];
    decide_one(&mut d, T0_MS, hit());
    decide_one(&mut d, T0_MS + MIN_MS, hit());
    decide_one(&mut d, T0_MS + 2 * MIN_MS, hit());
    let mut out = DecisionOutput::default();
    d.tick(T0_MS + 5 * MIN_MS, &mut out);
    assert!(out.decisions.is_empty(), "window still open");
    d.tick(T0_MS + 10 * MIN_MS, &mut out);
    let s = &out.decisions[0];
    assert_eq!((s.action, s.repeats.unwrap().count), (Action::Alert, 2));
    assert!(
        s.notes[0].starts_with("2 more geo finding(s) in 2 min"),
        "{}",
        s.notes[0]
    );
    // After the window, a hit is new again.
    assert_eq!(
        decide_one(&mut d, T0_MS + 11 * MIN_MS, hit())
            .decisions
            .len(),
        1
    );
}

#[test]
fn the_revocation_budget_downgrades_and_raises_one_loud_alert() {
    let mut config = enforce();
    config.budget = BudgetConfig {
        per_issuer_per_minute: 2,
        overall_per_minute: 100,
    };
    let mut d = Decider::new(config);
    let mut actions = Vec::new();
    let mut alerts = Vec::new();
    for i in 0..5u64 {
        let mut e = event(T0_MS + i as i64 * 1000);
        e.token_id = format!("tok-{i}");
        let mut out = DecisionOutput::default();
        d.decide(
            i,
            &e,
            &origin(i as i64),
            vec![finding(DetectorKind::Scope, "out_of_scope", 0.9)],
            &mut out,
        );
        actions.push(out.decisions[0].action);
        alerts.extend(out.alerts);
    }
    assert_eq!(
        actions,
        [
            Action::Revoke,
            Action::Revoke,
            Action::Alert,
            Action::Alert,
            Action::Alert
        ]
    );
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].kind, "revocation_budget_exceeded");
    assert_eq!(d.stats().over_budget, 3);
}

#[test]
fn decision_ids_are_deterministic() {
    let run = || {
        let mut d = Decider::new(enforce());
        decide_one(
            &mut d,
            T0_MS,
            vec![finding(DetectorKind::Volume, "mass_export", 1.0)],
        )
        .decisions[0]
            .id
            .clone()
    };
    assert_eq!(run(), run());
    assert!(run().starts_with("dec_"));
}

#[test]
fn validation_lists_every_problem() {
    let mut c = DecisionConfig {
        alert_at: 0.95,
        revoke_at: 0.9,
        min_confidence_to_revoke: 2.0,
        ..Default::default()
    };
    c.allow.tokens.push("/x".into());
    c.budget.overall_per_minute = 0;
    assert_eq!(c.validate().len(), 4, "{:?}", c.validate());
}

#[test]
fn one_statistical_kind_alerts_two_kinds_revoke_and_the_decision_says_why() {
    let mut d = Decider::new(enforce());
    // Travel alone, however fast: one kind of evidence (network).
    let out = decide_one(
        &mut d,
        T0_MS,
        vec![finding(DetectorKind::Geo, "impossible_travel", 0.95)],
    );
    let dec = &out.decisions[0];
    assert_eq!(
        (dec.action, dec.recommended),
        (Action::Alert, Action::Revoke)
    );
    assert!(dec.basis.is_empty());
    assert!(
        dec.notes[0].contains("one kind of evidence (network (impossible_travel))"),
        "{}",
        dec.notes[0]
    );
    assert_eq!(d.stats().uncorroborated_caps, 1);

    // Travel and a new ASN are both about where the call comes from: still
    // one kind, and a mass export alone is one kind too.
    let mut d = Decider::new(enforce());
    for findings in [
        vec![
            finding(DetectorKind::Geo, "impossible_travel", 0.95),
            finding(DetectorKind::Novelty, "new_asn", 0.5),
        ],
        vec![finding(DetectorKind::Volume, "mass_export", 1.0)],
    ] {
        let mut d2 = Decider::new(enforce());
        let out = decide_one(&mut d2, T0_MS, findings);
        assert_eq!(out.decisions[0].action, Action::Alert);
    }

    // Travel plus a new user-agent family plus a new ASN revokes.
    let out = decide_one(
        &mut d,
        T0_MS,
        vec![
            finding(DetectorKind::Geo, "impossible_travel", 0.85),
            finding(DetectorKind::Novelty, "new_user_agent", 0.35),
            finding(DetectorKind::Novelty, "new_asn", 0.5),
        ],
    );
    let dec = &out.decisions[0];
    assert_eq!(dec.action, Action::Revoke);
    assert_eq!(
        dec.basis,
        [
            "network: impossible_travel, new_asn",
            "client: new_user_agent"
        ]
    );
    assert_eq!(
        dec.notes,
        ["revoke because: network (impossible_travel, new_asn) and client (new_user_agent)"]
    );
}

#[test]
fn kinds_corroborate_across_events_within_the_window_only() {
    let mut d = Decider::new(enforce());
    // A new hosting network first (alerts), then a volume jump 10 min
    // later: two kinds within the hour revoke, and the basis says when.
    let out = decide_one(
        &mut d,
        T0_MS,
        vec![finding(DetectorKind::Novelty, "new_asn", 0.5)],
    );
    assert_eq!(out.decisions[0].action, Action::Alert);
    let out = decide_one(
        &mut d,
        T0_MS + 10 * MIN_MS,
        vec![finding(DetectorKind::Volume, "volume_spike", 0.9)],
    );
    let dec = &out.decisions[0];
    assert_eq!(dec.action, Action::Revoke, "{:?}", dec.notes);
    assert_eq!(
        dec.basis,
        ["network: new_asn 600 s earlier", "behaviour: volume_spike"]
    );

    // Two hours apart they do not corroborate.
    let mut d = Decider::new(enforce());
    decide_one(
        &mut d,
        T0_MS,
        vec![finding(DetectorKind::Novelty, "new_asn", 0.5)],
    );
    let out = decide_one(
        &mut d,
        T0_MS + 2 * HOUR_MS,
        vec![finding(DetectorKind::Volume, "volume_spike", 0.9)],
    );
    assert_eq!(out.decisions[0].action, Action::Alert);
}

#[test]
fn low_confidence_findings_never_corroborate() {
    let mut d = Decider::new(enforce());
    let cloud_hop = finding(DetectorKind::Geo, "impossible_travel", 0.95).with_confidence(0.4);
    let out = decide_one(&mut d, T0_MS, vec![cloud_hop.clone()]);
    assert_eq!(out.decisions[0].action, Action::Alert);
    // Nor later: the low-confidence travel was not remembered.
    let out = decide_one(
        &mut d,
        T0_MS + MIN_MS,
        vec![finding(DetectorKind::Volume, "volume_spike", 0.95)],
    );
    assert_eq!(out.decisions[0].action, Action::Alert);
    // In one event with another kind, it does not count either.
    let mut d = Decider::new(enforce());
    let out = decide_one(
        &mut d,
        T0_MS,
        vec![
            cloud_hop,
            finding(DetectorKind::Novelty, "new_user_agent", 0.35),
        ],
    );
    assert_eq!(out.decisions[0].action, Action::Alert);
}

/// Issue 11, section 5: events name any issuer they like. A flood of
/// revocations for names with no kill switch must not spend the budget of
/// the real one, nor keep state per invented name.
#[test]
fn an_issuer_flood_from_input_never_spends_a_real_issuer_s_budget() {
    let mut config = enforce();
    config.budget = BudgetConfig {
        per_issuer_per_minute: 2,
        overall_per_minute: 2,
    };
    let mut d = Decider::new(config);
    d.set_revocable_issuers(&["oauth".to_string()]);
    let decide = |d: &mut Decider, i: u64, issuer: String| {
        let mut e = event(T0_MS + i as i64);
        e.token_id = format!("tok-{i}");
        e.issuer = issuer;
        let mut out = DecisionOutput::default();
        d.decide(
            i,
            &e,
            &origin(i as i64),
            vec![finding(DetectorKind::Scope, "out_of_scope", 0.9)],
            &mut out,
        );
        out
    };
    for i in 0..1000 {
        let out = decide(&mut d, i, format!("invented-{i}"));
        assert_eq!(out.decisions[0].action, Action::Alert, "judged and alerted");
        assert!(
            out.decisions[0]
                .notes
                .iter()
                .any(|n| n.contains("no issuer named"))
        );
        assert!(out.alerts.is_empty(), "no budget alert: no budget spent");
    }
    assert_eq!(d.stats().unconfigured_issuer, 1000);
    assert_eq!(d.stats().over_budget, 0);
    for i in 1000..1002 {
        let out = decide(&mut d, i, "oauth".into());
        assert_eq!(
            out.decisions[0].action,
            Action::Revoke,
            "the real issuer's budget is whole"
        );
    }
}
