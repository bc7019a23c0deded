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

/// What a run decided on real records: `(token, action)` and
/// `(token, rule)` for every rule a decision names. How findings group
/// into decisions follows batch boundaries, which differ between runs;
/// which token was judged how, and on which rules, does not.
type Judged = (BTreeSet<(String, String)>, BTreeSet<(String, String)>);

async fn rule_decisions(run: support::Run, records: u64) -> Judged {
    until("every record to be read", Duration::from_secs(120), || {
        run.metrics
            .records
            .load(std::sync::atomic::Ordering::Relaxed)
            + run
                .stats
                .repartition
                .get()
                .map_or(0, |m| m.records.load(std::sync::atomic::Ordering::Relaxed))
            >= records
    })
    .await;
    // Every decoded event judged, then stopped (open windows flushed).
    let decoded = run
        .stats
        .repartition
        .get()
        .cloned()
        .unwrap_or_else(|| run.metrics.clone());
    until("every event to be judged", Duration::from_secs(120), || {
        run.stats.events.load(std::sync::atomic::Ordering::Relaxed)
            >= decoded.events.load(std::sync::atomic::Ordering::Relaxed)
    })
    .await;
    let _ = run.stop.send(());
    run.task.await.unwrap().unwrap();
    let decisions = run.stats.recent(usize::MAX);
    let actions = decisions
        .iter()
        .map(|d| (d.token_id.clone(), format!("{:?}", d.action)))
        .collect();
    let rules = decisions
        .iter()
        .flat_map(|d| {
            d.findings
                .iter()
                .filter_map(|f| f.evidence.facts.get("rule"))
                .map(|r| (d.token_id.clone(), r.to_string()))
        })
        .collect();
    (actions, rules)
}

/// Real third-party data: the 310 CloudTrail records of Stratus Red Team
/// detonations (tests/fixtures/attack-logs, Apache-2.0), as a CloudTrail
/// export delivers them, unkeyed and spread over partitions, judged by the
/// AWS rule packs through the repartition step. Each token is judged as
/// when the same records are read keyed by access key, on the same rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_cloudtrail_attack_logs_through_repartition_match_the_keyed_reading() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(
        root.join("tests/fixtures/attack-logs/stratus-detonation-logs.labelled.ndjson"),
    )
    .unwrap();
    let records: Vec<(String, String)> = text
        .lines()
        .map(|line| {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            let key = record["event"]["userIdentity"]["accessKeyId"]
                .as_str()
                .unwrap_or("none")
                .to_string();
            (key, record["event"].to_string())
        })
        .collect();
    let total = records.len() as u64;
    let rules = ["aws.toml", "aws-attacks.toml"].map(|f| root.join("detectors/rules").join(f));
    let setup = |name: &'static str| {
        let rules = rules.clone();
        async move {
            let topic = unique_name(&format!("{name}-cloudtrail"));
            create_topic(&topic, PARTITIONS).await;
            let mut config = support::config(name, &topic).await;
            config.ingest.format = schemas::Format::Cloudtrail;
            config.detectors.policy.files = rules.to_vec();
            config.decision.mode = Mode::DryRun;
            config
        }
    };

    let keyed = setup("ct-keyed").await;
    let keyed_records: Vec<(String, Vec<u8>)> = records
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
        .collect();
    produce(&keyed.ingest.topics[0], &keyed_records).await;
    let keyed_run = support::start(&keyed).await;

    let mut unkeyed = setup("ct-unkeyed").await;
    unkeyed.ingest.repartition = true;
    unkeyed.ingest.repartition_topic = Some(unique_name("ct-repartition"));
    create_topic(
        unkeyed.ingest.repartition_topic.as_ref().unwrap(),
        PARTITIONS,
    )
    .await;
    let producer = support::producer();
    let topic = unkeyed.ingest.topics[0].clone();
    let sends: Vec<_> = records
        .iter()
        .enumerate()
        .map(|(i, (_, v))| {
            producer
                .send_result(
                    FutureRecord::<(), _>::to(&topic)
                        .partition(i as i32 % PARTITIONS)
                        .payload(v),
                )
                .map_err(|(e, _)| e)
                .unwrap()
        })
        .collect();
    for s in sends {
        s.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
    let run = support::start(&unkeyed).await;

    let want = rule_decisions(keyed_run, total).await;
    let got = rule_decisions(run, total).await;
    eprintln!(
        "stratus through repartition: {} (token, action) pairs, {} (token, rule) matches",
        got.0.len(),
        got.1.len()
    );
    assert!(
        !want.1.is_empty(),
        "the rule packs match the real detonations"
    );
    assert_eq!(
        got.0, want.0,
        "repartitioned, the same tokens judged the same"
    );
    assert_eq!(got.1, want.1, "and on the same rules");
}
