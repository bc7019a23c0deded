//! The token-metadata topic on the real broker: read from the beginning,
//! caught up, then followed live, tombstones included.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use ingest::{IngestConfig, MetadataProgress, MetadataSource, MetadataUpdate};
use rdkafka::producer::FutureRecord;
use tokio::sync::mpsc;

use crate::support::{self, create_topic, producer, unique_name, until};

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
    // The bad record is counted, and the source reports it caught up.
    until("the source to catch up", Duration::from_secs(30), || {
        progress.caught_up.load(Relaxed)
    })
    .await;
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
