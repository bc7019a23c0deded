//! The webhook outbox: every delivery is written to a compacted topic
//! before it is attempted, and deleted (a tombstone) once it is delivered
//! or dead-lettered. At start, whatever is still in the outbox is
//! delivered again: a crash or a shutdown with deliveries in their retry
//! schedule loses no alert. The message id is kept, so a receiver that
//! deduplicates by `webhook-id` sees a repeat at most.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::BaseConsumer;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use schemas::Action;
use serde::{Deserialize, Serialize};

use super::Outgoing;
use crate::topic::{ReadError, read_to_end};

/// One delivery waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub id: String,
    pub kind: String,
    pub action: Action,
    /// The endpoint it is for.
    pub url: String,
    /// The message body (JSON text).
    pub body: String,
}

impl Entry {
    pub fn new(msg: &Outgoing, url: &str) -> Self {
        Entry {
            id: msg.id.clone(),
            kind: msg.kind.to_string(),
            action: msg.action,
            url: url.to_string(),
            body: String::from_utf8_lossy(&msg.body).into_owned(),
        }
    }

    pub fn key(&self) -> String {
        format!("{}|{}", self.id, self.url)
    }

    /// The message again, for delivery after a restart.
    pub fn outgoing(&self) -> Outgoing {
        Outgoing {
            id: self.id.clone(),
            kind: kind_name(&self.kind),
            action: self.action,
            body: Arc::new(self.body.clone().into_bytes()),
        }
    }
}

/// Message kinds are static strings; an unknown one (from a newer
/// version) is sent as a system message.
fn kind_name(kind: &str) -> &'static str {
    match kind {
        "tokenwatch.decision" => "tokenwatch.decision",
        "tokenwatch.revocation" => "tokenwatch.revocation",
        _ => "tokenwatch.system",
    }
}

/// Errors using the outbox topic.
#[derive(Debug, thiserror::Error)]
#[error("webhook outbox topic {topic}: {reason}")]
pub struct OutboxError {
    pub topic: String,
    pub reason: String,
}

/// The outbox topic.
#[derive(Clone)]
pub struct Outbox {
    producer: FutureProducer,
    topic: String,
}

impl Outbox {
    pub fn new(producer: FutureProducer, topic: String) -> Self {
        Outbox { producer, topic }
    }

    fn err(&self, reason: impl std::fmt::Display) -> OutboxError {
        OutboxError {
            topic: self.topic.clone(),
            reason: reason.to_string(),
        }
    }

    /// Writes `entry` and waits for the broker's acknowledgement.
    pub async fn put(&self, entry: &Entry) -> Result<(), OutboxError> {
        let json = serde_json::to_vec(entry).map_err(|e| self.err(e))?;
        let key = entry.key();
        self.producer
            .send(
                FutureRecord::to(&self.topic).key(&key).payload(&json),
                Duration::from_secs(30),
            )
            .await
            .map(|_| ())
            .map_err(|(e, _)| self.err(e))
    }

    /// Deletes `entry` (a tombstone): it was delivered or dead-lettered.
    pub async fn done(&self, entry: &Entry) -> Result<(), OutboxError> {
        let key = entry.key();
        self.producer
            .send(
                FutureRecord::<str, [u8]>::to(&self.topic).key(&key),
                Duration::from_secs(30),
            )
            .await
            .map(|_| ())
            .map_err(|(e, _)| self.err(e))
    }

    /// Every entry still waiting: the whole topic read, tombstones applied.
    /// Blocks while it reads.
    pub fn pending(config: &ClientConfig, topic: &str) -> Result<Vec<Entry>, OutboxError> {
        let err = |reason: String| OutboxError {
            topic: topic.to_string(),
            reason,
        };
        let mut consumer_config = config.clone();
        consumer_config
            .set("enable.auto.commit", "false")
            .set("group.id", "tokenwatch-webhook-outbox");
        let consumer: BaseConsumer = consumer_config.create().map_err(|e| err(e.to_string()))?;
        let mut entries: HashMap<String, Entry> = HashMap::new();
        read_to_end(&consumer, topic, |msg| {
            let key = msg
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .unwrap_or_default();
            match msg
                .payload()
                .and_then(|p| serde_json::from_slice::<Entry>(p).ok())
            {
                Some(entry) => {
                    entries.insert(key, entry);
                }
                None => {
                    entries.remove(&key);
                }
            }
        })
        .map_err(|e| match e {
            ReadError::Kafka(e) => err(e.to_string()),
            ReadError::NoPartitions => {
                err("it has no partitions (create it, compacted, before starting)".into())
            }
        })?;
        Ok(entries.into_values().collect())
    }
}
