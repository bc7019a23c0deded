//! Ingest: reads API-call records from Kafka (or files, for replay), decodes
//! them into [`EventBatch`](schemas::EventBatch)es, dead-letters what cannot
//! be decoded, and stores a Kafka offset only after downstream has
//! acknowledged the batch that holds it (at-least-once).
//!
//! # Layout
//!
//! - [`config`]: [`IngestConfig`], the `[ingest]` config section, and its
//!   validation.
//! - [`batcher`]: [`BatchBuilder`], decoding records into a batch until it
//!   is full or its linger expires; shared by both sources.
//! - [`ack`]: [`Ack`] handles and the [`OffsetTracker`] that turns
//!   out-of-order batch acknowledgements into contiguous offsets to store.
//! - [`kafka`]: [`KafkaSource`], the consumer group, rebalance logging and
//!   the dead-letter producer.
//! - [`rebalance`]: what a rebalance does to per-partition state (restore
//!   on assignment; finish, checkpoint and commit on revoke).
//! - [`dead_letter`]: the redacted, size-bounded dead-letter copy of a
//!   record (the policy is in its docs).
//! - [`file`]: [`FileSource`], NDJSON from files or stdin.
//! - [`metadata`]: [`MetadataSource`], following the compacted
//!   token-metadata topic.
//! - [`metrics`]: [`IngestMetrics`], counters updated once per batch.
//! - [`properties`]: checking librdkafka properties (names, values,
//!   secrets, TLS files) before any client connects.

pub mod ack;
pub mod batcher;
pub mod config;
pub mod dead_letter;
pub mod file;
pub mod kafka;
pub mod metadata;
pub mod metrics;
pub mod properties;
pub mod rebalance;

pub use ack::{Ack, OffsetTracker};
pub use batcher::BatchBuilder;
pub use config::{Assignment, IngestConfig, StartFrom};
pub use file::FileSource;
pub use kafka::{KafkaSource, dead_letter_headers};
pub use metadata::{MetadataProgress, MetadataSource, MetadataUpdate};
pub use metrics::{BatchClose, IngestMetrics};
pub use rebalance::PartitionHook;

use schemas::{EventBatch, Secret};

/// A decoded batch on its way downstream, with the handle that acknowledges
/// it. Call [`Ack::done`] once the batch's decisions have been handed on;
/// dropping the handle instead leaves its offsets unstored, so the records
/// are read again after a restart.
#[derive(Debug)]
pub struct Delivery {
    pub batch: EventBatch,
    /// Raw secrets carried by some records, by row. Only the revoker's
    /// in-memory handle store may keep them.
    pub secrets: Vec<(usize, Secret)>,
    pub ack: Ack,
}

/// Errors building a source from its config.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("invalid ingest config: {}", .0.join("; "))]
    Config(Vec<String>),
    #[error("cannot create the Kafka {client}: {source}")]
    Kafka {
        client: &'static str,
        source: rdkafka::error::KafkaError,
    },
    #[error("cannot subscribe to topics {topics:?}: {source}")]
    Subscribe {
        topics: Vec<String>,
        source: rdkafka::error::KafkaError,
    },
    #[error("cannot open {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
}

/// Errors that stop a running source.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(
        "cannot write a record from {topic}/{partition}@{offset} to the dead-letter topic {dlq}: {source}"
    )]
    DeadLetter {
        dlq: String,
        topic: String,
        partition: i32,
        offset: i64,
        source: rdkafka::error::KafkaError,
    },
    #[error("Kafka consumer failed: {0}")]
    Consume(rdkafka::error::KafkaError),
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the stage after ingest stopped; the batch in hand stays unacknowledged")]
    DownstreamClosed,
}

/// `max.in.flight.requests.per.connection` for tokenwatch's idempotent
/// producers whose topic can be brand new (dead letters, which the broker
/// may auto-create on first write; the repartition topic and the state
/// changelog, created at start). With several requests in flight, the
/// first to a partition the broker has not finished creating fails and is
/// retried, a later one is appended first, and the broker (no producer
/// state yet) takes it as the first; the retried records are then never
/// written, yet librdkafka reports them delivered (KAFKA-15591; the
/// broker's fix is newer than the Kafka 4.1 we test on). CI lost a
/// dead-letter copy that way. One request in
/// flight keeps the order, so a retry comes before anything after it.
pub const SERIAL_IDEMPOTENT_WRITES: &str = "1";
