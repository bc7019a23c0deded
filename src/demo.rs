//! `tokenwatch demo`: the whole pipeline in one process, with no setup and
//! no download. Kafka is librdkafka's in-process mock cluster; a generator
//! produces realistic API-call events for a few hundred tokens, with some
//! malformed records mixed in, and the demo shows them flowing.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use anyhow::Context;
use detectors::{DecisionConfig, DetectorsConfig, Engine, GeoIp, MetadataStore};
use ingest::{IngestConfig, IngestMetrics};
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use schemas::Event;
use tokio::sync::watch;

use crate::config::Config;
use crate::pipeline::{self, FlowStats};

const TOPIC: &str = "api-events";
/// Synthetic GeoIP data shipped in the repo (made-up assignments of
/// 20.0.0.0/7 to real cities), so the demo needs no download.
const CITY_DB: &[u8] = include_bytes!("../tests/fixtures/geoip/synthetic-city.mmdb");
const ASN_DB: &[u8] = include_bytes!("../tests/fixtures/geoip/synthetic-asn.mmdb");
const DEAD_LETTER_TOPIC: &str = "tokenwatch-dead-letter";

/// Options of `tokenwatch demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoOptions {
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Events produced per second.
    #[arg(long, default_value_t = 2000)]
    pub rate: u64,
    /// Distinct tokens in the synthetic traffic.
    #[arg(long, default_value_t = 300)]
    pub tokens: u64,
}

pub async fn run(options: DemoOptions) -> anyhow::Result<()> {
    let cluster = MockCluster::new(1).context("cannot start librdkafka's mock cluster")?;
    cluster
        .create_topic(TOPIC, 4, 1)
        .context("cannot create the demo topic")?;
    cluster
        .create_topic(DEAD_LETTER_TOPIC, 1, 1)
        .context("cannot create the dead-letter topic")?;
    let brokers = cluster.bootstrap_servers();
    println!("tokenwatch demo: in-process Kafka (librdkafka mock cluster) at {brokers}");
    println!(
        "producing {} events/s from {} tokens for {} s to '{TOPIC}'; about 1% are malformed on purpose\n",
        options.rate, options.tokens, options.seconds
    );

    let mut ingest = IngestConfig::new(vec![TOPIC.into()]);
    ingest.brokers = brokers.clone();
    ingest.group_id = "tokenwatch-demo".into();
    ingest.dead_letter_topic = DEAD_LETTER_TOPIC.into();
    let config = Config {
        ingest,
        detectors: DetectorsConfig::default(),
        decision: DecisionConfig::default(),
        revoker: Default::default(),
    };
    let revoker = revoker::Revoker::build(&config.revoker, None, config.hash())?;
    let geoip = GeoIp::from_bytes(CITY_DB.to_vec(), Some(ASN_DB.to_vec()), None)?;
    let engine = Engine::with_parts(
        &config.detectors,
        &config.decision,
        Some(geoip),
        MetadataStore::default(),
    );

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "1")
        .create()
        .context("cannot create the demo producer")?;

    let metrics = Arc::new(IngestMetrics::default());
    let stats = Arc::new(FlowStats::default());
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let pipeline = {
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
    println!(
        "consumer group joined; {} partitions assigned\n",
        metrics.assigned_partitions.load(Relaxed)
    );
    let produced = generate(&producer, &options, &metrics, &stats).await?;
    producer
        .flush(Duration::from_secs(5))
        .context("cannot flush the demo producer")?;
    // Let the consumer catch up with the last records before stopping.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while metrics.records.load(Relaxed) < produced && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_tx.send(true);
    pipeline.await.context("pipeline task failed")??;

    let (p50, p99, max) = stats.latency_ms();
    println!("\nsummary");
    println!("  produced            {produced}");
    println!("  decoded events      {}", metrics.events.load(Relaxed));
    println!("  dead-lettered       {}", metrics.dead_lettered_total());
    for (reason, n) in metrics
        .dead_lettered_by_reason()
        .into_iter()
        .filter(|(_, n)| *n > 0)
    {
        println!("    {reason:<18}{n}");
    }
    println!("  batches             {}", stats.batches.load(Relaxed));
    println!(
        "  offsets stored      {}",
        metrics.offsets_stored.load(Relaxed)
    );
    println!("  produce → stage     p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms");
    println!(
        "  decisions           {} alerts, {} revocations (dry run) on benign traffic",
        stats.decided(schemas::Action::Alert),
        stats.decided(schemas::Action::Revoke)
    );
    println!("\nScripted attacks and revocation join the demo as they land; see README.");
    Ok(())
}

/// Produces the synthetic traffic, printing progress once a second.
/// Returns how many records were produced.
async fn generate(
    producer: &FutureProducer,
    options: &DemoOptions,
    metrics: &IngestMetrics,
    stats: &FlowStats,
) -> anyhow::Result<u64> {
    let tick = Duration::from_millis(10);
    let per_tick = (options.rate / 100).max(1);
    let mut interval = tokio::time::interval(tick);
    let mut n = 0u64;
    let total_ticks = options.seconds * 100;
    for t in 0..total_ticks {
        interval.tick().await;
        for _ in 0..per_tick {
            let (key, payload) = synthetic_record(n, options.tokens);
            let record = FutureRecord::to(TOPIC).key(&key).payload(&payload);
            if let Err((e, _)) = producer.send_result(record) {
                anyhow::bail!("demo producer failed: {e}");
            }
            n += 1;
        }
        if (t + 1) % 100 == 0 {
            let (p50, p99, _) = stats.latency_ms();
            println!(
                "t={:>3}s  produced {:>7}  decoded {:>7}  dead-lettered {:>4}  offsets stored {:>5}  latency p50 {:.2} ms p99 {:.2} ms",
                (t + 1) / 100,
                n,
                metrics.events.load(Relaxed),
                metrics.dead_lettered_total(),
                metrics.offsets_stored.load(Relaxed),
                p50,
                p99
            );
        }
    }
    Ok(n)
}

/// One record of the synthetic traffic: key = token id, payload = canonical
/// JSON, except every 97th record, which is malformed in a rotating way.
fn synthetic_record(n: u64, tokens: u64) -> (String, Vec<u8>) {
    let token = n.wrapping_mul(2_654_435_761) % tokens.max(1);
    let token_id = format!("tok_{token:05}");
    if n % 97 == 96 {
        let bad: &[u8] = match (n / 97) % 4 {
            0 => b"{\"ts\": \"not json",
            1 => br#"{"ts":1,"issuer":"demo","action":"GET /"}"#,
            2 => br#"{"ts":1,"token_id":42,"issuer":"demo","action":"GET /"}"#,
            _ => b"\xff\xfe{}",
        };
        return (token_id, bad.to_vec());
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let actions = [
        "GET /v1/orders/{id}",
        "GET /v1/orders",
        "POST /v1/orders",
        "GET /v1/customers/{id}",
    ];
    let mut e = Event::new(now_ms, token_id, "demo-oauth", actions[(n % 4) as usize]);
    e.principal = Some(format!("svc-{}", token % 40));
    e.src_ip = Some(std::net::IpAddr::from([
        20,
        (token % 256) as u8,
        64,
        1 + (token / 256) as u8,
    ]));
    e.user_agent = Some("orders-client/3.2".into());
    e.status = Some(200);
    e.bytes_out = Some(400 + (n % 1600));
    e.records_out = Some(1 + n % 20);
    e.request_id = Some(format!("req-{n:08}"));
    (e.token_id.clone(), e.to_json().into_bytes())
}
