use std::path::PathBuf;

use schemas::{Action, Mode, TokenMetadata};

use super::*;
use crate::decision::DecisionConfig;
use crate::geoip::GeoIpConfig;
use crate::testkit::*;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/geoip"
    ))
    .join(name)
}

fn engine() -> Engine {
    let mut geoip = GeoIpConfig::new(fixture("GeoIP2-City-Test.mmdb"));
    geoip.asn_db = Some(fixture("GeoLite2-ASN-Test.mmdb"));
    let config = DetectorsConfig {
        geoip: Some(geoip),
        ..Default::default()
    };
    Engine::build(
        &config,
        &DecisionConfig {
            mode: Mode::Enforce,
            ..Default::default()
        },
    )
    .unwrap()
}

fn raw(ts: i64, token: &str, ip: &str) -> Event {
    let mut e = Event::new(ts, token, "oauth", "GET /v1/orders/{id}");
    e.src_ip = Some(ip.parse().unwrap());
    e.request_id = Some(format!("{token}-{ts}"));
    e
}

fn run(engine: &mut Engine, mut events: Vec<Event>) -> DecisionOutput {
    let origins: Vec<Origin> = (0..events.len() as i64).map(origin).collect();
    engine.process(&mut events, &origins)
}

#[test]
fn enriches_from_geoip_and_alerts_on_impossible_travel_alone() {
    let mut e = engine();
    let out = run(
        &mut e,
        vec![
            raw(T0_MS, "t", "81.2.69.142"),
            raw(T0_MS + 40 * MIN_MS, "t", "175.16.199.7"),
        ],
    );
    let d = &out.decisions[0];
    // Travel is one kind of evidence (network): it alerts, saying why it
    // did not revoke.
    assert_eq!((d.action, d.recommended), (Action::Alert, Action::Revoke));
    assert!(
        d.notes
            .iter()
            .any(|n| n.starts_with("one kind of evidence (network")),
        "{:?}",
        d.notes
    );
    assert_eq!(d.findings[0].kind, "impossible_travel");
    assert_eq!(d.findings[0].evidence.facts["from_country"], "GB");
    assert_eq!(
        d.findings[0].evidence.events[0].request_id.as_deref(),
        Some("t-1795815600000")
    );
    assert_eq!(e.stats().geoip_lookups, 2);
}

#[test]
fn metadata_drives_scope_binding_and_expiry_and_updates_live() {
    let mut e = engine();
    let meta = TokenMetadata {
        issuer: "oauth".into(),
        token_id: "t".into(),
        scopes: Some(vec!["GET /v1/orders*".into()]),
        ..Default::default()
    };
    e.upsert_metadata(&meta).unwrap();
    let mut admin = raw(T0_MS, "t", "81.2.69.142");
    admin.action = "DELETE /admin/users/1".into();
    let out = run(&mut e, vec![raw(T0_MS, "t", "81.2.69.142"), admin.clone()]);
    assert_eq!(out.decisions.len(), 1);
    assert_eq!(
        (out.decisions[0].findings[0].kind, out.decisions[0].action),
        ("out_of_scope", Action::Revoke)
    );
    assert!(e.remove_metadata("oauth", "t"));
    admin.ts_ms += 20 * MIN_MS;
    assert!(
        run(&mut e, vec![admin]).decisions.is_empty(),
        "no metadata, no scope check"
    );
}

#[test]
fn late_events_only_reach_stateless_detectors() {
    let mut e = engine();
    run(&mut e, vec![raw(T0_MS + HOUR_MS, "t", "81.2.69.142")]);
    // An hour late (lateness is 5 min): no travel computed against it.
    let out = run(&mut e, vec![raw(T0_MS, "t", "175.16.199.7")]);
    assert!(out.decisions.is_empty());
    assert_eq!(e.stats().late_events, 1);
}

/// A gateway with a fast clock stamps one event 23 h ahead: it must not
/// switch the token's stateful detectors off for 23 h (issue 11, §5).
#[test]
fn an_event_from_the_future_does_not_silence_the_token() {
    let mut e = engine();
    let call = |ts: i64, bytes: u64| {
        let mut ev = raw(ts, "t", "81.2.69.142");
        ev.bytes_out = Some(bytes);
        ev
    };
    let kafka = |events: Vec<Event>| -> Vec<Origin> {
        events
            .iter()
            .enumerate()
            .map(|(i, ev)| Origin {
                kafka_ts_ms: Some(ev.ts_ms.min(T0_MS + 2 * HOUR_MS)),
                ..origin(i as i64)
            })
            .collect()
    };
    let mut history: Vec<Event> = (0..60).map(|m| call(T0_MS + m * MIN_MS, 1000)).collect();
    let origins = kafka(history.clone());
    e.process(&mut history, &origins);
    // Produced at T0+2h, stamped T0+25h.
    let mut future = vec![call(T0_MS + 25 * HOUR_MS, 1000)];
    let origins = vec![Origin {
        kafka_ts_ms: Some(T0_MS + 2 * HOUR_MS),
        ..origin(100)
    }];
    e.process(&mut future, &origins);
    // Then a 2 GiB export at T0+2h: the volume detector still sees it.
    let mut export: Vec<Event> = (0..40)
        .map(|i| call(T0_MS + 2 * HOUR_MS + i * 1000, 50 << 20))
        .collect();
    let origins = kafka(export.clone());
    let out = e.process(&mut export, &origins);
    assert_eq!(e.stats().late_events, 0, "no event was judged late");
    assert!(
        out.decisions
            .iter()
            .flat_map(|d| &d.findings)
            .any(|f| f.kind == "mass_export"),
        "{:?}",
        out.decisions
    );
    assert_eq!((e.stats().future_events, e.stats().late_events), (1, 0));
}

#[test]
fn a_flood_of_distinct_tokens_stays_at_the_cap() {
    let config = DetectorsConfig {
        max_tokens: 1000,
        ..Default::default()
    };
    let mut e = Engine::build(&config, &DecisionConfig::default()).unwrap();
    let batch = |from: i64, n: i64| -> Vec<Event> {
        (from..from + n)
            .map(|i| raw(T0_MS + i, &format!("fake-{i}"), "198.51.100.1"))
            .collect()
    };
    run(&mut e, batch(0, 1000));
    let full = e.table_bytes();
    // A million more distinct ids, 1000 times the cap, in batches as ingest
    // hands them over. The index rehashes as evictions leave tombstones, so
    // its size moves a little, but never with the number of ids seen.
    let mut sizes = Vec::new();
    for from in (1000..1_001_000).step_by(5000) {
        run(&mut e, batch(from, 5000));
        sizes.push(e.table_bytes());
    }
    let s = e.stats().store;
    assert_eq!((s.tokens, s.evicted), (1000, 1_000_000));
    let most = sizes.iter().copied().max().unwrap();
    assert!(most <= full + full / 10, "{full} -> {most}: {sizes:?}");
}

#[test]
fn build_reports_config_and_metadata_problems() {
    let bad = DetectorsConfig {
        max_tokens: 0,
        geoip: Some(GeoIpConfig::new("/nonexistent.mmdb")),
        ..Default::default()
    };
    let err = Engine::build(
        &bad,
        &DecisionConfig {
            alert_at: 2.0,
            ..Default::default()
        },
    )
    .err()
    .unwrap()
    .to_string();
    for needle in [
        "detectors.max_tokens",
        "detectors.geoip.city_db",
        "alert_at",
    ] {
        assert!(err.contains(needle), "{needle} missing from {err}");
    }
    let corrupt = DetectorsConfig {
        geoip: Some(GeoIpConfig::new(fixture(
            "GeoIP2-City-Test-Broken-Double-Format.mmdb",
        ))),
        ..Default::default()
    };
    let err = Engine::build(&corrupt, &DecisionConfig::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("Broken-Double-Format") && err.contains("corrupt"),
        "{err}"
    );
}

#[test]
fn live_metadata_overrides_the_file_until_removed() {
    let mut e = engine();
    let file = MetadataStore::parse(r#"{"issuer":"oauth","token_id":"t","scopes":["*"]}"#).unwrap();
    e.replace_metadata(file);
    let live = TokenMetadata {
        issuer: "oauth".into(),
        token_id: "t".into(),
        scopes: Some(vec!["POST *".into()]),
        ..Default::default()
    };
    e.upsert_metadata(&live).unwrap();
    assert_eq!(
        run(&mut e, vec![raw(T0_MS, "t", "81.2.69.142")])
            .decisions
            .len(),
        1,
        "live scopes apply"
    );
    e.remove_metadata("oauth", "t");
    let out = run(&mut e, vec![raw(T0_MS + 20 * MIN_MS, "t", "81.2.69.142")]);
    assert!(out.decisions.is_empty(), "the file's scopes apply again");
}

fn policy_engine(rules: Vec<crate::policy::RuleConfig>) -> Result<Engine, BuildError> {
    let mut geoip = GeoIpConfig::new(fixture("GeoIP2-City-Test.mmdb"));
    geoip.anonymous_db = Some(fixture("GeoIP2-Anonymous-IP-Test.mmdb"));
    let mut config = DetectorsConfig {
        geoip: Some(geoip),
        ..Default::default()
    };
    config.policy.rules = rules;
    let decision = DecisionConfig {
        mode: Mode::Enforce,
        ..Default::default()
    };
    Engine::build(&config, &decision)
}

fn rule(name: &str, when: &str, action: crate::policy::RuleAction) -> crate::policy::RuleConfig {
    crate::policy::RuleConfig {
        name: name.into(),
        when: when.into(),
        action,
        when_degraded: None,
        with_findings: Vec::new(),
        severity: crate::policy::Severity::Medium,
        description: None,
    }
}

#[test]
fn a_rule_fails_closed_while_detection_is_degraded() {
    use crate::policy::RuleAction;
    let mut iam_write = rule(
        "iam_write",
        "action LIKE 'iam:Create%' OR action LIKE 'iam:Put%'",
        RuleAction::Alert,
    );
    iam_write.when_degraded = Some(RuleAction::Revoke);
    let mut e = policy_engine(vec![iam_write.clone()]).unwrap();
    let call = |token: &str, minute: i64| {
        let mut ev = raw(T0_MS + minute * MIN_MS, token, "81.2.69.160");
        ev.action = "iam:CreateAccessKey".into();
        ev
    };
    let action = |out: &DecisionOutput| out.decisions.first().map(|d| d.action);
    assert_eq!(
        action(&run(&mut e, vec![call("a", 0)])),
        Some(Action::Alert)
    );

    e.set_degraded(true);
    let out = run(&mut e, vec![call("b", 1)]);
    assert_eq!(action(&out), Some(Action::Revoke), "fail closed");
    let finding = &out.decisions[0].findings[0];
    assert_eq!(finding.evidence.facts["degraded"], true);
    assert!(
        finding.summary.contains("detection is degraded"),
        "{}",
        finding.summary
    );
    // A reload keeps the state of health.
    e.reload_policy(std::slice::from_ref(&iam_write)).unwrap();
    assert_eq!(
        action(&run(&mut e, vec![call("c", 2)])),
        Some(Action::Revoke)
    );

    e.set_degraded(false);
    let out = run(&mut e, vec![call("d", 3)]);
    assert_eq!(action(&out), Some(Action::Alert));
    assert!(
        !out.decisions[0].findings[0]
            .evidence
            .facts
            .contains_key("degraded")
    );

    // It may only be stricter.
    let mut weaker = rule("weaker", "true", RuleAction::Revoke);
    weaker.when_degraded = Some(RuleAction::Alert);
    let Err(BuildError::Policy(problems)) = policy_engine(vec![weaker]) else {
        panic!("a weaker when_degraded must be refused");
    };
    assert!(problems[0].contains("at least as strict"), "{problems:?}");
}

/// The issue's example of failing closed: "an IAM write from a network new
/// to this token" is a rule on the action with `with_findings = ["new_asn"]`.
/// It alerts (revokes while degraded) on the write from a new network, and
/// is silent on the same write from the token's own network.
#[test]
fn a_rule_with_findings_matches_only_with_the_detectors_finding() {
    use crate::policy::RuleAction;
    let mut iam_write = rule(
        "iam_write_from_a_new_network",
        "action LIKE 'iam:%' AND NOT (action LIKE 'iam:Get%' OR action LIKE 'iam:List%')",
        RuleAction::Alert,
    );
    iam_write.with_findings = vec!["new_asn".into()];
    iam_write.when_degraded = Some(RuleAction::Revoke);
    let mut e = role_engine(0);
    assert_eq!(e.reload_policy(std::slice::from_ref(&iam_write)), Ok(1));
    // Two days of reads from London for two keys.
    let mut history = Vec::new();
    for minute in (0..2 * 24 * 60).step_by(10) {
        for key in ["AKIAONE", "AKIATWO"] {
            history.push(role_call(
                T0_MS + minute * MIN_MS,
                key,
                london,
                "Boto3/1.34",
            ));
        }
    }
    assert!(run(&mut e, history).decisions.is_empty());
    let write = |key: &str, minute: i64, place: fn(Event) -> Event| {
        let mut call = role_call(
            T0_MS + 2 * DAY_MS + minute * MIN_MS,
            key,
            place,
            "Boto3/1.34",
        );
        call.action = "iam:CreateAccessKey".into();
        call
    };
    let rule_findings = |out: &DecisionOutput| -> Vec<schemas::Finding> {
        out.decisions
            .iter()
            .flat_map(|d| d.findings.iter())
            .filter(|f| f.kind == "rule")
            .cloned()
            .collect()
    };

    let home = run(&mut e, vec![write("AKIAONE", 1, london)]);
    assert!(rule_findings(&home).is_empty(), "{:?}", home.decisions);
    assert_eq!(
        e.stats().policy.per_rule[0].matches,
        0,
        "the SQL matched, the rule did not"
    );

    let away = run(&mut e, vec![write("AKIAONE", 2, linkoping)]);
    let found = rule_findings(&away);
    assert_eq!(found.len(), 1, "{:?}", away.decisions);
    assert_eq!(
        found[0].evidence.facts["with_findings"],
        serde_json::json!(["new_asn"])
    );
    assert!(
        found[0].summary.ends_with("with new_asn"),
        "{}",
        found[0].summary
    );
    assert_eq!(found[0].action, Some(Action::Alert));
    let kinds: Vec<&str> = away.decisions[0].findings.iter().map(|f| f.kind).collect();
    assert!(kinds.contains(&"new_asn"), "{kinds:?}");
    assert_eq!(e.stats().policy.per_rule[0].matches, 1);

    // Degraded, the same write from a new network revokes; from home it
    // still does nothing.
    e.set_degraded(true);
    let home = run(&mut e, vec![write("AKIATWO", 3, london)]);
    assert!(rule_findings(&home).is_empty(), "{:?}", home.decisions);
    let away = run(&mut e, vec![write("AKIATWO", 4, linkoping)]);
    assert_eq!(
        away.decisions[0].action,
        Action::Revoke,
        "{:?}",
        away.decisions
    );
    assert_eq!(rule_findings(&away)[0].action, Some(Action::Revoke));

    // Only detectors' finding kinds, each once.
    for (kinds, problem) in [
        (
            vec!["new_asn", "new_asm"],
            "\"new_asm\" is no detector's finding kind",
        ),
        (vec!["rule"], "\"rule\" is no detector's finding kind"),
        (vec!["new_asn", "new_asn"], "\"new_asn\" is named twice"),
    ] {
        iam_write.with_findings = kinds.into_iter().map(Into::into).collect();
        let Err(problems) = e.reload_policy(std::slice::from_ref(&iam_write)) else {
            panic!("{:?} must be refused", iam_write.with_findings);
        };
        assert!(problems[0].contains(problem), "{problems:?}");
        assert!(
            problems[0].contains("known: mass_export, volume_spike"),
            "{problems:?}"
        );
    }
}

#[test]
fn rules_see_the_enrichment_act_on_their_own_action_and_are_planned_once() {
    use crate::policy::RuleAction;
    let mut e = policy_engine(vec![
        // GB comes from the City database, anonymity from the Anonymous-IP one.
        rule(
            "gb_delete",
            "action LIKE 'DELETE %' AND country = 'GB'",
            RuleAction::Revoke,
        ),
        rule(
            "anonymous",
            "is_anonymous_ip(src_ip) AND token_age_s >= 60",
            RuleAction::Alert,
        ),
    ])
    .unwrap();
    let mut delete = raw(T0_MS, "a", "81.2.69.160");
    delete.action = "DELETE /v1/orders/7".into();
    let out = run(
        &mut e,
        vec![
            delete,
            raw(T0_MS, "b", "1.2.0.1"),
            raw(T0_MS + 2 * MIN_MS, "b", "1.2.0.1"),
        ],
    );
    let by_token = |t: &str| out.decisions.iter().find(|d| d.token_id == t).unwrap();
    let a = by_token("a");
    assert_eq!((a.action, a.findings[0].kind), (Action::Revoke, "rule"));
    assert_eq!(a.findings[0].evidence.facts["rule"], "gb_delete");
    // b's first call is too young for the rule; the second, 120 s later, alerts.
    let b = by_token("b");
    assert_eq!(b.action, Action::Alert);
    assert_eq!(b.findings[0].evidence.facts["token_age_s"], 120);
    assert_eq!(out.decisions.len(), 2);

    for i in 0..20 {
        run(
            &mut e,
            vec![raw(T0_MS + (3 + i) * MIN_MS, "c", "175.16.199.7")],
        );
    }
    let stats = e.stats().policy;
    assert_eq!((stats.rules, stats.plans, stats.evaluations), (2, 2, 21));
    assert_eq!(stats.per_rule[0].matches, 1);
}

#[test]
fn a_bad_rule_fails_the_build_and_a_bad_reload_keeps_the_rules_in_force() {
    use crate::policy::RuleAction;
    let Err(BuildError::Policy(problems)) =
        policy_engine(vec![rule("typo", "contry = 'GB'", RuleAction::Alert)])
    else {
        panic!("a bad rule must fail the build");
    };
    assert!(problems[0].starts_with("rule `typo`:") && problems[0].contains("contry"));

    let mut e = policy_engine(vec![rule("gb", "country = 'GB'", RuleAction::Alert)]).unwrap();
    let bad = vec![rule("new", "country = ", RuleAction::Alert)];
    assert!(e.reload_policy(&bad).is_err());
    assert_eq!(e.policy_rules(), ["gb"]);
    assert_eq!(
        run(&mut e, vec![raw(T0_MS, "a", "81.2.69.160")])
            .decisions
            .len(),
        1
    );

    let good = vec![rule("de", "country = 'DE'", RuleAction::Alert)];
    assert_eq!(e.reload_policy(&good), Ok(1));
    assert_eq!(e.policy_rules(), ["de"]);
    assert!(
        run(&mut e, vec![raw(T0_MS + MIN_MS, "z", "81.2.69.160")])
            .decisions
            .is_empty()
    );
    let stats = e.stats().policy;
    // The failed reload made no plan (its rule did not parse); the good one made one.
    assert_eq!(
        (stats.plans, stats.reloads, stats.reload_failures),
        (2, 1, 1)
    );
}

/// An enriched CloudTrail-like call of a role session's key.
fn role_call(ts: i64, key: &str, place: fn(Event) -> Event, ua: &str) -> Event {
    let mut e = place(Event::new(ts, key, "aws", "s3:GetObject"));
    e.principal = Some("arn:aws:sts::111122223333:assumed-role/app/i-0abc".into());
    e.user_agent = Some(ua.into());
    e.request_id = Some(format!("{key}-{ts}"));
    e
}

fn role_engine(max_principals: usize) -> Engine {
    let config = DetectorsConfig {
        max_principals,
        ..Default::default()
    };
    let decision = DecisionConfig {
        mode: Mode::Enforce,
        ..Default::default()
    };
    Engine::with_parts(&config, &decision, None, MetadataStore::default())
}

#[test]
fn stolen_role_credentials_are_new_for_the_principal_though_the_key_is_new() {
    let steal = |max_principals| {
        let mut e = role_engine(max_principals);
        // Two days of a role session on an instance in London: its key
        // rotates every 6 hours, 20 calls an hour.
        let mut events = Vec::new();
        for minute in (0..2 * 24 * 60).step_by(3) {
            let key = format!("ASIA{}", minute / 360);
            let ts = T0_MS + minute * MIN_MS;
            events.push(role_call(ts, &key, london, "Boto3/1.34 Python/3.12"));
        }
        let quiet = run(&mut e, events);
        assert!(quiet.decisions.is_empty(), "{:?}", quiet.decisions);
        // A fresh key of the session, used ten minutes later from another
        // continent's network with another client.
        let stolen = role_call(
            T0_MS + 2 * DAY_MS + 10 * MIN_MS,
            "ASIASTOLEN",
            changchun,
            "aws-cli/2.15 Python/3.11",
        );
        (run(&mut e, vec![stolen]), e.stats().inherited_tokens)
    };

    let (out, inherited) = steal(200_000);
    assert_eq!(inherited, 8, "7 rotated keys and the stolen one inherit");
    let d = &out.decisions[0];
    let kinds: Vec<&str> = d.findings.iter().map(|f| f.kind).collect();
    assert!(
        kinds.contains(&"new_asn") && kinds.contains(&"new_user_agent"),
        "{kinds:?}"
    );
    assert!(kinds.contains(&"impossible_travel"), "{kinds:?}");
    assert_eq!(d.action, Action::Revoke, "{:?}", d.notes);
    assert!(
        d.basis.iter().any(|b| b.starts_with("client:")),
        "{:?}",
        d.basis
    );

    // Without the principal's context the key is brand new: nothing to
    // compare with, nothing found.
    let (out, inherited) = steal(0);
    assert_eq!(inherited, 0);
    assert!(out.decisions.is_empty(), "{:?}", out.decisions);
}

/// What a token has learned survives the state changelog's codec: a day of
/// calls from two places, with two clients and several actions, gives a
/// state that decodes equal to itself.
/// Runs `events` read from partition 3 of "api-calls" at `offsets`.
fn run_at(engine: &mut Engine, mut events: Vec<Event>, first_offset: i64) -> DecisionOutput {
    let origins: Vec<Origin> = (0..events.len() as i64)
        .map(|i| Origin {
            topic: "api-calls".into(),
            partition: 3,
            offset: first_offset + i,
            kafka_ts_ms: None,
        })
        .collect();
    engine.process(&mut events, &origins)
}

#[test]
fn learned_state_survives_the_changelog_and_a_redelivery_counts_once() {
    let mut e = engine().with_changelog();
    let mut events = Vec::new();
    for minute in 0..24 * 60 {
        let (ip, ua) = if minute % 3 == 0 {
            ("175.16.199.7", "curl/8.5.0")
        } else {
            ("81.2.69.142", "Boto3/1.34 Python/3.12")
        };
        let mut ev = raw(T0_MS + minute * MIN_MS, "learned", ip);
        ev.user_agent = Some(ua.into());
        ev.principal = Some("role/etl".into());
        ev.action =
            ["GET /v1/orders/{id}", "s3:GetObject", "POST /v1/orders"][minute as usize % 3].into();
        ev.bytes_out = Some(1_000 + minute as u64);
        ev.records_out = Some(1 + minute as u64 % 7);
        events.push(ev);
    }
    for (i, chunk) in events.chunks(512).enumerate() {
        run_at(&mut e, chunk.to_vec(), i as i64 * 512);
    }
    let state = e.token_state("oauth", "learned").unwrap().clone();
    assert_eq!(state.events, 24 * 60);
    assert_eq!(e.dirty_tokens(), 1);

    // Checkpointed, written and read back as a changelog record.
    let entries = e.checkpoint();
    assert_eq!((entries.len(), e.dirty_tokens()), (1, 0));
    let entry = &entries[0];
    assert_eq!(
        (entry.key().as_str(), entry.partition()),
        ("oauth/learned", 3)
    );
    let back = crate::changelog::Entry::decode(entry.key().as_bytes(), &entry.value()).unwrap();
    assert_eq!(back.state, state);
    assert_eq!(back.principal.as_deref(), Some("role/etl"));
    // It learned something worth keeping.
    assert!(
        back.state.volume.describe()["baseline"]["samples"]
            .as_u64()
            .unwrap()
            > 0,
        "{}",
        back.state.volume.describe()
    );

    // Another instance restores it, then reads the last chunk again (its
    // offsets were not committed) and one new event.
    let mut other = engine().with_changelog();
    assert_eq!(other.restore(vec![back]), 1);
    assert_eq!(other.token_state("oauth", "learned"), Some(&state));
    assert_eq!(
        other.stats().principals.tokens,
        1,
        "the principal's context is rebuilt from its restored token"
    );
    let last = events.len() - events.len() % 512;
    run_at(&mut other, events[last..].to_vec(), last as i64);
    assert_eq!(
        other.token_state("oauth", "learned"),
        Some(&state),
        "a redelivered event is not applied twice"
    );
    assert_eq!(
        other.stats().redelivered_events,
        (events.len() - last) as u64
    );
    assert_eq!(other.dirty_tokens(), 0, "nothing changed");
    let mut next = events[events.len() - 1].clone();
    next.ts_ms += MIN_MS;
    run_at(&mut other, vec![next], events.len() as i64);
    assert_eq!(
        other.token_state("oauth", "learned").unwrap().events,
        24 * 60 + 1
    );
    assert_eq!(other.dirty_tokens(), 1);

    // The partition moves on: its tokens are forgotten here.
    let moved = [(crate::state::topic_tag("api-calls"), 3)];
    assert_eq!(other.forget_partitions(&moved[..1]), 1);
    assert_eq!(other.token_state("oauth", "learned"), None);
    assert_eq!(other.dirty_tokens(), 0);
}

#[test]
fn without_the_changelog_offsets_are_not_compared() {
    // Replays and tests number each file's or batch's records from 0.
    let mut e = engine();
    run(&mut e, vec![raw(T0_MS, "t", "81.2.69.142")]);
    run(&mut e, vec![raw(T0_MS + MIN_MS, "t", "81.2.69.142")]);
    assert_eq!(e.token_state("oauth", "t").unwrap().events, 2);
    assert_eq!(e.stats().redelivered_events, 0);
}
