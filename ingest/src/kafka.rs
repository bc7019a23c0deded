//! The Kafka source: a consumer group that decodes records into batches,
//! dead-letters bad records, and stores offsets only after acknowledgement
//! (rust-rdkafka's `examples/at_least_once.rs` pattern).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::FutureExt;
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::TopicPartitionList;
use schemas::decode::Decoder;
use schemas::{DecodeError, Fingerprinter, Origin};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::ack::{Ack, OffsetTracker, TopicPartition};
use crate::batcher::BatchBuilder;
use crate::config::{IngestConfig, StartFrom};
use crate::dead_letter::{self, DeadLetters};
use crate::metrics::{BatchClose, IngestMetrics};
use crate::rebalance::{self, Acks, PartitionHook, SharedAcks, block_on, settle};
use crate::{BuildError, Delivery, RunError};

/// Dead-letter header names.
pub mod header {
    /// Machine-readable reason, one of [`DecodeError::REASONS`](schemas::DecodeError::REASONS).
    pub const REASON: &str = "tokenwatch.reason";
    /// The field at fault, when there is one.
    pub const FIELD: &str = "tokenwatch.field";
    /// Human-readable explanation.
    pub const DETAIL: &str = "tokenwatch.detail";
    pub const SOURCE_TOPIC: &str = "tokenwatch.source.topic";
    pub const SOURCE_PARTITION: &str = "tokenwatch.source.partition";
    pub const SOURCE_OFFSET: &str = "tokenwatch.source.offset";
    /// For one bad record of a CloudTrail file: its index in `Records`. The
    /// payload is that record alone; the file's good records were read.
    pub const SOURCE_ELEMENT: &str = "tokenwatch.source.element";
    /// Size of the original payload when the dead-letter copy is truncated.
    pub const ORIGINAL_BYTES: &str = "tokenwatch.original_bytes";
    /// Present when a raw secret in the record was replaced by its
    /// fingerprint; names the field.
    pub const REDACTED: &str = "tokenwatch.redacted";
}

/// Logs rebalances and commit failures, keeps the assigned-partitions
/// gauge, and runs the [`rebalance`](crate::rebalance) steps: restore on
/// assignment, finish and checkpoint on revoke.
pub struct IngestContext {
    metrics: Arc<IngestMetrics>,
    acks: SharedAcks,
    hook: OnceLock<Arc<dyn PartitionHook>>,
    drain_timeout: Duration,
    /// Set once shutdown has settled: the revoke of the consumer's close
    /// has nothing left to do.
    closed: AtomicBool,
}

impl IngestContext {
    fn hook(&self) -> Option<&dyn PartitionHook> {
        self.hook.get().map(|h| &**h)
    }

    fn revoking(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        let partitions = partitions_of(tpl);
        let deadline = Instant::now() + self.drain_timeout;
        let settled = block_on(async {
            let left = settle(&self.acks, consumer, &self.metrics, self.hook(), deadline).await;
            if let Some(hook) = self.hook() {
                hook.release(partitions).await;
            }
            left
        });
        match settled {
            Some(0) => {}
            Some(left) => {
                warn!(
                    batches = left,
                    "Batches of revoked partitions were not finished in time; their next owner reads them again."
                )
            }
            None => warn!(
                "Cannot finish batches inside the rebalance callback outside a multi-threaded runtime; the next owner reads them again."
            ),
        }
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                warn!(error = %e, "Offset commit on revoke failed; the next owner reads these records again.")
            }
        }
    }

    fn assigned(&self, tpl: &TopicPartitionList) {
        let Some(hook) = self.hook() else {
            return;
        };
        if block_on(hook.restore(partitions_of(tpl))).is_none() {
            warn!(
                "Cannot restore partition state inside the rebalance callback outside a multi-threaded runtime."
            );
        }
    }
}

fn protocol_name(consumer: &BaseConsumer<IngestContext>) -> &'static str {
    match consumer.rebalance_protocol() {
        rdkafka::consumer::RebalanceProtocol::Cooperative => "cooperative",
        rdkafka::consumer::RebalanceProtocol::Eager => "eager",
        rdkafka::consumer::RebalanceProtocol::None => "none",
    }
}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| (Arc::from(e.topic()), e.partition()))
        .collect()
}

impl ClientContext for IngestContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        let lag: i64 = statistics
            .topics
            .values()
            .flat_map(|t| t.partitions.values())
            .filter_map(partition_lag)
            .sum();
        self.metrics
            .consumer_lag
            .store(lag, std::sync::atomic::Ordering::Relaxed);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let since = &self.metrics.group_unsteady_since_ms;
        let before = since.load(std::sync::atomic::Ordering::Relaxed);
        since.store(
            unsteady_since(before, statistics.cgrp.as_ref(), now_ms),
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}

/// Since when the consumer has not been a steady member of its group:
/// `before` (0 for steady) carried on, `now_ms` when it just stopped being
/// one, 0 again once it is. A report without group figures changes nothing.
fn unsteady_since(
    before: i64,
    group: Option<&rdkafka::statistics::ConsumerGroup>,
    now_ms: i64,
) -> i64 {
    match group {
        None => before,
        Some(g) if g.state == "up" && g.join_state == "steady" => 0,
        Some(_) if before > 0 => before,
        Some(_) => now_ms,
    }
}

/// Records of an assigned partition not yet handed to detection: from the
/// last record handed on (or stored, or committed), else from the start of
/// the log, to its end. librdkafka's own `consumer_lag` is unknown (-1)
/// until the group's first commit, so a new group facing a backlog showed
/// no lag at all; and with the state changelog, offsets are stored only
/// at each checkpoint, so counting from them would show the checkpoint
/// interval as lag.
fn partition_lag(p: &rdkafka::statistics::Partition) -> Option<i64> {
    // Only the partitions assigned here, once their end is known.
    if p.partition < 0 || !p.desired || p.hi_offset < 0 {
        return None;
    }
    // Invalid offsets are negative (-1001): the largest valid one wins.
    let done = p
        .app_offset
        .max(p.stored_offset)
        .max(p.committed_offset)
        .max(p.lo_offset)
        .max(0);
    Some((p.hi_offset - done).max(0))
}

impl ConsumerContext for IngestContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                info!(partitions = %describe(tpl), protocol = protocol_name(consumer), "Partitions are being assigned to this instance.")
            }
            Rebalance::Revoke(tpl) => {
                info!(partitions = %describe(tpl), protocol = protocol_name(consumer), "Partitions are being revoked: finishing their batches, checkpointing their state and committing.");
                self.revoking(consumer, tpl);
            }
            Rebalance::Error(e) => warn!(error = %e, "Rebalance failed."),
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let assigned = consumer.assignment().map_or(0, |tpl| tpl.count());
        self.metrics
            .assigned_partitions
            .store(assigned as i64, std::sync::atomic::Ordering::Relaxed);
        if let Rebalance::Assign(tpl) = rebalance
            && tpl.count() > 0
        {
            // Assigned, but nothing is read until this returns: their
            // events wait until their state is restored.
            self.assigned(tpl);
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => debug!(partitions = %describe(offsets), "Committed offsets."),
            // Nothing stored since the last commit: not a failure.
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => warn!(error = %e, "Offset commit failed; it is retried on the next commit."),
        }
    }
}

fn describe(tpl: &TopicPartitionList) -> String {
    let parts: Vec<String> = tpl
        .elements()
        .iter()
        .map(|e| format!("{}/{}", e.topic(), e.partition()))
        .collect();
    parts.join(",")
}

/// The headers of a dead-letter copy of the record at `origin`.
pub fn dead_letter_headers(
    error: DecodeError,
    origin: &Origin,
    original_bytes: Option<usize>,
) -> OwnedHeaders {
    let partition = origin.partition.to_string();
    let offset = origin.offset.to_string();
    let detail = error.to_string();
    let mut h = OwnedHeaders::new_with_capacity(7)
        .insert(Header {
            key: header::REASON,
            value: Some(error.reason()),
        })
        .insert(Header {
            key: header::DETAIL,
            value: Some(detail.as_str()),
        })
        .insert(Header {
            key: header::SOURCE_TOPIC,
            value: Some(&*origin.topic),
        })
        .insert(Header {
            key: header::SOURCE_PARTITION,
            value: Some(partition.as_str()),
        })
        .insert(Header {
            key: header::SOURCE_OFFSET,
            value: Some(offset.as_str()),
        });
    if let Some(field) = error.field() {
        h = h.insert(Header {
            key: header::FIELD,
            value: Some(field),
        });
    }
    if let Some(bytes) = original_bytes {
        h = h.insert(Header {
            key: header::ORIGINAL_BYTES,
            value: Some(bytes.to_string().as_str()),
        });
    }
    h
}

/// A running consumer group member; see the module docs.
pub struct KafkaSource {
    config: IngestConfig,
    consumer: StreamConsumer<IngestContext>,
    ack_tx: mpsc::UnboundedSender<u64>,
    dead_letter: FutureProducer,
    decoder: Decoder,
    metrics: Arc<IngestMetrics>,
}

/// The key for token fingerprints, from the environment variable the config
/// names, or a fixed fallback with a warning.
pub(crate) fn fingerprinter(config: &IngestConfig) -> Fingerprinter {
    match std::env::var(&config.fingerprint_key_env) {
        Ok(key) if !key.is_empty() => Fingerprinter::new(key.as_bytes()),
        _ => {
            warn!(
                variable = %config.fingerprint_key_env,
                "Fingerprint key variable is unset; using the built-in key. Set it so fingerprints are keyed by a secret."
            );
            Fingerprinter::new(b"tokenwatch-default-fingerprint-key")
        }
    }
}

impl KafkaSource {
    /// Validates the config, creates the consumer and the dead-letter
    /// producer, and subscribes to the topics.
    pub fn build(config: &IngestConfig, metrics: Arc<IngestMetrics>) -> Result<Self, BuildError> {
        let problems = config.validate();
        if !problems.is_empty() {
            return Err(BuildError::Config(problems));
        }
        let mut consumer_config = ClientConfig::new();
        for (k, v) in config.common_properties() {
            consumer_config.set(k, v);
        }
        consumer_config
            .set("group.id", &config.group_id)
            .set("enable.auto.offset.store", "false")
            .set("enable.auto.commit", "true")
            .set("enable.partition.eof", "false")
            .set(
                "auto.offset.reset",
                match config.start_from {
                    StartFrom::Earliest => "earliest",
                    StartFrom::Latest => "latest",
                },
            );
        // Low latency matters more than fetch efficiency for detection: a
        // fetch returns as soon as one record is there (or after 10 ms
        // empty), and a lone fetch request is not held back by Nagle.
        // Under load, once the local queue passes `queued.min.messages`,
        // librdkafka postpones a partition's next fetch by
        // `fetch.queue.backoff.ms` (1 s by default): a drain at 130k
        // events/s emptied the queue well within that and sat idle for
        // 0.4 s in every second (`perf`, see the README's Performance).
        for (name, value) in [
            ("fetch.wait.max.ms", "10"),
            ("fetch.min.bytes", "1"),
            ("socket.nagle.disable", "true"),
            ("fetch.queue.backoff.ms", "10"),
        ] {
            if !config.properties.contains_key(name) {
                consumer_config.set(name, value);
            }
        }
        // Feeds the consumer-lag and group gauges; 5 s unless configured
        // (only this client gets it: see `common_properties`).
        consumer_config.set(
            crate::config::STATISTICS_INTERVAL,
            config
                .properties
                .get(crate::config::STATISTICS_INTERVAL)
                .map_or("5000", String::as_str),
        );
        if !config.properties.contains_key("auto.commit.interval.ms") {
            consumer_config.set("auto.commit.interval.ms", "1000");
        }
        consumer_config.set(
            "partition.assignment.strategy",
            config.assignment.strategy(),
        );
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        let consumer: StreamConsumer<IngestContext> = consumer_config
            .create_with_context(IngestContext {
                metrics: metrics.clone(),
                acks: Arc::new(std::sync::Mutex::new(Acks {
                    tracker: OffsetTracker::default(),
                    rx: ack_rx,
                })),
                hook: OnceLock::new(),
                drain_timeout: config.drain_timeout,
                closed: AtomicBool::new(false),
            })
            .map_err(|source| BuildError::Kafka {
                client: "consumer",
                source,
            })?;

        let mut producer_config = ClientConfig::new();
        for (k, v) in config.common_properties() {
            producer_config.set(k, v);
        }
        producer_config
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            // One copy per produce batch: a batch of several could exceed
            // the topic's max.message.bytes although each copy fits it.
            .set("batch.num.messages", "1")
            // One request in flight: see `SERIAL_IDEMPOTENT_WRITES`.
            .set(
                "max.in.flight.requests.per.connection",
                crate::SERIAL_IDEMPOTENT_WRITES,
            );
        producer_config.set(
            "message.max.bytes",
            (config.max_record_bytes + (64 << 10)).to_string(),
        );
        let dead_letter: FutureProducer =
            producer_config
                .create()
                .map_err(|source| BuildError::Kafka {
                    client: "dead-letter producer",
                    source,
                })?;

        let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|source| BuildError::Subscribe {
                topics: config.topics.clone(),
                source,
            })?;
        let decoder = config.decoder(fingerprinter(config));
        Ok(KafkaSource {
            config: config.clone(),
            consumer,
            ack_tx,
            dead_letter,
            decoder,
            metrics,
        })
    }

    /// Keeps per-partition state with `hook`: restored on assignment,
    /// checkpointed and released on revoke and at shutdown.
    pub fn with_partition_hook(self, hook: Arc<dyn PartitionHook>) -> Self {
        let _ = self.consumer.context().hook.set(hook);
        self
    }

    /// Reads until `shutdown` resolves or a fatal error. Each batch goes to
    /// `output`; its offsets are stored once its [`Ack`] is done. On
    /// shutdown, the open batch is flushed, in-flight batches get
    /// `drain_timeout` to be acknowledged, and stored offsets are committed.
    pub async fn run(
        self,
        output: mpsc::Sender<Delivery>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), RunError> {
        let span =
            info_span!("ingest", group = %self.config.group_id, topics = ?self.config.topics);
        self.run_inner(output, shutdown).instrument(span).await
    }

    async fn run_inner(
        self,
        output: mpsc::Sender<Delivery>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), RunError> {
        tokio::pin!(shutdown);
        let context = self.consumer.context();
        let limit = tokio::select! {
            biased;
            () = &mut shutdown => {
                info!("Ingest stopped before it started.");
                return Ok(());
            }
            limit = dead_letter::payload_limit(&self.config) => limit,
        };
        let mut state = Loop {
            source: &self,
            builder: BatchBuilder::new(self.decoder.clone(), self.config.batch_max_records)
                .with_max_bytes(self.config.batch_max_bytes),
            acks: Arc::clone(&context.acks),
            dead_letters: DeadLetters::new(self.decoder.redactor().clone(), limit),
            pending_dead_letters: Vec::new(),
            ack_tx: self.ack_tx.clone(),
            next_seq: 0,
            topics: Vec::new(),
        };
        info!(dead_letter_payload_limit = limit, "Ingest started.");
        // One timer, re-armed when a batch opens, instead of a new one per
        // iteration.
        let linger = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(linger);
        let mut lingering = false;
        // A fatal error stops reading, but the batches already handed on are
        // still drained and committed below: stopping is graceful.
        let fatal: Option<RunError> = loop {
            let step = tokio::select! {
                biased;
                () = &mut shutdown => break None,
                // Detection stopped: nothing read from now on could be
                // acknowledged.
                () = output.closed() => break Some(RunError::DownstreamClosed),
                Some(seq) = rebalance::next_ack(&context.acks) => {
                    state.acknowledge(seq);
                    Ok(())
                }
                () = &mut linger, if lingering => {
                    lingering = false;
                    self.metrics.closed(BatchClose::Linger);
                    state.flush(&output).await
                }
                msg = self.consumer.recv() => {
                    if !lingering {
                        linger.as_mut().reset(Instant::now() + self.config.batch_linger);
                        lingering = true;
                    }
                    match state.receive(msg, &output).await {
                        Ok(true) => {
                            lingering = false;
                            Ok(())
                        }
                        Ok(false) => Ok(()),
                        Err(e) => Err(e),
                    }
                }
            };
            if let Err(e) = step {
                break Some(e);
            }
        };

        let in_flight = rebalance::lock(&context.acks).tracker.in_flight();
        if let Some(e) = &fatal {
            error!(error = %e, in_flight, "Ingest is stopping on a fatal error: the open batch is not acknowledged, batches already handed on are drained and committed.");
        } else {
            info!(
                in_flight,
                "Shutting down ingest: flushing and draining in-flight batches."
            );
            state.flush(&output).await?;
        }
        // Downstream still runs: the last checkpoint covers every batch
        // handed on, so a restart (or the partitions' next owner) loses no
        // learning.
        let drain_deadline = Instant::now() + self.config.drain_timeout;
        let left = settle(
            &context.acks,
            &self.consumer,
            &self.metrics,
            context.hook(),
            drain_deadline,
        )
        .await;
        context.closed.store(true, Ordering::Release);
        drop(output);
        if left > 0 {
            warn!(
                batches = left,
                "Batches were not acknowledged in time; they will be read again."
            );
        }
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                warn!(error = %e, "Final offset commit failed; records since the last commit will be read again.")
            }
        }
        info!("Ingest stopped.");
        fatal.map_or(Ok(()), Err)
    }

    pub fn metrics(&self) -> &Arc<IngestMetrics> {
        &self.metrics
    }
}

/// The mutable state of [`KafkaSource::run`].
struct Loop<'a> {
    source: &'a KafkaSource,
    builder: BatchBuilder,
    acks: SharedAcks,
    dead_letters: DeadLetters,
    pending_dead_letters: Vec<(DeliveryFuture, Origin)>,
    ack_tx: mpsc::UnboundedSender<u64>,
    next_seq: u64,
    /// Topic names, shared by every origin instead of one string per record.
    topics: Vec<Arc<str>>,
}

impl Loop<'_> {
    /// Takes one received message, and whatever else is already fetched,
    /// into the open batch; `true` when that filled and flushed it.
    /// Consumer errors that are not fatal are logged, counted and passed
    /// over: librdkafka retries them itself.
    ///
    /// Adaptive batching: once nothing more is fetched, the batch is handed
    /// on at once; it only stays open (up to `batch_linger`) while records
    /// keep coming, so a lone event never waits for the linger.
    async fn receive(
        &mut self,
        first: KafkaResult<BorrowedMessage<'_>>,
        output: &mpsc::Sender<Delivery>,
    ) -> Result<bool, RunError> {
        let mut next = Some(first);
        while let Some(msg) = next {
            match msg {
                Ok(msg) => self.push(&msg).await?,
                Err(e) => {
                    if let Some(fatal) = self.consumer_error(e) {
                        return Err(RunError::Consume(fatal));
                    }
                }
            }
            if self.builder.is_full() {
                // Counted before the batch is handed on, so whoever gets it
                // sees why it closed.
                self.source.metrics.closed(BatchClose::Full);
                self.flush(output).await?;
                return Ok(true);
            }
            // Take whatever else is already fetched without going back
            // through select!: the common case under load.
            next = self.source.consumer.recv().now_or_never();
        }
        if self.builder.is_empty() {
            return Ok(false);
        }
        self.source.metrics.closed(BatchClose::Idle);
        self.flush(output).await?;
        Ok(true)
    }

    /// Counts and logs a consumer error; returns it if it is fatal.
    fn consumer_error(&self, e: KafkaError) -> Option<KafkaError> {
        if matches!(e, KafkaError::MessageConsumptionFatal(_)) {
            return Some(e);
        }
        let n = self
            .source
            .metrics
            .consumer_errors
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Every error at first, then one in a hundred: a broker outage
        // must not flood the log.
        if n < 10 || n.is_multiple_of(100) {
            warn!(error = %e, total = n + 1, "Kafka consumer error; the client retries it and ingest goes on.");
        }
        None
    }

    async fn push(&mut self, msg: &BorrowedMessage<'_>) -> Result<(), RunError> {
        let topic = match self.topics.iter().find(|t| ***t == *msg.topic()) {
            Some(t) => Arc::clone(t),
            None => {
                let t: Arc<str> = Arc::from(msg.topic());
                self.topics.push(Arc::clone(&t));
                t
            }
        };
        let origin = Origin {
            topic,
            partition: msg.partition(),
            offset: msg.offset(),
            kafka_ts_ms: msg.timestamp().to_millis(),
        };
        let payload = msg.payload();
        match self.builder.push(payload, origin.clone()) {
            Ok(rejected) => {
                for r in rejected {
                    self.dead_letter(msg, &r.element, r.error, origin.clone(), Some(r.index))
                        .await?;
                }
            }
            Err(error) => {
                self.dead_letter(msg, payload.unwrap_or_default(), error, origin, None)
                    .await?
            }
        }
        Ok(())
    }

    /// Queues a dead-letter copy of a bad record, or of one bad `element`
    /// of it; [`flush`](Self::flush) waits for its delivery before the
    /// batch can be acknowledged.
    async fn dead_letter(
        &mut self,
        msg: &BorrowedMessage<'_>,
        payload: &[u8],
        error: DecodeError,
        origin: Origin,
        element: Option<usize>,
    ) -> Result<(), RunError> {
        let copy = self
            .dead_letters
            .copy(payload, msg.key(), error, &origin, element);
        let topic = self.source.config.dead_letter_topic.as_str();
        let mut record = FutureRecord::<str, [u8]>::to(topic)
            .payload(&copy.payload)
            .headers(copy.headers);
        if let Some(key) = &copy.key {
            record = record.key(key.as_str());
        }
        loop {
            match self.source.dead_letter.send_result(record) {
                Ok(delivery) => {
                    self.pending_dead_letters.push((delivery, origin));
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    self.await_dead_letters().await?;
                    if self.pending_dead_letters.is_empty() {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                Err((source, _)) => return Err(self.dead_letter_error(&origin, source)),
            }
        }
    }

    fn dead_letter_error(&self, origin: &Origin, source: KafkaError) -> RunError {
        RunError::DeadLetter {
            dlq: self.source.config.dead_letter_topic.clone(),
            topic: origin.topic.to_string(),
            partition: origin.partition,
            offset: origin.offset,
            source,
        }
    }

    async fn await_dead_letters(&mut self) -> Result<(), RunError> {
        for (delivery, origin) in std::mem::take(&mut self.pending_dead_letters) {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((source, _))) => return Err(self.dead_letter_error(&origin, source)),
                Err(_) => return Err(self.dead_letter_error(&origin, KafkaError::Canceled)),
            }
        }
        Ok(())
    }

    /// Hands the open batch downstream once its dead letters are durable.
    async fn flush(&mut self, output: &mpsc::Sender<Delivery>) -> Result<(), RunError> {
        if self.builder.is_empty() {
            return Ok(());
        }
        self.await_dead_letters().await?;
        let finished = self.builder.finish();
        let source = self.source;
        source.metrics.add(&finished.tally);
        let seq = self.next_seq;
        self.next_seq += 1;
        rebalance::lock(&self.acks)
            .tracker
            .register(seq, finished.last_offsets);
        if finished.batch.is_empty() {
            // Only bad records, all dead-lettered: nothing to hand on.
            self.acknowledge(seq);
            return Ok(());
        }
        source
            .metrics
            .batches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let delivery = Delivery {
            batch: finished.batch,
            secrets: finished.secrets,
            ack: Ack::new(self.ack_tx.clone(), seq),
        };
        if output.send(delivery).await.is_err() {
            // Detection stopped: reading on would only pile up batches
            // that are never acknowledged.
            return Err(RunError::DownstreamClosed);
        }
        Ok(())
    }

    fn acknowledge(&mut self, seq: u64) {
        rebalance::acknowledge(&self.acks, &self.source.consumer, &self.source.metrics, seq);
    }
}

#[cfg(test)]
mod tests {
    use super::unsteady_since;
    use rdkafka::statistics::ConsumerGroup;

    fn group(state: &str, join_state: &str) -> ConsumerGroup {
        ConsumerGroup {
            state: state.into(),
            join_state: join_state.into(),
            ..ConsumerGroup::default()
        }
    }

    #[test]
    fn the_group_is_unsteady_from_the_first_report_saying_so_until_it_is_steady() {
        let joining = group("up", "wait-join");
        let no_coordinator = group("wait-coord", "init");
        let steady = group("up", "steady");
        assert_eq!(unsteady_since(0, Some(&steady), 1_000), 0);
        assert_eq!(unsteady_since(0, Some(&joining), 2_000), 2_000);
        assert_eq!(unsteady_since(2_000, Some(&no_coordinator), 7_000), 2_000);
        assert_eq!(
            unsteady_since(2_000, None, 12_000),
            2_000,
            "no figures: unchanged"
        );
        assert_eq!(unsteady_since(2_000, Some(&steady), 17_000), 0);
    }
}
