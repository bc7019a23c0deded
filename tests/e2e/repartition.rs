//! Issue 14, section 3: a source not keyed by token. The scripted
//! scenario's events are spread over four partitions with no key (a
//! token's events land on every partition), and `ingest.repartition`
//! re-keys them through the internal topic. The decisions are the same as
//! from the keyed source: the same tokens alerted and revoked, each attack
//! revoked once, no benign token.

use std::collections::BTreeSet;
use std::time::Duration;

use rdkafka::producer::FutureRecord;
use revoker::IssuerConfig;
use revoker::testing::{Reply, TestServer};
use schemas::Mode;
use tokenwatch::scenario::Scenario;

use crate::support::{self, create_topic, produce, unique_name, until};

const PARTITIONS: i32 = 4;

async fn config(name: &str, scenario: &Scenario, issuer: &TestServer) -> tokenwatch::Config {
    let topic = unique_name(&format!("{name}-events"));
    create_topic(&topic, PARTITIONS).await;
    let mut config = support::config(name, &topic).await;
    config.detectors = support::scenario_detectors(scenario, &support::temp_dir());
    config.decision.mode = Mode::Enforce;
    config.revoker.issuers.insert(
        "demo-oauth".into(),
        IssuerConfig::post(format!("http://{}/revoke/{{token_id}}", issuer.addr)),
    );
    config
}

/// What a run decided, `(token, action)` for every decision, once it has
/// judged every event and stopped (which closes the open deduplication
/// windows, so their summaries are in).
async fn decided(
    run: support::Run,
    total: u64,
    issuer: &TestServer,
    attacks: &[String],
) -> BTreeSet<(String, String)> {
    until("every event to be judged", Duration::from_secs(180), || {
        run.stats.events.load(std::sync::atomic::Ordering::Relaxed) >= total
    })
    .await;
    until("the five revocations", Duration::from_secs(30), || {
        support::revoked_tokens(issuer) == attacks
    })
    .await;
    let _ = run.stop.send(());
    run.task.await.unwrap().unwrap();
    assert_eq!(support::revoked_tokens(issuer), attacks, "each attack once");
    run.stats
        .recent(usize::MAX)
        .into_iter()
        .map(|d| (d.token_id.clone(), format!("{:?}", d.action)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unkeyed_source_repartitioned_yields_the_keyed_sources_decisions() {
    let scenario = Scenario::generate(5, 1000, 1_795_813_200_000, 3 * 3_600_000, 180_000);
    let total = scenario.events.len() as u64;
    let attacks = scenario.attack_tokens();

    // The keyed source, as ever.
    let keyed_issuer = TestServer::start(Reply::status(200)).await;
    let keyed = config("keyed", &scenario, &keyed_issuer).await;
    let records: Vec<(String, Vec<u8>)> = scenario
        .events
        .iter()
        .map(|e| (e.token_id.clone(), e.to_json().into_bytes()))
        .collect();
    produce(&keyed.ingest.topics[0], &records).await;
    let keyed_run = support::start(&keyed).await;

    // The same events round-robin over the partitions, with no key, in
    // small steps so the partitions stay as close in time as a live
    // source's would.
    let issuer = TestServer::start(Reply::status(200)).await;
    let mut unkeyed = config("unkeyed", &scenario, &issuer).await;
    unkeyed.ingest.repartition = true;
    unkeyed.ingest.repartition_topic = Some(unique_name("unkeyed-repartition"));
    create_topic(
        unkeyed.ingest.repartition_topic.as_ref().unwrap(),
        PARTITIONS,
    )
    .await;
    let run = support::start(&unkeyed).await;
    let producer = support::producer();
    let topic = unkeyed.ingest.topics[0].clone();
    for (i, chunk) in scenario.events.chunks(500).enumerate() {
        let sends: Vec<_> = chunk
            .iter()
            .enumerate()
            .map(|(j, e)| {
                let partition = ((i * 500 + j) % PARTITIONS as usize) as i32;
                producer
                    .send_result(
                        FutureRecord::<(), _>::to(&topic)
                            .partition(partition)
                            .payload(&e.to_json()),
                    )
                    .map_err(|(e, _)| e)
                    .unwrap()
            })
            .collect();
        for s in sends {
            s.await.unwrap().map_err(|(e, _)| e).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let first = run.stats.repartition.get().unwrap().clone();
    let want = decided(keyed_run, total, &keyed_issuer, &attacks).await;
    let got = decided(run, total, &issuer, &attacks).await;
    assert!(!want.is_empty());
    assert_eq!(
        got, want,
        "the repartitioned source's decisions are the keyed source's"
    );
    // Every event went through both hops: read from the source, written
    // to the internal topic, judged from it.
    assert_eq!(
        first.events.load(std::sync::atomic::Ordering::Relaxed),
        total
    );
    let hop = unkeyed.ingest.repartition_topic.as_ref().unwrap();
    assert_eq!(support::read_all(hop).len() as u64, total);
}
