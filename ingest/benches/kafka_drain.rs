//! Ingest drain rate on the real local broker, against bare rust-rdkafka
//! draining the same topic, measured in one run (the R1 groundwork of
//! SPEC §9). Needs `scripts/kafka start`.
//!
//!     cargo bench -p ingest --bench kafka_drain -- [EVENTS]
//!
//! It pre-loads a fresh 4-partition topic with EVENTS realistic canonical
//! records (default 200000), then drains it twice with fresh consumer
//! groups: once touching each payload only, once through `KafkaSource`
//! (decode, batch, Arrow, acknowledge, store offsets).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ingest::{IngestConfig, IngestMetrics, KafkaSource};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio::sync::{mpsc, oneshot};

fn brokers() -> String {
    std::env::var("TOKENWATCH_TEST_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

fn record(i: usize) -> (String, String) {
    let e = schemas::sample::realistic(i, 20_000, 1_795_813_200_000);
    (e.token_id.clone(), e.to_json())
}

fn consumer_config(group: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers())
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false");
    c
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200_000);
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let topic = format!("bench-drain-{stamp}");

    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let created = admin
        .create_topics(
            [&NewTopic::new(&topic, 4, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "no broker at {}? start it with scripts/kafka start: {e}",
                brokers()
            )
        });
    created.into_iter().for_each(|r| {
        r.unwrap();
    });

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap();
    let mut bytes = 0usize;
    for i in 0..n {
        let (key, payload) = record(i);
        bytes += payload.len();
        loop {
            match producer.send_result(FutureRecord::to(&topic).key(&key).payload(&payload)) {
                Ok(_) => break,
                Err((_, _)) => producer.poll(Duration::from_millis(10)),
            }
        }
    }
    producer.flush(Duration::from_secs(60)).unwrap();
    println!(
        "pre-loaded {n} events ({} B average) into {topic}",
        bytes / n
    );

    // Bare rust-rdkafka: consume and touch every payload.
    let bare: StreamConsumer = consumer_config(&format!("{topic}-bare")).create().unwrap();
    bare.subscribe(&[&topic]).unwrap();
    let first = bare.recv().await.unwrap();
    let mut checksum = first.payload().map_or(0, |p| p.len());
    drop(first);
    let start = Instant::now();
    for _ in 1..n {
        let m = bare.recv().await.unwrap();
        checksum = checksum.wrapping_add(m.payload().map_or(0, |p| p.len()));
    }
    let bare_secs = start.elapsed().as_secs_f64();
    std::hint::black_box(checksum);

    // KafkaSource: decode, batch into Arrow, acknowledge, store offsets.
    let mut config = IngestConfig::new(vec![topic.clone()]);
    config.brokers = brokers();
    config.group_id = format!("{topic}-source");
    config.dead_letter_topic = format!("{topic}-dlq");
    let metrics = Arc::new(IngestMetrics::default());
    let source = KafkaSource::build(&config, metrics.clone()).unwrap();
    let (tx, mut rx) = mpsc::channel(8);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(source.run(tx, async {
        let _ = stop_rx.await;
    }));
    let first = rx.recv().await.unwrap();
    let mut events = first.batch.len();
    first.ack.done();
    let start = Instant::now();
    let mut counted_from = events;
    while events < n {
        let d = rx.recv().await.unwrap();
        events += d.batch.len();
        d.ack.done();
        if counted_from == 0 {
            counted_from = events;
        }
    }
    let source_secs = start.elapsed().as_secs_f64();
    let _ = stop_tx.send(());
    task.await.unwrap().unwrap();

    let bare_rate = (n - 1) as f64 / bare_secs;
    let source_rate = (n - counted_from) as f64 / source_secs;
    println!("bare rdkafka drain:  {bare_rate:>12.0} events/s");
    println!("KafkaSource drain:   {source_rate:>12.0} events/s (decode + Arrow + offsets)");
    println!("ratio (source/bare): {:>12.2}", source_rate / bare_rate);
}
