//! Acknowledgements and offset bookkeeping for at-least-once delivery.
//!
//! Batches may be acknowledged in any order, but an offset may only be
//! stored once every record before it on its partition is done. The
//! [`OffsetTracker`] keeps, per partition, the batches in flight in read
//! order and releases the longest acknowledged prefix.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tokio::sync::mpsc::UnboundedSender;

/// Acknowledges one batch. Dropping it without [`done`](Ack::done) leaves
/// the batch unacknowledged: its offsets, and all later ones on the same
/// partitions, stay unstored.
#[derive(Debug)]
pub struct Ack {
    inner: Option<(UnboundedSender<u64>, u64)>,
}

impl Ack {
    pub(crate) fn new(tx: UnboundedSender<u64>, seq: u64) -> Self {
        Ack {
            inner: Some((tx, seq)),
        }
    }

    /// For sources with nothing to commit (files, stdin).
    pub fn none() -> Self {
        Ack { inner: None }
    }

    /// Marks the batch as handed on; its offsets may now be stored.
    pub fn done(mut self) {
        if let Some((tx, seq)) = self.inner.take() {
            // The source may have stopped; then there is nothing to store.
            let _ = tx.send(seq);
        }
    }
}

/// A partition of a topic.
pub type TopicPartition = (Arc<str>, i32);

struct InFlight {
    seq: u64,
    last_offset: i64,
    acked: bool,
}

/// Tracks batches in flight per partition; see the module docs.
#[derive(Default)]
pub struct OffsetTracker {
    partitions: HashMap<TopicPartition, VecDeque<InFlight>>,
    batches: HashMap<u64, Vec<TopicPartition>>,
}

impl OffsetTracker {
    /// Registers batch `seq`, which holds records up to `last_offset` on
    /// each listed partition. Batches must be registered in read order.
    pub fn register(
        &mut self,
        seq: u64,
        last_offsets: impl IntoIterator<Item = (TopicPartition, i64)>,
    ) {
        let mut parts = Vec::new();
        for (tp, last_offset) in last_offsets {
            self.partitions
                .entry(tp.clone())
                .or_default()
                .push_back(InFlight {
                    seq,
                    last_offset,
                    acked: false,
                });
            parts.push(tp);
        }
        self.batches.insert(seq, parts);
    }

    /// Marks batch `seq` done and returns, per partition it touched, the
    /// offset of the last record that may now be stored (if any moved).
    pub fn ack(&mut self, seq: u64) -> Vec<(TopicPartition, i64)> {
        let Some(parts) = self.batches.remove(&seq) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for tp in parts {
            let Some(queue) = self.partitions.get_mut(&tp) else {
                continue;
            };
            if let Some(entry) = queue.iter_mut().find(|e| e.seq == seq) {
                entry.acked = true;
            }
            let mut released = None;
            while queue.front().is_some_and(|e| e.acked) {
                released = queue.pop_front().map(|e| e.last_offset);
            }
            if queue.is_empty() {
                self.partitions.remove(&tp);
            }
            if let Some(offset) = released {
                out.push((tp, offset));
            }
        }
        out
    }

    /// Batches registered and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.batches.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> TopicPartition {
        (Arc::from("t"), p)
    }

    #[test]
    fn in_order_acks_release_each_batch() {
        let mut t = OffsetTracker::default();
        t.register(1, [(tp(0), 9)]);
        t.register(2, [(tp(0), 19)]);
        assert_eq!(t.ack(1), vec![(tp(0), 9)]);
        assert_eq!(t.ack(2), vec![(tp(0), 19)]);
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn out_of_order_ack_waits_for_the_gap() {
        let mut t = OffsetTracker::default();
        t.register(1, [(tp(0), 9), (tp(1), 4)]);
        t.register(2, [(tp(0), 19)]);
        t.register(3, [(tp(1), 8)]);
        assert_eq!(t.ack(2), vec![], "batch 1 still holds partition 0");
        assert_eq!(t.ack(3), vec![], "batch 1 still holds partition 1");
        let mut released = t.ack(1);
        released.sort();
        assert_eq!(released, vec![(tp(0), 19), (tp(1), 8)]);
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn unknown_and_repeated_acks_are_ignored() {
        let mut t = OffsetTracker::default();
        t.register(1, [(tp(0), 3)]);
        assert_eq!(t.ack(7), vec![]);
        assert_eq!(t.ack(1), vec![(tp(0), 3)]);
        assert_eq!(t.ack(1), vec![]);
    }

    #[test]
    fn ack_handle_sends_its_sequence_once() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        Ack::new(tx.clone(), 5).done();
        drop(Ack::new(tx, 6));
        assert_eq!(rx.try_recv().ok(), Some(5));
        assert!(rx.try_recv().is_err(), "a dropped ack must not acknowledge");
        Ack::none().done();
    }
}
