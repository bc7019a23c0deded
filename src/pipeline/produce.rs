//! Writing a batch of records to an internal topic (the state changelog,
//! the repartition topic) and waiting until every one is acknowledged,
//! written again after a failure for a while.

use std::future::Future;
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::ToBytes;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use tracing::warn;

/// The settings of a producer to an internal topic: idempotent, every
/// in-sync replica, one request in flight (see
/// `ingest::SERIAL_IDEMPOTENT_WRITES`), `linger_ms` of batching. A record
/// times out after 15 s and the batch is written again ([`retried`]): after
/// a broker restart an idempotent producer waits for its in-flight records
/// to time out before it can go on, and with librdkafka's default 5
/// minutes detection stalled that long.
pub fn producer_config(kafka: &rdkafka::ClientConfig, linger_ms: &str) -> rdkafka::ClientConfig {
    let mut c = kafka.clone();
    c.set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", linger_ms)
        .set(
            "max.in.flight.requests.per.connection",
            ingest::SERIAL_IDEMPOTENT_WRITES,
        )
        .set("message.timeout.ms", "15000");
    c
}

/// Queues `record`; while librdkafka's queue is full, waits for the
/// records already queued first.
pub async fn queue<K: ToBytes + ?Sized, P: ToBytes + ?Sized>(
    producer: &FutureProducer,
    pending: &mut Vec<DeliveryFuture>,
    mut record: FutureRecord<'_, K, P>,
) -> Result<(), KafkaError> {
    loop {
        match producer.send_result(record) {
            Ok(delivery) => {
                pending.push(delivery);
                return Ok(());
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                if pending.is_empty() {
                    // Full with other writers' records: let them go out.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                } else {
                    acknowledged(std::mem::take(pending)).await?;
                }
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Waits until every queued record is acknowledged; the first failure.
pub async fn acknowledged(pending: Vec<DeliveryFuture>) -> Result<(), KafkaError> {
    for delivery in pending {
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(e),
            Err(_) => return Err(KafkaError::Canceled),
        }
    }
    Ok(())
}

/// Runs `write` until it succeeds, again after each failure (logged with
/// `what`) for up to `retry_for`; then its error.
pub async fn retried<F, Fut>(
    what: &str,
    retry_for: Duration,
    mut write: F,
) -> Result<(), KafkaError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), KafkaError>>,
{
    let deadline = tokio::time::Instant::now() + retry_for;
    loop {
        match write().await {
            Ok(()) => return Ok(()),
            Err(e) if tokio::time::Instant::now() < deadline => {
                warn!(error = %e, "{what} failed; writing it again.");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e),
        }
    }
}
