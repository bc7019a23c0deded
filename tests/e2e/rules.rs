//! `tokenwatch rules test`: the shipped rules pass their golden cases, and
//! a wrong expectation or an untested rule fails the command.

use crate::support::{temp_dir, tokenwatch};

fn rules_test(dir: &std::path::Path, anonymous_db: bool) -> (bool, String) {
    let mut cmd = tokenwatch();
    cmd.args(["rules", "test"]).arg(dir);
    if anonymous_db {
        cmd.arg("--anonymous-db").arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/geoip/GeoIP2-Anonymous-IP-Test.mmdb"
        ));
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn shipped_rules_pass_their_golden_cases() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("detectors/rules");
    let (ok, out) = rules_test(&dir, true);
    assert!(ok, "{out}");
    assert!(out.contains(" cases, 0 failed, 0 other problems"), "{out}");
    assert!(!out.contains("FAIL"), "{out}");
    // Without the Anonymous-IP database, the rule that needs it is refused.
    let (ok, out) = rules_test(&dir, false);
    assert!(!ok);
    assert!(
        out.contains("is_anonymous_ip needs detectors.geoip.anonymous_db"),
        "{out}"
    );
}

#[test]
fn a_wrong_expectation_or_an_untested_rule_fails() {
    let dir = temp_dir();
    std::fs::write(
        dir.join("wrong.toml"),
        r#"
[[rules]]
name = "fr"
when = "country = 'FR'"

[[rules]]
name = "untested"
when = "status >= 500"

[[cases]]
rule = "fr"
name = "claims a match that is not there"
match = true
event = { ts = "2026-01-05T10:00:00Z", token_id = "k", issuer = "api", action = "GET /", country = "DE" }

[[cases]]
rule = "fr"
name = "right"
match = false
event = { ts = "2026-01-05T10:00:00Z", token_id = "k", issuer = "api", action = "GET /", country = "US" }
"#,
    )
    .unwrap();
    let (ok, out) = rules_test(&dir, false);
    assert!(!ok, "{out}");
    assert!(out.contains("FAIL wrong.toml fr / claims a match that is not there: expected match = true, got false"), "{out}");
    assert!(out.contains("ok   wrong.toml fr / right"), "{out}");
    assert!(
        out.contains("rule `untested` has no case with match = true"),
        "{out}"
    );
    assert!(out.contains("2 cases, 1 failed, 2 other problems"), "{out}");
}

#[test]
fn the_example_config_s_rules_catch_a_real_shaped_cloudtrail_record() {
    // A CloudTrail fixture turned into a StopLogging call: the decoder's
    // action naming and the shipped aws.toml rules must agree.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let record =
        std::fs::read_to_string(root.join("tests/fixtures/formats/cloudtrail-getobject.json"))
            .unwrap()
            .replace(
                r#""eventSource":"s3.amazonaws.com","eventName":"GetObject""#,
                r#""eventSource":"cloudtrail.amazonaws.com","eventName":"StopLogging""#,
            );
    assert!(record.contains("StopLogging"));
    let input = temp_dir().join("stop-logging.json");
    std::fs::write(&input, record).unwrap();
    let out = tokenwatch()
        .current_dir(root)
        .envs(crate::support::fixture_geoip_env())
        .args([
            "replay",
            "-c",
            "tokenwatch.example.toml",
            "--format",
            "cloudtrail",
            "--enforce",
        ])
        .arg(&input)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decision: serde_json::Value =
        serde_json::from_slice(out.stdout.split(|&b| b == b'\n').next().unwrap()).unwrap();
    // The rules call for a revoke; the example config configures no `aws`
    // issuer, so, as `run` would, the replay alerts and says why.
    assert_eq!(decision["recommended"], "revoke", "{decision}");
    assert_eq!(decision["action"], "alert", "{decision}");
    assert!(
        decision["notes"].as_array().unwrap().iter().any(|n| n
            .as_str()
            .unwrap()
            .contains("no issuer named \"aws\" is configured")),
        "{decision}"
    );
    assert_eq!(decision["token_id"], "AKIAIOSFODNN7EXAMPLE");
    let rules: Vec<&str> = decision["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["evidence"]["facts"]["rule"].as_str())
        .collect();
    assert!(rules.contains(&"cloudtrail_tampering"), "{decision}");
}

/// The AWS rule packs against 310 real CloudTrail records of Stratus Red
/// Team detonations (tests/fixtures/attack-logs, Apache-2.0): every
/// technique a rule's description claims is matched by that rule on at
/// least one of the technique's records, and the coverage is printed.
#[test]
fn aws_rule_packs_match_every_claimed_stratus_technique() {
    use std::collections::{BTreeMap, BTreeSet};

    use arrow::array::Array;
    use detectors::policy::{AnonymousDb, PolicyConfig, PolicySet, policy_batch};
    use schemas::decode::Decoder;
    use schemas::{Fingerprinter, Format};

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let policy = PolicyConfig {
        rules: Vec::new(),
        files: vec![
            root.join("detectors/rules/aws.toml"),
            root.join("detectors/rules/aws-attacks.toml"),
        ],
    };
    let rules = policy.all_rules().unwrap();
    let mut set = PolicySet::compile(&rules, &AnonymousDb::default()).unwrap();
    let names: Vec<String> = set.names().map(str::to_owned).collect();
    // cloudtrail_tampering (aws.toml) predates the pack's descriptions.
    let mut claims: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in &rules {
        let description = r.description.clone().unwrap_or_default();
        for word in description.split([' ', ',', '(', ')']) {
            if word.starts_with("aws.") {
                claims
                    .entry(r.name.clone())
                    .or_default()
                    .insert(word.to_string());
            }
        }
    }
    claims
        .entry("cloudtrail_tampering".into())
        .or_default()
        .extend(
            [
                "cloudtrail-stop",
                "cloudtrail-delete",
                "cloudtrail-event-selectors",
            ]
            .map(|t| format!("aws.defense-evasion.{t}")),
        );

    let decoder = Decoder::new(Format::Cloudtrail, 1 << 20, Fingerprinter::new(b"stratus"));
    let text = std::fs::read_to_string(
        root.join("tests/fixtures/attack-logs/stratus-detonation-logs.labelled.ndjson"),
    )
    .unwrap();
    let mut techniques = BTreeSet::new();
    let mut matched: BTreeSet<(String, String)> = BTreeSet::new();
    let mut no_token = BTreeSet::new();
    for line in text.lines() {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        let technique = record["label"]["technique"].as_str().unwrap().to_string();
        techniques.insert(technique.clone());
        let bytes = serde_json::to_vec(&record["event"]).unwrap();
        let Ok(decoded) = decoder.decode(&bytes) else {
            no_token.insert(technique);
            continue;
        };
        let events = [decoded.event];
        let batch = policy_batch(&events, &[Some(0)], set.columns_read()).unwrap();
        for ((name, mask), rule) in names.iter().zip(set.evaluate(&batch)).zip(&rules) {
            // A rule with `with_findings` also needs a detector's finding
            // on the event, which one record alone cannot raise.
            if rule.with_findings.is_empty() && mask.is_some_and(|m| m.is_valid(0) && m.value(0)) {
                matched.insert((name.clone(), technique.clone()));
            }
        }
    }
    let mut missing = Vec::new();
    for (rule, claimed) in &claims {
        for t in claimed {
            assert!(
                techniques.contains(t),
                "{rule} claims {t}, which the logs do not have"
            );
            if !matched.contains(&(rule.clone(), t.clone())) {
                missing.push(format!("{rule} / {t}"));
            }
        }
    }
    let covered: BTreeSet<&String> = matched.iter().map(|(_, t)| t).collect();
    println!(
        "Stratus coverage: {} of {} techniques matched by a rule; records without a token: {:?}",
        covered.len(),
        techniques.len(),
        no_token
    );
    for t in &techniques {
        let by: Vec<&str> = matched
            .iter()
            .filter(|(_, m)| m == t)
            .map(|(r, _)| r.as_str())
            .collect();
        println!(
            "  {t}: {}",
            if by.is_empty() {
                "-".into()
            } else {
                by.join(", ")
            }
        );
    }
    assert!(missing.is_empty(), "claimed but not matched: {missing:?}");
    assert!(covered.len() >= 33, "coverage fell to {}", covered.len());
}

/// The GitHub, Okta and Kubernetes packs read the action as each vendor
/// decoder writes it: a real-shaped record (tests/fixtures/formats) is a
/// near-miss as it is, and matches once the one field that makes it an
/// attack is changed.
#[test]
fn saas_rule_packs_match_what_the_vendor_decoders_produce() {
    use arrow::array::Array;
    use detectors::policy::{AnonymousDb, PolicyConfig, PolicySet, policy_batch};
    use schemas::decode::Decoder;
    use schemas::{Fingerprinter, Format};

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let cases = [
        (
            Format::Github,
            "github",
            "github-git-clone.json",
            "/action",
            "public_key.create",
            "github_persistence",
        ),
        (
            Format::K8s,
            "k8s",
            "k8s-get-secret.json",
            "/verb",
            "list",
            "k8s_secret_enumeration",
        ),
        (
            Format::Okta,
            "okta",
            "okta-api-token.json",
            "/eventType",
            "system.api_token.create",
            "okta_privilege_grant",
        ),
    ];
    for (format, pack, fixture, field, attack, rule) in cases {
        let policy = PolicyConfig {
            rules: Vec::new(),
            files: vec![root.join(format!("detectors/rules/{pack}.toml"))],
        };
        let rules = policy.all_rules().unwrap();
        let mut set = PolicySet::compile(&rules, &AnonymousDb::default()).unwrap();
        let names: Vec<String> = set.names().map(str::to_owned).collect();
        let decoder = Decoder::new(format, 1 << 20, Fingerprinter::new(b"packs"));
        let mut record: serde_json::Value = serde_json::from_slice(
            &std::fs::read(root.join("tests/fixtures/formats").join(fixture)).unwrap(),
        )
        .unwrap();
        let mut matches = |record: &serde_json::Value| -> Vec<String> {
            let event = decoder
                .decode(&serde_json::to_vec(record).unwrap())
                .unwrap()
                .event;
            let batch = policy_batch(&[event], &[Some(0)], set.columns_read()).unwrap();
            names
                .iter()
                .zip(set.evaluate(&batch))
                .filter(|(_, m)| m.as_ref().is_some_and(|m| m.is_valid(0) && m.value(0)))
                .map(|(n, _)| n.clone())
                .collect()
        };
        assert!(matches(&record).is_empty(), "{fixture} as it is");
        *record.pointer_mut(field).unwrap() = attack.into();
        assert_eq!(
            matches(&record),
            [rule],
            "{fixture} with {field} = {attack}"
        );
    }
}
