//! `tokenwatch replay`: the detection pipeline over NDJSON files or stdin,
//! for testing thresholds against past logs. Deterministic: the same input
//! and config give byte-identical output. Events are processed in
//! event-time order (the whole input is read first), decisions are written
//! to stdout as NDJSON, and nothing is ever revoked.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use anyhow::Context;
use ingest::{FileSource, IngestMetrics};
use schemas::{Action, Decision, Event, Mode, Origin};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::pipeline;

/// What a replay did, for the closing line on stderr.
#[derive(Debug, Default, PartialEq)]
pub struct ReplayStats {
    pub events: u64,
    /// Refused records (a bad record of a CloudTrail file counts alone).
    pub rejected: u64,
    /// Records that are no token's call (see `tokenwatch_skipped_total`).
    pub skipped: u64,
    pub alerts: u64,
    pub revocations: u64,
}

/// Runs the replay, writing decisions to `out`. `enforce` decides as in
/// enforce mode (what would have been revoked); the default is dry run.
pub async fn run(
    mut config: Config,
    inputs: &[String],
    enforce: bool,
    out: &mut impl Write,
) -> anyhow::Result<ReplayStats> {
    config.decision.mode = if enforce { Mode::Enforce } else { Mode::DryRun };
    let mut engine = pipeline::build_engine(&config)?;
    let metrics = Arc::new(IngestMetrics::default());
    let source = FileSource::new(inputs, &config.ingest, metrics.clone());
    let progress = progress_bar(inputs, metrics.clone());

    let (tx, mut rx) = mpsc::channel(16);
    let reading = tokio::spawn(source.run(tx));
    let mut events: Vec<(Event, Origin)> = Vec::new();
    while let Some(delivery) = rx.recv().await {
        let batch = delivery.batch;
        events.extend(batch.events.into_iter().zip(batch.origins));
        delivery.ack.done();
    }
    reading.await.context("reader task failed")??;
    if let Some((bar, task)) = progress {
        task.abort();
        bar.finish_and_clear();
    }
    // Stable: equal timestamps keep input order.
    events.sort_by_key(|(e, _)| e.ts_ms);

    let mut stats = ReplayStats {
        events: events.len() as u64,
        rejected: metrics.dead_lettered_total(),
        skipped: metrics.skipped.load(std::sync::atomic::Ordering::Relaxed),
        ..Default::default()
    };
    let mut write = |decisions: &[Decision], stats: &mut ReplayStats| -> anyhow::Result<()> {
        for d in decisions {
            match d.recommended.max(d.action) {
                Action::Revoke => stats.revocations += 1,
                Action::Alert => stats.alerts += 1,
                Action::None => {}
            }
            serde_json::to_writer(&mut *out, d)?;
            out.write_all(b"\n")?;
        }
        Ok(())
    };
    for chunk in events.chunks_mut(4096) {
        let (mut evs, origins): (Vec<Event>, Vec<Origin>) = chunk.iter().cloned().unzip();
        let decided = engine.process(&mut evs, &origins);
        write(&decided.decisions, &mut stats)?;
    }
    write(&engine.flush().decisions, &mut stats)?;
    out.flush()?;
    Ok(stats)
}

/// A progress bar on stderr while files are read (none for stdin, and
/// indicatif hides it when stderr is not a terminal): bytes read from the
/// files as stored against their sizes, so a `.json.gz` is measured in
/// compressed bytes on both sides.
fn progress_bar(
    inputs: &[String],
    metrics: Arc<IngestMetrics>,
) -> Option<(indicatif::ProgressBar, tokio::task::JoinHandle<()>)> {
    if inputs.iter().any(|p| p == "-") {
        return None;
    }
    let total: u64 = inputs
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style);
    }
    let task = {
        let bar = bar.clone();
        tokio::spawn(async move {
            loop {
                bar.set_position(metrics.input_bytes.load(Relaxed));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    Some((bar, task))
}
