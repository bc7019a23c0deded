use schemas::TokenMetadata;

use super::*;
use crate::metadata::CompiledMetadata;
use crate::testkit::*;

#[test]
fn use_after_expiry_is_a_finding_and_before_is_not() {
    let mut h = Harness::new(ExpiryDetector, T0_MS);
    let m = TokenMetadata {
        issuer: "oauth".into(),
        token_id: "tok-1".into(),
        expires_at: Some(T0_MS + HOUR_MS),
        ..Default::default()
    };
    h.metadata = Some(CompiledMetadata::compile(&m).unwrap());
    assert!(
        h.feed(&event(T0_MS + HOUR_MS)).is_empty(),
        "at the expiry instant it is still valid"
    );
    let f = h.feed(&event(T0_MS + HOUR_MS + 90_000));
    assert_eq!((f[0].kind, f[0].score), ("expired", 1.0));
    assert_eq!(f[0].evidence.observed, Some(90.0));
    assert_eq!(
        f[0].evidence.facts["expires_at"],
        "2026-11-27T22:00:00.000Z"
    );
}

#[test]
fn tokens_without_expiry_are_not_checked() {
    let mut h = Harness::new(ExpiryDetector, T0_MS);
    assert!(h.feed(&event(T0_MS + 365 * DAY_MS)).is_empty());
}
