//! The running pipeline:
//!
//! ```text
//! KafkaSource ──batches──> detect stage (Engine) ──decisions──> decision sink
//!      ^                         │  ^                                │
//!      └──────── ack ────────────┘  └── metadata updates, reloads     └─ log (revoker: next issue)
//! ```
//!
//! Channels are bounded, so a slow stage pushes back on the consumer. A
//! batch is acknowledged, and its offsets may be stored, only after its
//! decisions have been handed to the sink.

mod detect;
mod stats;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use detectors::Engine;
use ingest::{IngestMetrics, KafkaSource, MetadataProgress, MetadataSource};
pub use stats::FlowStats;
use tokio::sync::mpsc;
use tracing::{Instrument, info_span};

pub use self::detect::{Control, detect_stage};
use crate::config::Config;

/// Capacity of the channels between stages, in batches. Small on purpose:
/// backpressure instead of unbounded buffering.
const STAGE_CHANNEL_BATCHES: usize = 8;

/// Builds the engine the config describes (GeoIP, metadata file).
pub fn build_engine(config: &Config) -> anyhow::Result<Engine> {
    Ok(Engine::build(&config.detectors, &config.decision)?)
}

/// Runs the pipeline until `shutdown` resolves, then drains and commits.
pub async fn run(
    config: &Config,
    engine: Engine,
    metrics: Arc<IngestMetrics>,
    stats: Arc<FlowStats>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let source = KafkaSource::build(&config.ingest, metrics)?;
    let (control_tx, control_rx) = mpsc::channel(64);
    let mut helpers = Vec::new();
    if let Some(topic) = &config.ingest.metadata_topic {
        let progress = Arc::new(MetadataProgress::default());
        let metadata = MetadataSource::build(&config.ingest, topic, progress)
            .with_context(|| format!("cannot follow the token-metadata topic {topic}"))?;
        let (tx, mut rx) = mpsc::channel(256);
        helpers.push(tokio::spawn(async move {
            if let Err(e) = metadata.run(tx).await {
                tracing::error!(error = %e, "Token-metadata source stopped; metadata is no longer updated live.");
            }
        }));
        let control = control_tx.clone();
        helpers.push(tokio::spawn(async move {
            while let Some(update) = rx.recv().await {
                if control.send(Control::Metadata(update)).await.is_err() {
                    break;
                }
            }
        }));
    }
    helpers.push(tokio::spawn(detect::reload_on_sighup(control_tx.clone())));
    drop(control_tx);

    let (tx, rx) = mpsc::channel(STAGE_CHANNEL_BATCHES);
    let reload = detect::ReloadPolicy::from_config(&config.detectors);
    let stage = tokio::spawn(
        detect_stage(
            rx,
            engine,
            control_rx,
            reload,
            stats.clone(),
            detect::log_decision,
        )
        .instrument(info_span!("detect")),
    );
    let ingest = source.run(tx, shutdown).await;
    stage.await?;
    for h in helpers {
        h.abort();
    }
    Ok(ingest?)
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
