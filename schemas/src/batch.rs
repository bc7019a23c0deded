//! The unit of work between stages: decoded events plus the source
//! position of each, so offsets can be stored once the batch's decisions
//! are handed on, and evidence can cite them. Events stay rows from
//! decoding to detection; Arrow is built once, by the policy rules, for
//! the columns they read.

use std::sync::Arc;

use crate::Event;

/// Where one record came from. For Kafka: topic, partition and offset; for a
/// file: its path, partition 0 and the 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    /// Kafka's record timestamp (create or append time), epoch ms.
    pub kafka_ts_ms: Option<i64>,
}

/// A batch of decoded events. `origins[i]` is the source of `events[i]`.
#[derive(Debug, Clone, Default)]
pub struct EventBatch {
    pub events: Vec<Event>,
    pub origins: Vec<Origin>,
}

impl EventBatch {
    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}
