use schemas::{Action, Event};

use super::*;
use crate::geoip::tests::fixture;

fn rule(name: &str, when: &str) -> RuleConfig {
    RuleConfig {
        name: name.into(),
        when: when.into(),
        action: RuleAction::Alert,
        when_degraded: None,
        with_findings: Vec::new(),
        severity: Severity::High,
        description: None,
    }
}

fn event(action: &str, country: Option<&str>, ip: &str, bytes_out: u64) -> Event {
    let mut e = Event::new(1_767_000_000_000, "k1", "api", action);
    e.country = country.map(Into::into);
    e.src_ip = Some(ip.parse().unwrap());
    e.bytes_out = Some(bytes_out);
    e
}

fn matches(set: &mut PolicySet, events: &[Event], ages: &[Option<i64>]) -> Vec<Vec<bool>> {
    let batch = policy_batch(events, ages, set.columns_read()).unwrap();
    set.evaluate(&batch)
        .into_iter()
        .map(|m| {
            let m = m.expect("rule evaluates");
            (0..m.len()).map(|i| m.is_valid(i) && m.value(i)).collect()
        })
        .collect()
}

fn no_db() -> AnonymousDb {
    AnonymousDb::default()
}

fn anonymous_db() -> AnonymousDb {
    open_anonymous_db(Some(&fixture("GeoIP2-Anonymous-IP-Test.mmdb"))).unwrap()
}

#[test]
fn the_spec_examples_match_what_they_say() {
    let rules = [
        rule(
            "admin_delete_abroad",
            "action LIKE 'DELETE /admin/%' AND country NOT IN ('US','DE')",
        ),
        rule(
            "big_export_outside",
            "bytes_out > 50000000 AND NOT cidr_contains('10.0.0.0/8', src_ip)",
        ),
    ];
    let mut set = PolicySet::compile(&rules, &no_db()).unwrap();
    let events = [
        event("DELETE /admin/users/7", Some("FR"), "81.2.69.1", 10),
        event("DELETE /admin/users/7", Some("US"), "81.2.69.1", 10),
        event("GET /admin/users/7", Some("FR"), "81.2.69.1", 10),
        event("GET /export", Some("US"), "81.2.69.1", 60_000_000),
        event("GET /export", Some("US"), "10.3.2.1", 60_000_000),
        // No country (no GeoIP answer): NOT IN on NULL is NULL, no match.
        event("DELETE /admin/x", None, "81.2.69.1", 10),
    ];
    let got = matches(&mut set, &events, &[None; 6]);
    assert_eq!(got[0], [true, false, false, false, false, false]);
    assert_eq!(got[1], [false, false, false, true, false, false]);
    assert_eq!(set.plans(), 2);
    let stats = set.stats();
    assert_eq!((stats[0].matches, stats[1].matches), (1, 1));
}

#[test]
fn bad_rules_fail_with_their_name_and_datafusion_s_message() {
    let rules = [
        rule("ok", "status >= 500"),
        rule("syntax", "action LIKE 'x' AND ("),
        rule("unknown_column", "no_such_column = 1"),
        rule("not_boolean", "bytes_out + 1"),
        rule("bad_argument", "cidr_contains('10.0.0.0/8')"),
        rule("ok", "status = 401"),
        rule("", "true"),
    ];
    let problems = PolicySet::compile(&rules, &no_db()).err().expect("fails");
    assert_eq!(problems.len(), 6, "{problems:#?}");
    assert!(
        problems[0].starts_with("rule `syntax`: SQL error"),
        "{}",
        problems[0]
    );
    assert!(
        problems[1].starts_with("rule `unknown_column`:") && problems[1].contains("no_such_column"),
        "{}",
        problems[1]
    );
    assert!(
        problems[2].contains("`not_boolean`: `when` must be a boolean expression"),
        "{}",
        problems[2]
    );
    assert!(
        problems[3].starts_with("rule `bad_argument`:") && problems[3].contains("cidr_contains"),
        "{}",
        problems[3]
    );
    assert!(problems[4].contains("`ok`: the name is used twice"));
    assert!(problems[5].contains("empty name"));
}

#[test]
fn is_anonymous_ip_reads_the_anonymous_database_and_is_refused_without_one() {
    let rules = [rule("anon", "is_anonymous_ip(src_ip)")];
    let problems = PolicySet::compile(&rules, &no_db())
        .err()
        .expect("no database");
    assert!(
        problems[0].contains("needs detectors.geoip.anonymous_db"),
        "{}",
        problems[0]
    );

    let mut set = PolicySet::compile(&rules, &anonymous_db()).unwrap();
    let events = [
        event("GET /", None, "81.2.69.142", 1),
        event("GET /", None, "1.2.0.1", 1),
        event("GET /", None, "175.16.199.1", 1),
    ];
    assert_eq!(
        matches(&mut set, &events, &[None; 3])[0],
        [true, true, false]
    );
}

#[test]
fn token_age_private_ips_and_globs_are_usable_together() {
    let rules = [rule(
        "young_token_public_write",
        "token_age_s < 3600 AND NOT is_private_ip(src_ip) AND glob_match('s3:Put*', action)",
    )];
    let mut set = PolicySet::compile(&rules, &no_db()).unwrap();
    let events = [
        event("s3:PutObject", None, "8.8.8.8", 1),
        event("s3:PutObject", None, "8.8.8.8", 1),
        event("s3:PutObject", None, "10.0.0.8", 1),
        event("s3:GetObject", None, "8.8.8.8", 1),
        event("s3:PutObject", None, "8.8.8.8", 1),
    ];
    let ages = [Some(10), Some(7200), Some(10), Some(10), None];
    assert_eq!(
        matches(&mut set, &events, &ages)[0],
        [true, false, false, false, false]
    );
}

#[test]
fn a_rule_failing_at_run_time_matches_nothing_and_is_counted() {
    // A cast of a value that is not a number fails only when it runs.
    let rules = [rule("bad_cast", "CAST(action AS INT) > 3")];
    let mut set = PolicySet::compile(&rules, &no_db()).unwrap();
    let batch = policy_batch(
        &[event("GET /", None, "8.8.8.8", 1)],
        &[None],
        set.columns_read(),
    )
    .unwrap();
    assert!(set.evaluate(&batch)[0].is_none());
    assert_eq!(set.stats()[0].errors, 1);
}

#[test]
fn only_the_columns_some_rule_reads_are_built() {
    let rules = [
        rule("writes", "action LIKE 'POST %'"),
        rule("young", "token_age_s < 60 AND country = 'KP'"),
    ];
    let set = PolicySet::compile(&rules, &no_db()).unwrap();
    let schema = policy_schema();
    let read: Vec<&str> = schema
        .fields()
        .iter()
        .zip(set.columns_read())
        .filter(|(_, read)| **read)
        .map(|(f, _)| f.name().as_str())
        .collect();
    assert_eq!(read, ["action", "country", TOKEN_AGE]);
    let batch = policy_batch(
        &[event("POST /x", Some("KP"), "8.8.8.8", 1)],
        &[Some(5)],
        set.columns_read(),
    )
    .unwrap();
    let column = |name: &str| batch.column(schema.index_of(name).unwrap()).clone();
    assert_eq!(column("src_ip").null_count(), 1, "not read: not built");
    assert_eq!(column("bytes_out").null_count(), 1);
    assert_eq!(column("action").null_count(), 0);
    assert_eq!(column("country").null_count(), 0);
}

#[test]
fn findings_carry_the_rule_its_severity_and_its_action() {
    let mut r = rule("r", "true");
    r.action = RuleAction::Revoke;
    r.severity = Severity::Critical;
    r.description = Some("anything".into());
    let set = PolicySet::compile(&[r], &no_db()).unwrap();
    let origin = crate::testkit::origin(7);
    let f = set.finding(
        0,
        &event("GET /", None, "8.8.8.8", 1),
        &origin,
        Some(42),
        &[],
    );
    assert_eq!(
        (f.kind, f.score, f.action),
        ("rule", 1.0, Some(Action::Revoke))
    );
    assert_eq!(f.summary, "rule r matched: anything");
    assert_eq!(f.evidence.facts["rule"], "r");
    assert_eq!(f.evidence.facts["token_age_s"], 42);
    assert_eq!(f.evidence.events[0].offset, 7);
}

/// Golden cases give a `with_findings` rule the detectors' findings on
/// their event; a kind no detector reports is the case's error, not a
/// silent "no match".
#[test]
fn golden_cases_give_the_detectors_findings() {
    let dir = std::env::temp_dir().join(format!("tw-golden-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("with.toml");
    let case = |name: &str, expect: bool, findings: &str| {
        format!(
            "[[cases]]\nrule = \"w\"\nname = \"{name}\"\nmatch = {expect}\nfindings = {findings}\n\
             event = {{ ts = \"2026-01-05T10:00:00Z\", token_id = \"k\", issuer = \"api\", action = \"POST /admin\" }}\n"
        )
    };
    let text = [
        "[[rules]]\nname = \"w\"\nwhen = \"action LIKE 'POST %'\"\nwith_findings = [\"new_asn\", \"new_country\"]\n".to_string(),
        case("new network", true, "[\"new_asn\"]"),
        case("new country and client", true, "[\"new_user_agent\", \"new_country\"]"),
        case("nothing found", false, "[]"),
        case("another kind", false, "[\"volume_spike\"]"),
        case("misspelt", false, "[\"new_asm\"]"),
    ]
    .concat();
    std::fs::write(&path, text).unwrap();
    let mut report = golden::Report::default();
    golden::run_file(&path, &no_db(), &mut report);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let got: Vec<(&str, Result<bool, String>)> = report
        .outcomes
        .iter()
        .map(|o| (o.case.as_str(), o.got.clone()))
        .collect();
    assert_eq!(
        got,
        [
            ("new network", Ok(true)),
            ("new country and client", Ok(true)),
            ("nothing found", Ok(false)),
            ("another kind", Ok(false)),
            (
                "misspelt",
                Err("findings: \"new_asm\" is no detector's finding kind".to_string())
            ),
        ]
    );
}
