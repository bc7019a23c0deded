//! The repartition step, for sources not keyed by token (CloudTrail, Okta
//! and GitHub exports usually are not): a first hop reads the source
//! topics, decodes and dead-letters as ever, and writes each event as a
//! canonical record keyed `issuer/token_id` to an internal topic; detection
//! reads that topic, where each token's events share a partition.
//!
//! ```text
//! source topics ──> KafkaSource (group <id>-repartition) ──> forward ──> <id>-repartition ──> KafkaSource (group <id>) ──> detect
//!                      └─ dead letters                         (keyed issuer/token_id, acks=all)
//! ```
//!
//! At-least-once across both hops: a source batch is acknowledged (its
//! offsets stored) only once every one of its events is in the internal
//! topic, and the internal topic's offsets only once detection is done
//! with them. Raw secrets a source record carried never reach the internal
//! topic (nothing stores a raw secret): revocations that need the raw token
//! cannot come from a repartitioned source.

use std::time::Duration;

use ingest::Delivery;
use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use tokio::sync::mpsc;

use super::produce::{acknowledged, queue, retried};

/// How long a batch's events are written again before the step stops (its
/// batch stays unacknowledged and is read again after a restart).
const WRITE_RETRY_FOR: Duration = Duration::from_secs(120);

pub struct Forwarder {
    producer: FutureProducer,
    topic: String,
}

impl Forwarder {
    pub fn build(kafka: &ClientConfig, topic: String) -> anyhow::Result<Self> {
        let c = super::produce::producer_config(kafka, "5");
        Ok(Forwarder {
            producer: c.create()?,
            topic,
        })
    }

    /// Writes every delivery's events, then acknowledges it, until `input`
    /// ends. An error stops it (the delivery in hand stays unacknowledged).
    pub async fn run(self, mut input: mpsc::Receiver<Delivery>) -> anyhow::Result<()> {
        while let Some(delivery) = input.recv().await {
            retried("Repartition write", WRITE_RETRY_FOR, || {
                self.write(&delivery)
            })
            .await
            .map_err(|e| {
                anyhow::anyhow!("cannot write to the repartition topic {}: {e}", self.topic)
            })?;
            delivery.ack.done();
        }
        Ok(())
    }

    async fn write(&self, delivery: &Delivery) -> Result<(), KafkaError> {
        let mut pending: Vec<DeliveryFuture> = Vec::with_capacity(delivery.batch.len());
        for (event, origin) in delivery.batch.events.iter().zip(&delivery.batch.origins) {
            let key = format!("{}/{}", event.issuer, event.token_id);
            let payload = event.to_json();
            let mut record = FutureRecord::<str, str>::to(&self.topic)
                .key(&key)
                .payload(&payload);
            // The source's timestamp travels on: lateness is judged by it.
            if let Some(ts) = origin.kafka_ts_ms {
                record = record.timestamp(ts);
            }
            queue(&self.producer, &mut pending, record).await?;
        }
        acknowledged(pending).await
    }
}
