use schemas::TokenMetadata;

use super::*;
use crate::metadata::CompiledMetadata;
use crate::testkit::*;

fn bound(cidrs: &[&str], device: Option<&str>) -> Harness<BindingDetector> {
    let mut h = Harness::new(BindingDetector, T0_MS);
    let m = TokenMetadata {
        issuer: "oauth".into(),
        token_id: "tok-1".into(),
        bound_cidrs: Some(cidrs.iter().map(|s| s.to_string()).collect()),
        bound_device: device.map(str::to_owned),
        ..Default::default()
    };
    h.metadata = Some(CompiledMetadata::compile(&m).unwrap());
    h
}

#[test]
fn a_call_from_outside_the_bound_cidr_is_a_finding() {
    let mut h = bound(&["10.0.0.0/8", "2001:db8::/32"], None);
    assert!(
        h.feed(&at(event(T0_MS), "10.1.2.3", "", 0.0, 0.0, 0, 0))
            .is_empty()
    );
    assert!(
        h.feed(&at(event(T0_MS), "2001:db8::5", "", 0.0, 0.0, 0, 0))
            .is_empty()
    );
    let f = h.feed(&changchun(event(T0_MS + 1000)));
    assert_eq!(f.len(), 1);
    assert_eq!((f[0].kind, f[0].score), ("outside_bound_cidr", 1.0));
    assert_eq!(f[0].evidence.facts["src_ip"], "175.16.199.1");
    assert_eq!(
        f[0].evidence.facts["bound_cidrs"],
        serde_json::json!(["10.0.0.0/8", "2001:db8::/32"])
    );
}

#[test]
fn device_drift_from_the_bound_device() {
    let mut h = bound(&["0.0.0.0/0"], Some("laptop-7"));
    let mut e = london(event(T0_MS));
    e.device_id = Some("laptop-7".into());
    assert!(h.feed(&e).is_empty());
    e.device_id = Some("unknown-box".into());
    assert_eq!(h.feed(&e)[0].kind, "device_drift");
    e.device_id = None;
    assert!(h.feed(&e).is_empty(), "no device id: nothing to compare");
}

#[test]
fn tokens_without_binding_or_ip_are_not_checked() {
    let mut h = Harness::new(BindingDetector, T0_MS);
    assert!(h.feed(&changchun(event(T0_MS))).is_empty());
    let mut h = bound(&["10.0.0.0/8"], None);
    assert!(h.feed(&event(T0_MS)).is_empty(), "event without src_ip");
}
