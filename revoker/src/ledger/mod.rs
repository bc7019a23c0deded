//! The revocation ledger: one record per (issuer, token_id) on a compacted
//! topic, written *before* the issuer is called, and the view that makes
//! revocation happen once per token and backs the gateway denylist.
//!
//! Every process (each `run` instance, `tokenwatch revoke`) reads the whole
//! topic at start and then follows it live, and the first claim on a token
//! wins across all of them: see [`view`] for the protocol, [`kafka`] for
//! the topic.

mod kafka;
pub mod view;

use std::sync::{Arc, Mutex};

use rdkafka::config::ClientConfig;
use serde::{Deserialize, Serialize};

pub use kafka::Followed;
pub use view::{Change, Claim, Entry, Heartbeat, View};

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
    /// The instance that owns this revocation (empty in records written
    /// before ownership existed).
    #[serde(default)]
    pub owner: String,
}

impl Record {
    pub fn key(&self) -> String {
        format!("{}/{}", self.issuer, self.token_id)
    }

    /// A pending record with nothing but its identity (tests, resumes).
    pub fn new_pending(issuer: &str, token_id: &str, decision_id: String, now_ms: i64) -> Self {
        Record {
            issuer: issuer.into(),
            token_id: token_id.into(),
            principal: None,
            state: State::Pending,
            decision_id,
            reason: String::new(),
            attempts: 0,
            accepted: false,
            event_ts_ms: now_ms,
            kafka_ts_ms: None,
            decided_at_ms: now_ms,
            answered_at_ms: None,
            last_error: None,
            manual: false,
            owner: String::new(),
        }
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
    #[error("cannot read back a write to the ledger topic {topic} within {seconds} s")]
    ReadBack { topic: String, seconds: u64 },
}

/// Where records are persisted.
enum Sink {
    Kafka(kafka::KafkaLog),
    /// For tests and tools that run without Kafka: every write applies at
    /// once; the states written are kept so a test can read them.
    Memory(Arc<Mutex<Vec<Record>>>),
}

pub struct Ledger {
    view: View,
    /// This process's owner id in claims and records.
    instance: String,
    sink: Sink,
    /// Ownership changes seen while applying records, for the service.
    changes: Vec<Change>,
}

/// What [`Ledger::begin`] found.
#[derive(Debug, PartialEq)]
pub enum Begin {
    /// Recorded as pending and owned by this process: go and call the issuer.
    New,
    /// Already decided, here or by another process: do not call the issuer.
    Known(State),
}

/// A unique owner id for this process.
fn instance_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    format!(
        "{host}:{}:{:x}",
        std::process::id(),
        nanos & 0xffff_ffff_ffff
    )
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Ledger {
    /// A ledger that keeps records in memory only.
    pub fn in_memory() -> Self {
        Ledger {
            view: View::default(),
            instance: instance_id(),
            sink: Sink::Memory(Default::default()),
            changes: Vec::new(),
        }
    }

    /// Everything written so far, for in-memory ledgers (tests).
    pub fn log(&self) -> Arc<Mutex<Vec<Record>>> {
        match &self.sink {
            Sink::Memory(log) => log.clone(),
            Sink::Kafka(_) => Default::default(),
        }
    }

    /// Reads the whole topic (every partition from its start to where it
    /// stands now), then follows it live on a thread of its own. Blocks
    /// while it reads.
    pub fn rebuild(config: &ClientConfig, topic: &str) -> Result<Self, LedgerError> {
        let mut view = View::default();
        let log = kafka::KafkaLog::open(config, topic, &mut view)?;
        Ok(Ledger {
            view,
            instance: instance_id(),
            sink: Sink::Kafka(log),
            changes: Vec::new(),
        })
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Writes `entry` and waits until it is acknowledged and read back, so
    /// the view holds everything written before it on its partition.
    async fn write(&mut self, entry: Entry) -> Result<(), LedgerError> {
        match &mut self.sink {
            Sink::Kafka(log) => {
                let (partition, offset) = log.produce(&entry).await?;
                log.catch_up(partition, offset, &mut self.view, &mut self.changes)
                    .await
            }
            Sink::Memory(log) => {
                // The records written: states, and the record each claim
                // carries (it stands for the state until one is written).
                let written = match &entry {
                    Entry::State(r) => Some(r.clone()),
                    Entry::Claim(c) => Some(Record {
                        owner: c.owner.clone(),
                        ..c.record.clone()
                    }),
                    Entry::Alive(_) => None,
                };
                if let (Some(r), Ok(mut log)) = (written, log.lock()) {
                    log.push(r);
                }
                let change = self.view.apply(entry, now_ms());
                self.changes.push(change);
                Ok(())
            }
        }
    }

    /// Claims the token of `record` for this process; true if the claim won.
    async fn claim(&mut self, record: &Record) -> Result<bool, LedgerError> {
        let round = self.view.next_round(&record.issuer, &record.token_id);
        let mut record = record.clone();
        record.owner = self.instance.clone();
        self.write(Entry::Claim(Claim {
            round,
            owner: self.instance.clone(),
            record: record.clone(),
        }))
        .await?;
        Ok(self
            .view
            .owner(&record.issuer, &record.token_id)
            .is_some_and(|o| o.round == round && o.owner == self.instance))
    }

    /// Records a new revocation as pending before anything is called, if
    /// this process wins the token; otherwise reports it as known.
    pub async fn begin(&mut self, record: Record) -> Result<Begin, LedgerError> {
        if let Some(state) = self.known_state(&record.issuer, &record.token_id) {
            return Ok(Begin::Known(state));
        }
        if !self.claim(&record).await? {
            return Ok(Begin::Known(
                self.known_state(&record.issuer, &record.token_id)
                    .unwrap_or(State::Pending),
            ));
        }
        // The winning claim, read back, is the pending record (see
        // `view`): no second write before the issuer is called.
        Ok(Begin::New)
    }

    /// Takes over a revocation another owner left unfinished (it restarted,
    /// or went silent); true if this process won it and recorded itself.
    pub async fn take_over(&mut self, record: Record) -> Result<bool, LedgerError> {
        let owned = self
            .view
            .owner(&record.issuer, &record.token_id)
            .is_some_and(|o| o.owner == self.instance);
        if !owned && !self.claim(&record).await? {
            return Ok(false);
        }
        self.write_state(record).await?;
        Ok(true)
    }

    async fn write_state(&mut self, mut record: Record) -> Result<(), LedgerError> {
        record.owner = self.instance.clone();
        self.write(Entry::State(record)).await
    }

    /// Records a change of state (or another attempt). Returns false, and
    /// writes nothing, if another process has taken the revocation over.
    pub async fn update(&mut self, record: Record) -> Result<bool, LedgerError> {
        if !self.is_mine(&record.issuer, &record.token_id) {
            return Ok(false);
        }
        self.write_state(record).await?;
        Ok(true)
    }

    /// Whether this process owns the token's revocation (or nobody has
    /// claimed it: records from before claims existed).
    pub fn is_mine(&self, issuer: &str, token_id: &str) -> bool {
        self.view
            .owner(issuer, token_id)
            .is_none_or(|o| o.owner == self.instance)
    }

    fn known_state(&self, issuer: &str, token_id: &str) -> Option<State> {
        match self.get(issuer, token_id) {
            Some(r) => Some(r.state),
            None => self
                .view
                .is_known(issuer, token_id)
                .then_some(State::Pending),
        }
    }

    /// The next record another process wrote, once it is read; never
    /// resolves for an in-memory ledger.
    pub async fn follow(&mut self) -> Option<kafka::Followed> {
        match &mut self.sink {
            Sink::Kafka(log) => log.next().await,
            Sink::Memory(_) => std::future::pending().await,
        }
    }

    /// Applies a record [`follow`](Self::follow) returned.
    pub fn apply_followed(&mut self, followed: kafka::Followed) {
        if let Sink::Kafka(log) = &mut self.sink {
            log.apply(followed, &mut self.view, &mut self.changes);
        }
    }

    /// Ownership changes since the last call.
    pub fn take_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.changes)
    }

    pub fn get(&self, issuer: &str, token_id: &str) -> Option<&Record> {
        self.view
            .entries
            .get(&(issuer.to_string(), token_id.to_string()))
    }

    /// A token's record, or its winning claim's while the owner has not
    /// written it yet.
    pub fn record(&self, issuer: &str, token_id: &str) -> Option<Record> {
        self.get(issuer, token_id)
            .or_else(|| self.view.owner(issuer, token_id).map(|o| &o.record))
            .cloned()
    }

    /// Revocations to resume after a restart: pending and not accepted, or
    /// waiting for a secret, or claimed but never written.
    pub fn unfinished(&self) -> Vec<Record> {
        self.view
            .entries
            .values()
            .filter(|r| {
                (r.state == State::Pending && !r.accepted) || r.state == State::AwaitingSecret
            })
            .chain(self.view.claimed_without_state())
            .cloned()
            .collect()
    }

    /// Says this process is alive (or, at a clean stop, gone).
    pub async fn heartbeat(&mut self, gone: bool) -> Result<(), LedgerError> {
        self.write(Entry::Alive(Heartbeat {
            owner: self.instance.clone(),
            at_ms: now_ms(),
            gone,
        }))
        .await
    }

    /// Unfinished revocations whose owner is not alive (restarted, crashed,
    /// stopped, or a `tokenwatch revoke` that has exited): to take over.
    pub fn orphaned(&self, now_ms: i64, liveness_timeout_ms: i64) -> Vec<Record> {
        self.unfinished()
            .into_iter()
            .filter(|r| {
                let owner = self
                    .view
                    .owner_name(&r.issuer, &r.token_id)
                    .unwrap_or_default();
                owner != self.instance && !self.view.is_alive(owner, now_ms, liveness_timeout_ms)
            })
            .collect()
    }

    /// Every token a gateway should refuse: decided, whatever the issuer
    /// has said so far (fail closed), claimed ones included.
    pub fn denylist(&self) -> Vec<Record> {
        let mut all: Vec<Record> = self
            .view
            .entries
            .values()
            .chain(self.view.claimed_without_state())
            .cloned()
            .collect();
        all.sort_by_key(|a| (a.decided_at_ms, a.key()));
        all
    }

    pub fn len(&self) -> usize {
        self.view.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.view.entries.is_empty()
    }
}
