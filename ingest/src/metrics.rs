//! Ingest counters. Sources add to them once per batch, never per record.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use schemas::DecodeError;

/// Counters shared between a source and whoever reports them.
#[derive(Debug, Default)]
pub struct IngestMetrics {
    /// Records read from the source, good and bad.
    pub records: AtomicU64,
    /// Records decoded into events.
    pub events: AtomicU64,
    /// Batches handed downstream.
    pub batches: AtomicU64,
    /// Payload bytes read.
    pub bytes: AtomicU64,
    /// Bytes read from input files as they are stored (compressed, for a
    /// `.json.gz`): replay's progress against the files' sizes.
    pub input_bytes: AtomicU64,
    /// Offsets stored after acknowledgement.
    pub offsets_stored: AtomicU64,
    /// Partitions currently assigned to this instance (a gauge).
    pub assigned_partitions: AtomicI64,
    /// Records behind the end of the assigned partitions, from librdkafka's
    /// statistics every few seconds (a gauge; 0 until the first report).
    pub consumer_lag: AtomicI64,
    /// Since when (epoch ms) the consumer has not been a steady member of
    /// its group (joining, syncing, waiting for a coordinator), from the
    /// same statistics; 0 while it is one. Such a consumer reads and
    /// commits nothing new, yet shows no lag on partitions it lost.
    pub group_unsteady_since_ms: AtomicI64,
    /// Records dead-lettered, by [`DecodeError::index`]. A bad record in a
    /// CloudTrail file counts alone.
    pub dead_lettered: [AtomicU64; DecodeError::REASONS.len()],
    /// Well-formed vendor records that are no token's call (a GitHub
    /// web-session action, a CloudTrail `AwsServiceEvent`): not an event,
    /// not an error.
    pub skipped: AtomicU64,
    /// Consumer errors that did not stop ingest (librdkafka retries them).
    pub consumer_errors: AtomicU64,
    /// Batches handed on, by why they closed, in [`BatchClose`] order.
    pub batch_closes: [AtomicU64; 3],
    /// Time spent decoding records, summed (estimated: one record in 16
    /// is timed).
    pub decode_ns: AtomicU64,
}

/// Why a batch was handed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchClose {
    /// It reached `batch_max_records` or `batch_max_bytes`.
    Full = 0,
    /// Nothing more was fetched: handed on at once (adaptive batching).
    Idle = 1,
    /// Records kept coming for `batch_linger`.
    Linger = 2,
}

impl BatchClose {
    pub const ALL: [BatchClose; 3] = [BatchClose::Full, BatchClose::Idle, BatchClose::Linger];

    pub fn name(self) -> &'static str {
        match self {
            BatchClose::Full => "full",
            BatchClose::Idle => "idle",
            BatchClose::Linger => "linger",
        }
    }
}

/// Per-batch tallies, added to [`IngestMetrics`] in one go.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub records: u64,
    pub events: u64,
    pub bytes: u64,
    pub dead_lettered: [u64; DecodeError::REASONS.len()],
    pub skipped: u64,
    pub decode_ns: u64,
}

impl IngestMetrics {
    pub fn closed(&self, why: BatchClose) {
        self.batch_closes[why as usize].fetch_add(1, Relaxed);
    }

    pub fn closes(&self, why: BatchClose) -> u64 {
        self.batch_closes[why as usize].load(Relaxed)
    }

    pub fn add(&self, t: &Tally) {
        self.records.fetch_add(t.records, Relaxed);
        self.events.fetch_add(t.events, Relaxed);
        self.bytes.fetch_add(t.bytes, Relaxed);
        self.skipped.fetch_add(t.skipped, Relaxed);
        self.decode_ns.fetch_add(t.decode_ns, Relaxed);
        for (counter, n) in self.dead_lettered.iter().zip(t.dead_lettered) {
            if n > 0 {
                counter.fetch_add(n, Relaxed);
            }
        }
    }

    /// Total records dead-lettered, all reasons.
    pub fn dead_lettered_total(&self) -> u64 {
        self.dead_lettered.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// `(reason, count)` for every reason.
    pub fn dead_lettered_by_reason(&self) -> Vec<(&'static str, u64)> {
        DecodeError::REASONS
            .iter()
            .zip(&self.dead_lettered)
            .map(|(r, c)| (*r, c.load(Relaxed)))
            .collect()
    }
}
