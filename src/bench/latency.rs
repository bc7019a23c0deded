//! R2, latency. A producer thread sends realistic events at a fixed rate to
//! a fresh topic; every tenth of a second one of them is a single-event
//! attack: a token scoped to reads and bound to `10.0.0.0/8` deletes from
//! an outside address (out of scope and out of its network: deterministic,
//! so it is revoked). The `run` pipeline reads the topic and calls a
//! loopback kill switch; a bare consumer with low-latency settings reads
//! the same topic at the same time. For each attack: produce → revocation
//! request received, produce → bare consumer's receipt, and their
//! difference, the latency tokenwatch adds. One clock (this process's
//! monotonic one) times all three.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use serde::Serialize;

use super::{create_topic, unique, wall_ms};
use crate::Config;
use crate::pipeline::{self, FlowStats};

/// Attacks per second in the stream.
const ATTACKS_PER_SECOND: u32 = 10;
/// Benign traffic before the first attack: connections, caches and the
/// consumer's first fetches are warm.
const WARMUP: Duration = Duration::from_secs(2);

/// p50, p99 and max of one latency, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Quantiles {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Quantiles {
    fn of(mut v: Vec<f64>) -> Self {
        if v.is_empty() {
            return Quantiles::default();
        }
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Quantiles {
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            max_ms: v[v.len() - 1],
        }
    }
}

/// What R2 measured.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Events per second sent (attacks included).
    pub rate: u32,
    pub attacks: usize,
    /// Attacks whose revocation reached the issuer (and the bare consumer).
    pub measured: usize,
    /// Produce → revocation request received at the loopback issuer.
    pub end_to_end: Quantiles,
    /// Produce → the bare consumer's receipt.
    pub bare: Quantiles,
    /// Per attack, end to end minus bare: what tokenwatch adds.
    pub added: Quantiles,
    /// Kafka timestamp → decision made, from the pipeline's own histogram
    /// (the timestamp has millisecond resolution): the detection part.
    pub to_decision: Quantiles,
}

type Stamps = Arc<Mutex<HashMap<String, Instant>>>;

/// A loopback kill switch that notes when each token's revocation arrived.
async fn timing_issuer(stamps: Stamps) -> anyhow::Result<String> {
    let app = axum::Router::new().route(
        "/revoke/{token_id}",
        axum::routing::post(
            move |axum::extract::Path(token): axum::extract::Path<String>| {
                let now = Instant::now();
                let stamps = stamps.clone();
                async move {
                    if let Ok(mut s) = stamps.lock() {
                        s.entry(token).or_insert(now);
                    }
                    "ok"
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

fn attack_token(n: usize) -> String {
    format!("atk-{n:05}")
}

/// The attack tokens' metadata: scoped to order reads, bound to 10/8.
fn write_metadata(path: &std::path::Path, attacks: usize) -> anyhow::Result<()> {
    let lines: String = (0..attacks)
        .map(|n| {
            let m = schemas::TokenMetadata {
                issuer: "oauth".into(),
                token_id: attack_token(n),
                scopes: Some(vec!["GET /v1/orders*".into()]),
                bound_cidrs: Some(vec!["10.0.0.0/8".into()]),
                ..Default::default()
            };
            serde_json::to_string(&m).map(|l| l + "\n")
        })
        .collect::<Result<_, _>>()?;
    std::fs::write(path, lines)?;
    Ok(())
}

/// Sends `rate` events a second, an attack every `1 / ATTACKS_PER_SECOND`
/// after the warm-up, until `attacks` are sent; returns when each attack
/// was handed to the client.
fn produce(brokers: &str, topic: &str, rate: u32, attacks: usize) -> anyhow::Result<Stamps> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "1")
        .set("acks", "1")
        .set("socket.nagle.disable", "true")
        .create()?;
    let sent: Stamps = Arc::default();
    let every = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let attack_every = (rate / ATTACKS_PER_SECOND).max(1) as usize;
    let warmup = (WARMUP.as_secs_f64() * f64::from(rate)) as usize;
    let start = Instant::now();
    let mut attacked = 0;
    for i in 0.. {
        let due = start + every * i as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let mut e = schemas::sample::realistic(i, 100_000, 0);
        e.ts_ms = wall_ms();
        let attack = i >= warmup && (i - warmup).is_multiple_of(attack_every);
        if attack {
            e.token_id = attack_token(attacked);
            e.action = "DELETE /v1/admin/users/{id}".into();
            e.request_id = Some(format!("attack-{attacked}"));
        }
        let payload = e.to_json();
        let mut record = BaseRecord::to(topic).key(&e.token_id).payload(&payload);
        let handed = loop {
            let now = Instant::now();
            match producer.send(record) {
                Ok(()) => break now,
                Err((_, back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        };
        if attack {
            sent.lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .insert(e.token_id.clone(), handed);
            attacked += 1;
            if attacked == attacks {
                break;
            }
        }
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(sent)
}

/// A bare consumer with low-latency settings, noting when each attack
/// record arrives, until `stop`.
fn bare_consumer(
    brokers: &str,
    topic: &str,
    ready: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Stamps> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("bench-bare-latency"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "1")
        .set("fetch.min.bytes", "1")
        .set("socket.nagle.disable", "true")
        .create()?;
    consumer.subscribe(&[topic])?;
    let seen: Stamps = Arc::default();
    while !stop.load(Relaxed) {
        let Some(m) = consumer.poll(Duration::from_millis(50)) else {
            if consumer.assignment().is_ok_and(|a| a.count() > 0) {
                ready.store(true, Relaxed);
            }
            continue;
        };
        let now = Instant::now();
        let m = m?;
        ready.store(true, Relaxed);
        if let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok())
            && key.starts_with("atk-")
        {
            seen.lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .insert(key.to_string(), now);
        }
    }
    Ok(seen)
}

async fn until(what: &str, limit: Duration, done: impl Fn() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !done() {
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Runs R2 with `base` (issuers replaced) on a fresh topic.
pub async fn measure(
    base: &Config,
    brokers: &str,
    rate: u32,
    attacks: usize,
) -> anyhow::Result<Latency> {
    let topic = unique("bench-latency");
    create_topic(brokers, &topic, 4).await?;
    create_topic(brokers, &format!("{topic}-dlq"), 1).await?;
    let dir = std::env::temp_dir().join(unique("tokenwatch-bench"));
    std::fs::create_dir_all(&dir)?;
    let metadata = dir.join("tokens.ndjson");
    write_metadata(&metadata, attacks)?;

    let received: Stamps = Arc::default();
    let issuer = timing_issuer(received.clone()).await?;
    let mut config = base.clone();
    config.ingest.topics = vec![topic.clone()];
    config.ingest.dead_letter_topic = format!("{topic}-dlq");
    config.ingest.group_id = unique("bench-latency-pipeline");
    config.detectors.metadata_file = Some(metadata);
    // Every attack must be revoked: the budget is not what is measured.
    let budget = (attacks as u32).saturating_mul(2).max(1000);
    config.decision.budget.per_issuer_per_minute = budget;
    config.decision.budget.overall_per_minute = budget;
    config.revoker.issuers.insert(
        "oauth".into(),
        revoker::IssuerConfig::post(format!("{issuer}/revoke/{{token_id}}")),
    );
    config.revoker.ledger_topic = unique("bench-latency-ledger");
    create_topic(brokers, &config.revoker.ledger_topic, 1).await?;

    let engine = pipeline::build_engine(&config)?;
    let revoker = pipeline::build_revoker(&config).await?;
    let metrics = Arc::new(ingest::IngestMetrics::default());
    let stats = Arc::new(FlowStats::default());
    let (stop_pipeline, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = {
        let (config, metrics, stats) = (config.clone(), metrics.clone(), stats.clone());
        tokio::spawn(async move {
            pipeline::run(&config, engine, revoker, metrics, stats, async {
                let _ = stopped.await;
            })
            .await
        })
    };
    let (ready, stop) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let bare = {
        let (brokers, topic, ready, stop) = (
            brokers.to_string(),
            topic.clone(),
            ready.clone(),
            stop.clone(),
        );
        std::thread::spawn(move || bare_consumer(&brokers, &topic, ready, stop))
    };
    until(
        "both consumers to be assigned",
        Duration::from_secs(60),
        || ready.load(Relaxed) && metrics.assigned_partitions.load(Relaxed) > 0,
    )
    .await?;

    println!(
        "R2: {rate} events/s with {attacks} single-event attacks ({ATTACKS_PER_SECOND}/s) ..."
    );
    let sent = {
        let (brokers, topic) = (brokers.to_string(), topic.clone());
        tokio::task::spawn_blocking(move || produce(&brokers, &topic, rate, attacks)).await??
    };
    let revoked = || received.lock().map_or(0, |r| r.len());
    let all_in = until("every attack's revocation", Duration::from_secs(30), || {
        revoked() >= attacks
    })
    .await;
    stop.store(true, Relaxed);
    let seen = bare
        .join()
        .map_err(|_| anyhow::anyhow!("the bare consumer panicked"))??;
    let _ = stop_pipeline.send(());
    running.await??;
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = all_in {
        eprintln!("R2: {e}; {} of {attacks} arrived", revoked());
    }

    let (sent, seen, received) = (
        sent.lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .clone(),
        seen.lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .clone(),
        received
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .clone(),
    );
    let ms = |from: Instant, to: Instant| to.saturating_duration_since(from).as_secs_f64() * 1e3;
    let (mut end_to_end, mut bare, mut added) = (Vec::new(), Vec::new(), Vec::new());
    let mut order: Vec<_> = sent.iter().collect();
    order.sort_by_key(|(_, at)| **at);
    for (token, at) in order {
        let (Some(&issued), Some(&read)) = (received.get(token), seen.get(token)) else {
            continue;
        };

        end_to_end.push(ms(*at, issued));
        bare.push(ms(*at, read));
        added.push(ms(*at, issued) - ms(*at, read));
    }
    let (p50_ms, p99_ms, max_ms) = stats.decision_latency_ms();
    Ok(Latency {
        to_decision: Quantiles {
            p50_ms,
            p99_ms,
            max_ms,
        },
        rate,
        attacks,
        measured: end_to_end.len(),
        end_to_end: Quantiles::of(end_to_end),
        bare: Quantiles::of(bare),
        added: Quantiles::of(added),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let q = Quantiles::of((1..=200).map(f64::from).collect());
        assert_eq!((q.p50_ms, q.p99_ms, q.max_ms), (100.0, 198.0, 200.0));
        let one = Quantiles::of(vec![3.0]);
        assert_eq!((one.p50_ms, one.p99_ms, one.max_ms), (3.0, 3.0, 3.0));
    }
}
