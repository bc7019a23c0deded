//! `tokenwatch bench --restore N`: the state changelog at scale. N tokens'
//! learned states are checkpointed to a compacted 8-partition topic on the
//! local broker, then restored into a fresh detect stage as a partition's
//! new owner does (the changelog's reader and the stage's `Restore`
//! controls, every shard). Figures: bytes per token (the record's key and
//! value, before compression), write and restore rates, the time to
//! restore all N, and the resident memory the restored state takes.
//!
//! The states are learned, not zeros: a day of the scripted scenario's
//! traffic is run through an engine, and its learned tokens are given out
//! in turn, each under a new token id and position.

use std::sync::Arc;
use std::time::Instant;

use detectors::changelog::Entry;
use detectors::stage::{self, DetectStage};
use detectors::state::Position;
use detectors::{DecisionConfig, Engine};
use tokio::sync::{mpsc, oneshot};

use super::{BenchOptions, create_topic, rss_bytes, unique};
use crate::Config;
use crate::pipeline::FlowStats;
use crate::pipeline::changelog::{self, ChangelogConfig, ChangelogStats, ChangelogWriter};

const PARTITIONS: i32 = 8;

/// Learned states to give out: the scenario's tokens after its traffic.
fn learned_states() -> Vec<Entry> {
    let scenario =
        crate::scenario::Scenario::generate(7, 2000, 1_795_813_200_000, 86_400_000, 200_000);
    let mut engine = Engine::with_parts(
        &scenario.detectors_config(),
        &DecisionConfig::default(),
        None,
        Default::default(),
    )
    .with_changelog();
    let mut events = scenario.events.clone();
    let origins: Vec<schemas::Origin> = (0..events.len() as i64)
        .map(|offset| schemas::Origin {
            topic: "bench".into(),
            partition: 0,
            offset,
            kafka_ts_ms: None,
        })
        .collect();
    for (events, origins) in events.chunks_mut(1024).zip(origins.chunks(1024)) {
        engine.process(events, origins);
    }
    engine.checkpoint()
}

pub async fn run(options: &BenchOptions, tokens: usize) -> anyhow::Result<()> {
    let config = Config::load_with(&options.config, super::bench_geoip()?)?;
    let brokers = std::env::var("TOKENWATCH_TEST_BROKERS").unwrap_or(config.ingest.brokers.clone());
    let topic = unique("bench-state");
    create_topic(&brokers, &topic, PARTITIONS).await?;
    let learned = learned_states();
    anyhow::ensure!(!learned.is_empty(), "no learned state to give out");
    println!(
        "{} learned states; writing {tokens} tokens' records to {topic} ({PARTITIONS} partitions) ...",
        learned.len()
    );
    let mut kafka = rdkafka::ClientConfig::new();
    kafka.set("bootstrap.servers", &brokers);
    let changelog_config = ChangelogConfig {
        enabled: true,
        topic: topic.clone(),
        ..Default::default()
    };
    let stats = Arc::new(ChangelogStats::default());
    let writer = ChangelogWriter::build(&kafka, &changelog_config, stats.clone())?;
    let started = Instant::now();
    let mut batch = Vec::with_capacity(10_000);
    for i in 0..tokens {
        let mut e = learned[i % learned.len()].clone();
        e.token_id = format!("tok-{i:08}");
        e.state.position =
            Position::new("bench-events", (i % PARTITIONS as usize) as i32, i as i64);
        batch.push(e);
        if batch.len() == batch.capacity() || i + 1 == tokens {
            writer.write(&batch).await?;
            batch.clear();
        }
    }
    let write_s = started.elapsed().as_secs_f64();
    let bytes = stats
        .bytes_written
        .load(std::sync::atomic::Ordering::Relaxed);

    // A new owner: a fresh stage, restoring every partition.
    let mut detectors = config.detectors.clone();
    detectors.max_tokens = detectors.max_tokens.max(tokens * 2);
    let engine = Engine::with_parts(
        &detectors,
        &DecisionConfig::default(),
        None,
        Default::default(),
    )
    .with_changelog();
    let shards = detectors.shard_count();
    let stage = DetectStage::new(engine, shards);
    let stage_stats = stage.stats();
    let (_input, input_rx) = mpsc::channel(1);
    let (control, control_rx) = mpsc::channel(64);
    let (output, _decisions) = mpsc::channel(64);
    let running = tokio::spawn(stage.run(input_rx, control_rx, output));
    let rss_before = rss_bytes();
    let flow = Arc::new(FlowStats::default());
    let started = Instant::now();
    let (tx, mut rx) = mpsc::channel::<Vec<Entry>>(4);
    let reader = {
        let (kafka, topic, flow, stats) =
            (kafka.clone(), topic.clone(), flow.clone(), stats.clone());
        tokio::task::spawn_blocking(move || {
            let partitions: Vec<i32> = (0..PARTITIONS).collect();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3600);
            changelog::read(
                &kafka,
                &topic,
                "bench",
                &partitions,
                deadline,
                &tx,
                &flow,
                &stats,
            )
        })
    };
    while let Some(chunk) = rx.recv().await {
        control.send(stage::Control::Restore(chunk)).await?;
    }
    reader.await??;
    let (synced, done) = oneshot::channel();
    control.send(stage::Control::Sync(synced)).await?;
    done.await?;
    let restore_s = started.elapsed().as_secs_f64();
    let rss_after = rss_bytes();
    let restored = stage_stats.merged().store.tokens;
    drop(control);
    drop(_input);
    let _ = running.await;

    println!("changelog, {tokens} tokens, {shards} shards, 2 cores:");
    println!(
        "  bytes per token (key + value, before compression): {:.0}",
        bytes as f64 / tokens as f64
    );
    println!(
        "  write: {write_s:.1} s ({:.0} records/s)",
        tokens as f64 / write_s
    );
    println!(
        "  restore: {restore_s:.1} s for {restored} tokens ({:.0} records/s)",
        tokens as f64 / restore_s
    );
    println!(
        "  resident memory grown by the restore: {:.0} B per token",
        rss_after.saturating_sub(rss_before) as f64 / restored.max(1) as f64
    );
    anyhow::ensure!(restored == tokens, "restored {restored} tokens of {tokens}");
    Ok(())
}
