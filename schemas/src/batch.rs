//! The unit of work between stages: a `RecordBatch` of events plus the
//! source position of each row, so offsets can be stored once the batch's
//! decisions are handed on, and evidence can cite them.

use std::sync::Arc;

use arrow::array::RecordBatch;

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

/// A batch of decoded events. `origins[i]` is the source of row `i`.
#[derive(Debug, Clone)]
pub struct EventBatch {
    pub records: RecordBatch,
    pub origins: Vec<Origin>,
}

impl EventBatch {
    pub fn len(&self) -> usize {
        self.records.num_rows()
    }

    pub fn is_empty(&self) -> bool {
        self.records.num_rows() == 0
    }
}
