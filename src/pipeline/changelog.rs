//! The state changelog on Kafka: per-token state checkpointed to a
//! compacted topic (key `issuer/token_id`, value the versioned binary state
//! of [`detectors::changelog::Entry`]), partitioned like the input, and
//! restored by a partition's next owner before its events are judged.
//!
//! ```text
//! shard ──checkpoint (every `interval`, on revoke, at shutdown)──> ChangelogWriter ──> topic
//!   ^                                                                                   │
//!   └── Restore ◄── ChangelogHook::restore (on assignment, partition p ◄── changelog p) ┘
//! ```
//!
//! A checkpoint is written after the decisions of the events it covers are
//! in the ledger, and the offsets of those events are stored only after
//! it is written: the changelog never runs behind the committed offsets,
//! and never ahead of the ledger. An event read again after a failover is
//! found in its token's restored position and not counted twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use detectors::changelog::Entry;
use detectors::stage::{self, Finalizer};
use detectors::state::{PartitionId, topic_tag};
use ingest::ack::TopicPartition;
use ingest::rebalance::{BoxFuture, PartitionHook};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use super::FlowStats;
use super::detect::Control;
use super::produce::{acknowledged, queue};

/// `[changelog]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangelogConfig {
    /// Checkpoint per-token state, and restore it on assignment.
    #[serde(default)]
    pub enabled: bool,
    /// The compacted topic, with at least as many partitions as the input.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// How often changed tokens are written. Offsets are stored only as
    /// far as the last checkpoint, so a crash reads up to this much again
    /// (without counting it twice).
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// The most a restore may take; past it, the partitions are judged
    /// with the state read so far (tokens without state are in warm-up)
    /// and `detector_degraded` says so.
    #[serde(default = "default_restore_timeout", with = "humantime_serde")]
    pub restore_timeout: Duration,
}

fn default_topic() -> String {
    "tokenwatch-state".into()
}
fn default_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_restore_timeout() -> Duration {
    Duration::from_secs(120)
}

impl Default for ChangelogConfig {
    fn default() -> Self {
        ChangelogConfig {
            enabled: false,
            topic: default_topic(),
            interval: default_interval(),
            restore_timeout: default_restore_timeout(),
        }
    }
}

impl ChangelogConfig {
    pub fn validate(&self, ingest: &ingest::IngestConfig) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.enabled {
            return problems;
        }
        // With repartition, detection reads one topic: the internal one.
        let input_topics = if ingest.repartition {
            vec![ingest.repartition_topic()]
        } else {
            ingest.topics.clone()
        };
        if self.interval < Duration::from_millis(100) {
            problems.push("changelog.interval: at least 100ms".into());
        }
        if self.restore_timeout < Duration::from_secs(1) {
            problems.push("changelog.restore_timeout: at least 1s".into());
        }
        if input_topics.len() != 1 {
            problems.push(format!(
                "changelog.enabled: the changelog is partitioned like the input, so it needs exactly one input topic (ingest.topics has {}), or ingest.repartition",
                input_topics.len()
            ));
        }
        if input_topics.contains(&self.topic) {
            problems.push("changelog.topic: must differ from the input topic".into());
        }
        problems
    }
}

/// Counters of the changelog, for metrics and the closing figures.
#[derive(Debug, Default)]
pub struct ChangelogStats {
    pub records_written: AtomicU64,
    pub bytes_written: AtomicU64,
    pub records_restored: AtomicU64,
    pub bad_records: AtomicU64,
    /// Restores done, and their total time, ms.
    pub restores: AtomicU64,
    pub restore_ms: AtomicU64,
}

/// How long a checkpoint is written again before detection stops (and
/// its batches stay unacknowledged, read again after a restart).
pub const WRITE_RETRY_FOR: Duration = Duration::from_secs(120);

/// Writes checkpoints.
pub struct ChangelogWriter {
    producer: FutureProducer,
    topic: String,
    stats: Arc<ChangelogStats>,
}

impl ChangelogWriter {
    pub fn build(
        kafka: &ClientConfig,
        config: &ChangelogConfig,
        stats: Arc<ChangelogStats>,
    ) -> anyhow::Result<Self> {
        let mut c = super::produce::producer_config(kafka, "20");
        c.set("compression.type", "lz4");
        Ok(ChangelogWriter {
            producer: c.create()?,
            topic: config.topic.clone(),
            stats,
        })
    }

    /// Writes `entries` and waits until every one is acknowledged (all
    /// in-sync replicas), writing them again after a failure for up to
    /// [`WRITE_RETRY_FOR`]. Writing a token's record twice is harmless:
    /// the topic keeps the latest.
    pub async fn write(&self, entries: &[Entry]) -> Result<(), KafkaError> {
        super::produce::retried("State checkpoint write", WRITE_RETRY_FOR, || {
            self.write_once(entries)
        })
        .await
    }

    async fn write_once(&self, entries: &[Entry]) -> Result<(), KafkaError> {
        let mut pending: Vec<DeliveryFuture> = Vec::with_capacity(entries.len());
        let mut bytes = 0u64;
        for entry in entries {
            let (key, value) = (entry.key(), entry.value());
            bytes += (key.len() + value.len()) as u64;
            let mut record = FutureRecord::<str, [u8]>::to(&self.topic)
                .key(&key)
                .payload(&value);
            if entry.partition() >= 0 {
                record = record.partition(entry.partition());
            }
            queue(&self.producer, &mut pending, record).await?;
        }
        acknowledged(pending).await?;
        self.stats
            .records_written
            .fetch_add(entries.len() as u64, Relaxed);
        self.stats.bytes_written.fetch_add(bytes, Relaxed);
        Ok(())
    }
}

/// Restore progress, for `/readyz` and the log.
#[derive(Debug, Default, Clone)]
pub struct RestoreProgress {
    /// When the running restore began (Unix ms), if one runs.
    pub since_ms: Option<i64>,
    pub partitions: usize,
    /// Records read so far, and to read (the partitions' end offsets).
    pub read: u64,
    pub total: u64,
}

/// Restores on assignment, checkpoints and forgets on revoke, through the
/// detect stage's controls.
pub struct ChangelogHook(pub Arc<HookParts>);

pub struct HookParts {
    pub control: mpsc::Sender<Control>,
    pub kafka: ClientConfig,
    pub config: ChangelogConfig,
    pub group_id: String,
    pub flow: Arc<FlowStats>,
    pub stats: Arc<ChangelogStats>,
}

/// Records per restore control: big enough to be cheap, small enough not
/// to hold a shard long.
const RESTORE_CHUNK: usize = 4096;

impl HookParts {
    async fn stage(&self, control: stage::Control) -> bool {
        self.control.send(Control::Stage(control)).await.is_ok()
    }

    async fn restore_now(self: Arc<Self>, partitions: Vec<TopicPartition>) {
        let started = std::time::Instant::now();
        let ids: Vec<PartitionId> = partitions
            .iter()
            .map(|(topic, p)| (topic_tag(topic), *p))
            .collect();
        let numbers: Vec<i32> = partitions.iter().map(|(_, p)| *p).collect();
        self.flow.set_restore(RestoreProgress {
            since_ms: Some(super::stats::now_us() / 1000),
            partitions: numbers.len(),
            ..Default::default()
        });
        let (tx, mut rx) = mpsc::channel::<Vec<Entry>>(4);
        let reader = {
            let (kafka, topic, group) = (
                self.kafka.clone(),
                self.config.topic.clone(),
                self.group_id.clone(),
            );
            let (flow, stats) = (self.flow.clone(), self.stats.clone());
            let deadline = started + self.config.restore_timeout;
            let numbers = numbers.clone();
            tokio::task::spawn_blocking(move || {
                read(
                    &kafka, &topic, &group, &numbers, deadline, &tx, &flow, &stats,
                )
            })
        };
        let mut restored = 0usize;
        while let Some(chunk) = rx.recv().await {
            restored += chunk.len();
            if !self.stage(stage::Control::Restore(chunk)).await {
                return;
            }
        }
        let outcome = reader.await;
        // Every restored state is in place before the partitions' first
        // event is judged.
        let (synced, done) = oneshot::channel();
        if !self.stage(stage::Control::Sync(synced)).await || done.await.is_err() {
            return;
        }
        self.stage(stage::Control::Own(ids)).await;
        let ms = started.elapsed().as_millis() as u64;
        self.stats.restores.fetch_add(1, Relaxed);
        self.stats.restore_ms.fetch_add(ms, Relaxed);
        self.flow.set_restore(RestoreProgress::default());
        match outcome {
            Ok(Ok(Read::Complete)) => info!(
                topic = %self.config.topic, partitions = ?numbers, tokens = restored, ms,
                "Restored the state of assigned partitions; their events are judged from now on."
            ),
            Ok(Ok(Read::TimedOut)) => error!(
                topic = %self.config.topic, partitions = ?numbers, tokens = restored, ms,
                "Restore stopped at changelog.restore_timeout; the partitions are judged with the state read so far (the rest starts in warm-up)."
            ),
            Ok(Err(e)) => error!(
                topic = %self.config.topic, partitions = ?numbers, tokens = restored, error = %e,
                "Cannot read the state changelog; the partitions are judged with the state read so far (the rest starts in warm-up)."
            ),
            Err(e) => error!(error = %e, "The changelog reader failed."),
        }
    }
}

impl PartitionHook for ChangelogHook {
    fn restore(&self, partitions: Vec<TopicPartition>) -> BoxFuture<()> {
        Box::pin(Arc::clone(&self.0).restore_now(partitions))
    }

    fn checkpoint(&self) -> BoxFuture<bool> {
        let this = Arc::clone(&self.0);
        Box::pin(async move {
            let (tx, rx) = oneshot::channel();
            let done = Finalizer::new(move || {
                let _ = tx.send(());
            });
            this.stage(stage::Control::Checkpoint(done)).await && rx.await.is_ok()
        })
    }

    fn release(&self, partitions: Vec<TopicPartition>) -> BoxFuture<()> {
        let this = Arc::clone(&self.0);
        Box::pin(async move {
            let ids: Vec<PartitionId> = partitions
                .iter()
                .map(|(topic, p)| (topic_tag(topic), *p))
                .collect();
            let (tx, rx) = oneshot::channel();
            if this.stage(stage::Control::Disown(ids, tx)).await
                && let Ok(tokens) = rx.await
            {
                info!(
                    partitions = ?partitions.iter().map(|(_, p)| *p).collect::<Vec<_>>(),
                    tokens,
                    "Released the state of revoked partitions (checkpointed for their next owner)."
                );
            }
        })
    }
}

/// Checkpoints every `interval` until aborted.
pub async fn checkpoint_every(interval: Duration, control: mpsc::Sender<Control>) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let tick = Control::Stage(stage::Control::Checkpoint(Finalizer::none()));
        if control.send(tick).await.is_err() {
            return;
        }
    }
}

pub(crate) enum Read {
    Complete,
    TimedOut,
}

/// Reads changelog `partitions` from their start to their end as they are
/// now, sending the entries in chunks.
#[allow(clippy::too_many_arguments)]
pub(crate) fn read(
    kafka: &ClientConfig,
    topic: &str,
    group: &str,
    partitions: &[i32],
    deadline: std::time::Instant,
    tx: &mpsc::Sender<Vec<Entry>>,
    flow: &FlowStats,
    stats: &ChangelogStats,
) -> anyhow::Result<Read> {
    let mut c = kafka.clone();
    c.set("group.id", format!("{group}-restore"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false");
    let consumer: BaseConsumer = c.create()?;
    let mut ends: HashMap<i32, i64> = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    let mut total = 0u64;
    for &p in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .map_err(|e| anyhow::anyhow!("cannot read the end of {topic}/{p}: {e}"))?;
        if high > low {
            ends.insert(p, high);
            total += (high - low) as u64;
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
        }
    }
    flow.update_restore(|r| r.total = total);
    if ends.is_empty() {
        return Ok(Read::Complete);
    }
    consumer.assign(&tpl)?;
    let mut chunk = Vec::with_capacity(RESTORE_CHUNK);
    let mut last_log = std::time::Instant::now();
    let mut read = 0u64;
    while !ends.is_empty() {
        if std::time::Instant::now() >= deadline {
            let _ = tx.blocking_send(chunk);
            return Ok(Read::TimedOut);
        }
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
            // Nothing came: a partition whose last offsets hold no record
            // to deliver is done once its position reaches its end.
            if let Ok(positions) = consumer.position() {
                for e in positions.elements() {
                    if let Offset::Offset(at) = e.offset()
                        && ends.get(&e.partition()).is_some_and(|&end| at >= end)
                    {
                        ends.remove(&e.partition());
                    }
                }
            }
            continue;
        };
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "Changelog read error; retrying.");
                continue;
            }
        };
        read += 1;
        if let (Some(key), Some(value)) = (msg.key(), msg.payload()) {
            match Entry::decode(key, value) {
                Ok(entry) => chunk.push(entry),
                Err(e) => {
                    if stats.bad_records.fetch_add(1, Relaxed) < 10 {
                        warn!(partition = msg.partition(), offset = msg.offset(), error = %e, "Skipped a changelog record that cannot be read.");
                    }
                }
            }
        }
        if ends
            .get(&msg.partition())
            .is_some_and(|&end| msg.offset() + 1 >= end)
        {
            ends.remove(&msg.partition());
        }
        if chunk.len() >= RESTORE_CHUNK {
            stats
                .records_restored
                .fetch_add(chunk.len() as u64, Relaxed);
            if tx.blocking_send(std::mem::take(&mut chunk)).is_err() {
                return Ok(Read::Complete);
            }
            flow.update_restore(|r| r.read = read);
            if last_log.elapsed() >= Duration::from_secs(5) {
                last_log = std::time::Instant::now();
                info!(topic, read, total, "Restoring partition state.");
            }
        }
    }
    stats
        .records_restored
        .fetch_add(chunk.len() as u64, Relaxed);
    flow.update_restore(|r| r.read = read);
    let _ = tx.blocking_send(chunk);
    Ok(Read::Complete)
}
