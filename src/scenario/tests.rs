use super::*;

#[test]
fn is_deterministic_and_scripts_every_attack() {
    let a = Scenario::generate(7, 50, 1_795_813_200_000, 6 * 3_600_000, 120_000);
    let b = Scenario::generate(7, 50, 1_795_813_200_000, 6 * 3_600_000, 120_000);
    assert_eq!(a.events, b.events);
    assert_eq!(a.attacks.len(), 5);
    assert!(a.events.windows(2).all(|w| w[0].ts_ms <= w[1].ts_ms));
    for attack in &a.attacks {
        assert!(
            a.events.iter().any(|e| e.token_id == attack.token_id),
            "{}",
            attack.name
        );
    }
    assert!(
        a.benign_tokens
            .iter()
            .all(|t| a.events.iter().any(|e| &e.token_id == t))
    );
}

#[test]
fn the_engine_revokes_exactly_the_attack_tokens() {
    let s = Scenario::generate(11, 300, 1_795_813_200_000, 6 * 3_600_000, 120_000);
    let geoip = GeoIp::from_bytes(CITY_DB.to_vec(), Some(ASN_DB.to_vec()), None).unwrap();
    let mut store = detectors::MetadataStore::default();
    for m in &s.metadata {
        store.upsert(m).unwrap();
    }
    let decision = detectors::DecisionConfig {
        mode: schemas::Mode::Enforce,
        ..Default::default()
    };
    let mut engine =
        detectors::Engine::with_parts(&s.detectors_config(), &decision, Some(geoip), store);
    let mut events = s.events.clone();
    let origins: Vec<schemas::Origin> = (0..events.len() as i64)
        .map(|i| schemas::Origin {
            topic: "t".into(),
            partition: 0,
            offset: i,
            kafka_ts_ms: None,
        })
        .collect();
    let mut out = engine.process(&mut events, &origins);
    out.decisions.extend(engine.flush().decisions);
    let mut revoked: Vec<String> = out
        .decisions
        .iter()
        .filter(|d| d.action == schemas::Action::Revoke)
        .map(|d| d.token_id.clone())
        .collect();
    revoked.sort();
    revoked.dedup();
    let mut expected: Vec<String> = s.attacks.iter().map(|a| a.token_id.clone()).collect();
    expected.sort();
    let benign_alerts: Vec<String> = out
        .decisions
        .iter()
        .filter(|d| !d.token_id.starts_with("atk-"))
        .map(|d| format!("{} {:?} {}", d.token_id, d.action, d.findings[0].summary))
        .collect();
    assert_eq!(revoked, expected, "benign decisions: {benign_alerts:?}");
    // Only travellers (every tenth token from the third) alert: a new
    // country, once. Egress pairs, phones and CI runners stay quiet.
    let travellers = benign_alerts
        .iter()
        .filter(|a| {
            let i: usize = a[4..9].parse().unwrap();
            i % 10 == 2 && a.contains("Alert") && a.contains("first call from")
        })
        .count();
    assert_eq!(travellers, benign_alerts.len(), "{benign_alerts:?}");
    assert!(travellers > 0, "the travellers land within the scenario");
}
