//! The revocation ledger: one record per (issuer, token_id) on a compacted
//! topic, written *before* the issuer is called, and the in-memory view
//! that makes revocation idempotent and backs the gateway denylist. At
//! startup the view is rebuilt by reading the whole topic.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

/// Where a revocation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Decided; the issuer has not confirmed yet (in flight, retrying, or
    /// accepted but unconfirmed).
    Pending,
    /// The issuer revokes by the raw secret (`oauth2`, `github`) and none
    /// is held (after a restart, or for a manual revocation): it waits for
    /// an event that brings the secret. Still on the denylist.
    AwaitingSecret,
    Revoked,
    /// Retries exhausted or refused for good; a loud alert went out.
    Failed,
}

/// One ledger record. Never holds a secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub issuer: String,
    pub token_id: String,
    /// Who the token belongs to, as the events said (AWS IAM needs the
    /// user name).
    #[serde(default)]
    pub principal: Option<String>,
    pub state: State,
    pub decision_id: String,
    pub reason: String,
    /// Issuer calls so far.
    pub attempts: u32,
    /// The issuer accepted the request without confirming it (202).
    #[serde(default)]
    pub accepted: bool,
    pub event_ts_ms: i64,
    #[serde(default)]
    pub kafka_ts_ms: Option<i64>,
    pub decided_at_ms: i64,
    #[serde(default)]
    pub answered_at_ms: Option<i64>,
    #[serde(default)]
    pub last_error: Option<String>,
    /// Requested by a person (CLI, admin API), not by a detector.
    #[serde(default)]
    pub manual: bool,
}

impl Record {
    pub fn key(&self) -> String {
        format!("{}/{}", self.issuer, self.token_id)
    }
}

/// Errors reaching the ledger topic.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("cannot use the ledger topic {topic}: {source}")]
    Kafka {
        topic: String,
        source: rdkafka::error::KafkaError,
    },
    #[error("ledger topic {topic} has no partitions (create it, compacted, before starting)")]
    NoTopic { topic: String },
}

/// Where records are persisted.
enum Sink {
    Kafka {
        producer: FutureProducer,
        topic: String,
    },
    /// For tests and tools that run without Kafka; shared so a test can
    /// read what was written while the service runs.
    Memory(std::sync::Arc<std::sync::Mutex<Vec<Record>>>),
}

pub struct Ledger {
    entries: HashMap<(String, String), Record>,
    sink: Sink,
}

/// What [`Ledger::begin`] found.
#[derive(Debug, PartialEq)]
pub enum Begin {
    /// Recorded as pending: go and call the issuer.
    New,
    /// Already in the ledger: do not call the issuer again.
    Known(State),
}

impl Ledger {
    /// A ledger that keeps records in memory only.
    pub fn in_memory() -> Self {
        Ledger {
            entries: HashMap::new(),
            sink: Sink::Memory(Default::default()),
        }
    }

    /// Everything written so far, for in-memory ledgers (tests).
    pub fn log(&self) -> std::sync::Arc<std::sync::Mutex<Vec<Record>>> {
        match &self.sink {
            Sink::Memory(log) => log.clone(),
            Sink::Kafka { .. } => Default::default(),
        }
    }

    /// Reads the whole topic (every partition from its start to where it
    /// stands now) and keeps the last record per token.
    pub fn rebuild(config: &ClientConfig, topic: &str) -> Result<Self, LedgerError> {
        let err = |source| LedgerError::Kafka {
            topic: topic.to_string(),
            source,
        };
        let mut consumer_config = config.clone();
        consumer_config
            .set("enable.auto.commit", "false")
            .set("group.id", "tokenwatch-ledger-rebuild");
        let consumer: BaseConsumer = consumer_config.create().map_err(err)?;
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(err)?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            return Err(LedgerError::NoTopic {
                topic: topic.to_string(),
            });
        }
        let mut tpl = TopicPartitionList::new();
        let mut remaining = HashMap::new();
        for &p in &partitions {
            let (low, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .map_err(err)?;
            if high > low {
                remaining.insert(p, high);
                tpl.add_partition_offset(topic, p, Offset::Beginning)
                    .map_err(err)?;
            }
        }
        let mut entries = HashMap::new();
        if !remaining.is_empty() {
            consumer.assign(&tpl).map_err(err)?;
            while !remaining.is_empty() {
                let Some(msg) = consumer.poll(Duration::from_secs(10)) else {
                    return Err(err(rdkafka::error::KafkaError::Canceled));
                };
                let msg = msg.map_err(err)?;
                if let Some(record) = msg
                    .payload()
                    .and_then(|p| serde_json::from_slice::<Record>(p).ok())
                {
                    entries.insert((record.issuer.clone(), record.token_id.clone()), record);
                }
                if remaining
                    .get(&msg.partition())
                    .is_some_and(|&high| msg.offset() + 1 >= high)
                {
                    remaining.remove(&msg.partition());
                }
            }
        }
        let mut producer_config = config.clone();
        producer_config
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "0");
        let producer: FutureProducer = producer_config.create().map_err(err)?;
        Ok(Ledger {
            entries,
            sink: Sink::Kafka {
                producer,
                topic: topic.to_string(),
            },
        })
    }

    /// Persists `record` and waits for the write to be acknowledged.
    async fn persist(&mut self, record: &Record) -> Result<(), LedgerError> {
        let json = serde_json::to_vec(record).unwrap_or_default();
        match &mut self.sink {
            Sink::Kafka { producer, topic } => {
                let key = record.key();
                producer
                    .send(
                        FutureRecord::to(topic.as_str()).key(&key).payload(&json),
                        Duration::from_secs(30),
                    )
                    .await
                    .map(|_| ())
                    .map_err(|(source, _)| LedgerError::Kafka {
                        topic: topic.clone(),
                        source,
                    })
            }
            Sink::Memory(log) => {
                if let Ok(mut log) = log.lock() {
                    log.push(record.clone());
                }
                Ok(())
            }
        }
    }

    /// Records a new revocation as pending before anything is called, or
    /// reports that the token is already in the ledger.
    pub async fn begin(&mut self, record: Record) -> Result<Begin, LedgerError> {
        let key = (record.issuer.clone(), record.token_id.clone());
        if let Some(existing) = self.entries.get(&key) {
            return Ok(Begin::Known(existing.state));
        }
        self.persist(&record).await?;
        self.entries.insert(key, record);
        Ok(Begin::New)
    }

    /// Records a change of state (or another attempt).
    pub async fn update(&mut self, record: Record) -> Result<(), LedgerError> {
        self.persist(&record).await?;
        self.entries
            .insert((record.issuer.clone(), record.token_id.clone()), record);
        Ok(())
    }

    pub fn get(&self, issuer: &str, token_id: &str) -> Option<&Record> {
        self.entries
            .get(&(issuer.to_string(), token_id.to_string()))
    }

    /// Revocations to resume after a restart: pending and not accepted.
    pub fn unfinished(&self) -> Vec<Record> {
        self.entries
            .values()
            .filter(|r| {
                (r.state == State::Pending && !r.accepted) || r.state == State::AwaitingSecret
            })
            .cloned()
            .collect()
    }

    /// Every token a gateway should refuse: decided, whatever the issuer
    /// has said so far (fail closed).
    pub fn denylist(&self) -> Vec<Record> {
        let mut all: Vec<Record> = self.entries.values().cloned().collect();
        all.sort_by_key(|a| (a.decided_at_ms, a.key()));
        all
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
