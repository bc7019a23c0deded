use std::time::Duration;

use schemas::Event;

use super::*;
use crate::testkit::*;

fn config() -> NoveltyConfig {
    NoveltyConfig {
        forget_after: Duration::from_secs(10 * 86_400),
        ..Default::default()
    }
}

fn call(ts: i64, asn: u32, ua: &str, action: &str) -> Event {
    let mut e = event(ts);
    e.asn = Some(asn);
    e.as_org = Some(format!("Org {asn}").into());
    e.user_agent = Some(ua.into());
    e.action = action.into();
    e
}

#[test]
fn new_asn_after_learning_is_a_finding_and_learning_is_silent() {
    let mut h = Harness::new(NoveltyDetector::new(config(), learning_one_day()), T0_MS);
    assert!(
        h.feed(&call(T0_MS, 20712, "aws-cli/2.13", "s3:GetObject"))
            .is_empty()
    );
    assert!(
        h.feed(&call(T0_MS + HOUR_MS, 3320, "aws-cli/2.13", "s3:GetObject"))
            .is_empty(),
        "learning"
    );
    assert!(
        h.feed(&call(
            T0_MS + 2 * DAY_MS,
            3320,
            "aws-cli/2.15",
            "s3:GetObject"
        ))
        .is_empty(),
        "known"
    );
    let f = h.feed(&call(
        T0_MS + 2 * DAY_MS + HOUR_MS,
        4837,
        "aws-cli/2.15",
        "s3:GetObject",
    ));
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].kind, "new_asn");
    assert_eq!(f[0].evidence.facts["asn"], "AS4837 (Org 4837)");
}

#[test]
fn new_user_agent_family_and_action_class() {
    let mut h = Harness::new(NoveltyDetector::new(config(), learning_one_day()), T0_MS);
    h.feed(&call(T0_MS, 1, "aws-cli/2.13", "s3:GetObject"));
    let f = h.feed(&call(
        T0_MS + 2 * DAY_MS,
        1,
        "python-requests/2.31",
        "iam:CreateAccessKey",
    ));
    let kinds: Vec<&str> = f.iter().map(|f| f.kind).collect();
    assert_eq!(kinds, ["new_user_agent", "new_action_class"]);
    assert_eq!(f[0].evidence.facts["user_agent_family"], "python-requests");
    assert_eq!(f[1].evidence.facts["action_class"], "iam:Create");
}

#[test]
fn forgotten_items_are_new_again() {
    let mut h = Harness::new(NoveltyDetector::new(config(), learning_one_day()), T0_MS);
    h.feed(&call(T0_MS, 1, "a/1", "x"));
    h.feed(&call(T0_MS + 2 * DAY_MS, 2, "a/1", "x"));
    // ASN 1 last seen on day 0; by day 12 it is forgotten.
    let f = h.feed(&call(T0_MS + 12 * DAY_MS, 1, "a/1", "x"));
    assert!(f.iter().any(|f| f.kind == "new_asn"));
}

#[test]
fn item_sets_are_bounded_and_drop_the_least_recent() {
    let mut s = ItemSet::<3>::default();
    assert!(s.touch(10, 0, 1000));
    assert!(s.touch(20, 1, 1000));
    assert!(s.touch(30, 2, 1000));
    assert!(!s.touch(10, 3, 1000));
    assert!(s.touch(40, 4, 1000), "20 is the least recent and goes");
    assert_eq!(s.len(), 3);
    assert!(!s.touch(10, 5, 1000));
    assert!(s.touch(20, 6, 1000));
}

#[test]
fn validation_needs_forget_after_longer_than_learning() {
    let c = NoveltyConfig {
        forget_after: Duration::from_secs(60),
        ..Default::default()
    };
    assert_eq!(c.validate().len(), 1);
}
