//! What happens to per-partition state when partitions move between the
//! instances of a group. The rebalance callback runs on the ingest task,
//! inside the consumer's poll, so nothing is read while it runs:
//!
//! - **Assigned**: the [`PartitionHook`] restores the partitions' state
//!   (the state changelog) before their first event is handed on.
//! - **Revoked**: the batches in flight are finished and their offsets
//!   stored ([`settle`]: the hook checkpoints, which releases their
//!   acknowledgements), the hook forgets the partitions' state, and the
//!   stored offsets are committed, all before the partitions go to
//!   another instance.
//!
//! Without a hook (no changelog), a revoke still finishes in-flight
//! batches and commits, so the next owner reads less again.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::Consumer;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::ack::{OffsetTracker, TopicPartition};
use crate::metrics::IngestMetrics;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Per-partition state kept downstream of ingest.
pub trait PartitionHook: Send + Sync + 'static {
    /// Restores the state of newly assigned partitions; resolves once
    /// their events may be judged.
    fn restore(&self, partitions: Vec<TopicPartition>) -> BoxFuture<()>;
    /// Writes every change so far; resolves `true` once it is written
    /// (which releases the acknowledgements of the batches it covers).
    fn checkpoint(&self) -> BoxFuture<bool>;
    /// Forgets the state of partitions that moved away.
    fn release(&self, partitions: Vec<TopicPartition>) -> BoxFuture<()>;
}

/// The batches in flight and their acknowledgements, shared by the ingest
/// loop and the rebalance callback (both on the ingest task, never at the
/// same time).
pub struct Acks {
    pub tracker: OffsetTracker,
    pub rx: UnboundedReceiver<u64>,
}

pub type SharedAcks = Arc<Mutex<Acks>>;

pub fn lock(acks: &SharedAcks) -> std::sync::MutexGuard<'_, Acks> {
    acks.lock().unwrap_or_else(|e| e.into_inner())
}

/// The next acknowledgement, as a future that holds no lock while waiting.
pub async fn next_ack(acks: &SharedAcks) -> Option<u64> {
    std::future::poll_fn(|cx| lock(acks).rx.poll_recv(cx)).await
}

/// Acknowledges batch `seq` and stores the offsets it releases, counting
/// them in `metrics`. Returns how many partitions' offsets moved.
pub fn acknowledge<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(
    acks: &SharedAcks,
    consumer: &C,
    metrics: &IngestMetrics,
    seq: u64,
) -> usize {
    let released = lock(acks).tracker.ack(seq);
    let mut stored = 0;
    for ((topic, partition), offset) in released {
        match consumer.store_offset(&topic, partition, offset) {
            Ok(()) => stored += 1,
            // After a revoke the partition belongs to another member,
            // which reads these records again: at-least-once holds.
            Err(e) => {
                debug!(%topic, partition, offset, error = %e, "Cannot store offset; partition was probably revoked.")
            }
        }
    }
    metrics
        .offsets_stored
        .fetch_add(stored as u64, std::sync::atomic::Ordering::Relaxed);
    stored
}

/// Finishes the batches in flight: asks the hook to checkpoint (which
/// releases held acknowledgements), then stores the offsets of every batch
/// acknowledged, until none is in flight or `deadline`. A batch still
/// queued before detection when a checkpoint was taken is covered by the
/// next round. Returns how many batches are still in flight.
pub async fn settle<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(
    acks: &SharedAcks,
    consumer: &C,
    metrics: &IngestMetrics,
    hook: Option<&dyn PartitionHook>,
    deadline: Instant,
) -> usize {
    // Each round waits this long for acknowledgements before asking for
    // another checkpoint.
    const ROUND: Duration = Duration::from_millis(200);
    loop {
        if let Some(hook) = hook
            && !tokio::time::timeout_at(deadline, hook.checkpoint())
                .await
                .unwrap_or(false)
        {
            warn!(
                "The state checkpoint was not written; the next owner restores older state and reads these batches again."
            );
        }
        let round_end = deadline.min(Instant::now() + ROUND);
        loop {
            if lock(acks).tracker.in_flight() == 0 {
                return 0;
            }
            match tokio::time::timeout_at(round_end, next_ack(acks)).await {
                Ok(Some(seq)) => {
                    acknowledge(acks, consumer, metrics, seq);
                }
                Ok(None) | Err(_) => break,
            }
        }
        let left = lock(acks).tracker.in_flight();
        if left == 0 || Instant::now() >= deadline {
            return left;
        }
    }
}

/// Runs `f` to completion from inside the rebalance callback: a blocking
/// wait on this worker thread, whose other tasks move elsewhere. `None`
/// outside a multi-threaded runtime (then nothing can be waited for here
/// without stopping the tasks it waits for).
pub fn block_on<T>(f: impl Future<Output = T>) -> Option<T> {
    let handle = tokio::runtime::Handle::try_current().ok()?;
    if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        return None;
    }
    Some(tokio::task::block_in_place(|| handle.block_on(f)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn no_blocking_wait_outside_a_multi_threaded_runtime() {
        assert_eq!(block_on(async { 1 }), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_blocking_wait_lets_other_tasks_run() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move { tx.send(7).unwrap() });
        assert_eq!(block_on(async { rx.await.unwrap() }), Some(7));
    }
}
