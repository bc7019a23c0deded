//! The token-metadata topic on the real broker: read from the beginning,
//! caught up, then followed live, tombstones included; and the pipeline
//! reads no event before the topic is applied.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use ingest::{IngestConfig, MetadataProgress, MetadataSource, MetadataUpdate};
use rdkafka::producer::FutureRecord;
use tokio::sync::mpsc;

use crate::support::{self, create_topic, produce, producer, unique_name, until};

async fn send(topic: &str, key: &str, value: Option<&str>) {
    let p = producer();
    let mut record = FutureRecord::<str, str>::to(topic).key(key);
    if let Some(v) = value {
        record = record.payload(v);
    }
    p.send(record, Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

async fn next(rx: &mut mpsc::Receiver<MetadataUpdate>) -> MetadataUpdate {
    tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("update within 30 s")
        .expect("source running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_the_whole_topic_then_follows_it() {
    let topic = unique_name("token-metadata");
    create_topic(&topic, 2).await;
    send(
        &topic,
        "gh/t1",
        Some(r#"{"issuer":"gh","token_id":"t1","scopes":["repo.*"]}"#),
    )
    .await;
    send(
        &topic,
        "gh/t2",
        Some(r#"{"issuer":"gh","token_id":"t2","bound_cidrs":["10.0.0.0/8"]}"#),
    )
    .await;
    send(&topic, "gh/bad", Some("not json")).await;

    let mut config = IngestConfig::new(vec!["unused".into()]);
    config.brokers = support::brokers();
    config.group_id = unique_name("md");
    let progress = Arc::new(MetadataProgress::default());
    let source = MetadataSource::build(&config, &topic, progress.clone()).unwrap();
    let (tx, mut rx) = mpsc::channel(16);
    let task = tokio::spawn(source.run(tx));

    let mut seen = [next(&mut rx).await, next(&mut rx).await];
    seen.sort_by_key(|u| format!("{u:?}"));
    assert!(matches!(&seen[0], MetadataUpdate::Upsert(m) if m.token_id == "t1"));
    assert!(matches!(&seen[1], MetadataUpdate::Upsert(m) if m.token_id == "t2"));
    // Then the source says it has caught up, and the bad record is counted.
    assert_eq!(next(&mut rx).await, MetadataUpdate::CaughtUp);
    assert!(progress.caught_up.load(Relaxed));
    assert_eq!(progress.invalid.load(Relaxed), 1);

    // Live: a change and a tombstone arrive as they are produced.
    send(&topic, "gh/t1", None).await;
    assert_eq!(
        next(&mut rx).await,
        MetadataUpdate::Remove {
            issuer: "gh".into(),
            token_id: "t1".into()
        }
    );
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_is_a_clear_build_error() {
    support::require_broker();
    let mut config = IngestConfig::new(vec!["unused".into()]);
    config.brokers = support::brokers();
    config
        .properties
        .insert("allow.auto.create.topics".into(), "false".into());
    let err = MetadataSource::build(
        &config,
        &unique_name("absent-metadata"),
        Arc::new(MetadataProgress::default()),
    )
    .err()
    .expect("build fails");
    assert!(err.to_string().contains("absent-metadata"), "{err}");
}

/// Events already waiting when the pipeline starts are judged with the
/// metadata already on the topic: the very first event of a token whose
/// scopes forbid its action is out of scope. (That no event is read before
/// the topic is applied is shown by the next test, whose topic is big
/// enough to take a while to apply.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_event_is_judged_with_the_metadata_topic_applied() {
    let metadata = unique_name("token-metadata");
    create_topic(&metadata, 2).await;
    let records: Vec<(String, Vec<u8>)> = (0..1_000)
        .map(|n| {
            let value = format!(r#"{{"issuer":"oauth","token_id":"t{n}","scopes":["GET /v1/*"]}}"#);
            (format!("oauth/t{n}"), value.into_bytes())
        })
        .collect();
    produce(&metadata, &records).await;
    let topic = unique_name("metadata-events");
    create_topic(&topic, 1).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut e = schemas::Event::new(now - 60_000, "t999", "oauth", "DELETE /admin/users/7");
    e.request_id = Some("first".into());
    produce(&topic, &[("t999".into(), e.to_json().into_bytes())]).await;

    let mut config = support::config("metadata", &topic).await;
    config.ingest.metadata_topic = Some(metadata.clone());
    let run = support::start(&config).await;
    // Counted when its batch is taken, decided once the batch is done.
    until("the event to be decided", Duration::from_secs(60), || {
        run.stats.recent(10).iter().any(|d| d.token_id == "t999")
    })
    .await;
    assert!(*run.stats.metadata_ready.borrow());
    let readyz = format!("http://{}/readyz", run.stats.probe_addr.get().unwrap());
    let decisions = run.stats.recent(10);
    until("/readyz to answer 200", Duration::from_secs(30), || {
        run.metrics.assigned_partitions.load(Relaxed) > 0
    })
    .await;
    assert_eq!(reqwest::get(&readyz).await.unwrap().status(), 200);
    let _ = run.stop.send(());
    run.task.await.unwrap().unwrap();
    let first = decisions
        .iter()
        .find(|d| d.token_id == "t999")
        .unwrap_or_else(|| panic!("no decision: {decisions:?}"));
    let kinds: Vec<&str> = first.findings.iter().map(|f| f.kind).collect();
    assert!(kinds.contains(&"out_of_scope"), "{kinds:?}");
}

/// Issue 11, section 8: the gate made observable. The metadata topic holds
/// 100,000 records, the one for the waiting event's token last, so
/// applying it takes a while: all that while `/readyz` answers 503 and no
/// event is read, and the event is then judged with that last record.
/// Without the gate the event, read in milliseconds, would be judged first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_event_is_judged_before_the_metadata_topic_is_applied() {
    let metadata = unique_name("slow-metadata");
    create_topic(&metadata, 1).await;
    let mut records: Vec<(String, Vec<u8>)> = (0..100_000)
        .map(|n| {
            let value = format!(r#"{{"issuer":"oauth","token_id":"m{n}","scopes":["GET /v1/*"]}}"#);
            (format!("oauth/m{n}"), value.into_bytes())
        })
        .collect();
    records.push((
        "oauth/t-last".into(),
        br#"{"issuer":"oauth","token_id":"t-last","scopes":["GET /v1/*"]}"#.to_vec(),
    ));
    produce(&metadata, &records).await;
    let topic = unique_name("slow-events");
    create_topic(&topic, 1).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let e = schemas::Event::new(now - 1_000, "t-last", "oauth", "DELETE /admin/users/7");
    produce(&topic, &[("t-last".into(), e.to_json().into_bytes())]).await;

    let mut config = support::config("slow", &topic).await;
    config.ingest.metadata_topic = Some(metadata.clone());
    let run = support::start(&config).await;
    // The probe listener is bound after the gate is closed.
    until("the probe listener", Duration::from_secs(30), || {
        run.stats.probe_addr.get().is_some()
    })
    .await;
    let mut not_ready = 0;
    while !*run.stats.metadata_ready.borrow() {
        assert_eq!(
            run.stats.events.load(Relaxed),
            0,
            "an event was judged before its metadata"
        );
        assert_eq!(
            run.metrics.records.load(Relaxed),
            0,
            "an event was read before its metadata"
        );
        if let Some(probe) = run.stats.probe_addr.get()
            && let Ok(answer) = reqwest::get(format!("http://{probe}/readyz")).await
            && !*run.stats.metadata_ready.borrow()
        {
            assert_eq!(answer.status(), 503);
            not_ready += 1;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        not_ready > 0,
        "/readyz was seen answering 503 while the topic was applied"
    );
    until("the event to be judged", Duration::from_secs(60), || {
        run.stats.recent(10).iter().any(|d| d.token_id == "t-last")
    })
    .await;
    let decisions = run.stats.recent(10);
    let _ = run.stop.send(());
    run.task.await.unwrap().unwrap();
    let first = decisions
        .iter()
        .find(|d| d.token_id == "t-last")
        .unwrap_or_else(|| panic!("no decision: {decisions:?}"));
    let kinds: Vec<&str> = first.findings.iter().map(|f| f.kind).collect();
    assert!(
        kinds.contains(&"out_of_scope"),
        "judged with the last metadata record: {kinds:?}"
    );
}

/// A metadata topic written in transactions (Kafka Connect or Streams with
/// exactly-once) ends in a commit marker, which takes an offset but is never
/// delivered as a record: catch-up must still complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metadata_topic_written_in_transactions_is_caught_up() {
    use rdkafka::producer::{FutureProducer, Producer};
    let metadata = unique_name("txn-metadata");
    create_topic(&metadata, 1).await;
    let txn: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", support::brokers())
        .set("transactional.id", unique_name("txn"))
        .create()
        .unwrap();
    txn.init_transactions(Duration::from_secs(30)).unwrap();
    txn.begin_transaction().unwrap();
    let value = r#"{"issuer":"oauth","token_id":"t-txn","scopes":["GET /v1/*"]}"#;
    txn.send(
        FutureRecord::to(&metadata)
            .key("oauth/t-txn")
            .payload(value),
        Duration::from_secs(10),
    )
    .await
    .map_err(|(e, _)| e)
    .unwrap();
    txn.commit_transaction(Duration::from_secs(30)).unwrap();

    let topic = unique_name("txn-events");
    create_topic(&topic, 1).await;
    let mut config = support::config("txn", &topic).await;
    config.ingest.metadata_topic = Some(metadata);
    let run = support::start(&config).await;
    until("the probe listener", Duration::from_secs(30), || {
        run.stats.probe_addr.get().is_some()
    })
    .await;
    until(
        "the transactional metadata topic to be applied",
        Duration::from_secs(30),
        || *run.stats.metadata_ready.borrow(),
    )
    .await;
    let _ = run.stop.send(());
    run.task.await.unwrap().unwrap();
}
