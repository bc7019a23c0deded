//! The running pipeline:
//!
//! ```text
//! KafkaSource ──batches──> DetectStage (Engine × shards) ──DecisionBatch──> Revoker ──> issuers, webhooks
//!      ^                         ^                                  │           │
//!      │                         └── metadata updates, reloads      │           └── ledger topic (first)
//!      └──────────── ack (a Finalizer, done per shard part) ────────┘
//! ```
//!
//! Channels are bounded, so a slow stage pushes back on the consumer. A
//! batch is acknowledged, and its offsets may be stored, only after its
//! revoke decisions are recorded in the ledger (and, with the state
//! changelog, once a checkpoint covering it is written).
//!
//! - [`changelog`]: per-token state checkpointed to a compacted topic and
//!   restored on assignment (the rebalance hook).
//! - `repartition`: the first hop for sources not keyed by token.
//! - [`health`]: budgets whose excess raises `detector_degraded`.
//! - `detect`: the stage as the pipeline runs it, and its controller.
//! - `produce`: writing a batch to an internal topic, with retries.

pub mod changelog;
mod detect;
pub mod health;
mod produce;
mod repartition;
mod stats;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use detectors::Engine;
use ingest::{IngestMetrics, KafkaSource, MetadataProgress, MetadataSource};
use revoker::{Command, Revoker};
pub use stats::{FlowStats, Reloaded, now_us};
use tokio::sync::mpsc;
use tracing::{Instrument, info_span};

pub use self::detect::{Control, detect_stage};
use crate::config::Config;

/// Capacity of the channels between stages, in batches. Small on purpose:
/// backpressure instead of unbounded buffering.
const STAGE_CHANNEL_BATCHES: usize = 8;

/// Builds the engine the config describes (GeoIP, metadata file), revoking
/// only at the configured issuers.
pub fn build_engine(config: &Config) -> anyhow::Result<Engine> {
    let engine = Engine::build(&config.detectors, &config.decision)?
        .with_revocable_issuers(config.revoker.issuers.keys());
    Ok(if config.changelog.enabled {
        engine.with_changelog()
    } else {
        engine
    })
}

/// Builds the revoker the config describes, rebuilding its ledger from
/// the ledger topic (a blocking read, so it runs on a blocking thread).
pub async fn build_revoker(config: &Config) -> anyhow::Result<Revoker> {
    let (revoker, kafka, hash) = (config.revoker.clone(), config.kafka(), config.hash());
    let built =
        tokio::task::spawn_blocking(move || Revoker::build(&revoker, Some(&kafka), hash)).await?;
    Ok(built?)
}

/// Runs the pipeline until `shutdown` resolves, then drains and commits.
/// Revocations still being retried get up to `revoker.retry.max_delay`
/// to finish; the ledger resumes the rest at the next start.
pub async fn run(
    config: &Config,
    engine: Engine,
    revoker: Revoker,
    metrics: Arc<IngestMetrics>,
    stats: Arc<FlowStats>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    // With repartition, `source` reads the internal topic (detection's
    // hop) and `first_hop` the source topics.
    let (mut source, first_hop) = if config.ingest.repartition {
        let (first, second) = config.ingest.repartition_hops();
        let first_metrics = Arc::new(IngestMetrics::default());
        let _ = stats.repartition.set(first_metrics.clone());
        let first_source = KafkaSource::build(&first, first_metrics)
            .context("cannot read the source topics for the repartition step")?;
        let forwarder =
            repartition::Forwarder::build(&config.kafka(), config.ingest.repartition_topic())
                .context("cannot create the repartition producer")?;
        (
            KafkaSource::build(&second, metrics.clone())?,
            Some((first_source, forwarder)),
        )
    } else {
        (KafkaSource::build(&config.ingest, metrics.clone())?, None)
    };
    let (commands, command_rx) = mpsc::channel::<Command>(64);
    let (revoker_metrics, webhook_metrics) = (revoker.metrics(), revoker.webhook_metrics());
    let revoking = tokio::spawn(revoker.run(command_rx));
    let (control_tx, control_rx) = mpsc::channel(64);
    let mut helpers = Vec::new();
    let metadata_progress = Arc::new(MetadataProgress::default());
    if let Some(topic) = &config.ingest.metadata_topic {
        stats.metadata_ready.send_replace(false);
        let metadata = MetadataSource::build(&config.ingest, topic, metadata_progress.clone())
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
    helpers.push(tokio::spawn(health::monitor(
        config.health.clone(),
        metrics.clone(),
        stats.clone(),
        commands.clone(),
        control_tx.clone(),
    )));
    if config.admin.enabled {
        let state = crate::admin::AdminState {
            flow: stats.clone(),
            ingest: metrics,
            revoker: revoker_metrics,
            webhooks: webhook_metrics,
            control: control_tx.clone(),
            commands: commands.clone(),
            token: crate::admin::token_from_env(&config.admin.token_env),
            denylist_token: crate::admin::token_from_env(&config.admin.denylist_token_env),
        };
        let (bound, tasks) = crate::admin::serve(&config.admin, state).await?;
        let _ = stats.admin_addr.set(bound.api);
        let _ = stats.probe_addr.set(bound.probe);
        helpers.extend(tasks);
    }
    let writer = if config.changelog.enabled {
        let changelog_stats = Arc::new(changelog::ChangelogStats::default());
        let _ = stats.changelog.set(changelog_stats.clone());
        let writer = changelog::ChangelogWriter::build(
            &config.kafka(),
            &config.changelog,
            changelog_stats.clone(),
        )
        .context("cannot create the state changelog producer")?;
        source = source.with_partition_hook(Arc::new(changelog::ChangelogHook(Arc::new(
            changelog::HookParts {
                control: control_tx.clone(),
                kafka: config.kafka(),
                config: config.changelog.clone(),
                group_id: config.ingest.group_id.clone(),
                flow: stats.clone(),
                stats: changelog_stats,
            },
        ))));
        helpers.push(tokio::spawn(changelog::checkpoint_every(
            config.changelog.interval,
            control_tx.clone(),
        )));
        Some(writer)
    } else {
        None
    };
    drop(control_tx);

    let (tx, rx) = mpsc::channel(STAGE_CHANNEL_BATCHES);
    let reload = detect::ReloadPolicy::from_config(config);
    let stage = tokio::spawn(
        detect_stage(
            rx,
            engine,
            control_rx,
            reload,
            stats.clone(),
            commands,
            writer,
        )
        .instrument(info_span!("detect")),
    );
    let mut shutdown = std::pin::pin!(shutdown);
    let ingest = if !metadata_applied(&stats, &metadata_progress, shutdown.as_mut()).await {
        drop(tx);
        Ok(())
    } else if let Some((first, forwarder)) = first_hop {
        run_hops(first, forwarder, source, tx, shutdown).await
    } else {
        source.run(tx, shutdown).await.map_err(Into::into)
    };
    let stage = stage.await?;
    // The admin API holds a handle on the revoker: stop it (and the other
    // helpers) first, so the revoker sees its last sender go and finishes.
    for h in helpers {
        h.abort();
        let _ = h.await;
    }
    revoking.await?;
    stage?;
    ingest
}

/// Runs the repartition step's two hops until `shutdown`, or until one of
/// them stops (then the others stop too).
async fn run_hops(
    first: KafkaSource,
    forwarder: repartition::Forwarder,
    detection: KafkaSource,
    to_detect: mpsc::Sender<ingest::Delivery>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let (to_forward, forwarded) = mpsc::channel(STAGE_CHANNEL_BATCHES);
    let (first, forwarding, second, ()) = tokio::join!(
        async {
            let r = first.run(to_forward, stopped(stopping.clone())).await;
            stop.send_replace(true);
            r
        },
        async {
            let r = forwarder.run(forwarded).await;
            stop.send_replace(true);
            r
        },
        async {
            let r = detection.run(to_detect, stopped(stopping.clone())).await;
            stop.send_replace(true);
            r
        },
        async {
            let mut rx = stopping.clone();
            tokio::select! {
                () = shutdown => {}
                _ = rx.wait_for(|s| *s) => {}
            }
            stop.send_replace(true);
        },
    );
    forwarding?;
    first.context("the repartition step's source")?;
    Ok(second?)
}

/// Waits until the detect stage has applied the token-metadata topic as it
/// stood at start, logging progress; `false` if `shutdown` came first.
/// Events wait in Kafka meanwhile: none is judged without its metadata.
async fn metadata_applied(
    stats: &FlowStats,
    progress: &MetadataProgress,
    mut shutdown: std::pin::Pin<&mut impl Future<Output = ()>>,
) -> bool {
    let mut ready = stats.metadata_ready.subscribe();
    if *ready.borrow() {
        return true;
    }
    tracing::info!("Reading the token-metadata topic before any event.");
    let mut every = tokio::time::interval(std::time::Duration::from_secs(10));
    every.tick().await;
    loop {
        tokio::select! {
            changed = ready.wait_for(|ready| *ready) => {
                tracing::info!(
                    applied = progress.applied.load(std::sync::atomic::Ordering::Relaxed),
                    "Token metadata applied; reading events."
                );
                return changed.is_ok();
            }
            _ = every.tick() => tracing::info!(
                applied = progress.applied.load(std::sync::atomic::Ordering::Relaxed),
                "Still reading the token-metadata topic; events wait until it is applied."
            ),
            () = shutdown.as_mut() => return false,
        }
    }
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is
/// called, not when the future is first polled: a SIGTERM during startup
/// must stop the process cleanly, not kill it.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let streams = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let (mut int, mut term) = streams;
            let int = async {
                match int.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let term = async {
                match term.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = int => {}
                () = term => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn events_wait_until_the_metadata_is_applied_or_shutdown() {
        let stats = FlowStats::default();
        let progress = MetadataProgress::default();
        let mut never = std::pin::pin!(std::future::pending::<()>());
        assert!(
            metadata_applied(&stats, &progress, never.as_mut()).await,
            "no topic: no wait"
        );

        stats.metadata_ready.send_replace(false);
        let mut waiting = std::pin::pin!(metadata_applied(&stats, &progress, never.as_mut()));
        // Polled once: still waiting.
        assert!(
            tokio::time::timeout(Duration::ZERO, waiting.as_mut())
                .await
                .is_err()
        );
        stats.metadata_ready.send_replace(true);
        assert!(waiting.await);

        stats.metadata_ready.send_replace(false);
        let mut shutdown = std::pin::pin!(std::future::ready(()));
        assert!(
            !metadata_applied(&stats, &progress, shutdown.as_mut()).await,
            "a shutdown while waiting reads no event"
        );
    }
}
