//! `tokenwatch bench`: speed measured as a user would see it, against the
//! local real broker (`scripts/kafka start`), with ratios taken within one
//! run (SPEC §9).
//!
//! R1, throughput: a topic is pre-loaded with realistic events, then
//! drained alternately by a bare rust-rdkafka consumer (it touches each
//! payload, nothing else) and by the `run` pipeline (every detector and the
//! config's policy rules, the revoker on a loopback issuer, enforce mode),
//! each with a fresh consumer group, `--runs` times each. The figure is the
//! ratio of the medians.
//!
//! R2, latency: see [`latency`].
//!
//! R3, memory: the process's resident set grows while the pipeline drains
//! the topic; that growth over the tokens it then holds state for, in bytes
//! per token (first run; `--tokens` sets the count).
//!
//! Per stage: the pipeline's own counters of time spent decoding, enriching,
//! in the detectors, the policy rules and the decision, over the events of
//! the last pipeline drain (CPU time per event; shards run in parallel).

mod latency;
mod restore;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use serde::Serialize;

use crate::Config;
use crate::pipeline::{self, FlowStats};

/// `tokenwatch bench` options.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchOptions {
    /// Config to run the pipeline with (detectors, rules, GeoIP); its
    /// topics, group and issuers are replaced.
    #[arg(short, long, default_value = "tokenwatch.example.toml")]
    pub config: std::path::PathBuf,
    /// Events pre-loaded into the topic.
    #[arg(long, default_value_t = 2_000_000)]
    pub events: usize,
    /// Distinct tokens among them.
    #[arg(long, default_value_t = 100_000)]
    pub tokens: usize,
    /// Drains of each kind, alternating.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// R2: events per second sent while attacks are timed.
    #[arg(long, default_value_t = 2_000)]
    pub rate: u32,
    /// R2: single-event attacks timed (10 a second); 0 skips R2.
    #[arg(long, default_value_t = 300)]
    pub attacks: usize,
    /// Also write every figure here, as JSON.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// Measure only the state changelog: checkpoint this many tokens'
    /// learned states, then restore them all into a fresh detect stage.
    #[arg(long)]
    pub restore: Option<usize>,
}

/// Nanoseconds per event in each step, from the pipeline's counters.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct PerStage {
    pub decode: f64,
    pub enrich: f64,
    pub detectors: f64,
    pub rules: f64,
    pub decision: f64,
}

/// How the last pipeline drain's batches were cut.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Batching {
    pub batches: u64,
    pub mean_events: f64,
    /// Batches closed full, idle (nothing more fetched) and by the linger.
    pub full: u64,
    pub idle: u64,
    pub linger: u64,
}

/// Every figure of one bench run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub events: usize,
    pub tokens: usize,
    pub mean_payload_bytes: usize,
    pub cores: usize,
    /// Drain rates, events per second, in run order.
    pub bare_rates: Vec<f64>,
    pub pipeline_rates: Vec<f64>,
    pub bare_median: f64,
    pub pipeline_median: f64,
    /// R1: pipeline median ÷ bare median.
    pub r1: f64,
    /// Tokens with state at the end of the first pipeline drain.
    pub tokens_with_state: usize,
    /// Resident set growth over the first pipeline drain, bytes.
    pub rss_growth_bytes: u64,
    /// R3: `rss_growth_bytes` ÷ `tokens_with_state`.
    pub r3_bytes_per_token: f64,
    /// Revocations the loopback issuer received in the last pipeline run.
    pub revocations: u64,
    /// Detect shards the pipeline ran.
    pub shards: usize,
    /// Per-step CPU time per event, last pipeline drain.
    pub ns_per_event: PerStage,
    /// Batch sizes, last pipeline drain.
    pub batching: Batching,
    /// R2, unless skipped.
    pub latency: Option<latency::Latency>,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{prefix}-{nanos}")
}

/// Topics this bench created, with their brokers: deleted when it ends, so
/// runs do not fill the broker's disk (2M events are ~1 GB).
static CREATED: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

async fn create_topic(brokers: &str, name: &str, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    if let Ok(mut created) = CREATED.lock() {
        created.push((brokers.to_string(), name.to_string()));
    }
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for r in admin
        .create_topics([&topic], &AdminOptions::new())
        .await
        .with_context(|| format!("no broker at {brokers}? Start one with scripts/kafka start"))?
    {
        r.map_err(|(t, e)| anyhow::anyhow!("cannot create topic {t}: {e}"))?;
    }
    Ok(())
}

/// Pre-loads `n` realistic events over `tokens` tokens; returns the mean
/// payload size.
async fn preload(brokers: &str, topic: &str, n: usize, tokens: usize) -> anyhow::Result<usize> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .set("compression.type", "lz4")
        .create()?;
    let t0 = wall_ms() - n as i64;
    let mut bytes = 0usize;
    for i in 0..n {
        let e = schemas::sample::realistic(i, tokens, t0);
        let payload = e.to_json();
        bytes += payload.len();
        let mut record = FutureRecord::to(topic).key(&e.token_id).payload(&payload);
        loop {
            match producer.send_result(record) {
                Ok(_) => break,
                Err((_, back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(120))?;
    Ok(bytes / n.max(1))
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A bare consumer draining `n` records, touching each payload.
async fn bare_drain(brokers: &str, topic: &str, n: usize) -> anyhow::Result<f64> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("bench-bare"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[topic])?;
    let first = consumer.recv().await?;
    let mut checksum = first.payload().map_or(0, <[u8]>::len);
    drop(first);
    let start = Instant::now();
    for _ in 1..n {
        let m = consumer.recv().await?;
        checksum = checksum.wrapping_add(m.payload().map_or(0, <[u8]>::len));
    }
    std::hint::black_box(checksum);
    Ok((n - 1) as f64 / start.elapsed().as_secs_f64())
}

/// The resident set size of this process, from `/proc/self/status`.
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// What one pipeline drain measured.
struct Drain {
    rate: f64,
    tokens: usize,
    rss_growth: u64,
    stages: PerStage,
    batching: Batching,
}

/// The `run` pipeline draining `n` events with a fresh group and ledger.
async fn pipeline_drain(base: &Config, n: usize) -> anyhow::Result<Drain> {
    let mut config = base.clone();
    config.ingest.group_id = unique("bench-pipeline");
    config.revoker.ledger_topic = unique("bench-ledger");
    create_topic(&config.ingest.brokers, &config.revoker.ledger_topic, 1).await?;
    let engine = pipeline::build_engine(&config)?;
    let revoker = pipeline::build_revoker(&config).await?;
    let rss_before = rss_bytes();
    let metrics = Arc::new(ingest::IngestMetrics::default());
    let stats = Arc::new(FlowStats::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = {
        let (stats, metrics) = (stats.clone(), metrics.clone());
        tokio::spawn(async move {
            pipeline::run(&config, engine, revoker, metrics, stats, async {
                let _ = stopped.await;
            })
            .await
        })
    };
    // Events the detect shards have processed (not merely received).
    let seen = || stats.engine_stats().events as usize;
    while seen() == 0 {
        anyhow::ensure!(
            !task.is_finished(),
            "the pipeline stopped before the first event"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let (start, from) = (Instant::now(), seen());
    while seen() < n {
        anyhow::ensure!(
            !task.is_finished(),
            "the pipeline stopped after {} events",
            seen()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let rate = (n - from) as f64 / start.elapsed().as_secs_f64();
    let rss_growth = rss_bytes().saturating_sub(rss_before);
    let engine = stats.engine_stats();
    let _ = stop.send(());
    task.await??;
    let (decoded, events) = (
        metrics.events.load(Relaxed).max(1) as f64,
        engine.events.max(1) as f64,
    );
    Ok(Drain {
        rate,
        tokens: engine.store.tokens,
        rss_growth,
        stages: PerStage {
            decode: metrics.decode_ns.load(Relaxed) as f64 / decoded,
            enrich: engine.nanos.enrich as f64 / events,
            detectors: engine.nanos.detect as f64 / events,
            rules: engine.nanos.rules as f64 / events,
            decision: engine.nanos.decide as f64 / events,
        },
        batching: {
            let batches = metrics.batches.load(Relaxed);
            let close = |c: ingest::BatchClose| metrics.batch_closes[c as usize].load(Relaxed);
            Batching {
                batches,
                mean_events: decoded / batches.max(1) as f64,
                full: close(ingest::BatchClose::Full),
                idle: close(ingest::BatchClose::Idle),
                linger: close(ingest::BatchClose::Linger),
            }
        },
    })
}

/// A loopback kill switch that answers 200 and counts calls.
async fn loopback_issuer() -> anyhow::Result<(String, Arc<AtomicU64>)> {
    let calls = Arc::new(AtomicU64::new(0));
    let counted = calls.clone();
    let app = axum::Router::new().fallback(move || {
        let counted = counted.clone();
        async move {
            counted.fetch_add(1, Relaxed);
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, calls))
}

/// Deletes the topics [`create_topic`] made; a failure is only reported.
async fn delete_created_topics() {
    let created = CREATED
        .lock()
        .map(|mut c| std::mem::take(&mut *c))
        .unwrap_or_default();
    for (brokers, name) in created {
        let deleted = async {
            let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .create()?;
            for r in admin.delete_topics(&[&name], &AdminOptions::new()).await? {
                r.map_err(|(t, e)| anyhow::anyhow!("{t}: {e}"))?;
            }
            anyhow::Ok(())
        };
        if let Err(e) = deleted.await {
            eprintln!("could not delete bench topic {name}: {e}");
        }
    }
}

/// The environment, with the GeoIP databases replaced by the synthetic
/// ones the workload's addresses are placed in (the demo's, embedded):
/// every run measures the same lookups, whatever files the config names.
fn bench_geoip() -> anyhow::Result<Vec<(String, String)>> {
    let dir = std::env::temp_dir().join(unique("tokenwatch-bench-geoip"));
    std::fs::create_dir_all(&dir)?;
    let mut vars: Vec<(String, String)> = std::env::vars().collect();
    for (key, name, bytes) in [
        ("CITY_DB", "synthetic-city.mmdb", crate::scenario::CITY_DB),
        ("ASN_DB", "synthetic-asn.mmdb", crate::scenario::ASN_DB),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, bytes)?;
        vars.push((
            format!("TOKENWATCH__DETECTORS__GEOIP__{key}"),
            path.display().to_string(),
        ));
    }
    Ok(vars)
}

/// Runs the bench, then deletes the topics it made, whatever the outcome.
pub async fn run(options: BenchOptions) -> anyhow::Result<Option<BenchReport>> {
    let report = match options.restore {
        Some(tokens) => restore::run(&options, tokens).await.map(|()| None),
        None => measure(options).await.map(Some),
    };
    delete_created_topics().await;
    report
}

async fn measure(options: BenchOptions) -> anyhow::Result<BenchReport> {
    anyhow::ensure!(
        options.events >= 2 && options.runs >= 1,
        "--events ≥ 2 and --runs ≥ 1"
    );
    let mut config = Config::load_with(&options.config, bench_geoip()?)?;
    let brokers = std::env::var("TOKENWATCH_TEST_BROKERS").unwrap_or(config.ingest.brokers.clone());
    let topic = unique("bench-events");
    create_topic(&brokers, &topic, 4).await?;
    create_topic(&brokers, &format!("{topic}-dlq"), 1).await?;
    println!(
        "pre-loading {} events over {} tokens into {topic} ...",
        options.events, options.tokens
    );
    let mean_payload_bytes = preload(&brokers, &topic, options.events, options.tokens).await?;
    let (issuer, calls) = loopback_issuer().await?;
    config.ingest.brokers = brokers.clone();
    config.ingest.topics = vec![topic.clone()];
    config.ingest.dead_letter_topic = format!("{topic}-dlq");
    config.ingest.metadata_topic = None;
    config.decision.mode = schemas::Mode::Enforce;
    config.revoker.webhooks.clear();
    config.revoker.issuers.insert(
        "oauth".into(),
        revoker::IssuerConfig::post(format!("{issuer}/revoke/{{token_id}}")),
    );
    config.admin.enabled = false;

    let (mut bare_rates, mut pipeline_rates) = (Vec::new(), Vec::new());
    let (mut first, mut stages, mut batching) = (None, PerStage::default(), Batching::default());
    for run in 1..=options.runs {
        let bare = bare_drain(&brokers, &topic, options.events).await?;
        calls.store(0, Relaxed);
        let drain = pipeline_drain(&config, options.events).await?;
        println!(
            "run {run}: bare {bare:>10.0} events/s, pipeline {:>10.0} events/s",
            drain.rate
        );
        bare_rates.push(bare);
        pipeline_rates.push(drain.rate);
        (stages, batching) = (drain.stages, drain.batching);
        // Memory from the first pipeline run: later ones reuse what the
        // allocator kept, which would understate the growth.
        first.get_or_insert(drain);
    }
    let last = first.expect("at least one run");
    let latency = match options.attacks {
        0 => None,
        n => Some(latency::measure(&config, &brokers, options.rate, n).await?),
    };
    let (bare_median, pipeline_median) = (median(&bare_rates), median(&pipeline_rates));
    let report = BenchReport {
        events: options.events,
        tokens: options.tokens,
        mean_payload_bytes,
        cores: std::thread::available_parallelism().map_or(1, usize::from),
        bare_rates,
        pipeline_rates,
        bare_median,
        pipeline_median,
        r1: pipeline_median / bare_median,
        tokens_with_state: last.tokens,
        rss_growth_bytes: last.rss_growth,
        r3_bytes_per_token: last.rss_growth as f64 / last.tokens.max(1) as f64,
        revocations: calls.load(Relaxed),
        shards: config.detectors.shard_count(),
        ns_per_event: stages,
        batching,
        latency,
    };
    println!();
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| R1 throughput ratio (pipeline ÷ bare, medians of {}) | {:.3} |",
        options.runs, report.r1
    );
    println!(
        "| pipeline drain | {:.0} events/s |",
        report.pipeline_median
    );
    println!(
        "| bare rust-rdkafka drain | {:.0} events/s |",
        report.bare_median
    );
    println!(
        "| R3 memory per token (RSS growth ÷ tokens with state, first run) | {:.0} B ({} MiB over {} tokens) |",
        report.r3_bytes_per_token,
        report.rss_growth_bytes >> 20,
        report.tokens_with_state
    );
    if let Some(l) = &report.latency {
        for (what, q) in [
            ("R2 latency tokenwatch adds (end to end − bare)", l.added),
            ("R2 produce → revocation at the issuer", l.end_to_end),
            ("R2 produce → bare consumer", l.bare),
            (
                "R2 Kafka timestamp → decision (ms resolution)",
                l.to_decision,
            ),
        ] {
            println!(
                "| {what}, p50 / p99 / max | {:.2} / {:.2} / {:.2} ms |",
                q.p50_ms, q.p99_ms, q.max_ms
            );
        }
        println!(
            "| R2 stream, attacks revoked / sent | {} events/s, {} / {} |",
            l.rate, l.measured, l.attacks
        );
    }
    let p = report.ns_per_event;
    println!(
        "| per stage, ns/event: decode, enrich, detectors, rules, decision | {:.0}, {:.0}, {:.0}, {:.0}, {:.0} |",
        p.decode, p.enrich, p.detectors, p.rules, p.decision
    );
    let b = report.batching;
    println!(
        "| batches: count, mean events, closed full / idle / linger | {}, {:.0}, {} / {} / {} |",
        b.batches, b.mean_events, b.full, b.idle, b.linger
    );
    println!(
        "| events, tokens, mean payload, cores, detect shards | {}, {}, {} B, {}, {} |",
        report.events, report.tokens, report.mean_payload_bytes, report.cores, report.shards
    );
    if let Some(path) = &options.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(report)
}
