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
    assert_eq!(decision["action"], "revoke", "{decision}");
    assert_eq!(decision["token_id"], "AKIAIOSFODNN7EXAMPLE");
    let rules: Vec<&str> = decision["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["evidence"]["facts"]["rule"].as_str())
        .collect();
    assert!(rules.contains(&"cloudtrail_tampering"), "{decision}");
}
