//! The token-metadata source: reads a compacted topic (key =
//! `issuer/token_id`, value = a JSON [`TokenMetadata`], null = forget) from
//! the beginning of every partition, and keeps following it. Every instance
//! reads all of it, so there is no consumer group to share with.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use schemas::TokenMetadata;
use tokio::sync::mpsc;
use tracing::{Instrument, info, info_span, warn};

use crate::config::IngestConfig;
use crate::{BuildError, RunError};

/// A change to one token's metadata.
#[derive(Debug, Clone, PartialEq)]
pub enum MetadataUpdate {
    Upsert(TokenMetadata),
    Remove {
        issuer: String,
        token_id: String,
    },
    /// Every record on the topic when the source started has been sent
    /// before this (sent once; at once for an empty topic).
    CaughtUp,
}

/// Progress of the metadata source, for readiness and metrics.
#[derive(Debug, Default)]
pub struct MetadataProgress {
    /// Set once every partition has been read up to where it stood at start.
    pub caught_up: AtomicBool,
    pub applied: AtomicU64,
    /// Records that are not valid metadata (skipped, logged with position).
    pub invalid: AtomicU64,
}

pub struct MetadataSource {
    topic: String,
    consumer: StreamConsumer,
    /// Per partition, the offset to reach before the source is caught up.
    targets: Vec<(i32, i64)>,
    progress: Arc<MetadataProgress>,
}

impl MetadataSource {
    /// Assigns every partition of `topic` from its beginning.
    pub fn build(
        config: &IngestConfig,
        topic: &str,
        progress: Arc<MetadataProgress>,
    ) -> Result<Self, BuildError> {
        let mut c = ClientConfig::new();
        for (k, v) in config.common_properties() {
            c.set(k, v);
        }
        c.set("group.id", format!("{}-metadata", config.group_id))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // The end of a partition is what catch-up waits for: a topic
            // written in transactions ends in a commit marker, which takes
            // an offset but is never delivered as a record.
            .set("enable.partition.eof", "true");
        let consumer: StreamConsumer = c.create().map_err(|source| BuildError::Kafka {
            client: "metadata consumer",
            source,
        })?;
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(|source| BuildError::Kafka {
                client: "metadata consumer",
                source,
            })?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            return Err(BuildError::Subscribe {
                topics: vec![topic.to_string()],
                source: rdkafka::error::KafkaError::MetadataFetch(
                    rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
                ),
            });
        }
        let mut tpl = TopicPartitionList::new();
        let mut targets = Vec::new();
        for p in partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .map_err(|source| BuildError::Kafka {
                    client: "metadata consumer",
                    source,
                })?;
            let (low, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .map_err(|source| BuildError::Kafka {
                    client: "metadata consumer",
                    source,
                })?;
            if high > low {
                targets.push((p, high));
            }
        }
        consumer
            .assign(&tpl)
            .map_err(|source| BuildError::Subscribe {
                topics: vec![topic.to_string()],
                source,
            })?;
        if targets.is_empty() {
            progress.caught_up.store(true, Relaxed);
        }
        Ok(MetadataSource {
            topic: topic.to_string(),
            consumer,
            targets,
            progress,
        })
    }

    /// Sends every update to `output` until it closes.
    pub async fn run(mut self, output: mpsc::Sender<MetadataUpdate>) -> Result<(), RunError> {
        let span = info_span!("metadata", topic = %self.topic);
        async move {
            if self.targets.is_empty() && output.send(MetadataUpdate::CaughtUp).await.is_err() {
                return Ok(());
            }
            loop {
                let msg = match self.consumer.recv().await {
                    Ok(msg) => msg,
                    Err(KafkaError::PartitionEOF(partition)) => {
                        if self.reached(partition, i64::MAX, &output).await.is_err() {
                            return Ok(());
                        }
                        continue;
                    }
                    Err(e @ KafkaError::MessageConsumptionFatal(_)) => return Err(RunError::Consume(e)),
                    Err(e) => {
                        warn!(error = %e, "Error reading the token-metadata topic; the client retries.");
                        continue;
                    }
                };
                let (partition, offset) = (msg.partition(), msg.offset());
                match parse(msg.key(), msg.payload()) {
                    Ok(update) => {
                        self.progress.applied.fetch_add(1, Relaxed);
                        if output.send(update).await.is_err() {
                            return Ok(());
                        }
                    }
                    Err(reason) => {
                        self.progress.invalid.fetch_add(1, Relaxed);
                        warn!(
                            partition,
                            offset, reason, "Skipped a token-metadata record that is not valid."
                        );
                    }
                }
                if self.reached(partition, offset + 1, &output).await.is_err() {
                    return Ok(());
                }
            }
        }
        .instrument(span)
        .await
    }
}

impl MetadataSource {
    /// Notes that `partition` was read up to `next` (its end, for
    /// `i64::MAX`), and sends [`MetadataUpdate::CaughtUp`] once every
    /// partition has reached where it stood at start. Err: output closed.
    async fn reached(
        &mut self,
        partition: i32,
        next: i64,
        output: &mpsc::Sender<MetadataUpdate>,
    ) -> Result<(), ()> {
        if self.targets.is_empty() {
            return Ok(());
        }
        self.targets
            .retain(|&(p, high)| !(p == partition && next >= high));
        if self.targets.is_empty() {
            self.progress.caught_up.store(true, Relaxed);
            info!(
                applied = self.progress.applied.load(Relaxed),
                "Token metadata caught up."
            );
            output
                .send(MetadataUpdate::CaughtUp)
                .await
                .map_err(|_| ())?;
        }
        Ok(())
    }
}

/// A record → an update. The key names the token; a value must agree.
pub fn parse(key: Option<&[u8]>, payload: Option<&[u8]>) -> Result<MetadataUpdate, &'static str> {
    let key = key
        .and_then(|k| std::str::from_utf8(k).ok())
        .ok_or("key is missing or not UTF-8")?;
    let (issuer, token_id) = key
        .split_once('/')
        .filter(|(i, t)| !i.is_empty() && !t.is_empty())
        .ok_or("key is not issuer/token_id")?;
    let Some(payload) = payload else {
        return Ok(MetadataUpdate::Remove {
            issuer: issuer.to_string(),
            token_id: token_id.to_string(),
        });
    };
    let m: TokenMetadata =
        serde_json::from_slice(payload).map_err(|_| "value is not token metadata JSON")?;
    if m.issuer != issuer || m.token_id != token_id {
        return Err("value names another token than the key");
    }
    Ok(MetadataUpdate::Upsert(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_upserts_tombstones_and_rejects_mismatches() {
        let v = br#"{"issuer":"gh","token_id":"t/1","scopes":["repo.*"]}"#;
        match parse(Some(b"gh/t/1"), Some(v)) {
            Ok(MetadataUpdate::Upsert(m)) => assert_eq!(m.scopes, Some(vec!["repo.*".to_string()])),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse(Some(b"gh/t/1"), None),
            Ok(MetadataUpdate::Remove {
                issuer: "gh".into(),
                token_id: "t/1".into()
            })
        );
        assert_eq!(
            parse(Some(b"okta/t/1"), Some(v)),
            Err("value names another token than the key")
        );
        assert_eq!(parse(None, Some(v)), Err("key is missing or not UTF-8"));
        assert_eq!(
            parse(Some(b"noslash"), None),
            Err("key is not issuer/token_id")
        );
        assert_eq!(
            parse(Some(b"gh/t"), Some(b"{")),
            Err("value is not token metadata JSON")
        );
    }
}
