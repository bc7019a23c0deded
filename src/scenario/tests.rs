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

/// The scenario's engine: its detectors, the embedded GeoIP data and its
/// token metadata, in enforce mode.
fn enforcing_engine(s: &Scenario) -> detectors::Engine {
    let geoip = GeoIp::from_bytes(CITY_DB.to_vec(), Some(ASN_DB.to_vec()), None).unwrap();
    let mut store = detectors::MetadataStore::default();
    for m in &s.metadata {
        store.upsert(m).unwrap();
    }
    let decision = detectors::DecisionConfig {
        mode: schemas::Mode::Enforce,
        ..Default::default()
    };
    detectors::Engine::with_parts(&s.detectors_config(), &decision, Some(geoip), store)
}

#[test]
fn the_engine_revokes_exactly_the_attack_tokens() {
    let s = Scenario::generate(11, 300, 1_795_813_200_000, 6 * 3_600_000, 120_000);
    let mut engine = enforcing_engine(&s);
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
    let expected = s.attack_tokens();
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

/// The scenario through the detect stage with `shards` shards, in batches
/// of `batch` events: every decision as JSON, in a canonical order.
fn staged_decisions(s: &Scenario, shards: usize, batch: usize) -> Vec<String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let stage = detectors::DetectStage::new(enforcing_engine(s), shards);
    assert_eq!(stage.shards(), shards);
    runtime.block_on(async {
        let (input, input_rx) = tokio::sync::mpsc::channel(4);
        let (_control, control_rx) = tokio::sync::mpsc::channel(1);
        let (output, mut decided) = tokio::sync::mpsc::channel(16);
        let running = tokio::spawn(stage.run(input_rx, control_rx, output));
        let events = s.events.clone();
        let feeding = tokio::spawn(async move {
            for (n, chunk) in events.chunks(batch).enumerate() {
                let origins = (0..chunk.len())
                    .map(|i| schemas::Origin {
                        topic: "t".into(),
                        partition: 0,
                        offset: (n * batch + i) as i64,
                        kafka_ts_ms: None,
                    })
                    .collect();
                let item = detectors::stage::Input {
                    batch: schemas::EventBatch {
                        events: chunk.to_vec(),
                        origins,
                    },
                    secrets: Vec::new(),
                    ack: detectors::Finalizer::none(),
                };
                input.send(item).await.unwrap();
            }
        });
        let mut all = Vec::new();
        while let Some(b) = decided.recv().await {
            all.extend(
                b.decisions
                    .iter()
                    .map(|d| serde_json::to_string(d).unwrap()),
            );
            b.ack.done();
        }
        feeding.await.unwrap();
        running.await.unwrap();
        all.sort();
        all
    })
}

#[test]
fn sharding_keeps_every_decision_byte_for_byte() {
    let s = Scenario::generate(11, 300, 1_795_813_200_000, 6 * 3_600_000, 120_000);
    let one = staged_decisions(&s, 1, 500);
    let four = staged_decisions(&s, 4, 500);
    assert!(
        one.iter().any(|d| d.contains("\"action\":\"revoke\"")),
        "the scenario revokes"
    );
    let only_one: Vec<_> = one.iter().filter(|d| !four.contains(d)).collect();
    let only_four: Vec<_> = four.iter().filter(|d| !one.contains(d)).collect();
    assert!(
        only_one.is_empty() && only_four.is_empty(),
        "1 shard only: {only_one:#?}\n4 shards only: {only_four:#?}"
    );
    for (a, b) in one.iter().zip(&four) {
        assert_eq!(a, b);
    }
}
