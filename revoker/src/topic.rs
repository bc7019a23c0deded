//! Reading a compacted topic in full, as the ledger and the webhook outbox
//! both do at start.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};

/// Why a topic could not be read to its end.
#[derive(Debug)]
pub(crate) enum ReadError {
    Kafka(KafkaError),
    /// The topic does not exist, or has no partitions.
    NoPartitions,
}

impl From<KafkaError> for ReadError {
    fn from(e: KafkaError) -> Self {
        ReadError::Kafka(e)
    }
}

/// Reads every partition of `topic` from its start to where it ends now,
/// handing each record to `apply` in partition order. Returns, per
/// partition, the offset just past its end. Blocks while it reads.
pub(crate) fn read_to_end(
    consumer: &BaseConsumer,
    topic: &str,
    mut apply: impl FnMut(&BorrowedMessage<'_>),
) -> Result<HashMap<i32, i64>, ReadError> {
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(ReadError::NoPartitions);
    }
    let mut tpl = TopicPartitionList::new();
    let mut remaining = HashMap::new();
    let mut ends = HashMap::new();
    for &p in &partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        ends.insert(p, high);
        if high > low {
            remaining.insert(p, high);
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
        }
    }
    if remaining.is_empty() {
        return Ok(ends);
    }
    consumer.assign(&tpl)?;
    while !remaining.is_empty() {
        let msg = consumer
            .poll(Duration::from_secs(10))
            .ok_or(KafkaError::Canceled)??;
        apply(&msg);
        if remaining
            .get(&msg.partition())
            .is_some_and(|&high| msg.offset() + 1 >= high)
        {
            remaining.remove(&msg.partition());
        }
    }
    Ok(ends)
}
