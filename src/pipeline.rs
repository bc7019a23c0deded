//! The running pipeline. For now: Kafka source → a flow stage that records
//! what arrived and acknowledges it. Detectors and the revoker slot in
//! between as their issues land; acknowledgements keep flowing back to
//! ingest so offsets are stored only after a batch is fully handled.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use ingest::{Delivery, IngestMetrics, KafkaSource};
use tokio::sync::mpsc;
use tracing::{Instrument, info_span};

use crate::config::Config;

/// Capacity of the channel between ingest and the next stage, in batches.
/// Small on purpose: a slow stage pushes back on the consumer instead of
/// buffering without bound.
const STAGE_CHANNEL_BATCHES: usize = 8;

/// What the pipeline has seen, for the demo, logs and tests.
pub struct FlowStats {
    pub events: AtomicU64,
    pub batches: AtomicU64,
    /// Kafka record timestamp → batch received by the stage, microseconds.
    pub ingest_latency_us: Mutex<Histogram<u64>>,
}

impl Default for FlowStats {
    fn default() -> Self {
        FlowStats {
            events: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            // 1 µs .. 1 hour at 3 significant digits; the bounds are constants.
            ingest_latency_us: Mutex::new(
                Histogram::new_with_bounds(1, 3_600_000_000, 3)
                    .unwrap_or_else(|_| unreachable!("valid bounds")),
            ),
        }
    }
}

impl FlowStats {
    fn record(&self, delivery: &Delivery) {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        if let Ok(mut h) = self.ingest_latency_us.lock() {
            for origin in &delivery.batch.origins {
                if let Some(ts) = origin.kafka_ts_ms {
                    h.saturating_record((now_ms - ts * 1000).max(1) as u64);
                }
            }
        }
        self.events.fetch_add(delivery.batch.len() as u64, Relaxed);
        self.batches.fetch_add(1, Relaxed);
    }

    /// `(p50, p99, max)` ingest latency in milliseconds.
    pub fn latency_ms(&self) -> (f64, f64, f64) {
        match self.ingest_latency_us.lock() {
            Ok(h) if !h.is_empty() => (
                h.value_at_quantile(0.5) as f64 / 1000.0,
                h.value_at_quantile(0.99) as f64 / 1000.0,
                h.max() as f64 / 1000.0,
            ),
            _ => (0.0, 0.0, 0.0),
        }
    }
}

/// Runs the pipeline until `shutdown` resolves, then drains and commits.
pub async fn run(
    config: &Config,
    metrics: Arc<IngestMetrics>,
    stats: Arc<FlowStats>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let source = KafkaSource::build(&config.ingest, metrics)?;
    let (tx, rx) = mpsc::channel(STAGE_CHANNEL_BATCHES);
    let stage = tokio::spawn(flow_stage(rx, stats).instrument(info_span!("flow")));
    let ingest = source.run(tx, shutdown).await;
    stage.await?;
    Ok(ingest?)
}

async fn flow_stage(mut input: mpsc::Receiver<Delivery>, stats: Arc<FlowStats>) {
    while let Some(delivery) = input.recv().await {
        stats.record(&delivery);
        delivery.ack.done();
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
