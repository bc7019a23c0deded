//! The ledger topic: read in full at start, then followed live by a thread
//! of its own, and written with every record of a token on one partition.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tracing::warn;

use super::view::{Change, Entry, View, partition_of};
use super::{LedgerError, now_ms};
use crate::topic::{ReadError, read_to_end};

/// How long a write may take to be read back before it counts as failed.
const READ_BACK: Duration = Duration::from_secs(30);

/// A record read by the follower.
#[derive(Debug)]
pub struct Followed {
    partition: i32,
    offset: i64,
    entry: Option<Entry>,
}

pub(super) struct KafkaLog {
    producer: FutureProducer,
    topic: String,
    partitions: i32,
    follow: mpsc::UnboundedReceiver<Followed>,
    /// Tells the follower to start over, with a new client, from these
    /// offsets.
    refollow: std::sync::mpsc::Sender<HashMap<i32, i64>>,
    /// Per partition, the offset after the last record applied.
    applied: HashMap<i32, i64>,
}

impl KafkaLog {
    /// Reads every partition from its start to its end into `view`, then
    /// starts the follower from there.
    pub(super) fn open(
        config: &ClientConfig,
        topic: &str,
        view: &mut View,
    ) -> Result<Self, LedgerError> {
        let err = |source| LedgerError::Kafka {
            topic: topic.to_string(),
            source,
        };
        let consumer_config = follower_config(config);
        let consumer: BaseConsumer = consumer_config.create().map_err(err)?;
        let now = now_ms();
        let applied = read_to_end(&consumer, topic, |msg| {
            if let Some(entry) = Entry::parse(msg.key(), msg.payload()) {
                view.apply(entry, now);
            }
        })
        .map_err(|e| match e {
            ReadError::Kafka(source) => err(source),
            ReadError::NoPartitions => LedgerError::NoTopic {
                topic: topic.to_string(),
            },
        })?;
        // Follow from where the read stopped.
        let mut from = TopicPartitionList::new();
        for (&p, &high) in &applied {
            from.add_partition_offset(topic, p, Offset::Offset(high))
                .map_err(err)?;
        }
        consumer.assign(&from).map_err(err)?;
        let (tx, follow) = mpsc::unbounded_channel();
        let (refollow, refollow_rx) = std::sync::mpsc::channel();
        let name = topic.to_string();
        std::thread::Builder::new()
            .name("ledger-follower".into())
            .spawn(move || {
                follow_topic(consumer, consumer_config, name, tx, refollow_rx);
            })
            .map_err(|_| err(KafkaError::Canceled))?;

        let mut producer_config = config.clone();
        producer_config
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "0")
            .set("socket.nagle.disable", "true")
            // A write that cannot be delivered fails within the read-back
            // time, so the caller can retry or stop, instead of waiting
            // librdkafka's default five minutes.
            .set("message.timeout.ms", READ_BACK.as_millis().to_string());
        let producer: FutureProducer = producer_config.create().map_err(err)?;
        Ok(KafkaLog {
            producer,
            topic: topic.to_string(),
            partitions: applied.len() as i32,
            follow,
            refollow,
            applied,
        })
    }

    /// Writes `entry` to its token's partition; returns where it landed.
    pub(super) async fn produce(&self, entry: &Entry) -> Result<(i32, i64), LedgerError> {
        let (key, json, (a, b)) = match entry {
            Entry::Claim(c) => (
                c.key(),
                serde_json::to_vec(c),
                (c.record.issuer.as_str(), c.record.token_id.as_str()),
            ),
            Entry::State(r) => (
                r.key(),
                serde_json::to_vec(r),
                (r.issuer.as_str(), r.token_id.as_str()),
            ),
            Entry::Alive(h) => (h.key(), serde_json::to_vec(h), ("~alive", h.owner.as_str())),
        };
        let json = json.unwrap_or_default();
        let partition = partition_of(a, b, self.partitions);
        self.producer
            .send(
                FutureRecord::to(&self.topic)
                    .key(&key)
                    .payload(&json)
                    .partition(partition),
                READ_BACK,
            )
            .await
            .map(|d| (d.partition, d.offset))
            .map_err(|(source, _)| LedgerError::Kafka {
                topic: self.topic.clone(),
                source,
            })
    }

    /// Applies followed records until the one at `offset` of `partition`
    /// has been applied.
    pub(super) async fn catch_up(
        &mut self,
        partition: i32,
        offset: i64,
        view: &mut View,
        changes: &mut Vec<Change>,
    ) -> Result<(), LedgerError> {
        let deadline = tokio::time::Instant::now() + READ_BACK;
        while self.applied.get(&partition).copied().unwrap_or(0) <= offset {
            match tokio::time::timeout_at(deadline, self.follow.recv()).await {
                Ok(Some(followed)) => self.apply(followed, view, changes),
                Ok(None) | Err(_) => {
                    // A client that stays stuck after a broker restart
                    // was seen (CI): the next try reads with a new one.
                    warn!(topic = %self.topic, "Nothing read back from the ledger topic in time; the follower starts over with a new client.");
                    let _ = self.refollow.send(self.applied.clone());
                    return Err(LedgerError::ReadBack {
                        topic: self.topic.clone(),
                        seconds: READ_BACK.as_secs(),
                    });
                }
            }
        }
        Ok(())
    }

    pub(super) async fn next(&mut self) -> Option<Followed> {
        self.follow.recv().await
    }

    pub(super) fn apply(&mut self, followed: Followed, view: &mut View, changes: &mut Vec<Change>) {
        // Read twice when the follower starts over: applied already.
        if followed.offset < self.applied.get(&followed.partition).copied().unwrap_or(0) {
            return;
        }
        self.applied.insert(followed.partition, followed.offset + 1);
        if let Some(entry) = followed.entry {
            match view.apply(entry, now_ms()) {
                Change::Nothing => {}
                change => changes.push(change),
            }
        }
    }
}

/// The follower's client settings.
fn follower_config(config: &ClientConfig) -> ClientConfig {
    let mut c = config.clone();
    c.set("enable.auto.commit", "false")
        .set("group.id", "tokenwatch-ledger-follower")
        .set("fetch.wait.max.ms", "10")
        // A revocation waits for its claim to be read back: no Nagle
        // delay on the fetch requests.
        .set("socket.nagle.disable", "true");
    c
}

/// The follower thread: hands every record on until the ledger is dropped;
/// starts over with a new client from the offsets `refollow` sends.
fn follow_topic(
    mut consumer: BaseConsumer,
    config: ClientConfig,
    topic: String,
    tx: mpsc::UnboundedSender<Followed>,
    refollow: std::sync::mpsc::Receiver<HashMap<i32, i64>>,
) {
    let mut errors = 0u64;
    while !tx.is_closed() {
        if let Ok(from) = refollow.try_recv() {
            match new_follower(&config, &topic, &from) {
                Ok(fresh) => consumer = fresh,
                Err(e) => {
                    warn!(%topic, error = %e, "Cannot start the ledger follower over; the old client goes on.");
                }
            }
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(msg)) => {
                let followed = Followed {
                    partition: msg.partition(),
                    offset: msg.offset(),
                    entry: Entry::parse(msg.key(), msg.payload()),
                };
                if tx.send(followed).is_err() {
                    return;
                }
            }
            Some(Err(e)) => {
                errors += 1;
                if errors < 10 || errors.is_multiple_of(100) {
                    warn!(%topic, error = %e, "Error following the ledger topic; the client retries.");
                }
            }
            None => {}
        }
    }
}

/// A new follower client, assigned from `from` (partition → offset).
fn new_follower(
    config: &ClientConfig,
    topic: &str,
    from: &HashMap<i32, i64>,
) -> Result<BaseConsumer, KafkaError> {
    let consumer: BaseConsumer = config.create()?;
    let mut tpl = TopicPartitionList::new();
    for (&p, &offset) in from {
        tpl.add_partition_offset(topic, p, Offset::Offset(offset))?;
    }
    consumer.assign(&tpl)?;
    warn!(%topic, "The ledger follower started over with a new client.");
    Ok(consumer)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log whose producer never connects (nothing is produced here), fed
    /// by hand instead of by a follower thread.
    fn log() -> (
        KafkaLog,
        mpsc::UnboundedSender<Followed>,
        std::sync::mpsc::Receiver<HashMap<i32, i64>>,
    ) {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:1")
            .create()
            .unwrap();
        let (tx, follow) = mpsc::unbounded_channel();
        let (refollow, refollow_rx) = std::sync::mpsc::channel();
        let log = KafkaLog {
            producer,
            topic: "ledger".into(),
            partitions: 2,
            follow,
            refollow,
            applied: HashMap::from([(0, 10), (1, 4)]),
        };
        (log, tx, refollow_rx)
    }

    fn at(partition: i32, offset: i64) -> Followed {
        Followed {
            partition,
            offset,
            entry: None,
        }
    }

    /// Nothing read back in time: the follower is told to start over from
    /// what was applied, and what the new client reads again is skipped.
    #[tokio::test(start_paused = true)]
    async fn a_read_back_timeout_starts_the_follower_over_and_repeats_are_skipped() {
        let (mut log, tx, refollow) = log();
        let (mut view, mut changes) = (View::default(), Vec::new());
        tx.send(at(0, 10)).unwrap();
        log.catch_up(0, 10, &mut view, &mut changes).await.unwrap();
        assert!(refollow.try_recv().is_err(), "read back: nothing to redo");

        let late = log.catch_up(0, 11, &mut view, &mut changes).await;
        assert!(
            matches!(late, Err(LedgerError::ReadBack { .. })),
            "{late:?}"
        );
        assert_eq!(
            refollow.try_recv().unwrap(),
            HashMap::from([(0, 11), (1, 4)])
        );

        // The old client's record and the new client's copy of it.
        tx.send(at(0, 11)).unwrap();
        tx.send(at(0, 10)).unwrap();
        tx.send(at(0, 11)).unwrap();
        tx.send(at(0, 12)).unwrap();
        log.catch_up(0, 12, &mut view, &mut changes).await.unwrap();
        assert_eq!(log.applied[&0], 13);
        log.apply(at(0, 11), &mut view, &mut changes);
        assert_eq!(log.applied[&0], 13, "a repeat does not move it back");
    }
}
