use schemas::TokenMetadata;

use super::*;
use crate::metadata::CompiledMetadata;
use crate::testkit::*;

fn scoped(scopes: &[&str]) -> Harness<ScopeDetector> {
    let mut h = Harness::new(ScopeDetector, T0_MS);
    let m = TokenMetadata {
        issuer: "oauth".into(),
        token_id: "tok-1".into(),
        scopes: Some(scopes.iter().map(|s| s.to_string()).collect()),
        ..Default::default()
    };
    h.metadata = Some(CompiledMetadata::compile(&m).unwrap());
    h
}

#[test]
fn an_out_of_scope_admin_call_is_a_finding() {
    let mut h = scoped(&["GET /v1/orders*", "POST /v1/orders"]);
    let mut e = event(T0_MS);
    e.action = "GET /v1/orders/42".into();
    assert!(h.feed(&e).is_empty());
    e.action = "DELETE /admin/users/7".into();
    let f = h.feed(&e);
    assert_eq!((f[0].kind, f[0].score), ("out_of_scope", 0.9));
    assert_eq!(f[0].evidence.facts["action"], "DELETE /admin/users/7");
    assert!(f[0].summary.contains("GET /v1/orders*"));
}

#[test]
fn no_scopes_means_no_check_and_empty_scopes_allow_nothing() {
    let mut h = Harness::new(ScopeDetector, T0_MS);
    assert!(h.feed(&event(T0_MS)).is_empty());
    let mut h = scoped(&[]);
    assert_eq!(h.feed(&event(T0_MS)).len(), 1);
}
