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
fn enriches_from_geoip_and_revokes_impossible_travel() {
    let mut e = engine();
    let out = run(
        &mut e,
        vec![
            raw(T0_MS, "t", "81.2.69.142"),
            raw(T0_MS + 40 * MIN_MS, "t", "175.16.199.7"),
        ],
    );
    let d = &out.decisions[0];
    assert_eq!(d.action, Action::Revoke);
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

#[test]
fn a_flood_of_distinct_tokens_stays_at_the_cap() {
    let config = DetectorsConfig {
        max_tokens: 1000,
        ..Default::default()
    };
    let mut e = Engine::build(&config, &DecisionConfig::default()).unwrap();
    let events: Vec<Event> = (0..20_000)
        .map(|i| raw(T0_MS + i, &format!("fake-{i}"), "198.51.100.1"))
        .collect();
    run(&mut e, events);
    let s = e.stats().store;
    assert_eq!((s.tokens, s.evicted), (1000, 19_000));
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
