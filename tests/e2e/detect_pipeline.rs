//! The pipeline on the real broker: ingest → detect stage → decisions,
//! with offsets acknowledged after the decisions are handed on.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use detectors::GeoIpConfig;
use ingest::IngestMetrics;
use revoker::IssuerConfig;
use revoker::testing::{Reply, TestServer};
use schemas::{Action, Event, Mode};
use tokenwatch::pipeline::{self, FlowStats};
use tokio::sync::oneshot;

use crate::support::{self, create_topic, produce, unique_name, until};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/geoip")).join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn benign_traffic_passes_and_impossible_travel_is_revoked() {
    let topic = unique_name("detect-events");
    create_topic(&topic, 2).await;
    let t0 = 1_795_813_200_000i64;
    let mut records = Vec::new();
    // 50 benign tokens, each calling from London every minute for an hour.
    for minute in 0..60 {
        for t in 0..50 {
            let mut e = Event::new(
                t0 + minute * 60_000 + t,
                format!("benign-{t}"),
                "oauth",
                "GET /v1/orders/{id}",
            );
            e.src_ip = Some("81.2.69.142".parse().unwrap());
            e.request_id = Some(format!("b-{t}-{minute}"));
            records.push((e.token_id.clone(), e.to_json().into_bytes()));
        }
    }
    // One stolen token: an hour in London from its owner's SDK, then
    // Changchun a minute later from the thief's client. Travel alone would
    // only alert; travel and a new client revoke.
    for i in 0..61 {
        let (ip, ua) = if i < 60 {
            ("81.2.69.142", "Boto3/1.34 Python/3.12")
        } else {
            ("175.16.199.7", "curl/8.5.0")
        };
        let mut e = Event::new(
            t0 + i * 60_000 + 999,
            "stolen",
            "oauth",
            "GET /v1/orders/{id}",
        );
        e.src_ip = Some(ip.parse().unwrap());
        e.user_agent = Some(ua.into());
        e.request_id = Some(format!("s-{i}"));
        records.push(("stolen".into(), e.to_json().into_bytes()));
    }
    produce(&topic, &records).await;

    let mut config = support::config("detect", &topic).await;
    let issuer = TestServer::start(Reply::status(200)).await;
    config.revoker.issuers.insert(
        "oauth".into(),
        IssuerConfig::post(format!("http://{}/revoke/{{token_id}}", issuer.addr)),
    );
    config.detectors.geoip = Some(GeoIpConfig::new(fixture("GeoIP2-City-Test.mmdb")));
    // An hour of history is enough here (the default asks for 12).
    config.detectors.learning.min_history = Duration::from_secs(1800);
    config.detectors.learning.min_events = 20;
    config.detectors.learning.full_confidence_events = 20;
    config.decision.mode = Mode::Enforce;
    let engine = pipeline::build_engine(&config).unwrap();
    let revoker = pipeline::build_revoker(&config).await.unwrap();
    let metrics = Arc::new(IngestMetrics::default());
    let stats = Arc::new(FlowStats::default());
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let run = {
        let (metrics, stats) = (metrics.clone(), stats.clone());
        tokio::spawn(async move {
            pipeline::run(&config, engine, revoker, metrics, stats, async {
                let _ = stop_rx.await;
            })
            .await
        })
    };
    until(
        "every event to be processed",
        Duration::from_secs(60),
        || stats.events.load(Relaxed) >= records.len() as u64,
    )
    .await;
    let _ = stop_tx.send(());
    run.await.unwrap().unwrap();

    assert_eq!(
        stats.decided(Action::Revoke),
        1,
        "exactly the stolen token is revoked"
    );
    let revokes: Vec<String> = stats
        .recent(usize::MAX)
        .into_iter()
        .filter(|d| d.action == Action::Revoke)
        .map(|d| d.token_id.clone())
        .collect();
    assert_eq!(revokes, ["stolen"], "the revoke is the stolen token's");
    assert_eq!(
        support::revoked_tokens(&issuer),
        ["stolen"],
        "its issuer was called for it, once"
    );
    assert_eq!(
        stats.decided(Action::Alert),
        0,
        "no benign token is alerted"
    );
    assert!(
        metrics.offsets_stored.load(Relaxed) > 0,
        "offsets stored after decisions"
    );
}
