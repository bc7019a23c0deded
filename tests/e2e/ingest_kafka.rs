//! Ingest against the real broker: every good record is delivered, every
//! bad one is dead-lettered with its reason, and a consumer killed before
//! acknowledging loses nothing.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use ingest::kafka::header;
use ingest::{Delivery, IngestConfig, IngestMetrics, KafkaSource};
use schemas::Event;
use tokio::sync::{mpsc, oneshot};

use crate::support::{self, create_topic, create_topic_with, produce, read_records, unique_name};

fn good_record(i: usize) -> (String, Vec<u8>) {
    let token = format!("tok-{}", i % 500);
    let mut e = Event::new(
        1_795_813_200_000 + i as i64,
        token.clone(),
        "oauth",
        "GET /v1/orders/{id}",
    );
    e.src_ip = Some(std::net::IpAddr::from([81, 2, 69, (i % 250) as u8]));
    e.user_agent = Some("orders-client/3.2 (linux)".into());
    e.status = Some(200);
    e.bytes_out = Some(1200 + i as u64 % 800);
    e.request_id = Some(format!("req-{i:06}"));
    (token, e.to_json().into_bytes())
}

/// The five kinds of bad record, with the reason and field each must get.
fn bad_record(kind: usize, i: usize) -> ((String, Vec<u8>), &'static str, Option<&'static str>) {
    let key = format!("bad-{i}");
    match kind {
        0 => ((key, b"{\"ts\": 1795813200000, \"token_id\": ".to_vec()), "invalid_json", None),
        1 => ((key, br#"{"ts":1795813200000,"issuer":"oauth","action":"GET /"}"#.to_vec()), "missing_field", Some("token_id")),
        2 => ((key, br#"{"ts":1795813200000,"token_id":"t","issuer":"oauth","action":"GET /","status":"ok"}"#.to_vec()), "wrong_type", Some("status")),
        3 => ((key, vec![b' '; 2 << 20]), "too_large", None),
        _ => ((key, b"{\"ts\":1795813200000,\"token_id\":\"t\xff\xfe\"}".to_vec()), "invalid_utf8", None),
    }
}

fn config(topic: &str, group: &str, dlq: &str) -> IngestConfig {
    let mut c = IngestConfig::new(vec![topic.to_string()]);
    c.brokers = support::brokers();
    c.group_id = group.to_string();
    c.dead_letter_topic = dlq.to_string();
    c.batch_max_records = 500;
    c.properties
        .insert("session.timeout.ms".into(), "6000".into());
    c
}

fn request_ids(delivery: &Delivery) -> Vec<String> {
    delivery
        .batch
        .events
        .iter()
        .map(|e| e.request_id.clone().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_every_good_record_and_dead_letters_every_bad_one() {
    let topic = unique_name("ingest-events");
    let dlq = unique_name("ingest-dlq");
    create_topic(&topic, 4).await;
    create_topic(&dlq, 1).await;

    // 20,000 good records with 200 bad ones spread among them.
    let mut records = Vec::new();
    let mut expected_bad = Vec::new();
    for i in 0..20_000 {
        records.push(good_record(i));
        if i % 100 == 50 {
            let n = expected_bad.len();
            let (record, reason, field) = bad_record(n % 5, n);
            expected_bad.push((records.len(), reason, field));
            records.push(record);
        }
    }
    assert_eq!(expected_bad.len(), 200);
    let positions = produce(&topic, &records).await;
    let bad_at: HashMap<(i32, i64), (&str, Option<&str>)> = expected_bad
        .iter()
        .map(|&(idx, reason, field)| (positions[idx], (reason, field)))
        .collect();

    let metrics = Arc::new(IngestMetrics::default());
    let source = KafkaSource::build(
        &config(&topic, &unique_name("group"), &dlq),
        metrics.clone(),
    )
    .unwrap();
    let (tx, mut rx) = mpsc::channel(4);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(source.run(tx, async {
        let _ = stop_rx.await;
    }));

    let mut seen = HashMap::<String, usize>::new();
    let mut events = 0usize;
    while events < 20_000 {
        let delivery = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .unwrap_or_else(|_| {
                panic!("only {events} of 20000 events arrived within 60 s of the last batch")
            })
            .expect("source stopped early");
        for id in request_ids(&delivery) {
            *seen.entry(id).or_default() += 1;
            events += 1;
        }
        delivery.ack.done();
    }
    let _ = stop_tx.send(());
    task.await.unwrap().unwrap();

    assert_eq!(seen.len(), 20_000, "every request_id is delivered");
    assert!(
        seen.values().all(|&n| n == 1),
        "no duplicates in a run without failures"
    );
    assert!((0..20_000).all(|i| seen.contains_key(&format!("req-{i:06}"))));
    assert_eq!(metrics.events.load(Relaxed), 20_000);
    assert_eq!(metrics.dead_lettered_total(), 200);
    for (reason, n) in metrics.dead_lettered_by_reason() {
        let expected = if [
            "invalid_json",
            "missing_field",
            "wrong_type",
            "too_large",
            "invalid_utf8",
        ]
        .contains(&reason)
        {
            40
        } else {
            0
        };
        assert_eq!(n, expected, "dead-lettered count for {reason}");
    }

    let dead = read_records(&dlq, 200, Duration::from_secs(30)).await;
    let mut matched = HashSet::new();
    for record in &dead {
        assert_eq!(record.header(header::SOURCE_TOPIC), Some(topic.as_str()));
        let partition: i32 = record
            .header(header::SOURCE_PARTITION)
            .unwrap()
            .parse()
            .unwrap();
        let offset: i64 = record
            .header(header::SOURCE_OFFSET)
            .unwrap()
            .parse()
            .unwrap();
        let (reason, field) = bad_at[&(partition, offset)];
        assert_eq!(
            record.header(header::REASON),
            Some(reason),
            "reason for {partition}@{offset}"
        );
        assert_eq!(
            record.header(header::FIELD),
            field,
            "field for {partition}@{offset}"
        );
        assert!(record.header(header::DETAIL).is_some_and(|d| !d.is_empty()));
        if reason == "too_large" {
            assert_eq!(record.header(header::ORIGINAL_BYTES), Some("2097152"));
            assert_eq!(
                record.payload.len(),
                1 << 20,
                "dead-letter copy is truncated to max_record_bytes"
            );
        }
        assert!(
            matched.insert((partition, offset)),
            "each bad record is dead-lettered once"
        );
    }
    assert_eq!(matched.len(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_killed_before_acknowledging_loses_nothing() {
    let topic = unique_name("alo-events");
    let dlq = unique_name("alo-dlq");
    let group = unique_name("alo-group");
    create_topic(&topic, 4).await;
    let total = 6_000;
    let records: Vec<_> = (0..total).map(good_record).collect();
    produce(&topic, &records).await;

    // First consumer: acknowledges 4 batches, receives 4 more without
    // acknowledging them, then is killed mid-stream (task aborted).
    let mut cfg = config(&topic, &group, &dlq);
    cfg.batch_max_records = 200;
    let first = KafkaSource::build(&cfg, Arc::new(IngestMetrics::default())).unwrap();
    let (tx, mut rx) = mpsc::channel(1);
    let task = tokio::spawn(first.run(tx, std::future::pending()));
    let mut acked = HashSet::new();
    let mut unacked = HashSet::new();
    for n in 0..8 {
        let delivery = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .unwrap()
            .unwrap();
        let ids = request_ids(&delivery);
        if n < 4 {
            acked.extend(ids);
            delivery.ack.done();
        } else {
            unacked.extend(ids);
            drop(delivery);
        }
    }
    // Kill it. Dropping the consumer closes it, which commits the offsets
    // stored so far: exactly those of the acknowledged batches.
    task.abort();
    let _ = task.await;
    drop(rx);
    assert!(!unacked.is_empty());

    // Second consumer in the same group reads everything that was not
    // acknowledged, and maybe some that was (duplicates are allowed).
    let second_metrics = Arc::new(IngestMetrics::default());
    let second = KafkaSource::build(&cfg, second_metrics.clone()).unwrap();
    let (tx, mut rx) = mpsc::channel(4);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(second.run(tx, async {
        let _ = stop_rx.await;
    }));
    let mut seen: HashSet<String> = acked.clone();
    let mut duplicates = 0usize;
    while seen.len() < total {
        let delivery = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{} of {total} request ids seen; the rest never came back",
                    seen.len()
                )
            })
            .unwrap();
        for id in request_ids(&delivery) {
            if !seen.insert(id) {
                duplicates += 1;
            }
        }
        delivery.ack.done();
    }
    let _ = stop_tx.send(());
    task.await.unwrap().unwrap();

    assert_eq!(seen.len(), total, "every request_id is eventually seen");
    assert!(unacked.iter().all(|id| seen.contains(id)));
    let redelivered = second_metrics.events.load(Relaxed) as usize;
    assert_eq!(
        redelivered,
        total - acked.len(),
        "the second consumer re-reads exactly what was not acknowledged: offsets were stored for acknowledged batches only"
    );
    eprintln!(
        "at-least-once: first consumer acknowledged {} and dropped {} unacknowledged; second re-read {redelivered}, {duplicates} duplicates",
        acked.len(),
        unacked.len()
    );
}

/// Issue 11, sections 1 and 4: whatever the reason a record is refused, its
/// dead-letter copy holds no raw secret (payload, key or header), and it
/// always fits the dead-letter topic, here one that takes 64 KiB: before,
/// a copy of a 1.5 MiB record was cut to `max_record_bytes` (1 MiB), the
/// broker refused it and ingest stopped on the same record after every
/// restart (a poison pill).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_copies_hold_no_secret_and_always_fit_the_topic() {
    const CANARY: &str = "CANARY-dlq-5b0e1c";
    let topic = unique_name("redact-events");
    let dlq = unique_name("redact-dlq");
    create_topic(&topic, 1).await;
    create_topic_with(&dlq, 1, &[("max.message.bytes", "65536")]).await;
    let mut oversized = format!(r#"{{"token":"{CANARY}","pad":""#).into_bytes();
    oversized.resize(1_500_000, b'x');
    let bad: Vec<(String, Vec<u8>, &str)> = vec![
        ("k1".into(), format!(r#"{{"ts":"not a time","token":"{CANARY}","issuer":"github","action":"repo.clone"}}"#).into_bytes(), "invalid_timestamp"),
        ("k2".into(), format!(r#"{{"token":"{CANARY}","ts":"#).into_bytes(), "invalid_json"),
        ("k3".into(), [format!(r#"{{"ts":1795813200000,"token":"{CANARY}","user_agent":"caf"#).as_bytes(), b"\xe9\"}"].concat(), "invalid_utf8"),
        ("k4".into(), oversized, "too_large"),
        (CANARY.into(), br#"{"ts":1795813200000,"token_id":"t","issuer":"oauth","action":"GET /","status":"ok"}"#.to_vec(), "wrong_type"),
    ];
    let mut records: Vec<(String, Vec<u8>)> =
        bad.iter().map(|(k, v, _)| (k.clone(), v.clone())).collect();
    records.push(good_record(1));
    produce(&topic, &records).await;

    let metrics = Arc::new(IngestMetrics::default());
    let source = KafkaSource::build(
        &config(&topic, &unique_name("group"), &dlq),
        metrics.clone(),
    )
    .unwrap();
    let (tx, mut rx) = mpsc::channel(4);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(source.run(tx, async {
        let _ = stop_rx.await;
    }));
    let dead = read_records(&dlq, bad.len(), Duration::from_secs(30)).await;
    // Still healthy: the good record after the bad ones is delivered.
    let delivery = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("the good record after the bad ones is delivered")
        .unwrap();
    assert_eq!(delivery.batch.len(), 1);
    delivery.ack.done();
    assert!(!task.is_finished(), "ingest is still running");
    let _ = stop_tx.send(());
    task.await.unwrap().unwrap();

    let canary = CANARY.as_bytes();
    let holds = |bytes: &[u8]| bytes.windows(canary.len()).any(|w| w == canary);
    for (copy, (_, _, reason)) in dead.iter().zip(&bad) {
        assert_eq!(copy.header(header::REASON), Some(*reason));
        assert!(
            !holds(&copy.payload),
            "{reason}: {}",
            String::from_utf8_lossy(&copy.payload)
        );
        assert!(
            !copy.key.as_deref().is_some_and(holds),
            "{reason}: key {:?}",
            copy.key
        );
        assert!(
            copy.headers.iter().all(|(_, v)| !v.contains(CANARY)),
            "{reason}: {:?}",
            copy.headers
        );
        assert!(
            copy.payload.len() < 65536,
            "{reason}: {} bytes",
            copy.payload.len()
        );
    }
    let invalid_ts = String::from_utf8_lossy(&dead[0].payload).into_owned();
    assert!(invalid_ts.contains("\"token\":\"fp_"), "{invalid_ts}");
    assert!(
        invalid_ts.contains("repo.clone"),
        "the rest stays for debugging: {invalid_ts}"
    );
    assert_eq!(dead[0].header(header::REDACTED), Some("1"));
    assert_eq!(dead[3].header(header::ORIGINAL_BYTES), Some("1500000"));
    assert!(
        dead[4]
            .key
            .as_deref()
            .is_some_and(|k| k.starts_with(b"fp_"))
    );
}

/// Issue 12: adaptive batching. With a 10 s linger, a lone event is handed
/// on as soon as nothing more is fetched; the counters say why its batch
/// closed: idle, not linger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_event_is_handed_on_without_waiting_for_the_linger() {
    use ingest::BatchClose;
    let topic = unique_name("lone-events");
    let dlq = unique_name("lone-dlq");
    create_topic(&topic, 1).await;
    create_topic(&dlq, 1).await;
    let mut cfg = config(&topic, &unique_name("group"), &dlq);
    cfg.batch_linger = Duration::from_secs(10);
    let metrics = Arc::new(IngestMetrics::default());
    let source = KafkaSource::build(&cfg, metrics.clone()).unwrap();
    let (tx, mut rx) = mpsc::channel(4);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(source.run(tx, async {
        let _ = stop_rx.await;
    }));
    produce(&topic, &[good_record(7)]).await;
    let delivery = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("the event is handed on")
        .unwrap();
    assert_eq!(delivery.batch.len(), 1);
    assert_eq!(
        metrics.closes(BatchClose::Idle),
        1,
        "closed because nothing more was fetched"
    );
    assert_eq!(
        metrics.closes(BatchClose::Linger),
        0,
        "not by the 10 s linger"
    );
    delivery.ack.done();
    let _ = stop_tx.send(());
    task.await.unwrap().unwrap();
}
