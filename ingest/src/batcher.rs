//! Decoding records into batches. Both sources feed records one by one and
//! take a finished batch when it is full or has lingered long enough.

use std::sync::Arc;

use schemas::decode::{Decoder, Output, Rejected};
use schemas::{DecodeError, Event, EventBatch, Origin, Secret};

use crate::ack::TopicPartition;
use crate::metrics::Tally;

/// One record in this many has its decoding timed (`Tally::decode_ns`).
const DECODE_SAMPLE: u64 = 16;

/// A batch being filled.
pub struct BatchBuilder {
    decoder: Decoder,
    max_records: usize,
    max_bytes: usize,
    records: usize,
    events: Vec<Event>,
    origins: Vec<Origin>,
    secrets: Vec<(usize, Secret)>,
    last_offsets: Vec<(TopicPartition, i64)>,
    tally: Tally,
    /// Reused for each record's decoded events.
    decoded: Output,
    /// Records pushed since creation, for sampling the decode time.
    seen: u64,
}

/// What a full or lingered batch turns into.
pub struct Finished {
    pub batch: EventBatch,
    pub secrets: Vec<(usize, Secret)>,
    /// The last offset read on each partition, bad records included.
    pub last_offsets: Vec<(TopicPartition, i64)>,
    pub tally: Tally,
}

impl BatchBuilder {
    pub fn new(decoder: Decoder, max_records: usize) -> Self {
        BatchBuilder {
            decoder,
            max_records: max_records.max(1),
            max_bytes: usize::MAX,
            records: 0,
            events: Vec::with_capacity(max_records.min(1 << 16)),
            origins: Vec::with_capacity(max_records.min(1 << 16)),
            secrets: Vec::new(),
            last_offsets: Vec::new(),
            tally: Tally::default(),
            decoded: Output::default(),
            seen: 0,
        }
    }

    /// The batch is also full once its records' payloads reach `max_bytes`.
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes.max(1);
        self
    }

    /// Decodes one record into the batch. On error the record is counted as
    /// dead-lettered and the caller must write it to its dead-letter sink
    /// before the batch is acknowledged. So must it each element returned:
    /// the bad records of a CloudTrail file, refused one by one (and
    /// counted) while the file's good records join the batch.
    pub fn push(
        &mut self,
        payload: Option<&[u8]>,
        origin: Origin,
    ) -> Result<Vec<Rejected>, DecodeError> {
        self.records += 1;
        self.tally.records += 1;
        self.tally.bytes += payload.map_or(0, |p| p.len() as u64);
        self.note_offset(&origin);
        let mut decoded = std::mem::take(&mut self.decoded);
        // Timed for one record in DECODE_SAMPLE, scaled: two clock reads
        // per record were 3.5% of the ingest thread.
        self.seen += 1;
        let started = self
            .seen
            .is_multiple_of(DECODE_SAMPLE)
            .then(std::time::Instant::now);
        let result = self
            .decoder
            .decode_into(payload.unwrap_or_default(), &mut decoded);
        if let Some(started) = started {
            self.tally.decode_ns += started.elapsed().as_nanos() as u64 * DECODE_SAMPLE;
        }
        // A CloudTrail file yields many events; they share the record's origin.
        for d in decoded.events.drain(..) {
            if let Some(secret) = d.secret {
                self.secrets.push((self.events.len(), secret));
            }
            self.events.push(d.event);
            self.origins.push(origin.clone());
            self.tally.events += 1;
        }
        self.tally.skipped += decoded.skipped;
        let rejected = std::mem::take(&mut decoded.rejected);
        for r in &rejected {
            self.tally.dead_lettered[r.error.index()] += 1;
        }
        decoded.clear();
        self.decoded = decoded;
        match result {
            Ok(()) => Ok(rejected),
            Err(e) => {
                self.tally.dead_lettered[e.index()] += 1;
                Err(e)
            }
        }
    }

    fn note_offset(&mut self, origin: &Origin) {
        match self
            .last_offsets
            .iter_mut()
            .find(|((t, p), _)| *p == origin.partition && **t == *origin.topic)
        {
            Some((_, last)) => *last = (*last).max(origin.offset),
            None => self
                .last_offsets
                .push(((Arc::clone(&origin.topic), origin.partition), origin.offset)),
        }
    }

    /// Records pushed since the last [`finish`](Self::finish), bad ones included.
    pub fn len(&self) -> usize {
        self.records
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    pub fn is_full(&self) -> bool {
        self.records >= self.max_records || self.tally.bytes >= self.max_bytes as u64
    }

    /// Takes the batch and starts an empty one.
    pub fn finish(&mut self) -> Finished {
        self.records = 0;
        let capacity = self.max_records.min(1 << 16);
        Finished {
            batch: EventBatch {
                events: std::mem::replace(&mut self.events, Vec::with_capacity(capacity)),
                origins: std::mem::replace(&mut self.origins, Vec::with_capacity(capacity)),
            },
            secrets: std::mem::take(&mut self.secrets),
            last_offsets: std::mem::take(&mut self.last_offsets),
            tally: std::mem::take(&mut self.tally),
        }
    }
}

#[cfg(test)]
mod tests {
    use schemas::{Fingerprinter, Format};

    use super::*;

    fn origin(partition: i32, offset: i64) -> Origin {
        Origin {
            topic: Arc::from("events"),
            partition,
            offset,
            kafka_ts_ms: None,
        }
    }

    fn builder(max: usize) -> BatchBuilder {
        BatchBuilder::new(
            Decoder::new(Format::Canonical, 4096, Fingerprinter::new(b"k")),
            max,
        )
    }

    const GOOD: &str = r#"{"ts":1,"token_id":"t1","issuer":"i","action":"a","request_id":"r1"}"#;

    #[test]
    fn collects_good_records_and_counts_bad_ones() {
        let mut b = builder(4);
        assert!(b.push(Some(GOOD.as_bytes()), origin(0, 10)).is_ok());
        assert_eq!(
            b.push(Some(b"{oops"), origin(0, 11)),
            Err(DecodeError::InvalidJson)
        );
        assert_eq!(b.push(None, origin(1, 5)), Err(DecodeError::InvalidJson));
        assert!(!b.is_full());
        assert!(
            b.push(
                Some(
                    GOOD.replace("t1", "fp")
                        .replace("\"token_id\"", "\"token\"")
                        .as_bytes()
                ),
                origin(1, 6)
            )
            .is_ok()
        );
        assert!(b.is_full());

        let done = b.finish();
        assert!(b.is_empty());
        let events = done.batch.events;
        assert_eq!(events.len(), 2);
        assert_eq!(done.batch.origins, vec![origin(0, 10), origin(1, 6)]);
        assert_eq!(done.secrets.len(), 1);
        assert_eq!(done.secrets[0].0, 1, "secret belongs to row 1");
        let mut last = done.last_offsets.clone();
        last.sort();
        assert_eq!(
            last,
            vec![
                ((Arc::from("events"), 0), 11),
                ((Arc::from("events"), 1), 6)
            ]
        );
        assert_eq!((done.tally.records, done.tally.events), (4, 2));
        assert_eq!(
            done.tally.dead_lettered[DecodeError::InvalidJson.index()],
            2
        );
    }

    #[test]
    fn a_file_s_bad_records_are_returned_alone_and_its_skips_counted() {
        let mut b = BatchBuilder::new(
            Decoder::new(Format::Cloudtrail, 1 << 16, Fingerprinter::new(b"k")),
            8,
        );
        let record = |key: Option<&str>, time: &str| {
            let mut r = serde_json::json!({
                "eventTime": time,
                "eventSource": "s3.amazonaws.com",
                "eventName": "GetObject",
                "userIdentity": {"type": "AWSService"},
            });
            if let Some(key) = key {
                r["userIdentity"]["accessKeyId"] = key.into();
            }
            r
        };
        let file = serde_json::json!({"Records": [
            record(Some("AKIA1"), "2026-11-20T10:00:00Z"),
            record(Some("AKIA2"), "not a time"),
            record(None, "2026-11-20T10:00:01Z"),
            record(Some("AKIA3"), "2026-11-20T10:00:02Z"),
        ]});
        let rejected = b
            .push(Some(file.to_string().as_bytes()), origin(0, 3))
            .unwrap();
        assert_eq!(rejected.len(), 1);
        assert_eq!(
            (rejected[0].index, rejected[0].error),
            (1, DecodeError::InvalidTimestamp)
        );
        let done = b.finish();
        let events = done.batch.events;
        let keys: Vec<_> = events.iter().map(|e| e.token_id.as_str()).collect();
        assert_eq!(keys, ["AKIA1", "AKIA3"]);
        assert_eq!(done.batch.origins, vec![origin(0, 3), origin(0, 3)]);
        let t = &done.tally;
        assert_eq!((t.records, t.events, t.skipped), (1, 2, 1));
        assert_eq!(t.dead_lettered[DecodeError::InvalidTimestamp.index()], 1);
    }

    /// Issue 11, section 4: a batch of big records closes by bytes, long
    /// before its record count.
    #[test]
    fn a_batch_is_full_by_bytes_as_well_as_records() {
        let mut b = BatchBuilder::new(
            Decoder::new(Format::Canonical, 1 << 20, Fingerprinter::new(b"k")),
            1000,
        )
        .with_max_bytes(10_000);
        let mut n = 0;
        while !b.is_full() {
            let mut e = Event::new(1_795_813_200_000, "t", "oauth", "GET /");
            e.user_agent = Some("x".repeat(3000));
            let _ = b.push(Some(e.to_json().as_bytes()), origin(0, n));
            n += 1;
        }
        assert_eq!(n, 4, "4 records of about 3 KB pass 10,000 bytes");
        assert_eq!(b.finish().batch.len(), 4);
    }
}
