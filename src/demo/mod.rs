//! `tokenwatch demo`: the whole product in one process, with no setup and
//! no download. Kafka is librdkafka's in-process mock cluster; GeoIP is the
//! synthetic data embedded in the binary; a fake issuer and a webhook
//! receiver listen on 127.0.0.1. Realistic benign traffic for a few hundred
//! tokens flows with five scripted attacks; each detection and revocation
//! prints live with its latency, then a summary.

mod receiver;
mod summary;

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use detectors::{DecisionConfig, Engine, GeoIp, MetadataStore};
use ingest::{IngestConfig, IngestMetrics};
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use revoker::{IssuerConfig, RevokerConfig, WebhookConfig};
use schemas::{Action, Mode};
use tokio::sync::watch;

use crate::config::Config;
use crate::pipeline::{self, FlowStats};
use crate::scenario::{ASN_DB, CITY_DB, Scenario};
pub use summary::Summary;

const TOPIC: &str = "api-events";
/// The demo's webhook signing secret lives in this variable, set by the
/// demo itself before its runtime starts.
pub const WEBHOOK_SECRET_ENV: &str = "TOKENWATCH_DEMO_WEBHOOK_SECRET";
const WEBHOOK_SECRET: &str = "whsec_dG9rZW53YXRjaC1kZW1vLW9ubHktc2VjcmV0";

/// Options of `tokenwatch demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoOptions {
    /// How long the traffic runs, in seconds (six hours of virtual time are
    /// compressed into it).
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Benign tokens in the traffic.
    #[arg(long, default_value_t = 300)]
    pub tokens: usize,
    /// Also write the summary as JSON to this file.
    #[arg(long)]
    pub summary_json: Option<PathBuf>,
}

/// Sets the demo's environment. Call before any thread starts: the
/// webhook secret is read from the environment, like a real one.
pub fn prepare_env() {
    // SAFETY: called from main before the runtime and any other thread exist.
    unsafe { std::env::set_var(WEBHOOK_SECRET_ENV, WEBHOOK_SECRET) };
}

fn demo_config(
    brokers: &str,
    issuer_url: &str,
    hooks_url: &str,
    scenario: &Scenario,
) -> anyhow::Result<Config> {
    let mut ingest = IngestConfig::new(vec![TOPIC.into()]);
    ingest.brokers = brokers.into();
    ingest.group_id = "tokenwatch-demo".into();
    ingest.dead_letter_topic = "tokenwatch-dead-letter".into();
    let mut revoker = RevokerConfig::default();
    revoker.issuers.insert(
        "demo-oauth".into(),
        IssuerConfig::post(format!("{issuer_url}/oauth2/revoke/{{token_id}}")),
    );
    revoker.webhooks.push(WebhookConfig {
        url: url::Url::parse(&format!("{hooks_url}/hooks"))?,
        secret_envs: vec![WEBHOOK_SECRET_ENV.into()],
        min_action: Action::Alert,
        retry_schedule: vec![Duration::from_millis(100), Duration::from_millis(500)],
        timeout: Duration::from_secs(2),
        allow_loopback: true,
    });
    let decision = DecisionConfig {
        mode: Mode::Enforce,
        ..Default::default()
    };
    // The demo's admin API takes any free loopback port.
    let admin = crate::admin::AdminConfig {
        listen: "127.0.0.1:0".parse()?,
        probe_listen: "127.0.0.1:0".parse()?,
        ..Default::default()
    };
    Ok(Config {
        ingest,
        detectors: scenario.detectors_config(),
        decision,
        revoker,
        admin,
        topics: Default::default(),
        health: Default::default(),
        changelog: Default::default(),
        source: None,
    })
}

pub async fn run(options: DemoOptions) -> anyhow::Result<()> {
    let cluster = MockCluster::new(1).context("cannot start librdkafka's mock cluster")?;
    for (topic, partitions) in [
        (TOPIC, 4),
        ("tokenwatch-dead-letter", 1),
        ("tokenwatch-revocations", 1),
        ("tokenwatch-webhook-dead-letter", 1),
        ("tokenwatch-webhook-outbox", 1),
    ] {
        cluster
            .create_topic(topic, partitions, 1)
            .with_context(|| format!("cannot create {topic}"))?;
    }
    let brokers = cluster.bootstrap_servers();
    let seen = Arc::new(Mutex::new(receiver::Seen::default()));
    let (issuer_url, hooks_url) = receiver::start(seen.clone(), WEBHOOK_SECRET).await?;

    let hours = 6;
    let duration_ms = hours * 3_600_000;
    let start_ms = receiver::now_ms() - duration_ms;
    let scenario = Scenario::generate(42, options.tokens, start_ms, duration_ms, 120_000);
    let config = demo_config(&brokers, &issuer_url, &hooks_url, &scenario)?;
    println!("tokenwatch demo");
    println!("  Kafka      librdkafka mock cluster at {brokers}");
    println!("  issuer     fake kill switch at {issuer_url}");
    println!("  webhooks   signed alerts to {hooks_url}/hooks (verified on receipt)");
    println!("  GeoIP      synthetic data embedded in the binary (made-up, not real locations)");
    println!(
        "  traffic    {} benign tokens + {} scripted attacks, {} events: {hours} h of event time in {} s",
        scenario.benign_tokens.len(),
        scenario.attacks.len(),
        scenario.events.len(),
        options.seconds
    );
    println!(
        "  learning   first {} h; attacks in the last {} h\n",
        hours / 3,
        hours / 3
    );

    let mut metadata = MetadataStore::default();
    for m in &scenario.metadata {
        metadata.upsert(m).map_err(|e| anyhow::anyhow!(e))?;
    }
    let geoip = GeoIp::from_bytes(CITY_DB.to_vec(), Some(ASN_DB.to_vec()), None)?;
    let engine = Engine::with_parts(&config.detectors, &config.decision, Some(geoip), metadata);
    let revoker = pipeline::build_revoker(&config).await?;

    let metrics = Arc::new(IngestMetrics::default());
    let stats = Arc::new(FlowStats::default());
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let running = {
        let (config, metrics, stats) = (config.clone(), metrics.clone(), stats.clone());
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop_rx.wait_for(|stop| *stop).await;
            };
            pipeline::run(&config, engine, revoker, metrics, stats, shutdown).await
        })
    };
    let joined = tokio::time::Instant::now() + Duration::from_secs(30);
    while metrics.assigned_partitions.load(Relaxed) == 0 {
        anyhow::ensure!(
            tokio::time::Instant::now() < joined,
            "the demo consumer did not join its group within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let produced = produce(&brokers, &scenario, options.seconds, &stats).await?;
    // Let the pipeline catch up, and the last revocations be confirmed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let attacks_done = || {
        seen.lock()
            .map(|s| {
                scenario
                    .attacks
                    .iter()
                    .all(|a| s.revocation_ms.contains_key(&a.token_id))
            })
            .unwrap_or(false)
    };
    while (stats.events.load(Relaxed) < produced || !attacks_done())
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_tx.send(true);
    running.await.context("pipeline task failed")??;

    let summary = {
        let seen = seen
            .lock()
            .map_err(|_| anyhow::anyhow!("receiver state poisoned"))?;
        Summary::build(&scenario, &seen, produced)
    };
    summary.print();
    let (p50, p99, _) = stats.latency_ms();
    println!("produce → detect stage, over all events: p50 {p50:.1} ms, p99 {p99:.1} ms");
    let (p50, p99, _) = stats.decision_latency_ms();
    println!("produce → decision, over all decisions: p50 {p50:.1} ms, p99 {p99:.1} ms");
    println!(
        "(demo runs on librdkafka's in-process mock cluster; `tokenwatch bench` measures the real broker)"
    );
    if let Some(log) = crate::cli::demo_log_file() {
        println!(
            "logs: {} (RUST_LOG=info shows them here instead)",
            log.display()
        );
    }
    if let Some(path) = &options.summary_json {
        std::fs::write(path, serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("summary written to {}", path.display());
    }
    anyhow::ensure!(
        summary.all_good(),
        "not every scripted attack was detected and revoked without false revocations"
    );
    Ok(())
}

/// Produces the scenario's events, paced so its virtual time passes in
/// `seconds` of wall time. Returns how many were produced.
async fn produce(
    brokers: &str,
    scenario: &Scenario,
    seconds: u64,
    stats: &FlowStats,
) -> anyhow::Result<u64> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "0")
        .create()
        .context("cannot create the demo producer")?;
    let total = scenario.events.len();
    let wall = Duration::from_secs(seconds.max(1));
    let started = tokio::time::Instant::now();
    let mut interval = tokio::time::interval(Duration::from_millis(10));
    let mut next = 0usize;
    let mut last_report = 0u64;
    while next < total {
        interval.tick().await;
        let fraction = (started.elapsed().as_secs_f64() / wall.as_secs_f64()).min(1.0);
        let virtual_now = scenario.start_ms + (scenario.duration_ms as f64 * fraction) as i64;
        while next < total && (scenario.events[next].ts_ms <= virtual_now || fraction >= 1.0) {
            let e = &scenario.events[next];
            let payload = e.to_json();
            let record = FutureRecord::to(TOPIC)
                .key(e.token_id.as_str())
                .payload(payload.as_str());
            if let Err((e, _)) = producer.send_result(record) {
                anyhow::bail!("demo producer failed: {e}");
            }
            next += 1;
        }
        let second = started.elapsed().as_secs();
        if second > last_report {
            last_report = second;
            let (p50, p99, _) = stats.latency_ms();
            println!(
                "t={second:>3}s  produced {next:>6}/{total}  processed {:>6}  Kafka → detect p50 {p50:.1} ms p99 {p99:.1} ms",
                stats.events.load(Relaxed)
            );
        }
    }
    producer
        .flush(Duration::from_secs(10))
        .context("cannot flush the demo producer")?;
    Ok(total as u64)
}
